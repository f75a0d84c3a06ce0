//! The batched worker of `host serve`: continuous batching over the many-sequence forward (`crate::batch`), on
//! the CPU (`CpuBatchForward`) or the GPU (`backend::cuda_batch::CudaBatchForward`).
//!
//! Slot i is sequence i of one batch forward whose paged KV cache holds `parallel` sequences of `ctx_size`
//! positions (fixed at start). Each step the worker
//! 1. admits queued requests into free slots (a request joins the running batch at the next step),
//! 2. ends the requests whose client left, whose deadline passed or whose shutdown grace is over,
//! 3. builds one `Batch`: the next prompt chunk of every sequence still reading its prompt (at most
//!    `prompt_chunk` positions, chunks aligned to multiples of it) and the last sampled token of every
//!    generating sequence,
//! 4. runs one forward call and samples each sequence whose logits came back with its own sampler, sending the
//!    token at once (when every sampling sequence wants the plain argmax and no log-probabilities, the backend
//!    picks the tokens itself, `BatchForward::decode_greedy`: on a GPU only their ids come back); a request that ends leaves the batch in this step, its sequence cut back to the whole prompt
//!    chunks it computed (kept as the slot's cached prefix for the next request), the other pages freed.
//!
//! On the CPU a sequence's logits do not depend on what else is in the batch (its rows use the kernels of its own
//! row count, its attention its own keys), so a request's output is the same alone or beside others, and prefix
//! reuse stays bit-identical to a cold run as on the single-sequence path. On the GPU a row's numbers depend on
//! whether its call has one row or more (mat-vec or mat-mul kernels), not on the other rows' values.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use tokio::sync::watch;

use super::engine::{
    engine_info, finish_err, finish_ok, pick_slot, sample, take_chosen, Active, EngineConfig, FailKind, Intake, Job,
    Sampled, Status, Worker,
};
use crate::batch::{Batch, BatchForward};
use crate::backend::Device;
use crate::kv_paged::{SeqId, DEFAULT_PAGE_SIZE};
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use crate::Result;

/// One sequence of the batch: its cached prompt prefix and, when busy, the request it serves.
struct Slot {
    /// Prompt tokens whose keys and values the sequence holds, computed in whole aligned chunks (reusable).
    cached: Vec<u32>,
    active: Option<Active>,
}

/// What a slot put into the step's batch.
struct Planned {
    slot: usize,
    /// Prompt position after this step's chunk (== the old one for a decode token).
    prompt_end: usize,
    /// Positions added to the sequence.
    n: usize,
    /// Batch entry whose logits this sequence samples from, if any.
    logits_entry: Option<usize>,
}

pub(super) fn serve(
    w: &Worker,
    cfg: &EngineConfig,
    rx: &Receiver<Job>,
    status: &watch::Sender<Status>,
    model: &Model,
    tok: &Arc<Tokenizer>,
    ctx_size: usize,
) -> Result<()> {
    let page = DEFAULT_PAGE_SIZE;
    // every sequence may reach ctx_size positions at once: the pool never runs out
    let capacity = cfg.parallel * ctx_size.next_multiple_of(page);
    let mut bfb = cfg.device.open_batch_forward(model, capacity, ctx_size, cfg.cache_type)?;
    let bf = bfb.as_mut();
    for i in 0..cfg.parallel {
        bf.add_seq(i as SeqId)?;
    }
    eprintln!(
        "kv cache: {} positions in pages of {page} ({} sequences, each may hold {ctx_size} positions), {}, {:.1} MiB; \
         continuous batching, prompt chunks of {}",
        bf.capacity(),
        cfg.parallel,
        if cfg.device == Device::Cpu { cfg.cache_type.name() } else { "f16" },
        bf.kv_bytes() as f64 / (1 << 20) as f64,
        cfg.prompt_chunk
    );
    let info = engine_info(cfg, model, tok, ctx_size, bf.capacity());
    metrics::gauge!("host_sequences_total").set(cfg.parallel as f64);
    metrics::gauge!("host_kv_positions_total").set(info.kv_positions as f64);
    let _ = status.send(Status::Ready(Arc::new(info)));

    let chunk = cfg.prompt_chunk;
    let mut slots: Vec<Slot> = (0..cfg.parallel).map(|_| Slot { cached: Vec::new(), active: None }).collect();
    let mut batch = Batch::new();
    let mut plan: Vec<Planned> = Vec::with_capacity(cfg.parallel);
    let mut most = 0usize; // most sequences in one forward call so far
    let mut open = true; // the job channel still has senders
    loop {
        // 1. admit waiting jobs into free slots
        while open && slots.iter().any(|s| s.active.is_none()) {
            let busy = slots.iter().any(|s| s.active.is_some());
            match w.next_job(rx, busy) {
                Intake::Job(job) => {
                    let free = slots.iter().map(|s| (&s.cached, s.active.is_none()));
                    let Some((i, reuse)) = pick_slot(free, &job, chunk) else { continue };
                    bf.truncate_seq(i as SeqId, reuse)?;
                    slots[i].cached.truncate(reuse);
                    slots[i].active = Some(Active::new(*job, reuse));
                    publish_occupancy(&slots, &*bf);
                }
                Intake::Again => continue,
                Intake::Empty => break,
                Intake::Closed => open = false,
            }
        }
        if !open && slots.iter().all(|s| s.active.is_none()) {
            return Ok(());
        }

        // 2. requests that must stop leave before the step
        let drain_over = w.drain_over();
        for i in 0..slots.len() {
            let Some(a) = slots[i].active.as_ref() else { continue };
            if let Some((kind, message)) = a.must_stop(drain_over) {
                finish_err(a, kind, message);
                release(&mut slots, &mut *bf, i, chunk)?;
            }
        }

        // 3. one batch: a prompt chunk or one token of each busy sequence
        batch.clear();
        plan.clear();
        for (i, s) in slots.iter().enumerate() {
            let Some(a) = s.active.as_ref() else { continue };
            let seq = i as SeqId;
            let n_prompt = a.job.prompt.len();
            if a.prompt_pos < n_prompt {
                // chunks end at multiples of `chunk`, so a cold run and a run with a reused prefix batch alike
                let end = ((a.prompt_pos / chunk + 1) * chunk).min(n_prompt);
                for p in a.prompt_pos..end {
                    batch.add(seq, a.job.prompt[p], p, p + 1 == n_prompt);
                }
                let logits_entry = (end == n_prompt).then(|| batch.len() - 1);
                plan.push(Planned { slot: i, prompt_end: end, n: end - a.prompt_pos, logits_entry });
            } else if let Some(t) = a.pending {
                batch.add(seq, t, a.n_past, true);
                plan.push(Planned { slot: i, prompt_end: a.prompt_pos, n: 1, logits_entry: Some(batch.len() - 1) });
            }
        }
        if batch.is_empty() {
            continue;
        }
        if !cfg.step_delay.is_zero() {
            std::thread::sleep(cfg.step_delay);
        }
        // when every sequence sampling this step wants the plain argmax, the device picks the tokens and only
        // their ids come back (not a row of logits per sequence)
        let greedy = plan
            .iter()
            .filter(|p| p.logits_entry.is_some())
            .all(|p| slots[p.slot].active.as_ref().is_some_and(Active::device_may_choose));
        let run = if greedy { bf.decode_greedy(&batch) } else { bf.decode(&batch).map(|()| Vec::new()) };
        let chosen = match run {
            Ok(c) => c,
            Err(e) => {
                // nothing was computed (decode checks first): every request of the batch fails, the rest goes on
                let message = format!("the forward pass failed: {e}");
                for p in &plan {
                    finish_err(slots[p.slot].active.as_ref().unwrap(), FailKind::Internal, message.clone());
                    release(&mut slots, &mut *bf, p.slot, chunk)?;
                }
                continue;
            }
        };
        metrics::counter!("host_forward_calls_total").increment(1);
        metrics::counter!("host_forward_sequences_total").increment(plan.len() as u64);
        metrics::counter!("host_forward_tokens_total").increment(batch.len() as u64);
        if plan.len() > most {
            most = plan.len();
            metrics::gauge!("host_batch_sequences_max").set(most as f64);
        }

        // 4. sample, send, and let the finished ones go
        for p in &plan {
            let a = slots[p.slot].active.as_mut().unwrap();
            a.prompt_pos = p.prompt_end;
            a.n_past += p.n;
            a.pending = None;
            let Some(e) = p.logits_entry else { continue };
            let sampled = if greedy {
                take_chosen(a, tok, ctx_size, chosen[e].expect("the entry asked for logits"))
            } else {
                let logits = bf.logits(e).expect("the entry asked for logits");
                a.logits.clear();
                a.logits.extend_from_slice(logits);
                sample(a, tok, ctx_size)
            };
            match sampled {
                Sampled::Next(t) => a.pending = Some(t),
                Sampled::Finished(reason) => {
                    finish_ok(a, reason);
                    release(&mut slots, &mut *bf, p.slot, chunk)?;
                }
            }
        }
        publish_occupancy(&slots, &*bf);
    }
}

/// Slot `i`'s request is over: its sequence keeps the whole prompt chunks it computed (the slot's cached prefix)
/// and frees the rest of its pages.
fn release(slots: &mut [Slot], bf: &mut dyn BatchForward, i: usize, chunk: usize) -> Result<()> {
    let a = slots[i].active.take().expect("release of a busy slot");
    let done = a.prompt_pos / chunk * chunk;
    bf.truncate_seq(i as SeqId, done)?;
    slots[i].cached = a.job.prompt[..done].to_vec();
    publish_occupancy(slots, bf);
    Ok(())
}

fn publish_occupancy(slots: &[Slot], bf: &dyn BatchForward) {
    let busy = slots.iter().filter(|s| s.active.is_some()).count();
    let used: usize = (0..slots.len()).map(|i| bf.seq_len(i as SeqId).unwrap_or(0)).sum();
    metrics::gauge!("host_sequences_busy").set(busy as f64);
    metrics::gauge!("host_kv_positions_used").set(used as f64);
}
