"""The Kubernetes manifests agree with the processes: commands, admin ports, probe paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from service.__main__ import COMMANDS

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
DEFAULT_ADMIN_PORTS = {"gateway": 8081, "archiver": 8082, "metrics": 8083}


def deployments() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text())
                  if doc and doc.get("kind") == "Deployment"]
    return found


def test_every_process_has_a_deployment() -> None:
    commands = {d["spec"]["template"]["spec"]["containers"][0]["args"][0] for d in deployments()}
    assert commands == set(DEFAULT_ADMIN_PORTS)
    assert commands <= set(COMMANDS)


@pytest.mark.parametrize("deployment", deployments(), ids=lambda d: d["metadata"]["name"])
def test_probes_use_the_admin_port_and_paths(deployment: dict[str, Any]) -> None:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {item["name"]: item.get("value") for item in container["env"]}
    admin_port = int(env["ADMIN_PORT"])
    assert admin_port == DEFAULT_ADMIN_PORTS[container["args"][0]]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["admin"] == admin_port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert not any(key in env for key in ("KAFKA_SASL_PASSWORD", "CALLBACK_TOKENS"))
