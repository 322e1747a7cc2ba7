"""What every part of the store shares: the Redis client and its timeouts, the key prefix, the
decoders, the one compare-and-delete, and retrying a write across a Redis pause."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dnnprof import keys
from dnnprof.contract import ProfileRecord

#: What redis-py raises when Redis at its maxmemory (noeviction) refuses a write or a transaction.
FULL_ERRORS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)
record_decoder = msgspec.json.Decoder(ProfileRecord)
encode = msgspec.json.encode
S = TypeVar("S", bound="StoreBase")


class ConflictError(Exception):
    """A record was not in a state that allows the requested change."""


class RecordGone(Exception):
    """The record a change was for is not stored (deleted, or never written). Not a KeyError, so
    that a KeyError raised by a bug inside a change is never taken for a deleted job."""


def record_key(profile_id: str) -> str:
    return keys.record(profile_id)


class StoreBase:
    """One Redis client; each concern of the store is a mixin over it (see the package's doc)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._probe: redis.Redis | None = None

    @classmethod
    def from_url(cls: type[S], url: str, **kwargs: Any) -> S:
        url = redis_py_url(url)
        kwargs.setdefault("socket_timeout", 10)
        kwargs.setdefault("socket_connect_timeout", 5)
        kwargs.setdefault("health_check_interval", 15)
        return cls(redis.Redis.from_url(url, **kwargs))

    def ping(self) -> bool:
        return bool(self.redis.ping())

    def probe(self, timeout_s: float = 2.0) -> bool:
        """PING on a connection of its own with a short timeout, for health checks that must answer
        quickly when the server hangs (the store's own connections wait socket_timeout)."""
        if self._probe is None:
            self._probe = self.with_timeout(timeout_s).redis
        return bool(self._probe.ping())

    def with_timeout(self: S, timeout_s: float) -> S:
        """The same store on connections of their own that give up after ``timeout_s``: for loops
        that must keep their own time while Redis hangs (a paused server never answers)."""
        pool = self.redis.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        kwargs["retry"] = Retry(NoBackoff(), 0)  # redis-py retries a timeout 10 times by default
        return type(self)(
            redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        )

    def get(self, profile_id: str) -> ProfileRecord | None:
        raw = self.redis.get(record_key(profile_id))
        return record_decoder.decode(raw) if raw is not None else None

    def _records(self, ids: list[str]) -> list[ProfileRecord]:
        if not ids:
            return []
        raws = self.redis.mget([record_key(i) for i in ids])
        return [record_decoder.decode(raw) for raw in raws if raw is not None]

    def delete_if_equal(self, key: str, value: str) -> bool:
        """Delete ``key`` if it holds ``value`` (a compare-and-delete), in a WATCH transaction.
        Redis at its maxmemory refuses scripts and queues nothing in a MULTI, but runs GET and DEL;
        then a plain GET and DEL is as safe, since no write could have set the key meanwhile."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != value.encode():
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.execute()
                return True
            except redis.exceptions.WatchError:  # changed meanwhile: no longer ours to delete
                return False
            except FULL_ERRORS:
                pass
        return self.redis.get(key) == value.encode() and bool(self.redis.delete(key))


def redis_py_url(url: str) -> str:
    """Celery/kombu spell a Unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``."""
    return "unix://" + url[len("redis+socket://") :] if url.startswith("redis+socket://") else url


def now() -> float:
    return time.time()


def with_retries(
    action: Callable[[], Any],
    *,
    until_s: float,
    what: str,
    log: Callable[[str], None] = lambda m: None,
    max_backoff_s: float = 5.0,
) -> Any:
    """``action()``, again with back-off while Redis is away, for up to ``until_s`` seconds; then
    the last error is raised. For writes that must not be lost to a Redis pause."""
    deadline = time.monotonic() + until_s
    backoff = 0.2
    while True:
        try:
            return action()
        except redis.exceptions.RedisError as exc:
            if time.monotonic() + backoff > deadline:
                raise
            log(f"{what} failed ({type(exc).__name__}: {exc}); retrying in {backoff:.1f} s")
            time.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
