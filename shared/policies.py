"""Per-destination delivery policies (pure): what the TOML file says, what each destination
gets, and which destination a recipient domain belongs to.

```toml
[policy.default]                 # every destination without a policy of its own
max_connections = 10
[policy."example.com"]           # one domain
rate = "600/m"
[policy."*.example.net"]         # a domain and its subdomains
max_connections = 2
[policy.google]                  # every domain whose MX hosts match
mx = "*.google.com"
rate = "20/s"
burst = 5
[policy.partner]                 # relay through a smarthost instead of the MX
domains = ["partner.test", "*.partner.test"]
route = "smtp.partner.test:587"
route_auth_file = "/etc/mxfleet/partner.auth"
```

A **destination** is the unit that limits apply to, cluster-wide: a named policy is one
destination (all the domains it matches share its rate and connections, ``policy:NAME``);
a domain without one belongs to its **site**, the sorted set of its MX host names
(``mx1.example.com,mx2.example.com``), so domains hosted together share a limit without
any configuration (KumoMTA and PowerMTA call this MX rollup). Matching order: exact domain,
longest ``*.suffix``, then the first policy whose ``mx`` pattern matches one of the
domain's MX hosts, else ``default`` by site.

A field a named policy leaves out comes from ``[policy.default]``, and a field that one
leaves out comes from the top-level setting of the same name (``tls`` from
``delivery_tls``), so environment variables such as ``MXFLEET_MAX_CONNECTIONS`` still set
the defaults.
"""

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from shared.rates import Rate, parse_rate
from shared.units import parse_duration

TlsMode = Literal["opportunistic", "required", "verify", "off"]
DEFAULT = "default"
DESTINATION_PREFIX = "policy:"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9_-]+\.)*[a-z0-9_-]+$")


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


Seconds = Annotated[float, BeforeValidator(parse_duration)]
RateField = Annotated[Rate, BeforeValidator(parse_rate)]


class PolicySpec(BaseModel):
    """One ``[policy.NAME]`` table as written; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    domains: Annotated[list[str], BeforeValidator(_listify)] = Field(default_factory=list)
    mx: Annotated[list[str], BeforeValidator(_listify)] = Field(default_factory=list)
    rate: RateField | None = None
    burst: int | None = Field(default=None, ge=1)
    max_connections: int | None = Field(default=None, ge=1)
    max_messages_per_connection: int | None = Field(default=None, ge=1)
    max_recipients_per_transaction: int | None = Field(default=None, ge=1)
    retry_base: Seconds | None = None
    retry_cap: Seconds | None = None
    max_age: Seconds | None = None
    connect_timeout: Seconds | None = Field(default=None, gt=0)
    tls: TlsMode | None = None
    adaptive: bool | None = None
    adaptive_recovery: Seconds | None = Field(default=None, gt=0)
    route: str | None = None
    route_auth_file: Path | None = None


# The fields every Policy has, and the top-level setting each one falls back to.
INHERITED = {
    "rate": None,
    "burst": None,
    "max_connections": "max_connections",
    "max_messages_per_connection": "max_messages_per_connection",
    "max_recipients_per_transaction": "max_recipients_per_transaction",
    "retry_base": "retry_base",
    "retry_cap": "retry_cap",
    "max_age": "max_age",
    "connect_timeout": "connect_timeout",
    "tls": "delivery_tls",
    "adaptive": None,
    "adaptive_recovery": None,
    "route": None,
    "route_auth_file": None,
}
BUILTIN: dict[str, Any] = {"adaptive": True, "adaptive_recovery": 60.0}


@dataclass(frozen=True, slots=True)
class Policy:
    """The effective policy of one destination: every field set."""

    name: str
    rate: Rate | None
    burst: int
    max_connections: int
    max_messages_per_connection: int
    max_recipients_per_transaction: int
    retry_base: float
    retry_cap: float
    max_age: float
    connect_timeout: float
    tls: TlsMode
    adaptive: bool
    adaptive_recovery: float
    route: tuple[str, int] | None
    route_auth_file: Path | None
    domains: tuple[str, ...] = ()
    mx: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)  # field → origin

    @property
    def destination(self) -> str | None:
        """The destination a named policy is (None for ``default``: one per site)."""
        return None if self.name == DEFAULT else DESTINATION_PREFIX + self.name


@dataclass(frozen=True, slots=True)
class Destination:
    """Where a domain's mail goes, for shaping: ``name`` keys its limits in Redis."""

    name: str
    policy: Policy
    why: str  # "domain example.com", "suffix *.example.com", "mx *.google.com", "site", ...


class Policies:
    """The default policy and the named ones, and the matching rules."""

    def __init__(self, default: Policy, named: Sequence[Policy]) -> None:
        self.default = default
        self.named = {policy.name: policy for policy in named}
        self._exact: dict[str, Policy] = {}
        self._suffix: dict[str, Policy] = {}
        for policy in named:
            for pattern in policy.domains:
                if pattern.startswith("*."):
                    self._suffix[pattern[2:]] = policy
                else:
                    self._exact[pattern] = policy
        self._by_mx = [policy for policy in named if policy.mx]

    def get(self, name: str) -> Policy:
        """A policy by name; ``default`` for a name no longer configured."""
        return self.named.get(name, self.default)

    def by_domain(self, domain: str) -> tuple[Policy, str] | None:
        """The policy naming this domain (exact, then the longest suffix), and why."""
        if policy := self._exact.get(domain):
            return policy, f"domain {domain}"
        labels = domain.split(".")
        for start in range(len(labels)):  # longest suffix first; "*.x" also matches x
            suffix = ".".join(labels[start:])
            if policy := self._suffix.get(suffix):
                return policy, f"suffix *.{suffix}"
        return None

    def needs_mx(self, domain: str) -> bool:
        """Whether the domain's destination depends on its MX hosts (a DNS lookup)."""
        return self.by_domain(domain) is None and self.default.route is None

    def destination(self, domain: str, mx_hosts: Sequence[str] | None) -> Destination:
        """The domain's destination, given its MX host names (None: unknown, e.g. the
        lookup failed: the domain is then its own destination under ``default``)."""
        if found := self.by_domain(domain):
            policy, why = found
            return Destination(DESTINATION_PREFIX + policy.name, policy, why)
        if self.default.route is not None:
            return Destination(DESTINATION_PREFIX + DEFAULT, self.default, "route")
        if mx_hosts is None:
            return Destination(domain, self.default, "no MX known")
        hosts = sorted({host.lower().rstrip(".") for host in mx_hosts})
        for policy in self._by_mx:
            for pattern in policy.mx:
                if any(fnmatch.fnmatchcase(host, pattern) for host in hosts):
                    return Destination(DESTINATION_PREFIX + policy.name, policy, f"mx {pattern}")
        return Destination(",".join(hosts) or domain, self.default, "site")


def build_policies(specs: Mapping[str, PolicySpec], base: Mapping[str, Any]) -> Policies:
    """Effective policies from the ``[policy.*]`` tables and the top-level settings
    (``base``: field name → value); ValueError naming the policy at fault."""
    default_spec = specs.get(DEFAULT, PolicySpec())
    if default_spec.domains or default_spec.mx:
        raise ValueError("policy.default: matches every destination; domains/mx do not apply")
    default = _effective(DEFAULT, default_spec, PolicySpec(), base, ())
    named = []
    owner: dict[str, str] = {}
    for name, spec in specs.items():
        if name == DEFAULT:
            continue
        domains = _domains(name, spec)
        for pattern in domains:
            if pattern in owner:
                raise ValueError(f"policy.{name}: {pattern} is already in policy.{owner[pattern]}")
            owner[pattern] = name
        named.append(_effective(name, spec, default_spec, base, domains))
    return Policies(default, named)


def _domains(name: str, spec: PolicySpec) -> tuple[str, ...]:
    patterns = [name] if "." in name else []
    if not patterns and not _NAME.match(name):
        raise ValueError(
            f"policy.{name}: a name is a domain ('example.com', '*.example.com') or a word "
            "of a-z, 0-9, '-', '_'"
        )
    patterns += [d.lower().rstrip(".") for d in spec.domains]
    for pattern in patterns:
        if not _DOMAIN.match(pattern):
            raise ValueError(f"policy.{name}: {pattern!r} is not a domain or '*.domain'")
    for pattern in spec.mx:
        if not pattern or any(c.isspace() for c in pattern):
            raise ValueError(f"policy.{name}: mx {pattern!r} is not a host name pattern")
    if not patterns and not spec.mx:
        raise ValueError(
            f"policy.{name}: matches nothing; name it after a domain, or set domains = [...] "
            "or mx = '*.example.com'"
        )
    return tuple(dict.fromkeys(patterns))


def _effective(
    name: str, spec: PolicySpec, default: PolicySpec, base: Mapping[str, Any],
    domains: tuple[str, ...],
) -> Policy:  # fmt: skip
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, setting in INHERITED.items():
        for origin, source in ((f"policy.{name}", spec), ("policy.default", default)):
            if key in source.model_fields_set and getattr(source, key) is not None:
                values[key], sources[key] = getattr(source, key), origin
                break
        else:
            if setting is not None:
                values[key], sources[key] = base[setting], f"setting {setting}"
            else:
                values[key], sources[key] = BUILTIN.get(key), "built-in"
    return _checked(name, values, sources, domains, tuple(p.lower() for p in spec.mx))


def _checked(
    name: str, values: dict[str, Any], sources: dict[str, str], domains: tuple[str, ...],
    mx: tuple[str, ...],
) -> Policy:  # fmt: skip
    where = f"policy.{name}"
    rate: Rate | None = values["rate"]
    if values["burst"] is not None and rate is None:
        raise ValueError(f"{where}: burst needs a rate")
    burst = values["burst"] or (rate.default_burst() if rate else 1)
    if values["retry_cap"] < values["retry_base"]:
        raise ValueError(f"{where}: retry_cap is shorter than retry_base")
    route = _route(where, values["route"])
    if route is not None and sources["tls"].startswith("setting"):
        values["tls"], sources["tls"] = "verify", "built-in (route)"
    if route is not None and values["tls"] in ("opportunistic", "off"):
        raise ValueError(f"{where}: a route is only used over TLS: tls = 'required' or 'verify'")
    auth_file: Path | None = values["route_auth_file"]
    if auth_file is not None:
        if route is None:
            raise ValueError(f"{where}: route_auth_file needs a route")
        if not auth_file.is_file():
            raise ValueError(f"{where}: route_auth_file {auth_file} is not a readable file")
    return Policy(
        name=name, rate=rate, burst=burst,
        max_connections=values["max_connections"],
        max_messages_per_connection=values["max_messages_per_connection"],
        max_recipients_per_transaction=values["max_recipients_per_transaction"],
        retry_base=values["retry_base"], retry_cap=values["retry_cap"],
        max_age=values["max_age"], connect_timeout=values["connect_timeout"],
        tls=values["tls"], adaptive=bool(values["adaptive"]),
        adaptive_recovery=values["adaptive_recovery"], route=route,
        route_auth_file=auth_file, domains=domains, mx=mx, sources=sources,
    )  # fmt: skip


def _route(where: str, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: route {value!r} is not host:port (e.g. smtp.example.com:587)")
    return host.lower(), int(port)
