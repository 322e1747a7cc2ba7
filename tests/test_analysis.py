"""The paper's analyses on hand-made profiles whose answers are computed by hand."""

from __future__ import annotations

import pytest

from dnnprof.analysis import (
    FrontierPoint,
    accuracy_density,
    best_under_constraints,
    compare_devices,
    least_squares,
    memory_fits,
    model_rows,
    pareto_frontier,
    throughput_bound,
)
from dnnprof.contract import ProfileRecord, PublishedResult
from tests.factories import profile


def test_pareto_frontier_and_its_linear_upper_bound_computed_by_hand():
    # Frontier A(1000, 60), B(500, 70), C(200, 76) lies exactly on top-1 = 80 - 0.02 * images/s;
    # D(100, 74) is beaten by C on both counts, F(300, 69) by B.
    speeds = {"A": (1.0, 60), "B": (2.0, 70), "C": (5.0, 76), "D": (10.0, 74), "F": (1000 / 300, 69)}
    rows = model_rows([profile(f"tv:{m}", top1=t, cells={1: (ms, 500)}) for m, (ms, t) in speeds.items()])
    bound = throughput_bound(rows, "cuda", batch_size=1)
    assert [p.model for p in bound.frontier] == ["tv:A", "tv:B", "tv:C"]
    assert bound.slope == pytest.approx(-0.02)
    assert bound.intercept == pytest.approx(80.0)
    for p in bound.points:  # an upper bound: nobody above it
        assert p.top1 <= bound.intercept + bound.slope * p.images_per_s + 1e-9


def test_pareto_frontier_keeps_the_fastest_of_equals_only():
    points = [
        FrontierPoint(model="x", images_per_s=10, top1=70),
        FrontierPoint(model="y", images_per_s=5, top1=70),
    ]
    assert [p.model for p in pareto_frontier(points)] == ["x"]


def test_least_squares_slope_intercept_r2_by_hand():
    fit = least_squares([1, 2, 3], [1, 3, 2])
    assert (fit.slope, fit.intercept, fit.r2, fit.n) == (
        pytest.approx(0.5),
        pytest.approx(1.0),
        pytest.approx(0.25),
        3,
    )
    with pytest.raises(ValueError):
        least_squares([1], [1])
    with pytest.raises(ValueError):
        least_squares([2, 2], [1, 3])


def test_memory_fit_per_batch_size():
    # memory = 600 MB + 2 x parameter file at batch 1 (exact); batch 2 is the (1,1),(2,3),(3,2) set.
    records = [
        profile(f"tv:m{i}", file_mb=p, cells={1: (1.0, 600 + 2 * p), 2: (1.0, m2)})
        for i, (p, m2) in enumerate([(1, 1), (2, 3), (3, 2)])
    ]
    fits = {f.batch_size: f for f in memory_fits(model_rows(records))}
    assert (fits[1].slope, fits[1].intercept_mb, fits[1].r2) == (
        pytest.approx(2),
        pytest.approx(600),
        pytest.approx(1),
    )
    assert (fits[2].slope, fits[2].intercept_mb, fits[2].r2) == (
        pytest.approx(0.5),
        pytest.approx(1),
        pytest.approx(0.25),
    )


def test_best_model_under_memory_and_frame_rate_bounds():
    rows = model_rows(
        [
            profile("tv:small", top1=70, cells={1: (10.0, 650)}),  # 100 images/s, 650 MB
            profile("tv:medium", top1=75, cells={1: (20.0, 900)}),  # 50 images/s, 900 MB
            profile("tv:large", top1=80, cells={1: (40.0, 1300)}),  # 25 images/s, 1300 MB
            profile("tv:huge", top1=82, cells={1: (None, None)}),  # OOM at batch 1: never a candidate
            profile("tv:unknown", top1=None, cells={1: (1.0, 100)}),  # no accuracy: no candidate
        ]
    )
    table = {
        (c.max_memory_mb, c.min_fps): c for c in best_under_constraints(rows, (700, 1000, 1400), (15, 30, 60))
    }
    assert table[(700, 15)].model == "tv:small" and table[(700, 60)].model == "tv:small"
    assert table[(1000, 30)].model == "tv:medium" and table[(1000, 60)].model == "tv:small"
    assert table[(1400, 15)].model == "tv:large" and table[(1400, 30)].model == "tv:medium"
    assert table[(1400, 15)].candidates == 3
    none = best_under_constraints(rows, (600,), (15,))[0]
    assert none.model is None and none.candidates == 0


def test_accuracy_density_and_where_accuracy_comes_from():
    records = [
        profile("tv:measured", params=2_000_000, top1=70, cells={1: (1.0, 1)}),
        profile("tv:imported", params=10_000_000, cells={1: (1.0, 1)}),
        profile("tv:metadata", params=5_000_000, published_top1=60, cells={1: (1.0, 1)}),
        profile("tv:none", params=1_000_000, cells={1: (1.0, 1)}),
    ]
    published = [
        PublishedResult(model="imported.a1", resolved="tv:imported", source="t", top1=79.0),
        PublishedResult(model="imported", resolved="tv:imported", source="t", top1=78.0),  # untagged wins
    ]
    rows = model_rows(records, published=published)
    density = {d.model: d for d in accuracy_density(rows)}
    assert density["tv:measured"].top1_per_mparam == pytest.approx(35.0)
    assert density["tv:imported"].top1_per_mparam == pytest.approx(7.8)
    assert density["tv:metadata"].top1_per_mparam == pytest.approx(12.0)
    assert "tv:none" not in density
    assert [d.model for d in accuracy_density(rows)] == ["tv:measured", "tv:metadata", "tv:imported"]
    sources = {r.model: r.accuracy_source for r in rows}
    assert sources == {
        "tv:measured": "measured",
        "tv:imported": "published:t",
        "tv:metadata": "tv-metadata",
        "tv:none": None,
    }


def test_timm_profiles_take_the_published_accuracy_of_their_own_weights():
    """A tagged profile: its tag's row. A plain name: the default tag's row (what timm builds),
    not the best of the architecture's tags."""
    import msgspec

    def timm_profile(model: str) -> ProfileRecord:
        record = profile(model, cells={1: (1.0, 1)})
        info = msgspec.structs.replace(record.model, source="timm", default_tag="a1_in1k")
        record.model = record.result.model = info
        return record

    published = [
        PublishedResult(model=f"resnet50.{tag}", resolved=f"timm:resnet50.{tag}", source="t", top1=top1)
        for tag, top1 in (("a1_in1k", 80.4), ("fb_swsl_ig1b_ft_in1k", 81.1), ("tv_in1k", 76.1))
    ]
    rows = model_rows(
        [timm_profile("timm:resnet50"), timm_profile("timm:resnet50.tv_in1k")], published=published
    )
    assert {r.model: r.top1 for r in rows} == {"timm:resnet50": 80.4, "timm:resnet50.tv_in1k": 76.1}


def test_newest_profile_wins_and_filters_apply():
    rows = model_rows(
        [
            profile("tv:a", cells={1: (5.0, 1)}, created=1),
            profile("tv:a", cells={1: (4.0, 1)}, created=2),
            profile("tv:a", device="cpu", cells={1: (40.0, 1)}, created=3),
        ],
        device="cuda",
    )
    assert len(rows) == 1 and rows[0].cell(1).ms_per_image == 4.0


def test_cross_device_ratio():
    rows = model_rows(
        [
            profile("tv:a", device="cuda", cells={1: (2.0, 1)}),
            profile("tv:a", device="jetson", cells={1: (30.0, 1)}),
            profile("tv:b", device="cuda", cells={1: (1.0, 1)}),  # no jetson profile: not compared
        ]
    )
    [row] = compare_devices(rows, "cuda", "jetson", batch_size=1)
    assert (row.model, row.b_over_a) == ("tv:a", pytest.approx(15.0))


def test_two_runtimes_compare_on_one_target_per_batch_size():
    """Issue 25: /v1/analysis/compare between two runtimes of the same target, per batch size:
    ONNX Runtime at 20 and 50 ms/image against eager's 40 and 60 is 0.5 and 5/6 of eager's time
    (by hand); a model with no ONNX Runtime profile, or one on another target only, is not
    compared; in one runtime one target is never compared with itself."""
    rows = model_rows(
        [
            profile("tv:a", device="cpu", cells={1: (40.0, 1), 8: (60.0, 1)}),
            profile("tv:a", device="cpu", cells={1: (20.0, 1), 8: (50.0, 1)}, runtime="onnxruntime"),
            profile("tv:b", device="cpu", cells={1: (10.0, 1)}),  # eager only
            profile("tv:c", device="cuda", cells={1: (1.0, 1)}, runtime="onnxruntime"),  # another target
        ],
        runtime=None,
    )
    compared = compare_devices(rows, "cpu", "cpu", a_runtime="eager", b_runtime="onnxruntime")
    assert [(c.model, c.batch_size) for c in compared] == [("tv:a", 1), ("tv:a", 8)]
    assert [c.b_over_a for c in compared] == [pytest.approx(0.5), pytest.approx(50 / 60)]
    assert {(c.a_runtime, c.b_runtime) for c in compared} == {("eager", "onnxruntime")}
    assert compared[0].a_target == compared[0].b_target
    assert compare_devices(rows, "cpu", "cpu") == []  # one runtime, one target: nothing to compare
