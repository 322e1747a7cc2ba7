"""Conditional GETs for a profile by id: a strong ETag over the exact bytes served, 304 when the
client has them. A finished profile never changes (cacheable, immutable); a running one is
revalidated on every poll, so a poll between two progress updates costs a 304 and no body."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

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


def _headers(etag: str, finished: bool) -> dict[str, str]:
    return {"ETag": etag, "Cache-Control": FINISHED_CACHE_CONTROL if finished else ACTIVE_CACHE_CONTROL}


def not_modified(etag: str, *, finished: bool) -> Response:
    return Response(content=b"", status_code=HTTP_304_NOT_MODIFIED, headers=_headers(etag, finished))


def conditional_json(request: Request, body: bytes, etag: str, *, finished: bool) -> Response:
    if client_has(request.headers.get("if-none-match"), etag):
        return not_modified(etag, finished=finished)
    return Response(content=body, media_type=MediaType.JSON, headers=_headers(etag, finished))


class FinishedETags:
    """The ETags of finished profiles this API process served lately, so that a poll sending one
    back is a 304 without reading the store: a poll that costs nothing (issue 29). A finished
    profile never changes; one deleted through this process is forgotten at once, and one deleted
    through another process is answered from the store again within ``ttl_s`` (its Cache-Control
    already lets any cache between keep it an hour). Bounded: the least recently served go first."""

    def __init__(self, size: int = 10_000, ttl_s: float = 5.0, clock=time.monotonic) -> None:
        self.size, self.ttl_s, self.clock = size, ttl_s, clock
        self._etags: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Reads remember on the event loop; a DELETE forgets from Litestar's thread pool.
        self._lock = threading.Lock()

    def get(self, profile_id: str) -> str | None:
        with self._lock:
            found = self._etags.get(profile_id)
            if found is None:
                return None
            if self.clock() >= found[1]:
                del self._etags[profile_id]
                return None
            return found[0]

    def remember(self, profile_id: str, etag: str) -> None:
        with self._lock:
            self._etags[profile_id] = (etag, self.clock() + self.ttl_s)
            self._etags.move_to_end(profile_id)
            while len(self._etags) > self.size:
                self._etags.popitem(last=False)

    def forget(self, profile_id: str) -> None:
        with self._lock:
            self._etags.pop(profile_id, None)
