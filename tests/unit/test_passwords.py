"""shared/passwords.py: scrypt hashes for the SMTP AUTH credentials file (ln=10 keeps it fast)."""

import base64
import re

import pytest

from shared.passwords import ScryptHash, hash_password, parse_hash

# RFC 7914 §12: scrypt(P="password", S="NaCl", N=1024, r=8, p=16, dkLen=64).
RFC7914 = bytes.fromhex(
    "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
    "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_hash_format() -> None:
    hashed = hash_password("s3cret", ln=10)
    assert re.fullmatch(r"\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=", hashed)


def test_salt_is_fresh() -> None:
    assert hash_password("same", ln=10) != hash_password("same", ln=10)


@pytest.mark.parametrize("password", ["s3cret", "", "pässwörd", "x" * 200, "with:colon$dollar"])
def test_round_trip(password: str) -> None:
    parsed = parse_hash(hash_password(password, ln=10))
    assert (parsed.ln, parsed.r, parsed.p) == (10, 8, 1)
    assert len(parsed.salt) == 16
    assert len(parsed.digest) == 32
    assert parsed.verify(password) is True
    assert parsed.verify(password + "x") is False
    assert parsed.verify(password.upper() + "Z") is False


def test_rfc7914_vector() -> None:
    parsed = parse_hash(f"$scrypt$ln=10,r=8,p=16${b64(b'NaCl')}${b64(RFC7914)}")
    assert parsed == ScryptHash(10, 8, 16, b"NaCl", RFC7914)
    assert parsed.verify("password") is True
    assert parsed.verify("Password") is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("plaintext", "not a $scrypt$ hash"),
        ("", "not a $scrypt$ hash"),
        ("$bcrypt$ln=10,r=8,p=1$AA==$AA==", "not a $scrypt$ hash"),
        ("$scrypt$ln=10,r=8,p=1$AA==", "not a $scrypt$ hash"),
        ("x$scrypt$ln=10,r=8,p=1$AA==$AA==", "not a $scrypt$ hash"),
        ("$scrypt$ln=10,r=8,p=1$AA==$AA==$", "not a $scrypt$ hash"),
        ("$scrypt$ln=9,r=8,p=1$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=21,r=8,p=1$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=10,r=0,p=1$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=10,r=33,p=1$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=10,r=8,p=0$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=10,r=8,p=17$AA==$AA==", "scrypt parameters out of range"),
        ("$scrypt$ln=x,r=8,p=1$AA==$AA==", "invalid literal for int()"),
        ("$scrypt$ln=10,r=8,p=1$AAA$AA==", "Incorrect padding"),
    ],
)
def test_parse_refusals(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_hash(text)


def test_parse_missing_parameter() -> None:
    with pytest.raises(KeyError, match="r"):
        parse_hash("$scrypt$ln=10,p=1$AA==$AA==")


@pytest.mark.parametrize(
    "text",
    [
        # Accepted parameters (ln <= 20) whose memory cost exceeds what verify() allows itself.
        f"$scrypt$ln=18,r=8,p=1${b64(b'salt')}${b64(b'x' * 32)}",
        # No digest at all: hashlib refuses dklen=0 (and compare_digest(b"", b"") is True).
        f"$scrypt$ln=10,r=8,p=1${b64(b'salt')}$",
    ],
)
def test_every_accepted_hash_can_be_verified(text: str) -> None:
    try:
        parsed = parse_hash(text)
    except ValueError:
        return  # refusing it when parsed is fine too
    assert parsed.verify("password") is False
