"""Settings from the ``DNNPROF_*`` environment variables (the README's configuration table): every
variable is read here, by :meth:`Settings.from_env`, which each process calls when it starts (the
API, a worker, a measuring process); nothing else reads them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: How a measuring process starts (workers/launch.py): forked from a template that has imported
#: the libraries, or a fresh interpreter.
MEASURE_STARTS = ("template", "fresh")
#: Every ``DNNPROF_*_MB`` setting counts MiB (2^20 bytes, as nvidia-smi and df -m do); the
#: analyses' MB are 10^6 bytes, as the paper's tables (``dnnprof.analysis.MEGABYTE``).
MIB = 1024 * 1024


class SettingsError(ValueError):
    """A ``DNNPROF_*`` variable holds a value no setting accepts (the message says which)."""


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from exc


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "dnnprof"


@dataclass(frozen=True)
class Settings:
    redis_url: str | None = None
    #: The store is the embedded Redis this process supervises (dnnprof serve), part of the service.
    embedded_store: bool = False
    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = "127.0.0.1"
    port: int = 8000
    soft_time_limit_s: int = 3300
    time_limit_s: int = 3600
    max_attempts: int = 3
    heartbeat_s: int = 5
    #: How long a job's final write retries while Redis is away before it waits in the spool.
    store_retry_s: int = 600
    memory_limit_mb: int = 0
    api_keys: frozenset[str] = frozenset()
    rate_limit_per_minute: int = 1200
    #: Failed authentications one address may make per minute before it is answered 429.
    auth_failures_per_minute: int = 10
    #: Addresses whose X-Forwarded-For is believed (a reverse proxy); no one's by default.
    trusted_proxies: tuple[str, ...] = ()
    #: The most memory (GB) one request may need by the engine's estimate (see dnnprof/cost.py).
    max_request_cost_gb: float = 80.0
    #: Jobs one client (an API key, else an address) may have queued or running at once; 0: any.
    max_active_per_client: int = 100
    worker_metrics_port: int = 9808
    weights_dir: Path | None = None
    #: Load pretrained weights from the cache only, never from the network (air-gapped labs).
    weights_offline: bool = False
    imagenet_val: Path | None = None
    #: The labels file of a flat validation folder (None: ``labels.txt`` in it).
    imagenet_val_labels: Path | None = None
    #: ``template`` (forked from a process that imported torch once) or ``fresh`` interpreters.
    measure_start: str = "template"
    #: Before each batch size, how long to wait for other processes to leave the CPUs (0: never).
    quiet_wait_s: float = 30.0
    #: Free space the data disk must have before a measuring process starts (MB).
    min_free_mb: int = 256
    #: The most the runtimes' export cache (<data dir>/runtimes) may hold; least recently used out.
    runtime_cache_mb: int = 2048
    #: uvicorn's line per request; off, a 304 costs a third less (docs/benchmarks.md).
    access_log: bool = True
    #: The catalogue sweep's file of models that cannot be built here (None: the one shipped).
    catalogue_failures: Path | None = None
    #: Threads of a measuring process on a CPU (None: chosen from the usable cores).
    cpu_threads: int | None = None
    #: The device class of a worker started as plain Celery (``dnnprof worker --device`` wins).
    worker_device: str | None = None
    #: A worker's device target where it is not derived from the device (``cpu/lab-box`` or
    #: ``lab-box``, its class added).
    device_target: str | None = None
    #: Uploaded ONNX files (issue 42): the largest file, the most graph nodes, and what one
    #: client (an API key, else an address) and everyone together may keep in the store.
    max_upload_mb: int = 600
    max_upload_nodes: int = 8000
    max_uploads_per_client: int = 20
    max_upload_client_mb: int = 2048
    max_uploads_total_mb: int = 8192

    @property
    def visibility_timeout_s(self) -> int:
        """Above the hard time limit, or Redis redelivers a task that is still running."""
        return self.time_limit_s + 600

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ.get
        soft = _env_int("DNNPROF_TASK_SOFT_TIME_LIMIT", 3300)
        hard = _env_int("DNNPROF_TASK_TIME_LIMIT", max(3600, soft + 60))
        if hard <= soft:
            raise SettingsError("DNNPROF_TASK_TIME_LIMIT must be above DNNPROF_TASK_SOFT_TIME_LIMIT")
        measure_start = (env("DNNPROF_MEASURE_START") or "template").strip()
        if measure_start not in MEASURE_STARTS:
            raise SettingsError(
                f"DNNPROF_MEASURE_START must be one of {', '.join(MEASURE_STARTS)}, got {measure_start!r}"
            )
        cpu_threads = _env_int("DNNPROF_CPU_THREADS", 0) if env("DNNPROF_CPU_THREADS") else None
        if cpu_threads is not None and cpu_threads < 1:
            raise SettingsError(f"DNNPROF_CPU_THREADS must be at least 1, got {cpu_threads}")
        return cls(
            redis_url=env("DNNPROF_REDIS_URL") or None,
            data_dir=Path(env("DNNPROF_DATA_DIR") or _default_data_dir()),
            host=env("DNNPROF_HOST") or "127.0.0.1",
            port=_env_int("DNNPROF_PORT", 8000),
            soft_time_limit_s=soft,
            time_limit_s=hard,
            max_attempts=_env_int("DNNPROF_MAX_ATTEMPTS", 3),
            heartbeat_s=_env_int("DNNPROF_HEARTBEAT_S", 5),
            store_retry_s=_env_int("DNNPROF_STORE_RETRY_S", 600),
            memory_limit_mb=_env_int("DNNPROF_MEMORY_LIMIT_MB", 0),
            api_keys=frozenset(k.strip() for k in (env("DNNPROF_API_KEYS") or "").split(",") if k.strip()),
            rate_limit_per_minute=_env_int("DNNPROF_RATE_LIMIT_PER_MINUTE", 1200),
            auth_failures_per_minute=_env_int("DNNPROF_AUTH_FAILURES_PER_MINUTE", 10),
            trusted_proxies=tuple(
                p.strip() for p in (env("DNNPROF_TRUSTED_PROXIES") or "").split(",") if p.strip()
            ),
            max_request_cost_gb=_env_float("DNNPROF_MAX_REQUEST_COST_GB", 80.0),
            max_active_per_client=_env_int("DNNPROF_MAX_ACTIVE_PER_CLIENT", 100),
            worker_metrics_port=_env_int("DNNPROF_WORKER_METRICS_PORT", 9808),
            weights_dir=Path(env("DNNPROF_WEIGHTS_DIR")) if env("DNNPROF_WEIGHTS_DIR") else None,
            imagenet_val=Path(env("DNNPROF_IMAGENET_VAL")) if env("DNNPROF_IMAGENET_VAL") else None,
            imagenet_val_labels=(
                Path(env("DNNPROF_IMAGENET_VAL_LABELS")) if env("DNNPROF_IMAGENET_VAL_LABELS") else None
            ),
            weights_offline=(env("DNNPROF_WEIGHTS_OFFLINE") or "").lower() in ("1", "true", "yes"),
            measure_start=measure_start,
            quiet_wait_s=_env_float("DNNPROF_QUIET_WAIT_S", 30.0),
            access_log=_env_int("DNNPROF_ACCESS_LOG", 1) != 0,
            cpu_threads=cpu_threads,
            catalogue_failures=(
                Path(env("DNNPROF_CATALOGUE_FAILURES")) if env("DNNPROF_CATALOGUE_FAILURES") else None
            ),
            worker_device=(env("DNNPROF_WORKER_DEVICE") or "").strip() or None,
            device_target=(env("DNNPROF_DEVICE_TARGET") or "").strip() or None,
            runtime_cache_mb=_env_int("DNNPROF_RUNTIME_CACHE_MB", 2048),
            min_free_mb=_env_int("DNNPROF_MIN_FREE_MB", 256),
            max_upload_mb=_env_int("DNNPROF_MAX_UPLOAD_MB", 600),
            max_upload_nodes=_env_int("DNNPROF_MAX_UPLOAD_NODES", 8000),
            max_uploads_per_client=_env_int("DNNPROF_MAX_UPLOADS_PER_CLIENT", 20),
            max_upload_client_mb=_env_int("DNNPROF_MAX_UPLOAD_CLIENT_MB", 2048),
            max_uploads_total_mb=_env_int("DNNPROF_MAX_UPLOADS_TOTAL_MB", 8192),
        )


def require_redis_url(settings: Settings) -> str:
    if not settings.redis_url:
        raise RuntimeError(
            "DNNPROF_REDIS_URL is not set: start everything with `dnnprof serve` (embedded Redis) "
            "or point DNNPROF_REDIS_URL at your Redis, e.g. redis://localhost:6379/0"
        )
    return settings.redis_url
