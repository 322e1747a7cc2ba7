"""What a worker's main process does beside consuming jobs: its heartbeat (presence in the store,
the spool flushed, the sweep that puts orphaned jobs back in their queue or fails them, lost
messages sent again, stale ones purged), the model counts the API asks for, and its own
``/metrics``. Started by :func:`workers.worker.create_worker` once the worker is ready."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from celery import Celery

from dnnprof import keys
from dnnprof.contract import DEVICE_CLASSES, TERMINAL_STATUSES, WorkerInfo
from dnnprof.queue import queue_for, route_of, send_profile
from workers.devices import device_memory_bytes, device_name
from workers.records import JobEnding, JobRecords
from workers.runtime_support import available_runtimes

if TYPE_CHECKING:
    from workers.worker import WorkerContext

log = logging.getLogger("dnnprof.worker")
COUNT_TIMEOUT_S = 600


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

    def __init__(self, ctx: WorkerContext, app: Celery, hostname: str) -> None:
        super().__init__(name="dnnprof-heartbeat", daemon=True)
        self.ctx, self.app, self.settings, self.store = ctx, app, ctx.settings, ctx.store
        self.stopped = threading.Event()
        started = time.time()
        self.info = WorkerInfo(
            hostname=hostname,
            device_class=self.ctx.device_class,  # type: ignore[arg-type]
            device_name=device_name(self.ctx.device_class),
            device_memory_bytes=device_memory_bytes(self.ctx.device_class),
            device_target=self.ctx.target,
            runtimes=available_runtimes(self.ctx.device_class),
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
                self.store.heartbeat(self.info, ttl_s=3 * self.settings.heartbeat_s)
                JobRecords(self.store, self.settings).flush_spool()
                self.sweep()
                self.resend_lost_messages()
                self.purge_stale_messages()
            except Exception as exc:  # noqa: BLE001 - Redis may be away; keep trying
                log.warning("heartbeat failed: %s", exc)
            self.stopped.wait(self.settings.heartbeat_s)

    def sweep(self) -> None:
        """Nothing stays ``running`` for ever, and nothing is requeued while it is measured. A job
        of this worker that none of its pool processes runs (the process died, its outcome was
        lost) goes back to its queue, as does one whose worker has been seen gone for three
        heartbeats in a row (killed, machine gone), or fails once it has used its attempts; one
        of ours past the hard time limit fails (its pool process was killed). Whether a job runs
        is asked of Celery in this process, never read from keys that expire in Redis: a Redis
        pause lets every such key lapse at once while the jobs go on measuring."""
        running = self.store.list(status="running", limit=1000)
        gone = self.workers_gone({w.hostname for w in self.store.workers()}, {r.worker for r in running})
        orphan_after = time.time() - 3 * self.settings.heartbeat_s
        overdue_after = time.time() - self.settings.time_limit_s - 60
        active = active_task_ids()
        records = JobRecords(self.store, self.settings)
        spooled = records.spooled_ids()
        for rec in running:
            started = rec.started_at or rec.created_at
            # Ended here, a job keeps the cells its measuring processes stored (the target: where
            # it was measured, as its worker names it).
            target = self.ctx.target if rec.worker == self.info.hostname else rec.settings.target
            failed = functools.partial(
                JobEnding, profile_id=rec.id, status="failed", measured=True, device_target=target
            )

            if rec.worker == self.info.hostname:
                if started < overdue_after:
                    error = f"killed at the hard time limit of {self.settings.time_limit_s} s"
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
                self.store.purge_unacked(rec.id)  # the lost delivery: it would come back in an hour
                send_profile(self.app, rec)
                log.warning("requeued %s: %s", rec.id, why)

    def workers_gone(self, alive: set[str], named: set[str | None]) -> set[str]:
        """Workers missing from the registry at every sweep of the last three heartbeats, as this
        worker saw it: one missing now may only have lost its entry to a Redis pause."""
        now_s = time.monotonic()
        for hostname in alive:
            self.missing_since.pop(hostname, None)
        for hostname in named - alive - {None, self.info.hostname}:
            self.missing_since.setdefault(hostname, now_s)  # type: ignore[arg-type]
        window = 3 * self.settings.heartbeat_s
        return {h for h, since in self.missing_since.items() if now_s - since >= window}

    def resend_lost_messages(self) -> None:
        """A job queued for a while whose message is neither waiting nor freshly delivered is sent
        again: its message was lost with a Redis that died, or is held by a worker that was killed
        (kombu would give it back only after the visibility timeout, an hour). A live worker claims
        a delivered job at once or hands it back within seconds (the device busy: a retry)."""
        now_s = time.time()
        older = now_s - 3 * self.settings.heartbeat_s
        queued = [r for r in self.store.list(status="queued", limit=1000) if r.created_at < older]
        if not queued:
            return
        delivered = self.store.unacked_task_ids()
        held_too_long = now_s - max(60, 6 * self.settings.heartbeat_s)
        waiting = {q: set(self.store.queued_task_ids(q)) for q in {route_of(r.settings) for r in queued}}
        for rec in queued:
            if rec.id in waiting[route_of(rec.settings)]:
                continue
            if rec.id in delivered and delivered[rec.id] > held_too_long:
                continue
            self.store.purge_unacked(rec.id)
            send_profile(self.app, rec)
            log.warning("sent %s again: queued, but its message was lost or held by a dead worker", rec.id)

    def purge_stale_messages(self) -> None:
        """Queued messages whose job was cancelled or deleted (a class no worker serves keeps them
        for ever otherwise, and /metrics counts them)."""
        for device in (*DEVICE_CLASSES, *self.store.devices()):
            queue = queue_for(device)
            ids = self.store.queued_task_ids(queue)
            if not ids:
                continue
            records = {i: self.store.get(i) for i in set(ids)}
            stale = {i for i, rec in records.items() if rec is None or rec.status in TERMINAL_STATUSES}
            if stale and (removed := self.store.purge_task_messages(queue, stale)):
                log.info("removed %d messages of ended jobs from %s", removed, queue)

    def stop(self) -> None:
        """Deregister at a clean stop, after the loop has ended: a beat in flight would otherwise
        register the worker again after it was forgotten (counted live for a heartbeat TTL)."""
        self.stopped.set()
        self.join(timeout=30)
        with contextlib.suppress(Exception):
            self.store.forget_worker(self.info)


class CountRequests(threading.Thread):
    """Counts the models the API was asked about and no table covers (``workers.counts``), in a
    fresh interpreter, holding the device lock: never beside a measurement of this device."""

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(name="dnnprof-counts", daemon=True)
        self.ctx, self.settings, self.store = ctx, ctx.settings, ctx.store
        self.stopped = threading.Event()
        self.lock_name = keys.device_lock(ctx.lease_name)

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                names = self.store.next_count_requests(timeout_s=min(self.settings.heartbeat_s, 5))
                if names:
                    self.count(names)
            except Exception as exc:  # noqa: BLE001 - Redis may be away; keep trying
                log.warning("counting models failed: %s", exc)
                self.stopped.wait(self.settings.heartbeat_s)

    def count(self, names: list[str]) -> None:
        lock = self.store.redis.lock(self.lock_name, timeout=COUNT_TIMEOUT_S + 60, blocking_timeout=None)
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




def start_metrics_server(ctx: WorkerContext, device_name: str, hostname: str) -> None:
    """The worker's own /metrics: device utilisation, memory, temperature, power (NVML, Jetson
    sysfs or the host), on DNNPROF_WORKER_METRICS_PORT (0: off)."""
    if ctx.settings.worker_metrics_port <= 0:
        return
    from prometheus_client import REGISTRY, start_http_server

    from workers.telemetry import WorkerCollector

    REGISTRY.register(WorkerCollector(ctx.device_class, device_name, hostname))
    try:
        start_http_server(ctx.settings.worker_metrics_port, addr=ctx.settings.host)
        log.info("worker metrics on :%s/metrics", ctx.settings.worker_metrics_port)
    except OSError as exc:  # another worker on this host has the port: run without
        log.warning("worker metrics not served on :%s: %s", ctx.settings.worker_metrics_port, exc)
