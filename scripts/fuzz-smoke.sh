#!/usr/bin/env bash
# Short fuzzing run of the GGUF parser (cargo-fuzz / libFuzzer), for CI and for longer local runs.
#
#   scripts/fuzz-smoke.sh [SECONDS]     default 60; skips cleanly (exit 0) without cargo-fuzz or nightly
#
# Seeds: the hostile-file corpus and tiny valid models written by tests/gguf_hostile.rs (GGUF_CORPUS_OUT).
# Limits make OOM, huge allocations and hangs count as failures.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz); skipping"
    exit 0
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz-smoke: no nightly toolchain (rustup toolchain install nightly); skipping"
    exit 0
fi

corpus=fuzz/corpus/gguf_parse
mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz-smoke: writing seed corpus to $corpus"
    GGUF_CORPUS_OUT="$PWD/$corpus" cargo test --quiet --test gguf_hostile >/dev/null
fi

cargo +nightly fuzz run gguf_parse "$corpus" -- \
    -max_total_time="$secs" -max_len=65536 -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -print_final_stats=1
