"""The fidelity bench's verdict: what a handful of noisy fresh-process rounds can and cannot tell."""

from __future__ import annotations

import json

import pytest

from bench.fidelity import bias_verdict, pool, ratio_interval, report, row_for

TARGET = (0.9, 1.1)


def test_rounds_that_agree_rule_out_a_bias_beyond_the_target():
    engine = [10.0, 10.2, 9.9, 10.1, 10.0, 9.8]
    reference = [10.1, 10.0, 10.0, 10.2, 9.9, 9.9]
    row = row_for("m", 1, engine, reference, TARGET)
    low, high = row["ratio_ci95"]
    assert 0.9 < low <= row["ratio"] <= high < 1.1
    assert row["bias"] == "bias ruled out" and row["rounds"] == 6


def test_an_engine_a_third_slower_in_every_round_shows_a_bias():
    reference = [10.0, 11.0, 9.0, 10.5, 9.5]
    engine = [r * 1.33 for r in reference]
    assert row_for("m", 1, engine, reference, TARGET)["bias"] == "bias shown"


def test_host_noise_wider_than_the_target_is_undecided_not_met_or_failed():
    """Round ratios of 0.67-1.53, as measured here: the interval straddles the target's edge."""
    reference = [30.0, 25.0, 32.0, 45.0, 28.0, 28.0, 37.0]
    engine = [28.0, 26.0, 41.0, 45.0, 41.0, 39.0, 34.0]
    row = row_for("m", 1, engine, reference, TARGET)
    assert row["ratio_ci95"][0] < 1.1 < row["ratio_ci95"][1]
    assert row["bias"] == "undecided"


def test_too_few_rounds_give_no_interval():
    assert ratio_interval([1.0, 1.1], [1.0, 1.0]) is None
    assert ratio_interval([1.0, 1.1, 1.2], [1.0, 1.0]) is None  # unpaired rounds
    assert bias_verdict(None, *TARGET) == "undecided"


def _run(tmp_path, name, cpu, engine, reference):
    path = tmp_path / f"{name}.json"
    rows = [{"model": "m", "batch_size": 1, "engine_rounds_ms": engine, "reference_rounds_ms": reference}]
    run = {"environment": {"cpu": cpu, "torch": "2"}, "target": list(TARGET), "rows": rows}
    path.write_text(json.dumps(run))
    return str(path)


def test_pooling_merges_the_rounds_of_runs_on_the_same_machine_and_refuses_others(tmp_path):
    a = _run(tmp_path, "a", "EPYC", [10.0, 11.0, 12.0], [10.0, 10.0, 12.0])
    b = _run(tmp_path, "b", "EPYC", [9.0, 10.0], [9.5, 10.5])
    payload, [row] = pool([a, b])
    assert row["rounds"] == 5 and row["engine_rounds_ms"] == [10.0, 11.0, 12.0, 9.0, 10.0]
    assert row["ratio"] == pytest.approx(10.0 / 10.0) and payload["pooled"] == [a, b]
    other = _run(tmp_path, "c", "Xeon", [9.0], [9.0])
    with pytest.raises(SystemExit, match="another environment"):
        pool([a, other])


def test_the_verdict_rests_on_the_paired_ratio_when_the_host_drifts_between_rounds(tmp_path, monkeypatch):
    """Rounds at 10, 20, 30, 40 ms (a host whose speed drifts): each pair agrees within 5% but one,
    while the two medians land on different rounds and differ by over 10%."""
    monkeypatch.setenv("DNNPROF_BENCH_RESULTS", str(tmp_path))
    row = row_for("m", 1, [10.0, 20.0, 21.0, 30.0, 40.0], [10.5, 19.0, 17.5, 31.0, 41.0], TARGET)
    assert row["ratio"] > 1.1 and 1.0 < row["paired_ratio"] < 1.05
    assert report([row], *TARGET, {"target": list(TARGET)}, "drift") == 0
    assert json.loads((tmp_path / "drift.json").read_text())["met"] is True
    row = row_for("m", 1, [13.0, 26.0, 27.0, 39.0, 52.0], [10.0, 20.0, 21.0, 30.0, 40.0], TARGET)
    assert report([row], *TARGET, {"target": list(TARGET)}, "slow") == 1


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_reference_times_the_runtimes_own_call(runtime):
    """bench.child's reference for a runtime: torch.utils.benchmark.Timer around that runtime's
    call (its session, prepared as the engine prepares it), one figure per batch size."""
    from bench.child import reference
    from workers.runtime_support import available_runtimes

    if runtime not in available_runtimes("cpu"):
        pytest.skip(f"the {runtime} runtime is not installed here (make test installs it)")
    model = {"name": "tv:resnet18", "source": "tv", "architecture": "resnet18", "input_size": 224}
    request = {"model": model, "batch_sizes": [1, 2], "device": "cpu", "runtime": runtime,
               "input_size": 32, "min_run_time": 0.05}  # fmt: skip
    times = json.loads(reference(request))
    assert set(times) == {"1", "2"} and all(0 < ms < 1000 for ms in times.values()), times
