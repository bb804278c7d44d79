//! Throughput of the two towers on the loaded model: what `promptscope bench` reports.

use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::clip::LoadedClip;
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub batch: usize,
    pub images: usize,
    pub images_per_s: f64,
    pub text_batch: usize,
    pub texts: usize,
    pub prompts_per_s: f64,
}

/// Times the image tower on `images` random images in batches of `batch`, and the text tower on `texts`
/// prompts of the form `a photo of a <name>.`, after one warm-up batch each.
pub fn run(clip: &LoadedClip, batch: usize, images: usize, text_batch: usize, texts: usize) -> Result<BenchReport> {
    let s = clip.model.config.vision_config.image_size;
    let batch = batch.max(1);
    let pixels = Tensor::randn(0f32, 1f32, (batch, 3, s, s), &clip.device)?.to_dtype(DType::F32)?;
    clip.model.image_features(&pixels)?;
    let rounds = images.div_ceil(batch).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        clip.model.image_features(&pixels)?;
    }
    let images_per_s = (rounds * batch) as f64 / t.elapsed().as_secs_f64();

    let text_batch = text_batch.max(1);
    let prompts: Vec<String> = (0..texts.max(1)).map(|i| format!("a photo of a {}.", WORDS[i % WORDS.len()])).collect();
    let ids = clip.tokenizer.encode_batch(&prompts)?;
    clip.model.text_features(&ids[..text_batch.min(ids.len())])?;
    let t = Instant::now();
    for chunk in ids.chunks(text_batch) {
        clip.model.text_features(chunk)?;
    }
    let prompts_per_s = ids.len() as f64 / t.elapsed().as_secs_f64();
    Ok(BenchReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        threads: rayon::current_num_threads(),
        batch,
        images: rounds * batch,
        images_per_s,
        text_batch,
        texts: ids.len(),
        prompts_per_s,
    })
}

const WORDS: [&str; 8] = ["golden retriever", "tabby cat", "red fox", "sports car", "sunflower", "airliner", "espresso", "lighthouse"];
