"""Exception handlers: every error a client can cause is a 4xx that says what was wrong and what
is accepted; a store that is away is a 503 that says so."""

from __future__ import annotations

import re

import redis
from kombu.exceptions import OperationalError
from litestar import MediaType, Request, Response
from litestar.exceptions import InternalServerException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_404_NOT_FOUND,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from msgspec import Struct

from dnnprof.catalogue import UnknownModelError
from dnnprof.contract import ACCEPTED_VALUES
from service.deps import CatalogueNotReadyError


class ErrorBody(Struct, kw_only=True):
    """Every 4xx and 5xx: the status, what was wrong and, for 422s, each field with what it accepts."""

    status_code: int
    detail: str
    errors: list[dict] | None = None
    suggestions: list[str] | None = None


#: What each error status means on this API, for the OpenAPI document.
ERROR_MEANINGS = {
    400: "Malformed body: not UTF-8, not JSON, nested too deep, or empty",
    401: "An API key is needed (X-API-Key or Authorization: Bearer)",
    403: "Read-only: a published table shipped with dnnprof, or another client's upload",
    404: "No such model (with close matches) or profile",
    409: "The name is taken: another client's upload, or another file of yours",
    413: "The body is larger than this endpoint takes",
    415: "The body's Content-Type is not the one this endpoint takes",
    422: "A field is invalid: each error names it and what it accepts; an upload refused, saying why",
    429: "Too many requests, failed authentications, active jobs or uploads from this client",
    503: "The store (Redis) is unreachable, or no worker has published the catalogue yet",
    507: "The store (Redis) is full (maxmemory), or holds all the uploaded bytes it may: nothing changed",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    return {
        code: ResponseSpec(data_container=ErrorBody, description=meaning, generate_examples=False)
        for code, meaning in ((c, ERROR_MEANINGS[c]) for c in codes)
    }


def _field_of(key: str) -> str:
    return re.split(r"[.\[]", key, maxsplit=1)[0] if key else ""


#: A value a 422 quotes back is cut to this many characters (a 60 KB string came back whole).
ECHO_CHARS = 64
MAX_MESSAGE_CHARS = 1000


def cut_echo(message: str) -> str:
    """The message with each long quoted value cut (saying how long it was), and at most
    ``MAX_MESSAGE_CHARS`` in all."""

    def cut(match: re.Match) -> str:
        value = match.group(2)
        return f"{match.group(1)}{value[:ECHO_CHARS]}…{match.group(1)} ({len(value)} characters)"

    # No quote inside the value: linear on hostile input (a lazy '.' took 20 s on 60 KB of "'x").
    message = re.sub(rf"(['`\"])([^'`\"]{{{ECHO_CHARS + 1},}})\1", cut, message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = f"{message[:MAX_MESSAGE_CHARS]}… ({len(message)} characters)"
    return message


def validation_error(request: Request, exc: ValidationException) -> Response:
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        if not isinstance(item, dict):
            continue
        message = cut_echo(str(item.get("message", "")))
        key = str(item.get("key", ""))
        # msgspec names the place in its message ("... - at `$.batch_sizes[0]`", "unknown field
        # `x`"); Litestar's key is then just "data", the body as a whole.
        match = (
            re.search(r"at `\$\.?([^`]*)`", message)
            or re.search(r"unknown field `([^`]*)`", message)
            or re.search(r"missing required field `([^`]*)`", message)
        )
        if match and (not key or key == "data"):
            key = match.group(1)
        field = _field_of(key)
        error = {"field": key or None, "message": message, "source": item.get("source")}
        if field in ACCEPTED_VALUES:
            error["accepted"] = ACCEPTED_VALUES[field]
        elif "unknown field" in message:
            error["accepted"] = "fields: " + ", ".join(ACCEPTED_VALUES)
        errors.append(error)
    summary = "; ".join(
        f"{e['field'] or 'body'}: {e['message']}"
        + (f" (accepted: {e['accepted']})" if "accepted" in e else "")
        for e in errors
    )
    detail = "Invalid request: " + (summary or cut_echo(exc.detail))
    return Response(
        {"status_code": 422, "detail": detail, "errors": errors},
        status_code=HTTP_422_UNPROCESSABLE_ENTITY,
        media_type=MediaType.JSON,
    )


def unknown_model(request: Request, exc: UnknownModelError) -> Response:
    return Response(
        {
            "status_code": 404,
            "detail": f"Unknown model {exc.name!r}. Search the catalogue with GET /v1/models?q=...",
            "suggestions": exc.suggestions,
        },
        status_code=HTTP_404_NOT_FOUND,
    )


def catalogue_not_ready(request: Request, exc: CatalogueNotReadyError) -> Response:
    return Response(
        {
            "status_code": 503,
            "detail": "The model catalogue is not published yet: no worker has started. "
            "Start one (dnnprof worker) and retry.",
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "10"},
    )


def store_unavailable(request: Request, exc: Exception) -> Response:
    return Response(
        {
            "status_code": 503,
            "detail": "The store (Redis) is unreachable; nothing was changed. Retry shortly.",
            "error": type(exc).__name__,
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


def store_full(request: Request, exc: Exception) -> Response:
    """Redis at its maxmemory refuses writes (OOM): a 507 that says so, not a 500."""
    return Response(
        {
            "status_code": 507,
            "detail": "The store (Redis) is full: it refuses writes at its maxmemory, so nothing was "
            "changed. Free memory there or raise its maxmemory, then retry.",
            "error": type(exc).__name__,
        },
        status_code=507,
        headers={"Retry-After": "60"},
    )


def broker_error(request: Request, exc: OperationalError) -> Response:
    """kombu raises a refused publish as its OperationalError, the Redis error its cause: a full
    Redis is a 507 that says so, anything else the store away (503)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, redis.exceptions.OutOfMemoryError):
            return store_full(request, cause)
        cause = cause.__cause__ or cause.__context__
    return store_unavailable(request, exc)


#: What Litestar raises when the client goes away before its body is read (an InternalServerException).
CLIENT_GONE = "client disconnected prematurely"


def internal_error(request: Request, exc: InternalServerException) -> Response:
    """A client that left mid-upload is no server error: answered (and counted in the request
    metrics) as nginx's 499 "client closed request". Anything else stays a 500 without details."""
    if exc.detail == CLIENT_GONE:
        return Response(
            {"status_code": 499, "detail": "the client closed the connection before its body was read"},
            status_code=499,
        )
    return Response({"status_code": 500, "detail": "Internal Server Error"}, status_code=500)


EXCEPTION_HANDLERS = {
    ValidationException: validation_error,
    UnknownModelError: unknown_model,
    CatalogueNotReadyError: catalogue_not_ready,
    redis.exceptions.ConnectionError: store_unavailable,
    redis.exceptions.TimeoutError: store_unavailable,
    redis.exceptions.OutOfMemoryError: store_full,
    InternalServerException: internal_error,
    OperationalError: broker_error,
}
