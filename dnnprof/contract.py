"""The request/result contract shared by the API and the workers, as versioned msgspec structs.

Everything that crosses the Redis store or the HTTP API is one of these structs, so both
sides validate and (de)serialise with the same code. Bump :data:`SCHEMA_VERSION` on any
incompatible change; readers keep accepting older versions where the fields allow it.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from dnnprof.runtimes import OPTIONS, RUNTIME_NAMES, accepted_options, layer_profilers

SCHEMA_VERSION = 2  # 2: repeats over fresh processes, per-process statistics, FLOP provenance

DeviceClass = Literal["cuda", "jetson", "cpu"]
DEVICE_CLASSES: tuple[str, ...] = ("cuda", "jetson", "cpu")
Precision = Literal["fp32", "fp16", "bf16", "amp"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def precision_refusal(precision: str, device_class: str) -> str | None:
    """Why this precision is not measured on this device class (None: it is). The API refuses
    the request with it; the engine checks it again on the device it opened."""
    if precision == "fp16" and device_class == "cpu":
        return (
            "fp16 on a CPU is refused: CPUs have no fast fp16 kernels, so its time would describe "
            "a slow fallback rather than the model; use bf16 or amp on a CPU, or fp16 on a cuda or "
            "jetson device"
        )
    return None


#: What runs the model: one row each in :mod:`dnnprof.runtimes` (devices, precisions, options).
#: FLOPs and parameters are counted on the eager model whatever runs it.
Runtime = Literal[RUNTIME_NAMES]  # type: ignore[valid-type]
RUNTIMES: tuple[str, ...] = RUNTIME_NAMES


class RuntimeOptions(Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """The options of one runtime, as :data:`dnnprof.runtimes.OPTIONS` describes them (each applies
    to the runtimes whose row names it; the API refuses the others)."""

    mode: Literal[OPTIONS["mode"].values] | None = None  # type: ignore[valid-type]
    provider: Literal[OPTIONS["provider"].values] | None = None  # type: ignore[valid-type]
    opset: Annotated[int, Meta(ge=OPTIONS["opset"].range[0], le=OPTIONS["opset"].range[1])] | None = None


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})
#: A device target (``cuda/nvidia-h100-80gb-hbm3``: see :mod:`dnnprof.targets`), or a class alone.
TARGET_PATTERN = r"^(cpu|cuda|jetson)/[a-z0-9][a-z0-9._-]{0,79}(?!\n)$"
DEVICE_PATTERN = r"^(cpu|cuda|jetson)(/[a-z0-9][a-z0-9._-]{0,79})?(?!\n)$"
DeviceOrTarget = Annotated[str, Meta(max_length=87, pattern=DEVICE_PATTERN)]

#: The paper's batch sizes (Section IV-C).
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
#: The paper averages 10 runs (Section IV-E).
DEFAULT_RUNS = 10
#: Fresh measuring processes per profile: one process's time differs from the next by about 10%,
#: which only several processes show (pyperf's answer). 1 is the paper's single run.
DEFAULT_REPEATS = 3
MAX_REPEATS = 10
MAX_BATCH_SIZE = 1024
MAX_RUNS = 1000
MAX_BATCH_SIZE_COUNT = 16
MAX_ACCURACY_IMAGES = 50_000  # the ImageNet validation set
IMAGENET_CLASSES = 1000  # accuracy is measured on ImageNet-1k: the model's head must have these

#: Model names: letters, digits and the punctuation the paper's names use. No slashes, so no
#: path or URL (``hf-hub:org/name``, ``../x``) can even be named. ``(?!\n)`` because Python's
#: ``$`` also matches before a final newline (ECMAScript's does not; the lookahead is harmless there).
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.:()+=,\-]*(?!\n)$"
#: A model name as a request may give it: the body's ``model`` and ``/v1/models/{name}`` alike.
ModelName = Annotated[str, Meta(min_length=1, max_length=120, pattern=MODEL_NAME_PATTERN)]

BatchSize = Annotated[int, Meta(ge=1, le=MAX_BATCH_SIZE)]
BatchSizes = Annotated[list[BatchSize], Meta(min_length=1, max_length=MAX_BATCH_SIZE_COUNT)]

#: What each request field accepts, for 422 bodies.
ACCEPTED_VALUES: dict[str, str] = {
    "model": "a catalogue name (GET /v1/models?q=...), "
    "e.g. 'resnet18', 'timm:resnet50', 'SE-ResNeXt-50 (32x4d)'",
    "device": "a class, one of "
    + ", ".join(DEVICE_CLASSES)
    + " (any worker of it), or a device target such as 'cuda/nvidia-h100-80gb-hbm3' (GET /v1/devices), "
    "or omit it to use the best class with a live worker",
    "any_target": "true or false (a device class may be answered from a stored profile of any target)",
    "batch_sizes": f"1 to {MAX_BATCH_SIZE_COUNT} integers, each in 1..{MAX_BATCH_SIZE}",
    "runs": f"an integer in 1..{MAX_RUNS}",
    "repeats": f"an integer in 1..{MAX_REPEATS} (fresh measuring processes; 1 is the paper's single run)",
    "precision": "one of " + ", ".join(PRECISIONS) + " (fp16 needs a GPU: CPUs have no fast fp16 kernels)",
    "input_size": "an integer in 16..1024 (square input side in pixels), or omit it for the model's own",
    "channels_last": "true or false",
    "accuracy": "true or false (top-1/top-5 on the worker's ImageNet validation set, pretrained weights)",
    "accuracy_images": f"an integer in 1..{MAX_ACCURACY_IMAGES} (a quick estimate on that many images)",
    "force": "true or false",
    "reparameterize": "true or false (the fused form deployed for inference, where the model has one)",
    "runtime": "one of " + ", ".join(RUNTIME_NAMES) + " (default eager; GET /v1/devices lists each device's)",
    "runtime_options": accepted_options(),
    "layers": "true or false (a per-layer profile from a separate profiled pass after the timed runs, "
    "where the runtime has a layer profiler on the device: " + layer_profilers() + ")",
    "layers_batch_sizes": "batch sizes among the requested ones (default: the smallest requested); "
    "only with layers: true",
}


class ProfileRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /v1/profiles``."""

    model: ModelName
    device: DeviceOrTarget | None = None
    batch_sizes: Annotated[list[BatchSize], Meta(min_length=1, max_length=MAX_BATCH_SIZE_COUNT)] | None = None
    runs: Annotated[int, Meta(ge=1, le=MAX_RUNS)] = DEFAULT_RUNS
    repeats: Annotated[int, Meta(ge=1, le=MAX_REPEATS)] = DEFAULT_REPEATS
    precision: Precision = "fp32"
    input_size: Annotated[int, Meta(ge=16, le=1024)] | None = None
    channels_last: bool = False
    accuracy: bool = False
    accuracy_images: Annotated[int, Meta(ge=1, le=MAX_ACCURACY_IMAGES)] | None = None
    force: bool = False
    #: Re-parameterisable models (RepVGG, MobileOne, FastViT, ...) are deployed fused: profile that
    #: form unless this is false.
    reparameterize: bool = True
    #: A class may be answered from a stored profile of any of its targets (else it is measured on
    #: the target it is routed to, or answered from that target's stored profile).
    any_target: bool = False
    runtime: Runtime = "eager"
    runtime_options: RuntimeOptions | None = None
    #: A per-layer profile (:class:`LayerProfile`) from a separate profiled pass after the timed
    #: runs, at ``layers_batch_sizes`` (default: the smallest requested batch size).
    layers: bool = False
    layers_batch_sizes: BatchSizes | None = None


class ProfileSettings(Struct, kw_only=True, frozen=True):
    """A request made canonical: resolved model, device class, sorted batch sizes.

    Two requests with equal settings are the same job (see :meth:`dedupe_key`).
    """

    model: str
    device: DeviceClass
    batch_sizes: tuple[int, ...]
    runs: int
    precision: Precision
    input_size: int
    channels_last: bool = False
    accuracy: bool = False
    accuracy_images: int | None = None
    #: Fresh measuring processes. 1 for profiles stored before repeats existed (one process each).
    repeats: int = 1
    #: Measured in the fused (deployed) form. True only for models that have one; false for
    #: profiles stored before this existed (they were measured as built).
    reparameterize: bool = False
    #: The device target it is sent to; None for a class with no live target (any worker of it).
    target: str | None = None
    #: What runs the model ("eager" for every profile stored before runtimes existed).
    runtime: Runtime = "eager"
    runtime_options: RuntimeOptions | None = None
    #: The batch sizes profiled layer by layer after the timed runs (empty: no layer profile).
    layers_batch_sizes: tuple[int, ...] = ()

    def dedupe_key(self) -> str:
        """Equal settings, equal key; ``target`` only where set, the runtime only where it is
        not eager and the layer batch sizes only where asked, so keys stored before targets,
        runtimes and layer profiles existed stay what they were."""
        fields = msgspec.structs.asdict(self)
        if fields["target"] is None:
            del fields["target"]
        if not fields["layers_batch_sizes"]:
            del fields["layers_batch_sizes"]
        if fields["runtime"] == "eager" and fields["runtime_options"] is None:
            del fields["runtime"], fields["runtime_options"]
        elif fields["runtime_options"] is not None:
            fields["runtime_options"] = msgspec.to_builtins(fields["runtime_options"])
        return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()[:32]


class TagConfig(Struct, kw_only=True, omit_defaults=True):
    """Where one pretrained tag differs from its architecture's default weights (timm's
    ``efficientnet_b3.ra2_in1k`` and ``.tf_in1k``; torchvision's ``resnet50.IMAGENET1K_V1`` and
    ``.IMAGENET1K_V2``): only the fields that differ are set."""

    input_size: int | None = None
    interpolation: str | None = None
    crop_pct: float | None = None
    crop_mode: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    num_classes: int | None = None
    weights_url: str | None = None
    published_top1: float | None = None
    published_top5: float | None = None


class ModelInfo(Struct, kw_only=True):
    """A catalogue entry: how a model name resolves and how the model is fed."""

    name: str  # qualified: "tv:resnet18", "timm:legacy_seresnext50_32x4d", "dnnprof:shufflenet_v1_g3"
    source: Literal["tv", "timm", "dnnprof", "upload"]
    architecture: str
    input_size: int
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"  # timm's: "center" (resize the short side), "squash", "border"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    num_classes: int = 1000
    input_space: Literal["RGB", "BGR"] = "RGB"
    input_range: float = 1.0  # 255.0 for Caffe ports: pixels in 0..255, mean/std in those units
    paper_name: str | None = None
    pretrained_tags: list[str] = []
    published_params: int | None = None
    published_gmacs: float | None = None
    published_top1: float | None = None
    published_top5: float | None = None
    weights_url: str | None = None
    notes: str | None = None
    #: The tag whose weights the plain architecture name stands for (timm's "a1_in1k" for resnet50,
    #: torchvision's "IMAGENET1K_V2").
    default_tag: str | None = None
    #: Tags that differ from the default one; a resolved ``arch.tag`` has them applied.
    tag_configs: dict[str, TagConfig] = {}
    #: Has modules that timm fuses for inference (``timm.utils.reparameterize_model``).
    reparameterizable: bool = False
    #: Why this model cannot be profiled here (found by ``bench/catalogue_sweep.py``); requests
    #: for it are refused with this reason instead of failing minutes later.
    unavailable: str | None = None
    #: An uploaded ONNX file's sha256 (source "upload"): what a worker fetches from the store.
    sha256: str | None = None

    def for_tag(self, tag: str) -> ModelInfo:
        """This entry as the pretrained tag ``tag`` feeds it: its input size, crop, normalisation,
        interpolation, head, weights and published accuracy as the package gives them for it."""
        config = self.tag_configs.get(tag)
        changes = {f: v for f in TagConfig.__struct_fields__ if (v := getattr(config, f, None)) is not None}
        return msgspec.structs.replace(self, tag_configs={}, **changes)


class HostLoad(Struct, kw_only=True, omit_defaults=True):
    """What else the host did while one batch size was timed (None where the kernel does not say).

    A second busy process on a small host can stretch a timed run by seconds; these figures let a
    reader (and the noisy check) tell such a measurement from a clean one.
    """

    loadavg_1m: float | None = None
    #: Runnable threads on the whole host when the timed runs ended, ours included.
    procs_running: int | None = None
    #: CPU time spent by every other process over the timed runs, as a share of all cores' time.
    others_cpu_share: float | None = None
    #: CPU time the hypervisor took away (steal) over the timed runs, as a share of all cores' time.
    steal_share: float | None = None
    #: Seconds this batch size waited, before its first call, for other processes' share of the
    #: CPUs to drop (DNNPROF_QUIET_WAIT_S bounds it), and whether it did: ``False`` means it was
    #: timed on a busy host after the bound ran out, and is marked noisy.
    quiet_wait_s: float | None = None
    quiet_before: bool | None = None


class TimingAttempt(Struct, kw_only=True):
    """One block of timed runs; a block whose spread is over the noisy threshold is measured again."""

    runs: int
    mean_ms: float
    cv: float
    host: HostLoad | None = None
    #: Runs at the block's head that were still warm-up: they did not yet agree with the runs
    #: before them, so they are not among ``runs`` (issue 29: the first timed run completes the
    #: warm-up's window where one run is a tenth of the block or more).
    warm_up_runs: int = 0
    #: False: no run of the block settled the warm-up's window, so all of it was warm-up (its
    #: ``runs`` 0) and the block was timed again.
    settled: bool = True


class ProcessLatency(Struct, kw_only=True):
    """One fresh measuring process's per-image statistics for one batch size."""

    process: int
    runs: int
    warmup_runs: int
    warmup_converged: bool
    mean_ms: float
    median_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    cv: float
    attempts: list[TimingAttempt] = []
    host: HostLoad | None = None


class LatencyStats(Struct, kw_only=True):
    """Per-image inference time, in milliseconds unless named otherwise.

    Over ``processes`` fresh processes: ``mean_ms`` is the mean over every timed run of every
    process (the paper's "mean of N runs"), ``median_ms`` the median of the process medians, and the
    95% CI is over the process means (``ci95_basis: "process_means"``), since one process differs
    from the next more than its own runs do; with one process it is over the runs. It is the
    modified Cox interval for a log-normal mean (``ci95_scale: "log"``): positive, and as skewed as
    the times. Profiles stored before it carry Student's on the times themselves (``"linear"``).
    """

    runs: int  # timed runs in all, over every process
    warmup_runs: int  # the most any process needed
    mean_ms: float
    median_ms: float
    std_ms: float  # over every timed run
    min_ms: float
    max_ms: float
    p90_ms: float | None  # None under 10 runs: the sample cannot support it
    p99_ms: float | None  # None under 100 runs
    ci95_low_ms: float
    ci95_high_ms: float
    images_per_s: float
    cv: float  # std_ms / mean_ms
    noisy: bool  # cv or the process-to-process spread over the noisy threshold
    processes: int = 1
    ci95_basis: Literal["runs", "process_means"] = "runs"
    ci95_scale: Literal["linear", "log"] = "linear"
    #: Standard deviation of the process means over their mean (None with one process).
    process_cv: float | None = None
    #: Whether every process's warm-up settled before its runs were timed (None: not recorded).
    warmup_converged: bool | None = None
    per_process: list[ProcessLatency] = []


class MemoryStats(Struct, kw_only=True):
    """Memory while running one batch size, read after warm-up (autotuning done) in one untimed pass.

    ``total_bytes`` is the paper's figure: all the device memory the process holds (CUDA: NVML
    per-process, context included; Jetson: the process's share of unified memory; CPU: this batch
    size's own peak RSS). Over several processes, the largest (what a device must hold).
    """

    total_bytes: int | None
    method: str
    torch_peak_allocated_bytes: int | None = None
    torch_peak_reserved_bytes: int | None = None
    #: What the process held before the model was built (CUDA context, or the libraries on a CPU).
    floor_bytes: int | None = None
    per_process_bytes: list[int] = []


class OutputsCheck(Struct, kw_only=True):
    """The runtime's outputs against eager PyTorch's on the same random input (exporters have
    shipped silent wrong-output regressions): a profile whose outputs do not match never counts."""

    batch_size: int
    max_abs_diff: float
    #: The largest difference accepted: atol + rtol x the largest eager output (per precision),
    #: plus twice ``eager_self_diff``.
    tolerance: float
    #: Eager's own disagreement: each image alone against the batch (another summation order).
    eager_self_diff: float = 0.0
    #: The share of images whose top-1 class is the same (random weights make near ties).
    top1_agreement: float
    outputs_match: bool


class RuntimeReport(Struct, kw_only=True, omit_defaults=True):
    """What ran the model and what getting it ready cost, apart from warm-up and steady state."""

    name: str
    version: str | None = None
    provider: str | None = None
    options: RuntimeOptions | None = None
    opset: int | None = None
    graph_optimization: str | None = None
    #: One-time preparation (export and session, or build), seconds; 0 for eager. A compile's
    #: cost falls in each batch size's first call (it compiles per batch size).
    prepare_s: float = 0.0
    export_cached: bool | None = None
    #: Where inputs and outputs live while timed: "device" (bound there, no copies timed), "host".
    io: str | None = None
    outputs: OutputsCheck | None = None
    #: torch.compile only: recompilations after a batch size's first call, over every batch size
    #: and process (0: nothing timed or warmed up was compiled; each batch size's own compile
    #: falls in its first call).
    recompilations: int | None = None


class BatchMeasurement(Struct, kw_only=True):
    batch_size: int
    status: Literal["ok", "oom", "error"]
    error: str | None = None
    latency: LatencyStats | None = None
    memory: MemoryStats | None = None
    achieved_flops_per_s: float | None = None
    peak_flops_share: float | None = None
    #: Joules per image, integrated over timed runs lasting at least a second (else None).
    energy_per_image_j: float | None = None
    #: The first (cold) call at this batch size, before warm-up: a compile's compilation, a
    #: session's first run (the median over the processes), seconds.
    first_call_s: float | None = None


class GpuClocks(Struct, kw_only=True, omit_defaults=True):
    """NVML's clocks when the measuring process started, and why the GPU held them down."""

    sm_mhz: int | None = None
    memory_mhz: int | None = None
    max_sm_mhz: int | None = None
    throttle_reasons: list[str] = []


class DeviceFingerprint(Struct, kw_only=True):
    device_class: DeviceClass
    device_name: str
    device_memory_bytes: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    cudnn_version: str | None = None
    torch_version: str
    torchvision_version: str | None = None
    timm_version: str | None = None
    python_version: str
    cpu_model: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    l4t_release: str | None = None
    jetson_power_mode: str | None = None
    hostname: str | None = None
    #: GPU the process measured on, by NVML's UUID (indices differ between NVML and torch).
    device_uuid: str | None = None
    #: The CPUs the measuring process may run on, and why it used ``torch_threads`` of them.
    cpu_affinity: list[int] | None = None
    threads_policy: str | None = None
    #: Numerics and autotuning that change fp32 time: cuDNN autotune, TF32 for convolutions and
    #: matmuls, torch's float32 matmul precision, and the autocast dtype of ``amp``.
    cudnn_benchmark: bool | None = None
    cudnn_allow_tf32: bool | None = None
    matmul_allow_tf32: bool | None = None
    float32_matmul_precision: str | None = None
    autocast_dtype: str | None = None
    gpu_clocks: GpuClocks | None = None
    #: The target the worker advertised (None before targets existed: derived when read).
    device_target: str | None = None
    #: How the measuring processes started: "template" (forked from one that imported the
    #: libraries) or "fresh" interpreters (None: before templates). On a CPU a forked process's
    #: peak RSS lacks the library pages its template touched while importing (docs/benchmarks.md).
    process_start: str | None = None
    #: The CPU's architecture as the process saw it ('x86_64', 'aarch64'; None: before it was
    #: recorded, x86-64), and the emulator running it ('qemu-user': an arm64 image on an x86 host,
    #: whose figures are the emulator's; None: native). Both are in the target of a CPU.
    cpu_arch: str | None = None
    cpu_emulation: str | None = None


class ProfileResult(Struct, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    settings: ProfileSettings
    params: int
    param_file_bytes_fp32: int
    param_file_bytes: int  # in the requested precision
    #: One image, one multiply-add = 2 FLOPs (torch.utils.flop_counter); None if counting failed.
    flops: int | None
    input_size: int
    batches: list[BatchMeasurement]
    fingerprint: DeviceFingerprint
    timing_method: str
    wall_s: float  # inside the measuring processes, all of them
    timed_s: float  # inside the timed passes
    weights: str = "random"  # "random", or "pretrained" (their URL is model.weights_url)
    top1: float | None = None  # percent, measured on accuracy_images validation images
    top5: float | None = None
    accuracy_images: int | None = None
    #: How FLOPs were counted, and where the count differs from a published figure (or failed).
    flops_method: str | None = None
    flops_note: str | None = None
    #: What the process held before the model was built: the CUDA context on a GPU (part of the
    #: paper's memory figure), the libraries on a CPU.
    memory_floor_bytes: int | None = None
    #: Fresh processes that measured; fewer than ``settings.repeats`` in a partial result.
    processes: int = 1
    #: False when a time limit, a crash or a cancel ended the job: the finished cells are kept.
    complete: bool = True
    #: The whole job: every fresh interpreter's start, model builds, FLOPs, warm-ups and timing.
    job_wall_s: float | None = None
    #: Which form of the model was measured: "deployed" (re-parameterised, as it is deployed for
    #: inference) or "as built" (the training form, or a model that has no other).
    form: str = "as built"
    #: What ran it, its preparation and its outputs check (None: eager, before runtimes existed).
    runtime: RuntimeReport | None = None
    #: Where the job's wall time went, every process's phases summed, and ``other`` for the rest
    #: (empty before phases were recorded).
    phases: dict[str, float] = {}


# -- what one measuring process reports, cell by cell (the job assembles them) ------------------


class FlopCount(Struct, kw_only=True):
    """FLOPs of one image at one input size, counted once and cached, whatever the device."""

    flops: int | None
    method: str
    note: str | None = None


class ModelCounts(Struct, kw_only=True):
    """Parameters and FLOPs of a model no table publishes, counted on the meta device (no weights,
    no memory) by a worker when the API is first asked about it, and kept."""

    params: int | None
    flops: int | None  # one image at ``input_size``; 1 multiply-add = 2 FLOPs
    input_size: int
    method: str
    note: str | None = None  # why a count is missing
    counted_at: float = 0.0


class ProcessStatic(Struct, kw_only=True):
    """What one measuring process found before timing: the model's size, its FLOPs, the device."""

    process: int
    params: int
    param_file_bytes_fp32: int
    param_file_bytes: int
    input_size: int
    flops: FlopCount
    fingerprint: DeviceFingerprint
    timing_method: str
    weights: str = "random"
    memory_floor_bytes: int | None = None
    form: str = "as built"
    runtime: RuntimeReport | None = None


class ProcessCell(Struct, kw_only=True):
    """One batch size as one measuring process measured it, stored the moment it is done."""

    process: int
    batch_size: int
    status: Literal["ok", "oom", "error"]
    error: str | None = None
    run_seconds: list[float] = []  # the kept attempt's runs, one batch each
    warmup_runs: int = 0
    warmup_converged: bool = False
    attempts: list[TimingAttempt] = []
    host: HostLoad | None = None
    memory: MemoryStats | None = None
    energy_j: float | None = None  # over the kept attempt's runs
    energy_window_s: float | None = None
    first_call_s: float | None = None
    #: Frames torch.compile compiled after this batch size's first call (warm-up and timed
    #: runs); None for a runtime that does not compile on call.
    recompilations: int | None = None


class ProcessEnd(Struct, kw_only=True):
    """A measuring process that got to its end: how long it took, and the accuracy it measured."""

    process: int
    wall_s: float
    top1: float | None = None
    top5: float | None = None
    accuracy_images: int | None = None
    #: Wall seconds per phase of this process (workers/engine/phases.py): its start, the build,
    #: FLOPs, each batch size's first call, warm-up and timed runs, the accuracy.
    phases: dict[str, float] = {}


class Progress(Struct, kw_only=True):
    stage: str  # "queued", "starting", "loading", "flops", "batch", "accuracy", "done"
    batch_size: int | None = None
    batches_done: int = 0  # cells measured, over every process
    batches_total: int = 0  # batch sizes x repeats
    message: str | None = None
    process: int | None = None  # which fresh process (1-based) is measuring
    processes: int | None = None

    @classmethod
    def at_start(cls, settings: ProfileSettings, stage: str = "queued") -> Progress:
        """Nothing measured yet: queued, or just claimed (``starting``)."""
        return cls(
            stage=stage,
            batches_total=len(settings.batch_sizes) * settings.repeats,
            processes=settings.repeats,
        )


class ProfileRecord(Struct, kw_only=True):
    """A profile job and, once it succeeded, its result: what the store keeps and the API returns."""

    id: str
    status: JobStatus
    settings: ProfileSettings
    model: ModelInfo
    created_at: float
    schema_version: int = SCHEMA_VERSION
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    attempts: int = 0
    #: Deliveries before a job whose worker keeps dying is failed: the deployment's
    #: DNNPROF_MAX_ATTEMPTS when the job was created, whichever worker finds it lost (None:
    #: stored before it was recorded; the worker's own then).
    max_attempts: int | None = None
    worker: str | None = None
    error: str | None = None
    result: ProfileResult | None = None


class PublishedResult(Struct, kw_only=True):
    """An accuracy figure imported from a published table, kept apart from measured ones."""

    model: str  # as the table spells it, e.g. "resnet50.a1_in1k"
    resolved: str | None  # the catalogue name it resolves to, if any
    source: str  # the label given at import, e.g. "timm-results-2026-08"
    top1: float
    top5: float | None = None
    img_size: int | None = None
    param_count_m: float | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    imported_at: float = 0.0
    kind: Literal["published"] = "published"


class WorkerInfo(Struct, kw_only=True):
    """A worker's heartbeat."""

    hostname: str
    device_class: DeviceClass
    device_name: str | None = None
    pid: int
    started_at: float
    seen_at: float
    #: The memory of the device it measures on (GPU memory, or the host's for a CPU or a Jetson).
    device_memory_bytes: int | None = None
    #: Its device target (see :mod:`dnnprof.targets`); it consumes that queue and its class's.
    device_target: str | None = None
    #: The runtimes it can run, name -> version (eager always).
    runtimes: dict[str, str] = {}


class DeviceSeen(Struct, kw_only=True):
    """A device target as its workers last advertised it (kept after they stop)."""

    target: str
    device_class: DeviceClass
    device_name: str | None = None
    device_memory_bytes: int | None = None
    first_seen: float
    last_seen: float
    hostnames: list[str] = []
    runtimes: dict[str, str] = {}


# -- a per-layer profile (issue 41): stored apart from the record, one per batch size --------------

#: The op-type classes a layer profile shares time and FLOPs over.
OP_TYPES: tuple[str, ...] = (
    "convolution",
    "depthwise convolution",
    "matmul/linear",
    "normalisation",
    "activation",
    "pooling",
    "attention",
    "elementwise",
    "data movement",
    "other",
)


class LayerTime(Struct, kw_only=True, omit_defaults=True):
    """One module of the eager model and what the runtime spent in it: its *own* time, FLOPs and
    parameters (its children's are theirs), so the rows add up to the model and a tree collapsed
    to a depth sums them (:func:`dnnprof.layers.collapse`). Zeros and empty lists are left out of
    the JSON (a ReLU has no ``flops`` key)."""

    #: The module path in the eager model (``layer3.4.conv2``); ``""`` is the model's own forward
    #: (a flatten, an addition written in it).
    path: str
    #: Its class (``Conv2d``, ``Bottleneck``).
    type: str
    #: Where it first ran in the forward (topological order).
    order: int
    #: Per image, mean over the profiled runs.
    ms_per_image: float = 0.0
    #: Of the profiled forward.
    share: float = 0.0
    #: Per image, one multiply-add = 2 FLOPs (``FlopCounterMode.get_flop_counts()``, fp32, batch 1).
    flops: int = 0
    params: int = 0
    #: flops / time: what this layer achieved in the profiled pass (None where it has no time).
    flops_per_s: float | None = None
    #: The op-type class of most of its time (its FLOPs' where it has no time).
    op_type: str = "other"
    #: The runtime's own node, op or kernel names attributed to it.
    nodes: list[str] = []


class OpTypeShare(Struct, kw_only=True):
    """One op-type class: its share of the attributed time beside its share of the FLOPs."""

    op_type: str
    ms_per_image: float
    time_share: float
    flops: int
    flop_share: float


class LayerProfile(Struct, kw_only=True):
    """Where the time of one batch size went, module by module, in the runtime's own profiler.

    The times come from a separate profiled pass after the timed runs (never inside them, so the
    profile's latency figures are those without ``layers``); the profiler's overhead is in them,
    which ``forward_ms_per_image`` against ``timed_ms_per_image`` shows."""

    batch_size: int
    runtime: str
    #: How the times were read, in the runtime's terms.
    source: str = ""
    note: str = ""
    runs: int = 0
    #: The profiled forward, per image (mean over ``runs``), and the timed one of the same process.
    forward_ms_per_image: float = 0.0
    timed_ms_per_image: float | None = None
    attributed_ms_per_image: float = 0.0
    #: Time no module could be given (between ops, nodes the runtime inserted): never spread.
    unattributed_ms_per_image: float = 0.0
    unattributed_nodes: list[str] = []
    #: Of the time the runtime's nodes (ops, kernels) took, the share given a module.
    node_coverage: float | None = None
    #: True where the runtime runs nodes in parallel, so node times may overlap (OpenVINO).
    overlapping: bool = False
    #: The model's FLOPs per image as the per-module count found them (the layers' sum).
    flops: int | None = None
    layers: list[LayerTime] = []
    op_types: list[OpTypeShare] = []
    #: Why this batch size has no layer profile (its profiled pass failed; the profile stands).
    error: str | None = None
