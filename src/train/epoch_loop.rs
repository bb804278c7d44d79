//! The one epoch loop every trainer runs on (CoOp, both MP-FGVC stages, and the methods after them):
//! CoOp's batching, the learning-rate schedule, per-step and per-epoch events (what the CLI prints and
//! the app plots), validation, cancellation between steps, a hook after every epoch (checkpoints), and
//! the loop's own state (next epoch, batch-order generator, history) that a checkpoint saves for a
//! bit-exact resume. A trainer supplies only what differs: one step, its evaluation, its checkpoint.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::optim::OptimConfig;
use crate::error::{Error, Result};
use crate::progress::{check, Progress};
use crate::rng::Rng;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub epochs: usize,
    pub loss: f64,
    pub lr: f64,
    pub train_acc: f64,
    pub val_acc: Option<f64>,
    pub elapsed_s: f64,
    pub eta_s: f64,
    /// Optimiser steps so far, and the seconds spent in them (validation and checkpoints left out): a
    /// method's step time. Older checkpoints' histories lack them (0).
    #[serde(default)]
    pub steps: usize,
    #[serde(default)]
    pub step_seconds: f64,
}

impl EpochStats {
    /// Mean milliseconds per optimiser step so far.
    pub fn ms_per_step(&self) -> Option<f64> {
        (self.steps > 0).then(|| 1e3 * self.step_seconds / self.steps as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum TrainEvent {
    Step {
        epoch: usize,
        step: usize,
        steps: usize,
        loss: f64,
        lr: f64,
    },
    Epoch(EpochStats),
}

/// Where a trainer's loop stands: everything a checkpoint needs besides the trainer's own parameters.
#[derive(Debug, Clone)]
pub struct EpochLoop {
    pub optim: OptimConfig,
    /// None: one batch of the whole train set.
    pub batch_size: Option<usize>,
    /// Batch order and view choice.
    pub rng: Rng,
    /// The next epoch to run (0-based).
    pub epoch: usize,
    pub history: Vec<EpochStats>,
}

/// What differs between trainers.
pub trait TrainStep {
    fn state(&mut self) -> &mut EpochLoop;
    /// Trains on `rows` (rows of the training features) at learning rate `lr`; returns the batch's loss
    /// and how many of its rows the model got right.
    fn step(&mut self, rows: &[usize], lr: f64) -> Result<(f64, usize)>;
    /// `rows` are the next batch, called before the current one's [`Self::step`]: a trainer whose
    /// batches cost something to make (drawn scenes) starts on them here, beside the step.
    fn upcoming(&mut self, _rows: &[usize]) {}
    /// Validation after an epoch: the accuracy the history records, and the method's own named
    /// metrics beside it (MP-FGVC stage 1's image-to-text accuracy beside its head's).
    fn validate(&mut self) -> Result<Validation>;
    /// After every epoch, once its stats are in the history: where a trainer writes its checkpoint.
    fn end_epoch(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The training set as the loop sees it: `items` images, each with `views` consecutive feature rows
/// (cached augmented views; one is picked per image and epoch).
#[derive(Debug, Clone, Copy)]
pub struct TrainSet {
    pub items: usize,
    pub views: usize,
}

/// The feature rows `rows` of a set and their labels (u32), on the set's device: a step's batch.
pub fn batch(
    set: &super::features::FeatureSet,
    rows: &[usize],
) -> Result<(candle_core::Tensor, candle_core::Tensor)> {
    use candle_core::Tensor;
    let dev = set.feats.device();
    let idx = Tensor::new(
        rows.iter()
            .map(|&r| r as u32)
            .collect::<Vec<_>>()
            .as_slice(),
        dev,
    )?;
    let labels = Tensor::new(
        rows.iter()
            .map(|&r| set.labels[r] as u32)
            .collect::<Vec<_>>()
            .as_slice(),
        dev,
    )?;
    Ok((set.feats.index_select(&idx, 0)?, labels))
}

/// Cross-entropy of `logits` against `labels` (differentiable) and how many rows the logits get right.
pub fn cross_entropy(
    logits: &candle_core::Tensor,
    labels: &candle_core::Tensor,
) -> Result<(candle_core::Tensor, usize)> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?;
    let right = logits
        .argmax(candle_core::D::Minus1)?
        .eq(labels)?
        .to_dtype(candle_core::DType::U32)?
        .sum_all()?
        .to_scalar::<u32>()?;
    Ok((loss, right as usize))
}

/// A named number a method reports: `val_acc_i2t`, `test_acc`, `final_loss`, ...
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metric {
    pub name: &'static str,
    pub value: f64,
}

/// What a validation measured: the accuracy the loop records (None: no validation split), and the
/// method's extra metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Validation {
    pub acc: Option<f64>,
    pub extra: Vec<Metric>,
}

impl Validation {
    /// Just the accuracy.
    pub fn acc(acc: Option<f64>) -> Self {
        Self {
            acc,
            extra: Vec::new(),
        }
    }
}

/// A metric by name among `metrics`.
pub fn metric(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics.iter().find(|m| m.name == name).map(|m| m.value)
}

/// One event as a trainer reports it: the event, and at an epoch's end its validation's extra metrics.
pub type OnEvent<'f> = dyn FnMut(TrainEvent, &[Metric]) + 'f;

impl EpochLoop {
    pub fn new(optim: OptimConfig, batch_size: Option<usize>, seed: u64) -> Self {
        Self {
            optim,
            batch_size,
            rng: Rng::new(seed),
            epoch: 0,
            history: vec![],
        }
    }

    /// The batches of one epoch as CoOp's loader makes them: shuffled, the last partial batch dropped,
    /// when the set is larger than a batch; one batch in order otherwise. With several views per image,
    /// a view is drawn for every image (dropped ones too) after the shuffle.
    pub fn epoch_batches(&mut self, set: TrainSet) -> Vec<Vec<usize>> {
        let n = set.items;
        let mut order: Vec<usize> = (0..n).collect();
        let batch = self.batch_size.unwrap_or(n).max(1);
        if batch < n {
            self.rng.shuffle(&mut order);
        }
        let v = set.views.max(1);
        let rows: Vec<usize> = if v > 1 {
            order
                .iter()
                .map(|&i| i * v + (self.rng.next_u64() % v as u64) as usize)
                .collect()
        } else {
            order
        };
        if batch >= n {
            return vec![rows];
        }
        rows.chunks(batch)
            .filter(|c| c.len() == batch)
            .map(<[usize]>::to_vec)
            .collect()
    }
}

/// Runs `trainer`'s epochs until `until` (exclusive, at most the configured count): the app pauses this
/// way, at an epoch boundary. `name` prefixes progress and errors ("stage 1"; empty for a one-stage run).
/// A loss that stops being finite ends the run with an error instead of training on NaNs.
pub fn run_until<T: TrainStep + ?Sized>(
    trainer: &mut T,
    set: TrainSet,
    until: usize,
    name: &str,
    progress: &dyn Progress,
    on_event: &mut OnEvent,
) -> Result<()> {
    if set.items == 0 {
        return Err(Error::invalid("the training set is empty"));
    }
    let label = if name.is_empty() {
        "epochs".to_string()
    } else {
        format!("{name} epochs")
    };
    let start = Instant::now();
    // Time inside `on_event` is the caller's (the app holds a paused run there), not training: it is left
    // out of the elapsed time, the ETA and so the rates shown from them.
    let outside = std::cell::Cell::new(std::time::Duration::ZERO);
    let mut emit = |event: TrainEvent, extra: &[Metric]| {
        let t = Instant::now();
        on_event(event, extra);
        outside.set(outside.get() + t.elapsed());
    };
    let (first, epochs, elapsed_before) = {
        let s = trainer.state();
        (
            s.epoch,
            s.optim.epochs,
            s.history.last().map_or(0.0, |h| h.elapsed_s),
        )
    };
    let last = trainer.state().history.last();
    let (mut steps_done, mut step_seconds) = last.map_or((0, 0.0), |h| (h.steps, h.step_seconds));
    while trainer.state().epoch < until.min(epochs) {
        let e = trainer.state().epoch;
        let lr = trainer.state().optim.lr_at(e);
        let batches = trainer.state().epoch_batches(set);
        let steps = batches.len();
        let (mut loss_sum, mut right, mut seen) = (0.0, 0, 0);
        if let Some(first) = batches.first() {
            trainer.upcoming(first);
        }
        for (s, rows) in batches.iter().enumerate() {
            check(progress)?;
            if let Some(next) = batches.get(s + 1) {
                trainer.upcoming(next);
            }
            let t = Instant::now();
            let (loss, c) = trainer.step(rows, lr)?;
            step_seconds += t.elapsed().as_secs_f64();
            steps_done += 1;
            if !loss.is_finite() {
                let who = if name.is_empty() {
                    String::new()
                } else {
                    format!("{name}: ")
                };
                return Err(Error::invalid(format!(
                    "{who}the loss became {loss} at epoch {}; lower the learning rate",
                    e + 1
                )));
            }
            loss_sum += loss;
            right += c;
            seen += rows.len();
            emit(
                TrainEvent::Step {
                    epoch: e,
                    step: s,
                    steps,
                    loss,
                    lr,
                },
                &[],
            );
        }
        let Validation {
            acc: val_acc,
            extra: val_extra,
        } = trainer.validate()?;
        let state = trainer.state();
        state.epoch += 1;
        let trained = start.elapsed().saturating_sub(outside.get()).as_secs_f64();
        let per_epoch = trained / (state.epoch - first) as f64;
        let stats = EpochStats {
            epoch: e,
            epochs,
            loss: loss_sum / steps.max(1) as f64,
            lr,
            train_acc: right as f64 / seen.max(1) as f64,
            val_acc,
            elapsed_s: elapsed_before + trained,
            eta_s: per_epoch * (epochs - state.epoch) as f64,
            steps: steps_done,
            step_seconds,
        };
        state.history.push(stats.clone());
        progress.update(&label, state.epoch, epochs);
        emit(TrainEvent::Epoch(stats), &val_extra);
        trainer.end_epoch()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looped(batch: Option<usize>) -> EpochLoop {
        let optim = OptimConfig {
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            warmup_epochs: 0,
            warmup_lr: 0.0,
            epochs: 3,
        };
        EpochLoop::new(optim, batch, 3)
    }

    #[test]
    fn batches_follow_coops_loader() {
        let one = |items| TrainSet { items, views: 1 };
        assert_eq!(
            looped(None).epoch_batches(one(5)),
            vec![vec![0, 1, 2, 3, 4]]
        );
        assert_eq!(
            looped(Some(8)).epoch_batches(one(5)),
            vec![vec![0, 1, 2, 3, 4]]
        );
        let b = looped(Some(3)).epoch_batches(one(7));
        assert_eq!(b.len(), 2, "the last partial batch is dropped");
        assert!(b.iter().all(|c| c.len() == 3));
        let mut all: Vec<usize> = b.concat();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6, "no image twice in an epoch");
        // Views: row = image × views + the view drawn for it.
        let rows = looped(None).epoch_batches(TrainSet { items: 4, views: 3 });
        assert!(
            rows[0].iter().enumerate().all(|(i, r)| r / 3 == i),
            "{rows:?}"
        );
    }

    /// A trainer whose loss is its step count: checks the order of events, the schedule, the stats and
    /// that `until` pauses at an epoch boundary and the next call continues.
    struct Counting {
        state: EpochLoop,
        steps: usize,
        ends: usize,
        nan_at: Option<usize>,
    }

    impl TrainStep for Counting {
        fn state(&mut self) -> &mut EpochLoop {
            &mut self.state
        }
        fn step(&mut self, rows: &[usize], _lr: f64) -> Result<(f64, usize)> {
            self.steps += 1;
            if self.nan_at == Some(self.steps) {
                return Ok((f64::NAN, 0));
            }
            Ok((self.steps as f64, rows.len() / 2))
        }
        fn validate(&mut self) -> Result<Validation> {
            Ok(Validation {
                acc: Some(0.5),
                extra: vec![Metric {
                    name: "second",
                    value: 0.25,
                }],
            })
        }
        fn end_epoch(&mut self) -> Result<()> {
            self.ends += 1;
            Ok(())
        }
    }

    #[test]
    fn epochs_report_steps_stats_and_pause_at_a_boundary() {
        let mut t = Counting {
            state: looped(Some(2)),
            steps: 0,
            ends: 0,
            nan_at: None,
        };
        let set = TrainSet { items: 4, views: 1 };
        let mut events = vec![];
        run_until(&mut t, set, 1, "", &crate::progress::Silent, &mut |e, x| {
            events.push((e, x.to_vec()))
        })
        .unwrap();
        assert_eq!(
            (t.state.epoch, t.ends, events.len()),
            (1, 1, 3),
            "two steps and an epoch, then a pause"
        );
        run_until(
            &mut t,
            set,
            99,
            "",
            &crate::progress::Silent,
            &mut |e, x| events.push((e, x.to_vec())),
        )
        .unwrap();
        assert_eq!((t.state.epoch, t.ends, t.steps), (3, 3, 6));
        let stats: Vec<&EpochStats> = events
            .iter()
            .filter_map(|(e, _)| {
                if let TrainEvent::Epoch(s) = e {
                    Some(s)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(
            stats.iter().map(|s| s.epoch).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert_eq!(stats[1].loss, 3.5, "mean of steps 3 and 4");
        assert_eq!(
            (stats[2].train_acc, stats[2].val_acc, stats[2].eta_s),
            (0.5, Some(0.5), 0.0)
        );
        // The extra metrics come with epochs, not steps.
        assert!(events
            .iter()
            .all(|(e, x)| matches!(e, TrainEvent::Step { .. }) == x.is_empty()));
        assert!(events
            .iter()
            .any(|(_, x)| metric(x, "second") == Some(0.25)));
        assert_eq!(t.state.history.len(), 3);
    }

    #[test]
    fn time_held_in_the_callers_hands_is_not_training_time() {
        // A caller that holds every step for 40 ms (the app's pause): 6 steps = 240 ms outside training;
        // the steps themselves take microseconds.
        let mut t = Counting {
            state: looped(Some(2)),
            steps: 0,
            ends: 0,
            nan_at: None,
        };
        let mut last = None;
        run_until(
            &mut t,
            TrainSet { items: 4, views: 1 },
            3,
            "",
            &crate::progress::Silent,
            &mut |e, _| match e {
                TrainEvent::Step { .. } => std::thread::sleep(std::time::Duration::from_millis(40)),
                TrainEvent::Epoch(s) => last = Some(s),
            },
        )
        .unwrap();
        let s = last.unwrap();
        assert!(
            s.elapsed_s < 0.1,
            "paused time counted as training: {} s",
            s.elapsed_s
        );
    }

    #[test]
    fn a_loss_that_stops_being_finite_is_an_error_naming_the_epoch() {
        let mut t = Counting {
            state: looped(Some(2)),
            steps: 0,
            ends: 0,
            nan_at: Some(3),
        };
        let err = run_until(
            &mut t,
            TrainSet { items: 4, views: 1 },
            3,
            "stage 2",
            &crate::progress::Silent,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("stage 2: the loss became NaN at epoch 2"),
            "{err}"
        );
        let empty = run_until(
            &mut t,
            TrainSet { items: 0, views: 1 },
            3,
            "",
            &crate::progress::Silent,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            empty.to_string().contains("the training set is empty"),
            "{empty}"
        );
    }
}
