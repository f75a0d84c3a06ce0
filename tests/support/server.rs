//! Helpers for the `host serve` tests: start the real binary on an ephemeral port, a raw HTTP/1.1 client over
//! std's TcpStream (so the wire format is checked byte for byte), SSE parsing, the test models.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_host");

/// A chat template for the tiny synthetic model (it has none).
pub const TINY_TEMPLATE: &str = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}\
                                 {% if add_generation_prompt %}<|assistant|>{% endif %}";

/// A running `host serve`; killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
    /// Every stderr line so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Start `host serve MODEL --port 0 ARGS...` and wait until /health says ok.
    pub fn start(model: &Path, args: &[&str]) -> Server {
        Self::start_env(model, args, &[])
    }

    pub fn start_env(model: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg(model).args(["--port", "0", "--threads", "2"]);
        // the CPU unless the test asks for a device (the tests compare against CPU runs)
        if !args.contains(&"--device") {
            cmd.args(["--device", "cpu"]);
        }
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("HOST_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn host serve");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(a.to_string());
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("host serve did not print its address; log:\n{}", log.lock().unwrap().join("\n"));
            }
        };
        let s = Server { child, addr, log };
        s.wait_healthy(Duration::from_secs(60));
        s
    }

    pub fn wait_healthy(&self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = try_request(&self.addr, "GET", "/health", &[], b"") {
                if r.status == 200 {
                    return;
                }
            }
            assert!(t0.elapsed() < limit, "not healthy after {limit:?}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        request(&self.addr, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes())
    }

    /// The value of a metric line (`name{labels} value`) from /metrics; 0 when absent.
    pub fn metric(&self, name_and_labels: &str) -> f64 {
        metric_of(&self.get("/metrics").text(), name_and_labels)
    }

    /// Poll /metrics until `pred(value)` holds for the metric; panics after `limit`.
    pub fn wait_metric(&self, name: &str, limit: Duration, pred: impl Fn(f64) -> bool) -> f64 {
        let t0 = Instant::now();
        loop {
            let v = self.metric(name);
            if pred(v) {
                return v;
            }
            assert!(t0.elapsed() < limit, "metric {name} = {v} after {limit:?}\n{}", self.get("/metrics").text());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `name_and_labels` (exact match of the text before the value) in a Prometheus text page.
pub fn metric_of(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, chunked transfer decoded.
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request on a fresh connection (`Connection: close`), the whole answer read.
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(status_line))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(rest).ok_or_else(|| bad("bad chunked body"))? } else { rest.to_vec() };
    Ok(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The `data:` payloads of an SSE body, checking the framing: every event is `data: ...` lines ended by a
/// blank line (comment lines starting with ':' allowed).
pub fn sse_events(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "SSE body does not end with a blank line: {body:?}");
    body.split("\n\n")
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let data: Vec<&str> = e
                .lines()
                .filter(|l| !l.starts_with(':'))
                .map(|l| l.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data line: {l:?} in {body:?}")))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// Concatenated text of a streamed chat or completion (checks `[DONE]` comes last, once).
pub fn streamed_text(body: &str) -> (String, Vec<serde_json::Value>) {
    let ev = sse_events(body);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "stream does not end with [DONE]: {body}");
    assert_eq!(ev.iter().filter(|e| *e == "[DONE]").count(), 1);
    let chunks: Vec<serde_json::Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("bad chunk {e}")))
        .collect();
    let mut text = String::new();
    for c in &chunks {
        assert!(c.get("error").is_none(), "error event: {c}");
        for ch in c["choices"].as_array().unwrap() {
            if let Some(t) = ch["delta"]["content"].as_str() {
                text += t;
            }
            if let Some(t) = ch["text"].as_str() {
                text += t;
            }
        }
    }
    (text, chunks)
}

/// A streamed request read incrementally: the connection stays open until dropped.
pub struct OpenStream {
    pub reader: BufReader<TcpStream>,
}

impl OpenStream {
    /// Send the request and read the status line and headers; panics unless 200.
    pub fn start(addr: &str, path: &str, body: &serde_json::Value) -> OpenStream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.to_string();
        let head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
        write!(s, "{head}Content-Length: {}\r\n\r\n{body}", body.len())
            .unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
        }
        OpenStream { reader }
    }

    /// Read until `n` `data:` events have arrived or `[DONE]` (chunk framing lines are skipped).
    pub fn read_data_events(&mut self, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let mut line = String::new();
        while got.len() < n {
            line.clear();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if let Some(d) = line.trim_end().strip_prefix("data: ") {
                got.push(d.to_string());
                if d == "[DONE]" {
                    break;
                }
            }
        }
        got
    }
}

/// The tiny synthetic model and its chat template, written once per test binary into a temp folder.
pub fn tiny_model() -> (PathBuf, PathBuf) {
    static ONCE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("host-serve-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let model = dir.join("tiny.gguf");
        let st = Command::new(BIN)
            .args(["synth"])
            .arg(&model)
            .args(["--preset", "tiny", "--type", "Q8_0", "--seed", "3"])
            .output()
            .unwrap();
        assert!(st.status.success(), "synth: {}", String::from_utf8_lossy(&st.stderr));
        let tmpl = dir.join("chat.jinja");
        std::fs::write(&tmpl, TINY_TEMPLATE).unwrap();
        (model, tmpl)
    })
    .clone()
}

/// SmolLM2 when scripts/fetch-models.sh got it, else None after printing why the test skips.
pub fn smollm2_or_skip(test: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.is_file() {
        Some(p)
    } else {
        eprintln!("skipping {test}: {} is absent (scripts/fetch-models.sh smollm2)", p.display());
        None
    }
}
