"""The ``dnnprof`` command.

- ``dnnprof serve``   the whole service. Without ``DNNPROF_REDIS_URL``: an embedded Redis (data in
  ``DNNPROF_DATA_DIR``), one Celery worker for the best local device, and the API. With it: the API
  only, workers being started elsewhere. Ctrl-C stops what it started.
- ``dnnprof api``     the API alone (needs ``DNNPROF_REDIS_URL``); ``--workers N`` for N processes.
- ``dnnprof worker``  a Celery worker for one device class (needs ``DNNPROF_REDIS_URL``).
- ``dnnprof doctor``  what a worker would detect and use here, and whether it would start.
- ``dnnprof profile MODEL [--wait]``, ``dnnprof ls``, ``dnnprof show ID``: the client of a running
  service (``DNNPROF_URL``; see :mod:`dnnprof.client`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from dnnprof import client
from dnnprof.config import Settings, SettingsError
from dnnprof.contract import DEVICE_CLASSES
from dnnprof.embedded import EmbeddedRedis, RedisSupervisor
from dnnprof.process import DataDirInUseError, DataDirLock, dies_with_this_process


def _run_api(settings: Settings, workers: int = 1) -> None:
    """The API in this process, or in ``workers`` uvicorn processes (each stateless: every one
    reads and writes the same Redis, and builds its app from the environment)."""
    try:
        import uvicorn

        from service.app import create_app
    except ImportError as exc:  # a worker's install: the API's libraries are an extra
        missing = f"the API's libraries are not installed ({exc.name})"
        raise SettingsError(f"{missing}: pip install 'dnnprof[api]'") from exc

    print(f"dnnprof: API on http://{settings.host}:{settings.port} (OpenAPI: /schema)", flush=True)
    # uvicorn believes X-Forwarded-For from 127.0.0.1 unless told otherwise: only from the proxies
    # named in DNNPROF_TRUSTED_PROXIES, and without any, from no one.
    trusted = list(settings.trusted_proxies)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            stack.enter_context(_metrics_shared_by_processes(settings))
        uvicorn.run(
            create_app(settings) if workers == 1 else "service.app:create_app",
            factory=workers > 1,
            workers=workers,
            host=settings.host,
            port=settings.port,
            log_level="info",
            access_log=settings.access_log,
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
        )


@contextlib.contextmanager
def _metrics_shared_by_processes(settings: Settings):
    """A scrape reaches one of uvicorn's worker processes: in prometheus_client's multiprocess
    mode (a folder of per-process files, which the workers inherit through the environment) it
    counts the requests of all of them. A folder set by the user is kept; ours is removed."""
    import tempfile

    from service.metrics import MULTIPROCESS_METRICS_ENV

    if os.environ.get(MULTIPROCESS_METRICS_ENV):
        yield
        return

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="api-metrics-", dir=settings.data_dir) as folder:
        os.environ[MULTIPROCESS_METRICS_ENV] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_METRICS_ENV]


def _stop_worker(worker: subprocess.Popen) -> None:
    """Cold shutdown (SIGQUIT): a job in progress is not waited for; its unacknowledged message
    goes back to the queue and is measured again on the next start."""
    if worker.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGQUIT)
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


class WorkerSupervisor(threading.Thread):
    """Keeps the embedded worker running: one that dies (killed, crashed) is started again, with a
    back-off; its job goes back to the queue (see the worker's heartbeat sweep)."""

    def __init__(self, device: str) -> None:
        super().__init__(name="dnnprof-worker-supervisor", daemon=True)
        self.device = device
        self.stopping = threading.Event()
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def _spawn(self) -> subprocess.Popen:
        # Its own session: the terminal's Ctrl-C reaches only us, and we stop it in order.
        return subprocess.Popen(
            [sys.executable, "-m", "dnnprof.cli", "worker", "--device", self.device],
            env=dict(os.environ),
            start_new_session=True,
            preexec_fn=dies_with_this_process(),  # a SIGKILL of serve takes the worker (and its children) too
        )

    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            self.process = self._spawn()
            started = time.monotonic()
            code = self.process.wait()
            if self.stopping.is_set():
                return
            # Kill what the dead worker left in its session (pool processes, a measuring child).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            # A worker that lived a while is not crash-looping: come back at once; otherwise back off.
            backoff = 1.0 if time.monotonic() - started > 10 else min(backoff * 2, 30.0)
            self.restarts += 1
            print(
                f"dnnprof: worker exited ({code}); restarting in {backoff:.0f} s", file=sys.stderr, flush=True
            )
            self.stopping.wait(backoff)

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None:
            _stop_worker(self.process)
        self.join(timeout=30)


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with --host/--port given on the command line on top."""
    settings = Settings.from_env()
    if args.host:
        settings = _replace(settings, host=args.host)
    if args.port:
        settings = _replace(settings, port=args.port)
    return settings


def serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.redis_url:
        _run_api(settings)
        return 0

    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirInUseError as exc:
        print(f"dnnprof serve: {exc}", file=sys.stderr, flush=True)
        return 2
    redis_server = EmbeddedRedis(settings.data_dir / "redis")
    url = redis_server.start()
    os.environ["DNNPROF_REDIS_URL"] = url
    settings = _replace(settings, redis_url=url, embedded_store=True)
    print(f"dnnprof: embedded Redis at {url} (data in {redis_server.data_dir})", flush=True)
    redis_supervisor = RedisSupervisor(redis_server)
    redis_supervisor.start()
    supervisor = None
    try:
        if args.device != "none":
            supervisor = WorkerSupervisor(args.device)
            supervisor.start()
        _run_api(settings)
    finally:
        if supervisor is not None:
            supervisor.stop()
        redis_supervisor.stop()
        lock.release()
        print("dnnprof: stopped", flush=True)
    return 0


def _replace(settings: Settings, **changes) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def api(args: argparse.Namespace) -> int:
    _run_api(_settings(args), workers=args.workers)
    return 0


def _run_celery(app, argv: list[str]) -> int:
    """Celery's own command line on ``app``, keeping its exit status. ``app.worker_main`` (and
    ``app.start``) drop it: click returns the status under ``standalone_mode=False`` and Celery
    ignores the return, so a worker whose pool could not start ("Unrecoverable error") exited 0,
    which ``restart: unless-stopped`` and Kubernetes read as a clean stop."""
    from celery.bin.celery import celery as command
    from click.exceptions import Exit

    command.params[0].default = app  # as app.start does: --app defaults to this app
    try:
        code = command.main(args=argv, standalone_mode=False)
    except Exit as exc:
        code = exc.exit_code
    finally:
        command.params[0].default = None
    return code if isinstance(code, int) else 0


def worker(args: argparse.Namespace) -> int:
    """A Celery worker for one device; exits non-zero, saying why, when it cannot measure."""
    settings = Settings.from_env()
    if not settings.redis_url:
        print(
            "dnnprof worker: set DNNPROF_REDIS_URL (or use `dnnprof serve` for everything in one)",
            file=sys.stderr,
        )
        return 2
    from workers.devices import detect_device_class, worker_target
    from workers.preflight import WorkerStartError, check_worker_can_start
    from workers.worker import create_worker

    device = args.device or settings.worker_device or "auto"
    if device == "auto":
        device = detect_device_class()
    if device not in DEVICE_CLASSES:
        print(
            f"dnnprof worker: the device must be auto or one of {', '.join(DEVICE_CLASSES)}, got {device!r}",
            file=sys.stderr,
        )
        return 2
    try:
        target = worker_target(device, settings.device_target, cpu_threads=settings.cpu_threads)
        check_worker_can_start(device, settings.data_dir)
    except (ValueError, WorkerStartError) as exc:
        print(f"dnnprof worker: {exc}", file=sys.stderr, flush=True)
        return 2
    app = create_worker(settings, device, target)

    argv = [
        "worker",
        "--pool",
        "prefork",  # keeps time limits; CUDA is only ever touched in a spawned child
        "--hostname",
        f"{device}-{os.getpid()}@%h",
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    code = _run_celery(app, argv)
    if code:
        print(f"dnnprof worker: Celery's worker stopped with exit status {code}", file=sys.stderr, flush=True)
    return code


def doctor(args: argparse.Namespace) -> int:
    """What a worker would detect and use here, and whether it would start: 0, or 2 saying why."""
    import json
    from pathlib import Path

    from workers.doctor import diagnose, render

    settings = Settings.from_env()
    root = Path(args.root) if args.root else Path("/")
    report = diagnose(args.device, settings, root=root)
    print(json.dumps(report, indent=2) if args.json else render(report), flush=True)
    return 0 if report["would_start"] else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dnnprof", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "serve", help="run the service (embedded Redis + worker + API unless DNNPROF_REDIS_URL)"
    )
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--device",
        choices=("auto", *DEVICE_CLASSES, "none"),
        default="auto",
        help="device class of the embedded worker ('none': start no worker)",
    )
    p.set_defaults(func=serve)

    p = sub.add_parser("api", help="run the HTTP API only")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes (uvicorn workers) sharing the port: more requests per second; "
        "each is stateless, all use one Redis",
    )
    p.set_defaults(func=api)

    client.add_commands(sub)

    p = sub.add_parser("worker", help="run a Celery worker for one device class")
    p.add_argument(
        "--device",
        choices=("auto", *DEVICE_CLASSES),
        help="device class; default: DNNPROF_WORKER_DEVICE, else auto (detected: jetson, cuda, cpu)",
    )
    p.add_argument("--loglevel", default="INFO")
    p.set_defaults(func=worker)

    p = sub.add_parser(
        "doctor", help="what a worker would detect and use here, and whether it would start (exit 0 or 2)"
    )
    p.add_argument("--device", choices=("auto", *DEVICE_CLASSES), help="as dnnprof worker's")
    p.add_argument("--json", action="store_true", help="the report as JSON, for scripts")
    p.add_argument(
        "--root",
        help="read the device files (/etc, /proc, /sys, /var) under this folder: a recorded tree",
    )
    p.set_defaults(func=doctor)

    args = parser.parse_args(argv)
    if args.func in (client.profile, client.ls, client.show, client.upload):
        return client.run(args)
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:  # a process that cannot start says why, and exits non-zero
        print(f"dnnprof {args.command}: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
