//! Token-wise classification (METHODS §4): score each class prompt against an image by `s_I`, `s_T` or
//! their mean, and compare the accuracy with CLIP's global feature (and with SsVP's feature) on a split.

use std::path::PathBuf;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::filip::{check_fraction, scores, AlignConfig, SimMatrix};
use super::pass::VisionPass;
use super::ssvp::{check_k, default_k, ssvp_from_pass};
use super::tokens::{image_tokens, learned_tokens, text_tokens, PromptTokens};
use crate::clip::encode::pixel_batch;
use crate::clip::{l2_normalize, LoadedClip};
use crate::data::Sample;
use crate::error::{Error, Result};
use crate::eval::zeroshot::fill;
use crate::progress::{check, Progress};
use crate::prompt::coop::PromptLearner;

/// Which token-wise score ranks the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScore {
    /// `s_I`: image→text.
    I,
    /// `s_T`: text→image.
    T,
    /// `(s_I + s_T) / 2`.
    #[default]
    Mean,
}

impl std::str::FromStr for TokenScore {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "i" | "s_i" => Ok(Self::I),
            "t" | "s_t" => Ok(Self::T),
            "mean" => Ok(Self::Mean),
            other => Err(format!("unknown token-wise score '{other}': i, t or mean")),
        }
    }
}

impl TokenScore {
    pub fn of(self, s_i: f32, s_t: f32) -> f32 {
        match self {
            Self::I => s_i,
            Self::T => s_t,
            Self::Mean => 0.5 * (s_i + s_t),
        }
    }
}

/// The class prompts to rank.
#[derive(Clone, Copy)]
pub enum ClassPrompts<'a> {
    /// A template with `{}` filled by each class name.
    Template {
        template: &'a str,
        class_names: &'a [String],
    },
    /// A learned CoOp prompt (its own class names).
    Learned(&'a PromptLearner),
}

impl ClassPrompts<'_> {
    pub fn tokens(&self, clip: &LoadedClip, with_sos: bool) -> Result<PromptTokens> {
        match *self {
            ClassPrompts::Template {
                template,
                class_names,
            } => {
                let texts: Vec<String> = class_names.iter().map(|c| fill(template, c)).collect();
                text_tokens(clip, &texts, with_sos)
            }
            ClassPrompts::Learned(learner) => {
                let all: Vec<usize> = (0..learner.num_classes()).collect();
                learned_tokens(clip, learner, &all, with_sos)
            }
        }
    }
}

/// Token-wise class scores `[B][C]` of an image batch's tokens `[B, n, P]` against each class prompt.
pub fn tokenwise_scores(
    image: &Tensor,
    prompts: &PromptTokens,
    top_fraction: f64,
    score: TokenScore,
) -> Result<Vec<Vec<f32>>> {
    check_fraction(top_fraction)?;
    // All classes' words side by side: one matmul per image, then split by class.
    let words = Tensor::cat(&prompts.tokens, 0)?;
    let widths: Vec<usize> = prompts
        .tokens
        .iter()
        .map(|t| t.dim(0))
        .collect::<candle_core::Result<_>>()?;
    let b = image.dim(0)?;
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let all = SimMatrix::from_tokens(&image.get(i)?, &words)?;
        let mut row = Vec::with_capacity(widths.len());
        let mut start = 0;
        for &w in &widths {
            let data: Vec<f32> = all
                .data
                .chunks(all.cols)
                .flat_map(|r| r[start..start + w].iter().copied())
                .collect();
            let (s_i, s_t) = scores(&SimMatrix::new(all.rows, w, data)?, top_fraction);
            row.push(score.of(s_i, s_t));
            start += w;
        }
        out.push(row);
    }
    Ok(out)
}

/// Token-wise class scores `[B][C]` of preprocessed images `[B, 3, H, W]`.
pub fn classify_tokenwise(
    clip: &LoadedClip,
    pixels: &Tensor,
    prompts: &PromptTokens,
    cfg: &AlignConfig,
    score: TokenScore,
) -> Result<Vec<Vec<f32>>> {
    let vision = &clip.model()?.vision;
    let pass = VisionPass::run(vision, pixels)?;
    tokenwise_scores(
        &image_tokens(vision, &pass, cfg.mode, cfg.with_cls)?,
        prompts,
        cfg.top_fraction,
        score,
    )
}

/// How to compare: the token-wise settings, the score, SsVP's K (None: N/4) and the image batch size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CompareConfig {
    pub align: AlignConfig,
    pub score: TokenScore,
    pub ssvp_k: Option<usize>,
    pub batch: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            align: AlignConfig::default(),
            score: TokenScore::Mean,
            ssvp_k: None,
            batch: 16,
        }
    }
}

/// Accuracies of the three ways to score the same class prompts on the same images.
#[derive(Debug, Clone, Serialize)]
pub struct AccuracyComparison {
    pub images: usize,
    pub classes: Vec<String>,
    pub config: AlignConfig,
    pub score: TokenScore,
    /// CLIP's pooled image feature against the prompts' pooled text features.
    pub global_accuracy: f64,
    /// Token-wise scores (`config`, `score`).
    pub tokenwise_accuracy: f64,
    /// SsVP's image feature (K = `ssvp_k`) against the pooled text features; None when the tower has a
    /// single block.
    pub ssvp_accuracy: Option<f64>,
    pub ssvp_k: usize,
    /// Per class (in `classes` order): its images, and how many each way got right.
    pub per_class: Vec<ClassCounts>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassCounts {
    pub images: usize,
    pub global: usize,
    pub tokenwise: usize,
    pub ssvp: usize,
}

impl AccuracyComparison {
    /// Mean per-class accuracy (global, token-wise, SsVP) over the classes `keep` accepts that have images.
    pub fn mean_over(&self, keep: impl Fn(usize) -> bool) -> (f64, f64, f64) {
        let classes: Vec<&ClassCounts> = self
            .per_class
            .iter()
            .enumerate()
            .filter(|(i, c)| keep(*i) && c.images > 0)
            .map(|(_, c)| c)
            .collect();
        let mean = |f: &dyn Fn(&ClassCounts) -> usize| {
            if classes.is_empty() {
                0.0
            } else {
                classes
                    .iter()
                    .map(|c| f(c) as f64 / c.images as f64)
                    .sum::<f64>()
                    / classes.len() as f64
            }
        };
        (
            mean(&|c| c.global),
            mean(&|c| c.tokenwise),
            mean(&|c| c.ssvp),
        )
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
        )
        .0
}

/// Classifies `samples` three ways (global feature, token-wise, SsVP) from one vision pass per batch.
pub fn compare_accuracy(
    clip: &LoadedClip,
    samples: &[Sample],
    prompts: &ClassPrompts,
    cmp: &CompareConfig,
    progress: &dyn Progress,
) -> Result<AccuracyComparison> {
    let cfg = &cmp.align;
    check_fraction(cfg.top_fraction)?;
    if samples.is_empty() {
        return Err(Error::invalid("no images to classify"));
    }
    let vision = &clip.model()?.vision;
    let n = vision.config.num_patches();
    let k = cmp.ssvp_k.unwrap_or_else(|| default_k(n));
    check_k(k, n)?;
    let tokens = prompts.tokens(clip, cfg.with_sos)?;
    let class_names: Vec<String> = match *prompts {
        ClassPrompts::Template { class_names, .. } => class_names.to_vec(),
        ClassPrompts::Learned(l) => l.class_names.clone(),
    };
    if let Some(bad) = samples.iter().find(|s| s.label >= class_names.len()) {
        return Err(Error::invalid(format!(
            "{}: label {} but only {} classes",
            bad.path.display(),
            bad.label,
            class_names.len()
        )));
    }
    let has_ssvp = vision.layers.len() >= 2;
    let mut per_class = vec![ClassCounts::default(); class_names.len()];
    let mut done = 0;
    for chunk in samples.chunks(cmp.batch.max(1)) {
        check(progress)?;
        let paths: Vec<PathBuf> = chunk.iter().map(|s| s.path.clone()).collect();
        let truth: Vec<usize> = chunk.iter().map(|s| s.label).collect();
        let pixels = pixel_batch(clip, &paths)?;
        let pass = VisionPass::run(vision, &pixels)?;
        let g = l2_normalize(&pass.pooled(vision)?)?
            .matmul(&tokens.pooled.t()?)?
            .to_vec2::<f32>()?;
        let t = tokenwise_scores(
            &image_tokens(vision, &pass, cfg.mode, cfg.with_cls)?,
            &tokens,
            cfg.top_fraction,
            cmp.score,
        )?;
        for ((g, t), &l) in g.iter().zip(&t).zip(&truth) {
            let c = &mut per_class[l];
            c.images += 1;
            c.global += usize::from(argmax(g) == l);
            c.tokenwise += usize::from(argmax(t) == l);
        }
        if has_ssvp {
            for (sel, &l) in ssvp_from_pass(vision, &pass, Some(k))?.iter().zip(&truth) {
                let f = Tensor::new(sel.image_embeds.as_slice(), tokens.pooled.device())?
                    .unsqueeze(0)?;
                let s = l2_normalize(&f)?
                    .matmul(&tokens.pooled.t()?)?
                    .to_vec2::<f32>()?;
                per_class[l].ssvp += usize::from(argmax(&s[0]) == l);
            }
        }
        done += chunk.len();
        progress.update("images", done, samples.len());
    }
    let total = samples.len() as f64;
    let sum = |f: fn(&ClassCounts) -> usize| per_class.iter().map(f).sum::<usize>() as f64;
    let (global, tokenwise, ssvp_ok) = (sum(|c| c.global), sum(|c| c.tokenwise), sum(|c| c.ssvp));
    Ok(AccuracyComparison {
        images: samples.len(),
        classes: class_names,
        config: *cfg,
        score: cmp.score,
        global_accuracy: global / total,
        tokenwise_accuracy: tokenwise / total,
        ssvp_accuracy: has_ssvp.then(|| ssvp_ok / total),
        ssvp_k: k,
        per_class,
    })
}
