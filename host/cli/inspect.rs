//! `host inspect MODEL [--json]`: a GGUF file's architecture and config, tokenizer summary, tensor counts and
//! bytes by type, metadata, and the tensor table. `--json` prints the same as one object:
//! `{file, metadata, config, tokenizer, tensor_types, tensors}`.
//!
//! Reads only the header: no tensor data is touched. A config that does not parse (an architecture the engine
//! does not run, say) is reported in place of the config; the rest is still printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};

use crate::config::{ModelConfig, RopeScaling};
use crate::gguf::{Array, GgmlType, GgufFile, Value};
use crate::Result;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Path to a .gguf model file.
    pub model: std::path::PathBuf,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let f = GgufFile::open(&args.model)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&f)).unwrap_or_default());
    } else {
        print!("{}", to_text(&f));
    }
    Ok(())
}

// ----------------------------------------------------------------------------
// Shared summaries: values, tokenizer, tensor types
// ----------------------------------------------------------------------------

/// Arrays longer than this are summarised (type, length, first elements).
pub const ARRAY_SUMMARY_LEN: usize = 16;
/// Elements shown of a summarised array.
const ARRAY_HEAD: usize = 4;

fn float_json(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        json!(x.to_string()) // JSON has no NaN/inf
    }
}

fn text_json(b: &[u8]) -> Json {
    json!(String::from_utf8_lossy(b))
}

/// A metadata value as JSON: scalars as numbers/bools/strings, short arrays in full, long ones summarised.
pub fn value_json(v: &Value) -> Json {
    match v {
        Value::F32(x) => float_json(f64::from(*x)),
        Value::F64(x) => float_json(*x),
        Value::Bool(b) => json!(b),
        Value::String(s) => text_json(s),
        Value::Array(a) => array_json(a),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        // the remaining integer types fit in i64
        v => json!(v.as_int().and_then(|i| i64::try_from(i).ok())),
    }
}

fn array_json(a: &Array) -> Json {
    let elems =
        |n: usize| -> Vec<Json> { (0..n.min(a.len())).filter_map(|i| a.get(i)).map(|v| value_json(&v)).collect() };
    if a.len() <= ARRAY_SUMMARY_LEN {
        Json::Array(elems(a.len()))
    } else {
        json!({ "type": format!("array[{}]", a.elem_type()), "len": a.len(), "head": elems(ARRAY_HEAD) })
    }
}

/// One line of text for a metadata value.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let s = String::from_utf8_lossy(s);
            let one_line: String = s.chars().take(80).map(|c| if c.is_control() { ' ' } else { c }).collect();
            let more = if s.chars().count() > 80 { format!("... ({} bytes)", s.len()) } else { String::new() };
            format!("{one_line:?}{more}")
        }
        Value::Array(a) if a.len() > ARRAY_SUMMARY_LEN => {
            let head: Vec<String> = (0..ARRAY_HEAD).filter_map(|i| a.get(i)).map(|v| value_text(&v)).collect();
            format!("[{}; {}] [{}, ...]", a.elem_type(), a.len(), head.join(", "))
        }
        Value::Array(a) => {
            let all: Vec<String> = (0..a.len()).filter_map(|i| a.get(i)).map(|v| value_text(&v)).collect();
            format!("[{}]", all.join(", "))
        }
        v => value_json(v).to_string(),
    }
}

/// Tokenizer facts read straight from metadata: model, token count, special ids, merges, template.
fn tokenizer_json(f: &GgufFile) -> Json {
    let mut m = Map::new();
    if let Some(s) = f.get("tokenizer.ggml.model").and_then(Value::as_bytes) {
        m.insert("model".into(), text_json(s));
    }
    if let Some(s) = f.get("tokenizer.ggml.pre").and_then(Value::as_bytes) {
        m.insert("pre".into(), text_json(s));
    }
    let len = |k: &str| f.get(k).and_then(Value::as_array).map(Array::len);
    if let Some(n) = len("tokenizer.ggml.tokens") {
        m.insert("n_tokens".into(), json!(n));
    }
    if let Some(n) = len("tokenizer.ggml.merges") {
        m.insert("n_merges".into(), json!(n));
    }
    for (k, v) in &f.metadata {
        let Some(name) = k.strip_prefix("tokenizer.ggml.") else { continue };
        if name.ends_with("_token_id") || name.starts_with("add_") {
            m.insert(name.into(), value_json(v));
        }
    }
    if let Some(s) = f.get("tokenizer.chat_template").and_then(Value::as_bytes) {
        m.insert("chat_template_bytes".into(), json!(s.len()));
    }
    Json::Object(m)
}

/// (count, bytes) per tensor type, in ggml id order.
fn tensor_types(f: &GgufFile) -> BTreeMap<u32, (GgmlType, usize, u64)> {
    let mut by: BTreeMap<u32, (GgmlType, usize, u64)> = BTreeMap::new();
    for t in &f.tensors {
        let e = by.entry(t.ggml_type.id()).or_insert((t.ggml_type, 0, 0));
        e.1 += 1;
        e.2 += t.n_bytes;
    }
    by
}

fn config_json(c: &ModelConfig) -> Json {
    json!({
        "arch": c.arch.name(),
        "n_layers": c.n_layers,
        "dim": c.dim,
        "hidden_dim": c.hidden_dim,
        "n_heads": c.n_heads,
        "n_kv_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "head_dim_v": c.head_dim_v,
        "vocab_size": c.vocab_size,
        "context_len": c.context_len,
        "rms_eps": float_json(f64::from(c.rms_eps)),
        "rope_theta": float_json(f64::from(c.rope_theta)),
        "rope_dim": c.rope_dim,
        "rope_style": format!("{:?}", c.rope_style).to_lowercase(),
        "rope_scaling": match c.rope_scaling {
            RopeScaling::None => json!("none"),
            RopeScaling::Linear { factor } => json!({ "linear": float_json(f64::from(factor)) }),
        },
        "sliding_window": c.sliding_window,
        "rope_theta_local": float_json(f64::from(c.rope_theta_local)),
        "rope_orig_ctx": c.rope_orig_ctx,
        "rope_attn_factor": float_json(f64::from(c.rope_attn_factor)),
    })
}

// ----------------------------------------------------------------------------
// JSON
// ----------------------------------------------------------------------------

/// The whole report as one JSON object.
pub fn to_json(f: &GgufFile) -> Json {
    let metadata: Map<String, Json> = f.metadata.iter().map(|(k, v)| (k.clone(), value_json(v))).collect();
    let (config, config_error) = match ModelConfig::from_gguf(f) {
        Ok(c) => (config_json(&c), Json::Null),
        Err(e) => (Json::Null, json!(e.to_string())),
    };
    let types: Map<String, Json> =
        tensor_types(f).values().map(|(t, n, b)| (t.name().to_owned(), json!({ "count": n, "bytes": b }))).collect();
    let tensors: Vec<Json> = f
        .tensors
        .iter()
        .map(|t| json!({ "name": t.name, "type": t.ggml_type.name(), "shape": t.dims, "offset": t.offset, "bytes": t.n_bytes }))
        .collect();
    json!({
        "file": {
            "path": f.path.display().to_string(),
            "size": f.file_len(),
            "version": f.version,
            "alignment": f.alignment,
            "data_offset": f.data_offset,
            "n_kv": f.metadata.len(),
            "n_tensors": f.tensors.len(),
        },
        "metadata": metadata,
        "config": config,
        "config_error": config_error,
        "tokenizer": tokenizer_json(f),
        "tensor_types": types,
        "tensors": tensors,
    })
}

// ----------------------------------------------------------------------------
// Text
// ----------------------------------------------------------------------------

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.2} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The human-readable report.
pub fn to_text(f: &GgufFile) -> String {
    let mut o = String::new();
    let arch = f.get("general.architecture").and_then(Value::as_bytes).map(String::from_utf8_lossy);
    let _ = writeln!(
        o,
        "{}: gguf v{}, {}, {} kv, {} tensors, alignment {}, data at offset {}",
        f.path.display(),
        f.version,
        human_bytes(f.file_len()),
        f.metadata.len(),
        f.tensors.len(),
        f.alignment,
        f.data_offset
    );
    let _ = writeln!(o, "architecture: {}", arch.as_deref().unwrap_or("(none)"));

    o.push_str("\nconfig\n");
    match ModelConfig::from_gguf(f) {
        Ok(c) => {
            if let Json::Object(m) = config_json(&c) {
                for (k, v) in m {
                    let _ = writeln!(o, "  {k:<17} {v}");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(o, "  (not available: {e})");
        }
    }

    o.push_str("\ntokenizer\n");
    if let Json::Object(m) = tokenizer_json(f) {
        for (k, v) in m {
            let _ = writeln!(o, "  {k:<22} {v}");
        }
    }

    o.push_str("\ntensor types\n");
    let _ = writeln!(o, "  {:<8} {:>6} {:>14}", "type", "count", "bytes");
    let mut total = 0;
    for (t, n, b) in tensor_types(f).values() {
        total += b;
        let _ = writeln!(o, "  {:<8} {:>6} {:>14}  {}", t.name(), n, b, human_bytes(*b));
    }
    let _ = writeln!(o, "  {:<8} {:>6} {:>14}  {}", "total", f.tensors.len(), total, human_bytes(total));

    o.push_str("\nmetadata\n");
    for (k, v) in &f.metadata {
        let ty = match v {
            Value::Array(a) => format!("array[{}]", a.elem_type()),
            v => v.value_type().to_string(),
        };
        let _ = writeln!(o, "  {k:<45} {ty:<14} {}", value_text(v));
    }

    o.push_str("\ntensors\n");
    let _ = writeln!(o, "  {:<36} {:<8} {:<22} {:>12} {:>12}", "name", "type", "shape", "bytes", "offset");
    for t in &f.tensors {
        let shape = format!("{:?}", t.dims);
        let _ =
            writeln!(o, "  {:<36} {:<8} {:<22} {:>12} {:>12}", t.name, t.ggml_type.name(), shape, t.n_bytes, t.offset);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{tiny_model, TinySpec};

    #[test]
    fn json_report_of_a_tiny_model() {
        let mut w = tiny_model(&TinySpec::default()).unwrap();
        w.add_kv("x.nan", Value::F32(f32::NAN)).add_kv("x.short", Value::Array(Array::I16(vec![-1, 2])));
        let f = GgufFile::from_bytes(&w.to_bytes().unwrap(), "tiny.gguf").unwrap();
        let j = to_json(&f);
        assert_eq!(j["config"]["dim"], 64);
        assert_eq!(j["config"]["rope_style"], "normal");
        assert_eq!(j["config_error"], Json::Null);
        assert_eq!(j["metadata"]["llama.block_count"], 2);
        assert_eq!(j["metadata"]["x.nan"], "NaN");
        assert_eq!(j["metadata"]["x.short"], json!([-1, 2]));
        // 64 tokens > 16: summarised
        assert_eq!(
            j["metadata"]["tokenizer.ggml.tokens"],
            json!({"type": "array[string]", "len": 64, "head": ["<unk>", "<s>", "</s>", "t3"]})
        );
        assert_eq!(j["tokenizer"]["n_tokens"], 64);
        assert_eq!(j["tokenizer"]["bos_token_id"], 1);
        // 2 layers x 9 + token_embd + output_norm + output = 21 tensors; 2 x 3 norms + output_norm F32 + token_embd F32
        assert_eq!(j["tensors"].as_array().unwrap().len(), 21);
        assert_eq!(j["tensor_types"]["F32"]["count"], 6);
        assert_eq!(
            j["tensors"][0],
            json!({"name": "token_embd.weight", "type": "F32", "shape": [64, 64], "offset": 0, "bytes": 64 * 64 * 4})
        );
        let text = to_text(&f);
        assert!(text.contains("architecture: llama"));
        assert!(text.contains("[string; 64] [\"<unk>\", \"<s>\", \"</s>\", \"t3\", ...]"), "{text}");
    }

    #[test]
    fn unsupported_arch_still_inspects() {
        let mut w = tiny_model(&TinySpec::default()).unwrap();
        w.add_kv("general.architecture", Value::str("mamba"));
        let f = GgufFile::from_bytes(&w.to_bytes().unwrap(), "m.gguf").unwrap();
        let j = to_json(&f);
        assert_eq!(j["config"], Json::Null);
        assert!(j["config_error"].as_str().unwrap().contains("unsupported architecture 'mamba'"));
        assert!(to_text(&f).contains("(not available: model config: unsupported architecture 'mamba'"));
    }
}
