"""The measuring side: the Celery app and tasks (:mod:`workers.celery_app`), the per-profile child
process (:mod:`workers.runner`) and the engine it runs (:mod:`workers.engine`).

The Celery parent and its pool processes never import torch or touch CUDA: every profile is
measured in a freshly spawned interpreter, so CUDA never meets ``fork`` and nothing leaks between
models.
"""
