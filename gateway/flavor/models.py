"""FLaVor's base classes and data-model names, for service scripts that move by changing imports.

The stages keep FLaVor's names, arguments and order (``data_reader``, ``preprocess``,
``inference``, ``postprocess``, ``output_formatter``) and run synchronously on the gateway's
worker threads, one request's stages after each other, as FLaVor runs them. What differs:

- ``define_inference_network`` returns :class:`~gateway.flavor.TritonSession` (the model that
  Triton serves) instead of an in-process network.
- The gateway pairs files with entries by exact name and checks them before the stages run, so
  ``files`` are the uploads' paths in the entries' order (tables: the tables' order).
- Concurrent requests share the instance, as in FLaVor; the stages get everything per request
  as arguments and should keep nothing on ``self`` (FLaVor's own ``self.images`` is not set).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from aicoco import AiCOCOOutput, AiImage
from aicoco.tables import (
    AiCOCOHybridOutput,
    AiCOCOTabularOutput,
    AiHybridImage,
    AiHybridMeta,
    AiTable,
    AiTableMeta,
)

Kind = Literal["image", "tabular", "hybrid"]


class BaseAiCOCOInferenceModel(abc.ABC):
    """The stages every kind shares. ``__init__`` defines the network and the categories."""

    kind: ClassVar[Kind]

    def __init__(self) -> None:
        self.network = self.define_inference_network()
        self.categories = self.set_categories()
        self.regressions = self.set_regressions()

    @abc.abstractmethod
    def define_inference_network(self) -> Any:
        """``TritonSession("model_name")``: assigned to ``self.network``."""

    @abc.abstractmethod
    def set_categories(self) -> list[dict[str, Any]] | None: ...

    @abc.abstractmethod
    def set_regressions(self) -> list[dict[str, Any]] | None: ...

    def preprocess(self, data: Any) -> Any:
        return data

    def inference(self, x: Any) -> Any:
        return self.network(x)

    def postprocess(self, model_out: Any, **kwargs: Any) -> Any:
        return model_out

    @abc.abstractmethod
    def data_reader(self, *args: Any, **kwargs: Any) -> Any:
        """Read the request's files (each kind names its arguments)."""

    @abc.abstractmethod
    def output_formatter(self, model_out: Any, **kwargs: Any) -> Any: ...


class BaseAiCOCOImageInferenceModel(BaseAiCOCOInferenceModel):
    """``data_reader(files, **kwargs) -> (data, modified_files or None)``; ``output_formatter``
    gets ``images``, ``categories``, ``regressions`` and ``data``."""

    kind = "image"

    @abc.abstractmethod
    def data_reader(
        self, files: Sequence[str], **kwargs: Any
    ) -> tuple[Any, Sequence[str] | None]: ...


class BaseAiCOCOTabularInferenceModel(BaseAiCOCOInferenceModel):
    """``data_reader(files) -> dataframes`` (one per table); ``output_formatter`` gets
    ``tables``, ``dataframes``, ``meta``, ``categories`` and ``regressions``. Each table's rows
    must be a whole number of ``meta.window_size`` windows, as FLaVor checks."""

    kind = "tabular"

    @abc.abstractmethod
    def data_reader(self, files: Sequence[str], **kwargs: Any) -> Sequence[Any]: ...


class BaseAiCOCOHybridInferenceModel(BaseAiCOCOInferenceModel):
    """``data_reader(image_files, table_files)``: each image with the table its ``table_ids``
    names (one per image, as FLaVor's hybrid model); ``output_formatter`` gets ``images``,
    ``tables``, ``meta``, ``categories`` and ``regressions``."""

    kind = "hybrid"

    @abc.abstractmethod
    def data_reader(
        self, image_files: Sequence[str], table_files: Sequence[str], **kwargs: Any
    ) -> Any: ...


class _Input(BaseModel):
    model_config = ConfigDict(extra="allow")


class AiCOCOImageInputDataModel(_Input):
    images: list[AiImage]


class AiCOCOTabularInputDataModel(_Input):
    tables: list[AiTable]
    meta: AiTableMeta


class AiCOCOHybridInputDataModel(_Input):
    images: list[AiHybridImage]
    tables: list[AiTable]
    meta: AiHybridMeta


AiCOCOImageOutputDataModel = AiCOCOOutput
AiCOCOTabularOutputDataModel = AiCOCOTabularOutput
AiCOCOHybridOutputDataModel = AiCOCOHybridOutput

INPUT_KINDS: dict[type[BaseModel], Kind] = {
    AiCOCOImageInputDataModel: "image",
    AiCOCOTabularInputDataModel: "tabular",
    AiCOCOHybridInputDataModel: "hybrid",
}
