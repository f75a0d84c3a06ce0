//! Sampling on the GPU: the launcher of the chain kernels in `gpu-kernels/src/sample.rs` (their section comment
//! describes the algorithms). CPU twin: `crate::sampler::Sampler`, whose chain (logit bias -> penalties -> top_k
//! -> typical_p -> top_p -> min_p -> temperature -> seeded draw) runs here entirely on the device: per step the
//! logits are read where the forward pass left them, and only the chosen id is written (to `out`, and to the
//! next step's input token when asked). The RNG counter and the penalty history live in device memory and are
//! updated by the kernels, so a decode step that ends with `sample` can be captured in a CUDA graph.
//!
//! Restrictions (`GpuSampler::supports` says which; the caller then keeps the CPU sampler):
//! - top_k up to `SAMPLE_MAX_TOP_K` (1024) when it is on (0 < top_k < vocab);
//! - typical_p < 1 only together with such a top_k (or top_k = 1);
//! - vocabularies up to 4M tokens, repeat_last_n up to 2^24.
//!
//! Documented differences from the CPU sampler, all far below what a test of the distribution can see:
//! - the RNG is counter-based (splitmix64 of (seed, step)), so the same seed gives different tokens on the two
//!   samplers (each reproduces its own);
//! - draw weights below 2^-41 of the top token's are 0 (never drawn);
//! - full-vocabulary top_p: if more than 2048 tokens lie within 1/128 logit of the cut, they are kept whole;
//! - repeated ids in `logit_bias` are summed before they are added (the CPU adds them one by one).

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, ValidAsZeroBits};

use super::cuda::{cuda_err, Cuda};
use crate::sampler::SamplingParams;
use crate::{Error, Result};

/// Parameter and state layouts shared with the kernel crate (one definition).
#[path = "../../gpu-kernels/src/sample_params.rs"]
#[allow(dead_code)]
mod sample_params;
use sample_params::*;
pub use sample_params::{SampleParams, SampleState, SAMPLE_GATHER_CAP, SAMPLE_MAX_TOP_K};

// SAFETY: plain `#[repr(C)]` structs of u32/u64/f32 fields (sizes asserted in the shared file).
unsafe impl DeviceRepr for SampleParams {}
unsafe impl DeviceRepr for SampleState {}
// SAFETY: all-zero bits are a valid state (step 0, empty history).
unsafe impl ValidAsZeroBits for SampleState {}

/// Largest repeat_last_n the device history takes.
pub const MAX_REPEAT_LAST_N: usize = 1 << 24;

/// Which kernels a sampler launches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplePath {
    /// `sample_topk`: top_k on, or greedy (top_k = 1)
    TopK,
    /// `sample_full_max` [+ `sample_full_hist` when top_p < 1] + `sample_full_pick`
    Full,
}

/// The chain of one `SamplingParams` on the device: parameters, RNG counter, penalty history and scratch.
pub struct GpuSampler {
    vocab: usize,
    host: SampleParams,
    path: SamplePath,
    params: CudaSlice<SampleParams>,
    state: CudaSlice<SampleState>,
    /// (vocab,) dense logit bias, when any
    bias: Option<CudaSlice<f32>>,
    /// (vocab,) occurrences of each token in the history, and the history ring (repeat_last_n,), when penalties
    /// are on
    counts: Option<CudaSlice<u32>>,
    ring: Option<CudaSlice<u32>>,
    /// top_k path: (n_chunks * top_k,) candidate keys and ids
    cand_key: Option<CudaSlice<u32>>,
    cand_id: Option<CudaSlice<u32>>,
    /// full path: (n_chunks * SAMPLE_CHUNK,) transformed logits when bias/penalties are on; (n_chunks,) best rank
    /// per chunk; (SAMPLE_BINS,) mass histogram; (2 * n_chunks,) chunk masses; (SAMPLE_GATHER_CAP,) gathered ranks
    work: Option<CudaSlice<f32>>,
    cmax: Option<CudaSlice<u64>>,
    ghist: Option<CudaSlice<u64>>,
    chunk_mass: Option<CudaSlice<u64>>,
    gather: Option<CudaSlice<u64>>,
}

fn unsupported(msg: String) -> Error {
    Error::Cuda { op: "gpu sampler".into(), msg: format!("{msg}; use the CPU sampler") }
}

fn opt_ptr<T>(gpu: &Cuda, s: &Option<CudaSlice<T>>) -> u64 {
    s.as_ref().map_or(0, |s| gpu.ptr(s, 0))
}

impl GpuSampler {
    /// Ok when the device chain can run `params` over `vocab` tokens, else why not (in words).
    pub fn supports(params: &SamplingParams, vocab: usize) -> std::result::Result<(), String> {
        resolve(params, vocab).map(|_| ())
    }

    /// Uploads the parameters and allocates the state for `vocab` tokens. Errors (`Error::Cuda` with op "gpu
    /// sampler") for the combinations listed in the module comment.
    pub fn new(gpu: &Cuda, params: &SamplingParams, vocab: usize) -> Result<GpuSampler> {
        let (host, path) = resolve(params, vocab).map_err(unsupported)?;
        let n_chunks = host.n_chunks as usize;
        let bias = if host.flags & SAMPLE_FLAG_BIAS != 0 {
            let mut dense = vec![0.0f32; vocab];
            for &(id, b) in &params.logit_bias {
                if let Some(d) = dense.get_mut(id as usize) {
                    *d += b;
                }
            }
            Some(gpu.upload(&dense)?)
        } else {
            None
        };
        let penalties = host.flags & SAMPLE_FLAG_PENALTY != 0;
        let counts = if penalties { Some(gpu.zeros::<u32>(vocab)?) } else { None };
        let ring = if penalties { Some(gpu.zeros::<u32>(host.repeat_last_n as usize)?) } else { None };
        let topk = path == SamplePath::TopK;
        let full = path == SamplePath::Full;
        let n_cand = n_chunks * host.top_k as usize;
        Ok(GpuSampler {
            vocab,
            path,
            params: gpu.upload(&[host])?,
            state: gpu.zeros::<SampleState>(1)?,
            bias,
            counts,
            ring,
            cand_key: if topk { Some(gpu.zeros::<u32>(n_cand)?) } else { None },
            cand_id: if topk { Some(gpu.zeros::<u32>(n_cand)?) } else { None },
            work: if host.flags & SAMPLE_FLAG_WORK != 0 {
                Some(gpu.zeros::<f32>(n_chunks * SAMPLE_CHUNK as usize)?)
            } else {
                None
            },
            cmax: if full { Some(gpu.zeros::<u64>(n_chunks)?) } else { None },
            ghist: if full { Some(gpu.zeros::<u64>(SAMPLE_BINS as usize)?) } else { None },
            chunk_mass: if full { Some(gpu.zeros::<u64>(2 * n_chunks)?) } else { None },
            gather: if full { Some(gpu.zeros::<u64>(SAMPLE_GATHER_CAP as usize)?) } else { None },
            host,
        })
    }

    /// The resolved parameters as the kernels see them.
    pub fn device_params(&self) -> &SampleParams {
        &self.host
    }

    pub fn path(&self) -> SamplePath {
        self.path
    }

    /// Pushes prompt tokens into the penalty history, as the CPU sampler's `accept` for each (a no-op when the
    /// penalties are off). Token ids must be < vocab.
    pub fn accept_prompt(&mut self, gpu: &Cuda, tokens: &[u32]) -> Result<()> {
        const K: &str = "sample_accept";
        if let Some((i, &t)) = tokens.iter().enumerate().find(|(_, &t)| t as usize >= self.vocab) {
            return Err(Error::Cuda {
                op: K.into(),
                msg: format!("token {t} at {i} is outside the vocabulary of {}", self.vocab),
            });
        }
        let (Some(counts), Some(ring)) = (&self.counts, &self.ring) else { return Ok(()) };
        if tokens.is_empty() {
            return Ok(());
        }
        // only the last repeat_last_n tokens can stay in the window; the kernel gives the same result for them
        let tail = &tokens[tokens.len().saturating_sub(self.host.repeat_last_n as usize)..];
        let dev = gpu.upload(tail)?;
        let n = tail.len() as u32;
        let f = gpu.func(K)?;
        let (pp, sp, rp, cp, tp) =
            (gpu.ptr(&self.params, 0), gpu.ptr(&self.state, 0), gpu.ptr(ring, 0), gpu.ptr(counts, 0), gpu.ptr(&dev, 0));
        let mut b = gpu.args(&f);
        b.arg(&pp).arg(&sp).arg(&rp).arg(&cp).arg(&tp).arg(&n);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (SAMPLE_BLOCK, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: argument order and types match the kernel; token ids checked above, buffers sized in `new`.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} n={n}")))?;
        Ok(())
    }

    /// Samples one token from `logits[..vocab]` into out[0] (and next_token[0] when given), appends it to the
    /// history and advances the RNG counter, all on the device: no host synchronisation.
    pub fn sample(
        &mut self,
        gpu: &Cuda,
        logits: &CudaSlice<f32>,
        out: &mut CudaSlice<u32>,
        next_token: Option<&mut CudaSlice<u32>>,
    ) -> Result<()> {
        self.sample_at(gpu, logits, out, 0, next_token)
    }

    /// As `sample`, writing out[index] (e.g. a device buffer of all generated tokens).
    pub fn sample_at(
        &mut self,
        gpu: &Cuda,
        logits: &CudaSlice<f32>,
        out: &mut CudaSlice<u32>,
        index: usize,
        next_token: Option<&mut CudaSlice<u32>>,
    ) -> Result<()> {
        if index >= out.len() {
            return Err(Error::Cuda {
                op: "gpu sampler".into(),
                msg: format!("output index {index} outside {} slots", out.len()),
            });
        }
        let next = next_token.map_or(0, |t| gpu.ptr(t, 0));
        self.launch(gpu, logits, gpu.ptr(out, index), next, 0)
    }

    /// As `sample`, and writes the distribution the token was drawn from into `probs` (vocab,): each token's
    /// probability, 0 for those the chain removed (greedy: 1 for the chosen token). For tests.
    pub fn sample_debug(
        &mut self,
        gpu: &Cuda,
        logits: &CudaSlice<f32>,
        out: &mut CudaSlice<u32>,
        probs: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if probs.len() < self.vocab || out.is_empty() {
            return Err(Error::Cuda {
                op: "gpu sampler".into(),
                msg: format!(
                    "debug probabilities hold {} floats and out {}, need {} and 1",
                    probs.len(),
                    out.len(),
                    self.vocab
                ),
            });
        }
        gpu.stream.memset_zeros(probs).map_err(cuda_err("zero the debug probabilities"))?;
        self.launch(gpu, logits, gpu.ptr(out, 0), 0, gpu.ptr(probs, 0))
    }

    /// Forgets the history and restarts the RNG counter: the same logits give the same tokens again.
    pub fn reset(&mut self, gpu: &Cuda) -> Result<()> {
        gpu.stream.memset_zeros(&mut self.state).map_err(cuda_err("reset the sampler state"))?;
        if let Some(c) = &mut self.counts {
            gpu.stream.memset_zeros(c).map_err(cuda_err("reset the penalty counts"))?;
        }
        if let Some(h) = &mut self.ghist {
            gpu.stream.memset_zeros(h).map_err(cuda_err("reset the histogram"))?;
        }
        Ok(())
    }

    /// The device state (synchronises; for tests and diagnostics).
    pub fn state(&self, gpu: &Cuda) -> Result<SampleState> {
        Ok(gpu.download(&self.state)?[0])
    }

    fn launch(&mut self, gpu: &Cuda, logits: &CudaSlice<f32>, out: u64, next: u64, dbg: u64) -> Result<()> {
        if logits.len() < self.vocab {
            return Err(Error::Cuda {
                op: "gpu sampler".into(),
                msg: format!(
                    "logits hold {} floats, the sampler was made for a vocabulary of {}",
                    logits.len(),
                    self.vocab
                ),
            });
        }
        let h = &self.host;
        let cfg = LaunchConfig { grid_dim: (h.n_chunks, 1, 1), block_dim: (SAMPLE_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let (pp, sp, xp) = (gpu.ptr(&self.params, 0), gpu.ptr(&self.state, 0), gpu.ptr(logits, 0));
        let (bp, cp, rp) = (opt_ptr(gpu, &self.bias), opt_ptr(gpu, &self.counts), opt_ptr(gpu, &self.ring));
        let detail = || format!("vocab={} top_k={} flags={:#x}", h.n_vocab, h.top_k, h.flags);
        let go = |name: &'static str, b: &mut crate::backend::cuda::Launch| -> Result<()> {
            // SAFETY: every launch below pushes the kernel's arguments in order as u64 device addresses (or 0 for
            // buffers the flags leave unused) and u32 scalars; the buffers were sized in `new` for these params.
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(|e| Error::Cuda { op: format!("launch {name} {}", detail()), msg: e.to_string() })
        };
        match self.path {
            SamplePath::TopK => {
                const K: &str = "sample_topk";
                let (kp, ip) = (opt_ptr(gpu, &self.cand_key), opt_ptr(gpu, &self.cand_id));
                let f = gpu.func(K)?;
                let mut b = gpu.args(&f);
                b.arg(&pp)
                    .arg(&sp)
                    .arg(&xp)
                    .arg(&bp)
                    .arg(&cp)
                    .arg(&rp)
                    .arg(&kp)
                    .arg(&ip)
                    .arg(&out)
                    .arg(&next)
                    .arg(&dbg);
                go(K, &mut b)
            }
            SamplePath::Full => {
                let yp = if self.work.is_some() { opt_ptr(gpu, &self.work) } else { xp };
                let (wp, mp) = (opt_ptr(gpu, &self.work), opt_ptr(gpu, &self.cmax));
                let f = gpu.func("sample_full_max")?;
                let mut b = gpu.args(&f);
                b.arg(&pp).arg(&xp).arg(&bp).arg(&cp).arg(&wp).arg(&mp);
                go("sample_full_max", &mut b)?;
                if h.flags & SAMPLE_FLAG_TOP_P != 0 {
                    let hp = opt_ptr(gpu, &self.ghist);
                    let f = gpu.func("sample_full_hist")?;
                    let mut b = gpu.args(&f);
                    b.arg(&pp).arg(&sp).arg(&yp).arg(&mp).arg(&hp);
                    go("sample_full_hist", &mut b)?;
                }
                let (cmp, gp) = (opt_ptr(gpu, &self.chunk_mass), opt_ptr(gpu, &self.gather));
                let f = gpu.func("sample_full_pick")?;
                let mut b = gpu.args(&f);
                b.arg(&pp)
                    .arg(&sp)
                    .arg(&yp)
                    .arg(&mp)
                    .arg(&cmp)
                    .arg(&gp)
                    .arg(&cp)
                    .arg(&rp)
                    .arg(&out)
                    .arg(&next)
                    .arg(&dbg);
                go("sample_full_pick", &mut b)
            }
        }
    }
}

/// `SamplingParams` -> the kernels' parameters and path, with the CPU sampler's meaning of every value (NaN turns
/// a step off; NaN or <= 0 temperature is greedy), or why the device cannot run them.
fn resolve(params: &SamplingParams, vocab: usize) -> std::result::Result<(SampleParams, SamplePath), String> {
    let max_vocab = (SAMPLE_MAX_CHUNKS * SAMPLE_CHUNK) as usize;
    if vocab == 0 || vocab > max_vocab {
        return Err(format!("vocabulary of {vocab} tokens is outside 1..={max_vocab}"));
    }
    let t = params.temperature;
    let greedy = t.is_nan() || t <= 0.0;
    let top_k = if params.top_k > 0 && params.top_k < vocab { params.top_k } else { 0 };
    let typical = params.typical_p < 1.0; // false for NaN
    let top_p = params.top_p < 1.0;
    let min_p = params.min_p > 0.0;
    let penalties = params.repeat_last_n > 0
        && !(params.repeat_penalty == 1.0 && params.frequency_penalty == 0.0 && params.presence_penalty == 0.0);
    let bias = params.logit_bias.iter().any(|&(id, _)| (id as usize) < vocab);
    if penalties && params.repeat_last_n > MAX_REPEAT_LAST_N {
        return Err(format!(
            "repeat_last_n {} exceeds the GPU history limit {MAX_REPEAT_LAST_N}",
            params.repeat_last_n
        ));
    }
    // greedy without typical_p picks the argmax, which every other step keeps: top_k = 1
    let (k, path) = if top_k == 1 || (greedy && !typical) {
        (1, SamplePath::TopK)
    } else if top_k > 0 {
        if top_k > SAMPLE_MAX_TOP_K as usize {
            return Err(format!("top_k {top_k} exceeds the GPU sampler's limit of {SAMPLE_MAX_TOP_K}"));
        }
        (top_k as u32, SamplePath::TopK)
    } else if typical {
        return Err("typical_p < 1 needs top_k (1..=1024) on the GPU".into());
    } else {
        (0, SamplePath::Full)
    };
    let mut flags = 0;
    let mut set = |on: bool, f: u32| {
        if on {
            flags |= f;
        }
    };
    set(bias, SAMPLE_FLAG_BIAS);
    set(penalties, SAMPLE_FLAG_PENALTY);
    set(greedy || k == 1, SAMPLE_FLAG_GREEDY);
    set(typical && k > 1, SAMPLE_FLAG_TYPICAL);
    set(top_p, SAMPLE_FLAG_TOP_P);
    set(min_p, SAMPLE_FLAG_MIN_P);
    set(path == SamplePath::Full && (bias || penalties), SAMPLE_FLAG_WORK);
    set(vocab.is_multiple_of(4), SAMPLE_FLAG_VEC4);
    let sp = SampleParams {
        n_vocab: vocab as u32,
        n_chunks: vocab.div_ceil(SAMPLE_CHUNK as usize) as u32,
        top_k: k,
        flags,
        temperature: if greedy { 1.0 } else { t },
        top_p: params.top_p,
        ln_min_p: if min_p { params.min_p.ln() } else { 0.0 },
        typical_p: params.typical_p,
        repeat_penalty: params.repeat_penalty,
        frequency_penalty: params.frequency_penalty,
        presence_penalty: params.presence_penalty,
        repeat_last_n: if penalties { params.repeat_last_n as u32 } else { 0 },
        seed_lo: params.seed as u32,
        seed_hi: (params.seed >> 32) as u32,
        _pad: [0; 2],
    };
    Ok((sp, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> SamplingParams {
        SamplingParams::plain(7)
    }

    #[test]
    fn resolve_routes_and_flags_like_the_cpu_chain() {
        // greedy -> argmax as top_k 1, whatever top_p / min_p say
        let (p, path) = resolve(&SamplingParams { temperature: 0.0, top_p: 0.5, ..plain() }, 1000).unwrap();
        assert_eq!((path, p.top_k, p.flags & SAMPLE_FLAG_GREEDY), (SamplePath::TopK, 1, SAMPLE_FLAG_GREEDY));
        // top_k >= vocab is off: full path; NaN steps are off
        let (p, path) =
            resolve(&SamplingParams { top_k: 1000, top_p: f32::NAN, min_p: f32::NAN, ..plain() }, 1000).unwrap();
        assert_eq!((path, p.top_k, p.flags & (SAMPLE_FLAG_TOP_P | SAMPLE_FLAG_MIN_P)), (SamplePath::Full, 0, 0));
        // min_p: ln computed on the host as the CPU does; vocab 1001 has no vector loads; seed split in halves
        let (p, _) = resolve(&SamplingParams { min_p: 0.05, seed: 0x1234_5678_9abc_def0, ..plain() }, 1001).unwrap();
        assert_eq!(p.ln_min_p, 0.05f32.ln());
        assert_eq!((p.flags & SAMPLE_FLAG_VEC4, p.n_chunks, p.seed_lo, p.seed_hi), (0, 1, 0x9abc_def0, 0x1234_5678));
        // penalties and bias on the full path need the work copy; neutral penalties are off
        let (p, _) = resolve(&SamplingParams { repeat_penalty: 1.1, ..plain() }, 8192).unwrap();
        assert_eq!(p.flags & (SAMPLE_FLAG_PENALTY | SAMPLE_FLAG_WORK), SAMPLE_FLAG_PENALTY | SAMPLE_FLAG_WORK);
        assert_eq!((p.repeat_last_n, p.n_chunks), (64, 2));
        let (p, _) = resolve(&SamplingParams { repeat_last_n: 0, repeat_penalty: 1.1, ..plain() }, 8192).unwrap();
        assert_eq!(p.flags & SAMPLE_FLAG_PENALTY, 0);
        let (p, _) = resolve(&SamplingParams { logit_bias: vec![(9000, 1.0)], ..plain() }, 8192).unwrap();
        assert_eq!(p.flags & SAMPLE_FLAG_BIAS, 0, "a bias outside the vocabulary is ignored, as on the CPU");
    }

    #[test]
    fn resolve_rejects_what_the_device_cannot_do() {
        let err = |p: SamplingParams, v: usize| resolve(&p, v).unwrap_err();
        assert!(err(SamplingParams { top_k: 2000, ..plain() }, 50_000).contains("2000"));
        assert!(err(SamplingParams { typical_p: 0.9, ..plain() }, 50_000).contains("typical_p"));
        assert!(err(SamplingParams { temperature: 0.0, typical_p: 0.9, ..plain() }, 50_000).contains("typical_p"));
        assert!(err(plain(), 0).contains("vocabulary"));
        assert!(err(SamplingParams { repeat_penalty: 1.1, repeat_last_n: 1 << 30, ..plain() }, 100)
            .contains("repeat_last_n"));
        // typical with top_k, and with top_k 1 (one survivor), are fine
        assert!(resolve(&SamplingParams { typical_p: 0.9, top_k: 40, ..plain() }, 50_000).is_ok());
        assert!(resolve(&SamplingParams { typical_p: 0.9, top_k: 1, ..plain() }, 50_000).is_ok());
    }
}
