"""``/v1/models``: the catalogue the workers published (every torchvision and timm classifier and
the paper's zoo), searched without torch."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from dnnprof.analysis import published_of
from dnnprof.catalogue import Resolved
from dnnprof.contract import ModelInfo, PublishedResult
from service.deps import Services


class ModelDetail(ModelInfo, kw_only=True):
    """A catalogue entry with what the service knows of it besides."""

    qualified: str  # what profiles of it are stored under: the name with its timm tag, if any
    tag: str | None = None
    params: int | None = None
    params_source: str | None = None  # "tv-metadata", "dnnprof-zoo", "measured", "published:<source>"
    published_results: list[PublishedResult] = msgspec.field(default_factory=list)
    stored_profiles: int = 0


def detail(resolved: Resolved, services: Services) -> ModelDetail:
    info = resolved.info
    out = ModelDetail(**msgspec.structs.asdict(info), qualified=resolved.qualified, tag=resolved.tag)
    stored = services.store.list(model=resolved.qualified, limit=100_000)
    profiles = [p for p in stored if p.result is not None]
    published = published_of(services.store.published(), resolved.qualified)
    out.stored_profiles = len(stored)
    out.published_results = published
    if info.published_params is not None:
        out.params, out.params_source = info.published_params, f"{info.source}-metadata"
    elif profiles:
        out.params, out.params_source = profiles[0].result.params, "measured"
    elif any(r.param_count_m for r in published):
        r = next(r for r in published if r.param_count_m)
        out.params, out.params_source = round(r.param_count_m * 1e6), f"published:{r.source}"
    return out


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

    @get(
        "/{name:str}",
        summary="How a model name resolves: source, input size, preprocessing, "
        "parameter count and published accuracy where known",
        sync_to_thread=True,
    )
    def resolve(self, name: FromPath[str], services: NamedDependency[Services]) -> ModelDetail:
        return detail(services.resolve(name), services)
