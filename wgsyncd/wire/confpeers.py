"""The [Peer] blocks of a conf, applied the way ``wg setconf`` applies them.

Live blocks: a bad value is an error (wg refuses the file); a repeated public key
merges into one peer (each block overrides what it sets, and its AllowedIPs replace
the peer's); a peer with the interface's own key is dropped (wg drops it); a prefix
in two peers stays with the last. Each of these is warned about. Disabled ``#! ``
blocks are only comments to wg-quick: a bad one, or a disabled copy of a live peer,
is warned about and left to the raw text, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wgsyncd import validate
from wgsyncd.state import Peer, Secret, Source, shared
from wgsyncd.valuepool import one, one_secret, one_tuple
from wgsyncd.wire import conffields as cf
from wgsyncd.wire import confvalues as cv
from wgsyncd.wire.conflines import PEER_KEYS, Block, ConfParseError, peer_name, safe_word, warn


@dataclass(slots=True)
class _PeerBlock:
    """What one [Peer] block sets; None = the block has no such line (wg leaves it as it was)."""

    block: Block
    public_key: str
    psk: tuple[Secret | None] | None = None  # (value or None for "none") when the block sets it
    allowed: list[tuple[str, int]] = field(default_factory=list)  # (prefix, line)
    endpoint: str | None = None
    keepalive: int | None = None


def _read_peer_block(path: str, block: Block) -> _PeerBlock:
    """One [Peer] block's lines, each checked the way wg checks it; last line of a key wins."""
    public_key: str | None = None
    out = _PeerBlock(block, "")
    for line in block.kvs:
        canonical = PEER_KEYS.get(line.key) or PEER_KEYS.get(cv.nospace(line.key))
        if canonical is None:
            raise ConfParseError(path, line.no, safe_word(line.raw_key, "key"), "unknown [Peer] key")
        if canonical == "PublicKey":
            public_key = cf.wgfield(path, line, canonical, cf.key)
        elif canonical == "PresharedKey":
            psk = cv.wg_key_or_none(cf.wgfield(path, line, canonical, cf.key))
            out.psk = (one_secret(psk) if psk else None,)
        elif canonical == "AllowedIPs":
            items = cf.wgfield(path, line, canonical, cf.allowed_ips)
            out.allowed.extend((ip, line.no) for ip in items)
        elif canonical == "Endpoint":
            out.endpoint = cf.wgfield(path, line, canonical, cf.endpoint)
        else:
            out.keepalive = cf.wgfield(path, line, canonical, cf.keepalive)
    if public_key is None:
        raise ConfParseError(path, block.header_no, "PublicKey", "[Peer] has no PublicKey (wg refuses it)")
    out.public_key = public_key
    return out


class _PeerDraft:
    """One peer being applied block by block, as ``wg setconf`` applies repeated blocks.

    Each block overrides what it sets; its AllowedIPs replace the peer's (wg sends
    ``replace_allowed_ips`` for every block). Comments and names of all blocks are kept.
    """

    __slots__ = ("allowed", "blocks", "endpoint", "keepalive", "psk", "public_key")

    def __init__(self, first: _PeerBlock) -> None:
        self.blocks = [first.block]
        self.public_key = first.public_key
        self.psk: Secret | None = None
        self.allowed: dict[str, None] = {}  # ordered set: insertion order is wg's order
        self.endpoint: str | None = None
        self.keepalive = 0

    def apply(self, pb: _PeerBlock, owner: dict[str, _PeerDraft] | None, path: str) -> None:
        """Apply one block; ``owner`` (live peers only) moves a prefix to its last claimant."""
        if pb.block is not self.blocks[0]:
            self.blocks.append(pb.block)
        if pb.psk is not None:
            self.psk = pb.psk[0]
        if pb.endpoint is not None:
            self.endpoint = pb.endpoint
        if pb.keepalive is not None:
            self.keepalive = pb.keepalive
        if owner is not None:
            for prefix in self.allowed:
                owner.pop(prefix, None)
        self.allowed = {}
        for prefix, lineno in pb.allowed:
            other = owner.get(prefix) if owner is not None else None
            if other is not None and other is not self:
                del other.allowed[prefix]
                warn(
                    path, lineno, "AllowedIPs", "prefix also in an earlier peer; wg gives it to this one only"
                )
            self.allowed.pop(prefix, None)  # wg moves a repeated prefix to the end of the list
            self.allowed[prefix] = None
            if owner is not None:
                owner[prefix] = self

    def peer(self, disabled: bool, provenances: dict[tuple[bool, ...], dict[str, Source]], ctx: File) -> Peer:
        """The Peer wg would run (or the disabled peer the file describes).

        ``provenances`` holds the few provenance maps a file's peers share, by which
        fields are set: hashing a map of enums is most of what building a peer costs.
        """
        if len(self.blocks) == 1:
            raw_comments: list[str] = self.blocks[0].comments
            name = peer_name(self.blocks[0])
        else:
            raw_comments = [c for b in self.blocks for c in b.comments]
            name = next((n for n in map(peer_name, self.blocks) if n), None)
        short_name = name is None or len(name) <= validate.MAX_PEER_NAME
        # plain_text saw the file's lines; redact_comment may have made one longer since
        short_lines = max(map(len, raw_comments), default=0) <= validate.MAX_TEXT
        if ctx.plain and short_name and short_lines and len(raw_comments) <= validate.MAX_PLAIN_LINES:
            comments = tuple(raw_comments)  # nothing to escape or cut (validate.plain_text)
        else:
            comments, name = _display(ctx.path, self.blocks[0].header_no, raw_comments, name)
        which = (self.psk is not None, self.endpoint is not None, name is not None)
        provenance = provenances.get(which)
        if provenance is None:
            provenance = provenances[which] = shared(_provenance(*which))
        return Peer(
            public_key=one(self.public_key),  # one str with the other sources (valuepool)
            preshared_key=self.psk,
            allowed_ips=one_tuple(list(self.allowed)),
            endpoint=None if self.endpoint is None else one(self.endpoint),
            persistent_keepalive=self.keepalive,
            name=name,
            comments=comments,
            disabled=disabled,
            provenance=provenance,
        )


def stored_comments(path: str, line: int | None, comments: list[str], whose: str) -> tuple[str, ...]:
    """Comments as stored (validate.display_lines), warned about when changed: they must
    pass restore's check of every loaded value and fit the database's bounds, or restore
    would refuse the host's backup or every cycle would fail. The file's text keeps them."""
    if not comments:
        return ()
    kept, left_out = validate.display_lines(comments)
    if left_out:
        warn(path, line, "comments", f"{left_out:,} {whose} comment lines past the database's bound left out")
    elif any(a is not b for a, b in zip(kept, comments, strict=True)):
        warn(path, line, "comments", f"{whose} comments stored escaped or cut (control character, long line)")
    return kept


def _display(
    path: str, line: int, comments: list[str], name: str | None
) -> tuple[tuple[str, ...], str | None]:
    """A peer's comments and name as stored (see :func:`stored_comments`)."""
    kept = stored_comments(path, line, comments, "peer")
    if name is not None:
        stored = validate.display_line(name, validate.MAX_PEER_NAME)
        if stored is not name:
            cut = len(name) > validate.MAX_PEER_NAME
            why = f"cut at {validate.MAX_PEER_NAME:,} characters" if cut else "with control codes escaped"
            warn(path, line, "name", f"peer name stored {why}")
        name = stored
    return kept, name


def _provenance(psk: bool, endpoint: bool, name: bool) -> dict[str, Source]:
    """Every field this source set (not None) came from the conf file, in field order."""
    present = {"preshared_key": psk, "endpoint": endpoint, "name": name}
    fields = ("public_key", "preshared_key", "allowed_ips", "endpoint", "persistent_keepalive", "name")
    return {f: Source.CONF for f in (*fields, "comments", "disabled") if present.get(f, True)}


def _disabled_block(path: str, block: Block, disabled: dict[str, _PeerDraft]) -> _PeerBlock | None:
    """A ``#! [Peer]`` block as a disabled peer, or None (warned) when wg-quick's reading cannot use it."""
    try:
        pb = _read_peer_block(path, block)
    except ConfParseError as exc:
        warn(
            path, exc.lineno, exc.field_name, f"disabled peer not read ({exc.message}); kept in the raw text"
        )
        return None
    if pb.public_key in disabled:
        warn(
            path,
            block.header_no,
            "PublicKey",
            "disabled peer repeats an earlier disabled peer; kept in the raw text",
        )
        return None
    disabled[pb.public_key] = _PeerDraft(pb)
    disabled[pb.public_key].apply(pb, None, path)
    return pb


@dataclass(frozen=True, slots=True)
class File:
    """The file the peers come from: its path, and whether its text is plain (validate.plain_text)."""

    path: str
    plain: bool


def build_peers(ctx: File, blocks: list[Block | None], own_public: str | None) -> dict[str, Peer]:
    """Every peer of the file in file order, read the way ``wg setconf`` runs the file.

    Each entry of ``blocks`` is set to None once read: its lines are garbage from then
    on (10,000 peers: ~15 MB), so the caller must hold no other reference to them.
    """
    path = ctx.path
    live: dict[str, _PeerDraft] = {}
    disabled: dict[str, _PeerDraft] = {}
    order: dict[str, None] = {}  # first appearance of each key (a dict: 10k peers, no O(n^2))
    owner: dict[str, _PeerDraft] = {}
    for index, block in enumerate(blocks):
        blocks[index] = None
        if block is None or block.kind != "peer":
            continue
        if block.disabled:
            pb = _disabled_block(path, block, disabled)
            if pb is None:
                continue
        else:
            pb = _read_peer_block(path, block)
            if own_public is not None and pb.public_key == own_public:
                warn(
                    path, block.header_no, "PublicKey", "peer has the interface's own public key; wg drops it"
                )
                continue
            draft = live.get(pb.public_key)
            if draft is None:
                draft = live[pb.public_key] = _PeerDraft(pb)
            else:
                warn(
                    path,
                    block.header_no,
                    "PublicKey",
                    "same peer as an earlier [Peer]; wg merges them (this block's values win)",
                )
            draft.apply(pb, owner, path)
        order.setdefault(pb.public_key, None)
    out: dict[str, Peer] = {}
    provenances: dict[tuple[bool, ...], dict[str, Source]] = {}
    for key in order:  # keyed by the Peer's own (pooled) key string: no second copy of it
        if key in live:
            peer = live[key].peer(False, provenances, ctx)
            out[peer.public_key] = peer
            if key in disabled:
                line = disabled[key].blocks[0].header_no
                warn(
                    path,
                    line,
                    "PublicKey",
                    "disabled copy of a live peer; wg runs the live one, the copy stays in the raw text",
                )
        elif key in disabled:
            peer = disabled[key].peer(True, provenances, ctx)
            out[peer.public_key] = peer
    return out
