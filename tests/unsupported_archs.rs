//! Models the engine does not run yet fail with a reason, not a shape error: an unknown architecture is named
//! with the list of supported ones; a mixture-of-experts, recurrent or hybrid (linear-attention / state-space)
//! architecture says which it is; so do expert or state-space tensors, and a nonzero expert count, in a file of a
//! supported architecture (Mixtral is `llama` with experts). Each from `ModelConfig::from_gguf`, `Model::load`
//! and `host inspect` (which still prints the rest of the file). The files are tiny models of our own writer.

use std::process::Command;

use host::config::ModelConfig;
use host::gguf::{tiny_model, GgmlType, GgufFile, GgufWriter, TinySpec, Value};
use host::model::Model;

const SUPPORTED: &str = "(supported: llama, qwen2, qwen3, gemma3, phi3, mistral3)";

fn tiny(arch: &'static str, edit: impl FnOnce(&mut GgufWriter)) -> Vec<u8> {
    let mut w = tiny_model(&TinySpec { arch, ..TinySpec::default() }).unwrap();
    edit(&mut w);
    w.to_bytes().unwrap()
}

/// The error of `ModelConfig::from_gguf` and of `Model::load`, which must agree, and `host inspect`'s report of
/// the file written to disk: each must contain every one of `want`.
fn check(tag: &str, bytes: &[u8], want: &[&str]) {
    let f = GgufFile::from_bytes(bytes, "t.gguf").unwrap();
    let cfg = ModelConfig::from_gguf(&f).unwrap_err().to_string();
    let load = Model::load(&f).err().expect("Model::load must fail").to_string();
    assert_eq!(cfg, load, "{tag}");

    let path = std::env::temp_dir().join(format!("unsupported_{tag}_{}.gguf", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_host")).arg("inspect").arg(&path).output().unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(out.status.success(), "{tag}: inspect failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("tensors\n"), "{tag}: inspect still lists the tensors");
    for w in want {
        assert!(cfg.contains(w), "{tag}: '{cfg}' lacks '{w}'");
        assert!(text.contains(w), "{tag}: inspect lacks '{w}':\n{text}");
    }
    println!("{tag}: {cfg}");
}

#[test]
fn unknown_architecture_is_named_with_the_supported_list() {
    let bytes = tiny("llama", |w| {
        w.add_kv("general.architecture", Value::str("gptneox2"));
    });
    check("unknown", &bytes, &["unsupported architecture 'gptneox2'", SUPPORTED]);
}

#[test]
fn mixture_of_experts_architectures_say_so() {
    for arch in ["qwen3moe", "qwen2moe", "deepseek2", "gpt-oss", "llama4"] {
        let bytes = tiny("llama", |w| {
            w.add_kv("general.architecture", Value::str(arch));
        });
        check(
            arch,
            &bytes,
            &[
                &format!("unsupported architecture '{arch}': a mixture-of-experts model"),
                "not supported yet",
                SUPPORTED,
            ],
        );
    }
}

#[test]
fn hybrid_and_recurrent_architectures_say_so() {
    for arch in ["qwen3next", "qwen35", "lfm2", "granitehybrid", "plamo2", "nemotron_h", "jamba", "falcon-h1"] {
        let bytes = tiny("llama", |w| {
            w.add_kv("general.architecture", Value::str(arch));
        });
        check(
            arch,
            &bytes,
            &[
                &format!("unsupported architecture '{arch}': a hybrid model (linear-attention or state-space layers"),
                "not supported yet",
            ],
        );
    }
    for arch in ["mamba", "mamba2", "rwkv7"] {
        let bytes = tiny("llama", |w| {
            w.add_kv("general.architecture", Value::str(arch));
        });
        check(arch, &bytes, &[&format!("unsupported architecture '{arch}': a recurrent model"), "not supported yet"]);
    }
}

#[test]
fn experts_in_a_supported_architecture_say_so() {
    // Mixtral-style: llama with an expert count
    let bytes = tiny("llama", |w| {
        w.add_kv("llama.expert_count", Value::U32(8)).add_kv("llama.expert_used_count", Value::U32(2));
    });
    check("expert_count", &bytes, &["llama.expert_count = 8: mixture-of-experts models are not supported yet"]);
    // expert tensors without the keys: named, rather than "unexpected tensor" or a missing ffn_gate
    let bytes = tiny("qwen3", |w| {
        w.remove_tensor("blk.0.ffn_gate.weight").add_tensor(
            "blk.0.ffn_gate_exps.weight",
            &[64, 128, 4],
            GgmlType::F32,
            vec![0u8; 64 * 128 * 4 * 4],
        )
        .unwrap();
    });
    check(
        "exps_tensor",
        &bytes,
        &["tensor 'blk.0.ffn_gate_exps.weight': mixture-of-experts models (routed expert layers) are not supported"],
    );
    // a state-space tensor in a supported architecture
    let bytes = tiny("llama", |w| {
        w.add_tensor("blk.1.ssm_conv1d.weight", &[4, 64], GgmlType::F32, vec![0u8; 4 * 64 * 4]).unwrap();
    });
    let want = "tensor 'blk.1.ssm_conv1d.weight': recurrent / state-space layers are not supported yet";
    check("ssm_tensor", &bytes, &[want]);
}

#[test]
fn the_new_architectures_load_and_inspect() {
    for arch in ["qwen3", "phi3", "mistral3"] {
        let bytes = tiny(arch, |_| {});
        let f = GgufFile::from_bytes(&bytes, "t.gguf").unwrap();
        let m = Model::load(&f).unwrap();
        assert_eq!(m.config.arch.name(), arch);
        let path = std::env::temp_dir().join(format!("supported_{arch}_{}.gguf", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_host")).args(["inspect", "--json"]).arg(&path).output().unwrap();
        std::fs::remove_file(&path).unwrap();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j["config"]["arch"], arch);
        assert_eq!(j["config_error"], serde_json::Value::Null);
    }
}
