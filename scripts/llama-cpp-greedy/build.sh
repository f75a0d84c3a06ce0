#!/bin/bash
# Development aid (not used by tests): builds two small llama.cpp programs against libllama, to compare our greedy
# output and logits with llama.cpp's on this machine.
#   gen MODEL N PROMPT          llama-simple's greedy loop (prompt batch, then one token at a time), completion only;
#                               NT=threads (default 1)
#   tf MODEL PROMPT COMPLETION [FA(-1 auto,0,1)] [DUMP]   teacher-forced top-2 logits per step, logits dumped as f32
# then: python3 scripts/llama-cpp-greedy/compare.py MODEL.gguf ...   (our `host run --temp 0` vs gen, tokens agreed)
# LLAMA_CPP: a llama.cpp source tree built with cmake (e.g. the one vendored in the llama-cpp-python 0.3.36 sdist,
# `cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF && cmake --build build --target llama-simple`).
set -e
L=${LLAMA_CPP:?set LLAMA_CPP to a built llama.cpp tree}
cd "$(dirname "$0")"
for p in gen tf; do
  g++ -O2 -std=c++17 $p.cpp -I$L/include -I$L/ggml/include -L$L/build/bin -lllama -lggml -lggml-base \
      -Wl,-rpath,$L/build/bin -o $p
done
