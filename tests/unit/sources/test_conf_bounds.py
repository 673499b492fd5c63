"""Conf text wg-quick runs gives values restore accepts and the database keeps, and
plain_text's fast path stores what the per-line path stores (from the review of 7ace3f3:
redaction lengthening a plain line, NUL bytes, split keys, restore's quiet re-parse)."""

from __future__ import annotations

import contextlib
import logging

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzzing import FUZZ
from tests.unit.sources.test_conffiles import PRIV, A, B, parse
from wgsyncd import validate
from wgsyncd.sources.conffiles import ConfParseError

# characters that matter to some rule: controls, line ends of other readers, invisibles,
# whitespace wg-quick trims or does not, comment and key punctuation, non-ASCII
_CHARS = st.sampled_from(
    [
        *"ab \t#=!:[]",
        *["\r", "\x00", "\x0b", "\x0c", "\x1b", "\x1c", "\x7f", "\x85", "\x9b", "\xa0", "é"],
        *["\u2028", "\u2029", "\u200b", "\u202e", "\u2066", "\ufeff", "privatekey=x ", "Name = "],
    ]
)
_TEXT = st.lists(_CHARS, max_size=12).map("".join)
_LONG = st.builds(lambda s, n: (s or "a") * n, _TEXT, st.sampled_from([1, 300, 1024, 1025, 4096, 4097]))


def _line(kind: str, text: str) -> str:
    return {
        "iface": "[Interface]",
        "peerA": "[Peer]\nPublicKey = " + A,
        "peerB": "[Peer]\nPublicKey = " + B,
        "disB": "#! [Peer]\n#! PublicKey = " + B,
        "allowed": "AllowedIPs = 10.0.0.1/32",
        "name": "# Name = " + text,
        "hash3": "### " + text,
        "comment": "# " + text,
        "discomment": "#! # " + text,
        "inline": "AllowedIPs = 10.0.0.2/32 # " + text,
        "postup": "PostUp = echo " + text,
        "dns": "DNS = " + text,
        "table": "Table = " + text,
        "blank": "",
    }[kind]


_KINDS = st.sampled_from(
    [
        "iface",
        "peerA",
        "peerB",
        "disB",
        "allowed",
        "name",
        "hash3",
        "comment",
        "discomment",
        "inline",
        "postup",
        "dns",
        "table",
        "blank",
    ]
)
_LINES = st.lists(st.tuples(_KINDS, st.one_of(_TEXT, _LONG)), max_size=14)


def _conf(lines: list[tuple[str, str]], crlf: bool) -> str:
    body = "\n".join(_line(k, t) for k, t in lines)
    text = f"[Interface]\nPrivateKey = {PRIV}\n{body}\n"
    return text.replace("\n", "\r\n") if crlf else text


def _assert_storable(iface) -> None:
    """Restore's check passes (NUL in conf_text aside: see test_nul_byte_*), DB bounds hold."""
    validate.whole_interface(iface, "h/wg0")
    for rows in [iface.comments or ()] + [p.comments or () for p in iface.peers.values()]:
        assert len(rows) <= validate.MAX_COMMENT_LINES
        assert sum(map(len, rows)) <= validate.MAX_COMMENT_CHARS
    for p in iface.peers.values():
        assert p.name is None or len(p.name) <= validate.MAX_PEER_NAME
        assert len(p.allowed_ips or ()) <= validate.MAX_ALLOWED_IPS


def _stored(text: str) -> object:
    i = parse(text)
    return (i.comments, [(k, p.name, p.comments) for k, p in i.peers.items()])


@FUZZ
@given(lines=_LINES, crlf=st.booleans())
def test_any_conf_that_parses_is_restorable_and_storable(lines, crlf) -> None:
    text = _conf(lines, crlf)
    if "\x00" in text:  # known, separate finding
        text = text.replace("\x00", "\x01")
    logging.disable(logging.WARNING)
    try:
        iface = parse(text)
    except ConfParseError:
        return
    finally:
        logging.disable(logging.NOTSET)
    _assert_storable(iface)


@FUZZ
@given(lines=_LINES, crlf=st.booleans())
def test_plain_fast_path_stores_what_the_slow_path_stores(lines, crlf) -> None:
    text = _conf(lines, crlf)
    logging.disable(logging.WARNING)
    try:
        try:
            fast = _stored(text)
        except ConfParseError as exc:
            fast = ("error", str(exc))
        with _never_plain():
            try:
                slow = _stored(text)
            except ConfParseError as exc:
                slow = ("error", str(exc))
    finally:
        logging.disable(logging.NOTSET)
    assert fast == slow


@contextlib.contextmanager
def _never_plain():
    """No file is plain: every peer takes the per-line path (stored_comments/_display)."""
    real = validate.plain_text
    validate.plain_text = lambda text: False
    try:
        yield
    finally:
        validate.plain_text = real


LONG_REDACTED = "# " + "privatekey=x\t" * 314  # 4,084 chars; 6,909 once redacted


def test_redaction_that_lengthens_a_plain_line_is_still_restorable() -> None:
    iface = parse(f"[Interface]\nPrivateKey = {PRIV}\n\n{LONG_REDACTED}\n[Peer]\nPublicKey = {A}\n")
    _assert_storable(iface)


def test_redaction_that_lengthens_256_plain_lines_stays_within_the_database_bound() -> None:
    many = "\n".join([LONG_REDACTED] * 256)
    iface = parse(f"[Interface]\nPrivateKey = {PRIV}\n\n{many}\n[Peer]\nPublicKey = {A}\n")
    assert sum(map(len, iface.peers[A].comments)) <= validate.MAX_COMMENT_CHARS


def test_nul_byte_wg_quick_runs_is_refused_at_read_or_restorable() -> None:
    text = f"[Interface]\nPrivateKey = {PRIV}\n# a\x00b\n[Peer]\nPublicKey = {A}\n"
    try:
        iface = parse(text)
    except ConfParseError:
        return
    validate.whole_interface(iface, "h/wg0")


def test_escaping_keeps_distinct_names_distinct_unless_cut() -> None:
    """Escaping is injective only as long as nothing is cut: a literal backslash text and
    the control character it spells are stored alike (a name, not a key: display only)."""
    assert validate.display_line("a\x1bb") == validate.display_line("a\\x1bb")


def test_a_key_split_by_an_invisible_character_is_still_redacted() -> None:
    """A commented-out private key with a zero-width space inside was stored with the space
    escaped: the key was readable from the database. The invisible character goes too."""
    for sep in ("\u200b", "\x1b", "\u2028"):
        comment = f"# {PRIV[:20]}{sep}{PRIV[20:]}"
        text = f"[Interface]\nPrivateKey = {PRIV}\n\n{comment}\n[Peer]\nPublicKey = {A}\n"
        assert parse(text).peers[A].comments == ("# <redacted>",)


def test_a_peer_over_the_prefix_bound_stays_in_a_conf_read_restore_can_parse() -> None:
    """The bound is the merge's (tests/unit/test_merge.py), for every source: the conf
    reader and restore's parse of a stored conf take what wg takes."""
    prefixes = ", ".join(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32" for i in range(100_001))
    text = f"[Interface]\nPrivateKey = {PRIV}\n[Peer]\nPublicKey = {A}\nAllowedIPs = {prefixes}\n"
    assert len(parse(text).peers[A].allowed_ips) == 100_001


def test_restore_parse_of_stored_conf_text_logs_no_database_control_characters(caplog) -> None:
    """restore/loading.py parses the stored conf_text with the stored conf_path (not yet
    checked: check_loaded runs later); 7ace3f3's new warnings fire on any escaped comment,
    and their path is the database's, control characters and all."""
    from wgsyncd.restore.loading import desired_interface

    text = f"[Interface]\nPrivateKey = {PRIV}\n\n# a\x1bb\n[Peer]\nPublicKey = {A}\n"
    doc = {"name": "wg0", "conf_path": "/etc/wireguard/\x1b[2Jwg0.conf", "peers": []}
    with caplog.at_level(logging.WARNING):
        desired_interface(doc, {"conf_text": text}, "host h version 1: interface wg0")
    assert not any("\x1b" in r.getMessage() for r in caplog.records)
