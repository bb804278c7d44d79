//! CoOp's other baseline: multinomial logistic regression on L2-normalised image features, with the L2
//! strength chosen on the validation split (CoOp searches sklearn's C the same way).
//!
//! The objective is convex and smooth (features have unit norm), so full-batch Nesterov gradient descent
//! with step 1/L converges without line searches.

use candle_core::{DType, Device, Tensor, D};
use serde::Serialize;

use crate::clip::l2_normalize;
use crate::error::{Error, Result};
use crate::progress::{check, Progress};

pub struct LinearProbe {
    /// `[P, C]`.
    pub w: Tensor,
    /// `[C]`.
    pub b: Tensor,
    pub lambda: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProbeSearch {
    pub lambda: f64,
    pub val_acc: f64,
}

pub const LAMBDAS: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

fn one_hot(labels: &[usize], classes: usize, dev: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        v[i * classes + l] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), dev)?)
}

impl LinearProbe {
    /// Minimises mean cross-entropy + λ/2·|W|² on normalised `x` `[N, P]`.
    pub fn fit(
        x: &Tensor,
        labels: &[usize],
        classes: usize,
        lambda: f64,
        iters: usize,
    ) -> Result<Self> {
        let (n, p) = x.dims2()?;
        if n == 0 || n != labels.len() {
            return Err(Error::invalid(
                "the linear probe needs training features with one label each",
            ));
        }
        let dev = x.device();
        let x = l2_normalize(x)?;
        let y = one_hot(labels, classes, dev)?;
        // Smoothness of mean softmax cross-entropy with |x| = 1 (plus the bias column) is at most 1.
        let step = 1.0 / (1.0 + lambda);
        let mut w = Tensor::zeros((p, classes), DType::F32, dev)?;
        let mut b = Tensor::zeros(classes, DType::F32, dev)?;
        let (mut w_prev, mut b_prev) = (w.clone(), b.clone());
        for k in 0..iters {
            let mom = k as f64 / (k as f64 + 3.0);
            let wy = (&w + ((&w - &w_prev)? * mom)?)?;
            let by = (&b + ((&b - &b_prev)? * mom)?)?;
            let probs = candle_nn::ops::softmax_last_dim(&x.matmul(&wy)?.broadcast_add(&by)?)?;
            let g = ((probs - &y)? / n as f64)?;
            let gw = (x.t()?.matmul(&g)? + (&wy * lambda)?)?;
            let gb = g.sum(0)?;
            w_prev = w;
            b_prev = b;
            w = (wy - (gw * step)?)?;
            b = (by - (gb * step)?)?;
        }
        Ok(Self { w, b, lambda })
    }

    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(l2_normalize(x)?.matmul(&self.w)?.broadcast_add(&self.b)?)
    }

    pub fn accuracy(&self, x: &Tensor, labels: &[usize]) -> Result<f64> {
        if labels.is_empty() {
            return Ok(0.0);
        }
        let pred: Vec<u32> = self.logits(x)?.argmax(D::Minus1)?.to_vec1()?;
        Ok(pred
            .iter()
            .zip(labels)
            .filter(|(p, l)| **p as usize == **l)
            .count() as f64
            / labels.len() as f64)
    }

    /// Fits one probe per λ and keeps the best on validation (ties: the stronger penalty).
    pub fn search(
        train: (&Tensor, &[usize]),
        val: (&Tensor, &[usize]),
        classes: usize,
        iters: usize,
        progress: &dyn Progress,
    ) -> Result<(Self, Vec<ProbeSearch>)> {
        let mut best: Option<(Self, f64)> = None;
        let mut trace = Vec::new();
        for (i, &lambda) in LAMBDAS.iter().enumerate().rev() {
            check(progress)?;
            let probe = Self::fit(train.0, train.1, classes, lambda, iters)?;
            let acc = probe.accuracy(val.0, val.1)?;
            trace.push(ProbeSearch {
                lambda,
                val_acc: acc,
            });
            progress.update("linear probe", LAMBDAS.len() - i, LAMBDAS.len());
            if best.as_ref().is_none_or(|(_, a)| acc > *a) {
                best = Some((probe, acc));
            }
        }
        trace.reverse();
        Ok((best.expect("at least one lambda").0, trace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_clusters_are_learned_and_search_picks_a_lambda() {
        let dev = Device::Cpu;
        // Three clusters around orthogonal directions, with deterministic jitter.
        let mut rng = crate::rng::Rng::new(3);
        let mut v = vec![];
        let mut labels = vec![];
        for i in 0..60 {
            let c = i % 3;
            for d in 0..8 {
                let base = if d == c { 1.0 } else { 0.0 };
                v.push(base + (rng.next_u64() % 1000) as f32 / 2500.0);
            }
            labels.push(c);
        }
        let x = Tensor::from_vec(v, (60, 8), &dev).unwrap();
        let probe = LinearProbe::fit(&x, &labels, 3, 1e-4, 300).unwrap();
        assert!(probe.accuracy(&x, &labels).unwrap() > 0.95);
        let (best, trace) = LinearProbe::search(
            (&x, &labels),
            (&x, &labels),
            3,
            100,
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(trace.len(), LAMBDAS.len());
        assert!(trace.iter().any(|t| t.lambda == best.lambda));
        // A huge penalty must not beat a small one on separable data.
        assert!(trace.first().unwrap().val_acc >= trace.last().unwrap().val_acc);
    }
}
