//! `host serve` under load and faults, on the tiny synthetic model: 64 concurrent streams each equal to its
//! result alone; clients that leave in the queue, during the prompt and during generation free their sequence
//! (seen in /metrics); the server is healthy afterwards.

#[path = "support/server.rs"]
mod server;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use server::*;

#[test]
fn sixty_four_concurrent_streams_match_their_results_alone() {
    let (model, tmpl) = tiny_model();
    let s = Server::start(
        &model,
        &["--chat-template", tmpl.to_str().unwrap(), "--parallel", "4", "--queue", "64", "--ctx-size", "256"],
    );
    let body = |i: usize, stream: bool| {
        json!({"messages": [{"role": "user", "content": format!("request number {i}: {}", "xyz".repeat(i % 7))}],
               "temperature": 0, "max_tokens": 16 + i % 5, "stream": stream})
    };
    // each alone, one after the other
    let alone: Vec<String> = (0..64)
        .map(|i| {
            let r = s.post("/v1/chat/completions", &body(i, false));
            assert_eq!(r.status, 200);
            r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    // all at once, streamed
    let t0 = Instant::now();
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let addr = s.addr.clone();
            let b = body(i, true);
            std::thread::spawn(move || {
                let r = request(
                    &addr,
                    "POST",
                    "/v1/chat/completions",
                    &[("Content-Type", "application/json")],
                    b.to_string().as_bytes(),
                );
                assert_eq!(r.status, 200, "{}", r.text());
                streamed_text(&r.text()).0
            })
        })
        .collect();
    let together: Vec<String> = handles.into_iter().map(|h| h.join().expect("a client thread failed")).collect();
    eprintln!("64 concurrent streams in {:.2} s", t0.elapsed().as_secs_f64());
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "request {i}: concurrent result differs from its result alone");
    }
    // a client has its [DONE] a moment before the engine books the sequence as free
    s.wait_metric("host_requests_total{endpoint=\"chat\",outcome=\"ok\"}", Duration::from_secs(5), |v| v == 128.0);
    s.wait_metric("host_sequences_busy", Duration::from_secs(5), |v| v == 0.0);
    assert_eq!(s.metric("host_queue_length"), 0.0);
}

/// Send a request and close the connection after `after`, without reading the answer.
fn send_and_leave(addr: &str, body: &Value, after: Duration) {
    let mut c = TcpStream::connect(addr).unwrap();
    let b = body.to_string();
    let head = format!("POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n");
    write!(c, "{head}Content-Length: {}\r\n\r\n{b}", b.len()).unwrap();
    std::thread::sleep(after);
    drop(c);
}

#[test]
fn clients_that_leave_free_their_sequence() {
    let (model, tmpl) = tiny_model();
    // 25 ms per step and 16-position prompt chunks: a 1500-token prompt takes ~2.3 s to read, generation 40 tok/s
    let s = Server::start(
        &model,
        &[
            "--chat-template",
            tmpl.to_str().unwrap(),
            "--parallel",
            "1",
            "--queue",
            "4",
            "--step-delay-ms",
            "25",
            "--prompt-chunk",
            "16",
            "--ctx-size",
            "2048",
        ],
    );
    let limit = Duration::from_millis(1500);
    let long_prompt = "the quick brown fox jumps over the lazy dog ".repeat(34); // 1496 bytes = tokens
    let cancelled = |phase: &str| s.metric(&format!("host_cancelled_total{{phase=\"{phase}\"}}"));

    // 1. streamed, gone during the prompt
    let body = json!({"prompt": long_prompt, "max_tokens": 8, "stream": true});
    let t0 = Instant::now();
    send_and_leave(&s.addr, &body, Duration::from_millis(300));
    s.wait_metric("host_sequences_busy", limit, |v| v == 0.0);
    assert!(t0.elapsed() < Duration::from_millis(1500), "the prompt was read to the end");
    assert_eq!(cancelled("prompt"), 1.0);

    // 2. not streamed, gone during the prompt: the dropped response future is noticed
    let body = json!({"prompt": long_prompt, "max_tokens": 8});
    send_and_leave(&s.addr, &body, Duration::from_millis(300));
    s.wait_metric("host_cancelled_total{phase=\"prompt\"}", limit, |v| v == 2.0);
    s.wait_metric("host_sequences_busy", limit, |v| v == 0.0);

    // 3. streamed, gone during generation after a few tokens
    let mut st = OpenStream::start(
        &s.addr,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 1000, "ignore_eos": true, "stream": true}),
    );
    let got = st.read_data_events(3);
    assert_eq!(got.len(), 3);
    assert_eq!(s.metric("host_sequences_busy"), 1.0);
    drop(st);
    s.wait_metric("host_cancelled_total{phase=\"generation\"}", limit, |v| v == 1.0);
    s.wait_metric("host_sequences_busy", limit, |v| v == 0.0);
    let generated = s.metric("host_generated_tokens_total");
    assert!(generated < 100.0, "{generated} tokens generated for a client that left after 3");

    // 4. gone while waiting in the queue: dropped when its turn comes, never computed
    let mut holder = OpenStream::start(
        &s.addr,
        "/v1/completions",
        &json!({"prompt": "hi", "max_tokens": 30, "ignore_eos": true, "stream": true}),
    );
    holder.read_data_events(1);
    send_and_leave(&s.addr, &json!({"prompt": long_prompt, "max_tokens": 8}), Duration::from_millis(100));
    assert_eq!(s.metric("host_queue_length"), 1.0);
    let rest = holder.read_data_events(1000);
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    s.wait_metric("host_cancelled_total{phase=\"queue\"}", limit, |v| v == 1.0);
    s.wait_metric("host_sequences_busy", limit, |v| v == 0.0);

    // still healthy and serving; the log has a line for each outcome
    assert_eq!(s.get("/health").status, 200);
    let r = s.post("/v1/completions", &json!({"prompt": "ok", "max_tokens": 3, "ignore_eos": true}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["usage"]["completion_tokens"], 3);
    let log = s.log_text();
    assert!(log.matches(", cancelled").count() >= 3, "{log}");
    assert!(log.contains("cancelled in the queue"), "{log}");
}

/// Concurrent requests on the CPU go through one forward call together (continuous batching): with four
/// requests open at once the batch reaches four sequences (`host_batch_sequences_max`, 1 while they ran one
/// after the other), and each streamed greedy answer, log-probabilities included, equals the same request alone.
fn check_batched_like_alone(model: &std::path::Path, extra: &[&str], prompts: &[&str]) {
    let mut args = vec!["--parallel", "4", "--queue", "8", "--prompt-chunk", "16", "--step-delay-ms", "5"];
    args.extend_from_slice(extra);
    let s = Server::start(model, &args);
    let body = |p: &str, stream: bool| {
        json!({"messages": [{"role": "user", "content": p}], "temperature": 0, "max_tokens": 40, "ignore_eos": true,
               "logprobs": true, "top_logprobs": 2, "stream": stream})
    };
    let alone: Vec<(String, Value)> = prompts
        .iter()
        .map(|p| {
            let r = s.post("/v1/chat/completions", &body(p, false));
            assert_eq!(r.status, 200, "{}", r.text());
            let c = &r.json()["choices"][0];
            (c["message"]["content"].as_str().unwrap().to_string(), c["logprobs"]["content"].clone())
        })
        .collect();
    assert_eq!(s.metric("host_batch_sequences_max"), 1.0, "one request at a time ran in a batch of several");
    let calls_alone = s.metric("host_forward_calls_total");

    // all open at once: each has sent a token before any can have finished (40 steps of >= 5 ms)
    let mut streams: Vec<OpenStream> =
        prompts.iter().map(|p| OpenStream::start(&s.addr, "/v1/chat/completions", &body(p, true))).collect();
    let mut events: Vec<Vec<String>> = streams.iter_mut().map(|st| st.read_data_events(2)).collect();
    for (ev, st) in events.iter_mut().zip(&mut streams) {
        ev.extend(st.read_data_events(10_000));
    }
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(ev.last().map(String::as_str), Some("[DONE]"), "request {i}");
        let chunks: Vec<Value> = ev[..ev.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
        let logprobs: Vec<Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
            .flatten()
            .cloned()
            .collect();
        assert_eq!(alone[i].1.as_array().map(Vec::len), Some(40), "request {i}: {}", alone[i].1);
        assert_eq!(text, alone[i].0, "request {i}: batched answer differs from its answer alone");
        assert_eq!(Value::Array(logprobs), alone[i].1, "request {i}: batched log-probabilities differ");
    }
    let max = s.metric("host_batch_sequences_max");
    assert_eq!(max, prompts.len() as f64, "the concurrent requests never shared a forward call");
    // together they took fewer forward calls than one after the other
    let calls_together = s.metric("host_forward_calls_total") - calls_alone;
    assert!(calls_together < calls_alone, "{calls_together} forward calls together, {calls_alone} alone");
    assert!(s.log_text().contains("continuous batching"), "{}", s.log_text());
}

#[test]
fn concurrent_requests_share_a_batch_and_match_alone_tiny() {
    let (model, tmpl) = tiny_model();
    let p = ["request number one", "two", "a somewhat longer third request, over one prompt chunk", "4"];
    check_batched_like_alone(&model, &["--chat-template", tmpl.to_str().unwrap()], &p);
}

#[test]
fn concurrent_requests_share_a_batch_and_match_alone_smollm2() {
    let Some(model) = smollm2_or_skip("concurrent_requests_share_a_batch_and_match_alone_smollm2") else { return };
    let p = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "List three prime numbers and explain why each of them is prime, in full sentences please.",
        "Hi",
    ];
    check_batched_like_alone(&model, &["--ctx-size", "512"], &p);
}
