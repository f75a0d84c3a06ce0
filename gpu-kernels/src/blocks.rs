//! Quantized block layouts: byte-exact `#[repr(C)]` mirrors of ggml's `ggml-common.h`.
//!
//! This file is the single definition of every block, compiled into both crates: the kernel crate uses it as
//! `mod blocks`, the host includes it with `#[path = "../gpu-kernels/src/blocks.rs"]`. Halves (`f16`) are kept as
//! `u16` bit patterns so the file needs no dependency. Every size is asserted at compile time on both sides.

/// Elements per block of the legacy formats (Q4_0 .. Q8_1).
pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;
/// Elements per super-block of the K-quants.
pub const QK_K: usize = 256;
/// Bytes of packed 6-bit scales and mins in Q4_K / Q5_K (and of the 6-bit scales of Q3_K).
pub const K_SCALE_SIZE: usize = 12;

/// x = (q - 8) * d; low nibbles hold elements 0..16, high nibbles 16..32.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ4_0 {
    pub d: u16,                 // f16 delta
    pub qs: [u8; QK4_0 / 2],    // nibbles
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

/// x = q * d + m.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ4_1 {
    pub d: u16,                 // f16 delta
    pub m: u16,                 // f16 min
    pub qs: [u8; QK4_1 / 2],    // nibbles
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

/// x = (q - 16) * d; the fifth bit of element j is bit j of `qh`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ5_0 {
    pub d: u16,                 // f16 delta
    pub qh: [u8; 4],            // 5th bits
    pub qs: [u8; QK5_0 / 2],    // low nibbles
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

/// x = q * d + m; the fifth bit of element j is bit j of `qh`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ5_1 {
    pub d: u16,                 // f16 delta
    pub m: u16,                 // f16 min
    pub qh: [u8; 4],            // 5th bits
    pub qs: [u8; QK5_1 / 2],    // low nibbles
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

/// x = q * d.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ8_0 {
    pub d: u16,                 // f16 delta
    pub qs: [i8; QK8_0],        // quants
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

/// x = q * d; `s` = d * sum(qs), used by dot products with Q4_1 / Q5_1.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ8_1 {
    pub d: u16,                 // f16 delta
    pub s: u16,                 // f16 d * sum(qs)
    pub qs: [i8; QK8_1],        // quants
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);

/// 2-bit quants in 16 sub-blocks of 16; x = d * (scale & 15) * q - dmin * (scale >> 4).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16], // 4-bit scale (low) and min (high) per sub-block
    pub qs: [u8; QK_K / 4],      // 2-bit quants
    pub d: u16,                  // f16 super-block scale for scales
    pub dmin: u16,               // f16 super-block scale for mins
}
const _: () = assert!(core::mem::size_of::<BlockQ2K>() == 84);

/// 3-bit quants (2 low bits in `qs`, high bit in `hmask`), 16 sub-blocks with 6-bit signed scales.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],       // high bit of each quant
    pub qs: [u8; QK_K / 4],          // low 2 bits
    pub scales: [u8; K_SCALE_SIZE],  // 16 packed 6-bit scales
    pub d: u16,                      // f16 super-block scale
}
const _: () = assert!(core::mem::size_of::<BlockQ3K>() == 110);

/// 4-bit quants in 8 sub-blocks of 32 with 6-bit scales and mins; x = d * sc * q - dmin * m.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ4K {
    pub d: u16,                      // f16 super-block scale for scales
    pub dmin: u16,                   // f16 super-block scale for mins
    pub scales: [u8; K_SCALE_SIZE],  // 8 scales and 8 mins, 6 bits each
    pub qs: [u8; QK_K / 2],          // 4-bit quants
}
const _: () = assert!(core::mem::size_of::<BlockQ4K>() == 144);

/// 5-bit quants: as Q4_K plus a fifth bit per element in `qh`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ5K {
    pub d: u16,                      // f16 super-block scale for scales
    pub dmin: u16,                   // f16 super-block scale for mins
    pub scales: [u8; K_SCALE_SIZE],  // 8 scales and 8 mins, 6 bits each
    pub qh: [u8; QK_K / 8],          // 5th bits
    pub qs: [u8; QK_K / 2],          // low nibbles
}
const _: () = assert!(core::mem::size_of::<BlockQ5K>() == 176);

/// 6-bit quants (4 low bits in `ql`, 2 high in `qh`), 16 sub-blocks with 8-bit signed scales; x = d * sc * (q - 32).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],          // low 4 bits
    pub qh: [u8; QK_K / 4],          // high 2 bits
    pub scales: [i8; QK_K / 16],     // 8-bit scales
    pub d: u16,                      // f16 super-block scale
}
const _: () = assert!(core::mem::size_of::<BlockQ6K>() == 210);

/// 8-bit quants with an f32 scale and per-16 sums; the activation format of K-quant dot products.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlockQ8K {
    pub d: f32,                      // delta
    pub qs: [i8; QK_K],              // quants
    pub bsums: [i16; QK_K / 16],     // sum of quants in groups of 16
}
const _: () = assert!(core::mem::size_of::<BlockQ8K>() == 292);
