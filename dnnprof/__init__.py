"""dnnprof: the torch-free core shared by the API (`service/`) and the workers (`workers/`).

It holds the request/result contract (:mod:`dnnprof.contract`), the Redis store
(:mod:`dnnprof.store`), the Celery wiring both sides agree on (:mod:`dnnprof.queue`),
the model catalogue lookup (:mod:`dnnprof.catalogue`) and the command line (:mod:`dnnprof.cli`).
"""

__version__ = "0.1.0"
