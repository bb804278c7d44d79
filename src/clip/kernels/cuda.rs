//! The CUDA kernels of `fused_kernels.cu`, compiled by NVRTC on first use and launched on candle's
//! storages. Composed from candle's primitives, one layer norm is about ten kernels forward and twenty
//! backward, each a launch and a fresh buffer; CoOp's step on the GPU was bound by exactly that.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, Layout, Result};

use super::rows_of;

const SOURCE: &str = include_str!("fused_kernels.cu");
const MODULE: &str = "promptscope_fused";

fn ptx() -> std::result::Result<&'static str, &'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let opts = CompileOptions {
            name: Some("fused_kernels.cu".into()),
            ..Default::default()
        };
        compile_ptx_with_opts(SOURCE, opts)
            .map(|p| p.to_src())
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(String::as_str)
    .map_err(String::as_str)
}

/// Whether the kernels compiled; if not (no NVRTC at run time), callers compose the ops from candle's
/// primitives instead, and the reason is printed once. `PROMPTSCOPE_CANDLE_OPS=1` turns them off for
/// comparison, as it does the CPU kernels.
pub fn available() -> bool {
    static WARNED: OnceLock<()> = OnceLock::new();
    if super::candle_ops_forced() {
        return false;
    }
    match ptx() {
        Ok(_) => true,
        Err(e) => {
            WARNED.get_or_init(|| {
                eprintln!("warning: fused CUDA kernels unavailable, using composed ops ({e})")
            });
            false
        }
    }
}

fn load(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    let ptx =
        ptx().map_err(|e| candle_core::Error::Msg(format!("compiling fused_kernels.cu: {e}")))?;
    Ok(dev
        .get_or_load_custom_func(name, MODULE, ptx)?
        .into_cuda_function())
}

/// Launches kernel `$name` on the device's stream with the arguments given.
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let func = load($dev, $name)?;
        let stream = $dev.cuda_stream();
        let mut builder = stream.launch_builder(&func);
        $( builder.arg($arg); )+
        // SAFETY: each call site passes arguments matching its kernel's signature in fused_kernels.cu.
        unsafe { builder.launch($cfg) }.w()?;
    }};
}

fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    let slice = s.as_cuda_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

fn elementwise_cfg(n: usize) -> LaunchConfig {
    // Grid-stride loops in the kernels: a bounded grid covers any length.
    let blocks = n.div_ceil(256).clamp(1, 132 * 32) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

const ROWS_PER_BLOCK: usize = 4;

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1),
        block_dim: (32, ROWS_PER_BLOCK as u32, 1),
        shared_mem_bytes: 0,
    }
}

fn wrap(y: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(y, dev.clone())
}

pub fn quick_gelu(x: &CudaStorage, xl: &Layout) -> Result<CudaStorage> {
    let dev = x.device();
    let xv = view(x, xl, "quick-gelu")?;
    let n = xl.shape().elem_count();
    // SAFETY: every element is written by the kernel before the buffer is read.
    let mut y = unsafe { dev.alloc::<f32>(n)? };
    let n64 = n as u64;
    launch!(
        dev,
        "ps_quick_gelu_fwd",
        elementwise_cfg(n),
        &xv,
        &mut y,
        &n64
    );
    Ok(wrap(y, dev))
}

pub fn quick_gelu_bwd(
    x: &CudaStorage,
    xl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let dev = x.device();
    let (xv, gv) = (
        view(x, xl, "quick-gelu backward")?,
        view(g, gl, "quick-gelu backward")?,
    );
    let n = xl.shape().elem_count();
    if gl.shape().elem_count() != n {
        candle_core::bail!(
            "quick-gelu backward: gradient of {} elements for {n}",
            gl.shape().elem_count()
        );
    }
    // SAFETY: written in full by the kernel.
    let mut dx = unsafe { dev.alloc::<f32>(n)? };
    let n64 = n as u64;
    launch!(
        dev,
        "ps_quick_gelu_bwd",
        elementwise_cfg(n),
        &xv,
        &gv,
        &mut dx,
        &n64
    );
    Ok(wrap(dx, dev))
}

/// `y[r, c] += bias[c]` in place over a contiguous `rows × cols` buffer.
pub fn add_bias(
    y: &mut CudaSlice<f32>,
    bias: &CudaStorage,
    bl: &Layout,
    cols: usize,
    dev: &CudaDevice,
) -> Result<()> {
    let bv = view(bias, bl, "bias")?;
    let n = y.len();
    let (n64, cols32) = (n as u64, cols as u32);
    launch!(
        dev,
        "ps_bias_add",
        elementwise_cfg(n),
        y,
        &bv,
        &n64,
        &cols32
    );
    Ok(())
}

/// `x · Wᵀ + b` for `x` `[rows, in]`, `W` `[out, in]`: cuBLAS through candle's matmul, then the bias.
pub fn linear(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    bias: &CudaStorage,
    bl: &Layout,
) -> Result<CudaStorage> {
    let (rows, inp) = xl.shape().dims2()?;
    let (out, _) = wl.shape().dims2()?;
    let mut y = x.matmul(w, (1, rows, out, inp), xl, &wl.transpose(0, 1)?)?;
    let dev = x.device().clone();
    add_bias(y.as_cuda_slice_mut::<f32>()?, bias, bl, out, &dev)?;
    Ok(y)
}

pub fn layer_norm(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    bias: &CudaStorage,
    bl: &Layout,
    eps: f32,
) -> Result<CudaStorage> {
    layer_norm_kernel("ps_layer_norm_fwd", (x, xl), (w, wl), (bias, bl), eps)
}

/// `∂x` of the layer norm, given `x`, its weight and the output gradient `g`.
pub fn layer_norm_bwd(
    x: &CudaStorage,
    xl: &Layout,
    w: &CudaStorage,
    wl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
    eps: f32,
) -> Result<CudaStorage> {
    layer_norm_kernel("ps_layer_norm_bwd", (x, xl), (w, wl), (g, gl), eps)
}

/// Both layer-norm kernels take `(x, weight, bias or ∂y, out, rows, d, eps)`.
fn layer_norm_kernel(
    name: &str,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
    third: (&CudaStorage, &Layout),
    eps: f32,
) -> Result<CudaStorage> {
    let dev = x.0.device();
    let (xv, wv, tv) = (
        view(x.0, x.1, name)?,
        view(w.0, w.1, name)?,
        view(third.0, third.1, name)?,
    );
    let (rows, d) = rows_of(x.1);
    if wv.len() != d || tv.len() % d != 0 {
        candle_core::bail!(
            "{name}: weight of {} and operand of {} for rows of {d}",
            wv.len(),
            tv.len()
        );
    }
    // SAFETY: written in full by the kernel.
    let mut y = unsafe { dev.alloc::<f32>(rows * d)? };
    let (r, d32) = (rows as i32, d as i32);
    launch!(
        dev,
        name,
        rows_cfg(rows),
        &xv,
        &wv,
        &tv,
        &mut y,
        &r,
        &d32,
        &eps
    );
    Ok(wrap(y, dev))
}

pub fn softmax(x: &CudaStorage, xl: &Layout) -> Result<CudaStorage> {
    let dev = x.device();
    let xv = view(x, xl, "softmax")?;
    let (rows, d) = rows_of(xl);
    // SAFETY: written in full by the kernel.
    let mut y = unsafe { dev.alloc::<f32>(rows * d)? };
    let (r, d32) = (rows as i32, d as i32);
    launch!(dev, "ps_softmax_fwd", rows_cfg(rows), &xv, &mut y, &r, &d32);
    Ok(wrap(y, dev))
}

/// `∂x` of the softmax over the last dimension, from its output `y` and the output gradient `g`.
pub fn softmax_bwd(
    y: &CudaStorage,
    yl: &Layout,
    g: &CudaStorage,
    gl: &Layout,
) -> Result<CudaStorage> {
    let dev = y.device();
    let (yv, gv) = (
        view(y, yl, "softmax backward")?,
        view(g, gl, "softmax backward")?,
    );
    let (rows, d) = rows_of(yl);
    // SAFETY: written in full by the kernel.
    let mut dx = unsafe { dev.alloc::<f32>(rows * d)? };
    let (r, d32) = (rows as i32, d as i32);
    launch!(
        dev,
        "ps_softmax_bwd",
        rows_cfg(rows),
        &yv,
        &gv,
        &mut dx,
        &r,
        &d32
    );
    Ok(wrap(dx, dev))
}
