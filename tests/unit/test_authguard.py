"""ingress/authguard.py: what failed AUTH attempts are counted by, and what each one costs."""

import pytest

from ingress.authguard import client_key, failure_delay
from shared.keys import Keys
from shared.settings import load_settings


@pytest.mark.parametrize(
    ("ip", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # a host holds a whole /64
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("not an address", "not an address"),
    ],
)
def test_client_key(ip: str, key: str) -> None:
    assert client_key(ip) == key


def test_the_key_of_a_client() -> None:
    assert Keys().authfail(client_key("2001:db8::1")) == "mxf:authfail:2001:db8::/64"


@pytest.mark.parametrize(
    ("failures", "seconds"), [(0, 0.5), (1, 0.5), (2, 1.0), (5, 2.5), (6, 2.5), (1000, 2.5)]
)
def test_the_delay_grows_with_the_failures_up_to_five_steps(failures: int, seconds: float) -> None:
    settings = load_settings({"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_AUTH_FAILURE_DELAY": "500ms"})
    assert failure_delay(settings, failures) == seconds


def test_defaults() -> None:
    settings = load_settings({"MXFLEET_HOSTNAME": "mx.test"})
    assert settings.max_auth_failures_per_ip == 10
    assert settings.auth_failure_window == 900.0
    assert settings.auth_failure_delay == 1.0
