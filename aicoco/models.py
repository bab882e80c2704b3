"""Pydantic models of the AiCOCO format: the input document, the output document, every entity.

Entities allow extra keys wherever the format does (colours, units, confidences, client
metadata travel through untouched); regression items and the output document's top level do
not, as in FLaVor's definition of the format. Dumps of every model cope with numpy values
anywhere, extras included, through :func:`aicoco._json.to_jsonable`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from aicoco._json import to_jsonable

Id = Annotated[str, Field(min_length=1)]

# ints stay ints (polygon vertices are pixel indices) and floats stay floats (detector boxes);
# left-to-right makes numpy integers ints instead of the floats a "smart" union would pick.
Number = Annotated[int | float, Field(union_mode="left_to_right")]


def _even_length(polygon: list[int | float]) -> list[int | float]:
    if len(polygon) % 2:
        raise ValueError(f"expected a flat [x1, y1, x2, y2, ...] list, got {len(polygon)} values")
    return polygon


Polygon = Annotated[list[Number], Field(min_length=2), AfterValidator(_even_length)]
Box = Annotated[list[Number], Field(min_length=4, max_length=4)]


class AiModel(BaseModel):
    """Base of every AiCOCO entity: extras allowed, numpy-proof dumps.

    Fields with defaults are still written on output (as ``null`` or ``[]``), and the schema
    says so: consumers may rely on every key being present.
    """

    model_config = ConfigDict(extra="allow", json_schema_serialization_defaults_required=True)

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        kwargs.setdefault("fallback", to_jsonable)
        return super().model_dump(**kwargs)

    def model_dump_json(self, **kwargs: Any) -> str:
        kwargs.setdefault("fallback", to_jsonable)
        return super().model_dump_json(**kwargs)


class AiRegressionItem(AiModel):
    """One regression result, ``{regression_id, value}``; the format allows nothing else here."""

    model_config = ConfigDict(extra="forbid")

    regression_id: Id
    value: float


class AiImage(AiModel):
    """An image entry. Clients' entries are echoed, extras included.

    ``index`` is an int: FLaVor keeps a string index and sorts ``"10"`` before ``"9"``.
    """

    id: Id
    file_name: str
    index: int
    category_ids: list[str] | None = None
    regressions: list[AiRegressionItem] | None = None


class AiCategory(AiModel):
    id: Id
    name: str
    supercategory_id: str | None = None


class AiRegression(AiModel):
    id: Id
    name: str
    superregression_id: str | None = None


class AiObject(AiModel):
    id: Id
    category_ids: list[str] | None = None
    regressions: list[AiRegressionItem] | None = None


def _size_matches(rle: AiRLE) -> AiRLE:
    height, width = rle.size
    if sum(rle.counts) != height * width:
        raise ValueError(
            f"expected RLE counts summing to height * width = {height * width}, "
            f"got {sum(rle.counts)}"
        )
    return rle


class AiRLE(AiModel):
    """COCO's uncompressed RLE of one slice, the segmentation of an ``iscrowd: 1`` annotation.

    ``size`` is ``[height, width]``; ``counts`` are run lengths over the pixels in column-major
    order (down the first column, then the next), starting with a run of background (possibly
    0) and alternating. ``pycocotools.mask.frPyObjects`` reads it as is.
    """

    model_config = ConfigDict(extra="forbid")

    size: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]
    counts: list[Annotated[int, Field(ge=0)]]


CheckedRLE = Annotated[AiRLE, AfterValidator(_size_matches)]


class AiAnnotation(AiModel):
    """One object on one image: a box (detection) or polygons / an RLE (segmentation)."""

    id: Id
    image_id: Id
    object_id: Id
    iscrowd: Literal[0, 1] = 0
    bbox: list[Box] | None = None
    segmentation: list[Polygon] | CheckedRLE | None = None


class AiMeta(AiModel):
    """Series-level results (several images) and any metadata the client sent."""

    category_ids: list[str] | None = None
    regressions: list[AiRegressionItem] | None = None


class AiCOCOInput(AiModel):
    """The request document: the image entries, plus any other top-level keys (``meta``...)."""

    images: list[AiImage]


class AiCOCOOutput(AiModel):
    """The response document."""

    model_config = ConfigDict(extra="forbid")

    images: list[AiImage]
    annotations: list[AiAnnotation] = Field(default_factory=list)
    categories: list[AiCategory] = Field(default_factory=list)
    regressions: list[AiRegression] = Field(default_factory=list)
    objects: list[AiObject] = Field(default_factory=list)
    meta: AiMeta = Field(default_factory=AiMeta)

    def to_json_bytes(self) -> bytes:
        """The response body: compact UTF-8 JSON, numpy values converted wherever they are."""
        return self.__pydantic_serializer__.to_json(self, fallback=to_jsonable)
