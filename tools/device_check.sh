#!/usr/bin/env bash
# GPU check of the CUDA decoders, for a machine with an NVIDIA GPU (written for an
# H200 with CUDA 13 and 16 cores; needs nvcc and a C++17 g++, nothing from the network).
#
#   tools/device_check.sh [RAW_BF16_WEIGHTS_FILE]     (from the repository root)
#
# 1. builds the core, the C++ tests and tools/cuda_bench with -DZIPMOE_CUDA=ON
#    (CMake when present, else one direct g++/nvcc compile line per file);
# 2. runs the C++ tests (with a GPU, cuda_device_decoders_match_cpu runs the real
#    kernels against the CPU decoder), and that device test again under
#    compute-sanitizer memcheck when it is installed;
# 3. runs cuda_bench: bit-exactness against the CPU scalar decoder and GB/s of BF16
#    output for Huffman and rANS on 64 Mi N(0, 0.02) BF16 weights, a batch of 60
#    expert tensors of 2048 x 1408 in one call, the given weights file (raw
#    little-endian BF16) if any, and corrupt planes;
# 4. when python3 with numpy, pytest and pybind11 is there, builds the module and
#    runs tests/python/test_cuda.py.
# Prints a PASS/FAIL summary; the log goes to $OUT/ when OUT is set. Every step
# has a time limit, so the whole script ends within about 7 minutes.
#
# Options (for trying the script elsewhere): --no-cmake forces the direct compile,
# --build-only stops after step 1.
set -u -o pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
USE_CMAKE=1
BUILD_ONLY=0
WEIGHTS=""
for arg in "$@"; do
  case "$arg" in
    --no-cmake) USE_CMAKE=0 ;;
    --build-only) BUILD_ONLY=1 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) WEIGHTS="$arg" ;;
  esac
done

LOG_DIR=${OUT:-$ROOT/build/device-check-out}
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/device_check.log"
exec > >(tee "$LOG") 2>&1
TEE_PID=$!

BUILD=$ROOT/build/device-check
JOBS=$(nproc 2>/dev/null || echo 4)
START=$(date +%s)
declare -a SUMMARY=()
FAILED=0

# Every step's time limit is cut to what is left of a 7-minute budget.
BUDGET_S=420
limit() {
  local left=$(( BUDGET_S - ($(date +%s) - START) ))
  (( left < 20 )) && left=20
  echo $(( $1 < left ? $1 : left ))
}
note() { echo; echo "=== $* ($(( $(date +%s) - START )) s)"; }
record() {  # record STATUS NAME
  SUMMARY+=("$1  $2")
  [ "$1" = FAIL ] && FAILED=1
}

note "machine"
uname -a
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
command -v nvcc >/dev/null || export PATH=$PATH:/usr/local/cuda/bin
nvcc --version | tail -2
g++ --version | head -1
command -v cmake >/dev/null || USE_CMAKE=0

PYTHON_OK=0
if command -v python3 >/dev/null && python3 -c "import numpy, pytest, pybind11" 2>/dev/null; then PYTHON_OK=1; fi

# ---------------------------------------------------------------------------
note "build (cmake: $USE_CMAKE, $JOBS jobs)"
TESTS_BIN=""
BENCH_BIN=""
if [ "$USE_CMAKE" = 1 ]; then
  GENERATOR=()
  command -v ninja >/dev/null && GENERATOR=(-G Ninja)
  PY_ARGS=(-DZIPMOE_BUILD_PYTHON=OFF)
  TARGETS=(zipmoe_tests cuda_bench)
  if [ "$PYTHON_OK" = 1 ]; then
    PY_ARGS=(-DZIPMOE_BUILD_PYTHON=ON "-DPython_EXECUTABLE=$(command -v python3)"
             "-Dpybind11_DIR=$(python3 -c 'import pybind11; print(pybind11.get_cmake_dir())')")
    TARGETS+=(_core)
  fi
  if timeout "$(limit 120)" cmake -S "$ROOT" -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
       -DZIPMOE_CUDA=ON -DZIPMOE_CUDA_ARCHITECTURES=90 -DZIPMOE_BUILD_TESTS=ON -DZIPMOE_BUILD_TOOLS=ON \
       "${PY_ARGS[@]}" &&
     timeout "$(limit 300)" cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"; then
    TESTS_BIN=$BUILD/tests/cpp/zipmoe_tests
    BENCH_BIN=$BUILD/cuda_bench
  fi
else
  # The same sources and flags as CMakeLists.txt, one compiler call per file.
  PYTHON_OK=0
  OBJ=$BUILD/direct
  rm -rf "$OBJ"
  mkdir -p "$OBJ"
  COMMON=(-std=c++17 -O2 -DNDEBUG -fPIC -pthread -I"$ROOT/include" -I"$ROOT/cpp" -I"$ROOT/tests/cpp"
          -DZIPMOE_HAVE_CUDA=1)
  case "$(uname -m)" in
    x86_64) COMMON+=(-DZIPMOE_ARCH_X86=1); ARCH=x86 ;;
    aarch64) COMMON+=(-DZIPMOE_ARCH_ARM64=1); ARCH=arm64 ;;
    *) ARCH=other ;;
  esac
  AVX2="-mavx2 -mfma -mbmi -mbmi2 -mlzcnt -mf16c"
  AVX512="$AVX2 -mavx512f -mavx512bw -mavx512vl -mavx512dq"
  compile_one() {  # compile_one SOURCE -> OBJECT (prints the failing command)
    local src=$1 flags=""
    case "$src" in
      *_avx2.cpp) [ "$ARCH" = x86 ] || return 0; flags=$AVX2 ;;
      *_avx512bf16.cpp) [ "$ARCH" = x86 ] || return 0; flags="$AVX512 -mavx512bf16" ;;
      *_avx512.cpp) [ "$ARCH" = x86 ] || return 0; flags=$AVX512 ;;
      *_neon.cpp) [ "$ARCH" = arm64 ] || return 0 ;;
    esac
    local obj=$OBJ/$(echo "${src#$ROOT/}" | tr '/' '_').o
    # shellcheck disable=SC2086
    g++ "${COMMON[@]}" $flags -c "$src" -o "$obj" || { echo "FAILED: $src"; return 1; }
  }
  export -f compile_one
  export OBJ ARCH AVX2 AVX512 ROOT
  export COMMON_STR="${COMMON[*]}"
  CORE_SOURCES=$(find "$ROOT/cpp/common" "$ROOT/cpp/codec" "$ROOT/cpp/format" "$ROOT/cpp/cache" "$ROOT/cpp/sched" \
                      "$ROOT/cpp/model" "$ROOT/cpp/kernels" "$ROOT/cpp/text" "$ROOT/cpp/capi" -name '*.cpp' 2>/dev/null)
  TEST_SOURCES=$(find "$ROOT/tests/cpp" -maxdepth 1 -name 'test_*.cpp')
  ok=1
  # shellcheck disable=SC2086
  printf '%s\n' $CORE_SOURCES $TEST_SOURCES |
    timeout "$(limit 300)" xargs -P "$JOBS" -I{} bash -c 'COMMON=($COMMON_STR); compile_one "$@"' _ {} || ok=0
  NVCC=(nvcc -std=c++17 -O2 -DNDEBUG -arch=sm_90 -Xcompiler -fPIC,-pthread -I"$ROOT/include" -I"$ROOT/cpp"
        -DZIPMOE_HAVE_CUDA=1)
  [ "$ARCH" = x86 ] && NVCC+=(-DZIPMOE_ARCH_X86=1)
  [ "$ARCH" = arm64 ] && NVCC+=(-DZIPMOE_ARCH_ARM64=1)
  for cu in "$ROOT"/cpp/cuda/*.cu "$ROOT"/tools/cuda_bench.cu; do
    timeout "$(limit 120)" "${NVCC[@]}" -c "$cu" -o "$OBJ/$(basename "$cu").o" || { echo "FAILED: $cu"; ok=0; }
  done
  if [ "$ok" = 1 ]; then
    CORE_OBJS=$(ls "$OBJ"/cpp_*.o)
    CUDA_OBJS="$OBJ/decode_kernels.cu.o $OBJ/cuda_decode.cu.o"
    # shellcheck disable=SC2086
    "${NVCC[@]}" -o "$BUILD/zipmoe_tests" "$OBJ"/tests_cpp_*.o $CUDA_OBJS $CORE_OBJS -lpthread &&
      "${NVCC[@]}" -o "$BUILD/cuda_bench" "$OBJ/cuda_bench.cu.o" $CUDA_OBJS $CORE_OBJS -lpthread &&
      TESTS_BIN=$BUILD/zipmoe_tests && BENCH_BIN=$BUILD/cuda_bench
  fi
fi
if [ -n "$TESTS_BIN" ] && [ -x "$TESTS_BIN" ] && [ -x "$BENCH_BIN" ]; then
  record PASS "build with CUDA"
else
  record FAIL "build with CUDA"
fi

# ---------------------------------------------------------------------------
if [ "$BUILD_ONLY" = 0 ] && [ -n "$TESTS_BIN" ]; then
  note "C++ tests"
  if timeout "$(limit 120)" "$TESTS_BIN" > "$LOG_DIR/cpp_tests.log" 2>&1; then
    record PASS "C++ tests ($(tail -1 "$LOG_DIR/cpp_tests.log"))"
  else
    record FAIL "C++ tests ($(tail -1 "$LOG_DIR/cpp_tests.log"))"
    grep -E "check failed|FAIL|SIMT|Sanitizer|Abort" "$LOG_DIR/cpp_tests.log" | head -40
  fi
  grep -A3 "cuda_device_decoders_match_cpu" "$LOG_DIR/cpp_tests.log" | head -8

  SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
  if [ -n "$SANITIZER" ]; then
    note "compute-sanitizer memcheck of the device test (small inputs)"
    ZIPMOE_CUDA_TEST_SMALL=1 timeout "$(limit 150)" "$SANITIZER" --tool memcheck --error-exitcode 99 \
      "$TESTS_BIN" cuda_device > "$LOG_DIR/memcheck.log" 2>&1
    rc=$?
    tail -5 "$LOG_DIR/memcheck.log"
    if [ "$rc" = 0 ]; then
      record PASS "compute-sanitizer memcheck: no invalid device access ($(grep -c 'RUN' "$LOG_DIR/memcheck.log") test)"
    elif [ "$rc" = 124 ]; then
      record SKIP "compute-sanitizer memcheck did not finish in its time limit"
    elif grep -q "Device not supported\|error 999\|Unable to" "$LOG_DIR/memcheck.log"; then
      record SKIP "compute-sanitizer cannot run on this machine (see memcheck.log)"
    else
      record FAIL "compute-sanitizer memcheck (exit $rc; see memcheck.log)"
      grep -m 20 -E "Invalid|ERROR|check failed" "$LOG_DIR/memcheck.log"
    fi
  else
    record SKIP "compute-sanitizer not found"
  fi

  note "cuda_bench"
  BENCH_ARGS=()
  [ -n "$WEIGHTS" ] && BENCH_ARGS+=(--file "$WEIGHTS")
  if timeout "$(limit 240)" "$BENCH_BIN" "${BENCH_ARGS[@]}" 2>&1 | tee "$LOG_DIR/cuda_bench.log"; then
    record PASS "cuda_bench ($(grep -c '^PASS' "$LOG_DIR/cuda_bench.log") checks passed)"
  else
    record FAIL "cuda_bench ($(grep -c '^FAIL' "$LOG_DIR/cuda_bench.log") checks failed; see above)"
  fi
  grep -E "^  " "$LOG_DIR/cuda_bench.log" > "$LOG_DIR/cuda_bench_figures.txt"

  if [ "$PYTHON_OK" = 1 ] && ls "$BUILD"/_core*.so >/dev/null 2>&1; then
    note "python GPU tests"
    if (cd "$ROOT" && PYTHONPATH=python ZIPMOE_DEV_BUILD=$BUILD timeout "$(limit 120)" python3 -m pytest -q -rs \
          tests/python/test_cuda.py > "$LOG_DIR/pytest_cuda.log" 2>&1); then
      record PASS "pytest tests/python/test_cuda.py ($(tail -1 "$LOG_DIR/pytest_cuda.log"))"
    else
      record FAIL "pytest tests/python/test_cuda.py ($(tail -1 "$LOG_DIR/pytest_cuda.log"))"
      tail -30 "$LOG_DIR/pytest_cuda.log"
    fi
  else
    record SKIP "python GPU tests (no python3 with numpy, pytest and pybind11, or no module built)"
  fi
fi

note "summary"
for line in "${SUMMARY[@]}"; do echo "$line"; done
if [ "$FAILED" = 0 ]; then
  echo "DEVICE CHECK: PASS ($(( $(date +%s) - START )) s)"
else
  echo "DEVICE CHECK: FAIL ($(( $(date +%s) - START )) s)"
fi
exec >&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit "$FAILED"
