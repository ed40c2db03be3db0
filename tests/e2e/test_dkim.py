"""A signed message as the destination receives it: SMTP in, a worker's relay out, and the
signature still verifies at the sink (against the TXT record in DNS); and a DSN that a
worker writes, signed for the relay's own domain."""

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from shared.replies import Reply
from tests.servers.dkim_records import txt_record, write_key, zone_text
from tests.servers.dkim_verify import dns_lookup, verify
from tests.servers.fleet import Fleet
from tests.servers.smtp_sink import Behaviour
from tests.servers.wait import wait_until

# dot-stuffed on both hops, 8-bit text, whitespace that relaxed canonicalisation folds
BODY = (
    "From: News <news@example.test>\r\nTo: r@dest.test\r\nSubject: Grüße\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\n"
    "Hallo  Welt,\t\r\n.a line that starts with a dot\r\n..\r\n\r\nTschüss\r\n"
).encode()


def test_the_signature_verifies_at_the_destination(fleet: Fleet) -> None:
    keys = fleet.workdir / "dkim"
    keys.mkdir()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(keys, "s1", "example.test", key)
    fleet.dns.add("s1._domainkey.example.test", "TXT", zone_text(txt_record(key)))
    sink = fleet.sink("dest.test", "127.0.0.2")
    fleet.up(dkim_keys_dir=str(keys))
    fleet.send("bounce@example.test", ["r@dest.test"], BODY)  # smtplib dot-stuffs it
    wait_until(lambda: sink.messages, timeout=30)
    data = sink.messages[0].data
    assert data.endswith(BODY.split(b"\r\n\r\n", 1)[1])
    verdicts = verify(data, dns_lookup(fleet.dns.resolver()))
    assert [(v.domain, v.algorithm, v.reason) for v in verdicts] == [
        ("example.test", "rsa-sha256", "pass")
    ]


def test_a_dsn_is_signed_for_the_relays_own_domain(fleet: Fleet) -> None:
    keys = fleet.workdir / "dkim"
    keys.mkdir()
    # The fleet's hostname is mx.fleet.test: its DSNs come from MAILER-DAEMON@mx.fleet.test
    # and the nearest parent domain with keys signs them.
    relay_key = ed25519.Ed25519PrivateKey.generate()
    write_key(keys, "r1", "fleet.test", relay_key)
    fleet.dns.add("r1._domainkey.fleet.test", "TXT", zone_text(txt_record(relay_key)))
    refusal = Reply(550, "5.1.1", "No such user here")
    dest = fleet.sink("dest.test", "127.0.0.2", Behaviour(rcpt_default=refusal))
    home = fleet.sink("example.test", "127.0.0.3")
    fleet.up(dkim_keys_dir=str(keys))
    fleet.send("bounce@example.test", ["nobody@dest.test"], BODY)
    wait_until(lambda: home.messages, timeout=30)
    dsn = home.messages[0]
    assert (dsn.mail_from, dsn.rcpt_tos) == ("", ("bounce@example.test",))
    assert b"From: Mail Delivery System <MAILER-DAEMON@mx.fleet.test>" in dsn.data
    verdicts = verify(dsn.data, dns_lookup(fleet.dns.resolver()))
    assert [(v.domain, v.algorithm, v.reason) for v in verdicts] == [
        ("fleet.test", "ed25519-sha256", "pass")
    ]
    assert not dest.messages
