//! Quantized tensors on the GPU: dequantize, mat-vec (decode) and mat-mul (prefill) for every GGUF type the
//! engine computes, straight from the file's blocks. CPU twins: `host::quant::{dequantize_row, matvec, matmul}`.
//!
//! One decoder per type (`types.rs`) feeds three generic kernel bodies (`dequant.rs`, `matvec.rs`,
//! `matmul.rs`); `#[no_mangle]` wrappers instantiate each body per type. A type's block is cut into *units*:
//! `RUNS` runs of 4 consecutive elements that one thread decodes together from a few 32-bit words, so that the
//! matching activations are 16-byte vector loads. Every value is `a * q + b`, with `q` a small integer decoded to
//! an exact f32 and `(a, b)` the scale (and min) of the value's scale group.

pub mod geometry;
pub mod types;
pub mod dequant;
pub mod embed;
pub mod matvec;
pub mod matmul;
pub mod q8;
pub mod q8_layout;
pub mod mmq;
pub mod mmq_layout;

use core::arch::asm;

// ----------------------------------------------------------------------------
// Device primitives of the quantized kernels (the tensor-core ones also serve `attention::attention_flash`)
// ----------------------------------------------------------------------------

/// a * b + c with one rounding.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("fma.rn.f32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c,
                  options(pure, nomem, nostack)) };
    r
}

/// Where `field_bits` puts a field found at bit `sh` (width of `mask`): at bit `sh`, or 16 bits lower when it would
/// reach the exponent (bit 23). The field then reads as a multiple of 2^s.
pub const fn field_exp(sh: u32, mask: u32) -> u32 {
    if (mask << sh) < 0x0080_0000 {
        sh
    } else {
        sh - 16
    }
}

/// 2^23 + ((w >> sh) & mask) * 2^s as f32 bits (s = `field_exp`), without an int-to-float conversion (those issue
/// at a quarter of the FMA rate): the field is OR-ed into the mantissa of 2^23 (`magic` = 0x4B00_0000, passed
/// in a register so that the AND and the OR fuse into one LOP3 with the mask as immediate). Subtracting 2^23 is
/// exact.
#[inline(always)]
pub fn field_bits(w: u32, sh: u32, mask: u32, magic: u32) -> f32 {
    let s = field_exp(sh, mask);
    let v = if s == sh { w } else { w >> 16 };
    f32::from_bits((v & (mask << s)) | magic)
}

/// The field `(w >> sh) & mask`, minus `off`, as an exact f32: one FMA rescales `field_bits` by 2^-s and removes
/// 2^23 and the offset. `sh`, `mask` and `off` are constants after inlining.
#[inline(always)]
pub fn field(w: u32, sh: u32, mask: u32, off: f32) -> f32 {
    let s = field_exp(sh, mask);
    let scale = f32::from_bits((127 - s) << 23); // 2^-s
    fma(field_bits(w, sh, mask, 0x4B00_0000), scale, -(8_388_608.0 * scale + off))
}

/// f16 bits (low 16 bits of `h`) to f32.
#[inline(always)]
pub fn f16(h: u32) -> f32 {
    let r: f32;
    let h = h as u16;
    // SAFETY: pure conversion.
    unsafe { asm!("cvt.f32.f16 {r}, {h};", r = out(reg32) r, h = in(reg16) h, options(pure, nomem, nostack)) };
    r
}

/// `f(0); f(1); ..; f(N - 1)` fully unrolled (N <= 16), so that register arrays indexed by `i` stay in registers
/// (LLVM does not always unroll loops with large bodies, and a runtime index sends an array to local memory).
#[inline(always)]
pub fn unroll<const N: usize>(mut f: impl FnMut(usize)) {
    const { assert!(N <= 16) };
    if N > 0 { f(0) }
    if N > 1 { f(1) }
    if N > 2 { f(2) }
    if N > 3 { f(3) }
    if N > 4 { f(4) }
    if N > 5 { f(5) }
    if N > 6 { f(6) }
    if N > 7 { f(7) }
    if N > 8 { f(8) }
    if N > 9 { f(9) }
    if N > 10 { f(10) }
    if N > 11 { f(11) }
    if N > 12 { f(12) }
    if N > 13 { f(13) }
    if N > 14 { f(14) }
    if N > 15 { f(15) }
}

/// `core::array::from_fn` with the calls unrolled as by `unroll`: every element is written at a constant index,
/// so the array can stay in registers (`from_fn`'s loop sends an array of large elements to local memory).
#[inline(always)]
pub fn unrolled_array<T, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut a = core::mem::MaybeUninit::<[T; N]>::uninit();
    let p = a.as_mut_ptr() as *mut T;
    // SAFETY: `unroll` calls the closure once for each i < N, so every element is written before assume_init.
    unroll::<N>(|i| unsafe { p.add(i).write(f(i)) });
    unsafe { a.assume_init() }
}

/// Sum of four products.
#[inline(always)]
pub fn dot4(q: [f32; 4], x: [f32; 4]) -> f32 {
    fma(q[3], x[3], fma(q[2], x[2], fma(q[1], x[1], q[0] * x[0])))
}

#[inline(always)]
pub fn sum4(x: [f32; 4]) -> f32 {
    (x[0] + x[1]) + (x[2] + x[3])
}

// ----------------------------------------------------------------------------
// Byte sources: the same decoder reads a block from shared memory (mat-vec) or global memory (the others)
// ----------------------------------------------------------------------------

/// Where a block's bytes are read from. Offsets are bytes from the block start.
pub trait Mem: Copy {
    /// The same source moved `off` bytes on.
    fn at(self, off: u32) -> Self;
    unsafe fn u8(self, off: u32) -> u32;
    /// `off` must make the address 2-aligned.
    unsafe fn u16(self, off: u32) -> u32;
    /// `off` must make the address 4-aligned.
    unsafe fn u32a(self, off: u32) -> u32;
    /// Little-endian 32 bits at a 2-aligned address.
    unsafe fn u32u(self, off: u32) -> u32;
}

/// A 32-bit shared-memory address.
#[derive(Clone, Copy)]
pub struct Shared(pub u32);

/// A global-memory pointer to read-only data.
#[derive(Clone, Copy)]
pub struct Global(pub *const u8);

impl Mem for Shared {
    #[inline(always)]
    fn at(self, off: u32) -> Self {
        Shared(self.0 + off)
    }
    #[inline(always)]
    unsafe fn u8(self, off: u32) -> u32 {
        let r: u32;
        asm!("ld.shared.u8 {r}, [{a}];", r = out(reg32) r, a = in(reg32) self.0 + off, options(pure, readonly, nostack));
        r
    }
    #[inline(always)]
    unsafe fn u16(self, off: u32) -> u32 {
        let r: u32;
        asm!("ld.shared.u16 {r}, [{a}];", r = out(reg32) r, a = in(reg32) self.0 + off, options(pure, readonly, nostack));
        r
    }
    #[inline(always)]
    unsafe fn u32a(self, off: u32) -> u32 {
        lds_u32(self.0 + off)
    }
    #[inline(always)]
    unsafe fn u32u(self, off: u32) -> u32 {
        self.u16(off) | (self.u16(off + 2) << 16)
    }
}

impl Mem for Global {
    #[inline(always)]
    fn at(self, off: u32) -> Self {
        // SAFETY: callers stay inside the tensor.
        Global(unsafe { self.0.add(off as usize) })
    }
    #[inline(always)]
    unsafe fn u8(self, off: u32) -> u32 {
        let r: u32;
        asm!("ld.global.nc.u8 {r}, [{p}];", r = out(reg32) r, p = in(reg64) self.0.add(off as usize),
             options(pure, readonly, nostack));
        r
    }
    #[inline(always)]
    unsafe fn u16(self, off: u32) -> u32 {
        let r: u32;
        asm!("ld.global.nc.u16 {r}, [{p}];", r = out(reg32) r, p = in(reg64) self.0.add(off as usize),
             options(pure, readonly, nostack));
        r
    }
    #[inline(always)]
    unsafe fn u32a(self, off: u32) -> u32 {
        let r: u32;
        asm!("ld.global.nc.u32 {r}, [{p}];", r = out(reg32) r, p = in(reg64) self.0.add(off as usize),
             options(pure, readonly, nostack));
        r
    }
    #[inline(always)]
    unsafe fn u32u(self, off: u32) -> u32 {
        self.u16(off) | (self.u16(off + 2) << 16)
    }
}

#[inline(always)]
pub unsafe fn lds_u32(a: u32) -> u32 {
    let r: u32;
    asm!("ld.shared.u32 {r}, [{a}];", r = out(reg32) r, a = in(reg32) a, options(pure, readonly, nostack));
    r
}

#[inline(always)]
pub unsafe fn lds_f32x2(a: u32) -> (f32, f32) {
    let (x, y): (f32, f32);
    asm!("ld.shared.v2.f32 {{{x}, {y}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, a = in(reg32) a,
         options(pure, readonly, nostack));
    (x, y)
}

#[inline(always)]
pub unsafe fn lds_f32x4(a: u32) -> [f32; 4] {
    let (x, y, z, w): (f32, f32, f32, f32);
    asm!("ld.shared.v4.f32 {{{x}, {y}, {z}, {w}}}, [{a}];", x = out(reg32) x, y = out(reg32) y, z = out(reg32) z,
         w = out(reg32) w, a = in(reg32) a, options(pure, readonly, nostack));
    [x, y, z, w]
}

#[inline(always)]
pub unsafe fn sts_f32(a: u32, v: f32) {
    asm!("st.shared.f32 [{a}], {v};", a = in(reg32) a, v = in(reg32) v, options(nostack));
}

#[inline(always)]
pub unsafe fn sts_f32x2(a: u32, x: f32, y: f32) {
    asm!("st.shared.v2.f32 [{a}], {{{x}, {y}}};", a = in(reg32) a, x = in(reg32) x, y = in(reg32) y, options(nostack));
}

/// Four 8x8 matrices of 16-bit elements (here: 8 rows of 16 bytes each) from shared memory; lane l gives the
/// address of row l % 8 of matrix l / 8 and receives word l % 4 of row l / 4 of each matrix.
#[inline(always)]
pub unsafe fn ldsm_x4(a: u32) -> [u32; 4] {
    let (r0, r1, r2, r3): (u32, u32, u32, u32);
    asm!("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{a}];", r0 = out(reg32) r0,
         r1 = out(reg32) r1, r2 = out(reg32) r2, r3 = out(reg32) r3, a = in(reg32) a, options(pure, readonly, nostack));
    [r0, r1, r2, r3]
}

/// `ldsm_x4` transposed: lane l still gives the address of row l % 8 of matrix l / 8, and receives, as the two
/// halves of each word, elements (row 2 (l % 4), column l / 4) and (row 2 (l % 4) + 1, column l / 4) of each
/// matrix: the B fragment of `mma.m16n8k16` from a row-major (k, n) tile.
#[inline(always)]
pub unsafe fn ldsm_x4_trans(a: u32) -> [u32; 4] {
    let (r0, r1, r2, r3): (u32, u32, u32, u32);
    asm!("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{r0}, {r1}, {r2}, {r3}}}, [{a}];", r0 = out(reg32) r0,
         r1 = out(reg32) r1, r2 = out(reg32) r2, r3 = out(reg32) r3, a = in(reg32) a, options(pure, readonly, nostack));
    [r0, r1, r2, r3]
}

#[inline(always)]
pub unsafe fn sts_u4(a: u32, v: [u32; 4]) {
    asm!("st.shared.v4.u32 [{a}], {{{x}, {y}, {z}, {w}}};", a = in(reg32) a, x = in(reg32) v[0], y = in(reg32) v[1],
         z = in(reg32) v[2], w = in(reg32) v[3], options(nostack));
}

/// 16-byte asynchronous copy global -> shared of `n` (1..=16) bytes, zero-filling the rest. Both addresses
/// 16-byte aligned.
#[inline(always)]
pub unsafe fn cp_async16(dst: u32, src: *const u8, n: u32) {
    asm!("cp.async.cg.shared.global [{d}], [{s}], 16, {n};", d = in(reg32) dst, s = in(reg64) src, n = in(reg32) n,
         options(nostack));
}

/// 16-byte asynchronous copy global -> shared; both addresses 16-byte aligned.
#[inline(always)]
pub unsafe fn cp_async16_full(dst: u32, src: *const u8) {
    asm!("cp.async.cg.shared.global [{d}], [{s}], 16;", d = in(reg32) dst, s = in(reg64) src, options(nostack));
}

#[inline(always)]
pub unsafe fn cp_async_commit() {
    asm!("cp.async.commit_group;", options(nostack));
}

/// Wait until at most `n` (0..=3) of this thread's most recent copy groups are still in flight.
#[inline(always)]
pub unsafe fn cp_async_wait(n: u32) {
    match n {
        0 => asm!("cp.async.wait_group 0;", options(nostack)),
        1 => asm!("cp.async.wait_group 1;", options(nostack)),
        2 => asm!("cp.async.wait_group 2;", options(nostack)),
        _ => asm!("cp.async.wait_group 3;", options(nostack)),
    }
}

/// Warp barrier; also orders the shared-memory accesses of the warp's lanes.
#[inline(always)]
pub unsafe fn sync_warp() {
    asm!("bar.warp.sync -1;", options(nostack));
}

/// 16-byte store of 4 floats to global memory; `p` 16-byte aligned.
#[inline(always)]
pub unsafe fn stg_f32x4(p: *mut f32, v: [f32; 4]) {
    asm!("st.global.v4.f32 [{p}], {{{a}, {b}, {c}, {d}}};", p = in(reg64) p, a = in(reg32) v[0], b = in(reg32) v[1],
         c = in(reg32) v[2], d = in(reg32) v[3], options(nostack));
}

/// Launch bounds for the enclosing kernel: at most `$threads` threads per block and at least `$blocks` resident
/// blocks per SM, so ptxas keeps registers within 65536 / ($threads * $blocks). rustc has no `__launch_bounds__`;
/// this leaves a marker comment that `build.rs` moves into the entry's PTX header (`.maxntid`, `.minnctapersm`).
#[macro_export]
macro_rules! launch_bounds {
    ($threads:expr, $blocks:expr) => {
        // SAFETY: a PTX comment.
        unsafe { core::arch::asm!("// @launch_bounds {t} {b}", t = const $threads, b = const $blocks, options(nomem, nostack)) }
    };
}

/// A block-shared byte array of `$n` bytes (16-aligned), as a 32-bit shared address. Use once per kernel.
#[macro_export]
macro_rules! shared_array {
    ($name:literal, $n:expr) => {{
        let p: u32;
        // SAFETY: declares a shared array local to this asm scope and returns its address.
        unsafe {
            core::arch::asm!("{{", concat!(".shared .align 16 .b8 ", $name, "[{n}];"), concat!("mov.u32 {p}, ", $name, ";"),
                             "}}", n = const $n, p = out(reg32) p)
        };
        p
    }};
}

// ----------------------------------------------------------------------------
// The per-type decoder contract
// ----------------------------------------------------------------------------

/// One quantized type. A block of `BS` elements in `TS` bytes is cut into `UPB` units; unit `j` holds `RUNS`
/// runs of 4 consecutive elements starting at `run_start(j, k)`. Units are numbered so that consecutive units
/// cover consecutive ranges of `4 * RUNS * n` elements (the mat-mul kernel relies on it).
///
/// A quant type gives, per unit, one 32-bit word per run whose 4 bytes hold the run's 4 quants: element i of run
/// k is `(words[k] >> (FIELDS[k].0 + 8 i)) & FIELDS[k].1`, and its value is `a * (that - OFF) + b` with `(a, b)`
/// the scale group's scale and min. Plain float types override `unit` instead.
pub trait QType {
    const BS: u32;
    const TS: u32;
    const UPB: u32;
    const RUNS: u32;
    /// Scale groups per block; more than 1 means the mat-vec decodes them into a per-step table first.
    const NSUB: u32;
    /// Plain float type: values are the decoded numbers themselves (`a = 1`, `b = 0`), blocks are 8 elements,
    /// and rows may end with a tail of fewer than 8 elements read through `elem`.
    const PLAIN: bool = false;
    /// Scale groups carry a min (`b != 0`).
    const HAS_MIN: bool = false;
    /// (shift of the first quant, mask) of each run's word.
    const FIELDS: [(u32, u32); 4] = [(0, 0); 4];
    /// Offset subtracted from every quant.
    const OFF: f32 = 0.0;

    /// First element (within the block) of run `k` of unit `j`.
    fn run_start(j: u32, k: u32) -> u32;
    /// Scale group of run `k` of unit `j`.
    fn run_sub(j: u32, k: u32) -> u32;
    /// The words of unit `j` (quant types).
    unsafe fn words<M: Mem>(_b: M, _j: u32) -> [u32; 4] {
        [0; 4]
    }
    /// Scale group `s` of the block: value = a * q + b.
    unsafe fn scale<M: Mem>(b: M, s: u32) -> (f32, f32);
    /// The quants of unit `j` (q - OFF, exact), or the values of a plain type, 4 per run (runs past `RUNS` unused).
    #[inline(always)]
    unsafe fn unit<M: Mem>(b: M, j: u32) -> [[f32; 4]; 4] {
        let w = Self::words(b, j);
        let mut r = [[0.0; 4]; 4];
        unroll::<4>(|k| {
            if (k as u32) < Self::RUNS {
                let (sh, mask) = Self::FIELDS[k];
                unroll::<4>(|i| r[k][i] = field(w[k], sh + 8 * i as u32, mask, Self::OFF));
            }
        });
        r
    }
    /// Element `i` of a plain type, `b` pointing at element 0.
    unsafe fn elem<M: Mem>(_b: M, _i: u32) -> f32 {
        0.0
    }
}
