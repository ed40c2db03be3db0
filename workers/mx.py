"""MX routing: a recipient domain → the ordered addresses a delivery should try.

Owns the DNS side of RFC 5321 §5.1 for the workers: MX lookup (dnspython, synchronous; one
``MxResolver`` serves every worker thread), preference order with equal preferences shuffled
on every call, implicit MX, null MX (RFC 7505), refusing private/local addresses, and a
bounded TTL cache. It opens no SMTP connection and decides nothing about jobs.

A host's addresses come IPv4 first, then IPv6: §5.1 leaves that order to the client, and
IPv4 is what bulk mail is judged on (receivers ask more of IPv6 senders; many pods have no
IPv6 route). ``route()`` raises PermanentFailure or TemporaryFailure with a reply below.

Cache by domain: routes and permanent failures live for the smallest TTL of the RRsets used
(negative answers: RFC 2308 §5, not cached without an SOA), at most an hour. Temporary
failures are never cached; a route missing a host that failed temporarily lives ≤ 30 s.
"""

import ipaddress
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableSequence, Sequence
from dataclasses import dataclass, replace
from itertools import groupby
from operator import attrgetter
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from shared.errors import PermanentFailure, TemporaryFailure
from shared.replies import Reply

# Enhanced status codes: RFC 3463 §3.2 (X.1.2 bad destination system), §3.5 (X.4.3 directory
# server failure, X.4.4 unable to route); RFC 7505 §4.2 (556 5.1.10 for a null MX).
# Permanent: the domain is NXDOMAIN or not a valid name.
NO_SUCH_DOMAIN = Reply(550, "5.1.2", "Recipient domain does not exist")
# Permanent: a null MX, one MX record "0 ." (RFC 7505 §3).
NULL_MX = Reply(556, "5.1.10", "Recipient domain does not accept mail (null MX)")
# Permanent: no MX host (or the implicit MX, the domain itself) has an address.
NO_ROUTE = Reply(550, "5.4.4", "Unable to route: no mail exchanger has an address")
# Permanent: addresses exist but all are private/local. An operator may fix the zone, but it
# is a routing failure (X.4.4), and retrying a domain that points at 10.0.0.1 helps no one.
PRIVATE_MX = Reply(550, "5.4.4", "MX points to a private/local address")
# Temporary: SERVFAIL, REFUSED or timeout, and no usable host.
DNS_TEMPFAIL = Reply(451, "4.4.3", "DNS lookup failed, will retry")

MAX_TTL = 3600.0  # seconds a route may be cached, whatever the zone says
PARTIAL_TTL = 30.0  # ... when one of its hosts could not be resolved (temporary failure)
MAX_ENTRIES = 10_000  # domains in the cache (least recently used go first)
MAX_MX_HOSTS = 10  # hosts resolved per domain: bounds what a hostile zone costs a thread
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1 well-known prefix


@dataclass(frozen=True, slots=True)
class Target:
    """One address to try: the MX host it belongs to and that host's MX preference."""

    host: str
    address: str
    preference: int
    implicit: bool = False  # no MX records: the domain itself (RFC 5321 §5.1)


@dataclass(frozen=True, slots=True)
class MxHost:
    """One mail exchanger and its addresses (IPv4 first, then IPv6)."""

    name: str
    preference: int
    addresses: tuple[str, ...] = ()
    implicit: bool = False


def is_null_mx(records: Sequence[tuple[int, str]]) -> bool:
    """RFC 7505 §3: a single MX record, preference 0, exchange "." (the root)."""
    return len(records) == 1 and records[0][0] == 0 and records[0][1] in (".", "")


def mx_names(records: Iterable[tuple[int, str]]) -> list[tuple[int, str]]:
    """(preference, exchange) pairs worth resolving, by preference, each name once.

    Dropped: "." (a null MX mixed with other records, RFC 7505 §3 forbids it) and IP literals
    (§5.1: the exchange is a domain name). A name listed twice keeps its lowest preference.
    """
    seen: set[str] = set()
    names = []
    for preference, exchange in sorted(records):
        name = exchange.lower().rstrip(".")
        if not name or name in seen or _is_ip(name):
            continue
        seen.add(name)
        names.append((preference, name))
    return names[:MAX_MX_HOSTS]


def order_targets(
    hosts: Iterable[MxHost], shuffle: Callable[[MutableSequence[Any]], None] = random.shuffle
) -> list[Target]:
    """RFC 5321 §5.1: preference ascending, equal preferences in random order, then each
    host's addresses in turn."""
    ordered: list[MxHost] = []
    by_preference = attrgetter("preference")
    for _, group in groupby(sorted(hosts, key=by_preference), by_preference):
        same = list(group)
        shuffle(same)
        ordered.extend(same)
    return [Target(h.name, a, h.preference, h.implicit) for h in ordered for a in h.addresses]


def is_public(address: str) -> bool:
    """Whether production may deliver to this address: globally routable unicast.

    Refused: loopback, RFC 1918, CGNAT, link-local, unspecified, multicast, reserved,
    documentation, ULA fc00::/7, site-local; an IPv4 address inside IPv6 (mapped, RFC 4291
    §2.5.5.2; NAT64, RFC 6052; 6to4, RFC 3056) is judged as the IPv4 address it carries.
    """
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(str(embedded))
        if ip.is_site_local:
            return False
    local = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
    return ip.is_global and not (local or ip.is_multicast or ip.is_reserved)


def choose(hosts: Sequence[MxHost], *, incomplete: bool, allow_private: bool) -> list[MxHost]:
    """The hosts to deliver to; raise when there is none.

    ``incomplete``: some host could not be resolved (temporary failure), so an empty result
    is temporary too.
    """
    allowed = hosts
    if not allow_private:
        allowed = [replace(h, addresses=tuple(filter(is_public, h.addresses))) for h in hosts]
    usable = [host for host in allowed if host.addresses]
    if usable:
        return usable
    if incomplete:
        raise TemporaryFailure("an MX host could not be resolved", reply=DNS_TEMPFAIL)
    if any(host.addresses for host in hosts):
        raise PermanentFailure(reply=PRIVATE_MX)
    raise PermanentFailure(reply=NO_ROUTE)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Route:
    hosts: tuple[MxHost, ...]
    ttl: float
    failure: Reply | None = None
    detail: str = ""


class MxResolver:
    """Routes for delivery, shared by worker threads (the cache has a lock; dnspython's
    ``resolve`` does not change its resolver). Two threads missing the same domain at once
    both look it up. ``nameservers``: (address, port) pairs; None or empty: /etc/resolv.conf.
    ``timeout``: seconds per DNS query, every nameserver and retry included."""

    def __init__(
        self,
        nameservers: list[tuple[str, int]] | None,
        *,
        allow_private: bool,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers
            ]
        self._resolver.lifetime = timeout
        self._allow_private = allow_private
        self._clock = clock
        self._cache: OrderedDict[str, tuple[float, _Route]] = OrderedDict()
        self._lock = threading.Lock()

    def route(self, domain: str) -> list[Target]:
        """The addresses to try for ``domain`` (a lower-case A-label), best first."""
        now = self._clock()
        route = self._cached(domain, now)
        if route is None:
            route = self._lookup(domain)
            self._store(domain, route, now)
        if route.failure is not None:
            raise PermanentFailure(route.detail, reply=route.failure)
        return order_targets(route.hosts)

    def host(self, name: str) -> list[Target]:
        """The addresses of one host an operator named (a smarthost ``route``), IPv4 first;
        an IP address stands for itself. Private addresses are allowed: the operator chose
        them. Not cached beyond the resolver's own work (routes are few and their tickets
        long). Raises TemporaryFailure or PermanentFailure (no such host)."""
        if _is_ip(name):
            return [Target(name, name, 0)]
        addresses, _ = self._addresses(name)
        if not addresses:
            raise PermanentFailure(f"{name}: no address", reply=NO_ROUTE)
        return [Target(name, address, 0) for address in addresses]

    def _cached(self, domain: str, now: float) -> _Route | None:
        with self._lock:
            entry = self._cache.get(domain)
            if entry is None or entry[0] <= now:
                return None
            self._cache.move_to_end(domain)
            return entry[1]

    def _store(self, domain: str, route: _Route, now: float) -> None:
        if route.ttl <= 0:
            return
        with self._lock:
            self._cache[domain] = (now + min(route.ttl, MAX_TTL), route)
            self._cache.move_to_end(domain)
            while len(self._cache) > MAX_ENTRIES:
                self._cache.popitem(last=False)

    def _lookup(self, domain: str) -> _Route:
        try:
            answer = self._query(domain, dns.rdatatype.MX)
        except dns.resolver.NXDOMAIN as exc:
            return _Route((), _nxdomain_ttl(exc), NO_SUCH_DOMAIN, f"{domain}: NXDOMAIN")
        records = [(int(r.preference), str(r.exchange.to_text())) for r in answer]
        ttl = _ttl(answer)
        if is_null_mx(records):
            return _Route((), ttl, NULL_MX, f"{domain}: null MX (RFC 7505)")
        hosts = [MxHost(name, pref) for pref, name in mx_names(records)]
        if not records:  # RFC 5321 §5.1: no MX → implicit MX, the domain itself, preference 0
            hosts = [MxHost(domain, 0, implicit=True)]
        resolved, hosts_ttl, incomplete = self._resolve(hosts)
        ttl = min(ttl, hosts_ttl)
        try:
            usable = choose(resolved, incomplete=incomplete, allow_private=self._allow_private)
        except PermanentFailure as exc:
            return _Route((), ttl, exc.reply, f"{domain}: {exc}")
        return _Route(tuple(usable), min(ttl, PARTIAL_TTL) if incomplete else ttl)

    def _resolve(self, hosts: list[MxHost]) -> tuple[list[MxHost], float, bool]:
        """The hosts with their addresses, the smallest TTL, whether one failed temporarily."""
        resolved, ttl, incomplete = [], MAX_TTL, False
        for host in hosts:
            try:
                addresses, host_ttl = self._addresses(host.name)
            except TemporaryFailure:
                incomplete = True
                continue
            except PermanentFailure:  # not a valid name: like NXDOMAIN, skip the host
                continue
            resolved.append(replace(host, addresses=addresses))
            ttl = min(ttl, host_ttl)
        return resolved, ttl, incomplete

    def _addresses(self, name: str) -> tuple[tuple[str, ...], float]:
        """A then AAAA records of one host, and their TTL; () if the name does not exist."""
        addresses: list[str] = []
        ttl = MAX_TTL
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = self._query(name, rdtype)
            except dns.resolver.NXDOMAIN as exc:
                return (), min(ttl, _nxdomain_ttl(exc))
            addresses.extend(str(r.address) for r in answer)
            ttl = min(ttl, _ttl(answer))
        return tuple(addresses), ttl

    def _query(self, name: str, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer:
        """One query; NXDOMAIN passes through, every other failure is temporary."""
        try:
            qname = dns.name.from_text(name)  # absolute: no search list applies
        except dns.exception.DNSException as exc:
            raise PermanentFailure(f"{name}: {exc}", reply=NO_SUCH_DOMAIN) from None
        try:
            return self._resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            raise
        except dns.exception.DNSException as exc:  # SERVFAIL, REFUSED, timeout, bad reply
            rdname = dns.rdatatype.to_text(rdtype)
            raise TemporaryFailure(f"{name} {rdname}: {exc}", reply=DNS_TEMPFAIL) from None


def _ttl(answer: dns.resolver.Answer) -> float:
    """Positive answers: the smallest TTL of the chain (CNAMEs included); else negative."""
    if answer.rrset is not None:
        return float(answer.chaining_result.minimum_ttl)
    return _negative_ttl(answer.response)


def _nxdomain_ttl(exc: dns.resolver.NXDOMAIN) -> float:
    responses: dict[dns.name.Name, dns.message.Message] = exc.kwargs.get("responses", {})
    return min((_negative_ttl(r) for r in responses.values()), default=0.0)


def _negative_ttl(response: dns.message.Message) -> float:
    """RFC 2308 §5: min(SOA TTL, SOA MINIMUM) from the authority section; 0 without an SOA."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return 0.0
