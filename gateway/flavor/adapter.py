"""A FLaVor-style model as a gateway pipeline: the request's files into its stages, in order.

The stages run on one worker thread per request, as FLaVor's ``__call__`` runs them, so a
model's synchronous ``self.network.run(...)`` can wait for Triton there while the event loop
serves other requests. Each stage is timed for the per-stage metrics. A stage's exception that
is not a gateway error is a 500 naming the model and the stage (its traceback in the log):
the fault is in the model's code, not in the client's request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from aicoco import AiCOCOFormatError, AiCOCOOutput
from aicoco.tables import AiCOCOHybridOutput, AiCOCOTabularOutput
from gateway.errors import (
    ApiError,
    InternalError,
    InvalidModelOutput,
    TableWindowMismatch,
    WrongInputKind,
)
from gateway.flavor.models import BaseAiCOCOInferenceModel
from gateway.flavor.network import TritonSession
from gateway.flavor.strategies import Call, calling
from gateway.inference import Document, InferenceRequest
from gateway.pipelines.base import (
    PipelineBinding,
    accepted_keywords,
    reorder,
    unpack_read,
    upload_paths,
)
from gateway.pipelines.hybrid import image_tables
from gateway.pipelines.tabular import table_meta

_OUTPUTS: dict[str, type[Any]] = {
    "image": AiCOCOOutput,
    "tabular": AiCOCOTabularOutput,
    "hybrid": AiCOCOHybridOutput,
}


class FlavorPipeline:
    def __init__(self, model: BaseAiCOCOInferenceModel, binding: PipelineBinding) -> None:
        self.model = model
        self.binding = binding
        self.sessions = [v for v in vars(model).values() if isinstance(v, TritonSession)]

    @property
    def model_name(self) -> str:
        return self.binding.model_name

    async def __call__(self, request: InferenceRequest) -> Document:
        loop = asyncio.get_running_loop()
        for session in self.sessions:
            session.attach(self.binding.triton, loop)
        kind = self.model.kind
        wants_tables = kind != "image"
        if bool(request.tables) != wants_tables or (kind != "tabular") != bool(request.images):
            raise WrongInputKind(
                f"model '{self.model_name}' is a FLaVor {kind} model: send "
                + {
                    "image": "'images' entries and their files",
                    "tabular": "'tables' entries and their files, and no images",
                    "hybrid": "'images' entries with 'table_ids', and 'tables'",
                }[kind],
                details={"model": self.model_name},
            )
        call = Call(request.ids, self.binding.records)
        stages = {"image": self._image, "tabular": self._tabular, "hybrid": self._hybrid}[kind]
        result = await self.binding.cpu.run(self._run, stages, request, call)
        return self._document(result)

    def _run(
        self, stages: Callable[[InferenceRequest], Any], request: InferenceRequest, call: Call
    ) -> Any:
        with calling(call):
            return stages(request)

    def _stage(
        self,
        request: InferenceRequest,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        with request.stage(name):
            try:
                return fn(*args, **accepted_keywords(fn, len(args), kwargs))
            except ApiError:
                raise
            except AiCOCOFormatError as exc:
                raise InvalidModelOutput(
                    f"the output of model '{self.model_name}' does not fit AiCOCO: {exc}",
                    details={"model": self.model_name, "stage": name},
                ) from exc
            except Exception as exc:
                raise InternalError(
                    f"the FLaVor model of '{self.model_name}' failed in {fn.__name__}: "
                    f"{type(exc).__name__}: {exc}",
                    details={"model": self.model_name, "stage": fn.__name__},
                ) from exc

    def _infer(self, request: InferenceRequest, read: Any, **formatting: Any) -> Any:
        """preprocess, inference, postprocess, then output_formatter with ``formatting``."""
        model = self.model
        x = self._stage(request, "preprocess", model.preprocess, read)
        out = self._stage(request, "triton", model.inference, x)
        out = self._stage(request, "postprocess", model.postprocess, out)
        return self._stage(
            request,
            "format",
            model.output_formatter,
            out,
            categories=model.categories,
            regressions=model.regressions,
            **formatting,
        )

    def _image(self, request: InferenceRequest) -> Any:
        images = sorted(request.images, key=lambda image: image.index)
        names = upload_paths(request, [image.file_name for image in images])
        read = self._stage(
            request, "read", self.model.data_reader, list(names), images=images, **request.fields
        )
        data, modified = unpack_read(self.model_name, read)
        if modified:
            images = reorder(images, modified, names)
        return self._infer(request, data, images=images, data=data, meta=request.fields.get("meta"))

    def _tabular(self, request: InferenceRequest) -> Any:
        meta = table_meta(request.fields.get("meta"))
        paths = list(upload_paths(request, [table.file_name for table in request.tables]))
        frames = self._stage(request, "read", self.model.data_reader, paths)
        for table, frame in zip(request.tables, frames, strict=True):
            if len(frame) % meta.window_size:
                raise TableWindowMismatch(
                    f"the table {table.file_name!r} has {len(frame)} data rows, not a multiple "
                    f"of window_size {meta.window_size}",
                    details={"file_name": table.file_name, "rows": len(frame)},
                )
        return self._infer(
            request,
            frames,
            tables=[table.model_dump() for table in request.tables],
            dataframes=frames,
            meta=meta.model_dump(),
        )

    def _hybrid(self, request: InferenceRequest) -> Any:
        # One image file and one table file per entry, in step, as FLaVor gives them: two
        # images of one patient get that patient's table twice.
        pairs = image_tables(request)
        images = [image for image, _ in pairs]
        image_paths = [str(request.uploads[image.file_name].path) for image in images]
        table_paths = [str(request.uploads[table.file_name].path) for _, table in pairs]
        data = self._stage(request, "read", self.model.data_reader, image_paths, table_paths)
        return self._infer(
            request,
            data,
            images=images,
            tables=[table.model_dump() for table in request.tables],
            meta=request.fields.get("meta") or {},
        )

    def _document(self, result: Any) -> Document:
        kind = _OUTPUTS[self.model.kind]
        if isinstance(result, kind):
            return result  # type: ignore[no-any-return]
        try:
            return kind.model_validate(result)  # type: ignore[no-any-return]
        except ValidationError as exc:
            raise InvalidModelOutput(
                f"the output_formatter of model '{self.model_name}' gave no valid AiCOCO "
                f"{self.model.kind} document: {exc.errors(include_url=False)[0]['msg']}",
                details={"model": self.model_name},
            ) from None
