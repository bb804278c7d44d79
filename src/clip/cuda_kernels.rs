//! The CUDA kernels of `fused_kernels.cu`, compiled by NVRTC on first use and launched on candle's
//! storages. Composed from candle's primitives, one layer norm is about ten kernels forward and twenty
//! backward, each a launch and a fresh buffer; CoOp's step on the GPU was bound by exactly that.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{CudaStorage, Layout, Result};

const SOURCE: &str = include_str!("fused_kernels.cu");
const MODULE: &str = "promptscope_fused";

fn ptx() -> std::result::Result<&'static str, &'static str> {
    static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();
    PTX.get_or_init(|| {
        let opts = CompileOptions { name: Some("fused_kernels.cu".into()), ..Default::default() };
        compile_ptx_with_opts(SOURCE, opts).map(|p| p.to_src()).map_err(|e| e.to_string())
    })
    .as_ref()
    .map(String::as_str)
    .map_err(String::as_str)
}

/// Whether the kernels compiled; if not (no NVRTC at run time), callers compose the ops from candle's
/// primitives instead, and the reason is printed once.
pub fn available() -> bool {
    static WARNED: OnceLock<()> = OnceLock::new();
    match ptx() {
        Ok(_) => true,
        Err(e) => {
            WARNED.get_or_init(|| eprintln!("warning: fused CUDA kernels unavailable, using composed ops ({e})"));
            false
        }
    }
}

fn launch_fn(dev: &CudaDevice, name: &str) -> Result<candle_core::cuda_backend::CudaFunc> {
    let ptx = ptx().map_err(|e| candle_core::Error::Msg(format!("compiling fused_kernels.cu: {e}")))?;
    dev.get_or_load_custom_func(name, MODULE, ptx)
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
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

const ROWS_PER_BLOCK: usize = 4;

fn rows_cfg(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.div_ceil(ROWS_PER_BLOCK).max(1) as u32, 1, 1), block_dim: (32, ROWS_PER_BLOCK as u32, 1), shared_mem_bytes: 0 }
}

fn wrap(y: CudaSlice<f32>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(y, dev.clone())
}

/// `rows × d` of a layout whose last dimension is `d`.
fn rows_of(l: &Layout) -> Result<(usize, usize)> {
    let d = l.shape().dims().last().copied().unwrap_or(1).max(1);
    Ok((l.shape().elem_count() / d, d))
}

pub fn quick_gelu(x: &CudaStorage, xl: &Layout) -> Result<CudaStorage> {
    let dev = x.device();
    let xv = view(x, xl, "quick-gelu")?;
    let n = xl.shape().elem_count();
    // SAFETY: every element is written by the kernel before the buffer is read.
    let mut y = unsafe { dev.alloc::<f32>(n)? };
    let f = launch_fn(dev, "ps_quick_gelu_fwd")?;
    let n64 = n as u64;
    let mut b = f.builder();
    b.arg(&xv).arg(&mut y).arg(&n64);
    // SAFETY: argument types and counts match the kernel's signature.
    unsafe { b.launch(elementwise_cfg(n)) }.w()?;
    Ok(wrap(y, dev))
}

pub fn quick_gelu_bwd(x: &CudaStorage, xl: &Layout, g: &CudaStorage, gl: &Layout) -> Result<CudaStorage> {
    let dev = x.device();
    let (xv, gv) = (view(x, xl, "quick-gelu backward")?, view(g, gl, "quick-gelu backward")?);
    let n = xl.shape().elem_count();
    if gl.shape().elem_count() != n {
        candle_core::bail!("quick-gelu backward: gradient of {} elements for {n}", gl.shape().elem_count());
    }
    // SAFETY: written in full by the kernel.
    let mut dx = unsafe { dev.alloc::<f32>(n)? };
    let f = launch_fn(dev, "ps_quick_gelu_bwd")?;
    let n64 = n as u64;
    let mut b = f.builder();
    b.arg(&xv).arg(&gv).arg(&mut dx).arg(&n64);
    // SAFETY: as above.
    unsafe { b.launch(elementwise_cfg(n)) }.w()?;
    Ok(wrap(dx, dev))
}

/// `y[r, c] += bias[c]` in place over a contiguous `rows × cols` buffer.
pub fn add_bias(y: &mut CudaSlice<f32>, bias: &CudaStorage, bl: &Layout, cols: usize, dev: &CudaDevice) -> Result<()> {
    let bv = view(bias, bl, "bias")?;
    let n = y.len();
    let f = launch_fn(dev, "ps_bias_add")?;
    let (n64, cols32) = (n as u64, cols as u32);
    let mut b = f.builder();
    b.arg(y).arg(&bv).arg(&n64).arg(&cols32);
    // SAFETY: as above.
    unsafe { b.launch(elementwise_cfg(n)) }.w()?;
    Ok(())
}

/// `x · Wᵀ + b` for `x` `[rows, in]`, `W` `[out, in]`: cuBLAS through candle's matmul, then the bias.
pub fn linear(x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout, bias: &CudaStorage, bl: &Layout) -> Result<CudaStorage> {
    let (rows, inp) = xl.shape().dims2()?;
    let (out, _) = wl.shape().dims2()?;
    let mut y = x.matmul(w, (1, rows, out, inp), xl, &wl.transpose(0, 1)?)?;
    let dev = x.device().clone();
    add_bias(y.as_cuda_slice_mut::<f32>()?, bias, bl, out, &dev)?;
    Ok(y)
}

pub fn layer_norm(x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout, bias: &CudaStorage, bl: &Layout, eps: f32) -> Result<CudaStorage> {
    let dev = x.device();
    let (xv, wv, bv) = (view(x, xl, "layer norm")?, view(w, wl, "layer norm")?, view(bias, bl, "layer norm")?);
    let (rows, d) = rows_of(xl)?;
    // SAFETY: written in full by the kernel.
    let mut y = unsafe { dev.alloc::<f32>(rows * d)? };
    let f = launch_fn(dev, "ps_layer_norm_fwd")?;
    let (r, d32) = (rows as i32, d as i32);
    let mut b = f.builder();
    b.arg(&xv).arg(&wv).arg(&bv).arg(&mut y).arg(&r).arg(&d32).arg(&eps);
    // SAFETY: as above.
    unsafe { b.launch(rows_cfg(rows)) }.w()?;
    Ok(wrap(y, dev))
}

/// `∂x` of the layer norm, given `x`, its weight and the output gradient `g`.
pub fn layer_norm_bwd(x: &CudaStorage, xl: &Layout, w: &CudaStorage, wl: &Layout, g: &CudaStorage, gl: &Layout, eps: f32) -> Result<CudaStorage> {
    let dev = x.device();
    let (xv, wv, gv) = (view(x, xl, "layer norm backward")?, view(w, wl, "layer norm backward")?, view(g, gl, "layer norm backward")?);
    let (rows, d) = rows_of(xl)?;
    // SAFETY: written in full by the kernel.
    let mut dx = unsafe { dev.alloc::<f32>(rows * d)? };
    let f = launch_fn(dev, "ps_layer_norm_bwd")?;
    let (r, d32) = (rows as i32, d as i32);
    let mut b = f.builder();
    b.arg(&xv).arg(&wv).arg(&gv).arg(&mut dx).arg(&r).arg(&d32).arg(&eps);
    // SAFETY: as above.
    unsafe { b.launch(rows_cfg(rows)) }.w()?;
    Ok(wrap(dx, dev))
}

pub fn softmax(x: &CudaStorage, xl: &Layout) -> Result<CudaStorage> {
    let dev = x.device();
    let xv = view(x, xl, "softmax")?;
    let (rows, d) = rows_of(xl)?;
    // SAFETY: written in full by the kernel.
    let mut y = unsafe { dev.alloc::<f32>(rows * d)? };
    let f = launch_fn(dev, "ps_softmax_fwd")?;
    let (r, d32) = (rows as i32, d as i32);
    let mut b = f.builder();
    b.arg(&xv).arg(&mut y).arg(&r).arg(&d32);
    // SAFETY: as above.
    unsafe { b.launch(rows_cfg(rows)) }.w()?;
    Ok(wrap(y, dev))
}

/// `∂x` of the softmax over the last dimension, from its output `y` and the output gradient `g`.
pub fn softmax_bwd(y: &CudaStorage, yl: &Layout, g: &CudaStorage, gl: &Layout) -> Result<CudaStorage> {
    let dev = y.device();
    let (yv, gv) = (view(y, yl, "softmax backward")?, view(g, gl, "softmax backward")?);
    let (rows, d) = rows_of(yl)?;
    // SAFETY: written in full by the kernel.
    let mut dx = unsafe { dev.alloc::<f32>(rows * d)? };
    let f = launch_fn(dev, "ps_softmax_bwd")?;
    let (r, d32) = (rows as i32, d as i32);
    let mut b = f.builder();
    b.arg(&yv).arg(&gv).arg(&mut dx).arg(&r).arg(&d32);
    // SAFETY: as above.
    unsafe { b.launch(rows_cfg(rows)) }.w()?;
    Ok(wrap(dx, dev))
}
