//! The hostile-file corpus of ../shared/docs/GGUF_SECURITY.md section 2: one or more small files per class
//! (A01..G48), each built here with the writer or the byte encoder. Every file goes through the whole load path
//! (open -> config -> tensors) and must fail at the expected stage with a message naming the field, the value
//! and the limit, within a time bound and without any single allocation above 64 MiB. Valid edge cases (empty
//! container, zero-size tensor, nested arrays, a million KV pairs) must load.
//!
//! Set GGUF_CORPUS_OUT=dir to also write every file there (fuzzing seeds).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use host::config::ModelConfig;
use host::gguf::{tiny_model, Array, Encoder, GgmlType, GgufFile, GgufWriter, TinySpec, Value};
use host::weights::ModelTensors;

// ----------------------------------------------------------------------------
// Allocation probe: the largest single allocation made by this thread since the last reset
// ----------------------------------------------------------------------------

struct Probe;

thread_local! {
    static MAX_ALLOC: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = MAX_ALLOC.try_with(|m| m.set(m.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = MAX_ALLOC.try_with(|m| m.set(m.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

const MAX_ALLOC_BYTES: usize = 64 << 20;
const MAX_TIME: Duration = Duration::from_secs(2);

// ----------------------------------------------------------------------------
// The load path and its outcome
// ----------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    Open,
    Config,
    Weights,
    Loads,
}

/// Runs open -> config -> tensors; returns the stage that failed (or `Loads`) and the message.
fn load(bytes: &[u8]) -> (Stage, String) {
    let f = match GgufFile::from_bytes(bytes, "case.gguf") {
        Ok(f) => f,
        Err(e) => return (Stage::Open, e.to_string()),
    };
    let c = match ModelConfig::from_gguf(&f) {
        Ok(c) => c,
        Err(e) => return (Stage::Config, e.to_string()),
    };
    match ModelTensors::from_gguf(&f, &c) {
        Ok(_) => (Stage::Loads, String::new()),
        Err(e) => (Stage::Weights, e.to_string()),
    }
}

struct Case {
    id: String,
    bytes: Vec<u8>,
    stage: Stage,
    /// Substrings the message must contain.
    want: Vec<String>,
}

fn case(id: &str, bytes: Vec<u8>, stage: Stage, want: &[&str]) -> Case {
    Case { id: id.into(), bytes, stage, want: want.iter().map(|s| s.to_string()).collect() }
}

// ----------------------------------------------------------------------------
// Builders: a raw container (one KV, two F32 tensors) and the tiny model
// ----------------------------------------------------------------------------

#[derive(Clone)]
struct RawTensor {
    name: Vec<u8>,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

/// A container laid out field by field, so any field can be wrong.
#[derive(Clone)]
struct Raw {
    version: u32,
    n_tensors: Option<u64>, // None: the real count
    n_kv: Option<u64>,
    kvs: Vec<Vec<u8>>, // encoded KV pairs
    tensors: Vec<RawTensor>,
    align: u64,
    data_len: Option<usize>, // None: through the end of the last tensor
}

fn kv(key: &str, v: &Value) -> Vec<u8> {
    Encoder::new().kv(key.as_bytes(), v).buf.clone()
}

fn f32_tensor(name: &str, n: u64, offset: u64) -> RawTensor {
    RawTensor { name: name.into(), dims: vec![n], type_id: 0, offset }
}

impl Raw {
    fn base() -> Raw {
        Raw {
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![kv("general.architecture", &Value::str("llama"))],
            tensors: vec![f32_tensor("a", 8, 0), f32_tensor("b", 8, 32)],
            align: 32,
            data_len: None,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.header(
            self.version,
            self.n_tensors.unwrap_or(self.tensors.len() as u64),
            self.n_kv.unwrap_or(self.kvs.len() as u64),
        );
        for k in &self.kvs {
            e.bytes(k);
        }
        for t in &self.tensors {
            e.tensor_info(&t.name, &t.dims, t.type_id, t.offset);
        }
        e.pad_to(self.align);
        let end = self
            .tensors
            .iter()
            .filter_map(|t| {
                let ty = GgmlType::from_id(t.type_id)?;
                let n: u64 = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
                let bytes = n.checked_mul(ty.type_size() as u64)? / ty.block_size() as u64;
                t.offset.checked_add(bytes).filter(|&b| b < 1 << 20)
            })
            .max()
            .unwrap_or(0);
        let n = self.data_len.unwrap_or(end as usize);
        e.buf.extend((0..n).map(|i| i as u8));
        e.buf
    }

    fn with(mut self, f: impl FnOnce(&mut Raw)) -> Vec<u8> {
        f(&mut self);
        self.bytes()
    }
}

fn tiny(edit: impl FnOnce(&mut GgufWriter)) -> Vec<u8> {
    let mut w = tiny_model(&TinySpec::default()).unwrap();
    edit(&mut w);
    w.to_bytes().unwrap()
}

fn strings(v: &[&str]) -> Value {
    Value::Array(Array::String(v.iter().map(|s| s.as_bytes().to_vec()).collect()))
}

/// Header + a single KV pair with hand-encoded value bytes (`type_id`, then `payload`).
fn one_kv(key: &[u8], type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut e = Encoder::new();
    e.header(3, 0, 1).string(key).u32(type_id).bytes(payload);
    e.buf
}

fn le(parts: &[u64]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.to_le_bytes()).collect()
}

// ----------------------------------------------------------------------------
// The corpus
// ----------------------------------------------------------------------------

fn corpus() -> Vec<Case> {
    use Stage::*;
    let hdr = |v: u32, t: u64, k: u64| Encoder::new().header(v, t, k).buf.clone();
    let mut c = vec![
        // --- A. container and header ---
        case("A01-empty", vec![], Open, &["file is empty"]),
        case("A01-magic-only", b"GGUF".to_vec(), Open, &["4 bytes, shorter than the 24-byte gguf header"]),
        case("A01-magic-version", b"GGUF\x03\0\0\0".to_vec(), Open, &["8 bytes, shorter than the 24-byte"]),
        case("A01-header-empty-container", hdr(3, 0, 0), Config, &["missing key 'general.architecture'"]),
        case(
            "A02-magic-fugg",
            [b"FUGG".to_vec(), hdr(3, 0, 0)[4..].to_vec()].concat(),
            Open,
            &["bad magic 'FUGG'", "byte-swapped"],
        ),
        case("A02-magic-ggjt", b"tjgg\x03\0\0\0".repeat(4), Open, &["bad magic 'tjgg'", "legacy"]),
        case("A02-magic-ggml", b"lmgg".repeat(8), Open, &["bad magic 'lmgg'", "legacy"]),
        case("A02-magic-binary", vec![0, 0xff, 7, b'G'], Open, &["bad magic '???G' (00 ff 07 47)"]),
        case("A03-version-0", hdr(0, 0, 0), Open, &["version 0 at offset 4 is invalid"]),
        case("A03-version-1", hdr(1, 0, 0), Open, &["version 1 is no longer supported"]),
        case("A03-version-4", hdr(4, 0, 0), Open, &["version 4 at offset 4 is newer than supported (max 3)"]),
        case("A03-version-max", hdr(u32::MAX, 0, 0), Open, &["version 4294967295", "newer than supported"]),
        case("A03-version-byteswapped", hdr(0x0300_0000, 0, 0), Open, &["0x03000000", "byte-swapped"]),
        case(
            "A04-n-tensors-u64max",
            hdr(3, u64::MAX, 0),
            Open,
            &["tensor_count 18446744073709551615 at offset 8 is negative"],
        ),
        case(
            "A04-n-tensors-2e40",
            hdr(3, 1 << 40, 0),
            Open,
            &["tensor_count 1099511627776 at offset 8 needs at least 27487790694400 bytes", "only 0 remain"],
        ),
        case("A05-n-kv-u64max", hdr(3, 0, u64::MAX), Open, &["kv_count 18446744073709551615 at offset 16 is negative"]),
        case(
            "A05-n-kv-2e40",
            [hdr(3, 0, 1 << 40), vec![0; 1000]].concat(),
            Open,
            &["kv_count 1099511627776 at offset 16 needs at least", "only 1000 remain"],
        ),
        case(
            "A05-n-kv-off-by-one",
            Raw::base().with(|r| {
                r.n_kv = Some(2);
                r.tensors.clear();
            }),
            Open,
            &["kv pair 1"],
        ),
        // --- B. strings and keys ---
        case(
            "B06-key-len-u64max",
            [hdr(3, 0, 1), le(&[u64::MAX]), vec![0; 16]].concat(),
            Open,
            &["kv pair 0", "string length 18446744073709551615 at offset 24 exceeds the limit of 65535"],
        ),
        case(
            "B06-key-len-past-eof",
            [hdr(3, 0, 1), le(&[1000]), b"abcdefgh".to_vec()].concat(),
            Open,
            &["string length 1000 at offset 24 exceeds remaining file size 8"],
        ),
        case(
            "B07-string-900mb",
            one_kv(b"general.name", 8, &[le(&[900 << 20]), vec![b'x'; 1000]].concat()),
            Open,
            &["key 'general.name'", "string length 943718400", "exceeds the limit of 67108864"],
        ),
        case(
            "B07-string-60mb",
            one_kv(b"general.name", 8, &[le(&[60 << 20]), vec![b'x'; 1000]].concat()),
            Open,
            &["string length 62914560", "exceeds remaining file size 1000"],
        ),
        case("B08-empty-key", one_kv(b"", 4, &[1, 0, 0, 0]), Open, &["kv pair 0 at offset 24: empty key"]),
        case(
            "B09-duplicate-key",
            Raw::base().with(|r| r.kvs.push(kv("general.architecture", &Value::str("qwen2")))),
            Open,
            &["duplicate key 'general.architecture'"],
        ),
        case(
            "B10-non-ascii-key",
            one_kv("général.x".as_bytes(), 4, &[1, 0, 0, 0]),
            Open,
            &["byte 0xc3 at position 1", "printable ascii"],
        ),
        case("B10-key-with-space", one_kv(b"general name", 4, &[1, 0, 0, 0]), Open, &["byte 0x20 at position 7"]),
        case("B10-key-with-nul", one_kv(b"general.name\0x", 4, &[1, 0, 0, 0]), Open, &["byte 0x00 at position 12"]),
        case(
            "B10-key-too-long",
            one_kv(&[b'k'; 65536], 4, &[1, 0, 0, 0]),
            Open,
            &["string length 65536", "exceeds the limit of 65535"],
        ),
        case(
            "B10-arch-not-utf8",
            Raw::base().with(|r| r.kvs[0] = kv("general.architecture", &Value::String(vec![0xff, 0xfe]))),
            Config,
            &["key 'general.architecture' is not valid utf-8"],
        ),
        case(
            "B11-value-type-13",
            one_kv(b"k", 13, &[0; 8]),
            Open,
            &["key 'k': value type 13 at offset 33 is invalid (valid: 0..13)"],
        ),
        case("B11-value-type-i32max", one_kv(b"k", 0x7FFF_FFFF, &[0; 8]), Open, &["value type 2147483647"]),
        case("B11-value-type-minus-1", one_kv(b"k", u32::MAX, &[0; 8]), Open, &["value type 4294967295"]),
        case(
            "B11-array-elem-type-13",
            one_kv(b"k", 9, &[13u32.to_le_bytes().to_vec(), le(&[1, 0])].concat()),
            Open,
            &["array element type 13 at offset 37 is invalid"],
        ),
        case("B12-bool-2", one_kv(b"k", 7, &[2]), Open, &["bool value 2 at offset 37 is not 0 or 1"]),
        case(
            "B12-bool-array-255",
            one_kv(b"k", 9, &[7u32.to_le_bytes().to_vec(), le(&[3]), vec![1, 0, 255]].concat()),
            Open,
            &["bool array element 2", "bool value 255 at offset 51"],
        ),
        // --- C. arrays ---
        case(
            "C13-u8-array-2e62",
            one_kv(b"k", 9, &[0u32.to_le_bytes().to_vec(), le(&[1 << 62])].concat()),
            Open,
            &["array of u8 at offset 37 has 4611686018427387904 elements, the limit is 1073741824"],
        ),
        case(
            "C13-u64-array-u64max",
            one_kv(b"k", 9, &[10u32.to_le_bytes().to_vec(), le(&[u64::MAX])].concat()),
            Open,
            &["has 18446744073709551615 elements"],
        ),
        case(
            "C13-u64-array-mul-wraps",
            one_kv(b"k", 9, &[10u32.to_le_bytes().to_vec(), le(&[1 << 29]), vec![0; 64]].concat()),
            Open,
            &["array of 536870912 u64 elements at offset 37 needs at least 4294967296 bytes, only 64 remain"],
        ),
        case(
            "C13-bool-array-2e30",
            one_kv(b"k", 9, &[7u32.to_le_bytes().to_vec(), le(&[1 << 30]), vec![1; 8]].concat()),
            Open,
            &["array of 1073741824 bool elements", "needs at least 1073741824 bytes, only 8 remain"],
        ),
        case(
            "C14-string-array-2e40",
            one_kv(b"k", 9, &[8u32.to_le_bytes().to_vec(), le(&[1 << 40])].concat()),
            Open,
            &["array of string at offset 37 has 1099511627776 elements, the limit is 16777216"],
        ),
        case(
            "C14-string-array-1m",
            one_kv(b"k", 9, &[8u32.to_le_bytes().to_vec(), le(&[1 << 20]), vec![0; 100]].concat()),
            Open,
            &["needs at least 8388608 bytes, only 100 remain"],
        ),
        case(
            "C14-string-element-huge",
            one_kv(b"k", 9, &[8u32.to_le_bytes().to_vec(), le(&[2, 0, u64::MAX - 1])].concat()),
            Open,
            &["string array element 1", "string length 18446744073709551614"],
        ),
        case(
            "C15-nested-100000",
            one_kv(b"k", 9, &[9u32.to_le_bytes().to_vec(), le(&[1])].concat().repeat(100_000)),
            Open,
            &["nested 5 deep, the limit is 4"],
        ),
        case(
            "C16-alignment-i32",
            Raw::base().with(|r| r.kvs.push(kv("general.alignment", &Value::I32(32)))),
            Open,
            &["general.alignment has type i32, expected u32"],
        ),
        case(
            "C16-alignment-array",
            Raw::base().with(|r| r.kvs.push(kv("general.alignment", &Value::Array(Array::U32(vec![32]))))),
            Open,
            &["general.alignment has type array, expected u32"],
        ),
        case(
            "C16-scores-u8",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.scores", Value::Array(Array::U8(vec![0; 64])));
            }),
            Open,
            &["key 'tokenizer.ggml.scores' has type array of u8, expected array of f32"],
        ),
        case(
            "C16-token-type-u8",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.token_type", Value::Array(Array::U8(vec![1; 64])));
            }),
            Open,
            &["'tokenizer.ggml.token_type' has type array of u8, expected array of i32"],
        ),
        case(
            "C16-tokens-i32",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.tokens", Value::Array(Array::I32(vec![1; 64])));
            }),
            Open,
            &["'tokenizer.ggml.tokens' has type array of i32, expected array of string"],
        ),
        case(
            "C16-bos-id-string",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.bos_token_id", Value::str("1"));
            }),
            Open,
            &["'tokenizer.ggml.bos_token_id' has type string, expected an integer"],
        ),
        case(
            "C16-add-bos-u8",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.add_bos_token", Value::U8(1));
            }),
            Open,
            &["'tokenizer.ggml.add_bos_token' has type u8, expected bool"],
        ),
        case(
            "C16-arch-u32",
            tiny(|w| {
                w.add_kv("general.architecture", Value::U32(1));
            }),
            Open,
            &["'general.architecture' has type u32, expected string"],
        ),
        case(
            "C16-block-count-f32",
            tiny(|w| {
                w.add_kv("llama.block_count", Value::F32(2.0));
            }),
            Config,
            &["key 'llama.block_count' has type f32, expected an integer"],
        ),
    ];

    // --- D. alignment ---
    for (class, a, want) in [
        ("D17", 0u32, "general.alignment 0 must be a power of two in 8..=1048576"),
        ("D18", 13, "alignment 13"),
        ("D18", 24, "alignment 24"),
        ("D18", 1, "alignment 1 must"), // a power of two, but the spec requires a multiple of 8
        ("D19", 1 << 31, "alignment 2147483648"),
        ("D19", 1 << 30, "alignment 1073741824"),
    ] {
        let bytes = Raw::base().with(|r| r.kvs.push(kv("general.alignment", &Value::U32(a))));
        c.push(case(&format!("{class}-alignment-{a}"), bytes, Stage::Open, &[want]));
    }
    c.push(case(
        "D20-offset-unaligned",
        Raw::base().with(|r| r.tensors[1].offset = 36),
        Stage::Open,
        &["tensor 'b': offset 36 at offset", "not aligned to 32"],
    ));
    c.push(case(
        "D20-offsets-padded-to-1",
        Raw::base().with(|r| {
            r.tensors[0].dims = vec![3];
            r.tensors[1].offset = 12;
        }),
        Stage::Open,
        &["tensor 'b': offset 12", "not aligned to 32"],
    ));
    c.push(case(
        "D20-inconsistent-alignment-64",
        Raw::base().with(|r| {
            r.kvs.push(kv("general.alignment", &Value::U32(64)));
            r.align = 64;
        }),
        Stage::Open,
        &["tensor 'b': offset 32", "not aligned to 64"],
    ));

    // --- E. tensor infos ---
    let t = |f: fn(&mut RawTensor)| Raw::base().with(|r| f(&mut r.tensors[1]));
    c.extend([
        case(
            "E21-name-64-bytes",
            t(|t| t.name = vec![b'n'; 64]),
            Stage::Open,
            &["tensor info 1", "string length 64", "exceeds the limit of 63"],
        ),
        case("E21-name-empty", t(|t| t.name = vec![]), Stage::Open, &["tensor info 1 at offset", "empty tensor name"]),
        case("E21-name-nul", t(|t| t.name = b"a\0b".to_vec()), Stage::Open, &["control byte 0x00 at position 1"]),
        case(
            "E21-name-not-utf8",
            t(|t| t.name = vec![b'a', 0xff]),
            Stage::Open,
            &["tensor name is not valid utf-8 (at byte 1)"],
        ),
        case("E22-duplicate-name", t(|t| t.name = b"a".to_vec()), Stage::Open, &["duplicate tensor name 'a'"]),
        case(
            "E23-n-dims-5",
            t(|t| t.dims = vec![8, 1, 1, 1, 1]),
            Stage::Open,
            &["tensor 'b': n_dims 5 at offset", "exceeds the limit of 4"],
        ),
        case("E23-n-dims-9", t(|t| t.dims = vec![1; 9]), Stage::Open, &["n_dims 9"]),
        case(
            "E24-negative-dim",
            t(|t| t.dims = vec![8, u64::MAX]),
            Stage::Open,
            &["tensor 'b': dimension 1 = 18446744073709551615", "negative as int64"],
        ),
        case(
            "E26-ne-4xint32max-squared",
            t(|t| t.dims = vec![4 * i32::MAX as u64, 4 * i32::MAX as u64]),
            Stage::Open,
            &["element count of dims [8589934588, 8589934588] overflows int64"],
        ),
        case("E26-two-dims-2e40", t(|t| t.dims = vec![1 << 40, 1 << 40]), Stage::Open, &["overflows int64"]),
        case(
            "E27-nbytes-i64-type",
            t(|t| {
                t.type_id = 27;
                t.dims = vec![1 << 61, 1];
            }),
            Stage::Open,
            &["byte size of dims [2305843009213693952, 1] as I64 overflows int64"],
        ),
        case("E28-type-40", t(|t| t.type_id = 40), Stage::Open, &["tensor 'b': ggml type 40 at offset", "unknown"]),
        case("E28-type-i32max", t(|t| t.type_id = 0x7FFF_FFFF), Stage::Open, &["ggml type 2147483647"]),
        case("E28-type-minus-1", t(|t| t.type_id = u32::MAX), Stage::Open, &["ggml type 4294967295"]),
        case(
            "E29-q4_0-row-33",
            t(|t| {
                t.type_id = 2;
                t.dims = vec![33, 32];
            }),
            Stage::Open,
            &["row length 33 (dims[0]) is not a multiple of the Q4_0 block size 32"],
        ),
        case(
            "E29-q4_k-row-4128",
            t(|t| {
                t.type_id = 12;
                t.dims = vec![4096 + 32];
            }),
            Stage::Open,
            &["row length 4128", "Q4_K block size 256"],
        ),
    ]);
    for id in [4u32, 5, 31, 32, 33, 36, 37, 38] {
        c.push(case(
            &format!("E28-removed-type-{id}"),
            Raw::base().with(|r| r.tensors[1].type_id = id),
            Stage::Open,
            &[&format!("ggml type {id} at offset"), "removed type id"],
        ));
    }
    for ty in [GgmlType::Q8_1, GgmlType::IQ2_XXS, GgmlType::TQ1_0, GgmlType::MXFP4, GgmlType::F64, GgmlType::I8] {
        let w = |spec: &TinySpec| tiny_model(spec).unwrap().to_bytes().unwrap();
        let bytes = w(&TinySpec { weight_type: ty, dim: 256, hidden_dim: 256, head_dim: 64, ..TinySpec::default() });
        let want = format!("unsupported tensor type {ty}");
        c.push(case(&format!("E30-unsupported-{ty}"), bytes, Stage::Weights, &[&want]));
    }

    // --- F. offsets and the data section ---
    c.extend([
        case(
            "F31-offset-u64max",
            t(|t| t.offset = u64::MAX),
            Stage::Open,
            &["tensor 'b': offset 18446744073709551615", "not aligned"],
        ),
        case(
            "F31-offset-u64max-aligned",
            t(|t| t.offset = u64::MAX - 31),
            Stage::Open,
            &["offset 18446744073709551584", "expected 32"],
        ),
        case("F31-offset-past-eof", t(|t| t.offset = 1 << 40), Stage::Open, &["offset 1099511627776", "expected 32"]),
        case(
            "F32-overlap-shared-offset",
            t(|t| t.offset = 0),
            Stage::Open,
            &["tensor 'b': offset 0", "expected 32", "contiguous"],
        ),
        case("F32-gap", t(|t| t.offset = 64), Stage::Open, &["tensor 'b': offset 64", "expected 32"]),
        case(
            "F32-out-of-order",
            Raw::base().with(|r| {
                r.tensors[0].offset = 32;
                r.tensors[1].offset = 0;
            }),
            Stage::Open,
            &["tensor 'a': offset 32", "expected 0"],
        ),
        case(
            "F33-mem-size-overflow",
            Raw::base().with(|r| {
                r.tensors = vec![
                    RawTensor { name: b"a".to_vec(), dims: vec![0x7FFF_FFFF_FFFF_FFC0], type_id: 24, offset: 0 },
                    RawTensor {
                        name: b"b".to_vec(),
                        dims: vec![0x7FFF_FFFF_FFFF_FFC0],
                        type_id: 24,
                        offset: 0x7FFF_FFFF_FFFF_FFC0,
                    },
                ];
                r.data_len = Some(32);
            }),
            Stage::Open,
            &["tensor 'a' data", "is not within the", "file"],
        ),
        case(
            "F34-padding-wrap",
            t(|t| t.dims = vec![4, (1 << 30) - 1, (1 << 30) + 1, 1]),
            Stage::Open,
            &["byte size of dims [4, 1073741823, 1073741825, 1] as F32 overflows int64"],
        ),
        case(
            "F35-data-one-byte-short",
            Raw::base().with(|r| r.data_len = Some(63)),
            Stage::Open,
            &[
                "tensor 'b' data",
                "at file offsets 192..224 (data section 160 + offset 32) is not within the 223-byte file",
                "corrupted or incomplete",
            ],
        ),
        case(
            "F35-no-data-section",
            Raw::base().with(|r| {
                r.data_len = Some(0);
            }),
            Stage::Open,
            &["tensor 'a' data"],
        ),
    ]);

    // --- G. model semantics ---
    c.extend([
        case(
            "G39-arch-missing",
            tiny(|w| {
                w.remove_kv("general.architecture");
            }),
            Stage::Config,
            &["missing key 'general.architecture'"],
        ),
        case(
            "G39-arch-unknown",
            tiny(|w| {
                w.add_kv("general.architecture", Value::str("gpt2"));
            }),
            Stage::Config,
            &["unsupported architecture 'gpt2' (supported: llama, qwen2, qwen3, gemma3, phi3, mistral3)"],
        ),
        case(
            "G39-arch-with-dot",
            tiny(|w| {
                w.add_kv("general.architecture", Value::str("llama.x"));
            }),
            Stage::Config,
            &["unsupported architecture 'llama.x'"],
        ),
        case(
            "G39-arch-very-long",
            tiny(|w| {
                w.add_kv("general.architecture", Value::str(&"a".repeat(100_000)));
            }),
            Stage::Config,
            &["unsupported architecture 'aaaa"],
        ),
        case(
            "G40-missing-keys",
            tiny(|w| {
                w.remove_kv("llama.block_count").remove_kv("llama.context_length");
            }),
            Stage::Config,
            &["missing required keys: llama.block_count, llama.context_length"],
        ),
        case(
            "G40-head-count-0",
            tiny(|w| {
                w.add_kv("llama.attention.head_count", Value::U32(0));
            }),
            Stage::Config,
            &["llama.attention.head_count = 0 is out of range 1..=64"],
        ),
        case(
            "G40-kv-heads-not-dividing",
            tiny(|w| {
                w.add_kv("llama.attention.head_count_kv", Value::U32(3));
            }),
            Stage::Config,
            &["llama.attention.head_count = 4 is not a multiple of llama.attention.head_count_kv = 3"],
        ),
        case(
            "G40-dim-not-multiple-of-heads",
            tiny(|w| {
                w.remove_kv("llama.attention.key_length")
                    .add_kv("llama.attention.head_count", Value::U32(3))
                    .add_kv("llama.attention.head_count_kv", Value::U32(1));
            }),
            Stage::Config,
            &["llama.embedding_length = 64 is not a multiple of llama.attention.head_count = 3"],
        ),
        case(
            "G40-rope-dim-gt-head-dim",
            tiny(|w| {
                w.add_kv("llama.rope.dimension_count", Value::U32(32));
            }),
            Stage::Config,
            &["llama.rope.dimension_count = 32 is out of range 2..=16"],
        ),
        case(
            "G40-block-count-2e31",
            tiny(|w| {
                w.add_kv("llama.block_count", Value::U32(1 << 31));
            }),
            Stage::Config,
            &["llama.block_count = 2147483648 is out of range 1..=1024"],
        ),
        case(
            "G40-context-2e32",
            tiny(|w| {
                w.add_kv("llama.context_length", Value::U64(1 << 32));
            }),
            Stage::Config,
            &["llama.context_length = 4294967296 is out of range 1..=16777216"],
        ),
        case(
            "G40-eps-nan",
            tiny(|w| {
                w.add_kv("llama.attention.layer_norm_rms_epsilon", Value::F32(f32::NAN));
            }),
            Stage::Config,
            &["layer_norm_rms_epsilon = NaN must be finite and > 0"],
        ),
        case(
            "G40-eps-zero",
            tiny(|w| {
                w.add_kv("llama.attention.layer_norm_rms_epsilon", Value::F32(0.0));
            }),
            Stage::Config,
            &["layer_norm_rms_epsilon = 0 must be finite and > 0"],
        ),
        case(
            "G40-expert-count",
            tiny(|w| {
                w.add_kv("llama.expert_count", Value::U32(8)).add_kv("llama.expert_used_count", Value::U32(9));
            }),
            Stage::Config,
            &["llama.expert_count = 8: mixture-of-experts models are not supported"],
        ),
        case(
            "G40-expert-used-without-experts",
            tiny(|w| {
                w.add_kv("llama.expert_count", Value::U32(0)).add_kv("llama.expert_used_count", Value::U32(2));
            }),
            Stage::Config,
            &["llama.expert_used_count = 2: mixture-of-experts models are not supported"],
        ),
        case(
            "G41-rope-freqs-wrong-length",
            tiny(|w| {
                w.add_tensor("rope_freqs.weight", &[7], GgmlType::F32, vec![0u8; 28]).unwrap();
            }),
            Stage::Weights,
            &["tensor 'rope_freqs.weight': wrong shape: expected [8], got [7]"],
        ),
        case(
            "G41-rope-freqs-f16",
            tiny(|w| {
                w.add_tensor("rope_freqs.weight", &[8], GgmlType::F16, vec![0u8; 16]).unwrap();
            }),
            Stage::Weights,
            &["tensor 'rope_freqs.weight': type F16, expected F32"],
        ),
        case(
            "G41-tensor-missing",
            tiny(|w| {
                w.remove_tensor("blk.1.ffn_up.weight");
            }),
            Stage::Weights,
            &["tensor 'blk.1.ffn_up.weight': required tensor is missing"],
        ),
        case(
            "G41-extra-tensor",
            tiny(|w| {
                w.add_tensor("blk.2.attn_norm.weight", &[64], GgmlType::F32, vec![0u8; 256]).unwrap();
            }),
            Stage::Weights,
            &["tensor 'blk.2.attn_norm.weight': unexpected tensor for llama with 2 layers"],
        ),
        case(
            "G41-wrong-shape",
            tiny(|w| {
                w.remove_tensor("blk.0.ffn_gate.weight")
                    .add_tensor("blk.0.ffn_gate.weight", &[64, 64], GgmlType::F32, vec![0u8; 64 * 64 * 4])
                    .unwrap();
            }),
            Stage::Weights,
            &["tensor 'blk.0.ffn_gate.weight': wrong shape: expected [64, 128], got [64, 64]"],
        ),
        case(
            "G41-f64-norm",
            tiny(|w| {
                w.remove_tensor("output_norm.weight")
                    .add_tensor("output_norm.weight", &[64], GgmlType::F64, vec![0u8; 512])
                    .unwrap();
            }),
            Stage::Weights,
            &["tensor 'output_norm.weight': unsupported tensor type F64"],
        ),
        case(
            "E25-zero-dim-tensor",
            tiny(|w| {
                w.remove_tensor("output.weight").add_tensor("output.weight", &[64, 0], GgmlType::F32, vec![]).unwrap();
            }),
            Stage::Weights,
            &["tensor 'output.weight': wrong shape: expected [64, 64], got [64, 0]"],
        ),
        case(
            "G42-vocab-size-vs-tokens",
            tiny(|w| {
                w.add_kv("llama.vocab_size", Value::U32(65));
            }),
            Stage::Config,
            &["llama.vocab_size = 65 but tokenizer.ggml.tokens has 64 entries"],
        ),
        case(
            "G42-embd-rows-vs-vocab",
            tiny(|w| {
                w.remove_tensor("token_embd.weight")
                    .add_tensor("token_embd.weight", &[64, 63], GgmlType::F32, vec![0u8; 64 * 63 * 4])
                    .unwrap();
            }),
            Stage::Weights,
            &["tensor 'token_embd.weight': wrong shape: expected [64, 64], got [64, 63]"],
        ),
        case(
            "G43-scores-short",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.scores", Value::Array(Array::F32(vec![0.0; 63])));
            }),
            Stage::Open,
            &["tokenizer.ggml.scores has 63 entries, tokenizer.ggml.tokens has 64"],
        ),
        case(
            "G43-token-type-long",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![1; 65])));
            }),
            Stage::Open,
            &["tokenizer.ggml.token_type has 65 entries"],
        ),
        case(
            "G43-token-type-value",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(vec![-1; 64])));
            }),
            Stage::Open,
            &["tokenizer.ggml.token_type[0] = -1, expected 0..=6"],
        ),
        case(
            "G44-eos-eq-vocab",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.eos_token_id", Value::U32(64));
            }),
            Stage::Open,
            &["tokenizer.ggml.eos_token_id = 64 is out of range for a vocabulary of 64 tokens"],
        ),
        case(
            "G44-bos-u32max",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.bos_token_id", Value::U32(u32::MAX));
            }),
            Stage::Open,
            &["tokenizer.ggml.bos_token_id = 4294967295 is out of range"],
        ),
        case(
            "G44-pad-negative",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.padding_token_id", Value::I32(-1));
            }),
            Stage::Open,
            &["tokenizer.ggml.padding_token_id = -1 is out of range"],
        ),
        case(
            "G45-merge-no-space",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&["t t3", "t3t4"]));
            }),
            Stage::Open,
            &["tokenizer.ggml.merges[1] = \"t3t4\" is not two tokens separated by a space"],
        ),
        case(
            "G45-merge-leading-space-only",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&[" ab"]));
            }),
            Stage::Open,
            &["merges[0] = \" ab\""],
        ),
        case(
            "G45-merge-trailing-space",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&["ab "]));
            }),
            Stage::Open,
            &["merges[0] = \"ab \""],
        ),
        case(
            "G46-token-text-2gib",
            {
                let mut b = tiny(|_| {});
                let pos = b.windows(5).position(|w| w == b"<unk>").unwrap();
                b[pos - 8..pos].copy_from_slice(&(2u64 << 30).to_le_bytes());
                b
            },
            Stage::Open,
            &[
                "key 'tokenizer.ggml.tokens'",
                "string array element 0",
                "string length 2147483648",
                "exceeds the limit of 67108864",
            ],
        ),
        case(
            "G48-zero-tokens",
            tiny(|w| {
                w.add_kv("tokenizer.ggml.tokens", strings(&[]))
                    .remove_kv("tokenizer.ggml.scores")
                    .remove_kv("tokenizer.ggml.token_type");
            }),
            Stage::Open,
            &["tokenizer.ggml.tokens has 0 entries, expected 1..=16777216"],
        ),
    ]);
    for bad in ["<0x-1>", "<0xZZ>", "<0x1>", "<0x100>"] {
        let bytes = tiny(|w| {
            let mut toks: Vec<Vec<u8>> = (0..64).map(|i| format!("t{i}").into_bytes()).collect();
            toks[5] = bad.as_bytes().to_vec();
            let mut types = vec![1i32; 64];
            types[5] = 6;
            w.add_kv("tokenizer.ggml.tokens", Value::Array(Array::String(toks)))
                .add_kv("tokenizer.ggml.token_type", Value::Array(Array::I32(types)));
        });
        let want = format!("byte token 5 is \"{bad}\", expected <0xHH> with two hex digits");
        c.push(case(&format!("G47-byte-token-{bad}"), bytes, Stage::Open, &[&want]));
    }
    c
}

/// Files that are odd but valid and must load (the parser must not over-reject).
fn valid_edge_cases() -> Vec<(String, Vec<u8>, Stage)> {
    let nested =
        Value::Array(Array::Array(vec![Array::U8(vec![1, 2]), Array::Array(vec![Array::String(vec![b"x".to_vec()])])]));
    vec![
        ("valid-tiny-llama".into(), tiny(|_| {}), Stage::Loads),
        (
            "valid-llama-rope-freqs".into(),
            tiny(|w| {
                let ones: Vec<u8> = (0..8).flat_map(|_| 1.0f32.to_le_bytes()).collect();
                w.add_tensor("rope_freqs.weight", &[8], GgmlType::F32, ones).unwrap();
            }),
            Stage::Loads,
        ),
        (
            "valid-tiny-v2".into(),
            tiny(|w| {
                w.version(2);
            }),
            Stage::Loads,
        ),
        (
            "valid-alignment-64".into(),
            tiny(|w| {
                w.add_kv("general.alignment", Value::U32(64));
            }),
            Stage::Loads,
        ),
        (
            "valid-nested-array-depth-3".into(),
            tiny(|w| {
                w.add_kv("x.nested", nested.clone());
            }),
            Stage::Loads,
        ),
        (
            "valid-zero-dim-container".into(),
            Raw::base().with(|r| {
                r.tensors[1].dims = vec![8, 0];
                r.data_len = Some(32);
            }),
            Stage::Config,
        ),
        (
            "valid-n-dims-0-scalar".into(),
            Raw::base().with(|r| {
                r.tensors[1].dims = vec![];
            }),
            Stage::Config,
        ),
    ]
}

// ----------------------------------------------------------------------------
// Tests
// ----------------------------------------------------------------------------

/// Runs `bytes` through the load path, measuring time and the largest single allocation.
fn measured(bytes: &[u8]) -> (Stage, String, Duration, usize) {
    MAX_ALLOC.with(|m| m.set(0));
    let t0 = Instant::now();
    let (stage, msg) = load(bytes);
    let dt = t0.elapsed();
    // from_bytes copies the input once: that allocation is the caller's, not the file's doing
    let max = MAX_ALLOC.with(|m| m.get());
    (stage, msg, dt, max)
}

#[test]
fn every_hostile_class_is_rejected_with_a_clear_error() {
    let out_dir = std::env::var_os("GGUF_CORPUS_OUT").map(std::path::PathBuf::from);
    let cases = corpus();
    let mut classes = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for c in &cases {
        if let Some(d) = &out_dir {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{}.gguf", c.id)), &c.bytes).unwrap();
        }
        classes.insert(c.id[..3].to_string());
        let (stage, msg, dt, max) = measured(&c.bytes);
        let missing: Vec<&String> = c.want.iter().filter(|w| !msg.contains(w.as_str())).collect();
        let alloc_limit = MAX_ALLOC_BYTES.max(c.bytes.len() + 64);
        if stage != c.stage || !missing.is_empty() || dt > MAX_TIME || max > alloc_limit {
            failures.push(format!(
                "{}: stage {stage:?} (want {:?}), {dt:?}, max alloc {max}, missing {missing:?}\n    message: {msg}",
                c.id, c.stage
            ));
        }
    }
    println!(
        "{} hostile files over {} classes: {}",
        cases.len(),
        classes.len(),
        classes.into_iter().collect::<Vec<_>>().join(" ")
    );
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn odd_but_valid_files_load() {
    let out_dir = std::env::var_os("GGUF_CORPUS_OUT").map(std::path::PathBuf::from);
    for (id, bytes, want) in valid_edge_cases() {
        if let Some(d) = &out_dir {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{id}.gguf")), &bytes).unwrap();
        }
        let (stage, msg) = load(&bytes);
        assert_eq!(stage, want, "{id}: {msg}");
    }
    let f = GgufFile::from_bytes(&Raw::base().with(|r| r.tensors[1].dims = vec![]), "t").unwrap();
    let b = f.tensor("b").unwrap();
    assert_eq!((b.n_elements(), b.n_rows(), b.n_bytes), (1, 1, 4)); // 0-dim tensor: one F32 scalar
    let f = GgufFile::from_bytes(
        &Raw::base().with(|r| {
            r.tensors[1].dims = vec![8, 0];
            r.data_len = Some(32);
        }),
        "t",
    )
    .unwrap();
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).len(), 0);
}

/// Class 37: a million tiny KV pairs (and 100k tensor infos) parse in bounded time (no quadratic scan).
#[test]
fn many_tiny_entries_parse_in_linear_time() {
    let n_kv = 1_000_000u64;
    let n_t = 100_000u64;
    let mut e = Encoder::new();
    e.header(3, n_t, n_kv);
    for i in 0..n_kv {
        e.string(format!("k{i}").as_bytes()).u32(0).u8(1);
    }
    for i in 0..n_t {
        e.tensor_info(format!("t{i}").as_bytes(), &[0], 0, 0);
    }
    e.pad_to(32);
    let t0 = Instant::now();
    let f = GgufFile::from_bytes(&e.buf, "many.gguf").unwrap();
    let dt = t0.elapsed();
    println!("{n_kv} kv pairs + {n_t} tensor infos ({} bytes) parsed in {dt:?}", e.buf.len());
    assert_eq!((f.metadata.len(), f.tensors.len()), (n_kv as usize, n_t as usize));
    assert!(dt < Duration::from_secs(10), "{dt:?}");
    // duplicates are still found among a million keys
    e.buf.clear();
    e.header(3, 0, 3);
    for k in ["k1", "k2", "k1"] {
        e.string(k.as_bytes()).u32(0).u8(1);
    }
    let err = GgufFile::from_bytes(&e.buf, "dup.gguf").unwrap_err().to_string();
    assert!(err.contains("kv pair 2 at offset") && err.contains("duplicate key 'k1'"), "{err}");
}

/// Classes 44, 45 and 48 at the tokenizer: absent special ids over a tiny vocabulary, gpt2 without merges,
/// duplicate and empty token strings, and chat templates that try to leave the sandbox, recurse or loop for
/// long. The tokenizer may accept or reject each file, but must not panic, must return only ids inside the
/// vocabulary, and must finish in bounded time.
#[test]
fn tokenizer_survives_degenerate_vocabularies() {
    use host::tokenizer::{ChatMessage, Tokenizer};
    let vocab = |model: &str, toks: &[&str], extra: &dyn Fn(&mut GgufWriter)| -> Vec<u8> {
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", Value::str("llama"))
            .add_kv("tokenizer.ggml.model", Value::str(model))
            .add_kv("tokenizer.ggml.tokens", strings(toks));
        extra(&mut w);
        w.to_bytes().unwrap()
    };
    let files = [
        ("G44-no-special-ids-2-tokens", vocab("llama", &["a", "b"], &|_| {})),
        (
            "G44-no-special-ids-gpt2-1-token",
            vocab("gpt2", &["a"], &|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&[]));
            }),
        ),
        ("G45-gpt2-without-merges", vocab("gpt2", &["a", "b", "ab"], &|_| {})),
        (
            "G45-merge-of-unknown-pieces",
            vocab("gpt2", &["a", "b", "ab"], &|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&["x y", "a b", "a b", "ab ab"]));
            }),
        ),
        ("G48-duplicate-tokens", vocab("llama", &["<unk>", "a", "a", "b", "ab", "ab"], &|_| {})),
        ("G48-empty-tokens", vocab("llama", &["", "", "a", ""], &|_| {})),
        (
            "G48-gpt2-duplicate-and-empty",
            vocab("gpt2", &["a", "", "a", "b", "ab"], &|w| {
                w.add_kv("tokenizer.ggml.merges", strings(&["a b"]));
            }),
        ),
    ];
    let templates = [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.__init__.__globals__ }}{{ self.__dict__ }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{% for i in range(1000000000) %}x{% endfor %}",
        "{% for m in messages %}{% for m2 in messages %}{{ m.content * 100000 }}{% endfor %}{% endfor %}",
        "{{ 'x' * 1000000000 }}",
    ];
    let mut outcomes = Vec::new();
    for (id, bytes) in &files {
        let f = GgufFile::from_bytes(bytes, "vocab.gguf").unwrap();
        let t0 = Instant::now();
        let tok = match Tokenizer::from_gguf(&f) {
            Ok(t) => t,
            Err(e) => {
                outcomes.push(format!("{id}: rejected: {e}"));
                continue;
            }
        };
        let n = tok.vocab_size() as u32;
        for special in [tok.bos(), tok.eos(), tok.eot()].into_iter().flatten() {
            assert!(special < n, "{id}: special id {special} outside a vocabulary of {n}");
        }
        for text in ["", "a", "ab ba abab", "b\u{e9}\u{1F600}\0"] {
            if let Ok(ids) = tok.encode(text, true, true) {
                assert!(ids.iter().all(|&i| i < n), "{id}: {text:?} -> {ids:?} outside a vocabulary of {n}");
                let _ = tok.decode(&ids);
            }
        }
        assert!(t0.elapsed() < MAX_TIME, "{id}: {:?}", t0.elapsed());
        outcomes.push(format!("{id}: loaded, {n} tokens"));
    }
    let f = GgufFile::from_bytes(&files[0].1, "vocab.gguf").unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let msgs = [ChatMessage { role: "user".into(), content: "hi".into() }];
    for tpl in templates {
        let t0 = Instant::now();
        let r = tok.apply_template(tpl, &msgs, true);
        let dt = t0.elapsed();
        let shown = r.as_ref().map_or_else(|e| format!("error: {e}"), |s| format!("{} bytes", s.len()));
        outcomes.push(format!("template {tpl:?}: {shown} in {dt:?}"));
        if let Ok(s) = &r {
            assert!(!s.contains("class") && !s.contains("globals"), "{tpl}: leaked {s:.200}");
        }
        assert!(dt < Duration::from_secs(5), "{tpl}: {dt:?}");
    }
    println!("{}", outcomes.join("\n"));
}

/// Class 48, denial of service through the chat template: nested loops within minijinja's per-range limit
/// would run 10^8 iterations (about a minute), and one more level is unbounded in practice: the template
/// environment's instruction budget (minijinja fuel) turns it into an error within seconds.
#[test]
fn chat_template_loops_are_bounded() {
    use host::tokenizer::{ChatMessage, Tokenizer};
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::str("llama"))
        .add_kv("tokenizer.ggml.model", Value::str("llama"))
        .add_kv("tokenizer.ggml.tokens", strings(&["a", "b"]));
    let f = GgufFile::from_bytes(&w.to_bytes().unwrap(), "vocab.gguf").unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    let msgs = [ChatMessage { role: "user".into(), content: "hi".into() }];
    let tpl = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}";
    let t0 = Instant::now();
    let r = tok.apply_template(tpl, &msgs, true);
    assert!(r.is_err() && t0.elapsed() < Duration::from_secs(5), "{:?} after {:?}", r.map(|s| s.len()), t0.elapsed());
}
