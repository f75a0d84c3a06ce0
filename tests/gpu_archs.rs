//! The GPU forward against the CPU on the qwen3, phi3 and mistral3 fixtures (`tests/fixtures/{arch}/model.gguf`,
//! see tests/archs.rs): qwen3's per-head q/k norms in the batch and the fused decode path, phi3's row views of its
//! fused `attn_qkv` / `ffn_up` and its LongRoPE factors and attention factor in the GPU's RoPE table (short
//! factors in a context of 256, long ones in 1024), mistral3's head_dim != dim / n_heads.
//! Skips with a printed reason when no CUDA device is present.

mod common;

use std::path::Path;

use common::{cuda_or_skip, Rng};
use host::backend::cuda_forward::CudaForward;
use host::gguf::GgufFile;
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};

fn argmax(x: &[f32]) -> usize {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b })
}

fn random_ids(n: usize, n_vocab: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| (rng.next_u64() % (n_vocab as u64 - 1)) as u32).collect()
}

/// Exact-f32 GPU kernels against the CPU oracle (no llama.cpp activation rounding), in a context of `ctx`
/// positions: every position of an `n_prompt`-token batch within 2e-3 of the largest logit (the tolerance of
/// tests/gpu_forward.rs), top-1 on 99% of them, then 32 greedy decode steps (the GPU's captured graph with device
/// argmax) agreeing on at least 16 tokens.
fn exact_paths_agree(arch: &str, ctx: usize, n_prompt: usize) {
    let test = format!("{arch}_gpu_matches_cpu (ctx {ctx})");
    if cuda_or_skip(&test).is_none() {
        return;
    }
    let path = Path::new("tests/fixtures").join(arch).join("model.gguf");
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let n_vocab = model.n_vocab();
    let mut cpu = CpuForward::new(&model, ctx, CacheType::F16).unwrap();
    cpu.set_llama_rounding(false);
    let mut gpu = CudaForward::new(&model, ctx, 0).unwrap();
    gpu.set_q8_activations(false);

    let ids = random_ids(n_prompt, n_vocab, 17);
    let (lc, lg) = (cpu.forward_all(&ids, 0).unwrap(), gpu.forward_all(&ids, 0).unwrap());
    let (mut worst, mut same) = (0.0f32, 0);
    for (p, (c, g)) in lc.chunks(n_vocab).zip(lg.chunks(n_vocab)).enumerate() {
        let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = c.iter().zip(g).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        worst = worst.max(diff / scale);
        assert!(diff <= 2e-3 * scale, "{test}: position {p}: logits differ by {diff} (max |logit| {scale})");
        same += usize::from(argmax(c) == argmax(g));
    }
    println!("{test}: {n_prompt}-token batch: max |cpu - gpu| / max |logit| = {worst:.3e}, top-1 {same}/{n_prompt}");
    assert!(same * 100 >= 99 * n_prompt, "{test}: top-1 agreement {same}/{n_prompt}");

    let last = |l: &[f32]| argmax(&l[(n_prompt - 1) * n_vocab..]) as u32;
    let (mut tc, mut tg) = (vec![last(&lc)], vec![last(&lg)]);
    for i in 0..31 {
        let pos = n_prompt + i;
        tc.push(argmax(cpu.forward(&tc[i..i + 1], pos).unwrap()) as u32);
        tg.push(gpu.greedy_step(tg[i], pos).unwrap());
    }
    let agree = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
    println!("{test}: greedy cpu {tc:?}\n{test}: greedy gpu {tg:?}\n{test}: {agree} of 32 agree");
    assert!(agree >= 16, "{test}: only {agree} greedy tokens agree");
}

/// The defaults of both backends (the CPU with llama.cpp's 8-bit activation rounding, the GPU with its 8-bit
/// kernels, tensor-core prefill and fused decode layer): the same greedy continuation of a random prompt, on at
/// least its first 16 of 32 tokens.
fn default_paths_agree(arch: &str, ctx: usize, n_prompt: usize) {
    let test = format!("{arch}_default_paths_agree (ctx {ctx})");
    if cuda_or_skip(&test).is_none() {
        return;
    }
    let path = Path::new("tests/fixtures").join(arch).join("model.gguf");
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let mut cpu = CpuForward::new(&model, ctx, CacheType::F16).unwrap();
    let mut gpu = CudaForward::new(&model, ctx, 0).unwrap();
    let ids = random_ids(n_prompt, model.n_vocab(), 29);
    let (mut tc, mut tg) =
        (vec![argmax(cpu.forward(&ids, 0).unwrap()) as u32], vec![argmax(gpu.forward(&ids, 0).unwrap()) as u32]);
    for i in 0..31 {
        let pos = n_prompt + i;
        tc.push(argmax(cpu.forward(&tc[i..i + 1], pos).unwrap()) as u32);
        tg.push(gpu.greedy_step(tg[i], pos).unwrap());
    }
    let agree = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
    println!("{test}: greedy cpu {tc:?}\n{test}: greedy gpu {tg:?}\n{test}: {agree} of 32 agree");
    assert!(agree >= 16, "{test}: only {agree} greedy tokens agree");
}

#[test]
fn qwen3_gpu_matches_cpu() {
    exact_paths_agree("qwen3", 256, 200);
    exact_paths_agree("qwen3", 1024, 600);
    default_paths_agree("qwen3", 1024, 600);
}

#[test]
fn phi3_gpu_matches_cpu() {
    // a context of 256 uses the short LongRoPE factors, one of 1024 the long ones (rope_orig_ctx is 512)
    exact_paths_agree("phi3", 256, 200);
    exact_paths_agree("phi3", 1024, 600);
    default_paths_agree("phi3", 256, 70);
    default_paths_agree("phi3", 1024, 600);
}

#[test]
fn mistral3_gpu_matches_cpu() {
    exact_paths_agree("mistral3", 256, 200);
    exact_paths_agree("mistral3", 1024, 600);
    default_paths_agree("mistral3", 1024, 600);
}
