//! Tip-Adapter, Tip-Adapter-F and CLIP-Adapter as the CLI and Compare run them: K shots per class
//! (CoOp's draw), their features over augmented views, the adapter built (Tip-Adapter's cache) or
//! trained on them (the other two, on the epoch loop), its hyper-parameters chosen on the validation
//! split, the test split scored once.

use std::path::Path;

use serde::Serialize;

use crate::clip::LoadedClip;
use crate::data::fewshot::{few_shot, test_split};
use crate::data::DatasetFolder;
use crate::error::Result;
use crate::eval::metrics::{evaluate, Evaluation};
use crate::eval::zeroshot;
use crate::progress::Progress;
use crate::train::adapters::{Adapter, AdapterTrainer, ClipAdapterConfig};
pub use crate::train::config::{AdapterMethod, AdapterRun};
use crate::train::epoch_loop::{run_until, TrainSet};
use crate::train::features::extract;
use crate::train::tip_adapter::{SearchGrid, Searched, TipCache};

impl TipReport {
    /// "Tip-Adapter (16-shot, α 1.17, β 5.00)", "CLIP-Adapter (16-shot)".
    pub fn label(&self) -> String {
        let shots = self
            .run
            .shots
            .map_or("all training images".to_string(), |k| format!("{k}-shot"));
        match self.searched {
            Some(s) => format!(
                "{} ({shots}, α {:.2}, β {:.2})",
                self.run.method.name(),
                s.alpha,
                s.beta
            ),
            None => format!("{} ({shots})", self.run.method.name()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TipReport {
    pub run: AdapterRun,
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

/// The split, its features and the template's class weights, computed once per run.
pub struct AdapterData {
    pub split: crate::data::fewshot::FewShotSplit,
    pub test: crate::data::fewshot::TestSplit,
    pub train: crate::train::features::FeatureSet,
    pub val: crate::train::features::FeatureSet,
    pub test_feats: crate::train::features::FeatureSet,
    pub weights: candle_core::Tensor,
}

pub fn prepare(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &AdapterRun,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<AdapterData> {
    let split = few_shot(data, run.shots, run.seed, run.split_seed)?;
    let test = test_split(data, run.split_seed)?;
    let train = extract(
        clip,
        &split.train,
        run.views.max(1),
        run.seed,
        cache,
        progress,
    )?;
    let val = extract(clip, &split.val, 0, 0, cache, progress)?;
    let test_feats = extract(clip, &test.samples, 0, 0, cache, progress)?;
    let weights = zeroshot::class_weights(
        clip,
        &data.class_names,
        std::slice::from_ref(&run.template),
        progress,
    )?;
    Ok(AdapterData {
        split,
        test,
        train,
        val,
        test_feats,
        weights,
    })
}

/// Prepares and fits in one call (the CLI and Compare).
pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &AdapterRun,
    cache: Option<&Path>,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(crate::train::epoch_loop::TrainEvent),
) -> Result<TipReport> {
    let prepared = prepare(clip, data, run, cache, progress)?;
    fit(clip, data, &prepared, run, progress, on_event)
}

/// Builds or trains the adapter on prepared features and scores the test split.
pub fn fit(
    clip: &LoadedClip,
    data: &DatasetFolder,
    prepared: &AdapterData,
    run: &AdapterRun,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(crate::train::epoch_loop::TrainEvent),
) -> Result<TipReport> {
    let AdapterData {
        split,
        test,
        train,
        val,
        test_feats,
        weights,
    } = prepared;
    let names = &data.class_names;
    let scale = f64::from(clip.logit_scale());
    let grid = SearchGrid::default();
    let start = std::time::Instant::now();
    let (logits, searched, val_acc) = match run.method {
        AdapterMethod::TipAdapter => {
            let tip = TipCache::build(train, names.len())?;
            let s = tip.search(val, weights, scale, &grid)?;
            (
                tip.logits(&test_feats.feats, weights, scale, s.alpha, s.beta)?,
                Some(s),
                s.val_acc,
            )
        }
        method => {
            let (optim, batch) = method.recipe().expect("a trained method");
            let adapter = match method {
                // Tip-Adapter-F trains from its cache with its initial α = β = 1, then searches them again.
                AdapterMethod::TipAdapterF { .. } => {
                    Adapter::tip_f(&TipCache::build(train, names.len())?, 1.0, 1.0)?
                }
                _ => Adapter::clip(
                    weights.dim(1)?,
                    ClipAdapterConfig::default(),
                    run.seed,
                    &clip.device,
                )?,
            };
            let mut trainer = AdapterTrainer::new(
                adapter,
                weights.clone(),
                scale,
                train,
                Some(val),
                optim,
                batch,
                run.seed,
            );
            let set = TrainSet {
                items: train.labels.len() / train.views_per_image.max(1),
                views: train.views_per_image.max(1),
            };
            let label = method.name();
            run_until(
                &mut trainer,
                set,
                usize::MAX,
                label,
                progress,
                &mut |e, _| on_event(e),
            )?;
            match &trainer.adapter {
                Adapter::TipF { keys, values, .. } => {
                    let trained = TipCache {
                        keys: keys.as_tensor().detach(),
                        values: values.clone(),
                    };
                    let s = trained.search(val, weights, scale, &grid)?;
                    (
                        trained.logits(&test_feats.feats, weights, scale, s.alpha, s.beta)?,
                        Some(s),
                        s.val_acc,
                    )
                }
                adapter => (
                    adapter.logits(&test_feats.feats, weights, scale)?,
                    None,
                    trainer.accuracy(val)?,
                ),
            }
        }
    };
    let logits: Vec<Vec<f32>> = logits.to_vec2()?;
    let labels: Vec<usize> = test.samples.iter().map(|s| s.label).collect();
    let paths: Vec<String> = test
        .samples
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    let zero_shot = zeroshot::logits(&test_feats.feats, weights, clip.logit_scale())?;
    Ok(TipReport {
        run: run.clone(),
        cache_images: split.train.len(),
        searched,
        val_acc,
        train_seconds: start.elapsed().as_secs_f64(),
        zero_shot_test_acc: evaluate(&zero_shot, &labels, &paths, names).accuracy,
        split: test.description.clone(),
        test: evaluate(&logits, &labels, &paths, names),
    })
}
