"""SMTP AUTH for the outbound client (RFC 4954): credentials, mechanism choice, the exchange.

Owns: the credentials file, the AUTH mechanisms a server advertised, the choice between
PLAIN (RFC 4616, preferred) and LOGIN (draft-murchison-sasl-login), their base64 responses,
the command/334-continuation exchange over an injected ``command`` callable, and the replies
the client makes up when authentication cannot happen. No sockets:
:mod:`workers.smtp_connection` runs :func:`authenticate` with its own I/O and timeouts.

Every AUTH failure is *transient* (421 4.7.x): a wrong password or a smarthost that stops
offering AUTH is the operator's problem, and mail must wait for the fix rather than bounce
(Postfix's ``smtp_sasl_auth_soft_bounce = yes``). Credentials are never sent without TLS
(RFC 4616 §6: PLAIN, like LOGIN, sends the password in clear) — the connection checks first.
"""

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.replies import Reply

Mechanism = Literal["PLAIN", "LOGIN"]
MECHANISMS: tuple[Mechanism, ...] = ("PLAIN", "LOGIN")  # in order of preference

# Replies the client synthesises; 421 like the other connection-level ones (smtp_wire).
# X.7.10 "Encryption needed" (RFC 4954, RFC 5248): a cleartext mechanism needs TLS first.
NEEDS_TLS = Reply(421, "4.7.10", "Encryption needed: TLS is not active, credentials not sent")
NOT_OFFERED = Reply(421, "4.7.0", "Credentials configured but the server does not offer AUTH")
NO_MECHANISM = Reply(421, "4.7.0", "No supported AUTH mechanism offered (PLAIN, LOGIN)")
REJECTED = Reply(421, "4.7.0", "SASL authentication failed")


@dataclass(frozen=True, slots=True)
class Credentials:
    """One SMTP AUTH identity; the password never shows in a repr."""

    user: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        # RFC 4616 §2: authcid and passwd are 1*SAFE (any UTF-8 but NUL), NUL separates them.
        if not self.user or not self.password:
            raise ValueError("user and password must not be empty")
        if "\0" in self.user or "\0" in self.password:
            raise ValueError("user and password must not contain NUL")


def load_credentials(path: Path) -> Credentials:
    """The credentials in ``path``: its first line that is neither blank nor a ``#`` comment
    is ``user:password`` (the password may hold ``:``; only the line end is stripped).

    Raises ValueError naming the file when it is unreadable or malformed; the message never
    contains the password.
    """
    try:
        text = path.read_bytes().decode("utf-8")  # read_text() would turn a lone CR into LF
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"credentials file {path}: unreadable: {exc}") from exc
    for number, raw in enumerate(text.split("\n"), 1):  # not splitlines(): \f, \x1c… stay
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        user, colon, password = line.partition(":")
        if not colon:
            raise ValueError(f"credentials file {path}, line {number}: expected user:password")
        try:
            return Credentials(user, password)
        except ValueError as exc:
            raise ValueError(f"credentials file {path}, line {number}: {exc}") from None
    raise ValueError(f"credentials file {path}: no user:password line")


def advertised_mechanisms(ehlo: Reply) -> frozenset[str]:
    """The SASL mechanisms in a 250 EHLO reply (RFC 4954 §3: ``AUTH PLAIN LOGIN``), upper-
    cased. The pre-RFC ``AUTH=LOGIN PLAIN`` form, which some servers still send (Postfix's
    ``broken_sasl_auth_clients``), counts too."""
    found: set[str] = set()
    for line in ehlo.text.split("\n")[1:]:
        words = line.upper().split()
        if words and words[0] == "AUTH":
            found.update(words[1:])
        elif words and words[0].startswith("AUTH="):
            found.update([words[0][5:], *words[1:]])
    found.discard("")
    return frozenset(found)


def choose_mechanism(advertised: Iterable[str]) -> Mechanism:
    """PLAIN if advertised, else LOGIN; ValueError when neither is."""
    offered = {mechanism.upper() for mechanism in advertised}
    for mechanism in MECHANISMS:
        if mechanism in offered:
            return mechanism
    raise ValueError(f"no supported AUTH mechanism among {sorted(offered)}")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def plain_response(credentials: Credentials) -> str:
    """RFC 4616 §2: base64 of ``authzid NUL authcid NUL passwd``, authzid empty, UTF-8."""
    return _b64(f"\0{credentials.user}\0{credentials.password}")


def login_responses(credentials: Credentials) -> tuple[str, str]:
    """LOGIN: the base64 user name, then the base64 password, one per 334 challenge."""
    return _b64(credentials.user), _b64(credentials.password)


def exchange(mechanism: Mechanism, credentials: Credentials) -> tuple[bytes, tuple[bytes, ...]]:
    """(the AUTH command line, the lines that answer each 334 challenge in turn).

    PLAIN goes as an initial response (RFC 4954 §4), one round trip; LOGIN waits for the
    server's "Username:" and "Password:" challenges, which every LOGIN server sends.
    """
    if mechanism == "PLAIN":
        return f"AUTH PLAIN {plain_response(credentials)}\r\n".encode("ascii"), ()
    user, password = login_responses(credentials)
    return b"AUTH LOGIN\r\n", (f"{user}\r\n".encode("ascii"), f"{password}\r\n".encode("ascii"))


class AuthFailed(Exception):
    """Authentication did not happen; ``reply`` (transient, 4.7.x) says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def authenticate(
    command: Callable[[bytes], Reply], ehlo: Reply | None, credentials: Credentials
) -> Mechanism:
    """Run AUTH over ``command`` (send one line, read one reply) and return the mechanism
    used once the server said 235. ``ehlo`` is the server's 250 EHLO reply (None after
    HELO: no AUTH). Raises :class:`AuthFailed`; ``command``'s own exceptions pass through.
    """
    advertised = advertised_mechanisms(ehlo) if ehlo is not None else frozenset()
    if not advertised:
        raise AuthFailed(NOT_OFFERED)
    try:
        mechanism = choose_mechanism(advertised)
    except ValueError:
        offered = " ".join(sorted(advertised))
        raise AuthFailed(
            NO_MECHANISM.with_text(f"{NO_MECHANISM.text}; server offers {offered}")
        ) from None
    line, responses = exchange(mechanism, credentials)
    reply = command(line)
    for response in responses:
        if reply.code != 334:
            break
        reply = command(response)
    if reply.code == 334:  # a challenge we have no answer for: cancel (RFC 4954 §4)
        command(b"*\r\n")
    if reply.code != 235:  # RFC 4954 §6
        raise AuthFailed(rejected(reply))
    return mechanism


def rejected(reply: Reply) -> Reply:
    """The server's refusal made transient: 535 5.7.8 → 421 4.7.8, the server's reply quoted
    (as Postfix defers with "SASL authentication failed; server ... said: ...")."""
    _, dot, detail = reply.status.partition(".")
    status = f"4.{detail}" if dot and detail.startswith("7.") else REJECTED.status
    said = str(reply).replace("\n", " ")
    return REJECTED._replace(status=status, text=f"{REJECTED.text}; server said: {said}")
