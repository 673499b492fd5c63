"""wire/jsonarray.py: a JSON array walked element by element, from chunks of bytes, is json.loads.

Why it matters: the wgrest source no longer decodes a 10,000-peer page at once (its
text and ~10 MiB of dicts set the daemon's heap for good); it walks the page's bytes
as they arrive, one element at a time, and fingerprints each element's text. That walk
must accept what json.loads accepts, with the same values, and refuse everything else,
however the bytes are cut into chunks. The page-level cases go through the real client
(WgrestHttp.pages) against a real HTTP server serving the body.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import FUZZ
from wgsyncd.wire import jsonarray
from wgsyncd.wire.wgrest_http import WgrestHttp, WgrestProblem

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
)
spacing = st.sampled_from([None, 0, 1, "\t", " \r\n "])


def same(a: Any) -> str:
    """A value as comparable text: NaN (which json.loads takes) is not equal to itself."""
    return json.dumps(a)


@pytest.fixture(scope="module")
def serve() -> Iterator[Any]:
    """A real HTTP server answering GET /page with whatever body (and headers) the test sets."""
    answer: dict[str, Any] = {"body": b"[]", "length": None}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer["body"]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if answer["length"] != 0:  # 0: none at all, read to the end
                self.send_header("Content-Length", str(answer["length"] or len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def page(
        body: bytes,
        per_page: int = 10000,
        *,
        length: int | str | None = None,
        client: WgrestHttp | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """The page's elements as WgrestHttp.pages hands them to the wgrest source."""
        answer.update(body=body, length=length)
        with client or WgrestHttp(base, None, timeout=10) as used:
            for items, _where in used.pages(f"{base}/page?per_page={per_page}", per_page):
                yield from items

    page.where = f"{base}/page?per_page="  # type: ignore[attr-defined]
    page.base = base  # type: ignore[attr-defined]
    yield page
    server.shutdown()


def cut(body: bytes, sizes: list[int]) -> list[bytes]:
    """The body in chunks of the given sizes (cycled; 0 makes an empty chunk), as a socket might."""
    out, at, i = [], 0, 0
    while at < len(body):
        size = sizes[i % len(sizes)] if sizes else len(body)
        out.append(body[at : at + size])
        at, i = at + size, i + 1
    return out


def walk(text: str | bytes, sizes: list[int] | None = None) -> list[Any]:
    """Every element's value; each element's text must decode to that very value."""
    body = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    chunks = cut(body, sizes if sizes is not None else [7])
    out = []
    for piece, value in jsonarray.items(chunks):
        assert same(json.loads(piece)) == same(value)
        out.append(value)
    return out


def outcome(fn, text: str | bytes) -> tuple[str, str]:
    """("ok", the value as text) or ("error", ""): what one decoder made of ``text``."""
    try:
        value = fn(text)
    except (ValueError, RecursionError):
        return "error", ""
    return ("ok", same(value)) if isinstance(value, list) else ("error", "")


sizes = st.lists(st.integers(0, 40), min_size=1, max_size=6).filter(any)


@FUZZ
@given(
    items=st.lists(values, max_size=8),
    indent=spacing,
    pad=st.sampled_from(["", " ", "\n\t"]),
    chunks=sizes,
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32-le"]),
    ascii_only=st.booleans(),
)
def test_walk_equals_json_loads_on_arrays(
    items: list[Any], indent: Any, pad: str, chunks: list[int], encoding: str, ascii_only: bool
) -> None:
    """Any cut of the bytes, the encodings json.loads detects (RFC 8259 and its BOMs)."""
    body = (pad + json.dumps(items, indent=indent, ensure_ascii=ascii_only) + pad).encode(encoding)
    assert same(walk(body, chunks)) == same(json.loads(body))


@FUZZ
@given(items=st.lists(values, max_size=5), data=st.data(), chunks=sizes)
def test_walk_fails_exactly_where_json_loads_fails(
    items: list[Any], data: st.DataObject, chunks: list[int]
) -> None:
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
    body = text.encode("utf-8", "surrogatepass")
    # a non-array counts as an error
    assert outcome(lambda b: walk(b, chunks), body) == outcome(json.loads, body)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}', "expected a JSON array, got object"),
        ("3", "expected a JSON array, got number"),
        ("", "response is not valid JSON"),
        ("[1,]", "response is not valid JSON"),
        ("[1 2]", "response is not valid JSON"),
        ("[1] x", "response is not valid JSON"),
        ('"a"', "expected a JSON array, got string"),
        ("null", "expected a JSON array, got null"),
        ("x", "response is not valid JSON"),
        ("[" * 100_000, "response is not valid JSON (nested too deeply)"),
        ("[" + "[" * 100_000, "response is not valid JSON (nested too deeply)"),
    ],
)
def test_a_bad_page_is_one_wgrest_problem_naming_the_url(serve: Any, text: str, message: str) -> None:
    with pytest.raises(WgrestProblem) as info:
        list(serve(text.encode()))
    assert str(info.value) == f"{serve.where}10000: {message}"


def test_a_page_holding_more_than_it_was_asked_for_is_refused_at_the_first_extra_element(serve: Any) -> None:
    """A hostile wgrest's ``[0,0,...]`` (16 MiB: millions of elements) costs per_page + 1 decodes."""
    body = b"[" + b"0," * 2**20 + b"0]"
    seen = 0
    with pytest.raises(WgrestProblem) as info:
        for _item in serve(body, 100):
            seen += 1
    assert seen == 100
    assert str(info.value) == f"{serve.where}100: more than 100 elements on a page that asked for 100"
    assert [v for _t, v in serve(b"[1,2,3]", 3)] == [1, 2, 3]  # exactly per_page: fine


def test_an_element_longer_than_the_cap_is_refused_not_joined_on_and_on(serve: Any) -> None:
    body = json.dumps([{"post_up": ["x" * (jsonarray.MAX_ELEMENT + 10)]}]).encode()
    with pytest.raises(WgrestProblem, match=f"an element longer than {jsonarray.MAX_ELEMENT} characters"):
        list(serve(body))
    small = json.dumps([{"post_up": ["x" * 4000]}]).encode()  # a long hook is fine
    assert len(list(serve(small))) == 1


def test_a_body_shorter_than_its_length_is_cut_short_not_bad_json(serve: Any) -> None:
    """The connection ends early (as a killed wgrest leaves it): the page is refused for that,
    by urllib3 2 as an incomplete read, by Debian's 1.26 (which returns what came) by length."""
    body = json.dumps([{"a": i} for i in range(5000)]).encode()
    assert len(list(serve(body, length=0))) == 5000  # no Content-Length: read to the end
    with pytest.raises(WgrestProblem) as info:
        list(serve(body[: len(body) // 2], length=len(body)))
    assert str(info.value).split(": ", 1)[1] in (
        "answer cut short (fewer bytes than Content-Length)",
        "request failed: ChunkedEncodingError",
    ), str(info.value)


def test_elements_before_the_break_come_out_first_so_callers_must_wait_for_the_end(serve: Any) -> None:
    """The walk is lazy: the caller (sources/wgrest.py) keeps nothing of a page until it ends."""
    it = serve(b'[{"a": 1}, {"b": 2}, oops]')
    assert next(it) == ('{"a": 1}', {"a": 1})
    assert next(it) == ('{"b": 2}', {"b": 2})
    with pytest.raises(WgrestProblem, match="not valid JSON"):
        next(it)


@pytest.mark.parametrize(
    ("body", "want"),
    [(json.dumps(["x" * 2**20, 1]).encode(), ["x" * 2**20, 1]), (b"[1," + b" " * 2**20 + b"2]", [1, 2])],
    ids=["1 MiB string", "1 MiB of blanks"],
)
def test_one_element_longer_than_many_chunks_is_read_in_linear_work(body: bytes, want: list[Any]) -> None:
    """1 MiB cut in 1-byte chunks: the text is re-joined by doubling, so the characters
    copied stay a small multiple of the body (one join per chunk would copy ~2**39)."""
    copied = 0
    real = jsonarray._Text.more

    def counting(self: jsonarray._Text) -> bool:
        nonlocal copied
        more = real(self)
        copied += len(self.text)
        return more

    jsonarray._Text.more = counting  # type: ignore[method-assign]
    try:
        got = [v for _t, v in jsonarray.items((body[i : i + 1] for i in range(len(body))), max_element=2**21)]
    finally:
        jsonarray._Text.more = real  # type: ignore[method-assign]
    assert got == want
    assert copied < 4 * len(body), copied


def test_a_number_cut_between_chunks_is_not_taken_short() -> None:
    assert walk(b"[12345, 6]", [3, 1, 1]) == [12345, 6]
    assert walk(b"[true,false,null]", [1]) == [True, False, None]


def test_a_page_refused_for_its_content_still_counts_as_answered_and_its_bytes_as_read(serve: Any) -> None:
    """wgrest answered (the optional-wgrest logic remembers it), and the bytes count toward max_total."""
    client = WgrestHttp(serve.base, None, timeout=10)
    with pytest.raises(WgrestProblem, match="more than 2 elements"):
        list(serve(b"[1, 2, 3, 4]", 2, client=client))
    assert client.answered and client.total > 0


@pytest.mark.parametrize("declared", ["+12", "1_2", "\u00b2", "9" * 5000])
def test_an_unreadable_content_length_is_one_wgrest_problem_never_a_crash(serve: Any, declared: str) -> None:
    with pytest.raises(WgrestProblem):
        list(serve(b"[1, 2, 3, 4, 5]", length=declared))


def test_a_page_left_half_read_is_refused_when_the_next_is_asked_for(serve: Any) -> None:
    with WgrestHttp(serve.base, None, timeout=10) as client:
        serve_pages = client.pages(f"{serve.base}/page?per_page=10", 10)
        list(serve(b"[1, 2, 3]"))  # sets the body
        items, _where = next(serve_pages)
        assert next(items) == ("1", 1)
        with pytest.raises(WgrestProblem, match="page not read to its end"):
            next(serve_pages)
