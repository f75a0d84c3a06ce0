//! CUDA backend: loads the PTX that `build.rs` compiled from `gpu-kernels/` and launches its kernels through
//! `cudarc` (the driver library is opened at run time, so the binary starts on machines without one).
//!
//! Each launcher owns its kernel's geometry and checks the lengths of its arguments before launching; errors name
//! the kernel and the launch.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};

use crate::kv_cache::CacheType;
use crate::quant::blocks::BlockQ8_0;
use crate::{Error, Result};

/// The PTX module built from `gpu-kernels/` (empty when built without the kernels).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));
/// The same kernels for sm_90 and later, with programmatic dependent launch (`common::pdl_enter`) kept.
pub const PTX_SM90: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels_sm90.ptx"));

/// Whether this binary carries GPU kernels.
pub const HAS_KERNELS: bool = cfg!(has_gpu_kernels);

/// One CUDA device as `host devices` lists it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub total_mem: usize,
    pub cc_major: i32,
    pub cc_minor: i32,
}

/// Why CUDA cannot be used, in plain words, or `Ok` when the driver, a device and the kernels are all present.
pub fn availability() -> std::result::Result<(), String> {
    if !HAS_KERNELS {
        return Err("this binary was built without GPU kernels (see the build warning about the nightly toolchain)".into());
    }
    device_count().map(|_| ())
}

fn device_count() -> std::result::Result<usize, String> {
    // SAFETY: only probes whether the driver library can be opened.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err("the NVIDIA driver library (libcuda.so) was not found".into());
    }
    match CudaContext::device_count() {
        Ok(0) => Err("the driver reports no CUDA device".into()),
        Ok(n) => Ok(n as usize),
        Err(e) => Err(format!("the driver failed to initialise: {e}")),
    }
}

/// All CUDA devices, or why there are none.
pub fn list_devices() -> std::result::Result<Vec<DeviceInfo>, String> {
    let n = device_count()?;
    let mut out = Vec::with_capacity(n);
    for ordinal in 0..n {
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("device {ordinal}: {e}"))?;
        let (cc_major, cc_minor) = ctx.compute_capability().map_err(|e| e.to_string())?;
        out.push(DeviceInfo {
            ordinal,
            name: ctx.name().map_err(|e| e.to_string())?,
            total_mem: ctx.total_mem().map_err(|e| e.to_string())?,
            cc_major,
            cc_minor,
        });
    }
    if !HAS_KERNELS {
        eprintln!("note: this binary was built without GPU kernels, so `--device cuda` is unavailable");
    }
    Ok(out)
}

/// A CUDA context with the kernel module loaded and one stream on which everything is launched in order.
pub struct Cuda {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    module: Arc<CudaModule>,
    funcs: std::sync::Mutex<HashMap<&'static str, CudaFunction>>,
    /// Launch with programmatic stream serialization (compute capability 9.0 and later, unless `HOST_NO_PDL` is
    /// set): a kernel's blocks start launching while the previous kernel finishes, and wait in `pdl_enter`.
    pub pdl: bool,
    /// Streaming multiprocessors of the device (how many blocks fill it).
    pub n_sm: usize,
    /// The split-K partial sums of `matmul_q8` (`cuda_mmq::SPLIT_SCRATCH` floats), allocated with the context so
    /// that captured graphs keep a fixed address.
    pub(crate) split_scratch: CudaSlice<f32>,
    /// One counter per tile of a split `matmul_q8` launch (`cuda_mmq::SPLIT_TILES`): its blocks count themselves
    /// there, and the last one, which adds the splits up, sets it back to zero.
    pub(crate) split_done: CudaSlice<u32>,
    /// Whether `matmul_q8` may split its columns over more blocks (on unless `HOST_GPU_OFF=splitk`).
    pub(crate) split_k: std::sync::atomic::AtomicBool,
    /// Whether a split `matmul_q8` of up to 8 tokens adds its splits up inside its own launch rather than in a
    /// `sum_splits_f32` launch (on unless `HOST_GPU_OFF=fixup`).
    pub(crate) split_fixup: std::sync::atomic::AtomicBool,
    /// Whether `matmul_q8` takes the thin tile for up to 32 tokens (on unless `HOST_GPU_OFF=thin`).
    pub(crate) thin_mmq: std::sync::atomic::AtomicBool,
}

/// A kernel's arguments, collected as the 8-byte values the driver copies from (4-byte scalars in the low half).
pub struct Launch<'a> {
    gpu: &'a Cuda,
    f: CudaFunction,
    vals: Vec<u64>,
}

/// What a kernel argument can be: a device buffer (passed as its address) or a scalar.
pub trait KernelArg {
    fn value(&self, gpu: &Cuda) -> u64;
}

impl<T> KernelArg for CudaSlice<T> {
    fn value(&self, gpu: &Cuda) -> u64 {
        gpu.ptr(self, 0)
    }
}

macro_rules! scalar_arg {
    ($($t:ty => $e:expr;)*) => {$(
        impl KernelArg for $t {
            fn value(&self, _: &Cuda) -> u64 {
                #[allow(clippy::redundant_closure_call)]
                ($e)(*self)
            }
        }
    )*};
}

scalar_arg! {
    u64 => |v: u64| v;
    u32 => |v: u32| v as u64;
    i32 => |v: i32| v as u32 as u64;
    f32 => |v: f32| v.to_bits() as u64;
}

impl Launch<'_> {
    pub fn arg<A: KernelArg + ?Sized>(&mut self, a: &A) -> &mut Self {
        self.vals.push(a.value(self.gpu));
        self
    }

    /// Launch on the context's stream.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters in number, order and type, and every buffer must hold
    /// what the kernel reads and writes.
    pub unsafe fn launch(&mut self, cfg: LaunchConfig) -> std::result::Result<(), cudarc::driver::DriverError> {
        use cudarc::driver::sys;
        self.gpu.ctx.bind_to_thread()?;
        let mut ptrs: Vec<*mut std::ffi::c_void> = self.vals.iter_mut().map(|v| v as *mut u64 as *mut _).collect();
        let mut attr: sys::CUlaunchAttribute = std::mem::zeroed();
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let lc = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.gpu.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: self.gpu.pdl as u32,
        };
        sys::cuLaunchKernelEx(&lc, self.f.cu_function(), ptrs.as_mut_ptr(), std::ptr::null_mut()).result()
    }
}

/// Map a driver error to ours, naming the operation.
pub fn cuda_err(op: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let op = op.into();
    move |e| Error::Cuda { op, msg: e.to_string() }
}

impl Cuda {
    /// Open device `ordinal` and load the kernels.
    pub fn new(ordinal: usize) -> Result<Self> {
        availability().map_err(Error::NoCuda)?;
        let ctx = CudaContext::new(ordinal).map_err(cuda_err(format!("open device {ordinal}")))?;
        let (major, _) = ctx.compute_capability().map_err(cuda_err("query compute capability"))?;
        let pdl = major >= 9 && std::env::var_os("HOST_NO_PDL").is_none();
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(if major >= 9 { PTX_SM90 } else { PTX }))
            .map_err(cuda_err("load the kernel module (PTX JIT)"))?;
        // One stream carries everything in order, so cudarc's per-buffer event tracking (for multi-stream
        // programs) is pure overhead and would also break CUDA-graph capture.
        // SAFETY: called before any buffer of this context exists.
        unsafe { ctx.disable_event_tracking() };
        // A stream of its own, not the legacy default stream, which cannot be captured into a graph.
        let stream = ctx.new_stream().map_err(cuda_err("create stream"))?;
        let n_sm = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(cuda_err("query the multiprocessor count"))? as usize;
        let split_scratch = stream
            .alloc_zeros(super::cuda_mmq::SPLIT_SCRATCH)
            .map_err(cuda_err("allocate the split-K scratch"))?;
        let split_done = stream
            .alloc_zeros(super::cuda_mmq::SPLIT_TILES)
            .map_err(cuda_err("allocate the split-K tile counters"))?;
        let split_k = (!gpu_off("splitk")).into();
        let thin_mmq = (!gpu_off("thin")).into();
        let split_fixup = (!gpu_off("fixup")).into();
        Ok(Cuda { ctx, stream, module, funcs: Default::default(), pdl, n_sm, split_scratch, split_done, split_k,
            split_fixup, thin_mmq })
    }

    /// Let `matmul_q8` split its columns over more blocks when its tiles would leave SMs idle (the default), or
    /// not (for comparisons).
    pub fn set_split_k(&self, on: bool) {
        self.split_k.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The kernel `name`, loaded once.
    pub fn func(&self, name: &'static str) -> Result<CudaFunction> {
        let mut funcs = self.funcs.lock().expect("kernel table lock");
        if let Some(f) = funcs.get(name) {
            return Ok(f.clone());
        }
        let f = self.module.load_function(name).map_err(cuda_err(format!("load kernel {name}")))?;
        funcs.insert(name, f.clone());
        Ok(f)
    }

    /// Copy a host slice to a new device buffer.
    pub fn upload<T: cudarc::driver::DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(cuda_err(format!("upload {} bytes", std::mem::size_of_val(host))))
    }

    /// Copy a device buffer back to the host (synchronises the stream).
    pub fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(dev).map_err(cuda_err("download"))
    }

    /// A zeroed device buffer of `n` elements.
    pub fn zeros<T: cudarc::driver::DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros(n).map_err(cuda_err(format!("allocate {} bytes", n * std::mem::size_of::<T>())))
    }

    /// An event recorded now on the stream, with timing enabled (for `elapsed_ms` between two of them).
    pub fn timed_event(&self) -> Result<cudarc::driver::CudaEvent> {
        use cudarc::driver::sys::CUevent_flags;
        self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(cuda_err("record event"))
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(cuda_err("synchronize"))
    }
}

fn check_len(kernel: &str, what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::Cuda { op: kernel.into(), msg: format!("{what} has {got} elements, expected {want}") });
    }
    Ok(())
}

// ----------------------------------------------------------------------------
// Launchers: one per kernel, geometry and argument checks here and nowhere else
// ----------------------------------------------------------------------------

/// Threads per block of the row kernels (`rmsnorm_f32`, `softmax_rows_f32`).
const ROW_BLOCK: u32 = 256;
/// Threads per block and elements per thread of the element-wise kernels.
const EW_BLOCK: u32 = 256;
const EW_PER_THREAD: u32 = 4;

impl Cuda {
    /// out = rmsnorm(x) * w over rows of `dim`; twin of `cpu::rmsnorm`.
    pub fn rmsnorm(&self, out: &mut CudaSlice<f32>, x: &CudaSlice<f32>, w: &CudaSlice<f32>, dim: usize, eps: f32) -> Result<()> {
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(Error::Cuda { op: "rmsnorm_f32".into(), msg: format!("dim {dim} does not divide {}", x.len()) });
        }
        check_len("rmsnorm_f32", "out", out.len(), x.len())?;
        self.rmsnorm_rows(out, x, w, x.len() / dim, dim, eps)
    }

    fn elementwise(&self, kernel: &'static str, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<()> {
        check_len(kernel, "b", b.len(), a.len())?;
        check_len(kernel, "out", out.len(), a.len())?;
        let n = a.len() as u32;
        let per_block = EW_BLOCK * EW_PER_THREAD;
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(per_block).max(1), 1, 1), block_dim: (EW_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let f = self.func(kernel)?;
        let mut l = self.args(&f);
        l.arg(out).arg(a).arg(b).arg(&n);
        // SAFETY: argument order and types match the kernel; lengths checked above.
        unsafe { l.launch(cfg) }.map_err(cuda_err(format!("launch {kernel} n={n}")))?;
        Ok(())
    }

    /// out = a + b; twin of `cpu::add`.
    pub fn add(&self, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<()> {
        self.elementwise("add_f32", out, a, b)
    }

    /// out = a * b; twin of `cpu::mul`.
    pub fn mul(&self, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<()> {
        self.elementwise("mul_f32", out, a, b)
    }

    /// Softmax of each row of `n` in place; twin of `cpu::softmax_rows`.
    pub fn softmax_rows(&self, x: &mut CudaSlice<f32>, n: usize) -> Result<()> {
        const K: &str = "softmax_rows_f32";
        if n == 0 || !x.len().is_multiple_of(n) {
            return Err(Error::Cuda { op: K.into(), msg: format!("row length {n} does not divide {}", x.len()) });
        }
        let rows = x.len() / n;
        let f = self.func(K)?;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (ROW_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let n = n as u32;
        let mut b = self.args(&f);
        b.arg(x).arg(&n);
        // SAFETY: argument order and types match the kernel; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} rows={rows} n={n}")))?;
        Ok(())
    }
}

// ----------------------------------------------------------------------------
// Forward-pass ops. Buffers may be longer than the op needs (activations are sized for the largest batch):
// each launcher takes explicit counts and checks that every buffer holds at least that much.
// ----------------------------------------------------------------------------

/// Threads per block of the one-element-per-thread kernels.
const EW1_BLOCK: u32 = 256;
/// Keys per attention split (must equal `gpu_kernels::attention::CHUNK`).
pub const ATTN_CHUNK: usize = 256;
/// Largest head dimension the attention kernel holds in registers (8 values per lane).
pub const ATTN_MAX_HEAD_DIM: usize = 256;

/// Whether `HOST_GPU_OFF` (a comma-separated list of kernel paths to leave out, for comparisons) names `path`.
pub(crate) fn gpu_off(path: &str) -> bool {
    std::env::var("HOST_GPU_OFF").is_ok_and(|v| v.split(',').any(|p| p.trim() == path))
}

/// The decode-attention kernel (`attention_decode_g{1,2,4,8}`, `attention_decode_q8_0_g{1,2,4,8}`: a block per KV
/// head and chunk serving the query group) for one token of shape `s` over a cache of `ty`, when one fits: head
/// dims powers of two from 32 to 256, groups of up to 8 heads whose q and v rows fit its shared memory (group x
/// head dim <= 1024).
pub(crate) fn decode_kernel(s: &AttnShape, ty: CacheType) -> Option<&'static str> {
    let grp = (s.n_heads / s.n_kv_heads).next_power_of_two();
    let max_dim = if grp * 256 <= 1024 { 256 } else { 1024 / grp.max(1) };
    let fits = |d: usize| d.is_power_of_two() && (32..=max_dim).contains(&d);
    if s.n_tok != 1 || !fits(s.head_dim) || !fits(s.head_dim_v) {
        return None;
    }
    Some(match (ty, grp) {
        (CacheType::F16, 1) => "attention_decode_g1",
        (CacheType::F16, 2) => "attention_decode_g2",
        (CacheType::F16, 4) => "attention_decode_g4",
        (CacheType::F16, 8) => "attention_decode_g8",
        (CacheType::Q8_0, 1) => "attention_decode_q8_0_g1",
        (CacheType::Q8_0, 2) => "attention_decode_q8_0_g2",
        (CacheType::Q8_0, 4) => "attention_decode_q8_0_g4",
        (CacheType::Q8_0, 8) => "attention_decode_q8_0_g8",
        _ => return None,
    })
}

/// The device layout of the KV cache, shared with the kernel crate.
#[path = "../../gpu-kernels/src/kv_layout.rs"]
pub mod kv_layout;

/// Bytes of one device cache row (one position) of `width` elements of `ty` (`kv_layout`).
pub fn kv_row_bytes(ty: CacheType, width: usize) -> usize {
    match ty {
        CacheType::F16 => 2 * width,
        CacheType::F32 => 4 * width,
        CacheType::Q8_0 => kv_layout::q8_0_row_bytes(width as u32) as usize,
    }
}

/// Whether the GPU keeps a cache of `ty` for heads of `head_dim` and `head_dim_v`: f16 always, q8_0 when both
/// are multiples of 32 (a block must not straddle two heads), f32 never. The error names the cache type and the
/// way out.
pub fn check_cache_type(ty: CacheType, head_dim: usize, head_dim_v: usize) -> Result<()> {
    match ty {
        CacheType::F16 => Ok(()),
        CacheType::Q8_0 if head_dim.is_multiple_of(32) && head_dim_v.is_multiple_of(32) => Ok(()),
        CacheType::Q8_0 => Err(Error::Usage(format!(
            "--cache-type q8_0 needs head dimensions that are multiples of 32 (blocks of 32 per head); this model's \
             are {head_dim} (keys) and {head_dim_v} (values): use --cache-type f16"
        ))),
        CacheType::F32 => Err(Error::Usage(
            "the GPU keeps its KV cache as f16 or q8_0, not f32: use --cache-type f16|q8_0, or --device cpu".into(),
        )),
    }
}

/// One layer's keys or values in device memory as the launchers take them (`kv_layout`): a plain f16 buffer
/// (`CudaSlice<u16>`, `width` halves per position) or a [`DevKv`] of either type.
pub trait KvDev {
    fn cache_type(&self) -> CacheType;
    fn addr(&self, gpu: &Cuda) -> u64;
    fn bytes(&self) -> usize;
}

impl KvDev for CudaSlice<u16> {
    fn cache_type(&self) -> CacheType {
        CacheType::F16
    }
    fn addr(&self, gpu: &Cuda) -> u64 {
        gpu.ptr(self, 0)
    }
    fn bytes(&self) -> usize {
        2 * self.len()
    }
}

/// A device KV cache buffer (one layer's keys or values) of the element type chosen at load.
pub enum DevKv {
    F16(CudaSlice<u16>),
    /// Rows of `kv_layout::q8_0_row_bytes(width)` bytes.
    Q8_0(CudaSlice<u8>),
}

impl DevKv {
    /// Zeroed room for `positions` rows of `width` elements of `ty` (f16, or q8_0 with `width` a multiple of 32).
    pub fn new(gpu: &Cuda, ty: CacheType, positions: usize, width: usize) -> Result<DevKv> {
        match ty {
            CacheType::F16 => Ok(DevKv::F16(gpu.zeros(positions * width)?)),
            CacheType::Q8_0 if width.is_multiple_of(32) => {
                Ok(DevKv::Q8_0(gpu.zeros(positions * kv_row_bytes(ty, width))?))
            }
            _ => Err(Error::Usage(format!("no GPU KV cache of {} for rows of {width}", ty.name()))),
        }
    }

    /// A q8_0 cache holding `blocks`, rows of `width / 32` blocks as the CPU's cache stores them, in the device
    /// layout.
    pub fn upload_q8_0(gpu: &Cuda, blocks: &[BlockQ8_0], width: usize) -> Result<DevKv> {
        Ok(DevKv::Q8_0(gpu.upload(&q8_0_to_device(blocks, width)?)?))
    }

    /// The blocks of every row of a q8_0 cache of `width`-element rows, as the CPU's cache stores them.
    pub fn download_q8_0(&self, gpu: &Cuda, width: usize) -> Result<Vec<BlockQ8_0>> {
        match self {
            DevKv::Q8_0(buf) => q8_0_from_device(&gpu.download(buf)?, width),
            DevKv::F16(_) => Err(Error::Usage("download_q8_0 of an f16 cache".into())),
        }
    }
}

/// Rows of `width / 32` q8_0 blocks (the CPU cache's form) in the device layout of `kv_layout`.
pub fn q8_0_to_device(blocks: &[BlockQ8_0], width: usize) -> Result<Vec<u8>> {
    let (nb, rb) = (width / 32, kv_row_bytes(CacheType::Q8_0, width));
    if width == 0 || !width.is_multiple_of(32) || !blocks.len().is_multiple_of(nb) {
        return Err(Error::Usage(format!("q8_0 cache: {} blocks are not whole rows of {width}", blocks.len())));
    }
    let mut bytes = vec![0u8; blocks.len() / nb * rb];
    for (row, dst) in blocks.chunks_exact(nb).zip(bytes.chunks_exact_mut(rb)) {
        for (b, blk) in row.iter().enumerate() {
            for (d, &q) in dst[32 * b..][..32].iter_mut().zip(&blk.qs) {
                *d = q as u8;
            }
            dst[width + 2 * b..][..2].copy_from_slice(&blk.d.to_le_bytes());
        }
    }
    Ok(bytes)
}

/// The inverse of `q8_0_to_device`: the blocks of every whole row in `bytes`.
pub fn q8_0_from_device(bytes: &[u8], width: usize) -> Result<Vec<BlockQ8_0>> {
    let (nb, rb) = (width / 32, kv_row_bytes(CacheType::Q8_0, width));
    if width == 0 || !width.is_multiple_of(32) || !bytes.len().is_multiple_of(rb) {
        return Err(Error::Usage(format!("q8_0 cache: {} bytes are not whole rows of {width}", bytes.len())));
    }
    let mut out = Vec::with_capacity(bytes.len() / rb * nb);
    for row in bytes.chunks_exact(rb) {
        for b in 0..nb {
            let mut qs = [0i8; 32];
            for (q, &x) in qs.iter_mut().zip(&row[32 * b..][..32]) {
                *q = x as i8;
            }
            out.push(BlockQ8_0 { d: u16::from_le_bytes([row[width + 2 * b], row[width + 2 * b + 1]]), qs });
        }
    }
    Ok(out)
}

impl KvDev for DevKv {
    fn cache_type(&self) -> CacheType {
        match self {
            DevKv::F16(_) => CacheType::F16,
            DevKv::Q8_0(_) => CacheType::Q8_0,
        }
    }
    fn addr(&self, gpu: &Cuda) -> u64 {
        match self {
            DevKv::F16(b) => gpu.ptr(b, 0),
            DevKv::Q8_0(b) => gpu.ptr(b, 0),
        }
    }
    fn bytes(&self) -> usize {
        match self {
            DevKv::F16(b) => 2 * b.len(),
            DevKv::Q8_0(b) => b.len(),
        }
    }
}

/// The cache type of a K/V pair, which must agree, and the kernel of `names` (f16, q8_0) for it.
fn kv_kernel(k: &impl KvDev, v: &impl KvDev, names: [&'static str; 2]) -> Result<(CacheType, &'static str)> {
    let ty = k.cache_type();
    if v.cache_type() != ty {
        return Err(Error::Cuda { op: names[0].into(), msg: format!(
            "keys cached as {} but values as {}", ty.name(), v.cache_type().name()) });
    }
    match ty {
        CacheType::F16 => Ok((ty, names[0])),
        CacheType::Q8_0 => Ok((ty, names[1])),
        CacheType::F32 => Err(Error::Cuda { op: names[0].into(), msg: "no f32 cache on the GPU".into() }),
    }
}

/// `cache` must hold at least `n_pos` rows of `width` elements (a q8_0 cache: whole blocks).
fn check_rows(kernel: &str, what: &str, cache: &impl KvDev, n_pos: usize, width: usize) -> Result<()> {
    let ty = cache.cache_type();
    if ty == CacheType::Q8_0 && !width.is_multiple_of(32) {
        let msg = format!("{what}: q8_0 rows of {width} are not whole blocks of 32");
        return Err(Error::Cuda { op: kernel.into(), msg });
    }
    let need = n_pos * kv_row_bytes(ty, width);
    if cache.bytes() < need {
        let msg = format!("{what} holds {} bytes, needs {need}", cache.bytes());
        return Err(Error::Cuda { op: kernel.into(), msg });
    }
    Ok(())
}

/// Shapes of one attention call (the GPU twin of `cpu::AttnParams`, without the positions, which live on the
/// device).
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_tok: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub head_dim_v: usize,
    pub scale: f32,
    /// Sliding window (keys at positions > pos - window), 0 = none.
    pub window: usize,
}

impl AttnShape {
    /// Floats of split partials needed for `n_splits` splits.
    pub fn part_len(&self, n_splits: usize) -> usize {
        self.n_tok * self.n_heads * n_splits * (self.head_dim_v + 2)
    }
}

/// Device scratch of `Cuda::attention_rows`: the split partials and one arrival counter per (query, head), which
/// the kernel leaves at zero after every launch.
pub struct AttnScratch {
    pub part: CudaSlice<f32>,
    pub counters: CudaSlice<u32>,
}

impl AttnScratch {
    /// Room for calls of up to `shape.n_tok` queries and `n_splits` splits.
    pub fn new(gpu: &Cuda, shape: &AttnShape, n_splits: usize) -> Result<AttnScratch> {
        Ok(AttnScratch { part: gpu.zeros(shape.part_len(n_splits))?, counters: gpu.zeros(shape.n_tok * shape.n_heads)? })
    }

    /// Device bytes for `AttnScratch::new` of the same arguments.
    pub fn bytes(shape: &AttnShape, n_splits: usize) -> usize {
        (shape.part_len(n_splits) + shape.n_tok * shape.n_heads) * 4
    }
}

/// `buf` must hold at least `need` elements.
pub(crate) fn check_min(kernel: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Cuda { op: kernel.into(), msg: format!("{what} holds {have} elements, needs {need}") });
    }
    Ok(())
}

pub(crate) fn grid_1d(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: ((n as u32).div_ceil(EW1_BLOCK).max(1), 1, 1), block_dim: (EW1_BLOCK, 1, 1), shared_mem_bytes: 0 }
}

pub(crate) fn rows_cfg(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Blocks of 256 threads: `rows` rows of `items` items each, a row's items spread over ceil(items / 256) blocks
/// (grid y), one item per thread.
pub(crate) fn spread_rows_cfg(rows: usize, items: usize) -> LaunchConfig {
    let blocks = items.div_ceil(256).max(1) as u32;
    LaunchConfig { grid_dim: (rows as u32, blocks, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// A device buffer as a launcher sees it: an address and the number of elements from there. Lets one
/// allocation hold several operands (the q, k, v of a fused projection) and lets in-place kernels alias.
pub trait Dev<T> {
    fn addr(&self, gpu: &Cuda) -> u64;
    fn elems(&self) -> usize;
}

impl<T> Dev<T> for CudaSlice<T> {
    fn addr(&self, gpu: &Cuda) -> u64 {
        gpu.ptr(self, 0)
    }
    fn elems(&self) -> usize {
        self.len()
    }
}

/// The elements of a buffer from index `.1` on.
pub struct At<'a, T>(pub &'a CudaSlice<T>, pub usize);

impl<T> Dev<T> for At<'_, T> {
    fn addr(&self, gpu: &Cuda) -> u64 {
        gpu.ptr(self.0, self.1.min(self.0.len()))
    }
    fn elems(&self) -> usize {
        self.0.len().saturating_sub(self.1)
    }
}

impl Cuda {
    /// The raw device address of `s` plus `offset` elements, for launches that alias or offset buffers.
    pub fn ptr<T>(&self, s: &CudaSlice<T>, offset: usize) -> u64 {
        use cudarc::driver::DevicePtr;
        let (p, _sync) = s.device_ptr(&self.stream);
        p + (offset * std::mem::size_of::<T>()) as u64
    }

    /// Launch `kernel` with `cfg` and the already-pushed arguments, naming the launch in errors.
    /// Start collecting the arguments of a launch of `f`.
    pub fn args(&self, f: &CudaFunction) -> Launch<'_> {
        Launch { gpu: self, f: f.clone(), vals: Vec::with_capacity(16) }
    }

    pub(crate) fn go(&self, kernel: &str, mut b: Launch, cfg: LaunchConfig, detail: impl FnOnce() -> String) -> Result<()> {
        // SAFETY: every launcher pushes the kernel's arguments in order with matching types and checks sizes
        // before calling this.
        unsafe { b.launch(cfg) }.map_err(|e| Error::Cuda { op: format!("launch {kernel} {}", detail()), msg: e.to_string() })
    }

    /// out[r] = rmsnorm(x[r]) * w for rows 0..n_rows of `dim`; twin of `cpu::rmsnorm`.
    pub fn rmsnorm_rows(&self, out: &mut CudaSlice<f32>, x: &CudaSlice<f32>, w: &CudaSlice<f32>, n_rows: usize, dim: usize,
                        eps: f32) -> Result<()> {
        check_min("rmsnorm_f32", "out", out.len(), n_rows * dim)?;
        self.rmsnorm_raw(self.ptr(out, 0), x, w, n_rows, dim, eps)
    }

    /// x[r] = rmsnorm(x[r]) * w in place; twin of `cpu::rmsnorm_inplace`.
    pub fn rmsnorm_inplace_rows(&self, x: &impl Dev<f32>, w: &CudaSlice<f32>, n_rows: usize, dim: usize, eps: f32) -> Result<()> {
        self.rmsnorm_raw(x.addr(self), x, w, n_rows, dim, eps)
    }

    fn rmsnorm_raw(&self, out: u64, x: &impl Dev<f32>, w: &CudaSlice<f32>, n_rows: usize, dim: usize, eps: f32) -> Result<()> {
        const K: &str = "rmsnorm_f32";
        if dim == 0 || !dim.is_multiple_of(4) {
            return Err(Error::Cuda { op: K.into(), msg: format!("dim {dim} must be a non-zero multiple of 4") });
        }
        check_min(K, "x", x.elems(), n_rows * dim)?;
        check_min(K, "w", w.len(), dim)?;
        let f = self.func(K)?;
        let (dim32, xp) = (dim as u32, x.addr(self));
        let mut b = self.args(&f);
        b.arg(&out).arg(&xp).arg(w).arg(&dim32).arg(&eps);
        self.go(K, b, rows_cfg(n_rows, ROW_BLOCK), || format!("rows={n_rows} dim={dim}"))
    }

    /// Rotate the heads of n_tok rows of x (positions pos0.., pos0 on the device) by the (ctx, rope_dim / 2)
    /// cos/sin tables; twin of `cpu::rope`. `pos_host` is the same position, for the bounds check.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_rows(&self, x: &impl Dev<f32>, n_tok: usize, n_heads: usize, head_dim: usize, rope_dim: usize,
                     neox: bool, cos: &CudaSlice<f32>, sin: &CudaSlice<f32>, pos0: &CudaSlice<u32>, pos_host: usize) -> Result<()> {
        const K: &str = "rope_f32";
        check_min(K, "x", x.elems(), n_tok * n_heads * head_dim)?;
        let half = rope_dim / 2;
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) || cos.len() != sin.len() || (pos_host + n_tok) * half > cos.len() {
            return Err(Error::Cuda { op: K.into(), msg: format!(
                "rope_dim {rope_dim} (head_dim {head_dim}) or positions {pos_host}+{n_tok} outside the {}-entry table", cos.len()) });
        }
        let f = self.func(K)?;
        let (nh, hd, rd, nx, xp) = (n_heads as u32, head_dim as u32, rope_dim as u32, neox as u32, x.addr(self));
        let mut b = self.args(&f);
        b.arg(&xp).arg(cos).arg(sin).arg(pos0).arg(&nh).arg(&hd).arg(&rd).arg(&nx);
        self.go(K, b, rows_cfg(n_tok, EW1_BLOCK), || format!("n_tok={n_tok} n_heads={n_heads}"))
    }

    /// One decode token's q/k head norms (when given), RoPE of q and k, and store of k and v into the caches
    /// (f16 or q8_0) at position pos0, in one launch on the fused projection `qkv` = [q | k | v]; bit-identical to
    /// `rmsnorm_inplace_rows` per head, `rope_rows` and `kv_store_rows`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_store_decode(&self, qkv: &CudaSlice<f32>, k_cache: &mut impl KvDev, v_cache: &mut impl KvDev,
                             s: &AttnShape, rope_dim: usize, neox: bool, cos: &CudaSlice<f32>, sin: &CudaSlice<f32>,
                             pos0: &CudaSlice<u32>, pos_host: usize, q_norm: Option<&CudaSlice<f32>>,
                             k_norm: Option<&CudaSlice<f32>>, eps: f32) -> Result<()> {
        let (_, kname) = kv_kernel(k_cache, v_cache, ["rope_store_f16", "rope_store_q8_0"])?;
        let (hd, hdv, nh, nkv) = (s.head_dim, s.head_dim_v, s.n_heads, s.n_kv_heads);
        if !hd.is_multiple_of(4) || hd > 1024 || rope_dim > hd || !rope_dim.is_multiple_of(2) || cos.len() != sin.len()
            || (pos_host + 1) * (rope_dim / 2) > cos.len() {
            return Err(Error::Cuda { op: kname.into(), msg: format!(
                "head_dim {hd}, rope_dim {rope_dim} or position {pos_host} outside the {}-entry table", cos.len()) });
        }
        check_min(kname, "qkv", qkv.len(), nh * hd + nkv * (hd + hdv))?;
        if k_cache.cache_type() == CacheType::Q8_0 && (!hd.is_multiple_of(32) || !hdv.is_multiple_of(32)) {
            let msg = format!("q8_0 cache: head dims {hd}/{hdv} must be multiples of 32");
            return Err(Error::Cuda { op: kname.into(), msg });
        }
        check_rows(kname, "k cache", k_cache, pos_host + 1, nkv * hd)?;
        check_rows(kname, "v cache", v_cache, pos_host + 1, nkv * hdv)?;
        for w in [q_norm, k_norm].into_iter().flatten() {
            check_min(kname, "head norm weights", w.len(), hd)?;
        }
        let opt = |w: Option<&CudaSlice<f32>>| w.map_or(0u64, |w| self.ptr(w, 0));
        let (qn, knw) = (opt(q_norm), opt(k_norm));
        let (nh32, nkv32, hd32, hdv32, rd, nx) = (nh as u32, nkv as u32, hd as u32, hdv as u32, rope_dim as u32, neox as u32);
        let (kp, vp) = (k_cache.addr(self), v_cache.addr(self));
        let f = self.func(kname)?;
        let mut b = self.args(&f);
        b.arg(qkv).arg(&kp).arg(&vp).arg(cos).arg(sin).arg(pos0).arg(&nh32).arg(&nkv32).arg(&hd32).arg(&hdv32)
            .arg(&rd).arg(&nx).arg(&qn).arg(&knw).arg(&eps);
        self.go(kname, b, rows_cfg(nh + nkv + 1, ROW_BLOCK), || format!("{s:?}"))
    }

    /// Store n_tok rows of `row_len` floats into the cache (f16, or q8_0 blocks with `row_len` a multiple of 32)
    /// at positions pos0.. (pos0 on the device).
    pub fn kv_store_rows(&self, cache: &mut impl KvDev, x: &impl Dev<f32>, n_tok: usize, row_len: usize,
                         pos0: &CudaSlice<u32>, pos_host: usize) -> Result<()> {
        let (_, kname) = kv_kernel(cache, cache, ["kv_store_f16", "kv_store_q8_0"])?;
        check_min(kname, "x", x.elems(), n_tok * row_len)?;
        check_rows(kname, "cache", cache, pos_host + n_tok, row_len)?;
        let f = self.func(kname)?;
        let (rl, xp, cp) = (row_len as u32, x.addr(self), cache.addr(self));
        let mut b = self.args(&f);
        b.arg(&cp).arg(&xp).arg(pos0).arg(&rl);
        self.go(kname, b, rows_cfg(n_tok, EW1_BLOCK), || format!("n_tok={n_tok} row_len={row_len}"))
    }

    /// Causal GQA attention of q (n_tok rows at positions pos0..) over the caches (f16 or q8_0); twin of
    /// `cpu::attention` (f16) and `cpu::attention_q8_0_rows` (q8_0). More than one query over an f16 cache goes to
    /// the tensor-core flash attention (`attention_flash`) when the shape has a kernel and a grid worth it
    /// (`cuda_flash::flash_preferred`) and `HOST_GPU_OFF` does not name `fa`; everything else to `attention_split`.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_rows(&self, out: &mut CudaSlice<f32>, q: &impl Dev<f32>, k: &impl KvDev, v: &impl KvDev,
                          scratch: &mut AttnScratch, s: &AttnShape, n_splits: usize, pos0: &CudaSlice<u32>,
                          pos_host: usize) -> Result<()> {
        use super::cuda_flash::{flash_heads_per_block, flash_preferred};
        if k.cache_type() == CacheType::F16 && flash_preferred(s, pos_host) && q.addr(self).is_multiple_of(16)
            && !gpu_off("fa") {
            return self.attention_flash(out, q, k, v, s, flash_heads_per_block(s), pos0, pos_host);
        }
        self.attention_split(out, q, k, v, scratch, s, n_splits, pos0, pos_host)
    }

    /// `attention_rows` on the CUDA cores: in `n_splits` chunks of `ATTN_CHUNK` keys combined by online softmax,
    /// in one launch (for one query the flash-decoding kernels where the shape fits them). `scratch` holds the
    /// split partials and the arrival counters; `n_splits * ATTN_CHUNK` must cover every key position used.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_split(&self, out: &mut CudaSlice<f32>, q: &impl Dev<f32>, k: &impl KvDev, v: &impl KvDev,
                           scratch: &mut AttnScratch, s: &AttnShape, n_splits: usize, pos0: &CudaSlice<u32>,
                           pos_host: usize) -> Result<()> {
        let (ty, kname) = kv_kernel(k, v, ["attention_f16", "attention_q8_0"])?;
        let bad = |msg: String| Err(Error::Cuda { op: kname.into(), msg });
        if !s.head_dim.is_multiple_of(32) || !s.head_dim_v.is_multiple_of(32) || s.head_dim > ATTN_MAX_HEAD_DIM
            || s.head_dim_v > ATTN_MAX_HEAD_DIM {
            return bad(format!("head dims {}/{} must be multiples of 32 up to {ATTN_MAX_HEAD_DIM}", s.head_dim, s.head_dim_v));
        }
        if s.n_kv_heads == 0 || !s.n_heads.is_multiple_of(s.n_kv_heads) {
            return bad(format!("{} heads not a multiple of {} kv heads", s.n_heads, s.n_kv_heads));
        }
        let n_keys = pos_host + s.n_tok;
        if n_splits == 0 || n_splits * ATTN_CHUNK < n_keys {
            return bad(format!("{n_splits} splits of {ATTN_CHUNK} cannot cover {n_keys} keys"));
        }
        check_rows(kname, "k cache", k, n_keys, s.n_kv_heads * s.head_dim)?;
        check_rows(kname, "v cache", v, n_keys, s.n_kv_heads * s.head_dim_v)?;
        check_min(kname, "q", q.elems(), s.n_tok * s.n_heads * s.head_dim)?;
        check_min(kname, "out", out.len(), s.n_tok * s.n_heads * s.head_dim_v)?;
        check_min(kname, "partials", scratch.part.len(), s.part_len(n_splits))?;
        check_min(kname, "counters", scratch.counters.len(), s.n_tok * s.n_heads)?;
        let (nh, nkv, hd, hdv, w, ns) =
            (s.n_heads as u32, s.n_kv_heads as u32, s.head_dim as u32, s.head_dim_v as u32, s.window as u32, n_splits as u32);
        let (kernel, cfg) = match decode_kernel(s, ty).filter(|_| !gpu_off("flashdec")) {
            Some(dk) => (dk, LaunchConfig { grid_dim: (nkv, ns, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }),
            None => (kname, LaunchConfig { grid_dim: (nh, s.n_tok as u32, ns), block_dim: (128, 1, 1), shared_mem_bytes: 0 }),
        };
        let f = self.func(kernel)?;
        let mut b = self.args(&f);
        let (qp, kp, vp) = (q.addr(self), k.addr(self), v.addr(self));
        b.arg(out).arg(&scratch.part).arg(&scratch.counters).arg(&qp).arg(&kp).arg(&vp).arg(pos0).arg(&nh).arg(&nkv).arg(&hd)
            .arg(&hdv).arg(&s.scale).arg(&w).arg(&ns);
        self.go(kernel, b, cfg, || format!("{s:?} splits={n_splits}"))
    }

    fn gated(&self, kernel: &'static str, out: &mut CudaSlice<f32>, gate: &impl Dev<f32>, up: &impl Dev<f32>, n: usize) -> Result<()> {
        check_min(kernel, "gate", gate.elems(), n)?;
        check_min(kernel, "up", up.elems(), n)?;
        check_min(kernel, "out", out.len(), n)?;
        let (n32, gp, up) = (n as u32, gate.addr(self), up.addr(self));
        let f = self.func(kernel)?;
        let mut b = self.args(&f);
        b.arg(out).arg(&gp).arg(&up).arg(&n32);
        self.go(kernel, b, grid_1d(n), || format!("n={n}"))
    }

    /// out = silu(gate) * up over n elements; twin of `cpu::swiglu`.
    pub fn swiglu_rows(&self, out: &mut CudaSlice<f32>, gate: &impl Dev<f32>, up: &impl Dev<f32>, n: usize) -> Result<()> {
        self.gated("swiglu_f32", out, gate, up, n)
    }

    /// out = gelu_tanh(gate) * up over n elements; twin of `cpu::gelu_tanh_mul`.
    pub fn gelu_tanh_mul_rows(&self, out: &mut CudaSlice<f32>, gate: &impl Dev<f32>, up: &impl Dev<f32>, n: usize) -> Result<()> {
        self.gated("gelu_tanh_mul_f32", out, gate, up, n)
    }

    /// x[r, :] += b for rows 0..n_rows of b.len(); twin of `cpu::add_bias`.
    pub fn add_bias_rows(&self, x: &mut CudaSlice<f32>, b: &CudaSlice<f32>, n_rows: usize) -> Result<()> {
        const K: &str = "add_bias_f32";
        check_min(K, "x", x.len(), n_rows * b.len())?;
        let (rows, n) = (n_rows as u32, b.len() as u32);
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(b).arg(&rows).arg(&n);
        self.go(K, l, grid_1d(n_rows * b.len()), || format!("rows={rows} n={n}"))
    }

    /// x[..n] += y[..n]; twin of `cpu::add_inplace`.
    pub fn add_inplace_rows(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, n: usize) -> Result<()> {
        const K: &str = "add_inplace_f32";
        check_min(K, "x", x.len(), n)?;
        check_min(K, "y", y.len(), n)?;
        let n32 = n as u32;
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(y).arg(&n32);
        self.go(K, l, grid_1d(n), || format!("n={n}"))
    }

    /// x[..n] *= s; twin of `cpu::scale`.
    pub fn scale_rows(&self, x: &mut CudaSlice<f32>, s: f32, n: usize) -> Result<()> {
        const K: &str = "scale_f32";
        check_min(K, "x", x.len(), n)?;
        let n32 = n as u32;
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(&s).arg(&n32);
        self.go(K, l, grid_1d(n), || format!("n={n}"))
    }

    /// x[..n] = cap * tanh(x / cap); twin of `cpu::softcap`.
    pub fn softcap_rows(&self, x: &mut CudaSlice<f32>, cap: f32, n: usize) -> Result<()> {
        const K: &str = "softcap_f32";
        check_min(K, "x", x.len(), n)?;
        let n32 = n as u32;
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(&cap).arg(&n32);
        self.go(K, l, grid_1d(n), || format!("n={n}"))
    }

    /// dst[..n] = src[offset..offset + n] (device to device, on the stream).
    pub fn copy_rows(&self, dst: &mut CudaSlice<f32>, src: &CudaSlice<f32>, offset: usize, n: usize) -> Result<()> {
        check_min("copy", "src", src.len(), offset + n)?;
        check_min("copy", "dst", dst.len(), n)?;
        let s = src.slice(offset..offset + n);
        let mut d = dst.slice_mut(..n);
        self.stream.memcpy_dtod(&s, &mut d).map_err(cuda_err(format!("copy {n} floats")))
    }

    /// out[0] = argmax(x[..n]) (lowest id on ties); also into `next_token[0]` when given.
    pub fn argmax(&self, x: &CudaSlice<f32>, n: usize, out: &mut CudaSlice<u32>, next_token: Option<&mut CudaSlice<u32>>) -> Result<()> {
        const K: &str = "argmax_f32";
        check_min(K, "x", x.len(), n.max(1))?;
        check_min(K, "out", out.len(), 1)?;
        let n32 = n as u32;
        let next = next_token.map_or(0, |t| self.ptr(t, 0));
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(&n32).arg(out).arg(&next);
        self.go(K, l, rows_cfg(1, 1024), || format!("n={n}"))
    }

    /// out[r] = argmax(x[r * n..(r + 1) * n]) for rows 0..rows (lowest id on ties), one block per row.
    pub fn argmax_rows(&self, x: &CudaSlice<f32>, n: usize, rows: usize, out: &mut CudaSlice<u32>) -> Result<()> {
        const K: &str = "argmax_f32";
        check_min(K, "x", x.len(), (n * rows).max(1))?;
        check_min(K, "out", out.len(), rows)?;
        let (n32, next) = (n as u32, 0u64);
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(x).arg(&n32).arg(out).arg(&next);
        self.go(K, l, rows_cfg(rows, 1024), || format!("n={n} rows={rows}"))
    }

    /// pos[0] += 1 on the device (the last launch of a captured decode step).
    pub fn advance_pos(&self, pos: &mut CudaSlice<u32>) -> Result<()> {
        const K: &str = "advance_pos";
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(pos);
        self.go(K, l, rows_cfg(1, 1), String::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::ggml_avx2::q8_0_block_avx;

    #[test]
    fn q8_0_rows_are_16_byte_aligned_and_hold_the_blocks() {
        // quants, then one f16 scale per block, padded to 16 bytes: SmolLM2's 192 (6 blocks) -> 192 + 12 -> 208
        assert_eq!(kv_row_bytes(CacheType::Q8_0, 192), 208);
        assert_eq!(kv_row_bytes(CacheType::Q8_0, 64), 80);
        assert_eq!(kv_row_bytes(CacheType::Q8_0, 4096), 4352); // 7B: exactly ggml's 34 bytes per block
        assert_eq!(kv_row_bytes(CacheType::F16, 192), 384);
        for w in (32..=8192).step_by(32) {
            let rb = kv_row_bytes(CacheType::Q8_0, w);
            assert!(rb.is_multiple_of(16) && rb >= w / 32 * 34 && rb < w / 32 * 34 + 16, "width {w}: {rb}");
        }
    }

    #[test]
    fn q8_0_device_layout_round_trips() {
        let width = 96;
        let x: Vec<f32> = (0..2 * width).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let blocks: Vec<BlockQ8_0> = x.chunks_exact(32).map(q8_0_block_avx).collect();
        let bytes = q8_0_to_device(&blocks, width).unwrap();
        assert_eq!(bytes.len(), 2 * kv_row_bytes(CacheType::Q8_0, width));
        // row 1, block 2: quants at 32 * 2 of the row, its scale at width + 2 * 2
        let (row1, b) = (&bytes[kv_row_bytes(CacheType::Q8_0, width)..], &blocks[3 + 2]);
        assert_eq!(row1[64..96].iter().map(|&q| q as i8).collect::<Vec<_>>(), b.qs);
        assert_eq!(u16::from_le_bytes([row1[width + 4], row1[width + 5]]), b.d);
        let back = q8_0_from_device(&bytes, width).unwrap();
        assert!(back.iter().zip(&blocks).all(|(a, b)| a.d == b.d && a.qs == b.qs) && back.len() == blocks.len());
        assert!(q8_0_to_device(&blocks[..5], width).is_err(), "5 blocks are not whole rows of 3");
    }

    #[test]
    fn the_gpu_cache_types_are_checked_by_name() {
        assert!(check_cache_type(CacheType::F16, 48, 48).is_ok());
        assert!(check_cache_type(CacheType::Q8_0, 64, 128).is_ok());
        let e = check_cache_type(CacheType::Q8_0, 48, 48).unwrap_err().to_string();
        assert!(e.contains("q8_0") && e.contains("48") && e.contains("--cache-type f16"), "{e}");
        let e = check_cache_type(CacheType::F32, 64, 64).unwrap_err().to_string();
        assert!(e.contains("f32") && e.contains("--device cpu"), "{e}");
    }
}
