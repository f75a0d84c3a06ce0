//! CUDA backend: loads the PTX that `build.rs` compiled from `gpu-kernels/` and launches its kernels through
//! `cudarc` (the driver library is opened at run time, so the binary starts on machines without one).
//!
//! Each launcher owns its kernel's geometry and checks the lengths of its arguments before launching; errors name
//! the kernel and the launch.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig};

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
        Ok(Cuda { ctx, stream, module, funcs: Default::default(), pdl })
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

/// The decode-attention kernel (`attention_decode_g{1,2,4,8}`: a block per KV head and chunk serving the query
/// group) for one token of shape `s`, when one fits: head dims powers of two from 32 to 256, groups of up to 8
/// heads whose q and v rows fit its shared memory (group x head dim <= 1024).
fn decode_kernel(s: &AttnShape) -> Option<&'static str> {
    let grp = (s.n_heads / s.n_kv_heads).next_power_of_two();
    let max_dim = if grp * 256 <= 1024 { 256 } else { 1024 / grp.max(1) };
    let fits = |d: usize| d.is_power_of_two() && (32..=max_dim).contains(&d);
    if s.n_tok != 1 || !fits(s.head_dim) || !fits(s.head_dim_v) {
        return None;
    }
    Some(match grp {
        1 => "attention_decode_g1",
        2 => "attention_decode_g2",
        4 => "attention_decode_g4",
        8 => "attention_decode_g8",
        _ => return None,
    })
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
fn check_min(kernel: &str, what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Cuda { op: kernel.into(), msg: format!("{what} holds {have} elements, needs {need}") });
    }
    Ok(())
}

fn grid_1d(n: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: ((n as u32).div_ceil(EW1_BLOCK).max(1), 1, 1), block_dim: (EW1_BLOCK, 1, 1), shared_mem_bytes: 0 }
}

fn rows_cfg(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
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

    fn go(&self, kernel: &str, mut b: Launch, cfg: LaunchConfig, detail: impl FnOnce() -> String) -> Result<()> {
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

    /// One decode token's q/k head norms (when given), RoPE of q and k, and store of k and v into the f16 caches
    /// at position pos0, in one launch on the fused projection `qkv` = [q | k | v]; bit-identical to
    /// `rmsnorm_inplace_rows` per head, `rope_rows` and `kv_store_rows`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_store_decode(&self, qkv: &CudaSlice<f32>, k_cache: &mut CudaSlice<u16>, v_cache: &mut CudaSlice<u16>,
                             s: &AttnShape, rope_dim: usize, neox: bool, cos: &CudaSlice<f32>, sin: &CudaSlice<f32>,
                             pos0: &CudaSlice<u32>, pos_host: usize, q_norm: Option<&CudaSlice<f32>>,
                             k_norm: Option<&CudaSlice<f32>>, eps: f32) -> Result<()> {
        const K: &str = "rope_store_f16";
        let (hd, hdv, nh, nkv) = (s.head_dim, s.head_dim_v, s.n_heads, s.n_kv_heads);
        if !hd.is_multiple_of(4) || hd > 1024 || rope_dim > hd || !rope_dim.is_multiple_of(2) || cos.len() != sin.len()
            || (pos_host + 1) * (rope_dim / 2) > cos.len() {
            return Err(Error::Cuda { op: K.into(), msg: format!(
                "head_dim {hd}, rope_dim {rope_dim} or position {pos_host} outside the {}-entry table", cos.len()) });
        }
        check_min(K, "qkv", qkv.len(), nh * hd + nkv * (hd + hdv))?;
        check_min(K, "k cache", k_cache.len(), (pos_host + 1) * nkv * hd)?;
        check_min(K, "v cache", v_cache.len(), (pos_host + 1) * nkv * hdv)?;
        for w in [q_norm, k_norm].into_iter().flatten() {
            check_min(K, "head norm weights", w.len(), hd)?;
        }
        let opt = |w: Option<&CudaSlice<f32>>| w.map_or(0u64, |w| self.ptr(w, 0));
        let (qn, kn) = (opt(q_norm), opt(k_norm));
        let (nh32, nkv32, hd32, hdv32, rd, nx) = (nh as u32, nkv as u32, hd as u32, hdv as u32, rope_dim as u32, neox as u32);
        let f = self.func(K)?;
        let mut b = self.args(&f);
        b.arg(qkv).arg(k_cache).arg(v_cache).arg(cos).arg(sin).arg(pos0).arg(&nh32).arg(&nkv32).arg(&hd32).arg(&hdv32)
            .arg(&rd).arg(&nx).arg(&qn).arg(&kn).arg(&eps);
        self.go(K, b, rows_cfg(nh + nkv + 1, ROW_BLOCK), || format!("{s:?}"))
    }

    /// Store n_tok rows of `row_len` floats into the f16 cache at positions pos0.. (pos0 on the device).
    pub fn kv_store_rows(&self, cache: &mut CudaSlice<u16>, x: &impl Dev<f32>, n_tok: usize, row_len: usize,
                         pos0: &CudaSlice<u32>, pos_host: usize) -> Result<()> {
        const K: &str = "kv_store_f16";
        check_min(K, "x", x.elems(), n_tok * row_len)?;
        check_min(K, "cache", cache.len(), (pos_host + n_tok) * row_len)?;
        let f = self.func(K)?;
        let (rl, xp) = (row_len as u32, x.addr(self));
        let mut b = self.args(&f);
        b.arg(cache).arg(&xp).arg(pos0).arg(&rl);
        self.go(K, b, rows_cfg(n_tok, EW1_BLOCK), || format!("n_tok={n_tok} row_len={row_len}"))
    }

    /// Causal GQA attention of q (n_tok rows at positions pos0..) over the f16 caches, in `n_splits` chunks of
    /// `ATTN_CHUNK` keys combined by online softmax, in one launch; twin of `cpu::attention`. `scratch` holds the
    /// split partials and the arrival counters; `n_splits * ATTN_CHUNK` must cover every key position used.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_rows(&self, out: &mut CudaSlice<f32>, q: &impl Dev<f32>, k: &CudaSlice<u16>, v: &CudaSlice<u16>,
                          scratch: &mut AttnScratch, s: &AttnShape, n_splits: usize, pos0: &CudaSlice<u32>,
                          pos_host: usize) -> Result<()> {
        const K: &str = "attention_f16";
        let bad = |msg: String| Err(Error::Cuda { op: K.into(), msg });
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
        check_min(K, "k cache", k.len(), n_keys * s.n_kv_heads * s.head_dim)?;
        check_min(K, "v cache", v.len(), n_keys * s.n_kv_heads * s.head_dim_v)?;
        check_min(K, "q", q.elems(), s.n_tok * s.n_heads * s.head_dim)?;
        check_min(K, "out", out.len(), s.n_tok * s.n_heads * s.head_dim_v)?;
        check_min(K, "partials", scratch.part.len(), s.part_len(n_splits))?;
        check_min(K, "counters", scratch.counters.len(), s.n_tok * s.n_heads)?;
        let (nh, nkv, hd, hdv, w, ns) =
            (s.n_heads as u32, s.n_kv_heads as u32, s.head_dim as u32, s.head_dim_v as u32, s.window as u32, n_splits as u32);
        let (kernel, cfg) = match decode_kernel(s).filter(|_| !gpu_off("flashdec")) {
            Some(dk) => (dk, LaunchConfig { grid_dim: (nkv, ns, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }),
            None => (K, LaunchConfig { grid_dim: (nh, s.n_tok as u32, ns), block_dim: (128, 1, 1), shared_mem_bytes: 0 }),
        };
        let f = self.func(kernel)?;
        let mut b = self.args(&f);
        let qp = q.addr(self);
        b.arg(out).arg(&scratch.part).arg(&scratch.counters).arg(&qp).arg(k).arg(v).arg(pos0).arg(&nh).arg(&nkv).arg(&hd)
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

    /// pos[0] += 1 on the device (the last launch of a captured decode step).
    pub fn advance_pos(&self, pos: &mut CudaSlice<u32>) -> Result<()> {
        const K: &str = "advance_pos";
        let f = self.func(K)?;
        let mut l = self.args(&f);
        l.arg(pos);
        self.go(K, l, rows_cfg(1, 1), String::new)
    }
}
