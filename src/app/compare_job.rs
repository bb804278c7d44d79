//! The Compare tab's computation: hand-crafted templates one by one, their ensemble, every learned
//! prompts file and (optionally) a linear probe, all scored on the same test split with features
//! computed once.

use std::path::{Path, PathBuf};

use crate::clip::{l2_normalize, LoadedClip};
use crate::data::fewshot::few_shot;
use crate::data::DatasetFolder;
use crate::error::{Error, Result};
use crate::eval::linear_probe::LinearProbe;
use crate::eval::metrics::{evaluate, Evaluation};
use crate::eval::zeroshot;
use crate::export::prompt_file::PromptFile;
use crate::progress::Progress;
use crate::train::features::extract;
use crate::run::coop::evaluate_weights;

/// Linear probe optimisation steps per λ.
const PROBE_ITERS: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub struct CompareRequest {
    pub templates: Vec<String>,
    /// (label, prompts file).
    pub learned: Vec<(String, PathBuf)>,
    pub linear_probe: bool,
}

#[derive(Debug, Clone)]
pub struct MethodResult {
    pub name: String,
    pub eval: Evaluation,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub model: String,
    /// "test" (the dataset's test/ folder, or the derived test split of a flat folder).
    pub split: String,
    pub classes: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub methods: Vec<MethodResult>,
}

pub fn run(clip: &LoadedClip, data: &DatasetFolder, req: &CompareRequest, cache: Option<&Path>, progress: &dyn Progress) -> Result<Comparison> {
    if req.templates.is_empty() {
        return Err(Error::invalid("write at least one prompt template"));
    }
    // The split CoOp runs are evaluated on (train --split-seed 0), so every row sees the same images.
    let split = few_shot(data, None, 1, 0)?;
    let names = &data.class_names;
    let test = extract(clip, &split.test, 0, 0, cache, progress)?;
    let mut methods = Vec::new();
    for t in &req.templates {
        let w = zeroshot::class_weights(clip, names, std::slice::from_ref(t), progress)?;
        methods.push(MethodResult { name: format!("\"{t}\""), eval: evaluate_weights(clip, &w, &test, &split.test, names)? });
    }
    if req.templates.len() > 1 {
        let w = zeroshot::class_weights(clip, names, &req.templates, progress)?;
        let name = format!("ensemble of {}", req.templates.len());
        methods.push(MethodResult { name, eval: evaluate_weights(clip, &w, &test, &split.test, names)? });
    }
    for (label, path) in &req.learned {
        let f = PromptFile::load(path)?;
        f.check_model(clip, path)?;
        if &f.meta.class_names != names {
            return Err(Error::bad_file(
                path,
                format!("was trained on the classes {} but the dataset has {}", f.meta.class_names.join(", "), names.join(", ")),
                "compare it on the dataset it was trained on",
            ));
        }
        let w = l2_normalize(&f.class_embeds.to_device(&clip.device)?)?;
        methods.push(MethodResult { name: label.clone(), eval: evaluate_weights(clip, &w, &test, &split.test, names)? });
    }
    if req.linear_probe {
        let train = extract(clip, &split.train, 0, 0, cache, progress)?;
        let val = extract(clip, &split.val, 0, 0, cache, progress)?;
        let val_set = if val.labels.is_empty() { &train } else { &val };
        let (probe, _) = LinearProbe::search(
            (&train.feats, &train.labels),
            (&val_set.feats, &val_set.labels),
            names.len(),
            PROBE_ITERS,
            progress,
        )?;
        let logits: Vec<Vec<f32>> = probe.logits(&test.feats)?.to_vec2()?;
        let labels: Vec<usize> = split.test.iter().map(|s| s.label).collect();
        let paths: Vec<String> = split.test.iter().map(|s| s.path.display().to_string()).collect();
        methods.push(MethodResult {
            name: format!("linear probe ({} train images)", split.train.len()),
            eval: evaluate(&logits, &labels, &paths, names),
        });
    }
    Ok(Comparison {
        model: clip.id.clone(),
        split: "test".into(),
        classes: names.clone(),
        paths: split.test.iter().map(|s| s.path.clone()).collect(),
        methods,
    })
}
