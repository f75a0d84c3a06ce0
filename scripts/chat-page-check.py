#!/usr/bin/env python3
"""Drive the chat page of `host serve` in headless Chromium and report what it shows.

Usage: scripts/chat-page-check.py BASE_URL [--message TEXT]... [--api-key K] [--max-tokens N] [--screenshot OUT.png]
                                  [--timeout S]

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages ended by NUL
on file descriptors 3 and 4), so nothing beyond the Python standard library is needed. For each message the
script types it into the page's text box with temperature 0 and --max-tokens, clicks Send, and polls the DOM every 20 ms until
the page says the reply is done, counting how many different partial replies it saw on the way (a streamed
reply grows in several steps). It prints one JSON object: per turn the reply text, the page's statistics line
and the number of partial states seen, and the conversation the page keeps. Exit status 0 when every turn
finished, 1 otherwise, 2 when no Chromium was found.
"""

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
]


def find_chromium():
    for name in [os.environ.get("CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"]:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class Cdp:
    """DevTools protocol over the two pipes Chromium reads (fd 3) and writes (fd 4)."""

    def __init__(self, exe, user_dir):
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        # the child sees our pipe ends as its fds 3 and 4
        def setup():
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)
        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={user_dir}", "about:blank"],
            preexec_fn=setup, pass_fds=(3, 4),  # kept open after preexec_fn put the pipes there
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buf = b""
        self.next_id = 0

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_chrome, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base_url")
    ap.add_argument("--message", action="append", default=[])
    ap.add_argument("--api-key", default="")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--screenshot")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    messages = a.message or ["What is the capital of France?"]
    exe = find_chromium()
    if exe is None:
        print("no chromium found (set CHROMIUM or install the Debian package chromium)", file=sys.stderr)
        return 2
    user_dir = tempfile.mkdtemp(prefix="chat-page-")
    cdp = Cdp(exe, user_dir)
    result = {"turns": []}
    ok = True
    try:
        target = cdp.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = cdp.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        cdp.call("Emulation.setDeviceMetricsOverride", {"width": 900, "height": 640, "deviceScaleFactor": 1, "mobile": False}, s)
        cdp.call("Page.navigate", {"url": a.base_url.rstrip("/") + "/"}, s)

        def js(expr):
            r = cdp.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, s)
            if "exceptionDetails" in r:
                raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
            return r["result"].get("value")

        deadline = time.time() + a.timeout
        while js("document.readyState") != "complete" or js("typeof send") != "function":
            if time.time() > deadline:
                raise RuntimeError("the page did not load")
            time.sleep(0.05)
        js(f"document.getElementById('temperature').value = '0'; document.getElementById('max_tokens').value = '{a.max_tokens}'; "
           f"document.getElementById('key').value = {json.dumps(a.api_key)}")
        for m in messages:
            n_before = js("document.querySelectorAll('.msg.assistant').length")
            js(f"document.getElementById('input').value = {json.dumps(m)}; document.getElementById('send').click()")
            seen = set()
            state = None
            while time.time() < deadline:
                state = js("document.body.dataset.state")
                text = js("(() => { const b = document.querySelectorAll('.msg.assistant'); "
                          f"return b.length > {n_before} ? b[b.length - 1].firstChild?.textContent || '' : '' }})()")
                if text and state == "busy":
                    seen.add(text)
                if state in ("done", "error"):
                    break
                time.sleep(0.02)
            reply = js("messages.length && messages[messages.length - 1].role === 'assistant' ? messages[messages.length - 1].content : null")
            stats = js("document.getElementById('last-stats') && document.getElementById('last-stats').textContent")
            error = js("(document.querySelector('.msg.error') || {}).textContent || null")
            result["turns"].append({"message": m, "state": state, "reply": reply, "stats": stats, "partials": len(seen), "error": error})
            ok = ok and state == "done"
        result["conversation"] = js("messages")
        if a.screenshot:
            png = cdp.call("Page.captureScreenshot", {"format": "png"}, s)["data"]
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(png))
            result["screenshot"] = a.screenshot
    finally:
        cdp.close()
        shutil.rmtree(user_dir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
