//! CoCoOp's base-to-novel protocol: the classes, in sorted order, split in two — the first ⌈C/2⌉ are
//! *base*, the rest *novel*. Prompts are learned K-shot on the base classes only, then scored on the base
//! test images and, with the novel class names in the same context, on the novel test images; the
//! harmonic mean H = 2·base·novel / (base + novel) rewards keeping what CLIP knew. Over several seeds:
//! mean ± standard deviation. Zero-shot CLIP with the run's template is the reference row.

use std::path::Path;

use serde::Serialize;

use crate::clip::{l2_normalize, LoadedClip};
use crate::data::fewshot::test_split;
use crate::data::DatasetFolder;
use crate::error::{Error, Result};
use crate::eval::zeroshot;
use crate::progress::Progress;
use crate::prompt::coop::{CoopConfig, PromptLearner};
use crate::train::cocoop;
use crate::train::config::CoopRun;
use crate::train::coop::TrainEvent;
use crate::train::features::{extract, FeatureSet};

use super::coop::{evaluate_weights, prepare, train};

/// The class indices of the base and the novel half (CoCoOp's `subsample_classes`).
pub fn split_classes(classes: usize) -> (Vec<usize>, Vec<usize>) {
    let base = classes.div_ceil(2);
    ((0..base).collect(), (base..classes).collect())
}

/// Base, novel and harmonic-mean accuracy of one method and seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BaseNovel {
    pub base: f64,
    pub novel: f64,
    pub harmonic: f64,
}

impl BaseNovel {
    pub fn new(base: f64, novel: f64) -> Self {
        let harmonic = if base + novel > 0.0 {
            2.0 * base * novel / (base + novel)
        } else {
            0.0
        };
        BaseNovel {
            base,
            novel,
            harmonic,
        }
    }
}

/// A method's results over the seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    pub seeds: Vec<(u64, BaseNovel)>,
    /// Base and novel averaged over seeds, H of those averages (as the papers report).
    pub mean: BaseNovel,
    /// Sample standard deviation over seeds (0 for one seed) of base, novel and the per-seed H.
    pub std: BaseNovel,
}

impl Row {
    fn new(method: String, seeds: Vec<(u64, BaseNovel)>) -> Self {
        let n = seeds.len().max(1) as f64;
        let mean_of = |f: fn(&BaseNovel) -> f64| seeds.iter().map(|(_, r)| f(r)).sum::<f64>() / n;
        let std_of = |f: fn(&BaseNovel) -> f64| {
            if seeds.len() < 2 {
                return 0.0;
            }
            let m = mean_of(f);
            (seeds.iter().map(|(_, r)| (f(r) - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        };
        let mean = BaseNovel::new(mean_of(|r| r.base), mean_of(|r| r.novel));
        let std = BaseNovel {
            base: std_of(|r| r.base),
            novel: std_of(|r| r.novel),
            harmonic: std_of(|r| r.harmonic),
        };
        Row {
            method,
            seeds,
            mean,
            std,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base_classes: Vec<String>,
    pub novel_classes: Vec<String>,
    pub shots: Option<usize>,
    pub rows: Vec<Row>,
}

/// Zero-shot and `run`'s method (CoOp, KgCoOp or CoCoOp; trained once per seed on the base classes),
/// on base and novel.
pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &CoopRun,
    seeds: &[u64],
    cache: Option<&Path>,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(u64, TrainEvent),
) -> Result<Report> {
    if data.num_classes() < 2 {
        return Err(Error::invalid("base-to-novel needs at least two classes"));
    }
    if run.coop.csc {
        return Err(Error::invalid("class-specific contexts (--csc) have nothing to carry to novel classes: use a unified context for base-to-novel"));
    }
    if seeds.is_empty() {
        return Err(Error::invalid("give at least one seed (--seeds 1,2,3)"));
    }
    let (b, n) = split_classes(data.num_classes());
    let (base, novel) = (data.subset(&b)?, data.subset(&n)?);
    // The test images of each half, encoded once for every seed.
    let test_of = |ds: &DatasetFolder| -> Result<(Vec<crate::data::Sample>, FeatureSet)> {
        let t = test_split(ds, run.split_seed)?;
        let f = extract(clip, &t.samples, 0, 0, cache, progress)?;
        Ok((t.samples, f))
    };
    let (base_test, novel_test) = (test_of(&base)?, test_of(&novel)?);
    let score = |ds: &DatasetFolder,
                 (samples, feats): &(Vec<crate::data::Sample>, FeatureSet),
                 weights: &candle_core::Tensor|
     -> Result<f64> {
        Ok(evaluate_weights(clip, weights, feats, samples, &ds.class_names)?.accuracy)
    };
    let template = std::slice::from_ref(&run.template);
    let zero = BaseNovel::new(
        score(
            &base,
            &base_test,
            &zeroshot::class_weights(clip, &base.class_names, template, progress)?,
        )?,
        score(
            &novel,
            &novel_test,
            &zeroshot::class_weights(clip, &novel.class_names, template, progress)?,
        )?,
    );
    let mut learned = Vec::new();
    for &seed in seeds {
        let seeded = run.clone().with_seed(seed);
        let rd = prepare(clip, &base, &seeded, cache, progress)?;
        // The learned context (M tokens, however it was initialised) with the novel class names in it.
        let on_novel = |learned: &PromptLearner| -> Result<PromptLearner> {
            let cfg = CoopConfig {
                ctx_init: None,
                n_ctx: learned.n_ctx,
                ..seeded.coop.clone()
            };
            let mut l = PromptLearner::new(
                &clip.model()?.text,
                clip.tokenizer()?,
                &novel.class_names,
                &cfg,
            )?;
            l.set_ctx(learned.ctx.as_tensor())?;
            Ok(l)
        };
        let outcome = train(clip, &base, &rd, &seeded, None, false, progress, &mut |e| {
            on_event(seed, e)
        })?;
        let novel_learner = on_novel(&outcome.learner)?;
        let text = &clip.model()?.text;
        let scale = clip.logit_scale();
        let result = match &outcome.meta {
            // CoCoOp: each test image against its own prompts, the novel ones with the same meta-net.
            Some(meta) => BaseNovel::new(
                cocoop::accuracy(text, &outcome.learner, meta, scale, &base_test.1)?,
                cocoop::accuracy(text, &novel_learner, meta, scale, &novel_test.1)?,
            ),
            None => BaseNovel::new(
                score(&base, &base_test, &outcome.class_weights)?,
                score(
                    &novel,
                    &novel_test,
                    &l2_normalize(&novel_learner.text_features(text)?.detach())?,
                )?,
            ),
        };
        learned.push((seed, result));
    }
    Ok(Report {
        base_classes: base.class_names.clone(),
        novel_classes: novel.class_names.clone(),
        shots: run.shots,
        rows: vec![
            Row::new(
                format!("zero-shot \"{}\"", run.template),
                seeds.iter().map(|&s| (s, zero)).collect(),
            ),
            Row::new(run.method_name(), learned),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_split_as_cocoop_does_and_h_is_the_harmonic_mean() {
        assert_eq!(split_classes(5), (vec![0, 1, 2], vec![3, 4]));
        assert_eq!(split_classes(4), (vec![0, 1], vec![2, 3]));
        let h = BaseNovel::new(0.8, 0.6);
        assert!((h.harmonic - 2.0 * 0.8 * 0.6 / 1.4).abs() < 1e-12);
        let row = Row::new(
            "m".into(),
            vec![(1, BaseNovel::new(0.8, 0.6)), (2, BaseNovel::new(0.6, 0.4))],
        );
        assert!((row.mean.base - 0.7).abs() < 1e-12 && (row.mean.novel - 0.5).abs() < 1e-12);
        assert!(
            (row.std.base - 0.2 / 2f64.sqrt()).abs() < 1e-12,
            "{:?}",
            row.std
        );
        assert!(
            (row.mean.harmonic - 2.0 * 0.7 * 0.5 / 1.2).abs() < 1e-12,
            "H of the mean accuracies"
        );
    }
}
