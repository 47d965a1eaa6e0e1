"""The alerting rules pass ``promtool check rules`` and promtool unit tests cover every alert."""

from __future__ import annotations

import subprocess

from tests.harness.deployment import DEPLOY, load_yaml, tool

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "alerts.rules.yml"
RULE_TESTS = PROMETHEUS / "alerts.tests.yml"
PROCESS_JOBS = {"music-gateway", "music-archiver", "music-metrics"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], cwd=PROMETHEUS, capture_output=True,
                          text=True, check=False, timeout=120)


def alert_names() -> set[str]:
    return {rule["alert"] for group in load_yaml(RULES)["groups"] for rule in group["rules"]
            if "alert" in rule}


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_seen_firing_and_silent_in_the_unit_tests() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alert_names() - firing == set(), "alerts never shown to fire"
    assert alert_names() - silent == set(), "alerts never shown to stay silent"


def test_every_process_has_an_alert_for_being_down() -> None:
    """A dead process exports no lag and no error ratio: only ``up`` can tell."""
    exprs = [rule["expr"] for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    for job in PROCESS_JOBS:
        assert any(f'absent(up{{job="{job}"}} == 1)' in expr for expr in exprs), job
    assert any(expr.startswith("up{") and "== 0" in expr for expr in exprs)
