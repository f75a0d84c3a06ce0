//! Token embedding: the rows of the (quantized) embedding matrix picked by token ids, dequantized to f32.
//! CPU twin: `host::backend::cpu::embedding_row` (= `quant::dequantize_row` of row `id`).

use super::dequant::dequantize_unit;
use super::QType;
use crate::common::*;
use crate::quant::types::*;

/// out[t, :] = dequantize(w[ids[t], :]) for t < n_tok. Ids are read from device memory, so a captured decode
/// step embeds whatever token the previous step chose.
///
/// Launch: grid = (ceil(units per row / 256), n_tok, 1), block = (256, 1, 1); `out` rows 16-byte aligned
/// (n_cols % 4 == 0). Traffic: n_tok rows of the weight read, 4 * n_cols bytes written per token.
#[inline(always)]
unsafe fn embed<T: QType>(w: *const u8, ids: *const u32, out: *mut f32, n_cols: u32, row_bytes: u32) {
    let t = bid_y();
    let id = *ids.add(t as usize);
    let (n_blocks, n_tail) = if T::PLAIN { (n_cols / 8, n_cols % 8) } else { (n_cols / T::BS, 0) };
    let row = w.add(id as usize * row_bytes as usize);
    dequantize_unit::<T>(row, out.add(t as usize * n_cols as usize), n_blocks, n_tail, bid() * ntid() + tid())
}

macro_rules! embed_kernels {
    ($($name:ident: $ty:ty;)*) => {$(
        /// Embedding rows; see [`embed`] for the launch shape and traffic.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(w: *const u8, ids: *const u32, out: *mut f32, n_cols: u32,
                                                row_bytes: u32) {
            crate::common::pdl_enter();
            embed::<$ty>(w, ids, out, n_cols, row_bytes)
        }
    )*};
}

embed_kernels! {
    embed_f32: F32;
    embed_f16: F16;
    embed_bf16: BF16;
    embed_q4_0: Q4_0;
    embed_q4_1: Q4_1;
    embed_q5_0: Q5_0;
    embed_q5_1: Q5_1;
    embed_q8_0: Q8_0;
    embed_q2_k: Q2K;
    embed_q3_k: Q3K;
    embed_q4_k: Q4K;
    embed_q5_k: Q5K;
    embed_q6_k: Q6K;
    embed_q8_k: Q8K;
}
