"""Each runtime's own layer profiler, its times given the eager model's module paths.

- eager: ``torch.profiler`` with a ``record_function`` range per module (forward pre/post hooks:
  the profiler's ``with_modules`` follows TorchScript only); each top-level op's time goes to the
  innermost module range around it: the ops' CPU time, on CUDA their kernels' device time (CUPTI).
  The time between ops (Python, the dispatcher, the ranges themselves) is unattributed.
- onnxruntime: a session of its own with ``enable_profiling`` (the timed session stays as it
  was); one ``Node`` event per node and run (``<node>_kernel_time``), mapped through the export.
- openvino: a compiled model of its own with ``PERF_COUNT``; ``get_profiling_info()`` after each
  run, the executed nodes' ``real_time`` (its CPU plugin may run nodes in parallel: times overlap).
- compile (the CPU): a compile of its own with inductor's provenance on, each kernel's CPU time to
  the module(s) of its origin FX nodes (:mod:`.compiled_layers`).

An ONNX node is given the module whose parameter it reads (the exporter names initializers by
their parameter's name, and a batch norm folded into a convolution keeps the convolution's
weight), else the innermost module of its ``pkg.torch.onnx.name_scopes``. A node a runtime made
(ORT's NCHWc ``relu_nchwc``, named after a tensor) is traced to the original node of its op type
that produced that tensor; a layout conversion a runtime inserted (ORT's ``ReorderInput`` and
``ReorderOutput``, OpenVINO's ``Reorder``) goes whole to the node it serves, through the edges of
the graph the runtime runs; a node nothing explains (one an optimiser made, one the exporter left
without a scope) stays unattributed.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from dnnprof.contract import LayerProfile
from workers.engine.device import autocast_for
from workers.engine.layers import ModuleTree, NodeTime, ProfiledPass, build_profile, op_class

#: Profiled runs last about this long in all, between these counts.
PROFILED_S = 0.5
MIN_RUNS, MAX_RUNS = 3, 20
MODULE_RANGE = "dnnprof.module::"


def profiled_runs(timed_ms_per_image: float | None, batch_size: int) -> int:
    if not timed_ms_per_image:
        return MIN_RUNS
    per_run_s = timed_ms_per_image * batch_size / 1e3
    return max(MIN_RUNS, min(MAX_RUNS, math.ceil(PROFILED_S / per_run_s)))


def profile_layers(
    runtime: str, prepared, model: nn.Module, x: torch.Tensor, tree: ModuleTree, timed_ms: float | None
) -> LayerProfile:
    """One batch size's layer profile in ``runtime``'s profiler (``x`` is the batch, on the device
    and in the dtype the cells ran; ``prepared`` what the runtime prepared)."""
    runs = profiled_runs(timed_ms, x.shape[0])
    if runtime == "eager":
        measured = profile_eager(model, x, runs)
    elif runtime == "onnxruntime":
        measured = profile_onnxruntime(prepared.onnx_path, x, runs, tree)
    elif runtime == "openvino":
        measured = profile_openvino(prepared.onnx_path, x, runs, tree)
    elif runtime == "compile" and x.device.type == "cpu":
        from workers.engine.compiled_layers import profile_compiled  # inductor: imported when used

        measured = profile_compiled(prepared, x, runs, tree)
    else:
        raise ValueError(f"the {runtime} runtime has no layer profiler here")
    return build_profile(tree, measured, timed_ms)


# -- eager -------------------------------------------------------------------------------------


@contextlib.contextmanager
def module_ranges(model: nn.Module) -> Iterator[None]:
    """A ``record_function`` range around every module's forward, named by its path."""
    paths = {m: p for p, m in model.named_modules()}
    open_ranges: list[torch.autograd.profiler.record_function] = []

    def enter(module: nn.Module, args) -> None:
        rf = torch.autograd.profiler.record_function(MODULE_RANGE + paths.get(module, "?"))
        rf.__enter__()
        open_ranges.append(rf)

    def leave(module: nn.Module, args, out) -> None:
        if open_ranges:
            open_ranges.pop().__exit__(None, None, None)

    handles = []
    for module in paths:
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def profile_eager(model: nn.Module, x: torch.Tensor, runs: int) -> ProfiledPass:
    cuda = x.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync: Callable[[], None] = torch.cuda.synchronize if cuda else (lambda: None)
    model(x)  # warm, before the ranges
    forward_s = 0.0
    with module_ranges(model), torch.profiler.profile(activities=activities) as prof:
        model(x)  # the first forward under the profiler is not counted (skip_runs=1 below)
        sync()
        for _ in range(runs):
            start = time.perf_counter()
            model(x)
            sync()
            forward_s += time.perf_counter() - start
    return ProfiledPass(
        runtime="eager",
        source=(
            "torch.profiler, a record_function range per module (forward hooks): each top-level "
            + ("op's CUDA kernels' device time (CUPTI)" if cuda else "aten op's CPU time")
            + " to the innermost module around it; between the ops: unattributed"
        ),
        runs=runs,
        batch_size=x.shape[0],
        forward_s=forward_s,
        nodes=_eager_nodes(prof.events(), cuda, skip_runs=1),
    )


def _eager_nodes(events, cuda: bool, skip_runs: int) -> list[NodeTime]:
    """Each top-level op (no op above it, a module range or nothing) with its module, the first
    ``skip_runs`` forwards' ops dropped (the root's ranges count the forwards)."""
    roots = [e for e in events if e.name == MODULE_RANGE and e.cpu_parent is None]
    roots.sort(key=lambda e: e.time_range.start)
    keep_from = roots[skip_runs].time_range.start if len(roots) > skip_runs else -math.inf
    nodes = []
    for e in events:
        if e.name.startswith(MODULE_RANGE) or e.time_range.start < keep_from:
            continue
        if getattr(e, "device_type", None) is not None and e.device_type != torch.autograd.DeviceType.CPU:
            continue
        parent, path = e.cpu_parent, None
        if parent is not None and not parent.name.startswith(MODULE_RANGE):
            continue  # inside another op: counted with it
        if parent is not None:
            path = parent.name[len(MODULE_RANGE) :]
        us = e.device_time_total if cuda else e.cpu_time_total
        nodes.append(NodeTime(name=e.name, kind=e.name, seconds=us / 1e6, path=path))
    return nodes


# -- ONNX: one map from a runtime's node names to module paths -----------------------------------


#: A runtime node's neighbours in the runtime's own graph, the node it serves first: (name, op type).
Serves = dict[str, list[tuple[str, str | None]]]


class OnnxOrigins:
    """The exported graph's nodes and the module each came from; with ``serves`` (from the graph as
    the runtime runs it), where each layout conversion it inserted belongs."""

    def __init__(self, onnx_path: Path, tree: ModuleTree, serves: Serves | None = None) -> None:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        self.tree = tree
        self.nodes = {n.name: n for n in graph.node}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.serves = serves or {}

    def module_of(self, node) -> str | None:
        for name in node.input:
            if name in self.tree.owner:
                return self.tree.owner[name]
        for prop in node.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                with contextlib.suppress(ValueError, SyntaxError):
                    scopes = ast.literal_eval(prop.value)
                    for scope in reversed(scopes[:-1]):  # the last is the op's own name
                        if scope in self.tree.types:
                            return scope
        return None

    def resolve(self, name: str, op_type: str | None = None) -> str | None:
        """The module of a runtime's node ``name``: an ONNX node's, or that of a node the runtime
        made, named after a tensor (the original node of ``op_type`` that produced it); a layout
        conversion the runtime inserted goes whole to the node it serves (an input reorder to its
        consumer, any other to its producer)."""
        path = self._original(name, op_type)
        inserted = name in self.serves and name not in self.nodes
        if path is not None or not inserted or op_class(op_type or "") != "data movement":
            return path
        for neighbour, kind in self.serves[name]:
            if (path := self._original(neighbour, kind)) is not None:
                return path
        return None

    def _original(self, name: str, op_type: str | None) -> str | None:
        node = self.nodes.get(name) or self.nodes.get(name.split("/")[0])  # OV: "<node>/WithoutBiases"
        if node is None:
            # ORT names the node some fusions make "fused <node>" (Gemm with its activation).
            base = name.removeprefix("fused ")
            for suffix in ("_nchwc", "_token"):
                base = base.split(suffix)[0]
            node = self.nodes.get(base) or self.producer.get(base)
            if node is not None and op_type:
                node = self._upstream(node, op_type) or node
        return self.module_of(node) if node is not None else None

    def _upstream(self, node, op_type: str, depth: int = 4):
        """The nearest node of ``op_type`` at or above ``node`` (a fusion's primary op)."""
        frontier = [node]
        for _ in range(depth):
            for n in frontier:
                if n.op_type == op_type:
                    return n
            frontier = [self.producer[i] for n in frontier for i in n.input if i in self.producer]
        return None


# -- onnxruntime ---------------------------------------------------------------------------------


def profile_onnxruntime(onnx_path: Path, x: torch.Tensor, runs: int, tree: ModuleTree) -> ProfiledPass:
    import onnxruntime as ort

    feed_x = x.detach().float().cpu().numpy()
    with tempfile.TemporaryDirectory(prefix="dnnprof-ort-profile-") as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as the timed session
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        optimised = Path(tmp) / "optimised.onnx"  # its edges place the reorders it inserts
        options.optimized_model_filepath = str(optimised)
        options.log_severity_level = 3  # not the warning that an NCHWc graph is machine-specific
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        origins = OnnxOrigins(onnx_path, tree, _ort_serves(optimised))
        feed = {session.get_inputs()[0].name: feed_x}
        for _ in range(runs + 1):  # the first run is not counted
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    forward_s, nodes = _ort_nodes(events, origins)
    return ProfiledPass(
        runtime="onnxruntime",
        source="ONNX Runtime's profiling JSON (SessionOptions.enable_profiling): each node's "
        "<node>_kernel_time event, mapped through the export's parameter names and name scopes; "
        "the session's model_run is the forward",
        runs=runs,
        batch_size=x.shape[0],
        forward_s=forward_s,
        nodes=nodes,
    )


def _ort_serves(optimised: Path) -> Serves:
    """Each node of ORT's optimised graph with its neighbours: an input reorder serves its
    consumer, any other node its producer first."""
    import onnx

    if not optimised.exists():
        return {}
    nodes = onnx.load(str(optimised), load_external_data=False).graph.node
    producer = {out: n for n in nodes for out in n.output}
    consumers: dict[str, list] = {}
    for n in nodes:
        for tensor in n.input:
            consumers.setdefault(tensor, []).append(n)
    serves: Serves = {}
    for n in nodes:
        before = [producer[i] for i in n.input if i in producer]
        after = [c for out in n.output for c in consumers.get(out, [])]
        ordered = after + before if n.op_type.startswith("ReorderInput") else before + after
        serves[n.name] = [(m.name, m.op_type) for m in ordered]
    return serves


def _ort_nodes(events: list[dict], origins: OnnxOrigins) -> tuple[float, list[NodeTime]]:
    """(the counted forwards' seconds, their node times), the first model_run dropped."""
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    forward_s = sum(end - start for start, end in windows) / 1e6
    nodes: dict[str, NodeTime] = {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(start <= e["ts"] <= end for start, end in windows):
            continue
        node_name, op = name.removesuffix("_kernel_time"), e.get("args", {}).get("op_name", "")
        if node_name not in nodes:
            path = origins.resolve(node_name, op.removeprefix("Fused"))
            nodes[node_name] = NodeTime(name=f"{node_name} ({op})", kind=op, seconds=0.0, path=path)
        nodes[node_name].seconds += e["dur"] / 1e6
    return forward_s, list(nodes.values())


# -- openvino ------------------------------------------------------------------------------------


def profile_openvino(onnx_path: Path, x: torch.Tensor, runs: int, tree: ModuleTree) -> ProfiledPass:
    import openvino as ov

    core = ov.Core()
    config = {  # as the timed model (workers.engine.runtimes.onnx), with the counters on
        "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "INFERENCE_PRECISION_HINT": "f32",
        "PERF_COUNT": True,
    }
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
    origins = OnnxOrigins(onnx_path, tree, _openvino_serves(compiled))
    request = compiled.create_infer_request()
    array = x.detach().float().cpu().numpy()
    request.infer({0: array})  # not counted
    forward_s = 0.0
    nodes: dict[str, NodeTime] = {}
    for _ in range(runs):
        start = time.perf_counter()
        request.infer({0: array})
        forward_s += time.perf_counter() - start
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue  # OPTIMIZED_OUT, NOT_RUN: fused into another node, or nothing to do
            if info.node_name not in nodes:
                kind = f"{info.node_type}/{info.exec_type}"
                path = origins.resolve(info.node_name, info.node_type)
                nodes[info.node_name] = NodeTime(f"{info.node_name} ({kind})", info.node_type, 0.0, path)
            nodes[info.node_name].seconds += info.real_time.total_seconds()
    return ProfiledPass(
        runtime="openvino",
        source="OpenVINO's PERF_COUNT: get_profiling_info() after each run, each executed node's "
        "real_time, mapped through the export's parameter names and name scopes",
        runs=runs,
        batch_size=x.shape[0],
        forward_s=forward_s,
        nodes=list(nodes.values()),
        overlapping=True,
    )


def _openvino_serves(compiled) -> Serves:
    """Each node of the graph OpenVINO runs with its neighbours, its consumers first (a reorder it
    inserts converts a tensor for the node that reads it)."""
    serves: Serves = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        after = [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]
        before = [value.get_node() for value in op.input_values()]
        serves[op.get_friendly_name()] = [(n.get_friendly_name(), None) for n in after + before]
    return serves


# -- the profiled passes of one measuring process ----------------------------------------------


def profiled_passes(
    on_device, ctx, tree: ModuleTree, batch_sizes: tuple[int, ...], timed_ms: dict[int, float]
) -> Iterator[LayerProfile]:
    """The layer profile of each batch size, after (and apart from) every timed cell of this
    process; a batch size whose timed cell failed is not profiled, and a profiled pass that fails
    is a profile carrying its reason (the timed figures stand)."""
    runtime = on_device.prepared.report.name
    for batch_size in batch_sizes:
        if batch_size not in timed_ms:
            continue
        try:
            x = on_device.make_input(batch_size, ctx.device)
            with torch.inference_mode(), autocast_for(on_device.precision, ctx.device):
                profile = profile_layers(
                    runtime, on_device.prepared, on_device.model, x, tree, timed_ms[batch_size]
                )
        except Exception as exc:  # noqa: BLE001 - the profiled pass is an addition, never the profile's failure
            why = str(exc).splitlines()[0][:300] if str(exc) else ""
            profile = LayerProfile(
                batch_size=batch_size, runtime=runtime, error=f"{type(exc).__name__}: {why}"
            )
        finally:
            x = None
            ctx.release()
        yield profile
