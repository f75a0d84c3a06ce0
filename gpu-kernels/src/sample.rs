//! Token selection on the device, so only the chosen id crosses to the host. CPU twin: `host::sampler::Sampler`
//! (`argmax_f32`: its greedy case, argmax with the lowest id on ties; the `sample_*` kernels: the whole chain,
//! described in the section comment below).

use core::arch::asm;

use crate::common::*;
use crate::sample_params::*;

/// out[0] = argmax_i x[i], the lowest index among equal maxima; also writes it to `next_token` when that is
/// not null (the input of the next decode step). With several blocks, block r does row r: x[r * n..], out[r],
/// next_token[r] (the greedy tokens of a batch, `cuda_batch`).
///
/// Launch: grid = (rows, 1, 1), block = (1024, 1, 1). Traffic: one read of x.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn argmax_f32(x: *const f32, n: u32, out: *mut u32, next_token: *mut u32) {
    crate::common::pdl_enter();
    let r = bid() as usize;
    let (x, out) = (x.add(r * n as usize), out.add(r));
    let next_token = if next_token.is_null() { next_token } else { next_token.add(r) };
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

// ============================================================================
// The sampling chain on the device
// ============================================================================
//
// CPU twin: `host::sampler::Sampler` (llama.cpp's chain): logit bias -> penalties -> top_k -> typical_p -> top_p
// -> min_p -> temperature -> seeded draw, greedy (argmax of the survivors) when temperature <= 0. Every step runs
// here; the chosen id is written to `out` (and `next_token`), appended to the penalty history, and the RNG
// counter advances, all on the device, so a decode step can be captured in a CUDA graph and only the id ever
// crosses to the host. The host launcher (`host::backend::cuda_sample`) resolves the parameters into
// `SampleParams` and picks one of two paths:
//
// * top_k path (0 < top_k <= SAMPLE_MAX_TOP_K, and greedy, which is top_k = 1 when typical_p is off): one launch
//   of `sample_topk`. Each block takes a chunk of 4096 logits (bias and penalties applied on the fly), selects
//   its local top_k exactly by radix select on the order-preserving u32 key of the float (4 passes of 8 bits,
//   warp-aggregated shared-memory histograms, ties to the lowest id), and writes them out. The last block to
//   finish (a counter in `SampleState`) selects the global top_k from those n_chunks * top_k candidates the same
//   way (held in registers when there are at most 4096, else re-read from L2 in every pass), sorts them
//   (bitonic, in shared memory) and runs typical_p, top_p, min_p, temperature and the draw on the sorted list,
//   one candidate per thread. typical_p keeps the CPU's sets; its survivors are then drawn in rank order rather
//   than typicality order (same distribution, another map from u to token).
// * full-vocabulary path (top_k off; typical_p unsupported): `sample_full_max` (bias/penalties into a work copy,
//   max per chunk), `sample_full_hist` (only when top_p < 1: a histogram of the probability mass over bins of
//   1/128 logit below the max; its last block finds the bin where the sorted cumulative mass crosses top_p),
//   `sample_full_pick` (per chunk: the mass of the kept tokens, and the tokens of the threshold bin gathered; its
//   last block sorts the threshold bin to place the exact top_p cut, then draws: a chunk by the chunk masses,
//   then the token by a block scan inside that chunk). min_p is the threshold max + ln(min_p) applied to every
//   token. If more than SAMPLE_GATHER_CAP tokens fall in the threshold bin (their logits all within 1/128 of each
//   other), the bin is kept whole: the nucleus then holds a few more near-equal tokens than the CPU's.
//
// Masses are fixed-point integers (q = round(w * 2^40), w = exp(l - max) <= 1), so every sum is exact and the
// same seed gives the same tokens whatever order the atomics ran in. Weights below 2^-41 of the max count as 0
// (such a token is never drawn; the CPU draws it with probability < 1e-12).
//
// RNG: counter-based. Draw number `step` (0, 1, ...) uses u = (splitmix64_output(seed, step) >> 11) * 2^-53,
// where splitmix64_output(seed, n) = mix(seed + (n + 1) * 0x9e3779b97f4a7c15) is the n-th output of a splitmix64
// generator seeded with `seed` (mix: the Stafford variant-13 finalizer). The counter lives in `SampleState`
// and advances by one per sample (greedy ones included).
//
// All sampling kernels assume blocks of exactly SAMPLE_BLOCK = 1024 threads and declare it as their launch
// bound (`.maxntid 1024`), so that ptxas keeps them within 64 registers.

/// A block-shared array of `$n` elements of `$ty`, declared in PTX (Rust has no `__shared__`). The name must be
/// unique within the kernel; call at the top of the kernel body only, so that the declaration is emitted once.
macro_rules! shared {
    ($name:ident, $ty:ty, $n:expr) => {{
        let p: u64;
        asm!(
            concat!("{{ .shared .align 16 .b8 ", stringify!($name), "[{bytes}]; cvta.shared.u64 {p}, ",
                    stringify!($name), "; }}"),
            bytes = const ($n as usize) * core::mem::size_of::<$ty>(),
            p = out(reg64) p,
            options(nostack)
        );
        p as *mut $ty
    }};
}

/// Repeats `$body` for `$j` = 0..$n as separate copies, so that per-thread arrays indexed by `$j` stay in
/// registers (a loop that LLVM does not unroll would put them in local memory).
macro_rules! unroll {
    (4, $j:ident => $body:block) => {{
        unroll!(2, $j => $body);
        { let $j: usize = 2; $body }
        { let $j: usize = 3; $body }
    }};
    (2, $j:ident => $body:block) => {{
        { let $j: usize = 0; $body }
        { let $j: usize = 1; $body }
    }};
}

const NEG_INF: f32 = f32::NEG_INFINITY;
const BLOCK: u32 = SAMPLE_BLOCK;
const CHUNK: u32 = SAMPLE_CHUNK;

#[inline(always)]
fn lane() -> u32 {
    tid() & 31
}
#[inline(always)]
fn warp_id() -> u32 {
    tid() >> 5
}

/// Order-preserving key of a float: a > b (IEEE total order, -0 < +0) <=> key(a) > key(b).
#[inline(always)]
fn key_of(l: f32) -> u32 {
    let b = l.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}
/// Inverse of `key_of`.
#[inline(always)]
fn logit_of(k: u32) -> f32 {
    f32::from_bits(if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k })
}
/// Rank order of a token as one integer: larger logit first, then lower id (the CPU's `Candidate` order).
#[inline(always)]
fn rank_of(key: u32, id: u32) -> u64 {
    ((key as u64) << 32) | (!id) as u64
}
#[inline(always)]
fn rank_id(r: u64) -> u32 {
    !(r as u32)
}
#[inline(always)]
fn is_finite(x: f32) -> bool {
    x.to_bits() & 0x7f80_0000 != 0x7f80_0000
}
#[inline(always)]
fn is_nan(x: f32) -> bool {
    x != x
}
#[inline(always)]
fn abs_f64(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & 0x7fff_ffff_ffff_ffff)
}
#[inline(always)]
fn min_u64(a: u64, b: u64) -> u64 {
    if a < b {
        a
    } else {
        b
    }
}
#[inline(always)]
fn max_u64(a: u64, b: u64) -> u64 {
    if a > b {
        a
    } else {
        b
    }
}
#[inline(always)]
fn add_u64(a: u64, b: u64) -> u64 {
    a.wrapping_add(b)
}
#[inline(always)]
fn add_f64_bits(a: u64, b: u64) -> u64 {
    (f64::from_bits(a) + f64::from_bits(b)).to_bits()
}
/// Smallest power of two >= x (x <= 2^31).
#[inline(always)]
fn next_pow2(x: u32) -> u32 {
    if x <= 1 {
        1
    } else {
        1u32 << (32 - (x - 1).leading_zeros())
    }
}

/// Fixed-point mass q = round(w * 2^40), w in [0, 1].
#[inline(always)]
fn fix(w: f32) -> u64 {
    let y = w * (1u64 << SAMPLE_FIX_SHIFT) as f32;
    let r: u64;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.rni.u64.f32 {r}, {y};", r = out(reg64) r, y = in(reg32) y, options(pure, nomem, nostack)) };
    r
}

/// ln x for a normal x > 0, about 1e-7 absolute: the exponent from the bits plus `lg2.approx` of the mantissa.
#[inline(always)]
fn ln_f64(x: f64) -> f64 {
    let b = x.to_bits();
    let e = ((b >> 52) & 0x7ff) as i32 - 1023;
    let m = f64::from_bits((b & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000) as f32;
    let l2: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("lg2.approx.f32 {r}, {m};", r = out(reg32) l2, m = in(reg32) m, options(pure, nomem, nostack)) };
    (e as f64 + l2 as f64) * core::f64::consts::LN_2
}

/// Output number `n` of a splitmix64 generator seeded with `seed`.
#[inline(always)]
fn splitmix64_at(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
/// The uniform draw in [0, 1) of sample number `step`.
#[inline(always)]
fn uniform(p: &SampleParams, step: u64) -> f64 {
    let seed = ((p.seed_hi as u64) << 32) | p.seed_lo as u64;
    (splitmix64_at(seed, step) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
/// floor(u * total), kept below `total` (total > 0).
#[inline(always)]
fn draw_target(u: f64, total: u64) -> u64 {
    let t = (u * total as f64) as u64;
    if t >= total {
        total - 1
    } else {
        t
    }
}

#[inline(always)]
fn shfl_up_u32(v: u32, d: u32) -> u32 {
    let r: u32;
    // SAFETY: full-warp shuffle; all lanes participate.
    unsafe {
        asm!("shfl.sync.up.b32 {r}, {v}, {d}, 0, -1;", r = out(reg32) r, v = in(reg32) v, d = in(reg32) d, options(nostack))
    };
    r
}
#[inline(always)]
fn shfl_down_u32(v: u32, d: u32) -> u32 {
    let r: u32;
    // SAFETY: full-warp shuffle; all lanes participate.
    unsafe {
        asm!("shfl.sync.down.b32 {r}, {v}, {d}, 31, -1;", r = out(reg32) r, v = in(reg32) v, d = in(reg32) d, options(nostack))
    };
    r
}
#[inline(always)]
fn shfl_xor_u64(v: u64, m: u32) -> u64 {
    ((shfl_xor_u32((v >> 32) as u32, m) as u64) << 32) | shfl_xor_u32(v as u32, m) as u64
}
#[inline(always)]
fn shfl_up_u64(v: u64, d: u32) -> u64 {
    ((shfl_up_u32((v >> 32) as u32, d) as u64) << 32) | shfl_up_u32(v as u32, d) as u64
}
/// Mask of the lanes of the warp holding the same `v` (all lanes must call it).
#[inline(always)]
fn match_any(v: u32) -> u32 {
    let r: u32;
    // SAFETY: full-warp match; all lanes participate.
    unsafe { asm!("match.any.sync.b32 {r}, {v}, -1;", r = out(reg32) r, v = in(reg32) v, options(nostack)) };
    r
}
#[inline(always)]
unsafe fn atom_add_u64(p: *mut u64, v: u64) {
    let _r: u64;
    asm!("atom.add.u64 {r}, [{p}], {v};", r = out(reg64) _r, p = in(reg64) p, v = in(reg64) v, options(nostack));
}
#[inline(always)]
unsafe fn ld_gpu_u64(p: *const u64) -> u64 {
    let r: u64;
    asm!("ld.relaxed.gpu.u64 {r}, [{p}];", r = out(reg64) r, p = in(reg64) p, options(readonly, nostack));
    r
}
/// Reduction over the block (exactly SAMPLE_BLOCK threads); every thread gets the result. `s`: 32 u64 of
/// shared scratch. Must be reached by all threads.
#[inline(always)]
unsafe fn block_reduce(mut v: u64, s: *mut u64, op: impl Fn(u64, u64) -> u64) -> u64 {
    let mut m = 16;
    while m > 0 {
        v = op(v, shfl_xor_u64(v, m));
        m >>= 1;
    }
    if lane() == 0 {
        *s.add(warp_id() as usize) = v;
    }
    sync_threads();
    let mut r = *s.add(lane() as usize);
    m = 16;
    while m > 0 {
        r = op(r, shfl_xor_u64(r, m));
        m >>= 1;
    }
    sync_threads();
    r
}

/// Inclusive scan over the block in thread order; returns (this thread's inclusive value, block total).
#[inline(always)]
unsafe fn block_scan(v: u64, s: *mut u64, op: impl Fn(u64, u64) -> u64) -> (u64, u64) {
    let ln = lane();
    let mut x = v;
    let mut d = 1;
    while d < 32 {
        let y = shfl_up_u64(x, d);
        if ln >= d {
            x = op(y, x);
        }
        d <<= 1;
    }
    if ln == 31 {
        *s.add(warp_id() as usize) = x;
    }
    sync_threads();
    if warp_id() == 0 {
        let mut w = *s.add(ln as usize);
        let mut d = 1;
        while d < 32 {
            let y = shfl_up_u64(w, d);
            if ln >= d {
                w = op(y, w);
            }
            d <<= 1;
        }
        *s.add(ln as usize) = w;
    }
    sync_threads();
    let incl = if warp_id() > 0 { op(*s.add(warp_id() as usize - 1), x) } else { x };
    let total = *s.add(31);
    sync_threads();
    (incl, total)
}

/// Counts `key` into the 256-bin histogram at digit `shift` when `ok`, one shared atomic per distinct digit in
/// the warp (all lanes must call it).
#[inline(always)]
unsafe fn hist_add(hist: *mut u32, key: u32, ok: bool, shift: u32) {
    let digit = (key >> shift) & 255;
    let peers = match_any(if ok { digit } else { u32::MAX });
    if ok && peers.trailing_zeros() == lane() {
        atom_add_u32(hist.add(digit as usize), peers.count_ones());
    }
}

/// Radix select over keys fed by the block: the m-th largest key T (1 <= m <= number of keys), in 4 passes of
/// 8 bits from the top. `feed(prefix, mask, shift)` is called by every thread once per pass and must
/// `hist_add` each of its keys with `key & mask == prefix`. Returns (T, need, ties): `need` of the `ties` keys
/// equal to T belong to the m largest (the other m - need are > T).
#[inline(always)]
unsafe fn radix_select(m: u32, hist: *mut u32, bcast: *mut u32, feed: impl Fn(u32, u32, u32)) -> (u32, u32, u32) {
    let (mut prefix, mut mask, mut rem) = (0u32, 0u32, m);
    let mut ties;
    let mut shift = 24u32;
    loop {
        if tid() < 256 {
            *hist.add(tid() as usize) = 0;
        }
        sync_threads();
        feed(prefix, mask, shift);
        sync_threads();
        if tid() < 32 {
            // lane l owns digits 8l..8l+8; find the digit where the count from the top reaches `rem`
            let ln = tid();
            let h = hist.add(ln as usize * 8);
            let mut s = 0;
            for q in 0..8 {
                s += *h.add(q);
            }
            let mut suf = s;
            let mut d = 1;
            while d < 32 {
                let y = shfl_down_u32(suf, d);
                if ln + d < 32 {
                    suf += y;
                }
                d <<= 1;
            }
            let mut above = suf - s;
            if above < rem && rem <= suf {
                let mut q = 8;
                while q > 0 {
                    q -= 1;
                    let c = *h.add(q);
                    if above + c >= rem {
                        *bcast = ln * 8 + q as u32;
                        *bcast.add(1) = rem - above;
                        *bcast.add(2) = c;
                        break;
                    }
                    above += c;
                }
            }
        }
        sync_threads();
        let digit = *bcast;
        rem = *bcast.add(1);
        ties = *bcast.add(2);
        prefix |= digit << shift;
        mask |= 0xff << shift;
        if shift == 0 {
            break;
        }
        shift -= 8;
    }
    sync_threads();
    (prefix, rem, ties)
}

/// Sorts a[0..p] (p a power of two, at most 2 * SAMPLE_BLOCK) in descending order: bitonic network in shared
/// memory. Callers pad with 0 and sync before.
#[inline(always)]
unsafe fn bitonic_sort_desc(a: *mut u64, p: u32) {
    let mut k = 2;
    while k <= p {
        let mut j = k >> 1;
        while j > 0 {
            let mut t = tid();
            while t < (p >> 1) {
                let i = ((t & !(j - 1)) << 1) | (t & (j - 1));
                let l = i | j;
                let (x, y) = (*a.add(i as usize), *a.add(l as usize));
                let desc = i & k == 0;
                if (desc && x < y) || (!desc && x > y) {
                    *a.add(i as usize) = y;
                    *a.add(l as usize) = x;
                }
                t += BLOCK;
            }
            sync_threads();
            j >>= 1;
        }
        k <<= 1;
    }
}

/// The best rank (max key, then lowest id) among the block's register-held items; every thread gets it.
#[inline(always)]
unsafe fn block_best(keys: &[u32; 4], ids: &[u32; 4], valid: &[bool; 4], scratch: *mut u64) -> u64 {
    let mut best = 0u64;
    unroll!(4, j => {
        if valid[j] {
            best = max_u64(best, rank_of(keys[j], ids[j]));
        }
    });
    block_reduce(best, scratch, max_u64)
}

/// Threshold of the m best items (larger key first, then lower id) among those the block's threads hold, 4 each:
/// an item is among them iff key > t, or key == t and id <= id_max. 1 <= m <= number of valid items.
#[inline(always)]
unsafe fn select_regs(
    keys: &[u32; 4],
    ids: &[u32; 4],
    valid: &[bool; 4],
    m: u32,
    hist: *mut u32,
    bcast: *mut u32,
) -> (u32, u32) {
    let (t, need, ties) = radix_select(m, hist, bcast, |prefix, mask, shift| {
        unroll!(4, j => {
            hist_add(hist, keys[j], valid[j] && keys[j] & mask == prefix, shift);
        });
    });
    if ties <= need {
        return (t, u32::MAX);
    }
    // more ties than needed: the `need` lowest ids among them (select on the inverted id)
    let (t2, _, _) = radix_select(need, hist, bcast, |prefix, mask, shift| {
        unroll!(4, j => {
            let inv = !ids[j];
            hist_add(hist, inv, valid[j] && keys[j] == t && inv & mask == prefix, shift);
        });
    });
    (t, !t2)
}

/// Hands each selected item (see `select_regs`) to `put(slot, rank)` with slots 0, 1, .. from the shared
/// counter `ctr`, in no particular order.
#[inline(always)]
unsafe fn compact_regs(
    keys: &[u32; 4],
    ids: &[u32; 4],
    valid: &[bool; 4],
    t: u32,
    id_max: u32,
    ctr: *mut u32,
    put: impl Fn(u32, u64),
) {
    if tid() == 0 {
        *ctr = 0;
    }
    sync_threads();
    unroll!(4, j => {
        if valid[j] && (keys[j] > t || (keys[j] == t && ids[j] <= id_max)) {
            put(atom_add_u32(ctr, 1), rank_of(keys[j], ids[j]));
        }
    });
}

/// 4 floats from `base`: one 16-byte load when allowed, else scalar loads; ids >= n read as -inf.
#[inline(always)]
unsafe fn load4(p: &SampleParams, x: *const f32, base: u32) -> [f32; 4] {
    if base + 4 <= p.n_vocab && p.flags & SAMPLE_FLAG_VEC4 != 0 {
        return ld_f32x4(x.add(base as usize));
    }
    let mut v = [NEG_INF; 4];
    unroll!(4, j => { let vj = &mut v[j];
        if base + (j as u32) < p.n_vocab {
            *vj = *x.add(base as usize + j);
        }
    });
    v
}

/// The logits at base..base+4 as the CPU chain sees them after its first steps: + logit bias, penalties
/// (llama.cpp formulas, count from the history), then NaN -> -inf. ids >= n read as -inf.
#[inline(always)]
unsafe fn load_chain4(p: &SampleParams, x: *const f32, bias: *const f32, counts: *const u32, base: u32) -> [f32; 4] {
    let mut v = load4(p, x, base);
    if p.flags & SAMPLE_FLAG_BIAS != 0 {
        let b = load4(p, bias, base);
        unroll!(4, j => {
            // skip zero biases: -0.0 + 0.0 would turn into +0.0 and change the rank order of ties
            if b[j] != 0.0 {
                v[j] += b[j];
            }
        });
    }
    if p.flags & SAMPLE_FLAG_PENALTY != 0 {
        let c = load4(p, counts as *const f32, base);
        unroll!(4, j => { let vj = &mut v[j];
            let count = c[j].to_bits();
            if base + (j as u32) < p.n_vocab && count > 0 {
                let mut l = *vj;
                if l <= 0.0 {
                    l *= p.repeat_penalty;
                } else {
                    l /= p.repeat_penalty;
                }
                *vj = l - (count as f32 * p.frequency_penalty + p.presence_penalty);
            }
        });
    }
    unroll!(4, j => { let vj = &mut v[j];
        if is_nan(*vj) {
            *vj = NEG_INF;
        }
    });
    v
}

/// 4 already-transformed logits (the work copy, or the raw logits when no transform is active: NaN -> -inf).
#[inline(always)]
unsafe fn load_clean4(p: &SampleParams, y: *const f32, base: u32) -> [f32; 4] {
    let mut v = load4(p, y, base);
    unroll!(4, j => { let vj = &mut v[j];
        if is_nan(*vj) {
            *vj = NEG_INF;
        }
    });
    v
}

/// Histogram bin of logit l given the max m: floor((m - l) * 128), the last bin for everything >= 32 below.
#[inline(always)]
fn bin_of(l: f32, m: f32) -> u32 {
    let d = m - l;
    if d < (SAMPLE_BINS as f32 / SAMPLE_BINS_PER_UNIT) {
        min_u32((d * SAMPLE_BINS_PER_UNIT) as u32, SAMPLE_BINS - 1)
    } else {
        SAMPLE_BINS - 1
    }
}

/// The draw weight of logit l given the max m: exp(l / t - m / t), as the CPU divides by the temperature first.
#[inline(always)]
fn temp_weight(p: &SampleParams, l: f32, m: f32) -> u64 {
    fix(exp(l / p.temperature - m / p.temperature))
}

/// Writes the chosen id, appends it to the penalty history and advances the RNG counter (thread 0).
#[inline(always)]
unsafe fn finish_step(
    p: &SampleParams,
    st: *mut SampleState,
    id: u32,
    out: *mut u32,
    next_token: *mut u32,
    ring: *mut u32,
    counts: *mut u32,
) {
    if tid() != 0 {
        return;
    }
    *out = id;
    if !next_token.is_null() {
        *next_token = id;
    }
    let st = &mut *st;
    let last_n = p.repeat_last_n;
    if p.flags & SAMPLE_FLAG_PENALTY != 0 && last_n > 0 {
        let pos = st.hist_pos;
        if st.hist_len >= last_n {
            let old = *ring.add(pos as usize);
            *counts.add(old as usize) -= 1;
        } else {
            st.hist_len += 1;
        }
        *ring.add(pos as usize) = id;
        *counts.add(id as usize) += 1;
        st.hist_pos = if pos + 1 >= last_n { 0 } else { pos + 1 };
    }
    st.last_id = id;
    st.step += 1;
}

// ----------------------------------------------------------------------------
// top_k path
// ----------------------------------------------------------------------------

/// The sampling chain with 0 < top_k <= SAMPLE_MAX_TOP_K, in one launch (see the section comment).
/// Buffers: `x` (n_vocab,) logits; `bias` (n_vocab,) when SAMPLE_FLAG_BIAS; `counts` (n_vocab,) and `ring`
/// (repeat_last_n,) when SAMPLE_FLAG_PENALTY; `ckey`, `cid` (n_chunks * top_k,) candidate scratch; `out` one u32;
/// `next_token` one u32 or null; `dbg` null, or (n_vocab,) zeroed floats that receive the final probabilities.
///
/// Launch: grid = (n_chunks, 1, 1), block = (1024, 1, 1). Traffic: one read of the logits (and of bias/counts).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sample_topk(
    params: *const SampleParams,
    st: *mut SampleState,
    x: *const f32,
    bias: *const f32,
    counts: *mut u32,
    ring: *mut u32,
    ckey: *mut u32,
    cid: *mut u32,
    out: *mut u32,
    next_token: *mut u32,
    dbg: *mut f32,
) {
    crate::common::pdl_enter();
    crate::launch_bounds!(SAMPLE_BLOCK, 1);
    let hist = shared!(tk_hist, u32, 256);
    let scratch = shared!(tk_scratch, u64, 32);
    let bcast = shared!(tk_bcast, u32, 8);
    let sortbuf = shared!(tk_sort, u64, SAMPLE_MAX_TOP_K);
    let lbuf = shared!(tk_logit, f32, SAMPLE_MAX_TOP_K);
    let ibuf = shared!(tk_id, u32, SAMPLE_MAX_TOP_K);
    let pbuf = shared!(tk_prob, f64, SAMPLE_MAX_TOP_K);
    let p = &*params;
    let p = &SampleParams { ..*p };
    let k = p.top_k;
    let c = bid();

    // 1) this chunk's top k, exactly (ties to the lowest id), into ckey/cid[c * k ..]
    let base = c * CHUNK + tid() * 4;
    let v = load_chain4(p, x, bias, counts, base);
    let mut keys = [0u32; 4];
    let mut ids = [0u32; 4];
    let mut valid = [false; 4];
    unroll!(4, j => {
        keys[j] = key_of(v[j]);
        ids[j] = base + j as u32;
        valid[j] = ids[j] < p.n_vocab;
    });
    let (ck, ci) = (ckey.add((c * k) as usize), cid.add((c * k) as usize));
    if k == 1 {
        let best = block_best(&keys, &ids, &valid, scratch);
        if tid() == 0 {
            *ck = (best >> 32) as u32;
            *ci = rank_id(best);
        }
    } else {
        let m = min_u32(k, p.n_vocab - c * CHUNK);
        let (t, id_max) = select_regs(&keys, &ids, &valid, m, hist, bcast);
        compact_regs(&keys, &ids, &valid, t, id_max, bcast.add(3), |slot, r| {
            if slot < k {
                *ck.add(slot as usize) = (r >> 32) as u32;
                *ci.add(slot as usize) = rank_id(r);
            }
        });
        // a short last chunk pads its slots with key 0, below every real key
        let mut s = m + tid();
        while s < k {
            *ck.add(s as usize) = 0;
            *ci.add(s as usize) = u32::MAX;
            s += BLOCK;
        }
    }
    if !last_block(&mut (*st).done_a, p.n_chunks, bcast.add(7)) {
        return;
    }

    // 2) last block: the global top k of the n_chunks * k candidates, sorted into sortbuf
    let n_items = p.n_chunks * k;
    let mut len = k;
    if n_items <= CHUNK {
        // the common case: 4 candidates per thread in registers (all loads issued before any is used)
        let s0 = tid() * 4;
        unroll!(4, j => {
            valid[j] = s0 + (j as u32) < n_items;
            keys[j] = if valid[j] { ld_gpu_u32(ckey.add(s0 as usize + j)) } else { 0 };
        });
        unroll!(4, j => {
            ids[j] = if valid[j] { ld_gpu_u32(cid.add(s0 as usize + j)) } else { u32::MAX };
        });
        if k == 1 {
            let best = block_best(&keys, &ids, &valid, scratch);
            if tid() == 0 {
                *sortbuf = best;
            }
        } else {
            let (t, id_max) = select_regs(&keys, &ids, &valid, k, hist, bcast);
            compact_regs(&keys, &ids, &valid, t, id_max, bcast.add(4), |slot, r| {
                if slot < SAMPLE_MAX_TOP_K {
                    *sortbuf.add(slot as usize) = r;
                }
            });
        }
    } else {
        // many candidates (large top_k): read them from global memory in every pass, 4 loads in flight
        let groups = (n_items + CHUNK - 1) >> 12;
        let load4 = |g: u32, id: bool| {
            let mut r = [0u32; 4];
            unroll!(4, j => {
                let s = (g * 4 + j as u32) * BLOCK + tid();
                if s < n_items {
                    r[j] = if id { !ld_gpu_u32(cid.add(s as usize)) } else { ld_gpu_u32(ckey.add(s as usize)) };
                }
            });
            r
        };
        let in_range = |g: u32, j: usize| (g * 4 + j as u32) * BLOCK + tid() < n_items;
        let (t, need, ties) = radix_select(k, hist, bcast, |prefix, mask, shift| {
            for g in 0..groups {
                let kk = load4(g, false);
                unroll!(4, j => {
                    hist_add(hist, kk[j], in_range(g, j) && kk[j] & mask == prefix, shift);
                });
            }
        });
        // more ties than needed: keep the `need` lowest ids (select on the inverted id)
        let id_max = if ties > need {
            let (t2, _, _) = radix_select(need, hist, bcast, |prefix, mask, shift| {
                for g in 0..groups {
                    let (kk, inv) = (load4(g, false), load4(g, true));
                    unroll!(4, j => {
                        hist_add(hist, inv[j], in_range(g, j) && kk[j] == t && inv[j] & mask == prefix, shift);
                    });
                }
            });
            !t2
        } else {
            u32::MAX
        };
        if tid() == 0 {
            *bcast.add(4) = 0;
        }
        sync_threads();
        for g in 0..groups {
            let (kk, inv) = (load4(g, false), load4(g, true));
            unroll!(4, j => {
                if in_range(g, j) && (kk[j] > t || (kk[j] == t && !inv[j] <= id_max)) {
                    let slot = atom_add_u32(bcast.add(4), 1);
                    if slot < SAMPLE_MAX_TOP_K {
                        *sortbuf.add(slot as usize) = rank_of(kk[j], !inv[j]);
                    }
                }
            });
        }
    }
    sync_threads();
    if k > 1 {
        let pp = next_pow2(k);
        if tid() >= k && tid() < pp {
            *sortbuf.add(tid() as usize) = 0;
        }
        sync_threads();
        bitonic_sort_desc(sortbuf, pp);
    }
    let t = tid();
    if t < len {
        let r = *sortbuf.add(t as usize);
        *lbuf.add(t as usize) = logit_of((r >> 32) as u32);
        *ibuf.add(t as usize) = rank_id(r);
    }
    sync_threads();

    // 3) the rest of the chain on the sorted list, candidate t on thread t
    let lt = if t < len { *lbuf.add(t as usize) } else { NEG_INF };
    if p.flags & SAMPLE_FLAG_TYPICAL != 0 && len > 1 && is_finite(*lbuf) {
        // p_i = softmax, H = -sum p ln p, score = |-ln p_i - H|; keep the shortest prefix in score order (ties:
        // rank order, as the CPU's stable sort) whose mass is > typical_p; then back to rank order
        let max = *lbuf;
        let e = if t < len { exp(lt - max) } else { 0.0 };
        let sum = f64::from_bits(block_reduce((e as f64).to_bits(), scratch, add_f64_bits));
        let pi = e as f64 / sum;
        let h = if pi > 0.0 { -pi * ln_f64(pi) } else { 0.0 };
        let ent = f64::from_bits(block_reduce(h.to_bits(), scratch, add_f64_bits));
        let pp = next_pow2(len);
        if t < len {
            let score = if pi > 0.0 { abs_f64(-ln_f64(pi) - ent) as f32 } else { f32::INFINITY };
            *pbuf.add(t as usize) = pi;
            *sortbuf.add(t as usize) = !(((score.to_bits() as u64) << 32) | t as u64);
        } else if t < pp {
            *sortbuf.add(t as usize) = 0;
        }
        sync_threads();
        bitonic_sort_desc(sortbuf, pp);
        let rank = if t < len { !*sortbuf.add(t as usize) as u32 } else { 0 };
        let q = if t < len { *pbuf.add(rank as usize) } else { 0.0 };
        let (cum, _) = block_scan(q.to_bits(), scratch, add_f64_bits);
        let cut = if t < len && f64::from_bits(cum) > p.typical_p as f64 { t as u64 + 1 } else { len as u64 };
        let keep = block_reduce(cut, scratch, min_u64) as u32;
        // flag kept ranks, then compact in rank order
        if t < len {
            *sortbuf.add(rank as usize) = (t < keep) as u64;
        }
        sync_threads();
        let kept = t < len && *sortbuf.add(t as usize) != 0;
        let (pos, _) = block_scan(kept as u64, scratch, add_u64);
        let id = if t < len { *ibuf.add(t as usize) } else { 0 };
        sync_threads();
        if kept {
            *lbuf.add(pos as usize - 1) = lt;
            *ibuf.add(pos as usize - 1) = id;
        }
        len = keep;
        sync_threads();
    }
    let lt = if t < len { *lbuf.add(t as usize) } else { NEG_INF };
    if p.flags & SAMPLE_FLAG_TOP_P != 0 && len > 1 && is_finite(*lbuf) {
        // the shortest rank-order prefix with cumulative probability >= top_p
        let max = *lbuf;
        let e = if t < len { exp(lt - max) } else { 0.0 };
        let sum = f64::from_bits(block_reduce((e as f64).to_bits(), scratch, add_f64_bits));
        let (cum, _) = block_scan((e as f64 / sum).to_bits(), scratch, add_f64_bits);
        let cut = if t < len && f64::from_bits(cum) >= p.top_p as f64 { t as u64 + 1 } else { len as u64 };
        len = block_reduce(cut, scratch, min_u64) as u32;
    }
    if p.flags & SAMPLE_FLAG_MIN_P != 0 && len > 0 {
        let min_logit = *lbuf + p.ln_min_p;
        len = block_reduce((t < len && lt >= min_logit) as u64, scratch, add_u64) as u32;
    }
    let mut pick = 0u32;
    if p.flags & SAMPLE_FLAG_GREEDY == 0 && len > 1 && is_finite(*lbuf) {
        let max = *lbuf;
        let q = if t < len { temp_weight(p, lt, max) } else { 0 };
        let (run, total) = block_scan(q, scratch, add_u64);
        let target = draw_target(uniform(p, (*st).step), total);
        let first = if t < len && run > target { t as u64 } else { u64::MAX };
        pick = block_reduce(first, scratch, min_u64).min(len as u64 - 1) as u32;
        if !dbg.is_null() && t < len {
            *dbg.add(*ibuf.add(t as usize) as usize) = (q as f64 / total as f64) as f32;
        }
    } else if !dbg.is_null() && t == 0 {
        *dbg.add(*ibuf as usize) = 1.0;
    }
    let id = *ibuf.add(pick as usize);
    finish_step(p, st, id, out, next_token, ring, counts);
}

// ----------------------------------------------------------------------------
// full-vocabulary path (top_k off)
// ----------------------------------------------------------------------------

/// Pass 1: the chain's logits (bias, penalties, NaN -> -inf) into `work` when SAMPLE_FLAG_WORK (work holds
/// n_chunks * SAMPLE_CHUNK floats), and per chunk the best rank (max logit, lowest id) into cmax[c].
///
/// Launch: grid = (n_chunks, 1, 1), block = (1024, 1, 1). Traffic: one read of the logits, one write of work.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sample_full_max(
    params: *const SampleParams,
    x: *const f32,
    bias: *const f32,
    counts: *const u32,
    work: *mut f32,
    cmax: *mut u64,
) {
    crate::common::pdl_enter();
    crate::launch_bounds!(SAMPLE_BLOCK, 1);
    let scratch = shared!(fm_scratch, u64, 32);
    let p = &*params;
    let p = &SampleParams { ..*p };
    let base = bid() * CHUNK + tid() * 4;
    let v = load_chain4(p, x, bias, counts, base);
    if p.flags & SAMPLE_FLAG_WORK != 0 {
        st_f32x4(work.add(base as usize), v);
    }
    let mut best = 0u64;
    unroll!(4, j => { let l = v[j];
        if base + (j as u32) < p.n_vocab {
            best = max_u64(best, rank_of(key_of(l), base + j as u32));
        }
    });
    let best = block_reduce(best, scratch, max_u64);
    if tid() == 0 {
        *cmax.add(bid() as usize) = best;
    }
}

/// The best rank over all chunks (every block computes it from cmax).
#[inline(always)]
unsafe fn global_best(p: &SampleParams, cmax: *const u64, scratch: *mut u64) -> u64 {
    let c = if tid() < p.n_chunks { *cmax.add(tid() as usize) } else { 0 };
    block_reduce(c, scratch, max_u64)
}

/// Pass 2 (only when top_p < 1): the probability mass q(exp(l - max)) per bin of `bin_of` summed into `ghist`
/// (SAMPLE_BINS u64, zero on entry and left zero) and the total into the state; the last block finds the
/// threshold bin b* (the first bin where the mass from the top reaches top_p * total) and the mass before it.
///
/// Launch: grid = (n_chunks, 1, 1), block = (1024, 1, 1). Traffic: one read of the (work) logits.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sample_full_hist(
    params: *const SampleParams,
    st: *mut SampleState,
    y: *const f32,
    cmax: *const u64,
    ghist: *mut u64,
) {
    crate::common::pdl_enter();
    crate::launch_bounds!(SAMPLE_BLOCK, 1);
    let hist = shared!(fh_hist, u64, SAMPLE_BINS);
    let scratch = shared!(fh_scratch, u64, 32);
    let flag = shared!(fh_flag, u32, 4);
    let p = &*params;
    let p = &SampleParams { ..*p };
    let m = logit_of((global_best(p, cmax, scratch) >> 32) as u32);
    let per_thread = SAMPLE_BINS / BLOCK;
    if is_finite(m) {
        for b in 0..per_thread {
            *hist.add((tid() * per_thread + b) as usize) = 0;
        }
        sync_threads();
        let base = bid() * CHUNK + tid() * 4;
        let v = load_clean4(p, y, base);
        let mut s = 0u64;
        unroll!(4, j => { let l = v[j];
            if base + (j as u32) < p.n_vocab {
                let q = fix(exp(l - m));
                if q > 0 {
                    s += q;
                    atom_add_u64(hist.add(bin_of(l, m) as usize), q);
                }
            }
        });
        sync_threads();
        for b in 0..per_thread {
            let i = (tid() * per_thread + b) as usize;
            let h = *hist.add(i);
            if h != 0 {
                atom_add_u64(ghist.add(i), h);
            }
        }
        let s = block_reduce(s, scratch, add_u64);
        if tid() == 0 {
            atom_add_u64(&mut (*st).s_acc, s);
        }
    }
    if !last_block(&mut (*st).done_a, p.n_chunks, flag) {
        return;
    }
    let st = &mut *st;
    let total = ld_gpu_u64(&st.s_acc);
    let target = p.top_p as f64 * total as f64;
    // this thread's bins b0..b0+per_thread (read and cleared for the next step)
    let b0 = tid() * per_thread;
    let mut h = [0u64; 4];
    let mut mine = 0u64;
    unroll!(4, b => {
        if (b as u32) < per_thread {
            h[b] = ld_gpu_u64(ghist.add(b0 as usize + b));
            *ghist.add(b0 as usize + b) = 0;
            mine += h[b];
        }
    });
    let (incl, _) = block_scan(mine, scratch, add_u64);
    let mut before = incl - mine;
    let mut found = SAMPLE_BINS as u64;
    let mut found_before = 0u64;
    unroll!(4, b => { let hb = h[b];
        if (b as u32) < per_thread && found == SAMPLE_BINS as u64 && (before + hb) as f64 >= target && is_finite(m) {
            found = (b0 + b as u32) as u64;
            found_before = before;
        }
        #[allow(unused_assignments)]
        {
            before += hb;
        }
    });
    let b_star = block_reduce(found, scratch, min_u64);
    if found == b_star && b_star < SAMPLE_BINS as u64 {
        st.mass_before = found_before;
    }
    if tid() == 0 {
        st.b_star = b_star as u32;
        st.s_total = total;
        st.s_acc = 0;
    }
}

/// Pass 3: per chunk, the draw mass of the tokens kept below the threshold bin (bins < b*, l >= max + ln min_p)
/// and of the threshold bin's min_p survivors, whose ranks are gathered into `gather` (SAMPLE_GATHER_CAP u64).
/// The last block sorts the gathered bin, places the exact top_p cut in it, draws u for this step, finds the
/// chunk whose cumulative mass passes u * total and scans that chunk for the token (or the token in the bin's
/// kept prefix); then writes `out`/`next_token`, the history and the counter. `chunk_mass` holds 2 * n_chunks
/// u64; `dbg` (null or n_vocab floats) receives the final probabilities of every token.
///
/// Launch: grid = (n_chunks, 1, 1), block = (1024, 1, 1). Traffic: one read of the (work) logits, plus one chunk.
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sample_full_pick(
    params: *const SampleParams,
    st: *mut SampleState,
    y: *const f32,
    cmax: *const u64,
    chunk_mass: *mut u64,
    gather: *mut u64,
    counts: *mut u32,
    ring: *mut u32,
    out: *mut u32,
    next_token: *mut u32,
    dbg: *mut f32,
) {
    crate::common::pdl_enter();
    crate::launch_bounds!(SAMPLE_BLOCK, 1);
    let sortbuf = shared!(fp_sort, u64, SAMPLE_GATHER_CAP);
    let scratch = shared!(fp_scratch, u64, 32);
    let bc = shared!(fp_bcast, u64, 4);
    let flag = shared!(fp_flag, u32, 4);
    let p = &*params;
    let p = &SampleParams { ..*p };
    let best = global_best(p, cmax, scratch);
    let m = logit_of((best >> 32) as u32);
    let b_star = if p.flags & SAMPLE_FLAG_TOP_P != 0 { (*st).b_star } else { SAMPLE_BINS };
    let min_on = p.flags & SAMPLE_FLAG_MIN_P != 0;
    let min_logit = m + p.ln_min_p;
    let c = bid();
    if is_finite(m) {
        let base = c * CHUNK + tid() * 4;
        let v = load_clean4(p, y, base);
        let (mut a, mut b) = (0u64, 0u64);
        unroll!(4, j => { let l = v[j];
            let id = base + j as u32;
            if id < p.n_vocab && (!min_on || l >= min_logit) {
                let bin = bin_of(l, m);
                if bin < b_star {
                    a += temp_weight(p, l, m);
                } else if bin == b_star {
                    b += temp_weight(p, l, m);
                    let slot = atom_add_u32(&mut (*st).g_count, 1);
                    if slot < SAMPLE_GATHER_CAP {
                        *gather.add(slot as usize) = rank_of(key_of(l), id);
                    }
                }
            }
        });
        let a = block_reduce(a, scratch, add_u64);
        let b = block_reduce(b, scratch, add_u64);
        if tid() == 0 {
            *chunk_mass.add(2 * c as usize) = a;
            *chunk_mass.add(2 * c as usize + 1) = b;
        }
    }
    if !last_block(&mut (*st).done_b, p.n_chunks, flag) {
        return;
    }

    // last block
    let t = tid();
    let g_all = ld_gpu_u32(&(*st).g_count);
    sync_threads();
    if t == 0 {
        (*st).g_count = 0;
    }
    if !is_finite(m) {
        // no softmax exists (every token -inf, or a +inf logit): the CPU takes the argmax, lowest id
        let id = rank_id(best);
        if !dbg.is_null() && t == 0 {
            *dbg.add(id as usize) = 1.0;
        }
        finish_step(p, st, id, out, next_token, ring, counts);
        return;
    }
    let overflow = g_all > SAMPLE_GATHER_CAP;
    let g = min_u32(g_all, SAMPLE_GATHER_CAP);
    let b_eff = if overflow { b_star + 1 } else { b_star };

    // the threshold bin's kept prefix: sort its tokens by rank, cut where the mass from the top reaches top_p
    let (mut r, mut wb) = (0u32, 0u64);
    if !overflow && g > 0 {
        let pp = next_pow2(g);
        let mut s = t;
        while s < pp {
            *sortbuf.add(s as usize) = if s < g { ld_gpu_u64(gather.add(s as usize)) } else { 0 };
            s += BLOCK;
        }
        sync_threads();
        bitonic_sort_desc(sortbuf, pp);
        // thread t owns sorted entries 2t and 2t + 1
        let mut qp = [0u64; 2];
        unroll!(2, e => { let q = &mut qp[e];
            let i = 2 * t + e as u32;
            if i < g {
                *q = fix(exp(logit_of((*sortbuf.add(i as usize) >> 32) as u32) - m));
            }
        });
        let (incl, _) = block_scan(qp[0] + qp[1], scratch, add_u64);
        let target = p.top_p as f64 * (*st).s_total as f64;
        let mut cum = (*st).mass_before + incl - qp[0] - qp[1];
        let mut cut = g as u64;
        unroll!(2, e => { let q = qp[e];
            let i = 2 * t + e as u32;
            cum += q;
            if i < g && cut == g as u64 && cum as f64 >= target {
                cut = i as u64 + 1;
            }
        });
        r = block_reduce(cut, scratch, min_u64) as u32;
        let mut w = 0u64;
        unroll!(2, e => {
            let i = 2 * t + e as u32;
            if i < r {
                w += temp_weight(p, logit_of((*sortbuf.add(i as usize) >> 32) as u32), m);
            }
        });
        wb = block_reduce(w, scratch, add_u64);
    }
    // chunk masses (the threshold bin counts whole in its chunks when it overflowed the gather)
    let a_c = if t < p.n_chunks {
        ld_gpu_u64(chunk_mass.add(2 * t as usize))
            + if overflow { ld_gpu_u64(chunk_mass.add(2 * t as usize + 1)) } else { 0 }
    } else {
        0
    };
    let (a_incl, wa) = block_scan(a_c, scratch, add_u64);
    let total = wa + wb;
    let mut id = rank_id(best);
    if total > 0 {
        let target = draw_target(uniform(p, (*st).step), total);
        if target < wa {
            // the chunk whose cumulative mass passes the target, then the token inside it
            let first = if t < p.n_chunks && a_incl > target { t as u64 } else { u64::MAX };
            let cs = min_u32(block_reduce(first, scratch, min_u64) as u32, p.n_chunks - 1);
            if t == cs {
                *bc = a_incl - a_c;
            }
            sync_threads();
            let before = *bc;
            let base = cs * CHUNK + t * 4;
            let v = load_clean4(p, y, base);
            let mut q = [0u64; 4];
            unroll!(4, j => { let l = v[j];
                let i = base + j as u32;
                if i < p.n_vocab && (!min_on || l >= min_logit) && bin_of(l, m) < b_eff {
                    q[j] = temp_weight(p, l, m);
                }
            });
            let (incl, _) = block_scan(q[0] + q[1] + q[2] + q[3], scratch, add_u64);
            let mut run = before + incl - (q[0] + q[1] + q[2] + q[3]);
            let mut found = u64::MAX;
            unroll!(4, j => { let qj = q[j];
                run += qj;
                if found == u64::MAX && run > target {
                    found = (base + j as u32) as u64;
                }
            });
            let f = block_reduce(found, scratch, min_u64);
            if f < p.n_vocab as u64 {
                id = f as u32;
            }
        } else {
            // inside the threshold bin's kept prefix
            let target = target - wa;
            let mut q = [0u64; 2];
            unroll!(2, e => { let qe = &mut q[e];
                let i = 2 * t + e as u32;
                if i < r {
                    *qe = temp_weight(p, logit_of((*sortbuf.add(i as usize) >> 32) as u32), m);
                }
            });
            let (incl, _) = block_scan(q[0] + q[1], scratch, add_u64);
            let mut run = incl - q[0] - q[1];
            let mut found = u64::MAX;
            unroll!(2, e => { let qe = q[e];
                run += qe;
                if found == u64::MAX && run > target {
                    found = (2 * t + e as u32) as u64;
                }
            });
            let f = block_reduce(found, scratch, min_u64);
            if f < r as u64 {
                id = rank_id(*sortbuf.add(f as usize));
            }
        }
    }
    if !dbg.is_null() {
        // every token's final probability: kept below the threshold bin, or in the bin's kept prefix
        let last_kept = if r > 0 { *sortbuf.add(r as usize - 1) } else { u64::MAX };
        let mut base = t * 4;
        while base < p.n_vocab {
            let v = load_clean4(p, y, base);
            unroll!(4, j => { let l = v[j];
                let i = base + j as u32;
                if i < p.n_vocab {
                    let bin = bin_of(l, m);
                    let kept = (!min_on || l >= min_logit)
                        && (bin < b_eff || (bin == b_star && !overflow && rank_of(key_of(l), i) >= last_kept));
                    let w = if kept && total > 0 { temp_weight(p, l, m) as f64 / total as f64 } else { 0.0 };
                    *dbg.add(i as usize) = w as f32;
                }
            });
            base += CHUNK;
        }
    }
    finish_step(p, st, id, out, next_token, ring, counts);
}

// ----------------------------------------------------------------------------
// penalty history
// ----------------------------------------------------------------------------

/// Appends tokens[0..n] to the penalty history, with the effect of n calls of the CPU `Sampler::accept`: the
/// ring keeps the last repeat_last_n tokens and counts[id] their occurrences. Tokens must be < n_vocab.
///
/// Launch: grid = (1, 1, 1), block = (1024, 1, 1).
#[no_mangle]
pub unsafe extern "ptx-kernel" fn sample_accept(
    params: *const SampleParams,
    st: *mut SampleState,
    ring: *mut u32,
    counts: *mut u32,
    tokens: *const u32,
    n: u32,
) {
    crate::common::pdl_enter();
    crate::launch_bounds!(SAMPLE_BLOCK, 1);
    let p = &*params;
    let p = &SampleParams { ..*p };
    let last_n = p.repeat_last_n;
    if p.flags & SAMPLE_FLAG_PENALTY == 0 || last_n == 0 {
        return;
    }
    let (len, pos) = ((*st).hist_len, (*st).hist_pos);
    let wrap = |i: u64| (i.checked_rem(last_n as u64).unwrap_or(0)) as usize;
    // the oldest entries that n appends push out of the window
    let n_remove = min_u32(len, (len as u64 + n as u64).saturating_sub(last_n as u64).min(u32::MAX as u64) as u32);
    let oldest = pos as u64 + last_n as u64 - len as u64;
    let mut r = tid();
    while r < n_remove {
        atom_add_u32(counts.add(*ring.add(wrap(oldest + r as u64)) as usize), u32::MAX);
        r += BLOCK;
    }
    sync_threads();
    // only the last last_n new tokens stay; token j goes to slot pos + j
    let mut j = n.saturating_sub(last_n) + tid();
    while j < n {
        let tok = *tokens.add(j as usize);
        *ring.add(wrap(pos as u64 + j as u64)) = tok;
        atom_add_u32(counts.add(tok as usize), 1);
        j += BLOCK;
    }
    sync_threads();
    if tid() == 0 {
        (*st).hist_len = (len as u64 + n as u64).min(last_n as u64) as u32;
        (*st).hist_pos = wrap(pos as u64 + n as u64) as u32;
    }
}
