"""summary.md of a GPU check (``bench/gpu_check.sh``): the versions, each step's outcome, and the
figures against their targets, from the JSON the steps wrote.

    python -m bench.gpu_summary OUT_DIR [cuda|cpu]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(out: Path, device: str) -> str:
    env = _load(out / "versions.json") or {}
    lines = [
        f"# GPU check ({device})",
        "",
        f"- device: {env.get('gpu') or env.get('cpu')} (driver {env.get('driver')}), CUDA {env.get('cuda')}, "
        f"cuDNN {env.get('cudnn')}",
        f"- torch {env.get('torch')}, torchvision {env.get('torchvision')}, timm {env.get('timm')}, "
        f"Python {env.get('python')}, {env.get('cpus')} CPUs",
        "",
        "| step | exit | seconds |",
        "|---|---|---|",
    ]
    steps = (out / "steps.txt").read_text().split("\n") if (out / "steps.txt").exists() else []
    for line in filter(None, steps):
        name, code, seconds = line.split()
        verdict = "ok" if code == "0" else ("time limit" if code in ("124", "137") else f"failed ({code})")
        lines.append(f"| {name} | {verdict} | {seconds} |")

    fidelity = _load(out / f"fidelity-{device}.json")
    if fidelity:
        low, high = fidelity["target"]
        lines += [
            "",
            f"## Fidelity (target {low}-{high}, {fidelity['repeats']} fresh processes each): "
            + ("met" if fidelity["met"] else "NOT met"),
            "",
            "| model | batch | engine ms | Timer ms | ratio | per-round ratios |",
            "|---|---|---|---|---|---|",
        ]
        for r in fidelity["rows"]:
            rounds = " ".join(f"{x:.3f}" for x in r["round_ratios"])
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['engine_ms']:.3f} | {r['reference_ms']:.3f} | "
                f"{r['ratio']:.3f} | {rounds} |"
            )

    cost = next(iter(sorted(out.glob(f"cost-resnet50-{device}*-template.json"))), None)
    cost = _load(cost) if cost else None
    if cost:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in cost["phases"].items())
        lines += [
            "",
            f"## Cost (resnet50, processes forked from the template): job {cost['job_wall_s']:.1f} s / "
            f"timed {cost['timed_s']:.1f} s = {cost['job_ratio']:.2f}; phases (s): {phases}",
        ]

    sweep = _load(out / f"sweep-{device}.json")
    if sweep:
        lines += [
            "",
            f"## Sweep: {sweep['models_measured']} models, {sweep['cells']} cells in {sweep['wall_s']:.0f} s "
            f"({sweep['cells_per_minute']:.1f} cells/min); failed: {sweep['models_failed'] or 'none'}",
            "",
        ]
        for bs, s in sweep["spearman_vs_titan_xp"].items():
            verdict = "" if device != "cuda" else (" (>= 0.8: met)" if s["rho"] >= 0.8 else " (< 0.8)")
            rho, models = s["rho"], s["models"]
            lines.append(
                f"- Spearman vs the paper's Titan Xp, batch {bs}: {rho:.3f} ({models} models){verdict}"
            )
        for bs, f in sweep["memory_fits"].items():
            verdict = " (>= 0.9: met)" if f["r2"] >= 0.9 else " (< 0.9)"
            lines.append(
                f"- memory vs parameter size at batch {bs}: {f['intercept_mb']:.0f} MB + {f['slope']:.2f} x, "
                f"R² {f['r2']:.3f}{verdict}"
            )
        if sweep.get("floor_mb"):
            floor = sweep["floor_mb"]
            lines.append(f"- floor before the model (CUDA context on a GPU): median {floor['median']:.0f} MB")
        table = out / f"sweep-{device}.md"
        if table.exists():
            lines += ["", table.read_text()]
    return "\n".join(lines) + "\n"


def main() -> int:
    out = Path(sys.argv[1])
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    sys.stdout.write(summary(out, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
