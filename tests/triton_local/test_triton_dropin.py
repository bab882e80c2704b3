"""Drop-in: folders added to a live repository are served, broken ones hurt nobody else.

The server runs on a copy of ``model_repository/`` (the five example models) plus a tiny model
whose outputs are easy to check; the example models must keep serving throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.triton_local.tiny_models import AFFINE_CONFIG, model_folder
from triton_local import LocalTriton, ModelLoadError, install_model

pytestmark = pytest.mark.e2e

StartTriton = Callable[..., LocalTriton]


@pytest.fixture
def live(start_triton: StartTriton, model_repository_copy: Path) -> LocalTriton:
    model_folder(model_repository_copy, "affine", AFFINE_CONFIG)
    return start_triton(model_repository_copy, require_all_models=True)


@pytest.fixture
def client(live: LocalTriton) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(live.grpc_url) as triton_client:
        yield triton_client


def ready_models(client: grpcclient.InferenceServerClient) -> set[str]:
    index = client.get_model_repository_index(as_json=True).get("models", [])
    return {entry["name"] for entry in index if entry.get("state") == "READY"}


def index_reason(client: grpcclient.InferenceServerClient, name: str) -> str:
    """Triton's reason for ``name`` in its repository index once a load attempt has ended.

    In poll mode Triton retries a failed folder at every poll, so the entry alternates between
    LOADING (no reason) and UNAVAILABLE (with the reason).
    """
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in client.get_model_repository_index(as_json=True).get("models", []):
            if entry["name"] == name and entry.get("state") == "UNAVAILABLE":
                return str(entry.get("reason", ""))
        time.sleep(0.1)
    return ""


def affine_works(client: grpcclient.InferenceServerClient, model: str) -> bool:
    x = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return bool(np.array_equal(client.infer(model, [tensor]).as_numpy("y"), 2 * x + 1))


def test_a_new_folder_is_served_without_restart(
    live: LocalTriton, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    pid, before = live.pid, ready_models(client)
    staged = model_folder(tmp_path / "staging", "dropped", AFFINE_CONFIG)

    install_model(staged, live.repository)
    live.wait_for_model("dropped")

    assert affine_works(client, "dropped")
    assert live.pid == pid
    assert ready_models(client) == before | {"dropped"}


def test_broken_folders_report_why_and_the_others_keep_serving(
    live: LocalTriton, client: grpcclient.InferenceServerClient, tmp_path: Path
) -> None:
    before = ready_models(client)
    assert len(before) >= 6, before  # the example models and the tiny one
    staging = tmp_path / "staging"
    no_onnx = model_folder(staging, "no_onnx", AFFINE_CONFIG, onnx_file=None)
    bad_config = model_folder(staging, "bad_config", AFFINE_CONFIG)
    (bad_config / "config.pbtxt").write_text('backend: "onnxruntime"\nmax_batch_size: [\n')
    wrong_dtype = model_folder(staging, "wrong_dtype", AFFINE_CONFIG.replace("FP32", "FP16", 1))
    no_version = model_folder(staging, "no_version", AFFINE_CONFIG)
    (no_version / "1" / "model.onnx").rename(no_version / "model.onnx")
    (no_version / "1").rmdir()
    expected = {
        "no_onnx": "model.onnx not found",
        "bad_config": "failed to read text proto",
        "wrong_dtype": "input 'x' is TYPE_FP16 in config.pbtxt but TYPE_FP32 in the ONNX model",
        "no_version": "at least one version must be available",
    }

    for folder in (no_onnx, bad_config, wrong_dtype, no_version):
        install_model(folder, live.repository)
    for name, reason in expected.items():
        with pytest.raises(ModelLoadError) as caught:
            live.wait_for_model(name)
        assert reason in caught.value.reason

    errors = live.model_errors()
    assert {name: reason in errors.get(name, "") for name, reason in expected.items()} == {
        name: True for name in expected
    }
    # Failures inside the backend are also in Triton's own repository index, over gRPC; a config
    # that does not parse or a missing version folder only reach the log (hence model_errors).
    for name in ("no_onnx", "wrong_dtype"):
        assert expected[name] in index_reason(client, name)
    assert ready_models(client) == before
    assert affine_works(client, "affine")
