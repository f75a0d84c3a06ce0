//! The engine behind `host serve`: requests in, token events out, cancellation by a dropped receiver.
//!
//! ```text
//! HTTP handler --Job (prompt ids, sampling, limits, events sender)--> bounded queue --> worker thread
//!      ^                                                                                 |  N slots, each a
//!      +---------------- Event::Token ... Event::Done / Event::Failed <------------------+  Forward + KV cache
//! ```
//! The worker thread owns the model and `parallel` slots, each serving one request (one sequence) at a time.
//! On the CPU the slots are sequences of one batched forward (`super::batched`): every step runs one forward
//! call holding the next prompt chunk of each sequence still reading its prompt and one token of each
//! generating sequence (continuous batching: a request joins at the next step, and leaves, its pages freed, in
//! the step it ends). On a GPU each slot has its own `Forward` and KV cache of `ctx_size` positions and the slots
//! are stepped round-robin, one unit of work each (a prompt chunk or one token). Either way the worker checks
//! before each step that the request's receiver is still there (the client has not gone) and that its deadline
//! has not passed, so a request that goes away frees its slot within one step, during prompt processing too.
//!
//! Prefix reuse: a slot remembers the prompt tokens whose keys and values it holds. A new request goes to the
//! free slot sharing the longest prefix with its prompt and skips those positions. Prompt chunks always start
//! at multiples of `prompt_chunk` and only whole chunks are remembered, so every position is computed by the
//! same mat-mul shapes as in a cold run (on the CPU a sequence's rows use the kernels of its own row count,
//! whatever else is in the batch): greedy output with a reused prefix is bit-identical to a cold one.
//! Generated tokens (computed one at a time) are never reused.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::watch;

use crate::backend::Device;
use crate::generate::StopFilter;
use crate::gguf::GgufFile;
use crate::kv_cache::CacheType;
use crate::model::{Forward, Model};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};
use crate::Result;

/// What the worker needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: PathBuf,
    pub device: Device,
    /// Sequences served at once (slots).
    pub parallel: usize,
    /// Requests that may wait for a slot; more are refused.
    pub queue: usize,
    /// Positions per sequence (0: the model's context, capped at `DEFAULT_CTX_CAP`).
    pub ctx_size: usize,
    pub cache_type: CacheType,
    /// Prompt positions per forward call; cancellation is checked between chunks.
    pub prompt_chunk: usize,
    /// Test hook: sleep this long before every unit of work (makes disconnect tests deterministic).
    pub step_delay: Duration,
}

/// Context size when none is given: the model's, capped at this.
pub const DEFAULT_CTX_CAP: usize = 4096;

/// What the HTTP side learns once the model is loaded.
pub struct EngineInfo {
    pub tokenizer: Arc<Tokenizer>,
    /// Positions one sequence may hold.
    pub ctx_size: usize,
    pub parallel: usize,
    /// KV cache positions of all sequences together (fixed at start).
    pub kv_positions: usize,
    pub n_vocab: usize,
    pub device: Device,
    /// One line: architecture, layers, dim, weights.
    pub summary: String,
}

/// Loading progress, watched by `/health` and the start-up code.
#[derive(Clone)]
pub enum Status {
    Loading,
    Ready(Arc<EngineInfo>),
    Failed(String),
}

/// One generation request.
pub struct Job {
    /// Request id, for the log line.
    pub id: String,
    /// `chat` or `completions`, for the log line and the metrics.
    pub endpoint: &'static str,
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    /// Tokens to generate at most (already clamped to what the sequence can hold).
    pub max_tokens: usize,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Return this many alternatives' log-probabilities per token (Some(0): the chosen token's only).
    pub logprobs: Option<usize>,
    /// When the request arrived (time to first token counts from here, queueing included).
    pub received: Instant,
    pub deadline: Option<Instant>,
    pub events: UnboundedSender<Event>,
}

/// A token's log-probability under the model (log-softmax of its logits, before any sampling step).
#[derive(Debug, Clone)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// The most likely tokens at this position, best first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the sequence is full.
    Length,
}

#[derive(Debug, Clone)]
pub struct Finish {
    pub reason: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt positions taken from the slot's cache.
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token (`token: None`: text held back until the end, flushed) and the text it completes
    /// (possibly empty: part of a UTF-8 character or of a possible stop string).
    Token {
        token: Option<u32>,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    Done(Finish),
    /// The request failed after it was accepted (timeout, shutdown, a backend error).
    Failed {
        message: String,
        kind: FailKind,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    Timeout,
    Shutdown,
    Internal,
}

/// Why `submit` refused a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    Loading,
    QueueFull(usize),
    ShuttingDown,
}

/// The handle the HTTP side holds.
pub struct Engine {
    tx: Mutex<Option<SyncSender<Job>>>,
    status: watch::Receiver<Status>,
    queued: Arc<AtomicUsize>,
    queue_cap: usize,
    draining: Arc<AtomicBool>,
    drain_deadline: Arc<Mutex<Option<Instant>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Engine {
    /// Start the worker thread; it loads the model and then serves. `status()` says when it is ready.
    pub fn start(cfg: EngineConfig) -> Engine {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(cfg.queue);
        let (status_tx, status) = watch::channel(Status::Loading);
        let queued = Arc::new(AtomicUsize::new(0));
        let draining = Arc::new(AtomicBool::new(false));
        let drain_deadline = Arc::new(Mutex::new(None));
        let w = Worker { queued: queued.clone(), draining: draining.clone(), drain_deadline: drain_deadline.clone() };
        let queue_cap = cfg.queue;
        let handle = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                if let Err(e) = w.run(cfg, rx, &status_tx) {
                    let _ = status_tx.send(Status::Failed(e.to_string()));
                }
            })
            .expect("cannot spawn the engine thread");
        Engine {
            tx: Mutex::new(Some(tx)),
            status,
            queued,
            queue_cap,
            draining,
            drain_deadline,
            worker: Mutex::new(Some(handle)),
        }
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change (start-up waits on it).
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    pub fn info(&self) -> Option<Arc<EngineInfo>> {
        match &*self.status.borrow() {
            Status::Ready(i) => Some(i.clone()),
            _ => None,
        }
    }

    /// Requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queue `job`; refused (never blocking) while loading, when the queue is full or while shutting down.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Rejected> {
        if self.info().is_none() {
            return Err(Rejected::Loading);
        }
        if self.draining.load(Ordering::SeqCst) {
            return Err(Rejected::ShuttingDown);
        }
        let guard = self.tx.lock().unwrap();
        let Some(tx) = guard.as_ref() else {
            return Err(Rejected::ShuttingDown);
        };
        // counted before the send so that the worker's decrement never comes first
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => {
                metrics::gauge!("host_queue_length").set(self.queued() as f64);
                Ok(())
            }
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => Rejected::QueueFull(self.queue_cap),
                    TrySendError::Disconnected(_) => Rejected::ShuttingDown,
                })
            }
        }
    }

    /// Stop taking jobs; the worker finishes the running ones, cancelling what is left after `grace`, and
    /// refuses the queued ones. Returns when the worker has exited.
    pub fn shutdown(&self, grace: Duration) {
        self.draining.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        // the worker sees the channel close (our sender dropped) and then cancels at the deadline
        self.drain_deadline.lock().unwrap().replace(deadline);
        self.tx.lock().unwrap().take();
        if let Some(h) = self.worker.lock().unwrap().take() {
            let _ = h.join();
        }
    }
}

// ----------------------------------------------------------------------------
// The worker: slots stepped round-robin
// ----------------------------------------------------------------------------

pub(super) struct Worker {
    queued: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
    /// When a draining worker cancels what is still running.
    drain_deadline: Arc<Mutex<Option<Instant>>>,
}

/// One sequence: a forward pass with its own KV cache and, when busy, the request it serves.
struct Slot<'m> {
    fwd: Box<dyn Forward + 'm>,
    /// Prompt tokens whose keys and values are in the cache, computed in whole aligned chunks (reusable).
    cached: Vec<u32>,
    active: Option<Active>,
}

/// A request being served.
pub(super) struct Active {
    pub(super) job: Job,
    /// Next prompt position to compute; == prompt.len() once the prompt is done.
    pub(super) prompt_pos: usize,
    /// Positions in the cache (prompt + evaluated generated tokens).
    pub(super) n_past: usize,
    pub(super) cached_tokens: usize,
    sampler: Sampler,
    decoder: StreamDecoder,
    stop_pending: String,
    /// The logits of position n_past - 1, which pick the next token.
    pub(super) logits: Vec<f32>,
    /// A sampled token not yet evaluated (the batched worker evaluates it in its next step).
    pub(super) pending: Option<u32>,
    generated: usize,
    started: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

/// What sampling a position's logits gave: the token to evaluate next, or the end of the request.
pub(super) enum Sampled {
    Next(u32),
    Finished(FinishReason),
}

enum Step {
    Continue,
    Finished(FinishReason),
}

impl Worker {
    fn run(self, cfg: EngineConfig, rx: Receiver<Job>, status: &watch::Sender<Status>) -> Result<()> {
        let file = GgufFile::open(&cfg.model)?;
        let tok = Arc::new(Tokenizer::from_gguf(&file)?);
        let model = Model::load(&file)?;
        let ctx_size = match cfg.ctx_size {
            0 => model.config.context_len.clamp(1, DEFAULT_CTX_CAP),
            n => n,
        };
        // the batched worker on every device; `HOST_GPU_OFF=batch` keeps the GPU's round-robin single-sequence slots
        if cfg.device == Device::Cpu || !crate::backend::cuda::gpu_off("batch") {
            return super::batched::serve(&self, &cfg, &rx, status, &model, &tok, ctx_size);
        }
        let mut slots = Vec::with_capacity(cfg.parallel);
        for _ in 0..cfg.parallel {
            slots.push(Slot {
                fwd: cfg.device.open_forward(&model, ctx_size, cfg.cache_type)?,
                cached: Vec::new(),
                active: None,
            });
        }
        let info = engine_info(&cfg, &model, &tok, ctx_size, cfg.parallel * ctx_size);
        let _ = status.send(Status::Ready(Arc::new(info)));

        let mut open = true; // the job channel still has senders
        let mut next = 0; // round-robin position
        loop {
            // admit waiting jobs into free slots
            while open && slots.iter().any(|s| s.active.is_none()) {
                let busy = slots.iter().any(|s| s.active.is_some());
                match self.next_job(&rx, busy) {
                    Intake::Job(job) => {
                        let free = slots.iter().map(|s| (&s.cached, s.active.is_none()));
                        let Some((i, reuse)) = pick_slot(free, &job, cfg.prompt_chunk) else { continue };
                        let slot = &mut slots[i];
                        if reuse == 0 {
                            slot.fwd.reset();
                        }
                        slot.cached.truncate(reuse);
                        slot.active = Some(Active::new(*job, reuse));
                        publish_occupancy(&slots);
                    }
                    Intake::Again => continue,
                    Intake::Empty => break,
                    Intake::Closed => open = false,
                }
            }
            if !open && slots.iter().all(|s| s.active.is_none()) {
                return Ok(());
            }
            let drain_over = self.drain_over();
            // one unit of work per busy slot
            for k in 0..slots.len() {
                let i = (next + k) % slots.len();
                let slot = &mut slots[i];
                let Some(a) = slot.active.as_mut() else { continue };
                let outcome = if let Some(why) = a.must_stop(drain_over) {
                    Err(why)
                } else {
                    if !cfg.step_delay.is_zero() {
                        std::thread::sleep(cfg.step_delay);
                    }
                    step(slot, &tok, cfg.prompt_chunk).map_err(|e| (FailKind::Internal, e.to_string()))
                };
                let a = slot.active.as_ref().unwrap();
                match outcome {
                    Ok(Step::Continue) => continue,
                    Ok(Step::Finished(reason)) => finish_ok(a, reason),
                    Err((kind, message)) => finish_err(a, kind, message),
                }
                // the slot keeps the whole prompt chunks it computed for the next request
                let a = slot.active.take().unwrap();
                let done = a.prompt_pos / cfg.prompt_chunk * cfg.prompt_chunk;
                slot.cached = a.job.prompt[..done].to_vec();
                publish_occupancy(&slots);
            }
            next = (next + 1) % slots.len();
        }
    }
}

/// What the job channel gave.
pub(super) enum Intake {
    Job(Box<Job>),
    /// Nothing came within the idle wait: ask again.
    Again,
    /// Nothing waiting (the worker has work of its own).
    Empty,
    /// Every sender is gone (shutting down).
    Closed,
}

impl Worker {
    /// The next queued job: waited for (up to 200 ms) when `busy` is false, else only if one is there. A job
    /// that comes while draining is refused here and reported as `Again`.
    pub(super) fn next_job(&self, rx: &Receiver<Job>, busy: bool) -> Intake {
        let job = if busy {
            match rx.try_recv() {
                Ok(j) => j,
                Err(std::sync::mpsc::TryRecvError::Empty) => return Intake::Empty,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return Intake::Closed,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => return Intake::Again,
                Err(RecvTimeoutError::Disconnected) => return Intake::Closed,
            }
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("host_queue_length").set(self.queued.load(Ordering::SeqCst) as f64);
        if self.draining.load(Ordering::SeqCst) {
            fail(job, FailKind::Shutdown, "the server is shutting down".into());
            return Intake::Again;
        }
        Intake::Job(Box::new(job))
    }

    /// Whether the grace period of a shutdown is over (running requests are then cancelled).
    pub(super) fn drain_over(&self) -> bool {
        self.drain_deadline.lock().unwrap().is_some_and(|d| Instant::now() >= d)
    }
}

/// What the HTTP side is told once the model is loaded.
pub(super) fn engine_info(
    cfg: &EngineConfig,
    model: &Model,
    tok: &Arc<Tokenizer>,
    ctx_size: usize,
    kv_positions: usize,
) -> EngineInfo {
    let c = &model.config;
    EngineInfo {
        tokenizer: tok.clone(),
        ctx_size,
        parallel: cfg.parallel,
        kv_positions,
        n_vocab: model.n_vocab(),
        device: cfg.device,
        summary: format!(
            "{:?}, {} layers, dim {}, {} heads ({} kv), vocab {}, {:.1} MiB of weights",
            c.arch,
            c.n_layers,
            c.dim,
            c.n_heads,
            c.n_kv_heads,
            model.n_vocab(),
            model.weight_bytes() as f64 / (1 << 20) as f64
        ),
    }
}

/// The free slot (of `slots`: cached prompt tokens, free) whose cached prompt shares the longest prefix with
/// `job`'s, and how many of those positions it reuses (whole chunks, the last prompt position never: its logits
/// pick the first token). None when the job is already over (its client left, or its deadline passed in the
/// queue): then it has been answered and counted.
pub(super) fn pick_slot<'s>(
    slots: impl Iterator<Item = (&'s Vec<u32>, bool)>,
    job: &Job,
    chunk: usize,
) -> Option<(usize, usize)> {
    if job.events.is_closed() {
        // the client left while the job waited in the queue
        metrics::counter!("host_cancelled_total", "phase" => "queue").increment(1);
        metrics::counter!("host_requests_total", "endpoint" => job.endpoint, "outcome" => "cancelled").increment(1);
        eprintln!("req {} {}: cancelled in the queue", job.id, job.endpoint);
        return None;
    }
    if job.deadline.is_some_and(|d| Instant::now() >= d) {
        metrics::counter!("host_requests_total", "endpoint" => job.endpoint, "outcome" => "timeout").increment(1);
        eprintln!("req {} {}: timed out in the queue", job.id, job.endpoint);
        let _ = job.events.send(Event::Failed {
            message: "the request timed out while waiting in the queue".into(),
            kind: FailKind::Timeout,
        });
        return None;
    }
    let common = |c: &Vec<u32>| c.iter().zip(&job.prompt).take_while(|(a, b)| a == b).count();
    let (i, lcp) = slots
        .enumerate()
        .filter(|(_, (_, free))| *free)
        .map(|(i, (c, _))| (i, common(c)))
        .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))
        .expect("pick_slot is called with a free slot");
    Some((i, lcp.min(job.prompt.len() - 1) / chunk * chunk))
}

impl Active {
    /// A request starting at prompt position `reuse` (the positions before are in its sequence's cache).
    pub(super) fn new(job: Job, reuse: usize) -> Active {
        let mut sampler = Sampler::new(job.params.clone());
        for &t in &job.prompt {
            sampler.accept(t);
        }
        metrics::counter!("host_prompt_tokens_total").increment(job.prompt.len() as u64);
        metrics::counter!("host_prompt_tokens_cached_total").increment(reuse as u64);
        Active {
            job,
            prompt_pos: reuse,
            n_past: reuse,
            cached_tokens: reuse,
            sampler,
            decoder: StreamDecoder::new(),
            stop_pending: String::new(),
            logits: Vec::new(),
            pending: None,
            generated: 0,
            started: Instant::now(),
            first_token: None,
            last_token: None,
        }
    }

    /// Why this request must stop before its next step, if it must: the shutdown's grace period is over, the
    /// client left (no one to tell: empty message) or the deadline passed.
    pub(super) fn must_stop(&self, drain_over: bool) -> Option<(FailKind, String)> {
        if drain_over {
            Some((FailKind::Shutdown, "the server is shutting down (grace period over)".to_string()))
        } else if self.job.events.is_closed() {
            Some((FailKind::Internal, String::new()))
        } else if self.job.deadline.is_some_and(|d| Instant::now() >= d) {
            Some((FailKind::Timeout, "the request timed out".to_string()))
        } else {
            None
        }
    }

    /// Whether this request's next token is the plain argmax of its logits with nothing else asked of them (no
    /// log-probabilities), so a backend may choose it on the device (`BatchForward::decode_greedy`).
    pub(super) fn device_may_choose(&self) -> bool {
        self.job.logprobs.is_none() && self.sampler.is_plain_argmax()
    }
}

/// A request that ended normally: log line, metrics, `Done`.
pub(super) fn finish_ok(a: &Active, reason: FinishReason) {
    let f = Finish {
        reason,
        prompt_tokens: a.job.prompt.len(),
        cached_tokens: a.cached_tokens,
        completion_tokens: a.generated,
    };
    log_done(a, if reason == FinishReason::Stop { "stop" } else { "length" });
    metrics::counter!("host_requests_total", "endpoint" => a.job.endpoint, "outcome" => "ok").increment(1);
    let _ = a.job.events.send(Event::Done(f));
}

/// A request that failed or whose client left: log line, metrics, `Failed` (unheard when the client left).
pub(super) fn finish_err(a: &Active, kind: FailKind, message: String) {
    let gone = a.job.events.is_closed();
    let outcome = match kind {
        _ if gone => "cancelled",
        FailKind::Timeout => "timeout",
        FailKind::Shutdown => "shutdown",
        FailKind::Internal => "error",
    };
    if gone {
        let phase = if a.prompt_pos < a.job.prompt.len() { "prompt" } else { "generation" };
        metrics::counter!("host_cancelled_total", "phase" => phase).increment(1);
    }
    log_done(a, outcome);
    metrics::counter!("host_requests_total", "endpoint" => a.job.endpoint, "outcome" => outcome).increment(1);
    let _ = a.job.events.send(Event::Failed { message, kind });
}

/// One unit of work for a busy slot: a prompt chunk, or sampling one token and evaluating it.
fn step(slot: &mut Slot, tok: &Tokenizer, chunk: usize) -> Result<Step> {
    let a = slot.active.as_mut().unwrap();
    let n_prompt = a.job.prompt.len();
    if a.prompt_pos < n_prompt {
        // chunks end at multiples of `chunk`, so a cold run and a run with a reused prefix batch alike
        let end = ((a.prompt_pos / chunk + 1) * chunk).min(n_prompt);
        let logits = slot.fwd.forward(&a.job.prompt[a.prompt_pos..end], a.prompt_pos)?;
        if end == n_prompt {
            a.logits.clear();
            a.logits.extend_from_slice(logits);
        }
        a.prompt_pos = end;
        a.n_past = end;
        return Ok(Step::Continue);
    }

    match sample(a, tok, slot.fwd.ctx_size()) {
        Sampled::Finished(reason) => Ok(Step::Finished(reason)),
        Sampled::Next(token) => {
            let logits = slot.fwd.forward(&[token], a.n_past)?;
            a.logits.clear();
            a.logits.extend_from_slice(logits);
            a.n_past += 1;
            Ok(Step::Continue)
        }
    }
}

/// The logits of position n_past - 1 (`a.logits`, changed in place) are ready: pick the next token, send it
/// (log-probabilities from the raw logits) and say whether the request goes on with it or ends (`ctx`: the
/// positions its sequence may hold).
pub(super) fn sample(a: &mut Active, tok: &Tokenizer, ctx: usize) -> Sampled {
    let raw = a.job.logprobs.map(|k| (top_logprobs(&a.logits, k), a.logits.clone()));
    let token = a.sampler.sample(&mut a.logits);
    let logprob = raw.map(|((lse, top), raw)| TokenLogprob { token, logprob: raw[token as usize] - lse, top });
    emit(a, tok, ctx, token, logprob)
}

/// `sample` for a token the backend already chose (`Active::device_may_choose`: the argmax, no logprobs).
pub(super) fn take_chosen(a: &mut Active, tok: &Tokenizer, ctx: usize, token: u32) -> Sampled {
    debug_assert!(a.device_may_choose());
    emit(a, tok, ctx, token, None)
}

/// The rest of a sampling step once `token` is picked: the penalty history, the end tests, the metrics and the
/// text event (with the token's log-probability where it was asked for).
fn emit(a: &mut Active, tok: &Tokenizer, ctx: usize, token: u32, logprob: Option<TokenLogprob>) -> Sampled {
    a.sampler.accept(token);
    if tok.is_eog(token) && !a.job.ignore_eos {
        flush(a);
        return Sampled::Finished(FinishReason::Stop);
    }
    a.generated += 1;
    metrics::counter!("host_generated_tokens_total").increment(1);
    let now = Instant::now();
    match a.last_token {
        None => {
            a.first_token = Some(now);
            metrics::histogram!("host_time_to_first_token_seconds").record((now - a.job.received).as_secs_f64());
        }
        Some(t) => metrics::histogram!("host_inter_token_latency_seconds").record((now - t).as_secs_f64()),
    }
    a.last_token = Some(now);
    let piece = a.decoder.push(tok.token_bytes(token));
    let mut filter = StopFilter::new(&a.job.stop);
    let (text, stopped) = filter.push(&std::mem::take(&mut a.stop_pending));
    debug_assert!(text.is_empty() && !stopped);
    let (text, stopped) = filter.push(&piece);
    a.stop_pending = filter.finish();
    let _ = a.job.events.send(Event::Token { token: Some(token), text, logprob });
    if stopped {
        return Sampled::Finished(FinishReason::Stop);
    }
    if a.generated >= a.job.max_tokens || a.n_past >= ctx {
        // the last token is not evaluated: nothing would read its logits
        flush(a);
        return Sampled::Finished(FinishReason::Length);
    }
    Sampled::Next(token)
}

/// log-sum-exp of the logits and the `k` most likely tokens with their log-probabilities, best first (equal
/// logits: lower id first).
fn top_logprobs(logits: &[f32], k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let rank = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    if k > 0 && k < idx.len() {
        idx.select_nth_unstable_by(k - 1, rank);
    }
    idx.truncate(k);
    idx.sort_by(rank);
    (lse, idx.iter().map(|&i| (i, logits[i as usize] - lse)).collect())
}

/// Text held back for a stop string that never came, and an incomplete UTF-8 tail.
fn flush(a: &mut Active) {
    let mut rest = std::mem::take(&mut a.stop_pending);
    rest.push_str(&std::mem::take(&mut a.decoder).finish());
    if !rest.is_empty() {
        let _ = a.job.events.send(Event::Token { token: None, text: rest, logprob: None });
    }
}

pub(super) fn fail(job: Job, kind: FailKind, message: String) {
    let _ = job.events.send(Event::Failed { message, kind });
}

/// One line per finished request: id, tokens, timings, outcome (never the prompt text).
pub(super) fn log_done(a: &Active, outcome: &str) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let now = Instant::now();
    let ttft = a.first_token.map_or("-".to_string(), |t| format!("{:.1}", ms(t - a.job.received)));
    let gen_rate = match (a.first_token, a.last_token) {
        (Some(f), Some(l)) if a.generated > 1 && l > f => {
            format!("{:.1}", (a.generated - 1) as f64 / (l - f).as_secs_f64())
        }
        _ => "-".to_string(),
    };
    eprintln!(
        "req {} {}: prompt {} (cached {}), generated {}, queued {:.1} ms, ttft {ttft} ms, {gen_rate} tok/s, \
         total {:.1} ms, {outcome}",
        a.job.id,
        a.job.endpoint,
        a.job.prompt.len(),
        a.cached_tokens,
        a.generated,
        ms(a.started - a.job.received),
        ms(now - a.job.received),
    );
}

fn publish_occupancy(slots: &[Slot]) {
    let busy = slots.iter().filter(|s| s.active.is_some()).count();
    let used: usize = slots.iter().map(|s| s.active.as_ref().map_or(s.cached.len(), |a| a.n_past)).sum();
    metrics::gauge!("host_sequences_busy").set(busy as f64);
    metrics::gauge!("host_kv_positions_used").set(used as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_logprobs_are_a_log_softmax_best_first() {
        let logits = [1.0f32, 3.0, 2.0, 3.0];
        let (lse, top) = top_logprobs(&logits, 3);
        let want_lse = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln() as f32;
        assert!((lse - want_lse).abs() < 1e-6);
        // equal logits: lower id first
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 3, 2]);
        assert!((top[2].1 - (2.0 - want_lse)).abs() < 1e-6);
        let (_, all) = top_logprobs(&logits, 10);
        let total: f64 = all.iter().map(|t| (t.1 as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6 && all.len() == 4);
        assert!(top_logprobs(&logits, 0).1.is_empty());
    }
}
