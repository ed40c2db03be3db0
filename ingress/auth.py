"""SMTP AUTH (RFC 4954): the credentials file and the PLAIN (RFC 4616) and LOGIN mechanisms.

The file holds one ``user:hash`` line per account; ``#`` starts a comment. Hashes are
scrypt with a per-user random salt, written by ``mxfleet passwd USER``:

    alice:$scrypt$ln=14,r=8,p=1$<salt, base64>$<hash, base64>

Verification costs ~50 ms of CPU on purpose; the session runs it off the event loop.
"""

import base64
import binascii
import os
from pathlib import Path

from ingress import listfile
from shared.passwords import ScryptHash, hash_password, parse_hash


class CredentialsError(ValueError):
    """The credentials file cannot be used; the message names the line."""


# A hash to check against for unknown users, so a guess at a user name costs the same.
_DECOY = parse_hash(hash_password(os.urandom(8).hex()))


class Credentials:
    """The accounts allowed to relay by SMTP AUTH, loaded from the credentials file."""

    def __init__(self, users: dict[str, ScryptHash]) -> None:
        self._users = users

    @classmethod
    def load(cls, path: Path) -> "Credentials":
        try:
            lines = listfile.entries(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CredentialsError(f"{path}: cannot read: {exc}") from exc
        users: dict[str, ScryptHash] = {}
        for number, line in lines:
            user, sep, hashed = line.partition(":")
            try:
                if not sep or not user:
                    raise ValueError("expected user:hash")
                users[user] = parse_hash(hashed)
            except (ValueError, KeyError, binascii.Error) as exc:
                raise CredentialsError(f"{path}:{number}: {exc}") from None
        return cls(users)

    def verify(self, user: str, password: str) -> bool:
        """True when ``password`` is ``user``'s; slow (scrypt) whatever the answer."""
        known = self._users.get(user)
        ok = (known or _DECOY).verify(password)
        return ok and known is not None


class SaslError(ValueError):
    """A malformed SASL response (bad base64, wrong shape)."""


def decode_b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SaslError("invalid base64") from None


def parse_plain(response: bytes) -> tuple[str, str]:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd`` → (user, password)."""
    parts = response.split(b"\x00")
    if len(parts) != 3:
        raise SaslError("malformed PLAIN response")
    authzid, user, password = (part.decode("utf-8", "replace") for part in parts)
    if authzid and authzid != user:
        raise SaslError("authorization identity differs from authentication identity")
    return user, password
