"""shared/spool.py: the exact KEYS/ARGV of each Lua script, and the scripts themselves."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.keys import Keys
from shared.spool import Call, Envelope, accept_call, discard_call, script
from tests.unit.fuzz import FUZZ

KEYS = Keys("mxf:")
MSG_ID = "01HZX3Y4Z5A6B7C8D9E0F1G2H3"


def envelope(**changes: object) -> Envelope:
    values: dict[str, object] = {
        "sender": "s@example.net",
        "recipients": {
            "example.com": ["a@example.com", "b@Example.COM"],
            "example.org": ["c@example.org"],
        },
        "client": "192.0.2.1",
        "helo": "client.example",
        "auth": "alice",
        "proto": "ESMTPSA",
        "smtputf8": False,
    }
    values.update(changes)
    return Envelope(**values)  # type: ignore[arg-type]  # keyword values checked by the tests


def test_envelope_fields() -> None:
    assert envelope().recipient_count == 3
    assert envelope().fields(1234) == [
        "from", "s@example.net",
        "rcpts", 3,
        "domains", "example.com,example.org",
        "size", 1234,
        "client", "192.0.2.1",
        "helo", "client.example",
        "auth", "alice",
        "proto", "ESMTPSA",
        "smtputf8", 0,
        "priority", "bulk",
    ]  # fmt: skip


def test_envelope_null_sender_utf8_and_extra_fields() -> None:
    env = Envelope(sender="", recipients={"x.example": ["ü@x.example"]}, smtputf8=True,
                   extra={"tls": "TLSv1.3", "id_hint": "7"})  # fmt: skip
    assert env.fields(0) == [
        "from", "", "rcpts", 1, "domains", "x.example", "size", 0, "client", "",
        "helo", "", "auth", "", "proto", "ESMTP", "smtputf8", 1, "priority", "bulk",
        "tls", "TLSv1.3", "id_hint", "7",
    ]  # fmt: skip


def test_accept_call_exact() -> None:
    body = b"Subject: x\r\n\r\nhello\r\n"
    names, args = accept_call(KEYS, MSG_ID, envelope(), body)
    assert names == [
        f"mxf:msg:{MSG_ID}",
        f"mxf:body:{MSG_ID}",
        "mxf:due",
        "mxf:stats",
        "mxf:queue",
        f"mxf:rcpt:{MSG_ID}:example.com",
        f"mxf:job:{MSG_ID}:example.com",
        "mxf:sched:example.com",
        f"mxf:rcpt:{MSG_ID}:example.org",
        f"mxf:job:{MSG_ID}:example.org",
        "mxf:sched:example.org",
    ]
    assert args == [
        MSG_ID, body, 10,
        "from", "s@example.net", "rcpts", 3, "domains", "example.com,example.org",
        "size", len(body), "client", "192.0.2.1", "helo", "client.example", "auth", "alice",
        "proto", "ESMTPSA", "smtputf8", 0, "priority", "bulk",
        "example.com", 2, "a@example.com", "b@Example.COM",
        "example.org", 1, "c@example.org",
    ]  # fmt: skip


def test_accept_call_counts_extra_fields() -> None:
    _, args = accept_call(KEYS, MSG_ID, envelope(extra={"tls": "1"}), b"")
    assert args[2] == 11
    assert args[3 + 2 * 10 : 3 + 2 * 11] == ["tls", "1"]


def test_discard_call_exact() -> None:
    names, args = discard_call(KEYS, MSG_ID, ["example.com", "example.org"])
    assert names == [
        f"mxf:msg:{MSG_ID}",
        f"mxf:body:{MSG_ID}",
        "mxf:stats",
        "mxf:queue",
        f"mxf:rcpt:{MSG_ID}:example.com",
        f"mxf:job:{MSG_ID}:example.com",
        "mxf:sched:example.com",
        f"mxf:rcpt:{MSG_ID}:example.org",
        f"mxf:job:{MSG_ID}:example.org",
        "mxf:sched:example.org",
    ]
    assert args == [MSG_ID]


def test_custom_prefix_reaches_every_key() -> None:
    names, _ = accept_call(Keys("t:"), "ID", envelope(), b"x")
    assert all(name.startswith("t:") for name in names)
    names, _ = discard_call(Keys("t:"), "ID", ["example.com"])
    assert all(name.startswith("t:") for name in names)


# --- the calls read the way accept.lua reads them -----------------------------------------


Arg = str | int | float | bytes


def read_accept(call: Call) -> tuple[dict[Arg, Arg], dict[str, list[Arg]]]:
    """Decode KEYS/ARGV exactly as ``accept.lua`` walks them (1-based there, 0-based here)."""
    names, args = call
    assert (len(names) - 5) % 3 == 0
    ndom = (len(names) - 5) // 3
    msg_id, nfields = args[0], args[2]
    assert isinstance(msg_id, str)
    assert isinstance(nfields, int)
    pairs = args[3 : 3 + 2 * nfields]
    fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
    pos = 3 + 2 * nfields
    domains: dict[str, list[Arg]] = {}
    for d in range(ndom):
        dom, count = args[pos], args[pos + 1]
        assert isinstance(dom, str)
        assert isinstance(count, int)
        assert names[5 + 3 * d : 8 + 3 * d] == [
            KEYS.rcpt(msg_id, dom),
            KEYS.job(msg_id, dom),
            KEYS.sched(dom),
        ]
        domains[dom] = args[pos + 2 : pos + 2 + count]
        pos += 2 + count
    assert pos == len(args)
    return fields, domains


domain_st = st.from_regex(r"[a-z0-9]{1,8}\.(com|org|example)", fullmatch=True)
rcpts_st = st.dictionaries(
    domain_st, st.lists(st.from_regex(r"[a-z]{1,6}", fullmatch=True), min_size=1, max_size=4),
    min_size=1, max_size=5,
)  # fmt: skip


@FUZZ
@given(rcpts_st, st.binary(max_size=50), st.dictionaries(st.sampled_from(["x", "y"]), st.text()))
def test_accept_call_round_trips_through_the_script_layout(
    locals_by_domain: dict[str, list[str]], body: bytes, extra: dict[str, str]
) -> None:
    recipients = {
        dom: [f"{local}@{dom}" for local in locs] for dom, locs in locals_by_domain.items()
    }
    env = Envelope(sender="s@example.net", recipients=recipients, extra=extra)
    names, args = accept_call(KEYS, MSG_ID, env, body)
    assert names[:5] == [KEYS.msg(MSG_ID), KEYS.body(MSG_ID), KEYS.due, KEYS.stats, KEYS.queue]
    assert args[:2] == [MSG_ID, body]
    fields, domains = read_accept((names, args))
    assert domains == recipients
    assert fields["size"] == len(body)
    assert fields["rcpts"] == sum(len(rcpts) for rcpts in recipients.values())
    assert fields["domains"] == ",".join(recipients)
    for name, value in extra.items():
        assert fields[name] == value


@FUZZ
@given(st.lists(domain_st, unique=True, max_size=6))
def test_discard_call_layout(domains: list[str]) -> None:
    names, args = discard_call(KEYS, MSG_ID, domains)
    assert len(names) == 4 + 3 * len(domains)
    assert args == [MSG_ID]
    for d, dom in enumerate(domains):
        assert names[4 + 3 * d : 7 + 3 * d] == [
            KEYS.rcpt(MSG_ID, dom),
            KEYS.job(MSG_ID, dom),
            KEYS.sched(dom),
        ]


# --- the script files ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fixed_keys", "fixed_argv"), [("accept", 5, 3), ("discard", 4, 1)]
)
def test_script_exists_and_matches_the_call_shape(
    name: str, fixed_keys: int, fixed_argv: int
) -> None:
    text = script(name)
    assert text.startswith(f"-- {name}:")
    assert script(name) is text  # read once
    # Constant KEYS/ARGV indices must lie within the fixed part of the call's layout.
    keys_used = {int(n) for n in re.findall(r"KEYS\[(\d+)\]", text)}
    argv_used = {int(n) for n in re.findall(r"ARGV\[(\d+)\]", text)}
    assert keys_used == set(range(1, fixed_keys + 1))
    assert argv_used <= set(range(1, fixed_argv + 1))
    assert f"(#KEYS - {fixed_keys}) / 3" in text


def test_missing_script() -> None:
    with pytest.raises(FileNotFoundError):
        script("no-such-script")
