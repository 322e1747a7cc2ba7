"""Stored profiles by filter: a page of the listing, or every one for an export."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from dnnprof.contract import ProfileRecord
from service.deps import Services


@dataclass(frozen=True)
class ProfileQuery:
    """What a listing or an export filters on (its query parameters, as one object)."""

    model: str | None = None
    device: str | None = None
    status: str | None = None
    runtime: str | None = None
    limit: int = 100
    offset: int = 0
    after: str | None = None


@dataclass
class ProfileReads:
    """Stored profiles by filter: a page of the listing, or every one for an export."""

    services: Services

    def page(self, query: ProfileQuery) -> list[ProfileRecord]:
        return self.services.store.list(
            model=self._qualified(query.model),
            device=query.device,
            status=query.status,
            runtime=query.runtime,
            limit=query.limit,
            offset=query.offset,
            after=query.after,
        )

    def every(self, query: ProfileQuery) -> Iterator[ProfileRecord]:
        """Streamed as read (exports). Resolving a name reads the catalogue's version from Redis:
        call it from a thread."""
        return self.services.store.iter_records(
            model=self._qualified(query.model), device=query.device, status=query.status
        )

    def _qualified(self, model: str | None) -> str | None:
        return self.services.try_resolve(model) if model else None
