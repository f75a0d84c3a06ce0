#!/usr/bin/env bash
# Check the PTX that build.rs produced with ptxas for sm_80 (kernels.ptx) and sm_90 (kernels_sm90.ptx), printing registers, shared memory and
# spills per kernel. Fails if ptxas rejects the module; kernels that spill are listed as a warning (some run
# under a deliberate register cap from their launch bounds).
# ptxas comes from PyPI nvidia-cuda-nvcc-cu12 (no GPU needed). Usage: scripts/check-ptx.sh [PTX_FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
ptx="${1:-$(ls -t target/*/build/host-*/out/kernels.ptx 2>/dev/null | head -n 1)}"
if [ -z "$ptx" ] || [ ! -s "$ptx" ]; then
    echo "check-ptx: no kernels.ptx found (build with HOST_REQUIRE_GPU_KERNELS=1 first)" >&2
    exit 1
fi
ptxas="$(python3 -c 'import nvidia.cuda_nvcc as m; print(list(m.__path__)[0])' 2>/dev/null)/bin/ptxas"
[ -x "$ptxas" ] || ptxas="$(command -v ptxas || true)"
if [ -z "$ptxas" ] || [ ! -x "$ptxas" ]; then
    echo "check-ptx: ptxas not found (python3 -m pip install nvidia-cuda-nvcc-cu12)" >&2
    exit 1
fi
echo "checking $ptx with $("$ptxas" --version | tail -n 1)"
status=0
for arch in sm_80 sm_90; do
    # build.rs writes the sm_90 module (with programmatic dependent launch) beside kernels.ptx
    src="$ptx"
    [ "$arch" = sm_90 ] && [ -s "${ptx%.ptx}_sm90.ptx" ] && src="${ptx%.ptx}_sm90.ptx"
    log="$("$ptxas" -arch="$arch" -v "$src" -o /dev/null 2>&1)" || { echo "$log"; echo "ptxas failed for $arch" >&2; exit 1; }
    echo "== $arch"
    # ptxas prints, per entry: "Compiling entry function 'K'", then a stack/spill line, then a registers line.
    echo "$log" | awk '
        /Compiling entry function/ { match($0, /'"'"'[^'"'"']+'"'"'/); k = substr($0, RSTART + 1, RLENGTH - 2) }
        /spill stores/ { split($0, a, ","); st = a[2]; ld = a[3]; gsub(/^ +| bytes spill (stores|loads)/, "", st); gsub(/^ +| bytes spill (stores|loads)/, "", ld) }
        /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); r = substr($0, RSTART + 5, RLENGTH - 15);
                                  s = "0"; if (match($0, /[0-9]+ bytes smem/)) s = substr($0, RSTART, RLENGTH - 10);
                                  printf "  %-40s regs %4s  smem %6s B  spill st/ld %s/%s B\n", k, r, s, st, ld }'
    if echo "$log" | grep -E "[1-9][0-9]* bytes spill" >/dev/null; then
        echo "warning: some kernels spill registers for $arch (see the spill column above)" >&2
    fi
done
exit $status
