"""shared/redis_url.py: the spool's URL, sentinel:// included."""

import pytest

from shared.redis_url import SentinelTarget, celery_broker, check_url, parse_sentinel
from shared.settings import SettingsError, load_settings


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = parse_sentinel("sentinel://:s%40cret@10.0.0.1:26379,[::1]:26380/mxf/2")
    assert target == SentinelTarget((("10.0.0.1", 26379), ("::1", 26380)), "mxf", 2, "s@cret")
    assert parse_sentinel("sentinel://h:26379/mxf") == SentinelTarget((("h", 26379),), "mxf")


@pytest.mark.parametrize(
    "url",
    ["sentinel://h/mxf", "sentinel://h:26379", "sentinel://h:26379/", "sentinel://h:x/mxf",
     "sentinel://h:26379/mxf/zero"],
)  # fmt: skip
def test_bad_sentinel_urls_say_the_form(url: str) -> None:
    with pytest.raises(ValueError, match=r"sentinel://\[:password@\]host:port"):
        parse_sentinel(url)


def test_celery_gets_kombus_form() -> None:
    broker, options = celery_broker("sentinel://:pw@a:26379,b:26379/mxf/1")
    assert broker == "sentinel://:pw@a:26379/1;sentinel://:pw@b:26379/1"
    assert options == {"master_name": "mxf"}
    assert celery_broker("redis://r:6379/0") == ("redis://r:6379/0", {})


def test_settings_refuse_an_unknown_scheme() -> None:
    assert check_url("unix:///run/redis.sock") == "unix:///run/redis.sock"
    with pytest.raises(SettingsError, match="MXFLEET_REDIS_URL"):
        load_settings({"MXFLEET_REDIS_URL": "http://redis:6379", "MXFLEET_HOSTNAME": "mx.test"})
