//! A GGUF LLM inference engine. Modules in data-flow order:
//! file -> `gguf` -> `config` -> weights (`quant`) -> `model` forward on a `backend` (with `kv_cache`)
//! -> logits -> `sampler` -> token id -> `tokenizer` decode -> text; `generate` runs the loop, `server` the HTTP
//! server, `cli` the commands.

pub mod error;
pub mod gguf;
pub mod config;
pub mod weights;
pub mod quant;
pub mod tokenizer;
pub mod backend;
pub mod kv_cache;
pub mod kv_paged;
pub mod layer;
pub mod model;
pub mod batch;
pub mod sampler;
pub mod generate;
pub mod synth;
pub mod rng;
pub mod progress;
pub mod server;
pub mod cli;

pub use error::{Error, Result};
