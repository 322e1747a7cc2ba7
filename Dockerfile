# dnnprof images. Two targets:
#   docker build --target api    -t dnnprof-api .     # the API: no torch, small
#   docker build --target worker -t dnnprof-worker .  # a worker: torch, torchvision, timm, and the
#                                                     # runtimes beside eager (compile, ONNX Runtime, OpenVINO)
# The API image builds for linux/amd64 and linux/arm64 alike, and so does the worker image: on
# amd64 a CUDA worker (torch 2.14.1, CUDA 13.0; also a CPU worker), on arm64 a CPU worker only, on
# PyPI's CPU-only aarch64 torch 2.10.0 (its newest: from 2.11 on PyPI's aarch64 torch is a CUDA 13
# build requiring GBs of nvidia-* wheels), as deploy/worker-constraints.txt's markers pick, on the
# CUDA base's arm64 variant: see deploy/README.md, "Every image on both architectures".
# One worker image for GPU and CPU hosts: its device is DNNPROF_WORKER_DEVICE
# (cuda, cpu) or, unset, detected at start (a GPU passed in -> cuda, none -> cpu). A cuda worker
# that sees no GPU, or whose driver is older than torch's CUDA line, refuses to start and says why
# (see deploy/README.md).
# Weights are never downloaded at build time; mount a cache at /cache (DNNPROF_WEIGHTS_DIR).
# Behind a TLS-intercepting proxy, give pip its settings as a build secret (never kept in a layer):
#   docker build --secret id=pip.conf,src=$HOME/.config/pip/pip.conf --target worker .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The worker's base needs only the driver hook-up: PyPI's torch wheels bring their own CUDA
# runtime, cuBLAS and cuDNN (the nvidia-* wheels). Its CUDA line is torch's (deploy/
# worker-constraints.txt pins torch 2.14.1, whose wheels are CUDA 13.0): the base's
# NVIDIA_REQUIRE_CUDA makes the NVIDIA Container Toolkit refuse a driver too old for it at start.
# On arm64 (CPU torch, no CUDA runtime) the base is only Ubuntu 24.04 with Python 3.12.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-base-ubuntu24.04

FROM ${PYTHON_IMAGE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DNNPROF_HOST=0.0.0.0 DNNPROF_PORT=8000 DNNPROF_DATA_DIR=/data MPLCONFIGDIR=/tmp/matplotlib
# DL3008: tini is the base image's own distribution package; the pinned PYTHON_IMAGE tag is the pin.
# apt-get clean: apt's package caches (75 MB) stay in a base without docker-clean's apt hook.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dnnprof ./dnnprof
COPY service ./service
COPY workers ./workers
# The API's extra only (no torch). Then what it never serves: polyfactory (and the Faker it pulls,
# 25 MB), which Litestar imports only to invent OpenAPI examples (OpenAPIConfig(create_examples=
# True)), which dnnprof leaves off; and of the plotly package (61 MB) all but Plotly.js, the one
# file the report's /vendor route serves from it (service/controllers/report.py finds it without
# importing plotly), with narwhals, which only plotly's Python side imports; and of swagger-ui-py
# its Swagger Editor and source maps (service/docs.py serves Swagger UI's bundle, preset and CSS).
# DL3013: this installs the project itself (its [api] extra); the pinned PYTHON_IMAGE is the pin.
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf pip install --no-cache-dir ".[api]" \
    && pip uninstall --yes polyfactory faker narwhals \
    && plotly=$(python -c 'import importlib.util as u; print(u.find_spec("plotly").submodule_search_locations[0])') \
    && find "$plotly" -mindepth 1 -maxdepth 1 ! -name __init__.py ! -name package_data -exec rm -rf {} + \
    && find "$plotly/package_data" -mindepth 1 ! -name plotly.min.js -exec rm -rf {} + \
    && swagger=$(python -c 'import importlib.util as u; print(u.find_spec("swagger_ui").submodule_search_locations[0])') \
    && find "$swagger/static" \( -name 'swagger-editor*' -o -name '*.map' \) -delete \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin dnnprof \
    && mkdir -p /data && chown 10001:10001 /data
USER 10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# tini as PID 1: signals reach dnnprof, and exited children are reaped.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dnnprof", "api"]

FROM ${CUDA_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DNNPROF_HOST=0.0.0.0 DNNPROF_DATA_DIR=/data MPLCONFIGDIR=/tmp/matplotlib \
    DNNPROF_WEIGHTS_DIR=/cache TORCH_HOME=/cache DNNPROF_WORKER_METRICS_PORT=9808 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# gcc, g++ and python3-dev are torch.compile's: inductor builds its CPU kernels with the C++
# compiler, and Triton its GPU launcher with the C compiler, both against Python's headers
# (without them the worker does not advertise `compile`).
# DL3008: python3, tini and the compilers are the base image's own distribution packages; their
# versions move with the pinned CUDA_IMAGE tag, which is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ tini \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY deploy/worker-constraints.txt ./deploy/
COPY dnnprof ./dnnprof
COPY service ./service
COPY workers ./workers
# The runtimes extra (the ONNX exporter, ONNX Runtime, OpenVINO) is measured on the CPU: a cuda
# worker does not advertise those (workers/runtime_support.py), a cpu one does. No [api] extra: a
# worker serves no web page (no Litestar, Faker, matplotlib, Plotly).
# DL3013: this installs the project itself; torch's line (one per architecture) is pinned by the
# constraints file.
# hadolint ignore=DL3013
RUN --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    pip install --no-cache-dir -c deploy/worker-constraints.txt ".[worker,runtimes]" \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin dnnprof \
    && mkdir -p /cache /data && chown 10001:10001 /cache /data
USER 10001
VOLUME ["/cache", "/data"]
EXPOSE 9808
# The worker's main process serves its device metrics: answering means the worker is up (on the
# port it was given: DNNPROF_WORKER_METRICS_PORT).
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python3", "-c", "import os,urllib.request,sys; port = os.environ.get('DNNPROF_WORKER_METRICS_PORT') or '9808'; sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics', timeout=4).status != 200)"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["dnnprof", "worker"]
