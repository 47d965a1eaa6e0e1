"""The observability pack in ``deploy/``: well-formed, and only names the services export.

The metric names are read from the ``/metrics`` of the running processes
(``python -m service gateway`` and ``python -m service metrics``, the archiver and
the reconciler), so a renamed metric fails here, not in production.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.config.env import Env
from service.consumers.metrics.exporter import KIND_LABELS
from service.kafka.topics import ensure_topics, project_topics
from tests.harness.environments import gateway_config, gateway_env
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.kafka_records import unique
from tests.harness.loopback import free_port
from tests.harness.paths import REPO
from tests.harness.processes import ServiceProcess

DASHBOARD = REPO / "deploy" / "grafana" / "music-callbacks-dashboard.json"
RULES = REPO / "deploy" / "prometheus" / "alerts.rules.yml"
PROMETHEUS_RULE = REPO / "deploy" / "prometheus" / "prometheusrule.yaml"

EXPECTED_ALERTS = {
    "MusicGatewayHigh5xxRatio", "MusicGatewayPublishLatencyHigh", "MusicGatewayRejectedRateHigh",
    "MusicNoCallbacks", "MusicArchiverConsumerLagHigh", "MusicMetricsConsumerLagHigh",
    "MusicArchiveDeadLetterRateHigh", "MusicGatewayDown", "MusicArchiverDown",
    "MusicMetricsConsumerDown", "MusicTargetDown", "MusicGatewaySpoolNotDraining",
    "MusicGatewaySpoolFilling", "MusicTasksRecoveredByPolling",
    "MusicReconcilerProviderRefusing",
}
# What the dashboard must show (issue 4), as metrics its panels must query.
DASHBOARD_COVERAGE = {
    "ingress rate and status codes": "gateway_requests_total",
    "publish latency": "gateway_publish_duration_seconds_bucket",
    "rejections": "gateway_rejections_total",
    "consumer lag": "metrics_consumer_lag",
    "archiver lag": "archiver_consumer_lag",
    "archive throughput": "music_archived_objects_total",
    "archive failures": "music_archive_dead_letters_total",
    "task completion times": "music_task_phase_seconds_bucket",
}
PREFIXES = ("gateway_", "music_", "metrics_", "archiver_", "reconciler_")
# Checked against their own process by the tests below, not against the gateway's.
OWN_PROCESS_PREFIXES = ("archiver_", "reconciler_")
# Written by Prometheus itself for every scrape, not exported by a service.
SCRAPE_METRICS = frozenset({"up"})
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
PROMQL_WORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on",
                          "ignoring", "group_left", "group_right", "inf", "nan", "Inf", "NaN"})
SUFFIXES = {"counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"), "gauge": ("",), "info": ("_info",)}


# ---- reading the pack ---------------------------------------------------------------------------

def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word in PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation call
        names.add(word)
    return names


def rules_file() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return document


def prometheus_rule() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))
    return document


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


def dashboard_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_exprs() -> list[str]:
    board = dashboard()
    exprs = [target["expr"] for panel in dashboard_panels(board["panels"])
             for target in panel.get("targets", [])]
    exprs += [variable["query"] if isinstance(variable["query"], str)
              else variable["query"].get("query", "")
              for variable in board.get("templating", {}).get("list", [])
              if variable.get("type") == "query"]
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in rules_file()["groups"] for rule in group["rules"]]


def referenced_names() -> dict[str, set[str]]:
    """Metric name → where it is referenced."""
    found: dict[str, set[str]] = {}
    for where, exprs in (("dashboard", dashboard_exprs()), ("rules", rule_exprs())):
        for expr in exprs:
            for name in metric_names(expr):
                found.setdefault(name, set()).add(where)
    return found


def recorded_names() -> set[str]:
    return {rule["record"] for group in rules_file()["groups"] for rule in group["rules"]
            if "record" in rule}


# ---- reading the services -----------------------------------------------------------------------

def exported_names(admin_port: int) -> set[str]:
    """Every sample name a process can export, from the families on its ``/metrics``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def prepared_env(broker: KafkaBroker) -> dict[str, str]:
    env = gateway_env(broker.bootstrap_servers, HTTP_HOST="127.0.0.1", ADMIN_HOST="127.0.0.1")
    asyncio.run(ensure_topics(gateway_config(env).kafka, project_topics(Env(env))))
    return env


@pytest.fixture(scope="module")
def services_env(kafka_broker: KafkaBroker) -> dict[str, str]:
    return prepared_env(kafka_broker)


@pytest.fixture(scope="module")
def exported(services_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
             ) -> set[str]:
    """The names exported by a running gateway and a running metrics consumer."""
    logs = tmp_path_factory.mktemp("pack")
    gateway_admin, metrics_admin = free_port(), free_port()
    gateway = ServiceProcess(["gateway"], {**services_env, "HTTP_PORT": str(free_port()),
                                           "ADMIN_PORT": str(gateway_admin)}, logs)
    metrics = ServiceProcess(["metrics"], {**services_env, "ADMIN_PORT": str(metrics_admin),
                                           "METRICS_GROUP_ID": unique("pack")}, logs)
    with gateway, metrics:
        gateway.wait_ready(gateway_admin)
        metrics.wait_ready(metrics_admin)
        return exported_names(gateway_admin) | exported_names(metrics_admin)


# ---- tests --------------------------------------------------------------------------------------

def test_metric_names_are_read_out_of_promql() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, topic) (rate(a_seconds_bucket{x="y(z)"}[5m])))'
            ' / on(job) group_left sum(b_total offset 1h) > 1e-9 or vector(0) == bool c_gauge')
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_gauge"}
    assert metric_names("sum(rate(x_total[$__rate_interval])) by (status)") == {"x_total"}


def test_rules_file_is_well_formed() -> None:
    document = rules_file()
    assert set(document) == {"groups"}
    group_names = [group["name"] for group in document["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts: list[str] = []
    for group in document["groups"]:
        assert set(group) <= {"name", "rules", "interval", "limit"}
        assert group["rules"], group["name"]
        for rule in group["rules"]:
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            for opening, closing in ("()", "[]", "{}"):
                assert rule["expr"].count(opening) == rule["expr"].count(closing), rule
            if "record" in rule:
                assert set(rule) <= {"record", "expr", "labels"}
                continue
            assert set(rule) <= {"alert", "expr", "for", "keep_firing_for", "labels",
                                 "annotations"}
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
            assert DURATION.match(rule["for"]), rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}
            assert {"summary", "description"} <= set(rule["annotations"])
            for text in rule["annotations"].values():
                assert text.count("{{") == text.count("}}"), rule["alert"]
            alerts.append(rule["alert"])
    assert len(alerts) == len(set(alerts))
    assert set(alerts) == EXPECTED_ALERTS


def test_the_prometheus_rule_carries_the_same_groups() -> None:
    resource = prometheus_rule()
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", resource["metadata"]["name"])
    assert resource["spec"] == rules_file()


def test_dashboard_is_well_formed_and_covers_the_pipeline() -> None:
    board = dashboard()
    assert board["uid"]
    assert board["title"]
    assert isinstance(board["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    panels = list(dashboard_panels(board["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']!r} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids, panel["title"]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
    used = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    missing = {topic: name for topic, name in DASHBOARD_COVERAGE.items() if name not in used}
    assert not missing


def test_nothing_references_a_metric_outside_the_services() -> None:
    strays = {name for name in referenced_names()
              if not name.startswith(PREFIXES) and name not in SCRAPE_METRICS}
    assert not strays, f"metrics from no service of ours: {sorted(strays)}"


@pytest.mark.kafka
def test_dashboard_and_rules_reference_only_metrics_the_gateway_and_metrics_consumer_export(
    exported: set[str],
) -> None:
    known = exported | recorded_names()
    ours = {name: where for name, where in referenced_names().items()
            if not name.startswith(OWN_PROCESS_PREFIXES) and name not in SCRAPE_METRICS}
    unknown = {name: sorted(where) for name, where in ours.items() if name not in known}
    assert not unknown, f"not exported by the running services: {unknown}"
    assert len(ours) > 20  # the check really saw the pack


@pytest.mark.kafka
def test_archiver_metric_names_in_the_pack_are_exported_by_the_archiver(
    services_env: dict[str, str], tmp_path: Path,
) -> None:
    if importlib.util.find_spec("service.consumers.archiver.main") is None:
        pytest.skip("service.consumers.archiver.main does not exist yet: the archiver_* names "
                    "of the dashboard and rules are not checked")
    from service.__main__ import COMMANDS

    if "archiver" not in COMMANDS:
        pytest.skip("`python -m service archiver` is not wired yet: the archiver_* names of "
                    "the dashboard and rules are not checked")
    admin_port = free_port()
    env = {**services_env, "ADMIN_PORT": str(admin_port), "ARCHIVER_GROUP_ID": unique("pack"),
           "ARCHIVE_STORAGE_URL": (tmp_path / "archive").as_uri()}
    with ServiceProcess(["archiver"], env, tmp_path) as archiver:
        archiver.wait_ready(admin_port)
        exported = exported_names(admin_port)
    wanted = {name: where for name, where in referenced_names().items()
              if name.startswith("archiver_")}
    unknown = {name: sorted(where) for name, where in wanted.items() if name not in exported}
    assert not unknown, f"not exported by the running archiver: {unknown}"


def test_the_pack_selects_by_kind_and_covers_every_callback_route() -> None:
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}
    assert variables["kind"]["query"].split(",") == list(KIND_LABELS)
    exprs = dashboard_exprs() + rule_exprs()
    assert not [expr for expr in exprs if 'route="' in expr]  # no single route pinned
    assert all('route=~"/callbacks/.*"' in expr for expr in exprs if "route" in expr)
    per_task = [expr for expr in dashboard_exprs()
                if re.search(r"music_(callbacks|tasks|task_phase|archived|archive_dead|tracks)",
                             expr)]
    assert per_task
    assert all('kind=~"$kind"' in expr for expr in per_task)
    [dead_letters] = [rule["expr"] for group in rules_file()["groups"] for rule in group["rules"]
                      if rule.get("alert") == "MusicArchiveDeadLetterRateHigh"]
    assert "sum by (kind)" in dead_letters


@pytest.mark.kafka
def test_reconciler_metric_names_in_the_pack_are_exported_by_the_reconciler(
    services_env: dict[str, str], tmp_path: Path,
) -> None:
    admin_port = free_port()
    env = {**services_env, "ADMIN_PORT": str(admin_port),
           # no task is submitted: nothing is ever sent to this loopback port
           "PROVIDER_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
           "PROVIDER_API_KEY": "pack-test-key-not-a-secret"}
    with ServiceProcess(["reconciler"], env, tmp_path) as reconciler:
        reconciler.wait_ready(admin_port)
        exported = exported_names(admin_port)
    wanted = {name: where for name, where in referenced_names().items()
              if name.startswith("reconciler_")}
    assert wanted  # the pack does watch the reconciler
    unknown = {name: sorted(where) for name, where in wanted.items() if name not in exported}
    assert not unknown, f"not exported by the running reconciler: {unknown}"
