# dnnprof images, CUDA flavour. Two targets:
#   docker build --target api    -t dnnprof-api .     # the API: no torch, small
#   docker build --target worker -t dnnprof-worker .  # a CUDA worker: torch, torchvision, timm
# Weights are never downloaded at build time; mount a cache at /cache (DNNPROF_WEIGHTS_DIR).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The worker's base needs only the driver hook-up: PyPI's torch wheels bring their own CUDA
# runtime, cuBLAS and cuDNN (the nvidia-* wheels), so a cudnn-runtime base would carry them twice.
ARG CUDA_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04

FROM ${PYTHON_IMAGE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DNNPROF_HOST=0.0.0.0 DNNPROF_PORT=8000
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dnnprof ./dnnprof
COPY service ./service
COPY workers ./workers
RUN pip install --no-cache-dir . \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin dnnprof
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["dnnprof", "api"]

FROM ${CUDA_IMAGE} AS worker
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    DNNPROF_WORKER_DEVICE=cuda DNNPROF_WEIGHTS_DIR=/cache TORCH_HOME=/cache DNNPROF_WORKER_METRICS_PORT=9808 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# DL3008: python3 is the base image's own distribution package; its version moves with the
# pinned CUDA_IMAGE tag, which is the pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /app
COPY pyproject.toml README.md ./
COPY dnnprof ./dnnprof
COPY service ./service
COPY workers ./workers
# DL3013: this installs the project itself; its dependencies are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[worker]" \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin dnnprof \
    && mkdir -p /cache && chown 10001 /cache
USER 10001
VOLUME ["/cache"]
EXPOSE 9808
# The worker's main process serves its device metrics: answering means the worker is up.
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9808/metrics', timeout=4).status != 200)"]
CMD ["dnnprof", "worker", "--device", "cuda"]
