#!/usr/bin/env bash
# Build everything the GPU machine needs into one git-ignored folder (default: dist/, under 64 MiB):
#   dist/host                 release host binary (stripped)
#   dist/tests/*              release test binaries, one per test target plus the library's unit tests (stripped)
#   dist/benches/*            release benchmark binaries (stripped)
#   dist/run-tests.sh         runs every test binary (GPU tests run; model tests need models/ there)
# The GPU machine has no Rust: build here, carry the folder, run it there. Prints the command to use.
# Usage: scripts/gpu-bundle.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-dist}"
rm -rf "$out" && mkdir -p "$out/tests" "$out/benches"
export HOST_REQUIRE_GPU_KERNELS=1

cargo build --release --bin host
cp target/release/host "$out/host"

# Executables of test and bench targets, as cargo reports them.
list_executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
'
}
cargo test --release --no-run --message-format=json 2>/dev/null | list_executables | while read -r kind name exe; do
    cp "$exe" "$out/tests/${kind}-${name}"
done
cargo bench --no-run --message-format=json 2>/dev/null | list_executables | while read -r kind name exe; do
    [ "$kind" = bench ] && cp "$exe" "$out/benches/${name}"
done
strip "$out/host" "$out"/tests/* "$out"/benches/* 2>/dev/null || true

cat > "$out/run-tests.sh" <<'RUN'
#!/usr/bin/env bash
# Run every test binary of the bundle from the repository root; exit non-zero if any fails.
cd "$(dirname "$0")/.."
status=0
for t in "$(dirname "$0")"/tests/*; do
    echo "=== $t"
    "$t" --test-threads=4 "$@" || status=1
done
exit $status
RUN
chmod +x "$out/run-tests.sh"

du -sh "$out" >&2
echo "device run: carry [\"$out\"], command: \"$out/run-tests.sh\"" >&2
