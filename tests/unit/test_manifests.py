"""deploy/Dockerfile and the Kustomize manifests keep step with mxfleet itself.

No cluster is needed. Each overlay is rendered with ``kubectl kustomize`` (skipped where
kubectl is missing, a failure under ``CI``: ``.ci/make`` installs Debian's
kubernetes-client), its core objects are validated offline with ``kubernetes-validate
--strict`` (CRDs are not: PodMonitor, PrometheusRule, ScaledObject), and the rest is
checked against mxfleet's own code: every ``MXFLEET_*`` variable is a setting and its
value loads, every container runs one of ``shared.cli.ROLES``, the probes reach the
metrics port, the grace periods outlast the drain and the ticket budget, every container
runs unprivileged, and the files the bases copy from deploy/ are identical to their
sources (``deploy/kubernetes/generate.py`` writes them).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import shared.metrics  # noqa: F401 -- registers every mxfleet metric in REGISTRY
from shared.cli import ROLES
from shared.policies import PolicySpec
from shared.redis_url import parse_sentinel
from shared.settings import CONFIG_ENV, ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
BASE = K8S / "base"
OVERLAYS = ("dev", "production", "external-redis")
KUSTOMIZATIONS = sorted(p.parent.relative_to(K8S) for p in K8S.rglob("kustomization.yaml"))
SECRETS_EXAMPLE = BASE / "secrets.example.yaml"
# the oldest and the newest Kubernetes the bundled schemas know of that we claim to run on
KUBE_VERSIONS = ("1.27.0", "1.37.0")
CORE_KINDS = {
    "ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "HorizontalPodAutoscaler",
    "PodDisruptionBudget", "NetworkPolicy",
}  # fmt: skip
WORKLOADS = ("Deployment", "StatefulSet")
ENV_NAME = re.compile(r"\bMXFLEET_[A-Z0-9_]*[A-Z0-9]")
METRIC_NAME = re.compile(r"(?<![A-Za-z0-9_:])mxfleet_[A-Za-z0-9_:]*")

Doc = dict[str, Any]


def require(tool: str) -> str:
    """The tool's path; skip locally when it is missing, fail under CI where it must exist."""
    path = shutil.which(tool) or shutil.which(tool, path=str(Path(sys.executable).parent))
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed (.ci/make installs it for check and test)")
        pytest.skip(f"{tool} is not installed")
    return path


@cache
def rendered_text(kustomization: Path) -> str:
    result = subprocess.run(
        [require("kubectl"), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {kustomization}:\n{result.stderr}"
    return result.stdout


def render(kustomization: Path | str) -> list[Doc]:
    docs = [doc for doc in yaml.safe_load_all(rendered_text(Path(kustomization))) if doc]
    assert all(isinstance(doc, dict) for doc in docs)
    return docs


def objects(docs: list[Doc], *kinds: str) -> list[Doc]:
    return [doc for doc in docs if doc["kind"] in kinds]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The object of that kind whose name (before kustomize's hash suffix) is ``name``."""
    found = [
        doc
        for doc in objects(docs, kind)
        if re.fullmatch(re.escape(name) + r"(-[a-z0-9]{10})?", doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Doc) -> list[Doc]:
    spec = pod_spec(workload)
    found: list[Doc] = spec.get("initContainers", []) + spec["containers"]
    return found


def is_mxfleet(container: Doc) -> bool:
    image = str(container["image"]).rsplit("/", 1)[-1]
    return image.split(":", 1)[0].split("@", 1)[0] == "mxfleet"


def mxfleet_workloads(docs: list[Doc]) -> Iterator[tuple[Doc, Doc]]:
    for workload in objects(docs, *WORKLOADS):
        for container in containers(workload):
            if is_mxfleet(container):
                yield workload, container


def example_secrets() -> dict[str, dict[str, str]]:
    """The placeholder data of each Secret of secrets.example.yaml, by name."""
    docs = yaml.safe_load_all(SECRETS_EXAMPLE.read_text())
    return {doc["metadata"]["name"]: doc["stringData"] for doc in docs}


def container_env(docs: list[Doc], container: Doc) -> dict[str, str]:
    """The container's environment as Kubernetes builds it (Secrets: their examples)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(docs, "ConfigMap", ref.rsplit("-", 1)[0])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = example_secrets()[ref["name"]][ref["key"]]
    return env


def container_settings(docs: list[Doc], container: Doc) -> Settings:
    """The settings this container starts with (the TOML file read from deploy/)."""
    env = container_env(docs, container)
    assert env.get(CONFIG_ENV) == "/etc/mxfleet/mxfleet.toml"
    return load_settings({**env, CONFIG_ENV: str(DEPLOY / "mxfleet.toml")})


def port_number(container: Doc, name: str) -> int:
    numbers = [p["containerPort"] for p in container.get("ports", []) if p["name"] == name]
    assert len(numbers) == 1, f"container {container['name']}: port {name!r}"
    number: int = numbers[0]
    return number


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def is_setting(name: str) -> bool:
    """``MXFLEET_<FIELD>`` of Settings, ``MXFLEET_POLICY__<NAME>__<FIELD>``, MXFLEET_CONFIG."""
    if name == CONFIG_ENV:
        return True
    field, *nested = name.removeprefix(ENV_PREFIX).split("__")
    fields = {f.upper() for f in Settings.model_fields}
    if not nested:
        return field in fields
    policy_fields = {f.upper() for f in PolicySpec.model_fields}
    return field == "POLICY" and len(nested) == 2 and nested[1] in policy_fields


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def docs(overlay: str) -> list[Doc]:
    return render(Path("overlays") / overlay)


# --- the copies and the generated PrometheusRule ----------------------------------------


@pytest.mark.parametrize(
    ("copy", "source"),
    [
        (BASE / "mxfleet.toml", DEPLOY / "mxfleet.toml"),
        (BASE / "redis" / "redis.conf", DEPLOY / "redis.conf"),
        (BASE / "monitoring" / "mxfleet-dashboard.json", DEPLOY / "grafana/mxfleet-dashboard.json"),
    ],
    ids=lambda path: path.name,
)
def test_the_bases_copies_are_identical_to_deploy(copy: Path, source: Path) -> None:
    assert copy.read_bytes() == source.read_bytes(), (
        f"{copy} differs from {source}: run python3 deploy/kubernetes/generate.py"
    )


def test_the_prometheus_rule_carries_the_rules_file() -> None:
    rule = yaml.safe_load((BASE / "monitoring" / "prometheusrule.yaml").read_text())
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    rules = yaml.safe_load((DEPLOY / "prometheus" / "mxfleet-rules.yaml").read_text())
    assert rule["spec"] == rules, "run python3 deploy/kubernetes/generate.py"


def test_generate_py_finds_nothing_stale() -> None:
    result = subprocess.run(
        [sys.executable, str(K8S / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- every kustomization renders, and nothing in it is left half-patched -----------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=str)
def test_each_kustomization_renders_whole_objects(kustomization: Path) -> None:
    docs = render(kustomization)
    assert docs
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc
        assert doc["metadata"].get("name"), doc
        assert "namespace" not in doc["metadata"], "the manifests are namespace-agnostic"
        assert "$patch" not in yaml.safe_dump(doc), doc["metadata"]["name"]


def test_core_objects_validate_strictly(docs: list[Doc], tmp_path: Path) -> None:
    core = [doc for doc in docs if doc["kind"] in CORE_KINDS]
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= {
        doc["kind"] for doc in core
    }
    path = tmp_path / "core.yaml"
    path.write_text(yaml.safe_dump_all(core))
    validate(path)


def test_the_secrets_example_validates_and_holds_no_key() -> None:
    validate(SECRETS_EXAMPLE)
    text = SECRETS_EXAMPLE.read_text()
    assert "PLACEHOLDER" in text
    assert not re.search(r"^\s+[A-Za-z0-9+/]{64}$", text, flags=re.MULTILINE), "a real key?"
    for secret in yaml.safe_load_all(text):
        assert "data" not in secret, "placeholders go in stringData, readable"


def validate(path: Path) -> None:
    command = [require("kubernetes-validate"), "--strict", "--quiet"]
    for version in KUBE_VERSIONS:
        command += ["-k", version]
    result = subprocess.run(
        [*command, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- mxfleet's settings and roles ---------------------------------------------------------


def test_the_env_checker_knows_settings_from_typos() -> None:
    assert is_setting("MXFLEET_REDIS_URL")
    assert is_setting("MXFLEET_POLICY__GOOGLE__RATE")
    assert is_setting("MXFLEET_CONFIG")
    assert not is_setting("MXFLEET_REDIS_URI")
    assert not is_setting("MXFLEET_POLICY__GOOGLE__SPEED")
    assert not is_setting("MXFLEET_SMTP_SERVICE_HOST")


def test_every_mxfleet_variable_is_a_setting(overlay: str) -> None:
    text = rendered_text(Path("overlays") / overlay)
    names = set(ENV_NAME.findall(text))
    assert "MXFLEET_REDIS_URL" in names
    assert sorted(name for name in names if not is_setting(name)) == []


def test_every_mxfleet_container_starts_with_valid_settings(docs: list[Doc]) -> None:
    for _workload, container in mxfleet_workloads(docs):
        settings = container_settings(docs, container)
        assert settings.redis_url, container["name"]


def test_every_mxfleet_container_runs_a_role(docs: list[Doc]) -> None:
    seen = set()
    for workload, container in mxfleet_workloads(docs):
        assert container.get("command", ["mxfleet"]) == ["mxfleet"], "the image's entrypoint"
        role = container["args"][0]
        assert role in ROLES, f"{workload['metadata']['name']}: {role!r}"
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == role
        seen.add(role)
    assert seen == set(ROLES)


def test_probes_reach_the_metrics_port(docs: list[Doc]) -> None:
    for _workload, container in mxfleet_workloads(docs):
        _, metrics_port = container_settings(docs, container).metrics_address
        assert port_number(container, "metrics") == metrics_port
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = container[probe]["httpGet"]
            assert (get["path"], get["port"]) == (path, "metrics"), container["name"]


def test_mxfleet_pods_get_no_service_variables(docs: list[Doc]) -> None:
    # A Service named mxfleet-* would put MXFLEET_..._SERVICE_HOST in the environment, and
    # mxfleet refuses to start on an MXFLEET_ variable that is not a setting.
    for workload, _container in mxfleet_workloads(docs):
        assert pod_spec(workload)["enableServiceLinks"] is False, workload["metadata"]["name"]


def test_the_ingress_listens_where_the_service_sends(docs: list[Doc]) -> None:
    ingress = named(docs, "Deployment", "mxfleet-ingress")
    (container,) = containers(ingress)
    settings = container_settings(docs, container)
    # one process per pod: processes 1.. would serve metrics on ports nobody scrapes
    assert settings.ingress_processes == 1, "scale pods, not processes"
    _, listen_port = settings.listen_address
    assert port_number(container, "smtp") == listen_port == 2525
    service = named(docs, "Service", "mxfleet-smtp")["spec"]
    assert service["type"] == "LoadBalancer"
    assert service["externalTrafficPolicy"] == "Local"
    assert [(p["port"], p["targetPort"]) for p in service["ports"]] == [(25, "smtp")]
    assert matches(service["selector"], ingress["spec"]["template"]["metadata"]["labels"])


def test_the_ingress_drains_before_it_is_killed(docs: list[Doc]) -> None:
    ingress = named(docs, "Deployment", "mxfleet-ingress")
    (container,) = containers(ingress)
    drain = container_settings(docs, container).drain_timeout
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = float(command[1])
    assert pod_spec(ingress)["terminationGracePeriodSeconds"] > pre_stop + drain


def test_a_worker_ends_its_ticket_before_it_is_killed(docs: list[Doc]) -> None:
    worker = named(docs, "Deployment", "mxfleet-worker")
    (container,) = containers(worker)
    budget = container_settings(docs, container).ticket_budget
    assert pod_spec(worker)["terminationGracePeriodSeconds"] > budget


# --- every container runs unprivileged ----------------------------------------------------


def test_every_container_is_locked_down(docs: list[Doc]) -> None:
    for workload in objects(docs, *WORKLOADS):
        pod = pod_spec(workload)
        pod_context = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False
        for container in containers(workload):
            where = f"{workload['metadata']['name']}/{container['name']}"
            context = container.get("securityContext", {})
            effective = {**pod_context, **context}
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("runAsUser", 1) != 0, where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("privileged", False) is False, where
            assert "ALL" in context.get("capabilities", {}).get("drop", []), where
            assert not context.get("capabilities", {}).get("add"), where
            assert effective.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert container["resources"]["limits"]["memory"], where


# --- the objects refer to each other correctly --------------------------------------------


def test_selectors_and_targets_find_their_objects(docs: list[Doc]) -> None:
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in objects(docs, *WORKLOADS)]
    for pdb in objects(docs, "PodDisruptionBudget", "Service", "NetworkPolicy"):
        spec = pdb["spec"]
        selector = spec.get("selector") or spec.get("podSelector")
        selector = selector.get("matchLabels", selector)
        assert any(matches(selector, labels) for labels in pods), pdb["metadata"]["name"]
    for workload in objects(docs, *WORKLOADS):
        assert matches(
            workload["spec"]["selector"]["matchLabels"],
            workload["spec"]["template"]["metadata"]["labels"],
        )
    for hpa in objects(docs, "HorizontalPodAutoscaler"):
        named(docs, hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"])
    for scaled in objects(docs, "ScaledObject"):
        named(docs, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])


def references(node: Any) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a pod template refers to."""
    if isinstance(node, list):
        for item in node:
            yield from references(item)
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in ("configMap", "configMapRef", "configMapKeyRef"):
            yield "ConfigMap", value["name"]
        elif key in ("secret", "secretRef", "secretKeyRef"):
            yield "Secret", value.get("name") or value["secretName"]
        else:
            yield from references(value)


def test_config_maps_and_secrets_referenced_exist(docs: list[Doc]) -> None:
    config_maps = {doc["metadata"]["name"] for doc in objects(docs, "ConfigMap")}
    # Secrets are made by hand (secrets.example.yaml says how), never by the manifests
    assert not objects(docs, "Secret")
    examples = example_secrets()
    for workload in objects(docs, *WORKLOADS):
        for kind, name in references(workload["spec"]["template"]):
            assert name in (config_maps if kind == "ConfigMap" else examples), f"{kind}/{name}"


# --- the spool ----------------------------------------------------------------------------

REDIS_UNITS = {"k": 1000, "kb": 1024, "m": 10**6, "mb": 2**20, "g": 10**9, "gb": 2**30}
KUBE_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}


def with_unit(value: str, units: dict[str, int]) -> int:
    """``"1200mb"`` (Redis) or ``"2Gi"`` (Kubernetes) in bytes."""
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", value)
    assert match, value
    assert match[2] in ("", *units), value
    return int(match[1]) * units.get(match[2], 1)


def redis_directives(docs: list[Doc]) -> dict[str, str]:
    """What Redis runs with: redis.conf, then kubernetes.conf (a later directive wins)."""
    data = named(docs, "ConfigMap", "redis-config")["data"]
    directives: dict[str, str] = {}
    for name in ("redis.conf", "kubernetes.conf"):
        for line in data[name].splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.strip().partition(" ")
                directives[key.lower()] = value.strip()
    return directives


def redis_launch(docs: list[Doc], container: Doc) -> str:
    """The command line, or the start script it runs (from the redis-scripts ConfigMap)."""
    words = container.get("command", []) + container.get("args", [])
    scripts = [word for word in words if word.startswith("/scripts/")]
    if not scripts:
        return shlex.join(words)
    text: str = named(docs, "ConfigMap", "redis-scripts")["data"][Path(scripts[0]).name]
    return text


@pytest.mark.parametrize("overlay", ["dev", "production"])
def test_redis_is_durable_and_bounded(overlay: str) -> None:
    docs = render(Path("overlays") / overlay)
    directives = redis_directives(docs)
    assert directives["appendonly"] == "yes"
    # everysec may answer before its AOF write: only where each accept waits for a replica
    assert directives["appendfsync"] == ("everysec" if overlay == "production" else "always")
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["protected-mode"] == "no", "reachable from the other pods"
    redis = named(docs, "StatefulSet", "redis")
    (container,) = containers(redis)
    assert container["image"] == "redis:7.2"
    limit = with_unit(container["resources"]["limits"]["memory"], KUBE_UNITS)
    assert with_unit(directives["maxmemory"].lower(), REDIS_UNITS) <= 0.75 * limit, (
        "room for the AOF rewrite fork"
    )
    launch = redis_launch(docs, container)
    assert "/etc/redis/redis.conf" in launch
    assert "/etc/redis/kubernetes.conf" in launch
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts["/etc/redis"] == "config"
    claims = [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]]
    assert mounts[directives["dir"]] in claims, "the AOF lives on the persistent volume"


def test_production_spool_is_a_primary_two_replicas_and_three_sentinels() -> None:
    docs = render("overlays/production")
    redis = named(docs, "StatefulSet", "redis")
    sentinel = named(docs, "StatefulSet", "redis-sentinel")
    assert redis["spec"]["replicas"] == 3
    assert sentinel["spec"]["replicas"] == 3
    (sentinel_container,) = containers(sentinel)
    sentinel_port = port_number(sentinel_container, "sentinel")
    sentinel_names = [f"redis-sentinel-{i}.{sentinel['spec']['serviceName']}" for i in range(3)]
    redis_names = [f"redis-{i}.{redis['spec']['serviceName']}" for i in range(3)]
    scripts = named(docs, "ConfigMap", "redis-scripts")["data"]
    monitor = re.search(
        r"^sentinel monitor (\S+) @PRIMARY@ 6379 (\d+)$", scripts["sentinel.conf"], re.M
    )
    assert monitor, "sentinel.conf: sentinel monitor NAME @PRIMARY@ 6379 QUORUM"
    assert int(monitor[2]) == 2, "a majority of the three"
    for script in ("redis-start.sh", "sentinel-start.sh"):
        assert f'sentinels="{" ".join(sentinel_names)}"' in scripts[script]
        assert f'peers="{" ".join(redis_names)}"' in scripts[script]
        assert f"service={monitor[1]}\n" in scripts[script]
    for _workload, container in mxfleet_workloads(docs):
        settings = container_settings(docs, container)
        target = parse_sentinel(settings.redis_url or "")
        assert list(target.sentinels) == [(name, sentinel_port) for name in sentinel_names]
        assert target.service == monitor[1]
        assert settings.redis_wait_replicas == 1
    assert int(redis_directives(docs)["min-replicas-to-write"]) >= 1


def test_the_start_scripts_parse() -> None:
    sh = require("sh")
    for script in sorted(K8S.rglob("*.sh")):
        result = subprocess.run(
            [sh, "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{script}: {result.stderr}"


# --- what each overlay is -----------------------------------------------------------------


def test_dev_runs_one_of_each_without_secrets_or_crds() -> None:
    docs = render("overlays/dev")
    assert [d["spec"]["replicas"] for d in objects(docs, "Deployment", "StatefulSet")] == [1] * 4
    assert not [
        d for d in docs if "monitoring.coreos.com" in d["apiVersion"] or "keda" in d["apiVersion"]
    ]
    assert not [name for kind, name in references(docs) if kind == "Secret"]


@pytest.mark.parametrize("overlay", ["production", "external-redis"])
def test_production_scales(overlay: str) -> None:
    docs = render(Path("overlays") / overlay)
    assert named(docs, "Deployment", "mxfleet-ingress")["spec"]["replicas"] >= 2
    assert named(docs, "Deployment", "mxfleet-dispatcher")["spec"]["replicas"] == 2
    hpa = named(docs, "HorizontalPodAutoscaler", "mxfleet-ingress")["spec"]
    assert hpa["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    for kind in ("PodMonitor", "PrometheusRule", "ScaledObject"):
        assert objects(docs, kind), kind
    dashboard = named(docs, "ConfigMap", "mxfleet-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    monitor = named(docs, "PodMonitor", "mxfleet")["spec"]
    assert [e["port"] for e in monitor["podMetricsEndpoints"]] == ["metrics"]
    for _workload, container in mxfleet_workloads(docs):
        assert port_number(container, "metrics")


def sample_names() -> set[str]:
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        if family.name.startswith("mxfleet_")
        for suffix in suffixes.get(family.type, ("",))
    }


def test_workers_scale_on_due_work_from_prometheus() -> None:
    docs = render("overlays/production")
    scaled = named(docs, "ScaledObject", "mxfleet-worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == "mxfleet-worker"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    queries = [t["metadata"]["query"] for t in scaled["triggers"]]
    assert {t["type"] for t in scaled["triggers"]} == {"prometheus"}
    assert any("mxfleet_queue_" in query for query in queries), "the spool's due work"
    for query in queries:
        assert "celery" not in query.lower()
        assert set(METRIC_NAME.findall(query)) <= sample_names(), query
        if "mxfleet_queue_" in query:
            assert "mxfleet_dispatcher_leader == 1" in query, "only the leader's gauges"


def test_external_redis_takes_the_url_from_a_secret() -> None:
    docs = render("overlays/external-redis")
    assert not objects(docs, "StatefulSet"), "no in-cluster Redis"
    for _workload, container in mxfleet_workloads(docs):
        (url,) = [e for e in container["env"] if e["name"] == "MXFLEET_REDIS_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "mxfleet-redis", "key": "url"}


# --- the image ----------------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
PYTHON_IMAGE = "python:3.11-slim-bookworm"
# What python:3.11-slim-bookworm has on PATH for a RUN: Python in /usr/local/bin, and
# Debian bookworm's required packages (dash, bash, coreutils, grep, sed, findutils, passwd,
# libc-bin). No compiler, make, curl, wget or git: those would need apt-get first.
IMAGE_TOOLS = {
    PYTHON_IMAGE: {
        "python", "python3", "python3.11", "pip", "pip3", "pip3.11",
        "sh", "bash", "cat", "cp", "mv", "rm", "ln", "mkdir", "chmod", "chown", "echo",
        "test", "true", "sleep", "env", "id", "find", "grep", "sed", "getent",
        "useradd", "groupadd", "apt-get",
    },
}  # fmt: skip
# Never in the runtime stage: package managers and compilers (the image ships a venv).
BUILD_ONLY = {"apt-get", "apt", "dpkg", "pip", "pip3", "gcc", "cc", "g++", "make", "curl", "wget"}
SEPARATORS = {"&&", "||", ";", "|", "&"}


class Stage:
    def __init__(self, image: str, name: str) -> None:
        self.image, self.name = image, name
        self.steps: list[tuple[str, str]] = []
        self.made: set[str] = set()  # executables this stage created (a venv's bin/)
        self.path = ["/usr/local/bin", "/usr/bin", "/bin"]

    def values(self, keyword: str) -> list[str]:
        return [rest for key, rest in self.steps if key == keyword]

    def env(self) -> dict[str, str]:
        pairs = [pair.split("=", 1) for rest in self.values("ENV") for pair in shlex.split(rest)]
        return {key: value for key, value in pairs}

    def has(self, tool: str) -> bool:
        if "/" in tool:
            return tool in self.made
        return tool in IMAGE_TOOLS[self.image] or any(f"{d}/{tool}" in self.made for d in self.path)


def stages() -> tuple[Stage, ...]:
    """The Dockerfile's stages, continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    found: list[Stage] = []
    for line in re.sub(r"\\\n", " ", "\n".join(lines)).splitlines():
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            image, _, name = rest.partition(" AS ")
            found.append(Stage(image.strip(), name.strip()))
        elif keyword:
            found[-1].steps.append((keyword.upper(), rest.strip()))
    return tuple(found)


def commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell line (words before a redirection)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    words: list[str] = []
    redirected = False
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            while words and re.fullmatch(r"\w+=.*", words[0]):
                words.pop(0)  # VAR=value before the command
            if words:
                yield words
            words, redirected = [], False
        elif set(token) <= set("<>&"):
            redirected = True  # >, >>, >& ...: the words after it are file names
        elif not redirected:
            words.append(token)


def run_steps(stage: Stage, builder: Stage | None) -> Iterator[list[str]]:
    """Each command a RUN runs in the stage, as the stage's executables grow."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for keyword, rest in stage.steps:
        if keyword == "ENV" and "PATH" in stage.env():
            stage.path = stage.env()["PATH"].replace("$PATH", ":".join(stage.path)).split(":")
        if keyword == "COPY" and rest.startswith("--from=") and builder is not None:
            source = shlex.split(rest)[1]
            stage.made |= {tool for tool in builder.made if tool.startswith(source + "/")}
        if keyword != "RUN":
            continue
        for words in commands(rest):
            yield words
            if words[1:3] == ["-m", "venv"]:
                stage.made |= {f"{words[3]}/bin/{tool}" for tool in ("python", "python3", "pip")}
            if words[0].endswith("/bin/pip") and "install" in words:
                stage.made |= {words[0].replace("/pip", f"/{script}") for script in scripts}


def test_the_shell_splitter_finds_each_command() -> None:
    script = "A=1 python -m venv /v && /v/bin/pip install . >/dev/null 2>&1; true | cat -"
    assert list(commands(script)) == [
        ["python", "-m", "venv", "/v"],
        ["/v/bin/pip", "install", "."],
        ["true"],
        ["cat", "-"],
    ]


def test_the_image_is_built_in_two_stages_from_python_slim() -> None:
    builder, final = stages()
    assert (builder.image, builder.name) == (PYTHON_IMAGE, "builder")
    assert (final.image, final.name) == (PYTHON_IMAGE, "")
    copies = final.values("COPY")
    assert copies == ["--from=builder /opt/mxfleet /opt/mxfleet"], "only the venv"


def test_every_run_uses_tools_its_image_has() -> None:
    builder, final = stages()
    for stage, source in ((builder, None), (final, builder)):
        for words in run_steps(stage, source):
            assert stage.has(words[0]), f"{stage.name or 'final'}: {shlex.join(words)}"
            if stage is final:
                assert words[0].rsplit("/", 1)[-1] not in BUILD_ONLY, shlex.join(words)
    healthcheck = final.values("HEALTHCHECK")
    for check in healthcheck:
        assert final.has(yaml.safe_load(check.split(" CMD ", 1)[1])[0])
    entrypoint = yaml.safe_load(final.values("ENTRYPOINT")[-1])
    assert entrypoint == ["mxfleet"]
    assert final.has("mxfleet"), "the venv's console script, on PATH"


def test_the_image_runs_mxfleet_unprivileged() -> None:
    _, final = stages()
    user = final.values("USER")[-1].split(":")[0]
    assert user not in ("0", "root")
    pods = list(yaml.safe_load_all((BASE / "ingress.yaml").read_text()))
    assert pods[0]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user)
    assert yaml.safe_load(final.values("CMD")[-1])[0] in ROLES
    assert final.values("EXPOSE") == ["2525 9100"]
    env = final.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    names = [name for name in env if name.startswith(ENV_PREFIX)]
    assert all(is_setting(name) for name in names), names
    settings = load_settings({name: env[name] for name in names})
    assert settings.listen_address[1] == 2525
    assert settings.metrics_address[1] == 9100


def test_the_builder_copies_what_pip_install_needs() -> None:
    builder, _ = stages()
    sources = {word.rstrip("/") for rest in builder.values("COPY") for word in rest.split()[:-1]}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= set(pyproject["tool"]["setuptools"]["packages"])
    assert needed <= sources
    # the ignore file lets each of them into the build context
    allowed = {ln[1:].rstrip("/") for ln in DOCKERIGNORE.read_text().splitlines() if ln[:1] == "!"}
    assert sources <= allowed
