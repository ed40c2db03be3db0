"""Per-destination shaping on the workers' side: limits as the Lua scripts take them, the
adaptive backoff signal, and the operator's pause switch.

The enforcement itself is in Redis (``shared/lua/lib/shaping.lua``): GCRA for rates and
lease sets for connections, both per destination (:mod:`shared.policies`), so they hold
however many workers and dispatchers run.

Adaptive backoff (PowerMTA's "backoff mode"): a 421 from the remote server, or a 4.7.x
deferral that speaks of rate or volume, halves the destination's factor (at most once a
second), which scales its connections, rate and burst; each ``adaptive_recovery`` period
without a cut gives back 0.1, up to the configured policy. Replies this side made up (no
answer, TLS failed...) are not the remote's judgement and never count.
"""

import re
from dataclasses import dataclass

from shared.policies import DEFAULT, DESTINATION_PREFIX, Policies, Policy
from shared.replies import Reply
from shared.spool import Shaping
from workers import smtp_auth, smtp_wire
from workers.store import Store, text

# Mirrors shared/lua/lib/shaping.lua.
ADAPT_STEP = 0.1

_LOCAL = frozenset(  # replies this side makes (some with details appended to the text)
    value
    for module in (smtp_wire, smtp_auth)
    for value in vars(module).values()
    if isinstance(value, Reply)
)
_RATE_WORDS = re.compile(
    r"rate|too many|too fast|throttl|limit|exceed|volume|slow down|try (again )?later",
    re.IGNORECASE,
)


def shaping_of(destination: str, policy: Policy) -> Shaping:
    """The limits of ``destination`` under ``policy``, as the scripts take them."""
    rate = policy.rate
    return Shaping(
        destination=destination,
        max_connections=policy.max_connections,
        rate_limit=rate.limit if rate else 0.0,
        rate_period_ms=round(rate.period * 1000) if rate else 0,
        burst=policy.burst,
        recovery_ms=round(policy.adaptive_recovery * 1000) if policy.adaptive else 0,
    )


def is_backoff_signal(reply: Reply) -> bool:
    """Whether the remote server asked us to slow down (421, or 4.7.x about rate/volume)."""
    if not reply.is_transient or any(reply.text.startswith(own.text) for own in _LOCAL):
        return False
    if reply.code == 421:
        return True
    return reply.status.startswith("4.7.") and bool(_RATE_WORDS.search(reply.text))


def policy_label(destination: str) -> str:
    """The bounded metric label of a destination: its policy's name, else ``default``."""
    return (
        destination.removeprefix(DESTINATION_PREFIX)
        if destination.startswith(DESTINATION_PREFIX)
        else DEFAULT
    )


def factor_at(factor: float, at_ms: int, now_ms: int, recovery_ms: int) -> float:
    """The adaptive factor now, given the one set by the last cut at ``at_ms``."""
    if recovery_ms <= 0:
        return 1.0
    recovered = factor + ADAPT_STEP * ((now_ms - at_ms) // recovery_ms)
    return 1.0 if recovered >= 1 - 1e-9 else recovered


@dataclass(frozen=True, slots=True)
class Backoff:
    """A destination under adaptive backoff."""

    destination: str
    policy: Policy
    factor: float

    @property
    def connections(self) -> int:
        return max(1, int(self.policy.max_connections * self.factor + 1e-9))

    @property
    def rate(self) -> float:
        """Messages per second allowed now (0: the policy has no rate)."""
        return self.policy.rate.per_second * self.factor if self.policy.rate else 0.0


def backoffs(store: Store, policies: Policies) -> list[Backoff]:
    """Destinations whose factor is below 1 now (forgetting those fully recovered)."""
    client, keys = store.client, store.keys
    now_ms = store.now_ms()
    found = []
    for raw in client.zrange(keys.adapted, 0, -1):
        destination = text(raw)
        state = client.hmget(keys.adapt(destination), "f", "at")
        policy = policies.get(policy_label(destination))
        factor = 1.0
        if state[0] is not None and state[1] is not None:
            recovery = round(policy.adaptive_recovery * 1000)
            factor = factor_at(float(state[0]), int(state[1]), now_ms, recovery)
        if factor >= 1.0:
            client.zrem(keys.adapted, destination)
            continue
        found.append(Backoff(destination, policy, factor))
    return found


def pause(store: Store, name: str) -> bool:
    """Stop delivering to a domain or a destination (``policy:NAME``, a site); tickets at
    work stop at their next claim. True when it was not paused yet."""
    return bool(store.client.sadd(store.keys.paused, name))


def resume(store: Store, name: str) -> bool:
    """Deliver again; a domain is due at once, the domains of a destination within the
    dispatcher's hold time (5 s). True when it was paused."""
    keys = store.keys
    removed = bool(store.client.srem(keys.paused, name))
    if removed and store.client.exists(*keys.schedules(name)):
        store.client.zadd(keys.due, {name: store.now_ms()}, lt=True)
    return removed


def paused(store: Store) -> list[str]:
    return sorted(text(name) for name in store.client.smembers(store.keys.paused))
