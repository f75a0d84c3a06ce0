//! `quant::ggml_avx2::matmul` against llama.cpp's CPU backend, bit for bit: tests/fixtures/ggml_mulmat holds the
//! outputs ggml-cpu (portable x86 build, weights in its repack buffer where a model load puts them) computed for
//! random weights of every quantized type the engine runs and batches of 1, 4, 5, 8 and 9 tokens. The batch sizes
//! cross ggml's kernel switches: repacked gemv / gemm taking 4 tokens at a time, tinyBLAS for F16 batches, and the
//! tiled K-quant mat-mul from 8 tokens. Written by scripts/llama-cpp-greedy/mulmat.cpp.

use host::gguf::GgmlType;
use host::quant::ggml_avx2;
use std::path::Path;

struct Case {
    ty: GgmlType,
    rows: usize,
    cols: usize,
    weights: Vec<u8>,
    acts: Vec<f32>,
    /// (n_tok, ggml's outputs [n_tok][rows])
    batches: Vec<(usize, Vec<f32>)>,
}

fn read_case(path: &Path) -> Case {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut off = 0;
    let mut u32_at = || {
        let v = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        off += 4;
        v as usize
    };
    let (ty, rows, cols, n_batches, wbytes) = (u32_at(), u32_at(), u32_at(), u32_at(), u32_at());
    let ty = GgmlType::from_id(ty as u32).expect("known type id");
    let f32s = |bytes: &[u8]| -> Vec<f32> {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let weights = b[off..off + wbytes].to_vec();
    off += wbytes;
    let max_batch = 9;
    let acts = f32s(&b[off..off + 4 * max_batch * cols]);
    off += 4 * max_batch * cols;
    let mut batches = Vec::new();
    for _ in 0..n_batches {
        let n_tok = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
        off += 4;
        batches.push((n_tok, f32s(&b[off..off + 4 * n_tok * rows])));
        off += 4 * n_tok * rows;
    }
    assert_eq!(off, b.len(), "{}: trailing bytes", path.display());
    Case { ty, rows, cols, weights, acts, batches }
}

#[test]
fn matmul_is_bit_identical_to_ggml_cpu() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml_mulmat"));
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("fixture dir").map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 13, "expected a fixture per type, found {}", files.len());
    let mut failures = Vec::new();
    for path in &files {
        let c = read_case(path);
        for (n_tok, want) in &c.batches {
            let mut got = vec![0.0f32; n_tok * c.rows];
            ggml_avx2::matmul(c.ty, &c.weights, c.rows, c.cols, &c.acts[..n_tok * c.cols], &mut got);
            let differ = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            if differ > 0 {
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                failures.push(format!(
                    "{} rows {} batch {n_tok}: {differ}/{} outputs differ, worst {worst:e}",
                    c.ty,
                    c.rows,
                    got.len()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "differences from ggml-cpu:\n{}", failures.join("\n"));
}

/// `matmul_segments` (the batch forward's mat-mul) against the same outputs: one segment of n tokens is ggml's
/// batch of n; and for the types ggml runs through `vec_dot` at every batch size (legacy blocks, Q4_0 when its rows
/// are not repacked), n one-token segments give each token's output of that batch, as llama.cpp computes it for a
/// sequence decoding alone.
#[test]
fn matmul_segments_is_bit_identical_to_ggml_cpu() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ggml_mulmat"));
    let mut files: Vec<_> = std::fs::read_dir(dir).expect("fixture dir").map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut failures = Vec::new();
    let mut singles = 0;
    for path in &files {
        let c = read_case(path);
        let legacy = matches!(c.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q8_0);
        let one_each = legacy && !(c.ty == GgmlType::Q4_0 && c.rows.is_multiple_of(8));
        for (n_tok, want) in &c.batches {
            let mut segs = vec![vec![*n_tok]];
            if one_each {
                segs.push(vec![1; *n_tok]);
                singles += 1;
            }
            for seg in segs {
                let mut got = vec![0.0f32; n_tok * c.rows];
                ggml_avx2::matmul_segments(c.ty, &c.weights, c.rows, c.cols, &c.acts[..n_tok * c.cols], &mut got, &seg);
                let differ = got.iter().zip(want).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
                if differ > 0 {
                    failures.push(format!("{} rows {} segments {seg:?}: {differ}/{} outputs differ", c.ty, c.rows, got.len()));
                }
            }
        }
    }
    assert!(singles >= 5 * 5, "expected the legacy types' batches to be checked one token a segment, got {singles}");
    assert!(failures.is_empty(), "differences from ggml-cpu:\n{}", failures.join("\n"));
}
