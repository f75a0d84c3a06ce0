//! Mat-mul Y = X W^T for many activation rows (the prefill path), straight from quantized blocks: a plain
//! shared-memory tiled f32 kernel (tensor cores come later). CPU twin: `host::quant::matmul`.

use super::geometry::{MM_K, MM_ROWS, MM_THREADS, MM_TOK};
use super::{fma, lds_f32x4, sts_f32, Global, Mem, QType};
use crate::common::*;
use crate::quant::types::*;

/// Shared bytes: the dequantized weight tile (MM_K x MM_ROWS) and the activation tile (MM_K x MM_TOK), k-major.
pub const SMEM: u32 = MM_K * (MM_ROWS + MM_TOK) * 4;
const _: () = assert!(SMEM <= 48 * 1024);
const _: () = assert!(MM_THREADS * 16 == MM_ROWS * MM_TOK && MM_ROWS == 64 && MM_TOK == 32 && MM_THREADS == 128);

/// y[n, m] = sum_c W[m, c] x[n, c] for a tile of 64 weight rows x 32 tokens.
///
/// Per step of 128 columns, the block decodes the 64 x 128 weight tile into shared memory (thread t: row t % 64,
/// half t / 64 of the step's units), stages the 32 x 128 activations, and each thread accumulates a 4 x 4 patch
/// (rows 4 (t % 16).., tokens 4 (t / 16)..) from 16-byte shared loads.
///
/// Launch: grid = (ceil(n_rows / 64), ceil(n_tok / 32), 1), block = (128, 1, 1), 48 KiB static shared memory;
/// `x` 16-byte aligned. Traffic: W read ceil(n_tok / 32) times and x ceil(n_rows / 64) times (mostly from L2),
/// y written once; 2 n_rows n_cols n_tok flops.
#[inline(always)]
unsafe fn matmul<T: QType>(smem: u32, w: *const u8, x: *const f32, y: *mut f32, n_rows: u32, n_cols: u32, n_tok: u32) {
    let (ws, xs) = (smem, smem + MM_K * MM_ROWS * 4);
    let t = tid();
    let (m0, n0) = (bid() * MM_ROWS, bid_y() * MM_TOK);
    let nb_row = n_cols / T::BS;
    let row_bytes: u64 = if T::PLAIN { n_cols as u64 * (T::TS / 8) as u64 } else { nb_row as u64 * T::TS as u64 };
    let unit_elems = 4 * T::RUNS;
    let upc = MM_K / unit_elems; // units per step and row

    // Weight-tile fill: row fm of the tile, units fu0.. of each step.
    let (fm, fu0) = (t % MM_ROWS, (t / MM_ROWS) * (upc / 2));
    let frow_ok = m0 + fm < n_rows;
    let wrow = Global(w.add(if frow_ok { (m0 + fm) as u64 * row_bytes } else { 0 } as usize));
    // Activation-tile fill: token xn, columns 32 xp .. 32 xp + 32 of each step.
    let (xn, xp) = (t % MM_TOK, t / MM_TOK);
    let xtok_ok = n0 + xn < n_tok;
    let xrow = x.add(if xtok_ok { ((n0 + xn) * n_cols) as usize } else { 0 });
    let x_vec = n_cols % 4 == 0;
    // Output patch.
    let (mg, ng) = (t % 16, t / 16);
    let mut acc = [[0.0f32; 4]; 4];

    let mut k0 = 0;
    while k0 < n_cols {
        // 1) weights -> ws[k][m], zeros past the row's end
        for i in 0..upc / 2 {
            let ug = k0 / unit_elems + fu0 + i;
            let (bi, j) = (ug / T::UPB, ug % T::UPB);
            let q = if frow_ok && bi < nb_row { Some(T::unit(wrow.at(bi * T::TS), j)) } else { None };
            for k in 0..T::RUNS {
                let e0 = bi * T::BS + T::run_start(j, k);
                let mut v = [0.0f32; 4];
                if let Some(q) = q {
                    let q = q[k as usize];
                    v = q;
                    if !T::PLAIN {
                        let (a, m) = T::scale(wrow.at(bi * T::TS), T::run_sub(j, k));
                        v = [fma(a, q[0], m), fma(a, q[1], m), fma(a, q[2], m), fma(a, q[3], m)];
                    }
                } else if T::PLAIN && frow_ok {
                    for c in 0..4 {
                        if e0 + c < n_cols {
                            v[c as usize] = T::elem(wrow, e0 + c);
                        }
                    }
                }
                for c in 0..4 {
                    sts_f32(ws + ((e0 - k0 + c) * MM_ROWS + fm) * 4, v[c as usize]);
                }
            }
        }
        // 2) activations -> xs[k][n], zeros past the last token or column
        for i in 0..8 {
            let kk = (xp * 8 + i) * 4;
            let col = k0 + kk;
            let mut v = [0.0f32; 4];
            if xtok_ok {
                if x_vec && col + 3 < n_cols {
                    v = ld_f32x4(xrow.add(col as usize));
                } else {
                    for c in 0..4 {
                        if col + c < n_cols {
                            v[c as usize] = *xrow.add((col + c) as usize);
                        }
                    }
                }
            }
            for c in 0..4 {
                sts_f32(xs + ((kk + c) * MM_TOK + xn) * 4, v[c as usize]);
            }
        }
        sync_threads();
        // 3) 4 x 4 outer products over the step
        for k in 0..MM_K {
            let a = lds_f32x4(ws + (k * MM_ROWS + 4 * mg) * 4);
            let b = lds_f32x4(xs + (k * MM_TOK + 4 * ng) * 4);
            for i in 0..4 {
                for jn in 0..4 {
                    acc[i][jn] = fma(a[i], b[jn], acc[i][jn]);
                }
            }
        }
        sync_threads();
        k0 += MM_K;
    }

    for jn in 0..4 {
        let tok = n0 + 4 * ng + jn as u32;
        for i in 0..4 {
            let row = m0 + 4 * mg + i as u32;
            if tok < n_tok && row < n_rows {
                *y.add((tok * n_rows + row) as usize) = acc[i][jn];
            }
        }
    }
}

macro_rules! matmul_kernels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// Y = X W^T; see [`matmul`] for the launch shape and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8 /* (n_rows, n_cols) blocks */, x: *const f32 /* (n_tok, n_cols) */,
                                                y: *mut f32 /* (n_tok, n_rows) */, n_rows: u32, n_cols: u32, n_tok: u32) {
            crate::common::pdl_enter();
            let smem = crate::shared_array!("mm_smem", SMEM);
            matmul::<$ty>(smem, w, x, y, n_rows, n_cols, n_tok)
        }
    )*};
}

matmul_kernels! {
    matmul_f32: F32;
    matmul_f16: F16;
    matmul_bf16: BF16;
    matmul_q4_0: Q4_0;
    matmul_q4_1: Q4_1;
    matmul_q5_0: Q5_0;
    matmul_q5_1: Q5_1;
    matmul_q8_0: Q8_0;
    matmul_q2_k: Q2K;
    matmul_q3_k: Q3K;
    matmul_q4_k: Q4K;
    matmul_q5_k: Q5K;
    matmul_q6_k: Q6K;
    matmul_q8_k: Q8K;
}
