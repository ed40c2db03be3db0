"""PROXY protocol v1/v2 from a trusted load balancer, and only from it (invariant 6).

The ingress trusts 127.0.0.3 as its load balancer and lets 192.0.2.0/24 relay; the address
in the PROXY header is the client for every decision, and a client that is not the load
balancer (127.0.0.2) cannot claim another address. (The load balancer is not 127.0.0.1
because the fixture's readiness probe connects from there and waits for a greeting.)
"""

import ipaddress
import struct
from collections.abc import Callable

import pytest

from shared import replies
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import body, envelope, queued_id, spool_keys, wire
from tests.servers.spool_client import SpoolClient

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
LB, OUTSIDER = "127.0.0.3", "127.0.0.2"
ALLOWED, DENIED = "192.0.2.7", "198.51.100.7"
MESSAGE = b"Subject: proxied\r\n\r\nhello through the load balancer\r\n"


def proxy_v1(client: str, server: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    return f"PROXY TCP4 {client} {server} {sport} {dport}\r\n".encode()


def proxy_v2(client: str, server: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    block = (
        ipaddress.IPv4Address(client).packed
        + ipaddress.IPv4Address(server).packed
        + struct.pack("!HH", sport, dport)
    )
    # version 2, command PROXY (0x21); TCP over IPv4 (0x11)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(block)) + block


Header = Callable[[str], bytes]
VERSIONS = [pytest.param(proxy_v1, id="v1"), pytest.param(proxy_v2, id="v2")]


@pytest.fixture
def behind_lb(start_ingress: StartIngress, spool: SpoolClient) -> IngressProcess:
    return start_ingress(proxy_protocol_networks=f"{LB}/32", relay_networks="192.0.2.0/24")


def proxied(ingress: IngressProcess, header: bytes) -> RawSMTP:
    """A session from the load balancer that sent ``header`` first, then read the greeting."""
    smtp = RawSMTP(ingress.host, ingress.port, source=LB, read_greeting=False)
    smtp.send(header)
    smtp.greeting = smtp.reply()
    return smtp


@pytest.mark.parametrize("header", VERSIONS)
def test_the_address_in_the_header_may_relay(
    behind_lb: IngressProcess, spool: SpoolClient, header: Header
) -> None:
    with proxied(behind_lb, header(ALLOWED)) as smtp:
        assert smtp.greeting is not None
        assert smtp.greeting[0] == 220
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE)
    assert code == 250, text
    msg_id = queued_id(text)
    assert envelope(spool, msg_id)["client"] == ALLOWED
    assert body(spool, msg_id).startswith(f"Received: from client.test ([{ALLOWED}])".encode())


@pytest.mark.parametrize("header", VERSIONS)
def test_the_address_in_the_header_may_be_denied(
    behind_lb: IngressProcess, spool: SpoolClient, header: Header
) -> None:
    # The load balancer is not in relay_networks either: what counts is the claimed address.
    with proxied(behind_lb, header(DENIED)) as smtp:
        assert smtp.greeting is not None
        assert smtp.greeting[0] == 220
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
    assert spool_keys(spool) == []
    assert f"client={DENIED}" in behind_lb.log()


def test_header_and_commands_in_one_packet(behind_lb: IngressProcess, spool: SpoolClient) -> None:
    smtp = RawSMTP(behind_lb.host, behind_lb.port, source=LB, read_greeting=False)
    with smtp:
        smtp.send(proxy_v1(ALLOWED) + b"EHLO client.test\r\nNOOP\r\n")
        assert smtp.reply()[0] == 220
        assert smtp.reply()[0] == 250
        assert smtp.reply() == wire(replies.NOOP_OK)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE, ehlo=False)
    assert code == 250, text
    assert envelope(spool, queued_id(text))["client"] == ALLOWED


INVALID_STARTS = {
    "no header": b"EHLO client.test\r\n",
    "bad v1 address": b"PROXY TCP4 192.0.2.999 127.0.0.1 40000 25\r\n",
    "v1 family mismatch": b"PROXY TCP6 192.0.2.7 127.0.0.1 40000 25\r\n",
    "v1 too long": b"PROXY " + b"x" * 200 + b"\r\n",
    "v2 bad version": V2_SIGNATURE + b"\x31\x11\x00\x0c" + b"\x00" * 12,
}


def test_trusted_peer_without_a_valid_header_is_closed_without_greeting(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    for case, first_bytes in INVALID_STARTS.items():
        smtp = RawSMTP(behind_lb.host, behind_lb.port, source=LB, read_greeting=False)
        with smtp:
            smtp.send(first_bytes)
            assert smtp.closed_by_peer(timeout=10), case
            assert smtp._buf == b"", f"{case}: the server said something before closing"
    assert behind_lb.log().count("event=proxy_refused") == len(INVALID_STARTS)
    # The node still serves its load balancer.
    with proxied(behind_lb, proxy_v1(ALLOWED)) as good:
        assert good.greeting is not None
        assert good.greeting[0] == 220


def test_untrusted_peer_cannot_spoof_its_address_with_v1(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    # The outsider is not in proxy_protocol_networks: it is greeted at once, and a PROXY line
    # it sends is just an unknown command.
    with RawSMTP(behind_lb.host, behind_lb.port, source=OUTSIDER) as smtp:
        assert smtp.greeting is not None
        assert smtp.greeting[0] == 220
        assert smtp.cmd(proxy_v1(ALLOWED).rstrip(b"\r\n")) == wire(replies.UNKNOWN_COMMAND)
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
    assert spool_keys(spool) == []
    assert f"client={ALLOWED}" not in behind_lb.log()


def test_untrusted_peer_cannot_spoof_its_address_with_v2(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    # The v2 signature holds a QUIT line on purpose: a server that does not expect the
    # header ends the session; what follows it is never executed.
    with RawSMTP(behind_lb.host, behind_lb.port, source=OUTSIDER) as smtp:
        assert smtp.greeting is not None
        assert smtp.greeting[0] == 220
        smtp.send(
            proxy_v2(ALLOWED)
            + b"EHLO client.test\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@dest.test>\r\n"
        )
        assert smtp.closed_by_peer(timeout=10)
        answers = []
        while b"\r\n" in smtp._buf:
            answers.append(smtp.reply())
    assert answers, "no reply at all"
    assert answers[-1] == wire(replies.BYE), answers
    assert wire(replies.RECIPIENT_OK) not in answers
    assert spool_keys(spool) == []
    with RawSMTP(behind_lb.host, behind_lb.port, source=OUTSIDER) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
