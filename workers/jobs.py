"""One profile job as the Celery pool process runs it: claim it, hold the device lease, run the
measuring processes, and record the outcome (through :class:`workers.records.JobRecords`). No
torch here (this runs in a forked pool process)."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import msgspec
import redis
from celery.exceptions import SoftTimeLimitExceeded

from dnnprof.config import Settings
from dnnprof.contract import TERMINAL_STATUSES, ProfileRecord
from dnnprof.process import PARENT_PID_ENV, run_dir
from dnnprof.store import ProfileStore
from workers.launch import MeasuringProcess, launch
from workers.lease import DeviceLease, LeaseInDoubt
from workers.preflight import data_disk_short
from workers.records import JobEnding, JobRecords, ProcessOutcome

log = logging.getLogger(__name__)


class DeviceBusyError(Exception):
    """Another job holds this device; the task is retried later rather than measured alongside."""


class ProfileJob:
    def __init__(
        self,
        store: ProfileStore,
        settings: Settings,
        hostname: str,
        lock_name: str,
        *,
        target: str | None = None,
    ):
        self.target = target
        self.store = store
        self.settings = settings
        self.hostname = hostname
        self.lock_name = lock_name
        self.lease: DeviceLease | None = None  # held while the job runs
        self.records = JobRecords(store, settings)

    def run(self, profile_id: str) -> str:
        """The job's status once this delivery is done with it, or what this delivery did
        instead: ``deleted`` (no such job), ``skipped`` (another delivery holds it)."""
        record = self.store.get(profile_id)
        if record is None:
            return "deleted"
        if record.status in TERMINAL_STATUSES:
            return record.status  # a duplicate delivery of a finished job
        if self.store.cancel_requested(profile_id):
            return self.records.end(self._ending(profile_id, "cancelled", "cancelled before it started"))
        lease = DeviceLease(self.store, self.lock_name, self.lease_s)
        if not lease.acquire():
            raise DeviceBusyError(self.lock_name)
        self.lease = lease
        try:
            claimed = self.records.claim(profile_id, self.hostname)
            if claimed is None:
                return "skipped"
            return self.records.end(self._measure(claimed))
        finally:
            lease.release()
            self.lease = None

    def _ending(self, profile_id: str, status: str, error: str | None = None) -> JobEnding:
        """An ending that keeps whatever the job's processes stored (``measured``)."""
        return JobEnding(
            profile_id=profile_id, status=status, error=error, measured=True, device_target=self.target
        )

    def _measure(self, record: ProfileRecord) -> JobEnding:
        """One fresh measuring process per repeat, each storing its cells as it goes; the ending
        carries what they handed back (assembled with what they stored when it is written). A
        time limit, a crash, a cancel or a full disk ends the job with the finished cells kept."""
        if record.attempts > self.records.max_attempts(record):
            lost = f"gave up after {record.attempts - 1} attempts: the worker measuring it was lost each time"
            return self._ending(record.id, "failed", lost)
        started = time.monotonic()
        ending = self._ending(record.id, "succeeded")
        ended_before = self.store.parts(record.id).ended()  # measured to their end on an earlier delivery
        for process in range(record.settings.repeats):
            if process in ended_before:
                continue
            if short := self._disk_short():
                ending.status, ending.error = "failed", short  # what was measured before is kept
                break
            outcome = self._one_process(record.id, process)
            ending.merge(outcome)
            if not outcome.finished:
                ending.status = outcome.stopped_as or "failed"
                ending.error = outcome.error or "the measuring process failed"
                if ending.status == "failed" and (short := self._disk_short()):
                    ending.error = f"{short}; {ending.error}"  # the disk filled while it measured: the cause
                break
        ending.job_wall_s = time.monotonic() - started
        return ending

    def _disk_short(self) -> str | None:
        return data_disk_short(self.settings.data_dir, self.settings.min_free_mb)

    def _one_process(self, profile_id: str, process: int) -> ProcessOutcome:
        """One measuring process: what it handed back (also when it failed or was stopped), run
        again when it was stopped for a lease in doubt and the lease came back (nobody measured
        meanwhile: the cells it stored before still count)."""
        while True:
            with tempfile.TemporaryDirectory(
                prefix=f"dnnprof-{os.getpid()}-", dir=run_dir(self.settings.data_dir)
            ) as tmp:  # under the data directory: a killed pool process's folder is removed at the next start
                try:
                    return self._run_child(profile_id, process, Path(tmp))
                except LeaseInDoubt as exc:
                    log.warning("stopped measuring %s (process %d): %s", profile_id, process, exc)
                    if not self._regain_lease(profile_id, process):
                        raise DeviceBusyError(self.lock_name) from exc  # Celery retries it later
                except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    return ProcessOutcome(error=f"reading the measuring process's outcome failed: {exc}")

    def _run_child(self, profile_id: str, process: int, folder: Path) -> ProcessOutcome:
        outcome_path, log_path = folder / "outcome.json", folder / "child.log"
        env = dict(os.environ, DNNPROF_REDIS_URL=self.settings.redis_url or "")
        env[PARENT_PID_ENV] = str(os.getpid())
        child = launch(
            "workers.runner",
            [profile_id, str(outcome_path), "--process", str(process)],
            env,
            log_path,
            self.settings.measure_start,
        )
        try:
            code = self._wait_for(child, profile_id)
        except MeasuringStopped as stopped:
            return ProcessOutcome(error=stopped.error, stopped_as=stopped.status)
        finally:
            relay_cache_notes(log_path)
        if outcome_path.exists():
            outcome = msgspec.json.decode(outcome_path.read_bytes(), type=ProcessOutcome)
            if outcome.error is None and not outcome.ends:
                outcome.error = "the measuring process failed"
            return outcome
        return ProcessOutcome(error=death_reason(code, log_path.read_text(errors="replace")))

    def _regain_lease(self, profile_id: str, process: int) -> bool:
        """True when this job holds the device again; else the job is back in its queue (its
        record says so) and what the stopped process stored in doubt is forgotten."""
        assert self.lease is not None
        with contextlib.suppress(redis.exceptions.RedisError):
            if self.lease.regain(until_s=self.settings.store_retry_s):
                return True
            # Another job took the device: the lease lapsed unseen, so what this process
            # stored since may have been measured beside it.
            self.store.drop_process_parts(profile_id, process)
            self.records.requeue(profile_id, from_worker=self.hostname, lost_worker=False)
        return False  # Redis never came back: the heartbeat's sweep requeues the record

    def _wait_for(self, child: MeasuringProcess, profile_id: str) -> int:
        """The measuring process's exit status. Stopped for a cancel or the soft time limit, it
        raises :class:`MeasuringStopped` with the job's outcome; a lease in doubt stops it and is
        raised."""
        try:
            while True:
                try:
                    return child.wait(timeout=self._poll_s())
                except subprocess.TimeoutExpired:
                    if self._keep_lease() and self._cancel_requested(profile_id):
                        raise MeasuringStopped("cancelled", "cancelled while running") from None
        except SoftTimeLimitExceeded:
            _stop(child)
            limit = self.settings.soft_time_limit_s
            raise MeasuringStopped(
                "failed", f"exceeded the time limit of {limit} s (DNNPROF_TASK_SOFT_TIME_LIMIT)"
            ) from None
        except BaseException:  # a cancel, a lease in doubt, the hard limit, a worker's stop
            _stop(child)  # never leave it measuring
            raise

    @property
    def lease_s(self) -> int:
        return max(10, 3 * self.settings.heartbeat_s)

    def _poll_s(self) -> float:
        """How long to wait on the measuring process before looking at the lease again."""
        if self.lease is None:
            return 0.5
        return min(0.5, max(0.05, self.lease.must_stop_at - time.monotonic()))

    def _keep_lease(self) -> bool:
        """True while the lease is confirmed; raises LeaseInDoubt when the measurement must stop."""
        if self.lease is None:
            return True
        if not self.lease.keep():
            self.lease.check()
            return False
        return True

    def _cancel_requested(self, profile_id: str) -> bool:
        try:
            store = self.lease.store if self.lease is not None else self.store  # one that gives up soon
            return store.cancel_requested(profile_id)
        except redis.exceptions.RedisError:
            return False  # Redis away for a moment: keep measuring


#: The export cache's logger (workers.engine.runtimes.cache.LOGGER: that module imports torch).
CACHE_LOGGER = "dnnprof.runtime_cache"


def relay_cache_notes(log_path: Path) -> None:
    """The export cache's notes in the measuring process's log (a cached file set aside, and
    why), into this worker's log: the process's own log goes with its folder."""
    marker = f" {CACHE_LOGGER} "
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if marker in line:
                log.warning("measuring process: %s", line.split(marker, 1)[1])


#: Where a measuring process's own account of its failure starts in its log.
FAILURE_STARTS = ("Traceback (most recent call last)", "Fatal Python error")


def death_reason(code: int, log_text: str) -> str:
    """Why a measuring process that wrote no outcome ended: its exit status, and the failure it
    reported itself (the last lines of its last traceback or fatal error, or the last line of an
    exit it chose), never lines it logged before: a SIGKILL's reason ended with torch's "No CUDA
    runtime is found" warning."""
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    lines = log_text.strip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(FAILURE_STARTS)]
    own = [line.strip() for line in lines[starts[-1] :] if line.strip()] if starts else []
    if own and own[0].startswith("Traceback"):
        own = own[1:]
    tail = own[:1] if own and own[0].startswith("Fatal Python error") else own[-2:]
    if not starts and code > 0:
        tail = lines[-1:]  # an exit it chose (SystemExit's message is its last line)
    detail = (": " + " | ".join(tail)) if tail else ""
    return f"the measuring process died ({how}){detail}"[:2000]


class MeasuringStopped(Exception):
    """The job stopped its measuring process (a cancel, the soft time limit): its outcome."""

    def __init__(self, status: str, error: str) -> None:
        super().__init__(error)
        self.status, self.error = status, error


def _stop(child: MeasuringProcess) -> None:
    if child.poll() is None:
        child.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.wait(timeout=30)
