//! A CoOp training run over cached image features: batches, SGD steps through the frozen text tower,
//! per-epoch evaluation, events for the CLI and the app, cancellation between steps, and checkpoints
//! that let a killed run resume where it stopped. KgCoOp adds a term to the loss; CoCoOp adds a meta-net
//! whose per-image shift makes each image's prompts its own (`super::cocoop`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use super::epoch_loop::{self, EpochLoop, TrainSet, TrainStep, Validation};
use super::optim::{OptimConfig, Sgd};
use crate::clip::l2_normalize;
use crate::clip::text::TextTower;
use crate::error::{write_atomic, Error, Result};
use crate::progress::Progress;
use crate::prompt::cocoop::MetaNet;
use crate::prompt::coop::PromptLearner;
use crate::prompt::CoopVariant;
use crate::rng::Rng;

pub use super::features::FeatureSet as Features;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optim: OptimConfig,
    /// None: one batch of the whole train set.
    pub batch_size: Option<usize>,
    /// Seed of batch order and view choice.
    pub seed: u64,
}

pub use super::epoch_loop::{EpochStats, TrainEvent};

pub struct Trainer<'a> {
    pub text: &'a TextTower,
    pub learner: PromptLearner,
    pub config: TrainConfig,
    pub logit_scale: f32,
    opt: Sgd,
    /// Next epoch, batch-order generator and history: what a checkpoint saves besides the context.
    pub state: EpochLoop,
    /// What the CoOp-family member adds to plain CoOp.
    variant: Variant,
}

/// A `CoopVariant` with what its training needs.
enum Variant {
    Coop,
    /// The hand-crafted prompt's normalised class weights `[C, P]` and λ.
    Kgcoop {
        anchor: Tensor,
        lambda: f64,
    },
    /// The meta-net and one SGD per parameter of it.
    Cocoop(MetaNet, [Sgd; 4]),
}

impl Variant {
    fn name(&self) -> CoopVariant {
        match self {
            Self::Coop => CoopVariant::Coop,
            Self::Kgcoop { lambda, .. } => CoopVariant::Kgcoop { lambda: *lambda },
            Self::Cocoop(..) => CoopVariant::Cocoop,
        }
    }

    fn meta(&self) -> Option<&MetaNet> {
        match self {
            Self::Cocoop(m, _) => Some(m),
            _ => None,
        }
    }
}

/// Accuracy of `feats` (eval view) against normalised class weights.
pub fn accuracy(feats: &Features, weights: &Tensor, scale: f32) -> Result<f64> {
    if feats.num_images() == 0 {
        return Ok(0.0);
    }
    let img = l2_normalize(&feats.first_views()?)?;
    feats.accuracy_of(&(img.matmul(&weights.t()?)? * f64::from(scale))?)
}

impl<'a> Trainer<'a> {
    pub fn new(
        text: &'a TextTower,
        learner: PromptLearner,
        config: TrainConfig,
        logit_scale: f32,
    ) -> Self {
        let opt = Sgd::new(config.optim.momentum, config.optim.weight_decay);
        let state = EpochLoop::new(config.optim.clone(), config.batch_size, config.seed);
        Self {
            text,
            learner,
            config,
            logit_scale,
            opt,
            state,
            variant: Variant::Coop,
        }
    }

    /// Which member of the CoOp family this trainer trains.
    pub fn variant(&self) -> CoopVariant {
        self.variant.name()
    }

    /// CoCoOp: trains `meta` with the context; every image's logits then come from its own prompts.
    pub fn with_meta_net(mut self, meta: MetaNet) -> Self {
        let sgd = || Sgd::new(self.config.optim.momentum, self.config.optim.weight_decay);
        self.variant = Variant::Cocoop(meta, [sgd(), sgd(), sgd(), sgd()]);
        self
    }

    pub fn meta_net(&self) -> Option<&MetaNet> {
        self.variant.meta()
    }

    /// Takes the trained learner and meta-net.
    pub fn into_parts(self) -> (PromptLearner, Option<MetaNet>) {
        match self.variant {
            Variant::Cocoop(m, _) => (self.learner, Some(m)),
            _ => (self.learner, None),
        }
    }

    /// Logits `[N, C]` (no gradient) of image features `[N, P]` (not normalised): against the class
    /// weights, or, with a meta-net, each image against its own prompts.
    pub fn logits(&self, feats: &Tensor) -> Result<Tensor> {
        match self.meta_net() {
            Some(m) => {
                super::cocoop::logits_detached(self.text, &self.learner, m, self.logit_scale, feats)
            }
            None => crate::eval::zeroshot::logits_tensor(
                feats,
                &self.class_weights()?,
                self.logit_scale,
            ),
        }
    }

    /// Accuracy of `set`'s first views: against the class weights, or, with a meta-net, each image
    /// against its own prompts.
    pub fn accuracy(&self, set: &Features) -> Result<f64> {
        match self.meta_net() {
            Some(m) => super::cocoop::accuracy(self.text, &self.learner, m, self.logit_scale, set),
            None => accuracy(set, &self.class_weights()?, self.logit_scale),
        }
    }

    /// KgCoOp: the loss adds λ·(1 − mean_i cos(w_i, w_i^clip)) towards `hand_weights`, the hand-crafted
    /// prompt's normalised class weights `[C, P]`.
    pub fn with_kg_anchor(mut self, hand_weights: Tensor, lambda: f64) -> Result<Self> {
        let want = (self.learner.class_names.len(), hand_weights.dim(1)?);
        if hand_weights.dims2()? != want {
            return Err(Error::invalid(format!(
                "KgCoOp's anchor has shape {:?}, expected {want:?}",
                hand_weights.dims()
            )));
        }
        self.variant = Variant::Kgcoop {
            anchor: hand_weights.detach(),
            lambda,
        };
        Ok(self)
    }

    /// Normalised class weights `[C, P]` from the current context (no gradient).
    pub fn class_weights(&self) -> Result<Tensor> {
        Ok(l2_normalize(
            &self.learner.text_features(self.text)?.detach(),
        )?)
    }

    /// Runs the remaining epochs. `on_event` sees every step and epoch; `checkpoint` is rewritten after each
    /// epoch; `progress.cancelled()` stops the run between steps (the last checkpoint stays valid).
    pub fn run(
        &mut self,
        train: &Features,
        val: Option<&Features>,
        checkpoint: Option<&Path>,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let epochs = self.config.optim.epochs;
        self.run_until(train, val, epochs, checkpoint, progress, on_event)
    }

    /// Runs epochs until `until` (exclusive, at most the configured count): the app pauses this way, at
    /// an epoch boundary.
    pub fn run_until(
        &mut self,
        train: &Features,
        val: Option<&Features>,
        until: usize,
        checkpoint: Option<&Path>,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(TrainEvent),
    ) -> Result<()> {
        let set = TrainSet {
            items: train.num_images(),
            views: train.views_per_image,
        };
        let mut step = CoopStep {
            trainer: self,
            train,
            val,
            checkpoint,
        };
        epoch_loop::run_until(&mut step, set, until, "", progress, &mut |e, _| on_event(e))
    }

    /// Context, momentum buffer, next epoch, generator state and history, atomically.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        let mut tensors: Vec<(String, Tensor)> =
            vec![("ctx".into(), self.learner.ctx.as_tensor().clone())];
        if let Some(b) = &self.opt.buf {
            tensors.push(("momentum_buf".into(), b.clone()));
        }
        if let Variant::Cocoop(m, opts) = &self.variant {
            for ((name, var), opt) in META_NAMES.iter().zip(m.vars()).zip(opts) {
                tensors.push((format!("meta_net.{name}"), var.as_tensor().clone()));
                if let Some(b) = &opt.buf {
                    tensors.push((format!("meta_net.{name}.momentum_buf"), b.clone()));
                }
            }
        }
        let tensors: Vec<(&str, Tensor)> = tensors
            .iter()
            .map(|(k, t)| (k.as_str(), t.clone()))
            .collect();
        let meta = HashMap::from([
            (
                "format".to_string(),
                "promptscope-coop-checkpoint/1".to_string(),
            ),
            ("epoch".to_string(), self.state.epoch.to_string()),
            ("rng_state".to_string(), self.state.rng.state().to_string()),
            (
                "train_config".to_string(),
                serde_json::to_string(&self.config).unwrap_or_default(),
            ),
            (
                "coop_config".to_string(),
                serde_json::to_string(&self.learner.config).unwrap_or_default(),
            ),
            (
                "variant".to_string(),
                serde_json::to_string(&self.variant()).unwrap_or_default(),
            ),
            (
                "history".to_string(),
                serde_json::to_string(&self.state.history).unwrap_or_default(),
            ),
        ]);
        write_atomic(
            path,
            &crate::tensor_file::safetensors_bytes(&tensors, meta)?,
        )
    }

    /// Continues a run from its checkpoint; the settings must be the ones it was started with.
    pub fn resume(&mut self, path: &Path) -> Result<()> {
        let (tensors, meta) = crate::tensor_file::read_safetensors(path)?;
        let bad = |why: String| {
            Error::bad_file(
                path,
                why,
                "start the run again without --resume, or pass the checkpoint of this run",
            )
        };
        let get = |k: &str| {
            meta.get(k)
                .cloned()
                .ok_or_else(|| bad(format!("has no '{k}' entry: not a promptscope checkpoint")))
        };
        let train_config: TrainConfig =
            serde_json::from_str(&get("train_config")?).map_err(|e| bad(e.to_string()))?;
        if train_config != self.config {
            return Err(bad("was made with other training settings".into()));
        }
        let variant = match meta.get("variant") {
            Some(v) => serde_json::from_str(v).map_err(|e| bad(e.to_string()))?,
            // Checkpoints from before the variant had its own entry: KgCoOp's λ sat in the train config,
            // CoCoOp showed only by its meta-net.
            None => CoopVariant::from_flags(
                tensors.contains_key("meta_net.linear1.weight"),
                serde_json::from_str::<serde_json::Value>(&get("train_config")?)
                    .ok()
                    .and_then(|c| c["kg_lambda"].as_f64())
                    .unwrap_or(0.0),
            ),
        };
        if variant != self.variant() {
            return Err(bad(format!(
                "is a {} checkpoint, and this run is {}",
                variant.name(),
                self.variant().name()
            )));
        }
        let coop: crate::prompt::coop::CoopConfig =
            serde_json::from_str(&get("coop_config")?).map_err(|e| bad(e.to_string()))?;
        if coop != self.learner.config {
            return Err(bad("was made with another context configuration".into()));
        }
        let ctx = tensors
            .get("ctx")
            .ok_or_else(|| bad("has no ctx tensor".into()))?;
        self.learner
            .set_ctx(&ctx.to_device(self.learner.ctx.device())?)
            .map_err(|e| bad(e.to_string()))?;
        let device = self.learner.ctx.device().clone();
        self.opt.buf = match tensors.get("momentum_buf") {
            Some(b) => Some(b.to_device(&device)?),
            None => None,
        };
        if let Variant::Cocoop(m, opts) = &mut self.variant {
            for ((name, var), opt) in META_NAMES.iter().zip(m.vars()).zip(opts.iter_mut()) {
                let key = format!("meta_net.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| bad(format!("has no {key} tensor")))?;
                if t.dims() != var.dims() {
                    return Err(bad(format!(
                        "{key} has shape {:?}, the meta-net {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                var.set(&t.to_device(&device)?)?;
                opt.buf = match tensors.get(&format!("{key}.momentum_buf")) {
                    Some(b) => Some(b.to_device(&device)?),
                    None => None,
                };
            }
        }
        self.state.epoch = get("epoch")?.parse().map_err(|_| bad("bad epoch".into()))?;
        self.state.rng = Rng::new(
            get("rng_state")?
                .parse()
                .map_err(|_| bad("bad rng_state".into()))?,
        );
        self.state.history =
            serde_json::from_str(&get("history")?).map_err(|e| bad(e.to_string()))?;
        Ok(())
    }
}

/// A CoOp trainer lent to the epoch loop with one run's features.
struct CoopStep<'t, 'a> {
    trainer: &'t mut Trainer<'a>,
    train: &'t Features,
    val: Option<&'t Features>,
    checkpoint: Option<&'t Path>,
}

impl TrainStep for CoopStep<'_, '_> {
    fn state(&mut self) -> &mut EpochLoop {
        &mut self.trainer.state
    }

    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let (t, train) = (&mut *self.trainer, self.train);
        let (feats, labels) = epoch_loop::batch(train, rows)?;
        if let Variant::Cocoop(meta, opts) = &mut t.variant {
            let logits = super::cocoop::logits(t.text, &t.learner, meta, t.logit_scale, &feats)?;
            let (loss, correct) = epoch_loop::cross_entropy(&logits, &labels)?;
            let grads = loss.backward()?;
            let [w1, b1, w2, b2] = meta.vars();
            for (var, opt) in [w1, b1, w2, b2].into_iter().zip(opts.iter_mut()) {
                let g = grads
                    .get(var.as_tensor())
                    .ok_or_else(|| Error::invalid("no gradient reached CoCoOp's meta-net"))?;
                opt.step(var, g, lr)?;
            }
            let g = grads
                .get(t.learner.ctx.as_tensor())
                .ok_or_else(|| Error::invalid("no gradient reached the context"))?;
            t.opt.step(&t.learner.ctx, g, lr)?;
            return Ok((f64::from(loss.to_scalar::<f32>()?), correct));
        }
        let img = l2_normalize(&feats)?;
        let txt = l2_normalize(&t.learner.text_features(t.text)?)?;
        let (mut loss, correct) = epoch_loop::cross_entropy(
            &(img.matmul(&txt.t()?)? * f64::from(t.logit_scale))?,
            &labels,
        )?;
        if let Variant::Kgcoop { anchor, lambda } = &t.variant {
            let lambda = *lambda;
            // 1 − mean_i cos(w_i, w_i^clip); both are unit vectors, so the cosine is their dot product.
            let cos = (&txt * anchor)?.sum(D::Minus1)?.mean_all()?;
            loss = (loss + cos.affine(-lambda, lambda)?)?;
        }
        let grads = loss.backward()?;
        let g = grads
            .get(t.learner.ctx.as_tensor())
            .ok_or_else(|| Error::invalid("no gradient reached the context"))?;
        t.opt.step(&t.learner.ctx, g, lr)?;
        Ok((f64::from(loss.to_scalar::<f32>()?), correct))
    }

    fn validate(&mut self) -> Result<Validation> {
        Ok(Validation::acc(match self.val {
            Some(v) if v.num_images() > 0 => Some(self.trainer.accuracy(v)?),
            _ => None,
        }))
    }

    fn end_epoch(&mut self) -> Result<()> {
        match self.checkpoint {
            Some(path) => self.trainer.save_checkpoint(path),
            None => Ok(()),
        }
    }
}

/// CoCoOp's names of the meta-net's parameters (`prompt_learner.meta_net.*`), in `MetaNet::vars` order.
pub const META_NAMES: [&str; 4] = [
    "linear1.weight",
    "linear1.bias",
    "linear2.weight",
    "linear2.bias",
];

/// What a run's checkpoint adds to its output's name.
pub const CHECKPOINT_SUFFIX: &str = ".ckpt";

/// Where a run's checkpoint lives next to its output file.
pub fn checkpoint_path(out: &Path) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(CHECKPOINT_SUFFIX);
    out.with_file_name(name)
}
