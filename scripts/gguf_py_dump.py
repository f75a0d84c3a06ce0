#!/usr/bin/env python3
"""Dump gguf-py's view of a GGUF file as JSON: the reference that `tests/gguf_inspect.rs` compares our reader
and `host inspect --json` against.

Usage: scripts/gguf_py_dump.py MODEL.gguf OUT.json   (needs `pip install gguf numpy`; development only)

For every metadata key: its type (and element type and length for arrays), the value itself when it is a
scalar or a string under 256 bytes, and an FNV-1a 64 digest of the value re-encoded from gguf-py's decoded
contents in GGUF's own little-endian encoding (type tag, then the value; arrays: element tag, u64 length, the
elements). The Rust test encodes our parsed `Value` the same way, so equal digests mean equal values.
For every tensor: name, ggml type name, shape in GGUF order, offset relative to the data section, bytes.
"""

import json
import struct
import sys

from gguf import GGUFReader, GGUFValueType

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3

SCALAR_FMT = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}

# our ValueType::name()
TYPE_NAME = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "string",
    GGUFValueType.ARRAY: "array",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def encode(types, value) -> bytes:
    """GGUF encoding of `value` without its leading type tag; `types` is gguf-py's type list for the field."""
    t = types[0]
    if t == GGUFValueType.STRING:
        b = value.encode("utf-8")
        return struct.pack("<Q", len(b)) + b
    if t == GGUFValueType.ARRAY:
        out = struct.pack("<IQ", int(types[1]), len(value))
        return out + b"".join(encode(types[1:], v) for v in value)
    return struct.pack(SCALAR_FMT[t], value)


def dump(path: str) -> dict:
    r = GGUFReader(path)
    metadata = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):  # gguf-py's pseudo-fields for the header
            continue
        types = field.types
        value = field.contents()
        entry = {"key": key, "type": TYPE_NAME[types[0]]}
        if types[0] == GGUFValueType.ARRAY:
            entry["elem_type"] = TYPE_NAME[types[1]]
            entry["len"] = len(value)
        elif types[0] != GGUFValueType.STRING or len(value.encode("utf-8")) < 256:
            entry["value"] = value
        encoded = struct.pack("<I", int(types[0])) + encode(types, value)
        entry["fnv64"] = f"{fnv1a64(encoded):016x}"
        metadata.append(entry)
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "offset": int(t.data_offset) - int(r.data_offset),
            "bytes": int(t.n_bytes),
        }
        for t in r.tensors
    ]
    return {
        "source": "gguf-py " + __import__("importlib.metadata").metadata.version("gguf"),
        "version": int(r.fields["GGUF.version"].contents()),
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    with open(sys.argv[2], "w") as f:
        json.dump(dump(sys.argv[1]), f, indent=1, ensure_ascii=False)
        f.write("\n")
