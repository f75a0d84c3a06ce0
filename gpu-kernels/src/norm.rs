//! RMSNorm. CPU twin: `host::backend::cpu::rmsnorm`.

use crate::common::*;

/// out[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, i]^2) + eps)
///
/// Launch: grid = (n_rows, 1, 1), block = (256, 1, 1); `dim` % 4 == 0, all pointers 16-byte aligned.
/// Traffic: one read of x (the second pass re-reads the row from L1/L2), one read of w per row (cached), one
/// write of out: 2 * n_rows * dim * 4 bytes from DRAM.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rmsnorm_f32(out: *mut f32 /* (n_rows, dim) */, x: *const f32 /* (n_rows, dim) */,
                                              w: *const f32 /* (dim,) */, dim: u32, eps: f32) {
    let row = bid() as usize * dim as usize;
    let (x, out) = (x.add(row), out.add(row));
    let n4 = dim / 4;
    // 1) partial sum of squares, 4 floats per load, strided over the row
    let mut ss = 0.0f32;
    let mut i = tid();
    while i < n4 {
        let v = ld_f32x4(x.add(4 * i as usize));
        ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
        i += ntid();
    }
    // 2) block reduce -> scale
    let scale = 1.0 / sqrt(block_sum(ss) / dim as f32 + eps);
    // 3) normalize and write back
    let mut i = tid();
    while i < n4 {
        let o = 4 * i as usize;
        let v = ld_f32x4(x.add(o));
        let g = ld_nc_f32x4(w.add(o));
        st_f32x4(out.add(o), [g[0] * (v[0] * scale), g[1] * (v[1] * scale), g[2] * (v[2] * scale), g[3] * (v[3] * scale)]);
        i += ntid();
    }
}
