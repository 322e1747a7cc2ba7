"""How a measuring process starts: forked from a template that has imported the libraries, or as a
fresh interpreter (issue 29).

Every repeat of a profile is its own process (its own allocator state, autotuning, CUDA context:
the spread between them is what ``repeats`` reports). What a fresh interpreter adds beside that
is ``import torch, torchvision, timm``, seconds each time. The template is multiprocessing's
forkserver with those modules preloaded: a process that has imported them but never initialised
CUDA, built a model or touched a device, from which each measuring process is forked (and whose
forkserver reports how each ended, a signal included: billiard's loses a SIGKILL's status). It is
started once per pool process (:func:`warm_template`) and dies with it.

``DNNPROF_MEASURE_START`` (``Settings.measure_start``) chooses: ``template`` (the default) or
``fresh``. ``bench/cost.py --compare-start`` measures both, interleaved, to show the template
keeps the median and the process-to-process spread (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import forkserver
from multiprocessing import process as mp_process
from pathlib import Path
from typing import Protocol

from dnnprof.process import PARENT_PID_ENV, die_with_parent

log = logging.getLogger("dnnprof.launch")

#: Set by the launcher: when (``time.time()``) the process was asked for, so its ``start`` phase
#: counts the interpreter's start or the fork, whichever it was.
LAUNCHED_AT_ENV = "DNNPROF_LAUNCHED_AT"
#: Read by the fingerprint (workers/engine/fingerprint.py): how the process started.
PROCESS_START_ENV = "DNNPROF_PROCESS_START"
#: What the template imports before it forks anyone (workers/template.py).
TEMPLATE_MODULE = "workers.template"
_template_failed = False


def seconds_since_launch() -> float:
    """In a launched process: how long since the launcher asked for it (its ``start`` phase: an
    interpreter's start and imports, or a fork); 0 where it was not launched by :func:`launch`."""
    launched_at = os.environ.get(LAUNCHED_AT_ENV)
    return round(time.time() - float(launched_at), 4) if launched_at else 0.0


class MeasuringProcess(Protocol):
    """The part of :class:`subprocess.Popen` the job uses, whichever way the process started."""

    pid: int | None

    def wait(self, timeout: float | None = None) -> int: ...
    def poll(self) -> int | None: ...
    def kill(self) -> None: ...


def launch(
    module: str, argv: list[str], env: dict[str, str], log_path: Path, method: str
) -> MeasuringProcess:
    """``python -m module *argv`` with ``env``, its output in ``log_path``: forked from the
    template (``method`` "template") or a fresh interpreter ("fresh"); ``module.main(argv)``
    returns the exit status."""
    env = dict(env, **{LAUNCHED_AT_ENV: repr(time.time()), PROCESS_START_ENV: method})
    if method == "fresh":
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", module, *argv], stdout=out, stderr=subprocess.STDOUT, env=env
            )
    global _template_failed
    if not _template_failed:
        try:
            with _plain_current_process():
                process = _forkserver().Process(
                    target=_run_module, args=(module, argv, env, str(log_path)), name=f"dnnprof-{module}"
                )
                process.start()
            return _Forked(process)
        except (OSError, EOFError) as exc:  # the template died at its start (see its log)
            _template_failed = True
            log.error("the measuring processes' template could not start (%s): fresh interpreters", exc)
    return launch(module, argv, env, log_path, "fresh")  # says "fresh" in the fingerprint


#: The template's socket is ``<temp dir>/pymp-XXXXXXXX/listener-XXXXXXXX``; a Unix socket's path
#: holds 107 bytes, so a temp dir longer than this leaves no room (a deep data directory).
_TEMP_DIR_ROOM = 107 - len("/pymp-xxxxxxxx/listener-xxxxxxxx")


def pool_temp_dir(run_dir: Path, pid: int) -> Path:
    """Where a pool process keeps its temporary files (the template's socket among them), named
    after it, so a killed one's are removed at the next start: under the data directory's run
    folder, or the system's temporary folder where that path is too long for a socket."""
    for parent in (run_dir, Path(tempfile.gettempdir())):
        own = parent / f"dnnprof-{pid}-tmp"
        if len(str(own)) <= _TEMP_DIR_ROOM:
            own.mkdir(mode=0o700, exist_ok=True)
            return own
    raise OSError(f"no temporary folder short enough for a Unix socket (tried {run_dir})")


def warm_template(method: str) -> None:
    """Start the template now (its imports take seconds), so the first job does not wait on it."""
    if method == "template" and not _template_failed:
        with _plain_current_process():
            _forkserver()
            forkserver.ensure_running()


def _forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([TEMPLATE_MODULE])  # read when the forkserver first starts
    return context


def _run_module(module: str, argv: list[str], env: dict[str, str], log_path: str) -> None:
    """In the forked process: the job's environment and output file, as a fresh interpreter would
    have them, then the module's ``main``. Its parent is the template: it dies with that, and the
    template with the launcher."""
    os.environ.clear()
    os.environ.update(env)
    template = sys.modules.get(TEMPLATE_MODULE)
    parent = getattr(template, "PID", None) or os.getppid()
    os.environ[PARENT_PID_ENV] = str(parent)
    _let_the_template_die_with_its_launcher()
    die_with_parent(parent)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = [module, *argv]
    code = importlib.import_module(module).main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


class _PlainMainProcess(mp_process.BaseProcess):
    """What multiprocessing's own main process holds (its class is not exported): no daemon flag,
    a key of multiprocessing's type. Never started: it stands for this process."""

    def __init__(self) -> None:
        self._identity = ()
        self._name = "MainProcess"
        self._parent_pid = None
        self._popen = None
        self._closed = False
        self._config = {"authkey": mp_process.AuthenticationString(os.urandom(32)), "semprefix": "/mp"}


@contextlib.contextmanager
def _plain_current_process():
    """Celery's pool processes are billiard's, and billiard installs each as multiprocessing's
    current process: daemonic (multiprocessing refuses it children) and holding a key of
    billiard's type (which multiprocessing refuses to send). While a measuring process is started,
    multiprocessing sees a main process of its own instead; the pool's is put back after. Nothing
    else runs in the pool process meanwhile (one job at a time, this thread)."""
    current = mp_process._current_process
    if isinstance(current, mp_process.BaseProcess):
        yield
        return
    mp_process._current_process = _PlainMainProcess()
    try:
        yield
    finally:
        mp_process._current_process = current


def _let_the_template_die_with_its_launcher() -> None:
    """The forkserver exits when the process that started it (the pool process) is gone, seen as
    the end of a pipe whose write end every forked child inherits, so that it may fork again. A
    measuring process that kept it would keep its template alive, and itself with it, after the
    pool process was killed: it closes its copy (it never forks from the template itself)."""
    server = getattr(forkserver, "_forkserver", None)
    alive = getattr(server, "_forkserver_alive_fd", None)
    if alive is not None:
        with contextlib.suppress(OSError):
            os.close(alive)
        server._forkserver_alive_fd = None  # type: ignore[union-attr]


class _Forked:
    """A forked :class:`multiprocessing.Process` answering as a Popen does."""

    def __init__(self, process: mp_process.BaseProcess) -> None:
        self.process = process
        self.pid = process.pid

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        code = self.process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"measuring process {self.pid}", timeout or 0.0)
        return code

    def poll(self) -> int | None:
        return self.process.exitcode

    def kill(self) -> None:
        self.process.kill()
