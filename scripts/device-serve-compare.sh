#!/usr/bin/env bash
# On the GPU machine: `host serve` and llama.cpp's `llama-server` on the same model with the same number of
# sequences, both up at once (idle while the other is measured), loaded one after the other by
# scripts/serve-compare.py (streamed chat, 16 concurrent clients, 128-token answers).
# Usage: scripts/device-serve-compare.sh HOST_BIN LLAMA_BIN_DIR MODEL PARALLEL [REQUESTS=64]
set -uo pipefail
host="$1"; lb="$2"; model="$3"; np="$4"; nreq="${5:-64}"
cd "$(dirname "$0")/.."
wait_up() { for _ in $(seq 1 240); do curl -sf "$1/health" >/dev/null 2>&1 && return 0; sleep 0.5; done; return 1; }
"$host" serve "$model" --port 18080 --parallel "$np" --ctx-size 1024 --device cuda > /tmp/ours-serve.log 2>&1 &
ours=$!
"$lb/llama-server" -m "$model" --port 18081 -np "$np" -c $((np * 1024)) -ngl 99 > /tmp/llama-serve.log 2>&1 &
ll=$!
wait_up http://127.0.0.1:18080 || { echo "host serve did not come up"; tail -5 /tmp/ours-serve.log; }
wait_up http://127.0.0.1:18081 || { echo "llama-server did not come up"; tail -5 /tmp/llama-serve.log; }
python3 scripts/serve-compare.py --ours http://127.0.0.1:18080 --llama http://127.0.0.1:18081 \
    --requests "$nreq" --clients 16 --max-tokens 128
kill "$ours" "$ll" 2>/dev/null; wait 2>/dev/null
grep -m3 -iE "parallel|sequences|cuda" /tmp/ours-serve.log
true
