//! GPU kernels for the inference engine, compiled to one PTX module by `../build.rs`
//! (nightly rustc, `nvptx64-nvidia-cuda`, `-Zbuild-std=core`, `--emit=asm`, `-C target-cpu=sm_80`).
//!
//! One file per op family; each kernel's doc comment gives what it computes, its launch shape and its memory
//! traffic. The CPU twin of every kernel lives in the host crate's `backend::cpu` (or `quant` for the
//! quantized ops) under the same name.
#![no_std]
#![feature(abi_ptx, stdarch_nvptx, asm_experimental_arch)]
#![feature(stmt_expr_attributes)] // #[inline(always)] on the closures of quant::mmq
#![allow(internal_features)]
#![allow(clippy::missing_safety_doc)]

pub mod activation;
pub mod attention;
pub mod attention_paged;
pub mod blocks;
pub mod common;
pub mod elementwise;
pub mod flash_layout;
pub mod kv;
pub mod kv_layout;
pub mod norm;
pub mod rope;
pub mod sample;
pub mod quant;
pub mod sample_params;
pub mod softmax;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` aborts the kernel; nothing after it runs.
    unsafe { core::arch::nvptx::trap() }
}
