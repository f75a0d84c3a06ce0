//! Where the math runs. `cpu` is the plain-Rust reference (and the fallback); `cuda` launches the Rust kernels
//! of `gpu-kernels/` through the CUDA driver, loaded at run time.

pub mod cpu;
pub mod cuda;
pub mod cuda_batch;
pub mod cuda_forward;
pub mod cuda_quant;
pub mod cuda_sample;
pub mod cuda_q8;
pub mod cuda_mmq;
pub mod cuda_weights;
pub mod cuda_flash;

use crate::cli::DeviceArg;
use crate::kv_cache::CacheType;
use crate::batch::{BatchForward, CpuBatchForward};
use crate::kv_paged::DEFAULT_PAGE_SIZE;
use crate::model::{CpuForward, Forward, Model};
use crate::{Error, Result};

/// The backend a command computes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda { ordinal: usize },
}

impl Device {
    /// Resolve `--device`: `auto` picks CUDA device 0 when a driver, a device and the kernels are all present.
    pub fn select(arg: DeviceArg) -> Result<Device> {
        match arg {
            DeviceArg::Cpu => Ok(Device::Cpu),
            DeviceArg::Cuda => match cuda::availability() {
                Ok(()) => Ok(Device::Cuda { ordinal: 0 }),
                Err(why) => Err(Error::NoCuda(why)),
            },
            DeviceArg::Auto => Ok(match cuda::availability() {
                Ok(()) => Device::Cuda { ordinal: 0 },
                Err(_) => Device::Cpu,
            }),
        }
    }

    /// The forward pass of `model` on this device with a KV cache of `ctx_size` positions of `cache` elements (the
    /// GPU keeps f16 or q8_0, and says so for f32). The GPU prints its memory plan and fails cleanly when memory
    /// is short.
    pub fn open_forward<'a>(self, model: &'a Model, ctx_size: usize, cache: CacheType) -> Result<Box<dyn Forward + 'a>> {
        Ok(match self {
            Device::Cpu => Box::new(CpuForward::new(model, ctx_size, cache)?),
            Device::Cuda { ordinal } => {
                Box::new(cuda_forward::CudaForward::new_with_cache(model, ctx_size, ordinal, cache)?)
            }
        })
    }

    /// The batch forward of many sequences on this device (`CpuBatchForward`, or `CudaBatchForward` on the GPU,
    /// whose paged cache is f16 only: another `cache` is refused there): a paged KV cache of `capacity` positions
    /// in pages of 16, each sequence reaching at most `ctx_size`.
    pub fn open_batch_forward<'a>(self, model: &'a Model, capacity: usize, ctx_size: usize, cache: CacheType)
                                  -> Result<Box<dyn BatchForward + 'a>> {
        Ok(match self {
            Device::Cpu => Box::new(CpuBatchForward::new(model, capacity, DEFAULT_PAGE_SIZE, ctx_size, cache)?),
            Device::Cuda { .. } if cache != CacheType::F16 => {
                return Err(Error::Usage(format!(
                    "the GPU batch forward (several sequences) keeps its paged KV cache as f16 only, not {}: use \
                     --cache-type f16, the single-sequence path (run / bench without --parallel; serve with \
                     HOST_GPU_OFF=batch), or --device cpu",
                    cache.name()
                )))
            }
            Device::Cuda { ordinal } => Box::new(cuda_batch::CudaBatchForward::new(model, capacity, ctx_size, ordinal)?),
        })
    }
}
