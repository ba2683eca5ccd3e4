#!/usr/bin/env bash
# Builds llama-cpp-python once per set of build flags and installs it into a venv.
#
#   deploy/build_llama.sh VENV_PYTHON
#
# Why not a plain `pip install`: pip compiles llama.cpp with -march=native, which on an Intel Xeon
# with AMX (Sapphire/Emerald Rapids) turns on ggml's AMX backend, and that crashes (SIGSEGV in
# ggml_backend_amx_mul_mat) on the first multi-token batch. So AMX is switched off by default
# while every other native ISA extension (AVX-512, AVX2...) stays on. And pip's wheel cache does
# not key on CMAKE_ARGS, so a changed flag could silently reuse an old wheel: we build with
# --no-cache-dir into a folder keyed by the flags, the compiler and (for native builds) the CPU.
#
# Environment:
#   LLAMA_AMX=1         keep ggml's AMX backend (opt in; see docs/builds.md "CPU builds")
#   LLAMA_CMAKE_ARGS    extra CMake arguments, e.g. "-DGGML_NATIVE=OFF -DGGML_AVX512=ON"
#                       (CMAKE_ARGS, as llama-cpp-python's own docs name it, is added too)
#   LLAMA_WHEELS        where built wheels are kept (default ~/.cache/llm-gateway/wheels)
#   LLAMA_REBUILD=1     ignore a kept wheel and build again
set -euo pipefail

PY=${1:?usage: build_llama.sh VENV_PYTHON}
VERSION=0.3.36
VENV_DIR=$(cd "$(dirname "$PY")/.." && pwd)
MARKER="$VENV_DIR/llama-cpp-build.env"

cmake_args=${LLAMA_CMAKE_ARGS:-}
if [[ -n "${CMAKE_ARGS:-}" ]]; then cmake_args="$cmake_args $CMAKE_ARGS"; fi
if [[ "$(uname -m)" == x86_64 && "${LLAMA_AMX:-0}" != 1 ]]; then
  # GCC lets an explicit -mno-X win over -march=native whatever the order; clang takes the last.
  no_amx='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
  cmake_args="-DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx' -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF $cmake_args"
fi

# A native build is only valid on a CPU like the builder's: key it on the CPU's flags too.
cpu=""
if [[ "$cmake_args" != *GGML_NATIVE=OFF* ]]; then
  cpu=$(grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m)
fi
compiler=$( (cc --version 2>/dev/null || echo no-cc) | head -1)
key=$(printf '%s\n' "$VERSION" "$cmake_args" "$compiler" "$cpu" | sha256sum | cut -c1-16)

if [[ "${LLAMA_REBUILD:-0}" != 1 && -f "$MARKER" ]] && grep -qx "LLAMA_BUILD_KEY=$key" "$MARKER" \
   && "$PY" -c "import llama_cpp" 2>/dev/null; then
  exit 0
fi

wheels=${LLAMA_WHEELS:-$HOME/.cache/llm-gateway/wheels}/llama-cpp-python-$VERSION-$key
wheel=$(ls "$wheels"/llama_cpp_python-*.whl 2>/dev/null | head -1 || true)
if [[ -z "$wheel" || "${LLAMA_REBUILD:-0}" == 1 ]]; then
  echo "building llama-cpp-python $VERSION (key $key, 6-15 minutes on 2 cores)"
  echo "  CMAKE_ARGS=$cmake_args"
  tmp=$(mktemp -d)
  # A failed build stops here (set -e): nothing swallows pip's exit status.
  CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    "$PY" -m pip wheel --no-cache-dir --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -w "$tmp"
  mkdir -p "$wheels"
  rm -f "$wheels"/*.whl
  mv "$tmp"/llama_cpp_python-*.whl "$wheels"/
  rmdir "$tmp" 2>/dev/null || true
  wheel=$(ls "$wheels"/llama_cpp_python-*.whl | head -1)
fi

# --force-reinstall: the same version built with other flags may be installed already.
"$PY" -m pip install --force-reinstall --no-deps "$wheel"
"$PY" -m pip install "$wheel"   # its dependencies (numpy, jinja2, ...) from the registry
printf 'LLAMA_BUILD_KEY=%s\nLLAMA_AMX=%s\nCMAKE_ARGS=%s\n' "$key" "${LLAMA_AMX:-0}" "$cmake_args" > "$MARKER"
rm -f "$VENV_DIR/.llama-checked"
echo "llama-cpp-python $VERSION installed from $wheel"
