"""Assemble the backend directory the server is pointed at.

Triton serves a model whose config says ``backend: "onnxruntime"`` with
``<backend-dir>/onnxruntime/libtriton_onnxruntime.so`` or, failing that, with a Python-based
backend ``<backend-dir>/onnxruntime/model.py`` run by the Python backend found in
``<backend-dir>/python/``. The wheel ships only the Python backend, so the folder is built per
launch: the Python backend library plus the stub matching this interpreter, and our own
``model.py``. The same model repository then runs unchanged on NVIDIA's image, where the native
ONNX Runtime backend picks it up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from triton_local.install import TritonInstall

BACKEND_NAME = "onnxruntime"
SHIM = Path(__file__).resolve().parent / "backends" / BACKEND_NAME / "model.py"


def build_backend_dir(install: TritonInstall, dest: Path) -> Path:
    """Create ``dest`` with ``python/`` and ``onnxruntime/`` and return it.

    Files are copied rather than linked: the Python backend looks for its stub next to the
    library it was loaded from, and copies keep that lookup independent of how the wheel is laid
    out on disk.
    """
    python_dir = dest / "python"
    python_dir.mkdir(parents=True)
    for source in (install.python_backend_lib, install.python_backend_utils, install.stub):
        shutil.copy2(source, python_dir / source.name)
    backend_dir = dest / BACKEND_NAME
    backend_dir.mkdir()
    shutil.copy2(SHIM, backend_dir / "model.py")
    return dest
