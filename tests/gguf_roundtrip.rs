//! Writer <-> reader round trips (every value type, nested arrays, v2 and v3, several alignments, tensors of
//! many types), plus the two blind robustness sweeps: a cut at every byte offset of a small valid file, and
//! seeded random byte flips. Neither sweep may panic; every cut must be an error.

use host::config::ModelConfig;
use host::gguf::{tiny_model, Array, GgmlType, GgufFile, GgufWriter, TinySpec, Value};
use host::weights::ModelTensors;

/// One value of every type, arrays of every element type, and nested arrays.
fn all_values() -> Vec<(String, Value)> {
    let arrays = vec![
        Array::U8(vec![0, 1, 255]),
        Array::I8(vec![-128, 0, 127]),
        Array::U16(vec![0, 65535]),
        Array::I16(vec![-32768, 32767]),
        Array::U32(vec![0, u32::MAX]),
        Array::I32(vec![i32::MIN, -1, i32::MAX]),
        Array::F32(vec![0.0, -1.5, f32::MAX, f32::MIN_POSITIVE, f32::INFINITY]),
        Array::Bool(vec![true, false, true]),
        Array::String(vec![b"".to_vec(), "héllo".as_bytes().to_vec(), vec![0xff, 0x00]]),
        Array::U64(vec![0, u64::MAX]),
        Array::I64(vec![i64::MIN, i64::MAX]),
        Array::F64(vec![std::f64::consts::PI, -0.0, f64::NEG_INFINITY]),
        Array::U32(vec![]),
        Array::Array(vec![
            Array::U8(vec![1]),
            Array::String(vec![b"x".to_vec()]),
            Array::Array(vec![Array::F32(vec![2.0])]),
        ]),
    ];
    let mut kvs: Vec<(String, Value)> = vec![
        ("t.u8".into(), Value::U8(200)),
        ("t.i8".into(), Value::I8(-100)),
        ("t.u16".into(), Value::U16(60000)),
        ("t.i16".into(), Value::I16(-30000)),
        ("t.u32".into(), Value::U32(4_000_000_000)),
        ("t.i32".into(), Value::I32(-2_000_000_000)),
        ("t.f32".into(), Value::F32(1e-6)),
        ("t.bool".into(), Value::Bool(true)),
        ("t.string".into(), Value::str("{% for m in messages %}…{% endfor %}")),
        ("t.string_bytes".into(), Value::String(vec![0xc3, 0x28])), // invalid UTF-8 kept as bytes
        ("t.u64".into(), Value::U64(u64::MAX)),
        ("t.i64".into(), Value::I64(i64::MIN)),
        ("t.f64".into(), Value::F64(-1e300)),
    ];
    for (i, a) in arrays.into_iter().enumerate() {
        kvs.push((format!("t.array.{i}"), Value::Array(a)));
    }
    kvs
}

/// Tensors of several types and ranks, with distinct byte patterns.
fn tensors() -> Vec<(String, Vec<u64>, GgmlType)> {
    vec![
        ("f32.vec".into(), vec![5], GgmlType::F32),
        ("f16.mat".into(), vec![3, 7], GgmlType::F16),
        ("bf16.3d".into(), vec![2, 3, 4], GgmlType::BF16),
        ("q4_0.4d".into(), vec![64, 2, 1, 3], GgmlType::Q4_0),
        ("q8_0".into(), vec![32, 3], GgmlType::Q8_0),
        ("q4_k".into(), vec![256, 2], GgmlType::Q4_K),
        ("q6_k".into(), vec![512], GgmlType::Q6_K),
        ("iq2_xxs".into(), vec![256], GgmlType::IQ2_XXS),
        ("i8.odd".into(), vec![13], GgmlType::I8),
        ("empty".into(), vec![4, 0], GgmlType::F32),
        ("scalar".into(), vec![], GgmlType::I32),
    ]
}

fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + seed * 7) as u8).collect()
}

fn build(version: u32, alignment: Option<u32>) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.version(version);
    for (k, v) in all_values() {
        w.add_kv(&k, v);
    }
    if let Some(a) = alignment {
        w.add_kv("general.alignment", Value::U32(a));
    }
    for (i, (name, dims, ty)) in tensors().into_iter().enumerate() {
        let rows: u64 = dims.iter().skip(1).product();
        let n = ty.row_bytes(*dims.first().unwrap_or(&1)).unwrap() * rows;
        w.add_tensor(&name, &dims, ty, pattern(n as usize, i)).unwrap();
    }
    w
}

#[test]
fn everything_written_reads_back() {
    for version in [2, 3] {
        for alignment in [None, Some(8), Some(64), Some(4096)] {
            let w = build(version, alignment);
            let bytes = w.to_bytes().unwrap();
            let f = GgufFile::from_bytes(&bytes, "rt.gguf").unwrap();
            let ctx = format!("v{version} align {alignment:?}");
            assert_eq!(f.version, version, "{ctx}");
            assert_eq!(f.alignment, alignment.map_or(32, u64::from), "{ctx}");
            assert_eq!(f.data_offset % f.alignment, 0, "{ctx}");
            // metadata: same keys, same order, identical values (compared bitwise through the encoding below)
            let mut want = all_values();
            if let Some(a) = alignment {
                want.push(("general.alignment".into(), Value::U32(a)));
            }
            assert_eq!(f.metadata, want, "{ctx}");
            // tensors: name, dims, type, bytes; offsets aligned, contiguous
            for (i, (name, dims, ty)) in tensors().into_iter().enumerate() {
                let t = f.tensor(&name).unwrap();
                assert_eq!((&t.dims, t.ggml_type), (&dims, ty), "{ctx} {name}");
                assert_eq!(t.offset % f.alignment, 0, "{ctx} {name}");
                assert_eq!(f.tensor_data(t), &pattern(t.n_bytes as usize, i)[..], "{ctx} {name}");
                let abs = f.data_offset + t.offset;
                assert_eq!(f.tensor_data(t).as_ptr() as usize - f.bytes().as_ptr() as usize, abs as usize);
            }
            // reading and writing again reproduces the same bytes
            let mut w2 = GgufWriter::new();
            w2.version(f.version);
            for (k, v) in &f.metadata {
                w2.add_kv(k, v.clone());
            }
            for t in &f.tensors {
                w2.add_tensor(&t.name, &t.dims, t.ggml_type, f.tensor_data(t)).unwrap();
            }
            assert_eq!(w2.to_bytes().unwrap(), bytes, "{ctx}");
        }
    }
}

#[test]
fn written_file_and_in_memory_image_agree() {
    let w = build(3, None);
    let dir = std::env::temp_dir().join(format!("gguf_rt_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rt.gguf");
    w.write(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), w.to_bytes().unwrap());
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensors.len(), tensors().len());
    assert_eq!(f.path, path);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn getters_accept_any_fitting_integer_and_name_the_key() {
    let f = GgufFile::from_bytes(&build(3, None).to_bytes().unwrap(), "g.gguf").unwrap();
    assert_eq!(f.get_u32("t.u8").unwrap(), 200);
    assert_eq!(f.get_u64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_i64("t.i8").unwrap(), -100);
    assert_eq!(f.get_usize("t.u16").unwrap(), 60000);
    assert_eq!(
        f.get_f32("t.f64").unwrap_err().to_string(),
        "gguf: g.gguf: key 't.f64' value -1e300 does not fit in f32"
    );
    assert_eq!(
        f.get_u32("t.u64").unwrap_err().to_string(),
        "gguf: g.gguf: key 't.u64' value 18446744073709551615 does not fit in u32"
    );
    assert_eq!(f.get_u64("t.i8").unwrap_err().to_string(), "gguf: g.gguf: key 't.i8' value -100 does not fit in u64");
    assert_eq!(f.get_bool("t.u8").unwrap_err().to_string(), "gguf: g.gguf: key 't.u8' has type u8, expected bool");
    assert!(f.get_bool("t.bool").unwrap());
    assert_eq!(f.get_str("t.string").unwrap(), "{% for m in messages %}…{% endfor %}");
    assert_eq!(f.get_array("t.array.6").unwrap().as_f32().unwrap()[1], -1.5);
}

/// A small but complete model: every cut of it must fail to open, without panicking.
fn small_model() -> Vec<u8> {
    let spec = TinySpec {
        n_layers: 1,
        dim: 32,
        hidden_dim: 32,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
        vocab_size: 8,
        ..TinySpec::default()
    };
    let mut w = tiny_model(&spec).unwrap();
    w.add_kv("t.nested", Value::Array(Array::Array(vec![Array::Bool(vec![true]), Array::I16(vec![-1])])));
    w.to_bytes().unwrap()
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_model();
    let f = GgufFile::from_bytes(&full, "full.gguf").unwrap();
    let c = ModelConfig::from_gguf(&f).unwrap();
    ModelTensors::from_gguf(&f, &c).unwrap();
    for cut in 0..full.len() {
        if let Ok(f) = GgufFile::from_bytes(&full[..cut], "cut.gguf") {
            panic!("cut at {cut} of {} opened: {} tensors", full.len(), f.tensors.len());
        }
    }
    println!("{} truncations of a {}-byte model, all rejected", full.len(), full.len());
}

/// xorshift64*: the flip positions and values are reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let full = small_model();
    // flips land in the header, metadata and tensor infos most of the time: that is where parsing happens
    let header_len = GgufFile::from_bytes(&full, "f").unwrap().data_offset as usize;
    let mut rng = Rng(0x5EED_1234);
    let (mut opened, mut loaded) = (0, 0);
    let n = 20_000;
    for i in 0..n {
        let mut b = full.clone();
        let flips = 1 + (rng.next() % 3) as usize;
        for _ in 0..flips {
            let range = if i % 4 == 0 { b.len() } else { header_len };
            let pos = (rng.next() % range as u64) as usize;
            b[pos] = rng.next() as u8;
        }
        if let Ok(f) = GgufFile::from_bytes(&b, "flip.gguf") {
            opened += 1;
            if let Ok(c) = ModelConfig::from_gguf(&f) {
                if ModelTensors::from_gguf(&f, &c).is_ok() {
                    loaded += 1;
                }
            }
        }
    }
    println!("{n} flipped files (seed 0x5EED1234): {opened} opened, {loaded} loaded as a model, no panic");
    assert!(opened > 0 && opened < n, "flips should sometimes break and sometimes spare the parse");
}
