"""``deploy/compose.yaml`` agrees with the command line, the variables and the monitoring pack.

There is no container engine here, so the file is parsed and cross-checked: every
service built from the Dockerfile runs a real command with variables the code reads, the
admin ports are the ones Prometheus scrapes under the job names the alerts use, mounted
files exist, dependencies exist, and the Kafka and Prometheus versions are the ones the
suite runs (the harness broker, promtool).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.__main__ import build_parser
from tests.harness.deployment import DEPLOY, load_yaml, tool, variables_read_by_the_code
from tests.harness.kafka_broker import KAFKA_VERSION
from tests.harness.paths import REPO

COMPOSE = DEPLOY / "compose.yaml"
ADMIN_PORTS = {"gateway": 8081, "archiver": 8082, "metrics": 8083}
# Behind a profile (it needs the provider's API key): not started, not scraped by default.
OPTIONAL_ADMIN_PORTS = {"reconciler": 8084}
REQUIRED = {"kafka", "minio", "gateway", "archiver", "metrics", "prometheus", "grafana"}


def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def ours() -> dict[str, dict[str, Any]]:
    """Services that run the project's image."""
    return {name: service for name, service in services().items()
            if service.get("build", {}).get("dockerfile") == "deploy/Dockerfile"}


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts (relative to deploy/)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("."):
            found[target] = (DEPLOY / source).resolve()
    return found


def test_the_stack_has_every_component() -> None:
    assert set(services()) >= REQUIRED
    assert set(ours()) == {"topics", "gateway", "archiver", "metrics", "reconciler"}
    for name, service in ours().items():
        assert ("profiles" in service) == (name in OPTIONAL_ADMIN_PORTS), name


def test_kafka_runs_kraft_at_the_version_the_suite_tests() -> None:
    kafka = services()["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "zookeeper" not in str(kafka).lower()
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].removeprefix("PLAINTEXT://")
    for service in ours().values():
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == advertised


def test_prometheus_is_pinned_to_a_release() -> None:
    # The rules are checked with Debian's promtool (2.x); they use nothing 3.x changed.
    image = services()["prometheus"]["image"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", image), image


@pytest.mark.parametrize("name", ["topics", "gateway", "archiver", "metrics", "reconciler"])
def test_every_process_runs_a_real_command_with_known_variables(name: str) -> None:
    service = ours()[name]
    build_parser().parse_args(service["command"])  # exits on an unknown command
    variables = set(service["environment"])
    unknown = variables - variables_read_by_the_code()
    assert not unknown, f"{name} sets variables no code reads: {unknown}"
    if name in ADMIN_PORTS | OPTIONAL_ADMIN_PORTS:
        assert service["environment"]["ADMIN_PORT"] == str(
            (ADMIN_PORTS | OPTIONAL_ADMIN_PORTS)[name])
        assert "ADMIN_PORT" in " ".join(service["healthcheck"]["test"])
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]
    assert service["user"].split(":")[0] != "0"
    assert "no-new-privileges:true" in service["security_opt"]


def test_prometheus_scrapes_each_process_under_the_job_the_alerts_use(tmp_path: Path) -> None:
    prometheus = services()["prometheus"]
    files = mounts(prometheus)
    config = load_yaml(files["/etc/prometheus/prometheus.yml"])
    targets = {job["job_name"]: target for job in config["scrape_configs"]
               for static in job["static_configs"] for target in static["targets"]}
    assert targets == {f"music-{name}": f"{name}:{port}" for name, port in ADMIN_PORTS.items()}
    rules_text = "\n".join(path.read_text() for path in files.values()
                           if path.name == "alerts.rules.yml")
    for job in targets:
        assert f'up{{job="{job}"}}' in rules_text
    # promtool on the config, with container paths mapped back to the files mounted there
    config["rule_files"] = [str(files[path]) for path in config["rule_files"]]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run([tool("promtool"), "check", "config", tmp_path / "prometheus.yml"],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisions_the_datasource_and_the_dashboard() -> None:
    grafana = services()["grafana"]
    files = mounts(grafana)
    provisioning = files["/etc/grafana/provisioning"]
    (provider,) = load_yaml(provisioning / "dashboards" / "music-callbacks.yaml")["providers"]
    dashboards = files[provider["options"]["path"]]
    assert (dashboards / "music-callbacks-dashboard.json").is_file()
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"] is True
    assert datasource["url"] == "http://prometheus:9090"


def test_mounts_dependencies_ports_and_secrets_are_sound() -> None:
    volumes = set(compose()["volumes"])
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in volumes, f"{name}: {source}"
        depends = service.get("depends_on", [])
        for dependency in depends:
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            if isinstance(depends, dict):
                assert depends[dependency]["condition"] in {
                    "service_started", "service_healthy", "service_completed_successfully"}
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    # secrets come from the operator's environment, never from this file
    # (required with ":?", or, behind a profile, left empty for the process to refuse)
    secret_like = re.compile(r"^(.*(PASSWORD|SECRET_ACCESS_KEY|TOKENS|API_KEY))$")
    for name, service in services().items():
        required = r"\$\{[A-Z_]+:-\}" if "profiles" in service else r"\$\{[A-Z_]+:\?[^}]+\}"
        for variable, value in (service.get("environment") or {}).items():
            if secret_like.match(variable):
                assert re.fullmatch(required, str(value)), (name, variable)


def test_the_documented_commands_name_this_file() -> None:
    header = COMPOSE.read_text().split("name:", 1)[0]
    assert "docker compose -f deploy/compose.yaml up --build" in header
    example = "tests/examples/provider.track-callback.v1/documented-complete.json"
    assert example in header
    assert (REPO / example).is_file()
