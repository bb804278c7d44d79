//! SigLIP's `config.json` (transformers' `SiglipConfig`) checked for what candle-transformers' SigLIP runs.

use candle_nn::VarBuilder;
use candle_transformers::models::siglip::Config;
use serde_json::Value;

pub struct Info {
    pub context: usize,
    pub pad_id: u32,
    pub summary: String,
}

pub fn config(v: &Value) -> Result<(Config, Info), String> {
    let cfg: Config =
        serde_json::from_value(v.clone()).map_err(|e| format!("not a SigLIP config ({e})"))?;
    let (t, vis) = (&cfg.text_config, &cfg.vision_config);
    let text = &v["text_config"];
    if let Some(p) = text.get("projection_size").and_then(Value::as_u64) {
        if p as usize != t.hidden_size {
            return Err(format!("text projection_size {p} differs from hidden_size {}; candle-transformers' SigLIP projects to hidden_size", t.hidden_size));
        }
    }
    if v["vision_config"]
        .get("vision_use_head")
        .and_then(Value::as_bool)
        == Some(false)
    {
        return Err(
            "vision_use_head is false: this vision tower has no pooled image feature".into(),
        );
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
    if vis.num_channels != 3 {
        return Err("images have 3 channels".into());
    }
    if t.hidden_size != vis.hidden_size {
        return Err(format!(
            "text ({}) and vision ({}) widths differ: their features cannot be compared",
            t.hidden_size, vis.hidden_size
        ));
    }
    let summary = format!(
        "SigLIP (ViT {0}×{0} px, patch {1}, text {2}-d, {3} layers / vision {4} layers, context {5})",
        vis.image_size, vis.patch_size, t.hidden_size, t.num_hidden_layers, vis.num_hidden_layers, t.max_position_embeddings
    );
    Ok((
        cfg.clone(),
        Info {
            context: t.max_position_embeddings,
            pad_id: t.pad_token_id,
            summary,
        },
    ))
}

/// The parameters candle would otherwise not ask for by name before use.
pub fn check_weights(vb: &VarBuilder) -> candle_core::Result<()> {
    for name in ["logit_scale", "logit_bias", "vision_model.head.probe"] {
        if !vb.contains_tensor(name) {
            candle_core::bail!("no tensor {name}")
        }
    }
    Ok(())
}
