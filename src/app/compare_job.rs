//! The Compare tab's computation: hand-crafted templates one by one, their ensemble, every learned
//! prompts file and (optionally) a linear probe, all scored on the same test split with features
//! computed once.

use std::path::{Path, PathBuf};

use crate::clip::LoadedClip;
use crate::data::fewshot::{few_shot, test_split};
use crate::data::DatasetFolder;
use crate::error::{Error, Result};
use crate::eval::linear_probe::LinearProbe;
use crate::eval::metrics::{evaluate, Evaluation};
use crate::eval::zeroshot;
use crate::export::prompt_file::PromptFile;
use crate::progress::Progress;
use crate::run::coop::{evaluate_logits, evaluate_weights};
use crate::train::features::extract;

/// Linear probe optimisation steps per λ.
const PROBE_ITERS: usize = 300;

#[derive(Debug, Clone, PartialEq)]
pub struct CompareRequest {
    pub templates: Vec<String>,
    /// (label, prompts file).
    pub learned: Vec<(String, PathBuf)>,
    /// The linear probe's training images, when it is fitted.
    pub linear_probe: Option<ProbeSet>,
    /// Feature-level baselines (Tip-Adapter, -F, CLIP-Adapter) on these K shots.
    pub adapters: Option<(ProbeSet, Vec<crate::run::tip::AdapterMethod>)>,
}

/// Compare's base-to-novel mode: the zero-shot row's template, the methods and the seeds (the split
/// seed is Compare's, 0).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseToNovelRequest {
    pub template: String,
    pub methods: Vec<crate::run::base_to_novel::Method>,
    pub seeds: Vec<u64>,
}

/// Which training images the linear probe is fitted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSet {
    /// K per class; None: every training image.
    pub shots: Option<usize>,
    /// Draws the K shots (CoOp's `--seed`).
    pub seed: u64,
}

/// The Compare tab's choice of the probe's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeShots {
    /// The shots and seed of the first loaded few-shot prompts file (16 shots, seed 1 when there is none):
    /// the fair baseline beside K-shot learned prompts.
    SameAsLearned,
    Shots(usize),
    All,
}

impl ProbeShots {
    pub const CHOICES: [ProbeShots; 7] = [
        ProbeShots::SameAsLearned,
        ProbeShots::Shots(1),
        ProbeShots::Shots(2),
        ProbeShots::Shots(4),
        ProbeShots::Shots(8),
        ProbeShots::Shots(16),
        ProbeShots::All,
    ];

    pub fn label(self) -> String {
        match self {
            ProbeShots::SameAsLearned => "same shots as the learned prompts".into(),
            ProbeShots::Shots(k) => format!("{k} shots"),
            ProbeShots::All => "all training images".into(),
        }
    }

    /// The images this choice means, given the loaded prompts files' metadata.
    pub fn resolve<'a>(
        self,
        learned: impl IntoIterator<Item = &'a crate::export::prompt_file::PromptMeta>,
    ) -> ProbeSet {
        const DEFAULT: ProbeSet = ProbeSet {
            shots: Some(16),
            seed: 1,
        };
        match self {
            ProbeShots::Shots(k) => ProbeSet {
                shots: Some(k),
                seed: DEFAULT.seed,
            },
            ProbeShots::All => ProbeSet {
                shots: None,
                seed: DEFAULT.seed,
            },
            ProbeShots::SameAsLearned => learned
                .into_iter()
                .find_map(|m| {
                    let seed = m
                        .metrics
                        .pointer("/run/seed")
                        .and_then(|v| v.as_u64())
                        .unwrap_or(DEFAULT.seed);
                    m.shots.map(|k| ProbeSet {
                        shots: Some(k),
                        seed,
                    })
                })
                .unwrap_or(DEFAULT),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MethodResult {
    pub name: String,
    pub eval: Evaluation,
}

/// A learned prompts file that could not be scored on this model and dataset, and why: shown in its
/// own column, while the rest of the comparison stands.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub name: String,
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub model: String,
    /// Which images: "test/ folder", or the derived test split of a folder without one.
    pub split: String,
    pub classes: Vec<String>,
    pub paths: Vec<PathBuf>,
    pub methods: Vec<MethodResult>,
    pub rejected: Vec<Rejected>,
}

/// The split seed the app scores with: the test split CoOp runs are evaluated on (`train --split-seed
/// 0`) and the CLI's zero-shot scores, and the images Align browses.
pub const SPLIT_SEED: u64 = 0;

pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    req: &CompareRequest,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Comparison> {
    if req.templates.is_empty() {
        return Err(Error::invalid("write at least one prompt template"));
    }
    // Every row sees the same images as the commands do.
    let split = test_split(data, SPLIT_SEED)?;
    let (test_samples, split_name) = (split.samples, split.description);
    let names = &data.class_names;
    let test = extract(clip, &test_samples, 0, 0, cache, progress)?;
    let mut methods = Vec::new();
    for t in &req.templates {
        let w = zeroshot::class_weights(clip, names, std::slice::from_ref(t), progress)?;
        methods.push(MethodResult {
            name: format!("\"{t}\""),
            eval: evaluate_weights(clip, &w, &test, &test_samples, names)?,
        });
    }
    if req.templates.len() > 1 {
        let w = zeroshot::class_weights(clip, names, &req.templates, progress)?;
        let name = format!("ensemble of {}", req.templates.len());
        methods.push(MethodResult {
            name,
            eval: evaluate_weights(clip, &w, &test, &test_samples, names)?,
        });
    }
    let mut rejected = Vec::new();
    for (label, path) in &req.learned {
        let scored = (|| -> Result<Evaluation> {
            let f = PromptFile::load(path)?;
            let scorer = f.scorer(clip, path)?;
            check_classes(&f.meta.class_names, names, path)?;
            let logits = scorer.logits(clip, &test.first_views()?)?;
            Ok(evaluate_logits(&logits.to_vec2()?, &test_samples, names))
        })();
        match scored {
            Ok(eval) => methods.push(MethodResult {
                name: label.clone(),
                eval,
            }),
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => rejected.push(Rejected {
                name: label.clone(),
                path: path.clone(),
                reason: e.to_string(),
            }),
        }
    }
    if let Some(probe) = req.linear_probe {
        // The split seed is the one every row's test images come from, so the probe never sees them.
        let split = few_shot(data, probe.shots, probe.seed, 0)?;
        let train = extract(clip, &split.train, 0, 0, cache, progress)?;
        let val = extract(clip, &split.val, 0, 0, cache, progress)?;
        let val_set = if val.labels.is_empty() { &train } else { &val };
        let (lp, _) = LinearProbe::search(
            (&train.feats, &train.labels),
            (&val_set.feats, &val_set.labels),
            names.len(),
            PROBE_ITERS,
            progress,
        )?;
        let logits: Vec<Vec<f32>> = lp.logits(&test.feats)?.to_vec2()?;
        let labels: Vec<usize> = test_samples.iter().map(|s| s.label).collect();
        let paths: Vec<String> = test_samples
            .iter()
            .map(|s| s.path.display().to_string())
            .collect();
        let shots = probe.shots.map_or("all training images".to_string(), |k| {
            format!("{k}-shot, seed {}", probe.seed)
        });
        methods.push(MethodResult {
            name: format!("linear probe ({shots})"),
            eval: evaluate(&logits, &labels, &paths, names),
        });
    }
    if let Some((set, adapters)) = &req.adapters {
        // The adapters share the shots, views and template: their features are prepared once.
        let base = crate::run::tip::AdapterRun {
            shots: set.shots,
            seed: set.seed,
            template: req.templates[0].clone(),
            ..Default::default()
        };
        let prepared = crate::run::tip::prepare(clip, data, &base, cache, progress)?;
        for &method in adapters {
            let r = crate::run::tip::fit(
                clip,
                data,
                &prepared,
                &crate::run::tip::AdapterRun {
                    method,
                    ..base.clone()
                },
                progress,
                &mut |_| {},
            )?;
            methods.push(MethodResult {
                name: r.label(),
                eval: r.test,
            });
        }
    }
    Ok(Comparison {
        model: clip.id.clone(),
        split: split_name,
        classes: names.clone(),
        paths: test_samples.iter().map(|s| s.path.clone()).collect(),
        methods,
        rejected,
    })
}

/// A prompts file scores a dataset only with the same classes in the same order: its class weights are
/// rows by class index.
pub fn check_classes(
    file_classes: &[String],
    dataset_classes: &[String],
    path: &Path,
) -> Result<()> {
    if file_classes == dataset_classes {
        return Ok(());
    }
    Err(Error::bad_file(
        path,
        classes_problem(file_classes, dataset_classes),
        "compare it on the dataset it was trained on (or give that dataset the same class names)",
    ))
}

/// Why two class lists differ, in a line: how many, which are missing, or only the order.
pub fn classes_problem(file_classes: &[String], dataset_classes: &[String]) -> String {
    let missing: Vec<&str> = dataset_classes
        .iter()
        .filter(|c| !file_classes.contains(c))
        .map(String::as_str)
        .collect();
    let extra: Vec<&str> = file_classes
        .iter()
        .filter(|c| !dataset_classes.contains(c))
        .map(String::as_str)
        .collect();
    let list = |v: &[&str]| {
        if v.len() > 4 {
            format!("{}, … ({} in all)", v[..4].join(", "), v.len())
        } else {
            v.join(", ")
        }
    };
    if missing.is_empty() && extra.is_empty() {
        format!(
            "has the dataset's {} classes in another order",
            dataset_classes.len()
        )
    } else {
        let mut why = format!(
            "was trained on {} classes, the dataset has {}",
            file_classes.len(),
            dataset_classes.len()
        );
        if !extra.is_empty() {
            why += &format!("; not in the dataset: {}", list(&extra));
        }
        if !missing.is_empty() {
            why += &format!("; not in the file: {}", list(&missing));
        }
        why
    }
}
