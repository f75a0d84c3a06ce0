//! Dequantize a whole tensor to f32. CPU twin: `host::quant::dequantize_row`, row by row.

use super::{stg_f32x4, Global, QType};
use crate::common::*;
use crate::quant::types::*;

/// out[e] = value of element e, e over the tensor's `n_blocks * BS + n_tail` elements (rows are contiguous, so
/// the tensor is one run of blocks). One thread per decode unit; plain types also have `n_tail` (< 8) trailing
/// elements, one per thread after the units.
///
/// Launch: grid = (ceil((n_blocks * UPB + n_tail) / 256), 1, 1), block = (256, 1, 1); `w` and `out` 16-aligned.
/// Traffic: the tensor's bytes read once, 4 bytes per element written.
#[inline(always)]
unsafe fn dequantize<T: QType>(w: *const u8, out: *mut f32, n_blocks: u32, n_tail: u32) {
    dequantize_unit::<T>(w, out, n_blocks, n_tail, bid() * ntid() + tid())
}

/// Decode unit `u` of the `n_blocks * UPB + n_tail` units of a run of blocks at `w` into `out`.
#[inline(always)]
pub(crate) unsafe fn dequantize_unit<T: QType>(w: *const u8, out: *mut f32, n_blocks: u32, n_tail: u32, u: u32) {
    let n_units = n_blocks * T::UPB;
    if u < n_units {
        let (bi, j) = (u / T::UPB, u % T::UPB);
        let b = Global(w.add(bi as usize * T::TS as usize));
        let q = T::unit(b, j);
        let base = out.add(bi as usize * T::BS as usize);
        for k in 0..T::RUNS {
            let v = q[k as usize];
            let o = base.add(T::run_start(j, k) as usize);
            if T::PLAIN {
                stg_f32x4(o, v);
            } else {
                // a * q (+ b) rounded as the CPU computes it (no FMA contraction; no `+ 0.0`, which would turn
                // a -0.0 into +0.0).
                let (a, m) = T::scale(b, T::run_sub(j, k));
                if T::HAS_MIN {
                    stg_f32x4(o, [a * v[0] + m, a * v[1] + m, a * v[2] + m, a * v[3] + m]);
                } else {
                    stg_f32x4(o, [a * v[0], a * v[1], a * v[2], a * v[3]]);
                }
            }
        }
    } else if T::PLAIN && u - n_units < n_tail {
        let i = u - n_units;
        let e = n_blocks * T::BS + i;
        *out.add(e as usize) = T::elem(Global(w), e);
    }
}

macro_rules! dequant_kernels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// Dequantize; see [`dequantize`] for the launch shape and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* n_blocks blocks */, out: *mut f32 /* elements */,
                                                n_blocks: u32, n_tail: u32) {
            crate::common::pdl_enter();
            dequantize::<$ty>(w, out, n_blocks, n_tail)
        }
    )*};
}

dequant_kernels! {
    dequantize_f32: F32;
    dequantize_f16: F16;
    dequantize_bf16: BF16;
    dequantize_q4_0: Q4_0;
    dequantize_q4_1: Q4_1;
    dequantize_q5_0: Q5_0;
    dequantize_q5_1: Q5_1;
    dequantize_q8_0: Q8_0;
    dequantize_q2_k: Q2K;
    dequantize_q3_k: Q3K;
    dequantize_q4_k: Q4K;
    dequantize_q5_k: Q5K;
    dequantize_q6_k: Q6K;
    dequantize_q8_k: Q8K;
}
