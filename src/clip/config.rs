//! `config.json` of a Hugging Face CLIP checkpoint, field for field (transformers'
//! `configuration_clip.py`), with that file's defaults for fields older configs lack.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact (erf) GELU, as `transformers.activations.GELUActivation`.
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
}

fn d_vocab() -> usize {
    49408
}
fn d_text_hidden() -> usize {
    512
}
fn d_text_inter() -> usize {
    2048
}
fn d_text_heads() -> usize {
    8
}
fn d_max_pos() -> usize {
    77
}
fn d_layers() -> usize {
    12
}
fn d_act() -> HiddenAct {
    HiddenAct::QuickGelu
}
fn d_eps() -> f64 {
    1e-5
}
fn d_bos() -> u32 {
    49406
}
fn d_eos() -> u32 {
    49407
}
fn d_vision_hidden() -> usize {
    768
}
fn d_vision_inter() -> usize {
    3072
}
fn d_vision_heads() -> usize {
    12
}
fn d_image_size() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_channels() -> usize {
    3
}
fn d_proj() -> usize {
    512
}
fn d_logit_scale() -> f64 {
    2.6592
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_text_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_text_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "d_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "d_bos")]
    pub bos_token_id: u32,
    /// OpenAI's checkpoints on the hub say 2 here (a leftover); transformers then pools at `argmax(ids)`,
    /// which is the end-of-text token for that vocabulary. We always pool at the first end-of-text token.
    #[serde(default = "d_eos")]
    pub eos_token_id: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_vision_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_vision_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_image_size")]
    pub image_size: usize,
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_act")]
    pub hidden_act: HiddenAct,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

impl VisionConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub text_config: TextConfig,
    pub vision_config: VisionConfig,
    #[serde(default = "d_proj")]
    pub projection_dim: usize,
    #[serde(default = "d_logit_scale")]
    pub logit_scale_init_value: f64,
    #[serde(default)]
    pub model_type: Option<String>,
}

impl ClipConfig {
    /// Checks what the maths needs and serde cannot: divisibility and non-zero sizes.
    pub fn validate(&self) -> Result<(), String> {
        let t = &self.text_config;
        let v = &self.vision_config;
        let checks = [
            (
                t.hidden_size == 0
                    || t.num_attention_heads == 0
                    || !t.hidden_size.is_multiple_of(t.num_attention_heads),
                format!(
                    "text hidden_size {} is not divisible by num_attention_heads {}",
                    t.hidden_size, t.num_attention_heads
                ),
            ),
            (
                v.hidden_size == 0
                    || v.num_attention_heads == 0
                    || !v.hidden_size.is_multiple_of(v.num_attention_heads),
                format!(
                    "vision hidden_size {} is not divisible by num_attention_heads {}",
                    v.hidden_size, v.num_attention_heads
                ),
            ),
            (
                v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size),
                format!(
                    "vision image_size {} is not a multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ),
            (
                t.max_position_embeddings < 2,
                "text max_position_embeddings must be at least 2".to_string(),
            ),
            (
                self.projection_dim == 0,
                "projection_dim must be positive".to_string(),
            ),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, msg)) => Err(msg),
            None => Ok(()),
        }
    }

    /// An architecture by name: the small ones promptscope defines and the OpenAI CLIP sizes.
    pub fn preset(name: &str) -> Result<Self, String> {
        Ok(match name {
            "tiny" => Self::tiny(HiddenAct::QuickGelu, 1e-5),
            "scenes" => Self::scenes(),
            "tiny-gelu" => Self::tiny(HiddenAct::Gelu, 1e-6),
            "vit-b-32" => Self::vit_b_32(),
            "vit-b-16" => Self::vit_b_16(),
            "vit-l-14" => Self::vit_l_14(224),
            "vit-l-14-336" => Self::vit_l_14(336),
            other => return Err(format!("unknown preset '{other}': tiny, scenes, tiny-gelu, vit-b-32, vit-b-16, vit-l-14, vit-l-14-336")),
        })
    }

    /// The architecture of `openai/clip-vit-base-patch32`.
    pub fn vit_b_32() -> Self {
        Self {
            text_config: TextConfig {
                vocab_size: 49408,
                hidden_size: 512,
                intermediate_size: 2048,
                num_hidden_layers: 12,
                num_attention_heads: 8,
                max_position_embeddings: 77,
                hidden_act: HiddenAct::QuickGelu,
                layer_norm_eps: 1e-5,
                bos_token_id: 49406,
                eos_token_id: 49407,
            },
            vision_config: VisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
                hidden_act: HiddenAct::QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
            model_type: Some("clip".into()),
        }
    }

    /// `openai/clip-vit-base-patch16`.
    pub fn vit_b_16() -> Self {
        let mut c = Self::vit_b_32();
        c.vision_config.patch_size = 16;
        c
    }

    /// `openai/clip-vit-large-patch14` (`image_size` 336 for the `-336` variant).
    pub fn vit_l_14(image_size: usize) -> Self {
        let mut c = Self::vit_b_32();
        c.text_config.hidden_size = 768;
        c.text_config.intermediate_size = 3072;
        c.text_config.num_attention_heads = 12;
        c.vision_config = VisionConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size,
            patch_size: 14,
            num_channels: 3,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        };
        c.projection_dim = 768;
        c
    }

    /// The demo models' architecture (pretrained here on captioned scenes): the real 49,408-token
    /// vocabulary at a narrow text width, an 8×8 grid of 8 px patches at 64 px (8 px patches keep the
    /// edges shape needs; `scripts/shape_capacity.py`), FILIP's projection width 256.
    pub fn scenes() -> Self {
        let act = HiddenAct::QuickGelu;
        Self {
            text_config: TextConfig {
                vocab_size: 49408,
                hidden_size: 64,
                intermediate_size: 256,
                num_hidden_layers: 4,
                num_attention_heads: 4,
                max_position_embeddings: 77,
                hidden_act: act,
                layer_norm_eps: 1e-5,
                bos_token_id: 49406,
                eos_token_id: 49407,
            },
            vision_config: VisionConfig {
                hidden_size: 128,
                intermediate_size: 512,
                num_hidden_layers: 6,
                num_attention_heads: 4,
                image_size: 64,
                patch_size: 8,
                num_channels: 3,
                hidden_act: act,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 256,
            logit_scale_init_value: 2.6592,
            model_type: Some("clip".into()),
        }
    }

    /// A small model with the real vocabulary and the real layout, for tests, samples and fixtures.
    pub fn tiny(hidden_act: HiddenAct, layer_norm_eps: f64) -> Self {
        Self {
            text_config: TextConfig {
                vocab_size: 49408,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                max_position_embeddings: 77,
                hidden_act,
                layer_norm_eps,
                bos_token_id: 49406,
                eos_token_id: 49407,
            },
            vision_config: VisionConfig {
                hidden_size: 48,
                intermediate_size: 96,
                num_hidden_layers: 3,
                num_attention_heads: 4,
                image_size: 224,
                patch_size: 32,
                num_channels: 3,
                hidden_act,
                layer_norm_eps,
            },
            projection_dim: 24,
            logit_scale_init_value: 2.6592,
            model_type: Some("clip".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_configs_get_transformers_defaults() {
        let c: ClipConfig =
            serde_json::from_str(r#"{"text_config": {}, "vision_config": {"patch_size": 16}}"#)
                .unwrap();
        assert_eq!(c.text_config.vocab_size, 49408);
        assert_eq!(c.text_config.hidden_act, HiddenAct::QuickGelu);
        assert_eq!(c.vision_config.grid(), 14);
        assert_eq!(c.projection_dim, 512);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn gelu_and_eps_are_read() {
        let c: ClipConfig = serde_json::from_str(
            r#"{"text_config": {"hidden_act": "gelu", "layer_norm_eps": 1e-6}, "vision_config": {}}"#,
        )
        .unwrap();
        assert_eq!(c.text_config.hidden_act, HiddenAct::Gelu);
        assert_eq!(c.text_config.layer_norm_eps, 1e-6);
    }

    #[test]
    fn indivisible_heads_are_rejected() {
        let mut c = ClipConfig::vit_b_32();
        c.text_config.num_attention_heads = 7;
        assert!(c.validate().unwrap_err().contains("divisible"));
    }
}
