//! `host run`: load a model, tokenize the prompt, generate, stream the text to stdout. stderr gets the load
//! progress, the model and cache sizes, and the timings at the end.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::backend::Device;
use crate::cli::DeviceArg;
use crate::generate::{self, GenOptions};
use crate::gguf::GgufFile;
use crate::kv_cache::{CacheType, KvCache};
use crate::model::Model;
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Context size when `--ctx-size` is not given: the model's, capped at this.
const DEFAULT_CTX_CAP: usize = 4096;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Path to a .gguf model file.
    pub model: PathBuf,
    /// The prompt ("-" reads standard input).
    #[arg(short, long, value_parser = clap::value_parser!(OsString), conflicts_with = "file")]
    pub prompt: Option<OsString>,
    /// Read the prompt from this file.
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Tokens to generate (-1: until end of generation or the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k sampling (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Top-p (nucleus) sampling (1.0 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p sampling (0.0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Locally typical sampling (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub typical: f32,
    /// Penalty for repeating recent tokens (1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at (0 = off).
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Frequency penalty (0.0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Presence penalty (0.0 = off).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Random seed (default: a random one).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context size in tokens (default: the model's, capped at 4096).
    #[arg(short, long)]
    pub ctx_size: Option<usize>,
    /// KV cache element type.
    #[arg(long, value_enum, default_value_t = CacheType::F16)]
    pub cache_type: CacheType,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// Wrap the prompt in the model's chat template (system + user turn, generation prompt).
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Stop when the output contains this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

/// Set by the first Ctrl-C: generation stops after the current token. A second Ctrl-C exits at once.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CTRL_C_COUNT: AtomicUsize = AtomicUsize::new(0);

fn install_ctrl_c() {
    // An error here only means a handler is already installed (run called twice in one process).
    let _ = ctrlc::set_handler(|| {
        if CTRL_C_COUNT.fetch_add(1, Ordering::SeqCst) > 0 {
            eprintln!("\ninterrupted twice: exiting");
            std::process::exit(130);
        }
        INTERRUPTED.store(true, Ordering::SeqCst);
    });
}

/// The prompt text from `--prompt`, `--prompt -` (stdin) or `--file`; it must be UTF-8.
fn read_prompt(a: &RunArgs) -> Result<String> {
    let not_utf8 = |what: &str| Error::Usage(format!("the prompt ({what}) is not valid UTF-8"));
    match (&a.prompt, &a.file) {
        (Some(p), _) if p == "-" => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Error::io("<stdin>", e))?;
            String::from_utf8(buf).map_err(|_| not_utf8("standard input"))
        }
        (Some(p), _) => p
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| not_utf8("--prompt")),
        (None, Some(f)) => {
            let buf = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            String::from_utf8(buf).map_err(|_| not_utf8(&f.display().to_string()))
        }
        (None, None) => Err(Error::Usage(
            "give a prompt with --prompt TEXT, --prompt - or --file F".into(),
        )),
    }
}

/// Read every weight page once (the memory map loads lazily), with a progress bar on stderr when it is a terminal.
fn prefault(model: &Model) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut mats = vec![model.token_embd];
    if !std::ptr::eq(model.output.data, model.token_embd.data) {
        mats.push(model.output);
    }
    for l in &model.layers {
        mats.extend([l.wq, l.wk, l.wv, l.wo, l.w_gate, l.w_up, l.w_down]);
    }
    let total: usize = mats.iter().map(|m| m.data.len()).sum::<usize>().max(1);
    let (mut done, mut sink, mut drawn) = (0usize, 0u8, usize::MAX);
    for m in &mats {
        for chunk in m.data.chunks(1 << 20) {
            sink ^= chunk.iter().step_by(4096).fold(0u8, |a, &b| a ^ b);
            done += chunk.len();
            let ticks = done * 40 / total;
            if tty && ticks != drawn {
                drawn = ticks;
                eprint!(
                    "\rloading [{:<40}] {:3}%",
                    "=".repeat(ticks),
                    done * 100 / total
                );
            }
        }
    }
    std::hint::black_box(sink);
    if tty {
        eprintln!();
    } else {
        eprintln!(
            "loaded {:.1} MiB of weights",
            total as f64 / (1 << 20) as f64
        );
    }
}

pub fn run(a: RunArgs) -> Result<()> {
    let text = read_prompt(&a)?;
    if let Some(n) = a.threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        // fails only when the pool was already built: keep the existing one
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    let device = Device::select(a.device)?;

    let t_load = Instant::now();
    let file = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let model = Model::load(&file)?;
    let c = &model.config;
    eprintln!(
        "model: {} ({:?}), {} layers, dim {}, {} heads ({} kv), vocab {}, {:.1} MiB of weights",
        a.model.display(),
        c.arch,
        c.n_layers,
        c.dim,
        c.n_heads,
        c.n_kv_heads,
        model.n_vocab(),
        model.weight_bytes() as f64 / (1 << 20) as f64
    );
    if device == Device::Cpu {
        prefault(&model);
    }
    let ctx_size = match a.ctx_size {
        Some(0) | None => c.context_len.clamp(1, DEFAULT_CTX_CAP),
        Some(n) => {
            if n > c.context_len {
                eprintln!(
                    "warning: --ctx-size {n} is larger than the model's trained context of {}",
                    c.context_len
                );
            }
            n
        }
    };
    let kv_dims = (c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim_v);
    let kv_bytes = KvCache::bytes_for(c.n_layers, ctx_size, kv_dims.0, kv_dims.1, a.cache_type);
    if device == Device::Cpu {
        eprintln!(
            "kv cache: {ctx_size} positions, {}, {:.1} MiB; device: cpu, {} threads",
            a.cache_type.name(),
            kv_bytes as f64 / (1 << 20) as f64,
            rayon::current_num_threads()
        );
    }
    // the GPU keeps its KV cache in f16 and prints its memory plan
    let mut fwd = device.open_forward(&model, ctx_size, a.cache_type)?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;

    let chat = a.chat.then_some(a.system.as_deref());
    let prompt = generate::prompt_tokens(&tok, &text, chat)?;
    let params = SamplingParams {
        temperature: a.temp,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        typical_p: a.typical,
        repeat_penalty: a.repeat_penalty,
        repeat_last_n: a.repeat_last_n,
        frequency_penalty: a.frequency_penalty,
        presence_penalty: a.presence_penalty,
        seed: a.seed.unwrap_or_else(crate::sampler::random_seed),
        ..SamplingParams::default()
    };
    params.validate(model.n_vocab())?;
    let mut sampler = Sampler::new(params);
    let opts = GenOptions {
        n_predict: usize::try_from(a.n_predict).ok(),
        stop: a.stop.clone(),
        ignore_eos: a.ignore_eos,
    };

    install_ctrl_c();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let g = generate::generate(
        fwd.as_mut(),
        &tok,
        &mut sampler,
        &prompt,
        &opts,
        &mut out,
        &INTERRUPTED,
    )?;
    drop(out);
    eprintln!(
        "\nstopped: {} after {} tokens",
        g.reason.describe(),
        g.tokens.len()
    );
    eprintln!("{:>12} = {:10.2} ms", "load time", load_ms);
    eprint!("{}", g.timings.report());
    Ok(())
}
