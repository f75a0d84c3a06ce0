//! Token selection on the device, so only the chosen id crosses to the host. CPU twin: greedy
//! `host::sampler::Sampler` (argmax, lowest id on ties).

use crate::common::*;

/// out[0] = argmax_i x[i], the lowest index among equal maxima; also writes it to `next_token` when that is
/// not null (the input of the next decode step).
///
/// Launch: grid = (1, 1, 1), block = (1024, 1, 1). Traffic: one read of x.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn argmax_f32(x: *const f32, n: u32, out: *mut u32, next_token: *mut u32) {
    let (mut best, mut best_i) = (f32::NEG_INFINITY, u32::MAX);
    let mut i = tid();
    while i < n {
        let v = *x.add(i as usize);
        if v > best {
            (best, best_i) = (v, i);
        }
        i += ntid();
    }
    // warp then block reduction on (value, index): larger value wins, then smaller index
    let better = |v: f32, i: u32, bv: f32, bi: u32| v > bv || (v == bv && i < bi);
    let mut m = 16;
    while m > 0 {
        let (v, j) = (shfl_xor(best, m), shfl_xor_u32(best_i, m));
        if better(v, j, best, best_i) {
            (best, best_i) = (v, j);
        }
        m >>= 1;
    }
    let (sv, si) = (block_scratch(), block_scratch_u32());
    let (lane, warp) = (tid() % WARP_SIZE, tid() / WARP_SIZE);
    if lane == 0 {
        *sv.add(warp as usize) = best;
        *si.add(warp as usize) = best_i;
    }
    sync_threads();
    if tid() == 0 {
        let (mut bv, mut bi) = (*sv, *si);
        for w in 1..ntid().div_ceil(WARP_SIZE) {
            let (v, j) = (*sv.add(w as usize), *si.add(w as usize));
            if better(v, j, bv, bi) {
                (bv, bi) = (v, j);
            }
        }
        // all-NaN input: fall back to token 0 rather than an out-of-range id
        let id = if bi == u32::MAX { 0 } else { bi };
        *out = id;
        if !next_token.is_null() {
            *next_token = id;
        }
    }
}
