//! A whole MP-FGVC experiment as the CLI (and later the app) runs it: few-shot split → stage-1 inputs →
//! stage 1 → export (stage 1 only) → cached embeddings → stage 2 → evaluation of both stages on the test
//! split → export (both stages). A run cancelled during stage 2 leaves the stage-1 file at `out`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::clip::encode::pixel_batch;
use crate::clip::LoadedClip;
use crate::data::fewshot::{few_shot, test_split, FewShotSplit};
use crate::data::{DatasetFolder, Sample};
use crate::error::{Error, Result};
use crate::export::mpfgvc_file::MpFgvcFile;
use crate::fusion::params::ParamLinear;
use crate::fusion::tail::{check_blocks, VisionTail, HIDDEN_STAGE};
use crate::fusion::vlfm::{Vlfm, VlfmConfig, EXPANSION};
use crate::progress::check;
use crate::progress::Progress;
use crate::prompt::datp;
use crate::train::config::MpFgvcRun;
use crate::train::coop::checkpoint_path;
use crate::train::coop::EpochStats;
use crate::train::features::{extract, BATCH};
use crate::train::mpfgvc::{
    accuracy, fusion_inputs, vlfm_predict, Checkpoint, CheckpointSink, Split, Stage1, Stage1Model,
    Stage2, StageEvent,
};

/// The split and what each stage-1 input row holds, computed once per run.
pub struct RunData {
    pub split: FewShotSplit,
    pub train: Split,
    pub val: Split,
    pub test: Split,
}

fn split_of(
    clip: &LoadedClip,
    samples: &[Sample],
    n: usize,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Split> {
    Ok(Split {
        inputs: stage_inputs(clip, samples, n, cache, progress)?,
        labels: samples.iter().map(|s| s.label).collect(),
    })
}

/// What stage 1 keeps of `samples` (eval view): with `n` trained blocks the hidden states entering the
/// first of them `[N, T, D]` (in memory), with `n = 0` the projected features `[N, P]` (through the
/// feature cache in `cache_dir`).
pub fn stage_inputs(
    clip: &LoadedClip,
    samples: &[Sample],
    n: usize,
    cache_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Tensor> {
    let vision = &clip.model()?.vision;
    check_blocks(vision, n)?;
    if n == 0 {
        return Ok(extract(clip, samples, 0, 0, cache_dir, progress)?.feats);
    }
    let first = vision.layers.len() - n;
    let cfg = &vision.config;
    if samples.is_empty() {
        return Ok(Tensor::zeros(
            (0, cfg.num_patches() + 1, cfg.hidden_size),
            candle_core::DType::F32,
            &clip.device,
        )?);
    }
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let mut out = Vec::new();
    progress.update(HIDDEN_STAGE, 0, paths.len());
    for (b, chunk) in paths.chunks(BATCH).enumerate() {
        check(progress)?;
        let pixels = pixel_batch(clip, chunk)?;
        out.push(vision.run_blocks(&vision.embed(&pixels)?, 0, first)?);
        progress.update(
            HIDDEN_STAGE,
            (b * BATCH + chunk.len()).min(paths.len()),
            paths.len(),
        );
    }
    Ok(Tensor::cat(&out, 0)?)
}

/// Checks the settings that need no data, then draws the split and computes the stage-1 inputs.
pub fn prepare(
    clip: &LoadedClip,
    data: &DatasetFolder,
    run: &MpFgvcRun,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<RunData> {
    check_blocks(&clip.model()?.vision, run.train_blocks)?;
    datp::super_category_tokens(clip.tokenizer()?, &run.datp.super_category)?;
    if data.num_classes() < 2 {
        return Err(Error::invalid("MP-FGVC needs at least two sub-categories"));
    }
    let split = few_shot(data, run.shots, run.seed, run.split_seed)?;
    let n = run.train_blocks;
    let train = split_of(clip, &split.train, n, cache, progress)?;
    let val = split_of(clip, &split.val, n, cache, progress)?;
    let test = split_of(clip, &split.test, n, cache, progress)?;
    Ok(RunData {
        split,
        train,
        val,
        test,
    })
}

/// Test (and validation) accuracies of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Accuracies {
    /// Stage 1, argmax of the image-to-text (DaTP prompt) similarity.
    pub stage1_i2t: f64,
    /// Stage 1, argmax of the linear head on V.
    pub stage1_head: f64,
    /// Stage 2, the VLFM classifier (None when the file has no stage 2).
    pub stage2: Option<f64>,
    pub images: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunMetrics {
    pub train_images: usize,
    pub val_images: usize,
    pub test: Accuracies,
    pub val: Accuracies,
    pub epochs1: usize,
    pub epochs2: usize,
    pub final_loss1: Option<f64>,
    pub final_loss2: Option<f64>,
    pub stage1_seconds: f64,
    pub stage2_seconds: f64,
}

pub struct Outcome {
    pub metrics: RunMetrics,
    pub history1: Vec<EpochStats>,
    pub history2: Vec<EpochStats>,
}

/// The trained pieces of a run, however they were obtained (trained now, or read from a file).
pub struct Trained<'a> {
    pub stage1: Stage1Model<'a>,
    pub vlfm: Option<Vlfm>,
}

impl Trained<'_> {
    /// Accuracies on a split of stage-1 inputs.
    pub fn evaluate(&self, split: &Split, progress: &dyn Progress) -> Result<Accuracies> {
        let p = self.stage1.predict(&split.inputs, progress)?;
        let stage2 = match (&self.vlfm, split.is_empty()) {
            (Some(v), false) => {
                let e_t = self.stage1.text_embeddings()?;
                Some(accuracy(
                    &vlfm_predict(v, &fusion_inputs(&p.features)?, &e_t)?,
                    &split.labels,
                ))
            }
            (Some(_), true) => Some(0.0),
            (None, _) => None,
        };
        Ok(Accuracies {
            stage1_i2t: accuracy(&p.i2t, &split.labels),
            stage1_head: accuracy(&p.head, &split.labels),
            stage2,
            images: split.len(),
        })
    }

    /// Every tensor of the export.
    fn tensors(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        let mut out: std::collections::HashMap<String, Tensor> = self
            .stage1
            .named_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        out.insert("datp.class_embeds".into(), self.stage1.text_embeddings()?);
        if let Some(v) = &self.vlfm {
            out.extend(
                v.named_vars()
                    .into_iter()
                    .map(|(n, v)| (format!("vlfm.{n}"), v.as_tensor().clone())),
            );
        }
        Ok(out)
    }
}

fn stage1_model<'a>(
    clip: &'a LoadedClip,
    num_classes: usize,
    run: &MpFgvcRun,
) -> Result<Stage1Model<'a>> {
    let learner = datp::learner(
        &clip.model()?.text,
        clip.tokenizer()?,
        num_classes,
        &run.datp,
    )?;
    let tail = VisionTail::new(&clip.model()?.vision, run.train_blocks)?;
    let p = clip.projection_dim();
    let head = ParamLinear::new(p, num_classes, run.seed, "head", &clip.device)?;
    Ok(Stage1Model {
        text: &clip.model()?.text,
        learner,
        tail,
        head,
    })
}

fn save(
    clip: &LoadedClip,
    names: &[String],
    run: &MpFgvcRun,
    trained: &Trained,
    metrics: serde_json::Value,
    out: &Path,
) -> Result<()> {
    let mut meta = MpFgvcFile::meta_for(clip, names, run)?;
    meta.stages = if trained.vlfm.is_some() { 2 } else { 1 };
    meta.vlfm = trained.vlfm.as_ref().map(|v| v.config.clone());
    meta.metrics = metrics;
    MpFgvcFile {
        tensors: trained.tensors()?,
        meta,
    }
    .save(out)
}

/// The checkpoint's format tag; a checkpoint also records the run it belongs to.
const CHECKPOINT_FORMAT: &str = "promptscope-mpfgvc-checkpoint/1";

/// Trains both stages, evaluates them on the test split and writes the export to `out`. A checkpoint next
/// to `out` is rewritten after every epoch of either stage; with `resume` a killed or stopped run continues
/// from it to the same result, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn train(
    clip: &LoadedClip,
    data: &DatasetFolder,
    rd: &RunData,
    run: &MpFgvcRun,
    out: Option<&Path>,
    resume: bool,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(StageEvent),
) -> Result<Outcome> {
    if let Some(out) = out {
        // Fail before training, not after, when the export cannot be written.
        crate::error::check_writable(out)?;
    }
    let names = &data.class_names;
    let c = names.len();
    let ckpt_path: Option<PathBuf> = out.map(checkpoint_path);
    let run_json = serde_json::to_string(run).unwrap_or_default();
    let ckpt = match (&ckpt_path, resume) {
        (Some(p), true) => {
            Checkpoint::read_matching(p, CHECKPOINT_FORMAT, "an MP-FGVC", &run_json)?
        }
        _ => None,
    };
    let base_meta = HashMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        ("run".to_string(), run_json),
    ]);
    let model = stage1_model(clip, c, run)?;
    let mut s1 = Stage1::new(
        model,
        run.stage1.clone(),
        run.seed,
        &rd.train,
        Some(&rd.val),
    )?;
    if let Some(ckpt) = &ckpt {
        s1.restore(ckpt)?;
    }
    s1.checkpoint = ckpt_path.clone().map(|path| CheckpointSink {
        path,
        tensors: vec![],
        meta: base_meta.clone(),
    });
    s1.run(progress, on_event)?;
    let history1 = s1.state.history.clone();
    let (s1_tensors, mut s1_meta) = s1.snapshot();
    let mut trained = Trained {
        stage1: s1.model,
        vlfm: None,
    };
    if let Some(out) = out {
        save(
            clip,
            names,
            run,
            &trained,
            serde_json::json!({"run": run, "stage": 1}),
            out,
        )?;
    }

    // Stage 2 on cached embeddings: stage 1's image path runs once per image.
    let e_t = trained.stage1.text_embeddings()?;
    let embed = |s: &Split| -> Result<Split> {
        let v = trained
            .stage1
            .tail
            .image_features_batched(&s.inputs, progress)?;
        Ok(Split {
            inputs: fusion_inputs(&v)?,
            labels: s.labels.clone(),
        })
    };
    let (train2, val2) = (embed(&rd.train)?, embed(&rd.val)?);
    let cfg = VlfmConfig {
        dim: clip.projection_dim(),
        num_classes: c,
        expansion: EXPANSION,
        seed: run.seed,
    };
    let vlfm = Vlfm::new(&cfg, &clip.device)?;
    // Another batch-order stream than stage 1's.
    let mut s2 = Stage2::new(
        vlfm,
        e_t,
        run.stage2.clone(),
        run.seed ^ 0x5354_4147_4532,
        &train2,
        Some(&val2),
    )?;
    if let Some(ckpt) = ckpt.as_ref().filter(|c| c.meta.contains_key("s2.epoch")) {
        s2.restore(ckpt)?;
    }
    s1_meta.extend(base_meta);
    s2.checkpoint = ckpt_path.clone().map(|path| CheckpointSink {
        path,
        tensors: s1_tensors,
        meta: s1_meta,
    });
    s2.run(progress, on_event)?;
    let history2 = s2.state.history.clone();
    trained.vlfm = Some(s2.vlfm);

    let test = trained.evaluate(&rd.test, progress)?;
    let val = trained.evaluate(&rd.val, progress)?;
    let metrics = RunMetrics {
        train_images: rd.train.len(),
        val_images: rd.val.len(),
        test,
        val,
        epochs1: history1.len(),
        epochs2: history2.len(),
        final_loss1: history1.last().map(|h| h.loss),
        final_loss2: history2.last().map(|h| h.loss),
        stage1_seconds: history1.last().map_or(0.0, |h| h.elapsed_s),
        stage2_seconds: history2.last().map_or(0.0, |h| h.elapsed_s),
    };
    if let Some(out) = out {
        save(
            clip,
            names,
            run,
            &trained,
            serde_json::json!({"run": run, "metrics": metrics}),
            out,
        )?;
        if let Some(c) = &ckpt_path {
            let _ = std::fs::remove_file(c);
        }
    }
    Ok(Outcome {
        metrics,
        history1,
        history2,
    })
}

/// Rebuilds the trained pieces from a weights file on `clip` (checked to be the model it came from).
pub fn load_trained<'a>(
    clip: &'a LoadedClip,
    file: &MpFgvcFile,
    path: &Path,
) -> Result<Trained<'a>> {
    file.check_model(clip, path)?;
    let m = &file.meta;
    let bad = |e: Error| {
        Error::bad_file(
            path,
            e.to_string(),
            "export it again with `promptscope mpfgvc train`",
        )
    };
    let c = m.class_names.len();
    let mut learner =
        datp::learner(&clip.model()?.text, clip.tokenizer()?, c, &m.run.datp).map_err(bad)?;
    learner
        .set_ctx(&file.tensor("datp.ctx", path)?.to_device(&clip.device)?)
        .map_err(bad)?;
    let tail = VisionTail::from_tensors(&clip.model()?.vision, m.run.train_blocks, &file.tensors)
        .map_err(bad)?;
    let p = clip.projection_dim();
    let head = ParamLinear::from_tensors(
        file.tensor("head.weight", path)?,
        file.tensor("head.bias", path)?,
        p,
        c,
        "head",
        &clip.device,
    )
    .map_err(bad)?;
    let vlfm = match &m.vlfm {
        Some(cfg) => {
            Some(Vlfm::from_tensors(cfg, &file.with_prefix("vlfm."), &clip.device).map_err(bad)?)
        }
        None => None,
    };
    Ok(Trained {
        stage1: Stage1Model {
            text: &clip.model()?.text,
            learner,
            tail,
            head,
        },
        vlfm,
    })
}

/// Test accuracies of a weights file on a dataset: its `test_split` by the run's split seed, the images
/// `few_shot` set aside when it trained.
pub fn evaluate_file(
    clip: &LoadedClip,
    data: &DatasetFolder,
    path: &Path,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Accuracies> {
    let file = MpFgvcFile::load(path)?;
    if file.meta.class_names != data.class_names {
        return Err(Error::bad_file(
            path,
            format!(
                "was trained for classes {:?}, but {} has {:?}",
                file.meta.class_names,
                data.root.display(),
                data.class_names
            ),
            "evaluate it on the dataset it was trained on",
        ));
    }
    let trained = load_trained(clip, &file, path)?;
    let run = &file.meta.run;
    let split = test_split(data, run.split_seed)?;
    let test = split_of(clip, &split.samples, run.train_blocks, cache, progress)?;
    trained.evaluate(&test, progress)
}
