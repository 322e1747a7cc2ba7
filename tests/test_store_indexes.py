"""The store's indexes and maintained aggregates (issue 16), against a real embedded Redis: a
filtered page reads only its records, the profile that counts follows finishes and deletes, and a
store written before the indexes is indexed at start with nothing lost."""

from __future__ import annotations

import time

import msgspec
import pytest

from dnnprof import indexes
from dnnprof.contract import DeviceFingerprint
from dnnprof.embedded import EmbeddedRedis
from dnnprof.store import ProfileStore
from dnnprof.targets import target_of
from tests.factories import profile
from tests.helpers import until, wait_for


@pytest.fixture
def store(tmp_path):
    server = EmbeddedRedis(tmp_path / "redis")
    store = ProfileStore.from_url(server.start())
    store.ensure_indexes()
    yield store
    server.stop()


def on(target: str, model: str, ms: float = 5.0, **kw):
    fp = DeviceFingerprint(
        device_class=target.split("/")[0],
        device_name=target,
        torch_version="x",
        python_version="3",
        device_target=target,
    )
    return profile(model, device=target.split("/")[0], fingerprint=fp, cells={1: (ms, 100.0)}, **kw)


def bytes_sent(store: ProfileStore) -> int:
    return int(store.redis.info("stats")["total_net_output_bytes"])


def test_a_filtered_page_reads_its_own_records_not_the_whole_store(store):
    many = [on("cpu/a", f"tv:m{i}", created=float(i)) for i in range(1500)]
    for rec in many:
        store.create_or_get(rec)
    wanted = [on("cpu/b", "tv:wanted", created=2000.0 + i) for i in range(3)]
    for rec in wanted:
        store.create_or_get(rec, force=True)
    one_record = len(msgspec.json.encode(wanted[0]))

    before = bytes_sent(store)
    page = store.list(model="tv:wanted", limit=10)
    read = bytes_sent(store) - before
    assert [r.id for r in page] == [r.id for r in reversed(wanted)]
    assert read < 5 * one_record, f"{read} bytes for 3 records of {one_record}"  # 1500 were there

    before = bytes_sent(store)
    assert len(store.list(device="cpu/a", limit=20, offset=100)) == 20
    assert bytes_sent(store) - before < 25 * one_record
    assert store.count(device="cpu") == 1503 and store.count(device="cpu/b", status="succeeded") == 3


def test_filters_intersect_and_cursor_pages_match_offset_pages(store):
    records = [on("cpu/a" if i % 3 else "cuda/x", f"tv:m{i % 5}", created=float(i)) for i in range(60)]
    for rec in records:
        store.create_or_get(rec, force=True)
    queued = on("cpu/a", "tv:m1", created=100.0)
    queued.status, queued.result = "queued", None
    store.create_or_get(queued, force=True)

    def brute(model=None, device=None, status=None):
        chosen = [
            r
            for r in sorted([*records, queued], key=lambda r: r.created_at, reverse=True)
            if (model is None or r.settings.model == model)
            and (device is None or device in (r.settings.device, target_of(r)))
            and (status is None or r.status == status)
        ]
        return [r.id for r in chosen]

    for filters in ({}, {"model": "tv:m1"}, {"device": "cpu"}, {"device": "cuda/x", "model": "tv:m2"}):
        for status in (None, "succeeded", "queued"):
            expected = brute(**filters, status=status)
            assert [r.id for r in store.list(**filters, status=status, limit=1000)] == expected
            assert store.count(**filters, status=status) == len(expected)
            pages, after = [], None
            while page := store.list(**filters, status=status, limit=7, after=after):
                pages += [r.id for r in page]
                after = page[-1].id
            assert pages == expected
            assert [r.id for r in store.iter_records(**filters, status=status, chunk=4)] == expected


def test_the_profile_that_counts_follows_finishes_and_deletes(store):
    clean = on("cuda/x", "tv:a", created=1.0, processes=3)
    noisy = on("cuda/x", "tv:a", created=2.0, processes=3, noisy=True)
    other = on("cuda/y", "tv:a", created=3.0)
    for rec in (clean, noisy, other):
        store.create_or_get(rec, force=True)
    best = {r.id for r in store.counting("best")}
    assert best == {clean.id, other.id}
    assert {r.id for r in store.counting("newest")} == {noisy.id, other.id}
    assert [r.id for r in store.counting("best", device="cuda/x")] == [clean.id]

    # A job that finishes (queued -> succeeded with a result on cuda/x) takes part at once.
    later = on("cuda/x", "tv:a", created=4.0, processes=3)
    result = later.result
    later.status, later.result = "queued", None
    store.create_or_get(later, force=True)
    assert later.id not in {r.id for r in store.counting("newest")}

    def finish(rec):
        rec.status, rec.result = "succeeded", result
        return rec

    store.update(later.id, finish)
    assert {r.id for r in store.counting("best", device="cuda/x")} == {later.id}
    assert store.list(device="cuda/x", status="succeeded", limit=1)[0].id == later.id
    store.delete(later.id)
    assert {r.id for r in store.counting("best", device="cuda/x")} == {clean.id}
    store.delete(clean.id)
    store.delete(noisy.id)
    assert [r.id for r in store.counting("best")] == [other.id]
    assert store.counted_targets() == {"cuda/y"}


def chosen_by_rule(records: dict[str, object], select: str) -> dict[str, str]:
    """The rule written out on every stored record (dnnprof.selection's order, the largest counts):
    the reference the incremental choice must agree with."""
    from dnnprof.selection import order_for

    groups: dict[str, list] = {}
    for rec in records.values():
        if rec.status == "succeeded" and rec.result is not None:
            field = "\t".join(
                (rec.settings.model, target_of(rec), rec.settings.precision, rec.settings.runtime)
            )
            groups.setdefault(field, []).append(rec)
    return {field: max(recs, key=order_for(select)).id for field, recs in groups.items()}


def test_the_incremental_choice_agrees_with_the_rule_over_every_finish_change_and_delete(store):
    """Issue 24: a finish compares with the current choice only; after each of 300 random
    finishes, re-targetings, failures and deletes the hashes equal the rule applied to all."""
    import random

    rng = random.Random(24)
    stored: dict[str, object] = {}
    for step in range(300):
        action = rng.random()
        if action < 0.5 or not stored:
            rec = on(
                rng.choice(["cuda/x", "cuda/y"]),
                rng.choice(["tv:a", "tv:b"]),
                created=float(step),
                processes=rng.choice([1, 3]),
                noisy=rng.random() < 0.3,
            )
            if rng.random() < 0.3:  # queued first, finished by an update
                result = rec.result
                store.create_or_get(msgspec.structs.replace(rec, status="queued", result=None), force=True)
                rec = store.update(
                    rec.id, lambda r, res=result: msgspec.structs.replace(r, status="succeeded", result=res)
                )
            else:
                store.create_or_get(rec, force=True)
            stored[rec.id] = rec
        elif action < 0.8:
            victim = rng.choice(sorted(stored))
            store.delete(victim)
            del stored[victim]
        else:  # a stored profile demoted (marked failed), or sent to the other target
            victim = rng.choice(sorted(stored))
            if rng.random() < 0.5:
                stored[victim] = store.update(victim, lambda r: msgspec.structs.replace(r, status="failed"))
            else:
                moved = "cuda/y" if target_of(stored[victim]) == "cuda/x" else "cuda/x"
                fp = msgspec.structs.replace(stored[victim].result.fingerprint, device_target=moved)
                stored[victim] = (
                    store.update(
                        victim,
                        lambda r, fp=fp: msgspec.structs.replace(
                            r, result=msgspec.structs.replace(r.result, fingerprint=fp)
                        ),
                    )
                    if stored[victim].result is not None
                    else stored[victim]
                )
        for select in indexes.SELECTIONS:
            got = {
                f.decode(): i.decode() for f, i in store.redis.hgetall(indexes.counting_key(select)).items()
            }
            assert got == chosen_by_rule(stored, select), (step, select)


def test_a_finish_reads_the_same_whatever_its_groups_history(store):
    """Issue 24: storing one finished profile read every succeeded record of its group before
    (O(history)); now a finish reads the group's current choice only."""
    one_record = len(msgspec.json.encode(on("cuda/x", "tv:a")))

    def bytes_for_one_finish(history: int, offset: float) -> int:
        store.add_many(on("cuda/x", "tv:a", created=offset + i) for i in range(history))
        rec = on("cuda/x", "tv:a", created=offset + history + 1)
        before = bytes_sent(store)
        store.create_or_get(rec, force=True)  # the same settings as its history: a re-measure
        return bytes_sent(store) - before

    small = bytes_for_one_finish(10, 0.0)
    large = bytes_for_one_finish(1000, 100.0)
    assert large < 4 * one_record, f"{large} bytes for a finish beside 1,010 stored ({one_record} a record)"
    assert large <= small + 200, (small, large)
    assert store.counting("newest")[0].created_at == 1101.0


def test_a_store_written_before_the_indexes_is_indexed_at_start_with_nothing_lost(store):
    old = [on("cpu/a", f"tv:m{i % 4}", created=float(i)) for i in range(250)]
    # As the store wrote records before indexes existed: the record and the time-ordered set only.
    store.redis.flushdb()
    with store.redis.pipeline() as pipe:
        for rec in old:
            pipe.set(f"dnnprof:profile:{rec.id}", msgspec.json.encode(rec))
            pipe.zadd("dnnprof:profiles", {rec.id: rec.created_at})
        pipe.execute()
    assert not store.indexes_ready() and store.list(model="tv:m1") == []
    lines: list[str] = []
    assert store.ensure_indexes(log=lines.append, chunk=100) == 250
    assert store.indexes_ready() and any("indexed 200/250" in line for line in lines)
    assert store.count(model="tv:m1") == 63 and store.count(device="cpu/a", status="succeeded") == 250
    assert {r.settings.model for r in store.counting("best")} == {"tv:m0", "tv:m1", "tv:m2", "tv:m3"}
    assert store.ensure_indexes() == 0  # idempotent
    assert all(store.get(r.id) == r for r in old)
    assert store.redis.get(indexes.VERSION_KEY) == indexes.INDEX_VERSION.encode()


def test_a_store_of_the_layout_before_runtimes_is_reindexed_with_its_choices_kept(store):
    """Index layout 1 keyed the counting hashes by (model, target, precision); layout 2 adds the
    runtime. A store written by layout 1 is re-indexed at start: every profile is eager, each
    group's choice is the same profile, and the old three-part fields are gone."""
    records = [on("cpu/a", f"tv:m{i % 3}", created=float(i)) for i in range(9)]
    for rec in records:
        store.create_or_get(rec, force=True)
    chosen = {r.settings.model: r.id for r in store.counting("best")}
    with store.redis.pipeline() as pipe:  # as layout 1 left them
        for select in indexes.SELECTIONS:
            key = indexes.counting_key(select)
            pipe.delete(key)
            for model, profile_id in chosen.items():
                pipe.hset(key, "\t".join((model, "cpu/a", "fp32")), profile_id)
        pipe.set(indexes.VERSION_KEY, "1")
        pipe.execute()
    assert not store.indexes_ready()
    assert store.ensure_indexes() == 9
    fields = {f.decode() for f in store.redis.hkeys(indexes.counting_key("best"))}
    assert fields == {"\t".join((m, "cpu/a", "fp32", "eager")) for m in chosen}
    assert {r.settings.model: r.id for r in store.counting("best", runtime="eager")} == chosen
    assert store.count(runtime="eager") == 9 and store.count(runtime="onnxruntime") == 0


@pytest.mark.slow  # starts the session's service
def test_listing_pages_follow_the_link_header_and_exports_stream_with_the_same_filters(client):
    everything = client.get("/v1/profiles", params={"limit": 1000}).json()
    if len(everything) < 2:  # run alone: no earlier test stored profiles in the session's service
        for batch in (1, 2):
            body = {"model": "shufflenet_v2_x1_5", "batch_sizes": [batch], "runs": 2, "repeats": 1}
            job = client.post("/v1/profiles", json=body).json()
            assert wait_for(client, job["id"])["status"] == "succeeded"
        everything = client.get("/v1/profiles", params={"limit": 1000}).json()
    assert len(everything) >= 2
    seen, url, params = [], "/v1/profiles", {"limit": 1}
    while url:
        response = client.get(url, params=params)
        assert response.status_code == 200
        seen += [p["id"] for p in response.json()]
        link = response.headers.get("link")
        url, params = (link.split(";")[0].strip("<>"), None) if link else (None, None)
    assert seen == [p["id"] for p in everything]
    # Found by Schemathesis: an offset past 64 bits reached Redis and came back a 500.
    far = client.get("/v1/profiles", params={"status": "running", "offset": 1961899581609320603859631996928})
    assert far.status_code in (400, 422) and "offset" in far.text
    refused = client.get("/v1/profiles", params={"after": "no such id!"})
    assert refused.status_code in (400, 422) and "after" in refused.text

    model = everything[0]["settings"]["model"]
    exported = client.get("/v1/export.json", params={"model": model}).json()
    assert [p["id"] for p in exported] == [p["id"] for p in everything if p["settings"]["model"] == model]
    rows = client.get("/v1/export.csv", params={"model": model, "status": "succeeded"}).text.splitlines()
    assert rows[0].startswith("profile_id,model") and all(model in r for r in rows[1:])
    import io

    import pyarrow.parquet as pq

    parquet = client.get("/v1/export.parquet", params={"model": model})
    assert parquet.status_code == 200
    table = pq.read_table(io.BytesIO(parquet.content))
    assert table.num_rows == len(rows) - 1 and table.column_names == rows[0].split(",")
    assert str(table.schema.field("ms_per_image_mean").type) == "double"


def test_the_figures_version_moves_with_what_the_figures_show(store):
    """/metrics re-renders its figures only when this changes: it must change on each event."""
    from dnnprof.contract import PublishedResult

    seen = [store.figures_version()]
    rec = on("cpu/a", "tv:v")
    store.create_or_get(rec)  # a succeeded profile: it counts
    seen.append(store.figures_version())
    store.import_published("t", [PublishedResult(model="v", resolved="tv:v", source="t", top1=70.0)])
    seen.append(store.figures_version())
    store.delete_published("t")
    seen.append(store.figures_version())
    store.delete(rec.id)
    seen.append(store.figures_version())
    assert len(set(seen)) == len(seen), seen
    before = store.figures_version()
    queued = msgspec.structs.replace(on("cpu/a", "tv:w"), status="queued", result=None)
    store.create_or_get(queued)
    assert store.figures_version() == before  # a queued job shows in no figure


def test_finding_the_workers_reads_their_registry_not_the_keyspace(store):
    """/readyz, routing and every scrape ask for the workers: a scan would read every key."""
    from dnnprof.contract import WorkerInfo

    store.add_many(on("cpu/a", f"tv:m{i}") for i in range(3000))
    now_s = time.time()
    alive = WorkerInfo(hostname="a", device_class="cpu", pid=1, started_at=now_s, seen_at=now_s)
    store.heartbeat(alive, ttl_s=30)
    store.heartbeat(msgspec.structs.replace(alive, hostname="b"), ttl_s=1)
    scans = store.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    assert {w.hostname for w in store.workers()} == {"a", "b"}
    until(lambda: {w.hostname for w in store.workers()} == {"a"}, ceiling_s=30, what="b expired")
    store.forget_worker(alive)
    assert store.workers() == []
    assert store.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0) == scans
