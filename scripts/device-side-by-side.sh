#!/usr/bin/env bash
# On the GPU machine, from the repository root: our engine and llama.cpp's CUDA build side by side on the same
# files and GPU, each figure bounded in time, tables into $OUT/sbs.md (or /tmp/sbs; full output in all.log) and
# the terminal. Needs the host binary (HOST, default dist-gb/host), llama.cpp's tools in /tmp/llb/bin (scripts/llama-cuda-build.sh, finished)
# and SmolLM2 under models/ (scripts/device-models.sh); writes the Llama-7B-shaped Q4_0 / Q4_K models with
# `host synth` unless they exist. What runs (each a word of WHAT, default all of them):
#   tg     llama-bench -p 512 -n 128 -r 5 vs host bench (pp512, tg128) on SmolLM2, 7B Q4_0, 7B Q4_K
#   depth  tg128 at depth 4096 on 7B Q4_0, f16 cache and q8_0 cache (llama.cpp: -fa 1 -ctk q8_0 -ctv q8_0)
#   batch  llama-batched-bench -npp 128 -ntg 128 -npl 1,8,32 vs host bench --parallel 1,8,32 -p 128 -n 128
#   pp4k   pp4096 on 7B Q4_0
# Usage: scripts/device-side-by-side.sh [WHAT...]
set -uo pipefail
cd "$(dirname "$0")/.."
H="${HOST:-dist-gb/host}"
L=/tmp/llb/bin
out="${OUT:-/tmp/sbs}"
mkdir -p "$out"
what="${*:-tg depth batch pp4k}"
smol=models/SmolLM2-135M-Instruct.Q4_1.gguf
q40=/tmp/llama-7b-Q4_0.gguf
q4k=/tmp/llama-7b-Q4_K.gguf
export LD_LIBRARY_PATH="$L:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/gpu.txt"
for ty in Q4_0 Q4_K; do
    f="/tmp/llama-7b-$ty.gguf"
    [ -s "$f" ] || "$H" synth "$f" --preset llama-7b --type "$ty" 2>&1 | tail -n 1
done
# run LABEL SECONDS CMD...: one bounded run, its output kept
run() {
    local label="$1" secs="$2"; shift 2
    echo "### $label" | tee -a "$out/sbs.md"
    timeout "$secs" "$@" 2>&1 | tee -a "$out/all.log" | grep -E '^\|' | tee -a "$out/sbs.md"
}
for w in $what; do
    case "$w" in
    tg)
        for m in "$smol" "$q40" "$q4k"; do
            run "llama.cpp $(basename "$m")" 120 "$L/llama-bench" -m "$m" -p 512 -n 128 -r 5 -ngl 99
            run "ours $(basename "$m")" 120 "$H" bench "$m" -p 512 -n 128 -r 5
        done ;;
    depth)
        run "llama.cpp d4096 f16" 180 "$L/llama-bench" -m "$q40" -p 0 -n 128 -d 4096 -r 3 -ngl 99
        run "ours d4096 f16" 180 "$H" bench "$q40" -p 0 -n 128 -d 4096 -r 3
        run "llama.cpp d4096 q8_0" 180 "$L/llama-bench" -m "$q40" -p 0 -n 128 -d 4096 -r 3 -ngl 99 -fa 1 -ctk q8_0 -ctv q8_0
        run "ours d4096 q8_0" 180 "$H" bench "$q40" -p 0 -n 128 -d 4096 -r 3 --cache-type q8_0 ;;
    batch)
        for m in "$smol" "$q40"; do
            run "llama.cpp batched $(basename "$m")" 180 "$L/llama-batched-bench" -m "$m" -c 16384 -b 2048 -ub 512 \
                -npp 128 -ntg 128 -npl 1,8,32 -ngl 99
            run "ours batched $(basename "$m")" 180 "$H" bench "$m" -p 128 -n 128 --parallel 1,8,32
        done ;;
    pp4k)
        run "llama.cpp pp4096" 180 "$L/llama-bench" -m "$q40" -p 4096 -n 0 -r 3 -ngl 99
        run "ours pp4096" 180 "$H" bench "$q40" -p 4096 -n 0 -r 3 ;;
    *) echo "unknown: $w" >&2; exit 2 ;;
    esac
done
