"""The store's planning for an interface a source could not read this cycle (issue 16 item 7)."""

from __future__ import annotations

from wgsyncd.store.writer import keep_known


def test_an_empty_wg_quick_list_while_a_source_failed_keeps_the_stored_list_and_its_source():
    """wgrest v2 had the addresses (the conf it rewrote has none): with wgrest failed, the
    conf's empty list is not news, and the row (value and provenance) stays as it was."""
    fields = ("addresses", "dns", "mtu", "table_name", "sources", "provenance")
    old = (["10.0.0.1/24"], ["192.0.2.53"], 1420, "off", ["conf", "wgrest"],
           {"addresses": "wgrest", "dns": "wgrest", "mtu": "conf", "table": "wgrest"})  # fmt: skip
    new = ([], [], 1280, None, ["conf"], {"addresses": "conf", "dns": "conf", "mtu": "conf", "table": "conf"})
    assert keep_known(fields, old, new) == (
        ["10.0.0.1/24"],
        ["192.0.2.53"],
        1280,  # a value the conf knows is news
        "off",
        ["conf", "wgrest"],
        {"addresses": "wgrest", "dns": "wgrest", "mtu": "conf", "table": "wgrest"},
    )
    assert keep_known(fields, old, old) == old
