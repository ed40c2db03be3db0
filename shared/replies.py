"""SMTP replies as values, each defined once (server, clients and tests use these objects).

Every reply carries an enhanced status code (RFC 3463); the comments cite the section that
asks for the code.
"""

from typing import NamedTuple


class Reply(NamedTuple):
    """One SMTP reply: basic code (RFC 5321 §4.2), enhanced status (RFC 3463), text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return (
            f"{self.code} {self.status} {self.text}" if self.status else f"{self.code} {self.text}"
        )

    def encode(self) -> bytes:
        """The reply on the wire, CRLF-terminated."""
        return f"{self}\r\n".encode()

    def with_text(self, text: str) -> "Reply":
        return self._replace(text=text)

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500


OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
RESET_OK = Reply(250, "2.0.0", "Reset state")
NOOP_OK = Reply(250, "2.0.0", "OK")
VRFY_CANNOT = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message")  # §3.5.3
HELP = Reply(214, "2.0.0", "See RFC 5321")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
BYE = Reply(221, "2.0.0", "Bye")
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")  # RFC 4954 §6

# 4xx: transient, the client retries (RFC 5321 §4.2.1)
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try another server")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "Too many sessions, try again later")
TOO_MANY_SESSIONS_IP = Reply(421, "4.7.0", "Too many sessions from your address, try later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SPOOL_UNAVAILABLE = Reply(451, "4.3.0", "Spool temporarily unavailable, try again later")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage, try again later")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.10
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
# A client address over its failed-AUTH limit. 454 rather than 421: RFC 4954 §6 gives
# 454 4.7.0 to an AUTH that failed for a temporary reason and asks the client not to prompt
# for another password; the session stays usable, whereas a 421 would only make a guesser
# reconnect (a new TCP and TLS handshake for us) and would end legitimate sessions too.
AUTH_LOCKED = Reply(454, "4.7.0", "Too many failed authentication attempts, try again later")

# 5xx: permanent
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
UNKNOWN_COMMAND = Reply(500, "5.5.2", "Command not recognized")
SYNTAX_ERROR = Reply(501, "5.5.2", "Syntax error")
BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_PARAMETER = Reply(555, "5.5.4", "Unsupported or malformed parameter")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Send EHLO/HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL before RCPT")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT before DATA")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
ALREADY_AUTH = Reply(503, "5.5.1", "Already authenticated")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")  # RFC 4954 §6
AUTH_NEEDS_TLS = Reply(538, "5.7.11", "Encryption required for requested authentication")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
# A recipient on the suppression list. RFC 3463 §3.8: X.7.1 "delivery not authorized,
# message refused" is a policy refusal, so clients do not take it for a bounce of the
# destination (5.1.1) and the reason stays ours.
SUPPRESSED = Reply(550, "5.7.1", "Recipient address is suppressed (earlier hard bounce or opt-out)")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.5
LOOP_DETECTED = Reply(554, "5.4.6", "Too many Received headers: mail loop detected")
BARE_NEWLINE = Reply(550, "5.5.2", "Bare <CR> or <LF> in message data (RFC 5321 §2.3.8)")
LINE_TOO_LONG_DATA = Reply(552, "5.3.4", "Line too long in message data")
# Priority classes (README "Priority classes"): a class the client names must exist, or the
# mail would silently go as another class. RFC 3463 §3.7: X.6.0 for a content problem (the
# header field); X.5.4 for an invalid argument (the class given with a submission).
PRIORITY_HEADER_INVALID = Reply(
    550, "5.6.0", "X-Mxfleet-Priority must be one of: transactional, bulk"
)
PRIORITY_INVALID = Reply(550, "5.5.4", "Priority must be one of: transactional, bulk")
