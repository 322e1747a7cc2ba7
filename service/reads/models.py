"""What the service knows of one model besides its catalogue entry (parameters, GMACs and accuracy,
each with its source; a worker's count where no table has them), and its profiles' history."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from msgspec import Struct

from dnnprof.analysis import MEGABYTE, best_published, published_accuracy, published_of
from dnnprof.catalogue import Resolved
from dnnprof.contract import ModelInfo, PublishedResult
from dnnprof.paper import PAPER_QUOTED_TOP1
from dnnprof.selection import GroupKey, is_noisy, may_count, quality
from dnnprof.targets import target_of
from service.deps import Services

COUNTED = "counted:meta-device"


class ModelDetail(ModelInfo, kw_only=True):
    """A catalogue entry with what the service knows of it besides, each figure with its source."""

    qualified: str  # what profiles of it are stored under: the name with its timm tag, if any
    tag: str | None = None
    params: int | None = None
    params_source: str | None = None  # "tv-metadata", "dnnprof-metadata", "measured", "published:<source>"
    #: Multiply-adds of one image at its input size.
    gmacs: float | None = None
    gmacs_source: str | None = None  # "tv-metadata", "measured" (counted by a worker)
    top1: float | None = None
    top5: float | None = None
    accuracy_source: str | None = None  # "measured", "published:<source>", "tv-metadata"
    #: The top-1 the paper's text quotes for it, where it does (a check that these are its weights).
    paper_quoted_top1: float | None = None
    #: Where no table gives params or GMACs, a worker counts them on the meta device when first
    #: asked: "pending" (asked; GET again in a few seconds), "no worker" (none runs to count),
    #: "counted", or "not counted: <why>".
    counts_status: str | None = None
    published_results: list[PublishedResult] = msgspec.field(default_factory=list)
    stored_profiles: int = 0


class HistoryEntry(Struct, kw_only=True):
    profile_id: str
    created_at: float
    status: str
    repeats: int  # fresh processes that measured
    noisy: bool
    #: The one the analyses use under select=best (per target, precision and runtime).
    counts: bool
    precision: str
    runtime: str
    ms_per_image: dict[int, float | None]
    memory_mb: dict[int, float | None]
    #: The batch sizes with a layer profile asked for (GET /v1/profiles/{id}/layers).
    layers_batch_sizes: list[int] = []


class TargetHistory(Struct, kw_only=True):
    target: str
    profiles: list[HistoryEntry]  # newest first


@dataclass
class ModelReads:
    services: Services

    def detail(self, resolved: Resolved) -> ModelDetail:
        info = resolved.info
        qualified = resolved.qualified
        out = ModelDetail(**msgspec.structs.asdict(info), qualified=qualified, tag=resolved.tag)
        stored = self.services.store.list(model=qualified, limit=100_000)
        measured = [p for p in stored if p.status == "succeeded" and p.result is not None]
        every = self.services.store.published()
        published = published_of(every, qualified)
        out.stored_profiles = len(stored)
        out.published_results = published
        out.paper_quoted_top1 = PAPER_QUOTED_TOP1.get(info.paper_name or "")
        best = max(measured, key=quality, default=None)
        if info.published_params is not None:
            out.params, out.params_source = info.published_params, f"{info.source}-metadata"
        elif best is not None:
            out.params, out.params_source = best.result.params, "measured"
        elif any(r.param_count_m for r in published):
            r = next(r for r in published if r.param_count_m)
            out.params, out.params_source = round(r.param_count_m * 1e6), f"published:{r.source}"
        if info.published_gmacs is not None:
            out.gmacs, out.gmacs_source = info.published_gmacs, f"{info.source}-metadata"
        elif best is not None and best.result.flops is not None:
            out.gmacs, out.gmacs_source = best.result.flops / 2e9, "measured"
        if out.params is None or out.gmacs is None:
            self.counted(out)
        if best is not None and best.result.top1 is not None:
            out.top1, out.top5, out.accuracy_source = best.result.top1, best.result.top5, "measured"
        else:
            accuracy = published_accuracy(qualified, info, best_published(every))
            out.top1, out.top5, out.accuracy_source = accuracy
        return out

    def counted(self, out: ModelDetail) -> None:
        """Fill params and GMACs from a worker's count on the meta device, or ask for one."""
        counts = self.services.store.model_counts(out.qualified)
        if counts is None:
            if self.services.store.live_device_classes():
                self.services.store.request_count(out.qualified)
                out.counts_status = "pending"
            else:
                out.counts_status = "no worker"
            return
        if out.params is None and counts.params is not None:
            out.params, out.params_source = counts.params, COUNTED
        if out.gmacs is None and counts.flops is not None:
            out.gmacs, out.gmacs_source = counts.flops / 2e9, COUNTED
        out.counts_status = "counted" if counts.params is not None else f"not counted: {counts.note}"

    def history(self, qualified: str) -> list[TargetHistory]:
        stored = self.services.store.list(model=qualified, limit=100_000)  # newest first
        done = [p for p in stored if p.status == "succeeded" and p.result is not None]
        counting: dict[GroupKey, str] = {}
        for record in sorted(filter(may_count, done), key=quality, reverse=True):
            counting.setdefault(GroupKey.of(record), record.id)
        by_target: dict[str, list[HistoryEntry]] = {}
        for record in done:
            result, target = record.result, target_of(record)
            by_target.setdefault(target, []).append(
                HistoryEntry(
                    profile_id=record.id,
                    created_at=record.created_at,
                    status=record.status,
                    repeats=result.processes,
                    noisy=is_noisy(record),
                    counts=counting.get(GroupKey.of(record)) == record.id,
                    precision=record.settings.precision,
                    runtime=record.settings.runtime,
                    ms_per_image={b.batch_size: b.latency and b.latency.mean_ms for b in result.batches},
                    memory_mb={
                        b.batch_size: b.memory.total_bytes / MEGABYTE
                        if b.memory and b.memory.total_bytes
                        else None
                        for b in result.batches
                    },
                    layers_batch_sizes=list(record.settings.layers_batch_sizes),
                )
            )
        return [TargetHistory(target=t, profiles=p) for t, p in sorted(by_target.items())]
