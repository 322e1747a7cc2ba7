"""The measuring side: the Celery app and tasks (:mod:`workers.celery_app`), the per-profile child
process (:mod:`workers.runner`) and the engine it runs (:mod:`workers.engine`).

The Celery parent and its pool processes never import torch or touch CUDA. Each measuring
process is, by default, forked from a template process that imported torch, torchvision, timm and
the engine once but never opened a device (:mod:`workers.template`, :mod:`workers.launch`), so CUDA
is created in each fork and never meets ``fork``; ``DNNPROF_MEASURE_START=fresh`` starts a fresh
interpreter instead. Either way nothing leaks from one model's process to the next.
"""
