"""``/v1/models``: the catalogue the workers published (every torchvision and timm classifier and
the paper's zoo), searched without torch."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, QueryParameter

from dnnprof.contract import ModelInfo, ModelName
from dnnprof.uploads import UploadedModel, is_upload_name
from service.controllers.uploads import UploadRoutes, uploaded, uploaded_list
from service.deps import Services
from service.errors import error_responses
from service.reads.models import ModelDetail, ModelReads, TargetHistory


def model_name(name: str) -> str:
    """The name as POST /v1/profiles takes it (the same pattern and length), else a 422: the
    catalogue's forgiving lookup resolved zero-width spaces and soft hyphens POST refuses."""
    try:
        return msgspec.convert(name, ModelName)
    except msgspec.ValidationError as exc:
        raise ValidationException(
            detail="Validation failed", extra=[{"message": str(exc), "key": "name", "source": "path"}]
        ) from exc


class ModelController(UploadRoutes, Controller):
    path = "/v1/models"
    tags = ("models",)  # type: ignore[assignment]

    @get("/", summary="Search the model catalogue", sync_to_thread=True)
    def search(
        self,
        services: NamedDependency[Services],
        q: Annotated[str, QueryParameter(max_length=120)] = "",
        paper: Annotated[bool, QueryParameter()] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=2000)] = 50,
        source: Annotated[Literal["upload"] | None, QueryParameter()] = None,
    ) -> list[ModelInfo]:
        if source == "upload":  # uploaded ONNX files (issue 42)
            return uploaded_list(services, q, limit)
        return services.catalogue().search(q, paper_only=paper, limit=limit)

    @get(
        "/{name:str}",
        summary="How a model name resolves: source, input size, preprocessing, "
        "parameter count and published accuracy where known",
        sync_to_thread=True,
        responses=error_responses(404, 422, 503),
    )
    def resolve(
        self, name: FromPath[str], services: NamedDependency[Services]
    ) -> ModelDetail | UploadedModel:
        name = model_name(name)
        if is_upload_name(name):  # an uploaded ONNX file's entry (issue 42)
            return uploaded(services, name)
        return ModelReads(services).detail(services.resolve(name))

    @get(
        "/{name:str}/history",
        summary="Every succeeded profile of a model, per device target, newest first",
        description="Shows drift between measurements, and which profile the analyses use "
        "(counts: the best under select=best).",
        sync_to_thread=True,
        responses=error_responses(404, 422, 503),
    )
    def history(self, name: FromPath[str], services: NamedDependency[Services]) -> list[TargetHistory]:
        return ModelReads(services).history(services.resolve(model_name(name)).qualified)
