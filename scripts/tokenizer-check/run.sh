#!/usr/bin/env bash
# Checks our tokenizer against llama.cpp itself, beyond the shared reference files: builds libllama from the
# llama.cpp vendored in the PyPI sdist of llama-cpp-python (the version the references came from), dumps its
# tokenization of generated texts for each model, dumps ours (an ignored test), and compares.
# Dev-time only (a CPU build takes ~15 minutes on 2 cores).
#
# usage: scripts/tokenizer-check/run.sh [MODEL.gguf ...]   (default: the two models in models/; llama.cpp's
#        vocab-only files models/llama-vocab/ggml-vocab-*.gguf work too, the WordPiece/UGM ones excepted)
# TOKENIZER_CHECK_DIR may hold llama_cpp_python-0.3.36/ with a libllama.so already built (a link will do).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
work="${TOKENIZER_CHECK_DIR:-/tmp/tokenizer-check}"
mkdir -p "$work"
models=("$@")
[ ${#models[@]} -gt 0 ] || models=("$root/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$root/models/gemma-3-270m-q4_k_m.gguf")

lcpp="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
if [ ! -f "$lcpp/build/bin/libllama.so" ]; then
    (cd "$work" && python3 -m pip download -q "llama-cpp-python==0.3.36" --no-deps --no-binary :all: -d . \
        && tar xzf llama_cpp_python-0.3.36.tar.gz)
    cmake -S "$lcpp" -B "$lcpp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DLLAMA_CURL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build "$lcpp/build" -j2 --target llama
fi
g++ -O1 -std=c++17 "$here/llama_tokenize_dump.cpp" -I"$lcpp/include" -I"$lcpp/ggml/include" -L"$lcpp/build/bin" \
    -lllama -lggml -lggml-base -Wl,-rpath,"$lcpp/build/bin" -o "$work/llama_tokenize_dump"

python3 "$here/gen_texts.py" "$work" "${N_RANDOM:-2000}"
status=0
for m in "${models[@]}"; do
    name="$(basename "$m" .gguf)"
    "$work/llama_tokenize_dump" "$m" "$work/texts.bin" > "$work/$name.llama_cpp.txt" 2>/dev/null
    (cd "$root" && TOKENIZER_CHECK_MODEL="$m" TOKENIZER_CHECK_TEXTS="$work/texts.json" \
        TOKENIZER_CHECK_OUT="$work/$name.ours.txt" cargo test -q --release --test tokenizer -- --ignored dump_for_llama_cpp_check)
    echo "== $name"
    python3 "$here/compare.py" "$work/texts.json" "$work/$name.llama_cpp.txt" "$work/$name.ours.txt" || status=1
done
exit $status
