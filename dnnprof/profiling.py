"""Asking for a profile, as a service the API provides to its controller (litestar-fullstack's
pattern: the controller parses and answers, this decides). Torch-free, like all of ``dnnprof``.

The flow of one request: the model (profilable? accuracy only on ImageNet-1k), the device (the
class asked for, else the fastest class a worker serves) and its target (the one asked for if a
worker ever served it, else the live target with the shortest queue per worker), the settings,
the cost guard, a stored profile that already answers it, the per-client cap, then the job stored
once (dedupe) and sent to its queue, with a warning where no worker serves it yet.

Refusals are :class:`Refusal` subclasses carrying what the client is told; the API turns them
into its 4xx answers.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from dnnprof.catalogue import Resolved
from dnnprof.config import Settings
from dnnprof.contract import (
    DEFAULT_BATCH_SIZES,
    DEVICE_CLASSES,
    IMAGENET_CLASSES,
    TERMINAL_STATUSES,
    ModelInfo,
    ProfileRecord,
    ProfileRequest,
    ProfileSettings,
    Progress,
    RuntimeOptions,
    WorkerInfo,
    precision_refusal,
)
from dnnprof.cost import GB, too_costly, too_slow
from dnnprof.queue import queue_for, route_of
from dnnprof.runtimes import (
    canonical_options,
    layer_profiler_refusal,
    layer_profiler_version_refusal,
    runtime_refusal,
)
from dnnprof.store import ConflictError, ProfileStore, now
from dnnprof.targets import class_of, is_target, target_of
from dnnprof.uploads import upload_refusal


class Refusal(Exception):
    """A request this service will not take, and what the client is told."""

    def __init__(self, detail: str, *, key: str | None = None, message: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.key, self.message = detail, key, message


class FieldRefused(Refusal):
    """One field of the request cannot be served as asked (a 422 naming the field)."""


class UnknownTarget(Refusal):
    """A device target no worker ever served (a 404 naming the known ones)."""


class TooManyActive(Refusal):
    """The client has the most active jobs one client may have (a 429)."""


@dataclass
class Accepted:
    """The job a request is answered with: new, the equal one in flight, or a stored profile."""

    record: ProfileRecord
    created: bool
    #: Live workers of the device class, or of the target where the job names one.
    serving: int
    warning: str | None = None


@dataclass
class ProfileService:
    store: ProfileStore
    settings: Settings
    resolve: Callable[[str], Resolved]
    enqueue: Callable[[ProfileRecord], None]

    def submit(self, data: ProfileRequest, client: str) -> Accepted:
        resolved = self.profilable(data)
        workers = self.store.workers()  # read once: routing, the runtime and the cost guard use it
        live = Counter(w.device_class for w in workers)
        live_targets = Counter(w.device_target for w in workers if w.device_target)
        device = pick_device(data.device, live)
        if data.device and is_target(data.device):
            target: str | None = self.known_target(data.device, live_targets)
        else:
            target = self.route_target(device, offering(workers, data.runtime, live_targets))
        if refusal := precision_refusal(data.precision, device):
            raise FieldRefused(
                f"{data.precision} is not measured on a {device} device", key="precision", message=refusal
            )
        here = serving_workers(workers, device, target)
        check_runtime(data, device, target, here)
        check_layers(data, device, resolved.info, here)
        settings = settings_for(data, resolved, device, target)
        self.check_cost(resolved.info, settings, here)
        stored = None if data.force else self.stored_elsewhere(settings, any_target=data.any_target)
        if stored is not None:
            return Accepted(stored, created=False, serving=live.get(device, 0))
        record, created = self.store_job(settings, resolved.info, client, force=data.force)
        serving = len(here)
        warning = (
            no_worker_warning(settings) if serving == 0 and record.status not in TERMINAL_STATUSES else None
        )
        return Accepted(record, created=created, serving=serving, warning=warning)

    def profilable(self, data: ProfileRequest) -> Resolved:
        """The model asked for, where it can be profiled as asked."""
        resolved = self.resolve(data.model)
        if refusal := upload_refusal(resolved.info, data):  # an uploaded ONNX file (issue 42)
            raise FieldRefused(
                f"{resolved.qualified} cannot be profiled as asked", key=refusal[0], message=refusal[1]
            )
        if resolved.info.unavailable:
            raise FieldRefused(
                f"{resolved.qualified} cannot be profiled", key="model", message=resolved.info.unavailable
            )
        if data.accuracy and resolved.info.num_classes != IMAGENET_CLASSES:
            raise FieldRefused(
                "accuracy is measured on ImageNet-1k",
                key="accuracy",
                message=f"{data.model!r} resolves to a model with {resolved.info.num_classes} output "
                f"classes, not ImageNet-1k's {IMAGENET_CLASSES}: its top-1/top-5 on the ImageNet "
                "validation set would mean nothing",
            )
        return resolved

    def known_target(self, target: str, live_targets: dict[str, int]) -> str:
        """A target a worker serves or once served: its jobs wait for it. One no worker ever
        advertised would wait for ever in a queue of its own (a typo, a made-up name)."""
        seen = self.store.devices()
        if target in live_targets or target in seen:
            return target
        known = sorted(t for t in {*seen, *live_targets} if class_of(t) == class_of(target))
        start = f"DNNPROF_DEVICE_TARGET={target} dnnprof worker --device {class_of(target)}"
        raise UnknownTarget(
            f"no worker has ever served the device target {target!r}; known {class_of(target)} targets: "
            f"{', '.join(known) or 'none'} (GET /v1/devices). Name one of them or the class "
            f"{class_of(target)!r}, or start a worker there first ({start})"
        )

    def route_target(self, device_class: str, live_targets: dict[str, int]) -> str | None:
        """For a request naming a class: the live target of that class with the fewest jobs waiting
        per worker (then the most workers, then by name), so its result is keyed to where it runs.
        With none live, the class's only target ever seen (a one-device deployment between
        restarts); else None: the class queue, whichever target starts first."""
        candidates = [t for t in live_targets if class_of(t) == device_class]
        if not candidates:
            known = [t for t in self.store.devices() if class_of(t) == device_class]
            return known[0] if len(known) == 1 else None
        return min(
            candidates,
            key=lambda t: (self.store.queue_length(queue_for(t)) / live_targets[t], -live_targets[t], t),
        )

    def check_cost(self, info: ModelInfo, settings: ProfileSettings, workers: list[WorkerInfo]) -> None:
        """Refuse what no worker of the device could hold (DNNPROF_MAX_REQUEST_COST_GB, and the
        largest memory one of its live ``workers`` reports), and what no device of its class
        could time inside the time limit (:func:`dnnprof.cost.too_slow`)."""
        cap = self.settings.max_request_cost_gb
        limit, source = cap * GB, f"the most one request may ask (DNNPROF_MAX_REQUEST_COST_GB={cap:g})"
        memories = [w.device_memory_bytes for w in workers if w.device_memory_bytes]
        if memories and max(memories) < limit:
            limit = max(memories)
            where = settings.target or settings.device
            source = f"the largest {where} worker's memory (DNNPROF_MAX_REQUEST_COST_GB caps it too)"
        largest = max(settings.batch_sizes)
        if reason := too_costly(info, largest, settings.input_size, settings.precision, limit, source):
            raise FieldRefused(
                "the request needs more memory than any device here has", key="batch_sizes", message=reason
            )
        counted = self.store.model_counts(info.name) if not info.published_gmacs else None
        if reason := too_slow(info, settings, self.settings.soft_time_limit_s, counted and counted.flops):
            raise FieldRefused("the request cannot finish inside the time limit", key="runs", message=reason)

    def stored_elsewhere(self, settings: ProfileSettings, *, any_target: bool) -> ProfileRecord | None:
        """A stored profile that answers the request though its dedupe key differs: with
        ``any_target``, one of any target of the class (or of the class alone); for a target, one
        stored before targets existed that ran there (its fingerprint says so)."""
        store = self.store
        if any_target:
            targets = {t for t in store.devices() if class_of(t) == settings.device} | {settings.target}
            candidates = [msgspec.structs.replace(settings, target=t) for t in sorted(targets, key=str)]
            found = store.stored_for([msgspec.structs.replace(settings, target=None), *candidates])
            if found is not None:
                return found
        if settings.target is None:
            return None
        return store.stored_for(
            [msgspec.structs.replace(settings, target=None)], lambda r: target_of(r) == settings.target
        )

    def store_job(
        self, settings: ProfileSettings, info: ModelInfo, client: str, *, force: bool
    ) -> tuple[ProfileRecord, bool]:
        """The job stored once (or the equal one in flight) and, if new, sent to its queue: never
        a job no worker will see (undone when the broker refuses it)."""
        record = ProfileRecord(
            id=uuid.uuid4().hex,
            status="queued",
            settings=settings,
            model=info,
            created_at=now(),
            progress=Progress.at_start(settings),
            max_attempts=self.settings.max_attempts,
        )
        self.check_active_cap(client)
        record, created = self.store.create_or_get(record, force=force)
        if created:
            try:  # refused (Redis full or away) on either write: the record goes too
                self.store.note_active(client, record.id)
                self.enqueue(record)
            except Exception:
                self.store.delete(record.id)
                raise
        return record, created

    def check_active_cap(self, client: str) -> None:
        cap = self.settings.max_active_per_client
        if cap <= 0:
            return
        active = self.store.active_of(client)
        if active >= cap:
            raise TooManyActive(
                f"{active} jobs of yours are queued or running, the most one client may have "
                f"(DNNPROF_MAX_ACTIVE_PER_CLIENT={cap}): wait for some to end, or cancel some "
                "(DELETE /v1/profiles/{id})"
            )

    def remove(self, profile_id: str) -> str | None:
        """Delete a finished profile, cancel a queued job, or ask a running one to stop: the
        outcome ("deleted", "cancelled", "cancelling"), None where there is no such profile."""
        store = self.store
        record = store.get(profile_id)
        if record is None:
            return None
        if record.status in TERMINAL_STATUSES:
            store.delete(profile_id)
            return "deleted"
        store.request_cancel(profile_id)

        def cancel_queued(rec: ProfileRecord) -> ProfileRecord:
            rec.status = "cancelled"
            rec.finished_at = now()
            rec.error = "cancelled before it started"
            return rec

        try:
            cancelled = store.update(profile_id, cancel_queued, allowed_from=("queued",))
        except ConflictError:
            # Running: the worker sees the flag within a second, stops the measuring process and
            # marks the job cancelled.
            return "cancelling"
        store.count_finished("cancelled", (cancelled.finished_at or 0) - cancelled.created_at)
        # Its message would wait for ever where no worker serves the class: take it out now.
        store.purge_task_messages(route_of(cancelled.settings), [profile_id])
        return "cancelled"


def serving_workers(workers: list[WorkerInfo], device: str, target: str | None) -> list[WorkerInfo]:
    """The live workers a job for ``target`` (else for the class ``device``) can go to."""
    if target:
        return [w for w in workers if w.device_target == target]
    return [w for w in workers if w.device_class == device]


def offering(workers: list[WorkerInfo], runtime: str, live_targets: dict[str, int]) -> dict[str, int]:
    """The live targets whose workers run ``runtime`` (all of them for eager; every live one
    where none does, so that the refusal in :func:`check_runtime` names what they offer)."""
    if runtime == "eager":
        return live_targets
    runs_it = {w.device_target for w in workers if runtime in w.runtimes}
    return {t: n for t, n in live_targets.items() if t in runs_it} or live_targets


def check_runtime(data: ProfileRequest, device: str, target: str | None, serving: list[WorkerInfo]) -> None:
    """The runtime and its options as asked, on a device whose live workers (``serving``) run
    it; where none is live the job waits for one, as any other."""
    where = target or device
    offered = sorted({name for w in serving for name in w.runtimes} | {"eager"})
    they_offer = (
        f"the {where} workers offer: {', '.join(offered)} (GET /v1/devices lists each device's "
        "runtimes)"
    )
    if refusal := runtime_refusal(data.runtime, data.runtime_options, data.precision, device):
        key, message = refusal
        if key == "runtime":
            message = f"{message}; {they_offer}"
        detail = f"the {data.runtime} runtime cannot be measured as asked"
        raise FieldRefused(detail, key=key, message=message)
    if serving and data.runtime not in offered:
        raise FieldRefused(
            f"no live worker of {where} runs the {data.runtime} runtime",
            key="runtime",
            message=f"{they_offer}; install the runtime's extra on a worker there to offer it",
        )


def check_layers(
    data: ProfileRequest, device: str, info: ModelInfo | None = None, serving: list[WorkerInfo] | None = None
) -> None:
    """``layers`` where the runtime has a layer profiler on the device (and in the version the
    device's live workers, ``serving``, run), for a model with a module tree (not an uploaded ONNX
    file), at requested batch sizes."""
    if data.layers_batch_sizes is not None and not data.layers:
        raise FieldRefused(
            "layers_batch_sizes needs layers: true",
            key="layers_batch_sizes",
            message="set layers: true to profile layer by layer, or leave layers_batch_sizes out",
        )
    if not data.layers:
        return
    if info is not None and info.source == "upload":
        raise FieldRefused(
            f"no layer profile for {info.name}",
            key="layers",
            message="an uploaded ONNX file has no torch module here, and a layer profile maps the "
            "runtime's nodes onto the module tree of one (profile it without layers)",
        )
    versions = [w.runtimes[data.runtime] for w in serving or () if data.runtime in w.runtimes]
    if refusal := layer_profiler_refusal(data.runtime, device) or layer_profiler_version_refusal(
        data.runtime, versions
    ):
        detail = f"no layer profile for the {data.runtime} runtime here"
        raise FieldRefused(detail, key="layers", message=refusal)
    requested = set(data.batch_sizes or DEFAULT_BATCH_SIZES)
    outside = sorted(set(data.layers_batch_sizes or ()) - requested)
    if outside:
        raise FieldRefused(
            f"layers_batch_sizes {outside} are not among the requested batch sizes",
            key="layers_batch_sizes",
            message=f"batch sizes among the requested ones ({sorted(requested)}): a layer profile "
            "follows the timed runs of its batch size",
        )


def layer_batch_sizes(data: ProfileRequest) -> tuple[int, ...]:
    """The batch sizes profiled layer by layer: those asked for, else the smallest requested."""
    if not data.layers:
        return ()
    return tuple(sorted(set(data.layers_batch_sizes or [min(data.batch_sizes or DEFAULT_BATCH_SIZES)])))


def pick_device(requested: str | None, live: dict[str, int]) -> str:
    if requested is not None:
        return class_of(requested)
    for device in DEVICE_CLASSES:  # cuda, jetson, cpu: the fastest class with a live worker
        if live.get(device):
            return device
    return "cpu"


def settings_for(
    data: ProfileRequest, resolved: Resolved, device: str, target: str | None
) -> ProfileSettings:
    """The canonical settings of a request (what its dedupe key is made of)."""
    options = canonical_options(data.runtime, data.runtime_options, device)
    return ProfileSettings(
        model=resolved.qualified,
        device=device,  # type: ignore[arg-type]
        batch_sizes=tuple(sorted(set(data.batch_sizes or DEFAULT_BATCH_SIZES))),
        runs=data.runs,
        repeats=data.repeats,
        precision=data.precision,
        input_size=data.input_size or resolved.info.input_size,
        channels_last=data.channels_last,
        accuracy=data.accuracy,
        accuracy_images=data.accuracy_images if data.accuracy else None,
        # Only models that have a fused form differ by it (and only they key apart by it).
        reparameterize=data.reparameterize and resolved.info.reparameterizable,
        target=target,
        runtime=data.runtime,
        runtime_options=RuntimeOptions(**options) if options else None,
        layers_batch_sizes=layer_batch_sizes(data),
    )


def no_worker_warning(settings: ProfileSettings) -> str:
    target, device = settings.target, settings.device
    who = f"device target {target!r}" if target else f"device class {device!r}"
    start = (
        f"DNNPROF_DEVICE_TARGET={target} dnnprof worker --device {device}"
        if target
        else f"dnnprof worker --device {device}"
    )
    return (
        f"no worker is serving {who} right now; the job waits in its queue "
        f"({route_of(settings)}) until one starts (on that device: {start})"
    )
