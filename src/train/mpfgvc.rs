//! MP-FGVC's two training stages (METHODS §5), each a trainer on the one epoch loop
//! (`train::epoch_loop`): the same batching, schedule, [`TrainEvent`]s (the app's live curves) and
//! cancellation between steps as CoOp.
//!
//! - Stage 1: the text tower is frozen; the DaTP tokens, the last n vision blocks and a linear head on the
//!   image feature V are trained with `L_v + L_i2t`: `L_v` the cross-entropy of the head, `L_i2t` the
//!   cross-entropy of the cosine similarities between V and the C DaTP text features over τ = 0.07.
//! - Stage 2: everything of stage 1 is frozen; VLFM and its classifier are trained with cross-entropy on
//!   cached embeddings (E_V from stage 1's image path, E_T from the DaTP prompts), both L2-normalised.
//!
//! Both stages use CoOp's schedule (constant warm-up, then cosine) and either CoOp's SGD with momentum
//! (one state per parameter) or AdamW. The CLI defaults to AdamW for both: VLFM is trained from scratch on
//! inputs that share one large direction (CLIP features of different images are far from orthogonal;
//! random-weight ones have cosine ≈ 0.95), and there SGD either stays at chance or diverges while AdamW's
//! per-parameter step sizes fit it (measured in the tests below).

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use crate::clip::l2_normalize;
use crate::clip::text::TextTower;
use crate::error::Result;
use crate::fusion::params::ParamLinear;
use crate::fusion::tail::VisionTail;
use crate::fusion::vlfm::Vlfm;
use crate::progress::Progress;
use crate::prompt::coop::PromptLearner;
use crate::train::checkpoint::{restore, snapshot, ParamOptimizer};
pub use crate::train::checkpoint::{Checkpoint, CheckpointSink};
use crate::train::epoch_loop::{
    self, EpochLoop, Metric, TrainEvent, TrainSet, TrainStep, Validation,
};
use crate::train::optim::{AdamW, OptimConfig, Sgd};

/// The temperature of stage 1's image-to-text loss (the paper's fixed τ).
pub const TEMPERATURE: f64 = 0.07;

/// Which update rule a stage uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// CoOp's SGD with momentum (`OptimConfig::momentum`, `weight_decay`). The library's default, as in
    /// CoOp; the CLI picks AdamW.
    #[default]
    Sgd,
    /// AdamW (β = 0.9, 0.999; decoupled `weight_decay`); `momentum` is not used.
    #[value(name = "adamw")]
    AdamW,
}

/// How one stage is optimised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageConfig {
    pub optim: OptimConfig,
    /// None: one batch of the whole train set.
    pub batch_size: Option<usize>,
    pub optimizer: OptimizerKind,
}

/// Stage 1's image-to-text (DaTP prompt) accuracy on the validation split, a named extra metric of its
/// epochs.
pub const VAL_ACC_I2T: &str = "val_acc_i2t";

/// A CoOp training event tagged with its stage (1 or 2). For stage 1, `EpochStats::train_acc` and
/// `val_acc` are the linear head's accuracy (the prediction `L_v` trains); at an epoch's end `extra`
/// holds [`VAL_ACC_I2T`].
#[derive(Debug, Clone, Serialize)]
pub struct StageEvent {
    pub stage: u8,
    pub event: TrainEvent,
    pub extra: Vec<Metric>,
}

impl StageEvent {
    /// An extra metric by name.
    pub fn extra(&self, name: &str) -> Option<f64> {
        epoch_loop::metric(&self.extra, name)
    }
}

/// One split as a stage sees it: an input row per image (stage-1 inputs, or stage-2 embeddings) and
/// the labels.
pub struct Split {
    pub inputs: Tensor,
    pub labels: Vec<usize>,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn rows(&self, rows: &[usize]) -> Result<(Tensor, Tensor)> {
        let dev = self.inputs.device();
        let idx = Tensor::new(
            rows.iter()
                .map(|&r| r as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            dev,
        )?;
        let labels = Tensor::new(
            rows.iter()
                .map(|&r| self.labels[r] as u32)
                .collect::<Vec<_>>()
                .as_slice(),
            dev,
        )?;
        Ok((self.inputs.index_select(&idx, 0)?, labels))
    }
}

/// The fraction of `pred` equal to `labels`.
pub fn accuracy(pred: &[u32], labels: &[usize]) -> f64 {
    if labels.is_empty() {
        return 0.0;
    }
    pred.iter()
        .zip(labels)
        .filter(|(p, l)| **p as usize == **l)
        .count() as f64
        / labels.len() as f64
}

fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    Ok(logits
        .argmax(D::Minus1)?
        .eq(labels)?
        .to_dtype(DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()? as usize)
}

/// A stage's optimiser over its parameters.
fn stage_optimizer(config: &StageConfig, params: &[(String, Var)]) -> ParamOptimizer {
    let o = &config.optim;
    match config.optimizer {
        OptimizerKind::Sgd => ParamOptimizer::Sgd(
            params
                .iter()
                .map(|_| Sgd::new(o.momentum, o.weight_decay))
                .collect(),
        ),
        OptimizerKind::AdamW => {
            ParamOptimizer::AdamW(params.iter().map(|_| AdamW::new(o.weight_decay)).collect())
        }
    }
}

/// The stage-1 model: DaTP prompts, the trainable vision tail and the linear head on V.
pub struct Stage1Model<'a> {
    pub text: &'a TextTower,
    pub learner: PromptLearner,
    pub tail: VisionTail<'a>,
    pub head: ParamLinear,
}

/// Stage-1 predictions of a set of images.
#[derive(Debug, Clone)]
pub struct Stage1Predictions {
    /// Projected image features V `[N, P]` (not normalised), detached.
    pub features: Tensor,
    /// Argmax of the linear head.
    pub head: Vec<u32>,
    /// Argmax of the image-to-text similarity.
    pub i2t: Vec<u32>,
}

impl<'a> Stage1Model<'a> {
    /// Every trained parameter, named as it is saved: the DaTP tokens, the head, the vision blocks.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut v = vec![("datp.ctx".to_string(), self.learner.ctx.clone())];
        v.extend(self.head.named_vars("head"));
        v.extend(self.tail.vars.iter().cloned());
        v
    }

    /// Normalised DaTP text features `[C, P]`, without gradient: E_T for stage 2 and the i2t classifier.
    pub fn text_embeddings(&self) -> Result<Tensor> {
        Ok(l2_normalize(
            &self.learner.text_features(self.text)?.detach(),
        )?)
    }

    /// `L_v + L_i2t` on a batch, with the head's logits.
    fn loss(&self, inputs: &Tensor, labels: &Tensor) -> Result<(Tensor, Tensor)> {
        let v = self.tail.image_features(inputs)?;
        let head_logits = self.head.forward(&v)?;
        let txt = l2_normalize(&self.learner.text_features(self.text)?)?;
        let i2t = (l2_normalize(&v)?.matmul(&txt.t()?)? / TEMPERATURE)?;
        let l_v = candle_nn::loss::cross_entropy(&head_logits, labels)?;
        let l_i2t = candle_nn::loss::cross_entropy(&i2t, labels)?;
        Ok(((l_v + l_i2t)?, head_logits))
    }

    pub fn predict(&self, inputs: &Tensor, progress: &dyn Progress) -> Result<Stage1Predictions> {
        let features = self.tail.image_features_batched(inputs, progress)?;
        if features.dim(0)? == 0 {
            return Ok(Stage1Predictions {
                features,
                head: vec![],
                i2t: vec![],
            });
        }
        let head = self
            .head
            .forward(&features)?
            .detach()
            .argmax(D::Minus1)?
            .to_vec1()?;
        let i2t = l2_normalize(&features)?
            .matmul(&self.text_embeddings()?.t()?)?
            .argmax(D::Minus1)?
            .to_vec1()?;
        Ok(Stage1Predictions {
            features,
            head,
            i2t,
        })
    }
}

pub struct Stage1<'a> {
    pub model: Stage1Model<'a>,
    pub state: EpochLoop,
    /// Written after every epoch when set.
    pub checkpoint: Option<CheckpointSink>,
    params: Vec<(String, Var)>,
    opt: ParamOptimizer,
    train: &'a Split,
    val: Option<&'a Split>,
}

impl<'a> Stage1<'a> {
    pub fn new(
        model: Stage1Model<'a>,
        config: StageConfig,
        seed: u64,
        train: &'a Split,
        val: Option<&'a Split>,
    ) -> Result<Self> {
        let params = model.named_vars();
        let opt = stage_optimizer(&config, &params);
        Ok(Self {
            model,
            state: EpochLoop::new(config.optim, config.batch_size, seed),
            checkpoint: None,
            params,
            opt,
            train,
            val,
        })
    }

    pub fn run(
        &mut self,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(StageEvent),
    ) -> Result<()> {
        let set = TrainSet {
            items: self.train.len(),
            views: 1,
        };
        run_stage(self, 1, set, progress, on_event)
    }

    /// Parameters, optimiser and loop state, as a checkpoint holds them.
    pub fn snapshot(&self) -> (Vec<(String, Tensor)>, HashMap<String, String>) {
        snapshot("s1", &self.params, &self.opt, &self.state)
    }

    /// Continues from a checkpoint's stage-1 state.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        restore("s1", &self.params, &mut self.opt, &mut self.state, ckpt)
    }
}

/// Runs a stage's remaining epochs on the epoch loop, its events tagged with the stage.
fn run_stage(
    stage: &mut dyn TrainStep,
    number: u8,
    set: TrainSet,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(StageEvent),
) -> Result<()> {
    let epochs = stage.state().optim.epochs;
    epoch_loop::run_until(
        stage,
        set,
        epochs,
        &format!("stage {number}"),
        progress,
        &mut |event, extra| {
            on_event(StageEvent {
                stage: number,
                event,
                extra: extra.to_vec(),
            })
        },
    )
}

impl TrainStep for Stage1<'_> {
    fn state(&mut self) -> &mut EpochLoop {
        &mut self.state
    }

    fn end_epoch(&mut self) -> Result<()> {
        match &self.checkpoint {
            Some(sink) => sink.write(self.snapshot()),
            None => Ok(()),
        }
    }

    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let (inputs, labels) = self.train.rows(rows)?;
        let (loss, head_logits) = self.model.loss(&inputs, &labels)?;
        let right = correct(&head_logits, &labels)?;
        self.opt.update(&loss, &self.params, lr)?;
        Ok((f64::from(loss.to_scalar::<f32>()?), right))
    }

    fn validate(&mut self) -> Result<Validation> {
        match self.val {
            Some(v) if !v.is_empty() => {
                let p = self.model.predict(&v.inputs, &crate::progress::Silent)?;
                Ok(Validation {
                    acc: Some(accuracy(&p.head, &v.labels)),
                    extra: vec![Metric {
                        name: VAL_ACC_I2T,
                        value: accuracy(&p.i2t, &v.labels),
                    }],
                })
            }
            _ => Ok(Validation::default()),
        }
    }
}

/// Stage 2's inputs from stage 1's outputs: L2-normalised, because the two towers' output scales are
/// unrelated and stage 1's contrastive loss aligns directions only; on the unit sphere Q0·K0 and Q0·K_c
/// compare like with like.
pub fn fusion_inputs(features: &Tensor) -> Result<Tensor> {
    Ok(l2_normalize(features)?)
}

/// The stage-2 trainer: VLFM over cached, normalised E_V rows (`train.inputs`) and E_T (`text`).
pub struct Stage2<'a> {
    pub vlfm: Vlfm,
    pub state: EpochLoop,
    /// Written after every epoch when set.
    pub checkpoint: Option<CheckpointSink>,
    text: Tensor,
    params: Vec<(String, Var)>,
    opt: ParamOptimizer,
    train: &'a Split,
    val: Option<&'a Split>,
}

impl<'a> Stage2<'a> {
    pub fn new(
        vlfm: Vlfm,
        text: Tensor,
        config: StageConfig,
        seed: u64,
        train: &'a Split,
        val: Option<&'a Split>,
    ) -> Result<Self> {
        let params = vlfm.named_vars();
        let opt = stage_optimizer(&config, &params);
        Ok(Self {
            vlfm,
            state: EpochLoop::new(config.optim, config.batch_size, seed),
            checkpoint: None,
            text,
            params,
            opt,
            train,
            val,
        })
    }

    pub fn run(
        &mut self,
        progress: &dyn Progress,
        on_event: &mut dyn FnMut(StageEvent),
    ) -> Result<()> {
        let set = TrainSet {
            items: self.train.len(),
            views: 1,
        };
        run_stage(self, 2, set, progress, on_event)
    }

    /// Continues from a checkpoint's stage-2 state.
    pub fn restore(&mut self, ckpt: &Checkpoint) -> Result<()> {
        restore("s2", &self.params, &mut self.opt, &mut self.state, ckpt)
    }
}

/// VLFM's predictions for normalised E_V rows, in batches.
pub fn vlfm_predict(vlfm: &Vlfm, e_v: &Tensor, e_t: &Tensor) -> Result<Vec<u32>> {
    let n = e_v.dim(0)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(256) {
        let len = 256.min(n - start);
        let logits = vlfm
            .forward(&e_v.narrow(0, start, len)?, e_t)?
            .logits
            .detach();
        out.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
    }
    Ok(out)
}

impl TrainStep for Stage2<'_> {
    fn state(&mut self) -> &mut EpochLoop {
        &mut self.state
    }

    fn end_epoch(&mut self) -> Result<()> {
        match &self.checkpoint {
            Some(sink) => sink.write(snapshot("s2", &self.params, &self.opt, &self.state)),
            None => Ok(()),
        }
    }

    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)> {
        let (e_v, labels) = self.train.rows(rows)?;
        let logits = self.vlfm.forward(&e_v, &self.text)?.logits;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let right = correct(&logits, &labels)?;
        self.opt.update(&loss, &self.params, lr)?;
        Ok((f64::from(loss.to_scalar::<f32>()?), right))
    }

    fn validate(&mut self) -> Result<Validation> {
        match self.val {
            Some(v) if !v.is_empty() => Ok(Validation::acc(Some(accuracy(
                &vlfm_predict(&self.vlfm, &v.inputs, &self.text)?,
                &v.labels,
            )))),
            _ => Ok(Validation::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::vlfm::VlfmConfig;
    use crate::rng::Rng;

    /// Normalised rows sharing one large direction (random-weight CLIP features have cosine ≈ 0.95
    /// between any two images) plus a small class direction: why stage 2 defaults to AdamW. Measured on
    /// this problem, 100 epochs: SGD (momentum 0.9) stays at chance (loss ln 4) for lr 0.05 and 0.5 and
    /// diverges at lr 2; AdamW at lr 0.01 fits it.
    fn common_direction_problem(dev: &candle_core::Device) -> (Split, Tensor) {
        let (p, c, n) = (24, 4, 128);
        let mut rng = Rng::new(5);
        let mut u = || (rng.next_u64() >> 40) as f32 / 16_777_216.0 * 2.0 - 1.0;
        let common: Vec<f32> = (0..p).map(|_| 3.0 * u()).collect();
        let mut x = Vec::with_capacity(n * p);
        for i in 0..n {
            for (k, m) in common.iter().enumerate() {
                x.push(m + if k == i % c { 0.3 } else { 0.0 } + 0.1 * u());
            }
        }
        let text: Vec<f32> = (0..c * p).map(|_| u()).collect();
        let inputs = l2_normalize(&Tensor::from_vec(x, (n, p), dev).unwrap()).unwrap();
        let text = l2_normalize(&Tensor::from_vec(text, (c, p), dev).unwrap()).unwrap();
        (
            Split {
                inputs,
                labels: (0..n).map(|i| i % c).collect(),
            },
            text,
        )
    }

    fn train_acc(kind: OptimizerKind, lr: f64) -> Result<f64> {
        let dev = candle_core::Device::Cpu;
        let (train, text) = common_direction_problem(&dev);
        let optim = OptimConfig {
            lr,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            epochs: 100,
        };
        let config = StageConfig {
            optim,
            batch_size: Some(32),
            optimizer: kind,
        };
        let vlfm = Vlfm::new(
            &VlfmConfig {
                dim: 24,
                num_classes: 4,
                expansion: 4,
                seed: 1,
            },
            &dev,
        )?;
        let mut s2 = Stage2::new(vlfm, text.clone(), config, 1, &train, None)?;
        s2.run(&crate::progress::Silent, &mut |_| {})?;
        Ok(accuracy(
            &vlfm_predict(&s2.vlfm, &train.inputs, &text)?,
            &train.labels,
        ))
    }

    #[test]
    fn adamw_fits_vlfm_where_inputs_share_a_large_direction() {
        let adamw = train_acc(OptimizerKind::AdamW, 0.01).unwrap();
        let sgd = train_acc(OptimizerKind::Sgd, 0.05).unwrap();
        eprintln!("train accuracy after 100 epochs: AdamW {adamw:.3}, SGD {sgd:.3}");
        assert!(adamw >= 0.95, "{adamw}");
        assert!(sgd < 0.6, "{sgd}");
    }

    #[test]
    fn accuracy_is_the_fraction_right() {
        assert_eq!(accuracy(&[0, 1, 1], &[0, 1, 2]), 2.0 / 3.0);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }
}
