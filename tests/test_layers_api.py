"""Layer profiles through the API (issue 41): stored apart from the record, read as JSON or CSV
with the tree collapsed to a depth, two runtimes side by side; bad requests are 422s naming the
field. The app runs in process against a real (embedded) Redis."""

from __future__ import annotations

import csv
import io

import msgspec
import pytest
from litestar.testing import TestClient

from dnnprof.config import Settings
from dnnprof.contract import LayerProfile, LayerTime, ModelInfo, OpTypeShare
from dnnprof.embedded import EmbeddedRedis
from dnnprof.store import ProfileStore
from service.app import create_app
from tests.factories import profile

RESNET18 = ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224)


def layer(path: str, type_: str, order: int, ms: float, flops: int, params: int = 0) -> LayerTime:
    return LayerTime(
        path=path, type=type_, order=order, ms_per_image=ms, share=ms / 10, flops=flops, params=params
    )


def layer_profile(runtime: str, conv_ms: float) -> LayerProfile:
    """A resnet-shaped tree whose figures a reader can add by hand: forward 10 ms per image."""
    layers = [
        layer("", "ResNet", 0, 0.1, 0),
        layer("conv1", "Conv2d", 1, 2.0, 1000, 10),
        layer("layer1", "Sequential", 2, 0.0, 0),
        layer("layer1.0", "BasicBlock", 3, 0.4, 0),
        layer("layer1.0.conv1", "Conv2d", 4, conv_ms, 3000, 20),
        layer("layer1.0.conv2", "Conv2d", 5, 3.0, 3000, 20),
        layer("fc", "Linear", 6, 0.5, 500, 5),
    ]
    attributed = sum(x.ms_per_image for x in layers)
    return LayerProfile(
        batch_size=1,
        runtime=runtime,
        source="test",
        note="a separate profiled pass",
        runs=3,
        forward_ms_per_image=10.0,
        attributed_ms_per_image=attributed,
        unattributed_ms_per_image=10.0 - attributed,
        unattributed_nodes=["ReorderOutput"],
        flops=7500,
        layers=layers,
        op_types=[
            OpTypeShare(op_type="convolution", ms_per_image=8, time_share=0.9, flops=7000, flop_share=0.93)
        ],
    )


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    store = ProfileStore.from_url(url)
    store.publish_catalogue([RESNET18], "test")
    with TestClient(
        app=create_app(Settings(redis_url=url, data_dir=tmp_path_factory.mktemp("data")))
    ) as client:
        yield client, store
    server.stop()


def stored(store: ProfileStore, runtime: str, conv_ms: float, layers: bool = True) -> str:
    record = profile("tv:resnet18", device="cpu", cells={1: (10.0, 100.0)}, runtime=runtime)
    record.settings = msgspec.structs.replace(record.settings, layers_batch_sizes=(1,) if layers else ())
    record, _ = store.create_or_get(record, force=True)  # a new record each time, never an equal one
    if layers:
        store.put_part(record.id, layer_profile(runtime, conv_ms))
    return record.id


def test_a_profiles_layers_are_apart_from_it_collapsed_to_a_depth_and_in_csv(app):
    client, store = app
    profile_id = stored(store, "eager", conv_ms=4.0)
    record = client.get(f"/v1/profiles/{profile_id}").json()
    assert "layers" not in record["result"] and record["settings"]["layers_batch_sizes"] == [1]
    full = client.get(f"/v1/profiles/{profile_id}/layers").json()
    assert [x["path"] for x in full["layers"]][:3] == ["", "conv1", "layer1"]
    depth1 = client.get(f"/v1/profiles/{profile_id}/layers", params={"depth": 1}).json()
    by_path = {x["path"]: x for x in depth1["layers"]}
    assert list(by_path) == ["", "conv1", "layer1", "fc"]
    # layer1 = its own 0 + layer1.0's 0.4 + the two convolutions' 4.0 and 3.0, by hand.
    assert by_path["layer1"]["ms_per_image"] == pytest.approx(7.4)
    assert by_path["layer1"]["flops"] == 6000 and by_path["layer1"]["params"] == 40
    assert by_path["layer1"]["type"] == "Sequential" and by_path["layer1"]["share"] == pytest.approx(0.74)
    assert depth1["unattributed_ms_per_image"] == pytest.approx(10.0 - 10.0)
    answer = client.get(f"/v1/profiles/{profile_id}/layers", params={"depth": 1, "format": "csv"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["path"] for r in rows] == ["", "conv1", "layer1", "fc", "(unattributed)"]
    assert rows[-1]["nodes"] == "ReorderOutput"
    assert client.get(f"/v1/profiles/{profile_id}/layers", params={"batch_size": 8}).status_code == 404
    without = stored(store, "eager", conv_ms=4.0, layers=False)
    missing = client.get(f"/v1/profiles/{without}/layers")
    assert missing.status_code == 404 and "layers: true" in missing.json()["detail"]
    assert client.delete(f"/v1/profiles/{profile_id}").status_code == 200
    assert store.layer_profiles(profile_id) == {}


def test_two_runtimes_layers_side_by_side_gains_first(app):
    client, store = app
    stored(store, "eager", conv_ms=4.0)
    stored(store, "onnxruntime", conv_ms=1.0)
    answer = client.get(
        "/v1/analysis/layers", params={"model": "resnet18", "a_runtime": "eager", "b_runtime": "onnxruntime"}
    )
    assert answer.status_code == 200, answer.text
    table = answer.json()
    first = table["layers"][0]
    assert first["path"] == "layer1.0.conv1" and first["ratio"] == pytest.approx(0.25)
    assert first["delta_ms"] == pytest.approx(-3.0)
    none = client.get("/v1/analysis/layers", params={"model": "resnet18", "b_runtime": "openvino"})
    assert none.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"batch_sizes": [1, 2], "layers": True, "layers_batch_sizes": [4]}, "layers_batch_sizes"),
        ({"layers_batch_sizes": [1]}, "layers_batch_sizes"),
        ({"device": "cuda", "layers": True, "runtime": "compile"}, "layers"),  # on the CPU only
        ({"layers": "yes"}, "layers"),
    ],
)
def test_bad_layer_requests_are_a_422_naming_the_field(app, body, field):
    client, _ = app
    answer = client.post("/v1/profiles", json={"model": "resnet18", "device": "cpu", **body})
    assert answer.status_code == 422, answer.text
    assert answer.json()["errors"][0]["field"] == field


def test_dnnprof_show_layers_prints_the_top_layers_collapsed_to_a_depth(app, capsys):
    import argparse

    from dnnprof.client import Client, console, show_layers

    client, store = app
    profile_id = stored(store, "eager", conv_ms=4.0)
    cli = Client()
    cli.http = client  # the in-process app's httpx client, as DNNPROF_URL would reach the service
    args = argparse.Namespace(json=False, depth=1, layers_batch_size=None)
    assert show_layers(cli, profile_id, args, console()) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    # layer1 (7.4 ms) first, then conv1 (2.0), fc (0.5), the model's own (0.1); by hand from the tree.
    assert [r.split("│")[1].strip() for r in rows] == ["layer1", "conv1", "fc", "(model)"]
    assert "74.0%" in rows[0] and "profiled forward 10.000 ms/image" in "\n".join(lines)


@pytest.mark.slow  # the session's service: the embedded default's API, worker and Redis
def test_a_profile_with_layers_through_the_service_in_eager_and_onnxruntime(client):
    """The whole path: the worker's first measuring process profiles the layers after its timed
    cells, the runner stores them apart, the API reads them and compares the two runtimes."""
    from tests.helpers import wait_for

    body = {  # resnet34 (resnet18's module names): test_runtimes counts the session's resnet18 in ORT
        "model": "resnet34",
        "batch_sizes": [1, 2],
        "runs": 3,
        "repeats": 2,
        "input_size": 64,
        "layers": True,
    }
    ids = {
        rt: client.post("/v1/profiles", json={**body, "runtime": rt}).json()["id"]
        for rt in ("eager", "onnxruntime")
    }
    for runtime, profile_id in ids.items():
        record = wait_for(client, profile_id)
        assert record["status"] == "succeeded", record.get("error")
        assert record["settings"]["layers_batch_sizes"] == [1] and "layers" not in record["result"]
        answer = client.get(f"/v1/profiles/{profile_id}/layers", params={"depth": 1}).json()
        assert answer["error"] is None and answer["runtime"] == runtime and answer["batch_size"] == 1
        paths = [x["path"] for x in answer["layers"]]
        assert {"conv1", "layer1", "layer4", "fc"} <= set(paths) and paths.index("conv1") < paths.index("fc")
        assert sum(x.get("flops", 0) for x in answer["layers"]) == record["result"]["flops"]
        assert answer["node_coverage"] >= 0.95
        assert "layers" in record["result"]["phases"]
    table = client.get(
        "/v1/analysis/layers",
        params={"model": "resnet34", "a_runtime": "eager", "b_runtime": "onnxruntime", "depth": 1},
    ).json()
    assert (table["a_profile"], table["b_profile"]) == (ids["eager"], ids["onnxruntime"])
    assert {r["path"] for r in table["layers"]} >= {"conv1", "layer1", "fc"}


def test_the_openapi_document_describes_the_layer_endpoints_and_fields(app):
    client, _ = app
    document = client.get("/schema/openapi.json")
    assert document.status_code == 200, document.text
    spec = document.json()
    assert {"/v1/profiles/{profile_id}/layers", "/v1/analysis/layers"} <= set(spec["paths"])
    request = spec["components"]["schemas"]["ProfileRequest"]["properties"]
    assert {"layers", "layers_batch_sizes"} <= set(request)
