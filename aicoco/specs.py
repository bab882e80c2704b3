"""Categories and regressions as a pipeline declares them, and their AiCOCO lists.

A model's output channel i is declared category (or regression) i. Supercategories are not
channels: each distinct one becomes a category of its own, appended after every declared one,
so that index i of the AiCOCO list is still channel i.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aicoco.errors import AiCOCOFormatError
from aicoco.ids import IdGenerator
from aicoco.models import AiCategory, AiRegression


class CategorySpec(BaseModel):
    """A declared category. Extras (``description``, codes...) are copied to the output."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    supercategory_name: str | None = None
    display: bool = True
    """False: the category is listed but gets no annotations (nor objects)."""
    color: str | None = None


class RegressionSpec(BaseModel):
    """A declared regression. Extras (``unit``, ``threshold``...) are copied to the output."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    superregression_name: str | None = None


SpecT = TypeVar("SpecT", CategorySpec, RegressionSpec)


def category_specs(specs: Sequence[CategorySpec | Mapping[str, Any]]) -> list[CategorySpec]:
    """Accept parsed JSON declarations (``aicoco.categories`` of a model) as well as specs."""
    return [_validate(CategorySpec, spec) for spec in specs]


def regression_specs(specs: Sequence[RegressionSpec | Mapping[str, Any]]) -> list[RegressionSpec]:
    """Accept parsed JSON declarations (``aicoco.regressions`` of a model) as well as specs."""
    return [_validate(RegressionSpec, spec) for spec in specs]


def _validate(model: type[SpecT], spec: object) -> SpecT:
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise AiCOCOFormatError(
            f'expected a {model.__name__} declaration such as {{"name": "lesion"}}, '
            f"got {spec!r}: {exc.errors(include_url=False)[0]['msg']}"
        ) from exc


def _extras(spec: BaseModel, *, reserved: tuple[str, ...]) -> dict[str, Any]:
    """A declaration's extra keys; ids are generated, so a declared one would be silently lost."""
    extras = dict(spec.model_extra or {})
    clash = sorted(set(extras) & set(reserved))
    if clash:
        raise AiCOCOFormatError(
            f"declaration {spec.model_dump(exclude_unset=True)!r}: expected no {clash} key, "
            "ids are generated"
        )
    return extras


def build_categories(
    specs: Sequence[CategorySpec | Mapping[str, Any]], ids: IdGenerator
) -> list[AiCategory]:
    """Declared categories in order, then one category per distinct supercategory name.

    ``display`` is always written (consumers hide what is false); ``color`` only when set.
    """
    declared = category_specs(specs)
    supers: dict[str, str] = {}
    result: list[AiCategory] = []
    for spec in declared:
        super_id = None
        if spec.supercategory_name is not None:
            if spec.supercategory_name not in supers:
                supers[spec.supercategory_name] = ids()
            super_id = supers[spec.supercategory_name]
        extras = _extras(spec, reserved=("id", "supercategory_id"))
        if spec.color is not None:
            extras["color"] = spec.color
        result.append(
            AiCategory(
                id=ids(),
                name=spec.name,
                supercategory_id=super_id,
                display=spec.display,
                **extras,
            )
        )
    result.extend(AiCategory(id=id_, name=name) for name, id_ in supers.items())
    return result


def build_regressions(
    specs: Sequence[RegressionSpec | Mapping[str, Any]], ids: IdGenerator
) -> list[AiRegression]:
    """Declared regressions in order, then one regression per distinct superregression name."""
    declared = regression_specs(specs)
    supers: dict[str, str] = {}
    result: list[AiRegression] = []
    for spec in declared:
        super_id = None
        if spec.superregression_name is not None:
            if spec.superregression_name not in supers:
                supers[spec.superregression_name] = ids()
            super_id = supers[spec.superregression_name]
        result.append(
            AiRegression(
                id=ids(),
                name=spec.name,
                superregression_id=super_id,
                **_extras(spec, reserved=("id", "superregression_id")),
            )
        )
    result.extend(AiRegression(id=id_, name=name) for name, id_ in supers.items())
    return result
