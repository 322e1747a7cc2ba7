"""The service end to end: real `dnnprof serve` (embedded Redis, Celery worker process, Litestar
under uvicorn) over HTTP on loopback."""

from __future__ import annotations

import csv
import hashlib
import io
import time

import numpy
import pytest

from dnnprof.client import Client
from tests.helpers import until, wait_for

pytestmark = pytest.mark.slow


def test_health_and_readiness_report_the_cpu_worker(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["redis"] is True
    assert body["workers"] == {"cuda": 0, "jetson": 0, "cpu": 1}
    assert body["catalogue_models"] > 1000  # every torchvision and timm classifier


def test_the_report_is_served_at_its_alias_too(client):
    root, alias = client.get("/"), client.get("/report")
    assert root.status_code == alias.status_code == 200 and alias.text == root.text
    assert alias.headers["content-type"].startswith("text/html") and "<title>" in alias.text


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/schema/openapi.json").json()
    for path in ("/v1/profiles", "/v1/profiles/{profile_id}", "/v1/models", "/v1/models/{name}", "/readyz"):
        assert path in schema["paths"], path
    props = schema["components"]["schemas"]["ProfileRequest"]["properties"]
    assert {"model", "device", "batch_sizes", "runs", "precision", "input_size", "force"} <= set(props)


def test_a_profile_by_id_is_a_304_while_it_has_not_changed_and_immutable_once_finished(service, client):
    body = {"model": "squeezenet1_1", "batch_sizes": [1], "runs": 3, "repeats": 1, "force": True}
    job = client.post("/v1/profiles", json=body).json()
    first = client.get(f"/v1/profiles/{job['id']}")
    assert first.headers["cache-control"] == "no-cache" and first.headers["etag"].startswith('"')
    done = wait_for(client, job["id"])
    finished = client.get(f"/v1/profiles/{job['id']}")
    assert finished.json() == done and finished.headers["etag"] != first.headers["etag"]
    assert finished.headers["cache-control"] == "max-age=3600, immutable"
    # The ETag is over the exact bytes served (RFC 9110 strong validator): blake2b of the body.
    digest = hashlib.blake2b(finished.content, digest_size=16).hexdigest()
    assert finished.headers["etag"] == f'"{digest}"'
    for sent in (
        finished.headers["etag"],
        f"W/{finished.headers['etag']}",
        f'"other", {finished.headers["etag"]}',
        "*",
    ):
        again = client.get(f"/v1/profiles/{job['id']}", headers={"If-None-Match": sent})
        assert again.status_code == 304 and again.content == b"", sent
        assert again.headers["etag"] == finished.headers["etag"]
    stale = client.get(f"/v1/profiles/{job['id']}", headers={"If-None-Match": first.headers["etag"]})
    assert stale.status_code == 200 and stale.json() == done
    # The CLI's client sends what it saw last: a poll of an unchanged profile costs a 304.
    codes: list[int] = []
    cli = Client(service.base_url)
    cli.http.event_hooks["response"] = [lambda r: codes.append(r.status_code)]
    assert cli.get(job["id"]) == done and cli.get(job["id"]) == done
    assert codes == [200, 304]
    # A finished profile is deleted over HTTP (README: DELETE of a finished one deletes it).
    deleted = client.delete(f"/v1/profiles/{job['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"id": job["id"], "outcome": "deleted"}
    assert client.get(f"/v1/profiles/{job['id']}").status_code == 404
    # Its ETag, remembered for polls, is forgotten by the process that deleted it: no 304.
    polled = client.get(f"/v1/profiles/{job['id']}", headers={"If-None-Match": finished.headers["etag"]})
    assert polled.status_code == 404
    assert client.delete(f"/v1/profiles/{job['id']}").status_code == 404


def test_round_trip_resnet18_profile(client):
    response = client.post("/v1/profiles", json={"model": "resnet18", "batch_sizes": [1, 2]})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert response.headers["location"] == f"/v1/profiles/{accepted['id']}"
    assert accepted["created"] is True and accepted["device"] == "cpu" and accepted["warning"] is None

    done = wait_for(client, accepted["id"])
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["model"]["name"] == "tv:resnet18"
    assert result["params"] == 11_689_512  # torchvision's published num_params
    assert result["flops"] == pytest.approx(2 * 1.814e9, rel=0.005)  # published 1.814 GMACs
    assert result["param_file_bytes_fp32"] >= 4 * 11_689_512
    assert [b["batch_size"] for b in result["batches"]] == [1, 2]
    for batch in result["batches"]:
        assert batch["status"] == "ok"
        lat = batch["latency"]
        # The default: three fresh measuring processes of at least the paper's 10 runs each, and a
        # CI over the three process means.
        assert lat["processes"] == 3 and lat["ci95_basis"] == "process_means"
        assert [p["process"] for p in lat["per_process"]] == [0, 1, 2]
        assert all(p["runs"] >= 10 for p in lat["per_process"])
        assert lat["runs"] == sum(p["runs"] for p in lat["per_process"])
        assert 0 < lat["min_ms"] <= lat["median_ms"] <= lat["max_ms"]
        assert lat["ci95_low_ms"] <= lat["mean_ms"] <= lat["ci95_high_ms"]
        assert batch["memory"]["total_bytes"] > 4 * 11_689_512  # at least the weights
        assert len(batch["memory"]["per_process_bytes"]) == 3
    assert result["fingerprint"]["device_class"] == "cpu"
    assert result["fingerprint"]["torch_version"]
    assert result["processes"] == 3 and result["complete"] is True and result["settings"]["repeats"] == 3
    assert 0 < result["memory_floor_bytes"] < min(b["memory"]["total_bytes"] for b in result["batches"])
    assert "attention counted" in result["flops_method"] and result["flops_note"] is None
    assert 0 < result["timed_s"] < result["wall_s"] < result["job_wall_s"]
    # Issue 29: the three processes were forked from the template (the default), and the result
    # says where the job's time went: every phase of the scenario, the timed passes inside "timed".
    assert result["fingerprint"]["process_start"] == "template"
    phases = result["phases"]
    assert {"start", "build", "static", "first_call", "warm_up", "timed", "other"} <= set(phases)
    assert phases["timed"] >= result["timed_s"]
    assert sum(phases.values()) == pytest.approx(result["job_wall_s"], abs=0.01)  # "other" is the rest
    progress = done["progress"]
    assert (progress["stage"], progress["batches_done"], progress["batches_total"]) == ("done", 6, 6)
    assert done["attempts"] == 1

    # The same request again (batch sizes in another order) is the stored profile: 200, no new job.
    again = client.post("/v1/profiles", json={"model": "ResNet-18", "batch_sizes": [2, 1], "device": "cpu"})
    assert again.status_code == 200
    assert again.json()["id"] == accepted["id"] and again.json()["created"] is False

    listed = client.get("/v1/profiles", params={"model": "resnet18", "device": "cpu"}).json()
    assert accepted["id"] in [p["id"] for p in listed]
    assert client.get("/v1/profiles", params={"model": "resnet18", "device": "cuda"}).json() == []


def test_equal_request_in_flight_is_one_job_and_force_makes_another(client):
    body = {"model": "squeezenet1_1", "batch_sizes": [1], "runs": 3, "repeats": 1}
    first = client.post("/v1/profiles", json=body).json()
    second = client.post("/v1/profiles", json=body)
    assert second.json()["id"] == first["id"] and second.json()["created"] is False
    assert second.status_code in (200, 202)
    forced = client.post("/v1/profiles", json={**body, "force": True}).json()
    assert forced["id"] != first["id"] and forced["created"] is True
    for profile_id in (first["id"], forced["id"]):
        assert wait_for(client, profile_id)["status"] == "succeeded"


def test_unknown_model_is_404_with_close_matches(client):
    response = client.post("/v1/profiles", json={"model": "resnet19"})
    assert response.status_code == 404
    body = response.json()
    assert "resnet19" in body["detail"]
    assert "resnet18" in body["suggestions"]


@pytest.mark.parametrize(
    ("body", "field", "accepted_fragment"),
    [
        ({"model": "resnet18", "batch_sizes": [0]}, "batch_sizes", "1..1024"),
        ({"model": "resnet18", "batch_sizes": [2048]}, "batch_sizes", "1..1024"),
        ({"model": "resnet18", "runs": 0, "repeats": 1}, "runs", "1..1000"),
        ({"model": "resnet18", "runs": 100000, "repeats": 1}, "runs", "1..1000"),
        ({"model": "resnet18", "precision": "fp64"}, "precision", "fp32, fp16, bf16, amp"),
        ({"model": "resnet18", "precision": "fp16", "device": "cpu"}, "precision", "fp16 needs a GPU"),
        ({"model": "resnet18", "repeats": 0}, "repeats", "1..10"),
        ({"model": "resnet18", "repeats": 11}, "repeats", "1..10"),
        ({"model": "resnet18", "device": "tpu"}, "device", "cuda, jetson, cpu"),
        ({"model": "../../etc/passwd"}, "model", "catalogue name"),
        ({"model": "hf-hub:evil/model"}, "model", "catalogue name"),
        ({"model": "resnet18", "weights_url": "http://x/y.pth"}, "weights_url", "fields:"),
        # Issue 40 (6), 44 (5): the unknown-field list and runtime_options name their own keys.
        ({"model": "resnet18", "weights_url": "http://x/y.pth"}, "weights_url", "runtime_options"),
        (
            {"model": "resnet18", "runtime": "onnxruntime", "runtime_options": {"foo": 1}},
            "runtime_options",
            "opset",
        ),
        ({"model": "resnet18", "runtime": "tflite"}, "runtime", "openvino"),
        ({"batch_sizes": [1]}, "model", "catalogue name"),
        ({"model": "vit_base_patch16_224.augreg_in21k", "accuracy": True}, "accuracy", "ImageNet"),
        # The catalogue sweep found it cannot be built here: refused now, not failed minutes later.
        ({"model": "timm:test_vit"}, "model", "catalogue name"),
    ],
)
def test_bad_fields_are_422_naming_the_field_and_what_is_accepted(client, body, field, accepted_fragment):
    before = len(client.get("/v1/profiles", params={"limit": 1000}).json())
    response = client.post("/v1/profiles", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors and errors[0]["field"].startswith(field)
    if body.get("model") == "timm:test_vit":
        assert "a kernel this host lacks" in errors[0]["message"]
    assert accepted_fragment in errors[0]["accepted"]
    assert field in response.json()["detail"]
    assert len(client.get("/v1/profiles", params={"limit": 1000}).json()) == before  # nothing queued


def test_a_request_that_cannot_finish_inside_the_time_limit_is_refused_with_the_estimate(client):
    """Issue 28 (7): it fitted in memory, so it was queued and held the worker for the time limit."""
    body = {
        "model": "resnet18",
        "batch_sizes": list(range(1, 17)),
        "input_size": 1024,
        "runs": 1000,
        "repeats": 10,
    }
    before = len(client.get("/v1/profiles", params={"limit": 1000}).json())
    response = client.post("/v1/profiles", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["errors"]
    # By hand: (1 + ... + 16) x 1000 runs x 10 repeats = 1,360,000 images, each
    # 2 x 1.814 GMACs (torchvision's published figure) x (1024 / 224)² = 75.8 GFLOPs: 1.03e17 FLOPs,
    # 10,311 s even at 10 TFLOP/s, past the default limit of 3,300 s.
    assert error["field"] == "runs"
    assert "1,360,000 images of 75.8 GFLOPs each" in error["message"]
    assert "10,311 s" in error["message"] and "time limit of 3300 s" in error["message"]
    assert len(client.get("/v1/profiles", params={"limit": 1000}).json()) == before
    # A tenth of the runs on a Jetson fits (103 s at its 100 TFLOP/s ceiling): accepted (and only
    # queued: no Jetson worker here).
    fits = client.post("/v1/profiles", json={**body, "runs": 100, "device": "jetson"})
    assert fits.status_code == 202, fits.text
    client.delete(f"/v1/profiles/{fits.json()['id']}")


def test_the_deployed_form_is_the_default_and_keys_apart_only_models_that_have_one(client):
    """No jetson worker here: the jobs stay queued, which is all this needs (their settings)."""

    def post(model: str, **fields) -> dict:
        body = {"model": model, "device": "jetson", "batch_sizes": [1], **fields}
        return client.post("/v1/profiles", json=body).json()

    fused = post("timm:repvgg_a0")
    unfused = post("timm:repvgg_a0", reparameterize=False)
    assert fused["profile"]["settings"]["reparameterize"] is True
    assert unfused["created"] and unfused["profile"]["settings"]["reparameterize"] is False
    plain = post("resnet18")
    same = post("resnet18", reparameterize=False)  # no fused form: the same job either way
    assert plain["profile"]["settings"]["reparameterize"] is False and same["id"] == plain["id"]
    for job in (fused, unfused, plain):
        client.delete(f"/v1/profiles/{job['id']}")


def test_malformed_json_is_a_400(client):
    response = client.post("/v1/profiles", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


def test_models_catalogue_search_and_paper_names(client):
    hits = [m["name"] for m in client.get("/v1/models", params={"q": "resnet18"}).json()]
    assert "tv:resnet18" in hits and "timm:resnet18" in hits
    paper = client.get("/v1/models", params={"paper": "true", "limit": 100}).json()
    assert len(paper) == 44
    assert {m["paper_name"] for m in paper} >= {"ResNet-50", "SE-ResNeXt-50 (32x4d)", "NASNet-A-Mobile"}
    seresnext = client.get("/v1/models/SE-ResNeXt-50 (32x4d)").json()
    assert seresnext["name"] == "timm:legacy_seresnext50_32x4d" and seresnext["input_size"] == 224
    assert client.get("/v1/models/nasnet-a-large").json()["input_size"] == 331
    assert client.get("/v1/models/Inception-v3").json()["input_size"] == 299
    assert client.get("/v1/models/timm:resnet50").json()["source"] == "timm"
    assert client.get("/v1/models/resnet50").json()["source"] == "tv"  # torchvision first
    assert client.get("/v1/models/no-such-net").status_code == 404
    shufflenet = client.get("/v1/models/ShuffleNet").json()
    # Megvii's reference implementation (ShuffleNet-Series, ShuffleNetV1 README): 1.0x, group=3,
    # "1.9M" parameters, as published (rounded to 0.1 M).
    assert round(shufflenet["params"] / 1e6, 1) == 1.9 and shufflenet["params_source"] == "dnnprof-metadata"
    resnet = client.get("/v1/models/resnet18").json()
    assert (resnet["params"], resnet["params_source"]) == (11_689_512, "tv-metadata")
    assert resnet["published_top1"] == 69.758 and resnet["crop_pct"] == 0.875 and resnet["mean"]


def test_job_for_a_class_without_workers_is_accepted_with_a_warning_and_cancellable(client):
    response = client.post("/v1/profiles", json={"model": "alexnet", "device": "jetson", "batch_sizes": [1]})
    assert response.status_code == 202
    body = response.json()
    assert (
        body["workers_serving_device"] == 0
        and "no worker is serving device class 'jetson'" in body["warning"]
    )
    cancel = client.delete(f"/v1/profiles/{body['id']}")
    assert cancel.status_code == 200 and cancel.json()["outcome"] == "cancelled"
    assert client.get(f"/v1/profiles/{body['id']}").json()["status"] == "cancelled"
    assert client.delete(f"/v1/profiles/{body['id']}").json()["outcome"] == "deleted"
    assert client.get(f"/v1/profiles/{body['id']}").status_code == 404
    # A cancelled job does not block a new equal request.
    again = client.post("/v1/profiles", json={"model": "alexnet", "device": "jetson", "batch_sizes": [1]})
    assert again.json()["created"] is True
    client.delete(f"/v1/profiles/{again.json()['id']}")


def wait_for_cells(client, profile_id: str, cells: int, timeout: float = 900.0) -> dict:
    """Until the job has stored ``cells`` finished batch sizes (its progress counts them)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v1/profiles/{profile_id}").json()
        progress = body["progress"] or {}
        if body["status"] == "running" and progress.get("batches_done", 0) >= cells:
            return body
        assert body["status"] in ("queued", "running") and time.monotonic() < deadline, body
        time.sleep(0.1)


def test_running_job_is_cancelled_keeping_its_finished_cells_and_the_worker_takes_the_next(client):
    """Nothing measured is thrown away: the batch size finished before the cancel stays in the
    result, marked incomplete."""
    body = {"model": "resnet18", "batch_sizes": [1, 64], "runs": 60, "repeats": 1}
    slow = client.post("/v1/profiles", json=body).json()
    wait_for_cells(client, slow["id"], 1)
    cancel = client.delete(f"/v1/profiles/{slow['id']}")
    assert cancel.status_code == 202 and cancel.json()["outcome"] == "cancelling"
    done = wait_for(client, slow["id"], timeout=60)
    assert done["status"] == "cancelled"
    result = done["result"]
    assert result["complete"] is False and [b["batch_size"] for b in result["batches"]] == [1]
    assert result["batches"][0]["status"] == "ok" and result["batches"][0]["latency"]["runs"] >= 60
    nxt = client.post(
        "/v1/profiles", json={"model": "mobilenet_v2", "batch_sizes": [1], "runs": 3, "repeats": 1}
    ).json()
    assert wait_for(client, nxt["id"])["status"] == "succeeded"


def test_a_model_that_cannot_run_fails_with_a_readable_reason(client):
    # Inception-v3 at 32 px: its stem shrinks the image below its kernels.
    response = client.post(
        "/v1/profiles", json={"model": "inception_v3", "input_size": 32, "batch_sizes": [1], "repeats": 1}
    )
    done = wait_for(client, response.json()["id"])
    assert done["status"] == "failed"
    assert "RuntimeError" in done["error"] and "size" in done["error"].lower()
    # The worker survives it.
    ok = client.post(
        "/v1/profiles", json={"model": "squeezenet1_0", "batch_sizes": [1], "runs": 2, "repeats": 1}
    ).json()
    assert wait_for(client, ok["id"])["status"] == "succeeded"


def test_unknown_profile_id_is_404(client):
    assert client.get("/v1/profiles/does-not-exist").status_code == 404
    assert client.delete("/v1/profiles/does-not-exist").status_code == 404


def test_oversized_body_is_rejected(client):
    response = client.post(
        "/v1/profiles",
        content=b'{"model": "' + b"a" * 200_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413


def test_progress_is_reported_while_running(client):
    job = client.post(
        # A model no other test of this service measures: with two processes this profile would
        # be the one that counts for its model (select=best) in the other tests' analyses.
        "/v1/profiles",
        json={"model": "mnasnet0_5", "batch_sizes": [1, 4, 8], "runs": 5, "repeats": 2},
    ).json()
    seen: set = set()
    deadline = time.monotonic() + 900  # a ceiling for a busy machine, not a budget
    while time.monotonic() < deadline:
        body = client.get(f"/v1/profiles/{job['id']}").json()
        progress = body["progress"]
        if body["status"] == "running" and progress["stage"] == "batch":
            seen.add((progress["process"], progress["batch_size"]))
            assert progress["processes"] == 2 and progress["batches_total"] == 6
        if body["status"] in ("succeeded", "failed"):
            break
        time.sleep(0.1)
    assert body["status"] == "succeeded", body["error"]
    assert seen and seen <= {(p, b) for p in (1, 2) for b in (1, 4, 8)}
    assert {p for p, _ in seen} == {1, 2}  # both fresh processes measured
    assert all(b["latency"]["processes"] == 2 for b in body["result"]["batches"])


def test_accuracy_without_a_dataset_on_the_worker_fails_with_the_reason(client):
    body = {"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "accuracy": True, "accuracy_images": 500}
    done = wait_for(client, client.post("/v1/profiles", json=body).json()["id"])
    assert done["status"] == "failed"
    assert "DNNPROF_IMAGENET_VAL" in done["error"]
    assert done["settings"]["accuracy"] is True and done["settings"]["accuracy_images"] == 500
    bad = client.post("/v1/profiles", json={**body, "accuracy_images": 0})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "accuracy_images"


def test_published_results_import_in_timms_table_shape(client):
    from tests.helpers import REFERENCE

    table = REFERENCE / "timm_results_imagenet.csv"
    csv_bytes = table.read_bytes()
    rows = csv_bytes.decode().count("\n") - 1
    response = client.post(
        "/v1/results/published/timm-2026-08", content=csv_bytes, headers={"content-type": "text/csv"}
    )
    assert response.status_code == 201, response.text
    summary = response.json()
    assert summary["imported"] == rows and summary["resolved"] > 0.9 * rows
    published = client.get("/v1/results/published", params={"model": "timm:resnet50"}).json()
    assert len(published) > 5 and all(p["kind"] == "published" for p in published)  # every tag's row
    assert all(p["resolved"] == "timm:" + p["model"] for p in published)  # "timm:resnet50.a1_in1k"
    tagged = client.get(
        "/v1/results/published", params={"model": "resnet50.a1_in1k", "source": "timm-2026-08"}
    ).json()
    assert len(tagged) == 1 and 80 < tagged[0]["top1"] < 82 and tagged[0]["source"] == "timm-2026-08"
    # The catalogue detail knows timm's ResNet-50 parameter count from a published table (the
    # shipped copy, or this import of the same table).
    detail = client.get("/v1/models/timm:resnet50").json()
    assert detail["params_source"].startswith("published:timm-") and 25e6 < detail["params"] < 26e6
    assert {"timm-2026-08", "timm-results-2026-08"} <= {
        r["source"] for r in detail["published_results"] if r["model"] == "resnet50.a1_in1k"
    }
    swsl = client.get("/v1/models/resnet50.fb_swsl_ig1b_ft_in1k").json()  # one tag: its own config
    assert (swsl["qualified"], swsl["tag"]) == ("timm:resnet50.fb_swsl_ig1b_ft_in1k", "fb_swsl_ig1b_ft_in1k")
    assert (swsl["crop_pct"], swsl["interpolation"]) == (0.875, "bilinear")
    assert {r["model"] for r in swsl["published_results"]} == {"resnet50.fb_swsl_ig1b_ft_in1k"}
    # Measured profiles are not mixed with imported figures.
    assert all("kind" not in p for p in client.get("/v1/profiles").json())

    bad = client.post(
        "/v1/results/published/broken",
        content=b"model,top1\nresnet50,abc\n",
        headers={"content-type": "text/csv"},
    )
    assert bad.status_code == 422 and "line 2" in bad.json()["detail"]
    no_header = client.post(
        "/v1/results/published/broken", content=b"name,acc\nx,1\n", headers={"content-type": "text/csv"}
    )
    assert no_header.status_code == 422 and "'model' and 'top1'" in no_header.json()["detail"]
    untyped = client.post("/v1/results/published/broken", content=b"model,top1\nx,1\n")
    assert untyped.status_code == 415 and "text/csv" in untyped.json()["detail"]
    assert client.delete("/v1/results/published/timm-2026-08").status_code == 204
    assert client.get("/v1/results/published", params={"source": "timm-2026-08"}).json() == []


def _samples(text: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def test_metrics_expose_profiles_jobs_queues_and_request_metrics_by_path_template(client, service):
    """On a model no other test profiles: /metrics shows the profile that counts (select=best), and
    another test's clean profile of batch size 1 only would count over this one when it is noisy."""
    from torchvision.models import get_model_weights

    job = client.post(
        "/v1/profiles", json={"model": "mnasnet0_75", "batch_sizes": [1, 2], "runs": 2, "repeats": 1}
    ).json()
    assert wait_for(client, job["id"])["status"] == "succeeded"
    client.get(f"/v1/profiles/{job['id']}")
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)

    def value(name, **labels):
        hits = [
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        assert hits, f"no {name} {labels}"
        return hits[0]

    labels = {"model": "tv:mnasnet0_75", "device": "cpu", "precision": "fp32"}
    # The gauges are the stored profile's figures (issue 26: they were only bounded, 0 < x < 10).
    stored = client.get(f"/v1/profiles/{job['id']}").json()["result"]
    batches = {b["batch_size"]: b for b in stored["batches"]}
    latency = value("dnnprof_profile_latency_seconds", batch_size="1", **labels)
    assert latency == pytest.approx(batches[1]["latency"]["mean_ms"] / 1000)
    throughput = value("dnnprof_profile_throughput_images_per_second", batch_size="2", **labels)
    assert throughput == pytest.approx(batches[2]["latency"]["images_per_s"])
    memory = value("dnnprof_profile_memory_bytes", batch_size="1", **labels)
    assert memory == batches[1]["memory"]["total_bytes"]
    meta = get_model_weights("mnasnet0_75").DEFAULT.meta
    assert value("dnnprof_model_parameters", model="tv:mnasnet0_75") == meta["num_params"]
    # torchvision publishes GMACs (`_ops`); 1 multiply-add = 2 FLOPs, within the 5% of test_flops.
    assert value("dnnprof_model_flops", model="tv:mnasnet0_75") / 2e9 == pytest.approx(meta["_ops"], rel=0.05)
    assert value("dnnprof_jobs_total", status="succeeded") >= 1
    assert value("dnnprof_job_duration_seconds_count", status="succeeded") >= 1
    assert value("dnnprof_workers", device="cpu") == 1 and value("dnnprof_workers", device="cuda") == 0
    # The CPU queue drains (every job of the session runs): the gauge follows it down to 0.
    assert value("dnnprof_queue_length", device="cpu") >= 0

    def cpu_queue_empty() -> bool:
        fresh = _samples(client.get("/metrics").text)
        return any(
            s.name == "dnnprof_queue_length" and s.labels == {"device": "cpu", "target": ""} and s.value == 0
            for s in fresh
        )

    until(cpu_queue_empty, 600, "an empty CPU queue on /metrics")
    assert value("dnnprof_store_up") == 1
    paths = {s.labels.get("path") for s in samples if s.name.startswith("dnnprof_http_requests_total")}
    assert "/v1/profiles/{profile_id}" in paths
    assert not any(job["id"] in (p or "") for p in paths)  # templates, not raw ids


def test_worker_serves_its_own_device_metrics(service):
    import httpx

    text = httpx.get(f"http://127.0.0.1:{service.worker_metrics_port}/metrics", timeout=10).text
    names = {s.name for s in _samples(text)}
    assert {
        "dnnprof_worker_info",
        "dnnprof_worker_cpu_utilization_ratio",
        "dnnprof_worker_memory_used_bytes",
    } <= names


def test_analysis_endpoints_and_exports_over_real_profiles(client):
    # A model no other test of the session profiles: with select=best another test's clean
    # batch-size-1 profile of the same model could count over this one (noisy on a busy host).
    from torchvision.models import ShuffleNet_V2_X1_0_Weights

    top1 = ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    job = client.post(
        "/v1/profiles", json={"model": "shufflenet_v2_x1_0", "batch_sizes": [1, 2], "runs": 2, "repeats": 1}
    ).json()
    assert wait_for(client, job["id"])["status"] == "succeeded"
    table1 = client.get("/v1/analysis/table1", params={"device": "cpu"}).json()
    row = next(r for r in table1 if r["model"] == "tv:shufflenet_v2_x1_0")
    assert set(row["ms_per_image"]) >= {"1", "2"} and row["images_per_s"]["1"] > 0
    table2 = client.get("/v1/analysis/table2", params={"device": "cpu"}).json()
    assert next(r for r in table2 if r["model"] == "tv:shufflenet_v2_x1_0")["memory_mb"]["1"] > 1
    models = client.get("/v1/analysis/models").json()
    shufflenet = next(r for r in models if r["model"] == "tv:shufflenet_v2_x1_0")
    assert shufflenet["accuracy_source"] == "tv-metadata" and shufflenet["top1"] == pytest.approx(top1)
    t3 = client.get(
        "/v1/analysis/table3", params={"device": "cpu", "max_memory_mb": [100000], "min_fps": [0.01]}
    )
    assert t3.status_code == 200 and t3.json()[0]["cells"][0]["model"] is not None

    # The analyses against values computed here from the stored profiles they summarise.
    other = client.post(
        "/v1/profiles", json={"model": "mobilenet_v3_small", "batch_sizes": [1, 2], "runs": 2, "repeats": 1}
    ).json()
    assert wait_for(client, other["id"])["status"] == "succeeded"
    # One precision: a model profiled in two (another test's bf16 run) is a row in each, and the
    # expectations below are keyed by model.
    fp32 = {"device": "cpu", "precision": "fp32"}
    rows = {r["model"]: r for r in client.get("/v1/analysis/models", params=fp32).json()}
    stored = {m: client.get(f"/v1/profiles/{r['profile_id']}").json()["result"] for m, r in rows.items()}
    density = {d["model"]: d for d in client.get("/v1/analysis/density", params=fp32).json()}
    for model, row in rows.items():
        if row["top1"] is None:
            continue
        assert density[model]["top1_per_mparam"] == pytest.approx(
            row["top1"] / (stored[model]["params"] / 1e6)
        )
    throughput = client.get("/v1/analysis/throughput", params={**fp32, "batch_size": 2}).json()[0]
    points = {p["model"]: p["images_per_s"] for p in throughput["points"]}
    for model in ("tv:shufflenet_v2_x1_0", "tv:mobilenet_v3_small"):
        cell = next(b for b in stored[model]["batches"] if b["batch_size"] == 2)
        assert points[model] == pytest.approx(cell["latency"]["images_per_s"])
    expected_frontier = sorted(
        p["model"]
        for p in throughput["points"]
        if not any(
            (q["images_per_s"] >= p["images_per_s"] and q["top1"] > p["top1"])
            or (q["images_per_s"] > p["images_per_s"] and q["top1"] >= p["top1"])
            for q in throughput["points"]
        )
    )
    assert sorted(p["model"] for p in throughput["frontier"]) == expected_frontier
    if len(expected_frontier) < 2:  # one model faster and more accurate than the rest: no line
        assert throughput["slope"] is None and throughput["intercept"] is None
    else:
        assert (
            throughput["intercept"]
            >= max(p["top1"] - throughput["slope"] * p["images_per_s"] for p in throughput["points"]) - 1e-9
        )
    fit = next(f for f in client.get("/v1/analysis/memory-fits", params=fp32).json() if f["batch_size"] == 1)
    xs, ys = [], []
    for result in stored.values():
        cell = next((b for b in result["batches"] if b["batch_size"] == 1), None)
        if cell and cell["memory"] and cell["memory"]["total_bytes"]:
            xs.append(result["param_file_bytes_fp32"] / 1e6)
            ys.append(cell["memory"]["total_bytes"] / 1e6)
    slope, intercept = numpy.polyfit(xs, ys, 1)
    assert (fit["slope"], fit["intercept_mb"], fit["models"]) == (
        pytest.approx(slope),
        pytest.approx(intercept),
        len(xs),
    )
    assert client.get("/v1/analysis/table3", params={"batch_size": 0}).status_code == 422

    exported = client.get("/v1/export.json").json()
    assert job["id"] in [p["id"] for p in exported]
    csv_text = client.get("/v1/export.csv").text
    header, *lines = csv_text.strip().splitlines()
    assert header.startswith("profile_id,model,paper_name,device")
    assert sum(1 for line in lines if line.startswith(job["id"])) == 2  # one row per batch size
    # The README's columns (issue 26): the target, CI, cv, noisy flag, p99 and repeats of each
    # batch size, as the stored profile has them.
    stored_job = client.get(f"/v1/profiles/{job['id']}").json()
    by_batch = {b["batch_size"]: b["latency"] for b in stored_job["result"]["batches"]}
    exported_rows = [r for r in csv.DictReader(io.StringIO(csv_text)) if r["profile_id"] == job["id"]]
    for exported_row in exported_rows:
        latency = by_batch[int(exported_row["batch_size"])]
        assert exported_row["target"] == stored_job["result"]["fingerprint"]["device_target"]
        assert float(exported_row["ci95_low_ms"]) == pytest.approx(latency["ci95_low_ms"])
        assert float(exported_row["ci95_high_ms"]) == pytest.approx(latency["ci95_high_ms"])
        assert float(exported_row["cv"]) == pytest.approx(latency["cv"])
        assert exported_row["noisy"] == str(latency["noisy"])
        if latency["runs"] < 100:  # a 99th percentile needs 100 runs: blank, never invented
            assert latency["p99_ms"] is None and exported_row["p99_ms"] == ""
        else:
            assert float(exported_row["p99_ms"]) == pytest.approx(latency["p99_ms"])
        assert int(exported_row["repeats"]) == latency["processes"] == 1
        assert int(exported_row["runs"]) == latency["runs"]
