"""Application state shared by the handlers, provided to them as named dependencies."""

from __future__ import annotations

from dataclasses import dataclass, field

from celery import Celery

from dnnprof.catalogue import Catalogue, CatalogueCache, Resolved, UnknownModelError
from dnnprof.config import Settings
from dnnprof.contract import ProfileRecord
from dnnprof.queue import send_profile
from dnnprof.store import AsyncRecordReader, ProfileStore
from dnnprof.uploads import is_upload_name, resolve_upload
from service.caching import FinishedETags


class CatalogueNotReadyError(Exception):
    """No worker has published the model catalogue yet."""


@dataclass
class Services:
    settings: Settings
    store: ProfileStore
    celery: Celery
    catalogue_cache: CatalogueCache
    #: The by-id read on the event loop (see :class:`AsyncRecordReader`).
    reader: AsyncRecordReader
    #: Finished profiles' ETags, so that their polls are 304s without a read.
    finished_etags: FinishedETags = field(default_factory=FinishedETags)

    def catalogue(self) -> Catalogue:
        catalogue = self.catalogue_cache.get()
        if len(catalogue) == 0:
            raise CatalogueNotReadyError
        return catalogue

    def resolve(self, name: str) -> Resolved:
        if is_upload_name(name):  # an uploaded ONNX file (issue 42), not in the catalogue
            return resolve_upload(self.store, self.settings, name)
        return self.catalogue().resolve(name)

    def try_resolve(self, name: str) -> str:
        """The qualified name for ``name`` (with its timm tag) where it resolves, else ``name``
        as given (filters)."""
        try:
            return self.resolve(name).qualified
        except (UnknownModelError, CatalogueNotReadyError):
            return name

    def enqueue(self, record: ProfileRecord) -> None:
        send_profile(self.celery, record)
