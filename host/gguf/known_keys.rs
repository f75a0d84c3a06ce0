//! Checks of well-known metadata keys, run at open: each must have its spec type (type-confused keys are a
//! known attack: narrow arrays read with a wide stride), and the tokenizer arrays must agree with each other
//! (lengths, special-token ids in range, byte tokens well formed, merges split in two).
//!
//! Only cheap, local facts are checked here; the tokenizer module still owns the meaning of the vocabulary.

use super::value::{Array, Value, ValueType};

/// Largest vocabulary (token count) a file may declare.
pub const MAX_TOKENS: usize = 1 << 24;

/// ggml token types (`tokenizer.ggml.token_type`): 0 undefined, 1 normal, 2 unknown, 3 control,
/// 4 user-defined, 5 unused, 6 byte.
pub const TOKEN_TYPE_BYTE: i32 = 6;
const MAX_TOKEN_TYPE: i32 = 6;

/// What a well-known key must hold.
#[derive(Clone, Copy)]
enum Expect {
    Str,
    /// Any integer type (the spec recommends accepting u32 and u64).
    Int,
    Bool,
    ArrayOf(ValueType),
}

/// Exact keys and their types (`general.alignment` is checked by the reader itself).
const KNOWN: &[(&str, Expect)] = &[
    ("general.architecture", Expect::Str),
    ("general.quantization_version", Expect::Int),
    ("general.file_type", Expect::Int),
    ("tokenizer.ggml.model", Expect::Str),
    ("tokenizer.ggml.pre", Expect::Str),
    ("tokenizer.chat_template", Expect::Str),
    ("tokenizer.ggml.tokens", Expect::ArrayOf(ValueType::String)),
    ("tokenizer.ggml.scores", Expect::ArrayOf(ValueType::F32)),
    ("tokenizer.ggml.token_type", Expect::ArrayOf(ValueType::I32)),
    ("tokenizer.ggml.merges", Expect::ArrayOf(ValueType::String)),
];

fn describe(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("array of {}", a.elem_type()),
        v => v.value_type().name().to_owned(),
    }
}

fn matches(v: &Value, e: Expect) -> bool {
    match e {
        Expect::Str => matches!(v, Value::String(_)),
        Expect::Int => v.as_int().is_some(),
        Expect::Bool => matches!(v, Value::Bool(_)),
        Expect::ArrayOf(t) => v.as_array().is_some_and(|a| a.elem_type() == t),
    }
}

fn expect_name(e: Expect) -> String {
    match e {
        Expect::Str => "string".into(),
        Expect::Int => "an integer".into(),
        Expect::Bool => "bool".into(),
        Expect::ArrayOf(t) => format!("array of {t}"),
    }
}

/// Checks `metadata` (unique keys, in file order). The error is the message for `Error::Gguf`.
pub(crate) fn check(metadata: &[(String, Value)]) -> Result<(), String> {
    let get = |k: &str| metadata.iter().find(|(key, _)| key == k).map(|(_, v)| v);

    // --- types of well-known keys ---
    for (key, v) in metadata {
        let expect = KNOWN.iter().find(|(k, _)| k == key).map(|&(_, e)| e).or_else(|| {
            let tok = key.strip_prefix("tokenizer.ggml.")?;
            if tok.ends_with("_token_id") {
                Some(Expect::Int)
            } else if tok.starts_with("add_") {
                Some(Expect::Bool)
            } else {
                None
            }
        });
        if let Some(e) = expect {
            if !matches(v, e) {
                return Err(format!("key '{key}' has type {}, expected {}", describe(v), expect_name(e)));
            }
        }
    }

    // --- tokenizer arrays agree with the token list ---
    let Some(tokens) = get("tokenizer.ggml.tokens").and_then(Value::as_array).and_then(Array::as_strings) else {
        return Ok(());
    };
    let n = tokens.len();
    if n == 0 || n > MAX_TOKENS {
        return Err(format!("tokenizer.ggml.tokens has {n} entries, expected 1..={MAX_TOKENS}"));
    }
    for key in ["tokenizer.ggml.scores", "tokenizer.ggml.token_type"] {
        if let Some(a) = get(key).and_then(Value::as_array) {
            if a.len() != n {
                return Err(format!("{key} has {} entries, tokenizer.ggml.tokens has {n}", a.len()));
            }
        }
    }
    if let Some(types) = get("tokenizer.ggml.token_type").and_then(Value::as_array).and_then(Array::as_i32) {
        for (id, (&ty, text)) in types.iter().zip(tokens).enumerate() {
            if !(0..=MAX_TOKEN_TYPE).contains(&ty) {
                return Err(format!("tokenizer.ggml.token_type[{id}] = {ty}, expected 0..={MAX_TOKEN_TYPE}"));
            }
            if ty == TOKEN_TYPE_BYTE && parse_byte_token(text).is_none() {
                return Err(format!(
                    "byte token {id} is {:?}, expected <0xHH> with two hex digits",
                    String::from_utf8_lossy(text)
                ));
            }
        }
    }

    // --- special token ids name real tokens ---
    for (key, v) in metadata {
        if key.starts_with("tokenizer.ggml.") && key.ends_with("_token_id") {
            let id = v.as_int().unwrap_or(-1); // type checked above
            if id < 0 || id >= n as i128 {
                return Err(format!("{key} = {id} is out of range for a vocabulary of {n} tokens"));
            }
        }
    }

    // --- merges: "left right", split at the first space after position 0 (as llama.cpp does) ---
    if let Some(merges) = get("tokenizer.ggml.merges").and_then(Value::as_array).and_then(Array::as_strings) {
        for (i, m) in merges.iter().enumerate() {
            let split = m.iter().skip(1).position(|&b| b == b' ').map(|p| p + 1);
            if split.is_none_or(|s| s + 1 >= m.len()) {
                return Err(format!(
                    "tokenizer.ggml.merges[{i}] = {:?} is not two tokens separated by a space",
                    String::from_utf8_lossy(m)
                ));
            }
        }
    }
    Ok(())
}

/// The byte of a byte-fallback token `<0xHH>` (exactly two hex digits), else `None`.
pub fn parse_byte_token(text: &[u8]) -> Option<u8> {
    match text {
        [b'<', b'0', b'x', h, l, b'>'] => {
            let hex = |c: u8| (c as char).to_digit(16);
            Some((hex(*h)? * 16 + hex(*l)?) as u8)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Value {
        Value::Array(Array::String(v.iter().map(|s| s.as_bytes().to_vec()).collect()))
    }

    fn kv(k: &str, v: Value) -> (String, Value) {
        (k.to_owned(), v)
    }

    #[test]
    fn byte_tokens_need_two_hex_digits() {
        assert_eq!(parse_byte_token(b"<0x0A>"), Some(10));
        assert_eq!(parse_byte_token(b"<0xff>"), Some(255));
        for bad in ["<0x-1>", "<0xZZ>", "<0x1>", "<0x100>", "<0x+1>", "0x41"] {
            assert_eq!(parse_byte_token(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn tokenizer_metadata_consistency() {
        let toks = kv("tokenizer.ggml.tokens", strings(&["a", "b", "<0x41>"]));
        assert!(check(std::slice::from_ref(&toks)).is_ok());
        let e = check(&[toks.clone(), kv("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0; 2])))]);
        assert_eq!(e.unwrap_err(), "tokenizer.ggml.scores has 2 entries, tokenizer.ggml.tokens has 3");
        let e = check(&[toks.clone(), kv("tokenizer.ggml.scores", Value::Array(Array::U8(vec![0; 3])))]);
        assert_eq!(e.unwrap_err(), "key 'tokenizer.ggml.scores' has type array of u8, expected array of f32");
        let e = check(&[toks.clone(), kv("tokenizer.ggml.eos_token_id", Value::U32(3))]);
        assert_eq!(e.unwrap_err(), "tokenizer.ggml.eos_token_id = 3 is out of range for a vocabulary of 3 tokens");
        let e = check(&[toks.clone(), kv("tokenizer.ggml.bos_token_id", Value::str("1"))]);
        assert!(e.unwrap_err().contains("has type string, expected an integer"));
        let types = kv("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![1, 6, 6])));
        assert!(check(&[toks.clone(), types]).unwrap_err().contains("byte token 1 is \"b\""));
        let e = check(&[toks, kv("tokenizer.ggml.merges", strings(&["a b", "ab"]))]);
        assert!(e.unwrap_err().contains("merges[1] = \"ab\" is not two tokens"));
        let e = check(&[kv("tokenizer.ggml.tokens", strings(&[]))]);
        assert!(e.unwrap_err().contains("has 0 entries"));
    }
}
