//! Tip-Adapter as the CLI and Compare run it: K shots per class (CoOp's draw), their features over
//! augmented views as the cache, α and β searched on the validation split, the test split scored once.

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
use crate::train::features::extract;

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
}

impl Default for TipRun {
    fn default() -> Self {
        TipRun { shots: Some(16), seed: 1, split_seed: 0, views: 10, template: zeroshot::DEFAULT_TEMPLATE.to_string() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TipReport {
    pub run: TipRun,
    pub cache_images: usize,
    pub searched: Searched,
    /// Zero-shot with the same template on the same test images, for comparison.
    pub zero_shot_test_acc: f64,
    pub split: String,
    #[serde(flatten)]
    pub test: Evaluation,
}

pub fn run(clip: &LoadedClip, data: &DatasetFolder, run: &TipRun, cache: Option<&Path>, progress: &dyn Progress) -> Result<TipReport> {
    let split = few_shot(data, run.shots, run.seed, run.split_seed)?;
    let test = test_split(data, run.split_seed)?;
    let names = &data.class_names;
    let train = extract(clip, &split.train, run.views.max(1), run.seed, cache, progress)?;
    let val = extract(clip, &split.val, 0, 0, cache, progress)?;
    let test_feats = extract(clip, &test.samples, 0, 0, cache, progress)?;
    let weights = zeroshot::class_weights(clip, names, std::slice::from_ref(&run.template), progress)?;
    let scale = f64::from(clip.model.logit_scale());
    let tip = TipCache::build(&train, names.len())?;
    let searched = tip.search(&val, &weights, scale, &SearchGrid::default())?;
    let labels: Vec<usize> = test.samples.iter().map(|s| s.label).collect();
    let paths: Vec<String> = test.samples.iter().map(|s| s.path.display().to_string()).collect();
    let logits: Vec<Vec<f32>> = tip.logits(&test_feats.feats, &weights, scale, searched.alpha, searched.beta)?.to_vec2()?;
    let zero_shot = zeroshot::logits(&test_feats.feats, &weights, clip.model.logit_scale())?;
    Ok(TipReport {
        run: run.clone(),
        cache_images: split.train.len(),
        searched,
        zero_shot_test_acc: evaluate(&zero_shot, &labels, &paths, names).accuracy,
        split: test.description,
        test: evaluate(&logits, &labels, &paths, names),
    })
}
