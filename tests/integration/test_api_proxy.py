"""The HTTP API behind a load balancer that sends PROXY headers (ingress/api_proxy.py).

The ingress trusts 127.0.0.3 as its load balancer; the address in its header is the client
(the envelope's ``client``, the Received: field). The header may share a segment with
what follows, HTTP or a TLS ClientHello; a client that is not the load balancer
(127.0.0.2) cannot claim another address. The readiness probes connect from 127.0.0.1,
which is not the load balancer.
"""

import contextlib
import http.client
import json
import resource
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import StartIngress
from tests.integration.test_api import MESSAGE, TOKEN, api_port, api_settings
from tests.integration.test_proxy_protocol import VERSIONS, Header, proxy_v2
from tests.servers.api_client import wait_for_api
from tests.servers.certs import Certificates, make_certificates
from tests.servers.crowd import cpu_seconds, settled_fds
from tests.servers.ingress_process import IngressProcess
from tests.servers.smtpcheck import body, envelope, stored_ids
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

LB, OUTSIDER, CLIENT = "127.0.0.3", "127.0.0.2", "192.0.2.7"
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00])  # LOCAL, no address


def request_bytes() -> bytes:
    payload = json.dumps(MESSAGE).encode()
    head = (
        "POST /v1/messages HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


def connect(ingress: IngressProcess, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", api_port(ingress)), 10, (source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    response = http.client.HTTPResponse(sock)  # an SSLSocket too
    response.begin()
    content = response.read()
    json_body = response.getheader("Content-Type", "").startswith("application/json")
    return response.status, json.loads(content) if json_body else {"body": content}


def post(
    ingress: IngressProcess, source: str, header: bytes = b""
) -> tuple[int, dict[str, object]]:
    """One request from ``source``, with ``header`` in the same write (one segment)."""
    with connect(ingress, source) as sock:
        sock.sendall(header + request_bytes())
        return answer(sock)


def post_tls(
    ingress: IngressProcess, certs: Certificates, header: bytes
) -> tuple[int, dict[str, object]]:
    """The header held back (MSG_MORE) to leave with the ClientHello, then the request."""
    raw = connect(ingress, LB)
    raw.send(header, socket.MSG_MORE)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(request_bytes())
        return answer(sock)


def tls_behind_lb(
    start_ingress: StartIngress, tmp_path: Path
) -> tuple[IngressProcess, Certificates]:
    """An ingress whose API is HTTPS only, behind the load balancer."""
    certs = make_certificates(tmp_path / "certs")
    settings = api_settings(tmp_path, tls_cert=str(certs.cert), tls_key=str(certs.key))
    del settings["api_allow_plaintext"]
    ingress = start_ingress(proxy_protocol_networks=f"{LB}/32", **settings)
    wait_for_api(api_port(ingress), certs.client_context())
    return ingress, certs


@pytest.fixture
def behind_lb(start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path) -> IngressProcess:
    ingress = start_ingress(
        proxy_protocol_networks=f"{LB}/32", api_request_timeout="2s", **api_settings(tmp_path)
    )
    wait_for_api(api_port(ingress))
    return ingress


@pytest.mark.parametrize("header", VERSIONS)
def test_the_address_in_the_header_is_the_client(
    behind_lb: IngressProcess, spool: SpoolClient, header: Header
) -> None:
    status, document = post(behind_lb, LB, header(CLIENT))
    assert status == 201, document
    msg_id = str(document["id"])
    assert envelope(spool, msg_id)["client"] == CLIENT
    assert body(spool, msg_id).startswith(f"Received: from shop ([{CLIENT}])".encode())


@pytest.mark.parametrize("header", VERSIONS)
def test_the_header_before_a_tls_handshake(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path, header: Header
) -> None:
    ingress, certs = tls_behind_lb(start_ingress, tmp_path)
    status, document = post_tls(ingress, certs, header(CLIENT))
    assert status == 201, document
    env = envelope(spool, str(document["id"]))
    assert (env["client"], env["proto"]) == (CLIENT, "ESMTPSA")


def test_a_header_in_pieces_is_waited_for(behind_lb: IngressProcess, spool: SpoolClient) -> None:
    header = proxy_v2(CLIENT)
    with connect(behind_lb, LB) as sock:
        for piece in (header[:5], header[5:17], header[17:]):
            sock.sendall(piece)
            time.sleep(0.1)
        sock.sendall(request_bytes())
        status, document = answer(sock)
    assert status == 201, document
    assert envelope(spool, str(document["id"]))["client"] == CLIENT


def test_a_local_header_keeps_the_load_balancers_address(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    status, document = post(behind_lb, LB, V2_LOCAL)
    assert status == 201, document
    assert envelope(spool, str(document["id"]))["client"] == LB


def test_the_load_balancer_without_a_header_is_closed_unanswered(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    # HTTP at once, no PROXY header: closed unanswered (reset: the request went unread)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        post(behind_lb, LB)
    assert stored_ids(spool) == set()
    wait_until(lambda: "event=proxy_refused" in behind_lb.log(), timeout=5)
    assert f"peer={LB}" in behind_lb.log()


def test_a_header_that_never_ends_is_cut_at_the_request_timeout(
    behind_lb: IngressProcess,
) -> None:
    with connect(behind_lb, LB) as sock:
        sock.sendall(b"PROXY TCP4 192.0.2.7 ")
        started = time.monotonic()
        sock.settimeout(10)
        with contextlib.suppress(ConnectionResetError):  # reset: the partial header unread
            assert sock.recv(100) == b""  # closed unanswered
        waited = time.monotonic() - started
    assert 1.5 < waited < 6, waited
    wait_until(lambda: "no PROXY header in time" in behind_lb.log(), timeout=5)


@pytest.mark.parametrize("header", VERSIONS)
def test_another_client_cannot_claim_an_address(
    behind_lb: IngressProcess, spool: SpoolClient, header: Header
) -> None:
    status, _ = post(behind_lb, OUTSIDER, header(CLIENT))
    assert status == 400  # a PROXY line is no HTTP request line
    assert stored_ids(spool) == set()
    status, document = post(behind_lb, OUTSIDER)
    assert status == 201, document
    assert envelope(spool, str(document["id"]))["client"] == OUTSIDER


def test_tls_from_another_client_is_served_as_it_is(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    ingress, certs = tls_behind_lb(start_ingress, tmp_path)
    raw = connect(ingress, OUTSIDER)
    with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(request_bytes())
        status, document = answer(sock)
    assert status == 201, document
    assert envelope(spool, str(document["id"]))["client"] == OUTSIDER
    with pytest.raises(http.client.RemoteDisconnected):  # plain HTTP: closed unanswered
        post(ingress, OUTSIDER)
    wait_for_api(api_port(ingress), certs.client_context())  # and the node goes on


def test_connections_waiting_for_their_header_count_against_the_cap(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    ingress = start_ingress(
        proxy_protocol_networks=f"{LB}/32", api_max_connections="4", **api_settings(tmp_path)
    )
    wait_for_api(api_port(ingress))
    waiting = [connect(ingress, LB) for _ in range(4)]  # the load balancer, header unsent
    try:
        time.sleep(0.3)  # all four accepted
        with connect(ingress, LB) as fifth:
            fifth.settimeout(5)
            started = time.monotonic()
            assert fifth.recv(100) == b""  # closed at once, long before the header's timeout
            assert time.monotonic() - started < 2
    finally:
        for sock in waiting:
            sock.close()
    gone = "closed before the PROXY header was whole"
    wait_until(lambda: ingress.log().count(gone) == 4, timeout=5)
    status, document = post(ingress, LB, proxy_v2(CLIENT))  # room again
    assert status == 201, document


def test_out_of_descriptors_a_connection_waits_and_is_then_served(
    behind_lb: IngressProcess, spool: SpoolClient
) -> None:
    assert behind_lb.process is not None
    pid = behind_lb.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (settled_fds(pid), limits[1]))  # none free
    try:
        sock = connect(behind_lb, LB)  # the kernel completes it; the node cannot accept it
        sock.sendall(proxy_v2(CLIENT) + request_bytes())
        cpu_before = cpu_seconds(pid)
        time.sleep(1.0)
        spent = cpu_seconds(pid) - cpu_before
        assert spent < 0.25, spent  # it waits without spinning on accept()
        assert behind_lb.process.poll() is None
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    with sock:
        status, document = answer(sock)  # served once a descriptor is free
    assert status == 201, document
    assert envelope(spool, str(document["id"]))["client"] == CLIENT
