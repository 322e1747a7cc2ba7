"""Request metrics: Litestar's Prometheus middleware, with the label lookups it repeats made once.

The stock middleware builds a ``Request``, parses the URL (even where it labels by path template),
merges two label dicts and looks four children up by label value on every request: ~70 µs here,
a third of a 304 (issue 29, ``docs/benchmarks.md``). This subclass reads method and path template
from the ASGI scope and keeps each (method, path, status)'s children; the families, their names,
labels and values are the stock middleware's (it creates them). Configurations it does not take
the short way (extra labels, exemplars, excluded methods) go the stock way.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.plugins.prometheus import PrometheusMiddleware
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

if TYPE_CHECKING:
    from litestar.types import Message, Receive, Scope, Send


class RequestMetrics(PrometheusMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_progress: dict[tuple[str, str], Any] = {}
        self._finished: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}

    def _labels(self, method: str, path: str, status: int) -> dict[str, str | int | float]:
        return {"method": method, "path": path, "status_code": status, "app_name": self._config.app_name}

    def _in_progress_child(self, method: str, path: str):
        key = (method, path)
        if key not in self._in_progress:
            labels = self._labels(method, path, 200)  # the stock middleware's in-progress labels
            self._in_progress[key] = self.requests_in_progress(labels).labels(*labels.values())
        return self._in_progress[key]

    def _finished_children(self, method: str, path: str, status: int):
        key = (method, path, status)
        if key not in self._finished:
            labels = self._labels(method, path, status)
            values = [*labels.values()]
            errors = (
                self.requests_error_count(labels).labels(*values)
                if status >= HTTP_500_INTERNAL_SERVER_ERROR
                else None
            )
            count = self.request_count(labels).labels(*values)
            self._finished[key] = (count, self.request_time(labels).labels(*values), errors)
        return self._finished[key]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self._config
        if config.labels or config.exemplars or config.excluded_http_methods:
            await super().__call__(scope, receive, send)
            return
        method = scope["method"] if scope["type"] == ScopeType.HTTP else scope["type"]  # type: ignore[typeddict-item]
        path = scope["path_template"] if config.group_path else scope["path"]  # type: ignore[typeddict-item]
        started = time.perf_counter()
        span = {"status": 200, "duration": 0.0}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                span["status"] = message["status"]
            elif message["type"] == "http.response.body":
                span["duration"] = time.perf_counter() - started
            await send(message)

        in_progress = self._in_progress_child(method, path)
        in_progress.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            in_progress.dec()
            count, duration, errors = self._finished_children(method, path, int(span["status"]))
            if errors is not None:
                errors.inc()
            count.inc()
            duration.observe(span["duration"])
