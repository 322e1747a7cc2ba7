"""What the measuring processes of a job stored so far (cell by cell, so a retry resumes), the
FLOP counts (once per model and input size) and the model counts workers make for the API."""

from __future__ import annotations

import msgspec

from dnnprof import keys
from dnnprof.contract import FlopCount, LayerProfile, ModelCounts, ProcessCell, ProcessEnd, ProcessStatic
from dnnprof.store.base import StoreBase, encode

_static_decoder = msgspec.json.Decoder(ProcessStatic)
_cell_decoder = msgspec.json.Decoder(ProcessCell)
_end_decoder = msgspec.json.Decoder(ProcessEnd)
_flops_decoder = msgspec.json.Decoder(FlopCount)
_counts_decoder = msgspec.json.Decoder(ModelCounts)
_layers_decoder = msgspec.json.Decoder(LayerProfile)


Part = ProcessStatic | ProcessCell | ProcessEnd


def part_field(part: Part) -> str:
    """Where a part is kept in the job's ``parts`` hash, and what identifies it: a later part
    with the same field replaces it (a process measured again writes over itself)."""
    if isinstance(part, ProcessCell):
        return f"cell:{part.process}:{part.batch_size}"
    if isinstance(part, ProcessStatic):
        return f"static:{part.process}"
    return f"end:{part.process}"


class Parts(msgspec.Struct, kw_only=True):
    """What measuring processes measured: statics, cells and endings, one of each per field
    (:func:`part_field`). The one type for what a process hands back (its outcome file), what the
    store holds of a job, and what a job's ending carries; :meth:`merge` the one way they are
    combined (the later on top)."""

    statics: list[ProcessStatic] = []
    cells: list[ProcessCell] = []
    ends: list[ProcessEnd] = []

    def all(self) -> list[Part]:
        return [*self.statics, *self.cells, *self.ends]

    def add(self, part: Part) -> None:
        kept: list = self._kind_of(part)
        field = part_field(part)
        kept[:] = [p for p in kept if part_field(p) != field]
        kept.append(part)

    def _kind_of(self, part: Part) -> list:
        if isinstance(part, ProcessCell):
            return self.cells
        return self.statics if isinstance(part, ProcessStatic) else self.ends

    def add_raw(self, field: str, value: bytes) -> None:
        kind = field.partition(":")[0]
        decoder = {"static": _static_decoder, "cell": _cell_decoder, "end": _end_decoder}.get(kind)
        if decoder is not None:
            self.add(decoder.decode(value))

    def merge(self, other: Parts) -> Parts:
        """``other``'s parts on top of these (this object, changed)."""
        for part in other.all():
            self.add(part)
        return self

    def ended(self) -> set[int]:
        """The processes measured to their end."""
        return {end.process for end in self.ends}


class PartsMixin(StoreBase):
    def put_part(self, profile_id: str, part: Part | LayerProfile) -> None:
        """Store one piece the moment it is measured (idempotent: a retry overwrites it). A layer
        profile is kept apart, beside the record, for as long as the record."""
        if isinstance(part, LayerProfile):
            self.redis.hset(keys.layers(profile_id), str(part.batch_size), encode(part))
            return
        self.redis.hset(keys.parts(profile_id), part_field(part), encode(part))

    def layer_profiles(self, profile_id: str) -> dict[int, LayerProfile]:
        """The profile's layer profiles by batch size (empty: none stored)."""
        raw = self.redis.hgetall(keys.layers(profile_id))
        decoded = {int(bs): _layers_decoder.decode(value) for bs, value in raw.items()}
        return dict(sorted(decoded.items()))

    def layer_profile(self, profile_id: str, batch_size: int) -> LayerProfile | None:
        raw = self.redis.hget(keys.layers(profile_id), str(batch_size))
        return _layers_decoder.decode(raw) if raw is not None else None

    def parts(self, profile_id: str) -> Parts:
        raw = self.redis.hgetall(keys.parts(profile_id))
        parts = Parts()
        for field, value in raw.items():
            parts.add_raw(field.decode(), value)
        return parts

    def drop_parts(self, profile_id: str) -> None:
        self.redis.delete(keys.parts(profile_id))

    def drop_process_parts(self, profile_id: str, process: int) -> None:
        """Forget what one measuring process stored (it is measured again from its start)."""
        key = keys.parts(profile_id)
        mine = [f for f in self.redis.hkeys(key) if f.decode().split(":")[1] == str(process)]
        if mine:
            self.redis.hdel(key, *mine)

    @staticmethod
    def _flops_key(model: str, input_size: int, version: int) -> str:
        return keys.flops(version, model, input_size)

    def cached_flops(self, model: str, input_size: int, version: int) -> FlopCount | None:
        raw = self.redis.get(self._flops_key(model, input_size, version))
        return _flops_decoder.decode(raw) if raw is not None else None

    def cache_flops(self, model: str, input_size: int, version: int, count: FlopCount) -> None:
        self.redis.set(self._flops_key(model, input_size, version), encode(count))

    COUNT_REQUESTS = keys.COUNT_REQUESTS

    def request_count(self, qualified: str, ttl_s: int = 600) -> bool:
        """Ask the workers to count a model, once while a request is pending (``ttl_s``: asked
        again after that, should the worker that took it have died). True where asked now."""
        if not self.redis.set(keys.counts_pending(qualified), b"1", nx=True, ex=ttl_s):
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
            pipe.set(keys.counts(qualified), encode(counts))
            pipe.delete(keys.counts_pending(qualified))
            pipe.execute()

    def model_counts_many(self, names: list[str]) -> dict[str, ModelCounts]:
        raws = self.redis.mget([keys.counts(n) for n in names]) if names else []
        return {n: _counts_decoder.decode(r) for n, r in zip(names, raws, strict=True) if r}

    def model_counts(self, qualified: str) -> ModelCounts | None:
        raw = self.redis.get(keys.counts(qualified))
        return _counts_decoder.decode(raw) if raw is not None else None
