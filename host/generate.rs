//! The generation loop: a small state machine over any `Forward` (CPU now, CUDA later).
//!
//! ```text
//! Prefill (whole prompt, one batch) -> Sample -> [emit text] -> Decode (one token) -> Sample -> ... -> Done(reason)
//! ```
//! It stops at an end-of-generation token (unless `ignore_eos`), a stop string, `n_predict` tokens, the end of the
//! context, or an interrupt (Ctrl-C sets the flag). Text is streamed as it is produced, complete UTF-8 only; a
//! stop string is never printed, so text that could be the start of one is held back until it is decided.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::Forward;
use crate::sampler::Sampler;
use crate::tokenizer::{ChatMessage, StreamDecoder, Tokenizer};
use crate::{Error, Result};

#[derive(Debug, Clone, Default)]
pub struct GenOptions {
    /// Tokens to generate at most (None: until another reason stops it).
    pub n_predict: Option<usize>,
    /// Generation stops when the text contains one of these; it is not printed.
    pub stop: Vec<String>,
    /// Keep going after end-of-generation tokens (they are printed as text then).
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    EndOfGeneration,
    StopString,
    MaxTokens,
    ContextFull,
    Interrupted,
}

impl StopReason {
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::EndOfGeneration => "end-of-generation token",
            StopReason::StopString => "stop string",
            StopReason::MaxTokens => "token limit (-n)",
            StopReason::ContextFull => "context full (raise --ctx-size)",
            StopReason::Interrupted => "interrupted",
        }
    }
}

/// Wall-clock time of each phase, as llama.cpp's timings report them.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub prompt_tokens: usize,
    pub prompt_ms: f64,
    /// One-token forward passes after the prompt.
    pub decode_runs: usize,
    pub decode_ms: f64,
    pub sampled: usize,
    pub sample_ms: f64,
}

impl Timings {
    /// Lines for stderr: per phase, ms, tokens, ms per token, tokens per second.
    pub fn report(&self) -> String {
        let line = |name: &str, ms: f64, n: usize, unit: &str| {
            let per = if n > 0 { ms / n as f64 } else { 0.0 };
            let tps = if ms > 0.0 { 1e3 * n as f64 / ms } else { 0.0 };
            format!("{name:>12} = {ms:10.2} ms / {n:5} {unit} ({per:8.2} ms per token, {tps:8.2} tokens per second)\n")
        };
        let mut s = line("prompt eval", self.prompt_ms, self.prompt_tokens, "tokens");
        s += &line("eval", self.decode_ms, self.decode_runs, "runs  ");
        s += &line("sampling", self.sample_ms, self.sampled, "tokens");
        s += &format!(
            "{:>12} = {:10.2} ms\n",
            "total",
            self.prompt_ms + self.decode_ms + self.sample_ms
        );
        s
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Sampled tokens, the end-of-generation token excluded.
    pub tokens: Vec<u32>,
    /// The text written (stop string excluded).
    pub text: String,
    pub reason: StopReason,
    pub timings: Timings,
    /// Positions in the KV cache at the end: the prompt and every sampled token but the last, which is evaluated
    /// only when another token follows (`tokens` never holds the end-of-generation token).
    pub n_past: usize,
}

/// Holds back text that may be the start of a stop string; says where a stop string completes.
pub struct StopFilter<'s> {
    stops: &'s [String],
    pending: String,
}

impl<'s> StopFilter<'s> {
    pub fn new(stops: &'s [String]) -> Self {
        StopFilter {
            stops,
            pending: String::new(),
        }
    }

    /// Add `text`; returns what can be printed now and whether a stop string was found (text from it on is
    /// dropped).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // hold back the longest suffix that could still grow into a stop string
        let keep_from = self
            .pending
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.pending[i..];
                self.stops
                    .iter()
                    .any(|s| s.len() > tail.len() && s.starts_with(tail))
            })
            .unwrap_or(self.pending.len());
        let out = self.pending[..keep_from].to_string();
        self.pending.drain(..keep_from);
        (out, false)
    }

    /// What is still held back, when generation ends for another reason.
    pub fn finish(self) -> String {
        self.pending
    }
}

/// Token ids of a prompt as llama.cpp's llama-simple makes them: special tokens parsed, BOS added when the
/// model asks for it. `chat: Some(system)` first wraps the text in the model's chat template (an optional system
/// turn, the user turn, the generation prompt); a template that writes BOS itself does not get a second one.
pub fn prompt_tokens(tok: &Tokenizer, text: &str, chat: Option<Option<&str>>) -> Result<Vec<u32>> {
    let text = match chat {
        Some(system) => {
            let mut msgs = Vec::new();
            if let Some(sys) = system {
                msgs.push(ChatMessage::new("system", sys));
            }
            msgs.push(ChatMessage::new("user", text));
            render_chat(tok, None, &msgs)?
        }
        None => text.to_string(),
    };
    encode_prompt(tok, &text, chat.is_some())
}

/// The conversation `msgs` rendered with `template` (e.g. from `--chat-template FILE`), or the model's own chat
/// template when None, followed by the header that opens the assistant's turn.
pub fn render_chat(tok: &Tokenizer, template: Option<&str>, msgs: &[ChatMessage]) -> Result<String> {
    match template {
        Some(t) => tok.apply_template(t, msgs, true),
        None => tok.apply_chat_template(msgs, true),
    }
}

/// Token ids of prompt text: special tokens parsed, BOS added when the model asks for it; for text rendered by a
/// chat template (`chat`) that already starts with BOS, the added one is dropped.
pub fn encode_prompt(tok: &Tokenizer, text: &str, chat: bool) -> Result<Vec<u32>> {
    let mut ids = tok.encode(text, true, true)?;
    if let (Some(bos), true) = (tok.bos(), chat) {
        if ids.len() >= 2 && ids[0] == bos && ids[1] == bos {
            ids.remove(0);
        }
    }
    Ok(ids)
}

enum State {
    Prefill,
    /// Logits of the last evaluated position are ready (or the backend already `chosen` the greedy token);
    /// `pos` positions are in the cache.
    Sample {
        pos: usize,
        chosen: Option<u32>,
    },
    /// `token` was sampled but not yet evaluated.
    Decode {
        token: u32,
        pos: usize,
    },
    Done(StopReason),
}

/// Generate from `prompt` (token ids, BOS included when the model wants one), writing text to `out` as it comes.
/// The prompt must fit the context; the cache is reset first.
pub fn generate(
    fwd: &mut dyn Forward,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    opts: &GenOptions,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<Generation> {
    fwd.reset();
    generate_cached(fwd, tok, sampler, prompt, 0, opts, out, interrupt)
}

/// `generate` on a cache that already holds the keys and values of `prompt[..n_cached]` at positions
/// 0..n_cached (a conversation's earlier turns): only the rest of the prompt is evaluated. `n_cached` must be
/// less than the prompt's length (the last prompt token is evaluated for its logits); 0 with a fresh cache is
/// `generate`. Every prompt token enters the sampler's penalty history.
#[allow(clippy::too_many_arguments)]
pub fn generate_cached(
    fwd: &mut dyn Forward,
    tok: &Tokenizer,
    sampler: &mut Sampler,
    prompt: &[u32],
    n_cached: usize,
    opts: &GenOptions,
    out: &mut dyn Write,
    interrupt: &AtomicBool,
) -> Result<Generation> {
    let ctx = fwd.ctx_size();
    if prompt.is_empty() {
        return Err(Error::Generate("the prompt has no tokens".into()));
    }
    if prompt.len() > ctx {
        return Err(Error::Generate(format!(
            "the prompt has {} tokens, more than the context size of {ctx} tokens (raise --ctx-size)",
            prompt.len()
        )));
    }
    if n_cached >= prompt.len() {
        return Err(Error::Generate(format!(
            "{n_cached} of the prompt's {} tokens are cached: at least the last one must be evaluated",
            prompt.len()
        )));
    }
    for &t in prompt {
        sampler.accept(t);
    }

    let mut logits = Vec::new();
    let mut timings = Timings {
        prompt_tokens: prompt.len() - n_cached,
        ..Timings::default()
    };
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut decoder = StreamDecoder::new();
    let mut filter = StopFilter::new(&opts.stop);
    let mut emit = |s: &str, text: &mut String| -> Result<()> {
        if s.is_empty() {
            return Ok(());
        }
        text.push_str(s);
        out.write_all(s.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::Generate(format!("cannot write the output: {e}")))
    };

    // a backend that picks tokens itself keeps the logits on its device: argmax for plain greedy decoding,
    // else its own sampler where it has one for these parameters
    let device_argmax = sampler.is_plain_argmax();
    let device_sampling = !device_argmax && fwd.start_device_sampling(sampler.params(), prompt)?;
    let mut state = State::Prefill;
    let mut n_past = n_cached;
    let reason = loop {
        state = match state {
            State::Prefill => {
                let t0 = Instant::now();
                logits.clear();
                logits.extend_from_slice(fwd.forward(&prompt[n_cached..], n_cached)?);
                let chosen = if device_sampling { fwd.sample_next()? } else { None };
                timings.prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
                n_past = prompt.len();
                State::Sample { pos: prompt.len(), chosen }
            }
            State::Sample { pos, chosen } => {
                if interrupt.load(Ordering::Relaxed) {
                    State::Done(StopReason::Interrupted)
                } else if opts.n_predict.is_some_and(|n| tokens.len() >= n) {
                    State::Done(StopReason::MaxTokens)
                } else {
                    let t0 = Instant::now();
                    let token = match chosen {
                        Some(t) => t,
                        None => sampler.sample(&mut logits),
                    };
                    sampler.accept(token);
                    timings.sample_ms += t0.elapsed().as_secs_f64() * 1e3;
                    timings.sampled += 1;
                    if tok.is_eog(token) && !opts.ignore_eos {
                        State::Done(StopReason::EndOfGeneration)
                    } else {
                        tokens.push(token);
                        let piece = decoder.push(tok.token_bytes(token));
                        let (printable, stopped) = filter.push(&piece);
                        emit(&printable, &mut text)?;
                        if stopped {
                            State::Done(StopReason::StopString)
                        } else {
                            State::Decode { token, pos }
                        }
                    }
                }
            }
            State::Decode { token, pos } => {
                if opts.n_predict.is_some_and(|n| tokens.len() >= n) {
                    // the last token is not evaluated: nothing would read its logits
                    State::Done(StopReason::MaxTokens)
                } else if pos >= ctx {
                    State::Done(StopReason::ContextFull)
                } else {
                    let t0 = Instant::now();
                    let chosen = if device_argmax {
                        fwd.decode_greedy(token, pos)?
                    } else if device_sampling {
                        fwd.decode_sampled(token, pos)?
                    } else {
                        None
                    };
                    if chosen.is_none() {
                        logits.clear();
                        logits.extend_from_slice(fwd.forward(&[token], pos)?);
                    }
                    timings.decode_ms += t0.elapsed().as_secs_f64() * 1e3;
                    timings.decode_runs += 1;
                    n_past = pos + 1;
                    State::Sample { pos: pos + 1, chosen }
                }
            }
            State::Done(reason) => break reason,
        };
    };
    if reason != StopReason::StopString {
        // text held back for a stop string that never came, and an incomplete UTF-8 tail (lossy)
        let mut rest = filter.finish();
        rest.push_str(&decoder.finish());
        emit(&rest, &mut text)?;
    }
    Ok(Generation {
        tokens,
        text,
        reason,
        timings,
        n_past,
    })
}

// ----------------------------------------------------------------------------
// Many prompts at once over a batch forward
// ----------------------------------------------------------------------------

/// One prompt's result of `generate_parallel`.
#[derive(Debug, Clone)]
pub struct SeqOutput {
    /// Index of the prompt in the list given.
    pub index: usize,
    pub prompt_tokens: usize,
    /// Sampled tokens, the end-of-generation token excluded.
    pub tokens: Vec<u32>,
    /// The text (stop string excluded).
    pub text: String,
    pub reason: StopReason,
}

/// A running sequence of `generate_parallel`: its own sampler (parameters, RNG, penalty history), decoder and
/// stop filter.
struct Slot<'s> {
    index: usize,
    sampler: Sampler,
    /// Prompt tokens not yet evaluated, from `fed` on.
    fed: usize,
    /// The token to evaluate next (sampled, not yet in the cache).
    next: Option<u32>,
    tokens: Vec<u32>,
    text: String,
    decoder: StreamDecoder,
    filter: StopFilter<'s>,
}

/// Generate for every prompt of `prompts`, at most `n_slots` sequences at once through `bf` (continuous
/// batching: a prompt takes the place of one that finished, its prompt chunk going through the same forward
/// calls as the others' decode steps). Sequence `i` samples with `params` and seed `params.seed + i`, on the
/// host after each forward. `on_done` gets each result as its sequence ends; the results come back in prompt
/// order.
#[allow(clippy::too_many_arguments)]
pub fn generate_parallel(
    bf: &mut dyn crate::batch::BatchForward,
    tok: &Tokenizer,
    params: &crate::sampler::SamplingParams,
    prompts: &[Vec<u32>],
    n_slots: usize,
    opts: &GenOptions,
    on_done: &mut dyn FnMut(&SeqOutput) -> Result<()>,
    interrupt: &AtomicBool,
) -> Result<Vec<SeqOutput>> {
    use crate::batch::Batch;
    use crate::kv_paged::SeqId;
    let ctx = bf.ctx_size();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() || p.len() > ctx {
            return Err(Error::Generate(format!(
                "prompt {i} has {} tokens: it must have 1 to {ctx} (the context size per sequence)",
                p.len()
            )));
        }
    }
    let n_slots = n_slots.max(1);
    let mut slots: Vec<Slot> = Vec::new();
    let mut waiting = 0..prompts.len();
    let mut results: Vec<Option<SeqOutput>> = vec![None; prompts.len()];
    let mut batch = Batch::new();
    loop {
        while slots.len() < n_slots {
            let Some(index) = waiting.next() else { break };
            bf.add_seq(index as SeqId)?;
            let mut sampler = Sampler::new(crate::sampler::SamplingParams {
                seed: params.seed.wrapping_add(index as u64),
                ..params.clone()
            });
            for &t in &prompts[index] {
                sampler.accept(t);
            }
            slots.push(Slot {
                index,
                sampler,
                fed: 0,
                next: None,
                tokens: Vec::new(),
                text: String::new(),
                decoder: StreamDecoder::new(),
                filter: StopFilter::new(&opts.stop),
            });
        }
        if slots.is_empty() {
            break;
        }
        // one entry per running sequence, or a prompt chunk
        batch.clear();
        let mut last_entry = Vec::with_capacity(slots.len());
        for sl in &mut slots {
            let (seq, p) = (sl.index as SeqId, &prompts[sl.index]);
            let pos = bf.seq_len(seq).unwrap_or(0);
            if sl.fed < p.len() {
                let end = (sl.fed + crate::model::MAX_BATCH).min(p.len());
                for (k, &t) in p[sl.fed..end].iter().enumerate() {
                    batch.add(seq, t, pos + k, end == p.len() && sl.fed + k + 1 == end);
                }
                sl.fed = end;
            } else if let Some(t) = sl.next.take() {
                batch.add(seq, t, pos, true);
            }
            last_entry.push(batch.len() - 1);
        }
        bf.decode(&batch)?;
        let stopped = interrupt.load(Ordering::Relaxed);
        let mut finished = Vec::new();
        for (k, sl) in slots.iter_mut().enumerate() {
            let Some(logits) = bf.logits(last_entry[k]) else { continue };
            let mut logits = logits.to_vec();
            let reason = if stopped {
                Some(StopReason::Interrupted)
            } else {
                let token = sl.sampler.sample(&mut logits);
                sl.sampler.accept(token);
                if tok.is_eog(token) && !opts.ignore_eos {
                    Some(StopReason::EndOfGeneration)
                } else {
                    sl.tokens.push(token);
                    let piece = sl.decoder.push(tok.token_bytes(token));
                    let (printable, stop) = sl.filter.push(&piece);
                    sl.text.push_str(&printable);
                    if stop {
                        Some(StopReason::StopString)
                    } else if opts.n_predict.is_some_and(|n| sl.tokens.len() >= n) {
                        Some(StopReason::MaxTokens)
                    } else if bf.seq_len(sl.index as SeqId).unwrap_or(0) >= ctx {
                        Some(StopReason::ContextFull)
                    } else {
                        sl.next = Some(token);
                        None
                    }
                }
            };
            if let Some(r) = reason {
                finished.push((k, r));
            }
        }
        let mut done = Vec::with_capacity(finished.len());
        for &(k, reason) in finished.iter().rev() {
            let mut sl = slots.remove(k);
            bf.remove_seq(sl.index as SeqId)?;
            if reason != StopReason::StopString {
                let mut rest = std::mem::replace(&mut sl.filter, StopFilter::new(&[])).finish();
                rest.push_str(&std::mem::take(&mut sl.decoder).finish());
                sl.text.push_str(&rest);
            }
            done.push(SeqOutput {
                index: sl.index,
                prompt_tokens: prompts[sl.index].len(),
                tokens: sl.tokens,
                text: sl.text,
                reason,
            });
        }
        // those ending in the same step in prompt order
        for out in done.into_iter().rev() {
            on_done(&out)?;
            let i = out.index;
            results[i] = Some(out);
        }
        if stopped {
            for sl in slots.drain(..) {
                bf.remove_seq(sl.index as SeqId)?;
            }
            break;
        }
    }
    Ok(results.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_filter(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (s, stop) = f.push(p);
            out += &s;
            if stop {
                return (out, true);
            }
        }
        out += &f.finish();
        (out, false)
    }

    #[test]
    fn stop_string_split_over_pieces_is_not_printed() {
        assert_eq!(
            run_filter(&["</s>"], &["Hello", " wor", "ld<", "/", "s>more"]),
            ("Hello world".into(), true)
        );
        assert_eq!(run_filter(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_start_a_stop() {
        let stops = vec!["STOP".to_string()];
        let mut f = StopFilter::new(&stops);
        assert_eq!(f.push("abc ST"), ("abc ".to_string(), false));
        assert_eq!(f.push("ALL"), ("STALL".to_string(), false));
        assert_eq!(f.push("S"), (String::new(), false));
        assert_eq!(f.finish(), "S");
        // no stop strings: everything passes at once, multi-byte characters intact
        assert_eq!(run_filter(&[], &["é", "日本"]), ("é日本".into(), false));
        // the earliest of several stop strings wins
        assert_eq!(run_filter(&["cd", "b"], &["abcd"]), ("a".into(), true));
    }

    #[test]
    fn timings_report_rates() {
        let t = Timings {
            prompt_tokens: 10,
            prompt_ms: 100.0,
            decode_runs: 4,
            decode_ms: 500.0,
            sampled: 5,
            sample_ms: 1.0,
        };
        let r = t.report();
        assert!(r.contains("100.00 tokens per second"), "{r}");
        assert!(r.contains("8.00 tokens per second"), "{r}");
        assert!(r.contains("601.00 ms"), "{r}");
    }
}
