"""Published tables (a paper's, a vendor's: one hash per source, replaced as a whole) and the
model catalogue the workers publish for the API, with the version readers cache on."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from dnnprof import keys
from dnnprof.contract import ModelInfo, PublishedResult
from dnnprof.store.base import StoreBase, encode

PUBLISHED_VERSION = keys.PUBLISHED_VERSION
_model_decoder = msgspec.json.Decoder(ModelInfo)
_published_decoder = msgspec.json.Decoder(PublishedResult)


class PublishedMixin(StoreBase):
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
            keys.published(source),
            {r.model: encode(r) for r in results},
            ("sadd", keys.PUBLISHED_SOURCES, source),
            ("incr", PUBLISHED_VERSION),
        )

    def figures_version(self) -> str:
        """Changes whenever what the figures show may have: a profile that counts, or a published
        table (so a reader can cache what it computed from them)."""
        counting, published = self.redis.mget([keys.COUNTING_GENERATION, PUBLISHED_VERSION])
        return f"{int(counting or 0)}:{int(published or 0)}"

    def published_sources(self) -> set[str]:
        return {s.decode() for s in self.redis.smembers(keys.PUBLISHED_SOURCES)}

    def published(self, source: str | None = None) -> list[PublishedResult]:
        sources = [source] if source else sorted(self.published_sources())
        out: list[PublishedResult] = []
        for src in sources:
            out.extend(_published_decoder.decode(v) for v in self.redis.hvals(keys.published(src)))
        return out

    def shipped_tables_version(self) -> str | None:
        """Which shipped tables (and catalogue they were resolved against) are imported."""
        raw = self.redis.get(keys.PUBLISHED_SHIPPED)
        return raw.decode() if raw is not None else None

    def import_shipped(self, tables: dict[str, list[PublishedResult]], version: str) -> int:
        """Replace the shipped sources and record their version, in one MULTI."""
        with self.redis.pipeline() as pipe:
            for source, results in tables.items():
                pipe.delete(keys.published(source))
                if results:
                    pipe.hset(keys.published(source), mapping={r.model: encode(r) for r in results})
                pipe.sadd(keys.PUBLISHED_SOURCES, source)
            pipe.set(keys.PUBLISHED_SHIPPED, version)
            pipe.incr(PUBLISHED_VERSION)
            pipe.execute()
        return sum(len(r) for r in tables.values())

    def delete_published(self, source: str) -> bool:
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.published(source))
            pipe.srem(keys.PUBLISHED_SOURCES, source)
            pipe.incr(PUBLISHED_VERSION)
            deleted, _, _ = pipe.execute()
        return bool(deleted)

    # the model catalogue

    def publish_catalogue(self, entries: Iterable[ModelInfo], version: str) -> int:
        return self._replace_hash(
            keys.CATALOGUE,
            {e.name: encode(e) for e in entries},
            ("set", keys.CATALOGUE_VERSION, version),
        )

    def catalogue_version(self) -> str | None:
        raw = self.redis.get(keys.CATALOGUE_VERSION)
        return raw.decode() if raw is not None else None

    def load_catalogue(self) -> dict[str, ModelInfo]:
        raw = self.redis.hgetall(keys.CATALOGUE)
        return {k.decode(): _model_decoder.decode(v) for k, v in raw.items()}
