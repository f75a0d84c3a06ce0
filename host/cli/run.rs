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
use crate::model::{Forward, Model};
use crate::sampler::{Sampler, SamplingParams};
use crate::tokenizer::{ChatMessage, Tokenizer};
use crate::{Error, Result};

/// Context size when `--ctx-size` is not given: the model's, capped at this.
const DEFAULT_CTX_CAP: usize = 4096;

/// Tokens generated when `-n` is not given: enough for an answer of several paragraphs, a bound on a small model
/// that repeats itself (llama.cpp's tools default to -1 and go on until the context is full).
pub const DEFAULT_N_PREDICT: i64 = 512;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Path to a .gguf model file.
    pub model: PathBuf,
    /// The prompt ("-" reads standard input); text that starts with '-' is a prompt too.
    #[arg(short, long, value_parser = clap::value_parser!(OsString), conflicts_with = "file", allow_hyphen_values = true)]
    pub prompt: Option<OsString>,
    /// Read the prompt from this file (with --parallel: one prompt per non-empty line).
    #[arg(short, long)]
    pub file: Option<PathBuf>,
    /// Generate for many prompts at once on the CPU, at most N sequences in each forward call (continuous
    /// batching): the lines of --file, or N copies of --prompt (sequence i samples with seed + i). Each output
    /// is printed, labelled, when its sequence ends.
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// Wrap the prompt in the model's chat template (system + user turn, generation prompt).
    #[arg(long)]
    pub chat: bool,
    #[command(flatten)]
    pub template: TemplateArgs,
    #[command(flatten)]
    pub gen: GenArgs,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// The chat template and what is printed of the prompt (`run` and `chat`).
#[derive(clap::Args, Debug)]
pub struct TemplateArgs {
    /// System message (run: with --chat).
    #[arg(long, allow_hyphen_values = true)]
    pub system: Option<String>,
    /// Render conversations with the Jinja chat template in this file instead of the model's
    /// tokenizer.chat_template (run: implies --chat).
    #[arg(long, value_name = "FILE")]
    pub chat_template: Option<PathBuf>,
    /// Print the prompt as rendered and its tokens (stderr) before generating.
    #[arg(long)]
    pub verbose_prompt: bool,
}

/// Generation and sampling settings (`run` and `chat`).
#[derive(clap::Args, Debug)]
pub struct GenArgs {
    /// Tokens to generate at most (chat: per reply); -1: until end of generation or the context is full
    /// (llama.cpp's default).
    #[arg(short = 'n', long = "n-predict", default_value_t = DEFAULT_N_PREDICT, allow_negative_numbers = true)]
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
    /// Stop when the output contains this text (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub stop: Vec<String>,
    /// Do not stop at end-of-generation tokens.
    #[arg(long)]
    pub ignore_eos: bool,
}

impl GenArgs {
    /// The sampler settings, checked against the vocabulary.
    pub fn sampling(&self, n_vocab: usize) -> Result<SamplingParams> {
        let params = SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: self.seed.unwrap_or_else(crate::sampler::random_seed),
            ..SamplingParams::default()
        };
        params.validate(n_vocab)?;
        Ok(params)
    }

    pub fn options(&self) -> GenOptions {
        GenOptions {
            n_predict: usize::try_from(self.n_predict).ok(),
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
        }
    }
}

/// Where and with how much context the model runs (`run` and `chat`).
#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Context size in tokens (default: the model's, capped at 4096).
    #[arg(short, long)]
    pub ctx_size: Option<usize>,
    /// KV cache element type, keys and values (llama.cpp's -ctk / -ctv); the GPU keeps f16 or q8_0.
    #[arg(long, value_enum, default_value_t = CacheType::F16)]
    pub cache_type: CacheType,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
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

/// Applies `--threads` to the global pool.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        // fails only when the pool was already built: keep the existing one
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global();
    }
    Ok(())
}

/// Prints the model's shape (stderr).
pub fn describe_model(path: &std::path::Path, model: &Model) {
    let c = &model.config;
    eprintln!(
        "model: {} ({:?}), {} layers, dim {}, {} heads ({} kv), vocab {}, {:.1} MiB of weights",
        path.display(),
        c.arch,
        c.n_layers,
        c.dim,
        c.n_heads,
        c.n_kv_heads,
        model.n_vocab(),
        model.weight_bytes() as f64 / (1 << 20) as f64
    );
}

/// The forward pass of `model` on `device` with the context of `--ctx-size`: weights uploaded (GPU), KV cache
/// allocated, sizes printed on stderr. (`Model::load` has read the weights from disk already.)
pub fn open_forward<'a>(model: &'a Model, a: &LoadArgs, device: Device) -> Result<Box<dyn Forward + 'a>> {
    let c = &model.config;
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
    // the GPU keeps its KV cache in f16 or q8_0 (f32 is refused there) and prints its memory plan
    device.open_forward(model, ctx_size, a.cache_type)
}

/// The text of `--chat-template FILE`.
pub fn read_template(path: Option<&std::path::Path>) -> Result<Option<String>> {
    path.map(|p| std::fs::read_to_string(p).map_err(|e| Error::io(p, e))).transpose()
}

/// `--verbose-prompt`: the prompt text as the model gets it, its token count and its tokens, on stderr.
pub fn print_prompt(tok: &Tokenizer, text: &str, ids: &[u32], n_cached: usize) {
    let mut s = format!("prompt: '{text}'\nnumber of tokens in prompt = {}", ids.len());
    if n_cached > 0 {
        s += &format!(" ({n_cached} cached, {} new)", ids.len() - n_cached);
    }
    s.push('\n');
    for &id in &ids[n_cached..] {
        s += &format!("{id:6} -> '{}'\n", String::from_utf8_lossy(tok.token_bytes(id)).escape_debug());
    }
    eprint!("{s}");
}

pub fn run(a: RunArgs) -> Result<()> {
    if a.parallel.is_some() {
        return run_parallel(a);
    }
    let text = read_prompt(&a)?;
    let chat = a.chat || a.template.chat_template.is_some();
    if a.template.system.is_some() && !chat {
        return Err(Error::Usage("--system needs --chat (or --chat-template FILE)".into()));
    }
    let template = read_template(a.template.chat_template.as_deref())?;
    set_threads(a.load.threads)?;
    let device = Device::select(a.load.device)?;

    let t_load = Instant::now();
    let file = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let model = Model::load(&file)?;
    describe_model(&a.model, &model);
    let params = a.gen.sampling(model.n_vocab())?;
    let rendered = if chat {
        let mut msgs = Vec::new();
        if let Some(sys) = &a.template.system {
            msgs.push(ChatMessage::new("system", sys.as_str()));
        }
        msgs.push(ChatMessage::new("user", text.as_str()));
        generate::render_chat(&tok, template.as_deref(), &msgs)?
    } else {
        text
    };
    let prompt = generate::encode_prompt(&tok, &rendered, chat)?;
    let mut fwd = open_forward(&model, &a.load, device)?;
    let load_ms = t_load.elapsed().as_secs_f64() * 1e3;
    if a.template.verbose_prompt {
        print_prompt(&tok, &rendered, &prompt, 0);
    }

    let mut sampler = Sampler::new(params);
    let opts = a.gen.options();
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

/// `host run --parallel N`: many prompts through the batch forward of the device (CPU or CUDA).
fn run_parallel(a: RunArgs) -> Result<()> {
    let n_slots = a.parallel.unwrap_or(1);
    if n_slots == 0 {
        return Err(Error::Usage("--parallel must be at least 1".into()));
    }
    let device = Device::select(a.load.device)?;
    let text = read_prompt(&a)?;
    let texts: Vec<String> = if a.file.is_some() {
        text.lines().map(str::trim_end).filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    } else {
        vec![text; n_slots]
    };
    if texts.is_empty() {
        return Err(Error::Usage("--parallel: the file holds no prompt (one per non-empty line)".into()));
    }
    let chat = a.chat || a.template.chat_template.is_some();
    if a.template.system.is_some() && !chat {
        return Err(Error::Usage("--system needs --chat (or --chat-template FILE)".into()));
    }
    let template = read_template(a.template.chat_template.as_deref())?;
    set_threads(a.load.threads)?;
    let file = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let model = Model::load(&file)?;
    describe_model(&a.model, &model);
    let params = a.gen.sampling(model.n_vocab())?;
    let mut prompts = Vec::with_capacity(texts.len());
    for t in &texts {
        let rendered = if chat {
            let mut msgs = Vec::new();
            if let Some(sys) = &a.template.system {
                msgs.push(ChatMessage::new("system", sys.as_str()));
            }
            msgs.push(ChatMessage::new("user", t.as_str()));
            generate::render_chat(&tok, template.as_deref(), &msgs)?
        } else {
            t.clone()
        };
        let ids = generate::encode_prompt(&tok, &rendered, chat)?;
        if a.template.verbose_prompt {
            print_prompt(&tok, &rendered, &ids, 0);
        }
        prompts.push(ids);
    }
    let ctx_size = match a.load.ctx_size {
        Some(0) | None => model.config.context_len.clamp(1, DEFAULT_CTX_CAP),
        Some(n) => n,
    };
    let page = crate::kv_paged::DEFAULT_PAGE_SIZE;
    let capacity = n_slots.min(prompts.len()) * ctx_size.next_multiple_of(page);
    let mut bf = device.open_batch_forward(&model, capacity, ctx_size, a.load.cache_type)?;
    let where_ = match device {
        Device::Cpu => format!("cpu, {} threads", rayon::current_num_threads()),
        Device::Cuda { ordinal } => format!("cuda {ordinal}"),
    };
    eprintln!(
        "kv cache: {} positions in pages of {page} ({} per sequence, {} sequences at once), {}, {:.1} MiB; {} prompts; \
         device: {where_}",
        bf.capacity(),
        ctx_size,
        n_slots.min(prompts.len()),
        if device == Device::Cpu { a.load.cache_type.name() } else { "f16" },
        bf.kv_bytes() as f64 / (1 << 20) as f64,
        prompts.len(),
    );
    install_ctrl_c();
    let opts = a.gen.options();
    let t0 = Instant::now();
    let mut print = |o: &generate::SeqOutput| -> Result<()> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "--- [{}] {:?} ({} prompt tokens, {} generated, stopped: {}) ---\n{}",
            o.index,
            texts[o.index],
            o.prompt_tokens,
            o.tokens.len(),
            o.reason.describe(),
            o.text
        )
        .and_then(|_| out.flush())
        .map_err(|e| Error::Generate(format!("cannot write the output: {e}")))
    };
    let outs = generate::generate_parallel(bf.as_mut(), &tok, &params, &prompts, n_slots, &opts, &mut print, &INTERRUPTED)?;
    let secs = t0.elapsed().as_secs_f64();
    let n_prompt: usize = outs.iter().map(|o| o.prompt_tokens).sum();
    let n_gen: usize = outs.iter().map(|o| o.tokens.len()).sum();
    eprintln!(
        "{} sequences: {n_prompt} prompt tokens, {n_gen} generated in {:.2} s ({:.2} tokens per second in all)",
        outs.len(),
        secs,
        (n_prompt + n_gen) as f64 / secs
    );
    Ok(())
}
