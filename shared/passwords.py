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
            maxmem=256 * 1024 * 1024,
        )
        return hmac.compare_digest(candidate, self.digest)


def parse_hash(text: str) -> ScryptHash:
    parts = text.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "scrypt":
        raise ValueError("not a $scrypt$ hash")
    params = dict(item.split("=", 1) for item in parts[2].split(","))
    ln, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
    if not (10 <= ln <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        raise ValueError("scrypt parameters out of range")
    return ScryptHash(ln, r, p, base64.b64decode(parts[3]), base64.b64decode(parts[4]))
