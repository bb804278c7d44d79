//! safetensors files of f32 tensors with string metadata: what exports, MP-FGVC weights and training
//! checkpoints are written as and read back from.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Serialises f32 tensors with string metadata (safetensors).
pub fn safetensors_bytes(
    tensors: &[(&str, Tensor)],
    meta: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let v: Vec<f32> = t
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1()?;
            Ok((
                name.to_string(),
                t.dims().to_vec(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ))
        })
        .collect::<Result<_>>()?;
    let views = data
        .iter()
        .map(|(n, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(e.to_string()))
}

/// Where a stored tensor's raw values (little-endian, as safetensors holds them) have their first NaN
/// or infinity; None when all are finite or the type is not a float.
pub fn first_non_finite(dtype: safetensors::Dtype, data: &[u8]) -> Option<usize> {
    use safetensors::Dtype;
    // A float is NaN or infinite exactly when its exponent bits are all ones.
    let all_ones = |width: usize, mask: u64| -> Option<usize> {
        data.chunks_exact(width).position(|b| {
            let mut bytes = [0u8; 8];
            bytes[..width].copy_from_slice(b);
            u64::from_le_bytes(bytes) & mask == mask
        })
    };
    match dtype {
        Dtype::F32 => data.chunks_exact(4).position(|b| {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        Dtype::F16 => all_ones(2, 0x7c00),
        Dtype::BF16 => all_ones(2, 0x7f80),
        Dtype::F64 => all_ones(8, 0x7ff0_0000_0000_0000),
        _ => None,
    }
}

/// An error naming `path` and `name` where the tensor holds a NaN or an infinity: a file with one
/// would turn every result it touches into NaN, far from its cause.
pub fn check_finite(path: &Path, name: &str, view: &safetensors::tensor::TensorView) -> Result<()> {
    match first_non_finite(view.dtype(), view.data()) {
        None => Ok(()),
        Some(i) => Err(Error::bad_file(
            path,
            format!(
                "tensor '{name}' {:?} holds a non-finite value (NaN or infinity) at element {i}",
                view.shape()
            ),
            "the file was written from a run that diverged or was corrupted: write it again from a finite state",
        )),
    }
}

/// [`check_finite`] over every tensor of a file (as `SafeTensors::tensors` or a mapped file lists
/// them), in name order so the error is the same however the file lists them.
pub fn check_all_finite(
    path: &Path,
    mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)>,
) -> Result<()> {
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .iter()
        .try_for_each(|(name, view)| check_finite(path, name, view))
}

/// Reads every tensor (as f32, on the CPU) and the metadata of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let bad = |e: &dyn std::fmt::Display| {
        Error::bad_file(
            path,
            format!("not a readable safetensors file ({e})"),
            "the file is truncated or of another kind: export it again",
        )
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(&e))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(&e))?;
    check_all_finite(path, st.tensors())?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu).map_err(|e| bad(&e))?;
        out.insert(name, t.to_dtype(candle_core::DType::F32)?);
    }
    Ok((out, meta))
}

#[cfg(test)]
mod tests {
    use super::first_non_finite;
    use safetensors::Dtype;

    #[test]
    fn the_first_nan_or_infinity_is_found_in_every_float_type() {
        let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        assert_eq!(
            first_non_finite(Dtype::F32, &f32s(&[1.0, -0.0, f32::MAX])),
            None
        );
        assert_eq!(
            first_non_finite(Dtype::F32, &f32s(&[1.0, f32::NAN, 2.0])),
            Some(1)
        );
        assert_eq!(
            first_non_finite(Dtype::F32, &f32s(&[f32::NEG_INFINITY])),
            Some(0)
        );
        // f16: 0x7c00 is +inf, 0x7e00 a NaN, 0x7bff the largest finite value.
        let f16s = |v: &[u16]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        assert_eq!(
            first_non_finite(Dtype::F16, &f16s(&[0x3c00, 0x7bff, 0xfbff])),
            None
        );
        assert_eq!(
            first_non_finite(Dtype::F16, &f16s(&[0x3c00, 0x7e00])),
            Some(1)
        );
        assert_eq!(first_non_finite(Dtype::F16, &f16s(&[0xfc00])), Some(0));
        // bf16 shares f32's exponent.
        assert_eq!(
            first_non_finite(Dtype::BF16, &f16s(&[0x3f80, 0x7f7f])),
            None
        );
        assert_eq!(
            first_non_finite(Dtype::BF16, &f16s(&[0x3f80, 0x7fc0])),
            Some(1)
        );
        let f64s: Vec<u8> = [1.0f64, f64::INFINITY]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(first_non_finite(Dtype::F64, &f64s), Some(1));
        // Integers have no NaN.
        assert_eq!(first_non_finite(Dtype::I32, &[0xff; 8]), None);
    }
}
