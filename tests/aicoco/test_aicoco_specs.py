"""Declared categories and regressions -> AiCOCO lists, index i = channel i."""

from __future__ import annotations

import pytest

from aicoco import (
    AiCOCOFormatError,
    CategorySpec,
    IdGenerator,
    RegressionSpec,
    build_categories,
    build_regressions,
)


def test_supercategories_come_after_the_declared_categories(ids: IdGenerator) -> None:
    declared: list[CategorySpec | dict[str, object]] = [
        CategorySpec(name="left lung", supercategory_name="lung", color="#00ff00"),
        {"name": "nodule", "display": False, "snomed": "27925004"},
        CategorySpec(name="right lung", supercategory_name="lung"),
        CategorySpec(name="heart", supercategory_name="mediastinum"),
    ]
    categories = build_categories(declared, ids)
    assert [c.name for c in categories] == [
        "left lung",
        "nodule",
        "right lung",
        "heart",
        "lung",
        "mediastinum",
    ]
    lung, mediastinum = categories[4], categories[5]
    assert categories[0].supercategory_id == categories[2].supercategory_id == lung.id
    assert categories[3].supercategory_id == mediastinum.id
    assert categories[1].supercategory_id is None
    assert lung.supercategory_id is None
    dumped = [c.model_dump(mode="json") for c in categories]
    assert dumped[0]["color"] == "#00ff00"
    assert "color" not in dumped[2]
    assert dumped[1]["display"] is False
    assert dumped[1]["snomed"] == "27925004"
    assert all(d["display"] is True for i, d in enumerate(dumped[:4]) if i != 1)
    assert "display" not in dumped[4]
    assert len({c.id for c in categories}) == len(categories)


def test_regressions_keep_their_extras_and_superregressions_come_after(ids: IdGenerator) -> None:
    regressions = build_regressions(
        [
            RegressionSpec(name="diameter", superregression_name="size", unit="mm"),
            {"name": "volume", "superregression_name": "size", "unit": "ml", "threshold": 5},
            {"name": "age"},
        ],
        ids,
    )
    assert [r.name for r in regressions] == ["diameter", "volume", "age", "size"]
    assert regressions[0].superregression_id == regressions[1].superregression_id
    assert regressions[0].superregression_id == regressions[3].id
    assert regressions[2].superregression_id is None
    assert regressions[1].model_dump()["threshold"] == 5
    assert regressions[0].model_dump()["unit"] == "mm"


def test_same_seed_same_lists() -> None:
    declared = [{"name": "a", "supercategory_name": "s"}, {"name": "b"}]
    first = build_categories(declared, IdGenerator(seed=3))
    second = build_categories(declared, IdGenerator(seed=3))
    assert first == second


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"name": ""}, "CategorySpec"),
        ({"label": "x"}, "CategorySpec"),
        ({"name": "x", "id": "fixed"}, "ids are generated"),
        ({"name": "x", "supercategory_id": "fixed"}, "ids are generated"),
    ],
)
def test_bad_declarations_are_refused(declared: dict[str, str], message: str) -> None:
    with pytest.raises(AiCOCOFormatError, match=message):
        build_categories([declared], IdGenerator())


def test_bad_regression_declaration_is_refused() -> None:
    with pytest.raises(AiCOCOFormatError, match="RegressionSpec"):
        build_regressions([{"unit": "mm"}], IdGenerator())
