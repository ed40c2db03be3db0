"""ingress/auth.py: the credentials file, base64 and the PLAIN response (RFC 4616)."""

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.auth import (
    Credentials,
    CredentialsError,
    SaslError,
    decode_b64,
    parse_plain,
)
from shared.passwords import hash_password
from tests.unit.fuzz import FUZZ

ALICE = hash_password("alice-pw", ln=10)
BOB = hash_password("bøb-pw", ln=10)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "credentials"
    path.write_text(text, "utf-8")
    return path


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    text = f"# mxfleet credentials\n\nalice:{ALICE}\n   \n  bob:{BOB}  \n# carol:{ALICE}\n"
    return Credentials.load(write(tmp_path_factory.mktemp("auth"), text))


# --- the credentials file -----------------------------------------------------------------


def test_known_users_verify(credentials: Credentials) -> None:
    assert credentials.verify("alice", "alice-pw") is True
    assert credentials.verify("bob", "bøb-pw") is True


def test_wrong_passwords_are_refused(credentials: Credentials) -> None:
    assert credentials.verify("alice", "bøb-pw") is False
    assert credentials.verify("alice", "") is False
    assert credentials.verify("bob", "bob-pw") is False


def test_user_names_are_exact(credentials: Credentials) -> None:
    assert credentials.verify("Alice", "alice-pw") is False
    assert credentials.verify("alice ", "alice-pw") is False


def test_unknown_and_commented_out_users_are_refused(credentials: Credentials) -> None:
    assert credentials.verify("carol", "alice-pw") is False
    assert credentials.verify("", "") is False


def test_empty_file(tmp_path: Path) -> None:
    assert Credentials.load(write(tmp_path, "")).verify("alice", "alice-pw") is False


def test_password_containing_a_colon(tmp_path: Path) -> None:
    path = write(tmp_path, f"dave:{hash_password('a:b:c', ln=10)}\n")
    assert Credentials.load(path).verify("dave", "a:b:c") is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("alice\n", "1: expected user:hash"),
        (f":{ALICE}\n", "1: expected user:hash"),
        ("# header\n\nalice:plaintext\n", "3: not a $scrypt$ hash"),
        (
            f"alice:{ALICE}\nbob:$scrypt$ln=9,r=8,p=1$AA==$AA==\n",
            "2: scrypt parameters out of range",
        ),
        ("alice:$scrypt$ln=10,p=1$AA==$AA==\n", "1: 'r'"),
        ("alice:$scrypt$ln=10,r=8,p=1$AAA$AA==\n", "1: Incorrect padding"),
        ("alice:$scrypt$ln,r=8,p=1$AA==$AA==\n", "1: dictionary update sequence element #0"),
    ],
)
def test_bad_lines_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CredentialsError) as info:
        Credentials.load(path)
    assert str(info.value).startswith(f"{path}:{message}")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(CredentialsError, match="cannot read") as info:
        Credentials.load(path)
    assert str(info.value).startswith(f"{path}: cannot read: ")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_bytes(b"al\xffce:" + ALICE.encode() + b"\n")
    with pytest.raises(CredentialsError) as info:
        Credentials.load(path)
    assert str(info.value).startswith(f"{path}: cannot read: ")


@pytest.mark.parametrize(
    "hashed",
    [
        # ln=18 is within parse_hash's range but needs more memory than verify() allows itself.
        "$scrypt$ln=18,r=8,p=1$c2FsdA==$" + base64.b64encode(b"x" * 32).decode(),
        "$scrypt$ln=10,r=8,p=1$c2FsdA==$",  # empty digest
    ],
)
def test_a_loaded_file_never_makes_verify_raise(tmp_path: Path, hashed: str) -> None:
    # A line that load() accepts must not turn every AUTH for that user into an internal
    # error (the session answers 451 and closes); refusing it at load time is the other way.
    path = write(tmp_path, f"erin:{hashed}\n")
    try:
        loaded = Credentials.load(path)
    except CredentialsError:
        return
    assert loaded.verify("erin", "anything") is False


# --- base64 and PLAIN ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data"),
    [("", b""), ("YWJj", b"abc"), ("AGFsaWNlAHB3", b"\x00alice\x00pw"), ("w7w=", "ü".encode())],
)
def test_decode_b64(text: str, data: bytes) -> None:
    assert decode_b64(text) == data


@pytest.mark.parametrize("text", ["YWJ", "YW Jj", "YWJj\n", "!!!!", "w7w", "ü", "YWJj*"])
def test_decode_b64_refusals(text: str) -> None:
    with pytest.raises(SaslError, match=r"^invalid base64$"):
        decode_b64(text)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"\x00alice\x00pw", ("alice", "pw")),
        (b"alice\x00alice\x00pw", ("alice", "pw")),
        (b"\x00\x00", ("", "")),
        ("\x00jürgen\x00pässwörd".encode(), ("jürgen", "pässwörd")),
    ],
)
def test_parse_plain(response: bytes, expected: tuple[str, str]) -> None:
    assert parse_plain(response) == expected


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"", "malformed PLAIN response"),
        (b"alice", "malformed PLAIN response"),
        (b"\x00alice", "malformed PLAIN response"),
        (b"\x00alice\x00pw\x00", "malformed PLAIN response"),
        (b"bob\x00alice\x00pw", "authorization identity differs from authentication identity"),
    ],
)
def test_parse_plain_refusals(response: bytes, reason: str) -> None:
    with pytest.raises(SaslError, match=f"^{reason}$"):
        parse_plain(response)


@FUZZ
@given(st.text(max_size=40))
def test_decode_b64_raises_only_sasl_error(text: str) -> None:
    try:
        data = decode_b64(text)
    except SaslError:
        return
    assert decode_b64(base64.b64encode(data).decode()) == data


@FUZZ
@given(st.binary(max_size=40))
def test_parse_plain_raises_only_sasl_error(response: bytes) -> None:
    try:
        user, password = parse_plain(response)
    except SaslError:
        return
    assert response.count(b"\x00") == 2
    assert isinstance(user, str)
    assert isinstance(password, str)
