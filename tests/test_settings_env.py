"""The README's configuration table, read from the environment by the processes a user starts
(issue 26): each variable seen where it acts, a bad value a non-zero exit naming the variable."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.helpers import ROOT, dnnprof_env, free_port, run_dnnprof, throwaway_redis, until, worker_pids


def test_the_hard_time_limit_sets_the_workers_limits_and_the_visibility_timeout():
    """DNNPROF_TASK_TIME_LIMIT as the worker's Celery app reads it: Redis redelivers a task still
    unacknowledged after the visibility timeout, so it must stay above the hard limit, in the
    broker's options and the result backend's (the README: the hard limit + 600 s)."""
    code = textwrap.dedent(
        """
        import json
        from workers.celery_app import app
        c = app.conf
        print(json.dumps([c.task_soft_time_limit, c.task_time_limit,
                          c.broker_transport_options, c.result_backend_transport_options]))
        """
    )
    env = dnnprof_env(
        DNNPROF_REDIS_URL="redis://127.0.0.1:1/0",  # never reached: building the app connects nowhere
        DNNPROF_TASK_SOFT_TIME_LIMIT="800",
        DNNPROF_TASK_TIME_LIMIT="900",
        DNNPROF_WORKER_DEVICE="cpu",
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    soft, hard, broker, backend = json.loads(out.stdout.strip().splitlines()[-1])
    assert (soft, hard) == (800, 900)
    assert broker["visibility_timeout"] == backend["visibility_timeout"] == 900 + 600


@pytest.mark.parametrize(
    ("command", "env", "says"),
    [
        (
            ["worker", "--device", "cpu"],
            {"DNNPROF_TASK_TIME_LIMIT": "60", "DNNPROF_TASK_SOFT_TIME_LIMIT": "90"},
            "DNNPROF_TASK_TIME_LIMIT must be above DNNPROF_TASK_SOFT_TIME_LIMIT",
        ),
        (["api"], {"DNNPROF_PORT": "eighty"}, "DNNPROF_PORT must be an integer, got 'eighty'"),
        (
            ["worker", "--device", "cpu"],
            {"DNNPROF_MEASURE_START": "vfork"},
            "DNNPROF_MEASURE_START must be one of template, fresh, got 'vfork'",
        ),
        (
            ["serve", "--device", "none"],
            {"DNNPROF_MAX_REQUEST_COST_GB": "lots"},
            "DNNPROF_MAX_REQUEST_COST_GB must be a number, got 'lots'",
        ),
    ],
)
def test_a_bad_value_stops_the_process_naming_the_variable(command, env, says, tmp_path):
    env = dnnprof_env(DNNPROF_REDIS_URL="redis://127.0.0.1:1/0", DNNPROF_DATA_DIR=str(tmp_path), **env)
    out = run_dnnprof(*command, env=env, timeout=300)
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert says in out.stderr
    assert "Traceback" not in out.stderr  # said, not crashed


@pytest.mark.slow  # starts two API processes
def test_the_api_listens_where_dnnprof_host_and_the_flags_say(tmp_path):
    """DNNPROF_HOST/DNNPROF_PORT, and --host/--port over them: answered there, refused on the
    default 127.0.0.1 at that port (127.0.0.2 and .3 are loopback addresses of their own).
    DNNPROF_ACCESS_LOG=0 (the second API): no line per request; by default, one."""
    server, url = throwaway_redis(tmp_path)
    apis, logs = [], [tmp_path / "api-env.log", tmp_path / "api-flags.log"]
    try:
        by_env, by_flag = free_port(), free_port()
        env = dnnprof_env(DNNPROF_REDIS_URL=url, DNNPROF_DATA_DIR=str(tmp_path), DNNPROF_HOST="127.0.0.2")
        env["DNNPROF_PORT"] = str(by_env)
        cli = [sys.executable, "-m", "dnnprof.cli", "api"]
        flags = ["--host", "127.0.0.3", "--port", str(by_flag)]
        for args, extra, log in ((cli, {}, logs[0]), (cli + flags, {"DNNPROF_ACCESS_LOG": "0"}, logs[1])):
            with open(log, "wb") as out:
                apis.append(
                    subprocess.Popen(
                        args, cwd=ROOT, env={**env, **extra}, stdout=out, stderr=out, start_new_session=True
                    )
                )
        for host, port in (("127.0.0.2", by_env), ("127.0.0.3", by_flag)):
            until(
                lambda h=host, p=port: _answers(f"http://{h}:{p}/healthz"), 300, f"the API on {host}:{port}"
            )
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            assert httpx.get(f"http://{host}:{port}/v1/devices", timeout=5).status_code == 200
        until(lambda: '"GET /v1/devices HTTP/1.1" 200' in logs[0].read_text(), 60, "the access log line")
        quiet = logs[1].read_text()
        assert "Uvicorn running on" in quiet and "GET /" not in quiet, quiet
    finally:
        for api in apis:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()
        os.killpg(server.pid, signal.SIGKILL)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.slow  # a service of its own, with the worker's caches and validation set
def test_a_real_worker_reads_its_weights_cache_offline_and_its_validation_set(tmp_path):
    """DNNPROF_WEIGHTS_DIR (torch hub's cache), DNNPROF_WEIGHTS_OFFLINE, DNNPROF_IMAGENET_VAL and
    DNNPROF_IMAGENET_VAL_LABELS read from the environment by the worker `dnnprof serve` starts (the
    engine's own tests set its config directly). The cached "pretrained" file holds weights made
    here, and six labels are what those weights predict through torchvision's own transform of
    the weights, so a worker that reads all four measures the top-1 computed here (>= 6 of 7);
    a model whose file is not cached fails offline, naming the setting."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from torchvision.models import SqueezeNet1_1_Weights

    from tests.helpers import start_service, wait_for

    weights = SqueezeNet1_1_Weights.IMAGENET1K_V1
    checkpoints = tmp_path / "weights" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.manual_seed(0)
    model = torchvision.models.squeezenet1_1().eval()
    torch.save(model.state_dict(), checkpoints / weights.url.rsplit("/", 1)[1])
    val, labels = tmp_path / "val", tmp_path / "elsewhere" / "my-labels.txt"
    val.mkdir()
    labels.parent.mkdir()
    rng, lines, transform = np.random.default_rng(0), [], weights.transforms()
    top1 = top5 = 0
    for i in range(7):
        image = Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8))
        name = f"ILSVRC2012_val_{i + 1:08d}.png"
        image.save(val / name)
        with torch.inference_mode():
            ranked = model(transform(image)[None])[0].topk(5).indices.tolist()
        # Six labelled with what the weights predict; the last with class 999, so the set spans
        # ImageNet's 1,000 classes (a flat set's classes run to its largest label).
        label = ranked[0] if i < 6 else 999
        top1, top5 = top1 + (label == ranked[0]), top5 + (label in ranked)
        lines.append(f"{name} {label}")
    labels.write_text("\n".join(lines) + "\n")

    env = {
        "DNNPROF_WEIGHTS_DIR": str(tmp_path / "weights"),
        "DNNPROF_WEIGHTS_OFFLINE": "1",
        "DNNPROF_IMAGENET_VAL": str(val),
        "DNNPROF_IMAGENET_VAL_LABELS": str(labels),
    }
    service = start_service(tmp_path / "service", env=env)
    try:
        with httpx.Client(base_url=service.base_url, timeout=60) as client:
            body = {"batch_sizes": [1], "runs": 2, "repeats": 1, "accuracy": True}
            cached = client.post("/v1/profiles", json={"model": "squeezenet1_1", **body}).json()
            missing = client.post("/v1/profiles", json={"model": "mobilenet_v3_small", **body}).json()
            done = wait_for(client, cached["id"])
            assert done["status"] == "succeeded", done.get("error")
            result = done["result"]
            assert result["weights"] == "pretrained" and result["accuracy_images"] == 7
            assert result["top1"] == pytest.approx(100 * top1 / 7) and top1 >= 6
            assert result["top5"] == pytest.approx(100 * top5 / 7)
            failed = wait_for(client, missing["id"])
            assert failed["status"] == "failed" and "DNNPROF_WEIGHTS_OFFLINE" in failed["error"]
    finally:
        service.stop()


@pytest.mark.slow  # an API of its own
def test_zero_turns_the_rate_limit_and_the_failed_authentication_limit_off(tmp_path):
    """DNNPROF_RATE_LIMIT_PER_MINUTE=0 and DNNPROF_AUTH_FAILURES_PER_MINUTE=0 mean no limit (the
    README): more requests than the default 1,200 a minute all answered, and more wrong keys than
    the default 10 all a 401, never a 429. '0 allowed' would refuse the first; a zero read as
    'unset' would fall back to the defaults and refuse past them."""
    from tests.helpers import start_service

    env = {
        "DNNPROF_RATE_LIMIT_PER_MINUTE": "0",
        "DNNPROF_AUTH_FAILURES_PER_MINUTE": "0",
        "DNNPROF_API_KEYS": "the-key",
    }
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    try:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            codes = [client.get("/v1/devices").status_code for _ in range(1300)]
            assert codes == [200] * 1300
            body = {"model": "resnet18", "batch_sizes": [1]}
            wrong = [
                client.post("/v1/profiles", json=body, headers={"X-API-Key": f"guess-{i}"}).status_code
                for i in range(15)
            ]
            assert wrong == [401] * 15
    finally:
        api.stop()


@pytest.mark.slow  # an API of its own
def test_parquet_is_a_404_saying_so_where_the_api_has_no_pyarrow(tmp_path):
    """The README: Parquet where the API has pyarrow, else a 404 saying so (CSV and JSON go on).
    The API's interpreter is made one without pyarrow the way Python blocks an import
    (``sys.modules['pyarrow'] = None``, from a sitecustomize on its PYTHONPATH)."""
    from tests.helpers import start_service

    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text("import sys\n\nsys.modules['pyarrow'] = None  # not installed\n")
    env = {"PYTHONPATH": str(inject)}
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    try:
        with httpx.Client(base_url=api.base_url, timeout=60) as client:
            refused = client.get("/v1/export.parquet")
            assert refused.status_code == 404 and "pip install pyarrow" in refused.text, refused.text
            assert client.get("/v1/export.csv").status_code == 200
            assert client.get("/v1/export.json").status_code == 200
    finally:
        api.stop()


@pytest.fixture(scope="module")
def auto_keyed(tmp_path_factory):
    """One `dnnprof serve --device auto` for the settings read where it starts: writes keyed
    (DNNPROF_API_KEYS), its worker's own /metrics off (DNNPROF_WORKER_METRICS_PORT=0)."""
    from tests.helpers import start_service

    env = {"DNNPROF_API_KEYS": "the-key", "DNNPROF_WORKER_METRICS_PORT": "0"}
    svc = start_service(tmp_path_factory.mktemp("auto"), device="auto", env=env)
    yield svc
    svc.stop()


@pytest.mark.slow  # a service of its own (its worker publishes the catalogue)
def test_the_cli_sends_dnnprof_api_key(auto_keyed):
    """DNNPROF_API_KEY is the CLI's key (README): without it a write to a keyed API is refused
    (exit 1, the API's 401 said), with it the job is accepted and can be deleted."""
    api = auto_keyed

    def cli(*args: str, key: str | None = None) -> subprocess.CompletedProcess:
        env = dnnprof_env(DNNPROF_URL=api.base_url, **({"DNNPROF_API_KEY": key} if key else {}))
        return run_dnnprof(*args, env=env, timeout=300)

    submit = ("profile", "resnet18", "--device", "jetson", "--batch-sizes", "1", "--json")
    refused = cli(*submit)
    assert refused.returncode == 1 and "401" in refused.stderr, refused.stderr
    accepted = cli(*submit, key="the-key")
    assert accepted.returncode == 0, accepted.stderr
    job = json.loads(accepted.stdout)
    assert job["status"] == "queued"
    with httpx.Client(base_url=api.base_url, timeout=60) as client:
        assert client.get(f"/v1/profiles/{job['id']}").json()["settings"]["device"] == "jetson"
        assert client.delete(f"/v1/profiles/{job['id']}", headers={"X-API-Key": "the-key"}).status_code == 200


def one_worker(service) -> int:
    [pid] = worker_pids(service.process.pid)
    return pid


def _listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports a process listens on: its sockets (/proc/<pid>/fd) that /proc/net/tcp{,6}
    lists in state LISTEN (0A)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.mark.slow  # a service of its own, and the session's
def test_worker_metrics_port_zero_listens_nowhere(auto_keyed, service):
    """DNNPROF_WORKER_METRICS_PORT=0 turns the worker's own /metrics off (README): its worker
    listens on no TCP port at all, where the session's worker listens on the port it was given."""
    assert service.worker_metrics_port in _listening_tcp_ports(one_worker(service))  # it can see one
    assert _listening_tcp_ports(one_worker(auto_keyed)) == set()


@pytest.mark.slow  # a service of its own
def test_serve_with_device_auto_starts_the_worker_this_machine_has(auto_keyed):
    """`dnnprof serve --device auto` (the default): the worker's class is the one detected here,
    a CPU where torch sees no CUDA device and no Jetson release file exists (workers/devices.py),
    and it serves its target live."""
    import torch

    from workers.devices import TEGRA_RELEASE

    expected = "cuda" if torch.cuda.is_available() else "jetson" if TEGRA_RELEASE.exists() else "cpu"
    with httpx.Client(base_url=auto_keyed.base_url, timeout=60) as client:
        live = [d for d in client.get("/v1/devices").json() if d["status"] == "live"]
        assert [d["device_class"] for d in live] == [expected], live
