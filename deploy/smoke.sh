#!/usr/bin/env bash
# The container smoke check: the images built and the compose stack run under a real container
# runtime (podman + podman-compose), as a user deploys them, with a CPU worker (compose.cpu.yml).
#
#   deploy/smoke.sh            # from the checkout; needs podman (../shared/containers/setup-podman.sh here)
#
# Builds the API and worker images; starts redis, api, worker and prometheus from deploy/compose.yml
# + deploy/compose.cpu.yml (Grafana is left out where no image of it can be had: no registry and no
# Debian package here); waits on /readyz; profiles a small model across containers; reads both
# /metrics endpoints through Prometheus's targets; runs every HEALTHCHECK; kills the worker's
# container from outside mid-job and requires the job requeued and finished after the restart
# policy brings the worker back; tears everything down. Every wait is on a state, with a ceiling.
# Figures (build times, image sizes, time to ready, the profile) go to var/smoke/results.md.
# Base images missing locally are stood in by ../shared/containers/stand-ins.sh where it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SHARED=${DNNPROF_SHARED_DIR:-$ROOT/../shared}
OUT=$ROOT/var/smoke
PROJECT=dnnprof-smoke
API=http://127.0.0.1:8000
PROM=http://127.0.0.1:9090
mkdir -p "$OUT"
: > "$OUT/results.md"
t0=$(date +%s)
say() { printf '[%s +%4ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - t0 ))" "$*"; }
record() { printf -- '- %s\n' "$*" | tee -a "$OUT/results.md"; }
fail() { say "FAILED: $*"; exit 1; }

command -v podman >/dev/null || fail "podman is not installed (here: $SHARED/containers/setup-podman.sh)"
if [ ! -x var/smoke-venv/bin/podman-compose ]; then
  python3 -m venv var/smoke-venv
  var/smoke-venv/bin/python -m pip install --quiet "podman-compose>=1.1"
fi
COMPOSE=(var/smoke-venv/bin/podman-compose -p "$PROJECT" -f deploy/compose.yml -f deploy/compose.cpu.yml)
BUILD_FLAGS=(--format docker)  # podman drops HEALTHCHECK from OCI images
[ -f "$SHARED/containers/build-flags" ] && read -r -a BUILD_FLAGS < "$SHARED/containers/build-flags"

# jq-free JSON reads: python3 is there wherever podman-compose is.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
until_ok() {  # until_ok CEILING_S WHAT CMD...: wait on a state
  local ceiling=$1 what=$2; shift 2
  local deadline=$(( $(date +%s) + ceiling ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what not reached within ${ceiling} s"
    sleep 2
  done
}

teardown() {
  local code=$?
  if [ "$code" != 0 ]; then
    say "logs of the failed run in $OUT/"
    for c in api worker-cuda redis prometheus; do
      podman logs "${PROJECT}_${c}_1" > "$OUT/$c.log" 2>&1 || true
    done
  fi
  "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
  say "torn down (exit $code)"
}
trap teardown EXIT

say "base images"
stand_in() {  # stand_in KIND NAME
  podman image exists "$2" || podman image exists "localhost/$2" && return 0
  [ -x "$SHARED/containers/stand-ins.sh" ] || fail "no image $2 and no stand-ins.sh to build one"
  "$SHARED/containers/stand-ins.sh" "$1" "$2"
}
cuda_image=$(sed -n 's/^ARG CUDA_IMAGE=//p' Dockerfile)
stand_in python "$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)"
stand_in os "$cuda_image"
stand_in redis redis:7.4-alpine
stand_in prometheus prom/prometheus:v3.1.0

for target in api worker; do
  say "building dnnprof-$target"
  start=$(date +%s)
  podman build "${BUILD_FLAGS[@]}" --target "$target" -t "dnnprof-$target" . > "$OUT/build-$target.log" 2>&1 \
    || { tail -30 "$OUT/build-$target.log"; fail "building dnnprof-$target"; }
  size=$(podman image inspect "dnnprof-$target" --format '{{.Size}}' | numfmt --to=iec)
  record "image dnnprof-$target: built in $(( $(date +%s) - start )) s (with this machine's layer cache), $size"
done

say "compose up (redis api worker-cuda prometheus; worker as cpu)"
"${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
up=$(date +%s)
"${COMPOSE[@]}" up -d --no-build redis api worker-cuda prometheus > "$OUT/compose-up.log" 2>&1 \
  || { cat "$OUT/compose-up.log"; fail "compose up"; }
ready() { curl -fsS "$API/readyz" | json 'd["ready"]' | grep -q True; }
until_ok 900 "/readyz ready (a live worker)" ready
record "time to ready (compose up to /readyz 200, worker live): $(( $(date +%s) - up )) s"

say "a profile across containers"
submit() {
  curl -fsS -X POST "$API/v1/profiles" -H 'content-type: application/json' -d "$1" | json 'd["id"]'
}
status_of() { curl -fsS "$API/v1/profiles/$1" | json 'd["status"]'; }
is_status() { [ "$(status_of "$1")" = "$2" ]; }
ended() { case "$(status_of "$1")" in succeeded|failed|cancelled) return 0;; *) return 1;; esac; }
id=$(submit '{"model": "squeezenet1_1", "batch_sizes": [1, 2], "runs": 5, "repeats": 1}')
until_ok 900 "profile $id ended" ended "$id"
is_status "$id" succeeded || fail "profile $id: $(curl -fsS "$API/v1/profiles/$id" | json 'd["error"]')"
curl -fsS "$API/v1/profiles/$id" > "$OUT/profile.json"
summary=$(python3 - "$OUT/profile.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
cells = "; ".join(f"bs {b['batch_size']}: {b['latency']['median_ms']:.1f} ms/image" for b in d["result"]["batches"])
start = f"processes {d['result']['fingerprint'].get('process_start')}, start {d['result']['phases'].get('start')} s"
print(f"{cells} (params {d['result']['params']:,}, target {d['settings']['target']}; {start})")
PY
)
record "profile squeezenet1_1 $id succeeded in the worker container: $summary"
curl -fsS -o /dev/null "$API/v1/figures/density.png?device=cpu" || fail "a figure (matplotlib in the API image)"

say "the runtimes beside eager, in the worker image"
target=$(json 'd["settings"]["target"]' < "$OUT/profile.json")
offered=$(curl -fsS "$API/v1/devices" | json '",".join(sorted(next(t for t in d if t["target"] == "'"$target"'")["runtimes"]))')
[ "$offered" = "compile,eager,onnxruntime,openvino" ] || fail "the worker offers runtimes '$offered'"
for runtime in onnxruntime openvino compile; do
  rid=$(submit '{"model": "squeezenet1_1", "batch_sizes": [1], "runs": 5, "repeats": 1, "runtime": "'"$runtime"'"}')
  until_ok 900 "profile $rid ($runtime) ended" ended "$rid"
  is_status "$rid" succeeded || fail "profile $rid ($runtime): $(curl -fsS "$API/v1/profiles/$rid" | json 'd["error"]')"
  line=$(curl -fsS "$API/v1/profiles/$rid" | json '"%s %s: %.2f ms/image, preparation %.1f s, outputs match %s" % (d["result"]["runtime"]["name"], d["result"]["runtime"]["version"], d["result"]["batches"][0]["latency"]["median_ms"], d["result"]["runtime"].get("prepare_s", 0.0), (d["result"]["runtime"].get("outputs") or {}).get("outputs_match"))')
  record "squeezenet1_1 bs 1 in $line"
done

say "Prometheus scrapes both /metrics"
targets_up() {
  curl -fsS "$PROM/api/v1/targets" | json '",".join(sorted(t["labels"]["job"] for t in d["data"]["activeTargets"] if t["health"] == "up"))' \
    | grep -qx 'dnnprof-api,dnnprof-workers'
}
until_ok 300 "both Prometheus targets up" targets_up
record "Prometheus targets up: dnnprof-api (api:8000), dnnprof-workers (worker-cuda:9808)"

say "healthchecks"
for c in api worker-cuda redis; do
  podman healthcheck run "${PROJECT}_${c}_1" > /dev/null || fail "HEALTHCHECK of $c"
done
record "HEALTHCHECK passes: api, worker-cuda, redis"
if podman logs "${PROJECT}_api_1" 2>&1 | grep -q "mkdir -p failed"; then fail "the API has no writable matplotlib dir"; fi

say "the worker killed mid-job: requeued and finished"
id=$(submit '{"model": "resnet18", "batch_sizes": [1, 2, 4], "runs": 30, "repeats": 1}')
until_ok 600 "profile $id running" is_status "$id" running
worker=${PROJECT}_worker-cuda_1
before=$(podman inspect "$worker" --format '{{.State.StartedAt}}')
kill -9 "$(podman inspect "$worker" --format '{{.State.Pid}}')"  # a crash, not a stop: restart policy applies
say "worker container killed; waiting for its restart"
restarted() { [ "$(podman inspect "$worker" --format '{{.State.Running}} {{.State.StartedAt}}')" != "true $before" ] \
  && [ "$(podman inspect "$worker" --format '{{.State.Running}}')" = true ]; }
until_ok 120 "the worker container restarted by its restart policy" restarted
until_ok 1200 "profile $id ended" ended "$id"
is_status "$id" succeeded || fail "profile $id after the kill: $(curl -fsS "$API/v1/profiles/$id" | json 'd["error"]')"
attempts=$(curl -fsS "$API/v1/profiles/$id" | json 'd["attempts"]')
[ "$attempts" -ge 2 ] || fail "profile $id finished without a second attempt ($attempts)"
record "worker container killed (SIGKILL of its PID 1 from the host) mid-job: restarted, the job requeued and succeeded on attempt $attempts"
record "whole smoke check: $(( $(date +%s) - t0 )) s"
say "passed"
