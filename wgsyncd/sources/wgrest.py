"""The wgrest source: wgrest's REST API (v1 or v2) and v1's data directory.

wgrest is the Go REST API that manages WireGuard on a VPN host. This module only
reads it: every device with all its peers (following the ``Link`` header page by
page), mapped to :mod:`wgsyncd.state`, plus the peers' own private keys that
wgrest v1 keeps in ``<data_dir>/v1/<url-safe-public-key>.conf``
(:mod:`wgsyncd.sources.wgrest_datadir`). The HTTP client and the JSON mapping it
shares with ``restore --to-wgrest`` are :mod:`wgsyncd.wire.wgrest_http` and
:mod:`wgsyncd.wire.wgrest_api`.

Rules this module keeps (see ARCHITECTURE.md):
- a device is returned with all its peers or not at all (then a SourceError with
  ``interface=<name>`` tells the store not to remove anything of it);
- the token, every key and every response body stay out of logs and errors: v2's
  device list holds the server's private key;
- every request carries ``timeout=cfg.timeout``, so a hung wgrest cannot stall the
  daemon past its watchdog.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wgsyncd import validate
from wgsyncd.atomicfile import write_atomic
from wgsyncd.config import WgrestConfig
from wgsyncd.sources.wgrest_datadir import (  # noqa: F401  (re-exported: the source's public names)
    DeviceDefaults,
    attach_private_keys,
    read_device_defaults,
)
from wgsyncd.state import (
    Peer,
    Source,
    SourceError,
    SourceResult,
)
from wgsyncd.wire.wgrest_api import (  # noqa: F401  (re-exported: the source's public names)
    detect_version,
    keepalive_seconds,
    parse_device,
    parse_go_duration,
    parse_handshake_time,
    parse_peer,
    peers_url,
    std_to_url_safe,
    url_safe_to_std,
)
from wgsyncd.wire.wgrest_http import (  # noqa: F401  (re-exported: the source's public names)
    MAX_PAGES,
    WgrestHttp,
    WgrestProblem,
    WgrestRefused,
    parse_link_header,
    redact_url,
    scrub,
    type_name,
)

log = logging.getLogger(__name__)

# Reads of one device's peers when its list shifts between pages.
PEER_READ_ATTEMPTS = 3
# The whole read (every device, every page) gets 2.5 x wgrest.timeout (25 s by default, under
# half the 60 s watchdog with the DB write after it): a server
# answering each of endless pages just in time cannot hold the cycle past the watchdog.
WHOLE_READ_TIMEOUTS = 2.5
# wgrest URLs that answered once, kept in the state dir (a one-shot sync knows them too)
SEEN_FILE = "wgrest-seen.json"
SEEN_KEEP = 32


# --------------------------------------------------------------------------- reading


class _Shifted(WgrestProblem):
    """The peer list changed between two pages (a peer came twice): read it again."""


def _read_peers(
    client: WgrestHttp, name: str, per_page: int, memo: dict[str, dict[bytes, Peer]]
) -> dict[str, Peer]:
    """All peers of one device, every page, or a WgrestProblem (never a partial dict).

    Pages are separate requests, so a peer added meanwhile shifts the list: one
    peer shows up twice. That read is thrown away and the device read again, up
    to PEER_READ_ATTEMPTS times. (A peer removed meanwhile can make another one
    slip by unseen; the next cycle sees it, and the kernel source sees it now.)
    """
    for attempt in range(1, PEER_READ_ATTEMPTS + 1):
        try:
            return _read_peers_once(client, name, per_page, memo)
        except _Shifted as exc:
            if attempt == PEER_READ_ATTEMPTS:
                raise WgrestProblem(
                    exc.where, f"peer list kept changing while paging ({attempt} attempts)"
                ) from None
            log.debug("wgrest: %s changed while paging, reading it again", name)
    raise AssertionError("unreachable")


def _fingerprint(text: str) -> bytes:
    """16 bytes standing for one peer's JSON object as wgrest sent it (its exact text).

    Why: the memo compares each peer with last cycle's; keeping the whole parsed
    object (~1 KB a peer) was a fifth of a 10,000-peer daemon's heap. Equal text is
    an equal object, so a hit is never wrong; a server that reorders keys or respells
    a number only costs a parse. Hashing the text the page walk already cut out
    (wire/jsonarray.py) costs a tenth of re-encoding the decoded dict.
    """
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _read_peers_once(
    client: WgrestHttp, name: str, per_page: int, memo: dict[str, dict[bytes, Peer]]
) -> dict[str, Peer]:
    """One pass over all pages of a device's peers, one element in memory at a time.

    A peer whose JSON object equals last cycle's is the same Peer object (not parsed
    again, and downstream not merged again); Peer objects are never mutated. ``memo``
    (memo.Memo.wgrest): device name -> {_fingerprint of a peer's JSON: its Peer}, last full
    read (keyed by the digest alone: no (digest, Peer) pair and no key string per peer).
    """
    first = peers_url(client, name, per_page)
    seen = memo.get(name, {})
    fresh: dict[bytes, Peer] = {}
    peers: dict[str, Peer] = {}
    index = 0
    with closing(client.pages(first, per_page)) as pages:  # a failure mid-page closes the answer now
        for page, where in pages:
            for text, raw in page:
                # equal JSON text: the same peer (anything else: parse_peer says why)
                digest = _fingerprint(text)
                peer = seen.get(digest) or parse_peer(raw, f"{where} [{index}]")
                if peer.public_key in peers:
                    raise _Shifted(redact_url(first), "a peer came twice")
                peers[peer.public_key] = peer
                fresh[digest] = peer
                index += 1
    memo[name] = fresh
    return peers


def read(
    cfg: WgrestConfig,
    want: Callable[[str], bool] | None = None,
    state_dir: str | None = None,
    memo: dict[str, dict[bytes, Peer]] | None = None,
    answered: dict[tuple[str | None, str], str] | None = None,
) -> SourceResult:
    """Read every wanted device of wgrest with all its peers, plus v1's peer private keys.

    ``want(name)`` False skips a device before its peers are fetched. A wgrest that
    refuses the connection is "not installed here" (available=False) when
    ``cfg.optional`` and it never answered before (this process, or ``state_dir``'s
    record); a wgrest that answered once and now refuses is an error (partial cycle).
    Every other failure is one SourceError naming the URL (and field), confined to
    the device it concerns when it can be. ``memo`` and ``answered`` are the caller's
    between-cycle memory (memo.Memo.wgrest / .wgrest_answered); None: this call only.
    """
    memo = {} if memo is None else memo
    answered = {} if answered is None else answered
    result = SourceResult(source=Source.WGREST)
    if not cfg.enabled:
        result.available = False
        return result
    with WgrestHttp(
        cfg.url,
        cfg.token,
        timeout=cfg.timeout,
        max_answer=int(cfg.max_answer_mib * 2**20),
        max_total=int(cfg.max_read_mib * 2**20),
        read_deadline=cfg.timeout * WHOLE_READ_TIMEOUTS,
    ) as client:
        try:
            version = cfg.api_version if cfg.api_version in ("v1", "v2") else detect_version(client)
            listing = client.url(f"/v1/devices/?per_page={cfg.per_page}")
            raw_devices = client.paginate(listing, cfg.per_page)
        except WgrestRefused as exc:
            seen = seen_before(cfg.url, state_dir, answered)
            if cfg.optional and not client.answered and not seen:
                log.debug("wgrest not running at %s: %s", redact_url(cfg.url), exc.message)
                result.available = False
            else:
                if seen:
                    exc = WgrestRefused(exc.where, f"{exc.message}; it answered before ({seen})")
                result.errors.append(_error(exc))
            return result
        except WgrestProblem as exc:
            remember_seen(cfg.url, state_dir, client.answered, answered)
            result.errors.append(_error(exc))
            return result
        remember_seen(cfg.url, state_dir, True, answered)
        log.debug("wgrest %s: %d devices", version, len(raw_devices))
        for index, raw in enumerate(raw_devices):
            _read_device(client, cfg, version, raw, f"{redact_url(listing)} [{index}]", want, result, memo)
        del raw_devices
        for gone in [name for name in memo if name not in result.interfaces]:
            del memo[gone]  # gone, excluded or failed this cycle: its memo would only hold memory
    if cfg.data_dir:
        for problem, interface in attach_private_keys(Path(cfg.data_dir), result.interfaces):
            result.errors.append(_error(problem, interface=interface))
    return result


def _seen_key(url: str) -> str:
    """The URL as recorded: no credentials, no trailing slash."""
    return redact_url(url).rstrip("/")


def _load_seen(state_dir: str) -> dict[str, str]:
    """The state dir's record of wgrest URLs that answered ({} when none or unreadable)."""
    try:
        data = json.loads((Path(state_dir) / SEEN_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(data, dict)
        else {}
    )


def seen_before(url: str, state_dir: str | None, answered: dict[tuple[str | None, str], str]) -> str | None:
    """When this wgrest first answered (``answered``: this process's memo; or the state dir's record)."""
    key = _seen_key(url)
    hit = answered.get((state_dir, key))
    if hit is None and state_dir:
        hit = _load_seen(state_dir).get(key)
        if hit is not None:
            answered[(state_dir, key)] = hit
    return hit


def remember_seen(
    url: str, state_dir: str | None, did_answer: bool, answered: dict[tuple[str | None, str], str]
) -> None:
    """Record that this wgrest answered: from now on a refusal is an error, not "not installed".

    Written once per URL (temp file + rename, 0600), the last SEEN_KEEP URLs kept; a
    state dir that cannot be written leaves the record in this process only.
    """
    if not did_answer:
        return
    key = _seen_key(url)
    if seen_before(url, state_dir, answered) is not None:
        return
    when = datetime.now(UTC).isoformat(timespec="seconds")
    answered[(state_dir, key)] = when
    if not state_dir:
        return
    record = _load_seen(state_dir)
    record[key] = when
    record = dict(sorted(record.items(), key=lambda kv: kv[1])[-SEEN_KEEP:])
    try:
        write_atomic(Path(state_dir) / SEEN_FILE, json.dumps(record), 0o600)
    except OSError as exc:
        log.debug("cannot record that wgrest answered in %s: %s", state_dir, exc.strerror)


def _read_device(
    client: WgrestHttp,
    cfg: WgrestConfig,
    version: str,
    raw: Any,
    where: str,
    want: Callable[[str], bool] | None,
    result: SourceResult,
    memo: dict[str, dict[bytes, Peer]],
) -> None:
    """Add one device with all its peers to ``result``, or one SourceError for it."""
    name = raw.get("name") if isinstance(raw, dict) else None
    try:  # a name that is no interface name cannot confine an error: the error is source-wide
        name = validate.interface_name(name)
    except validate.Invalid:
        name = None
    if name is not None and want is not None and not want(name):
        return
    if version == "v2" and isinstance(raw, dict) and raw.get("running") is False:
        # v2 also lists devices that only exist as a conf file; it has no peers
        # for them (the conf source reads that file itself)
        log.debug("wgrest: %s is not running, skipped", name)
        return
    if client.timed_out:
        # one timeout already cost cfg.timeout; asking a stuck wgrest about every
        # remaining device would multiply that past the watchdog
        problem = WgrestProblem(where, "not read: wgrest timed out earlier in this cycle")
        result.errors.append(_error(problem, interface=name))
        return
    try:
        iface = parse_device(raw, version, where)
        if iface.name in result.interfaces:
            # the list shifted between pages, so another device may be missing:
            # the error is source-wide so the store removes nothing this cycle
            raise WgrestProblem(where, "device list changed while paging (a device came twice)")
        iface.peers = _read_peers(client, iface.name, cfg.per_page, memo)
    except WgrestProblem as exc:
        duplicate = name is not None and name in result.interfaces
        result.errors.append(_error(exc, interface=None if duplicate else name))
        return
    iface.provenance["peers"] = Source.WGREST
    result.interfaces[iface.name] = iface


def _error(exc: WgrestProblem, interface: str | None = None) -> SourceError:
    """A SourceError from a problem (debug log only: cycle.py logs every SourceError)."""
    err = SourceError(source=Source.WGREST, where=exc.where, message=exc.message, interface=interface)
    log.debug("%s", err)
    return err
