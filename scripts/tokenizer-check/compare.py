#!/usr/bin/env python3
"""Compares two dumps (llama.cpp's and ours) line by line: token ids with and without special parsing,
detokenized text, token pieces, and the end-of-generation set. Exit status 1 on any difference.

usage: compare.py texts.json llama_cpp.txt ours.txt
"""
import json, sys

texts = json.load(open(sys.argv[1]))
ref, ours = open(sys.argv[2]).read().split("\n"), open(sys.argv[3]).read().split("\n")
total, bad, shown = {}, {}, 0
for i, (a, b) in enumerate(zip(ref, ours)):
    if not a:
        continue
    k = a[0]
    total[k] = total.get(k, 0) + 1
    if a != b:
        bad[k] = bad.get(k, 0) + 1
        if shown < 5:
            shown += 1
            print(f"{k} {texts[i // 4]!r:.120}\n  llama.cpp {a[:200]}\n  ours      {b[:200]}")
names = {"S": "special ids", "P": "plain ids", "D": "detokenize", "T": "pieces", "E": "EOG set"}
print(", ".join(f"{names[k]} {total[k] - bad.get(k, 0)}/{total[k]}" for k in total))
sys.exit(1 if bad or len(ref) != len(ours) else 0)
