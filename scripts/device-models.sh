#!/usr/bin/env bash
# On the GPU machine: join the parts that scripts/model-parts.sh made (uploaded into /tmp/parts) back into
# /tmp/models/*.gguf and point models/ there, so the tests and benchmarks find them. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p /tmp/models
for first in /tmp/parts/*.part00; do
    [ -e "$first" ] || continue
    name=$(basename "$first" .part00)
    [ -s "/tmp/models/$name" ] && continue
    have=$(stat -c %s /tmp/parts/"$name".part* | awk '{ s += $1 } END { print s }')
    want=$(cat "/tmp/parts/$name.size" 2>/dev/null || echo "$have")
    if [ "$have" != "$want" ]; then
        echo "$name: $have of $want bytes uploaded so far; not joined" >&2
        continue
    fi
    cat /tmp/parts/"$name".part* > "/tmp/models/$name"
done
rm -rf models && ln -s /tmp/models models
ls -l /tmp/models
