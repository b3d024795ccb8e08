#!/usr/bin/env bash
# run.sh BUNDLE [OUT]: the infer/cudnn device check, ON the GPU machine,
# from the repository root:
#
#   bash infer/cudnn/gpucheck/run.sh build/gpu-check "$OUT"
#
# BUNDLE is what `make gpu-check` built (build.sh): xz-compressed binaries
# and golden files, conformance.cpp, api.h, torch_bench.py, table.py. The
# steps, each under `timeout` and all under GPU_CHECK_TOTAL_S (default 480 s):
#
#   env          nvidia-smi, driver/CUDA/python/torch versions, the library
#                and header directories found (exported as YOLO7D_GPU_LIBS)
#   unpack       the bundle into a temporary directory, checksums
#   conformance  conformance.cpp built with -Werror against the real headers
#                and api.h, then run (the ABI check)
#   gotest       cudnn.test -test.v on the real libraries (YOLO7D_GPU_TEST=1)
#   bench_fwd    BenchmarkForward, -test.benchtime 200x -test.count 3
#   torch        dump (deploy weights of the golden model) + torch_bench.py
#   bench_train  BenchmarkTrainStep, -test.benchtime 50x -test.count 3
#
# then table.py writes OUT/gpu-check.md. A failing step never stops the
# later ones; the table says which failed and why. OUT receives exactly 8
# files (the device tool returns at most 8): gpu-check.md, steps.tsv,
# env.log, conformance.log, gotest.log, gobench.log, torch.log, torch.json.
#
# Knobs (environment): GPU_CHECK_TOTAL_S, GPU_CHECK_TESTS (a -test.run
# regexp), GPU_CHECK_BENCHTIME, GPU_CHECK_TRAIN_BENCHTIME, GPU_CHECK_COUNT,
# GPU_CHECK_CUDNN_INCLUDE / GPU_CHECK_CUDA_INCLUDE (header directories to
# use first), YOLO7D_GPU_LIBS (library directories searched first),
# GPU_CHECK_KEEP_WORK=1 (keep the unpacked files), PYTHON, CXX.
set -u
set -o pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 BUNDLE [OUT]   (BUNDLE: build/gpu-check, made by make gpu-check)" >&2
	exit 2
fi
if ! BUNDLE=$(cd "$1" 2>/dev/null && pwd); then
	echo "run.sh: bundle $1 not found: run make gpu-check on the build machine and carry build/gpu-check" >&2
	exit 2
fi
OUT=${2:-$BUNDLE/out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || {
	echo "run.sh: cannot create $OUT" >&2
	exit 2
}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SRC/../../.." && pwd)
TOTAL=${GPU_CHECK_TOTAL_S:-480}
RESERVE=25 # seconds kept for the table
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
PY=${PYTHON:-python3}
TESTS=${GPU_CHECK_TESTS:-'^(TestOps|TestConvFP16|TestGoldenForward|TestTrainStep|TestBadCalls)$'}
FWD_BENCHTIME=${GPU_CHECK_BENCHTIME:-200x}
TRAIN_BENCHTIME=${GPU_CHECK_TRAIN_BENCHTIME:-50x}
COUNT=${GPU_CHECK_COUNT:-3}
export BUNDLE OUT SRC REPO WORK PY TESTS FWD_BENCHTIME TRAIN_BENCHTIME COUNT
# Python output unbuffered, so a killed step still leaves its lines.
export PYTHONUNBUFFERED=1
# The OUT files: start clean, the device tool returns only the first 8.
rm -f "$OUT"/gpu-check.md "$OUT"/steps.tsv "$OUT"/env.log "$OUT"/conformance.log "$OUT"/gotest.log \
	"$OUT"/gobench.log "$OUT"/torch.log "$OUT"/torch.json

# bundled FILE: the bundle's copy, else the source directory's.
bundled() {
	if [ -e "$BUNDLE/$1" ]; then echo "$BUNDLE/$1"; else echo "$SRC/$1"; fi
}
export -f bundled

# note TEXT: a line for the step's row in the table.
note() { echo "$*" >>"$WORK/note"; }
export -f note

# ---------------------------------------------------------------------------
# Library and header directories (fast; before any step so that all use them)

SITES=$(timeout 60 "$PY" - <<'EOF' 2>/dev/null
import os, site, sys
seen = []
def add(p):
    if p and os.path.isdir(p) and p not in seen:
        seen.append(p)
try:
    import nvidia
    for p in list(nvidia.__path__):
        add(os.path.dirname(p))
except Exception:
    pass
try:
    for p in site.getsitepackages():
        add(p)
    add(site.getusersitepackages())
except Exception:
    pass
for p in sys.path:
    if p.endswith("-packages"):
        add(p)
print("\n".join(seen))
EOF
)
export SITES

libdirs=()
adddir() { # adddir DIR: append once, if it exists
	local d
	[ -d "$1" ] || return 0
	d=$(cd "$1" && pwd -P)
	for x in "${libdirs[@]+"${libdirs[@]}"}"; do [ "$x" = "$d" ] && return 0; done
	libdirs+=("$d")
}
# The NVIDIA wheels first (the runtime, cuBLAS(Lt) and cuDNN that PyTorch
# uses too, and whose headers conformance.cpp reads), then the driver's
# directory for libcuda.so.1 (never a stub or compat copy), then a toolkit.
while IFS= read -r s; do
	[ -n "$s" ] || continue
	for d in "$s/nvidia/cudnn/lib" "$s/nvidia/cu13/lib" "$s/nvidia/cu12/lib" "$s/nvidia/cuda_runtime/lib" \
		"$s/nvidia/cublas/lib" "$s"/nvidia/*/lib; do
		adddir "$d"
	done
done <<<"$SITES"
for d in $(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 /{print $NF}' | xargs -r -n1 dirname) \
	/usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu /usr/lib64; do
	[ -e "$d/libcuda.so.1" ] && adddir "$d"
done
adddir /usr/local/cuda/lib64
adddir /usr/local/cuda/targets/x86_64-linux/lib
for so in libcudart.so.13 libcudart.so.12 libcudnn.so.9 libcudnn.so.8 libcublasLt.so.13; do
	for p in $(ldconfig -p 2>/dev/null | awk -v so="$so" '$1 == so {print $NF}'); do adddir "$(dirname "$p")"; done
done
found=$(
	IFS=:
	echo "${libdirs[*]+"${libdirs[*]}"}"
)
if [ -n "${YOLO7D_GPU_LIBS:-}" ] && [ -n "$found" ]; then
	YOLO7D_GPU_LIBS=$YOLO7D_GPU_LIBS:$found
else
	YOLO7D_GPU_LIBS=${YOLO7D_GPU_LIBS:-}$found
fi
export YOLO7D_GPU_LIBS

# first_with FILE DIR...: the first DIR holding FILE.
first_with() {
	local f=$1 d
	shift
	for d in "$@"; do
		[ -n "$d" ] && [ -e "$d/$f" ] && {
			echo "$d"
			return 0
		}
	done
	return 0
}
cudnn_dirs=("${GPU_CHECK_CUDNN_INCLUDE:-}")
cuda_dirs=("${GPU_CHECK_CUDA_INCLUDE:-}")
while IFS= read -r s; do
	[ -n "$s" ] || continue
	cudnn_dirs+=("$s/nvidia/cudnn/include")
	cuda_dirs+=("$s/nvidia/cu13/include" "$s/nvidia/cu12/include" "$s/nvidia/cuda_runtime/include")
done <<<"$SITES"
cudnn_dirs+=(/usr/include /usr/local/cuda/include /usr/include/x86_64-linux-gnu)
cuda_dirs+=(/usr/local/cuda/include /usr/local/cuda/targets/x86_64-linux/include /usr/include)
CUDNN_INC=$(first_with cudnn.h "${cudnn_dirs[@]}")
CUDA_INC=$(first_with cuda_runtime_api.h "${cuda_dirs[@]}")
CUDA_H_INC=$(first_with cuda.h "$CUDA_INC" "${cuda_dirs[@]}")
export CUDNN_INC CUDA_INC CUDA_H_INC

# ---------------------------------------------------------------------------
# Steps

STEPS=$OUT/steps.tsv
printf 'step\trc\tseconds\ttimeout\tlog\tnote\n' >"$STEPS"
left() { echo $((TOTAL - ($(date +%s) - START))); }

# run_step NAME CAP LOG FUNCTION: FUNCTION (exported) under timeout
# min(CAP, time left - RESERVE), its output appended to OUT/LOG, one row
# in steps.tsv. A step whose limit would be under 10 s is skipped.
run_step() {
	local name=$1 cap=$2 log=$3 fn=$4 t s rc d n
	t=$(($(left) - RESERVE))
	((t > cap)) && t=$cap
	if ((t < 10)); then
		printf '%s\tskip\t0\t0\t%s\t%s\n' "$name" "$log" "no time left (total limit ${TOTAL}s)" >>"$STEPS"
		echo "== $name: SKIPPED (no time left of ${TOTAL}s)" | tee -a "$OUT/$log"
		return 0
	fi
	rm -f "$WORK/note"
	echo "== $name (limit ${t}s) $(date -u +%H:%M:%S)" | tee -a "$OUT/$log"
	s=$(date +%s)
	STEP_LIMIT=$t timeout -k 10 "$t" bash -c "$fn" </dev/null >>"$OUT/$log" 2>&1
	rc=$?
	d=$(($(date +%s) - s))
	n=""
	[ -f "$WORK/note" ] && n=$(tr '\t' ' ' <"$WORK/note" | paste -sd';' - | sed 's/;/; /g' | cut -c1-300)
	if ((rc == 124 || rc == 137)); then n="timed out after ${t}s${n:+; $n}"; fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$d" "$t" "$log" "$n" >>"$STEPS"
	echo "== $name: exit $rc in ${d}s${n:+ ($n)}" | tee -a "$OUT/$log"
}

s_env() {
	local st=0
	echo "ENV date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "ENV host=$(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); glibc $(ldd --version 2>&1 | head -1 | awk '{print $NF}'); $(nproc) CPUs"
	if command -v nvidia-smi >/dev/null; then
		nvidia-smi -L || st=1
		echo "ENV gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
		echo "ENV driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
		echo "ENV cuda_driver=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | awk '{print $3}')"
		nvidia-smi --query-gpu=name,memory.total,memory.used,clocks.sm,clocks.max.sm,power.draw,temperature.gpu \
			--format=csv 2>&1
		nvidia-smi 2>&1 | head -20
	else
		echo "ENV gpu=none (nvidia-smi not found)"
		note "nvidia-smi not found: no NVIDIA driver on this machine"
		st=1
	fi
	echo "python: $(command -v "$PY") $("$PY" -c 'import sys; print(sys.version.split()[0])' 2>&1)"
	# Package versions without importing torch (torch_bench.py does that).
	timeout 60 "$PY" - <<'EOF' 2>&1 || note "python3: torch not installed, or its packages cannot be listed"
import importlib.metadata as md
names = set()
for d in md.distributions():
    n = (d.metadata["Name"] or "").lower()
    if n.startswith(("nvidia-", "torch", "cuda-", "numpy")) and n not in names:
        names.add(n)
        print("package: %s %s" % (d.metadata["Name"], d.version))
if "torch" not in names:
    raise SystemExit("torch is not installed")
EOF
	echo "site-packages: $(echo "$SITES" | tr '\n' ' ')"
	echo "ENV libdirs=$YOLO7D_GPU_LIBS"
	echo "include: cudnn.h in ${CUDNN_INC:-NOT FOUND}; cuda_runtime_api.h in ${CUDA_INC:-NOT FOUND}; cuda.h in ${CUDA_H_INC:-not found}"
	local IFS=:
	for d in $YOLO7D_GPU_LIBS; do
		ls "$d" 2>/dev/null | grep -E '^lib(cuda|cudart|cudnn|cublas|cublasLt)(_[a-z_]+)?\.so\.[0-9]+$' | sed "s|^|  $d/|"
	done
	return $st
}

unxz_to() { # unxz_to SRC DST
	case $1 in
	*.xz)
		if command -v xz >/dev/null; then
			xz -dc "$1" >"$2"
		else
			"$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
		fi
		;;
	*) cp "$1" "$2" ;;
	esac
}
export -f unxz_to

s_unpack() {
	local f rel st=0
	for f in "$BUNDLE"/bin/* "$BUNDLE"/golden/*; do
		[ -f "$f" ] || continue
		rel=${f#"$BUNDLE"/}
		rel=${rel%.xz}
		mkdir -p "$WORK/$(dirname "$rel")"
		if ! unxz_to "$f" "$WORK/$rel"; then
			echo "unpack $f: FAILED"
			note "cannot unpack $rel"
			st=1
		fi
	done
	chmod +x "$WORK"/bin/* 2>/dev/null
	if [ -f "$BUNDLE/SHA256SUMS" ]; then
		(cd "$WORK" && sha256sum -c "$BUNDLE/SHA256SUMS") || {
			note "checksums differ"
			st=1
		}
	fi
	for f in cudnn.test dump; do
		if [ -x "$WORK/bin/$f" ]; then
			echo "bin/$f: $(stat -c %s "$WORK/bin/$f") bytes; needs $(objdump -T "$WORK/bin/$f" 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
			ldd "$WORK/bin/$f" 2>&1 | sed 's/^/  /'
		else
			echo "bin/$f: missing (the build machine could not build it: see make gpu-check's output)"
			note "bin/$f missing"
			st=1
		fi
	done
	ls -l "$WORK/golden" 2>&1
	return $st
}

s_conformance() {
	local cxx="" api cpp c flags=() incs=()
	for c in ${CXX:-} g++ c++ clang++; do
		command -v "$c" >/dev/null && {
			cxx=$c
			break
		}
	done
	[ -n "$cxx" ] || {
		note "no C++ compiler (g++, c++, clang++)"
		return 1
	}
	[ -n "$CUDNN_INC" ] || {
		echo "include: cudnn.h NOT FOUND (looked in nvidia/cudnn/include of: $(echo "$SITES" | tr '\n' ' '), /usr/include, /usr/local/cuda/include)"
		note "cudnn.h not found"
		return 1
	}
	[ -n "$CUDA_INC" ] || {
		echo "include: cuda_runtime_api.h NOT FOUND (nvidia/cu13/include, nvidia/cuda_runtime/include, /usr/local/cuda/include)"
		note "cuda_runtime_api.h not found"
		return 1
	}
	cpp=$(bundled conformance.cpp)
	api=$(bundled api.h)
	[ -e "$api" ] || api=$SRC/../api.h
	echo "include: cudnn.h from $CUDNN_INC; cuda_runtime_api.h from $CUDA_INC; cuda.h from ${CUDA_H_INC:-none}; api.h $api"
	echo "compiler: $cxx ($("$cxx" --version | head -1))"
	# Every "#define Y7_NAME value" of api.h must be checked by conformance.cpp.
	local missing
	missing=$(grep -oE '^#define Y7_[A-Za-z0-9_]+[[:space:]]' "$api" | awk '{print $2}' |
		while read -r m; do grep -q "\\b$m\\b" "$cpp" || echo "$m"; done | tr '\n' ' ')
	if [ -n "$missing" ]; then
		echo "coverage: api.h constants not checked by conformance.cpp: $missing"
		note "unchecked constants: $missing"
	fi
	incs=(-isystem "$CUDNN_INC" -isystem "$CUDA_INC")
	[ -n "$CUDA_H_INC" ] && [ "$CUDA_H_INC" != "$CUDA_INC" ] && incs+=(-isystem "$CUDA_H_INC")
	flags=(-std=c++17 -O0 -Wall -Wextra -Werror -Wno-error=deprecated-declarations "${incs[@]}" -I "$(dirname "$api")")
	echo "+ $cxx ${flags[*]} $cpp -ldl -o $WORK/conformance"
	if "$cxx" "${flags[@]}" "$cpp" -ldl -o "$WORK/conformance"; then
		"$WORK/conformance" || {
			note "conformance program failed"
			return 1
		}
		[ -z "$missing" ] || return 1
		return 0
	fi
	echo "strict build FAILED (errors above name the symbols); the same checks at run time:"
	note "strict -Werror build failed"
	if "$cxx" "${flags[@]}" -DY7_CONFORMANCE_REPORT "$cpp" -ldl -o "$WORK/conformance-report"; then
		"$WORK/conformance-report"
	else
		echo "report build FAILED too"
	fi
	return 1
}

s_gotest() {
	[ -x "$WORK/bin/cudnn.test" ] || {
		note "cudnn.test not available"
		return 1
	}
	cd "$REPO/infer/cudnn" 2>/dev/null || cd "$WORK" || return 1
	echo "YOLO7D_GPU_LIBS=$YOLO7D_GPU_LIBS"
	YOLO7D_GPU_TEST=1 YOLO7D_GOLDEN_DIR="$WORK/golden" "$WORK/bin/cudnn.test" -test.v -test.count 1 \
		-test.run "$TESTS" -test.timeout "$((STEP_LIMIT > 30 ? STEP_LIMIT - 15 : STEP_LIMIT))s"
}

bench() { # bench REGEXP BENCHTIME
	[ -x "$WORK/bin/cudnn.test" ] || {
		note "cudnn.test not available"
		return 1
	}
	cd "$REPO/infer/cudnn" 2>/dev/null || cd "$WORK" || return 1
	YOLO7D_GPU_TEST=1 YOLO7D_GOLDEN_DIR="$WORK/golden" "$WORK/bin/cudnn.test" -test.run '^$' -test.bench "$1" \
		-test.benchtime "$2" -test.count "$COUNT" -test.timeout "$((STEP_LIMIT > 30 ? STEP_LIMIT - 15 : STEP_LIMIT))s"
}
export -f bench
s_bench_fwd() { bench '^BenchmarkForward$' "$FWD_BENCHTIME"; }
s_bench_train() { bench '^BenchmarkTrainStep$' "$TRAIN_BENCHTIME"; }

s_torch() {
	[ -x "$WORK/bin/dump" ] || {
		note "dump not available"
		return 1
	}
	"$WORK/bin/dump" -model "$WORK/golden/yolov7-tiny-relu-raw.onnx" -o "$WORK/torch" || {
		note "dump failed"
		return 1
	}
	"$PY" "$(bundled torch_bench.py)" --model-dir "$WORK/torch" --golden-dir "$WORK/golden" --json "$OUT/torch.json"
}

export -f s_env s_unpack s_conformance s_gotest s_bench_fwd s_bench_train s_torch

echo "gpu-check: bundle $BUNDLE, out $OUT, work $WORK, total limit ${TOTAL}s"
run_step env 120 env.log s_env
run_step unpack 90 env.log s_unpack
run_step conformance 90 conformance.log s_conformance
run_step gotest 200 gotest.log s_gotest
run_step bench_fwd 150 gobench.log s_bench_fwd
run_step torch 150 torch.log s_torch
run_step bench_train 120 gobench.log s_bench_train

# Logs over 4 MiB keep their last 4 MiB (table.py reads them first).
if ! timeout 60 "$PY" "$(bundled table.py)" "$OUT"; then
	# No usable python: the steps alone, so that the table still says what failed.
	{
		echo "# infer/cudnn device check"
		echo
		echo "**table.py failed** (python: $PY); the steps, from steps.tsv (rc 0 = PASS, 124/137 = timeout):"
		echo
		echo "| step | rc | seconds | timeout | log | note |"
		echo "|---|---|---|---|---|---|"
		tail -n +2 "$STEPS" | sed 's/\t/ | /g; s/^/| /; s/$/ |/'
	} >"$OUT/gpu-check.md"
	cat "$OUT/gpu-check.md"
fi
for f in "$OUT"/*.log; do
	[ -f "$f" ] || continue
	if [ "$(stat -c %s "$f")" -gt 4194304 ]; then
		tail -c 4194304 "$f" >"$f.tmp" && mv "$f.tmp" "$f"
	fi
done
[ "${GPU_CHECK_KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
echo "gpu-check: done in $(($(date +%s) - START))s; table: $OUT/gpu-check.md"
awk -F'\t' 'NR > 1 && $2 != "0" {bad = 1} END {exit bad}' "$STEPS"
