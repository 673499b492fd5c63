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
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from psycopg.types.json import Jsonb

# inside a double-quoted array element: backslash and double quote are escaped
_ARRAY_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# a list of tokens that array_in reads back unquoted, joined with ",": no element empty,
# none holding a separator, quote, backslash, brace or blank (allowed IPs, addresses,
# source names, wg-quick tokens validated upstream); NULL alone is checked apart
_BARE = re.compile(r'[^\s"\\{},]+(?:,[^\s"\\{},]+)*')
_NULL_WORD = re.compile(r"(?:^|,)null(?:,|$)", re.IGNORECASE)


def _timestamp(when: datetime) -> str:
    """ISO 8601 with its offset; a naive time is UTC, as everywhere in the writer
    (and as psycopg's own adaptation read it, the session time zone being UTC)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


def _quoted(item: str) -> str:
    """One text element, double-quoted (commas, braces and blanks need no cases then)."""
    if '"' in item or "\\" in item:
        item = item.translate(_ARRAY_ESCAPES)
    return '"' + item + '"'


def _array(items: Sequence[Any]) -> str:
    """A one-dimensional array literal; every element quoted, so commas, braces and
    spaces need no special cases, and NULL elements stay NULL. Elements are text,
    integers (bigint[] / numeric[]) or aware datetimes (timestamptz[])."""
    parts = []
    for item in items:
        if item is None:
            parts.append("NULL")
        elif isinstance(item, str):
            parts.append(_quoted(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            parts.append(str(item))
        elif isinstance(item, datetime):
            parts.append('"' + _timestamp(item) + '"')
        else:
            raise TypeError(f"array: unsupported element type {type(item).__name__}")
    return "{" + ",".join(parts) + "}"


def _text_array(items: Sequence[str | None]) -> str:
    """``_array`` of text and NULLs in one join: a column of 10,000 keys is one C-level
    pass, and only a column holding a quote or backslash is escaped element by element."""
    nulls = 0
    parts = []
    for v in items:
        if v is None:
            nulls += 1
            parts.append("NULL")
        else:
            parts.append('"' + v + '"')
    body = ",".join(parts)
    if "\\" in body or body.count('"') != 2 * (len(parts) - nulls):
        return _array(items)  # some element needs escaping
    return "{" + body + "}"


def _list_element(items: Sequence[Any]) -> str:
    """A list as one element of an outer text[] (see text_columns): its array literal,
    quoted and escaped for the outer array, built in one join where it can be.

    Tokens validated upstream (prefixes, addresses, source names) are written bare,
    ``"{10.0.0.1/32,fd00::1/128}"``; plain text (a comment with blanks) quoted inside,
    ``"{\\"# Name = x\\"}"``. Anything else (a NULL, an empty string, a quote or a
    backslash, the word NULL) takes the general form, which is exact for every text.
    """
    try:
        body = ",".join(items)
    except TypeError:  # a None or a non-text element
        return _quoted(_array(items))
    if not items:
        return '"{}"'
    if _BARE.fullmatch(body) and body.count(",") == len(items) - 1 and not _NULL_WORD.search(body):
        return '"{' + body + '}"'
    if '"' not in body and "\\" not in body:
        return '"{\\"' + '\\",\\"'.join(items) + '\\"}"'
    return _quoted(_array(items))


def columns(rows: Sequence[Sequence[Any]], width: int, start: int = 0) -> list[str]:
    """Columns ``start`` .. ``start + width`` of ``rows``, each as one array literal: the
    parameters of ``INSERT .. SELECT FROM unnest(%s::text[], %s::bigint[], ..)``, one
    round trip and no temporary table (whose catalog churn adds up over a thousand hosts)."""
    out = []
    for i in range(start, start + width):
        col = [row[i] for row in rows]
        kinds = set(map(type, col))
        if kinds <= {str, type(None)}:
            out.append(_text_array(col))
        elif kinds <= {int, type(None)}:
            out.append("{" + ",".join(["NULL" if v is None else str(v) for v in col]) + "}")
        else:
            out.append(_array(_shared_times(col)))
    return out


def _shared_times(col: list[Any]) -> list[Any]:
    """Datetimes as their quoted-free text form, one isoformat per distinct object (a
    cycle's rows share its observed_at); other values unchanged for ``_array``."""
    done: dict[int, str] = {}
    out: list[Any] = []
    for v in col:
        if isinstance(v, datetime):
            hit = done.get(id(v))
            if hit is None:
                hit = done[id(v)] = _timestamp(v)
            out.append(hit)
        else:
            out.append(v)
    return out


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


def _element(value: Any) -> str:
    """``value``'s text form as one element of a text[] literal (quoted, escaped)."""
    if isinstance(value, list | tuple):
        return _list_element(value)
    text = _text(value)
    return "NULL" if text is None else _quoted(text)


def text_columns(rows: Sequence[Sequence[Any]], width: int, start: int = 0) -> list[str]:
    """Columns ``start`` .. ``start + width`` of ``rows``, each one text[] literal of the
    values' text forms.

    For the store's SECURITY DEFINER functions, which take one text[] per column and
    cast each element in SQL (``x::integer``, ``x::text[]``, ``x::jsonb``): a text[]
    or jsonb value cannot be an element of a one-dimensional typed array. Shared list
    and jsonb objects (the writer shares them between rows) are encoded once, element
    form included; a column of text only is joined in one pass (``_text_array``).
    """
    done: dict[int, tuple[Any, str]] = {}
    out = []
    for i in range(start, start + width):
        col = [row[i] for row in rows]
        kinds = set(map(type, col))
        kinds.discard(type(None))
        if kinds <= {str}:
            out.append(_text_array(col))
        elif kinds <= {bool}:
            out.append("{" + ",".join([_BOOLS[v] for v in col]) + "}")
        elif kinds <= {int}:
            out.append("{" + ",".join(["NULL" if v is None else str(v) for v in col]) + "}")
        elif kinds <= {list, tuple} and 2 * len(set(map(id, col))) > len(col):  # mostly distinct
            out.append("{" + ",".join(["NULL" if v is None else _list_element(v) for v in col]) + "}")
        else:
            out.append("{" + ",".join([_shared_element(v, done) for v in col]) + "}")
    return out


_BOOLS = {True: '"t"', False: '"f"', None: "NULL"}


def _shared_element(v: Any, done: dict[int, tuple[Any, str]]) -> str:
    """``_element(v)``, once per shared list or jsonb object (the writer's rows share
    their provenance maps and source lists)."""
    if v is None:
        return "NULL"
    if isinstance(v, list | tuple | Jsonb | dict):
        key = id(v.obj if isinstance(v, Jsonb) else v) * 2 + isinstance(v, Jsonb)
        hit = done.get(key)
        if hit is None:
            hit = done[key] = (v, _element(v))  # v kept: its id stays unique
        return hit[1]
    return _element(v)
