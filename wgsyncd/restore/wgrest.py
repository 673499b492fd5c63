"""Target: wgrest (``restore --to-wgrest``): POST missing peers, PATCH changed ones, DELETE extra ones.

HTTP goes through the one wgrest client the wgrest source uses too
(:mod:`wgsyncd.wire.wgrest_http`: token only to the configured origin, no netrc or
proxies, no redirects, deadlines, body cap), with the same API paths and value
conversions (:mod:`wgsyncd.wire.wgrest_api`: sorted peer pages, URL-safe key names, Go
durations); plain http:// to another machine is refused unless ``insecure``.
``requests`` is imported where it is used, so importing restore does not need it.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wgsyncd import validate
from wgsyncd.restore.changes import networks, secret_fp
from wgsyncd.restore.errors import RestoreError
from wgsyncd.restore.loading import Loaded, running_peers
from wgsyncd.restore.values import check_loaded
from wgsyncd.state import Peer, Secret

HTTP_TIMEOUT = 10.0


@dataclass
class WgrestChanges:
    """What restore did (or would do) to one wgrest device."""

    device: str
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line of counts."""
        return (
            f"{self.device} (wgrest): {len(self.created)} peers created, {len(self.updated)} updated, "
            f"{len(self.deleted)} deleted"
        )


class _Http:
    """restore's view of the shared wgrest client: statuses checked, problems as RestoreError."""

    def __init__(self, base: str, token: Secret | None, timeout: float) -> None:
        from wgsyncd.wire.wgrest_http import WgrestHttp

        self.client = WgrestHttp(base, token, timeout=timeout)

    def url(self, path: str) -> str:
        """Absolute URL of an API path."""
        return self.client.url(path)

    def call(
        self, method: str, url: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)
    ) -> Any:
        """One request; a transport error or unexpected status becomes RestoreError naming the URL."""
        from wgsyncd.wire.wgrest_http import WgrestProblem

        shown = f"{method} {url.split('?')[0]}"
        try:
            resp = self.client.request(method, url, body)
        except WgrestProblem as exc:
            raise RestoreError(f"{method} {exc}") from None
        if resp.status not in ok:
            raise RestoreError(f"{shown}: {self.client.status_message(resp)}")
        try:
            return resp.json() if resp.body else None
        except ValueError:
            raise RestoreError(f"{shown}: answer is not JSON") from None

    def list_peers(self, device: str) -> list[dict[str, Any]]:
        """Every peer of a device, following the Link header's ``next`` (never past this server).

        sort=pub_key: unsorted, wgrest pages wgctrl's order, which over wireguard-go is new
        on every request (peers would repeat and go missing); and one big page, because
        wgrest reads the whole device for every page it serves.
        """
        from wgsyncd.wire.wgrest_api import peers_url
        from wgsyncd.wire.wgrest_http import WgrestProblem

        per_page = 10000
        url = peers_url(self.client, device, per_page)
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        try:
            with closing(self.client.pages(url, per_page)) as pages:  # a refusal mid-page closes the answer
                for page, where in pages:
                    for _text, item in page:
                        if not isinstance(item, dict):
                            raise RestoreError(f"GET {where}: expected a list of peer objects")
                        try:  # the key goes into a PATCH/DELETE path: it must be a key
                            validate.key(item.get("public_key"), "public_key")
                        except validate.Invalid as exc:
                            raise RestoreError(f"GET {where}: a peer's {exc}") from None
                        if item["public_key"] in seen:  # the list shifted between pages
                            raise RestoreError(f"GET {where}: the peer list changed while paging; run again")
                        seen.add(item["public_key"])
                        out.append(item)
        except WgrestProblem as exc:
            raise RestoreError(f"GET {exc}") from None
        return out


def _go_seconds(text: str | None) -> int:
    """A Go duration like ``25s`` / ``1m30s`` in whole seconds (0 when empty or not a duration).

    The wgrest source's parser (:mod:`wgsyncd.wire.wgrest_api`); 0 for anything it
    refuses, so a garbled value only makes the peer's keepalive look different (and be
    rewritten), never stops restore.
    """
    from wgsyncd.wire.wgrest_api import parse_go_duration

    try:
        return int(parse_go_duration(text)) if text else 0
    except ValueError:
        return 0


def _peer_body(peer: Peer, fields: set[str] | None) -> dict[str, Any]:
    """The PeerCreateOrUpdateRequest for ``peer`` (all fields when ``fields`` is None)."""
    body: dict[str, Any] = {}
    if fields is None:
        body["public_key"] = peer.public_key
        if peer.private_key:
            body["private_key"] = peer.private_key.reveal()
    if (fields is None or "preshared_key" in fields) and peer.preshared_key:
        body["preshared_key"] = peer.preshared_key.reveal()
    if fields is None or "allowed_ips" in fields:
        body["allowed_ips"] = list(peer.allowed_ips or ())
    if fields is None or "persistent_keepalive" in fields:
        body["persistent_keepalive_interval"] = f"{peer.persistent_keepalive or 0}s"
    if (fields is None or "endpoint" in fields) and peer.endpoint:
        body["endpoint"] = peer.endpoint
    return body


def _wgrest_diff(peer: Peer, have: dict[str, Any]) -> set[str]:
    """Fields of ``peer`` that differ from wgrest's JSON (secrets compared by fingerprint)."""
    diff = set()
    theirs = have.get("preshared_key") or None
    if secret_fp(peer.preshared_key) != (Secret(theirs).fingerprint() if theirs else None):
        diff.add("preshared_key")
    if networks(peer.allowed_ips) != networks(have.get("allowed_ips")):
        diff.add("allowed_ips")
    if (peer.persistent_keepalive or 0) != _go_seconds(have.get("persistent_keepalive_interval")):
        diff.add("persistent_keepalive")
    if peer.endpoint and peer.endpoint != (have.get("endpoint") or None):
        diff.add("endpoint")
    return diff


def to_wgrest(
    loaded: Loaded,
    url: str,
    *,
    token: Secret | None = None,
    dry_run: bool = False,
    timeout: float = HTTP_TIMEOUT,
    insecure: bool = False,
) -> list[WgrestChanges]:
    """Recreate each device's peers through wgrest (v1 and v2 share these endpoints).

    Every device is checked and listed before the first write; peers disabled in the
    conf are not created. wgrest cannot create devices (v1 answers 501), so a device
    that does not exist refuses the restore.
    """
    from wgsyncd.wire.wgrest_api import device_url
    from wgsyncd.wire.wgrest_http import is_loopback, redact_url

    if not url.startswith(("http://", "https://")):
        raise RestoreError(f"--to-wgrest {redact_url(url)}: must start with http:// or https://")
    if url.startswith("http://") and not is_loopback(url) and not insecure:
        raise RestoreError(
            f"--to-wgrest {redact_url(url)}: plain http:// to another machine would send the token and "
            "every key in clear; use https:// (or --insecure if the network is trusted)"
        )
    check_loaded(loaded)  # every value, before the first request
    http = _Http(url, token, timeout)
    work = []
    for name, desired in loaded.interfaces.items():
        dev_url = device_url(http.client, name)
        try:
            http.call("GET", dev_url)
        except RestoreError as exc:
            raise RestoreError(f"{loaded.label}: wgrest device {name}: {exc}") from None
        current = {p["public_key"]: p for p in http.list_peers(name) if p.get("public_key")}
        work.append((name, desired, current))
    out = []
    for name, desired, current in work:
        ch = WgrestChanges(name)
        want = running_peers(desired)
        peers_url = device_url(http.client, name) + "peers/"
        for pub, peer in want.items():
            if pub not in current:
                ch.created.append(pub)
                if not dry_run:
                    http.call("POST", peers_url, _peer_body(peer, None), ok=(200, 201))
                continue
            diff = _wgrest_diff(peer, current[pub])
            if diff:
                ch.updated.append(pub)
                if not dry_run:
                    http.call("PATCH", _peer_url(http, name, pub), _peer_body(peer, diff))
        for pub in current:
            if pub not in want:
                ch.deleted.append(pub)
                if not dry_run:
                    http.call("DELETE", _peer_url(http, name, pub), ok=(200, 204))
        out.append(ch)
    return out


def _peer_url(http: _Http, device: str, public_key: str) -> str:
    """``/v1/devices/{name}/peers/{urlSafePubKey}/``."""
    from wgsyncd.wire.wgrest_api import peer_url

    return peer_url(http.client, device, public_key)


def read_token(path: str) -> Secret:
    """The wgrest bearer token from a file (first line); errors name the file only."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise RestoreError(f"--token-file {path}: cannot read: {exc.strerror}") from None
    if not text:
        raise RestoreError(f"--token-file {path}: empty")
    return Secret(text.splitlines()[0].strip())
