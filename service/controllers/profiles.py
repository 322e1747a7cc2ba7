"""``/v1/profiles``: ask for a profile, follow it, list, cancel and delete."""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import (
    HTTPException,
    NotFoundException,
    TooManyRequestsException,
    ValidationException,
)
from litestar.params import FromPath, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED
from msgspec import Struct

from dnnprof.contract import (
    TERMINAL_STATUSES,
    DeviceClass,
    JobStatus,
    ProfileRecord,
    ProfileRequest,
)
from dnnprof.profiling import Accepted, FieldRefused, ProfileService, Refusal, UnknownTarget
from dnnprof.targets import target_of
from service.bodies import strict_json
from service.caching import client_has, conditional_json, etag_of, not_modified
from service.deps import Services
from service.errors import error_responses
from service.params import DeviceFilter, ModelFilter, RuntimeFilter, next_page_link
from service.reads import ProfileQuery, ProfileReads
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


def _http_error(refusal: Refusal) -> HTTPException:
    """The API's answer to a refusal of the profiling service: the field named in a 422, a 404 for
    a target no worker ever served, a 429 for a client at its cap of active jobs."""
    if isinstance(refusal, FieldRefused):
        extra = [{"key": refusal.key, "source": "body", "message": refusal.message}]
        return ValidationException(detail=refusal.detail, extra=extra)
    if isinstance(refusal, UnknownTarget):
        return NotFoundException(refusal.detail)
    return TooManyRequestsException(refusal.detail)


def profile_service(services: NamedDependency[Services]) -> ProfileService:
    """The profiling service, provided to the handlers that ask for profiles or remove them."""
    return ProfileService(services.store, services.settings, services.resolve, services.enqueue)


def _accepted(accepted: Accepted) -> Response:
    record = accepted.record
    location = f"/v1/profiles/{record.id}"
    body = ProfileAccepted(
        id=record.id,
        status=record.status,
        created=accepted.created,
        location=location,
        device=record.settings.device,
        target=target_of(record) if record.result is not None or record.settings.target else None,
        workers_serving_device=accepted.serving,
        warning=accepted.warning,
        profile=record,
    )
    status_code = HTTP_200_OK if record.status == "succeeded" else HTTP_202_ACCEPTED
    return Response(body, status_code=status_code, headers={"Location": location})


def provide_profile_reads(services: NamedDependency[Services]) -> ProfileReads:
    return ProfileReads(services)


def provide_profile_query(
    model: ModelFilter = None,
    device: DeviceFilter = None,
    status: Annotated[JobStatus | None, QueryParameter()] = None,
    runtime: RuntimeFilter = None,
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    offset: Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)] = 0,
    after: Annotated[str | None, QueryParameter(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
) -> ProfileQuery:
    """The listing's filters and page, as one object (their query parameters)."""
    return ProfileQuery(model, device, status, runtime, limit, offset, after)


class ProfileController(Controller):
    path = "/v1/profiles"
    tags = ("profiles",)  # type: ignore[assignment]
    dependencies = {  # noqa: RUF012
        "profiles": Provide(profile_service, sync_to_thread=False),
        "reads": Provide(provide_profile_reads, sync_to_thread=False),
        "filters": Provide(provide_profile_query, sync_to_thread=False),
    }

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
        self,
        request: Request,
        data: JSONBody[ProfileRequest],
        services: NamedDependency[Services],
        profiles: NamedDependency[ProfileService],
    ) -> Response[ProfileAccepted]:
        try:
            accepted = profiles.submit(data, _client_of(request, services))
        except Refusal as refusal:
            raise _http_error(refusal) from None
        return _accepted(accepted)

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
        sent = request.headers.get("if-none-match")
        known = services.finished_etags.get(profile_id) if sent else None
        if known is not None and client_has(sent, known):
            return not_modified(known, finished=True)
        record = await services.reader.get(profile_id)
        if record is None:
            raise NotFoundException(f"no profile with id {profile_id!r}")
        body = msgspec.json.encode(record)
        etag, finished = etag_of(body), record.status in TERMINAL_STATUSES
        if finished:
            services.finished_etags.remember(profile_id, etag)
        return conditional_json(request, body, etag, finished=finished)

    @get(
        "/",
        summary="Stored profiles, newest first",
        description="Page with `offset`, or with `after` (a profile id: the page after it). A full "
        'page carries a `Link: <...>; rel="next"` header to the next one.',
        sync_to_thread=True,
    )
    def list_profiles(
        self, request: Request, reads: NamedDependency[ProfileReads], filters: NamedDependency[ProfileQuery]
    ) -> Response[list[ProfileRecord]]:
        page = reads.page(filters)
        full = len(page) == filters.limit
        headers = next_page_link(request, ("offset", "after"), after=page[-1].id) if full else {}
        return Response(page, headers=headers)

    @delete(
        "/{profile_id:str}",
        status_code=HTTP_200_OK,
        summary="Cancel a queued or running job, or delete a finished profile",
        sync_to_thread=True,
    )
    def remove(
        self,
        profile_id: FromPath[str],
        profiles: NamedDependency[ProfileService],
        services: NamedDependency[Services],
    ) -> Response[DeleteOutcome]:
        outcome = profiles.remove(profile_id)
        services.finished_etags.forget(profile_id)
        if outcome is None:
            raise NotFoundException(f"no profile with id {profile_id!r}")
        status_code = HTTP_202_ACCEPTED if outcome == "cancelling" else HTTP_200_OK
        return Response(DeleteOutcome(id=profile_id, outcome=outcome), status_code=status_code)
