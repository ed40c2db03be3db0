"""The SMTP client's wire format, pure (no sockets): replies, EHLO keywords, commands, data.

Owns: parsing replies (RFC 5321 §4.2, multi-line §4.2.1, enhanced codes RFC 3463 /
RFC 2034), parsing the EHLO keywords (RFC 5321 §4.1.1.1), building MAIL/RCPT commands with
their parameters (SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531), dot-stuffing the
message data (RFC 5321 §4.5.2), and the replies the client makes up itself when it decides
without asking the server. :mod:`workers.smtp_client` does the I/O.
"""

import re
from dataclasses import dataclass

from shared.replies import Reply

# Replies the client synthesises (the server never sent them). Connection-level ones use 421
# (RFC 5321 §3.8: "service not available, closing transmission channel").
NEED_SMTPUTF8 = Reply(550, "5.6.7", "SMTPUTF8 required but not offered by the server")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds the size the server advertised")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 5321 §3.3
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
CONNECT_FAILED = Reply(421, "4.4.1", "No answer from host")  # RFC 3463 X.4.1
CONNECTION_DROPPED = Reply(421, "4.4.2", "Connection dropped by the server")  # X.4.2
TIMED_OUT = Reply(421, "4.4.2", "Timed out waiting for the server")
PROTOCOL_ERROR = Reply(421, "4.5.0", "Malformed reply from the server")  # X.5.0
TLS_NOT_OFFERED = Reply(421, "4.7.4", "TLS is required but was not offered by the server")
TLS_FAILED = Reply(421, "4.7.5", "TLS handshake failed")  # X.7.5 cryptographic failure
TLS_NOT_VERIFIED = Reply(421, "4.7.5", "Server certificate not verified")

MAX_REPLY_BYTES = 65536  # a reply line is ≤ 512 octets (RFC 5321 §4.5.3.1.5); bound the whole
_STATUS = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")  # RFC 3463 §2


class ReplyError(ValueError):
    """The server sent something that is not an SMTP reply (RFC 5321 §4.2)."""


def parse_reply(buffer: bytes | bytearray, start: int = 0) -> tuple[Reply, int] | None:
    """The first complete reply in ``buffer[start:]`` and the offset after it, or None.

    Multi-line replies are ``ddd-text`` lines ended by ``ddd text`` (RFC 5321 §4.2.1); their
    texts are joined with "\\n". An enhanced code (RFC 2034 §4) is taken from the first line
    and stripped from the others; a 2xx/4xx/5xx reply without one gets ``X.0.0`` (RFC 3463
    §3.1, what Postfix does) so every verdict carries an enhanced code. Bare LF line ends are
    tolerated. Raises :class:`ReplyError` on garbage or a reply over ``MAX_REPLY_BYTES``.
    """
    lines: list[bytes] = []
    position = start
    while True:
        end = buffer.find(b"\n", position)
        if end < 0:
            if len(buffer) - start > MAX_REPLY_BYTES:
                raise ReplyError("reply too long")
            return None
        line = bytes(buffer[position:end]).rstrip(b"\r")
        position = end + 1
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in (b"", b" ", b"-"):
            raise ReplyError(f"not a reply line: {line[:80]!r}")
        lines.append(line)
        if line[3:4] != b"-":
            return _build(lines), position


def _build(lines: list[bytes]) -> Reply:
    code = int(lines[0][:3])
    texts = [line[4:].decode("utf-8", "replace") for line in lines]
    match = _STATUS.match(texts[0])
    if match and match.group(1) == str(code // 100):
        status = ".".join(match.groups())
        texts = [_strip_status(text, status) for text in texts]
    else:
        status = f"{code // 100}.0.0" if code // 100 in (2, 4, 5) else ""
    return Reply(code, status, "\n".join(texts))


def _strip_status(text: str, status: str) -> str:
    if text == status:
        return ""
    return text[len(status) + 1 :] if text.startswith(status + " ") else text


@dataclass(frozen=True, slots=True)
class Extensions:
    """What the server's EHLO reply advertised (RFC 5321 §4.1.1.1)."""

    pipelining: bool = False  # RFC 2920
    size: int | None = None  # RFC 1870: None = not advertised, 0 = advertised, no fixed limit
    eight_bit_mime: bool = False  # RFC 6152
    smtputf8: bool = False  # RFC 6531
    starttls: bool = False  # RFC 3207
    enhanced_status_codes: bool = False  # RFC 2034
    keywords: frozenset[str] = frozenset()  # every keyword, upper-cased


def parse_ehlo(reply: Reply) -> Extensions:
    """The extensions in a 250 EHLO reply: the lines after the first are ``KEYWORD [params]``."""
    params: dict[str, str] = {}
    for line in reply.text.split("\n")[1:]:
        keyword, _, value = line.strip().partition(" ")
        if keyword:
            params[keyword.upper()] = value.strip()
    size: int | None = None
    if "SIZE" in params:
        size_text = params["SIZE"]
        size = int(size_text) if size_text.isdigit() else 0  # RFC 1870 §4: value optional
    return Extensions(
        pipelining="PIPELINING" in params,
        size=size,
        eight_bit_mime="8BITMIME" in params,
        smtputf8="SMTPUTF8" in params,
        starttls="STARTTLS" in params,
        enhanced_status_codes="ENHANCEDSTATUSCODES" in params,
        keywords=frozenset(params),
    )


def valid_address(address: str) -> bool:
    """False for an address that would break the command line (CR, LF, NUL: injection)."""
    return not ("\r" in address or "\n" in address or "\0" in address)


def mail_command(
    sender: str, extensions: Extensions, *, size: int, eight_bit: bool, smtputf8: bool
) -> bytes:
    """``MAIL FROM:<sender>`` plus the parameters the server advertised.

    SIZE=n (RFC 1870 §6) when SIZE is advertised; BODY=8BITMIME (RFC 6152 §3) for 8-bit
    data to a server that advertised 8BITMIME (without it the data goes as is, see
    :mod:`workers.smtp_client`); SMTPUTF8 (RFC 6531 §3.4) when asked for — the caller checks
    that the server offers it. The empty sender is the null reverse-path ``<>``.
    """
    command = f"MAIL FROM:<{sender}>"
    if extensions.size is not None:
        command += f" SIZE={size}"
    if eight_bit and extensions.eight_bit_mime:
        command += " BODY=8BITMIME"
    if smtputf8:
        command += " SMTPUTF8"
    return (command + "\r\n").encode("utf-8" if smtputf8 else "ascii")


def rcpt_command(recipient: str, *, smtputf8: bool) -> bytes:
    """``RCPT TO:<recipient>`` (RFC 5321 §4.1.1.3)."""
    return f"RCPT TO:<{recipient}>\r\n".encode("utf-8" if smtputf8 else "ascii")


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")


def data_payload(body: bytes) -> bytes:
    """The message data as sent after 354: dot-stuffed, CRLF-ended, then ``.`` CRLF.

    RFC 5321 §4.5.2: a line that starts with "." gets one more. Bare CR or LF must not be
    sent (§2.3.8; lenient servers treat ``\\n.\\n`` as end of data, CVE-2023-51764 family),
    so a body that has any is normalised to CRLF first; counting is cheap, the regex runs
    only then. An empty body is just the terminating ``.`` line (§4.1.1.4).
    """
    if body.count(b"\n") != body.count(b"\r\n") or body.count(b"\r") != body.count(b"\r\n"):
        body = _LINE_ENDS.sub(b"\r\n", body)
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    if body and not body.endswith(b"\r\n"):
        return body + b"\r\n.\r\n"
    return body + b".\r\n"
