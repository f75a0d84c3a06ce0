#!/usr/bin/env bash
# Here: pack llama.cpp's source from the PyPI llama-cpp-python 0.3.36 sdist (vendor/llama.cpp) without what a CUDA
# build of its tools does not read (model vocabularies, docs, tests, other backends), so that it fits a device call
# (about 6.5 MB). Usage: scripts/llama-src-bundle.sh SDIST.tar.gz OUT_DIR   (writes OUT_DIR/llama.cpp.tar.xz)
set -euo pipefail
sdist="$1"; out="$2"
tmp=$(mktemp -d)
tar xzf "$sdist" -C "$tmp" --wildcards '*/vendor/llama.cpp/*'
src=$(echo "$tmp"/*/vendor/llama.cpp)
# app stays: the top CMakeLists.txt adds it
rm -rf "$src"/{models,docs,media,gguf-py,tests,benches,conversion,pocs} "$src"/examples/*/
for b in vulkan sycl metal opencl cann webgpu zdnn openvino hexagon virtgpu zendnn blas; do rm -rf "$src/ggml/src/ggml-$b"; done
mkdir -p "$out"
tar cf - -C "$(dirname "$src")" llama.cpp | xz -T0 -6 > "$out/llama.cpp.tar.xz"
rm -rf "$tmp"
ls -l "$out/llama.cpp.tar.xz"
