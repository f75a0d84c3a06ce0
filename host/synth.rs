//! Synthetic models: real shapes with random weights, for measuring speed at scale (`host synth`).
//!
//! A 7B file cannot be downloaded in CI or on the GPU machine, but it can be written there: the data is random
//! quant blocks whose scale fields are set so that the weights decode to mean ~0 and standard deviation
//! `WEIGHT_STD`. Random weights cost exactly as much to multiply as trained ones. Norms are 1, biases 0. The
//! tokenizer metadata is copied from a real model (or a built-in byte-level vocabulary), so that llama.cpp and
//! our engine both load the file. Tensor data is generated in parallel and streamed to the file chunk by chunk;
//! the same seed gives the same bytes on every machine and thread count.

use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::gguf::{align_up, Array, Encoder, GgmlType, GgufFile, Value, DEFAULT_ALIGNMENT};
use crate::progress::{Progress, Unit};
use crate::rng::SplitMix64 as Rng;
use crate::{Error, Result};

// ----------------------------------------------------------------------------
// Presets: the shapes we measure
// ----------------------------------------------------------------------------

/// A model shape (`host synth --preset`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// dim 256, ffn 512, 2 layers, 4 heads (2 kv): about a megabyte, for tests and CI.
    Tiny,
    /// TinyLlama-1.1B: dim 2048, ffn 5632, 22 layers, 32 heads (4 kv).
    #[value(name = "llama-1b")]
    Llama1b,
    /// Llama-2-7B: dim 4096, ffn 11008, 32 layers, 32 heads (32 kv).
    #[value(name = "llama-7b")]
    Llama7b,
    /// Qwen2-7B: dim 3584, ffn 18944, 28 layers, 28 heads (4 kv), q/k/v biases.
    #[value(name = "qwen2-7b")]
    Qwen2_7b,
}

/// Everything about a model's shape except the vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub arch: &'static str, // general.architecture: "llama" or "qwen2"
    pub n_layers: usize,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub context_len: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// q/k/v projections carry biases (qwen2).
    pub qkv_bias: bool,
}

impl Shape {
    pub fn head_dim(&self) -> usize {
        self.dim / self.n_heads
    }
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Llama1b => "llama-1b",
            Preset::Llama7b => "llama-7b",
            Preset::Qwen2_7b => "qwen2-7b",
        }
    }

    /// The shape. Every row length (dim, hidden_dim) is a multiple of 256, so every K-quant type fits.
    pub fn shape(self) -> Shape {
        let llama = |n_layers, dim, hidden_dim, n_heads, n_kv_heads, context_len| Shape {
            arch: "llama",
            n_layers,
            dim,
            hidden_dim,
            n_heads,
            n_kv_heads,
            context_len,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            qkv_bias: false,
        };
        match self {
            Preset::Tiny => llama(2, 256, 512, 4, 2, 4096),
            Preset::Llama1b => llama(22, 2048, 5632, 32, 4, 2048),
            Preset::Llama7b => llama(32, 4096, 11008, 32, 32, 4096),
            Preset::Qwen2_7b => Shape {
                arch: "qwen2",
                n_layers: 28,
                dim: 3584,
                hidden_dim: 18944,
                n_heads: 28,
                n_kv_heads: 4,
                context_len: 32768,
                rope_theta: 1_000_000.0,
                rms_eps: 1e-6,
                qkv_bias: true,
            },
        }
    }

    /// The vocabulary `host synth` uses without `--vocab-from`: SmolLM2's 49152 tokens when that file is present
    /// (the vocabulary llama.cpp's 7B anchor was measured with), except for `tiny`, which stays small with the
    /// built-in byte-level vocabulary.
    pub fn default_vocab_file(self) -> Option<PathBuf> {
        let smollm2 = PathBuf::from(DEFAULT_VOCAB_FILE);
        (self != Preset::Tiny && smollm2.is_file()).then_some(smollm2)
    }
}

/// Where the default vocabulary comes from (relative to the working directory).
pub const DEFAULT_VOCAB_FILE: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Weight types `host synth --type` writes (every 2-D weight, the embedding and the output head).
pub const SYNTH_TYPES: &[GgmlType] = &[
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
];

/// llama.cpp's `general.file_type` (enum llama_ftype) for a file whose weights are all `ty` (the K-quants as
/// their "small" variants, which are closest to all-one-type).
fn file_type(ty: GgmlType) -> Option<u32> {
    use GgmlType::*;
    Some(match ty {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q8_0 => 7,
        Q5_0 => 8,
        Q5_1 => 9,
        Q2_K => 10,
        Q3_K => 11,
        Q4_K => 14,
        Q5_K => 16,
        Q6_K => 18,
        BF16 => 32,
        _ => return None,
    })
}

// ----------------------------------------------------------------------------
// Vocabulary: tokenizer.* metadata copied from a real model, or a byte-level one
// ----------------------------------------------------------------------------

/// The tokenizer metadata written into a synthetic model.
#[derive(Debug, Clone)]
pub struct Vocab {
    /// Every `tokenizer.*` key, in the source file's order.
    pub keys: Vec<(String, Value)>,
    /// Length of `tokenizer.ggml.tokens`: the model's vocab_size.
    pub n_tokens: usize,
    /// Where it came from, for messages.
    pub source: String,
}

impl Vocab {
    /// Copies every `tokenizer.*` key of `f` (the GGUF reader's values, not a parsed tokenizer).
    pub fn from_gguf(f: &GgufFile) -> Result<Vocab> {
        let keys: Vec<(String, Value)> =
            f.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect();
        let n_tokens = f.get_array("tokenizer.ggml.tokens")?.len();
        if n_tokens == 0 {
            return Err(Error::Gguf { path: f.path.clone(), msg: "tokenizer.ggml.tokens is empty".into() });
        }
        Ok(Vocab { keys, n_tokens, source: f.path.display().to_string() })
    }

    /// Opens `path` and copies its tokenizer.
    pub fn from_file(path: &Path) -> Result<Vocab> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// A GPT-2-style byte-level vocabulary: the 256 bytes (as GPT-2 spells them) and `<|endoftext|>` (id 256,
    /// BOS and EOS), no merges. Enough for llama.cpp and our loader; text tokenizes to one token per byte.
    pub fn byte_level() -> Vocab {
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| gpt2_byte_char(b).to_string().into_bytes()).collect();
        tokens.push(b"<|endoftext|>".to_vec());
        let mut types = vec![1i32; 256]; // normal
        types.push(3); // control
        let n_tokens = tokens.len();
        let keys = vec![
            ("tokenizer.ggml.model".to_string(), Value::str("gpt2")),
            ("tokenizer.ggml.pre".to_string(), Value::str("gpt-2")),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(Array::String(tokens))),
            ("tokenizer.ggml.token_type".to_string(), Value::Array(Array::I32(types))),
            ("tokenizer.ggml.merges".to_string(), Value::Array(Array::String(Vec::new()))),
            ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(256)),
            ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(256)),
            ("tokenizer.ggml.add_bos_token".to_string(), Value::Bool(false)),
        ];
        Vocab { keys, n_tokens, source: "built-in byte-level vocabulary".into() }
    }
}

/// GPT-2's byte-to-character map: printable Latin-1 bytes stand for themselves, the other 68 bytes become
/// U+0100.. in byte order (so that no token text holds a space or a control character).
fn gpt2_byte_char(b: u8) -> char {
    let printable = |c: u8| matches!(c, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        char::from(b)
    } else {
        let n = (0..b).filter(|&c| !printable(c)).count() as u32;
        char::from_u32(256 + n).expect("U+0100..U+0143 are chars")
    }
}

// ----------------------------------------------------------------------------
// Random blocks: quants uniform, scale fields fixed so that weights have mean ~0 and std WEIGHT_STD
// ----------------------------------------------------------------------------

/// Standard deviation of every synthetic weight (about what trained 7B projections have).
pub const WEIGHT_STD: f32 = 0.02;

/// Standard deviation of an integer uniform over `n` consecutive values: sqrt((n^2 - 1) / 12).
fn uniform_int_std(n: u32) -> f32 {
    ((n * n - 1) as f32 / 12.0).sqrt()
}

fn f16_bytes(x: f32) -> Vec<u8> {
    half::f16::from_f32(x).to_le_bytes().to_vec()
}

/// ggml's packing of 8 six-bit scales and 8 six-bit mins into 12 bytes (Q4_K, Q5_K), all equal to (sc, m).
fn pack_k4_scales(sc: u8, m: u8) -> Vec<u8> {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = sc;
            s[j + 4] = m;
        } else {
            s[j + 4] = (sc & 0xF) | ((m & 0xF) << 4);
            s[j - 4] |= (sc >> 4) << 6;
            s[j] |= (m >> 4) << 6;
        }
    }
    s.to_vec()
}

/// ggml's packing of 16 six-bit Q3_K scales (stored as scale + 32) into 12 bytes, all equal to `l`.
fn pack_q3k_scales(l: u8) -> Vec<u8> {
    let mut s = [0u8; 12];
    for j in 0..16 {
        if j < 8 {
            s[j] = l & 0xF;
        } else {
            s[j - 8] |= (l & 0xF) << 4;
        }
        s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
    }
    s.to_vec()
}

/// The bytes every block of `ty` gets on top of random bytes: (offset in the block, bytes). The comments give
/// the decoded weight in terms of the random quant q and the chosen scale d.
fn block_patches(ty: GgmlType) -> Vec<(usize, Vec<u8>)> {
    use GgmlType::*;
    let s = uniform_int_std;
    match ty {
        // x = (q - 8) d, q in 0..16
        Q4_0 => vec![(0, f16_bytes(WEIGHT_STD / s(16)))],
        // x = q d + m, m = -8 d
        Q4_1 => {
            let d = WEIGHT_STD / s(16);
            vec![(0, f16_bytes(d)), (2, f16_bytes(-8.0 * d))]
        }
        // x = (q - 16) d, q in 0..32
        Q5_0 => vec![(0, f16_bytes(WEIGHT_STD / s(32)))],
        // x = q d + m, m = -16 d
        Q5_1 => {
            let d = WEIGHT_STD / s(32);
            vec![(0, f16_bytes(d)), (2, f16_bytes(-16.0 * d))]
        }
        // x = q d, q in -128..128
        Q8_0 => vec![(0, f16_bytes(WEIGHT_STD / s(256)))],
        // x = d (sc q) - dmin m with sc = 2, m = 3, dmin = d: 2 d (q - 1.5), q in 0..4
        Q2_K => {
            let d = WEIGHT_STD / (2.0 * s(4));
            vec![(0, vec![0x32; 16]), (80, f16_bytes(d)), (82, f16_bytes(d))]
        }
        // x = d (l - 32) q with l = 33, q in -4..4
        Q3_K => vec![(96, pack_q3k_scales(33)), (108, f16_bytes(WEIGHT_STD / s(8)))],
        // x = d sc q - dmin m with sc = 1, m = 8, dmin = d: d (q - 8), q in 0..16
        Q4_K => {
            let d = WEIGHT_STD / s(16);
            vec![(0, f16_bytes(d)), (2, f16_bytes(d)), (4, pack_k4_scales(1, 8))]
        }
        // as Q4_K with m = 16, q in 0..32
        Q5_K => {
            let d = WEIGHT_STD / s(32);
            vec![(0, f16_bytes(d)), (2, f16_bytes(d)), (4, pack_k4_scales(1, 16))]
        }
        // x = d sc (q - 32) with sc = 1, q in 0..64
        Q6_K => vec![(192, vec![1; 16]), (208, f16_bytes(WEIGHT_STD / s(64)))],
        _ => Vec::new(),
    }
}

/// What a tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Random,
    Ones,
    Zeros,
}

/// Fills `out` (whole blocks of `ty`) with data: for `Random`, plain floats uniform with std `WEIGHT_STD`, or
/// random quant bytes with the block's scale fields patched.
fn fill(ty: GgmlType, what: Fill, patches: &[(usize, Vec<u8>)], rng: &mut Rng, out: &mut [u8]) {
    let constant = match what {
        Fill::Random => None,
        Fill::Ones => Some(1.0f32),
        Fill::Zeros => Some(0.0),
    };
    let a = WEIGHT_STD * 3f32.sqrt(); // uniform [-a, a) has std a / sqrt(3)
    match ty {
        GgmlType::F32 => {
            for pair in out.chunks_mut(8) {
                let v = constant.map_or_else(|| rng.two_f32().map(|x| x * a), |c| [c, c]);
                for (dst, x) in pair.chunks_exact_mut(4).zip(v) {
                    dst.copy_from_slice(&x.to_le_bytes());
                }
            }
        }
        GgmlType::F16 | GgmlType::BF16 => {
            for pair in out.chunks_mut(4) {
                let v = constant.map_or_else(|| rng.two_f32().map(|x| x * a), |c| [c, c]);
                for (dst, x) in pair.chunks_exact_mut(2).zip(v) {
                    let bits = match ty {
                        GgmlType::F16 => half::f16::from_f32(x).to_le_bytes(),
                        _ => half::bf16::from_f32(x).to_le_bytes(),
                    };
                    dst.copy_from_slice(&bits);
                }
            }
        }
        _ => {
            // quantized tensors are always Random (norms and biases are F32)
            for word in out.chunks_mut(8) {
                let r = rng.next_u64().to_le_bytes();
                word.copy_from_slice(&r[..word.len()]);
            }
            for block in out.chunks_exact_mut(ty.type_size()) {
                for (off, bytes) in patches {
                    block[*off..*off + bytes.len()].copy_from_slice(bytes);
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// The tensor list and the streaming writer
// ----------------------------------------------------------------------------

/// What `host synth` writes.
#[derive(Debug, Clone)]
pub struct SynthSpec {
    /// `general.name`.
    pub name: String,
    pub shape: Shape,
    /// Type of every 2-D weight (one of `SYNTH_TYPES`); norms and biases are F32.
    pub ty: GgmlType,
    pub seed: u64,
}

impl SynthSpec {
    /// A preset's shape, named "synth-<preset>".
    pub fn preset(p: Preset, ty: GgmlType, seed: u64) -> SynthSpec {
        SynthSpec { name: format!("synth-{}", p.name()), shape: p.shape(), ty, seed }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSummary {
    pub n_tensors: usize,
    /// Elements of all tensors.
    pub n_params: u64,
    /// Bytes of tensor data.
    pub weight_bytes: u64,
    /// Bytes of the whole file.
    pub file_bytes: u64,
}

struct Planned {
    name: String,
    dims: Vec<u64>, // GGUF order: [row length, rows]
    ty: GgmlType,
    fill: Fill,
}

impl Planned {
    fn n_bytes(&self) -> u64 {
        let rows: u64 = self.dims[1..].iter().product();
        self.ty.row_bytes(self.dims[0]).expect("write_model checked: rows are whole blocks") * rows
    }
}

/// Every tensor, in llama.cpp's order: embedding, output norm and head, then the blocks.
fn plan(s: &Shape, n_vocab: usize, ty: GgmlType) -> Vec<Planned> {
    let (dim, hid, kv_dim) = (s.dim as u64, s.hidden_dim as u64, (s.n_kv_heads * s.head_dim()) as u64);
    let mut out = Vec::new();
    let mut add = |name: String, dims: &[u64], ty: GgmlType, fill: Fill| {
        out.push(Planned { name, dims: dims.to_vec(), ty, fill });
    };
    add("token_embd.weight".into(), &[dim, n_vocab as u64], ty, Fill::Random);
    add("output_norm.weight".into(), &[dim], GgmlType::F32, Fill::Ones);
    add("output.weight".into(), &[dim, n_vocab as u64], ty, Fill::Random);
    for i in 0..s.n_layers {
        let n = |role: &str| format!("blk.{i}.{role}");
        add(n("attn_norm.weight"), &[dim], GgmlType::F32, Fill::Ones);
        add(n("attn_q.weight"), &[dim, dim], ty, Fill::Random);
        add(n("attn_k.weight"), &[dim, kv_dim], ty, Fill::Random);
        add(n("attn_v.weight"), &[dim, kv_dim], ty, Fill::Random);
        if s.qkv_bias {
            add(n("attn_q.bias"), &[dim], GgmlType::F32, Fill::Zeros);
            add(n("attn_k.bias"), &[kv_dim], GgmlType::F32, Fill::Zeros);
            add(n("attn_v.bias"), &[kv_dim], GgmlType::F32, Fill::Zeros);
        }
        add(n("attn_output.weight"), &[dim, dim], ty, Fill::Random);
        add(n("ffn_norm.weight"), &[dim], GgmlType::F32, Fill::Ones);
        add(n("ffn_gate.weight"), &[dim, hid], ty, Fill::Random);
        add(n("ffn_up.weight"), &[dim, hid], ty, Fill::Random);
        add(n("ffn_down.weight"), &[hid, dim], ty, Fill::Random);
    }
    out
}

/// The metadata: general.*, the architecture's hyperparameters, then the tokenizer.
fn metadata(spec: &SynthSpec, vocab: &Vocab) -> Vec<(String, Value)> {
    let s = &spec.shape;
    let k = |name: &str| format!("{}.{name}", s.arch);
    let u32v = |n: usize| Value::U32(n as u32);
    let mut m = vec![
        ("general.architecture".to_string(), Value::str(s.arch)),
        ("general.type".to_string(), Value::str("model")),
        ("general.name".to_string(), Value::str(&spec.name)),
        (
            "general.description".to_string(),
            Value::str(&format!("random weights (std {WEIGHT_STD}) written by host synth, seed {}", spec.seed)),
        ),
        (k("block_count"), u32v(s.n_layers)),
        (k("context_length"), u32v(s.context_len)),
        (k("embedding_length"), u32v(s.dim)),
        (k("feed_forward_length"), u32v(s.hidden_dim)),
        (k("attention.head_count"), u32v(s.n_heads)),
        (k("attention.head_count_kv"), u32v(s.n_kv_heads)),
        (k("rope.freq_base"), Value::F32(s.rope_theta)),
        (k("rope.dimension_count"), u32v(s.head_dim())),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(s.rms_eps)),
        (k("vocab_size"), u32v(vocab.n_tokens)),
    ];
    if let Some(ft) = file_type(spec.ty) {
        m.push(("general.file_type".into(), Value::U32(ft)));
    }
    m.push(("general.quantization_version".into(), Value::U32(2)));
    m.extend(vocab.keys.iter().cloned());
    m
}

/// Bytes generated per parallel task; chunk boundaries (and so the bytes) do not depend on the thread count.
const CHUNK_BYTES: usize = 4 << 20;

/// The seed of chunk `chunk` of tensor `tensor`.
fn chunk_seed(seed: u64, tensor: usize, chunk: usize) -> u64 {
    let mut r = Rng(seed ^ (tensor as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    r.0 ^= r.next_u64() ^ (chunk as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB);
    r.next_u64()
}

/// Writes the random-weight model `spec` with tokenizer `vocab` to `path` (through `path.tmp`, renamed at the
/// end, so that an interrupted run leaves no half-written model).
pub fn write_model(path: &Path, spec: &SynthSpec, vocab: &Vocab) -> Result<SynthSummary> {
    if !SYNTH_TYPES.contains(&spec.ty) {
        let names: Vec<&str> = SYNTH_TYPES.iter().map(|t| t.name()).collect();
        return Err(Error::Usage(format!("synth: type {} is not one of {}", spec.ty, names.join(", "))));
    }
    let s = &spec.shape;
    if s.n_heads == 0
        || s.n_kv_heads == 0
        || !s.dim.is_multiple_of(s.n_heads)
        || !s.n_heads.is_multiple_of(s.n_kv_heads)
    {
        return Err(Error::Usage(format!(
            "synth: dim {} / {} heads / {} kv heads do not divide evenly",
            s.dim, s.n_heads, s.n_kv_heads
        )));
    }
    let bs = spec.ty.block_size();
    if !s.dim.is_multiple_of(bs) || !s.hidden_dim.is_multiple_of(bs) {
        return Err(Error::Usage(format!(
            "synth: {} needs rows of whole {bs}-element blocks; dim {} and ffn {} are not",
            spec.ty, s.dim, s.hidden_dim
        )));
    }
    let tensors = plan(s, vocab.n_tokens, spec.ty);
    let meta = metadata(spec, vocab);

    // header, metadata, tensor infos with offsets, padding
    let align = DEFAULT_ALIGNMENT;
    let mut e = Encoder::new();
    e.header(3, tensors.len() as u64, meta.len() as u64);
    for (key, v) in &meta {
        e.kv(key.as_bytes(), v);
    }
    let mut offset = 0u64;
    let mut weight_bytes = 0u64;
    for t in &tensors {
        e.tensor_info(t.name.as_bytes(), &t.dims, t.ty.id(), offset);
        weight_bytes += t.n_bytes();
        offset = align_up(offset + t.n_bytes(), align).expect("file sizes fit in u64");
    }
    e.pad_to(align);

    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let io = |e| Error::io(&tmp, e);
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&e.buf).map_err(io)?;
    let mut file_bytes = e.len() as u64;

    // tensor data: batches of chunks generated in parallel, written in order
    let batch_chunks = 2 * rayon::current_num_threads();
    let mut buf: Vec<u8> = Vec::new();
    let mut bar = Progress::new(weight_bytes, "writing weights", Unit::Bytes);
    for (ti, t) in tensors.iter().enumerate() {
        let (bs, ts) = (t.ty.block_size() as u64, t.ty.type_size());
        let n_blocks = (t.n_bytes() / ts as u64) as usize;
        debug_assert_eq!(n_blocks as u64 * bs, t.dims.iter().product::<u64>());
        let chunk_blocks = (CHUNK_BYTES / ts).max(1);
        let n_chunks = n_blocks.div_ceil(chunk_blocks);
        let patches = block_patches(t.ty);
        for first in (0..n_chunks).step_by(batch_chunks) {
            let end_block = ((first + batch_chunks) * chunk_blocks).min(n_blocks);
            let len = (end_block - first * chunk_blocks) * ts;
            buf.resize(len, 0);
            buf[..len].par_chunks_mut(chunk_blocks * ts).enumerate().for_each(|(i, out)| {
                let mut rng = Rng(chunk_seed(spec.seed, ti, first + i));
                fill(t.ty, t.fill, &patches, &mut rng, out);
            });
            f.write_all(&buf[..len]).map_err(io)?;
            bar.inc(len as u64);
        }
        file_bytes += t.n_bytes();
        let padded = align_up(file_bytes, align).expect("file sizes fit in u64");
        if ti + 1 < tensors.len() && padded > file_bytes {
            f.write_all(&vec![0u8; (padded - file_bytes) as usize]).map_err(io)?;
            file_bytes = padded;
        }
    }
    f.sync_all().map_err(io)?;
    bar.finish();
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    Ok(SynthSummary {
        n_tensors: tensors.len(),
        n_params: tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum(),
        weight_bytes,
        file_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;

    #[test]
    fn gpt2_byte_chars_are_distinct_and_printable() {
        let chars: Vec<char> = (0..=255u8).map(gpt2_byte_char).collect();
        let mut sorted = chars.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
        // GPT-2: 'A' is itself, the space is 'Ġ' (U+0120), newline 'Ċ' (U+010A), 0xAD is U+0143 (the last)
        assert_eq!((chars[b'A' as usize], chars[b' ' as usize], chars[b'\n' as usize]), ('A', 'Ġ', 'Ċ'));
        assert_eq!(chars[0xAD], '\u{143}');
        assert!(chars.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn random_blocks_decode_to_the_target_std() {
        // 64 blocks of 256 (or 2048 of 32) elements: the sample std is within a few % of WEIGHT_STD, the mean
        // within a fraction of it (Q3_K's quants are -4..3, mean -0.5 d: 0.2 std)
        let n = 16384;
        for &ty in SYNTH_TYPES {
            let mut data = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            fill(ty, Fill::Random, &block_patches(ty), &mut Rng(9), &mut data);
            let mut x = vec![0f32; n];
            dequantize_row(ty, &data, &mut x).unwrap();
            let mean = x.iter().sum::<f32>() / n as f32;
            let std = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n as f32).sqrt();
            assert!((std / WEIGHT_STD - 1.0).abs() < 0.05, "{ty}: std {std}");
            assert!(mean.abs() < 0.25 * WEIGHT_STD, "{ty}: mean {mean}");
        }
    }

    #[test]
    fn k_scale_packing_matches_ggml_unpacking() {
        // ggml get_scale_min_k4 for j >= 4: sc = (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), m = (q[j+4] >> 4) | ((q[j] >> 6) << 4)
        let q = pack_k4_scales(33, 50);
        for j in 0..8 {
            let (sc, m) = if j < 4 {
                (q[j] & 63, q[j + 4] & 63)
            } else {
                ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
            };
            assert_eq!((sc, m), (33, 50), "sub-block {j}");
        }
    }

    #[test]
    fn a_small_qwen2_shape_loads_with_biases() {
        use crate::model::Model;
        let shape = Shape { arch: "qwen2", n_layers: 1, qkv_bias: true, ..Preset::Tiny.shape() };
        let spec = SynthSpec { name: "q".into(), shape, ty: GgmlType::Q8_0, seed: 3 };
        let path = std::env::temp_dir().join(format!("synth-qwen2-{}.gguf", std::process::id()));
        let sum = write_model(&path, &spec, &Vocab::byte_level()).unwrap();
        let f = GgufFile::open(&path).unwrap();
        assert_eq!(f.file_len(), sum.file_bytes);
        let m = Model::load(&f).unwrap();
        assert_eq!((m.config.n_layers, m.config.dim, m.n_vocab()), (1, 256, 257));
        // biases are zero, kv_dim = 2 heads * 64
        assert_eq!(m.layers[0].w.k_bias.as_deref(), Some(&[0.0f32; 128][..]));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn shapes_that_do_not_fit_the_blocks_are_refused() {
        let shape = Shape { dim: 96, hidden_dim: 192, n_heads: 2, n_kv_heads: 2, ..Preset::Tiny.shape() };
        let spec = SynthSpec { name: "x".into(), shape, ty: GgmlType::Q4_K, seed: 1 };
        let path = std::env::temp_dir().join(format!("synth-bad-{}.gguf", std::process::id()));
        let err = write_model(&path, &spec, &Vocab::byte_level()).unwrap_err();
        assert!(err.to_string().contains("256-element blocks"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn chunk_seeds_differ() {
        let seeds: Vec<u64> = (0..4).flat_map(|t| (0..4).map(move |c| chunk_seed(1, t, c))).collect();
        let mut s = seeds.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), seeds.len());
        assert_ne!(chunk_seed(1, 0, 0), chunk_seed(2, 0, 0));
    }
}
