"""workers/shaping.py (pure parts): the backoff signal, the factor, labels, limits."""

import pytest

from shared.policies import PolicySpec, build_policies
from shared.replies import Reply
from tests.unit.test_policies import BASE
from workers import smtp_auth, smtp_wire
from workers.shaping import factor_at, is_backoff_signal, policy_label, shaping_of


@pytest.mark.parametrize(
    ("reply", "signal"),
    [
        (Reply(421, "4.7.0", "Too many messages on this connection, closing"), True),
        (Reply(421, "", "Service not available"), True),
        (Reply(421, "4.7.28", "unusual rate of unsolicited mail"), True),
        (Reply(450, "4.7.1", "Rate limit exceeded, try again later"), True),
        (Reply(451, "4.7.1", "Please slow down"), True),
        (Reply(451, "4.7.1", "Greylisted"), False),  # not about volume
        (Reply(450, "4.2.1", "Mailbox receiving mail at a rate that prevents more"), False),
        (Reply(451, "4.3.0", "Temporary failure"), False),
        (Reply(550, "5.7.1", "Too many"), False),  # permanent: a bounce, not a signal
        (Reply(250, "2.0.0", "OK"), False),
        (smtp_wire.CONNECT_FAILED, False),  # ours: nobody answered
        (smtp_wire.TIMED_OUT, False),
        (smtp_wire.TLS_FAILED, False),
        (smtp_auth.rejected(Reply(535, "5.7.8", "bad")), False),
    ],
)
def test_backoff_signals(reply: Reply, signal: bool) -> None:
    assert is_backoff_signal(reply) is signal


def test_factor_recovers_a_step_per_period_up_to_one() -> None:
    assert factor_at(0.5, 1000, 1000, 10_000) == 0.5
    assert factor_at(0.5, 1000, 10_999, 10_000) == 0.5
    assert factor_at(0.5, 1000, 11_000, 10_000) == pytest.approx(0.6)
    assert factor_at(0.5, 1000, 1000 + 50_000, 10_000) == 1.0
    assert factor_at(0.1, 0, 10**9, 10_000) == 1.0
    assert factor_at(0.3, 0, 0, 0) == 1.0  # not adaptive


def test_policy_labels_are_bounded() -> None:
    assert policy_label("policy:google") == "google"
    assert policy_label("mx1.a.test,mx2.a.test") == "default"
    assert policy_label("a.test") == "default"


def test_shaping_of_a_policy() -> None:
    specs = {"g": PolicySpec.model_validate({"mx": "*.g", "rate": "600/m", "burst": 5})}
    table = build_policies(specs, BASE)
    shaping = shaping_of("policy:g", table.get("g"))
    assert (shaping.rate_limit, shaping.rate_period_ms, shaping.burst) == (600, 60_000, 5)
    assert shaping.recovery_ms == 60_000
    assert shaping.max_connections == 10
    plain = shaping_of("site", table.default)
    assert plain.rate_limit == 0
