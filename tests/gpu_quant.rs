//! GPU quant kernels against their CPU twins (`quant::{dequantize_row, matvec, matmul}`) on random tensors of
//! every type: odd and even row counts, and shapes that are not multiples of the kernels' tiles (mat-vec: 16 rows
//! per block and 256..2048-element steps; mat-mul: 64 rows x 32 tokens x 128 columns; plain types also a column
//! tail of n_cols % 8 and rows that start 2 bytes off a 4-byte boundary).
//!
//! Tolerances: dequantize must agree bit for bit with the CPU twin (the kernels round a * q + b exactly as it
//! does; the 1e-6 relative bound is checked first for a readable message). Against gguf-py's fixtures: within 1e-6
//! relative, with the count of bit-exact elements printed. Mat-vec and mat-mul: max |gpu -
//! cpu| / max |cpu| over the output <= 1e-4 (both sum in f32, in different orders).
//!
//! Every test prints a reason and passes when no CUDA device is usable, so CPU-only CI runs these binaries too.

mod common;

use common::cuda_or_skip;
use common::quant_data::{random_weights, Rng, TYPES};
use host::gguf::GgmlType;
use host::quant;

const DEQUANT_TOL: f32 = 1e-6; // relative, per element
const MATVEC_TOL: f32 = 1e-4; // max |gpu - cpu| / max |cpu|
const MATMUL_TOL: f32 = 1e-4; // same measure

/// (n_rows, n_cols) cases for a type: 1 row, odd and even counts that are not multiples of 16 or 64, partial and
/// multi-step rows.
fn shapes(ty: GgmlType) -> Vec<(usize, usize)> {
    match ty {
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => vec![(1, 8), (17, 100), (130, 1003), (67, 4096)],
        t if t.block_size() == 32 => vec![(1, 32), (17, 96), (130, 1184), (67, 4096)],
        _ => vec![(1, 256), (17, 768), (130, 2560), (67, 4096)],
    }
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// max |a - b| / max |b|, NaN-propagating (a NaN anywhere fails the comparison with the tolerance).
fn rel_err(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len());
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

#[test]
fn dequantize_matches_cpu() {
    let Some(cuda) = cuda_or_skip("dequantize_matches_cpu") else { return };
    let mut rng = Rng::new(1);
    for ty in TYPES {
        for (n_rows, n_cols) in shapes(ty) {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let row_bytes = w.len() / n_rows;
            let mut cpu = vec![0.0f32; n_rows * n_cols];
            for (src, dst) in w.chunks_exact(row_bytes).zip(cpu.chunks_exact_mut(n_cols)) {
                quant::dequantize_row(ty, src, dst).unwrap();
            }
            let wd = cuda.upload(&w).unwrap();
            let mut out = cuda.upload(&vec![f32::NAN; n_rows * n_cols]).unwrap();
            cuda.dequantize(ty, &wd, n_rows, n_cols, &mut out).unwrap();
            let gpu = cuda.download(&out).unwrap();
            let mut exact = 0;
            for (i, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
                assert!(c.is_finite(), "{ty}: cpu element {i} is {c}");
                exact += (g.to_bits() == c.to_bits()) as usize;
                assert!((g - c).abs() <= DEQUANT_TOL * c.abs(), "{ty} {n_rows}x{n_cols}: element {i}: gpu {g} cpu {c}");
                assert_eq!(
                    g.to_bits(),
                    c.to_bits(),
                    "{ty} {n_rows}x{n_cols}: element {i} not bit-exact: gpu {g} cpu {c}"
                );
            }
            println!("dequantize {ty:5} {n_rows:4}x{n_cols:<5} bit-exact {exact}/{}", gpu.len());
        }
    }
}

#[test]
fn matvec_matches_cpu() {
    let Some(cuda) = cuda_or_skip("matvec_matches_cpu") else { return };
    let mut rng = Rng::new(2);
    for ty in TYPES {
        let mut worst = 0.0f32;
        for (n_rows, n_cols) in shapes(ty) {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let x = rng.vec_f32(n_cols);
            let mut cpu = vec![0.0f32; n_rows];
            quant::matvec(ty, &w, n_rows, n_cols, &x, &mut cpu);
            let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
            let mut yd = cuda.upload(&vec![f32::NAN; n_rows]).unwrap();
            cuda.matvec(ty, &wd, n_rows, n_cols, &xd, &mut yd).unwrap();
            let gpu = cuda.download(&yd).unwrap();
            let err = rel_err(&gpu, &cpu);
            assert!(
                err <= MATVEC_TOL,
                "{ty} {n_rows}x{n_cols}: rel err {err} (gpu {:?}.. cpu {:?}..)",
                &gpu[..1],
                &cpu[..1]
            );
            assert!(max_abs(&cpu) > 0.0, "{ty}: degenerate test data");
            worst = worst.max(err);
        }
        println!("matvec {ty:5} max rel err {worst:.2e}");
    }
}

#[test]
fn matmul_matches_cpu() {
    let Some(cuda) = cuda_or_skip("matmul_matches_cpu") else { return };
    let mut rng = Rng::new(3);
    for ty in TYPES {
        let mut worst = 0.0f32;
        for ((n_rows, n_cols), n_tok) in shapes(ty).into_iter().zip([1, 5, 40, 33]) {
            let w = random_weights(ty, n_rows, n_cols, &mut rng);
            let x = rng.vec_f32(n_tok * n_cols);
            let mut cpu = vec![0.0f32; n_tok * n_rows];
            quant::matmul(ty, &w, n_rows, n_cols, &x, &mut cpu);
            let (wd, xd) = (cuda.upload(&w).unwrap(), cuda.upload(&x).unwrap());
            let mut yd = cuda.upload(&vec![f32::NAN; n_tok * n_rows]).unwrap();
            cuda.matmul(ty, &wd, n_rows, n_cols, &xd, n_tok, &mut yd).unwrap();
            let gpu = cuda.download(&yd).unwrap();
            let err = rel_err(&gpu, &cpu);
            assert!(err <= MATMUL_TOL, "{ty} {n_rows}x{n_cols} n_tok={n_tok}: rel err {err}");
            worst = worst.max(err);
        }
        println!("matmul {ty:5} max rel err {worst:.2e}");
    }
}

/// The mat-vec of a larger weight, where every block of the grid runs many pipeline steps, and mat-mul with a
/// prefill-sized batch: the shapes the benchmark times.
#[test]
fn benchmark_shapes_match_cpu() {
    let Some(cuda) = cuda_or_skip("benchmark_shapes_match_cpu") else { return };
    let mut rng = Rng::new(4);
    for ty in [GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q8_0] {
        let (n_rows, n_cols, n_tok) = (1000, 11008, 70);
        let w = random_weights(ty, n_rows, n_cols, &mut rng);
        let x = rng.vec_f32(n_tok * n_cols);
        let wd = cuda.upload(&w).unwrap();
        let mut cpu = vec![0.0f32; n_rows];
        quant::matvec(ty, &w, n_rows, n_cols, &x[..n_cols], &mut cpu);
        let xd = cuda.upload(&x[..n_cols]).unwrap();
        let mut yd = cuda.upload(&vec![f32::NAN; n_rows]).unwrap();
        cuda.matvec(ty, &wd, n_rows, n_cols, &xd, &mut yd).unwrap();
        let err = rel_err(&cuda.download(&yd).unwrap(), &cpu);
        assert!(err <= MATVEC_TOL, "{ty} matvec {n_rows}x{n_cols}: rel err {err}");

        let mut cpu = vec![0.0f32; n_tok * n_rows];
        quant::matmul(ty, &w, n_rows, n_cols, &x, &mut cpu);
        let xd = cuda.upload(&x).unwrap();
        let mut yd = cuda.upload(&vec![f32::NAN; n_tok * n_rows]).unwrap();
        cuda.matmul(ty, &wd, n_rows, n_cols, &xd, n_tok, &mut yd).unwrap();
        let err2 = rel_err(&cuda.download(&yd).unwrap(), &cpu);
        assert!(err2 <= MATMUL_TOL, "{ty} matmul {n_rows}x{n_cols} n_tok={n_tok}: rel err {err2}");
        println!("{ty:5} {n_rows}x{n_cols}: matvec rel err {err:.2e}, matmul (n_tok={n_tok}) {err2:.2e}");
    }
}

/// A fixture of `scripts/make_gpu_quant_fixtures.py`: blocks of a small tensor and gguf-py's dequantization.
struct Fixture {
    n_rows: usize,
    n_cols: usize,
    blocks: Vec<u8>,
    values: Vec<f32>, // (n_rows, n_cols)
}

/// The fixture files, compiled in so that the test binary runs from any directory (the GPU machine's too).
macro_rules! fixture_files {
    ($($name:literal),*) => {
        &[$(($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gpu_quant/", $name, ".bin")))),*]
    };
}
const FIXTURES: &[(&str, &[u8])] = fixture_files!(
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K"
);

fn fixture(ty: GgmlType) -> Fixture {
    let b = FIXTURES.iter().find(|f| f.0 == ty.name()).unwrap_or_else(|| panic!("no fixture for {ty}")).1;
    let u = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let (n_rows, n_cols, n_bytes) = (u(0), u(1), u(2));
    let blocks = b[12..12 + n_bytes].to_vec();
    let values: Vec<f32> =
        b[12 + n_bytes..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values.len(), n_rows * n_cols, "{ty} fixture");
    Fixture { n_rows, n_cols, blocks, values }
}

/// The GPU decoders against gguf-py's dequantization (the reference the CPU twin is also held to), and the
/// mat-vec / mat-mul against an f64 product of those values: independent of the CPU twin.
#[test]
fn kernels_match_gguf_py_fixtures() {
    let Some(cuda) = cuda_or_skip("kernels_match_gguf_py_fixtures") else { return };
    let mut rng = Rng::new(5);
    for ty in TYPES {
        let f = fixture(ty);
        let (n_rows, n_cols) = (f.n_rows, f.n_cols);
        let wd = cuda.upload(&f.blocks).unwrap();
        let mut out = cuda.upload(&vec![f32::NAN; n_rows * n_cols]).unwrap();
        cuda.dequantize(ty, &wd, n_rows, n_cols, &mut out).unwrap();
        let gpu = cuda.download(&out).unwrap();
        let mut exact = 0;
        for (i, (g, c)) in gpu.iter().zip(&f.values).enumerate() {
            exact += (g.to_bits() == c.to_bits()) as usize;
            assert!((g - c).abs() <= DEQUANT_TOL * c.abs(), "{ty}: element {i}: gpu {g} gguf-py {c}");
        }

        let n_tok = 3;
        let x = rng.vec_f32(n_tok * n_cols);
        let mut want = vec![0.0f32; n_tok * n_rows]; // (n_tok, n_rows), f64 sums
        for t in 0..n_tok {
            for r in 0..n_rows {
                let row = &f.values[r * n_cols..][..n_cols];
                let s: f64 = row.iter().zip(&x[t * n_cols..][..n_cols]).map(|(&a, &b)| a as f64 * b as f64).sum();
                want[t * n_rows + r] = s as f32;
            }
        }
        let xd = cuda.upload(&x[..n_cols]).unwrap();
        let mut yd = cuda.upload(&vec![f32::NAN; n_rows]).unwrap();
        cuda.matvec(ty, &wd, n_rows, n_cols, &xd, &mut yd).unwrap();
        let mv = rel_err(&cuda.download(&yd).unwrap(), &want[..n_rows]);
        let xd = cuda.upload(&x).unwrap();
        let mut yd = cuda.upload(&vec![f32::NAN; n_tok * n_rows]).unwrap();
        cuda.matmul(ty, &wd, n_rows, n_cols, &xd, n_tok, &mut yd).unwrap();
        let mm = rel_err(&cuda.download(&yd).unwrap(), &want);
        println!("fixture {ty:5} dequant bit-exact {exact}/{}, matvec rel err {mv:.2e}, matmul {mm:.2e}", gpu.len());
        assert!(mv <= MATVEC_TOL && mm <= MATMUL_TOL, "{ty}: matvec {mv}, matmul {mm}");
    }
}

#[test]
fn launchers_reject_bad_shapes() {
    let Some(cuda) = cuda_or_skip("launchers_reject_bad_shapes") else { return };
    let w = cuda.upload(&[0u8; 2 * 18]).unwrap();
    let x = cuda.upload(&[0.0f32; 32]).unwrap();
    let mut y1 = cuda.upload(&[0.0f32; 1]).unwrap();
    let e = cuda.matvec(GgmlType::Q4_0, &w, 2, 32, &x, &mut y1).unwrap_err().to_string();
    assert!(e.contains("matvec_q4_0") && e.contains("y holds 1 elements, needs 2"), "{e}");
    let mut y = cuda.upload(&[0.0f32; 3]).unwrap();
    let e = cuda.matvec(GgmlType::Q4_0, &w, 3, 32, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("36 bytes, expected 54"), "{e}");
    let e = cuda.matvec(GgmlType::IQ2_XS, &w, 2, 256, &x, &mut y).unwrap_err().to_string();
    assert!(e.contains("IQ2_XS has no cuda kernels"), "{e}");
    let mut out = cuda.upload(&[0.0f32; 64]).unwrap();
    let e = cuda.dequantize(GgmlType::Q4_0, &w, 2, 31, &mut out).unwrap_err().to_string();
    assert!(e.contains("n_cols 31"), "{e}");
    let e = cuda.matmul(GgmlType::Q4_0, &w, 2, 32, &x, 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("x holds 32 elements, needs 64"), "{e}");
}
