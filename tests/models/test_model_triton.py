"""Triton loads all five models and reports what the gateway reads from it over gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import tritonclient.grpc as grpcclient

from training.cards import CARDS

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(triton: Any) -> Iterator[Any]:
    connection = grpcclient.InferenceServerClient(url=triton.grpc_url)
    try:
        yield connection
    finally:
        connection.close()


@pytest.mark.parametrize("name", sorted(CARDS))
def test_model_is_ready_with_its_aicoco_parameters(client: Any, name: str) -> None:
    assert client.is_model_ready(name)
    config = client.get_model_config(name).config
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == CARDS[name].parameters()
    assert config.max_batch_size == CARDS[name].max_batch_size
    metadata = client.get_model_metadata(name)
    assert [i.name for i in metadata.inputs] == ["image"]
    assert sorted(o.name for o in metadata.outputs) == sorted(o.name for o in CARDS[name].outputs)
