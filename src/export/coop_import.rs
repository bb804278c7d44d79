//! CoOp's own checkpoints (`output/.../prompt_learner/model.pth.tar-N`): a torch pickle whose
//! `state_dict` holds `ctx` (`[M, D]` or `[C, M, D]`), `token_prefix` (`[C, 1, D]`) and `token_suffix`.

use std::path::Path;

use candle_core::Tensor;

use crate::error::{Error, Result};

pub struct CoopCheckpoint {
    pub ctx: Tensor,
    pub num_classes: usize,
    pub csc: bool,
    pub n_ctx: usize,
    pub width: usize,
}

pub fn read(path: &Path) -> Result<CoopCheckpoint> {
    let fix = "pass CoOp's prompt_learner/model.pth.tar-N (saved by torch.save with a state_dict)";
    let bad = |why: String| Error::bad_file(path, why, fix);
    if !path.is_file() {
        return Err(Error::missing(path, fix));
    }
    super::pickle_guard::check_checkpoint(path)?;
    let pth = candle_core::pickle::PthTensors::new(path, Some("state_dict"))
        .map_err(|e| bad(format!("not a readable torch checkpoint ({e})")))?;
    let get = |k: &str| -> Result<Tensor> {
        pth.get(k)
            .map_err(|e| bad(format!("cannot read '{k}' ({e})")))?
            .ok_or_else(|| bad(format!("its state_dict has no '{k}'")))
    };
    let ctx = get("ctx")?.to_dtype(candle_core::DType::F32)?;
    let values: Vec<f32> = ctx.flatten_all()?.to_vec1()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!(
            "its state_dict's 'ctx' {:?} holds a non-finite value (NaN or infinity) at element {i}",
            ctx.dims()
        )));
    }
    let prefix = get("token_prefix")?;
    let (csc, n_ctx, width) = match ctx.dims() {
        [m, d] => (false, *m, *d),
        [_, m, d] => (true, *m, *d),
        other => {
            return Err(bad(format!(
                "ctx has shape {other:?}, expected [M, D] or [C, M, D]"
            )))
        }
    };
    let num_classes = prefix.dim(0)?;
    if csc && ctx.dim(0)? != num_classes {
        return Err(bad(format!(
            "ctx has {} class contexts but token_prefix has {num_classes} classes",
            ctx.dim(0)?
        )));
    }
    Ok(CoopCheckpoint {
        ctx,
        num_classes,
        csc,
        n_ctx,
        width,
    })
}

/// Turns CoOp's checkpoint into a promptscope prompts file for `clip` and `class_names` (CoOp's class
/// order, which its checkpoint does not record): the context as trained, the class weights recomputed.
pub fn to_prompt_file(
    clip: &crate::clip::LoadedClip,
    ckpt_path: &Path,
    class_names: &[String],
    class_position: crate::prompt::coop::ClassPosition,
) -> Result<crate::export::prompt_file::PromptFile> {
    use crate::prompt::coop::{CoopConfig, PromptLearner};
    let c = read(ckpt_path)?;
    if c.num_classes != class_names.len() {
        return Err(Error::bad_file(
            ckpt_path,
            format!("has {} classes but {} class names were given", c.num_classes, class_names.len()),
            "give the class names of the dataset it was trained on, in CoOp's order (a classnames.txt)",
        ));
    }
    let width = clip.model()?.config.text_config.hidden_size;
    if c.width != width {
        return Err(Error::bad_file(
            ckpt_path,
            format!("has context width {} but the model '{}' has token width {width} (dimension mismatch)", c.width, clip.id),
            "use the CLIP the checkpoint was trained with",
        ));
    }
    let cfg = CoopConfig {
        n_ctx: c.n_ctx,
        ctx_init: None,
        csc: c.csc,
        class_position,
        seed: 0,
    };
    let mut learner =
        PromptLearner::new(&clip.model()?.text, clip.tokenizer()?, class_names, &cfg)?;
    learner
        .set_ctx(&c.ctx.to_device(&clip.device)?)
        .map_err(|e| Error::bad_file(ckpt_path, e, "export it again from CoOp"))?;
    let weights = crate::clip::l2_normalize(&learner.text_features(&clip.model()?.text)?)?;
    let mut file = crate::export::prompt_file::PromptFile::new(clip, &learner, weights)?;
    file.meta.source = format!("coop-checkpoint:{}", ckpt_path.display());
    Ok(file)
}

/// CoOp's checkpoint names: `model.pth.tar-50`, `model.pth.tar`, `model.pth`.
pub fn is_coop_checkpoint(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.ends_with(".pth") || name.contains(".pth.tar")
}
