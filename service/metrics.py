"""Prometheus: Litestar's request metrics (path templates, not raw paths) and a collector over the
store — the paper's figures per profiled model, job counts and durations, queues and workers.

Label values come only from what has been profiled, so their number is bounded by the store.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import redis
from litestar import Controller, Response, get
from litestar.plugins.prometheus import PrometheusConfig
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from dnnprof.contract import DEVICE_CLASSES
from dnnprof.process import pid_alive
from dnnprof.queue import queue_for
from dnnprof.store import ProfileStore
from dnnprof.targets import class_of, target_of
from service.request_metrics import RequestMetrics

log = logging.getLogger(__name__)

PROMETHEUS = PrometheusConfig(
    app_name="dnnprof",
    prefix="dnnprof_http",
    group_path=True,
    exclude=["/metrics"],
    middleware_class=RequestMetrics,
)


class StoreCollector(Collector):
    """On the global registry: whether the store answered, jobs, queues and workers. The figures'
    families are rendered apart (:class:`FiguresExposition`) and appended to the scrape."""

    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dnnprof_store_up", "1 if the store (Redis) answered this scrape")
        try:
            families = list(self._live_families())
        except redis.exceptions.RedisError as exc:
            log.warning("metrics: store unreachable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _figure_families(self) -> Iterator[Metric]:
        """The paper's figures per profile that counts: many series, rendered once per change of
        the store's figures (:class:`FiguresExposition`)."""
        batch_labels = ["model", "device", "target", "batch_size", "precision", "runtime"]
        latency = GaugeMetricFamily(
            "dnnprof_profile_latency_seconds",
            "Per-image inference time, mean of the timed runs",
            labels=batch_labels,
        )
        throughput = GaugeMetricFamily(
            "dnnprof_profile_throughput_images_per_second",
            "Images per second at this batch size",
            labels=batch_labels,
        )
        memory = GaugeMetricFamily(
            "dnnprof_profile_memory_bytes",
            "Total memory the measuring process held on the device",
            labels=batch_labels,
        )
        oom = GaugeMetricFamily(
            "dnnprof_profile_oom", "1 where the batch size ran out of memory", labels=batch_labels
        )
        params = GaugeMetricFamily("dnnprof_model_parameters", "Learnable parameters", labels=["model"])
        flops = GaugeMetricFamily(
            "dnnprof_model_flops", "FLOPs per image (multiply-add = 2)", labels=["model"]
        )
        top1 = GaugeMetricFamily(
            "dnnprof_model_top1_ratio", "Top-1 ImageNet accuracy", labels=["model", "source"]
        )
        top5 = GaugeMetricFamily(
            "dnnprof_model_top5_ratio", "Top-5 ImageNet accuracy", labels=["model", "source"]
        )

        seen_batches: set[tuple[str, ...]] = set()
        seen_models: set[str] = set()
        # The profile that counts per model, target, precision and runtime (select=best, as the analyses),
        # kept by the store: a scrape reads those, not the history.
        for record in self.store.counting("best"):
            result = record.result
            if result is None:
                continue
            s = record.settings
            model, device, precision, runtime = s.model, s.device, s.precision, s.runtime
            target = target_of(record)
            for batch in result.batches:
                key = (model, device, target, str(batch.batch_size), precision, runtime)
                if key in seen_batches:
                    continue
                seen_batches.add(key)
                oom.add_metric(list(key), 1 if batch.status == "oom" else 0)
                if batch.latency is not None:
                    latency.add_metric(list(key), batch.latency.mean_ms / 1000.0)
                    throughput.add_metric(list(key), batch.latency.images_per_s)
                if batch.memory is not None and batch.memory.total_bytes is not None:
                    memory.add_metric(list(key), batch.memory.total_bytes)
            if model not in seen_models:
                seen_models.add(model)
                params.add_metric([model], result.params)
                if result.flops is not None:
                    flops.add_metric([model], result.flops)
            if result.top1 is not None and (model, "measured") not in seen_batches:
                seen_batches.add((model, "measured"))
                top1.add_metric([model, "measured"], result.top1 / 100)
                if result.top5 is not None:
                    top5.add_metric([model, "measured"], result.top5 / 100)
        for published in self.store.published():
            # Only for models profiled here, so imported tables cannot blow up label counts.
            if published.resolved in seen_models:
                top1.add_metric([published.resolved, f"published:{published.source}"], published.top1 / 100)
                if published.top5 is not None:
                    top5.add_metric(
                        [published.resolved, f"published:{published.source}"], published.top5 / 100
                    )
        yield from (latency, throughput, memory, oom, params, flops, top1, top5)

    def _live_families(self) -> Iterator[Metric]:
        """Jobs, queues and workers: few series, read on every scrape."""
        jobs = CounterMetricFamily("dnnprof_jobs", "Profile jobs that ended, by status", labels=["status"])
        durations = SummaryMetricFamily(
            "dnnprof_job_duration_seconds", "Time from start to end of ended jobs", labels=["status"]
        )
        for status, (count, seconds) in sorted(self.store.finished_counts().items()):
            jobs.add_metric([status], count)
            durations.add_metric([status], count_value=count, sum_value=seconds)
        yield jobs
        yield durations

        in_flight = GaugeMetricFamily("dnnprof_jobs_in_flight", "Jobs queued or running", labels=["status"])
        for status in ("queued", "running"):
            in_flight.add_metric([status], self.store.count(status=status))
        yield in_flight

        queue = GaugeMetricFamily(
            "dnnprof_queue_length",
            "Messages waiting per queue: a device class's (target empty) or a device target's",
            labels=["device", "target"],
        )
        workers = GaugeMetricFamily("dnnprof_workers", "Live workers per device class", labels=["device"])
        target_workers = GaugeMetricFamily(
            "dnnprof_target_workers", "Live workers per device target", labels=["device", "target"]
        )
        live = self.store.live_device_classes()
        for device in DEVICE_CLASSES:
            queue.add_metric([device, ""], self.store.queue_length(queue_for(device)))
            workers.add_metric([device], live.get(device, 0))
        live_targets = self.store.live_targets()
        for target in sorted(set(self.store.devices()) | set(live_targets)):
            queue.add_metric([class_of(target), target], self.store.queue_length(queue_for(target)))
            target_workers.add_metric([class_of(target), target], live_targets.get(target, 0))
        yield queue
        yield workers
        yield target_workers


class _Figures(Collector):
    def __init__(self, collector: StoreCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        yield from self.collector._figure_families()


class FiguresExposition:
    """The figures' families as exposition text, rendered again only when the store's figures
    version changes (a profile that counts, a published table): a scrape of a store with a long
    history and many models then costs one Redis read, not a decode and render of thousands of
    series."""

    def __init__(self, collector: StoreCollector) -> None:
        self.store = collector.store
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Figures(collector))
        self.lock = threading.Lock()
        self.version: str | None = None
        self.text = b""

    def render(self) -> bytes:
        """Raises RedisError when the store does not answer (the scrape says so in store_up)."""
        version = self.store.figures_version()
        with self.lock:
            if version != self.version:
                self.text, self.version = generate_latest(self.registry), version
            return self.text


#: prometheus_client's multiprocess mode: the folder every API process writes its metrics to.
MULTIPROCESS_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"

_registered: StoreCollector | None = None
_figures: FiguresExposition | None = None
_scraped: CollectorRegistry = REGISTRY


def register_store_collector(store: ProfileStore) -> None:
    """One collector per process on the global registry (the one Litestar's middleware uses)."""
    global _registered, _figures, _scraped
    if _registered is not None:
        REGISTRY.unregister(_registered)
    _registered = StoreCollector(store)
    _figures = FiguresExposition(_registered)
    REGISTRY.register(_registered)
    _scraped = _all_processes(_registered) if os.environ.get(MULTIPROCESS_METRICS_ENV) else REGISTRY


def _all_processes(store_collector: StoreCollector) -> CollectorRegistry:
    """Where the API runs as several processes (``dnnprof api --workers N``): the requests of
    every one of them, read from prometheus_client's multiprocess files, and the store's figures
    (the same from any process)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(store_collector)
    return registry


def forget_dead_processes(folder: str) -> None:
    """An API process that died (killed mid-request; uvicorn starts another) leaves the files of
    its live gauges, and prometheus_client sums them until told the process is dead: its
    requests would stay in progress for ever. Told here, at each scrape, of every pid gone."""
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), folder)


def exposition() -> bytes:
    """The whole scrape: the registry (requests, store up, jobs, queues, workers), then the
    figures, unless the store is away."""
    if _scraped is not REGISTRY:
        forget_dead_processes(os.environ[MULTIPROCESS_METRICS_ENV])
    body = generate_latest(_scraped)
    if _figures is not None:
        try:
            body += _figures.render()
        except redis.exceptions.RedisError as exc:
            log.warning("metrics: figures not rendered, store unreachable: %s", exc)
    return body


#: Prometheus's text format, its charset left to Litestar, which adds one to every text/* type
#: (prometheus_client's own constant names it too: it was declared twice).
METRICS_MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


class MetricsController(Controller):
    path = "/metrics"
    tags = ("metrics",)  # type: ignore[assignment]

    @get(
        summary="Prometheus metrics",
        sync_to_thread=True,
        include_in_schema=True,
        media_type=METRICS_MEDIA_TYPE,
    )
    def metrics(self) -> Response[bytes]:
        return Response(exposition(), media_type=METRICS_MEDIA_TYPE)
