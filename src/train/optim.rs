//! SGD with momentum and CoOp's learning-rate schedule, exactly as PyTorch and Dassl compute them, and
//! AdamW as candle computes it.

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
        Self {
            lr: 0.002,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            epochs: 50,
        }
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
        Self {
            momentum,
            weight_decay,
            buf: None,
        }
    }

    pub fn step(&mut self, p: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let d = if self.weight_decay != 0.0 {
            (grad + (p.as_tensor() * self.weight_decay)?)?
        } else {
            grad.clone()
        };
        let buf = match &self.buf {
            Some(b) if self.momentum != 0.0 => ((b * self.momentum)? + d)?,
            _ => d,
        };
        p.set(&(p.as_tensor() - (&buf * lr)?)?)?;
        // Detached, or the buffer's op history would keep every earlier step's graph alive.
        self.buf = Some(buf.detach());
        Ok(())
    }
}

/// AdamW (β = 0.9, 0.999, ε = 1e-8, decoupled weight decay) on one parameter, op for op as
/// `candle_nn::AdamW` computes it, with its state in the open so a checkpoint can save and restore it.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub weight_decay: f64,
    /// ε of the denominator (1e-8 as torch's default; Tip-Adapter-F uses 1e-4).
    pub eps: f64,
    /// Steps taken (the bias corrections' t).
    pub t: usize,
    /// First and second moments, after the first step.
    pub moments: Option<(Tensor, Tensor)>,
}

impl AdamW {
    const BETA1: f64 = 0.9;
    const BETA2: f64 = 0.999;
    const EPS: f64 = 1e-8;

    pub fn new(weight_decay: f64) -> Self {
        Self {
            weight_decay,
            eps: Self::EPS,
            t: 0,
            moments: None,
        }
    }

    pub fn with_eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    pub fn step(&mut self, p: &Var, g: &Tensor, lr: f64) -> Result<()> {
        self.t += 1;
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        let scale_m = 1f64 / (1f64 - b1.powi(self.t as i32));
        let scale_v = 1f64 / (1f64 - b2.powi(self.t as i32));
        if self.step_fused(p, g, lr, scale_m, scale_v)? {
            return Ok(());
        }
        let (m, v) = match self.moments.take() {
            Some(mv) => mv,
            None => (p.as_tensor().zeros_like()?, p.as_tensor().zeros_like()?),
        };
        let next_m = ((m * b1)? + (g * (1.0 - b1))?)?;
        let next_v = ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let m_hat = (&next_m * scale_m)?;
        let v_hat = (&next_v * scale_v)?;
        let next_p = (p.as_tensor() * (1f64 - lr * self.weight_decay))?;
        let adjusted = (m_hat / (v_hat.sqrt()? + self.eps)?)?;
        p.set(&(next_p - (adjusted * lr)?)?)?;
        // Detached: kept with their op history, the moments would hold every step's whole backward graph
        // (all activations) alive, and memory would grow with every step.
        self.moments = Some((next_m.detach(), next_v.detach()));
        Ok(())
    }

    /// The same step as one pass over f32 CPU data (false elsewhere, for the op-by-op path): the
    /// same f32 operations in the same order as candle's ops compute them, so the same bits, without
    /// the ten intermediate tensors (a pretraining step's 3.3 M-entry token table made them a tenth
    /// of the step).
    fn step_fused(
        &mut self,
        p: &Var,
        g: &Tensor,
        lr: f64,
        scale_m: f64,
        scale_v: f64,
    ) -> Result<bool> {
        let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == candle_core::DType::F32;
        if !cpu_f32(p.as_tensor()) || !cpu_f32(g) || g.shape() != p.shape() {
            return Ok(false);
        }
        let (b1, b2) = (Self::BETA1, Self::BETA2);
        // candle's `t * s` and `t + s` are affine maps with f32 factors: v·mul + add.
        let (b1f, c1, b2f, c2) = (b1 as f32, (1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
        let (sm, sv, eps) = (scale_m as f32, scale_v as f32, self.eps as f32);
        let (decay, lrf) = ((1f64 - lr * self.weight_decay) as f32, lr as f32);
        let pv: Vec<f32> = p.as_tensor().flatten_all()?.to_vec1()?;
        let gv: Vec<f32> = g.flatten_all()?.to_vec1()?;
        let (mut m, mut v) = match self.moments.take() {
            Some((m, v)) => (m.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?),
            None => (vec![0f32; pv.len()], vec![0f32; pv.len()]),
        };
        let mut next = vec![0f32; pv.len()];
        for i in 0..pv.len() {
            let g = gv[i];
            let nm = (m[i] * b1f + 0.0) + (g * c1 + 0.0);
            let nv = (v[i] * b2f + 0.0) + ((g * g) * c2 + 0.0);
            let m_hat = nm * sm + 0.0;
            let v_hat = nv * sv + 0.0;
            let adjusted = m_hat / (v_hat.sqrt() * 1.0 + eps);
            next[i] = (pv[i] * decay + 0.0) - (adjusted * lrf + 0.0);
            (m[i], v[i]) = (nm, nv);
        }
        let (shape, dev) = (p.shape().clone(), p.device().clone());
        p.set(&Tensor::from_vec(next, shape.clone(), &dev)?)?;
        self.moments = Some((
            Tensor::from_vec(m, shape.clone(), &dev)?,
            Tensor::from_vec(v, shape, &dev)?,
        ));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_steps_equal_candles_bit_for_bit() {
        use candle_nn::Optimizer as _;
        let dev = candle_core::Device::Cpu;
        let init = Tensor::new(&[[0.5f32, -1.25, 2.0], [0.0, 3.5, -0.75]], &dev).unwrap();
        let (ours, theirs) = (
            Var::from_tensor(&init).unwrap(),
            Var::from_tensor(&init).unwrap(),
        );
        let mut opt = AdamW::new(5e-4);
        let params = candle_nn::ParamsAdamW {
            lr: 0.01,
            weight_decay: 5e-4,
            ..Default::default()
        };
        let mut reference = candle_nn::AdamW::new(vec![theirs.clone()], params).unwrap();
        for (k, lr) in [0.01, 0.005, 0.02].into_iter().enumerate() {
            let g =
                ((theirs.as_tensor().sqr().unwrap() * (k as f64 + 1.0)).unwrap() - 0.3).unwrap();
            reference.set_learning_rate(lr);
            let loss = (theirs.as_tensor() * &g.detach())
                .unwrap()
                .sum_all()
                .unwrap();
            reference.step(&loss.backward().unwrap()).unwrap();
            opt.step(&ours, &g, lr).unwrap();
        }
        let bits = |v: &Var| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&ours), bits(&theirs));
        assert_eq!(opt.t, 3);
    }

    #[test]
    fn schedule_follows_the_formula_for_w1_e5() {
        let c = OptimConfig {
            lr: 0.002,
            warmup_epochs: 1,
            warmup_lr: 1e-5,
            epochs: 5,
            ..Default::default()
        };
        let got: Vec<f64> = (0..5).map(|e| c.lr_at(e)).collect();
        let pi = std::f64::consts::PI;
        let want = [
            1e-5,
            0.002,
            0.001 * (1.0 + (pi / 5.0).cos()),
            0.001 * (1.0 + (2.0 * pi / 5.0).cos()),
            0.001 * (1.0 + (3.0 * pi / 5.0).cos()),
        ];
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
        assert!(
            (v[0] - 0.94).abs() < 1e-6 && (v[1] + 2.03).abs() < 1e-6,
            "{v:?}"
        );
        opt.step(&p, &g, 0.1).unwrap();
        // d = [0.5 + 0.094, 0.5 - 0.203]; buf = 0.9 [0.6, 0.3] + d = [1.134, 0.567]
        let v: Vec<f32> = p.as_tensor().to_vec1().unwrap();
        assert!(
            (v[0] - (0.94 - 0.1134)).abs() < 1e-6 && (v[1] - (-2.03 - 0.0567)).abs() < 1e-6,
            "{v:?}"
        );
    }
}
