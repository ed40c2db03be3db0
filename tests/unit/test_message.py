"""shared/message.py: queue ids, mailbox syntax, domain normalisation, grouping by domain."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.message import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    AddressError,
    Mailbox,
    new_queue_id,
    normalise_domain,
    parse_mailbox,
    split_by_domain,
)
from tests.unit.fuzz import FUZZ

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# --- queue ids ----------------------------------------------------------------------------


def test_queue_id_shape() -> None:
    queue_id = new_queue_id()
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", queue_id)
    assert ":" not in queue_id  # keys.py relies on it


def test_queue_id_encodes_milliseconds_in_its_first_ten_characters() -> None:
    assert new_queue_id(0)[:10] == "0000000000"
    assert new_queue_id(1.0)[:10] == "00000000Z8"  # 1000 = 31 * 32 + 8
    assert new_queue_id(1.0009)[:10] == "00000000Z8"
    millis = 1_700_000_000_123
    prefix = "".join(CROCKFORD[(millis >> (5 * shift)) & 31] for shift in range(9, -1, -1))
    assert new_queue_id(millis / 1000)[:10] == prefix


def test_queue_ids_are_unique() -> None:
    ids = {new_queue_id(5.0) for _ in range(1000)}
    assert len(ids) == 1000


@FUZZ
@given(
    st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False),
    st.floats(min_value=0, max_value=2**47 / 1000, allow_nan=False),
)
def test_queue_ids_are_time_ordered(first: float, second: float) -> None:
    if int(first * 1000) < int(second * 1000):
        assert new_queue_id(first) < new_queue_id(second)
    elif int(first * 1000) > int(second * 1000):
        assert new_queue_id(first) > new_queue_id(second)
    else:
        assert new_queue_id(first)[:10] == new_queue_id(second)[:10]


# --- domains ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("domain", "normalised"),
    [
        ("example.com", "example.com"),
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("BÜCHER.de", "xn--bcher-kva.de"),
        ("例子.广告", "xn--fsqu00a.xn--4rr70v"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ],
)
def test_normalise_domain(domain: str, normalised: str) -> None:
    assert normalise_domain(domain) == normalised


def test_normalise_domain_refuses_unencodable_idn() -> None:
    with pytest.raises(AddressError, match=r"is not a valid IDN"):
        normalise_domain("é" * 64 + ".com")


# --- mailboxes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "utf8", "local", "domain"),
    [
        ("user@example.com", False, "user", "example.com"),
        ("first.last+tag@mail.example.co.uk", False, "first.last+tag", "mail.example.co.uk"),
        ('"john doe"@example.com', False, '"john doe"', "example.com"),
        ('"user@ext"@example.com', False, '"user@ext"', "example.com"),
        ('"a\\"b"@example.com', False, '"a\\"b"', "example.com"),
        ("user%ext@example.com", False, "user%ext", "example.com"),
        ("ext!user@example.com", False, "ext!user", "example.com"),
        ("a@b-c.example", False, "a", "b-c.example"),
        ("ü@bücher.de", True, "ü", "bücher.de"),
        ("用户@例子.广告", True, "用户", "例子.广告"),
        ("x" * MAX_LOCAL_PART + "@example.com", False, "x" * MAX_LOCAL_PART, "example.com"),
    ],
)
def test_parse_mailbox(text: str, utf8: bool, local: str, domain: str) -> None:
    mailbox = parse_mailbox(text, utf8=utf8)
    assert mailbox == Mailbox(local, domain)
    assert mailbox.address == text


@pytest.mark.parametrize(
    ("text", "utf8", "reason"),
    [
        ("user", False, "not a valid mailbox"),
        ("", False, "not a valid mailbox"),
        ("@example.com", False, "not a valid mailbox"),
        ("user@", False, "not a valid mailbox"),
        ("<user@example.com>", False, "not a valid mailbox"),
        ("@relay.example:user@example.com", False, "not a valid mailbox"),
        ("user@[192.0.2.1]", False, "not a valid mailbox"),
        ("user@[IPv6:2001:db8::1]", False, "not a valid mailbox"),
        ("a..b@example.com", False, "not a valid mailbox"),
        (".a@example.com", False, "not a valid mailbox"),
        ("a.@example.com", False, "not a valid mailbox"),
        ("a b@example.com", False, "not a valid mailbox"),
        ("a@b@example.com", False, "not a valid mailbox"),
        ("a@-example.com", False, "not a valid mailbox"),
        ("a@example-.com", False, "not a valid mailbox"),
        ("a@example..com", False, "not a valid mailbox"),
        ("a@example.com.", False, "not a valid mailbox"),
        ('"unterminated@example.com', False, "not a valid mailbox"),
        ("a\r\n@example.com", False, "not a valid mailbox"),
        ("user@localhost", False, "domain not fully qualified"),
        ("x" * (MAX_LOCAL_PART + 1) + "@example.com", False, "local part too long"),
        ("a@" + ("b" * 60 + ".") * 5 + "com", False, "address too long"),
        ("ü@example.com", False, "non-ASCII address without SMTPUTF8"),
        ("u@bücher.de", False, "non-ASCII address without SMTPUTF8"),
        ("u@" + "é" * 63 + ".com", True, "is not a valid IDN"),
    ],
)
def test_parse_mailbox_refusals(text: str, utf8: bool, reason: str) -> None:
    with pytest.raises(AddressError, match=re.escape(reason)):
        parse_mailbox(text, utf8=utf8)


def test_length_limits_count_octets_not_characters() -> None:
    domain = "d" * 60 + "." + "d" * 60 + ".com"
    local = "é" * 32  # 64 octets
    assert parse_mailbox(f"{local}@{domain}", utf8=True) == Mailbox(local, domain)
    with pytest.raises(AddressError, match="local part too long"):
        parse_mailbox("é" * 33 + "@" + domain, utf8=True)  # 33 characters, 66 octets
    long_domain = ".".join(["é" * 20] * 6) + ".com"  # 129 characters, 249 octets
    with pytest.raises(AddressError, match="address too long"):
        parse_mailbox(f"abcdefgh@{long_domain}", utf8=True)
    assert (MAX_LOCAL_PART, MAX_DOMAIN, MAX_PATH) == (64, 255, 256)


def test_mailbox_properties() -> None:
    ascii_box = Mailbox("User", "Example.COM")
    assert ascii_box.address == "User@Example.COM"
    assert ascii_box.destination == "example.com"
    assert ascii_box.needs_smtputf8 is False
    idn = Mailbox("u", "bücher.de")
    assert idn.destination == "xn--bcher-kva.de"
    assert idn.needs_smtputf8 is True


@FUZZ
@given(st.text(max_size=120), st.booleans())
def test_parse_mailbox_raises_only_address_error(text: str, utf8: bool) -> None:
    try:
        mailbox = parse_mailbox(text, utf8=utf8)
    except AddressError:
        return
    assert mailbox.address == text
    assert isinstance(mailbox.destination, str)


@FUZZ
@given(
    st.builds(
        lambda local, domain: f"{local}@{domain}",
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    ),
    st.booleans(),
)
def test_parse_mailbox_with_an_at_sign_raises_only_address_error(text: str, utf8: bool) -> None:
    try:
        parse_mailbox(text, utf8=utf8)
    except AddressError:
        return


atom = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)


@FUZZ
@given(st.lists(atom, min_size=1, max_size=4), st.lists(label, min_size=2, max_size=4))
def test_valid_dot_atom_addresses_are_accepted(atoms: list[str], labels: list[str]) -> None:
    local, domain = ".".join(atoms), ".".join(labels)
    assert parse_mailbox(f"{local}@{domain}", utf8=False) == Mailbox(local, domain)


# --- grouping -----------------------------------------------------------------------------


def test_split_by_domain() -> None:
    rcpts = [
        Mailbox("a", "example.com"),
        Mailbox("b", "example.org"),
        Mailbox("c", "Example.COM"),
        Mailbox("a", "EXAMPLE.com"),  # duplicate of the first: domains are case-insensitive
        Mailbox("A", "example.com"),  # local parts are case-sensitive (RFC 5321 §2.4)
        Mailbox("u", "bücher.de"),
        Mailbox("u", "xn--bcher-kva.de"),  # the same mailbox in A-label form
    ]
    assert split_by_domain(rcpts) == {
        "example.com": ["a@example.com", "c@Example.COM", "A@example.com"],
        "example.org": ["b@example.org"],
        "xn--bcher-kva.de": ["u@bücher.de"],
    }
    assert list(split_by_domain(rcpts)) == ["example.com", "example.org", "xn--bcher-kva.de"]


def test_split_by_domain_empty() -> None:
    assert split_by_domain([]) == {}


@FUZZ
@given(st.lists(st.tuples(st.sampled_from("abAB"), st.sampled_from(["x.com", "X.COM", "y.org"]))))
def test_split_by_domain_keeps_every_distinct_recipient_once(pairs: list[tuple[str, str]]) -> None:
    rcpts = [Mailbox(local, domain) for local, domain in pairs]
    groups = split_by_domain(rcpts)
    distinct = {(local, domain.lower()) for local, domain in pairs}
    assert sum(len(addresses) for addresses in groups.values()) == len(distinct)
    for destination, addresses in groups.items():
        assert destination == destination.lower()
        assert all(address.lower().endswith("@" + destination) for address in addresses)
