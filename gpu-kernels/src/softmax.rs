//! Softmax over rows. CPU twin: `host::backend::cpu::softmax_rows`.

use crate::common::*;

/// x[r, i] = exp(x[r, i] - max_r) / sum_j exp(x[r, j] - max_r), in place.
///
/// Launch: grid = (n_rows, 1, 1), block = (256, 1, 1). Traffic: one read and one write of x from DRAM (the
/// row's later passes hit L1/L2).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn softmax_rows_f32(x: *mut f32 /* (n_rows, n) */, n: u32) {
    crate::common::pdl_enter();
    let x = x.add(bid() as usize * n as usize);
    // 1) row max
    let mut m = f32::NEG_INFINITY;
    let mut i = tid();
    while i < n {
        m = fmax(m, *x.add(i as usize));
        i += ntid();
    }
    let m = block_max(m);
    // 2) exponentiate and sum
    let mut s = 0.0f32;
    let mut i = tid();
    while i < n {
        let e = exp(*x.add(i as usize) - m);
        *x.add(i as usize) = e;
        s += e;
        i += ntid();
    }
    let inv = 1.0 / block_sum(s);
    // 3) normalise
    let mut i = tid();
    while i < n {
        *x.add(i as usize) *= inv;
        i += ntid();
    }
}
