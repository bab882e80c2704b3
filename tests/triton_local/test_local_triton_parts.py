"""The launcher's parts that need no running server: log reading, drop-in, backend folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.triton_local.tiny_models import AFFINE_CONFIG, model_folder
from triton_local import LocalTriton, install_model
from triton_local.backend_dir import build_backend_dir
from triton_local.install import find_install
from triton_local.launcher import PROJECT_ROOT, stub_python_path
from triton_local.log_scan import LogScanner

LOG = "".join(
    line + "\n"
    for line in (
        'I1125 11:37:35.7 14758 model_lifecycle.cc:472] "loading: good:1"',
        'E1125 11:37:35.7 14758 model_repository_manager.cc:1460] "Poll failed for model '
        "directory 'bad': failed to read text proto from /r/bad/config.pbtxt\"",
        # Older servers do not quote the message.
        "E1125 11:37:35.7 14758 model_repository_manager.cc:724] failed to load model 'empty': "
        "at least one version must be available",
        "E1125 11:37:36.0 14758 model_lifecycle.cc:642] \"failed to load 'good' version 1: "
        'Internal: ModelConfigError: model file missing\\n\\nAt:\\n  ort_runner.py(208)"',
        "| good  | 1       | UNAVAILABLE: Internal: ModelConfigError: model file missing",
    )
)


def test_log_scanner_keeps_each_models_latest_failure(tmp_path: Path) -> None:
    log = tmp_path / "tritonserver.log"
    log.write_text(LOG)
    scanner = LogScanner(log)

    assert scanner.update() == {
        "bad": "failed to read text proto from /r/bad/config.pbtxt",
        "empty": "at least one version must be available",
        "good": "Internal: ModelConfigError: model file missing\n\nAt:\n  ort_runner.py(208)",
    }
    with log.open("a") as handle:  # A line still being written is read once complete.
        handle.write("I1125 11:37:40.1 14758 model_lifecycle.cc:839] \"successfully loaded 'go")
    assert "good" in scanner.update()
    with log.open("a") as handle:
        handle.write("od'\"\n")
    assert "good" not in scanner.update()


def test_install_model_moves_a_complete_folder_in_one_step(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    repository.mkdir()
    source = model_folder(tmp_path / "staging", "tiny", AFFINE_CONFIG)

    target = install_model(source, repository, "renamed")

    assert target == repository / "renamed"
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "1",
        "1/model.onnx",
        "config.pbtxt",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repository", "staging"]
    with pytest.raises(FileExistsError, match="add a new version folder"):
        install_model(source, repository, "renamed")


def test_backend_folder_has_the_python_backend_and_our_model_py(tmp_path: Path) -> None:
    backends = build_backend_dir(find_install(), tmp_path / "backends")

    assert sorted(p.name for p in (backends / "python").iterdir()) == [
        "libtriton_python.so",
        "triton_python_backend_stub",
        "triton_python_backend_utils.py",
    ]
    shim = (backends / "onnxruntime" / "model.py").read_text()
    assert "from triton_local.ort_backend import TritonPythonModel" in shim


def test_stub_imports_this_project_and_this_environments_packages() -> None:
    path = stub_python_path()
    assert path[0] == str(PROJECT_ROOT)
    for package in ("numpy", "onnxruntime"):
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None
        assert any(spec.origin.startswith(entry) for entry in path[1:]), package


def test_poll_interval_is_whole_seconds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        LocalTriton(tmp_path, poll_interval_s=0)
