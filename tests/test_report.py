"""The report page in real headless Chromium (Debian's, driven by Playwright) against the running
service: it loads with no console errors and no outside requests, shows the figure, sorts, filters,
shows a model on hover, and its form profiles a model and shows it arriving."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers import until, wait_for

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


def wait_in_page(page, expression: str, ceiling_s: float = 60.0) -> None:
    """Wait until ``expression`` is true in the page. Playwright's wait_for_function evaluates its
    predicate with eval inside the page, which the report's Content-Security-Policy (script-src
    'self', as served) refuses; page.evaluate runs outside the page's policy."""
    until(lambda: page.evaluate(expression), ceiling_s=ceiling_s, what=expression)


SHOTS = Path(os.environ.get("DNNPROF_SCREENSHOTS") or tempfile.mkdtemp(prefix="dnnprof-shots-"))


def shoot(page, name: str, selector: str | None = None) -> None:
    """Screenshots of what a user sees (``DNNPROF_SCREENSHOTS=docs/screenshots`` keeps them)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    (page.locator(selector) if selector else page).screenshot(path=str(SHOTS / f"{name}.png"))


def drawn(page, figure: str) -> None:
    page.click(f"#tabs button[data-figure={figure}]")
    page.wait_for_selector(f"#chart[data-figure={figure}] .scatterlayer .trace")


def labels(page) -> list[str]:
    return page.locator("#chart .scatterlayer .textpoint text").evaluate_all(
        "els => els.map(e => e.textContent)"
    )


def test_report_draws_the_papers_figures_tables_and_profiles_from_its_form(page, service, client):
    # One profile there already (a paper model), so every figure has a mark before the form is used.
    first = client.post(
        "/v1/profiles", json={"model": "SqueezeNet-v1.0", "batch_sizes": [1, 2], "runs": 4, "repeats": 1}
    ).json()
    assert wait_for(client, first["id"])["status"] == "succeeded"

    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(service.base_url + "/")
    page.wait_for_selector("#models tbody tr")
    assert page.title() == "dnnprof report"
    page.select_option("#device", "cpu")
    page.wait_for_selector("#chart[data-figure=throughput][data-device=cpu] .scatterlayer .point")
    assert "SqueezeNet-v1.0" in labels(page)  # every mark labelled with the paper name
    assert page.locator("#chart .legendtext").count() >= 1
    shoot(page, "report")
    # Issue 25: the analyses are viewed in one runtime at a time (eager, the paper's, by default),
    # chosen among the runtimes the live workers advertise.
    offered = sorted(next(d for d in client.get("/v1/devices").json() if d["status"] == "live")["runtimes"])
    page.wait_for_function(f"document.querySelectorAll('#runtime option').length >= {len(offered)}")
    assert sorted(page.eval_on_selector_all("#runtime option", "os => os.map(o => o.value)")) == offered
    assert page.input_value("#runtime") == "eager"
    # The precisions come from the contract (through the API's schema), not a list of the page's.
    from dnnprof.contract import PRECISIONS

    page.wait_for_function(f"document.querySelectorAll('#precision option').length > {len(PRECISIONS)}")
    assert page.eval_on_selector_all("#precision option", "os => os.map(o => o.value)") == ["", *PRECISIONS]

    # Each of the paper's figures draws labelled marks from the stored profiles.
    for figure in ("ball", "density", "memory", "throughput"):
        drawn(page, figure)
        assert "SqueezeNet-v1.0" in labels(page), figure
        shoot(page, f"figure-{figure}", "#chart")
    drawn(page, "ball")
    legend = page.locator("#chart .legendtext").evaluate_all("els => els.map(e => e.textContent)")
    assert any("top-5" in t for t in legend), legend

    # The paper's own Table 1 as a device: 44 labelled models in every figure that has their data.
    page.select_option("#device", "paper/titan-xp")
    page.wait_for_selector("#chart[data-device='paper/titan-xp'] .scatterlayer .point")
    for figure in ("ball", "density", "throughput"):
        drawn(page, figure)
        # Ball: the models whose GMACs are published (torchvision's); the rest everywhere else.
        expected = {"AlexNet", "ResNet-50"} | ({"NASNet-A-Large"} if figure != "ball" else set())
        assert expected <= set(labels(page)), figure
        shoot(page, f"paper-titan-xp-{figure}", "#chart")
    page.select_option("#device", "cpu")
    page.wait_for_selector("#chart[data-device=cpu] .scatterlayer .point")
    drawn(page, "ball")

    # The hover shows the whole row; it goes away when the figure changes.
    page.evaluate("Plotly.Fx.hover('chart', [{curveNumber: 0, pointNumber: 0}])")
    tip = page.locator("#chart .hoverlayer").text_content()
    assert "G-FLOPs" in tip and "top-1" in tip and "batch 1" in tip and "params" in tip
    drawn(page, "throughput")
    assert page.locator("#chart .hoverlayer .hovertext").count() == 0

    # A click on a mark opens the model: its figures with their sources, and its history.
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    # On a busy host a click can land while Plotly is still laying the figure out: click again,
    # a few times, until the panel opens (what a user would do), and no more.
    for _ in range(3):
        box = page.locator("#chart .scatterlayer .point").first.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        with contextlib.suppress(PlaywrightTimeoutError):
            page.wait_for_selector("#model-panel:not([hidden]) #history tbody tr", timeout=20_000)
            break
    page.wait_for_selector("#model-panel:not([hidden]) #history tbody tr", timeout=1_000)
    assert ":" in page.inner_text("#model-title")  # the qualified name of the model clicked
    assert "params" in page.inner_text("#model-facts")

    # Tables 1 and 2 carry every batch size as a column; Table 3's bounds are editable.
    assert page.locator("#table1 thead th").all_inner_texts()[2:] == ["1", "2", "4", "8", "16", "32", "64"]
    assert "/s)" in page.inner_text("#table1 tbody")
    page.fill("#t3-memory", "5000")
    page.dispatch_event("#t3-memory", "change")
    wait_in_page(page, "document.querySelector('#table3 tbody').innerText.includes('5000 MB')")

    # Compare a measured target with the paper's Titan Xp.
    target = client.get(f"/v1/profiles/{first['id']}").json()["result"]["fingerprint"]["device_target"]
    page.select_option("#compare-a", "paper/titan-xp")
    page.select_option("#compare-b", target)
    page.wait_for_selector("#compare tbody tr")
    assert "tv:squeezenet1_0" in page.inner_text("#compare tbody")

    # The form says what is wrong as it is typed, and completes names from the catalogue.
    page.fill("#model", "mobilenet_v3_sm")
    wait_in_page(
        page,
        "[...document.querySelectorAll('#model-names option')].some(o => o.value === 'mobilenet_v3_small')",
    )
    page.fill("#model", "squeezenet1_1")
    page.fill("#batch-sizes", "0,abc")
    assert "'0' is not a whole number" in page.inner_text("#form-error")
    assert page.is_disabled("#profile-form button")
    page.fill("#batch-sizes", "1,2")
    assert page.inner_text("#form-error") == "" and page.is_enabled("#profile-form button")
    page.click("#profile-form button")
    wait_in_page(page, "document.querySelector('#job-status').dataset.state === 'succeeded'", ceiling_s=600)
    page.wait_for_selector("#models tbody tr.new")
    assert page.get_attribute("#models tbody tr.new", "data-model") == "tv:squeezenet1_1"

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

    # A device with nothing stored: an empty figure that says so.
    page.select_option("#device", "jetson")
    page.wait_for_selector("#chart.empty[data-device=jetson]")
    assert page.locator("#models tbody tr").count() == 0
    assert page.errors == []

    # An unknown model is refused with the suggestions (Chromium logs the API's 404, nothing else).
    page.fill("#model", "resnet19")
    page.click("#profile-form button")
    wait_in_page(page, "document.querySelector('#job-status').dataset.state === 'error'")
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
    for figure in ("ball", "density", "memory", "throughput"):  # every figure the README lists
        svg = client.get(f"/v1/figures/{figure}.svg", params={"device": "cpu"})
        assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml"), figure
        assert "SqueezeNet-v1.1" in svg.text or "squeezenet1_1" in svg.text, figure
        png = client.get(f"/v1/figures/{figure}.png", params={"device": "cpu"})
        assert png.status_code == 200 and png.headers["content-type"] == "image/png", figure
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n", figure
    png = client.get("/v1/figures/throughput.png", params={"device": "cpu"})
    assert png.content != client.get("/v1/figures/throughput.png", params={"device": "cuda"}).content
    assert client.get("/v1/figures/pie.png").status_code == 404


def test_api_docs_render_offline_from_the_services_own_assets(page, service):
    """Every request that is not to the service is refused, as in an air-gapped lab."""
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(service.base_url) else route.abort(),
    )
    page.goto(service.base_url + "/schema")
    page.wait_for_selector(".opblock-summary-path")  # Swagger UI drew the operations
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/profiles" in p for p in paths) and any("/v1/analysis/paper" in p for p in paths)
    assert page.outside == [] and page.errors == []
