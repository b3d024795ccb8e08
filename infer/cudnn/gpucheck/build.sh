#!/usr/bin/env bash
# build.sh: builds the device-check bundle build/gpu-check on the BUILD
# machine (make gpu-check). A later session carries it to the GPU machine
# and runs infer/cudnn/gpucheck/run.sh there (README.md beside this file).
#
# build/gpu-check/ (git-ignored; must stay well under the device tool's
# 64 MiB, which also counts the repository's own files):
#   bin/cudnn.test.xz    go test -c ./infer/cudnn, OpenBLAS linked statically
#                        (the GPU machine has no libopenblas), stripped, xz
#   bin/dump.xz          ./infer/cudnn/gpucheck/dump, likewise: run.sh makes
#                        the PyTorch baseline's weights with it there (the
#                        25 MB of .npy files would not fit in the bundle)
#   golden/*.xz          input.npy, relu_raw_p{3,4,5}.npy,
#                        yolov7-tiny-relu-raw.onnx from ../shared/golden/forward
#   SHA256SUMS           of the uncompressed files
#   conformance.cpp api.h run.sh table.py torch_bench.py README.md
#
# Every part is attempted; a failure (the package not compiling yet, the
# golden data absent, ...) is reported at the end and makes the exit status
# non-zero.
set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$ROOT" || exit 1
SRC=infer/cudnn/gpucheck
B=build/gpu-check
GOLDEN=${GOLDEN_DIR:-$ROOT/../shared/golden/forward}
GOLDEN_FILES="input.npy relu_raw_p3.npy relu_raw_p4.npy relu_raw_p5.npy yolov7-tiny-relu-raw.onnx"
GO=${GO:-go}
command -v "$GO" >/dev/null || GO=/usr/local/go/bin/go
MAX_BUNDLE=$((56 * 1024 * 1024)) # leaves room for the repository's files in the 64 MiB
MAX_TREE=$((64 * 1024 * 1024))
XZ=(xz -6 -T0 -c)

failed=()
fail() {
	failed+=("$1")
	echo "gpu-check: FAILED: $1" >&2
}

rm -rf "$B"
mkdir -p "$B/bin" "$B/golden"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# OpenBLAS statically: a directory holding only libopenblas.a makes the
# package's "-lopenblas" resolve to the archive.
blas_a=$(gcc -print-file-name=libopenblas.a 2>/dev/null)
ldflags_blas=""
if [ -n "$blas_a" ] && [ -e "$blas_a" ] && [ "$blas_a" != libopenblas.a ]; then
	mkdir -p "$tmp/blas"
	ln -s "$(readlink -f "$blas_a")" "$tmp/blas/libopenblas.a"
	ldflags_blas="-L$tmp/blas"
else
	echo "gpu-check: warning: no libopenblas.a (Debian: libopenblas-dev); the binaries will need libopenblas.so.0 on the GPU machine" >&2
fi

# gobuild NAME CMD...: CMD writes $tmp/NAME; then checks, xz into bin/.
gobuild() {
	local name=$1 glibc
	shift
	echo "== $name: $*"
	if ! CGO_ENABLED=1 CGO_LDFLAGS="${CGO_LDFLAGS:-} $ldflags_blas" "$@"; then
		fail "$name: build failed (output above)"
		return 1
	fi
	if ldd "$tmp/$name" 2>/dev/null | grep -q 'libopenblas'; then
		echo "gpu-check: warning: $name links libopenblas dynamically" >&2
	fi
	glibc=$(objdump -T "$tmp/$name" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
	echo "   $name: $(stat -c %s "$tmp/$name") bytes, needs ${glibc:-?} (the GPU machine: Ubuntu 24.04, glibc 2.39)"
	"${XZ[@]}" "$tmp/$name" >"$B/bin/$name.xz" || {
		fail "$name: xz"
		return 1
	}
	(cd "$tmp" && sha256sum "$name" | sed 's|  |  bin/|') >>"$tmp/SHA256SUMS"
}

# 1. the test binary
gobuild cudnn.test "$GO" test -c -trimpath -ldflags='-s -w' -o "$tmp/cudnn.test" ./infer/cudnn

# 2. dump, and a check that it runs here on the golden model
if gobuild dump "$GO" build -trimpath -ldflags='-s -w' -o "$tmp/dump" "./$SRC/dump"; then
	if [ -f "$GOLDEN/yolov7-tiny-relu-raw.onnx" ]; then
		if "$tmp/dump" -model "$GOLDEN/yolov7-tiny-relu-raw.onnx" -o "$tmp/torch" >/dev/null &&
			[ "$(find "$tmp/torch" -name '*.npy' | wc -l)" -eq 116 ]; then
			echo "   dump: OK on the golden model (layers.json + 116 .npy, $(du -sh "$tmp/torch" | cut -f1); made again on the GPU machine)"
		else
			fail "dump: did not write layers.json + 116 .npy for the golden model"
		fi
		rm -rf "$tmp/torch"
	fi
fi

# 3. golden data: never into tracked files, only into build/
echo "== golden: $GOLDEN"
if [ -d "$GOLDEN" ]; then
	for f in $GOLDEN_FILES; do
		if [ -f "$GOLDEN/$f" ]; then
			"${XZ[@]}" "$GOLDEN/$f" >"$B/golden/$f.xz" || fail "golden: xz $f"
			(cd "$GOLDEN" && sha256sum "$f" | sed 's|  |  golden/|') >>"$tmp/SHA256SUMS"
		else
			fail "golden: $GOLDEN/$f is missing"
		fi
	done
else
	fail "golden: $GOLDEN does not exist: the golden forward data (../shared/golden/forward beside the repository, or GOLDEN_DIR=...) is needed for TestGoldenForward, the benchmarks and the PyTorch baseline"
fi
[ -f "$tmp/SHA256SUMS" ] && cp "$tmp/SHA256SUMS" "$B/SHA256SUMS"

# 4. sources
echo "== sources"
cp "$SRC/conformance.cpp" "$SRC/run.sh" "$SRC/table.py" "$SRC/torch_bench.py" "$SRC/README.md" "$B/" || fail "copy sources"
cp infer/cudnn/api.h "$B/" || fail "copy api.h"
bash -n "$SRC/run.sh" || fail "run.sh: bash -n"
for p in table.py torch_bench.py; do
	python3 -c 'import ast, sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])' "$SRC/$p" || fail "$p: syntax"
done
# Every "#define Y7_NAME value" of api.h must be checked by conformance.cpp.
missing=$(grep -oE '^#define Y7_[A-Za-z0-9_]+[[:space:]]' infer/cudnn/api.h | awk '{print $2}' |
	while read -r m; do grep -q "\\b$m\\b" "$SRC/conformance.cpp" || echo "$m"; done | tr '\n' ' ')
[ -z "$missing" ] || fail "conformance.cpp does not check these api.h constants: $missing"
# Every optional symbol needs its Y7_OPT_ line in conformance.cpp.
opt=$(sed -n '/^#define Y7_OPTIONAL_SYMBOLS/,/^$/p' infer/cudnn/api.h | grep -oE 'X\([A-Z]+, *[A-Za-z0-9_]+' |
	sed 's/.*, *//' | while read -r m; do grep -q "Y7_OPT_$m " "$SRC/conformance.cpp" || echo "$m"; done | tr '\n' ' ')
[ -z "$opt" ] || fail "conformance.cpp has no Y7_OPT_ line for the optional symbols: $opt"

# 5. size
size=$(du -sb "$B" | cut -f1)
tree=$( (git ls-files -z -co --exclude-standard 2>/dev/null || true) | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
echo "== $B: $((size / 1024 / 1024)) MiB ($size bytes); with the repository's files (${tree:-?} bytes) the device call carries $(((size + ${tree:-0}) / 1024 / 1024)) MiB of its 64"
du -ab "$B" | sort -k2 | sed 's/^/   /'
((size <= MAX_BUNDLE)) || fail "$B is $size bytes, over $MAX_BUNDLE"
((size + ${tree:-0} <= MAX_TREE)) || fail "$B + the repository's files exceed the device tool's 64 MiB"

if ((${#failed[@]})); then
	echo
	echo "gpu-check: the bundle is INCOMPLETE (${#failed[@]} problems):" >&2
	printf '  - %s\n' "${failed[@]}" >&2
	exit 1
fi
echo
echo "gpu-check: bundle ready. ONE device call: carry [\"build/gpu-check\"], timeout_s 560,"
echo "  command: bash infer/cudnn/gpucheck/run.sh build/gpu-check \"\$OUT\"   (table: \$OUT/gpu-check.md)"
