//! The export format of learned prompts: a `.safetensors` file any safetensors reader opens.
//!
//! Tensors: `ctx` (`[M, D]` unified or `[C, M, D]` class-specific) and `class_embeds` (`[C, P]`, the
//! normalised class weights: zero-shot classification with them needs no promptscope). Metadata: one
//! string key per field of [`PromptMeta`] (JSON for lists and objects) plus `promptscope`, the whole
//! record as JSON.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::clip::LoadedClip;
use crate::error::{write_atomic, Error, Result};
use crate::export::model_check::{check_model, MadeOn};
use crate::prompt::coop::{CoopConfig, PromptLearner};
use crate::tensor_file::{read_safetensors, safetensors_bytes};
use crate::train::coop::TrainConfig;

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
}

pub struct PromptFile {
    pub ctx: Tensor,
    pub class_embeds: Tensor,
    pub meta: PromptMeta,
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
            },
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
        meta.insert("promptscope".into(), full.to_string());
        let bytes = safetensors_bytes(
            &[
                ("ctx", self.ctx.clone()),
                ("class_embeds", self.class_embeds.clone()),
            ],
            meta,
        )?;
        write_atomic(path, &bytes)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, meta) = read_safetensors(path)?;
        let fix = "pass a prompts file exported by promptscope (train --out, or import-coop --out)";
        let json = meta
            .get("promptscope")
            .ok_or_else(|| Error::bad_file(path, "has no promptscope metadata", fix))?;
        let meta: PromptMeta = serde_json::from_str(json)
            .map_err(|e| Error::bad_file(path, format!("has unreadable metadata ({e})"), fix))?;
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .ok_or_else(|| Error::bad_file(path, format!("has no '{k}' tensor"), fix))
        };
        Ok(Self {
            ctx: get("ctx")?,
            class_embeds: get("class_embeds")?,
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
