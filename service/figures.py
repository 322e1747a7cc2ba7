"""The paper's figures, drawn with matplotlib (headless, Agg) from the analysis rows."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from dnnprof import analysis

# Text stays text in SVG (searchable, selectable, read by screen readers), not glyph outlines.
plt.rcParams["svg.fonttype"] = "none"

COLOURS = {"cuda": "tab:green", "jetson": "tab:orange", "cpu": "tab:blue"}


def _label(row: analysis.ModelRow) -> str:
    return row.paper_name or row.model.split(":", 1)[-1]


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no profiles with {what} yet", ha="center", va="center", transform=ax.transAxes)


def ball(ax, rows: Sequence[analysis.ModelRow], batch_size: int) -> None:
    """Fig. 1: top-1 vs G-FLOPs, ball size proportional to parameters."""
    pts = [r for r in rows if r.top1 is not None and r.gflops is not None]
    if not pts:
        return _empty(ax, "accuracy and FLOPs")
    ax.scatter(
        [r.gflops for r in pts],
        [r.top1 for r in pts],
        s=[max(20, r.params / 2e5) for r in pts],
        c=[COLOURS.get(r.device, "grey") for r in pts],
        alpha=0.5,
        edgecolors="black",
    )
    for r in pts:
        ax.annotate(_label(r), (r.gflops, r.top1), fontsize=7, ha="center")
    ax.set(xlabel="G-FLOPs per image", ylabel="Top-1 accuracy (%)", title="Accuracy vs FLOPs (ball ∝ params)")


def density(ax, rows: Sequence[analysis.ModelRow], batch_size: int) -> None:
    """Fig. 2: top-1 vs top-1 density."""
    pts = analysis.accuracy_density(rows)
    if not pts:
        return _empty(ax, "accuracy")
    ax.scatter(
        [d.top1_per_mparam for d in pts],
        [d.top1 for d in pts],
        c=[COLOURS.get(d.device, "grey") for d in pts],
    )
    for d in pts:
        ax.annotate(d.model.split(":", 1)[-1], (d.top1_per_mparam, d.top1), fontsize=7)
    ax.set(
        xscale="log",
        xlabel="Top-1 per million parameters",
        ylabel="Top-1 accuracy (%)",
        title="Accuracy density",
    )


def throughput(ax, rows: Sequence[analysis.ModelRow], batch_size: int) -> None:
    """Fig. 3: top-1 vs images/s with the linear upper bound (a curve on the log axis)."""
    drew = False
    for target in sorted({r.target for r in rows}):
        bound = analysis.throughput_bound(rows, target, batch_size)
        device = bound.device
        if not bound.points:
            continue
        drew = True
        colour = COLOURS.get(device, "grey")
        ax.scatter(
            [p.images_per_s for p in bound.points], [p.top1 for p in bound.points], c=colour, label=target
        )
        for p in bound.points:
            ax.annotate(p.model.split(":", 1)[-1], (p.images_per_s, p.top1), fontsize=7)
        if bound.slope is not None and bound.intercept is not None:
            lo, hi = min(p.images_per_s for p in bound.points), max(p.images_per_s for p in bound.points)
            xs = [lo * (hi / lo) ** (i / 99) for i in range(100)]
            ax.plot(
                xs,
                [bound.intercept + bound.slope * x for x in xs],
                color=colour,
                linestyle="--",
                label=f"{target} bound: {bound.intercept:.1f} {bound.slope:+.4f}·x",
            )
    if not drew:
        return _empty(ax, "accuracy and timings")
    ax.set(
        xscale="log",
        xlabel=f"Images/s (batch size {batch_size})",
        ylabel="Top-1 accuracy (%)",
        title="Accuracy vs throughput",
    )
    ax.legend(fontsize=7)


def memory(ax, rows: Sequence[analysis.ModelRow], batch_size: int) -> None:
    """Fig. 4: memory vs parameter-file size with the linear fit, at one batch size."""
    pts = [(r, r.cell(batch_size)) for r in rows]
    pts = [(r, c) for r, c in pts if c is not None and c.memory_mb is not None]
    if not pts:
        return _empty(ax, f"memory at batch size {batch_size}")
    ax.scatter(
        [r.param_file_mb for r, _ in pts],
        [c.memory_mb for _, c in pts],
        c=[COLOURS.get(r.device, "grey") for r, _ in pts],
    )
    for r, c in pts:
        ax.annotate(_label(r), (r.param_file_mb, c.memory_mb), fontsize=7)
    for fit in analysis.memory_fits([r for r, _ in pts]):
        if fit.batch_size != batch_size:
            continue
        xs = [0, max(r.param_file_mb for r, _ in pts)]
        ax.plot(
            xs,
            [fit.intercept_mb + fit.slope * x for x in xs],
            linestyle="--",
            color=COLOURS.get(fit.device, "grey"),
            label=f"{fit.target}: {fit.intercept_mb:.0f} MB + {fit.slope:.2f}·size (R² {fit.r2:.2f})",
        )
    ax.set(
        xlabel="Parameter file (MB)", ylabel="Memory (MB)", title=f"Memory vs model size, batch {batch_size}"
    )
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


DRAW = {"ball": ball, "density": density, "throughput": throughput, "memory": memory}


def render(name: str, rows: Sequence[analysis.ModelRow], fmt: str, *, batch_size: int = 1) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 6), dpi=100)
    try:
        DRAW[name](ax, rows, batch_size)
        ax.grid(True, alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)
