"""Soak: the embedded default under mixed traffic for a bounded time, on loopback, with the worker
and the embedded Redis killed at random moments. Reports the requests served (and how many were
answered 503 while Redis was down), the jobs finished, the jobs lost (must be 0: every job ends
succeeded, failed with a reason or cancelled; one still unfinished when the settle time ends is lost
when nothing can run it any more: its record gone, or queued with no message for a worker to take)
and the longest time any job spent stuck: running without its progress changing, or queued while
no job of the soak progressed (waiting its turn behind a job that progresses is not stuck).

At most ``--max-in-flight`` of the soak's jobs are unfinished at a time (a POST beyond that is
replaced by a GET), so one CPU worker restarted every minute can keep up with the traffic.

Issue 28's round: ``--pause-redis`` also freezes Redis (SIGSTOP) for 20–60 s at some of those
moments, and ``--second-worker`` starts another CPU worker on the same Redis and host (one device
for two workers). A watcher samples the measuring processes every 50 ms: the most ever seen at
once must be 1 (one device, one measurement).

Issue 44's round: the second worker runs under a hostname of its own (a UTS namespace, as a
container has: ``unshare --uts``, where this runs as root), so only the physical device's lease
keeps the two apart; ``--fill-redis N`` fills Redis to its ``maxmemory`` N times (evenly over the
soak) for 20 s each, then gives it room again. While full, a POST is a 507 (counted apart, not an
error). A job still unfinished after 2 minutes without progress counts as stuck: the target is
none.

    python -m bench.soak [--minutes 30] [--seed 1] [--kill-every-s 120] [--max-in-flight 4]
                         [--pause-redis] [--second-worker] [--fill-redis 2] [--name soak-round4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import redis

from bench.common import environment, stamp, write
from tests import helpers
from tests.helpers import start_service

MODELS = ("squeezenet1_1", "squeezenet1_0", "mobilenet_v3_small", "shufflenet_v2_x0_5", "resnet18")
STUCK_LIMIT_S = 120.0  # issue 44: no job stuck over 2 minutes
FULL_S = 20.0  # how long Redis stays full each time (issue 44's own run)
SECOND_HOSTNAME = "soak-second"


def children(pid: int) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return [
        (int(line.split()[0]), line.split(None, 1)[1]) for line in out.stdout.splitlines() if line.strip()
    ]


def measuring_processes(redis_url: str) -> list[str]:
    """The profile ids the measuring processes of this soak's workers measure (their environment
    names its Redis, in any of its spellings: other runs on the host are not counted)."""
    from dnnprof.queue import celery_url
    from dnnprof.store import redis_py_url

    spellings = {redis_url, celery_url(redis_url), redis_py_url(redis_url)}
    mine = {f"DNNPROF_REDIS_URL={url}".encode() for url in spellings}
    return helpers.measuring_processes(
        lambda proc, session: bool(mine & set((proc / "environ").read_bytes().split(b"\0")))
    )


class MeasuringWatch(threading.Thread):
    """The most measuring processes seen at once, and what they were."""

    def __init__(self, redis_url: str) -> None:
        super().__init__(daemon=True)
        self.redis_url = redis_url
        self.most, self.seen, self.overlaps, self.stopped = 0, [], 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.05):
            now = measuring_processes(self.redis_url)
            if len(now) > 1:
                self.overlaps += 1
            if len(now) > self.most:
                self.most, self.seen = len(now), now


def nothing_runs(service, job_ids: list[str]) -> set[str]:
    """Of these unfinished jobs, those nothing will ever run: the record gone, or queued with no
    message waiting in its queue nor held by a worker."""
    from dnnprof.queue import route_of
    from dnnprof.store import ProfileStore

    if not job_ids:
        return set()
    store = ProfileStore.from_url(service.redis_url())
    held = store.unacked_task_ids()
    lost = set()
    for job_id in job_ids:
        record = store.get(job_id)
        if record is None:
            lost.add(job_id)
        elif record.status == "queued":
            waiting = store.queued_task_ids(route_of(record.settings))
            if job_id not in waiting and job_id not in held:
                lost.add(job_id)
    return lost


def can_rename_host() -> bool:
    """Whether a worker can get a hostname of its own here (a UTS namespace: root and unshare)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def start_second_worker(service, tmp: Path) -> subprocess.Popen:
    """Another CPU worker on the service's Redis, on this host: the same device as the first,
    under a hostname of its own where this host allows it (what a second container is)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(
        DNNPROF_REDIS_URL=service.redis_url(),
        DNNPROF_HEARTBEAT_S="2",
        DNNPROF_QUIET_WAIT_S="5",  # as the service's own worker (tests.helpers.start_service)
        DNNPROF_WORKER_METRICS_PORT="0",
        DNNPROF_DATA_DIR=str(tmp / "second-worker"),
    )
    command = [sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"]
    if can_rename_host():
        script = 'hostname "$1" && exec "$0" -m dnnprof.cli worker --device cpu'
        command = ["unshare", "--uts", "--fork", "sh", "-c", script, sys.executable, SECOND_HOSTNAME]
    log = open(tmp / "second-worker.log", "wb")  # noqa: SIM115 - the worker keeps it
    return subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-every-s", type=float, default=120.0, help="mean time between kills")
    parser.add_argument("--settle-minutes", type=float, default=20.0, help="ceiling for jobs to end after")
    parser.add_argument("--max-in-flight", type=int, default=4, help="the soak's unfinished jobs at most")
    parser.add_argument("--pause-redis", action="store_true", help="also freeze Redis for 20-60 s")
    parser.add_argument("--second-worker", action="store_true", help="a second CPU worker on the same Redis")
    parser.add_argument("--fill-redis", type=int, default=0, help="fill Redis to maxmemory this many times")
    parser.add_argument("--name", help="the results file's name (bench/results/NAME.json)")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    counts = {
        "requests": 0,
        "ok": 0,
        "unavailable_503": 0,
        "other_errors": 0,
        "kills_worker": 0,
        "kills_redis": 0,
        "pauses_redis": 0,
        "fills_redis": 0,
        "full_507": 0,
        "client_timeouts": 0,
    }
    jobs: dict[str, dict] = {}  # id -> {"last_change": t, "state": (status, progress), "stuck_s": max}
    stop = threading.Event()

    with tempfile.TemporaryDirectory(prefix="dnnprof-soak-") as tmp:
        service = start_service(Path(tmp), env={"DNNPROF_HEARTBEAT_S": "2"})
        # A request during a 60 s pause waits on Redis (a 503 after the store's timeouts): give it
        # the time, and count a client timeout apart from a server error.
        client = httpx.Client(base_url=service.base_url, timeout=120)
        second = start_second_worker(service, Path(tmp)) if args.second_worker else None
        watch = MeasuringWatch(service.redis_url())
        watch.start()

        def request(method: str, path: str, **kw) -> httpx.Response | None:
            counts["requests"] += 1
            try:
                response = client.request(method, path, **kw)
            except httpx.TimeoutException:
                counts["client_timeouts"] += 1
                return None
            except httpx.HTTPError:
                counts["other_errors"] += 1
                return None
            if response.status_code == 503:
                counts["unavailable_503"] += 1
            elif response.status_code == 507:
                counts["full_507"] += 1
            elif response.status_code >= 500:
                counts["other_errors"] += 1
            else:
                counts["ok"] += 1
            return response

        def killer() -> None:
            while not stop.wait(rng.expovariate(1 / args.kill_every_s)):
                family = children(service.process.pid)
                if args.pause_redis and rng.random() < 0.4:
                    target = [p for p, a in family if "redis-server" in a]
                    if target:
                        seconds = rng.uniform(20, 60)
                        stamp(f"pausing Redis for {seconds:.0f} s")
                        os.kill(target[0], signal.SIGSTOP)
                        time.sleep(seconds)
                        os.kill(target[0], signal.SIGCONT)
                        counts["pauses_redis"] += 1
                elif rng.random() < 0.5:
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

        def filler() -> None:
            """Redis full (maxmemory just under what it holds) for FULL_S, args.fill_redis times,
            evenly over the soak; a fill that finds Redis away (killed, paused) is tried again."""
            gap = args.minutes * 60 / (args.fill_redis + 1)
            for _ in range(args.fill_redis):
                if stop.wait(gap):
                    return
                while not stop.is_set():
                    try:
                        raw = redis.Redis.from_url(service.redis_url(), socket_timeout=5)
                        raw.config_set("maxmemory-policy", "noeviction")
                        raw.config_set("maxmemory", str(int(raw.info("memory")["used_memory"]) - 1024))
                        stamp(f"Redis full for {FULL_S:.0f} s")
                        time.sleep(FULL_S)
                        raw.config_set("maxmemory", "0")
                        counts["fills_redis"] += 1
                        stamp("Redis has room again")
                        break
                    except redis.RedisError as exc:
                        stamp(f"filling Redis waits: {exc}")
                        with contextlib.suppress(redis.RedisError):  # never leave it full
                            again = redis.Redis.from_url(service.redis_url(), socket_timeout=5)
                            again.config_set("maxmemory", "0")
                        stop.wait(5)

        def observe() -> None:
            now = time.monotonic()
            progressed = False
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
                    progressed = True
                if body["status"] in ("succeeded", "failed", "cancelled"):
                    seen["final"] = body["status"]
            for seen in jobs.values():
                if seen.get("final"):
                    continue
                if progressed and seen["state"] and seen["state"][0] == "queued":
                    seen["last_change"] = now  # waiting its turn behind a job that progresses
                seen["stuck_s"] = max(seen["stuck_s"], now - seen["last_change"])

        def in_flight() -> int:
            return sum(1 for seen in jobs.values() if not seen.get("final"))

        threading.Thread(target=killer, daemon=True).start()
        threading.Thread(target=filler, daemon=True).start()
        started = time.monotonic()
        end = started + args.minutes * 60
        stamp(f"soak for {args.minutes} min (seed {args.seed}), kills every ~{args.kill_every_s:.0f} s")
        try:
            while time.monotonic() < end:
                roll = rng.random()
                if roll < 0.15 and in_flight() < args.max_in_flight:
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
                    job_id = rng.choice(list(jobs))
                    response = request("DELETE", f"/v1/profiles/{job_id}")
                    deleted = response is not None and response.status_code == 200
                    if deleted and response.json().get("outcome") == "deleted":
                        jobs[job_id]["final"] = jobs[job_id].get("final") or "deleted"  # gone by our hand
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
            unfinished = [job_id for job_id, seen in jobs.items() if not seen.get("final")]
            lost = nothing_runs(service, unfinished)
        finally:
            stop.set()
            watch.stopped.set()
            client.close()
            if second is not None:
                os.killpg(second.pid, signal.SIGTERM)
                second.wait(timeout=60)
            service.stop()

    for job_id, seen in jobs.items():
        if not seen.get("final"):
            why = "LOST: nothing can run it" if job_id in lost else "still waiting or running"
            stamp(f"not ended: {job_id}: last seen {seen['state']}: {why}")
    finals = [j.get("final") for j in jobs.values()]
    report = {
        **counts,
        "minutes": args.minutes,
        "seed": args.seed,
        "jobs": len(jobs),
        "jobs_succeeded": finals.count("succeeded"),
        "jobs_failed": finals.count("failed"),
        "jobs_cancelled": finals.count("cancelled"),
        "jobs_deleted_by_the_soak": finals.count("deleted"),
        "jobs_unfinished": sum(1 for f in finals if f is None),
        "jobs_lost": len(lost),
        "longest_stuck_s": max((j["stuck_s"] for j in jobs.values()), default=0.0),
        "jobs_stuck_over_2_min": sum(1 for j in jobs.values() if j["stuck_s"] > STUCK_LIMIT_S),
        "second_worker": args.second_worker,
        "second_worker_hostname": SECOND_HOSTNAME if args.second_worker and can_rename_host() else None,
        "most_measuring_at_once": watch.most,
        "samples_with_two_measuring": watch.overlaps,
        "measuring_at_once_seen": watch.seen,
    }
    ok = (
        report["jobs_lost"] == 0
        and report["other_errors"] == 0
        and watch.most <= 1
        and report["jobs_stuck_over_2_min"] == 0
    )
    stamp(
        f"{report['requests']} requests ({report['unavailable_503']} 503 while Redis was down, "
        f"{report['other_errors']} other errors); {report['jobs']} jobs: "
        f"{report['jobs_succeeded']} succeeded, "
        f"{report['jobs_failed']} failed, {report['jobs_cancelled']} cancelled, "
        f"{report['jobs_unfinished']} unfinished, {report['jobs_lost']} lost; "
        f"longest stuck {report['longest_stuck_s']:.0f} s; kills: {report['kills_worker']} worker, "
        f"{report['kills_redis']} Redis, {report['pauses_redis']} Redis pauses, "
        f"{report['fills_redis']} Redis fills ({report['full_507']} 507); most measuring at "
        f"once {watch.most}: {'ok' if ok else 'NOT ok'}"
    )
    name = args.name or ("soak-pauses" if args.pause_redis or args.second_worker else "soak")
    write(name, {"environment": environment(), **report, "passed": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
