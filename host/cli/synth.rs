//! `host synth`: write a random-weight model of a preset shape (see `crate::synth`), e.g.
//! `host synth llama7b-q4_0.gguf --preset llama-7b --type Q4_0`.

use std::path::PathBuf;
use std::time::Instant;

use crate::cli::bench::{format_params, format_size};
use crate::gguf::GgmlType;
use crate::synth::{self, Preset, SynthSpec, Vocab};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct SynthArgs {
    /// Output .gguf file (replaced if it exists).
    pub out: PathBuf,
    /// Model shape.
    #[arg(long, value_enum)]
    pub preset: Preset,
    /// Type of every weight matrix, the embedding and the output head: F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    /// Q2_K, Q3_K, Q4_K, Q5_K or Q6_K (norms and biases are F32).
    #[arg(long = "type", value_parser = parse_type)]
    pub ty: GgmlType,
    /// Copy the tokenizer (every tokenizer.* key) from this model. Default: models/SmolLM2-135M-Instruct.Q4_1.gguf
    /// when present (not for --preset tiny), else a built-in 257-token byte-level vocabulary.
    #[arg(long)]
    pub vocab_from: Option<PathBuf>,
    /// Use the built-in byte-level vocabulary even when the default file is present.
    #[arg(long, conflicts_with = "vocab_from")]
    pub byte_vocab: bool,
    /// Seed of the random weights (same seed, same bytes).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn parse_type(s: &str) -> std::result::Result<GgmlType, String> {
    let names = || synth::SYNTH_TYPES.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ");
    GgmlType::from_name(s)
        .filter(|t| synth::SYNTH_TYPES.contains(t))
        .ok_or_else(|| format!("'{s}' is not one of {}", names()))
}

pub fn run(a: SynthArgs) -> Result<()> {
    if a.out.extension().is_none_or(|e| e != "gguf") {
        eprintln!("warning: {} does not end in .gguf", a.out.display());
    }
    let vocab = match (&a.vocab_from, a.byte_vocab) {
        (Some(p), _) => Vocab::from_file(p)?,
        (None, true) => Vocab::byte_level(),
        (None, false) => match a.preset.default_vocab_file() {
            Some(p) => Vocab::from_file(&p)?,
            None => Vocab::byte_level(),
        },
    };
    let spec = SynthSpec::preset(a.preset, a.ty, a.seed);
    let s = a.preset.shape();
    eprintln!(
        "synth: {} {} ({} layers, dim {}, ffn {}, {} heads ({} kv)), vocab of {} tokens from {}, seed {}",
        a.preset.name(),
        a.ty,
        s.n_layers,
        s.dim,
        s.hidden_dim,
        s.n_heads,
        s.n_kv_heads,
        vocab.n_tokens,
        vocab.source,
        a.seed
    );
    let t0 = Instant::now();
    let sum = synth::write_model(&a.out, &spec, &vocab)?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "synth: wrote {} in {secs:.1} s: {} tensors, {} params, {} of weights, {} bytes ({:.2} GB/s)",
        a.out.display(),
        sum.n_tensors,
        format_params(sum.n_params),
        format_size(sum.weight_bytes),
        sum.file_bytes,
        sum.file_bytes as f64 / 1e9 / secs.max(1e-9)
    );
    Ok(())
}
