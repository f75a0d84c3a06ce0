#!/usr/bin/env bash
# On the GPU machine: build llama.cpp's CUDA tools (llama-bench, llama-batched-bench, llama-server) from the
# trimmed source tarball that scripts/llama-src-bundle.sh makes here (the PyPI llama-cpp-python 0.3.36 sdist's
# vendor/llama.cpp), for this GPU only, in a new process session so that it goes on building after the call
# returns. Log: /tmp/llbuild.log; binaries and libraries: /tmp/llb/bin; "BUILD DONE rc=N" is its last line.
# If a tarball of a finished build (llama-bin.tar.xz, as $OUT/llama-bin.tar.xz.* came back) is given instead,
# unpacks it to /tmp/llb/bin. Usage: scripts/llama-cuda-build.sh DIR_WITH_TARBALL
set -euo pipefail
dir="$1"
if ls "$dir"/llama-bin.tar.xz.* >/dev/null 2>&1; then
    mkdir -p /tmp/llb && cat "$dir"/llama-bin.tar.xz.* | xz -d | tar x -C /tmp/llb
    echo "BUILD DONE rc=0 (prebuilt)" > /tmp/llbuild.log
    exit 0
fi
mkdir -p /tmp/llsrc && tar xJf "$dir/llama.cpp.tar.xz" -C /tmp/llsrc
find /tmp/llsrc -exec touch {} +
setsid nohup bash -c '
  cd /tmp/llsrc/llama.cpp
  cmake -S . -B /tmp/llb -G "Unix Makefiles" -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    && make -C /tmp/llb -j"$(nproc)" llama-bench llama-batched-bench llama-server
  echo "BUILD DONE rc=$?"
' > /tmp/llbuild.log 2>&1 < /dev/null &
echo "llama.cpp build started in the background: /tmp/llbuild.log"
