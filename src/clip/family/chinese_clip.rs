//! Chinese-CLIP's `config.json` (transformers' `ChineseCLIPConfig`), field for field with its defaults,
//! turned into candle-transformers' config (which has no reader of its own).

use candle_nn::VarBuilder;
use candle_transformers::models::chinese_clip::{
    text_model::{ChineseClipTextConfig, PositionEmbeddingType},
    vision_model::ChineseClipVisionConfig,
    Activation, ChineseClipConfig,
};
use serde::Deserialize;
use serde_json::Value;

pub use super::siglip::Info;

fn d_vocab() -> usize {
    30522
}
fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_inter() -> usize {
    3072
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_quick_gelu() -> String {
    "quick_gelu".into()
}
fn d_max_pos() -> usize {
    512
}
fn d_type_vocab() -> usize {
    2
}
fn d_text_eps() -> f64 {
    1e-12
}
fn d_vision_eps() -> f64 {
    1e-5
}
fn d_absolute() -> String {
    "absolute".into()
}
fn d_proj() -> usize {
    512
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    32
}
fn d_scale() -> f32 {
    2.6592
}

#[derive(Deserialize)]
struct TextCfg {
    #[serde(default = "d_vocab")]
    vocab_size: usize,
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_inter")]
    intermediate_size: usize,
    #[serde(default = "d_gelu")]
    hidden_act: String,
    #[serde(default = "d_max_pos")]
    max_position_embeddings: usize,
    #[serde(default = "d_type_vocab")]
    type_vocab_size: usize,
    #[serde(default = "d_text_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    pad_token_id: u32,
    #[serde(default = "d_absolute")]
    position_embedding_type: String,
}

#[derive(Deserialize)]
struct VisionCfg {
    #[serde(default = "d_hidden")]
    hidden_size: usize,
    #[serde(default = "d_inter")]
    intermediate_size: usize,
    #[serde(default = "d_proj")]
    projection_dim: usize,
    #[serde(default = "d_layers")]
    num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    num_attention_heads: usize,
    #[serde(default = "d_channels")]
    num_channels: usize,
    #[serde(default = "d_image")]
    image_size: usize,
    #[serde(default = "d_patch")]
    patch_size: usize,
    #[serde(default = "d_quick_gelu")]
    hidden_act: String,
    #[serde(default = "d_vision_eps")]
    layer_norm_eps: f64,
}

#[derive(Deserialize)]
struct Cfg {
    text_config: TextCfg,
    vision_config: VisionCfg,
    #[serde(default = "d_proj")]
    projection_dim: usize,
    #[serde(default = "d_scale")]
    logit_scale_init_value: f32,
}

/// candle's activation parser panics on a name it does not know; this one says so.
fn activation(name: &str) -> Result<Activation, String> {
    match name {
        "quick_gelu" | "gelu" | "gelu_new" | "relu" => Ok(Activation::from(name.to_string())),
        other => Err(format!("hidden_act \"{other}\" is not one candle-transformers' Chinese-CLIP runs (quick_gelu, gelu, gelu_new, relu)")),
    }
}

pub fn config(v: &Value) -> Result<(ChineseClipConfig, Info), String> {
    let c: Cfg = serde_json::from_value(v.clone())
        .map_err(|e| format!("not a Chinese-CLIP config ({e})"))?;
    let (t, vis) = (&c.text_config, &c.vision_config);
    if t.position_embedding_type != "absolute" {
        return Err(format!(
            "position_embedding_type \"{}\" is not supported (only \"absolute\")",
            t.position_embedding_type
        ));
    }
    super::check_towers(
        [
            t.hidden_size,
            t.num_attention_heads,
            t.intermediate_size,
            t.num_hidden_layers,
        ],
        [
            vis.hidden_size,
            vis.num_attention_heads,
            vis.intermediate_size,
            vis.num_hidden_layers,
        ],
    )?;
    super::check_sizes(
        vis.image_size,
        vis.patch_size,
        t.max_position_embeddings,
        t.vocab_size,
    )?;
    if t.type_vocab_size == 0
        || t.type_vocab_size > 1024
        || vis.num_channels != 3
        || c.projection_dim == 0
        || c.projection_dim > 1 << 14
    {
        return Err("type_vocab_size and projection_dim must be positive and of a released model's size, and images have 3 channels".into());
    }
    let text_config = ChineseClipTextConfig {
        vocab_size: t.vocab_size,
        hidden_size: t.hidden_size,
        num_hidden_layers: t.num_hidden_layers,
        num_attention_heads: t.num_attention_heads,
        intermediate_size: t.intermediate_size,
        hidden_act: activation(&t.hidden_act)?,
        max_position_embeddings: t.max_position_embeddings,
        type_vocab_size: t.type_vocab_size,
        layer_norm_eps: t.layer_norm_eps,
        pad_token_id: t.pad_token_id as usize,
        position_embedding_type: PositionEmbeddingType::Absolute,
        ..ChineseClipTextConfig::default()
    };
    let vision_config = ChineseClipVisionConfig {
        hidden_size: vis.hidden_size,
        intermediate_size: vis.intermediate_size,
        projection_dim: vis.projection_dim,
        num_hidden_layers: vis.num_hidden_layers,
        num_attention_heads: vis.num_attention_heads,
        num_channels: vis.num_channels,
        image_size: vis.image_size,
        patch_size: vis.patch_size,
        hidden_act: activation(&vis.hidden_act)?,
        layer_norm_eps: vis.layer_norm_eps,
        ..ChineseClipVisionConfig::default()
    };
    let summary = format!(
        "Chinese-CLIP (ViT {0}×{0} px, patch {1}, BERT text {2}-d, {3} layers / vision {4}-d, {5} layers, projection {6})",
        vis.image_size, vis.patch_size, t.hidden_size, t.num_hidden_layers, vis.hidden_size, vis.num_hidden_layers, c.projection_dim
    );
    let info = Info {
        context: t.max_position_embeddings,
        pad_id: t.pad_token_id,
        summary,
    };
    let cfg = ChineseClipConfig {
        text_config,
        vision_config,
        projection_dim: c.projection_dim,
        logit_scale_init_value: c.logit_scale_init_value,
        image_size: vis.image_size,
    };
    Ok((cfg, info))
}

/// candle fills a missing class embedding with random numbers and a missing logit scale with the init
/// value; a folder without them is the wrong folder, not a model to run.
pub fn check_weights(vb: &VarBuilder) -> candle_core::Result<()> {
    for name in [
        "vision_model.embeddings.class_embedding",
        "logit_scale",
        "text_projection.weight",
        "visual_projection.weight",
    ] {
        if !vb.contains_tensor(name) {
            candle_core::bail!("no tensor {name}")
        }
    }
    Ok(())
}
