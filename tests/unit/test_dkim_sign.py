"""shared/dkim_sign.py: which domain signs, which fields, the body hash, and signatures that
an independent verifier (tests/servers/dkim_verify.py) accepts."""

import asyncio
import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ingress.dkim_sign import EXECUTOR_BYTES, IngressSigner
from shared.dkim_keys import DkimKey, KeyRing
from shared.dkim_sign import (
    Signer,
    SigningError,
    from_domain,
    parse_header,
    relaxed_body_hash,
    signed_fields,
)
from shared.message import Mailbox
from tests.servers.dkim_records import txt_record
from tests.servers.dkim_verify import Verdict, verify
from tests.unit.fuzz import FUZZ
from tests.unit.test_dkim_verify import RFC8463_KEYS, RFC8463_MESSAGE

# RFC 8032 §7.1 test 1: the Ed25519 key of RFC 8463's example (selector brisbane)
RFC8032_SEED = base64.b64decode("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")

MESSAGE = (
    b"Received: from client.test ([192.0.2.1]) by submit.test; Sun, 29 Nov 2026 08:00:00 +0000\r\n"
    b"Return-Path: <bounces@example.com>\r\n"
    b"From: Example News <news@Example.COM>\r\n"
    b"To: a@dest.test,\r\n  b@dest.test\r\n"
    b"Subject:  Weekly   news \r\n"
    b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n"
    b"Message-ID: <n1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://example.com/u/1>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"X-Campaign: 42\r\n"
    b"\r\n"
    b"Hello  there,\t\r\nthe news.  \r\n\r\n\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def ring(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> KeyRing:
    return KeyRing(
        [
            DkimKey("example.com", "r2026", rsa_key, Path("r")),
            DkimKey("example.com", "e2026", ed_key, Path("e")),
            DkimKey("example.net", "r2026", rsa_key, Path("n")),
        ]
    )


@pytest.fixture(scope="module")
def dns(rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey) -> dict[str, str]:
    return {
        "r2026._domainkey.example.com": txt_record(rsa_key),
        "e2026._domainkey.example.com": txt_record(ed_key),
        "r2026._domainkey.example.net": txt_record(rsa_key),
    }


def sender(address: str) -> Mailbox:
    local, _, domain = address.rpartition("@")
    return Mailbox(local, domain)


def signed(ring: KeyRing, message: bytes, envelope: Mailbox | None = None) -> bytes:
    fields, result = Signer(ring).sign(message, envelope)
    assert result == "signed"
    return fields + message


def results(message: bytes, dns: dict[str, str]) -> list[tuple[str, str, str]]:
    return [(v.algorithm, v.domain, v.reason) for v in verify(message, dns.__getitem__)]


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- which domain signs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        (b"From: a@Example.COM\r\n", "example.com"),
        (b'From: "Doe, Jane" <jane@example.com> (comment)\r\n', "example.com"),
        (b"From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\n", "example.com"),
        (b"From: Jane\r\n <jane@mail.example.com>\r\n", "mail.example.com"),
        ("From: ü@Bücher.example\r\n".encode(), "xn--bcher-kva.example"),
        (b"To: a@example.org\r\n", None),  # no From:
        (b"From: a@example.com\r\nFrom: b@example.org\r\n", None),  # two From fields
        (b"From: a@example.com, b@example.org\r\n", None),  # two authors
        (b"From: undisclosed-recipients:;\r\n", None),  # a group, no address
        (b"From: jane\r\n", None),  # no domain
        (b"From: jane@\r\n", None),
    ],
)
def test_the_from_domain(header: bytes, domain: str | None) -> None:
    assert from_domain(parse_header(header)) == domain


def test_the_envelope_sender_signs_when_from_has_no_single_domain(
    ring: KeyRing, dns: dict[str, str]
) -> None:
    message = b"From: a@example.org, b@example.org\r\nSubject: s\r\n\r\nbody\r\n"
    assert results(signed(ring, message, sender("bounce@example.net")), dns) == [
        ("rsa-sha256", "example.net", "pass")
    ]
    # a From: domain wins over the envelope
    one = b"From: a@example.net\r\nSubject: s\r\n\r\nbody\r\n"
    assert [d for _, d, _ in results(signed(ring, one, sender("x@example.com")), dns)] == [
        "example.net"
    ]


def test_a_subdomain_signs_with_its_parent_key(ring: KeyRing, dns: dict[str, str]) -> None:
    message = b"From: a@news.example.com\r\n\r\nbody\r\n"
    assert results(signed(ring, message), dns) == [
        ("ed25519-sha256", "example.com", "pass"),
        ("rsa-sha256", "example.com", "pass"),
    ]


@pytest.mark.parametrize(
    ("message", "envelope"),
    [
        (b"From: a@example.org\r\n\r\nbody\r\n", sender("a@example.com")),  # From decides
        (b"Subject: no From\r\n\r\nbody\r\n", sender("a@example.org")),
        (b"Subject: no From\r\n\r\nbody\r\n", None),  # and the null sender <>
    ],
)
def test_a_domain_without_keys_passes_unsigned(
    ring: KeyRing, message: bytes, envelope: Mailbox | None
) -> None:
    assert Signer(ring).sign(message, envelope) == (b"", "no_key")


# --- which fields ---------------------------------------------------------------------


def test_the_signed_fields() -> None:
    names = signed_fields(parse_header(MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n"))
    assert b":".join(names) == (
        b"from:to:subject:date:message-id:mime-version:content-type:list-unsubscribe:"
        b"list-unsubscribe-post:from:to:subject"
    )


def test_fields_present_twice_are_signed_twice() -> None:
    header = b"To: a@x.test\r\nFrom: f@example.com\r\nTo: b@x.test\r\nReply-To: r@x.test\r\n"
    assert signed_fields(parse_header(header)) == [
        b"to", b"from", b"to", b"reply-to", b"from", b"reply-to", b"to",
    ]  # fmt: skip


def test_from_is_signed_even_when_absent() -> None:
    assert signed_fields(parse_header(b"Subject: x\r\n")) == [b"subject", b"from", b"subject"]


def test_the_signature_covers_what_it_lists(ring: KeyRing, dns: dict[str, str]) -> None:
    message = signed(ring, MESSAGE)
    assert results(message, dns) == [
        ("ed25519-sha256", "example.com", "pass"),
        ("rsa-sha256", "example.com", "pass"),
    ]
    for old, new, reason in [
        (b"the news.", b"the views.", "body hash mismatch"),
        (b"Weekly   news", b"Daily news", "signature mismatch"),
        (b"List-Unsubscribe: <https", b"List-Unsubscribe: <http", "signature mismatch"),
        (b"From: Example", b"Subject: injected\r\nFrom: Example", "signature mismatch"),
        (b"To: a@dest", b"To: eve@evil.test\r\nTo: a@dest", "signature mismatch"),
    ]:
        assert {r for _, _, r in results(message.replace(old, new), dns)} == {reason}, old
    # not signed: the trace fields relays add, and fields outside the list
    for old, new in [
        (b"by submit.test", b"by other.test"),
        (b"<bounces@example.com>", b"<other@example.com>"),
        (b"X-Campaign: 42", b"X-Campaign: 43"),
    ]:
        assert {r for _, _, r in results(message.replace(old, new), dns)} == {"pass"}, old


def test_it_survives_relaying(ring: KeyRing, dns: dict[str, str]) -> None:
    """What a worker sends: our Received field on top; the next hop adds its own."""
    message = signed(ring, MESSAGE)
    ours = b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test with ESMTP id X; now\r\n"
    theirs = b"Received: from mx.test by mx.dest.test; later\r\n"
    assert {r for _, _, r in results(theirs + ours + message, dns)} == {"pass"}


def test_long_names_fold_where_the_syntax_allows(
    rsa_key: rsa.RSAPrivateKey, dns: dict[str, str]
) -> None:
    domain = "a-rather-long-label-of-sixty-three-characters-for-this-test-xyz." * 2 + "example"
    selector = "s" + "-selector" * 7
    ring = KeyRing([DkimKey(domain, selector, rsa_key, Path("long"))])
    message = signed(ring, f"From: x@{domain}\r\n\r\nbody\r\n".encode())
    header = message.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in header.split(b"\r\n")) <= 78 + len(domain)
    lookup = {f"{selector}._domainkey.{domain}": txt_record(rsa_key)}
    assert results(message, lookup) == [("rsa-sha256", domain, "pass")]


# --- the body hash --------------------------------------------------------------------


def test_the_body_hash_of_rfc8463() -> None:
    body = RFC8463_MESSAGE.split(b"\r\n\r\n", 1)[1]
    assert (
        base64.b64encode(relaxed_body_hash(body)) == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    )


@pytest.mark.parametrize(
    ("body", "canonical"),
    [
        (b"", b""),
        (b"\r\n\r\n\r\n", b""),
        (b"  \r\n\t\r\n", b""),  # lines of whitespace are empty lines
        (b"a", b"a\r\n"),  # a CRLF is added
        (b"a \t", b"a\r\n"),
        (b"a\r\n\r\nb\r\n\r\n", b"a\r\n\r\nb\r\n"),
        (b"x\r\r\n", b"x\r\r\n"),  # a bare CR is text
        (b" lead\t and  trail \r\n", b" lead and trail\r\n"),
    ],
)
def test_body_canonical_forms(body: bytes, canonical: bytes) -> None:
    for slice_bytes in (1, 2, 3, 64 * 1024):
        assert relaxed_body_hash(body, slice_bytes) == hashlib.sha256(canonical).digest()


_LINES = st.lists(st.text(alphabet="ab \t\r.", max_size=12), max_size=12)


@FUZZ
@given(lines=_LINES, slice_bytes=st.integers(1, 40))
def test_the_body_hash_is_dkimpys(lines: list[str], slice_bytes: int) -> None:
    """The same canonical form as dkimpy's Relaxed.canonicalize_body, whatever the slices,
    for the CRLF-ended bodies the ingress stores."""
    body = "".join(line + "\r\n" for line in lines).encode()
    expected = hashlib.sha256(Relaxed.canonicalize_body(body)).digest()
    assert relaxed_body_hash(body, slice_bytes) == expected


# --- signing what was signed before, and what cannot be signed ---------------------------


def test_a_signature_of_the_same_domain_and_selector_is_not_repeated(
    ring: KeyRing, dns: dict[str, str]
) -> None:
    once = signed(ring, MESSAGE)
    assert Signer(ring).sign(once, None) == (b"", "already_signed")
    # one key of two already signed (say, the message came back after a rotation): the
    # other still signs
    (rsa_field,) = [f for f in once.split(b"DKIM-Signature:") if b"a=rsa-sha256" in f]
    partly = b"DKIM-Signature:" + rsa_field
    fields, result = Signer(ring).sign(partly, None)
    assert result == "signed"
    assert fields.count(b"DKIM-Signature:") == 1
    assert b"a=ed25519-sha256" in fields
    assert {r for _, _, r in results(fields + partly, dns)} == {"pass"}


def test_domain_and_selector_compare_without_case(ring: KeyRing) -> None:
    both = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=EXAMPLE.com; s=R2026; bh=; b=\r\n"
        b"DKIM-Signature: v=1;\r\n a=ed25519-sha256; d=example.COM;\r\n s=E2026; bh=; b=\r\n"
    )
    assert Signer(ring).sign(both + MESSAGE, None) == (b"", "already_signed")


def test_another_domains_signature_does_not_count(ring: KeyRing) -> None:
    other = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=r2026; b=; bh=\r\n" + MESSAGE
    malformed = b"DKIM-Signature: v=1; d=example.com; d=twice\r\n" + MESSAGE
    for message in (other, malformed):
        assert Signer(ring).sign(message, None)[1] == "signed"


def test_the_rfc8032_key_signs_what_rfc8463_publishes(dns: dict[str, str]) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    ring = KeyRing([DkimKey("football.example.com", "brisbane", key, Path("k"))])
    message = signed(ring, RFC8463_MESSAGE)
    assert b"bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;" in message
    verdicts = verify(message, RFC8463_KEYS.__getitem__)
    assert verdicts == [Verdict("football.example.com", "brisbane", "ed25519-sha256", True, "pass")]


def test_a_header_that_does_not_parse_is_refused() -> None:
    with pytest.raises(SigningError, match="Unexpected characters in RFC822 header"):
        parse_header(b"From: a@example.com\r\nnot a field\r\n")


def test_what_cannot_be_signed_is_stored_unsigned_and_counted(ring: KeyRing) -> None:
    bad = b"From: a@example.com\r\nnot a field\r\n\r\nbody\r\n"
    before = counter("mxfleet_ingress_dkim_messages_total", result="failed")
    assert asyncio.run(IngressSigner(ring).signatures(bad, None, "QID")) == b""
    assert counter("mxfleet_ingress_dkim_messages_total", result="failed") == before + 1


def test_the_async_path_counts_and_signs_big_messages_off_the_loop(
    ring: KeyRing, dns: dict[str, str]
) -> None:
    big = MESSAGE + b"0123456789abcdef" * (EXECUTOR_BYTES // 16)
    small_before = counter("mxfleet_ingress_dkim_messages_total", result="signed")
    rsa_before = counter("mxfleet_ingress_dkim_signatures_total", algorithm="rsa-sha256")
    ed_before = counter("mxfleet_ingress_dkim_signatures_total", algorithm="ed25519-sha256")

    async def both() -> list[bytes]:
        return [await IngressSigner(ring).signatures(m, None, "QID") for m in (MESSAGE, big)]

    for fields, message in zip(asyncio.run(both()), (MESSAGE, big), strict=True):
        assert {r for _, _, r in results(fields + message, dns)} == {"pass"}
    assert counter("mxfleet_ingress_dkim_messages_total", result="signed") == small_before + 2
    assert counter("mxfleet_ingress_dkim_signatures_total", algorithm="rsa-sha256") == (
        rsa_before + 2
    )
    assert counter("mxfleet_ingress_dkim_signatures_total", algorithm="ed25519-sha256") == (
        ed_before + 2
    )


def test_without_keys_nothing_is_signed_or_counted() -> None:
    before = counter("mxfleet_ingress_dkim_messages_total", result="no_key")
    assert asyncio.run(IngressSigner(KeyRing([])).signatures(MESSAGE, None, "QID")) == b""
    assert counter("mxfleet_ingress_dkim_messages_total", result="no_key") == before
