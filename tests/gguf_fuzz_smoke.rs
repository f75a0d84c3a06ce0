//! A fuzz smoke test that needs neither nightly nor cargo-fuzz: replays a seed corpus, then runs seeded random
//! mutations of small valid and hostile GGUF files through the same path as `fuzz/fuzz_targets/gguf_parse.rs`
//! (parse, every tensor slice, config, weights, model, `host inspect`) plus a short CPU forward when a mutant
//! still loads as a model. A panic, a single allocation above 256 MiB or an input slower than the time limit
//! fails the test; the offending input is written to `target/fuzz-smoke-crashes/`.
//!
//! Environment (all optional):
//!   GGUF_FUZZ_SECS    wall-clock budget in seconds (default 3; CI runs 45 through scripts/fuzz-smoke.sh)
//!   GGUF_FUZZ_SEED    u64 seed, decimal or 0x-hex (default fixed; printed either way)
//!   GGUF_FUZZ_CORPUS  a directory of extra seeds, e.g. the hostile corpus that tests/gguf_hostile.rs writes
//!                     with GGUF_CORPUS_OUT (fuzz/corpus/gguf_parse is read too when it exists)
//!   GGUF_FUZZ_THREADS worker threads (default: available cores, at most 4)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use host::cli::inspect;
use host::gguf::{tiny_model, Array, Encoder, GgmlType, GgufFile, TinySpec, Value};
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};
use host::rng::SplitMix64 as Rng;
use host::tokenizer::Tokenizer;

// ----------------------------------------------------------------------------
// Allocation guard: a single allocation above the limit saves the current input and aborts
// ----------------------------------------------------------------------------

const MAX_ALLOC: usize = 256 << 20;
const CRASH_DIR: &str = "target/fuzz-smoke-crashes";

struct Guard;

thread_local! {
    /// The input this thread is running (pointer, length), for the crash file.
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
    /// Set while the guard itself writes a crash file.
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
}

fn oversize(size: usize) {
    if IN_GUARD.try_with(|g| g.replace(true)).unwrap_or(true) {
        return;
    }
    if let Ok((p, n)) = CURRENT.try_with(|c| c.get()) {
        if !p.is_null() {
            // SAFETY: CURRENT points at the input the running exec borrows; it outlives the exec.
            let input = unsafe { std::slice::from_raw_parts(p, n) };
            let path = save_crash(input, "oom");
            eprintln!("fuzz-smoke: allocation of {size} bytes (limit {MAX_ALLOC}); input saved to {path:?}");
        }
    }
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            oversize(layout.size());
            return std::ptr::null_mut(); // the alloc error handler aborts the process
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ALLOC {
            oversize(layout.size());
            return std::ptr::null_mut();
        }
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ALLOC {
            oversize(new_size);
            return std::ptr::null_mut();
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

/// Writes `input` under CRASH_DIR (named by kind and content hash) and returns the path.
fn save_crash(input: &[u8], kind: &str) -> PathBuf {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a
    for &b in input {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(CRASH_DIR);
    let path = dir.join(format!("{kind}-{h:016x}.gguf"));
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(&path, input);
    path
}

// ----------------------------------------------------------------------------
// The target: what fuzz/fuzz_targets/gguf_parse.rs does, plus Model::load and a forward
// ----------------------------------------------------------------------------

#[derive(Default)]
struct Outcomes {
    open_err: AtomicU64,
    config_err: AtomicU64,
    model_err: AtomicU64,
    loaded: AtomicU64,
    tokenizers: AtomicU64,
    forwards: AtomicU64,
}

fn run_one(data: &[u8], out: &Outcomes) {
    let Ok(f) = GgufFile::from_bytes(data, "fuzz.gguf") else {
        out.open_err.fetch_add(1, Ordering::Relaxed);
        return;
    };
    for t in &f.tensors {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes, "tensor '{}' slice of the wrong length", t.name);
    }
    std::hint::black_box(inspect::to_json(&f));
    std::hint::black_box(inspect::to_text(&f));
    if let Ok(tok) = Tokenizer::from_gguf(&f) {
        out.tokenizers.fetch_add(1, Ordering::Relaxed);
        for text in ["Hello world", " t3t4 <s></s>\u{e9}\u{1F600}\n\t  x"] {
            if let Ok(ids) = tok.encode(text, true, true) {
                let n = tok.vocab_size() as u32;
                assert!(ids.iter().all(|&i| i < n), "token id outside the vocabulary of {n}: {ids:?}");
                std::hint::black_box(tok.decode(&ids));
            }
        }
        let n = tok.vocab_size() as u32;
        std::hint::black_box(tok.decode(&[0, n / 2, n.saturating_sub(1)]));
    }
    if host::config::ModelConfig::from_gguf(&f).is_err() {
        out.config_err.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let Ok(m) = Model::load(&f) else {
        out.model_err.fetch_add(1, Ordering::Relaxed);
        return;
    };
    out.loaded.fetch_add(1, Ordering::Relaxed);
    // A forward only for small models (mutants may declare a large but valid shape).
    if m.config.dim * m.config.n_layers <= 4096 && m.n_vocab() <= 4096 {
        if let Ok(mut fwd) = CpuForward::new(&m, 4, CacheType::F32) {
            let v = m.n_vocab() as u32;
            let _ = fwd.forward(&[1 % v, 3 % v], 0);
            out.forwards.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ----------------------------------------------------------------------------
// Seeds
// ----------------------------------------------------------------------------

/// Small valid models of each architecture and several types, a minimal container, and llama.cpp's
/// "minimal-gguf-v3" shape (one string KV, no tensors).
fn builtin_seeds() -> Vec<Vec<u8>> {
    let small = TinySpec {
        n_layers: 1,
        dim: 32,
        hidden_dim: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
        vocab_size: 16,
        context_len: 64,
        ..TinySpec::default()
    };
    let mut seeds = Vec::new();
    for (arch, wt, embd, tied) in [
        ("llama", GgmlType::Q8_0, GgmlType::F32, false),
        ("llama", GgmlType::Q4_0, GgmlType::Q4_0, true),
        ("qwen2", GgmlType::F16, GgmlType::F16, false),
        ("gemma3", GgmlType::Q4_1, GgmlType::F32, true),
    ] {
        let s = TinySpec { arch, weight_type: wt, embd_type: embd, tied, ..small.clone() };
        seeds.push(tiny_model(&s).unwrap().to_bytes().unwrap());
    }
    // K-quants need 256-element rows.
    let k = TinySpec { dim: 256, hidden_dim: 256, n_heads: 4, n_kv_heads: 2, head_dim: 64, ..small.clone() };
    seeds.push(tiny_model(&TinySpec { weight_type: GgmlType::Q4_K, ..k.clone() }).unwrap().to_bytes().unwrap());
    seeds.push(tiny_model(&TinySpec { weight_type: GgmlType::Q6_K, ..k }).unwrap().to_bytes().unwrap());
    let mut w = tiny_model(&small).unwrap();
    w.add_tensor("rope_freqs.weight", &[8], GgmlType::F32, vec![0; 32]).unwrap();
    w.add_kv("tokenizer.ggml.merges", Value::Array(Array::String(vec![b"t3 t4".to_vec()])));
    seeds.push(w.to_bytes().unwrap());
    // a gpt2 (byte-level BPE) vocabulary: every byte as a token, then a few merges
    let mut w = tiny_model(&TinySpec { vocab_size: 260, ..small.clone() }).unwrap();
    let byte_char = |b: u8| -> char {
        // GPT-2's byte-to-unicode map: printable latin-1 as itself, the rest shifted past U+0100
        let printable = |b: u8| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || b >= 0xae;
        if printable(b) {
            b as char
        } else {
            char::from_u32(0x100 + (0..b).filter(|&x| !printable(x)).count() as u32).unwrap()
        }
    };
    let mut toks: Vec<Vec<u8>> = (0..=255u8).map(|b| byte_char(b).to_string().into_bytes()).collect();
    toks.extend(["He", "ll", "Hell", "\u{120}w"].iter().map(|s| s.as_bytes().to_vec()));
    let merges = ["H e", "l l", "He ll", "\u{120} w"];
    w.add_kv("tokenizer.ggml.model", Value::str("gpt2"))
        .add_kv("tokenizer.ggml.pre", Value::str("default"))
        .add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(toks)))
        .add_kv(
            "tokenizer.ggml.merges",
            Value::Array(Array::String(merges.iter().map(|m| m.as_bytes().to_vec()).collect())),
        )
        .add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![1; 260])))
        .remove_kv("tokenizer.ggml.scores");
    seeds.push(w.to_bytes().unwrap());

    let mut e = Encoder::new();
    e.header(3, 0, 1).kv(b"general.architecture", &Value::str("llama"));
    seeds.push(e.buf.clone());
    let mut e = Encoder::new();
    e.header(3, 2, 2)
        .kv(b"general.alignment", &Value::U32(8))
        .kv(b"x.nested", &Value::Array(Array::Array(vec![Array::U8(vec![1]), Array::I64(vec![-1])])))
        .tensor_info(b"a", &[4], 0, 0)
        .tensor_info(b"b", &[32, 2], GgmlType::Q8_0.id(), 16)
        .pad_to(8);
    e.bytes(&[0x3c; 16 + 68]);
    seeds.push(e.buf.clone());
    seeds
}

/// Files (up to 1 MiB each) in `dir`, sorted by name.
fn dir_seeds(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).filter(|p| p.is_file()).collect();
    paths.sort();
    paths
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() <= 1 << 20))
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

// ----------------------------------------------------------------------------
// Mutations
// ----------------------------------------------------------------------------

/// Values that sit on the limits the parser checks (counts, lengths, types, dims, alignments, offsets).
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    12,
    13,
    16,
    24,
    31,
    32,
    33,
    39,
    40,
    63,
    64,
    65,
    127,
    128,
    255,
    256,
    4096,
    65_535,
    65_536,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    1 << 32,
    1 << 40,
    (1 << 62) + 1,
    0x7FFF_FFFF_FFFF_FFC0,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 15,
    u64::MAX,
];

/// Applies 1..=4 random mutations to a copy of `seed`. `hot` is where parsing happens (header, KVs, tensor
/// infos): most positions are drawn from there.
fn mutate(rng: &mut Rng, seed: &[u8], hot: usize, pool: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len();
        let pos = |rng: &mut Rng| {
            if hot > 0 && rng.below(4) != 0 {
                rng.below(hot.min(len))
            } else {
                rng.below(len)
            }
        };
        match rng.below(10) {
            0 if len > 0 => {
                let p = pos(rng);
                b[p] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let p = pos(rng);
                b[p] = [0u8, 1, 0x7f, 0x80, 0xff, b' ', b'.', 0x20][rng.below(8)];
            }
            2 | 3 if len >= 8 => {
                // an interesting u32 or u64, often at a 4-aligned offset (GGUF fields are 4 or 8 bytes)
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                let mut p = pos(rng).min(len - width);
                if rng.below(2) == 0 {
                    p &= !3;
                }
                let v = INTERESTING[rng.below(INTERESTING.len())];
                b[p..p + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            4 if len >= 8 => {
                // nudge a u64 (a length or count) by a small amount
                let p = pos(rng).min(len - 8);
                let mut v = [0u8; 8];
                v.copy_from_slice(&b[p..p + 8]);
                let d = 1 + rng.below(40) as u64;
                let n = if rng.below(2) == 0 {
                    u64::from_le_bytes(v).wrapping_add(d)
                } else {
                    u64::from_le_bytes(v).wrapping_sub(d)
                };
                b[p..p + 8].copy_from_slice(&n.to_le_bytes());
            }
            5 => b.truncate(pos(rng)),
            6 if len > 1 => {
                let p = pos(rng);
                let n = 1 + rng.below(16.min(len - p));
                b.drain(p..p + n);
            }
            7 => {
                let p = pos(rng);
                let n = 1 + rng.below(16);
                let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                b.splice(p..p, ins);
            }
            8 if len > 1 => {
                // duplicate a chunk (repeated KVs / tensor infos)
                let p = rng.below(len);
                let n = 1 + rng.below(64.min(len - p));
                let chunk = b[p..p + n].to_vec();
                let at = pos(rng);
                b.splice(at..at, chunk);
            }
            _ => {
                // splice: our head, another seed's tail
                let other = &pool[rng.below(pool.len())];
                let p = pos(rng);
                let q = rng.below(other.len());
                b.truncate(p);
                b.extend_from_slice(&other[q..]);
            }
        }
    }
    b
}

// ----------------------------------------------------------------------------
// The test
// ----------------------------------------------------------------------------

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Runs `input` under catch_unwind and a time limit; returns a failure description.
fn exec(input: &[u8], out: &Outcomes, limit: Duration) -> Option<String> {
    let _ = CURRENT.try_with(|c| c.set((input.as_ptr(), input.len())));
    let t0 = Instant::now();
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_one(input, out)));
    let dt = t0.elapsed();
    let _ = CURRENT.try_with(|c| c.set((std::ptr::null(), 0)));
    match r {
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Some(format!("panic ({msg}); input saved to {:?}", save_crash(input, "panic")))
        }
        Ok(()) if dt > limit => {
            Some(format!("took {dt:?} (limit {limit:?}); input saved to {:?}", save_crash(input, "slow")))
        }
        Ok(()) => None,
    }
}

#[test]
fn fuzz_smoke_replay_and_mutate() {
    let secs = env_u64("GGUF_FUZZ_SECS").unwrap_or(3);
    let seed = env_u64("GGUF_FUZZ_SEED").unwrap_or(0x5EED_6609);
    let threads = env_u64("GGUF_FUZZ_THREADS")
        .map(|n| n.max(1) as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(4));
    // Generous: a loaded CI machine or an unoptimised build must not fail a correct parser.
    let limit = Duration::from_secs(if cfg!(debug_assertions) { 10 } else { 2 });

    let mut corpus = builtin_seeds();
    let n_builtin = corpus.len();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gguf_parse")];
    if let Some(d) = std::env::var_os("GGUF_FUZZ_CORPUS") {
        dirs.push(PathBuf::from(d));
    }
    dirs.sort_by_key(|d| d.canonicalize().unwrap_or_else(|_| d.clone()));
    dirs.dedup_by_key(|d| d.canonicalize().unwrap_or_else(|_| d.clone()));
    for d in &dirs {
        corpus.extend(dir_seeds(d));
    }
    let out = Outcomes::default();
    let failures = Mutex::new(Vec::<String>::new());

    // 1) replay every seed as is
    for s in &corpus {
        if let Some(f) = exec(s, &out, limit) {
            failures.lock().unwrap().push(format!("seed: {f}"));
        }
    }
    let replayed = corpus.len();

    // 2) mutate until the budget is spent; only seeds that parse (or small ones) are mutated, with their
    //    header region (up to the data section) as the hot zone
    let hot: Vec<usize> = corpus
        .iter()
        .map(|s| GgufFile::from_bytes(s, "seed").map_or(s.len().min(4096), |f| f.data_offset as usize))
        .collect();
    let pool: Vec<(Vec<u8>, usize)> =
        corpus.iter().cloned().zip(hot).filter(|(s, _)| !s.is_empty() && s.len() <= 256 << 10).collect();
    let pool_bytes: Vec<Vec<u8>> = pool.iter().map(|(s, _)| s.clone()).collect();
    let execs = AtomicUsize::new(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let t0 = Instant::now();
    std::thread::scope(|sc| {
        for ti in 0..threads {
            let (pool, pool_bytes, out, failures, execs) = (&pool, &pool_bytes, &out, &failures, &execs);
            sc.spawn(move || {
                let mut rng = Rng(seed ^ (ti as u64).wrapping_mul(0xA076_1D64_78BD_642F));
                let mut n = 0usize;
                while Instant::now() < deadline && failures.lock().unwrap().len() < 10 {
                    for _ in 0..64 {
                        let (s, hot) = &pool[rng.below(pool.len())];
                        let input = mutate(&mut rng, s, *hot, pool_bytes);
                        if let Some(f) = exec(&input, out, limit) {
                            failures.lock().unwrap().push(f);
                        }
                        n += 1;
                    }
                }
                execs.fetch_add(n, Ordering::Relaxed);
            });
        }
    });
    let dt = t0.elapsed().as_secs_f64();
    let n = execs.load(Ordering::Relaxed);
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "fuzz-smoke: seed {seed:#x}, {threads} threads, {replayed} seeds replayed ({n_builtin} built in), {n} \
         mutated execs in {dt:.1} s ({:.0}/s); outcomes: open error {}, config error {}, model error {}, \
         loaded {} (forward run on {}), tokenizer built {}",
        n as f64 / dt,
        get(&out.open_err),
        get(&out.config_err),
        get(&out.model_err),
        get(&out.loaded),
        get(&out.forwards),
        get(&out.tokenizers)
    );
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} failing inputs:\n{}", failures.len(), failures.join("\n"));
    // The mutations must reach every stage, or the smoke test is not testing much.
    assert!(
        n > 0 && get(&out.open_err) > 0 && get(&out.loaded) > 0 && get(&out.tokenizers) > 0,
        "mutations reach no stage beyond open"
    );
}

/// The built-in seeds are what the mutations start from: the models among them must load and tokenize, or
/// the mutants would mostly exercise the first error path.
#[test]
fn builtin_model_seeds_load_and_tokenize() {
    let seeds = builtin_seeds();
    let models = &seeds[..seeds.len() - 2]; // the last two are bare containers
    for (i, s) in models.iter().enumerate() {
        let f = GgufFile::from_bytes(s, "seed.gguf").unwrap();
        let m = Model::load(&f).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        let tok = Tokenizer::from_gguf(&f).unwrap_or_else(|e| panic!("seed {i}: {e}"));
        let ids = tok.encode("Hello world", false, false).unwrap();
        assert!(!ids.is_empty() && ids.iter().all(|&id| (id as usize) < m.n_vocab()), "seed {i}: {ids:?}");
    }
    for s in &seeds[seeds.len() - 2..] {
        GgufFile::from_bytes(s, "seed.gguf").unwrap();
    }
}
