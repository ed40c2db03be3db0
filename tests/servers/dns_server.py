"""An authoritative DNS server on loopback for tests: UDP and TCP on one port.

Owns the records a test gives it (MX, A, AAAA, null MX, or any type in zone-file text), the
faults a test injects per name (SERVFAIL, or no answer at all), and a log of every question
it received. Answers are built with dnspython and are authoritative (AA set, question
echoed). The server holds every name, so:

- an unknown name is NXDOMAIN, a known name without the asked type is NOERROR/NODATA; both
  carry an SOA in the authority section (RFC 2308 §3) whose owner is the name's last two
  labels (``a.b.example.test`` → ``example.test``), so resolvers cache the negative answer
  for ``negative_ttl`` seconds (RFC 2308 §5: the lower of the SOA TTL and its MINIMUM);
- a name that only holds records below it (an empty non-terminal) is NODATA (RFC 8020);
- a CNAME is followed inside the server, like any authoritative server holding the target.

A UDP answer larger than the client allows (512 bytes without EDNS, RFC 1035 §4.2.1; the
EDNS payload size otherwise, RFC 6891 §6.2.5) goes out empty with TC set, so resolvers
retry over TCP (RFC 7766 §5). Over TCP a connection may carry several queries.

One thread multiplexes UDP and TCP accepts; each TCP connection has a thread. Records and
faults may change while the server runs (one lock).
"""

import contextlib
import ipaddress
import selectors
import socket
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Literal

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.rrset

Fault = Literal["servfail", "timeout"]
DEFAULT_TTL = 300
MAX_CNAME_CHAIN = 8
_TCP_IDLE = 30.0  # seconds a TCP client may stay silent (RFC 7766 §6.2.3 suggests seconds)
_Records = dict[dns.rdatatype.RdataType, tuple[int, list[dns.rdata.Rdata]]]


def _name(text: str) -> dns.name.Name:
    """An absolute name; dnspython compares and hashes names case-insensitively."""
    return dns.name.from_text(text, origin=dns.name.root)


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class DnsServer:
    """``DnsServer().start()``; point resolvers at :attr:`address` (``127.0.0.1:PORT``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, negative_ttl: int = 60) -> None:
        self.host = host
        self.port = port
        self.negative_ttl = negative_ttl
        # (name lower-case without the final dot, type mnemonic), in arrival order
        self.queries: list[tuple[str, str]] = []
        self._family = (
            socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        )
        self._lock = threading.Lock()
        self._records: dict[dns.name.Name, _Records] = {}
        self._faults: dict[dns.name.Name, Fault] = {}
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), the format of MXFLEET_DNS_SERVERS."""
        host = f"[{self.host}]" if self._family == socket.AF_INET6 else self.host
        return f"{host}:{self.port}"

    # --- records and faults (thread-safe; take effect on the next query)

    def add(self, name: str, rdtype: str, *rdatas: str, ttl: int = DEFAULT_TTL) -> None:
        """Add records in zone-file text (``add("x.test", "TXT", '"v=spf1 -all"')``).

        Names in the text are absolute (a final dot is optional). The set's TTL becomes
        ``ttl``.
        """
        parsed = [
            dns.rdata.from_text("IN", rdtype, text, origin=dns.name.root, relativize=False)
            for text in rdatas
        ]
        with self._lock:
            records = self._records.setdefault(_name(name), {})
            for rdata in parsed:
                _, old = records.get(rdata.rdtype, (ttl, []))
                records[rdata.rdtype] = (ttl, [*old, rdata] if rdata not in old else old)

    def add_mx(self, domain: str, mxs: Iterable[tuple[int, str]], ttl: int = DEFAULT_TTL) -> None:
        """Add MX records: ``add_mx("example.test", [(10, "mx1.example.test")])``."""
        self.add(domain, "MX", *(f"{preference} {host}" for preference, host in mxs), ttl=ttl)

    def add_null_mx(self, domain: str, ttl: int = DEFAULT_TTL) -> None:
        """Replace the domain's MX set with the null MX ``0 .`` (RFC 7505 §3)."""
        self.remove(domain, "MX")
        self.add(domain, "MX", "0 .", ttl=ttl)

    def add_a(self, name: str, ip: str, ttl: int = DEFAULT_TTL) -> None:
        self.add(name, "A", ip, ttl=ttl)

    def add_aaaa(self, name: str, ip: str, ttl: int = DEFAULT_TTL) -> None:
        self.add(name, "AAAA", ip, ttl=ttl)

    def remove(self, name: str, rdtype: str | None = None) -> None:
        """Delete the name's records of ``rdtype`` (all of them when None)."""
        key = _name(name)
        with self._lock:
            if rdtype is None:
                self._records.pop(key, None)
                return
            records = self._records.get(key, {})
            records.pop(dns.rdatatype.from_text(rdtype), None)
            if not records:
                self._records.pop(key, None)

    def servfail(self, name: str) -> None:
        """Answer SERVFAIL to every query for ``name`` until :meth:`clear`."""
        with self._lock:
            self._faults[_name(name)] = "servfail"

    def timeout(self, name: str) -> None:
        """Never answer a query for ``name`` (UDP or TCP) until :meth:`clear`."""
        with self._lock:
            self._faults[_name(name)] = "timeout"

    def clear(self, name: str) -> None:
        """Lift the name's fault; its records (kept meanwhile) answer again."""
        with self._lock:
            self._faults.pop(_name(name), None)

    def query_count(self, name: str, rdtype: str | None = None) -> int:
        """How many queries for ``name`` (of ``rdtype`` when given) reached the server."""
        wanted = _text(_name(name))
        return sum(
            1 for qname, qtype in self.queries if qname == wanted and rdtype in (None, qtype)
        )

    def resolver(self, lifetime: float = 2.0) -> dns.resolver.Resolver:
        """A resolver that asks only this server (no cache; set ``.cache`` to test caching)."""
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.host]
        resolver.port = self.port
        resolver.lifetime = lifetime
        resolver.timeout = lifetime
        return resolver

    # --- answering

    def respond(self, query: dns.message.Message) -> dns.message.Message | None:
        """The answer to ``query``; None when the name is set to time out."""
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        self.queries.append((_text(question.name), dns.rdatatype.to_text(question.rdtype)))
        if query.opcode() != dns.opcode.QUERY or question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        with self._lock:
            fault = self._faults.get(question.name)
            if fault == "timeout":
                return None
            if fault == "servfail":
                response.set_rcode(dns.rcode.SERVFAIL)
                return response
            self._fill(response, question.name, question.rdtype)
        return response

    def _fill(
        self, response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        for _ in range(MAX_CNAME_CHAIN):
            records = self._records.get(name)
            if records is None:
                if not any(known.is_subdomain(name) for known in self._records):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                break
            wanted = list(records) if rdtype == dns.rdatatype.ANY else [rdtype]
            found = [self._rrset(name, records, kind) for kind in wanted if kind in records]
            if found:
                response.answer.extend(found)
                return
            if dns.rdatatype.CNAME not in records:
                break
            cname = self._rrset(name, records, dns.rdatatype.CNAME)
            response.answer.append(cname)
            name = cname[0].target
        response.authority.append(self._soa(name))

    @staticmethod
    def _rrset(
        name: dns.name.Name, records: _Records, rdtype: dns.rdatatype.RdataType
    ) -> dns.rrset.RRset:
        ttl, rdatas = records[rdtype]
        return dns.rrset.from_rdata_list(name, ttl, rdatas)

    def _soa(self, name: dns.name.Name) -> dns.rrset.RRset:
        apex = dns.name.Name(name.labels[-3:])  # labels end with the root label ""
        soa = f"ns hostmaster 1 3600 600 86400 {self.negative_ttl}"
        rdata = dns.rdata.from_text("IN", "SOA", soa, origin=apex, relativize=False)
        return dns.rrset.from_rdata_list(apex, self.negative_ttl, [rdata])

    def _wire(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except (dns.exception.DNSException, ValueError):
            return None  # not a DNS message: a real server drops it too
        response = self.respond(query)
        if response is None:
            return None
        limit = 65535 if tcp else max(512, query.payload) if query.edns >= 0 else 512
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.AA | dns.flags.TC
            return truncated.to_wire()

    # --- sockets and threads

    def start(self) -> "DnsServer":
        udp, tcp = self._bind()
        self._sockets = [udp, tcp]
        self._spawn(self._serve, udp, tcp)
        return self

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """A TCP and a UDP socket on the same port (a free one when ``port`` is 0)."""
        for _ in range(50):
            tcp = socket.socket(self._family, socket.SOCK_STREAM)
            udp = socket.socket(self._family, socket.SOCK_DGRAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self.host, self.port))
                port: int = tcp.getsockname()[1]
                udp.bind((self.host, port))
            except OSError:
                tcp.close()
                udp.close()
                if self.port:
                    raise
                continue
            tcp.listen(64)
            self.port = port
            return udp, tcp
        raise RuntimeError(f"no port free for both UDP and TCP on {self.host}")

    def _spawn(self, target: Callable[..., None], *args: socket.socket) -> None:
        thread = threading.Thread(target=target, args=args, name="dns-server", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(udp, selectors.EVENT_READ)
            selector.register(tcp, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.1):
                    with contextlib.suppress(OSError):
                        if key.fileobj is udp:
                            data, peer = udp.recvfrom(65535)
                            answer = self._wire(data, tcp=False)
                            if answer is not None:
                                udp.sendto(answer, peer)
                        else:
                            conn, _ = tcp.accept()
                            self._connections.add(conn)
                            self._spawn(self._serve_tcp, conn)

    def _serve_tcp(self, conn: socket.socket) -> None:
        """Length-prefixed queries (RFC 1035 §4.2.2) until the client or the server closes."""
        conn.settimeout(_TCP_IDLE)
        with contextlib.suppress(OSError), conn:
            while not self._stopping.is_set():
                header = _recv_exact(conn, 2)
                data = _recv_exact(conn, int.from_bytes(header)) if header else None
                if data is None:
                    break
                answer = self._wire(data, tcp=True)
                if answer is not None:
                    conn.sendall(len(answer).to_bytes(2) + answer)
        self._connections.discard(conn)

    def stop(self) -> None:
        self._stopping.set()
        if self._threads:
            with socket.socket(self._family, socket.SOCK_DGRAM) as wake:  # no waiting for
                wake.sendto(b"", (self.host, self.port))  # the selector's timeout
            self._threads[0].join(5)  # the accepting thread: no new connections after this
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        for thread in self._threads:
            thread.join(5)
        for sock in self._sockets:
            sock.close()
        self._threads.clear()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
