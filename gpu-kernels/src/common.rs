//! Device primitives shared by all kernels: thread indices, warp and block reductions, vector loads and
//! stores, f16 conversion and the float math wrappers, each in one place.

use core::arch::asm;
use core::arch::nvptx;

pub const WARP_SIZE: u32 = 32;

#[inline(always)]
pub fn tid() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_thread_idx_x() as u32 }
}
#[inline(always)]
pub fn bid() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_x() as u32 }
}
#[inline(always)]
pub fn bid_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_y() as u32 }
}
#[inline(always)]
pub fn bid_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_idx_z() as u32 }
}
#[inline(always)]
pub fn ntid() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_block_dim_x() as u32 }
}
#[inline(always)]
pub fn nctaid() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_x() as u32 }
}
#[inline(always)]
pub fn nctaid_y() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_y() as u32 }
}
#[inline(always)]
pub fn nctaid_z() -> u32 {
    // SAFETY: reads a special register.
    unsafe { nvptx::_grid_dim_z() as u32 }
}
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: barrier; every thread of the block must reach it (callers keep it outside divergent code).
    unsafe { nvptx::_syncthreads() }
}

/// Butterfly shuffle of an f32 within a warp.
#[inline(always)]
pub fn shfl_xor(v: f32, mask: u32) -> f32 {
    let r: f32;
    // SAFETY: full-warp shuffle; all lanes participate.
    unsafe { asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 31, -1;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask) };
    r
}

/// Butterfly shuffle of a u32 within a warp.
#[inline(always)]
pub fn shfl_xor_u32(v: u32, mask: u32) -> u32 {
    let r: u32;
    // SAFETY: full-warp shuffle; all lanes participate.
    unsafe { asm!("shfl.sync.bfly.b32 {r}, {v}, {m}, 31, -1;", r = out(reg32) r, v = in(reg32) v, m = in(reg32) mask) };
    r
}

/// a / b without a panic path (0 when b == 0; launchers never pass 0).
#[inline(always)]
pub fn udiv(a: u32, b: u32) -> u32 {
    a.checked_div(b).unwrap_or(0)
}
/// a % b without a panic path (0 when b == 0; launchers never pass 0).
#[inline(always)]
pub fn urem(a: u32, b: u32) -> u32 {
    a.checked_rem(b).unwrap_or(0)
}

#[inline(always)]
pub fn min_u32(a: u32, b: u32) -> u32 {
    if a < b { a } else { b }
}
#[inline(always)]
pub fn max_u32(a: u32, b: u32) -> u32 {
    if a > b { a } else { b }
}

/// Sum over the 32 lanes of a warp; every lane gets the result.
#[inline(always)]
pub fn warp_sum(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v += shfl_xor(v, m);
        m >>= 1;
    }
    v
}

/// Max over the 32 lanes of a warp; every lane gets the result.
#[inline(always)]
pub fn warp_max(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v = fmax(v, shfl_xor(v, m));
        m >>= 1;
    }
    v
}

/// 32 floats of block-shared scratch; each inlined call site gets its own array.
#[inline(always)]
pub fn block_scratch() -> *mut f32 {
    let p: u64;
    // SAFETY: declares a shared array local to this asm scope and returns its generic address.
    unsafe { asm!("{{", ".shared .align 16 .b8 scratch[128];", "cvta.shared.u64 {p}, scratch;", "}}", p = out(reg64) p) };
    p as *mut f32
}

/// 32 u32 of block-shared scratch; each inlined call site gets its own array.
#[inline(always)]
pub fn block_scratch_u32() -> *mut u32 {
    let p: u64;
    // SAFETY: declares a shared array local to this asm scope and returns its generic address.
    unsafe { asm!("{{", ".shared .align 16 .b8 scratch_u[128];", "cvta.shared.u64 {p}, scratch_u;", "}}", p = out(reg64) p) };
    p as *mut u32
}

/// Sum over the block (up to 1024 threads); every thread gets the result. Must be reached by all threads.
#[inline(always)]
pub fn block_sum(v: f32) -> f32 {
    let s = block_scratch();
    let (lane, warp, nwarps) = (tid() % WARP_SIZE, tid() / WARP_SIZE, ntid().div_ceil(WARP_SIZE));
    let v = warp_sum(v);
    // SAFETY: warp < 32, within the 32-float scratch.
    unsafe {
        if lane == 0 {
            *s.add(warp as usize) = v;
        }
        sync_threads();
        let r = if lane < nwarps { *s.add(lane as usize) } else { 0.0 };
        warp_sum(r)
    }
}

/// Max over the block (up to 1024 threads); every thread gets the result. Must be reached by all threads.
#[inline(always)]
pub fn block_max(v: f32) -> f32 {
    let s = block_scratch();
    let (lane, warp, nwarps) = (tid() % WARP_SIZE, tid() / WARP_SIZE, ntid().div_ceil(WARP_SIZE));
    let v = warp_max(v);
    // SAFETY: warp < 32, within the 32-float scratch.
    unsafe {
        if lane == 0 {
            *s.add(warp as usize) = v;
        }
        sync_threads();
        let r = if lane < nwarps { *s.add(lane as usize) } else { f32::NEG_INFINITY };
        warp_max(r)
    }
}

/// 16-byte load of 4 floats from global memory through the read-only path. `p` must be 16-byte aligned.
#[inline(always)]
pub unsafe fn ld_nc_f32x4(p: *const f32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!("ld.global.nc.v4.f32 {{{a}, {b}, {c}, {d}}}, [{p}];", a = out(reg32) a, b = out(reg32) b, c = out(reg32) c,
         d = out(reg32) d, p = in(reg64) p, options(readonly, nostack));
    [a, b, c, d]
}

/// 16-byte load of 4 floats from global memory (cached normally). `p` must be 16-byte aligned.
#[inline(always)]
pub unsafe fn ld_f32x4(p: *const f32) -> [f32; 4] {
    let (a, b, c, d): (f32, f32, f32, f32);
    asm!("ld.global.v4.f32 {{{a}, {b}, {c}, {d}}}, [{p}];", a = out(reg32) a, b = out(reg32) b, c = out(reg32) c,
         d = out(reg32) d, p = in(reg64) p, options(readonly, nostack));
    [a, b, c, d]
}

/// 16-byte store of 4 floats to global memory. `p` must be 16-byte aligned.
#[inline(always)]
pub unsafe fn st_f32x4(p: *mut f32, v: [f32; 4]) {
    asm!("st.global.v4.f32 [{p}], {{{a}, {b}, {c}, {d}}};", p = in(reg64) p, a = in(reg32) v[0], b = in(reg32) v[1],
         c = in(reg32) v[2], d = in(reg32) v[3], options(nostack));
}

/// f16 bits to f32.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let r: f32;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.f32.f16 {r}, {h};", r = out(reg32) r, h = in(reg16) h, options(pure, nomem, nostack)) };
    r
}

/// f32 to f16 bits, round to nearest even (as `half::f16::from_f32`).
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let r: u16;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.rn.f16.f32 {r}, {x};", r = out(reg16) r, x = in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// tanh from the accurate `exp`: tanh(y) = sign(y) (1 - 2 / (e^(2|y|) + 1)).
#[inline(always)]
pub fn tanh(y: f32) -> f32 {
    let a = if y < 0.0 { -y } else { y };
    let t = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    if y < 0.0 { -t } else { t }
}

/// IEEE square root (round to nearest), as the CPU computes it.
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("sqrt.rn.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) };
    r
}

/// e^x: the hardware `ex2` of x*log2(e), corrected for the rounding of that product so that large |x| keep
/// full f32 accuracy (relative error ~2e-7 where the CPU's `expf` is correctly rounded).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E_LO: f32 = 1.925_963e-8; // log2(e) - (log2(e) as f32)
    // clamp first: e^-104 already underflows f32, and +-inf would turn the correction term into NaN
    let x = fmin(fmax(x, -104.0), 89.0);
    let y = x * core::f32::consts::LOG2_E;
    let y_err = fma(x, core::f32::consts::LOG2_E, -y) + x * LOG2E_LO;
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("ex2.approx.f32 {r}, {y};", r = out(reg32) r, y = in(reg32) y, options(pure, nomem, nostack)) };
    // past e^88.72 `ex2` gives +inf, and inf plus a negative correction would be NaN
    if r == f32::INFINITY {
        r
    } else {
        fma(r, y_err * core::f32::consts::LN_2, r)
    }
}

/// a * b + c with one rounding.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("fma.rn.f32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c,
             options(pure, nomem, nostack))
    };
    r
}

#[inline(always)]
pub fn fmin(a: f32, b: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("min.f32 {r}, {a}, {b};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, options(pure, nomem, nostack)) };
    r
}

#[inline(always)]
pub fn fmax(a: f32, b: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("max.f32 {r}, {a}, {b};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, options(pure, nomem, nostack)) };
    r
}

/// Programmatic dependent launch, the first statement of every kernel: wait until the kernel launched before this
/// one on the stream has finished and its writes are visible, then let the next kernel start launching its blocks
/// (they park in their own wait), which hides the launch latency between dependent kernels. Without the launch
/// attribute (or on GPUs before sm_90, whose module drops these instructions) both are no-ops.
#[inline(always)]
pub fn pdl_enter() {
    // SAFETY: synchronisation only; no registers or memory of ours are touched.
    unsafe { asm!("griddepcontrol.wait;", "griddepcontrol.launch_dependents;", options(nostack)) };
}

// Cross-block coordination within one launch.

#[inline(always)]
pub unsafe fn atom_add_u32(p: *mut u32, v: u32) -> u32 {
    let r: u32;
    asm!("atom.add.u32 {r}, [{p}], {v};", r = out(reg32) r, p = in(reg64) p, v = in(reg32) v, options(nostack));
    r
}
/// Load of data written by other blocks of this launch (coherent at GPU scope, not from a stale L1 line).
#[inline(always)]
pub unsafe fn ld_gpu_u32(p: *const u32) -> u32 {
    let r: u32;
    asm!("ld.relaxed.gpu.u32 {r}, [{p}];", r = out(reg32) r, p = in(reg64) p, options(readonly, nostack));
    r
}
#[inline(always)]
pub fn fence_gpu() {
    // SAFETY: memory fence.
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) };
}

/// Whether this block is the last of the launch to get here (all blocks' global writes before this call are
/// then visible to it). Resets the counter for the next launch. `flag`: one shared u32.
#[inline(always)]
pub unsafe fn last_block(counter: *mut u32, n_blocks: u32, flag: *mut u32) -> bool {
    fence_gpu();
    sync_threads();
    if tid() == 0 {
        let done = atom_add_u32(counter, 1);
        let last = done + 1 == n_blocks;
        if last {
            *counter = 0;
        }
        *flag = last as u32;
    }
    sync_threads();
    let last = *flag != 0;
    if last {
        fence_gpu();
    }
    last
}
