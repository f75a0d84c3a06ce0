//! Many sequences in one forward (`host::batch`) on the CPU: a sequence's logits are bit-identical to
//! `CpuForward` running it alone with the same chunks (the reference path, itself bit-identical to llama.cpp's
//! CPU build), whatever runs beside it: prompt chunks of other sequences (64+ rows: tiled attention; 8+ rows:
//! tiled and repacked mat-mul kernels) and single decode tokens in the same calls. Sequences forked from a shared
//! prompt prefix decode as sequences that computed the prefix themselves. Capacity and batch errors name the
//! sequence. On the `tiny` synth model in several weight types, and on SmolLM2 and Gemma-3 when fetched; f16 and
//! q8_0 caches.

mod common;

use std::path::{Path, PathBuf};

use common::{synth_tiny, tokens, TempFile};
use host::batch::{Batch, BatchForward, CpuBatchForward};
use host::gguf::{GgmlType, GgufFile};
use host::kv_cache::CacheType;
use host::kv_paged::SeqId;
use host::model::{CpuForward, Forward, Model};

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

const CTX: usize = 512;

/// Runs `steps` (each a list of (sequence, chunk length)) over the batch forward, every sequence's tokens
/// taken in order from its own stream, and checks the logits of each chunk's last token against `CpuForward`
/// fed that sequence's chunks alone.
fn check_alone_vs_beside(model: &Model, steps: &[Vec<(SeqId, usize)>], ct: CacheType, label: &str) {
    let n_vocab = model.n_vocab();
    let n_seqs = steps.iter().flatten().map(|&(s, _)| s).max().unwrap() as usize + 1;
    let streams: Vec<Vec<u32>> = (0..n_seqs).map(|s| tokens(CTX, 11 + s as u64, n_vocab)).collect();
    let mut alone: Vec<CpuForward> = (0..n_seqs).map(|_| CpuForward::new(model, CTX, ct).unwrap()).collect();
    let mut bf = CpuBatchForward::new(model, n_seqs * CTX, 16, CTX, ct).unwrap();
    for s in 0..n_seqs {
        bf.add_seq(s as SeqId).unwrap();
    }
    let mut pos = vec![0usize; n_seqs];
    let mut batch = Batch::new();
    for (si, step) in steps.iter().enumerate() {
        batch.clear();
        let mut last = Vec::new();
        for &(s, n) in step {
            let p = pos[s as usize];
            batch.add_tokens(s, &streams[s as usize][p..p + n], p);
            last.push((s, batch.len() - 1, p, n));
            pos[s as usize] += n;
        }
        bf.decode(&batch).unwrap();
        for (s, i, p, n) in last {
            let want = alone[s as usize].forward(&streams[s as usize][p..p + n], p).unwrap().to_vec();
            let got = bf.logits(i).unwrap();
            assert!(
                bits(got) == bits(&want),
                "{label}: step {si}, sequence {s} (chunk of {n} at {p}): logits differ from the sequence alone, max |diff| {}",
                got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
            );
            // only the last token of each chunk asked for logits
            assert!(i == 0 || bf.logits(i - 1).is_none() || n == 1);
        }
    }
}

/// Prompt chunks of 70 (tiled attention), 9 and 5 rows next to decode tokens; a late joiner; 8 decode tokens.
fn schedule() -> Vec<Vec<(SeqId, usize)>> {
    vec![
        vec![(0, 5), (1, 70), (2, 9)],
        vec![(0, 1), (1, 1), (2, 12), (3, 3)],
        vec![(2, 1), (0, 1), (1, 1), (3, 1), (4, 8)],
        vec![(4, 1), (3, 1), (2, 1), (1, 1), (0, 1)],
        vec![(0, 1)],
        vec![(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (0, 1), (6, 2), (7, 1)],
    ]
}

#[test]
fn tiny_alone_equals_beside_others_bit_for_bit() {
    // Q4_0: repacked gemv/gemm by row count; Q4_K: repacked, tiled from 8 rows; Q6_K: tiled; F16: gemm from 2
    // rows; Q8_0, Q4_1: vec_dot
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::F16, GgmlType::Q8_0, GgmlType::Q4_1] {
        let f = synth_tiny(ty, 3);
        let file = GgufFile::open(&f.0).unwrap();
        let model = Model::load(&file).unwrap();
        check_alone_vs_beside(&model, &schedule(), CacheType::F16, &format!("tiny {ty}"));
        check_alone_vs_beside(&model, &schedule(), CacheType::Q8_0, &format!("tiny {ty}, q8_0 cache"));
    }
}

fn real_model(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIP: {} is absent (run scripts/fetch-models.sh)", p.display());
        None
    }
}

#[test]
fn real_models_alone_equal_beside_others_bit_for_bit() {
    for name in ["SmolLM2-135M-Instruct.Q4_1.gguf", "gemma-3-270m-q4_k_m.gguf"] {
        let Some(p) = real_model(name) else { continue };
        let file = GgufFile::open(&p).unwrap();
        let model = Model::load(&file).unwrap();
        check_alone_vs_beside(&model, &schedule(), CacheType::F16, name);
        check_alone_vs_beside(&model, &schedule(), CacheType::Q8_0, &format!("{name}, q8_0 cache"));
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b }) as u32
}

/// Greedy continuation of `seqs` (each already holding its prompt, with the logits of its last token given)
/// for `n` steps, all sequences in one batch per step.
fn greedy(bf: &mut CpuBatchForward, seqs: &[SeqId], first: Vec<u32>, n: usize) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = first.into_iter().map(|t| vec![t]).collect();
    let mut batch = Batch::new();
    for _ in 1..n {
        batch.clear();
        for (k, &s) in seqs.iter().enumerate() {
            batch.add(s, *out[k].last().unwrap(), bf.seq_len(s).unwrap(), true);
        }
        bf.decode(&batch).unwrap();
        for (k, o) in out.iter_mut().enumerate() {
            o.push(argmax(bf.logits(k).unwrap()));
        }
    }
    out
}

fn check_prefix_sharing(model: &Model, label: &str) {
    let n_vocab = model.n_vocab();
    // a prefix of 21 positions: one full page of 16 and a shared partial page that the forks copy on write
    let prefix = tokens(21, 5, n_vocab);
    let tails: Vec<Vec<u32>> = (0..3).map(|i| tokens(4 + i, 40 + i as u64, n_vocab)).collect();
    let run = |share: bool| -> (Vec<Vec<u32>>, usize) {
        let mut bf = CpuBatchForward::new(model, 512, 16, 256, CacheType::F16).unwrap();
        let mut batch = Batch::new();
        if share {
            bf.add_seq(100).unwrap();
            batch.add_tokens(100, &prefix, 0);
            bf.decode(&batch).unwrap();
            for s in 0..3 {
                bf.fork_seq(100, s, None).unwrap();
            }
            bf.remove_seq(100).unwrap();
        } else {
            for s in 0..3 {
                bf.add_seq(s).unwrap();
            }
            batch.clear();
            for s in 0..3 {
                batch.add_tokens(s, &prefix, 0);
            }
            bf.decode(&batch).unwrap();
        }
        batch.clear();
        for s in 0..3 {
            batch.add_tokens(s, &tails[s as usize], 21);
        }
        bf.decode(&batch).unwrap();
        let mut first = Vec::new();
        let mut i = 0;
        for t in &tails {
            i += t.len();
            first.push(argmax(bf.logits(i - 1).unwrap()));
        }
        let out = greedy(&mut bf, &[0, 1, 2], first, 12);
        (out, bf.cache().free_pages())
    };
    let (shared, free_shared) = run(true);
    let (own, free_own) = run(false);
    assert_eq!(shared, own, "{label}: greedy tokens with a shared prefix differ from computing it per sequence");
    // the full first page is stored once instead of three times
    assert_eq!(free_shared, free_own + 2, "{label}: pages");
}

#[test]
fn prefix_sharing_gives_the_same_greedy_tokens() {
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K] {
        let f = synth_tiny(ty, 3);
        let file = GgufFile::open(&f.0).unwrap();
        let model = Model::load(&file).unwrap();
        check_prefix_sharing(&model, &format!("tiny {ty}"));
    }
    if let Some(p) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        let file = GgufFile::open(&p).unwrap();
        let model = Model::load(&file).unwrap();
        check_prefix_sharing(&model, "SmolLM2");
    }
}

#[test]
fn batch_errors_name_the_sequence_and_change_nothing() {
    let f = synth_tiny(GgmlType::Q8_0, 3);
    let file = GgufFile::open(&f.0).unwrap();
    let model = Model::load(&file).unwrap();
    // 64 positions in pages of 16, 40 per sequence
    let mut bf = CpuBatchForward::new(&model, 64, 16, 40, CacheType::F16).unwrap();
    assert_eq!(bf.capacity(), 64);
    bf.add_seq(1).unwrap();
    bf.add_seq(2).unwrap();
    let t = tokens(40, 1, 257);
    let mut b = Batch::new();
    b.add_tokens(1, &t[..35], 0);
    b.add_tokens(2, &t[..35], 0);
    let err = bf.decode(&b).unwrap_err().to_string();
    assert!(err.contains("sequence 2 needs 3 more pages") && err.contains("64 positions"), "{err}");
    assert_eq!((bf.seq_len(1), bf.seq_len(2), bf.cache().free_pages()), (Some(0), Some(0), 4));
    // past the per-sequence context
    b.clear();
    b.add_tokens(1, &tokens(41, 1, 257), 0);
    let err = bf.decode(&b).unwrap_err().to_string();
    assert!(err.contains("sequence 1") && err.contains("context size of 40"), "{err}");
    // a gap in the positions, an unknown sequence, a token out of the vocabulary
    b.clear();
    b.add(1, 5, 1, true);
    assert!(bf.decode(&b).unwrap_err().to_string().contains("sequence 1 at position 1, expected 0"));
    b.clear();
    b.add(9, 5, 0, true);
    assert!(bf.decode(&b).unwrap_err().to_string().contains("sequence 9 does not exist"));
    b.clear();
    b.add(2, 257, 0, true);
    assert!(bf.decode(&b).unwrap_err().to_string().contains("token id 257 of sequence 2"));
    assert!(bf.decode(&Batch::new()).is_err());
    // the two fit one after the other: free, then the other
    b.clear();
    b.add_tokens(1, &t[..35], 0);
    bf.decode(&b).unwrap();
    assert!(bf.logits(34).is_some() && bf.logits(33).is_none());
    bf.remove_seq(1).unwrap();
    b.clear();
    b.add_tokens(2, &t[..35], 0);
    bf.decode(&b).unwrap();
    assert_eq!(bf.seq_len(2), Some(35));
}

/// `host run` on `model`: the generated text (stdout) of one prompt, greedy.
fn host_run(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run the host binary");
    assert!(o.status.success(), "host {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// `host run --parallel 2 --file` (three prompts, so one joins while another runs): each labelled output equals
/// `host run -p` of that prompt alone, greedy; with `--parallel 3 -p` all three copies are that output.
fn check_run_parallel(model: &Path, n: &str) {
    let prompts = ["The capital of France is", "One, two, three,", "The sky is"];
    let list = TempFile::new("prompts.txt");
    std::fs::write(&list.0, format!("{}\n\n{}\n{}\n", prompts[0], prompts[1], prompts[2])).unwrap();
    let m = model.to_str().unwrap();
    let common = ["--temp", "0", "-n", n, "--device", "cpu", "--ctx-size", "64"];
    let out = host_run(&[&["run", m, "--parallel", "2", "--file", list.0.to_str().unwrap()], &common[..]].concat());
    for (i, p) in prompts.iter().enumerate() {
        let alone = host_run(&[&["run", m, "-p", p], &common[..]].concat());
        let head = format!("--- [{i}] {p:?} (");
        let at = out.find(&head).unwrap_or_else(|| panic!("no output labelled {head} in {out}"));
        let body = &out[at..];
        let body = &body[body.find(") ---\n").unwrap() + 6..];
        let body = &body[..body.find("\n--- [").unwrap_or(body.len() - 1)];
        assert_eq!(body, alone, "{m}: prompt {i}");
    }
    let out = host_run(&[&["run", m, "--parallel", "3", "-p", prompts[2]], &common[..]].concat());
    let alone = host_run(&[&["run", m, "-p", prompts[2]], &common[..]].concat());
    assert_eq!(out.matches(&format!("{alone}\n")).count(), 3, "{out}");
}

#[test]
fn run_parallel_outputs_equal_runs_alone() {
    let f = synth_tiny(GgmlType::Q4_K, 3);
    check_run_parallel(&f.0, "10");
    if let Some(p) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        check_run_parallel(&p, "12");
    }
}

/// A q8_0 cache changes the logits (the keys and values are quantized) but only by a little: within 5% of the
/// largest logit of the f16 cache's, the same greedy token, on the tiny model and on SmolLM2.
fn check_q8_0_near_f16(model: &Model, label: &str) {
    let prompt = tokens(40, 9, model.n_vocab());
    let logits = |ct| {
        let mut f = CpuForward::new(model, 64, ct).unwrap();
        f.forward(&prompt, 0).unwrap().to_vec()
    };
    let (a, b) = (logits(CacheType::F16), logits(CacheType::Q8_0));
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    assert!(diff > 0.0 && diff < 0.05 * scale, "{label}: max |diff| {diff} of {scale}");
    assert_eq!(argmax(&a), argmax(&b), "{label}");
}

#[test]
fn q8_0_cache_is_near_f16() {
    let f = synth_tiny(GgmlType::Q8_0, 3);
    let file = GgufFile::open(&f.0).unwrap();
    check_q8_0_near_f16(&Model::load(&file).unwrap(), "tiny");
    if let Some(p) = real_model("SmolLM2-135M-Instruct.Q4_1.gguf") {
        let file = GgufFile::open(&p).unwrap();
        check_q8_0_near_f16(&Model::load(&file).unwrap(), "SmolLM2");
    }
}
