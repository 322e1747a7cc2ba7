"""Layer sweep (issue 41): the paper's 44 architectures on this CPU in eager, onnxruntime and
openvino at batch size 1, each with its layer profile (``layers_batch_sizes=(1,)``): per family,
each op type's share of the time against its share of the FLOPs, and which op types the runtimes
gain on (the time of an op type in eager over its time in the runtime, per image); and the
coverage check, the share of ONNX Runtime's node time given a module path (target >= 95 % on
every model), beside every runtime's unattributed share.

Each model gets one fresh process (a time limit on it) that profiles it in each runtime in turn
with the engine (``measure_process``, as ``run_profile`` but keeping the layer profiles), on the
same random weights (seeded), onnxruntime and openvino on one export. The timing is the shortest
honest one: the default warm-up (until three runs agree within 5 %, giving up after 3 s), 5 timed
runs and 0.5 s at least, one block; the layer profile's profiled pass is its own (0.5 s, 3-20 runs).

Per model and runtime: ms/image (timed), the profiled forward's ms/image, the unattributed
share, each op type's time share and FLOP share (and, beside eager, its speed-up), the top 5
layers by their own time, and the node coverage. ``bench/results/layer-sweep.json`` is written
after each model, so a cut run keeps what it did.

Caveats the figures carry: an op type's time in a runtime is that of its fused nodes (ONNX
Runtime's FusedConv is a convolution with its activation; a batch norm folded into a convolution
has no time of its own), so a runtime's gain on "convolution" includes what it fused into it and
its "normalisation" or "activation" may be near zero; eager's figures come from torch.profiler's
pass (its overhead in them); OpenVINO runs nodes in parallel (its node times may overlap). The
families are a name-prefix mapping (:data:`FAMILIES`).

    python -m bench.layer_sweep [--models ResNet-18,ShuffleNet] [--runtimes eager,onnxruntime,openvino]
                                [--limit-s 600] [--out layer-sweep]

DNNPROF_CPU_THREADS sets the measuring threads (as the worker's); unset, they are chosen from the
usable cores. Run it on a quiet host: each row carries the timed runs' spread and what else ran.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict

from bench.common import ROOT, environment, stamp, write
from dnnprof.paper import PAPER_MODELS

RUNTIMES = ("eager", "onnxruntime", "openvino")
COVERAGE_TARGET = 0.95
NOTES = [
    "ms_per_image: the timed runs (5 at least, 0.5 s at least, after a warm-up); op-type and layer "
    "times: the layer profile's separate profiled pass, its profiler's overhead in them "
    "(forward_ms_per_image against ms_per_image)",
    "an op type's time in a runtime is that of its fused nodes (a convolution with its activation, "
    "a batch norm folded into it), so its speed-up over eager includes what it absorbed; eager's "
    "copies for a view (a channel shuffle) are in the op that makes them contiguous",
    "time_share: of the runtime's node (op) time; flop_share: of the eager model's FLOPs; "
    "unattributed_share: of the profiled forward; node_coverage: the node time given a module",
    "openvino runs nodes in parallel: its node times may overlap (overlapping: true)",
    "per family: the mean of its models' shares; op speed-ups pooled: the models' summed eager ms "
    "over their summed runtime ms in that op type",
]
TOP_LAYERS = 5

#: A family for each paper name: the first prefix it starts with (the SE- names before ResNet;
#: CaffeResNet and FBResNet are ResNets; Inception-ResNet-v2 an Inception, GoogLeNet and
#: BN-Inception too).
FAMILIES: tuple[tuple[str, str], ...] = (
    ("SE-", "SENet"),
    ("SENet", "SENet"),
    ("ResNeXt", "ResNeXt"),
    ("ResNet", "ResNet"),
    ("CaffeResNet", "ResNet"),
    ("FBResNet", "ResNet"),
    ("Inception", "Inception"),
    ("BN-Inception", "Inception"),
    ("GoogLeNet", "Inception"),
    ("Xception", "Xception"),
    ("VGG", "VGG"),
    ("DenseNet", "DenseNet"),
    ("DPN", "DPN"),
    ("MobileNet", "MobileNet"),
    ("ShuffleNet", "ShuffleNet"),
    ("SqueezeNet", "SqueezeNet"),
    ("NASNet", "NASNet"),
    ("AlexNet", "AlexNet"),
)


def family_of(paper_name: str) -> str:
    return next((family for prefix, family in FAMILIES if paper_name.startswith(prefix)), "other")


class _Flops:
    """One FLOP count for the runtimes of one process (the model is the same in each)."""

    def __init__(self) -> None:
        self.counts: dict = {}

    def get(self, model, input_size, version):
        return self.counts.get((model, input_size, version))

    def put(self, model, input_size, version, flops) -> None:
        self.counts[(model, input_size, version)] = flops


def one_model(paper_name: str, runtimes: list[str]) -> dict:
    """In this (fresh) process: the model in each runtime, on the same weights."""
    import tempfile
    from pathlib import Path

    import torch

    from dnnprof.catalogue import Catalogue
    from dnnprof.config import Settings
    from dnnprof.contract import ProfileSettings
    from workers import aggregate
    from workers.catalogue import build_catalogue
    from workers.engine.models import build_model
    from workers.engine.scenario import CollectingSink, ProcessPlan, ScenarioConfig, measure_process
    from workers.engine.timing import WarmupPolicy

    started = time.perf_counter()
    info = Catalogue({e.name: e for e in build_catalogue()}).resolve(paper_name).info
    out: dict = {"model": paper_name, "qualified": info.name, "family": family_of(paper_name), "runtimes": {}}
    flops = _Flops()
    with tempfile.TemporaryDirectory(prefix="dnnprof-layer-sweep-") as cache:
        config = ScenarioConfig(
            device_class="cpu", warmup=WarmupPolicy(max_seconds=3.0), min_timed_s=0.5, max_attempts=1,
            cpu_threads=Settings.from_env().cpu_threads, cache_dir=Path(cache),  # one export for ORT and OV
        )  # fmt: skip
        for runtime in runtimes:
            torch.manual_seed(0)
            model = build_model(info, input_size=info.input_size)
            settings = ProfileSettings(
                model=info.name, device="cpu", batch_sizes=(1,), runs=5, precision="fp32",
                input_size=info.input_size, runtime=runtime, layers_batch_sizes=(1,),
            )  # fmt: skip
            start = time.perf_counter()
            sink = CollectingSink()
            try:
                plan = ProcessPlan(layers=(1,), flop_cache=flops)
                end = measure_process(info, settings, config, plan, sink, model=model)
                result = aggregate.assemble(info, settings, sink.statics, sink.cells, [end])
            except Exception as exc:  # noqa: BLE001 - a runtime's failure is this row's finding
                out["runtimes"][runtime] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
                continue
            finally:
                model = None
            [cell] = result.batches
            latency, host = cell.latency, sink.cells[0].host if sink.cells else None
            row = {
                "ok": cell.status == "ok",
                "error": cell.error,
                "wall_s": round(time.perf_counter() - start, 1),
                "phases_s": {k: round(v, 2) for k, v in (end.phases or {}).items()},
                "ms_per_image": latency.mean_ms if latency else None,
                # How far to trust it: the runs' spread, a settled warm-up, what else ran meanwhile.
                "cv": round(latency.cv, 4) if latency else None,
                "noisy": latency.noisy if latency else None,
                "warmup_converged": latency.warmup_converged if latency else None,
                "others_cpu_share": host.others_cpu_share if host else None,
                "loadavg_1m": host.loadavg_1m if host else None,
            }
            [profile] = sink.layer_profiles or [None]
            row.update(layer_row(profile))
            out["runtimes"][runtime] = row
    eager = out["runtimes"].get("eager", {})
    for runtime, row in out["runtimes"].items():
        if runtime == "eager" or not row.get("op_types"):
            continue
        row["speedup_over_eager"] = _ratio(eager.get("ms_per_image"), row["ms_per_image"])
        for op, share in row["op_types"].items():
            there = eager.get("op_types", {}).get(op, {}).get("ms_per_image")
            share["speedup_over_eager"] = _ratio(there, share["ms_per_image"])
    out["threads"] = torch.get_num_threads()
    out["wall_s"] = round(time.perf_counter() - started, 1)
    return out


def layer_row(profile) -> dict:
    """What the sweep keeps of one layer profile."""
    if profile is None:
        return {"layers_error": "no layer profile"}
    if profile.error:
        return {"layers_error": profile.error}
    forward = profile.forward_ms_per_image
    total_flops = profile.flops or 0
    timed = [x for x in profile.layers if x.ms_per_image > 0]
    top = sorted(timed, key=lambda x: -x.ms_per_image)[:TOP_LAYERS]
    return {
        "profiled_runs": profile.runs,
        "forward_ms_per_image": round(forward, 4),
        "attributed_ms_per_image": round(profile.attributed_ms_per_image, 4),
        "unattributed_share": round(profile.unattributed_ms_per_image / forward, 4) if forward > 0 else None,
        "node_coverage": round(profile.node_coverage, 4) if profile.node_coverage is not None else None,
        "overlapping": profile.overlapping,
        "flops": profile.flops,
        "unattributed_nodes": profile.unattributed_nodes[:5],
        "op_types": {
            s.op_type: {
                "ms_per_image": round(s.ms_per_image, 4),
                "time_share": round(s.time_share, 4),
                "flop_share": round(s.flop_share, 4),
            }
            for s in profile.op_types
        },
        "top_layers": [
            {
                "path": x.path,
                "type": x.type,
                "op_type": x.op_type,
                "ms_per_image": round(x.ms_per_image, 4),
                "time_share": round(x.share, 4),
                "flop_share": round(x.flops / total_flops, 4) if total_flops else None,
            }
            for x in top
        ],
    }


def summary(rows: list[dict], runtimes: list[str]) -> dict:
    """Per family and runtime, each op type's mean time and FLOP share over the family's models and
    its speed-up over eager pooled over them (their eager ms over their runtime ms); per runtime,
    each op type's speed-up pooled over every model and its median over the models; the node
    coverage and unattributed share over the models (ONNX Runtime's against the 95 % target)."""
    profiled = [r for r in rows if "runtimes" in r]
    families: dict[str, list[dict]] = defaultdict(list)
    for r in profiled:
        families[r["family"]].append(r)
    per_family = {}
    for family, members in sorted(families.items()):
        per_family[family] = {"models": [r["model"] for r in members]}
        for runtime in runtimes:
            got = [r["runtimes"][runtime] for r in members if r["runtimes"].get(runtime, {}).get("op_types")]
            if not got:
                continue
            eagers = [r["runtimes"].get("eager", {}) for r in members
                      if r["runtimes"].get(runtime, {}).get("op_types")]  # fmt: skip
            ops = sorted({op for g in got for op in g["op_types"]})
            entry = {"profiled": len(got), "op_types": {}}
            ups = [g.get("speedup_over_eager") for g in got if g.get("speedup_over_eager")]
            if ups:
                entry["median_speedup_over_eager"] = round(statistics.median(ups), 3)
            for op in ops:
                shares = [g["op_types"].get(op, {}) for g in got]
                item = {
                    "time_share": round(statistics.fmean(s.get("time_share", 0.0) for s in shares), 4),
                    "flop_share": round(statistics.fmean(s.get("flop_share", 0.0) for s in shares), 4),
                }
                if runtime != "eager":
                    item["speedup_over_eager"] = _pooled(eagers, got, op)
                entry["op_types"][op] = item
            per_family[family][runtime] = entry
    op_speedup = {}
    for runtime in runtimes:
        if runtime == "eager":
            continue
        pairs = [(r["runtimes"].get("eager", {}), r["runtimes"][runtime]) for r in profiled
                 if r["runtimes"].get(runtime, {}).get("op_types")]  # fmt: skip
        ops = sorted({op for _, g in pairs for op in g["op_types"]})
        op_speedup[runtime] = {}
        for op in ops:
            each = [g["op_types"][op].get("speedup_over_eager") for _, g in pairs if op in g["op_types"]]
            each = [u for u in each if u]
            op_speedup[runtime][op] = {
                "pooled": _pooled([e for e, _ in pairs], [g for _, g in pairs], op),
                "median": round(statistics.median(each), 3) if each else None,
                "models": len(each),
            }
    coverage = {}
    for runtime in runtimes:
        got = [(r["model"], r["runtimes"][runtime]) for r in profiled
               if r["runtimes"].get(runtime, {}).get("op_types")]  # fmt: skip
        covered = [(m, g["node_coverage"]) for m, g in got if g.get("node_coverage") is not None]
        unattributed = [g["unattributed_share"] for _, g in got if g.get("unattributed_share") is not None]
        names = {m for m, _ in got}
        entry = {
            "profiled": len(got),
            # Crashed, failed, or no layer profile: none of its coverage is known.
            "missing": [r["model"] for r in rows if r["model"] not in names],
            "node_coverage_min": min((c for _, c in covered), default=None),
            "node_coverage_median": round(statistics.median([c for _, c in covered]), 4) if covered else None,
            f"under_{int(COVERAGE_TARGET * 100)}": {m: c for m, c in covered if c < COVERAGE_TARGET},
            "unattributed_share_median": round(statistics.median(unattributed), 4) if unattributed else None,
            "unattributed_share_max": max(unattributed, default=None),
        }
        coverage[runtime] = entry
    if "onnxruntime" in coverage:
        ort = coverage["onnxruntime"]
        ort["target"] = COVERAGE_TARGET
        under = ort[f"under_{int(COVERAGE_TARGET * 100)}"]
        ort["met"] = bool(ort["profiled"]) and not under and not ort["missing"]
    return {
        "models": len(rows),
        "crashed": [r["model"] for r in rows if "crashed" in r],
        "per_family": per_family,
        "op_speedup_over_eager": op_speedup,
        "coverage": coverage,
    }


def _pooled(eagers: list[dict], got: list[dict], op: str) -> float | None:
    """Sum over the models of eager's ms per image in ``op`` over the runtime's (models with both)."""
    pairs = [
        (e["op_types"][op]["ms_per_image"], g["op_types"][op]["ms_per_image"])
        for e, g in zip(eagers, got, strict=True)
        if op in e.get("op_types", {}) and op in g.get("op_types", {})
    ]
    return _ratio(sum(p[0] for p in pairs), sum(p[1] for p in pairs))


def _ratio(base: float | None, there: float | None) -> float | None:
    return round(base / there, 3) if base and there and base > 0 and there > 0 else None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layer_sweep")
    parser.add_argument("--models", default="", help="paper names, comma-separated (default: all 44)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--limit-s", type=int, default=600, help="per model, all its runtimes")
    parser.add_argument("--out", default="layer-sweep", help="bench/results/<out>.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: one model, JSON on stdout
    args = parser.parse_args()
    runtimes = [r for r in args.runtimes.split(",") if r]
    if args.one:
        print(json.dumps(one_model(args.one, runtimes)))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(PAPER_MODELS)
    unknown = [n for n in names if n not in PAPER_MODELS]
    if unknown:
        parser.error(f"not paper names: {', '.join(unknown)} (see dnnprof.paper.PAPER_MODELS)")
    env = environment()
    rows: list[dict] = []
    for name in names:
        command = [sys.executable, "-m", "bench.layer_sweep", "--one", name, "--runtimes", args.runtimes]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.limit_s)
            lines = done.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else {
                "model": name, "family": family_of(name),
                "crashed": f"exit {done.returncode}: {done.stderr.strip()[-400:]}",
            }  # fmt: skip
        except subprocess.TimeoutExpired:
            row = {"model": name, "family": family_of(name), "crashed": f"over {args.limit_s} s"}
        row["process_wall_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        stamp(f"{name}: {row['process_wall_s']} s " + (row.get("crashed") or " ".join(
            f"{rt} {g.get('ms_per_image') or 0:.1f} ms cov {g.get('node_coverage')}"
            for rt, g in row.get("runtimes", {}).items())))  # fmt: skip
        write(args.out, {"environment": env, "batch_size": 1, "runtimes": runtimes, "notes": NOTES,
                         "rows": rows, "summary": summary(rows, runtimes)})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
