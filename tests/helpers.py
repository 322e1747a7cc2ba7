"""Starting and stopping the real service for tests: `dnnprof serve` as a user runs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
#: ``shared/reference`` beside the checkout (the paper's tables, timm's results), or DNNPROF_REFERENCE_DIR.
SHARED_REFERENCE = Path(os.environ.get("DNNPROF_REFERENCE_DIR") or ROOT.parent / "shared" / "reference")
#: The reference tables: shared/reference where the checkout has it, else the copies the package
#: ships (the same files; a clean clone has no shared/).
REFERENCE = SHARED_REFERENCE if SHARED_REFERENCE.is_dir() else ROOT / "dnnprof" / "data"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    process: subprocess.Popen
    base_url: str
    data_dir: Path
    log_path: Path
    worker_metrics_port: int = 0

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def redis_url(self) -> str:
        """The embedded Redis this `dnnprof serve` started (it says where in its log)."""
        return re.search(r"embedded Redis at (\S+)", self.log()).group(1)

    def publish_catalogue(self) -> None:
        """What a worker does when it starts, for a service started with no worker."""
        publish_catalogue(self.redis_url())

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; everything it started must go with it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def publish_catalogue(redis_url: str) -> None:
    """Publish the model catalogue into the Redis at ``redis_url``, as a worker does at start."""
    subprocess.run(
        [sys.executable, "-m", "workers.catalogue"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env={**os.environ, "DNNPROF_REDIS_URL": redis_url},
    )


def dnnprof_env(**extra: str) -> dict[str, str]:
    """This environment without any DNNPROF_* setting of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(extra)
    return env


def run_dnnprof(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m dnnprof.cli *args`` from the checkout, its output captured as text."""
    command = [sys.executable, "-m", "dnnprof.cli", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def worker_pids(serve_pid: int) -> list[int]:
    """The `dnnprof worker` processes a `dnnprof serve` started."""
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(serve_pid)], capture_output=True, text=True
    )
    return [int(line.split()[0]) for line in out.stdout.splitlines() if "dnnprof.cli worker" in line]


def start_service(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    device: str = "cpu",
    ready_timeout: float = 600.0,  # only a hang: a loaded host starts slowly
    wait_for_worker: bool = True,
) -> Service:
    port = free_port()
    log_path = data_dir / f"serve-{port}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    metrics_port = free_port()
    full_env = dnnprof_env(
        **{
            "DNNPROF_WORKER_METRICS_PORT": str(metrics_port),
            "DNNPROF_DATA_DIR": str(data_dir),
            "DNNPROF_PORT": str(port),
            "DNNPROF_HEARTBEAT_S": "2",
            # A short wait for a quiet host (the default's 30 s per batch size): tests share it.
            "DNNPROF_QUIET_WAIT_S": "5",
            "DNNPROF_RATE_LIMIT_PER_MINUTE": "100000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dnnprof.cli", "serve", "--device", device],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    service = Service(process, f"http://127.0.0.1:{port}", data_dir, log_path, metrics_port)
    deadline = time.monotonic() + ready_timeout
    path = "/readyz" if wait_for_worker else "/healthz"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dnnprof serve exited with {process.returncode}:\n{service.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.base_url + path, timeout=2).status_code == 200:
                return service
        time.sleep(0.5)
    service.stop()
    raise RuntimeError(f"dnnprof serve not ready after {ready_timeout}s:\n{service.log()}")


def until(predicate, ceiling_s: float = 300.0, what: str = "the state"):
    """Wait on a state (the predicate's truthy value is returned), with a generous ceiling."""
    deadline = time.monotonic() + ceiling_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached within {ceiling_s:.0f} s"
        time.sleep(0.2)


def wait_for(
    client: httpx.Client,
    profile_id: str,
    statuses=("succeeded", "failed", "cancelled"),
    timeout: float = 600.0,
) -> dict:
    """Wait on the job's status. ``timeout`` counts only time in which the record did not change
    (status, progress, attempts, worker): a job that moves on a busy host is waited for, one
    that hangs is reported."""
    body: dict = {}
    seen, changed_at = None, time.monotonic()
    while True:
        response = client.get(f"/v1/profiles/{profile_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        state = (body["status"], body.get("progress"), body.get("attempts"), body.get("worker"))
        if state != seen:
            seen, changed_at = state, time.monotonic()
        stalled = time.monotonic() - changed_at
        if stalled > timeout:
            raise AssertionError(f"profile {profile_id} unchanged for {stalled:.0f} s: {body}")
        time.sleep(0.3)


def throwaway_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    """A Redis of its own for one test (no persistence), on a free loopback port, answering when
    this returns: (the server, its URL). Stop it with ``os.killpg(server.pid, SIGKILL)``."""
    import redis

    from dnnprof.embedded import redis_server_binary

    port = free_port()
    server = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=2)

    def answers() -> bool:
        assert server.poll() is None, f"redis-server exited ({server.returncode})"
        with contextlib.suppress(redis.exceptions.ConnectionError):
            return bool(client.ping())
        return False

    until(answers, ceiling_s=60, what="redis-server answering")
    return server, url


def measuring_processes(accept) -> list[str]:
    """The profiles (the first 12 characters of their ids) that measuring processes on this host
    measure now, of those whose /proc folder ``accept`` takes (``accept(proc_dir, session)``). A
    runner is known by its name, ``dm-<id>`` (dnnprof.process.measuring_name: one forked from the
    template shows the template's command line), or by ``python -m workers.runner <id>`` before it
    names itself. A runner's own fork before its exec (importing torch runs ``ldconfig -p``) shows
    the runner's name for a moment: it is not a second measurement, and is left out."""
    runners: dict[int, tuple[int, str]] = {}  # pid -> (parent pid, profile id's first 12)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            comm = (proc / "comm").read_text().strip()
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if comm.startswith("dm-"):
                profile = comm[3:]
            elif b"workers.runner" in args and args.index(b"workers.runner") + 1 < len(args):
                profile = args[args.index(b"workers.runner") + 1].decode()[:12]
            else:
                continue
            fields = (proc / "stat").read_text().rpartition(")")[2].split()
            if not accept(proc, int(fields[3])):
                continue
            runners[int(proc.name)] = (int(fields[1]), profile)
        except (OSError, ValueError, IndexError):
            continue  # ended while we looked
    return [profile for parent, profile in runners.values() if parent not in runners]
