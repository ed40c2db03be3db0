"""Per-destination shaping end to end: two dispatchers and two worker processes share one
Redis, and the sinks see the configured limits hold across all of them."""

import smtplib
import statistics
import time
from collections.abc import Callable
from functools import partial

import pytest
import redis

from shared.message import new_queue_id
from shared.policies import Policies, PolicySpec, build_policies
from shared.spool import Envelope
from tests.servers.fleet import Fleet
from tests.servers.httpprobe import sample, try_get
from tests.servers.smtp_sink import Behaviour, SmtpSink
from tests.servers.wait import wait_until
from tests.unit.test_policies import BASE
from workers import shaping
from workers.store import Store

BODY = b"Subject: shaping\r\nFrom: <sender@example.test>\r\n\r\nhello\r\n"


def store_of(fleet: Fleet) -> Store:
    return Store(redis.Redis(port=fleet.redis.port), "mxf:")


def send_bulk(fleet: Fleet, recipients: list[str]) -> None:
    """One message per recipient over one SMTP session (bounded by the list)."""
    with smtplib.SMTP("127.0.0.1", fleet.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        for rcpt in recipients:
            smtp.sendmail("sender@example.test", [rcpt], BODY)


def inject(store: Store, domain: str, count: int) -> None:
    """Queue ``count`` messages straight into the spool (the accept script the ingress
    runs), for backlogs too big to send through SMTP within a test's time."""
    pipe_size = 500
    for start in range(0, count, pipe_size):
        for n in range(start, min(count, start + pipe_size)):
            envelope = Envelope("sender@example.test", {domain: [f"r{n}@{domain}"]})
            store.accept(new_queue_id(), envelope, BODY)


def arrivals(sink: SmtpSink) -> list[float]:
    return sorted(message.received_at for message in sink.messages)


def excess_over_rate(times: list[float], rate: float) -> float:
    """The most messages any window held beyond what the rate allows in it: GCRA with
    burst b keeps this at b or below (plus what arrival jitter adds)."""
    worst = 0.0
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - rate * (times[j] - start))
    return worst


def tickets(store: Store) -> int:
    return int(store.client.hget(store.keys.stats, "tickets") or 0)


def test_rate_holds_within_five_percent_and_never_exceeds_the_burst(fleet: Fleet) -> None:
    fleet.config('[policy.slow]\ndomains = ["rate.test"]\nrate = "20/s"\nburst = 5\n')
    sink = fleet.sink("rate.test", "127.0.0.2")
    fleet.up(dispatchers=2, workers=2)
    store = store_of(fleet)
    shaping.pause(store, "rate.test")  # queue all 600 first: the rate, not the input, paces
    send_bulk(fleet, [f"r{n}@rate.test" for n in range(600)])
    before = tickets(store)
    shaping.resume(store, "rate.test")
    sink.wait_for(600, timeout=90)
    times = arrivals(sink)
    steady = (len(times) - 5) / (times[-1] - times[0])  # the burst goes at once
    excess = excess_over_rate(times, 20.0)
    wait_until(lambda: fleet.spool_empty(), timeout=20)
    churn = (tickets(store) - before) / 600
    print(f"\nrate 20/s burst 5: observed {steady:.2f}/s, worst excess {excess:.2f}, "
          f"tickets per message {churn:.3f}, connections {sink.connections}")  # fmt: skip
    assert 19.0 <= steady <= 21.0  # ±5 %
    assert excess <= 5 + 20 * 0.05  # the burst, plus one interval of arrival jitter
    assert churn <= 1.1


def test_connections_and_messages_per_connection_are_capped(fleet: Fleet) -> None:
    fleet.config(
        '[policy.few]\ndomains = ["conn.test"]\nmax_connections = 3\n'
        "max_messages_per_connection = 10\n"
    )
    sink = fleet.sink("conn.test", "127.0.0.2", Behaviour(delay=0.02))
    fleet.up(dispatchers=2, workers=2, batch_size="5")
    store = store_of(fleet)
    shaping.pause(store, "conn.test")
    send_bulk(fleet, [f"r{n}@conn.test" for n in range(150)])
    shaping.resume(store, "conn.test")
    sink.wait_for(150, timeout=90)
    print(f"\nmax concurrent {sink.max_open_connections}, connections {sink.connections}")
    assert sink.max_open_connections <= 3
    assert max(sink.transactions_per_connection.values()) <= 10
    assert sink.connections >= 15


def test_domains_on_the_same_mx_host_share_one_limit(fleet: Fleet) -> None:
    fleet.config("[policy.default]\nmax_connections = 2\n")
    sink = fleet.sink("a.test", "127.0.0.2", Behaviour(delay=0.02))
    fleet.dns.add_mx("b.test", [(10, "mx1.a.test")])  # b.test is hosted by a.test's MX
    fleet.up(dispatchers=2, workers=2, batch_size="5")
    store = store_of(fleet)
    for domain in ("a.test", "b.test"):
        shaping.pause(store, domain)
    send_bulk(fleet, [f"r{n}@{d}" for n in range(40) for d in ("a.test", "b.test")])
    for domain in ("a.test", "b.test"):
        shaping.resume(store, domain)
    sink.wait_for(80, timeout=90)
    assert sink.max_open_connections <= 2  # one site: two slots, not two per domain
    assert {rcpt.split("@")[1] for m in sink.messages for rcpt in m.rcpt_tos} == {
        "a.test", "b.test"
    }  # fmt: skip


def test_an_mx_pattern_policy_rolls_domains_up_into_one_rate(fleet: Fleet) -> None:
    fleet.config('[policy.hosted]\nmx = "*.hosted.test"\nrate = "10/s"\nburst = 1\n')
    first = fleet.sink("one.test", "127.0.0.2")
    second = fleet.sink("two.test", "127.0.0.3")
    fleet.dns.add_mx("one.test", [(10, "in1.hosted.test")])
    fleet.dns.add_a("in1.hosted.test", "127.0.0.2")
    fleet.dns.add_mx("two.test", [(10, "in2.hosted.test")])
    fleet.dns.add_a("in2.hosted.test", "127.0.0.3")
    fleet.up(dispatchers=2, workers=2)
    store = store_of(fleet)
    shaping.pause(store, "policy:hosted")
    send_bulk(fleet, [f"r{n}@{d}" for n in range(30) for d in ("one.test", "two.test")])
    shaping.resume(store, "policy:hosted")
    wait_until(lambda: len(first.messages) + len(second.messages) == 60, timeout=60)
    times = sorted(arrivals(first) + arrivals(second))
    combined = (len(times) - 1) / (times[-1] - times[0])
    print(f"\ntwo domains under one mx policy at 10/s: {combined:.2f}/s together")
    assert 9.0 <= combined <= 10.5  # one shared limit, not 10/s each
    assert first.messages
    assert second.messages


def test_a_route_policy_relays_through_the_smarthost_with_auth(
    fleet: Fleet, tmp_path: pytest.TempPathFactory
) -> None:
    mx = fleet.sink("partner.test", "127.0.0.2")
    smarthost = SmtpSink("127.0.0.9", 0, Behaviour(starttls=True, auth={"relay": "s3cr:et"}))
    smarthost.start()
    fleet.sinks["127.0.0.9"] = smarthost
    assert smarthost.certificates is not None
    auth = fleet.workdir / "partner.auth"
    auth.write_text("# smarthost credentials\nrelay:s3cr:et\n")
    fleet.config(
        '[policy.partner]\ndomains = ["partner.test"]\n'
        f'route = "127.0.0.9:{smarthost.port}"\nroute_auth_file = "{auth}"\n'
    )
    fleet.extra_env["SSL_CERT_FILE"] = str(smarthost.certificates.ca)  # tls = verify
    fleet.up(dispatchers=2, workers=2)
    fleet.send("sender@example.test", ["a@partner.test", "b@partner.test"], BODY)
    (message,) = smarthost.wait_for(1, timeout=30)
    assert sorted(message.rcpt_tos) == ["a@partner.test", "b@partner.test"]
    assert message.tls
    assert message.auth_user == "relay"
    assert not mx.messages  # the MX was not used
    wait_until(fleet.spool_empty, timeout=20)


def test_a_throttled_backlog_does_not_delay_other_domains(fleet: Fleet) -> None:
    fleet.config('[policy.slow]\ndomains = ["slow.test"]\nrate = "5/s"\nburst = 1\n')
    slow = fleet.sink("slow.test", "127.0.0.2")
    fast = fleet.sink("fast.test", "127.0.0.3")
    fleet.up(dispatchers=2, workers=2)
    store = store_of(fleet)

    def latencies(count: int) -> list[float]:
        found = []
        for n in range(count):
            started = time.monotonic()
            before = len(fast.messages)
            fleet.send("sender@example.test", [f"r{n}@fast.test"], BODY)
            wait_until(partial(_more_than, fast, before), timeout=30)
            found.append(fast.messages[-1].received_at - started)
        return found

    baseline = statistics.median(latencies(15))
    inject(store, "slow.test", 5000)
    wait_until(lambda: len(slow.messages) >= 5, timeout=30)  # the backlog is being worked
    loaded = statistics.median(latencies(15))
    before = tickets(store)
    delivered_before = len(slow.messages)
    time.sleep(4)
    churn = (tickets(store) - before) / max(1, len(slow.messages) - delivered_before)
    print(
        f"\nfast.test median latency {baseline * 1000:.0f} ms alone, {loaded * 1000:.0f} ms "
        f"beside 5,000 throttled; slow tickets/msg {churn:.2f}"
    )
    assert loaded <= max(2 * baseline, baseline + 0.25)
    assert churn <= 1.1
    assert store.client.zcard(store.keys.sched("slow.test")) > 4000  # still throttled


def test_421s_cut_the_rate_and_a_quiet_period_restores_it(fleet: Fleet) -> None:
    fleet.config(
        '[policy.touchy]\ndomains = ["touchy.test"]\nrate = "40/s"\nburst = 4\n'
        'max_connections = 4\nadaptive_recovery = "1s"\n'
    )
    sink = fleet.sink("touchy.test", "127.0.0.2", Behaviour(max_messages_per_connection=5))
    fleet.up(dispatchers=2, workers=2, retry_base="1s", retry_cap="1s")
    store = store_of(fleet)
    table = _policies("1s")
    send_bulk(fleet, [f"r{n}@touchy.test" for n in range(300)])
    lowest = _watch_factor(store, table, until=lambda: len(sink.messages) >= 60, timeout=60)
    assert lowest <= 0.5  # cut at least once by half
    # The leading dispatcher shows the cut in its gauges while the 421s go on.
    wait_until(lambda: (_gauge(fleet, "mxfleet_shaping_effective_rate") or 40) < 40, timeout=10)
    assert (_gauge(fleet, "mxfleet_shaping_factor") or 1) < 1
    sink.behaviour = Behaviour()  # the receiver calms down
    lowest_after = _watch_factor(store, table, until=lambda: not shaping.backoffs(store, table),
                                 timeout=30)  # fmt: skip
    print(f"\nfactor fell to {lowest:.2f}; recovered (from {lowest_after:.2f}) to 1")
    assert any("event=backoff" in role.log.read_text() for role in fleet.roles)
    sink.wait_for(300, timeout=60)
    wait_until(lambda: _gauge(fleet, "mxfleet_shaping_factor") == 1, timeout=10)
    assert _worker_sum(fleet, "mxfleet_shaping_backoffs_total") >= 1
    delivered = "mxfleet_delivery_recipients_total"
    wait_until(lambda: _worker_sum(fleet, delivered, verdict="delivered") == 300, timeout=10)


def _gauge(fleet: Fleet, name: str) -> float | None:
    """A shaping gauge of the policy "touchy" from the leading dispatcher."""
    for role in fleet.roles:
        port = role.metrics_port() if role.name == "dispatcher" else None
        answer = try_get(port, "/metrics") if port else None
        if answer and sample(answer[1], "mxfleet_dispatcher_leader") == 1:
            return sample(answer[1], name, policy="touchy")
    return None


def _worker_sum(fleet: Fleet, name: str, **labels: str) -> float:
    total = 0.0
    for role in fleet.roles:
        port = role.metrics_port() if role.name == "worker" else None
        answer = try_get(port, "/metrics") if port else None
        if answer:
            total += sample(answer[1], name, policy="touchy", **labels) or 0.0
    return total


def _more_than(sink: SmtpSink, count: int) -> bool:
    return len(sink.messages) > count


def _policies(recovery: str) -> Policies:
    return build_policies(
        {"touchy": PolicySpec.model_validate({"domains": ["touchy.test"],
                                              "adaptive_recovery": recovery})}, BASE
    )  # fmt: skip


def _watch_factor(
    store: Store, table: Policies, until: Callable[[], bool], timeout: float
) -> float:
    """The lowest factor of any destination seen until ``until()`` holds."""
    lowest = 1.0
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        for backoff in shaping.backoffs(store, table):
            lowest = min(lowest, backoff.factor)
        time.sleep(0.05)
    return lowest
