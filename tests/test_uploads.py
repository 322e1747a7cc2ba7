"""Uploading an ONNX file to profile (issue 42): validation without running it, one refusal per
hostile or unusable file (each built here) with the store unchanged after it, and the entries:
content-addressed by sha256, chunked, names per uploader, caps. The real API (Litestar's test
client over the app ``dnnprof api`` serves) on a real embedded Redis; no worker is needed."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Iterator

import pytest
from litestar.testing import TestClient
from onnx import TensorProto

from dnnprof.config import Settings
from dnnprof.embedded import EmbeddedRedis
from dnnprof.onnx_check import Limits, inspect_onnx
from dnnprof.store import ProfileStore
from dnnprof.store.uploads import CHUNK_BYTES
from service.app import create_app
from tests import uploads_helpers as files
from tests.helpers import until

ONNX = {"content-type": "application/onnx"}
#: A 1 MB cap: the files here are kilobytes, one test sends a larger one.
SETTINGS = Settings(max_upload_mb=1, max_uploads_per_client=3, rate_limit_per_minute=0)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server.start()
    server.stop()


@pytest.fixture
def store(redis_url):
    store = ProfileStore.from_url(redis_url)
    store.redis.flushall()
    return store


@contextlib.contextmanager
def api(redis_url: str, **changes) -> Iterator[TestClient]:
    """The app, once it has indexed the store at its start (a write of its own, in a thread)."""
    settings = dataclasses.replace(SETTINGS, redis_url=redis_url, **changes)
    with TestClient(create_app(settings)) as client:
        probe = ProfileStore.from_url(redis_url).redis
        until(
            lambda: probe.exists("dnnprof:idx:version") and not probe.exists("dnnprof:lock:reindex"),
            what="the API indexing the store",
        )
        yield client


@pytest.fixture
def client(store, redis_url):
    with api(redis_url) as client:
        yield client


def snapshot(store: ProfileStore) -> dict[bytes, bytes]:
    """Every key and its serialised value (DUMP), so that any change shows."""
    return {key: store.redis.dump(key) for key in store.redis.keys("*")}


def upload(client, body: bytes, name: str = "mynet", headers=ONNX, params_extra=None):
    params = {"name": name, **(params_extra or {})}
    return client.post("/v1/models", params=params, content=body, headers=headers)


REFUSALS = [
    (files.pickled(), 415, "pickle"),
    (files.zip_archive(), 415, "zip archive"),
    (files.truncated(), 415, "does not parse as an ONNX ModelProto"),
    (b"\x00" * 64 + b"not onnx at all", 415, "ONNX"),
    (files.external_data(), 422, "'../../etc/passwd'"),
    (files.many_nodes(10_000), 422, "10000 nodes, more than the 8000"),
    (files.checker_fails(), 422, "onnx.checker refuses the model"),
    (files.custom_domain(), 422, "com.example.evil::Secret"),
    (files.two_inputs(), 422, "2 inputs"),
    (files.one_input(TensorProto.FLOAT, ["batch", 3, 8]), 422, "rank-3 FLOAT"),
    (files.one_input(TensorProto.INT64, ["batch", 3, 8, 8]), 422, "rank-4 INT64"),
    (files.one_input(TensorProto.FLOAT, ["batch", 3, "h", "w"]), 422, "must be fixed numbers"),
    (files.classifier_bytes(weights=300_000), 422, "over the upload cap of 1 MB"),  # 1.2 MB
]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    REFUSALS,
    ids=[
        "pickle",
        "zip-pt2",
        "truncated-protobuf",
        "not-protobuf",
        "external-data-passwd",
        "10000-nodes",
        "checker",
        "custom-domain",
        "two-inputs",
        "rank-3",
        "int-input",
        "symbolic-image-size",
        "over-size-cap",
    ],
)
def test_each_refusal_says_why_and_stores_nothing(client, store, body, status, says):
    before = snapshot(store)
    response = upload(client, body)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]
    assert snapshot(store) == before


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", None])
def test_a_body_sent_as_another_type_is_a_415_naming_the_accepted_ones(client, store, content_type):
    before = snapshot(store)
    headers = {"content-type": content_type} if content_type else {}
    response = upload(client, files.classifier_bytes(), headers=headers)
    assert response.status_code == 415, response.text
    assert "application/onnx or application/octet-stream" in response.json()["detail"]
    assert snapshot(store) == before


def test_a_bad_name_is_a_422_and_stores_nothing(client, store):
    before = snapshot(store)
    for name in ("../etc", "a b", "x" * 65, "my.net"):
        response = upload(client, files.classifier_bytes(), name=name)
        assert response.status_code == 422, (name, response.text)
    assert snapshot(store) == before


def test_the_classifier_is_summarised_from_its_graph(client, store):
    body = files.classifier_bytes()
    response = upload(client, body, headers={"content-type": "application/octet-stream"})
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/v1/models/upload:mynet"
    entry = response.json()
    assert entry["name"] == "upload:mynet" and entry["source"] == "upload"
    assert entry["sha256"] == hashlib.sha256(body).hexdigest() and entry["size_bytes"] == len(body)
    assert entry["input"] == {"name": "x", "shape": ["batch", 3, 8, 8], "type": "FLOAT"}
    assert entry["num_classes"] == 10 and entry["opset"] == 18 and entry["input_size"] == 8
    # By hand (tests/uploads_helpers.classifier): 4·3·3·3 + 4 + 10·4 + 10 parameters, and
    # 2 × (256 outputs × 27 + 10 × 4) FLOPs per image.
    assert entry["params"] == 162
    assert entry["flops"] == 13_904 and entry["flops_note"] is None
    assert entry["runtimes"] == ["onnxruntime", "openvino"]
    assert client.get("/v1/models/upload:mynet").json() == entry
    # As its profiles name it: the name and its file's hash.
    assert client.get(f"/v1/models/upload:mynet.{entry['sha256'][:12]}").json() == entry
    assert client.get("/v1/models/upload:mynet.000000000000").status_code == 404
    listed = client.get("/v1/models", params={"source": "upload"}).json()
    assert [e["name"] for e in listed] == ["upload:mynet"]


def test_the_same_bytes_are_one_file_and_come_back_whole(client, store, monkeypatch):
    """Content-addressed: two names, one stored file; chunked, read back byte for byte."""
    monkeypatch.setattr("dnnprof.store.uploads.CHUNK_BYTES", 1000)  # several chunks from a small file
    body = files.classifier_bytes(weights=2000)  # ~8.7 kB
    assert upload(client, body, name="a").status_code == 201
    assert upload(client, body, name="b").status_code == 201
    again = upload(client, body, name="a")
    assert again.status_code == 200  # the same client, name and file: the entry as it is
    sha = hashlib.sha256(body).hexdigest()
    assert store.blob_sizes() == {sha: len(body)}
    assert store.redis.hlen(f"dnnprof:blob:{sha}") == -(-len(body) // 1000)
    assert b"".join(store.blob_chunks(sha)) == body
    assert CHUNK_BYTES < 512 * 1024 * 1024
    # The file goes with its last name.
    assert client.delete("/v1/models/upload:a").status_code == 200
    assert store.has_blob(sha)
    assert client.delete("/v1/models/upload:b").status_code == 200
    assert not store.has_blob(sha) and store.redis.keys("dnnprof:blob*") == []
    assert client.get("/v1/models/upload:b").status_code == 404


def test_names_belong_to_their_uploader_where_keys_are_set(store, redis_url):
    keys = frozenset({"alice-key", "bob-key"})
    alice, bob = {**ONNX, "x-api-key": "alice-key"}, {**ONNX, "x-api-key": "bob-key"}
    with api(redis_url, api_keys=keys) as client:
        assert upload(client, files.classifier_bytes()).status_code == 401  # writes need a key
        assert upload(client, files.classifier_bytes(), headers=alice).status_code == 201
        taken = upload(client, files.classifier_bytes(classes=5), headers=bob)
        assert taken.status_code == 409 and "another client's" in taken.json()["detail"]
        mine = upload(client, files.classifier_bytes(classes=5), headers=alice)
        assert mine.status_code == 409 and "delete it first" in mine.json()["detail"]
        assert client.delete("/v1/models/upload:mynet", headers={"x-api-key": "bob-key"}).status_code == 403
        assert client.get("/v1/models/upload:mynet").status_code == 200
        assert client.delete("/v1/models/upload:mynet", headers={"x-api-key": "alice-key"}).status_code == 200


def test_caps_per_client_and_in_total_say_so(store, redis_url):
    with api(redis_url) as client:
        for i in range(3):
            assert upload(client, files.classifier_bytes(classes=10 + i), name=f"n{i}").status_code == 201
        before = snapshot(store)
        count = upload(client, files.classifier_bytes(classes=20), name="n3")
        assert count.status_code == 429 and "DNNPROF_MAX_UPLOADS_PER_CLIENT" in count.json()["detail"]
        assert snapshot(store) == before
    store.redis.flushall()
    small = len(files.classifier_bytes(weights=200_000))  # ~0.8 MB each
    with api(redis_url, max_upload_client_mb=1) as client:
        assert upload(client, files.classifier_bytes(weights=200_000), name="a").status_code == 201
        before = snapshot(store)
        over = upload(client, files.classifier_bytes(weights=200_001), name="b")
        assert over.status_code == 429 and "DNNPROF_MAX_UPLOAD_CLIENT_MB" in over.json()["detail"]
        assert snapshot(store) == before
    with api(redis_url, max_uploads_total_mb=1) as client:
        before = snapshot(store)
        full = upload(client, files.classifier_bytes(weights=200_002), name="c")
        assert full.status_code == 507 and "DNNPROF_MAX_UPLOADS_TOTAL_MB" in full.json()["detail"]
        assert snapshot(store) == before
    assert small < 1024 * 1024


def test_resnet18_exported_from_torchvision_counts_as_the_catalogue_does(tmp_path):
    """torchvision's resnet18 (random weights) through torch.onnx.export, as the worker exports
    (dynamo, dynamic batch, opset 18, no external data), but unoptimised: the optimiser folds each
    BatchNormalization into its convolution, another set of parameters (11,679,912)."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    from torch.utils.flop_counter import FlopCounterMode

    model = torchvision.models.resnet18().eval()
    path = tmp_path / "resnet18.onnx"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        model,
        (torch.randn(2, 3, 224, 224),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        opset_version=18,
        external_data=False,
        optimize=False,
    )
    summary = inspect_onnx(path.read_bytes(), Limits(max_bytes=1 << 30, max_nodes=8000))
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 224, 224))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    assert summary.params == weights.meta["num_params"] == 11_689_512
    assert summary.flops == pytest.approx(counter.get_total_flops(), rel=0.005)
    assert summary.flops / 2e9 == pytest.approx(weights.meta["_ops"], rel=0.005)  # torchvision's GMACs
    assert summary.flops_note is None and summary.num_classes == 1000
    assert summary.input.shape == ["batch", 3, 224, 224]


def test_an_oversized_body_without_a_length_is_refused_as_it_streams(client, store):
    """No Content-Length (chunked): the cap is applied to what has arrived, not to a declaration."""
    before = snapshot(store)
    body = files.classifier_bytes(weights=300_000)  # 1.2 MB against the 1 MB cap

    def chunks():
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024]

    response = upload(client, chunks())
    assert response.status_code == 422 and "over the upload cap of 1 MB" in response.json()["detail"]
    assert snapshot(store) == before


def test_an_upload_is_profiled_only_in_the_runtimes_that_take_an_onnx_file(client, store):
    body = files.classifier_bytes()
    assert upload(client, body).status_code == 201
    for asked, field, says in (
        ({"runtime": "eager"}, "runtime", "it can be profiled in onnxruntime, openvino"),
        ({"runtime": "compile"}, "runtime", "it can be profiled in onnxruntime, openvino"),
        ({"runtime": "onnxruntime", "accuracy": True}, "accuracy", "ImageNet-1k"),  # a 10-class head
        ({"runtime": "onnxruntime", "input_size": 224}, "input_size", "takes 8×8 images only"),
    ):
        before = snapshot(store)
        response = client.post("/v1/profiles", json={"model": "upload:mynet", **asked})
        assert response.status_code == 422, response.text
        error = response.json()["errors"][0]
        assert error["field"] == field and says in error["message"]
        assert snapshot(store) == before
    job = client.post(
        "/v1/profiles", json={"model": "upload:mynet", "runtime": "onnxruntime", "batch_sizes": [1]}
    )
    assert job.status_code == 202, job.text
    profile = job.json()["profile"]
    sha = hashlib.sha256(body).hexdigest()
    # Stored under the name and its file's hash, as a timm tag names its weights.
    assert profile["settings"]["model"] == f"upload:mynet.{sha[:12]}"
    assert profile["model"]["sha256"] == sha and profile["model"]["published_params"] == 162
    unknown = client.post("/v1/profiles", json={"model": "upload:nosuch", "runtime": "onnxruntime"})
    assert unknown.status_code == 404 and unknown.json()["suggestions"] == ["upload:mynet"]


def test_the_upload_caps_are_read_from_the_environment(monkeypatch):
    """The README's configuration table: the five DNNPROF_*UPLOAD* variables."""
    from dnnprof.config import SettingsError

    values = {
        "DNNPROF_MAX_UPLOAD_MB": "7",
        "DNNPROF_MAX_UPLOAD_NODES": "100",
        "DNNPROF_MAX_UPLOADS_PER_CLIENT": "2",
        "DNNPROF_MAX_UPLOAD_CLIENT_MB": "9",
        "DNNPROF_MAX_UPLOADS_TOTAL_MB": "11",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env()
    assert (s.max_upload_mb, s.max_upload_nodes, s.max_uploads_per_client) == (7, 100, 2)
    assert (s.max_upload_client_mb, s.max_uploads_total_mb) == (9, 11)
    monkeypatch.setenv("DNNPROF_MAX_UPLOAD_MB", "lots")
    with pytest.raises(SettingsError, match="DNNPROF_MAX_UPLOAD_MB"):
        Settings.from_env()


def test_the_openapi_document_says_the_upload_body_is_the_file(redis_url):
    schema = create_app(dataclasses.replace(SETTINGS, redis_url=redis_url)).openapi_schema.to_schema()
    upload_op = schema["paths"]["/v1/models"]["post"]
    # octet-stream: a type every client (and Schemathesis, test_abuse) can send; onnx is named too.
    body = upload_op["requestBody"]
    assert "application/octet-stream" in body["content"] and "application/onnx" in body["description"]
    assert {"201", "409", "415", "422", "429", "507"} <= set(upload_op["responses"])
    assert "delete" in schema["paths"]["/v1/models/{name}"]


def test_an_api_process_receives_two_uploads_at_once_and_asks_a_third_to_retry():
    """Each upload may hold a few times the size cap while it is parsed: their number bounds the
    API's memory, whatever the clients send at once."""
    from dnnprof.upload_contract import UploadRefused
    from service.controllers.uploads import MAX_CONCURRENT_UPLOADS, one_of_the_uploads

    with contextlib.ExitStack() as held:
        for _ in range(MAX_CONCURRENT_UPLOADS):
            held.enter_context(one_of_the_uploads())
        with pytest.raises(UploadRefused) as third, one_of_the_uploads():
            pass
        assert third.value.status == 429 and "retry" in third.value.detail
    with one_of_the_uploads():  # places are given back
        pass


def test_an_upload_is_run_at_its_own_opset(client, store):
    assert upload(client, files.classifier_bytes()).status_code == 201
    asked = {"model": "upload:mynet", "runtime": "openvino", "runtime_options": {"opset": 17}}
    response = client.post("/v1/profiles", json=asked)
    assert response.status_code == 422, response.text
    error = response.json()["errors"][0]
    assert error["field"] == "runtime_options" and "its own opset, 18" in error["message"]


def test_attention_counts_as_torchs_counter_counts_sdpa():
    """By hand: Q·Kᵀ and the weights times V, 2 × 3 heads × 8 × 8 positions × 8 features each,
    6,144 FLOPs; torch.utils.flop_counter's formula for scaled_dot_product_attention agrees."""
    torch = pytest.importorskip("torch")
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    summary = inspect_onnx(files.attention(), Limits(max_bytes=1 << 20, max_nodes=10))
    q = torch.randn(1, 3, 8, 8)
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert summary.flops == counter.get_total_flops() == 6144 and summary.flops_note is None


PREPROCESSING = {
    "mean": "0.485,0.456,0.406",
    "std": "0.229,0.224,0.225",
    "crop_pct": "0.875",
    "interpolation": "bicubic",
    "input_space": "RGB",
}


def test_accuracy_needs_the_preprocessing_stated_at_upload(client, store):
    """With a 1000-class head and the five preprocessing fields, accuracy is asked as for a
    catalogue model; without them a 422 naming the missing ones."""
    head = files.classifier_bytes(classes=1000)
    partial = {"mean": PREPROCESSING["mean"], "std": PREPROCESSING["std"]}
    assert upload(client, head, name="half", params_extra=partial).status_code == 201
    asked = {"runtime": "onnxruntime", "accuracy": True, "batch_sizes": [1]}
    refused = client.post("/v1/profiles", json={"model": "upload:half", **asked})
    assert refused.status_code == 422, refused.text
    message = refused.json()["errors"][0]["message"]
    assert "crop_pct, interpolation, input_space missing" in message and "input size, 8" in message

    whole = upload(client, head, name="whole", params_extra=PREPROCESSING)
    assert whole.status_code == 201
    entry = whole.json()
    assert entry["preprocessing"] == ["mean", "std", "crop_pct", "interpolation", "input_space"]
    assert entry["mean"] == [0.485, 0.456, 0.406] and entry["interpolation"] == "bicubic"
    assert entry["crop_pct"] == 0.875 and entry["input_space"] == "RGB"
    accepted = client.post("/v1/profiles", json={"model": "upload:whole", **asked})
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["profile"]["model"]["mean"] == [0.485, 0.456, 0.406]
    # The same file and name with other preprocessing is another upload: the name holds this one.
    other = upload(client, head, name="whole", params_extra={**PREPROCESSING, "crop_pct": "1.0"})
    assert other.status_code == 409 and "other preprocessing" in other.json()["detail"]
    assert upload(client, head, name="whole", params_extra=PREPROCESSING).status_code == 200


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("mean", "0.5,0.5", "three comma-separated numbers"),
        ("std", "0.2,0,0.2", "std above 0"),
        ("mean", "nan,0,0", "three comma-separated numbers"),
        ("crop_pct", "1.5", "in (0, 1]"),
        ("interpolation", "lanczos9", "bilinear, bicubic, nearest"),
        ("input_space", "YUV", "RGB or BGR"),
    ],
)
def test_malformed_preprocessing_is_a_422_and_stores_nothing(client, store, field, value, says):
    before = snapshot(store)
    response = upload(client, files.classifier_bytes(), params_extra={field: value})
    assert (
        response.status_code == 422
        and says in response.json()["detail"]
        and field in response.json()["detail"]
    )
    assert snapshot(store) == before


def test_profiles_of_a_deleted_upload_stay_marked_that_their_model_is_gone(client, store):
    body = files.classifier_bytes()
    assert upload(client, body).status_code == 201
    job = client.post(
        "/v1/profiles", json={"model": "upload:mynet", "runtime": "onnxruntime", "batch_sizes": [1]}
    )
    assert job.status_code == 202, job.text
    profile_id = job.json()["id"]
    assert client.delete("/v1/models/upload:mynet").status_code == 200
    kept = client.get(f"/v1/profiles/{profile_id}").json()
    sha = hashlib.sha256(body).hexdigest()
    assert kept["model"]["unavailable"].startswith(f"its uploaded file (sha256 {sha}) was deleted at ")
    assert client.get("/v1/models/upload:mynet").status_code == 404
    assert (
        client.post("/v1/profiles", json={"model": "upload:mynet", "runtime": "onnxruntime"}).status_code
        == 404
    )
