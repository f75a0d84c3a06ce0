//! Mat-vec products with the exact float numerics of llama.cpp's CPU backend as its portable x86 build computes
//! them (ggml-cpu built with `GGML_NATIVE=OFF`: SSE4.2, AVX, AVX2, FMA, F16C; the build the reference outputs
//! were made with). Reproducing greedy decoding of small models needs the same float operations in the same
//! order, not just the same quantization: their top logits often sit within 0.01 of each other.
//!
//! What ggml does there (`arch/x86/quants.c`, `vec.cpp`):
//! - activations are quantized to the weight type's `vec_dot_type` with the AVX code: for q8_0 / q8_1,
//!   d = amax / 127, q = round_half_even(x * (127 / amax)) (not the reference's x * (1 / d), half away), and
//!   q8_1's s = f16(d * sum q) with the unrounded d; q8_K uses the reference quantizer on x86.
//! - legacy blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the integer products of 4 consecutive elements land in one of
//!   8 f32 lanes, acc[lane] = fma(d_x * d_y, isum, acc[lane]) block after block, then the lanes are summed as
//!   ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)); Q4_1 / Q5_1 add their min terms in a scalar
//!   summs = fma(m, s, summs) (the compiler contracts `summs += m * s`), added last.
//! - F16 weights: activations rounded to f16, 4 x 8 f32 accumulators over steps of 32 elements, reduced in a fixed
//!   tree, leftovers added in f64.
//!
//! - K-quants (q8_K activations): exact integer sums per super-block, then the float steps of ggml's AVX2
//!   `vec_dot` for one token or a small batch, of its repacked Q4_K gemv/gemm, or of its tiled mat-mul
//!   (`ggml-cpu/tiled`) for a batch of 8 or more tokens; see `dot_k_vec`, `dot_q4_k_repacked`, `dot_k_tiled`.

use super::blocks::*;
use super::dequant::f16;
use super::dot::{self, legacy_quants};
use super::quantize::q8_k_block;
use crate::gguf::GgmlType;

#[inline(always)]
fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// max |x| of a 32-element block and its d, id as the AVX quantizer computes them.
#[inline(always)]
fn avx_scale(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// ggml x86 `quantize_row_q8_0` (AVX2) for one block of 32.
pub fn q8_0_block_avx(x: &[f32]) -> BlockQ8_0 {
    let (d, id) = avx_scale(x);
    let mut qs = [0i8; QK8_0];
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    BlockQ8_0 { d: f16_bits(d), qs }
}

/// ggml x86 `quantize_row_q8_1` (AVX2) for one block of 32: s = f16(d * sum q) with the f32 d.
pub fn q8_1_block_avx(x: &[f32]) -> BlockQ8_1 {
    let (d, id) = avx_scale(x);
    let mut qs = [0i8; QK8_1];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
        sum += *q as i32;
    }
    BlockQ8_1 { d: f16_bits(d), s: f16_bits(d * sum as f32), qs }
}

/// Activations of one token, converted as ggml does for a weight type.
pub enum Acts {
    Q8_0(Vec<BlockQ8_0>),
    Q8_1(Vec<BlockQ8_1>),
    /// K-quants: reference q8_K blocks, products by `dot::dot_row`.
    K(dot::Acts),
    /// F16 weights: x rounded to f16 (held as f32).
    F16(Vec<f32>),
    /// Other weights: exact f32 products.
    F32(Vec<f32>),
}

impl Acts {
    pub fn new(ty: GgmlType, x: &[f32]) -> Acts {
        use GgmlType::*;
        match ty {
            Q4_0 | Q5_0 | Q8_0 => Acts::Q8_0(x.chunks_exact(QK8_0).map(q8_0_block_avx).collect()),
            Q4_1 | Q5_1 => Acts::Q8_1(x.chunks_exact(QK8_1).map(q8_1_block_avx).collect()),
            Q2_K | Q3_K | Q4_K | Q5_K | Q6_K | Q8_K => {
                Acts::K(dot::Acts::Q8K(x.chunks_exact(QK_K).map(q8_k_block).collect()))
            }
            F16 => Acts::F16(x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()),
            _ => Acts::F32(x.to_vec()),
        }
    }
}

/// `hsum_float_8`: ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)).
#[inline(always)]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let r = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (r[0] + r[2]) + (r[1] + r[3])
}

/// lane L = sum of q[e] y[e] over e = 4L .. 4L + 3: what `maddubs` (sign trick) + `madd` with ones give ggml's AVX2
/// dots, exact (|q| <= 128, |y| <= 127 cannot saturate the 16-bit pair sums).
#[inline(always)]
fn lanes4(q: &[i8; 32], y: &[i8; 32]) -> [i32; 8] {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 is enabled at compile time (cfg above); the loads read exactly the two 32-byte arrays.
        unsafe {
            let qv = _mm256_loadu_si256(q.as_ptr() as *const __m256i);
            let yv = _mm256_loadu_si256(y.as_ptr() as *const __m256i);
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qv, qv), _mm256_sign_epi8(yv, qv));
            std::mem::transmute::<__m256i, [i32; 8]>(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
    std::array::from_fn(|l| (4 * l..4 * l + 4).map(|e| q[e] as i32 * y[e] as i32).sum())
}

/// acc[L] = fma(d, lanes[L], acc[L]) for the 8 lanes (one `_mm256_fmadd_ps` where AVX2 is compiled in).
#[inline(always)]
fn fma_lanes(acc: &mut [f32; 8], d: f32, lanes: [i32; 8]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        use std::arch::x86_64::*;
        // SAFETY: AVX2 and FMA are enabled at compile time (cfg above); the accesses stay inside the two arrays.
        unsafe {
            let l = _mm256_cvtepi32_ps(std::mem::transmute::<[i32; 8], __m256i>(lanes));
            let a = _mm256_loadu_ps(acc.as_ptr());
            _mm256_storeu_ps(acc.as_mut_ptr(), _mm256_fmadd_ps(_mm256_set1_ps(d), l, a));
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    for (a, l) in acc.iter_mut().zip(lanes) {
        *a = d.mul_add(l as f32, *a);
    }
}

/// Where a product reads a weight row's blocks: `Raw` decodes each block as it goes (one token), `Decoded` holds
/// the row decoded once for all the tokens of a batch. Both hand the same integers to the same float steps.
trait Row {
    /// Legacy block `i`: its quants in element order, d and m (0 for Q4_0 / Q5_0 / Q8_0).
    fn legacy<R>(&self, i: usize, f: impl FnOnce(&[i8; 32], f32, f32) -> R) -> R;
    /// K-quant block `i`: quants in element order, per-16 scales and mins, d and dmin.
    fn k<R>(&self, i: usize, f: impl FnOnce(&[i8; QK_K], &[i32; 16], &[i32; 16], f32, f32) -> R) -> R;
    /// F16 element `k` as f32.
    fn f16_at(&self, k: usize) -> f32;
}

struct Raw<'a> {
    ty: GgmlType,
    row: &'a [u8],
}

impl Raw<'_> {
    #[inline(always)]
    fn blk(&self, i: usize) -> &[u8] {
        let ts = self.ty.type_size();
        &self.row[i * ts..(i + 1) * ts]
    }
}

impl Row for Raw<'_> {
    #[inline(always)]
    fn legacy<R>(&self, i: usize, f: impl FnOnce(&[i8; 32], f32, f32) -> R) -> R {
        let mut q = [0i8; 32];
        let (d, m) = legacy_quants(self.ty, self.blk(i), &mut q);
        f(&q, d, m)
    }
    #[inline(always)]
    fn k<R>(&self, i: usize, f: impl FnOnce(&[i8; QK_K], &[i32; 16], &[i32; 16], f32, f32) -> R) -> R {
        let (mut q, mut sc, mut mn) = ([0i8; QK_K], [0i32; 16], [0i32; 16]);
        let (d, dmin) = dot::decode_k(self.ty, self.blk(i), &mut q, &mut sc, &mut mn);
        f(&q, &sc, &mn, d, dmin)
    }
    #[inline(always)]
    fn f16_at(&self, k: usize) -> f32 {
        f16(u16::from_le_bytes([self.row[2 * k], self.row[2 * k + 1]]))
    }
}

/// A weight row decoded once (see `Row`).
#[derive(Default)]
struct Decoded {
    q: Vec<i8>,
    d: Vec<f32>,
    m: Vec<f32>,
    sc: Vec<[i32; 16]>,
    mn: Vec<[i32; 16]>,
    f: Vec<f32>,
}

impl Decoded {
    fn decode(&mut self, ty: GgmlType, row: &[u8]) {
        let raw = Raw { ty, row };
        let n = row.len() / ty.type_size().max(1); // blocks in the row
        self.q.clear();
        self.d.clear();
        self.m.clear();
        self.sc.clear();
        self.mn.clear();
        self.f.clear();
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0 => {
                for i in 0..n {
                    raw.legacy(i, |q, d, m| {
                        self.q.extend_from_slice(q);
                        self.d.push(d);
                        self.m.push(m);
                    });
                }
            }
            GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K => {
                for i in 0..n {
                    raw.k(i, |q, sc, mn, d, dmin| {
                        self.q.extend_from_slice(q);
                        self.sc.push(*sc);
                        self.mn.push(*mn);
                        self.d.push(d);
                        self.m.push(dmin);
                    });
                }
            }
            GgmlType::F16 => self.f.extend((0..row.len() / 2).map(|k| raw.f16_at(k))),
            _ => {}
        }
    }
}

impl Row for Decoded {
    #[inline(always)]
    fn legacy<R>(&self, i: usize, f: impl FnOnce(&[i8; 32], f32, f32) -> R) -> R {
        f(self.q[32 * i..32 * i + 32].try_into().expect("32 quants"), self.d[i], self.m[i])
    }
    #[inline(always)]
    fn k<R>(&self, i: usize, f: impl FnOnce(&[i8; QK_K], &[i32; 16], &[i32; 16], f32, f32) -> R) -> R {
        let q = self.q[QK_K * i..QK_K * (i + 1)].try_into().expect("256 quants");
        f(q, &self.sc[i], &self.mn[i], self.d[i], self.m[i])
    }
    #[inline(always)]
    fn f16_at(&self, k: usize) -> f32 {
        self.f[k]
    }
}

/// Legacy block row . q8 activations: 8 lanes of 4-element integer sums, fma-accumulated.
#[inline(always)]
fn dot_legacy(w: &impl Row, ys: impl Iterator<Item = (f32, f32, [i8; 32])>) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut summs = 0.0f32;
    for (i, (dy, sy, qy)) in ys.enumerate() {
        w.legacy(i, |q, dx, m| {
            let dd = dx * dy;
            fma_lanes(&mut acc, dd, lanes4(q, &qy));
            summs = m.mul_add(sy, summs);
        });
    }
    hsum8(&acc) + summs
}

/// ggml `ggml_vec_dot_f16` (AVX2): 4 accumulators of 8 lanes over steps of 32, fixed reduction, f64 leftovers.
#[inline(always)]
pub fn dot_f16(x: &[f32], y: impl Fn(usize) -> f32) -> f32 {
    let n = x.len();
    let np = n & !31;
    let mut sum = [[0.0f32; 8]; 4];
    for i in (0..np).step_by(32) {
        for (j, s) in sum.iter_mut().enumerate() {
            for (l, a) in s.iter_mut().enumerate() {
                let k = i + 8 * j + l;
                *a = x[k].mul_add(y(k), *a);
            }
        }
    }
    dot_f16_reduce(&sum, x, np, y)
}

/// `dot_f16`'s reduction of its 4 x 8 accumulators and its f64 leftovers from `np` on.
#[inline(always)]
fn dot_f16_reduce(sum: &[[f32; 8]; 4], x: &[f32], np: usize, y: impl Fn(usize) -> f32) -> f32 {
    let t: [f32; 8] = std::array::from_fn(|l| (sum[0][l] + sum[2][l]) + (sum[1][l] + sum[3][l]));
    // t0 = lo + hi; hadd twice: (t0_0 + t0_1) + (t0_2 + t0_3)
    let t0 = [t[0] + t[4], t[1] + t[5], t[2] + t[6], t[3] + t[7]];
    let mut sumf = ((t0[0] + t0[1]) + (t0[2] + t0[3])) as f64;
    for (k, &xv) in x.iter().enumerate().skip(np) {
        sumf += (xv * y(k)) as f64;
    }
    sumf as f32
}

/// `dot_f16` of `x` with a row of f16 (`y.len() >= x.len()`), 8 elements converted at a time.
#[inline(always)]
pub fn dot_f16_row(x: &[f32], y: &[half::f16]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    {
        use std::arch::x86_64::*;
        let n = x.len();
        let np = n & !31;
        assert!(y.len() >= n);
        let mut sum = [[0.0f32; 8]; 4];
        // SAFETY: AVX2, FMA and F16C are enabled at compile time (cfg above); every load reads elements below
        // np <= n of x and y (checked above).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 4];
            for i in (0..np).step_by(32) {
                for (j, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(i + 8 * j));
                    let yv = _mm256_cvtph_ps(_mm_loadu_si128(y.as_ptr().add(i + 8 * j) as *const __m128i));
                    *a = _mm256_fmadd_ps(xv, yv, *a);
                }
            }
            for (s, a) in sum.iter_mut().zip(acc) {
                _mm256_storeu_ps(s.as_mut_ptr(), a);
            }
        }
        dot_f16_reduce(&sum, x, np, |k| y[k].to_f32())
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c")))]
    dot_f16(x, |k| y[k].to_f32())
}

/// Q4_0 weights repacked for ggml's x86 gemv/gemm (`q4_0_8x8`, used when the row count is a multiple of 8):
/// per block the integer sum over all 32 products, one sequential fma chain acc = fma(isum, d_x * d_y, acc).
#[inline(always)]
fn dot_q4_0_repacked(w: &impl Row, ys: &[BlockQ8_0]) -> f32 {
    let mut acc = 0.0f32;
    for (i, y) in ys.iter().enumerate() {
        w.legacy(i, |q, dx, _| {
            let isum: i32 = lanes4(q, &y.qs).iter().sum();
            acc = (isum as f32).mul_add(dx * f16(y.d), acc);
        });
    }
    acc
}

/// ggml's AVX2 K-quant `vec_dot` integer lanes: lane L holds sum over g = 0..7 of sc[e / 16] * (q . y) over the 4
/// elements e = 32 g + 4 L .. 32 g + 4 L + 3 (maddubs + madd with the scale shuffles), exact in i32; the quants
/// taken as q + `off`.
#[inline(always)]
fn k_lanes(q: &[i8; QK_K], off: i8, y: &[i8; QK_K], sc: &[i32; 16]) -> [i32; 8] {
    let mut acc = [0i32; 8];
    for g in 0..8 {
        let mut qg: [i8; 32] = q[32 * g..32 * g + 32].try_into().unwrap();
        qg.iter_mut().for_each(|v| *v += off);
        let l4 = lanes4(&qg, y[32 * g..32 * g + 32].try_into().unwrap());
        for (l, (a, p)) in acc.iter_mut().zip(l4).enumerate() {
            *a += sc[2 * g + l / 4] * p;
        }
    }
    acc
}

/// ggml `ggml_vec_dot_{q2,q3,q4,q5,q6}_K_q8_K` (AVX2). Per super-block the 8 `k_lanes` go into
/// acc[L] = fma(d_y * d_x, lane, acc[L]) and are summed by `hsum8` at the end. The mins term of Q2_K, Q4_K and Q5_K
/// (all scaled by dmin = -d_y * dmin_x) is where they differ:
/// - Q2_K: 8 lanes, lane L = mn[2L] bsum[2L] + mn[2L+1] bsum[2L+1], fma'd into the same acc before the scales;
/// - Q4_K: 4 lanes, lane k = the 32-element mins of subblocks 2k, 2k + 1 times their bsum pairs, in their own fma
///   chain, reduced as (m0 + m2) + (m1 + m3) and added after `hsum8`;
/// - Q5_K: the same 4 lanes summed as integers, (p0 + p1) + (p2 + p3), into a scalar fma chain added last.
///
/// Q6_K's lanes hold the unsigned codes' products, its -32 offset coming off per lane from the bsums.
#[inline(always)]
fn dot_k_vec(ty: GgmlType, w: &impl Row, ys: &[BlockQ8K]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut acc_m = [0.0f32; 4];
    let mut summs = 0.0f32;
    for (i, y) in ys.iter().enumerate() {
        w.k(i, |q, sc, mn, dx, dminx| {
            let (d, dmin) = (y.d * dx, -y.d * dminx);
            let bs = |g: usize| y.bsums[g] as i32;
            // 32-element mins (Q4_K / Q5_K: mn repeats each per 16) times the bsum pairs, 4 lanes of two subblocks
            let m32: [i32; 4] = std::array::from_fn(|k| {
                mn[4 * k] * (bs(4 * k) + bs(4 * k + 1)) + mn[4 * k + 2] * (bs(4 * k + 2) + bs(4 * k + 3))
            });
            match ty {
                GgmlType::Q2_K => {
                    fma_lanes(&mut acc, dmin, std::array::from_fn(|l| mn[2 * l] * bs(2 * l) + mn[2 * l + 1] * bs(2 * l + 1)))
                }
                GgmlType::Q4_K => {
                    for (a, &m) in acc_m.iter_mut().zip(&m32) {
                        *a = dmin.mul_add(m as f32, *a);
                    }
                }
                GgmlType::Q5_K => summs = dmin.mul_add(((m32[0] + m32[1]) + (m32[2] + m32[3])) as f32, summs),
                _ => {}
            }
            // ggml multiplies Q6_K's unsigned 6-bit codes and takes 32 * (scale-weighted bsums of 16-groups 2L, 2L + 1)
            // off lane L: the same total, spread differently over the lanes
            let q6 = ty == GgmlType::Q6_K;
            let mut lanes = k_lanes(q, if q6 { 32 } else { 0 }, &y.qs, sc);
            if q6 {
                for (l, lane) in lanes.iter_mut().enumerate() {
                    *lane -= 32 * (sc[2 * l] * bs(2 * l) + sc[2 * l + 1] * bs(2 * l + 1));
                }
            }
            fma_lanes(&mut acc, d, lanes);
        });
    }
    hsum8(&acc) + ((acc_m[0] + acc_m[2]) + (acc_m[1] + acc_m[3])) + summs
}

/// ggml's tiled K-quant mat-mul (`ggml-cpu/tiled`, taken for batches of 8 or more tokens when the weights are not
/// repacked): per super-block the exact integer sums s1 = sum_g sc[g] (q . y)_g and s2 = sum_g mn[g] bsum[g],
/// res = fma(-dmin_x, s2, d_x * s1), then one fma chain acc = fma(res, d_y, acc) over the super-blocks.
#[inline(always)]
fn dot_k_tiled(ty: GgmlType, w: &impl Row, ys: &[BlockQ8K]) -> f32 {
    let has_min = matches!(ty, GgmlType::Q2_K | GgmlType::Q4_K | GgmlType::Q5_K);
    let mut acc = 0.0f32;
    for (i, y) in ys.iter().enumerate() {
        w.k(i, |q, sc, mn, dx, dminx| {
            let s1: i32 = k_lanes(q, 0, &y.qs, sc).iter().sum();
            let mut res = dx * s1 as f32;
            if has_min {
                let s2: i32 = mn.iter().zip(&y.bsums).map(|(&m, &b)| m * b as i32).sum();
                res = (-dminx).mul_add(s2 as f32, res);
            }
            acc = res.mul_add(y.d, acc);
        });
    }
    acc
}

/// Q4_K repacked for ggml's x86 `q4_K_8x8` gemv/gemm: per super-block the exact integer sums of the scaled
/// products and of mins * q8 sums, acc = fma(isum, d_x * d_y, acc), acc_min = fma(imin, dmin_x * d_y, acc_min),
/// acc - acc_min at the end. `gemm` (tokens taken 4 at a time in a batch): the two fma chains step per 64
/// elements instead of per super-block.
#[inline(always)]
fn dot_q4_k_repacked(w: &impl Row, ys: &[BlockQ8K], gemm: bool) -> f32 {
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    for (i, y) in ys.iter().enumerate() {
        w.k(i, |q, sc, mn, d, dmin| {
            let (dd, dm) = (d * y.d, dmin * y.d);
            let (mut isum, mut imin) = (0i32, 0i32);
            for sb in 0..4 {
                // 64 elements: 16-groups 4 sb .. 4 sb + 3 (mins per 32 are duplicated per 16 in `mn`)
                for g32 in 2 * sb..2 * sb + 2 {
                    let e = 32 * g32;
                    let l4 = lanes4(q[e..e + 32].try_into().unwrap(), y.qs[e..e + 32].try_into().unwrap());
                    for (h, g) in [2 * g32, 2 * g32 + 1].into_iter().enumerate() {
                        let p: i32 = l4[4 * h..4 * h + 4].iter().sum();
                        isum += sc[g] * p;
                        imin += mn[g] * y.bsums[g] as i32;
                    }
                }
                if gemm {
                    acc = (isum as f32).mul_add(dd, acc);
                    acc_min = (imin as f32).mul_add(dm, acc_min);
                    (isum, imin) = (0, 0);
                }
            }
            if !gemm {
                acc = (isum as f32).mul_add(dd, acc);
                acc_min = (imin as f32).mul_add(dm, acc_min);
            }
        });
    }
    acc - acc_min
}

/// How ggml reaches a product: `vec_dot`, or for weights of a multiple of 8 rows, Q4_0 and Q4_K repacked, its
/// gemv (one token) or gemm (batch tokens taken 4 at a time; the rest go through gemv). F16 weights in a batch of
/// 2 or more tokens go through llamafile's tinyBLAS (`Gemm` too): 8 lanes, lane l an fma chain over the elements
/// l, l + 8, ..., summed by `hsum8`. K-quants that are not repacked go through the tiled mat-mul (`Tiled`) in a
/// batch of `TILED_MIN_TOKENS` or more.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    VecDot,
    Gemv,
    Gemm,
    Tiled,
}

/// ggml takes its tiled K-quant mat-mul from this many tokens on (`ggml_tiled_min_batch`).
pub const TILED_MIN_TOKENS: usize = 8;

/// One weight row of `ty` . activations converted by `Acts::new(ty, ..)`, as `kernel` computes it.
pub fn dot_row(ty: GgmlType, row: &[u8], acts: &Acts, kernel: Kernel) -> f32 {
    dot_blocks(ty, row, &Raw { ty, row }, acts, kernel)
}

/// `dot_row` reading the blocks through `w` (`row` itself is read by the types `Row` does not decode).
#[inline(always)]
fn dot_blocks(ty: GgmlType, row: &[u8], w: &impl Row, acts: &Acts, kernel: Kernel) -> f32 {
    let repacked = matches!(kernel, Kernel::Gemv | Kernel::Gemm);
    match acts {
        Acts::Q8_0(ys) if repacked && ty == GgmlType::Q4_0 => dot_q4_0_repacked(w, ys),
        Acts::Q8_0(ys) => dot_legacy(w, ys.iter().map(|y| (f16(y.d), 0.0, y.qs))),
        Acts::Q8_1(ys) => dot_legacy(w, ys.iter().map(|y| (f16(y.d), f16(y.s), y.qs))),
        Acts::K(dot::Acts::Q8K(ys)) if repacked && ty == GgmlType::Q4_K => {
            dot_q4_k_repacked(w, ys, kernel == Kernel::Gemm)
        }
        Acts::K(dot::Acts::Q8K(ys)) if kernel == Kernel::Tiled => dot_k_tiled(ty, w, ys),
        Acts::K(dot::Acts::Q8K(ys)) if ty != GgmlType::Q8_K => dot_k_vec(ty, w, ys),
        Acts::K(a) => dot::dot_row(ty, row, a),
        Acts::F16(x) if kernel == Kernel::Gemm => {
            let mut acc = [0.0f32; 8];
            for (k, &xv) in x.iter().enumerate() {
                acc[k % 8] = w.f16_at(k).mul_add(xv, acc[k % 8]);
            }
            hsum8(&acc)
        }
        Acts::F16(x) => dot_f16(x, |k| w.f16_at(k)),
        Acts::F32(x) => super::dot_f32(ty, row, x),
    }
}

/// y = W x with llama.cpp's x86 CPU numerics for `n_tok` rows of x: x (n_tok, n_cols) -> y (n_tok, n_rows).
/// Each token's products are computed by the kernel ggml picks for the type and batch size (`Kernel`), so a
/// result can change with the batch size exactly where llama.cpp's does. In a batch each weight row is decoded
/// once for all the tokens.
pub fn matmul(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32]) {
    use rayon::prelude::*;
    let rb = super::check_mat(ty, w, n_rows, n_cols);
    let n_tok = x.len() / n_cols;
    let acts: Vec<Acts> = x.par_chunks_exact(n_cols).map(|xr| Acts::new(ty, xr)).collect();
    let kernels: Vec<Kernel> = (0..n_tok).map(|t| kernel_for(ty, n_rows, n_cols, n_tok, t)).collect();
    if n_tok == 1 {
        super::par_rows(w, rb, &mut y[..n_rows], |row, out| *out = dot_row(ty, row, &acts[0], kernels[0]));
        return;
    }
    let mut yt = vec![0.0f32; n_rows * n_tok];
    yt.par_chunks_mut(super::ROWS_PER_TASK * n_tok).enumerate().for_each(|(ci, chunk)| {
        super::simd_dispatch(|| {
            let mut dec = Decoded::default();
            for (i, out) in chunk.chunks_exact_mut(n_tok).enumerate() {
                let r = ci * super::ROWS_PER_TASK + i;
                let row = &w[r * rb..(r + 1) * rb];
                dec.decode(ty, row);
                for ((o, a), &k) in out.iter_mut().zip(&acts).zip(&kernels) {
                    *o = dot_blocks(ty, row, &dec, a, k);
                }
            }
        })
    });
    super::untranspose(&yt, y, n_rows, n_tok);
}

/// ggml `ggml_vec_dot_q8_0_q8_0` (AVX2): x . y over blocks of q8_0, as a Q8_0 weight row times q8_0 activations.
pub fn dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (bx, by) in x.iter().zip(y) {
        fma_lanes(&mut acc, f16(bx.d) * f16(by.d), lanes4(&bx.qs, &by.qs));
    }
    hsum8(&acc)
}

/// The kernel ggml picks for token `t` of a mat-mul of `n_tok` tokens over `n_rows` rows of `ty` (`matmul`).
fn kernel_for(ty: GgmlType, n_rows: usize, n_cols: usize, n_tok: usize, t: usize) -> Kernel {
    let repacked = n_rows.is_multiple_of(8) && matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_K);
    let tiny_blas = ty == GgmlType::F16 && n_tok >= 2 && n_cols.is_multiple_of(8);
    let tiled = !repacked
        && n_tok >= TILED_MIN_TOKENS
        && matches!(ty, GgmlType::Q2_K | GgmlType::Q3_K | GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K);
    match (repacked, t < n_tok - n_tok % 4) {
        _ if tiny_blas => Kernel::Gemm,
        _ if tiled => Kernel::Tiled,
        (false, _) => Kernel::VecDot,
        (true, false) => Kernel::Gemv,
        (true, true) => Kernel::Gemm,
    }
}

/// The q8 activations of several tokens for legacy weights, block-major so that one weight block meets every
/// token's block in turn: block `i` of token `t` at `i * stride + t` (`stride`: the token count rounded up to 8,
/// the padding zero), its quants, d and s (q8_1; 0 for q8_0) as f32.
struct LegacyActs {
    nb: usize,
    stride: usize,
    qs: Vec<[i8; 32]>,
    d: Vec<f32>,
    s: Vec<f32>,
}

impl LegacyActs {
    /// The activations `x` (rows of `n_cols`) quantized for legacy weights of `ty` (None: not a legacy type).
    fn new(ty: GgmlType, x: &[f32], n_cols: usize) -> Option<LegacyActs> {
        use rayon::prelude::*;
        let q8_1 = match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => false,
            GgmlType::Q4_1 | GgmlType::Q5_1 => true,
            _ => return None,
        };
        let (n_tok, nb) = (x.len() / n_cols, n_cols / QK8_0);
        let stride = n_tok.next_multiple_of(8);
        let mut a = LegacyActs {
            nb,
            stride,
            // 8 more: a kernel reads 8 tokens' d and s from any token of the last block
            qs: vec![[0; 32]; nb * stride],
            d: vec![0.0; nb * stride + 8],
            s: vec![0.0; nb * stride + 8],
        };
        let quant = |xr: &[f32]| -> Vec<(f32, f32, [i8; 32])> {
            xr.chunks_exact(QK8_0)
                .map(|b| {
                    if q8_1 {
                        let y = q8_1_block_avx(b);
                        (f16(y.d), f16(y.s), y.qs)
                    } else {
                        let y = q8_0_block_avx(b);
                        (f16(y.d), 0.0, y.qs)
                    }
                })
                .collect()
        };
        // one token's quantization is a few microseconds: threads only for prompt-sized batches
        let toks: Vec<Vec<(f32, f32, [i8; 32])>> = if n_tok >= 32 {
            x.par_chunks_exact(n_cols).map(quant).collect()
        } else {
            x.chunks_exact(n_cols).map(quant).collect()
        };
        for (t, blocks) in toks.iter().enumerate() {
            for (i, &(d, s, qs)) in blocks.iter().enumerate() {
                let k = i * stride + t;
                (a.qs[k], a.d[k], a.s[k]) = (qs, d, s);
            }
        }
        Some(a)
    }
}

/// One legacy weight row (VecDot kernel) times tokens `t0..t0 + out.len()` of `acts`: each token's float
/// operations those of `dot_legacy` in the same order (bit-identical to `dot_row`).
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
fn legacy_row(ty: GgmlType, row: &[u8], acts: &LegacyActs, t0: usize, out: &mut [f32]) {
    let ts = ty.type_size();
    for (u, o) in out.iter_mut().enumerate() {
        let mut acc = [0.0f32; 8];
        let mut summs = 0.0f32;
        for i in 0..acts.nb {
            let mut q = [0i8; 32];
            let (dx, m) = legacy_quants(ty, &row[i * ts..(i + 1) * ts], &mut q);
            let k = i * acts.stride + t0 + u;
            fma_lanes(&mut acc, dx * acts.d[k], lanes4(&q, &acts.qs[k]));
            summs = m.mul_add(acts.s[k], summs);
        }
        *o = hsum8(&acc) + summs;
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
use legacy_avx2::legacy_row;

/// The AVX2 legacy-row kernel: a weight block is unpacked into one register once and meets up to 8 tokens, each
/// token's 8 lane sums and fma chain in a register of its own; each token's d_x * d_y is a scalar product
/// broadcast from a register and the 8 tokens' min terms one vector fma (lane = token), each the same f32
/// operation `dot_legacy` does.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod legacy_avx2 {
    use super::{f16, hsum8, LegacyActs};
    use crate::gguf::GgmlType;
    use std::arch::x86_64::*;

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q5_0: u8 = 2;
    const Q5_1: u8 = 3;
    const Q8_0: u8 = 4;

    /// 16 bytes of nibbles: low nibbles are elements 0..15, high nibbles 16..31.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let t = _mm_loadu_si128(p as *const __m128i);
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), _mm256_set1_epi8(0x0F))
    }

    /// Bit e of the 32-bit `qh` at p as 0x10 in byte e.
    #[inline(always)]
    unsafe fn high_bits(p: *const u8) -> __m256i {
        let qh = (p as *const i32).read_unaligned();
        // byte e takes byte e / 8 of qh, then its bit e % 8
        let idx = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh), idx);
        let bit = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// Block at `b` of type K: its quants in element order (signed for Q4_0, Q5_0, Q8_0), d and m.
    #[inline(always)]
    unsafe fn unpack<const K: u8>(b: *const u8) -> (__m256i, f32, f32) {
        let h = |o: usize| f16((b.add(o) as *const u16).read_unaligned());
        match K {
            Q4_0 => (_mm256_sub_epi8(nibbles(b.add(2)), _mm256_set1_epi8(8)), h(0), 0.0),
            Q4_1 => (nibbles(b.add(4)), h(0), h(2)),
            Q5_0 => {
                let q = _mm256_or_si256(nibbles(b.add(6)), high_bits(b.add(2)));
                (_mm256_sub_epi8(q, _mm256_set1_epi8(16)), h(0), 0.0)
            }
            Q5_1 => (_mm256_or_si256(nibbles(b.add(8)), high_bits(b.add(4))), h(0), h(2)),
            _ => (_mm256_loadu_si256(b.add(2) as *const __m256i), h(0), 0.0),
        }
    }

    /// Tokens t0..t0 + N of the row (N <= 8).
    #[inline(always)]
    unsafe fn row_n<const K: u8, const N: usize, const VNNI: bool>(
        row: &[u8],
        ts: usize,
        a: &LegacyActs,
        t0: usize,
        out: &mut [f32],
    ) {
        let signed = matches!(K, Q4_0 | Q5_0 | Q8_0);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut summs = _mm256_setzero_ps();
        assert!(row.len() >= a.nb * ts && a.nb * a.stride + 8 <= a.d.len().min(a.s.len()) && t0 + N <= a.stride);
        // the row two ahead (rows of a task are consecutive in memory), block by block: the hardware prefetcher
        // alone left the first use of each weight block waiting on memory (~9% of the kernel at 8 tokens); a
        // prefetch past the tensor's end does not fault
        let ahead = row.as_ptr().wrapping_add(2 * row.len());
        for i in 0..a.nb {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(i * ts) as *const i8);
            let (w, dx, m) = unpack::<K>(row.as_ptr().add(i * ts));
            let k = i * a.stride + t0;
            if matches!(K, Q4_1 | Q5_1) {
                summs = _mm256_fmadd_ps(_mm256_set1_ps(m), _mm256_loadu_ps(a.s.as_ptr().add(k)), summs);
            }
            // maddubs wants its first operand unsigned: |w| and y carrying w's sign for the signed types
            let aw = if signed { _mm256_sign_epi8(w, w) } else { w };
            // several tokens: their d_x * d_y made by one vector multiply, each token's lane broadcast by a permute
            // (one instruction, no load or scalar multiply per token); the same f32 products as one at a time
            let ddv = if N > 1 {
                _mm256_mul_ps(_mm256_set1_ps(dx), _mm256_loadu_ps(a.d.as_ptr().add(k)))
            } else {
                _mm256_setzero_ps()
            };
            for (u, acc) in acc.iter_mut().enumerate() {
                let y = _mm256_loadu_si256(a.qs.as_ptr().add(k + u) as *const __m256i);
                let y = if signed { _mm256_sign_epi8(y, w) } else { y };
                // lane L = the 4 products of elements 4L..4L + 3, exact either way
                let lanes = if VNNI {
                    _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, y)
                } else {
                    _mm256_madd_epi16(_mm256_maddubs_epi16(aw, y), ones)
                };
                // (one token: its d_x * d_y made as a scalar and broadcast)
                let dd = if N > 1 {
                    _mm256_permutevar8x32_ps(ddv, _mm256_set1_epi32(u as i32))
                } else {
                    _mm256_set1_ps(dx * *a.d.get_unchecked(k + u))
                };
                *acc = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(lanes), *acc);
            }
        }
        let mut sm = [0.0f32; 8];
        _mm256_storeu_ps(sm.as_mut_ptr(), summs);
        for (u, (o, acc)) in out.iter_mut().zip(acc).enumerate() {
            let mut l = [0.0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), acc);
            *o = hsum8(&l) + sm[u];
        }
    }

    #[inline(always)]
    unsafe fn row_k<const K: u8, const VNNI: bool>(row: &[u8], ts: usize, a: &LegacyActs, t0: usize, out: &mut [f32]) {
        let mut t = 0;
        while t < out.len() {
            let o = &mut out[t..];
            t += match o.len() {
                8.. => {
                    row_n::<K, 8, VNNI>(row, ts, a, t0 + t, &mut o[..8]);
                    8
                }
                4..=7 => {
                    row_n::<K, 4, VNNI>(row, ts, a, t0 + t, &mut o[..4]);
                    4
                }
                _ => {
                    row_n::<K, 1, VNNI>(row, ts, a, t0 + t, &mut o[..1]);
                    1
                }
            };
        }
    }

    #[inline(always)]
    unsafe fn row_ty<const VNNI: bool>(ty: GgmlType, row: &[u8], acts: &LegacyActs, t0: usize, out: &mut [f32]) {
        let ts = ty.type_size();
        match ty {
            GgmlType::Q4_0 => row_k::<Q4_0, VNNI>(row, ts, acts, t0, out),
            GgmlType::Q4_1 => row_k::<Q4_1, VNNI>(row, ts, acts, t0, out),
            GgmlType::Q5_0 => row_k::<Q5_0, VNNI>(row, ts, acts, t0, out),
            GgmlType::Q5_1 => row_k::<Q5_1, VNNI>(row, ts, acts, t0, out),
            GgmlType::Q8_0 => row_k::<Q8_0, VNNI>(row, ts, acts, t0, out),
            other => unreachable!("legacy_row: {other}"),
        }
    }

    /// The kernel with AVX-512 VNNI's `vpdpbusd` making each lane's 4-product sum in one instruction (the same
    /// integers as maddubs + madd).
    #[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
    unsafe fn row_vnni(ty: GgmlType, row: &[u8], acts: &LegacyActs, t0: usize, out: &mut [f32]) {
        row_ty::<true>(ty, row, acts, t0, out)
    }

    /// Whether the CPU has AVX-512 VNNI on 256-bit registers (checked once).
    pub(super) fn has_vnni() -> bool {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"))
    }

    /// One legacy weight row (VecDot kernel) times tokens `t0..t0 + out.len()` of `acts` (see `dot_legacy`).
    pub(super) fn legacy_row(ty: GgmlType, row: &[u8], acts: &LegacyActs, t0: usize, out: &mut [f32]) {
        legacy_row_with(has_vnni(), ty, row, acts, t0, out)
    }

    /// `legacy_row` with or without VNNI (`vnni` only where `has_vnni`).
    pub(super) fn legacy_row_with(vnni: bool, ty: GgmlType, row: &[u8], acts: &LegacyActs, t0: usize, out: &mut [f32]) {
        // SAFETY: AVX2 and FMA are enabled at compile time (cfg above), VNNI is used only where detected; `row_n`
        // checks that the row holds `nb` blocks and that the activation reads (8 tokens from t0 in every block)
        // stay inside the arrays.
        unsafe {
            if vnni && has_vnni() {
                row_vnni(ty, row, acts, t0, out)
            } else {
                row_ty::<false>(ty, row, acts, t0, out)
            }
        }
    }
}

/// `matmul` over a batch made of independent segments (one per sequence: `segs` holds their row counts, in
/// order, summing to the rows of x): each weight row is decoded once for the whole batch, but every segment's
/// products use the kernels `matmul` would pick for that segment alone, so a sequence's results do not depend
/// on what else is in the batch (bit for bit).
pub fn matmul_segments(ty: GgmlType, w: &[u8], n_rows: usize, n_cols: usize, x: &[f32], y: &mut [f32], segs: &[usize]) {
    use rayon::prelude::*;
    let rb = super::check_mat(ty, w, n_rows, n_cols);
    let n_tok = x.len() / n_cols;
    assert_eq!(segs.iter().sum::<usize>(), n_tok, "matmul_segments: segments cover the batch");
    let kernels: Vec<Kernel> = segs
        .iter()
        .flat_map(|&n| (0..n).map(move |t| kernel_for(ty, n_rows, n_cols, n, t)))
        .collect();
    let legacy = if kernels.iter().all(|&k| k == Kernel::VecDot) { LegacyActs::new(ty, x, n_cols) } else { None };
    if n_tok == 1 {
        if let Some(la) = &legacy {
            super::par_rows(w, rb, &mut y[..n_rows], |row, out| legacy_row(ty, row, la, 0, std::slice::from_mut(out)));
        } else {
            let acts = Acts::new(ty, x);
            super::par_rows(w, rb, &mut y[..n_rows], |row, out| *out = dot_row(ty, row, &acts, kernels[0]));
        }
        return;
    }
    let acts: Vec<Acts> = match legacy {
        Some(_) => Vec::new(),
        None => x.par_chunks_exact(n_cols).map(|xr| Acts::new(ty, xr)).collect(),
    };
    let mut yt = vec![0.0f32; n_rows * n_tok];
    yt.par_chunks_mut(super::ROWS_PER_TASK * n_tok).enumerate().for_each(|(ci, chunk)| {
        let r0 = ci * super::ROWS_PER_TASK;
        if let Some(la) = &legacy {
            // 8 tokens at a time over the task's rows, so their activations stay in L1 across the rows
            for t0 in (0..n_tok).step_by(8) {
                let t1 = (t0 + 8).min(n_tok);
                for (i, out) in chunk.chunks_exact_mut(n_tok).enumerate() {
                    legacy_row(ty, &w[(r0 + i) * rb..(r0 + i + 1) * rb], la, t0, &mut out[t0..t1]);
                }
            }
            return;
        }
        super::simd_dispatch(|| {
            let mut dec = Decoded::default();
            for (i, out) in chunk.chunks_exact_mut(n_tok).enumerate() {
                let row = &w[(r0 + i) * rb..(r0 + i + 1) * rb];
                dec.decode(ty, row);
                for ((o, a), &k) in out.iter_mut().zip(&acts).zip(&kernels) {
                    *o = dot_blocks(ty, row, &dec, a, k);
                }
            }
        })
    });
    super::untranspose(&yt, y, n_rows, n_tok);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx_quantizer_rounds_half_to_even_with_127_over_amax() {
        // amax = 127 -> id = 1: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2 (the reference rounds half away: 1, 2, -3)
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = 1.5;
        x[3] = -2.5;
        let b = q8_1_block_avx(&x);
        assert_eq!(&b.qs[..4], &[127, 0, 2, -2]);
        assert_eq!(f16(b.d), 1.0);
        assert_eq!(f16(b.s), 127.0); // d * (127 + 0 + 2 - 2)
    }

    #[test]
    fn legacy_dot_matches_integer_formula() {
        // every element pair contributes q_x * q_y exactly: with d = 1 the result is the integer dot product
        let x: Vec<f32> = (0..64).map(|i| ((i * 7) % 15) as f32 - 7.0).collect();
        let mut wq = vec![0u8; GgmlType::Q8_0.row_bytes(64).unwrap() as usize];
        super::super::quantize_row(GgmlType::Q8_0, &x, &mut wq).unwrap();
        let mut wd = vec![0.0; 64];
        super::super::dequantize_row(GgmlType::Q8_0, &wq, &mut wd).unwrap();
        let acts = Acts::new(GgmlType::Q8_0, &wd);
        let got = dot_row(GgmlType::Q8_0, &wq, &acts, Kernel::VecDot);
        let want: f32 = wd.iter().map(|v| v * v).sum();
        assert!((got - want).abs() <= want * 1e-3, "{got} vs {want}");
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    #[test]
    fn legacy_row_vnni_equals_maddubs() {
        if !legacy_avx2::has_vnni() {
            eprintln!("skipped: this CPU has no AVX-512 VNNI");
            return;
        }
        let n_cols = 96;
        let mut rng = crate::rng::SplitMix64(7);
        let x = rng.vec_f32(11 * n_cols);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0] {
            // random quants, d (and m) small f16 values
            let mut row: Vec<u8> = (0..ty.row_bytes(n_cols as u64).unwrap()).map(|_| rng.next_u64() as u8).collect();
            for blk in row.chunks_exact_mut(ty.type_size()) {
                let [d, m] = rng.two_f32();
                blk[..2].copy_from_slice(&f16_bits(d * 0.01).to_le_bytes());
                if matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1) {
                    blk[2..4].copy_from_slice(&f16_bits(m * 0.01).to_le_bytes());
                }
            }
            let acts = LegacyActs::new(ty, &x, n_cols).unwrap();
            let (mut a, mut b) = (vec![0.0f32; 11], vec![0.0f32; 11]);
            legacy_avx2::legacy_row_with(false, ty, &row, &acts, 0, &mut a);
            legacy_avx2::legacy_row_with(true, ty, &row, &acts, 0, &mut b);
            let want: Vec<f32> =
                x.chunks_exact(n_cols).map(|xr| dot_row(ty, &row, &Acts::new(ty, xr), Kernel::VecDot)).collect();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&want), "{ty} without VNNI");
            assert_eq!(bits(&b), bits(&want), "{ty} with VNNI");
        }
    }

    #[test]
    fn hsum8_order() {
        // 1e8 + 1 - 1e8 depends on the order: lanes 0 and 4 are added first
        let a = [1e8, 0.0, 0.0, 0.0, -1e8, 1.0, 0.0, 0.0];
        assert_eq!(hsum8(&a), 1.0);
    }
}
