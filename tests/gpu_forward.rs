//! The GPU forward pass against the CPU oracle: each forward kernel against its `backend::cpu` twin on random
//! inputs, then whole models (SmolLM2, Gemma-3; skipped when `models/` lacks them): logits after a prompt,
//! greedy continuations, and top-1 agreement over 512 teacher-forced positions.
//! Skips with a printed reason when no CUDA device is present.

mod common;

use std::path::Path;

use common::{attn_params, cuda_or_skip, forced_logits, max_rel_err, model_path, rel_dist, Rng, ROUNDING_REACH};
use half::f16;
use host::backend::cpu::{self, AttnParams, Contig, RopePairing, RopeParams};
use host::backend::cuda::{At, AttnScratch, AttnShape, Cuda, DevKv};
use host::backend::cuda_forward::CudaForward;
use host::gguf::{GgmlType, GgufFile};
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};
use host::quant::blocks::BlockQ8_0;
use host::quant::ggml_avx2::q8_0_block_avx;

/// f32 element-wise ops: relative error with a floor of 1e-3.
const F32_TOL: f32 = 1e-5;
/// Attention reads the same f16 (or q8_0) K/V on both sides (and, for q8_0, the same q8_0 blocks of q); the sums
/// differ only in order.
const ATTN_TOL: f32 = 1e-4;

/// The cache types the GPU keeps.
const GPU_CACHES: [CacheType; 2] = [CacheType::F16, CacheType::Q8_0];

/// Keys and values (rows of `kv_dim` and `kv_dim_v`) cached as `ty`: the CPU twin's copy and the device's.
struct TestKv {
    ty: CacheType,
    k16: Vec<f16>,
    v16: Vec<f16>,
    k8: Vec<BlockQ8_0>,
    v8: Vec<BlockQ8_0>,
    dk: DevKv,
    dv: DevKv,
    kv_dim: usize,
    kv_dim_v: usize,
}

impl TestKv {
    fn new(gpu: &Cuda, ty: CacheType, k: &[f32], v: &[f32], kv_dim: usize, kv_dim_v: usize) -> TestKv {
        let (mut t, bits) = (
            TestKv { ty, k16: vec![], v16: vec![], k8: vec![], v8: vec![], dk: DevKv::F16(gpu.zeros(1).unwrap()),
                     dv: DevKv::F16(gpu.zeros(1).unwrap()), kv_dim, kv_dim_v },
            |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<u16>>(),
        );
        match ty {
            CacheType::F16 => {
                let half = |x: &[f32]| x.iter().map(|&y| f16::from_f32(y)).collect::<Vec<f16>>();
                (t.k16, t.v16) = (half(k), half(v));
                t.dk = DevKv::F16(gpu.upload(&bits(&t.k16)).unwrap());
                t.dv = DevKv::F16(gpu.upload(&bits(&t.v16)).unwrap());
            }
            CacheType::Q8_0 => {
                let blocks = |x: &[f32]| x.chunks_exact(32).map(q8_0_block_avx).collect::<Vec<BlockQ8_0>>();
                (t.k8, t.v8) = (blocks(k), blocks(v));
                t.dk = DevKv::upload_q8_0(gpu, &t.k8, kv_dim).unwrap();
                t.dv = DevKv::upload_q8_0(gpu, &t.v8, kv_dim_v).unwrap();
            }
            CacheType::F32 => unreachable!("no f32 cache on the GPU"),
        }
        t
    }

    /// The CPU twin of the GPU attention over this cache's first `n_keys` positions: `cpu::attention` (f16) or
    /// `cpu::attention_q8_0_rows` (q8_0).
    fn cpu_attention(&self, out: &mut [f32], q: &[f32], n_keys: usize, p: &AttnParams) {
        match self.ty {
            CacheType::Q8_0 => {
                let (kb, vb) = (self.kv_dim / 32, self.kv_dim_v / 32);
                let k = Contig { data: &self.k8[..n_keys * kb], width: kb };
                let v = Contig { data: &self.v8[..n_keys * vb], width: vb };
                cpu::attention_q8_0_rows(out, q, &k, &v, p)
            }
            _ => cpu::attention(out, q, &self.k16[..n_keys * self.kv_dim], &self.v16[..n_keys * self.kv_dim_v], p),
        }
    }
}

#[test]
fn rope_matches_cpu() {
    let Some(gpu) = cuda_or_skip("rope_matches_cpu") else { return };
    let mut rng = Rng::new(11);
    for (pairing, head_dim, rope_dim, n_heads) in
        [(RopePairing::Normal, 64, 64, 9), (RopePairing::Neox, 128, 128, 4), (RopePairing::Neox, 256, 128, 2)]
    {
        let (n_tok, pos0, ctx) = (5, 37, 64);
        let p = RopeParams {
            head_dim,
            rope_dim,
            theta_base: 10000.0,
            freq_scale: 1.0,
            pairing,
            freq_factors: None,
            mscale: 1.0,
        };
        let x = rng.vec(n_tok * n_heads * head_dim, -2.0, 2.0);
        let mut want = x.clone();
        cpu::rope(&mut want, n_heads, pos0, &p);
        let (cos, sin) = cpu::rope_table(ctx, &p);
        let (dcos, dsin, dpos) =
            (gpu.upload(&cos).unwrap(), gpu.upload(&sin).unwrap(), gpu.upload(&[pos0 as u32]).unwrap());
        let dx = gpu.upload(&x).unwrap();
        gpu.rope_rows(&dx, n_tok, n_heads, head_dim, rope_dim, pairing == RopePairing::Neox, &dcos, &dsin, &dpos, pos0)
            .unwrap();
        let err = max_rel_err(&gpu.download(&dx).unwrap(), &want, 1e-3);
        println!("rope {pairing:?} head_dim={head_dim} rope_dim={rope_dim}: max rel err {err:.2e}");
        assert!(err <= F32_TOL, "{err}");
    }
}

/// The decode launch `rope_store_decode` equals the separate per-head norms, RoPE and cache stores bit for bit,
/// with and without Gemma's q/k norms, for normal and NeoX pairing and a partial rotary dimension, into f16 and
/// q8_0 caches.
#[test]
fn rope_store_equals_separate_ops() {
    let Some(gpu) = cuda_or_skip("rope_store_equals_separate_ops") else { return };
    let mut rng = Rng::new(15);
    for (pairing, n_heads, n_kv, hd, rope_dim, norms, ty) in [
        (RopePairing::Normal, 9, 3, 64, 64, false, CacheType::F16),
        (RopePairing::Neox, 4, 1, 256, 256, true, CacheType::F16),
        (RopePairing::Neox, 8, 2, 128, 64, true, CacheType::F16),
        (RopePairing::Normal, 9, 3, 64, 64, false, CacheType::Q8_0),
        (RopePairing::Neox, 4, 1, 256, 256, true, CacheType::Q8_0),
        (RopePairing::Neox, 8, 2, 128, 64, true, CacheType::Q8_0),
    ] {
        let (pos, ctx) = (37usize, 64usize);
        let p = RopeParams {
            head_dim: hd,
            rope_dim,
            theta_base: 10000.0,
            freq_scale: 1.0,
            pairing,
            freq_factors: None,
            mscale: 1.0,
        };
        let (cos, sin) = cpu::rope_table(ctx, &p);
        let (dcos, dsin, dpos) =
            (gpu.upload(&cos).unwrap(), gpu.upload(&sin).unwrap(), gpu.upload(&[pos as u32]).unwrap());
        let (q_dim, kv_dim) = (n_heads * hd, n_kv * hd);
        let qkv = rng.vec(q_dim + 2 * kv_dim, -2.0, 2.0);
        let (qn, kn) = (gpu.upload(&rng.vec(hd, 0.5, 1.5)).unwrap(), gpu.upload(&rng.vec(hd, 0.5, 1.5)).unwrap());
        let (qn, kn) = if norms { (Some(&qn), Some(&kn)) } else { (None, None) };
        let neox = pairing == RopePairing::Neox;
        let s = AttnShape { n_tok: 1, n_heads, n_kv_heads: n_kv, head_dim: hd, head_dim_v: hd, scale: 1.0, window: 0 };
        // separate launches
        let a = gpu.upload(&qkv).unwrap();
        let cache = || DevKv::new(&gpu, ty, ctx, kv_dim).unwrap();
        let (mut ka, mut va) = (cache(), cache());
        let (k_at, v_at) = (At(&a, q_dim), At(&a, q_dim + kv_dim));
        if let Some(w) = qn {
            gpu.rmsnorm_inplace_rows(&a, w, n_heads, hd, 1e-6).unwrap();
        }
        if let Some(w) = kn {
            gpu.rmsnorm_inplace_rows(&k_at, w, n_kv, hd, 1e-6).unwrap();
        }
        gpu.rope_rows(&a, 1, n_heads + n_kv, hd, rope_dim, neox, &dcos, &dsin, &dpos, pos).unwrap();
        gpu.kv_store_rows(&mut ka, &k_at, 1, kv_dim, &dpos, pos).unwrap();
        gpu.kv_store_rows(&mut va, &v_at, 1, kv_dim, &dpos, pos).unwrap();
        // one launch
        let b = gpu.upload(&qkv).unwrap();
        let (mut kb, mut vb) = (cache(), cache());
        gpu.rope_store_decode(&b, &mut kb, &mut vb, &s, rope_dim, neox, &dcos, &dsin, &dpos, pos, qn, kn, 1e-6)
            .unwrap();
        let case = format!("{pairing:?} heads {n_heads}/{n_kv} hd {hd} rope_dim {rope_dim} norms {norms} {}", ty.name());
        assert_eq!(
            gpu.download(&a).unwrap()[..q_dim + kv_dim],
            gpu.download(&b).unwrap()[..q_dim + kv_dim],
            "{case}: q, k"
        );
        let bytes = |c: &DevKv| match c {
            DevKv::F16(x) => gpu.download(x).unwrap().iter().flat_map(|h| h.to_le_bytes()).collect::<Vec<u8>>(),
            DevKv::Q8_0(x) => gpu.download(x).unwrap(),
        };
        assert_eq!(bytes(&ka), bytes(&kb), "{case}: k cache");
        assert_eq!(bytes(&va), bytes(&vb), "{case}: v cache");
        assert!(bytes(&kb).iter().any(|&x| x != 0), "{case}: nothing stored");
        println!("rope_store {case}: equal to the separate launches");
    }
}

/// One decode token's attention (the flash-decoding kernels `attention_decode_g*` / `attention_decode_q8_0_g*`, or
/// the general kernel where a shape does not fit them) against the CPU twin, over f16 and q8_0 caches, at
/// positions 0..8191 of a graph-sized context (splits over all 8192 positions, so most chunks are idle), GQA groups
/// 1, 2, 3, 4 and 8, head dims 64, 128 and 256, with and without a sliding window; the counters are reset for the next
/// launch.
#[test]
fn decode_attention_matches_cpu_at_every_depth() {
    let Some(gpu) = cuda_or_skip("decode_attention_matches_cpu_at_every_depth") else { return };
    let mut rng = Rng::new(13);
    let ctx = 8192usize;
    let splits = ctx / 256;
    // (n_heads, n_kv_heads, head_dim)
    for (n_heads, n_kv, hd) in
        [(8, 8, 128), (4, 2, 128), (9, 3, 64), (8, 2, 256), (32, 4, 128), (16, 2, 64), (12, 4, 128), (8, 1, 256)]
    {
        let (k, v) = (rng.vec(ctx * n_kv * hd, -1.0, 1.0), rng.vec(ctx * n_kv * hd, -1.0, 1.0));
        let scale = 1.0 / (hd as f32).sqrt();
        for ty in GPU_CACHES {
            let kv = TestKv::new(&gpu, ty, &k, &v, n_kv * hd, n_kv * hd);
            for window in [0usize, 512] {
                let s = AttnShape { n_tok: 1, n_heads, n_kv_heads: n_kv, head_dim: hd, head_dim_v: hd, scale, window };
                let mut scratch = AttnScratch::new(&gpu, &s, splits).unwrap();
                let mut worst = 0.0f32;
                for pos in [0usize, 1, 7, 255, 256, 300, 511, 1023, 2049, 4095, 4096, 6000, 8191] {
                    // scores of a few units so the softmax is not flat
                    let q: Vec<f32> = rng.vec(n_heads * hd, -3.0, 3.0);
                    let p = attn_params(1, pos, n_heads, n_kv, hd, scale, window);
                    let mut want = vec![0.0; n_heads * hd];
                    kv.cpu_attention(&mut want, &q, pos + 1, &p);
                    let dq = gpu.upload(&q).unwrap();
                    let dpos = gpu.upload(&[pos as u32]).unwrap();
                    let mut out = gpu.upload(&vec![f32::NAN; want.len()]).unwrap();
                    gpu.attention_rows(&mut out, &dq, &kv.dk, &kv.dv, &mut scratch, &s, splits, &dpos, pos).unwrap();
                    let got = gpu.download(&out).unwrap();
                    assert!(gpu.download(&scratch.counters).unwrap().iter().all(|&c| c == 0), "counters not reset");
                    let err = max_rel_err(&got, &want, 1e-2);
                    let case = format!("{} heads {n_heads}/{n_kv} hd {hd} window {window} pos {pos}", ty.name());
                    assert!(err <= ATTN_TOL, "{case}: rel err {err}");
                    worst = worst.max(err);
                }
                println!(
                    "decode attention {} heads={n_heads}/{n_kv} hd={hd} window={window}: max rel err {worst:.2e} over 13 depths",
                    ty.name()
                );
            }
        }
    }
}

/// The split kernel (`attention_f16`, the fallback of batches; `tests/gpu_flash_attn.rs` checks the tensor-core
/// kernel that `attention_rows` prefers for them) against the CPU twin.
#[test]
fn attention_matches_cpu() {
    let Some(gpu) = cuda_or_skip("attention_matches_cpu") else { return };
    let mut rng = Rng::new(12);
    // (n_heads, n_kv_heads, head_dim, n_tok, pos0, window): decode, prefill, GQA, long context, sliding window
    for (n_heads, n_kv, hd, n_tok, pos0, window) in [
        (9, 3, 64, 1, 0, 0),
        (9, 3, 64, 1, 700, 0),
        (4, 1, 256, 7, 300, 0),
        (8, 8, 128, 33, 0, 0),
        (4, 1, 256, 3, 1000, 512),
        (32, 4, 128, 64, 2000, 0),
        (8, 8, 64, 17, 8100, 0),
        (16, 2, 64, 40, 4000, 1024),
    ] {
        let n_keys: usize = pos0 + n_tok;
        let ctx = n_keys.next_multiple_of(256);
        let q = rng.vec(n_tok * n_heads * hd, -1.0, 1.0);
        let (k, v) = (rng.vec(ctx * n_kv * hd, -1.0, 1.0), rng.vec(ctx * n_kv * hd, -1.0, 1.0));
        let scale = 1.0 / (hd as f32).sqrt();
        let p = attn_params(n_tok, pos0, n_heads, n_kv, hd, scale, window);
        let s = AttnShape { n_tok, n_heads, n_kv_heads: n_kv, head_dim: hd, head_dim_v: hd, scale, window };
        let splits = ctx / 256;
        for ty in GPU_CACHES {
            let kv = TestKv::new(&gpu, ty, &k, &v, n_kv * hd, n_kv * hd);
            let mut want = vec![0.0; n_tok * n_heads * hd];
            kv.cpu_attention(&mut want, &q, n_keys, &p);
            let dq = gpu.upload(&q).unwrap();
            let mut scratch = AttnScratch::new(&gpu, &s, splits).unwrap();
            let mut out = gpu.zeros::<f32>(want.len()).unwrap();
            let dpos = gpu.upload(&[pos0 as u32]).unwrap();
            gpu.attention_split(&mut out, &dq, &kv.dk, &kv.dv, &mut scratch, &s, splits, &dpos, pos0).unwrap();
            let first = gpu.download(&out).unwrap();
            // the arrival counters are back at zero: a second launch (a graph replay) combines the same way
            assert!(gpu.download(&scratch.counters).unwrap().iter().all(|&c| c == 0), "counters not reset");
            gpu.attention_split(&mut out, &dq, &kv.dk, &kv.dv, &mut scratch, &s, splits, &dpos, pos0).unwrap();
            assert_eq!(gpu.download(&out).unwrap(), first, "second launch differs");
            let err = max_rel_err(&first, &want, 1e-2);
            println!(
                "attention {} heads={n_heads}/{n_kv} hd={hd} n_tok={n_tok} pos0={pos0} window={window}: max rel err {err:.2e}",
                ty.name()
            );
            assert!(err <= ATTN_TOL, "{}: {err}", ty.name());
        }
    }
}

#[test]
fn kv_store_rounds_like_the_cpu_cache() {
    let Some(gpu) = cuda_or_skip("kv_store_rounds_like_the_cpu_cache") else { return };
    let mut rng = Rng::new(13);
    let (n_tok, row, pos0) = (3, 192, 5);
    let x = rng.vec(n_tok * row, -3.0, 3.0);
    let mut cache = gpu.zeros::<u16>(16 * row).unwrap();
    let dpos = gpu.upload(&[pos0 as u32]).unwrap();
    gpu.kv_store_rows(&mut cache, &gpu.upload(&x).unwrap(), n_tok, row, &dpos, pos0).unwrap();
    let got = gpu.download(&cache).unwrap();
    for (i, &v) in x.iter().enumerate() {
        assert_eq!(got[pos0 * row + i], f16::from_f32(v).to_bits(), "element {i}");
    }
    assert!(got[..pos0 * row].iter().all(|&b| b == 0), "positions before pos0 untouched");
}

/// The q8_0 store (`kv_store_q8_0`, a warp per block) makes the CPU cache's blocks bit for bit: the same d and the
/// same q as `q8_0_block_avx`, on random rows and on blocks made to hit its edge cases (an all-zero block, exact
/// halves that round to even, the largest value at either end, a negative largest magnitude, tiny values).
#[test]
fn kv_store_q8_0_makes_the_cpu_blocks() {
    let Some(gpu) = cuda_or_skip("kv_store_q8_0_makes_the_cpu_blocks") else { return };
    let mut rng = Rng::new(17);
    let (n_tok, row, pos0, ctx) = (4, 192, 5, 16);
    let mut x = rng.vec(n_tok * row, -3.0, 3.0);
    // row 0: amax 127 gives 127 / amax = 1, so x * id is x itself: 2.5 -> 2, -3.5 -> -4, 0.5 -> 0, 1.5 -> 2
    x[..32].fill(0.0);
    x[32..64].copy_from_slice(&[127.0, 2.5, -3.5, 0.5, 1.5, -0.5, 126.5, -2.5, 4.5, 5.5, -127.0, 3.0, 0.0, -1.5, 7.5, 9.5,
                                11.5, -11.5, 100.5, 101.5, -64.5, 64.5, 0.25, -0.75, 12.0, 13.0, 14.0, 15.0, 16.5, 17.5,
                                18.5, 19.5]);
    x[64..96].iter_mut().enumerate().for_each(|(i, v)| *v = -1e-3 * (i as f32 + 1.0));
    x[96..128].iter_mut().enumerate().for_each(|(i, v)| *v = 1e-30 * i as f32);
    let mut cache = DevKv::new(&gpu, CacheType::Q8_0, ctx, row).unwrap();
    let dpos = gpu.upload(&[pos0 as u32]).unwrap();
    gpu.kv_store_rows(&mut cache, &gpu.upload(&x).unwrap(), n_tok, row, &dpos, pos0).unwrap();
    let got = cache.download_q8_0(&gpu, row).unwrap();
    assert_eq!(got.len(), ctx * row / 32);
    let nb = row / 32;
    for (b, blk) in x.chunks_exact(32).map(q8_0_block_avx).enumerate() {
        let g = &got[pos0 * nb + b];
        assert_eq!((g.d, g.qs), (blk.d, blk.qs), "block {b} of rows {pos0}..");
    }
    assert_eq!(got[pos0 * nb + 1].qs[..8], [127, 2, -4, 0, 2, 0, 126, -2], "ties to even");
    let zero = |g: &BlockQ8_0| g.d == 0 && g.qs == [0; 32];
    assert!(zero(&got[pos0 * nb]), "an all-zero block has d = 0 and q = 0");
    assert!(got[..pos0 * nb].iter().chain(&got[(pos0 + n_tok) * nb..]).all(zero), "other positions untouched");
    // a width that is not whole blocks is refused by name
    let err = gpu.kv_store_rows(&mut cache, &gpu.upload(&x).unwrap(), 1, 48, &dpos, pos0).unwrap_err().to_string();
    assert!(err.contains("kv_store_q8_0") && err.contains("48"), "{err}");
}

#[test]
fn activations_and_residuals_match_cpu() {
    let Some(gpu) = cuda_or_skip("activations_and_residuals_match_cpu") else { return };
    let mut rng = Rng::new(14);
    let n = 3 * 1536 + 7;
    let (g, u) = (rng.vec(n, -8.0, 8.0), rng.vec(n, -2.0, 2.0));
    let (dg, du) = (gpu.upload(&g).unwrap(), gpu.upload(&u).unwrap());
    let mut out = gpu.zeros::<f32>(n).unwrap();
    let mut want = vec![0.0; n];
    cpu::swiglu(&mut want, &g, &u);
    gpu.swiglu_rows(&mut out, &dg, &du, n).unwrap();
    let err = max_rel_err(&gpu.download(&out).unwrap(), &want, 1e-3);
    assert!(err <= F32_TOL, "swiglu {err}");
    cpu::gelu_tanh_mul(&mut want, &g, &u);
    gpu.gelu_tanh_mul_rows(&mut out, &dg, &du, n).unwrap();
    // 1 + tanh(y) cancels for very negative gates (on both sides, differently), so judge the error against the
    // largest output rather than each tiny one
    let got = gpu.download(&out).unwrap();
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err <= F32_TOL, "gelu_tanh_mul {err}");
    // large gates: e^(2|y|) overflows f32 from |gate| ~ 10.06 on; tanh must saturate to +-1, never give NaN (the
    // fine sweep crosses the overflow threshold itself, where an inf from `ex2` met a negative correction term)
    let mut g: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.1).collect();
    g.extend((0..4000).flat_map(|i| {
        let v = 10.0 + i as f32 * 5e-5; // 2 y(g) crosses 88.72 at g = 10.061
        [v, -v]
    }));
    let u = vec![1.5f32; g.len()];
    let mut want = vec![0.0; g.len()];
    cpu::gelu_tanh_mul(&mut want, &g, &u);
    let mut out = gpu.zeros::<f32>(g.len()).unwrap();
    gpu.gelu_tanh_mul_rows(&mut out, &gpu.upload(&g).unwrap(), &gpu.upload(&u).unwrap(), g.len()).unwrap();
    let got = gpu.download(&out).unwrap();
    if let Some(i) = got.iter().position(|v| !v.is_finite()) {
        panic!("gelu_tanh_mul({}) = {} on the GPU", g[i], got[i]);
    }
    let err = got.iter().zip(&want).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / 450.0;
    assert!(err <= F32_TOL, "gelu_tanh_mul over large gates {err}");

    let b = rng.vec(1536, -1.0, 1.0);
    let mut x = rng.vec(3 * 1536, -1.0, 1.0);
    let mut dx = gpu.upload(&x).unwrap();
    gpu.add_bias_rows(&mut dx, &gpu.upload(&b).unwrap(), 3).unwrap();
    cpu::add_bias(&mut x, &b);
    assert!(max_rel_err(&gpu.download(&dx).unwrap(), &x, 1e-3) <= F32_TOL, "add_bias");

    let y = rng.vec(3 * 1536, -1.0, 1.0);
    gpu.add_inplace_rows(&mut dx, &gpu.upload(&y).unwrap(), 3 * 1536).unwrap();
    cpu::add_inplace(&mut x, &y);
    assert!(max_rel_err(&gpu.download(&dx).unwrap(), &x, 1e-3) <= F32_TOL, "add_inplace");

    gpu.rmsnorm_inplace_rows(&dx, &gpu.upload(&b).unwrap(), 3, 1536, 1e-6).unwrap();
    cpu::rmsnorm_inplace(&mut x, &b, 1536, 1e-6);
    assert!(max_rel_err(&gpu.download(&dx).unwrap(), &x, 1e-3) <= F32_TOL, "rmsnorm_inplace");
}

#[test]
fn argmax_picks_the_lowest_index_of_the_max() {
    let Some(gpu) = cuda_or_skip("argmax_picks_the_lowest_index_of_the_max") else { return };
    let mut rng = Rng::new(15);
    let mut x = rng.vec(262_144, -10.0, 10.0);
    x[200_001] = 50.0;
    x[150_000] = 50.0; // tie: the lower index wins, as on the CPU
    let dx = gpu.upload(&x).unwrap();
    let (mut out, mut next) = (gpu.zeros::<u32>(1).unwrap(), gpu.zeros::<u32>(4).unwrap());
    gpu.argmax(&dx, x.len(), &mut out, Some(&mut next)).unwrap();
    assert_eq!(gpu.download(&out).unwrap()[0], 150_000);
    assert_eq!(gpu.download(&next).unwrap()[0], 150_000);
}

#[test]
fn embedding_matches_cpu_for_every_type() {
    let Some(gpu) = cuda_or_skip("embedding_matches_cpu_for_every_type") else { return };
    let mut rng = Rng::new(16);
    let (n_rows, n_cols) = (50, 512);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
        let w: Vec<f32> = rng.vec(n_rows * n_cols, -1.0, 1.0);
        let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let mut bytes = vec![0u8; rb * n_rows];
        for (src, dst) in w.chunks(n_cols).zip(bytes.chunks_mut(rb)) {
            host::quant::quantize_row(ty, src, dst).unwrap();
        }
        let ids = [7u32, 0, 49, 7];
        let mut out = gpu.zeros::<f32>(ids.len() * n_cols).unwrap();
        gpu.embed(ty, &gpu.upload(&bytes).unwrap(), n_rows, n_cols, &gpu.upload(&ids).unwrap(), ids.len(), &mut out)
            .unwrap();
        let got = gpu.download(&out).unwrap();
        for (t, &id) in ids.iter().enumerate() {
            let mut want = vec![0.0; n_cols];
            cpu::embedding_row(ty, &bytes[id as usize * rb..][..rb], &mut want).unwrap();
            assert_eq!(&got[t * n_cols..(t + 1) * n_cols], &want[..], "{ty} token {t}");
        }
    }
}

// ----------------------------------------------------------------------------
// Whole models
// ----------------------------------------------------------------------------

/// Real text as token ids: llama.cpp's tokenizations of the reference texts, concatenated, with the BOS that
/// starts each text kept only at the very start (a BOS in mid-sequence is not text).
fn reference_tokens(file: &str) -> Vec<u32> {
    let path = Path::new("tests/fixtures/reference").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let ids: Vec<u32> = text
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["special"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<_>>()
        })
        .collect();
    let bos = ids[0];
    let starts_with_bos = text.lines().all(|l| l.contains(&format!("\"special\": [{bos},")));
    let mut out = vec![ids[0]];
    out.extend(ids[1..].iter().copied().filter(|&t| !(starts_with_bos && t == bos)));
    out
}

fn argmax(x: &[f32]) -> usize {
    x.iter().enumerate().fold(0, |b, (i, &v)| if v > x[b] { i } else { b })
}

/// The two largest values of `x` apart.
fn top2_margin(x: &[f32]) -> f32 {
    let b = argmax(x);
    x[b] - x.iter().enumerate().filter(|&(i, _)| i != b).fold(f32::NEG_INFINITY, |m, (_, &v)| m.max(v))
}

/// A step where the reference's two best logits are closer than this is a near-tie: another backend (or cache
/// type, `Q8_NEAR_TIE`) may part there without a bug (issue #13's rule: the CPU's two best within 0.05).
const NEAR_TIE: f32 = 0.05;

/// The near-tie between two backends with the same KV cache type: `NEAR_TIE` for f16; for q8_0 a key or value the
/// two backends' projections put on either side of a quantization step moves by a whole step (1/127 of its
/// block's largest), and the CPU's own q8_0 and f16 runs part where the f16 run's two best were up to 0.27 apart
/// (`Q8_NEAR_TIE`), so a q8_0 parting below 0.25 is a near-tie.
fn near_tie(cache: CacheType) -> f32 {
    if cache == CacheType::Q8_0 { 0.25 } else { NEAR_TIE }
}

/// CPU and GPU, both with a KV cache of `cache`, agree on a prompt's logits, on a greedy continuation (for 16
/// tokens, or up to a step where the CPU's two best logits are a near-tie: the margin at the parting is printed),
/// and on top-1 over 512 positions (99%). With q8_0 both sides quantize keys, values and q to the same q8_0 blocks
/// (up to the values the two projections round across a quantization step, each moving by a whole step), so the
/// logit tolerance is 3% of the largest (f16: 0.2%) and top-1 must agree at 98% of the positions.
fn compare_model(file: &str, tokens_file: &str, cache: CacheType) {
    let Some(path) = model_path(file) else { return };
    if cuda_or_skip(file).is_none() {
        return;
    }
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let ctx = 1024;
    let mut cpu = CpuForward::new(&model, ctx, cache).unwrap();
    // the oracle of the f32-activation GPU kernels: exact products, no llama.cpp activation rounding
    cpu.set_llama_rounding(false);
    let mut gpu = CudaForward::new_with_cache(&model, ctx, 0, cache).unwrap();
    gpu.set_q8_activations(false);
    let file = &format!("{file} ({} cache)", cache.name());
    // q8_0: a key or value the two backends' projections put on either side of a quantization step moves by a
    // whole step (1/127 of its block's largest), where f16 moves by an ulp
    // (measured on the H100, 2026-12-07: SmolLM2's prompt logits 0.47 apart of 21, 2.2%, a third of what the cache
    // type itself moves them, `Q8_MAX_CHANGE`); greedy partings as `near_tie`
    let (tol, top1_pct) = if cache == CacheType::Q8_0 { (3e-2, 98) } else { (2e-3, 99) };
    let text = reference_tokens(tokens_file);
    let n_vocab = model.n_vocab();

    // 1) logits after a natural prompt (BOS added where the model asks for it)
    let tok = host::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let prompt = &tok
        .encode("Once upon a time, there was a little robot who lived in a big city. Every day he", true, true)
        .unwrap()[..];
    let lc = cpu.forward(prompt, 0).unwrap().to_vec();
    let lg = gpu.forward(prompt, 0).unwrap().to_vec();
    let scale = lc.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = lc.iter().zip(&lg).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "{file}: prompt logits max |cpu - gpu| = {diff:.3e} (max |logit| {scale:.1}), argmax cpu {} gpu {}",
        argmax(&lc),
        argmax(&lg)
    );
    assert!(diff <= tol * scale, "prompt logits differ by {diff}");

    // 2) 32 greedy tokens: CPU sampling of CPU logits vs the GPU's captured decode graph with device argmax
    let (mut tc, mut tg) = (vec![argmax(&lc) as u32], vec![argmax(&lg) as u32]);
    let mut margins = vec![top2_margin(&lc)];
    for i in 0..31 {
        let pos = prompt.len() + i;
        let l = cpu.forward(&tc[i..i + 1], pos).unwrap();
        tc.push(argmax(l) as u32);
        margins.push(top2_margin(l));
        tg.push(gpu.greedy_step(tg[i], pos).unwrap());
    }
    let agree = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
    println!("{file}: greedy cpu {tc:?}\n{file}: greedy gpu {tg:?}\n{file}: {agree} of 32 greedy tokens agree");
    if agree < 32 {
        println!("{file}: parting at token {agree}, where the CPU's two best logits are {:.4} apart", margins[agree]);
    }
    assert!(agree >= 16 || margins[agree] < near_tie(cache), "only {agree} greedy tokens agree (CPU margin {})",
            margins[agree]);

    // 3a) causality on the GPU: the first 64 positions of a 512-token batch equal a 64-token batch
    let long: Vec<u32> = text.iter().cycle().take(512).copied().collect();
    gpu.reset();
    let short = gpu.forward_all(&long[..64], 0).unwrap();
    gpu.reset();
    let full = gpu.forward_all(&long, 0).unwrap();
    let d = (0..64 * n_vocab).fold(0.0f32, |m, i| m.max((short[i] - full[i]).abs()));
    println!("{file}: gpu 64-token batch vs first 64 of a 512-token batch: max |diff| {d:.3e}");
    assert!(d <= tol / 2.0 * scale, "the GPU's long batch disagrees with its short batch by {d}");

    // 3) teacher-forced top-1 agreement over 512 positions of real text
    cpu.reset();
    gpu.reset();
    let (ac, ag) = (cpu.forward_all(&long, 0).unwrap(), gpu.forward_all(&long, 0).unwrap());
    let agree_at = |t: usize| argmax(&ac[t * n_vocab..][..n_vocab]) == argmax(&ag[t * n_vocab..][..n_vocab]);
    let by_64: Vec<usize> = (0..8).map(|b| (b * 64..(b + 1) * 64).filter(|&t| agree_at(t)).count()).collect();
    println!("{file}: top-1 agreement per 64 positions {by_64:?}");
    let same = (0..512).filter(|&t| agree_at(t)).count();
    println!("{file}: teacher-forced top-1 agreement {same}/512 = {:.1}%", same as f64 / 5.12);
    assert!(same * 100 >= top1_pct * 512, "top-1 agreement {same}/512");
}

#[test]
fn smollm2_gpu_matches_cpu() {
    compare_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_tokenize.jsonl", CacheType::F16);
}

#[test]
fn gemma3_gpu_matches_cpu() {
    compare_model("gemma-3-270m-q4_k_m.gguf", "gemma3_tokenize.jsonl", CacheType::F16);
}

#[test]
fn smollm2_gpu_matches_cpu_q8_0_cache() {
    compare_model("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_tokenize.jsonl", CacheType::Q8_0);
}

#[test]
fn gemma3_gpu_matches_cpu_q8_0_cache() {
    compare_model("gemma-3-270m-q4_k_m.gguf", "gemma3_tokenize.jsonl", CacheType::Q8_0);
}

/// A q8_0 cache moves the logits by far more than GPU-vs-CPU rounding does: on the CPU, at the greedy steps of the
/// reference prompts, by up to 2.1 (7% of the largest logit) against the f16 cache, and the CPU's own q8_0 and f16
/// greedy outputs part after 3, 7, 9 and 12 tokens where the f16 run's two best logits were 0.27, 0.010, 0.23 and
/// 0.033 apart. So between the cache types a parting is a near-tie below this margin, and the logits may move
/// by up to `Q8_MAX_CHANGE` of the largest.
const Q8_NEAR_TIE: f32 = 1.0;
const Q8_MAX_CHANGE: f32 = 0.15;

/// Greedy decoding on the GPU (the default 8-bit-activation kernels) with the q8_0 KV cache against the f16 cache
/// on the reference prompts: while the two agree (the same context), every step's logits are within
/// `Q8_MAX_CHANGE` of the largest; they agree for 16 tokens or part earlier only where the f16 run's two best
/// logits are within `Q8_NEAR_TIE` (the margins at every parting are printed); and the q8_0 run's captured decode
/// graph (rope_store_q8_0 and the flash-decoding kernel replayed at the device position, device argmax) gives
/// exactly the tokens of its step-by-step forward calls.
fn q8_0_cache_agrees_with_f16(file: &str, greedy_jsonl: &str) {
    let Some(path) = model_path(file) else { return };
    if cuda_or_skip(file).is_none() {
        return;
    }
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let tok = host::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let mut f16 = CudaForward::new_with_cache(&model, 512, 0, CacheType::F16).unwrap();
    let mut q8 = CudaForward::new_with_cache(&model, 512, 0, CacheType::Q8_0).unwrap();
    let text = std::fs::read_to_string(Path::new("tests/fixtures/reference").join(greedy_jsonl)).unwrap();
    let n = 32;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let prompt = host::generate::prompt_tokens(&tok, v["prompt"].as_str().unwrap(), None).unwrap();
        // greedy through forward calls, keeping each step's logits
        let run = |fwd: &mut CudaForward| {
            fwd.reset();
            let mut steps = vec![fwd.forward(&prompt, 0).unwrap().to_vec()];
            let mut toks = vec![argmax(&steps[0]) as u32];
            for i in 0..n - 1 {
                steps.push(fwd.forward(&toks[i..i + 1], prompt.len() + i).unwrap().to_vec());
                toks.push(argmax(&steps[i + 1]) as u32);
            }
            (toks, steps)
        };
        let ((t16, l16), (t8, l8)) = (run(&mut f16), run(&mut q8));
        q8.reset();
        let mut tg = vec![argmax(q8.forward(&prompt, 0).unwrap()) as u32];
        for i in 0..n - 1 {
            tg.push(q8.greedy_step(tg[i], prompt.len() + i).unwrap());
        }
        let case = format!("{file}: {:?}", v["prompt"]);
        assert_eq!(tg, t8, "{case}: the q8_0 decode graph differs from its forward calls");
        let agree = t16.iter().zip(&t8).take_while(|(a, b)| a == b).count();
        let mut worst = 0.0f32;
        for st in 0..(agree + 1).min(n) {
            let scale = l16[st].iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let d = l16[st].iter().zip(&l8[st]).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(d <= Q8_MAX_CHANGE * scale, "{case}: step {st}: q8_0 moves the logits by {d} (largest {scale})");
            worst = worst.max(d / scale);
        }
        let parting = match agree < n {
            true => format!("; parting at token {agree}: margins f16 {:.4}, q8_0 {:.4}", top2_margin(&l16[agree]),
                            top2_margin(&l8[agree])),
            false => String::new(),
        };
        println!("{case}: q8_0 and f16 caches agree on {agree} of {n} tokens, logits moved by up to {:.1}% of the \
                  largest{parting}", 100.0 * worst);
        assert!(
            agree >= 16 || top2_margin(&l16[agree]) < Q8_NEAR_TIE,
            "{case}: only {agree} tokens agree, f16 margin {} there\nf16  {t16:?}\nq8_0 {t8:?}",
            top2_margin(&l16[agree])
        );
    }
}

#[test]
fn smollm2_q8_0_cache_agrees_with_f16() {
    q8_0_cache_agrees_with_f16("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_greedy.jsonl");
}

#[test]
fn gemma3_q8_0_cache_agrees_with_f16() {
    q8_0_cache_agrees_with_f16("gemma-3-270m-q4_k_m.gguf", "gemma3_greedy.jsonl");
}

/// The defaults of both backends, as `host run --temp 0` uses them (the CPU with llama.cpp's 8-bit activation
/// rounding, the GPU with its 8-bit-activation kernels and device argmax), with a KV cache of `cache`, give the
/// same greedy completions of the llama.cpp reference prompts up to rounding: teacher-forced along the CPU's
/// tokens up to the first parting, the GPU's logits are within `ROUNDING_REACH` times the CPU's own 8-bit
/// rounding distance (its default against its exact logits, the largest over those steps), and where the outputs
/// part the CPU's two best logits are close enough for that distance to swap them. Distances and margins are
/// printed.
fn default_paths_agree(file: &str, greedy_jsonl: &str, cache: CacheType) {
    use host::generate::{self, GenOptions};
    use host::sampler::{Sampler, SamplingParams};
    use std::sync::atomic::AtomicBool;
    let Some(path) = model_path(file) else { return };
    if cuda_or_skip(file).is_none() {
        return;
    }
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let tok = host::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let mut cpu = CpuForward::new(&model, 512, cache).unwrap();
    let mut exact = CpuForward::new(&model, 512, cache).unwrap();
    exact.set_llama_rounding(false);
    let mut gpu = CudaForward::new_with_cache(&model, 512, 0, cache).unwrap();
    let file = &format!("{file} ({} cache)", cache.name());
    let text = std::fs::read_to_string(Path::new("tests/fixtures/reference").join(greedy_jsonl)).unwrap();
    let mut worst = usize::MAX;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let case = format!("{file}: {:?}", v["prompt"]);
        let prompt = generate::prompt_tokens(&tok, v["prompt"].as_str().unwrap(), None).unwrap();
        let opts = GenOptions { n_predict: Some(32), ..GenOptions::default() };
        let run = |fwd: &mut dyn Forward| {
            fwd.reset();
            let mut sampler = Sampler::new(SamplingParams { temperature: 0.0, seed: 1, ..SamplingParams::default() });
            generate::generate(fwd, &tok, &mut sampler, &prompt, &opts, &mut Vec::new(), &AtomicBool::new(false))
                .unwrap()
                .tokens
        };
        let (tc, tg) = (run(&mut cpu), run(&mut gpu));
        let agree = tc.iter().zip(&tg).take_while(|(a, b)| a == b).count();
        // teacher-forced along the CPU's tokens, up to and including the first parting
        let steps = (agree + 1).min(tc.len());
        let fed = &tc[..steps.saturating_sub(1)];
        let lc = forced_logits(&mut cpu, &prompt, fed);
        let le = forced_logits(&mut exact, &prompt, fed);
        let lg = forced_logits(&mut gpu, &prompt, fed);
        let reach = lc.iter().zip(&le).fold(0.0f32, |m, (c, e)| m.max(rel_dist(c, e)));
        let dist: Vec<f32> = lg.iter().zip(&lc).map(|(g, c)| rel_dist(g, c)).collect();
        let far = dist.iter().fold(0.0f32, |m, &d| m.max(d));
        println!("{case}: cpu and gpu agree on {agree} of {}/{} tokens; over {steps} steps the gpu is within \
                  {:.1}% of the largest cpu logit, the cpu's 8-bit rounding reaches {:.1}%", tc.len(), tg.len(),
                 100.0 * far, 100.0 * reach);
        for (k, &d) in dist.iter().enumerate() {
            assert!(d <= ROUNDING_REACH * reach, "{case}: step {k}: the gpu is {:.1}% of the largest logit from the \
                    cpu, beyond {ROUNDING_REACH} x the cpu's own rounding ({:.1}%)", 100.0 * d, 100.0 * reach);
        }
        if tc != tg && agree < tc.len() {
            // the parting is a swap of two logits within the distance measured there
            let c = &lc[agree];
            let scale = c.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let margin = top2_margin(c);
            let within = dist[agree] * scale;
            println!("{case}: parting at token {agree}: cpu margin {margin:.4}, gpu within {within:.4} there");
            assert!(
                agree >= 16 || margin <= 2.0 * within,
                "{case}: only {agree} tokens agree, and the cpu's margin {margin} there is beyond what the gpu's \
                 distance {within} can swap\ncpu {tc:?}\ngpu {tg:?}"
            );
        }
        worst = worst.min(if tc == tg { tc.len() } else { agree });
    }
    println!("{file}: default paths agree on at least {worst} tokens per prompt");
}

#[test]
fn smollm2_default_paths_agree() {
    default_paths_agree("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_greedy.jsonl", CacheType::F16);
}

#[test]
fn gemma3_default_paths_agree() {
    default_paths_agree("gemma-3-270m-q4_k_m.gguf", "gemma3_greedy.jsonl", CacheType::F16);
}

#[test]
fn smollm2_default_paths_agree_q8_0_cache() {
    default_paths_agree("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2_greedy.jsonl", CacheType::Q8_0);
}

#[test]
fn gemma3_default_paths_agree_q8_0_cache() {
    default_paths_agree("gemma-3-270m-q4_k_m.gguf", "gemma3_greedy.jsonl", CacheType::Q8_0);
}

/// `host run` with sampling on the GPU (the device sampler at the end of each captured decode step): the same
/// seed gives the same tokens, another seed other tokens, and every token is a vocabulary id.
#[test]
fn smollm2_device_sampling_is_seeded() {
    use host::generate::{self, GenOptions};
    use host::sampler::{Sampler, SamplingParams};
    use std::sync::atomic::AtomicBool;
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let Some(path) = model_path(file) else { return };
    if cuda_or_skip(file).is_none() {
        return;
    }
    let f = GgufFile::open(&path).unwrap();
    let model = Model::load(&f).unwrap();
    let tok = host::tokenizer::Tokenizer::from_gguf(&f).unwrap();
    let mut gpu = CudaForward::new(&model, 256, 0).unwrap();
    let prompt = generate::prompt_tokens(&tok, "Once upon a time", None).unwrap();
    let mut run = |seed: u64| {
        gpu.reset();
        let mut sampler = Sampler::new(SamplingParams { temperature: 0.9, seed, ..SamplingParams::default() });
        let opts = GenOptions { n_predict: Some(48), ignore_eos: true, ..GenOptions::default() };
        generate::generate(&mut gpu, &tok, &mut sampler, &prompt, &opts, &mut Vec::new(), &AtomicBool::new(false))
            .unwrap()
            .tokens
    };
    let (a, b, c) = (run(7), run(7), run(8));
    println!("seed 7: {a:?}\nseed 8: {c:?}");
    assert_eq!(a.len(), 48);
    assert!(a.iter().all(|&t| (t as usize) < model.n_vocab()));
    assert_eq!(a, b, "the same seed gave different tokens");
    assert_ne!(a, c, "seeds 7 and 8 gave the same 48 tokens");
}
