"""One fresh measuring process for the benchmarks, without the service: what the runner does for a
job, with the parts written to stdout instead of the store.

    python -m bench.child engine  '{"model": ..., "settings": ..., "process": 0}'
    python -m bench.child reference '{"model": ..., "batch_sizes": [1, 8], "device": "cpu"}'

``engine`` prints a msgspec-encoded :class:`EngineOutput`; ``reference`` prints the median
per-image milliseconds of ``torch.utils.benchmark.Timer.blocked_autorange`` (an independent
method: its own loop, its own run count by time, synchronising CUDA itself) per batch size,
around the model's forward or, with ``"runtime"``, around that runtime's own call.
"""

from __future__ import annotations

import gc
import json
import os
import sys

import msgspec

from dnnprof.config import Settings
from dnnprof.contract import ModelInfo, ProcessCell, ProcessEnd, ProcessStatic, ProfileSettings
from workers.launch import seconds_since_launch


class EngineOutput(msgspec.Struct, kw_only=True):
    statics: list[ProcessStatic]
    cells: list[ProcessCell]
    end: ProcessEnd


def engine(request: dict, *, staged: bool = False) -> bytes:
    from workers.engine.flops import count_model_flops
    from workers.engine.models import build_model
    from workers.engine.scenario import CollectingSink, ProcessPlan, ScenarioConfig, measure_process
    from workers.engine.timing import WarmupPolicy

    gc.freeze()  # as the runner does after its imports

    info = msgspec.convert(request["model"], ModelInfo)
    settings = msgspec.convert(request["settings"], ProfileSettings)
    sink = CollectingSink()
    config = dict(request.get("config", {}))
    if "warmup" in config:  # a warm-up policy to compare, as its fields
        config["warmup"] = WarmupPolicy(**config["warmup"])
    config = ScenarioConfig(device_class=settings.device, **config)
    plan = ProcessPlan(process=request.get("process", 0), layers=settings.layers_batch_sizes)
    model = None
    if staged:  # the host-side work first, then wait for the device to be ours
        model = build_model(info, input_size=settings.input_size)
        published = info.published_gmacs if settings.input_size == info.input_size else None
        plan = ProcessPlan(
            process=plan.process, flops=count_model_flops(model, settings.input_size, published)
        )
        sys.stdout.write("ready\n")  # the first line; the outcome follows once measured
        sys.stdout.flush()
        sys.stdin.readline()
    start_s = seconds_since_launch()  # as the runner counts it: launch to the first step
    end = measure_process(info, settings, config, plan, sink, model=model)
    end.phases = {"start": start_s, **end.phases}
    return msgspec.json.encode(EngineOutput(statics=sink.statics, cells=sink.cells, end=end))


def reference(request: dict) -> bytes:
    import torch
    from torch.utils import benchmark

    from workers.engine.host import choose_threads
    from workers.engine.models import build_model

    info = msgspec.convert(request["model"], ModelInfo)
    device = torch.device(request["device"])
    if device.type == "cpu":
        torch.set_num_threads(choose_threads(Settings.from_env().cpu_threads)[0])  # the engine's count
    else:
        torch.backends.cudnn.benchmark = True
    model = build_model(info).to(device)
    size = request.get("input_size") or info.input_size
    runtime = request.get("runtime", "eager")
    out = {}
    with torch.inference_mode():
        for batch in request["batch_sizes"]:
            x = torch.randn(batch, 3, size, size, device=device)
            if runtime == "eager":
                stmt, names = "model(x)", {"model": model, "x": x}
            else:
                stmt, names = "forward()", {"forward": runtime_call(runtime, info, model, x, request)}
            timer = benchmark.Timer(stmt=stmt, globals=names, num_threads=torch.get_num_threads())
            timer.timeit(3)  # warm-up (autotuning, caches; a compile compiles here)
            measurement = timer.blocked_autorange(min_run_time=request.get("min_run_time", 2.0))
            out[str(batch)] = measurement.median * 1000 / batch
    return json.dumps(out).encode()


def runtime_call(runtime: str, info: ModelInfo, model, x, request: dict):
    """The runtime's own call on ``x`` (ONNX Runtime's ``run``, OpenVINO's infer request, the
    compiled module), prepared as the runtime prepares it, for the reference's timer to time."""
    import tempfile
    from pathlib import Path

    from workers.engine.device import open_device
    from workers.engine.runtimes import runtime_for

    settings = ProfileSettings(
        model=info.name, device=request["device"], batch_sizes=tuple(request["batch_sizes"]),
        runs=1, precision="fp32", input_size=x.shape[-1], runtime=runtime,
    )  # fmt: skip
    ctx = open_device(request["device"], "fp32")
    with tempfile.TemporaryDirectory(prefix="dnnprof-reference-") as cache:
        prepared = runtime_for(runtime, request["device"]).prepare(model, settings, ctx, Path(cache))
    return prepared.bind(x)


def main(argv: list[str] | None = None) -> int:
    """``KIND PAYLOAD [OUTPUT]``: the output to stdout, or to the file OUTPUT (a process forked
    from the template shares one log for stdout and stderr)."""
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    argv = sys.argv[1:] if argv is None else argv
    kind, payload = argv[0], json.loads(argv[1])
    if kind == "ready":  # nothing: a first fork that waits until the template has imported
        output = b""
    elif kind == "staged":
        output = engine(payload, staged=True)
    else:
        output = {"engine": engine, "reference": reference}[kind](payload)
    if len(argv) > 2:
        with open(argv[2], "wb") as out:
            out.write(output)
    else:
        sys.stdout.buffer.write(output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
