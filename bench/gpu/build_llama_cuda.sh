#!/usr/bin/env bash
# Build a CUDA (sm_90 only) llama-cpp-python 0.3.36 wheel. Works with or without a GPU/driver:
# libcuda is not needed to link (LIBCUDA=path/libcuda.so.1 uses the real one; otherwise a stub
# with soname libcuda.so.1 that exports the driver calls ggml-cuda makes stands in, and the real
# driver resolves them at run time), and cuBLAS may come from the nvidia-cublas wheel (headers
# and libcublas.so.13 without the unversioned links that CMake looks for). Then run
# slim_wheel.py on the result to carry it (one copy of each library, RUNPATH $ORIGIN).
#
#   bench/gpu/build_llama_cuda.sh SDIST.tar.gz CUBLAS_INCLUDE_DIR CUBLAS_LIB_DIR OUT_DIR
#
# Env: PYTHON (default python3), PIP_WHEEL_ARGS (e.g. --no-build-isolation where there is no
# index), EXTRA_CMAKE_ARGS, CUDACXX (default: nvcc on PATH), CMAKE_BUILD_PARALLEL_LEVEL.
# Why these CMake options: one architecture (H100/H200), no FlashAttention kernels, no NCCL,
# no libmtmd (llava): each cuts build time; nothing the gateway uses needs them.
set -euo pipefail
sdist=$1 inc=$2 lib=$3 out=$4
work=$(mktemp -d)
mkdir -p "$work/stub" "$work/lnk" "$out"
if [ -n "${LIBCUDA:-}" ]; then  # the real driver library, where there is one
  ln -sf "$LIBCUDA" "$work/stub/libcuda.so"
else  # a stub exporting the driver calls ggml-cuda makes (0.3.36), so the linker keeps it NEEDED
  for f in cuDeviceGet cuDeviceGetAttribute cuGetErrorString cuMemAddressFree cuMemAddressReserve \
           cuMemCreate cuMemGetAllocationGranularity cuMemMap cuMemRelease cuMemSetAccess cuMemUnmap; do
    echo "int $f(void) { return 999; }"
  done > "$work/stub/s.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$work/stub/libcuda.so" "$work/stub/s.c"
fi
ln -sf "$lib/libcublas.so.13" "$work/lnk/libcublas.so"
ln -sf "$lib/libcublasLt.so.13" "$work/lnk/libcublasLt.so"

export CUDACXX=${CUDACXX:-$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")}
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export LDFLAGS="-Wl,-rpath-link,$lib"
export CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_CUDA_FA=OFF \
 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
 -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
 -DCUDA_cuda_driver_LIBRARY=$work/stub/libcuda.so \
 -DCUDA_cublas_LIBRARY=$work/lnk/libcublas.so -DCUDA_cublasLt_LIBRARY=$work/lnk/libcublasLt.so \
 -DCMAKE_CUDA_FLAGS=-I$inc -DCMAKE_CXX_FLAGS=-I$inc ${EXTRA_CMAKE_ARGS:-}"
# shellcheck disable=SC2086
time "${PYTHON:-python3}" -m pip wheel --no-deps --no-cache-dir ${PIP_WHEEL_ARGS:-} -w "$out" "$sdist"
