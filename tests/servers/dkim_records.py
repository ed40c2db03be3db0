"""DKIM keys for tests: key files as the ingress reads them, and their DNS TXT records."""

import base64
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def pem(key: PrivateKey, *, pkcs8: bool = True) -> bytes:
    """PKCS#8 PEM, or PKCS#1 (``BEGIN RSA PRIVATE KEY``) for an RSA key with pkcs8=False."""
    form = serialization.PrivateFormat.PKCS8
    if not pkcs8:
        form = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def write_key(directory: Path, selector: str, domain: str, key: PrivateKey) -> Path:
    path = directory / f"{selector}._domainkey.{domain}.key"
    path.write_bytes(pem(key))
    return path


def txt_record(key: PrivateKey) -> str:
    """The key record text (RFC 6376 §3.6.1; RFC 8463 §4 for Ed25519: the raw 32 bytes)."""
    if isinstance(key, rsa.RSAPrivateKey):
        der = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def zone_text(record: str) -> str:
    """The record as zone-file TXT data: strings of at most 255 characters (RFC 1035
    §3.3.14), which a verifier joins (RFC 6376 §3.6.2.2)."""
    return " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
