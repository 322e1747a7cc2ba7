"""Per-layer profiles (issue 41): each runtime's own profiler mapped onto the eager model's module
tree, each layer's time beside its FLOPs, from a profiled pass apart from the timed cells."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from dnnprof.contract import ModelInfo, ProcessCell, ProfileRequest, ProfileSettings
from dnnprof.profiling import FieldRefused, check_layers, layer_batch_sizes
from dnnprof.runtimes import layer_profiler_refusal
from workers.engine.compiled_layers import (
    NodeModules,
    common_ancestor,
    graph_call_nodes,
    module_path,
    region_kernels,
)
from workers.engine.layers import ProfiledPass, build_profile, module_tree, op_class
from workers.engine.scenario import CollectingSink, ProcessPlan, ScenarioConfig, measure_process
from workers.engine.timing import WarmupPolicy
from workers.runtime_support import available_runtimes

SIZE = 128
#: body.0's FLOPs per image by hand: 2 x (3 inputs x 32 x 32) x 1024 outputs x 16 x 16 positions
#: ((128 + 2 x 12 padding - 32) / stride 8 + 1 = 16). 3,072 multiply-adds per output element, so
#: the memory-bound ops after it (ReLU, pooling: no FLOPs) have little to read (on a host whose
#: memory other processes share, they slow the most), and a forward long enough (~1.6 GFLOPs an
#: image) that a runtime's fixed cost per call is small beside it.
HEAVY_FLOPS = 2 * 3 * 1024 * 1024 * 16 * 16
#: The rest: the head's 2 x 1024 x 10 (the counter counts addmm as its matmul). body.0 holds
#: 99.999% of the FLOPs.
OTHER_FLOPS = 2 * 1024 * 10


class OneHeavyLayer(nn.Module):
    """A model with a known answer: one convolution (``body.0``) holds >= 95% of the FLOPs."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 1024, 32, stride=8, padding=12), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(1024, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.body(x)), 1))


INFO = ModelInfo(name="dnnprof:one_heavy", source="dnnprof", architecture="one_heavy", input_size=SIZE)


def settings(
    runtime: str = "eager", layers: tuple[int, ...] = (2,), batch_sizes: tuple[int, ...] = (1, 2)
) -> ProfileSettings:
    return ProfileSettings(
        model=INFO.name,
        device="cpu",
        batch_sizes=batch_sizes,
        runs=3,
        precision="fp32",
        input_size=SIZE,
        runtime=runtime,
        layers_batch_sizes=layers,
    )


class OrderSink(CollectingSink):
    """Records what arrives in which order, and at each timed cell whether anything of the
    profiled pass was live: a profiler, or a hook on any module of the model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.order, self.live_at_cells = model, [], []

    def cell(self, cell: ProcessCell) -> None:
        hooks = any(m._forward_hooks or m._forward_pre_hooks for m in self.model.modules())
        self.live_at_cells.append(hooks or torch._C._autograd._profiler_enabled())
        self.order.append(("cell", cell.batch_size))
        super().cell(cell)

    def layers(self, profile) -> None:
        self.order.append(("layers", profile.batch_size))
        super().layers(profile)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return OneHeavyLayer().eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("runtimes")  # one export for onnxruntime and openvino


def profile_in(runtime: str, model: nn.Module, cache, batch_sizes: tuple[int, ...] = (1, 2)) -> OrderSink:
    if runtime not in available_runtimes("cpu"):
        pytest.skip(f"the {runtime} runtime is not installed here")
    config = ScenarioConfig(
        device_class="cpu",
        warmup=WarmupPolicy(min_seconds=0.05),
        min_timed_s=0.05,
        cache_dir=cache,
        # One measuring thread: on a small shared host a tiny op waiting at the barrier for a
        # descheduled pool thread takes as long as the scheduler makes it, which says nothing
        # about the layer (the ReLU and the pooling read 3 ms an image with 2 threads, 0.1 alone).
        cpu_threads=1,
    )
    sink = OrderSink(model)
    s = settings(runtime, batch_sizes=batch_sizes)
    measure_process(INFO, s, config, ProcessPlan(layers=s.layers_batch_sizes), sink, model=model)
    return sink


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime", "openvino", "compile"])
def test_the_layer_holding_the_flops_holds_the_time_in_every_runtime(
    runtime, model, cache, tmp_path, monkeypatch
):
    # A cold compile (inductor reads the variable on each compile); in compile one batch size, as
    # each is compiled anew (the outputs check, the timed cell, the profiled pass: ~30 s in all here).
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    batch_sizes = (2,) if runtime == "compile" else (1, 2)
    sink = profile_in(runtime, model, cache, batch_sizes)
    [profile] = sink.layer_profiles
    assert profile.error is None and profile.runtime == runtime and profile.batch_size == 2
    by_path = {layer.path: layer for layer in profile.layers}
    heavy = by_path["body.0"]
    assert heavy.type == "Conv2d" and heavy.op_type == "convolution" and heavy.nodes
    assert heavy.share >= 0.85, [(x.path, round(x.share, 3)) for x in profile.layers]
    assert max(profile.layers, key=lambda x: x.ms_per_image).path == "body.0"
    # FLOPs per layer: the hand count, and they add up exactly to the profile's FLOPs.
    assert heavy.flops == HEAVY_FLOPS and heavy.params == 3 * 1024 * 1024 + 1024
    assert sum(x.flops for x in profile.layers) == HEAVY_FLOPS + OTHER_FLOPS
    assert profile.flops == sink.statics[0].flops.flops == HEAVY_FLOPS + OTHER_FLOPS
    assert heavy.flops_per_s == pytest.approx(HEAVY_FLOPS / (heavy.ms_per_image / 1e3))
    # Unattributed time is reported, never spread: the forward is the layers plus it.
    assert profile.unattributed_ms_per_image >= 0
    assert profile.unattributed_ms_per_image == pytest.approx(
        max(0.0, profile.forward_ms_per_image - profile.attributed_ms_per_image)
    )
    assert profile.attributed_ms_per_image == pytest.approx(sum(x.ms_per_image for x in profile.layers))
    assert profile.node_coverage is not None and profile.node_coverage >= 0.95
    # The layout conversion the runtime inserted for body.0 is body.0's: ORT's and OpenVINO's
    # Reorder nodes, the C++ kernel inductor generates to make its input and weight channels-last.
    if runtime in ("onnxruntime", "openvino"):
        assert any("Reorder" in name for name in heavy.nodes), heavy.nodes
    if runtime == "compile":
        assert "aten::convolution" in heavy.nodes and any(n.startswith("graph_") for n in heavy.nodes)
        # Inductor fuses the ReLU (body.1) with the pooling (pool): the kernel goes whole to their
        # deepest common ancestor, the model's own row, saying so; guards and the graph's wrapper
        # around the kernels are unattributed.
        fused = [n for n in by_path[""].nodes if "(fused: body.1, pool)" in n]
        assert fused and by_path[""].ms_per_image > 0 and "body.1" not in by_path
        assert profile.unattributed_ms_per_image > 0
    shares = {o.op_type: o for o in profile.op_types}
    conv, moved = shares["convolution"], shares.get("data movement")
    assert conv.flop_share > 0.99
    # Inductor's conversion copies the 12 MB weight on every call (a memory-bound tenth of the
    # time here): data movement, as a Reorder is in the other runtimes, where it is a small one.
    converted = moved.time_share if runtime == "compile" and moved else 0.0
    assert conv.time_share + converted >= 0.85
    assert "separate profiled pass" in profile.note and profile.timed_ms_per_image
    # The profiled pass came after every timed cell, none of which ran with it.
    assert sink.order == [*(("cell", b) for b in batch_sizes), ("layers", 2)]
    assert sink.live_at_cells == [False] * len(batch_sizes)
    assert not torch._inductor.config.cpp.enable_kernel_profile  # the profiled compile's settings undone
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class Event:
    """A profiler event as the compile profiler reads one (``FunctionEvent``'s fields it uses)."""

    def __init__(self, name: str, start: float, us: float, children: tuple[Event, ...] = ()) -> None:
        self.name, self.cpu_time_total, self.cpu_children = name, us, list(children)
        self.time_range = SimpleNamespace(start=start)


def test_inductor_kernels_go_to_their_origins_modules_and_the_rest_stays_unattributed(model):
    """By hand: inductor's provenance (each kernel's post-grad origins, in call order) and the
    post-grad nodes' modules, against one compiled graph's call as the profiler records it."""
    tree = module_tree(model, SIZE)
    assert module_path("L['self'].body.0", tree) == "body.0" == module_path("L['self'].body[0]", tree)
    assert module_path("L['self']._modules['body']._modules['1']", tree) == "body.1"
    assert module_path("L['self'].nothing", tree) is None
    assert common_ancestor({"body.0", "body.1"}) == "body" and common_ancestor({"body.1", "pool"}) == ""
    region = "Torch-Compiled Region: 0/0"
    modules = NodeModules(tree)
    modules.by_region[region] = {"convolution": "body.0", "relu": "body.1", "mean": "pool", "view": None}
    info = {
        str((region, False)): {
            "cpp_fused_convolution_0:1": {"post_grad_nodes": ["convolution"]},
            "extern_kernels.convolution:2": {"post_grad_nodes": ["convolution"]},
            "cpp_fused_mean_relu_1:3": {"post_grad_nodes": ["mean", "relu"]},
            "cpp_fused_view_2:4": {"post_grad_nodes": ["view"]},  # no module stack: the model's own
            "cpp_fused_relu_3:5": {"post_grad_nodes": ["relu"]},
            "cpp_fused_relu_3:6": {"post_grad_nodes": ["mean"]},  # one kernel reused at two sites
        }
    }
    kernels = region_kernels(info, modules)[region]
    names = ["graph_0_cpp_fused_convolution_0", "aten::convolution", "graph_0_cpp_fused_mean_relu_1"]
    names += ["graph_0_cpp_fused_view_2", "graph_0_cpp_fused_relu_3", "graph_0_cpp_fused_relu_3"]
    names += ["aten::addmm"]  # not in the provenance
    call = Event("## Call CompiledFxGraph ##", 0, 70, tuple(Event(n, i, 10) for i, n in enumerate(names)))
    nodes = graph_call_nodes(call, kernels)
    assert [(n.path, op_class(n.kind)) for n in nodes] == [
        ("body.0", "data movement"),  # a layout conversion for the convolution
        ("body.0", "convolution"),
        ("", "activation"),
        ("", "data movement"),
        ("body.1", "activation"),
        ("pool", "activation"),
        (None, "matmul/linear"),
    ]
    assert nodes[2].name == "graph_0_cpp_fused_mean_relu_1 (fused: body.1, pool)"
    pass_ = ProfiledPass("compile", "test", runs=1, batch_size=1, forward_s=80e-6, nodes=nodes)
    profile = build_profile(tree, pass_, timed_ms=None)
    # 60 us given modules; the unmatched addmm's 10 and the 10 outside the kernels are not.
    assert profile.attributed_ms_per_image == pytest.approx(0.060)
    assert profile.unattributed_ms_per_image == pytest.approx(0.020)
    assert profile.unattributed_nodes == ["aten::addmm"] and profile.node_coverage == pytest.approx(6 / 7)


def test_eager_layer_times_add_up_to_the_profiled_forward(model, cache):
    [profile] = profile_in("eager", model, cache).layer_profiles
    assert profile.attributed_ms_per_image == pytest.approx(profile.forward_ms_per_image, rel=0.10)
    assert "aten::conv2d" in {n for x in profile.layers for n in x.nodes}


class ClassifierHead(nn.Module):
    """AlexNet's and VGG's shape of head: Linear, ReLU, Linear (ONNX Runtime fuses the first two
    into a FusedGemm, which it names ``fused <the Gemm's name>``)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(4))
        self.classifier = nn.Sequential(nn.Linear(128, 512), nn.ReLU(), nn.Linear(512, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def test_onnxruntime_fused_gemm_goes_to_its_linear(tmp_path):
    """The sweep of the paper's 44 found AlexNet's ONNX Runtime node coverage at 51 %: its two
    FusedGemm nodes (``fused node_linear``) were unattributed. They are classifier.0's and .3's."""
    if "onnxruntime" not in available_runtimes("cpu"):
        pytest.skip("onnxruntime is not installed here")
    from workers.engine.layer_profilers import profile_onnxruntime
    from workers.engine.runtimes.onnx import export_onnx

    torch.manual_seed(0)
    net = ClassifierHead().eval()
    head = ProfileSettings(
        model="dnnprof:classifier_head", device="cpu", batch_sizes=(1,), runs=3, precision="fp32",
        input_size=32, runtime="onnxruntime",
    )  # fmt: skip
    onnx_path, _, _ = export_onnx(net, head, tmp_path, 18)
    measured = profile_onnxruntime(onnx_path, torch.randn(1, 3, 32, 32), 3, module_tree(net, 32))
    fused = [n for n in measured.nodes if n.kind == "FusedGemm"]
    assert fused, [(n.name, n.kind) for n in measured.nodes]  # the fusion this test is about
    assert {n.path for n in fused} == {"classifier.0"}, [(n.name, n.path) for n in fused]
    assert all(n.path is not None for n in measured.nodes), [(n.name, n.path) for n in measured.nodes]


def test_compile_layers_refused_where_the_workers_torch_predates_its_profiler():
    """compile's layer profile reads inductor's provenance settings of torch 2.14: a target whose
    live workers run an older torch (the arm64 CPU worker's 2.10) had the request accepted and the
    layer profile stored as an error. Now a 422 naming ``layers``, the version and what is needed;
    where no worker is live the job waits, as any other."""
    from dnnprof.contract import WorkerInfo

    def worker(torch_version: str) -> WorkerInfo:
        runtimes = {"eager": torch_version, "compile": torch_version}
        return WorkerInfo(hostname="w", device_class="cpu", pid=1, started_at=0, seen_at=0, runtimes=runtimes)

    asked = ProfileRequest(model="resnet18", batch_sizes=[1], layers=True, runtime="compile")
    with pytest.raises(FieldRefused) as refused:
        check_layers(asked, "cpu", serving=[worker("2.10.0")])
    assert refused.value.key == "layers"
    assert "2.10.0" in (refused.value.message or "") and "2.14" in (refused.value.message or "")
    check_layers(asked, "cpu", serving=[worker("2.10.0"), worker("2.14.1")])  # one can serve it
    # PEP 440's release segment, not the strings: 2.9.1 is older than 2.14 (as text it sorts after),
    # and a nightly 2.14.0a0 carries 2.14's settings.
    with pytest.raises(FieldRefused):
        check_layers(asked, "cpu", serving=[worker("2.9.1+cpu")])
    check_layers(asked, "cpu", serving=[worker("2.14.0a0+git1234567")])
    check_layers(asked, "cpu", serving=[])  # none live: it waits for one
    eager = ProfileRequest(model="resnet18", batch_sizes=[1], layers=True)
    check_layers(eager, "cpu", serving=[worker("2.10.0")])  # eager's profiler has no such floor


def test_a_profile_without_layers_runs_no_profiled_pass(model, cache):
    config = ScenarioConfig(device_class="cpu", warmup=WarmupPolicy(min_seconds=0.05), min_timed_s=0.05)
    sink = OrderSink(model)
    measure_process(INFO, settings(layers=()), config, ProcessPlan(), sink, model=model)
    assert sink.layer_profiles == [] and sink.order == [("cell", 1), ("cell", 2)]


def test_layers_key_apart_only_when_asked_and_bad_requests_name_the_field():
    plain, asked = settings(layers=()), settings(layers=(2,))
    fields = {f: getattr(plain, f) for f in plain.__struct_fields__ if f != "layers_batch_sizes"}
    before = ProfileSettings(**fields)
    assert plain.dedupe_key() == before.dedupe_key() != asked.dedupe_key()
    assert layer_batch_sizes(ProfileRequest(model="resnet18", batch_sizes=[8, 2], layers=True)) == (2,)
    assert layer_batch_sizes(ProfileRequest(model="resnet18", batch_sizes=[8, 2])) == ()
    bad = [
        (ProfileRequest(model="resnet18", batch_sizes=[1, 2], layers=True, layers_batch_sizes=[4]), "cpu"),
        (ProfileRequest(model="resnet18", layers_batch_sizes=[1]), "cpu"),
        (ProfileRequest(model="resnet18", layers=True, runtime="compile"), "cuda"),
        (ProfileRequest(model="resnet18", layers=True, runtime="onnxruntime"), "cuda"),
    ]
    keys = []
    for request, device in bad:
        with pytest.raises(FieldRefused) as refused:
            check_layers(request, device)
        keys.append(refused.value.key)
    assert keys == ["layers_batch_sizes", "layers_batch_sizes", "layers", "layers"]
    upload = ModelInfo(name="upload:mynet", source="upload", architecture="mynet", input_size=224)
    with pytest.raises(FieldRefused) as refused:  # no module tree to map an ONNX file's nodes onto
        check_layers(ProfileRequest(model="upload:mynet", layers=True, runtime="onnxruntime"), "cpu", upload)
    assert refused.value.key == "layers" and "uploaded ONNX file" in (refused.value.message or "")
    assert layer_profiler_refusal("eager", "cuda") is None
    assert layer_profiler_refusal("compile", "cpu") is None
    assert "compile on cpu" in (layer_profiler_refusal("compile", "jetson") or "")
    assert "on no device yet" in (layer_profiler_refusal("tensorrt", "cuda") or "")
