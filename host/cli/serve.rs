//! `host serve`: the OpenAI-compatible HTTP server (see `crate::server`).
//!
//! Configuration comes from three places, the first that sets a value wins: command-line flags, `HOST_*`
//! environment variables (clap's `env`), the TOML file of `--config` (keys as the flags, `-` written `_`), then
//! the defaults. The effective configuration is printed at start in the config file's format.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

use crate::backend::Device;
use crate::cli::DeviceArg;
use crate::kv_cache::CacheType;
use crate::server::engine::{Engine, EngineConfig, Status, DEFAULT_CTX_CAP};
use crate::server::http::{self, AppState, HttpConfig};
use crate::{Error, Result};

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// Path to a .gguf model file.
    #[arg(env = "HOST_MODEL")]
    pub model: Option<PathBuf>,
    /// A TOML file with any of these settings (flags and HOST_* variables override it).
    #[arg(long, env = "HOST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "HOST_HOST")]
    pub host: Option<String>,
    /// Port to listen on (0: any free one, printed at start) [default: 8080].
    #[arg(long, env = "HOST_PORT")]
    pub port: Option<u16>,
    /// Sequences served at once (batched together on the CPU), each may hold --ctx-size positions [default: 4; 1 on
    /// a GPU].
    #[arg(long, env = "HOST_PARALLEL")]
    pub parallel: Option<usize>,
    /// Requests that may wait for a free sequence; more get 503 [default: 64].
    #[arg(long, env = "HOST_QUEUE")]
    pub queue: Option<usize>,
    /// Positions (prompt + answer) each sequence may hold [default: the model's context, capped at 4096].
    #[arg(short, long, env = "HOST_CTX_SIZE")]
    pub ctx_size: Option<usize>,
    /// KV cache element type [default: f16].
    #[arg(long, value_enum, env = "HOST_CACHE_TYPE")]
    pub cache_type: Option<CacheType>,
    /// Where to compute [default: auto].
    #[arg(long, value_enum, env = "HOST_DEVICE")]
    pub device: Option<DeviceArg>,
    /// CPU threads [default: all cores].
    #[arg(short, long, env = "HOST_THREADS")]
    pub threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` (all endpoints but / and /health).
    #[arg(long, env = "HOST_API_KEY")]
    pub api_key: Option<String>,
    /// Allow browser requests from this origin ("*": any); repeatable [default: none, CORS off].
    #[arg(long, env = "HOST_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origin: Vec<String>,
    /// Largest request body in bytes [default: 2 MiB].
    #[arg(long, env = "HOST_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Seconds a request may take, waiting in the queue included [default: 600].
    #[arg(long, env = "HOST_TIMEOUT")]
    pub timeout: Option<f64>,
    /// Log each request's prompt text (off: only ids, counts and timings are logged).
    #[arg(long, env = "HOST_LOG_PROMPTS")]
    pub log_prompts: bool,
    /// A Jinja chat template file that replaces the model's (needed when the model has none).
    #[arg(long, env = "HOST_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,
    /// The model name /v1/models lists [default: the file name without .gguf].
    #[arg(long, env = "HOST_ALIAS")]
    pub alias: Option<String>,
    /// Prompt positions per forward call; a client that leaves is noticed between chunks [default: 64].
    #[arg(long, env = "HOST_PROMPT_CHUNK")]
    pub prompt_chunk: Option<usize>,
    /// Seconds running requests may take to finish after SIGTERM / Ctrl-C before they are cancelled
    /// [default: 10].
    #[arg(long, env = "HOST_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<f64>,
    /// Testing: sleep this many milliseconds before every prompt chunk and token.
    #[arg(long, env = "HOST_STEP_DELAY_MS", hide = true)]
    pub step_delay_ms: Option<u64>,
}

/// The `--config` file: the same settings, unknown keys refused.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
    parallel: Option<usize>,
    queue: Option<usize>,
    ctx_size: Option<usize>,
    cache_type: Option<String>,
    device: Option<String>,
    threads: Option<usize>,
    api_key: Option<String>,
    cors_origin: Option<Vec<String>>,
    body_limit: Option<usize>,
    timeout: Option<f64>,
    log_prompts: Option<bool>,
    chat_template: Option<PathBuf>,
    alias: Option<String>,
    prompt_chunk: Option<usize>,
    shutdown_grace: Option<f64>,
    step_delay_ms: Option<u64>,
}

/// Everything resolved.
#[derive(Debug, Clone)]
struct Effective {
    model: PathBuf,
    host: String,
    port: u16,
    parallel: usize,
    queue: usize,
    ctx_size: usize,
    cache_type: CacheType,
    device: DeviceArg,
    threads: Option<usize>,
    api_key: Option<String>,
    cors_origin: Vec<String>,
    body_limit: usize,
    timeout: f64,
    log_prompts: bool,
    chat_template: Option<PathBuf>,
    alias: String,
    prompt_chunk: usize,
    shutdown_grace: f64,
    step_delay_ms: u64,
}

fn parse_enum<T: ValueEnum>(key: &str, v: &str) -> Result<T> {
    T::from_str(v, true).map_err(|_| Error::Usage(format!("config file: {key} = \"{v}\" is not a valid value")))
}

fn resolve(a: ServeArgs) -> Result<Effective> {
    let f: FileConfig = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?;
            toml::from_str(&text).map_err(|e| Error::Usage(format!("config file {}: {e}", p.display())))?
        }
        None => FileConfig::default(),
    };
    let model = a.model.or(f.model).ok_or_else(|| {
        Error::Usage("give the model: host serve MODEL.gguf (or HOST_MODEL, or model = \"...\" in --config)".into())
    })?;
    let cache_type = match (a.cache_type, &f.cache_type) {
        (Some(c), _) => c,
        (None, Some(s)) => parse_enum("cache_type", s)?,
        (None, None) => CacheType::F16,
    };
    let device = match (a.device, &f.device) {
        (Some(d), _) => d,
        (None, Some(s)) => parse_enum("device", s)?,
        (None, None) => DeviceArg::Auto,
    };
    let alias = a.alias.or(f.alias).unwrap_or_else(|| {
        model.file_name().map_or("model".into(), |n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
    });
    let e = Effective {
        host: a.host.or(f.host).unwrap_or_else(|| "127.0.0.1".into()),
        port: a.port.or(f.port).unwrap_or(8080),
        parallel: a.parallel.or(f.parallel).unwrap_or(0),
        queue: a.queue.or(f.queue).unwrap_or(64),
        ctx_size: a.ctx_size.or(f.ctx_size).unwrap_or(0),
        cache_type,
        device,
        threads: a.threads.or(f.threads),
        api_key: a.api_key.or(f.api_key).filter(|k| !k.is_empty()),
        cors_origin: if a.cors_origin.is_empty() { f.cors_origin.unwrap_or_default() } else { a.cors_origin },
        body_limit: a.body_limit.or(f.body_limit).unwrap_or(2 << 20),
        timeout: a.timeout.or(f.timeout).unwrap_or(600.0),
        log_prompts: a.log_prompts || f.log_prompts.unwrap_or(false),
        chat_template: a.chat_template.or(f.chat_template),
        alias,
        prompt_chunk: a.prompt_chunk.or(f.prompt_chunk).unwrap_or(64),
        shutdown_grace: a.shutdown_grace.or(f.shutdown_grace).unwrap_or(10.0),
        step_delay_ms: a.step_delay_ms.or(f.step_delay_ms).unwrap_or(0),
        model,
    };
    let check = |ok: bool, msg: &str| if ok { Ok(()) } else { Err(Error::Usage(msg.into())) };
    check(e.prompt_chunk >= 1 && e.prompt_chunk <= crate::model::MAX_BATCH, "prompt_chunk must be in 1..=512")?;
    check(e.threads != Some(0), "threads must be at least 1")?;
    check(e.timeout.is_finite() && e.timeout > 0.0, "timeout must be a positive number of seconds")?;
    check(e.shutdown_grace.is_finite() && e.shutdown_grace >= 0.0, "shutdown_grace must be >= 0 seconds")?;
    check(e.body_limit >= 1024, "body_limit must be at least 1024 bytes")?;
    Ok(e)
}

impl Effective {
    /// The configuration as a TOML file would give it (the API key masked).
    fn describe(&self, device: Device) -> String {
        let q = |s: &str| format!("{s:?}");
        let mut out = String::new();
        let mut line = |k: &str, v: String, note: &str| {
            out += &format!("  {k} = {v}{}\n", if note.is_empty() { String::new() } else { format!("   # {note}") });
        };
        line("model", q(&self.model.display().to_string()), "");
        line("alias", q(&self.alias), "the name /v1/models lists");
        line("host", q(&self.host), "");
        line("port", self.port.to_string(), if self.port == 0 { "any free port" } else { "" });
        line("device", q(&format!("{:?}", self.device).to_lowercase()), &format!("{device:?}"));
        line("parallel", self.parallel.to_string(), "sequences at once");
        line("queue", self.queue.to_string(), "requests waiting for a sequence; more get 503");
        let ctx = if self.ctx_size == 0 {
            format!("0   # the model's context, capped at {DEFAULT_CTX_CAP}")
        } else {
            self.ctx_size.to_string()
        };
        line("ctx_size", ctx, "");
        line("cache_type", q(self.cache_type.name()), "");
        line(
            "threads",
            self.threads.map_or("0".into(), |t| t.to_string()),
            if self.threads.is_none() { "all cores" } else { "" },
        );
        line("prompt_chunk", self.prompt_chunk.to_string(), "");
        line(
            "api_key",
            if self.api_key.is_some() { q("***") } else { q("") },
            if self.api_key.is_some() { "set" } else { "off" },
        );
        line(
            "cors_origin",
            format!("{:?}", self.cors_origin),
            if self.cors_origin.is_empty() { "CORS off" } else { "" },
        );
        line("body_limit", self.body_limit.to_string(), "bytes");
        line("timeout", self.timeout.to_string(), "seconds per request");
        line("shutdown_grace", self.shutdown_grace.to_string(), "seconds");
        line("log_prompts", self.log_prompts.to_string(), "");
        line(
            "chat_template",
            q(&self.chat_template.as_deref().map_or(String::new(), |p| p.display().to_string())),
            if self.chat_template.is_none() { "the model's" } else { "" },
        );
        out
    }
}

fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
        .and_then(|b| b.install_recorder())
        .map_err(|e| Error::Usage(format!("metrics: {e}")))?;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "host_requests_total",
        "Requests by endpoint and outcome (ok, cancelled, timeout, error, invalid, rejected, unauthorized, \
         unavailable, shutdown)"
    );
    describe_counter!("host_cancelled_total", "Requests whose client left, by phase (queue, prompt, generation)");
    describe_counter!("host_prompt_tokens_total", Unit::Count, "Prompt tokens of admitted requests");
    describe_counter!("host_prompt_tokens_cached_total", Unit::Count, "Prompt tokens taken from a sequence's cache");
    describe_counter!("host_generated_tokens_total", Unit::Count, "Generated tokens");
    describe_histogram!(
        "host_time_to_first_token_seconds",
        Unit::Seconds,
        "Request arrival to its first token, queueing included"
    );
    describe_histogram!(
        "host_inter_token_latency_seconds",
        Unit::Seconds,
        "Time between successive tokens of a request"
    );
    describe_gauge!("host_queue_length", "Requests waiting for a sequence");
    describe_gauge!("host_sequences_busy", "Sequences serving a request");
    describe_gauge!("host_sequences_total", "Sequences (--parallel)");
    describe_gauge!(
        "host_kv_positions_used",
        "KV cache positions holding a busy sequence's tokens or a reusable prompt"
    );
    describe_gauge!("host_kv_positions_total", "KV cache positions of all sequences");
    describe_counter!("host_forward_calls_total", Unit::Count, "Forward calls (batches) of the CPU batched engine");
    describe_counter!(
        "host_forward_sequences_total",
        Unit::Count,
        "Sequences summed over the forward calls (divided by the calls: the mean batch size)"
    );
    describe_counter!("host_forward_tokens_total", Unit::Count, "Batch entries (prompt and decode tokens) computed");
    describe_gauge!("host_batch_sequences_max", "Most sequences in one forward call so far");
    Ok(handle)
}

fn read_template(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| Error::io(p, e))
}

pub fn run(a: ServeArgs) -> Result<()> {
    let mut e = resolve(a)?;
    if let Some(n) = e.threads {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let device = Device::select(e.device)?;
    let batched = device == Device::Cpu || !crate::backend::cuda::gpu_off("batch");
    if e.parallel == 0 {
        e.parallel = if batched { 4 } else { 1 };
    }
    let chat_template = e.chat_template.as_deref().map(read_template).transpose()?;
    let prom = install_metrics()?;
    eprintln!(
        "host serve: effective configuration (flags > HOST_* variables > --config file > defaults):\n{}",
        e.describe(device)
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(serve(e, device, chat_template, prom))
}

async fn serve(
    e: Effective,
    device: Device,
    chat_template: Option<String>,
    prom: metrics_exporter_prometheus::PrometheusHandle,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind((e.host.as_str(), e.port))
        .await
        .map_err(|err| Error::Usage(format!("cannot listen on {}:{}: {err}", e.host, e.port)))?;
    let addr: SocketAddr = listener.local_addr().map_err(|err| Error::Usage(format!("listener: {err}")))?;
    // /health answers 503 while the model loads
    let engine = Arc::new(Engine::start(EngineConfig {
        model: e.model.clone(),
        device,
        parallel: e.parallel,
        queue: e.queue,
        ctx_size: e.ctx_size,
        cache_type: e.cache_type,
        prompt_chunk: e.prompt_chunk,
        step_delay: Duration::from_millis(e.step_delay_ms),
    }));
    let cfg = HttpConfig {
        model_name: e.alias.clone(),
        api_key: e.api_key.clone(),
        cors_origins: e.cors_origin.clone(),
        body_limit: e.body_limit,
        timeout: Duration::from_secs_f64(e.timeout),
        log_prompts: e.log_prompts,
        chat_template,
    };
    let app = http::router(Arc::new(AppState::new(engine.clone(), cfg, prom)));
    eprintln!("listening on http://{addr}");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut stop_wait = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_wait.wait_for(|s| *s).await;
            })
            .await
    });

    // loading: fail at once when the model cannot be loaded
    let mut status = engine.watch();
    let loaded = loop {
        let s = status.borrow_and_update().clone();
        match s {
            Status::Ready(info) => break Ok(info),
            Status::Failed(m) => break Err(m),
            Status::Loading => {}
        }
        tokio::select! {
            r = status.changed() => if r.is_err() { break Err("the engine thread ended".to_string()) },
            _ = shutdown_signal() => break Err("interrupted while loading".to_string()),
        }
    };
    let info = match loaded {
        Ok(i) => i,
        Err(m) => {
            let _ = stop_tx.send(true);
            return Err(Error::Usage(format!("cannot serve {}: {m}", e.model.display())));
        }
    };
    eprintln!(
        "ready: {} ({}); {} sequence(s), each may hold {} positions (prompt + answer), {} KV positions in all",
        e.model.display(),
        info.summary,
        info.parallel,
        info.ctx_size,
        info.kv_positions
    );

    shutdown_signal().await;
    let grace = Duration::from_secs_f64(e.shutdown_grace);
    eprintln!("shutting down: no new connections; running requests get {:.1} s to finish", grace.as_secs_f64());
    let _ = stop_tx.send(true);
    let eng = engine.clone();
    let drained = tokio::task::spawn_blocking(move || eng.shutdown(grace));
    let bound = grace + Duration::from_secs(3);
    let _ = tokio::time::timeout(bound, drained).await;
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(_) => eprintln!("stopped"),
        Err(_) => eprintln!("stopped (connections still open were dropped)"),
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
