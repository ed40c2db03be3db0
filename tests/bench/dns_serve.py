"""dns_serve.py - the benchmark's DNS: tests/servers/dns_server.py's DnsServer as a process.

Usage: .venv/bin/python tests/bench/dns_serve.py --first-ip 127.0.0.10 [--domains 10]
           [--suffix bench.test] [--listen 127.0.0.1:0] [--port-file FILE]

Serves, for i in 0..domains-1: ``d{i}.{suffix}  MX 10 mx.d{i}.{suffix}`` and
``mx.d{i}.{suffix}  A  first-ip + i``. Listens on UDP and TCP (port 0: a free one), writes
``host:port`` (the format of MXFLEET_DNS_SERVERS) to --port-file once it answers, and runs
until SIGTERM/SIGINT. Loopback only.
"""

import argparse
import ipaddress
import signal
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.servers.dns_server import DnsServer  # noqa: E402 -- after the path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--first-ip", required=True)
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--suffix", default="bench.test")
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--port-file")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        print(f"refusing non-loopback listen address {a.listen}", file=sys.stderr)
        return 2
    first = ipaddress.ip_address(a.first_ip)
    server = DnsServer(host, int(port))
    for i in range(a.domains):
        domain = f"d{i}.{a.suffix}"
        server.add_mx(domain, [(10, f"mx.{domain}")], ttl=3600)
        server.add_a(f"mx.{domain}", str(first + i), ttl=3600)
    server.start()
    answer = server.resolver().resolve(f"d0.{a.suffix}", "MX")  # it answers: say where
    assert answer.rrset is not None
    if a.port_file:
        tmp = Path(a.port_file + ".tmp")
        tmp.write_text(server.address + "\n")
        tmp.rename(a.port_file)
    print(
        f"dns_serve: {server.address} serving d0..d{a.domains - 1}.{a.suffix} -> "
        f"{first}..{first + a.domains - 1}",
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    server.stop()
    print(f"dns_serve: stopped after {len(server.queries)} queries", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
