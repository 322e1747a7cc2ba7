"""Load: a bounded loopback load against the real service (embedded Redis, a CPU worker, the API):
1,000 GETs and 200 duplicate POSTs (4 distinct requests) from concurrent clients, while the worker
is busy measuring a model (as in real use: the API competes with the measurement for the host).
Reports p50/p99 latency per kind, checks there were no errors and exactly one job per distinct
request, and that the worker was measuring throughout.

    python -m bench.load [--clients 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import environment, write
from tests.helpers import start_service, wait_for


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service = start_service(Path(tmp))
        try:
            with service.client() as client:
                seed = client.post(
                    "/v1/profiles",
                    json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1},
                ).json()
                wait_for(client, seed["id"])
                # Minutes of measuring: the worker is busy for the whole load.
                busy = client.post(
                    "/v1/profiles", json={"model": "resnet50", "batch_sizes": [8], "runs": 1000, "repeats": 1}
                ).json()
                wait_for(client, busy["id"], statuses=("running",))
            bodies = [
                {"model": m, "device": "jetson", "batch_sizes": [1]}
                for m in ("resnet50", "densenet121", "vgg16", "mobilenet_v2")
            ]
            local = {}

            def session() -> httpx.Client:
                import threading

                key = threading.get_ident()
                if key not in local:
                    local[key] = httpx.Client(base_url=service.base_url, timeout=60)
                return local[key]

            def timed(kind: str, i: int):
                c = session()
                start = time.perf_counter()
                if kind == "post":
                    r = c.post("/v1/profiles", json=bodies[i % 4])
                elif i % 3 == 0:
                    r = c.get(f"/v1/profiles/{seed['id']}")
                elif i % 3 == 1:
                    r = c.get("/v1/profiles", params={"limit": 50})
                else:
                    r = c.get("/v1/models", params={"q": "resnet"})
                return (
                    kind,
                    time.perf_counter() - start,
                    r.status_code,
                    (r.json().get("id") if kind == "post" else None),
                )

            work = [("get", i) for i in range(1000)] + [("post", i) for i in range(200)]
            work.sort(key=lambda w: hash(w) % 997)  # interleave the kinds
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                results = list(pool.map(lambda w: timed(*w), work))
            wall = time.perf_counter() - started
            for c in local.values():
                c.close()
            with service.client() as client:
                busy_throughout = client.get(f"/v1/profiles/{busy['id']}").json()["status"] == "running"
                client.delete(f"/v1/profiles/{busy['id']}")
        finally:
            service.stop()
    report = {
        "clients": args.clients,
        "wall_s": wall,
        "requests": len(results),
        "worker_measuring_throughout": busy_throughout,
    }
    for kind in ("get", "post"):
        lat = [r[1] * 1000 for r in results if r[0] == kind]
        errors = [r[2] for r in results if r[0] == kind and r[2] >= 400]
        report[kind] = {
            "count": len(lat),
            "errors": len(errors),
            "p50_ms": statistics.median(lat),
            "p99_ms": percentile(lat, 99),
            "max_ms": max(lat),
        }
    jobs = {r[3] for r in results if r[0] == "post"}
    report["distinct_jobs"] = len(jobs)
    ok = report["get"]["errors"] == 0 and report["post"]["errors"] == 0 and len(jobs) == 4 and busy_throughout
    print(
        f"{len(results)} requests from {args.clients} clients in {wall:.1f} s; "
        f"GET p50 {report['get']['p50_ms']:.1f} ms p99 {report['get']['p99_ms']:.1f} ms; "
        f"POST p50 {report['post']['p50_ms']:.1f} ms p99 {report['post']['p99_ms']:.1f} ms; "
        f"errors {report['get']['errors'] + report['post']['errors']}; jobs {len(jobs)} (expected 4); "
        f"worker measuring throughout: {busy_throughout}: "
        f"{'ok' if ok else 'NOT ok'}"
    )
    write("load", {"environment": environment(), **report, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
