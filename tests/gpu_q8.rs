//! GPU 8-bit-activation kernels (`quantize_q8_act`, `mmvq_*`) against their CPU twins: the quantized activations
//! must equal `quant::quantize::{q8_1_block, q8_k_block}` byte for byte (same rounding), and `matvec_q8` must
//! agree with `quant::matvec_q8` (same integer block sums; only the f32 summation order differs) within
//! max |gpu - cpu| / max |cpu| <= 1e-5, on random blocks of every supported type, for row counts that are odd and
//! not multiples of the kernels' rows per block, and row widths from one block to 11008 columns.
//!
//! Every test prints a reason and passes when no CUDA device is usable, so CPU-only CI runs this binary too.

mod common;

use common::cuda_or_skip;
use common::quant_data::{random_weights, Rng};
use half::f16;
use host::backend::cuda::Cuda;
use host::backend::cuda_q8::{act_row_bytes, layout, supports_q8, MvOpts, MV_COLS_MAX};
use host::gguf::GgmlType;
use host::quant::{self, quantize};

const MATVEC_TOL: f32 = 1e-5; // max |gpu - cpu| / max |cpu|

const Q8_TYPES: [GgmlType; 8] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// (n_rows, n_cols): 1 row, odd counts, partial and multi-step rows, rows that are not 16-byte multiples.
fn shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    if ty.block_size() == 32 {
        vec![(1, 32), (17, 96), (131, 1184), (33, 640), (67, 4096), (9, 11008)]
    } else {
        vec![(1, 256), (17, 768), (131, 2560), (67, 4096), (9, 11008)]
    }
}

/// Activations with the cases the rounding rules care about: values of both signs and several magnitudes, an
/// all-zero block, a block whose largest magnitude occurs first as a negative and then as a positive value,
/// and exact halves (v * 127 / amax landing on k + 0.5).
fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut x = rng.vec_f32(n);
    for (i, v) in x.iter_mut().enumerate() {
        *v *= [1.0, 0.01, 30.0, 1e-3][(i / 256) % 4];
    }
    if n >= 64 {
        x[32..64].fill(0.0);
    }
    if n >= 256 {
        x[3] = -2.0; // signed max of the first 256: the first of -2 and 2
        x[200] = 2.0;
        x[0] = 2.0 * 0.5 / 127.0 * 3.0; // 1.5 quantization steps of the first block of 32
    }
    x
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// max |a - b| / max |b|, NaN-propagating.
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f32 {
    let mut m = 0.0f32;
    for (g, c) in gpu.iter().zip(cpu) {
        let d = (g - c).abs();
        if d.is_nan() {
            return f32::NAN;
        }
        m = m.max(d);
    }
    m / max_abs(cpu).max(f32::MIN_POSITIVE)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

#[test]
fn quantize_matches_cpu_blocks() {
    let Some(cuda) = cuda_or_skip("quantize_matches_cpu_blocks") else { return };
    let mut rng = Rng::new(11);
    for n in [32usize, 96, 576, 640, 1024, 2560, 11008] {
        let n_tok = 3;
        let x = activations(&mut rng, n_tok * n);
        let rb = act_row_bytes(n);
        let xd = cuda.upload(&x).unwrap();
        let mut xq = cuda.upload(&vec![0xA5u8; n_tok * rb + 7]).unwrap();
        cuda.quantize_act(&xd, n_tok, n, &mut xq).unwrap();
        let got = cuda.download(&xq).unwrap();
        let nn = n as u32;
        for t in 0..n_tok {
            let (xr, qr) = (&x[t * n..(t + 1) * n], &got[t * rb..(t + 1) * rb]);
            for (b, xs) in xr.chunks_exact(32).enumerate() {
                let want = quantize::q8_1_block(xs);
                let qs: Vec<i8> = qr[32 * b..32 * b + 32].iter().map(|&v| v as i8).collect();
                assert_eq!(qs, want.qs, "n {n} tok {t} q8_1 block {b}: quants");
                let m = layout::off_meta(nn) as usize + 16 * b;
                let sum: i32 = want.qs.iter().map(|&q| q as i32).sum();
                assert_eq!(
                    f32::from_bits(u32_at(qr, m)),
                    f16::from_bits(want.d).to_f32(),
                    "n {n} tok {t} block {b}: d"
                );
                assert_eq!(
                    f32::from_bits(u32_at(qr, m + 4)),
                    f16::from_bits(want.s).to_f32(),
                    "n {n} tok {t} block {b}: s"
                );
                assert_eq!(u32_at(qr, m + 8) as i32, sum, "n {n} tok {t} block {b}: sum");
            }
            if n % 256 != 0 {
                assert_eq!(layout::k_cols(nn), 0);
                continue;
            }
            for (b, xs) in xr.chunks_exact(256).enumerate() {
                let want = quantize::q8_k_block(xs);
                let qo = layout::off_kq(nn) as usize + 256 * b;
                let qs: Vec<i8> = qr[qo..qo + 256].iter().map(|&v| v as i8).collect();
                assert_eq!(qs, want.qs, "n {n} tok {t} q8_K block {b}: quants");
                let d = f32::from_bits(u32_at(qr, layout::off_kd(nn) as usize + 4 * b));
                assert_eq!(d.to_bits(), want.d.to_bits(), "n {n} tok {t} q8_K block {b}: d {d} vs {}", want.d);
                for g in 0..16 {
                    let o = layout::off_ks(nn) as usize + 32 * b + 2 * layout::BSUM_POS[g] as usize;
                    let s = i16::from_le_bytes([qr[o], qr[o + 1]]);
                    assert_eq!(s, want.bsums[g], "n {n} tok {t} q8_K block {b} group {g}: sum");
                }
            }
        }
        // nothing written past the last row
        assert!(got[n_tok * rb..].iter().all(|&v| v == 0xA5), "n {n}: write past the end");
        println!("quantize n {n:5} x {n_tok}: q8_1 and q8_K bytes equal the CPU's");
    }
}

#[test]
fn matvec_q8_matches_cpu() {
    let Some(cuda) = cuda_or_skip("matvec_q8_matches_cpu") else { return };
    let mut rng = Rng::new(12);
    for ty in Q8_TYPES {
        assert!(supports_q8(ty));
        let mut worst = 0.0f32;
        for (n_rows, n_cols) in shapes(ty) {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let x = activations(&mut rng, n_cols);
            let mut cpu = vec![0.0f32; n_rows];
            quant::matvec_q8(ty, &w, n_rows, n_cols, &x, &mut cpu);
            assert!(max_abs(&cpu) > 0.0, "{ty}: degenerate test data");
            let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
            let mut xq = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            cuda.quantize_act(&xd, 1, n_cols, &mut xq).unwrap();
            let mut yd = cuda.upload(&vec![f32::NAN; n_rows + 3]).unwrap();
            cuda.matvec_q8(ty, &wd, n_rows, n_cols, &xq, &mut yd).unwrap();
            let gpu = cuda.download(&yd).unwrap();
            assert!(gpu[n_rows..].iter().all(|v| v.is_nan()), "{ty} {n_rows}x{n_cols}: wrote past n_rows");
            let err = rel_err(&gpu[..n_rows], &cpu);
            assert!(
                err <= MATVEC_TOL,
                "{ty} {n_rows}x{n_cols}: rel err {err} (gpu {:?}.. cpu {:?}..)",
                &gpu[..2.min(n_rows)],
                &cpu[..2.min(n_rows)]
            );
            worst = worst.max(err);
        }
        println!("matvec_q8 {ty:5} max rel err {worst:.2e}");
    }
}

/// The benchmark's shapes, where every warp runs many pipeline steps, compared with the exact f32 mat-vec too:
/// the 8-bit activations cost well under 1% of accuracy.
#[test]
fn matvec_q8_large_shapes() {
    let Some(cuda) = cuda_or_skip("matvec_q8_large_shapes") else { return };
    let mut rng = Rng::new(13);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K] {
        for (n_rows, n_cols) in [(4096, 11008), (11008, 4096)] {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let x = rng.vec_f32(n_cols);
            let (mut cpu, mut exact) = (vec![0.0f32; n_rows], vec![0.0f32; n_rows]);
            quant::matvec_q8(ty, &w, n_rows, n_cols, &x, &mut cpu);
            quant::matvec(ty, &w, n_rows, n_cols, &x, &mut exact);
            let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
            let mut xq = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            cuda.quantize_act(&xd, 1, n_cols, &mut xq).unwrap();
            let mut yd = cuda.upload(&vec![f32::NAN; n_rows]).unwrap();
            cuda.matvec_q8(ty, &wd, n_rows, n_cols, &xq, &mut yd).unwrap();
            let gpu = cuda.download(&yd).unwrap();
            let (err, err_exact) = (rel_err(&gpu, &cpu), rel_err(&gpu, &exact));
            println!("matvec_q8 {ty:5} {n_rows}x{n_cols}: rel err {err:.2e} vs CPU q8, {err_exact:.2e} vs exact f32");
            assert!(err <= MATVEC_TOL, "{ty} {n_rows}x{n_cols}: rel err {err}");
            assert!(err_exact <= 1e-2, "{ty} {n_rows}x{n_cols}: rel err vs exact {err_exact}");
        }
    }
}

#[test]
fn matvec_q8_checks_arguments() {
    let Some(cuda) = cuda_or_skip("matvec_q8_checks_arguments") else { return };
    let ty = GgmlType::Q4_0;
    let w = cuda.zeros::<u8>(ty.row_bytes(64).unwrap() as usize * 3).unwrap();
    let xq = cuda.zeros::<u8>(act_row_bytes(64)).unwrap();
    let mut y = cuda.zeros::<f32>(3).unwrap();
    let e = cuda.matvec_q8(ty, &w, 4, 64, &xq, &mut y).unwrap_err().to_string();
    assert!(e.contains("w holds"), "{e}");
    let short = cuda.zeros::<u8>(act_row_bytes(64) - 1).unwrap();
    let e = cuda.matvec_q8(ty, &w, 3, 64, &short, &mut y).unwrap_err().to_string();
    assert!(e.contains("xq holds"), "{e}");
    let e = cuda.matvec_q8(GgmlType::F16, &w, 3, 64, &xq, &mut y).unwrap_err().to_string();
    assert!(e.contains("no 8-bit-activation kernel"), "{e}");
    let x = cuda.zeros::<f32>(48).unwrap();
    let mut xq2 = cuda.zeros::<u8>(act_row_bytes(64)).unwrap();
    let e = cuda.quantize_act(&x, 1, 48, &mut xq2).unwrap_err().to_string();
    assert!(e.contains("n_cols 48"), "{e}");
}

/// The benchmark's alternative geometries compute the same function: within MATVEC_TOL of the CPU, and the
/// multi-column ones (run on as many activation rows as they take) bit-identical to `matvec_q8` per row (the
/// single-column ones split K their own way, so their sums are ordered differently).
#[test]
fn matvec_q8_variants_match_cpu() {
    let Some(cuda) = cuda_or_skip("matvec_q8_variants_match_cpu") else { return };
    let mut rng = Rng::new(14);
    for &(name, id, g) in layout::MQ_VARIANTS {
        let ty = GgmlType::from_id(id).expect("variant of a known type");
        let n = g.cols as usize;
        for (n_rows, n_cols) in [(37, 2560), (19, 11008)] {
            let c = ColsCase::new(&cuda, ty, n_rows, n_cols, n, &mut rng);
            let mut yd = cuda.upload(&vec![f32::NAN; n * n_rows]).unwrap();
            let opts = MvOpts { n, kernel: Some((name, g)), ..MvOpts::ONE };
            cuda.matvec_q8_opt(ty, &c.wd, n_rows, n_cols, &c.xq, &mut yd, opts).unwrap();
            // a single-column variant splits K its own way, so only its error is checked; a multi-column one
            // sums as the single-column kernel does
            c.check(&cuda.download(&yd).unwrap(), n, name, g.cols > 1);
        }
        println!("{name}: ok");
    }
}

/// One multi-column case: a random weight, `n` activation rows quantized together (`xq`), and per row the
/// single-column GPU result (`matvec_q8` on the row quantized alone) and the CPU twin's.
struct ColsCase {
    ty: GgmlType,
    n_rows: usize,
    n_cols: usize,
    wd: cudarc::driver::CudaSlice<u8>,
    xq: cudarc::driver::CudaSlice<u8>,
    one: Vec<Vec<f32>>,
    cpu: Vec<Vec<f32>>,
}

impl ColsCase {
    fn new(cuda: &Cuda, ty: GgmlType, n_rows: usize, n_cols: usize, n: usize, rng: &mut Rng) -> ColsCase {
        let w = random_weights(ty, n_rows, n_cols, rng);
        let x: Vec<f32> = (0..n).flat_map(|_| activations(rng, n_cols)).collect();
        let wd = cuda.upload(&w).unwrap();
        let mut xq = cuda.zeros::<u8>(n * act_row_bytes(n_cols)).unwrap();
        cuda.quantize_act(&cuda.upload(&x).unwrap(), n, n_cols, &mut xq).unwrap();
        let (mut one, mut cpu) = (Vec::new(), Vec::new());
        for xr in x.chunks_exact(n_cols) {
            let mut y = vec![0.0f32; n_rows];
            quant::matvec_q8(ty, &w, n_rows, n_cols, xr, &mut y);
            assert!(max_abs(&y) > 0.0, "{ty}: degenerate test data");
            cpu.push(y);
            let mut xq1 = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            cuda.quantize_act(&cuda.upload(xr).unwrap(), 1, n_cols, &mut xq1).unwrap();
            let mut yd = cuda.upload(&vec![f32::NAN; n_rows]).unwrap();
            cuda.matvec_q8(ty, &wd, n_rows, n_cols, &xq1, &mut yd).unwrap();
            one.push(cuda.download(&yd).unwrap());
        }
        ColsCase { ty, n_rows, n_cols, wd, xq, one, cpu }
    }

    /// `got` holds, in its first n rows of n_rows, results within MATVEC_TOL of the CPU's for the case's first n
    /// activation rows (with `bits`, the single-column results' bits); anything past the n rows is still NaN.
    fn check(&self, got: &[f32], n: usize, what: &str, bits: bool) {
        let (ty, n_rows, n_cols) = (self.ty, self.n_rows, self.n_cols);
        for (c, (one, cpu)) in self.one.iter().zip(&self.cpu).take(n).enumerate() {
            let y = &got[c * n_rows..(c + 1) * n_rows];
            if let Some(r) = (0..n_rows).find(|&r| bits && y[r].to_bits() != one[r].to_bits()) {
                panic!("{what} {ty} n={n} {n_rows}x{n_cols}: column {c} row {r}: {} vs matvec_q8 {}", y[r], one[r]);
            }
            let err = rel_err(y, cpu);
            assert!(err <= MATVEC_TOL, "{what} {ty} n={n} {n_rows}x{n_cols}: column {c} rel err {err} vs the CPU");
        }
        assert!(got[n * n_rows..].iter().all(|v| v.is_nan()), "{what} {ty} n={n} {n_rows}x{n_cols}: wrote past n rows");
    }
}

/// (n_rows, n_cols) for the multi-column kernels: rows that are no multiple of any kernel's rows per block (odd,
/// prime), widths of one step, a partial step and many steps (a legacy step is 1024 columns; a K-quant step 1024
/// or 2048).
fn cols_shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    if ty.block_size() == 32 {
        vec![(1, 32), (37, 1184), (13, 4096), (131, 11008)]
    } else {
        vec![(1, 256), (37, 2560), (13, 4096), (131, 11008)]
    }
}

/// `matvec_q8_cols` on n = 1..=19 activation rows (the 2-, 4- and 8-row kernels, masked where n is less, one
/// launch per 8 rows): each output row bit-identical to `matvec_q8` on that activation row alone (same item
/// products, same order of f32 sums: the batch-invariance of the GPU decode rests on it), within MATVEC_TOL of the
/// CPU twin, nothing written past n rows of y, and `accumulate` adding onto y.
#[test]
fn matvec_q8_cols_equal_single_column() {
    let Some(cuda) = cuda_or_skip("matvec_q8_cols_equal_single_column") else { return };
    let mut rng = Rng::new(15);
    for ty in Q8_TYPES {
        for (n_rows, n_cols) in cols_shapes(ty) {
            let c = ColsCase::new(&cuda, ty, n_rows, n_cols, 2 * MV_COLS_MAX + 3, &mut rng);
            for n in 1..=2 * MV_COLS_MAX + 3 {
                // the case's first n activation rows (xq holds 19)
                let mut yd = cuda.upload(&vec![f32::NAN; n * n_rows + 5]).unwrap();
                cuda.matvec_q8_cols(ty, &c.wd, n_rows, n_cols, &c.xq, n, &mut yd).unwrap();
                let got = cuda.download(&yd).unwrap();
                c.check(&got, n, "matvec_q8_cols", true);
                if n > MV_COLS_MAX {
                    continue;
                }
                let y0 = rng.vec_f32(n * n_rows);
                let mut ya = cuda.upload(&y0).unwrap();
                let opts = MvOpts { n, accumulate: true, ..MvOpts::ONE };
                cuda.matvec_q8_opt(ty, &c.wd, n_rows, n_cols, &c.xq, &mut ya, opts).unwrap();
                let want: Vec<f32> = y0.iter().zip(&got).map(|(a, b)| a + b).collect();
                assert_eq!(cuda.download(&ya).unwrap(), want, "{ty} n={n} {n_rows}x{n_cols}: accumulate");
            }
        }
        println!("matvec_q8_cols {ty:5}: n = 1..{} bit-identical to matvec_q8 per row, within {MATVEC_TOL:e} of the CPU", 2 * MV_COLS_MAX + 3);
    }
}

#[test]
fn matvec_q8_cols_checks_arguments() {
    let Some(cuda) = cuda_or_skip("matvec_q8_cols_checks_arguments") else { return };
    let ty = GgmlType::Q4_0;
    let w = cuda.zeros::<u8>(ty.row_bytes(64).unwrap() as usize * 3).unwrap();
    let xq = cuda.zeros::<u8>(3 * act_row_bytes(64)).unwrap();
    let mut y = cuda.zeros::<f32>(9).unwrap();
    let e = cuda.matvec_q8_cols(ty, &w, 3, 64, &xq, 0, &mut y).unwrap_err().to_string();
    assert!(e.contains("0 activation rows"), "{e}");
    let opts = MvOpts { n: MV_COLS_MAX + 1, ..MvOpts::ONE };
    let e = cuda.matvec_q8_opt(ty, &w, 3, 64, &xq, &mut y, opts).unwrap_err().to_string();
    assert!(e.contains(&format!("{} activation rows", MV_COLS_MAX + 1)), "{e}");
    let e = cuda.matvec_q8_cols(ty, &w, 3, 64, &xq, 4, &mut y).unwrap_err().to_string();
    assert!(e.contains("xq holds"), "{e}");
    let e = cuda.matvec_q8_cols(ty, &w, 4, 64, &xq, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("w holds"), "{e}");
    let mut short = cuda.zeros::<f32>(8).unwrap();
    let e = cuda.matvec_q8_cols(ty, &w, 3, 64, &xq, 3, &mut short).unwrap_err().to_string();
    assert!(e.contains("y holds"), "{e}");
    let e = cuda.matvec_q8_cols(GgmlType::F16, &w, 3, 64, &xq, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("no 8-bit-activation kernel"), "{e}");
    let (name, g) = ("mmvq_q4_0_c2", layout::MC_Q4_0[0]);
    let opts = MvOpts { n: 3, kernel: Some((name, g)), ..MvOpts::ONE };
    let e = cuda.matvec_q8_opt(ty, &w, 3, 64, &xq, &mut y, opts).unwrap_err().to_string();
    assert!(e.contains("exceed the kernel's 2"), "{e}");
    cuda.matvec_q8_cols(ty, &w, 3, 64, &xq, 3, &mut y).unwrap();
}

/// The fused mat-vec (`matvec_q8_fused`) against the separate launches it replaces, on the same device: plain
/// quantization and the gated prologues give bit-identical results (same formulas, same rounding), the RMSNorm
/// prologue (its sum of squares in another order) agrees within MATVEC_TOL, and `accumulate` adds to y.
#[test]
fn fused_matvec_equals_separate_ops() {
    use host::backend::cuda_q8::{supports_fused, Prologue};
    let Some(cuda) = cuda_or_skip("fused_matvec_equals_separate_ops") else { return };
    let mut rng = Rng::new(21);
    for ty in Q8_TYPES {
        for (n_rows, n_cols) in [(67usize, 256usize), (577, 1536), (1000, 4096)] {
            assert!(supports_fused(ty, n_cols), "{ty} {n_cols}");
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let wd = cuda.upload(&w).unwrap();
            let src = activations(&mut rng, 2 * n_cols); // (gate, up) for the gated prologues
            let nw: Vec<f32> = rng.vec_f32(n_cols).iter().map(|v| 1.0 + 0.5 * v).collect();
            let (sd, nwd) = (cuda.upload(&src).unwrap(), cuda.upload(&nw).unwrap());
            let y0: Vec<f32> = rng.vec_f32(n_rows);
            let mut xq = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            let mut tmp = cuda.zeros::<f32>(n_cols).unwrap();
            for (name, pro) in [
                ("quantize", Prologue::Quantize),
                ("rmsnorm", Prologue::RmsNorm(&nwd, 1e-5)),
                ("swiglu", Prologue::SwiGlu),
                ("gelu", Prologue::GeluTanh),
            ] {
                // the separate ops
                let up = host::backend::cuda::At(&sd, n_cols);
                let x_in = match pro {
                    Prologue::Quantize => &sd,
                    Prologue::RmsNorm(..) => {
                        cuda.rmsnorm_rows(&mut tmp, &sd, &nwd, 1, n_cols, 1e-5).unwrap();
                        &tmp
                    }
                    Prologue::SwiGlu => {
                        cuda.swiglu_rows(&mut tmp, &sd, &up, n_cols).unwrap();
                        &tmp
                    }
                    Prologue::GeluTanh => {
                        cuda.gelu_tanh_mul_rows(&mut tmp, &sd, &up, n_cols).unwrap();
                        &tmp
                    }
                };
                cuda.quantize_act(x_in, 1, n_cols, &mut xq).unwrap();
                let mut yd = cuda.zeros::<f32>(n_rows).unwrap();
                cuda.matvec_q8(ty, &wd, n_rows, n_cols, &xq, &mut yd).unwrap();
                let want = cuda.download(&yd).unwrap();
                // fused, then fused with accumulate onto y0
                let mut yf = cuda.upload(&vec![f32::NAN; n_rows + 1]).unwrap();
                cuda.matvec_q8_fused(ty, &wd, n_rows, n_cols, &sd, pro, &mut yf, false).unwrap();
                let got = cuda.download(&yf).unwrap();
                assert!(got[n_rows].is_nan(), "{ty} {name}: wrote past n_rows");
                let mut ya = cuda.upload(&y0).unwrap();
                cuda.matvec_q8_fused(ty, &wd, n_rows, n_cols, &sd, pro, &mut ya, true).unwrap();
                let acc = cuda.download(&ya).unwrap();
                let err = rel_err(&got[..n_rows], &want);
                let exact = !matches!(pro, Prologue::RmsNorm(..));
                assert!(if exact { got[..n_rows] == want[..] } else { err <= MATVEC_TOL },
                        "{ty} {n_rows}x{n_cols} {name}: fused differs from the separate ops (rel err {err})");
                let want_acc: Vec<f32> = y0.iter().zip(&got).map(|(a, b)| a + b).collect();
                assert_eq!(acc, want_acc, "{ty} {n_rows}x{n_cols} {name}: accumulate");
            }
        }
        println!("fused mat-vec {ty:5}: equals the separate ops");
    }
}

/// The prologue made once (`act_prologue`, any width) and the plain mat-vec with `accumulate` against the fused
/// kernel that makes the activations in every block: the same activation bytes, hence bit-identical outputs (the
/// RMSNorm prologue within MATVEC_TOL: its sum of squares is reduced over blocks of another size); the
/// prologue's bytes equal the separate norm / gating then `quantize_act`, also past the fused kernel's width
/// limit (11008 columns, Llama-7B's feed-forward).
#[test]
fn prologue_once_equals_fused_matvec() {
    use host::backend::cuda_q8::{supports_fused, Prologue};
    let Some(cuda) = cuda_or_skip("prologue_once_equals_fused_matvec") else { return };
    let mut rng = Rng::new(22);
    for ty in Q8_TYPES {
        for (n_rows, n_cols) in [(67usize, 256usize), (1000, 4096), (300, 11008)] {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let wd = cuda.upload(&w).unwrap();
            let src = activations(&mut rng, 2 * n_cols);
            let nw: Vec<f32> = rng.vec_f32(n_cols).iter().map(|v| 1.0 + 0.5 * v).collect();
            let (sd, nwd) = (cuda.upload(&src).unwrap(), cuda.upload(&nw).unwrap());
            let y0: Vec<f32> = rng.vec_f32(n_rows);
            let mut xq = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            let mut xq_sep = cuda.zeros::<u8>(act_row_bytes(n_cols)).unwrap();
            let mut tmp = cuda.zeros::<f32>(n_cols).unwrap();
            for (name, pro) in [
                ("quantize", Prologue::Quantize),
                ("rmsnorm", Prologue::RmsNorm(&nwd, 1e-5)),
                ("swiglu", Prologue::SwiGlu),
                ("gelu", Prologue::GeluTanh),
            ] {
                cuda.act_prologue(&sd, pro, n_cols, &mut xq).unwrap();
                let mut ya = cuda.upload(&y0).unwrap();
                cuda.matvec_q8_acc(ty, &wd, n_rows, n_cols, &xq, &mut ya, true).unwrap();
                let got_acc = cuda.download(&ya).unwrap();
                let mut yd = cuda.upload(&vec![f32::NAN; n_rows + 1]).unwrap();
                cuda.matvec_q8_acc(ty, &wd, n_rows, n_cols, &xq, &mut yd, false).unwrap();
                let got = cuda.download(&yd).unwrap();
                assert!(got[n_rows].is_nan(), "{ty} {name}: wrote past n_rows");
                let want_acc: Vec<f32> = y0.iter().zip(&got).map(|(a, b)| a + b).collect();
                assert_eq!(got_acc, want_acc, "{ty} {n_rows}x{n_cols} {name}: accumulate");
                let exact = !matches!(pro, Prologue::RmsNorm(..));
                if supports_fused(ty, n_cols) {
                    let mut yf = cuda.zeros::<f32>(n_rows).unwrap();
                    cuda.matvec_q8_fused(ty, &wd, n_rows, n_cols, &sd, pro, &mut yf, false).unwrap();
                    let fused = cuda.download(&yf).unwrap();
                    // the norm's sum of squares is reduced over blocks of another size: equal within rounding
                    let err = rel_err(&fused, &got[..n_rows]);
                    assert!(if exact { fused[..] == got[..n_rows] } else { err <= MATVEC_TOL },
                            "{ty} {n_rows}x{n_cols} {name}: vs fused (rel err {err})");
                }
                // the separate ops: gating is the same formula (equal bytes); the norm's sum runs in another order
                let up = host::backend::cuda::At(&sd, n_cols);
                let x_in = match pro {
                    Prologue::Quantize => &sd,
                    Prologue::RmsNorm(..) => {
                        cuda.rmsnorm_rows(&mut tmp, &sd, &nwd, 1, n_cols, 1e-5).unwrap();
                        &tmp
                    }
                    Prologue::SwiGlu => {
                        cuda.swiglu_rows(&mut tmp, &sd, &up, n_cols).unwrap();
                        &tmp
                    }
                    Prologue::GeluTanh => {
                        cuda.gelu_tanh_mul_rows(&mut tmp, &sd, &up, n_cols).unwrap();
                        &tmp
                    }
                };
                cuda.quantize_act(x_in, 1, n_cols, &mut xq_sep).unwrap();
                let (a, b) = (cuda.download(&xq).unwrap(), cuda.download(&xq_sep).unwrap());
                if !matches!(pro, Prologue::RmsNorm(..)) {
                    assert!(a == b, "{ty} {n_cols} {name}: prologue bytes differ from the separate ops");
                } else {
                    let mut ys = cuda.zeros::<f32>(n_rows).unwrap();
                    cuda.matvec_q8(ty, &wd, n_rows, n_cols, &xq_sep, &mut ys).unwrap();
                    let err = rel_err(&got[..n_rows], &cuda.download(&ys).unwrap());
                    assert!(err <= MATVEC_TOL, "{ty} {n_rows}x{n_cols} rmsnorm: rel err {err}");
                }
            }
        }
        println!("prologue once {ty:5}: equals the fused kernel and the separate ops");
    }
}
