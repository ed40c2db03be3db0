"""The HTTP injection API against a real ingress process and Redis: a 201 means durable,
as a 250 does; every refusal is JSON naming its cause; auth, limits, TLS and the drain."""

import base64
import contextlib
import http.client
import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from shared import replies
from shared.embedded import free_port
from tests.conftest import StartIngress, StartRedis
from tests.integration.test_suppression_rcpt import listing_of, suppress
from tests.servers.api_client import ApiClient, wait_for_api
from tests.servers.certs import make_certificates
from tests.servers.httpprobe import http_get, metric
from tests.servers.ingress_process import IngressProcess
from tests.servers.ports import free_ports
from tests.servers.redis_server import RedisServer
from tests.servers.smtpcheck import body, envelope, stored_ids
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

TOKEN = "shop-token-" + "s" * 24
OTHER = "unnamed-token-" + "u" * 24
MESSAGE: dict[str, Any] = {
    "from": "sender@example.test",
    "to": ["a@dest.test", "b@Dest.test", "c@other.test"],
    "subject": "Hello",
    "text": "plain text",
    "html": "<p>html</p>",
    "headers": {"X-Campaign": "spring"},
}
RAW = (
    b"Subject: raw\r\nFrom: s@example.test\r\nMessage-ID: <raw1@client.test>\r\n"
    b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n\r\nbody\r\n"
)


def tokens_file(directory: Path) -> Path:
    path = directory / "api-tokens"
    path.write_text(f"# test clients\nshop:{TOKEN}\n{OTHER}\n", "utf-8")
    return path


def api_settings(directory: Path, **extra: str) -> dict[str, str]:
    return {
        "api_listen": f"127.0.0.1:{free_port()}",
        "api_tokens_file": str(tokens_file(directory)),
        "api_allow_plaintext": "true",
        **extra,
    }


def api_port(ingress: IngressProcess) -> int:
    return int(ingress.env["MXFLEET_API_LISTEN"].rsplit(":", 1)[1])


def raw_message(message: bytes = RAW, sender: str = "s@example.test") -> dict[str, Any]:
    return {
        "envelope": {"from": sender, "to": ["r@dest.test"]},
        "raw": base64.b64encode(message).decode(),
    }


@pytest.fixture(scope="module")
def api_ingress(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngressProcess]:
    """One ingress with the API on (plain HTTP, small limits) for this module's tests."""
    directory = tmp_path_factory.mktemp("api")
    values = {
        "redis_url": redis_server.url,
        "relay_networks": "127.0.0.1/32",
        "max_message_size": "100KiB",
        "api_max_request_size": "1MiB",
        **api_settings(directory),
    }
    process = IngressProcess(values, directory / "ingress.log").start()
    wait_for_api(api_port(process))
    yield process
    process.stop(timeout=10)


@pytest.fixture
def client(api_ingress: IngressProcess, spool: SpoolClient) -> Iterator[ApiClient]:
    with ApiClient(api_port(api_ingress), TOKEN) as api:
        yield api


# --- accepted: durable, and the same as over SMTP --------------------------------------


def test_a_message_from_fields_is_in_the_spool(client: ApiClient, spool: SpoolClient) -> None:
    answer = client.send(MESSAGE)
    assert answer.status == 201, answer.body
    assert answer.headers["Content-Type"].startswith("application/json")
    msg_id = answer.json["id"]
    env = envelope(spool, msg_id)
    assert (env["from"], env["rcpts"], env["jobs_left"]) == ("sender@example.test", "3", "2")
    assert (env["client"], env["helo"], env["auth"], env["proto"]) == (
        "127.0.0.1", "shop", "shop", "ESMTPA"
    )  # fmt: skip
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"a@dest.test", b"b@Dest.test"}
    assert spool.smembers(f"mxf:rcpt:{msg_id}:other.test") == {b"c@other.test"}
    assert set(spool.zrange("mxf:due", 0, -1)) == {b"dest.test", b"other.test"}
    for domain in ("dest.test", "other.test"):  # one job per domain, scheduled (bulk)
        assert spool.hget(f"mxf:job:{msg_id}:{domain}", "attempts") == b"0"
        assert spool.zscore(f"mxf:sched:{domain}", msg_id) is not None
    stored = body(spool, msg_id)
    assert stored.startswith(
        b"Received: from shop ([127.0.0.1])\r\n\tby mx.test with ESMTPA id " + msg_id.encode()
    )
    assert f"Message-ID: <{msg_id}@mx.test>\r\n".encode() in stored
    assert b"\r\nDate: " in stored
    for line in (b"From: sender@example.test", b"Subject: Hello", b"X-Campaign: spring"):
        assert b"\r\n" + line + b"\r\n" in stored
    assert b"multipart/alternative" in stored
    assert b"<p>html</p>" in stored


def test_a_raw_message_is_stored_byte_exact(client: ApiClient, spool: SpoolClient) -> None:
    answer = client.send(raw_message(sender=""))
    assert answer.status == 201, answer.body
    msg_id = answer.json["id"]
    stored = body(spool, msg_id)
    assert stored.endswith(RAW)
    assert stored[: -len(RAW)].count(b"\r\n") == 3  # only the Received: field was added
    assert envelope(spool, msg_id)["from"] == ""


def test_the_priority_given_is_the_message_class(client: ApiClient, spool: SpoolClient) -> None:
    answer = client.send({**MESSAGE, "priority": "transactional"})
    assert answer.status == 201, answer.body
    assert envelope(spool, answer.json["id"])["priority"] == "transactional"


def test_an_unnamed_token_is_api(api_ingress: IngressProcess, spool: SpoolClient) -> None:
    with ApiClient(api_port(api_ingress), OTHER) as other:
        answer = other.send(MESSAGE)
    assert answer.status == 201
    assert envelope(spool, answer.json["id"])["auth"] == "api"


def test_a_batch_answers_each_message_in_order(client: ApiClient, spool: SpoolClient) -> None:
    bad: dict[int, tuple[object, int, str | None]] = {
        7: ({**MESSAGE, "to": ["ok@dest.test", "not-an-address"]}, 400, "to[1]"),
        50: ({"from": "s@example.test", "to": ["r@dest.test"]}, 400, "text"),
        99: ({**raw_message(), "raw": "***"}, 400, "raw"),
        150: ({**MESSAGE, "text": "x" * 200_000}, 413, None),
        199: ("not an object", 400, None),
    }
    messages: list[Any] = []
    for n in range(200):
        item = bad[n][0] if n in bad else {**MESSAGE, "to": [f"r{n}@d{n % 7}.test"]}
        messages.append(item if n % 2 or n in bad else raw_message())
    answer = client.batch(messages)
    assert answer.status == 200, answer.body
    result = answer.json
    assert (result["accepted"], result["failed"]) == (195, 5)
    assert len(result["results"]) == 200
    ids: dict[int, str] = {}
    for n, outcome in enumerate(result["results"]):
        if n in bad:
            _, status, field = bad[n]
            assert outcome["error"]["status"] == status, (n, outcome)
            assert outcome["error"].get("field") == field, (n, outcome)
        else:
            ids[n] = outcome["id"]
    assert stored_ids(spool) == set(ids.values())
    assert body(spool, ids[0]).endswith(RAW)  # even: raw
    assert b"X-Campaign: spring" in body(spool, ids[1])  # odd: built from the fields
    assert spool.smembers(f"mxf:rcpt:{ids[1]}:d1.test") == {b"r1@d1.test"}


# --- refused: a JSON error naming the cause, nothing stored ------------------------------


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({**MESSAGE, "to": ["a@dest.test", "b@dest.test", "bad@"]}, "to[2]"),
        ({**MESSAGE, "from": "nobody"}, "from"),
        ({**MESSAGE, "headers": {"Bcc": "spy@x.test"}}, "headers.Bcc"),
        ({**MESSAGE, "priority": "urgent"}, "priority"),
        ({**MESSAGE, "to": [f"r{n}@dest.test" for n in range(1001)]}, "to"),
        ({**MESSAGE, "attachments": []}, "attachments"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": "%%"}, "raw"),
    ],
)
def test_invalid_messages_get_400_naming_the_field(
    client: ApiClient, spool: SpoolClient, document: dict[str, Any], field: str
) -> None:
    answer = client.send(document)
    assert answer.status == 400, answer.body
    assert answer.error["field"] == field
    assert answer.error["message"]
    assert stored_ids(spool) == set()


def test_bodies_that_are_not_json_messages(client: ApiClient, spool: SpoolClient) -> None:
    not_json = client.request("POST", "/v1/messages", b"{nope")
    assert not_json.status == 400
    assert "JSON" in not_json.error["message"]
    form = client.request(
        "POST", "/v1/messages", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert form.status == 415
    empty_batch = client.batch([])
    assert (empty_batch.status, empty_batch.error["field"]) == (400, "messages")
    unknown = client.request("GET", "/v1/nothing")
    assert (unknown.status, unknown.error["message"]) == (404, "Not Found")
    wrong_method = client.request("GET", "/v1/messages")
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert stored_ids(spool) == set()


def test_a_refusal_as_smtp_would_is_422_with_its_reply(
    client: ApiClient, spool: SpoolClient
) -> None:
    looping = b"".join(b"Received: from hop%d\r\n" % n for n in range(100)) + b"\r\nbody\r\n"
    answer = client.send(raw_message(looping))
    assert answer.status == 422, answer.body
    reply = replies.LOOP_DETECTED
    assert answer.error["smtp"] == {"code": reply.code, "status": reply.status, "text": reply.text}
    assert stored_ids(spool) == set()


def test_authentication(api_ingress: IngressProcess, spool: SpoolClient) -> None:
    port = api_port(api_ingress)
    with ApiClient(port, None) as anonymous:
        missing = anonymous.send(MESSAGE)
        assert missing.status == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mxfleet"'
        basic = anonymous.post("/v1/messages", MESSAGE, {"Authorization": "Basic c2hvcDp4"})
        assert basic.status == 401
        spec = anonymous.request("GET", "/openapi.json")  # public
        assert spec.status == 200
        assert list(OpenAPIV31SpecValidator(spec.json).iter_errors()) == []
    for token in (TOKEN[:-1], TOKEN + "s", "x" * 40):
        with ApiClient(port, token) as wrong:
            answer = wrong.batch([MESSAGE])
            assert answer.status == 401
            challenge = 'Bearer realm="mxfleet", error="invalid_token"'
            assert answer.headers["WWW-Authenticate"] == challenge
    assert "event=api_auth_failed client=127.0.0.1" in api_ingress.log()
    assert stored_ids(spool) == set()


def test_oversized_requests_get_413(client: ApiClient) -> None:
    big = client.send({**MESSAGE, "text": "x" * (1024 * 1024)})  # over api_max_request_size
    assert big.status == 413
    assert "1048576" in big.error["message"]
    too_many = client.batch([MESSAGE] * 1001)
    assert (too_many.status, too_many.error["field"]) == (413, "messages")
    too_big = client.send(raw_message(b"x" * 120_000))  # over max_message_size (100 KiB)
    assert too_big.status == 413
    assert too_big.error["smtp"]["code"] == 552
    assert client.send(MESSAGE).status == 201  # the connection is still good


def test_a_chunked_body_over_the_limit_gets_413(api_ingress: IngressProcess) -> None:
    chunk = b"x" * 65536
    with socket.create_connection(("127.0.0.1", api_port(api_ingress)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(20):  # 1.25 MiB, over api_max_request_size
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 "), head


def test_expect_100_continue_is_refused_before_the_body(api_ingress: IngressProcess) -> None:
    with socket.create_connection(("127.0.0.1", api_port(api_ingress)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Length: 5000000\r\nExpect: 100-continue\r\n\r\n"
        )
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413 "), head


def test_api_metrics(api_ingress: IngressProcess) -> None:
    status, text = http_get(api_ingress.metrics_port, "/metrics")
    assert status == 200
    assert 'mxfleet_ingress_api_requests_total{code="201",endpoint="message"}' in text
    assert 'mxfleet_ingress_api_messages_total{result="invalid"}' in text


def test_every_process_of_a_node_serves_the_api_port(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    metrics_port = free_ports(2)
    ingress = start_ingress(
        ingress_processes=2, metrics_listen=f"127.0.0.1:{metrics_port}", **api_settings(tmp_path)
    )
    wait_until(lambda: ingress.log().count("event=api_listening") == 2, timeout=10)
    ids = set()
    for _ in range(20):  # a connection each: SO_REUSEPORT spreads them over the processes
        with ApiClient(api_port(ingress), TOKEN) as api:
            answer = api.send(MESSAGE)
        assert answer.status == 201
        ids.add(answer.json["id"])
    assert stored_ids(spool) == ids
    served = [
        metric(port, "mxfleet_ingress_api_requests_total", code="201", endpoint="message")
        for port in (metrics_port, metrics_port + 1)
    ]
    assert sum(served) == 20
    assert min(served) > 0, served


# --- the spool away, TLS, the drain --------------------------------------------------------


def test_redis_down_gives_503_and_stores_nothing(
    start_redis: StartRedis, start_ingress: StartIngress, tmp_path: Path
) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url, redis_timeout="2s", **api_settings(tmp_path))
    wait_for_api(api_port(ingress))
    with ApiClient(api_port(ingress), TOKEN) as api:
        assert api.send(MESSAGE).status == 201
        server.stop()
        answer = api.send(MESSAGE)
        assert answer.status == 503, answer.body
        assert answer.headers["Retry-After"] == "5"
        reply = replies.SPOOL_UNAVAILABLE
        assert (answer.error["smtp"]["code"], answer.error["smtp"]["status"]) == (451, "4.3.0")
        assert answer.error["message"] == reply.text
        batch = api.batch([MESSAGE] * 50)
        assert batch.status == 503, batch.body
        assert batch.json["accepted"] == 0
        assert {r["error"]["status"] for r in batch.json["results"]} == {503}
        server.start()
        client = server.client()
        assert len(stored_ids(client)) == 1  # only the first, accepted before
        wait_until(lambda: api.send(MESSAGE).status == 201, timeout=15)
    assert len(stored_ids(client)) == 2


def test_tls_with_the_ingress_certificate(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    certs = make_certificates(tmp_path / "certs")
    settings = api_settings(tmp_path, tls_cert=str(certs.cert), tls_key=str(certs.key))
    del settings["api_allow_plaintext"]
    ingress = start_ingress(**settings)
    port = api_port(ingress)
    context = certs.client_context()
    wait_for_api(port, context)
    with ApiClient(port, TOKEN, context=context) as api:
        answer = api.send(MESSAGE)
    assert answer.status == 201
    assert envelope(spool, answer.json["id"])["proto"] == "ESMTPSA"
    with ApiClient(port, TOKEN) as plain, pytest.raises(http.client.RemoteDisconnected):
        plain.send(MESSAGE)  # plain HTTP to the TLS port: closed unanswered


def test_plain_http_is_refused_unless_allowed(start_ingress: StartIngress, tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    del settings["api_allow_plaintext"]
    with pytest.raises(AssertionError) as info:
        start_ingress(**settings)
    assert "exited with 2" in str(info.value)
    assert "api_allow_plaintext = true" in str(info.value)


def test_a_bad_tokens_file_stops_the_node(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = {"redis_url": redis_server.url, **api_settings(tmp_path)}
    Path(settings["api_tokens_file"]).write_text("shop:short\n", "utf-8")
    ingress = IngressProcess(settings, tmp_path / "ingress.log")
    with contextlib.suppress(AssertionError):  # it may stop before or after its SMTP greets
        ingress.start()
    try:
        assert ingress.process is not None
        assert ingress.process.wait(timeout=10) == 2
    finally:
        ingress.kill()
    assert "event=api_tokens_invalid" in ingress.log()
    assert "api-tokens:1: token shorter than 20 characters" in ingress.log()


def test_sigterm_finishes_the_request_in_flight(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    ingress = start_ingress(drain_timeout="10s", **api_settings(tmp_path))
    port = api_port(ingress)
    wait_for_api(port)
    document = json.dumps(MESSAGE).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(document)}\r\n".encode()
            + b"Expect: 100-continue\r\n\r\n"
        )
        # RFC 9110 §10.1.1: the server is in the request, waiting for its body
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        ingress.signal(signal.SIGTERM)
        wait_until(lambda: not connectable(port), timeout=5)  # no new connection
        sock.sendall(document)
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 201 "), head
    msg_id = json.loads(head.split(b"\r\n\r\n", 1)[1])["id"]
    assert body(spool, msg_id)
    assert ingress.process is not None
    assert ingress.process.wait(timeout=10) == 0


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


# --- the suppression list, as at RCPT ---------------------------------------------------

LISTED = {"from": "news@shop.test", "to": ["ok@dest.test", "Gone@dest.test"], "subject": "s",
          "text": "t"}  # fmt: skip


def test_a_suppressed_recipient_refuses_the_message_naming_it(
    client: ApiClient, spool: SpoolClient, redis_server: RedisServer
) -> None:
    suppress(listing_of(redis_server), "gone@dest.test")
    answer = client.send(LISTED)
    assert answer.status == 422, answer.body
    error = answer.json["error"]
    assert error["field"] == "to[1]"
    assert (error["smtp"]["code"], error["smtp"]["status"]) == (550, replies.SUPPRESSED.status)
    assert stored_ids(spool) == set()


def test_drop_mode_queues_the_others_and_records_the_suppressed(
    start_ingress: StartIngress, spool: SpoolClient, redis_server: RedisServer, tmp_path: Path
) -> None:
    ingress = start_ingress(suppression="drop", **api_settings(tmp_path))
    wait_for_api(api_port(ingress))
    suppress(listing_of(redis_server), "gone@dest.test")
    with ApiClient(api_port(ingress), TOKEN) as api:
        answer = api.send(LISTED)
    assert answer.status == 201, answer.body
    msg_id = answer.json["id"]
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"ok@dest.test"}
    events = [fields for _, fields in spool.xrange("mxf:events")]
    assert [(e[b"id"], e[b"rcpts"], e[b"verdict"]) for e in events] == [
        (msg_id.encode(), b"Gone@dest.test", b"suppressed")
    ]
