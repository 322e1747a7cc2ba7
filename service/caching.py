"""Conditional GETs for a profile by id: a strong ETag over the exact bytes served, 304 when the
client has them. A finished profile never changes (cacheable, immutable); a running one is
revalidated on every poll, so a poll between two progress updates costs a 304 and no body."""

from __future__ import annotations

import hashlib

from litestar import Request, Response
from litestar.enums import MediaType
from litestar.status_codes import HTTP_304_NOT_MODIFIED

#: An hour: a deleted profile may linger that long in a cache that kept it.
FINISHED_CACHE_CONTROL = "max-age=3600, immutable"
ACTIVE_CACHE_CONTROL = "no-cache"


def etag_of(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=16).hexdigest() + '"'


def client_has(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly, and ``*`` matches any representation."""
    if not if_none_match:
        return False
    tags = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def conditional_json(request: Request, body: bytes, *, finished: bool) -> Response:
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": FINISHED_CACHE_CONTROL if finished else ACTIVE_CACHE_CONTROL}
    if client_has(request.headers.get("if-none-match"), etag):
        return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(content=body, media_type=MediaType.JSON, headers=headers)
