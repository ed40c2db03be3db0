"""Priority classes: the vocabulary (shared/priority.py), how the ingress finds a message's
class and takes the header field out (ingress/priority.py), the settings, and the schedule
keys each script is given (shared/spool.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.priority import Choice, Rules, resolve, take_header
from shared import priority, replies
from shared.keys import Keys
from shared.priority import BULK, TRANSACTIONAL
from shared.settings import SettingsError, load_settings
from shared.spool import (
    Envelope,
    Outcome,
    Shaping,
    accept_call,
    claim_call,
    complete_call,
    discard_call,
    dispatch_call,
    drop_call,
    release_call,
    reschedule_call,
    unclaim_call,
)
from tests.unit.fuzz import FUZZ

KEYS = Keys("mxf:")
RULES = Rules(default=BULK, transactional_users=frozenset({"app-reset"}),
              bulk_users=frozenset({"newsletter"}))  # fmt: skip


# --- the vocabulary -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("transactional", TRANSACTIONAL), (" Transactional ", TRANSACTIONAL), ("BULK", BULK),
     ("bulk\t", BULK), ("", None), ("urgent", None), ("trans", None), ("bulk bulk", None)],
)  # fmt: skip
def test_parse(value: str, expected: str | None) -> None:
    assert priority.parse(value) == expected


def test_stored_fields_other_than_transactional_are_bulk() -> None:
    assert priority.from_field("transactional") == TRANSACTIONAL
    assert [priority.from_field(v) for v in ("bulk", "", "Transactional", "x")] == [BULK] * 4


def test_schedule_keys() -> None:
    assert KEYS.sched("example.com") == "mxf:sched:example.com"  # bulk: the key it always had
    assert KEYS.sched("example.com", BULK) == "mxf:sched:example.com"
    assert KEYS.sched("example.com", TRANSACTIONAL) == "mxf:sched:example.com:t"
    assert KEYS.schedules("example.com") == ("mxf:sched:example.com:t", "mxf:sched:example.com")
    # Domains never hold ":", so no domain's bulk key is another's transactional key.
    assert Keys("p:").sched("a.test", TRANSACTIONAL) == "p:sched:a.test:t"


# --- resolution: explicit > header (relay clients) > AUTH user > default ----------------------


def choose(
    rules: Rules = RULES, *, explicit: str | None = None, header: list[str] | None = None,
    trusted: bool = True, user: str = "",
) -> Choice | replies.Reply:  # fmt: skip
    return resolve(rules, explicit=explicit, header=header or [], trusted=trusted, auth_user=user)


def test_default_class() -> None:
    assert choose() == Choice(BULK, "default")
    assert choose(Rules(default=TRANSACTIONAL)) == Choice(TRANSACTIONAL, "default")


def test_auth_user_mapping() -> None:
    assert choose(user="app-reset") == Choice(TRANSACTIONAL, "user")
    assert choose(Rules(default=TRANSACTIONAL, bulk_users=frozenset({"newsletter"})),
                  user="newsletter") == Choice(BULK, "user")  # fmt: skip
    assert choose(user="someone-else") == Choice(BULK, "default")
    assert choose(user="App-Reset") == Choice(BULK, "default")  # user names are exact


def test_header_beats_the_user_mapping() -> None:
    assert choose(header=["bulk"], user="app-reset") == Choice(BULK, "header")
    assert choose(header=["transactional"], user="newsletter") == Choice(TRANSACTIONAL, "header")
    assert choose(header=["Transactional", "transactional"]) == Choice(TRANSACTIONAL, "header")


def test_explicit_beats_everything() -> None:
    found = choose(explicit="bulk", header=["transactional"], user="app-reset")
    assert found == Choice(BULK, "explicit")
    assert choose(explicit="transactional") == Choice(TRANSACTIONAL, "explicit")


def test_an_unknown_explicit_class_is_refused() -> None:
    assert choose(explicit="urgent") == replies.PRIORITY_INVALID
    assert choose(explicit="") == replies.PRIORITY_INVALID


def test_an_unknown_or_contradictory_header_is_refused() -> None:
    assert choose(header=["high"]) == replies.PRIORITY_HEADER_INVALID
    assert choose(header=[""]) == replies.PRIORITY_HEADER_INVALID
    assert choose(header=["bulk", "transactional"]) == replies.PRIORITY_HEADER_INVALID
    assert choose(header=["bulk", "nonsense"]) == replies.PRIORITY_HEADER_INVALID


def test_the_header_counts_only_from_relay_clients_and_when_enabled() -> None:
    # Neither trusted nor enabled: the field is ignored (it is still taken out, below),
    # even a malformed one.
    assert choose(header=["transactional"], trusted=False) == Choice(BULK, "default")
    assert choose(header=["garbage"], trusted=False, user="app-reset") == Choice(
        TRANSACTIONAL, "user"
    )
    off = Rules(default=BULK, header=False)
    assert choose(off, header=["transactional"]) == Choice(BULK, "default")


def test_an_empty_user_is_never_mapped() -> None:
    assert choose(Rules(default=BULK, transactional_users=frozenset({""}))) == Choice(
        BULK, "default"
    )


# --- the header field is taken out of the message -------------------------------------------


def test_a_message_without_the_field_is_untouched() -> None:
    message = b"Subject: x\r\nX-Mxfleet-Other: transactional\r\n\r\nX-Mxfleet-Priority: bulk\r\n"
    stripped, values = take_header(message)
    assert stripped is message  # the body's text is not a header field
    assert values == []


def test_the_field_is_removed_with_its_folded_lines() -> None:
    message = (
        b"From: <a@client.test>\r\n"
        b"x-mxfleet-PRIORITY :\r\n\ttransactional\r\n"
        b"Subject: reset\r\n  your password\r\n"
        b"X-Mxfleet-Priority: transactional \r\n"
        b"\r\n"
        b"X-Mxfleet-Priority: stays in the body\r\n"
    )
    stripped, values = take_header(message)
    assert stripped == (
        b"From: <a@client.test>\r\nSubject: reset\r\n  your password\r\n\r\n"
        b"X-Mxfleet-Priority: stays in the body\r\n"
    )
    assert values == ["transactional", "transactional"]


def test_a_header_of_that_field_alone_keeps_the_blank_line() -> None:
    stripped, values = take_header(b"X-Mxfleet-Priority: bulk\r\n\r\nNot: a header\r\n")
    assert stripped == b"\r\nNot: a header\r\n"  # the body's first line stays body
    assert values == ["bulk"]


def test_a_message_of_headers_only() -> None:
    assert take_header(b"Subject: x\r\nX-Mxfleet-Priority: bulk\r\n") == (b"Subject: x\r\n",
                                                                          ["bulk"])  # fmt: skip
    assert take_header(b"X-Mxfleet-Priority: bulk") == (b"", ["bulk"])


def test_non_ascii_values_do_not_crash() -> None:
    stripped, values = take_header(b"X-Mxfleet-Priority: \xff\xfe\r\n\r\nbody\r\n")
    assert stripped == b"\r\nbody\r\n"
    assert priority.parse(values[0]) is None


field_name = st.sampled_from([b"X-Mxfleet-Priority", b"x-mxfleet-priority", b"X-MXFLEET-PRIORITY"])
other_field = st.from_regex(rb"X-[A-Za-z]{1,8}: [ -~]{0,20}", fullmatch=True)


@FUZZ
@given(st.lists(st.one_of(other_field, field_name.map(lambda n: n + b": bulk")), max_size=8),
       st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b))  # fmt: skip
def test_only_the_field_leaves_and_nothing_else_changes(fields: list[bytes], text: bytes) -> None:
    message = b"Subject: s\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + text + b"\r\n"
    stripped, values = take_header(message)
    kept = [f for f in fields if not f.lower().startswith(b"x-mxfleet-priority:")]
    header = b"Subject: s\r\n" + b"".join(f + b"\r\n" for f in kept)
    assert stripped == header + b"\r\n" + text + b"\r\n"
    assert values == ["bulk"] * (len(fields) - len(kept))


# --- settings -------------------------------------------------------------------------------


def test_priority_settings() -> None:
    settings = load_settings(
        {"MXFLEET_TRANSACTIONAL_USERS": "app-reset, billing", "MXFLEET_BULK_USERS": "news",
         "MXFLEET_DEFAULT_PRIORITY": "transactional", "MXFLEET_PRIORITY_HEADER": "false"}
    )  # fmt: skip
    assert settings.transactional_users == ["app-reset", "billing"]
    assert settings.bulk_users == ["news"]
    assert settings.default_priority == TRANSACTIONAL
    assert settings.priority_header is False
    defaults = load_settings({})
    assert (defaults.default_priority, defaults.transactional_users, defaults.bulk_users,
            defaults.priority_header) == (BULK, [], [], True)  # fmt: skip


def test_bad_priority_settings_are_named() -> None:
    with pytest.raises(SettingsError, match="default_priority"):
        load_settings({"MXFLEET_DEFAULT_PRIORITY": "urgent"})
    with pytest.raises(SettingsError, match=r"bulk_users.*also in transactional_users: app"):
        load_settings({"MXFLEET_TRANSACTIONAL_USERS": "app", "MXFLEET_BULK_USERS": "app,x"})


# --- the scripts get both schedules of a domain -----------------------------------------------

SHAPING = Shaping("mx.example.com", max_connections=2)
T_SCHED = "mxf:sched:example.com:t"
B_SCHED = "mxf:sched:example.com"


def test_a_transactional_message_is_accepted_into_the_transactional_schedules() -> None:
    env = Envelope("s@x.test", {"example.com": ["a@example.com"], "example.org": ["b@example.org"]},
                   priority=TRANSACTIONAL)  # fmt: skip
    names, args = accept_call(KEYS, "ID", env, b"")
    assert [names[7], names[10]] == [T_SCHED, "mxf:sched:example.org:t"]
    pairs = args[3 : 3 + 2 * int(args[2])]
    assert dict(zip(pairs[::2], pairs[1::2], strict=True))["priority"] == TRANSACTIONAL
    discard = discard_call(KEYS, "ID", ["example.com"], TRANSACTIONAL)[0]
    assert discard[6] == T_SCHED


def test_every_script_that_moves_jobs_gets_both_schedules() -> None:
    dom, tok = "example.com", "tok"
    limits = {"lease_ms": 1, "hold_ms": 1, "batch": 1, "max_tickets": 1}
    done = {"next_ms": 0, "events_maxlen": 1000, "event": {}}
    calls = {
        "dispatch": dispatch_call(KEYS, dom, tok, SHAPING, **limits)[0],
        "claim": claim_call(KEYS, dom, tok, SHAPING, count=1, lease_ms=1, mark_ms=1)[0],
        "release": release_call(KEYS, dom, "mx.example.com", tok)[0],
        "reschedule": reschedule_call(KEYS, dom)[0],
        "unclaim": unclaim_call(KEYS, dom, tok, ["ID"])[0],
        "drop": drop_call(KEYS, "ID", dom, "deleted", 1000)[0],
        "complete": complete_call(KEYS, "ID", dom, tok, Outcome(), **done)[0],  # type: ignore[arg-type]  # keyword values of mixed types
    }
    # (bulk, transactional) KEYS indices as each script's header documents them, 1-based.
    where = {
        "dispatch": (3, 7), "claim": (1, 7), "release": (3, 7), "reschedule": (1, 3),
        "unclaim": (1, 4), "drop": (5, 10), "complete": (5, 11),
    }  # fmt: skip
    for name, names in calls.items():
        bulk, urgent = where[name]
        assert (names[bulk - 1], names[urgent - 1]) == (B_SCHED, T_SCHED), name
