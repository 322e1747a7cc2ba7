"""The worker's Redis transport: kombu's, with a full Redis (its maxmemory reached) counted as a
connection error rather than a fatal one.

kombu records every message it hands out as unacked (a ZADD and an HSET), and Redis at its
maxmemory (noeviction) refuses those writes with OOM. kombu's Redis transport counts that as a
channel error, which Celery does not recover from: the worker died ("Unrecoverable error:
OutOfMemoryError"). As a connection error the consumer reconnects with Celery's own retry and
back-off until Redis has room. The message popped at the refusal is not lost to the job: its
record stays queued, and the heartbeat sends a queued job whose message is neither waiting nor
held again (workers/celery_app.py, ``resend_lost_messages``).
"""

from __future__ import annotations

import redis
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.redis import Transport as RedisTransport


class Transport(RedisTransport):
    connection_errors = (*RedisTransport.connection_errors, redis.exceptions.OutOfMemoryError)


def use_for_redis_urls() -> None:
    """``redis://`` and ``redis+socket://`` broker URLs resolve to this transport (kombu looks the
    scheme up in its alias table; an explicit transport would not apply to ``redis+socket``)."""
    TRANSPORT_ALIASES["redis"] = f"{__name__}:Transport"
