"""The worker and device registry: each live worker's key (expiring unless its heartbeat renews
it) in a registry scored by expiry, and every device target ever seen (kept after its workers)."""

from __future__ import annotations

import time

import msgspec

from dnnprof import keys
from dnnprof.contract import DeviceSeen, WorkerInfo
from dnnprof.store.base import StoreBase, encode

_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_device_decoder = msgspec.json.Decoder(DeviceSeen)


class RegistryMixin(StoreBase):
    WORKERS = keys.LIVE_WORKERS

    def heartbeat(self, info: WorkerInfo, ttl_s: int) -> None:
        """The worker's key, expiring unless renewed, and its place in the live registry (scored by
        when it expires), so that finding the workers never scans the keyspace."""
        key = keys.worker(info.device_class, info.hostname)
        with self.redis.pipeline() as pipe:
            pipe.set(key, encode(info), ex=ttl_s)
            pipe.zadd(self.WORKERS, {key: time.time() + ttl_s})
            pipe.execute()
        if info.device_target:
            self.see_device(info)

    def see_device(self, info: WorkerInfo) -> DeviceSeen:
        """Record the worker's target in the device registry (kept when its workers are gone)."""
        key = keys.DEVICES
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
        seen.runtimes = info.runtimes or seen.runtimes
        seen.last_seen = max(seen.last_seen, info.seen_at)
        seen.hostnames = [*[h for h in seen.hostnames if h != info.hostname][-7:], info.hostname]
        self.redis.hset(key, info.device_target, encode(seen))
        return seen

    def devices(self) -> dict[str, DeviceSeen]:
        return {
            k.decode(): _device_decoder.decode(v) for k, v in self.redis.hgetall(keys.DEVICES).items()
        }

    def live_targets(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.workers():
            if w.device_target:
                counts[w.device_target] = counts.get(w.device_target, 0) + 1
        return counts

    def forget_worker(self, info: WorkerInfo) -> None:
        key = keys.worker(info.device_class, info.hostname)
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
            _, worker_keys = pipe.execute()
        if not worker_keys:
            return []
        return [_worker_decoder.decode(raw) for raw in self.redis.mget(worker_keys) if raw is not None]

    def live_device_classes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.workers():
            counts[w.device_class] = counts.get(w.device_class, 0) + 1
        return counts
