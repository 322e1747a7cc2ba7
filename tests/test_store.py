"""The Redis store against a real (embedded) Redis server."""

from __future__ import annotations

import threading
import uuid

import pytest

from dnnprof.contract import ModelInfo, ProfileRecord, ProfileSettings, WorkerInfo
from dnnprof.embedded import EmbeddedRedis
from dnnprof.store import ConflictError, ProfileStore, RecordGone, now


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    yield ProfileStore.from_url(url)
    server.stop()


def record(model: str = "tv:resnet18", **kw) -> ProfileRecord:
    settings = ProfileSettings(
        model=model, device="cpu", batch_sizes=(1, 2), runs=10, precision="fp32", input_size=224
    )
    info = ModelInfo(name=model, source="tv", architecture=model.split(":")[1], input_size=224)
    return ProfileRecord(
        id=uuid.uuid4().hex, status="queued", settings=settings, model=info, created_at=now(), **kw
    )


def test_concurrent_equal_requests_make_exactly_one_job(store):
    results = []

    def post():
        results.append(store.create_or_get(record("tv:dedupe_race")))

    threads = [threading.Thread(target=post) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(created for _, created in results) == 1
    assert len({rec.id for rec, _ in results}) == 1


def test_failed_job_is_replaced_by_a_new_equal_request_and_force_replaces_anything(store):
    first, created = store.create_or_get(record("tv:replace"))
    assert created
    store.update(first.id, lambda r: setattr(r, "status", "failed") or r)
    second, created = store.create_or_get(record("tv:replace"))
    assert created and second.id != first.id
    third, created = store.create_or_get(record("tv:replace"), force=True)
    assert created and third.id != second.id
    assert store.get(second.id) is not None  # the replaced record stays readable by id


def test_update_refuses_a_transition_from_a_finished_state(store):
    rec, _ = store.create_or_get(record("tv:guard"))
    store.update(rec.id, lambda r: setattr(r, "status", "cancelled") or r, allowed_from=("queued",))
    with pytest.raises(ConflictError):
        store.update(
            rec.id, lambda r: setattr(r, "status", "succeeded") or r, allowed_from=("queued", "running")
        )
    assert store.get(rec.id).status == "cancelled"
    with pytest.raises(RecordGone):
        store.update("missing", lambda r: r)


def test_a_key_error_inside_an_update_is_a_bug_not_a_deleted_job(store):
    """Issue 40 (4): "record not found" was a bare KeyError, and the workers caught KeyError
    broadly, so a KeyError bug inside an update closure read as "job deleted" and the write was
    dropped. Gone is RecordGone, caught by name; a closure's KeyError surfaces."""
    from dnnprof.config import Settings
    from workers.records import JobRecords

    assert not issubclass(RecordGone, KeyError)
    rec, _ = store.create_or_get(record("tv:keyerror"))

    def buggy(r):
        return {}["missing"]

    with pytest.raises(KeyError):
        store.update(rec.id, buggy)
    jobs = JobRecords(store, Settings())
    assert jobs.claim("no-such-job", "w1") is None  # gone: nothing to claim
    claimed = jobs.claim(rec.id, "w1")
    assert claimed is not None and claimed.status == "running"
    assert jobs.requeue("no-such-job", from_worker="w1") is False


def test_delete_removes_the_record_its_index_entry_and_its_dedupe_pointer(store):
    rec, _ = store.create_or_get(record("tv:delete_me"))
    assert store.delete(rec.id)
    assert store.get(rec.id) is None
    assert rec.id not in [r.id for r in store.list(limit=1000)]
    again, created = store.create_or_get(record("tv:delete_me"))
    assert created and again.id != rec.id
    assert not store.delete("missing")


def test_list_filters_and_pages_newest_first(store):
    ids = [store.create_or_get(record(f"tv:list{i}"))[0].id for i in range(3)]
    listed = [r.id for r in store.list(limit=1000) if r.id in ids]
    assert listed == ids[::-1]
    assert [r.id for r in store.list(model="tv:list1")] == [ids[1]]
    assert store.list(model="tv:list1", device="cuda") == []


def test_heartbeats_expire(store):
    info = WorkerInfo(hostname="w@h", device_class="cuda", pid=1, started_at=now(), seen_at=now())
    store.heartbeat(info, ttl_s=1)
    assert store.live_device_classes().get("cuda") == 1
    store.redis.pexpire("dnnprof:worker:cuda:w@h", 1)
    import time

    time.sleep(0.05)
    assert store.live_device_classes().get("cuda") is None


def test_the_embedded_redis_stops_at_once(tmp_path):
    """`dnnprof serve`'s Ctrl-C waited ~4 s on its Redis: SHUTDOWN ends the connection, which
    redis-py's default retry (10 times, jittered back-off from 0.02 s doubling to a 1 s cap) read
    as a failure and sent again, 3.9 s of back-off on average. Stopped three times, each under
    1.5 s: the back-off stays under that about once in 5,000 (simulated from redis-py 8.1's
    ExponentialWithJitterBackoff), in all three never; the stop itself takes milliseconds."""
    import time

    for attempt in range(3):
        server = EmbeddedRedis(tmp_path / f"redis-{attempt}")
        server.start()
        process = server.process
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
        assert process.poll() is not None and took < 1.5, f"stopped in {took:.2f} s"
