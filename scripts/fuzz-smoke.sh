#!/usr/bin/env bash
# Short fuzzing run of the GGUF parser and load path, for CI (.ci/run) and for longer local runs.
#
#   scripts/fuzz-smoke.sh [SECONDS]     default 60
#
# Engines, and the line that says which one ran:
#   cargo-fuzz  when `cargo fuzz` and a nightly toolchain are installed: libFuzzer on fuzz/fuzz_targets/gguf_parse.rs
#               (coverage guided; OOM, allocations over 256 MiB and inputs over 5 s count as failures).
#   builtin     otherwise (a fresh CI machine): tests/gguf_fuzz_smoke.rs, seeded random mutations through the same
#               path plus the tokenizer and a CPU forward, in a release build of the host crate with overflow checks
#               and debug assertions on. FUZZ_SMOKE=builtin forces it; GGUF_FUZZ_SEED picks its seed (default:
#               the clock, printed, so every run explores new inputs and a failure can be replayed).
# Seeds: the hostile-file corpus and valid edge cases that tests/gguf_hostile.rs writes (GGUF_CORPUS_OUT) into
# fuzz/corpus/gguf_parse, plus, for builtin, small models built in. Failing inputs: fuzz/artifacts/ (cargo-fuzz),
# target/fuzz-smoke-crashes/ (builtin).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
corpus=fuzz/corpus/gguf_parse

engine=builtin
if [ "${FUZZ_SMOKE:-}" != builtin ]; then
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    elif ! rustup run nightly rustc --version >/dev/null 2>&1; then
        echo "fuzz-smoke: no nightly toolchain for cargo-fuzz (rustup toolchain install nightly)"
    else
        engine=cargo-fuzz
    fi
fi

# The builtin engine's build: release, with the host crate's arithmetic checked (artifacts of a different
# profile live beside the plain release ones, so a later `cargo test --release` does not rebuild).
checked=(--release --locked
    --config 'profile.release.package.host.overflow-checks=true'
    --config 'profile.release.package.host.debug-assertions=true')

mkdir -p "$corpus"
if [ -z "$(ls -A "$corpus")" ]; then
    echo "fuzz-smoke: writing the seed corpus to $corpus"
    GGUF_CORPUS_OUT="$PWD/$corpus" cargo test "${checked[@]}" --quiet --test gguf_hostile -- \
        every_hostile_class odd_but_valid >/dev/null
fi
echo "fuzz-smoke: $(ls "$corpus" | wc -l) seed files in $corpus"

start=$SECONDS
if [ "$engine" = cargo-fuzz ]; then
    echo "fuzz-smoke: engine cargo-fuzz (libFuzzer), $secs s"
    cargo +nightly fuzz run gguf_parse "$corpus" -- \
        -max_total_time="$secs" -max_len=65536 -timeout=5 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -print_final_stats=1
else
    seed="${GGUF_FUZZ_SEED:-$(date +%s)}"
    echo "fuzz-smoke: engine builtin (tests/gguf_fuzz_smoke.rs), $secs s, seed $seed"
    GGUF_FUZZ_SECS="$secs" GGUF_FUZZ_SEED="$seed" GGUF_FUZZ_CORPUS="$PWD/$corpus" \
        cargo test "${checked[@]}" --test gguf_fuzz_smoke -- --nocapture fuzz_smoke_replay_and_mutate
fi
echo "fuzz-smoke: $engine done in $((SECONDS - start)) s (build included)"
