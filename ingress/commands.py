"""Parsing of SMTP command lines and their parameters (RFC 5321 §4.1, RFC 1870, 6152, 6531).

Pure functions: bytes in, values or a :class:`CommandError` carrying the reply out.
"""

from dataclasses import dataclass

from shared import replies
from shared.message import AddressError, Mailbox, parse_mailbox
from shared.replies import Reply


class CommandError(ValueError):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _shown(text: object, limit: int = 64) -> str:
    """Client text as a reply may quote it: printable ASCII only (RFC 5321 §4.2
    ``textstring``), everything else escaped, and short (a reply line is at most 512
    octets, §4.5.3.1.5)."""
    quoted = ascii(str(text))[1:-1]
    return quoted if len(quoted) <= limit else quoted[: limit - 3] + "..."


def split_command(line: bytes) -> tuple[str, str]:
    """``b"MAIL FROM:<a@b>\\r\\n"`` → ``("MAIL", "FROM:<a@b>")``; the verb upper-cased."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(replies.SYNTAX_ERROR.with_text("Invalid UTF-8 in command")) from None
    text = text.rstrip("\r\n")
    if "\r" in text or "\x00" in text:
        raise CommandError(replies.SYNTAX_ERROR.with_text("Invalid character in command"))
    verb, _, arg = text.partition(" ")
    return verb.upper(), arg.strip(" ")


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body_8bit: bool = False
    smtputf8: bool = False


def _split_path(arg: str, keyword: str) -> tuple[str, list[str]]:
    """``"FROM:<a@b> SIZE=10"`` → ``("a@b", ["SIZE=10"])`` (one space after ':' tolerated)."""
    if arg[: len(keyword)].upper() != keyword:
        raise CommandError(replies.SYNTAX_ERROR.with_text(f"Syntax: {keyword}<address>"))
    rest = arg[len(keyword) :].lstrip(" ")
    if not rest.startswith("<"):
        raise CommandError(replies.SYNTAX_ERROR.with_text(f"Syntax: {keyword}<address>"))
    end = _closing_bracket(rest)
    path, params = rest[1:end], rest[end + 1 :]
    if params and not params.startswith(" "):
        raise CommandError(replies.SYNTAX_ERROR.with_text(f"Syntax: {keyword}<address>"))
    return path, params.split()


def _closing_bracket(text: str) -> int:
    """Index of the '>' that ends the path, skipping quoted strings and escapes."""
    quoted = escaped = False
    for index, char in enumerate(text[1:], start=1):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    raise CommandError(replies.SYNTAX_ERROR.with_text("Unterminated address"))


def _param(param: str) -> tuple[str, str | None]:
    name, sep, value = param.partition("=")
    if not name.isascii() or not name.replace("-", "").isalnum():
        raise CommandError(replies.BAD_PARAMETER)
    return name.upper(), (value if sep else None)


def _is_size(value: str) -> bool:
    """A SIZE= value we take (RFC 1870 §3: DIGITs): ASCII digits only, as ``"²".isdigit()``
    is true too and ``int("²")`` fails; fewer than 20, so it fits in 64 bits."""
    return 0 < len(value) < 20 and value.isascii() and value.isdigit()


def parse_mail(arg: str, *, esmtp: bool) -> tuple[Mailbox | None, MailParams]:
    """The reverse-path (None for ``<>``) and parameters of ``MAIL FROM:``."""
    path, raw = _split_path(arg, "FROM:")
    if raw and not esmtp:
        raise CommandError(replies.BAD_PARAMETER.with_text("Parameters need EHLO"))
    size, body_8bit, smtputf8 = None, False, False
    for param in raw:
        name, value = _param(param)
        if name == "SIZE" and value is not None and _is_size(value):
            size = int(value)  # RFC 1870
        elif name == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
            body_8bit = value.upper() == "8BITMIME"  # RFC 6152
        elif name == "SMTPUTF8" and value is None:
            smtputf8 = True  # RFC 6531 §3.4
        elif name == "AUTH" and value is not None:
            pass  # RFC 4954 §5: an AUTH= we do not trust is ignored
        else:
            raise CommandError(replies.BAD_PARAMETER.with_text(f"Unsupported parameter {name}"))
    if path == "":
        return None, MailParams(size, body_8bit, smtputf8)
    try:
        mailbox = parse_mailbox(path, utf8=smtputf8)
    except AddressError as exc:
        reply = replies.NEED_SMTPUTF8 if not path.isascii() and not smtputf8 else replies.BAD_SENDER
        raise CommandError(reply.with_text(f"{reply.text}: {_shown(exc)}")) from None
    return mailbox, MailParams(size, body_8bit, smtputf8)


def parse_rcpt(arg: str, *, utf8: bool) -> Mailbox:
    """The forward-path of ``RCPT TO:``; we advertise no RCPT parameters."""
    path, raw = _split_path(arg, "TO:")
    if raw:
        raise CommandError(
            replies.BAD_PARAMETER.with_text(f"Unsupported parameter {_shown(raw[0])}")
        )
    try:
        return parse_mailbox(path, utf8=utf8)
    except AddressError as exc:
        reply = replies.NEED_SMTPUTF8 if not path.isascii() and not utf8 else replies.BAD_ADDRESS
        raise CommandError(reply.with_text(f"{reply.text}: {_shown(exc)}")) from None
