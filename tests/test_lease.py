"""The device lease (workers/lease.py) against a real Redis: a holder that cannot renew stops
before Redis can expire it, takes it back when nobody else did, and knows when somebody did."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnnprof.store import ProfileStore
from tests.helpers import ROOT, dnnprof_env, throwaway_redis
from workers.lease import LEASE_CALL_TIMEOUT_S, DeviceLease, LeaseInDoubt

LEASE_S = 3


@pytest.fixture
def redis_server(tmp_path):
    server, url = throwaway_redis(tmp_path)
    yield server, ProfileStore.from_url(url)
    os.kill(server.pid, signal.SIGCONT)
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def test_one_holder_at_a_time_and_a_renewal_keeps_it(redis_server):
    _, store = redis_server
    first, second = DeviceLease(store, "dev", LEASE_S), DeviceLease(store, "dev", LEASE_S)
    assert first.acquire() and not second.acquire()
    for _ in range(4):  # twice the lease's length, renewed as it goes
        time.sleep(LEASE_S / 2)
        assert first.keep()
        first.check()
    assert not second.acquire()
    first.release()
    assert second.acquire()


def test_a_paused_redis_stops_the_holder_before_the_lease_can_lapse(redis_server):
    server, store = redis_server
    lease, rival = DeviceLease(store, "dev", LEASE_S), DeviceLease(store, "dev", LEASE_S)
    assert lease.acquire()
    confirmed = time.monotonic()
    os.kill(server.pid, signal.SIGSTOP)
    try:
        while True:
            asked = time.monotonic()
            renewed = lease.keep()
            # A call gives up within its own timeout, so the loop keeps its deadline.
            assert time.monotonic() - asked < LEASE_CALL_TIMEOUT_S + 0.5
            try:
                lease.check()
            except LeaseInDoubt:
                stopped = time.monotonic()
                break
            assert renewed or time.monotonic() < confirmed + LEASE_S
            time.sleep(0.05)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    # Stopped while the lease was certainly still held: Redis counts it from after `confirmed`.
    assert stopped < confirmed + LEASE_S, stopped - confirmed
    time.sleep(LEASE_S)
    assert lease.regain(until_s=10)  # lapsed and nobody took it: ours again
    assert not rival.acquire()


def test_a_lease_another_job_took_is_not_taken_back(redis_server):
    _, store = redis_server
    lease, rival = DeviceLease(store, "dev", LEASE_S), DeviceLease(store, "dev", LEASE_S)
    assert lease.acquire()
    time.sleep(LEASE_S + 0.5)  # not renewed: it lapses
    assert rival.acquire()
    assert lease.regain(until_s=10) is False
    with pytest.raises(LeaseInDoubt, match="another job"):
        lease.keep()
    assert not lease.acquire()


def lease_name_with_hostname(hostname: str, device_class: str = "cpu") -> str:
    """The device lease name a worker computes in a UTS namespace of its own whose hostname is
    ``hostname``: what two containers on one host are (``unshare --uts``, as root)."""
    code = "import sys, workers.celery_app as w; print(w.app.dnnprof.lease_name)"
    script = f'hostname "$1" && exec "{sys.executable}" -c "{code}" "$1"'
    env = {
        **dnnprof_env(DNNPROF_WORKER_DEVICE=device_class, DNNPROF_REDIS_URL="redis://127.0.0.1:1/0"),
        "PYTHONPATH": str(ROOT),
    }
    out = subprocess.run(
        ["unshare", "--uts", "--fork", "sh", "-c", script, "sh", hostname],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare(1)")
def test_one_device_one_lease_whatever_the_hostname():
    """Issue 44 (3): the lease was keyed '<hostname>:cpu', so two workers with different hostnames on
    one machine (two containers) measured at once. Keyed on the machine's boot id (shared by every
    container of a host, /proc/sys/kernel/random/boot_id) and the CPUs it may use."""
    first, second = lease_name_with_hostname("box-a"), lease_name_with_hostname("box-b")
    assert first == second
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert boot_id in first and "box-a" not in first
