#!/usr/bin/env bash
# The arm64 smoke check: the Jetson image, and the API and CPU worker images built for linux/arm64,
# on an x86-64 machine under qemu-user emulation, from an empty podman store, as a user runs them.
#
#   deploy/smoke-arm64.sh               # needs podman and qemu-user-static registered for arm64
#                                       # (here: ../shared/containers/setup-podman.sh); not part of CI
#   SMOKE_SKIP_ARM64_WORKER=1 deploy/smoke-arm64.sh   # without the arm64 CPU worker image (the slowest)
#   SMOKE_ARM64_WORKER_ONLY=1 deploy/smoke-arm64.sh   # steps 1, 2 (python, redis), 5 (Redis, API) and 9 only
#   SMOKE_KEEP_STORE=1 deploy/smoke-arm64.sh          # again on the last run's store (its images cached)
#
# Steps, each timed, each image's size printed (figures in var/smoke-arm64/results.md):
#  1. an empty podman store of its own (CONTAINERS_STORAGE_CONF: the machine's store is untouched)
#  2. stand-ins of the base images (../shared/containers/stand-ins.sh): the L4T PyTorch base (arm64),
#     python and redis (this machine's architecture)
#  3. the Jetson image (Dockerfile.l4t, --platform linux/arm64)
#  4. run as shipped (no CUDA here): exit 2 with its one-line reason; `dnnprof doctor` in it, bare
#     (not a Jetson, emulated) and on a recorded Jetson tree (module, power mode, rails)
#  5. Redis and the API image (this machine's architecture), up until the end; the Jetson image as a CPU worker
#     (DNNPROF_WORKER_DEVICE=cpu) through the API up to a measured profile (squeezenet1_1, batch
#     size 1, 2 runs, 1 repeat); its target names arm64 and qemu; its measuring process was forked
#     from the template (the emulator's thread not counted)
#  6. a native worker beside it (this checkout's .venv), one Redis: two targets, one profile each,
#     no dedupe across them, both in the comparison
#  7. deploy/compose.jetson.yml brought up with the stand-ins (podman-compose; an override gives
#     this machine's OCI runtime for `runtime: nvidia` and the recorded tree's files for the host's):
#     as shipped, exit 2 with its reason; with DNNPROF_WORKER_DEVICE=cpu, a measured profile
#  8. the API image built for linux/arm64 (an arm64 stand-in of its base), answering /healthz
#  9. the CPU worker image built for linux/arm64 (Dockerfile --target worker; an arm64 stand-in of
#     its CUDA base; deploy/worker-constraints.txt gives arm64 PyPI's CPU-only torch 2.10.0): its
#     size, `dnnprof doctor` in it, and run as shipped (no GPU: a CPU worker) against step 5's Redis
#     and API up to a measured profile; its target names aarch64 and qemu
# Every wait is on a state, with a ceiling. Emulated steps take minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
full() { [ -z "${SMOKE_ARM64_WORKER_ONLY:-}" ]; }  # the Jetson steps and the arm64 API too
ROOT=$PWD
SHARED=${DNNPROF_SHARED_DIR:-$ROOT/../shared}
OUT=$ROOT/var/smoke-arm64
mkdir -p "$OUT"
: > "$OUT/results.md"
t0=$(date +%s)
say() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }
record() { printf -- '- %s\n' "$*" | tee -a "$OUT/results.md"; }
fail() { say "FAILED: $*"; exit 1; }
since() { echo "$(( $(date +%s) - $1 )) s"; }
size() { podman image inspect "$1" --format '{{.Size}}' | numfmt --to=si --suffix=B; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
until_ok() {  # until_ok CEILING_S WHAT CMD...: wait on a state
  local ceiling=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + ceiling ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what not reached within ${ceiling} s"
    sleep 3
  done
}

command -v podman >/dev/null || fail "podman is not installed (here: $SHARED/containers/setup-podman.sh)"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || fail "arm64 emulation is not registered (qemu-user-static; here: setup-podman.sh)"
BUILD_FLAGS=(--format docker)  # podman drops HEALTHCHECK from OCI images
[ -f "$SHARED/containers/build-flags" ] && read -r -a BUILD_FLAGS < "$SHARED/containers/build-flags"
if [ ! -x var/smoke-venv/bin/podman-compose ]; then
  python3 -m venv var/smoke-venv
  var/smoke-venv/bin/python -m pip install --quiet "podman-compose>=1.1"
fi

say "1. an empty podman store of its own"
podman_store() { rm -rf "$OUT/storage" "$OUT/run"; mkdir -p "$OUT/storage" "$OUT/run"
  printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "%s"\n' "$OUT/storage" "$OUT/run" > "$OUT/storage.conf"; }
[ -n "${SMOKE_KEEP_STORE:-}" ] && [ -f "$OUT/storage.conf" ] || podman_store
export CONTAINERS_STORAGE_CONF=$OUT/storage.conf
[ -n "${SMOKE_KEEP_STORE:-}" ] || [ -z "$(podman images -q)" ] || fail "the store at $OUT/storage is not empty"
record "podman $(podman --version | awk '{print $3}'), $(qemu-aarch64-static --version | head -1), host $(uname -m), $(nproc) CPUs; store $OUT/storage ($([ -n "${SMOKE_KEEP_STORE:-}" ] && echo kept || echo empty))"

cleanup() {
  local code=$?
  [ -n "${native_pid:-}" ] && kill "$native_pid" 2>/dev/null && wait "$native_pid" 2>/dev/null
  for c in smoke-redis smoke-api smoke-jetson-cpu smoke-api-arm64 smoke-worker-arm64; do
    [ "$code" != 0 ] && podman logs "$c" > "$OUT/$c.log" 2>&1
    podman rm -f "$c" >/dev/null 2>&1
  done
  "${COMPOSE[@]}" down >/dev/null 2>&1 || true
  podman ps -aq --filter label=io.podman.compose.project=dnnprof-jetson-smoke | xargs -r podman rm -f >/dev/null 2>&1
  say "torn down (exit $code); the store stays in $OUT/storage (rm -rf it to free the space)"
}
COMPOSE=(var/smoke-venv/bin/podman-compose -p dnnprof-jetson-smoke -f deploy/compose.jetson.yml -f "$OUT/compose.smoke.yml")
trap cleanup EXIT

say "2. stand-ins of the base images"
l4t_image=$(sed -n 's/^ARG L4T_IMAGE=//p' Dockerfile.l4t)
python_image=$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
for pair in "l4t $l4t_image" "python $python_image" "redis redis:7.4-alpine"; do
  set -- $pair; start=$(date +%s)
  [ "$1" != l4t ] || full || continue
  if podman image exists "localhost/$2"; then record "stand-in $2: kept from the last run"; continue; fi
  "$SHARED/containers/stand-ins.sh" "$1" "$2" > "$OUT/stand-in-$1.log" 2>&1 || { tail "$OUT/stand-in-$1.log"; fail "stand-in $2"; }
  record "stand-in $2 ($1): $(since "$start"), $(size "localhost/$2"), $(podman image inspect "localhost/$2" --format '{{.Architecture}}')"
done

if full; then
say "3. the Jetson image (arm64, emulated build)"
start=$(date +%s)
podman build --platform linux/arm64 "${BUILD_FLAGS[@]}" -f Dockerfile.l4t -t dnnprof-worker-jetson . > "$OUT/build-jetson.log" 2>&1 \
  || { tail -30 "$OUT/build-jetson.log"; fail "building the Jetson image"; }
podman image exists dnnprof-worker-jetson || fail "building the Jetson image: no image"
record "image dnnprof-worker-jetson (linux/arm64): built in $(since "$start") from the stand-in, $(size dnnprof-worker-jetson)"

say "4. run as shipped: no CUDA here"
start=$(date +%s)
set +e; shipped=$(podman run --rm -e DNNPROF_REDIS_URL=redis://127.0.0.1:1/0 dnnprof-worker-jetson 2>&1); code=$?; set -e
[ "$code" = 2 ] || fail "the Jetson image as shipped exited $code, not 2: $shipped"
record "as shipped: exit $code in $(since "$start"): $(tail -1 <<< "$shipped")"
set +e; podman run --rm dnnprof-worker-jetson dnnprof doctor --json > "$OUT/doctor-bare.json" 2> "$OUT/doctor-bare.err"; code=$?; set -e
[ "$code" = 2 ] || fail "dnnprof doctor in the bare image exited $code"
record "dnnprof doctor, bare image: exit $code; $(json '"device class %s, jetson %s, cpu %s on %s emulated by %s, runtimes %s" % (d["device_class"], d["jetson"], d["cpu"]["model"], d["cpu"]["arch"], d["cpu"]["emulation"], ",".join(d["runtimes"]))' < "$OUT/doctor-bare.json")"
set +e; podman run --rm -v "$ROOT/tests/data/jetson_orin_nano:/jetson:ro" dnnprof-worker-jetson dnnprof doctor --json --root /jetson > "$OUT/doctor-orin.json"; code=$?; set -e
record "dnnprof doctor --root (tests/data/jetson_orin_nano mounted): exit $code; $(json '"module %s, power mode %s, rails %s, target %s, runtimes %s; %s" % (d["jetson"]["module"], d["jetson"]["power_mode"], ",".join(d["jetson"]["rails_w"]), d["target"], ",".join(d["runtimes"]), d["problems"][0][:60])' < "$OUT/doctor-orin.json")"
fi

say "5. Redis, the API, and the Jetson image as a CPU worker, up to a measured profile"
REDIS_PORT=$(free_port); API_PORT=$(free_port); METRICS_PORT=$(free_port)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
API=http://127.0.0.1:$API_PORT
start=$(date +%s)
podman build "${BUILD_FLAGS[@]}" --target api -t dnnprof-api . > "$OUT/build-api.log" 2>&1 || { tail -30 "$OUT/build-api.log"; fail "building the API image"; }
record "image dnnprof-api ($(uname -m)): built in $(since "$start"), $(size dnnprof-api)"
podman run -d --name smoke-redis --network host redis:7.4-alpine redis-server --port "$REDIS_PORT" --bind 127.0.0.1 >/dev/null
podman run -d --name smoke-api --network host -e DNNPROF_REDIS_URL="$REDIS_URL" -e DNNPROF_HOST=127.0.0.1 \
  -e DNNPROF_PORT="$API_PORT" dnnprof-api >/dev/null
until_ok 120 "the API answering" curl -fsS "$API/healthz"
emulated_target() { curl -fsS "$API/v1/devices" | json '[t["target"] for t in d if "qemu" in t["target"] and t.get("status") == "live"][0]'; }
submit() { curl -fsS -X POST "$API/v1/profiles" -H 'content-type: application/json' -d "$1" | json 'd["id"]'; }
status_of() { curl -fsS "$API/v1/profiles/$1" | json 'd["status"]'; }
ended() { case "$(status_of "$1")" in succeeded|failed|cancelled) return 0;; *) return 1;; esac; }
profile_line() {
  curl -fsS "$API/v1/profiles/$1" | json '"%s: %s, %.0f ms/image at bs 1; fingerprint cpu_arch %s, cpu_emulation %s, process_start %s, cpu %s, torch %s" % (d["status"], d["result"]["fingerprint"]["device_target"], d["result"]["batches"][0]["latency"]["median_ms"], d["result"]["fingerprint"].get("cpu_arch"), d["result"]["fingerprint"].get("cpu_emulation"), d["result"]["fingerprint"].get("process_start"), d["result"]["fingerprint"].get("cpu_model"), d["result"]["fingerprint"].get("torch_version"))'
}
REQUEST='"model": "squeezenet1_1", "batch_sizes": [1], "runs": 2, "repeats": 1'
if full; then
start=$(date +%s)
podman run -d --name smoke-jetson-cpu --network host -e DNNPROF_REDIS_URL="$REDIS_URL" -e DNNPROF_WORKER_DEVICE=cpu \
  -e DNNPROF_HOST=127.0.0.1 -e DNNPROF_WORKER_METRICS_PORT="$METRICS_PORT" dnnprof-worker-jetson >/dev/null
until_ok 600 "the emulated worker registered" emulated_target
target=$(emulated_target)
record "Jetson image as a CPU worker: registered in $(since "$start") as $target"
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -q dnnprof_worker_info || fail "the worker's /metrics"
podman healthcheck run smoke-jetson-cpu >/dev/null || fail "the Jetson image's HEALTHCHECK"
record "its /metrics answers, its HEALTHCHECK passes"
start=$(date +%s)
id=$(submit "{$REQUEST, \"device\": \"$target\"}")
until_ok 1800 "profile $id ended" ended "$id"
[ "$(status_of "$id")" = succeeded ] || fail "profile $id: $(curl -fsS "$API/v1/profiles/$id" | json 'd.get("error")')"
record "squeezenet1_1 bs 1, 2 runs, 1 repeat on the emulated worker: $(since "$start") request to result; $(profile_line "$id")"
emulated_id=$id

say "6. a native worker beside it, one Redis"
NATIVE_PY=${DNNPROF_SMOKE_PYTHON:-$ROOT/.venv/bin/python}
if [ -x "$NATIVE_PY" ]; then
  start=$(date +%s)
  DNNPROF_REDIS_URL=$REDIS_URL DNNPROF_DATA_DIR=$OUT/native-data DNNPROF_WORKER_METRICS_PORT=0 PYTHONPATH=$ROOT \
    "$NATIVE_PY" -m dnnprof.cli worker --device cpu > "$OUT/native-worker.log" 2>&1 &
  native_pid=$!
  native_target() { curl -fsS "$API/v1/devices" | json '[t["target"] for t in d if t["target"].startswith("cpu/") and "qemu" not in t["target"] and t.get("status") == "live"][0]'; }
  until_ok 300 "the native worker registered" native_target
  native=$(native_target)
  id=$(submit "{$REQUEST, \"device\": \"$native\"}")
  until_ok 600 "profile $id ended" ended "$id"
  [ "$(status_of "$id")" = succeeded ] || fail "native profile $id"
  record "native worker: $(profile_line "$id")"
  again=$(curl -fsS -X POST "$API/v1/profiles" -H 'content-type: application/json' -d "{$REQUEST, \"device\": \"$target\"}" | json 'd["id"]')
  [ "$again" = "$emulated_id" ] && [ "$again" != "$id" ] || fail "dedupe crossed the targets ($again)"
  pair=$(curl -fsS "$API/v1/analysis/compare?a=$native&b=$target" | json 'json.dumps(d[0]) if d else "none"')
  groups=$(curl -fsS "$API/v1/analysis/table1?device=cpu" | python3 -c "import sys; t=sys.stdin.read(); print(sum(x in t for x in ('$native', '$target')))")
  record "two targets against one Redis: $native and $target; the same request on each is its own profile (dedupe per target); table1 (device=cpu) names both: $groups of 2; compare a=native b=emulated: $pair"
  kill "$native_pid"; wait "$native_pid" 2>/dev/null || true; native_pid=
else
  record "native worker: skipped (no $NATIVE_PY; set DNNPROF_SMOKE_PYTHON)"
fi
podman rm -f smoke-jetson-cpu >/dev/null

say "7. deploy/compose.jetson.yml with the stand-ins"
runtime=$(podman info --format '{{.Host.OCIRuntime.Name}}')
cat > "$OUT/compose.smoke.yml" <<YAML
# Here: no NVIDIA runtime (this machine's OCI runtime instead), no Jetson (its files from a recorded tree).
services:
  worker-jetson:
    runtime: $runtime
    environment:
      DNNPROF_WORKER_METRICS_PORT: "$METRICS_PORT"
      DNNPROF_HOST: 127.0.0.1
    volumes:
      - $ROOT/tests/data/jetson_orin_nano/etc/nv_tegra_release:/etc/nv_tegra_release:ro
      - $ROOT/tests/data/jetson_orin_nano/etc/nvpmodel.conf:/etc/nvpmodel.conf:ro
      - $ROOT/tests/data/jetson_orin_nano/var/lib/nvpmodel/status:/var/lib/nvpmodel/status:ro
YAML
export DNNPROF_REDIS_URL=$REDIS_URL
start=$(date +%s); since=$(date --iso-8601=seconds)
"${COMPOSE[@]}" up -d --no-build > "$OUT/compose-up.log" 2>&1 || { cat "$OUT/compose-up.log"; fail "compose up"; }
container=$(podman ps -a --filter label=io.podman.compose.project=dnnprof-jetson-smoke --format '{{.Names}}' | head -1)
# restart: unless-stopped starts it again at once (its State then says 0): its exits are podman's events.
exited_2() { podman events --since "$since" --stream=false --filter event=died --filter "container=$container" \
  --format '{{.ContainerExitCode}}' 2>/dev/null | grep -qx 2; }
until_ok 300 "the compose worker exiting 2" exited_2
record "compose.jetson.yml as shipped: $container exited 2 in $(since "$start") (restart: unless-stopped restarts it): $(podman logs "$container" 2>&1 | grep 'dnnprof worker:' | tail -1)"
"${COMPOSE[@]}" down > /dev/null 2>&1
start=$(date +%s)
printf 'services:\n  worker-jetson:\n    environment:\n      DNNPROF_WORKER_DEVICE: cpu\n' > "$OUT/compose.cpu.yml"
"${COMPOSE[@]}" -f "$OUT/compose.cpu.yml" up -d --no-build > "$OUT/compose-up-cpu.log" 2>&1 || { cat "$OUT/compose-up-cpu.log"; fail "compose up (cpu)"; }
until_ok 600 "the compose worker registered" emulated_target
id=$(submit "{$REQUEST, \"device\": \"$target\", \"force\": true}")
until_ok 1800 "profile $id ended" ended "$id"
[ "$(status_of "$id")" = succeeded ] || fail "compose profile $id"
record "compose.jetson.yml with DNNPROF_WORKER_DEVICE=cpu: up to a measured profile in $(since "$start"); $(profile_line "$id")"
"${COMPOSE[@]}" -f "$OUT/compose.cpu.yml" down > /dev/null 2>&1
fi

arm64_base() {  # arm64_base TAG SUITE PACKAGES: an arm64 stand-in (stand-ins.sh builds this machine's architecture only)
  local work; work=$(mktemp -d)
  debootstrap --arch=arm64 --variant=minbase --include="ca-certificates${3:+,$3}" "$2" "$work/root" http://deb.debian.org/debian > "$work/log" 2>&1 \
    || { tail "$work/log"; rm -rf "$work"; fail "debootstrap $2 arm64"; }
  rm -f "$work"/root/usr/lib/python3*/EXTERNALLY-MANAGED; rm -rf "$work/root/var/lib/apt/lists/"*
  [ -e "$work/root/usr/bin/python3" ] && ln -sf python3 "$work/root/usr/bin/python" && ln -sf pip3 "$work/root/usr/bin/pip"
  tar -C "$work/root" -c . | podman import --arch arm64 --change 'ENV LANG=C.UTF-8' - "localhost/$1" >/dev/null
  rm -rf "$work"
}
if full; then
say "8. the API image for linux/arm64"
start=$(date +%s)
podman image exists localhost/python-arm64:3.11-slim-bookworm \
  || arm64_base python-arm64:3.11-slim-bookworm bookworm python3,python3-venv,python3-pip
record "arm64 stand-in of $python_image: $(since "$start"), $(size localhost/python-arm64:3.11-slim-bookworm)"
start=$(date +%s)
podman build --platform linux/arm64 "${BUILD_FLAGS[@]}" --build-arg PYTHON_IMAGE=localhost/python-arm64:3.11-slim-bookworm \
  --target api -t dnnprof-api-arm64 . > "$OUT/build-api-arm64.log" 2>&1 || { tail -30 "$OUT/build-api-arm64.log"; fail "building the arm64 API"; }
record "image dnnprof-api (linux/arm64): built in $(since "$start"), $(size dnnprof-api-arm64)"
ARM64_API=http://127.0.0.1:$(free_port)  # step 5's API still serves step 9
podman run -d --name smoke-api-arm64 --network host -e DNNPROF_REDIS_URL="redis://127.0.0.1:1/0" -e DNNPROF_HOST=127.0.0.1 \
  -e DNNPROF_PORT="${ARM64_API##*:}" dnnprof-api-arm64 >/dev/null
start=$(date +%s)
until_ok 600 "the arm64 API answering" curl -fsS "$ARM64_API/healthz"
record "the arm64 API (emulated) answered /healthz $(since "$start") after start; $(curl -fsS -o /dev/null -w 'GET /vendor/plotly.min.js: %{http_code}, %{size_download} bytes' "$ARM64_API/vendor/plotly.min.js")"
podman rm -f smoke-api-arm64 >/dev/null
fi

if [ -z "${SMOKE_SKIP_ARM64_WORKER:-}" ]; then
  say "9. the CPU worker image for linux/arm64, as a CPU worker up to a measured profile"
  cuda_image=$(sed -n 's/^ARG CUDA_IMAGE=//p' Dockerfile)
  start=$(date +%s)
  podman image exists localhost/cuda-arm64:stand-in || arm64_base cuda-arm64:stand-in trixie ""
  record "arm64 stand-in of $cuda_image (bare Debian trixie, no CUDA): $(since "$start")"
  start=$(date +%s)
  podman build --platform linux/arm64 "${BUILD_FLAGS[@]}" --build-arg CUDA_IMAGE=localhost/cuda-arm64:stand-in \
    --target worker -t dnnprof-worker-arm64 . > "$OUT/build-worker-arm64.log" 2>&1 \
    || { tail -30 "$OUT/build-worker-arm64.log"; fail "building the arm64 CPU worker"; }
  podman image exists dnnprof-worker-arm64 || fail "building the arm64 CPU worker: no image (the build was stopped)"
  record "image dnnprof-worker (linux/arm64, CPU): built in $(since "$start"), $(size dnnprof-worker-arm64)"
  set +e; podman run --rm dnnprof-worker-arm64 dnnprof doctor --json > "$OUT/doctor-worker-arm64.json"; set -e
  record "dnnprof doctor in it: $(json '"device class %s (%s), target %s, torch %s (cuda %s), runtimes %s" % (d["device_class"], d.get("device_class_from"), d["target"], d["torch"]["torch"], d["torch"].get("cuda"), ",".join(d["runtimes"]))' < "$OUT/doctor-worker-arm64.json")"
  # As shipped (DNNPROF_WORKER_DEVICE unset): no GPU here, so it detects a CPU worker. Its target is
  # the Jetson image's CPU one (same CPU, arch, emulation, threads): "force" measures it anew.
  WORKER_METRICS_PORT=$(free_port)
  start=$(date +%s)
  podman run -d --name smoke-worker-arm64 --network host -e DNNPROF_REDIS_URL="$REDIS_URL" -e DNNPROF_HOST=127.0.0.1 \
    -e DNNPROF_WORKER_METRICS_PORT="$WORKER_METRICS_PORT" dnnprof-worker-arm64 >/dev/null
  worker_up() { curl -fsS "http://127.0.0.1:$WORKER_METRICS_PORT/metrics" | grep -q dnnprof_worker_info && emulated_target; }
  until_ok 900 "the arm64 CPU worker registered" worker_up
  target=$(emulated_target)
  podman healthcheck run smoke-worker-arm64 >/dev/null || fail "the arm64 worker image's HEALTHCHECK"
  record "arm64 CPU worker image, run as shipped: registered in $(since "$start") as $target; its /metrics answers, its HEALTHCHECK passes"
  start=$(date +%s)
  id=$(submit "{$REQUEST, \"device\": \"$target\", \"force\": true}")
  until_ok 1800 "profile $id ended" ended "$id"
  [ "$(status_of "$id")" = succeeded ] || fail "arm64 worker profile $id: $(curl -fsS "$API/v1/profiles/$id" | json 'd.get("error")')"
  record "squeezenet1_1 bs 1, 2 runs, 1 repeat on the arm64 CPU worker image: $(since "$start") request to result; $(profile_line "$id")"
  podman rm -f smoke-worker-arm64 >/dev/null
fi
podman rm -f smoke-api smoke-redis >/dev/null
record "whole arm64 smoke check: $(since "$t0")"
say "passed"
