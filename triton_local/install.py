"""Locate the parts of the ``nvidia-pytriton`` wheel that the local Triton uses.

Only the wheel's ``tritonserver`` binary, its bundled shared libraries and the Python backend are
used (not PyTriton's Python API), so the wheel is installed with ``--no-deps``. Everything is
looked up next to the installed ``pytriton`` package of the running interpreter, which is also the
interpreter whose packages the backend stub will import.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from triton_local.errors import TritonStartError

INSTALL_HINT = "install it with `pip install --no-deps nvidia-pytriton==0.7.0` (or run `make venv`)"


@dataclass(frozen=True)
class TritonInstall:
    """Paths of the wheel's server binary and the Python backend files for this Python."""

    binary: Path
    library_dir: Path
    python_backend_lib: Path
    python_backend_utils: Path
    stub: Path


def find_install() -> TritonInstall:
    """Return the wheel's files, or raise ``TritonStartError`` saying what is missing and why."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonStartError(f"the nvidia-pytriton wheel is not installed: {INSTALL_HINT}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    server_dir = package_dir / "tritonserver"
    python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    install = TritonInstall(
        binary=server_dir / "bin" / "tritonserver",
        # auditwheel puts the server's bundled libraries next to the package, not inside it.
        library_dir=package_dir.parent / "nvidia_pytriton.libs",
        python_backend_lib=server_dir / "backends" / "python" / "libtriton_python.so",
        python_backend_utils=server_dir / "backends" / "python" / "triton_python_backend_utils.py",
        stub=server_dir / "python_backend_stubs" / python_version / "triton_python_backend_stub",
    )
    missing = [
        path
        for path in (
            install.binary,
            install.library_dir,
            install.python_backend_lib,
            install.python_backend_utils,
        )
        if not path.exists()
    ]
    if missing:
        listed = ", ".join(str(path) for path in missing)
        raise TritonStartError(
            f"the nvidia-pytriton wheel is incomplete ({listed}): {INSTALL_HINT}"
        )
    if not install.stub.exists():
        raise TritonStartError(
            f"the nvidia-pytriton wheel has no Python backend stub for Python {python_version} "
            f"(looked for {install.stub}); run the local Triton from a supported Python version"
        )
    return install
