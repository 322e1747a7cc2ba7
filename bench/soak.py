"""Soak: the embedded default under mixed traffic for a bounded time, on loopback, with the worker
and the embedded Redis killed at random moments. Reports the requests served (and how many were
answered 503 while Redis was down), the jobs finished, the jobs lost (must be 0: every job ends
succeeded, failed with a reason or cancelled) and the longest time any job spent stuck (queued or
running without its progress changing).

    python -m bench.soak [--minutes 30] [--seed 1] [--kill-every-s 120]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.common import environment, stamp, write
from tests.helpers import start_service

MODELS = ("squeezenet1_1", "squeezenet1_0", "mobilenet_v3_small", "shufflenet_v2_x0_5", "resnet18")


def children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return [
        (int(line.split()[0]), line.split(None, 1)[1]) for line in out.stdout.splitlines() if line.strip()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every-s", type=float, default=120.0, help="mean time between kills")
    parser.add_argument("--settle-minutes", type=float, default=20.0, help="ceiling for jobs to end after")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    counts = {
        "requests": 0,
        "ok": 0,
        "unavailable_503": 0,
        "other_errors": 0,
        "kills_worker": 0,
        "kills_redis": 0,
    }
    jobs: dict[str, dict] = {}  # id -> {"last_change": t, "state": (status, progress), "stuck_s": max}
    stop = threading.Event()

    with tempfile.TemporaryDirectory(prefix="dnnprof-soak-") as tmp:
        service = start_service(Path(tmp), env={"DNNPROF_HEARTBEAT_S": "2"})
        client = httpx.Client(base_url=service.base_url, timeout=30)

        def request(method: str, path: str, **kw) -> httpx.Response | None:
            counts["requests"] += 1
            try:
                response = client.request(method, path, **kw)
            except httpx.HTTPError:
                counts["other_errors"] += 1
                return None
            if response.status_code == 503:
                counts["unavailable_503"] += 1
            elif response.status_code >= 500:
                counts["other_errors"] += 1
            else:
                counts["ok"] += 1
            return response

        def killer() -> None:
            while not stop.wait(rng.expovariate(1 / args.kill_every_s)):
                family = children(service.process.pid)
                if rng.random() < 0.5:
                    target = [p for p, a in family if "dnnprof.cli worker" in a]
                    if target:
                        os.killpg(target[0], signal.SIGKILL)
                        counts["kills_worker"] += 1
                        stamp("killed the worker")
                else:
                    target = [p for p, a in family if "redis-server" in a]
                    if target:
                        os.kill(target[0], signal.SIGKILL)
                        counts["kills_redis"] += 1
                        stamp("killed Redis")

        def observe() -> None:
            now = time.monotonic()
            for job_id, seen in jobs.items():
                if seen.get("final"):
                    continue
                response = request("GET", f"/v1/profiles/{job_id}")
                if response is None or response.status_code != 200:
                    continue
                body = response.json()
                state = (body["status"], str(body["progress"]))
                if state != seen["state"]:
                    seen["state"], seen["last_change"] = state, now
                seen["stuck_s"] = max(seen["stuck_s"], now - seen["last_change"])
                if body["status"] in ("succeeded", "failed", "cancelled"):
                    seen["final"] = body["status"]

        threading.Thread(target=killer, daemon=True).start()
        started = time.monotonic()
        end = started + args.minutes * 60
        stamp(f"soak for {args.minutes} min (seed {args.seed}), kills every ~{args.kill_every_s:.0f} s")
        try:
            while time.monotonic() < end:
                roll = rng.random()
                if roll < 0.15:
                    body = {
                        "model": rng.choice(MODELS),
                        "batch_sizes": rng.sample([1, 2, 4], k=rng.randint(1, 2)),
                        "runs": rng.randint(2, 6),
                        "repeats": rng.randint(1, 2),
                        "force": rng.random() < 0.3,
                    }
                    response = request("POST", "/v1/profiles", json=body)
                    if response is not None and response.status_code in (200, 202):
                        job_id = response.json()["id"]
                        jobs.setdefault(
                            job_id, {"state": None, "last_change": time.monotonic(), "stuck_s": 0.0}
                        )
                elif roll < 0.2 and jobs:
                    request("DELETE", f"/v1/profiles/{rng.choice(list(jobs))}")
                else:
                    path = rng.choice(
                        ["/v1/profiles", "/v1/analysis/table1", "/metrics", "/readyz", "/v1/models?q=res"]
                    )
                    request("GET", path)
                observe()
                time.sleep(rng.uniform(0.05, 0.5))
            stop.set()
            stamp("traffic over; waiting for every job to end")
            settle = time.monotonic() + args.settle_minutes * 60
            while time.monotonic() < settle and not all(j.get("final") for j in jobs.values()):
                observe()
                time.sleep(1)
        finally:
            stop.set()
            client.close()
            service.stop()

    for job_id, seen in jobs.items():
        if not seen.get("final"):
            stamp(f"not ended: {job_id}: last seen {seen['state']}")
    finals = [j.get("final") for j in jobs.values()]
    report = {
        **counts,
        "minutes": args.minutes,
        "seed": args.seed,
        "jobs": len(jobs),
        "jobs_succeeded": finals.count("succeeded"),
        "jobs_failed": finals.count("failed"),
        "jobs_cancelled": finals.count("cancelled"),
        "jobs_lost": sum(1 for f in finals if f is None),
        "longest_stuck_s": max((j["stuck_s"] for j in jobs.values()), default=0.0),
    }
    ok = report["jobs_lost"] == 0 and report["other_errors"] == 0
    stamp(
        f"{report['requests']} requests ({report['unavailable_503']} 503 while Redis was down, "
        f"{report['other_errors']} other errors); {report['jobs']} jobs: "
        f"{report['jobs_succeeded']} succeeded, "
        f"{report['jobs_failed']} failed, {report['jobs_cancelled']} cancelled, {report['jobs_lost']} lost; "
        f"longest stuck {report['longest_stuck_s']:.0f} s; kills: {report['kills_worker']} worker, "
        f"{report['kills_redis']} Redis: {'ok' if ok else 'NOT ok'}"
    )
    write("soak", {"environment": environment(), **report, "ok": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
