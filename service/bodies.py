"""Request bodies, checked before a handler sees them: the content type the route takes (415
otherwise), UTF-8, a bounded nesting depth and well-formed JSON (400 otherwise, saying what is
wrong), and for JSON routes a strict decode into the route's struct (422): no lax coercion of
``"1"`` to ``1`` or ``"true"`` to ``True``, which Litestar's own parsing allows.

Requiring ``application/json`` (and ``text/csv`` for imports) is also the CSRF defence of the open
default setup: a page on another site can only send a form, multipart or text/plain body without
a CORS preflight, and this service grants none.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import msgspec
from litestar import Request
from litestar.exceptions import ClientException, HTTPException, ValidationException
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE

#: Deeper JSON than this is refused before it is parsed (the request bodies here are flat).
MAX_JSON_DEPTH = 32


class UnsupportedMediaTypeException(HTTPException):
    status_code = HTTP_415_UNSUPPORTED_MEDIA_TYPE


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects, outside strings (bytes, no parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                return deepest
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _require(request: Request, wanted: str) -> None:
    got = media_type(request)
    if got != wanted:
        raise UnsupportedMediaTypeException(
            detail=f"this endpoint takes a {wanted} body; got "
            + (f"'{got}'" if got else "no Content-Type")
            + f" (send the header 'Content-Type: {wanted}')"
        )


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientException(
            detail=f"the body is not valid UTF-8: byte 0x{body[exc.start]:02x} at position {exc.start}"
        ) from exc


def strict_json(struct: type) -> Callable[[Request], Awaitable[None]]:
    """A ``before_request`` hook: the body must be JSON that decodes strictly into ``struct``."""
    fields = ", ".join(f"'{f}'" for f in struct.__struct_fields__[:1])

    async def check(request: Request) -> None:
        _require(request, "application/json")
        body = await request.body()
        if not body.strip():
            raise ClientException(detail=f"the body is empty: send a JSON object with at least {fields}")
        _utf8(body)
        if json_depth(body) > MAX_JSON_DEPTH:
            raise ClientException(detail=f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        try:
            msgspec.json.decode(body, type=struct, strict=True)
        except msgspec.ValidationError as exc:
            raise ValidationException(
                detail="Validation failed", extra=[{"message": str(exc), "key": "data", "source": "body"}]
            ) from exc
        except msgspec.DecodeError as exc:
            raise ClientException(detail=f"the body is not well-formed JSON: {exc}") from exc
        refuse_duplicate_keys(body)

    return check


def refuse_duplicate_keys(body: bytes) -> None:
    """A key twice in one object is refused (400): JSON leaves it undefined, and msgspec kept the
    last, so ``{"model": "resnet18", "model": "resnet50"}`` measured what a reader missed."""

    def once(pairs: list[tuple[str, object]]) -> dict:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                detail = f"the JSON object has the key {key[:64]!r} twice: send each field once"
                raise ClientException(detail=detail)
            seen.add(key)
        return dict(pairs)

    json.loads(body, object_pairs_hook=once)


async def csv_body(request: Request) -> None:
    """A ``before_request`` hook: the body must be UTF-8 text sent as ``text/csv``."""
    _require(request, "text/csv")
    _utf8((await request.body()).removeprefix(b"\xef\xbb\xbf"))
