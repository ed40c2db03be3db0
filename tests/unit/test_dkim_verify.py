"""tests/servers/dkim_verify.py, the verifier the DKIM tests trust: it passes RFC 8463's
example and fails what it must."""

import pytest

from tests.servers.dkim_verify import canon_body, canon_header, verify

# RFC 8463 Appendix A.3: one message signed with Ed25519 (A.1's key, RFC 8032 §7.1 test 1)
# and with a 1024-bit RSA key; A.2 publishes both.
RFC8463_SIGNATURES = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
)
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RFC8463_KEYS = {
    "brisbane._domainkey.football.example.com": (
        "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    ),
    "test._domainkey.football.example.com": (
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a"
        "5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMK"
        "rM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
    ),
}
RFC8463 = RFC8463_SIGNATURES + RFC8463_MESSAGE


def reasons(message: bytes, keys: dict[str, str] = RFC8463_KEYS) -> list[tuple[str, str]]:
    return [(verdict.selector, verdict.reason) for verdict in verify(message, keys.__getitem__)]


def test_rfc8463_example_verifies() -> None:
    verdicts = verify(RFC8463, RFC8463_KEYS.__getitem__)
    assert [(v.algorithm, v.domain, v.selector, v.ok) for v in verdicts] == [
        ("ed25519-sha256", "football.example.com", "brisbane", True),
        ("rsa-sha256", "football.example.com", "test", True),
    ]


def test_it_survives_a_received_field_and_refolding() -> None:
    received = b"Received: from a.example (a.example [192.0.2.1])\r\n\tby mx.test; now\r\n"
    refolded = RFC8463.replace(b"Subject: Is dinner ready?", b"Subject:  Is\r\n  dinner ready? ")
    assert reasons(received + refolded) == [("brisbane", "pass"), ("test", "pass")]


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (b"Are you hungry", b"Are you thirsty", "body hash mismatch"),
        (b"Joe.\r\n", b"Joe.\r\nPS\r\n", "body hash mismatch"),
        (b"Subject: Is dinner ready?", b"Subject: Is lunch ready?", "signature mismatch"),
        (b"To: Suzie Q", b"To: Suzy Q", "signature mismatch"),
        # From is signed twice: a second one added above it breaks the signature
        (b"From: Joe", b"From: Eve <eve@example.net>\r\nFrom: Joe", "signature mismatch"),
    ],
)
def test_a_changed_message_fails(old: bytes, new: bytes, reason: str) -> None:
    assert RFC8463.count(old) == 1
    assert reasons(RFC8463.replace(old, new)) == [("brisbane", reason), ("test", reason)]


def test_a_changed_signature_fails() -> None:
    tampered = RFC8463.replace(b"s=brisbane; t=1528637909;", b"s=brisbane; t=1528637910;")
    assert reasons(tampered) == [("brisbane", "signature mismatch"), ("test", "pass")]


def test_a_wrong_or_revoked_key_fails() -> None:
    swapped = {
        "brisbane._domainkey.football.example.com": RFC8463_KEYS[
            "test._domainkey.football.example.com"
        ],
        "test._domainkey.football.example.com": "v=DKIM1; k=rsa; p=",
    }
    assert reasons(RFC8463, swapped) == [
        ("brisbane", "key type k=rsa does not fit a=ed25519-sha256"),
        ("test", "no key (revoked)"),
    ]


def test_a_signature_without_from_fails() -> None:
    unsigned_from = RFC8463.replace(b"h=from : to :", b"h=to :").replace(b" from :", b"")
    assert {reason for _, reason in reasons(unsigned_from)} == {"From: not signed"}


def test_canonical_forms() -> None:
    # RFC 6376 §3.4.5's example
    assert canon_header(b"A: X\r\n", relaxed=True) == b"a:X\r\n"
    assert canon_header(b"B : Y\t\r\n\tZ  \r\n", relaxed=True) == b"b:Y Z\r\n"
    assert canon_body(b" C \r\nD \t E\r\n\r\n\r\n", relaxed=True) == b" C\r\nD E\r\n"
    assert canon_body(b" C \r\nD \t E\r\n\r\n\r\n", relaxed=False) == b" C \r\nD \t E\r\n"
    assert canon_body(b"", relaxed=True) == b""
    assert canon_body(b"\r\n\r\n", relaxed=False) == b"\r\n"
