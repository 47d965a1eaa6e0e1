"""The Kubernetes overlays, rendered by kustomize, are valid and deployable as promised.

Every object of every overlay is validated (built-in kinds with kubernetes-validate for a
pinned Kubernetes version, custom resources against the CRDs' schemas); the pods meet Pod
Security "restricted"; probes, ports and commands agree with the processes; topics, user,
bootstrap address and secrets agree with Strimzi's conventions and the configuration.
"""

from __future__ import annotations

import inspect
import ipaddress
from typing import Any

import jsonschema_rs
import kubernetes_validate
import pytest

from service.__main__ import COMMANDS
from service.config.env import Env
from service.config.reconciler import read_base_url
from service.config.shared import TopicNames
from service.kafka.health import cluster_unreachable
from service.kafka.producer import KafkaPublisher
from service.kafka.topics import project_topics
from service.storage.s3 import S3Store
from tests.harness.deployment import (
    CUSTOM_RESOURCE_SCHEMAS,
    KUBERNETES,
    KUBERNETES_VERSION,
    OVERLAYS,
    PROCESSES,
    Resource,
    config_data,
    named,
    of_kind,
    pod_spec,
    process_of,
    rendered,
    selects,
    variables_read_by_the_code,
    workloads,
)

DEFAULT_ADMIN_PORTS = {"gateway": 8081, "archiver": 8082, "metrics": 8083, "reconciler": 8084}
NAMESPACES = {"dev": "music-callbacks-dev", "prod": "music-callbacks"}
SECRET_NAMED = ("PASSWORD", "TOKENS", "KEY", "SECRET", "SECRETS")


def containers(workload: Resource) -> list[Resource]:
    spec = pod_spec(workload)
    found: list[Resource] = spec.get("initContainers", []) + spec["containers"]
    return found


def main_container(workload: Resource) -> Resource:
    container: Resource = pod_spec(workload)["containers"][0]
    return container


def workload_of(resources: list[Resource], process: str) -> Resource:
    found = [w for w in workloads(resources) if process_of(w) == process]
    assert len(found) == 1, process
    return found[0]


def template_labels(workload: Resource) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def container_env(container: Resource, config: dict[str, str]) -> dict[str, str | None]:
    """What the process sees: the ConfigMap (envFrom) overridden by the container's env."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= config
    env |= {item["name"]: item.get("value") for item in container.get("env", [])}
    return env


# ---- every object is valid ----------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_is_valid_for_the_pinned_kubernetes_version(overlay: str) -> None:
    resources = rendered(overlay)
    custom = {kind: jsonschema_rs.validator_for(schema)
              for kind, schema in CUSTOM_RESOURCE_SCHEMAS.items()}
    for resource in resources:
        kind = resource["kind"]
        if kind in custom:
            errors = [error.message for error in custom[kind].iter_errors(resource)]
            assert not errors, f"{kind}/{resource['metadata']['name']}: {errors}"
        else:  # strict: an unknown field is an error, not silently dropped by the API server
            try:
                kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{kind}/{resource['metadata']['name']}: {error.message} "
                            f"at {'.'.join(map(str, error.path))}")
    kinds = {resource["kind"] for resource in resources}
    assert {"Namespace", "ConfigMap", "StatefulSet", "Deployment", "Service",
            "PodDisruptionBudget", "NetworkPolicy", "Ingress", "KafkaTopic",
            "KafkaUser", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_overlays_namespace(overlay: str) -> None:
    resources = rendered(overlay)
    namespace = named(resources, "Namespace", NAMESPACES[overlay])
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for resource in resources:
        if resource["kind"] != "Namespace":
            assert resource["metadata"]["namespace"] == NAMESPACES[overlay], resource["kind"]
    assert len(of_kind(resources, "Namespace")) == 1


# ---- processes, ports, probes -------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_has_one_workload_running_a_real_command(overlay: str) -> None:
    commands = sorted(process_of(w) for w in workloads(rendered(overlay)))
    assert commands == sorted(PROCESSES)
    assert set(commands) <= set(COMMANDS)
    assert workload_of(rendered(overlay), "gateway")["kind"] == "StatefulSet"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("process", PROCESSES)
def test_probes_use_the_admin_port_and_paths(overlay: str, process: str) -> None:
    resources = rendered(overlay)
    container = main_container(workload_of(resources, process))
    env = container_env(container, config_data(resources))
    admin_port = int(env["ADMIN_PORT"] or "")
    assert admin_port == DEFAULT_ADMIN_PORTS[process]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports["admin"] == admin_port
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    if process == "gateway":
        assert ports["callbacks"] == int(env["HTTP_PORT"] or "")
    admin_service = named(resources, "Service", f"music-{process}-admin")
    assert selects({"matchLabels": admin_service["spec"]["selector"]},
                   template_labels(workload_of(resources, process)))
    assert [p["targetPort"] for p in admin_service["spec"]["ports"]] == ["admin"]


def _default(function: Any, parameter: str) -> float:
    value: float = inspect.signature(function).parameters[parameter].default
    return value


def test_readiness_timeouts_are_longer_than_the_checks_they_wait_for() -> None:
    """The kubelet's timeout must not cut a readiness check that is still within its deadline."""
    kafka_check = max(_default(KafkaPublisher.check, "deadline"),
                      _default(cluster_unreachable, "deadline"))
    worst_case = {
        "gateway": kafka_check,  # the producer asks the cluster for metadata
        "metrics": kafka_check,  # the consumer does
        # consumer, then producer, then the object store, one after the other
        "archiver": 2 * kafka_check + _default(S3Store.__init__, "check_timeout_seconds"),
        "reconciler": kafka_check,  # its producer does (the rebuild is a flag)
    }
    for overlay in OVERLAYS:
        for process, seconds in worst_case.items():
            container = main_container(workload_of(rendered(overlay), process))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert "timeoutSeconds" in container[probe], (process, probe)
            assert container["readinessProbe"]["timeoutSeconds"] > seconds, (overlay, process)
            assert container["readinessProbe"]["periodSeconds"] >= \
                container["readinessProbe"]["timeoutSeconds"], (overlay, process)


# ---- pod security -------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_meets_pod_security_restricted(overlay: str) -> None:
    resources = rendered(overlay)
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(resources, "ServiceAccount")}
    assert workloads(resources)
    for workload in workloads(resources):
        name = workload["metadata"]["name"]
        spec = pod_spec(workload)
        pod_security = spec["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] > 0, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), (name, host)
        assert not any("hostPath" in volume for volume in spec.get("volumes", [])), name
        for container in containers(workload):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert not context.get("privileged"), name
            assert "hostPort" not in str(container.get("ports", [])), name
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), (name, bound)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_mounted_files_never_plain_values(overlay: str) -> None:
    resources = rendered(overlay)
    assert not of_kind(resources, "Secret"), "secrets are created out of band, never committed"
    config = config_data(resources)
    for key in config:
        assert not (key.endswith(SECRET_NAMED) and not key.endswith("_FILE")), key
    for workload in workloads(resources):
        for container in containers(workload):
            for item in container.get("env", []):
                assert not item["name"].endswith(SECRET_NAMED) or "value" not in item, item
            mounted = {mount["mountPath"] for mount in container.get("volumeMounts", [])}
            env = container_env(container, config)
            for variable, value in env.items():
                if variable.endswith("_FILE") and value is not None:
                    assert value.rsplit("/", 1)[0] in mounted, (variable, value)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_set_is_one_the_code_reads(overlay: str) -> None:
    resources = rendered(overlay)
    known = variables_read_by_the_code()
    config = config_data(resources)
    assert not set(config) - known, f"the ConfigMap sets unknown variables: {set(config) - known}"
    for workload in workloads(resources):
        names = {item["name"] for container in containers(workload)
                 for item in container.get("env", [])}
        assert not names - known, f"{workload['metadata']['name']}: {names - known}"


# ---- availability: replicas, HPA, PDB, spread, spool --------------------------------------------

def test_prod_pins_the_image_to_a_release() -> None:
    version = _project_version()
    for workload in workloads(rendered("prod")):
        for container in containers(workload):
            image: str = container["image"]
            repository, _, tag = image.rpartition(":")
            assert "/" in repository, f"{image}: name the registry"
            assert "@sha256:" in image or tag == version, f"{image}: pin a release or a digest"
            assert container["imagePullPolicy"] == "IfNotPresent"


def _project_version() -> str:
    import tomllib

    from tests.harness.paths import REPO

    with (REPO / "pyproject.toml").open("rb") as file:
        version: str = tomllib.load(file)["project"]["version"]
    return version


def test_prod_scales_the_gateway_with_an_hpa_and_keeps_it_available() -> None:
    resources = rendered("prod")
    gateway = workload_of(resources, "gateway")
    (hpa,) = of_kind(resources, "HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", gateway["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 3
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_has_a_pdb_and_spreads_over_zones(overlay: str) -> None:
    resources = rendered(overlay)
    budgets = of_kind(resources, "PodDisruptionBudget")
    for workload in workloads(resources):
        labels = template_labels(workload)
        name = workload["metadata"]["name"]
        mine = [pdb for pdb in budgets if selects(pdb["spec"]["selector"], labels)]
        assert len(mine) == 1, name
        assert "maxUnavailable" in mine[0]["spec"], name  # never blocks a drain at 1 replica
        spread = pod_spec(workload)["topologySpreadConstraints"]
        assert "topology.kubernetes.io/zone" in {c["topologyKey"] for c in spread}, name
        assert all(selects(c["labelSelector"], labels) for c in spread), name


def test_prod_gateway_spools_to_a_persistent_volume_per_pod() -> None:
    resources = rendered("prod")
    gateway = workload_of(resources, "gateway")
    container = main_container(gateway)
    spool_dir = container_env(container, config_data(resources))["SPOOL_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert spool_dir == "/var/lib/music-gateway/spool"
    claims = {claim["metadata"]["name"] for claim in gateway["spec"]["volumeClaimTemplates"]}
    assert mounts[spool_dir] in claims
    assert mounts[spool_dir] not in {v["name"] for v in pod_spec(gateway)["volumes"]}
    retention = gateway["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention["whenScaled"] == "Retain"  # what a scaled-down pod spooled is kept


def test_dev_gateway_spools_to_an_empty_dir() -> None:
    gateway = workload_of(rendered("dev"), "gateway")
    assert not gateway["spec"]["volumeClaimTemplates"]
    spool = [v for v in pod_spec(gateway)["volumes"] if v["name"] == "spool"]
    assert spool == [{"name": "spool", "emptyDir": {"sizeLimit": "1Gi"}}]
    assert "RISK" in (KUBERNETES / "overlays" / "dev" / "gateway-spool-emptydir.yaml").read_text()


# ---- network policies ---------------------------------------------------------------------------

def policies_for(resources: list[Resource], process: str, direction: str) -> list[Resource]:
    labels = template_labels(workload_of(resources, process))
    return [policy for policy in of_kind(resources, "NetworkPolicy")
            if direction in policy["spec"]["policyTypes"]
            and selects(policy["spec"]["podSelector"], labels)]


def namespace_of(peer: Resource) -> str | None:
    selector = peer.get("namespaceSelector", {}).get("matchLabels", {})
    name: str | None = selector.get("kubernetes.io/metadata.name")
    return name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default(overlay: str) -> None:
    resources = rendered(overlay)
    default = [p for p in of_kind(resources, "NetworkPolicy") if p["spec"]["podSelector"] == {}
               and "ingress" not in p["spec"] and "egress" not in p["spec"]]
    assert len(default) == 1
    assert set(default[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_callbacks_reach_the_gateway_only_from_the_ingress_controller(overlay: str) -> None:
    resources = rendered(overlay)
    allowed: set[tuple[str | None, int]] = set()
    for policy in policies_for(resources, "gateway", "Ingress"):
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to everyone"
            for peer in rule["from"]:
                assert "ipBlock" not in peer
                allowed |= {(namespace_of(peer), port["port"]) for port in rule["ports"]}
    callbacks = {(namespace, port) for namespace, port in allowed if port == 8080}
    assert callbacks == {("ingress-nginx", 8080)}
    assert {namespace for namespace, _ in allowed} == {"ingress-nginx", "monitoring"}
    assert ("monitoring", DEFAULT_ADMIN_PORTS["gateway"]) in allowed


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("process", "ports"), [("archiver", {80, 443}),
                                                ("reconciler", {443})])
def test_downloaders_reach_only_the_public_internet_dns_and_kafka(
        overlay: str, process: str, ports: set[int]) -> None:
    """The archiver fetches provider URLs, the reconciler asks the provider's API: neither
    may reach a private, link-local (cloud metadata) or loopback address."""
    resources = rendered(overlay)
    must_exclude = [ipaddress.ip_network(n) for n in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
        "127.0.0.0/8", "fc00::/7", "fe80::/10")]
    internet_ports: set[int] = set()
    peers_namespaces: set[str | None] = set()
    for policy in policies_for(resources, process, "Egress"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: egress open to everyone"
            assert rule.get("ports"), f"{policy['metadata']['name']}: egress on every port"
            for peer in rule["to"]:
                if "ipBlock" not in peer:
                    peers_namespaces.add(namespace_of(peer))
                    continue
                block = ipaddress.ip_network(peer["ipBlock"]["cidr"])
                excepted = [ipaddress.ip_network(n) for n in peer["ipBlock"].get("except", [])]
                for forbidden in must_exclude:
                    if forbidden.version == block.version:
                        assert any(forbidden.subnet_of(e) for e in excepted  # type: ignore[arg-type]
                                   if e.version == forbidden.version), (block, forbidden)
                internet_ports |= {port["port"] for port in rule["ports"]}
    assert internet_ports == ports
    assert peers_namespaces == {"kube-system", "kafka"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_reconciler_runs_never_two(overlay: str) -> None:
    """It reads every partition without a consumer group: two would poll twice as often."""
    reconciler = workload_of(rendered(overlay), "reconciler")
    assert reconciler["kind"] == "Deployment"
    assert reconciler["spec"]["replicas"] == 1
    assert reconciler["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_reconciler_has_its_provider_api_url_and_key_file(overlay: str) -> None:
    resources = rendered(overlay)
    config = config_data(resources)
    seen = container_env(main_container(workload_of(resources, "reconciler")), config)
    env = Env({name: value for name, value in seen.items() if value is not None})
    assert read_base_url(env).startswith("https://")
    # Only the file's path is configured; the Secret it is mounted from is created out of band.
    assert env.optional_text("PROVIDER_API_KEY") is None
    assert (env.optional_text("PROVIDER_API_KEY_FILE") or "").startswith("/etc/provider-api/")


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_may_reach_dns_and_the_kafka_brokers(overlay: str, process: str) -> None:
    resources = rendered(overlay)
    reachable = {(namespace_of(peer), port["port"])
                 for policy in policies_for(resources, process, "Egress")
                 for rule in policy["spec"].get("egress", []) for peer in rule["to"]
                 for port in rule["ports"]}
    bootstrap = config_data(resources)["KAFKA_BOOTSTRAP_SERVERS"]
    kafka_port = int(bootstrap.rpartition(":")[2])
    assert {("kube-system", 53), ("kafka", kafka_port)} <= reachable


# ---- Strimzi: topics, user, bootstrap, secrets --------------------------------------------------

def kafka_cluster(resources: list[Resource]) -> str:
    strimzi = of_kind(resources, "KafkaTopic") + of_kind(resources, "KafkaUser")
    clusters: set[str] = {r["metadata"]["labels"]["strimzi.io/cluster"] for r in strimzi}
    assert len(clusters) == 1
    return clusters.pop()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_topics_are_the_project_topics_with_their_sizes(overlay: str) -> None:
    resources = rendered(overlay)
    env = Env(config_data(resources))
    declared = {t["spec"]["topicName"]: t["spec"] for t in of_kind(resources, "KafkaTopic")}
    expected = {spec.name: spec for spec in project_topics(env)}
    assert set(declared) == set(expected)
    for name, spec in expected.items():
        assert declared[name]["partitions"] == spec.partitions, name
        assert declared[name]["replicas"] == spec.replication_factor, name
        assert spec.config.items() <= declared[name]["config"].items(), name


def test_prod_topics_have_three_replicas_and_two_in_sync() -> None:
    for topic in of_kind(rendered("prod"), "KafkaTopic"):
        assert topic["spec"]["replicas"] == 3
        assert topic["spec"]["config"]["min.insync.replicas"] == "2"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_user_secrets_and_bootstrap_follow_strimzi(overlay: str) -> None:
    resources = rendered(overlay)
    config = config_data(resources)
    cluster = kafka_cluster(resources)
    (user,) = of_kind(resources, "KafkaUser")
    assert user["metadata"]["name"] == config["KAFKA_SASL_USERNAME"]
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    host = config["KAFKA_BOOTSTRAP_SERVERS"].rpartition(":")[0]
    assert host.split(".")[0] == f"{cluster}-kafka-bootstrap"
    for workload in workloads(resources):
        secrets = {v["name"]: v["secret"] for v in pod_spec(workload)["volumes"] if "secret" in v}
        mounts = {m["name"]: m["mountPath"] for m in main_container(workload)["volumeMounts"]}
        # The KafkaUser's Secret is generated by Strimzi under the user's name (key password);
        # nothing else of ours may use that name.
        by_name = {s["secretName"]: name for name, s in secrets.items()}
        user_volume = by_name[user["metadata"]["name"]]
        assert config["KAFKA_SASL_PASSWORD_FILE"] == f"{mounts[user_volume]}/password"
        assert {item["key"] for item in secrets[user_volume]["items"]} == {"password"}
        ca_volume = by_name[f"{cluster}-cluster-ca-cert"]
        assert config["KAFKA_SSL_CA_FILE"] == f"{mounts[ca_volume]}/ca.crt"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kafka_user_acls_allow_what_each_process_does_and_no_more(overlay: str) -> None:
    resources = rendered(overlay)
    topics = TopicNames.from_env(Env(config_data(resources)))
    (user,) = of_kind(resources, "KafkaUser")
    granted: dict[tuple[str, str | None], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert resource.get("patternType", "literal") == "literal", "no wildcard grants"
        granted.setdefault((resource["type"], resource.get("name")), set()).update(
            acl["operations"])
    needed = {
        ("topic", topics.events): {"Describe", "Write", "Read"},  # gateway; both consumers
        ("topic", topics.rejected): {"Describe", "Write"},  # gateway
        ("topic", topics.archived): {"Describe", "Write", "Read"},  # archiver; metrics
        ("topic", topics.archive_failed): {"Describe", "Write", "Read"},  # archiver; metrics
        ("topic", topics.tasks): {"Describe", "Write", "Read"},  # gateway POST /tasks; reconciler
        ("group", "music-archiver"): {"Describe", "Read"},
        ("group", "music-metrics"): {"Describe", "Read"},
        ("cluster", None): {"IdempotentWrite"},
    }
    assert granted == needed


# ---- ingress, monitoring ------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_serves_only_callbacks_over_tls_without_logging_queries(overlay: str) -> None:
    resources = rendered(overlay)
    (ingress,) = of_kind(resources, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    hosts = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert [host for tls in ingress["spec"]["tls"] for host in tls["hosts"]] == hosts
    assert all(tls["secretName"] for tls in ingress["spec"]["tls"])
    assert annotations["cert-manager.io/cluster-issuer"]
    assert annotations["nginx.ingress.kubernetes.io/enable-access-log"] == "false"
    assert annotations["nginx.ingress.kubernetes.io/ssl-redirect"] == "true"
    assert not [key for key in annotations if "snippet" in key], "refused by ingress-nginx"
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/callbacks/", "Prefix")]
    service = named(resources, "Service", paths[0]["backend"]["service"]["name"])
    assert paths[0]["backend"]["service"]["port"]["name"] in {
        port["name"] for port in service["spec"]["ports"]}
    assert selects({"matchLabels": service["spec"]["selector"]},
                   template_labels(workload_of(resources, "gateway")))


def test_prod_service_monitor_scrapes_every_process_as_its_own_job() -> None:
    resources = rendered("prod")
    (monitor,) = of_kind(resources, "ServiceMonitor")
    selected = [s for s in of_kind(resources, "Service")
                if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    jobs = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in selected}
    assert jobs == {f"music-{process}" for process in PROCESSES}
    (endpoint,) = monitor["spec"]["endpoints"]
    for service in selected:
        assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    rules = of_kind(resources, "PrometheusRule")
    assert len(rules) == 1
    assert rules[0]["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]
