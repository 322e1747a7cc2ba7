"""The Celery wiring both sides agree on: task names, a queue per device class and one per device
target, transport options.

A worker consumes its class's queue (``dnnprof.cuda``: any worker of the class may take the job)
and its target's (``dnnprof.cuda.nvidia-l4-24gb``: only workers of that target).

The API builds this app to *send* tasks by name (it never imports ``workers``); the workers
build the same app and register the tasks on it.
"""

from __future__ import annotations

from celery import Celery

from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ProfileRecord, ProfileSettings

PROFILE_TASK = "dnnprof.profile"


def queue_for(device: str) -> str:
    """The queue of a class (``cpu`` -> ``dnnprof.cpu``) or of a target (``cpu/intel-xeon-x2`` ->
    ``dnnprof.cpu.intel-xeon-x2``)."""
    return "dnnprof." + device.replace("/", ".", 1)


def route_of(settings: ProfileSettings) -> str:
    """Where a job goes: its target's queue when it names one, else its class's."""
    return queue_for(settings.target or settings.device)


def send_profile(app: Celery, record: ProfileRecord) -> None:
    """Queue a job by its id (also the task id, so the store can find its message)."""
    app.send_task(PROFILE_TASK, args=[record.id], queue=route_of(record.settings), task_id=record.id)


def celery_url(url: str) -> str:
    """Celery/kombu spell a Unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``."""
    return "redis+socket://" + url[len("unix://") :] if url.startswith("unix://") else url


def make_celery(settings: Settings) -> Celery:
    url = celery_url(require_redis_url(settings))
    app = Celery("dnnprof", broker=url, backend=url)
    transport = {
        # A task still running after visibility_timeout is delivered again: keep it above the
        # hard time limit, for the broker and the result backend alike.
        "visibility_timeout": settings.visibility_timeout_s,
    }
    app.conf.update(
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,  # results live in the dnnprof store, not in Celery's backend
        # Long GPU tasks (Celery's guidance): ack after the work, one message at a time,
        # give the message back if the worker process dies mid-task.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.soft_time_limit_s,
        task_time_limit=settings.time_limit_s,
        task_default_queue=queue_for("cpu"),
        task_create_missing_queues=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
