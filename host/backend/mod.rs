//! Where the math runs. `cpu` is the plain-Rust reference (and the fallback); `cuda` launches the Rust kernels
//! of `gpu-kernels/` through the CUDA driver, loaded at run time.

pub mod cpu;
pub mod cuda;
pub mod cuda_forward;
pub mod cuda_quant;
pub mod cuda_sample;
pub mod cuda_q8;
pub mod cuda_mmq;

use crate::cli::DeviceArg;
use crate::kv_cache::CacheType;
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

    /// The forward pass of `model` on this device with a KV cache of `ctx_size` positions (`cache` is the CPU's
    /// cache type; the GPU keeps f16). The GPU prints its memory plan and fails cleanly when memory is short.
    pub fn open_forward<'a>(self, model: &'a Model, ctx_size: usize, cache: CacheType) -> Result<Box<dyn Forward + 'a>> {
        Ok(match self {
            Device::Cpu => Box::new(CpuForward::new(model, ctx_size, cache)?),
            Device::Cuda { ordinal } => Box::new(cuda_forward::CudaForward::new(model, ctx_size, ordinal)?),
        })
    }
}
