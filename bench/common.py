"""What the benchmarks share: where the reference data lives and how results are written."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The paper's tables and timm's results: ``shared/reference`` beside the checkout, or elsewhere
#: (a machine the checkout was copied to without it) by DNNPROF_REFERENCE_DIR.
REFERENCE = Path(os.environ.get("DNNPROF_REFERENCE_DIR") or ROOT.parent / "shared" / "reference")
RESULTS = ROOT / "bench" / "results"


def environment() -> dict:
    env = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    from workers.devices import cpu_model

    env["cpu"] = cpu_model() or env["cpu"]
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = str(torch.version.cuda)
    return env


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return path
