"""``POST /v1/models?name=`` and ``DELETE /v1/models/upload:<name>``: upload an ONNX file to profile
(issue 42); the reads are ``GET /v1/models?source=upload`` and ``GET /v1/models/upload:<name>``
(:mod:`service.controllers.models`).

The body is streamed: its hash is taken as it arrives and it is held only up to the size cap
(a larger one is refused as soon as it passes the cap, or at once from its Content-Length). It is
checked by :func:`dnnprof.onnx_check.inspect_onnx` in a thread, never run, and nothing from it
names a path: the store keeps it under its hash.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Annotated

import anyio.to_thread
from litestar import Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from dnnprof.config import MIB
from dnnprof.upload_contract import ACCEPTED, Limits, UploadRefused
from dnnprof.uploads import PREFIX, UploadedModel, UploadService, check_name, parse_preprocessing
from service.bodies import media_type
from service.deps import Services
from service.errors import error_responses
from service.security import identity_for

#: A preprocessing field an upload may state (checked by :func:`dnnprof.uploads.parse_preprocessing`).
Stated = Annotated[
    str | None,
    QueryParameter(
        max_length=100,
        description="The model's preprocessing, for accuracy: mean and std (three comma-separated "
        "numbers each), crop_pct in (0, 1], interpolation (bilinear, bicubic, nearest), input_space "
        "(RGB, BGR); accuracy needs all five",
    ),
]
#: The Content-Types an upload may be sent as.
ONNX_TYPES = ("application/onnx", "application/octet-stream")
#: Uploads one API process receives and checks at once: each may hold a few times
#: DNNPROF_MAX_UPLOAD_MB while it is parsed and checked, so their number is what bounds the memory.
MAX_CONCURRENT_UPLOADS = 2
_receiving = 0


def client_of(request: Request, services: Services) -> str:
    """Who uploads, as the rate limit counts them (a verified key, else the address), hashed as
    the active-job cap hashes it."""
    identity = identity_for(services.settings.api_keys)(request)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def refused(exc: UploadRefused) -> HTTPException:
    error = HTTPException(status_code=exc.status, detail=exc.detail)
    if exc.status in (429, 507):
        error.headers = {"Retry-After": "60"}
    return error


async def read_capped(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """The body and its sha256, read as it streams in; refused once it passes ``max_bytes``."""
    too_large = UploadRefused(
        422,
        f"the file is over the upload cap of {max_bytes // MIB} MB (DNNPROF_MAX_UPLOAD_MB); "
        "nothing was stored",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    digest, body = hashlib.sha256(), bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > max_bytes:
            raise too_large
        digest.update(chunk)
        body += chunk
    if not body:
        raise UploadRefused(400, f"the body is empty: send {ACCEPTED}")
    return bytes(body), digest.hexdigest()


@contextlib.contextmanager
def one_of_the_uploads() -> Iterator[None]:
    """A place among the uploads this process handles at once, or a 429 saying to retry (the
    handlers run on one event loop: the count needs no lock)."""
    global _receiving
    if _receiving >= MAX_CONCURRENT_UPLOADS:
        raise UploadRefused(
            429,
            f"this API process is receiving {MAX_CONCURRENT_UPLOADS} uploads already; retry in a few seconds",
        )
    _receiving += 1
    try:
        yield
    finally:
        _receiving -= 1


async def receive(
    request: Request, uploads: UploadService, name: str, client: str, stated: dict[str, object]
) -> tuple[UploadedModel, bool]:
    """Read, check (in a thread: parsing is CPU work) and store one upload."""
    settings = uploads.settings
    data, sha256 = await read_capped(request, settings.max_upload_mb * MIB)
    limits = Limits(max_bytes=settings.max_upload_mb * MIB, max_nodes=settings.max_upload_nodes)
    from dnnprof.onnx_check import inspect_onnx  # onnx and numpy: loaded at the first upload

    summary = await anyio.to_thread.run_sync(inspect_onnx, data, limits)
    return await anyio.to_thread.run_sync(uploads.create, name, summary, data, sha256, client, stated)


class UploadRoutes:
    """The writes of ``/v1/models``, mixed into :class:`service.controllers.models.ModelController`
    (one controller a path: Litestar gives each its own OPTIONS handler)."""

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        summary="Upload an ONNX model to profile (the body is the file)",
        description="Send the file as `application/onnx` or `application/octet-stream`; 201 and a "
        "`Location` with the model's entry (`upload:<name>`), 200 where the same client uploaded the "
        "same file under the name before. Refused without being run: anything but an ONNX ModelProto "
        "(415), tensors with external data, more than the size or node caps, a graph onnx.checker "
        "refuses, operators outside the standard domain, other than one rank-4 float input (422).",
        request_max_body_size=None,  # streamed and capped by the handler (DNNPROF_MAX_UPLOAD_MB)
        responses=error_responses(400, 401, 409, 415, 422, 429, 503, 507),
    )
    async def upload(
        self,
        request: Request,
        services: NamedDependency[Services],
        name: Annotated[str, QueryParameter(min_length=1, max_length=80)],
        mean: Stated = None,
        std: Stated = None,
        crop_pct: Stated = None,
        interpolation: Stated = None,
        input_space: Stated = None,
    ) -> Response[UploadedModel]:
        got = media_type(request)
        settings = services.settings
        uploads = UploadService(services.store, settings)
        client = client_of(request, services)
        try:
            if got not in ONNX_TYPES:
                raise UploadRefused(
                    415, f"this endpoint takes {ACCEPTED}; got " + (f"'{got}'" if got else "no Content-Type")
                )
            bare = check_name(name)
            given = {"mean": mean, "std": std, "crop_pct": crop_pct, "interpolation": interpolation}
            stated = parse_preprocessing({**given, "input_space": input_space})
            await anyio.to_thread.run_sync(uploads.precheck, client)
            with one_of_the_uploads():
                entry, created = await receive(request, uploads, bare, client, stated)
        except UploadRefused as exc:
            raise refused(exc) from None
        location = f"/v1/models/{PREFIX}{bare}"
        return Response(
            entry, status_code=HTTP_201_CREATED if created else HTTP_200_OK, headers={"Location": location}
        )

    @delete(
        "/{name:str}",
        status_code=HTTP_200_OK,
        summary="Delete an uploaded model (upload:<name>); its profiles stay",
        sync_to_thread=True,
        responses=error_responses(401, 403, 404, 422, 429, 503),
    )
    def remove(
        self, request: Request, name: FromPath[str], services: NamedDependency[Services]
    ) -> UploadedModel:
        if not name.lower().startswith(PREFIX):
            raise HTTPException(
                status_code=422,
                detail=f"only uploaded models can be deleted: {PREFIX}<name>, not {name[:80]!r}",
            )
        try:
            return UploadService(services.store, services.settings).delete(name, client_of(request, services))
        except UploadRefused as exc:
            raise refused(exc) from None


def uploaded(services: Services, name: str) -> UploadedModel:
    """``GET /v1/models/upload:<name>``: the entry, or a 404."""
    try:
        return UploadService(services.store, services.settings).get(name)
    except UploadRefused as exc:
        raise refused(exc) from None


def uploaded_list(services: Services, query: str, limit: int) -> list[UploadedModel]:
    """``GET /v1/models?source=upload``: the uploaded models whose name holds ``query``, by name."""
    every = UploadService(services.store, services.settings).list()
    return [e for e in every if query.lower() in e.name.lower()][:limit]
