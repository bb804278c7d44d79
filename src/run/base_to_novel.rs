//! CoCoOp's base-to-novel protocol: the classes, in sorted order, split in two — the first ⌈C/2⌉ are
//! *base*, the rest *novel*. Prompts are learned K-shot on the base classes only, then scored on the base
//! test images and, with the novel class names in the same context, on the novel test images; the
//! harmonic mean H = 2·base·novel / (base + novel) rewards keeping what CLIP knew. Over several seeds:
//! mean ± standard deviation. Zero-shot CLIP with the run's template is the reference row.

use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::clip::{l2_normalize, LoadedClip};
use crate::data::fewshot::test_split;
use crate::data::DatasetFolder;
use crate::error::{Error, Result};
use crate::eval::zeroshot;
use crate::progress::Progress;
use crate::prompt::coop::{CoopConfig, PromptLearner};
use crate::prompt::CoopVariant;
use crate::train::cocoop;
use crate::train::config::{AdapterMethod, AdapterRun, CoopRun};
use crate::train::coop::TrainEvent;
use crate::train::features::{extract, FeatureSet};

use super::coop::{evaluate_logits, prepare, train};
use super::tip;

/// The class indices of the base and the novel half (CoCoOp's `subsample_classes`).
pub fn split_classes(classes: usize) -> (Vec<usize>, Vec<usize>) {
    let base = classes.div_ceil(2);
    ((0..base).collect(), (base..classes).collect())
}

/// Base, novel and harmonic-mean accuracy of one method and seed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

/// A method base-to-novel can learn on the base classes and score on both halves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Method {
    /// CoOp, KgCoOp or CoCoOp: the learned context carried to the novel class names.
    Prompts(CoopRun),
    /// Tip-Adapter, Tip-Adapter-F or CLIP-Adapter, fitted on the base classes' shots.
    Adapter(AdapterRun),
}

/// The methods by the names the CLI and the app use for them (`coop`, `kgcoop`, `cocoop`,
/// `tip-adapter`, `tip-adapter-f`, `clip-adapter`), in the order of the papers' tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum MethodName {
    Coop,
    Kgcoop,
    Cocoop,
    TipAdapter,
    TipAdapterF,
    ClipAdapter,
}

impl MethodName {
    pub const ALL: [MethodName; 6] = [
        Self::Coop,
        Self::Kgcoop,
        Self::Cocoop,
        Self::TipAdapter,
        Self::TipAdapterF,
        Self::ClipAdapter,
    ];

    /// The name the CLI takes and prints: `tip-adapter-f`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coop => "coop",
            Self::Kgcoop => "kgcoop",
            Self::Cocoop => "cocoop",
            Self::TipAdapter => "tip-adapter",
            Self::TipAdapterF => "tip-adapter-f",
            Self::ClipAdapter => "clip-adapter",
        }
    }

    /// The name people read: `Tip-Adapter-F`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Coop => "CoOp",
            Self::Kgcoop => "KgCoOp",
            Self::Cocoop => "CoCoOp",
            Self::TipAdapter => "Tip-Adapter",
            Self::TipAdapterF => "Tip-Adapter-F",
            Self::ClipAdapter => "CLIP-Adapter",
        }
    }

    /// A feature adapter (trained on image features), not a prompt method.
    pub fn is_adapter(self) -> bool {
        matches!(
            self,
            Self::TipAdapter | Self::TipAdapterF | Self::ClipAdapter
        )
    }

    /// A member of the CoOp family, with its paper's setting (KgCoOp's λ = 8).
    pub fn variant(self) -> Option<CoopVariant> {
        match self {
            Self::Coop => Some(CoopVariant::Coop),
            Self::Kgcoop => Some(CoopVariant::Kgcoop {
                lambda: CoopVariant::KG_LAMBDA,
            }),
            Self::Cocoop => Some(CoopVariant::Cocoop),
            _ => None,
        }
    }

    /// A feature adapter with its paper's epochs, or `epochs` when given.
    pub fn adapter(self, epochs: Option<usize>) -> Option<AdapterMethod> {
        match self {
            Self::TipAdapter => Some(AdapterMethod::TipAdapter),
            Self::TipAdapterF => Some(AdapterMethod::TipAdapterF {
                epochs: epochs.unwrap_or(20),
            }),
            Self::ClipAdapter => Some(AdapterMethod::ClipAdapter {
                epochs: epochs.unwrap_or(200),
            }),
            _ => None,
        }
    }

    /// Names as the CLI takes them (a comma list, or `all`), in order, each once.
    pub fn parse_list(items: &[String]) -> Result<Vec<MethodName>> {
        crate::value_list::parse_list(items, &Self::ALL, "base-to-novel method")
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Method {
    /// Method `name` with its paper's recipe for `shots` per class: CoOp's
    /// epochs for the shots (M = 16), KgCoOp with λ = 8, CoCoOp's (M = 4 "a photo of a", 10 epochs,
    /// batch 1), Tip-Adapter's 10 views, Tip-Adapter-F's 20 and CLIP-Adapter's 200 epochs.
    pub fn recipe(
        name: MethodName,
        shots: Option<usize>,
        template: &str,
        split_seed: u64,
    ) -> Result<Self> {
        let prompts = |mut r: CoopRun| {
            r.shots = shots;
            r.split_seed = split_seed;
            r.template = template.to_string();
            if r.variant != CoopVariant::Cocoop {
                r.train.optim.epochs = crate::train::optim::default_epochs(shots);
            }
            Method::Prompts(r)
        };
        let adapter = |method| {
            Method::Adapter(AdapterRun {
                shots,
                split_seed,
                template: template.to_string(),
                method,
                ..AdapterRun::default()
            })
        };
        Ok(match (name.variant(), name.adapter(None)) {
            (Some(variant), _) => prompts(CoopRun::recipe(variant)),
            (None, Some(method)) => adapter(method),
            (None, None) => unreachable!("every method is a CoOp variant or an adapter"),
        })
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Method::Prompts(r) => r.validate(),
            Method::Adapter(r) => r.validate(),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Method::Prompts(r) => r.method_name(),
            Method::Adapter(r) => r.method.name().to_string(),
        }
    }

    pub fn with_seed(&self, seed: u64) -> Self {
        match self {
            Method::Prompts(r) => Method::Prompts(r.clone().with_seed(seed)),
            Method::Adapter(r) => Method::Adapter(AdapterRun { seed, ..r.clone() }),
        }
    }

    pub fn shots(&self) -> Option<usize> {
        match self {
            Method::Prompts(r) => r.shots,
            Method::Adapter(r) => r.shots,
        }
    }
}

/// The two halves of one dataset, their test images encoded and their zero-shot weights: what every
/// method and seed of a base-to-novel table is scored against. A sweep opens one per task.
pub struct Halves<'a> {
    clip: &'a LoadedClip,
    base: DatasetFolder,
    novel: DatasetFolder,
    base_test: (Vec<crate::data::Sample>, FeatureSet),
    novel_test: (Vec<crate::data::Sample>, FeatureSet),
    base_w: Tensor,
    novel_w: Tensor,
    template: String,
    cache: Option<&'a Path>,
}

impl<'a> Halves<'a> {
    pub fn open(
        clip: &'a LoadedClip,
        data: &DatasetFolder,
        template: &str,
        split_seed: u64,
        cache: Option<&'a Path>,
        progress: &dyn Progress,
    ) -> Result<Self> {
        if data.num_classes() < 2 {
            return Err(Error::invalid("base-to-novel needs at least two classes"));
        }
        if !template.contains("{}") {
            return Err(Error::invalid(format!(
                "the template '{template}' has no {{}} for the class name"
            )));
        }
        let (b, n) = split_classes(data.num_classes());
        let (base, novel) = (data.subset(&b)?, data.subset(&n)?);
        // The test images of each half, encoded once for every method and seed.
        let test_of = |ds: &DatasetFolder| -> Result<(Vec<crate::data::Sample>, FeatureSet)> {
            let t = test_split(ds, split_seed)?;
            let f = extract(clip, &t.samples, 0, 0, cache, progress)?;
            Ok((t.samples, f))
        };
        let (base_test, novel_test) = (test_of(&base)?, test_of(&novel)?);
        let templates = [template.to_string()];
        let weights_of = |ds: &DatasetFolder| {
            zeroshot::class_weights(clip, &ds.class_names, &templates, progress)
        };
        let (base_w, novel_w) = (weights_of(&base)?, weights_of(&novel)?);
        Ok(Self {
            clip,
            base,
            novel,
            base_test,
            novel_test,
            base_w,
            novel_w,
            template: template.to_string(),
            cache,
        })
    }

    pub fn base_classes(&self) -> &[String] {
        &self.base.class_names
    }

    pub fn novel_classes(&self) -> &[String] {
        &self.novel.class_names
    }

    /// The name of the zero-shot row: `zero-shot "a photo of a {}."`.
    pub fn zero_shot_name(&self) -> String {
        format!("zero-shot \"{}\"", self.template)
    }

    fn accuracy(
        (samples, _): &(Vec<crate::data::Sample>, FeatureSet),
        ds: &DatasetFolder,
        logits: &Tensor,
    ) -> Result<f64> {
        Ok(evaluate_logits(&logits.to_vec2()?, samples, &ds.class_names).accuracy)
    }

    fn plain(&self, feats: &FeatureSet, w: &Tensor) -> Result<Tensor> {
        zeroshot::logits_tensor(&feats.feats, w, self.clip.logit_scale())
    }

    /// Zero-shot CLIP with the template on both halves.
    pub fn zero_shot(&self) -> Result<BaseNovel> {
        Ok(BaseNovel::new(
            Self::accuracy(
                &self.base_test,
                &self.base,
                &self.plain(&self.base_test.1, &self.base_w)?,
            )?,
            Self::accuracy(
                &self.novel_test,
                &self.novel,
                &self.plain(&self.novel_test.1, &self.novel_w)?,
            )?,
        ))
    }

    /// `method` (with its seed set) learned on the base half and scored on both. A prompt method with
    /// `out` writes its prompts there and checkpoints beside them each epoch; with `resume` it continues
    /// from that checkpoint.
    pub fn score(
        &self,
        method: &Method,
        out: Option<&Path>,
        resume: bool,
        progress: &dyn Progress,
        events: &mut dyn FnMut(TrainEvent),
    ) -> Result<BaseNovel> {
        let (clip, base, novel) = (self.clip, &self.base, &self.novel);
        let scale = clip.logit_scale();
        Ok(match method {
            Method::Prompts(seeded) => {
                let rd = prepare(clip, base, seeded, self.cache, progress)?;
                let outcome = train(clip, base, &rd, seeded, out, resume, progress, events)?;
                // The learned context (M tokens, however it was initialised) with the novel names in it.
                let cfg = CoopConfig {
                    ctx_init: None,
                    n_ctx: outcome.learner.n_ctx,
                    ..seeded.coop.clone()
                };
                let text = &clip.model()?.text;
                let mut on_novel =
                    PromptLearner::new(text, clip.tokenizer()?, &novel.class_names, &cfg)?;
                on_novel.set_ctx(outcome.learner.ctx.as_tensor())?;
                match &outcome.meta {
                    // CoCoOp: each test image against its own prompts, the novel ones with the same meta-net.
                    Some(meta) => BaseNovel::new(
                        cocoop::accuracy(text, &outcome.learner, meta, scale, &self.base_test.1)?,
                        cocoop::accuracy(text, &on_novel, meta, scale, &self.novel_test.1)?,
                    ),
                    None => BaseNovel::new(
                        Self::accuracy(
                            &self.base_test,
                            base,
                            &self.plain(&self.base_test.1, &outcome.class_weights)?,
                        )?,
                        Self::accuracy(
                            &self.novel_test,
                            novel,
                            &self.plain(
                                &self.novel_test.1,
                                &l2_normalize(&on_novel.text_features(text)?.detach())?,
                            )?,
                        )?,
                    ),
                }
            }
            Method::Adapter(seeded) => {
                let prepared = tip::prepare(clip, base, seeded, self.cache, progress)?;
                let fitted = tip::fit_adapter(
                    clip,
                    base.num_classes(),
                    &prepared,
                    seeded,
                    progress,
                    events,
                )?;
                let s = f64::from(scale);
                BaseNovel::new(
                    Self::accuracy(
                        &self.base_test,
                        base,
                        &fitted
                            .fitted
                            .logits(&self.base_test.1.feats, &self.base_w, s)?,
                    )?,
                    Self::accuracy(
                        &self.novel_test,
                        novel,
                        &fitted
                            .fitted
                            .logits_unseen(&self.novel_test.1.feats, &self.novel_w, s)?,
                    )?,
                )
            }
        })
    }
}

/// What a base-to-novel run checks before any training, whoever runs its cells.
pub fn check_methods(methods: &[Method], seeds: &[u64]) -> Result<()> {
    if methods
        .iter()
        .any(|m| matches!(m, Method::Prompts(r) if r.coop.csc))
    {
        return Err(Error::invalid("class-specific contexts (--csc) have nothing to carry to novel classes: use a unified context for base-to-novel"));
    }
    if seeds.is_empty() {
        return Err(Error::invalid("give at least one seed (--seeds 1,2,3)"));
    }
    for m in methods {
        m.validate()?;
    }
    Ok(())
}

impl Report {
    /// The table: the zero-shot row (the same for every seed), then one row per method over its seeds.
    pub fn assemble(
        halves: (Vec<String>, Vec<String>),
        shots: Option<usize>,
        zero_shot: (String, BaseNovel),
        seeds: &[u64],
        methods: Vec<(String, Vec<(u64, BaseNovel)>)>,
    ) -> Self {
        let mut rows = vec![Row::new(
            zero_shot.0,
            seeds.iter().map(|&s| (s, zero_shot.1)).collect(),
        )];
        rows.extend(methods.into_iter().map(|(name, r)| Row::new(name, r)));
        Report {
            base_classes: halves.0,
            novel_classes: halves.1,
            shots,
            rows,
        }
    }
}

/// Zero-shot with `template`, then each method (trained once per seed on the base classes), on base and
/// novel. `on_event` sees each training event with the method's name and the seed.
#[allow(clippy::too_many_arguments)]
pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    template: &str,
    split_seed: u64,
    methods: &[Method],
    seeds: &[u64],
    cache: Option<&Path>,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(&str, u64, TrainEvent),
) -> Result<Report> {
    if data.num_classes() < 2 {
        return Err(Error::invalid("base-to-novel needs at least two classes"));
    }
    check_methods(methods, seeds)?;
    let halves = Halves::open(clip, data, template, split_seed, cache, progress)?;
    let mut rows = Vec::new();
    for method in methods {
        let name = method.name();
        let mut per_seed = Vec::new();
        for &seed in seeds {
            let events = &mut |e| on_event(&name, seed, e);
            let result = halves.score(&method.with_seed(seed), None, false, progress, events)?;
            per_seed.push((seed, result));
        }
        rows.push((name, per_seed));
    }
    Ok(Report::assemble(
        (
            halves.base_classes().to_vec(),
            halves.novel_classes().to_vec(),
        ),
        methods.first().and_then(Method::shots),
        (halves.zero_shot_name(), halves.zero_shot()?),
        seeds,
        rows,
    ))
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
