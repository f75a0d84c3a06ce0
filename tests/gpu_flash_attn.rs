//! The tensor-core flash attention for prompt batches (`Cuda::attention_flash`, kernels `attention_flash_d*`)
//! against its CPU twin `cpu::attention` (exact f32 products): batches of 1..4096 queries (multiples of 64 and
//! not), with and without cached positions before the batch, GQA groups 1, 3, 4 and 8 (each with the whole group
//! per block and with one head per block), head dims 64, 96, 128 and 256, sliding window on and off; and
//! `attention_rows` dispatching batches to it. Skips with a printed reason when no CUDA device is present.

mod common;

use common::{attn_params, cuda_or_skip, Rng};
use half::f16;
use host::backend::cpu;
use host::backend::cuda::{AttnScratch, AttnShape, Cuda, ATTN_CHUNK};
use host::backend::cuda_flash::{flash_heads_per_block, flash_preferred};

/// Allowed error: the largest |gpu - cpu| of a call over the largest |cpu| output of that call (the output
/// scale). The kernel rounds q and the probabilities to f16 (relative error up to 2^-11 = 4.9e-4 each) as
/// tensor-core operands and sums in f32; those roundings are independent over the head dims and keys, so the
/// output error stays a fraction of 2^-11 of the output scale. K and V are f16 on both sides.
const FA_TOL: f32 = 2e-3;

/// One call: (n_heads, n_kv_heads, head_dim, n_tok, pos0, window, amplitude of q).
type Case = (usize, usize, usize, usize, usize, usize, f32);

const CASES: &[Case] = &[
    (4, 4, 64, 1, 0, 0, 4.0),
    (4, 4, 64, 1, 517, 0, 4.0),
    (9, 3, 64, 2, 0, 0, 4.0),
    (9, 3, 64, 63, 0, 0, 4.0),
    (9, 3, 64, 64, 0, 0, 1.0),
    (9, 3, 64, 65, 40, 0, 6.0),
    (6, 2, 96, 77, 5, 0, 4.0),
    (8, 2, 128, 100, 37, 0, 4.0),
    (8, 2, 128, 128, 0, 0, 6.0),
    (8, 1, 256, 130, 0, 0, 4.0),
    (4, 1, 256, 257, 300, 512, 4.0),
    (8, 8, 128, 512, 0, 0, 4.0),
    (8, 8, 128, 200, 1000, 0, 4.0),
    (8, 1, 64, 333, 0, 100, 6.0),
    (4, 4, 64, 1000, 0, 256, 4.0),
    (16, 2, 128, 700, 1300, 1024, 4.0),
    (6, 2, 256, 1500, 0, 0, 4.0),
    (12, 4, 128, 2049, 0, 0, 1.0),
    (8, 1, 128, 300, 3796, 0, 4.0),
    (2, 2, 128, 4096, 0, 1024, 4.0),
    (4, 1, 64, 4096, 0, 0, 4.0),
];

/// Largest |got - want| over the largest |want|; NaN when any output is not finite.
fn scaled_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    if got.iter().any(|x| !x.is_finite()) {
        return f32::NAN;
    }
    let scale = want.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, f32::max) / scale
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f16>,
    v: Vec<f16>,
    want: Vec<f32>,
    shape: AttnShape,
}

/// Random inputs of `case`, and the CPU's output when `with_cpu`.
fn inputs(rng: &mut Rng, &(n_heads, n_kv, hd, n_tok, pos0, window, amp): &Case, with_cpu: bool) -> Inputs {
    let n_keys = pos0 + n_tok;
    let q = rng.vec(n_tok * n_heads * hd, -amp, amp);
    let k: Vec<f16> = rng.vec(n_keys * n_kv * hd, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
    let v: Vec<f16> = rng.vec(n_keys * n_kv * hd, -1.0, 1.0).into_iter().map(f16::from_f32).collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let p = attn_params(n_tok, pos0, n_heads, n_kv, hd, scale, window);
    let mut want = vec![0.0; n_tok * n_heads * hd];
    if with_cpu {
        cpu::attention(&mut want, &q, &k, &v, &p);
    }
    let shape = AttnShape { n_tok, n_heads, n_kv_heads: n_kv, head_dim: hd, head_dim_v: hd, scale, window };
    Inputs { q, k, v, want, shape }
}

fn bits(x: &[f16]) -> Vec<u16> {
    x.iter().map(|h| h.to_bits()).collect()
}

#[test]
fn flash_attention_matches_cpu() {
    let Some(gpu) = cuda_or_skip("flash_attention_matches_cpu") else { return };
    let mut rng = Rng::new(21);
    for case in CASES {
        let x = inputs(&mut rng, case, true);
        let s = x.shape;
        let (dq, dk, dv) = (gpu.upload(&x.q).unwrap(), gpu.upload(&bits(&x.k)).unwrap(), gpu.upload(&bits(&x.v)).unwrap());
        let pos0 = case.4;
        let dpos = gpu.upload(&[pos0 as u32]).unwrap();
        let group = s.n_heads / s.n_kv_heads;
        let mut worst = 0.0f32;
        for hpb in if group > 1 { vec![group, 1] } else { vec![1] } {
            let mut out = gpu.upload(&vec![f32::NAN; x.want.len()]).unwrap();
            gpu.attention_flash(&mut out, &dq, &dk, &dv, &s, hpb, &dpos, pos0).unwrap();
            let err = scaled_err(&gpu.download(&out).unwrap(), &x.want);
            assert!(err <= FA_TOL, "{s:?} pos0 {pos0} heads/block {hpb}: scaled error {err}");
            worst = worst.max(err);
        }
        println!(
            "flash attention heads={}/{} hd={} n_tok={} pos0={pos0} window={}: max error {worst:.2e} of the output scale",
            s.n_heads, s.n_kv_heads, s.head_dim, s.n_tok, s.window
        );
    }
}

/// `attention_rows` sends a batch of more than one query to the flash kernel (bit for bit its output with the
/// whole group per block), and one query, a short batch after a long cache on few heads (`flash_preferred`), or
/// anything under `HOST_GPU_OFF=fa`, to the split kernels (within their f32 tolerance of the CPU).
#[test]
fn attention_rows_dispatches_batches_to_flash() {
    let Some(gpu) = cuda_or_skip("attention_rows_dispatches_batches_to_flash") else { return };
    let mut rng = Rng::new(22);
    // a prompt batch; one with a window; one query; a short batch after a long cache on one KV head (1 block)
    for case in [(9, 3, 64, 70, 30, 0, 4.0), (4, 1, 256, 33, 0, 16, 4.0), (8, 8, 128, 1, 90, 0, 4.0), (4, 1, 256, 8, 3000, 0, 4.0)] {
        let x = inputs(&mut rng, &case, true);
        let s = x.shape;
        let pos0 = case.4;
        let (dq, dk, dv) = (gpu.upload(&x.q).unwrap(), gpu.upload(&bits(&x.k)).unwrap(), gpu.upload(&bits(&x.v)).unwrap());
        let dpos = gpu.upload(&[pos0 as u32]).unwrap();
        let splits = (pos0 + s.n_tok).div_ceil(ATTN_CHUNK);
        let mut scratch = AttnScratch::new(&gpu, &s, splits).unwrap();
        let mut out = gpu.upload(&vec![f32::NAN; x.want.len()]).unwrap();
        gpu.attention_rows(&mut out, &dq, &dk, &dv, &mut scratch, &s, splits, &dpos, pos0).unwrap();
        let got = gpu.download(&out).unwrap();
        let fa_off = std::env::var("HOST_GPU_OFF").is_ok_and(|v| v.split(',').any(|p| p.trim() == "fa"));
        if flash_preferred(&s, pos0) && !fa_off {
            let mut fa = gpu.upload(&vec![f32::NAN; x.want.len()]).unwrap();
            gpu.attention_flash(&mut fa, &dq, &dk, &dv, &s, flash_heads_per_block(&s), &dpos, pos0).unwrap();
            assert_eq!(got, gpu.download(&fa).unwrap(), "{s:?}: attention_rows is not the flash kernel");
        } else {
            let err = common::max_rel_err(&got, &x.want, 1e-2);
            assert!(err <= 1e-4, "{s:?}: split kernel error {err}");
        }
        println!("attention_rows {s:?} pos0={pos0}: scaled error {:.2e}", scaled_err(&got, &x.want));
    }
}

/// Time of one launch in microseconds (median of 5 after a warm-up).
fn time_us(gpu: &Cuda, mut f: impl FnMut()) -> f32 {
    f();
    let mut t: Vec<f32> = (0..5)
        .map(|_| {
            let a = gpu.timed_event().unwrap();
            f();
            let b = gpu.timed_event().unwrap();
            b.synchronize().unwrap();
            a.elapsed_ms(&b).unwrap() * 1000.0
        })
        .collect();
    t.sort_by(f32::total_cmp);
    t[2]
}

/// A Llama-7B layer's prompt attention (32 heads of 128, 512 queries; 8 KV heads, 4096 queries) and SmolLM2's
/// (9/3 heads of 64): the flash kernel's time beside the split kernel's (printed, for the record), and its
/// output against the split kernel's (which `tests/gpu_forward.rs` holds to 1e-4 of the CPU; the CPU itself
/// would take minutes on the 4096-query case).
#[test]
fn flash_attention_speed_vs_split() {
    let Some(gpu) = cuda_or_skip("flash_attention_speed_vs_split") else { return };
    let mut rng = Rng::new(23);
    for case in [(32, 32, 128, 512, 0, 0, 4.0), (9, 3, 64, 512, 0, 0, 4.0), (32, 8, 128, 4096, 0, 0, 4.0)] {
        let x = inputs(&mut rng, &case, false);
        let s = x.shape;
        let (dq, dk, dv) = (gpu.upload(&x.q).unwrap(), gpu.upload(&bits(&x.k)).unwrap(), gpu.upload(&bits(&x.v)).unwrap());
        let dpos = gpu.upload(&[0u32]).unwrap();
        let splits = s.n_tok.div_ceil(ATTN_CHUNK);
        let mut scratch = AttnScratch::new(&gpu, &s, splits).unwrap();
        let (mut out_fa, mut out_split) = (gpu.zeros::<f32>(x.want.len()).unwrap(), gpu.zeros::<f32>(x.want.len()).unwrap());
        let hpb = flash_heads_per_block(&s);
        let fa = time_us(&gpu, || gpu.attention_flash(&mut out_fa, &dq, &dk, &dv, &s, hpb, &dpos, 0).unwrap());
        let split = time_us(&gpu, || {
            gpu.attention_split(&mut out_split, &dq, &dk, &dv, &mut scratch, &s, splits, &dpos, 0).unwrap()
        });
        let err = scaled_err(&gpu.download(&out_fa).unwrap(), &gpu.download(&out_split).unwrap());
        assert!(err <= FA_TOL, "{s:?}: scaled error {err} against the split kernel");
        // causal: n (n + 1) / 2 (query, key) pairs, 2 (head_dim + head_dim_v) flops each, per head
        let flops = (s.n_tok * (s.n_tok + 1)) as f64 * s.n_heads as f64 * (s.head_dim + s.head_dim_v) as f64;
        println!(
            "heads={}/{} hd={} n_tok={}: flash {fa:.1} us ({:.1} TFLOP/s), split {split:.1} us ({:.1}x slower); \
             difference {err:.2e} of the output scale",
            s.n_heads,
            s.n_kv_heads,
            s.head_dim,
            s.n_tok,
            flops / fa as f64 / 1e6,
            split / fa
        );
    }
}
