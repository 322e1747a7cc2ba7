"""What the benchmarks share: where the reference data lives and how results are written."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

ROOT = Path(__file__).resolve().parents[1]
#: The paper's tables and timm's results: ``shared/reference`` beside the checkout, or elsewhere
#: (a machine the checkout was copied to without it) by DNNPROF_REFERENCE_DIR.
REFERENCE = Path(os.environ.get("DNNPROF_REFERENCE_DIR") or ROOT.parent / "shared" / "reference")
RESULTS = ROOT / "bench" / "results"

if TYPE_CHECKING:
    from bench.child import EngineOutput


def environment() -> dict:
    """Versions and hardware, read without creating a CUDA context in this (parent) process: the
    GPU figures come from the fresh measuring processes, whose memory must be theirs alone."""
    from importlib import metadata

    from workers.devices import cpu_model, nvml_gpu_names
    from workers.engine.fingerprint import _nvml_driver

    env = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": metadata.version("torchvision"),
        "timm": metadata.version("timm"),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    gpus = nvml_gpu_names()
    if gpus:
        env["gpu"] = gpus[0]
        env["gpus"] = len(gpus)
        env["driver"] = _nvml_driver()
        env["cuda"] = str(torch.version.cuda)
        env["cudnn"] = torch.backends.cudnn.version()
    return env


def write(name: str, payload: dict) -> Path:
    """``bench/results/<name>.json`` (or ``$DNNPROF_BENCH_RESULTS/<name>.json``)."""
    results = Path(os.environ.get("DNNPROF_BENCH_RESULTS") or RESULTS)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}", file=sys.stderr)
    return path


def child(kind: str, request: dict, timeout_s: float | None = None) -> bytes:
    """Run one fresh measuring process (``bench.child``) and return what it printed."""
    import msgspec

    out = subprocess.run(
        [sys.executable, "-m", "bench.child", kind, msgspec.json.encode(request).decode()],
        cwd=ROOT,
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.child {kind} failed ({out.returncode}): {out.stderr.decode()[-2000:]}")
    return out.stdout


def engine_process(info, settings, process: int = 0, start: str = "fresh", **config) -> EngineOutput:
    """One process of the engine, started as the service's job starts the runner
    (workers/launch.py): a fresh interpreter, or forked from the template; its ``start`` phase
    (launch to the engine's first step) recorded."""
    import msgspec

    from bench.child import EngineOutput

    request = {"model": info, "settings": settings, "process": process, "config": config}
    return msgspec.json.decode(launched_child("engine", request, start), type=EngineOutput)


def launched_child(kind: str, request: dict, start: str) -> bytes:
    """``bench.child`` through workers/launch.py, as the job starts the runner; the output read
    from its file."""
    import tempfile

    import msgspec

    from workers.launch import launch

    with tempfile.TemporaryDirectory(prefix="dnnprof-bench-") as tmp:
        out, log = Path(tmp) / "out", Path(tmp) / "log"
        argv = [kind, msgspec.json.encode(request).decode(), str(out)]
        proc = launch("bench.child", argv, dict(os.environ), log, start)
        code = proc.wait()
        if code != 0 or not out.exists():
            raise RuntimeError(f"bench.child {kind} ({start}) failed ({code}): {log.read_text()[-2000:]}")
        return out.read_bytes()


def assemble(info, settings, outputs, job_wall_s: float | None = None):
    """The profile from several fresh processes, as the job assembles it."""
    from workers.aggregate import assemble as assemble_parts

    return assemble_parts(
        info,
        settings,
        [s for o in outputs for s in o.statics],
        [c for o in outputs for c in o.cells],
        [o.end for o in outputs],
        job_wall_s=job_wall_s,
    )


def stamp(message: str) -> None:
    """Progress with a timestamp, so a run cut off still says how far it got."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
