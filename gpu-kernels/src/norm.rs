//! RMSNorm. CPU twin: `host::backend::cpu::rmsnorm`.

use crate::common::*;

/// float4 chunks each thread keeps in registers; rows up to `REG_CHUNKS * 4 * blockDim` floats are read once.
const REG_CHUNKS: usize = 4;

/// out[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, i]^2) + eps)
///
/// Launch: grid = (n_rows, 1, 1), block = (256, 1, 1); `dim` % 4 == 0, all pointers 16-byte aligned.
/// Traffic: one read of x, one read of w per row (L2-resident), one write of out: ~2 * n_rows * dim * 4 bytes.
/// Rows of up to 4096 floats stay in registers between the two passes; longer rows re-read x (from L1/L2).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn rmsnorm_f32(out: *mut f32 /* (n_rows, dim) */, x: *const f32 /* (n_rows, dim) */,
                                              w: *const f32 /* (dim,) */, dim: u32, eps: f32) {
    crate::common::pdl_enter();
    let row = bid() as usize * dim as usize;
    let (x, out) = (x.add(row), out.add(row));
    let (n4, stride) = (dim / 4, ntid());
    // 1) sum of squares; the first REG_CHUNKS float4s of each thread are kept in registers
    let mut cache = [[0.0f32; 4]; REG_CHUNKS];
    let mut ss = 0.0f32;
    for (k, c) in cache.iter_mut().enumerate() {
        let i = tid() + k as u32 * stride;
        if i < n4 {
            *c = ld_nc_f32x4(x.add(4 * i as usize));
            ss += c[0] * c[0] + c[1] * c[1] + c[2] * c[2] + c[3] * c[3];
        }
    }
    let mut i = tid() + REG_CHUNKS as u32 * stride;
    while i < n4 {
        let v = ld_f32x4(x.add(4 * i as usize));
        ss += v[0] * v[0] + v[1] * v[1] + v[2] * v[2] + v[3] * v[3];
        i += stride;
    }
    // 2) block reduce -> scale
    let scale = 1.0 / sqrt(block_sum(ss) / dim as f32 + eps);
    // 3) normalize and write back
    let norm = |v: [f32; 4], g: [f32; 4]| [g[0] * (v[0] * scale), g[1] * (v[1] * scale), g[2] * (v[2] * scale), g[3] * (v[3] * scale)];
    for (k, c) in cache.iter().enumerate() {
        let i = tid() + k as u32 * stride;
        if i < n4 {
            let o = 4 * i as usize;
            st_f32x4(out.add(o), norm(*c, ld_f32x4(w.add(o))));
        }
    }
    let mut i = tid() + REG_CHUNKS as u32 * stride;
    while i < n4 {
        let o = 4 * i as usize;
        st_f32x4(out.add(o), norm(ld_f32x4(x.add(o)), ld_f32x4(w.add(o))));
        i += stride;
    }
}
