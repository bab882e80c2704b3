"""The inference-model API: FLaVor's stage names and arguments, with the network on Triton.

A FLaVor user knows ``BaseAiCOCOImageInferenceModel``: ``define_inference_network``,
``set_categories``, ``set_regressions``, ``data_reader(files)``, ``preprocess(data)``,
``inference(x)``, ``postprocess(out)``, ``output_formatter(model_out, images, categories,
regressions)``. :class:`AiCOCOImagePipeline` keeps those names and arguments so a model ports by
changing imports and returning a :class:`TritonModel` from ``define_inference_network``. What
changes underneath, and why:

- The pipeline is shared by concurrent requests, so nothing per request is stored on ``self``
  (FLaVor keeps ``self.images``); everything flows through arguments and return values.
- CPU stages (``data_reader``, ``preprocess``, ``postprocess``, ``output_formatter``) run on the
  app's worker pool (``self.cpu``, a :class:`~gateway.cpu_pool.CpuPool`), keeping the event loop
  free for other requests and health checks; ``read`` and ``preprocess`` go in one hand-off,
  ``postprocess`` and ``output_formatter`` in another. A stage written ``async def`` runs on the
  event loop instead. ``inference`` runs on the event loop because all it should do is await
  Triton; a plain ``def inference(self, x): return self.network(x)`` works unchanged, since
  calling a :class:`TritonModel` returns an awaitable that the pipeline awaits.
- Each stage is timed with ``request.stage(name)`` for the per-stage latency metrics (the time
  it computes, not the hand-off).
- Stages receive only the keyword arguments their signature accepts (or all of them with
  ``**kwargs``), so both FLaVor's narrow signatures and richer ones work.
"""

from __future__ import annotations

import abc
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, overload

import numpy as np

from aicoco import AiCOCOFormatError, AiCOCOOutput, AiImage, CategorySpec, RegressionSpec
from gateway import progress
from gateway.cpu_pool import CpuPool
from gateway.errors import ApiError, InternalError, InvalidModelOutput, WrongInputKind
from gateway.inference import InferenceRequest
from gateway.logs import request_id_var
from gateway.readers import ReadLimits
from gateway.readers.matching import check_uploads
from gateway.readers.tables import TableLimits
from gateway.records import RecordsStore
from gateway.triton import BatchSink, ModelConfig, TritonClient


@dataclass(frozen=True)
class PipelineBinding:
    """What a pipeline instance is built for: a model, and the app's Triton client, read limits
    and CPU pool; the table limits and the records store for tabular models."""

    model_name: str
    triton: TritonClient
    config: ModelConfig
    limits: ReadLimits
    cpu: CpuPool
    tables: TableLimits
    records: RecordsStore


_binding: ContextVar[PipelineBinding | None] = ContextVar("pipeline_binding", default=None)


@contextmanager
def binding_scope(binding: PipelineBinding) -> Iterator[None]:
    """Make ``binding`` visible to pipeline constructors that take no arguments.

    FLaVor subclasses write ``def __init__(self): super().__init__()``; the catalog constructs
    them inside this scope so that signature keeps working.
    """
    token = _binding.set(binding)
    try:
        yield
    finally:
        _binding.reset(token)


def current_binding() -> PipelineBinding:
    binding = _binding.get()
    if binding is None:
        raise RuntimeError(
            "a pipeline (or a TritonModel without client=) must be constructed by the model "
            "catalog, inside binding_scope(...), or be given a PipelineBinding explicitly"
        )
    return binding


class TritonModel:
    """A handle to a model served by Triton: what ``define_inference_network`` returns.

    ``await model.infer({"image": x})`` returns every output by name. ``await model(x)`` is the
    FLaVor-style call for a model with one input and one output: array in, array out (a mapping
    in gives a mapping out).
    """

    def __init__(self, name: str, *, client: TritonClient | None = None) -> None:
        self.name = name
        self._client = client if client is not None else current_binding().triton

    async def config(self) -> ModelConfig:
        return await self._client.model_config(self.name)

    async def infer(
        self, inputs: Mapping[str, np.ndarray], *, request_id: str | None = None
    ) -> dict[str, np.ndarray]:
        """Every output by name. The request's id (from the log context) tags Triton's log."""
        if request_id is None:
            request_id = request_id_var.get() or ""
        return await self._client.infer(self.name, inputs, request_id=request_id)

    async def infer_each(
        self,
        inputs: Mapping[str, np.ndarray],
        sink: BatchSink,
        *,
        request_id: str | None = None,
    ) -> None:
        """Each batch's outputs to ``await sink(start, stop, outputs)`` as they arrive, for a
        pipeline that reduces them batch by batch (see :meth:`TritonClient.infer_each`)."""
        if request_id is None:
            request_id = request_id_var.get() or ""
        await self._client.infer_each(self.name, inputs, sink, request_id=request_id)

    @overload
    def __call__(self, x: np.ndarray) -> Coroutine[Any, Any, np.ndarray]: ...

    @overload
    def __call__(
        self, x: Mapping[str, np.ndarray]
    ) -> Coroutine[Any, Any, dict[str, np.ndarray]]: ...

    def __call__(
        self, x: np.ndarray | Mapping[str, np.ndarray]
    ) -> Coroutine[Any, Any, np.ndarray | dict[str, np.ndarray]]:
        return self._call(x)

    async def _call(
        self, x: np.ndarray | Mapping[str, np.ndarray]
    ) -> np.ndarray | dict[str, np.ndarray]:
        if isinstance(x, Mapping):
            return await self.infer(x)
        config = await self.config()
        required = [spec for spec in config.inputs if not spec.optional]
        if len(required) != 1 or len(config.outputs) != 1:
            raise InternalError(
                f"model '{self.name}' has inputs {[s.name for s in config.inputs]} and outputs "
                f"{[s.name for s in config.outputs]}; call it with a mapping of inputs "
                "(await network.infer({...})) rather than one array",
                details={"model": self.name},
            )
        result = await self.infer({required[0].name: x})
        return result[config.outputs[0].name]

    def __repr__(self) -> str:
        return f"TritonModel({self.name!r})"


CategoryLike = CategorySpec | Mapping[str, Any]
RegressionLike = RegressionSpec | Mapping[str, Any]


class AiCOCOImagePipeline(abc.ABC):
    """Base of image pipelines, stage for stage FLaVor's ``BaseAiCOCOImageInferenceModel``.

    Override ``define_inference_network``, ``set_categories``, ``set_regressions``,
    ``data_reader`` and ``output_formatter``; ``preprocess``, ``inference`` and ``postprocess``
    default to identity, ``self.network(x)`` and identity. Stage arguments:

    - ``data_reader(files, *, images, uploads, **fields)`` -> ``(data, modified_files | None)``:
      ``files`` are the uploaded files' local paths, one per distinct file, in ``index`` order of
      their entries. Returning ``modified_files`` (a reordering of ``files``) reorders the
      ``images`` given to ``output_formatter`` to match, as in FLaVor.
    - ``preprocess(data)`` -> ``x``; ``inference(x)`` -> ``out`` (may be ``async``);
      ``postprocess(out, *, data)`` -> ``model_out``.
    - ``output_formatter(model_out, *, images, categories, regressions, data, ids)`` ->
      :class:`~aicoco.AiCOCOOutput` (or a mapping that validates as one). ``categories`` and
      ``regressions`` are :class:`~aicoco.CategorySpec` / :class:`~aicoco.RegressionSpec` lists,
      ready for the ``aicoco`` strategies; ``ids`` is the request's id generator.
    """

    task: ClassVar[str | None] = None
    """Shown by ``GET /models``; the built-in pipelines set it, custom ones may."""

    def __init__(self, binding: PipelineBinding | None = None) -> None:
        self.binding = binding if binding is not None else current_binding()
        with binding_scope(self.binding):
            self.network = self.define_inference_network()
        self.categories: list[CategorySpec] = _specs(
            self.model_name, "set_categories", CategorySpec, self.set_categories()
        )
        self.regressions: list[RegressionSpec] = _specs(
            self.model_name, "set_regressions", RegressionSpec, self.set_regressions()
        )

    @property
    def model_name(self) -> str:
        return self.binding.model_name

    @property
    def triton(self) -> TritonClient:
        return self.binding.triton

    @property
    def limits(self) -> ReadLimits:
        return self.binding.limits

    @property
    def cpu(self) -> CpuPool:
        """The app's thread pool: for CPU work a stage does besides its own (it runs there)."""
        return self.binding.cpu

    @abc.abstractmethod
    def define_inference_network(self) -> Any:
        """The network: usually ``TritonModel("name")``; assigned to ``self.network``."""

    @abc.abstractmethod
    def set_categories(self) -> Sequence[CategoryLike] | None:
        """What each output channel means: ``[{"name": ..., "supercategory_name": ...}, ...]``."""

    @abc.abstractmethod
    def set_regressions(self) -> Sequence[RegressionLike] | None:
        """What each regression value means: ``[{"name": ..., "unit": ...}, ...]``."""

    @abc.abstractmethod
    def data_reader(
        self, files: Sequence[str], *args: Any, **kwargs: Any
    ) -> tuple[Any, Sequence[str] | None] | Awaitable[tuple[Any, Sequence[str] | None]]:
        """Read the request's files into whatever ``preprocess`` takes."""

    def preprocess(self, data: Any) -> Any:
        return data

    def inference(self, x: Any) -> Any:
        return self.network(x)

    def postprocess(self, out: Any, *args: Any, **kwargs: Any) -> Any:
        return out

    @abc.abstractmethod
    def output_formatter(
        self, model_out: Any, *args: Any, **kwargs: Any
    ) -> AiCOCOOutput | Mapping[str, Any] | Awaitable[AiCOCOOutput | Mapping[str, Any]]:
        """Turn ``model_out`` into AiCOCO, usually with one of ``aicoco``'s strategies.

        Called with the keywords ``images``, ``categories``, ``regressions``, ``data`` and
        ``ids``, each passed only if the signature names it (or takes ``**kwargs``).
        """

    async def __call__(self, request: InferenceRequest) -> AiCOCOOutput:
        if request.tables:
            raise WrongInputKind(
                f"model '{self.model_name}' takes images; this request sends 'tables' (a "
                "tabular or hybrid model takes those: GET /models lists each model's task)",
                details={"model": self.model_name},
            )
        images = sorted(request.images, key=lambda image: image.index)
        files, names = _files(request, images)
        fields = {k: v for k, v in request.fields.items() if k not in _RESERVED}
        with progress.scope(request.progress):
            return await self._stages(request, images, files, names, fields)

    async def _stages(
        self,
        request: InferenceRequest,
        images: list[AiImage],
        files: list[str],
        names: dict[str, str],
        fields: dict[str, Any],
    ) -> AiCOCOOutput:
        # What one stage leaves for the next; popped when used, so big arrays go early.
        kept: dict[str, Any] = {}

        def keep_read(read: Any) -> None:
            data, modified = unpack_read(self.model_name, read)
            kept["data"] = data
            kept["images"] = reorder(images, modified, names) if modified else images

        await _run_stages(
            self.cpu,
            request,
            _Step(
                "read",
                self.data_reader,
                lambda: (
                    (),
                    {"files": files, "images": images, "uploads": request.uploads, **fields},
                ),
                keep_read,
            ),
            _Step(
                "preprocess",
                self.preprocess,
                lambda: ((kept["data"],), {}),
                lambda x: kept.__setitem__("x", x),
            ),
        )
        with request.stage("triton"):
            out = self.inference(kept.pop("x"))
            if inspect.isawaitable(out):
                out = await out
        kept["out"] = out
        del out
        await _run_stages(
            self.cpu,
            request,
            _Step(
                "postprocess",
                self.postprocess,
                lambda: ((kept.pop("out"),), {"data": kept["data"]}),
                lambda model_out: kept.__setitem__("model_out", model_out),
            ),
            _Step(
                "format",
                self.output_formatter,
                lambda: (
                    (kept.pop("model_out"),),
                    {
                        "images": kept["images"],
                        "categories": self.categories,
                        "regressions": self.regressions,
                        "data": kept["data"],
                        "ids": request.ids,
                    },
                ),
                lambda result: kept.__setitem__("result", result),
                refused=self._refused_output,
            ),
        )
        return _as_output(self.model_name, kept["result"])

    def _refused_output(self, exc: AiCOCOFormatError) -> ApiError:
        return InvalidModelOutput(
            f"the output of model '{self.model_name}' does not fit its categories or images: {exc}",
            details={"model": self.model_name},
        )


@dataclass(frozen=True)
class _Step:
    """One stage: its function, its arguments (built when it runs, from what earlier stages
    kept), where its result goes, and what an AiCOCO refusal inside it means."""

    name: str
    fn: Callable[..., Any]
    arguments: Callable[[], tuple[tuple[Any, ...], dict[str, Any]]]
    keep: Callable[[Any], None]
    refused: Callable[[AiCOCOFormatError], ApiError] | None = None

    def call(self, request: InferenceRequest) -> Any:
        args, kwargs = self.arguments()
        with request.stage(self.name), self._mapped():
            return self.fn(*args, **accepted_keywords(self.fn, len(args), kwargs))

    async def call_async(self, request: InferenceRequest) -> Any:
        args, kwargs = self.arguments()
        with request.stage(self.name), self._mapped():
            return await self.fn(*args, **accepted_keywords(self.fn, len(args), kwargs))

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except AiCOCOFormatError as exc:
            if self.refused is None:
                raise
            raise self.refused(exc) from exc


async def _run_stages(cpu: CpuPool, request: InferenceRequest, *steps: _Step) -> None:
    """Run stages in order, each with the keywords it accepts: an ``async def`` stage on the
    event loop, and consecutive plain ones together in one call on the worker pool.

    One pool call per run of stages rather than per stage: a hand-off to the pool and back costs
    about 0.1 ms of CPU here, as much as a 2D classifier's postprocess and format together.
    Each stage is still timed on its own (``request.stage``), inside the worker.
    """
    batch: list[_Step] = []
    for step in steps:
        if not inspect.iscoroutinefunction(step.fn):
            batch.append(step)
            continue
        if batch:
            await cpu.run(_run_plain, request, batch)
            batch = []
        step.keep(await step.call_async(request))
    if batch:
        await cpu.run(_run_plain, request, batch)


def _run_plain(request: InferenceRequest, steps: list[_Step]) -> None:
    for step in steps:
        step.keep(step.call(request))


_RESERVED = frozenset({"files", "images", "uploads", "data", "ids"})


def accepted_keywords(
    fn: Callable[..., Any], positional: int, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The keywords ``fn`` accepts, less those naming a parameter the call already fills (the
    bound ``self``, the positional arguments): a client's extra field named ``self`` or ``x``
    reaches ``**kwargs`` stages only where it cannot collide."""
    bound = getattr(fn, "__self__", None) is not None and hasattr(fn, "__func__")
    names, filled = _keyword_names(getattr(fn, "__func__", fn), positional + int(bound))
    return {
        key: value
        for key, value in kwargs.items()
        if key not in filled and (names is None or key in names)
    }


@functools.lru_cache(maxsize=1024)
def _keyword_names(
    fn: Callable[..., Any], positional: int
) -> tuple[frozenset[str] | None, frozenset[str]]:
    """The keywords ``fn`` accepts (None for all, with ``**kwargs``), and the names of its first
    ``positional`` parameters, which a call filling them positionally must not pass again.
    Cached per function (a bound method's underlying function): ``inspect.signature`` is costly
    next to a 2D request."""
    parameters = list(inspect.signature(fn).parameters.values())
    by_position = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    filled = frozenset(p.name for p in parameters[:positional] if p.kind in by_position)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None, filled
    return frozenset(
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ), filled


def _files(
    request: InferenceRequest, images: Sequence[AiImage]
) -> tuple[list[str], dict[str, str]]:
    """Local paths of the uploads, one per distinct file in entry order, and path -> file name.

    The HTTP layer has checked the pairing already; a pipeline called directly (a test, a
    benchmark) gets the same check."""
    check_uploads((image.file_name for image in images), request.uploads)
    paths = upload_paths(request, [image.file_name for image in images])
    return list(paths), paths


def upload_paths(request: InferenceRequest, names: Sequence[str]) -> dict[str, str]:
    """Local path -> file name of the uploads ``names`` names, each once, in that order."""
    return {str(request.uploads[name].path): name for name in dict.fromkeys(names)}


def unpack_read(model: str, read: Any) -> tuple[Any, Sequence[str] | None]:
    if not isinstance(read, tuple) or len(read) != 2:
        raise InternalError(
            f"the pipeline of model '{model}': data_reader must return (data, modified_files "
            f"or None), got {type(read).__name__}",
            details={"model": model},
        )
    data, modified = read
    return data, modified


def reorder(
    images: Sequence[AiImage], files: Sequence[str], names: Mapping[str, str]
) -> list[AiImage]:
    """FLaVor's rule: the entries follow ``files`` (the data's order), each file's by index."""
    ordered: list[AiImage] = []
    for path in files:
        name = names.get(str(path))
        if name is None:
            raise InternalError(f"data_reader returned a file it was not given: {path}")
        ordered.extend(image for image in images if image.file_name == name)
    return ordered


def _specs(model: str, stage: str, kind: type[Any], values: Sequence[Any] | None) -> list[Any]:
    try:
        return [v if isinstance(v, kind) else kind.model_validate(v) for v in values or ()]
    except ValueError as exc:
        raise InternalError(
            f"the pipeline of model '{model}': {stage}() returned an invalid entry: {exc}",
            details={"model": model},
        ) from None


def _as_output(model: str, result: Any) -> AiCOCOOutput:
    if isinstance(result, AiCOCOOutput):
        return result
    if isinstance(result, Mapping):
        try:
            return AiCOCOOutput.model_validate(result)
        except ValueError as exc:
            raise InvalidModelOutput(
                f"the pipeline of model '{model}' produced an invalid AiCOCO document: {exc}",
                details={"model": model},
            ) from None
    raise InternalError(
        f"the pipeline of model '{model}': output_formatter must return an AiCOCOOutput, "
        f"got {type(result).__name__}",
        details={"model": model},
    )
