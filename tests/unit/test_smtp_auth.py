"""workers/smtp_auth.py: the credentials file, mechanism choice, PLAIN/LOGIN, the exchange."""

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.sasl import AuthExchange
from shared.replies import Reply
from tests.unit.fuzz import FUZZ
from workers import smtp_auth
from workers.smtp_auth import (
    AuthFailed,
    Credentials,
    advertised_mechanisms,
    authenticate,
    choose_mechanism,
    exchange,
    load_credentials,
    login_responses,
    plain_response,
    rejected,
)

USER = Credentials("relay@example.test", "s3cret:with:colons")
EHLO_BOTH = Reply(250, "2.0.0", "smarthost.test\nPIPELINING\nAUTH PLAIN LOGIN\n8BITMIME")
EHLO_LOGIN = Reply(250, "2.0.0", "smarthost.test\nAUTH LOGIN")
OK = Reply(235, "2.7.0", "Authentication successful")
BAD = Reply(535, "5.7.8", "Authentication credentials invalid")
USERNAME = Reply(334, "", "VXNlcm5hbWU6")
PASSWORD = Reply(334, "", "UGFzc3dvcmQ6")
# SAFE (RFC 4616 §2): any UTF-8 but NUL; surrogates cannot be encoded at all.
SAFE = st.text(st.characters(exclude_characters="\0", exclude_categories=["Cs"]), min_size=1)


class Server:
    """A scripted server: records the lines sent, answers with the next reply."""

    def __init__(self, *answers: Reply) -> None:
        self.answers = list(answers)
        self.lines: list[bytes] = []

    def __call__(self, line: bytes) -> Reply:
        self.lines.append(line)
        return self.answers.pop(0)


# Credentials and the credentials file


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "smarthost.auth"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_credentials_file_first_line_after_comments_and_blanks(tmp_path: Path) -> None:
    path = write(tmp_path, "# smarthost login\n\n   \n  # indented comment\nme:pa:ss \r\nx:y\n")
    assert load_credentials(path) == Credentials("me", "pa:ss ")  # only the line end goes


def test_credentials_file_without_final_newline(tmp_path: Path) -> None:
    assert load_credentials(write(tmp_path, "üser:pässword")) == Credentials("üser", "pässword")


def test_only_lf_and_crlf_end_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "me:a\x0cb\x1cc\u2028d\re\r\n")
    assert load_credentials(path) == Credentials("me", "a\x0cb\x1cc\u2028d\re")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no user:password line"),
        ("# only a comment\n\n", "no user:password line"),
        ("hunter2\n", "line 1: expected user:password"),
        ("# c\nuser:\n", "line 2: user and password must not be empty"),
        (":hunter2\n", "line 1: user and password must not be empty"),
        ("user:hunter\0two\n", "line 1: user and password must not contain NUL"),
        (b"user:hunter\xff\xfe\n", "unreadable"),
    ],
)
def test_malformed_credentials_file_names_the_file(
    tmp_path: Path, text: str | bytes, why: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match=why) as caught:
        load_credentials(path)
    assert str(path) in str(caught.value)
    assert "hunter" not in str(caught.value)  # the password never shows


def test_missing_credentials_file(tmp_path: Path) -> None:
    path = tmp_path / "missing"
    with pytest.raises(ValueError, match="unreadable") as caught:
        load_credentials(path)
    assert str(path) in str(caught.value)


def test_password_is_not_in_repr() -> None:
    assert "s3cret" not in repr(USER)
    assert "relay@example.test" in repr(USER)


# Encoders


def test_plain_response_rfc4616_example() -> None:
    # RFC 4616 §4: "\0tim\0tanstaaftanstaaf" (no authzid)
    assert plain_response(Credentials("tim", "tanstaaftanstaaf")) == "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"


def test_plain_and_login_encode_utf8() -> None:
    credentials = Credentials("ü", "pä:ss")
    assert base64.b64decode(plain_response(credentials)) == "\0ü\0pä:ss".encode()
    user, password = login_responses(credentials)
    assert (base64.b64decode(user), base64.b64decode(password)) == ("ü".encode(), b"p\xc3\xa4:ss")


@FUZZ
@given(user=SAFE, password=SAFE)
def test_the_ingress_decodes_what_the_client_encodes(user: str, password: str) -> None:
    credentials = Credentials(user, password)
    plain, step = AuthExchange.start(f"PLAIN {plain_response(credentials)}")
    assert step is None
    assert (plain.user, plain.password) == (user, password)
    login, _ = AuthExchange.start("LOGIN")
    user_line, password_line = login_responses(credentials)
    login.respond(user_line.encode())
    assert login.respond(password_line.encode()) is None
    assert (login.user, login.password) == (user, password)


def test_exchange_lines() -> None:
    command, responses = exchange("PLAIN", USER)
    assert command == f"AUTH PLAIN {plain_response(USER)}\r\n".encode()
    assert responses == ()
    command, responses = exchange("LOGIN", USER)
    assert command == b"AUTH LOGIN\r\n"
    assert responses == tuple(f"{line}\r\n".encode() for line in login_responses(USER))


# Mechanisms (RFC 4954 §3)


@pytest.mark.parametrize(
    ("lines", "mechanisms"),
    [
        ("PIPELINING\nAUTH PLAIN LOGIN", {"PLAIN", "LOGIN"}),
        ("auth login cram-md5", {"LOGIN", "CRAM-MD5"}),
        ("AUTH=LOGIN PLAIN", {"LOGIN", "PLAIN"}),  # pre-RFC form
        ("AUTH LOGIN\nAUTH=PLAIN", {"LOGIN", "PLAIN"}),
        ("AUTH", set()),
        ("PIPELINING\nAUTHX PLAIN", set()),
        ("", set()),
    ],
)
def test_advertised_mechanisms(lines: str, mechanisms: set[str]) -> None:
    assert advertised_mechanisms(Reply(250, "2.0.0", f"smarthost.test\n{lines}")) == mechanisms


def test_the_greeting_line_is_not_an_extension() -> None:
    assert advertised_mechanisms(Reply(250, "2.0.0", "AUTH PLAIN")) == frozenset()


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ({"PLAIN", "LOGIN"}, "PLAIN"),
        ({"LOGIN", "CRAM-MD5"}, "LOGIN"),
        ({"plain"}, "PLAIN"),
        ({"CRAM-MD5", "PLAIN"}, "PLAIN"),
    ],
)
def test_plain_is_preferred(offered: set[str], chosen: str) -> None:
    assert choose_mechanism(offered) == chosen


@pytest.mark.parametrize("offered", [set(), {"CRAM-MD5", "XOAUTH2"}])
def test_no_usable_mechanism(offered: set[str]) -> None:
    with pytest.raises(ValueError, match="no supported AUTH mechanism"):
        choose_mechanism(offered)


# The exchange (RFC 4954 §4)


def test_plain_is_one_round_trip() -> None:
    server = Server(OK)
    assert authenticate(server, EHLO_BOTH, USER) == "PLAIN"
    assert server.lines == [f"AUTH PLAIN {plain_response(USER)}\r\n".encode()]


def test_login_answers_both_challenges() -> None:
    server = Server(USERNAME, PASSWORD, OK)
    assert authenticate(server, EHLO_LOGIN, USER) == "LOGIN"
    user, password = login_responses(USER)
    assert server.lines == [b"AUTH LOGIN\r\n", f"{user}\r\n".encode(), f"{password}\r\n".encode()]


@pytest.mark.parametrize(
    ("ehlo", "answers", "sent"),
    [
        (EHLO_BOTH, [BAD], 1),
        (EHLO_LOGIN, [USERNAME, BAD], 2),  # refused at the user name: no password sent
        (EHLO_LOGIN, [USERNAME, PASSWORD, BAD], 3),
    ],
)
def test_refused_credentials_are_transient(ehlo: Reply, answers: list[Reply], sent: int) -> None:
    server = Server(*answers)
    with pytest.raises(AuthFailed) as caught:
        authenticate(server, ehlo, USER)
    assert caught.value.reply == Reply(
        421,
        "4.7.8",
        "SASL authentication failed; server said: 535 5.7.8 Authentication credentials invalid",
    )
    assert len(server.lines) == sent


def test_an_unexpected_challenge_is_cancelled() -> None:
    server = Server(Reply(334, "", ""), Reply(501, "5.7.0", "Cancelled"))
    with pytest.raises(AuthFailed) as caught:
        authenticate(server, EHLO_BOTH, USER)
    assert server.lines[-1] == b"*\r\n"  # RFC 4954 §4
    assert (caught.value.reply.code, caught.value.reply.status) == (421, "4.7.0")


@pytest.mark.parametrize(
    ("ehlo", "reply"),
    [
        (None, smtp_auth.NOT_OFFERED),  # HELO: no extensions at all
        (Reply(250, "2.0.0", "smarthost.test\nPIPELINING"), smtp_auth.NOT_OFFERED),
        (
            Reply(250, "2.0.0", "smarthost.test\nAUTH CRAM-MD5 XOAUTH2"),
            smtp_auth.NO_MECHANISM.with_text(
                f"{smtp_auth.NO_MECHANISM.text}; server offers CRAM-MD5 XOAUTH2"
            ),
        ),
    ],
)
def test_nothing_is_sent_without_a_usable_mechanism(ehlo: Reply | None, reply: Reply) -> None:
    server = Server()
    with pytest.raises(AuthFailed) as caught:
        authenticate(server, ehlo, USER)
    assert caught.value.reply == reply
    assert caught.value.reply.is_transient
    assert server.lines == []


@pytest.mark.parametrize(
    ("server", "status"),
    [
        (Reply(535, "5.7.8", "Bad"), "4.7.8"),
        (Reply(454, "4.7.0", "Temporary authentication failure"), "4.7.0"),
        (Reply(534, "5.7.9", "Mechanism too weak"), "4.7.9"),
        (Reply(504, "5.5.4", "Unrecognized mechanism"), "4.7.0"),
        (Reply(501, "5.0.0", ""), "4.7.0"),
    ],
)
def test_rejected_is_always_4_7(server: Reply, status: str) -> None:
    reply = rejected(server)
    assert (reply.code, reply.status) == (421, status)
    assert str(server) in reply.text


def test_rejected_keeps_a_multiline_reply_on_one_line() -> None:
    reply = rejected(Reply(535, "5.7.8", "Bad credentials\nSee https://help.test"))
    assert "\n" not in reply.text
    assert "Bad credentials See https://help.test" in reply.text
