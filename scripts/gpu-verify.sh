#!/usr/bin/env bash
# On the GPU machine, from the repository root, after scripts/device-models.sh: everything a device session
# checks, in one call. Runs every test binary of the bundle (GPU tests against the CPU twins, whole models), the
# GPU kernel benchmarks, and `host bench` on SmolLM2 and on Llama-7B-shaped synthetic Q4_0 and Q4_K models (written
# here by `host synth`). Logs go to $OUT (or /tmp/verify) as well as to the terminal.
# `parallel`: `host bench --parallel 1,8,32 -p 128 -n 128` (issue #15's shape) on SmolLM2 and the 7B-shaped Q4_0.
# Usage: scripts/gpu-verify.sh [BUNDLE_DIR=dist] [tests|benches|bench|parallel|all=all]
set -uo pipefail
cd "$(dirname "$0")/.."
dist="${1:-dist}"
what="${2:-all}"
log="${OUT:-/tmp/verify}"
mkdir -p "$log"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$log/gpu.txt"
status=0
if [ "$what" = all ] || [ "$what" = tests ]; then
    for t in "$dist"/tests/*; do
        echo "=== $t"
        "$t" --test-threads=1 --nocapture 2>&1 | tee "$log/$(basename "$t").log" | grep -E "test result|FAILED|panicked|agree|tok/s|err" || true
        [ "${PIPESTATUS[0]}" = 0 ] || status=1
    done
fi
if [ "$what" = all ] || [ "$what" = benches ]; then
    for b in "$dist"/benches/gpu_*; do
        echo "=== $b"
        "$b" 2>&1 | tee "$log/bench-$(basename "$b").log"
    done
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && "$dist/host" bench models/SmolLM2-135M-Instruct.Q4_1.gguf 2>&1 | tee "$log/bench-smollm2.md"
    for ty in Q4_0 Q4_K; do
        f="/tmp/llama-7b-$ty.gguf"
        [ -s "$f" ] || "$dist/host" synth "$f" --preset llama-7b --type "$ty" 2>&1 | tail -n 1
        "$dist/host" bench "$f" 2>&1 | tee "$log/bench-7b-$ty.md"
    done
fi
if [ "$what" = all ] || [ "$what" = parallel ]; then
    [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] && "$dist/host" bench models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --parallel 1,8,32 -p 128 -n 128 2>&1 | tee "$log/bench-parallel-smollm2.md"
    f="/tmp/llama-7b-Q4_0.gguf"
    [ -s "$f" ] || "$dist/host" synth "$f" --preset llama-7b --type Q4_0 2>&1 | tail -n 1
    "$dist/host" bench "$f" --parallel 1,8,32 -p 128 -n 128 2>&1 | tee "$log/bench-parallel-7b-Q4_0.md"
fi
exit $status
