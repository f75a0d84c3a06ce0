//! Launcher of the tensor-core flash attention for prompt batches (`attention_flash_d*` in
//! `gpu-kernels/src/attention.rs`): `Cuda::attention_rows` uses it for more than one query when the shape has a
//! kernel (`flash_kernel`), the grid is not a handful of long blocks (`flash_preferred`) and `HOST_GPU_OFF` does
//! not name `fa`; otherwise the split kernel `attention_f16` runs. CPU twin: `cpu::attention`, with q and the probabilities rounded to f16 as the products' operands.
//! The shared-memory layout comes from the kernels' own `flash_layout.rs`, included here by path.

use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaSlice, LaunchConfig};

use super::cuda::{cuda_err, AttnShape, Cuda, Dev, KvDev};
use crate::kv_cache::CacheType;
use crate::{Error, Result};

/// Tile geometry and shared-memory layout shared with the kernel crate.
#[path = "../../gpu-kernels/src/flash_layout.rs"]
pub mod layout;

/// The flash-attention kernel for shape `s`, if one exists: equal q/k and v head dims of 64, 96, 128 or 256 and
/// a query group (heads per KV head) of at most 64.
pub fn flash_kernel(s: &AttnShape) -> Option<&'static str> {
    if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) || s.n_heads / s.n_kv_heads > layout::ROWS as usize
        || s.head_dim != s.head_dim_v {
        return None;
    }
    Some(match s.head_dim {
        64 => "attention_flash_d64",
        96 => "attention_flash_d96",
        128 => "attention_flash_d128",
        256 => "attention_flash_d256",
        _ => return None,
    })
}

/// Query heads per block: the whole query group, so that one K/V tile serves all its heads (a block holds 64
/// (token, head) rows either way, so the number of blocks hardly depends on this).
pub fn flash_heads_per_block(s: &AttnShape) -> usize {
    s.n_heads / s.n_kv_heads.max(1)
}

/// Blocks below which a batch over a long cache goes to the split kernel instead (`flash_preferred`).
const FLASH_MIN_BLOCKS: usize = 16;
/// Keys up to which the flash kernel is taken whatever its grid (every block then has at most 16 tiles).
const FLASH_ANY_KEYS: usize = 1024;

/// Whether `Cuda::attention_rows` takes the flash kernel for shape `s` after `pos_host` cached positions: a batch
/// of more than one query with a kernel, unless the launch would be a handful of long blocks (fewer than 16 over
/// more than 1024 keys: a short batch after a long cache in a model with few query heads, e.g. Gemma-3-270M's 4,
/// where each block would walk the whole cache alone and the split kernel's thousands of blocks finish first).
/// The limits are estimates, not measurements.
pub fn flash_preferred(s: &AttnShape, pos_host: usize) -> bool {
    if s.n_tok < 2 || flash_kernel(s).is_none() {
        return false;
    }
    let hpb = flash_heads_per_block(s);
    let blocks = s.n_heads / hpb * s.n_tok.div_ceil(layout::ROWS as usize / hpb);
    blocks >= FLASH_MIN_BLOCKS || pos_host + s.n_tok <= FLASH_ANY_KEYS
}

impl Cuda {
    /// Causal GQA attention of q (n_tok rows at positions pos0.., pos0 on the device) over the f16 caches on
    /// tensor cores, `heads_per_block` query heads of one group per block (a divisor of the group; see
    /// `flash_heads_per_block`); twin of `cpu::attention` up to the f16 rounding of q and the probabilities.
    /// `pos_host` is the same position, for the bounds checks.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_flash(&self, out: &mut CudaSlice<f32>, q: &impl Dev<f32>, k: &impl KvDev, v: &impl KvDev,
                           s: &AttnShape, heads_per_block: usize, pos0: &CudaSlice<u32>, pos_host: usize) -> Result<()> {
        let bad = |kernel: &str, msg: String| Err(Error::Cuda { op: kernel.into(), msg });
        let Some(kernel) = flash_kernel(s) else {
            return bad("attention_flash", format!("no flash-attention kernel for {s:?} (head dims 64/96/128/256, equal for k \
                                                   and v, groups of up to 64 heads)"));
        };
        if k.cache_type() != CacheType::F16 || v.cache_type() != CacheType::F16 {
            return bad(kernel, format!("an f16 cache, not {} / {}", k.cache_type().name(), v.cache_type().name()));
        }
        let group = s.n_heads / s.n_kv_heads;
        if heads_per_block == 0 || !group.is_multiple_of(heads_per_block) {
            return bad(kernel, format!("{heads_per_block} heads per block do not divide the group of {group}"));
        }
        let n_keys = pos_host + s.n_tok;
        if s.n_tok == 0 || n_keys > u32::MAX as usize / 2 {
            return bad(kernel, format!("{} queries after {pos_host} positions", s.n_tok));
        }
        let qa = q.addr(self);
        if !qa.is_multiple_of(16) {
            return bad(kernel, format!("q at {qa:#x} is not 16-byte aligned"));
        }
        let need = |what: &str, have: usize, want: usize| {
            if have < want {
                return bad(kernel, format!("{what} holds {have} elements, needs {want}"));
            }
            Ok(())
        };
        need("k cache", k.bytes() / 2, n_keys * s.n_kv_heads * s.head_dim)?;
        need("v cache", v.bytes() / 2, n_keys * s.n_kv_heads * s.head_dim_v)?;
        need("q", q.elems(), s.n_tok * s.n_heads * s.head_dim)?;
        need("out", out.len(), s.n_tok * s.n_heads * s.head_dim_v)?;
        let toks = layout::ROWS as usize / heads_per_block;
        let grid_y = s.n_tok.div_ceil(toks);
        if grid_y > 65535 {
            return bad(kernel, format!("{} queries need {grid_y} blocks of {toks} tokens, over the grid limit 65535", s.n_tok));
        }
        let f = self.func(kernel)?;
        let smem = layout::smem_bytes(s.head_dim as u32, s.head_dim_v as u32);
        // Over 48 KiB of dynamic shared memory must be allowed per function (a cheap driver call; idempotent).
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32)
            .map_err(cuda_err(format!("{kernel}: allow {smem} bytes of dynamic shared memory")))?;
        let cfg = LaunchConfig {
            grid_dim: ((s.n_heads / heads_per_block) as u32, grid_y as u32, 1),
            block_dim: (layout::THREADS, 1, 1),
            shared_mem_bytes: smem,
        };
        let (nt, nh, nkv, hpb, w) =
            (s.n_tok as u32, s.n_heads as u32, s.n_kv_heads as u32, heads_per_block as u32, s.window as u32);
        let scale_log2 = s.scale * std::f32::consts::LOG2_E;
        let (kp, vp) = (k.addr(self), v.addr(self));
        let mut b = self.args(&f);
        b.arg(out).arg(&qa).arg(&kp).arg(&vp).arg(pos0).arg(&nt).arg(&nh).arg(&nkv).arg(&hpb).arg(&scale_log2).arg(&w);
        // SAFETY: argument order and types match the kernel; lengths, alignment and index limits checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} {s:?} heads_per_block={heads_per_block}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize, head_dim_v: usize) -> AttnShape {
        AttnShape { n_tok: 7, n_heads, n_kv_heads, head_dim, head_dim_v, scale: 1.0, window: 0 }
    }

    #[test]
    fn kernels_and_layout() {
        assert_eq!(flash_kernel(&shape(9, 3, 64, 64)), Some("attention_flash_d64"));
        assert_eq!(flash_kernel(&shape(32, 8, 96, 96)), Some("attention_flash_d96"));
        assert_eq!(flash_kernel(&shape(32, 32, 128, 128)), Some("attention_flash_d128"));
        assert_eq!(flash_kernel(&shape(4, 1, 256, 256)), Some("attention_flash_d256"));
        for s in [shape(4, 1, 128, 64), shape(4, 1, 80, 80), shape(128, 1, 64, 64), shape(6, 4, 64, 64), shape(4, 0, 64, 64)] {
            assert_eq!(flash_kernel(&s), None, "{s:?}");
        }
        assert_eq!(flash_heads_per_block(&shape(9, 3, 64, 64)), 3);
        // a prompt batch; one query; a short batch after a long cache on few heads (1 block); the same on 32 heads
        let (gemma, llama) = (shape(4, 1, 256, 256), shape(32, 32, 128, 128));
        assert!(flash_preferred(&AttnShape { n_tok: 512, ..gemma }, 0));
        assert!(flash_preferred(&AttnShape { n_tok: 512, ..gemma }, 3584));
        assert!(!flash_preferred(&AttnShape { n_tok: 1, ..gemma }, 0));
        assert!(flash_preferred(&AttnShape { n_tok: 8, ..gemma }, 100));
        assert!(!flash_preferred(&AttnShape { n_tok: 8, ..gemma }, 3000));
        assert!(flash_preferred(&AttnShape { n_tok: 8, ..llama }, 3000));
        for d in [64, 96, 128, 256] {
            let smem = layout::smem_bytes(d, d);
            assert_eq!(smem % 16, 0);
            // an odd number of 16-byte pieces per row: the 8 rows of an ldmatrix hit 8 different bank groups
            assert_eq!(layout::row_bytes(d) % 32, 16, "d={d}");
            assert!(smem <= 160 * 1024, "d={d}: {smem} bytes of shared memory");
        }
    }
}
