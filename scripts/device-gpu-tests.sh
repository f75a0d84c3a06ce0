#!/usr/bin/env bash
# On the GPU machine, from the repository root: unpack the xz'd test binaries of DIR (scripts/gpu-test-bundle.sh)
# and run them all at once on the one GPU, each bounded by TL seconds (default 120), logs in $OUT (or /tmp/gpu-tests);
# then print each binary's failures and result lines. Arguments after DIR filter the tests by name, as cargo's do.
# Model parts uploaded beforehand (dist-pNN) are stashed into /tmp/parts for scripts/device-models.sh.
# Usage: scripts/device-gpu-tests.sh DIR [FILTER]
set -uo pipefail
cd "$(dirname "$0")/.."
dir="$1"; shift
log="${OUT:-/tmp/gpu-tests}"
mkdir -p "$log" /tmp/parts
for p in dist-p[0-9]*/*; do [ -e "$p" ] && mv "$p" /tmp/parts/; done
scripts/device-models.sh > /dev/null # joins a model once all its parts are there
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$log/gpu.txt"
for x in "$dir"/*.xz; do [ -e "$x" ] && xz -d -f -T0 "$x"; done
chmod +x "$dir"/* 2>/dev/null
t0=$SECONDS
for t in "$dir"/gpu_*; do
    ( timeout "${TL:-120}" "$t" --test-threads=2 "$@" > "$log/$(basename "$t").log" 2>&1
      echo "exit status $?" >> "$log/$(basename "$t").log" ) &
done
wait
status=0
for t in "$dir"/gpu_*; do
    l="$log/$(basename "$t").log"
    echo "=== $(basename "$t")"
    grep -E "FAILED|panicked|test result|exit status|rel err|agree|parts" "$l" | tail -20
    grep -q "exit status 0" "$l" || status=1
done
echo "=== all done in $((SECONDS - t0)) s, status $status"
exit $status
