"""A batch size is timed on a quiet host, or marked (issue 29): before its first call the engine
waits, bounded, for other processes to leave the CPUs; one timed busy after the bound is noisy, so
``select=best`` prefers a clean profile. Real processes take the CPUs here, not a mock."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from tests.test_engine import TinyNet, tiny_info, tiny_settings
from workers.engine.host import BUSY_SHARE, wait_for_quiet_host


@contextlib.contextmanager
def cpus_taken():
    """A busy loop on every usable core, in other processes."""
    cores = len(os.sched_getaffinity(0))
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def test_a_busy_host_is_waited_on_until_the_bound_then_said_busy():
    with cpus_taken():
        wait = wait_for_quiet_host(max_wait_s=2.0)
    assert not wait.quiet
    assert wait.waited_s >= 2.0
    assert wait.others_cpu_share is not None and wait.others_cpu_share > BUSY_SHARE


def test_a_host_that_quietens_is_timed_once_quiet():
    """Wait on the state: the busy loops gone, the wait ends quiet (the ceiling only catches a
    host that another job keeps busy for minutes)."""
    with cpus_taken():
        assert not wait_for_quiet_host(max_wait_s=1.0).quiet
    wait = wait_for_quiet_host(max_wait_s=300.0)
    # Quiet at once (nothing else runnable: no sample taken), or sampled under the share.
    assert wait.quiet and (wait.others_cpu_share is None or wait.others_cpu_share <= BUSY_SHARE)


def test_no_wait_asked_looks_at_nothing():
    wait = wait_for_quiet_host(max_wait_s=0)
    assert (wait.waited_s, wait.quiet, wait.others_cpu_share) == (0.0, True, None)


@pytest.mark.parametrize("busy", [True, False])
def test_a_batch_size_timed_busy_is_recorded_and_noisy(busy):
    from workers.engine.scenario import ScenarioConfig, run_profile

    config = ScenarioConfig(device_class="cpu", quiet_wait_s=1.0 if busy else 300.0)
    with cpus_taken() if busy else contextlib.nullcontext():
        result = run_profile(tiny_info(), tiny_settings(batch_sizes=(1,)), config, model=TinyNet())
    latency = result.batches[0].latency
    host = latency.per_process[0].host
    assert host.quiet_before is (not busy)
    if busy:
        assert host.quiet_wait_s >= 1.0 and latency.noisy
    assert result.phases["quiet_wait"] >= (1.0 if busy else 0.0)
