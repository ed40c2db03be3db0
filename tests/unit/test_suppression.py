"""shared/suppression.py and the pure parts of ``mxfleet suppress``: how addresses are
compared, scopes, the keys looked up at RCPT, and suppress.lua's call layout."""

import pytest

from shared.keys import Keys
from shared.message import AddressError, Mailbox, parse_mailbox
from shared.suppression import (
    GLOBAL,
    MAX_REASON,
    Entry,
    add_call,
    display_form,
    lookup_form,
    lookup_keys,
    parse_address,
    parse_scope,
    sender_scope,
)
from workers.events_cli import event_object
from workers.suppress_cli import UsageError, parse_ttl, read_addresses, stamp


def box(text: str) -> Mailbox:
    return parse_mailbox(text, utf8=True)


@pytest.mark.parametrize(
    ("given", "lookup", "display"),
    [
        ("Bob@Example.ORG", "bob@example.org", "Bob@example.org"),
        ("bob@EXAMPLE.org", "bob@example.org", "bob@example.org"),
        ('"Bob"@example.org', "bob@example.org", "Bob@example.org"),  # RFC 5321 §4.1.2
        ('"bob smith"@example.org', '"bob smith"@example.org', '"bob smith"@example.org'),
        ("bob+news@example.org", "bob+news@example.org", "bob+news@example.org"),
        ("Jörg@Bücher.example", "jörg@xn--bcher-kva.example", "Jörg@xn--bcher-kva.example"),
    ],
)
def test_addresses_compare_without_case_and_with_the_a_label(
    given: str, lookup: str, display: str
) -> None:
    assert lookup_form(box(given)) == lookup
    assert display_form(box(given)) == display


def test_parse_address_takes_angle_brackets_and_refuses_junk() -> None:
    assert parse_address(" <a@b.example> ") == Mailbox("a", "b.example")
    for bad in ("", "a", "a@b", "@b.example", "a@@b.example", "<a@b.example", "a b@c.example"):
        with pytest.raises(AddressError):
            parse_address(bad)


def test_scopes() -> None:
    assert parse_scope(None) == GLOBAL
    assert parse_scope("*") == GLOBAL
    assert parse_scope(" Shop.Example ") == "shop.example"
    assert parse_scope("bücher.example") == "xn--bcher-kva.example"
    for bad in ("localhost", "", "a b.example", "x@y.example"):
        with pytest.raises(AddressError):
            parse_scope(bad)
    assert sender_scope("news@Shop.Example") == "shop.example"
    assert sender_scope('"a@b"@shop.example') == "shop.example"
    assert sender_scope("") is None  # the null sender: global entries only
    assert sender_scope("nodomain@") is None


def test_rcpt_looks_up_the_global_and_the_sender_domain_entries() -> None:
    keys = Keys()
    rcpt = box("Bob@Dest.Example")
    assert lookup_keys(keys, "news@shop.example", rcpt) == [
        "mxf:supp:*:bob@dest.example",
        "mxf:supp:shop.example:bob@dest.example",
    ]
    assert lookup_keys(keys, "", rcpt) == ["mxf:supp:*:bob@dest.example"]
    assert lookup_keys(Keys("t:"), "", rcpt) == ["t:supp:*:bob@dest.example"]


def test_the_index_is_not_under_the_entries_prefix() -> None:
    keys = Keys()
    assert not keys.suppressed.startswith(keys.supp("", "")[:-1])
    assert keys.supp(GLOBAL, "a@b.example") == "mxf:supp:*:a@b.example"


def test_add_call_layout() -> None:
    keys = Keys()
    reason = "550 5.1.1 " + "x" * 1000
    names, args = add_call(
        keys, "shop.example", [(box("A@d.example"), reason), (box("a@D.example"), "again"),
                               (box("b@d.example"), "550 5.1.1 No\nsuch\tuser")],
        ttl_ms=5000, source="bounce", replace=False,
    )  # fmt: skip
    assert names == [
        "mxf:suppressed", "mxf:stats",
        "mxf:supp:shop.example:a@d.example", "mxf:supp:shop.example:b@d.example",
    ]  # fmt: skip
    assert args[:3] == [5000, "bounce", 0]
    assert args[3:6] == ["shop.example:a@d.example", "A@d.example", reason[:MAX_REASON]]
    # The address as given only when it differs; a reply on one line, without tabs.
    assert args[6:] == ["shop.example:b@d.example", "", "550 5.1.1 No such user"]
    with pytest.raises(ValueError, match="source"):
        add_call(keys, GLOBAL, [], ttl_ms=0, source="robot", replace=True)
    with pytest.raises(ValueError, match="ttl_ms"):
        add_call(keys, GLOBAL, [], ttl_ms=-1, source="operator", replace=True)


def test_entry_from_its_value() -> None:
    value = "bounce\t1000\tBob@d.example\t550 5.1.1 a\tb"
    entry = Entry.parse("shop.example:bob@d.example", value, 61_000.0)
    assert entry == Entry("Bob@d.example", "shop.example", "550 5.1.1 a\tb", "bounce", 1000, 61_000)
    never = Entry.parse("*:a:b@d.example", "operator\t5\t\toperator", float("inf"))
    assert (never.address, never.scope, never.expires_ms) == ("a:b@d.example", GLOBAL, 0)
    odd = Entry.parse("*:c@d.example", "junk", 1.0)  # an odd value shows, it does not fail
    assert (odd.address, odd.source, odd.added_ms, odd.reason) == ("c@d.example", "junk", 0, "")


def test_ttl_option() -> None:
    assert parse_ttl(None) == 0
    assert parse_ttl("none") == parse_ttl("Never") == 0
    assert parse_ttl("30d") == 30 * 86400 * 1000
    assert parse_ttl("250ms") == 250
    for bad in ("soon", "-1s", "0", "0.1ms"):
        with pytest.raises(UsageError, match="--ttl"):
            parse_ttl(bad)


def test_import_lines() -> None:
    lines = [
        "# opt-outs of May\n",
        "\n",
        "a@d.example\n",
        "  <B@D.example>  # asked by phone\n",
        "c#1@d.example\n",  # '#' is atext (RFC 5322 §3.2.3)
        "not an address\n",
        "x@localhost\tcomment without a hash\n",
    ]
    found, invalid = read_addresses(lines)
    assert [m.address for m in found] == ["a@d.example", "B@D.example", "c#1@d.example"]
    assert invalid == [(6, "not an address"), (7, "x@localhost\tcomment without a hash")]


def test_stamp() -> None:
    assert stamp(0) == "never"
    assert stamp(1_764_403_200_000) == "2025-11-29T08:00:00Z"


def test_events_show_the_suppressed_recipients_as_a_list() -> None:
    fields = {"attempt": "1", "rcpts": "a@d.example,b@d.example", "verdict": "bounced",
              "suppressed": "a@d.example"}  # fmt: skip
    shown = event_object("1764403200000-0", fields)
    assert shown["suppressed"] == ["a@d.example"]
    assert shown["rcpts"] == ["a@d.example", "b@d.example"]
