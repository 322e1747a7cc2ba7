"""How a measuring process starts (workers/launch.py, issue 29): forked from the template or as a
fresh interpreter, it gets the job's environment, its own output file and exit status, dies with
the process that launched it, and reports where its wall time went (workers/engine/phases.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from dnnprof.process import PARENT_PID_ENV, pid_alive
from tests.helpers import ROOT, until
from workers.launch import LAUNCHED_AT_ENV, PROCESS_START_ENV, launch, warm_template
from workers.phases import PHASES


@pytest.fixture(scope="module")
def template():
    warm_template("template")
    return "template"


@pytest.mark.parametrize("method", ["template", "fresh"])
def test_the_process_gets_the_jobs_environment_output_and_exit_status(method, template, tmp_path):
    report, log = tmp_path / "seen.json", tmp_path / "log"
    os.environ["LAUNCH_TEST_LATE"] = "set after the template started"  # not the job's: absent
    try:
        env = {k: v for k, v in os.environ.items() if k != "LAUNCH_TEST_LATE"}
        env["LAUNCH_TEST_JOB"] = "the job's"
        child = launch("tests.launch_target", ["3", str(report)], env, log, method)
        assert until(lambda: child.poll() is not None, 300, "the process's end") and child.wait() == 3
    finally:
        del os.environ["LAUNCH_TEST_LATE"]
    seen = json.loads(report.read_text())
    assert seen["env"]["LAUNCH_TEST_JOB"] == "the job's"
    assert "LAUNCH_TEST_LATE" not in seen["env"]
    assert seen["env"][PROCESS_START_ENV] == method
    assert float(seen["env"][LAUNCHED_AT_ENV]) > 0
    assert log.read_text().splitlines() == ["to stdout", "to stderr"]
    if method == "template":  # forked from the template: torch was there before it, and its parent
        assert seen["torch_imported"]
        assert seen["ppid"] != os.getpid() and seen["env"][PARENT_PID_ENV] == str(seen["ppid"])
    else:
        assert not seen["torch_imported"] and seen["ppid"] == os.getpid()


def test_a_forked_process_dies_with_the_process_that_launched_it(tmp_path):
    """The pool process SIGKILLed (a hard time limit, the worker killed): its template goes, and
    the measuring process forked from it with it; nothing is left measuring."""
    report = tmp_path / "seen.json"
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from workers.launch import launch
        if __name__ == "__main__":
            argv = ["sleep", {str(report)!r}]
            launch("tests.launch_target", argv, {{}}, Path({str(tmp_path / "log")!r}), "template")
            time.sleep(600)
        """
    )
    (tmp_path / "launcher.py").write_text(script)
    launcher = subprocess.Popen(
        [sys.executable, str(tmp_path / "launcher.py")], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT))
    )
    try:
        until(report.exists, 300, "the forked process's start")
        pid = json.loads(report.read_text())["pid"]
        assert pid_alive(pid)
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
        until(lambda: not pid_alive(pid), 120, "the forked process's death")
    finally:
        launcher.kill()


def test_the_template_holds_no_threads_and_no_cuda_context():
    """What a fork may copy safely: one thread (numpy's BLAS pool is kept to none), no CUDA."""
    code = "import os, workers.template as t; print(len(os.listdir('/proc/self/task')))"
    code += "; print(t.torch.cuda.is_initialized())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False"]


def test_phases_account_for_the_process_and_contain_what_they_name():
    from tests.test_engine import TinyNet, tiny_info, tiny_settings
    from workers.aggregate import timed_seconds
    from workers.engine.scenario import CollectingSink, ProcessPlan, ScenarioConfig, measure_process

    sink = CollectingSink()
    end = measure_process(
        tiny_info(), tiny_settings(), ScenarioConfig(device_class="cpu"), ProcessPlan(), sink, model=TinyNet()
    )
    phases = end.phases
    assert set(phases) == set(PHASES) - {"start", "accuracy"}  # no accuracy asked; start is the runner's
    assert sum(phases.values()) <= end.wall_s
    # The timed phase holds every timed run (each attempt), the first-call phase the first calls.
    assert phases["timed"] >= sum(timed_seconds(c) for c in sink.cells)
    assert phases["first_call"] >= sum(c.first_call_s for c in sink.cells)


def test_a_profile_sums_its_processes_phases_and_names_the_rest():
    from workers.phases import summed

    total = summed([{"start": 1.0, "timed": 2.0}, {"start": 0.5, "timed": 2.5, "build": 0.25}], wall_s=7.0)
    assert total == {"start": 1.5, "build": 0.25, "timed": 4.5, "other": 0.75}  # 7 - 6.25, by hand
    assert list(total) == ["start", "build", "timed", "other"]  # the order a process meets them


def _launch_from_a_daemonic_process(report: str, log: str, results) -> None:
    from pathlib import Path

    try:
        child = launch("tests.launch_target", ["4", report], dict(os.environ), Path(log), "template")
        results.put(child.wait())
    except Exception as exc:  # noqa: BLE001 - said to the test, not lost in the child
        results.put(repr(exc))


def test_a_daemonic_pool_process_can_fork_from_the_template(tmp_path):
    """Celery's prefork pool processes are daemonic billiard processes: the stdlib's multiprocessing
    refused them children ('daemonic processes are not allowed to have children'), then could not
    send their key ('Pickling an AuthenticationString object is disallowed'): every job failed so,
    the first times the worker ran with the template. The launcher starts them as a plain process
    would, non-daemonic (a measuring process may start data-loading workers of its own)."""
    import billiard

    fork = billiard.get_context("spawn")  # a template of its own, as each pool process has
    results = fork.Queue()
    report = tmp_path / "seen.json"
    pool_like = fork.Process(
        target=_launch_from_a_daemonic_process,
        args=(str(report), str(tmp_path / "log"), results),
        daemon=True,
    )
    pool_like.start()
    try:
        assert results.get(timeout=300) == 4
    finally:
        pool_like.join(timeout=60)
    seen = json.loads(report.read_text())
    assert seen["torch_imported"] and not seen["daemonic"]


def test_a_pool_process_keeps_its_temporary_files_where_a_socket_path_fits(tmp_path):
    """The template listens on a Unix socket under the pool process's temporary folder: under a
    deep data directory its path passed the 107 bytes a socket takes ('AF_UNIX path too long':
    every job then fell back to fresh interpreters). Such a pool keeps them in the system's."""
    from workers.launch import pool_temp_dir

    shallow = Path(tempfile.mkdtemp(prefix="dp-")) / "run"
    shallow.mkdir()
    assert pool_temp_dir(shallow, 4242) == shallow / "dnnprof-4242-tmp"
    shutil.rmtree(shallow.parent)
    deep = tmp_path / ("d" * 60) / "run"
    deep.mkdir(parents=True)
    chosen = pool_temp_dir(deep, 4242)
    assert chosen.parent == Path(tempfile.gettempdir()) and chosen.is_dir()
    chosen.rmdir()
