//! Batched feature extraction for many images or texts: decode and preprocess on a producer thread (in
//! parallel) while the model runs on the previous batch.

use std::path::PathBuf;
use std::sync::mpsc::sync_channel;

use candle_core::Tensor;
use rayon::prelude::*;

use super::load::LoadedClip;
use super::preprocess::{load_image, preprocess};
use crate::error::{Error, Result};
use crate::progress::{check, Progress};

/// Images per forward pass of the image tower where the caller does not choose.
pub const BATCH: usize = 32;

/// Loads and preprocesses images into one `[B, 3, H, W]` batch (in parallel).
pub fn pixel_batch(clip: &LoadedClip, paths: &[PathBuf]) -> Result<Tensor> {
    let s = clip.image_size();
    let chw: Vec<Vec<f32>> = paths
        .par_iter()
        .map(|p| load_image(p).map(|img| preprocess(&img, &clip.preprocess)))
        .collect::<Result<_>>()?;
    let flat: Vec<f32> = chw.into_iter().flatten().collect();
    Ok(Tensor::from_vec(
        flat,
        (paths.len(), 3, s, s),
        &clip.device,
    )?)
}

/// Projected (not normalised) image features `[N, P]`, in `paths` order.
pub fn image_features(
    clip: &LoadedClip,
    paths: &[PathBuf],
    batch: usize,
    progress: &dyn Progress,
) -> Result<Tensor> {
    let batch = batch.max(1);
    if paths.is_empty() {
        return Ok(Tensor::zeros(
            (0, clip.projection_dim()),
            candle_core::DType::F32,
            &clip.device,
        )?);
    }
    let chunks: Vec<Vec<PathBuf>> = paths.chunks(batch).map(<[PathBuf]>::to_vec).collect();
    let total = paths.len();
    std::thread::scope(|scope| {
        // Two batches in flight: decoding the next one overlaps the model's work on this one.
        let (tx, rx) = sync_channel::<Result<Tensor>>(1);
        scope.spawn(move || {
            for chunk in &chunks {
                if tx.send(pixel_batch(clip, chunk)).is_err() {
                    break;
                }
            }
        });
        let mut feats = Vec::new();
        let mut done = 0;
        progress.update("images", 0, total);
        for pixels in rx {
            check(progress)?;
            let pixels = pixels?;
            done += pixels.dim(0)?;
            feats.push(clip.image_features(&pixels)?);
            progress.update("images", done, total);
        }
        Ok(Tensor::cat(&feats, 0)?)
    })
}

/// Projected (not normalised) text features `[N, P]` of `texts`, tokenised and truncated to the model's
/// context.
pub fn text_features(
    clip: &LoadedClip,
    texts: &[String],
    batch: usize,
    progress: &dyn Progress,
) -> Result<Tensor> {
    let mut feats = Vec::new();
    let mut done = 0;
    for chunk in texts.chunks(batch.max(1)) {
        check(progress)?;
        feats.push(clip.text_features(chunk)?);
        done += chunk.len();
        progress.update("texts", done, texts.len());
    }
    if feats.is_empty() {
        return Err(Error::invalid("no texts to encode"));
    }
    Ok(Tensor::cat(&feats, 0)?)
}
