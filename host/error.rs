//! The crate's one error type, grouped by pipeline stage. Messages are lowercase and name the file, tensor,
//! key or token at fault, with the bad value and the limit it broke.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === io ===
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // === gguf ===
    #[error("gguf: {path}: {msg}")]
    Gguf { path: PathBuf, msg: String },

    // === config / model ===
    #[error("model config: {0}")]
    Config(String),
    #[error("tensor '{tensor}': {msg}")]
    Tensor { tensor: String, msg: String },

    // === quant ===
    #[error("quant: {0}")]
    Quant(String),

    // === tokenizer ===
    #[error("tokenizer: {0}")]
    Tokenizer(String),

    // === generation ===
    #[error("{0}")]
    Generate(String),

    // === backend ===
    #[error("cuda: {op}: {msg}")]
    Cuda { op: String, msg: String },
    #[error("no cuda device: {0}")]
    NoCuda(String),

    // === cli ===
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
