"""``/v1/profiles``: ask for a profile, follow it, list, cancel and delete."""

from __future__ import annotations

import hashlib
import uuid
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException, TooManyRequestsException, ValidationException
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from msgspec import Struct

from dnnprof.contract import (
    DEFAULT_BATCH_SIZES,
    DEVICE_CLASSES,
    IMAGENET_CLASSES,
    TERMINAL_STATUSES,
    DeviceClass,
    JobStatus,
    ProfileRecord,
    ProfileRequest,
    ProfileSettings,
    Progress,
    precision_refusal,
)
from dnnprof.cost import GB, too_costly, too_slow
from dnnprof.queue import queue_for, route_of
from dnnprof.store import ConflictError, ProfileStore, now
from dnnprof.targets import class_of, is_target, target_of
from service.bodies import strict_json
from service.caching import conditional_json
from service.deps import Services
from service.errors import error_responses
from service.params import DeviceFilter, ModelFilter, next_page_link
from service.security import identity_for

#: Redis ranks are 64-bit: an offset past any store's size is refused (a 4xx), not sent on.
MAX_OFFSET = 10**12


class ProfileAccepted(Struct, kw_only=True):
    """Answer to a POST: the job (new or the equal one already stored) and where to follow it."""

    id: str
    status: JobStatus
    created: bool
    location: str
    device: DeviceClass
    #: The device target it is sent to (or ran on); None where no worker of the class is live.
    target: str | None
    workers_serving_device: int
    warning: str | None = None
    profile: ProfileRecord


class DeleteOutcome(Struct, kw_only=True):
    id: str
    outcome: str  # "cancelled", "cancelling", "deleted"


def _client_of(request: Request, services: Services) -> str:
    """Who asks, as the rate limit counts them (a verified key, else the address), hashed."""
    identity = identity_for(services.settings.api_keys)(request)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _check_active_cap(store: ProfileStore, client: str, cap: int) -> None:
    if cap <= 0:
        return
    active = store.active_of(client)
    if active >= cap:
        raise TooManyRequestsException(
            f"{active} jobs of yours are queued or running, the most one client may have "
            f"(DNNPROF_MAX_ACTIVE_PER_CLIENT={cap}): wait for some to end, or cancel some "
            "(DELETE /v1/profiles/{id})"
        )


def _pick_device(requested: str | None, live: dict[str, int]) -> str:
    if requested is not None:
        return class_of(requested)
    for device in DEVICE_CLASSES:  # cuda, jetson, cpu: the fastest class with a live worker
        if live.get(device):
            return device
    return "cpu"


def _known_target(store: ProfileStore, target: str, live_targets: dict[str, int]) -> str:
    """A target a worker serves or once served: its jobs wait for it. One no worker ever
    advertised would wait for ever in a queue of its own (a typo, a made-up name): a 404 naming
    the targets of its class that are known."""
    seen = store.devices()
    if target in live_targets or target in seen:
        return target
    known = sorted(t for t in {*seen, *live_targets} if class_of(t) == class_of(target))
    start = f"DNNPROF_DEVICE_TARGET={target} dnnprof worker --device {class_of(target)}"
    raise NotFoundException(
        f"no worker has ever served the device target {target!r}; known {class_of(target)} targets: "
        f"{', '.join(known) or 'none'} (GET /v1/devices). Name one of them or the class "
        f"{class_of(target)!r}, or start a worker there first ({start})"
    )


def _route_target(store: ProfileStore, device_class: str, live_targets: dict[str, int]) -> str | None:
    """For a request naming a class: the live target of that class with the fewest jobs waiting
    per worker (then the most workers, then by name), so its result is keyed to where it runs.
    With none live, the class's only target ever seen (a one-device deployment between restarts);
    else None: the class queue, whichever target starts first."""
    candidates = [t for t in live_targets if class_of(t) == device_class]
    if not candidates:
        known = [t for t in store.devices() if class_of(t) == device_class]
        return known[0] if len(known) == 1 else None
    return min(
        candidates,
        key=lambda t: (store.queue_length(queue_for(t)) / live_targets[t], -live_targets[t], t),
    )


def _stored_elsewhere(
    store: ProfileStore, settings: ProfileSettings, *, any_target: bool
) -> ProfileRecord | None:
    """A stored profile that answers the request though its dedupe key differs: with
    ``any_target``, one of any target of the class (or of the class alone); for a target, one
    stored before targets existed that ran there (its fingerprint says so)."""
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


def _accepted(record: ProfileRecord, *, created: bool, serving: int, warning: str | None) -> Response:
    location = f"/v1/profiles/{record.id}"
    body = ProfileAccepted(
        id=record.id,
        status=record.status,
        created=created,
        location=location,
        device=record.settings.device,
        target=target_of(record) if record.result is not None or record.settings.target else None,
        workers_serving_device=serving,
        warning=warning,
        profile=record,
    )
    status_code = HTTP_200_OK if record.status == "succeeded" else HTTP_202_ACCEPTED
    return Response(body, status_code=status_code, headers={"Location": location})


class ProfileController(Controller):
    path = "/v1/profiles"
    tags = ("profiles",)  # type: ignore[assignment]

    @post(
        "/",
        status_code=HTTP_202_ACCEPTED,
        summary="Profile a model",
        description="Queues a profile, or returns the stored one (200) or the equal job in flight (202) "
        "unless `force`. Unknown model: 404 with close matches; bad fields: 422 naming the field.",
        sync_to_thread=True,
        before_request=strict_json(ProfileRequest),
        responses=error_responses(400, 401, 404, 413, 415, 422, 429, 503, 507),
    )
    def create(
        self, request: Request, data: JSONBody[ProfileRequest], services: NamedDependency[Services]
    ) -> Response[ProfileAccepted]:
        resolved = services.resolve(data.model)
        if resolved.info.unavailable:
            raise ValidationException(
                detail=f"{resolved.qualified} cannot be profiled",
                extra=[{"key": "model", "source": "body", "message": resolved.info.unavailable}],
            )
        if data.accuracy and resolved.info.num_classes != IMAGENET_CLASSES:
            raise ValidationException(
                detail="accuracy is measured on ImageNet-1k",
                extra=[
                    {
                        "key": "accuracy",
                        "source": "body",
                        "message": f"{data.model!r} resolves to a model with {resolved.info.num_classes} "
                        f"output classes, not ImageNet-1k's {IMAGENET_CLASSES}: its top-1/top-5 "
                        "on the ImageNet validation set would mean nothing",
                    }
                ],
            )
        store = services.store
        live = store.live_device_classes()
        device = _pick_device(data.device, live)
        live_targets = store.live_targets()
        if data.device and is_target(data.device):
            target = _known_target(store, data.device, live_targets)
        else:
            target = _route_target(store, device, live_targets)
        if refusal := precision_refusal(data.precision, device):
            raise ValidationException(
                detail=f"{data.precision} is not measured on a {device} device",
                extra=[{"key": "precision", "source": "body", "message": refusal}],
            )
        settings = ProfileSettings(
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
        )
        self._check_cost(services, resolved.info, settings)
        stored = None if data.force else _stored_elsewhere(store, settings, any_target=data.any_target)
        if stored is not None:
            return _accepted(stored, created=False, serving=live.get(device, 0), warning=None)
        record = ProfileRecord(
            id=uuid.uuid4().hex,
            status="queued",
            settings=settings,
            model=resolved.info,
            created_at=now(),
            progress=Progress.at_start(settings),
        )
        client = _client_of(request, services)
        _check_active_cap(store, client, services.settings.max_active_per_client)
        record, created = store.create_or_get(record, force=data.force)
        if created:
            store.note_active(client, record.id)
            try:
                services.enqueue(record)
            except Exception:
                store.delete(record.id)  # never leave a job that no worker will see
                raise
        serving = live_targets.get(target, 0) if target else live.get(device, 0)
        warning = None
        if serving == 0 and record.status not in TERMINAL_STATUSES:
            who = f"device target {target!r}" if target else f"device class {device!r}"
            start = (
                f"DNNPROF_DEVICE_TARGET={target} dnnprof worker --device {device}"
                if target
                else f"dnnprof worker --device {device}"
            )
            warning = (
                f"no worker is serving {who} right now; the job waits in its queue "
                f"({route_of(settings)}) until one starts (on that device: {start})"
            )
        return _accepted(record, created=created, serving=serving, warning=warning)

    @staticmethod
    def _check_cost(services: Services, info, settings: ProfileSettings) -> None:
        """Refuse what no worker of the device could hold (DNNPROF_MAX_REQUEST_COST_GB, and the
        largest memory a live worker of that device reports), and what no device of its class
        could time inside the time limit (:func:`dnnprof.cost.too_slow`)."""
        limit = services.settings.max_request_cost_gb * GB
        cap = services.settings.max_request_cost_gb
        source = f"the most one request may ask (DNNPROF_MAX_REQUEST_COST_GB={cap:g})"
        where = settings.target or settings.device
        memories = [
            w.device_memory_bytes
            for w in services.store.workers()
            if (w.device_target == settings.target if settings.target else w.device_class == settings.device)
            and w.device_memory_bytes
        ]
        if memories and max(memories) < limit:
            limit = max(memories)
            source = f"the largest {where} worker's memory (DNNPROF_MAX_REQUEST_COST_GB caps it too)"
        reason = too_costly(
            info, max(settings.batch_sizes), settings.input_size, settings.precision, limit, source
        )
        if reason:
            raise ValidationException(
                detail="the request needs more memory than any device here has",
                extra=[{"key": "batch_sizes", "source": "body", "message": reason}],
            )
        counted = services.store.model_counts(info.name) if not info.published_gmacs else None
        if reason := too_slow(info, settings, services.settings.soft_time_limit_s, counted and counted.flops):
            raise ValidationException(
                detail="the request cannot finish inside the time limit",
                extra=[{"key": "runs", "source": "body", "message": reason}],
            )

    @get(
        "/{profile_id:str}",
        summary="A profile job and its result",
        description="With a strong `ETag`: send it back as `If-None-Match` and an unchanged profile "
        "is a 304 with no body. A finished profile never changes (`Cache-Control: max-age=3600, "
        "immutable`); a queued or running one is `no-cache` (revalidate each poll).",
    )
    async def read(
        self, request: Request, profile_id: FromPath[str], services: NamedDependency[Services]
    ) -> Response[ProfileRecord]:
        record = await services.reader.get(profile_id)
        if record is None:
            raise NotFoundException(f"no profile with id {profile_id!r}")
        body = msgspec.json.encode(record)
        return conditional_json(request, body, finished=record.status in TERMINAL_STATUSES)

    @get(
        "/",
        summary="Stored profiles, newest first",
        description="Page with `offset`, or with `after` (a profile id: the page after it). A full "
        'page carries a `Link: <...>; rel="next"` header to the next one.',
        sync_to_thread=True,
    )
    def list_profiles(
        self,
        request: Request,
        services: NamedDependency[Services],
        model: ModelFilter = None,
        device: DeviceFilter = None,
        status: Annotated[JobStatus | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
        after: Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    ) -> Response[list[ProfileRecord]]:
        qualified = services.try_resolve(model) if model else None
        page = services.store.list(
            model=qualified, device=device, status=status, limit=limit, offset=offset, after=after
        )
        headers = (
            next_page_link(request, ("offset", "after"), after=page[-1].id) if len(page) == limit else {}
        )
        return Response(page, headers=headers)

    @delete(
        "/{profile_id:str}",
        status_code=HTTP_200_OK,
        summary="Cancel a queued or running job, or delete a finished profile",
        sync_to_thread=True,
    )
    def remove(
        self, profile_id: FromPath[str], services: NamedDependency[Services]
    ) -> Response[DeleteOutcome]:
        store = services.store
        record = store.get(profile_id)
        if record is None:
            raise NotFoundException(f"no profile with id {profile_id!r}")
        if record.status in TERMINAL_STATUSES:
            store.delete(profile_id)
            return Response(DeleteOutcome(id=profile_id, outcome="deleted"))
        store.request_cancel(profile_id)

        def cancel_queued(rec: ProfileRecord) -> ProfileRecord:
            rec.status = "cancelled"
            rec.finished_at = now()
            rec.error = "cancelled before it started"
            return rec

        try:
            cancelled = store.update(profile_id, cancel_queued, allowed_from=("queued",))
            store.count_finished("cancelled", (cancelled.finished_at or 0) - cancelled.created_at)
            # Its message would wait for ever where no worker serves the class: take it out now.
            store.purge_task_messages(route_of(cancelled.settings), [profile_id])
            return Response(DeleteOutcome(id=profile_id, outcome="cancelled"))
        except ConflictError:
            # Running: the worker sees the flag within a second, stops the measuring process and
            # marks the job cancelled.
            return Response(DeleteOutcome(id=profile_id, outcome="cancelling"), status_code=HTTP_202_ACCEPTED)
