"""Layer profiles (issue 41): what ``layers: true`` costs, and the eager layer times against an
independent timer.

``cost``: the same profile with and without ``layers: true`` in fresh measuring processes
(``bench.child engine``), the order alternating round by round so a drift of the host hits both;
the figure is each round's wall time with layers over without (the process's ``wall_s``), and
the median of those ratios (target <= 1.15).

``check``: the eager layer profile of a model (random weights, batch size 1), then each of its top
layers (leaf modules, by time) timed alone on the input shape it was called with, by
``torch.utils.benchmark.Timer.blocked_autorange`` in a fresh process of its own with the same
thread count: the ratio of the layer's profiled time to the Timer's median (target 0.8-1.25),
over ``--rounds`` rounds (the median per layer), beside a second Timer that cycles through copies
of the layer whose weights together exceed the cache (``ratio_cold``): alone on repeat a layer's
weights stay in cache, in the network the other layers' weights pass through it between calls;
beside a third that times single calls (``perf_counter``), each after a read pass over a buffer
larger than the cache (``ratio_flushed``: nothing of the layer's in cache);
and beside a reference with no profiler, the layer's time in the network from ``perf_counter``
hooks (``ratio_in_network``: what the profiler itself adds).

    python -m bench.layers cost [--model resnet18] [--batch-sizes 1,2] [--rounds 3]
    python -m bench.layers cost --model resnet18 --batch-sizes 1,2,4,8,16,32,64   # a default profile
    python -m bench.layers check [--model resnet18] [--top 5]
    python -m bench.layers check --model resnet50 --top 10 --rounds 5             # the issue's check
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import torch

from bench.common import engine_process, environment, stamp, write
from dnnprof.config import Settings
from dnnprof.contract import ModelInfo, ProfileSettings

if TYPE_CHECKING:
    from workers.engine.layers import ModuleTree

MODELS = {
    "resnet18": ModelInfo(name="tv:resnet18", source="tv", architecture="resnet18", input_size=224),
    # The issue's own check: resnet50's top ten layers against Timer.
    "resnet50": ModelInfo(name="tv:resnet50", source="tv", architecture="resnet50", input_size=224),
    "mobilenet_v3_small": ModelInfo(
        name="tv:mobilenet_v3_small", source="tv", architecture="mobilenet_v3_small", input_size=224
    ),
}


def cost(model: str, batch_sizes: tuple[int, ...], rounds: int) -> dict:
    info = MODELS[model]
    base = ProfileSettings(
        model=info.name, device="cpu", batch_sizes=batch_sizes, runs=10, precision="fp32", input_size=224
    )
    rows = []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        walls, cells = {}, {}
        for layers in order:
            settings = ProfileSettings(
                **{f: getattr(base, f) for f in base.__struct_fields__ if f != "layers_batch_sizes"},
                layers_batch_sizes=(min(batch_sizes),) if layers else (),
            )
            out = engine_process(info, settings, cpu_threads=Settings.from_env().cpu_threads)
            walls[layers] = out.end.wall_s
            cells[layers] = {
                c.batch_size: statistics.mean(c.run_seconds) * 1e3 / c.batch_size for c in out.cells
            }
            stamp(f"round {r + 1}: layers={layers} wall {out.end.wall_s:.2f} s, phases {out.end.phases}")
        rows.append(
            {
                "without_s": walls[False],
                "with_s": walls[True],
                "ratio": walls[True] / walls[False],
                # The timed cells' mean ms per image, which layers: true must leave as they are.
                "ms_per_image_without": cells[False],
                "ms_per_image_with": cells[True],
            }
        )
    ratios = [row["ratio"] for row in rows]
    return {
        "model": model,
        "batch_sizes": list(batch_sizes),
        "rounds": rows,
        "median_ratio": statistics.median(ratios),
    }


def check(model: str, top: int, rounds: int = 1) -> dict:
    """The model's top leaf layers by profiled time, against Timer, ``rounds`` times: each round
    a profiled pass here and a fresh Timer process, the order alternating from the second round
    (the layers are the first round's), so a drift of the host between the two hits both sides;
    per layer the median of its rounds' ratios."""
    from workers.engine.host import choose_threads
    from workers.engine.layers import module_tree
    from workers.engine.models import build_model

    info = MODELS[model]
    threads = choose_threads(Settings.from_env().cpu_threads)[0]  # DNNPROF_CPU_THREADS, as the engine
    torch.set_num_threads(threads)
    net = build_model(info).eval()
    x = torch.randn(1, 3, info.input_size, info.input_size)
    shapes = input_shapes(net, x)
    leaves = {p for p, m in net.named_modules() if not list(m.children())}
    tree = module_tree(net, info.input_size)  # the per-module FLOP count: once, not per round
    first = profiled_pass(net, tree, x)
    ranked = sorted((x for x in first.layers if x.path in leaves), key=lambda x: -x.ms_per_image)[:top]
    request = {
        "model": model,
        "threads": threads,
        "layers": [{"path": x.path, "shape": shapes[x.path]} for x in ranked],
    }
    runs = []
    for r in range(rounds):
        if r == 0:
            profile, timed = first, timer_process(request)
        elif r % 2:
            timed, profile = timer_process(request), profiled_pass(net, tree, x)
        else:
            profile, timed = profiled_pass(net, tree, x), timer_process(request)
        mine = {layer.path: layer.ms_per_image for layer in profile.layers}
        hooked = hook_timed(net, x, [x.path for x in ranked])
        warm, cold, flushed = timed["warm"], timed["cold"], timed["flushed"]
        runs.append(
            {
                "profiled_runs": profile.runs,
                "forward_ms": profile.forward_ms_per_image,
                "unattributed_ms": profile.unattributed_ms_per_image,
                "loadavg_1m": os.getloadavg()[0],
                "ratios": {x.path: mine[x.path] / warm[x.path] for x in ranked},
                "ratios_cold": {x.path: mine[x.path] / cold[x.path] for x in ranked},
                "ratios_flushed": {x.path: mine[x.path] / flushed[x.path] for x in ranked},
                "ratios_in_network": {x.path: mine[x.path] / hooked[x.path] for x in ranked},
                "in_network_ms": hooked,
                "profiled_ms": {x.path: mine[x.path] for x in ranked},
                "timer_ms": {x.path: warm[x.path] for x in ranked},
                "timer_cold_ms": {x.path: cold[x.path] for x in ranked},
                "timer_flushed_ms": {x.path: flushed[x.path] for x in ranked},
            }
        )
        last = runs[-1]
        said = (
            f"{k} {v:.2f} ({last['ratios_cold'][k]:.2f} cold, {last['ratios_flushed'][k]:.2f} flushed,"
            f" {last['ratios_in_network'][k]:.2f} in-network)"
            for k, v in last["ratios"].items()
        )
        stamp(f"round {r + 1}: " + ", ".join(said))
    # Each figure of a layer's row: the median over the rounds of that round's figure.
    medians = {
        "profiled_ms": "profiled_ms",
        "timer_ms": "timer_ms",
        "timer_cold_ms": "timer_cold_ms",
        "ratio": "ratios",
        "ratio_cold": "ratios_cold",
        "timer_flushed_ms": "timer_flushed_ms",
        "ratio_flushed": "ratios_flushed",
        "in_network_ms": "in_network_ms",
        "ratio_in_network": "ratios_in_network",
    }
    rows = [
        {
            "path": x.path,
            "type": x.type,
            "shape": shapes[x.path],
            "ratios": [run["ratios"][x.path] for run in runs],
            **{out: statistics.median(run[key][x.path] for run in runs) for out, key in medians.items()},
        }
        for x in ranked
    ]
    return {"model": model, "threads": threads, "rounds": runs, "layers": rows}


def hook_timed(net: torch.nn.Module, x: torch.Tensor, paths: list[str], runs: int = 10) -> dict[str, float]:
    """Each layer's time in the network with no profiler: ``perf_counter`` in a forward pre-hook
    and a forward hook on it (the median over ``runs`` forwards, after 3 warm ones). Alone on
    repeat a layer runs faster than in the network (the state the other layers leave), so this
    is the reference that isolates the profiler's own effect."""
    started: dict[str, float] = {}
    took: dict[str, list[float]] = {p: [] for p in paths}

    def before(path: str):
        def hook(module, args) -> None:
            started[path] = time.perf_counter()

        return hook

    def after(path: str):
        def hook(module, args, out) -> None:
            took[path].append((time.perf_counter() - started[path]) * 1e3)

        return hook

    hooks = []
    for path in paths:
        module = net.get_submodule(path)
        hooks += [module.register_forward_pre_hook(before(path)), module.register_forward_hook(after(path))]
    try:
        with torch.inference_mode():
            for _ in range(3 + runs):
                net(x)
    finally:
        for h in hooks:
            h.remove()
    return {p: statistics.median(took[p][3:]) for p in paths}


def input_shapes(net: torch.nn.Module, x: torch.Tensor) -> dict[str, list[int]]:
    """Each module's input shape in one forward (forward pre-hooks, removed after)."""
    shapes: dict[str, list[int]] = {}

    def record(path: str):
        def hook(module, args) -> None:  # returns None: the input stays as it is
            shapes.setdefault(path, list(args[0].shape))

        return hook

    hooks = [m.register_forward_pre_hook(record(p)) for p, m in net.named_modules()]
    with torch.inference_mode():
        net(x)
    for h in hooks:
        h.remove()
    return shapes


def profiled_pass(net: torch.nn.Module, tree: ModuleTree, x: torch.Tensor):
    """The eager layer profile as the worker makes it: 5 warm forwards, then the profiled pass
    (as many runs as it would take after their median)."""
    from workers.engine.layer_profilers import profile_layers

    with torch.inference_mode():
        warm = []
        for _ in range(5):
            start = time.perf_counter()
            net(x)
            warm.append((time.perf_counter() - start) * 1e3)
        return profile_layers("eager", None, net, x, tree, timed_ms=statistics.median(warm))


def timer_process(request: dict) -> dict[str, dict[str, float]]:
    """Each layer of ``request`` alone under Timer, in a fresh process (``bench.layers timer``)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.layers", "timer", json.dumps(request)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout)


#: More than this host's last-level cache, as the rest of the network's weights are between two
#: calls of a layer in a forward (resnet50: ~100 MB): the weights the cold-weights Timer cycles
#: through, and the buffer read before each of the flushed reading's calls.
BEYOND_CACHE_BYTES = 256 * 2**20


def cycling(copies: list[torch.nn.Module], x: torch.Tensor):
    """A call of the next copy on ``x``, round and round."""
    turn = itertools.cycle(copies)
    return lambda: next(turn)(x)


#: Single calls timed by the ``flushed`` reading, per layer.
FLUSHED_CALLS = 30


def flushed_median(module: torch.nn.Module, x: torch.Tensor, flush: torch.Tensor) -> float:
    """The median of single calls of ``module`` on ``x``, each after a read pass over ``flush``
    (larger than the last-level cache): weights, input, scratch all evicted. Timed by
    ``perf_counter`` around the one call: ``Timer.timeit(1)`` runs two warm-up calls first, which
    would bring the layer back into cache."""
    took = []
    for _ in range(FLUSHED_CALLS):
        flush.sum()
        start = time.perf_counter()
        module(x)
        took.append((time.perf_counter() - start) * 1e3)
    return statistics.median(took)


def timer(request: dict) -> dict[str, dict[str, float]]:
    """Each layer alone on its recorded shape (a fresh process: ``check`` starts it), three ways:
    on one module, its weights in cache from the call before (``warm``: the issue's check);
    cycling through copies of it that together exceed the cache (``cold``: as in the network,
    where the other layers' weights pass through the cache between two of its calls); and single
    calls after the whole cache is evicted (``flushed``)."""
    import copy

    from torch.utils import benchmark

    from workers.engine.models import build_model

    torch.set_num_threads(request["threads"])
    net = build_model(MODELS[request["model"]]).eval()
    out: dict[str, dict[str, float]] = {"warm": {}, "cold": {}, "flushed": {}}
    flush = torch.ones(BEYOND_CACHE_BYTES // 4)  # one buffer for every layer's flushed reading
    with torch.inference_mode():
        for layer in request["layers"]:
            module, x = net.get_submodule(layer["path"]), torch.randn(layer["shape"])
            t = benchmark.Timer(stmt="m(x)", globals={"m": module, "x": x}, num_threads=request["threads"])
            t.timeit(5)
            out["warm"][layer["path"]] = t.blocked_autorange(min_run_time=1.0).median * 1e3
            size = sum(p.numel() * p.element_size() for p in module.parameters()) or 1
            copies = [copy.deepcopy(module) for _ in range(max(2, min(256, BEYOND_CACHE_BYTES // size)))]
            t = benchmark.Timer(stmt="f()", globals={"f": cycling(copies, x)}, num_threads=request["threads"])
            t.timeit(len(copies))
            out["cold"][layer["path"]] = t.blocked_autorange(min_run_time=1.0).median * 1e3
            out["flushed"][layer["path"]] = flushed_median(module, x, flush)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers")
    parser.add_argument("what", choices=("cost", "check", "timer"))
    parser.add_argument("payload", nargs="?")
    parser.add_argument("--model", default="resnet18", choices=sorted(MODELS))
    parser.add_argument("--batch-sizes", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    if args.what == "timer":
        print(json.dumps(timer(json.loads(args.payload))))
        return 0
    if args.what == "cost":
        sizes = tuple(int(b) for b in args.batch_sizes.split(","))
        result = cost(args.model, sizes, args.rounds)
    else:
        result = check(args.model, args.top, args.rounds)
    result["environment"] = environment()
    path = write(f"layers-{args.what}-{args.model}-cpu", result)
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=1))
    stamp(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
