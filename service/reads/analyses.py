"""The rows every analysis is computed over."""

from __future__ import annotations

from dataclasses import dataclass

from dnnprof import analysis, paper_devices
from dnnprof.contract import PublishedResult
from service.deps import Services


@dataclass(frozen=True)
class RowQuery:
    """Which rows an analysis reads: the device (or the paper's), precision, selection, runtime."""

    device: str | None = None
    precision: str | None = None
    select: str = "best"
    #: Further devices whose rows are wanted too (the paper's, for a comparison).
    also: tuple[str, ...] = ()
    runtime: str | None = "eager"


@dataclass
class AnalysisReads:
    """The rows every analysis is computed over: the profile that counts per (model, target,
    precision, runtime), and the paper's published rows where the query names the paper."""

    services: Services

    def rows(self, query: RowQuery) -> list[analysis.ModelRow]:
        published = self.services.store.published()
        paper = [d for d in (query.device, *query.also) if paper_devices.is_paper(d)]
        rows = []
        if not paper_devices.is_paper(query.device):
            rows = self.measured(query, published)
        if paper and query.precision in (None, "fp32") and query.runtime == "eager":
            wanted = paper[0] if len(set(paper)) == 1 else paper_devices.PAPER_CLASS
            rows += self.with_counts(self.paper_rows(wanted, published))
        return rows

    def measured(self, query: RowQuery, published: list[PublishedResult]) -> list[analysis.ModelRow]:
        """Only the profile that counts per group is read (the store keeps it)."""
        records = self.services.store.counting(
            query.select, device=query.device, precision=query.precision, runtime=query.runtime
        )
        return analysis.model_rows(
            records,
            published=published,
            catalogue=self.services.catalogue_cache.get().entries,
            device=query.device,
            precision=query.precision,
            select=query.select,
            runtime=query.runtime,
        )

    def paper_rows(
        self, device: str = paper_devices.PAPER_CLASS, published: list[PublishedResult] | None = None
    ) -> list[analysis.ModelRow]:
        """The paper's own rows (both its devices, or the one ``device`` names)."""
        catalogue = self.services.catalogue_cache.get().entries
        every = self.services.store.published() if published is None else published
        return paper_devices.paper_rows(catalogue, every, device)

    def with_counts(self, rows: list[analysis.ModelRow]) -> list[analysis.ModelRow]:
        """The paper's rows with the parameters and FLOPs no table publishes (timm's ports, the
        zoo) from a worker's count on the meta device; those not counted yet are asked for."""
        store = self.services.store
        missing = [r.model for r in rows if r.gflops is None or not r.params]
        counted = store.model_counts_many(sorted(set(missing)))
        for row in rows:
            counts = counted.get(row.model)
            if counts is None:
                if row.model in missing:
                    store.request_count(row.model)
                continue
            if row.gflops is None and counts.flops is not None:
                row.gflops = counts.flops / 1e9
            if not row.params and counts.params:
                row.params, row.param_file_mb = counts.params, counts.params * 4 / analysis.MEGABYTE
        return rows
