//! The MP-FGVC weights file: one `.safetensors` any safetensors reader opens, written atomically.
//!
//! Tensors: `datp.ctx` `[C, J, D_text]`, `datp.class_embeds` `[C, P]` (the normalised DaTP text features,
//! E_T), `head.weight`/`head.bias` (stage 1's linear head), `vision.layers.<i>.<checkpoint name>` for
//! each trained vision block, and, once stage 2 has run, `vlfm.<name>` (see [`crate::fusion::vlfm`]). Metadata:
//! `format`, `promptscope` (the whole [`MpFgvcMeta`] as JSON) and a few of its fields as plain strings.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::clip::LoadedClip;
use crate::error::{write_atomic, Error, Result};
use crate::export::model_check::{check_model, MadeOn};
use crate::fusion::vlfm::VlfmConfig;
use crate::tensor_file::{read_safetensors, safetensors_bytes};
use crate::train::config::MpFgvcRun;

pub const FORMAT: &str = "promptscope-mpfgvc/1";
const FIX: &str = "pass a weights file written by `promptscope mpfgvc train --out`";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MpFgvcMeta {
    pub format: String,
    pub promptscope_version: String,
    pub model_id: String,
    pub model_fingerprint: String,
    pub text_hidden_size: usize,
    pub vision_hidden_size: usize,
    pub vision_layers: usize,
    pub projection_dim: usize,
    pub class_names: Vec<String>,
    pub run: MpFgvcRun,
    /// 1 when only stage 1 has finished (the file written between the stages), 2 when VLFM is in it.
    pub stages: u8,
    pub vlfm: Option<VlfmConfig>,
    /// Final metrics, free-form.
    pub metrics: serde_json::Value,
}

pub struct MpFgvcFile {
    /// Every tensor by its saved name.
    pub tensors: HashMap<String, Tensor>,
    pub meta: MpFgvcMeta,
}

impl MpFgvcFile {
    pub fn meta_for(
        clip: &LoadedClip,
        class_names: &[String],
        run: &MpFgvcRun,
    ) -> Result<MpFgvcMeta> {
        let c = &clip.model()?.config;
        Ok(MpFgvcMeta {
            format: FORMAT.into(),
            promptscope_version: env!("CARGO_PKG_VERSION").into(),
            model_id: clip.id.clone(),
            model_fingerprint: crate::clip::load::fingerprint(&clip.dir)?,
            text_hidden_size: c.text_config.hidden_size,
            vision_hidden_size: c.vision_config.hidden_size,
            vision_layers: c.vision_config.num_hidden_layers,
            projection_dim: c.projection_dim,
            class_names: class_names.to_vec(),
            run: run.clone(),
            stages: 1,
            vlfm: None,
            metrics: serde_json::Value::Null,
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let full = serde_json::to_value(&self.meta).map_err(|e| Error::invalid(e.to_string()))?;
        let mut meta = HashMap::from([
            ("format".to_string(), self.meta.format.clone()),
            ("model_id".to_string(), self.meta.model_id.clone()),
            ("stages".to_string(), self.meta.stages.to_string()),
            (
                "super_category".to_string(),
                self.meta.run.datp.super_category.clone(),
            ),
        ]);
        meta.insert("promptscope".into(), full.to_string());
        let mut names: Vec<&String> = self.tensors.keys().collect();
        names.sort();
        let tensors: Vec<(&str, Tensor)> = names
            .iter()
            .map(|n| (n.as_str(), self.tensors[*n].clone()))
            .collect();
        write_atomic(path, &safetensors_bytes(&tensors, meta)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let (tensors, meta) = read_safetensors(path)?;
        let json = meta
            .get("promptscope")
            .ok_or_else(|| Error::bad_file(path, "has no promptscope metadata", FIX))?;
        let meta: MpFgvcMeta = serde_json::from_str(json).map_err(|e| {
            Error::bad_file(path, format!("is not an MP-FGVC weights file ({e})"), FIX)
        })?;
        if meta.format != FORMAT {
            return Err(Error::bad_file(
                path,
                format!("is a '{}' file, not '{FORMAT}'", meta.format),
                FIX,
            ));
        }
        Ok(Self { tensors, meta })
    }

    /// Refuses a file trained on another model: other dimensions, or the same shapes with other weights
    /// (the trained vision blocks and the learned tokens are only meaningful on the model they came from).
    pub fn check_model(&self, clip: &LoadedClip, path: &Path) -> Result<()> {
        let c = &clip.model()?.config;
        let m = &self.meta;
        let made = MadeOn {
            model_id: &m.model_id,
            fingerprint: &m.model_fingerprint,
            dims: vec![
                ("text width", m.text_hidden_size, c.text_config.hidden_size),
                (
                    "vision width",
                    m.vision_hidden_size,
                    c.vision_config.hidden_size,
                ),
                (
                    "vision blocks",
                    m.vision_layers,
                    c.vision_config.num_hidden_layers,
                ),
                ("projection", m.projection_dim, c.projection_dim),
            ],
        };
        check_model(path, &made, clip)
    }

    /// The tensors whose names start with `prefix`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
            .collect()
    }

    pub fn tensor(&self, name: &str, path: &Path) -> Result<&Tensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::bad_file(path, format!("has no '{name}' tensor"), FIX))
    }
}
