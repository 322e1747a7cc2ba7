"""Uploaded ONNX files (issue 42): the bytes content-addressed by sha256, the named entries over them.

- ``blob:<sha256>``       hash chunk index -> bytes (chunks of :data:`CHUNK_BYTES`, far under Redis's
                          512 MB string limit); written under a temporary key and renamed, so a
                          reader never sees half a file
- ``blobs``               hash sha256 -> size in bytes of every stored file (the total cap sums it)
- ``blob-refs:<sha256>``  set of the names that point at the file; the file goes with the last one
- ``upload:<name>``       JSON :class:`UploadRecord` (the entry and who uploaded it)
- ``uploads``             set of every name; ``uploads-by:<client>`` the names of one client
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator

import msgspec
import redis

from dnnprof import keys
from dnnprof.store.base import StoreBase, encode

#: One chunk of a stored file: 8 MiB, so that no Redis value nears its 512 MB limit and a reader
#: holds one chunk at a time.
CHUNK_BYTES = 8 * 1024 * 1024


class UploadRecord(msgspec.Struct, kw_only=True):
    """A stored entry: the model (JSON of :class:`dnnprof.uploads.UploadedModel`, kept raw so the
    store needs no knowledge of it), its file's sha256 and size, and its uploader."""

    name: str
    sha256: str
    size_bytes: int
    owner: str
    entry: msgspec.Raw
    #: What else the uploader stated with the file (its preprocessing), canonical: the same file
    #: and statement again is the same upload.
    stated: str = ""

    def same_as(self, other: UploadRecord) -> bool:
        return (self.owner, self.sha256, self.stated) == (other.owner, other.sha256, other.stated)


_record_decoder = msgspec.json.Decoder(UploadRecord)


class NameTaken(Exception):
    """The name holds another file, or another uploader's."""

    def __init__(self, existing: UploadRecord) -> None:
        super().__init__(existing.name)
        self.existing = existing


class UploadsMixin(StoreBase):
    def has_blob(self, sha256: str) -> bool:
        return bool(self.redis.hexists(keys.BLOBS, sha256))

    def put_blob(self, sha256: str, data: bytes) -> bool:
        """Store a file under its hash, once; True where it was written now."""
        if self.has_blob(sha256):
            return False
        partial = keys.blob_partial(uuid.uuid4().hex)
        try:
            for index, start in enumerate(range(0, len(data), CHUNK_BYTES)):
                self.redis.hset(partial, str(index), data[start : start + CHUNK_BYTES])
                if index == 0:
                    self.redis.expire(partial, 3600)  # an API process dying mid-write leaves nothing
            with self.redis.pipeline() as pipe:
                pipe.persist(partial)
                pipe.rename(partial, keys.blob(sha256))
                pipe.hset(keys.BLOBS, sha256, len(data))
                pipe.execute()
        finally:
            self.redis.delete(partial)
        return True

    def blob_chunks(self, sha256: str) -> Iterator[bytes]:
        """The file's chunks in order (one read each); nothing where it is not stored."""
        count = int(self.redis.hlen(keys.blob(sha256)))
        for index in range(count):
            chunk = self.redis.hget(keys.blob(sha256), str(index))
            if chunk is None:
                raise LookupError(f"the file {sha256} was deleted while it was read")
            yield chunk

    def blob_sizes(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(keys.BLOBS).items()}

    def drop_blob_if_unused(self, sha256: str) -> bool:
        """Delete the file where no name points at it (checked and deleted in one WATCH transaction,
        so a name registered meanwhile keeps it)."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(keys.blob_refs(sha256))
                if pipe.scard(keys.blob_refs(sha256)):
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(keys.blob(sha256))
                pipe.hdel(keys.BLOBS, sha256)
                pipe.execute()
                return True
            except redis.exceptions.WatchError:
                return False

    def register_upload(
        self, record: UploadRecord, check: Callable[[list[UploadRecord]], None], *, attempts: int = 10
    ) -> tuple[UploadRecord, bool]:
        """Name a stored file: (the record, True), or (the existing record, False) where the same
        uploader already named the same file so, stating the same. ``check`` sees the uploader's
        records inside the transaction and raises to refuse (the caps). :class:`NameTaken` where
        the name is another's or holds another upload; LookupError where the file was deleted
        meanwhile."""
        key, mine = keys.upload(record.name), keys.uploads_by(record.owner)
        for _ in range(attempts):
            with self.redis.pipeline() as pipe:
                try:
                    pipe.watch(key, mine, keys.blob(record.sha256), keys.BLOBS)
                    raw = pipe.get(key)
                    if raw is not None:
                        existing = _record_decoder.decode(raw)
                        if existing.same_as(record):
                            return existing, False
                        raise NameTaken(existing)
                    if not pipe.exists(keys.blob(record.sha256)):
                        raise LookupError(record.sha256)
                    check(self._records_of(pipe, mine))
                    pipe.multi()
                    pipe.set(key, encode(record))
                    pipe.sadd(keys.UPLOADS, record.name)
                    pipe.sadd(mine, record.name)
                    pipe.sadd(keys.blob_refs(record.sha256), record.name)
                    pipe.execute()
                    return record, True
                except redis.exceptions.WatchError:
                    continue
        raise redis.exceptions.WatchError(f"upload {record.name!r}: the store kept changing; retry")

    def _records_of(self, client: redis.Redis, names_key: str) -> list[UploadRecord]:
        names = sorted(n.decode() for n in client.smembers(names_key))
        raws = client.mget([keys.upload(n) for n in names]) if names else []
        return [_record_decoder.decode(r) for r in raws if r is not None]

    def upload(self, name: str) -> UploadRecord | None:
        raw = self.redis.get(keys.upload(name))
        return _record_decoder.decode(raw) if raw is not None else None

    def uploads(self, names: Iterable[str] | None = None) -> list[UploadRecord]:
        """Every entry (or those of ``names``), by name."""
        wanted = sorted(
            names if names is not None else (n.decode() for n in self.redis.smembers(keys.UPLOADS))
        )
        raws = self.redis.mget([keys.upload(n) for n in wanted]) if wanted else []
        return [_record_decoder.decode(r) for r in raws if r is not None]

    def uploads_of(self, client: str) -> list[UploadRecord]:
        return self._records_of(self.redis, keys.uploads_by(client))

    def delete_upload(self, record: UploadRecord) -> bool:
        """Forget a name (as read: not if it changed meanwhile), then its file if no other name
        points at it. The profiles measured from it stay."""
        key = keys.upload(record.name)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                raw = pipe.get(key)
                if raw is None or _record_decoder.decode(raw).sha256 != record.sha256:
                    pipe.unwatch()
                    return False
                pipe.multi()
                pipe.delete(key)
                pipe.srem(keys.UPLOADS, record.name)
                pipe.srem(keys.uploads_by(record.owner), record.name)
                pipe.srem(keys.blob_refs(record.sha256), record.name)
                pipe.execute()
            except redis.exceptions.WatchError:
                return False
        self.drop_blob_if_unused(record.sha256)
        return True
