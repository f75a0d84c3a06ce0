//! Quantized formats against gguf-py: fixtures made by `scripts/make_quant_fixtures.py` (random blocks of every
//! type and blocks of the real SmolLM2 / Gemma-3 files, with gguf-py's dequantized f32 and quantized bytes).
//! Dequantization must equal gguf-py bit for bit; quantization must give the same bytes.

use std::path::{Path, PathBuf};

use host::gguf::GgmlType;
use host::quant::{dequantize_row, is_supported, matmul, matvec, quantize_row, vec_dot};

struct Case {
    kind: String,
    ty: GgmlType,
    source: String,
    n: usize,
    name: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn manifest() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("manifest.txt"))
        .expect("tests/fixtures/quant/manifest.txt");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "manifest line {l:?}");
            Case {
                kind: f[0].to_string(),
                ty: GgmlType::from_name(f[1]).unwrap_or_else(|| panic!("type {}", f[1])),
                source: f[2].to_string(),
                n: f[3].parse().unwrap(),
                name: f[4].to_string(),
            }
        })
        .collect()
}

fn read(name: &str, ext: &str) -> Vec<u8> {
    let p = dir().join(format!("{name}.{ext}"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name, "f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

/// Index and values of the first element whose f32 bits differ.
fn first_bit_difference(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
}

const ISSUE_TYPES: [&str; 14] = [
    "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K", "Q5_K",
    "Q6_K", "Q8_K",
];

#[test]
fn fixtures_cover_every_type_and_the_real_models() {
    let cases = manifest();
    for t in ISSUE_TYPES {
        assert!(
            cases
                .iter()
                .any(|c| c.kind == "dequant" && c.source == "random" && c.ty.name() == t),
            "no random dequant fixture for {t}"
        );
    }
    // the types of the two real model files
    for (t, src) in [
        ("Q4_1", "smollm2"),
        ("Q8_0", "smollm2"),
        ("Q4_K", "gemma3"),
        ("Q6_K", "gemma3"),
        ("Q5_0", "gemma3"),
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c.kind == "dequant" && c.source == src && c.ty.name() == t),
            "no {src} fixture for {t}"
        );
    }
    for t in ["Q4_0", "Q4_1", "Q8_0", "Q8_K"] {
        assert!(
            cases
                .iter()
                .any(|c| c.kind == "quantize" && c.ty.name() == t),
            "no quantize fixture for {t}"
        );
    }
}

#[test]
fn dequantize_equals_gguf_py_bit_for_bit() {
    let mut n_blocks = 0;
    for c in manifest().iter().filter(|c| c.kind == "dequant") {
        assert!(is_supported(c.ty), "{}", c.ty);
        let q = read(&c.name, "q");
        let want = read_f32(&c.name);
        assert_eq!(want.len(), c.n, "{}", c.name);
        let mut got = vec![f32::NAN; c.n];
        dequantize_row(c.ty, &q, &mut got).unwrap();
        if let Some((i, g, w)) = first_bit_difference(&got, &want) {
            panic!(
                "{}: element {i} (block {}): got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
                c.name,
                i / c.ty.block_size(),
                g.to_bits(),
                w.to_bits()
            );
        }
        n_blocks += c.n / c.ty.block_size();
    }
    assert!(n_blocks > 1000, "only {n_blocks} blocks checked");
}

#[test]
fn dequantize_rows_split_anywhere_on_block_boundaries() {
    // the same bytes dequantized one block at a time give the same bits as in one call
    for c in manifest()
        .iter()
        .filter(|c| c.kind == "dequant" && c.ty.block_size() > 1)
    {
        let q = read(&c.name, "q");
        let want = read_f32(&c.name);
        let (bs, ts) = (c.ty.block_size(), c.ty.type_size());
        for (b, (qb, wb)) in q.chunks_exact(ts).zip(want.chunks_exact(bs)).enumerate() {
            let mut got = vec![0.0f32; bs];
            dequantize_row(c.ty, qb, &mut got).unwrap();
            assert!(
                first_bit_difference(&got, wb).is_none(),
                "{} block {b}",
                c.name
            );
        }
    }
}

#[test]
fn dequantize_rejects_bad_lengths() {
    let mut out = vec![0.0f32; 32];
    // 32 Q4_0 elements are 18 bytes
    let err = dequantize_row(GgmlType::Q4_0, &[0u8; 17], &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("18 bytes") && err.contains("17"), "{err}");
    let err = dequantize_row(GgmlType::Q4_K, &[0u8; 144], &mut out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("block size 256"), "{err}");
    let err = dequantize_row(GgmlType::IQ2_XXS, &[0u8; 66], &mut vec![0.0; 256])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not supported"), "{err}");
}

#[test]
fn quantize_equals_gguf_py_bytes() {
    let mut n = 0;
    for c in manifest().iter().filter(|c| c.kind == "quantize") {
        let x = read_f32(&c.name);
        let want = read(&c.name, "q");
        let mut got = vec![0u8; want.len()];
        quantize_row(c.ty, &x, &mut got).unwrap();
        let ts = c.ty.type_size();
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!("{}: byte {i} (block {}, offset {}): got {:#04x}, gguf-py {:#04x}\n got block {:?}\nwant block {:?}",
                c.name, i / ts, i % ts, got[i], want[i], &got[i / ts * ts..][..ts], &want[i / ts * ts..][..ts]);
        }
        n += 1;
    }
    assert!(n >= 8, "{n} quantize cases");
}

/// Rounding error of an f16-subnormal scale (half a step, 2^-25) times the largest quant (< 2^7).
const SUBNORMAL_SCALE_ERR: f32 = 1.0 / 262_144.0;

/// Worst error of quantize -> dequantize on the fixture inputs, relative to each block's absolute maximum.
#[test]
fn quantize_round_trip_error_is_within_half_a_step() {
    // max |x - x'| / amax: half a quantization step plus the f16 rounding of the scale (relative 2^-11, the
    // +1e-3 terms); a block so small that its scale is an f16 subnormal also gets |q| * 2^-25 <= 2^-18 absolute
    let bounds = [
        (GgmlType::Q8_0, 0.5 / 127.0 + 1e-3),
        (GgmlType::Q8_1, 0.5 / 127.0 + 1e-3),
        (GgmlType::Q8_K, 0.5 / 127.0 + 1e-6),
        (GgmlType::Q4_0, 1.0 / 8.0 + 1e-3), // asymmetric range -8..7: the positive end clips by one step
        (GgmlType::Q5_0, 1.0 / 16.0 + 1e-3),
        (GgmlType::Q4_1, 2.0 * 0.5 / 15.0 + 1e-3), // relative to amax, range (max - min) <= 2 amax
        (GgmlType::Q5_1, 2.0 * 0.5 / 31.0 + 1e-3),
    ];
    let x = read_f32("quantize_Q8_0_real");
    let random = read_f32("quantize_Q8_0_random");
    for (ty, bound) in bounds {
        for data in [&x, &random] {
            let mut q = vec![0u8; ty.row_bytes(data.len() as u64).unwrap() as usize];
            quantize_row(ty, data, &mut q).unwrap();
            let mut back = vec![0.0f32; data.len()];
            dequantize_row(ty, &q, &mut back).unwrap();
            for (b, (xs, ys)) in data
                .chunks(ty.block_size())
                .zip(back.chunks(ty.block_size()))
                .enumerate()
            {
                let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = xs
                    .iter()
                    .zip(ys)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    err <= bound as f32 * amax + SUBNORMAL_SCALE_ERR,
                    "{ty} block {b}: error {err} > {bound} * {amax} + 2^-18"
                );
            }
        }
    }
}

#[test]
fn q8_k_bsums_are_sums_of_sixteen_quants() {
    let x = read_f32("quantize_Q8_K_real");
    let mut q = vec![0u8; GgmlType::Q8_K.row_bytes(x.len() as u64).unwrap() as usize];
    quantize_row(GgmlType::Q8_K, &x, &mut q).unwrap();
    for blk in q.chunks_exact(292) {
        for j in 0..16 {
            let sum: i32 = blk[4 + 16 * j..4 + 16 * (j + 1)]
                .iter()
                .map(|&b| b as i8 as i32)
                .sum();
            let stored = i16::from_le_bytes([blk[260 + 2 * j], blk[261 + 2 * j]]) as i32;
            assert_eq!(sum, stored);
        }
    }
}

#[test]
fn quantize_rejects_bad_lengths() {
    let err = quantize_row(GgmlType::Q8_0, &[0.0; 33], &mut [0u8; 34])
        .unwrap_err()
        .to_string();
    assert!(err.contains("multiple of the block size 32"), "{err}");
    let err = quantize_row(GgmlType::Q4_K, &[0.0; 256], &mut [0u8; 144])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not supported"), "{err}");
}

/// matvec / matmul over the fixture blocks (random and real) arranged as a matrix of 3-block rows, against an f64
/// dot with gguf-py's dequantized values: independent of our own dequantization.
#[test]
fn matvec_and_matmul_match_gguf_py_values() {
    for c in manifest()
        .iter()
        .filter(|c| c.kind == "dequant" && c.ty.block_size() > 1)
    {
        let w = read(&c.name, "q");
        let wf = read_f32(&c.name);
        if wf.iter().any(|v| !v.is_finite() || v.abs() > 1e30) {
            continue; // random Q8_K scales can overflow; no meaningful dot product
        }
        let n_cols = 3 * c.ty.block_size();
        let n_rows = c.n / n_cols;
        assert!(n_rows >= 2, "{}", c.name);
        let n_tok = 3;
        let x: Vec<f32> = (0..n_cols * n_tok)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut y1 = vec![0.0f32; n_rows];
        matvec(c.ty, &w, n_rows, n_cols, &x[..n_cols], &mut y1);
        let mut y3 = vec![0.0f32; n_rows * n_tok];
        matmul(c.ty, &w, n_rows, n_cols, &x, &mut y3);
        for t in 0..n_tok {
            for r in 0..n_rows {
                let pairs = wf[r * n_cols..][..n_cols]
                    .iter()
                    .zip(&x[t * n_cols..][..n_cols]);
                let want: f64 = pairs.clone().map(|(a, b)| *a as f64 * *b as f64).sum();
                let mag: f64 = pairs.map(|(a, b)| (*a as f64 * *b as f64).abs()).sum();
                let got = y3[t * n_rows + r] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * mag,
                    "{} matmul tok {t} row {r}: {got} vs {want}",
                    c.name
                );
                if t == 0 {
                    assert!(
                        (y1[r] as f64 - want).abs() <= 1e-5 * mag,
                        "{} matvec row {r}",
                        c.name
                    );
                    let row = &w[r * w.len() / n_rows..(r + 1) * w.len() / n_rows];
                    assert_eq!(
                        vec_dot(c.ty, row, &x[..n_cols]),
                        y1[r],
                        "{} vec_dot row {r}",
                        c.name
                    );
                }
            }
        }
    }
}
