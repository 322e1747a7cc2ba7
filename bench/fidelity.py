"""Fidelity: the engine's per-image time against an independent reference, in fresh processes.

The engine runs as the service runs it (one fresh process per repeat, the job's aggregation:
the median of the process medians); the reference is ``torch.utils.benchmark.Timer``'s
``blocked_autorange`` (its own loop, its own run count by time, synchronising CUDA itself), also
in fresh processes, with the same thread count. Engine and reference processes alternate, so a
drift in the machine hits both alike.

One fresh process differs from the next by 10-30% on a shared 2-vCPU host, and this host's speed
drifted by 1.5x within two hours: the ratio of two medians pooled over such a drift compares
rounds taken at different speeds. Each row therefore carries, beside the ratio of the medians
(the engine's median being the profile's own: the median of the process medians), the paired
ratio (the geometric mean of the round ratios: a round's engine and reference processes ran back
to back, through the same spell of the host) with a 95% bootstrap interval, and says what the
rounds can tell: ``bias ruled out`` (the interval lies inside the target), ``bias shown`` (it
lies outside) or ``undecided`` (the noise is wider than the target: more rounds needed). The
paired ratio (the ratio of the medians with fewer than 3 rounds) must fall within the target
(0.9-1.1 on a CPU, 0.95-1.05 on CUDA), else the exit code is 1. ``--pool`` merges the rounds of
earlier runs on the same machine and software into one verdict.

With ``--runtime`` (compile, onnxruntime, openvino) both sides time that runtime: the engine as a
profile of that runtime, the reference ``Timer`` around the runtime's own call (issue 25).

    python -m bench.fidelity [--device cpu|cuda] [--repeats 3] [--models resnet18,...] [--runtime R]
    python -m bench.fidelity --pool bench/results/a.json bench/results/b.json --name pooled
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from bench.common import assemble, child, engine_process, environment, stamp, write
from dnnprof.contract import ModelInfo, ProfileSettings

#: Two torchvision CNNs, a ViT and a timm RegNet (issue 10's set).
MODELS = {
    "resnet18": ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224),
    "mobilenet_v2": ModelInfo(
        name="tv:mobilenet_v2", source="tv", architecture="mobilenet_v2", input_size=224
    ),
    "vit_tiny": ModelInfo(
        name="timm:vit_tiny_patch16_224", source="timm", architecture="vit_tiny_patch16_224", input_size=224
    ),
    "regnetx_004": ModelInfo(
        name="timm:regnetx_004", source="timm", architecture="regnetx_004", input_size=224
    ),
}
BATCHES = (1, 8)
#: The environment keys pooled runs must share (same machine type and software).
POOLED_ENVIRONMENT = ("cpu", "cpus", "threads", "torch", "torchvision", "timm", "gpu")


def _bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of ``statistic`` over resamples of the last axis (the rounds;
    a round's engine and reference stay together)."""
    picks = np.random.default_rng(seed).integers(0, samples.shape[-1], size=(resamples, samples.shape[-1]))
    low, high = np.percentile(statistic(samples[..., picks]), [2.5, 97.5])
    return float(low), float(high)


def ratio_interval(
    engine_rounds: list[float], reference_rounds: list[float], *, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float] | None:
    """95% bootstrap interval of median(engine) / median(reference), resampling rounds in pairs."""
    if len(engine_rounds) != len(reference_rounds) or len(engine_rounds) < 3:
        return None
    pairs = np.asarray([engine_rounds, reference_rounds], float)
    return _bootstrap(lambda s: np.median(s[0], axis=1) / np.median(s[1], axis=1), pairs, resamples, seed)


def paired_ratio(
    engine_rounds: list[float], reference_rounds: list[float], *, resamples: int = 10_000, seed: int = 0
) -> tuple[float, tuple[float, float] | None]:
    """The geometric mean of the round ratios and its 95% bootstrap interval: each round's two
    processes ran back to back, so a host that drifts between rounds (here by up to 1.5x within
    an hour) cancels out of the pair instead of widening the comparison of two medians."""
    logs = np.log(np.asarray(engine_rounds, float) / np.asarray(reference_rounds, float))
    centre = float(np.exp(logs.mean()))
    if logs.size < 3:
        return centre, None
    low, high = _bootstrap(lambda s: s.mean(axis=1), logs, resamples, seed)
    return centre, (float(np.exp(low)), float(np.exp(high)))


def bias_verdict(interval: tuple[float, float] | None, low: float, high: float) -> str:
    """What the rounds can tell about a systematic gap beyond the target."""
    if interval is None:
        return "undecided"
    if low <= interval[0] and interval[1] <= high:
        return "bias ruled out"
    if interval[1] < low or interval[0] > high:
        return "bias shown"
    return "undecided"


def row_for(
    model: str, batch_size: int, engine_rounds: list[float], reference_rounds: list[float], target: tuple
) -> dict:
    """One (model, batch size): the ratio of the medians (the issue's figure) with its interval;
    the paired ratio with its interval, on which the verdict on a systematic gap rests; every round."""
    engine_ms, reference_ms = statistics.median(engine_rounds), statistics.median(reference_rounds)
    paired, paired_ci = paired_ratio(engine_rounds, reference_rounds)
    return {
        "model": model,
        "batch_size": batch_size,
        "engine_ms": engine_ms,
        "reference_ms": reference_ms,
        "ratio": engine_ms / reference_ms,
        "ratio_ci95": ratio_interval(engine_rounds, reference_rounds),
        "paired_ratio": paired,
        "paired_ci95": paired_ci,
        "bias": bias_verdict(paired_ci, *target),
        "rounds": len(engine_rounds),
        "engine_rounds_ms": engine_rounds,
        "reference_rounds_ms": reference_rounds,
        "round_ratios": [e / r for e, r in zip(engine_rounds, reference_rounds, strict=True)],
        "engine_process_cv": _cv(engine_rounds),
        "reference_process_cv": _cv(reference_rounds),
    }


def _cv(values: list[float]) -> float | None:
    return statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else None


def pool(paths: list[str]) -> tuple[dict, list[dict]]:
    """The rounds of several result files of the same machine and software, per (model, batch)."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]["environment"]
    for path, run in zip(paths, runs, strict=True):
        differs = {k for k in POOLED_ENVIRONMENT if run["environment"].get(k) != first.get(k)}
        if differs:
            raise SystemExit(f"{path}: another environment ({', '.join(sorted(differs))}); not pooled")
    target = tuple(runs[0]["target"])
    rounds: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    for run in runs:
        if tuple(run["target"]) != target:
            raise SystemExit(f"targets differ ({run['target']} vs {list(target)}); not pooled")
        for row in run["rows"]:
            engine, reference = rounds.setdefault((row["model"], row["batch_size"]), ([], []))
            engine += row["engine_rounds_ms"]
            reference += row["reference_rounds_ms"]
    rows = [row_for(m, b, e, r, target) for (m, b), (e, r) in rounds.items()]
    return {"environment": first, "target": list(target), "pooled": paths}, rows


def report(rows: list[dict], low: float, high: float, payload: dict, name: str) -> int:
    def spread(interval) -> str:
        return f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "-"

    for row in rows:
        stamp(
            f"{row['model']:12s} bs={row['batch_size']:<3d} engine {row['engine_ms']:8.3f} ms  "
            f"reference {row['reference_ms']:8.3f} ms  ratio {row['ratio']:.3f} {spread(row['ratio_ci95'])}  "
            f"paired {row['paired_ratio']:.3f} {spread(row['paired_ci95'])}  "
            f"({row['rounds']} rounds: {row['bias']})"
        )
    ok = all(low <= (r["paired_ratio"] if r["rounds"] >= 3 else r["ratio"]) <= high for r in rows)
    print(f"target {low}-{high}: {'met' if ok else 'NOT met'}")
    write(name, payload | {"met": ok, "rows": rows})
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes, engine and reference each")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCHES)))
    parser.add_argument("--runtime", default="eager", help="eager (default), compile, onnxruntime, openvino")
    parser.add_argument(
        "--name", default=None, help="results file name (default fidelity-<device>[-<runtime>])"
    )
    parser.add_argument(
        "--pool", nargs="+", metavar="RESULTS", help="merge these result files' rounds; measure nothing"
    )
    args = parser.parse_args(argv)
    if args.pool:
        payload, rows = pool(args.pool)
        low, high = payload["target"]
        return report(rows, low, high, payload, args.name or "fidelity-pooled")
    batches = tuple(int(b) for b in args.batch_sizes.split(","))
    low, high = (0.95, 1.05) if args.device == "cuda" else (0.9, 1.1)
    rows = []
    for key in args.models.split(","):
        info = MODELS[key]
        settings = ProfileSettings(
            model=info.name,
            device=args.device,  # type: ignore[arg-type]
            batch_sizes=batches,
            runs=args.runs,
            repeats=args.repeats,
            precision="fp32",
            input_size=info.input_size,
            runtime=args.runtime,
        )
        outputs, references = [], []
        for process in range(args.repeats):  # interleaved: engine, reference, engine, ...
            stamp(f"{key}: engine process {process + 1}/{args.repeats}")
            outputs.append(engine_process(info, settings, process))
            stamp(f"{key}: reference process {process + 1}/{args.repeats}")
            request = {
                "model": info, "batch_sizes": list(batches), "device": args.device, "runtime": args.runtime
            }
            references.append({int(b): ms for b, ms in json.loads(child("reference", request)).items()})
        result = assemble(info, settings, outputs)
        for measurement in result.batches:
            bs = measurement.batch_size
            engine_rounds = [p.median_ms for p in measurement.latency.per_process]
            rows.append(row_for(key, bs, engine_rounds, [r[bs] for r in references], (low, high)))
    payload = {
        "environment": environment(),
        "repeats": args.repeats,
        "target": [low, high],
        "runtime": args.runtime,
    }
    suffix = "" if args.runtime == "eager" else f"-{args.runtime}"
    return report(rows, low, high, payload, args.name or f"fidelity-{args.device}{suffix}")


if __name__ == "__main__":
    sys.exit(main())
