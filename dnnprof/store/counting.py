"""Which profile counts for each :class:`~dnnprof.selection.GroupKey` (model, target, precision,
runtime): the hashes ``counting:best`` and
``counting:newest`` (see :mod:`dnnprof.indexes`), kept up to date incrementally.

A profile that finishes is compared with its group's current choice alone (two records read,
whatever the group's history); the group is rescanned only when its chosen profile itself goes,
is demoted or changes. Each change is one WATCH transaction on the hashes and the chosen records,
so a concurrent finish and rescan cannot leave a stale choice (the later one retries)."""

from __future__ import annotations

import redis
from redis.client import Pipeline

from dnnprof import indexes, keys
from dnnprof.contract import ProfileRecord
from dnnprof.selection import SELECTIONS, GroupKey, may_count, order_for
from dnnprof.store.base import StoreBase, record_decoder, record_key
from dnnprof.targets import matches

COUNTING_KEYS = [indexes.counting_key(select) for select in SELECTIONS]


def group_of(record: ProfileRecord) -> str:
    """The counting field of the group a record belongs to."""
    return GroupKey.of(record).field()


class CountingMixin(StoreBase):
    def recount(self, record: ProfileRecord, *, gone: bool = False) -> None:
        """After ``record`` finished, changed or (``gone``) was deleted: its group's choice."""
        self.regroup(group_of(record), record.id, None if gone or not may_count(record) else record)

    def regroup(self, field: str, changed_id: str, candidate: ProfileRecord | None) -> None:
        """Profile ``changed_id`` of group ``field`` is now ``candidate`` (None: no longer in the
        group): it takes each selection whose choice it beats; a rescan where the choice was it."""
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*COUNTING_KEYS)
                    beaten = _beaten(pipe, field, changed_id, candidate)
                    if beaten is None:
                        pipe.unwatch()
                        break
                    if not beaten or candidate is None:
                        pipe.unwatch()
                        return
                    pipe.multi()
                    for key in beaten:
                        pipe.hset(key, field, candidate.id)
                    pipe.incr(keys.COUNTING_GENERATION)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        self.rescan(field)

    def rescan(self, field: str) -> None:
        """Choose a group's profile among all its succeeded ones (a bulk fill, a re-index, or the
        chosen one gone): linear in the group's history, so never on a plain finish."""
        group = GroupKey.parse(field)
        sets = [
            indexes.model_key(group.model),
            indexes.status_key("succeeded"),
            indexes.device_key(group.target),
            indexes.runtime_key(group.runtime),
        ]
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(*COUNTING_KEYS)
                    ids = [i.decode() for i in pipe.zinter(sets)]
                    same = [r for r in self._records(ids) if may_count(r) and group_of(r) == field]
                    pipe.multi()
                    pipe.incr(keys.COUNTING_GENERATION)
                    for key, select in zip(COUNTING_KEYS, SELECTIONS, strict=True):
                        chosen = max(same, key=order_for(select), default=None)
                        if chosen is None:
                            pipe.hdel(key, field)
                        else:
                            pipe.hset(key, field, chosen.id)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def counting(
        self,
        select: str = "best",
        *,
        device: str | None = None,
        precision: str | None = None,
        runtime: str | None = None,
    ) -> list[ProfileRecord]:
        """The profile that counts for each :class:`GroupKey`: what the analyses and ``/metrics``
        read, whatever the history holds (``None`` filters: every one)."""
        chosen = []
        for field, profile_id in self.redis.hgetall(indexes.counting_key(select)).items():
            group = GroupKey.parse(field.decode())
            if (
                matches(device, group.target)
                and precision in (None, group.precision)
                and runtime in (None, group.runtime)
            ):
                chosen.append(profile_id.decode())
        records = self._records(chosen)
        return sorted(records, key=lambda r: r.created_at, reverse=True)

    def indexes_ready(self) -> bool:
        return self.redis.get(indexes.VERSION_KEY) == indexes.INDEX_VERSION.encode()

    def counted_targets(self) -> set[str]:
        """The device targets that hold succeeded profiles (from the aggregate's keys alone)."""
        fields = self.redis.hkeys(indexes.counting_key("newest"))
        return {GroupKey.parse(f.decode()).target for f in fields}


def _beaten(pipe: Pipeline, field: str, changed_id: str, candidate: ProfileRecord | None) -> list[str] | None:
    """The counting keys whose choice for ``field`` ``candidate`` beats ([] if none); None where
    only a rescan can tell (the choice was ``changed_id`` itself, or it is gone or stale). Watches
    the chosen records, so that a change to one of them retries the transaction."""
    chosen = [raw.decode() if raw else None for raw in (pipe.hget(key, field) for key in COUNTING_KEYS)]
    if changed_id in chosen:
        return None
    if candidate is None:
        return []
    held_ids = sorted({i for i in chosen if i is not None})
    if held_ids:
        pipe.watch(*(record_key(i) for i in held_ids))
    held = {i: pipe.get(record_key(i)) for i in held_ids}
    beaten = []
    for key, select, chosen_id in zip(COUNTING_KEYS, SELECTIONS, chosen, strict=True):
        if chosen_id is None:
            beaten.append(key)
            continue
        raw = held[chosen_id]
        current = record_decoder.decode(raw) if raw is not None else None
        if current is None or not may_count(current) or group_of(current) != field:
            return None
        if order_for(select)(candidate) > order_for(select)(current):
            beaten.append(key)
    return beaten
