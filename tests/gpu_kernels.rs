//! Each f32 GPU kernel against its CPU twin in `backend::cpu` on fresh random inputs.
//! Skips with a printed reason when no CUDA device (or no kernel build) is present.

mod common;

use common::{cuda_or_skip, max_rel_err, Rng};
use host::backend::cpu;

/// Relative error allowed for f32 ops (element-wise, with a floor of 1e-3 for values near zero).
const F32_TOL: f32 = 1e-5;

#[test]
fn rmsnorm_matches_cpu() {
    let Some(gpu) = cuda_or_skip("rmsnorm_matches_cpu") else { return };
    let mut rng = Rng::new(1);
    for (rows, dim) in [(1, 4), (3, 576), (7, 4096), (2, 8196)] {
        let x = rng.vec(rows * dim, -4.0, 4.0);
        let w = rng.vec(dim, -2.0, 2.0);
        let mut want = vec![0.0; x.len()];
        cpu::rmsnorm(&mut want, &x, &w, dim, 1e-5);
        let (dx, dw) = (gpu.upload(&x).unwrap(), gpu.upload(&w).unwrap());
        let mut dout = gpu.zeros::<f32>(x.len()).unwrap();
        gpu.rmsnorm(&mut dout, &dx, &dw, dim, 1e-5).unwrap();
        let err = max_rel_err(&gpu.download(&dout).unwrap(), &want, 1e-3);
        println!("rmsnorm rows={rows} dim={dim}: max rel err {err:.2e}");
        assert!(err <= F32_TOL, "rmsnorm rows={rows} dim={dim}: {err}");
    }
}

#[test]
fn add_and_mul_match_cpu() {
    let Some(gpu) = cuda_or_skip("add_and_mul_match_cpu") else { return };
    let mut rng = Rng::new(2);
    for n in [1, 3, 1024, 4097, 100_003] {
        let (a, b) = (rng.vec(n, -10.0, 10.0), rng.vec(n, -10.0, 10.0));
        let (da, db) = (gpu.upload(&a).unwrap(), gpu.upload(&b).unwrap());
        let mut dout = gpu.zeros::<f32>(n).unwrap();
        let mut want = vec![0.0; n];

        cpu::add(&mut want, &a, &b);
        gpu.add(&mut dout, &da, &db).unwrap();
        let err = max_rel_err(&gpu.download(&dout).unwrap(), &want, 1e-3);
        assert!(err <= F32_TOL, "add n={n}: {err}");

        cpu::mul(&mut want, &a, &b);
        gpu.mul(&mut dout, &da, &db).unwrap();
        let err = max_rel_err(&gpu.download(&dout).unwrap(), &want, 1e-3);
        assert!(err <= F32_TOL, "mul n={n}: {err}");
    }
}

#[test]
fn softmax_matches_cpu() {
    let Some(gpu) = cuda_or_skip("softmax_matches_cpu") else { return };
    let mut rng = Rng::new(3);
    for (rows, n) in [(1, 1), (4, 7), (3, 49152), (16, 1000)] {
        let x = rng.vec(rows * n, -20.0, 20.0);
        let mut want = x.clone();
        cpu::softmax_rows(&mut want, n);
        let mut dx = gpu.upload(&x).unwrap();
        gpu.softmax_rows(&mut dx, n).unwrap();
        let got = gpu.download(&dx).unwrap();
        // probabilities far below the row max underflow alike on both sides; judge them against the row scale
        let err = max_rel_err(&got, &want, 1e-6);
        println!("softmax rows={rows} n={n}: max rel err {err:.2e}");
        assert!(err <= F32_TOL, "softmax rows={rows} n={n}: {err}");
    }
}

#[test]
fn launchers_reject_mismatched_lengths() {
    let Some(gpu) = cuda_or_skip("launchers_reject_mismatched_lengths") else { return };
    let (a, b) = (gpu.zeros::<f32>(8).unwrap(), gpu.zeros::<f32>(9).unwrap());
    let mut out = gpu.zeros::<f32>(8).unwrap();
    let err = gpu.add(&mut out, &a, &b).unwrap_err().to_string();
    assert!(err.contains("add_f32") && err.contains('9'), "{err}");
}
