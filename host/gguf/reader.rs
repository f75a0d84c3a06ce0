//! GGUF reader over a memory map. The file is hostile input: every count and length is checked against the
//! bytes that remain before anything is allocated, every size is computed with checked arithmetic, and the
//! result is built only after the whole header has parsed. Tensor data is never read at open time: the reader
//! checks each tensor's `[start, end)` against the file length and later hands out slices of the map.
//!
//! Sections, in file order: magic, header, KV pairs, tensor infos, alignment, data.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::value::{Array, Value, ValueType};
use super::GgmlType;
use crate::{Error, Result};

// ----------------------------------------------------------------------------
// Limits: each one named in the error that it triggers
// ----------------------------------------------------------------------------

/// The 4 bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// magic (4) + version (4) + tensor_count (8) + kv_count (8).
pub const HEADER_SIZE: u64 = 24;
/// GGUF versions this reader accepts (v1 used 32-bit counts and is obsolete).
pub const MIN_VERSION: u32 = 2;
pub const MAX_VERSION: u32 = 3;
/// `general.alignment` when the key is absent (spec).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The spec requires a multiple of 8; it also keeps every f32/f64/block slice of the map naturally aligned.
pub const MIN_ALIGNMENT: u64 = 8;
/// Upper bound on `general.alignment` (the cap proposed in ggml PR #1516 / llama.cpp PR #24997).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Spec limit on key length.
pub const MAX_KEY_LEN: u64 = 65_535;
/// Longest metadata string (chat templates are tens of KB).
pub const MAX_STRING_LEN: u64 = 64 << 20;
/// Most elements in one array of plain values (llama.cpp's `GGUF_MAX_ARRAY_ELEMENTS`).
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Most elements in one array of strings or arrays: each element becomes a heap object, so this bounds the
/// memory a file can make us spend beyond its own size (real vocabularies are under 2^19).
pub const MAX_BOXED_ARRAY_LEN: u64 = 1 << 24;
/// Deepest array nesting (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: u32 = 4;
/// Longest tensor name (ggml's `GGML_MAX_NAME` is 64 including the NUL).
pub const MAX_TENSOR_NAME_LEN: u64 = 63;
/// Most tensor dimensions (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;
/// Smallest possible KV pair: key length (8) + 1-byte key + value type (4) + 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest possible tensor info: name length (8) + 1-byte name + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 4 + 8;
/// Smallest encoding of a nested array element: element type (4) + length (8).
const MIN_ARRAY_BYTES: u64 = 4 + 8;
/// Largest signed 64-bit value: ggml stores counts and dims as int64.
const I64_MAX: u64 = i64::MAX as u64;

// ----------------------------------------------------------------------------
// Public types: the parsed file and its tensor infos
// ----------------------------------------------------------------------------

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the row length (contiguous), `dims[1..]` count rows.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Relative to the start of the data section.
    pub offset: u64,
    /// Bytes of data (validated at open: whole blocks per row, no overflow, inside the file).
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Product of all dims (1 for a 0-dim scalar).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// Product of `dims[1..]`: the number of rows of `dims[0]` elements.
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).fold(1u64, |a, &d| a.saturating_mul(d))
    }

    /// `dims[0]` (1 for a 0-dim scalar).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }
}

/// The bytes behind a `GgufFile`: a read-only map of the file, or an owned copy kept 8-byte aligned so that
/// tensor slices have the same alignment guarantees as in a map.
enum Backing {
    /// The open file is kept to re-check its length (fstat) before tensor data is handed out.
    Map {
        map: memmap2::Mmap,
        file: std::fs::File,
    },
    Owned {
        words: Vec<u64>,
        len: usize,
    },
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Map { map, .. } => map,
            Backing::Owned { words, len } => &bytemuck::cast_slice::<u64, u8>(words)[..*len],
        }
    }
}

/// A parsed GGUF file. Metadata and tensor infos are owned; tensor data stays in the map.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    /// KV pairs in file order (keys are unique).
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order (names are unique).
    pub tensors: Vec<TensorInfo>,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
    pub alignment: u64,
    kv_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    backing: Backing,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("data_offset", &self.data_offset)
            .field("alignment", &self.alignment)
            .finish()
    }
}

// ----------------------------------------------------------------------------
// Opening: map the file, parse the header, keep the map
// ----------------------------------------------------------------------------

impl GgufFile {
    /// Maps and parses `path`. Reads only the header pages; tensor data is bounds-checked, not touched.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let backing = if len == 0 {
            // mmap of an empty file fails with EINVAL on Linux; the parser reports the empty file instead.
            Backing::Owned { words: Vec::new(), len: 0 }
        } else {
            // SAFETY: the map is read-only and private to this process. Another process truncating or
            // rewriting the file while it is mapped can still change bytes under us, or fault (SIGBUS) on a
            // page past a new end: the contract of every mmap-based loader (GGUF_SECURITY.md case 38). The
            // header is parsed (and copied) right away; tensor data is only handed out after `tensor_bytes`
            // re-checks the length, and a model load prefaults it (`populate`), which turns a truncation into
            // an error instead of a signal.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            Backing::Map { map, file }
        };
        Self::from_backing(path.to_path_buf(), backing)
    }

    /// Parses a GGUF image held in memory (tests, fuzzing, synthetic models). `label` names it in errors.
    pub fn from_bytes(bytes: &[u8], label: impl Into<PathBuf>) -> Result<GgufFile> {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self::from_backing(label.into(), Backing::Owned { words, len: bytes.len() })
    }

    fn from_backing(path: PathBuf, backing: Backing) -> Result<GgufFile> {
        let parsed = match parse(backing.bytes()) {
            Ok(p) => p,
            Err(msg) => return Err(Error::Gguf { path, msg }),
        };
        let kv_index = parsed.metadata.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect();
        let tensor_index = parsed.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            path,
            version: parsed.version,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            data_offset: parsed.data_offset,
            alignment: parsed.alignment,
            kv_index,
            tensor_index,
            backing,
        })
    }

    /// The whole file image.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// File length in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes().len() as u64
    }
}

// ----------------------------------------------------------------------------
// Lookups: metadata by key (typed getters) and tensors by name
// ----------------------------------------------------------------------------

impl GgufFile {
    fn err(&self, msg: String) -> Error {
        Error::Gguf { path: self.path.clone(), msg }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv_index.get(key).map(|&i| &self.metadata[i].1)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| self.err(format!("missing key '{key}'")))
    }

    fn wrong_type(&self, key: &str, v: &Value, expected: &str) -> Error {
        self.err(format!("key '{key}' has type {}, expected {expected}", v.value_type()))
    }

    /// A string value as UTF-8 text.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        let b = v.as_bytes().ok_or_else(|| self.wrong_type(key, v, "string"))?;
        std::str::from_utf8(b)
            .map_err(|e| self.err(format!("key '{key}' is not valid utf-8 (at byte {} of the value)", e.valid_up_to())))
    }

    /// Any integer type, as `i128` (no loss); errors name the key and its type.
    fn get_int(&self, key: &str) -> Result<i128> {
        let v = self.require(key)?;
        v.as_int().ok_or_else(|| self.wrong_type(key, v, "an integer"))
    }

    fn get_int_in<T: TryFrom<i128>>(&self, key: &str, ty: &str) -> Result<T> {
        let n = self.get_int(key)?;
        T::try_from(n).map_err(|_| self.err(format!("key '{key}' value {n} does not fit in {ty}")))
    }

    /// Any integer type whose value fits in `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_int_in(key, "u32")
    }

    /// Any integer type whose value fits in `u64` (the spec: readers should accept u32 and u64 counts).
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_int_in(key, "u64")
    }

    /// Any integer type whose value fits in `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_int_in(key, "i64")
    }

    /// Any integer type whose value fits in `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get_int_in(key, "usize")
    }

    /// An f32, or an f64 that converts to a finite f32 (or was not finite to begin with).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        match *v {
            Value::F32(x) => Ok(x),
            Value::F64(x) => {
                let y = x as f32;
                if y.is_finite() || !x.is_finite() {
                    Ok(y)
                } else {
                    Err(self.err(format!("key '{key}' value {x:e} does not fit in f32")))
                }
            }
            _ => Err(self.wrong_type(key, v, "f32")),
        }
    }

    /// An f32 or f64 as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_float().ok_or_else(|| self.wrong_type(key, v, "f64"))
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        let v = self.require(key)?;
        match *v {
            Value::Bool(b) => Ok(b),
            _ => Err(self.wrong_type(key, v, "bool")),
        }
    }

    /// An array value of any element type (check the element type with `Array::as_*`).
    pub fn get_array(&self, key: &str) -> Result<&Array> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| self.wrong_type(key, v, "array"))
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of tensor `t`, a slice of the map; an empty slice where `tensor_bytes` would fail (a
    /// `TensorInfo` of another file, or this file truncated since it was opened).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        self.tensor_bytes(t).unwrap_or(&[])
    }

    /// Absolute file range `[start, end)` of tensor `t`'s data, or `None` if it does not fit in `u64`.
    fn tensor_range(&self, t: &TensorInfo) -> Option<(u64, u64)> {
        let start = self.data_offset.checked_add(t.offset)?;
        Some((start, start.checked_add(t.n_bytes)?))
    }

    /// The bytes of tensor `t`, a slice of the map, after checking that the file still holds them. Bounds were
    /// checked at open; this re-checks the file's current length (one fstat), so that a file truncated after
    /// open gives an error naming the file and the range instead of a SIGBUS when the slice is read.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<&[u8]> {
        let bad = |msg: String| self.err(format!("tensor '{}' {msg}", t.name));
        let (start, end) = self.tensor_range(t).ok_or_else(|| bad("data range overflows".into()))?;
        let slice = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(s, e)| self.bytes().get(s..e))
            .ok_or_else(|| {
                bad(format!("data at file offsets {start}..{end} is outside the {}-byte file", self.file_len()))
            })?;
        self.check_len(end, &|| format!("tensor '{}' data at file offsets {start}..{end}", t.name))?;
        Ok(slice)
    }

    /// Absolute end of the data section: the end of the last tensor's data (`data_offset` without tensors).
    pub fn data_end(&self) -> u64 {
        self.tensors.iter().filter_map(|t| self.tensor_range(t)).map(|(_, e)| e).max().unwrap_or(self.data_offset)
    }

    /// Errors if the mapped file is now shorter than `need` bytes (fstat; nothing to do for an in-memory
    /// image). `what` describes the data that needs them.
    fn check_len(&self, need: u64, what: &dyn Fn() -> String) -> Result<()> {
        let now = self.current_len()?;
        if now < need {
            return Err(self.err(format!(
                "{} is past the end of the file: it is now {now} bytes, {} when opened (truncated or \
                 rewritten while in use?)",
                what(),
                self.file_len()
            )));
        }
        Ok(())
    }

    /// Re-checks that the file still holds all the tensor data its header describes (one fstat).
    pub fn check_not_truncated(&self) -> Result<()> {
        let end = self.data_end();
        self.check_len(end, &|| format!("tensor data up to offset {end}"))
    }

    /// Prefaults the data of `tensors` into the map, so that a file truncated since open is reported here, as
    /// an error naming the file, the tensor and the range, rather than as a SIGBUS in the middle of inference.
    /// Linux >= 5.14: `madvise(MADV_POPULATE_READ)`, which fails with EFAULT where a read would fault. Older
    /// kernels (EINVAL) and other systems: the file length is re-checked against the tensors' ends (fstat)
    /// instead. Reads the tensors from disk (the first forward pass would anyway); call it at model load, never
    /// at open. An in-memory image needs nothing. A truncation after this call can still fault: the pages stay
    /// mapped only while the file holds them.
    pub fn populate(&self, tensors: &[&TensorInfo]) -> Result<()> {
        self.populate_with(tensors, cfg!(target_os = "linux"))
    }

    /// `populate`, with `madvise` optional so that tests can take the fallback path on any kernel.
    #[doc(hidden)]
    pub fn populate_with(&self, tensors: &[&TensorInfo], use_madvise: bool) -> Result<()> {
        let Backing::Map { map, .. } = &self.backing else { return Ok(()) };
        // Merge the ranges (tensors are contiguous in the file, so usually into one) to keep the syscalls few.
        let mut ranges: Vec<(u64, u64)> = tensors.iter().filter_map(|t| self.tensor_range(t)).collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (s, e) in ranges {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let end_of_all = merged.last().map_or(0, |r| r.1);
        // Names the first tensor not wholly inside a file of `now` bytes, for the error.
        let first_cut = |now: u64| -> String {
            tensors
                .iter()
                .filter_map(|t| Some((t, self.tensor_range(t)?)))
                .filter(|(_, (_, e))| *e > now)
                .min_by_key(|(_, (s, _))| *s)
                .map_or_else(String::new, |(t, (s, e))| format!("; tensor '{}' needs offsets {s}..{e}", t.name))
        };
        if use_madvise {
            // on a cold page cache this reads the model from disk: the time a large model takes to load
            let total = merged.iter().map(|r| r.1 - r.0).sum();
            let mut bar = crate::progress::Progress::new(total, "reading weights", crate::progress::Unit::Bytes);
            'ranges: for &(start, end) in &merged {
                // Chunks bound each syscall, so that a signal is seen between them on a slow disk.
                let mut at = start;
                while at < end {
                    let len = (end - at).min(POPULATE_CHUNK);
                    // Ranges were checked against the map at open; madvise aligns the start down to a page.
                    match advise_populate(map, at as usize, len as usize) {
                        Ok(()) => {
                            at += len;
                            bar.inc(len);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) if e.raw_os_error() == Some(EFAULT) => {
                            let now = self.current_len()?;
                            return Err(self.err(format!(
                                "reading tensor data at file offsets {at}..{} failed (EFAULT): the file is now \
                                 {now} bytes, {} when opened (truncated or rewritten while in use?){}",
                                at + len,
                                self.file_len(),
                                first_cut(now)
                            )));
                        }
                        // EINVAL: a kernel before 5.14; anything else: prefaulting is only a precaution.
                        Err(_) => break 'ranges,
                    }
                }
            }
        }
        // Always (and the only check without madvise): the file still holds every range.
        let now = self.current_len()?;
        if now < end_of_all {
            return Err(self.err(format!(
                "tensor data up to offset {end_of_all} is past the end of the file: it is now {now} bytes, {} \
                 when opened (truncated or rewritten while in use?){}",
                self.file_len(),
                first_cut(now)
            )));
        }
        Ok(())
    }

    /// The file's current length (fstat), or the image length for an in-memory image.
    fn current_len(&self) -> Result<u64> {
        match &self.backing {
            Backing::Map { file, .. } => Ok(file.metadata().map_err(|e| Error::io(&self.path, e))?.len()),
            Backing::Owned { len, .. } => Ok(*len as u64),
        }
    }
}

/// Most bytes prefaulted by one `madvise` call.
const POPULATE_CHUNK: u64 = 64 << 20;

#[cfg(target_os = "linux")]
const EFAULT: i32 = 14;
#[cfg(not(target_os = "linux"))]
const EFAULT: i32 = -1; // never matches: no MADV_POPULATE_READ

#[cfg(target_os = "linux")]
fn advise_populate(map: &memmap2::Mmap, offset: usize, len: usize) -> std::io::Result<()> {
    map.advise_range(memmap2::Advice::PopulateRead, offset, len)
}

#[cfg(not(target_os = "linux"))]
fn advise_populate(_: &memmap2::Mmap, _: usize, _: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

// ----------------------------------------------------------------------------
// Cursor: the only code that reads bytes; every read is bounds-checked
// ----------------------------------------------------------------------------

/// Parser result: the error is the message, wrapped into `Error::Gguf` with the path by the caller.
type PResult<T> = std::result::Result<T, String>;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn pos(&self) -> u64 {
        self.pos as u64
    }

    /// The next `n` bytes; `what` names the field in the error.
    fn take(&mut self, n: u64, what: &str) -> PResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(format!(
                "{what}: needs {n} bytes at offset {}, only {} remain (file truncated?)",
                self.pos,
                self.remaining()
            ));
        }
        let start = self.pos;
        self.pos += n as usize; // n <= remaining, so this fits
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &str) -> PResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> PResult<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> PResult<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> PResult<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string (`u64` length + bytes), checked against `limit` and the remaining bytes before the slice
    /// is taken. Borrows from the buffer; nothing is allocated.
    fn string(&mut self, limit: u64, what: &str) -> PResult<&'a [u8]> {
        let at = self.pos();
        let len = self.u64(what)?;
        if len > limit {
            return Err(format!("{what}: string length {len} at offset {at} exceeds the limit of {limit} bytes"));
        }
        if len > self.remaining() {
            return Err(format!(
                "{what}: string length {len} at offset {at} exceeds remaining file size {}",
                self.remaining()
            ));
        }
        self.take(len, what)
    }
}

// ----------------------------------------------------------------------------
// Parser: magic, header, KV pairs, tensor infos, alignment, data section
// ----------------------------------------------------------------------------

struct Parsed {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
    alignment: u64,
}

/// `o` rounded up to a multiple of `align` (a power of two), or `None` on overflow.
pub fn align_up(o: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(o.checked_add(align - 1)? & !(align - 1))
}

/// Shows 4 magic bytes as text, unprintable bytes as `?` (as llama.cpp does), plus hex.
fn show_magic(m: &[u8]) -> String {
    let text: String = m.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect();
    let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
    format!("'{text}' ({})", hex.join(" "))
}

fn parse(buf: &[u8]) -> PResult<Parsed> {
    let mut c = Cursor { buf, pos: 0 };

    // --- magic ---
    if buf.is_empty() {
        return Err("file is empty (0 bytes), not a gguf file".into());
    }
    if buf.len() >= 4 && buf[..4] != MAGIC {
        let m = &buf[..4];
        let hint = match m {
            b"FUGG" => " (byte-swapped magic: a big-endian or corrupted file)",
            b"tjgg" | b"lmgg" | b"fmgg" => " (legacy ggml/ggmf/ggjt format: convert it to gguf)",
            _ => "",
        };
        return Err(format!("bad magic {} at offset 0, expected 'GGUF' (47 47 55 46){hint}", show_magic(m)));
    }
    if (buf.len() as u64) < HEADER_SIZE {
        return Err(format!("file is {} bytes, shorter than the {HEADER_SIZE}-byte gguf header", buf.len()));
    }
    c.take(4, "magic")?;

    // --- header ---
    let version = c.u32("version")?;
    match version {
        0 => return Err("version 0 at offset 4 is invalid (supported: 2, 3)".into()),
        1 => return Err("gguf version 1 is no longer supported (supported: 2, 3)".into()),
        v if v & 0xFFFF == 0 => {
            return Err(format!(
                "version {v:#010x} at offset 4 looks byte-swapped: a big-endian file, not supported (supported: 2, 3)"
            ))
        }
        v if v > MAX_VERSION => {
            return Err(format!("version {v} at offset 4 is newer than supported (max {MAX_VERSION})"))
        }
        _ => {}
    }
    let tensor_count = c.u64("tensor_count")?;
    let kv_count = c.u64("kv_count")?;
    for (name, n, at) in [("tensor_count", tensor_count, 8), ("kv_count", kv_count, 16)] {
        if n > I64_MAX {
            return Err(format!("{name} {n} at offset {at} is negative as int64"));
        }
    }
    // Each KV and tensor info has a minimum size: a count the remaining bytes cannot back is rejected before
    // any allocation sized by it.
    let rem = c.remaining();
    let kv_min = kv_count.saturating_mul(MIN_KV_BYTES);
    let ti_min = tensor_count.saturating_mul(MIN_TENSOR_INFO_BYTES);
    if kv_min > rem {
        return Err(format!(
            "kv_count {kv_count} at offset 16 needs at least {kv_min} bytes, only {rem} remain after the header"
        ));
    }
    if ti_min > rem || kv_min + ti_min > rem {
        return Err(format!(
            "tensor_count {tensor_count} at offset 8 needs at least {ti_min} bytes of tensor infos \
             (plus {kv_min} for {kv_count} kv pairs), only {rem} remain after the header"
        ));
    }

    // --- KV pairs ---
    let metadata = parse_kvs(&mut c, kv_count as usize)?;
    super::known_keys::check(&metadata)?;

    // --- alignment (needed to check tensor offsets) ---
    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) => {
            let a = u64::from(*a);
            if !a.is_power_of_two() || !(MIN_ALIGNMENT..=MAX_ALIGNMENT).contains(&a) {
                return Err(format!(
                    "general.alignment {a} must be a power of two in {MIN_ALIGNMENT}..={MAX_ALIGNMENT}"
                ));
            }
            a
        }
        Some((_, v)) => return Err(format!("general.alignment has type {}, expected u32", v.value_type())),
    };

    // --- tensor infos ---
    let rem = c.remaining();
    if tensor_count.saturating_mul(MIN_TENSOR_INFO_BYTES) > rem {
        return Err(format!(
            "tensor_count {tensor_count} needs at least {} bytes of tensor infos, only {rem} remain at offset {}",
            tensor_count.saturating_mul(MIN_TENSOR_INFO_BYTES),
            c.pos()
        ));
    }
    let tensors = parse_tensor_infos(&mut c, tensor_count as usize, alignment)?;

    // --- data section ---
    let infos_end = c.pos();
    let data_offset = align_up(infos_end, alignment)
        .ok_or_else(|| format!("data section offset overflows aligning {infos_end} to {alignment}"))?;
    let file_len = buf.len() as u64;
    if !tensors.is_empty() && data_offset > file_len {
        return Err(format!(
            "data section starts at offset {data_offset} (tensor infos end at {infos_end}, aligned to \
             {alignment}), past the end of the {file_len}-byte file"
        ));
    }
    for t in &tensors {
        // offset + n_bytes was checked against the running total; the absolute end can still overflow.
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                let show = |o: Option<u64>| o.map_or("overflow".to_string(), |v| v.to_string());
                return Err(format!(
                    "tensor '{}' data at file offsets {}..{} (data section {data_offset} + offset {}) is not \
                     within the {file_len}-byte file (model corrupted or incomplete)",
                    t.name,
                    show(start),
                    show(end),
                    t.offset
                ));
            }
        }
    }

    Ok(Parsed { version, metadata, tensors, data_offset, alignment })
}

// --- KV pairs ---

fn parse_kvs(c: &mut Cursor, kv_count: usize) -> PResult<Vec<(String, Value)>> {
    // kv_count was bounded by the remaining bytes / MIN_KV_BYTES, so this allocation is backed by the file.
    let mut metadata = Vec::with_capacity(kv_count);
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(kv_count);
    for i in 0..kv_count {
        let at = c.pos();
        let key = c.string(MAX_KEY_LEN, "kv key").map_err(|e| format!("kv pair {i}: {e}"))?;
        if key.is_empty() {
            return Err(format!("kv pair {i} at offset {at}: empty key"));
        }
        if let Some(p) = key.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(format!(
                "kv pair {i} at offset {at}: key {:?} has byte {:#04x} at position {p}, keys must be printable ascii",
                String::from_utf8_lossy(key),
                key[p]
            ));
        }
        // ascii graphic => valid utf-8
        let key_str = std::str::from_utf8(key).map_err(|e| e.to_string())?;
        if !seen.insert(key) {
            return Err(format!("kv pair {i} at offset {at}: duplicate key '{key_str}'"));
        }
        let type_at = c.pos();
        let type_id = c.u32("value type").map_err(|e| format!("key '{key_str}': {e}"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| {
            format!(
                "key '{key_str}': value type {type_id} at offset {type_at} is invalid (valid: 0..{})",
                ValueType::COUNT
            )
        })?;
        let value = read_value(c, ty, 0).map_err(|e| format!("key '{key_str}': {e}"))?;
        metadata.push((key_str.to_owned(), value));
    }
    Ok(metadata)
}

fn read_value(c: &mut Cursor, ty: ValueType, depth: u32) -> PResult<Value> {
    Ok(match ty {
        ValueType::U8 => Value::U8(c.u8("u8 value")?),
        ValueType::I8 => Value::I8(c.u8("i8 value")? as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(c.array("u16 value")?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(c.array("i16 value")?)),
        ValueType::U32 => Value::U32(c.u32("u32 value")?),
        ValueType::I32 => Value::I32(i32::from_le_bytes(c.array("i32 value")?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(c.array("f32 value")?)),
        ValueType::U64 => Value::U64(c.u64("u64 value")?),
        ValueType::I64 => Value::I64(i64::from_le_bytes(c.array("i64 value")?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(c.array("f64 value")?)),
        ValueType::Bool => {
            let at = c.pos();
            Value::Bool(read_bool(c.u8("bool value")?, at)?)
        }
        ValueType::String => Value::String(c.string(MAX_STRING_LEN, "string value")?.to_vec()),
        ValueType::Array => Value::Array(read_array(c, depth + 1)?),
    })
}

fn read_bool(b: u8, at: u64) -> PResult<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(format!("bool value {b} at offset {at} is not 0 or 1")),
    }
}

/// Decodes `n` packed little-endian values of `$t` (size `$size`) from the cursor.
macro_rules! read_packed {
    ($c:expr, $n:expr, $t:ty, $size:expr) => {{
        let bytes = $c.take($n * $size, concat!(stringify!($t), " array"))?;
        bytes
            .chunks_exact($size)
            .map(|ch| {
                let mut a = [0u8; $size];
                a.copy_from_slice(ch);
                <$t>::from_le_bytes(a)
            })
            .collect::<Vec<$t>>()
    }};
}

fn read_array(c: &mut Cursor, depth: u32) -> PResult<Array> {
    let at = c.pos();
    if depth > MAX_ARRAY_DEPTH {
        return Err(format!("array at offset {at} is nested {depth} deep, the limit is {MAX_ARRAY_DEPTH}"));
    }
    let type_id = c.u32("array element type")?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| {
        format!("array element type {type_id} at offset {at} is invalid (valid: 0..{})", ValueType::COUNT)
    })?;
    let n = c.u64("array length")?;
    let limit = if ty.fixed_size().is_some() { MAX_ARRAY_LEN } else { MAX_BOXED_ARRAY_LEN };
    if n > limit {
        return Err(format!("array of {ty} at offset {at} has {n} elements, the limit is {limit}"));
    }
    // Minimum encoded bytes per element; the whole array must fit in what remains before we allocate.
    let min_elem = match ty {
        ValueType::String => 8,
        ValueType::Array => MIN_ARRAY_BYTES,
        t => t.fixed_size().unwrap_or(1) as u64,
    };
    let need = n * min_elem; // n <= 2^30 and min_elem <= 12: no overflow
    if need > c.remaining() {
        return Err(format!(
            "array of {n} {ty} elements at offset {at} needs at least {need} bytes, only {} remain",
            c.remaining()
        ));
    }
    let n = n as usize;
    Ok(match ty {
        ValueType::U8 => Array::U8(c.take(n as u64, "u8 array")?.to_vec()),
        ValueType::I8 => Array::I8(c.take(n as u64, "i8 array")?.iter().map(|&b| b as i8).collect()),
        ValueType::U16 => Array::U16(read_packed!(c, n as u64, u16, 2)),
        ValueType::I16 => Array::I16(read_packed!(c, n as u64, i16, 2)),
        ValueType::U32 => Array::U32(read_packed!(c, n as u64, u32, 4)),
        ValueType::I32 => Array::I32(read_packed!(c, n as u64, i32, 4)),
        ValueType::F32 => Array::F32(read_packed!(c, n as u64, f32, 4)),
        ValueType::U64 => Array::U64(read_packed!(c, n as u64, u64, 8)),
        ValueType::I64 => Array::I64(read_packed!(c, n as u64, i64, 8)),
        ValueType::F64 => Array::F64(read_packed!(c, n as u64, f64, 8)),
        ValueType::Bool => {
            let start = c.pos();
            let bytes = c.take(n as u64, "bool array")?;
            let mut v = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                v.push(read_bool(b, start + i as u64).map_err(|e| format!("bool array element {i}: {e}"))?);
            }
            Array::Bool(v)
        }
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let s = c.string(MAX_STRING_LEN, "string").map_err(|e| format!("string array element {i}: {e}"))?;
                v.push(s.to_vec());
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(read_array(c, depth + 1).map_err(|e| format!("array element {i}: {e}"))?);
            }
            Array::Array(v)
        }
    })
}

// --- tensor infos ---

fn parse_tensor_infos(c: &mut Cursor, tensor_count: usize, alignment: u64) -> PResult<Vec<TensorInfo>> {
    // tensor_count was bounded by the remaining bytes / MIN_TENSOR_INFO_BYTES.
    let mut tensors = Vec::with_capacity(tensor_count);
    let mut seen: HashSet<&[u8]> = HashSet::with_capacity(tensor_count);
    // Tensors must be contiguous in info order, each padded to `alignment` (llama.cpp's rule): this rules out
    // gaps, overlaps, shared offsets and out-of-order data in one check.
    let mut expected_offset: u64 = 0;
    for i in 0..tensor_count {
        let at = c.pos();
        let name = c.string(MAX_TENSOR_NAME_LEN, "tensor name").map_err(|e| format!("tensor info {i}: {e}"))?;
        let name = validate_tensor_name(name).map_err(|e| format!("tensor info {i} at offset {at}: {e}"))?;
        if !seen.insert(name.as_bytes()) {
            return Err(format!("tensor info {i} at offset {at}: duplicate tensor name '{name}'"));
        }
        let t = read_tensor_info(c, name, alignment, expected_offset).map_err(|e| format!("tensor '{name}': {e}"))?;
        expected_offset =
            t.offset.checked_add(t.n_bytes).and_then(|end| align_up(end, alignment)).ok_or_else(|| {
                format!("tensor '{name}': data end overflows (offset {} + {} bytes)", t.offset, t.n_bytes)
            })?;
        tensors.push(t);
    }
    Ok(tensors)
}

fn validate_tensor_name(name: &[u8]) -> PResult<&str> {
    if name.is_empty() {
        return Err("empty tensor name".into());
    }
    let s = std::str::from_utf8(name)
        .map_err(|e| format!("tensor name is not valid utf-8 (at byte {})", e.valid_up_to()))?;
    if let Some(p) = s.bytes().position(|b| b.is_ascii_control()) {
        return Err(format!("tensor name {s:?} has control byte {:#04x} at position {p}", name[p]));
    }
    Ok(s)
}

fn read_tensor_info(c: &mut Cursor, name: &str, alignment: u64, expected_offset: u64) -> PResult<TensorInfo> {
    let at = c.pos();
    let n_dims = c.u32("n_dims")?;
    if n_dims > MAX_DIMS {
        return Err(format!("n_dims {n_dims} at offset {at} exceeds the limit of {MAX_DIMS}"));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let dat = c.pos();
        let v = c.u64("dimension")?;
        if v > I64_MAX {
            return Err(format!("dimension {d} = {v} at offset {dat} is negative as int64"));
        }
        dims.push(v);
    }
    let type_at = c.pos();
    let type_id = c.u32("ggml type")?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        let removed = matches!(type_id, 4 | 5 | 31..=33 | 36..=38);
        format!(
            "ggml type {type_id} at offset {type_at} is {}",
            if removed { "a removed type id with no block layout" } else { "unknown" }
        )
    })?;
    let offset_at = c.pos();
    let offset = c.u64("offset")?;

    // Element count: a zero dimension makes it 0 without overflow (llama.cpp TENSORS_ZERO_DIM loads).
    let n_elements = if dims.contains(&0) {
        0
    } else {
        dims.iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d).filter(|&p| p <= I64_MAX))
            .ok_or_else(|| format!("element count of dims {dims:?} overflows int64"))?
    };
    let row_len = dims.first().copied().unwrap_or(1);
    let bs = ggml_type.block_size() as u64;
    if row_len % bs != 0 {
        return Err(format!("row length {row_len} (dims[0]) is not a multiple of the {ggml_type} block size {bs}"));
    }
    let n_rows = if n_elements == 0 { 0 } else { n_elements / row_len };
    let n_bytes = ggml_type
        .row_bytes(row_len)
        .and_then(|rb| rb.checked_mul(n_rows))
        .filter(|&b| b <= I64_MAX)
        .ok_or_else(|| format!("byte size of dims {dims:?} as {ggml_type} overflows int64"))?;

    if offset % alignment != 0 {
        return Err(format!("offset {offset} at offset {offset_at} is not aligned to {alignment}"));
    }
    if offset != expected_offset {
        return Err(format!(
            "offset {offset} at offset {offset_at}, expected {expected_offset} (tensors must be contiguous in \
             info order, each padded to {alignment} bytes)"
        ));
    }
    Ok(TensorInfo { name: name.to_owned(), dims, ggml_type, offset, n_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Little-endian byte builder for hand-made headers.
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(version.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &[u8]) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s);
    }

    fn err(bytes: &[u8]) -> String {
        match GgufFile::from_bytes(bytes, "t.gguf") {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_container_is_valid() {
        let f = GgufFile::from_bytes(&header(3, 0, 0), "t.gguf").unwrap();
        assert_eq!((f.version, f.metadata.len(), f.tensors.len()), (3, 0, 0));
        assert_eq!(f.alignment, 32);
        assert_eq!(f.data_offset, 32); // 24 rounded up to 32
    }

    #[test]
    fn header_errors_name_the_field() {
        assert!(err(&[]).contains("empty"));
        assert!(err(b"GGUF").contains("shorter than the 24-byte"));
        assert!(err(b"FUGG\x03\0\0\0").contains("byte-swapped magic"));
        assert!(err(&header(1, 0, 0)).contains("version 1"));
        assert!(err(&header(0x0300_0000, 0, 0)).contains("byte-swapped"));
        assert!(err(&header(4, 0, 0)).contains("newer than supported"));
        assert!(err(&header(3, u64::MAX, 0)).contains("tensor_count 18446744073709551615 at offset 8 is negative"));
        assert!(err(&header(3, 0, 1 << 40)).contains("kv_count 1099511627776 at offset 16 needs at least"));
    }

    #[test]
    fn kv_values_parse() {
        let mut b = header(2, 0, 3);
        string(&mut b, b"a.u16");
        b.extend(2u32.to_le_bytes());
        b.extend(0xBEEFu16.to_le_bytes());
        string(&mut b, b"a.arr");
        b.extend(9u32.to_le_bytes());
        b.extend(5u32.to_le_bytes()); // i32 elements
        b.extend(2u64.to_le_bytes());
        b.extend((-1i32).to_le_bytes());
        b.extend(7i32.to_le_bytes());
        string(&mut b, b"a.s");
        b.extend(8u32.to_le_bytes());
        string(&mut b, &[0xff, b'x']); // not utf-8: kept as bytes
        let f = GgufFile::from_bytes(&b, "t.gguf").unwrap();
        assert_eq!(f.version, 2);
        assert_eq!(f.get("a.u16"), Some(&Value::U16(0xBEEF)));
        assert_eq!(f.get_u32("a.u16").unwrap(), 0xBEEF);
        assert_eq!(f.get_array("a.arr").unwrap().as_i32(), Some(&[-1, 7][..]));
        assert_eq!(f.get("a.s").unwrap().as_bytes(), Some(&[0xff, b'x'][..]));
        assert!(f.get_str("a.s").unwrap_err().to_string().contains("not valid utf-8"));
        assert!(f.get_str("a.u16").unwrap_err().to_string().contains("has type u16, expected string"));
        assert!(f.get_u32("nope").unwrap_err().to_string().contains("missing key 'nope'"));
    }

    #[test]
    fn align_up_is_checked() {
        assert_eq!(align_up(24, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(u64::MAX - 3, 32), None);
    }
}
