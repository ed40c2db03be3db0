"""The monitoring files in deploy/ and their runbook keep step with shared.metrics.

Every metric name in a rule or a dashboard query must be one that mxfleet exports (a
misspelt name is no error to Prometheus or Grafana: the query is just empty, and the alert
never fires); every alert has the fields Alertmanager and its receivers read, and a section
in the README that its runbook_url points to.
"""

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401 -- registers every mxfleet metric in REGISTRY

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "mxfleet-rules.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "mxfleet-dashboard.json"
RUNBOOK = ROOT / "README.md"
RUNBOOK_URL = "https://github.com/mxfleet/mxfleet#"

# The names a metric family's samples carry (prometheus_client strips _total from counters).
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])mxfleet_[A-Za-z0-9_:]*")
DURATION = re.compile(r"\d+[smhdwy]")


@cache
def sample_names() -> frozenset[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("mxfleet_"):
            names.update(family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type])
    return frozenset(names)


def unknown_metrics(promql: str) -> set[str]:
    """The mxfleet_ names in a query that no mxfleet metric exports as a sample."""
    return set(METRIC_NAME.findall(promql)) - sample_names()


@cache
def rules() -> tuple[dict[str, Any], ...]:
    document = yaml.safe_load(RULES.read_text())
    assert isinstance(document, dict)
    groups = document["groups"]
    assert groups, "no rule groups"
    found: list[dict[str, Any]] = []
    for group in groups:
        assert group["name"]
        assert group["rules"], f"group {group['name']} has no rules"
        found.extend(group["rules"])
    return tuple(found)


@cache
def dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text())
    assert isinstance(document, dict)
    return document


def panels() -> list[dict[str, Any]]:
    """Every panel but rows, including those folded inside collapsed rows."""
    found: list[dict[str, Any]] = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found.extend(panel.get("panels", []))
        else:
            found.append(panel)
    return found


def variable(name: str) -> dict[str, Any]:
    matches = [v for v in dashboard()["templating"]["list"] if v["name"] == name]
    assert len(matches) == 1, f"dashboard variable {name!r}"
    found: dict[str, Any] = matches[0]
    return found


def variable_query(var: dict[str, Any]) -> str:
    query = var["query"]
    text = query["query"] if isinstance(query, dict) else query
    assert isinstance(text, str)
    return text


def runbook_anchors() -> dict[str, str]:
    """GitHub's anchor for each ``#### Heading`` (an alert) of the runbook, by heading."""
    headings = re.findall(r"^#### (.+?)\s*$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {h: re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings}


def alert_ids() -> list[str]:
    return [rule.get("alert", "?") for rule in rules()]


def test_the_checker_catches_a_misspelt_or_unsuffixed_metric() -> None:
    assert unknown_metrics('rate(mxfleet_delivery_recipients_total{verdict="x"}[5m])') == set()
    assert unknown_metrics("rate(mxfleet_delivery_recipient_total[5m])") == {
        "mxfleet_delivery_recipient_total"
    }
    assert unknown_metrics("rate(mxfleet_ingress_messages[5m])") == {"mxfleet_ingress_messages"}
    assert unknown_metrics("mxfleet_delivery_latency_seconds > 1") == {
        "mxfleet_delivery_latency_seconds"
    }
    assert unknown_metrics("mxfleet_queue_jobs_total") == {"mxfleet_queue_jobs_total"}
    assert unknown_metrics("sum(rate(mxfleet_delivery_latency_seconds_bucket[5m]))") == set()


@pytest.mark.parametrize("rule", rules(), ids=alert_ids())
def test_each_rule_is_a_complete_alert(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Mxfleet[A-Za-z]+", rule["alert"])
    assert rule["expr"].strip()
    assert DURATION.fullmatch(str(rule["for"])), rule["for"]
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()


@pytest.mark.parametrize("rule", rules(), ids=alert_ids())
def test_each_rule_queries_only_metrics_mxfleet_exports(rule: dict[str, Any]) -> None:
    assert METRIC_NAME.search(rule["expr"]), "the expression names no mxfleet metric"
    assert unknown_metrics(rule["expr"]) == set()


def test_alert_names_are_unique_and_the_expected_ones_are_there() -> None:
    names = alert_ids()
    assert len(names) == len(set(names))
    assert {
        "MxfleetOldestJobTooOld",
        "MxfleetHighDeferralRatio",
        "MxfleetBounceRatioSpike",
        "MxfleetIngressTemporaryFailures",
        "MxfleetRedisMemoryHigh",
        "MxfleetNoDispatcherLeader",
        "MxfleetLeasesReclaimed",
    } <= set(names)


def test_every_alert_has_a_runbook_section_and_every_section_an_alert() -> None:
    anchors = runbook_anchors()
    alert_headings = {h for h in anchors if h.startswith("Mxfleet")}
    assert alert_headings == set(alert_ids())
    for rule in rules():
        anchor = rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_URL)
        assert anchor == anchors[rule["alert"]]


def test_the_dashboard_has_its_datasource_and_policy_variables() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 36
    datasource = variable("datasource")
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    policy = variable("policy")
    assert policy["type"] == "query"
    assert policy["datasource"]["uid"] == "${datasource}"
    assert variable_query(policy) == "label_values(mxfleet_delivery_recipients_total, policy)"
    assert unknown_metrics(variable_query(policy)) == set()


def test_every_panel_queries_prometheus_through_the_datasource_variable() -> None:
    found = panels()
    assert found
    top = dashboard()["panels"]
    folded = [inner for panel in top for inner in panel.get("panels", [])]
    ids = [panel["id"] for panel in top + folded]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in found:
        title = panel["title"]
        assert panel["type"] in ("timeseries", "stat"), title
        assert panel["datasource"]["uid"] == "${datasource}", title
        exprs = [target.get("expr", "").strip() for target in panel["targets"]]
        assert exprs, f"{title}: no targets"
        assert all(exprs), f"{title}: a target has no expression"


def test_every_dashboard_query_uses_only_metrics_mxfleet_exports() -> None:
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            assert METRIC_NAME.search(expr), f"{panel['title']}: {expr}"
            assert unknown_metrics(expr) == set(), f"{panel['title']}: {expr}"
