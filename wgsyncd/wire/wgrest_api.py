"""wgrest's API: its paths, and its JSON objects mapped to :mod:`wgsyncd.state`.

What wgrest answers is untrusted input: every field is type- and range-checked here
(a wrong one is a WgrestProblem naming the URL, index and field, never the value),
so the wgrest source and ``restore --to-wgrest`` read wgrest the same way. Go's
formats (``time.Duration`` strings, RFC 3339 times, URL-safe base64 peer names) are
converted exactly (:mod:`wgsyncd.wire.gotext`). The HTTP client is :mod:`wgsyncd.wire.wgrest_http`.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from wgsyncd import validate
from wgsyncd.canonical import CANONICAL_KEY_RE
from wgsyncd.state import WIRE_PEER_FIELDS, Interface, Peer, Secret, Source, shared
from wgsyncd.valuepool import one, one_secret, one_tuple
from wgsyncd.wire.gotext import (  # noqa: F401  (re-exported: wgrest's value formats)
    keepalive_seconds,
    parse_go_duration,
    parse_handshake_time,
    std_to_url_safe,
    url_safe_to_std,
)
from wgsyncd.wire.wgrest_http import WgrestHttp, WgrestProblem, redact_url, scrub, type_name

log = logging.getLogger(__name__)

# JSON's "\ud800" escape decodes to a lone surrogate: a str no UTF-8 encoder (psycopg,
# a conf file) can write, and validate.text lets it through, so it stops at the source
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _plain_endpoint(text: str) -> bool:
    """True for ``1.2.3.4:port`` and ``[v6]:port``, checked with inet_pton (as _plain_cidr).

    Only a sure yes, for what validate.endpoint also accepts (an IP it parses with
    ipaddress); names, zone ids and anything odd go to validate.endpoint.
    """
    v6 = text.startswith("[")
    host, sep, port = text[1:].partition("]:") if v6 else text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or len(port) > 5 or int(port) > 65535:
        return False
    try:
        socket.inet_pton(socket.AF_INET6 if v6 else socket.AF_INET, host)
    except (OSError, ValueError):
        return False
    return True


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
    value = obj.get(key)
    if type(value) is str and CANONICAL_KEY_RE.match(value):
        return value  # validate.key's answer for the common case, in one regex match
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
    # the kept strings are shared with the other sources' copies (valuepool)
    peer = Peer(public_key=one(_get_key(raw, "public_key", where, required=True) or ""))
    psk = _get_key(raw, "preshared_key", where, required=False)
    peer.preshared_key = one_secret(psk) if psk else None
    peer.allowed_ips = one_tuple(_get_cidrs(raw, "allowed_ips", where) or ())
    endpoint = _get_str(raw, "endpoint", where, required=False) or None
    if endpoint:
        if not _plain_endpoint(endpoint):
            _check(validate.endpoint, endpoint, f"{where} endpoint")
        peer.endpoint = one(endpoint)
    keepalive = _get_str(raw, "persistent_keepalive_interval", where, required=False)
    if keepalive is not None:
        try:
            peer.persistent_keepalive = keepalive_seconds(keepalive)
        except ValueError as exc:
            raise WgrestProblem(f"{where} persistent_keepalive_interval", str(exc)) from None
    handshake = _get_str(raw, "last_handshake_time", where, required=False)
    if handshake:
        try:
            peer.latest_handshake = one(parse_handshake_time(handshake))
        except ValueError as exc:
            raise WgrestProblem(f"{where} last_handshake_time", str(exc)) from None
    peer.rx_bytes = _get_int(raw, "receive_bytes", where, required=False, low=0, high=2**64 - 1)
    peer.tx_bytes = _get_int(raw, "transmit_bytes", where, required=False, low=0, high=2**64 - 1)
    private = _get_key(raw, "private_key", where, required=False)  # v2, create response only
    peer.private_key = Secret(private) if private else None
    shape = (peer.private_key is not None, peer.persistent_keepalive is not None)
    provenance = _PEER_PROVENANCE.get(shape)
    if provenance is None:  # _stamp's answer depends on these two fields only
        _stamp(peer, _PEER_FIELDS)
        provenance = _PEER_PROVENANCE[shape] = shared(peer.provenance)
    peer.provenance = provenance
    return peer


# (private key given, keepalive given) -> the shared provenance _stamp gives such a peer
_PEER_PROVENANCE: dict[tuple[bool, bool], dict[str, Source]] = {}


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


# --------------------------------------------------------------------------- paths


def device_url(client: WgrestHttp, device: str) -> str:
    """``/v1/devices/{name}/`` (v1 and v2 share the device and peer endpoints)."""
    return client.url(f"/v1/devices/{quote(device, safe='')}/")


def peers_url(client: WgrestHttp, device: str, per_page: int) -> str:
    """The first page of a device's peers, sorted by public key.

    sort=pub_key: without it wgrest lists peers in wgctrl's order, which over
    wireguard-go is a Go map's, new on every page request (peers repeat and go missing).
    """
    return client.url(f"/v1/devices/{quote(device, safe='')}/peers/?per_page={per_page}&sort=pub_key")


def peer_url(client: WgrestHttp, device: str, public_key: str) -> str:
    """``/v1/devices/{name}/peers/{urlSafePubKey}/`` (URL-safe base64 with padding)."""
    safe_key = quote(std_to_url_safe(public_key), safe="")
    return client.url(f"/v1/devices/{quote(device, safe='')}/peers/{safe_key}/")


# --------------------------------------------------------------------------- version


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
