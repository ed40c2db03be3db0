"""ingress/sasl.py: the PLAIN (RFC 4616) and LOGIN exchanges of SMTP AUTH (RFC 4954)."""

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.sasl import MECHANISMS, AuthExchange
from shared import replies
from shared.replies import Reply
from tests.unit.fuzz import FUZZ

EMPTY = b"334 \r\n"
USERNAME = b"334 VXNlcm5hbWU6\r\n"  # base64("Username:")
PASSWORD = b"334 UGFzc3dvcmQ6\r\n"  # base64("Password:")


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def invalid(reason: str) -> Reply:
    return replies.SYNTAX_ERROR.with_text(f"Invalid AUTH response: {reason}")


def test_mechanisms() -> None:
    assert MECHANISMS == ("PLAIN", "LOGIN")


def test_plain_with_a_challenge() -> None:
    exchange, step = AuthExchange.start("PLAIN")
    assert step == EMPTY
    assert exchange.mechanism == "PLAIN"
    assert exchange.respond(b64(b"\x00alice\x00s3cret")) is None
    assert (exchange.user, exchange.password) == ("alice", "s3cret")


@pytest.mark.parametrize("arg", ["PLAIN ", "plain ", "Plain "])
def test_plain_with_an_initial_response(arg: str) -> None:
    exchange, step = AuthExchange.start(arg + b64(b"alice\x00alice\x00pw").decode())
    assert step is None
    assert (exchange.user, exchange.password) == ("alice", "pw")


def test_plain_utf8_credentials() -> None:
    exchange, step = AuthExchange.start("PLAIN " + b64("\x00jürgen\x00pässwörd".encode()).decode())
    assert step is None
    assert (exchange.user, exchange.password) == ("jürgen", "pässwörd")


def test_plain_empty_password() -> None:
    exchange, step = AuthExchange.start("PLAIN " + b64(b"\x00alice\x00").decode())
    assert step is None
    assert (exchange.user, exchange.password) == ("alice", "")


def test_login() -> None:
    exchange, step = AuthExchange.start("LOGIN")
    assert step == USERNAME
    assert exchange.respond(b64(b"alice")) == PASSWORD
    assert exchange.respond(b64(b"s3cret")) is None
    assert (exchange.user, exchange.password) == ("alice", "s3cret")


def test_login_with_an_initial_response() -> None:
    exchange, step = AuthExchange.start("login " + b64(b"alice").decode())
    assert step == PASSWORD
    assert exchange.respond(b64(b"pw")) is None
    assert (exchange.user, exchange.password) == ("alice", "pw")


def test_equals_sign_is_an_empty_initial_response() -> None:
    # RFC 4954 §4.
    exchange, step = AuthExchange.start("LOGIN =")
    assert step == PASSWORD
    assert exchange.user == ""
    _, plain_step = AuthExchange.start("PLAIN =")
    assert plain_step == invalid("malformed PLAIN response")


@pytest.mark.parametrize("arg", ["CRAM-MD5", "XOAUTH2 dG9rZW4=", "", " PLAIN", "PLAINX"])
def test_unknown_mechanism(arg: str) -> None:
    _, step = AuthExchange.start(arg)
    assert step == replies.AUTH_MECHANISM


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_cancel(mechanism: str) -> None:
    exchange, _ = AuthExchange.start(mechanism)
    assert exchange.respond(b"*") == replies.AUTH_CANCELLED


def test_cancel_as_initial_response() -> None:
    _, step = AuthExchange.start("PLAIN *")
    assert step == replies.AUTH_CANCELLED


@pytest.mark.parametrize(
    ("mechanism", "line", "reply"),
    [
        ("PLAIN", b"!!!", invalid("invalid base64")),
        ("PLAIN", b"YWJj", invalid("malformed PLAIN response")),  # "abc"
        ("PLAIN", b64(b"a\x00b"), invalid("malformed PLAIN response")),
        ("PLAIN", b64(b"a\x00b\x00c\x00d"), invalid("malformed PLAIN response")),
        (
            "PLAIN",
            b64(b"admin\x00alice\x00pw"),
            invalid("authorization identity differs from authentication identity"),
        ),
        ("PLAIN", b"YWJj\r\n", invalid("invalid base64")),
        ("PLAIN", "ÿ".encode(), invalid("invalid base64")),
        ("LOGIN", b"=", invalid("invalid base64")),
        ("LOGIN", b"YQ", invalid("invalid base64")),  # missing padding
    ],
)
def test_malformed_responses(mechanism: str, line: bytes, reply: Reply) -> None:
    exchange, _ = AuthExchange.start(mechanism)
    assert exchange.respond(line) == reply


def test_login_user_that_is_not_utf8() -> None:
    exchange, _ = AuthExchange.start("LOGIN")
    with pytest.raises(UnicodeDecodeError) as info:
        b"\xff".decode("utf-8")
    assert exchange.respond(b64(b"\xff")) == invalid(str(info.value))


@FUZZ
@given(st.sampled_from(MECHANISMS), st.lists(st.binary(max_size=60), min_size=1, max_size=3))
def test_arbitrary_responses_never_raise(mechanism: str, lines: list[bytes]) -> None:
    exchange, step = AuthExchange.start(mechanism)
    for line in lines:
        step = exchange.respond(line)
        assert step is None or step in (PASSWORD,) or isinstance(step, Reply)
        if isinstance(step, Reply):
            assert step.code == 501


@FUZZ
@given(st.text(max_size=60))
def test_arbitrary_auth_arguments_never_raise(arg: str) -> None:
    _, step = AuthExchange.start(arg)
    assert step is None or isinstance(step, bytes | Reply)
