//! `cpu::attention_ggml` against ggml-cpu's own flash attention, bit for bit: tests/fixtures/ggml_flash_attn holds
//! its outputs (4 threads, as llama-simple runs) for one query over 256 padded keys (one chunk), over 512 and 768
//! (split-KV: a chunk per thread, merged), with a sliding window, and for batches of 5 and 70 queries (one chunk per
//! query; tiled). Written by scripts/llama-cpp-greedy/flash_attn.cpp.

use half::f16;
use host::backend::cpu::{attention_ggml, AttnParams};
use std::path::Path;

fn check(path: &Path) -> Result<(), String> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let u = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap()) as usize;
    let (hd, n_heads, n_kv_heads, n_q, pos0, window) = (u(0), u(1), u(2), u(3), u(4), u(5));
    let scale = f32::from_le_bytes(b[24..28].try_into().unwrap());
    let mut off = 28;
    let mut take = |n: usize| {
        let s = &b[off..off + n];
        off += n;
        s
    };
    let f32s = |s: &[u8]| -> Vec<f32> { s.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() };
    let f16s = |s: &[u8]| -> Vec<f16> { s.chunks_exact(2).map(|c| f16::from_le_bytes(c.try_into().unwrap())).collect() };
    let q = f32s(take(4 * n_q * n_heads * hd));
    let kv_len = (pos0 + n_q) * n_kv_heads * hd;
    let k = f16s(take(2 * kv_len));
    let v = f16s(take(2 * kv_len));
    let want = f32s(take(4 * n_q * n_heads * hd));
    assert_eq!(off, b.len(), "{}: trailing bytes", path.display());

    let p = AttnParams {
        n_tok: n_q,
        pos0,
        n_heads,
        n_kv_heads,
        head_dim: hd,
        head_dim_v: hd,
        scale,
        window: (window > 0).then_some(window),
        round_like_cache: true,
    };
    let mut got = vec![0.0f32; want.len()];
    attention_ggml(&mut got, &q, &k, &v, &p);
    let differ = got.iter().zip(&want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    if differ == 0 {
        return Ok(());
    }
    let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    Err(format!("{}: {differ}/{} outputs differ, worst {worst:e}", path.display(), got.len()))
}

#[test]
fn attention_is_bit_identical_to_ggml_cpu() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml_flash_attn"));
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("fixture dir").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 6, "fixtures: {files:?}");
    let failures: Vec<String> = files.iter().filter_map(|f| check(f).err()).collect();
    assert!(failures.is_empty(), "differences from ggml-cpu:\n{}", failures.join("\n"));
}
