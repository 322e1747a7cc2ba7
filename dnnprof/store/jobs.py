"""Jobs beside their records: each client's active jobs (the API's per-client cap), cancel
requests, the counters of ended jobs, and the broker's own messages (kombu's Redis layout: the
queues and ``unacked``), read to find what no job refers to any more. The queue names and the
task are in :mod:`dnnprof.queue`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import msgspec

from dnnprof import keys
from dnnprof.contract import TERMINAL_STATUSES
from dnnprof.store.base import StoreBase, record_decoder, record_key


class JobsMixin(StoreBase):
    def active_of(self, client: str) -> int:
        """How many of the jobs ``client`` created are queued or running (ended ones are pruned
        here, as they are read: no status change needs to know of this set)."""
        key = keys.active_by(client)
        ids = [i.decode() for i in self.redis.smembers(key)]
        if not ids:
            return 0
        raws = self.redis.mget([record_key(i) for i in ids])
        ended = [
            i
            for i, raw in zip(ids, raws, strict=True)
            if raw is None or record_decoder.decode(raw).status in TERMINAL_STATUSES
        ]
        if ended:
            self.redis.srem(key, *ended)
        return len(ids) - len(ended)

    def note_active(self, client: str, profile_id: str) -> None:
        key = keys.active_by(client)
        with self.redis.pipeline() as pipe:
            pipe.sadd(key, profile_id)
            pipe.expire(key, 7 * 24 * 3600)  # a client gone for a week leaves nothing behind
            pipe.execute()

    def request_cancel(self, profile_id: str, ttl_s: int = 86400) -> None:
        self.redis.set(keys.cancel(profile_id), "1", ex=ttl_s)

    def cancel_requested(self, profile_id: str) -> bool:
        return bool(self.redis.exists(keys.cancel(profile_id)))

    # job statistics (monotonic, for Prometheus counters)

    def count_finished(self, status: str, duration_s: float) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(keys.JOB_STATS, f"{status}:count", 1)
            pipe.hincrbyfloat(keys.JOB_STATS, f"{status}:seconds", max(0.0, duration_s))
            pipe.execute()

    def finished_counts(self) -> dict[str, tuple[int, float]]:
        """status -> (jobs that ended so, seconds they took in all)."""
        raw = {k.decode(): v.decode() for k, v in self.redis.hgetall(keys.JOB_STATS).items()}
        out: dict[str, tuple[int, float]] = {}
        for key, value in raw.items():
            status, _, what = key.partition(":")
            count, seconds = out.get(status, (0, 0.0))
            out[status] = (int(value), seconds) if what == "count" else (count, float(value))
        return out

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (kombu keeps a Redis list named after it)."""
        return int(self.redis.llen(queue))

    # the broker's messages (kombu's Redis layout), for what no job refers to any more

    def queued_task_ids(self, queue: str) -> list[str]:
        """Task ids (= profile ids) of the messages waiting in a Celery queue."""
        return [i for i in (_task_id(m) for m in self.redis.lrange(queue, 0, -1)) if i]

    def purge_task_messages(self, queue: str, task_ids: Iterable[str]) -> int:
        """Remove the waiting messages of these tasks from a queue; returns how many."""
        wanted = set(task_ids)
        removed = 0
        for message in self.redis.lrange(queue, 0, -1):
            if _task_id(message) in wanted:
                removed += int(self.redis.lrem(queue, 1, message))
        return removed

    def unacked_task_ids(self) -> dict[str, float]:
        """Task ids delivered to a worker and not acknowledged yet (running, or held for a retry),
        with when they were delivered (kombu's ``unacked_index``)."""
        delivered_at = {
            tag.decode(): score for tag, score in self.redis.zrange("unacked_index", 0, -1, withscores=True)
        }
        out: dict[str, float] = {}
        for tag, raw in self.redis.hgetall("unacked").items():
            with contextlib.suppress(msgspec.DecodeError):
                entry = msgspec.json.decode(raw)
                if isinstance(entry, list) and entry and (task_id := _headers_id(entry[0])):
                    out[task_id] = max(out.get(task_id, 0.0), delivered_at.get(tag.decode(), 0.0))
        return out

    def purge_unacked(self, task_id: str) -> int:
        """Forget the delivered-but-unacknowledged copies of a task (a dead worker's), which kombu
        would otherwise give back only after the visibility timeout."""
        removed = 0
        for tag, raw in self.redis.hgetall("unacked").items():
            with contextlib.suppress(msgspec.DecodeError):
                entry = msgspec.json.decode(raw)  # [message, exchange, routing key]
                if isinstance(entry, list) and entry and _headers_id(entry[0]) == task_id:
                    with self.redis.pipeline() as pipe:
                        pipe.hdel("unacked", tag)
                        pipe.zrem("unacked_index", tag)
                        pipe.execute()
                    removed += 1
        return removed


def _headers_id(message: object) -> str | None:
    """The task id in a decoded kombu message (Celery's protocol 2 puts it in the headers)."""
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return None
    return message["headers"].get("id")


def _task_id(raw: bytes) -> str | None:
    try:
        return _headers_id(msgspec.json.decode(raw))
    except msgspec.DecodeError:
        return None
