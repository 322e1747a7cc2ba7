"""The worker's Celery app: ``celery -A workers.celery_app worker`` or ``dnnprof worker``.

The device class comes from ``DNNPROF_WORKER_DEVICE`` (cuda, jetson, cpu) or is detected through
NVML (no CUDA context in the parent). The worker consumes its device target's queue and its
class's, publishes the model catalogue when it is ready, and renews a heartbeat the API's
``/readyz`` reads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis
from celery import signals
from kombu import Queue

from dnnprof import keys
from dnnprof.config import Settings
from dnnprof.contract import DEVICE_CLASSES, TERMINAL_STATUSES, WorkerInfo
from dnnprof.process import die_with_parent, remove_dead_owners, run_dir
from dnnprof.queue import PROFILE_TASK, make_celery, queue_for, route_of, send_profile
from dnnprof.store import ProfileStore
from workers.broker import use_for_redis_urls
from workers.devices import (
    detect_device_class,
    device_lease_name,
    device_memory_bytes,
    device_name,
    worker_target,
)
from workers.jobs import DeviceBusyError, ProfileJob
from workers.launch import pool_temp_dir, warm_template
from workers.preflight import PREFLIGHT_DONE_ENV, WorkerStartError, check_worker_can_start
from workers.records import JobEnding, JobRecords
from workers.runtime_support import available_runtimes

log = logging.getLogger("dnnprof.worker")

settings = Settings.from_env()
DEVICE_CLASS = os.environ.get("DNNPROF_WORKER_DEVICE") or detect_device_class()
if DEVICE_CLASS not in DEVICE_CLASSES:
    raise SystemExit(
        f"DNNPROF_WORKER_DEVICE must be one of {', '.join(DEVICE_CLASSES)}, got {DEVICE_CLASS!r}"
    )

# A plain `celery -A workers.celery_app worker` checks what `dnnprof worker` checks before it
# starts Celery (a writable data directory, a CUDA device for cuda/jetson), and stops as it does.
if "worker" in sys.argv[1:] and not os.environ.get(PREFLIGHT_DONE_ENV):
    try:
        check_worker_can_start(DEVICE_CLASS, settings.data_dir)
    except WorkerStartError as exc:
        raise SystemExit(f"dnnprof worker: {exc}") from exc

#: The device target this worker advertises (set by `dnnprof worker` from the device or from
#: DNNPROF_DEVICE_TARGET); its queue is consumed beside the class's.
DEVICE_TARGET = os.environ.get("DNNPROF_WORKER_TARGET") or worker_target(DEVICE_CLASS)

use_for_redis_urls()  # a full Redis is waited out, not fatal (workers/broker.py)
app = make_celery(settings)
app.conf.task_default_queue = queue_for(DEVICE_CLASS)
# What any worker of this app consumes, however it was started (`dnnprof worker` or a plain
# `celery -A workers.celery_app worker`): its class's jobs (any worker of the class) and its
# target's (only its own), one measurement at a time per device.
app.conf.task_queues = [Queue(queue_for(DEVICE_CLASS)), Queue(queue_for(DEVICE_TARGET))]
app.conf.worker_concurrency = 1
app.conf.worker_consumer = "workers.broker:Consumer"  # backs off while Redis is full

_store: ProfileStore | None = None


def store() -> ProfileStore:
    global _store
    if _store is None:
        _store = ProfileStore.from_url(settings.redis_url or "")
    return _store


def device_lock_name() -> str:
    """One measurement at a time per physical device, whatever the worker's hostname (issue 44)."""
    return device_lease_name(DEVICE_CLASS)


@app.task(name=PROFILE_TASK, bind=True, max_retries=720)
def profile(self, profile_id: str) -> str:
    job = ProfileJob(
        store(),
        settings,
        self.request.hostname or socket.gethostname(),
        device_lock_name(),
        target=DEVICE_TARGET,
    )
    try:
        return job.run(profile_id)
    except (
        DeviceBusyError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.OutOfMemoryError,
    ) as exc:
        # The device is taken, or Redis did not answer (or was full) before the job was claimed:
        # later. Where Redis refuses the retry too, the job stays queued and the heartbeat sends
        # it again (resend_lost_messages); the refused ack no longer stalls the consumer.
        raise self.retry(countdown=5, exc=exc) from exc


def active_task_ids() -> set[str] | None:
    """The tasks this worker's pool runs now (Celery's own state, kept in this process); None
    when it could not be read (the pool kept changing it): then nothing of ours is requeued."""
    from celery.worker import state

    for _ in range(3):
        with contextlib.suppress(RuntimeError):  # the pool changed the set while we read it
            return {request.id for request in list(state.active_requests)}
    return None


class Heartbeat(threading.Thread):
    """Renews this worker's presence in the store and looks after orphaned jobs (:meth:`sweep`)."""

    def __init__(self, hostname: str) -> None:
        super().__init__(name="dnnprof-heartbeat", daemon=True)
        self.stopped = threading.Event()
        started = time.time()
        self.info = WorkerInfo(
            hostname=hostname,
            device_class=DEVICE_CLASS,  # type: ignore[arg-type]
            device_name=device_name(DEVICE_CLASS),
            device_memory_bytes=device_memory_bytes(DEVICE_CLASS),
            device_target=DEVICE_TARGET,
            runtimes=available_runtimes(DEVICE_CLASS),
            pid=os.getpid(),
            started_at=started,
            seen_at=started,
        )
        #: When this worker first saw another one missing from the registry (see workers_gone).
        self.missing_since: dict[str, float] = {}

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                self.info.seen_at = time.time()
                store().heartbeat(self.info, ttl_s=3 * settings.heartbeat_s)
                JobRecords(store(), settings).flush_spool()
                self.sweep()
                self.resend_lost_messages()
                self.purge_stale_messages()
            except Exception as exc:  # noqa: BLE001 - Redis may be away; keep trying
                log.warning("heartbeat failed: %s", exc)
            self.stopped.wait(settings.heartbeat_s)

    def sweep(self) -> None:
        """Nothing stays ``running`` for ever, and nothing is requeued while it is measured. A job
        of this worker that none of its pool processes runs (the process died, its outcome was
        lost) goes back to its queue, as does one whose worker has been seen gone for three
        heartbeats in a row (killed, machine gone), or fails once it has used its attempts; one
        of ours past the hard time limit fails (its pool process was killed). Whether a job runs
        is asked of Celery in this process, never read from keys that expire in Redis: a Redis
        pause lets every such key lapse at once while the jobs go on measuring."""
        running = store().list(status="running", limit=1000)
        gone = self.workers_gone({w.hostname for w in store().workers()}, {r.worker for r in running})
        orphan_after = time.time() - 3 * settings.heartbeat_s
        overdue_after = time.time() - settings.time_limit_s - 60
        active = active_task_ids()
        records = JobRecords(store(), settings)
        spooled = records.spooled_ids()
        for rec in running:
            started = rec.started_at or rec.created_at
            # Ended here, a job keeps the cells its measuring processes stored (the target: where
            # it was measured, as its worker names it).
            target = DEVICE_TARGET if rec.worker == self.info.hostname else rec.settings.target
            failed = functools.partial(
                JobEnding, profile_id=rec.id, status="failed", measured=True, device_target=target
            )

            if rec.worker == self.info.hostname:
                if started < overdue_after:
                    error = f"killed at the hard time limit of {settings.time_limit_s} s"
                    records.end(failed(error=error))
                    continue
                if started >= orphan_after or active is None or rec.id in active or rec.id in spooled:
                    continue  # just claimed, maybe measuring, or its outcome waits for Redis
                why = "none of its worker's processes runs it (its outcome was lost)"
            elif rec.worker in gone:
                why = f"its worker {rec.worker} stopped beating"
            else:
                continue  # its own worker looks after it
            if rec.attempts >= records.max_attempts(rec):
                lost = f"the worker measuring it ({rec.worker}) was lost {rec.attempts} times"
                records.end(failed(error=lost))
            elif records.requeue(rec.id, from_worker=rec.worker):
                store().purge_unacked(rec.id)  # the lost delivery: it would come back in an hour
                send_profile(app, rec)
                log.warning("requeued %s: %s", rec.id, why)

    def workers_gone(self, alive: set[str], named: set[str | None]) -> set[str]:
        """Workers missing from the registry at every sweep of the last three heartbeats, as this
        worker saw it: one missing now may only have lost its entry to a Redis pause."""
        now_s = time.monotonic()
        for hostname in alive:
            self.missing_since.pop(hostname, None)
        for hostname in named - alive - {None, self.info.hostname}:
            self.missing_since.setdefault(hostname, now_s)  # type: ignore[arg-type]
        return {h for h, since in self.missing_since.items() if now_s - since >= 3 * settings.heartbeat_s}

    def resend_lost_messages(self) -> None:
        """A job queued for a while whose message is neither waiting nor freshly delivered is sent
        again: its message was lost with a Redis that died, or is held by a worker that was killed
        (kombu would give it back only after the visibility timeout, an hour). A live worker claims
        a delivered job at once or hands it back within seconds (the device busy: a retry)."""
        now_s = time.time()
        older = now_s - 3 * settings.heartbeat_s
        queued = [r for r in store().list(status="queued", limit=1000) if r.created_at < older]
        if not queued:
            return
        delivered = store().unacked_task_ids()
        held_too_long = now_s - max(60, 6 * settings.heartbeat_s)
        waiting = {q: set(store().queued_task_ids(q)) for q in {route_of(r.settings) for r in queued}}
        for rec in queued:
            if rec.id in waiting[route_of(rec.settings)]:
                continue
            if rec.id in delivered and delivered[rec.id] > held_too_long:
                continue
            store().purge_unacked(rec.id)
            send_profile(app, rec)
            log.warning("sent %s again: queued, but its message was lost or held by a dead worker", rec.id)

    def purge_stale_messages(self) -> None:
        """Queued messages whose job was cancelled or deleted (a class no worker serves keeps them
        for ever otherwise, and /metrics counts them)."""
        for device in (*DEVICE_CLASSES, *store().devices()):
            queue = queue_for(device)
            ids = store().queued_task_ids(queue)
            if not ids:
                continue
            records = {i: store().get(i) for i in set(ids)}
            stale = {i for i, rec in records.items() if rec is None or rec.status in TERMINAL_STATUSES}
            if stale and (removed := store().purge_task_messages(queue, stale)):
                log.info("removed %d messages of ended jobs from %s", removed, queue)

    def stop(self) -> None:
        """Deregister at a clean stop, after the loop has ended: a beat in flight would otherwise
        register the worker again after it was forgotten (counted live for a heartbeat TTL)."""
        self.stopped.set()
        self.join(timeout=30)
        with contextlib.suppress(Exception):
            store().forget_worker(self.info)


class CountRequests(threading.Thread):
    """Counts the models the API was asked about and no table covers (``workers.counts``), in a
    fresh interpreter, holding the device lock: never beside a measurement of this device."""

    def __init__(self, hostname: str) -> None:
        super().__init__(name="dnnprof-counts", daemon=True)
        self.stopped = threading.Event()
        self.lock_name = keys.device_lock(device_lock_name())

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                names = store().next_count_requests(timeout_s=min(settings.heartbeat_s, 5))
                if names:
                    self.count(names)
            except Exception as exc:  # noqa: BLE001 - Redis may be away; keep trying
                log.warning("counting models failed: %s", exc)
                self.stopped.wait(settings.heartbeat_s)

    def count(self, names: list[str]) -> None:
        lock = store().redis.lock(self.lock_name, timeout=COUNT_TIMEOUT_S + 60, blocking_timeout=None)
        lock.acquire()  # waits while a measurement holds the device
        try:
            result = subprocess.run(
                [sys.executable, "-m", "workers.counts", *names], check=False, timeout=COUNT_TIMEOUT_S
            )
            if result.returncode != 0:
                log.error("counting %s failed (exit code %s)", names, result.returncode)
        finally:
            with contextlib.suppress(Exception):
                lock.release()

    def stop(self) -> None:
        self.stopped.set()


COUNT_TIMEOUT_S = 600
#: The worker's main process (read here, before the pool forks): its pool processes' parent.
_WORKER_PID = os.getpid()
_heartbeat: Heartbeat | None = None
_counts: CountRequests | None = None


@signals.worker_process_init.connect
def _pool_process_dies_with_worker(**_: object) -> None:
    """A pool process killed with its worker (SIGKILL of the worker or of dnnprof serve) takes its
    measuring process with it (the runner dies with its parent too). Its temporary files (the
    template's socket among them) live under the data directory, named after it, so a killed
    pool process's are removed at the next start; the template starts now, not on the first job."""
    die_with_parent(_WORKER_PID)
    tempfile.tempdir = str(pool_temp_dir(run_dir(settings.data_dir), os.getpid()))
    warm_template(settings.measure_start)


@signals.worker_ready.connect
def _on_ready(sender=None, **_: object) -> None:
    global _heartbeat, _counts
    removed = remove_dead_owners(run_dir(settings.data_dir), "dnnprof-")
    removed += remove_dead_owners(Path(tempfile.gettempdir()), "dnnprof-")  # pool_temp_dir's
    if removed:
        log.info("removed %d folders of killed pool processes from %s", removed, run_dir(settings.data_dir))
    # The catalogue needs torch/timm: build it in a fresh interpreter, never in this parent.
    result = subprocess.run([sys.executable, "-m", "workers.catalogue"], check=False)
    if result.returncode != 0:
        log.error("publishing the model catalogue failed (exit code %s)", result.returncode)
    hostname = getattr(sender, "hostname", None) or socket.gethostname()
    _heartbeat = Heartbeat(hostname)
    _heartbeat.start()
    _counts = CountRequests(hostname)
    _counts.start()
    start_metrics_server(hostname)
    log.info(
        "dnnprof worker ready: device class %s, target %s, queues %s and %s",
        DEVICE_CLASS,
        DEVICE_TARGET,
        queue_for(DEVICE_CLASS),
        queue_for(DEVICE_TARGET),
    )


def start_metrics_server(hostname: str) -> None:
    """The worker's own /metrics: device utilisation, memory, temperature, power (NVML, Jetson
    sysfs or the host), on DNNPROF_WORKER_METRICS_PORT (0: off)."""
    if settings.worker_metrics_port <= 0:
        return
    from prometheus_client import REGISTRY, start_http_server

    from workers.telemetry import WorkerCollector

    REGISTRY.register(WorkerCollector(DEVICE_CLASS, _heartbeat.info.device_name or "", hostname))
    try:
        start_http_server(settings.worker_metrics_port, addr=settings.host)
        log.info("worker metrics on :%s/metrics", settings.worker_metrics_port)
    except OSError as exc:  # another worker on this host has the port: run without
        log.warning("worker metrics not served on :%s: %s", settings.worker_metrics_port, exc)


@signals.worker_shutdown.connect
def _on_shutdown(**_: object) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
    if _counts is not None:
        _counts.stop()
