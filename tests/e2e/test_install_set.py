"""What the image installs serves: its build stage replayed here, then real requests.

The image once could not start: the DICOMweb client imports httpx, which only the ``dev`` extra
declared, and every test ran with ``dev``. No Docker engine runs here, so the Dockerfile's build
stage is replayed instead, instruction by instruction as the Dockerfile has them (read from it,
not written twice): its ``ENV``, ``WORKDIR``, ``COPY`` and ``RUN``, with ``/opt/venv`` and
``/src`` in a temporary folder. That stage ends with the image's own ``import gateway.app``
check. The gateway then runs from that environment as the image's ``CMD`` runs it, from a
folder outside the repository, against the tests' Triton and Orthanc, and serves
``/invocations``, the DICOMweb route and ``output=seg``.

Two things differ from a build, both without effect on what is installed: the interpreter is
this one (the image's is the same minor version), and pip may use its cache
(``PIP_NO_CACHE_DIR`` only keeps the image small).
"""

from __future__ import annotations

import io
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from tests.dockerfile import DOCKERFILE, read_dockerfile, stages
from tests.e2e.conftest import (
    PASSWORD,
    REPOSITORY_ROOT,
    USER,
    GatewayProcess,
    Orthanc,
    dicom_form,
)
from tests.factories import make_ct_series
from training.phantoms import phantom_slice
from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

INSTALL_TIMEOUT_S = 900
TIMEOUT_S = 300.0
"""Bounds a request so a hung gateway fails the test instead of the run; not a measurement."""
CACHE_ONLY = {"PIP_NO_CACHE_DIR"}
"""``ENV`` of the build stage that changes the image's size, not what it installs."""
IMAGE_PATHS = ("/opt/venv", "/src")


def replay_build_stage(folder: Path) -> Path:
    """Run the Dockerfile's ``build`` stage under ``folder``; the virtual environment made."""
    (build,) = [stage for stage in stages(read_dockerfile()) if stage[0][1].endswith(" build")]
    mapped = {path: folder / path.strip("/").replace("/", "-") for path in IMAGE_PATHS}
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    # `python` in the stage's commands: this interpreter (venv takes its base interpreter).
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    workdir = folder

    def image_path(text: str) -> str:
        for path, here in mapped.items():
            text = text.replace(path, str(here))
        return text

    for keyword, arguments in build[1:]:
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                if key not in CACHE_ONLY:
                    env[key] = value
        elif keyword == "WORKDIR":
            workdir = Path(image_path(arguments))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            *sources, target = shlex.split(arguments)
            for source in sources:
                origin = REPOSITORY_ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, workdir / target, dirs_exist_ok=True)
                else:
                    shutil.copy2(origin, workdir / target)
        elif keyword == "RUN":
            done = subprocess.run(
                ["bash", "-c", image_path(arguments)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S,
            )
            assert done.returncode == 0, f"RUN {arguments}\n{done.stdout[-3000:]}{done.stderr}"
        else:
            pytest.fail(f"{DOCKERFILE.name}: the build stage's {keyword} is not replayed here")
    return mapped["/opt/venv"]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return replay_build_stage(tmp_path_factory.mktemp("image-build"))


@pytest.fixture(scope="module")
def gateway(
    image_venv: Path,
    triton: LocalTriton,
    orthanc: Orthanc,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    """The gateway as the image's ``CMD`` starts it, from a folder that holds no source."""
    outside = tmp_path_factory.mktemp("image-workdir")
    env = {
        "DICOMWEB_URL": orthanc.dicomweb,
        "DICOMWEB_USERNAME": USER,
        "DICOMWEB_PASSWORD": PASSWORD,
        "PYTHONPATH": "",
    }
    process = GatewayProcess(
        tmp_path_factory.mktemp("image-gateway"),
        triton.grpc_url,
        env,
        python=image_venv / "bin" / "python",
        cwd=outside,
    )
    try:
        process.wait_until_ready()
        with httpx.Client(base_url=process.url, timeout=TIMEOUT_S) as client:
            yield client
    finally:
        process.stop()
    assert process.process.returncode == 0, process.log_tail()


@pytest.fixture(scope="module")
def ct_slice(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    chest = phantom_slice(np.random.default_rng(7), 512, lesions=[20.0])
    return make_ct_series(
        tmp_path_factory.mktemp("slice"), chest.hu[None], spacing=(1.0, 0.7, 0.7), seed=23
    )


def test_the_image_install_set_holds_no_source_checkout(image_venv: Path) -> None:
    """The gateway it serves is the installed one, not this repository's folder."""
    where = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import gateway; print(gateway.__file__)"],
        cwd=image_venv,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(image_venv), where
    assert shutil.which("pytest", path=str(image_venv / "bin")) is None, "dev tools installed"


def test_invocations(gateway: httpx.Client, ct_slice: list[Path]) -> None:
    answer = gateway.post("/invocations", **dicom_form(ct_slice))  # type: ignore[arg-type]
    assert answer.status_code == 200, answer.text
    assert answer.json()["images"][0]["file_name"] == ct_slice[0].name


def test_output_seg(gateway: httpx.Client, ct_slice: list[Path]) -> None:
    answer = gateway.post(
        "/models/lung_segmenter/invocations",
        params={"output": "seg"},
        **dicom_form(ct_slice),  # type: ignore[arg-type]
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/dicom"
    seg = pydicom.dcmread(io.BytesIO(answer.content))
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage


def test_the_dicomweb_route(gateway: httpx.Client, orthanc: Orthanc, ct_slice: list[Path]) -> None:
    orthanc.upload(ct_slice)
    study = str(pydicom.dcmread(ct_slice[0], stop_before_pixels=True).StudyInstanceUID)
    answer = gateway.post(
        "/models/lesion_classifier/dicomweb/invocations", json={"study_instance_uid": study}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["study_instance_uid"] == study


def test_aicoco_alone_installs_with_its_base_dependencies(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """``pip install aicoco-gateway`` (no extra): the library imports and formats an answer,
    and none of the service's packages came with it."""
    folder = tmp_path_factory.mktemp("aicoco-only")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    source = folder / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPOSITORY_ROOT / name, source / name)
    for package in ("aicoco", "gateway", "triton_local"):
        shutil.copytree(REPOSITORY_ROOT / package, source / package)
    python = str(venv / "bin" / "python")
    installed = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    script = (
        "import importlib.util, aicoco, aicoco.masks, numpy as np\n"
        "mask = np.zeros((8, 8), bool); mask[2:5, 2:5] = True\n"
        "assert aicoco.masks.mask_to_polygons(mask)\n"
        "extra = [m for m in ('starlette', 'hypercorn', 'tritonclient', 'pydicom', 'httpx')\n"
        "         if importlib.util.find_spec(m) is not None]\n"
        "assert not extra, extra\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    checked = subprocess.run(
        [python, "-c", script], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stderr
