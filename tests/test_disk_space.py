"""A data disk short of space (issue 44, part 4): the worker looks before it starts a measuring
process and refuses the measurement saying so, keeping what was measured before, instead of a
measuring process that dies mid-write ("Input data was truncated", "exit code 1")."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import threading

import pytest

from dnnprof.config import Settings
from dnnprof.store import ProfileStore
from tests.factories import profile
from tests.helpers import throwaway_redis, until
from workers.jobs import ProfileJob


def test_a_data_disk_short_of_space_refuses_the_measurement_saying_so(tmp_path):
    server, url = throwaway_redis(tmp_path)
    try:
        store = ProfileStore.from_url(url)
        record = profile("resnet18", device="cpu", cells={1: (10.0, 100.0)})
        record.status, record.result = "queued", None
        store.create_or_get(record)
        data = tmp_path / "data"
        # The threshold above what this disk has free (shutil.disk_usage: statvfs, as df reads it).
        free_mb = shutil.disk_usage(tmp_path).free // 2**20
        settings = dataclasses.replace(Settings(), redis_url=url, data_dir=data, min_free_mb=free_mb + 1024)
        job = ProfileJob(store, settings, "test-worker", "test-device", target="cpu/test")
        assert job.run(record.id) == "failed"
        done = store.get(record.id)
        assert done.status == "failed" and "no space left on the data disk" in done.error, done.error
        assert str(data) in done.error and "DNNPROF_MIN_FREE_MB" in done.error
        assert not list((data / "run").glob("dnnprof-*/child.log"))  # no measuring process started
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_the_attempts_limit_is_the_jobs_not_the_workers(tmp_path):
    """Issue 44 (4): DNNPROF_MAX_ATTEMPTS was applied by whichever worker found the job (one at 10,
    the others at 3: failed at 3). The limit is recorded on the job when it is created, and every
    worker applies that one. Here the worker's own is 10 and the job's 2: a third delivery gives up
    (before, it went on to measure; the disk threshold then stops it at once, saying so)."""
    server, url = throwaway_redis(tmp_path)
    try:
        store = ProfileStore.from_url(url)
        record = profile("resnet18", device="cpu", cells={1: (10.0, 100.0)})
        record.status, record.result, record.attempts, record.max_attempts = "queued", None, 2, 2
        store.create_or_get(record)
        free_mb = shutil.disk_usage(tmp_path).free // 2**20
        settings = dataclasses.replace(
            Settings(), redis_url=url, data_dir=tmp_path / "data", max_attempts=10, min_free_mb=free_mb + 1024
        )
        job = ProfileJob(store, settings, "test-worker", "test-device", target="cpu/test")
        assert job.run(record.id) == "failed"
        assert "gave up after 2 attempts" in store.get(record.id).error
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_a_killed_process_reason_holds_no_unrelated_log_lines():
    """Issue 44 (5): a SIGKILLed measuring process's reason ended with whatever it had logged last
    ("No CUDA runtime is found…", torch's warning at import); only a failure it reported itself (a
    traceback, a fatal error) belongs in the reason."""
    from workers.jobs import death_reason

    warning = "/venv/torch/utils/cpp_extension.py:25: UserWarning: No CUDA runtime is found\n"
    died = "the measuring process died"
    assert death_reason(-9, warning + "  warnings.warn(\n") == f"{died} (signal 9)"
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nMemoryError: boom\n'
    assert death_reason(1, warning + traceback) == (
        f'{died} (exit code 1): File "x.py", line 1, in <module> | MemoryError: boom'
    )
    fatal = "Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n"
    assert death_reason(-11, warning + fatal) == f"{died} (signal 11): Fatal Python error: Segmentation fault"
    exited = death_reason(2, warning + "runner: no such profile\n")
    assert exited == f"{died} (exit code 2): runner: no such profile"


def fill(folder) -> None:
    """Write zeros into ``folder`` until its filesystem refuses (ENOSPC)."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 2**16):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs as the data disk (root only)")
def test_a_disk_that_fills_while_measuring_says_so_and_keeps_the_cells(tmp_path):
    """Issue 44 (4): a data disk that filled while a job measured failed it with "reading the
    measuring process's outcome failed: Input data was truncated" or "died (exit code 1)" and no
    reason. A real measuring process on a 64 MB tmpfs, filled once its batch 1 is stored."""
    server, url = throwaway_redis(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(data)], check=True)
    try:
        store = ProfileStore.from_url(url)
        record = profile("squeezenet1_1", device="cpu", cells={1: (1.0, 1.0), 2: (1.0, 1.0)})
        record.status, record.result = "queued", None
        store.create_or_get(record)
        settings = dataclasses.replace(
            Settings(), redis_url=url, data_dir=data, min_free_mb=1, measure_start="fresh", quiet_wait_s=0
        )
        job = ProfileJob(store, settings, "test-worker", "test-device", target="cpu/test")
        ended: list[str] = []
        runner = threading.Thread(target=lambda: ended.append(job.run(record.id)))
        runner.start()
        def batch_one_stored() -> bool:
            progress = store.get(record.id).progress
            return progress is not None and progress.batches_done >= 1

        until(batch_one_stored, 600, "batch 1 stored")
        fill(data)
        runner.join(timeout=600)
        assert ended == ["failed"]
        done = store.get(record.id)
        assert done.error.startswith("no space left on the data disk"), done.error
        assert [(b.batch_size, b.status) for b in done.result.batches][:1] == [(1, "ok")]  # kept
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
