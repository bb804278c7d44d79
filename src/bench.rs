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
    // GPU work is queued asynchronously: wait for it at both ends of the timed region (no-op on the CPU).
    clip.device.synchronize()?;
    let rounds = images.div_ceil(batch).max(1);
    let t = Instant::now();
    for _ in 0..rounds {
        clip.model.image_features(&pixels)?;
    }
    clip.device.synchronize()?;
    let images_per_s = (rounds * batch) as f64 / t.elapsed().as_secs_f64();

    let text_batch = text_batch.max(1);
    let prompts: Vec<String> = (0..texts.max(1)).map(|i| format!("a photo of a {}.", WORDS[i % WORDS.len()])).collect();
    let ids = clip.tokenizer.encode_batch(&prompts)?;
    clip.model.text_features(&ids[..text_batch.min(ids.len())])?;
    clip.device.synchronize()?;
    let t = Instant::now();
    for chunk in ids.chunks(text_batch) {
        clip.model.text_features(chunk)?;
    }
    clip.device.synchronize()?;
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

#[derive(Debug, Clone, Serialize)]
pub struct CoopBenchReport {
    pub model: String,
    pub device: String,
    pub classes: usize,
    pub n_ctx: usize,
    pub batch: usize,
    pub csc: bool,
    pub steps: usize,
    /// Forward + backward + SGD update, mean over `steps` after one warm-up step.
    pub ms_per_step: f64,
    /// Longest end-of-text position + 1: the positions the text tower runs.
    pub text_positions: usize,
    pub peak_rss_mb: Option<f64>,
}

/// Peak resident memory of this process (Linux), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Times CoOp training steps: `classes` prompts through the text tower and back, on random cached
/// image features of a `batch`.
pub fn coop_step(clip: &LoadedClip, classes: usize, n_ctx: usize, batch: usize, csc: bool, steps: usize) -> Result<CoopBenchReport> {
    use crate::prompt::coop::{CoopConfig, PromptLearner};
    use crate::train::coop::{Features, TrainConfig, Trainer};
    use crate::train::optim::OptimConfig;
    let names = class_names(classes);
    let cfg = CoopConfig { n_ctx, csc, ..Default::default() };
    let learner = PromptLearner::new(&clip.model.text, &clip.tokenizer, &names, &cfg)?;
    let text_positions = learner.eot.iter().max().map_or(0, |m| m + 1);
    let p = clip.model.config.projection_dim;
    let train = Features {
        feats: Tensor::randn(0f32, 1f32, (batch, p), &clip.device)?,
        labels: (0..batch).map(|i| i % classes).collect(),
        views_per_image: 1,
    };
    let steps = steps.max(1);
    let optim = OptimConfig { epochs: steps + 1, warmup_epochs: 0, ..Default::default() };
    let mut trainer = Trainer::new(&clip.model.text, learner, TrainConfig { optim, batch_size: None, seed: 0 }, clip.model.logit_scale());
    let silent = crate::progress::Silent;
    trainer.run_until(&train, None, 1, None, &silent, &mut |_| {})?;
    clip.device.synchronize()?;
    let t = Instant::now();
    trainer.run_until(&train, None, steps + 1, None, &silent, &mut |_| {})?;
    clip.device.synchronize()?;
    let ms_per_step = t.elapsed().as_secs_f64() * 1000.0 / steps as f64;
    Ok(CoopBenchReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        classes,
        n_ctx,
        batch,
        csc,
        steps,
        ms_per_step,
        text_positions,
        peak_rss_mb: peak_rss_mb(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotBenchReport {
    pub model: String,
    pub device: String,
    pub classes: usize,
    pub templates: usize,
    /// Encoding classes × templates prompts and averaging them into normalised class weights.
    pub seconds: f64,
    pub prompts_per_s: f64,
    pub peak_rss_mb: Option<f64>,
}

/// Times CLIP's prompt ensemble: `classes` class names × the first `templates` of CLIP's 80 ImageNet
/// templates, encoded and averaged into class weights.
pub fn zero_shot_ensemble(clip: &LoadedClip, classes: usize, templates: usize) -> Result<ZeroShotBenchReport> {
    use crate::eval::templates::IMAGENET;
    let names = class_names(classes);
    let templates: Vec<String> = IMAGENET.iter().cycle().take(templates.max(1)).map(|s| s.to_string()).collect();
    let silent = crate::progress::Silent;
    crate::eval::zeroshot::class_weights(clip, &names[..names.len().min(8)], &templates[..1], &silent)?;
    let t = Instant::now();
    crate::eval::zeroshot::class_weights(clip, &names, &templates, &silent)?;
    clip.device.synchronize()?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(ZeroShotBenchReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        classes,
        templates: templates.len(),
        seconds,
        prompts_per_s: (classes * templates.len()) as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// `classes` distinct names of one to four tokens ("golden retriever 3").
fn class_names(classes: usize) -> Vec<String> {
    (0..classes).map(|i| format!("{} {}", WORDS[i % WORDS.len()], i / WORDS.len())).collect()
}
