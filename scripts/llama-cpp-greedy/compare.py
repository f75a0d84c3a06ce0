#!/usr/bin/env python3
"""Run llama.cpp (scripts/llama-cpp-greedy/gen) and `host run --temp 0` on prompts x models; report how many tokens agree."""
import json, subprocess, sys, os

HOST = os.environ.get("HOST", "target/release/host")
PROMPTS = [
    "<|im_start|>user\nWrite a haiku about the ocean.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, there was a little robot who",
    "The three primary colors are",
    "def fibonacci(n):",
    "The quick brown fox",
    "In 1492, Columbus",
    "<|im_start|>user\nExplain photosynthesis in one sentence.<|im_end|>\n<|im_start|>assistant\n",
    "Water boils at",
    "My favorite food is",
    "<|im_start|>system\nYou are a pirate.<|im_end|>\n<|im_start|>user\nHello! Who are you?<|im_end|>\n<|im_start|>assistant\n",
    "1, 2, 3, 4, 5,",
    "The best way to learn a new language is",
    "Translate to French: Good morning, how are you?",
    "Q: What is the largest planet in the solar system?\nA:",
    "import numpy as np\n",
]
def toks(model, text):
    out = subprocess.run([HOST, "tokenize", model, "--prompt", text, "--ids", "--no-bos", "--no-parse-special"], capture_output=True, text=True).stdout
    return json.loads(out.strip() or "[]")
def main():
    n = int(os.environ.get("N", "32"))
    total = bad = 0
    for model in sys.argv[1:]:
        gemma = "gemma" in model
        for p in (PROMPTS if not gemma else [q for q in PROMPTS if "<|im_start|>" not in q]):
            r = subprocess.run([os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"), model, str(n), p], capture_output=True, text=True, errors="replace")
            ref = r.stdout
            o = subprocess.run([HOST, "run", model, "--prompt", p, "-n", str(n), "--temp", "0", "--device", "cpu"], capture_output=True, text=True, errors="replace").stdout
            k = 0
            while k < min(len(o), len(ref)) and o[k] == ref[k]:
                k += 1
            agree = len(toks(model, o[:k]))
            full = o == ref
            total += 1
            ok = full or agree >= 16
            bad += not ok
            sys.stdout.flush()
            print(f"{'ok ' if ok else 'BAD'} {os.path.basename(model)[:34]:34} {agree:3} tok{' =' if full else '  '} {p[:40]!r}")
            if not ok:
                print("    ours:", repr(o[:120])); print("    ref: ", repr(ref[:120]))
    print(f"{total - bad}/{total} ok")
main()
