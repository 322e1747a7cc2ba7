"""The graph FLOP counter against torch's (issue 42): each of the paper's 44 architectures (random
weights) exported to ONNX as the worker exports it, counted from the graph by
:func:`dnnprof.onnx_check.inspect_onnx` (what the API does with an upload) and by the catalogue's
count, ``torch.utils.flop_counter`` on the module (:func:`workers.engine.flops.count_flops`).
Parameters are compared too, on an unoptimised export (the optimiser folds BatchNormalization
into the convolutions, another set of parameters). A correctness sweep: nothing is timed.

    python -m bench.onnx_flops_sweep [--models ResNet-18,VGG-16] [--limit-s 600]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, environment, write
from dnnprof.paper import PAPER_MODELS

#: The gap issue 42 allows between the two counts.
TOLERANCE = 0.01


def one_model(paper_name: str) -> dict:
    """In this (fresh) process: the model exported and counted both ways."""
    import torch

    from dnnprof.catalogue import Catalogue
    from dnnprof.onnx_check import Limits, inspect_onnx
    from workers.catalogue import build_catalogue
    from workers.engine.flops import count_flops
    from workers.engine.models import build_model, count_params

    info = Catalogue({e.name: e for e in build_catalogue()}).resolve(paper_name).info
    torch.manual_seed(0)
    model = build_model(info, input_size=info.input_size).eval()
    size = info.input_size
    torch_flops = count_flops(model, torch.zeros(1, 3, size, size))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        with contextlib.redirect_stdout(open(os.devnull, "w")):
            torch.onnx.export(
                model,
                (torch.randn(2, 3, size, size),),
                str(path),
                dynamo=True,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},),
                opset_version=18,
                external_data=False,
                optimize=False,
            )
        summary = inspect_onnx(path.read_bytes(), Limits(max_bytes=2**31 - 1, max_nodes=10**6))
    gap = (summary.flops - torch_flops) / torch_flops if summary.flops and torch_flops else None
    return {
        "model": paper_name,
        "qualified": info.name,
        "torch_flops": torch_flops,
        "onnx_flops": summary.flops,
        "gap": gap,
        "within": gap is not None and abs(gap) <= TOLERANCE,
        "flops_note": summary.flops_note,
        "torch_params": count_params(model),
        "onnx_params": summary.params,
        "nodes": summary.nodes,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="")
    parser.add_argument("--limit-s", type=int, default=600, help="per model")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child: one model, JSON on stdout
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_model(args.one)))
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(PAPER_MODELS)
    rows = []
    for name in names:
        command = [sys.executable, "-m", "bench.onnx_flops_sweep", "--one", name]
        try:
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=args.limit_s)
            lines = done.stdout.strip().splitlines()
            row = (
                json.loads(lines[-1])
                if done.returncode == 0 and lines
                else {"model": name, "crashed": f"exit {done.returncode}: {done.stderr.strip()[-400:]}"}
            )
        except subprocess.TimeoutExpired:
            row = {"model": name, "crashed": f"over {args.limit_s} s"}
        rows.append(row)
        print(json.dumps(row), flush=True)
        write("onnx-flops-sweep", {"environment": environment(), "tolerance": TOLERANCE, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
