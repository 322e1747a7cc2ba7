"""The request metrics (``service/request_metrics.py``) against their reference, Litestar's own
Prometheus middleware: the same requests through each, each app in a process of its own (both
register the same families on prometheus_client's global registry), give the same series with
the same counts. Only durations (sums, finite buckets) and creation times differ by nature."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT

APP = """
import sys
from litestar import Litestar, get, post
from litestar.exceptions import NotFoundException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusMiddleware
from litestar.testing import TestClient
from prometheus_client import REGISTRY, generate_latest
from service.request_metrics import RequestMetrics

@get("/items/{item_id:int}")
async def item(item_id: int) -> dict:
    if item_id == 0:
        raise NotFoundException("no such item")
    if item_id == 1:
        raise RuntimeError("a server error")
    return {"id": item_id}

@post("/items")
async def add(data: dict) -> dict:
    return data

@get("/metrics", sync_to_thread=False)
def metrics() -> str:
    return "excluded"

middleware = RequestMetrics if sys.argv[1] == "lean" else PrometheusMiddleware
config = PrometheusConfig(app_name="t", prefix="t_http", group_path=True, exclude=["/metrics"],
                          middleware_class=middleware)
with TestClient(Litestar([item, add, metrics], middleware=[config.middleware]),
                raise_server_exceptions=False) as client:
    for path in ("/items/3", "/items/4", "/items/0", "/items/1", "/no/route", "/metrics", "/items/x"):
        client.get(path)
    client.post("/items", json={"a": 1})
    client.post("/items", content=b"not json", headers={"content-type": "application/json"})
print(generate_latest(REGISTRY).decode())
"""


def series(kind: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", APP, kind], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    kept = set()
    for line in out.splitlines():
        if not line.startswith("t_http_") or "_created" in line:
            continue
        name = line.split("{")[0]
        if name.endswith("_sum") or (name.endswith("_bucket") and 'le="+Inf"' not in line):
            continue  # durations: they differ between any two runs
        kept.add(line)
    return kept


def test_the_lean_middleware_counts_what_litestars_own_counts():
    stock, lean = series("stock"), series("lean")
    assert lean == stock, (
        f"only in the lean: {sorted(lean - stock)}; only in the stock: {sorted(stock - lean)}"
    )
    # What the reference counted, so the comparison is not of two empty sets.
    assert any('status_code="500"' in s and s.startswith("t_http_requests_error_total") for s in stock)
    assert any('path="/items/{item_id}"' in s and s.endswith(" 2.0") for s in stock), sorted(stock)
    assert not any('path="/metrics"' in s for s in stock)
