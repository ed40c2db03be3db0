"""shared/dkim_keys.py: the key directory, its file names, the keys that sign."""

import logging
import os
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ingress.dkim_sign import load_signer
from shared.dkim_keys import DkimKeyError, KeyRing, parse_name
from shared.settings import load_settings
from tests.servers.dkim_records import pem, write_key

# 512 bits: loadable, far too small to sign with (cryptography makes none under 1024)
SMALL_RSA = b"""-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAoZClIEsIfTphKsCr
sXhSKzSWD0IPjb+Hoyziue81LT0SOJt/iKlN6E6FP6Z0P+SV5EH9XezKh3VaRaYL
aSzCgQIDAQABAkEAnwX6IfD4qBngLe56kDG33uLhmJ8TJBgS719swkpacu0K2JDa
u919VyGnW39bds/YfW7kYd8Ccupge17UaE7d4QIhANRsOyz4oEGcFxX3tW9nNLyv
fNdk06xvyPN6uFX2VhTdAiEAwrWGr5212FSBy/vF2CzI5rPK1QamP5qUREpdH/Iv
x/UCIB1ocnTSYtVSd7u51Gt83Uc2AFGNiuR3gVl75uM3vEkdAiEAiSGqK1OK+EKE
a/L144ufLwSfrSsSuacYF4S8U7yRtGUCIBWTYu5KNgn8Vd9lBYhfJE/N5J0FkIuu
PLQohwLXzPpe
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    # the smallest size DKIM allows (RFC 8301 §3.2), and quick to make
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@pytest.fixture
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def test_the_key_type_sets_the_algorithm(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    (tmp_path / "r1._domainkey.example.com.key").write_bytes(pem(rsa_key, pkcs8=False))
    write_key(tmp_path, "r2", "example.org", rsa_key)  # PKCS#8
    write_key(tmp_path, "e1", "Example.COM", ed_key)
    ring = KeyRing.load(tmp_path)
    described = [key.describe() for key in ring.signing]
    assert described == [
        "example.com:e1(ed25519-sha256)",
        "example.com:r1(rsa-sha256,1024)",
        "example.org:r2(rsa-sha256,1024)",
    ]
    assert [key.algorithm for key in ring.signing_keys("example.com")] == [
        "ed25519-sha256",
        "rsa-sha256",
    ]


def test_the_last_selector_of_each_algorithm_signs(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    for selector in ("2025a", "2026a", "2025b"):
        write_key(tmp_path, selector, "example.com", rsa_key)
    write_key(tmp_path, "2024e", "example.com", ed_key)
    ring = KeyRing.load(tmp_path)
    assert len(ring.keys) == 4
    assert sorted(key.selector for key in ring.signing_keys("example.com")) == ["2024e", "2026a"]


def test_a_parent_domain_key_signs_for_subdomains(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    write_key(tmp_path, "s1", "example.com", rsa_key)
    write_key(tmp_path, "s2", "mail.example.com", rsa_key)
    write_key(tmp_path, "s3", "com.test", rsa_key)
    ring = KeyRing.load(tmp_path)

    def selectors(domain: str) -> list[str]:
        return [key.selector for key in ring.signing_keys(domain)]

    assert selectors("example.com") == ["s1"]
    assert selectors("news.example.com") == ["s1"]  # DMARC relaxed alignment
    assert selectors("a.b.example.com") == ["s1"]
    assert selectors("mail.example.com") == ["s2"]  # its own key first
    assert selectors("x.mail.example.com") == ["s2"]
    assert selectors("example.org") == []
    assert selectors("com") == []
    assert selectors("test") == []  # never a bare top-level domain, even with com.test


def test_a_kubernetes_secret_volume_loads_as_it_is(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    # What the kubelet writes: a timestamped directory, ..data pointing to it, and one
    # symlink per key of the Secret.
    stamped = tmp_path / "..2026_11_29_08_00_00.123456789"
    stamped.mkdir()
    write_key(stamped, "s1", "example.com", rsa_key)
    (tmp_path / "..data").symlink_to(stamped.name)
    name = "s1._domainkey.example.com.key"
    (tmp_path / name).symlink_to(f"..data/{name}")
    ring = KeyRing.load(tmp_path)
    assert [key.describe() for key in ring.signing] == ["example.com:s1(rsa-sha256,1024)"]
    assert ring.ignored == []


def test_files_not_named_key_are_ignored_and_reported(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    write_key(tmp_path, "s1", "example.com", rsa_key)
    (tmp_path / "s1._domainkey.example.com.txt").write_text("v=DKIM1; k=rsa; p=...")
    (tmp_path / ".hidden.key").write_text("not a key: hidden, skipped")
    ring = KeyRing.load(tmp_path)
    assert [key.selector for key in ring.keys] == ["s1"]
    assert ring.ignored == [tmp_path / "s1._domainkey.example.com.txt"]


def test_an_empty_directory_loads_no_key(tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path)
    assert not ring
    assert ring.signing_keys("example.com") == ()


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("example.com.key", "name it <selector>._domainkey.<domain>.key"),
        ("s1.example.com.key", "name it <selector>._domainkey.<domain>.key"),
        ("s_1._domainkey.example.com.key", "'s_1' is not a selector"),
        ("-s._domainkey.example.com.key", "'-s' is not a selector"),
        ("._domainkey.example.com.key", "'' is not a selector"),
        ("s1._domainkey.localhost.key", "'localhost' is not a domain"),
        ("s1._domainkey.a..b.key", "'a..b' is not a domain"),
    ],
)
def test_bad_file_names(name: str, problem: str) -> None:
    with pytest.raises(ValueError, match="^" + problem.replace(".", r"\.")):
        parse_name(name)


def test_file_names_are_read_case_insensitively() -> None:
    assert parse_name("Sel.2026._domainkey.Bücher.Example.key") == (
        "sel.2026",
        "xn--bcher-kva.example",
    )


def _encrypted(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (lambda k: b"", "not a PEM private key"),
        (lambda k: b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
         "not a PEM private key"),
        (lambda k: k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
         "not a PEM private key"),
        (_encrypted, "the key is encrypted: store it without a passphrase"),
        (lambda k: SMALL_RSA, "RSA key of 512 bits: at least 1024 needed"),
        (lambda k: pem(ec.generate_private_key(ec.SECP256R1())),  # type: ignore[arg-type]
         "an EC key: DKIM signs with RSA or Ed25519 keys"),
        (lambda k: pem(ed448.Ed448PrivateKey.generate()),  # type: ignore[arg-type]
         "an Ed448 key: DKIM signs with RSA or Ed25519 keys"),
    ],
)  # fmt: skip
def test_a_bad_key_file_is_an_error_naming_it(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, content: object, problem: str
) -> None:
    write_key(tmp_path, "good", "example.com", rsa_key)
    path = tmp_path / "s1._domainkey.example.org.key"
    assert callable(content)
    path.write_bytes(content(rsa_key))
    with pytest.raises(DkimKeyError) as info:
        KeyRing.load(tmp_path)
    assert str(info.value).startswith(f"{path}: ")
    assert str(info.value).endswith(problem)


def test_a_directory_inside_is_an_error(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "example.com").mkdir()
    write_key(tmp_path / "example.com", "s1", "example.com", rsa_key)
    with pytest.raises(DkimKeyError, match=re.escape("example.com: a directory: key files go in")):
        KeyRing.load(tmp_path)


def test_a_bad_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "example.com.key").write_text("whatever")
    with pytest.raises(DkimKeyError) as info:
        KeyRing.load(tmp_path)
    assert str(info.value) == (
        f"{tmp_path / 'example.com.key'}: name it <selector>._domainkey.<domain>.key"
    )


def test_an_unreadable_directory_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DkimKeyError) as info:
        KeyRing.load(missing)
    assert str(info.value) == f"dkim_keys_dir {missing}: cannot read: No such file or directory"


def test_an_unreadable_file_is_an_error(tmp_path: Path) -> None:
    # a dangling symlink: a Secret whose key vanished (root reads any mode, so no chmod)
    (tmp_path / "s1._domainkey.example.com.key").symlink_to(tmp_path / "gone")
    with pytest.raises(
        DkimKeyError, match=re.escape("s1._domainkey.example.com.key: cannot read: No such")
    ):
        KeyRing.load(tmp_path)


# --- the signer the ingress starts with ---------------------------------------------------


def test_without_the_setting_nothing_signs() -> None:
    signer = load_signer(load_settings({"MXFLEET_HOSTNAME": "mx.test"}))
    assert not signer.ring


def test_the_start_up_line_lists_the_keys(
    tmp_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_key(tmp_path, "a", "example.com", rsa_key)
    write_key(tmp_path, "b", "example.com", rsa_key)
    write_key(tmp_path, "e", "example.org", ed_key)
    (tmp_path / "README").write_text("")
    env = {"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_DKIM_KEYS_DIR": str(tmp_path)}
    with caplog.at_level(logging.INFO):
        signer = load_signer(load_settings(env))
    assert len(signer.ring.keys) == 3
    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        f"event=dkim_keys dir={tmp_path} "
        'signing="example.com:b(rsa-sha256,1024) example.org:e(ed25519-sha256)" '
        'standby="example.com:a(rsa-sha256,1024)"',
        f'event=dkim_file_ignored file={tmp_path / "README"} reason="not *.key"',
    ]


def test_a_directory_without_keys_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    env = {"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_DKIM_KEYS_DIR": str(tmp_path)}
    with caplog.at_level(logging.INFO):
        load_signer(load_settings(env))
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "signing=none" in record.getMessage()
    assert os.listdir(tmp_path) == []
