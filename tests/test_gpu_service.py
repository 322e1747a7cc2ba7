"""The whole service with a CUDA worker, where torch sees a GPU (skipped with the reason elsewhere):
the worker's parent never touches CUDA, the measuring process does, and every precision runs."""

from __future__ import annotations

import pytest

from tests.helpers import start_service, wait_for

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpu_service(tmp_path_factory):
    svc = start_service(tmp_path_factory.mktemp("gpu"), device="cuda")
    yield svc
    svc.stop()


@pytest.mark.parametrize(
    ("precision", "channels_last"), [("fp32", False), ("fp16", True), ("bf16", False), ("amp", True)]
)
def test_a_cuda_worker_profiles_in_every_precision(gpu_service, precision, channels_last):
    with gpu_service.client() as client:
        assert client.get("/readyz").json()["workers"]["cuda"] == 1
        body = {
            "model": "ResNet-18",
            "device": "cuda",
            "batch_sizes": [1, 8],
            "precision": precision,
            "channels_last": channels_last,
        }
        job = client.post("/v1/profiles", json=body).json()
        done = wait_for(client, job["id"], timeout=300)
        assert done["status"] == "succeeded", done["error"]
        result = done["result"]
        assert result["timing_method"] == "cuda_events"
        assert result["settings"]["precision"] == precision
        assert result["fingerprint"]["device_class"] == "cuda" and result["fingerprint"]["cuda_version"]
        assert result["param_file_bytes"] <= result["param_file_bytes_fp32"]
        if precision in ("fp16", "bf16"):
            assert result["param_file_bytes"] < 0.6 * result["param_file_bytes_fp32"]
        for batch in result["batches"]:
            assert batch["status"] == "ok"
            assert batch["memory"]["method"] in ("nvml_process", "nvml_device_delta")  # context included
            assert batch["memory"]["total_bytes"] > batch["memory"]["torch_peak_reserved_bytes"]
            assert batch["latency"]["images_per_s"] > 0
