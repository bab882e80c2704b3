"""The zero-code volumetric pipeline, stage by stage, against MONAI's pipeline on the same ONNX
network (:mod:`tests.volumetric`): probabilities on the model's grid within 1e-4, labels on
the series' grid on at least 99.9 % of voxels; and its refusals.

The network runs in-process with ONNX Runtime behind the pipeline's own network handle, so
these cover the gateway's side; ``tests/e2e/test_volumetric.py`` does the same through Triton
and HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aicoco import AiImage
from gateway.cpu_pool import CpuPool
from gateway.errors import (
    GeometryRequired,
    InvalidModelConfig,
    VolumeRequired,
    VolumeTooLarge,
)
from gateway.pipelines import PipelineBinding
from gateway.pipelines.tasks import build
from gateway.pipelines.volumetric import Volume, VolumetricSegmentationPipeline
from gateway.readers import ReadLimits
from gateway.readers.tables import TableLimits
from gateway.records import RecordsStore
from gateway.triton import ModelConfig, TensorSpec, TritonClient
from gateway.volumes.activation import activate
from tests.volumetric import VolumeModel, monai_pipeline, ort_predictor, phantom_ct

pytestmark = pytest.mark.anyio

LIMITS = ReadLimits(10**8, 10**9)
CT_SPACING = (2.5, 0.7, 0.7)
"""An anisotropic CT: 2.5 mm slices of 0.7 mm pixels."""


class OrtNetwork:
    """The pipeline's network handle, answered in-process; counts what it is sent."""

    def __init__(self, model: VolumeModel) -> None:
        self.run = ort_predictor(model.onnx())
        self.output = model.output
        self.batches: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            batch = inputs["image"]
            self.batches.append(batch.shape[0])
            return {self.output: await asyncio.to_thread(self.run, batch)}
        finally:
            self.in_flight -= 1


def config_of(model: VolumeModel) -> ModelConfig:
    return ModelConfig(
        name="volume",
        versions=("1",),
        max_batch_size=model.max_batch_size,
        inputs=(TensorSpec("image", "FP32", (1, *model.roi)),),
        outputs=(TensorSpec(model.output, "FP32", (model.channels, *model.roi)),),
        parameters=model.parameter_texts(),
    )


@pytest.fixture
async def cpu_and_client(tmp_path: Path) -> AsyncIterator[tuple[CpuPool, TritonClient, Path]]:
    client = TritonClient("127.0.0.1:1", 1.0, max_concurrent_batches=3)
    try:
        with CpuPool(2) as cpu:
            yield cpu, client, tmp_path
    finally:
        await client.close()


def pipeline_for(
    model: VolumeModel,
    cpu_and_client: tuple[CpuPool, TritonClient, Path],
    limits: ReadLimits = LIMITS,
) -> tuple[VolumetricSegmentationPipeline, OrtNetwork]:
    cpu, client, tmp = cpu_and_client
    records = RecordsStore(tmp / "records", retention_s=60, max_bytes=1024)
    binding = PipelineBinding(
        "volume", client, config_of(model), limits, cpu, TableLimits(9, 9, 9, 9), records
    )
    pipeline = build(binding)
    assert isinstance(pipeline, VolumetricSegmentationPipeline)
    network = OrtNetwork(model)
    pipeline.network = network  # type: ignore[assignment]
    return pipeline, network


def volume_of(hu: np.ndarray, spacing: tuple[float, float, float] | None) -> Volume:
    images = [AiImage(id=f"i{z}", file_name=f"{z}.dcm", index=z) for z in range(hu.shape[0])]
    z, y, x = hu.shape
    return Volume(hu.copy(), spacing, images, (z, y, x))


CASES = {
    "anisotropic, gaussian, overlap 0.5": VolumeModel(),
    "overlap 0.25, constant": VolumeModel(overlap=0.25, blend="constant"),
    "mirrored over three axes": VolumeModel(mirror_axes=(0, 1, 2), roi=(8, 16, 16)),
    "sigmoid and threshold": VolumeModel(activation="sigmoid", decision="threshold"),
    "the model's own softmax": VolumeModel(activation="none"),
    "native grid, per-volume z-score": VolumeModel(
        spacing=None, intensity={"kind": "volume_zscore"}, roi=(8, 32, 32)
    ),
    "smaller than the ROI": VolumeModel(roi=(16, 48, 48), spacing=(2.5, 2.0, 2.0)),
}


@pytest.mark.parametrize("case", CASES)
async def test_the_pipeline_agrees_with_monai(
    case: str, cpu_and_client: tuple[CpuPool, TritonClient, Path]
) -> None:
    model = CASES[case]
    shape = (12, 60, 64) if case != "smaller than the ROI" else (5, 30, 40)
    hu = phantom_ct(shape, seed=len(case))
    oracle = monai_pipeline(model, hu, CT_SPACING, model.onnx())
    pipeline, network = pipeline_for(model, cpu_and_client)

    data = volume_of(hu, CT_SPACING)
    prepared = pipeline.preprocess(data)
    blend = await pipeline.inference(prepared)
    blended = blend.accumulator.result()
    probabilities = blended.copy()
    activate(probabilities, model.activation)
    np.testing.assert_allclose(probabilities, oracle.probabilities, atol=1e-4)

    data = volume_of(hu, CT_SPACING)
    masks = pipeline.postprocess(await pipeline.inference(pipeline.preprocess(data)), data=data)
    assert masks.shape == oracle.labels.shape
    agreement = float(np.mean(masks == oracle.labels))
    assert agreement >= 0.999, f"labels agree on {agreement:.5%} of voxels"
    if case != "smaller than the ROI":
        assert oracle.labels.any(axis=(1, 2, 3)).all(), "every category is found somewhere"
    assert max(network.batches) <= model.batch


async def test_patches_go_in_batches_several_at_once_and_progress_is_reported(
    cpu_and_client: tuple[CpuPool, TritonClient, Path],
) -> None:
    from gateway import progress

    model = VolumeModel(roi=(8, 16, 16), batch=4, mirror_axes=(2,))
    pipeline, network = pipeline_for(model, cpu_and_client)
    report = progress.Progress()
    seen: list[int] = []
    report.observer = lambda unit, units: seen.append(units)
    with progress.scope(report):
        blend = await pipeline.inference(
            pipeline.preprocess(volume_of(phantom_ct((12, 60, 64)), CT_SPACING))
        )
    patches = len(blend.accumulator.plan.starts)
    assert patches >= 20
    assert (report.unit, report.done, report.total) == ("patches", 2 * patches, 2 * patches)
    assert sum(seen) == 2 * patches
    assert set(network.batches) <= {1, 2, 3, 4} and network.batches.count(4) >= patches // 4
    assert 2 <= network.most_in_flight <= 3, "several requests at once, at most the client's bound"


async def test_a_2d_image_is_refused_with_what_the_model_needs(
    cpu_and_client: tuple[CpuPool, TritonClient, Path],
) -> None:
    pipeline, _ = pipeline_for(VolumeModel(), cpu_and_client)
    with pytest.raises(VolumeRequired, match=r"patches of \[8, 24, 24\]"):
        pipeline.preprocess(volume_of(phantom_ct((1, 64, 64)), CT_SPACING))


async def test_slices_without_a_spacing_are_refused_when_the_model_resamples(
    cpu_and_client: tuple[CpuPool, TritonClient, Path],
) -> None:
    pipeline, _ = pipeline_for(VolumeModel(), cpu_and_client)
    with pytest.raises(GeometryRequired, match=r"2 x 1\.5 x 1\.5 mm"):
        pipeline.preprocess(volume_of(phantom_ct((10, 64, 64)), None))
    native, _ = pipeline_for(VolumeModel(spacing=None), cpu_and_client)
    native.preprocess(volume_of(phantom_ct((10, 64, 64)), None))


async def test_a_volume_over_the_bound_is_refused_before_anything_is_computed(
    cpu_and_client: tuple[CpuPool, TritonClient, Path],
) -> None:
    limits = ReadLimits(10**8, 10**9, max_volume_voxels=10_000)
    pipeline, network = pipeline_for(VolumeModel(), cpu_and_client, limits)
    data = volume_of(phantom_ct((12, 60, 64)), CT_SPACING)
    with pytest.raises(
        VolumeTooLarge, match=r"15 x 29 x 30 voxels .* MAX_VOLUME_VOXELS \(10,000\)"
    ) as refused:
        pipeline.preprocess(data)
    assert refused.value.details["voxels"] == 15 * 29 * 30
    assert data.pixels is not None and not network.batches


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"max_batch_size": 2}, "sends 4 patches per request"),
        ({"roi": (8, 24, 24), "config_roi": (8, 32, 32)}, "input 'image' is image"),
    ],
)
async def test_a_model_that_does_not_fit_its_parameters_is_a_config_error(
    change: dict[str, Any], problem: str, cpu_and_client: tuple[CpuPool, TritonClient, Path]
) -> None:
    config_roi = change.pop("config_roi", None)
    model = replace(VolumeModel(), **change)
    cpu, client, tmp = cpu_and_client
    config = config_of(model)
    if config_roi is not None:
        config = replace(config, inputs=(TensorSpec("image", "FP32", (1, *config_roi)),))
    records = RecordsStore(tmp / "records", retention_s=60, max_bytes=1024)
    binding = PipelineBinding(
        "volume", client, config, ReadLimits(1, 1), cpu, TableLimits(9, 9, 9, 9), records
    )
    with pytest.raises(InvalidModelConfig, match=problem):
        build(binding)
