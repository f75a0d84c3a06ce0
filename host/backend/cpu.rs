//! CPU reference ops over slices: the oracle every GPU kernel is tested against. Each op has a CUDA twin of the
//! same name in `gpu-kernels/` (launched from `backend::cuda`).

/// RMSNorm of each row: out[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, i]^2) + eps).
/// x, out: (n_rows, dim); w: (dim,).
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    for (o, xr) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        let ss = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
        let scale = 1.0 / (ss as f32 + eps).sqrt();
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = wv * (xv * scale);
        }
    }
}

/// Element-wise sum: out[i] = a[i] + b[i].
pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Element-wise product: out[i] = a[i] * b[i].
pub fn mul(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// Softmax of each row in place: x[r, i] = exp(x[r, i] - max_r) / sum_j exp(x[r, j] - max_r). x: (n_rows, n).
pub fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64; // f64: the reference must not lose digits over a 262k vocabulary
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        // x = [3, 3, 3, 3] -> mean square 9 -> x / 3 = 1 -> out = w
        let mut out = [0.0; 4];
        rmsnorm(&mut out, &[3.0; 4], &[1.0, 2.0, 3.0, 4.0], 4, 0.0);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = [1.0, 2.0, 3.0, 1000.0, 1000.0, 0.0];
        softmax_rows(&mut x, 3);
        assert!((x[0] + x[1] + x[2] - 1.0).abs() < 1e-6);
        assert!(x[0] < x[1] && x[1] < x[2]);
        // huge equal logits must not overflow: exp is taken after subtracting the row max
        assert!((x[3] - 0.5).abs() < 1e-6 && (x[4] - 0.5).abs() < 1e-6 && x[5] == 0.0);
    }
}
