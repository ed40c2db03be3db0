"""The SASL exchanges of SMTP AUTH: PLAIN (RFC 4616) and LOGIN, as a small state machine.

``AuthExchange.start(arg)`` and ``respond(line)`` answer with the next ``334`` challenge
(bytes), a refusal (a Reply), or None once user and password are known.
"""

import base64

from ingress.auth import SaslError, decode_b64, parse_plain
from shared import replies
from shared.replies import Reply

_USERNAME = b"334 " + base64.b64encode(b"Username:") + b"\r\n"
_PASSWORD = b"334 " + base64.b64encode(b"Password:") + b"\r\n"
_EMPTY = b"334 \r\n"
MECHANISMS = ("PLAIN", "LOGIN")

Step = bytes | Reply | None


class AuthExchange:
    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.user = ""
        self.password = ""
        self._step = 0

    @classmethod
    def start(cls, arg: str) -> tuple["AuthExchange", Step]:
        mechanism, _, initial = arg.partition(" ")
        exchange = cls(mechanism.upper())
        if exchange.mechanism not in MECHANISMS:
            return exchange, replies.AUTH_MECHANISM
        if not initial:
            return exchange, _EMPTY if exchange.mechanism == "PLAIN" else _USERNAME
        # RFC 4954 §4: "=" is an empty initial response.
        return exchange, exchange.respond(b"" if initial == "=" else initial.encode())

    def respond(self, line: bytes) -> Step:
        if line == b"*":
            return replies.AUTH_CANCELLED  # RFC 4954 §4
        try:
            decoded = decode_b64(line.decode("ascii", "replace"))
            if self.mechanism == "PLAIN":
                self.user, self.password = parse_plain(decoded)
                return None
            text = decoded.decode("utf-8")
        except (SaslError, UnicodeDecodeError) as exc:
            return replies.SYNTAX_ERROR.with_text(f"Invalid AUTH response: {exc}")
        if self._step == 0:
            self.user, self._step = text, 1
            return _PASSWORD
        self.password = text
        return None
