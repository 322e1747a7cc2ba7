"""The worker, built like the API (``service.app.create_app``): :func:`create_worker` takes the
settings, the device class and the device target and returns the Celery app, with its queues, the
profile task and the signal handlers that start the heartbeat. Nothing is detected, read from the
environment or started at import: ``dnnprof worker`` calls the factory with what it chose, and
``celery -A workers.celery_app worker`` through :mod:`workers.celery_app`.

The worker's main process never imports torch: its pool forks, and every measurement runs in a
process of its own (:mod:`workers.jobs`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery, signals
from kombu import Queue

from dnnprof.config import Settings
from dnnprof.process import die_with_parent, remove_dead_owners, run_dir
from dnnprof.queue import PROFILE_TASK, make_celery, queue_for
from dnnprof.store import ProfileStore
from workers.broker import use_for_redis_urls
from workers.devices import device_lease_name
from workers.heartbeat import CountRequests, Heartbeat, start_metrics_server
from workers.jobs import DeviceBusyError, ProfileJob
from workers.launch import pool_temp_dir, warm_template

log = logging.getLogger("dnnprof.worker")

#: What a profile task retries on: the device is taken, or Redis did not answer (or was full)
#: before the job was claimed. Where Redis refuses the retry too, the job stays queued and the
#: heartbeat sends it again (resend_lost_messages); a refused ack no longer stalls the consumer.
RETRIED = (
    DeviceBusyError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.OutOfMemoryError,
)


@dataclass
class WorkerContext:
    """What every part of one worker shares: its settings, device class and target, its store."""

    settings: Settings
    device_class: str
    target: str
    #: The worker's main process (its pool processes' parent).
    main_pid: int = field(default_factory=os.getpid)
    _store: ProfileStore | None = None
    heartbeat: Heartbeat | None = None
    counts: CountRequests | None = None

    @property
    def store(self) -> ProfileStore:
        if self._store is None:
            self._store = ProfileStore.from_url(self.settings.redis_url or "")
        return self._store

    @property
    def lease_name(self) -> str:
        """One measurement at a time per physical device, whatever the worker's hostname."""
        return device_lease_name(self.device_class)

    def job(self, hostname: str) -> ProfileJob:
        return ProfileJob(self.store, self.settings, hostname, self.lease_name, target=self.target)

    def start_pool_process(self) -> None:
        """A pool process killed with its worker (SIGKILL of the worker or of dnnprof serve) takes
        its measuring process with it (the runner dies with its parent too). Its temporary files
        (the template's socket among them) live under the data directory, named after it, so a
        killed pool process's are removed at the next start; the template starts now, not on the
        first job."""
        die_with_parent(self.main_pid)
        tempfile.tempdir = str(pool_temp_dir(run_dir(self.settings.data_dir), os.getpid()))
        warm_template(self.settings.measure_start)

    def start_services(self, app: Celery, hostname: str) -> None:
        """Once the worker consumes: old folders of killed pool processes removed, the catalogue
        published (in a fresh interpreter: it needs torch), the heartbeat, the model counts and
        the worker's own /metrics started."""
        data = run_dir(self.settings.data_dir)
        removed = remove_dead_owners(data, "dnnprof-")
        removed += remove_dead_owners(Path(tempfile.gettempdir()), "dnnprof-")  # pool_temp_dir's
        if removed:
            log.info("removed %d folders of killed pool processes from %s", removed, data)
        result = subprocess.run([sys.executable, "-m", "workers.catalogue"], check=False)
        if result.returncode != 0:
            log.error("publishing the model catalogue failed (exit code %s)", result.returncode)
        self.heartbeat = Heartbeat(self, app, hostname)
        self.heartbeat.start()
        self.counts = CountRequests(self)
        self.counts.start()
        start_metrics_server(self, self.heartbeat.info.device_name or "", hostname)
        log.info(
            "dnnprof worker ready: device class %s, target %s, queues %s and %s",
            self.device_class,
            self.target,
            queue_for(self.device_class),
            queue_for(self.target),
        )

    def stop_services(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.counts is not None:
            self.counts.stop()


def create_worker(settings: Settings, device_class: str, target: str) -> Celery:
    """The worker's Celery app for one device: it consumes its class's queue (any worker of the
    class) and its target's (only its own), one measurement at a time. One worker per process:
    the signal handlers it connects are Celery's process-wide ones."""
    use_for_redis_urls()  # a full Redis is waited out, not fatal (workers/broker.py)
    app = make_celery(settings)
    app.conf.task_default_queue = queue_for(device_class)
    app.conf.task_queues = [Queue(queue_for(device_class)), Queue(queue_for(target))]
    app.conf.worker_concurrency = 1
    app.conf.worker_consumer = "workers.broker:Consumer"  # backs off while Redis is full
    ctx = WorkerContext(settings, device_class, target)
    app.dnnprof = ctx  # type: ignore[attr-defined]

    @app.task(name=PROFILE_TASK, bind=True, max_retries=720)
    def profile(task, profile_id: str) -> str:
        try:
            return ctx.job(task.request.hostname or socket.gethostname()).run(profile_id)
        except RETRIED as exc:
            raise task.retry(countdown=5, exc=exc) from exc

    def on_pool_process_init(**_: object) -> None:
        ctx.start_pool_process()

    def on_ready(sender=None, **_: object) -> None:
        ctx.start_services(app, getattr(sender, "hostname", None) or socket.gethostname())

    def on_shutdown(**_: object) -> None:
        ctx.stop_services()

    # weak=False: the handlers are closures that nothing else holds.
    signals.worker_process_init.connect(on_pool_process_init, weak=False)
    signals.worker_ready.connect(on_ready, weak=False)
    signals.worker_shutdown.connect(on_shutdown, weak=False)
    return app
