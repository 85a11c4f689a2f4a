#!/usr/bin/env bash
# Runs every benchmark against the build folder given (default: build), prints the tables of the README's
# Performance section and writes them, with every figure, to <build>/benchmark-results/benchmarks.{md,json}.
#   bash tests/benchmarks/run_benchmarks.sh [build] [--checkpoint-io]
# --checkpoint-io adds the ~100M-parameter checkpoint benchmark (about 3.6 GB written per repeat, then three
# training runs of 40 steps with and without checkpoints: about ten minutes).
# valgrind (callgrind) and Python with PyTorch are used when installed, and said to be skipped otherwise.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=build
checkpoint_io=false
for arg in "$@"; do
  case "$arg" in
    --checkpoint-io) checkpoint_io=true ;;
    -*) echo "usage: $0 [build] [--checkpoint-io]" >&2; exit 2 ;;
    *) build=$arg ;;
  esac
done
bin=$build/tests/benchmarks
out=$build/benchmark-results
mkdir -p "$out"
rm -f "$out"/*.json

cmake --build "$build" --target loop_overhead dispatch state_scale checkpoint_io streaming benchmark_report
real_models=$(cmake --build "$build" --target real_models >/dev/null 2>&1 && echo yes || echo no)  # needs zlib

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
torch_version=$(awk '/define TORCH_VERSION_(MAJOR|MINOR|PATCH)/ {v = v (v == "" ? "" : ".") $3} END {print v}' \
  /usr/include/torch/csrc/api/include/torch/version.h 2>/dev/null || true)
printf '{"description": "%s cores (%s), %s GiB, %s, LibTorch %s, load average %s at the start"}\n' \
  "$(nproc)" "$cpu" "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)" \
  "$(c++ --version | head -1)" "${torch_version:-?}" "$(cut -d' ' -f1 /proc/loadavg)" >"$out/machine.json"

echo "== loop overhead"
"$bin/loop_overhead" --json "$out/loop_overhead.json"

echo "== real models on real data"
if [ "$real_models" = yes ]; then
  "$bin/real_models" --json "$out/real_models.json"
else
  echo "skipped: real_models is not built (apt-get install zlib1g-dev)"
fi

echo "== callgrind instruction counts"
if command -v valgrind >/dev/null; then
  # valgrind 3.19 cannot run AVX-512 code, which LibTorch, OpenBLAS and oneDNN pick on CPUs that have it.
  # Nor can it run rdtscp where the CPU hides it from cpuid (as some VMs do) though the program still uses it:
  # Google Highway's start-up timer (libhwy, loaded with LibTorch's image libraries, never called by the loop)
  # does. Such a library is run from a copy in which each rdtscp is an rdtsc and a nop (the same length; only
  # the processor id it also returns is lost), found by objdump so that no other bytes change.
  # A run counts only if the program got to its end ("<n> steps"): valgrind stops at instructions it cannot
  # decode (it then reports what it counted so far).
  patched_libs=$out/valgrind-libs
  rm -rf "$patched_libs" && mkdir -p "$patched_libs"
  callgrind() {  # side, epochs
    LD_LIBRARY_PATH="$patched_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
      ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2 \
      valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin/loop_overhead" --single "$1" --epochs "$2" 2>&1 || true
  }
  patch_rdtscp() {  # the library valgrind stopped in, from its log; succeeds if a patched copy now exists
    local lib soname
    lib=$(grep -A1 'Unrecognised instruction' <<<"$1" | sed -n 's/.*(in \(\/[^)]*\)).*/\1/p' | head -1)
    grep -q 'unhandled instruction bytes: 0xF 0x1 0xF9 ' <<<"$1" && [ -n "$lib" ] && command -v objdump >/dev/null ||
      return 1
    soname=$(objdump -p "$lib" | awk '$1 == "SONAME" {print $2}')  # the name the loader looks for
    [ -n "$soname" ] && [ ! -e "$patched_libs/$soname" ] || return 1
    python3 - "$lib" "$patched_libs/$soname" "$(objdump -d "$lib" | grep -c $'\trdtscp')" <<'PY'
import sys
source, target, instructions = sys.argv[1], sys.argv[2], int(sys.argv[3])
code = open(source, "rb").read()
if code.count(b"\x0f\x01\xf9") != instructions:  # the bytes also occur outside rdtscp instructions
    sys.exit(1)
open(target, "wb").write(code.replace(b"\x0f\x01\xf9", b"\x0f\x31\x90"))
PY
  }
  instructions() {  # instructions of one run: side, epochs
    local log attempt
    for attempt in 1 2 3; do
      log=$(callgrind "$1" "$2")
      grep -q '^[0-9]* steps$' <<<"$log" && break
      patch_rdtscp "$log" || break
    done
    if grep -q '^[0-9]* steps$' <<<"$log"; then
      sed -n 's/.*Collected : \([0-9]*\).*/\1/p' <<<"$log"
    else
      grep -m1 -A6 'unhandled instruction' <<<"$log" >&2 || true
    fi
  }
  short=2 long=6 steps_per_epoch=64
  hand_short=$(instructions hand $short) hand_long=$(instructions hand $long)
  trainer_short=$(instructions trainer $short) trainer_long=$(instructions trainer $long)
  if [ -z "$hand_short" ] || [ -z "$hand_long" ] || [ -z "$trainer_short" ] || [ -z "$trainer_long" ]; then
    echo "valgrind failed on loop_overhead; no instruction counts" >&2
  else
    awk -v hs="$hand_short" -v hl="$hand_long" -v ts="$trainer_short" -v tl="$trainer_long" -v s=$short -v l=$long \
      -v n=$steps_per_epoch 'BEGIN {
        hand = (hl - hs) / ((l - s) * n); trainer = (tl - ts) / ((l - s) * n)
        printf "{\"short_epochs\": %d, \"long_epochs\": %d, \"hand_per_step\": %.1f, \"trainer_per_step\": %.1f, \"ratio\": %.4f}\n",
          s, l, hand, trainer, trainer / hand }' >"$out/callgrind.json"
    cat "$out/callgrind.json"
  fi
else
  echo "skipped: valgrind is not installed (apt-get install valgrind)"
fi

echo "== dispatch"
"$bin/dispatch" --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/dispatch.json" --benchmark_out_format=json

echo "== state at scale, memory, resume skip"
"$bin/state_scale" --json "$out/state_scale.json"

echo "== streams: CSV throughput, resume, peak memory over 100 MB and 1 GB"
"$bin/streaming" --dir "$out/streaming.tmp" --json "$out/streaming.json"

echo "== compile cost"
compile_seconds() {  # median of 3 rebuilds of one object: target, then its source
  local unit=$1 source=${2:-$1} times=()
  for _ in 1 2 3; do
    touch "$src/tests/benchmarks/compile_cost/$source.cpp"
    local start end
    start=$(date +%s.%N)
    cmake --build "$build" --target "compile_cost_$unit" >/dev/null
    end=$(date +%s.%N)
    times+=("$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", b - a }')")
  done
  printf '%s\n' "${times[@]}" | sort -g | sed -n 2p
}
torch_only=$(compile_seconds torch_only)
with_trainer=$(compile_seconds with_trainer)
# The same Trainer translation unit as a program linking torchtrain::compiled compiles it.
with_trainer_compiled=$(compile_seconds with_trainer_compiled with_trainer)
# And with only the headers it uses in place of torchtrain.hpp.
with_trainer_compiled_own_headers=$(compile_seconds with_trainer_compiled_own_headers with_trainer)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b / a }'; }
printf '{"repeats": 3, "torch_only_seconds": %s, "with_trainer_seconds": %s, "with_trainer_compiled_seconds": %s, "with_trainer_compiled_own_headers_seconds": %s, "ratio": %s, "compiled_ratio": %s, "compiled_own_headers_ratio": %s}\n' \
  "$torch_only" "$with_trainer" "$with_trainer_compiled" "$with_trainer_compiled_own_headers" \
  "$(ratio "$torch_only" "$with_trainer")" "$(ratio "$torch_only" "$with_trainer_compiled")" \
  "$(ratio "$torch_only" "$with_trainer_compiled_own_headers")" >"$out/compile_cost.json"
cat "$out/compile_cost.json"

echo "== Python reference"
# Debian's python3-torch is importable by Debian's own interpreter, which another python3 on PATH may hide.
python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import torch' 2>/dev/null; then python=$candidate; break; fi
done
if [ -n "$python" ]; then
  "$python" "$src/tests/benchmarks/hand_written.py" | tee "$out/python.json"
else
  echo "skipped: Python's torch is not installed (apt-get install python3-torch)"
fi

if $checkpoint_io; then
  echo "== checkpoint I/O"
  "$bin/checkpoint_io" --repeats 3 --json "$out/checkpoint_io.json"
fi

echo
"$bin/benchmark_report" "$out"
echo "(all benchmarks ran in $((SECONDS / 60)) min $((SECONDS % 60)) s)"
