"""Liveness and readiness."""

from __future__ import annotations

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from msgspec import Struct

from dnnprof.contract import DEVICE_CLASSES, WorkerInfo
from service.deps import Services


class Readiness(Struct, kw_only=True):
    ready: bool
    redis: bool
    workers: dict[str, int]
    worker_details: list[WorkerInfo]
    catalogue_models: int
    detail: str | None = None


class HealthController(Controller):
    tags = ("health",)  # type: ignore[assignment]

    @get(
        "/healthz",
        summary="The API process is up, and, with the embedded default, so is its store",
        description="With `dnnprof serve`'s embedded Redis the store is part of this service: a dead "
        "or unresponsive one makes this 503. With an external Redis this is liveness only (see /readyz).",
        sync_to_thread=True,
    )
    def healthz(self, services: NamedDependency[Services]) -> Response[dict[str, str]]:
        if not services.settings.embedded_store:
            return Response({"status": "ok"})
        try:
            services.store.probe()  # a hung store is said in 2 s, not after the socket timeout
        except Exception as exc:  # noqa: BLE001 - health reports, it does not raise
            body = {
                "status": "store down",
                "detail": f"the embedded Redis does not answer: {type(exc).__name__}",
            }
            return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"status": "ok"})

    @get("/readyz", summary="Redis reachable and workers alive, per device class", sync_to_thread=True)
    def readyz(self, services: NamedDependency[Services]) -> Response[Readiness]:
        try:
            services.store.probe()  # fails fast on a hung store; the calls after it then answer
            workers = services.store.workers()
            models = len(services.catalogue_cache.get())
            indexed = services.store.indexes_ready()
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
            body = Readiness(
                ready=False,
                redis=False,
                workers={},
                worker_details=[],
                catalogue_models=0,
                detail=f"Redis unreachable: {type(exc).__name__}",
            )
            return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        counts = {device: 0 for device in DEVICE_CLASSES}
        for w in workers:
            counts[w.device_class] += 1
        ready = sum(counts.values()) > 0 and indexed
        detail = None
        if not indexed:
            detail = "indexing the stored profiles (see the API log for progress)"
        elif not ready:
            detail = "no worker alive in any device class"
        body = Readiness(
            ready=ready,
            redis=True,
            workers=counts,
            worker_details=workers,
            catalogue_models=models,
            detail=detail,
        )
        return Response(body, status_code=HTTP_200_OK if ready else HTTP_503_SERVICE_UNAVAILABLE)
