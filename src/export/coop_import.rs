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
    let pth = candle_core::pickle::PthTensors::new(path, Some("state_dict")).map_err(|e| bad(format!("not a readable torch checkpoint ({e})")))?;
    let get = |k: &str| -> Result<Tensor> {
        pth.get(k).map_err(|e| bad(format!("cannot read '{k}' ({e})")))?.ok_or_else(|| bad(format!("its state_dict has no '{k}'")))
    };
    let ctx = get("ctx")?.to_dtype(candle_core::DType::F32)?;
    let prefix = get("token_prefix")?;
    let (csc, n_ctx, width) = match ctx.dims() {
        [m, d] => (false, *m, *d),
        [_, m, d] => (true, *m, *d),
        other => return Err(bad(format!("ctx has shape {other:?}, expected [M, D] or [C, M, D]"))),
    };
    let num_classes = prefix.dim(0)?;
    if csc && ctx.dim(0)? != num_classes {
        return Err(bad(format!("ctx has {} class contexts but token_prefix has {num_classes} classes", ctx.dim(0)?)));
    }
    Ok(CoopCheckpoint { ctx, num_classes, csc, n_ctx, width })
}
