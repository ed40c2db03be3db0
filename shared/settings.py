"""The one typed, frozen settings object (the operator contract in DESIGN.md).

Sources, strongest first: ``MXFLEET_*`` environment variables (nested fields with ``__``),
then the TOML file named by ``MXFLEET_CONFIG``, then the defaults below. Unknown keys and
bad values are refused by :func:`load_settings` with a message that names the key. Each
process builds its settings once in ``main()`` and passes them down; nothing else reads the
environment.
"""

import ipaddress
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.policies import Policies, PolicySpec, build_policies
from shared.priority import Priority
from shared.redis_url import check_url
from shared.units import parse_duration, parse_size

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_size)]
# What the ingress does with a bare CR or LF in DATA (see ingress/data.py).
BareNewlines = Literal["normalize", "reject"]
ENV_PREFIX = "MXFLEET_"
CONFIG_ENV = "MXFLEET_CONFIG"


class SettingsError(ValueError):
    """The configuration is unusable; the message names every key at fault."""


def parse_hostport(value: str, *, any_port: bool = False) -> tuple[str, int]:
    """``"0.0.0.0:25"``, ``"[::1]:2525"`` → (host, port); ValueError when malformed.

    ``any_port`` also allows port 0 (the system picks one: metrics endpoints in tests).
    """
    host, sep, port = value.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not port.isdigit() or not lowest <= int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 0.0.0.0:25 or [::]:25)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"{value!r} has no host (use 0.0.0.0 or [::] for every address)")
    return host, int(port)


def parse_nameserver(value: str) -> tuple[str, int]:
    """``"192.0.2.53"``, ``"192.0.2.53:5353"``, ``"2001:db8::53"``, ``"[2001:db8::53]:5353"``."""
    host, port = value, "53"
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{value!r} is not [IPv6]:port")
        port = rest[1:] or "53"
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{value!r}: {host!r} is not an IP address") from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: bad port")
    return str(address), int(port)


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _hostport(value: str) -> str:
    parse_hostport(value)
    return value


def _hostport_any(value: str) -> str:
    parse_hostport(value, any_port=True)
    return value


def _parse_networks(value: object) -> list[Network]:
    parts = _split_list(value)
    if not isinstance(parts, list):
        raise ValueError("a comma-separated list of networks such as '10.0.0.0/8,::1' is required")
    networks = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(str(part).strip()))
        except ValueError as exc:
            raise ValueError(f"{str(part)!r} is not a network: {exc}") from None
    return networks


Networks = Annotated[list[Network], NoDecode, BeforeValidator(_parse_networks)]
# SMTP AUTH user names, comma-separated in the environment
Users = Annotated[list[str], NoDecode, BeforeValidator(_split_list)]
HostPort = Annotated[str, AfterValidator(_hostport)]
HostAnyPort = Annotated[str, AfterValidator(_hostport_any)]


class Settings(BaseSettings):
    """Every setting of every mxfleet process; see the README's settings table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    # --- Redis: the spool (queue of record) and the Celery broker
    redis_url: str | None = None
    redis_key_prefix: str = "mxf:"
    redis_timeout: Seconds = 5.0
    redis_wait_replicas: int = Field(default=0, ge=0)
    redis_wait_timeout: Seconds = 1.0
    redis_high_water: float = Field(default=0.9, gt=0, le=1)
    require_aof: bool = True

    # --- identity and observability
    hostname: str = Field(default_factory=socket.getfqdn, min_length=1)
    metrics_listen: HostAnyPort = "0.0.0.0:9100"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- SMTP ingress
    listen: HostPort = "0.0.0.0:25"
    ingress_processes: int = Field(default=1, ge=1, le=256)
    relay_networks: Networks = Field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1")]
    )
    proxy_protocol_networks: Networks = Field(default_factory=list)
    max_message_size: Bytes = Field(default=parse_size("25MiB"), gt=0)
    max_recipients: int = Field(default=1000, ge=100)  # RFC 5321 §4.5.3.1.8: at least 100
    max_sessions: int = Field(default=2000, ge=1)
    max_sessions_per_ip: int = Field(default=100, ge=1)
    max_line_length: int = Field(default=2048, ge=1000)  # RFC 5321 §4.5.3.1.6: 1000 with CRLF
    max_bad_commands: int = Field(default=10, ge=1)
    max_received_headers: int = Field(default=100, ge=10)  # RFC 5321 §6.3: "at least 100"
    bare_newlines: BareNewlines = "normalize"  # RFC 5321 §2.3.8; CVE-2023-51764
    max_auth_failures: int = Field(default=3, ge=1)
    # Failed AUTH per client address, counted in Redis for the whole cluster: the delay
    # after a failure grows with the count, and over the limit AUTH is refused unchecked
    # until a window has passed since the address's last failure.
    max_auth_failures_per_ip: int = Field(default=10, ge=1)
    auth_failure_window: Seconds = Field(default=900.0, gt=0)
    auth_failure_delay: Seconds = Field(default=1.0, ge=0)
    command_timeout: Seconds = 300.0  # RFC 5321 §4.5.3.2.7: at least 5 minutes
    data_timeout: Seconds = 300.0
    session_timeout: Seconds = 1800.0
    drain_timeout: Seconds = 30.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_file: Path | None = None
    auth_require_tls: bool = True
    # DKIM signing keys, <selector>._domainkey.<domain>.key files (shared/dkim_keys.py);
    # read at start by the ingress (mail) and the workers (their DSNs); dispatchers ignore it
    dkim_keys_dir: Path | None = None
    # --- priority classes (shared/priority.py, ingress/priority.py): which due mail of a
    # destination goes first when its limits are the bottleneck
    default_priority: Priority = "bulk"
    transactional_users: Users = Field(default_factory=list)  # AUTH users
    bulk_users: Users = Field(default_factory=list)
    priority_header: bool = True  # honour X-Mxfleet-Priority from relay clients
    # --- HTTP injection API of the ingress (ingress/api.py; off unless api_listen is set)
    api_listen: HostPort | None = None
    api_tokens_file: Path | None = None
    api_allow_plaintext: bool = False  # serve the API without TLS (tests, loopback)
    # a request's body; one message as base64 is 4/3 of its size, so keep this above
    # 4/3 x max_message_size
    api_max_request_size: Bytes = Field(default=parse_size("40MiB"), gt=0)
    # connections one ingress process serves at once on the API port, and how long one may
    # take to deliver a whole request (request line, fields and body: no slowloris)
    api_max_connections: int = Field(default=1000, ge=1)
    api_request_timeout: Seconds = Field(default=30.0, gt=0)

    # --- suppression list (shared/suppression.py): recipients refused at RCPT for relay
    # clients (refuse: 550 5.7.1; drop: 250, not queued, an event), learnt from hard
    # bounces (5.1.x) in the sender's domain or for everyone; off: neither
    suppression: Literal["refuse", "drop", "off"] = "refuse"
    suppression_scope: Literal["sender_domain", "global"] = "sender_domain"
    suppression_ttl: Seconds = Field(default=30 * 86400.0, gt=0)

    # --- delivery: the dispatcher and the workers
    worker_concurrency: int = Field(default=32, ge=1, le=1000)
    ticket_budget: Seconds = 60.0
    lease_time: Seconds = Field(default=120.0, ge=5)
    batch_size: int = Field(default=50, ge=1, le=1000)
    # A claim's reply carries the bodies; Redis holds it in memory while it is sent, so large
    # messages come in smaller batches (at least one message per claim).
    batch_bytes: Bytes = Field(default=parse_size("4MiB"), gt=0)
    max_connections: int = Field(default=10, ge=1)
    max_messages_per_connection: int = Field(default=1000, ge=1)
    max_recipients_per_transaction: int = Field(default=100, ge=1)
    max_tickets: int = Field(default=1000, ge=1)
    retry_base: Seconds = 300.0
    retry_cap: Seconds = 7200.0
    max_age: Seconds = 5 * 86400.0
    delivery_tls: Literal["opportunistic", "required", "verify", "off"] = "opportunistic"
    connect_timeout: Seconds = 30.0
    data_reply_timeout: Seconds = 600.0  # RFC 5321 §4.5.3.2.6: 10 minutes
    events_maxlen: int = Field(default=100_000, ge=1000)
    dns_servers: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = Field(
        default_factory=list
    )
    delivery_port: int = Field(default=25, gt=0, lt=65536)
    allow_private_mx: bool = False
    # per-destination policies: [policy.default], [policy."example.com"], ... (see
    # shared/policies.py); their fields fall back to the top-level delivery settings above
    policy: dict[str, PolicySpec] = Field(default_factory=dict)
    _policies: Policies = PrivateAttr()

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str | None) -> str | None:
        return None if url is None else check_url(url)

    @field_validator("bulk_users")
    @classmethod
    def _check_users(cls, bulk: list[str], info: ValidationInfo) -> list[str]:
        both = sorted(set(bulk) & set(info.data.get("transactional_users", [])))
        if both:
            raise ValueError(f"also in transactional_users: {', '.join(both)}")
        return bulk

    @field_validator("dns_servers")
    @classmethod
    def _check_dns_servers(cls, servers: list[str]) -> list[str]:
        for server in servers:
            parse_nameserver(server)
        return servers

    def model_post_init(self, context: Any, /) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        if self._is_metrics_port(self.listen_address[1]):
            raise ValueError(f"listen port {self.listen_address[1]} is a metrics port")
        if self.api_listen is not None:
            self._check_api()
        self._policies = build_policies(self.policy, self.model_dump(exclude={"policy"}))

    def _check_api(self) -> None:
        if self.api_tokens_file is None:
            raise ValueError("api_listen needs api_tokens_file (the clients' bearer tokens)")
        if self.tls_cert is None and not self.api_allow_plaintext:
            raise ValueError(
                "api_listen without tls_cert/tls_key would carry bearer tokens in clear: "
                "configure the certificate, or set api_allow_plaintext = true (loopback, tests)"
            )
        port = self.api_address[1]
        if port == self.listen_address[1] or self._is_metrics_port(port):
            raise ValueError(f"api_listen port {port} is the SMTP port or a metrics port")

    def _is_metrics_port(self, port: int) -> bool:
        """True when ``port`` is one of the metrics ports (one per ingress process)."""
        metrics = self.metrics_address[1]
        return metrics != 0 and metrics <= port < metrics + self.ingress_processes

    @property
    def policies(self) -> Policies:
        """The effective per-destination policies."""
        return self._policies

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_hostport(self.listen)

    @property
    def metrics_address(self) -> tuple[str, int]:
        return parse_hostport(self.metrics_listen, any_port=True)

    @property
    def api_address(self) -> tuple[str, int]:
        """(host, port) of the HTTP API; only meaningful when ``api_listen`` is set."""
        return parse_hostport(self.api_listen or "")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init (the loaded TOML file and overrides) is weaker than the environment.
        return (env_settings, init_settings)


def _unknown_env(environ: dict[str, str]) -> list[str]:
    known = {name.upper() for name in Settings.model_fields}
    unknown = []
    for name in environ:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper == CONFIG_ENV:
            continue
        field = upper[len(ENV_PREFIX) :].split("__", 1)[0]
        if field not in known:
            unknown.append(name)
    return sorted(unknown)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise SettingsError(f"{CONFIG_ENV}={path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{CONFIG_ENV}={path}: not valid TOML: {exc}") from exc


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if not loc:
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        key = ".".join(loc)
        env = ENV_PREFIX + "__".join(loc).upper()
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown setting"
        lines.append(f"setting {key!r} (env {env}): {reason}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment and ``MXFLEET_CONFIG``; SettingsError if bad.

    ``overrides`` are weaker than the environment, like the TOML file (``mxfleet up`` uses
    them for its laptop defaults).
    """
    env = dict(os.environ if environ is None else environ)
    unknown = _unknown_env(env)
    if unknown:
        raise SettingsError(
            "invalid configuration:\n  "
            + "\n  ".join(f"{name}: unknown setting" for name in unknown)
        )
    values: dict[str, Any] = dict(overrides)
    if config := env.get(CONFIG_ENV):
        values.update(_read_toml(Path(config)))
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except ValueError as exc:
        raise SettingsError(f"invalid configuration: {exc}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
