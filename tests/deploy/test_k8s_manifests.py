"""The Kubernetes manifests in deploy/k8s/: valid against a pinned Kubernetes schema (strict:
an unknown or misspelt field fails), and true to the server they run (settings that exist,
probes on the real routes and port, the Secret wired in, the NetworkPolicy on the right pods).

No cluster runs here; ``kubectl apply`` would check the same schemas, and these checks are the
ones a schema cannot make.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from toolgym.server import Settings

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31.0"
SERVER_LABELS = {"app.kubernetes.io/name": "toolgym-server"}
SETTING_VARS = {f"TOOLGYM_{f.name.upper()}" for f in dataclasses.fields(Settings)}


def load_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return docs


DOCS = load_documents()


def one(kind: str) -> dict[str, Any]:
    found = [doc for doc in DOCS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def pod_spec() -> dict[str, Any]:
    return one("StatefulSet")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def server_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    return container  # type: ignore[no-any-return]


def test_the_folder_holds_every_kind_the_fleet_needs() -> None:
    kinds = sorted(doc["kind"] for doc in DOCS)
    assert kinds == ["ConfigMap", "Namespace", "NetworkPolicy", "Secret", "Service", "StatefulSet"]
    # kubectl applies a folder in name order: the namespace must exist before the rest.
    first = yaml.safe_load((sorted(K8S_DIR.glob("*.yaml"))[0]).read_text(encoding="utf-8"))
    assert first["kind"] == "Namespace"
    assert all(doc["metadata"].get("namespace") == first["metadata"]["name"] for doc in DOCS if doc is not first
               and doc["kind"] != "Namespace")


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_document_is_valid_against_the_pinned_kubernetes_schema(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 8000}], sesionAffinity: None}\n",
         "a misspelt field"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {TOOLGYM_PORT: 8000}\n",
         "a number where the API wants a string"),
        ("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec: {serviceName: s}\n",
         "required fields missing"),
    ],
)
def test_validation_rejects_a_broken_manifest(broken: str, why: str) -> None:
    """The validator is not a no-op: each of these would be refused by ``kubectl apply``."""
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(yaml.safe_load(broken), KUBERNETES_VERSION, strict=True)


def test_every_container_has_requests_and_limits() -> None:
    for container in pod_spec()["containers"] + pod_spec().get("initContainers", []):
        resources = container.get("resources", {})
        for side in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(side, {})), f"{container['name']} lacks {side}"


def test_probes_hit_the_health_routes_on_the_api_port() -> None:
    container = server_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = one("ConfigMap")["data"]
    assert ports["http"] == int(config["TOOLGYM_PORT"])
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == ports["http"], probe
    # A liveness probe that gives up before a rollout's grace period would kill draining pods.
    assert pod_spec()["terminationGracePeriodSeconds"] > float(config["TOOLGYM_SHUTDOWN_GRACE_S"])


def test_every_toolgym_variable_is_a_real_setting() -> None:
    config = one("ConfigMap")["data"]
    env_names = [e["name"] for e in server_container().get("env", [])]
    secret_names = list(one("Secret").get("stringData", {})) + list(one("Secret").get("data", {}))
    for name in [*config, *env_names, *secret_names]:
        if name.startswith("TOOLGYM_"):
            assert name in SETTING_VARS, f"{name} is not a field of Settings"
    # And the values parse as the server would parse them.
    Settings.from_env({**config, "TOOLGYM_API_KEYS": "k"}).validate()


def test_the_secret_carries_the_api_keys_and_the_server_reads_them() -> None:
    secret = one("Secret")
    refs = [e["valueFrom"]["secretKeyRef"] for e in server_container()["env"]
            if e["name"] == "TOOLGYM_API_KEYS" and "secretKeyRef" in e.get("valueFrom", {})]
    assert refs == [{"name": secret["metadata"]["name"], "key": "TOOLGYM_API_KEYS"}]
    assert "TOOLGYM_API_KEYS" in secret.get("stringData", {}) | secret.get("data", {})
    # Shipped empty, so the server refuses to start on 0.0.0.0 until someone sets a key.
    config = one("ConfigMap")["data"]
    with pytest.raises(ValueError, match="without API keys"):
        Settings.from_env({**config, "TOOLGYM_API_KEYS": secret["stringData"]["TOOLGYM_API_KEYS"]}).validate()


def test_the_service_is_headless_and_keeps_every_replica_resolvable() -> None:
    """A virtual IP would spread one episode's steps over replicas that do not hold it."""
    service, statefulset = one("Service"), one("StatefulSet")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"] == SERVER_LABELS
    assert statefulset["spec"]["template"]["metadata"]["labels"].items() >= SERVER_LABELS.items()


def test_one_replica_per_node_with_the_docker_socket() -> None:
    spec = pod_spec()
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == SERVER_LABELS
    sockets = [v for v in spec["volumes"] if v.get("hostPath", {}).get("path") == "/var/run/docker.sock"]
    assert [v["hostPath"]["type"] for v in sockets] == ["Socket"]
    mounts = {m["name"]: m["mountPath"] for m in server_container()["volumeMounts"]}
    assert mounts[sockets[0]["name"]] == "/var/run/docker.sock"
    security = server_container()["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_the_network_policy_guards_the_server_pods() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == SERVER_LABELS
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [int(one("ConfigMap")["data"]["TOOLGYM_PORT"])]
    for peer in ingress["from"]:
        assert peer.get("podSelector", {}).get("matchLabels"), "ingress must name the trainer pods by label"
        assert "ipBlock" not in peer
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53}
