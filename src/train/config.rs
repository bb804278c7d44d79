//! What a training run is: one description per method, with the defaults and the validation that both
//! front ends (the CLI's flags, the app's Train form) go through, so the two cannot drift. A run is data:
//! it is what exports record in their metadata and what a checkpoint must match to be resumed.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::coop::TrainConfig;
use super::mpfgvc::{OptimizerKind, StageConfig};
use super::optim::{default_epochs, OptimConfig};
use super::pretrain::PretrainConfig;
use crate::error::{Error, Result};
use crate::eval::zeroshot::DEFAULT_TEMPLATE;
use crate::prompt::coop::CoopConfig;
use crate::prompt::datp::DatpConfig;
use crate::prompt::{CoopVariant, PromptMethod, PromptMethodKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    #[default]
    None,
    /// CoOp's random resized crop (0.08–1) + horizontal flip, as cached views.
    CropFlip,
}

/// Everything that defines a CoOp, KgCoOp or CoCoOp run, shared by the CLI, the app and the export's
/// metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "CoopRunWire")]
pub struct CoopRun {
    /// None: every training image.
    pub shots: Option<usize>,
    /// Seed of the shots (CoOp averages 1, 2, 3).
    pub seed: u64,
    /// Seed of the derived train/val/test split of folders without split sub-folders.
    pub split_seed: u64,
    pub coop: CoopConfig,
    pub train: TrainConfig,
    pub augment: Augment,
    /// Cached augmented views per training image (with `augment = crop-flip`).
    pub views: usize,
    /// The hand-crafted template reported beside the learned context (and KgCoOp's anchor).
    pub template: String,
    /// CoOp, KgCoOp (with its λ) or CoCoOp.
    pub variant: CoopVariant,
}

/// A `CoopRun` as it was written before and since the variant had its own field: exports, checkpoints'
/// runs and remembered settings from before named CoCoOp `cocoop: true` and KgCoOp `train.kg_lambda > 0`.
#[derive(Deserialize)]
struct CoopRunWire {
    shots: Option<usize>,
    seed: u64,
    split_seed: u64,
    coop: CoopConfig,
    train: TrainConfigWire,
    augment: Augment,
    views: usize,
    template: String,
    // Present means the variant itself: RON (the app's settings) writes it bare, not as `Some(..)`.
    #[serde(default, deserialize_with = "present")]
    variant: Option<CoopVariant>,
    #[serde(default)]
    cocoop: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<CoopVariant>, D::Error> {
    CoopVariant::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct TrainConfigWire {
    optim: OptimConfig,
    batch_size: Option<usize>,
    seed: u64,
    #[serde(default)]
    kg_lambda: f64,
}

impl From<CoopRunWire> for CoopRun {
    fn from(w: CoopRunWire) -> Self {
        let t = w.train;
        Self {
            shots: w.shots,
            seed: w.seed,
            split_seed: w.split_seed,
            coop: w.coop,
            train: TrainConfig {
                optim: t.optim,
                batch_size: t.batch_size,
                seed: t.seed,
            },
            augment: w.augment,
            views: w.views,
            template: w.template,
            variant: w
                .variant
                .unwrap_or_else(|| CoopVariant::from_flags(w.cocoop, t.kg_lambda)),
        }
    }
}

/// CoOp's recipe: 16 shots, M = 16 random context, SGD at 0.002 with one warm-up epoch, cosine decay over
/// 200 epochs, batch 32, random resized crop + flip (as 4 cached views).
impl Default for CoopRun {
    fn default() -> Self {
        let shots = Some(16);
        let seed = 1;
        CoopRun {
            shots,
            seed,
            split_seed: 0,
            coop: CoopConfig {
                seed,
                ..CoopConfig::default()
            },
            train: TrainConfig {
                optim: OptimConfig {
                    epochs: default_epochs(shots),
                    ..OptimConfig::default()
                },
                batch_size: Some(32),
                seed,
            },
            augment: Augment::CropFlip,
            views: 4,
            template: DEFAULT_TEMPLATE.to_string(),
            variant: CoopVariant::Coop,
        }
    }
}

impl CoopRun {
    /// The recipe of `variant`'s paper: CoOp's for CoOp and KgCoOp (whose paper keeps CoOp's settings),
    /// `cocoop_recipe` for CoCoOp.
    pub fn recipe(variant: CoopVariant) -> Self {
        match variant {
            CoopVariant::Cocoop => Self::cocoop_recipe(),
            other => Self {
                variant: other,
                ..Self::default()
            },
        }
    }

    /// KgCoOp's recipe: CoOp's with λ = 8.
    pub fn kgcoop_recipe() -> Self {
        Self::recipe(CoopVariant::Kgcoop {
            lambda: CoopVariant::KG_LAMBDA,
        })
    }

    /// CoCoOp's recipe (its `vit_b16_c4_ep10_batch1_ctxv1`): 16 shots, context "a photo of a" (M = 4),
    /// SGD at 0.002 with one warm-up epoch, 10 epochs, batch 1, random resized crop + flip.
    pub fn cocoop_recipe() -> Self {
        let mut r = Self {
            variant: CoopVariant::Cocoop,
            ..Self::default()
        };
        r.coop.ctx_init = Some("a photo of a".into());
        r.coop.n_ctx = 4;
        r.train.optim.epochs = 10;
        r.train.batch_size = Some(1);
        r
    }

    /// "CoCoOp", "KgCoOp λ=8" or "CoOp".
    pub fn method_name(&self) -> String {
        self.variant.name()
    }

    /// Sets the shots and the seed everywhere it is used (shots, context initialisation, batch order).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.coop.seed = seed;
        self.train.seed = seed;
        self
    }

    /// What a run needs to make sense; the message names the setting as both front ends call it.
    pub fn validate(&self) -> Result<()> {
        if self
            .coop
            .ctx_init
            .as_deref()
            .is_none_or(|p| p.trim().is_empty())
            && self.coop.n_ctx == 0
        {
            return Err(Error::invalid(
                "the context length (--n-ctx) must be at least 1",
            ));
        }
        if self.views == 0 {
            return Err(Error::invalid("--views must be at least 1"));
        }
        if !self.template.contains("{}") {
            return Err(Error::invalid(format!(
                "the template '{}' has no {{}} for the class name",
                self.template
            )));
        }
        match self.variant {
            CoopVariant::Cocoop
                if self.coop.csc
                    || self.coop.class_position != crate::prompt::coop::ClassPosition::End =>
            {
                return Err(Error::invalid("CoCoOp learns one context shared by the classes, with the class name at the end: turn off class-specific contexts (--csc) and use --class-position end"));
            }
            CoopVariant::Kgcoop { lambda } if !(lambda > 0.0 && lambda.is_finite()) => {
                return Err(Error::invalid(format!(
                    "KgCoOp's λ (--kg-lambda) must be above 0 (its paper uses {}), not {lambda}; λ = 0 is plain CoOp",
                    CoopVariant::KG_LAMBDA
                )));
            }
            _ => {}
        }
        check_common(self.shots, &self.train.optim, self.train.batch_size, "")
    }
}

/// Everything that defines an MP-FGVC run, shared by the CLI, the app and the export's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MpFgvcRun {
    /// None: every training image.
    pub shots: Option<usize>,
    /// Seed of the shots, of every initialisation (DaTP tokens, head, VLFM) and of the batch order.
    pub seed: u64,
    /// Seed of the derived train/val/test split of folders without split sub-folders.
    pub split_seed: u64,
    pub datp: DatpConfig,
    /// n: the last n vision blocks are trained in stage 1 (0 = frozen tower, cached features).
    pub train_blocks: usize,
    pub stage1: StageConfig,
    pub stage2: StageConfig,
}

/// A stage's recipe: one warm-up epoch at a tenth of the rate, then cosine decay; weight decay 5e-4.
pub fn stage(
    lr: f64,
    epochs: usize,
    optimizer: OptimizerKind,
    batch_size: Option<usize>,
) -> StageConfig {
    StageConfig {
        optim: OptimConfig {
            lr,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1,
            warmup_lr: lr / 10.0,
            epochs,
        },
        batch_size,
        optimizer,
    }
}

/// AdamW for both stages (why: `train::mpfgvc`), 20 epochs at 1e-4 then 30 at 1e-3, all shots, J = 16, a
/// frozen vision tower. The super-category word has no default: the user names it.
impl Default for MpFgvcRun {
    fn default() -> Self {
        let seed = 1;
        MpFgvcRun {
            shots: None,
            seed,
            split_seed: 0,
            datp: DatpConfig {
                n_ctx: 16,
                super_category: String::new(),
                seed,
            },
            train_blocks: 0,
            stage1: stage(1e-4, 20, OptimizerKind::AdamW, Some(32)),
            stage2: stage(1e-3, 30, OptimizerKind::AdamW, Some(32)),
        }
    }
}

impl MpFgvcRun {
    pub fn validate(&self) -> Result<()> {
        if self.datp.super_category.trim().is_empty() {
            return Err(crate::prompt::datp::no_tokens(&self.datp.super_category));
        }
        if self.datp.n_ctx == 0 {
            return Err(Error::invalid(
                "--n-ctx must be at least 1: DaTP learns J ≥ 1 tokens per class",
            ));
        }
        check_common(
            self.shots,
            &self.stage1.optim,
            self.stage1.batch_size,
            "stage 1 ",
        )?;
        check_common(
            self.shots,
            &self.stage2.optim,
            self.stage2.batch_size,
            "stage 2 ",
        )
    }
}

fn check_common(
    shots: Option<usize>,
    optim: &OptimConfig,
    batch_size: Option<usize>,
    what: &str,
) -> Result<()> {
    if shots == Some(0) {
        return Err(Error::invalid("--shots must be at least 1 (or all)"));
    }
    if optim.epochs == 0 {
        return Err(Error::invalid(format!(
            "the {what}epoch count must be at least 1"
        )));
    }
    if batch_size == Some(0) {
        return Err(Error::invalid("--batch-size must be at least 1 (or full)"));
    }
    if !(optim.lr.is_finite() && optim.lr > 0.0) {
        return Err(Error::invalid(format!(
            "the {what}learning rate must be positive, got {}",
            optim.lr
        )));
    }
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    if !non_negative(optim.warmup_lr)
        || !(0.0..1.0).contains(&optim.momentum)
        || !non_negative(optim.weight_decay)
    {
        return Err(Error::invalid(format!(
            "the {what}warm-up rate, momentum (0 ≤ m < 1) and weight decay must be non-negative"
        )));
    }
    Ok(())
}

/// One training run of any method: what the app's Train tab starts and the CLI's `train` / `mpfgvc train`
/// build. The arm is the method; [`RunConfig::method`] is its prompt learner's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum RunConfig {
    Coop(CoopRun),
    MpFgvc(MpFgvcRun),
    /// Both towers of a CLIP on image–caption pairs (FILIP's or CLIP's loss).
    Pretrain(PretrainRun),
    /// A feature-level baseline (Tip-Adapter, Tip-Adapter-F, CLIP-Adapter) on cached image features.
    Adapter(AdapterRun),
}

/// What defines a feature-adapter run (Tip-Adapter, Tip-Adapter-F, CLIP-Adapter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterRun {
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
    pub fn recipe(self) -> Option<(OptimConfig, Option<usize>)> {
        match self {
            AdapterMethod::TipAdapter => None,
            AdapterMethod::TipAdapterF { epochs } => Some((
                OptimConfig {
                    lr: 1e-3,
                    momentum: 0.0,
                    weight_decay: 0.01,
                    warmup_epochs: 0,
                    warmup_lr: 0.0,
                    epochs,
                },
                Some(256),
            )),
            AdapterMethod::ClipAdapter { epochs } => Some((
                OptimConfig {
                    epochs,
                    ..OptimConfig::default()
                },
                Some(32),
            )),
        }
    }
}

impl Default for AdapterRun {
    fn default() -> Self {
        AdapterRun {
            shots: Some(16),
            seed: 1,
            split_seed: 0,
            views: 10,
            template: DEFAULT_TEMPLATE.to_string(),
            method: AdapterMethod::TipAdapter,
        }
    }
}

impl AdapterRun {
    pub fn validate(&self) -> Result<()> {
        if self.views == 0 {
            return Err(Error::invalid("--views must be at least 1"));
        }
        if !self.template.contains("{}") {
            return Err(Error::invalid(format!(
                "the template '{}' has no {{}} for the class name",
                self.template
            )));
        }
        match self.method {
            AdapterMethod::TipAdapterF { epochs: 0 } | AdapterMethod::ClipAdapter { epochs: 0 } => {
                Err(Error::invalid("--epochs must be at least 1"))
            }
            _ if self.shots == Some(0) => Err(Error::invalid("--shots must be at least 1")),
            _ => Ok(()),
        }
    }

    /// Training epochs (none for training-free Tip-Adapter).
    pub fn epochs(&self) -> usize {
        match self.method {
            AdapterMethod::TipAdapter => 0,
            AdapterMethod::TipAdapterF { epochs } | AdapterMethod::ClipAdapter { epochs } => epochs,
        }
    }
}

/// Where pretraining starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PretrainStart {
    /// Random weights of a named architecture (`scenes`, `tiny`, `vit-b-32`, ...).
    Preset(String),
    /// Every weight of an existing CLIP folder (fine-tuning).
    Init(PathBuf),
}

/// A pretraining run: the pairs, the start, the loss and optimiser, the storage of the written model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainRun {
    /// A folder of image–caption pairs (`data::scenes::read_pairs`).
    pub pairs: PathBuf,
    /// Instead of `pairs`: generated scenes drawn afresh every epoch (`train::pairs::SceneStream`).
    #[serde(default)]
    pub scenes: Option<super::pairs::StreamRecipe>,
    pub start: PretrainStart,
    /// A preset's input and patch size, when not its own (`pretrain --image-size / --patch-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_size: Option<usize>,
    pub config: PretrainConfig,
    /// Write the weights as f16 (half the size).
    pub fp16: bool,
    /// Where `pairs` names WebDataset shards: how they are read.
    #[serde(default)]
    pub shards: ShardReading,
}

/// How shards are read: the shuffle buffer's size and what becomes of a broken sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShardReading {
    pub shuffle_buffer: usize,
    pub bad_samples: crate::data::webdataset::BadSamples,
}

impl Default for ShardReading {
    /// open_clip's sample shuffle buffer.
    fn default() -> Self {
        Self {
            shuffle_buffer: 5000,
            bad_samples: Default::default(),
        }
    }
}

impl Default for PretrainRun {
    fn default() -> Self {
        Self {
            pairs: PathBuf::new(),
            scenes: None,
            start: PretrainStart::Preset("scenes".into()),
            image_size: None,
            patch_size: None,
            config: PretrainConfig::default(),
            fp16: true,
            shards: ShardReading::default(),
        }
    }
}

impl PretrainRun {
    /// Generated scenes and the settings the demo models were pretrained with (the loss, the start and
    /// the storage stay the user's).
    pub fn use_demo_recipe(&mut self) {
        self.scenes = Some(super::pairs::StreamRecipe::shape_recipe(4096, 1));
        self.config = super::pretrain::PretrainConfig::demo_recipe(self.config.loss);
    }

    pub fn validate(&self) -> Result<()> {
        match &self.scenes {
            Some(recipe) => recipe.validate()?,
            None if self.pairs.as_os_str().is_empty() => {
                return Err(Error::invalid("choose a folder of image–caption pairs (NAME.jpg + NAME.txt, or captions.tsv / captions.jsonl), WebDataset shards (shards/{00000..00009}.tar), or generated scenes"));
            }
            None => {}
        }
        if self.shards.shuffle_buffer == 0 {
            return Err(Error::invalid(
                "--shuffle-buffer must be at least 1 (1 reads each shard in order)",
            ));
        }
        self.config.validate()
    }
}

impl RunConfig {
    /// The defaults of a method.
    pub fn default_for(kind: PromptMethodKind) -> Self {
        match kind {
            PromptMethodKind::Coop => Self::Coop(CoopRun::default()),
            PromptMethodKind::Kgcoop => Self::Coop(CoopRun::kgcoop_recipe()),
            PromptMethodKind::Cocoop => Self::Coop(CoopRun::cocoop_recipe()),
            PromptMethodKind::Datp => Self::MpFgvc(MpFgvcRun::default()),
        }
    }

    /// The prompt method a run learns (pretraining learns none).
    pub fn method(&self) -> Option<PromptMethod> {
        match self {
            Self::Coop(r) => Some(PromptMethod::Coop {
                config: r.coop.clone(),
                variant: r.variant,
            }),
            Self::MpFgvc(r) => Some(PromptMethod::Datp(r.datp.clone())),
            Self::Pretrain(_) | Self::Adapter(_) => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Coop(r) => r.validate(),
            Self::MpFgvc(r) => r.validate(),
            Self::Pretrain(r) => r.validate(),
            Self::Adapter(r) => r.validate(),
        }
    }

    pub fn shots(&self) -> Option<usize> {
        match self {
            Self::Coop(r) => r.shots,
            Self::MpFgvc(r) => r.shots,
            Self::Adapter(r) => r.shots,
            Self::Pretrain(_) => None,
        }
    }

    /// Epochs of every stage together (the x range of the app's curves).
    pub fn total_epochs(&self) -> usize {
        match self {
            Self::Coop(r) => r.train.optim.epochs,
            Self::MpFgvc(r) => r.stage1.optim.epochs + r.stage2.optim.epochs,
            Self::Pretrain(r) => r.config.optim.epochs,
            Self::Adapter(r) => r.epochs(),
        }
    }

    /// "16-shot · unified · end · M=16", "all shots · DaTP 'bird' · J=16 · 2 stages" and the like.
    pub fn describe(&self) -> String {
        match (self, self.method()) {
            (Self::Pretrain(p), _) => {
                let loss = serde_json::to_value(p.config.loss)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_uppercase))
                    .unwrap_or_default();
                let from = match &p.start {
                    PretrainStart::Preset(name) => format!("from random ({name})"),
                    PretrainStart::Init(dir) => format!(
                        "from {}",
                        dir.file_name().map_or_else(
                            || dir.display().to_string(),
                            |n| n.to_string_lossy().into_owned()
                        )
                    ),
                };
                format!("pretrain · {loss} loss · {from}")
            }
            (Self::Adapter(r), _) => {
                let shots = r
                    .shots
                    .map_or("all shots".to_string(), |k| format!("{k}-shot"));
                format!("{shots} · {}", r.method.name())
            }
            (_, Some(method)) => {
                let shots = self
                    .shots()
                    .map_or("all shots".to_string(), |k| format!("{k}-shot"));
                let kg = match self {
                    Self::Coop(r) if r.variant != CoopVariant::Coop => {
                        format!("{} · ", r.method_name())
                    }
                    _ => String::new(),
                };
                format!("{kg}{shots} · {}", method.describe())
            }
            (_, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_settings_are_named() {
        for kind in PromptMethodKind::ALL {
            let mut r = RunConfig::default_for(kind);
            if let RunConfig::MpFgvc(m) = &mut r {
                assert!(m
                    .validate()
                    .unwrap_err()
                    .to_string()
                    .contains("super-category"));
                m.datp.super_category = "bird".into();
            }
            r.validate().unwrap();
            assert_eq!(r.method().map(|m| m.kind()), Some(kind));
        }
        let mut c = CoopRun::default();
        assert_eq!(
            (c.train.optim.epochs, c.augment, c.views),
            (200, Augment::CropFlip, 4),
            "CoOp's recipe"
        );
        c.coop.n_ctx = 0;
        assert!(c.validate().unwrap_err().to_string().contains("--n-ctx"));
        c.coop.ctx_init = Some("a photo of a".into());
        c.validate().unwrap();
        c.train.optim.lr = f64::NAN;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("learning rate"));
        let seeded = CoopRun::default().with_seed(3);
        assert_eq!(
            (seeded.seed, seeded.coop.seed, seeded.train.seed),
            (3, 3, 3)
        );
    }

    #[test]
    fn a_run_round_trips_through_json_with_its_method_named() {
        let r = RunConfig::default_for(PromptMethodKind::Coop);
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["method"], "coop");
        assert_eq!(serde_json::from_value::<RunConfig>(j).unwrap(), r);
        for kind in PromptMethodKind::ALL {
            let r = RunConfig::default_for(kind);
            let back: RunConfig =
                serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    /// Runs written before the variant had its own field (exports' metadata, remembered settings) name
    /// CoCoOp `cocoop: true` and KgCoOp `train.kg_lambda > 0`; they read back as the same method.
    #[test]
    fn runs_written_before_the_variant_field_read_back_as_their_method() {
        let old = |variant: CoopVariant| {
            let mut j = serde_json::to_value(CoopRun::recipe(variant)).unwrap();
            let o = j.as_object_mut().unwrap();
            o.remove("variant");
            o.insert("cocoop".into(), (variant == CoopVariant::Cocoop).into());
            let lambda = variant.kg_lambda().unwrap_or(0.0);
            o["train"]["kg_lambda"] = lambda.into();
            serde_json::from_value::<CoopRun>(j).unwrap()
        };
        for variant in [
            CoopVariant::Coop,
            CoopVariant::Kgcoop { lambda: 2.5 },
            CoopVariant::Cocoop,
        ] {
            assert_eq!(old(variant), CoopRun::recipe(variant), "{variant:?}");
        }
        // The first exports had neither field.
        let mut j = serde_json::to_value(CoopRun::default()).unwrap();
        j.as_object_mut().unwrap().remove("variant");
        assert_eq!(
            serde_json::from_value::<CoopRun>(j).unwrap(),
            CoopRun::default()
        );
    }

    #[test]
    fn each_variant_names_itself_and_kgcoop_needs_a_positive_lambda() {
        let names: Vec<String> = PromptMethodKind::ALL[..3]
            .iter()
            .map(|&k| match RunConfig::default_for(k) {
                RunConfig::Coop(r) => r.method_name(),
                _ => unreachable!("the first three are the CoOp family"),
            })
            .collect();
        assert_eq!(names, ["CoOp", "KgCoOp λ=8", "CoCoOp"]);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let r = CoopRun::recipe(CoopVariant::Kgcoop { lambda: bad });
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains("--kg-lambda"), "{bad}: {err}");
        }
        assert!(RunConfig::default_for(PromptMethodKind::Kgcoop)
            .describe()
            .starts_with("KgCoOp λ=8 · 16-shot"));
    }
}
