"""The built-in pipelines: one per task, configured only by the model's ``aicoco.*`` parameters.

Dropping a model folder into the repository is enough to serve it: the catalog reads the config
from Triton, picks the class :mod:`~gateway.pipelines.tasks` declares for ``aicoco.task`` and
checks that the model's tensors are the ones
the contract names (input ``image`` FP32 ``[1, H, W]`` matching ``aicoco.input.size``; outputs
``probabilities`` / ``values`` / ``boxes`` + ``scores`` / ``probabilities`` or ``mask``) before
the first request, so a mismatch is reported as the model's configuration error, not a 500 deep
inside a request. The stage semantics are in :mod:`~gateway.pipelines.preprocessing` and
:mod:`~gateway.pipelines.postprocessing`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NoReturn, Protocol, TypeVar

import numpy as np

from aicoco import (
    AiCOCOOutput,
    AiImage,
    CategorySpec,
    ClassificationStrategy,
    DetectionStrategy,
    IdGenerator,
    OutputStrategy,
    RegressionSpec,
    RegressionStrategy,
    SegmentationStrategy,
)
from gateway.errors import InvalidModelConfig, InvalidModelOutput, UnsupportedImage
from gateway.inference import Upload
from gateway.pipelines import postprocessing as post
from gateway.pipelines.base import (
    AiCOCOImagePipeline,
    PipelineBinding,
    TritonModel,
)
from gateway.pipelines.params import (
    Answers,
    ClassificationOutput,
    DetectionOutput,
    ModelParams,
    OutputSpec,
    RegressionOutput,
    SegmentationOutput,
)
from gateway.pipelines.preprocessing import to_model_input
from gateway.readers import ImageSet, read_images
from gateway.triton import ModelConfig, TensorSpec, dims_text

INPUT = "image"

S = TypeVar("S", bound=OutputSpec)


@dataclass
class Scan:
    """What a built-in pipeline keeps of the request's images from one stage to the next.

    ``preprocess`` takes the pixels out (:meth:`take_pixels`), so the full-resolution stack is
    freed while Triton runs instead of living until the response is formatted.
    """

    pixels: np.ndarray | None
    hounsfield: bool
    slice_images: list[AiImage]
    shape: tuple[int, int, int]
    """``(Z, H, W)`` of the stack as read."""

    @classmethod
    def from_image_set(cls, images: ImageSet) -> Scan:
        z, h, w = images.pixels.shape[:3]
        return cls(images.pixels, images.hounsfield, list(images.slice_images), (z, h, w))

    def take_pixels(self) -> np.ndarray:
        pixels, self.pixels = self.pixels, None
        if pixels is None:
            raise RuntimeError("the pixels of this scan were already taken")
        return pixels

    @property
    def image_size(self) -> tuple[int, int]:
        return self.shape[1], self.shape[2]


class Sliced(Protocol):
    """What a built-in pipeline's read stage leaves for ``output_formatter``."""

    slice_images: list[AiImage]
    """The entry of each slice of the stack as read."""


class SlicesPipeline(AiCOCOImagePipeline):
    """What every built-in image pipeline shares, 2D or volumetric: the network is the model
    Triton serves under the binding's name, the categories and regressions are the parameters',
    and the answer is the task's strategy over the slices as read (a volume's entries in index
    order)."""

    strategy: ClassVar[OutputStrategy]
    network: TritonModel
    params: Answers

    def define_inference_network(self) -> TritonModel:
        return TritonModel(self.model_name)

    def set_categories(self) -> Sequence[CategorySpec]:
        return self.params.categories

    def set_regressions(self) -> Sequence[RegressionSpec]:
        return self.params.regressions

    def output_formatter(
        self,
        model_out: Any,
        *,
        categories: Sequence[CategorySpec],
        regressions: Sequence[RegressionSpec],
        data: Sliced,
        ids: IdGenerator,
    ) -> AiCOCOOutput:
        return self.strategy(
            model_out,
            images=data.slice_images,
            categories=categories,
            regressions=regressions,
            ids=ids,
        )


class BuiltinPipeline(SlicesPipeline, Generic[S]):
    """Shared stages of the 2D-model pipelines: read with the gateway's readers, preprocess per
    ``aicoco.input``. ``S`` is the task's output spec (``aicoco.output``)."""

    params: ModelParams[S]

    def __init__(self, binding: PipelineBinding, params: ModelParams[S]) -> None:
        self.params = params
        super().__init__(binding)
        _check_input(binding.config, params)
        self.check_outputs(binding.config)

    def check_outputs(self, config: ModelConfig) -> None:
        """Refuse a model whose outputs are not the ones this task reads."""

    def data_reader(
        self,
        files: Sequence[str],
        *,
        images: Sequence[AiImage],
        uploads: Mapping[str, Upload],
        **kwargs: Any,
    ) -> tuple[Scan, None]:
        return Scan.from_image_set(read_images(images, uploads, self.limits)), None

    def tensor(self, data: Scan) -> np.ndarray:
        """The ``image`` input of the whole stack; the scan gives its pixels up."""
        pixels = data.take_pixels()
        return to_model_input(pixels, hounsfield=data.hounsfield, spec=self.params.input)

    def output(self, out: Mapping[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
        """The output ``name`` with ``ndim`` dims (batch included), or a clear model error."""
        array = out[name]
        if array.ndim != ndim:
            raise InvalidModelOutput(
                f"model '{self.model_name}' returned '{name}' with shape {list(array.shape)}; "
                f"expected {ndim} dimensions including the batch",
                details={"model": self.model_name, "output": name},
            )
        return array

    def expect_channels(self, name: str, found: int, kind: str, declared: int) -> None:
        if found != declared:
            raise InvalidModelOutput(
                f"model '{self.model_name}' returned {found} channels in '{name}' but declares "
                f"{declared} {kind}",
                details={"model": self.model_name, "output": name},
            )


class _WholeStackPipeline(BuiltinPipeline[S]):
    """The whole stack goes to Triton as one input and its outputs come back as one mapping."""

    def preprocess(self, data: Scan) -> np.ndarray:
        return self.tensor(data)

    async def inference(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return await self.network.infer({INPUT: x})


class _VectorPipeline(_WholeStackPipeline[S]):
    """A model that answers one FP32 vector per slice, one value per declared category or
    regression: the shared output checks of classification and regression."""

    def check_outputs(self, config: ModelConfig) -> None:
        check_answers(config, self.params)

    def vectors(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(slices, declared)`` values, or a clear model error."""
        params = self.params
        values = self.output(out, params.vector, 2)
        self.expect_channels(params.vector, values.shape[1], params.declares, params.declared)
        return values


class ClassificationPipeline(_VectorPipeline[ClassificationOutput]):
    """One probability per category per slice; a series is combined (``aggregate``)."""

    strategy = ClassificationStrategy()

    def postprocess(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        spec = self.params.output
        return post.classify(self.vectors(out), spec.threshold, spec.aggregate)


class RegressionPipeline(_VectorPipeline[RegressionOutput]):
    """One value per regression per slice; a series is combined (``aggregate``)."""

    strategy = RegressionStrategy()

    def postprocess(self, out: Mapping[str, np.ndarray]) -> np.ndarray:
        spec = self.params.output
        return post.regress(self.vectors(out), spec.scale, spec.offset, spec.aggregate)


class DetectionPipeline(_WholeStackPipeline[DetectionOutput]):
    """Boxes on one 2D image: threshold, per-class NMS, scaled back to the image."""

    strategy = DetectionStrategy()

    def check_outputs(self, config: ModelConfig) -> None:
        check_tensor(config, "boxes", "output", "FP32", (-1, 4))
        check_tensor(config, "scores", "output", "FP32", (-1, len(self.categories)))

    def postprocess(self, out: Mapping[str, np.ndarray], *, data: Scan) -> dict[str, np.ndarray]:
        spec = self.params.output
        boxes = self.output(out, "boxes", 3)
        scores = self.output(out, "scores", 3)
        self.expect_channels("scores", scores.shape[2], "categories", len(self.categories))
        if boxes.shape[0] != 1:
            raise UnsupportedImage(
                f"model '{self.model_name}' detects objects in one 2D image; the request holds "
                f"{boxes.shape[0]} slices",
                details={"model": self.model_name, "slices": int(boxes.shape[0])},
            )
        height, width = self.params.input.size
        image_h, image_w = data.image_size
        try:
            return post.detect(
                boxes[0],
                scores[0],
                score_threshold=spec.score_threshold,
                iou_threshold=spec.iou_threshold,
                max_detections=spec.max_detections,
                scale=(image_h / height, image_w / width),
                image_size=data.image_size,
            )
        except ValueError as exc:
            raise InvalidModelOutput(
                f"model '{self.model_name}': {exc}", details={"model": self.model_name}
            ) from None


@dataclass
class SegmentationInput:
    """The model's input tensor and what turning each batch's answer into masks needs."""

    tensor: np.ndarray
    image_size: tuple[int, int]
    entries: int
    """Images entries of the stack: one per slice for a volume."""


class SegmentationPipeline(BuiltinPipeline[SegmentationOutput]):
    """Per-class masks (or instances) resized back to each slice, in the entries' index order.

    Masks are made batch by batch while Triton works on the next batches (:class:`MaskStack`),
    so the ``triton`` stage includes resizing and thresholding the maps it returns, and
    ``postprocess`` is what needs the whole volume: connected components and the final layout.
    The volume's float32 maps are never held whole.
    """

    strategy = SegmentationStrategy()

    def check_outputs(self, config: ModelConfig) -> None:
        channels = len(self.categories)
        if config.output("mask") is not None:
            check_tensor(config, "mask", "output", "UINT8", (channels, -1, -1))
        else:
            check_tensor(config, "probabilities", "output", "FP32", (channels, -1, -1))

    def preprocess(self, data: Scan) -> SegmentationInput:
        return SegmentationInput(self.tensor(data), data.image_size, len(data.slice_images))

    async def inference(self, x: SegmentationInput) -> post.MaskStack:
        spec = self.params.output
        slices = x.tensor.shape[0]
        if slices > 1 and x.entries != slices:
            raise UnsupportedImage(
                f"model '{self.model_name}' segments each of the {slices} slices, but they "
                f"belong to {x.entries} images entries; send one entry per slice",
                details={"model": self.model_name, "slices": slices},
            )
        stack = post.MaskStack(len(self.categories), slices, x.image_size)

        async def put(start: int, stop: int, out: dict[str, np.ndarray]) -> None:
            name, threshold = ("mask", None) if "mask" in out else ("probabilities", spec.threshold)
            maps = self.output(out, name, 4)
            self.expect_channels(name, maps.shape[1], "categories", len(self.categories))
            await self.cpu.run(stack.put, start, maps, threshold)

        await self.network.infer_each({INPUT: x.tensor}, put)
        return stack

    def postprocess(self, out: post.MaskStack, *, data: Scan) -> np.ndarray:
        labels = out.result(
            instances=self.params.output.instances,
            volumetric=self.params.input.dims == 3,
            order=post.index_order(data.slice_images) if out.slices > 1 else None,
        )
        return labels[:, 0] if out.slices == 1 else labels


def _check_input(config: ModelConfig, params: ModelParams[OutputSpec]) -> None:
    model = config.name
    check_batched(config, "built-in pipelines send slices in batches")
    image = config.input(INPUT)
    if image is None:
        config_error(model, f"needs an input named '{INPUT}' (FP32 [1, H, W])")
    check_no_other_inputs(config, {INPUT}, "built-in pipelines")
    _check_spec(model, image, "FP32", (1, *params.input.size), "input")


def check_batched(config: ModelConfig, why: str) -> None:
    """Refuse a model without a batch dimension; ``why`` says what the pipeline batches."""
    if config.max_batch_size < 1:
        config_error(config.name, f"max_batch_size must be at least 1: {why}")


def check_no_other_inputs(config: ModelConfig, filled: set[str], who: str) -> None:
    """Refuse a model with a required input the pipeline does not fill."""
    others = [spec.name for spec in config.inputs if spec.name not in filled and not spec.optional]
    if others:
        config_error(config.name, f"has inputs {others} that {who} cannot fill")


def check_answers(config: ModelConfig, answers: Answers) -> None:
    """Refuse a model whose output vector is not FP32 of one value per declared category (or
    regression), named for which: what classification, regression, tabular and hybrid share."""
    check_tensor(config, answers.vector, "output", "FP32", (answers.declared,))


def check_tensor(
    config: ModelConfig, name: str, kind: str, datatype: str, shape: tuple[int, ...]
) -> None:
    """Refuse a model whose input or output ``name`` is missing or not ``datatype`` ``shape``
    (-1: any size)."""
    specs = config.inputs if kind == "input" else config.outputs
    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        config_error(
            config.name, f"needs an {kind} named '{name}'; it has {[s.name for s in specs]}"
        )
    _check_spec(config.name, spec, datatype, shape, kind)


def _check_spec(
    model: str, spec: TensorSpec, datatype: str, shape: tuple[int, ...], kind: str
) -> None:
    fits = len(spec.shape) == len(shape) and all(
        have < 0 or want_dim < 0 or have == want_dim
        for have, want_dim in zip(spec.shape, shape, strict=True)
    )
    if spec.datatype != datatype or not fits:
        config_error(
            model,
            f"{kind} '{spec.name}' is {spec.describe()}; its aicoco parameters need "
            f"{datatype} {dims_text(shape)}",
        )


def config_error(model: str, problem: str) -> NoReturn:
    raise InvalidModelConfig(f"model '{model}' {problem}", details={"model": model})
