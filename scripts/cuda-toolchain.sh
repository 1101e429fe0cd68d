#!/usr/bin/env bash
# Installs a CUDA 13.0 toolchain from PyPI into $PREFIX (default ~/cu) without root, so that
# `cargo build --release --features cuda` works on a machine with no GPU and no CUDA
# (../shared/GPU.md, sections 1-3). Writes $PREFIX/env.sh; `source` it before building.
# libcuda.so comes with a driver: this machine gets a stub with every cu* name of cuda.h,
# and the GPU machine's real libcuda.so.1 is loaded at run time.
set -euo pipefail
PREFIX=${PREFIX:-$HOME/cu}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CU=$PREFIX/nvidia/cu13
if [ ! -x "$CU/bin/nvcc" ]; then
  # One pip call: separate calls into one --target clobber the shared nvidia/cu13 folder.
  # Pinned to 13.0: the GPU machine's driver (580) cannot JIT newer PTX.
  pip install -q --no-deps --target "$PREFIX" \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 \
    nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 nvidia-cublas==13.0.2.14 \
    nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
fi
cd "$CU/lib"
for n in cublas cublasLt cudart nvrtc; do ln -sf lib$n.so.13 lib$n.so; done
ln -sf libcurand.so.10 libcurand.so
if [ ! -e libcuda.so ]; then
  { grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' "$CU/include/cuda.h" | tr -d '( \t'
    grep -oE '#define\s+cu[A-Za-z0-9_]+\s+cu[A-Za-z0-9_]+' "$CU/include/cuda.h" | awk '{print $3}'
  } | sort -u | sed 's/.*/void &(void){}/' > /tmp/cuda-stub.c
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o libcuda.so /tmp/cuda-stub.c
fi
cat > "$PREFIX/env.sh" <<ENV
export PATH=$CU/bin:\$PATH CUDA_ROOT=$CU CUDA_PATH=$CU CUDA_COMPUTE_CAP=90 LIBRARY_PATH=$CU/lib
export CARGO_TARGET_DIR=\${CARGO_TARGET_DIR:-$REPO/target-cuda}
ENV
echo "toolchain in $CU; source $PREFIX/env.sh"
