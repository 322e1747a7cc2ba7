"""Runtimes beside eager PyTorch (issue 25): ONNX Runtime, OpenVINO and torch.compile measured
by the same engine on this CPU, each with its preparation apart from warm-up, its first call, and
its outputs checked against eager's; the runtime a dimension of the profile's identity."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import io

import msgspec
import pytest
import torch
from torch import nn

from dnnprof.contract import ModelInfo, ProfileSettings, RuntimeOptions, RuntimeReport
from dnnprof.embedded import EmbeddedRedis
from dnnprof.runtimes import canonical_options, runtime_refusal
from dnnprof.selection import GroupKey, may_count
from dnnprof.store import ProfileStore
from workers.engine.runtimes import ExportError
from workers.engine.runtimes.onnx import OnnxPrepared
from workers.engine.scenario import ScenarioConfig, run_profile
from workers.engine.timing import WarmupPolicy
from workers.runtime_support import available_runtimes

RESNET18 = ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224)
CONFIG = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_seconds=0.05), min_timed_s=0.05)
#: The distribution each runtime's version must be read from (its own metadata: independent).
DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "openvino": "openvino", "compile": "torch"}


def settings(runtime: str = "eager", **kw) -> ProfileSettings:
    kw = {"batch_sizes": (1, 2), "runs": 3, "precision": "fp32", "input_size": 64, **kw}
    return ProfileSettings(model="tv:resnet18", device="cpu", runtime=runtime, **kw)


def needs(runtime: str) -> None:
    if runtime not in available_runtimes("cpu"):
        pytest.skip(f"the {runtime} runtime is not installed here (make test installs it)")


def test_an_eager_request_keys_as_it_did_before_runtimes_existed():
    """Every stored profile is eager: its dedupe key must not move. The key before runtimes was
    sha256 of the settings' fields in declaration order, target left out when None."""
    s = settings()
    before = {
        "model": "tv:resnet18",
        "device": "cpu",
        "batch_sizes": [1, 2],
        "runs": 3,
        "precision": "fp32",
        "input_size": 64,
        "channels_last": False,
        "accuracy": False,
        "accuracy_images": None,
        "repeats": 1,
        "reparameterize": False,
    }
    assert s.dedupe_key() == hashlib.sha256(msgspec.json.encode(before)).hexdigest()[:32]
    others = {
        settings("onnxruntime").dedupe_key(),
        settings("onnxruntime", runtime_options=RuntimeOptions(provider="cpu")).dedupe_key(),
        settings("compile", runtime_options=RuntimeOptions(mode="max-autotune")).dedupe_key(),
        settings("openvino").dedupe_key(),
    }
    assert len(others) == 4 and s.dedupe_key() not in others


def test_runtime_options_are_checked_against_their_runtime_precision_and_device():
    assert (
        runtime_refusal("onnxruntime", RuntimeOptions(mode="default"), "fp32", "cpu")[0] == "runtime_options"
    )
    assert (
        runtime_refusal("onnxruntime", RuntimeOptions(provider="cuda"), "fp32", "cpu")[0] == "runtime_options"
    )
    assert runtime_refusal("onnxruntime", None, "bf16", "cpu")[0] == "precision"
    assert runtime_refusal("openvino", None, "fp32", "cuda")[0] == "runtime"
    assert runtime_refusal("compile", RuntimeOptions(mode="reduce-overhead"), "bf16", "cpu") is None
    assert runtime_refusal("eager", None, "amp", "cpu") is None
    # Issue 40: TensorRT on a CPU was let through (only OpenVINO off a CPU was refused).
    assert runtime_refusal("tensorrt", None, "fp32", "cpu")[0] == "runtime"


def test_a_stated_default_option_keys_as_the_plain_request():
    """Issue 44 (5): ``{"opset": 18}`` (the export's default, onnx.py) and ``{"mode": "default"}``
    (torch.compile's own default mode) each made a second job beside the plain request. The
    provider, whose default is the device's own, is always stated (the keys stored before say it)."""
    plain = canonical_options("onnxruntime", None, "cpu")
    assert plain == {"provider": "cpu"}
    assert canonical_options("onnxruntime", RuntimeOptions(opset=18, provider="cpu"), "cpu") == plain
    assert canonical_options("openvino", RuntimeOptions(opset=18), "cpu") == {}
    assert canonical_options("compile", RuntimeOptions(mode="default"), "cpu") == {}
    autotune = RuntimeOptions(mode="max-autotune")
    assert canonical_options("compile", autotune, "cpu") == {"mode": "max-autotune"}
    assert canonical_options("openvino", RuntimeOptions(opset=17), "cpu") == {"opset": 17}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino", "compile"])
def test_each_runtime_profiles_with_its_preparation_first_call_and_outputs_checked(
    runtime, tmp_path, monkeypatch
):
    needs(runtime)
    # A cold compile, whatever ran on this machine before: inductor's on-disk caches (read from
    # this variable on each compile) made a second run's first call as fast as a warm one.
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch.manual_seed(0)
    eager = run_profile(RESNET18, settings(), CONFIG)
    result = run_profile(RESNET18, settings(runtime), CONFIG)
    report = result.runtime
    assert report is not None and report.name == runtime
    assert report.version == importlib.metadata.version(DISTRIBUTIONS[runtime]).split("+")[0]
    # Same model, same count: FLOPs and parameters come from the eager model, whatever runs it.
    assert (result.flops, result.params) == (eager.flops, eager.params)
    check = report.outputs
    assert check is not None and check.outputs_match, check
    assert check.max_abs_diff <= check.tolerance and check.batch_size == 2
    if runtime in ("onnxruntime", "openvino"):
        assert report.prepare_s > 0 and report.opset == 18 and report.io == "host"
    assert [b.status for b in result.batches] == ["ok", "ok"]
    for batch in result.batches:
        assert batch.first_call_s is not None and batch.first_call_s > 0
        assert batch.latency.warmup_runs >= 1  # the cold call is not warm-up run 1
    if runtime == "compile":  # compiled per batch size: the compile falls in each first call
        assert all(b.first_call_s > 10 * b.latency.mean_ms / 1000 * b.batch_size for b in result.batches)
        assert report.recompilations == 0  # nothing warmed up or timed was compiled
    else:
        assert report.recompilations is None  # an ONNX session does not compile on call


class Recompiling(nn.Module):
    """A branch on a Python int it bumps on every call: dynamo guards on the value, so each call
    fails the guard and compiles again (until torch._dynamo.config.recompile_limit, 8, per frame),
    while every output is the same function of the input."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        v = x.mean(dim=(2, 3))
        return self.fc(v) if self.calls % 2 else self.fc(v) + 0.0


def test_recompilations_after_the_first_call_are_counted():
    needs("compile")
    info = ModelInfo(name="test:recompiling", source="dnnprof", architecture="recompiling", input_size=16)
    s = ProfileSettings(
        model="test:recompiling", device="cpu", batch_sizes=(1, 2), runs=3, precision="fp32", input_size=16,
        runtime="compile",
    )  # fmt: skip
    result = run_profile(info, s, CONFIG, model=Recompiling().eval())
    limit = torch._dynamo.config.recompile_limit
    # Per batch size: the first call compiles (not counted), then up to the limit's worth again.
    assert 2 <= result.runtime.recompilations <= 2 * (limit - 1), result.runtime


def test_the_onnx_export_is_made_once_and_reused(tmp_path):
    """One export per model, input size, opset and weights, in the worker's data directory: the
    second profile of the same model (ONNX Runtime or OpenVINO) reads it from there."""
    needs("onnxruntime")
    config = dataclasses.replace(CONFIG, cache_dir=tmp_path)
    reports = []
    for _ in range(2):
        torch.manual_seed(0)  # the same random weights: the same model
        reports.append(run_profile(RESNET18, settings("onnxruntime", batch_sizes=(1,)), config).runtime)
    assert [r.export_cached for r in reports] == [False, True]
    assert reports[1].prepare_s < reports[0].prepare_s
    assert len(list((tmp_path / "onnx").glob("*.onnx"))) == 1


class DataDependent(nn.Module):
    """A branch on a value: torch.export cannot trace it (a model the ONNX exporter refuses)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.mean(dim=(2, 3))
        return self.fc(v) if v.sum().item() > 0 else -self.fc(v)


def test_an_export_failure_is_the_profiles_reason_not_a_crash():
    needs("onnxruntime")
    info = ModelInfo(name="test:branchy", source="dnnprof", architecture="branchy", input_size=16)
    s = ProfileSettings(
        model="test:branchy", device="cpu", batch_sizes=(1,), runs=3, precision="fp32", input_size=16,
        runtime="onnxruntime",
    )  # fmt: skip
    with pytest.raises(ExportError, match=r"the ONNX export failed: .*Error"):
        run_profile(info, s, CONFIG, model=DataDependent().eval())


def test_a_runtime_whose_outputs_differ_is_flagged_and_never_counts(tmp_path, monkeypatch):
    """Exporters have shipped silent wrong-output regressions: a session that computes something
    else (here its logits shifted by 1) is flagged, kept in the store, and never chosen."""
    needs("onnxruntime")
    honest = OnnxPrepared.logits
    monkeypatch.setattr(OnnxPrepared, "logits", lambda self, x: honest(self, x) + 1.0)
    result = run_profile(RESNET18, settings("onnxruntime", batch_sizes=(1,)), CONFIG)
    check = result.runtime.outputs
    assert not check.outputs_match and check.max_abs_diff == pytest.approx(1.0, abs=1e-3)

    from tests.factories import profile

    server = EmbeddedRedis(tmp_path / "redis")
    store = ProfileStore.from_url(server.start())
    try:
        store.ensure_indexes()
        wrong = profile("tv:resnet18", device="cpu", cells={1: (5.0, 100.0)}, created=2.0)
        wrong = msgspec.structs.replace(
            wrong,
            settings=msgspec.structs.replace(wrong.settings, runtime="onnxruntime"),
            result=msgspec.structs.replace(wrong.result, runtime=result.runtime),
        )
        store.create_or_get(wrong)
        assert not may_count(wrong) and store.get(wrong.id) is not None
        assert store.counting("best", runtime="onnxruntime") == []
        eager = profile("tv:resnet18", device="cpu", cells={1: (9.0, 100.0)}, created=1.0)
        store.create_or_get(eager)
        assert [r.id for r in store.counting("newest")] == [eager.id]  # its own group: eager
        assert GroupKey.of(wrong) != GroupKey.of(eager)
        assert store.list(runtime="onnxruntime")[0].id == wrong.id and store.count(runtime="eager") == 1
    finally:
        server.stop()


@pytest.mark.slow  # the session's service: the embedded default's API, worker and Redis
def test_a_runtime_no_worker_of_the_device_runs_is_a_422_naming_what_it_offers(client):
    offered = client.get("/v1/devices").json()
    cpu = next(d for d in offered if d["device_class"] == "cpu" and d["status"] == "live")
    assert cpu["runtimes"]["eager"] == importlib.metadata.version("torch").split("+")[0]
    assert set(cpu["runtimes"]) == set(available_runtimes("cpu"))
    response = client.post("/v1/profiles", json={"model": "resnet18", "runtime": "tensorrt"})
    assert response.status_code == 422, response.text
    [problem] = response.json()["errors"]
    assert problem["field"] == "runtime" and ", ".join(sorted(cpu["runtimes"])) in problem["message"]
    wrong = {"model": "resnet18", "runtime": "onnxruntime", "runtime_options": {"mode": "default"}}
    assert client.post("/v1/profiles", json=wrong).json()["errors"][0]["field"] == "runtime_options"
    unknown = {"model": "resnet18", "runtime": "onnxruntime", "runtime_options": {"threads": 3}}
    assert client.post("/v1/profiles", json=unknown).status_code == 422


@pytest.mark.slow
def test_an_onnxruntime_profile_on_the_embedded_default_stands_beside_eager(client):
    """Issue 25's 'done when': POST {"model": "resnet18", "runtime": "onnxruntime"} returns a
    profile with its preparation, first calls and outputs check; it is its own group, shown
    under runtime=onnxruntime and never in the default (eager) analyses."""
    needs("onnxruntime")
    from tests.helpers import wait_for

    body = {"model": "resnet18", "batch_sizes": [1, 2], "runs": 3, "repeats": 1, "input_size": 64}
    eager = client.post("/v1/profiles", json=body).json()
    ort = client.post("/v1/profiles", json={**body, "runtime": "onnxruntime"}).json()
    assert ort["id"] != eager["id"] and ort["profile"]["settings"]["runtime"] == "onnxruntime"
    eager, ort = wait_for(client, eager["id"]), wait_for(client, ort["id"])
    assert ort["status"] == "succeeded", ort.get("error")
    report = ort["result"]["runtime"]
    assert report["name"] == "onnxruntime" and report["provider"] == "CPUExecutionProvider"
    assert report["outputs"]["outputs_match"] and report["prepare_s"] > 0
    assert all(b["first_call_s"] > 0 for b in ort["result"]["batches"])
    listed = client.get("/v1/profiles", params={"runtime": "onnxruntime", "model": "resnet18"}).json()
    assert ort["id"] in [p["id"] for p in listed] and eager["id"] not in [p["id"] for p in listed]
    rows = client.get("/v1/analysis/models", params={"runtime": "onnxruntime"}).json()
    assert [(r["profile_id"], r["runtime"]) for r in rows if r["model"] == "tv:resnet18"] == [
        (ort["id"], "onnxruntime")
    ]
    default = client.get("/v1/analysis/models").json()
    assert ort["id"] not in {r["profile_id"] for r in default}
    exported = list(
        csv.DictReader(io.StringIO(client.get("/v1/export.csv", params={"model": "resnet18"}).text))
    )
    runtimes = {row["profile_id"]: row["runtime"] for row in exported}
    assert runtimes[ort["id"]] == "onnxruntime" and runtimes[eager["id"]] == "eager"
    metrics = client.get("/metrics").text
    assert 'runtime="onnxruntime"' in metrics
    table = client.get("/v1/analysis/runtimes", params={"device": "cpu", "batch_size": 1}).json()
    [row] = [r for r in table if r["model"] == "tv:resnet18" and r["precision"] == "fp32"]
    cells = {c["runtime"]: c for c in row["cells"]}
    assert cells["onnxruntime"]["profile_id"] == ort["id"]
    ratio = cells["eager"]["ms_per_image"] / cells["onnxruntime"]["ms_per_image"]
    assert cells["onnxruntime"]["speedup_over_eager"] == pytest.approx(ratio)
    # Two runtimes of one target side by side (the device compare, each side in its runtime).
    sides = {"a": row["target"], "b": row["target"], "a_runtime": "eager", "b_runtime": "onnxruntime"}
    compared = client.get("/v1/analysis/compare", params={**sides, "batch_size": 1}).json()
    [pair] = [c for c in compared if c["model"] == "tv:resnet18" and c["precision"] == "fp32"]
    assert (pair["a_runtime"], pair["b_runtime"], pair["a_target"]) == ("eager", "onnxruntime", row["target"])
    assert pair["b_over_a"] == pytest.approx(1 / ratio)
    refused = client.get("/v1/analysis/compare", params={**sides, "b_runtime": "tflite"})
    assert refused.status_code in (400, 422) and "b_runtime" in refused.text


def test_the_cross_runtime_table_sets_each_runtime_beside_eager():
    """Hand-made profiles: resnet18 at 10 ms/image eager, 4 ms in ONNX Runtime, 8 ms compiled;
    the speed-ups over eager are 10/4 = 2.5 and 10/8 = 1.25 by hand."""
    from dnnprof.analysis import model_rows, runtime_table
    from tests.factories import profile

    def on(runtime: str, ms: float, prepare_s: float | None = None):
        rec = profile("tv:resnet18", device="cpu", cells={1: (ms, 100.0)})
        report = RuntimeReport(name=runtime, prepare_s=prepare_s) if prepare_s is not None else None
        return msgspec.structs.replace(
            rec,
            settings=msgspec.structs.replace(rec.settings, runtime=runtime),
            result=msgspec.structs.replace(rec.result, runtime=report),
        )

    records = [on("eager", 10.0), on("onnxruntime", 4.0, 3.5), on("compile", 8.0, 0.0)]
    [row] = runtime_table(model_rows(records), batch_size=1)
    cells = {c.runtime: c for c in row.cells}
    assert [c.runtime for c in row.cells] == ["eager", "compile", "onnxruntime"]
    assert cells["onnxruntime"].speedup_over_eager == pytest.approx(2.5)
    assert cells["compile"].speedup_over_eager == pytest.approx(1.25)
    assert cells["eager"].speedup_over_eager == pytest.approx(1.0)
    assert cells["onnxruntime"].prepare_s == 3.5 and cells["eager"].prepare_s is None
    assert model_rows(records, runtime="eager")[0].runtime == "eager" and len(model_rows(records)) == 3


def test_every_reader_of_runtimes_reads_the_one_spec():
    """Issue 40 (1): the request's literal, the options struct, the worker's advertisement and its
    registry all come from dnnprof.runtimes; each offered row's implementation imports and names
    itself as its row does."""
    import typing

    from dnnprof.runtimes import OPTIONS, RUNTIME_SPECS
    from workers.engine.runtimes import runtime_for

    assert typing.get_args(ProfileSettings.__annotations__["runtime"]) == tuple(RUNTIME_SPECS) or (
        typing.get_args(typing.get_type_hints(ProfileSettings)["runtime"]) == tuple(RUNTIME_SPECS)
    )
    assert set(RuntimeOptions.__struct_fields__) == set(OPTIONS)
    offered = available_runtimes("cpu")
    assert "tensorrt" not in offered and set(offered) <= set(RUNTIME_SPECS)
    for name in offered:
        assert runtime_for(name, "cpu").name == name
    with pytest.raises(Exception, match="offers"):
        runtime_for("tensorrt", "cpu")
