"""Property-based fuzz of the SMTP dialogue against one running ingress process.

An example is one session of hostile steps: commands with random or junk arguments, random
verbs, binary junk, overlong lines, pipelined batches, message data, whole transactions, and
a disconnect anywhere (mid-line, mid-DATA). The client reads every reply the server owes
(:class:`Peer` says which) and checks, for every example:

- every reply line is well-formed (RFC 5321 §4.2): a code 2xx-5xx, a space or a hyphen,
  printable ASCII text, CRLF, at most 512 octets (§4.5.3.1.5); an enhanced status code
  (RFC 3463) is of the reply's class, and every 4xx/5xx reply has one (RFC 2034);
- nothing hangs: each reply comes within REPLY_TIMEOUT, and the server closes the
  connection only after a 221 or a 421, with nothing after it;
- afterwards the process lives, greets a new client with 220 and logged no traceback, and
  the spool is consistent: every message has its body, envelope, jobs, recipients and
  schedule, and the messages stored are exactly those answered "250 ... queued as".
"""

import base64
import contextlib
import re
import socket
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from shared.passwords import hash_password
from tests.conftest import StartIngress
from tests.servers.certs import make_certificates
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import envelope, queued_id, spool_keys, stored_ids
from tests.servers.spool_client import SpoolClient
from tests.unit.fuzz import FUZZ

MAX_LINE = 1000  # the ingress's max_line_length (RFC 5321 §4.5.3.1.6, CRLF included)
REPLY_TIMEOUT = 8.0  # AUTH failures are answered after a deliberate delay of seconds
END = b"\r\n.\r\n"
USER, PASSWORD = "fuzz", "fuzz password"
GOOD_PLAIN = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()

_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])([\t\x20-\x7e]*))?")
_STATUS = re.compile(r"([245])\.[0-9]{1,3}\.[0-9]{1,3}(?: |$)")

Phase = Literal["command", "auth", "data", "closed", "tls"]


@dataclass(frozen=True, slots=True)
class Unit:
    """A piece of the client's input the server owes one reply for."""

    kind: Literal["line", "overlong", "data"]
    data: bytes


class Peer:
    """Which of the bytes sent the server still owes replies for, by RFC 5321's rules.

    In the command phase one reply per line; a line of MAX_LINE octets without its end gets
    one and is skipped to its end (§4.5.3.1.4). In DATA one reply at <CRLF>.<CRLF>, the
    CRLF before the first line being implied (§4.1.1.4). Replies change the phase: 354 data,
    334 an AUTH challenge (RFC 4954), 220 to STARTTLS the TLS handshake, 221/421 the end.
    """

    def __init__(self) -> None:
        self.phase: Phase = "command"
        self.pending = bytearray()
        self.skipping = False

    def next_unit(self) -> Unit | None:
        pending = self.pending
        if self.phase == "data":
            end = pending.find(END)
            if end < 0:
                return None
            unit = Unit("data", bytes(pending[2 : end + 2]))
            del pending[: end + 5]
            return unit
        if self.skipping:
            newline = pending.find(b"\n")
            del pending[: newline + 1 if newline >= 0 else len(pending)]
            self.skipping = newline < 0
        newline = pending.find(b"\n", 0, MAX_LINE)
        if newline >= 0:
            unit = Unit("line", bytes(pending[: newline + 1]))
            del pending[: newline + 1]
            return unit
        if len(pending) >= MAX_LINE:
            self.skipping = True
            return Unit("overlong", b"")
        return None

    def answered(self, unit: Unit, code: int) -> None:
        if code in (221, 421):
            self.phase = "closed"
        elif code == 354:
            self.phase = "data"
            self.pending[:0] = b"\r\n"
        elif code == 334:
            self.phase = "auth"
        elif code == 220:
            self.phase = "tls"
        elif unit.kind != "overlong":
            self.phase = "command"


def check_line(line: bytes, code: bytes | None) -> tuple[bytes, bool]:
    """(code, last line?) of one reply line; AssertionError when it is malformed."""
    assert len(line) <= 510, f"reply line over 512 octets: {line[:80]!r}"
    match = _REPLY_LINE.fullmatch(line)
    assert match is not None, f"malformed reply line {line!r}"
    assert code is None or match.group(1) == code, f"code changes inside a reply: {line!r}"
    text = (match.group(3) or b"").decode()
    status = _STATUS.match(text)
    if status is not None:
        assert status.group(1) == line[:1].decode(), f"status of another class: {line!r}"
    elif code is None and line[:1] in (b"4", b"5"):
        raise AssertionError(f"4xx/5xx reply without an enhanced status code: {line!r}")
    return match.group(1), match.group(2) != b"-"


class Client:
    """One fuzzing session: sends steps, reads and checks every reply the server owes."""

    def __init__(self, ingress: IngressProcess, source: str) -> None:
        self.sock = socket.create_connection(
            (ingress.host, ingress.port), timeout=REPLY_TIMEOUT, source_address=(source, 0)
        )
        self.buf = b""
        self.peer = Peer()
        self.queued: list[str] = []  # ids of the messages answered "250 ... queued as"
        self.transcript: list[tuple[Unit | str, bytes]] = []

    def greeted(self) -> None:
        greeting = self.reply("greeting")
        assert greeting is not None
        assert greeting[0] == 220, greeting

    def _line(self) -> bytes | None:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"no reply within {REPLY_TIMEOUT} s: {self.log()}") from None
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert not self.buf, f"connection closed inside a reply line: {self.buf!r}"
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        assert line.endswith(b"\r"), f"reply line not ended by CRLF: {line!r}"
        return line[:-1]

    def reply(self, unit: Unit | str) -> tuple[int, str] | None:
        """The next reply, checked; None when the server closed the connection."""
        raw: list[bytes] = []
        code: bytes | None = None
        while (line := self._line()) is not None:
            raw.append(line)
            code, last = check_line(line, code)
            if last:
                self.transcript.append((unit, b"\n".join(raw)))
                return int(code), raw[0][4:].decode()
        assert not raw, f"connection closed inside a reply: {raw!r}"
        return None

    def send(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)  # else the server closed: the replies before say why
        self.peer.pending += data

    def drain(self) -> None:
        """Read every reply owed for what was sent; after a 221/421, the server closes."""
        peer = self.peer
        while peer.phase in ("command", "auth", "data") and (unit := peer.next_unit()):
            reply = self.reply(unit)
            assert reply is not None, f"closed without a 421, {unit} unanswered: {self.log()}"
            code, text = reply
            if unit.kind == "data" and code == 250:
                self.queued.append(queued_id(text))
            assert "queued as" not in text or unit.kind == "data", self.log()
            peer.answered(unit, code)
        if peer.phase == "closed":
            assert self.reply("after the end") is None, f"a reply after the end: {self.log()}"

    def finish(self) -> None:
        """End the session politely: end a line, the data or an AUTH exchange, then QUIT."""
        for _ in range(5):
            peer = self.peer
            if peer.phase in ("closed", "tls"):
                return
            if peer.phase == "data":
                self.send(END)
            elif peer.pending or peer.skipping:
                self.send(b"\r\n")
            else:
                self.send(b"*\r\n" if peer.phase == "auth" else b"QUIT\r\n")
            self.drain()
        raise AssertionError(f"the session does not end: {self.log()}")

    def half_close(self) -> None:
        """Send no more (a shutdown, often right after QUIT): what was sent is still owed
        its replies, then the server closes."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.drain()
        if self.peer.phase in ("command", "auth", "data"):
            assert self.reply("after the end") is None, f"a reply after the end: {self.log()}"

    def log(self) -> str:
        return "\n".join(f"{unit!r} -> {reply!r}" for unit, reply in self.transcript[-12:])

    def close(self) -> None:
        self.sock.close()


# --- strategies ---------------------------------------------------------------------------

JUNK = ["", " ", "<", ">", "<>", ":", "@", "%", "!", '"', "\\", "=", "\t", "\x00", "\x7f",
        "ü", "\u2028", "\ufeff", "[]", "[IPv6:::1]", "<a@b.test", "FROM:<"]  # fmt: skip
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\r\n", b"\r", b""]
FRAGMENTS = [b"\r", b"\n", b"\r\n", b"\x00", b"\xff", b"\xc3", b".", b" ", b"\x1b[0m", END]
BODY_PARTS = [b"\r\n", b"\n", b"\r", b".", b"..", b"\r\n.", b"\x00", b"\xff\xfe", b"\r\n\r\n",
              b"Subject: fuzz\r\n", b"Received: from x\r\n", b"MAIL FROM:<admin@bank.test>\r\n",
              "ü".encode()]  # fmt: skip

junk = st.one_of(st.sampled_from(JUNK), st.text(max_size=24))
number = st.one_of(
    st.integers(-5, 10**25).map(str),
    st.text(st.characters(categories=["Nd", "No"]), min_size=1, max_size=3),
)
local_part = st.one_of(
    st.sampled_from(["a", "a.b", '"a b"', '"a@b.test"', "ü", "a%b.test", "b!a", ".", "a" * 65]),
    junk,
)
domain = st.one_of(
    st.sampled_from(["dest.test", "DEST.test.", "[127.0.0.1]", "[IPv6:::1]", "ü.test",
                     "xn--zca.test", "localhost", "ü" * 40 + ".test", "b" * 70 + ".test"]),
    st.text("abü-é.", min_size=1, max_size=20),
    junk,
)  # fmt: skip
address = st.one_of(
    st.sampled_from(["", "postmaster", "@x.test:a@b.test", "a@b.test"]),
    st.builds(lambda local, dom: f"{local}@{dom}", local_part, domain),
)
parameter = st.one_of(
    st.sampled_from(["BODY=8BITMIME", "BODY=7BIT", "BODY=BINARYMIME", "SMTPUTF8", "AUTH=<>",
                     "RET=FULL", "NOTIFY=NEVER", "ORCPT=rfc822;a@b.test", "=", "SIZE"]),
    number.map(lambda n: f"SIZE={n}"),
    st.builds(lambda name, value: f"{name}={value}", junk, junk),
)  # fmt: skip


def path(keyword: str) -> st.SearchStrategy[str]:
    """``FROM:<address> PARAM...`` and its malformed kin."""
    return st.builds(
        lambda key, addr, params, close: f"{key}<{addr}{close}" + "".join(f" {p}" for p in params),
        st.sampled_from([keyword, keyword.lower(), f"{keyword} ", keyword[:-1], ""]),
        address,
        st.lists(parameter, max_size=3),
        st.sampled_from([">", ">", ">", "", ">>", "> "]),
    )


def line(verbs: st.SearchStrategy[str], args: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.builds(
        lambda verb, arg, end: (f"{verb} {arg}" if arg else verb).encode() + end,
        verbs,
        args,
        st.sampled_from(ENDINGS),
    )


SIMPLE = ["DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "QUIT", "STARTTLS", "BDAT"]
AUTH_ARGS = ["PLAIN", "LOGIN", f"PLAIN {GOOD_PLAIN}", "PLAIN =", "plain", "CRAM-MD5",
             "LOGIN " + base64.b64encode(USER.encode()).decode(), "PLAIN " + "A" * 40]  # fmt: skip
command = st.one_of(
    line(st.sampled_from(["EHLO", "HELO", "ehlo"]), st.sampled_from(["client.test"]) | junk),
    line(st.sampled_from(["MAIL", "mail"]), path("FROM:")),
    line(st.sampled_from(["RCPT", "rcpt"]), path("TO:")),
    line(st.sampled_from(SIMPLE), st.just("") | junk),
    line(st.just("AUTH"), st.sampled_from(AUTH_ARGS) | junk),
    line(st.sampled_from(["*", "=", GOOD_PLAIN]), st.just("")),  # AUTH responses
    line(st.text(string.ascii_letters, min_size=1, max_size=9), junk),  # random verbs
)
body = st.builds(
    lambda parts, end: b"".join(parts) + end,
    st.lists(st.one_of(st.sampled_from(BODY_PARTS), st.binary(max_size=40)), max_size=10),
    st.sampled_from([END, END, END, b"", b"\n.\n", END + b"QUIT\r\n"]),
)
transaction = st.builds(
    lambda sender, rcpt, data: (
        f"EHLO fuzz.test\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode() + data
    ),
    st.sampled_from(["s@example.test", ""]),
    st.sampled_from(["r@dest.test", "r@DEST.test", "Q@other.test"]),
    body,
)
overlong = st.builds(
    lambda prefix, size, end: prefix + b"x" * size + end,
    st.sampled_from([b"", b"NOOP ", b"MAIL FROM:<", b"EHLO "]),
    st.sampled_from([510, 513, 997, 998, 999, 1000, 1001, 1500, 2100, 5000]),
    st.sampled_from([b"\r\n", b"\n", b""]),
)
step = st.one_of(
    command,
    command,
    command,
    st.lists(command, min_size=2, max_size=6).map(b"".join),  # pipelined (RFC 2920)
    st.binary(max_size=64),
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8).map(b"".join),
    overlong,
    body,
    transaction,
)
HELLO = b"EHLO fuzz.test\r\n"
SENDER = HELLO + b"MAIL FROM:<s@example.test>\r\n"
ENVELOPE = SENDER + b"RCPT TO:<r@dest.test>\r\n"
# Where the steps start: a new session, after EHLO, inside a transaction, inside DATA or an
# AUTH exchange, so that each kind of step meets each phase of the dialogue.
AUTH_PLAIN = f"AUTH PLAIN {GOOD_PLAIN}\r\n".encode()
PROLOGUES = [b"", HELLO, b"HELO fuzz.test\r\n", SENDER, ENVELOPE, ENVELOPE + b"DATA\r\n",
             HELLO + b"AUTH LOGIN\r\n", HELLO + AUTH_PLAIN]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Session:
    source: str  # 127.0.0.1 may relay, 127.0.0.2 may not
    prologue: bytes
    steps: list[bytes]
    # after the last step, wherever it left the dialogue: end it and QUIT, close, or shut
    # down the sending side and read what is owed
    ending: Literal["quit", "close", "half-close"]


sessions = st.builds(
    Session,
    st.sampled_from(["127.0.0.1", "127.0.0.2"]),
    st.sampled_from(PROLOGUES),
    st.lists(step, min_size=1, max_size=8),
    st.sampled_from(["quit", "close", "half-close"]),
)


# --- the test -----------------------------------------------------------------------------


@pytest.fixture
def fuzz_ingress(start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path) -> IngressProcess:
    """STARTTLS and AUTH (without TLS) offered, small limits; relaying for 127.0.0.1/32."""
    certs = make_certificates(tmp_path / "tls")
    credentials = tmp_path / "credentials"
    credentials.write_text(f"{USER}:{hash_password(PASSWORD, ln=10)}\n")
    return start_ingress(
        max_line_length=MAX_LINE,
        max_message_size="4KiB",
        tls_cert=certs.cert,
        tls_key=certs.key,
        auth_file=credentials,
        auth_require_tls="false",
    )


def check_spool(spool: SpoolClient) -> set[str]:
    """Every stored message whole: body, envelope, one job, recipients and schedule per
    domain, in the queue; no job or recipient set without its message. Returns the ids."""
    keys = spool_keys(spool)
    ids = stored_ids(spool)
    assert {key.split(":")[2] for key in keys if key.startswith("mxf:msg:")} == ids
    assert {member.decode() for member in spool.zrange("mxf:queue", 0, -1)} == ids
    expected = set()
    for msg_id in ids:
        env = envelope(spool, msg_id)
        domains = env["domains"].split(",")
        assert int(env["jobs_left"]) == len(domains), env
        rcpts = 0
        for dom in domains:
            expected |= {f"mxf:rcpt:{msg_id}:{dom}", f"mxf:job:{msg_id}:{dom}"}
            rcpts += spool.scard(f"mxf:rcpt:{msg_id}:{dom}")
            job = spool.hgetall(f"mxf:job:{msg_id}:{dom}")
            assert (job[b"msg"], job[b"domain"]) == (msg_id.encode(), dom.encode())
            assert spool.zscore(f"mxf:sched:{dom}", msg_id) is not None
            assert spool.zscore("mxf:due", dom) is not None
        assert rcpts == int(env["rcpts"]) > 0, env
    assert {key for key in keys if key.startswith(("mxf:rcpt:", "mxf:job:"))} == expected
    return ids


def play(client: Client, session: Session) -> None:
    """Send the steps, reading what each is owed, then end the session its way; a
    half-close comes right behind the last step, before its replies."""
    chunks = [session.prologue, *session.steps]
    for index, data in enumerate(chunks):
        client.send(data)
        if index == len(chunks) - 1 and session.ending == "half-close":
            client.half_close()
            return
        client.drain()
        if client.peer.phase in ("closed", "tls"):
            return
    if session.ending == "quit":
        client.finish()


@settings(
    FUZZ,  # the house settings: derandomised, no example database
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(session=sessions)
# Each of these once broke the ingress: a crash (int("²")), replies quoting the client's
# bytes unescaped and unbounded, a pipelined message left unanswered after a half-close.
@example(Session("127.0.0.1", HELLO, ["MAIL FROM:<a@b.test> SIZE=²\r\n".encode()], "quit"))
@example(Session("127.0.0.1", SENDER, [b"RCPT TO:<> \xc2\x80\x01\r\n"], "quit"))
@example(Session("127.0.0.1", SENDER, [b"RCPT TO:<a@b.test> " + b"Y" * 600 + b"\r\n"], "quit"))
@example(
    Session("127.0.0.1", ENVELOPE, [b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"], "half-close")
)
def test_any_dialogue_gets_well_formed_replies_and_leaves_a_consistent_spool(
    fuzz_ingress: IngressProcess, spool: SpoolClient, session: Session
) -> None:
    before = check_spool(spool)
    log_start = len(fuzz_ingress.log())
    client = Client(fuzz_ingress, session.source)
    try:
        client.greeted()
        play(client, session)
    finally:
        client.close()
    event(f"ended: {client.peer.phase}")
    event(f"messages queued: {len(client.queued)}")
    for _unit, reply in client.transcript:
        event(f"reply {reply[:3].decode()}")
    assert fuzz_ingress.process is not None
    assert fuzz_ingress.process.poll() is None, fuzz_ingress.log()[log_start:]
    with RawSMTP(fuzz_ingress.host, fuzz_ingress.port) as smtp:
        assert smtp.greeting is not None
        assert smtp.greeting[0] == 220
        assert smtp.cmd("QUIT")[0] == 221
    log = fuzz_ingress.log()[log_start:]
    assert "Traceback" not in log, log
    assert "session_error" not in log, log
    assert check_spool(spool) == before | set(client.queued)
