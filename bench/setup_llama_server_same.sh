#!/usr/bin/env bash
# Build llama-server from the llama.cpp that llama-cpp-python vendors (the same ggml our workers
# link), for scenario 9's same-version peer: against it, a gap is our design's, not a newer
# llama.cpp's. From the llama-cpp-python sdist on PyPI; AMX off on x86-64 as in our own build.
# About 5-8 minutes on 2 cores. Never a runtime dependency.
set -euo pipefail
cd "$(dirname "$0")"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
OUT=".llama-server-same"
PYTHON="${PYTHON:-python3}"
if [ -x "$OUT/bin/llama-server" ] && [ -f "$OUT/.built-$VERSION" ]; then
  echo "llama-server (llama-cpp-python $VERSION's llama.cpp) already built in bench/$OUT"; exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$work"
tar -C "$work" -xzf "$work"/llama_cpp_python-"$VERSION".tar.gz
src="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
flags=()
if [ "$(uname -m)" = x86_64 ]; then
  no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  flags=(-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
         "-DCMAKE_C_FLAGS=$no_amx" "-DCMAKE_CXX_FLAGS=$no_amx")
fi
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DCMAKE_INSTALL_PREFIX="$PWD/$OUT" -DCMAKE_BUILD_RPATH='$ORIGIN' "${flags[@]}" \
  > "$work/cmake.log"
cmake --build "$work/build" --target llama-server -j "$(nproc)" > "$work/build.log"
mkdir -p "$OUT/bin"
cp -a "$work/build/bin/"* "$OUT/bin/"
"$OUT/bin/llama-server" --version
touch "$OUT/.built-$VERSION"
