//! End-to-end tokenizer checks on the real models against llama.cpp's ids (shared/reference/*_tokenize.jsonl,
//! made by `llama-tokenize --ids` with and without special-token parsing), plus round trips, streaming,
//! the end-of-generation set, chat templates and malformed files. Tests that need a model or the reference
//! files skip, saying why, when those are absent.

use std::path::PathBuf;

use host::gguf::{Array, GgufFile, GgufWriter, Value};
use host::tokenizer::{ChatMessage, StreamDecoder, Tokenizer, TokenizerOptions};

const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "models/gemma-3-270m-q4_k_m.gguf";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(model: &str) -> Option<Tokenizer> {
    let path = root().join(model);
    if !path.exists() {
        println!(
            "skipped: {} is absent (scripts/fetch-models.sh fetches it)",
            path.display()
        );
        return None;
    }
    let f = GgufFile::open(&path).expect("open model");
    Some(Tokenizer::from_gguf(&f).expect("build tokenizer"))
}

/// One reference line: (text, ids with special parsing, ids without).
type Case = (String, Vec<u32>, Vec<u32>);

fn reference(name: &str) -> Option<Vec<Case>> {
    let candidates = [
        root().join("../shared/reference").join(name),
        root().join("shared/reference").join(name),
    ];
    let Some(path) = candidates.iter().find(|p| p.exists()) else {
        println!("skipped: reference file {name} not found beside the repository");
        return None;
    };
    let text = std::fs::read_to_string(path).expect("read reference");
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .expect("id list")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect()
    };
    Some(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                (
                    v["text"].as_str().expect("text").to_string(),
                    ids(&v["special"]),
                    ids(&v["plain"]),
                )
            })
            .collect(),
    )
}

// ----------------------------------------------------------------------------
// llama.cpp's ids
// ----------------------------------------------------------------------------

fn check_reference(model: &str, file: &str) {
    let (Some(tok), Some(cases)) = (load(model), reference(file)) else {
        return;
    };
    let mut bad = Vec::new();
    for (text, special, plain) in &cases {
        // llama-tokenize adds BOS/EOS as the model asks (add_special) in both modes
        let got_special = tok.encode(text, true, true).unwrap();
        let got_plain = tok.encode(text, true, false).unwrap();
        if &got_special != special {
            bad.push(format!(
                "special {text:?}: got {got_special:?}, want {special:?}"
            ));
        }
        if &got_plain != plain {
            bad.push(format!("plain {text:?}: got {got_plain:?}, want {plain:?}"));
        }
    }
    println!(
        "{file}: {} of {} (text, mode) pairs match",
        2 * cases.len() - bad.len(),
        2 * cases.len()
    );
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    check_reference(SMOLLM2, "smollm2_tokenize.jsonl");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check_reference(GEMMA3, "gemma3_tokenize.jsonl");
}

#[test]
fn special_tokens_parse_only_when_asked() {
    let Some(tok) = load(SMOLLM2) else { return };
    let text = "<|im_start|>user\nHi<|im_end|>\n";
    let special = tok.encode(text, true, true).unwrap();
    // <|im_start|> = 1 and <|im_end|> = 2 in SmolLM2's vocab
    assert_eq!(special.first(), Some(&1));
    assert_eq!(special.iter().filter(|&&id| id == 2).count(), 1);
    let plain = tok.encode(text, true, false).unwrap();
    assert!(!plain.contains(&1) && !plain.contains(&2), "{plain:?}");
    assert_eq!(tok.decode(&plain), text);

    let Some(gemma) = load(GEMMA3) else { return };
    let ids = gemma
        .encode("<start_of_turn>user\nHi<end_of_turn>", true, true)
        .unwrap();
    assert_eq!(ids[..2], [2, 105]); // <bos>, <start_of_turn>
    assert_eq!(ids.last(), Some(&106)); // <end_of_turn>
    assert!(!gemma
        .encode("<start_of_turn>", true, false)
        .unwrap()
        .contains(&105));
}

// ----------------------------------------------------------------------------
// Decoding
// ----------------------------------------------------------------------------

/// A seeded xorshift64*, so the property tests are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random string drawn from ASCII, Latin, Greek, Cyrillic, CJK, Hangul, combining marks, emoji,
/// exotic whitespace, control characters, unassigned and private-use code points, and special-token text.
fn random_text(rng: &mut Rng, representable: impl Fn(char) -> bool) -> String {
    const RANGES: &[(u32, u32)] = &[
        (0x20, 0x7E),
        (0x20, 0x7E),
        (0x20, 0x7E),
        (0x09, 0x0D),
        (0x00, 0x1F),
        (0xA0, 0x17F),
        (0x370, 0x3FF),
        (0x400, 0x4FF),
        (0x300, 0x36F),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7A3),
        (0x3040, 0x30FF),
        (0x1F300, 0x1FAFF),
        (0x2000, 0x206F),
        (0x3000, 0x303F),
        (0xE000, 0xF8FF),
        (0x10FFF0, 0x10FFFF),
        (0x0600, 0x06FF),
        (0x0900, 0x097F),
    ];
    const WORDS: &[&str] = &[
        "<|im_start|>",
        "<|im_end|>",
        "<start_of_turn>",
        "<eos>",
        " the",
        "'s",
        "\n\n",
        "  ",
        "123",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(24) {
        if rng.below(8) == 0 {
            s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
            continue;
        }
        let (a, b) = RANGES[rng.below(RANGES.len() as u64) as usize];
        if let Some(c) = char::from_u32(a + rng.below(u64::from(b - a + 1)) as u32) {
            // SentencePiece writes spaces as U+2581, so that char cannot survive a round trip
            if c != '\u{2581}' && representable(c) {
                s.push(c);
            }
        }
    }
    s
}

fn check_round_trips(model: &str) {
    let Some(tok) = load(model) else { return };
    let mut texts: Vec<String> = Vec::new();
    if let Some(cases) = reference("smollm2_tokenize.jsonl") {
        texts.extend(cases.into_iter().map(|c| c.0));
    }
    // chars whose bytes have no token are dropped, as llama.cpp drops them (SmolLM2 has no token for the
    // bytes 0x04 0x06 0x13 0x14 0x16 0x1D): only chars the vocab can spell take part
    let representable = |c: char| {
        let s = c.to_string();
        tok.decode(&tok.encode(&s, false, false).unwrap()) == s
    };
    let mut rng = Rng(0x5EED_0000_0000_0001);
    texts.extend((0..400).map(|_| random_text(&mut rng, representable)));
    for text in &texts {
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(&tok.decode(&ids), text, "ids {ids:?}");
        // streaming the same ids, one token at a time, gives the same text
        let mut d = StreamDecoder::new();
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &d.push(tok.token_bytes(id));
        }
        streamed += &d.finish();
        assert_eq!(&streamed, text, "streamed ids {ids:?}");
    }
    println!(
        "{model}: {} texts round-trip (decode and streaming)",
        texts.len()
    );
}

#[test]
fn smollm2_decode_inverts_encode() {
    check_round_trips(SMOLLM2);
}

#[test]
fn gemma3_decode_inverts_encode() {
    check_round_trips(GEMMA3);
}

#[test]
fn stream_decoder_holds_split_chars() {
    let Some(tok) = load(GEMMA3) else { return };
    // whatever tokens spell "😀", its 4 bytes come out as one whole char
    let ids = tok.encode("a😀b", false, false).unwrap();
    let mut d = StreamDecoder::new();
    let pieces: Vec<String> = ids.iter().map(|&id| d.push(tok.token_bytes(id))).collect();
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat() + &d.finish(), "a😀b");
    // a byte token alone is half a char: held back, then U+FFFD only when the stream ends there
    let lead = tok.encode("\u{10FFFD}", false, false).unwrap(); // private use: byte tokens
    assert!(lead.len() > 1, "{lead:?}");
    let mut d = StreamDecoder::new();
    assert_eq!(d.push(tok.token_bytes(lead[0])), "");
    assert_eq!(d.finish(), "\u{FFFD}");
}

// ----------------------------------------------------------------------------
// Vocab facts
// ----------------------------------------------------------------------------

#[test]
fn end_of_generation_sets() {
    if let Some(tok) = load(SMOLLM2) {
        // <|endoftext|> = 0, <|im_end|> = 2 (also eos); no BOS added
        assert!(tok.is_eog(0) && tok.is_eog(2));
        assert!(!tok.is_eog(1) && !tok.is_eog(19556)); // <|im_start|>, "Hello"
        assert_eq!(tok.eos(), Some(2));
        assert_eq!(tok.encode("Hello", true, true).unwrap(), [19556]);
        // a byte without a token is dropped, as llama.cpp drops it
        assert_eq!(tok.encode("a\u{6}", false, false).unwrap(), [81]);
    }
    if let Some(tok) = load(GEMMA3) {
        // <eos> = 1, <end_of_turn> = 106; BOS = 2 is added
        assert!(tok.is_eog(1) && tok.is_eog(106));
        assert!(!tok.is_eog(2) && !tok.is_eog(105));
        assert_eq!((tok.bos(), tok.vocab_size()), (Some(2), 262_144));
        assert_eq!(tok.encode("", true, true).unwrap(), [2]);
    }
}

// ----------------------------------------------------------------------------
// Chat templates
// ----------------------------------------------------------------------------

#[test]
fn smollm2_chat_template_renders_like_hf() {
    let Some(tok) = load(SMOLLM2) else { return };
    let conversation = [
        ChatMessage::new("user", "Hello!"),
        ChatMessage::new("assistant", "Hi, how can I help?"),
        ChatMessage::new("user", "What is 2+2?"),
    ];
    // expected strings rendered by Python jinja2 with transformers' settings from the template in the GGUF
    let out = tok.apply_chat_template(&conversation, true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi, how can I help?<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    );
    let mut with_system = vec![ChatMessage::new("system", "You are terse.")];
    with_system.extend(conversation);
    let out = tok.apply_chat_template(&with_system, false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHello!<|im_end|>\n\
         <|im_start|>assistant\nHi, how can I help?<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    );
    // the rendered prompt parses back into the chat tokens
    let ids = tok.encode(&out, true, true).unwrap();
    assert_eq!(ids.iter().filter(|&&id| id == 1).count(), 4);
}

#[test]
fn model_without_template_needs_one() {
    let Some(tok) = load(GEMMA3) else { return };
    let msgs = [ChatMessage::new("user", "Hi")];
    let err = tok
        .apply_chat_template(&msgs, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no chat template") && err.contains("--chat-template"),
        "{err}"
    );
    // a template from elsewhere (a --chat-template file) works with the vocab's BOS text
    let out = tok
        .apply_template("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m.role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}", &msgs, true)
        .unwrap();
    assert_eq!(out, "<bos><start_of_turn>user\nHi<end_of_turn>\n");
}

// ----------------------------------------------------------------------------
// Malformed or unusual files
// ----------------------------------------------------------------------------

/// A small byte-level BPE vocab in a GGUF file: the 256 byte tokens, "he", "hel", "hello", and a control token.
fn tiny_bpe(pre: Option<&str>) -> GgufWriter {
    let alphabet: Vec<char> = (0..=255u8)
        .map(|b| {
            let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
            if printable {
                char::from(b)
            } else {
                let n = (0..b)
                    .filter(|&x| {
                        !((0x21..=0x7E).contains(&x) || (0xA1..=0xAC).contains(&x) || x >= 0xAE)
                    })
                    .count();
                char::from_u32(256 + n as u32).unwrap()
            }
        })
        .collect();
    let mut tokens: Vec<Vec<u8>> = alphabet
        .iter()
        .map(|c| c.to_string().into_bytes())
        .collect();
    tokens.extend([
        b"he".to_vec(),
        b"ll".to_vec(),
        b"hell".to_vec(),
        b"hello".to_vec(),
        b"<|end|>".to_vec(),
    ]);
    let mut types = vec![1i32; tokens.len()];
    *types.last_mut().unwrap() = 3;
    let merges: Vec<Vec<u8>> = vec![
        b"h e".to_vec(),
        b"l l".to_vec(),
        b"he ll".to_vec(),
        b"hell o".to_vec(),
    ];
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::str("llama"))
        .add_kv("tokenizer.ggml.model", Value::str("gpt2"))
        .add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(tokens)))
        .add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))
        .add_kv("tokenizer.ggml.merges", Value::Array(Array::String(merges)))
        .add_kv("tokenizer.ggml.eos_token_id", Value::U32(260));
    if let Some(p) = pre {
        w.add_kv("tokenizer.ggml.pre", Value::str(p));
    }
    w
}

fn open(w: &GgufWriter) -> GgufFile {
    GgufFile::from_bytes(&w.to_bytes().unwrap(), "tiny.gguf").unwrap()
}

#[test]
fn tiny_bpe_file_tokenizes() {
    let tok = Tokenizer::from_gguf(&open(&tiny_bpe(Some("gpt-2")))).unwrap();
    // "hello" merges h+e, l+l, he+ll, hell+o; " hello" has no merge for the space
    assert_eq!(tok.encode("hello", true, true).unwrap(), [259]);
    assert_eq!(
        tok.encode(" hello<|end|>", true, true).unwrap(),
        [32, 259, 260]
    ); // byte 0x20 is token 32
    assert!(tok.is_eog(260)); // eos, and "<|end|>" is an end-of-generation text
    assert_eq!(
        tok.decode_with(&tok.encode("hi hello<|end|>", false, true).unwrap(), true),
        "hi hello<|end|>"
    );
}

#[test]
fn unknown_missing_and_overridden_pre() {
    let err = Tokenizer::from_gguf(&open(&tiny_bpe(Some("brand-new-pre"))))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown pre-tokenizer 'brand-new-pre'") && err.contains("--tokenizer-pre"),
        "{err}"
    );
    let opts = TokenizerOptions {
        pre_override: Some("llama3".into()),
    };
    let tok = Tokenizer::from_gguf_with(&open(&tiny_bpe(Some("brand-new-pre"))), &opts).unwrap();
    assert_eq!(tok.pre_name(), "llama3");
    // a missing pre falls back to "default" (with a warning on stderr)
    let tok = Tokenizer::from_gguf(&open(&tiny_bpe(None))).unwrap();
    assert_eq!(tok.pre_name(), "default");
}

#[test]
fn malformed_tokenizer_metadata_is_an_error() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("tokenizer.ggml.bos_token_id", Value::U32(999_999), "999999"),
        (
            "tokenizer.ggml.merges",
            Value::Array(Array::String(vec![b"hello".to_vec()])),
            "merges[0]",
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![1; 3])),
            "token_type",
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![0.0; 7])),
            "scores",
        ),
        ("tokenizer.ggml.model", Value::str("bert-ish"), "bert-ish"),
    ];
    for (key, value, want) in cases {
        let mut w = tiny_bpe(Some("gpt-2"));
        w.add_kv(key, value);
        // the gguf reader or the tokenizer refuses it, naming what is wrong
        let err = match GgufFile::from_bytes(&w.to_bytes().unwrap(), "bad.gguf") {
            Err(e) => e.to_string(),
            Ok(f) => Tokenizer::from_gguf(&f).expect_err(key).to_string(),
        };
        assert!(err.contains(want), "{key}: {err:?} should mention {want:?}");
    }
    // a byte token that is not <0xHH>
    let mut w = tiny_bpe(Some("gpt-2"));
    w.add_kv("tokenizer.ggml.model", Value::str("llama"));
    let mut types = vec![1i32; 261];
    types[0] = 6;
    w.add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
    let err = match GgufFile::from_bytes(&w.to_bytes().unwrap(), "bad.gguf") {
        Err(e) => e.to_string(),
        Ok(f) => Tokenizer::from_gguf(&f).unwrap_err().to_string(),
    };
    assert!(err.contains("<0x"), "{err}");
}
