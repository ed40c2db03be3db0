"""Hosts for the fleet harness: one network namespace per host when the tests may make
them, else addresses on loopback.

With root and ``ip netns`` (:func:`namespaces_available`), a :class:`Network` is a private
LAN that the test builds and tears down itself:

- a *switch* namespace holding a bridge;
- one namespace per :class:`Host`, joined to the bridge by a veth pair (``eth0`` inside),
  with its own addresses in 198.18.N.0/24 (RFC 2544's benchmarking range: never routed,
  never anyone's real network) and its own loopback;
- the test process itself joins as host ``.1``, through one veth whose far end is on the
  bridge, so the test reaches every host and no other route changes.

Traffic stays inside these namespaces. A partition (:meth:`Network.cut`) takes the host's
port on the bridge down: the host's packets go nowhere and its peers' packets to it vanish,
as when a node's link or its rack switch fails; TCP connections stall rather than reset.

Without namespaces, every host is one 127.0.0.N address in the test's own namespace, and a
"cut" freezes the host's processes (SIGSTOP) for the same time, which is what the rest of
the cluster sees of a partitioned node (no answers, leases expire), short of real packets
being dropped.
"""

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_PREFIX = "mxf"  # every namespace and veth the harness makes starts with it
_NETNS_DIR = Path("/run/netns")


def namespaces_available() -> bool:
    """Root, ``ip`` on PATH, and a namespace can really be made here (``TEST_NETNS=0``
    asks for the loopback fallback anyway)."""
    if os.environ.get("TEST_NETNS") == "0" or os.geteuid() != 0 or not shutil.which("ip"):
        return False
    name = f"{_PREFIX}probe{os.getpid()}"
    made = _ip("netns", "add", name, check=False).returncode == 0
    if made:
        _ip("netns", "del", name, check=False)
    return made


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def remove_stale() -> None:
    """Delete namespaces left by a harness whose process died without tearing down."""
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        owner = entry.name.removeprefix(_PREFIX).split("-")[0]
        if entry.name.startswith(_PREFIX) and owner.isdigit() and not _alive(int(owner)):
            _ip("netns", "del", entry.name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Host:
    """A machine of the fleet: its addresses, and how to run a command on it."""

    name: str
    addresses: list[str]
    namespace: str | None = None  # None: loopback addresses in the test's namespace
    pids: set[int] = field(default_factory=set)  # processes started on it (for freezing)

    @property
    def address(self) -> str:
        return self.addresses[0]

    def argv(self, command: list[str]) -> list[str]:
        if self.namespace is None:
            return command
        return ["ip", "netns", "exec", self.namespace, *command]

    def popen(self, command: list[str], **kwargs: object) -> "subprocess.Popen[bytes]":
        """Start ``command`` on this host (``ip netns exec`` execs it: the pid is its own)."""
        process = subprocess.Popen(self.argv(command), **kwargs)  # type: ignore[call-overload]
        self.pids.add(process.pid)
        assert isinstance(process, subprocess.Popen)
        return process


class Network:
    """Hosts on one private LAN (namespaces) or on loopback (fallback)."""

    def __init__(self, *, use_namespaces: bool) -> None:
        self.namespaced = use_namespaces
        self.hosts: list[Host] = []
        self._frozen: set[str] = set()
        self._tag = f"{_PREFIX}{os.getpid()}-{random.randrange(1 << 16):04x}"
        if use_namespaces:
            remove_stale()
            self._subnet = ipaddress.ip_network(f"198.18.{random.randrange(256)}.0/24")
            self._switch = f"{self._tag}-sw"
            self._next = 10
            self._build_switch()
            self.own_address = str(self._subnet.network_address + 1)
        else:
            self._next = 2 + random.randrange(50) * 4
            self.own_address = "127.0.0.1"

    @property
    def subnet(self) -> str:
        """The network every host (and the test) is on: the cluster's relay network."""
        return str(self._subnet) if self.namespaced else "127.0.0.0/8"

    def _build_switch(self) -> None:
        _ip("netns", "add", self._switch)
        _ip("-n", self._switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self._switch, "link", "set", "br0", "up")
        _ip("-n", self._switch, "link", "set", "lo", "up")
        # The test's own port: its far end is in the test's namespace (netns by pid).
        own = self._own = f"{_PREFIX}{os.getpid() % 100000}{random.randrange(1000):03d}"
        _ip("-n", self._switch, "link", "add", "up0", "type", "veth",
            "peer", "name", own, "netns", str(os.getpid()))  # fmt: skip
        _ip("-n", self._switch, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{self._subnet.network_address + 1}/{self._subnet.prefixlen}",
            "dev", own)  # fmt: skip
        _ip("link", "set", own, "up")

    def add(self, name: str, addresses: int = 1) -> Host:
        """A new host with ``addresses`` addresses of its own."""
        if not self.namespaced:
            first = self._next
            self._next += addresses
            return self._register(Host(name, [f"127.0.0.{first + i}" for i in range(addresses)]))
        host = Host(name, [], namespace=f"{self._tag}-{len(self.hosts)}")
        _ip("netns", "add", host.namespace or "")
        port = f"p{len(self.hosts)}"
        _ip("-n", self._switch, "link", "add", port, "type", "veth",
            "peer", "name", "eth0", "netns", host.namespace or "")  # fmt: skip
        _ip("-n", self._switch, "link", "set", port, "master", "br0", "up")
        for _ in range(addresses):
            address = str(self._subnet.network_address + self._next)
            self._next += 1
            _ip("-n", host.namespace or "", "addr", "add", f"{address}/{self._subnet.prefixlen}",
                "dev", "eth0")  # fmt: skip
            host.addresses.append(address)
        _ip("-n", host.namespace or "", "link", "set", "eth0", "up")
        _ip("-n", host.namespace or "", "link", "set", "lo", "up")
        return self._register(host)

    def _register(self, host: Host) -> Host:
        self.hosts.append(host)
        return host

    def cut(self, host: Host) -> None:
        """Partition ``host`` from every other host (and from the test)."""
        if self.namespaced:
            _ip("-n", self._switch, "link", "set", f"p{self.hosts.index(host)}", "down")
            return
        self._frozen.add(host.name)
        for pid in host.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def heal(self, host: Host) -> None:
        if self.namespaced:
            _ip("-n", self._switch, "link", "set", f"p{self.hosts.index(host)}", "up")
            return
        self._frozen.discard(host.name)
        for pid in host.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Remove every namespace (their veths go with them) or thaw frozen processes."""
        if not self.namespaced:
            for host in self.hosts:
                if host.name in self._frozen:
                    self.heal(host)
            return
        _ip("link", "del", self._own, check=False)
        for host in self.hosts:
            _ip("netns", "del", host.namespace or "", check=False)
        _ip("netns", "del", self._switch, check=False)


@contextlib.contextmanager
def network(*, use_namespaces: bool) -> Iterator[Network]:
    net = Network(use_namespaces=use_namespaces)
    try:
        yield net
    finally:
        net.close()
