"""Salted password hashes (scrypt) for the SMTP AUTH credentials file.

A hash is written ``$scrypt$ln=14,r=8,p=1$<salt, base64>$<hash, base64>``; checking one
costs ~50 ms of CPU on purpose.
"""

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass

_SCRYPT = {"ln": 14, "r": 8, "p": 1}
_DKLEN = 32


def hash_password(password: str, *, ln: int = _SCRYPT["ln"]) -> str:
    """A ``$scrypt$...`` hash of ``password`` with a fresh random salt."""
    salt = os.urandom(16)
    r, p = _SCRYPT["r"], _SCRYPT["p"]
    digest = hashlib.scrypt(password.encode(), salt=salt, n=1 << ln, r=r, p=p, dklen=_DKLEN)
    b64 = base64.b64encode
    return f"$scrypt$ln={ln},r={r},p={p}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True, slots=True)
class ScryptHash:
    ln: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def verify(self, password: str) -> bool:
        candidate = hashlib.scrypt(
            password.encode(),
            salt=self.salt,
            n=1 << self.ln,
            r=self.r,
            p=self.p,
            dklen=len(self.digest),
            maxmem=128 * self.r * ((1 << self.ln) + self.p + 2) + (1 << 20),
        )
        return hmac.compare_digest(candidate, self.digest)


def parse_hash(text: str) -> ScryptHash:
    parts = text.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "scrypt":
        raise ValueError("not a $scrypt$ hash")
    params = dict(item.split("=", 1) for item in parts[2].split(","))
    ln, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
    # Bounded so that one check never needs more than ~128 MiB (128 * r * 2**ln bytes).
    if not (10 <= ln <= 17 and 1 <= r <= 8 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range (ln 10-17, r 1-8, p 1-16)")
    salt, digest = base64.b64decode(parts[3]), base64.b64decode(parts[4])
    if not salt or len(digest) < 16:
        raise ValueError("scrypt salt or hash too short")
    return ScryptHash(ln, r, p, salt, digest)
