"""wgrest over HTTP: the one client the wgrest source and ``restore --to-wgrest`` share.

Why one hardened client: the bearer token opens wgrest's whole API (v2 lists the
server's private key), and what wgrest answers is untrusted input. So every request:

- goes only to the configured origin (scheme, host, port): a ``Link`` page or any URL
  elsewhere is refused before the token is attached; redirects are never followed;
- ignores the environment (``trust_env = False``): no ``~/.netrc`` Basic auth
  replacing the token, no proxy variables; credentials in the URL are dropped;
- has connect/read timeouts AND a whole-answer deadline (a timer that shuts the
  socket: a server dripping a byte at a time never trips a socket timeout), and,
  for a sync, a deadline for the whole read;
- reads the body streamed, refusing it at ``max_answer`` bytes (and at ``max_total``
  over all answers of one read), so a hostile wgrest costs a failed source, never
  the host's memory; compressed answers are refused (a small gzip can expand a lot);
- keeps the token, keys and bodies out of messages: errors name the URL
  (``redact_url``) and repeat server text only ``scrub``-bed.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests

from wgsyncd.state import Secret
from wgsyncd.validate import shown
from wgsyncd.wire import jsonarray
from wgsyncd.wire.http_transport import (
    cut_connections,
    is_refused,
    is_timeout,
    short_reason,
    track_connections,
)
from wgsyncd.wire.jsonarray import type_name  # noqa: F401  (re-exported: wgrest_api, the source)

log = logging.getLogger(__name__)

MAX_PAGES = 10_000  # a Link chain longer than this is a broken server, not a big one
DEFAULT_MAX_ANSWER = 16 * 2**20  # a 10,000-peer page is about 3 MiB
MAX_SERVER_TEXT = 160  # server-supplied text we repeat is cut to this (untrusted input)
_DIGITS = re.compile(r"[0-9]{1,19}")  # a Content-Length: plain ASCII digits, at most 19 (int64)
_KEYLIKE = re.compile(r"[A-Za-z0-9+/_-]{42,43}=")
_LINK_ENTRY = re.compile(r"<([^>]*)>((?:\s*;\s*[^;,]*)*)")
_REL_PARAM = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WgrestProblem(Exception):
    """One problem talking to wgrest, phrased for a person (no secrets inside)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


class WgrestRefused(WgrestProblem):
    """Nothing listens at the URL (ECONNREFUSED)."""


# --------------------------------------------------------------------------- URLs and text


def parse_link_header(value: str) -> dict[str, str]:
    """``rel`` -> URL from an RFC 5988 Link header (wgrest v1 joins with ",", v2 with ", ")."""
    links: dict[str, str] = {}
    for match in _LINK_ENTRY.finditer(value or ""):
        for rel_match in _REL_PARAM.finditer(match.group(2)):
            for rel in (rel_match.group(1) or rel_match.group(2) or "").split():
                links.setdefault(rel.lower(), match.group(1).strip())
    return links


def _netloc(parts: Any) -> str:
    """host[:port] of split URL parts, IPv6 bracketed, without user:password@."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host + (f":{parts.port}" if parts.port else "")


def redact_url(url: str) -> str:
    """The URL as it may appear in errors and logs: user:password@ removed, control
    characters escaped (a Link header is server text)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        url = urlunsplit((parts.scheme, _netloc(parts), parts.path, parts.query, parts.fragment))
    return shown(url, None)


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in: what may get the token."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1
    return scheme, (parts.hostname or "").lower(), port


def is_loopback(url: str) -> bool:
    """True when the URL's host is this machine (localhost, 127/8, ::1)."""
    host = (urlsplit(url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def scrub(text: str, token: Secret | None) -> str:
    """Untrusted server text made safe to repeat: no key-shaped strings, no token, short."""
    if token and token.reveal():
        text = text.replace(token.reveal(), "<token>")
    text = _KEYLIKE.sub("<key>", text)
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    text = " ".join(text.split())
    return text[:MAX_SERVER_TEXT] + ("..." if len(text) > MAX_SERVER_TEXT else "")


# --------------------------------------------------------------------------- answers


@dataclass
class Answer:
    """One HTTP answer, read whole within its deadline and cap."""

    status: int
    reason: str
    url: str
    headers: Any
    body: bytes | bytearray

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not.

        ``[[[[...`` a few thousand deep makes the json module raise RecursionError, not
        ValueError: it is just another body that is not usable JSON.
        """
        try:
            return json.loads(self.body)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None

    def error_text(self) -> str:
        """wgrest's ``{"code", "message"}`` from an error body, or "" (never the raw body)."""
        try:
            body = self.json()
        except ValueError:
            return ""
        if not isinstance(body, dict):
            return ""
        return ": ".join(
            str(body[k]) for k in ("code", "message") if isinstance(body.get(k), str) and body[k]
        )


class WgrestHttp:
    """One requests.Session bound to one wgrest origin, with every rule of the module doc."""

    def __init__(
        self,
        base_url: str,
        token: Secret | None,
        *,
        timeout: float,
        max_answer: int = DEFAULT_MAX_ANSWER,
        max_total: int | None = None,
        read_deadline: float | None = None,
    ) -> None:
        parts = urlsplit(base_url.strip())
        # user:password@ dropped: requests would send it as Basic auth instead of the token
        self.base = urlunsplit((parts.scheme, _netloc(parts), parts.path, "", "")).rstrip("/")
        self.origin = origin(self.base)
        self.token = token
        self.timeout = timeout
        self.max_answer = max_answer
        self.max_total = max_total
        self.total = 0  # bytes read over this client's life (one sync read)
        self.deadline = time.monotonic() + read_deadline if read_deadline else None
        self.read_deadline = read_deadline
        self.answered = False  # set after the first HTTP answer
        self.timed_out = False  # set after a timeout: a stuck wgrest is not asked again
        self.session = requests.Session()
        self.session.trust_env = False  # no ~/.netrc, no *_PROXY, no REQUESTS_CA_BUNDLE guesses
        self.connections = track_connections(self.session)

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> WgrestHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str) -> str:
        """An absolute URL under the configured base (which may carry a path prefix)."""
        return self.base + "/" + path.lstrip("/")

    # ---- one request

    def request(self, method: str, url: str, body: Any = None) -> Answer:
        """One request, read whole within the deadline and the caps; failures are WgrestProblem."""
        with self._open(method, url, body) as answer:
            return self._whole(answer)

    @contextmanager
    def _open(self, method: str, url: str, body: Any = None) -> Iterator[_Open]:
        """One request, its answer open: status and headers now, the body to be read (``_Open``).

        The token is attached here, after the URL was checked to be on the configured
        origin, and nowhere else (not as a session header a redirect could carry). The
        answer's deadline (a timer that shuts the socket) runs until the block ends: for a
        page (``pages``) that includes the caller's work on its elements as they arrive,
        ~0.1 s for 10,000 peers against wgrest.timeout's default 10 s.
        """
        where = redact_url(url).split("?")[0] if method != "GET" else redact_url(url)
        if origin(url) != self.origin:
            raise WgrestProblem(where, "not on the configured wgrest server; refused (the token stays here)")
        timeout = self._answer_timeout(where)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if self.token and self.token.reveal():
            headers["Authorization"] = f"Bearer {self.token.reveal()}"
        cut = threading.Event()
        timer = threading.Timer(timeout, cut_connections, (self.connections, cut))
        timer.daemon = True
        timer.start()
        answer: _Open | None = None
        try:
            with self.session.request(
                method, url, json=body, headers=headers, timeout=timeout, stream=True, allow_redirects=False
            ) as resp:
                # urllib3 1.26 (Debian 12) hands a body shorter than its Content-Length over as
                # complete unless told; 2.x enforces it by default
                resp.raw.enforce_content_length = True
                answer = _Open(self, method, url, where, resp, cut, timeout, self._limit(resp, where))
                yield answer
        except requests.RequestException as exc:
            raise self._transport_problem(exc, where, cut.is_set(), timeout) from None
        finally:
            timer.cancel()
            if answer is not None:  # every byte read counts against max_total, page kept or not
                self.total += answer.size

    def _whole(self, answer: _Open) -> Answer:
        """The open answer read to its end into one buffer; a redirect is refused."""
        # grown in place (realloc: an mmap'ed buffer moves without a copy), not chunks then a join
        body = bytearray()
        for chunk in answer.chunks():
            body += chunk
        answer.complete()
        status = answer.resp.status_code
        if 300 <= status < 400:
            raise WgrestProblem(answer.where, f"HTTP {status} redirect; not followed")
        return Answer(status, answer.resp.reason or "", answer.url, answer.resp.headers, body)

    def _answer_timeout(self, where: str) -> float:
        """This answer's deadline: the per-answer timeout, or what is left of the whole read."""
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.timed_out = True
            raise WgrestProblem(
                where, f"not asked: the whole wgrest read took more than {self.read_deadline:g}s"
            )
        return min(self.timeout, left)

    def _limit(self, resp: requests.Response, where: str) -> int:
        """The bytes this answer may have (per-answer and whole-read caps); compressed ones are refused."""
        encoding = (resp.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise WgrestProblem(
                where, f"compressed answer ({scrub(encoding, None)}) refused; wgrest sends plain JSON"
            )
        limit = self.max_answer
        if self.max_total is not None:
            limit = min(limit, self.max_total - self.total)
        declared = _content_length(resp, where)
        if declared is not None and declared > limit:
            raise WgrestProblem(where, self._too_big(limit))
        return limit

    def _too_big(self, limit: int) -> str:
        """Which cap an answer hit, naming its config key."""
        if limit < self.max_answer:
            return f"answers of this read exceed {self.max_total // 2**20} MiB in all (wgrest.max_read_mib)"
        return f"answer larger than {self.max_answer / 2**20:g} MiB (wgrest.max_answer_mib)"

    def _transport_problem(
        self, exc: requests.RequestException, where: str, cut: bool, timeout: float
    ) -> WgrestProblem:
        """One clear problem for a failed request: refused, timed out, redirected, or broken."""
        if cut or isinstance(exc, requests.Timeout) or is_timeout(exc):
            self.timed_out = True
            what = "answer not complete" if cut else "no answer"
            return WgrestProblem(where, f"{what} within {timeout:g}s (timeout)")
        if isinstance(exc, requests.ConnectionError) and is_refused(exc):
            return WgrestRefused(where, "connection refused (is wgrest running?)")
        if isinstance(exc, requests.ConnectionError):
            return WgrestProblem(where, f"cannot connect: {short_reason(exc)}")
        return WgrestProblem(where, f"request failed: {type(exc).__name__}")

    # ---- JSON and lists

    def status_message(self, resp: Answer) -> str:
        """An HTTP error phrased for a person, with wgrest's own code/message (scrubbed)."""
        if resp.status == 401:
            text = "HTTP 401 unauthorized: " + (
                "the token was refused" if self.token else "wgrest wants a token (set wgrest.token_file)"
            )
        elif resp.status == 403:
            text = "HTTP 403 forbidden: the token may not read this"
        else:
            text = f"HTTP {resp.status} {scrub(resp.reason, self.token)}".rstrip()
        detail = resp.error_text()
        return f"{text} ({scrub(detail, self.token)})" if detail else text

    def pages(self, first_url: str, per_page: int) -> Iterator[tuple[Iterator[tuple[str, Any]], str]]:
        """Each page of a paginated list with its URL (for errors), following ``Link: rel="next"``.

        A page is an iterator of its elements, each with its exact JSON text
        (wire/jsonarray.py), decoded as the body arrives: the caller turns one element
        into a model object before the next is decoded, so a 10,000-peer page is never
        whole in memory, as bytes, text or 10,000 dicts (~13 MiB, the dicts fragmenting
        the heap for good). A body that is not
        valid JSON, or not an array, is a WgrestProblem, raised at the latest by the
        element it breaks at, and so is a page with more than ``per_page`` elements (the
        number the URLs ask for): callers keep nothing of a page until it is done. A next
        link on another origin, one seen before, or a chain longer than MAX_PAGES is
        an error.
        """
        url = first_url
        seen: set[str] = set()
        for _ in range(MAX_PAGES):
            seen.add(url)
            with self._open("GET", url) as answer:
                where = answer.where
                if answer.resp.status_code != 200:
                    raise WgrestProblem(where, self.status_message(self._whole(answer)))
                nxt = parse_link_header(answer.resp.headers.get("Link", "")).get("next")
                yield _page_items(answer, per_page), where
                if not answer.completed:  # a caller that left a page half read accepts nothing of it
                    raise WgrestProblem(where, "page not read to its end")
            if not nxt:
                return
            nxt = urljoin(url, nxt)
            if origin(nxt) != self.origin:
                raise WgrestProblem(where, 'Link rel="next" points to another host; not followed')
            if nxt in seen:
                raise WgrestProblem(where, 'pagination loop: Link rel="next" points to a page already read')
            url = nxt
        raise WgrestProblem(redact_url(first_url), f"more than {MAX_PAGES} pages; giving up")

    def paginate(self, first_url: str, per_page: int) -> list[Any]:
        """Every item of a paginated list (for short lists: devices)."""
        items: list[Any] = []
        with closing(self.pages(first_url, per_page)) as pages:
            for page, _where in pages:
                items.extend(value for _text, value in page)
        return items


def _page_items(answer: _Open, per_page: int) -> Iterator[tuple[str, Any]]:
    """The page's elements as its body arrives (wire/jsonarray.py), its failures phrased as
    the wgrest problem they are; the whole answer's checks pass before the walk ends."""
    where = answer.where
    try:
        yield from jsonarray.items(answer.chunks(), max_items=per_page)
        answer.complete()
    except RecursionError:
        answer.refused_content()
        raise WgrestProblem(where, "response is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        answer.refused_content()  # a body cut short reads as bad JSON: say what really happened
        if str(exc).startswith("not an array: "):
            raise WgrestProblem(where, f"expected a JSON array, got {str(exc)[14:]}") from None
        if str(exc).startswith("more than "):
            raise WgrestProblem(where, f"{exc} on a page that asked for {per_page}") from None
        if str(exc).startswith("an element longer than "):
            raise WgrestProblem(where, f"{exc}; refused") from None
        raise WgrestProblem(where, "response is not valid JSON") from None


# --------------------------------------------------------------------------- transport details


@dataclass
class _Open:
    """One answer being read: status and headers arrived, the body read chunk by chunk.

    The caps hold per chunk (refused past ``limit``), a transport failure mid-body is a
    WgrestProblem, and ``complete`` makes the checks a whole answer must pass: not cut
    by the deadline (urllib3 1.26, Debian 12, returns a cut body as if complete), as
    long as its Content-Length (1.26 does not check that either).
    """

    client: WgrestHttp
    method: str
    url: str
    where: str
    resp: requests.Response
    cut: threading.Event
    timeout: float
    limit: int
    size: int = 0
    read: bool = False  # the body was read to its end
    completed: bool = False  # and passed complete()

    def chunks(self) -> Iterator[bytes]:
        """The body, 64 KiB at a time."""
        try:
            for chunk in self.resp.iter_content(65536):
                self.size += len(chunk)
                if self.size > self.limit:
                    raise WgrestProblem(self.where, self.client._too_big(self.limit))
                yield chunk
        except requests.RequestException as exc:
            raise self.client._transport_problem(exc, self.where, self.cut.is_set(), self.timeout) from None
        self.read = True

    def complete(self) -> None:
        """After the last chunk: not cut, as long as declared; then the server counts as answered."""
        if self.cut.is_set():
            raise self.client._transport_problem(requests.Timeout(), self.where, True, self.timeout)
        declared = _content_length(self.resp, self.where)
        if declared is not None and declared != self.size:
            raise WgrestProblem(self.where, "answer cut short (fewer bytes than Content-Length)")
        self.client.answered = True
        self.completed = True
        log.debug("wgrest %s %s -> %d (%d bytes)", self.method, self.where, self.resp.status_code, self.size)

    def refused_content(self) -> None:
        """Before a page is refused for what it holds: complete() if the body was read to its end
        (a body cut short reads as bad JSON: the truer cause wins); else, unless the deadline
        cut it, the server did answer (the optional-wgrest logic counts on that)."""
        if self.read:
            self.complete()
        elif not self.cut.is_set():
            self.client.answered = True


def _content_length(resp: requests.Response, where: str) -> int | None:
    """The declared Content-Length as a number, None when absent; a spelling that is not plain
    digits (``+5``, ``1_0``, ``²``, 5,000 digits: http.client passes some) is not a length at all."""
    declared = resp.headers.get("Content-Length")
    if declared is None:
        return None
    if not _DIGITS.fullmatch(declared.strip()):
        raise WgrestProblem(where, "answer with an unreadable Content-Length; refused")
    return int(declared.strip())
