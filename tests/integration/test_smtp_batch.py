"""SmtpClient.send_many against real SMTP sinks (tests/servers/smtp_sink.py) on 127.0.0.N.

Round trips are measured through :class:`LatencyProxy`, which holds every client→server
chunk for ``delay`` seconds: one round trip then costs ``delay``. (The sink's own
``Behaviour.delay`` sleeps before *every* reply, pipelined or not, so it cannot tell them
apart.) Every batch is checked against the same messages sent one by one with ``send``.
"""

import contextlib
import itertools
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from shared.replies import Reply
from tests.servers.smtp_sink import Behaviour, SmtpSink
from tests.servers.wait import wait_until
from workers import smtp_wire
from workers.smtp_client import ConnectionLost, Delivery, Outgoing, SmtpClient, Timeouts

_HOSTS = itertools.count(90)  # 127.0.0.90, .91, …
REFUSED = Reply(550, "5.1.1", "No such user")
TOO_BIG = Reply(552, "5.3.4", "Message too big for this mailbox")
DELAY = 0.02
TIMEOUTS = Timeouts(*[5.0] * 9)


def body(number: int, size: int = 0) -> bytes:
    return b"Subject: %d\r\n\r\n.dot line\r\n%s\r\n" % (number, b"x" * size)


def message(number: int, *recipients: str, size: int = 0, sender: str = "s@a.test") -> Outgoing:
    return Outgoing(sender, recipients or (f"r{number}@b.test",), body(number, size))


class LatencyProxy:
    """Forwards one address to a sink, holding client→server chunks for ``delay`` seconds.

    ``chunks``: what the client's writes arrived as (on loopback, with TCP_NODELAY, one
    small write is one chunk), so the number of writes is visible too.
    """

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.listener = socket.create_server((f"127.0.0.{next(_HOSTS)}", 0))
        self.host, self.port = self.listener.getsockname()[:2]
        self.chunks: list[bytes] = []
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sockets.append(sock)
            held: queue.Queue[tuple[float, bytes]] = queue.Queue()
            threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(client, upstream, held), daemon=True).start()
            threading.Thread(target=self._release, args=(held, upstream), daemon=True).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        held: "queue.Queue[tuple[float, bytes]] | None",
    ) -> None:
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if held is not None:
                if chunk:
                    self.chunks.append(chunk)
                held.put((time.monotonic() + self.delay, chunk))
            elif chunk:
                try:
                    sink.sendall(chunk)
                except OSError:
                    chunk = b""
            if not chunk:
                if held is None:
                    self._close(sink)
                return

    def _release(self, held: "queue.Queue[tuple[float, bytes]]", upstream: socket.socket) -> None:
        while True:
            due, chunk = held.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not chunk:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                upstream.sendall(chunk)
            except OSError:
                return

    @staticmethod
    def _close(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            self._close(sock)
            sock.close()


StartSink = Callable[..., SmtpSink]


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    sinks: list[SmtpSink] = []

    def start(behaviour: Behaviour | None = None) -> SmtpSink:
        sinks.append(SmtpSink(f"127.0.0.{next(_HOSTS)}", 0, behaviour).start())
        return sinks[-1]

    yield start
    for sink in sinks:
        sink.stop()


@pytest.fixture
def proxy() -> Iterator[Callable[[SmtpSink], LatencyProxy]]:
    proxies: list[LatencyProxy] = []

    def start(sink: SmtpSink) -> LatencyProxy:
        proxies.append(LatencyProxy((sink.host, sink.port), DELAY))
        return proxies[-1]

    yield start
    for started in proxies:
        started.stop()


def connect(host: str, port: int) -> SmtpClient:
    return SmtpClient.connect(
        host, port, mx_name="mx.test", helo="relay.test", tls="off", timeouts=TIMEOUTS
    )


def one_by_one(sink: SmtpSink, messages: Sequence[Outgoing]) -> list[Delivery]:
    """The reference: ``send`` per message, on a fresh connection."""
    with connect(sink.host, sink.port) as client:
        return [
            client.send(m.sender, list(m.recipients), m.body, smtputf8=m.smtputf8) for m in messages
        ]


def test_a_batch_arrives_intact_in_order_on_one_connection(start_sink: StartSink) -> None:
    sink = start_sink()
    messages = [message(n) for n in range(20)]
    with connect(sink.host, sink.port) as client:
        deliveries = client.send_many(messages)
        assert (client.transactions, client.delivered) == (20, 20)
    assert [d.final.code for d in deliveries] == [250] * 20
    assert [d.accepted for d in deliveries] == [[f"r{n}@b.test"] for n in range(20)]
    received = sink.wait_for(20)
    assert [(t.rcpt_tos, t.data) for t in received] == [
        ((f"r{n}@b.test",), body(n)) for n in range(20)
    ]
    assert sink.transactions_per_connection == {1: 20}
    assert all(t.pipelined for t in received)


def test_a_batch_costs_one_round_trip_per_message(
    start_sink: StartSink, proxy: Callable[[SmtpSink], LatencyProxy]
) -> None:
    sink = start_sink()
    messages = [message(n) for n in range(20)]
    timings: dict[str, float] = {}
    for name in ("send", "send_many"):
        path = proxy(sink)
        with connect(path.host, path.port) as client:
            path.chunks.clear()
            started = time.monotonic()
            if name == "send":
                one_by_one_results = [
                    client.send(m.sender, list(m.recipients), m.body) for m in messages
                ]
            else:
                batch_results = client.send_many(messages)
            timings[name] = time.monotonic() - started
            writes = len(path.chunks)
            overlapped = sum(b"\r\n.\r\nMAIL FROM" in chunk for chunk in path.chunks)
    print(f"20 messages at {DELAY * 1000:.0f} ms RTT: {timings}")
    codes = [[r.code for r in d.replies.values()] for d in batch_results]
    assert codes == [[r.code for r in d.replies.values()] for d in one_by_one_results]
    assert timings["send"] >= 20 * 2 * DELAY
    assert timings["send_many"] < 0.6
    assert writes == 21  # N envelopes and the last one's data: each other data rides with
    assert overlapped == 19  # the next MAIL (RFC 2920 §3.1)
    assert len(sink.wait_for(40)) == 40


def test_mixed_outcomes_inside_a_batch(start_sink: StartSink) -> None:
    behaviour = Behaviour(
        rcpt_replies={"x@b.test": REFUSED, "y@b.test": REFUSED},
        tempfail_first=1,  # the first message to reach the end of data gets a 552
        tempfail_reply=TOO_BIG,
    )
    messages = [
        message(0, "x@b.test", "y@b.test"),  # every RCPT refused: RSET before the next MAIL
        message(1),  # 552 at the dot
        message(2),
        message(3, "x@b.test", "ok@b.test"),
    ]
    sink = start_sink(behaviour)
    with connect(sink.host, sink.port) as client:
        deliveries = client.send_many(messages)
    assert deliveries[0].replies == {"x@b.test": REFUSED, "y@b.test": REFUSED}
    assert deliveries[1].replies == {"r1@b.test": TOO_BIG}
    assert deliveries[2].final.code == 250
    assert deliveries[3].replies["x@b.test"] == REFUSED
    assert deliveries[3].accepted == ["ok@b.test"]
    assert deliveries == one_by_one(start_sink(behaviour), messages)
    assert [t.rcpt_tos for t in sink.messages] == [("r2@b.test",), ("ok@b.test",)]


def test_rset_travels_with_the_next_mail(
    start_sink: StartSink, proxy: Callable[[SmtpSink], LatencyProxy]
) -> None:
    sink = start_sink(Behaviour(rcpt_replies={"x@b.test": REFUSED}))
    path = proxy(sink)
    with connect(path.host, path.port) as client:
        deliveries = client.send_many([message(0, "x@b.test"), message(1), message(2)])
    assert [d.final.code for d in deliveries] == [554, 250, 250]
    rsets = [chunk for chunk in path.chunks if b"RSET" in chunk]
    assert len(rsets) == 1
    assert rsets[0].startswith(b"RSET\r\nMAIL FROM")  # RFC 2920 §3.1


def test_without_pipelining_the_same_results(start_sink: StartSink) -> None:
    behaviour = Behaviour(pipelining=False, rcpt_replies={"x@b.test": REFUSED})
    messages = [message(0), message(1, "x@b.test"), message(2, "x@b.test", "ok@b.test")]
    sink = start_sink(behaviour)
    with connect(sink.host, sink.port) as client:
        deliveries = client.send_many(messages)
    assert [d.final.code for d in deliveries] == [250, 554, 250]
    assert deliveries == one_by_one(start_sink(behaviour), messages)
    pipelined = start_sink(Behaviour(rcpt_replies={"x@b.test": REFUSED}))
    with connect(pipelined.host, pipelined.port) as client:
        assert [d.replies for d in client.send_many(messages)] == [d.replies for d in deliveries]
    assert not any(t.pipelined for t in sink.transactions)


def test_local_refusals_inside_a_batch(start_sink: StartSink) -> None:
    behaviour = Behaviour(size=500, smtputf8=False)
    messages = [
        message(0),
        message(1, size=1000),  # over SIZE: 552 5.3.4, never sent
        message(2, sender="jörg@a.test"),  # needs SMTPUTF8: 550 5.6.7, never sent
        message(3),
    ]
    sink = start_sink(behaviour)
    with connect(sink.host, sink.port) as client:
        deliveries = client.send_many(messages)
        assert client.transactions == 2
    assert [d.final for d in deliveries][1:3] == [
        smtp_wire.MESSAGE_TOO_BIG,
        smtp_wire.NEED_SMTPUTF8,
    ]
    assert [d.final.code for d in deliveries] == [250, 552, 550, 250]
    assert deliveries == one_by_one(start_sink(behaviour), messages)
    assert [t.rcpt_tos for t in sink.messages] == [("r0@b.test",), ("r3@b.test",)]


def test_421_after_k_messages_lists_the_finished_ones(start_sink: StartSink) -> None:
    sink = start_sink(Behaviour(max_messages_per_connection=3))
    messages = [message(n) for n in range(6)]
    client = connect(sink.host, sink.port)
    with pytest.raises(ConnectionLost) as caught:
        client.send_many(messages)
    lost = caught.value
    assert lost.reply.code == 421
    assert [d.accepted for d in lost.deliveries] == [[f"r{n}@b.test"] for n in range(3)]
    in_progress = messages[len(lost.deliveries)]  # the rest: messages[4:], not attempted
    assert (lost.pending, lost.replies) == (tuple(in_progress.recipients), {})
    assert not lost.maybe_delivered
    assert client.closed
    assert len(sink.messages) == 3


def test_loss_awaiting_the_dot_reply_may_have_delivered(start_sink: StartSink) -> None:
    behaviour = Behaviour(
        tempfail_first=2,  # the first two messages get this 250, the third a 421 to its "."
        tempfail_reply=Reply(250, "2.0.0", "OK"),
        data_reply=Reply(421, "4.3.0", "Going down"),
        rcpt_replies={"x@b.test": REFUSED},
    )
    sink = start_sink(behaviour)
    messages = [message(0), message(1), message(2, "x@b.test", "r2@b.test"), message(3)]
    client = connect(sink.host, sink.port)
    with pytest.raises(ConnectionLost) as caught:
        client.send_many(messages)
    lost = caught.value
    assert [d.final.code for d in lost.deliveries] == [250, 250]
    assert (lost.pending, lost.replies) == (("r2@b.test",), {"x@b.test": REFUSED})
    assert lost.maybe_delivered  # RFC 5321 §6.1: its "." went out, the reply never came
    assert client.closed


def test_each_verdict_is_reported_before_the_next_data_is_sent(start_sink: StartSink) -> None:
    """The callback sees message i final while the sink has not yet received message i+1,
    so a caller records each verdict within one message of the server's 250."""
    sink = start_sink()
    messages = [message(n) for n in range(10)]
    seen: list[tuple[int, int, int]] = []

    def report(index: int, delivery: Delivery) -> None:
        seen.append((index, delivery.final.code, len(sink.messages)))

    with connect(sink.host, sink.port) as client:
        deliveries = client.send_many(messages, report)
    assert [(i, code) for i, code, _ in seen] == [(n, 250) for n in range(10)]
    assert [d.final.code for d in deliveries] == [250] * 10
    # When message i is reported, the sink holds messages 0..i and no more.
    assert all(received == index + 1 for index, _, received in seen)


@pytest.mark.parametrize("abandon", [False, True])
def test_stop_finishes_the_message_in_progress_unless_abandoned(
    start_sink: StartSink, abandon: bool
) -> None:
    """Graceful stop finishes the message whose envelope went out; a lost lease does not
    (its content would be a second copy of what another worker now sends)."""
    sink = start_sink()
    messages = [message(n) for n in range(5)]
    finished: list[int] = []
    client = connect(sink.host, sink.port)
    deliveries = client.send_many(
        messages,
        lambda index, _: finished.append(index),
        stop=lambda: len(finished) >= 1,
        abandon=lambda: abandon,
    )
    client.close()
    # Message 1's envelope rode with message 0's content: it was in progress at the stop.
    expected = [0] if abandon else [0, 1]
    assert [d.final.code for d in deliveries] == [250] * len(expected)
    assert finished == expected
    wait_until(lambda: sink.open_connections == 0)  # the sink has read all there was
    assert [t.data for t in sink.transactions] == [body(n) for n in expected]
