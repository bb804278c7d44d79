//! Which compute device to run on.

use candle_core::Device;

use crate::error::{Error, Result};

/// `auto` picks the first CUDA GPU when promptscope was built with the `cuda` feature and one is present.
pub fn select(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        "cuda" | "gpu" => Device::new_cuda(0).map_err(|e| {
            Error::invalid(format!("no CUDA device ({e}); build with `--features cuda` on a machine with an NVIDIA GPU, or use --device cpu"))
        }),
        other => Err(Error::invalid(format!("unknown device '{other}': use cpu, cuda or auto"))),
    }
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("CPU ({} threads)", rayon::current_num_threads()),
        Device::Cuda(_) => "CUDA GPU 0".into(),
        Device::Metal(_) => "Metal GPU".into(),
    }
}
