"""``celery -A workers.celery_app worker``: the worker as plain Celery starts it (``dnnprof worker``
calls :func:`workers.worker.create_worker` itself and never imports this module).

Its device class is ``DNNPROF_WORKER_DEVICE`` (cuda, jetson, cpu), else detected (a Jetson, a GPU
NVML sees, else the CPU; no CUDA context here), its target ``DNNPROF_DEVICE_TARGET`` or derived
from the device. Started as a worker, it checks what ``dnnprof worker`` checks (a writable data
directory, a CUDA device for cuda/jetson) and stops as it does, saying why.
"""

from __future__ import annotations

import sys

from dnnprof.config import Settings
from dnnprof.contract import DEVICE_CLASSES
from workers.devices import detect_device_class, worker_target
from workers.preflight import WorkerStartError, check_worker_can_start
from workers.worker import create_worker

settings = Settings.from_env()
device_class = settings.worker_device or detect_device_class()
if device_class not in DEVICE_CLASSES:
    raise SystemExit(
        f"DNNPROF_WORKER_DEVICE must be one of {', '.join(DEVICE_CLASSES)}, got {device_class!r}"
    )
if "worker" in sys.argv[1:]:
    try:
        check_worker_can_start(device_class, settings.data_dir)
    except WorkerStartError as exc:
        raise SystemExit(f"dnnprof worker: {exc}") from exc
target = worker_target(device_class, settings.device_target, cpu_threads=settings.cpu_threads)
app = create_worker(settings, device_class, target)
