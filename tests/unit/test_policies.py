"""shared/policies.py: matching destinations, inheritance, validation."""

from collections.abc import Mapping
from pathlib import Path

import pytest

from shared.policies import Policies, PolicySpec, build_policies
from shared.rates import Rate
from shared.settings import SettingsError, load_settings

BASE = {
    "max_connections": 10,
    "max_messages_per_connection": 1000,
    "max_recipients_per_transaction": 100,
    "retry_base": 300.0,
    "retry_cap": 7200.0,
    "max_age": 432000.0,
    "connect_timeout": 30.0,
    "delivery_tls": "opportunistic",
}


def policies(**tables: Mapping[str, object]) -> Policies:
    specs = {name: PolicySpec.model_validate(table) for name, table in tables.items()}
    return build_policies(specs, BASE)


def test_without_policies_every_site_is_its_own_destination() -> None:
    found = policies().destination("a.test", ["MX2.hosting.test.", "mx1.hosting.test"])
    assert found.name == "mx1.hosting.test,mx2.hosting.test"
    assert found.policy.name == "default"
    assert found.why == "site"
    assert found.policy.max_connections == 10  # from the top-level setting
    assert found.policy.rate is None


def test_two_domains_on_the_same_mx_hosts_share_a_destination() -> None:
    table = policies()
    first = table.destination("a.test", ["mx1.hosting.test", "mx2.hosting.test"])
    second = table.destination("b.test", ["mx2.hosting.test", "mx1.hosting.test"])
    assert first.name == second.name


def test_implicit_mx_or_unknown_mx_makes_the_domain_its_destination() -> None:
    table = policies()
    assert table.destination("solo.test", ["solo.test"]).name == "solo.test"
    assert table.destination("broken.test", None).name == "broken.test"


DOMAIN_TABLES: dict[str, Mapping[str, object]] = {
    "example.com": {"rate": "600/m"},
    "*.example.com": {"max_connections": 2},
    "*.deep.example.com": {"max_connections": 1},
}


def test_exact_then_longest_suffix_then_mx_then_default() -> None:
    table = policies(
        default={"max_connections": 5},
        **DOMAIN_TABLES,
        google={"mx": "*.google.com", "rate": "20/s", "burst": 5},
    )
    assert table.destination("example.com", None).name == "policy:example.com"
    assert table.destination("a.example.com", None).why == "suffix *.example.com"
    assert table.destination("x.deep.example.com", None).policy.max_connections == 1
    gmail = table.destination("gmail.test", ["alt1.aspmx.l.google.com"])
    assert (gmail.name, gmail.why) == ("policy:google", "mx *.google.com")
    assert gmail.policy.rate == Rate(20, 1)
    assert gmail.policy.burst == 5
    assert table.destination("other.test", ["mx.other.test"]).policy.max_connections == 5
    assert not table.needs_mx("a.example.com")
    assert table.needs_mx("other.test")


def test_named_policy_inherits_from_default_then_settings() -> None:
    table = policies(default={"retry_base": "1m", "tls": "required"}, big={"domains": ["b.test"]})
    big = table.get("big")
    assert big.retry_base == 60
    assert big.tls == "required"
    assert big.max_connections == 10
    assert big.sources["retry_base"] == "policy.default"
    assert big.sources["max_connections"] == "setting max_connections"
    assert big.adaptive is True  # built in
    assert table.get("gone") is table.default  # a ticket for a policy no longer configured


def test_route_defaults_to_verified_tls(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text("user:secret\n")
    table = policies(relay={"domains": ["partner.test"], "route": "smtp.partner.test:587",
                            "route_auth_file": str(auth)})  # fmt: skip
    relay = table.get("relay")
    assert relay.route == ("smtp.partner.test", 587)
    assert relay.tls == "verify"
    assert table.destination("partner.test", None).name == "policy:relay"


def test_a_route_on_default_sends_everything_there() -> None:
    table = policies(default={"route": "[::1]:2525", "tls": "required"})
    assert not table.needs_mx("any.test")
    assert table.destination("any.test", None).name == "policy:default"
    assert table.default.route == ("::1", 2525)


@pytest.mark.parametrize(
    ("tables", "error"),
    [
        ({"nomatch": {"rate": "1/s"}}, "policy.nomatch: matches nothing"),
        ({"Bad Name": {"mx": "x"}}, "a name is a domain"),
        ({"x": {"domains": ["not a domain"]}}, "is not a domain"),
        ({"default": {"mx": "*.x"}}, "policy.default: matches every destination"),
        ({"x": {"domains": ["a.test"], "burst": 3}}, "burst needs a rate"),
        ({"x": {"domains": ["a.test"], "retry_base": "1h", "retry_cap": "1m"}}, "retry_cap"),
        ({"x": {"domains": ["a.test"], "route": "nohost"}}, "is not host:port"),
        ({"x": {"domains": ["a.test"], "route": "h:25", "tls": "off"}}, "only used over TLS"),
        ({"x": {"domains": ["a.test"], "route_auth_file": "/etc/hosts"}}, "needs a route"),
        ({"x": {"domains": ["a.test"], "route": "h:25", "route_auth_file": "/nonexistent"}},
         "not a readable file"),
        ({"x": {"domains": ["a.test"]}, "a.test": {}}, "a.test is already in policy.x"),
    ],
)  # fmt: skip
def test_bad_policies_are_refused_naming_the_policy(
    tables: dict[str, dict[str, object]], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        policies(**tables)


def test_settings_load_policies_from_toml_and_name_bad_fields(tmp_path: Path) -> None:
    path = tmp_path / "mxfleet.toml"
    path.write_text('[policy.default]\nmax_connections = 3\n[policy.g]\nmx = "*.g.test"\n')
    settings = load_settings({"MXFLEET_CONFIG": str(path), "MXFLEET_HOSTNAME": "mx.test"})
    assert settings.policies.default.max_connections == 3
    assert settings.policies.get("g").max_connections == 3
    path.write_text('[policy.g]\nmx = "*.g.test"\nrate = "fast"\nmax_connections = 0\n')
    with pytest.raises(SettingsError) as info:
        load_settings({"MXFLEET_CONFIG": str(path), "MXFLEET_HOSTNAME": "mx.test"})
    assert "setting 'policy.g.rate' (env MXFLEET_POLICY__G__RATE)" in str(info.value)
    assert "policy.g.max_connections" in str(info.value)
    path.write_text('[policy.g]\nrate = "5/s"\n')
    with pytest.raises(SettingsError, match=r"policy\.g: matches nothing"):
        load_settings({"MXFLEET_CONFIG": str(path), "MXFLEET_HOSTNAME": "mx.test"})


def test_environment_sets_a_policy_field() -> None:
    settings = load_settings(
        {"MXFLEET_HOSTNAME": "mx.test", "MXFLEET_POLICY__DEFAULT__RATE": "5/s"}
    )
    assert settings.policies.default.rate == Rate(5, 1)
