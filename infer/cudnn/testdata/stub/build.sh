#!/bin/sh
# build.sh OUTDIR: builds the stub CUDA and cuDNN libraries of this
# directory (CPU stand-ins for the tests of package infer/cudnn) into
# OUTDIR, each file named by its soname, as Load looks for them:
#   libcudart.so.12 libcuda.so.1 libcudnn.so.9 libcublasLt.so.12 libcublas.so.12
# CC (default gcc) is the compiler; STUB_CFLAGS are added to every command
# (e.g. -fsanitize=address,undefined). Exits non-zero on any failure.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
src=$(cd "$(dirname "$0")" && pwd)
cc=${CC:-gcc}
mkdir -p "$out"

# build SONAME SOURCE [FLAGS AND LIBRARIES...]
build() {
	soname=$1
	source=$2
	shift 2
	# shellcheck disable=SC2086 # STUB_CFLAGS is a list of flags
	"$cc" -O2 -g -shared -fPIC -Wall -Werror ${STUB_CFLAGS:-} -Wl,-soname,"$soname" \
		-o "$out/$soname" "$src/$source" "$@" -lm
}

build libcudart.so.12 cudart_stub.c
build libcuda.so.1 cuda_stub.c
build libcudnn.so.9 cudnn_stub.c -ldl
build libcublasLt.so.12 cublas_stub.c -DY7STUB_CUBLASLT
build libcublas.so.12 cublas_stub.c
