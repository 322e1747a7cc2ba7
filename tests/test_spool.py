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
from dnnprof.store import ProfileStore
from tests.factories import profile
from tests.helpers import free_port, throwaway_redis
from workers.records import JobRecords


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
        assert JobRecords(away, settings).end(record.id, "succeeded", result=result) == "succeeded"
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
    JobRecords(away, settings).end("0" * 32, "failed", error="the measuring process died")
    with pytest.raises(redis.exceptions.ConnectionError):  # what the heartbeat catches and logs
        JobRecords(away, settings).flush_spool()
    assert [p.name for p in (settings.data_dir / "spool").glob("*.json")] == ["0" * 32 + ".json"]
