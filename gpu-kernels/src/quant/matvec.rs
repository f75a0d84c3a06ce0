//! Mat-vec y = W x straight from quantized blocks (the decode path). CPU twin: `host::quant::matvec`.
//!
//! Design (see ../../../shared/docs/PERFORMANCE.md, 3(b)): a warp owns R rows and walks them in steps of NB
//! blocks. Each step's bytes of the R rows are copied global -> shared with 16-byte `cp.async` (coalesced, L1
//! bypassed, any block size or row alignment: the copy is aligned down to 16 bytes and the decoder adds the
//! phase), S steps in flight. Per step the lanes first decode the blocks' scale groups into a small (a, b) table,
//! then each lane takes U units, loads their activations once with 16-byte loads and reuses them for the R rows.
//! Sums are f32 FMAs; quants become exact f32 through the 2^23 mantissa trick (`field`), not int conversions.

use super::geometry::{self, MvGeom};
use super::{cp_async16, cp_async_commit, cp_async_wait, dot4, fma, lds_f32x2, sts_f32x2, sum4, sync_warp};
use super::{unroll, Global, QType, Shared};
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

/// Shared bytes of one warp: S stages of R rows, then the scale table.
#[inline(always)]
pub const fn warp_bytes(ts: u32, upb: u32, nsub: u32, g: MvGeom) -> u32 {
    let nb = step_blocks(upb, g);
    let stage = g.rows_per_warp * chunks(nb * ts) * 16;
    let table = g.rows_per_warp * nb * nsub * 8;
    (g.stages * stage + table).div_ceil(16) * 16
}

/// Shared bytes of one block (plus 16 bytes of padding for the decoder's read-ahead).
#[inline(always)]
pub const fn block_bytes(ts: u32, upb: u32, nsub: u32, g: MvGeom) -> u32 {
    let n = g.warps * warp_bytes(ts, upb, nsub, g) + 16;
    assert!(n <= 48 * 1024, "mat-vec shared memory over the 48 KiB static limit");
    n
}

/// y[r] = sum_c W[r, c] x[c] for the R rows of this warp.
///
/// Launch: grid = (ceil(n_rows / (R * NW)), 1, 1), block = (32 * NW, 1, 1), static shared memory `block_bytes`;
/// `w` and `x` 16-byte aligned. Traffic: every weight byte once (plus at most 30 bytes per row and step of
/// alignment slack, served by L2), x from L1/L2 (4 bytes per column per R rows), 4 bytes per row written.
#[inline(always)]
unsafe fn matvec<T: QType, const R: usize, const U: usize, const S: u32, const NW: u32>(
    smem: u32, w: *const u8, x: *const f32, y: *mut f32, n_rows: u32, n_cols: u32,
) {
    let g = MvGeom { rows_per_warp: R as u32, warps: NW, units: U as u32, stages: S };
    let nb: u32 = step_blocks(T::UPB, g);
    let step_bytes = nb * T::TS;
    let ch = chunks(step_bytes);
    let stage_bytes = R as u32 * ch * 16;
    let n_tab = R as u32 * nb * T::NSUB;

    let (lane, warp) = (tid() % 32, tid() / 32);
    let row0 = (bid() * NW + warp) * R as u32;
    if row0 >= n_rows {
        return;
    }
    let my = smem + warp * warp_bytes(T::TS, T::UPB, T::NSUB, g);
    let table = my + S * stage_bytes;

    // Row geometry. Plain types: blocks of 8 elements, then a tail of n_cols % 8 read from global memory.
    let nb_row = n_cols / T::BS;
    let row_bytes: u64 = if T::PLAIN { n_cols as u64 * (T::TS / 8) as u64 } else { nb_row as u64 * T::TS as u64 };
    let total = n_rows as u64 * row_bytes;
    let n_steps = nb_row.div_ceil(nb);
    let rowc = |r: u32| if row0 + r < n_rows { row0 + r } else { n_rows - 1 };
    // Byte phase (start mod 16) of each row's step 0; step t adds t * step_bytes.
    let mut ph0 = [0u32; R];
    unroll::<R>(|r| ph0[r] = (rowc(r as u32).wrapping_mul(row_bytes as u32)) & 15);

    // Copy step t of the R rows into stage t % S: chunks aligned down to 16 bytes, clamped to the tensor's end.
    let issue = |t: u32| {
        let stage = my + (t % S) * stage_bytes;
        let mut f = lane;
        while f < R as u32 * ch {
            let (r, c) = (f / ch, f % ch);
            let start = rowc(r) as u64 * row_bytes + t as u64 * step_bytes as u64;
            let src = (start & !15) + 16 * c as u64;
            if src < total {
                let n = if total - src < 16 { (total - src) as u32 } else { 16 };
                cp_async16(stage + f * 16, w.add(src as usize), n);
            }
            f += 32;
        }
    };

    let mut acc = [0.0f32; R];
    for t in 0..S - 1 {
        if t < n_steps {
            issue(t);
        }
        cp_async_commit();
    }
    for t in 0..n_steps {
        sync_warp(); // every lane is done with the stage the next copy overwrites
        if t + S - 1 < n_steps {
            issue(t + S - 1);
        }
        cp_async_commit();
        cp_async_wait(S - 1);
        sync_warp(); // step t's bytes, copied by all lanes, are visible to all lanes
        let stage = my + (t % S) * stage_bytes;
        let phase = |r: u32| (ph0[r as usize] + t * step_bytes) & 15;
        let row_smem = |r: u32| stage + r * ch * 16 + phase(r);

        // 1) scale table: entry (r, bi, s) = (a, b) of group s of block bi of row r
        if T::NSUB > 0 {
            let mut e = lane;
            while e < n_tab {
                let (r, rem) = (e / (nb * T::NSUB), e % (nb * T::NSUB));
                let (bi, s) = (rem / T::NSUB, rem % T::NSUB);
                if t * nb + bi < nb_row {
                    let ph = (rowc(r).wrapping_mul(row_bytes as u32) + t * step_bytes) & 15;
                    let (a, m) = T::scale(Shared(stage + r * ch * 16 + ph + bi * T::TS), s);
                    sts_f32x2(table + e * 8, a, m);
                }
                e += 32;
            }
            sync_warp();
        }

        // 2) activations of this lane's units, loaded once for the R rows
        let mut xs = [[[0.0f32; 4]; 4]; U];
        let mut sx = [[0.0f32; 4]; U];
        let mut unit = [(0u32, 0u32, false); U];
        unroll::<U>(|u| {
            let idx = lane + 32 * u as u32;
            let (bi, j) = (idx / T::UPB, idx % T::UPB);
            let valid = t * nb + bi < nb_row;
            unit[u] = (bi, j, valid);
            if valid {
                let e0 = (t * nb + bi) * T::BS;
                unroll::<4>(|k| {
                    if (k as u32) < T::RUNS {
                        let v = ld_nc_f32x4(x.add((e0 + T::run_start(j, k as u32)) as usize));
                        xs[u][k] = v;
                        sx[u][k] = sum4(v);
                    }
                });
            }
        });

        // 3) decode and accumulate, row by row
        unroll::<R>(|r| {
            unroll::<U>(|u| {
                let (bi, j, valid) = unit[u];
                if !valid {
                    return;
                }
                let q = T::unit(Shared(row_smem(r as u32) + bi * T::TS), j);
                unroll::<4>(|k| {
                    if k as u32 >= T::RUNS {
                        return;
                    }
                    let d = dot4(q[k], xs[u][k]);
                    if T::PLAIN {
                        acc[r] += d;
                    } else {
                        let ent = table + ((r as u32 * nb + bi) * T::NSUB + T::run_sub(j, k as u32)) * 8;
                        let (a, m) = lds_f32x2(ent);
                        acc[r] = fma(a, d, acc[r]);
                        if T::HAS_MIN {
                            acc[r] = fma(m, sx[u][k], acc[r]);
                        }
                    }
                });
            });
        });
    }

    // Plain types: the last n_cols % 8 columns, one per lane.
    if T::PLAIN {
        let (tail, e) = (n_cols % 8, nb_row * 8 + lane);
        if lane < tail {
            let xv = *x.add(e as usize);
            unroll::<R>(|r| {
                let row = Global(w.add((rowc(r as u32) as u64 * row_bytes) as usize));
                acc[r] += T::elem(row, e) * xv;
            });
        }
    }

    unroll::<R>(|r| {
        let s = warp_sum(acc[r]);
        if lane == r as u32 && row0 + (r as u32) < n_rows {
            *y.add((row0 + r as u32) as usize) = s;
        }
    });
}

macro_rules! matvec_kernels {
    ($($name:ident: $ty:ty, $g:expr;)*) => {$(
        /// y = W x; see [`matvec`] for the launch shape (geometry in `geometry.rs`) and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */, x: *const f32 /* (n_cols,) */,
                                                y: *mut f32 /* (n_rows,) */, n_rows: u32, n_cols: u32) {
            const G: MvGeom = $g;
            const SMEM: u32 = block_bytes(<$ty as QType>::TS, <$ty as QType>::UPB, <$ty as QType>::NSUB, G);
            let smem = crate::shared_array!("mv_smem", SMEM);
            matvec::<$ty, { G.rows_per_warp as usize }, { G.units as usize }, { G.stages }, { G.warps }>(
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
    matvec_q4_0_r2w4: Q4_0, geometry::MV_VARIANTS[0].2;
    matvec_q4_0_r4w8: Q4_0, geometry::MV_VARIANTS[1].2;
    matvec_q4_0_r2w8u4: Q4_0, geometry::MV_VARIANTS[2].2;
    matvec_q4_k_r2w4: Q4K, geometry::MV_VARIANTS[3].2;
    matvec_q4_k_r4w8: Q4K, geometry::MV_VARIANTS[4].2;
    matvec_q4_k_r2w8u4: Q4K, geometry::MV_VARIANTS[5].2;
}
