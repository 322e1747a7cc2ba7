"""The store's secondary indexes and maintained aggregates: what a listing, an analysis or a
Prometheus scrape reads instead of every stored record.

Kept in Redis beside the records. The ``idx:*`` sets are written in the same MULTI as the record
they index; the ``counting:*`` hashes in a later WATCH transaction of their own
(:mod:`dnnprof.store.counting`), once the record is written:

- ``idx:model:<model>``, ``idx:status:<status>``, ``idx:class:<class>``, ``idx:target:<target>``:
  sorted sets of profile ids by creation time (the ``profiles`` set indexes them all). A filtered
  listing reads one of them, or their intersection, and decodes only the page it returns.
- ``idx:runtime:<runtime>``: the same, per runtime (eager, compile, onnxruntime, ...).
- ``counting:best`` and ``counting:newest``: hashes of a :class:`dnnprof.selection.GroupKey`
  ("<model> <target> <precision> <runtime>") -> the id of the succeeded profile that counts
  for it (:func:`dnnprof.selection.quality`, or the newest), updated when a profile of that
  group finishes, changes or is deleted. The analyses and ``/metrics`` read these,
  a bounded set whatever the history holds.

``INDEX_VERSION`` names the layout; a store whose ``idx:version`` differs is re-indexed at start
(:meth:`dnnprof.store.ProfileStore.ensure_indexes`), idempotently, nothing stored being touched.
"""

from __future__ import annotations

from dnnprof import keys, selection
from dnnprof.contract import ProfileRecord
from dnnprof.targets import class_of, target_of

INDEX_VERSION = "2"  # 2: the runtime in the group key and its own index
VERSION_KEY = keys.INDEX_VERSION
ALL = keys.ALL_PROFILES
SELECTIONS = selection.SELECTIONS  # which profile counts: see dnnprof.selection


def model_key(model: str) -> str:
    return keys.index("model", model)


def status_key(status: str) -> str:
    return keys.index("status", status)


def device_key(device: str) -> str:
    """A target's index, or a class's (every target of it)."""
    return keys.index("target", device) if "/" in device else keys.index("class", device)


def runtime_key(runtime: str) -> str:
    return keys.index("runtime", runtime)


def counting_key(select: str) -> str:
    return keys.counting(select)


def index_keys(record: ProfileRecord) -> set[str]:
    """Every index one record belongs to (its target: where it ran, else where it was sent)."""
    target = target_of(record)
    found = {
        ALL,
        model_key(record.settings.model),
        status_key(record.status),
        device_key(class_of(target)),
        runtime_key(record.settings.runtime),
    }
    if "/" in target:
        found.add(device_key(target))
    return found


def filter_keys(
    model: str | None, device: str | None, status: str | None, runtime: str | None = None
) -> list[str]:
    """The indexes a listing's filters intersect (the whole set without filters)."""
    wanted = [runtime_key(runtime)] if runtime is not None else []
    if model is not None:
        wanted.append(model_key(model))
    if device is not None:
        wanted.append(device_key(device))
    if status is not None:
        wanted.append(status_key(status))
    return wanted or [ALL]
