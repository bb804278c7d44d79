//! A whole CoOp experiment as the CLI and the app run it: few-shot split → cached features → training
//! (resumable) → evaluation against the hand-crafted baseline → export.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::Serialize;

use crate::clip::LoadedClip;
use crate::data::fewshot::{few_shot, FewShotSplit};
use crate::data::{DatasetFolder, Sample};
use crate::error::Result;
use crate::eval::metrics::{evaluate, Evaluation};
use crate::eval::zeroshot;
use crate::export::prompt_file::PromptFile;
use crate::progress::Progress;
use crate::prompt::cocoop::MetaNet;
use crate::prompt::coop::PromptLearner;
use crate::prompt::CoopVariant;
use crate::train::config::{Augment, CoopRun};
use crate::train::coop::{checkpoint_path, EpochStats, Features, TrainEvent, Trainer};
use crate::train::features::extract;

/// The split and its features, computed once per run (and cached on disk across runs).
pub struct RunData {
    pub split: FewShotSplit,
    pub train: Features,
    pub val: Features,
    pub test: Features,
}

pub fn prepare(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &CoopRun,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<RunData> {
    let split = few_shot(data, run.shots, run.seed, run.split_seed)?;
    let views = if run.augment == Augment::CropFlip {
        run.views.max(1)
    } else {
        0
    };
    let train = extract(clip, &split.train, views, run.seed, cache, progress)?;
    let val = extract(clip, &split.val, 0, run.seed, cache, progress)?;
    let test = extract(clip, &split.test, 0, run.seed, cache, progress)?;
    Ok(RunData {
        split,
        train,
        val,
        test,
    })
}

/// Accuracy overall, per class, per image and the confusion matrix of normalised class weights on a set.
pub fn evaluate_weights(
    clip: &LoadedClip,
    weights: &Tensor,
    feats: &Features,
    samples: &[Sample],
    class_names: &[String],
) -> Result<Evaluation> {
    let logits = zeroshot::logits(&feats.feats, weights, clip.logit_scale())?;
    Ok(evaluate_logits(&logits, samples, class_names))
}

/// [`evaluate_weights`] of logits already computed (CoCoOp's are per image).
pub fn evaluate_logits(
    logits: &[Vec<f32>],
    samples: &[Sample],
    class_names: &[String],
) -> Evaluation {
    let labels: Vec<usize> = samples.iter().map(|s| s.label).collect();
    let paths: Vec<String> = samples
        .iter()
        .map(|s| s.path.display().to_string())
        .collect();
    evaluate(logits, &labels, &paths, class_names)
}

#[derive(Debug, Clone, Serialize)]
pub struct RunMetrics {
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    pub val_acc: f64,
    pub test_acc: f64,
    pub handcrafted_template: String,
    pub handcrafted_test_acc: f64,
    pub epochs_run: usize,
    pub final_loss: Option<f64>,
    pub train_seconds: f64,
    /// Mean time of one optimiser step (forward, backward, update), validation left out.
    pub ms_per_step: Option<f64>,
}

pub struct Outcome {
    pub learner: PromptLearner,
    /// CoCoOp's meta-net.
    pub meta: Option<MetaNet>,
    pub class_weights: Tensor,
    pub metrics: RunMetrics,
    pub test_eval: Evaluation,
    pub history: Vec<crate::train::epoch_loop::EpochStats>,
}

/// Trains (resuming from `out`'s checkpoint when `resume` and it exists), evaluates, and writes the
/// export to `out`. The checkpoint is removed once the export is written.
#[allow(clippy::too_many_arguments)]
pub fn train(
    clip: &LoadedClip,
    data: &DatasetFolder,
    rd: &RunData,
    run: &CoopRun,
    out: Option<&Path>,
    resume: bool,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Outcome> {
    if let Some(out) = out {
        // Fail before hours of training, not after, when the export cannot be written.
        crate::error::check_writable(out)?;
    }
    let names = &data.class_names;
    let learner = PromptLearner::new(&clip.model()?.text, clip.tokenizer()?, names, &run.coop)?;
    let model = clip.model()?;
    let trainer = Trainer::new(&model.text, learner, run.train.clone(), clip.logit_scale());
    // The hand-crafted baseline's weights: KgCoOp's anchor while training, the baseline row after.
    let hand = zeroshot::class_weights(clip, names, std::slice::from_ref(&run.template), progress)?;
    let mut trainer = match run.variant {
        CoopVariant::Coop => trainer,
        CoopVariant::Kgcoop { lambda } => trainer.with_kg_anchor(hand.clone(), lambda)?,
        CoopVariant::Cocoop => trainer.with_meta_net(MetaNet::new(
            clip.projection_dim(),
            model.config.text_config.hidden_size,
            run.seed,
            &clip.device,
        )?),
    };
    let ckpt: Option<PathBuf> = out.map(checkpoint_path);
    if let (true, Some(c)) = (resume, &ckpt) {
        if c.is_file() {
            trainer.resume(c)?;
        }
    }
    trainer.run(
        &rd.train,
        Some(&rd.val),
        ckpt.as_deref(),
        progress,
        on_event,
    )?;
    let weights = trainer.class_weights()?;
    let scored = |set: &Features, samples: &[Sample]| -> Result<Evaluation> {
        Ok(evaluate_logits(
            &trainer.logits(&set.first_views()?)?.to_vec2()?,
            samples,
            names,
        ))
    };
    let val_eval = scored(&rd.val, &rd.split.val)?;
    let test_eval = scored(&rd.test, &rd.split.test)?;
    let hand_eval = evaluate_weights(clip, &hand, &rd.test, &rd.split.test, names)?;
    let metrics = RunMetrics {
        train_images: rd.split.train.len(),
        val_images: rd.split.val.len(),
        test_images: rd.split.test.len(),
        val_acc: val_eval.accuracy,
        test_acc: test_eval.accuracy,
        handcrafted_template: run.template.clone(),
        handcrafted_test_acc: hand_eval.accuracy,
        epochs_run: trainer.state.epoch,
        final_loss: trainer.state.history.last().map(|h| h.loss),
        train_seconds: trainer.state.history.last().map_or(0.0, |h| h.elapsed_s),
        ms_per_step: trainer
            .state
            .history
            .last()
            .and_then(EpochStats::ms_per_step),
    };
    let history = trainer.state.history.clone();
    let (learner, meta) = trainer.into_parts();
    if let Some(out) = out {
        let mut file = PromptFile::new(clip, &learner, weights.clone())?;
        file.meta_net = meta.as_ref().map(MetaNet::tensors);
        file.meta.train = Some(run.train.clone());
        file.meta.variant = run.variant;
        file.meta.shots = run.shots;
        file.meta.augment = serde_json::to_value(run.augment)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        file.meta.views = run.views;
        file.meta.metrics = serde_json::json!({"run": run, "metrics": metrics});
        file.save(out)?;
        if let Some(c) = &ckpt {
            let _ = std::fs::remove_file(c);
        }
    }
    Ok(Outcome {
        learner,
        meta,
        class_weights: weights,
        metrics,
        test_eval,
        history,
    })
}
