"""The Redis store, one module a concern, one :class:`ProfileStore` over them all:

- :mod:`~dnnprof.store.records`   profile records, dedupe, listing through the indexes, deletes
- :mod:`~dnnprof.store.counting`  which profile counts per (model, target, precision, runtime),
                                  incremental
- :mod:`~dnnprof.store.parts`     what the measuring processes stored, FLOP and model counts
- :mod:`~dnnprof.store.jobs`      per-client active jobs, cancels, job counters, kombu's messages
- :mod:`~dnnprof.store.registry`  live workers and the devices seen
- :mod:`~dnnprof.store.published` published tables and the model catalogue
- :mod:`~dnnprof.store.uploads`   uploaded ONNX files (chunked, by sha256) and their named entries
- :mod:`~dnnprof.store.base`      the client, its timeouts, compare-and-delete, retries

Keys (all under ``dnnprof:``, each built in :mod:`dnnprof.keys`):

- ``profile:<id>``      JSON :class:`ProfileRecord` (the job, its progress and its result)
- ``profiles``          sorted set of ids by creation time
- ``idx:*``, ``counting:*``  secondary indexes and which profile counts (see :mod:`dnnprof.indexes`)
- ``dedupe:<key>``      id of the job for one set of canonical settings
- ``layers:<id>``       hash batch size -> JSON :class:`LayerProfile` (``layers: true``), apart
                        from the record so that reading a profile stays small
- ``cancel:<id>``       set when a running job must stop
- ``parts:<id>``        hash of what the measuring processes stored so far, cell by cell:
                        ``static:<p>``, ``cell:<p>:<batch size>``, ``end:<p>`` (see contract.py)
- ``flops:v<n>:<model>:<input size>``  the model's :class:`FlopCount`, counted once
- ``worker:<class>:<hostname>``  JSON :class:`WorkerInfo`, expiring unless renewed
- ``authfail:<address>``  failed authentications of one client address in the current minute
                        (written by :mod:`service.security`)
- ``active-by:<client>``  set of the jobs one client created that may still be queued or running
- ``stats:jobs``        hash "<status>:count" / "<status>:seconds" of ended jobs
- ``catalogue``         hash name -> JSON :class:`ModelInfo`; ``catalogue:version`` its version
- ``blob:*``, ``blobs``, ``blob-refs:*``, ``upload:<name>``, ``uploads``, ``uploads-by:<client>``
                        uploaded files and their entries (see :mod:`dnnprof.store.uploads`)
- ``published:<source>`` hash model -> JSON :class:`PublishedResult`; ``published:sources`` the set
"""

from __future__ import annotations

from dnnprof.keys import PREFIX
from dnnprof.store.base import FULL_ERRORS, ConflictError, RecordGone, now, redis_py_url, with_retries
from dnnprof.store.jobs import JobsMixin
from dnnprof.store.parts import Parts, PartsMixin
from dnnprof.store.published import PublishedMixin
from dnnprof.store.records import AsyncRecordReader, RecordsMixin
from dnnprof.store.registry import RegistryMixin
from dnnprof.store.uploads import UploadsMixin

__all__ = [
    "FULL_ERRORS",
    "PREFIX",
    "AsyncRecordReader",
    "ConflictError",
    "Parts",
    "ProfileStore",
    "RecordGone",
    "now",
    "redis_py_url",
    "with_retries",
]


class ProfileStore(RecordsMixin, PartsMixin, JobsMixin, RegistryMixin, PublishedMixin, UploadsMixin):
    """Everything dnnprof keeps in Redis (see the module list above for which part is where)."""
