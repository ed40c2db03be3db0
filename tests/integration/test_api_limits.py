"""The HTTP API's connections are bounded: a cap per process, and a deadline for each
request (slowloris in the request line, the fields or the body)."""

import socket
import time
from pathlib import Path

from tests.conftest import StartIngress
from tests.integration.test_api import MESSAGE, TOKEN, api_port, api_settings
from tests.servers.api_client import ApiClient, wait_for_api
from tests.servers.wait import wait_until

TIMEOUT = 2.0  # api_request_timeout in these tests


def closed_by_peer(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed ``sock`` within ``within`` seconds; what it sent first."""
    sock.settimeout(within)
    try:
        data = sock.recv(4096)
    except TimeoutError:
        return False, b""
    return True, data


def test_connections_over_the_cap_get_503_and_others_are_served_again(
    start_ingress: StartIngress, tmp_path: Path
) -> None:
    ingress = start_ingress(api_max_connections="3", **api_settings(tmp_path))
    port = api_port(ingress)
    wait_for_api(port)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        with socket.create_connection(("127.0.0.1", port)) as extra:
            closed, data = closed_by_peer(extra, 5)
        assert closed
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert b"Retry-After: 5" in data
    finally:
        for sock in held:
            sock.close()
    # once the node has seen them close, there is room again
    wait_until(lambda: fresh_send(port) == 201, timeout=5)


def fresh_send(port: int) -> int:
    """The status of one message sent over a new connection (0: no answer)."""
    try:
        with ApiClient(port, TOKEN) as api:
            return api.send(MESSAGE).status
    except OSError:
        return 0


def test_a_request_trickled_in_is_cut_at_its_deadline(
    start_ingress: StartIngress, tmp_path: Path
) -> None:
    ingress = start_ingress(api_request_timeout=f"{TIMEOUT}s", **api_settings(tmp_path))
    port = api_port(ingress)
    wait_for_api(port)
    head = (
        f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    cases = {"fields": head[:40], "body": head + b'{"from": '}  # then a byte every 0.5 s
    for name, start in cases.items():
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(start)
            opened = time.monotonic()
            closed = False
            while not closed and time.monotonic() - opened < TIMEOUT + 5:
                try:
                    sock.sendall(b"x" if name == "fields" else b" ")
                except OSError:
                    closed = True
                    break
                closed, _ = closed_by_peer(sock, 0.5)
            took = time.monotonic() - opened
            assert closed, name
            assert TIMEOUT - 0.5 < took < TIMEOUT + 3, (name, took)
    with ApiClient(port, TOKEN) as api:  # the node still serves well-behaved clients
        assert api.send(MESSAGE).status == 201
