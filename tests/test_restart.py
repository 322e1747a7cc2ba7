"""The embedded default keeps its profiles across a restart and Ctrl-C stops everything it started."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers import start_service, wait_for

pytestmark = pytest.mark.slow


def _processes(*, ppid: int | None = None, matching: str | None = None) -> list[str]:
    args = ["ps", "-ww", "-o", "pid=,args="] + (["--ppid", str(ppid)] if ppid else ["-e"])
    out = subprocess.run(args, capture_output=True, text=True)
    return [
        line for line in out.stdout.splitlines() if line.strip() and (matching is None or matching in line)
    ]


def test_profiles_survive_a_restart_and_ctrl_c_stops_redis_worker_and_api(tmp_path):
    first = start_service(tmp_path)
    try:
        with first.client() as client:
            job = client.post(
                "/v1/profiles", json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
            ).json()
            done = wait_for(client, job["id"])
            assert done["status"] == "succeeded"
        # Redis is serve's own child (not daemonised), so it dies with it whatever kills serve.
        redis_server = _processes(ppid=first.process.pid, matching="redis-server")
        worker = _processes(ppid=first.process.pid, matching="worker")
        assert len(redis_server) == 1, _processes(ppid=first.process.pid)
        assert len(worker) == 1, _processes()
        children = redis_server + worker + _processes(ppid=int(worker[0].split()[0]))
    finally:
        first.stop()
    assert first.process.returncode == 0
    pids = [int(c.split()[0]) for c in children]
    alive = subprocess.run(
        ["ps", "-o", "pid=", "-p", ",".join(map(str, pids))], capture_output=True, text=True
    )
    assert alive.stdout.strip() == "", f"left running after Ctrl-C: {alive.stdout}"

    second = start_service(tmp_path, device="none", wait_for_worker=False)
    try:
        with second.client() as client:
            again = client.get(f"/v1/profiles/{job['id']}").json()
            assert again["status"] == "succeeded"
            assert again["result"] == done["result"]
            # And the same request is still answered from the store.
            repeat = client.post(
                "/v1/profiles", json={"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
            )
            assert repeat.status_code == 200 and repeat.json()["id"] == job["id"]
    finally:
        second.stop()
