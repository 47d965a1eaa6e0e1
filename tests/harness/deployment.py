"""The deployment tools (fetched by ``make fetch-deploy-tools``) and what the manifests say."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness.paths import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "prod")
TOOLS = REPO / ".cache" / "tools" / "bin"
# The Kubernetes version the rendered objects are validated against (kubernetes-validate).
KUBERNETES_VERSION = "1.34"
PROCESSES = ("gateway", "archiver", "metrics", "reconciler")

Resource = dict[str, Any]
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


def tool(name: str) -> Path:
    path = TOOLS / name
    assert path.exists(), f"{path} is missing: run `make fetch-deploy-tools` (make test does)"
    return path


@functools.cache
def _render(overlay: str) -> str:
    result = subprocess.run([tool("kustomize"), "build", KUBERNETES / "overlays" / overlay],
                            capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered(overlay: str) -> list[Resource]:
    """Every object of ``kustomize build overlays/<overlay>`` (a fresh copy per call)."""
    return [doc for doc in yaml.safe_load_all(_render(overlay)) if doc]


def of_kind(resources: list[Resource], kind: str) -> list[Resource]:
    return [resource for resource in resources if resource["kind"] == kind]


def named(resources: list[Resource], kind: str, name: str) -> Resource:
    found = [r for r in of_kind(resources, kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if r["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob")]


def pod_spec(workload: Resource) -> Resource:
    spec: Resource = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template: Resource = spec["template"]["spec"]
    return template


def process_of(workload: Resource) -> str:
    arg: str = pod_spec(workload)["containers"][0]["args"][0]
    return arg


def config_data(resources: list[Resource]) -> dict[str, str]:
    data: dict[str, str] = named(resources, "ConfigMap", "music-callbacks")["data"]
    return data


def selects(selector: Resource, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


@functools.cache
def variables_read_by_the_code() -> frozenset[str]:
    """Environment variable names the service can read, from its source.

    Every ``UPPER_SNAKE`` string literal of ``service/`` (the names given to ``Env`` and
    ``ConfigError``), plus ``<NAME>_FILE`` for names passed to a secret reader.
    """
    names: set[str] = set()
    secrets: set[str] = set()
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and _ENV_NAME.fullmatch(node.value):
                names.add(node.value)
            if isinstance(node, ast.Call) and "secret" in ast.unparse(node.func).lower():
                secrets |= {arg.value for arg in node.args
                            if isinstance(arg, ast.Constant) and isinstance(arg.value, str)}
    return frozenset(names | {f"{name}_FILE" for name in secrets & names})


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# ---- custom resources ---------------------------------------------------------------------------
# kubernetes-validate knows only built-in kinds. The custom resources are checked against
# these schemas: the subset of the Strimzi (kafka.strimzi.io/v1beta2) and Prometheus
# Operator (monitoring.coreos.com/v1) CRDs that the manifests use, with the CRDs' types
# and enums, and no unknown field allowed (a typo fails instead of being ignored).

def _strict(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


_STRING = {"type": "string", "minLength": 1}
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
                   "namespace": _STRING, "labels": _STRING_MAP, "annotations": _STRING_MAP},
}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?"
             r"(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_ACL_OPERATIONS = ["Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
                   "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return _strict({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                    "metadata": _METADATA, "spec": spec},
                   ("apiVersion", "kind", "metadata", "spec"))


CUSTOM_RESOURCE_SCHEMAS: dict[str, dict[str, Any]] = {
    "KafkaTopic": _resource("kafka.strimzi.io/v1beta2", "KafkaTopic", _strict({
        "topicName": _STRING,
        "partitions": {"type": "integer", "minimum": 1},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 32767},
        "config": {"type": "object", "additionalProperties": {"type": ["string", "integer"]}},
    }, ("partitions", "replicas"))),
    "KafkaUser": _resource("kafka.strimzi.io/v1beta2", "KafkaUser", _strict({
        "authentication": _strict(
            {"type": {"enum": ["tls", "tls-external", "scram-sha-512"]}}, ("type",)),
        "authorization": _strict({
            "type": {"enum": ["simple"]},
            "acls": {"type": "array", "minItems": 1, "items": _strict({
                "type": {"enum": ["allow", "deny"]},
                "host": _STRING,
                "operations": {"type": "array", "minItems": 1,
                               "items": {"enum": _ACL_OPERATIONS}},
                "resource": {"oneOf": [
                    _strict({"type": {"enum": ["topic", "group", "transactionalId"]},
                             "name": _STRING, "patternType": {"enum": ["literal", "prefix"]}},
                            ("type", "name")),
                    _strict({"type": {"const": "cluster"}}, ("type",)),
                ]},
            }, ("resource", "operations"))},
        }, ("type", "acls")),
    })),
    "ServiceMonitor": _resource("monitoring.coreos.com/v1", "ServiceMonitor", _strict({
        "jobLabel": _STRING,
        "selector": _strict({"matchLabels": _STRING_MAP}),
        "namespaceSelector": {"type": "object"},
        "endpoints": {"type": "array", "minItems": 1, "items": _strict({
            "port": _STRING, "path": _STRING, "scheme": {"enum": ["http", "https"]},
            "interval": _DURATION, "scrapeTimeout": _DURATION,
        }, ("port",))},
    }, ("selector", "endpoints"))),
    "PrometheusRule": _resource("monitoring.coreos.com/v1", "PrometheusRule", _strict({
        "groups": {"type": "array", "items": _strict({
            "name": _STRING, "interval": _DURATION,
            "rules": {"type": "array", "items": _strict({
                "alert": _STRING, "record": _STRING, "expr": _STRING, "for": _DURATION,
                "keep_firing_for": _DURATION, "labels": _STRING_MAP, "annotations": _STRING_MAP,
            }, ("expr",))},
        }, ("name", "rules"))},
    }, ("groups",))),
}
