"""The worker's Redis transport: kombu's, with a full Redis (its maxmemory reached) ridden out.

kombu records every message it hands out as unacked (a ZADD and an HSET), and Redis at its
maxmemory (noeviction) refuses those writes with OOM. kombu's Redis transport counts that as a
channel error, which Celery does not recover from: the worker died ("Unrecoverable error:
OutOfMemoryError"). As a connection error the consumer reconnects with Celery's own retry and
back-off until Redis has room. The message popped at the refusal is not lost to the job: its
record stays queued, and the heartbeat sends a queued job whose message is neither waiting nor
held again (workers/celery_app.py, ``resend_lost_messages``).

An ack (or a reject) removes the message from that bookkeeping inside a MULTI, which a full Redis
refuses whatever the commands. kombu raised before its in-memory QoS let the message go; Celery
logs such an error ("Couldn't ack") and goes on, so with a prefetch of one the consumer never took
another message (issue 44). Here the message is let go whatever Redis answered, and the removal
is retried at kombu's periodic ``restore_visible`` until Redis has room.

While Redis stays full, Celery's consumer reconnected ~5 times a second (its restart guard allows
5 in 1 s, then sleeps 1 s): every reconnection declares the queues, a write Redis refuses. The
consumer here waits 1, 2, 4, then 8 s between attempts while Redis answers "full".
"""

from __future__ import annotations

import logging
import time

import redis
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import TRANSPORT_ALIASES, virtual
from kombu.transport.redis import Channel as RedisChannel
from kombu.transport.redis import QoS as RedisQoS
from kombu.transport.redis import Transport as RedisTransport

log = logging.getLogger(__name__)


class QoS(RedisQoS):
    """kombu's Redis QoS whose ack frees the prefetch slot even when Redis refuses the removal."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        #: Delivery tags acked here whose entries Redis has not removed yet.
        self.unremoved: set[str] = set()

    def ack(self, delivery_tag) -> None:
        try:
            self._remove_from_indices(delivery_tag).execute()
        except redis.exceptions.RedisError as exc:
            self.unremoved.add(delivery_tag)
            log.warning("acked %s; its unacked entry stays until Redis takes writes (%s)", delivery_tag, exc)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag, requeue=False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except redis.exceptions.RedisError as exc:
            # Requeued, the unacked entry is the message's one copy: kombu restores it after the
            # visibility timeout (and the heartbeat sends its job again sooner).
            if not requeue:
                self.unremoved.add(delivery_tag)
            log.warning("rejected %s while Redis refused writes (%s)", delivery_tag, exc)
            virtual.QoS.ack(self, delivery_tag)

    def restore_visible(self, *args, **kwargs):
        for tag in list(self.unremoved):
            try:
                self._remove_from_indices(tag).execute()
            except redis.exceptions.RedisError:
                break  # still full or away: the next sweep tries again
            self.unremoved.discard(tag)
        return super().restore_visible(*args, **kwargs)


class Channel(RedisChannel):
    QoS = QoS


class Transport(RedisTransport):
    Channel = Channel
    connection_errors = (*RedisTransport.connection_errors, redis.exceptions.OutOfMemoryError)


def is_full(exc: BaseException | None) -> bool:
    """A Redis at its maxmemory refused the write (whatever kombu or Celery wrapped it in)."""
    while exc is not None:
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class Consumer(CeleryConsumer):
    """Celery's consumer, backing off between reconnections while Redis is full."""

    #: The longest wait between two attempts (a warm shutdown waits at most this long for it).
    max_full_backoff_s = 8.0
    full_backoff_s = 0.0

    def on_connection_error_before_connected(self, exc) -> None:
        super().on_connection_error_before_connected(exc)
        self._wait_while_full(exc)

    def on_connection_error_after_connected(self, exc) -> None:
        super().on_connection_error_after_connected(exc)
        self._wait_while_full(exc)

    def _wait_while_full(self, exc) -> None:
        if not is_full(exc):
            self.full_backoff_s = 0.0
            return
        self.full_backoff_s = min(self.max_full_backoff_s, max(1.0, 2 * self.full_backoff_s))
        log.warning("Redis is full (its maxmemory): next connection attempt in %.0f s", self.full_backoff_s)
        time.sleep(self.full_backoff_s)

    def on_ready(self) -> None:
        self.full_backoff_s = 0.0  # connected and consuming again
        super().on_ready()


def use_for_redis_urls() -> None:
    """``redis://`` and ``redis+socket://`` broker URLs resolve to this transport (kombu looks the
    scheme up in its alias table; an explicit transport would not apply to ``redis+socket``)."""
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
