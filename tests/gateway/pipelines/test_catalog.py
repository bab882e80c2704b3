"""The model catalog: custom pipelines by dotted path, built-in ones from a real Triton's configs.

The Triton half starts a local Triton on a repository of variants of ``lesion_classifier``: good,
without parameters, with a misspelt parameter, with a size its tensor does not have, and one
that fails to load; then edits a config while the server polls, as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gateway.cpu_pool import CpuPool
from gateway.errors import InvalidModelConfig, ModelNotFound, ModelNotReady
from gateway.pipelines.builtin import ClassificationPipeline
from gateway.pipelines.catalog import ModelCatalog, load_pipeline_class
from gateway.pipelines.examples import LungSegmentationModel
from gateway.settings import Settings, SettingsError
from gateway.triton import TritonClient
from tests.conftest import MODEL_REPOSITORY, StartTriton

EXAMPLE = "gateway.pipelines.examples:LungSegmentationModel"
WAIT_S = 120.0
"""Bounds the wait for Triton to reload an edited model; reaching it fails the test."""


def test_loads_a_pipeline_class_by_dotted_path() -> None:
    assert load_pipeline_class("lung_segmenter", EXAMPLE) is LungSegmentationModel


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("gateway.pipelines.examples", "expected package.module:Class"),
        ("gateway.nowhere:Thing", "cannot import gateway.nowhere"),
        ("gateway.pipelines.examples:Nothing", "has no attribute Nothing"),
        ("gateway.pipelines.examples:SIZE", "SIZE is not a class"),
        ("gateway.pipelines.base:AiCOCOImagePipeline", "leaves stages unimplemented"),
        ("gateway.triton:TritonClient", "must define `async def __call__"),
    ],
)
def test_a_wrong_pipeline_entry_names_the_variable(target: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_pipeline_class("m", target)
    assert str(caught.value).startswith(f"PIPELINES entry m={target}: ")
    assert fragment in str(caught.value)


@pytest.mark.anyio
async def test_the_catalog_checks_pipelines_when_created() -> None:
    client = TritonClient("127.0.0.1:1", 1.0)
    try:
        with CpuPool(1) as cpu, pytest.raises(SettingsError, match="cannot import nowhere"):
            ModelCatalog(client, Settings(pipelines={"m": "nowhere:Pipeline"}), cpu)
    finally:
        await client.close()


def variant(repository: Path, name: str, edit: Callable[[str], str] = lambda text: text) -> None:
    source = MODEL_REPOSITORY / "lesion_classifier"
    folder = repository / name
    shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.md", "*.json"))
    config = (source / "config.pbtxt").read_text().replace('"lesion_classifier"', f'"{name}"')
    (folder / "config.pbtxt").write_text(edit(config))


def without_parameters(config: str) -> str:
    return config[: config.index("parameters [")]


def set_parameter(key: str, value: Any) -> Callable[[str], str]:
    def edit(config: str) -> str:
        pattern = rf'(key: "{re.escape(key)}"\s*value: {{ string_value: )\'[^\']*\''
        return re.sub(pattern, lambda m: f"{m.group(1)}'{json.dumps(value)}'", config)

    return edit


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    folder = tmp_path / "repository"
    folder.mkdir()
    variant(folder, "good")
    variant(folder, "no_params", without_parameters)
    variant(folder, "typo", set_parameter("aicoco.output", {"threshhold": 0.5}))
    variant(folder, "wrong_size", set_parameter("aicoco.input", {"size": [128, 128]}))
    variant(folder, "broken", lambda config: config.replace("dims: [ 2 ]", "dims: [ 3 ]"))
    return folder


@asynccontextmanager
async def catalog_on(url: str) -> AsyncIterator[ModelCatalog]:
    client = TritonClient(url, 30.0, config_ttl_s=0.2)
    try:
        with CpuPool(2) as cpu:
            yield ModelCatalog(client, Settings(), cpu)
    finally:
        await client.close()


@pytest.mark.e2e
@pytest.mark.anyio
async def test_pipelines_and_their_errors(start_triton: StartTriton, repository: Path) -> None:
    server = start_triton(repository)
    async with catalog_on(server.grpc_url) as catalog:
        pipeline = await catalog.pipeline("good")
        assert isinstance(pipeline, ClassificationPipeline)
        assert await catalog.pipeline("good") is pipeline
        with pytest.raises(ModelNotFound, match="'missing' is not in Triton's model repository"):
            await catalog.pipeline("missing")
        with pytest.raises(ModelNotReady, match="'broken' is not ready"):
            await catalog.pipeline("broken")
        with pytest.raises(InvalidModelConfig, match=r"no aicoco\.\* parameters"):
            await catalog.pipeline("no_params")
        with pytest.raises(InvalidModelConfig, match=r"parameter 'aicoco\.output'.*threshhold"):
            await catalog.pipeline("typo")
        with pytest.raises(InvalidModelConfig, match=r"input 'image' is .*\[1, 128, 128\]"):
            await catalog.pipeline("wrong_size")


@pytest.mark.e2e
@pytest.mark.anyio
async def test_describe_lists_every_model_with_its_state(
    start_triton: StartTriton, repository: Path
) -> None:
    server = start_triton(repository)
    async with catalog_on(server.grpc_url) as catalog:
        # In poll mode Triton retries a failed model at every poll: it shows LOADING (no
        # reason) while it retries and UNAVAILABLE with the reason between tries.
        deadline = time.monotonic() + WAIT_S
        listed = await catalog.describe()
        while not any(i.name == "broken" and i.state == "UNAVAILABLE" for i in listed):
            assert time.monotonic() < deadline, "Triton never reported the failed load"
            await asyncio.sleep(0.1)
            listed = await catalog.describe()

    infos = {info.name: info for info in listed}
    assert sorted(infos) == ["broken", "good", "no_params", "typo", "wrong_size"]
    good = infos["good"]
    assert (good.ready, good.task, good.versions, good.state) == (
        True,
        "classification",
        ["1"],
        "READY",
    )
    assert [c["name"] for c in good.categories] == ["nodule", "large_nodule"]
    assert good.model_dump(mode="json")["pipeline"] == "builtin"
    broken = infos["broken"]
    assert not broken.ready
    assert broken.state == "UNAVAILABLE"
    assert broken.reason and "dims" in broken.reason
    typo = infos["typo"]
    assert (typo.ready, typo.task, typo.state) == (False, "classification", "READY")
    assert typo.reason and "threshhold" in typo.reason


@pytest.mark.e2e
@pytest.mark.anyio
async def test_an_edited_config_rebuilds_the_pipeline(
    start_triton: StartTriton, repository: Path
) -> None:
    server = start_triton(repository)
    async with catalog_on(server.grpc_url) as catalog:
        first = await catalog.pipeline("good")
        assert isinstance(first, ClassificationPipeline)
        config = repository / "good" / "config.pbtxt"
        config.write_text(set_parameter("aicoco.output", {"threshold": 0.9})(config.read_text()))
        deadline = time.monotonic() + WAIT_S
        while (current := await catalog.pipeline("good")) is first:
            assert time.monotonic() < deadline, "Triton never reloaded the edited config"
            await asyncio.sleep(0.2)
        assert isinstance(current, ClassificationPipeline)
        assert current.params.output.model_dump() == {"threshold": 0.9, "aggregate": "max"}
