//! Tip-Adapter, Tip-Adapter-F and CLIP-Adapter as the CLI and Compare run them: K shots per class
//! (CoOp's draw), their features over augmented views, the adapter built (Tip-Adapter's cache) or
//! trained on them (the other two, on the epoch loop), its hyper-parameters chosen on the validation
//! split, the test split scored once.

use std::path::Path;

use candle_core::Tensor;
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
    /// Mean time of one training step of Tip-Adapter-F / CLIP-Adapter (None: nothing trained).
    pub ms_per_step: Option<f64>,
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

/// A fitted feature adapter: how it scores image features against normalised class weights.
pub enum Fitted {
    /// Tip-Adapter's cache (for -F, with its trained keys) and its searched α, β.
    Cache(TipCache, Searched),
    /// CLIP-Adapter's trained bottleneck.
    Residual(Adapter),
}

impl Fitted {
    /// Logits `[B, C]` of image features `[B, P]` against the classes the adapter was fitted on.
    pub fn logits(&self, feats: &Tensor, weights: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            Fitted::Cache(cache, s) => cache.logits(feats, weights, scale, s.alpha, s.beta),
            Fitted::Residual(adapter) => adapter.logits(feats, weights, scale),
        }
    }

    /// Logits against classes the adapter never saw (base-to-novel's novel half): the cache holds no
    /// image of them, so Tip-Adapter(-F) is zero-shot there; CLIP-Adapter's residual applies to any
    /// class.
    pub fn logits_unseen(&self, feats: &Tensor, weights: &Tensor, scale: f64) -> Result<Tensor> {
        match self {
            // `scale` is the model's f32 temperature widened: narrowing it back is exact.
            Fitted::Cache(..) => zeroshot::logits_tensor(feats, weights, scale as f32),
            Fitted::Residual(adapter) => adapter.logits(feats, weights, scale),
        }
    }

    pub fn searched(&self) -> Option<Searched> {
        match self {
            Fitted::Cache(_, s) => Some(*s),
            Fitted::Residual(_) => None,
        }
    }
}

/// A fitted adapter with its validation accuracy and, for the trained ones, their mean step time.
pub struct FitOutcome {
    pub fitted: Fitted,
    pub val_acc: f64,
    pub ms_per_step: Option<f64>,
}

/// Builds (Tip-Adapter) or trains (the others) the adapter on prepared features; α and β are searched on
/// the validation split.
pub fn fit_adapter(
    clip: &LoadedClip,
    classes: usize,
    prepared: &AdapterData,
    run: &AdapterRun,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(crate::train::epoch_loop::TrainEvent),
) -> Result<FitOutcome> {
    let AdapterData {
        train,
        val,
        weights,
        ..
    } = prepared;
    let scale = f64::from(clip.logit_scale());
    let grid = SearchGrid::default();
    let searched = |cache: TipCache, ms_per_step| -> Result<FitOutcome> {
        let s = cache.search(val, weights, scale, &grid)?;
        Ok(FitOutcome {
            fitted: Fitted::Cache(cache, s),
            val_acc: s.val_acc,
            ms_per_step,
        })
    };
    let method = run.method;
    let Some((optim, batch)) = method.recipe() else {
        return searched(TipCache::build(train, classes)?, None);
    };
    let adapter = match method {
        // Tip-Adapter-F trains from its cache with its initial α = β = 1, then searches them again.
        AdapterMethod::TipAdapterF { .. } => {
            Adapter::tip_f(&TipCache::build(train, classes)?, 1.0, 1.0)?
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
    run_until(
        &mut trainer,
        set,
        usize::MAX,
        method.name(),
        progress,
        &mut |e, _| on_event(e),
    )?;
    let val_acc = trainer.accuracy(val)?;
    let ms_per_step = trainer
        .state
        .history
        .last()
        .and_then(crate::train::epoch_loop::EpochStats::ms_per_step);
    match trainer.adapter {
        Adapter::TipF { keys, values, .. } => searched(
            TipCache {
                keys: keys.as_tensor().detach(),
                values,
            },
            ms_per_step,
        ),
        adapter => Ok(FitOutcome {
            fitted: Fitted::Residual(adapter),
            val_acc,
            ms_per_step,
        }),
    }
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
    let names = &data.class_names;
    let start = std::time::Instant::now();
    let FitOutcome {
        fitted,
        val_acc,
        ms_per_step,
    } = fit_adapter(clip, names.len(), prepared, run, progress, on_event)?;
    let AdapterData {
        split,
        test,
        test_feats,
        weights,
        ..
    } = prepared;
    let logits: Vec<Vec<f32>> = fitted
        .logits(&test_feats.feats, weights, f64::from(clip.logit_scale()))?
        .to_vec2()?;
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
        searched: fitted.searched(),
        val_acc,
        train_seconds: start.elapsed().as_secs_f64(),
        ms_per_step,
        zero_shot_test_acc: evaluate(&zero_shot, &labels, &paths, names).accuracy,
        split: test.description.clone(),
        test: evaluate(&logits, &labels, &paths, names),
    })
}
