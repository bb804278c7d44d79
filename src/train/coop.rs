//! A CoOp training run over cached image features: batches, SGD steps through the frozen text tower,
//! per-epoch evaluation, events for the CLI and the app, cancellation between steps, and checkpoints
//! that let a killed run resume where it stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::optim::{OptimConfig, Sgd};
use crate::clip::l2_normalize;
use crate::clip::text::TextTower;
use crate::data::synth::Rng;
use crate::error::{write_atomic, Error, Result};
use crate::progress::Progress;
use crate::prompt::coop::PromptLearner;

pub use super::features::FeatureSet as Features;

impl Features {
    pub fn num_images(&self) -> usize {
        self.labels.len() / self.views_per_image.max(1)
    }

    /// The label of image `i`.
    pub fn label_of_image(&self, i: usize) -> usize {
        self.labels[i * self.views_per_image.max(1)]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optim: OptimConfig,
    /// None: one batch of the whole train set.
    pub batch_size: Option<usize>,
    /// Seed of batch order and view choice.
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub lr: f64,
    pub train_acc: f64,
    pub val_acc: Option<f64>,
    pub elapsed_s: f64,
    pub eta_s: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TrainEvent {
    Step { epoch: usize, step: usize, steps: usize, loss: f64, lr: f64 },
    Epoch(EpochStats),
}

pub struct Trainer<'a> {
    pub text: &'a TextTower,
    pub learner: PromptLearner,
    pub config: TrainConfig,
    pub logit_scale: f32,
    opt: Sgd,
    rng: Rng,
    /// The next epoch to run (0-based).
    pub epoch: usize,
    pub history: Vec<EpochStats>,
    /// Seconds spent in earlier sessions of a resumed run.
    elapsed_before: f64,
}

/// Accuracy of `feats` (eval view) against normalised class weights.
pub fn accuracy(feats: &Features, weights: &Tensor, scale: f32) -> Result<f64> {
    if feats.num_images() == 0 {
        return Ok(0.0);
    }
    let img = l2_normalize(&first_views(feats)?)?;
    let pred: Vec<u32> = (img.matmul(&weights.t()?)? * f64::from(scale))?.argmax(D::Minus1)?.to_vec1()?;
    let correct = pred.iter().enumerate().filter(|(i, p)| **p as usize == feats.label_of_image(*i)).count();
    Ok(correct as f64 / feats.num_images() as f64)
}

fn first_views(f: &Features) -> Result<Tensor> {
    if f.views_per_image <= 1 {
        return Ok(f.feats.clone());
    }
    let idx: Vec<u32> = (0..f.num_images()).map(|i| (i * f.views_per_image) as u32).collect();
    Ok(f.feats.index_select(&Tensor::new(idx.as_slice(), f.feats.device())?, 0)?)
}

impl<'a> Trainer<'a> {
    pub fn new(text: &'a TextTower, learner: PromptLearner, config: TrainConfig, logit_scale: f32) -> Self {
        let opt = Sgd::new(config.optim.momentum, config.optim.weight_decay);
        let rng = Rng::new(config.seed);
        Self { text, learner, config, logit_scale, opt, rng, epoch: 0, history: vec![], elapsed_before: 0.0 }
    }

    /// Normalised class weights `[C, P]` from the current context (no gradient).
    pub fn class_weights(&self) -> Result<Tensor> {
        Ok(l2_normalize(&self.learner.text_features(self.text)?.detach())?)
    }

    /// The batches of one epoch: CoOp's loader shuffles and drops the last partial batch when the set is
    /// larger than a batch. Each entry is a feature row (a view of an image, chosen per epoch).
    fn epoch_batches(&mut self, train: &Features) -> Vec<Vec<usize>> {
        let n = train.num_images();
        let mut order: Vec<usize> = (0..n).collect();
        let batch = self.config.batch_size.unwrap_or(n).max(1);
        if batch < n {
            self.rng.shuffle(&mut order);
        }
        let rows: Vec<usize> = order
            .iter()
            .map(|&i| {
                let v = train.views_per_image.max(1);
                // A cached augmented view per image and epoch stands in for CoOp's fresh augmentation.
                if v > 1 { i * v + (self.rng.next_u64() % v as u64) as usize } else { i }
            })
            .collect();
        if batch >= n {
            return vec![rows];
        }
        rows.chunks(batch).filter(|c| c.len() == batch).map(<[usize]>::to_vec).collect()
    }

    fn step(&mut self, train: &Features, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let dev = train.feats.device();
        let idx = Tensor::new(rows.iter().map(|&r| r as u32).collect::<Vec<_>>().as_slice(), dev)?;
        let labels: Vec<u32> = rows.iter().map(|&r| train.labels[r] as u32).collect();
        let labels = Tensor::new(labels.as_slice(), dev)?;
        let img = l2_normalize(&train.feats.index_select(&idx, 0)?)?;
        let txt = l2_normalize(&self.learner.text_features(self.text)?)?;
        let logits = (img.matmul(&txt.t()?)? * f64::from(self.logit_scale))?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let correct = logits.argmax(D::Minus1)?.eq(&labels)?.to_dtype(candle_core::DType::U32)?.sum_all()?.to_scalar::<u32>()?;
        let grads = loss.backward()?;
        let g = grads
            .get(self.learner.ctx.as_tensor())
            .ok_or_else(|| Error::invalid("no gradient reached the context"))?;
        self.opt.step(&self.learner.ctx, g, lr)?;
        Ok((f64::from(loss.to_scalar::<f32>()?), correct as usize))
    }

    /// Runs the remaining epochs. `on_event` sees every step and epoch; `checkpoint` is rewritten after each
    /// epoch; `progress.cancelled()` stops the run between steps (the last checkpoint stays valid).
    pub fn run(
        &mut self,
        train: &Features,
        val: Option<&Features>,
        checkpoint: Option<&Path>,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let epochs = self.config.optim.epochs;
        self.run_until(train, val, epochs, checkpoint, progress, on_event)
    }

    /// Runs epochs until `until` (exclusive, at most the configured count): the app pauses this way, at
    /// an epoch boundary.
    pub fn run_until(
        &mut self,
        train: &Features,
        val: Option<&Features>,
        until: usize,
        checkpoint: Option<&Path>,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        if train.num_images() == 0 {
            return Err(Error::invalid("the training set is empty"));
        }
        let start = Instant::now();
        let first_epoch = self.epoch;
        let epochs = self.config.optim.epochs;
        while self.epoch < until.min(epochs) {
            let e = self.epoch;
            let lr = self.config.optim.lr_at(e);
            let batches = self.epoch_batches(train);
            let steps = batches.len();
            let (mut loss_sum, mut correct, mut seen) = (0.0, 0, 0);
            for (s, rows) in batches.iter().enumerate() {
                crate::progress::check(progress)?;
                let (loss, c) = self.step(train, rows, lr)?;
                loss_sum += loss;
                correct += c;
                seen += rows.len();
                on_event(TrainEvent::Step { epoch: e, step: s, steps, loss, lr });
            }
            let val_acc = match val {
                Some(v) if v.num_images() > 0 => Some(accuracy(v, &self.class_weights()?, self.logit_scale)?),
                _ => None,
            };
            self.epoch += 1;
            let elapsed = self.elapsed_before + start.elapsed().as_secs_f64();
            let per_epoch = start.elapsed().as_secs_f64() / (self.epoch - first_epoch) as f64;
            let stats = EpochStats {
                epoch: e,
                epochs,
                loss: loss_sum / steps.max(1) as f64,
                lr,
                train_acc: correct as f64 / seen.max(1) as f64,
                val_acc,
                elapsed_s: elapsed,
                eta_s: per_epoch * (epochs - self.epoch) as f64,
            };
            self.history.push(stats.clone());
            progress.update("epochs", self.epoch, epochs);
            on_event(TrainEvent::Epoch(stats));
            if let Some(path) = checkpoint {
                self.save_checkpoint(path)?;
            }
        }
        Ok(())
    }

    /// Context, momentum buffer, next epoch, generator state and history, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(&str, Tensor)> = vec![("ctx", self.learner.ctx.as_tensor().clone())];
        if let Some(b) = &self.opt.buf {
            tensors.push(("momentum_buf", b.clone()));
        }
        let meta = HashMap::from([
            ("format".to_string(), "promptscope-coop-checkpoint/1".to_string()),
            ("epoch".to_string(), self.epoch.to_string()),
            ("rng_state".to_string(), self.rng.state().to_string()),
            ("train_config".to_string(), serde_json::to_string(&self.config).unwrap_or_default()),
            ("coop_config".to_string(), serde_json::to_string(&self.learner.config).unwrap_or_default()),
            ("history".to_string(), serde_json::to_string(&self.history).unwrap_or_default()),
        ]);
        write_atomic(path, &crate::export::safetensors_bytes(&tensors, meta)?)
    }

    /// Continues a run from its checkpoint; the settings must be the ones it was started with.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (tensors, meta) = crate::export::read_safetensors(path)?;
        let bad = |why: String| Error::bad_file(path, why, "start the run again without --resume, or pass the checkpoint of this run");
        let get = |k: &str| meta.get(k).cloned().ok_or_else(|| bad(format!("has no '{k}' entry: not a promptscope checkpoint")));
        let train_config: TrainConfig = serde_json::from_str(&get("train_config")?).map_err(|e| bad(e.to_string()))?;
        if train_config != self.config {
            return Err(bad("was made with other training settings".into()));
        }
        let coop: crate::prompt::coop::CoopConfig = serde_json::from_str(&get("coop_config")?).map_err(|e| bad(e.to_string()))?;
        if coop != self.learner.config {
            return Err(bad("was made with another context configuration".into()));
        }
        let ctx = tensors.get("ctx").ok_or_else(|| bad("has no ctx tensor".into()))?;
        self.learner.set_ctx(&ctx.to_device(self.learner.ctx.device())?).map_err(|e| bad(e.to_string()))?;
        self.opt.buf = match tensors.get("momentum_buf") {
            Some(b) => Some(b.to_device(self.learner.ctx.device())?),
            None => None,
        };
        self.epoch = get("epoch")?.parse().map_err(|_| bad("bad epoch".into()))?;
        self.rng = Rng::new(get("rng_state")?.parse().map_err(|_| bad("bad rng_state".into()))?);
        self.history = serde_json::from_str(&get("history")?).map_err(|e| bad(e.to_string()))?;
        self.elapsed_before = self.history.last().map_or(0.0, |h| h.elapsed_s);
        Ok(())
    }
}

/// Where a run's checkpoint lives next to its output file.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".ckpt");
    out.with_file_name(name)
}
