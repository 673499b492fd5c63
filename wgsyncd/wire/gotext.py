"""Go's text formats as wgrest writes them: ``time.Duration``, RFC 3339 times, URL-safe base64 names.

Read exactly (the inverse of what Go prints), for the wgrest source and restore
(:mod:`wgsyncd.wire.wgrest_api` maps wgrest's JSON with these). Pure, no I/O.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime, timedelta

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
_GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: a peer that never connected


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
    """A keepalive interval in whole seconds (0 = off), remembered for the few short texts a host has.

    Why: 10,000 peers say "25s" or "0s" 10,000 times; the Go duration parse is a regex
    loop. Only short texts are kept (a hostile wgrest cannot grow the table's memory),
    at most 256 of them.
    """
    hit = _KEEPALIVES.get(text)
    if hit is None:
        hit = _keepalive_seconds(text)
        if len(text) <= 16 and len(_KEEPALIVES) < 256:
            _KEEPALIVES[text] = hit
    return hit


_KEEPALIVES: dict[str, int] = {}


def _keepalive_seconds(text: str) -> int:
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
    if text == _GO_ZERO_TIME:
        return None
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
