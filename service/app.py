"""The Litestar app factory."""

from __future__ import annotations

import gc
import logging
import threading

from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig

import dnnprof
from dnnprof.catalogue import CatalogueCache
from dnnprof.config import Settings, require_redis_url
from dnnprof.contract import ProfileRequest
from dnnprof.queue import make_celery
from dnnprof.store import AsyncRecordReader, ProfileStore
from service.controllers.analysis import AnalysisController, FiguresController
from service.controllers.devices import DeviceController
from service.controllers.exports import ExportController
from service.controllers.health import HealthController
from service.controllers.layers import LayersController
from service.controllers.models import ModelController
from service.controllers.profiles import ProfileController
from service.controllers.report import ReportController, static_router, vendor_router
from service.controllers.results import PublishedResultsController
from service.deps import Services
from service.docs import render_plugins, swagger_router
from service.errors import EXCEPTION_HANDLERS
from service.metrics import PROMETHEUS, MetricsController, register_store_collector
from service.openapi import complete_struct, raw_body
from service.security import RATE_LIMIT_STORE, RateLimitStore, api_key_guard, rate_limit

MAX_BODY_BYTES = 64 * 1024


log = logging.getLogger("dnnprof.api")


def index_store(store: ProfileStore, stopped: threading.Event) -> None:
    """Build the store's indexes where it was written before them (``/readyz`` says "indexing"
    until done), retrying while Redis is away."""
    while not stopped.is_set():
        try:
            store.ensure_indexes(log=log.info)
            return
        except Exception as exc:  # noqa: BLE001 - Redis may not be up yet
            log.warning("indexing the store: %s; retrying", exc)
            stopped.wait(2)


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    store = ProfileStore.from_url(require_redis_url(settings))
    services = Services(
        settings=settings,
        store=store,
        celery=make_celery(settings),
        catalogue_cache=CatalogueCache(store),
        reader=AsyncRecordReader(require_redis_url(settings)),
    )
    config = AppConfig(
        route_handlers=[
            ProfileController,
            LayersController,
            ModelController,
            DeviceController,
            PublishedResultsController,
            HealthController,
            MetricsController,
            AnalysisController,
            FiguresController,
            ExportController,
            ReportController,
            static_router,
            vendor_router,
            swagger_router,
        ],
        middleware=[PROMETHEUS.middleware]
        + (
            [limit.middleware]
            if (limit := rate_limit(settings.rate_limit_per_minute, settings.api_keys))
            else []
        ),
        guards=[api_key_guard(settings.api_keys, settings.auth_failures_per_minute)],
        dependencies={"services": Provide(lambda: services, use_cache=True, sync_to_thread=False)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        openapi_config=OpenAPIConfig(
            title="dnnprof",
            version=dnnprof.__version__,
            description="Profiles image-classification networks on demand "
            "(Bianco et al., 2018: accuracy, params, FLOPs, memory and latency per batch size).",
            path="/schema",
            render_plugins=render_plugins,
        ),
        request_max_body_size=MAX_BODY_BYTES,
        stores={RATE_LIMIT_STORE: RateLimitStore.for_url(require_redis_url(settings))},
    )
    register_store_collector(store)
    stopped = threading.Event()
    config.on_startup.append(
        lambda: threading.Thread(target=index_store, args=(store, stopped), daemon=True).start()
    )
    config.on_startup.append(gc.freeze)
    config.on_shutdown.append(stopped.set)
    config.on_shutdown.append(services.reader.close)
    app = Litestar.from_config(config)
    app.state.services = services
    complete_struct(app, ProfileRequest)
    raw_body(
        app,
        "/v1/results/published/{source}",
        "post",
        "text/csv",
        "A results table in timm's shape (model,img_size,top1,top5,param_count,...), UTF-8",
    )
    raw_body(  # application/onnx is taken too; the document names the type every client can send
        app,
        "/v1/models",
        "post",
        "application/octet-stream",
        "The ONNX file (a serialised ModelProto), as application/octet-stream or application/onnx",
    )
    return app
