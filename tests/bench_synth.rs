//! `host synth` and `host bench` on the CPU with the `tiny` preset: the files load with the expected config,
//! the same seed gives the same bytes, the vocabulary is copied, and the bench prints llama-bench's table (or
//! JSON lines) with one parseable row per test. No timing is asserted.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{synth_tiny, TempFile};
use host::cli::bench::{bench_model, format_params, format_size, BenchArgs, ModelInfo};
use host::cli::DeviceArg;
use host::config::Arch;
use host::gguf::{tiny_model, GgmlType, GgufFile, TinySpec};
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};
use host::synth::{write_model, Preset, SynthSpec, Vocab, SYNTH_TYPES};

/// A fresh path under the temp dir (removed by `Drop`).
fn host(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_host")).args(args).output().expect("run the host binary")
}

fn stdout_of(o: &Output) -> String {
    assert!(o.status.success(), "host failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

// tiny: 2 layers, dim 256, ffn 512, 4 heads of 64, 2 kv heads (kv_dim 128), 257-token byte vocabulary.
// Params: per layer q, o 256*256 each + k, v 256*128 each + gate, up, down 256*512 each + 2 norms of 256
// = 131072 + 65536 + 393216 + 512 = 590336; x 2 layers + embedding and head 2*257*256 + output norm 256.
const TINY_PARAMS: u64 = 2 * 590_336 + 2 * 257 * 256 + 256;

// ----------------------------------------------------------------------------
// synth
// ----------------------------------------------------------------------------

#[test]
fn synth_tiny_loads_with_the_preset_config_for_every_type() {
    for &ty in SYNTH_TYPES {
        let f = synth_tiny(ty, 1);
        let file = GgufFile::open(&f.0).unwrap();
        let model = Model::load(&file).unwrap();
        let c = &model.config;
        assert_eq!(c.arch, Arch::Llama);
        assert_eq!(
            (c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size),
            (2, 256, 512, 4, 2, 64, 257),
            "{ty}"
        );
        assert_eq!(file.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
        let params: u64 = file.tensors.iter().map(|t| t.n_elements()).sum();
        assert_eq!(params, TINY_PARAMS);
        for t in &file.tensors {
            let want = if t.dims.len() == 2 { ty } else { GgmlType::F32 };
            assert_eq!(t.ggml_type, want, "{ty}: tensor {}", t.name);
        }
        assert!(model.output_norm.iter().all(|&w| w == 1.0));
        assert!(model.layers.iter().all(|l| l.w.attn_norm.iter().chain(&l.w.ffn_norm).all(|&w| w == 1.0)));

        // random weights of small scale: a forward gives finite logits that are not all the same
        let mut fwd = CpuForward::new(&model, 8, CacheType::F16).unwrap();
        let logits = fwd.forward(&[256, 72, 105, 33], 0).unwrap();
        assert_eq!(logits.len(), 257);
        assert!(logits.iter().all(|v| v.is_finite()), "{ty}: non-finite logits");
        let (lo, hi) = logits.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(hi > lo, "{ty}: constant logits");
    }
}

#[test]
fn synth_is_deterministic_per_seed() {
    let a = synth_tiny(GgmlType::Q4_K, 7);
    let b = synth_tiny(GgmlType::Q4_K, 7);
    let c = synth_tiny(GgmlType::Q4_K, 8);
    let (ba, bb, bc) = (std::fs::read(&a.0).unwrap(), std::fs::read(&b.0).unwrap(), std::fs::read(&c.0).unwrap());
    assert!(ba == bb, "same seed, different bytes");
    // another seed: same layout and size, different weights in every matrix
    assert_eq!(ba.len(), bc.len());
    let (fa, fc) = (GgufFile::open(&a.0).unwrap(), GgufFile::open(&c.0).unwrap());
    for (ta, tc) in fa.tensors.iter().zip(&fc.tensors) {
        assert_eq!((&ta.name, ta.offset), (&tc.name, tc.offset));
        if ta.dims.len() == 2 {
            assert_ne!(fa.tensor_data(ta), fc.tensor_data(tc), "{} equal across seeds", ta.name);
        }
    }
}

#[test]
fn synth_cli_copies_the_vocabulary_of_vocab_from() {
    // a 64-token SentencePiece-style vocabulary from the gguf module's tiny model
    let src = TempFile::new("vocab-src.gguf");
    tiny_model(&TinySpec::default()).unwrap().write(&src.0).unwrap();
    let out = TempFile::new("vocab-out.gguf");
    let o = host(&[
        "synth",
        out.0.to_str().unwrap(),
        "--preset",
        "tiny",
        "--type",
        "q8_0",
        "--vocab-from",
        src.0.to_str().unwrap(),
    ]);
    stdout_of(&o);
    let (fs, fo) = (GgufFile::open(&src.0).unwrap(), GgufFile::open(&out.0).unwrap());
    let keys =
        |f: &GgufFile| -> Vec<_> { f.metadata.iter().filter(|(k, _)| k.starts_with("tokenizer.")).cloned().collect() };
    assert_eq!(keys(&fo), keys(&fs));
    assert_eq!(keys(&fo).len(), 7);
    let model = Model::load(&fo).unwrap();
    assert_eq!((model.config.vocab_size, model.n_vocab()), (64, 64));
    assert_eq!(fo.tensor("token_embd.weight").unwrap().dims, vec![256, 64]);
}

#[test]
fn synth_cli_refuses_unknown_types() {
    let out = TempFile::new("bad-type.gguf");
    let o = host(&["synth", out.0.to_str().unwrap(), "--preset", "tiny", "--type", "IQ2_XXS"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not one of F16, Q4_0"));
    assert!(!out.0.exists());
}

#[test]
fn synth_with_the_smollm2_vocabulary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        eprintln!("skipping: {} is absent (scripts/fetch-models.sh)", path.display());
        return;
    }
    let vocab = Vocab::from_file(&path).unwrap();
    assert_eq!(vocab.n_tokens, 49152);
    let out = TempFile::new("tiny-smollm2.gguf");
    write_model(&out.0, &SynthSpec::preset(Preset::Tiny, GgmlType::Q4_0, 1), &vocab).unwrap();
    let f = GgufFile::open(&out.0).unwrap();
    let model = Model::load(&f).unwrap();
    assert_eq!(model.n_vocab(), 49152);
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(f.get_array("tokenizer.ggml.merges").unwrap().len(), 48900);
}

// ----------------------------------------------------------------------------
// bench
// ----------------------------------------------------------------------------

/// The cells of a markdown table row, without the outer bars.
fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')).expect("a table row");
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// "123.45 ± 6.78" -> (123.45, 6.78)
fn parse_ts(cell: &str) -> (f64, f64) {
    let (m, s) = cell.split_once(" ± ").expect("mean ± stddev");
    (m.parse().unwrap(), s.parse().unwrap())
}

#[test]
fn bench_cli_prints_a_llama_bench_table() {
    let f = synth_tiny(GgmlType::Q4_0, 1);
    let out = stdout_of(&host(&["bench", f.0.to_str().unwrap(), "-p", "8", "-n", "4", "-r", "2", "--device", "cpu"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(cells(lines[0]), ["model", "size", "params", "backend", "test", "t/s"]);
    assert!(cells(lines[1]).iter().all(|c| c.trim_end_matches(':').chars().all(|ch| ch == '-')));
    let file = GgufFile::open(&f.0).unwrap();
    let size: u64 = file.tensors.iter().map(|t| t.n_bytes).sum();
    for (line, test) in lines[2..].iter().zip(["pp8", "tg4"]) {
        let c = cells(line);
        assert_eq!(
            c[..5],
            ["synth-tiny Q4_0".to_string(), format_size(size), format_params(TINY_PARAMS), "CPU".into(), test.into()]
        );
        let (mean, sd) = parse_ts(&c[5]);
        assert!(mean > 0.0 && mean.is_finite() && sd >= 0.0, "{line}");
    }
    assert_eq!(format_params(TINY_PARAMS), "1.31 M");
}

#[test]
fn bench_json_has_one_object_per_test_and_p0_skips_pp() {
    let f = synth_tiny(GgmlType::Q8_0, 1);
    let out = stdout_of(&host(&[
        "bench",
        f.0.to_str().unwrap(),
        "-p",
        "0",
        "-n",
        "3",
        "-r",
        "3",
        "--device",
        "cpu",
        "--json",
    ]));
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let r = &rows[0];
    assert_eq!((r["test"].as_str(), r["n_prompt"].as_u64(), r["n_gen"].as_u64()), (Some("tg3"), Some(0), Some(3)));
    assert_eq!((r["backend"].as_str(), r["params"].as_u64()), (Some("CPU"), Some(TINY_PARAMS)));
    let ts: Vec<f64> = r["samples_ts"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ns: Vec<u64> = r["samples_ns"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!((ts.len(), ns.len()), (3, 3));
    // each rate is 3 tokens over that run's time; the average is their mean
    for (t, n) in ts.iter().zip(&ns) {
        assert!((t - 3e9 / *n as f64).abs() <= 1e-9 * t);
    }
    let avg = r["avg_ts"].as_f64().unwrap();
    assert!((avg - ts.iter().sum::<f64>() / 3.0).abs() <= 1e-9 * avg);
    assert_eq!((r["type_k"].as_str(), r["type_v"].as_str()), (Some("f16"), Some("f16")));
}

/// `--cache-type q8_0` reaches the forward pass (llama-bench's -ctk/-ctv q8_0): the table gains its type_k and
/// type_v columns.
#[test]
fn bench_takes_the_cache_type() {
    let f = synth_tiny(GgmlType::Q4_0, 1);
    let out = stdout_of(&host(&[
        "bench", f.0.to_str().unwrap(), "-p", "8", "-n", "2", "-r", "1", "--device", "cpu", "--cache-type", "q8_0",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let cells = |l: &str| l.split('|').map(str::trim).map(String::from).collect::<Vec<_>>();
    assert_eq!(cells(lines[0])[5..7], ["type_k", "type_v"], "{out}");
    assert_eq!(cells(lines[2])[5..8], ["q8_0", "q8_0", "pp8"], "{out}");
}

#[test]
fn bench_library_runs_at_depth_and_refuses_bad_arguments() {
    let f = synth_tiny(GgmlType::Q4_1, 1);
    let mut a = BenchArgs::new(vec![f.0.clone()]);
    (a.n_prompt, a.n_gen, a.n_depth, a.reps, a.device) = (4, 2, 6, 2, DeviceArg::Cpu);
    let mut seen = Vec::new();
    let results = bench_model(&f.0, &a, &mut |r| seen.push(r.test_name())).unwrap();
    assert_eq!(seen, ["pp4 @ d6", "tg2 @ d6"]);
    assert!(results.iter().all(|r| r.samples_ns.len() == 2 && r.n_ctx == 12 && r.avg_ts() > 0.0));

    a.reps = 0;
    assert!(bench_model(&f.0, &a, &mut |_| {}).is_err());
    (a.reps, a.n_prompt, a.n_gen) = (1, 0, 0);
    assert!(bench_model(&f.0, &a, &mut |_| {}).is_err());
}

#[test]
fn model_info_of_the_real_models_matches_llama_bench() {
    // llama-bench lists SmolLM2-135M-Instruct Q4_1 as 92.1 MiB (reference/anchors.md) and 134.52 M params;
    // gemma-3-270m-q4_k_m: general.file_type 15 (Q4_K_M) over Q5_0/Q4_K/Q8_0/Q6_K blocks; 235.16 MiB and
    // 268.10 M are the sums of n_bytes and n_elements over its tensors as gguf-py reads them
    for (file, label, size, params) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2 135M Q4_1", "92.10 MiB", "134.52 M"),
        ("gemma-3-270m-q4_k_m.gguf", "gemma-3 270M Q4_K_M", "235.16 MiB", "268.10 M"),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models").join(file);
        if !path.is_file() {
            eprintln!("skipping {file}: absent (scripts/fetch-models.sh)");
            continue;
        }
        let info = ModelInfo::of(&GgufFile::open(&path).unwrap());
        assert_eq!((info.label.as_str(), format_size(info.size).as_str()), (label, size));
        assert_eq!(format_params(info.params), params);
    }
}
