"""Who may change things, and how often anyone may ask.

- API keys (``DNNPROF_API_KEYS``, comma-separated): when set, POST and DELETE need one, in
  ``X-API-Key`` or ``Authorization: Bearer``; reads stay open. Compared in constant time.
- Rate limiting (``DNNPROF_RATE_LIMIT_PER_MINUTE``): per API key, else per client address, with
  Litestar's rate-limit middleware; health, readiness and metrics are not limited.
"""

from __future__ import annotations

import hashlib
import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def presented_key(connection: ASGIConnection) -> str | None:
    key = connection.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = connection.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def api_key_guard(keys: frozenset[str]):
    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        if not keys or connection.scope.get("method") not in WRITE_METHODS:
            return
        key = presented_key(connection)
        if key is None or not any(hmac.compare_digest(key, k) for k in keys):
            raise NotAuthorizedException(
                "this service needs an API key to change things: send it as 'X-API-Key: <key>' "
                "or 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": 'Bearer realm="dnnprof"'},
            )

    return guard


def client_identity(request) -> str:
    """The rate-limit bucket: a hash of the API key when one is sent, else the client address."""
    key = presented_key(request)
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:16]
    return "addr:" + get_remote_address(request)


def rate_limit(per_minute: int) -> RateLimitConfig | None:
    if per_minute <= 0:
        return None
    return RateLimitConfig(
        rate_limit=("minute", per_minute),
        exclude=["^/healthz$", "^/readyz$", "^/metrics$", "^/static/"],
        identifier_for_request=client_identity,
    )
