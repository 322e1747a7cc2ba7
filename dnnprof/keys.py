"""Every Redis key dnnprof writes, built here and nowhere else (the store's modules, the indexes,
the device lease). All start with :data:`PREFIX`, so one Redis can hold other applications' keys
(and Celery's queues) beside them."""

from __future__ import annotations

PREFIX = "dnnprof:"

# Records and what hangs off one.
def record(profile_id: str) -> str:
    return f"{PREFIX}profile:{profile_id}"


def dedupe(dedupe_key: str) -> str:
    """The id of the job a request's canonical settings made (``ProfileSettings.dedupe_key``)."""
    return f"{PREFIX}dedupe:{dedupe_key}"


def parts(profile_id: str) -> str:
    """The measuring processes' statics, cells and endings while a job runs."""
    return f"{PREFIX}parts:{profile_id}"


def layers(profile_id: str) -> str:
    """The profile's layer profiles, one per batch size (kept apart from its record)."""
    return f"{PREFIX}layers:{profile_id}"


def cancel(profile_id: str) -> str:
    return f"{PREFIX}cancel:{profile_id}"


def active_by(client: str) -> str:
    return f"{PREFIX}active-by:{client}"


JOB_STATS = f"{PREFIX}stats:jobs"

# Secondary indexes and aggregates (dnnprof.indexes says what each holds).
INDEX_VERSION = f"{PREFIX}idx:version"
ALL_PROFILES = f"{PREFIX}profiles"
#: Incremented whenever a profile that counts changes (readers cache on it). Not the FLOP
#: counting method's version (``workers.engine.flops.FLOP_METHOD_VERSION``).
COUNTING_GENERATION = f"{PREFIX}counting:version"
TMP = f"{PREFIX}tmp:"
REINDEX_LOCK = f"{PREFIX}lock:reindex"


def index(kind: str, value: str) -> str:
    """``idx:model:<m>``, ``idx:status:<s>``, ``idx:class:<c>``, ``idx:target:<t>``, ``idx:runtime:<r>``."""
    return f"{PREFIX}idx:{kind}:{value}"


def counting(select: str) -> str:
    return f"{PREFIX}counting:{select}"


def intersection(digest: str) -> str:
    return f"{TMP}inter:{digest}"


# Static figures counted once.
def flops(version: int, model: str, input_size: int) -> str:
    return f"{PREFIX}flops:v{version}:{model}:{input_size}"


COUNT_REQUESTS = f"{PREFIX}counts:requests"


def counts(qualified: str) -> str:
    return f"{PREFIX}counts:{qualified}"


def counts_pending(qualified: str) -> str:
    return f"{PREFIX}counts:pending:{qualified}"


# Published tables and the catalogue.
PUBLISHED_VERSION = f"{PREFIX}published:version"
PUBLISHED_SOURCES = f"{PREFIX}published:sources"
PUBLISHED_SHIPPED = f"{PREFIX}published:shipped"
CATALOGUE = f"{PREFIX}catalogue"
CATALOGUE_VERSION = f"{PREFIX}catalogue:version"


def published(source: str) -> str:
    return f"{PREFIX}published:{source}"


# Workers and devices.
LIVE_WORKERS = f"{PREFIX}workers:live"
DEVICES = f"{PREFIX}devices"


def worker(device_class: str, hostname: str) -> str:
    return f"{PREFIX}worker:{device_class}:{hostname}"


def device_lock(name: str) -> str:
    """The device lease: one measurement at a time on one device (``workers.lease``)."""
    return f"{PREFIX}lock:{name}"


# Uploaded ONNX files (issue 42; dnnprof.store.uploads says what each holds).
BLOBS = f"{PREFIX}blobs"
UPLOADS = f"{PREFIX}uploads"


def blob(sha256: str) -> str:
    return f"{PREFIX}blob:{sha256}"


def blob_partial(token: str) -> str:
    """A file being written, renamed to :func:`blob` once whole."""
    return f"{PREFIX}blob-partial:{token}"


def blob_refs(sha256: str) -> str:
    return f"{PREFIX}blob-refs:{sha256}"


def upload(name: str) -> str:
    return f"{PREFIX}upload:{name}"


def uploads_by(client: str) -> str:
    return f"{PREFIX}uploads-by:{client}"
