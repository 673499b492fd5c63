"""A JSON array read element by element from chunks of bytes: what json.loads accepts, no more.

Why: wgrest answers a 10,000-peer device as one ~3 MiB JSON array. json.loads makes
the whole text (another ~3 MiB) and then 10,000 dicts at once (~10 MiB of small
objects that fragment the heap for good); a daemon holding its peak RSS under 80 MB
cannot afford either. Here the bytes are decoded a chunk at a time as they arrive
(wgrest_http reads the body 64 KiB at a time) and each element is decoded, handed
out with its exact text, and let go before the next.

The contract (tests/unit/test_json_array_walk.py checks it against json.loads, for
every way of cutting the bytes into chunks): the elements come out with the values
json.loads would give them, and ValueError comes where json.loads would fail or give
something other than an array, at the latest after the last chunk. Elements before
the failure were already handed out, so a caller keeps nothing until the end.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

# one element's text at most (characters): a wgrest peer or device is a few KiB; a longer
# one is refused rather than joined and re-parsed (a 16 MiB string would cost 192 MiB)
MAX_ELEMENT = 2**20
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's four (RFC 8259); a regex: a hostile run of them is C-speed
_DECODER = json.JSONDecoder()  # json.loads' own settings


class _Text:
    """The decoded text not yet walked, refilled from the chunks on demand."""

    def __init__(self, chunks: Iterable[bytes], max_element: int) -> None:
        self.chunks = iter(chunks)
        self.max_element = max_element
        self.pos = 0
        self.final = False
        head = b""
        for chunk in self.chunks:  # json.detect_encoding looks at the first 4 bytes
            head += chunk
            if len(head) >= 4:
                break
        else:
            self.final = True
        self.decoder = codecs.getincrementaldecoder(json.detect_encoding(head))("surrogatepass")
        self.text = self.decoder.decode(head, final=self.final)

    def more(self) -> bool:
        """Drop the walked text, add at least as much again as is left (one chunk at the least).

        Doubling keeps the work linear when one element is longer than a chunk (or
        broken: it is then only known to be broken once the text ends). False at the end.
        """
        if self.final:
            return False
        rest = self.text[self.pos :]
        if len(rest) > self.max_element:
            raise ValueError(f"an element longer than {self.max_element} characters")
        parts, size = [rest], 0
        while not size or size < len(rest):
            chunk = next(self.chunks, None)
            if chunk is None:
                self.final = True
                parts.append(self.decoder.decode(b"", final=True))
                break
            piece = self.decoder.decode(chunk)
            parts.append(piece)
            size += len(piece) or 1
        self.text, self.pos = "".join(parts), 0
        return True

    def skip(self) -> str:
        """The next character that is not whitespace ("" at the very end), reading on as needed."""
        while True:
            text = self.text
            self.pos = pos = _WHITESPACE.match(text, self.pos).end()
            if pos < len(text):
                return text[pos]
            if not self.more():
                return ""

    def value(self) -> tuple[str, Any]:
        """The next JSON value and its text, once a ``,`` or ``]`` after it shows where it ends.

        Until then a value may go on in the next chunk: ``0`` of ``0.5``, ``1`` of ``12``.
        """
        while True:
            try:
                value, end = _DECODER.raw_decode(self.text, self.pos)
            except ValueError:
                if self.more():
                    continue
                raise
            text = self.text
            after = _WHITESPACE.match(text, end).end()
            if (after == len(text) or text[after] not in ",]") and self.more():
                continue
            if end - self.pos > self.max_element:
                raise ValueError(f"an element longer than {self.max_element} characters")
            piece, self.pos = text[self.pos : end], end
            return piece, value


def items(
    chunks: Iterable[bytes], *, max_items: int | None = None, max_element: int = MAX_ELEMENT
) -> Iterator[tuple[str, Any]]:
    """Each element of the JSON array the chunks spell: (its exact text, its value).

    ``max_items``: more elements than that is ValueError at the first one too many (a
    page asked for N items has no business holding more; ``[0,0,...]`` in 16 MiB would
    be millions of calls). ``max_element``: see MAX_ELEMENT. Both are the only ways this
    refuses what json.loads would take.
    """
    text = _Text(chunks, max_element)
    first = text.skip()
    if first != "[":
        raise ValueError(f"not an array: {_type_at(first)}")
    text.pos += 1
    count = 0
    if text.skip() == "]":
        text.pos += 1
    else:
        while True:
            count += 1
            if max_items is not None and count > max_items:
                raise ValueError(f"more than {max_items} elements")
            yield text.value()
            after = text.skip()
            text.pos += 1
            if after == "]":
                break
            if after != ",":
                raise ValueError("expected ',' or ']' after an element")
            text.skip()
    if text.skip():
        raise ValueError("extra data after the array")


def _type_at(first: str) -> str:
    """What a JSON text that is not an array holds, from its first character (not parsed:
    the answer is refused either way, and a 16 MiB object need not be decoded to say so)."""
    kinds = {"{": "object", '"': "string", "t": "boolean", "f": "boolean", "n": "null"}
    if first in kinds:
        return kinds[first]
    if first and first in "-0123456789NI":
        return "number"
    raise ValueError("not JSON")


def type_name(value: Any) -> str:
    """The JSON type of ``value`` for an error message (never the value itself)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
