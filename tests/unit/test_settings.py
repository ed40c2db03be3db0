"""shared/settings.py: sources and their order, unknown keys, bad values, units."""

import ipaddress
import os
import re
import socket
from pathlib import Path

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.settings import Settings, SettingsError, load_settings, parse_hostport
from tests.unit.fuzz import FUZZ_FEW

BASE = {"MXFLEET_HOSTNAME": "mx.test"}


def load(env: dict[str, str] | None = None, **overrides: object) -> Settings:
    return load_settings({**BASE, **(env or {})}, **overrides)


def refusal(env: dict[str, str], **overrides: object) -> str:
    with pytest.raises(SettingsError) as info:
        load(env, **overrides)
    return str(info.value)


def toml(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "mxfleet.toml"
    path.write_text(text, "utf-8")
    return {"MXFLEET_CONFIG": str(path)}


# --- defaults and sources -----------------------------------------------------------------


def test_defaults() -> None:
    settings = load()
    assert settings.hostname == "mx.test"
    assert settings.redis_url is None
    assert settings.redis_key_prefix == "mxf:"
    assert settings.listen == "0.0.0.0:25"
    assert settings.listen_address == ("0.0.0.0", 25)
    assert settings.metrics_address == ("0.0.0.0", 9100)
    assert settings.relay_networks == [
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    ]
    assert settings.proxy_protocol_networks == []
    assert settings.max_message_size == 25 * 1024 * 1024
    assert settings.max_recipients == 1000
    assert settings.max_line_length == 2048
    assert settings.command_timeout == 300.0
    assert settings.data_timeout == 300.0
    assert settings.dns_servers == []
    assert settings.delivery_port == 25
    assert settings.allow_private_mx is False
    assert settings.auth_require_tls is True
    assert settings.tls_cert is None
    assert settings.log_level == "info"


def test_hostname_defaults_to_the_fqdn() -> None:
    assert load_settings({}).hostname == socket.getfqdn()


def test_environment_values_are_parsed() -> None:
    settings = load(
        {
            "MXFLEET_LISTEN": "[::1]:2525",
            "MXFLEET_RELAY_NETWORKS": "10.0.0.0/8, 2001:db8::/32 ,",
            "MXFLEET_MAX_MESSAGE_SIZE": "10MB",
            "MXFLEET_COMMAND_TIMEOUT": "10m",
            "MXFLEET_SESSION_TIMEOUT": "1h",
            "MXFLEET_ALLOW_PRIVATE_MX": "true",
            "MXFLEET_DNS_SERVERS": "192.0.2.53, 192.0.2.54:5353,::1",
            "MXFLEET_DELIVERY_PORT": "2525",
            "MXFLEET_REDIS_URL": "redis://127.0.0.1:6379/0",
        }
    )
    assert settings.listen_address == ("::1", 2525)
    assert settings.relay_networks == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    assert settings.max_message_size == 10_000_000
    assert settings.command_timeout == 600.0
    assert settings.session_timeout == 3600.0
    assert settings.allow_private_mx is True
    assert settings.dns_servers == ["192.0.2.53", "192.0.2.54:5353", "::1"]
    assert settings.delivery_port == 2525
    assert settings.redis_url == "redis://127.0.0.1:6379/0"


def test_environment_names_are_case_insensitive() -> None:
    assert load({"mxfleet_listen": "127.0.0.1:2525"}).listen == "127.0.0.1:2525"


def test_toml_file_is_read(tmp_path: Path) -> None:
    env = toml(
        tmp_path,
        'listen = "127.0.0.1:2525"\n'
        "max_message_size = 1048576\n"
        'data_timeout = "2m"\n'
        'relay_networks = ["192.0.2.0/24", "::1"]\n'
        "max_recipients = 200\n",
    )
    settings = load(env)
    assert settings.listen == "127.0.0.1:2525"
    assert settings.max_message_size == 1_048_576
    assert settings.data_timeout == 120.0
    assert settings.relay_networks == [
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("::1/128"),
    ]
    assert settings.max_recipients == 200


def test_environment_wins_over_toml(tmp_path: Path) -> None:
    env = toml(tmp_path, 'listen = "127.0.0.1:2525"\nmax_recipients = 200\n')
    settings = load({**env, "MXFLEET_LISTEN": "127.0.0.1:2626"})
    assert settings.listen == "127.0.0.1:2626"
    assert settings.max_recipients == 200


def test_overrides_are_weaker_than_environment_and_toml(tmp_path: Path) -> None:
    env = toml(tmp_path, "max_recipients = 200\n")
    settings = load(
        {**env, "MXFLEET_LISTEN": "127.0.0.1:2626"},
        listen="127.0.0.1:2525",
        max_recipients=300,
        max_sessions=7,
    )
    assert settings.listen == "127.0.0.1:2626"
    assert settings.max_recipients == 200
    assert settings.max_sessions == 7


def test_only_the_given_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXFLEET_LISTEN", "192.0.2.1:25")
    monkeypatch.setenv("MXFLEET_BOGUS", "1")
    assert load().listen == "0.0.0.0:25"
    assert os.environ["MXFLEET_BOGUS"] == "1"  # the process environment is left as it was


def test_other_variables_are_ignored() -> None:
    assert load({"PATH": "/bin", "MXFLEETX": "1", "HOME": "/root"}).listen == "0.0.0.0:25"


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(pydantic.ValidationError):
        settings.listen = "127.0.0.1:1"  # type: ignore[misc]  # frozen on purpose


# --- refusals -----------------------------------------------------------------------------


def test_unknown_environment_variable_is_named() -> None:
    assert (
        refusal({"MXFLEET_BOGUS": "1"})
        == "invalid configuration:\n  MXFLEET_BOGUS: unknown setting"
    )


def test_every_unknown_environment_variable_is_named_in_order() -> None:
    message = refusal({"MXFLEET_ZZZ": "1", "MXFLEET_POLICIES__DEFAULT__RATE": "5/s"})
    assert message == (
        "invalid configuration:\n"
        "  MXFLEET_POLICIES__DEFAULT__RATE: unknown setting\n"
        "  MXFLEET_ZZZ: unknown setting"
    )


def test_unknown_toml_key_is_named(tmp_path: Path) -> None:
    message = refusal(toml(tmp_path, 'listen = "127.0.0.1:2525"\nbogus = 1\n'))
    assert (
        message == "invalid configuration:\n  setting 'bogus' (env MXFLEET_BOGUS): unknown setting"
    )


def test_bad_value_message_is_exact() -> None:
    assert refusal({"MXFLEET_LISTEN": "nope"}) == (
        "invalid configuration:\n"
        "  setting 'listen' (env MXFLEET_LISTEN): "
        "'nope' is not host:port (e.g. 0.0.0.0:25 or [::]:25)"
    )


BAD_VALUES = [
    ("max_recipients", "5"),  # RFC 5321 §4.5.3.1.8 asks for at least 100
    ("max_line_length", "999"),
    ("listen", "nope"),
    ("listen", "127.0.0.1:0"),
    ("metrics_listen", ":9100"),
    ("command_timeout", "soon"),
    ("command_timeout", "-5s"),
    ("max_message_size", "lots"),
    ("max_message_size", "0"),
    ("relay_networks", "10.0.0.0/33"),
    ("relay_networks", "10.0.0.1/8"),
    ("proxy_protocol_networks", "lb.example"),
    ("log_level", "loud"),
    ("delivery_port", "70000"),
    ("redis_high_water", "1.5"),
    ("redis_wait_replicas", "-1"),
    ("dns_servers", "dns.example"),
    ("dns_servers", "192.0.2.53:0"),
    ("dns_servers", "192.0.2.53:x"),
    ("allow_private_mx", "maybe"),
    ("ingress_processes", "0"),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_environment_value_names_the_key(key: str, value: str) -> None:
    message = refusal({f"MXFLEET_{key.upper()}": value})
    assert message.startswith("invalid configuration:\n  ")
    assert f"setting {key!r} (env MXFLEET_{key.upper()}): " in message


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_bad_toml_value_names_the_key(tmp_path: Path, key: str, value: str) -> None:
    message = refusal(toml(tmp_path, f"{key} = {value!r}\n".replace("'", '"')))
    assert f"setting {key!r} (env MXFLEET_{key.upper()}): " in message


def test_every_bad_value_is_named() -> None:
    message = refusal({"MXFLEET_LISTEN": "nope", "MXFLEET_LOG_LEVEL": "loud"})
    assert "setting 'listen' (env MXFLEET_LISTEN)" in message
    assert "setting 'log_level' (env MXFLEET_LOG_LEVEL)" in message


def test_tls_cert_without_key_is_refused() -> None:
    message = refusal({"MXFLEET_TLS_CERT": "/etc/mxfleet/cert.pem"})
    assert message == "invalid configuration:\n  tls_cert and tls_key must be set together"


@pytest.mark.parametrize("listen", ["0.0.0.0:9100", "0.0.0.0:9103"])
def test_an_smtp_port_among_the_metrics_ports_is_refused(listen: str) -> None:
    env = {"MXFLEET_LISTEN": listen, "MXFLEET_INGRESS_PROCESSES": "4"}
    port = listen.rsplit(":", 1)[1]
    message = refusal(env)
    assert message == f"invalid configuration:\n  listen port {port} is a metrics port"


def test_an_smtp_port_next_to_the_metrics_ports_is_accepted() -> None:
    env = {"MXFLEET_LISTEN": "0.0.0.0:9104", "MXFLEET_INGRESS_PROCESSES": "4"}
    assert load(env).listen_address == ("0.0.0.0", 9104)
    assert load({"MXFLEET_LISTEN": "0.0.0.0:9100", "MXFLEET_METRICS_LISTEN": "0.0.0.0:0"})


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    message = refusal({"MXFLEET_CONFIG": str(path)})
    assert message == f"MXFLEET_CONFIG={path}: cannot read: No such file or directory"


def test_config_file_that_is_not_toml(tmp_path: Path) -> None:
    env = toml(tmp_path, "listen = \n")
    assert refusal(env).startswith(f"MXFLEET_CONFIG={env['MXFLEET_CONFIG']}: not valid TOML: ")


def test_nan_duration_in_toml_is_refused(tmp_path: Path) -> None:
    # TOML has `nan`; a NaN deadline makes every session expire at the first sweep.
    message = refusal(toml(tmp_path, "command_timeout = nan\n"))
    assert "setting 'command_timeout' (env MXFLEET_COMMAND_TIMEOUT): " in message


# --- host:port and name servers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0.0.0:25", ("0.0.0.0", 25)),
        ("[::]:25", ("::", 25)),
        ("[::1]:2525", ("::1", 2525)),
        ("mx.example:65535", ("mx.example", 65535)),
        ("h:1", ("h", 1)),
    ],
)
def test_parse_hostport(text: str, expected: tuple[str, int]) -> None:
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("25", "is not host:port"),
        ("host:", "is not host:port"),
        ("host:0", "is not host:port"),
        ("host:65536", "is not host:port"),
        ("host:2x", "is not host:port"),
        (":25", "has no host"),
        ("[]:25", "has no host"),
    ],
)
def test_parse_hostport_refusals(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"{text!r} {reason}")):
        parse_hostport(text)


def test_ipv6_name_server_with_port() -> None:
    # DESIGN: name servers are written host[:port]; an IPv6 host with a port needs brackets.
    assert load({"MXFLEET_DNS_SERVERS": "[2001:db8::53]:5353"}).dns_servers == [
        "[2001:db8::53]:5353"
    ]


@FUZZ_FEW
@given(st.integers(min_value=0, max_value=10**5), st.sampled_from(["s", "m", "h", "d"]))
def test_durations_from_the_environment(number: int, unit: str) -> None:
    factor = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    settings = load({"MXFLEET_DRAIN_TIMEOUT": f"{number}{unit}"})
    assert settings.drain_timeout == number * factor


@FUZZ_FEW
@given(st.integers(min_value=1, max_value=10**4), st.sampled_from(["KiB", "MiB", "kB", "MB"]))
def test_sizes_from_the_environment(number: int, unit: str) -> None:
    factor = {"KiB": 1024, "MiB": 2**20, "kB": 1000, "MB": 10**6}[unit]
    assert load({"MXFLEET_MAX_MESSAGE_SIZE": f"{number}{unit}"}).max_message_size == number * factor
