"""Profile records: storing one (deduplicated), changing one atomically, listing them through
the indexes of :mod:`dnnprof.indexes`, deleting one, and re-indexing a store of an older layout."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import redis
import redis.asyncio

from dnnprof import indexes, keys
from dnnprof.contract import ACTIVE_STATUSES, ProfileRecord, ProfileSettings
from dnnprof.store.base import (
    FULL_ERRORS,
    ConflictError,
    RecordGone,
    encode,
    record_decoder,
    record_key,
    redis_py_url,
)
from dnnprof.store.counting import CountingMixin, group_of

ALL_PROFILES = indexes.ALL


def dedupe_pointer(settings: ProfileSettings) -> str:
    return keys.dedupe(settings.dedupe_key())


class RecordsMixin(CountingMixin):
    def create_or_get(self, record: ProfileRecord, *, force: bool = False) -> tuple[ProfileRecord, bool]:
        """Store ``record`` as a new job unless an equal one is stored or in flight.

        Returns ``(record, created)``. An equal job that failed or was cancelled is replaced;
        with ``force`` any equal job is replaced (the old record stays readable by its id).
        Atomic across concurrent API processes (WATCH on the dedupe key).
        """
        dedupe_key = dedupe_pointer(record.settings)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(dedupe_key)
                    existing_id = pipe.get(dedupe_key)
                    if existing_id is not None and not force:
                        raw = pipe.get(record_key(existing_id.decode()))
                        if raw is not None:
                            existing = record_decoder.decode(raw)
                            if existing.status in ACTIVE_STATUSES or existing.status == "succeeded":
                                pipe.unwatch()
                                return existing, False
                    pipe.multi()
                    pipe.set(dedupe_key, record.id)
                    pipe.set(record_key(record.id), encode(record))
                    for key in indexes.index_keys(record):
                        pipe.zadd(key, {record.id: record.created_at})
                    pipe.execute()
                    if record.status == "succeeded":
                        self.recount(record)
                    return record, True
                except redis.WatchError:
                    continue

    def add_many(self, records: Iterable[ProfileRecord], chunk: int = 1000) -> int:
        """Store many records at once (an import, a benchmark's fill): each with its dedupe pointer
        and its indexes, in pipelines; then which profile counts for each group they touch."""
        groups: set[str] = set()
        done = 0
        batch: list[ProfileRecord] = []

        def flush() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                for rec in batch:
                    pipe.set(dedupe_pointer(rec.settings), rec.id)
                    pipe.set(record_key(rec.id), encode(rec))
                    for key in indexes.index_keys(rec):
                        pipe.zadd(key, {rec.id: rec.created_at})
                pipe.execute()
            batch.clear()

        for rec in records:
            batch.append(rec)
            if rec.status == "succeeded":
                groups.add(group_of(rec))
            done += 1
            if len(batch) >= chunk:
                flush()
        flush()
        for field in groups:
            self.rescan(field)
        return done

    def stored_for(
        self, candidates: Iterable[ProfileSettings], accept: Callable[[ProfileRecord], bool] = bool
    ) -> ProfileRecord | None:
        """The newest succeeded profile stored under any of these settings that ``accept`` takes
        (a class answered from any of its targets; a target from a profile stored before targets)."""
        pointers = [dedupe_pointer(c) for c in candidates]
        ids = [i.decode() for i in self.redis.mget(pointers) if i is not None] if pointers else []
        found = [self.get(i) for i in dict.fromkeys(ids)]
        ok = [r for r in found if r is not None and r.status == "succeeded" and accept(r)]
        return max(ok, key=lambda r: r.created_at, default=None)

    def update(
        self,
        profile_id: str,
        change: Callable[[ProfileRecord], ProfileRecord | None],
        *,
        allowed_from: Iterable[str] | None = None,
    ) -> ProfileRecord:
        """Read-modify-write one record atomically.

        ``change`` gets the current record and returns the new one (or None to leave it). Raises
        :class:`RecordGone` if the record is gone and :class:`ConflictError` if its status is not in
        ``allowed_from``, so a late writer cannot overwrite a cancelled or finished job.
        """
        key = record_key(profile_id)
        allowed = frozenset(allowed_from) if allowed_from is not None else None
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise RecordGone(profile_id)
                    current = record_decoder.decode(raw)
                    if allowed is not None and current.status not in allowed:
                        pipe.unwatch()
                        raise ConflictError(f"profile {profile_id} is {current.status}")
                    # ``change`` may edit ``current`` in place: what indexes it, read first
                    # (its settings are frozen, so the reference stays the old ones).
                    before, was_status, was_group = (
                        indexes.index_keys(current),
                        current.status,
                        group_of(current),
                    )
                    new = change(current)
                    if new is None:
                        pipe.unwatch()
                        return current
                    after = indexes.index_keys(new)
                    pipe.multi()
                    pipe.set(key, encode(new))
                    for stale in before - after:
                        pipe.zrem(stale, profile_id)
                    for fresh in after - before:
                        pipe.zadd(fresh, {profile_id: new.created_at})
                    pipe.execute()
                    if "succeeded" in (was_status, new.status):
                        if was_group != group_of(new):
                            self.regroup(was_group, profile_id, None)
                        self.recount(new)
                    return new
                except redis.WatchError:
                    continue

    def _indexed(self, sets: list[str]) -> str:
        """The index to page through: one key, or the intersection of several (kept a few seconds,
        so that the pages of one listing read the same set)."""
        if len(sets) == 1:
            return sets[0]
        tmp = keys.intersection(hashlib.sha1("|".join(sorted(sets)).encode()).hexdigest())
        with self.redis.pipeline() as pipe:
            pipe.zinterstore(tmp, sets, aggregate="MAX")
            pipe.expire(tmp, 10)
            pipe.execute()
        return tmp

    def _page_ids(self, key: str, limit: int, offset: int, after: str | None) -> list[str]:
        start = offset
        if after is not None:
            rank = self.redis.zrevrank(key, after)
            if rank is None:  # the cursor's profile was deleted: go on from its time
                score = self.redis.zscore(ALL_PROFILES, after)
                if score is None:
                    return []
                below = self.redis.zrevrangebyscore(key, f"({score}", "-inf", start=0, num=limit)
                return [i.decode() for i in below]
            start = rank + 1 + offset
        return [i.decode() for i in self.redis.zrevrange(key, start, start + limit - 1)]

    def list(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        status: str | None = None,
        runtime: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[ProfileRecord]:
        """Newest first, filtered by resolved model name, device (a class, or a target: where it
        ran, else where it was sent) and status; ``after`` a profile id (cursor pagination: the
        page after it). Reads the indexes, then only the records of the page."""
        key = self._indexed(indexes.filter_keys(model, device, status, runtime))
        ids = self._page_ids(key, limit, offset, after)
        return self._records(ids)

    def count(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        status: str | None = None,
        runtime: str | None = None,
    ) -> int:
        return int(self.redis.zcard(self._indexed(indexes.filter_keys(model, device, status, runtime))))

    def iter_records(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        status: str | None = None,
        runtime: str | None = None,
        chunk: int = 500,
    ) -> Iterator[ProfileRecord]:
        """Every matching record, newest first, read ``chunk`` at a time (constant memory: exports)."""
        key = self._indexed(indexes.filter_keys(model, device, status, runtime))
        if key.startswith(keys.TMP):  # a long export must not outlive its intersection
            self.redis.expire(key, 3600)
        last: str | None = None
        while True:
            ids = self._page_ids(key, chunk, 0, last)
            if not ids:
                return
            yield from self._records(ids)
            last = ids[-1]

    def ensure_indexes(self, log: Callable[[str], None] = lambda _: None, chunk: int = 1000) -> int:
        """Build the indexes and aggregates of a store written before them (or by an older layout):
        idempotent, records untouched, progress through ``log``. Returns the records indexed (0:
        up to date). One process at a time (a lock); others wait for it."""
        if self.indexes_ready():
            return 0
        with self.redis.lock(keys.REINDEX_LOCK, timeout=3600, blocking_timeout=3600):
            if self.indexes_ready():
                return 0
            total = self.redis.zcard(ALL_PROFILES)
            log(f"indexing {total} stored profiles (layout {indexes.INDEX_VERSION})")
            # The aggregates are rebuilt whole (an older layout keyed them otherwise).
            self.redis.delete(*(indexes.counting_key(select) for select in indexes.SELECTIONS))
            done = 0
            groups: set[str] = set()
            for start in range(0, total, chunk):
                ids = [i.decode() for i in self.redis.zrange(ALL_PROFILES, start, start + chunk - 1)]
                records = self._records(ids)
                with self.redis.pipeline(transaction=False) as pipe:
                    for rec in records:
                        for key in indexes.index_keys(rec):
                            pipe.zadd(key, {rec.id: rec.created_at})
                        if rec.status == "succeeded":
                            groups.add(group_of(rec))
                    pipe.execute()
                done += len(records)
                log(f"indexed {done}/{total}")
            for field in groups:
                self.rescan(field)
            self.redis.set(indexes.VERSION_KEY, indexes.INDEX_VERSION)
            log(f"indexes ready: {done} profiles, {len(groups)} counted (model, target, precision)")
            return done

    def delete(self, profile_id: str) -> bool:
        rec = self.get(profile_id)
        if rec is None:
            return False
        dedupe_key = dedupe_pointer(rec.settings)
        try:
            self._delete_keys(rec, transaction=True)
        except FULL_ERRORS:
            # Redis at its maxmemory queues nothing in a MULTI, but still runs DEL and ZREM: the
            # same commands one by one (undoing a half-made request must work exactly then).
            self._delete_keys(rec, transaction=False)
        if rec.status == "succeeded":
            self.recount(rec, gone=True)
        self.delete_if_equal(dedupe_key, profile_id)  # only if it still points at this record
        return True

    def _delete_keys(self, rec: ProfileRecord, *, transaction: bool) -> None:
        with self.redis.pipeline(transaction=transaction) as pipe:
            pipe.delete(record_key(rec.id))
            for key in indexes.index_keys(rec):
                pipe.zrem(key, rec.id)
            pipe.delete(keys.cancel(rec.id))
            pipe.delete(keys.parts(rec.id))
            pipe.delete(keys.layers(rec.id))
            pipe.execute()


class AsyncRecordReader:
    """The API's hottest read, a profile by id, on ``redis.asyncio``: served on the event loop, no
    thread per request. One client per event loop, made on first use (the same settings as the
    store's)."""

    def __init__(self, url: str) -> None:
        self.url = redis_py_url(url)
        self._client: redis.asyncio.Redis | None = None

    async def get(self, profile_id: str) -> ProfileRecord | None:
        if self._client is None:
            self._client = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
            )
        raw = await self._client.get(record_key(profile_id))
        return record_decoder.decode(raw) if raw is not None else None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
