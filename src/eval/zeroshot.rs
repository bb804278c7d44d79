//! Hand-crafted prompts: one template, or CLIP's ensemble (mean of normalised features over templates,
//! normalised again), scored against every image of a split.

use candle_core::{Tensor, D};
use serde::Serialize;

use super::metrics::{evaluate, Evaluation};
use crate::clip::encode::{image_features, text_features};
use crate::clip::{l2_normalize, LoadedClip};
use crate::data::fewshot::TestSplit;
use crate::data::{DatasetFolder, Sample};
use crate::error::{Error, Result};
use crate::progress::Progress;

pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// Fills `{}` with the class name (a template without `{}` gets the name appended).
pub fn fill(template: &str, class_name: &str) -> String {
    if template.contains("{}") {
        template.replace("{}", class_name)
    } else {
        format!("{template} {class_name}")
    }
}

/// The filled prompts longer than the model's text context, with their token counts (start and end
/// included): they are cut to the context with the end-of-text token kept, as CLIP's `truncate=True`
/// does, and whoever runs them should be told. Empty for families that tokenise their own way.
pub fn overlong_prompts(
    clip: &LoadedClip,
    class_names: &[String],
    templates: &[String],
) -> Result<Vec<(String, usize)>> {
    let Ok(tok) = clip.tokenizer() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in super::templates::expand(templates) {
        for c in class_names {
            let prompt = fill(&t, c);
            let n = tok.count_words(&prompt)? + 2;
            if n > tok.max_len {
                out.push((prompt, n));
            }
        }
    }
    Ok(out)
}

/// Normalised class weights `[C, P]` from one or several templates.
pub fn class_weights(
    clip: &LoadedClip,
    class_names: &[String],
    templates: &[String],
    progress: &dyn Progress,
) -> Result<Tensor> {
    let templates = super::templates::expand(templates);
    if templates.is_empty() {
        return Err(Error::invalid("no prompt template given"));
    }
    let mut sum: Option<Tensor> = None;
    for (i, t) in templates.iter().enumerate() {
        let texts: Vec<String> = class_names.iter().map(|c| fill(t, c)).collect();
        let f = l2_normalize(&text_features(clip, &texts, 256, &crate::progress::Silent)?)?;
        crate::progress::check(progress)?;
        progress.update("templates", i + 1, templates.len());
        sum = Some(match sum {
            Some(s) => (s + f)?,
            None => f,
        });
    }
    let mean = (sum.expect("templates is not empty") / templates.len() as f64)?;
    Ok(l2_normalize(&mean)?)
}

#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotReport {
    pub model: String,
    pub templates: Vec<String>,
    pub classes: Vec<String>,
    /// "test" (the test/ folder) or "derived-test" (set aside by a split seed): see `fewshot::test_split`.
    pub split: &'static str,
    /// The split in words, e.g. "derived 30 % test split, split seed 0".
    pub split_description: String,
    #[serde(flatten)]
    pub eval: Evaluation,
}

/// Logits `logit_scale · cos` of normalised image features against normalised class weights.
pub fn logits(image_feats: &Tensor, weights: &Tensor, scale: f32) -> Result<Vec<Vec<f32>>> {
    Ok(logits_tensor(image_feats, weights, scale)?.to_vec2::<f32>()?)
}

/// [`logits`] as a tensor `[N, C]`: `scale · normalise(image_feats) · weightsᵀ`.
pub fn logits_tensor(image_feats: &Tensor, weights: &Tensor, scale: f32) -> Result<Tensor> {
    Ok((l2_normalize(image_feats)?.matmul(&weights.t()?)? * f64::from(scale))?)
}

/// Scores `split` (from `fewshot::test_split`, the split every evaluation shares) with `templates`.
pub fn run(
    clip: &LoadedClip,
    data: &DatasetFolder,
    split: &TestSplit,
    templates: &[String],
    batch: usize,
    progress: &dyn Progress,
) -> Result<ZeroShotReport> {
    let samples: &[Sample] = &split.samples;
    let weights = class_weights(clip, &data.class_names, templates, progress)?;
    let paths: Vec<_> = samples.iter().map(|s| s.path.clone()).collect();
    let feats = image_features(clip, &paths, batch, progress)?;
    let logits = logits(&feats, &weights, clip.logit_scale())?;
    let labels: Vec<usize> = samples.iter().map(|s| s.label).collect();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    debug_assert_eq!(feats.dim(D::Minus1).ok(), Some(clip.projection_dim()));
    Ok(ZeroShotReport {
        model: clip.id.clone(),
        templates: templates.to_vec(),
        classes: data.class_names.clone(),
        split: if split.derived {
            "derived-test"
        } else {
            "test"
        },
        split_description: split.description.clone(),
        eval: evaluate(&logits, &labels, &names, &data.class_names),
    })
}
