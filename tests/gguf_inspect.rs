//! `host inspect` and our reader agree with gguf-py on the two real models: every tensor's name, type, shape,
//! offset and size, and every metadata key's type, length and value. The reference views were dumped by
//! `scripts/gguf_py_dump.py` (gguf-py 0.19.0) into tests/fixtures/gguf/. Each metadata value is compared by an
//! FNV-1a 64 digest of its GGUF encoding (gguf-py re-encodes its decoded value; we encode our parsed `Value`),
//! and scalars also by value. Skipped when a model file is absent (scripts/fetch-models.sh fetches them).

use std::process::Command;

use host::gguf::{Encoder, GgufFile, Value};
use serde_json::Value as Json;

const CASES: &[(&str, &str)] = &[
    ("models/SmolLM2-135M-Instruct.Q4_1.gguf", "tests/fixtures/gguf/smollm2-135m-q4_1.gguf-py.json"),
    ("models/gemma-3-270m-q4_k_m.gguf", "tests/fixtures/gguf/gemma3-270m-q4_k_m.gguf-py.json"),
];

fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3))
}

fn fixture(path: &str) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn present(model: &str) -> bool {
    let ok = std::path::Path::new(model).exists();
    if !ok {
        eprintln!("SKIP: {model} is absent (run scripts/fetch-models.sh)");
    }
    ok
}

#[test]
fn reader_metadata_matches_gguf_py() {
    for &(model, fix) in CASES {
        if !present(model) {
            continue;
        }
        let want = fixture(fix);
        let f = GgufFile::open(model).unwrap();
        assert_eq!(u64::from(f.version), want["version"].as_u64().unwrap());
        assert_eq!(f.alignment, want["alignment"].as_u64().unwrap());
        assert_eq!(f.data_offset, want["data_offset"].as_u64().unwrap());
        let want_md = want["metadata"].as_array().unwrap();
        assert_eq!(f.metadata.len(), want_md.len(), "{model}: kv count");
        for ((key, v), w) in f.metadata.iter().zip(want_md) {
            assert_eq!(key, w["key"].as_str().unwrap(), "{model}: key order");
            assert_eq!(v.value_type().name(), w["type"].as_str().unwrap(), "{model}: {key} type");
            if let Value::Array(a) = v {
                assert_eq!(a.elem_type().name(), w["elem_type"].as_str().unwrap(), "{model}: {key} element type");
                assert_eq!(a.len() as u64, w["len"].as_u64().unwrap(), "{model}: {key} length");
            }
            let mut e = Encoder::new();
            e.u32(v.value_type().id()).value(v);
            assert_eq!(
                format!("{:016x}", fnv1a64(&e.buf)),
                w["fnv64"].as_str().unwrap(),
                "{model}: {key} value digest"
            );
        }
        println!("{model}: {} kv pairs agree with gguf-py", f.metadata.len());
    }
}

#[test]
fn inspect_json_matches_gguf_py() {
    for &(model, fix) in CASES {
        if !present(model) {
            continue;
        }
        let want = fixture(fix);
        let out = Command::new(env!("CARGO_BIN_EXE_host")).args(["inspect", "--json", model]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Json = serde_json::from_slice(&out.stdout).unwrap();

        // tensors: name, type, shape (GGUF order), offset, bytes, in file order
        let (got_t, want_t) = (got["tensors"].as_array().unwrap(), want["tensors"].as_array().unwrap());
        assert_eq!(got_t.len(), want_t.len(), "{model}: tensor count");
        for (g, w) in got_t.iter().zip(want_t) {
            for field in ["name", "type", "shape", "offset", "bytes"] {
                assert_eq!(g[field], w[field], "{model}: tensor {} {field}", w["name"]);
            }
        }
        // metadata: the same keys; scalar and short-string values equal
        let md = got["metadata"].as_object().unwrap();
        let want_md = want["metadata"].as_array().unwrap();
        assert_eq!(md.len(), want_md.len(), "{model}: metadata keys");
        for w in want_md {
            let key = w["key"].as_str().unwrap();
            let g = md.get(key).unwrap_or_else(|| panic!("{model}: inspect lacks key {key}"));
            if let Some(v) = w.get("value") {
                assert_eq!(g, v, "{model}: {key}");
            }
            if let Some(n) = w.get("len") {
                let len = g.get("len").cloned().unwrap_or_else(|| Json::from(g.as_array().map_or(0, Vec::len)));
                assert_eq!(&len, n, "{model}: {key} length");
            }
        }
        assert_eq!(got["file"]["n_tensors"], want_t.len());
        assert_eq!(got["config_error"], Json::Null);
        println!("{model}: inspect agrees with gguf-py on {} tensors and {} keys", want_t.len(), want_md.len());
    }
}

#[test]
fn inspect_text_has_every_section() {
    let (model, _) = CASES[0];
    if !present(model) {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_host")).args(["inspect", model]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "architecture: llama",
        "\nconfig\n",
        "n_kv_heads        3",
        "n_tokens               49152",
        "Q4_1        210",
        "blk.29.ffn_down.weight",
        "tokenizer.ggml.merges",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn inspect_reports_a_bad_file_and_fails() {
    let dir = std::env::temp_dir().join(format!("gguf_inspect_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.gguf");
    std::fs::write(&path, b"GGUF\x01\0\0\0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host")).arg("inspect").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shorter than the 24-byte gguf header"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
