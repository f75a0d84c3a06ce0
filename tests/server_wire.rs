//! `host serve` on the wire, checked with a raw HTTP/1.1 client: SSE framing and `[DONE]`, content types, the
//! OpenAI error bodies and status codes (400, 401, 404, 413, 503, 504), /metrics, /tokenize, prefix reuse
//! (bit-identical to a cold run), the configuration sources and a graceful SIGTERM.

#[path = "support/server.rs"]
mod server;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::*;

fn error_of(r: &Response) -> (String, String) {
    let j = r.json();
    let e = &j["error"];
    assert!(e["message"].is_string() && e["type"].is_string() && e.get("code").is_some(), "not an OpenAI error: {j}");
    (e["type"].as_str().unwrap().to_string(), e["message"].as_str().unwrap().to_string())
}

#[test]
fn wire_format_errors_and_auth() {
    let (model, tmpl) = tiny_model();
    let key = "sk-test-123";
    let t = tmpl.to_str().unwrap();
    let s =
        Server::start(&model, &["--chat-template", t, "--api-key", key, "--ctx-size", "96", "--body-limit", "4096"]);
    let addr = s.addr.clone();
    let auth = format!("Bearer {key}");
    let post = |path: &str, body: &[u8]| {
        request(&addr, "POST", path, &[("Authorization", auth.as_str()), ("Content-Type", "application/json")], body)
    };

    // open endpoints: the page and /health
    let page = s.get("/");
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(page.text().contains("/v1/chat/completions"));
    assert_eq!(s.get("/health").json()["status"], "ok");

    // 401: no key, a wrong key
    let chat = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let r = s.post("/v1/chat/completions", &chat);
    assert_eq!(r.status, 401);
    assert_eq!(error_of(&r).0, "authentication_error");
    let r = request(
        &addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", "Bearer sk-wrong")],
        chat.to_string().as_bytes(),
    );
    assert_eq!(r.status, 401);
    assert!(error_of(&r).1.contains("invalid API key"));
    assert_eq!(s.get("/v1/models").status, 401);

    // models
    let r = request(&addr, "GET", "/v1/models", &[("Authorization", auth.as_str())], b"");
    assert_eq!(r.status, 200);
    let m = r.json();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "tiny");
    assert_eq!(m["data"][0]["meta"]["n_ctx_per_seq"], 96);

    // 404 as JSON
    let r = request(&addr, "GET", "/v1/nothing", &[("Authorization", auth.as_str())], b"");
    assert_eq!(r.status, 404);
    assert_eq!(error_of(&r).0, "not_found_error");

    // 400: malformed JSON, a wrong type (named), n = 2, a prompt longer than a sequence (both numbers)
    let r = post("/v1/chat/completions", b"{\"messages\": [");
    assert_eq!(r.status, 400);
    assert!(error_of(&r).1.contains("not valid JSON"), "{}", r.text());
    let r = post("/v1/completions", json!({"prompt": "x", "max_tokens": "ten"}).to_string().as_bytes());
    assert_eq!(r.status, 400);
    let (ty, msg) = error_of(&r);
    assert_eq!(ty, "invalid_request_error");
    assert!(msg.contains("max_tokens"), "{msg}");
    let r = post("/v1/completions", json!({"prompt": "x", "n": 2}).to_string().as_bytes());
    assert_eq!(r.status, 400);
    assert!(error_of(&r).1.contains("n = 2"));
    let r = post("/v1/completions", json!({"prompt": "x", "temperature": 7}).to_string().as_bytes());
    assert_eq!(r.status, 400);
    let long = "a".repeat(150);
    let n_long = post("/tokenize", json!({"content": long, "add_special": true}).to_string().as_bytes()).json()
        ["tokens"]
        .as_array()
        .unwrap()
        .len();
    assert!(n_long > 96);
    let r = post("/v1/completions", json!({"prompt": long}).to_string().as_bytes());
    assert_eq!(r.status, 400);
    let (_, msg) = error_of(&r);
    assert!(msg.contains(&n_long.to_string()) && msg.contains("96"), "{msg}");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");

    // 413: over --body-limit
    let big = json!({"prompt": "b".repeat(8000)}).to_string();
    let r = post("/v1/completions", big.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(error_of(&r).1.contains("limit"));

    // streamed: SSE framing, one id, role first, finish_reason, the usage chunk, [DONE]; same text as not streamed
    let body = json!({"messages": [{"role": "user", "content": "Say something"}], "temperature": 0, "max_tokens": 12,
                      "stream": true, "stream_options": {"include_usage": true}});
    let r = post("/v1/chat/completions", body.to_string().as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let (text, chunks) = streamed_text(&r.text());
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(chunks.iter().all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let u = &last["usage"];
    assert_eq!(u["completion_tokens"], 12);
    assert_eq!(u["prompt_tokens"].as_u64().unwrap() + 12, u["total_tokens"].as_u64().unwrap());
    let fin = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(fin["finish_reason"], "length");
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let r = post("/v1/chat/completions", plain.to_string().as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(j["choices"][0]["message"]["content"].as_str().unwrap(), text);
    assert_eq!(j["usage"]["total_tokens"], u["total_tokens"]);

    // completions stream without usage: no usage chunk, chunks carry `text`
    let r = post(
        "/v1/completions",
        json!({"prompt": "abc", "temperature": 0, "max_tokens": 5, "stream": true}).to_string().as_bytes(),
    );
    let (ctext, chunks) = streamed_text(&r.text());
    assert!(chunks.iter().all(|c| c["object"] == "text_completion" && c.get("usage").is_none()));
    let r = post("/v1/completions", json!({"prompt": "abc", "temperature": 0, "max_tokens": 5}).to_string().as_bytes());
    assert_eq!(r.json()["choices"][0]["text"].as_str().unwrap(), ctext);

    // tokenize / detokenize (llama-server's shapes)
    let r = post("/tokenize", json!({"content": "hello", "with_pieces": true}).to_string().as_bytes());
    let toks = r.json()["tokens"].as_array().unwrap().clone();
    assert_eq!(toks.iter().map(|t| t["piece"].as_str().unwrap()).collect::<String>(), "hello");
    let ids: Vec<Value> = toks.iter().map(|t| t["id"].clone()).collect();
    let r = post("/detokenize", json!({ "tokens": ids }).to_string().as_bytes());
    assert_eq!(r.json()["content"], "hello");

    // metrics (behind the key)
    let r = request(&addr, "GET", "/metrics", &[("Authorization", auth.as_str())], b"");
    assert_eq!(r.status, 200);
    let page = r.text();
    for name in [
        "host_requests_total{endpoint=\"chat\",outcome=\"ok\"}",
        "host_requests_total{endpoint=\"completions\",outcome=\"invalid\"}",
        "host_requests_total{endpoint=\"any\",outcome=\"unauthorized\"}",
        "host_generated_tokens_total",
        "host_prompt_tokens_total",
        "host_time_to_first_token_seconds_count",
        "host_inter_token_latency_seconds_count",
        "host_kv_positions_total",
        "host_sequences_total",
    ] {
        assert!(metric_of(&page, name) > 0.0, "{name} missing or 0 in\n{page}");
    }
    assert!(page.contains("host_time_to_first_token_seconds_bucket{le=\"0.1\"}"), "{page}");
    assert_eq!(metric_of(&page, "host_requests_total{endpoint=\"chat\",outcome=\"ok\"}"), 2.0);
    assert_eq!(metric_of(&page, "host_kv_positions_total"), 4.0 * 96.0);
    s.wait_metric("host_sequences_busy", Duration::from_secs(5), |v| v == 0.0);
    // CORS is off by default
    let r = request(&addr, "GET", "/health", &[("Origin", "http://site.test")], b"");
    assert!(r.header("access-control-allow-origin").is_none());
    // the log has one line per request and no prompt text
    let log = s.log_text();
    assert!(log.contains("generated 12"), "{log}");
    assert!(!log.contains("Say something"), "the prompt text was logged without --log-prompts");
}

#[test]
fn queue_full_is_503_and_timeout_is_504() {
    let (model, tmpl) = tiny_model();
    let t = tmpl.to_str().unwrap();
    // one sequence, one waiting place, 20 ms per step: a 64-token answer holds the sequence for over a second
    let s = Server::start(
        &model,
        &["--chat-template", t, "--parallel", "1", "--queue", "1", "--step-delay-ms", "20", "--timeout", "6"],
    );
    let long = json!({"prompt": "a", "max_tokens": 64, "ignore_eos": true, "stream": true});
    let mut first = OpenStream::start(&s.addr, "/v1/completions", &long);
    first.read_data_events(1);
    assert_eq!(s.metric("host_sequences_busy"), 1.0);
    let mut second = OpenStream::start(&s.addr, "/v1/completions", &long);
    s.wait_metric("host_queue_length", Duration::from_secs(5), |v| v == 1.0);
    let t0 = Instant::now();
    let r = s.post("/v1/completions", &json!({"prompt": "a", "max_tokens": 2}));
    assert!(t0.elapsed() < Duration::from_secs(1), "a full queue must answer at once");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "queue_full");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("queue"));
    // both accepted streams still complete
    let a = first.read_data_events(1000);
    assert_eq!(a.last().map(String::as_str), Some("[DONE]"));
    let b = second.read_data_events(1000);
    assert_eq!(b.last().map(String::as_str), Some("[DONE]"));

    // a request that cannot finish in --timeout 6 s (400 steps of 20 ms; the 6 s leave the queued stream above
    // room on a loaded machine): 504, and the sequence is free again
    let t0 = Instant::now();
    let r = s.post("/v1/completions", &json!({"prompt": "a", "max_tokens": 400, "ignore_eos": true}));
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "timeout_error");
    assert!(t0.elapsed() < Duration::from_secs(8));
    s.wait_metric("host_sequences_busy", Duration::from_secs(2), |v| v == 0.0);
    assert_eq!(s.metric("host_requests_total{endpoint=\"completions\",outcome=\"timeout\"}"), 1.0);
    // streamed: tokens, then an error event, then [DONE], then the stream closes
    let r = s.post("/v1/completions", &json!({"prompt": "a", "max_tokens": 400, "ignore_eos": true, "stream": true}));
    assert_eq!(r.status, 200);
    let ev = sse_events(&r.text());
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let err: Value = serde_json::from_str(&ev[ev.len() - 2]).unwrap();
    assert_eq!(err["error"]["type"], "timeout_error", "{err}");
    assert!(ev.len() > 3, "no tokens before the timeout");
}

/// A follow-up turn reuses the cached prompt of the earlier one and gives the same greedy tokens, bit-identical
/// log-probabilities included, as the same request on a cold sequence.
fn check_prefix_reuse(model: &std::path::Path, extra: &[&str]) {
    let mut args = vec!["--parallel", "1", "--prompt-chunk", "16"];
    args.extend_from_slice(extra);
    let s = Server::start(model, &args);
    let ask = |msgs: &Value| {
        let r = s.post(
            "/v1/chat/completions",
            &json!({"messages": msgs, "temperature": 0, "max_tokens": 24, "logprobs": true, "top_logprobs": 3}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let turn1 = json!([{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": "What is the capital of France? Answer in one sentence."}]);
    let r1 = ask(&turn1);
    let reply1 = r1["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let mut turn2 = turn1.as_array().unwrap().clone();
    turn2.push(json!({"role": "assistant", "content": reply1}));
    turn2.push(json!({"role": "user", "content": "And the capital of Germany?"}));
    let turn2 = Value::Array(turn2);
    let warm = ask(&turn2);
    let cached = warm["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    let p1 = r1["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(cached >= 16 && cached <= p1, "cached {cached} of a first prompt of {p1}");
    // evict: an unrelated prompt takes the only sequence
    ask(&json!([{"role": "user", "content": "Zebra stripes?"}]));
    let cold = ask(&turn2);
    assert_eq!(cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(warm["choices"][0]["message"], cold["choices"][0]["message"]);
    assert_eq!(warm["choices"][0]["logprobs"], cold["choices"][0]["logprobs"], "log-probabilities differ");
    assert_eq!(warm["usage"]["prompt_tokens"], cold["usage"]["prompt_tokens"]);
    assert!(s.metric("host_prompt_tokens_cached_total") >= cached as f64);
    // without log-probabilities the backend picks the greedy tokens (`decode_greedy`) instead of the host sampler
    // reading each row of logits: the same reply
    let r = s.post("/v1/chat/completions", &json!({"messages": turn2, "temperature": 0, "max_tokens": 24}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"], cold["choices"][0]["message"], "backend argmax and host sampler differ");
}

#[test]
fn prefix_reuse_matches_a_cold_run_tiny() {
    let (model, tmpl) = tiny_model();
    check_prefix_reuse(&model, &["--chat-template", tmpl.to_str().unwrap()]);
}

#[test]
fn prefix_reuse_matches_a_cold_run_smollm2() {
    let Some(model) = smollm2_or_skip("prefix_reuse_matches_a_cold_run_smollm2") else { return };
    check_prefix_reuse(&model, &["--ctx-size", "512"]);
}

/// On a CUDA device (skips without one): the batched worker (`CudaBatchForward`, 4 sequences by default), streamed
/// equals non-streamed, prefix reuse bit-identical to a cold run as on the CPU (whole aligned chunks: the same
/// rows go through the same kernels).
#[test]
fn gpu_serve_smoke() {
    if let Err(why) = host::backend::cuda::availability() {
        eprintln!("skipping gpu_serve_smoke: {why}");
        return;
    }
    let Some(model) = smollm2_or_skip("gpu_serve_smoke") else { return };
    check_prefix_reuse(&model, &["--device", "cuda", "--ctx-size", "512"]);
    let s = Server::start(&model, &["--device", "cuda", "--ctx-size", "512"]);
    assert_eq!(s.get("/v1/models").json()["data"][0]["meta"]["parallel"], 4);
    let msgs = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let body = json!({"messages": msgs, "temperature": 0, "max_tokens": 32});
    let plain = s.post("/v1/chat/completions", &body).json();
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let (text, _) = streamed_text(&s.post("/v1/chat/completions", &sb).text());
    assert_eq!(plain["choices"][0]["message"]["content"].as_str().unwrap(), text);
}

#[test]
fn config_file_env_and_flags_in_that_order() {
    let (model, tmpl) = tiny_model();
    let dir = model.parent().unwrap();
    let cfg = dir.join("serve.toml");
    let toml = "parallel = 2\nqueue = 5\nalias = \"from-file\"\nctx_size = 80\n\
                cors_origin = [\"http://allowed.test\"]\n";
    std::fs::write(&cfg, format!("{toml}chat_template = {tmpl:?}\n")).unwrap();
    let c = cfg.to_str().unwrap();
    let s = Server::start_env(
        &model,
        &["--config", c, "--alias", "from-flag"],
        &[("HOST_QUEUE", "7"), ("HOST_ALIAS", "from-env")],
    );
    let m = s.get("/v1/models").json();
    assert_eq!(m["data"][0]["id"], "from-flag"); // flag > env
    assert_eq!(m["data"][0]["meta"]["parallel"], 2); // file
    assert_eq!(m["data"][0]["meta"]["n_ctx_per_seq"], 80);
    // CORS from the file: the allowed origin gets the header, another one does not
    let cors = |origin: &str| {
        let r = request(&s.addr, "GET", "/v1/models", &[("Origin", origin)], b"");
        r.header("access-control-allow-origin").map(str::to_string)
    };
    assert_eq!(cors("http://allowed.test").as_deref(), Some("http://allowed.test"));
    assert_eq!(cors("http://other.test"), None);
    let log = s.log_text();
    assert!(log.contains("queue = 7"), "env over file:\n{log}");
    assert!(log.contains("each may hold 80 positions"), "{log}");
    assert!(log.contains("host = \"127.0.0.1\""), "{log}");
    drop(s);

    // an unknown key is refused by name
    std::fs::write(&cfg, "paralel = 2\n").unwrap();
    let out = std::process::Command::new(BIN).args(["serve"]).arg(&model).args(["--config", c]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("paralel"));
}

#[test]
fn sigterm_finishes_running_requests_and_exits_0() {
    let (model, tmpl) = tiny_model();
    let t = tmpl.to_str().unwrap();
    let mut s = Server::start(&model, &["--chat-template", t, "--step-delay-ms", "10", "--shutdown-grace", "5"]);
    let mut stream = OpenStream::start(
        &s.addr,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 40, "ignore_eos": true, "stream": true}),
    );
    stream.read_data_events(2);
    let pid = s.child.id().to_string();
    let t0 = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // the running request completes normally
    let rest = stream.read_data_events(1000);
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    let fin: Value = serde_json::from_str(&rest[rest.len() - 2]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status:?}\n{}", s.log_text());
    assert!(try_request(&s.addr, "GET", "/health", &[], b"").is_err(), "still accepting after shutdown");
}
