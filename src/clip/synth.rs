//! Random-weight CLIP checkpoints in the real Hugging Face layout. There are no pretrained weights on
//! the machines we test and benchmark on; a checkpoint with random values in the real layout exercises
//! exactly the same code, and transformers loads the same folder for the reference numbers.
//!
//! Values are a pure function of (tensor name, index): splitmix64 seeded by the FNV-1a hash of the name,
//! so any size of model is reproducible bit for bit without storing it.

use std::path::Path;

use rayon::prelude::*;

use super::config::ClipConfig;
use super::tokenizer::ClipTokenizer;
use crate::error::{write_atomic, Error, Result};

/// How a tensor's values are drawn: `offset + scale · u`, u uniform in [-1, 1).
#[derive(Debug, Clone, Copy)]
struct Init {
    offset: f32,
    scale: f32,
}

/// Every tensor of `CLIPModel`'s state dict with its shape, in a fixed order.
pub fn parameter_shapes(c: &ClipConfig) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let t = &c.text_config;
    let v = &c.vision_config;
    let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
    let layers = |push: &mut dyn FnMut(String, Vec<usize>),
                  prefix: &str,
                  n: usize,
                  d: usize,
                  inter: usize| {
        for i in 0..n {
            let p = format!("{prefix}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                push(format!("{p}.self_attn.{proj}.weight"), vec![d, d]);
                push(format!("{p}.self_attn.{proj}.bias"), vec![d]);
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                push(format!("{p}.{ln}.weight"), vec![d]);
                push(format!("{p}.{ln}.bias"), vec![d]);
            }
            push(format!("{p}.mlp.fc1.weight"), vec![inter, d]);
            push(format!("{p}.mlp.fc1.bias"), vec![inter]);
            push(format!("{p}.mlp.fc2.weight"), vec![d, inter]);
            push(format!("{p}.mlp.fc2.bias"), vec![d]);
        }
    };
    push(
        "text_model.embeddings.token_embedding.weight".into(),
        vec![t.vocab_size, t.hidden_size],
    );
    push(
        "text_model.embeddings.position_embedding.weight".into(),
        vec![t.max_position_embeddings, t.hidden_size],
    );
    layers(
        &mut push,
        "text_model",
        t.num_hidden_layers,
        t.hidden_size,
        t.intermediate_size,
    );
    push(
        "text_model.final_layer_norm.weight".into(),
        vec![t.hidden_size],
    );
    push(
        "text_model.final_layer_norm.bias".into(),
        vec![t.hidden_size],
    );
    push(
        "vision_model.embeddings.class_embedding".into(),
        vec![v.hidden_size],
    );
    push(
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![v.hidden_size, v.num_channels, v.patch_size, v.patch_size],
    );
    push(
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![v.num_patches() + 1, v.hidden_size],
    );
    push(
        "vision_model.pre_layrnorm.weight".into(),
        vec![v.hidden_size],
    );
    push("vision_model.pre_layrnorm.bias".into(), vec![v.hidden_size]);
    layers(
        &mut push,
        "vision_model",
        v.num_hidden_layers,
        v.hidden_size,
        v.intermediate_size,
    );
    push(
        "vision_model.post_layernorm.weight".into(),
        vec![v.hidden_size],
    );
    push(
        "vision_model.post_layernorm.bias".into(),
        vec![v.hidden_size],
    );
    push(
        "visual_projection.weight".into(),
        vec![c.projection_dim, v.hidden_size],
    );
    push(
        "text_projection.weight".into(),
        vec![c.projection_dim, t.hidden_size],
    );
    push("logit_scale".into(), vec![]);
    out
}

fn init_for(name: &str, shape: &[usize]) -> Init {
    let is_norm =
        name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm");
    if is_norm && name.ends_with(".weight") {
        Init {
            offset: 1.0,
            scale: 0.1,
        }
    } else if name.ends_with(".bias") {
        Init {
            offset: 0.0,
            scale: 0.1,
        }
    } else if name.contains("embedding") && !name.contains("patch_embedding") {
        Init {
            offset: 0.0,
            scale: 0.5,
        }
    } else {
        // Weights `[out, in, ...]`: variance 1/fan_in keeps activations of order one through the depth.
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        Init {
            offset: 0.0,
            scale: (3.0 / fan_in as f32).sqrt(),
        }
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Uniform values in [-1, 1) with 24 random bits each, a pure function of `(seed_name, i)`.
pub fn uniform_values(seed_name: &str, n: usize) -> Vec<f32> {
    let seed = fnv1a(seed_name);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let z =
                splitmix64(seed.wrapping_add((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
            ((z >> 40) as f32) * (2.0 / 16_777_216.0) - 1.0
        })
        .collect()
}

/// The values of one tensor of the synthetic checkpoint.
pub fn tensor_values(name: &str, shape: &[usize]) -> Vec<f32> {
    if name == "logit_scale" {
        return vec![(1.0f64 / 0.07).ln() as f32];
    }
    let init = init_for(name, shape);
    let mut v = uniform_values(name, shape.iter().product());
    v.par_iter_mut()
        .for_each(|x| *x = init.offset + init.scale * *x);
    v
}

/// Writes `config.json`, `model.safetensors`, `tokenizer.json` (the bundled OpenAI BPE) and
/// `preprocessor_config.json` into `dir`.
pub fn write_model_folder(config: &ClipConfig, dir: &Path) -> Result<()> {
    write_model_folder_with(config, dir, Storage::F32, &|name, shape| {
        Ok(tensor_values(name, shape))
    })
}

/// How `model.safetensors` stores the weights: f32, or f16 (half the size; loaded back as f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    F32,
    F16,
}

/// A tensor's values (row-major f32) by name and shape.
pub type TensorValues<'a> = dyn Fn(&str, &[usize]) -> Result<Vec<f32>> + 'a;

/// As [`write_model_folder`], with each tensor's values (row-major, f32) from `values(name, shape)`: what
/// pretraining writes its trained weights through.
pub fn write_model_folder_with(
    config: &ClipConfig,
    dir: &Path,
    storage: Storage,
    values: &TensorValues,
) -> Result<()> {
    config.validate().map_err(Error::invalid)?;
    crate::error::create_dir_atomic(dir, |tmp| write_files(config, tmp, storage, values))
}

fn write_files(
    config: &ClipConfig,
    dir: &Path,
    storage: Storage,
    values: &TensorValues,
) -> Result<()> {
    let mut cfg_json = serde_json::to_value(config).map_err(|e| Error::invalid(e.to_string()))?;
    cfg_json["architectures"] = serde_json::json!(["CLIPModel"]);
    cfg_json["model_type"] = serde_json::json!("clip");
    let cfg_text =
        serde_json::to_string_pretty(&cfg_json).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&dir.join("config.json"), cfg_text.as_bytes())?;

    let shapes = parameter_shapes(config);
    let data: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let v = values(name, shape)?;
            Ok(match storage {
                Storage::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Storage::F16 => v
                    .iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    let dtype = match storage {
        Storage::F32 => safetensors::Dtype::F32,
        Storage::F16 => safetensors::Dtype::F16,
    };
    let views: Vec<(String, safetensors::tensor::TensorView)> = shapes
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                .map_err(|e| Error::invalid(format!("{name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes =
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&dir.join("model.safetensors"), &bytes)?;

    ClipTokenizer::bundled(config.text_config.max_position_embeddings)?
        .save(&dir.join("tokenizer.json"))?;
    let s = config.vision_config.image_size;
    let pre = serde_json::json!({
        "crop_size": {"height": s, "width": s}, "do_center_crop": true, "do_convert_rgb": true,
        "do_normalize": true, "do_rescale": true, "do_resize": true,
        "image_mean": super::preprocess::OPENAI_MEAN, "image_std": super::preprocess::OPENAI_STD,
        "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1.0 / 255.0,
        "size": {"shortest_edge": s}
    });
    write_atomic(
        &dir.join("preprocessor_config.json"),
        serde_json::to_string_pretty(&pre)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_deterministic_and_in_range() {
        let a = uniform_values("x", 1000);
        assert_eq!(a, uniform_values("x", 1000));
        assert_ne!(a, uniform_values("y", 1000));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean: f32 = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.1, "mean {mean}");
    }

    #[test]
    fn vit_b_32_has_the_published_parameter_count() {
        let n: usize = parameter_shapes(&ClipConfig::vit_b_32())
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        // openai/clip-vit-base-patch32: 151,277,313 parameters.
        assert_eq!(n, 151_277_313);
    }
}
