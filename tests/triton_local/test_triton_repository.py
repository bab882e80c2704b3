"""The session-wide ``triton`` fixture serves every model of ``model_repository/``."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from triton_local import LocalTriton

pytestmark = pytest.mark.e2e

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"


def test_every_example_model_is_ready(triton: LocalTriton) -> None:
    folders = {p.name for p in MODEL_REPOSITORY.iterdir() if (p / "config.pbtxt").is_file()}
    assert triton.model_errors() == {}
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        assert client.is_server_ready()
        for name in sorted(folders):
            assert client.is_model_ready(name), name
            config = client.get_model_config(name, as_json=True)["config"]
            assert config["backend"] == "onnxruntime"
