//! The other image–text families that share CLIP's two-tower interface, run by candle-transformers:
//! SigLIP and Chinese-CLIP. They give global features (one vector an image, one a text), which is all
//! that zero-shot, template ensembles, the linear probe, Tip-Adapter(-F), CLIP-Adapter and Compare need.
//! Prompt learning (CoOp, CoCoOp, KgCoOp, MP-FGVC) and the token maps (FILIP, SsVP) reach inside the
//! towers, so they stay with our CLIP ([`crate::clip::ClipModel`]).

mod chinese_clip;
mod siglip;
mod text;

use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde_json::Value;

use crate::error::{Error, Result};

/// Which architecture a model folder holds, from its `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    Clip,
    Siglip,
    ChineseClip,
}

/// The `model_type`s promptscope reads, for messages.
const KNOWN: &str = "clip (CLIP, and FILIP models made by promptscope), siglip (SigLIP), chinese_clip (Chinese-CLIP)";

impl Family {
    /// A config without `model_type` is taken for CLIP, as older CLIP exports lack it.
    pub fn of_config(config: &Value) -> std::result::Result<Self, String> {
        match config.get("model_type").and_then(Value::as_str) {
            None | Some("clip") => Ok(Family::Clip),
            Some("siglip") => Ok(Family::Siglip),
            Some("chinese_clip") => Ok(Family::ChineseClip),
            Some("siglip2") => Err(format!("model_type \"siglip2\" (SigLIP 2) is not supported; promptscope reads {KNOWN}")),
            Some(other) => Err(format!("model_type \"{other}\" is not an image–text model promptscope reads; it reads {KNOWN}")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "CLIP",
            Family::Siglip => "SigLIP",
            Family::ChineseClip => "Chinese-CLIP",
        }
    }

    /// Whether the model exposes what prompt learning and the token maps need (our CLIP does).
    pub fn token_level(self) -> bool {
        self == Family::Clip
    }

    /// What a user can do with a model of this family, for the app and error messages.
    pub fn supports(self) -> &'static str {
        if self.token_level() {
            "everything: zero-shot, ensembles, linear probe, Tip-Adapter(-F), CLIP-Adapter, CoOp and its variants, maps, MP-FGVC"
        } else {
            "global features only: zero-shot, template ensembles, linear probe, Tip-Adapter(-F), CLIP-Adapter, Compare. \
             CoOp and its variants, MP-FGVC and the maps need CLIP's token-level access"
        }
    }
}

/// What candle's towers assume of a config without checking it (a bad value would fail deep inside a
/// forward pass, or allocate without bound): widths split evenly into heads, every size positive.
pub(super) fn check_tower(
    what: &str,
    hidden: usize,
    heads: usize,
    intermediate: usize,
    layers: usize,
) -> Result<(), String> {
    if hidden == 0 || heads == 0 || intermediate == 0 || layers == 0 {
        return Err(format!("{what}: hidden_size, num_attention_heads, intermediate_size and num_hidden_layers must all be positive"));
    }
    if !hidden.is_multiple_of(heads) {
        return Err(format!(
            "{what}: hidden_size {hidden} is not divisible by num_attention_heads {heads}"
        ));
    }
    if hidden > 1 << 14 || intermediate > 1 << 17 || layers > 512 {
        return Err(format!("{what}: sizes beyond any released model (hidden {hidden}, intermediate {intermediate}, {layers} layers)"));
    }
    Ok(())
}

/// [`check_tower`] of the text and the vision tower, each `[hidden, heads, intermediate, layers]`.
pub(super) fn check_towers(text: [usize; 4], vision: [usize; 4]) -> Result<(), String> {
    for (what, [h, heads, inter, layers]) in [("text_config", text), ("vision_config", vision)] {
        check_tower(what, h, heads, inter, layers)?;
    }
    Ok(())
}

/// Image and context sizes within what any released model uses: candle builds index tensors of the
/// patch count and the context length before it checks them against the weights, so a config claiming
/// a gigapixel input would allocate without bound (found by the Chinese-CLIP config fuzz target, which
/// the kernel's OOM killer ended).
pub(super) fn check_sizes(
    image_size: usize,
    patch_size: usize,
    context: usize,
    vocab: usize,
) -> Result<(), String> {
    if patch_size == 0 || image_size == 0 || !image_size.is_multiple_of(patch_size) {
        return Err(format!(
            "image_size {image_size} is not a positive multiple of patch_size {patch_size}"
        ));
    }
    if image_size > 4096 || (image_size / patch_size).pow(2) > 1 << 16 {
        return Err(format!("image_size {image_size} with patch_size {patch_size} is beyond any released model (at most 4096 px, 65536 patches)"));
    }
    if context == 0 || context > 1 << 14 || vocab == 0 || vocab > 1 << 22 {
        return Err(format!("a text context of {context} positions and a vocabulary of {vocab} are beyond any released model"));
    }
    Ok(())
}

/// A SigLIP or Chinese-CLIP model with its tokenizer, behind the global-feature interface.
pub struct GlobalModel {
    pub family: Family,
    towers: Towers,
    text: text::FamilyText,
    pub image_size: usize,
    pub projection_dim: usize,
    /// `exp(logit_scale)`.
    pub logit_scale: f32,
    /// SigLIP's learned bias on the sigmoid logits; it moves every class alike, so argmax ignores it.
    pub logit_bias: Option<f32>,
    /// One line for logs and the UI.
    pub summary: String,
    device: candle_core::Device,
}

enum Towers {
    Siglip(candle_transformers::models::siglip::Model),
    ChineseClip(candle_transformers::models::chinese_clip::ChineseClipModel),
}

impl GlobalModel {
    /// Loads `family` from `config` (the folder's parsed `config.json`), the mapped weights and the folder's
    /// `tokenizer.json`. Errors name the file at fault.
    pub fn load(
        family: Family,
        dir: &Path,
        config: &Value,
        weights: &Path,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let bad_cfg = |e: String| {
            Error::bad_file(
                &cfg_path,
                e,
                format!(
                    "use the config.json saved with this {} model",
                    family.name()
                ),
            )
        };
        let shape_err = |e: candle_core::Error| {
            Error::bad_file(
                weights,
                format!("does not match config.json ({e})"),
                "use the config.json and model.safetensors of the same checkpoint",
            )
        };
        let tok_path = dir.join("tokenizer.json");
        match family {
            Family::Siglip => {
                let (cfg, info) = siglip::config(config).map_err(bad_cfg)?;
                siglip::check_weights(&vb).map_err(shape_err)?;
                let model = candle_transformers::models::siglip::Model::new(&cfg, vb.clone())
                    .map_err(shape_err)?;
                let logit_scale = vb
                    .get(1, "logit_scale")
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(shape_err)?[0]
                    .exp();
                let logit_bias = vb
                    .get(1, "logit_bias")
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(shape_err)?[0];
                let text = text::FamilyText::load(
                    &tok_path,
                    info.context,
                    text::Padding::MaxLength(info.pad_id),
                    family,
                )?;
                Ok(Self {
                    family,
                    towers: Towers::Siglip(model),
                    text,
                    image_size: cfg.vision_config.image_size,
                    projection_dim: cfg.text_config.hidden_size,
                    logit_scale,
                    logit_bias: Some(logit_bias),
                    summary: info.summary,
                    device: vb.device().clone(),
                })
            }
            Family::ChineseClip => {
                let (cfg, info) = chinese_clip::config(config).map_err(bad_cfg)?;
                chinese_clip::check_weights(&vb).map_err(shape_err)?;
                let model = candle_transformers::models::chinese_clip::ChineseClipModel::new(
                    vb.clone(),
                    &cfg,
                )
                .map_err(shape_err)?;
                let logit_scale = vb
                    .get((), "logit_scale")
                    .and_then(|t| t.to_scalar::<f32>())
                    .map_err(shape_err)?
                    .exp();
                let text = text::FamilyText::load(
                    &tok_path,
                    info.context,
                    text::Padding::Longest(info.pad_id),
                    family,
                )?;
                Ok(Self {
                    family,
                    towers: Towers::ChineseClip(model),
                    text,
                    image_size: cfg.vision_config.image_size,
                    projection_dim: cfg.projection_dim,
                    logit_scale,
                    logit_bias: None,
                    summary: info.summary,
                    device: vb.device().clone(),
                })
            }
            Family::Clip => Err(Error::invalid("CLIP folders load through clip::load")),
        }
    }

    /// Projected (not normalised) image features `[B, P]` of preprocessed pixels `[B, 3, H, W]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(match &self.towers {
            Towers::Siglip(m) => m.get_image_features(pixels)?,
            Towers::ChineseClip(m) => m.get_image_features(pixels)?,
        })
    }

    /// The ids (and, where the family masks padding, the mask) the model reads for `texts`.
    pub fn encode(&self, texts: &[String]) -> Result<text::Encoded> {
        self.text.encode(texts)
    }

    /// Projected (not normalised) text features `[N, P]`.
    pub fn text_features(&self, texts: &[String]) -> Result<Tensor> {
        self.text_features_of(&self.encode(texts)?)
    }

    /// Text features of already encoded texts.
    pub fn text_features_of(&self, enc: &text::Encoded) -> Result<Tensor> {
        let ids = enc.ids_tensor(&self.device)?;
        Ok(match &self.towers {
            Towers::Siglip(m) => m.get_text_features(&ids)?,
            Towers::ChineseClip(m) => {
                let mask = enc.mask_tensor(&self.device)?;
                m.get_text_features(&ids, None, mask.as_ref())?
            }
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.text.vocab_size()
    }
}

pub use text::Encoded;
