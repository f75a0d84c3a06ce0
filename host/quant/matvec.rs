//! Dot products, mat-vec and mat-mul of quantized weights with f32 activations, on all cores.
//!
//! The inner loops are plain Rust written so that LLVM vectorises them: a row is expanded `CHUNK` elements at
//! a time into a stack buffer (the format's `dequant`, exact), then multiplied into `LANES` independent f32
//! accumulators. Each loop is compiled twice: for the baseline target and, on x86-64, with AVX2 + FMA + F16C
//! enabled, chosen at run time. Rows of W are contiguous, `row_bytes` bytes each; y = W x.

use rayon::prelude::*;

use super::{with_format, Format};
use crate::gguf::GgmlType;

/// Elements expanded at a time (one K-quant super-block, eight legacy blocks).
const CHUNK: usize = 256;
/// Independent accumulators in a dot product (two AVX2 registers; lets the adds run in parallel).
const LANES: usize = 16;
/// Weights below this many bytes are multiplied on the calling thread (a rayon fork costs a few µs).
const PAR_MIN_BYTES: usize = 32 * 1024;

// ---------------------------------------------------------------------------------------------------------
// inner loops (inlined into each instruction-set instance below)

/// acc[l] += a[i] * b[i] for i = l (mod LANES).
#[inline(always)]
fn dot_lanes(acc: &mut [f32; LANES], a: &[f32], b: &[f32]) {
    let (mut ac, mut bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ac).zip(&mut bc) {
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ac.remainder().iter().zip(bc.remainder()).enumerate() {
        acc[l] += x * y;
    }
}

#[inline(always)]
fn hsum(acc: &[f32; LANES]) -> f32 {
    let mut v = *acc;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for l in 0..n {
            v[l] += v[l + n];
        }
    }
    v[0]
}

/// One quantized row (whole blocks) . x.
#[inline(always)]
fn dot_row<F: Format>(row: &[u8], x: &[f32]) -> f32 {
    let chunk_bytes = CHUNK / F::QK * F::BYTES;
    let mut buf = [0.0f32; CHUNK];
    let mut acc = [0.0f32; LANES];
    let (mut rc, mut xc) = (row.chunks_exact(chunk_bytes), x.chunks_exact(CHUNK));
    for (r, xs) in (&mut rc).zip(&mut xc) {
        F::dequant(r, &mut buf);
        dot_lanes(&mut acc, &buf, xs);
    }
    let xs = xc.remainder();
    if !xs.is_empty() {
        let tail = &mut buf[..xs.len()];
        F::dequant(rc.remainder(), tail);
        dot_lanes(&mut acc, tail, xs);
    }
    hsum(&acc)
}

#[inline(always)]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    dot_lanes(&mut acc, a, b);
    hsum(&acc)
}

/// y[i] = (row i of w) . x, for the rows in `w` (`row_bytes` each).
#[inline(always)]
fn dot_rows_impl<F: Format>(w: &[u8], row_bytes: usize, x: &[f32], y: &mut [f32]) {
    for (yv, row) in y.iter_mut().zip(w.chunks_exact(row_bytes)) {
        *yv = dot_row::<F>(row, x);
    }
}

#[inline(always)]
fn dequant_impl<F: Format>(src: &[u8], dst: &mut [f32]) {
    F::dequant(src, dst);
}

/// out (n_tok, n_r) = wd (n_r, n_cols, expanded) . x (n_tok, n_cols)^T, four weight rows per pass over x_t.
#[inline(always)]
fn matmul_tile_impl(wd: &[f32], n_cols: usize, x: &[f32], out: &mut [f32]) {
    let n_r = wd.len() / n_cols;
    for (xt, ot) in x.chunks_exact(n_cols).zip(out.chunks_exact_mut(n_r)) {
        let mut r = 0;
        while r + 4 <= n_r {
            let rows = [0, 1, 2, 3].map(|k| &wd[(r + k) * n_cols..][..n_cols]);
            let mut acc = [[0.0f32; LANES]; 4];
            let mut xc = xt.chunks_exact(LANES);
            let mut rcs = rows.map(|w| w.chunks_exact(LANES));
            for xs in &mut xc {
                for k in 0..4 {
                    let ws = rcs[k].next().unwrap();
                    for l in 0..LANES {
                        acc[k][l] += ws[l] * xs[l];
                    }
                }
            }
            for k in 0..4 {
                for (l, (w, xv)) in rcs[k].remainder().iter().zip(xc.remainder()).enumerate() {
                    acc[k][l] += w * xv;
                }
                ot[r + k] = hsum(&acc[k]);
            }
            r += 4;
        }
        for (rr, o) in ot.iter_mut().enumerate().skip(r) {
            *o = dot_f32(&wd[rr * n_cols..][..n_cols], xt);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// instruction-set instances

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// `fn $name<F>(args)` runs `$body` compiled with AVX2 + FMA + F16C when the CPU has them, else for the
/// baseline target. Neither instance contracts a * b + c into an FMA (Rust never does implicitly), so both
/// give identical results.
macro_rules! multiversion {
    ($(#[$m:meta])* fn $name:ident<$F:ident: Format>($($arg:ident: $t:ty),*) $(-> $ret:ty)? = $body:ident;) => {
        $(#[$m])*
        fn $name<$F: Format>($($arg: $t),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c")]
                fn avx2<$F: Format>($($arg: $t),*) $(-> $ret)? {
                    $body::<$F>($($arg),*)
                }
                if has_avx2() {
                    // SAFETY: the CPU supports every feature `avx2` was compiled with (checked just above).
                    return unsafe { avx2::<$F>($($arg),*) };
                }
            }
            $body::<$F>($($arg),*)
        }
    };
}

multiversion! {
    /// y[i] = (row i of w) . x.
    fn dot_rows<F: Format>(w: &[u8], row_bytes: usize, x: &[f32], y: &mut [f32]) = dot_rows_impl;
}
multiversion! {
    /// Whole blocks of `src` -> `dst`.
    fn dequant_rows<F: Format>(src: &[u8], dst: &mut [f32]) = dequant_impl;
}

/// Expanded tile times activations, `matmul_tile_impl` with the best instruction set.
fn matmul_tile(wd: &[f32], n_cols: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma,f16c")]
        fn avx2(wd: &[f32], n_cols: usize, x: &[f32], out: &mut [f32]) {
            matmul_tile_impl(wd, n_cols, x, out)
        }
        if has_avx2() {
            // SAFETY: the CPU supports every feature `avx2` was compiled with (checked just above).
            return unsafe { avx2(wd, n_cols, x, out) };
        }
    }
    matmul_tile_impl(wd, n_cols, x, out)
}

// ---------------------------------------------------------------------------------------------------------
// public entry points

/// Bytes of a row of `n_cols` elements of `ty`; panics on a type or length the caller should have rejected.
fn row_bytes(op: &str, ty: GgmlType, n_cols: usize) -> usize {
    assert!(super::is_supported(ty), "{op}: type {ty} is not supported");
    match ty.row_bytes(n_cols as u64) {
        Some(b) => b as usize,
        None => panic!(
            "{op} {ty}: row of {n_cols} elements is not a multiple of the block size {}",
            ty.block_size()
        ),
    }
}

/// Whole blocks of `src` -> `dst` (lengths checked by the caller).
pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    with_format!(
        ty,
        dequant_rows(src, dst),
        unreachable!("type {ty} checked by the caller")
    )
}

/// One quantized row `row` of `ty` dotted with `x` (`x.len()` elements), f32 accumulate.
///
/// # Panics
/// If `ty` is not supported, `x.len()` is not a whole number of blocks or `row` is not exactly its size.
pub fn vec_dot(ty: GgmlType, row: &[u8], x: &[f32]) -> f32 {
    let rb = row_bytes("vec_dot", ty, x.len());
    assert_eq!(
        row.len(),
        rb,
        "vec_dot {ty}: row of {} elements must be {rb} bytes",
        x.len()
    );
    let mut y = [0.0f32];
    with_format!(ty, dot_rows(row, rb.max(1), x, &mut y), unreachable!());
    y[0]
}

/// y = W x with W (n_rows, n_cols) of type `ty`, rows contiguous; rows are split among all rayon threads.
///
/// # Panics
/// If `ty` is not supported, `n_cols` is not a whole number of blocks, or a slice length does not match.
pub fn matvec(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = row_bytes("matvec", ty, n_cols);
    assert_eq!(
        w.len(),
        n_rows * rb,
        "matvec {ty}: w must be {n_rows} rows of {rb} bytes"
    );
    assert_eq!(
        x.len(),
        n_cols,
        "matvec {ty}: x must have {n_cols} elements"
    );
    assert_eq!(
        y.len(),
        n_rows,
        "matvec {ty}: y must have {n_rows} elements"
    );
    if n_cols == 0 {
        y.fill(0.0);
        return;
    }
    with_format!(ty, matvec_typed(w, rb, x, y), unreachable!())
}

fn matvec_typed<F: Format>(w: &[u8], rb: usize, x: &[f32], y: &mut [f32]) {
    let threads = rayon::current_num_threads();
    if w.len() < PAR_MIN_BYTES || threads == 1 || y.len() < 2 {
        return dot_rows::<F>(w, rb, x, y);
    }
    // a few tasks per thread so that a slow core does not hold everyone up
    let rows_per_task = y.len().div_ceil(threads * 4).max(1);
    y.par_chunks_mut(rows_per_task)
        .zip(w.par_chunks(rows_per_task * rb))
        .for_each(|(yc, wc)| dot_rows::<F>(wc, rb, x, yc));
}

/// y (n_tok, n_rows) = x (n_tok, n_cols) W^T, i.e. one mat-vec per activation row, with W (n_rows, n_cols) of
/// type `ty`. Tiles of W rows are expanded to f32 once and reused for every token; tiles run on all threads.
///
/// # Panics
/// As `matvec`, and if `x.len()` is not a multiple of `n_cols` or `y` is not (n_tok, n_rows).
pub fn matmul(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    let rb = row_bytes("matmul", ty, n_cols);
    assert_eq!(
        w.len(),
        n_rows * rb,
        "matmul {ty}: w must be {n_rows} rows of {rb} bytes"
    );
    if n_cols == 0 {
        y.fill(0.0);
        return;
    }
    assert_eq!(
        x.len() % n_cols,
        0,
        "matmul {ty}: x length {} is not a multiple of {n_cols}",
        x.len()
    );
    let n_tok = x.len() / n_cols;
    assert_eq!(
        y.len(),
        n_tok * n_rows,
        "matmul {ty}: y must be {n_tok} x {n_rows}"
    );
    if n_tok == 1 {
        return matvec(ty, w, n_rows, n_cols, x, y);
    }
    if n_rows == 0 {
        return;
    }
    // ~128 KiB of expanded weights per tile: stays in L2 while every token passes over it
    let tile = (32 * 1024 / n_cols).clamp(4, 64).min(n_rows);
    let n_tiles = n_rows.div_ceil(tile);
    let outs: Vec<Vec<f32>> = (0..n_tiles)
        .into_par_iter()
        .map_init(Vec::new, |wd, t| {
            let (r0, r1) = (t * tile, ((t + 1) * tile).min(n_rows));
            wd.resize((r1 - r0) * n_cols, 0.0);
            dequantize(ty, &w[r0 * rb..r1 * rb], wd);
            let mut out = vec![0.0f32; n_tok * (r1 - r0)];
            matmul_tile(wd, n_cols, x, &mut out);
            out
        })
        .collect();
    for (t, out) in outs.iter().enumerate() {
        let (r0, n_r) = (t * tile, out.len() / n_tok);
        for (yt, ot) in y.chunks_exact_mut(n_rows).zip(out.chunks_exact(n_r)) {
            yt[r0..r0 + n_r].copy_from_slice(ot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, is_supported};

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect()
    }

    fn floats(n: usize, seed: u64) -> Vec<f32> {
        bytes(4 * n, seed)
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as f32 / 4.294_967e9 - 0.5)
            .collect()
    }

    /// Random blocks of `ty` whose f16 / f32 scale fields hold small finite values (so no inf / NaN).
    fn random_weights(ty: GgmlType, n_rows: usize, n_cols: usize, seed: u64) -> Vec<u8> {
        let n_bytes = ty.row_bytes(n_cols as u64).unwrap() as usize * n_rows;
        let mut w = bytes(n_bytes, seed);
        let scales = floats(n_bytes, seed + 1);
        let bs = ty.type_size();
        let f16 = |v: f32| half::f16::from_f32(v).to_bits().to_le_bytes();
        for (i, b) in w.chunks_exact_mut(bs).enumerate() {
            let (s0, s1) = (f16(scales[2 * i] * 0.1), f16(scales[2 * i + 1] * 0.1));
            let put = |b: &mut [u8], off: usize, v: [u8; 2]| b[off..off + 2].copy_from_slice(&v);
            match ty {
                GgmlType::F32 => b.copy_from_slice(&scales[i].to_le_bytes()),
                GgmlType::F16 => put(b, 0, s0),
                GgmlType::BF16 => {
                    b.copy_from_slice(&((scales[i].to_bits() >> 16) as u16).to_le_bytes())
                }
                GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => put(b, 0, s0),
                GgmlType::Q4_1
                | GgmlType::Q5_1
                | GgmlType::Q8_1
                | GgmlType::Q4_K
                | GgmlType::Q5_K => {
                    put(b, 0, s0);
                    put(b, 2, s1);
                }
                GgmlType::Q2_K => {
                    put(b, 80, s0);
                    put(b, 82, s1);
                }
                GgmlType::Q3_K => put(b, 108, s0),
                GgmlType::Q6_K => put(b, 208, s0),
                GgmlType::Q8_K => b[0..4].copy_from_slice(&(scales[i] * 0.01).to_le_bytes()),
                _ => unreachable!(),
            }
        }
        w
    }

    /// Reference: expand each row with `dequantize_row`, then an f64 dot.
    fn reference(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32]) -> Vec<f64> {
        let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let n_tok = x.len() / n_cols;
        let mut row = vec![0.0f32; n_cols];
        let mut y = vec![0.0f64; n_tok * n_rows];
        for r in 0..n_rows {
            dequantize_row(ty, &w[r * rb..(r + 1) * rb], &mut row).unwrap();
            for t in 0..n_tok {
                y[t * n_rows + r] = row
                    .iter()
                    .zip(&x[t * n_cols..])
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum();
            }
        }
        y
    }

    /// f32 accumulation error bound: |got - want| <= TOL * sum |w_i x_i| (plus a tiny absolute floor).
    const TOL: f64 = 1e-5;

    fn abs_dot(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32]) -> Vec<f64> {
        let ax: Vec<f32> = x.iter().map(|v| v.abs()).collect();
        let aw: Vec<u8> = w.to_vec();
        let rb = ty.row_bytes(n_cols as u64).unwrap() as usize;
        let n_tok = x.len() / n_cols;
        let mut row = vec![0.0f32; n_cols];
        let mut y = vec![0.0f64; n_tok * n_rows];
        for r in 0..n_rows {
            dequantize_row(ty, &aw[r * rb..(r + 1) * rb], &mut row).unwrap();
            for t in 0..n_tok {
                y[t * n_rows + r] = row
                    .iter()
                    .zip(&ax[t * n_cols..])
                    .map(|(a, b)| (*a as f64).abs() * *b as f64)
                    .sum();
            }
        }
        y
    }

    fn check(what: &str, ty: GgmlType, got: &[f32], want: &[f64], mag: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, ((g, w), m)) in got.iter().zip(want).zip(mag).enumerate() {
            let err = (*g as f64 - w).abs();
            assert!(
                err <= TOL * m + 1e-30,
                "{what} {ty} [{i}]: got {g}, want {w} (err {err}, scale {m})"
            );
        }
    }

    fn test_types() -> Vec<GgmlType> {
        GgmlType::all().filter(|t| is_supported(*t)).collect()
    }

    #[test]
    fn supported_types_are_those_of_the_issue() {
        let names: Vec<&str> = test_types().iter().map(|t| t.name()).collect();
        for want in [
            "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
            "Q5_K", "Q6_K", "Q8_K",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!is_supported(GgmlType::IQ2_XXS));
    }

    #[test]
    fn vec_dot_matches_dequantized_dot() {
        for ty in test_types() {
            // sizes: one block, an odd number of blocks, a size with a partial 256-element chunk
            for n_blocks in [1usize, 3, 9, 18] {
                let n_cols = n_blocks * ty.block_size().max(32);
                let w = random_weights(ty, 1, n_cols, 7 + n_blocks as u64);
                let x = floats(n_cols, 11);
                let got = vec_dot(ty, &w, &x);
                check(
                    "vec_dot",
                    ty,
                    &[got],
                    &reference(ty, &w, 1, n_cols, &x),
                    &abs_dot(ty, &w, 1, n_cols, &x),
                );
            }
        }
    }

    #[test]
    fn float_types_take_any_length() {
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
            for n_cols in [1usize, 5, 17, 33, 300] {
                let w = random_weights(ty, 3, n_cols, n_cols as u64);
                let x = floats(n_cols, 3);
                let mut y = vec![0.0; 3];
                matvec(ty, &w, 3, n_cols, &x, &mut y);
                check(
                    "matvec",
                    ty,
                    &y,
                    &reference(ty, &w, 3, n_cols, &x),
                    &abs_dot(ty, &w, 3, n_cols, &x),
                );
            }
        }
    }

    #[test]
    fn matvec_matches_dequantized_dot_odd_shapes() {
        for ty in test_types() {
            // 1 row, an odd count below the parallel threshold, an odd count above it
            for (n_rows, n_blocks) in [(1usize, 2usize), (7, 3), (301, 5)] {
                let n_cols =
                    n_blocks * ty.block_size().max(32) + if ty.block_size() == 1 { 3 } else { 0 };
                let w = random_weights(ty, n_rows, n_cols, n_rows as u64);
                let x = floats(n_cols, 5);
                let mut y = vec![f32::NAN; n_rows];
                matvec(ty, &w, n_rows, n_cols, &x, &mut y);
                check(
                    "matvec",
                    ty,
                    &y,
                    &reference(ty, &w, n_rows, n_cols, &x),
                    &abs_dot(ty, &w, n_rows, n_cols, &x),
                );
            }
        }
    }

    #[test]
    fn matmul_matches_dequantized_dot_odd_shapes() {
        for ty in test_types() {
            for (n_rows, n_blocks, n_tok) in [(5usize, 1usize, 2usize), (67, 3, 3), (130, 2, 7)] {
                let n_cols = n_blocks * ty.block_size().max(32);
                let w = random_weights(ty, n_rows, n_cols, 3 + n_rows as u64);
                let x = floats(n_cols * n_tok, 9);
                let mut y = vec![f32::NAN; n_rows * n_tok];
                matmul(ty, &w, n_rows, n_cols, &x, &mut y);
                check(
                    "matmul",
                    ty,
                    &y,
                    &reference(ty, &w, n_rows, n_cols, &x),
                    &abs_dot(ty, &w, n_rows, n_cols, &x),
                );
            }
        }
    }

    #[test]
    fn matmul_of_one_token_is_matvec() {
        let ty = GgmlType::Q4_K;
        let w = random_weights(ty, 33, 512, 1);
        let x = floats(512, 2);
        let (mut a, mut b) = (vec![0.0; 33], vec![0.0; 33]);
        matvec(ty, &w, 33, 512, &x, &mut a);
        matmul(ty, &w, 33, 512, &x, &mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn baseline_and_simd_instances_agree_bit_for_bit() {
        // the run-time dispatch may pick AVX2; the generic instance must give the same bits
        for ty in test_types() {
            let n_cols = 3 * ty.block_size().max(32) * 8;
            let w = random_weights(ty, 4, n_cols, 21);
            let x = floats(n_cols, 22);
            let mut fast = vec![0.0f32; n_cols * 4];
            dequantize(ty, &w, &mut fast);
            let mut base = vec![0.0f32; n_cols * 4];
            fn generic<F: Format>(src: &[u8], dst: &mut [f32]) {
                dequant_impl::<F>(src, dst)
            }
            with_format!(ty, generic(&w, &mut base), unreachable!());
            assert!(
                fast.iter()
                    .zip(&base)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{ty} dequant"
            );
            let rb = w.len() / 4;
            let (mut yf, mut yb) = (vec![0.0f32; 4], vec![0.0f32; 4]);
            with_format!(ty, dot_rows(&w, rb, &x, &mut yf), unreachable!());
            with_format!(ty, dot_rows_impl(&w, rb, &x, &mut yb), unreachable!());
            assert_eq!(yf, yb, "{ty} dot");
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of the block size")]
    fn matvec_rejects_partial_blocks() {
        let mut y = [0.0f32; 1];
        matvec(GgmlType::Q4_0, &[0u8; 18], 1, 31, &[0.0; 31], &mut y);
    }
}
