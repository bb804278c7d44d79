//! SGD with momentum and CoOp's learning-rate schedule, exactly as PyTorch and Dassl compute them.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Every optimisation setting of a CoOp run (CoOp's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: usize,
    pub warmup_lr: f64,
    pub epochs: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self { lr: 0.002, momentum: 0.9, weight_decay: 5e-4, warmup_epochs: 1, warmup_lr: 1e-5, epochs: 50 }
    }
}

/// CoOp's epoch count for a shot count: 50 / 100 / 100 / 200 / 200 for 1 / 2 / 4 / 8 / 16 shots.
pub fn default_epochs(shots: Option<usize>) -> usize {
    match shots {
        Some(1) => 50,
        Some(2) | Some(4) => 100,
        _ => 200,
    }
}

impl OptimConfig {
    /// The learning rate of epoch `e` (0-based): constant warm-up, then cosine decay over all epochs.
    pub fn lr_at(&self, e: usize) -> f64 {
        if e < self.warmup_epochs {
            self.warmup_lr
        } else {
            let t = (e - self.warmup_epochs) as f64 / self.epochs.max(1) as f64;
            self.lr * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
        }
    }
}

/// `torch.optim.SGD(momentum=m, weight_decay=wd, dampening=0, nesterov=False)` on one parameter:
/// `d = g + wd·p; buf = d` on the first step, else `buf = m·buf + d`; `p -= lr·buf`.
#[derive(Debug, Clone)]
pub struct Sgd {
    pub momentum: f64,
    pub weight_decay: f64,
    pub buf: Option<Tensor>,
}

impl Sgd {
    pub fn new(momentum: f64, weight_decay: f64) -> Self {
        Self { momentum, weight_decay, buf: None }
    }

    pub fn step(&mut self, p: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let d = if self.weight_decay != 0.0 { (grad + (p.as_tensor() * self.weight_decay)?)? } else { grad.clone() };
        let buf = match &self.buf {
            Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + d)?,
            _ => d,
        };
        p.set(&(p.as_tensor() - (&buf * lr)?)?)?;
        self.buf = Some(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_follows_the_formula_for_w1_e5() {
        let c = OptimConfig { lr: 0.002, warmup_epochs: 1, warmup_lr: 1e-5, epochs: 5, ..Default::default() };
        let got: Vec<f64> = (0..5).map(|e| c.lr_at(e)).collect();
        let pi = std::f64::consts::PI;
        let want = [1e-5, 0.002, 0.001 * (1.0 + (pi / 5.0).cos()), 0.001 * (1.0 + (2.0 * pi / 5.0).cos()), 0.001 * (1.0 + (3.0 * pi / 5.0).cos())];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-15, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn sgd_matches_hand_computed_momentum_steps() {
        let dev = candle_core::Device::Cpu;
        let p = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let mut opt = Sgd::new(0.9, 0.1);
        let g = Tensor::new(&[0.5f32, 0.5], &dev).unwrap();
        opt.step(&p, &g, 0.1).unwrap();
        // d = g + 0.1 p = [0.6, 0.3]; buf = d; p = p - 0.1 d = [0.94, -2.03]
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        assert!((v[0] - 0.94).abs() < 1e-6 && (v[1] + 2.03).abs() < 1e-6, "{v:?}");
        opt.step(&p, &g, 0.1).unwrap();
        // d = [0.5 + 0.094, 0.5 - 0.203]; buf = 0.9 [0.6, 0.3] + d = [1.134, 0.567]
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        assert!((v[0] - (0.94 - 0.1134)).abs() < 1e-6 && (v[1] - (-2.03 - 0.0567)).abs() < 1e-6, "{v:?}");
    }
}
