//! Gated activations, bias and in-place residual add. CPU twins: `host::backend::cpu::{swiglu, gelu_tanh_mul,
//! add_bias, add_inplace, scale, softcap}`.

use crate::common::*;

/// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g)
///
/// Launch: grid = (ceil(n / 256), 1, 1), block = (256, 1, 1). Traffic: 12 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn swiglu_f32(out: *mut f32, gate: *const f32, up: *const f32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n {
        *out.add(i as usize) = silu_mul(*gate.add(i as usize), *up.add(i as usize));
    }
}

/// silu(g) * u, the one formula of every kernel that computes it.
#[inline(always)]
pub fn silu_mul(g: f32, u: f32) -> f32 {
    g / (1.0 + exp(-g)) * u
}

/// gelu_tanh(g) * u, the one formula of every kernel that computes it.
#[inline(always)]
pub fn gelu_tanh_mul(g: f32, u: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * (g + 0.044715 * g * g * g);
    0.5 * g * (1.0 + tanh(y)) * u
}

/// out[i] = gelu_tanh(gate[i]) * up[i], gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3)))
///
/// Launch: as `swiglu_f32`. Traffic: 12 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn gelu_tanh_mul_f32(out: *mut f32, gate: *const f32, up: *const f32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n {
        *out.add(i as usize) = gelu_tanh_mul(*gate.add(i as usize), *up.add(i as usize));
    }
}

/// x[r, i] += b[i] over rows of n.
///
/// Launch: grid = (ceil(n_rows * n / 256), 1, 1), block = (256, 1, 1). Traffic: 8 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_bias_f32(x: *mut f32, b: *const f32, n_rows: u32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n_rows * n {
        *x.add(i as usize) += *b.add(urem(i, n) as usize);
    }
}

/// x[i] += y[i] (the residual connection).
///
/// Launch: grid = (ceil(n / 256), 1, 1), block = (256, 1, 1). Traffic: 12 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn add_inplace_f32(x: *mut f32, y: *const f32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n {
        *x.add(i as usize) += *y.add(i as usize);
    }
}

/// x[i] *= s.
///
/// Launch: grid = (ceil(n / 256), 1, 1), block = (256, 1, 1). Traffic: 8 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn scale_f32(x: *mut f32, s: f32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n {
        *x.add(i as usize) *= s;
    }
}

/// x[i] = cap * tanh(x[i] / cap) (final logit soft-capping).
///
/// Launch: grid = (ceil(n / 256), 1, 1), block = (256, 1, 1). Traffic: 8 bytes per element.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn softcap_f32(x: *mut f32, cap: f32, n: u32) {
    crate::common::pdl_enter();
    let i = bid() * ntid() + tid();
    if i < n {
        *x.add(i as usize) = cap * tanh(*x.add(i as usize) / cap);
    }
}

/// pos[0] += 1: advances the device-side position at the end of a captured decode step.
///
/// Launch: grid = (1, 1, 1), block = (1, 1, 1).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn advance_pos(pos: *mut u32) {
    crate::common::pdl_enter();
    *pos += 1;
}
