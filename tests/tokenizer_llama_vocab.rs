//! llama.cpp's own tokenizer tests: every `ggml-vocab-*.gguf` with `.inp`/`.out` files (fetched into
//! models/llama-vocab/ by scripts/fetch-models.sh from the llama-cpp-python 0.3.36 sdist) tokenized as its
//! `tests/test-tokenizer-0.cpp` does: no BOS/EOS added, special tokens not parsed, each case of the `.inp`
//! (cut at "\n__ggml_vocab_test__\n") against the ids on the same line of the `.out`. Vocabularies whose
//! tokenizer model is neither BPE nor SentencePiece (WordPiece "bert", Unigram "t5") must be refused with an
//! error naming the model; the BPE/SentencePiece ones without cases must at least load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use host::gguf::GgufFile;
use host::tokenizer::Tokenizer;

fn vocab_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/llama-vocab");
    if !dir.join(".complete").exists() {
        println!("skipped: {} is absent (scripts/fetch-models.sh llama-vocab fetches it)", dir.display());
        return None;
    }
    Some(dir)
}

/// The cases of `vocab.inp` / `vocab.out` as test-tokenizer-0 reads them: a map, so a repeated text keeps
/// the ids of its last occurrence; each `.out` line stripped and split at single spaces.
fn read_cases(vocab: &Path) -> BTreeMap<String, Vec<u32>> {
    let inp = std::fs::read_to_string(format!("{}.inp", vocab.display())).expect("read .inp");
    let out = std::fs::read_to_string(format!("{}.out", vocab.display())).expect("read .out");
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop(); // a separator at the very end starts no case
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), lines.len(), "{}: .inp and .out have different numbers of cases", vocab.display());
    texts
        .iter()
        .zip(&lines)
        .map(|(t, l)| {
            let ids = l.trim().split(' ').filter(|s| !s.is_empty()).map(|s| s.parse().expect("token id")).collect();
            (t.to_string(), ids)
        })
        .collect()
}

/// The vocabularies, by file name.
fn vocabs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read models/llama-vocab")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    v.sort();
    v
}

fn has_cases(vocab: &Path) -> bool {
    Path::new(&format!("{}.inp", vocab.display())).exists()
}

/// tokenizer.ggml.model values we build tokenizers for.
const SUPPORTED: &[&str] = &["gpt2", "gemma4", "llama"];

/// tokenizer.ggml.model of a file.
fn model_of(f: &GgufFile) -> String {
    f.get_str("tokenizer.ggml.model").expect("tokenizer.ggml.model").to_string()
}

#[test]
fn llama_cpp_vocab_cases() {
    let Some(dir) = vocab_dir() else { return };
    let vocabs = vocabs(&dir);
    let with_cases = vocabs.iter().filter(|p| has_cases(p)).count();
    assert!(with_cases >= 15, "only {with_cases} vocabularies with cases in {}", dir.display());
    let mut failures = Vec::new();
    let (mut n_vocabs, mut n_cases) = (0, 0);
    for path in &vocabs {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let f = GgufFile::open(path).expect("open vocab");
        let model = model_of(&f);
        let t0 = Instant::now();
        let built = Tokenizer::from_gguf(&f);
        let load = t0.elapsed();
        if !SUPPORTED.contains(&model.as_str()) {
            // WordPiece, Unigram: out of scope, and refused by name
            let err = built.map(|_| ()).expect_err("an unsupported tokenizer model must be refused").to_string();
            assert!(err.contains(&format!("'{model}'")), "{name}: {err}");
            println!("{name}: tokenizer model '{model}' refused as expected");
            continue;
        }
        let tok = match built {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        // release builds load the largest (262k tokens, 515k merges) in under a second on the dev machine
        assert!(cfg!(debug_assertions) || load.as_secs_f64() < 5.0, "{name}: loading took {load:?}");
        if !has_cases(path) {
            println!("{name}: model {model}, pre {}, loads (no cases)", tok.pre_name());
            continue;
        }
        let cases = read_cases(path);
        let t1 = Instant::now();
        let mut bad = 0;
        for (text, want) in &cases {
            let got = tok.encode(text, false, false).unwrap();
            if &got != want {
                bad += 1;
                let pre = tok.pre_name();
                failures.push(format!("{name} ({model}, pre {pre}): {text:?}\n  want {want:?}\n  got  {got:?}"));
            }
        }
        n_vocabs += 1;
        n_cases += cases.len();
        println!(
            "{name}: model {model}, pre {}, {} tokens, loaded in {:.0} ms; {} of {} cases match ({:.1} ms)",
            tok.pre_name(),
            tok.vocab_size(),
            load.as_secs_f64() * 1e3,
            cases.len() - bad,
            cases.len(),
            t1.elapsed().as_secs_f64() * 1e3
        );
    }
    println!("{n_vocabs} vocabularies, {n_cases} cases");
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
