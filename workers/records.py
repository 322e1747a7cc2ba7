"""A job's record as the worker changes it: claimed, put back in its queue, ended, and the ending
kept on disk (the spool) while Redis cannot take it. :class:`JobRecords` is what both the job
(:mod:`workers.jobs`) and the heartbeat's sweep (:mod:`workers.celery_app`) write through, so
that each transition is written once. No torch here."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import msgspec
import redis

from dnnprof.config import Settings
from dnnprof.contract import ACTIVE_STATUSES, ProfileRecord, ProfileResult, Progress
from dnnprof.process import spool_dir
from dnnprof.store import ConflictError, ProfileStore, now, with_retries

log = logging.getLogger(__name__)


class SpooledEnd(msgspec.Struct, kw_only=True):
    """A job's outcome that could not be written while Redis was away."""

    profile_id: str
    status: str
    error: str | None = None
    result: ProfileResult | None = None


class JobRecords:
    def __init__(self, store: ProfileStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings

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
        except (ConflictError, KeyError):
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
        except (ConflictError, KeyError):
            return False

    def end(self, profile_id: str, status: str, *, error: str | None = None, result=None) -> str:
        """Write a job's outcome; while Redis is away, retry (DNNPROF_STORE_RETRY_S), then keep it
        in the spool for the worker's heartbeat to write when Redis is back. Never lost."""
        outcome = SpooledEnd(profile_id=profile_id, status=status, error=error, result=result)
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
        """The job's final record, and its count in the job statistics."""
        try:
            record = self.store.update(
                outcome.profile_id,
                _finish(outcome.status, error=outcome.error, result=outcome.result),
                allowed_from=ACTIVE_STATUSES,
            )
        except (ConflictError, KeyError):
            return "skipped"
        took = (record.finished_at or 0) - (record.started_at or record.created_at)
        self.store.count_finished(outcome.status, took)
        return outcome.status

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
            self.write_end(outcome)  # raises while Redis is still away: the file stays
            path.unlink()
            written += 1
            log.warning("wrote the spooled outcome of %s (%s)", outcome.profile_id, outcome.status)
        return written


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
