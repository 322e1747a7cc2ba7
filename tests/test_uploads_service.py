"""An uploaded ONNX export of resnet18 profiled end to end (issue 42): the real `dnnprof serve`
(embedded Redis, a CPU worker, the API over HTTP), in ONNX Runtime and OpenVINO, beside the
catalogue's resnet18 in Table 1 and the metrics."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.helpers import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet18_onnx(tmp_path_factory) -> bytes:
    """torchvision's resnet18 with random weights, exported as the worker exports (dynamo, dynamic
    batch, opset 18, no external data), unoptimised: the optimiser folds BatchNormalization into
    the convolutions, another set of parameters."""
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    path = tmp_path_factory.mktemp("upload") / "resnet18.onnx"
    torch.onnx.export(
        torchvision.models.resnet18().eval(),
        (torch.randn(2, 3, 224, 224),),
        str(path),
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
        opset_version=18,
        external_data=False,
        optimize=False,
    )
    return path.read_bytes()


def test_an_uploaded_resnet18_profiles_in_both_onnx_runtimes_beside_the_catalogues(client, resnet18_onnx):
    from torchvision.models import ResNet18_Weights

    meta = ResNet18_Weights.IMAGENET1K_V1.meta
    response = client.post(
        "/v1/models",
        params={"name": "myresnet"},
        content=resnet18_onnx,
        headers={"content-type": "application/onnx"},
    )
    assert response.status_code in (200, 201), response.text
    entry = response.json()
    sha = hashlib.sha256(resnet18_onnx).hexdigest()
    assert entry["sha256"] == sha and entry["params"] == meta["num_params"]
    assert entry["flops"] / 2e9 == pytest.approx(meta["_ops"], rel=0.005)  # torchvision's GMACs

    for runtime in ("onnxruntime", "openvino"):
        body = {
            "model": "upload:myresnet",
            "runtime": runtime,
            "batch_sizes": [1, 2],
            "runs": 3,
            "repeats": 1,
        }
        job = client.post("/v1/profiles", json=body)
        assert job.status_code in (200, 202), job.text
        done = wait_for(client, job.json()["id"])
        assert done["status"] == "succeeded", done.get("error")
        result = done["result"]
        assert result["params"] == meta["num_params"] and result["flops"] == entry["flops"]
        assert result["param_file_bytes_fp32"] == len(resnet18_onnx)
        assert [b["status"] for b in result["batches"]] == ["ok", "ok"]
        assert result["runtime"]["name"] == runtime and result["runtime"]["outputs"]["outputs_match"]

    model = f"upload:myresnet.{sha[:12]}"
    table = client.get("/v1/analysis/table1", params={"device": "cpu", "runtime": "onnxruntime"}).json()
    assert model in {row["model"] for row in table}
    stored = client.get("/v1/profiles", params={"model": "upload:myresnet"}).json()
    assert {p["settings"]["runtime"] for p in stored} >= {"onnxruntime", "openvino"}
    assert f'model="{model}"' in client.get("/metrics").text


def test_the_cli_uploads_a_file_and_profiles_it(service, tmp_path):
    from tests import uploads_helpers as files
    from tests.helpers import dnnprof_env, run_dnnprof

    env = dnnprof_env(DNNPROF_URL=service.base_url)
    tiny, pickled = tmp_path / "tiny.onnx", tmp_path / "model.pt"
    tiny.write_bytes(files.classifier_bytes(classes=7))
    pickled.write_bytes(files.pickled())
    done = run_dnnprof("upload", str(tiny), "--name", "tiny-cli", env=env)
    assert done.returncode == 0, done.stderr
    assert "upload:tiny-cli" in done.stdout and "opset 18" in done.stdout
    refused = run_dnnprof("upload", str(pickled), "--name", "evil", env=env)
    assert refused.returncode == 1 and "415" in refused.stderr and "pickle" in refused.stderr
    missing = run_dnnprof("upload", str(tmp_path / "nothing.onnx"), "--name", "x", env=env)
    assert missing.returncode == 2 and "is not a file" in missing.stderr
    settings = ("--runtime", "onnxruntime", "--batch-sizes", "1", "--runs", "3", "--repeats", "1", "--json")
    profiled = run_dnnprof("profile", "upload:tiny-cli", *settings, "--wait", env=env)
    assert profiled.returncode == 0, profiled.stderr
    record = json.loads(profiled.stdout)
    # tests/uploads_helpers.classifier at 7 classes, by hand: 4·3·3·3 + 4 + 7·4 + 7 parameters.
    assert record["status"] == "succeeded" and record["result"]["params"] == 147


def test_a_second_worker_with_its_own_data_directory_profiles_an_upload(tmp_path):
    """No shared files: `dnnprof serve` (its worker cpu/alpha, its data directory) takes the upload;
    a second `dnnprof worker` (cpu/beta, another data directory) fetches the file from Redis by its
    hash, caches it in its own directory and profiles it."""
    import os
    import signal
    import subprocess
    import sys

    from tests import uploads_helpers as files
    from tests.helpers import ROOT, free_port, start_service, until

    service = start_service(tmp_path / "serve", env={"DNNPROF_DEVICE_TARGET": "cpu/alpha"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("DNNPROF_")}
    beta_dir = tmp_path / "beta"
    beta_dir.mkdir()
    env.update(
        DNNPROF_REDIS_URL=service.redis_url(),
        DNNPROF_DATA_DIR=str(beta_dir),
        DNNPROF_DEVICE_TARGET="cpu/beta",
        DNNPROF_WORKER_METRICS_PORT=str(free_port()),
    )
    with open(tmp_path / "beta.log", "wb") as log:
        beta = subprocess.Popen(
            [sys.executable, "-m", "dnnprof.cli", "worker", "--device", "cpu"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            with service.client() as client:

                def beta_live() -> bool:
                    listed = {d["target"]: d for d in client.get("/v1/devices").json()}
                    return listed.get("cpu/beta", {}).get("status") == "live"

                until(beta_live, ceiling_s=900, what="the second worker live")
                body = files.classifier_bytes(classes=3)
                sha = hashlib.sha256(body).hexdigest()
                uploaded = client.post(
                    "/v1/models",
                    params={"name": "beta"},
                    content=body,
                    headers={"content-type": "application/onnx"},
                )
                assert uploaded.status_code == 201, uploaded.text
                asked = {"model": "upload:beta", "runtime": "onnxruntime", "device": "cpu/beta"}
                job = client.post("/v1/profiles", json={**asked, "batch_sizes": [1], "runs": 2, "repeats": 1})
                done = wait_for(client, job.json()["id"])
                assert done["status"] == "succeeded", done.get("error")
                assert done["result"]["fingerprint"]["device_target"] == "cpu/beta"
            assert (beta_dir / "uploads" / f"{sha}.onnx").read_bytes() == body
            assert not (tmp_path / "serve" / "uploads").exists()  # the first never had it on disk
        finally:
            if beta.poll() is None:
                os.killpg(beta.pid, signal.SIGKILL)
                beta.wait()
            service.stop()
