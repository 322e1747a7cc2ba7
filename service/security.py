"""Who may change things, and how often anyone may ask.

- API keys (``DNNPROF_API_KEYS``, comma-separated): when set, POST and DELETE need one, in
  ``X-API-Key`` or ``Authorization: Bearer``; reads stay open. Compared in constant time. An
  address that presents ``DNNPROF_AUTH_FAILURES_PER_MINUTE`` wrong keys in a minute has its
  further wrong keys answered 429 for the rest of it (counted in Redis, so every API replica sees
  it), so keys cannot be guessed; a valid key still passes, and a request with no key is not counted.
- Rate limiting (``DNNPROF_RATE_LIMIT_PER_MINUTE``): per verified API key, else per client
  address, with Litestar's rate-limit middleware; a made-up key buys no bucket of its own. The
  client address is the peer's; ``X-Forwarded-For`` counts only from ``DNNPROF_TRUSTED_PROXIES``
  (uvicorn is told so, see ``dnnprof.cli``). Health, readiness and metrics are not limited.
  The counts live in Redis, so N API processes (``dnnprof api --workers N``) limit a client
  once, not N times.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

import anyio.to_thread
import redis
import redis.asyncio
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address
from litestar.stores.redis import RedisStore

from dnnprof.store.base import redis_py_url

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
AUTH_FAILURES = "dnnprof:authfail:"


def count_auth_failure(client: redis.Redis, address: str, window_s: int = 60) -> int:
    """One more wrong key from ``address`` in its current window (shared by every API replica)."""
    key = AUTH_FAILURES + address
    with client.pipeline() as pipe:
        pipe.set(key, 0, ex=window_s, nx=True)  # the window starts at the first failure
        pipe.incr(key)
        _, count = pipe.execute()
    return int(count)


def auth_failures(client: redis.Redis, address: str) -> int:
    return int(client.get(AUTH_FAILURES + address) or 0)


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def verified(key: str | None, keys: frozenset[str]) -> bool:
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def peer_address(connection: ASGIConnection) -> str:
    return connection.client.host if connection.client else "unknown"


def throttle_wrong_keys(client: redis.Redis, address: str, failures_per_minute: int) -> None:
    """Count one more wrong key from ``address``; 429 once it has sent its allowance this minute."""
    if auth_failures(client, address) >= failures_per_minute:
        raise TooManyRequestsException(
            detail=f"too many failed authentications from {address}: {failures_per_minute} "
            "wrong keys a minute are allowed (DNNPROF_AUTH_FAILURES_PER_MINUTE); retry in a "
            "minute (a valid key is not refused)",
            headers={"Retry-After": "60"},
        )
    count_auth_failure(client, address)


def api_key_guard(keys: frozenset[str], failures_per_minute: int = 10):
    """Writes need a verified key. A valid key always passes: the failure limit throttles the
    wrong guesses of an address, never its good requests (else anyone sharing an address, or
    a proxy's, could lock every key out). A request that presents no key guesses nothing: it is
    told what is needed and not counted.

    A coroutine: Litestar runs a plain function guard in a worker thread, on every request (reads
    and ``/healthz`` included), and that hop cost more than the rest of a 304 (issue 29). Only a
    wrong key's Redis calls go to a thread."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not keys or connection.scope.get("method") not in WRITE_METHODS:
            return
        key = presented_key(connection)
        if verified(key, keys):
            return
        if key and failures_per_minute > 0:
            client = connection.app.state.services.store.redis
            await anyio.to_thread.run_sync(
                throttle_wrong_keys, client, peer_address(connection), failures_per_minute
            )
        raise NotAuthorizedException(
            "this service needs an API key to change things: send it as 'X-API-Key: <key>' "
            "or 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": 'Bearer realm="dnnprof"'},
        )

    return guard


def identity_for(keys: frozenset[str]):
    """The rate-limit bucket: a verified API key's own, else the client address (a key that is not
    one of ours, made up anew for each request, must not buy a fresh bucket)."""

    def identity(request) -> str:
        key = presented_key(request)
        if verified(key, keys):
            return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
        return "addr:" + get_remote_address(request)

    return identity


class RateLimitStore(RedisStore):
    """Each client's request history for the rate limit, in the service's Redis (shared by every
    API process). Fails open: with Redis away or full a request is not refused for the limit's
    sake; what it needs of the store answers for itself (503, 507)."""

    @classmethod
    def for_url(cls, url: str) -> RateLimitStore:
        client = redis.asyncio.Redis.from_url(redis_py_url(url), socket_timeout=5, socket_connect_timeout=5)
        return cls(client, namespace="dnnprof:ratelimit", handle_client_shutdown=True)

    async def get(self, key: str, renew_for: int | None = None) -> bytes | None:
        try:
            return await super().get(key, renew_for)
        except redis.exceptions.RedisError as exc:
            log.warning("rate limit: history not read (%s); request let through", type(exc).__name__)
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except redis.exceptions.RedisError as exc:
            log.warning("rate limit: history not written (%s)", type(exc).__name__)


#: The name Litestar's rate limit looks its store up by (``AppConfig.stores``).
RATE_LIMIT_STORE = "rate_limit"


def rate_limit(per_minute: int, keys: frozenset[str] = frozenset()) -> RateLimitConfig | None:
    if per_minute <= 0:
        return None
    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        exclude=["^/healthz$", "^/readyz$", "^/metrics$", "^/static/"],
        identifier_for_request=identity_for(keys),
        store=RATE_LIMIT_STORE,
    )
