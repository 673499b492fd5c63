"""Rows -> PostgreSQL COPY text format, and columns -> array literals, built in one pass.

Why not psycopg's ``Copy.write_row`` / list adaptation: without the C extension
(Debian ships none) it adapts every value through Python dumpers; 10,000 peer rows
cost ~0.9 s there and ~0.07 s here. The types are the few our tables use: text,
integers, booleans, timestamps (a naive one is UTC), text[], bigint[]/numeric[]/
timestamptz[] for unnest, and jsonb (psycopg's ``Jsonb`` wrapper). Anything else
is a programming error and raises TypeError naming the type, never the value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

# COPY text format: backslash, newline, carriage return and tab are escaped
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
# inside a double-quoted array element: backslash and double quote are escaped
_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# rows per chunk handed to COPY: bounds the payload held in memory at once
CHUNK_ROWS = 1000


def _escape(text: str) -> str:
    """COPY-escape ``text``; most values (keys, addresses) need nothing, and
    str.translate costs ~2 us even then, so check first (~0.1 us)."""
    if text.isprintable() and "\\" not in text:
        return text
    return text.translate(_COPY_ESCAPES)


def _timestamp(when: datetime) -> str:
    """ISO 8601 with its offset; a naive time is UTC, as everywhere in the writer
    (and as psycopg's own adaptation read it, the session time zone being UTC)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


def _array(items: Sequence[Any]) -> str:
    """A one-dimensional array literal; every element quoted, so commas, braces and
    spaces need no special cases, and NULL elements stay NULL. Elements are text,
    integers (bigint[] / numeric[]) or aware datetimes (timestamptz[])."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, str):
            if '"' in item or "\\" in item:
                item = item.translate(_ARRAY_ESCAPES)
            parts.append('"' + item + '"')
        elif isinstance(item, int) and not isinstance(item, bool):
            parts.append(str(item))
        elif isinstance(item, datetime):
            parts.append('"' + _timestamp(item) + '"')
        else:
            raise TypeError(f"COPY: unsupported array element type {type(item).__name__}")
    return "{" + ",".join(parts) + "}"


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    """Each of ``width`` columns of ``rows`` as one array literal: the parameters of
    ``INSERT .. SELECT FROM unnest(%s::text[], %s::bigint[], ..)``, one round trip
    and no temporary table (whose catalog churn adds up over a thousand hosts)."""
    return [_array([row[i] for row in rows]) for i in range(width)]


def field(value: Any) -> str:
    """One column's value in COPY text form (``\\N`` for NULL)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, bool):  # before int: bool is an int
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, list | tuple):
        return _escape(_array(value))
    if isinstance(value, Jsonb):
        return _escape(_JSON.encode(value.obj))
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"COPY: unsupported column type {type(value).__name__}")


# the common exact types straight to their encoder (a dict lookup instead of the
# isinstance chain: 10,000 peer rows are 190,000 values); anything else goes to field()
def _text(value: Any) -> str | None:
    """One value's text form, as PostgreSQL's input function for its column type reads it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, list | tuple):
        return _array(value)
    if isinstance(value, Jsonb):
        return _JSON.encode(value.obj)
    if isinstance(value, dict):
        return _JSON.encode(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"text column: unsupported type {type(value).__name__}")


def text_columns(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    """Each column of ``rows`` as one text[] literal of the values' text forms.

    For the store's SECURITY DEFINER functions, which take one text[] per column and
    cast each element in SQL (``x::integer``, ``x::text[]``, ``x::jsonb``): a text[]
    or jsonb value cannot be an element of a one-dimensional typed array. Shared list
    and jsonb objects (the writer shares them between rows) are encoded once.
    """
    done: dict[int, tuple[Any, str | None]] = {}
    out = []
    for i in range(width):
        items: list[str | None] = []
        for row in rows:
            v = row[i]
            if v is None or type(v) is str:
                items.append(v)
                continue
            if isinstance(v, list | tuple | Jsonb | dict):
                key = id(v.obj if isinstance(v, Jsonb) else v) * 2 + isinstance(v, Jsonb)
                hit = done.get(key)
                if hit is None:
                    hit = done[key] = (v, _text(v))
                items.append(hit[1])
                continue
            items.append(_text(v))
        out.append(_array(items))
    return out


_FAST: dict[type, Any] = {
    str: _escape,
    type(None): lambda _v: "\\N",
    int: str,
    bool: lambda v: "t" if v else "f",
}


def encode(rows: Iterable[Sequence[Any]]) -> bytes:
    """All rows as one COPY text payload (UTF-8), one line per row.

    Lists and jsonb values are often one shared object across rows (the writer
    shares source lists and provenance maps), so each is encoded once per call;
    the memo holds each object, so its id cannot be reused meanwhile.
    """
    done: dict[tuple[bool, int], tuple[Any, str]] = {}

    def once(value: Any) -> str:
        is_json = isinstance(value, Jsonb)
        obj = value.obj if is_json else value
        key = (is_json, id(obj))  # one list may be a text[] value in one column, jsonb in another
        hit = done.get(key)
        if hit is None:
            hit = done[key] = (obj, field(value))
        return hit[1]

    enc = {**_FAST, list: once, tuple: once, Jsonb: once}.get
    lines = ["\t".join([(enc(type(v)) or field)(v) for v in row]) for row in rows]
    if not lines:
        return b""
    return ("\n".join(lines) + "\n").encode()


def chunks(rows: Sequence[Sequence[Any]], size: int | None = None) -> Iterator[bytes]:
    """The payload of ``rows`` in pieces of ``size`` (default CHUNK_ROWS) rows, so 10,000
    rows never sit in memory as one multi-megabyte string (and again as its bytes)."""
    size = size or CHUNK_ROWS
    for start in range(0, len(rows), size):
        yield encode(rows[start : start + size])
