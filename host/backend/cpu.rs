//! CPU reference ops over slices: the oracle every GPU kernel is tested against. Each op has a CUDA twin of the
//! same name in `gpu-kernels/` (launched from `backend::cuda`).

/// 1 / sqrt(mean(x^2) + eps) as ggml computes it: f32 squares summed in f64, the mean rounded to f32.
#[inline]
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss = x.iter().map(|&v| (v * v) as f64).sum::<f64>() / x.len() as f64;
    1.0 / (ss as f32 + eps).sqrt()
}

/// RMSNorm of each row: out[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, i]^2) + eps).
/// x, out: (n_rows, dim); w: (dim,).
pub fn rmsnorm(out: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    for (o, xr) in out.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
        let scale = rms_scale(xr, eps);
        for ((o, &xv), &wv) in o.iter_mut().zip(xr).zip(w) {
            *o = wv * (xv * scale);
        }
    }
}

/// Element-wise sum: out[i] = a[i] + b[i].
pub fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// Element-wise product: out[i] = a[i] * b[i].
pub fn mul(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * y;
    }
}

/// Softmax of each row in place: x[r, i] = exp(x[r, i] - max_r) / sum_j exp(x[r, j] - max_r). x: (n_rows, n).
pub fn softmax_rows(x: &mut [f32], n: usize) {
    for row in x.chunks_exact_mut(n) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64; // f64: the reference must not lose digits over a 262k vocabulary
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v as f64;
        }
        let inv = (1.0 / sum) as f32;
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Embedding lookup: one row of a (possibly quantized) embedding matrix, dequantized into `out` (dim,).
pub fn embedding_row(ty: crate::gguf::GgmlType, row: &[u8], out: &mut [f32]) -> crate::Result<()> {
    crate::quant::dequantize_row(ty, row, out)
}

/// In-place RMSNorm of each row: x[r, i] = w[i] * x[r, i] / sqrt(mean_i(x[r, i]^2) + eps). x: (n_rows, dim).
pub fn rmsnorm_inplace(x: &mut [f32], w: &[f32], dim: usize, eps: f32) {
    for xr in x.chunks_exact_mut(dim) {
        let scale = rms_scale(xr, eps);
        for (xv, &wv) in xr.iter_mut().zip(w) {
            *xv = wv * (*xv * scale);
        }
    }
}

/// In-place sum: x[i] += y[i].
pub fn add_inplace(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Adds a bias to each row: x[r, i] += b[i]. x: (n_rows, b.len()).
pub fn add_bias(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        add_inplace(row, b);
    }
}

/// Scales in place: x[i] *= s.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// Soft-capping in place (Gemma): x[i] = cap * tanh(x[i] / cap).
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

/// SwiGLU gating: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)).
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// GELU (tanh approximation) gating: out[i] = gelu(gate[i]) * up[i],
/// gelu(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))).
pub fn gelu_tanh_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let t = (SQRT_2_OVER_PI * g * (1.0 + 0.044715 * g * g)).tanh();
        *o = 0.5 * g * (1.0 + t) * u;
    }
}

/// How RoPE pairs the dimensions of a head (`config::RopeStyle` as the op sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopePairing {
    /// (2i, 2i + 1): llama.
    Normal,
    /// (i, i + rope_dim / 2): NeoX, qwen2, gemma3.
    Neox,
}

/// Rotary position embedding parameters of one layer.
#[derive(Debug, Clone, Copy)]
pub struct RopeParams<'a> {
    pub head_dim: usize,
    /// Rotated dimensions at the start of each head (<= head_dim); the rest pass through.
    pub rope_dim: usize,
    pub theta_base: f32,
    /// Positions are multiplied by this (1 / linear scaling factor).
    pub freq_scale: f32,
    pub pairing: RopePairing,
    /// Per-pair divisors of the frequency (`rope_freqs.weight`, Llama 3.1), rope_dim / 2 of them.
    pub freq_factors: Option<&'a [f32]>,
    /// cos and sin are multiplied by this (ggml's `attn_factor`; Phi-3 LongRoPE's attention factor), else 1.
    pub mscale: f32,
}

/// RoPE in place over `n_tok` rows of `n_heads` heads: row t is at position `pos0 + t`.
/// Pair i of a head is rotated by the angle theta_i = freq_scale * pos * base^(-2i / rope_dim) / factor_i.
/// x: (n_tok, n_heads * head_dim).
pub fn rope(x: &mut [f32], n_heads: usize, pos0: usize, p: &RopeParams) {
    rope_with(x, n_heads, pos0, p, |x0, x1, cos, sin| {
        (x0 * cos - x1 * sin, x0 * sin + x1 * cos)
    });
}

/// `rope` with the rotation `rotate(x0, x1, cos, sin) -> (x0', x1')` of each pair.
#[inline(always)]
fn rope_with(
    x: &mut [f32],
    n_heads: usize,
    pos0: usize,
    p: &RopeParams,
    rotate: impl Fn(f32, f32, f32, f32) -> (f32, f32),
) {
    let half = p.rope_dim / 2;
    let row_len = n_heads * p.head_dim;
    let mut cs = vec![(0.0f32, 0.0f32); half];
    for (t, row) in x.chunks_exact_mut(row_len).enumerate() {
        rope_cos_sin(pos0 + t, p, &mut cs);
        for head in row.chunks_exact_mut(p.head_dim) {
            for (i, &(cos, sin)) in cs.iter().enumerate() {
                let (a, b) = match p.pairing {
                    RopePairing::Normal => (2 * i, 2 * i + 1),
                    RopePairing::Neox => (i, i + half),
                };
                (head[a], head[b]) = rotate(head[a], head[b], cos, sin);
            }
        }
    }
}

/// (cos, sin) of the rope_dim / 2 angles of position `pos`: theta_i = freq_scale * pos * base^(-2i/rope_dim) /
/// factor_i. llama.cpp (ggml) computes base^(-2i/d) by repeated multiplication in f32; doing the same keeps
/// greedy decoding closer to it.
pub fn rope_cos_sin(pos: usize, p: &RopeParams, cs: &mut [(f32, f32)]) {
    let theta_scale = p.theta_base.powf(-2.0 / p.rope_dim as f32);
    let mut theta = pos as f32;
    for (i, c) in cs.iter_mut().enumerate() {
        let ff = p.freq_factors.map_or(1.0, |f| f[i]);
        let angle = p.freq_scale * (theta / ff);
        *c = (angle.cos() * p.mscale, angle.sin() * p.mscale);
        theta *= theta_scale;
    }
}

/// The angles of `rope` for positions 0..n_pos as two (n_pos, rope_dim / 2) tables, cos and sin: the GPU
/// rotates by exactly the CPU's angles.
pub fn rope_table(n_pos: usize, p: &RopeParams) -> (Vec<f32>, Vec<f32>) {
    let half = p.rope_dim / 2;
    let (mut cos, mut sin) = (
        Vec::with_capacity(n_pos * half),
        Vec::with_capacity(n_pos * half),
    );
    let mut cs = vec![(0.0f32, 0.0f32); half];
    for pos in 0..n_pos {
        rope_cos_sin(pos, p, &mut cs);
        cos.extend(cs.iter().map(|c| c.0));
        sin.extend(cs.iter().map(|c| c.1));
    }
    (cos, sin)
}

/// An element of the KV cache: f32 or f16, read as f32.
pub trait KvElem: Copy + Send + Sync + 'static {
    fn from_f32(v: f32) -> Self;
    fn to_f32(self) -> f32;
}

impl KvElem for f32 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl KvElem for half::f16 {
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// Keys or values of a cache read by position: row j holds position j's n_kv_heads * head_dim(_v) elements.
pub trait KvRows<T>: Sync {
    /// Positions that can be read.
    fn n_pos(&self) -> usize;
    fn row(&self, j: usize) -> &[T];
}

/// A contiguous cache: position j at data[j * width..].
pub struct Contig<'a, T> {
    pub data: &'a [T],
    pub width: usize,
}

impl<'a, T> Contig<'a, T> {
    pub fn keys(data: &'a [T], p: &AttnParams) -> Self {
        Contig { data, width: p.n_kv_heads * p.head_dim }
    }
    pub fn values(data: &'a [T], p: &AttnParams) -> Self {
        Contig { data, width: p.n_kv_heads * p.head_dim_v }
    }
}

impl<T: Sync> KvRows<T> for Contig<'_, T> {
    fn n_pos(&self) -> usize {
        self.data.len() / self.width
    }
    #[inline(always)]
    fn row(&self, j: usize) -> &[T] {
        &self.data[j * self.width..][..self.width]
    }
}

/// A paged cache: position j in page pages[j / page_size], slot j % page_size, of a pool of rows of `width`.
pub struct Paged<'a, T> {
    pub data: &'a [T],
    pub pages: &'a [u32],
    pub page_size: usize,
    pub width: usize,
    pub n_pos: usize,
}

impl<T: Sync> KvRows<T> for Paged<'_, T> {
    fn n_pos(&self) -> usize {
        self.n_pos
    }
    #[inline(always)]
    fn row(&self, j: usize) -> &[T] {
        let slot = self.pages[j / self.page_size] as usize * self.page_size + j % self.page_size;
        &self.data[slot * self.width..][..self.width]
    }
}

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnParams {
    /// Query rows; row t is at position `pos0 + t`.
    pub n_tok: usize,
    pub pos0: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    /// Multiplies q.k before the softmax.
    pub scale: f32,
    /// Sliding window: a query at position p sees keys at positions > p - window (None: all of them).
    pub window: Option<usize>,
    /// llama.cpp's numerics: an f16 cache is attended as ggml's CPU flash attention does (`attention_ggml`);
    /// `attention` rounds q and the probabilities to the cache's element type. Off: exact f32 products.
    pub round_like_cache: bool,
}

/// Causal grouped-query attention over cached keys and values, parallel over (token, head).
/// Query head h reads KV head h / (n_heads / n_kv_heads). Keys/values at positions 0..pos0 + n_tok must be in
/// the cache.
/// out: (n_tok, n_heads * head_dim_v); q: (n_tok, n_heads * head_dim);
/// k: (positions, n_kv_heads * head_dim); v: (positions, n_kv_heads * head_dim_v).
pub fn attention<T: KvElem>(out: &mut [f32], q: &[f32], k: &[T], v: &[T], p: &AttnParams) {
    let (kr, vr) = (Contig::keys(k, p), Contig::values(v, p));
    attention_rows(out, q, &kr, &vr, p);
}

/// `attention` over keys and values read by position (`KvRows`: a contiguous cache or pages).
pub fn attention_rows<T: KvElem>(out: &mut [f32], q: &[f32], k: &impl KvRows<T>, v: &impl KvRows<T>, p: &AttnParams) {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let group = p.n_heads / p.n_kv_heads;
    let one_head = |idx: usize, o: &mut [f32], scores: &mut Vec<f32>| {
        let (t, h) = (idx / p.n_heads, idx % p.n_heads);
        let kvh = h / group;
        let pos = p.pos0 + t;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        // llama.cpp multiplies the f16 cache with q, and with the probabilities, converted to f16 (ggml's
        // vec_dot_type of F16); rounding them the same way keeps greedy decoding on llama.cpp's tokens. For an
        // f32 cache the rounding is the identity.
        let round = |x: f32| {
            if p.round_like_cache {
                T::from_f32(x).to_f32()
            } else {
                x
            }
        };
        let mut qbuf = [0.0f32; 512];
        let qh = &mut qbuf[..hd];
        for (d, &x) in qh.iter_mut().zip(&q[(t * p.n_heads + h) * hd..][..hd]) {
            *d = round(x);
        }
        let qh = &*qh;
        scores.clear();
        let mut max = f32::NEG_INFINITY;
        for j in first..=pos {
            let kr = &k.row(j)[kvh * hd..][..hd];
            let s = qh
                .iter()
                .zip(kr)
                .map(|(&a, &b)| a * b.to_f32())
                .sum::<f32>()
                * p.scale;
            max = max.max(s);
            scores.push(s);
        }
        let mut sum = 0.0f32;
        for s in scores.iter_mut() {
            *s = (*s - max).exp();
            sum += *s;
        }
        let inv = 1.0 / sum;
        o.fill(0.0);
        for (j, &s) in (first..=pos).zip(scores.iter()) {
            let vr = &v.row(j)[kvh * hdv..][..hdv];
            let w = round(s * inv);
            for (ov, &vv) in o.iter_mut().zip(vr) {
                *ov += w * vv.to_f32();
            }
        }
    };
    each_head(out, q.len(), k.n_pos(), v.n_pos(), p, one_head);
}

/// Panics unless the keys (`k_pos` positions) and values (`v_pos`) hold every position the batch attends to.
fn assert_cache_holds(k_pos: usize, v_pos: usize, p: &AttnParams) {
    let n_kv = p.pos0 + p.n_tok;
    assert!(k_pos >= n_kv && v_pos >= n_kv, "attention over {n_kv} positions, the cache holds {k_pos}");
}

/// Checks that the buffers of an attention call hold the shapes of `p`, then runs `one_head(idx, out_row, scratch)`
/// for every (token, head) output row idx = token * n_heads + head (`each_item` with items of one head).
fn each_head(
    out: &mut [f32],
    q_len: usize,
    k_pos: usize,
    v_pos: usize,
    p: &AttnParams,
    one_head: impl Fn(usize, &mut [f32], &mut Vec<f32>) + Sync,
) {
    each_item(out, q_len, k_pos, v_pos, p, 1, one_head)
}

/// Checks that the buffers of an attention call hold the shapes of `p`, then runs `one(item, out_rows, scratch)`
/// for every item of `heads` consecutive heads of one token (`heads` divides n_heads; item i holds the output rows
/// i * heads .. (i + 1) * heads, row = token * n_heads + head): serially when the call is small, else in parallel
/// tasks of about 4 heads, each task with its own scratch; AVX2-compiled where the CPU has it.
fn each_item<S: Default>(
    out: &mut [f32],
    q_len: usize,
    k_pos: usize,
    v_pos: usize,
    p: &AttnParams,
    heads: usize,
    one: impl Fn(usize, &mut [f32], &mut S) + Sync,
) {
    use rayon::prelude::*;
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let n_kv = p.pos0 + p.n_tok;
    assert!(q_len >= p.n_tok * p.n_heads * hd && out.len() >= p.n_tok * p.n_heads * hdv);
    assert!(heads > 0 && p.n_heads.is_multiple_of(heads), "items of {heads} of {} heads", p.n_heads);
    assert_cache_holds(k_pos, v_pos, p);
    let out = &mut out[..p.n_tok * p.n_heads * hdv];
    let item = heads * hdv;
    if p.n_tok * p.n_heads * n_kv < 4096 {
        crate::quant::simd_dispatch(|| {
            let mut scratch = S::default();
            for (i, o) in out.chunks_exact_mut(item).enumerate() {
                one(i, o, &mut scratch);
            }
        })
    } else {
        let per_task = (4 / heads).max(1);
        out.par_chunks_mut(item * per_task).enumerate().for_each(|(ci, chunk)| {
            crate::quant::simd_dispatch(|| {
                let mut scratch = S::default();
                for (i, o) in chunk.chunks_exact_mut(item).enumerate() {
                    one(ci * per_task + i, o, &mut scratch);
                }
            })
        });
    }
}

// ----------------------------------------------------------------------------
// llama.cpp's CPU numerics: the same float operations, in the same order, as ggml-cpu's portable x86 build
// (AVX2 + FMA + F16C). The model's llama-rounding mode uses these; the functions above stay the exact reference.
// ----------------------------------------------------------------------------

/// ggml's vectorised `ggml_v_expf` (AVX2), one lane: exp(x) within 1.5 ulp, bit-identical to ggml's lanes.
/// Used by its SwiGLU and by the softmax of its tiled flash attention.
pub fn v_expf(x: f32) -> f32 {
    let c = |bits: u32| f32::from_bits(bits);
    let r = c(0x4b40_0000); // 0x1.8p23
    let z = x.mul_add(c(0x3fb8_aa3b), r); // x * log2(e) + r
    let n = z - r;
    let b = (-n).mul_add(c(0x35bf_be8e), (-n).mul_add(c(0x3f31_7200), x));
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1.0f32.to_bits()));
    let u = b * b;
    let j = c(0x3c07_2010)
        .mul_add(b, c(0x3d2b_9f17))
        .mul_add(u, c(0x3e2a_af33).mul_add(b, c(0x3eff_fedb)))
        .mul_add(u, c(0x3f7f_fff6) * b);
    if n.abs() <= 126.0 {
        return j.mul_add(k, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7f00_0000));
    let s2 = f32::from_bits(e.wrapping_sub(g));
    if n.abs() > 192.0 {
        s1 * s1
    } else {
        s2.mul_add(j, s2) * s1
    }
}

/// ggml `ggml_vec_swiglu_f32` (AVX2): out[i] = x / (1 + v_expf(0 - x)) * up[i] in groups of 8, the rest with libm
/// expf.
pub fn swiglu_ggml(out: &mut [f32], gate: &[f32], up: &[f32]) {
    let n8 = out.len() & !7;
    for (i, ((o, &g), &u)) in out.iter_mut().zip(gate).zip(up).enumerate() {
        let e = if i < n8 { v_expf(0.0 - g) } else { (-g).exp() };
        *o = g / (1.0 + e) * u;
    }
}

/// ggml's GELU table (`ggml_table_gelu_f16`): gelu_tanh of every f16 value, rounded to f16.
fn gelu_table() -> &'static [u16] {
    static TABLE: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        (0..=u16::MAX)
            .map(|b| {
                let x = half::f16::from_bits(b).to_f32();
                // ggml's compiler fuses 1 + 0.044715 x x into one fma when it fills this table
                let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (0.044715 * x).mul_add(x, 1.0)).tanh());
                half::f16::from_f32(y).to_bits()
            })
            .collect()
    })
}

/// ggml `ggml_vec_geglu_f32` with its f16 GELU table: out[i] = table[f16(g)] * up[i]; g <= -10 -> 0, g >= 10 -> g.
pub fn geglu_ggml(out: &mut [f32], gate: &[f32], up: &[f32]) {
    let t = gelu_table();
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = if g <= -10.0 {
            0.0
        } else if g >= 10.0 {
            g * u
        } else {
            half::f16::from_bits(t[half::f16::from_f32(g).to_bits() as usize]).to_f32() * u
        };
    }
}

/// `rope` with ggml's operations: the compiler fuses its rotation into fma(x0, cos, -(x1 * sin)) and
/// fma(x0, sin, x1 * cos) (checked against ggml's output bit for bit).
pub fn rope_ggml(x: &mut [f32], n_heads: usize, pos0: usize, p: &RopeParams) {
    rope_with(x, n_heads, pos0, p, |x0, x1, cos, sin| {
        (x0.mul_add(cos, -(x1 * sin)), x0.mul_add(sin, x1 * cos))
    });
}

/// Query rows from which ggml's flash attention takes its tiled path (`GGML_FA_TILE_Q`); its KV tile width.
const FA_TILE_Q: usize = 64;
const FA_TILE_KV: usize = 64;
/// llama.cpp pads the attended cache length to a multiple of 256 (`llama_kv_cache::get_n_kv`); from 512 padded
/// keys a one-query flash attention splits the keys into one chunk per thread (ggml's split-KV path).
const FA_KV_PAD: usize = 256;
const FA_SPLIT_KV_MIN: usize = 512;
/// The thread count whose split-KV chunks are mirrored: llama.cpp's default (`GGML_DEFAULT_N_THREADS`), which
/// `llama-simple`, the reference generator, runs with.
const GGML_THREADS: usize = 4;

/// One key of ggml's online softmax: a score above the running max `m` becomes the max, and the accumulated V sum
/// is to be scaled by `ms` = e^(old - new max) (the new key's weight `vs` is then 1); else `ms` = 1 and `vs` =
/// e^(score - m). Returns (ms, vs).
fn online_softmax_step(m: &mut f32, score: f32) -> (f32, f32) {
    if score > *m {
        let old = std::mem::replace(m, score);
        ((old - score).exp(), 1.0)
    } else {
        (1.0, (score - *m).exp())
    }
}

/// v rounded to f16 (round to nearest even), as f32.
#[inline(always)]
fn round_f16(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

/// The end of ggml's softmax: the V sum times 1 / sum (0 where no key was attended).
#[inline(always)]
fn divide_by_sum(vkq: &mut [f32], s: f32) {
    let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
    for x in vkq.iter_mut() {
        *x *= inv;
    }
}

/// ggml's f16 V sum of one query over keys 0..ms.len(), for every element of x (f16 values held as f32, starting
/// as given): per key j, x = f16(x * ms[j]) where ms[j] != 1 (the running max moved), then
/// x = f16(fma(v_j, vs[j], x)) with v_j = vrow(j) (x.len() elements). Elements are independent, so x is kept in
/// registers over all the keys, 64, 32 or 8 elements at a time where AVX2, FMA and F16C are compiled in; each
/// element sees the same operations in the same order as ggml's loop over keys.
fn vsum_f16<'a>(x: &mut [f32], vrow: impl Fn(usize) -> &'a [half::f16], ms: &[f32], vs: &[f32]) {
    assert_eq!(ms.len(), vs.len());
    let n = x.len();
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    {
        // SAFETY: AVX2, FMA and F16C are enabled at compile time (cfg above); `vsum_block` reads elements
        // done..done + 8B of x and of every row, which it checks hold x.len() >= done + 8B elements.
        unsafe {
            while n - done >= 64 {
                vsum_block::<8>(x, done, &vrow, ms, vs);
                done += 64;
            }
            while n - done >= 32 {
                vsum_block::<4>(x, done, &vrow, ms, vs);
                done += 32;
            }
            while n - done >= 8 {
                vsum_block::<1>(x, done, &vrow, ms, vs);
                done += 8;
            }
        }
    }
    if done == n {
        return; // no row is read again for an empty tail
    }
    for (j, (&m, &s)) in ms.iter().zip(vs).enumerate() {
        let vr = &vrow(j)[done..n];
        for (xv, &vv) in x[done..].iter_mut().zip(vr) {
            if m != 1.0 {
                *xv = round_f16(*xv * m);
            }
            *xv = round_f16(vv.to_f32().mul_add(s, *xv));
        }
    }
}

/// `vsum_f16` on the 8B elements of x from `off`, in B registers.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
#[inline(always)]
unsafe fn vsum_block<'a, const B: usize>(
    x: &mut [f32],
    off: usize,
    vrow: &impl Fn(usize) -> &'a [half::f16],
    ms: &[f32],
    vs: &[f32],
) {
    use std::arch::x86_64::*;
    let end = off + 8 * B;
    assert!(x.len() >= end);
    let round = |v: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
    let mut acc = [_mm256_setzero_ps(); B];
    for (b, a) in acc.iter_mut().enumerate() {
        *a = _mm256_loadu_ps(x.as_ptr().add(off + 8 * b));
    }
    for (j, (&m, &s)) in ms.iter().zip(vs).enumerate() {
        let vr = vrow(j);
        assert!(vr.len() >= end);
        if m != 1.0 {
            let mv = _mm256_set1_ps(m);
            for a in acc.iter_mut() {
                *a = round(_mm256_mul_ps(*a, mv));
            }
        }
        let sv = _mm256_set1_ps(s);
        for (b, a) in acc.iter_mut().enumerate() {
            let vv = _mm256_cvtph_ps(_mm_loadu_si128(vr.as_ptr().add(off + 8 * b) as *const __m128i));
            *a = round(_mm256_fmadd_ps(vv, sv, *a));
        }
    }
    for (b, a) in acc.iter().enumerate() {
        _mm256_storeu_ps(x.as_mut_ptr().add(off + 8 * b), *a);
    }
}

/// Attention over an f16 cache as ggml-cpu's `flash_attn_ext` computes it (llama.cpp's default on the CPU).
/// Batches of fewer than 64 queries (decode included), one query at a time: q rounded to f16, q.k by
/// `ggml_vec_dot_f16`, online softmax with libm expf and the V sum accumulated in f16 (rounded after every
/// step), divided by the sum at the end. One query over 512 or more padded keys takes ggml's split-KV path: the same
/// per chunk of keys, the chunks merged as its compiler contracts the merge (v = fma(v, s_old, v_chunk * s_new)).
/// Batches of 64 or more (tiled path): q in f32, q.k as one fma chain,
/// softmax per 64-key tile with `v_expf`, V accumulated in f32 by fma chains. Shapes as `attention`.
pub fn attention_ggml(
    out: &mut [f32],
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    p: &AttnParams,
) {
    let (kr, vr) = (Contig::keys(k, p), Contig::values(v, p));
    attention_ggml_rows(out, q, &kr, &vr, p);
}

/// The keys and values of the tiled path in f32, converted once per call rather than once per query: each KV
/// head's keys in groups of 8 positions with element d of the 8 keys side by side (`kt`, zero past the last
/// position), so that one vector fma advances 8 keys' dot products; the values row by row (`vf`, as the cache).
struct TileKv {
    kt: Vec<f32>,
    vf: Vec<f32>,
    n_grp: usize,
    hd: usize,
    hdv: usize,
    n_kv_heads: usize,
}

impl TileKv {
    fn new(k: &impl KvRows<half::f16>, v: &impl KvRows<half::f16>, p: &AttnParams) -> TileKv {
        use rayon::prelude::*;
        let (hd, hdv, nkv) = (p.head_dim, p.head_dim_v, p.n_kv_heads);
        let n = p.pos0 + p.n_tok;
        assert_cache_holds(k.n_pos(), v.n_pos(), p);
        let n_grp = n.div_ceil(8);
        let mut kt = vec![0.0f32; nkv * n_grp * hd * 8];
        kt.par_chunks_mut(hd * 8).enumerate().for_each(|(i, c)| {
            let (kvh, g) = (i / n_grp, i % n_grp);
            for u in 0..8.min(n - g * 8) {
                for (d, x) in k.row(g * 8 + u)[kvh * hd..][..hd].iter().enumerate() {
                    c[d * 8 + u] = x.to_f32();
                }
            }
        });
        let mut vf = vec![0.0f32; n * nkv * hdv];
        vf.par_chunks_mut(nkv * hdv).enumerate().for_each(|(j, c)| {
            for (o, x) in c.iter_mut().zip(v.row(j)) {
                *o = x.to_f32();
            }
        });
        TileKv { kt, vf, n_grp, hd, hdv, n_kv_heads: nkv }
    }

    /// q . k of keys 8g..8g + 7 of KV head `kvh`, each lane one fma chain over d in order (0 past the last group).
    #[inline(always)]
    fn dot8(&self, kvh: usize, g: usize, q: &[f32]) -> [f32; 8] {
        let mut acc = [0.0f32; 8];
        if g < self.n_grp {
            for (kd, &qv) in self.kt[(kvh * self.n_grp + g) * self.hd * 8..][..self.hd * 8].chunks_exact(8).zip(q) {
                for (a, &kv) in acc.iter_mut().zip(kd) {
                    *a = kv.mul_add(qv, *a);
                }
            }
        }
        acc
    }

    /// The value row of position j, KV head `kvh`.
    #[inline(always)]
    fn value(&self, j: usize, kvh: usize) -> &[f32] {
        &self.vf[(j * self.n_kv_heads + kvh) * self.hdv..][..self.hdv]
    }
}

/// Scratch of one task of `attention_ggml_grouped`.
#[derive(Default)]
struct GroupScratch {
    /// The group's queries rounded to f16, head after head.
    q16: Vec<f32>,
    /// One chunk's scores, head after head.
    scores: Vec<f32>,
    /// One head's online-softmax factors per key of the chunk (`online_softmax_step`).
    ms: Vec<f32>,
    vs: Vec<f32>,
    /// Per head: the chunk's (running max, sum).
    stats: Vec<(f32, f32)>,
    /// Split-KV: one chunk's unnormalised V sums, head after head.
    part: Vec<f32>,
    /// Split-KV: per head, the (max, sum) merged so far.
    merged: Vec<(f32, f32)>,
}

/// ggml's `one_chunk` over the keys j0..j1 for every query head of KV head `kvh` (queries `sc.q16`): the scores
/// (`dot_f16_row`, scaled), then per head the online softmax factors in key order and the V sum held in f16
/// (`vsum_f16`) into vkq (the heads' rows, left unnormalised), with (running max, sum) per head in `sc.stats`.
#[allow(clippy::too_many_arguments)]
fn one_chunk_group(
    k: &impl KvRows<half::f16>,
    v: &impl KvRows<half::f16>,
    kvh: usize,
    p: &AttnParams,
    j0: usize,
    j1: usize,
    sc: &mut GroupScratch,
    vkq: &mut [f32],
) {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let group = p.n_heads / p.n_kv_heads;
    let n = j1.saturating_sub(j0);
    sc.scores.clear();
    sc.scores.resize(group * n, 0.0);
    for jj in 0..n {
        let kr = &k.row(j0 + jj)[kvh * hd..][..hd];
        for (g, qg) in sc.q16.chunks_exact(hd).enumerate() {
            sc.scores[g * n + jj] = crate::quant::ggml_avx2::dot_f16_row(qg, kr) * p.scale;
        }
    }
    sc.stats.clear();
    for (g, out) in vkq.chunks_exact_mut(hdv).enumerate() {
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        sc.ms.clear();
        sc.vs.clear();
        for &score in &sc.scores[g * n..][..n] {
            let (a, b) = online_softmax_step(&mut m, score);
            sc.ms.push(a);
            sc.vs.push(b);
            s = s.mul_add(a, b);
        }
        out.fill(0.0);
        vsum_f16(out, |jj| &v.row(j0 + jj)[kvh * hdv..][..hdv], &sc.ms, &sc.vs);
        sc.stats.push((m, s));
    }
}

/// `attention_ggml_rows` for batches of fewer than `FA_TILE_Q` queries (ggml's one-query path, decode included),
/// one task item per (query, KV head) serving all the query heads of its group: each key and value row is read
/// once for the group, the V sums stay in registers over the keys (`vsum_f16`), and every head's result has the
/// bits of ggml's per-head loop (the same operations in the same order per head).
fn attention_ggml_grouped(
    out: &mut [f32],
    q: &[f32],
    k: &impl KvRows<half::f16>,
    v: &impl KvRows<half::f16>,
    p: &AttnParams,
) {
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    let group = p.n_heads / p.n_kv_heads;
    let one = |item: usize, o: &mut [f32], sc: &mut GroupScratch| {
        let (t, kvh) = (item / p.n_kv_heads, item % p.n_kv_heads);
        let pos = p.pos0 + t;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        sc.q16.clear();
        sc.q16.extend(q[(t * p.n_heads + kvh * group) * hd..][..group * hd].iter().map(|&x| round_f16(x)));
        let n_pad = (pos + 1).next_multiple_of(FA_KV_PAD);
        let split = p.n_tok == 1 && n_pad >= FA_SPLIT_KV_MIN;
        if split {
            // split-KV decode: GGML_THREADS chunks of the padded cache, each softmaxed alone, then merged per head
            let chunk = n_pad.div_ceil(GGML_THREADS);
            let mut part = std::mem::take(&mut sc.part);
            part.resize(group * hdv, 0.0);
            o.fill(0.0);
            sc.merged.clear();
            sc.merged.resize(group, (f32::NEG_INFINITY, 0.0));
            for lo in (0..n_pad).step_by(chunk) {
                let hi = (lo + chunk).min(n_pad);
                one_chunk_group(k, v, kvh, p, lo.max(first), hi.min(pos + 1), sc, &mut part);
                for (g, (vkq, c)) in o.chunks_exact_mut(hdv).zip(part.chunks_exact(hdv)).enumerate() {
                    let (mc, s_c) = sc.stats[g];
                    if s_c == 0.0 {
                        continue;
                    }
                    let (m, s) = &mut sc.merged[g];
                    let m_new = m.max(mc);
                    let (so, sn) = ((*m - m_new).exp(), (mc - m_new).exp());
                    for (x, &cv) in vkq.iter_mut().zip(c) {
                        *x = x.mul_add(so, cv * sn);
                    }
                    *s = s.mul_add(so, s_c * sn);
                    *m = m_new;
                }
            }
            sc.part = part;
        } else {
            one_chunk_group(k, v, kvh, p, first, pos + 1, sc, o);
        }
        let totals = if split { &sc.merged } else { &sc.stats };
        for (vkq, &(_, s)) in o.chunks_exact_mut(hdv).zip(totals) {
            divide_by_sum(vkq, s);
        }
    };
    each_item(out, q.len(), k.n_pos(), v.n_pos(), p, group, one);
}

/// `attention_ggml` over keys and values read by position (`KvRows`: a contiguous cache or pages).
pub fn attention_ggml_rows(
    out: &mut [f32],
    q: &[f32],
    k: &impl KvRows<half::f16>,
    v: &impl KvRows<half::f16>,
    p: &AttnParams,
) {
    if p.n_tok < FA_TILE_Q {
        return attention_ggml_grouped(out, q, k, v, p);
    }
    let hd = p.head_dim;
    let group = p.n_heads / p.n_kv_heads;
    let tile_kv = TileKv::new(k, v, p);
    let one_head = |idx: usize, o: &mut [f32], buf: &mut Vec<f32>| {
        let (t, h) = (idx / p.n_heads, idx % p.n_heads);
        let kvh = h / group;
        let pos = p.pos0 + t;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let qh = &q[(t * p.n_heads + h) * hd..][..hd];
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        let vkq = o;
        vkq.fill(0.0);
        buf.resize(FA_TILE_KV, 0.0);
        let kq = &mut buf[..];
        for start in (0..=pos).step_by(FA_TILE_KV) {
            let end = (start + FA_TILE_KV).min(pos + 1);
            if end <= first {
                continue; // every key of the tile is masked for this query
            }
            // q.k of 8 keys at a time: 8 independent fma chains (one lane each), each over d in order; masked keys
            // are overwritten
            for (g, e8) in kq.chunks_exact_mut(8).enumerate() {
                let acc = tile_kv.dot8(kvh, start / 8 + g, qh);
                for (u, (e, a)) in e8.iter_mut().zip(acc).enumerate() {
                    let j = start + 8 * g + u;
                    *e = if j >= first && j <= pos { a * p.scale } else { f32::NEG_INFINITY };
                }
            }
            let tile_max = kq.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let m_new = m.max(tile_max);
            if m_new > m {
                let ms = (m - m_new).exp();
                for x in vkq.iter_mut() {
                    *x *= ms;
                }
                s *= ms;
            }
            m = m_new;
            let mut sum = 0.0f64;
            for g in kq.chunks_exact_mut(8) {
                let mut e = [0.0f32; 8];
                for (ev, x) in e.iter_mut().zip(g.iter_mut()) {
                    *ev = v_expf(*x - m_new);
                    *x = *ev;
                }
                sum += crate::quant::ggml_avx2::hsum8(&e) as f64;
            }
            s = (s as f64 + sum) as f32;
            // each vkq[d] an fma chain over the tile's keys in order
            for (i, &w) in kq.iter().enumerate() {
                let j = start + i;
                if j >= first && j <= pos {
                    for (x, &vv) in vkq.iter_mut().zip(tile_kv.value(j, kvh)) {
                        *x = vv.mul_add(w, *x);
                    }
                }
            }
        }
        divide_by_sum(vkq, s);
    };
    each_head(out, q.len(), k.n_pos(), v.n_pos(), p, one_head);
}

/// Attention over a q8_0 cache as ggml-cpu's `flash_attn_ext` computes it (its one-chunk path, the only one it
/// takes for a quantized cache: no split-KV, no tiles): q quantized to q8_0 (`quantize_row_q8_0`, AVX2), q.k by
/// `ggml_vec_dot_q8_0_q8_0`, online softmax with libm expf, V rows dequantized to f32 (q * d) and accumulated
/// in f32 by `ggml_vec_mad_f32` (fma), rescaled by `ggml_vec_scale_f32`, divided by the sum at the end. Rows hold
/// n_kv_heads * head_dim / 32 blocks (keys) and n_kv_heads * head_dim_v / 32 (values); head dims multiples of 32.
pub fn attention_q8_0_rows(
    out: &mut [f32],
    q: &[f32],
    k: &impl KvRows<crate::quant::blocks::BlockQ8_0>,
    v: &impl KvRows<crate::quant::blocks::BlockQ8_0>,
    p: &AttnParams,
) {
    use crate::quant::ggml_avx2::{dot_q8_0_q8_0, q8_0_block_avx};
    let (hd, hdv) = (p.head_dim, p.head_dim_v);
    assert!(hd.is_multiple_of(32) && hdv.is_multiple_of(32), "q8_0 cache: head dims {hd}, {hdv} must be multiples of 32");
    let group = p.n_heads / p.n_kv_heads;
    let (kb, vb) = (hd / 32, hdv / 32);
    let one_head = |idx: usize, vkq: &mut [f32], v32: &mut Vec<f32>| {
        let (t, h) = (idx / p.n_heads, idx % p.n_heads);
        let kvh = h / group;
        let pos = p.pos0 + t;
        let first = p.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let qb: Vec<_> = q[(t * p.n_heads + h) * hd..][..hd].chunks_exact(32).map(q8_0_block_avx).collect();
        v32.resize(hdv, 0.0);
        vkq.fill(0.0);
        let (mut m, mut s) = (f32::NEG_INFINITY, 0.0f32);
        for j in first..=pos {
            let score = dot_q8_0_q8_0(&k.row(j)[kvh * kb..][..kb], &qb) * p.scale;
            let (ms, vs) = online_softmax_step(&mut m, score);
            if ms != 1.0 {
                for x in vkq.iter_mut() {
                    *x *= ms;
                }
            }
            for (blk, o) in v.row(j)[kvh * vb..][..vb].iter().zip(v32.chunks_exact_mut(32)) {
                let d = half::f16::from_bits(blk.d).to_f32();
                for (x, &qv) in o.iter_mut().zip(&blk.qs) {
                    *x = qv as f32 * d;
                }
            }
            for (x, &vv) in vkq.iter_mut().zip(v32.iter()) {
                *x = vv.mul_add(vs, *x);
            }
            s = s.mul_add(ms, vs);
        }
        divide_by_sum(vkq, s);
    };
    each_head(out, q.len(), k.n_pos(), v.n_pos(), p, one_head);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        // x = [3, 3, 3, 3] -> mean square 9 -> x / 3 = 1 -> out = w
        let mut out = [0.0; 4];
        rmsnorm(&mut out, &[3.0; 4], &[1.0, 2.0, 3.0, 4.0], 4, 0.0);
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut x = [1.0, 2.0, 3.0, 1000.0, 1000.0, 0.0];
        softmax_rows(&mut x, 3);
        assert!((x[0] + x[1] + x[2] - 1.0).abs() < 1e-6);
        assert!(x[0] < x[1] && x[1] < x[2]);
        // huge equal logits must not overflow: exp is taken after subtracting the row max
        assert!((x[3] - 0.5).abs() < 1e-6 && (x[4] - 0.5).abs() < 1e-6 && x[5] == 0.0);
    }

    /// Deterministic pseudo-random values in [-1, 1), for comparisons against naive formulas.
    fn rand_vec(n: usize, seed: u64) -> Vec<f32> {
        crate::rng::SplitMix64(seed).vec_f32(n)
    }

    fn rope_params(pairing: RopePairing, head_dim: usize, rope_dim: usize) -> RopeParams<'static> {
        RopeParams {
            head_dim,
            rope_dim,
            theta_base: 10000.0,
            freq_scale: 1.0,
            pairing,
            freq_factors: None,
            mscale: 1.0,
        }
    }

    #[test]
    fn rope_hand_worked_4dim() {
        // position 1, base 10000, d = 4: theta_0 = 1, theta_1 = 10000^(-2/4) = 0.01
        let (c1, s1, c2, s2) = (1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin());
        // normal pairs (0,1), (2,3): [1,0] -> [cos 1, sin 1]; [0,1] -> [-sin 0.01, cos 0.01]
        let mut x = [1.0, 0.0, 0.0, 1.0];
        rope(&mut x, 1, 1, &rope_params(RopePairing::Normal, 4, 4));
        for (a, b) in x.iter().zip([c1, s1, -s2, c2]) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        // neox pairs (0,2), (1,3): (1,0) -> (cos 1, sin 1) at 0,2; (0,1) -> (-sin 0.01, cos 0.01) at 1,3
        let mut x = [1.0, 0.0, 0.0, 1.0];
        rope(&mut x, 1, 1, &rope_params(RopePairing::Neox, 4, 4));
        for (a, b) in x.iter().zip([c1, -s2, s1, c2]) {
            assert!((a - b).abs() < 1e-6, "{x:?}");
        }
        // position 0 is the identity
        let mut x = [0.3, -0.2, 0.5, 0.7];
        rope(&mut x, 1, 0, &rope_params(RopePairing::Normal, 4, 4));
        assert_eq!(x, [0.3, -0.2, 0.5, 0.7]);
    }

    #[test]
    fn rope_preserves_pair_norms_and_passes_unrotated_dims() {
        for pairing in [RopePairing::Normal, RopePairing::Neox] {
            let (n_heads, hd, rd, n_tok) = (3, 16, 8, 5);
            let x0 = rand_vec(n_tok * n_heads * hd, 7);
            let mut x = x0.clone();
            let mut p = rope_params(pairing, hd, rd);
            p.theta_base = 500.0;
            rope(&mut x, n_heads, 11, &p);
            for (h0, h1) in x0.chunks(hd).zip(x.chunks(hd)) {
                let n0: f32 = h0.iter().map(|v| v * v).sum();
                let n1: f32 = h1.iter().map(|v| v * v).sum();
                assert!((n0 - n1).abs() < 1e-5 * n0.max(1.0));
                assert_eq!(h0[rd..], h1[rd..], "dims past rope_dim must pass through");
                assert_ne!(h0[..rd], h1[..rd]);
            }
        }
    }

    #[test]
    fn rope_relative_position_property() {
        // q(m).k(n) depends on m - n only: rotate both by positions (m, n) and (m + 5, n + 5)
        let p = rope_params(RopePairing::Neox, 8, 8);
        let (q, k) = (rand_vec(8, 1), rand_vec(8, 2));
        let dot_at = |m: usize, n: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            rope(&mut a, 1, m, &p);
            rope(&mut b, 1, n, &p);
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(7, 3) - dot_at(12, 8)).abs() < 1e-4);
    }

    /// Naive attention in f64: for each token and head, softmax(scale q.k_j) over visible j, times v.
    fn naive_attention(q: &[f32], k: &[f32], v: &[f32], p: &AttnParams) -> Vec<f32> {
        let mut out = vec![0.0; p.n_tok * p.n_heads * p.head_dim_v];
        for t in 0..p.n_tok {
            let pos = p.pos0 + t;
            for h in 0..p.n_heads {
                let kvh = h * p.n_kv_heads / p.n_heads;
                let visible: Vec<usize> = (0..=pos)
                    .filter(|&j| p.window.is_none_or(|w| pos - j < w))
                    .collect();
                let s: Vec<f64> = visible
                    .iter()
                    .map(|&j| {
                        (0..p.head_dim)
                            .map(|d| {
                                q[(t * p.n_heads + h) * p.head_dim + d] as f64
                                    * k[(j * p.n_kv_heads + kvh) * p.head_dim + d] as f64
                            })
                            .sum::<f64>()
                            * p.scale as f64
                    })
                    .collect();
                let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..p.head_dim_v {
                    let acc: f64 = visible
                        .iter()
                        .zip(&s)
                        .map(|(&j, &sj)| {
                            (sj - m).exp() / z
                                * v[(j * p.n_kv_heads + kvh) * p.head_dim_v + d] as f64
                        })
                        .sum();
                    out[(t * p.n_heads + h) * p.head_dim_v + d] = acc as f32;
                }
            }
        }
        out
    }

    #[test]
    fn attention_with_one_position_returns_v() {
        let p = AttnParams {
            n_tok: 1,
            pos0: 0,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            head_dim_v: 8,
            scale: 0.35,
            window: None,
            round_like_cache: false,
        };
        let (q, k, v) = (rand_vec(32, 3), rand_vec(16, 4), rand_vec(16, 5));
        let mut out = vec![0.0; 32];
        attention(&mut out, &q, &k, &v, &p);
        // heads 0, 1 share kv head 0; heads 2, 3 share kv head 1
        assert_eq!(out[..8], v[..8]);
        assert_eq!(out[8..16], v[..8]);
        assert_eq!(out[16..24], v[8..]);
        assert_eq!(out[24..], v[8..]);
    }

    #[test]
    fn attention_equal_keys_average_values() {
        // identical keys -> uniform weights -> the mean of the visible values
        let p = AttnParams {
            n_tok: 1,
            pos0: 2,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 2,
            head_dim_v: 2,
            scale: 1.0,
            window: None,
            round_like_cache: false,
        };
        let k = [0.5, 0.5, 0.5, 0.5, 0.5, 0.5];
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0];
        let mut out = [0.0; 2];
        attention(&mut out, &[1.0, -2.0], &k, &v, &p);
        assert!(
            (out[0] - 3.0).abs() < 1e-6 && (out[1] - 5.0).abs() < 1e-6,
            "{out:?}"
        );
    }

    #[test]
    fn attention_matches_naive_gqa_causal_and_window() {
        for (window, pos0, n_tok) in [
            (None, 0, 7),
            (None, 5, 3),
            (Some(3), 0, 9),
            (Some(4), 6, 1),
            (None, 40, 60),
        ] {
            let p = AttnParams {
                n_tok,
                pos0,
                n_heads: 6,
                n_kv_heads: 2,
                head_dim: 16,
                head_dim_v: 8,
                scale: 0.25,
                window,
                round_like_cache: false,
            };
            let n_kv = pos0 + n_tok;
            let q = rand_vec(n_tok * 6 * 16, 10 + n_tok as u64);
            let k = rand_vec(n_kv * 2 * 16, 20);
            let v = rand_vec(n_kv * 2 * 8, 30);
            let want = naive_attention(&q, &k, &v, &p);
            let mut got = vec![0.0; want.len()];
            attention(&mut got, &q, &k, &v, &p);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-5, "window {window:?} pos0 {pos0}: max err {err}");
            // the same through an f16 cache: within f16 rounding of k and v
            let (k16, v16): (Vec<half::f16>, Vec<half::f16>) = (
                k.iter().map(|&x| half::f16::from_f32(x)).collect(),
                v.iter().map(|&x| half::f16::from_f32(x)).collect(),
            );
            attention(&mut got, &q, &k16, &v16, &p);
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 5e-3, "f16 cache: max err {err}");
        }
    }

    #[test]
    fn q8_0_attention_matches_naive_on_the_quantized_values() {
        use crate::quant::ggml_avx2::q8_0_block_avx;
        let deq = |x: &[f32]| -> (Vec<crate::quant::blocks::BlockQ8_0>, Vec<f32>) {
            let b: Vec<_> = x.chunks_exact(32).map(q8_0_block_avx).collect();
            let d = b
                .iter()
                .flat_map(|b| b.qs.iter().map(move |&q| q as f32 * half::f16::from_bits(b.d).to_f32()))
                .collect();
            (b, d)
        };
        for (window, pos0, n_tok) in [(None, 0, 5), (None, 9, 3), (Some(4), 6, 2)] {
            let p = AttnParams {
                n_tok,
                pos0,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 64,
                head_dim_v: 32,
                scale: 0.125,
                window,
                round_like_cache: true,
            };
            let n_kv = pos0 + n_tok;
            let q = rand_vec(n_tok * 4 * 64, 50 + n_tok as u64);
            let (kb, kd) = deq(&rand_vec(n_kv * 2 * 64, 51));
            let (vb, vd) = deq(&rand_vec(n_kv * 2 * 32, 52));
            // the naive reference sees q as the q8_0 blocks the kernel makes of it
            let (_, qd) = deq(&q);
            let want = naive_attention(&qd, &kd, &vd, &p);
            let mut got = vec![0.0; want.len()];
            let (kr, vr) = (Contig { data: &kb[..], width: 4 }, Contig { data: &vb[..], width: 2 });
            attention_q8_0_rows(&mut got, &q, &kr, &vr, &p);
            let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(err < 2e-6, "window {window:?} pos0 {pos0}: max err {err}");
        }
    }

    #[test]
    fn gating_functions_match_formulas() {
        let g = [-3.0f32, -0.5, 0.0, 0.5, 3.0];
        let u = [2.0f32, 1.0, 5.0, -1.0, 0.5];
        let mut out = [0.0; 5];
        swiglu(&mut out, &g, &u);
        for i in 0..5 {
            let silu = g[i] as f64 / (1.0 + (-g[i] as f64).exp());
            assert!((out[i] as f64 - silu * u[i] as f64).abs() < 1e-6);
        }
        // gelu-tanh known values: gelu(3) = 2.996363, gelu(-0.5) = -0.154286, gelu(0.5) = 0.345714
        gelu_tanh_mul(&mut out, &g, &[1.0; 5]);
        assert!((out[4] - 2.996_363).abs() < 1e-5 && (out[1] + 0.154_286).abs() < 1e-5);
        assert!((out[3] - 0.345_714).abs() < 1e-5 && out[2] == 0.0);
    }

    #[test]
    fn small_ops() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        add_bias(&mut x, &[10.0, 20.0]);
        assert_eq!(x, [11.0, 22.0, 13.0, 24.0]);
        scale(&mut x, 0.5);
        assert_eq!(x, [5.5, 11.0, 6.5, 12.0]);
        let mut y = [0.0, 100.0, -100.0];
        softcap(&mut y, 30.0);
        assert!(
            y[0] == 0.0 && (y[1] - 30.0 * (100.0f32 / 30.0).tanh()).abs() < 1e-5 && y[2] == -y[1]
        );
        let mut z = [3.0; 4];
        rmsnorm_inplace(&mut z, &[1.0, 2.0, 3.0, 4.0], 4, 0.0);
        assert_eq!(z, [1.0, 2.0, 3.0, 4.0]);
    }
}
