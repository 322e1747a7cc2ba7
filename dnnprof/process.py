"""Process hygiene shared by every dnnprof process: children that die with their parent, one
`dnnprof serve` per data directory, and runtime files kept under the data directory.

Linux's ``PR_SET_PDEATHSIG`` asks the kernel to kill a process when the thread that started it
exits, so a SIGKILL of ``dnnprof serve`` takes its Redis, its worker, the worker's pool process
and the measuring process with it (each sets it on its own children), instead of leaving orphans
that a later start would attach to.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1
try:  # resolved here, once: a preexec_fn after fork should not load libraries
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """In a child: be sent ``sig`` when the parent dies; no-op where prctl is missing.

    ``parent_pid`` is the pid of the process that started this one, read before the fork. A
    child whose parent died before the death signal was set (the race prctl leaves) exits at
    once: its parent is then another process. "Another" is the test, not "PID 1": in a
    container the worker's main process *is* PID 1, and its children are no orphans."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent_pid:
        os._exit(1)


def dies_with_this_process(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for Popen: the child is sent ``sig`` when the caller dies."""
    return functools.partial(die_with_parent, os.getpid(), sig)


#: Set in a child's environment by a parent that wants it to die with it (see :func:`die_with_parent`).
PARENT_PID_ENV = "DNNPROF_PARENT_PID"
PR_SET_NAME = 15


def measuring_name(profile_id: str) -> str:
    """What ``ps``/``top``/``pgrep`` call a measuring process: ``dm-`` and the first 12 characters
    of its profile's id (the kernel keeps 15). A process forked from the template has no command
    line of its own (it shows the template's), so this is how one finds the one measuring a job."""
    return f"dm-{profile_id[:12]}"


def name_this_process(name: str) -> None:
    """Set this process's name (``/proc/<pid>/comm``, 15 bytes); a no-op where prctl is missing."""
    if _prctl is not None:
        _prctl(PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


class DataDirInUseError(RuntimeError):
    """Another live ``dnnprof serve`` owns this data directory."""


class DataDirLock:
    """An exclusive lock on ``<data dir>/serve.lock`` for the life of this process. The kernel
    drops it when the holder dies, however it dies, so a lock can never go stale."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "serve.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise DataDirInUseError(
                    f"the data directory {self.path.parent} is in use by a running dnnprof serve "
                    f"(pid {holder}): stop it first, or give this one another DNNPROF_DATA_DIR"
                ) from exc
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (0700), created with its parents."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(PermissionError):  # another user's directory: leave its mode be
        if path.stat().st_uid == os.getuid():
            os.chmod(path, 0o700)
    return path


def run_dir(data_dir: Path) -> Path:
    """Where processes keep files that live as long as they do (``<data dir>/run``)."""
    return private_dir(data_dir / "run")


def spool_dir(data_dir: Path) -> Path:
    """Where a worker keeps outcomes that wait for Redis (``<data dir>/spool``)."""
    return private_dir(data_dir / "spool")


def remove_dead_owners(directory: Path, prefix: str) -> int:
    """Remove ``<prefix><pid>-*`` entries whose process is gone (left by a killed process)."""
    removed = 0
    for entry in directory.glob(f"{prefix}*"):
        pid = entry.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
            removed += 1
    return removed
