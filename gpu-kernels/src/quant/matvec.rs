//! Mat-vec y = W x straight from quantized blocks (the decode path). CPU twin: `host::quant::matvec`.
//!
//! Design (see ../../../shared/docs/PERFORMANCE.md, 3(b)): a group of KS warps owns R rows; its warps take turns
//! over the rows' steps of NB blocks (split-K) and add their sums through shared memory at the end. Each step's
//! bytes of the R rows are copied global -> shared with 16-byte `cp.async` (coalesced, L1 bypassed, any block size
//! or row alignment: the copy is aligned down to 16 bytes and the decoder adds the phase), S steps in flight per
//! warp. In a step each lane takes U units, loads their activations once with 16-byte loads and reuses them for
//! the R rows. K-quants first decode the step's scale groups into a small (a, b) table; legacy types read their
//! block scale directly. Sums are f32 FMAs; a quant becomes an f32 as 2^23 + q 2^s (one LOP3) minus a constant
//! (one FADD), with 2^-s folded into the activation, so no int-to-float conversion is issued.

use super::geometry::{self, MvGeom};
use super::{cp_async16, cp_async16_full, cp_async_commit, cp_async_wait, dot4, field_bits, field_exp, fma, lds_f32x2, lds_f32x4};
use super::{sts_f32, sts_f32x2, sum4, sync_warp, unroll, Global, QType, Shared};
use crate::common::*;
use crate::quant::types::*;

/// Blocks per warp step.
#[inline(always)]
pub const fn step_blocks(upb: u32, g: MvGeom) -> u32 {
    g.units * 32 / upb
}

/// 16-byte chunks staged per row per step: the step's bytes plus a phase of up to 14.
#[inline(always)]
pub const fn chunks(step_bytes: u32) -> u32 {
    (14 + step_bytes).div_ceil(16)
}

/// Shared bytes of one warp: S stages of R rows, then the scale table (K-quants).
#[inline(always)]
pub const fn warp_bytes(ts: u32, upb: u32, nsub: u32, g: MvGeom) -> u32 {
    let nb = step_blocks(upb, g);
    let stage = g.rows_per_warp * chunks(nb * ts) * 16;
    let table = if nsub > 1 { g.rows_per_warp * nb * nsub * 8 } else { 0 };
    (g.stages * stage + table).div_ceil(16) * 16
}

#[inline(always)]
const fn nb_ts(ts: u32, upb: u32, g: MvGeom) -> u32 {
    step_blocks(upb, g) * ts
}

/// Shared bytes of one block: the warps' areas and the split-K partial sums.
#[inline(always)]
pub const fn block_bytes(ts: u32, upb: u32, nsub: u32, g: MvGeom) -> u32 {
    let n = g.warps * warp_bytes(ts, upb, nsub, g) + g.warps * g.rows_per_warp * 4;
    assert!(n <= 48 * 1024, "mat-vec shared memory over the 48 KiB static limit");
    assert!(g.warps % g.ksplit == 0 && g.stages >= 2 && g.stages <= 4);
    assert!(g.rows_per_warp * chunks(nb_ts(ts, upb, g)) <= 16 * 32, "more than 16 copies per lane and step");
    n
}

/// 2^-s for the quant of run k, element i: the activation's share of the field scaling.
#[inline(always)]
fn x_scale<T: QType>(k: usize, i: usize) -> f32 {
    let (sh, mask) = T::FIELDS[k];
    f32::from_bits((127 - field_exp(sh + 8 * i as u32, mask)) << 23)
}

/// y[r] = sum_c W[r, c] x[c] for the R rows of this warp group.
///
/// Launch: grid = (ceil(n_rows / (R * NW / KS)), 1, 1), block = (32 * NW, 1, 1), static shared memory
/// `block_bytes`; `w` and `x` 16-byte aligned. Traffic: every weight byte once (plus at most 30 bytes per row and
/// step of alignment slack, served by L2), x from L1/L2 (4 bytes per column per R rows), 4 bytes per row written.
#[inline(always)]
unsafe fn matvec<T: QType, const R: usize, const U: usize, const S: u32, const NW: u32, const KS: u32>(
    smem: u32, w: *const u8, x: *const f32, y: *mut f32, n_rows: u32, n_cols: u32,
) {
    let g = MvGeom { rows_per_warp: R as u32, warps: NW, units: U as u32, stages: S, ksplit: KS, max_regs: 0 };
    let nb: u32 = step_blocks(T::UPB, g);
    let step_bytes = nb * T::TS;
    let ch = chunks(step_bytes);
    let stage_bytes = R as u32 * ch * 16;
    let n_tab = if T::NSUB > 1 { R as u32 * nb * T::NSUB } else { 0 };

    let (lane, warp) = (tid() % 32, tid() / 32);
    let (grp, kw) = (warp / KS, warp % KS);
    let row0 = (bid() * (NW / KS) + grp) * R as u32;
    let active = row0 < n_rows;
    let wb = warp_bytes(T::TS, T::UPB, T::NSUB, g);
    let my = smem + warp * wb;
    let table = my + S * stage_bytes;
    let red = smem + NW * wb; // (NW, R) partial sums
    // 0x4B00_0000 as a value ptxas cannot fold (n_rows < 2^31 is checked by the host), so that `(w & mask) |
    // magic` is one LOP3 with the mask as immediate.
    let magic = 0x4B00_0000 | (n_rows >> 31);

    // Row geometry. Plain types: blocks of 8 elements, then a tail of n_cols % 8 read from global memory.
    let nb_row = n_cols / T::BS;
    let row_bytes: u64 = if T::PLAIN { n_cols as u64 * (T::TS / 8) as u64 } else { nb_row as u64 * T::TS as u64 };
    let rb32 = row_bytes as u32; // < 2^32, checked by the host
    let n_steps = nb_row.div_ceil(nb);
    let n_mine = if n_steps > kw { (n_steps - kw).div_ceil(KS) } else { 0 }; // steps kw, kw + KS, ..

    // Copies are addressed from `base`, the group's first byte aligned down to 16; row r's step t starts at offset
    // ph + r * row_bytes + t * step_bytes, and its bytes land at that offset mod 16 in the row's stage area.
    let first = row0 as u64 * row_bytes;
    let base = w.add((first & !15) as usize);
    let ph = (first & 15) as u32;
    let left = (n_rows as u64 * row_bytes).saturating_sub(first & !15); // bytes from `base` to the tensor's end
    let left = if left > u32::MAX as u64 { u32::MAX } else { left as u32 };
    let mut ph0 = [0u32; R];
    unroll::<R>(|r| ph0[r] = (ph + r as u32 * rb32) & 15);

    let cp = Copier { lane, kw, my, stage_bytes, step_bytes, ch, ph, rb32, left, base };

    let mut acc = [0.0f32; R];
    if active {
        for i in 0..S - 1 {
            if i < n_mine {
                cp.issue::<R, S, KS>(i);
            }
            cp_async_commit();
        }
        for i in 0..n_mine {
            sync_warp(); // every lane is done with the stage the next copy overwrites
            if i + S - 1 < n_mine {
                cp.issue::<R, S, KS>(i + S - 1);
            }
            cp_async_commit();
            let t = kw + i * KS;
            let full = (t + 1) * nb <= nb_row; // full steps need no bounds checks
            // The activations do not depend on the copies: load them first, so both latencies overlap.
            let xv = if full { load_x::<T, U, false>(lane, t, nb, nb_row, x) } else { load_x::<T, U, true>(lane, t, nb, nb_row, x) };
            cp_async_wait(S - 1);
            sync_warp(); // step i's bytes, copied by all lanes, are visible to all lanes
            let stage = my + (i % S) * stage_bytes;
            let mut rb = [0u32; R]; // shared address of each row's first byte of the step
            unroll::<R>(|r| rb[r] = stage + r as u32 * ch * 16 + ((ph0[r] + t * step_bytes) & 15));

            // 1) K-quants: scale table entry (r, bi, s) = (a, b) of group s of block bi of row r
            if T::NSUB > 1 {
                let mut e = lane;
                while e < n_tab {
                    let (r, rem) = (e / (nb * T::NSUB), e % (nb * T::NSUB));
                    let (bi, s) = (rem / T::NSUB, rem % T::NSUB);
                    let phase = (ph + r * rb32 + t * step_bytes) & 15;
                    let (a, m) = T::scale(Shared(stage + r * ch * 16 + phase + bi * T::TS), s);
                    sts_f32x2(table + e * 8, a, m);
                    e += 32;
                }
                sync_warp();
            }

            // 2) the units
            if full {
                step::<T, R, U, false>(&xv, &rb, nb, table, magic, &mut acc);
            } else {
                step::<T, R, U, true>(&xv, &rb, nb, table, magic, &mut acc);
            }
        }

        // Plain types: the last n_cols % 8 columns, one per lane, by the group's first warp.
        if T::PLAIN && kw == 0 {
            let (tail, e) = (n_cols % 8, nb_row * 8 + lane);
            if lane < tail {
                let xv = *x.add(e as usize);
                unroll::<R>(|r| {
                    if row0 + (r as u32) < n_rows {
                        let row = Global(w.add(((row0 + r as u32) as u64 * row_bytes) as usize));
                        acc[r] += T::elem(row, e) * xv;
                    }
                });
            }
        }
    }

    // Sum over the warp, then over the group's KS warps.
    unroll::<R>(|r| acc[r] = warp_sum(acc[r]));
    if KS == 1 {
        unroll::<R>(|r| {
            if lane == r as u32 && row0 + (r as u32) < n_rows {
                *y.add((row0 + r as u32) as usize) = acc[r];
            }
        });
    } else {
        unroll::<R>(|r| {
            if lane == r as u32 {
                sts_f32(red + (warp * R as u32 + r as u32) * 4, acc[r]);
            }
        });
        sync_threads();
        if kw == 0 && lane < R as u32 && row0 + lane < n_rows {
            let mut s = 0.0;
            for k in 0..KS {
                s += f32::from_bits(super::lds_u32(red + ((grp * KS + k) * R as u32 + lane) * 4));
            }
            *y.add((row0 + lane) as usize) = s;
        }
    }
}

/// What a lane needs to copy its warp's steps global -> shared.
struct Copier {
    lane: u32,
    kw: u32,
    my: u32,
    stage_bytes: u32,
    step_bytes: u32,
    ch: u32,
    ph: u32,
    rb32: u32,
    left: u32,
    base: *const u8,
}

impl Copier {
    /// Copy this warp's i-th step of the R rows into stage i % S: chunk f = lane + 32 k of the stage is row f / ch,
    /// 16-byte piece f % ch; row r's step starts at `base` + ph + r * row_bytes + t * step_bytes (aligned down).
    /// Past the tensor's end the copies are clamped and zero-filled.
    #[inline(always)]
    unsafe fn issue<const R: usize, const S: u32, const KS: u32>(&self, i: u32) {
        let (ch, lane) = (self.ch, self.lane);
        let t_off = (self.kw + i * KS) * self.step_bytes;
        let stage = self.my + (i % S) * self.stage_bytes;
        // Whole step inside the tensor (all but the last steps): full 16-byte copies, no clamping.
        let inside = ((self.ph + (R as u32 - 1) * self.rb32 + t_off) & !15) + 16 * ch <= self.left;
        unroll::<16>(|k| {
            let f = lane + 32 * k as u32;
            if 32 * k as u32 >= R as u32 * ch || f >= R as u32 * ch {
                return;
            }
            let (r, c) = (f / ch, f % ch);
            let src = if self.step_bytes % 16 == 0 {
                ((self.ph + r * self.rb32) & !15) + 16 * c + t_off
            } else {
                ((self.ph + r * self.rb32 + t_off) & !15) + 16 * c
            };
            if inside {
                cp_async16_full(stage + f * 16, self.base.add(src as usize));
            } else if src < self.left {
                let n = if self.left - src < 16 { self.left - src } else { 16 };
                cp_async16(stage + f * 16, self.base.add(src as usize), n);
            }
        });
    }
}

/// This lane's U units of step t: (block in step, unit in block, in the row) and their activations.
struct Xs<const U: usize> {
    unit: [(u32, u32, bool); U],
    v: [[[f32; 4]; 4]; U],
}

/// Load the activations of this lane's units of step t. `CHECK`: the step runs past the row's last block.
#[inline(always)]
unsafe fn load_x<T: QType, const U: usize, const CHECK: bool>(lane: u32, t: u32, nb: u32, nb_row: u32, x: *const f32) -> Xs<U> {
    let mut xs = Xs { unit: [(0, 0, false); U], v: [[[0.0; 4]; 4]; U] };
    unroll::<U>(|u| {
        let idx = lane + 32 * u as u32;
        let (bi, j) = (idx / T::UPB, idx % T::UPB);
        let valid = !CHECK || t * nb + bi < nb_row;
        xs.unit[u] = (bi, j, valid);
        if valid {
            let e0 = (t * nb + bi) * T::BS;
            unroll::<4>(|k| {
                if (k as u32) < T::RUNS {
                    xs.v[u][k] = ld_nc_f32x4(x.add((e0 + T::run_start(j, k as u32)) as usize));
                }
            });
        }
    });
    xs
}

/// One step of one warp: this lane's U units, for the R rows staged at `rb`. `CHECK`: skip units past the row's
/// end.
#[inline(always)]
unsafe fn step<T: QType, const R: usize, const U: usize, const CHECK: bool>(
    xv: &Xs<U>, rb: &[u32; R], nb: u32, table: u32, magic: u32, acc: &mut [f32; R],
) {
    // Activations reused for the R rows; quant types fold each field's 2^-s into them.
    let unit = xv.unit;
    let mut xs = [[[0.0f32; 4]; 4]; U];
    let mut sx = [[0.0f32; 4]; U];
    unroll::<U>(|u| {
        unroll::<4>(|k| {
            let v = xv.v[u][k];
            sx[u][k] = sum4(v);
            unroll::<4>(|i| xs[u][k][i] = if T::PLAIN { v[i] } else { v[i] * x_scale::<T>(k, i) });
        });
    });

    unroll::<R>(|r| {
        unroll::<U>(|u| {
            let (bi, j, valid) = unit[u];
            if CHECK && !valid {
                return;
            }
            let b = Shared(rb[r] + bi * T::TS);
            if T::PLAIN {
                let q = T::unit(b, j);
                unroll::<4>(|k| {
                    if (k as u32) < T::RUNS {
                        acc[r] += dot4(q[k], xs[u][k]);
                    }
                });
                return;
            }
            let words = T::words(b, j);
            let tab = table + ((r as u32 * nb + bi) * T::NSUB) * 8;
            // Scale groups: one per block read in place (legacy), or table entries; Q4_K/Q5_K runs use the adjacent
            // groups 2c, 2c + 1 (one 16-byte load).
            let direct = if T::NSUB == 1 { T::scale(b, 0) } else { (0.0, 0.0) };
            let pair = if T::NSUB > 1 && T::RUNS == 2 { lds_f32x4(tab + T::run_sub(j, 0) * 8) } else { [0.0; 4] };
            unroll::<4>(|k| {
                if k as u32 >= T::RUNS {
                    return;
                }
                let (sh, mask) = T::FIELDS[k];
                let mut d = 0.0f32;
                unroll::<4>(|i| {
                    let p = sh + 8 * i as u32;
                    let s = field_exp(p, mask);
                    let v = field_bits(words[k], p, mask, magic) - (8_388_608.0 + T::OFF * (1u32 << s) as f32);
                    d = if i == 0 { v * xs[u][k][0] } else { fma(v, xs[u][k][i], d) };
                });
                let (a, m) = if T::NSUB == 1 {
                    direct
                } else if T::RUNS == 2 {
                    (pair[2 * k], pair[2 * k + 1])
                } else {
                    lds_f32x2(tab + T::run_sub(j, k as u32) * 8)
                };
                acc[r] = fma(a, d, acc[r]);
                if T::HAS_MIN {
                    acc[r] = fma(m, sx[u][k], acc[r]);
                }
            });
        });
    });
}

macro_rules! matvec_kernels {
    ($($name:ident: $ty:ty, $g:expr;)*) => {$(
        /// y = W x; see [`matvec`] for the launch shape (geometry in `geometry.rs`) and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */, x: *const f32 /* (n_cols,) */,
                                                y: *mut f32 /* (n_rows,) */, n_rows: u32, n_cols: u32) {
            crate::common::pdl_enter();
            const G: MvGeom = $g;
            const SMEM: u32 = block_bytes(<$ty as QType>::TS, <$ty as QType>::UPB, <$ty as QType>::NSUB, G);
            crate::launch_bounds!(G.warps * 32, G.min_blocks());
            let smem = crate::shared_array!("mv_smem", SMEM);
            matvec::<$ty, { G.rows_per_warp as usize }, { G.units as usize }, { G.stages }, { G.warps }, { G.ksplit }>(
                smem, w, x, y, n_rows, n_cols)
        }
    )*};
}

matvec_kernels! {
    matvec_f32: F32, geometry::MV_F32;
    matvec_f16: F16, geometry::MV_F16;
    matvec_bf16: BF16, geometry::MV_BF16;
    matvec_q4_0: Q4_0, geometry::MV_Q4_0;
    matvec_q4_1: Q4_1, geometry::MV_Q4_1;
    matvec_q5_0: Q5_0, geometry::MV_Q5_0;
    matvec_q5_1: Q5_1, geometry::MV_Q5_1;
    matvec_q8_0: Q8_0, geometry::MV_Q8_0;
    matvec_q2_k: Q2K, geometry::MV_Q2_K;
    matvec_q3_k: Q3K, geometry::MV_Q3_K;
    matvec_q4_k: Q4K, geometry::MV_Q4_K;
    matvec_q5_k: Q5K, geometry::MV_Q5_K;
    matvec_q6_k: Q6K, geometry::MV_Q6_K;
    matvec_q8_k: Q8K, geometry::MV_Q8_K;
    // Benchmark-only variants (geometry::MV_VARIANTS).
    matvec_q4_0_r4w8u2s4k2x80: Q4_0, geometry::MV_VARIANTS[0].2;
    matvec_q4_0_r4w8u2s3k2: Q4_0, geometry::MV_VARIANTS[1].2;
    matvec_q4_0_r4w4u2s4k2: Q4_0, geometry::MV_VARIANTS[2].2;
    matvec_q4_0_r2w8u2s3k2: Q4_0, geometry::MV_VARIANTS[3].2;
    matvec_q4_0_r4w8u2s3k4: Q4_0, geometry::MV_VARIANTS[4].2;
    matvec_q4_k_r4w8u2s4k2x80: Q4K, geometry::MV_VARIANTS[5].2;
    matvec_q4_k_r4w8u2s3k2: Q4K, geometry::MV_VARIANTS[6].2;
    matvec_q4_k_r4w4u2s4k2: Q4K, geometry::MV_VARIANTS[7].2;
    matvec_q4_k_r2w8u2s3k2: Q4K, geometry::MV_VARIANTS[8].2;
    matvec_q4_k_r4w8u2s3k4: Q4K, geometry::MV_VARIANTS[9].2;
}
