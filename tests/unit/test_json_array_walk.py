"""wgrest_http.array_items: a JSON array walked element by element is json.loads, exactly.

Why it matters: the wgrest source no longer decodes a 10,000-peer page at once (its
~10 MiB of dicts set the daemon's heap for good); it walks the page's text one
element at a time and fingerprints each element's text. That walk must accept what
json.loads accepts, with the same values, and refuse everything else.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import FUZZ
from wgsyncd.wire.wgrest_http import WgrestProblem, _page_items, array_items

WHERE = "http://127.0.0.1:8000/v1/devices/wg0/peers/?per_page=10000"

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
)
spacing = st.sampled_from([None, 0, 1, "\t", " \r\n "])


def same(a: Any) -> str:
    """A value as comparable text: NaN (which json.loads takes) is not equal to itself."""
    return json.dumps(a)


def walk(text: str) -> list[Any]:
    """Every element's value; each element's text must decode to that very value."""
    out = []
    for piece, value in array_items(text):
        assert same(json.loads(piece)) == same(value)
        out.append(value)
    return out


def outcome(fn, text: str) -> tuple[str, str]:
    """("ok", the value as text) or ("error", ""): what one decoder made of ``text``."""
    try:
        value = fn(text)
    except (ValueError, RecursionError):
        return "error", ""
    return ("ok", same(value)) if isinstance(value, list) else ("error", "")


@FUZZ
@given(items=st.lists(values, max_size=8), indent=spacing, pad=st.sampled_from(["", " ", "\n\t"]))
def test_walk_equals_json_loads_on_arrays(items: list[Any], indent: Any, pad: str) -> None:
    text = pad + json.dumps(items, indent=indent) + pad
    assert same(walk(text)) == same(json.loads(text))


@FUZZ
@given(items=st.lists(values, max_size=5), data=st.data())
def test_walk_fails_exactly_where_json_loads_fails(items: list[Any], data: st.DataObject) -> None:
    """Mutated text: both accept (same array) or both refuse (a non-array counts as refused)."""
    text = json.dumps(items)
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    at = data.draw(st.integers(0, len(text)))
    if kind == "flip" and at < len(text):
        text = text[:at] + data.draw(st.characters()) + text[at + 1 :]
    elif kind == "cut":
        text = text[:at]
    else:
        extra = data.draw(st.sampled_from([",", "]", "[", "{}", " ", "NaN", '"', "\\\\", "1e999", "x"]))
        text = text[:at] + extra + text[at:]
    assert outcome(walk, text) == outcome(json.loads, text)  # a non-array counts as an error


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "expected a JSON array, got object"),
        ("3", "expected a JSON array, got number"),
        ("", "response is not valid JSON"),
        ("[1,]", "response is not valid JSON"),
        ("[1 2]", "response is not valid JSON"),
        ("[1] x", "response is not valid JSON"),
        ("[" * 100_000, "response is not valid JSON (nested too deeply)"),
        ("[" + "[" * 100_000, "response is not valid JSON (nested too deeply)"),
    ],
)
def test_a_bad_page_is_one_wgrest_problem_naming_the_url(text: str, message: str) -> None:
    with pytest.raises(WgrestProblem) as info:
        list(_page_items(text, WHERE))
    assert str(info.value) == f"{WHERE}: {message}"


def test_elements_before_the_break_come_out_first_so_callers_must_wait_for_the_end() -> None:
    """The walk is lazy: the caller (sources/wgrest.py) keeps nothing of a page until it ends."""
    it = _page_items('[{"a": 1}, {"b": 2}, oops]', WHERE)
    assert next(it) == ('{"a": 1}', {"a": 1})
    assert next(it) == ('{"b": 2}', {"b": 2})
    with pytest.raises(WgrestProblem, match="not valid JSON"):
        next(it)
