"""JSON fields within limits: each hostile text is a 400 with its own code, never a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidJSONText, JSONNumberTooLarge, JSONTooDeep, MalformedJSON
from gateway.json_fields import MAX_DEPTH, MAX_NUMBER_CHARS, parse_field


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
        '[{"meta": ' + "[" * 40 + "]" * 40 + "}]",
    ],
    ids=["arrays-100k", "objects-100k", "just-past-the-limit", "deep-inside-an-entry"],
)
def test_deep_nesting_is_refused(text: str) -> None:
    with pytest.raises(JSONTooDeep) as raised:
        parse_field("images", text)
    assert raised.value.status == 400
    assert raised.value.details["field"] == "images"


def test_nesting_up_to_the_limit_parses() -> None:
    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_field("meta", text) is not None


@pytest.mark.parametrize(
    "text", ["9" * 5000, "[" + "1" * (MAX_NUMBER_CHARS + 1) + "]", "1e999", "-1e400"]
)
def test_numbers_beyond_the_limits_are_refused(text: str) -> None:
    with pytest.raises(JSONNumberTooLarge):
        parse_field("meta", text)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", '{"a": -Infinity}'])
def test_non_finite_constants_are_refused(text: str) -> None:
    with pytest.raises(MalformedJSON) as raised:
        parse_field("meta", text)
    assert raised.value.code == "malformed_json"


@pytest.mark.parametrize(
    "text",
    [
        '[{"file_name": "a\\ud800.png"}]',
        '{"\\udfff": 1}',
        '["\\ude00\\ud83d"]',  # both halves, in the wrong order
        "[" * 40 + '"\\ud800"' + "]" * 40,
    ],
)
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises((InvalidJSONText, JSONTooDeep)) as raised:
        parse_field("images", text)
    assert raised.value.status == 400


def test_a_surrogate_pair_is_one_character() -> None:
    assert parse_field("images", '["\\ud83d\\ude00"]') == ["\U0001f600"]


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        ),
        max_leaves=30,
    )
)
def test_ordinary_json_parses_as_the_standard_library_does(value: object) -> None:
    text = json.dumps(value)
    assert parse_field("meta", text) == json.loads(text)
