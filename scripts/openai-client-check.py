#!/usr/bin/env python3
"""Talk to `host serve` with the official OpenAI Python client (pip install openai), streamed and not.

Usage: scripts/openai-client-check.py BASE_URL [--api-key KEY] [--max-tokens N]

Checks: the model list; a chat completion and a text completion, each non-streamed and streamed (with
stream_options.include_usage) at temperature 0, where the streamed text must equal the non-streamed text and the
usage must add up; a stop string; a 400 surfacing as openai.BadRequestError. Prints what it got; exit 1 on a
mismatch.
"""

import argparse
import sys

import openai
from openai import OpenAI


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base_url")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--max-tokens", type=int, default=24)
    a = ap.parse_args()
    client = OpenAI(base_url=a.base_url.rstrip("/") + "/v1", api_key=a.api_key, max_retries=0)
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what)
        if not cond:
            failures.append(what)

    model = client.models.list().data[0].id
    print(f"openai {openai.__version__}, model {model!r}")
    msgs = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]

    r = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=a.max_tokens)
    text = r.choices[0].message.content
    print(f"chat:             {text!r} ({r.choices[0].finish_reason}, usage {r.usage.prompt_tokens} + "
          f"{r.usage.completion_tokens} = {r.usage.total_tokens})")
    check(r.usage.prompt_tokens + r.usage.completion_tokens == r.usage.total_tokens, "chat usage adds up")

    parts, usage, finish = [], None, None
    for chunk in client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=a.max_tokens,
                                                stream=True, stream_options={"include_usage": True}):
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                parts.append(c.delta.content)
            finish = c.finish_reason or finish
    print(f"chat streamed:    {''.join(parts)!r} in {len(parts)} chunks ({finish}, usage {usage.total_tokens})")
    check("".join(parts) == text, "streamed chat text equals the non-streamed text")
    check(usage is not None and usage.total_tokens == r.usage.total_tokens, "streamed usage equals non-streamed usage")

    c = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=a.max_tokens)
    ctext = c.choices[0].text
    print(f"completion:       {ctext!r} ({c.choices[0].finish_reason})")
    sparts = [ch.choices[0].text for ch in client.completions.create(
        model=model, prompt="The capital of France is", temperature=0, max_tokens=a.max_tokens, stream=True) if ch.choices]
    print(f"completion strm.: {''.join(sparts)!r} in {len(sparts)} chunks")
    check("".join(sparts) == ctext, "streamed completion text equals the non-streamed text")

    if len(text) > 4:
        stop = text[2:4]
        s = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=a.max_tokens, stop=[stop])
        print(f"chat stop {stop!r}:  {s.choices[0].message.content!r} ({s.choices[0].finish_reason})")
        check(s.choices[0].message.content == text[:text.index(stop)] and s.choices[0].finish_reason == "stop",
              "stop string cuts the text before it")

    try:
        client.chat.completions.create(model=model, messages=msgs, n=2)
        check(False, "n = 2 is refused")
    except openai.BadRequestError as e:
        print(f"n = 2:            BadRequestError {e.status_code}: {e.body['message'] if isinstance(e.body, dict) else e}")
        check(e.status_code == 400, "n = 2 is refused with 400")

    print("all checks passed" if not failures else f"{len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
