"""Catalogue sweep: every classifier the catalogue offers (every timm architecture at its default
config, every torchvision classification model, the zoo), built with random weights in the form
it is deployed, its parameters and FLOPs counted, and one forward pass at batch 1 on the CPU.

Models are checked in fresh worker processes (recycled every ``--per-process`` models), ``--jobs``
at a time, each model under a time limit (a worker that overruns it is killed and replaced).
Reports the failures grouped by family (timm's model module) and exception, the ratio of our
FLOPs to torchvision's published ``_ops`` and of our parameter count to timm's published one, and
the wall time. The failures are written to ``workers/data/catalogue_failures.json``, from which
the catalogue marks models that cannot be built (a 422 at request time instead of a failed job).

    python -m bench.catalogue_sweep [--jobs 2] [--limit-s 180] [--only timm:pit_s_224,...]

Each finished model is appended to ``--progress`` (JSON lines) at once, and ``--resume`` skips the
models already there, so a run cut off after hours goes on where it stopped; the summary covers
every model in the progress file.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import msgspec

from bench.common import REFERENCE, ROOT, environment, stamp, write
from dnnprof.contract import ModelInfo

#: Models above this many parameters are counted (params, FLOPs) on the meta device only: their
#: fp32 weights alone would take more than a quarter of this host's memory per worker.
MAX_PARAMS_TO_RUN = 1_500_000_000
FAILURES = ROOT / "workers" / "data" / "catalogue_failures.json"


class ModelCheck(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    family: str
    status: str  # "ok", "counted" (too large to run here), "error", "timeout"
    input_size: int
    params: int | None = None
    flops: int | None = None
    flops_note: str | None = None
    published_gmacs: float | None = None
    published_params_m: float | None = None
    form: str | None = None
    seconds: float | None = None
    error: str | None = None
    exception: str | None = None


def family_of(info: ModelInfo) -> str:
    """timm's model module ("timm.byobnet"), else the source ("tv", "dnnprof")."""
    if info.source != "timm":
        return info.source
    from timm.models._registry import _model_to_module

    return "timm." + _model_to_module.get(info.architecture, "?")


def check_model(info: ModelInfo) -> ModelCheck:
    """Build (random weights, deployed form), count, and run one image through it on the CPU."""
    import torch

    from workers.engine.flops import count_flops, count_model_flops
    from workers.engine.models import build_model, count_params, deployed_form, empty_weights

    started = time.perf_counter()
    check = ModelCheck(
        name=info.name,
        family=family_of(info),
        status="ok",
        input_size=info.input_size,
        published_gmacs=info.published_gmacs,
    )
    try:
        try:  # the size first, on the meta device, so a model too large for this host is not built
            with empty_weights():
                meta = build_model(info)
            if info.reparameterizable:
                meta, _ = deployed_form(meta)
        except Exception:  # noqa: BLE001 - some constructors run a CPU forward: build for real below
            meta = None
        if meta is not None:
            check.params = count_params(meta)
            if check.params > MAX_PARAMS_TO_RUN:
                example = torch.zeros(1, 3, info.input_size, info.input_size, device="meta")
                check.flops = count_flops(meta, example)
                check.status = "counted"
                check.error = f"{check.params / 1e9:.1f} B parameters: too large to run on this host's CPU"
                return check
            del meta
        model = build_model(info)
        check.form = "as built"
        if info.reparameterizable:
            model, _ = deployed_form(model)
            check.form = "deployed"
        check.params = count_params(model)
        counted = count_model_flops(model, info.input_size, info.published_gmacs)
        check.flops, check.flops_note = counted.flops, counted.note
        with torch.inference_mode():
            out = model(torch.randn(1, 3, info.input_size, info.input_size))
        if not isinstance(out, torch.Tensor) or out.shape[0] != 1:
            raise TypeError(f"the forward pass returned {type(out).__name__}, not a batch of logits")
    except Exception as exc:  # noqa: BLE001 - a sweep reports what fails and goes on
        check.status = "error"
        check.exception = type(exc).__name__
        check.error = (str(exc).splitlines() or [""])[0][:300]
    finally:
        check.seconds = time.perf_counter() - started
    return check


def child() -> int:
    """A worker: reads one ModelInfo per line, answers one ModelCheck per line."""
    import torch

    torch.set_num_threads(1)
    for line in sys.stdin:
        info = msgspec.json.decode(line.strip(), type=ModelInfo)
        sys.stdout.write(msgspec.json.encode(check_model(info)).decode() + "\n")
        sys.stdout.flush()
    return 0


class Worker:
    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.catalogue_sweep", "--child"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.info: ModelInfo | None = None
        self.sent_at = 0.0
        self.done = 0

    def send(self, info: ModelInfo) -> None:
        self.info, self.sent_at = info, time.monotonic()
        self.process.stdin.write(msgspec.json.encode(info).decode() + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def sweep(
    infos: list[ModelInfo], jobs: int, limit_s: float, per_process: int, progress: Path | None = None
) -> list[ModelCheck]:
    pending = collections.deque(infos)
    workers: list[Worker] = []
    results: list[ModelCheck] = []
    while pending or any(w.info for w in workers):
        while len(workers) < jobs and pending:
            workers.append(Worker())
        for w in workers:
            if w.info is None and pending:
                w.send(pending.popleft())
        busy = [w for w in workers if w.info is not None]
        ready, _, _ = select.select([w.process.stdout for w in busy], [], [], 1.0)
        for w in busy:
            if w.process.stdout in ready:
                line = w.process.stdout.readline()
                if line:
                    result = msgspec.json.decode(line, type=ModelCheck)
                else:  # the worker died on this model (a crash, the OOM killer)
                    result = ModelCheck(
                        name=w.info.name,
                        family=family_of(w.info),
                        status="error",
                        input_size=w.info.input_size,
                        exception="WorkerDied",
                        error=f"the process died (exit code {w.process.wait()})",
                    )
            elif time.monotonic() - w.sent_at > limit_s:
                result = ModelCheck(
                    name=w.info.name,
                    family=family_of(w.info),
                    status="timeout",
                    input_size=w.info.input_size,
                    exception="Timeout",
                    error=f"no answer within {limit_s:.0f} s",
                    seconds=limit_s,
                )
            else:
                continue
            results.append(result)
            if progress is not None:
                with open(progress, "a") as fh:
                    fh.write(msgspec.json.encode(result).decode() + "\n")
            w.info, w.done = None, w.done + 1
            mark = "" if result.status == "ok" else f"  {result.status}: {result.exception}: {result.error}"
            stamp(f"{len(results):5d}/{len(infos)} {result.name} {result.seconds or 0:.1f} s{mark}")
            if result.status in ("timeout", "error") and result.exception in ("Timeout", "WorkerDied"):
                w.stop()
            elif w.done >= per_process:  # recycled: a fresh process for the next models
                w.process.stdin.close()
                w.stop()
        workers = [w for w in workers if w.process.poll() is None]
    for w in workers:
        w.stop()
    return results


def read_progress(path: Path) -> list[ModelCheck]:
    return [
        msgspec.json.decode(line, type=ModelCheck) for line in path.read_text().splitlines() if line.strip()
    ]


def timm_published_params() -> dict[str, float]:
    """timm's published parameter counts (M) by architecture, from its results table."""
    import csv

    out: dict[str, float] = {}
    path = REFERENCE / "timm_results_imagenet.csv"
    if path.exists():
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                out.setdefault(row["model"].partition(".")[0], float(row["param_count"].replace(",", "")))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--limit-s", type=float, default=180.0, help="per-model time limit")
    parser.add_argument("--per-process", type=int, default=25, help="models per fresh worker process")
    parser.add_argument("--only", default="", help="qualified names, comma-separated")
    parser.add_argument("--progress", type=Path, help="append each finished model here (JSON lines)")
    parser.add_argument("--resume", action="store_true", help="skip the models already in --progress")
    parser.add_argument(
        "--summary-only", action="store_true", help="check nothing: summarise what --progress holds"
    )
    parser.add_argument("--write-failures", action="store_true", help=f"update {FAILURES.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.child:
        return child()
    from workers.catalogue import build_catalogue

    infos = [e for e in build_catalogue()]
    if args.only:
        wanted = set(args.only.split(","))
        infos = [e for e in infos if e.name in wanted]
    infos.sort(key=lambda e: (-(e.published_params or 0), e.name))  # the heavy ones first, while fresh
    earlier: list[ModelCheck] = []
    if args.resume and args.progress and args.progress.exists():
        earlier = read_progress(args.progress)
        done = {r.name for r in earlier}
        infos = [e for e in infos if e.name not in done]
        stamp(f"resuming: {len(done)} models done, {len(infos)} to go")
    catalogue_size = len(earlier) + len(infos)
    if args.summary_only:
        infos = []  # what a cut-off sweep got through, and how much it did not reach
    started = time.perf_counter()
    results = earlier + sweep(infos, args.jobs, args.limit_s, args.per_process, args.progress)
    wall = time.perf_counter() - started  # this run's; a resumed sweep adds the earlier runs'
    published = timm_published_params()
    for r in results:
        if r.name.startswith("timm:"):
            r.published_params_m = published.get(r.name[5:])
    failures = [r for r in results if r.status in ("error", "timeout")]
    groups = collections.Counter((r.family, r.exception, (r.error or "")[:120]) for r in failures)
    tv = [r for r in results if r.published_gmacs and r.flops]
    ratios = sorted(r.flops / 2e9 / r.published_gmacs for r in tv)
    param_ratios = sorted(
        r.params / 1e6 / r.published_params_m for r in results if r.published_params_m and r.params
    )
    summary = {
        "models": len(results),
        "catalogue": catalogue_size,
        "not_reached": catalogue_size - len(results),
        "ok": sum(r.status == "ok" for r in results),
        "counted_only": [r.name for r in results if r.status == "counted"],
        "failures": len(failures),
        "failure_groups": [
            {"family": f, "exception": e, "error": m, "models": n} for (f, e, m), n in groups.most_common()
        ],
        "flops_vs_torchvision_ops": {
            "models": len(ratios),
            "min": ratios[0] if ratios else None,
            "max": ratios[-1] if ratios else None,
            "outside_5_percent": [r.name for r in tv if abs(r.flops / 2e9 / r.published_gmacs - 1) > 0.05],
        },
        "params_vs_timm_published": {
            "models": len(param_ratios),
            "within_1_percent": sum(abs(x - 1) <= 0.01 for x in param_ratios),
            "outside_1_percent": [
                (r.name, r.params, r.published_params_m)
                for r in results
                if r.published_params_m and r.params and abs(r.params / 1e6 / r.published_params_m - 1) > 0.01
            ],
        },
        "wall_s_this_run": wall,
        "resumed_from": len(earlier),
        "model_seconds_sum": sum(r.seconds or 0 for r in results),
        "jobs": args.jobs,
    }
    stamp(
        f"{summary['models']} models in {wall / 60:.1f} min: {summary['ok']} ok, "
        f"{len(summary['counted_only'])} counted only (too large), {summary['failures']} failed"
    )
    for g in summary["failure_groups"]:
        stamp(f"  {g['models']:3d} x {g['family']}: {g['exception']}: {g['error']}")
    if not args.only:
        payload = {"environment": environment(), **summary, "results": msgspec.to_builtins(results)}
        write("catalogue-sweep-cpu", payload)
    if args.write_failures:
        FAILURES.parent.mkdir(parents=True, exist_ok=True)
        FAILURES.write_text(
            json.dumps(
                # Only what cannot be built or run: a timeout says how fast this host is, not that
                # the model cannot be profiled (a GPU worker may take seconds).
                {
                    r.name: f"{r.exception}: {r.error}"
                    for r in sorted(failures, key=lambda r: r.name)
                    if r.status == "error"
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
