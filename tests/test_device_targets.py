"""Two real CPU workers that advertise different device targets on one embedded Redis: requests
routed by target and by class, dedupe per target, compare between them, /v1/devices live and
after a worker stops (shown as gone, its profiles kept). Every wait is on a state."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from dnnprof.store import ProfileStore
from tests.helpers import ROOT, free_port, start_service, until, wait_for

pytestmark = pytest.mark.slow

ALPHA, BETA = "cpu/alpha", "cpu/beta"
QUICK = {"model": "squeezenet1_1", "batch_sizes": [1, 2], "runs": 2, "repeats": 1}


def devices(client) -> dict[str, dict]:
    response = client.get("/v1/devices")
    assert response.status_code == 200, response.text
    return {d["target"]: d for d in response.json()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """`dnnprof serve` whose worker is cpu/alpha, and a second `dnnprof worker` as cpu/beta."""
    data = tmp_path_factory.mktemp("fleet")
    service = start_service(data / "serve", env={"DNNPROF_DEVICE_TARGET": ALPHA})
    url = service.redis_url()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    env.update(
        DNNPROF_REDIS_URL=url,
        DNNPROF_DATA_DIR=str(data / "beta"),
        DNNPROF_DEVICE_TARGET=BETA,
        DNNPROF_HEARTBEAT_S="2",
        DNNPROF_WORKER_METRICS_PORT=str(free_port()),
    )
    (data / "beta").mkdir()
    log = open(data / "beta.log", "wb")  # noqa: SIM115 - open for the worker's lifetime
    beta = subprocess.Popen(
        [sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        with service.client() as client:
            until(
                lambda: devices(client).get(BETA, {}).get("status") == "live", ceiling_s=900, what="beta live"
            )
        yield service, beta
    finally:
        if beta.poll() is None:
            os.killpg(beta.pid, signal.SIGKILL)
            beta.wait()
        log.close()
        service.stop()


def test_requests_route_by_target_and_dedupe_per_target(fleet):
    service, _ = fleet
    with service.client() as client:
        listed = devices(client)
        assert listed[ALPHA]["status"] == listed[BETA]["status"] == "live"
        assert listed[ALPHA]["queue"] == "dnnprof.cpu.alpha" and listed[BETA]["live_workers"]

        on_beta = client.post("/v1/profiles", json={**QUICK, "device": BETA}).json()
        assert on_beta["target"] == BETA and on_beta["created"]
        done_beta = wait_for(client, on_beta["id"], timeout=900)
        assert done_beta["status"] == "succeeded", done_beta["error"]
        assert done_beta["result"]["fingerprint"]["device_target"] == BETA
        assert done_beta["worker"] in listed[BETA]["live_workers"]

        # The same request for the other target is not answered from beta's profile.
        on_alpha = client.post("/v1/profiles", json={**QUICK, "device": ALPHA}).json()
        assert on_alpha["created"] and on_alpha["id"] != on_beta["id"]
        done_alpha = wait_for(client, on_alpha["id"], timeout=900)
        assert done_alpha["status"] == "succeeded", done_alpha["error"]
        assert done_alpha["result"]["fingerprint"]["device_target"] == ALPHA
        assert done_alpha["worker"] in listed[ALPHA]["live_workers"]

        again = client.post("/v1/profiles", json={**QUICK, "device": BETA})
        assert again.status_code == 200 and again.json()["id"] == on_beta["id"]

        # A class is routed to one of its live targets, and answered from that target's profile.
        by_class = client.post("/v1/profiles", json={**QUICK, "device": "cpu"})
        assert by_class.status_code == 200 and by_class.json()["target"] in (ALPHA, BETA)
        assert by_class.json()["id"] in (on_alpha["id"], on_beta["id"])

        # Only from a profile of any target when asked: a new model on the class is measured.
        other = {**QUICK, "model": "mobilenet_v3_small", "device": "cpu"}
        fresh = client.post("/v1/profiles", json=other).json()
        assert fresh["created"] and fresh["target"] in (ALPHA, BETA)
        done = wait_for(client, fresh["id"], timeout=900)
        assert done["result"]["fingerprint"]["device_target"] == fresh["target"]
        elsewhere = BETA if fresh["target"] == ALPHA else ALPHA
        any_target = client.post("/v1/profiles", json={**other, "device": "cpu", "any_target": True})
        assert any_target.status_code == 200 and any_target.json()["id"] == fresh["id"]
        pinned = client.post("/v1/profiles", json={**other, "device": elsewhere}).json()
        assert pinned["created"] and pinned["target"] == elsewhere
        client.delete(f"/v1/profiles/{pinned['id']}")

        counts = devices(client)
        assert counts[ALPHA]["profiles"] >= 1 and counts[BETA]["profiles"] >= 1
        assert counts[BETA]["fingerprint"]["device_target"] == BETA


def test_analyses_filter_by_target_and_compare_the_two(fleet):
    service, _ = fleet
    with service.client() as client:
        for target in (ALPHA, BETA):
            job = client.post("/v1/profiles", json={**QUICK, "device": target}).json()
            assert wait_for(client, job["id"], timeout=900)["status"] == "succeeded"
        table = client.get("/v1/analysis/table1", params={"device": BETA}).json()
        assert table and {r["target"] for r in table} == {BETA}
        both = client.get("/v1/analysis/table1", params={"device": "cpu"}).json()
        assert {r["target"] for r in both} >= {ALPHA, BETA}
        listed = client.get("/v1/profiles", params={"device": ALPHA, "status": "succeeded"}).json()
        assert listed and {p["result"]["fingerprint"]["device_target"] for p in listed} == {ALPHA}

        compared = client.get("/v1/analysis/compare", params={"a": ALPHA, "b": BETA}).json()
        rows = [c for c in compared if c["model"] == "tv:squeezenet1_1"]
        assert sorted(c["batch_size"] for c in rows) == [1, 2]
        for c in rows:
            assert (c["a_target"], c["b_target"]) == (ALPHA, BETA)
            assert c["b_over_a"] == pytest.approx(c["b_ms_per_image"] / c["a_ms_per_image"])
        fits = client.get("/v1/analysis/throughput", params={"device": "cpu", "batch_size": 1}).json()
        assert {f["target"] for f in fits} >= {ALPHA, BETA}

        metrics = client.get("/metrics").text
        assert re.search(r'dnnprof_profile_latency_seconds\{[^}]*target="cpu/beta"', metrics)
        refused = client.get("/v1/analysis/table1", params={"device": "gpu/x"})
        assert refused.status_code == 422 and "device" in refused.text


def test_a_stopped_workers_target_is_shown_gone_with_its_profiles_and_new_jobs_wait(fleet):
    service, beta = fleet
    with service.client() as client:
        kept = devices(client)[BETA]["profiles"]
        assert kept >= 1
        os.killpg(beta.pid, signal.SIGTERM)
        beta.wait(timeout=120)
        gone = until(lambda: (d := devices(client)[BETA])["status"] == "gone" and d, what="beta gone")
        assert gone["profiles"] == kept and gone["live_workers"] == []
        assert client.get("/v1/devices/cpu/beta").json()["status"] == "gone"
        assert client.get("/v1/devices/cpu/nowhere").status_code == 404

        waiting = client.post("/v1/profiles", json={**QUICK, "model": "alexnet", "device": BETA})
        assert waiting.status_code == 202
        body = waiting.json()
        assert body["workers_serving_device"] == 0 and "cpu/beta" in body["warning"]
        # It waits in beta's queue, which alpha does not consume.
        store = ProfileStore.from_url(service.redis_url())
        until(lambda: body["id"] in store.queued_task_ids("dnnprof.cpu.beta"), what="the job in beta's queue")
        assert client.get(f"/v1/profiles/{body['id']}").json()["status"] == "queued"
        assert client.delete(f"/v1/profiles/{body['id']}").status_code == 200
