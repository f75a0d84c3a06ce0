#!/usr/bin/env bash
# The GPU machine takes at most 64 MiB per call, and the real models are larger: split every models/*.gguf into
# 48 MiB parts (PART_MB sets another size), one git-ignored folder per part (dist-p00, dist-p01, ...), to carry one
# per call while the machine is warm. On the machine, after the uploads: scripts/device-models.sh (joins them under
# /tmp/models, links models/).
# Usage: scripts/model-parts.sh [MODEL.gguf ...]   (default: every models/*.gguf; prints one upload command per folder)
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist-p[0-9]*
i=0
for m in ${@:-models/*.gguf}; do
    name=$(basename "$m")
    tmp=$(mktemp -d)
    split -b "${PART_MB:-48}M" -d -a 2 "$m" "$tmp/$name.part"
    stat -c %s "$m" > "$tmp/$name.size" # the whole file's size: device-models.sh joins only when every part is there
    for p in "$tmp"/*.part*; do
        dir=$(printf "dist-p%02d" "$i")
        mkdir -p "$dir" && mv "$p" "$dir/"
        [ -e "$tmp/$name.size" ] && mv "$tmp/$name.size" "$dir/"
        echo "carry [\"$dir\"]  command: mkdir -p /tmp/parts && mv $dir/* /tmp/parts/"
        i=$((i + 1))
    done
    rmdir "$tmp"
done
