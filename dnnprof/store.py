"""The Redis store: profile records, the dedupe index, worker heartbeats and the model catalogue.

Keys (all under ``dnnprof:``):

- ``profile:<id>``      JSON :class:`ProfileRecord` (the job, its progress and its result)
- ``profiles``          sorted set of ids by creation time
- ``idx:*``, ``counting:*``  secondary indexes and which profile counts (see :mod:`dnnprof.indexes`)
- ``dedupe:<key>``      id of the job for one set of canonical settings
- ``cancel:<id>``       set when a running job must stop
- ``parts:<id>``        hash of what the measuring processes stored so far, cell by cell:
                        ``static:<p>``, ``cell:<p>:<batch size>``, ``end:<p>`` (see contract.py)
- ``flops:v<n>:<model>:<input size>``  the model's :class:`FlopCount`, counted once
- ``worker:<class>:<hostname>``  JSON :class:`WorkerInfo`, expiring unless renewed
- ``authfail:<address>``  failed authentications of one client address in the current minute
- ``active-by:<client>``  set of the jobs one client created that may still be queued or running
- ``stats:jobs``        hash "<status>:count" / "<status>:seconds" of ended jobs
- ``catalogue``         hash name -> JSON :class:`ModelInfo`; ``catalogue:version`` its version
- ``published:<source>`` hash model -> JSON :class:`PublishedResult`; ``published:sources`` the set
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from dnnprof import indexes
from dnnprof.contract import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    DeviceSeen,
    FlopCount,
    ModelCounts,
    ModelInfo,
    ProcessCell,
    ProcessEnd,
    ProcessStatic,
    ProfileRecord,
    ProfileSettings,
    PublishedResult,
    WorkerInfo,
)
from dnnprof.selection import SELECTIONS, order_for
from dnnprof.targets import matches, target_of

PREFIX = "dnnprof:"
#: What redis-py raises when Redis at its maxmemory (noeviction) refuses a write or a transaction.
FULL_ERRORS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError)
ALL_PROFILES = indexes.ALL
PUBLISHED_VERSION = f"{PREFIX}published:version"
_record_decoder = msgspec.json.Decoder(ProfileRecord)
_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_model_decoder = msgspec.json.Decoder(ModelInfo)
_published_decoder = msgspec.json.Decoder(PublishedResult)
_static_decoder = msgspec.json.Decoder(ProcessStatic)
_cell_decoder = msgspec.json.Decoder(ProcessCell)
_end_decoder = msgspec.json.Decoder(ProcessEnd)
_flops_decoder = msgspec.json.Decoder(FlopCount)
_device_decoder = msgspec.json.Decoder(DeviceSeen)
_encode = msgspec.json.encode


class Parts:
    """What the measuring processes of one profile stored, keyed as in the store."""

    def __init__(self) -> None:
        self.statics: dict[int, ProcessStatic] = {}
        self.cells: dict[tuple[int, int], ProcessCell] = {}
        self.ends: dict[int, ProcessEnd] = {}

    def add(self, part: ProcessStatic | ProcessCell | ProcessEnd) -> None:
        if isinstance(part, ProcessCell):
            self.cells[(part.process, part.batch_size)] = part
        elif isinstance(part, ProcessStatic):
            self.statics[part.process] = part
        else:
            self.ends[part.process] = part

    def add_raw(self, field: str, value: bytes) -> None:
        kind = field.partition(":")[0]
        decoder = {"static": _static_decoder, "cell": _cell_decoder, "end": _end_decoder}.get(kind)
        if decoder is not None:
            self.add(decoder.decode(value))

    def merge(self, other: Parts) -> Parts:
        for part in (*other.statics.values(), *other.cells.values(), *other.ends.values()):
            self.add(part)
        return self


class ConflictError(Exception):
    """A record was not in a state that allows the requested change."""


class ProfileStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> ProfileStore:
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
        if getattr(self, "_probe", None) is None:
            self._probe = self.with_timeout(timeout_s).redis
        return bool(self._probe.ping())

    def with_timeout(self, timeout_s: float) -> ProfileStore:
        """The same store on connections of their own that give up after ``timeout_s``: for loops
        that must keep their own time while Redis hangs (a paused server never answers)."""
        pool = self.redis.connection_pool
        kwargs = {**pool.connection_kwargs, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        kwargs["retry"] = Retry(NoBackoff(), 0)  # redis-py retries a timeout 10 times by default
        return ProfileStore(
            redis.Redis(
                connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
            )
        )

    def drop_process_parts(self, profile_id: str, process: int) -> None:
        """Forget what one measuring process stored (it is measured again from its start)."""
        key = f"{PREFIX}parts:{profile_id}"
        mine = [f for f in self.redis.hkeys(key) if f.decode().split(":")[1] == str(process)]
        if mine:
            self.redis.hdel(key, *mine)

    # -- profile records ---------------------------------------------------------------------

    @staticmethod
    def _key(profile_id: str) -> str:
        return f"{PREFIX}profile:{profile_id}"

    def get(self, profile_id: str) -> ProfileRecord | None:
        raw = self.redis.get(self._key(profile_id))
        return _record_decoder.decode(raw) if raw is not None else None

    def create_or_get(self, record: ProfileRecord, *, force: bool = False) -> tuple[ProfileRecord, bool]:
        """Store ``record`` as a new job unless an equal one is stored or in flight.

        Returns ``(record, created)``. An equal job that failed or was cancelled is replaced;
        with ``force`` any equal job is replaced (the old record stays readable by its id).
        Atomic across concurrent API processes (WATCH on the dedupe key).
        """
        dedupe_key = f"{PREFIX}dedupe:{record.settings.dedupe_key()}"
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(dedupe_key)
                    existing_id = pipe.get(dedupe_key)
                    if existing_id is not None and not force:
                        raw = pipe.get(self._key(existing_id.decode()))
                        if raw is not None:
                            existing = _record_decoder.decode(raw)
                            if existing.status in ACTIVE_STATUSES or existing.status == "succeeded":
                                pipe.unwatch()
                                return existing, False
                    pipe.multi()
                    pipe.set(dedupe_key, record.id)
                    pipe.set(self._key(record.id), _encode(record))
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
        groups: dict[str, ProfileRecord] = {}
        done = 0
        batch: list[ProfileRecord] = []

        def flush() -> None:
            with self.redis.pipeline(transaction=False) as pipe:
                for rec in batch:
                    pipe.set(f"{PREFIX}dedupe:{rec.settings.dedupe_key()}", rec.id)
                    pipe.set(self._key(rec.id), _encode(rec))
                    for key in indexes.index_keys(rec):
                        pipe.zadd(key, {rec.id: rec.created_at})
                pipe.execute()
            batch.clear()

        for rec in records:
            batch.append(rec)
            if rec.status == "succeeded":
                field = indexes.counting_field(rec.settings.model, target_of(rec), rec.settings.precision)
                groups[field] = rec
            done += 1
            if len(batch) >= chunk:
                flush()
        flush()
        for rec in groups.values():
            self.recount(rec)
        return done

    def stored_for(
        self, candidates: Iterable[ProfileSettings], accept: Callable[[ProfileRecord], bool] = bool
    ) -> ProfileRecord | None:
        """The newest succeeded profile stored under any of these settings that ``accept`` takes
        (a class answered from any of its targets; a target from a profile stored before targets)."""
        keys = [f"{PREFIX}dedupe:{c.dedupe_key()}" for c in candidates]
        ids = [i.decode() for i in self.redis.mget(keys) if i is not None] if keys else []
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
        :class:`KeyError` if the record is gone and :class:`ConflictError` if its status is not in
        ``allowed_from``, so a late writer cannot overwrite a cancelled or finished job.
        """
        key = self._key(profile_id)
        allowed = frozenset(allowed_from) if allowed_from is not None else None
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise KeyError(profile_id)
                    current = _record_decoder.decode(raw)
                    if allowed is not None and current.status not in allowed:
                        pipe.unwatch()
                        raise ConflictError(f"profile {profile_id} is {current.status}")
                    # ``change`` may edit ``current`` in place: what indexes it, read first
                    # (its settings are frozen, so the reference stays the old ones).
                    before = indexes.index_keys(current)
                    was_status, was_target, was_settings = (
                        current.status,
                        target_of(current),
                        current.settings,
                    )
                    new = change(current)
                    if new is None:
                        pipe.unwatch()
                        return current
                    after = indexes.index_keys(new)
                    pipe.multi()
                    pipe.set(key, _encode(new))
                    for stale in before - after:
                        pipe.zrem(stale, profile_id)
                    for fresh in after - before:
                        pipe.zadd(fresh, {profile_id: new.created_at})
                    pipe.execute()
                    if "succeeded" in (was_status, new.status):
                        self.recount(new)
                        if was_target != target_of(new):
                            self._recount(was_settings.model, was_target, was_settings.precision)
                    return new
                except redis.WatchError:
                    continue

    def _indexed(self, keys: list[str]) -> str:
        """The index to page through: one key, or the intersection of several (kept a few seconds,
        so that the pages of one listing read the same set)."""
        if len(keys) == 1:
            return keys[0]
        tmp = f"{PREFIX}tmp:inter:" + hashlib.sha1("|".join(sorted(keys)).encode()).hexdigest()
        with self.redis.pipeline() as pipe:
            pipe.zinterstore(tmp, keys, aggregate="MAX")
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
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
    ) -> list[ProfileRecord]:
        """Newest first, filtered by resolved model name, device (a class, or a target: where it
        ran, else where it was sent) and status; ``after`` a profile id (cursor pagination: the
        page after it). Reads the indexes, then only the records of the page."""
        key = self._indexed(indexes.filter_keys(model, device, status))
        ids = self._page_ids(key, limit, offset, after)
        return self._records(ids)

    def count(self, *, model: str | None = None, device: str | None = None, status: str | None = None) -> int:
        return int(self.redis.zcard(self._indexed(indexes.filter_keys(model, device, status))))

    def iter_records(
        self,
        *,
        model: str | None = None,
        device: str | None = None,
        status: str | None = None,
        chunk: int = 500,
    ) -> Iterator[ProfileRecord]:
        """Every matching record, newest first, read ``chunk`` at a time (constant memory: exports)."""
        key = self._indexed(indexes.filter_keys(model, device, status))
        if key.startswith(f"{PREFIX}tmp:"):  # a long export must not outlive its intersection
            self.redis.expire(key, 3600)
        last: str | None = None
        while True:
            ids = self._page_ids(key, chunk, 0, last)
            if not ids:
                return
            yield from self._records(ids)
            last = ids[-1]

    def _records(self, ids: list[str]) -> list[ProfileRecord]:
        if not ids:
            return []
        raws = self.redis.mget([self._key(i) for i in ids])
        return [_record_decoder.decode(raw) for raw in raws if raw is not None]

    # -- which profile counts, per (model, target, precision) -----------------------------------

    def recount(self, record: ProfileRecord) -> None:
        """Re-choose the profile that counts for ``record``'s model, target and precision among
        their succeeded profiles (a few: one model's), after one of them finished or went."""
        self._recount(record.settings.model, target_of(record), record.settings.precision)

    def _recount(self, model: str, target: str, precision: str) -> None:
        field = indexes.counting_field(model, target, precision)
        ids = self.redis.zinter(
            [
                indexes.model_key(model),
                indexes.status_key("succeeded"),
                indexes.device_key(target),
            ]
        )
        same = [
            r
            for r in self._records([i.decode() for i in ids])
            if r.status == "succeeded"
            and r.result is not None
            and target_of(r) == target
            and r.settings.precision == precision
        ]
        with self.redis.pipeline() as pipe:
            pipe.incr(indexes.COUNTING_VERSION)
            for select in SELECTIONS:
                chosen = max(same, key=order_for(select), default=None)
                if chosen is None:
                    pipe.hdel(indexes.counting_key(select), field)
                else:
                    pipe.hset(indexes.counting_key(select), field, chosen.id)
            pipe.execute()

    def counting(
        self, select: str = "best", *, device: str | None = None, precision: str | None = None
    ) -> list[ProfileRecord]:
        """The profile that counts for each (model, target, precision): what the analyses and
        ``/metrics`` read, whatever the history holds."""
        chosen = []
        for field, profile_id in self.redis.hgetall(indexes.counting_key(select)).items():
            _, target, prec = indexes.split_counting_field(field.decode())
            if matches(device, target) and (precision is None or prec == precision):
                chosen.append(profile_id.decode())
        records = self._records(chosen)
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def indexes_ready(self) -> bool:
        return self.redis.get(indexes.VERSION_KEY) == indexes.INDEX_VERSION.encode()

    def counted_targets(self) -> set[str]:
        """The device targets that hold succeeded profiles (from the aggregate's keys alone)."""
        fields = self.redis.hkeys(indexes.counting_key("newest"))
        return {indexes.split_counting_field(f.decode())[1] for f in fields}

    def ensure_indexes(self, log: Callable[[str], None] = lambda _: None, chunk: int = 1000) -> int:
        """Build the indexes and aggregates of a store written before them (or by an older layout):
        idempotent, records untouched, progress through ``log``. Returns the records indexed (0:
        up to date). One process at a time (a lock); others wait for it."""
        if self.indexes_ready():
            return 0
        with self.redis.lock(f"{PREFIX}lock:reindex", timeout=3600, blocking_timeout=3600):
            if self.indexes_ready():
                return 0
            total = self.redis.zcard(ALL_PROFILES)
            log(f"indexing {total} stored profiles (layout {indexes.INDEX_VERSION})")
            done = 0
            groups: dict[str, ProfileRecord] = {}
            for start in range(0, total, chunk):
                ids = [i.decode() for i in self.redis.zrange(ALL_PROFILES, start, start + chunk - 1)]
                records = self._records(ids)
                with self.redis.pipeline(transaction=False) as pipe:
                    for rec in records:
                        for key in indexes.index_keys(rec):
                            pipe.zadd(key, {rec.id: rec.created_at})
                        if rec.status == "succeeded":
                            field = indexes.counting_field(
                                rec.settings.model, target_of(rec), rec.settings.precision
                            )
                            groups.setdefault(field, rec)
                    pipe.execute()
                done += len(records)
                log(f"indexed {done}/{total}")
            for rec in groups.values():
                self.recount(rec)
            self.redis.set(indexes.VERSION_KEY, indexes.INDEX_VERSION)
            log(f"indexes ready: {done} profiles, {len(groups)} counted (model, target, precision)")
            return done

    def delete(self, profile_id: str) -> bool:
        rec = self.get(profile_id)
        if rec is None:
            return False
        dedupe_key = f"{PREFIX}dedupe:{rec.settings.dedupe_key()}"
        try:
            self._delete_keys(rec, transaction=True)
        except FULL_ERRORS:
            # Redis at its maxmemory queues nothing in a MULTI, but still runs DEL and ZREM: the
            # same commands one by one (undoing a half-made request must work exactly then).
            self._delete_keys(rec, transaction=False)
        if rec.status == "succeeded":
            self.recount(rec)
        self.delete_if_equal(dedupe_key, profile_id)  # only if it still points at this record
        return True

    def _delete_keys(self, rec: ProfileRecord, *, transaction: bool) -> None:
        with self.redis.pipeline(transaction=transaction) as pipe:
            pipe.delete(self._key(rec.id))
            for key in indexes.index_keys(rec):
                pipe.zrem(key, rec.id)
            pipe.delete(f"{PREFIX}cancel:{rec.id}")
            pipe.delete(f"{PREFIX}parts:{rec.id}")
            pipe.execute()

    # -- each client's active jobs (the API's per-client cap) -------------------------------------

    def active_of(self, client: str) -> int:
        """How many of the jobs ``client`` created are queued or running (ended ones are pruned
        here, as they are read: no status change needs to know of this set)."""
        key = f"{PREFIX}active-by:{client}"
        ids = [i.decode() for i in self.redis.smembers(key)]
        if not ids:
            return 0
        raws = self.redis.mget([self._key(i) for i in ids])
        ended = [
            i
            for i, raw in zip(ids, raws, strict=True)
            if raw is None or _record_decoder.decode(raw).status in TERMINAL_STATUSES
        ]
        if ended:
            self.redis.srem(key, *ended)
        return len(ids) - len(ended)

    def note_active(self, client: str, profile_id: str) -> None:
        key = f"{PREFIX}active-by:{client}"
        with self.redis.pipeline() as pipe:
            pipe.sadd(key, profile_id)
            pipe.expire(key, 7 * 24 * 3600)  # a client gone for a week leaves nothing behind
            pipe.execute()

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

    # -- what the measuring processes stored, cell by cell --------------------------------------

    @staticmethod
    def part_field(part: ProcessStatic | ProcessCell | ProcessEnd) -> str:
        if isinstance(part, ProcessCell):
            return f"cell:{part.process}:{part.batch_size}"
        if isinstance(part, ProcessStatic):
            return f"static:{part.process}"
        return f"end:{part.process}"

    def put_part(self, profile_id: str, part: ProcessStatic | ProcessCell | ProcessEnd) -> None:
        """Store one piece the moment it is measured (idempotent: a retry overwrites it)."""
        self.redis.hset(f"{PREFIX}parts:{profile_id}", self.part_field(part), _encode(part))

    def parts(self, profile_id: str) -> Parts:
        raw = self.redis.hgetall(f"{PREFIX}parts:{profile_id}")
        parts = Parts()
        for field, value in raw.items():
            parts.add_raw(field.decode(), value)
        return parts

    def drop_parts(self, profile_id: str) -> None:
        self.redis.delete(f"{PREFIX}parts:{profile_id}")

    # -- FLOP counts, once per model and input size --------------------------------------------

    @staticmethod
    def _flops_key(model: str, input_size: int, version: int) -> str:
        return f"{PREFIX}flops:v{version}:{model}:{input_size}"

    def cached_flops(self, model: str, input_size: int, version: int) -> FlopCount | None:
        raw = self.redis.get(self._flops_key(model, input_size, version))
        return _flops_decoder.decode(raw) if raw is not None else None

    def cache_flops(self, model: str, input_size: int, version: int, count: FlopCount) -> None:
        self.redis.set(self._flops_key(model, input_size, version), _encode(count))

    # -- what each worker is busy with -----------------------------------------------------------

    # -- counts of models no table covers (asked by the API, counted by a worker) ----------------

    COUNT_REQUESTS = f"{PREFIX}counts:requests"

    def request_count(self, qualified: str, ttl_s: int = 600) -> bool:
        """Ask the workers to count a model, once while a request is pending (``ttl_s``: asked
        again after that, should the worker that took it have died). True where asked now."""
        if not self.redis.set(f"{PREFIX}counts:pending:{qualified}", b"1", nx=True, ex=ttl_s):
            return False
        self.redis.rpush(self.COUNT_REQUESTS, qualified)
        return True

    def next_count_requests(self, timeout_s: float, most: int = 20) -> list[str]:
        """Waits up to ``timeout_s`` for a request, then takes it and those queued behind it."""
        first = self.redis.blpop([self.COUNT_REQUESTS], timeout=timeout_s)
        if first is None:
            return []
        names = [first[1].decode()]
        while len(names) < most and (more := self.redis.lpop(self.COUNT_REQUESTS)) is not None:
            names.append(more.decode())
        return names

    def put_model_counts(self, qualified: str, counts: ModelCounts) -> None:
        with self.redis.pipeline() as pipe:
            pipe.set(f"{PREFIX}counts:{qualified}", _encode(counts))
            pipe.delete(f"{PREFIX}counts:pending:{qualified}")
            pipe.execute()

    def model_counts_many(self, names: list[str]) -> dict[str, ModelCounts]:
        raws = self.redis.mget([f"{PREFIX}counts:{n}" for n in names]) if names else []
        return {n: msgspec.json.decode(r, type=ModelCounts) for n, r in zip(names, raws, strict=True) if r}

    def model_counts(self, qualified: str) -> ModelCounts | None:
        raw = self.redis.get(f"{PREFIX}counts:{qualified}")
        return msgspec.json.decode(raw, type=ModelCounts) if raw is not None else None

    # -- the broker's messages (kombu's Redis layout), for what no job refers to any more ----------

    def queued_task_ids(self, queue: str) -> list[str]:
        """Task ids (= profile ids) of the messages waiting in a Celery queue."""
        return [i for i in (_task_id(m) for m in self.redis.lrange(queue, 0, -1)) if i]

    def purge_task_messages(self, queue: str, task_ids: Iterable[str]) -> int:
        """Remove the waiting messages of these tasks from a queue; returns how many."""
        wanted = set(task_ids)
        removed = 0
        for message in self.redis.lrange(queue, 0, -1):
            if _task_id(message) in wanted:
                removed += int(self.redis.lrem(queue, 1, message))
        return removed

    def unacked_task_ids(self) -> dict[str, float]:
        """Task ids delivered to a worker and not acknowledged yet (running, or held for a retry),
        with when they were delivered (kombu's ``unacked_index``)."""
        delivered_at = {
            tag.decode(): score for tag, score in self.redis.zrange("unacked_index", 0, -1, withscores=True)
        }
        out: dict[str, float] = {}
        for tag, raw in self.redis.hgetall("unacked").items():
            with contextlib.suppress(msgspec.DecodeError):
                entry = msgspec.json.decode(raw)
                if isinstance(entry, list) and entry and (task_id := _headers_id(entry[0])):
                    out[task_id] = max(out.get(task_id, 0.0), delivered_at.get(tag.decode(), 0.0))
        return out

    def purge_unacked(self, task_id: str) -> int:
        """Forget the delivered-but-unacknowledged copies of a task (a dead worker's), which kombu
        would otherwise give back only after the visibility timeout."""
        removed = 0
        for tag, raw in self.redis.hgetall("unacked").items():
            with contextlib.suppress(msgspec.DecodeError):
                entry = msgspec.json.decode(raw)  # [message, exchange, routing key]
                if isinstance(entry, list) and entry and _headers_id(entry[0]) == task_id:
                    with self.redis.pipeline() as pipe:
                        pipe.hdel("unacked", tag)
                        pipe.zrem("unacked_index", tag)
                        pipe.execute()
                    removed += 1
        return removed

    def request_cancel(self, profile_id: str, ttl_s: int = 86400) -> None:
        self.redis.set(f"{PREFIX}cancel:{profile_id}", "1", ex=ttl_s)

    def cancel_requested(self, profile_id: str) -> bool:
        return bool(self.redis.exists(f"{PREFIX}cancel:{profile_id}"))

    # -- failed authentications, per client address (shared by every API replica) ---------------

    def count_auth_failure(self, address: str, window_s: int = 60) -> int:
        key = f"{PREFIX}authfail:{address}"
        with self.redis.pipeline() as pipe:
            pipe.set(key, 0, ex=window_s, nx=True)  # the window starts at the first failure
            pipe.incr(key)
            _, count = pipe.execute()
        return int(count)

    def auth_failures(self, address: str) -> int:
        return int(self.redis.get(f"{PREFIX}authfail:{address}") or 0)

    # -- job statistics (monotonic, for Prometheus counters) ----------------------------------

    def count_finished(self, status: str, duration_s: float) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hincrby(f"{PREFIX}stats:jobs", f"{status}:count", 1)
            pipe.hincrbyfloat(f"{PREFIX}stats:jobs", f"{status}:seconds", max(0.0, duration_s))
            pipe.execute()

    def finished_counts(self) -> dict[str, tuple[int, float]]:
        """status -> (jobs that ended so, seconds they took in all)."""
        raw = {k.decode(): v.decode() for k, v in self.redis.hgetall(f"{PREFIX}stats:jobs").items()}
        out: dict[str, tuple[int, float]] = {}
        for key, value in raw.items():
            status, _, what = key.partition(":")
            count, seconds = out.get(status, (0, 0.0))
            out[status] = (int(value), seconds) if what == "count" else (count, float(value))
        return out

    def queue_length(self, queue: str) -> int:
        """Messages waiting in a Celery queue (kombu keeps a Redis list named after it)."""
        return int(self.redis.llen(queue))

    # -- workers -----------------------------------------------------------------------------

    WORKERS = f"{PREFIX}workers:live"

    def heartbeat(self, info: WorkerInfo, ttl_s: int) -> None:
        """The worker's key, expiring unless renewed, and its place in the live registry (scored by
        when it expires), so that finding the workers never scans the keyspace."""
        key = f"{PREFIX}worker:{info.device_class}:{info.hostname}"
        with self.redis.pipeline() as pipe:
            pipe.set(key, _encode(info), ex=ttl_s)
            pipe.zadd(self.WORKERS, {key: time.time() + ttl_s})
            pipe.execute()
        if info.device_target:
            self.see_device(info)

    def see_device(self, info: WorkerInfo) -> DeviceSeen:
        """Record the worker's target in the device registry (kept when its workers are gone)."""
        key = f"{PREFIX}devices"
        raw = self.redis.hget(key, info.device_target)
        seen = _device_decoder.decode(raw) if raw else None
        if seen is None:
            seen = DeviceSeen(
                target=info.device_target,
                device_class=info.device_class,
                first_seen=info.seen_at,
                last_seen=info.seen_at,
            )
        seen.device_name = info.device_name or seen.device_name
        seen.device_memory_bytes = info.device_memory_bytes or seen.device_memory_bytes
        seen.last_seen = max(seen.last_seen, info.seen_at)
        seen.hostnames = [*[h for h in seen.hostnames if h != info.hostname][-7:], info.hostname]
        self.redis.hset(key, info.device_target, _encode(seen))
        return seen

    def devices(self) -> dict[str, DeviceSeen]:
        return {
            k.decode(): _device_decoder.decode(v) for k, v in self.redis.hgetall(f"{PREFIX}devices").items()
        }

    def live_targets(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.workers():
            if w.device_target:
                counts[w.device_target] = counts.get(w.device_target, 0) + 1
        return counts

    def forget_worker(self, info: WorkerInfo) -> None:
        key = f"{PREFIX}worker:{info.device_class}:{info.hostname}"
        with self.redis.pipeline() as pipe:
            pipe.delete(key)
            pipe.zrem(self.WORKERS, key)
            pipe.execute()

    def workers(self) -> list[WorkerInfo]:
        """Live workers: the registry's unexpired entries (pruned as it is read). A worker of a
        version before the registry is not listed until it runs this one (workers and API are
        released together)."""
        now_s = time.time()
        with self.redis.pipeline() as pipe:
            pipe.zremrangebyscore(self.WORKERS, "-inf", now_s - 3600)
            pipe.zrangebyscore(self.WORKERS, now_s, "+inf")
            _, keys = pipe.execute()
        if not keys:
            return []
        return [_worker_decoder.decode(raw) for raw in self.redis.mget(keys) if raw is not None]

    def live_device_classes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.workers():
            counts[w.device_class] = counts.get(w.device_class, 0) + 1
        return counts

    # -- published results --------------------------------------------------------------------

    def _replace_hash(self, key: str, mapping: dict[str, bytes], *also: tuple[str, ...]) -> int:
        """Swap a whole hash in one MULTI (readers never see half of it), with extra commands."""
        with self.redis.pipeline() as pipe:
            pipe.delete(key)
            if mapping:
                pipe.hset(key, mapping=mapping)
            for command, *args in also:
                getattr(pipe, command)(*args)
            pipe.execute()
        return len(mapping)

    def import_published(self, source: str, results: Iterable[PublishedResult]) -> int:
        """One source is replaced as a whole."""
        return self._replace_hash(
            f"{PREFIX}published:{source}",
            {r.model: _encode(r) for r in results},
            ("sadd", f"{PREFIX}published:sources", source),
            ("incr", PUBLISHED_VERSION),
        )

    def figures_version(self) -> str:
        """Changes whenever what the figures show may have: a profile that counts, or a published
        table (so a reader can cache what it computed from them)."""
        counting, published = self.redis.mget([indexes.COUNTING_VERSION, PUBLISHED_VERSION])
        return f"{int(counting or 0)}:{int(published or 0)}"

    def published_sources(self) -> set[str]:
        return {s.decode() for s in self.redis.smembers(f"{PREFIX}published:sources")}

    def published(self, source: str | None = None) -> list[PublishedResult]:
        sources = [source] if source else sorted(self.published_sources())
        out: list[PublishedResult] = []
        for src in sources:
            out.extend(_published_decoder.decode(v) for v in self.redis.hvals(f"{PREFIX}published:{src}"))
        return out

    def shipped_tables_version(self) -> str | None:
        """Which shipped tables (and catalogue they were resolved against) are imported."""
        raw = self.redis.get(f"{PREFIX}published:shipped")
        return raw.decode() if raw is not None else None

    def import_shipped(self, tables: dict[str, list[PublishedResult]], version: str) -> int:
        """Replace the shipped sources and record their version, in one MULTI."""
        with self.redis.pipeline() as pipe:
            for source, results in tables.items():
                pipe.delete(f"{PREFIX}published:{source}")
                if results:
                    pipe.hset(f"{PREFIX}published:{source}", mapping={r.model: _encode(r) for r in results})
                pipe.sadd(f"{PREFIX}published:sources", source)
            pipe.set(f"{PREFIX}published:shipped", version)
            pipe.incr(PUBLISHED_VERSION)
            pipe.execute()
        return sum(len(r) for r in tables.values())

    def delete_published(self, source: str) -> bool:
        with self.redis.pipeline() as pipe:
            pipe.delete(f"{PREFIX}published:{source}")
            pipe.srem(f"{PREFIX}published:sources", source)
            pipe.incr(PUBLISHED_VERSION)
            deleted, _, _ = pipe.execute()
        return bool(deleted)

    # -- catalogue ---------------------------------------------------------------------------

    def publish_catalogue(self, entries: Iterable[ModelInfo], version: str) -> int:
        return self._replace_hash(
            f"{PREFIX}catalogue",
            {e.name: _encode(e) for e in entries},
            ("set", f"{PREFIX}catalogue:version", version),
        )

    def catalogue_version(self) -> str | None:
        raw = self.redis.get(f"{PREFIX}catalogue:version")
        return raw.decode() if raw is not None else None

    def load_catalogue(self) -> dict[str, ModelInfo]:
        raw = self.redis.hgetall(f"{PREFIX}catalogue")
        return {k.decode(): _model_decoder.decode(v) for k, v in raw.items()}


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
        raw = await self._client.get(ProfileStore._key(profile_id))
        return _record_decoder.decode(raw) if raw is not None else None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def redis_py_url(url: str) -> str:
    """Celery/kombu spell a Unix-socket Redis ``redis+socket://``; redis-py spells it ``unix://``."""
    return "unix://" + url[len("redis+socket://") :] if url.startswith("redis+socket://") else url


def now() -> float:
    return time.time()


def _headers_id(message: object) -> str | None:
    """The task id in a decoded kombu message (Celery's protocol 2 puts it in the headers)."""
    if not isinstance(message, dict) or not isinstance(message.get("headers"), dict):
        return None
    return message["headers"].get("id")


def _task_id(raw: bytes) -> str | None:
    try:
        return _headers_id(msgspec.json.decode(raw))
    except msgspec.DecodeError:
        return None


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
