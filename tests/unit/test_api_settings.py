"""The HTTP API's settings: off by default, never bearer tokens in clear unless allowed."""

from pathlib import Path

import pytest

from shared.settings import SettingsError, load_settings

BASE = {"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_API_TOKENS_FILE": "/etc/mxfleet/api-tokens"}


def test_off_by_default() -> None:
    settings = load_settings({"MXFLEET_HOSTNAME": "mx.test"})
    assert settings.api_listen is None
    assert settings.api_tokens_file is None
    assert settings.api_allow_plaintext is False
    assert settings.api_max_request_size == 40 * 1024 * 1024


def test_on_with_tls(tmp_path: Path) -> None:
    settings = load_settings(
        {**BASE, "MXFLEET_API_LISTEN": "[::]:8025", "MXFLEET_TLS_CERT": "/c.pem",
         "MXFLEET_TLS_KEY": "/k.pem", "MXFLEET_API_MAX_REQUEST_SIZE": "10MiB"}
    )  # fmt: skip
    assert settings.api_address == ("::", 8025)
    assert settings.api_tokens_file == Path("/etc/mxfleet/api-tokens")
    assert settings.api_max_request_size == 10 * 1024 * 1024


def test_plaintext_only_when_allowed() -> None:
    env = {**BASE, "MXFLEET_API_LISTEN": "127.0.0.1:8025"}
    with pytest.raises(SettingsError, match="api_allow_plaintext"):
        load_settings(env)
    allowed = load_settings({**env, "MXFLEET_API_ALLOW_PLAINTEXT": "true"})
    assert allowed.api_allow_plaintext is True


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"MXFLEET_API_TOKENS_FILE": ""}, "api_tokens_file"),
        ({"MXFLEET_LISTEN": "0.0.0.0:8025"}, "SMTP port or a metrics port"),
        ({"MXFLEET_METRICS_LISTEN": "0.0.0.0:8024", "MXFLEET_INGRESS_PROCESSES": "2"},
         "SMTP port or a metrics port"),
        ({"MXFLEET_API_LISTEN": "8025"}, "host:port"),
        ({"MXFLEET_API_MAX_REQUEST_SIZE": "0"}, "api_max_request_size"),
    ],
)  # fmt: skip
def test_bad_api_settings_name_the_problem(env: dict[str, str], problem: str) -> None:
    values = {**BASE, "MXFLEET_API_LISTEN": "0.0.0.0:8025", "MXFLEET_API_ALLOW_PLAINTEXT": "1"}
    values.update(env)
    if not values["MXFLEET_API_TOKENS_FILE"]:
        del values["MXFLEET_API_TOKENS_FILE"]
    with pytest.raises(SettingsError, match=problem):
        load_settings(values)
