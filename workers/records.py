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
    ProfileRecord,
    ProfileResult,
    Progress,
)
from dnnprof.process import spool_dir
from dnnprof.store import ConflictError, Parts, ProfileStore, RecordGone, now, with_retries
from workers.aggregate import assemble

log = logging.getLogger(__name__)


class ProcessOutcome(Parts, kw_only=True):
    """What one measuring process hands back (its outcome file): what it measured, also when it
    failed (``error``)."""

    error: str | None = None
    #: Set by the job where it stopped the process itself: ``cancelled``, or ``failed`` (the soft
    #: time limit); the process wrote nothing then.
    stopped_as: str | None = None

    @property
    def finished(self) -> bool:
        return self.error is None and bool(self.ends)


class JobEnding(Parts, kw_only=True):
    """A job's ending, as written once (or kept in the spool while Redis is away): its status,
    and either a result already made or (``measured``) the parts its processes handed back, to be
    assembled with what they stored in Redis when it is written (a killed process hands nothing
    back, and what it stored is kept)."""

    profile_id: str
    status: str
    error: str | None = None
    result: ProfileResult | None = None
    measured: bool = False
    job_wall_s: float | None = None
    device_target: str | None = None


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

    def end(self, ending: JobEnding) -> str:
        """Write a job's ending; while Redis is away, retry (DNNPROF_STORE_RETRY_S), then keep it
        in the spool for the worker's heartbeat to write when Redis is back. Never lost."""
        try:
            return with_retries(
                lambda: self.write_end(ending),
                until_s=self.settings.store_retry_s,
                what=f"writing the outcome of {ending.profile_id}",
                log=log.warning,
            )
        except redis.exceptions.RedisError as exc:
            path = self.spool(ending)
            log.error(
                "Redis away for %s s: the outcome of %s waits in %s (%s)",
                self.settings.store_retry_s,
                ending.profile_id,
                path,
                exc,
            )
            return ending.status

    def write_end(self, ending: JobEnding) -> str:
        """The job's final record (a measured one's result assembled once, from what its
        processes stored with what they handed back on top; the stored parts dropped once
        written), and its count in the job statistics."""
        change = _finish(ending.status, error=ending.error, result=ending.result)
        if ending.measured:
            record = self.store.get(ending.profile_id)
            if record is None:
                return "skipped"  # deleted meanwhile
            parts = self.store.parts(ending.profile_id).merge(ending)
            change = _finish(*assembled(record, ending, parts))
        try:
            written = self.store.update(ending.profile_id, change, allowed_from=ACTIVE_STATUSES)
        except (ConflictError, RecordGone):
            written = None  # ended or deleted meanwhile
        # Only once written (a failed write is tried again, from the same stored parts).
        if ending.measured:
            with contextlib.suppress(redis.exceptions.RedisError):
                self.store.drop_parts(ending.profile_id)
        if written is None:
            return "skipped"
        took = (written.finished_at or 0) - (written.started_at or written.created_at)
        self.store.count_finished(written.status, took)
        return written.status

    # the spool: outcomes waiting for Redis, one ``<profile id>.json`` each

    def spooled_files(self) -> list[Path]:
        return sorted(spool_dir(self.settings.data_dir).glob("*.json"))

    def spooled_ids(self) -> set[str]:
        return {path.stem for path in self.spooled_files()}

    def spool(self, ending: JobEnding) -> Path:
        """Keep an ending on disk (0600, in a 0700 folder) until Redis takes it."""
        path = spool_dir(self.settings.data_dir) / f"{ending.profile_id}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(msgspec.json.encode(ending))
        tmp.replace(path)
        return path

    def flush_spool(self) -> int:
        """Write the outcomes that waited for Redis (called by the worker's heartbeat)."""
        written = 0
        for path in self.spooled_files():
            ending = msgspec.json.decode(path.read_bytes(), type=JobEnding)
            status = self.write_end(ending)  # raises while Redis is still away: the file stays
            path.unlink()
            written += 1
            log.warning("wrote the spooled outcome of %s (%s)", ending.profile_id, status)
        return written


def assembled(
    record: ProfileRecord, ending: JobEnding, parts: Parts
) -> tuple[str, str | None, ProfileResult | None]:
    """(status, error, result) of a measured job: the profile assembled from every part (the
    record holds its model and settings, which no later write changes); a job whose every batch
    size failed has failed."""
    result = assemble(
        record.model, record.settings, parts.statics, parts.cells, parts.ends, job_wall_s=ending.job_wall_s
    )
    status, error = ending.status, ending.error
    if result is not None:
        result.fingerprint.device_target = ending.device_target  # as the worker names it
        failed = [b for b in result.batches if b.status == "error"]
        if status == "succeeded" and failed and len(failed) == len(result.batches):
            status = "failed"
            error = f"every batch size failed; batch {failed[0].batch_size}: {failed[0].error}"
    return status, error, result


def _finish(status: str, error: str | None = None, result: ProfileResult | None = None):
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
