"""qemu-user's own thread: found and discounted, so the measuring template forks under emulation as
on a real arm64 board, while a template that really runs a second thread is still refused.

The task trees under tests/data/qemu_user_task/ were recorded on this project's x86-64 host from
qemu-aarch64-static 7.2 (Debian bookworm's) running Debian's arm64 python3.11 (tests/data/README.md):
the emulator's RCU thread blocks every signal but SIGILL, SIGFPE and SIGSEGV (QEMU's
qemu_thread_create, util/qemu-thread-posix.c), a guest's threads block none on the host (qemu keeps
the guest's signal masks itself), and every thread's ``exe`` is the emulator's binary.
"""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

from workers import cpuinfo

TASKS = Path(__file__).parent / "data" / "qemu_user_task"


def test_the_emulators_thread_is_discounted_and_the_program_runs_one():
    assert cpuinfo.emulator_binary(TASKS / "bare") == "qemu-aarch64-static"
    assert cpuinfo.emulator_threads(TASKS / "bare") == {"26549"}
    assert cpuinfo.program_threads(TASKS / "bare") == ["26548"]


def test_a_program_thread_under_emulation_still_counts():
    assert cpuinfo.program_threads(TASKS / "with_a_thread") == ["26548", "26550"]


def test_natively_a_thread_blocking_every_signal_is_the_programs(tmp_path):
    # The same task tree with python's own binary as exe (no emulator): nothing is discounted.
    native = tmp_path / "task"
    shutil.copytree(TASKS / "bare", native, symlinks=True)
    for exe in native.glob("*/exe"):
        exe.unlink()
        exe.symlink_to("/usr/bin/python3.11")
    assert cpuinfo.emulator_binary(native) is None
    assert cpuinfo.program_threads(native) == ["26548", "26549"]


def test_this_process_a_real_thread_that_blocks_every_signal_counts():
    started, stop = threading.Event(), threading.Event()

    def blocked() -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        started.set()
        stop.wait()

    before = len(cpuinfo.program_threads())
    thread = threading.Thread(target=blocked)
    thread.start()
    try:
        started.wait()
        assert cpuinfo.emulator_binary() is None
        assert len(cpuinfo.program_threads()) == before + 1
    finally:
        stop.set()
        thread.join()
