#!/usr/bin/env bash
# Shows on any x86-64 host with GCC (no AMX CPU needed) that set-up's AMX switch works for an AMX
# CPU: builds ggml's CPU backend from llama-cpp-python's own llama.cpp for Sapphire Rapids (what
# -march=native means on such a Xeon), once as is and once with the switch deploy/build_llama.sh
# adds, and looks for the AMX backend in each library. Takes a few minutes on 2 cores.
#
#   bench/amx/prove_switch.sh [WORKDIR]      (the report goes to stdout)
set -euo pipefail
VERSION=0.3.36
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
if [[ ! -d llama_cpp_python-$VERSION ]]; then
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d .
  tar xzf "llama_cpp_python-$VERSION.tar.gz"
fi
src=llama_cpp_python-$VERSION/vendor/llama.cpp

build() {  # build NAME FLAGS: ggml-cpu alone, for Sapphire Rapids
  cmake -S "$src" -B "build-$1" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
    -DGGML_NATIVE=OFF -DCMAKE_C_FLAGS="$2" -DCMAKE_CXX_FLAGS="$2" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF >"build-$1.log" 2>&1
  # The compiler's warnings go to the log; a failed build shows its end and stops here.
  cmake --build "build-$1" --target ggml-cpu -j "$(nproc)" >>"build-$1.log" 2>&1 \
    || { tail -30 "build-$1.log" >&2; exit 1; }
  find "build-$1" -name 'libggml-cpu.so' | head -1
}

echo "cc: $(cc --version | head -1); CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
for variant in as-is switched; do
  flags="-march=sapphirerapids"
  [[ $variant == switched ]] && flags="$NO_AMX -march=sapphirerapids"  # CMake's order: ours first
  lib=$(build "$variant" "$flags")
  amx=$(nm -D --defined-only "$lib" | grep -c 'ggml_backend_amx' || true)
  macros=$(cc $flags -dM -E -x c /dev/null | grep -c '__AMX_' || true)
  echo "$variant ($flags): __AMX_*__ macros defined: $macros; ggml_backend_amx symbols in $(basename "$lib"): $amx"
done
