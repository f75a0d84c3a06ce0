//! CUDA backend: loads the PTX that `build.rs` compiled from `gpu-kernels/` and launches its kernels through
//! `cudarc` (the driver library is opened at run time, so the binary starts on machines without one).
//!
//! Each launcher owns its kernel's geometry and checks the lengths of its arguments before launching; errors name
//! the kernel and the launch.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::{Error, Result};

/// The PTX module built from `gpu-kernels/` (empty when built without the kernels).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.ptx"));

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
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(PTX))
            .map_err(cuda_err("load the kernel module (PTX JIT)"))?;
        let stream = ctx.default_stream();
        Ok(Cuda { ctx, stream, module, funcs: Default::default() })
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
        const K: &str = "rmsnorm_f32";
        if dim == 0 || !x.len().is_multiple_of(dim) || !dim.is_multiple_of(4) {
            return Err(Error::Cuda { op: K.into(), msg: format!("dim {dim} must be a non-zero multiple of 4 dividing {}", x.len()) });
        }
        let rows = x.len() / dim;
        check_len(K, "out", out.len(), x.len())?;
        check_len(K, "w", w.len(), dim)?;
        let f = self.func(K)?;
        let cfg = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (ROW_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let dim = dim as u32;
        let mut b = self.stream.launch_builder(&f);
        b.arg(out).arg(x).arg(w).arg(&dim).arg(&eps);
        // SAFETY: argument order and types match the kernel; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} rows={rows} dim={dim}")))?;
        Ok(())
    }

    fn elementwise(&self, kernel: &'static str, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<()> {
        check_len(kernel, "b", b.len(), a.len())?;
        check_len(kernel, "out", out.len(), a.len())?;
        let n = a.len() as u32;
        let per_block = EW_BLOCK * EW_PER_THREAD;
        let cfg = LaunchConfig { grid_dim: (n.div_ceil(per_block).max(1), 1, 1), block_dim: (EW_BLOCK, 1, 1), shared_mem_bytes: 0 };
        let f = self.func(kernel)?;
        let mut l = self.stream.launch_builder(&f);
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
        let mut b = self.stream.launch_builder(&f);
        b.arg(x).arg(&n);
        // SAFETY: argument order and types match the kernel; lengths checked above.
        unsafe { b.launch(cfg) }.map_err(cuda_err(format!("launch {K} rows={rows} n={n}")))?;
        Ok(())
    }
}
