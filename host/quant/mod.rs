//! Quantized tensor formats on the CPU: the reference every GPU kernel is tested against.

/// Block layouts shared with the kernel crate (one definition, like ggml's `ggml-common.h`).
#[path = "../../gpu-kernels/src/blocks.rs"]
pub mod blocks;
