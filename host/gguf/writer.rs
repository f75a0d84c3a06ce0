//! GGUF writer: the inverse of the reader, for tests, fixtures and synthetic models.
//!
//! `GgufWriter` lays out a valid file (KV pairs in insertion order, tensors contiguous in insertion order, each
//! padded to `general.alignment`). `Encoder` is the byte-level layer under it, public so that tests can build
//! deliberately malformed files field by field.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use super::reader::{align_up, DEFAULT_ALIGNMENT, MAGIC};
use super::value::{Array, Value};
use super::GgmlType;
use crate::{Error, Result};

// ----------------------------------------------------------------------------
// Encoder: little-endian primitives, strings, values
// ----------------------------------------------------------------------------

/// A growable little-endian byte buffer with GGUF encodings.
#[derive(Debug, Default, Clone)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// `u64` length + bytes.
    pub fn string(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }

    /// The GGUF header: magic, version, tensor_count, kv_count.
    pub fn header(&mut self, version: u32, tensor_count: u64, kv_count: u64) -> &mut Self {
        self.bytes(&MAGIC).u32(version).u64(tensor_count).u64(kv_count)
    }

    /// A KV pair: key, value type, value.
    pub fn kv(&mut self, key: &[u8], v: &Value) -> &mut Self {
        self.string(key).u32(v.value_type().id()).value(v)
    }

    /// A value's encoding without its type tag.
    pub fn value(&mut self, v: &Value) -> &mut Self {
        match v {
            Value::U8(x) => self.u8(*x),
            Value::I8(x) => self.bytes(&x.to_le_bytes()),
            Value::U16(x) => self.bytes(&x.to_le_bytes()),
            Value::I16(x) => self.bytes(&x.to_le_bytes()),
            Value::U32(x) => self.u32(*x),
            Value::I32(x) => self.bytes(&x.to_le_bytes()),
            Value::F32(x) => self.bytes(&x.to_le_bytes()),
            Value::Bool(x) => self.u8(u8::from(*x)),
            Value::String(s) => self.string(s),
            Value::Array(a) => self.array(a),
            Value::U64(x) => self.u64(*x),
            Value::I64(x) => self.bytes(&x.to_le_bytes()),
            Value::F64(x) => self.bytes(&x.to_le_bytes()),
        }
    }

    /// An array: element type, length, packed elements.
    pub fn array(&mut self, a: &Array) -> &mut Self {
        self.u32(a.elem_type().id()).u64(a.len() as u64);
        macro_rules! packed {
            ($v:expr) => {{
                for x in $v {
                    self.bytes(&x.to_le_bytes());
                }
            }};
        }
        match a {
            Array::U8(v) => {
                self.bytes(v);
            }
            Array::I8(v) => packed!(v),
            Array::U16(v) => packed!(v),
            Array::I16(v) => packed!(v),
            Array::U32(v) => packed!(v),
            Array::I32(v) => packed!(v),
            Array::F32(v) => packed!(v),
            Array::U64(v) => packed!(v),
            Array::I64(v) => packed!(v),
            Array::F64(v) => packed!(v),
            Array::Bool(v) => v.iter().for_each(|&b| self.buf.push(u8::from(b))),
            Array::String(v) => v.iter().for_each(|s| {
                self.string(s);
            }),
            Array::Array(v) => v.iter().for_each(|inner| {
                self.array(inner);
            }),
        }
        self
    }

    /// A tensor info: name, n_dims, dims, ggml type id, offset.
    pub fn tensor_info(&mut self, name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.string(name).u32(dims.len() as u32);
        dims.iter().for_each(|&d| {
            self.u64(d);
        });
        self.u32(type_id).u64(offset)
    }

    /// Zero bytes up to the next multiple of `align` (a power of two).
    pub fn pad_to(&mut self, align: u64) -> &mut Self {
        let target = align_up(self.buf.len() as u64, align).unwrap_or(self.buf.len() as u64);
        self.buf.resize(target as usize, 0);
        self
    }
}

// ----------------------------------------------------------------------------
// GgufWriter: a valid file from KV pairs and tensors
// ----------------------------------------------------------------------------

enum TensorData {
    Bytes(Vec<u8>),
    /// All zero; written as a hole by `write` (sparse synthetic models), as zeros by `to_bytes`.
    Zeroed,
}

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ggml_type: GgmlType,
    n_bytes: u64,
    data: TensorData,
}

/// Builds a GGUF file. KV pairs and tensors are written in the order they were added.
pub struct GgufWriter {
    version: u32,
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file.
    pub fn new() -> Self {
        GgufWriter { version: 3, metadata: Vec::new(), tensors: Vec::new() }
    }

    /// Sets the header version (2 and 3 share one layout).
    pub fn version(&mut self, v: u32) -> &mut Self {
        self.version = v;
        self
    }

    /// Adds a KV pair, or replaces the value of an existing key in place.
    pub fn add_kv(&mut self, key: &str, v: Value) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = v,
            None => self.metadata.push((key.to_owned(), v)),
        }
        self
    }

    /// Removes a KV pair if present.
    pub fn remove_kv(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// Removes a tensor if present.
    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|t| t.name != name);
        self
    }

    /// Data alignment: `general.alignment` when set as a power-of-two u32, else 32.
    pub fn alignment(&self) -> u64 {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, Value::U32(a))) if a.is_power_of_two() => u64::from(*a),
            _ => DEFAULT_ALIGNMENT,
        }
    }

    fn tensor_bytes(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64> {
        let row_len = dims.first().copied().unwrap_or(1);
        let n_rows = dims.iter().skip(1).try_fold(1u64, |a, &d| a.checked_mul(d));
        ty.row_bytes(row_len).zip(n_rows).and_then(|(rb, nr)| rb.checked_mul(nr)).ok_or_else(|| Error::Tensor {
            tensor: name.into(),
            msg: format!("dims {dims:?} are not whole {ty} blocks per row or overflow"),
        })
    }

    /// Adds a tensor with its data (`bytes.len()` must be the size `dims` and `ty` imply).
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        bytes: impl Into<Vec<u8>>,
    ) -> Result<&mut Self> {
        let bytes = bytes.into();
        let n_bytes = Self::tensor_bytes(name, dims, ty)?;
        if bytes.len() as u64 != n_bytes {
            return Err(Error::Tensor {
                tensor: name.into(),
                msg: format!("{} data bytes given, dims {dims:?} as {ty} need {n_bytes}", bytes.len()),
            });
        }
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            n_bytes,
            data: TensorData::Bytes(bytes),
        });
        Ok(self)
    }

    /// Adds an all-zero tensor without holding its data (a hole in the file written by `write`).
    pub fn add_tensor_zeroed(&mut self, name: &str, dims: &[u64], ty: GgmlType) -> Result<&mut Self> {
        let n_bytes = Self::tensor_bytes(name, dims, ty)?;
        self.tensors.push(PendingTensor {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: ty,
            n_bytes,
            data: TensorData::Zeroed,
        });
        Ok(self)
    }

    /// Header, KV pairs, tensor infos and padding (the bytes before the data section), with each tensor's
    /// offset relative to the data section and the total length of the file.
    fn layout(&self) -> Result<(Encoder, Vec<u64>, u64)> {
        let align = self.alignment();
        let overflow = || Error::Gguf { path: "<writer>".into(), msg: "tensor data size overflows u64".into() };
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for t in &self.tensors {
            offsets.push(next);
            next = next.checked_add(t.n_bytes).and_then(|e| align_up(e, align)).ok_or_else(overflow)?;
        }
        let mut e = Encoder::new();
        e.header(self.version, self.tensors.len() as u64, self.metadata.len() as u64);
        for (k, v) in &self.metadata {
            e.kv(k.as_bytes(), v);
        }
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            e.tensor_info(t.name.as_bytes(), &t.dims, t.ggml_type.id(), off);
        }
        e.pad_to(align);
        // The file ends right after the last tensor's data (no trailing padding).
        let data_len = match (self.tensors.last(), offsets.last()) {
            (Some(t), Some(&off)) => off + t.n_bytes,
            _ => 0,
        };
        let total = (e.len() as u64).checked_add(data_len).ok_or_else(overflow)?;
        Ok((e, offsets, total))
    }

    /// The whole file in memory (zeroed tensors become zeros).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (e, offsets, total) = self.layout()?;
        let data_offset = e.len();
        let mut out = e.buf;
        let total = usize::try_from(total)
            .map_err(|_| Error::Gguf { path: "<writer>".into(), msg: format!("{total} bytes do not fit in memory") })?;
        out.resize(total, 0);
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            if let TensorData::Bytes(b) = &t.data {
                let start = data_offset + off as usize;
                out[start..start + b.len()].copy_from_slice(b);
            }
        }
        Ok(out)
    }

    /// Writes the file to `path`; zeroed tensors are left as holes (sparse on filesystems that support it).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e| Error::io(path, e);
        let (e, offsets, total) = self.layout()?;
        let mut f = std::fs::File::create(path).map_err(io)?;
        f.write_all(&e.buf).map_err(io)?;
        let data_offset = e.len() as u64;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            if let TensorData::Bytes(b) = &t.data {
                f.seek(SeekFrom::Start(data_offset + off)).map_err(io)?;
                f.write_all(b).map_err(io)?;
            }
        }
        f.set_len(total).map_err(io)
    }
}
