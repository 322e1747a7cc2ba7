"""The paper's measurements as two read-only device targets, and measured figures beside them.

``paper/titan-xp`` and ``paper/jetson-tx1`` hold the per-image times of the paper's Table 1 (all
batch sizes; a Jetson cell the paper leaves empty for lack of memory is an "oom" cell) for its 44
models, with parameters and accuracy from the published figures the service has (torchvision's
metadata, the shipped tables). They are kept apart from measured targets: analyses include them
only when asked for by name (``device=paper`` or ``device=paper/titan-xp``), and nothing can be
sent to them. The paper's memory facts (its text: a floor of about 0.6 GB, two memory-vs-size
lines) come with them; its Table 2 is not in the reference material, so the paper's rows have no
per-model memory.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache

from msgspec import Struct

from dnnprof.analysis import MEGABYTE, BatchCell, ModelRow, best_published, memory_fits, published_accuracy
from dnnprof.contract import ModelInfo, PublishedResult
from dnnprof.paper import PAPER_DEVICES, PAPER_MEMORY_FACTS, PAPER_MODELS, PAPER_SOURCE, paper_tag
from dnnprof.published import DATA
from dnnprof.targets import class_of, is_target

PAPER_CLASS = "paper"
TABLE1 = DATA / "bianco2018_table1_latency_ms.csv"
#: The batch sizes of Table 1; a Jetson row that stops early ran out of memory at the next one.
PAPER_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def is_paper(device: str | None) -> bool:
    return device is not None and class_of(device) == PAPER_CLASS


@lru_cache(maxsize=1)
def table1() -> dict[str, dict[str, dict[int, float]]]:
    """Per paper target, per paper name, ms per image by batch size."""
    by_device = {str(info["table1_device"]): target for target, info in PAPER_DEVICES.items()}
    out: dict[str, dict[str, dict[int, float]]] = {t: {} for t in PAPER_DEVICES}
    with TABLE1.open(newline="") as f:
        for row in csv.DictReader(f):
            target = by_device[row["device"]]
            out[target].setdefault(row["model"], {})[int(row["batch_size"])] = float(row["ms_per_image"])
    return out


def qualified_paper_name(paper_name: str, catalogue: dict[str, ModelInfo]) -> str:
    """What a paper name resolves to (``tv:resnet50.IMAGENET1K_V1``), as measured profiles of it
    are stored."""
    qualified, _ = PAPER_MODELS[paper_name]
    info = catalogue.get(qualified)
    tag = paper_tag(info) if info is not None else None
    return qualified + (f".{tag}" if tag else "")


def _params(model: str, info: ModelInfo | None, published: dict[str, PublishedResult]) -> int:
    row = published.get(model)
    if info is not None and info.published_params:
        return info.published_params
    if row is not None and row.param_count_m:
        return round(row.param_count_m * 1e6)
    # A legacy_* port is named by timm's results table under its tag only.
    for key, candidate in published.items():
        if key.startswith(model + ".") and candidate.param_count_m:
            return round(candidate.param_count_m * 1e6)
    return 0


def paper_rows(
    catalogue: dict[str, ModelInfo],
    published: Iterable[PublishedResult] = (),
    device: str | None = PAPER_CLASS,
) -> list[ModelRow]:
    """One row per paper model and paper target (``device``: the class ``paper`` or one target)."""
    by_model = best_published(published)
    rows = []
    for target, models in table1().items():
        if device not in (PAPER_CLASS, target):
            continue
        info_device = PAPER_DEVICES[target]
        for paper_name, times in models.items():
            model = qualified_paper_name(paper_name, catalogue)
            entry = catalogue.get(PAPER_MODELS[paper_name][0])
            info = entry.for_tag(model.partition(".")[2]) if entry and "." in model else entry
            top1, top5, source = (
                published_accuracy(model, info, by_model) if info is not None else (None, None, None)
            )
            params = _params(model, info, by_model)
            cells = [
                BatchCell(batch_size=b, status="ok", ms_per_image=ms, images_per_s=1000.0 / ms)
                for b, ms in sorted(times.items())
            ]
            cells += [BatchCell(batch_size=b, status="oom") for b in PAPER_BATCH_SIZES if b not in times]
            gmacs = info.published_gmacs if info is not None else None
            rows.append(
                ModelRow(
                    model=model,
                    paper_name=paper_name,
                    device=PAPER_CLASS,
                    target=target,
                    device_name=str(info_device["device_name"]),
                    precision="fp32",
                    profile_id=f"{PAPER_SOURCE}-table1",
                    params=params,
                    param_file_mb=params * 4 / MEGABYTE,
                    gflops=2 * gmacs if gmacs is not None else None,
                    top1=top1,
                    top5=top5,
                    accuracy_source=source,
                    batches=sorted(cells, key=lambda c: c.batch_size),
                    kind=PAPER_SOURCE,
                )
            )
    return sorted(rows, key=lambda r: (r.target, r.model))


def measured_target(measured: Sequence[ModelRow], device: str) -> str:
    """The target a comparison is of: ``device`` itself when it is one; for a class, its target
    with the most of the paper's models measured (the class itself where none is)."""
    if is_target(device):
        return device
    counts = Counter(r.target for r in measured if r.paper_name and class_of(r.target) == device)
    return max(sorted(counts), key=counts.__getitem__) if counts else device


def nearest_paper_target(target: str) -> str:
    """The paper's device nearest a measured one: the Titan Xp for a CUDA GPU, the Jetson TX1 for
    a Jetson or a CPU (neither is near a CPU; the TX1's times are of a CPU's order)."""
    return next(
        (t for t, info in PAPER_DEVICES.items() if info["nearest_class"] == class_of(target)),
        "paper/jetson-tx1",
    )


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation (ties get their mean rank); None under three pairs."""
    if len(xs) != len(ys) or len(xs) < 3:
        return None

    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        out = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2 + 1
            i = j + 1
        return out

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else None


class PaperPair(Struct, kw_only=True):
    model: str
    paper_name: str
    measured_ms_per_image: float
    paper_ms_per_image: float
    measured_over_paper: float  # > 1: slower here than on the paper's device


class PaperLine(Struct, kw_only=True):
    slope: float
    intercept_mb: float
    families: str | None = None
    r2: float | None = None
    models: int | None = None


class PaperComparison(Struct, kw_only=True):
    """Measured figures of one target beside the paper's on its nearest device (or the one asked)."""

    target: str
    paper_target: str
    batch_size: int
    pairs: list[PaperPair]
    #: Of the time ordering of the models both measured: 1 is the paper's order exactly.
    rank_correlation: float | None
    median_ratio: float | None
    #: Memory vs parameter size at this batch size: the line measured here, and the paper's two
    #: lines (its text, Titan Xp, batch size 1) with the floor it states.
    measured_memory_fit: PaperLine | None
    paper_memory_fits: list[PaperLine]
    paper_memory_floor_mb: float
    paper_memory_fits_batch_size: int


def against_paper(
    measured: Sequence[ModelRow],
    paper: Sequence[ModelRow],
    target: str,
    batch_size: int = 1,
    paper_target: str | None = None,
) -> PaperComparison:
    """Per paper model measured on ``target``: its time over the paper's, their rank correlation
    and the memory lines of both."""
    paper_target = paper_target or nearest_paper_target(target)
    theirs = {r.paper_name: r for r in paper if r.target == paper_target}
    pairs = []
    for row in measured:
        if row.target != target or row.paper_name not in theirs:
            continue
        ours, ref = row.cell(batch_size), theirs[row.paper_name].cell(batch_size)
        if ours and ref and ours.ms_per_image and ref.ms_per_image:
            pairs.append(
                PaperPair(
                    model=row.model,
                    paper_name=row.paper_name,
                    measured_ms_per_image=ours.ms_per_image,
                    paper_ms_per_image=ref.ms_per_image,
                    measured_over_paper=ours.ms_per_image / ref.ms_per_image,
                )
            )
    ratios = [p.measured_over_paper for p in pairs]
    fit = next(
        (f for f in memory_fits([r for r in measured if r.target == target]) if f.batch_size == batch_size),
        None,
    )
    return PaperComparison(
        target=target,
        paper_target=paper_target,
        batch_size=batch_size,
        pairs=sorted(pairs, key=lambda p: p.paper_name),
        rank_correlation=spearman(
            [p.measured_ms_per_image for p in pairs], [p.paper_ms_per_image for p in pairs]
        ),
        median_ratio=statistics.median(ratios) if ratios else None,
        measured_memory_fit=PaperLine(
            slope=fit.slope, intercept_mb=fit.intercept_mb, r2=fit.r2, models=fit.models
        )
        if fit
        else None,
        paper_memory_fits=[PaperLine(**line) for line in PAPER_MEMORY_FACTS["fits"]],
        paper_memory_floor_mb=float(PAPER_MEMORY_FACTS["floor_mb"]),
        paper_memory_fits_batch_size=int(PAPER_MEMORY_FACTS["batch_size"]),
    )

