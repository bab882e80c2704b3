"""Zero-code volumetric segmentation: a patch-based 3D network (nnU-Net, MONAI's SegResNet or
SwinUNETR, FLaVor's ``seg3d_example``) served from its ``config.pbtxt`` alone.

The stages, each MONAI's (:mod:`gateway.volumes`):

- **read**: the series as one stack of slices with its voxel spacing.
- **preprocess**: the checks (a volume, a geometry to resample, the size bound), then the volume
  resampled to ``aicoco.input.spacing`` with its intensity mapping, and padded to the ROI.
- **triton**: the sliding window's patches in requests of ``batch``, each patch once per
  mirroring, up to the client's ``max_concurrent_batches`` requests in flight so that Triton's
  dynamic batcher can fill a GPU and merge the patches of concurrent studies. Each answer is
  blended into the accumulator as it arrives (one at a time, off the event loop), so the
  answers never pile up; progress is reported per request
  (:func:`gateway.progress.current`).
- **postprocess**: the blend, its activation, then back onto the original grid a block of
  slices at a time, where the decision is taken (argmax or threshold); the masks are kept
  bit-packed (:class:`~gateway.pipelines.postprocessing.MaskStack`) and become the
  segmentation strategy's labels, on the slices as sent.

Memory, beyond the series' pixels as read: the resampled volume (4 bytes per voxel), the
accumulator (4 bytes per voxel per output channel, plus 4 for the weights), and the masks (one
bit per original voxel per category), with blocks of a few slices besides. ``MAX_VOLUME_VOXELS``
bounds the resampled, padded volume before anything is computed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aicoco import (
    AiImage,
    RegressionSpec,
    SegmentationStrategy,
)
from gateway import progress
from gateway.errors import (
    GeometryRequired,
    InvalidModelOutput,
    UnsupportedImage,
    VolumeRequired,
    VolumeTooLarge,
)
from gateway.inference import Upload
from gateway.pipelines import postprocessing as post
from gateway.pipelines.base import PipelineBinding
from gateway.pipelines.builtin import (
    INPUT,
    SlicesPipeline,
    check_batched,
    check_no_other_inputs,
    check_tensor,
    config_error,
)
from gateway.pipelines.params import (
    RangeIntensity,
    VolumeInputSpec,
    VolumeParams,
    VolumeZScoreIntensity,
    WindowIntensity,
    ZScoreIntensity,
)
from gateway.readers import read_images
from gateway.triton.batching import gather_or_cancel
from gateway.volumes import intensity, windows
from gateway.volumes.activation import activate
from gateway.volumes.grid import Float32Array, Resampling, Shape, Spacing
from gateway.volumes.windows import Accumulator, Plan

DECISION_BLOCK_VOXELS = 1 << 21
"""Original-grid voxels x channels of probabilities interpolated at once (8 MiB of float32, two
512 x 512 slices of three channels): the decision's temporaries stay small beside the masks."""


@dataclass
class Volume:
    """The series as read, until preprocess takes its pixels."""

    pixels: np.ndarray | None
    spacing: Spacing | None
    slice_images: list[AiImage]
    shape: Shape


@dataclass
class Prepared:
    """The model's grid: the volume on it (padded), how patches cover it, the way back."""

    volume: Float32Array
    plan: Plan
    back: Resampling | None
    """From the model's grid onto the series' own; None when they are the same."""


@dataclass
class Blend:
    """What the patches left: the accumulator, and the way back to the series' grid."""

    accumulator: Accumulator
    back: Resampling | None


class VolumetricSegmentationPipeline(SlicesPipeline):
    strategy = SegmentationStrategy()
    params: VolumeParams

    def __init__(self, binding: PipelineBinding, params: VolumeParams) -> None:
        self.params = params
        super().__init__(binding)
        config = binding.config
        check_batched(config, "patches go to Triton in batches")
        check_no_other_inputs(config, {INPUT}, "the volumetric pipeline")
        roi = params.window.roi
        check_tensor(config, INPUT, "input", "FP32", (1, *roi))
        self.output_name = "probabilities" if params.output.activation == "none" else "logits"
        check_tensor(config, self.output_name, "output", "FP32", (self.channels, *roi))
        self.batch = params.window.batch or config.max_batch_size
        if self.batch > config.max_batch_size:
            config_error(
                config.name,
                f"sends {self.batch} patches per request (aicoco.sliding_window batch) but its "
                f"max_batch_size is {config.max_batch_size}",
            )

    @property
    def channels(self) -> int:
        """The model's output channels: a background channel first for ``argmax``."""
        extra = 1 if self.params.output.decision == "argmax" else 0
        return len(self.params.categories) + extra

    def set_regressions(self) -> Sequence[RegressionSpec]:
        return ()

    def data_reader(
        self,
        files: Sequence[str],
        *,
        images: Sequence[AiImage],
        uploads: Mapping[str, Upload],
        **kwargs: Any,
    ) -> tuple[Volume, None]:
        read = read_images(images, uploads, self.limits)
        z, y, x = read.pixels.shape[:3]
        volume = Volume(read.pixels, read.spacing, list(read.slice_images), (z, y, x))
        if read.pixels.ndim != 3:
            raise VolumeRequired(
                f"model '{self.model_name}' segments grayscale volumes; these images are RGB",
                details={"model": self.model_name},
            )
        return volume, None

    def preprocess(self, data: Volume) -> Prepared:
        spec, window = self.params.input, self.params.window
        if data.shape[0] < 2 and window.roi[0] > 1:
            raise VolumeRequired(
                f"model '{self.model_name}' segments volumes in patches of {list(window.roi)} "
                "(z, y, x) voxels; the request holds one 2D image. Send the series' slices, a "
                "multi-frame DICOM or a 3D NIfTI",
                details={"model": self.model_name, "roi": list(window.roi)},
            )
        if len(data.slice_images) != data.shape[0]:
            raise UnsupportedImage(
                f"model '{self.model_name}' segments each of the {data.shape[0]} slices, but "
                f"they belong to {len(data.slice_images)} images entries; send one entry per "
                "slice",
                details={"model": self.model_name, "slices": data.shape[0]},
            )
        forward = self._resampling(data, spec)
        grid = forward.shape_out if forward is not None else data.shape
        plan = Plan.of(grid, window.roi, (window.overlap,) * 3, window.blend, window.sigma_scale)
        self._check_size(plan, grid)
        pixels, data.pixels = data.pixels, None
        assert pixels is not None
        mapping = _mapping(spec)
        if forward is None:
            volume = pixels.astype(np.float32)
            if mapping is not None:
                mapping(volume)
        else:
            volume = forward.apply(pixels, then=mapping)
        del pixels
        if isinstance(spec.intensity, VolumeZScoreIntensity):
            intensity.volume_zscore(volume)(volume)
        volume = plan.pad(volume, window.padding, window.padding_value)
        back = None
        if forward is not None and data.spacing is not None and spec.spacing is not None:
            back = forward.inverse(data.spacing, spec.spacing)
        return Prepared(volume, plan, back)

    def _resampling(self, data: Volume, spec: VolumeInputSpec) -> Resampling | None:
        if spec.spacing is None:
            return None
        if data.spacing is None:
            raise GeometryRequired(
                f"model '{self.model_name}' works on a {_mm(spec.spacing)} grid and these "
                "images do not state their voxel spacing; send the series as DICOM or NIfTI",
                details={"model": self.model_name, "spacing": list(spec.spacing)},
            )
        forward = Resampling.to_spacing(data.shape, data.spacing, spec.spacing)
        return None if forward.identity else forward

    def _check_size(self, plan: Plan, grid: Shape) -> None:
        voxels = math.prod(plan.padded_shape)
        bound = self.limits.max_volume_voxels
        if voxels > bound:
            raise VolumeTooLarge(
                f"model '{self.model_name}' would work on {' x '.join(map(str, grid))} voxels "
                f"({voxels:,} padded to its patch), over MAX_VOLUME_VOXELS ({bound:,}); crop "
                "the series or raise the bound",
                details={"model": self.model_name, "voxels": voxels, "limit": bound},
            )

    async def inference(self, x: Prepared) -> Blend:
        plan, flips = x.plan, windows.mirrorings(self.params.window.mirror_axes)
        accumulator = Accumulator(plan, self.channels)
        share = np.float32(1.0 / len(flips))
        blending = asyncio.Lock()
        slots = asyncio.Semaphore(self.triton.max_concurrent_batches)
        report = progress.current()
        report.start("patches", len(plan.starts) * len(flips))

        async def run(starts: list[Shape], flip: tuple[int, ...]) -> None:
            async with slots:
                batch = await self.cpu.run(_patches, plan, x.volume, starts, flip)
                out = await self.network.infer({INPUT: batch})
                answers = self._answers(out, len(starts))
                async with blending:
                    await self.cpu.run(_blend, accumulator, starts, answers, flip, share, not flip)
            report.advance(len(starts))

        batches = [plan.starts[i : i + self.batch] for i in range(0, len(plan.starts), self.batch)]
        await gather_or_cancel(run(starts, flip) for starts in batches for flip in flips)
        return Blend(accumulator, x.back)

    def _answers(self, out: Mapping[str, np.ndarray], count: int) -> np.ndarray:
        answers = out[self.output_name]
        expected = (count, self.channels, *self.params.window.roi)
        if answers.shape != expected:
            raise InvalidModelOutput(
                f"model '{self.model_name}' returned '{self.output_name}' of shape "
                f"{list(answers.shape)} for {count} patches; expected {list(expected)}",
                details={"model": self.model_name, "output": self.output_name},
            )
        return answers

    def postprocess(self, out: Blend, *, data: Volume) -> np.ndarray:
        """``(C, Z, H, W)`` masks or instance labels on the slices as sent, in index order."""
        spec = self.params.output
        probabilities = out.accumulator.result()
        activate(probabilities, spec.activation)
        stack = post.MaskStack(len(self.categories), data.shape[0], data.shape[1:])
        block = max(1, DECISION_BLOCK_VOXELS // (self.channels * data.shape[1] * data.shape[2]))
        for start, values in _on_grid(probabilities, out.back, block):
            stack.put_masks(start, _decide(values, spec.decision, spec.threshold))
        del probabilities, out
        return stack.result(
            instances=spec.instances, volumetric=True, order=post.index_order(data.slice_images)
        )


def _mm(spacing: Spacing) -> str:
    return " x ".join(f"{value:g}" for value in spacing) + " mm"


def _mapping(spec: VolumeInputSpec) -> intensity.Affine | None:
    """The intensity mapping applied block by block as the volume is resampled; None for none,
    and for the per-volume z-score, which needs the whole resampled volume first."""
    chosen = spec.intensity
    if isinstance(chosen, WindowIntensity):
        return intensity.window(*chosen.window)
    if isinstance(chosen, RangeIntensity):
        return intensity.scale_range(
            chosen.a_min, chosen.a_max, chosen.b_min, chosen.b_max, chosen.clip
        )
    if isinstance(chosen, ZScoreIntensity):
        return intensity.zscore(chosen.mean, chosen.std, chosen.clip)
    return None


def _patches(
    plan: Plan, volume: Float32Array, starts: Sequence[Shape], flip: tuple[int, ...]
) -> Float32Array:
    """The model's input ``(n, 1, z, y, x)`` for these patches, flipped over the spatial
    ``flip`` axes (0 z, 1 y, 2 x)."""
    batch = plan.patches(volume, starts)
    if not flip:
        return batch
    return np.ascontiguousarray(np.flip(batch, axis=tuple(2 + axis for axis in flip)))


def _blend(
    accumulator: Accumulator,
    starts: Sequence[Shape],
    answers: np.ndarray,
    flip: tuple[int, ...],
    share: np.float32,
    weigh: bool,
) -> None:
    """One request's answers into the accumulator: flipped back, each a ``share`` of its
    patch's mirrorings; the patch's weight is counted once, by its unflipped request."""
    if flip:
        answers = np.flip(answers, axis=tuple(2 + axis for axis in flip))
    for start, answer in zip(starts, answers, strict=True):
        accumulator.add(start, answer * share if share != 1 else answer, weigh=weigh)


def _on_grid(
    probabilities: Float32Array, back: Resampling | None, block: int
) -> Iterator[tuple[int, Float32Array]]:
    """``(start, (C, slices, H, W))`` blocks of the probabilities on the series' grid."""
    if back is not None:
        yield from back.blocks(probabilities, block)
        return
    for start in range(0, probabilities.shape[1], block):
        yield start, probabilities[:, start : start + block]


def _decide(probabilities: Float32Array, decision: str, threshold: float) -> np.ndarray:
    """``(categories, slices, H, W)`` masks: ``argmax`` over the channels, channel 0 the
    background (ties go to the lower channel, as numpy's and torch's argmax), or each channel
    at or above ``threshold``."""
    if decision == "threshold":
        return post.positive(probabilities, threshold)
    labels = probabilities.argmax(axis=0)
    categories = np.arange(1, probabilities.shape[0], dtype=labels.dtype)
    masks: np.ndarray = labels[None] == categories[:, None, None, None]
    return masks
