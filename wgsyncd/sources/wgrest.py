"""The wgrest source: wgrest's REST API (v1 or v2) and v1's data directory.

wgrest is the Go REST API that manages WireGuard on a VPN host. This module only
reads it: every device with all its peers (following the ``Link`` header page by
page), mapped to :mod:`wgsyncd.state`, plus the peers' own private keys that
wgrest v1 keeps in ``<data_dir>/v1/<url-safe-public-key>.conf``.

Rules this module keeps (see ARCHITECTURE.md):
- a device is returned with all its peers or not at all (then a SourceError with
  ``interface=<name>`` tells the store not to remove anything of it);
- the token, every key and every response body stay out of logs and errors: v2's
  device list holds the server's private key;
- every request carries ``timeout=cfg.timeout``, so a hung wgrest cannot stall the
  daemon past its watchdog.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wgsyncd import validate
from wgsyncd.atomicfile import write_atomic
from wgsyncd.config import WgrestConfig
from wgsyncd.state import (
    WIRE_PEER_FIELDS,
    Interface,
    Peer,
    Secret,
    Source,
    SourceError,
    SourceResult,
    StateError,
    parse_key,
    shared,
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
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", re.ASCII)
_GO_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,  # Go accepts both micro signs
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # Go writes ASCII digits; int() would also take Arabic-Indic or full-width ones
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# JSON's "\ud800" escape decodes to a lone surrogate: a str no UTF-8 encoder (psycopg,
# a conf file) can write, and validate.text lets it through, so it stops at the source
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class DeviceDefaults:
    """wgrest v1's client-config defaults for one device (``<data_dir>/v1/<device>.conf``).

    Not part of the host state (they describe configs handed to clients, not the
    server), but a restore of a v1 host needs them to give clients the same configs.
    """

    device: str
    dns: tuple[str, ...]
    allowed_ips: tuple[str, ...]
    host: str | None


# --------------------------------------------------------------------------- values


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.Duration`` string ("0s", "25s", "1m30s", "1h0m0s", "1.5s").

    wgrest prints keepalive intervals with Go's ``Duration.String()``, so this is
    the exact inverse; anything else is a ValueError (the caller names the field).
    """
    value = text  # Go writes no blanks: " 25s\n" is not what wgrest sends
    sign = 1.0
    if value[:1] in "+-" and value:
        sign = -1.0 if value[0] == "-" else 1.0
        value = value[1:]
    if value == "0":
        return 0.0
    if not value:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    while pos < len(value):
        match = _GO_DURATION_PART.match(value, pos)
        if not match:
            raise ValueError("not a Go duration")
        total += float(match.group(1)) * _GO_DURATION_UNITS[match.group(2)]
        pos = match.end()
    return sign * total


def keepalive_seconds(text: str) -> int:
    """A keepalive interval in whole seconds (0 = off), as WireGuard stores it.

    WireGuard keeps keepalive as a 16-bit count of seconds, so a fraction or an
    out-of-range value cannot have come from a real interface.
    """
    seconds = parse_go_duration(text)
    if seconds < 0 or seconds > 65535:
        raise ValueError("keepalive out of range 0..65535 seconds")
    if not math.isclose(seconds, round(seconds), abs_tol=1e-6):
        raise ValueError("keepalive is not a whole number of seconds")
    return round(seconds)


def parse_handshake_time(text: str) -> datetime | None:
    """An aware UTC datetime from wgrest's RFC 3339 time, or None for "never".

    Go prints the zero time as 0001-01-01T00:00:00Z for a peer that never
    connected; a Unix-epoch 0 (what a raw ``last_handshake_time_sec=0`` becomes)
    also means never. Go may print nanoseconds; Python keeps microseconds.
    """
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError("not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    if year <= 1:
        return None
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    zone = match.group(8)
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("time zone offset out of range")
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if zone[0] == "-" else 1)
    try:
        when = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC) - offset
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past datetime.max in UTC
        raise ValueError("time out of range") from None
    return None if when == _EPOCH else when


def url_safe_to_std(name: str) -> str | None:
    """The standard base64 public key for wgrest's URL-safe file/path name, or None.

    wgrest names a peer by ``base64.URLEncoding`` (``-_`` alphabet, ``=`` padded);
    anything that does not decode to 32 bytes is not a peer key name.
    """
    if len(name) != 44 or not re.fullmatch(r"[A-Za-z0-9_-]{43}=", name):
        return None
    try:
        raw = base64.urlsafe_b64decode(name)
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(raw).decode() if len(raw) == 32 else None


def std_to_url_safe(public_key: str) -> str:
    """wgrest's URL-safe name for a standard base64 key (for paths and data-dir files)."""
    return base64.urlsafe_b64encode(base64.b64decode(public_key)).decode()


# --------------------------------------------------------------------------- JSON fields


def _get_str(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    """A string field; None when absent/null and not required."""
    value = obj.get(key)
    if value is None:
        if required:
            raise WgrestProblem(f"{where} {key}", "missing")
        return None
    if not isinstance(value, str):
        raise WgrestProblem(f"{where} {key}", f"expected a string, got {type_name(value)}")
    if _SURROGATE.search(value):
        raise WgrestProblem(f"{where} {key}", "not valid Unicode (a lone surrogate)")
    return value


def _get_int(obj: dict[str, Any], key: str, where: str, *, required: bool, low: int, high: int) -> int | None:
    """A whole-number field within [low, high]; booleans and fractions are rejected."""
    value = obj.get(key)
    if value is None:
        if required:
            raise WgrestProblem(f"{where} {key}", "missing")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise WgrestProblem(f"{where} {key}", f"expected a whole number, got {type_name(value)}")
    if not low <= value <= high:
        raise WgrestProblem(f"{where} {key}", f"out of range {low}..{high}")
    return value


def _get_str_list(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    """A list-of-strings field as a tuple; None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WgrestProblem(f"{where} {key}", "expected an array of strings")
    for i, text in enumerate(value):
        if _SURROGATE.search(text):
            raise WgrestProblem(f"{where} {key}[{i}]", "not valid Unicode (a lone surrogate)")
    return tuple(value)


def _plain_cidr(text: str) -> bool:
    """True for the common ``address/prefix`` shape, checked with inet_pton (10x cheaper).

    Only a sure yes: anything else (no prefix, netmask form, zone id, odd digits) goes
    to ipaddress, which has the last word. glibc's inet_pton accepts a subset of what
    ipaddress accepts (no leading zeros, no zone), so a yes here is a yes there.
    """
    addr, slash, prefix = text.partition("/")
    if not slash or not prefix.isascii() or not prefix.isdigit() or len(prefix) > 3:
        return False
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    try:
        socket.inet_pton(family, addr)
    except (OSError, ValueError):
        return False
    return int(prefix) <= (128 if family == socket.AF_INET6 else 32)


def _get_cidrs(obj: dict[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    """A list of CIDRs (allowed IPs, addresses), each checked so garbage never reaches the DB."""
    values = _get_str_list(obj, key, where)
    for i, text in enumerate(values or ()):
        if not _plain_cidr(text):
            _check(validate.cidr, text, f"{where} {key}[{i}]")
    return values


def _check(check: Callable[..., Any], value: Any, field_where: str) -> Any:
    """Run one validator; its refusal becomes a WgrestProblem naming URL and field."""
    try:
        return check(value, field_where)
    except validate.Invalid as exc:
        raise WgrestProblem(field_where, exc.message) from None


def _get_checked_list(
    obj: dict[str, Any], key: str, where: str, check: Callable[..., Any]
) -> tuple[str, ...]:
    """A list of strings, each passing ``check`` (DNS entries, hooks); absent = empty."""
    values = _get_str_list(obj, key, where) or ()
    for i, text in enumerate(values):
        _check(check, text, f"{where} {key}[{i}]")
    return values


def _get_key(obj: dict[str, Any], key: str, where: str, *, required: bool) -> str | None:
    """A base64 WireGuard key field, exactly as wg prints it; "" means absent."""
    text = _get_str(obj, key, where, required=required)
    if not text:
        if required:
            raise WgrestProblem(f"{where} {key}", "missing")
        return None
    return _check(validate.key, text, f"{where} {key}")


# --------------------------------------------------------------------------- mapping


def parse_peer(raw: Any, where: str) -> Peer:
    """One wgrest Peer object (v1 and v2 share the shape) as a state.Peer.

    v2 omits empty ``endpoint``, ``preshared_key`` and ``persistent_keepalive_interval``
    (Go ``omitempty``), v1 sends ``""``; both read the same here.
    """
    if not isinstance(raw, dict):
        raise WgrestProblem(where, f"expected a peer object, got {type_name(raw)}")
    peer = Peer(public_key=_get_key(raw, "public_key", where, required=True) or "")
    psk = _get_key(raw, "preshared_key", where, required=False)
    peer.preshared_key = Secret(psk) if psk else None
    peer.allowed_ips = _get_cidrs(raw, "allowed_ips", where) or ()
    endpoint = _get_str(raw, "endpoint", where, required=False) or None
    peer.endpoint = _check(validate.endpoint, endpoint, f"{where} endpoint") if endpoint else None
    keepalive = _get_str(raw, "persistent_keepalive_interval", where, required=False)
    if keepalive is not None:
        try:
            peer.persistent_keepalive = keepalive_seconds(keepalive)
        except ValueError as exc:
            raise WgrestProblem(f"{where} persistent_keepalive_interval", str(exc)) from None
    handshake = _get_str(raw, "last_handshake_time", where, required=False)
    if handshake:
        try:
            peer.latest_handshake = parse_handshake_time(handshake)
        except ValueError as exc:
            raise WgrestProblem(f"{where} last_handshake_time", str(exc)) from None
    peer.rx_bytes = _get_int(raw, "receive_bytes", where, required=False, low=0, high=2**64 - 1)
    peer.tx_bytes = _get_int(raw, "transmit_bytes", where, required=False, low=0, high=2**64 - 1)
    private = _get_key(raw, "private_key", where, required=False)  # v2, create response only
    peer.private_key = Secret(private) if private else None
    _stamp(peer, _PEER_FIELDS)
    peer.provenance = shared(peer.provenance)
    return peer


def parse_device(raw: Any, version: str, where: str) -> Interface:
    """One wgrest Device object as a state.Interface (without peers).

    v1 knows name/port/keys/fwmark/``networks``; v2 renames ``networks`` to
    ``addresses`` and adds the wg-quick fields, all ``omitempty``: an absent list
    there means "none", an absent mtu/table means "not set" (None).
    """
    if not isinstance(raw, dict):
        raise WgrestProblem(where, f"expected a device object, got {type_name(raw)}")
    name = _check(validate.interface_name, _get_str(raw, "name", where, required=True), f"{where} name")
    iface = Interface(name=name)
    iface.listen_port = _get_int(raw, "listen_port", where, required=False, low=0, high=65535)
    iface.public_key = _get_key(raw, "public_key", where, required=False)
    iface.fwmark = _get_int(raw, "firewall_mark", where, required=False, low=0, high=2**32 - 1)
    private = _get_key(raw, "private_key", where, required=False)
    iface.private_key = Secret(private) if private else None
    if version == "v1":
        iface.addresses = _get_cidrs(raw, "networks", where)
    else:
        iface.fwmark = iface.fwmark or 0
        iface.addresses = _get_cidrs(raw, "addresses", where) or ()
        iface.dns = _get_checked_list(raw, "dns", where, validate.dns_entry)
        iface.mtu = _get_int(raw, "mtu", where, required=False, low=0, high=65535) or None
        table = _get_str(raw, "table", where, required=False) or None
        iface.table = _check(validate.table, table, f"{where} table") if table else None
        iface.pre_up = _get_checked_list(raw, "pre_up", where, validate.text)
        iface.post_up = _get_checked_list(raw, "post_up", where, validate.text)
        iface.pre_down = _get_checked_list(raw, "pre_down", where, validate.text)
        iface.post_down = _get_checked_list(raw, "post_down", where, validate.text)
    _stamp(iface, _V1_DEVICE_FIELDS if version == "v1" else _V2_DEVICE_FIELDS)
    return iface


# Fields wgrest always reports, so None there is a fact ("no endpoint", "never").
_PEER_FIELDS = WIRE_PEER_FIELDS
_V1_DEVICE_FIELDS = ("public_key", "listen_port", "fwmark", "addresses")
_V2_DEVICE_FIELDS = (
    *_V1_DEVICE_FIELDS,
    "dns",
    "mtu",
    "table",
    "pre_up",
    "post_up",
    "pre_down",
    "post_down",
)


def _stamp(obj: Interface | Peer, fields: tuple[str, ...]) -> None:
    """Mark the fields wgrest spoke about (plus any other it filled) as from wgrest.

    A None in a listed field is what wgrest said ("no preshared key"); a None
    elsewhere means wgrest does not know, so it gets no provenance.
    """
    for name in fields:
        obj.provenance[name] = Source.WGREST
    for name in ("private_key", "persistent_keepalive", "addresses"):
        if getattr(obj, name, None) is not None:
            obj.provenance[name] = Source.WGREST
    for name in ("persistent_keepalive", "addresses", "listen_port", "fwmark", "public_key"):
        if name in obj.provenance and getattr(obj, name, None) is None:
            del obj.provenance[name]  # field absent in this answer: unknown, not "none"


# --------------------------------------------------------------------------- reading


def detect_version(client: WgrestHttp) -> str:
    """Return "v2" when wgrest answers a version probe with {"wgrest": ...}, else "v1".

    Only v2 has the version endpoint. Our docs put it at /v1/version; v2's router
    serves it at /version (no auth), so both are tried. A v1 server answers 404
    (or 401 when auth is on); a timeout or 5xx is a real problem, not a version.
    """
    for path in ("/v1/version", "/version"):
        resp = client.request("GET", client.url(path))
        if resp.status in (401, 403, 404, 405):
            continue
        where = redact_url(resp.url)
        if resp.status != 200:
            raise WgrestProblem(where, client.status_message(resp))
        try:
            body = resp.json()
        except ValueError:
            raise WgrestProblem(where, "response is not valid JSON") from None
        if isinstance(body, dict) and isinstance(body.get("wgrest"), str):
            log.debug("wgrest: API v2 (wgrest %s)", scrub(body["wgrest"], None))
            return "v2"
    log.debug("wgrest: no version endpoint, API v1")
    return "v1"


class _Shifted(WgrestProblem):
    """The peer list changed between two pages (a peer came twice): read it again."""


def _read_peers(
    client: WgrestHttp, name: str, per_page: int, memo: dict[str, dict[Any, tuple[dict[str, Any], Peer]]]
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


def _read_peers_once(
    client: WgrestHttp, name: str, per_page: int, memo: dict[str, dict[Any, tuple[dict[str, Any], Peer]]]
) -> dict[str, Peer]:
    """One pass over all pages of a device's peers, one page in memory at a time.

    A peer whose JSON object equals last cycle's is the same Peer object (not parsed
    again, and downstream not merged again); Peer objects are never mutated. ``memo``
    (memo.Memo.wgrest): device name -> {public key: (raw JSON object, Peer)}, last full read.
    """
    # sort=pub_key: without it wgrest lists peers in wgctrl's order, which over
    # wireguard-go is a Go map's, new on every page request (peers repeat and go missing)
    first = client.url(f"/v1/devices/{quote(name, safe='')}/peers/?per_page={per_page}&sort=pub_key")
    seen = memo.get(name, {})
    fresh: dict[Any, tuple[dict[str, Any], Peer]] = {}
    peers: dict[str, Peer] = {}
    index = 0
    for page, where in client.pages(first):
        for raw in page:
            key = raw.get("public_key") if isinstance(raw, dict) else None
            hit = seen.get(key) if isinstance(key, str) else None  # anything else: parse_peer says why
            peer = hit[1] if hit is not None and hit[0] == raw else parse_peer(raw, f"{where} [{index}]")
            if peer.public_key in peers:
                raise _Shifted(redact_url(first), "a peer came twice")
            peers[peer.public_key] = peer
            fresh[raw["public_key"]] = (raw, peer)
            index += 1
    memo[name] = fresh
    return peers


def read(
    cfg: WgrestConfig,
    want: Callable[[str], bool] | None = None,
    state_dir: str | None = None,
    memo: dict[str, dict[Any, tuple[dict[str, Any], Peer]]] | None = None,
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
            raw_devices = client.paginate(listing)
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
        _attach_private_keys(Path(cfg.data_dir), result)
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
    memo: dict[str, dict[Any, tuple[dict[str, Any], Peer]]],
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


# --------------------------------------------------------------------------- v1 data dir


def _read_small_file(path: Path) -> str:
    """A data-dir file's text; never follows a symlink (we run as root)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r", encoding="utf-8", errors="strict") as fh:
        return fh.read(65536)


def _key_values(text: str) -> dict[str, str]:
    """``Key = value`` lines (wgrest's own format), keys lower-cased; blank/# lines skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError("a line without '='")
        out[key.strip().lower()] = value.strip()
    return out


def _peer_key_files(v1_dir: Path) -> dict[str, Path]:
    """Standard base64 public key -> its private-key file in ``<data_dir>/v1/``."""
    files: dict[str, Path] = {}
    for entry in os.scandir(v1_dir):
        if entry.name.endswith(".conf"):
            public = url_safe_to_std(entry.name[: -len(".conf")])
            if public:
                files[public] = Path(entry.path)
    return files


def _shown_path(path: Path) -> str:
    """A key file's path for errors: the name is a key, so only its first 8 chars show."""
    return str(path.with_name(path.name[:8] + "...conf"))


def _attach_private_keys(data_dir: Path, result: SourceResult) -> None:
    """Fill Peer.private_key from wgrest v1's ``<url-safe-pubkey>.conf`` files.

    wgrest never deletes those files, so a file whose peer is gone is ignored; a
    bad file for a live peer is one SourceError for that peer's interface (the
    interface stays: only the private key is unknown this cycle).
    """
    v1_dir = data_dir / "v1"
    if not v1_dir.is_dir():
        return
    try:
        files = _peer_key_files(v1_dir)
    except OSError as exc:
        result.errors.append(_error(WgrestProblem(str(v1_dir), f"cannot list: {exc.strerror}")))
        return
    for iface in result.interfaces.values():
        for pub, peer in list(iface.peers.items()):
            path = files.get(pub)
            if path is None:
                continue
            try:
                key = _read_peer_private_key(path)
                # a new Peer, not an edit: the parsed one may be shared with the next cycle
                provenance = shared({**peer.provenance, "private_key": Source.WGREST})
                iface.peers[pub] = dataclasses.replace(peer, private_key=key, provenance=provenance)
            except WgrestProblem as exc:
                result.errors.append(_error(exc, interface=iface.name))


def _read_peer_private_key(path: Path) -> Secret:
    """The ``PrivateKey =`` of one peer key file, checked, as a Secret."""
    where = _shown_path(path)
    try:
        values = _key_values(_read_small_file(path))
    except OSError as exc:
        raise WgrestProblem(where, f"cannot read: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError):
        raise WgrestProblem(where, "not a wgrest key file (Key = value lines)") from None
    text = values.get("privatekey")
    if not text:
        raise WgrestProblem(f"{where} PrivateKey", "missing")
    try:
        return Secret(parse_key(text, where=f"{where} PrivateKey"))
    except StateError as exc:
        raise WgrestProblem(f"{where} PrivateKey", str(exc).removeprefix(f"{where} PrivateKey: ")) from None


def read_device_defaults(data_dir: str | Path) -> dict[str, DeviceDefaults]:
    """wgrest v1's per-device client defaults (DNS, AllowedIPs, Host), by device name.

    Kept out of :func:`read`'s state on purpose (they are not server state); restore
    and the CLI can call this. Unreadable or malformed files raise WgrestProblem.
    """
    v1_dir = Path(data_dir) / "v1"
    out: dict[str, DeviceDefaults] = {}
    if not v1_dir.is_dir():
        return out
    for path in sorted(v1_dir.glob("*.conf")):
        stem = path.name[: -len(".conf")]
        if url_safe_to_std(stem):
            continue
        try:
            values = _key_values(_read_small_file(path))
        except OSError as exc:
            raise WgrestProblem(str(path), f"cannot read: {exc.strerror}") from None
        except (UnicodeDecodeError, ValueError):
            raise WgrestProblem(str(path), "not a wgrest options file (Key = value lines)") from None
        out[stem] = DeviceDefaults(
            device=stem,
            dns=_split_list(values.get("dns", "")),
            allowed_ips=_split_list(values.get("allowedips", "")),
            host=values.get("host") or None,
        )
    return out


def _split_list(text: str) -> tuple[str, ...]:
    """``a, b`` -> (a, b); wgrest writes lists comma-joined."""
    return tuple(v.strip() for v in text.split(",") if v.strip())
