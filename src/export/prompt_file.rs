//! The export format of learned prompts: a `.safetensors` file any safetensors reader opens.
//!
//! Tensors: `ctx` (`[M, D]` unified or `[C, M, D]` class-specific) and `class_embeds` (`[C, P]`, the
//! normalised class weights: zero-shot classification with them needs no promptscope). A CoCoOp file
//! adds its meta-net as `meta_net.linear1.weight`, `.linear1.bias`, `.linear2.weight`, `.linear2.bias`
//! (CoCoOp's own names); its `class_embeds` are then the context's without the per-image shift, and
//! scoring it as CoCoOp does needs the text tower ([`LearnedScorer`]). Metadata: one string key per
//! field of [`PromptMeta`] (JSON for lists and objects) plus `promptscope`, the whole record as JSON.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::clip::LoadedClip;
use crate::error::{write_atomic, Error, Result};
use crate::export::model_check::{check_model, MadeOn};
use crate::prompt::cocoop::MetaNet;
use crate::prompt::coop::{CoopConfig, PromptLearner};
use crate::prompt::CoopVariant;
use crate::tensor_file::{read_safetensors, safetensors_bytes};
use crate::train::coop::TrainConfig;
use crate::train::coop::META_NAMES;

pub const FORMAT: &str = "promptscope-coop/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PromptMeta {
    pub format: String,
    pub promptscope_version: String,
    pub model_id: String,
    pub model_fingerprint: String,
    pub text_hidden_size: usize,
    pub projection_dim: usize,
    pub class_names: Vec<String>,
    pub coop: CoopConfig,
    /// Absent for imported contexts.
    pub train: Option<TrainConfig>,
    /// None: all training images.
    pub shots: Option<usize>,
    pub augment: String,
    pub views: usize,
    /// Final metrics (accuracy on val and test, ...), free-form.
    pub metrics: serde_json::Value,
    /// "promptscope" or "coop-checkpoint:<path>".
    pub source: String,
    /// The file holds CoCoOp's meta-net beside the context.
    #[serde(default)]
    pub cocoop: bool,
    /// The CoOp-family member that learned the context (imports: CoOp, or CoCoOp with a meta-net).
    #[serde(default)]
    pub variant: CoopVariant,
}

pub struct PromptFile {
    pub ctx: Tensor,
    pub class_embeds: Tensor,
    /// CoCoOp's meta-net parameters, in `MetaNet::vars` order.
    pub meta_net: Option<[Tensor; 4]>,
    pub meta: PromptMeta,
}

/// A prompts file checked against a model, ready to score images.
pub struct LearnedScorer {
    weights: Tensor,
    cocoop: Option<(PromptLearner, MetaNet)>,
}

impl LearnedScorer {
    /// Logits `[N, C]` of image features `[N, P]` (not normalised): against the class weights, or, for
    /// CoCoOp, each image against its own prompts.
    pub fn logits(&self, clip: &LoadedClip, feats: &Tensor) -> Result<Tensor> {
        match &self.cocoop {
            Some((learner, meta)) => crate::train::cocoop::logits_detached(
                &clip.model()?.text,
                learner,
                meta,
                clip.logit_scale(),
                feats,
            ),
            None => crate::eval::zeroshot::logits_tensor(feats, &self.weights, clip.logit_scale()),
        }
    }

    /// The normalised class weights (for CoCoOp, of the context without a shift).
    pub fn weights(&self) -> &Tensor {
        &self.weights
    }

    pub fn is_cocoop(&self) -> bool {
        self.cocoop.is_some()
    }
}

impl PromptFile {
    pub fn new(clip: &LoadedClip, learner: &PromptLearner, class_embeds: Tensor) -> Result<Self> {
        let c = &clip.model()?.config;
        Ok(Self {
            ctx: learner.ctx.as_tensor().clone(),
            class_embeds,
            meta: PromptMeta {
                format: FORMAT.into(),
                promptscope_version: env!("CARGO_PKG_VERSION").into(),
                model_id: clip.id.clone(),
                model_fingerprint: crate::clip::load::fingerprint(&clip.dir)?,
                text_hidden_size: c.text_config.hidden_size,
                projection_dim: c.projection_dim,
                class_names: learner.class_names.clone(),
                coop: learner.config.clone(),
                train: None,
                shots: None,
                augment: "none".into(),
                views: 0,
                metrics: serde_json::Value::Null,
                source: "promptscope".into(),
                cocoop: false,
                variant: CoopVariant::Coop,
            },
            meta_net: None,
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let full = serde_json::to_value(&self.meta).map_err(|e| Error::invalid(e.to_string()))?;
        let mut meta: HashMap<String, String> = full
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            match v {
                                serde_json::Value::String(s) => s.clone(),
                                other => other.to_string(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut full = full;
        full["cocoop"] = serde_json::Value::Bool(self.meta_net.is_some());
        if self.meta_net.is_some() {
            full["variant"] = serde_json::to_value(CoopVariant::Cocoop).unwrap_or_default();
        }
        meta.insert("cocoop".into(), self.meta_net.is_some().to_string());
        meta.insert("promptscope".into(), full.to_string());
        let mut tensors = vec![
            ("ctx".to_string(), self.ctx.clone()),
            ("class_embeds".to_string(), self.class_embeds.clone()),
        ];
        if let Some(m) = &self.meta_net {
            tensors.extend(
                META_NAMES
                    .iter()
                    .zip(m)
                    .map(|(n, t)| (format!("meta_net.{n}"), t.clone())),
            );
        }
        let tensors: Vec<(&str, Tensor)> = tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.clone()))
            .collect();
        let bytes = safetensors_bytes(&tensors, meta)?;
        write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, meta) = read_safetensors(path)?;
        let fix = "pass a prompts file exported by promptscope (train --out, or import-coop --out)";
        let json = meta
            .get("promptscope")
            .ok_or_else(|| Error::bad_file(path, "has no promptscope metadata", fix))?;
        let unreadable = |e: serde_json::Error| {
            Error::bad_file(path, format!("has unreadable metadata ({e})"), fix)
        };
        let raw: serde_json::Value = serde_json::from_str(json).map_err(unreadable)?;
        let mut meta: PromptMeta = serde_json::from_value(raw.clone()).map_err(unreadable)?;
        if raw.get("variant").is_none() {
            // Files from before the variant had its own entry kept KgCoOp's λ in the train config.
            let kg_lambda = raw["train"]["kg_lambda"].as_f64().unwrap_or(0.0);
            meta.variant = CoopVariant::from_flags(meta.cocoop, kg_lambda);
        }
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| Error::bad_file(path, format!("has no '{k}' tensor"), fix))
        };
        let meta_net = if meta.cocoop || tensors.keys().any(|k| k.starts_with("meta_net.")) {
            let parts: Vec<Tensor> = META_NAMES
                .iter()
                .map(|n| get(&format!("meta_net.{n}")))
                .collect::<Result<_>>()?;
            Some(parts.try_into().expect("four names"))
        } else {
            None
        };
        Ok(Self {
            ctx: get("ctx")?,
            class_embeds: get("class_embeds")?,
            meta_net,
            meta,
        })
    }

    /// Refuses a file made on another model: other dimensions, or the same shapes with other weights
    /// (a learned context only means something on the text tower it was trained against).
    pub fn check_model(&self, clip: &LoadedClip, path: &Path) -> Result<()> {
        let c = &clip.model()?.config;
        let made = MadeOn {
            model_id: &self.meta.model_id,
            fingerprint: &self.meta.model_fingerprint,
            dims: vec![
                (
                    "text width",
                    *self.ctx.dims().last().unwrap_or(&0),
                    c.text_config.hidden_size,
                ),
                (
                    "projection",
                    self.class_embeds.dims().get(1).copied().unwrap_or(0),
                    c.projection_dim,
                ),
            ],
        };
        check_model(path, &made, clip)
    }

    /// The normalised class weights `[C, P]` on `clip`'s device, after [`Self::check_model`]: what
    /// zero-shot scoring and `eval::classify::top_k` take.
    pub fn class_weights(&self, clip: &LoadedClip, path: &Path) -> Result<Tensor> {
        self.check_model(clip, path)?;
        Ok(crate::clip::l2_normalize(
            &self.class_embeds.to_device(&clip.device)?,
        )?)
    }

    /// Checks the file against `clip` and readies it for scoring images.
    pub fn scorer(&self, clip: &LoadedClip, path: &Path) -> Result<LearnedScorer> {
        let weights = self.class_weights(clip, path)?;
        let cocoop = match &self.meta_net {
            None => None,
            Some(parts) => {
                let on = |t: &Tensor| t.to_device(&clip.device);
                let parts = [
                    on(&parts[0])?,
                    on(&parts[1])?,
                    on(&parts[2])?,
                    on(&parts[3])?,
                ];
                let meta = MetaNet::from_tensors(parts)
                    .map_err(|e| Error::bad_file(path, e, "export it again"))?;
                let model = clip.model()?;
                let want = (
                    model.config.projection_dim,
                    model.config.text_config.hidden_size,
                );
                if meta.widths() != want {
                    return Err(Error::bad_file(
                        path,
                        format!(
                            "has a meta-net from {} to {} but the model's widths are {} and {}",
                            meta.widths().0,
                            meta.widths().1,
                            want.0,
                            want.1
                        ),
                        "score it with the model it was trained on",
                    ));
                }
                Some((self.learner(clip, path)?, meta))
            }
        };
        Ok(LearnedScorer { weights, cocoop })
    }

    /// The prompts one image (its feature `[1, P]`) is scored with: the file's context, plus for CoCoOp
    /// the meta-net's shift π(x) of this image; and their normalised class weights.
    pub fn learner_for_image(
        &self,
        clip: &LoadedClip,
        path: &Path,
        image_feat: &Tensor,
    ) -> Result<(PromptLearner, Tensor)> {
        // The scorer has checked the file and built what it needs; only CoCoOp's learner is shifted.
        let LearnedScorer { weights, cocoop } = self.scorer(clip, path)?;
        match cocoop {
            None => Ok((self.learner(clip, path)?, weights)),
            Some((mut learner, meta)) => {
                let shift = meta
                    .forward(&crate::clip::l2_normalize(image_feat)?)?
                    .get(0)?;
                learner.set_ctx(&learner.ctx.as_tensor().broadcast_add(&shift)?.detach())?;
                let weights = crate::clip::l2_normalize(
                    &learner.text_features(&clip.model()?.text)?.detach(),
                )?;
                Ok((learner, weights))
            }
        }
    }

    /// Rebuilds the prompt learner with this context on `clip`.
    pub fn learner(&self, clip: &LoadedClip, path: &Path) -> Result<PromptLearner> {
        self.check_model(clip, path)?;
        let cfg = CoopConfig {
            ctx_init: None,
            ..self.meta.coop.clone()
        };
        let mut learner = PromptLearner::new(
            &clip.model()?.text,
            clip.tokenizer()?,
            &self.meta.class_names,
            &cfg,
        )?;
        learner
            .set_ctx(&self.ctx.to_device(&clip.device)?)
            .map_err(|e| Error::bad_file(path, e, "export it again"))?;
        Ok(learner)
    }
}
