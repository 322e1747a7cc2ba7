"""Every device target seen (by a worker's heartbeat or in a stored profile), with its live
workers, queue depth, profiles and the fingerprint of its newest profile; and the paper's two
devices, published and read-only (:mod:`dnnprof.paper_devices`)."""

from __future__ import annotations

from dataclasses import dataclass

from msgspec import Struct

from dnnprof.contract import DeviceFingerprint, DeviceSeen, WorkerInfo
from dnnprof.paper import PAPER_DEVICES, PAPER_SOURCE
from dnnprof.paper_devices import PAPER_CLASS, table1
from dnnprof.queue import queue_for
from dnnprof.targets import class_of
from service.deps import Services


class DeviceView(Struct, kw_only=True):
    target: str
    device_class: str
    #: "live": a worker beats now; "gone": seen before (its profiles are kept); "published": the
    #: paper's figures (read-only: nothing is sent to it).
    status: str
    live_workers: list[str]
    queue: str | None  # None for a published target
    queue_depth: int
    profiles: int  # stored profiles; for a published target, the models it has figures of
    device_name: str | None = None
    device_memory_bytes: int | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    #: Of its newest stored profile: drivers, libraries, clocks, threads.
    fingerprint: DeviceFingerprint | None = None
    #: Where a published target's figures come from.
    source: str | None = None
    #: The runtimes its workers run, name -> version (the live workers', else as last seen).
    runtimes: dict[str, str] = {}


@dataclass
class DeviceReads:
    services: Services

    def views(self) -> list[DeviceView]:
        """Every target seen (live, or gone with its profiles), then the paper's two."""
        store = self.services.store
        seen: dict[str, DeviceSeen] = store.devices()
        workers: dict[str, list[WorkerInfo]] = {}
        for w in store.workers():
            if w.device_target:
                workers.setdefault(w.device_target, []).append(w)
        counts: dict[str, int] = {}
        newest: dict[str, DeviceFingerprint] = {}
        for target in store.counted_targets() | set(seen) | set(workers):
            counts[target] = store.count(device=target, status="succeeded")
            latest = store.list(device=target, status="succeeded", limit=1)
            if latest and latest[0].result is not None:
                newest[target] = latest[0].result.fingerprint
        views = []
        for target in sorted(t for t in counts if counts[t] or t in seen or t in workers):
            registry, live, fp = seen.get(target), workers.get(target, []), newest.get(target)
            views.append(
                DeviceView(
                    target=target,
                    device_class=class_of(target),
                    status="live" if live else "gone",
                    live_workers=sorted(w.hostname for w in live),
                    queue=queue_for(target),
                    queue_depth=store.queue_length(queue_for(target)),
                    profiles=counts.get(target, 0),
                    device_name=(registry and registry.device_name) or (fp and fp.device_name),
                    device_memory_bytes=(registry and registry.device_memory_bytes)
                    or (fp and fp.device_memory_bytes),
                    first_seen=registry.first_seen if registry else None,
                    last_seen=max(
                        [w.seen_at for w in live] + ([registry.last_seen] if registry else []), default=None
                    ),
                    fingerprint=fp,
                    runtimes=_runtimes(live, registry),
                )
            )
        return views + paper_views()


def _runtimes(live: list[WorkerInfo], registry: DeviceSeen | None) -> dict[str, str]:
    offered = {name: version for w in live for name, version in w.runtimes.items()}
    return offered or (registry.runtimes if registry else {})


def paper_views() -> list[DeviceView]:
    views = []
    for target, info in PAPER_DEVICES.items():
        views.append(
            DeviceView(
                target=target,
                device_class=PAPER_CLASS,
                status="published",
                live_workers=[],
                queue=None,
                queue_depth=0,
                profiles=len(table1()[target]),
                device_name=str(info["device_name"]),
                device_memory_bytes=int(info["memory_bytes"]),
                source=f"{PAPER_SOURCE}: Table 1 (per-image times, batch sizes 1-64)",
            )
        )
    return views
