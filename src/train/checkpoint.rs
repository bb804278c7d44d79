//! Checkpoints of trainers on the epoch loop: every parameter, the optimiser's per-parameter state and
//! the loop's state (epoch, batch-order generator, history) under a prefix, in one safetensors file
//! written atomically after every epoch, so a killed or stopped run resumes to the same result, bit for
//! bit. Used by MP-FGVC's two stages and by pretraining (CoOp keeps its own, older format).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};

use super::epoch_loop::EpochLoop;
use super::optim::{AdamW, Sgd};
use crate::error::{write_atomic, Error, Result};
use crate::rng::Rng;

/// An optimiser's state over a list of parameters (fixed order): one per-parameter state each.
pub enum ParamOptimizer {
    /// One CoOp SGD state per parameter.
    Sgd(Vec<Sgd>),
    AdamW(Vec<AdamW>),
}

impl ParamOptimizer {
    /// Each parameter's state as named tensors (SGD's momentum buffer; AdamW's moments and step count).
    pub fn save(
        &self,
        prefix: &str,
        params: &[(String, Var)],
        tensors: &mut Vec<(String, Tensor)>,
        meta: &mut HashMap<String, String>,
    ) {
        match self {
            Self::Sgd(opts) => {
                for ((name, _), o) in params.iter().zip(opts) {
                    if let Some(b) = &o.buf {
                        tensors.push((format!("{prefix}.opt.{name}.buf"), b.clone()));
                    }
                }
            }
            Self::AdamW(opts) => {
                for ((name, _), o) in params.iter().zip(opts) {
                    if let Some((m, v)) = &o.moments {
                        tensors.push((format!("{prefix}.opt.{name}.m"), m.clone()));
                        tensors.push((format!("{prefix}.opt.{name}.v"), v.clone()));
                    }
                    meta.insert(format!("{prefix}.opt.{name}.t"), o.t.to_string());
                }
            }
        }
    }

    pub fn restore(
        &mut self,
        prefix: &str,
        params: &[(String, Var)],
        ckpt: &Checkpoint,
    ) -> Result<()> {
        match self {
            Self::Sgd(opts) => {
                for ((name, var), o) in params.iter().zip(opts.iter_mut()) {
                    o.buf = ckpt.optional(&format!("{prefix}.opt.{name}.buf"), var)?;
                }
            }
            Self::AdamW(opts) => {
                for ((name, var), o) in params.iter().zip(opts.iter_mut()) {
                    let m = ckpt.optional(&format!("{prefix}.opt.{name}.m"), var)?;
                    let v = ckpt.optional(&format!("{prefix}.opt.{name}.v"), var)?;
                    o.moments = m.zip(v);
                    o.t = ckpt.number(&format!("{prefix}.opt.{name}.t"))?;
                }
            }
        }
        Ok(())
    }

    /// One step on every parameter from the gradients of `loss`.
    pub fn update(&mut self, loss: &Tensor, params: &[(String, Var)], lr: f64) -> Result<()> {
        self.apply(&gradients_of(loss, params)?, params, lr)
    }

    /// One step on every parameter from its gradient `grads[i]`.
    pub fn apply(&mut self, grads: &[Tensor], params: &[(String, Var)], lr: f64) -> Result<()> {
        match self {
            Self::Sgd(opts) => {
                for (((_, var), opt), g) in params.iter().zip(opts.iter_mut()).zip(grads) {
                    opt.step(var, g, lr)?;
                }
            }
            Self::AdamW(opts) => {
                for (((_, var), opt), g) in params.iter().zip(opts.iter_mut()).zip(grads) {
                    opt.step(var, g, lr)?;
                }
            }
        }
        Ok(())
    }
}

/// Each parameter's gradient of `loss` (backpropagated through candle's graph), in `params` order.
pub fn gradients_of(loss: &Tensor, params: &[(String, Var)]) -> Result<Vec<Tensor>> {
    let grads = loss.backward()?;
    params
        .iter()
        .map(|(name, var)| {
            grads
                .get(var.as_tensor())
                .cloned()
                // A parameter without a gradient is a wiring bug (a detached path), not something to skip.
                .ok_or_else(|| Error::invalid(format!("no gradient reached {name}")))
        })
        .collect()
}

/// A checkpoint as read back, for resuming.
pub struct Checkpoint {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub meta: HashMap<String, String>,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Self> {
        let (tensors, meta) = crate::tensor_file::read_safetensors(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            meta,
        })
    }

    /// The checkpoint at `path` if there is one, refused unless it has `format` (named `kind` in the
    /// error, "an MP-FGVC") and was made by the run described by `run`.
    pub fn read_matching(path: &Path, format: &str, kind: &str, run: &str) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let ckpt = Self::read(path)?;
        if ckpt.get("format")? != format {
            return Err(ckpt.bad(format!("is not {kind} checkpoint")));
        }
        if ckpt.get("run")? != run {
            return Err(ckpt.bad("was made with other settings"));
        }
        Ok(Some(ckpt))
    }

    pub fn bad(&self, why: impl Into<String>) -> Error {
        Error::bad_file(
            &self.path,
            why.into(),
            "start the run again without resuming, or pass the checkpoint of this run",
        )
    }

    pub fn get(&self, key: &str) -> Result<&str> {
        self.meta.get(key).map(String::as_str).ok_or_else(|| {
            self.bad(format!(
                "has no '{key}' entry: not a checkpoint of this kind of run"
            ))
        })
    }

    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        self.get(key)?
            .parse()
            .map_err(|_| self.bad(format!("has a bad '{key}'")))
    }

    /// The tensor `key`, shaped like `like` and on its device; None when absent.
    fn optional(&self, key: &str, like: &Var) -> Result<Option<Tensor>> {
        let Some(t) = self.tensors.get(key) else {
            return Ok(None);
        };
        if t.dims() != like.dims() {
            return Err(self.bad(format!(
                "holds {key} of shape {:?}, the run has {:?}",
                t.dims(),
                like.dims()
            )));
        }
        Ok(Some(t.to_device(like.device())?.to_dtype(like.dtype())?))
    }

    fn required(&self, key: &str, like: &Var) -> Result<Tensor> {
        self.optional(key, like)?
            .ok_or_else(|| self.bad(format!("has no {key}")))
    }
}

/// Where a trainer writes its checkpoint after every epoch, and what goes in beside its own state (the
/// run's description; in MP-FGVC's stage 2, stage 1's finished state).
pub struct CheckpointSink {
    pub path: PathBuf,
    pub tensors: Vec<(String, Tensor)>,
    pub meta: HashMap<String, String>,
}

impl CheckpointSink {
    pub fn write(&self, extra: (Vec<(String, Tensor)>, HashMap<String, String>)) -> Result<()> {
        let (mut tensors, mut meta) = (self.tensors.clone(), self.meta.clone());
        tensors.extend(extra.0);
        meta.extend(extra.1);
        let named: Vec<(&str, Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        write_atomic(
            &self.path,
            &crate::tensor_file::safetensors_bytes(&named, meta)?,
        )
    }
}

/// A trainer's parameters, optimiser and loop state under `prefix` ("s1", "s2", "p").
pub fn snapshot(
    prefix: &str,
    params: &[(String, Var)],
    opt: &ParamOptimizer,
    state: &EpochLoop,
) -> (Vec<(String, Tensor)>, HashMap<String, String>) {
    let mut tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, v)| (format!("{prefix}.param.{n}"), v.as_tensor().clone()))
        .collect();
    let mut meta = HashMap::from([
        (format!("{prefix}.epoch"), state.epoch.to_string()),
        (format!("{prefix}.rng_state"), state.rng.state().to_string()),
        (
            format!("{prefix}.history"),
            serde_json::to_string(&state.history).unwrap_or_default(),
        ),
    ]);
    opt.save(prefix, params, &mut tensors, &mut meta);
    (tensors, meta)
}

pub fn restore(
    prefix: &str,
    params: &[(String, Var)],
    opt: &mut ParamOptimizer,
    state: &mut EpochLoop,
    ckpt: &Checkpoint,
) -> Result<()> {
    for (name, var) in params {
        var.set(&ckpt.required(&format!("{prefix}.param.{name}"), var)?)?;
    }
    opt.restore(prefix, params, ckpt)?;
    state.epoch = ckpt.number(&format!("{prefix}.epoch"))?;
    state.rng = Rng::new(ckpt.number(&format!("{prefix}.rng_state"))?);
    state.history = serde_json::from_str(ckpt.get(&format!("{prefix}.history"))?)
        .map_err(|e| ckpt.bad(e.to_string()))?;
    Ok(())
}
