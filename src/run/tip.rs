//! Tip-Adapter, Tip-Adapter-F and CLIP-Adapter as the CLI and Compare run them: K shots per class
//! (CoOp's draw), their features over augmented views, the adapter built (Tip-Adapter's cache) or
//! trained on them (the other two, on the epoch loop), its hyper-parameters chosen on the validation
//! split, the test split scored once.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::clip::LoadedClip;
use crate::data::fewshot::{few_shot, test_split};
use crate::data::DatasetFolder;
use crate::error::Result;
use crate::eval::metrics::{evaluate, Evaluation};
use crate::eval::tip_adapter::{SearchGrid, Searched, TipCache};
use crate::eval::zeroshot;
use crate::progress::Progress;
use crate::train::adapters::{Adapter, AdapterTrainer, ClipAdapterConfig};
use crate::train::epoch_loop::{run_until, TrainSet};
use crate::train::features::extract;
use crate::train::optim::OptimConfig;

/// What defines a Tip-Adapter run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TipRun {
    /// K per class; None: every training image.
    pub shots: Option<usize>,
    /// Draws the shots (CoOp's `--seed`).
    pub seed: u64,
    pub split_seed: u64,
    /// Augmented views per cached image (Tip-Adapter's `augment_epoch`, 10).
    pub views: usize,
    /// The hand-crafted template of the zero-shot part.
    pub template: String,
    /// What is trained on the features, if anything.
    pub method: AdapterMethod,
}

/// The three feature-level baselines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdapterMethod {
    /// Training-free: the cache as built.
    TipAdapter,
    /// The cache's keys trained: AdamW at 1e-3 (ε 1e-4, weight decay 0.01), cosine decay, batch 256.
    TipAdapterF { epochs: usize },
    /// A bottleneck MLP on the image feature: CoOp's SGD recipe (lr 0.002, momentum 0.9, weight decay
    /// 5e-4, one warm-up epoch at 1e-5, cosine), batch 32.
    ClipAdapter { epochs: usize },
}

impl AdapterMethod {
    pub fn name(self) -> &'static str {
        match self {
            AdapterMethod::TipAdapter => "Tip-Adapter",
            AdapterMethod::TipAdapterF { .. } => "Tip-Adapter-F",
            AdapterMethod::ClipAdapter { .. } => "CLIP-Adapter",
        }
    }

    /// The optimiser settings and batch size the method trains with.
    fn recipe(self) -> Option<(OptimConfig, Option<usize>)> {
        match self {
            AdapterMethod::TipAdapter => None,
            AdapterMethod::TipAdapterF { epochs } => {
                Some((OptimConfig { lr: 1e-3, momentum: 0.0, weight_decay: 0.01, warmup_epochs: 0, warmup_lr: 0.0, epochs }, Some(256)))
            }
            AdapterMethod::ClipAdapter { epochs } => Some((OptimConfig { epochs, ..OptimConfig::default() }, Some(32))),
        }
    }
}

impl Default for TipRun {
    fn default() -> Self {
        TipRun { shots: Some(16), seed: 1, split_seed: 0, views: 10, template: zeroshot::DEFAULT_TEMPLATE.to_string(), method: AdapterMethod::TipAdapter }
    }
}

impl TipReport {
    /// "Tip-Adapter (16-shot, α 1.17, β 5.00)", "CLIP-Adapter (16-shot)".
    pub fn label(&self) -> String {
        let shots = self.run.shots.map_or("all training images".to_string(), |k| format!("{k}-shot"));
        match self.searched {
            Some(s) => format!("{} ({shots}, α {:.2}, β {:.2})", self.run.method.name(), s.alpha, s.beta),
            None => format!("{} ({shots})", self.run.method.name()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TipReport {
    pub run: TipRun,
    pub cache_images: usize,
    /// Tip-Adapter's (and -F's) α and β; None for CLIP-Adapter.
    pub searched: Option<Searched>,
    /// Validation accuracy of the final adapter.
    pub val_acc: f64,
    pub train_seconds: f64,
    /// Zero-shot with the same template on the same test images, for comparison.
    pub zero_shot_test_acc: f64,
    pub split: String,
    #[serde(flatten)]
    pub test: Evaluation,
}

pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &TipRun,
    cache: Option<&Path>,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(crate::train::epoch_loop::TrainEvent),
) -> Result<TipReport> {
    let split = few_shot(data, run.shots, run.seed, run.split_seed)?;
    let test = test_split(data, run.split_seed)?;
    let names = &data.class_names;
    let train = extract(clip, &split.train, run.views.max(1), run.seed, cache, progress)?;
    let val = extract(clip, &split.val, 0, 0, cache, progress)?;
    let test_feats = extract(clip, &test.samples, 0, 0, cache, progress)?;
    let weights = zeroshot::class_weights(clip, names, std::slice::from_ref(&run.template), progress)?;
    let scale = f64::from(clip.model.logit_scale());
    let grid = SearchGrid::default();
    let start = std::time::Instant::now();
    let (logits, searched, val_acc) = match run.method {
        AdapterMethod::TipAdapter => {
            let tip = TipCache::build(&train, names.len())?;
            let s = tip.search(&val, &weights, scale, &grid)?;
            (tip.logits(&test_feats.feats, &weights, scale, s.alpha, s.beta)?, Some(s), s.val_acc)
        }
        method => {
            let (optim, batch) = method.recipe().expect("a trained method");
            let adapter = match method {
                // Tip-Adapter-F trains from its cache with its initial α = β = 1, then searches them again.
                AdapterMethod::TipAdapterF { .. } => Adapter::tip_f(&TipCache::build(&train, names.len())?, 1.0, 1.0)?,
                _ => Adapter::clip(weights.dim(1)?, ClipAdapterConfig::default(), run.seed, &clip.device)?,
            };
            let mut trainer = AdapterTrainer::new(adapter, weights.clone(), scale, &train, Some(&val), optim, batch, run.seed);
            let set = TrainSet { items: train.labels.len() / train.views_per_image.max(1), views: train.views_per_image.max(1) };
            let label = method.name();
            run_until(&mut trainer, set, usize::MAX, label, progress, &mut |e, _| on_event(e))?;
            match &trainer.adapter {
                Adapter::TipF { keys, values, .. } => {
                    let trained = TipCache { keys: keys.as_tensor().detach(), values: values.clone() };
                    let s = trained.search(&val, &weights, scale, &grid)?;
                    (trained.logits(&test_feats.feats, &weights, scale, s.alpha, s.beta)?, Some(s), s.val_acc)
                }
                adapter => (adapter.logits(&test_feats.feats, &weights, scale)?, None, trainer.accuracy(&val)?),
            }
        }
    };
    let logits: Vec<Vec<f32>> = logits.to_vec2()?;
    let labels: Vec<usize> = test.samples.iter().map(|s| s.label).collect();
    let paths: Vec<String> = test.samples.iter().map(|s| s.path.display().to_string()).collect();
    let zero_shot = zeroshot::logits(&test_feats.feats, &weights, clip.model.logit_scale())?;
    Ok(TipReport {
        run: run.clone(),
        cache_images: split.train.len(),
        searched,
        val_acc,
        train_seconds: start.elapsed().as_secs_f64(),
        zero_shot_test_acc: evaluate(&zero_shot, &labels, &paths, names).accuracy,
        split: test.description,
        test: evaluate(&logits, &labels, &paths, names),
    })
}
