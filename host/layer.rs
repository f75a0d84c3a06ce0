//! The transformer layer, written once for every architecture and every backend.
//!
//! A pre-norm decoder layer (llama, qwen2, qwen3, phi3, mistral3, gemma3) is the same sequence of steps on any
//! device: norm, the q/k/v projections with their optional biases and per-head norms, RoPE and the cache store
//! and attention, the output projection with an optional post-norm into the residual, then the feed-forward the
//! same way. `layer` is that sequence; a backend implements `LayerOps`, the primitive steps over its own buffers
//! and weights, and may override the composite steps (`qkv`, `residual`, `gate_up`, `ffn_down`) with fused kernels.
//! An architecture's differences are data (`Part`: which optional weights a layer has, `Activation`), so a new
//! architecture that fits this shape is one loader change, and one that does not is one change here.

use crate::config::ModelConfig;
use crate::model::Activation;
use crate::Result;

/// The activation buffers of a layer; each backend maps them to its own storage, `rows` rows each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Buf {
    /// The residual stream (rows, dim).
    X,
    /// The normed input of a sub-block (rows, dim).
    Xb,
    Q,
    K,
    V,
    /// The attention output (rows, n_heads * head_dim_v).
    Att,
    /// The output of a sub-block before it joins the residual (rows, dim).
    O,
    Gate,
    Up,
    /// The gated activation of the feed-forward (rows, hidden_dim).
    Glu,
}

impl Buf {
    /// Floats per row.
    pub fn width(self, c: &ModelConfig) -> usize {
        match self {
            Buf::X | Buf::Xb | Buf::O => c.dim,
            Buf::Q => c.n_heads * c.head_dim,
            Buf::K => c.n_kv_heads * c.head_dim,
            Buf::V => c.n_kv_heads * c.head_dim_v,
            Buf::Att => c.n_heads * c.head_dim_v,
            Buf::Gate | Buf::Up | Buf::Glu => c.hidden_dim,
        }
    }
}

/// A layer's weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

/// A layer's vectors: norm weights and biases. The optional ones are asked for with `LayerOps::has`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    AttnNorm,
    QBias,
    KBias,
    VBias,
    /// Per-head RMS norms of q and k (gemma3, qwen3).
    QNorm,
    KNorm,
    /// Norm of the attention output before the residual add (gemma3).
    PostAttnNorm,
    FfnNorm,
    /// Norm of the feed-forward output before the residual add (gemma3).
    PostFfwNorm,
}

/// A layer's weights, the same fields on every backend: `V` its vectors (norms, biases), `M` its matrices.
/// `model::Layer` holds them as file-backed `Mat`s and `Vec<f32>`s, `cuda_weights::DevLayer` on the device.
#[derive(Debug, Clone)]
pub struct LayerWeights<V, M> {
    pub attn_norm: V,                // (dim,)
    pub wq: M,                       // (n_heads * head_dim, dim)
    pub wk: M,                       // (n_kv_heads * head_dim, dim)
    pub wv: M,                       // (n_kv_heads * head_dim_v, dim)
    pub wo: M,                       // (dim, n_heads * head_dim_v)
    pub q_bias: Option<V>,           // (n_heads * head_dim,) qwen2
    pub k_bias: Option<V>,           // (n_kv_heads * head_dim,)
    pub v_bias: Option<V>,           // (n_kv_heads * head_dim_v,)
    pub q_norm: Option<V>,           // (head_dim,) gemma3, qwen3
    pub k_norm: Option<V>,           // (head_dim,)
    pub post_attn_norm: Option<V>,   // (dim,) gemma3
    pub ffn_norm: V,                 // (dim,)
    pub w_gate: M,                   // (hidden_dim, dim)
    pub w_up: M,                     // (hidden_dim, dim)
    pub w_down: M,                   // (dim, hidden_dim)
    pub post_ffw_norm: Option<V>,    // (dim,) gemma3
}

impl<V, M> LayerWeights<V, M> {
    /// The vector `p`, None where the layer has none.
    pub fn part(&self, p: Part) -> Option<&V> {
        match p {
            Part::AttnNorm => Some(&self.attn_norm),
            Part::FfnNorm => Some(&self.ffn_norm),
            Part::QBias => self.q_bias.as_ref(),
            Part::KBias => self.k_bias.as_ref(),
            Part::VBias => self.v_bias.as_ref(),
            Part::QNorm => self.q_norm.as_ref(),
            Part::KNorm => self.k_norm.as_ref(),
            Part::PostAttnNorm => self.post_attn_norm.as_ref(),
            Part::PostFfwNorm => self.post_ffw_norm.as_ref(),
        }
    }

    /// The matrix `w`.
    pub fn mat(&self, w: Proj) -> &M {
        match w {
            Proj::Q => &self.wq,
            Proj::K => &self.wk,
            Proj::V => &self.wv,
            Proj::O => &self.wo,
            Proj::Gate => &self.w_gate,
            Proj::Up => &self.w_up,
            Proj::Down => &self.w_down,
        }
    }
}

/// The primitive steps of a layer over `rows` rows of the backend's buffers, and the composite steps a backend
/// may replace by fused kernels (their default bodies say what they must compute).
pub trait LayerOps {
    /// The backend's weights of one layer.
    type Layer;

    /// Whether the layer has the optional vector `p` (the required ones always answer true).
    fn has(&self, l: &Self::Layer, p: Part) -> bool;
    /// `dst = w * rmsnorm(src)` row by row over `dim`, `w` the norm `p`; `dst == src` normalizes in place. The
    /// per-head norms (`QNorm`, `KNorm`) normalize each head of the row in place.
    fn rmsnorm(&mut self, l: &Self::Layer, p: Part, dst: Buf, src: Buf, rows: usize) -> Result<()>;
    /// `dst = W src` for the matrix `w`.
    fn project(&mut self, l: &Self::Layer, w: Proj, src: Buf, dst: Buf, rows: usize) -> Result<()>;
    /// `dst += b` row by row, `b` the bias `p`.
    fn add_bias(&mut self, l: &Self::Layer, p: Part, dst: Buf, rows: usize) -> Result<()>;
    /// RoPE of q and k at each row's position, k and v into the cache, attention of q over the cached keys and
    /// values of the row's sequence into `Att`. `il`: the layer's index (its cache).
    fn attend(&mut self, l: &Self::Layer, il: usize, rows: usize) -> Result<()>;
    /// `Glu = act(Gate) * Up`.
    fn glu(&mut self, act: Activation, rows: usize) -> Result<()>;
    /// `X += O`.
    fn add_residual(&mut self, rows: usize) -> Result<()>;
    /// The rows the feed-forward of layer `il` runs on, moved to the front of `X`; by default all of them.
    /// (llama.cpp's CPU path runs the last layer's feed-forward only on the rows whose logits are wanted.)
    fn ffn_rows(&mut self, _il: usize, rows: usize) -> Result<usize> {
        Ok(rows)
    }

    /// q, k and v of the rows: the attention norm, the three projections, their biases and the per-head norms.
    fn qkv(&mut self, l: &Self::Layer, rows: usize) -> Result<()> {
        steps::qkv(self, l, rows)
    }
    /// `X += post_norm(W src)`, the post norm where the layer has one.
    fn residual(&mut self, l: &Self::Layer, w: Proj, src: Buf, post_norm: Part, rows: usize) -> Result<()> {
        steps::residual(self, l, w, src, post_norm, rows)
    }
    /// Gate and up of the rows: the feed-forward norm and the two projections.
    fn gate_up(&mut self, l: &Self::Layer, rows: usize) -> Result<()> {
        steps::gate_up(self, l, rows)
    }
    /// `X += post_norm(W_down act(Gate) * Up)`.
    fn ffn_down(&mut self, l: &Self::Layer, act: Activation, rows: usize) -> Result<()> {
        steps::ffn_down(self, l, act, rows)
    }
}

/// The composite steps made of the primitive ones: `LayerOps`' default bodies, and what a backend's override
/// falls back to where its fused kernel does not apply.
pub mod steps {
    use super::{Activation, Buf, LayerOps, Part, Proj, Result};

    pub fn qkv<O: LayerOps + ?Sized>(o: &mut O, l: &O::Layer, rows: usize) -> Result<()> {
        o.rmsnorm(l, Part::AttnNorm, Buf::Xb, Buf::X, rows)?;
        const QKV: [(Proj, Buf, Part); 3] =
            [(Proj::Q, Buf::Q, Part::QBias), (Proj::K, Buf::K, Part::KBias), (Proj::V, Buf::V, Part::VBias)];
        for (w, dst, _) in QKV {
            o.project(l, w, Buf::Xb, dst, rows)?;
        }
        for (_, dst, b) in QKV {
            if o.has(l, b) {
                o.add_bias(l, b, dst, rows)?;
            }
        }
        for (p, b) in [(Part::QNorm, Buf::Q), (Part::KNorm, Buf::K)] {
            if o.has(l, p) {
                o.rmsnorm(l, p, b, b, rows)?;
            }
        }
        Ok(())
    }

    pub fn residual<O: LayerOps + ?Sized>(o: &mut O, l: &O::Layer, w: Proj, src: Buf, post_norm: Part, rows: usize)
                                          -> Result<()> {
        o.project(l, w, src, Buf::O, rows)?;
        if o.has(l, post_norm) {
            o.rmsnorm(l, post_norm, Buf::O, Buf::O, rows)?;
        }
        o.add_residual(rows)
    }

    pub fn gate_up<O: LayerOps + ?Sized>(o: &mut O, l: &O::Layer, rows: usize) -> Result<()> {
        o.rmsnorm(l, Part::FfnNorm, Buf::Xb, Buf::X, rows)?;
        o.project(l, Proj::Gate, Buf::Xb, Buf::Gate, rows)?;
        o.project(l, Proj::Up, Buf::Xb, Buf::Up, rows)
    }

    pub fn ffn_down<O: LayerOps + ?Sized>(o: &mut O, l: &O::Layer, act: Activation, rows: usize) -> Result<()> {
        o.glu(act, rows)?;
        o.residual(l, Proj::Down, Buf::Glu, Part::PostFfwNorm, rows)
    }
}

/// `dst` (to write) and `src` (to read) out of a backend's ten activation buffers, given in `Buf` order.
pub fn pair<T>(bufs: [&mut T; 10], dst: Buf, src: Buf) -> (&mut T, &T) {
    assert_ne!(dst, src, "pair: one buffer both written and read");
    let mut slots = bufs.map(Some);
    let d = slots[dst as usize].take().expect("each buffer once");
    let s = slots[src as usize].take().expect("each buffer once");
    (d, s)
}

/// Layer `il` over `rows` rows of the residual stream `X`.
pub fn layer<O: LayerOps>(ops: &mut O, l: &O::Layer, il: usize, act: Activation, rows: usize) -> Result<()> {
    // ---- attention ----
    ops.qkv(l, rows)?;
    ops.attend(l, il, rows)?;
    ops.residual(l, Proj::O, Buf::Att, Part::PostAttnNorm, rows)?;
    // ---- feed-forward ----
    let rows = ops.ffn_rows(il, rows)?;
    if rows == 0 {
        return Ok(());
    }
    ops.gate_up(l, rows)?;
    ops.ffn_down(l, act, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each primitive step; a "layer" is the set of optional parts it has.
    struct Trace {
        steps: Vec<String>,
        narrow_to: Option<usize>,
    }

    impl LayerOps for Trace {
        type Layer = Vec<Part>;
        fn has(&self, l: &Vec<Part>, p: Part) -> bool {
            matches!(p, Part::AttnNorm | Part::FfnNorm) || l.contains(&p)
        }
        fn rmsnorm(&mut self, _: &Vec<Part>, p: Part, dst: Buf, src: Buf, rows: usize) -> Result<()> {
            self.steps.push(format!("norm {p:?} {src:?}->{dst:?} x{rows}"));
            Ok(())
        }
        fn project(&mut self, _: &Vec<Part>, w: Proj, src: Buf, dst: Buf, rows: usize) -> Result<()> {
            self.steps.push(format!("proj {w:?} {src:?}->{dst:?} x{rows}"));
            Ok(())
        }
        fn add_bias(&mut self, _: &Vec<Part>, p: Part, dst: Buf, _: usize) -> Result<()> {
            self.steps.push(format!("bias {p:?} {dst:?}"));
            Ok(())
        }
        fn attend(&mut self, _: &Vec<Part>, il: usize, rows: usize) -> Result<()> {
            self.steps.push(format!("attend {il} x{rows}"));
            Ok(())
        }
        fn glu(&mut self, act: Activation, rows: usize) -> Result<()> {
            self.steps.push(format!("glu {act:?} x{rows}"));
            Ok(())
        }
        fn add_residual(&mut self, rows: usize) -> Result<()> {
            self.steps.push(format!("add x{rows}"));
            Ok(())
        }
        fn ffn_rows(&mut self, _: usize, rows: usize) -> Result<usize> {
            Ok(self.narrow_to.unwrap_or(rows))
        }
    }

    fn trace(parts: Vec<Part>, act: Activation, narrow_to: Option<usize>) -> Vec<String> {
        let mut t = Trace { steps: Vec::new(), narrow_to };
        layer(&mut t, &parts, 3, act, 5).unwrap();
        t.steps
    }

    #[test]
    fn a_llama_layer_is_the_pre_norm_sequence() {
        let want = [
            "norm AttnNorm X->Xb x5", "proj Q Xb->Q x5", "proj K Xb->K x5", "proj V Xb->V x5", "attend 3 x5",
            "proj O Att->O x5", "add x5", "norm FfnNorm X->Xb x5", "proj Gate Xb->Gate x5", "proj Up Xb->Up x5",
            "glu SwiGlu x5", "proj Down Glu->O x5", "add x5",
        ];
        assert_eq!(trace(vec![], Activation::SwiGlu, None), want);
    }

    #[test]
    fn optional_parts_come_in_their_places() {
        // qwen2's biases after all three projections, gemma3's head norms after the biases and its post norms
        // before each residual add; the feed-forward on the rows ffn_rows leaves
        let all = vec![Part::QBias, Part::KBias, Part::VBias, Part::QNorm, Part::KNorm, Part::PostAttnNorm,
                       Part::PostFfwNorm];
        let want = [
            "norm AttnNorm X->Xb x5", "proj Q Xb->Q x5", "proj K Xb->K x5", "proj V Xb->V x5", "bias QBias Q",
            "bias KBias K", "bias VBias V", "norm QNorm Q->Q x5", "norm KNorm K->K x5", "attend 3 x5",
            "proj O Att->O x5", "norm PostAttnNorm O->O x5", "add x5", "norm FfnNorm X->Xb x2",
            "proj Gate Xb->Gate x2", "proj Up Xb->Up x2", "glu GeluTanh x2", "proj Down Glu->O x2",
            "norm PostFfwNorm O->O x2", "add x2",
        ];
        assert_eq!(trace(all, Activation::GeluTanh, Some(2)), want);
        // no wanted rows: no feed-forward at all
        assert_eq!(trace(vec![], Activation::SwiGlu, Some(0)).last().unwrap(), "add x5");
    }

    #[test]
    fn pair_lends_two_different_buffers() {
        let mut v: Vec<u32> = (0..10).collect();
        let mut it = v.iter_mut();
        let bufs: [&mut u32; 10] = std::array::from_fn(|_| it.next().unwrap());
        let (d, s) = pair(bufs, Buf::O, Buf::Att);
        *d += *s;
        assert_eq!(v[Buf::O as usize], 6 + 5);
    }
}
