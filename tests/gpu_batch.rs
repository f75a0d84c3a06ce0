//! Many sequences through one forward on the GPU (`backend::cuda_batch::CudaBatchForward`): the paged attention
//! kernels against their CPU twin (`cpu::attention_rows` over `cpu::Paged` rows) with shuffled page tables; each
//! sequence's greedy output in batches of 1, 2, 8 and 32 (mixed prompt chunks and decode tokens, decode-only
//! steps replayed from the per-bucket graphs) against the same sequence alone through `CudaForward`, on the
//! `tiny` synth model and on SmolLM2 when fetched; forked sequences sharing a cached prefix against unshared ones;
//! a sequence that does not fit is refused by name; greedy tokens chosen on the device equal the host's. Skips with a printed reason without a CUDA device.

mod common;

use std::path::Path;

use common::{attn_params, cuda_or_skip, forced_logits, max_rel_err, model_path, rel_dist, synth_tiny, tokens, Rng,
             ROUNDING_REACH};
use half::f16;
use host::backend::cpu;
use host::backend::Device;
use host::backend::cuda::{AttnScratch, AttnShape};
use host::backend::cuda_batch::{CudaBatchForward, GPU_PAGE_SIZE};
use host::backend::cuda_forward::CudaForward;
use host::batch::{Batch, BatchForward};
use host::gguf::{GgmlType, GgufFile};
use host::kv_cache::CacheType;
use host::kv_paged::SeqId;
use host::model::{Forward, Model};

/// Attention reads f16 K/V on both sides; the sums differ only in order (as `gpu_forward`'s ATTN_TOL).
const ATTN_TOL: f32 = 1e-4;
/// Tokens each sequence generates.
const N_GEN: usize = 16;
/// How far (of the largest logit) a sequence's logits in a batch may be from its logits alone at least (f16
/// rounding through other kernels); with 8-bit activations, `ROUNDING_REACH` times their own reach (a sequence
/// alone, 8-bit against exact activations, the largest over its steps).
const BATCH_LOGIT_TOL: f32 = 1e-2;
/// Text the SmolLM2 prompts are cut from.
const PASSAGE: &str = "The lighthouse keeper climbed the spiral stairs every evening at sunset. From the top he \
could see the fishing boats returning to the harbour, their nets heavy with the day's catch. In winter the storms \
came from the north, and the waves broke over the rocks with a sound like thunder. His daughter had learned to \
read the weather from the colour of the sky, and she kept a notebook of every ship that passed. One morning a \
small sailing boat appeared on the horizon without a flag. The keeper watched it through his telescope for an \
hour before he rowed out to meet it. Inside he found a young man asleep beside a wooden box full of old maps. \
When the stranger woke, he explained that he was searching for an island that no chart had recorded for a \
hundred years. The keeper laughed, but his daughter opened her notebook and pointed to a page from the previous \
spring, where she had drawn the outline of land that had appeared once in the fog and then vanished.";

/// (argmax, best - second best) of `x`.
fn top2(x: &[f32]) -> (u32, f32) {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    let second = x.iter().enumerate().filter(|&(i, _)| i != best).map(|(_, &v)| v).fold(f32::NEG_INFINITY, f32::max);
    (best as u32, x[best] - second)
}

// ----------------------------------------------------------------------------
// (a) the paged attention kernels against the CPU twin
// ----------------------------------------------------------------------------

/// Sequences of lengths 1..2048 in one launch, each with its last few positions as queries (a prompt chunk,
/// causal inside it) or its last one (a decode token), keys and values in pages taken from a shuffled pool (no
/// sequence's pages are contiguous or in order), against `cpu::attention_rows` over the same pages: GQA groups 1,
/// 3, 4 and 8, head dims 64, 128 and 256 (flash-decoding kernels and, for 8 heads of 256, the general split
/// kernel), with and without a sliding window, splits covering a graph-sized context. The arrival counters are
/// left at zero.
#[test]
fn paged_attention_matches_cpu_with_shuffled_pages() {
    let Some(gpu) = cuda_or_skip("paged_attention_matches_cpu_with_shuffled_pages") else { return };
    let mut rng = Rng::new(29);
    let ps = GPU_PAGE_SIZE;
    // (total length, queries at its end)
    let seqs: [(usize, usize); 10] = [(1, 1), (2, 2), (15, 1), (16, 5), (17, 1), (255, 3), (256, 1), (257, 9), (700, 1), (2048, 4)];
    let ctx = 2048usize;
    let max_pages = ctx / ps;
    let n_pages: usize = seqs.iter().map(|&(n, _)| n.div_ceil(ps)).sum::<usize>() + 3;
    // a shuffled pool: each sequence takes the next pages of a permutation
    let mut perm: Vec<u32> = (0..n_pages as u32).collect();
    for i in (1..perm.len()).rev() {
        perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    let mut tables: Vec<Vec<u32>> = Vec::new();
    let mut next = 0;
    for &(n, _) in &seqs {
        tables.push(perm[next..next + n.div_ceil(ps)].to_vec());
        next += n.div_ceil(ps);
    }
    // one row per query: (sequence, position)
    let rows: Vec<(usize, usize)> = seqs.iter().enumerate().flat_map(|(i, &(n, m))| (n - m..n).map(move |p| (i, p))).collect();
    let n_tok = rows.len();
    let splits = ctx / 256;
    for (n_heads, n_kv, hd) in [(8, 8, 64), (9, 3, 128), (12, 3, 64), (8, 2, 256), (16, 2, 64), (32, 4, 128), (8, 1, 256)] {
        let width = n_kv * hd;
        let k: Vec<f16> = rng.vec(n_pages * ps * width, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
        let v: Vec<f16> = rng.vec(n_pages * ps * width, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
        let bits = |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<u16>>();
        let (dk, dv) = (gpu.upload(&bits(&k)).unwrap(), gpu.upload(&bits(&v)).unwrap());
        let scale = 1.0 / (hd as f32).sqrt();
        // page-table rows per token (row of its sequence), padded with page 0
        let mut tbl = vec![0u32; seqs.len() * max_pages];
        for (i, t) in tables.iter().enumerate() {
            tbl[i * max_pages..i * max_pages + t.len()].copy_from_slice(t);
        }
        // the tables buffer must hold n_tok rows
        tbl.resize(n_tok.max(seqs.len()) * max_pages, 0);
        let tok_table: Vec<u32> = rows.iter().map(|&(i, _)| i as u32).collect();
        let pos: Vec<u32> = rows.iter().map(|&(_, p)| p as u32).collect();
        let (dtbl, dtt, dpos) = (gpu.upload(&tbl).unwrap(), gpu.upload(&tok_table).unwrap(), gpu.upload(&pos).unwrap());
        for window in [0usize, 100] {
            let s = AttnShape { n_tok, n_heads, n_kv_heads: n_kv, head_dim: hd, head_dim_v: hd, scale, window };
            let mut scratch = AttnScratch::new(&gpu, &s, splits).unwrap();
            let q: Vec<f32> = rng.vec(n_tok * n_heads * hd, -3.0, 3.0);
            let dq = gpu.upload(&q).unwrap();
            let mut out = gpu.upload(&vec![f32::NAN; n_tok * n_heads * hd]).unwrap();
            gpu.attention_paged(&mut out, &dq, &dk, &dv, &mut scratch, &s, splits, &dpos, &dtbl, &dtt, max_pages, ctx - 1)
                .unwrap();
            let got = gpu.download(&out).unwrap();
            assert!(gpu.download(&scratch.counters).unwrap().iter().all(|&c| c == 0), "counters not reset");
            let mut worst = 0.0f32;
            let mut r = 0;
            for (i, &(n, m)) in seqs.iter().enumerate() {
                let p = attn_params(m, n - m, n_heads, n_kv, hd, scale, window);
                let kr = cpu::Paged { data: &k[..], pages: &tables[i], page_size: ps, width, n_pos: n };
                let vr = cpu::Paged { data: &v[..], pages: &tables[i], page_size: ps, width, n_pos: n };
                let mut want = vec![0.0; m * n_heads * hd];
                cpu::attention_rows(&mut want, &q[r * n_heads * hd..(r + m) * n_heads * hd], &kr, &vr, &p);
                let err = max_rel_err(&got[r * n_heads * hd..(r + m) * n_heads * hd], &want, 1e-2);
                assert!(err <= ATTN_TOL, "heads {n_heads}/{n_kv} hd {hd} window {window} length {n}: rel err {err}");
                worst = worst.max(err);
                r += m;
            }
            println!("paged attention heads={n_heads}/{n_kv} hd={hd} window={window}: {n_tok} queries of {} sequences, max rel err {worst:.2e}", seqs.len());
        }
    }
}

// ----------------------------------------------------------------------------
// (b) greedy output in batches = greedy output alone
// ----------------------------------------------------------------------------

/// A sequence's greedy run: its tokens, the margin between the two best logits at each step, each step's
/// logits, and how far (of the largest) the 8-bit activations moved those from the exact products' at most.
struct Greedy {
    toks: Vec<u32>,
    margins: Vec<f32>,
    logits: Vec<Vec<f32>>,
    reach: f32,
}

/// Sequence alone through `CudaForward` (the prompt in one call, then one token per call), with its 8-bit
/// activations (the default), then again along the same tokens with exact products to measure their reach.
fn alone(fwd: &mut CudaForward, prompt: &[u32], n_gen: usize) -> Greedy {
    fwd.reset();
    let mut logits = fwd.forward(prompt, 0).unwrap().to_vec();
    let mut g = Greedy { toks: Vec::new(), margins: Vec::new(), logits: Vec::new(), reach: 0.0 };
    for i in 0..n_gen {
        let (t, m) = top2(&logits);
        g.toks.push(t);
        g.margins.push(m);
        let next = if i + 1 < n_gen { fwd.forward(&[t], prompt.len() + i).unwrap().to_vec() } else { Vec::new() };
        g.logits.push(std::mem::replace(&mut logits, next));
    }
    fwd.set_q8_activations(false);
    let exact = forced_logits(fwd, prompt, &g.toks[..n_gen - 1]);
    fwd.set_q8_activations(true);
    g.reach = exact.iter().zip(&g.logits).fold(0.0f32, |m, (e, q)| m.max(rel_dist(e, q)));
    g
}

/// Greedy outputs of `prompts` through one batch forward with continuous batching: sequence i joins at step
/// i % 3 and reads its prompt in chunks of 1 + 5 (i % 4) tokens, beside the other sequences' chunks and decode
/// tokens; once every sequence decodes, the steps are decode-only (graph buckets). `device_argmax`: the tokens
/// are chosen on the device (`decode_greedy`), else from the downloaded logits (then kept in `logits`, when given:
/// sequence, step).
fn batched(bf: &mut CudaBatchForward, prompts: &[Vec<u32>], n_gen: usize, device_argmax: bool,
           mut logits: Option<&mut Vec<Vec<Vec<f32>>>>) -> Vec<Vec<u32>> {
    let n = prompts.len();
    for i in 0..n {
        bf.add_seq(i as SeqId).unwrap();
    }
    if let Some(l) = logits.as_deref_mut() {
        *l = vec![Vec::new(); n];
    }
    let mut fed = vec![0usize; n];
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut batch = Batch::new();
    let mut step = 0;
    while out.iter().any(|o| o.len() < n_gen) {
        batch.clear();
        let mut want: Vec<(usize, usize)> = Vec::new(); // (sequence, entry with its logits)
        for i in 0..n {
            if step < i % 3 || out[i].len() == n_gen {
                continue;
            }
            let p = &prompts[i];
            if fed[i] < p.len() {
                let m = (1 + 5 * (i % 4)).min(p.len() - fed[i]);
                for k in 0..m {
                    let last = fed[i] + k + 1 == p.len();
                    if last {
                        want.push((i, batch.len()));
                    }
                    batch.add(i as SeqId, p[fed[i] + k], fed[i] + k, last);
                }
                fed[i] += m;
            } else {
                want.push((i, batch.len()));
                let t = *out[i].last().expect("the prompt's logits gave a token");
                batch.add(i as SeqId, t, p.len() + out[i].len() - 1, true);
            }
        }
        if device_argmax {
            let chosen = bf.decode_greedy(&batch).unwrap();
            assert!(bf.logits(0).is_none(), "greedy mode keeps no logits");
            for (i, e) in want {
                out[i].push(chosen[e].expect("the entry asked for logits"));
            }
        } else {
            bf.decode(&batch).unwrap();
            for (i, e) in want {
                let l = bf.logits(e).unwrap();
                out[i].push(top2(l).0);
                if let Some(keep) = logits.as_deref_mut() {
                    keep[i].push(l.to_vec());
                }
            }
        }
        step += 1;
    }
    for i in 0..n {
        bf.remove_seq(i as SeqId).unwrap();
    }
    out
}

/// Each sequence's batched greedy output equals its output alone for all `N_GEN` tokens, or parts from it where
/// the batch's logits, like those of every step before, are within rounding of alone's: `BATCH_LOGIT_TOL` of the
/// largest, or `ROUNDING_REACH` times the sequence's 8-bit rounding reach. The batch takes other kernels than one
/// sequence alone (prompt chunks through the int8 mat-mul beside other sequences' rows, the paged attention
/// instead of the flash kernels), and a parting within that distance is rounding. Margins and distances at every
/// parting are printed.
fn check_greedy(label: &str, got: &[Vec<u32>], logits: &[Vec<Vec<f32>>], refs: &[Greedy]) {
    let mut worst = 0.0f32;
    for (i, (g, r)) in got.iter().zip(refs).enumerate() {
        let parting = g.iter().zip(&r.toks).position(|(a, b)| a != b);
        let tol = BATCH_LOGIT_TOL.max(ROUNDING_REACH * r.reach);
        // the relative logit distance at every step up to and including the parting
        let mut dist = 0.0f32;
        for (k, (lb, lr)) in logits[i].iter().zip(&r.logits).enumerate().take(parting.map_or(N_GEN, |k| k + 1)) {
            let d = rel_dist(lb, lr);
            assert!(d <= tol, "{label}: sequence {i} step {k}: logits {d:.2e} of the largest from alone (allowed \
                    {tol:.2e}; 8-bit rounding reaches {:.2e})", r.reach);
            dist = dist.max(d);
        }
        worst = worst.max(dist / tol);
        let Some(k) = parting else { continue };
        println!("{label}: sequence {i} parts from its output alone at token {k}: reference margin {:.4}, logits \
                  within {dist:.2e} of the largest (8-bit rounding reaches {:.2e})", r.margins[k], r.reach);
    }
    println!("{label}: batch logits within {:.0}% of the allowed distance from alone's", 100.0 * worst);
}

fn greedy_batches_equal_alone(path: &Path, label: &str, prompts: &[Vec<u32>]) {
    let file = GgufFile::open(path).unwrap();
    let model = Model::load(&file).unwrap();
    let ctx = 256;
    let mut fwd = CudaForward::new(&model, ctx, 0).unwrap();
    let refs: Vec<Greedy> = prompts.iter().map(|p| alone(&mut fwd, p, N_GEN)).collect();
    let mut logits = Vec::new();
    for n in [1usize, 2, 8, 32] {
        let mut bf = fwd.batch_forward(n * ctx, ctx).unwrap();
        let got = batched(&mut bf, &prompts[..n], N_GEN, false, Some(&mut logits));
        check_greedy(&format!("{label} batch of {n}"), &got, &logits, &refs[..n]);
        if n == 8 {
            // the decode-only steps replayed from graphs give what the same steps launched op by op give
            bf.set_graphs(false);
            let direct = batched(&mut bf, &prompts[..n], N_GEN, false, None);
            assert_eq!(got, direct, "{label}: graph replay and direct launches differ");
            // and the tokens chosen on the device are the argmax of the same logits
            bf.set_graphs(true);
            let dev = batched(&mut bf, &prompts[..n], N_GEN, true, None);
            assert_eq!(got, dev, "{label}: device argmax differs from the host's");
        }
        println!("{label}: batch of {n}: {} sequences x {N_GEN} tokens checked", n);
    }
}

#[test]
fn tiny_greedy_in_batches_equals_alone() {
    if cuda_or_skip("tiny_greedy_in_batches_equals_alone").is_none() {
        return;
    }
    let f = synth_tiny(GgmlType::Q4_0, 5);
    let n_vocab = Model::load(&GgufFile::open(&f.0).unwrap()).unwrap().n_vocab();
    let prompts: Vec<Vec<u32>> = (0..32).map(|i| tokens(3 + (i * 7) % 45, 100 + i as u64, n_vocab)).collect();
    greedy_batches_equal_alone(&f.0, "tiny Q4_0", &prompts);
}

#[test]
fn smollm2_greedy_in_batches_equals_alone() {
    if cuda_or_skip("smollm2_greedy_in_batches_equals_alone").is_none() {
        return;
    }
    let Some(p) = model_path("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    // 32 natural-text prompts of 3 to 47 tokens: pieces of one passage, each with its own start
    let tok = host::tokenizer::Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap();
    let text = tok.encode(PASSAGE, false, false).unwrap();
    let prompts: Vec<Vec<u32>> = (0..32)
        .map(|i| {
            let start = (i * 13) % (text.len() - 48);
            text[start..start + 3 + (i * 7) % 45].to_vec()
        })
        .collect();
    greedy_batches_equal_alone(&p, "SmolLM2", &prompts);
}

// ----------------------------------------------------------------------------
// (c) forks share their prefix; (d) a sequence that does not fit is named
// ----------------------------------------------------------------------------

/// Greedy decode of the sequences 0..n in lockstep from their current state, the first tokens given.
fn decode_lockstep(bf: &mut CudaBatchForward, first: &[u32], n_gen: usize) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = first.iter().map(|&t| vec![t]).collect();
    let mut batch = Batch::new();
    while out[0].len() < n_gen {
        batch.clear();
        for (i, o) in out.iter().enumerate() {
            let s = i as SeqId;
            batch.add(s, *o.last().unwrap(), bf.seq_len(s).unwrap(), true);
        }
        bf.decode(&batch).unwrap();
        for (i, o) in out.iter_mut().enumerate() {
            o.push(top2(bf.logits(i).unwrap()).0);
        }
    }
    out
}

/// Four sequences forked from one 37-token prompt (two full pages and a shared, partly filled third page, copied
/// on each sequence's first write) and given different suffixes decode as four sequences that computed the
/// prompt themselves.
#[test]
fn forked_prefix_decodes_as_unshared() {
    if cuda_or_skip("forked_prefix_decodes_as_unshared").is_none() {
        return;
    }
    let Some(path) = model_path("SmolLM2-135M-Instruct.Q4_1.gguf") else { return };
    let file = GgufFile::open(&path).unwrap();
    let model = Model::load(&file).unwrap();
    let ctx = 128;
    let fwd = CudaForward::new(&model, ctx, 0).unwrap();
    let prompt = tokens(37, 7, model.n_vocab());
    let suffixes: Vec<Vec<u32>> = (0..4).map(|i| tokens(5, 50 + i, model.n_vocab())).collect();
    let run_suffixes = |bf: &mut CudaBatchForward| -> Vec<u32> {
        let mut b = Batch::new();
        for (i, s) in suffixes.iter().enumerate() {
            b.add_tokens(i as SeqId, s, prompt.len());
        }
        bf.decode(&b).unwrap();
        (0..4).map(|i| top2(bf.logits(5 * i + 4).unwrap()).0).collect()
    };

    // shared: sequence 0 reads the prompt, 1..3 fork it
    let mut bf = fwd.batch_forward(4 * ctx, ctx).unwrap();
    bf.add_seq(0).unwrap();
    let mut b = Batch::new();
    b.add_tokens(0, &prompt, 0);
    bf.decode(&b).unwrap();
    for s in 1..4 {
        bf.fork_seq(0, s, None).unwrap();
    }
    let pages0 = bf.pages().seq_pages(0).unwrap().to_vec();
    assert_eq!(pages0.len(), 3);
    assert_eq!(bf.pages().seq_pages(3).unwrap(), &pages0[..]);
    assert_eq!(bf.pages().page_refs(pages0[2]), 4);
    let first = run_suffixes(&mut bf);
    // every sequence wrote into a page of its own: copies of the partly filled page, the last writer keeping the
    // original once nobody else holds it
    let mut thirds = Vec::new();
    for s in 0..4 {
        let p = bf.pages().seq_pages(s).unwrap();
        assert_eq!(p[..2], pages0[..2], "the full pages stay shared");
        assert!(!thirds.contains(&p[2]), "sequence {s} shares its written page");
        assert_eq!(bf.pages().page_refs(p[2]), 1, "sequence {s}'s written page has one holder");
        thirds.push(p[2]);
    }
    assert_eq!(bf.pages().page_refs(pages0[0]), 4);
    let shared = decode_lockstep(&mut bf, &first, N_GEN);

    // unshared: every sequence reads the prompt itself, in a batch of the same 37 rows as sequence 0 above (so the
    // same kernels see the same shapes and the outputs can be compared bit for bit)
    let mut bf = fwd.batch_forward(4 * ctx, ctx).unwrap();
    for s in 0..4 {
        bf.add_seq(s).unwrap();
        let mut b = Batch::new();
        b.add_tokens(s, &prompt, 0);
        bf.decode(&b).unwrap();
    }
    let first_u = run_suffixes(&mut bf);
    let unshared = decode_lockstep(&mut bf, &first_u, N_GEN);
    assert_eq!(shared, unshared, "forked sequences decode differently from unshared ones");
    println!("fork: 4 sequences x {N_GEN} tokens equal with and without the shared prefix");
}

/// A sequence whose positions do not fit the pool is refused with an error naming it, nothing changes, and the
/// others go on; a sequence past its context is refused too.
#[test]
fn sequence_that_does_not_fit_is_named() {
    if cuda_or_skip("sequence_that_does_not_fit_is_named").is_none() {
        return;
    }
    let f = synth_tiny(GgmlType::Q8_0, 5);
    let file = GgufFile::open(&f.0).unwrap();
    let model = Model::load(&file).unwrap();
    let mut bf = CudaBatchForward::new(&model, 64, 64, 0).unwrap();
    assert_eq!(bf.capacity(), 64);
    bf.add_seq(0).unwrap();
    bf.add_seq(1).unwrap();
    let mut b = Batch::new();
    b.add_tokens(0, &tokens(40, 1, model.n_vocab()), 0);
    bf.decode(&b).unwrap();
    let mut b = Batch::new();
    b.add_tokens(0, &[5], 40);
    b.add_tokens(1, &tokens(40, 2, model.n_vocab()), 0);
    let err = bf.decode(&b).unwrap_err().to_string();
    assert!(err.contains("sequence 1") && err.contains("64 positions"), "{err}");
    assert_eq!((bf.seq_len(0), bf.seq_len(1)), (Some(40), Some(0)));
    let mut b = Batch::new();
    b.add_tokens(0, &[5], 40);
    bf.decode(&b).unwrap();
    assert!(bf.logits(0).is_some());
    let mut b = Batch::new();
    b.add_tokens(0, &tokens(30, 3, model.n_vocab()), 41);
    let err = bf.decode(&b).unwrap_err().to_string();
    assert!(err.contains("sequence 0") && err.contains("context size of 64"), "{err}");
    println!("does not fit: {err}");
}

/// The paged GPU cache is f16 only: asking the CUDA batch forward for another cache type is a usage error that
/// names the type and the ways out, before any device is touched (so this runs without a GPU).
#[test]
fn the_gpu_batch_forward_refuses_other_cache_types() {
    let f = synth_tiny(GgmlType::Q8_0, 5);
    let file = GgufFile::open(&f.0).unwrap();
    let model = Model::load(&file).unwrap();
    for ty in [CacheType::Q8_0, CacheType::F32] {
        let err = match (Device::Cuda { ordinal: 0 }).open_batch_forward(&model, 64, 32, ty) {
            Ok(_) => panic!("a {} cache was accepted by the GPU batch forward", ty.name()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("f16 only") && err.contains(ty.name()) && err.contains("--cache-type f16"), "{err}");
    }
}
