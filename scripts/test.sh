#!/usr/bin/env bash
# Runs the whole test suite: builds aigc (Release) and runs every test with CTest, then rebuilds the tests with
# AddressSanitizer + UBSan and runs the parsers of untrusted input (safetensors, tokenizers, images, HTTP) under it.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
jobs="${AIGC_JOBS:-$(nproc)}"

bash scripts/format.sh --check  # the C++ follows .clang-format
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j "$jobs"
(cd build && ctest --output-on-failure -j 1) | tee build/ctest.log
# A skipped test is a failed one: a missing dependency fails its tests (AIGC_NEEDS) unless AIGC_ALLOW_MISSING
# names it, and only then may a test be skipped.
skipped=$(grep -cE '\*\*\*Skipped|Not Run' build/ctest.log || true)
if [ "$skipped" != 0 ] && [ -z "${AIGC_ALLOW_MISSING:-}" ]; then
  grep -E '\*\*\*Skipped|Not Run' build/ctest.log
  echo "error: $skipped test(s) skipped; install what they need (scripts/setup.sh) or set AIGC_ALLOW_MISSING" >&2
  exit 1
fi
echo "skipped tests: $skipped"
AIGC_BF16_EMULATE=1 ./build/aigc_tests --gtest_filter='Bf16*' --gtest_brief=1  # the fallback for CPUs without bf16
# The quantized kernels' narrower paths (CPUs without AVX-512 VNNI, or AVX2) besides the CPU's own, each with and
# without the prefetch of its weight stream (each machine picks one: cpu_backend.h): the same values every way.
for isa in "" avx2 scalar; do
  for pf in on off; do
    AIGC_QUANT_ISA=$isa AIGC_STREAM_PREFETCH=$pf ./build/aigc_tests \
      --gtest_filter='BackendOps.FastBackendMatchesReferenceOnEveryCase:Quant*' --gtest_brief=1
  done
done
bench/run --quick  # the benchmark is not a test: this only checks that it runs

cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DAIGC_SANITIZE=ON -DAIGC_NATIVE=OFF >/dev/null
ninja -C build-asan -j "$jobs" aigc_tests aigc_fuzz_http aigc_fuzz_gguf aigc_fuzz_hf
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
./build-asan/aigc_tests --gtest_filter='SafeTensors*:Gguf*:Tokenizer*:Checkpoint*:ImageData*:Server*:HfCheckpoint*:HfTokenizer.Malformed*:HfTokenizer.Config*:HfTokenizer.Encoding*:HfTokenizer.ChatTemplates'
# The HTTP fuzz target's own mutator, briefly (docs/server.md has the long runs and how to repeat them).
./build-asan/aigc_fuzz_http 30000 "$(date +%s)"
./build-asan/aigc_fuzz_gguf 20000 "$(date +%s)"
./build-asan/aigc_fuzz_hf 3000 "$(date +%s)"
echo "all tests passed"
