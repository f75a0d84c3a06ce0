#!/usr/bin/env bash
# CI hook (.ci/run calls it after the release build and the model fetch): `host synth` writes the tiny preset in
# a few types, `host bench` measures them on the CPU with small -p/-n/-r, and the outputs are checked:
# same seed -> same bytes, one table row per (model, test) with a positive "mean ± stddev", one JSON line per test.
# No speed is asserted. Also benchmarks SmolLM2 on the CPU when scripts/fetch-models.sh got it.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/host
[ -x "$bin" ] || cargo build --release --locked
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "ci-extra: FAIL: $*" >&2; exit 1; }

# --- synth ---
types="Q4_0 Q4_K Q8_0 F16"
for ty in $types; do
    "$bin" synth "$tmp/tiny-$ty.gguf" --preset tiny --type "$ty" --seed 7
done
"$bin" synth "$tmp/again.gguf" --preset tiny --type Q4_0 --seed 7
cmp "$tmp/tiny-Q4_0.gguf" "$tmp/again.gguf" || fail "same seed gave different files"
size=$(stat -c %s "$tmp/tiny-Q4_0.gguf")
[ "$size" -lt $((4 << 20)) ] || fail "tiny Q4_0 is $size bytes, expected a few MB at most"

# --- bench: markdown table ---
models=()
for ty in $types; do models+=("$tmp/tiny-$ty.gguf"); done
"$bin" bench "${models[@]}" -p 16 -n 8 -r 2 --device cpu | tee "$tmp/table.md"
head -1 "$tmp/table.md" | grep -Eq '^\| model +\| +size \| +params \| backend +\| +test \| +t/s \|$' \
    || fail "table header"
rows=$(awk -F'|' 'NR > 2 && $6 ~ /^ *(pp16|tg8) *$/ && $5 ~ /CPU/ && $7 ~ /^ *[0-9]+\.[0-9][0-9] ± [0-9]+\.[0-9][0-9] *$/ {
        split($7, v, " "); if (v[1] + 0 > 0) n++ } END { print n + 0 }' "$tmp/table.md")
[ "$rows" -eq $((2 * 4)) ] || fail "expected 8 rows (pp16 and tg8 for 4 models) with positive t/s, got $rows"

# --- bench: JSON lines ---
"$bin" bench "$tmp/tiny-Q4_K.gguf" -p 16 -n 0 -r 3 --device cpu --json | tee "$tmp/bench.jsonl"
[ "$(wc -l < "$tmp/bench.jsonl")" -eq 1 ] || fail "-n 0 must leave only the pp test"
python3 - "$tmp/bench.jsonl" <<'EOF' || fail "JSON output"
import json, sys
r = json.loads(open(sys.argv[1]).readline())
assert r["test"] == "pp16" and r["n_prompt"] == 16 and r["n_gen"] == 0 and r["backend"] == "CPU", r
assert len(r["samples_ts"]) == 3 and len(r["samples_ns"]) == 3 and r["avg_ts"] > 0, r
EOF

# --- bench --parallel: one row per batch size, positive prompt, generation and per-sequence t/s ---
"$bin" bench "$tmp/tiny-Q4_0.gguf" --parallel 1,8,32 -p 16 -n 8 -r 1 --device cpu | tee "$tmp/parallel.md"
head -1 "$tmp/parallel.md" | grep -Eq '^\| model +\| +B \| +PP \| +TG \| +N_KV \| +T_PP s \| +S_PP t/s \| +T_TG s \| +S_TG t/s \| +S_TG/seq t/s \|$' \
    || fail "parallel table header"
prows=$(awk -F'|' 'NR > 2 { b = $3 + 0; if ($4 + 0 == 16 && $5 + 0 == 8 && $6 + 0 == b * 24 && $8 + 0 > 0 && $10 + 0 > 0 && $11 + 0 > 0) print b }' \
        "$tmp/parallel.md" | tr '\n' ' ')
[ "$prows" = "1 8 32 " ] || fail "parallel rows: expected B = 1 8 32 with positive t/s, got '$prows'"

# --- a real model, when fetched ---
smollm2=models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -f "$smollm2" ]; then
    "$bin" bench "$smollm2" -p 32 -n 8 -r 2 --device cpu | tee "$tmp/smollm2.md"
    grep -Eq '\| +(pp32|tg8) \| +[0-9.]+ ± [0-9.]+ \|$' "$tmp/smollm2.md" || fail "SmolLM2 bench rows"
else
    echo "ci-extra: $smollm2 absent, skipping its bench"
fi
echo "ci-extra: synth and bench OK"

# --- serve: Chromium for tests/server_page.rs, the official Python client, the comparison script ---
if ! command -v chromium >/dev/null 2>&1; then
    echo "ci-extra: installing chromium (tests/server_page.rs drives the chat page with it)"
    as_root=""; [ "$(id -u)" -eq 0 ] || as_root="sudo"
    { $as_root apt-get update -q && DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -q --no-install-recommends chromium; } \
        || echo "ci-extra: warning: chromium could not be installed; the chat page test will skip"
fi
python3 -c 'import openai' 2>/dev/null || python3 -m pip install -q openai
serve_model=("$tmp/tiny-Q8_0.gguf" --chat-template "$tmp/chat.jinja")
"$bin" synth "$tmp/tiny-Q8_0.gguf" --preset tiny --type Q8_0 --seed 7
printf '%s' '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}' > "$tmp/chat.jinja"
[ -f "$smollm2" ] && serve_model=("$smollm2")
"$bin" serve "${serve_model[@]}" --port 0 --parallel 4 --ctx-size 1024 2> "$tmp/serve.log" &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; rm -rf "$tmp"' EXIT
url=""
for _ in $(seq 100); do
    url=$(sed -n 's/^listening on //p' "$tmp/serve.log")
    [ -n "$url" ] && python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/health')" "$url" 2>/dev/null && break
    sleep 0.2
done
[ -n "$url" ] || fail "host serve did not start: $(cat "$tmp/serve.log")"
scripts/openai-client-check.py "$url" || fail "the OpenAI Python client check"
scripts/serve-compare.py --ours "$url" --clients 4 --requests 8 --max-tokens 16 || fail "serve-compare"
kill -TERM "$serve_pid"
wait "$serve_pid" || fail "host serve did not exit 0 on SIGTERM"
echo "ci-extra: serve OK"
