"""Every runtime in one table: what runs the model, on which devices, in which precisions, with
which options (and their defaults), what it needs installed and what it is prepared from.

The API's request check (:func:`runtime_refusal`), the dedupe key's canonical options
(:func:`canonical_options`), a worker's advertisement (``workers.runtime_support``), the worker's
registry of implementations (``workers.engine.runtimes``), the CLI's choices and the docs
(:func:`describe`) all read this table, so they cannot disagree. Torch-free: the API imports it.

A new runtime is one row here, its module under ``workers/engine/runtimes/`` (a class with a
``name`` and ``prepare``: see ``workers.engine.runtimes.base``) and its packaging (an extra in
``pyproject.toml``, the images).
"""

from __future__ import annotations

from typing import Literal

from msgspec import Struct
from packaging.version import InvalidVersion, Version

PrecisionName = Literal["fp32", "fp16", "bf16", "amp"]
ALL_PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16", "amp")


class OptionSpec(Struct, frozen=True, kw_only=True):
    """One runtime option: the values it takes, its default and what it means."""

    doc: str
    #: The values it takes (an enumeration), or ``range`` for an integer.
    values: tuple[str, ...] = ()
    range: tuple[int, int] | None = None
    #: The default where it does not depend on the device; None where it does (``provider``).
    default: str | int | None = None


#: Every option any runtime takes (``RuntimeOptions`` in the contract has one field per entry).
OPTIONS: dict[str, OptionSpec] = {
    "mode": OptionSpec(
        doc="torch.compile's mode",
        values=("default", "max-autotune", "reduce-overhead"),
        default="default",
    ),
    "provider": OptionSpec(
        doc="ONNX Runtime's execution provider (default: the device's own, cpu on a CPU, cuda on a GPU)",
        values=("cpu", "cuda", "tensorrt"),
    ),
    "opset": OptionSpec(doc="the ONNX export's opset", range=(17, 23), default=18),
}


class RuntimeSpec(Struct, frozen=True, kw_only=True):
    """One runtime."""

    name: str
    title: str
    #: The device classes it is measured on here.
    device_classes: tuple[str, ...]
    precisions: tuple[str, ...]
    #: The options it takes (keys of :data:`OPTIONS`).
    options: tuple[str, ...] = ()
    #: The distributions a worker needs installed to offer it, its own last (the version advertised);
    #: torch aside, which every runtime needs (eager and compile advertise its version).
    distributions: tuple[str, ...] = ()
    #: Device classes on which it also needs a C compiler (inductor's CPU kernels).
    needs_c_compiler_on: tuple[str, ...] = ()
    #: Device classes on which it also needs Triton (inductor's GPU kernels): a dependency of
    #: PyPI's CUDA torch, absent from NVIDIA's Jetson builds of torch (deploy/README.md).
    needs_triton_on: tuple[str, ...] = ()
    #: What it prepares its runnable form from: the torch module, or an ONNX file (an export of the
    #: module; an uploaded model is one).
    prepared_from: Literal["torch", "onnx"] = "torch"
    #: ``module:Class`` of its implementation in the worker (imported only there).
    implementation: str
    #: Why it is not offered (None: it is): never advertised, and a request for it is refused with
    #: this reason and what the device's workers offer.
    unavailable: str | None = None
    #: Device classes where it has a layer profiler (``layers: true``; ``workers.engine.layer_profilers``).
    layer_profiler_on: tuple[str, ...] = ()
    #: The least version of it (as workers advertise it) whose layer profiler runs (None: any).
    layer_profiler_since: str | None = None


RUNTIME_SPECS: dict[str, RuntimeSpec] = {
    spec.name: spec
    for spec in (
        RuntimeSpec(
            name="eager",
            title="eager PyTorch (the paper's)",
            device_classes=("cuda", "jetson", "cpu"),
            precisions=ALL_PRECISIONS,
            implementation="workers.engine.runtimes.eager:EagerRuntime",
            # torch.profiler: the ops' CPU time; on CUDA the kernels' device time (CUPTI).
            layer_profiler_on=("cuda", "jetson", "cpu"),
        ),
        RuntimeSpec(
            name="compile",
            title="torch.compile (inductor)",
            device_classes=("cuda", "jetson", "cpu"),
            precisions=ALL_PRECISIONS,
            options=("mode",),
            needs_c_compiler_on=("cpu",),
            needs_triton_on=("cuda", "jetson"),
            implementation="workers.engine.runtimes.compiled:CompileRuntime",
            # torch.profiler over inductor's kernels, mapped through its provenance (its C++ kernels):
            # inductor's provenance settings as of torch 2.14 (workers.engine.compiled_layers).
            layer_profiler_on=("cpu",),
            layer_profiler_since="2.14",
        ),
        RuntimeSpec(
            name="onnxruntime",
            title="ONNX Runtime (CPU provider)",
            device_classes=("cpu",),
            precisions=("fp32",),
            options=("provider", "opset"),
            distributions=("onnx", "onnxscript", "onnxruntime"),
            prepared_from="onnx",
            implementation="workers.engine.runtimes.onnx:OnnxRuntime",
            layer_profiler_on=("cpu",),  # its profiling JSON, one event per node
        ),
        RuntimeSpec(
            name="openvino",
            title="OpenVINO (CPU, f32)",
            device_classes=("cpu",),
            precisions=("fp32",),
            options=("opset",),
            distributions=("onnx", "onnxscript", "openvino"),
            prepared_from="onnx",
            implementation="workers.engine.runtimes.onnx:OpenVinoRuntime",
            layer_profiler_on=("cpu",),  # PERF_COUNT: get_profiling_info() per executed node
        ),
        RuntimeSpec(
            name="tensorrt",
            title="TensorRT",
            device_classes=("cuda", "jetson"),
            precisions=("fp32", "fp16"),
            options=("opset",),
            distributions=("onnx", "onnxscript", "tensorrt"),
            prepared_from="onnx",
            implementation="",
            unavailable="its path has not run on a GPU here yet, so no worker offers it",
        ),
    )
}
RUNTIME_NAMES: tuple[str, ...] = tuple(RUNTIME_SPECS)
DEFAULT_RUNTIME = "eager"


def option_owners(option: str) -> tuple[str, ...]:
    return tuple(name for name, spec in RUNTIME_SPECS.items() if option in spec.options)


def default_provider(device_class: str) -> str:
    """ONNX Runtime's provider where the request names none: the device's own."""
    return "cpu" if device_class == "cpu" else "cuda"


def option_default(option: str, device_class: str) -> str | int | None:
    return default_provider(device_class) if option == "provider" else OPTIONS[option].default


def stated_options(options: object | None) -> dict[str, object]:
    """The options a request set (``RuntimeOptions``' fields that are not None)."""
    if options is None:
        return {}
    return {name: value for name in OPTIONS if (value := getattr(options, name, None)) is not None}


def runtime_refusal(
    runtime: str, options: object | None, precision: str, device_class: str
) -> tuple[str, str] | None:
    """(field, why) where a runtime cannot be asked for as given, else None."""
    spec = RUNTIME_SPECS[runtime]
    stated = stated_options(options)
    provider = stated.get("provider")
    if provider is not None and (provider == "cpu") != (device_class == "cpu"):
        return "runtime_options", f"the {provider} provider does not run on a {device_class} device"
    if spec.unavailable:
        return "runtime", f"the {runtime} runtime is not offered: {spec.unavailable}"
    if device_class not in spec.device_classes:
        where = " and ".join(spec.device_classes)
        return "runtime", f"the {runtime} runtime is measured on {where} devices here, not {device_class}"
    for name in stated:
        if name not in spec.options:
            owners = " and ".join(option_owners(name))
            return "runtime_options", f"{name} applies to the {owners} runtime(s), not {runtime}"
    if precision not in spec.precisions:
        measured = ", ".join(spec.precisions)
        return "precision", f"the {runtime} runtime is measured in {measured} here, not {precision}"
    return None


def layer_profiler_refusal(runtime: str, device_class: str) -> str | None:
    """Why ``layers: true`` cannot be served for this runtime on this device class (None: it can)."""
    where = RUNTIME_SPECS[runtime].layer_profiler_on
    if device_class in where:
        return None
    on = f"on {' and '.join(where)} devices only" if where else "on no device yet"
    return f"the {runtime} runtime has a layer profiler {on}, not on {device_class}: {layer_profilers()}"


def layer_profiler_version_refusal(runtime: str, versions: list[str]) -> str | None:
    """Why ``layers: true`` cannot be served by workers that run these versions of the runtime
    (None: one of them can, or none is live and the job waits for one that can)."""
    since = RUNTIME_SPECS[runtime].layer_profiler_since
    if since is None or not versions or any(release(v) >= release(since) for v in versions):
        return None
    return (
        f"the {runtime} runtime's layer profiler needs version {since} or later on the worker, and "
        f"the workers here run {', '.join(sorted(set(versions)))}: profile it without layers, or in "
        "another runtime with a layer profiler"
    )


def release(version: str) -> tuple[int, ...]:
    """A version's release numbers ("2.10.0+cpu" -> (2, 10, 0); a nightly "2.14.0a0+git…" ->
    (2, 14, 0), as its features are those of the release it leads to); () where it is no PEP 440
    version."""
    try:
        return Version(version).release
    except InvalidVersion:
        return ()


def layer_profilers() -> str:
    """Which runtimes have a layer profiler on which devices, for 422 bodies and the docs."""
    return "; ".join(
        f"{s.name} on {'/'.join(s.layer_profiler_on)}" for s in RUNTIME_SPECS.values() if s.layer_profiler_on
    )


def canonical_options(runtime: str, options: object | None, device_class: str) -> dict[str, object]:
    """The options as the worker applies them, so that equal requests key alike: an option whose
    default does not depend on the device is dropped when it states that default (``opset: 18``,
    ``mode: "default"``); one whose default does is always stated (ONNX Runtime's ``provider``:
    the keys stored before this rule already named it). Only options the runtime takes are kept
    (the request check refuses the others first)."""
    spec = RUNTIME_SPECS[runtime]
    stated = stated_options(options)
    out: dict[str, object] = {}
    for name in spec.options:
        default = OPTIONS[name].default
        value = stated.get(name, None if default is not None else option_default(name, device_class))
        if value is not None and value != default:
            out[name] = value
    return out


def accepted_options() -> str:
    """What ``runtime_options`` accepts, for 422 bodies and the docs."""
    parts = []
    for name, option in OPTIONS.items():
        low, high = option.range or (0, 0)
        takes = "|".join(option.values) if option.values else f"{low}..{high}"
        parts.append(f"{name} ({takes}; {' and '.join(option_owners(name))}: {option.doc})")
    return "an object with " + ", ".join(parts)


def describe() -> str:
    """One line per runtime, for the API's documentation."""
    return "; ".join(
        f"{s.name}: {s.title}, on {'/'.join(s.device_classes)}, in {'/'.join(s.precisions)}"
        for s in RUNTIME_SPECS.values()
    )
