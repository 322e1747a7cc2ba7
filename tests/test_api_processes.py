"""`dnnprof api` as a user runs it beside an external Redis (issue 26): `--workers N` is N
processes that scrape and limit as one, and an API started on a store of an older index layout
says "indexing" until it has re-indexed it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import msgspec
import pytest
import redis

from dnnprof import keys
from dnnprof.store import ProfileStore
from tests.factories import profile
from tests.helpers import ROOT, dnnprof_env, free_port, throwaway_redis, until


def start_api(redis_url: str, data_dir: Path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    environment = dnnprof_env(
        DNNPROF_REDIS_URL=redis_url, DNNPROF_DATA_DIR=str(data_dir), DNNPROF_PORT=str(port), **env
    )
    log = open(data_dir / f"api-{port}.log", "wb")  # noqa: SIM115 - the process writes it
    process = subprocess.Popen(
        [sys.executable, "-m", "dnnprof.cli", "api", *args],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, f"http://127.0.0.1:{port}"


def answers(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def api_processes(pid: int) -> list[int]:
    """The uvicorn workers of the API ``pid`` supervises (its spawned children, not
    multiprocessing's resource tracker)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in cmdline:
                found.append(int(child))
    return found


def scraped(base: str, metric: str, path: str) -> float:
    """What one scrape of /metrics says of ``metric`` for the requests to ``path``, summed over
    its series (a path template such as ``{source}`` puts braces inside the labels)."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    pattern = re.compile(rf"^{metric}\{{(.*)\}} (\S+)$", re.M)
    return sum(float(v) for labels, v in pattern.findall(text) if f'path="{path}"' in labels)


def requests_counted(base: str, path: str) -> float:
    return scraped(base, "dnnprof_http_requests_total", path)


def requests_in_progress(base: str, path: str) -> float:
    return scraped(base, "dnnprof_http_requests_in_progress", path)


@pytest.mark.slow  # starts an API of two processes
def test_api_workers_are_n_processes_that_count_and_limit_as_one(tmp_path):
    """Each uvicorn worker is a process of its own; a scrape reaches one of them. Every scrape
    must count every request, and a client's rate limit is the configured one, whichever
    process answers each request."""
    server, url = throwaway_redis(tmp_path)
    api, base = start_api(url, tmp_path, "--workers", "2", DNNPROF_RATE_LIMIT_PER_MINUTE="30")
    try:
        until(lambda: answers(f"{base}/healthz"), 300, "the API")
        until(lambda: len(api_processes(api.pid)) >= 2, 300, "two API processes")
        assert len(api_processes(api.pid)) == 2

        # A new connection per request: the kernel hands each to either process.
        for _ in range(40):
            assert httpx.get(f"{base}/readyz", timeout=10).status_code == 503  # no worker
        scrapes = [requests_counted(base, "/readyz") for _ in range(8)]
        assert scrapes == [40.0] * 8, scrapes

        codes = [httpx.get(f"{base}/v1/devices", timeout=10).status_code for _ in range(50)]
        assert codes.count(200) == 30 and codes.count(429) == 20, codes
    finally:
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow  # starts an API of two processes
def test_requests_in_flight_in_killed_api_processes_are_not_in_progress_for_ever(tmp_path):
    """uvicorn starts a new process for one that died; the dead one's in-progress requests were
    still summed from its multiprocess files at every scrape (prometheus_client keeps a live
    gauge's file until it is told the process died)."""
    server, url = throwaway_redis(tmp_path)
    api, base = start_api(url, tmp_path, "--workers", "2", DNNPROF_RATE_LIMIT_PER_MINUTE="0")
    template = "/v1/results/published/{source}"
    held = []
    try:
        until(lambda: answers(f"{base}/healthz"), 300, "the API")
        until(lambda: len(api_processes(api.pid)) >= 2, 300, "two API processes")
        before = set(api_processes(api.pid))
        port = int(base.rsplit(":", 1)[1])
        for _ in range(4):  # uploads whose bodies never come: in progress where they landed
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.sendall(
                b"POST /v1/results/published/held HTTP/1.1\r\nHost: api\r\n"
                b"Content-Type: text/csv\r\nContent-Length: 1000\r\n\r\nmodel,"
            )
            held.append(connection)
        until(lambda: requests_in_progress(base, template) == 4, 120, "four uploads in progress")
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        until(lambda: len(set(api_processes(api.pid)) - before) == 2, 300, "two new API processes")
        until(lambda: answers(f"{base}/healthz"), 300, "the API again")
        until(lambda: requests_in_progress(base, template) == 0, 120, "no request in progress")
    finally:
        for connection in held:
            connection.close()
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow  # starts an API of two processes
def test_a_profile_deleted_through_one_process_is_no_304_from_the_other(tmp_path):
    """Each process remembers the ETags of the finished profiles it served (a poll that sends
    one back is a 304 without a read of the store). A delete reaches one process: the one that
    answers it forgets at once, the other within seconds, and never answers 304 for ever."""
    server, url = throwaway_redis(tmp_path)
    record = profile("tv:resnet18", device="cpu", cells={1: (5.0, 100.0)})
    ProfileStore.from_url(url).create_or_get(record)
    api, base = start_api(url, tmp_path, "--workers", "2", DNNPROF_RATE_LIMIT_PER_MINUTE="0")
    path = f"{base}/v1/profiles/{record.id}"
    try:
        until(lambda: answers(f"{base}/healthz"), 300, "the API")
        until(lambda: len(api_processes(api.pid)) >= 2, 300, "two API processes")
        etag = httpx.get(path, timeout=10).headers["etag"]
        # A new connection per request: the kernel hands each to either process.
        polls = [httpx.get(path, headers={"If-None-Match": etag}, timeout=10) for _ in range(20)]
        assert [r.status_code for r in polls] == [304] * 20
        assert httpx.delete(path, timeout=10).json()["outcome"] == "deleted"
        assert httpx.get(path, timeout=10).status_code == 404  # read from the store: gone

        def both_say_gone() -> bool:
            codes = [
                httpx.get(path, headers={"If-None-Match": etag}, timeout=10).status_code for _ in range(10)
            ]
            assert set(codes) <= {304, 404}, codes
            return codes == [404] * 10

        until(both_say_gone, 120, "both processes to say the deleted profile is gone")
    finally:
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow  # starts an API
def test_readyz_says_indexing_until_a_store_of_an_older_layout_is_reindexed(tmp_path):
    """The start-up migration of a store written before the current index layout: `/readyz` is
    a 503 saying "indexing" while it runs (held here: the test takes the re-index lock first, as
    another API process would), then the records it kept are listed."""
    server, url = throwaway_redis(tmp_path)
    raw = redis.Redis.from_url(url)
    old = [profile(f"tv:m{i % 3}", device="cpu", cells={1: (5.0, 100.0)}, created=float(i)) for i in range(9)]
    with raw.pipeline() as pipe:  # as the store wrote records before its indexes existed
        for rec in old:
            pipe.set(keys.record(rec.id), msgspec.json.encode(rec))
            pipe.zadd(keys.ALL_PROFILES, {rec.id: rec.created_at})
        pipe.execute()
    lock = raw.lock(keys.REINDEX_LOCK, timeout=600)
    assert lock.acquire(blocking=False)
    api, base = start_api(url, tmp_path)
    try:
        until(lambda: answers(f"{base}/healthz"), 300, "the API")
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503 and "indexing" in ready.json()["detail"], ready.text
        lock.release()

        def indexed():
            body = httpx.get(f"{base}/readyz", timeout=10).json()
            return body if "indexing" not in (body["detail"] or "") else None

        body = until(indexed, 300, "the re-index")
        assert body["detail"] == "no worker alive in any device class"  # no worker was started
        listed = httpx.get(f"{base}/v1/profiles", params={"model": "tv:m1", "limit": 100}, timeout=10).json()
        assert sorted(p["id"] for p in listed) == sorted(r.id for r in old if r.settings.model == "tv:m1")
    finally:
        os.killpg(api.pid, signal.SIGKILL)
        api.wait()
        os.killpg(server.pid, signal.SIGKILL)
