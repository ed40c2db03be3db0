"""``mxfleet config show [DOMAIN]``: the effective delivery policies, and for a domain, the
destination it belongs to and the policy it gets, each value with where it came from.

With a domain whose destination depends on its MX hosts (site rollup, ``mx`` patterns),
the MX records are looked up through the configured DNS servers, as a worker would.
"""

import json
import sys
from typing import Any, TextIO

from shared.policies import INHERITED, Destination, Policy
from shared.settings import Settings, parse_nameserver
from workers.destinations import DestinationMap
from workers.mx import MxResolver


def describe(policy: Policy) -> dict[str, Any]:
    """A policy's effective fields as plain values (for ``--json`` and the table)."""
    values: dict[str, Any] = {}
    for name in INHERITED:
        value = getattr(policy, name)
        if name == "rate" and value is not None:
            value = str(value)
        elif name == "route" and value is not None:
            value = f"{value[0]}:{value[1]}"
        elif name == "route_auth_file" and value is not None:
            value = str(value)
        values[name] = value
    if policy.domains:
        values["domains"] = list(policy.domains)
    if policy.mx:
        values["mx"] = list(policy.mx)
    return values


def _table(policy: Policy, out: TextIO) -> None:
    values = describe(policy)
    for name, value in values.items():
        shown = "-" if value is None else value
        source = policy.sources.get(name, "policy." + policy.name)
        print(f"  {name:<32} {shown!s:<28} {source}", file=out)


def destination_of(settings: Settings, domain: str) -> Destination:
    servers = [parse_nameserver(server) for server in settings.dns_servers] or None
    resolver = MxResolver(servers, allow_private=settings.allow_private_mx)
    destinations = DestinationMap(settings.policies, resolver, threads=1)
    try:
        return destinations.resolve(domain.lower().rstrip("."))
    finally:
        destinations.close()


def show(settings: Settings, domain: str | None, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    policies = settings.policies
    if domain is None:
        everything = [policies.default, *policies.named.values()]
        if as_json:
            print(json.dumps({p.name: describe(p) for p in everything}, indent=2), file=out)
            return 0
        for policy in everything:
            print(f"[policy.{policy.name}]", file=out)
            _table(policy, out)
        return 0
    found = destination_of(settings, domain)
    if as_json:
        document = {
            "domain": domain, "destination": found.name, "why": found.why,
            "policy": found.policy.name, "settings": describe(found.policy),
        }  # fmt: skip
        print(json.dumps(document, indent=2), file=out)
        return 0
    print(f"domain       {domain}", file=out)
    print(f"destination  {found.name}  ({found.why})", file=out)
    print(f"policy       {found.policy.name}", file=out)
    _table(found.policy, out)
    return 0
