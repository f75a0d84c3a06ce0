//! Opening a 4 GiB model is header-only work: a sparse synthetic file (tensor data left as holes) must open
//! in well under 100 ms, and afterwards no page of its data section may be resident (mincore), i.e. neither
//! the reader nor `host inspect` touched tensor data. The time is printed; the assertion bound is a generous
//! 2 s so that a loaded CI machine does not fail it.

#![cfg(target_os = "linux")] // mincore

use std::time::{Duration, Instant};

use host::gguf::{GgmlType, GgufFile, GgufWriter, Value};

extern "C" {
    fn mincore(addr: *mut std::ffi::c_void, length: usize, vec: *mut u8) -> i32;
}

const PAGE: usize = 4096;

/// Number of resident pages of `bytes` (whole pages inside the slice only).
fn resident_pages(bytes: &[u8]) -> usize {
    let start = (bytes.as_ptr() as usize).div_ceil(PAGE) * PAGE;
    let end = (bytes.as_ptr() as usize + bytes.len()) / PAGE * PAGE;
    if end <= start {
        return 0;
    }
    let n = (end - start) / PAGE;
    let mut vec = vec![0u8; n];
    // SAFETY: [start, end) lies inside the live map behind `bytes`, page aligned; `vec` has one byte per page.
    let rc = unsafe { mincore(start as *mut _, end - start, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore failed: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&v| v & 1 != 0).count()
}

#[test]
fn open_4gib_sparse_file_is_fast_and_reads_no_tensor_data() {
    let dir = std::env::temp_dir().join(format!("gguf_big_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.gguf");

    // 32 layers x 4 Q8_0 matrices of 4096 x 8192 (~34 MiB each) = ~4.3 GiB, plus a 32k-token vocabulary.
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::str("llama"));
    let tokens = (0..32_000).map(|i| format!("tok{i}").into_bytes()).collect();
    w.add_kv("tokenizer.ggml.tokens", Value::Array(host::gguf::Array::String(tokens)));
    for l in 0..32 {
        for role in ["attn_q", "ffn_gate", "ffn_up", "ffn_down"] {
            w.add_tensor_zeroed(&format!("blk.{l}.{role}.weight"), &[4096, 8192], GgmlType::Q8_0).unwrap();
        }
    }
    w.write(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len > 4 << 30, "{len}");

    let t0 = Instant::now();
    let f = GgufFile::open(&path).unwrap();
    let dt = t0.elapsed();
    let data = &f.bytes()[f.data_offset as usize..];
    let resident = resident_pages(data);
    println!(
        "opened {:.2} GiB sparse gguf ({} tensors, {} kv, header {} bytes) in {:.2} ms; {resident} of {} data pages resident",
        len as f64 / (1u64 << 30) as f64,
        f.tensors.len(),
        f.metadata.len(),
        f.data_offset,
        dt.as_secs_f64() * 1e3,
        data.len() / PAGE
    );
    assert_eq!(f.tensors.len(), 128);
    assert_eq!(resident, 0, "the reader touched tensor data");
    assert!(dt < Duration::from_secs(2), "{dt:?}");

    // `host inspect` (both renderings) and the config read only the header too.
    let text = host::cli::inspect::to_text(&f);
    let json = host::cli::inspect::to_json(&f).to_string();
    let _ = host::config::ModelConfig::from_gguf(&f);
    assert!(text.contains("blk.31.ffn_down.weight") && json.contains("blk.31.ffn_down.weight"));
    assert_eq!(resident_pages(data), 0, "host inspect touched tensor data");

    // the data is reachable (and zero) once asked for
    let t = f.tensor("blk.31.ffn_down.weight").unwrap();
    assert_eq!(f.tensor_data(t).len() as u64, 8192 * 4096 / 32 * 34);
    assert!(f.tensor_data(t)[..4096].iter().all(|&b| b == 0));
    drop(f);
    std::fs::remove_dir_all(&dir).unwrap();
}
