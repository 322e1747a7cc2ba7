"""Hostile input, round four (issue 44, parts 4 and 5): answers that were a 5xx or misled. Real HTTP
against the API (`dnnprof serve` without a worker, on a Redis of its own, the catalogue published
as a worker publishes it)."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from tests.helpers import publish_catalogue, start_service, throwaway_redis


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    data = tmp_path_factory.mktemp("hostile-input")
    server, url = throwaway_redis(data)
    publish_catalogue(url)
    svc = start_service(data / "api", device="none", wait_for_worker=False, env={"DNNPROF_REDIS_URL": url})
    try:
        with svc.client() as client:
            yield client
    finally:
        svc.stop()
        server.kill()
        server.wait()


@pytest.mark.parametrize("prefix", ["/static/", "/vendor/", "/static/swagger/"])
def test_a_file_name_past_the_filesystems_limit_is_a_404(api, prefix):
    """ENAMETOOLONG from os.stat was a 500 (255 characters was a 404)."""
    for length in (255, 256, 4000):
        response = api.get(prefix + "a" * length)
        assert response.status_code == 404, (length, response.status_code, response.text[:200])


def test_a_long_string_is_not_echoed_whole_in_a_422(api):
    response = api.post("/v1/profiles", json={"model": "resnet18", "precision": "x" * 60_000})
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 3000 and "precision" in response.text
    assert "60000 characters" in response.text  # says it was cut, and how long it was


def test_a_duplicated_json_key_is_refused(api):
    """Last one won: '{"model": "resnet18", "model": "resnet50"}' measured resnet50."""
    body = b'{"model": "resnet18", "batch_sizes": [1], "model": "resnet50"}'
    response = api.post("/v1/profiles", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "'model'" in response.json()["detail"] and "twice" in response.json()["detail"]


@pytest.mark.parametrize(
    "name",
    ["res\u200bnet18", "resnet\u00ad18", "\u200bresnet18", "resnet18\ufeff", "r" * 10_000],
    ids=["zero-width-space", "soft-hyphen", "leading-zwsp", "bom", "10000-chars"],
)
def test_a_model_name_post_refuses_is_refused_by_get_too(api, name):
    """GET /v1/models/{name} resolved what POST refuses, and echoed a 10,000-character name whole."""
    posted = api.post("/v1/profiles", json={"model": name})
    assert posted.status_code == 422, posted.text[:300]
    got = api.get(f"/v1/models/{name}")
    assert got.status_code == 422, got.text[:300]
    assert len(got.content) < 3000
    assert api.get(f"/v1/models/{name}/history").status_code == 422
    assert api.get("/v1/models/resnet18").status_code == 200  # a plain name still resolves


def test_metrics_declares_its_charset_once(api):
    content_type = api.get("/metrics").headers["content-type"]
    assert content_type.count("charset") == 1, content_type


def test_the_schema_page_has_a_content_security_policy_and_nosniff(api):
    response = api.get("/schema")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    # Every inline script of the page is allowed by its hash (CSP Level 2: sha256 of its text).
    for script in re.findall(r"<script[^>]*>(.*?)</script>", response.text, flags=re.S):
        if script:
            digest = hashlib.sha256(script.encode()).digest()
            import base64

            assert f"'sha256-{base64.b64encode(digest).decode()}'" in csp


def test_a_header_only_csv_is_refused_and_takes_no_source_slot(api):
    """A 201 that took one of the 20 source slots, whose DELETE was then a 404."""
    response = api.post(
        "/v1/results/published/empty-table", content=b"model,top1\n", headers={"content-type": "text/csv"}
    )
    assert response.status_code == 422, response.text
    assert "no rows" in response.json()["detail"]
    sources = {r["source"] for r in api.get("/v1/results/published").json()}
    assert "empty-table" not in sources


LOOKALIKES = ["TIMM-RESULTS-2026-08", "timm-results-2026-08.", "Pretrainedmodels-Ports-"]


@pytest.mark.parametrize("source", LOOKALIKES)
def test_a_lookalike_of_a_shipped_source_is_refused(api, source):
    body = b"model,top1\nresnet18,1.0\n"
    response = api.post(f"/v1/results/published/{source}", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 422, response.text
    assert "shipped" in response.json()["detail"]
    assert all(r["top1"] != 1.0 for r in api.get("/v1/results/published?model=resnet18").json())


def test_an_oversized_field_is_reported_on_its_line(api):
    body = b"model,top1\n" + b"a" * (200 * 1024) + b",70\n"
    response = api.post("/v1/results/published/big-field", content=body, headers={"content-type": "text/csv"})
    assert response.status_code == 422, response.text
    assert "line 2" in response.json()["detail"], response.json()["detail"]


def test_the_json_of_a_refusal_is_still_json(api):
    """The cut keeps the body valid JSON (it cuts inside a string, never across one)."""
    response = api.post("/v1/profiles", json={"model": "resnet18", "precision": "\"'" * 20_000})
    assert response.status_code == 422
    json.loads(response.text)


def test_cutting_a_hostile_value_takes_no_time(api):
    """Quotes inside a long value made the cut's first pattern backtrack: 60 KB of "'x" took 20 s
    of the API's CPU (found while writing the cut; the bound is 4 times under that)."""
    import time

    started = time.monotonic()
    response = api.post("/v1/profiles", json={"model": "resnet18", "precision": "'x" * 30_000})
    assert response.status_code == 422 and len(response.content) < 3000
    assert time.monotonic() - started < 5
