//! A model's weights in device memory, uploaded once in their file format and shared by the GPU forwards: the
//! single-sequence `cuda_forward::CudaForward` and the batch forward `cuda_batch::CudaBatchForward` (each keeps
//! its own KV cache and activations). Holds the weight matrices (`DevMat`, with the mat-vec / mat-mul choice of
//! `DevMat::apply`), the per-layer norms and biases (`DevLayer`) and the RoPE cos/sin tables.

use std::sync::Arc;

use cudarc::driver::CudaSlice;

use crate::backend::cpu::{self, RopeParams};
use crate::backend::cuda::{gpu_off, At, Cuda};
use crate::backend::cuda_mmq::supports_mmq;
use crate::backend::cuda_q8::{supports_fused, supports_q8, Prologue};
use crate::config::ModelConfig;
use crate::gguf::GgmlType;
use crate::layer::LayerWeights;
use crate::model::{Activation, Mat, Model};
use crate::{Error, Result};

/// A weight matrix in device memory, still in its file format: its own buffer, or rows of a buffer it shares
/// with the matrices concatenated with it.
pub(crate) struct DevMat {
    pub(crate) ty: GgmlType,
    pub(crate) rows: usize, // output features
    pub(crate) cols: usize, // input features
    pub(crate) data: Arc<CudaSlice<u8>>,
    pub(crate) offset: usize, // bytes
}

impl DevMat {
    pub(crate) fn upload(gpu: &Cuda, m: &Mat) -> Result<DevMat> {
        Ok(DevMat { ty: m.ty, rows: m.rows, cols: m.cols, data: Arc::new(gpu.upload(m.data)?), offset: 0 })
    }

    /// `mats` as one matrix (their rows back to back: one mat-vec launch computes all their outputs) and as views
    /// into it, uploaded once; each on its own when they differ in type or width, or a part would start at an
    /// address that is not 16-byte aligned (the kernels' vector loads need it).
    pub(crate) fn concat(gpu: &Cuda, mats: &[&Mat]) -> Result<(Option<DevMat>, Vec<DevMat>)> {
        let (ty, cols) = (mats[0].ty, mats[0].cols);
        if mats.iter().any(|m| m.ty != ty || m.cols != cols || !m.data.len().is_multiple_of(16)) {
            return Ok((None, mats.iter().map(|m| DevMat::upload(gpu, m)).collect::<Result<_>>()?));
        }
        let bytes: Vec<u8> = mats.iter().flat_map(|m| m.data.iter().copied()).collect();
        let data = Arc::new(gpu.upload(&bytes)?);
        let mut offset = 0;
        let parts = mats
            .iter()
            .map(|m| {
                let d = DevMat { ty, rows: m.rows, cols, data: data.clone(), offset };
                offset += m.data.len();
                d
            })
            .collect();
        let rows = mats.iter().map(|m| m.rows).sum();
        Ok((Some(DevMat { ty, rows, cols, data, offset: 0 }), parts))
    }

    /// The weight bytes as the launchers take them.
    pub(crate) fn w(&self) -> At<'_, u8> {
        At(&self.data, self.offset)
    }

    /// y = W x for n_tok rows: x (n_tok, cols), y (n_tok, rows). With `xq` (scratch for n_tok quantized rows),
    /// the activations are quantized as llama.cpp quantizes them, so the GPU's numerics follow the CPU forward's:
    /// a single token goes through the `dp4a` mat-vec, 2 to `MV_CHUNKED_MAX` (4) through the mat-vec that reads
    /// the weight once for all of them (each row bit-identical to the single-token mat-vec; `HOST_GPU_OFF=mv8`: the
    /// mat-mul instead), a larger batch through the int8 tensor-core mat-mul, where the type has one; without
    /// `xq`, exact f32 products.
    pub(crate) fn apply(&self, gpu: &Cuda, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, n_tok: usize,
             xq: Option<&mut CudaSlice<u8>>) -> Result<()> {
        self.apply_q(gpu, x, y, n_tok, xq, false).map(|_| ())
    }

    /// `apply`, where `xq` may already hold x quantized (`quantized`: another weight of the same input, as k and
    /// v after q, read it). Returns whether xq holds x quantized after the call.
    pub(crate) fn apply_q(&self, gpu: &Cuda, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>, n_tok: usize,
             xq: Option<&mut CudaSlice<u8>>, quantized: bool) -> Result<bool> {
        let (w, ty) = (&self.w(), self.ty);
        let quantize = |xq: &mut CudaSlice<u8>| if quantized { Ok(()) } else { gpu.quantize_act(x, n_tok, self.cols, xq) };
        match (n_tok, xq) {
            (1, Some(xq)) if supports_q8(ty) => {
                quantize(xq)?;
                gpu.matvec_q8(ty, w, self.rows, self.cols, xq, y)?;
            }
            (1, _) => return gpu.matvec(ty, w, self.rows, self.cols, x, y).map(|_| quantized),
            (2..=MV_CHUNKED_MAX, Some(xq)) if supports_q8(ty) && !gpu_off("mv8") => {
                quantize(xq)?;
                gpu.matvec_q8_cols(ty, w, self.rows, self.cols, xq, n_tok, y)?;
            }
            (_, Some(xq)) if supports_mmq(ty) => {
                quantize(xq)?;
                gpu.matmul_q8(ty, w, self.rows, self.cols, xq, n_tok, y)?;
            }
            _ => return gpu.matmul(ty, w, self.rows, self.cols, x, n_tok, y).map(|_| quantized),
        }
        Ok(true)
    }

    /// Whether one decode token can go through `matvec_q8_fused`.
    pub(crate) fn fusable(&self) -> bool {
        supports_fused(self.ty, self.cols)
    }

    /// y (+)= W act(src) for one decode token in one launch (`Cuda::matvec_q8_fused`).
    pub(crate) fn fused(&self, gpu: &Cuda, src: &CudaSlice<f32>, pro: Prologue, y: &mut CudaSlice<f32>, accumulate: bool) -> Result<()> {
        gpu.matvec_q8_fused(self.ty, &self.w(), self.rows, self.cols, src, pro, y, accumulate)
    }

    /// y (+)= W act(src) for one decode token on 8-bit activations (the type has a q8 kernel): one fused launch
    /// whose every block makes the activations itself, or, as `mode` decides for this weight, the activations
    /// made once by `act_prologue` into `xq` and then the plain mat-vec. Same numbers either way.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn project(&self, gpu: &Cuda, mode: MvPrologue, src: &CudaSlice<f32>, pro: Prologue, y: &mut CudaSlice<f32>,
               accumulate: bool, xq: &mut CudaSlice<u8>) -> Result<()> {
        if self.fusable() && !mode.once(self) {
            return self.fused(gpu, src, pro, y, accumulate);
        }
        gpu.act_prologue(src, pro, self.cols, xq)?;
        gpu.matvec_q8_acc(self.ty, &self.w(), self.rows, self.cols, xq, y, accumulate)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.rows * self.ty.row_bytes(self.cols as u64).unwrap_or(0) as usize
    }
}

/// Where a decode mat-vec's 8-bit activations are made (`HOST_DECODE_PROLOGUE=fused|once|auto`, default auto):
/// by every block of the fused kernel (one launch; the norm is recomputed per block, which costs L2 reads that
/// grow with the grid), or once by `act_prologue` before the plain mat-vec (one more launch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MvPrologue {
    Fused,
    Once,
    /// Once for weights over `ONCE_ABOVE_BYTES`, fused below.
    Auto,
}

/// Most rows a projection takes through the multi-column mat-vec (each row bit-identical to one token alone)
/// before the int8 mat-mul, whose thin tile takes 5 to 32 rows. Measured on the H100 (2026-12-07, session 12,
/// 7B-shape Q4_0 `host bench -p 128 -n 128`): with the mat-vec (`HOST_GPU_OFF=` none) 2 / 4 / 6 / 8 sequences
/// generate 520 / 832 / 939 / 1,245 t/s, with the thin mat-mul (`HOST_GPU_OFF=mv8`) 396 / 802 / 1,331 / 1,767.
pub(crate) const MV_CHUNKED_MAX: usize = 4;

/// Auto: weights larger than this make their activations once.
pub(crate) const ONCE_ABOVE_BYTES: usize = 2 << 20;

impl MvPrologue {
    pub(crate) fn from_env() -> MvPrologue {
        match std::env::var("HOST_DECODE_PROLOGUE").as_deref() {
            Ok("fused") => MvPrologue::Fused,
            Ok("once") => MvPrologue::Once,
            _ => MvPrologue::Auto,
        }
    }

    pub(crate) fn once(self, w: &DevMat) -> bool {
        match self {
            MvPrologue::Fused => false,
            MvPrologue::Once => true,
            MvPrologue::Auto => w.bytes() > ONCE_ABOVE_BYTES,
        }
    }
}

/// One layer's weights in device memory; norms and biases as f32 (its KV cache is the forward's own).
pub(crate) struct DevLayer {
    /// The layer's norms, biases and matrices on the device (q/k/v and gate/up as row views of the fused ones
    /// below where those exist).
    pub(crate) w: LayerWeights<CudaSlice<f32>, DevMat>,
    /// Decode path: [wq; wk; wv] and [w_gate; w_up] as single matrices (when their types agree), and the
    /// q/k/v biases concatenated likewise.
    pub(crate) wqkv: Option<DevMat>,
    pub(crate) w_gate_up: Option<DevMat>,
    pub(crate) qkv_bias: Option<CudaSlice<f32>>,
    /// Index into `DevWeights::rope` of this layer's cos/sin table.
    pub(crate) rope: usize,
    pub(crate) window: usize, // 0 = global
}

/// cos/sin of every (position, pair) for one RoPE base and scale, computed by the CPU's own formula.
pub(crate) struct RopeTable {
    pub(crate) cos: CudaSlice<f32>, // (ctx, rope_dim / 2)
    pub(crate) sin: CudaSlice<f32>,
}

/// `DevMat::concat` of a fixed number of matrices.
pub(crate) fn concat_n<const N: usize>(gpu: &Cuda, mats: [&Mat; N]) -> Result<(Option<DevMat>, [DevMat; N])> {
    let (all, parts) = DevMat::concat(gpu, &mats)?;
    let parts: [DevMat; N] = parts.try_into().map_err(|_| Error::Generate("concat: part count".into()))?;
    Ok((all, parts))
}

pub(crate) fn upload_vec(gpu: &Cuda, v: &Option<Vec<f32>>) -> Result<Option<CudaSlice<f32>>> {
    v.as_ref().map(|v| gpu.upload(v)).transpose()
}

/// Everything of a model the GPU forwards read and never write.
pub(crate) struct DevWeights {
    pub(crate) config: ModelConfig,
    pub(crate) n_vocab: usize,
    pub(crate) attn_scale: f32,
    pub(crate) embd_scale: Option<f32>,
    pub(crate) final_softcap: Option<f32>,
    pub(crate) activation: Activation,
    pub(crate) neox: bool,
    pub(crate) token_embd: DevMat,
    /// None: tied to the embedding.
    pub(crate) output: Option<DevMat>,
    pub(crate) output_norm: CudaSlice<f32>,
    pub(crate) layers: Vec<DevLayer>,
    pub(crate) rope: Vec<RopeTable>,
    /// Positions the RoPE tables cover.
    pub(crate) ctx_size: usize,
}

impl DevWeights {
    /// Upload `model`'s weights, and RoPE tables for positions 0..ctx_size (with the frequency factors of that
    /// context size, `Model::rope_factors`).
    pub(crate) fn upload(gpu: &Cuda, model: &Model, ctx_size: usize) -> Result<DevWeights> {
        let c = model.config.clone();
        // RoPE tables, one per distinct (base, scale), with the frequency divisors of this context size
        let rope_factors = model.rope_factors(ctx_size);
        let mut rope_keys: Vec<(f32, f32)> = Vec::new();
        let mut rope = Vec::new();
        let mut layers = Vec::with_capacity(model.layers.len());
        let n_steps = model.layers.len() as u64 + 1; // the layers, then the embedding and the output head
        let mut bar = crate::progress::Progress::new(n_steps, "uploading weights", crate::progress::Unit::Items);
        for l in &model.layers {
            let key = (l.rope_theta, l.rope_freq_scale);
            let ri = match rope_keys.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    let p = RopeParams {
                        head_dim: c.head_dim,
                        rope_dim: c.rope_dim,
                        theta_base: l.rope_theta,
                        freq_scale: l.rope_freq_scale,
                        pairing: model.rope_pairing,
                        freq_factors: rope_factors,
                        mscale: c.rope_attn_factor,
                    };
                    let (cos, sin) = cpu::rope_table(ctx_size, &p);
                    rope.push(RopeTable { cos: gpu.upload(&cos)?, sin: gpu.upload(&sin)? });
                    rope_keys.push(key);
                    rope.len() - 1
                }
            };
            let lw = &l.w;
            let qkv_bias = match (&lw.q_bias, &lw.k_bias, &lw.v_bias) {
                (Some(q), Some(k), Some(v)) => Some(gpu.upload(&[&q[..], &k[..], &v[..]].concat())?),
                _ => None,
            };
            let biases_fuse = qkv_bias.is_some() || (lw.q_bias.is_none() && lw.k_bias.is_none() && lw.v_bias.is_none());
            let (wqkv, [wq, wk, wv]) = concat_n(gpu, [&lw.wq, &lw.wk, &lw.wv])?;
            let (w_gate_up, [w_gate, w_up]) = concat_n(gpu, [&lw.w_gate, &lw.w_up])?;
            let w = LayerWeights {
                attn_norm: gpu.upload(&lw.attn_norm)?,
                wq,
                wk,
                wv,
                wo: DevMat::upload(gpu, &lw.wo)?,
                q_bias: upload_vec(gpu, &lw.q_bias)?,
                k_bias: upload_vec(gpu, &lw.k_bias)?,
                v_bias: upload_vec(gpu, &lw.v_bias)?,
                q_norm: upload_vec(gpu, &lw.q_norm)?,
                k_norm: upload_vec(gpu, &lw.k_norm)?,
                post_attn_norm: upload_vec(gpu, &lw.post_attn_norm)?,
                ffn_norm: gpu.upload(&lw.ffn_norm)?,
                w_gate,
                w_up,
                w_down: DevMat::upload(gpu, &lw.w_down)?,
                post_ffw_norm: upload_vec(gpu, &lw.post_ffw_norm)?,
            };
            layers.push(DevLayer {
                w,
                wqkv: if biases_fuse { wqkv } else { None },
                w_gate_up,
                qkv_bias,
                rope: ri,
                window: l.window.unwrap_or(0),
            });
            bar.inc(1);
        }
        let token_embd = DevMat::upload(gpu, &model.token_embd)?;
        let tied = std::ptr::eq(model.output.data, model.token_embd.data);
        let output = if tied { None } else { Some(DevMat::upload(gpu, &model.output)?) };
        bar.finish();
        Ok(DevWeights {
            n_vocab: model.n_vocab(),
            attn_scale: model.attn_scale,
            embd_scale: model.embd_scale,
            final_softcap: model.final_softcap,
            activation: model.activation,
            neox: model.rope_pairing == cpu::RopePairing::Neox,
            token_embd,
            output,
            output_norm: gpu.upload(&model.output_norm)?,
            layers,
            rope,
            ctx_size,
            config: c,
        })
    }

    /// The output head's matrix (the embedding when tied).
    pub(crate) fn output(&self) -> &DevMat {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}
