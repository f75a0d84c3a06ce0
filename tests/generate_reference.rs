//! Greedy generation on the CPU against llama.cpp's output (`tests/fixtures/reference/*_greedy.jsonl`, copied from
//! `shared/reference/`): for every prompt, our completion and llama.cpp's agree on at least their first 16 tokens,
//! or entirely when llama.cpp stopped earlier at an end-of-generation token.
//!
//! llama.cpp built with `GGML_NATIVE=OFF` (x86 AVX2 + FMA + F16C kernels) reproduces these references exactly (a
//! `-march=native` AVX-512 build does not); our CPU forward reproduces that build's float operations
//! (`scripts/llama-cpp-greedy/` compares logits).
//!
//! Needs the real models in `models/` (`scripts/fetch-models.sh`); skips with a message when they are absent.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use host::generate::{self, GenOptions};
use host::gguf::GgufFile;
use host::kv_cache::CacheType;
use host::model::{CpuForward, Model};
use host::sampler::{Sampler, SamplingParams};
use host::tokenizer::Tokenizer;

/// Tokens that must agree when neither side stopped before them.
const MIN_AGREE: usize = 16;

struct Case {
    prompt: String,
    n_predict: usize,
    /// llama-simple's output less the newline it prints after generating.
    completion: String,
}

fn cases(jsonl: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(jsonl)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let c = v["completion"].as_str().unwrap();
            Case {
                prompt: v["prompt"].as_str().unwrap().to_string(),
                n_predict: v["n_predict"].as_u64().unwrap() as usize,
                completion: c.strip_suffix('\n').unwrap_or(c).to_string(),
            }
        })
        .collect()
}

fn check_model(model_file: &str, jsonl: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("models")
        .join(model_file);
    if !path.exists() {
        eprintln!(
            "SKIP: {} is absent (run scripts/fetch-models.sh)",
            path.display()
        );
        return;
    }
    let file = GgufFile::open(&path).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let model = Model::load(&file).unwrap();
    let mut fwd = CpuForward::new(&model, 512, CacheType::F16).unwrap();
    let mut failures = Vec::new();
    for case in cases(jsonl) {
        let prompt = generate::prompt_tokens(&tok, &case.prompt, None).unwrap();
        let params = SamplingParams {
            temperature: 0.0,
            seed: 1,
            ..SamplingParams::default()
        };
        let mut sampler = Sampler::new(params);
        let opts = GenOptions {
            n_predict: Some(case.n_predict),
            ..GenOptions::default()
        };
        let mut out = Vec::new();
        let g = generate::generate(
            &mut fwd,
            &tok,
            &mut sampler,
            &prompt,
            &opts,
            &mut out,
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            g.text,
            "streamed text and returned text differ"
        );
        // tokens of ours whose text is still a prefix of llama.cpp's
        let agree = (0..=g.tokens.len())
            .take_while(|&k| case.completion.starts_with(&tok.decode(&g.tokens[..k])))
            .last()
            .unwrap_or(0);
        let full = g.text == case.completion;
        eprintln!(
            "{model_file}: {:?}: {agree}/{} tokens agree{} (stopped: {:?})",
            case.prompt,
            g.tokens.len(),
            if full { ", identical text" } else { "" },
            g.reason
        );
        if !(full || agree >= MIN_AGREE) {
            failures.push(format!(
                "{:?}\n  ours:      {:?}\n  llama.cpp: {:?}\n  agree on {agree} tokens",
                case.prompt, g.text, case.completion
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// The CPU forward computes as llama.cpp's portable x86 CPU build does (see `quant::ggml_avx2`,
// `cpu::attention_ggml`): both models' teacher-forced logits match it bit for bit, so greedy texts agree.
#[test]
fn smollm2_greedy_matches_llama_cpp() {
    check_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "tests/fixtures/reference/smollm2_greedy.jsonl",
    );
}

#[test]
fn gemma3_greedy_matches_llama_cpp() {
    check_model(
        "gemma-3-270m-q4_k_m.gguf",
        "tests/fixtures/reference/gemma3_greedy.jsonl",
    );
}
