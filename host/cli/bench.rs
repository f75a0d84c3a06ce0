//! `host bench`: prompt-processing and generation speed, measured the way llama.cpp's `llama-bench` measures it
//! (docs/PERFORMANCE.md section 5), so that the two tables compare row for row.
//!
//! Per model and test: one warm-up run, then `-r` repetitions, each one clearing the KV cache, filling
//! `-d` positions untimed, then timing on the host wall clock
//! - `pp<N>`: one forward of N tokens from the cache position (logits of the last token only), then a sync;
//! - `tg<N>`: N one-token steps, each followed by a sync (CUDA: the captured greedy decode graph with device
//!   argmax; CPU: forward + argmax), each step's token being the previous step's choice.
//!
//! The token ids are fixed pseudo-random ones (BOS first when the model adds one); no tokenizer is involved.
//! Each repetition gives tokens / seconds; the table shows mean ± sample standard deviation of those rates.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backend::Device;
use crate::batch::{Batch, BatchForward};
use crate::kv_paged::{SeqId, DEFAULT_PAGE_SIZE};
use crate::cli::DeviceArg;
use crate::gguf::{GgmlType, GgufFile};
use crate::kv_cache::CacheType;
use crate::model::{greedy_next, Forward, Model};
use crate::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// .gguf model files, benchmarked one after the other.
    #[arg(required = true)]
    pub models: Vec<PathBuf>,
    /// Prompt tokens of the pp test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the tg test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Positions filled (untimed) before each test, as llama-bench's -d: tests are named "pp512 @ d4096".
    #[arg(short = 'd', long = "n-depth", default_value_t = 0)]
    pub n_depth: usize,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// Where to compute.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// KV cache element type, keys and values (llama-bench's -ctk / -ctv); the GPU keeps f16 or q8_0.
    #[arg(long, value_enum, default_value_t = CacheType::F16)]
    pub cache_type: CacheType,
    /// CPU threads (default: all cores).
    #[arg(short, long)]
    pub threads: Option<usize>,
    /// One JSON object per test and line instead of the markdown table.
    #[arg(long)]
    pub json: bool,
    /// Skip the warm-up runs.
    #[arg(long)]
    pub no_warmup: bool,
    /// Batched bench (CPU), as llama-batched-bench: for each count B of this comma-separated list, B sequences
    /// each with a -p token prompt (all prompts in one batch) and -n generated tokens (one batch of B per step);
    /// prints prompt and aggregate generation t/s, and generation t/s per sequence.
    #[arg(long, value_delimiter = ',')]
    pub parallel: Vec<usize>,
}

impl BenchArgs {
    /// llama-bench's defaults for `models`: -p 512 -n 128 -r 5, no depth, device auto.
    pub fn new(models: Vec<PathBuf>) -> BenchArgs {
        BenchArgs {
            models,
            n_prompt: 512,
            n_gen: 128,
            n_depth: 0,
            reps: 5,
            device: DeviceArg::Auto,
            cache_type: CacheType::F16,
            threads: None,
            json: false,
            no_warmup: false,
            parallel: Vec::new(),
        }
    }
}

// ----------------------------------------------------------------------------
// Results: one per (model, test), with llama-bench's statistics and formats
// ----------------------------------------------------------------------------

/// What a model is, for the first three columns.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The model's name and the type of most of its block weights, e.g. "synth-llama-7b Q4_0", "smollm2 135M Q4_1".
    pub label: String,
    /// Bytes of tensor data.
    pub size: u64,
    /// Elements of all tensors.
    pub params: u64,
}

impl ModelInfo {
    pub fn of(f: &GgufFile) -> ModelInfo {
        // "basename size_label" when the file has both (short, like llama-bench's "llama 7B"), else general.name,
        // else the file stem
        let text = |k: &str| f.get_str(k).ok().map(str::trim).filter(|v| !v.is_empty());
        let name = match (text("general.basename"), text("general.size_label"), text("general.name")) {
            (Some(b), Some(s), _) => format!("{b} {s}"),
            (_, _, Some(n)) => n.to_string(),
            _ => f.path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
        };
        // the type holding most elements among the blocks' matrices (all matrices when there are no blocks)
        let mut by_type: Vec<(GgmlType, u64)> = Vec::new();
        let blocks = f.tensors.iter().any(|t| t.name.starts_with("blk.") && t.dims.len() >= 2);
        for t in f.tensors.iter().filter(|t| t.dims.len() >= 2 && (!blocks || t.name.starts_with("blk."))) {
            match by_type.iter_mut().find(|(ty, _)| *ty == t.ggml_type) {
                Some(e) => e.1 += t.n_elements(),
                None => by_type.push((t.ggml_type, t.n_elements())),
            }
        }
        // one type throughout: its name; a mix: llama.cpp's name for general.file_type ("Q4_K_M"), else the
        // type holding most elements
        let mixed_name = f.get_u32("general.file_type").ok().and_then(ftype_name);
        let ty = match (by_type.len(), mixed_name) {
            (0, _) => None,
            (1, _) | (_, None) => by_type.iter().max_by_key(|e| e.1).map(|e| e.0.name()),
            (_, Some(n)) => Some(n),
        };
        let label = match ty {
            Some(ty) => format!("{name} {ty}"),
            None => name,
        };
        ModelInfo {
            label,
            size: f.tensors.iter().map(|t| t.n_bytes).sum(),
            params: f.tensors.iter().map(|t| t.n_elements()).sum(),
        }
    }
}

/// llama.cpp's short name of a `general.file_type` (enum llama_ftype).
fn ftype_name(ftype: u32) -> Option<&'static str> {
    Some(match ftype {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        32 => "BF16",
        _ => return None,
    })
}

/// One benchmark row.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub model: ModelInfo,
    pub model_filename: String,
    pub backend: &'static str, // "CPU" or "CUDA"
    pub n_threads: usize,
    pub n_prompt: usize, // pp tests: tokens per run, else 0
    pub n_gen: usize,    // tg tests: tokens per run, else 0
    pub n_depth: usize,
    pub n_ctx: usize,
    /// KV cache element type (keys and values).
    pub cache_type: CacheType,
    /// Wall time of each repetition.
    pub samples_ns: Vec<u64>,
}

impl BenchResult {
    /// llama-bench's test name: "pp512", "tg128", with " @ d4096" at depth.
    pub fn test_name(&self) -> String {
        let base = if self.n_gen == 0 { format!("pp{}", self.n_prompt) } else { format!("tg{}", self.n_gen) };
        match self.n_depth {
            0 => base,
            d => format!("{base} @ d{d}"),
        }
    }

    /// Tokens per second of each repetition.
    pub fn samples_ts(&self) -> Vec<f64> {
        let n = (self.n_prompt + self.n_gen) as f64;
        self.samples_ns.iter().map(|&ns| 1e9 * n / ns.max(1) as f64).collect()
    }

    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts())
    }

    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let ns: Vec<f64> = self.samples_ns.iter().map(|&n| n as f64).collect();
        let ts = self.samples_ts();
        serde_json::json!({
            "model": self.model.label,
            "model_filename": self.model_filename,
            "size": self.model.size,
            "params": self.model.params,
            "backend": self.backend,
            "n_threads": self.n_threads,
            "test": self.test_name(),
            "n_prompt": self.n_prompt,
            "n_gen": self.n_gen,
            "n_depth": self.n_depth,
            "n_ctx": self.n_ctx,
            "type_k": self.cache_type.name(),
            "type_v": self.cache_type.name(),
            "avg_ns": mean(&ns).round() as u64,
            "stddev_ns": stddev(&ns).round() as u64,
            "avg_ts": self.avg_ts(),
            "stddev_ts": self.stddev_ts(),
            "median_ts": median(&ts),
            "samples_ns": self.samples_ns,
            "samples_ts": ts,
        })
    }

    /// The markdown row under `table_header(self.cache_type)`.
    pub fn table_row(&self) -> String {
        format!(
            "| {:<30} | {:>10} | {:>10} | {:<10} |{} {:>15} | {:>20} |",
            self.model.label,
            format_size(self.model.size),
            format_params(self.model.params),
            self.backend,
            kv_cells(self.cache_type, self.cache_type.name(), self.cache_type.name()),
            self.test_name(),
            format!("{:.2} ± {:.2}", self.avg_ts(), self.stddev_ts())
        )
    }
}

/// The type_k and type_v cells, which llama-bench shows only when the cache is not f16.
fn kv_cells(kv: CacheType, k: &str, v: &str) -> String {
    if kv == CacheType::F16 {
        String::new()
    } else {
        format!(" {k:<6} | {v:<6} |")
    }
}

/// The two header lines of the markdown table of results with a KV cache of `kv`.
pub fn table_header(kv: CacheType) -> String {
    format!(
        "| {:<30} | {:>10} | {:>10} | {:<10} |{} {:>15} | {:>20} |\n| {} | {}: | {}: | {} |{} {}: | {}: |",
        "model",
        "size",
        "params",
        "backend",
        kv_cells(kv, "type_k", "type_v"),
        "test",
        "t/s",
        "-".repeat(30),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(10),
        kv_cells(kv, &"-".repeat(6), &"-".repeat(6)),
        "-".repeat(14),
        "-".repeat(19)
    )
}

/// llama-bench's size column: MiB below 1 GiB, else GiB.
pub fn format_size(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    }
}

/// llama-bench's params column: millions below 1e9, else billions.
pub fn format_params(n: u64) -> String {
    if n < 1_000_000_000 {
        format!("{:.2} M", n as f64 / 1e6)
    } else {
        format!("{:.2} B", n as f64 / 1e9)
    }
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Sample standard deviation (N - 1); 0 for fewer than two samples, as llama-bench.
fn stddev(x: &[f64]) -> f64 {
    if x.len() < 2 {
        return 0.0;
    }
    let m = mean(x);
    (x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (x.len() - 1) as f64).sqrt()
}

fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    let h = s.len() / 2;
    if s.len() % 2 == 1 {
        s[h]
    } else {
        (s[h - 1] + s[h]) / 2.0
    }
}

/// Fixed pseudo-random token ids (xorshift64*), BOS first when the model adds one.
struct Tokens {
    state: u64,
    n_vocab: u32,
    bos: Option<u32>,
}

impl Tokens {
    fn new(f: &GgufFile, n_vocab: usize) -> Tokens {
        // llama.cpp adds BOS per tokenizer.ggml.add_bos_token, default true for SentencePiece vocabularies
        let spm = f.get_str("tokenizer.ggml.model").is_ok_and(|m| m == "llama");
        let add_bos = f.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(spm);
        let bos = f.get_u32("tokenizer.ggml.bos_token_id").ok().filter(|&b| add_bos && (b as usize) < n_vocab);
        Tokens { state: 0x2545_F491_4F6C_DD1D, n_vocab: n_vocab as u32, bos }
    }

    fn random(&mut self) -> u32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32 % self.n_vocab
    }

    fn first(&mut self) -> u32 {
        self.bos.unwrap_or_else(|| self.random())
    }

    /// A prompt of `n` ids.
    fn prompt(&mut self, n: usize) -> Vec<u32> {
        let mut v = Vec::with_capacity(n);
        if n > 0 {
            v.push(self.first());
        }
        v.extend((1..n).map(|_| self.random()));
        v
    }
}

// ----------------------------------------------------------------------------
// Timing one test
// ----------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Test {
    Prompt(usize),
    Gen(usize),
}

/// Clears the cache, fills `depth` positions and syncs: the untimed start of every run.
fn start_run(r: &mut dyn Forward, depth: &[u32]) -> Result<()> {
    r.reset();
    if !depth.is_empty() {
        r.forward(depth, 0)?;
    }
    r.synchronize()
}

/// The timed part of one run.
fn timed_run(r: &mut dyn Forward, test: Test, prompt: &[u32], first: u32, pos: usize) -> Result<u64> {
    let t0 = Instant::now();
    match test {
        Test::Prompt(_) => {
            r.forward(prompt, pos)?;
            r.synchronize()?;
        }
        Test::Gen(n) => {
            let mut tok = first;
            for i in 0..n {
                tok = greedy_next(r, tok, pos + i)?;
                r.synchronize()?;
            }
        }
    }
    Ok(t0.elapsed().as_nanos() as u64)
}

/// Warm-up (unless `no_warmup`: a full prompt run for pp, one token for tg, as llama-bench) and `reps` timed
/// runs; returns the wall time of each.
fn time_test(r: &mut dyn Forward, test: Test, a: &BenchArgs, toks: &mut Tokens) -> Result<Vec<u64>> {
    let depth = toks.prompt(a.n_depth);
    let prompt = match test {
        Test::Prompt(n) => toks.prompt(n),
        Test::Gen(_) => Vec::new(),
    };
    let first = toks.first();
    if !a.no_warmup {
        start_run(r, &depth)?;
        let warm = match test {
            Test::Prompt(n) => Test::Prompt(n),
            Test::Gen(_) => Test::Gen(1),
        };
        timed_run(r, warm, &prompt, first, a.n_depth)?;
    }
    let mut samples = Vec::with_capacity(a.reps);
    for _ in 0..a.reps {
        start_run(r, &depth)?;
        samples.push(timed_run(r, test, &prompt, first, a.n_depth)?);
    }
    Ok(samples)
}

// ----------------------------------------------------------------------------
// Driver
// ----------------------------------------------------------------------------

fn check_args(a: &BenchArgs) -> Result<()> {
    if a.reps == 0 {
        return Err(Error::Usage("bench: -r must be at least 1".into()));
    }
    if a.n_prompt == 0 && a.n_gen == 0 {
        return Err(Error::Usage("bench: -p 0 and -n 0 leave nothing to measure".into()));
    }
    if a.threads == Some(0) {
        return Err(Error::Usage("bench: --threads must be at least 1".into()));
    }
    Ok(())
}

/// Benchmarks one model: the pp test then the tg test (each when asked for), calling `on_result` as each ends.
pub fn bench_model(path: &Path, a: &BenchArgs, on_result: &mut dyn FnMut(&BenchResult)) -> Result<Vec<BenchResult>> {
    check_args(a)?;
    let device = Device::select(a.device)?;
    let file = GgufFile::open(path)?;
    let model = Model::load(&file)?;
    let info = ModelInfo::of(&file);
    let n_ctx = a.n_depth + a.n_prompt + a.n_gen;
    let mut runner = device.open_forward(&model, n_ctx, a.cache_type)?;
    let (backend, n_threads) = match device {
        Device::Cpu => ("CPU", rayon::current_num_threads()),
        Device::Cuda { .. } => ("CUDA", 1),
    };
    eprintln!(
        "bench: {} ({}, {}, {} params), {backend}, context {n_ctx}",
        path.display(),
        info.label,
        format_size(info.size),
        format_params(info.params)
    );
    let mut toks = Tokens::new(&file, model.n_vocab());
    let mut out = Vec::new();
    let tests = [(a.n_prompt > 0).then_some(Test::Prompt(a.n_prompt)), (a.n_gen > 0).then_some(Test::Gen(a.n_gen))];
    for test in tests.into_iter().flatten() {
        let samples_ns = time_test(runner.as_mut(), test, a, &mut toks)?;
        let (n_prompt, n_gen) = match test {
            Test::Prompt(n) => (n, 0),
            Test::Gen(n) => (0, n),
        };
        let r = BenchResult {
            model: info.clone(),
            model_filename: path.display().to_string(),
            backend,
            n_threads,
            n_prompt,
            n_gen,
            n_depth: a.n_depth,
            n_ctx,
            cache_type: a.cache_type,
            samples_ns,
        };
        on_result(&r);
        out.push(r);
    }
    Ok(out)
}

pub fn run(a: BenchArgs) -> Result<()> {
    check_args(&a)?;
    if let Some(n) = a.threads {
        // fails only when the pool was already built: keep the existing one
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    if !a.parallel.is_empty() {
        return run_parallel(&a);
    }
    if !a.json {
        println!("{}", table_header(a.cache_type));
    }
    let mut print = |r: &BenchResult| {
        if a.json {
            println!("{}", r.to_json());
        } else {
            println!("{}", r.table_row());
        }
    };
    for path in &a.models {
        bench_model(path, &a, &mut print)?;
    }
    Ok(())
}

// ----------------------------------------------------------------------------
// --parallel: many sequences through the batch forward
// ----------------------------------------------------------------------------

/// One row of the batched bench: `n_seq` sequences of `n_prompt` prompt and `n_gen` generated tokens; mean
/// seconds of the prompt batch and of the generation steps over the repetitions.
#[derive(Debug, Clone)]
pub struct ParallelResult {
    pub model: ModelInfo,
    pub n_seq: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    pub t_prompt: f64,
    pub t_gen: f64,
}

impl ParallelResult {
    /// Prompt tokens per second over all sequences.
    pub fn prompt_ts(&self) -> f64 {
        (self.n_seq * self.n_prompt) as f64 / self.t_prompt
    }

    /// Generated tokens per second over all sequences.
    pub fn gen_ts(&self) -> f64 {
        (self.n_seq * self.n_gen) as f64 / self.t_gen
    }

    /// Generated tokens per second of each sequence.
    pub fn gen_ts_per_seq(&self) -> f64 {
        self.n_gen as f64 / self.t_gen
    }

    pub fn table_row(&self) -> String {
        let f = |x: f64| if x.is_finite() { format!("{x:.2}") } else { "-".into() };
        format!(
            "| {:<30} | {:>4} | {:>5} | {:>5} | {:>6} | {:>8.3} | {:>10} | {:>8.3} | {:>10} | {:>12} |",
            self.model.label,
            self.n_seq,
            self.n_prompt,
            self.n_gen,
            self.n_seq * (self.n_prompt + self.n_gen),
            self.t_prompt,
            f(self.prompt_ts()),
            self.t_gen,
            f(self.gen_ts()),
            f(self.gen_ts_per_seq()),
        )
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model.label, "n_seq": self.n_seq, "n_prompt": self.n_prompt, "n_gen": self.n_gen,
            "t_prompt_s": self.t_prompt, "prompt_ts": self.prompt_ts(), "t_gen_s": self.t_gen,
            "gen_ts": self.gen_ts(), "gen_ts_per_seq": self.gen_ts_per_seq(),
        })
    }
}

pub fn parallel_header() -> String {
    format!(
        "| {:<30} | {:>4} | {:>5} | {:>5} | {:>6} | {:>8} | {:>10} | {:>8} | {:>10} | {:>12} |\n|{}|{}:|{}:|{}:|{}:|{}:|{}:|{}:|{}:|{}:|",
        "model", "B", "PP", "TG", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "S_TG/seq t/s",
        "-".repeat(32), "-".repeat(5), "-".repeat(6), "-".repeat(6), "-".repeat(7), "-".repeat(9), "-".repeat(11),
        "-".repeat(9), "-".repeat(11), "-".repeat(13),
    )
}

/// One timed run of `prompts.len()` sequences: (prompt seconds, generation seconds).
fn parallel_run(bf: &mut dyn BatchForward, prompts: &[Vec<u32>], first: u32, n_gen: usize) -> Result<(f64, f64)> {
    let n_seq = prompts.len();
    for s in 0..n_seq as SeqId {
        if bf.seq_len(s).is_some() {
            bf.remove_seq(s)?;
        }
        bf.add_seq(s)?;
    }
    let mut batch = Batch::new();
    let mut next = vec![first; n_seq];
    let t0 = Instant::now();
    if !prompts[0].is_empty() {
        for (s, p) in prompts.iter().enumerate() {
            batch.add_tokens(s as SeqId, p, 0);
        }
        let chosen = bf.decode_greedy(&batch)?;
        let mut i = 0;
        for (s, p) in prompts.iter().enumerate() {
            i += p.len();
            next[s] = chosen[i - 1].expect("last prompt token has logits");
        }
    }
    let t_prompt = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..n_gen {
        batch.clear();
        for (s, &t) in next.iter().enumerate() {
            batch.add(s as SeqId, t, bf.seq_len(s as SeqId).unwrap_or(0), true);
        }
        let chosen = bf.decode_greedy(&batch)?;
        for (s, t) in next.iter_mut().enumerate() {
            *t = chosen[s].expect("every decode entry has logits");
        }
    }
    Ok((t_prompt, t1.elapsed().as_secs_f64()))
}

/// The batched bench of one model on the CPU, one result per count of sequences.
pub fn bench_parallel(path: &Path, a: &BenchArgs, on_result: &mut dyn FnMut(&ParallelResult)) -> Result<Vec<ParallelResult>> {
    check_args(a)?;
    let device = Device::select(a.device)?;
    if a.parallel.contains(&0) {
        return Err(Error::Usage("bench --parallel: every count of sequences must be at least 1".into()));
    }
    let file = GgufFile::open(path)?;
    let model = Model::load(&file)?;
    let info = ModelInfo::of(&file);
    let mut toks = Tokens::new(&file, model.n_vocab());
    let ctx = a.n_prompt + a.n_gen;
    let mut out = Vec::new();
    for &n_seq in &a.parallel {
        // whole pages per sequence
        let capacity = n_seq * ctx.next_multiple_of(DEFAULT_PAGE_SIZE);
        let mut bf = device.open_batch_forward(&model, capacity, ctx, a.cache_type)?;
        eprintln!(
            "bench: {n_seq} sequences, kv cache of {} positions in pages of {} ({:.2} MiB), device: {}",
            bf.capacity(),
            DEFAULT_PAGE_SIZE,
            bf.kv_bytes() as f64 / (1 << 20) as f64,
            if device == Device::Cpu { "cpu" } else { "cuda" }
        );
        let prompts: Vec<Vec<u32>> = (0..n_seq).map(|_| toks.prompt(a.n_prompt)).collect();
        let first = toks.first();
        if !a.no_warmup {
            parallel_run(bf.as_mut(), &prompts, first, a.n_gen.min(1))?;
        }
        let (mut tp, mut tg) = (0.0, 0.0);
        for _ in 0..a.reps {
            let (p, g) = parallel_run(bf.as_mut(), &prompts, first, a.n_gen)?;
            tp += p;
            tg += g;
        }
        let r = ParallelResult {
            model: info.clone(),
            n_seq,
            n_prompt: a.n_prompt,
            n_gen: a.n_gen,
            t_prompt: tp / a.reps as f64,
            t_gen: tg / a.reps as f64,
        };
        on_result(&r);
        out.push(r);
    }
    Ok(out)
}

fn run_parallel(a: &BenchArgs) -> Result<()> {
    if !a.json {
        println!("{}", parallel_header());
    }
    let mut print = |r: &ParallelResult| {
        if a.json {
            println!("{}", r.to_json());
        } else {
            println!("{}", r.table_row());
        }
    };
    for path in &a.models {
        bench_parallel(path, a, &mut print)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(n_prompt: usize, n_gen: usize, samples_ns: Vec<u64>) -> BenchResult {
        BenchResult {
            model: ModelInfo { label: "m Q4_0".into(), size: 3_865_470_566, params: 6_880_000_000 },
            model_filename: "m.gguf".into(),
            backend: "CPU",
            n_threads: 2,
            n_prompt,
            n_gen,
            n_depth: 0,
            n_ctx: 640,
            cache_type: CacheType::F16,
            samples_ns,
        }
    }

    #[test]
    fn statistics_are_llama_bench_s() {
        // 128 tokens in 1 s and 0.5 s -> 128 and 256 t/s: mean 192, sample std sqrt(2 * 64^2 / 1) = 90.51
        let r = result(0, 128, vec![1_000_000_000, 500_000_000]);
        assert_eq!(r.samples_ts(), vec![128.0, 256.0]);
        assert_eq!(r.avg_ts(), 192.0);
        assert!((r.stddev_ts() - 90.5097).abs() < 1e-3);
        assert_eq!(result(512, 0, vec![1_000_000_000]).stddev_ts(), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }

    #[test]
    fn names_and_formats() {
        assert_eq!(result(512, 0, vec![1]).test_name(), "pp512");
        let mut r = result(0, 128, vec![1]);
        r.n_depth = 4096;
        assert_eq!(r.test_name(), "tg128 @ d4096");
        assert_eq!(format_size(96_576_512), "92.10 MiB");
        assert_eq!(format_size(3_865_470_566), "3.60 GiB");
        assert_eq!(format_params(134_515_008), "134.52 M");
        assert_eq!(format_params(6_738_415_616), "6.74 B");
    }

    #[test]
    fn rows_line_up_with_the_header() {
        // 512 tokens in 1 s and 0.9 s: 512 and 568.89 t/s, mean 540.44, sample std 56.89 / sqrt(2) = 40.23
        let mut r = result(512, 0, vec![1_000_000_000, 900_000_000]);
        for (kv, want) in [
            (CacheType::F16, vec!["m Q4_0", "3.60 GiB", "6.88 B", "CPU", "pp512", "540.44 ± 40.23"]),
            // llama-bench shows type_k / type_v only for a cache that is not f16
            (CacheType::Q8_0, vec!["m Q4_0", "3.60 GiB", "6.88 B", "CPU", "q8_0", "q8_0", "pp512", "540.44 ± 40.23"]),
        ] {
            r.cache_type = kv;
            let (header, row) = (table_header(kv), r.table_row());
            let mut lines: Vec<&str> = header.lines().collect();
            lines.push(&row);
            let widths: Vec<Vec<usize>> =
                lines.iter().map(|l| l.split('|').map(|c| c.chars().count()).collect()).collect();
            assert_eq!(widths[0], widths[1]);
            assert_eq!(widths[0], widths[2]);
            let cells: Vec<&str> = lines[2].split('|').map(str::trim).collect();
            assert_eq!(cells[1..cells.len() - 1], want[..]);
            assert_eq!(r.to_json()["type_k"], kv.name());
        }
    }
}
