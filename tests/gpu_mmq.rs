//! GPU int8 tensor-core mat-mul (`Cuda::matmul_q8`, kernels `mmq_*`) against its CPU twin `quant::matmul_q8`:
//! same activation quantization (done on the GPU by `quantize_act`, checked byte for byte in `gpu_q8.rs`) and
//! exact integer block sums, so only the f32 summation order differs: per token, max |gpu - cpu| / max |cpu| <=
//! 1e-5 over the checked rows. Random blocks of every supported type with small finite scales; shapes with row
//! and token counts that are not multiples of the 128 x 64 tile or of the thin 64 x 8/16/32 tile (decode batches
//! of up to 32 tokens, `mmqt_*`), widths with a partial last k-tile, and the 7B model's shapes at 512 tokens. For the large shapes the CPU reference is computed for windows of rows (rows are
//! independent) that include the first, last and tile-straddling rows.
//!
//! Every test prints a reason and passes when no CUDA device is usable, so CPU-only CI runs this binary too.

#[path = "support/quant_data.rs"]
mod quant_data;

use host::backend::cuda::{availability, Cuda};
use host::backend::cuda_mmq::supports_mmq;
use host::backend::cuda_q8::act_row_bytes;
use host::gguf::GgmlType;
use host::quant;
use quant_data::{random_weights, Rng};

const MATMUL_TOL: f32 = 1e-5; // per token: max |gpu - cpu| / max |cpu|

const MMQ_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4_1,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q5_K,
];

fn cuda_or_skip(test: &str) -> Option<Cuda> {
    match availability() {
        Ok(()) => Some(Cuda::new(0).expect("a CUDA device is available but could not be opened")),
        Err(why) => {
            println!("SKIP {test}: {why}");
            None
        }
    }
}

/// (n_rows, n_cols, n_tok): SmolLM2's and the 7B model's shapes, row counts that are not multiples of 128 or
/// 64, token counts that are not multiples of 64 (the prefill tile) or of 8, 16, 32 (the thin tile: 1 to 32
/// tokens), and (legacy types) widths that end in a partial 128-column k-tile.
fn shapes(ty: GgmlType) -> Vec<(usize, usize, usize)> {
    let mut v = if ty.block_size() == 32 {
        vec![(33, 96, 1), (576, 576, 7), (1536, 576, 64), (130, 160, 65), (130, 160, 9), (100, 416, 20)]
    } else {
        vec![(33, 256, 1), (576, 768, 7), (1536, 768, 64), (100, 768, 20)]
    };
    v.extend([(1000, 4096, 100), (4096, 4096, 512), (11008, 4096, 33), (4096, 11008, 100)]);
    v.extend([(4096, 4096, 32), (4096, 11008, 16), (1000, 4096, 9)]);
    v
}

/// Activations of both signs and several magnitudes per 256 columns, and an all-zero block of 32.
fn activations(rng: &mut Rng, n_tok: usize, n: usize) -> Vec<f32> {
    let mut x = rng.vec_f32(n_tok * n);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= [1.0, 0.01, 30.0, 1e-3][(i % n / 256 + i / n) % 4];
    }
    if n >= 64 {
        x[32..64].fill(0.0);
    }
    x
}

/// Row windows checked against the CPU: all rows of small tensors, else the first 130, 130 around the middle
/// tile boundary and the last 130.
fn row_windows(n_rows: usize) -> Vec<(usize, usize)> {
    if n_rows <= 1100 {
        return vec![(0, n_rows)];
    }
    let mid = n_rows / 2 / 128 * 128;
    vec![(0, 130), (mid - 65, mid + 65), (n_rows - 130, n_rows)]
}

#[test]
fn matmul_q8_matches_cpu() {
    let Some(cuda) = cuda_or_skip("matmul_q8_matches_cpu") else { return };
    let mut rng = Rng::new(21);
    for ty in MMQ_TYPES {
        assert!(supports_mmq(ty), "{ty}");
        let mut worst = 0.0f32;
        for (n_rows, n_cols, n_tok) in shapes(ty) {
            let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let x = activations(&mut rng, n_tok, n_cols);
            let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
            let mut xq = cuda.zeros::<u8>(n_tok * act_row_bytes(n_cols)).unwrap();
            cuda.quantize_act(&xd, n_tok, n_cols, &mut xq).unwrap();
            let mut yd = cuda.upload(&vec![f32::NAN; n_tok * n_rows + 5]).unwrap();
            cuda.matmul_q8(ty, &wd, n_rows, n_cols, &xq, n_tok, &mut yd).unwrap();
            let gpu = cuda.download(&yd).unwrap();
            assert!(gpu[n_tok * n_rows..].iter().all(|v| v.is_nan()), "{ty} {n_rows}x{n_cols}: wrote past y");

            // Per token: the error over all checked rows, relative to the largest |y| among them.
            let mut err = vec![0.0f32; n_tok];
            let mut scale = vec![0.0f32; n_tok];
            for (r0, r1) in row_windows(n_rows) {
                let nr = r1 - r0;
                let mut cpu = vec![0.0f32; n_tok * nr];
                quant::matmul_q8(ty, &w[r0 * rb..r1 * rb], nr, n_cols, &x, &mut cpu);
                for t in 0..n_tok {
                    for r in 0..nr {
                        let (g, c) = (gpu[t * n_rows + r0 + r], cpu[t * nr + r]);
                        let d = (g - c).abs();
                        err[t] = if d.is_nan() || err[t].is_nan() { f32::NAN } else { err[t].max(d) };
                        scale[t] = scale[t].max(c.abs());
                    }
                }
            }
            for t in 0..n_tok {
                assert!(scale[t] > 0.0, "{ty} {n_rows}x{n_cols} token {t}: degenerate test data");
                let rel = err[t] / scale[t];
                assert!(
                    rel <= MATMUL_TOL,
                    "{ty} {n_rows}x{n_cols} n_tok {n_tok}, token {t}: rel err {rel} (max |diff| {}, max |y| {})",
                    err[t],
                    scale[t]
                );
                worst = worst.max(rel);
            }
        }
        println!("matmul_q8 {ty:5} max rel err {worst:.2e}");
    }
}

/// The 8-bit activations cost well under 1% of accuracy against the exact f32 mat-mul.
#[test]
fn matmul_q8_close_to_f32() {
    let Some(cuda) = cuda_or_skip("matmul_q8_close_to_f32") else { return };
    let mut rng = Rng::new(22);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        let (n_rows, n_cols, n_tok) = (300, 2048, 70);
        let w = random_weights(ty, n_rows, n_cols, &mut rng);
        let x = rng.vec_f32(n_tok * n_cols);
        let mut exact = vec![0.0f32; n_tok * n_rows];
        quant::matmul(ty, &w, n_rows, n_cols, &x, &mut exact);
        let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
        let mut xq = cuda.zeros::<u8>(n_tok * act_row_bytes(n_cols)).unwrap();
        cuda.quantize_act(&xd, n_tok, n_cols, &mut xq).unwrap();
        let mut yd = cuda.zeros::<f32>(n_tok * n_rows).unwrap();
        cuda.matmul_q8(ty, &wd, n_rows, n_cols, &xq, n_tok, &mut yd).unwrap();
        let gpu = cuda.download(&yd).unwrap();
        let m = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let e = gpu.iter().zip(&exact).fold(0.0f32, |e, (g, c)| e.max((g - c).abs())) / m;
        println!("matmul_q8 {ty:5}: rel err {e:.2e} vs exact f32");
        assert!(e <= 1e-2, "{ty}: rel err vs exact f32 {e}");
    }
}

#[test]
fn matmul_q8_checks_arguments() {
    let Some(cuda) = cuda_or_skip("matmul_q8_checks_arguments") else { return };
    let ty = GgmlType::Q4_0;
    let w = cuda.zeros::<u8>(ty.row_bytes(64).unwrap() as usize * 3).unwrap();
    let xq = cuda.zeros::<u8>(2 * act_row_bytes(64)).unwrap();
    let mut y = cuda.zeros::<f32>(6).unwrap();
    let e = cuda.matmul_q8(ty, &w, 4, 64, &xq, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("mmqt_q4_0_t8") && e.contains("w holds"), "{e}");
    let e = cuda.matmul_q8(ty, &w, 3, 64, &xq, 3, &mut y).unwrap_err().to_string();
    assert!(e.contains("xq holds"), "{e}");
    let mut short = cuda.zeros::<f32>(5).unwrap();
    let e = cuda.matmul_q8(ty, &w, 3, 64, &xq, 2, &mut short).unwrap_err().to_string();
    assert!(e.contains("y holds"), "{e}");
    let e = cuda.matmul_q8(GgmlType::Q4_K, &w, 1, 64, &xq, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("n_cols 64") && e.contains("block size 256"), "{e}");
    let e = cuda.matmul_q8(GgmlType::F16, &w, 3, 64, &xq, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("no int8 tensor-core kernel"), "{e}");
    // zero tokens is a no-op
    cuda.matmul_q8(ty, &w, 3, 64, &xq, 0, &mut y).unwrap();
}

/// Split-K: shapes whose tiles leave SMs idle (decode batches of up to 64 tokens on 7B-sized weights) are split
/// over the columns, and the split sums equal the unsplit kernel's up to f32 order; for the thin tile (`thin`)
/// and the prefill tile. The splits added up in the launch (each tile's last block) and by `sum_splits_f32` give
/// the same bits.
#[test]
fn matmul_q8_split_k_matches_unsplit() {
    let Some(cuda) = cuda_or_skip("matmul_q8_split_k_matches_unsplit") else { return };
    let mut rng = Rng::new(23);
    for (ty, n_rows, n_cols, n_tok, thin) in [
        (GgmlType::Q4_0, 4096, 4096, 32, true),
        (GgmlType::Q4_0, 4096, 4096, 32, false),
        (GgmlType::Q4_0, 11008, 4096, 20, false),
        (GgmlType::Q4_0, 4096, 4096, 8, true),
        (GgmlType::Q4_K, 4096, 4096, 20, true),
        (GgmlType::Q4_K, 4096, 4096, 20, false),
        (GgmlType::Q6_K, 4096, 11008, 9, true),
        (GgmlType::Q6_K, 4096, 11008, 9, false),
        (GgmlType::Q8_0, 1000, 4096, 64, false),
    ] {
        cuda.set_split_k(true);
        cuda.set_thin_mmq(thin);
        let (kernel, g) = cuda.mmq_kernel(ty, n_tok).unwrap();
        assert_eq!(kernel.starts_with("mmqt_"), thin, "{kernel} for {n_tok} tokens");
        let splits = cuda.mmq_splits(g, n_rows, n_cols, n_tok);
        assert!(splits > 1, "{ty} {n_rows}x{n_cols} n_tok {n_tok}: not split on {} SMs", cuda.n_sm);
        let w = random_weights(ty, n_rows, n_cols, &mut rng);
        let x = activations(&mut rng, n_tok, n_cols);
        let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
        let mut xq = cuda.zeros::<u8>(n_tok * act_row_bytes(n_cols)).unwrap();
        cuda.quantize_act(&xd, n_tok, n_cols, &mut xq).unwrap();
        let run = |split: bool, fixup: bool| {
            cuda.set_split_k(split);
            cuda.set_split_fixup(fixup);
            let mut yd = cuda.upload(&vec![f32::NAN; n_tok * n_rows + 5]).unwrap();
            cuda.matmul_q8(ty, &wd, n_rows, n_cols, &xq, n_tok, &mut yd).unwrap();
            cuda.download(&yd).unwrap()
        };
        let (split, whole) = (run(true, true), run(false, true));
        let summed = run(true, false);
        cuda.set_split_fixup(true);
        let same = split.iter().zip(&summed).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{ty} {n_rows}x{n_cols} n_tok {n_tok}: the in-launch split sum differs from sum_splits_f32's");
        assert!(split[n_tok * n_rows..].iter().all(|v| v.is_nan()), "{ty}: the split sums wrote past y");
        let mut worst = 0.0f32;
        for t in 0..n_tok {
            let (s, u) = (&split[t * n_rows..][..n_rows], &whole[t * n_rows..][..n_rows]);
            let scale = u.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = s.iter().zip(u).fold(0.0f32, |m, (a, b)| if (a - b).abs() > m { (a - b).abs() } else { m });
            assert!(s.iter().all(|v| v.is_finite()), "{ty} token {t}: a split sum is not finite");
            assert!(d <= MATMUL_TOL * scale, "{ty} {n_rows}x{n_cols} token {t}: split {d} apart (max |y| {scale})");
            worst = worst.max(d / scale);
        }
        println!("{kernel} {n_rows}x{n_cols} n_tok {n_tok}: {splits} splits, rel diff {worst:.2e}");
    }
    cuda.set_thin_mmq(true);
}
