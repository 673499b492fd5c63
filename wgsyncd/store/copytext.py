"""Columns -> PostgreSQL array literals, built in one pass, for the store's functions.

The writer sends each column of its rows as one array parameter (``unnest`` on the
server): typed arrays for the scalar runtime columns (``columns``), text[] of each
value's text form where an element would itself be an array or jsonb (``text_columns``;
the schema owner's functions cast them back, migration 0003). COPY is gone: a host
role may not UPDATE, and COPY FROM does not work on tables with row-level security.

Why not psycopg's list adaptation: without the C extension (Debian ships none) it
adapts every value through Python dumpers: for 10,000 rows of 7 columns (text,
bigint, NULLs, timestamptz) it took 0.56-0.73 s against 0.17-0.24 s here, about 3x
(psycopg 3.1.7 and 3.3.9 in pure Python, on a busy 2-core machine). The types are
the few our tables use: text, integers, booleans, timestamps (a naive one is UTC),
text[], and jsonb (psycopg's ``Jsonb`` wrapper). Anything else is a programming error
and raises TypeError naming the type, never the value.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

# inside a double-quoted array element: backslash and double quote are escaped
_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


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
            raise TypeError(f"array: unsupported element type {type(item).__name__}")
    return "{" + ",".join(parts) + "}"


def columns(rows: Sequence[Sequence[Any]], width: int) -> list[str]:
    """Each of ``width`` columns of ``rows`` as one array literal: the parameters of
    ``INSERT .. SELECT FROM unnest(%s::text[], %s::bigint[], ..)``, one round trip
    and no temporary table (whose catalog churn adds up over a thousand hosts)."""
    return [_array([row[i] for row in rows]) for i in range(width)]


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
