//! Model load on top of the reader: a file truncated after open (GGUF_SECURITY.md case 38) must give an error
//! naming the file and the range, never a SIGBUS; Llama 3.1's `rope_freqs.weight` is claimed for llama, its
//! shape and type checked, and its values reach the model (and change the forward).

use std::path::PathBuf;

use host::config::ModelConfig;
use host::gguf::{tiny_model, GgmlType, GgufFile, GgufWriter, TensorInfo, TinySpec};
use host::kv_cache::CacheType;
use host::model::{CpuForward, Forward, Model};
use host::weights::ModelTensors;

/// A private temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("gguf_load_{tag}_{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The kernel supports MADV_POPULATE_READ (Linux >= 5.14).
fn has_populate_read() -> bool {
    let Ok(rel) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else { return false };
    let mut it = rel.trim().split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (5, 14)
}

/// Writes the default tiny llama, opens it, then cuts the file `keep` bytes into its data section.
fn open_then_truncate(dir: &TempDir, keep: u64) -> (GgufFile, PathBuf, u64) {
    let path = dir.0.join("tiny.gguf");
    tiny_model(&TinySpec::default()).unwrap().write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    let full = f.file_len();
    assert_eq!(f.data_end(), full, "the writer ends the file with the last tensor");
    let cut = f.data_offset + keep;
    assert!(cut + 3 * 4096 < full, "the tiny model must extend pages past the cut ({cut} of {full})");
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
    (f, path, cut)
}

#[test]
fn truncated_after_open_is_an_error_not_sigbus() {
    let dir = TempDir::new("trunc");
    let (f, path, cut) = open_then_truncate(&dir, 20_000);
    let shown = path.display().to_string();

    // The header was parsed at open; the config needs no tensor data.
    let c = ModelConfig::from_gguf(&f).unwrap();

    // Tensors wholly below the cut are still handed out; the ones past it are refused (fstat re-check).
    let first = &f.tensors[0];
    assert!(f.data_offset + first.offset + first.n_bytes <= cut, "first tensor ends past the cut");
    assert_eq!(f.tensor_bytes(first).unwrap().len() as u64, first.n_bytes);
    let last = f.tensors.last().unwrap();
    let e = f.tensor_bytes(last).unwrap_err().to_string();
    let (s, end) = (f.data_offset + last.offset, f.data_offset + last.offset + last.n_bytes);
    for want in [
        shown.as_str(),
        &format!("tensor '{}' data at file offsets {s}..{end}", last.name),
        &format!("it is now {cut} bytes, {} when opened", f.file_len()),
    ] {
        assert!(e.contains(want), "missing {want:?} in: {e}");
    }
    assert!(f.tensor_data(last).is_empty(), "tensor_data of a cut tensor must be empty, not a faulting slice");

    // Model load fails cleanly at the first tensor past the cut.
    let e = ModelTensors::from_gguf(&f, &c).unwrap_err().to_string();
    assert!(
        e.contains(&shown) && e.contains("past the end of the file") && e.contains(&format!("now {cut} bytes")),
        "{e}"
    );
    let e = Model::load(&f).err().expect("Model::load of a truncated file").to_string();
    assert!(e.contains("past the end of the file"), "{e}");

    // Prefaulting every tensor: EFAULT from madvise where the kernel has MADV_POPULATE_READ, else the fstat
    // fallback; both name the file, the new length and the first tensor that no longer fits.
    let all: Vec<&TensorInfo> = f.tensors.iter().collect();
    let cut_tensor = f.tensors.iter().find(|t| f.data_offset + t.offset + t.n_bytes > cut).unwrap();
    let e = f.populate(&all).unwrap_err().to_string();
    println!("populate after truncation: {e}");
    let want_tensor = format!("tensor '{}' needs offsets", cut_tensor.name);
    assert!(e.contains(&shown) && e.contains(&format!("now {cut} bytes")) && e.contains(&want_tensor), "{e}");
    if has_populate_read() {
        assert!(e.contains("failed (EFAULT)"), "madvise path expected on this kernel: {e}");
    }
    let e = f.populate_with(&all, false).unwrap_err().to_string();
    assert!(e.contains(&format!("tensor data up to offset {}", f.file_len())) && e.contains(&want_tensor), "{e}");

    // Tensors that still fit populate fine on both paths.
    let head: Vec<&TensorInfo> = f.tensors.iter().filter(|t| f.data_offset + t.offset + t.n_bytes <= cut).collect();
    assert!(!head.is_empty());
    f.populate(&head).unwrap();
    f.populate_with(&head, false).unwrap();
    assert!(f.check_not_truncated().unwrap_err().to_string().contains("past the end of the file"));
}

#[test]
fn cut_inside_the_first_page_of_data() {
    // The cut lands inside the page that holds the start of the data: only whole pages past the new end fault.
    let dir = TempDir::new("trunc0");
    let (f, _path, cut) = open_then_truncate(&dir, 1);
    let all: Vec<&TensorInfo> = f.tensors.iter().collect();
    let e = f.populate(&all).unwrap_err().to_string();
    assert!(e.contains(&format!("now {cut} bytes")) && e.contains("tensor 'token_embd.weight' needs offsets"), "{e}");
    assert!(Model::load(&f).is_err());
}

#[test]
fn intact_file_loads_and_populates() {
    let dir = TempDir::new("intact");
    let path = dir.0.join("tiny.gguf");
    tiny_model(&TinySpec::default()).unwrap().write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    f.check_not_truncated().unwrap();
    let m = Model::load(&f).unwrap();
    assert_eq!(m.layers.len(), 2);
    // A file that grew is fine: the tensors are still where the header says.
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().set_len(f.file_len() + 100).unwrap();
    Model::load(&f).unwrap();
}

// ----------------------------------------------------------------------------
// rope_freqs.weight
// ----------------------------------------------------------------------------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The default tiny llama (head_dim 16, so rope_dim / 2 = 8 factors) with `rope_freqs.weight` added.
fn with_rope_freqs(spec: &TinySpec, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Vec<u8> {
    let mut w: GgufWriter = tiny_model(spec).unwrap();
    w.add_tensor("rope_freqs.weight", dims, ty, data).unwrap();
    w.to_bytes().unwrap()
}

fn load_err(bytes: &[u8]) -> String {
    let f = GgufFile::from_bytes(bytes, "rope.gguf").unwrap();
    let c = ModelConfig::from_gguf(&f).unwrap();
    match ModelTensors::from_gguf(&f, &c) {
        Ok(_) => panic!("expected the load to fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn rope_freqs_are_claimed_for_llama_and_reach_the_model() {
    let spec = TinySpec::default();
    let factors: Vec<f32> = (0..8).map(|i| 1.0 + i as f32 * 0.75).collect();
    let bytes = with_rope_freqs(&spec, &[8], GgmlType::F32, f32_bytes(&factors));
    let f = GgufFile::from_bytes(&bytes, "rope.gguf").unwrap();
    let c = ModelConfig::from_gguf(&f).unwrap();
    assert_eq!(c.rope_dim, 16);
    let t = ModelTensors::from_gguf(&f, &c).unwrap();
    let r = t.rope_freqs.expect("rope_freqs.weight claimed");
    assert_eq!((r.name, r.dims), ("rope_freqs.weight", &[8u64][..]));
    assert_eq!(r.data, &f32_bytes(&factors)[..]);
    let m = Model::load(&f).unwrap();
    assert_eq!(m.rope_freqs.as_deref(), Some(&factors[..]));

    // Without the tensor: none, and the forward differs from the one with factors past position 0.
    let plain = tiny_model(&spec).unwrap().to_bytes().unwrap();
    let fp = GgufFile::from_bytes(&plain, "plain.gguf").unwrap();
    let mp = Model::load(&fp).unwrap();
    assert!(mp.rope_freqs.is_none() && ModelTensors::from_gguf(&fp, &c).unwrap().rope_freqs.is_none());
    let logits = |m: &Model| -> Vec<f32> {
        let mut fwd = CpuForward::new(m, 8, CacheType::F32).unwrap();
        fwd.forward(&[1, 5, 9, 13], 0).unwrap().to_vec()
    };
    let (with, without) = (logits(&m), logits(&mp));
    let diff = with.iter().zip(&without).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff > 1e-4, "rope frequency factors had no effect on the logits (max diff {diff})");

    // Factors of exactly 1 are the identity.
    let ones = with_rope_freqs(&spec, &[8], GgmlType::F32, f32_bytes(&[1.0; 8]));
    let fo = GgufFile::from_bytes(&ones, "ones.gguf").unwrap();
    let mo = Model::load(&fo).unwrap();
    let diff = logits(&mo).iter().zip(&without).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-5, "factors of 1 changed the logits by {diff}");
}

#[test]
fn bad_rope_freqs_are_rejected_naming_the_tensor() {
    let spec = TinySpec::default();
    let e = load_err(&with_rope_freqs(&spec, &[7], GgmlType::F32, f32_bytes(&[1.0; 7])));
    assert!(e.contains("tensor 'rope_freqs.weight': wrong shape: expected [8], got [7]"), "{e}");
    let e = load_err(&with_rope_freqs(&spec, &[16], GgmlType::F32, f32_bytes(&[1.0; 16])));
    assert!(e.contains("tensor 'rope_freqs.weight': wrong shape: expected [8], got [16]"), "{e}");
    let e = load_err(&with_rope_freqs(&spec, &[8, 2], GgmlType::F32, f32_bytes(&[1.0; 16])));
    assert!(e.contains("tensor 'rope_freqs.weight': wrong shape: expected [8], got [8, 2]"), "{e}");
    let f16: Vec<u8> = (0..8).flat_map(|_| half::f16::ONE.to_le_bytes()).collect();
    let e = load_err(&with_rope_freqs(&spec, &[8], GgmlType::F16, f16));
    assert!(e.contains("tensor 'rope_freqs.weight': type F16, expected F32"), "{e}");
    // Another architecture does not read them: refused rather than silently ignored.
    let qwen = TinySpec { arch: "qwen2", ..TinySpec::default() };
    let e = load_err(&with_rope_freqs(&qwen, &[8], GgmlType::F32, f32_bytes(&[1.0; 8])));
    assert!(e.contains("tensor 'rope_freqs.weight': unexpected tensor for qwen2"), "{e}");
}

// ----------------------------------------------------------------------------
// phi3: rope_factors_long.weight / rope_factors_short.weight (LongRoPE)
// ----------------------------------------------------------------------------

/// A tiny phi3 (rope_dim 16: 8 factors each) with the given LongRoPE tensors and original context of 512.
fn phi3_with(tensors: &[(&str, &[u64], GgmlType, Vec<u8>)]) -> Vec<u8> {
    let mut w = tiny_model(&TinySpec { arch: "phi3", ..TinySpec::default() }).unwrap();
    w.add_kv("phi3.rope.scaling.original_context_length", host::gguf::Value::U32(512));
    for (name, dims, ty, data) in tensors {
        w.add_tensor(name, dims, *ty, data.clone()).unwrap();
    }
    w.to_bytes().unwrap()
}

#[test]
fn phi3_long_and_short_factors_are_chosen_by_context_size() {
    let (long, short): (Vec<f32>, Vec<f32>) = ((0..8).map(|i| 1.0 + i as f32).collect(), vec![1.5; 8]);
    let bytes = phi3_with(&[
        ("rope_factors_long.weight", &[8], GgmlType::F32, f32_bytes(&long)),
        ("rope_factors_short.weight", &[8], GgmlType::F32, f32_bytes(&short)),
    ]);
    let f = GgufFile::from_bytes(&bytes, "phi3.gguf").unwrap();
    let m = Model::load(&f).unwrap();
    assert_eq!(m.config.rope_orig_ctx, 512);
    // llama.cpp pads the context to 256 and takes the long factors past the original context
    assert_eq!(m.rope_factors(256), Some(&short[..]));
    assert_eq!(m.rope_factors(512), Some(&short[..]));
    assert_eq!(m.rope_factors(513), Some(&long[..]));
    assert_eq!(m.rope_factors(4096), Some(&long[..]));
    // and the forward uses them: the same tokens in a long context give other logits past position 0
    let logits = |ctx: usize| -> Vec<f32> {
        let mut fwd = CpuForward::new(&m, ctx, CacheType::F32).unwrap();
        fwd.forward(&[1, 5, 9, 13], 0).unwrap().to_vec()
    };
    let diff = logits(256).iter().zip(&logits(1024)).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff > 1e-4, "long and short factors gave the same logits (max diff {diff})");
}

#[test]
fn bad_phi3_rope_factors_are_rejected_naming_the_tensor() {
    let ones = f32_bytes(&[1.0; 8]);
    let e = load_err(&phi3_with(&[("rope_factors_long.weight", &[8], GgmlType::F32, ones.clone())]));
    assert!(e.contains("tensor 'rope_factors_short.weight': missing while rope_factors_long.weight is present"), "{e}");
    let f16: Vec<u8> = (0..8).flat_map(|_| half::f16::ONE.to_le_bytes()).collect();
    let e = load_err(&phi3_with(&[
        ("rope_factors_long.weight", &[8], GgmlType::F16, f16),
        ("rope_factors_short.weight", &[8], GgmlType::F32, ones.clone()),
    ]));
    assert!(e.contains("tensor 'rope_factors_long.weight': type F16, expected F32"), "{e}");
    let e = load_err(&phi3_with(&[
        ("rope_factors_long.weight", &[8], GgmlType::F32, ones.clone()),
        ("rope_factors_short.weight", &[7], GgmlType::F32, f32_bytes(&[1.0; 7])),
    ]));
    assert!(e.contains("tensor 'rope_factors_short.weight': wrong shape: expected [8], got [7]"), "{e}");
    // llama does not read them
    let mut w = tiny_model(&TinySpec::default()).unwrap();
    w.add_tensor("rope_factors_long.weight", &[8], GgmlType::F32, ones).unwrap();
    let e = load_err(&w.to_bytes().unwrap());
    assert!(e.contains("tensor 'rope_factors_long.weight': unexpected tensor for llama"), "{e}");
}
