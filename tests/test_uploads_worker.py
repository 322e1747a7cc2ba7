"""An uploaded ONNX file on the worker's side (issue 42): fetched from the store by its hash,
cached by hash and verified, measured in ONNX Runtime and OpenVINO as uploaded, each checked
against ONNX Runtime's CPU output of the same file, its figures counted from the graph."""

from __future__ import annotations

import hashlib

import pytest

from dnnprof.contract import ModelInfo, ProfileSettings
from dnnprof.embedded import EmbeddedRedis
from dnnprof.store import ProfileStore
from tests import uploads_helpers as files
from workers.engine.scenario import ScenarioConfig, run_profile
from workers.engine.timing import WarmupPolicy
from workers.engine.uploaded import UploadMissingError, cached_upload, load_upload
from workers.runtime_support import available_runtimes

CONFIG = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_seconds=0.05), min_timed_s=0.05)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield ProfileStore.from_url(server.start())
    server.stop()


def stored(store: ProfileStore, body: bytes) -> str:
    sha = hashlib.sha256(body).hexdigest()
    store.put_blob(sha, body)
    return sha


def test_the_file_is_fetched_once_cached_by_hash_and_fetched_again_when_tampered(store, tmp_path):
    body = files.classifier_bytes()
    sha = stored(store, body)
    path = cached_upload(store, sha, tmp_path)
    assert path == tmp_path / "uploads" / f"{sha}.onnx" and path.read_bytes() == body
    path.write_bytes(b"tampered")  # the cache is a folder on disk: its hash is checked each time
    assert cached_upload(store, sha, tmp_path).read_bytes() == body
    with pytest.raises(UploadMissingError, match="not in the store"):
        cached_upload(store, "0" * 64, tmp_path)
    with pytest.raises(UploadMissingError, match="not a sha256"):
        cached_upload(store, "../../etc/passwd", tmp_path)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_an_upload_is_measured_as_uploaded_in_each_onnx_runtime(store, tmp_path, runtime):
    if runtime not in available_runtimes("cpu"):
        pytest.skip(f"the {runtime} runtime is not installed here")
    body = files.classifier_bytes()
    sha = stored(store, body)
    info = ModelInfo(
        name="upload:tiny", source="upload", architecture="tiny", input_size=8, num_classes=10, sha256=sha
    )
    model = load_upload(store, info, tmp_path)
    settings = ProfileSettings(
        model="upload:tiny." + sha[:12],
        device="cpu",
        batch_sizes=(1, 2),
        runs=3,
        precision="fp32",
        input_size=8,
        runtime=runtime,
    )
    result = run_profile(info, settings, CONFIG, model=model)
    # tests/uploads_helpers.classifier, by hand: 162 parameters, 13,904 FLOPs per image.
    assert result.params == 162 and result.flops == 13_904
    assert result.param_file_bytes_fp32 == len(body)
    assert [b.status for b in result.batches] == ["ok", "ok"]
    report = result.runtime
    assert report is not None and report.name == runtime
    assert report.outputs is not None and report.outputs.outputs_match  # against ORT's CPU run of the file


def test_accuracy_of_an_upload_is_its_runtimes_outputs_on_the_validation_set(store, tmp_path):
    """tests/test_accuracy's model of known answers (top-1 50 %, top-5 90 % on its generated set),
    exported to ONNX and uploaded with its preprocessing: accuracy measured on ONNX Runtime's
    outputs of the file, through the same preprocessing as a catalogue model's."""
    if "onnxruntime" not in available_runtimes("cpu"):
        pytest.skip("the onnxruntime runtime is not installed here")
    import torch

    from tests.test_accuracy import CLASSES, EXPECTED_TOP1, EXPECTED_TOP5, KnownAnswers, write_image

    root = tmp_path / "val"
    for k in range(CLASSES):
        (root / f"n{k:08d}").mkdir(parents=True)
        for i in range(2):
            write_image(root / f"n{k:08d}" / f"img{i}.png", k)
    path = tmp_path / "known.onnx"
    torch.onnx.export(
        KnownAnswers().eval(),
        (torch.rand(2, 3, 8, 8),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
        opset_version=18,
        external_data=False,
    )
    sha = stored(store, path.read_bytes())
    info = ModelInfo(
        name="upload:known",
        source="upload",
        architecture="known",
        input_size=8,
        crop_pct=1.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        num_classes=CLASSES,
        sha256=sha,
    )
    settings = ProfileSettings(
        model="upload:known." + sha[:12],
        device="cpu",
        batch_sizes=(1,),
        runs=2,
        precision="fp32",
        input_size=8,
        accuracy=True,
        runtime="onnxruntime",
    )
    config = ScenarioConfig(device_class="cpu", imagenet_val=root, loader_workers=0)
    result = run_profile(info, settings, config, model=load_upload(store, info, tmp_path / "data"))
    assert (result.top1, result.top5, result.accuracy_images) == (EXPECTED_TOP1, EXPECTED_TOP5, 20)
