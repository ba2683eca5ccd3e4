#!/usr/bin/env bash
# Build a CUDA (sm_90 only) llama-cpp-python 0.3.36 wheel on a machine WITHOUT a GPU or driver,
# so that the device run need not spend its minutes compiling.
#
# Needs: nvcc 13 (CUDA_HOME, default /usr/local/cuda), cmake, ninja, a C/C++ compiler, and
# cuBLAS headers + libraries (the nvidia-cublas 13.0 wheel, unpacked: CUBLAS_DIR/{include,lib}).
# libcuda is not needed to link: an empty stub with soname libcuda.so.1 stands in; the real
# driver resolves the symbols at run time.
#
#   bench/gpu/build_cuda_wheel_here.sh SDIST.tar.gz CUBLAS_DIR OUT_DIR
set -euo pipefail
sdist=$1 cublas=$2 out=$3
work=$(mktemp -d)
mkdir -p "$work/stub" "$work/lnk" "$out"
echo 'void llm_gateway_cuda_stub(void){}' > "$work/stub/s.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$work/stub/libcuda.so" "$work/stub/s.c"
ln -sf "$cublas/lib/libcublas.so.13" "$work/lnk/libcublas.so"
ln -sf "$cublas/lib/libcublasLt.so.13" "$work/lnk/libcublasLt.so"

export CUDACXX=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export LDFLAGS="-Wl,-rpath-link,$cublas/lib"
export CMAKE_ARGS="-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90-real -DGGML_CUDA_FA=OFF \
 -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
 -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF \
 -DCUDA_cuda_driver_LIBRARY=$work/stub/libcuda.so \
 -DCUDA_cublas_LIBRARY=$work/lnk/libcublas.so -DCUDA_cublasLt_LIBRARY=$work/lnk/libcublasLt.so \
 -DCMAKE_CUDA_FLAGS=-I$cublas/include -DCMAKE_CXX_FLAGS=-I$cublas/include"
time python -m pip wheel --no-deps --no-cache-dir -w "$out" "$sdist"
