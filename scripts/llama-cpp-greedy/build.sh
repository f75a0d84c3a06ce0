#!/bin/bash
# Development aid (not used by tests): builds two small llama.cpp programs against libllama, to compare our greedy
# output and logits with llama.cpp's on this machine.
#   gen MODEL N PROMPT          llama-simple's greedy loop (prompt batch, then one token at a time), completion only;
#                               NT=threads (default 4, as llama-simple)
#                               FA=0|1 forces flash attention off/on, NOREPACK=1 keeps weights unrepacked
#   tf MODEL PROMPT COMPLETION [FA(-1 auto,0,1)] [DUMP]   teacher-forced top-2 logits per step, logits dumped as f32;
#                               NT=threads (default 4, as llama-simple); DUMP=name-prefix-or-suffix (e.g. -13, l_out) appends every
#                               matching f32 graph tensor to /tmp/dump_<name>.f32 as records (ne[4] int32, values)
#   mulmat OUT_DIR              rewrites tests/fixtures/ggml_mulmat (ggml-cpu mat-mul outputs, every quant type, batches
#                               1..9); run it with the portable ggml-cpu below on LD_LIBRARY_PATH
#   flash_attn OUT_DIR          rewrites tests/fixtures/ggml_flash_attn (ggml-cpu flash attention, 4 threads: one query
#                               split-KV or not, a few queries, 64+ queries tiled), same LD_LIBRARY_PATH
#   arch_logits MODEL OUT.bin   rewrites tests/fixtures/{qwen3,phi3,mistral3}/llama_cpp.bin (teacher-forced logits of
#                               prompts of 5, 70, 600 random ids plus decode steps, 4 threads, flash attention; the
#                               models come from scripts/arch_fixtures.py)
# then: python3 scripts/llama-cpp-greedy/compare.py MODEL.gguf ...   (our `host run --temp 0` vs gen, tokens agreed)
#
# The reference outputs (shared/reference/*_greedy.jsonl) are reproduced exactly only by ggml-cpu built without
# -march=native (AVX2 + FMA + F16C kernels, the portable x86 build); a native AVX-512 build parts from them. Build
# that variant of ggml-cpu beside the default one and point the loader at it:
#   cmake -B build-avx2 -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF
#   cmake --build build-avx2 --target ggml-cpu -j2
#   export LD_LIBRARY_PATH=$LLAMA_CPP/build-avx2/bin
# Teacher-forced logits of ours against it: logits_diff.rs here (copy it to examples/ to build it) reads tf's stdout
# and dump and compares `CpuForward` logits step by step; with the current numerics SmolLM2 (Q4_1) and Gemma-3 (Q4_K_M) agree bit for bit.
# LLAMA_CPP: a llama.cpp source tree built with cmake (e.g. the one vendored in the llama-cpp-python 0.3.36 sdist,
# `cmake -B build -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF && cmake --build build --target llama-simple`).
set -e
L=${LLAMA_CPP:?set LLAMA_CPP to a built llama.cpp tree}
cd "$(dirname "$0")"
for p in gen tf mulmat flash_attn arch_logits; do
  g++ -O2 -std=c++17 $p.cpp -I$L/include -I$L/ggml/include -L$L/build/bin -lllama -lggml -lggml-base -lggml-cpu \
      -Wl,-rpath,$L/build/bin -o $p
done
