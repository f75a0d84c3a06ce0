//! Element-wise ops. CPU twins: `host::backend::cpu::{add, mul}`. `sum_splits_f32` adds up the partial sums of
//! the split-K int8 mat-mul (`quant::mmq`) when its launch does not (`HOST_GPU_OFF=fixup`).

use crate::common::*;

/// y[i] = parts[i] + parts[n + i] + ... + parts[(splits - 1) n + i], added in that order: the partial sums of a
/// split-K `mmq` launch.
///
/// Launch: grid = (ceil(n / 256), 1, 1), block = (256, 1, 1); one element per thread. Traffic: 4 (splits + 1)
/// bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sum_splits_f32(y: *mut f32, parts: *const f32, n: u32, splits: u32) {
    crate::common::pdl_enter();
    let i = (bid() * ntid() + tid()) as usize;
    if i < n as usize {
        let mut acc = *parts.add(i);
        for s in 1..splits as usize {
            acc += *parts.add(s * n as usize + i);
        }
        *y.add(i) = acc;
    }
}

/// Elements handled by each thread (must match `EW_PER_THREAD` in the host launcher).
const PER_THREAD: u32 = 4;

#[inline(always)]
unsafe fn binary(out: *mut f32, a: *const f32, b: *const f32, n: u32, op: impl Fn(f32, f32) -> f32) {
    let base = (bid() * ntid() + tid()) * PER_THREAD;
    if base + PER_THREAD <= n && (a as usize | b as usize | out as usize) % 16 == 0 {
        let (x, y) = (ld_nc_f32x4(a.add(base as usize)), ld_nc_f32x4(b.add(base as usize)));
        st_f32x4(out.add(base as usize), [op(x[0], y[0]), op(x[1], y[1]), op(x[2], y[2]), op(x[3], y[3])]);
    } else {
        let mut i = base;
        while i < n && i < base + PER_THREAD {
            *out.add(i as usize) = op(*a.add(i as usize), *b.add(i as usize));
            i += 1;
        }
    }
}

/// out[i] = a[i] + b[i]
///
/// Launch: grid = (ceil(n / 1024), 1, 1), block = (256, 1, 1); 4 elements per thread.
/// Traffic: 12 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_f32(out: *mut f32, a: *const f32, b: *const f32, n: u32) {
    crate::common::pdl_enter();
    binary(out, a, b, n, |x, y| x + y)
}

/// out[i] = a[i] * b[i]
///
/// Launch: as `add_f32`. Traffic: 12 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn mul_f32(out: *mut f32, a: *const f32, b: *const f32, n: u32) {
    crate::common::pdl_enter();
    binary(out, a, b, n, |x, y| x * y)
}

