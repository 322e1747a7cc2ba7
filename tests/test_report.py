"""The report page in real headless Chromium (Debian's, driven by Playwright) against the running
service: it loads with no console errors and no outside requests, shows the figure, sorts, filters,
shows a model on hover, and its form profiles a model and shows it arriving."""

from __future__ import annotations

import os
import re
import shutil

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    reason = "Chromium is not installed (make test installs Debian's chromium where it can)"
    if os.environ.get("CI"):
        pytest.fail(reason + ": CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-sync",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service):
    page = browser.new_page()
    page.errors = []
    page.outside = []
    page.on("console", lambda msg: page.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on(
        "request",
        lambda req: (
            page.outside.append(req.url)
            if not req.url.startswith(service.base_url) and not req.url.startswith("data:")
            else None
        ),
    )
    yield page
    page.close()


def test_report_profiles_a_model_from_its_form_and_shows_it(page, service, client):
    # One profile there already, so the figure has a point before the form is used.
    first = client.post(
        "/v1/profiles", json={"model": "resnet18", "batch_sizes": [1], "runs": 3, "repeats": 1}
    ).json()
    assert wait_for(client, first["id"])["status"] == "succeeded"

    page.goto(service.base_url + "/")
    page.wait_for_selector("#models tbody tr")
    assert page.title() == "dnnprof report"
    assert page.locator("#chart circle").count() >= 1  # top-1 vs images/s, resnet18 among them

    page.fill("#model", "mobilenet_v3_small")
    page.fill("#batch-sizes", "1,2")
    page.click("button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#job-status').dataset.state === 'succeeded'", timeout=240_000
    )
    assert "tv:mobilenet_v3_small on cpu: succeeded" in page.inner_text("#job-status")
    page.wait_for_selector("#models tbody tr.new")
    assert "tv:mobilenet_v3_small" in page.inner_text("#models tbody tr.new")

    # Hover a point: the tooltip names the model and its figures.
    page.hover("#chart circle[data-model='tv:mobilenet_v3_small']")
    tip = page.inner_text("#tooltip")
    assert "tv:mobilenet_v3_small" in tip and "images/s" in tip and "top-1" in tip

    # Sort by parameters, both ways.
    page.click("#models th[data-key=params]")
    ascending = [float(v) for v in page.locator("#models tbody tr td:nth-child(4)").all_inner_texts()]
    page.click("#models th[data-key=params]")
    descending = [float(v) for v in page.locator("#models tbody tr td:nth-child(4)").all_inner_texts()]
    assert (
        len(ascending) >= 2
        and ascending == sorted(ascending)
        and descending == sorted(ascending, reverse=True)
    )
    assert page.get_attribute("#models th[data-key=params]", "class") == "sorted-desc"

    # Filter by device and batch size; switch figures.
    page.select_option("#device", "cuda")
    page.wait_for_selector("#no-data")
    assert page.locator("#models tbody tr").count() == 0
    page.select_option("#device", "cpu")
    page.select_option("#batch", "2")
    page.select_option("#figure", "memory")
    # Three loads were started; only the newest draws, and the chart says what it shows.
    page.wait_for_selector("#chart[data-figure=memory][data-batch='2'][data-device=cpu] circle")
    assert page.get_attribute("#png", "href").startswith("/v1/figures/memory.png")

    assert page.errors == []

    # An unknown model is refused with the suggestions (Chromium logs the API's 404, nothing else).
    page.fill("#model", "resnet19")
    page.click("button[type=submit]")
    page.wait_for_function("document.querySelector('#job-status').dataset.state === 'error'")
    assert "resnet18" in page.inner_text("#job-status")
    assert page.errors == ["Failed to load resource: the server responded with a status of 404 (Not Found)"]
    assert page.outside == []  # every asset from the service itself


def test_figures_render_as_png_and_svg_holding_the_stored_models(client):
    body = {"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1}
    assert wait_for(client, client.post("/v1/profiles", json=body).json()["id"])["status"] == "succeeded"
    rows = client.get("/v1/analysis/models", params={"device": "cpu"}).json()
    labels = {r["paper_name"] or r["model"].split(":", 1)[1] for r in rows if r["top1"] is not None}
    assert "SqueezeNet-v1.1" in labels
    for figure in ("ball", "memory"):
        svg = client.get(f"/v1/figures/{figure}.svg", params={"device": "cpu"})
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
        drawn = set(re.findall(r"<text[^>]*>([^<]+)</text>", svg.text))
        assert labels <= drawn, labels - drawn  # every stored model is labelled in the figure
    empty = client.get("/v1/figures/ball.svg", params={"device": "cuda"}).text  # none stored on cuda
    assert "no profiles with accuracy and FLOPs yet" in empty and "SqueezeNet-v1.1" not in empty
    png = client.get("/v1/figures/throughput.png", params={"device": "cpu"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.content != client.get("/v1/figures/throughput.png", params={"device": "cuda"}).content
    assert client.get("/v1/figures/pie.png").status_code == 404
