"""ingress/commands.py: command lines, MAIL FROM and RCPT TO paths and parameters."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.commands import CommandError, MailParams, parse_mail, parse_rcpt, split_command
from shared import replies
from shared.message import Mailbox
from shared.replies import Reply
from tests.unit.fuzz import FUZZ

MAIL_SYNTAX = replies.SYNTAX_ERROR.with_text("Syntax: FROM:<address>")
RCPT_SYNTAX = replies.SYNTAX_ERROR.with_text("Syntax: TO:<address>")
UNTERMINATED = replies.SYNTAX_ERROR.with_text("Unterminated address")


def refusal(call: object, *args: object, **kwargs: object) -> Reply:
    """The reply of the CommandError that ``call(*args, **kwargs)`` raises."""
    assert callable(call)
    with pytest.raises(CommandError) as info:
        call(*args, **kwargs)
    assert str(info.value) == str(info.value.reply)
    return info.value.reply


# --- split_command ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"MAIL FROM:<a@example.com>\r\n", ("MAIL", "FROM:<a@example.com>")),
        (b"ehlo client.example\r\n", ("EHLO", "client.example")),
        (b"Rcpt TO:<b@example.com>\n", ("RCPT", "TO:<b@example.com>")),
        (b"QUIT", ("QUIT", "")),
        (b"NOOP\r\n", ("NOOP", "")),
        (b"EHLO   spaced  \r\n", ("EHLO", "spaced")),
        (b"DATA \r\n", ("DATA", "")),
        (b"\r\n", ("", "")),
        (b"AUTH PLAIN dGVzdA==\r\n", ("AUTH", "PLAIN dGVzdA==")),
        ("MAIL FROM:<ü@example.com>\r\n".encode(), ("MAIL", "FROM:<ü@example.com>")),
    ],
)
def test_split_command(line: bytes, expected: tuple[str, str]) -> None:
    assert split_command(line) == expected


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"MAIL FROM:<\xff@x.com>\r\n", replies.SYNTAX_ERROR.with_text("Invalid UTF-8 in command")),
        (b"\xc3\r\n", replies.SYNTAX_ERROR.with_text("Invalid UTF-8 in command")),
        (b"NO\rOP\r\n", replies.SYNTAX_ERROR.with_text("Invalid character in command")),
        (b"NOOP\x00\r\n", replies.SYNTAX_ERROR.with_text("Invalid character in command")),
        (
            b"RCPT TO:<a@b.com>\x00x\r\n",
            replies.SYNTAX_ERROR.with_text("Invalid character in command"),
        ),
    ],
)
def test_split_command_refusals(line: bytes, reply: Reply) -> None:
    assert refusal(split_command, line) == reply


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=120),
        st.builds(
            lambda verb, rest: verb + rest,
            st.sampled_from([b"MAIL FROM:<", b"RCPT TO:<", b"EHLO ", b"AUTH "]),
            st.binary(max_size=80),
        ),
    )
)
def test_split_command_raises_only_command_error(line: bytes) -> None:
    try:
        verb, arg = split_command(line)
    except CommandError as exc:
        reply = exc.reply
    else:
        assert " " not in verb
        assert arg == arg.strip(" ")
        assert "\r" not in verb + arg
        assert "\x00" not in verb + arg
        return
    assert (reply.code, reply.status) == (replies.SYNTAX_ERROR.code, replies.SYNTAX_ERROR.status)


# --- MAIL FROM ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "esmtp", "sender", "params"),
    [
        ("FROM:<a@example.com>", False, Mailbox("a", "example.com"), MailParams()),
        ("from:<a@example.com>", False, Mailbox("a", "example.com"), MailParams()),
        ("FROM: <a@example.com>", False, Mailbox("a", "example.com"), MailParams()),
        ("FROM:<>", False, None, MailParams()),
        ("FROM:<> SIZE=0", True, None, MailParams(size=0)),
        (
            "FROM:<a@example.com> SIZE=1000 BODY=8BITMIME SMTPUTF8",
            True,
            Mailbox("a", "example.com"),
            MailParams(size=1000, body_8bit=True, smtputf8=True),
        ),
        (
            "FROM:<a@example.com>  size=12  body=7bit",
            True,
            Mailbox("a", "example.com"),
            MailParams(size=12, body_8bit=False),
        ),
        ("FROM:<a@example.com> AUTH=<>", True, Mailbox("a", "example.com"), MailParams()),
        (
            "FROM:<a@example.com> AUTH=someone@example.com",
            True,
            Mailbox("a", "example.com"),
            MailParams(),
        ),
        (
            "FROM:<ü@bücher.de> SMTPUTF8",
            True,
            Mailbox("ü", "bücher.de"),
            MailParams(smtputf8=True),
        ),
        ('FROM:<"a>b"@example.com>', False, Mailbox('"a>b"', "example.com"), MailParams()),
        ('FROM:<"a\\">"@example.com>', False, Mailbox('"a\\">"', "example.com"), MailParams()),
        ("FROM:<user%ext@example.com>", False, Mailbox("user%ext", "example.com"), MailParams()),
    ],
)
def test_parse_mail(arg: str, esmtp: bool, sender: Mailbox | None, params: MailParams) -> None:
    assert parse_mail(arg, esmtp=esmtp) == (sender, params)


def test_parse_mail_size_of_19_digits() -> None:
    assert parse_mail("FROM:<> SIZE=" + "9" * 19, esmtp=True) == (None, MailParams(size=10**19 - 1))


@pytest.mark.parametrize(
    ("arg", "esmtp", "reply"),
    [
        ("FROM:a@example.com", True, MAIL_SYNTAX),
        ("TO:<a@example.com>", True, MAIL_SYNTAX),
        ("", True, MAIL_SYNTAX),
        ("FROM", True, MAIL_SYNTAX),
        ("FROM:<a@example.com", True, UNTERMINATED),
        ("FROM:<", True, UNTERMINATED),
        ('FROM:<"a>@example.com>', True, UNTERMINATED),
        ("FROM:<a@example.com>SIZE=10", True, MAIL_SYNTAX),
        ("FROM:<a@example.com>>", True, MAIL_SYNTAX),
        (
            "FROM:<a@example.com> SIZE=10",
            False,
            replies.BAD_PARAMETER.with_text("Parameters need EHLO"),
        ),
        (
            "FROM:<a@example.com> FOO=1",
            True,
            replies.BAD_PARAMETER.with_text("Unsupported parameter FOO"),
        ),
        (
            "FROM:<a@example.com> SIZE=abc",
            True,
            replies.BAD_PARAMETER.with_text("Unsupported parameter SIZE"),
        ),
        ("FROM:<> SIZE", True, replies.BAD_PARAMETER.with_text("Unsupported parameter SIZE")),
        ("FROM:<> SIZE=-1", True, replies.BAD_PARAMETER.with_text("Unsupported parameter SIZE")),
        (
            "FROM:<> SIZE=" + "9" * 20,
            True,
            replies.BAD_PARAMETER.with_text("Unsupported parameter SIZE"),
        ),
        (
            "FROM:<> BODY=BINARYMIME",
            True,
            replies.BAD_PARAMETER.with_text("Unsupported parameter BODY"),
        ),
        ("FROM:<> BODY", True, replies.BAD_PARAMETER.with_text("Unsupported parameter BODY")),
        (
            "FROM:<> SMTPUTF8=yes",
            True,
            replies.BAD_PARAMETER.with_text("Unsupported parameter SMTPUTF8"),
        ),
        ("FROM:<> AUTH", True, replies.BAD_PARAMETER.with_text("Unsupported parameter AUTH")),
        ("FROM:<> SI%ZE=1", True, replies.BAD_PARAMETER),
        ("FROM:<> =1", True, replies.BAD_PARAMETER),
        ("FROM:<> SÏZE=1", True, replies.BAD_PARAMETER),
        (
            "FROM:<a>",
            True,
            replies.BAD_SENDER.with_text("Bad sender address syntax: not a valid mailbox"),
        ),
        (
            "FROM:<a@localhost>",
            True,
            replies.BAD_SENDER.with_text("Bad sender address syntax: domain not fully qualified"),
        ),
        (
            "FROM:<@relay.example:a@example.com>",
            True,
            replies.BAD_SENDER.with_text("Bad sender address syntax: not a valid mailbox"),
        ),
        (
            "FROM:<ü@example.com>",
            True,
            replies.NEED_SMTPUTF8.with_text(
                "Non-ASCII address requires SMTPUTF8: non-ASCII address without SMTPUTF8"
            ),
        ),
    ],
)
def test_parse_mail_refusals(arg: str, esmtp: bool, reply: Reply) -> None:
    assert refusal(parse_mail, arg, esmtp=esmtp) == reply


def test_parse_mail_bad_non_ascii_sender_under_smtputf8_is_bad_syntax() -> None:
    # SMTPUTF8 was given, so "requires SMTPUTF8" is the wrong diagnosis: the address is
    # simply malformed (parse_rcpt makes the same distinction).
    reply = refusal(parse_mail, "FROM:<ü> SMTPUTF8", esmtp=True)
    assert reply == replies.BAD_SENDER.with_text("Bad sender address syntax: not a valid mailbox")


# --- RCPT TO ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "utf8", "rcpt"),
    [
        ("TO:<b@example.com>", False, Mailbox("b", "example.com")),
        ("to: <b@Example.COM>", False, Mailbox("b", "Example.COM")),
        ("TO:<ü@bücher.de>", True, Mailbox("ü", "bücher.de")),
        ('TO:<"user@ext"@example.com>', False, Mailbox('"user@ext"', "example.com")),
        ("TO:<ext!user@example.com>", False, Mailbox("ext!user", "example.com")),
    ],
)
def test_parse_rcpt(arg: str, utf8: bool, rcpt: Mailbox) -> None:
    assert parse_rcpt(arg, utf8=utf8) == rcpt


@pytest.mark.parametrize(
    ("arg", "utf8", "reply"),
    [
        ("TO:b@example.com", False, RCPT_SYNTAX),
        ("FROM:<b@example.com>", False, RCPT_SYNTAX),
        ("TO:<b@example.com", False, UNTERMINATED),
        (
            "TO:<b@example.com> NOTIFY=NEVER",
            False,
            replies.BAD_PARAMETER.with_text("Unsupported parameter NOTIFY=NEVER"),
        ),
        ("TO:<>", False, replies.BAD_ADDRESS.with_text("Bad address syntax: not a valid mailbox")),
        (
            "TO:<@relay.example:b@example.com>",
            False,
            replies.BAD_ADDRESS.with_text("Bad address syntax: not a valid mailbox"),
        ),
        (
            "TO:<b@[192.0.2.1]>",
            False,
            replies.BAD_ADDRESS.with_text("Bad address syntax: not a valid mailbox"),
        ),
        (
            "TO:<b@example>",
            False,
            replies.BAD_ADDRESS.with_text("Bad address syntax: domain not fully qualified"),
        ),
        (
            "TO:<ü@example.com>",
            False,
            replies.NEED_SMTPUTF8.with_text(
                "Non-ASCII address requires SMTPUTF8: non-ASCII address without SMTPUTF8"
            ),
        ),
        ("TO:<ü>", True, replies.BAD_ADDRESS.with_text("Bad address syntax: not a valid mailbox")),
    ],
)
def test_parse_rcpt_refusals(arg: str, utf8: bool, reply: Reply) -> None:
    assert refusal(parse_rcpt, arg, utf8=utf8) == reply


# --- arbitrary input ----------------------------------------------------------------------

arg_st = st.one_of(
    st.text(max_size=80),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(["FROM:<", "TO:<", "FROM:<>", "FROM:<a@b.cd>", 'FROM:<"', "TO:<a@b.cd> "]),
        st.text(max_size=60),
    ),
)


@FUZZ
@given(arg_st, st.booleans())
def test_parse_mail_raises_only_command_error(arg: str, esmtp: bool) -> None:
    try:
        sender, params = parse_mail(arg, esmtp=esmtp)
    except CommandError as exc:
        reply = exc.reply
    else:
        assert sender is None or isinstance(sender, Mailbox)
        assert isinstance(params, MailParams)
        return
    assert reply.code in (501, 553, 555)


@FUZZ
@given(arg_st, st.booleans())
def test_parse_rcpt_raises_only_command_error(arg: str, utf8: bool) -> None:
    try:
        rcpt = parse_rcpt(arg, utf8=utf8)
    except CommandError as exc:
        reply = exc.reply
    else:
        assert isinstance(rcpt, Mailbox)
        return
    assert reply.code in (501, 553, 555)
