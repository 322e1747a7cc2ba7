"""``/v1/models``: the catalogue the workers published (every torchvision and timm classifier and
the paper's zoo), searched without torch."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from dnnprof.contract import ModelInfo
from service.deps import Services


class ModelController(Controller):
    path = "/v1/models"
    tags = ("models",)  # type: ignore[assignment]

    @get("/", summary="Search the model catalogue", sync_to_thread=True)
    def search(
        self,
        services: NamedDependency[Services],
        q: Annotated[str, QueryParameter(max_length=120)] = "",
        paper: Annotated[bool, QueryParameter()] = False,
        limit: Annotated[int, QueryParameter(ge=1, le=2000)] = 50,
    ) -> list[ModelInfo]:
        return services.catalogue().search(q, paper_only=paper, limit=limit)

    @get("/{name:str}", summary="How a model name resolves", sync_to_thread=True)
    def resolve(self, name: FromPath[str], services: NamedDependency[Services]) -> ModelInfo:
        return services.resolve(name).info
