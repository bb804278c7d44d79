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
        Device::Cpu => format!(
            "CPU ({} threads, {} kernels)",
            rayon::current_num_threads(),
            cpu_kernels()
        ),
        Device::Cuda(_) => "CUDA GPU 0".into(),
        Device::Metal(_) => "Metal GPU".into(),
    }
}

/// The instruction set of the CPU matrix kernels this build runs here: gemm picks AVX-512 at run time
/// only when built with the `avx512` feature and the CPU has AVX-512F, else AVX2+FMA. Results differ
/// between them in the last bits (another summation order), so every benchmark and test log names it.
pub fn cpu_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("fma") {
            return "AVX2+FMA";
        }
        "scalar"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}
