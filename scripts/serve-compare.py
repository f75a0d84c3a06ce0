#!/usr/bin/env python3
"""Send the same streamed chat requests to `host serve` and to llama.cpp's `llama-server`; compare speed.

Usage: scripts/serve-compare.py --ours URL [--llama URL] [--clients 16] [--requests 32] [--max-tokens 128]
                                [--api-key KEY] [--json]

Each server gets the same list of prompts (request i: a short question with its number, so no two prompts are
equal), streamed from /v1/chat/completions by `--clients` concurrent clients, each answer exactly --max-tokens
long (`ignore_eos`, a llama.cpp extension both servers take; `max_tokens`), temperature 0. One warm-up request
goes first and is not counted. Reported per server: aggregate generated tokens per second (all completion tokens
/ wall time of the run), the median and 90th percentile time to first token (request sent -> first content
delta), the median per-request decode rate, and failures. Standard library only.

Start the servers with the same model and the same number of sequences, e.g.
  host serve MODEL.gguf --port 8080 --parallel 4 --ctx-size 1024
  llama-server -m MODEL.gguf --port 8081 -np 4 -c 4096        # llama-server divides -c among its -np slots
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

TOPICS = ["the sea", "a mountain", "a city at night", "an old library", "a train journey", "the first snow",
          "a lighthouse", "a desert", "a garden", "a thunderstorm", "a market", "a river", "the moon", "a forest",
          "a harbour", "a bridge"]


def prompt(i):
    return f"Request {i}: write a long, detailed story about {TOPICS[i % len(TOPICS)]}."


def one_request(base, i, max_tokens, api_key):
    """Stream one chat completion; returns (ttft_s, total_s, completion_tokens, error)."""
    u = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = json.dumps({
        "model": "any", "messages": [{"role": "user", "content": prompt(i)}], "stream": True,
        "stream_options": {"include_usage": True}, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
    })
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    t0 = time.perf_counter()
    ttft, chunks, usage = None, 0, None
    try:
        conn.request("POST", (u.path.rstrip("/") or "") + "/v1/chat/completions", body, headers)
        resp = conn.getresponse()
        if resp.status != 200:
            return None, None, 0, f"HTTP {resp.status}: {resp.read()[:200]!r}"
        for raw in resp:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            j = json.loads(data)
            if "error" in j:
                return None, None, 0, str(j["error"])
            if j.get("usage"):
                usage = j["usage"]
            for c in j.get("choices") or []:
                if (c.get("delta") or {}).get("content"):
                    chunks += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
        total = time.perf_counter() - t0
        n = usage["completion_tokens"] if usage else chunks
        return ttft, total, n, None
    except Exception as e:  # noqa: BLE001 - report any failure as a failed request
        return None, None, 0, repr(e)
    finally:
        conn.close()


def run(base, clients, requests, max_tokens, api_key):
    one_request(base, 10_000, 8, api_key)  # warm-up
    results = [None] * requests
    lock = threading.Lock()

    def work(i):
        r = one_request(base, i, max_tokens, api_key)
        with lock:
            results[i] = r

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(work, range(requests)))
    wall = time.perf_counter() - t0
    ok = [r for r in results if r[3] is None]
    tokens = sum(r[2] for r in ok)
    ttfts = sorted(r[0] for r in ok if r[0] is not None)
    rates = [(r[2] - 1) / (r[1] - r[0]) for r in ok if r[0] is not None and r[2] > 1 and r[1] > r[0]]
    return {
        "url": base, "requests": requests, "clients": clients, "max_tokens": max_tokens, "failed": requests - len(ok),
        "errors": sorted({r[3] for r in results if r[3]})[:3], "wall_s": round(wall, 3), "completion_tokens": tokens,
        "aggregate_tok_s": round(tokens / wall, 2) if wall > 0 else 0.0,
        "ttft_median_ms": round(1e3 * statistics.median(ttfts), 1) if ttfts else None,
        "ttft_p90_ms": round(1e3 * ttfts[int(0.9 * (len(ttfts) - 1))], 1) if ttfts else None,
        "per_request_tok_s_median": round(statistics.median(rates), 2) if rates else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ours", required=True, help="base URL of host serve, e.g. http://127.0.0.1:8080")
    ap.add_argument("--llama", help="base URL of llama-server")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--api-key", default="")
    ap.add_argument("--json", action="store_true", help="print one JSON object per server instead of the table")
    a = ap.parse_args()
    rows = [("host serve", run(a.ours, a.clients, a.requests, a.max_tokens, a.api_key))]
    if a.llama:
        rows.append(("llama-server", run(a.llama, a.clients, a.requests, a.max_tokens, a.api_key)))
    if a.json:
        for name, r in rows:
            print(json.dumps({"server": name, **r}))
    else:
        print(f"{a.requests} streamed chat requests, {a.clients} concurrent clients, {a.max_tokens} tokens each")
        print("| server | aggregate tok/s | median TTFT ms | p90 TTFT ms | median per-request tok/s | failed |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, r in rows:
            print(f"| {name} | {r['aggregate_tok_s']} | {r['ttft_median_ms']} | {r['ttft_p90_ms']} | "
                  f"{r['per_request_tok_s_median']} | {r['failed']} |")
        for name, r in rows:
            for e in r["errors"]:
                print(f"{name}: error: {e}", file=sys.stderr)
    return 1 if any(r["failed"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
