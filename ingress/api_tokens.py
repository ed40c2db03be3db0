"""The HTTP API's bearer tokens (RFC 6750): the tokens file and the look-up of a request's.

The file (``api_tokens_file``) holds one token per line, optionally named: ``name:token``.
The name stands for the client in logs, in the ``Received:`` field and in the envelope
(``helo`` and ``auth``), and is what a per-client policy (priority classes) keys on; an
unnamed token is ``api``. ``#`` starts a comment. A token is RFC 6750 §2.1 ``b64token``
text, at least :data:`MIN_TOKEN_LENGTH` characters (e.g. ``openssl rand -base64 32``).

Look-ups compare the SHA-256 of the presented token with every known one, with
:func:`hmac.compare_digest` and no early exit, so the time taken says nothing about how
much of a token was right, nor which token matched.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

from ingress import listfile

MIN_TOKEN_LENGTH = 20
DEFAULT_NAME = "api"
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 §2.1
# A name goes into a Received: field as the client's "helo": one printable token.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class TokensError(ValueError):
    """The tokens file cannot be used; the message names the line."""


@dataclass(frozen=True, slots=True)
class Client:
    """Who a request comes from: the name of the token it presented."""

    name: str


class Tokens:
    """The tokens the API accepts, by their SHA-256 digest."""

    def __init__(self, tokens: dict[str, str]) -> None:
        """``tokens``: token → client name."""
        self._digests = [(_digest(token), Client(name)) for token, name in tokens.items()]

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def load(cls, path: Path) -> "Tokens":
        try:
            lines = listfile.entries(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise TokensError(f"{path}: cannot read: {exc}") from exc
        tokens: dict[str, str] = {}
        for number, line in lines:
            try:
                token, name = parse_line(line)
            except ValueError as exc:
                raise TokensError(f"{path}:{number}: {exc}") from None
            if token in tokens:
                raise TokensError(f"{path}:{number}: the same token as {tokens[token]!r}")
            tokens[token] = name
        if not tokens:
            raise TokensError(f"{path}: no token")
        return cls(tokens)

    def client(self, token: str) -> Client | None:
        """The client whose token this is, None when it is nobody's."""
        digest = _digest(token)
        found = None
        for known, client in self._digests:
            if hmac.compare_digest(digest, known):
                found = client
        return found


def parse_line(line: str) -> tuple[str, str]:
    """``"name:token"`` or ``"token"`` → (token, name); ValueError says what is wrong."""
    name, sep, token = line.rpartition(":")
    if not sep:
        name = DEFAULT_NAME
    elif not _NAME.fullmatch(name):
        raise ValueError(f"name {name[:70]!r}: letters, digits, '.', '_', '-' (at most 64)")
    if not _B64TOKEN.fullmatch(token):
        raise ValueError("a token is letters, digits and - . _ ~ + / (RFC 6750 b64token)")
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"token shorter than {MIN_TOKEN_LENGTH} characters")
    return token, name


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` field (RFC 6750 §2.1), or None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not _B64TOKEN.fullmatch(token):
        return None
    return token


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()
