//! End-to-end tokenizer checks against llama.cpp's ids (shared/reference/*_tokenize.jsonl) on the real
//! models. Tests that need a model or the reference files skip, saying why, when those are absent.

use std::path::{Path, PathBuf};

use host::tokenizer::{Tokenizer, TokenizerOptions};

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "models/gemma-3-270m-q4_k_m.gguf";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(model: &str) -> Option<Tokenizer> {
    let path = root().join(model);
    if !path.exists() {
        println!("skipped: {} is absent (scripts/fetch-models.sh fetches it)", path.display());
        return None;
    }
    let data = host::tokenizer::dev_gguf::data_from_path(&path).expect("read tokenizer metadata");
    Some(Tokenizer::from_data(data, &TokenizerOptions::default()).expect("build tokenizer"))
}

/// (text, special ids, plain ids) per line of a reference file.
fn reference(name: &str) -> Option<Vec<(String, Vec<u32>, Vec<u32>)>> {
    let candidates = [root().join("../shared/reference").join(name), PathBuf::from("/work/shared/reference").join(name)];
    let Some(path) = candidates.iter().find(|p| p.exists()) else {
        println!("skipped: reference file {name} not found");
        return None;
    };
    let text = std::fs::read_to_string(path).expect("read reference");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
    };
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                (v["text"].as_str().expect("text").to_string(), ids(&v["special"]), ids(&v["plain"]))
            })
            .collect(),
    )
}

fn check_reference(model: &str, file: &str) {
    let (Some(tok), Some(cases)) = (load(model), reference(file)) else { return };
    let mut bad = Vec::new();
    for (text, special, plain) in &cases {
        let got_special = tok.encode(text, true, true).unwrap();
        let got_plain = tok.encode(text, true, false).unwrap();
        if &got_special != special {
            bad.push(format!("special {text:?}: got {got_special:?}, want {special:?}"));
        }
        if &got_plain != plain {
            bad.push(format!("plain {text:?}: got {got_plain:?}, want {plain:?}"));
        }
    }
    println!("{file}: {} of {} lines match in both modes", cases.len() - bad.len(), cases.len());
    assert!(bad.is_empty(), "{} mismatches:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_reference(SMOLLM2, "smollm2_tokenize.jsonl");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_reference(GEMMA3, "gemma3_tokenize.jsonl");
}

fn _unused(_: &Path) {}
