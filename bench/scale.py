"""Scale: the API over a store of 1,000 / 10,000 / 100,000 profiles (issue 16).

Each size gets a fresh embedded Redis filled with synthetic copies of one real profile (resnet18
measured here on the CPU by the real service, kept in ``bench/results/scale-seed.json``): distinct
settings over 200 models x 5 device targets, so the history grows with the size while the set of
(model, target) that count stays at 1,000. One API process (``dnnprof api``, or ``--api-workers``)
serves it; per request kind, the median and p99 over loopback HTTP:

- a profile by id; a filtered listing page (``?model=&limit=10``); ``/metrics``; Table 1; density;
- the time to the first byte of the CSV export (streamed), and its whole time.

Targets at 100,000 (the issue's): /metrics <= 100 ms, a filtered page <= 20 ms, analyses <= 200 ms,
first export byte <= 100 ms, and each no more than twice its figure at 1,000. With ``wrk`` on the
PATH, also GET-by-id throughput at 16 connections for 1 and 2 API workers.

    python -m bench.scale [--sizes 1000 10000 100000] [--requests 60]

``--finish`` measures instead what storing one finished profile costs beside a history of 100 and
of 5,000 profiles of its own group (same model, target, precision; issue 24): the median over
``--finishes`` finishes through ``create_or_get``, interleaved between the two stores, and beside
them, in the same run, one rescan of the group (what every finish cost before: the reference).
Target: the finish at 5,000 no more than 1.3x the finish at 100.

    python -m bench.scale --finish [--finishes 200]

``--rate-limit`` measures what the rate limit costs a request now that its counts live in Redis
(shared by every API process): one client's GETs by id on a store of 1,000 profiles, with the
limit at its default against the limit off (the reference), alternated, over ``--rounds`` rounds.

    python -m bench.scale --rate-limit [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import msgspec

from bench.common import environment, write
from dnnprof.config import Settings
from dnnprof.contract import ProfileRecord
from dnnprof.embedded import EmbeddedRedis
from dnnprof.store import ProfileStore
from dnnprof.store.counting import group_of
from tests.helpers import ROOT, free_port, start_service, wait_for

SEED = ROOT / "bench" / "results" / "scale-seed.json"
MODELS, TARGETS = 200, 5
TARGETS_AT = {"metrics": 100, "page": 20, "table1": 200, "density": 200, "export_first_byte": 100}


def seed_record() -> ProfileRecord:
    """One real profile (resnet18 on this CPU), measured once and kept."""
    if SEED.exists():
        return msgspec.json.decode(SEED.read_bytes(), type=ProfileRecord)
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(Path(tmp))
        try:
            with service.client() as client:
                body = {"model": "resnet18", "batch_sizes": [1, 2, 4], "runs": 5, "repeats": 1}
                job = client.post("/v1/profiles", json=body).json()
                done = wait_for(client, job["id"], timeout=900)
                assert done["status"] == "succeeded", done
                raw = client.get(f"/v1/profiles/{job['id']}").content
        finally:
            service.stop()
    SEED.write_bytes(raw)
    return msgspec.json.decode(raw, type=ProfileRecord)


def spread(i: int) -> tuple[str, str]:
    """200 models x 5 targets, then more history of each."""
    return f"tv:bench{i % MODELS:03d}", f"cuda/bench-gpu-{(i // MODELS) % TARGETS}"


def one_group(i: int) -> tuple[str, str]:
    """Every profile of one model on one target (the history of a single group)."""
    return "tv:bench000", "cuda/bench-gpu-0"


def synthetic(
    seed: ProfileRecord, n: int, place: Callable[[int], tuple[str, str]] = spread
) -> Iterator[ProfileRecord]:
    """``n`` distinct profiles placed by ``place`` (shallow copies of the seed with their own
    settings, model, target and id: nothing else differs)."""
    assert seed.result is not None
    for i in range(n):
        model, target = place(i)
        settings = msgspec.structs.replace(
            seed.settings, model=model, device="cuda", target=target, runs=10 + i
        )
        fingerprint = msgspec.structs.replace(
            seed.result.fingerprint, device_class="cuda", device_target=target, device_name=target
        )
        yield msgspec.structs.replace(
            seed,
            id=f"{i:08d}" + uuid.uuid4().hex[:24],
            created_at=seed.created_at + i,
            settings=settings,
            model=msgspec.structs.replace(seed.model, name=model, paper_name=None),
            result=msgspec.structs.replace(seed.result, settings=settings, fingerprint=fingerprint),
        )


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
    return out


def first_byte(client: httpx.Client, path: str, n: int) -> tuple[list[float], list[float], int]:
    firsts, wholes, size = [], [], 0
    for _ in range(n):
        start = time.perf_counter()
        with client.stream("GET", path) as response:
            chunks = response.iter_bytes()
            size = len(next(chunks))
            firsts.append((time.perf_counter() - start) * 1000)
            size += sum(len(c) for c in chunks)
        wholes.append((time.perf_counter() - start) * 1000)
    return firsts, wholes, size


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 2),
        "n": len(ordered),
    }


@contextlib.contextmanager
def api(url: str, workers: int = 1, rate_limit_per_minute: int = 0, access_log: bool = True):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(
        DNNPROF_REDIS_URL=url,
        DNNPROF_PORT=str(port),
        DNNPROF_RATE_LIMIT_PER_MINUTE=str(rate_limit_per_minute),
        DNNPROF_ACCESS_LOG="1" if access_log else "0",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dnnprof.cli", "api", "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert process.poll() is None, "the API exited"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield base
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


def wrk(base: str, path: str, headers: dict[str, str] | None = None) -> dict | None:
    if shutil.which("wrk") is None:
        return None
    sent = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["wrk", "-t2", "-c16", "-d10s", "--latency", *sent, base + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = next(line for line in out.splitlines() if line.startswith("Requests/sec")).split()[-1]
    p99 = next(line for line in out.splitlines() if line.strip().startswith("99%")).split()[-1]
    return {"requests_per_s": float(rps), "p99": p99}


def measure(seed: ProfileRecord, size: int, requests: int, tmp: Path) -> dict:
    server = EmbeddedRedis(tmp / f"redis-{size}")
    url = server.start()
    try:
        store = ProfileStore.from_url(url)
        store.ensure_indexes()
        start = time.perf_counter()
        store.add_many(synthetic(seed, size))
        fill_s = time.perf_counter() - start
        some = store.list(limit=1, offset=size // 2)[0].id
        row: dict = {"profiles": size, "fill_s": round(fill_s, 1)}
        with api(url) as base, httpx.Client(base_url=base, timeout=120) as client:
            for kind, path, n in (
                ("by_id", f"/v1/profiles/{some}", requests),
                ("page", "/v1/profiles?model=tv:bench007&limit=10", requests),
                ("metrics", "/metrics", requests),
                ("table1", "/v1/analysis/table1", max(10, requests // 3)),
                ("density", "/v1/analysis/density", max(10, requests // 3)),
            ):
                timed(client, path, 3)  # warm
                row[kind] = summary(timed(client, path, n))
            firsts, wholes, nbytes = first_byte(client, "/v1/export.csv", 5)
            row["export_first_byte"] = summary(firsts)
            row["export_whole"] = {**summary(wholes), "bytes": nbytes}
            row["wrk_by_id_1_worker"] = wrk(base, f"/v1/profiles/{some}")
            # The same request answered 304 (the client has it), and the framework's floor in the
            # same run: /healthz, a handler that reads nothing.
            etag = client.get(f"/v1/profiles/{some}").headers.get("etag")
            if etag:
                row["wrk_by_id_304_1_worker"] = wrk(base, f"/v1/profiles/{some}", {"If-None-Match": etag})
            row["wrk_healthz_1_worker"] = wrk(base, "/healthz")
        if shutil.which("wrk") and etag:
            with api(url, access_log=False) as base:  # DNNPROF_ACCESS_LOG=0: the same, unlogged
                row["wrk_by_id_304_1_worker_no_access_log"] = wrk(
                    base, f"/v1/profiles/{some}", {"If-None-Match": etag}
                )
                row["wrk_healthz_1_worker_no_access_log"] = wrk(base, "/healthz")
        if shutil.which("wrk"):
            with api(url, workers=2) as base:
                row["wrk_by_id_2_workers"] = wrk(base, f"/v1/profiles/{some}")
        return row
    finally:
        server.stop()


def rate_limit_cost(seed: ProfileRecord, rounds: int, tmp: Path, requests: int = 1000) -> dict:
    """GET by id, one client, sequential: its latency with the limit at its default (each
    request reads and writes the client's history in Redis) over the same with the limit off,
    both APIs up at once and alternated request by request (a busy moment of the host falls on
    both). Each round starts with no history (Litestar keeps every request of the window: at
    1,000 requests the history is 1,000 long, under the default 1,200 a minute)."""
    server = EmbeddedRedis(tmp / "redis-rate-limit")
    url = server.start()
    try:
        store = ProfileStore.from_url(url)
        store.ensure_indexes()
        store.add_many(synthetic(seed, 1000))
        path = f"/v1/profiles/{store.list(limit=1, offset=500)[0].id}"
        default = Settings().rate_limit_per_minute
        out: dict = {"requests_per_round": requests, "limit_per_minute": default, "rounds": []}
        with (
            api(url, rate_limit_per_minute=0) as off_base,
            api(url, rate_limit_per_minute=default) as on_base,
            httpx.Client(base_url=off_base, timeout=60) as off,
            httpx.Client(base_url=on_base, timeout=60) as on,
        ):
            for _ in range(rounds):
                for key in store.redis.scan_iter("dnnprof:ratelimit*"):
                    store.redis.delete(key)
                times: dict[str, list[float]] = {"off": [], "on": []}
                for _ in range(requests):
                    times["off"] += timed(off, path, 1)
                    times["on"] += timed(on, path, 1)
                row = {name: summary(values) for name, values in times.items()}
                row["on_over_off_median"] = round(row["on"]["median_ms"] / row["off"]["median_ms"], 3)
                row["added_ms_median"] = round(row["on"]["median_ms"] - row["off"]["median_ms"], 3)
                out["rounds"].append(row)
        return out
    finally:
        server.stop()


def finish_cost(seed: ProfileRecord, histories: tuple[int, ...], finishes: int, tmp: Path) -> dict:
    """Per history size, a store holding that many profiles of one group; finishes alternate
    between the stores (so that a busy moment of the host falls on both), each a fresh record."""
    servers, stores = [], {}
    try:
        for n in histories:
            server = EmbeddedRedis(tmp / f"finish-{n}")
            servers.append(server)
            store = ProfileStore.from_url(server.start())
            store.ensure_indexes()
            history = list(synthetic(seed, n, one_group))
            store.add_many(history)
            stores[n] = (store, history[0])
        times: dict[int, list[float]] = {n: [] for n in histories}
        rescans: dict[int, list[float]] = {n: [] for n in histories}
        for i in range(finishes):
            for n, (store, template) in stores.items():
                rec = msgspec.structs.replace(
                    template,
                    id=f"finish{i:05d}" + uuid.uuid4().hex[:19],
                    created_at=template.created_at + 10**6 + i,
                )
                start = time.perf_counter()
                store.create_or_get(rec, force=True)
                times[n].append((time.perf_counter() - start) * 1000)
                if i % 20 == 0:
                    start = time.perf_counter()
                    store.rescan(group_of(rec))
                    rescans[n].append((time.perf_counter() - start) * 1000)
        rows = {
            str(n): {"finish": summary(times[n]), "rescan_reference": summary(rescans[n])} for n in histories
        }
        low, high = histories[0], histories[-1]
        ratio = rows[str(high)]["finish"]["median_ms"] / rows[str(low)]["finish"]["median_ms"]
        rows["ratio"] = {"finish_high_over_low": round(ratio, 2), "target": 1.3, "met": ratio <= 1.3}
        return rows
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--out", default="scale")
    parser.add_argument("--finish", action="store_true", help="the cost of one finish (issue 24)")
    parser.add_argument("--finishes", type=int, default=200)
    parser.add_argument("--rate-limit", action="store_true", help="the rate limit's cost per request")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seed = seed_record()
    if args.rate_limit:
        with tempfile.TemporaryDirectory() as tmp:
            rows = rate_limit_cost(seed, args.rounds, Path(tmp))
        write("scale-rate-limit", {"environment": environment(), "rows": rows})
        print(msgspec.json.encode(rows).decode())
        return 0
    if args.finish:
        with tempfile.TemporaryDirectory() as tmp:
            rows = finish_cost(seed, (100, 5000), args.finishes, Path(tmp))
        write("scale-finish", {"environment": environment(), "histories": rows})
        print(msgspec.json.encode(rows).decode())
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            row = measure(seed, size, args.requests, Path(tmp))
            rows.append(row)
            print(msgspec.json.encode(row).decode(), flush=True)
    smallest, largest = rows[0], rows[-1]
    checks = {}
    for kind, limit in TARGETS_AT.items():
        at = largest[kind]["median_ms"]
        growth = at / smallest[kind]["median_ms"]
        met = at <= limit and growth <= 2
        checks[kind] = {"ms": at, "limit_ms": limit, "growth": round(growth, 2), "met": met}
    report = {"environment": environment(), "rows": rows, "targets": checks}
    write(args.out, report)
    for kind, check in checks.items():
        print(
            f"{kind}: {check['ms']} ms at {largest['profiles']} (limit {check['limit_ms']}), "
            f"x{check['growth']} of {smallest['profiles']}: {'met' if check['met'] else 'NOT met'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
