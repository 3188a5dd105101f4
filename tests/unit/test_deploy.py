"""Deploy files, README operations guide and settings table, all checked against the code.

docker-compose.yml, deploy/Dockerfile and deploy/k8s cannot be run here (no container engine):
these tests keep them correct by construction. Valid environment variable names come from the
settings model, metric names from ``ingester.metrics``, Kubernetes schemas from the
``kubernetes-validate`` package (bundled, no network).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import socket
from collections.abc import Iterator, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.metrics import MetricWrapperBase
from typer.testing import CliRunner

from ingester.cli import app
from ingester.cli.settings_doc import is_setting_env, markdown_table, secret_envs, setting_docs, table_in, with_table
from ingester.freshness import Freshness
from ingester.metrics import Metrics
from ingester.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
K8S = REPO / "deploy" / "k8s"
README = REPO / "README.md"
ENV_NAME = re.compile(r"\bINGESTER_[A-Z0-9_]*[A-Z0-9]")
K8S_VERSIONS = ("1.29.0", "1.33.0")  # oldest and newest minor we claim to support
PROMETHEUS_OPERATOR = "monitoring.coreos.com/v1"
PACKAGE_VERSION = version("ingester")


# ---------------------------------------------------------------- helpers


def only_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Exactly these INGESTER_* variables, and no ./ingester.toml."""
    for name in list(os.environ):
        if name.upper().startswith("INGESTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    """Settings exactly as the daemon would build them from this environment (and nothing else)."""
    only_env(env, monkeypatch, tmp_path)
    return Settings()


def ingester_envs(env: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in env.items() if k.upper().startswith("INGESTER_")}


def host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"tcp://{url}")
    assert parsed.hostname and parsed.port, url
    return parsed.hostname, parsed.port


def flags(args: list[str]) -> dict[str, str]:
    """``-a=1``, ``--b=2`` and ``--b 2`` style arguments as a dict (no leading dashes)."""
    found: dict[str, str] = {}
    for i, arg in enumerate(args):
        if arg.startswith("-"):
            key, sep, value = arg.lstrip("-").partition("=")
            if not sep and i + 1 < len(args) and not args[i + 1].startswith("-"):
                value = args[i + 1]
            found[key] = value
    return found


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            env.update((key, value) for key, _, value in (item.partition("=") for item in shlex.split(rest)))
    return env


def k8s_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in yaml.safe_load_all(path.read_text()):
                if doc:
                    yield path, doc


def k8s_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in k8s_docs() if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def section(text: str, heading: str) -> str:
    """The markdown section under ``heading`` up to the next heading of the same or higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    end = re.search(rf"\n#{{1,{len(level)}}} ", text[start + len(heading) + 2:])
    return text[start: start + len(heading) + 2 + end.start()] if end else text[start:]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Schema validation must not need the network (CI has none but PyPI)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access during validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- settings table


def test_env_names_follow_the_model() -> None:
    names = [doc.env for doc in setting_docs()]
    assert len(names) == len(set(names))
    assert {"INGESTER_CATALOG__URI", "INGESTER_SOURCE__KIND", "INGESTER_METRICS__PORT", "INGESTER_CONFIG"} <= set(names)
    assert is_setting_env("ingester_catalog__uri")
    assert is_setting_env("INGESTER_SOURCE__KAFKA_OPTIONS__SECURITY_PROTOCOL")  # key of a JSON object
    assert not is_setting_env("INGESTER_SOURCE__KAFKA_OPTIONS__")
    assert not is_setting_env("INGESTER_CATALOG__URL")
    assert not is_setting_env("INGESTER_CATALOG")  # a section, not a value
    assert {"INGESTER_CATALOG__CREDENTIAL", "INGESTER_CATALOG__TOKEN", "INGESTER_CATALOG__S3_SECRET_ACCESS_KEY"} <= secret_envs()
    assert "INGESTER_CATALOG__URI" not in secret_envs()


def test_every_documented_env_var_is_read_by_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Setting each variable to its documented default is accepted by the model."""
    for doc in setting_docs():
        if doc.env == "INGESTER_CONFIG" or not doc.default.startswith("`"):
            continue
        value = doc.default.split("`")[1]
        settings_from({doc.env: value}, monkeypatch, tmp_path)
    settings = settings_from({"INGESTER_WINDOW__MAX_BATCH_AGE_S": "3.5"}, monkeypatch, tmp_path)
    assert settings.window.max_batch_age_s == 3.5


def test_markdown_table_shape() -> None:
    table = markdown_table()
    lines = table.splitlines()
    assert lines[0] == "| env var | type | default | description |"
    assert len(lines) == 2 + len(setting_docs())
    assert all(line.count(" | ") - line.count("\\|") >= 3 for line in lines[2:])
    row = next(line for line in lines if "`INGESTER_CATALOG__CREDENTIAL`" in line)
    assert "**secret**" in row
    assert "`INGESTER_WINDOW__MAX_BATCH_BYTES` | integer (>= 1) | `536870912` (512 MiB) |" in table


def test_cli_prints_the_table() -> None:
    result = CliRunner().invoke(app, ["settings", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.output == markdown_table()


def test_readme_settings_table_is_the_generated_one() -> None:
    assert table_in(README.read_text()) == markdown_table(), (
        "README settings table is stale: python -m ingester.cli.settings_doc --write README.md"
    )


def test_with_table_replaces_only_between_markers() -> None:
    text = "a\n<!-- settings-table:start -->\nold\n<!-- settings-table:end -->\nb\n"
    assert with_table(text, "new\n") == "a\n<!-- settings-table:start -->\nnew\n<!-- settings-table:end -->\nb\n"
    with pytest.raises(ValueError, match="markers"):
        table_in("no markers")


# ---------------------------------------------------------------- env var names everywhere


@pytest.mark.parametrize(
    "path",
    [COMPOSE, DOCKERFILE, README, REPO / "deploy" / "local-stack", *sorted(K8S.glob("*.yaml"))],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_every_ingester_env_var_mentioned_is_a_setting(path: Path) -> None:
    unknown = sorted({name for name in ENV_NAME.findall(path.read_text()) if not is_setting_env(name)})
    assert not unknown, f"{path.name} names settings that do not exist: {unknown}"


# ---------------------------------------------------------------- docker compose


def test_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"seaweedfs", "tansu", "topics", "ingester", "producer"}
    for name in ("seaweedfs", "tansu", "ingester"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
        assert services[name]["restart"] == "unless-stopped"
    for name in ("topics", "producer"):  # one-shot jobs
        assert services[name]["restart"] == "no" and services[name]["healthcheck"] == {"disable": True}
    for name in ("topics", "ingester", "producer"):
        assert services[name]["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}
        assert services[name]["image"] == f"ingester:{PACKAGE_VERSION}"
        assert (REPO / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]).is_file()
    assert services["ingester"]["command"] == ["run"]
    assert services["producer"]["command"] == ["demo"]
    for name, spec in services.items():
        assert ":" in spec["image"] and not spec["image"].endswith(":latest"), f"{name}: pin the image"
        for dependency, condition in spec.get("depends_on", {}).items():
            assert dependency in services
            expected = "service_completed_successfully" if dependency == "topics" else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)


def test_compose_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    used = {mount.split(":", 1)[0] for spec in compose["services"].values() for mount in spec.get("volumes", [])}
    assert used == declared == {"seaweedfs-data", "ingester-home"}
    assert "ingester-home:/var/lib/ingester" in compose["services"]["ingester"]["volumes"]
    assert dockerfile_env()["INGESTER_HOME"] == "/var/lib/ingester"


@pytest.mark.parametrize("service", ["ingester", "producer"])
def test_compose_ingester_env_is_valid_settings(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = ingester_envs(compose["services"][service]["environment"])
    assert env and all(is_setting_env(name) for name in env)
    settings = settings_from({**dockerfile_env(), **env}, monkeypatch, tmp_path)
    assert settings.source.kind == "kafka" and settings.catalog.type == "rest"
    assert settings.storage.staging and settings.storage.staging.startswith("s3://")
    assert any(f"{settings.storage.staging}/x".startswith(prefix) for prefix in settings.allowed_prefixes)


def test_compose_endpoints_match_the_servers(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    services = compose["services"]
    settings = settings_from(
        {**dockerfile_env(), **ingester_envs(services["ingester"]["environment"])}, monkeypatch, tmp_path
    )
    weed = flags(services["seaweedfs"]["command"])
    assert services["seaweedfs"]["command"][0] == "mini"
    assert host_port(settings.catalog.uri or "") == ("seaweedfs", int(weed["s3.port.iceberg"]))
    assert host_port(settings.catalog.oauth2_server_uri or "") == ("seaweedfs", int(weed["s3.port.iceberg"]))
    assert host_port(settings.catalog.s3_endpoint or "") == ("seaweedfs", int(weed["s3.port"]))
    assert settings.catalog.warehouse == weed["tableBucket"]
    buckets = weed["bucket"].split(",")
    assert urlparse(settings.storage.staging or "").netloc in buckets
    weed_env = services["seaweedfs"]["environment"]
    assert settings.catalog.credential is not None
    assert settings.catalog.credential.get_secret_value() == f"{weed_env['AWS_ACCESS_KEY_ID']}:{weed_env['AWS_SECRET_ACCESS_KEY']}"
    assert settings.catalog.s3_access_key_id and settings.catalog.s3_access_key_id.get_secret_value() == weed_env["AWS_ACCESS_KEY_ID"]

    tansu = services["tansu"]
    broker = flags(tansu["command"])
    assert tansu["command"][0] == "broker"
    assert host_port(settings.source.bootstrap_servers) == host_port(broker["advertised-listener-url"]) == ("tansu", 9092)
    assert host_port(broker["listener-url"])[1] == 9092
    storage = urlparse(broker["storage-engine"])
    assert storage.scheme == "s3" and storage.netloc in buckets
    assert host_port(tansu["environment"]["AWS_ENDPOINT"]) == ("seaweedfs", int(weed["s3.port"]))

    topics_script = services["topics"]["command"][0]
    compile(topics_script, "topics", "exec")
    assert f'"{settings.source.bootstrap_servers}"' in topics_script
    for topic in [*settings.source.topics, settings.deadletter.topic]:
        assert f'"{topic}"' in topics_script

    port = settings.metrics.port
    assert port and settings.metrics.host == "0.0.0.0"
    assert f"{port}:{port}" in services["ingester"]["ports"]
    assert f"127.0.0.1:{port}/healthz" in " ".join(services["ingester"]["healthcheck"]["test"])
    assert services["seaweedfs"]["healthcheck"]["test"][-1].endswith(f":{weed['s3.port.iceberg']}/v1/config")
    assert services["tansu"]["healthcheck"]["test"][-1] == "tcp://127.0.0.1:9092"


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_is_pinned_slim_non_root_with_healthcheck(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    instructions = dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    args = {rest.split("=", 1)[0]: rest.split("=", 1)[1] for k, rest in instructions if k == "ARG" and "=" in rest}
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-[a-z]+", base), base
    assert all(rest.split()[0] == "${PYTHON_IMAGE}" for k, rest in instructions if k == "FROM")
    last_from = len(keywords) - 1 - keywords[::-1].index("FROM")
    users = [rest for k, rest in instructions[last_from:] if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "HEALTHCHECK" in keywords[last_from:]
    assert dict(instructions)["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(dict(instructions)["ENTRYPOINT"]) == ["ingester"]
    assert json.loads(dict(instructions)["CMD"]) == ["run"]
    env = dockerfile_env()
    assert all(is_setting_env(name) for name in ingester_envs(env))
    settings = settings_from(ingester_envs(env), monkeypatch, tmp_path)
    assert dict(instructions)["EXPOSE"] == str(settings.metrics.port)
    probe = json.loads(dict(instructions)["HEALTHCHECK"].split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "/healthz" in probe[2] and "INGESTER_METRICS__PORT" in probe[2]
    compile(probe[2], "healthcheck", "exec")
    assert "--constraint" in next(rest for k, rest in instructions if k == "RUN" and "pip install" in rest)
    for keyword, rest in instructions:  # every COPY source from the context exists
        if keyword == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source


def test_docker_build_context_keeps_what_the_image_needs() -> None:
    ignore = (REPO / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for keyword, rest in dockerfile_instructions()
              if keyword == "COPY" and not rest.startswith("--from") for source in rest.split()[:-1]}
    assert "*" in ignore and copied <= allowed


def test_constraints_pin_every_runtime_dependency() -> None:
    import tomllib

    pins: dict[str, str] = {}
    for line in (REPO / "deploy" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"not pinned: {line}"
            pins[canonicalize_name(name)] = pinned
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dependency in map(Requirement, dependencies):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} missing from deploy/constraints.txt"
        assert dependency.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {dependency}"


# ---------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_k8s_manifests_pass_the_schema(k8s_version: str, no_network: None) -> None:
    import kubernetes_validate  # test dependency: ships the schemas, no network
    docs = [(path, doc) for path, doc in k8s_docs() if doc["apiVersion"] != PROMETHEUS_OPERATOR]  # a CRD: test_monitoring
    assert {doc["kind"] for _, doc in docs} == {
        "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name}: {doc['kind']}: {exc.message}")


def test_schema_validation_catches_mistakes(no_network: None) -> None:
    import kubernetes_validate  # test dependency: ships the schemas, no network
    deployment = k8s_kind("Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 120  # misspelt field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    images = {image["name"]: image for image in kustomization["images"]}
    assert images["ingester"]["newTag"] == PACKAGE_VERSION


def test_k8s_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = k8s_kind("ConfigMap")["data"]
    secret = k8s_kind("Secret")["stringData"]
    assert all(is_setting_env(name) for name in [*config, *secret])
    assert not set(config) & secret_envs(), "secrets belong in the Secret"
    assert set(secret) <= secret_envs(), "only secrets in the Secret"
    settings = settings_from({**dockerfile_env(), **config, **secret}, monkeypatch, tmp_path)
    assert settings.source.kind == "kafka" and settings.catalog.type == "rest"

    pod = k8s_kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {ref.get("configMapRef", ref.get("secretRef"))["name"] for ref in container["envFrom"]} == {
        k8s_kind("ConfigMap")["metadata"]["name"], k8s_kind("Secret")["metadata"]["name"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == settings.metrics.port and settings.metrics.host == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(settings.home) in mounts  # writable home under a read-only root filesystem
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and int(limit[:-2]) * 1024**3 >= 2 * settings.window.max_inflight_bytes
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= 60 and grace > settings.window.max_batch_age_s + settings.commit.retry_max_wait_s
    assert grace >= settings.shutdown_timeout_s + 10  # the daemon exits on its own before the SIGKILL
    image = container["image"]
    assert image == f"ingester:{PACKAGE_VERSION}"


def test_k8s_objects_point_at_each_other() -> None:
    deployment = k8s_kind("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    service = k8s_kind("Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [(p["name"], p["targetPort"]) for p in service["spec"]["ports"]] == [("metrics", "metrics")]
    pdb = k8s_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = k8s_kind("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] in ("Pods", "External")
    lag = Metrics().lag
    assert metric[metric["type"].lower()]["metric"]["name"] == lag._name == "ingester_partition_lag"


# ---------------------------------------------------------------- README operations guide


def exposed_metric_names() -> set[str]:
    names = set()
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            names.add(f"{metric._name}_total" if metric._type == "counter" else metric._name)
    return names | set(Freshness.NAMES)  # computed at each scrape by a collector of its own


def test_readme_lists_every_metric() -> None:
    text = section(README.read_text(), "### Metrics")
    mentioned = set(re.findall(r"`(ingester_[a-z_]+)`", text))
    assert mentioned == exposed_metric_names()


def test_readme_operations_and_deployment_sections() -> None:
    text = README.read_text()
    assert text.index("\n## Operations\n") < text.index("\n## Deployment\n")
    operations = section(text, "## Operations")
    for heading in ("### Settings", "### Metrics", "### Scaling out", "### Replaying dead letters",
                    "### Resetting offsets", "### Upgrading", "### Command line conventions"):
        assert f"\n{heading}\n" in operations
    deployment = section(text, "## Deployment")
    local = section(deployment, "### Local stack without Docker")
    commands = [line for line in re.search(r"```bash\n(.*?)```", local, re.DOTALL)[1].splitlines() if line.strip()]  # type: ignore[index]
    assert len(commands) == 3
    assert commands[0].startswith('eval "$(deploy/local-stack up)"') and commands[1].startswith("ingester run")
    assert commands[2].startswith("deploy/local-stack down")
    assert "docker compose up" in deployment and "kubectl apply -k deploy/k8s" in deployment


def test_readme_exit_codes_match_the_cli() -> None:
    from ingester.cli import commands as cli

    text = section(README.read_text(), "### Command line conventions")
    for code in (0, cli.EXIT_FAILED, cli.EXIT_BAD_CONFIG):
        assert f"\n| {code} |" in text


# ---------------------------------------------------------------- CLI hooks


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Commands replace the root handlers (stderr of the CliRunner): put the old ones back."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_log_format_option(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    only_env({"INGESTER_LOG_FORMAT": "text"}, monkeypatch, tmp_path)  # the option overwrites it; undone after
    result = CliRunner().invoke(app, ["--log-format", "json", "settings"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["log_format"] == "json"
    assert CliRunner().invoke(app, ["--log-format", "xml", "settings"]).exit_code == 2


def test_replay_deadletters_publishes_the_original_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, root_logging: None
) -> None:
    from ingester.deadletter import DeadLetter, FolderDeadLetters
    from ingester.sources.base import Position
    from ingester.sources.spool import SpoolQueue

    home = tmp_path / "home"
    only_env({"INGESTER_HOME": str(home)}, monkeypatch, tmp_path)
    sink = FolderDeadLetters(home / "deadletter")
    sink.write(DeadLetter("location outside the allowed prefixes", b'{"table": "a"}', Position("spool", 1), "a"))
    sink.write(DeadLetter("not JSON", b"garbage", Position("spool", 2)))
    runner = CliRunner()

    dry = runner.invoke(app, ["replay-deadletters", "--dry-run"])
    assert dry.exit_code == 0 and "would replay 2 of 2" in dry.output
    replayed = runner.invoke(app, ["replay-deadletters", "--reason", "allowed prefixes"])
    assert replayed.exit_code == 0, replayed.output
    assert "replayed 1 of 2" in replayed.output
    lines = sink.path.read_text()
    from_stdin = runner.invoke(app, ["replay-deadletters", "-"], input=lines)
    assert from_stdin.exit_code == 0 and "replayed 2 of 2" in from_stdin.output
    queue = SpoolQueue(home / "queue.db")
    try:
        assert [payload for _, payload in queue.read(0, 10)] == [b'{"table": "a"}', b'{"table": "a"}', b"garbage"]
    finally:
        queue.close()

    bad = runner.invoke(app, ["replay-deadletters", "-"], input='{"reason": "x", "payload_b64": "%%%"}\n')
    assert bad.exit_code == 2 and "cannot read dead letters" in bad.output
    missing = runner.invoke(app, ["replay-deadletters", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert base64.b64decode(json.loads(lines.splitlines()[0])["payload_b64"]) == b'{"table": "a"}'
