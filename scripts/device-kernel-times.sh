#!/usr/bin/env bash
# On the GPU machine: per-kernel GPU times of one `host` command under Nsight Compute (only the duration metric,
# so each launch is replayed once), the CUDA graphs launched op by op (HOST_GPU_OFF=graphs) so that every kernel
# is seen; prints ncu's per-kernel summary (count, average, total) sorted by total time, and keeps the raw CSV in
# $OUT (or /tmp/ktimes). Usage: scripts/device-kernel-times.sh LABEL HOST_ARGS...
#   e.g. scripts/device-kernel-times.sh b8 dist-gb/host bench /tmp/llama-7b-Q4_0.gguf --parallel 8 -p 16 -n 4
set -uo pipefail
label="$1"; shift
out="${OUT:-/tmp/ktimes}"
mkdir -p "$out"
HOST_GPU_OFF=graphs timeout 300 ncu --metrics gpu__time_duration.sum --csv --print-units base "$@" \
    > "$out/$label.csv" 2> "$out/$label.err"
python3 - "$out/$label.csv" <<'PY'
import csv, sys, collections
rows = [l for l in open(sys.argv[1]) if l.startswith('"')]
tot = collections.defaultdict(lambda: [0, 0.0])
for r in csv.DictReader(rows):
    if r.get("Metric Name") == "gpu__time_duration.sum":
        t = tot[r["Kernel Name"].split("(")[0]]
        t[0] += 1
        t[1] += float(r["Metric Value"].replace(",", "")) / 1e3  # ns -> us
all_us = sum(v[1] for v in tot.values())
print(f"{'kernel':48} {'count':>7} {'avg us':>9} {'total us':>10} {'share':>6}")
for k, (n, us) in sorted(tot.items(), key=lambda kv: -kv[1][1])[:25]:
    print(f"{k[:48]:48} {n:7d} {us / n:9.2f} {us:10.1f} {100 * us / all_us:5.1f}%")
print(f"all kernels: {all_us / 1e3:.2f} ms")
PY
