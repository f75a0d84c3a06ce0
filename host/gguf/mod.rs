//! GGUF files: reader over a memory map, value types, tensor infos, writer.

mod ggml_type;
mod known_keys;
mod reader;
mod tiny;
mod value;
mod writer;

pub use ggml_type::GgmlType;
pub use known_keys::{parse_byte_token, MAX_TOKENS, TOKEN_TYPE_BYTE};
pub use reader::{align_up, GgufFile, TensorInfo};
pub use reader::{
    DEFAULT_ALIGNMENT, HEADER_SIZE, MAGIC, MAX_ALIGNMENT, MAX_ARRAY_DEPTH, MAX_ARRAY_LEN, MAX_BOXED_ARRAY_LEN,
    MAX_DIMS, MAX_KEY_LEN, MAX_STRING_LEN, MAX_TENSOR_NAME_LEN, MAX_VERSION, MIN_ALIGNMENT, MIN_VERSION,
};
pub use tiny::{tiny_model, TinySpec};
pub use value::{Array, Value, ValueType};
pub use writer::{Encoder, GgufWriter};
