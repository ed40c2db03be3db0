"""The test servers themselves: the DNS server and the SMTP sinks behave as documented.

DNS is checked with dnspython's resolver and raw queries, the sinks with smtplib (what a
well-behaved client does) and RawSMTP (exact bytes, pipelining).
"""

import base64
import contextlib
import smtplib
import socket
import time
from collections.abc import Callable, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from shared.replies import Reply
from tests.servers.dns_server import DnsServer
from tests.servers.ports import free_port_on
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtp_sink import (
    TEMPFAIL,
    TOO_BIG,
    TOO_MANY_MESSAGES,
    Behaviour,
    SmtpSink,
)
from tests.servers.wait import wait_until

MX1, MX2, DOWN = "127.0.0.2", "127.0.0.3", "127.0.0.4"
NO_SUCH_USER = Reply(550, "5.1.1", "No such user")
REJECTED = Reply(554, "5.7.1", "Message rejected")
MESSAGE = b"Subject: hi\r\n\r\nhello\r\n"
StartSink = Callable[..., SmtpSink]


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    """``start_sink(host, port, behaviour)`` → a started sink, stopped after the test."""
    sinks: list[SmtpSink] = []

    def start(
        host: str, port: int = 0, behaviour: Behaviour | None = None, hostname: str = "sink.test"
    ) -> SmtpSink:
        sinks.append(SmtpSink(host, port, behaviour, hostname=hostname).start())
        return sinks[-1]

    yield start
    for sink in sinks:
        sink.stop()


def ask(server: DnsServer, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, timeout=2, port=server.port)


# --- DNS


def test_mx_answer_is_authoritative_and_case_insensitive(dns_server: DnsServer) -> None:
    dns_server.add_mx("Example.test", [(20, "mx2.example.test"), (10, "mx1.example.test")])
    dns_server.add_a("mx1.example.test", MX1)
    dns_server.add_aaaa("mx1.example.test", "::1")
    response = ask(dns_server, "EXAMPLE.TEST", "MX")
    assert response.flags & dns.flags.AA
    assert response.question[0].name.to_text() == "EXAMPLE.TEST."
    resolver = dns_server.resolver()
    answer = resolver.resolve("example.test", "MX")
    assert sorted((r.preference, r.exchange.to_text()) for r in answer) == [
        (10, "mx1.example.test."),
        (20, "mx2.example.test."),
    ]
    assert answer.rrset is not None
    assert answer.rrset.ttl == 300
    assert [r.address for r in resolver.resolve("MX1.example.test", "A")] == [MX1]
    assert [r.address for r in resolver.resolve("mx1.example.test", "AAAA")] == ["::1"]
    assert dns_server.query_count("example.test", "MX") == 2
    assert ("mx1.example.test", "AAAA") in dns_server.queries
    assert dns_server.address == f"127.0.0.1:{dns_server.port}"


def test_null_mx_nxdomain_nodata(dns_server: DnsServer) -> None:
    dns_server.add_mx("null.test", [(10, "mx.null.test")])
    dns_server.add_null_mx("null.test")
    dns_server.add_a("a-only.test", MX1)
    resolver = dns_server.resolver()
    answer = resolver.resolve("null.test", "MX")
    assert [(r.preference, r.exchange.to_text()) for r in answer] == [(0, ".")]
    with pytest.raises(dns.resolver.NXDOMAIN):
        resolver.resolve("nowhere.test", "MX")
    with pytest.raises(dns.resolver.NoAnswer):
        resolver.resolve("a-only.test", "MX")
    nxdomain = ask(dns_server, "a.b.nowhere.test", "MX")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert [rrset.name.to_text() for rrset in nxdomain.authority] == ["nowhere.test."]
    assert nxdomain.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(dns_server, "a-only.test", "MX")
    assert (nodata.rcode(), nodata.answer) == (dns.rcode.NOERROR, [])
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_servfail_and_timeout_until_cleared(dns_server: DnsServer) -> None:
    dns_server.add_mx("flaky.test", [(10, "mx.flaky.test")])
    resolver = dns_server.resolver(lifetime=0.3)
    dns_server.servfail("flaky.test")
    assert ask(dns_server, "flaky.test", "MX").rcode() == dns.rcode.SERVFAIL
    with pytest.raises(dns.resolver.NoNameservers):
        resolver.resolve("flaky.test", "MX")
    dns_server.timeout("FLAKY.test")
    with pytest.raises(dns.resolver.LifetimeTimeout):
        resolver.resolve("flaky.test", "MX")
    with pytest.raises(dns.exception.Timeout):
        dns.query.tcp(dns.message.make_query("flaky.test", "MX"), "127.0.0.1", 0.3, dns_server.port)
    dns_server.clear("flaky.test")
    assert len(resolver.resolve("flaky.test", "MX")) == 1


def test_cache_keeps_repeat_lookups_off_the_server(dns_server: DnsServer) -> None:
    dns_server.add_mx("cached.test", [(10, "mx.cached.test")], ttl=60)
    resolver = dns_server.resolver()
    resolver.cache = dns.resolver.Cache()
    for _ in range(3):
        resolver.resolve("cached.test", "MX")
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver.resolve("gone.test", "MX")  # negative answers are cached too (SOA)
    assert dns_server.query_count("cached.test") == 1
    assert dns_server.query_count("gone.test") == 1


def test_records_change_while_running_and_tcp_fallback(dns_server: DnsServer) -> None:
    resolver = dns_server.resolver()
    dns_server.add_mx("moving.test", [(10, "old.moving.test")])
    assert resolver.resolve("moving.test", "MX")[0].exchange.to_text() == "old.moving.test."
    dns_server.remove("moving.test", "MX")
    dns_server.add_mx("moving.test", [(10, "new.moving.test")])
    assert resolver.resolve("moving.test", "MX")[0].exchange.to_text() == "new.moving.test."
    many = [(i, f"mx{i}.big.test") for i in range(120)]
    dns_server.add_mx("big.test", many)
    assert ask(dns_server, "big.test", "MX").flags & dns.flags.TC  # 512 bytes without EDNS
    assert len(ask(dns_server, "big.test", "MX", tcp=True).answer[0]) == 120
    assert len(resolver.resolve("big.test", "MX")) == 120  # TC → the resolver retries on TCP


def test_cname_is_followed(dns_server: DnsServer) -> None:
    dns_server.add("alias.test", "CNAME", "mx.real.test")
    dns_server.add_a("mx.real.test", MX2)
    answer = dns_server.resolver().resolve("alias.test", "A")
    assert [r.address for r in answer] == [MX2]


# --- SMTP sinks


def test_accepts_and_records_exactly(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, hostname="mx1.test")
    body = b"Subject: dots\r\n\r\n..leading dot\r\nbare\nlf\r\n"  # wire form
    with RawSMTP(MX1, sink.port) as client:
        assert client.greeting == (220, "mx1.test ESMTP test sink")
        assert client.transaction("a@x.test", ["b@y.test", "c@y.test"], body)[0] == 250
        assert client.cmd("QUIT")[0] == 221
    (message,) = sink.wait_for(1)
    assert message.mail_from == "a@x.test"
    assert message.rcpt_tos == ("b@y.test", "c@y.test")
    assert message.data == b"Subject: dots\r\n\r\n.leading dot\r\nbare\nlf\r\n"
    assert (message.ehlo, message.tls, message.connection, message.index) == (
        "client.test",
        False,
        1,
        1,
    )
    assert message.peer[0] == "127.0.0.1"
    assert not message.pipelined


def test_connection_reuse_is_visible(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0)
    for _ in range(2):
        with smtplib.SMTP(MX1, sink.port, local_hostname="worker.test") as client:
            client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
            client.sendmail("a@x.test", ["c@y.test"], MESSAGE)
    messages = sink.wait_for(4)
    assert [(m.connection, m.index) for m in messages] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert sink.transactions_per_connection == {1: 2, 2: 2}
    assert sink.connections == 2
    assert messages[0].ehlo == "worker.test"


def test_rejects_recipients_and_data(start_sink: StartSink) -> None:
    behaviour = Behaviour(rcpt_replies={"nobody@y.test": NO_SUCH_USER})
    sink = start_sink(MX1, 0, behaviour)
    with smtplib.SMTP(MX1, sink.port) as client:
        refused = client.sendmail("a@x.test", ["Nobody@y.test", "b@y.test"], MESSAGE)
        assert refused == {"Nobody@y.test": (550, b"5.1.1 No such user")}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@x.test", ["nobody@y.test"], MESSAGE)
    assert [(m.rcpt_tos, m.rejected_rcpts) for m in sink.messages] == [
        (("b@y.test",), ("Nobody@y.test",))
    ]
    sink.behaviour = Behaviour(rcpt_default=NO_SUCH_USER, data_reply=REJECTED)
    with smtplib.SMTP(MX1, sink.port) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
        sink.behaviour = Behaviour(data_reply=REJECTED)
        with pytest.raises(smtplib.SMTPDataError) as after_dot:
            client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
        sink.behaviour = Behaviour(data_command_reply=REJECTED)
        with pytest.raises(smtplib.SMTPDataError) as at_data:
            client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
    assert after_dot.value.smtp_code == at_data.value.smtp_code == 554
    assert len(sink.messages) == 1
    assert [t.reply for t in sink.transactions] == [sink.messages[0].reply, REJECTED]


def test_tempfail_first_n_then_accept(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(tempfail_first=2))
    codes = []
    with smtplib.SMTP(MX1, sink.port) as client:
        for _ in range(3):
            try:
                client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
                codes.append(250)
            except smtplib.SMTPDataError as error:
                codes.append(error.smtp_code)
    assert codes == [451, 451, 250]
    assert [t.reply for t in sink.transactions[:2]] == [TEMPFAIL, TEMPFAIL]
    assert len(sink.messages) == 1


def test_421_after_k_messages_on_a_connection(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(max_messages_per_connection=2))
    with RawSMTP(MX1, sink.port) as client:
        for _ in range(2):
            assert client.transaction("a@x.test", ["b@y.test"], MESSAGE)[0] == 250
            assert client.cmd("RSET")[0] == 250
        code, text = client.cmd("MAIL FROM:<a@x.test>")
        assert (code, text) == (421, str(TOO_MANY_MESSAGES)[4:])
        assert client.closed_by_peer()
    with smtplib.SMTP(MX1, sink.port) as client:
        client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
    assert sink.transactions_per_connection == {1: 2, 2: 1}


def test_starttls_with_the_sinks_certificate(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(starttls=True))
    assert sink.certificates is not None
    with smtplib.SMTP(MX1, sink.port) as client:
        client.ehlo("worker.test")
        assert client.has_extn("starttls")
        client.starttls(context=sink.certificates.client_context())  # verifies 127.0.0.2
        client.ehlo("worker.test")
        assert not client.has_extn("starttls")
        client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
    assert sink.wait_for(1)[0].tls
    plain = start_sink(MX2, 0)
    with smtplib.SMTP(MX2, plain.port) as client:
        client.ehlo()
        assert not client.has_extn("starttls")


def test_extensions_and_size(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(size=100))
    with smtplib.SMTP(MX1, sink.port) as client:
        client.ehlo()
        assert [client.has_extn(k) for k in ("pipelining", "smtputf8", "8bitmime")] == [1, 1, 1]
        assert client.esmtp_features["size"] == "100"
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("a@x.test", ["b@y.test"], b"x" * 200)  # smtplib sends SIZE=200
        assert declared.value.smtp_code == TOO_BIG.code
    with RawSMTP(MX1, sink.port) as client:  # undeclared: refused after the dot
        assert client.transaction("a@x.test", ["b@y.test"], b"x" * 200)[0] == TOO_BIG.code
    bare = Behaviour(pipelining=False, smtputf8=False, eightbitmime=False)
    sink.behaviour = bare
    with RawSMTP(MX1, sink.port) as client:
        code, text = client.cmd("EHLO client.test")
        assert (code, text.split("\n")[1:]) == (250, ["ENHANCEDSTATUSCODES"])
        assert client.cmd("MAIL FROM:<a@x.test> SMTPUTF8")[0] == 555
        assert client.cmd("MAIL FROM:<a@x.test> BODY=8BITMIME")[0] == 555
        assert client.cmd("MAIL FROM:<ü@x.test>")[0] == 553
    sink.behaviour = Behaviour()
    with RawSMTP(MX1, sink.port) as client:
        assert client.cmd("EHLO")[0] == 501
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("MAIL FROM:<ü@x.test> SMTPUTF8 BODY=8BITMIME")[0] == 250
        assert client.cmd("RCPT TO:<b@y.test> NOTIFY=NEVER")[0] == 555
        assert client.cmd("RCPT TO:<ö@y.test>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        assert client.cmd(MESSAGE + b".")[0] == 250
    (message,) = sink.wait_for(1)
    assert (message.mail_from, message.rcpt_tos) == ("ü@x.test", ("ö@y.test",))
    assert message.mail_options == ("SMTPUTF8", "BODY=8BITMIME")


def test_pipelining_is_detected(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0)
    with RawSMTP(MX1, sink.port) as client:
        assert client.cmd("EHLO client.test")[0] == 250
        client.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
        assert client.cmd(MESSAGE + b".")[0] == 250
    with smtplib.SMTP(MX1, sink.port) as client:
        client.sendmail("a@x.test", ["b@y.test"], MESSAGE)
    assert [m.pipelined for m in sink.wait_for(2)] == [True, False]


def test_slow_silent_and_bad_greeting(start_sink: StartSink) -> None:
    slow = start_sink(MX1, 0, Behaviour(delay=0.2))
    started = time.monotonic()
    with smtplib.SMTP(MX1, slow.port) as client:
        client.noop()
    assert time.monotonic() - started >= 0.4  # greeting + NOOP (+ QUIT)
    silent = start_sink(MX2, 0, Behaviour(silent=True))
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        smtplib.SMTP(MX2, silent.port, timeout=0.3)
    busy = start_sink(DOWN, 0, Behaviour(greeting=Reply(421, "4.3.2", "Busy")))
    with pytest.raises(smtplib.SMTPConnectError):
        smtplib.SMTP(DOWN, busy.port)
    wait_until(lambda: busy.connections == 1)


def test_sinks_share_a_port_and_down_hosts_refuse(start_sink: StartSink) -> None:
    port = free_port_on([MX1, MX2, DOWN])
    first, second = start_sink(MX1, port), start_sink(MX2, port)
    for host in (MX1, MX2):
        with smtplib.SMTP(host, port) as client:
            client.sendmail("a@x.test", [f"to@{host}"], MESSAGE)
    assert [m.rcpt_tos for m in first.messages + second.messages] == [
        (f"to@{MX1}",),
        (f"to@{MX2}",),
    ]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((DOWN, port), timeout=2)
    with pytest.raises(OSError, match="in use"):
        SmtpSink(MX1, port).start()


def test_many_messages_stay_fast(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0)
    batches, batch = 20, 100
    count = batches * batch
    one = b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n" + MESSAGE + b".\r\n"
    started = time.monotonic()
    codes: list[int] = []
    with RawSMTP(MX1, sink.port) as client:
        assert client.cmd("EHLO client.test")[0] == 250
        for _ in range(batches):  # in batches, so neither side's socket buffer fills up
            client.send(one * batch)
            codes += [client.reply()[0] for _ in range(4 * batch)]
    assert codes.count(250) == 3 * count
    assert len(sink.wait_for(count)) == count
    assert time.monotonic() - started < 5


# --- SMTP sinks: AUTH (RFC 4954), timing and concurrency records

USERS = {"u@x.test": "pa:ss"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tls_ehlo(client: RawSMTP, sink: SmtpSink) -> list[str]:
    """EHLO, STARTTLS with the sink's CA, EHLO again: the keywords offered under TLS."""
    assert sink.certificates is not None
    assert client.cmd("EHLO client.test")[0] == 250
    assert client.cmd("STARTTLS")[0] == 220
    client.starttls(sink.certificates.client_context())
    code, text = client.cmd("EHLO client.test")
    assert code == 250
    return text.split("\n")[1:]


def test_auth_only_after_starttls_then_mail(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(auth=USERS))  # auth implies STARTTLS
    with RawSMTP(MX1, sink.port) as client:
        code, text = client.cmd("EHLO client.test")
        assert code == 250
        assert "STARTTLS" in text.split("\n")
        assert not any(line.startswith("AUTH") for line in text.split("\n"))
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0pa:ss"))[0] == 538
        assert client.cmd("MAIL FROM:<a@x.test>") == (530, "5.7.0 Authentication required")
        assert client.cmd("RSET")[0] == 250
        keywords = tls_ehlo(client, sink)
        assert "AUTH PLAIN LOGIN" in keywords
        assert "STARTTLS" not in keywords
        assert client.cmd("MAIL FROM:<a@x.test>")[0] == 530
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0wrong"))[0] == 535
        assert client.cmd("AUTH PLAIN " + b64("\0nobody@x.test\0pa:ss"))[0] == 535
        assert client.cmd("AUTH CRAM-MD5")[0] == 504
        assert client.cmd("AUTH LOGIN") == (334, "VXNlcm5hbWU6")  # "Username:"
        assert client.cmd(b64("u@x.test")) == (334, "UGFzc3dvcmQ6")  # "Password:"
        assert client.cmd(b64("pa:ss")) == (235, "2.7.0 Authentication successful")
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0pa:ss"))[0] == 503
        assert client.transaction("a@x.test", ["b@y.test"], MESSAGE, ehlo=False)[0] == 250
    (message,) = sink.wait_for(1)
    assert (message.auth_user, message.tls) == ("u@x.test", True)
    assert sink.auth_attempts == 6


def test_auth_continuations_cancel_and_smtplib(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(auth=USERS))
    with RawSMTP(MX1, sink.port) as client:
        tls_ehlo(client, sink)
        assert client.cmd("AUTH PLAIN") == (334, "")
        assert client.cmd("*")[0] == 501  # RFC 4954 §4: cancelled
        assert client.cmd("AUTH LOGIN " + b64("u@x.test")) == (334, "UGFzc3dvcmQ6")
        assert client.cmd("not base64!")[0] == 501
        assert client.cmd("AUTH PLAIN " + b64("other@x.test\0u@x.test\0pa:ss"))[0] == 535
        assert client.cmd("AUTH PLAIN") == (334, "")
        assert client.cmd(b64("u@x.test\0u@x.test\0pa:ss"))[0] == 235  # authzid = authcid
    assert sink.certificates is not None
    with smtplib.SMTP(MX1, sink.port) as smtp:
        smtp.starttls(context=sink.certificates.client_context())
        assert smtp.login("u@x.test", "pa:ss")[0] == 235
        smtp.sendmail("a@x.test", ["b@y.test"], MESSAGE)
    assert [m.auth_user for m in sink.wait_for(1)] == ["u@x.test"]
    assert sink.auth_attempts == 5


def test_auth_variants(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(auth=USERS, auth_cleartext=True))
    with RawSMTP(MX1, sink.port) as client:  # a misconfigured server: AUTH in cleartext
        code, text = client.cmd("EHLO client.test")
        assert code == 250
        assert {"STARTTLS", "AUTH PLAIN LOGIN"} <= set(text.split("\n"))
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0pa:ss"))[0] == 235
        assert client.transaction("a@x.test", ["b@y.test"], MESSAGE, ehlo=False)[0] == 250
    assert [(m.auth_user, m.tls) for m in sink.wait_for(1)] == [("u@x.test", False)]
    sink.behaviour = Behaviour(auth=USERS, auth_mechanisms=("LOGIN",))
    with RawSMTP(MX1, sink.port) as client:
        assert "AUTH LOGIN" in tls_ehlo(client, sink)
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0pa:ss"))[0] == 504
    sink.behaviour = Behaviour()  # no auth: AUTH is not implemented, MAIL needs none
    with RawSMTP(MX1, sink.port) as client:
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("AUTH PLAIN " + b64("\0u@x.test\0pa:ss"))[0] == 502
        assert client.transaction("a@x.test", ["b@y.test"], MESSAGE, ehlo=False)[0] == 250
    assert sink.wait_for(2)[1].auth_user == ""
    assert sink.auth_attempts == 3


def test_open_connections_and_their_high_water_mark(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0)
    assert (sink.open_connections, sink.max_open_connections) == (0, 0)
    with contextlib.ExitStack() as stack:
        clients = [stack.enter_context(RawSMTP(MX1, sink.port)) for _ in range(3)]
        # each greeting was read: the sink counted its connection before sending it
        assert (sink.open_connections, sink.max_open_connections) == (3, 3)
        for client in clients[:2]:
            assert client.cmd("QUIT")[0] == 221
        wait_until(lambda: sink.open_connections == 1)
        stack.enter_context(RawSMTP(MX1, sink.port))
        assert (sink.open_connections, sink.max_open_connections) == (2, 3)
    wait_until(lambda: sink.open_connections == 0)
    assert (sink.connections, sink.max_open_connections) == (4, 3)


def test_received_at_is_when_the_final_dot_arrived(start_sink: StartSink) -> None:
    sink = start_sink(MX1, 0, Behaviour(delay=0.1))  # every reply comes 0.1 s late
    with RawSMTP(MX1, sink.port) as client:
        assert client.cmd("EHLO client.test")[0] == 250
        before = time.monotonic()
        assert client.transaction("a@x.test", ["b@y.test"], MESSAGE, ehlo=False)[0] == 250
        after = time.monotonic()
    (message,) = sink.wait_for(1)
    # MAIL, RCPT and DATA were answered (0.1 s each) before the dot went; its reply was late
    assert before + 0.3 <= message.received_at <= after - 0.1
