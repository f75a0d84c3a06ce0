//! Parameters and device state of the GPU sampler (`sample.rs`), one definition compiled into both crates: the
//! kernel crate uses it as `mod sample_params`, the host includes it with
//! `#[path = "../../gpu-kernels/src/sample_params.rs"]`. Every field is 4 or 8 bytes and the sizes are asserted,
//! so both sides agree on the layout.

/// Threads per block of every sampling kernel (the kernels assume exactly this many).
pub const SAMPLE_BLOCK: u32 = 1024;
/// Logits per block ("chunk"): 4 consecutive ids per thread.
pub const SAMPLE_CHUNK: u32 = 4 * SAMPLE_BLOCK;
/// Largest top_k selected on the device.
pub const SAMPLE_MAX_TOP_K: u32 = 1024;
/// Most chunks (blocks) of one launch: the kernels reduce one value per chunk in a single block.
pub const SAMPLE_MAX_CHUNKS: u32 = SAMPLE_BLOCK;
/// Bins of the full-vocabulary top_p histogram: `SAMPLE_BINS_PER_UNIT` bins per unit of logit below the max,
/// over [0, SAMPLE_BINS / SAMPLE_BINS_PER_UNIT) = [0, 32); the last bin also takes everything further down.
pub const SAMPLE_BINS: u32 = 4096;
pub const SAMPLE_BINS_PER_UNIT: f32 = 128.0;
/// Tokens of the top_p threshold bin that are gathered and sorted exactly.
pub const SAMPLE_GATHER_CAP: u32 = 2048;
/// Probability masses are summed in fixed point, q = round(w * 2^SAMPLE_FIX_SHIFT) with w = exp(l - max) <= 1:
/// integer sums are exact and independent of the order of the atomics, so a seed reproduces its tokens.
pub const SAMPLE_FIX_SHIFT: u32 = 40;

/// `SampleParams::flags`: logit bias active (dense `bias` buffer).
pub const SAMPLE_FLAG_BIAS: u32 = 1;
/// Penalties active (dense `counts` buffer and history ring maintained).
pub const SAMPLE_FLAG_PENALTY: u32 = 2;
/// Take the argmax of the survivors instead of drawing (temperature <= 0, or top_k == 1).
pub const SAMPLE_FLAG_GREEDY: u32 = 4;
/// typical_p < 1 (top_k path only).
pub const SAMPLE_FLAG_TYPICAL: u32 = 8;
/// top_p < 1.
pub const SAMPLE_FLAG_TOP_P: u32 = 16;
/// min_p > 0 (`ln_min_p` holds ln(min_p), computed on the host exactly as the CPU sampler does).
pub const SAMPLE_FLAG_MIN_P: u32 = 32;
/// The full-vocabulary path keeps a transformed copy of the logits in `work` (bias or penalties active).
pub const SAMPLE_FLAG_WORK: u32 = 64;
/// n_vocab is a multiple of 4: the logits are read as 16-byte vectors.
pub const SAMPLE_FLAG_VEC4: u32 = 128;

/// What the kernels need of `host::sampler::SamplingParams`, resolved on the host (read from device memory, so
/// a captured CUDA graph stays valid).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleParams {
    pub n_vocab: u32,
    /// ceil(n_vocab / SAMPLE_CHUNK)
    pub n_chunks: u32,
    /// Candidates kept by top_k (1..=SAMPLE_MAX_TOP_K) on the top_k path; 0 on the full-vocabulary path
    pub top_k: u32,
    /// SAMPLE_FLAG_*
    pub flags: u32,
    pub temperature: f32,
    pub top_p: f32,
    pub ln_min_p: f32,
    pub typical_p: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Length of the penalty history ring (>= 1 when SAMPLE_FLAG_PENALTY is set)
    pub repeat_last_n: u32,
    pub seed_lo: u32,
    pub seed_hi: u32,
    pub _pad: [u32; 2],
}
const _: () = assert!(core::mem::size_of::<SampleParams>() == 64);

/// Per-sampler device state, updated only on the device (zeroed by the host on reset).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SampleState {
    /// Samples drawn so far: the counter of the counter-based RNG
    pub step: u64,
    /// Full path: total mass being accumulated by the histogram blocks
    pub s_acc: u64,
    /// Full path: total mass sum_i q(exp(l_i - max)) of this step
    pub s_total: u64,
    /// Full path: mass of the histogram bins before the top_p threshold bin
    pub mass_before: u64,
    /// Tokens in the penalty history ring, and the slot the next one goes to
    pub hist_len: u32,
    pub hist_pos: u32,
    /// Blocks finished, for the last-block-finishes pattern of two kernels (reset by the last block)
    pub done_a: u32,
    pub done_b: u32,
    /// Full path: top_p threshold bin (SAMPLE_BINS = no cut)
    pub b_star: u32,
    /// Full path: tokens gathered from the threshold bin (may exceed SAMPLE_GATHER_CAP: then the bin is kept whole)
    pub g_count: u32,
    /// The last token chosen
    pub last_id: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SampleState>() == 64);
