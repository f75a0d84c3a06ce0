//! GGUF files: reader over a memory map, value types, tensor infos, writer.

mod ggml_type;

pub use ggml_type::GgmlType;
