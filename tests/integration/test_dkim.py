"""DKIM signing by a running ingress: keys for two domains (RSA 2048, Ed25519), messages
sent over SMTP, stored bodies checked by an independent verifier against the TXT records a
test DNS server publishes."""

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.integration.test_cli import run_cli
from tests.servers.dkim_records import txt_record, write_key, zone_text
from tests.servers.dkim_verify import dns_lookup, verify
from tests.servers.dns_server import DnsServer
from tests.servers.httpprobe import metric
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient

RSA_SELECTOR, ED_SELECTOR = "s2026", "e2026"


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, DnsServer]]:
    """rsa.test signs with RSA 2048, ed.test with Ed25519; their records in DNS."""
    directory = tmp_path_factory.mktemp("dkim")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    write_key(directory, RSA_SELECTOR, "rsa.test", rsa_key)
    write_key(directory, ED_SELECTOR, "ed.test", ed_key)
    dns = DnsServer().start()
    dns.add(f"{RSA_SELECTOR}._domainkey.rsa.test", "TXT", zone_text(txt_record(rsa_key)))
    dns.add(f"{ED_SELECTOR}._domainkey.ed.test", "TXT", zone_text(txt_record(ed_key)))
    yield directory, dns
    dns.stop()


@pytest.fixture(scope="module")
def dkim_ingress(
    keys_dir: tuple[Path, DnsServer],
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[IngressProcess]:
    log = tmp_path_factory.mktemp("ingress") / "ingress.log"
    values = {
        "redis_url": redis_server.url,
        "relay_networks": "127.0.0.1/32",
        "dkim_keys_dir": str(keys_dir[0]),
    }
    process = IngressProcess(values, log).start()
    yield process
    process.stop(timeout=10)


def send(ingress: IngressProcess, author: str, body: bytes = b"Hello.\r\n") -> str:
    """One message from ``author`` (envelope sender bounce@envelope.test); its queue id."""
    message = f"From: {author}\r\nTo: r@dest.test\r\nSubject: test\r\n\r\n".encode() + body
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction("bounce@envelope.test", ["r@dest.test"], message)
    assert code == 250, text
    return text.rsplit(" ", 1)[1]


def stored(spool: SpoolClient, queue_id: str) -> bytes:
    body = spool.get(f"mxf:body:{queue_id}")
    assert body is not None
    return body


def test_each_domain_signs_with_its_key(
    dkim_ingress: IngressProcess, keys_dir: tuple[Path, DnsServer], spool: SpoolClient
) -> None:
    dns = keys_dir[1]
    lookup = dns_lookup(dns.resolver())
    port = dkim_ingress.metrics_port
    before = {
        algorithm: metric(port, "mxfleet_ingress_dkim_signatures_total", algorithm=algorithm)
        for algorithm in ("rsa-sha256", "ed25519-sha256")
    }
    rsa_id = send(dkim_ingress, "News <news@rsa.test>")
    ed_id = send(dkim_ingress, "alerts@Ed.Test")
    rsa_body, ed_body = stored(spool, rsa_id), stored(spool, ed_id)
    # our Received field first, then the signature, then the message
    assert rsa_body.startswith(b"Received: from client.test")
    assert rsa_body.index(b"\r\nDKIM-Signature: v=1; a=rsa-sha256;") < rsa_body.index(b"From:")
    # it covers the Message-ID: and Date: the ingress added, never a Received: field
    signature = rsa_body.split(b"DKIM-Signature:")[1].split(b"\r\nFrom:")[0]
    assert b";h=from:to:subject:message-id:date:from:to:subject;" in re.sub(rb"\s", b"", signature)
    assert [(v.algorithm, v.domain, v.selector, v.reason) for v in verify(rsa_body, lookup)] == [
        ("rsa-sha256", "rsa.test", RSA_SELECTOR, "pass")
    ]
    assert [(v.algorithm, v.domain, v.selector, v.reason) for v in verify(ed_body, lookup)] == [
        ("ed25519-sha256", "ed.test", ED_SELECTOR, "pass")
    ]
    assert dns.query_count(f"{RSA_SELECTOR}._domainkey.rsa.test", "TXT") >= 1
    assert metric(port, "mxfleet_ingress_dkim_signatures_total", algorithm="rsa-sha256") == (
        before["rsa-sha256"] + 1
    )
    assert metric(port, "mxfleet_ingress_dkim_signatures_total", algorithm="ed25519-sha256") == (
        before["ed25519-sha256"] + 1
    )


def test_the_signature_survives_relaying_and_catches_tampering(
    dkim_ingress: IngressProcess, keys_dir: tuple[Path, DnsServer], spool: SpoolClient
) -> None:
    lookup = dns_lookup(keys_dir[1].resolver())
    body = stored(spool, send(dkim_ingress, "a@rsa.test", b"Line one.  \r\n.\r\n\r\n"))
    # What a worker sends is the stored body; the next hop puts its Received field on top.
    relayed = b"Received: from mx.test by mx.dest.test with ESMTPS; now\r\n" + body
    assert [v.reason for v in verify(relayed, lookup)] == ["pass"]
    assert [v.reason for v in verify(body.replace(b"Line one.", b"Line 1."), lookup)] == [
        "body hash mismatch"
    ]
    assert [v.reason for v in verify(body.replace(b"test\r\n", b"TEST\r\n"), lookup)] == [
        "signature mismatch"
    ]


def test_a_domain_without_a_key_is_stored_unsigned(
    dkim_ingress: IngressProcess, spool: SpoolClient
) -> None:
    port = dkim_ingress.metrics_port
    before = metric(port, "mxfleet_ingress_dkim_messages_total", result="no_key")
    signed_before = metric(port, "mxfleet_ingress_dkim_messages_total", result="signed")
    body = stored(spool, send(dkim_ingress, "someone@nokey.test"))
    assert b"DKIM-Signature" not in body
    assert b"\r\nFrom: someone@nokey.test\r\nTo: r@dest.test\r\nSubject: test\r\n" in body
    assert metric(port, "mxfleet_ingress_dkim_messages_total", result="no_key") == before + 1
    assert metric(port, "mxfleet_ingress_dkim_messages_total", result="signed") == signed_before


def test_a_bad_key_file_stops_the_ingress_at_start(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = tmp_path / "dkim"
    keys.mkdir()
    bad = keys / "s1._domainkey.example.com.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    values = {"redis_url": redis_server.url, "dkim_keys_dir": str(keys)}
    process = IngressProcess(values, tmp_path / "ingress.log")
    with pytest.raises(AssertionError, match="ingress exited with 2"):
        process.start()
    assert f'event=dkim_keys_invalid error="{bad}: not a PEM private key"' in process.log()


def test_a_bad_key_file_stops_a_worker_at_start(redis_server: RedisServer, tmp_path: Path) -> None:
    # Workers read the same directory for the DSNs they sign.
    keys = tmp_path / "dkim"
    keys.mkdir()
    bad = keys / "s1._domainkey.example.com.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    env = {"MXFLEET_REDIS_URL": redis_server.url, "MXFLEET_DKIM_KEYS_DIR": str(keys)}
    done = run_cli("worker", env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f'event=dkim_keys_invalid error="{bad}: not a PEM private key"' in done.stderr
