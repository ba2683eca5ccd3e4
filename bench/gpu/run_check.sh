#!/usr/bin/env bash
# GPU pinning check, run on the GPU machine from the repository root (see GPU_CHECK.md):
#
#   bash bench/gpu/run_check.sh 2>&1 | tee $OUT/run.log
#
# Needs, beside the repo: .whl/*.whl (the gateway's pure-Python requirements missing there),
# optionally .whl/cuda/llama_cpp_python-*.whl (a CUDA wheel built elsewhere by
# build_llama_cuda.sh), bench/gpu/sdist/llama_cpp_python-0.3.36.tar.gz (stripped sdist, built
# here only when there is no usable prebuilt wheel) and bench/gpu/tiny.gguf (make_tiny_gguf.py).
#
# Steps: install wheels into /tmp/site; make llama-cpp-python (CUDA) importable and probe it
# directly; serve bench/gpu/check.yaml (tiny-gpu: gpus [0]; tiny-cpu: no gpus); one chat and one
# completion to each; /admin/workers, each worker's /status, nvidia-smi compute apps and each
# worker's CUDA_VISIBLE_DEVICES from /proc; SIGTERM the gateway and check that no worker is left;
# bench/gpu/verdict.py judges. Everything goes to $OUT (at most 8 files).
#
# Local dry run (no GPU, CPU llama-cpp-python already installed):
#   OUT=/tmp/gpucheck PY=.venv/bin/python SKIP_INSTALL=1 NO_GPU=1 bash bench/gpu/run_check.sh
set -u -o pipefail
set -x
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${PY:-python3}
SITE=${SITE:-/tmp/site}
PORT=${PORT:-8400}
export PYTHONUNBUFFERED=1
T0=$(date +%s%N)
stamp() { echo "TIMING $1: $(( ($(date +%s%N) - T0) / 1000000 )) ms since start"; }
LIBS=/tmp/gpu-check-libs.txt
find_one() {  # first file or link named $1 under the usual library roots (one find for all)
  [ -s "$LIBS" ] || timeout 120 find /usr/local /opt /usr/lib /usr/lib64 /usr/include \
    \( -name libcublas.so.13 -o -name libcudart.so.13 -o -name cublas_v2.h -o -name libcuda.so.1 \) \
    \( -type f -o -type l \) 2>/dev/null > "$LIBS"
  grep -m1 "/$1\$" "$LIBS"
}

# ---- 0. the machine
timeout 30 nvidia-smi
timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
"$PY" -VV; command -v "$PY"; uname -r; nproc
timeout 30 nvcc --version | tail -2
timeout 30 cmake --version | head -1
stamp machine

# ---- 1. the gateway's missing pure-Python requirements
if [ -z "${SKIP_INSTALL:-}" ]; then
  timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "FATAL: wheel install failed"; exit 1; }
  export PYTHONPATH=$SITE:$REPO
  stamp wheels
fi
timeout 60 "$PY" -c "import gateway.http.app, gateway.cli, workers.server, litestar, uvicorn, msgspec, \
aiohttp, yaml, jinja2, diskcache, numpy; print('imports ok: litestar', litestar.__version__, \
'uvicorn', uvicorn.__version__, 'msgspec', msgspec.__version__, 'aiohttp', aiohttp.__version__)" \
  || { echo "FATAL: the gateway's imports fail"; exit 1; }

# ---- 2. llama-cpp-python with CUDA
if [ -z "${SKIP_INSTALL:-}" ]; then
  CUBLAS=$(find_one libcublas.so.13)
  CUDART=$(find_one libcudart.so.13)
  CUBLAS_H=$(find_one cublas_v2.h)
  echo "cublas: $CUBLAS; cudart: $CUDART; cublas_v2.h: $CUBLAS_H"
  export LD_LIBRARY_PATH=$(dirname "$CUBLAS"):$(dirname "$CUDART")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  stamp find-libs
fi

probe() {  # load tiny.gguf directly on GPU 0 with every layer offloaded; 0 when it ran on CUDA
  CUDA_VISIBLE_DEVICES=0 timeout 120 "$PY" - <<'EOF'
import sys, time
import llama_cpp
print("llama_cpp", llama_cpp.__version__, "from", llama_cpp.__file__)
gpu = bool(llama_cpp.llama_supports_gpu_offload())
print("llama_supports_gpu_offload:", gpu)
t = time.monotonic()
llm = llama_cpp.Llama("bench/gpu/tiny.gguf", n_gpu_layers=-1, n_ctx=256, n_threads=1, verbose=True)
print("loaded in %.2f s" % (time.monotonic() - t))
out = llm.create_completion("The GPU is", max_tokens=8)
print("probe completion:", out["choices"][0]["text"], out["usage"])
sys.exit(0 if gpu else 2)
EOF
}

if [ -z "${SKIP_INSTALL:-}" ]; then
  ok=
  for whl in .whl/cuda/llama_cpp_python-*.whl; do
    [ -f "$whl" ] || continue
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "$whl" && probe && ok=prebuilt
  done
  stamp prebuilt-probe
  if [ -z "$ok" ]; then
    echo "no usable prebuilt CUDA wheel: building from the stripped sdist"
    B0=$(date +%s)
    LIBCUDA=$(find_one libcuda.so.1); echo "libcuda: $LIBCUDA"
    LIBCUDA=$LIBCUDA CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) PYTHON=$PY PIP_WHEEL_ARGS=--no-build-isolation \
      EXTRA_CMAKE_ARGS=-DGGML_CUDA_COMPRESSION_MODE=none \
      timeout 420 bash bench/gpu/build_llama_cuda.sh bench/gpu/sdist/llama_cpp_python-0.3.36.tar.gz \
      "$(dirname "$CUBLAS_H")" "$(dirname "$CUBLAS")" /tmp/llama-wheel > "$OUT/build.log" 2>&1
    rc=$?
    echo "BUILD rc=$rc in $(( $(date +%s) - B0 )) s"
    if [ $rc -ne 0 ]; then
      tail -n 200 "$OUT/build.log"
      echo "FATAL: CUDA build failed"; exit 1
    fi
    tail -n 5 "$OUT/build.log"
    timeout 120 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" /tmp/llama-wheel/llama_cpp_python-*.whl && probe && ok=built-here
    stamp build
  fi
  [ -n "$ok" ] || { echo "FATAL: no llama-cpp-python that offloads to CUDA"; exit 1; }
  echo "LLAMA: $ok"
fi

# ---- 3. the real gateway: tiny-gpu pinned to GPU 0, tiny-cpu on the CPU
"$PY" -m gateway check-config bench/gpu/check.yaml
"$PY" -m gateway serve --config bench/gpu/check.yaml --port "$PORT" > "$OUT/gateway.log" 2>&1 &
GW=$!
echo "gateway pid $GW"
timeout 150 "$PY" bench/gpu/drive.py "http://127.0.0.1:$PORT" "$OUT" --ready-timeout 90 --pid "$GW" \
  | tee "$OUT/drive.txt"
stamp drive
mapfile -t WPIDS < <(awk '/^WORKER /{print $3}' "$OUT/drive.txt")
set +x
{
  echo "## nvidia-smi compute-apps"
  timeout 30 nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader
  echo "## nvidia-smi"
  timeout 30 nvidia-smi
  echo "## workers"
  for pid in "${WPIDS[@]}"; do
    echo "pid $pid env: $(tr '\0' '\n' < /proc/"$pid"/environ | grep '^CUDA_VISIBLE_DEVICES=')"
    echo "pid $pid cmd: $(tr '\0' ' ' < /proc/"$pid"/cmdline)"
    echo "pid $pid rss: $(grep VmRSS /proc/"$pid"/status)"
    echo "pid $pid libs: $(grep -oE 'lib(cuda|cudart|cublas|ggml-cuda)[^ ]*\.so[.0-9]*' /proc/"$pid"/maps | sort -u | tr '\n' ' ')"
  done
  echo "## gateway process tree"
  ps -o pid,ppid,args --ppid "$GW" -p "$GW"
} > "$OUT/evidence.txt" 2>&1
set -x
cat "$OUT/evidence.txt"
stamp evidence

# ---- 4. SIGTERM the gateway: it must exit and take its workers with it
kill -TERM "$GW"
timeout 30 tail --pid="$GW" -f /dev/null
wait "$GW"; echo "gateway exit code: $?"
sleep 1
left=0
for pid in "${WPIDS[@]}"; do
  if kill -0 "$pid" 2>/dev/null; then echo "LEFT: worker pid $pid still running"; left=1
  else echo "worker pid $pid gone"; fi
done
ps -eo pid,args | grep '[w]orkers --model-name tiny-' && left=1
echo "workers left after SIGTERM: $left"
stamp stop

# ---- 5. verdict
rm -f "$OUT/drive.txt"  # its content is in run.log; keep $OUT under 8 files
tail -n 40 "$OUT/gateway.log"
grep -nE 'offload|model buffer size|ggml_cuda_init|CUDA|no CUDA-capable|using device|assigned to device|started worker|ready$' \
  "$OUT/gateway.log"
"$PY" bench/gpu/verdict.py "$OUT" ${NO_GPU:+--no-gpu}
verdict=$?
[ "$left" = 0 ] || verdict=1
stamp done
exit $verdict
