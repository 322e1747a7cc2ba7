"""The spool (workers/records.py): a job's outcome that Redis could not take within
DNNPROF_STORE_RETRY_S waits on disk (0600 in a 0700 folder) and is written, once, when Redis is
back; nothing is lost. Against a real Redis that goes away and comes back on the same data."""

from __future__ import annotations

import dataclasses
import os
import signal
import stat

import pytest
import redis

from dnnprof.config import Settings
from dnnprof.contract import DeviceFingerprint, FlopCount, ProcessCell, ProcessStatic
from dnnprof.store import ProfileStore
from tests.factories import profile
from tests.helpers import free_port, throwaway_redis
from workers.records import JobEnding, JobRecords


def test_an_outcome_redis_cannot_take_waits_in_the_spool_and_is_written_when_it_is_back(tmp_path):
    server, url = throwaway_redis(tmp_path)
    try:
        store = ProfileStore.from_url(url)
        record = profile("resnet18", device="cpu", cells={1: (10.0, 100.0)})
        result = record.result
        record.status, record.result = "running", None
        store.create_or_get(record)
        settings = dataclasses.replace(Settings(), data_dir=tmp_path / "data", store_retry_s=1)
        # Redis away: a store on a port nothing listens on.
        away = ProfileStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
        ending = JobEnding(profile_id=record.id, status="succeeded", result=result)
        assert JobRecords(away, settings).end(ending) == "succeeded"
        [spooled] = list((settings.data_dir / "spool").glob("*.json"))
        assert spooled.name == f"{record.id}.json"
        assert stat.S_IMODE(spooled.stat().st_mode) == 0o600
        assert stat.S_IMODE(spooled.parent.stat().st_mode) == 0o700
        assert store.get(record.id).status == "running"  # not written yet
        # Redis is back: the worker's heartbeat writes it, once.
        assert JobRecords(store, settings).flush_spool() == 1
        written = store.get(record.id)
        assert written.status == "succeeded" and written.result == result
        assert not list((settings.data_dir / "spool").glob("*.json"))
        assert JobRecords(store, settings).flush_spool() == 0
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_a_spooled_outcome_stays_while_redis_is_still_away(tmp_path):
    settings = dataclasses.replace(Settings(), data_dir=tmp_path / "data", store_retry_s=1)
    away = ProfileStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
    JobRecords(away, settings).end(JobEnding(profile_id="0" * 32, status="failed", error="died"))
    with pytest.raises(redis.exceptions.ConnectionError):  # what the heartbeat catches and logs
        JobRecords(away, settings).flush_spool()
    assert [p.name for p in (settings.data_dir / "spool").glob("*.json")] == ["0" * 32 + ".json"]


def measured_parts(record, *cells: ProcessCell) -> tuple[ProcessStatic, list[ProcessCell]]:
    static = ProcessStatic(
        process=0,
        params=11_689_512,  # resnet18, torchvision's metadata
        param_file_bytes_fp32=4 * 11_689_512,
        param_file_bytes=4 * 11_689_512,
        input_size=224,
        flops=FlopCount(flops=3_600_000_000, method="test"),
        fingerprint=DeviceFingerprint(
            device_class="cpu", device_name="cpu", torch_version="x", python_version="3"
        ),
        timing_method="test",
    )
    return static, list(cells)


def ok_cell(batch_size: int) -> ProcessCell:
    return ProcessCell(process=0, batch_size=batch_size, status="ok", run_seconds=[0.01 * batch_size] * 5)


def test_a_measured_ending_is_assembled_from_what_the_processes_stored_and_handed_back(tmp_path):
    """The measuring process stored batch 1 in Redis, then died (it handed nothing back); the
    job handed back batch 2 (as a process that ended would). Written after the spool, the result
    holds both, the job's target and wall time, and the stored parts are gone."""
    server, url = throwaway_redis(tmp_path)
    try:
        store = ProfileStore.from_url(url)
        record = profile("resnet18", device="cpu", cells={1: (10.0, 100.0), 2: (10.0, 100.0)})
        record.status, record.result = "running", None  # settings: batch sizes 1 and 2
        store.create_or_get(record)
        static, [one, two] = measured_parts(record, ok_cell(1), ok_cell(2))
        store.put_part(record.id, static)
        store.put_part(record.id, one)
        settings = dataclasses.replace(Settings(), data_dir=tmp_path / "data", store_retry_s=1)
        away = ProfileStore.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
        handed_back = JobEnding(
            profile_id=record.id,
            status="failed",
            error="died",
            measured=True,
            cells=[two],
            job_wall_s=12.5,
            device_target="cpu/test-box",
        )
        JobRecords(away, settings).end(handed_back)
        assert JobRecords(store, settings).flush_spool() == 1
        written = store.get(record.id)
        assert written.status == "failed" and written.error == "died"
        assert [b.batch_size for b in written.result.batches] == [1, 2]
        assert written.result.fingerprint.device_target == "cpu/test-box"
        assert store.parts(record.id).cells == []  # dropped once written
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_a_measured_job_whose_every_batch_size_failed_has_failed(tmp_path):
    server, url = throwaway_redis(tmp_path)
    try:
        store = ProfileStore.from_url(url)
        record = profile("resnet18", device="cpu", cells={1: (10.0, 100.0)})
        record.status, record.result = "running", None
        store.create_or_get(record)
        broken = [ProcessCell(process=0, batch_size=b, status="error", error="bad kernel") for b in (1, 2)]
        static, cells = measured_parts(record, *broken)
        settings = dataclasses.replace(Settings(), data_dir=tmp_path / "data")
        ending = JobEnding(
            profile_id=record.id, status="succeeded", measured=True, statics=[static], cells=cells
        )
        status = JobRecords(store, settings).end(ending)
        written = store.get(record.id)
        assert status == written.status == "failed"
        assert written.error == "every batch size failed; batch 1: bad kernel"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
