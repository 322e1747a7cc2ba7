"""A job's record as the worker changes it: claimed, put back in its queue, ended, and the ending
kept on disk (the spool) while Redis cannot take it. :class:`JobRecords` is what both the job
(:mod:`workers.jobs`) and the heartbeat's sweep (:mod:`workers.celery_app`) write through, so
that each transition is written once. A measured job's result is assembled when its ending is
written, from what its measuring processes handed back and what they stored in Redis: a
spooled ending waits for Redis to assemble, so the cells stored before a crash are kept. No
torch here."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import msgspec
import redis

from dnnprof.config import Settings
from dnnprof.contract import (
    ACTIVE_STATUSES,
    ProcessCell,
    ProcessEnd,
    ProcessStatic,
    ProfileRecord,
    ProfileResult,
    Progress,
)
from dnnprof.process import spool_dir
from dnnprof.store import ConflictError, Parts, ProfileStore, RecordGone, now, with_retries
from workers.aggregate import assemble

log = logging.getLogger(__name__)


class Measured(msgspec.Struct, kw_only=True):
    """What a job's measuring processes handed back, with where and how long it ran: merged at
    write time with what they stored in Redis (a killed process hands nothing back)."""

    statics: list[ProcessStatic] = []
    cells: list[ProcessCell] = []
    ends: list[ProcessEnd] = []
    job_wall_s: float | None = None
    device_target: str | None = None

    @classmethod
    def of(cls, parts: Parts, *, job_wall_s: float, device_target: str | None) -> Measured:
        return cls(
            statics=list(parts.statics.values()),
            cells=list(parts.cells.values()),
            ends=list(parts.ends.values()),
            job_wall_s=job_wall_s,
            device_target=device_target,
        )

    def parts(self) -> Parts:
        parts = Parts()
        for part in (*self.statics, *self.cells, *self.ends):
            parts.add(part)
        return parts


class SpooledEnd(msgspec.Struct, kw_only=True):
    """A job's outcome that could not be written while Redis was away: a result already made
    (``result``) or the parts to make it from (``measured``)."""

    profile_id: str
    status: str
    error: str | None = None
    result: ProfileResult | None = None
    measured: Measured | None = None


class JobRecords:
    def __init__(self, store: ProfileStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

    def max_attempts(self, rec: ProfileRecord) -> int:
        """The job's own limit (recorded when it was created), else this worker's."""
        return rec.max_attempts or self.settings.max_attempts

    def claim(self, profile_id: str, worker: str) -> ProfileRecord | None:
        """Take a queued job (its attempt counted); None where it is not queued (a duplicate
        delivery of one running elsewhere: a job whose worker died is put back by the sweep)."""

        def change(rec: ProfileRecord) -> ProfileRecord:
            rec.status = "running"
            rec.attempts += 1
            rec.started_at = now()
            rec.worker = worker
            rec.progress = Progress.at_start(rec.settings, "starting")
            return rec

        try:
            return self.store.update(profile_id, change, allowed_from=("queued",))
        except (ConflictError, RecordGone):
            return None

    def requeue(self, profile_id: str, *, from_worker: str | None, lost_worker: bool = True) -> bool:
        """Put a running job back to ``queued`` (True if this call did): its worker vanished (the
        attempt counts), or it handed the device over (``lost_worker=False``: it does not)."""

        def change(rec: ProfileRecord) -> ProfileRecord | None:
            if rec.status != "running" or rec.worker != from_worker:
                return None
            rec.status = "queued"
            rec.worker = None
            if not lost_worker:
                rec.attempts = max(0, rec.attempts - 1)
            rec.progress = Progress.at_start(rec.settings)
            return rec

        try:
            return self.store.update(profile_id, change, allowed_from=("running",)).status == "queued"
        except (ConflictError, RecordGone):
            return False

    def end(
        self,
        profile_id: str,
        status: str,
        *,
        error: str | None = None,
        result: ProfileResult | None = None,
        measured: Measured | None = None,
    ) -> str:
        """Write a job's outcome; while Redis is away, retry (DNNPROF_STORE_RETRY_S), then keep it
        in the spool for the worker's heartbeat to write when Redis is back. Never lost."""
        outcome = SpooledEnd(
            profile_id=profile_id, status=status, error=error, result=result, measured=measured
        )
        try:
            return with_retries(
                lambda: self.write_end(outcome),
                until_s=self.settings.store_retry_s,
                what=f"writing the outcome of {profile_id}",
                log=log.warning,
            )
        except redis.exceptions.RedisError as exc:
            path = self.spool(outcome)
            log.error(
                "Redis away for %s s: the outcome of %s waits in %s (%s)",
                self.settings.store_retry_s,
                profile_id,
                path,
                exc,
            )
            return status

    def write_end(self, outcome: SpooledEnd) -> str:
        """The job's final record (its result assembled from its parts, which are then dropped),
        and its count in the job statistics."""
        if outcome.measured is None:
            change = _finish(outcome.status, error=outcome.error, result=outcome.result)
        else:
            # The processes' own account on top of what they stored.
            parts = self.store.parts(outcome.profile_id).merge(outcome.measured.parts())
            change = _finish_assembled(outcome.status, outcome.error, outcome.measured, parts)
        try:
            record = self.store.update(outcome.profile_id, change, allowed_from=ACTIVE_STATUSES)
        except (ConflictError, RecordGone):
            record = None  # ended or deleted meanwhile
        # Only once written (a failed write is tried again, from the same stored parts).
        if outcome.measured is not None:
            with contextlib.suppress(redis.exceptions.RedisError):
                self.store.drop_parts(outcome.profile_id)
        if record is None:
            return "skipped"
        took = (record.finished_at or 0) - (record.started_at or record.created_at)
        self.store.count_finished(record.status, took)
        return record.status

    # the spool: outcomes waiting for Redis, one ``<profile id>.json`` each

    def spooled_files(self) -> list[Path]:
        return sorted(spool_dir(self.settings.data_dir).glob("*.json"))

    def spooled_ids(self) -> set[str]:
        return {path.stem for path in self.spooled_files()}

    def spool(self, outcome: SpooledEnd) -> Path:
        """Keep an outcome on disk (0600, in a 0700 folder) until Redis takes it."""
        path = spool_dir(self.settings.data_dir) / f"{outcome.profile_id}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(outcome))
        tmp.replace(path)
        return path

    def flush_spool(self) -> int:
        """Write the outcomes that waited for Redis (called by the worker's heartbeat)."""
        written = 0
        for path in self.spooled_files():
            outcome = msgspec.json.decode(path.read_bytes(), type=SpooledEnd)
            status = self.write_end(outcome)  # raises while Redis is still away: the file stays
            path.unlink()
            written += 1
            log.warning("wrote the spooled outcome of %s (%s)", outcome.profile_id, status)
        return written


def _finish_assembled(status: str, error: str | None, measured: Measured, parts: Parts):
    """The ending of a measured job: the profile assembled from every part (the record holds its
    model and settings); a job whose every batch size failed has failed."""

    def change(rec: ProfileRecord) -> ProfileRecord:
        result = assemble(
            rec.model,
            rec.settings,
            list(parts.statics.values()),
            list(parts.cells.values()),
            list(parts.ends.values()),
            job_wall_s=measured.job_wall_s,
        )
        final_status, final_error = status, error
        if result is not None:
            result.fingerprint.device_target = measured.device_target  # as the worker names it
            failed = [b for b in result.batches if b.status == "error"]
            if status == "succeeded" and failed and len(failed) == len(result.batches):
                final_status = "failed"
                final_error = f"every batch size failed; batch {failed[0].batch_size}: {failed[0].error}"
        return _finish(final_status, error=final_error, result=result)(rec)

    return change


def _finish(status: str, *, error: str | None = None, result=None):
    def change(rec: ProfileRecord) -> ProfileRecord:
        rec.status = status  # type: ignore[assignment]
        rec.finished_at = now()
        rec.error = error
        if result is not None:
            rec.result = result  # on a failure or a cancel too: the cells measured are kept
        if status == "succeeded":
            cells = rec.progress.batches_total if rec.progress else 0
            rec.progress = Progress(stage="done", batches_done=cells, batches_total=cells)
        return rec

    return change
