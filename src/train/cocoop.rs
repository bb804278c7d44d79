//! CoCoOp training on cached image features: the context and the meta-net learn together; each image's
//! logits come from its own prompts (`ctx + π(x)`), so one step runs the text tower once per image
//! (through the shared-prefix path: every class prompt of an image starts with the same tokens). That
//! per-image text pass is CoCoOp's cost against CoOp, whose class prompts serve the whole batch.

use candle_core::Tensor;

use super::coop::TrainConfig;
use super::epoch_loop::{EpochLoop, TrainStep};
use super::features::FeatureSet;
use super::optim::Sgd;
use crate::clip::l2_normalize;
use crate::clip::text::TextTower;
use crate::error::{Error, Result};
use crate::prompt::cocoop::MetaNet;
use crate::prompt::coop::PromptLearner;

/// Logits `[B, C]` of image features `[B, P]` (normalised here), each image against its own prompts.
pub fn logits(
    text: &TextTower,
    learner: &PromptLearner,
    meta: &MetaNet,
    scale: f32,
    feats: &Tensor,
) -> Result<Tensor> {
    let f = l2_normalize(feats)?;
    let shift = meta.forward(&f)?;
    let rows: Vec<Tensor> = (0..f.dim(0)?)
        .map(|i| -> Result<Tensor> {
            let w = l2_normalize(&learner.text_features_shifted(text, &shift.get(i)?)?)?;
            Ok((f.get(i)?.unsqueeze(0)?.matmul(&w.t()?)? * f64::from(scale))?)
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::cat(&rows, 0)?)
}

/// Accuracy on a set (first view of each image), batched to bound memory.
pub fn accuracy(
    text: &TextTower,
    learner: &PromptLearner,
    meta: &MetaNet,
    scale: f32,
    set: &FeatureSet,
) -> Result<f64> {
    let n = set.num_images();
    if n == 0 {
        return Ok(0.0);
    }
    let feats = set.first_views()?;
    // 64 images at a time: each runs the text tower over every class, with its graph.
    let chunks: Vec<Tensor> = (0..n)
        .step_by(64)
        .map(|start| {
            Ok(logits(
                text,
                learner,
                meta,
                scale,
                &feats.narrow(0, start, 64.min(n - start))?,
            )?
            .detach())
        })
        .collect::<Result<_>>()?;
    set.accuracy_of(&Tensor::cat(&chunks, 0)?)
}

pub struct CocoopTrainer<'a> {
    pub text: &'a TextTower,
    pub learner: PromptLearner,
    pub meta: MetaNet,
    pub logit_scale: f32,
    train: &'a FeatureSet,
    val: Option<&'a FeatureSet>,
    /// One SGD per parameter: the context, then the meta-net's four.
    opts: Vec<Sgd>,
    pub state: EpochLoop,
}

impl<'a> CocoopTrainer<'a> {
    pub fn new(
        text: &'a TextTower,
        learner: PromptLearner,
        meta: MetaNet,
        config: &TrainConfig,
        logit_scale: f32,
        train: &'a FeatureSet,
        val: Option<&'a FeatureSet>,
    ) -> Self {
        let opts = (0..5)
            .map(|_| Sgd::new(config.optim.momentum, config.optim.weight_decay))
            .collect();
        let state = EpochLoop::new(config.optim.clone(), config.batch_size, config.seed);
        CocoopTrainer {
            text,
            learner,
            meta,
            logit_scale,
            train,
            val,
            opts,
            state,
        }
    }
}

impl TrainStep for CocoopTrainer<'_> {
    fn state(&mut self) -> &mut EpochLoop {
        &mut self.state
    }

    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let (feats, labels) = super::epoch_loop::batch(self.train, rows)?;
        let (loss, correct) = super::epoch_loop::cross_entropy(
            &logits(
                self.text,
                &self.learner,
                &self.meta,
                self.logit_scale,
                &feats,
            )?,
            &labels,
        )?;
        let grads = loss.backward()?;
        let [w1, b1, w2, b2] = self.meta.vars();
        for (var, opt) in [&self.learner.ctx, w1, b1, w2, b2]
            .into_iter()
            .zip(&mut self.opts)
        {
            let g = grads.get(var.as_tensor()).ok_or_else(|| {
                Error::invalid("no gradient reached CoCoOp's context or meta-net")
            })?;
            opt.step(var, g, lr)?;
        }
        Ok((f64::from(loss.to_scalar::<f32>()?), correct))
    }

    fn validate(&mut self) -> Result<(Option<f64>, Option<f64>)> {
        Ok(match self.val {
            Some(v) if !v.labels.is_empty() => (
                Some(accuracy(
                    self.text,
                    &self.learner,
                    &self.meta,
                    self.logit_scale,
                    v,
                )?),
                None,
            ),
            _ => (None, None),
        })
    }
}
