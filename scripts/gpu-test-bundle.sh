#!/usr/bin/env bash
# Build the GPU test binaries and the host binary (release, with the kernels), strip and xz each, into two
# git-ignored folders sized for the device machine's 64 MiB per call beside one 48 MiB model part each:
#   dist-ga/  the tests/gpu_*.rs binaries that read no model file (carry with dist-p00)
#   dist-gb/  host + the ones that do (gpu_forward, gpu_batch) (carry with dist-p01, once dist-p00 is there)
# Usage: scripts/gpu-test-bundle.sh    (then scripts/model-parts.sh for the dist-pNN model parts)
set -euo pipefail
cd "$(dirname "$0")/.."
export HOST_REQUIRE_GPU_KERNELS=1
tests=$(ls tests/gpu_*.rs | xargs -n1 basename | sed 's/\.rs$//')
model_tests="gpu_forward gpu_batch"
cargo build --release --locked --bin host
args=(); for t in $tests; do args+=(--test "$t"); done
json=$(mktemp)
cargo test --release --locked --no-run "${args[@]}" --message-format=json > "$json"
rm -rf dist-ga dist-gb && mkdir -p dist-ga dist-gb
pack() { # binary name folder
    strip -o "$3/$2" "$1" && xz -T2 -6 "$3/$2"
}
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
' "$json" | while read -r name exe; do
    case " $model_tests " in
        *" $name "*) pack "$exe" "$name" dist-gb ;;
        *) pack "$exe" "$name" dist-ga ;;
    esac
done
pack target/release/host host dist-gb
rm -f "$json"
du -sh dist-ga dist-gb >&2
echo "call 1: carry [\"dist-p00\", \"dist-ga\"], command: scripts/device-gpu-tests.sh dist-ga" >&2
echo "call 2: carry [\"dist-p01\", \"dist-gb\"], command: scripts/device-gpu-tests.sh dist-gb" >&2
