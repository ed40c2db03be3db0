"""``mxfleet`` as a real command: bad configuration stops it with exit code 2 and a message
naming the key; ``mxfleet passwd`` prints a credentials line the ingress accepts."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ingress.auth import Credentials

_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> "subprocess.CompletedProcess[str]":
    """``python -m shared.cli ARGS`` with only ``env`` as MXFLEET_* settings."""
    environ = {key: os.environ[key] for key in _KEEP if key in os.environ}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        pytest.param({"MXFLEET_NO_SUCH_SETTING": "1"}, "MXFLEET_NO_SUCH_SETTING", id="unknown"),
        pytest.param({"MXFLEET_MAX_RECIPIENTS": "5"}, "MXFLEET_MAX_RECIPIENTS", id="too-small"),
        pytest.param({"MXFLEET_LISTEN": "localhost"}, "MXFLEET_LISTEN", id="not-host-port"),
        pytest.param({"MXFLEET_DRAIN_TIMEOUT": "soon"}, "MXFLEET_DRAIN_TIMEOUT", id="duration"),
        pytest.param(
            {"MXFLEET_RELAY_NETWORKS": "10.0.0.0/33"}, "MXFLEET_RELAY_NETWORKS", id="network"
        ),
    ],
)
def test_bad_environment_stops_the_ingress(env: dict[str, str], named: str) -> None:
    result = run_cli("ingress", env={"MXFLEET_REDIS_URL": "redis://127.0.0.1:9/0", **env})
    assert result.returncode == 2, result
    assert named in result.stderr
    assert result.stderr.startswith("mxfleet: invalid configuration")
    assert "Traceback" not in result.stderr


def test_unknown_key_in_the_config_file_stops_the_ingress(tmp_path: Path) -> None:
    config = tmp_path / "mxfleet.toml"
    config.write_text('redis_url = "redis://127.0.0.1:9/0"\nmax_sesions = 10\n')
    result = run_cli("ingress", env={"MXFLEET_CONFIG": str(config)})
    assert result.returncode == 2, result
    assert "max_sesions" in result.stderr
    assert "unknown setting" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_value_in_the_config_file_stops_the_ingress(tmp_path: Path) -> None:
    config = tmp_path / "mxfleet.toml"
    config.write_text('redis_url = "redis://127.0.0.1:9/0"\nmax_line_length = 10\n')
    result = run_cli("ingress", env={"MXFLEET_CONFIG": str(config)})
    assert result.returncode == 2, result
    assert "max_line_length" in result.stderr
    assert "Traceback" not in result.stderr


def test_passwd_prints_a_line_the_ingress_accepts(tmp_path: Path) -> None:
    result = run_cli("passwd", "alice", stdin="s3cret pass\n")
    assert result.returncode == 0, result
    line = result.stdout.strip()
    assert line.startswith("alice:$scrypt$")
    assert "s3cret" not in result.stdout
    path = tmp_path / "credentials"
    path.write_text(line + "\n")
    credentials = Credentials.load(path)
    assert credentials.verify("alice", "s3cret pass")
    assert not credentials.verify("alice", "s3cret")
    assert not credentials.verify("bob", "s3cret pass")


def test_passwd_refuses_an_empty_password() -> None:
    result = run_cli("passwd", "alice", stdin="\n")
    assert result.returncode == 2, result
    assert result.stdout == ""


CONFIG = """
[policy.default]
max_connections = 4
[policy.google]
mx = "*.google.com"
rate = "20/s"
burst = 5
[policy."*.example.net"]
max_connections = 2
"""


def test_config_show_names_the_destination_and_policy_of_a_domain(tmp_path: Path) -> None:
    from tests.servers.dns_server import DnsServer

    path = tmp_path / "mxfleet.toml"
    path.write_text(CONFIG)
    dns = DnsServer().start()
    try:
        dns.add_mx("gmail.test", [(5, "gmail-smtp-in.l.google.com"), (10, "alt1.l.google.com")])
        dns.add_a("gmail-smtp-in.l.google.com", "127.0.0.2")
        dns.add_a("alt1.l.google.com", "127.0.0.3")
        dns.add_mx("hosted.test", [(10, "mx.hosting.test")])
        dns.add_a("mx.hosting.test", "127.0.0.4")
        env = {
            "MXFLEET_CONFIG": str(path),
            "MXFLEET_DNS_SERVERS": dns.address,
            "MXFLEET_ALLOW_PRIVATE_MX": "true",
        }
        google = run_cli("config", "show", "gmail.test", env=env)
        hosted = run_cli("config", "show", "hosted.test", "--json", env=env)
        suffix = run_cli("config", "show", "a.example.net", env=env)
    finally:
        dns.stop()
    assert google.returncode == 0, google.stderr
    assert "destination  policy:google  (mx *.google.com)" in google.stdout
    assert re.search(r"rate\s+20/s\s+policy\.google", google.stdout)
    assert re.search(r"max_connections\s+4\s+policy\.default", google.stdout)
    assert hosted.returncode == 0, hosted.stderr
    document = json.loads(hosted.stdout)
    assert (document["destination"], document["why"]) == ("mx.hosting.test", "site")
    assert document["settings"]["max_connections"] == 4
    assert "destination  policy:*.example.net  (suffix *.example.net)" in suffix.stdout


def test_config_show_refuses_a_bad_policy_with_exit_code_2(tmp_path: Path) -> None:
    path = tmp_path / "mxfleet.toml"
    path.write_text('[policy.g]\nmx = "*.g.test"\nrate = "often"\n')
    result = run_cli("config", "show", env={"MXFLEET_CONFIG": str(path)})
    assert result.returncode == 2
    assert "policy.g.rate" in result.stderr
    assert "'often' is not a rate" in result.stderr
