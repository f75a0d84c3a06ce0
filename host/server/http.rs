//! The HTTP side of `host serve` (axum): routes, API key, body limit, CORS, the OpenAI response and stream
//! bodies, `/metrics`. Generation itself is the engine's: a handler turns the body into a `Job`, submits it and
//! turns the job's events into a JSON answer or an SSE stream. A client that goes away drops the handler future
//! (non-streamed) or the SSE body (streamed), and with it the job's event receiver: the engine sees that and
//! frees the sequence.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::server::api::{self, ApiError, CompletionRequest};
use crate::server::engine::{Engine, EngineInfo, Event, FailKind, Finish, Job, Rejected, Status, TokenLogprob};

/// What the handlers need besides the engine.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The model name `/v1/models` lists and responses carry.
    pub model_name: String,
    pub api_key: Option<String>,
    /// Allowed browser origins ("*": any); empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// Per-request limit, queueing included.
    pub timeout: Duration,
    pub log_prompts: bool,
    /// A chat template that replaces the model's.
    pub chat_template: Option<String>,
}

pub struct AppState {
    pub engine: Arc<Engine>,
    pub cfg: HttpConfig,
    pub prom: PrometheusHandle,
    next_id: AtomicU64,
    created: u64,
}

impl AppState {
    pub fn new(engine: Arc<Engine>, cfg: HttpConfig, prom: PrometheusHandle) -> AppState {
        AppState { engine, cfg, prom, next_id: AtomicU64::new(1), created: unix_now() }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The chat page: one static file, no build step, no CDN.
const CHAT_PAGE: &str = include_str!("chat.html");

pub fn router(state: Arc<AppState>) -> Router {
    let mut app = Router::new()
        .route("/", get(|| async { Html(CHAT_PAGE) }))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(|| async {
            error_response(&ApiError {
                status: 404,
                kind: "not_found_error",
                code: "not_found",
                message: "no such endpoint".into(),
            })
        })
        .layer(middleware::from_fn_with_state(state.clone(), check_api_key))
        .layer(DefaultBodyLimit::max(state.cfg.body_limit));
    if !state.cfg.cors_origins.is_empty() {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let origins = &state.cfg.cors_origins;
        let allow = if origins.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        app = app.layer(CorsLayer::new().allow_origin(allow).allow_methods(Any).allow_headers(Any));
    }
    app.with_state(state)
}

fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(e.body())).into_response()
}

/// `Authorization: Bearer KEY` on everything but the page and `/health` when `--api-key` is set.
async fn check_api_key(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(key) = &s.cfg.api_key else { return next.run(req).await };
    let path = req.uri().path();
    if path == "/" || path == "/health" || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => next.run(req).await,
        g => {
            metrics::counter!("host_requests_total", "endpoint" => "any", "outcome" => "unauthorized").increment(1);
            let message =
                if g.is_none() { "missing API key: send 'Authorization: Bearer KEY'" } else { "invalid API key" };
            error_response(&ApiError {
                status: 401,
                kind: "authentication_error",
                code: "invalid_api_key",
                message: message.into(),
            })
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    match s.engine.status() {
        Status::Ready(_) => (StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Status::Loading => error_response(&ApiError {
            status: 503,
            kind: "unavailable_error",
            code: "loading",
            message: "loading the model".into(),
        }),
        Status::Failed(m) => {
            error_response(&ApiError { status: 500, kind: "server_error", code: "load_failed", message: m })
        }
    }
}

async fn metrics_text(State(s): State<Arc<AppState>>) -> Response {
    metrics::gauge!("host_queue_length").set(s.engine.queued() as f64);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.prom.render()).into_response()
}

fn loading() -> ApiError {
    ApiError { status: 503, kind: "unavailable_error", code: "loading", message: "the model is still loading".into() }
}

fn ready(s: &AppState) -> Result<Arc<EngineInfo>, ApiError> {
    s.engine.info().ok_or_else(loading)
}

async fn models(State(s): State<Arc<AppState>>) -> Response {
    let meta =
        s.engine.info().map(|i| json!({"n_ctx_per_seq": i.ctx_size, "parallel": i.parallel, "n_vocab": i.n_vocab}));
    Json(json!({
        "object": "list",
        "data": [{"id": s.cfg.model_name, "object": "model", "created": s.created, "owned_by": "host", "meta": meta}],
    }))
    .into_response()
}

/// The JSON body, or a 400 (not JSON, wrong types) / 413 (over the limit) naming what is wrong.
fn parse_body<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|r| {
        let status = r.status().as_u16();
        if status == 413 {
            ApiError {
                status,
                kind: "invalid_request_error",
                code: "request_too_large",
                message: "the request body is larger than the server's limit (--body-limit)".into(),
            }
        } else {
            ApiError {
                status,
                kind: "invalid_request_error",
                code: "invalid_body",
                message: format!("cannot read the request body: {}", r.body_text()),
            }
        }
    })?;
    // trailing garbage is a syntax error too
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return Err(ApiError::bad_request(format!("the body is not valid JSON: {e}")));
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." || path.is_empty() { String::new() } else { format!("'{path}': ") };
        ApiError::bad_request(format!("invalid request: {at}{}", e.inner()))
    })
}

#[derive(Deserialize)]
struct TokenizeBody {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

/// llama-server's shape: `{"content", "add_special", "with_pieces"}` -> `{"tokens": [id | {"id", "piece"}]}`.
async fn tokenize(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = (|| {
        let b: TokenizeBody = parse_body(body)?;
        let info = ready(&s)?;
        let tok = &info.tokenizer;
        let ids = tok.encode(&b.content, b.add_special, true).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let tokens: Vec<Value> = if b.with_pieces {
            ids.iter()
                .map(|&id| {
                    let bytes = tok.token_bytes(id);
                    let piece = match std::str::from_utf8(bytes) {
                        Ok(t) => json!(t),
                        Err(_) => json!(bytes),
                    };
                    json!({"id": id, "piece": piece})
                })
                .collect()
        } else {
            ids.iter().map(|&id| json!(id)).collect()
        };
        Ok(json!({ "tokens": tokens }))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

#[derive(Deserialize)]
struct DetokenizeBody {
    tokens: Vec<u32>,
}

async fn detokenize(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let r = (|| {
        let b: DetokenizeBody = parse_body(body)?;
        let info = ready(&s)?;
        let n = info.tokenizer.vocab_size();
        if let Some(bad) = b.tokens.iter().find(|&&t| t as usize >= n) {
            return Err(ApiError::bad_request(format!("token {bad} is out of the vocabulary of {n}")));
        }
        Ok(json!({ "content": info.tokenizer.decode(&b.tokens) }))
    })();
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn chat_completions(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(s, body, true).await
}

async fn completions(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    complete(s, body, false).await
}

/// What every chunk and answer of one request repeats.
struct Reply {
    id: String,
    chat: bool,
    created: u64,
    model: String,
    include_usage: bool,
    info: Arc<EngineInfo>,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat, chunk) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    /// A stream chunk with one choice (`delta` for chat, `text` for completions).
    fn chunk(&self, text: Option<&str>, role: bool, finish: Option<&str>, logprobs: Value) -> Value {
        let choice = if self.chat {
            let mut delta = serde_json::Map::new();
            if role {
                delta.insert("role".into(), json!("assistant"));
            }
            if let Some(t) = text {
                delta.insert("content".into(), json!(t));
            }
            json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": text.unwrap_or(""), "logprobs": logprobs, "finish_reason": finish})
        };
        let mut v = json!({
            "id": self.id, "object": self.object(true), "created": self.created, "model": self.model,
            "system_fingerprint": FINGERPRINT, "choices": [choice],
        });
        if self.include_usage {
            v["usage"] = Value::Null;
        }
        v
    }

    fn logprobs(&self, lps: &[TokenLogprob], offset: usize) -> Value {
        let tok = &self.info.tokenizer;
        if self.chat {
            api::chat_logprobs(tok, lps)
        } else {
            api::completion_logprobs(tok, lps, offset)
        }
    }
}

const FINGERPRINT: &str = concat!("host-", env!("CARGO_PKG_VERSION"));

/// Validate, submit, answer.
async fn complete(s: Arc<AppState>, body: Result<Bytes, BytesRejection>, chat: bool) -> Response {
    let endpoint = if chat { "chat" } else { "completions" };
    let id_n = s.next_id.fetch_add(1, Ordering::Relaxed);
    let id = format!("{}-{id_n}", if chat { "chatcmpl" } else { "cmpl" });
    let received = Instant::now();
    // tokenizing and rendering the template are CPU work: off the async threads
    let (s2, id2) = (s.clone(), id.clone());
    let prepared = tokio::task::spawn_blocking(move || prepare(&s2, body, chat, &id2, received)).await;
    let prepared =
        prepared.unwrap_or_else(|e| Err(failure(format!("request preparation failed: {e}"), FailKind::Internal)));
    let (req, job, rx, info) = match prepared {
        Ok(p) => p,
        Err(e) => {
            let outcome = if e.status == 503 { "unavailable" } else { "invalid" };
            metrics::counter!("host_requests_total", "endpoint" => endpoint, "outcome" => outcome).increment(1);
            eprintln!("req {id} {endpoint}: {} {}", e.status, e.message);
            return error_response(&e);
        }
    };
    let n_prompt = job.prompt.len();
    if let Err(r) = s.engine.submit(job) {
        let e = match r {
            Rejected::Loading => loading(),
            Rejected::QueueFull(n) => ApiError {
                status: 503,
                kind: "server_error",
                code: "queue_full",
                message: format!(
                    "the server is busy: all sequences are in use and the queue of {n} requests is full; retry later"
                ),
            },
            Rejected::ShuttingDown => ApiError {
                status: 503,
                kind: "server_error",
                code: "shutting_down",
                message: "the server is shutting down".into(),
            },
        };
        metrics::counter!("host_requests_total", "endpoint" => endpoint, "outcome" => "rejected").increment(1);
        eprintln!("req {id} {endpoint}: prompt {n_prompt}, {} {}", e.status, e.message);
        return error_response(&e);
    }
    let reply = Reply {
        id,
        chat,
        created: unix_now(),
        model: req.model.clone().unwrap_or_else(|| s.cfg.model_name.clone()),
        include_usage: req.include_usage(),
        info,
    };
    if req.stream.unwrap_or(false) {
        stream(reply, rx).into_response()
    } else {
        collect(reply, rx).await
    }
}

type Prepared = (CompletionRequest, Job, UnboundedReceiver<Event>, Arc<EngineInfo>);

fn prepare(
    s: &AppState,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
    id: &str,
    received: Instant,
) -> Result<Prepared, ApiError> {
    let req: CompletionRequest = parse_body(body)?;
    let info = ready(s)?;
    req.check_n()?;
    let tok = &info.tokenizer;
    let prompt = if chat {
        let msgs = req.chat_messages()?;
        api::chat_prompt(tok, s.cfg.chat_template.as_deref(), &msgs)?
    } else {
        api::completion_prompt(tok, req.prompt.as_ref())?
    };
    if prompt.is_empty() {
        return Err(ApiError::bad_request("the prompt has no tokens"));
    }
    let ctx = info.ctx_size;
    if prompt.len() > ctx {
        return Err(ApiError {
            status: 400,
            kind: "invalid_request_error",
            code: "context_length_exceeded",
            message: format!(
                "the prompt has {} tokens, more than the {ctx} positions a sequence may hold (--ctx-size)",
                prompt.len()
            ),
        });
    }
    // a token is sampled after each evaluated position; the last one needs no position of its own
    let room = ctx - prompt.len() + 1;
    let max_tokens = req.max_tokens()?.map_or(room, |n| n.min(room));
    let params = req.sampling(info.n_vocab)?;
    let stop = req.stops()?;
    let logprobs = req.logprobs(chat)?;
    if s.cfg.log_prompts {
        eprintln!("req {id} prompt ({} tokens): {:?}", prompt.len(), tok.decode_with(&prompt, true));
    }
    let (tx, rx) = unbounded_channel();
    let job = Job {
        id: id.to_string(),
        endpoint: if chat { "chat" } else { "completions" },
        prompt,
        params,
        max_tokens,
        stop,
        ignore_eos: req.ignore_eos.unwrap_or(false),
        logprobs,
        received,
        deadline: Some(received + s.cfg.timeout),
        events: tx,
    };
    Ok((req, job, rx, info))
}

/// The error an accepted request ends with.
fn failure(message: String, kind: FailKind) -> ApiError {
    match kind {
        FailKind::Timeout => ApiError {
            status: 504,
            kind: "timeout_error",
            code: "timeout",
            message: format!("{message} (limit: --timeout)"),
        },
        FailKind::Shutdown => ApiError { status: 503, kind: "server_error", code: "shutting_down", message },
        FailKind::Internal => ApiError { status: 500, kind: "server_error", code: "internal_error", message },
    }
}

/// Non-streamed: wait for the whole generation. Dropping this future (the client left) drops `rx`.
async fn collect(reply: Reply, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut lps = Vec::new();
    let finish: Finish = loop {
        match rx.recv().await {
            Some(Event::Token { text: t, logprob, .. }) => {
                text.push_str(&t);
                lps.extend(logprob);
            }
            Some(Event::Done(f)) => break f,
            Some(Event::Failed { message, kind }) => return error_response(&failure(message, kind)),
            None => return error_response(&failure("the engine stopped".into(), FailKind::Internal)),
        }
    };
    let logprobs = if lps.is_empty() { Value::Null } else { reply.logprobs(&lps, 0) };
    let finish_reason = api::finish_str(finish.reason);
    let choice = if reply.chat {
        let message = json!({"role": "assistant", "content": text});
        json!({"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason})
    } else {
        json!({"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason})
    };
    Json(json!({
        "id": reply.id, "object": reply.object(false), "created": reply.created, "model": reply.model,
        "system_fingerprint": FINGERPRINT, "choices": [choice],
        "usage": api::usage(finish.prompt_tokens, finish.cached_tokens, finish.completion_tokens),
    }))
    .into_response()
}

struct StreamState {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    out: VecDeque<SseEvent>,
    finished: bool,
    /// Characters sent so far (completions' text_offset).
    offset: usize,
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

/// Streamed: `data: {chunk}` events, a last chunk with `finish_reason`, the usage chunk when asked for, then
/// `data: [DONE]`. An error after the stream started is a `data: {"error": ...}` event, then `[DONE]`.
fn stream(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
) -> Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>> {
    let mut out = VecDeque::new();
    if reply.chat {
        out.push_back(data(&reply.chunk(Some(""), true, None, Value::Null)));
    }
    let st = StreamState { reply, rx, out, finished: false, offset: 0 };
    let events = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.out.pop_front() {
                return Some((Ok(e), st));
            }
            if st.finished {
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Token { text, logprob, .. }) => {
                    if text.is_empty() && logprob.is_none() {
                        continue;
                    }
                    let lps = logprob.map_or(Value::Null, |lp| st.reply.logprobs(&[lp], st.offset));
                    st.offset += text.chars().count();
                    st.out.push_back(data(&st.reply.chunk(Some(&text), false, None, lps)));
                }
                Some(Event::Done(f)) => {
                    let finish = api::finish_str(f.reason);
                    let last = if st.reply.chat {
                        st.reply.chunk(None, false, Some(finish), Value::Null)
                    } else {
                        st.reply.chunk(Some(""), false, Some(finish), Value::Null)
                    };
                    st.out.push_back(data(&last));
                    if st.reply.include_usage {
                        let mut u = st.reply.chunk(None, false, None, Value::Null);
                        u["choices"] = json!([]);
                        u["usage"] = api::usage(f.prompt_tokens, f.cached_tokens, f.completion_tokens);
                        st.out.push_back(data(&u));
                    }
                    st.out.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
                Some(Event::Failed { message, kind }) => {
                    st.out.push_back(data(&failure(message, kind).body()));
                    st.out.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
                None => {
                    st.out.push_back(data(&failure("the engine stopped".into(), FailKind::Internal).body()));
                    st.out.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
