#!/usr/bin/env bash
# Builds deploy/Dockerfile in a real Docker engine and drives the image (`make image-test`;
# about 10 minutes on 2 cores, so not part of `make test`).
#
#   deploy/image-test.sh
#
# - The engine: the one `docker info` reaches; else (as root) a dockerd of its own, with its data
#   in a temporary folder and no host networking of its own (--bridge=none: containers and builds
#   use --network host), stopped by its pid at the end.
# - The base: BASE (default python:3.11-slim-bookworm); where it cannot be pulled (no Docker Hub),
#   local/python:3.11-bookworm made here with debootstrap, which apt and pip inside can use (this
#   host's apt sources and the CA certificates it adds). It is the test's base only.
# - The compose files, as `docker compose config` (or v1's docker-compose) reads them.
# - The checks, the container on a free port with the host's network: chat, completions,
#   streaming, embeddings, /metrics, /ui, the image's health check, uid and gid 10001, the
#   Redis heartbeat (when Redis answers on 127.0.0.1:6379), and a `docker stop` during a stream
#   longer than the drain: the stream ends with an error event, the container exits 0.
#   Then the image's size: it fails over MAX_MB.
#
# Environment: IMAGE (llm-gateway:image-test), BASE, BUILD_ARGS (more `docker build` arguments),
# MAX_MB (750), DOCKER (the client; Debian's /usr/bin/docker builds with BuildKit), REDIS_DB (14).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-llm-gateway:image-test}
BASE=${BASE:-python:3.11-slim-bookworm}
LOCAL_BASE=local/python:3.11-bookworm
MAX_MB=${MAX_MB:-750}
REDIS_DB=${REDIS_DB:-14}
DRAIN=5   # the test config's server.drain_timeout: the long stream outlasts it
GRACE=30  # docker stop's: past the drain, the cut, uvicorn's shutdown and the workers' stop
DOCKER=${DOCKER:-$(command -v /usr/bin/docker || command -v docker || true)}
export DOCKER_BUILDKIT=1

work=$(mktemp -d "${TMPDIR:-/tmp}/llm-gateway-image-test.XXXXXX")
chmod 755 "$work"  # the container's user reads its config from here
container="" dockerd_pid="" redis="" key="sk-image-test-$RANDOM$RANDOM$RANDOM$RANDOM"
summary=()

say() { printf '%s image-test: %s\n' "$(date +%H:%M:%S)" "$*"; }
pass() { say "PASS $*"; summary+=("$*"); }
fail() { say "FAIL $*"; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: $2"; }

cleanup() {
  local status=$?
  if [[ -n "$container" ]]; then
    if [[ $status != 0 ]]; then "$DOCKER" logs --tail 40 "$container" 2>&1 | sed 's/^/  | /'; fi
    "$DOCKER" rm -f "$container" >/dev/null 2>&1 || true
  fi
  if [[ -n "$redis" ]]; then redis-cli -n "$REDIS_DB" flushdb >/dev/null || true; fi
  if [[ -n "$dockerd_pid" ]]; then
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
  fi
  if [[ -n "$dockerd_pid" ]] && kill -0 "$dockerd_pid" 2>/dev/null; then
    say "dockerd ($dockerd_pid) still runs: its data stays in $work"
  else
    # What dockerd leaves mounted there (its network namespace), innermost first.
    awk -v dir="$work/" 'index($2, dir) == 1 {print $2}' /proc/mounts | sort -r \
      | xargs -r umount 2>/dev/null || true
    rm -rf "$work" 2>/dev/null || say "could not remove $work"
  fi
  exit "$status"
}
trap cleanup EXIT

start_engine() {
  [[ -n "$DOCKER" ]] || fail "no docker client: apt-get install docker.io"
  if "$DOCKER" info >/dev/null 2>&1; then
    say "using the running Docker engine $("$DOCKER" info -f '{{.ServerVersion}}')"
    return
  fi
  [[ $(id -u) == 0 ]] || fail "no Docker engine answers, and starting one needs root"
  need dockerd "apt-get install docker.io"
  export DOCKER_HOST=unix://$work/docker.sock
  dockerd --iptables=false --ip6tables=false --bridge=none --data-root "$work/docker" \
    --exec-root "$work/exec" --pidfile "$work/dockerd.pid" -H "$DOCKER_HOST" \
    >"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
  "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log"; fail "dockerd did not start"; }
  say "started dockerd $("$DOCKER" info -f '{{.ServerVersion}}') (pid $dockerd_pid, data in $work)"
}

pick_base() {
  if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 \
     || timeout 300 "$DOCKER" pull -q "$BASE" >/dev/null 2>&1; then
    return
  fi
  say "$BASE cannot be pulled: the base is $LOCAL_BASE, made here"
  BASE=$LOCAL_BASE
  "$DOCKER" image inspect "$BASE" >/dev/null 2>&1 || make_local_base
}

# Debian bookworm with its python3 (3.11), and what apt and pip need to work inside on this host.
make_local_base() {
  [[ $(id -u) == 0 ]] || fail "making $LOCAL_BASE needs root (debootstrap, chroot)"
  need debootstrap "apt-get install debootstrap"
  local root=$work/rootfs start=$SECONDS mirror
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null \
           || true)
  debootstrap --variant=minbase bookworm "$root" "${mirror:-http://deb.debian.org/debian}" \
    >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log"; fail "debootstrap"; }
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/"
    rm -f "$root/etc/apt/sources.list"
  fi
  cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
  host_certificates "$root/usr/local/share/ca-certificates"
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  # As Debian's own images (python:*-slim's base): apt keeps no package caches in a layer.
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' \
    >"$root/etc/apt/apt.conf.d/docker-clean"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  { chroot "$root" apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q \
         --no-install-recommends python3 python3-venv ca-certificates \
    && chroot "$root" apt-get clean; } >>"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; fail "apt-get in the base image"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root/etc/resolv.conf"
  tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$LOCAL_BASE" >/dev/null
  rm -rf "$root"
  pass "base image $LOCAL_BASE made with debootstrap ($((SECONDS - start)) s)"
}

# The CA certificates this host adds to its bundle (a proxy's, a mirror's): those of
# /etc/ssl/certs/ca-certificates.crt that are not Mozilla's, one file each.
host_certificates() {
  mkdir -p "$1"
  python3 - "$1" <<'EOF'
import pathlib, re, sys

pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
def certs(path): return pem.findall(pathlib.Path(path).read_text(errors="replace"))
mozilla = {"".join(c.split()) for p in pathlib.Path("/usr/share/ca-certificates/mozilla").glob("*.crt")
           for c in certs(p)}
bundle = pathlib.Path("/etc/ssl/certs/ca-certificates.crt")
added = [c for c in (certs(bundle) if bundle.exists() else []) if "".join(c.split()) not in mozilla]
for i, cert in enumerate(added):
    (pathlib.Path(sys.argv[1]) / f"host-{i}.crt").write_text(cert + "\n")
EOF
}

# Both compose files as compose itself reads them (v2's `docker compose`, else v1's docker-compose).
check_compose() {
  local compose=() gpu
  if "$DOCKER" compose version >/dev/null 2>&1; then
    compose=("$DOCKER" compose)
  else
    need docker-compose "apt-get install docker-compose (or Docker's compose plugin)"
    compose=(docker-compose)
  fi
  if env -u GATEWAY_API_KEY "${compose[@]}" -f docker-compose.yml config >/dev/null 2>&1; then
    fail "compose accepts docker-compose.yml without GATEWAY_API_KEY"
  fi
  GATEWAY_API_KEY=$key "${compose[@]}" -f docker-compose.yml config >/dev/null \
    || fail "${compose[*]} config: docker-compose.yml"
  gpu=$(GATEWAY_API_KEY=$key "${compose[@]}" -f docker-compose.yml \
          -f deploy/docker-compose.gpu.yml config) || fail "${compose[*]} config: the GPU override"
  grep -q "driver: nvidia" <<<"$gpu" && grep -q "GGML_CUDA=on" <<<"$gpu" \
    || fail "the GPU override reserves no GPU or builds without CUDA"
  pass "${compose[*]} config: docker-compose.yml, and with deploy/docker-compose.gpu.yml"
}

build_image() {
  local start=$SECONDS args log=${TMPDIR:-/tmp}/llm-gateway-image-build.log
  read -ra args <<<"${BUILD_ARGS:-}"
  say "building $IMAGE FROM $BASE (llama.cpp compiles: about 8 minutes on 2 cores; log: $log)"
  "$DOCKER" build --network host -f deploy/Dockerfile --build-arg BASE="$BASE" "${args[@]}" \
    -t "$IMAGE" . >"$log" 2>&1 || { tail -40 "$log"; fail "the image build (log: $log)"; }
  pass "image built ($((SECONDS - start)) s)"
}

check_size() {
  local bytes mb
  bytes=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
  mb=$((bytes / 1000000))
  ((mb <= MAX_MB)) || fail "image size: $mb MB, over $MAX_MB MB"
  pass "image size $mb MB (at most $MAX_MB MB)"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The container's own config, on a free port, with a short drain and (if it answers) this host's
# Redis, on a database of the test's own.
write_config() {
  local redis_url="redis://127.0.0.1:6379/$REDIS_DB"
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    redis=yes
    redis-cli -n "$REDIS_DB" flushdb >/dev/null
  fi
  sed -e "s/^  port: 8000$/  port: $port/" -e "s/^  drain_timeout: 30$/  drain_timeout: $DRAIN/" \
      -e "s|url: redis://redis:6379/0|url: $redis_url|" deploy/config.docker.yaml >"$work/config.yaml"
  if [[ -z "$redis" ]]; then sed -i '/^redis:/,/^$/d' "$work/config.yaml"; fi
  grep -q "^  port: $port$" "$work/config.yaml" && grep -q "drain_timeout: $DRAIN$" "$work/config.yaml" \
    || fail "deploy/config.docker.yaml has no 'port: 8000' or 'drain_timeout: 30' line to change"
  chmod 644 "$work/config.yaml"
}

start_container() {
  port=$(free_port)
  write_config
  container=llm-gateway-image-test-$$
  "$DOCKER" run -d --name "$container" --network host --init --health-interval 2s \
    -e GATEWAY_API_KEY="$key" -v "$work/config.yaml:/app/config.yaml:ro" "$IMAGE" >/dev/null
  local start=$SECONDS
  until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do
    ((SECONDS - start < 180)) || fail "/ready did not answer 200 within 180 s"
    [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$container") == true ]] || fail "it exited"
    sleep 1
  done
  pass "ready on port $port in $((SECONDS - start)) s"
}

api() {  # api PATH JSON: the answer's body; fails on a status >= 400
  curl -sSf -N --max-time 120 -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    -d "$2" "http://127.0.0.1:$port$1"
}

expect() {  # expect NAME TEXT NEEDLE... (JSON's `"key": value` read as `"key":value`)
  local name=$1 text
  text=$(sed 's/": /":/g' <<<"$2")
  shift 2
  for needle in "$@"; do
    grep -qF -- "$needle" <<<"$text" || fail "$name: no '$needle' in: ${text:0:300}"
  done
  pass "$name"
}

check_api() {
  expect "chat" "$(api /v1/chat/completions \
    '{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}')" \
    '"object":"chat.completion"' '"finish_reason"'
  expect "completions (gemma3-270m)" "$(api /v1/completions \
    '{"model": "gemma3-270m", "prompt": "The sky is", "max_tokens": 8}')" \
    '"object":"text_completion"' '"finish_reason"'
  expect "streaming" "$(api /v1/chat/completions '{"model": "smollm2", "stream": true,
    "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}')" \
    '"chat.completion.chunk"' 'data: [DONE]'
  expect "embeddings" "$(api /v1/embeddings '{"model": "smollm2-embed", "input": "hello"}')" \
    '"embedding"'
  expect "/metrics" "$(curl -sSf "http://127.0.0.1:$port/metrics")" 'llm_gateway_requests_total'
  expect "/ui" "$(curl -sSf "http://127.0.0.1:$port/ui")" '<html'
}

check_container() {
  "$DOCKER" exec "$container" /opt/venv/bin/llm-gateway health --config /app/config.yaml \
    || fail "llm-gateway health in the container"
  local start=$SECONDS
  until [[ $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$container") == healthy ]]; do
    ((SECONDS - start < 60)) || fail "the image's HEALTHCHECK did not pass within 60 s"
    sleep 1
  done
  pass "health check: llm-gateway health, and the image's HEALTHCHECK (healthy)"
  expect "user" "$("$DOCKER" exec "$container" id)" "uid=10001(llm) gid=10001(llm)"
  local uids
  uids=$("$DOCKER" top "$container" -eo pid,uid,gid | awk 'NR > 1 {print $2, $3}' | sort -u | xargs)
  [[ $uids == "10001 10001" ]] || fail "processes not all uid/gid 10001: $uids"
  pass "every process (gateway, workers, init) runs as 10001:10001"
  if [[ -n "$redis" ]]; then
    [[ -n $(redis-cli -n "$REDIS_DB" --scan --pattern 'llmgw:gateway:*') ]] \
      || fail "no heartbeat key in Redis"
    pass "Redis heartbeat key written"
  fi
}

# `docker stop` while a stream is longer than the drain: the drain cuts it with an error event
# (no silent cut), the workers stop, the process exits 0 before docker's SIGKILL.
check_stop() {
  local stream=$work/stream.txt start took code
  : >"$stream"
  api /v1/chat/completions '{"model": "smollm2", "stream": true, "ignore_eos": true,
    "max_tokens": 1800, "messages": [{"role": "user", "content": "Tell a long story."}]}' \
    >"$stream" 2>"$work/stream.err" &
  local client=$!
  until grep -q chat.completion.chunk "$stream"; do
    kill -0 "$client" 2>/dev/null || fail "the long stream failed: $(cat "$work/stream.err")"
    sleep 0.2
  done
  start=$SECONDS
  "$DOCKER" stop -t "$GRACE" "$container" >/dev/null
  took=$((SECONDS - start))
  wait "$client" || fail "the client's stream did not end cleanly: $(cat "$work/stream.err")"
  code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$container")
  [[ $code == 0 ]] || fail "exit status $code after docker stop (${took} s)"
  local last logs  # (no `| grep -q` under pipefail: grep leaving early fails the pipe)
  last=$(tail -c 400 "$stream")
  grep -q '^data: {"error".*"code":"shutting_down"' <<<"$last" || fail "no error event: $last"
  ! grep -qF 'data: [DONE]' "$stream" || fail "the stream ran to its end within the drain"
  logs=$("$DOCKER" logs "$container" 2>&1)
  grep -q "drain timeout: .* 1 streams ended with an error event" <<<"$logs" \
    || fail "no drain timeout logged"
  pass "docker stop during a stream longer than the ${DRAIN} s drain: its error event, exit 0 in $took s"
  if [[ -n "$redis" ]]; then
    [[ -z $(redis-cli -n "$REDIS_DB" --scan --pattern 'llmgw:gateway:*') ]] \
      || fail "the heartbeat key is left in Redis"
    pass "Redis heartbeat key removed at the stop"
  fi
}

main() {
  need curl "apt-get install curl"
  need python3 "apt-get install python3"
  start_engine
  check_compose
  pick_base
  build_image
  check_size
  start_container
  check_api
  check_container
  check_stop
  say "all ${#summary[@]} checks passed ($IMAGE, FROM $BASE):"
  printf '  - %s\n' "${summary[@]}"
}

main "$@"  # (read whole before it runs: an edit to this file cannot change a run under way)
exit
