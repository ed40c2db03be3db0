"""DKIM private keys (RFC 6376), loaded once at start from the ``dkim_keys_dir`` directory.

The directory holds one PEM file per key, named for the DNS name of its public key record
(RFC 6376 §3.6.2.1) plus ``.key``::

    dkim/
      2026a._domainkey.example.com.key     RSA (PKCS#1 or PKCS#8 PEM)  → rsa-sha256
      2026e._domainkey.example.com.key     Ed25519 (PKCS#8 PEM)        → ed25519-sha256

The key type sets the algorithm: RSA keys sign rsa-sha256 (at least 1024 bits, RFC 8301
§3.2), Ed25519 keys ed25519-sha256 (RFC 8463). The layout is flat so that a Kubernetes
Secret mounted as the directory works as it is: entries whose name starts with a dot (the
Secret's ``..data`` links) are skipped, files not ending in ``.key`` are reported and
ignored, and anything else that is not a readable key is a start-up error naming the file.

Per domain, the key of each algorithm with the last selector in sorted order signs, so a
domain signs at most twice (RSA and Ed25519: receivers that do not know ed25519-sha256
ignore that signature, RFC 6376 §6.1) and a key is rotated by adding one whose selector
sorts after the old one (``2026b`` after ``2026a``).
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from shared.message import AddressError, normalise_domain

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]
PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

SUFFIX = ".key"
MIN_RSA_BITS = 1024  # RFC 8301 §3.2: signers MUST use at least 1024 bits (2048 advised)
# RFC 6376 §3.1: selector = sub-domain *( "." sub-domain ), sub-domain per RFC 5321 §4.1.2
_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*$")
_INFIX = "._domainkey."
_OTHER_KINDS = ((ec.EllipticCurvePrivateKey, "an EC"), (ed448.Ed448PrivateKey, "an Ed448"),
                (dsa.DSAPrivateKey, "a DSA"))  # fmt: skip


class DkimKeyError(ValueError):
    """A key file or the key directory cannot be used; the message names the path."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str  # lower-case A-label form (the d= tag)
    selector: str  # the s= tag
    key: PrivateKey = field(repr=False)
    path: Path

    @property
    def algorithm(self) -> Algorithm:
        return "rsa-sha256" if isinstance(self.key, rsa.RSAPrivateKey) else "ed25519-sha256"

    def describe(self) -> str:
        bits = f",{self.key.key_size}" if isinstance(self.key, rsa.RSAPrivateKey) else ""
        return f"{self.domain}:{self.selector}({self.algorithm}{bits})"


def parse_name(name: str) -> tuple[str, str]:
    """``"s1._domainkey.example.com.key"`` → ``("s1", "example.com")``; ValueError if not."""
    selector, infix, domain = name.removesuffix(SUFFIX).lower().partition(_INFIX)
    if not infix:
        raise ValueError(f"name it <selector>{_INFIX}<domain>{SUFFIX}")
    if not _SELECTOR.match(selector):
        raise ValueError(f"{selector!r} is not a selector (RFC 6376 §3.1)")
    try:
        domain = normalise_domain(domain)
    except AddressError as exc:
        raise ValueError(str(exc)) from None
    if "." not in domain or not all(domain.split(".")):
        raise ValueError(f"{domain!r} is not a domain")
    return selector, domain


def parse_key(data: bytes) -> PrivateKey:
    """A PEM private key DKIM can sign with; ValueError says why not."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the key is encrypted: store it without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("not a PEM private key") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} needed")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    kind = next((name for cls, name in _OTHER_KINDS if isinstance(key, cls)), "another kind of")
    raise ValueError(f"{kind} key: DKIM signs with RSA or Ed25519 keys")


def load_key(path: Path) -> DkimKey:
    try:
        selector, domain = parse_name(path.name)
        data = path.read_bytes()
    except ValueError as exc:
        raise DkimKeyError(f"{path}: {exc}") from None
    except OSError as exc:
        raise DkimKeyError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return DkimKey(domain, selector, parse_key(data), path)
    except ValueError as exc:
        raise DkimKeyError(f"{path}: {exc}") from None


class KeyRing:
    """The signing keys by domain: ``KeyRing.load(directory)``, then :meth:`signing_keys`."""

    def __init__(self, keys: list[DkimKey], ignored: list[Path] | None = None) -> None:
        self.keys = sorted(keys, key=lambda k: (k.domain, k.selector))
        self.ignored = ignored or []
        newest: dict[tuple[str, Algorithm], DkimKey] = {}
        for key in self.keys:  # sorted: the last selector of each algorithm wins
            newest[(key.domain, key.algorithm)] = key
        self._by_domain: dict[str, tuple[DkimKey, ...]] = {}
        for (domain, _), key in sorted(newest.items()):
            self._by_domain[domain] = (*self._by_domain.get(domain, ()), key)

    @classmethod
    def load(cls, directory: Path) -> "KeyRing":
        """Every key of ``directory``; DkimKeyError names the first file that is not one."""
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as exc:
            raise DkimKeyError(f"dkim_keys_dir {directory}: cannot read: {exc.strerror}") from None
        keys: list[DkimKey] = []
        ignored: list[Path] = []
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue  # hidden, and a Kubernetes Secret volume's ..data bookkeeping
            if entry.is_dir():
                raise DkimKeyError(f"{path}: a directory: key files go in {directory} itself")
            if not entry.name.endswith(SUFFIX):
                ignored.append(path)
                continue
            keys.append(load_key(path))
        return cls(keys, ignored)

    @property
    def signing(self) -> list[DkimKey]:
        """The keys that sign, one per domain and algorithm."""
        return [key for keys in self._by_domain.values() for key in keys]

    def signing_keys(self, domain: str) -> tuple[DkimKey, ...]:
        """The keys for mail from ``domain`` (lower-case A-label): its own, else those of the
        nearest parent domain that has keys (DMARC relaxed alignment, RFC 7489 §3.1.1)."""
        labels = domain.split(".")
        for start in range(len(labels) - 1):
            keys = self._by_domain.get(".".join(labels[start:]))
            if keys:
                return keys
        return ()

    def __bool__(self) -> bool:
        return bool(self.keys)
