"""The worker starts as its containers start it (issue 23), without a container runtime: as PID 1
of a new PID namespace (``unshare --pid``), as the images' unprivileged uid with a home it cannot
create, with its device from ``DNNPROF_WORKER_DEVICE``; and where it cannot measure it exits
non-zero, saying why, instead of starting (or exiting 0) and failing every job."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import pytest

from dnnprof.contract import WorkerInfo
from dnnprof.store import ProfileStore
from tests.helpers import ROOT, free_port, throwaway_redis, until, wait_for

#: The images' user (Dockerfile, Dockerfile.l4t: useradd --uid 10001 --no-create-home).
IMAGE_UID = 10001
NO_HOME = "/nonexistent/dnnprof"
#: A new PID namespace whose first process (PID 1) is the command; killed with unshare.
PID_NAMESPACE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")),
    reason="needs root with unshare and setpriv (util-linux), as in CI",
)


def as_image_user() -> list[str]:
    """Run as uid/gid 10001 with no supplementary groups. CAP_DAC_READ_SEARCH lets it read this
    checkout's interpreter (a venv of a Python under /root); writing stays as for any user."""
    return [
        "setpriv",
        f"--reuid={IMAGE_UID}",
        f"--regid={IMAGE_UID}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
    ]


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DNNPROF_", "XDG_"))}
    env.update(HOME=NO_HOME, PYTHONUNBUFFERED="1", DNNPROF_HEARTBEAT_S="2", **extra)
    return env


def owned_dir() -> Path:
    """A directory the image user owns, as the images' /data volume is."""
    path = Path(tempfile.mkdtemp(prefix="dnnprof-uid-"))
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@needs_root
def test_a_child_of_pid_1_is_not_an_orphan():
    """The pool process of a worker that is PID 1 sees getppid() == 1 from its first instruction:
    it must live, and one whose real parent is gone must still exit."""
    script = textwrap.dedent(
        """
        import os, sys
        from dnnprof.process import die_with_parent
        assert os.getpid() == 1, os.getpid()
        parent = os.getpid()
        child = os.fork()
        if child == 0:
            die_with_parent(parent)
            os._exit(0)
        _, status = os.waitpid(child, 0)
        lived = os.waitstatus_to_exitcode(status)
        child = os.fork()
        if child == 0:
            die_with_parent(parent + 1000)  # recorded a parent that is not ours: it died before us
            os._exit(0)
        _, status = os.waitpid(child, 0)
        print(lived, os.waitstatus_to_exitcode(status))
        """
    )
    out = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


@pytest.mark.slow
@needs_root
def test_worker_as_pid_1_and_the_image_user_without_a_home_measures_a_job(tmp_path):
    """As in a container: the worker is PID 1, runs as uid 10001 whose HOME does not exist, its
    data directory a volume it owns, its device from DNNPROF_WORKER_DEVICE (no --device, as the
    image's CMD); the API as the same user with the same HOME. A job is measured end to end."""
    api_port = free_port()
    redis, url = throwaway_redis(tmp_path)
    worker_data, api_data = owned_dir(), owned_dir()
    env = base_env(DNNPROF_REDIS_URL=url, DNNPROF_RATE_LIMIT_PER_MINUTE="0")
    worker = start(
        [*PID_NAMESPACE, *as_image_user(), sys.executable, "-m", "dnnprof.cli", "worker"],
        {
            **env,
            "DNNPROF_WORKER_DEVICE": "cpu",
            "DNNPROF_DATA_DIR": str(worker_data),
            "DNNPROF_WORKER_METRICS_PORT": "0",
        },
        tmp_path / "worker.log",
    )
    api = start(
        [*as_image_user(), sys.executable, "-m", "dnnprof.cli", "api", "--port", str(api_port)],
        {**env, "DNNPROF_DATA_DIR": str(api_data)},
        tmp_path / "api.log",
    )
    logs = lambda: "\n".join(  # noqa: E731
        f"--- {n}:\n" + (tmp_path / n).read_text(errors="replace") for n in ("worker.log", "api.log")
    )
    try:
        info = live_cpu_worker(ProfileStore.from_url(url), worker, logs)
        assert info.pid == 1  # the worker's main process is PID 1 of its namespace
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            measure_a_job(client, logs)
            figure = client.get("/v1/figures/density.png?device=cpu")
            assert figure.status_code == 200 and figure.content[:4] == b"\x89PNG", figure.text[:300]
        assert worker.poll() is None and api.poll() is None, logs()
        assert "Traceback" not in logs(), logs()
        assert any(p.name.startswith("run") for p in worker_data.iterdir())  # it wrote where it was told
    finally:
        for process in (worker, api, redis):
            stop(process)
        shutil.rmtree(worker_data, ignore_errors=True)
        shutil.rmtree(api_data, ignore_errors=True)


def live_cpu_worker(store: ProfileStore, worker: subprocess.Popen, logs) -> WorkerInfo:
    """The one CPU worker registered in ``store``, once it is (failing with ``logs()`` if the
    worker process exits first)."""

    def registered():
        assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{logs()}"
        return [w for w in store.workers() if w.device_class == "cpu"]

    (info,) = until(registered, ceiling_s=600, what="the worker live")
    return info


def measure_a_job(client: httpx.Client, logs) -> dict:
    """A small profile through the API once it is ready, required to succeed."""
    until(lambda: _ok(client, "/readyz"), ceiling_s=300, what="the API ready")
    job = client.post(
        "/v1/profiles", json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
    )
    assert job.status_code == 202, job.text
    done = wait_for(client, job.json()["id"], timeout=900)
    assert done["status"] == "succeeded", f"{done['error']}\n{logs()}"
    return done


def _ok(client: httpx.Client, path: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return client.get(path).status_code == 200
    return False


@needs_root
@pytest.mark.parametrize(
    "command",
    [
        ["-m", "dnnprof.cli", "worker", "--device", "cpu"],
        ["-m", "celery", "-A", "workers.celery_app", "worker"],
    ],
    ids=["dnnprof worker", "plain celery"],
)
def test_worker_without_a_writable_data_directory_refuses_to_start(command):
    """The images' user, no home, no DNNPROF_DATA_DIR: the default under ~ cannot be created."""
    out = subprocess.run(
        [*as_image_user(), sys.executable, *command],
        cwd=ROOT,
        env=base_env(DNNPROF_REDIS_URL="redis://127.0.0.1:1/0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0, out.stdout + out.stderr
    assert (
        f"the data directory {NO_HOME}/.local/share/dnnprof is not writable by uid {IMAGE_UID}" in out.stderr
    )
    assert "DNNPROF_DATA_DIR" in out.stderr


@pytest.mark.slow  # a worker and an API
def test_a_plain_celery_worker_takes_its_device_from_the_environment_and_measures(tmp_path):
    """The README's other way to start a worker: `celery -A workers.celery_app worker`, nothing
    but DNNPROF_WORKER_DEVICE. It must consume what the API sends its device (the class's queue
    and its own target's, where a request naming the class is routed to a live target) one
    measurement at a time, as `dnnprof worker` does."""
    from dnnprof.config import Settings
    from dnnprof.queue import make_celery, queue_for

    api_port = free_port()
    redis, url = throwaway_redis(tmp_path)
    env = {
        **base_env(DNNPROF_REDIS_URL=url, DNNPROF_RATE_LIMIT_PER_MINUTE="0", DNNPROF_QUIET_WAIT_S="5"),
        "HOME": str(tmp_path),
    }
    worker = start(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "--loglevel", "info"],
        {**env, "DNNPROF_WORKER_DEVICE": "cpu", "DNNPROF_DATA_DIR": str(tmp_path / "worker"),
         "DNNPROF_WORKER_METRICS_PORT": "0"},
        tmp_path / "worker.log",
    )
    api = start(
        [sys.executable, "-m", "dnnprof.cli", "api", "--port", str(api_port)],
        {**env, "DNNPROF_DATA_DIR": str(tmp_path / "api")},
        tmp_path / "api.log",
    )
    log = lambda: (tmp_path / "worker.log").read_text(errors="replace")  # noqa: E731
    try:
        info = live_cpu_worker(ProfileStore.from_url(url), worker, log)
        # One worker on this Redis: a reply from it ends each call (else each waits its timeout).
        control = make_celery(Settings(redis_url=url)).control.inspect(timeout=10, limit=1)
        (stats,) = until(lambda: (control.stats() or {}).values(), 120, "the worker's stats")
        assert stats["pool"]["max-concurrency"] == 1
        (queues,) = control.active_queues().values()
        assert {q["name"] for q in queues} == {queue_for("cpu"), queue_for(info.device_target)}
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as client:
            done = measure_a_job(client, log)
            assert done["result"]["fingerprint"]["device_target"] == info.device_target
    finally:
        for process in (worker, api, redis):
            stop(process)


def test_a_cuda_worker_without_a_gpu_refuses_to_start(tmp_path):
    """DNNPROF_WORKER_DEVICE=cuda (the variable, with no --device, as the images set it) on a host
    whose torch sees no CUDA device: a start error naming what to check, not a `cuda/<cpu>` target."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(
        DNNPROF_REDIS_URL="redis://127.0.0.1:1/0",
        DNNPROF_WORKER_DEVICE="cuda",
        DNNPROF_DATA_DIR=str(tmp_path),
    )
    out = subprocess.run(
        [sys.executable, "-m", "dnnprof.cli", "worker"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--device cuda, but torch" in out.stderr and "sees no CUDA device" in out.stderr
    assert "--gpus" in out.stderr and "NVIDIA_VISIBLE_DEVICES" in out.stderr


@pytest.mark.slow
def test_a_worker_whose_pool_cannot_start_exits_non_zero(tmp_path):
    """Celery's "Unrecoverable error" (its pool process died at start, as it did under PID 1) must
    reach the exit status: `restart: unless-stopped` and Kubernetes read a 0 as a clean stop.
    The pool process is made to die from outside the product, by a sitecustomize module."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(
        "import os\n"
        "from celery import signals\n"
        "signals.worker_process_init.connect(lambda **_: os._exit(1), weak=False)\n"
    )
    redis, url = throwaway_redis(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(
        DNNPROF_REDIS_URL=url,
        DNNPROF_DATA_DIR=str(tmp_path / "data"),
        DNNPROF_WORKER_METRICS_PORT="0",
        PYTHONPATH=str(tmp_path / "inject"),
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop(redis)
    assert "Unrecoverable error" in out.stdout + out.stderr, out.stdout + out.stderr
    assert out.returncode != 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("driver_cuda", "torch_cuda", "too_old"),
    [
        (12060, "13.0", True),  # a CUDA 12.6 driver (560.x) cannot run torch's CUDA 13 runtime
        (12090, "13.2", True),
        (13000, "13.2", False),  # minor version compatibility: any 13.x runtime on a 13.0 driver
        (13020, "13.0", False),
        (12020, "12.8", False),
        (None, "13.0", False),  # no NVML (a Jetson): nothing to compare
        (12060, None, False),  # a CPU build of torch
    ],
)
def test_a_driver_older_than_torchs_cuda_line_is_named_with_the_minimum(driver_cuda, torch_cuda, too_old):
    """Figures from NVIDIA's CUDA Toolkit release notes (minor version compatibility: CUDA 12.x
    needs a driver >= 525.60.13, 13.x >= 580)."""
    from workers.preflight import driver_too_old

    why = driver_too_old(driver_cuda, torch_cuda, "560.35.03")
    assert (why is not None) == too_old, why
    if too_old:
        assert "580" in why and f"CUDA {torch_cuda}" in why and "560.35.03" in why


@needs_root
def test_worker_whose_spool_is_not_writable_refuses_to_start():
    """A data directory the user owns, but a spool/ it cannot write (left by another user): a
    measurement finished while Redis is away would be lost, so the worker does not start."""
    data = owned_dir()
    try:
        (data / "spool").mkdir(mode=0o755)  # root's
        out = subprocess.run(
            [*as_image_user(), sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"],
            cwd=ROOT,
            env=base_env(DNNPROF_REDIS_URL="redis://127.0.0.1:1/0", DNNPROF_DATA_DIR=str(data)),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"the data directory {data} is not writable" in out.stderr and f"{data}/spool" in out.stderr
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_spooled_outcomes_are_private_to_the_worker(tmp_path):
    """docs/security.md: data kept for the worker is its own (folders 0700, files 0600)."""
    from dnnprof.config import Settings
    from workers.records import JobEnding, JobRecords

    records = JobRecords(None, dataclasses.replace(Settings(), data_dir=tmp_path / "data"))
    path = records.spool(JobEnding(profile_id="p1", status="failed", error="x"))
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
