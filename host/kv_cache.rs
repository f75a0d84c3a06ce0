//! The key/value cache: per layer, the keys and values of every position seen so far, preallocated for the
//! context size at load. Positions are written once, in order; nothing wraps around.

use half::f16;

use crate::backend::cpu::{self, AttnParams, KvElem};
use crate::{Error, Result};

/// Element type of the cache (`--cache-type`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    /// Half precision, as llama.cpp stores it by default: half the memory, keys and values rounded to f16.
    #[default]
    F16,
    F32,
    /// Blocks of 32 with an f16 scale (llama.cpp's `-ctk q8_0 -ctv q8_0`): a little over a quarter of f32's
    /// memory; attended as ggml's CPU flash attention attends such a cache (on the GPU too, in its own layout:
    /// `backend::cuda::kv_layout`). Head dims must be multiples of 32.
    #[value(name = "q8_0")]
    Q8_0,
}

impl CacheType {
    pub fn name(self) -> &'static str {
        match self {
            CacheType::F16 => "f16",
            CacheType::F32 => "f32",
            CacheType::Q8_0 => "q8_0",
        }
    }

    /// Bytes of one position's `width` elements.
    pub fn row_bytes(self, width: usize) -> usize {
        match self {
            CacheType::F16 => 2 * width,
            CacheType::F32 => 4 * width,
            CacheType::Q8_0 => width.div_ceil(32) * 34,
        }
    }
}

/// One layer's keys and values.
enum LayerKv {
    F32 {
        k: Vec<f32>, // (ctx_size, kv_dim)
        v: Vec<f32>, // (ctx_size, kv_dim_v)
    },
    F16 {
        k: Vec<f16>, // (ctx_size, kv_dim)
        v: Vec<f16>, // (ctx_size, kv_dim_v)
    },
}

pub struct KvCache {
    layers: Vec<LayerKv>,
    ty: CacheType,
    ctx_size: usize,
    /// Width of one position's keys: n_kv_heads * head_dim.
    kv_dim: usize,
    /// Width of one position's values: n_kv_heads * head_dim_v.
    kv_dim_v: usize,
}

impl KvCache {
    /// Allocate `n_layers` layers of `ctx_size` positions. Fails, with the size asked for, when the memory cannot
    /// be had.
    pub fn new(
        n_layers: usize,
        ctx_size: usize,
        kv_dim: usize,
        kv_dim_v: usize,
        ty: CacheType,
    ) -> Result<KvCache> {
        let bytes = Self::bytes_for(n_layers, ctx_size, kv_dim, kv_dim_v, ty);
        let too_big = || {
            Error::Generate(format!(
                "kv cache of {ctx_size} positions needs {bytes} bytes: out of memory"
            ))
        };
        let alloc_f32 = |n: usize| -> Result<Vec<f32>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| too_big())?;
            v.resize(n, 0.0);
            Ok(v)
        };
        let alloc_f16 = |n: usize| -> Result<Vec<f16>> {
            let mut v = Vec::new();
            v.try_reserve_exact(n).map_err(|_| too_big())?;
            v.resize(n, f16::ZERO);
            Ok(v)
        };
        let mut layers = Vec::with_capacity(n_layers);
        for _ in 0..n_layers {
            layers.push(match ty {
                CacheType::Q8_0 => {
                    return Err(Error::Generate("the q8_0 KV cache is the CPU's paged cache only".into()))
                }
                CacheType::F32 => LayerKv::F32 {
                    k: alloc_f32(ctx_size * kv_dim)?,
                    v: alloc_f32(ctx_size * kv_dim_v)?,
                },
                CacheType::F16 => LayerKv::F16 {
                    k: alloc_f16(ctx_size * kv_dim)?,
                    v: alloc_f16(ctx_size * kv_dim_v)?,
                },
            });
        }
        Ok(KvCache {
            layers,
            ty,
            ctx_size,
            kv_dim,
            kv_dim_v,
        })
    }

    /// Bytes a cache of this shape takes.
    pub fn bytes_for(
        n_layers: usize,
        ctx_size: usize,
        kv_dim: usize,
        kv_dim_v: usize,
        ty: CacheType,
    ) -> usize {
        n_layers * ctx_size * (ty.row_bytes(kv_dim) + ty.row_bytes(kv_dim_v))
    }

    pub fn bytes(&self) -> usize {
        Self::bytes_for(
            self.layers.len(),
            self.ctx_size,
            self.kv_dim,
            self.kv_dim_v,
            self.ty,
        )
    }

    pub fn ctx_size(&self) -> usize {
        self.ctx_size
    }

    pub fn cache_type(&self) -> CacheType {
        self.ty
    }

    /// Store the keys and values of positions pos..pos + n at `layer`. k: (n, kv_dim); v: (n, kv_dim_v).
    pub fn write(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) -> Result<()> {
        let n = k.len() / self.kv_dim;
        if pos + n > self.ctx_size {
            return Err(Error::Generate(format!(
                "kv cache: positions {pos}..{} do not fit the context of {} positions",
                pos + n,
                self.ctx_size
            )));
        }
        let (kd, vd) = (self.kv_dim, self.kv_dim_v);
        fn store<T: KvElem>(dst: &mut [T], src: &[f32]) {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = T::from_f32(s);
            }
        }
        match &mut self.layers[layer] {
            LayerKv::F32 { k: kc, v: vc } => {
                store(&mut kc[pos * kd..(pos + n) * kd], k);
                store(&mut vc[pos * vd..(pos + n) * vd], v);
            }
            LayerKv::F16 { k: kc, v: vc } => {
                store(&mut kc[pos * kd..(pos + n) * kd], k);
                store(&mut vc[pos * vd..(pos + n) * vd], v);
            }
        }
        Ok(())
    }

    /// Attention of the queries `q` over this layer's positions 0..p.pos0 + p.n_tok (see `cpu::attention`; an f16
    /// cache with `round_like_cache` computes as llama.cpp's CPU flash attention, `cpu::attention_ggml`).
    pub fn attend(&self, layer: usize, out: &mut [f32], q: &[f32], p: &AttnParams) {
        match &self.layers[layer] {
            LayerKv::F32 { k, v } => cpu::attention(out, q, k, v, p),
            LayerKv::F16 { k, v } if p.round_like_cache => cpu::attention_ggml(out, q, k, v, p),
            LayerKv::F16 { k, v } => cpu::attention(out, q, k, v, p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_and_bounds() {
        let mut c = KvCache::new(2, 8, 4, 6, CacheType::F16).unwrap();
        assert_eq!(c.bytes(), 2 * 8 * (4 + 6) * 2);
        assert_eq!(
            KvCache::bytes_for(30, 4096, 192, 192, CacheType::F32),
            30 * 4096 * 384 * 4
        );
        // 3 positions at 6 overflow a context of 8: an error naming both, nothing written
        let err = c
            .write(1, 6, &[0.0; 12], &[0.0; 18])
            .unwrap_err()
            .to_string();
        assert!(err.contains("6..9") && err.contains('8'), "{err}");
        c.write(1, 5, &[0.0; 12], &[0.0; 18]).unwrap();
    }

    #[test]
    fn written_positions_are_attended() {
        // one head; position 0 has v = [1..6], position 1 has v = [7..12]; a query orthogonal to both keys
        // weights them equally
        for ty in [CacheType::F32, CacheType::F16] {
            let mut c = KvCache::new(1, 4, 4, 6, ty).unwrap();
            let k = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
            let v: Vec<f32> = (1..=12).map(|x| x as f32).collect();
            c.write(0, 0, &k[..4], &v[..6]).unwrap();
            c.write(0, 1, &k[4..], &v[6..]).unwrap();
            let p = AttnParams {
                n_tok: 1,
                pos0: 1,
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: 4,
                head_dim_v: 6,
                scale: 1.0,
                window: None,
                round_like_cache: false,
            };
            let mut out = [0.0; 6];
            c.attend(0, &mut out, &[0.0, 0.0, 1.0, 0.0], &p);
            assert_eq!(out, [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        }
    }
}
