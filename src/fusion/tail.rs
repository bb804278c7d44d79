//! The trainable end of the vision tower in MP-FGVC's stage 1: its last n blocks, rebuilt with `Var`
//! weights, and what stage 1 keeps of each image so that the frozen part runs once.
//!
//! Blocks `0..L-n` are frozen, so the hidden states entering block `L-n` are fixed per image: they are
//! computed once per run (in memory) and each step runs only the n trained blocks, `post_layernorm` and
//! `visual_projection`. The embeddings, `post_layernorm` and the projection stay frozen: the projection
//! defines the joint space shared with the frozen text tower. With n = 0 nothing of the tower is trained
//! and an image is just its projected feature, read from the on-disk feature cache.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::clip::encode::BATCH;
use crate::clip::layers::EncoderLayer;
use crate::clip::vision::VisionTower;
use crate::error::{Error, Result};
use crate::progress::{check, Progress};

/// Progress stage while the frozen blocks run over the images.
pub const HIDDEN_STAGE: &str = "frozen vision blocks";

pub struct VisionTail<'a> {
    pub vision: &'a VisionTower,
    /// Index of the first trained block (`L - n`).
    pub first: usize,
    pub blocks: Vec<EncoderLayer>,
    /// Every trained weight, named `vision.layers.<i>.<checkpoint name>` with i the block's index in the
    /// tower (so a saved tail says which blocks it replaces).
    pub vars: Vec<(String, Var)>,
}

/// Refuses n larger than the tower.
pub fn check_blocks(vision: &VisionTower, n: usize) -> Result<()> {
    let layers = vision.layers.len();
    if n > layers {
        return Err(Error::invalid(format!(
            "--train-blocks {n} but the vision tower has {layers} blocks: use 0 (frozen) to {layers} (every block)"
        )));
    }
    Ok(())
}

impl<'a> VisionTail<'a> {
    /// The last `n` blocks as trainable copies of the model's weights.
    pub fn new(vision: &'a VisionTower, n: usize) -> Result<Self> {
        Self::build(vision, n, &mut |_, t| Ok(t.clone()))
    }

    /// The last `n` blocks with saved weights (as [`VisionTail::vars`] names them).
    pub fn from_tensors(
        vision: &'a VisionTower,
        n: usize,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let device = vision.device().clone();
        Self::build(vision, n, &mut |name, current| {
            let t = tensors.get(name).ok_or_else(|| {
                Error::invalid(format!("trained vision weight '{name}' is missing"))
            })?;
            if t.dims() != current.dims() {
                return Err(Error::invalid(format!(
                    "trained vision weight '{name}' has shape {:?}, the model's {:?}",
                    t.dims(),
                    current.dims()
                )));
            }
            Ok(t.to_device(&device)?)
        })
    }

    fn build(
        vision: &'a VisionTower,
        n: usize,
        value: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        check_blocks(vision, n)?;
        let first = vision.layers.len() - n;
        let mut vars = Vec::new();
        let mut blocks = Vec::with_capacity(n);
        for (i, layer) in vision.layers.iter().enumerate().skip(first) {
            // map_tensors' closure returns candle errors; ours are kept aside and returned after.
            let mut failure = None;
            let block = layer.map_tensors(&mut |rel, t| {
                let name = format!("vision.layers.{i}.{rel}");
                let init = match value(&name, t) {
                    Ok(v) => v,
                    Err(e) => {
                        let msg = e.to_string();
                        failure = Some(e);
                        return Err(candle_core::Error::Msg(msg));
                    }
                };
                let var = Var::from_tensor(&init.to_dtype(candle_core::DType::F32)?)?;
                let tensor = var.as_tensor().clone();
                vars.push((name, var));
                Ok(tensor)
            });
            match (block, failure) {
                (_, Some(e)) => return Err(e),
                (b, None) => blocks.push(b?),
            }
        }
        Ok(Self {
            vision,
            first,
            blocks,
            vars,
        })
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Projected (not normalised) image features `[B, P]` from stage-1 inputs: hidden states `[B, T, D]`
    /// entering the first trained block, or (n = 0) the features themselves.
    pub fn image_features(&self, inputs: &Tensor) -> Result<Tensor> {
        if self.blocks.is_empty() {
            return Ok(inputs.clone());
        }
        let mut x = inputs.clone();
        for block in &self.blocks {
            x = block.forward(&x, None, false)?.0;
        }
        Ok(self.vision.pool(&x)?)
    }

    /// [`VisionTail::image_features`] over many rows, in batches, without keeping a gradient graph.
    pub fn image_features_batched(
        &self,
        inputs: &Tensor,
        progress: &dyn Progress,
    ) -> Result<Tensor> {
        if self.blocks.is_empty() {
            return Ok(inputs.clone());
        }
        let n = inputs.dim(0)?;
        if n == 0 {
            let p = self.vision.projection.weight().dim(0)?;
            return Ok(Tensor::zeros(
                (0, p),
                candle_core::DType::F32,
                inputs.device(),
            )?);
        }
        let mut out = Vec::new();
        for start in (0..n).step_by(BATCH) {
            check(progress)?;
            let len = BATCH.min(n - start);
            out.push(
                self.image_features(&inputs.narrow(0, start, len)?)?
                    .detach(),
            );
        }
        Ok(Tensor::cat(&out, 0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::vision::VisionRequest;
    use crate::clip::{ClipConfig, HiddenAct};

    #[test]
    fn untrained_tail_reproduces_the_tower_and_n_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        crate::clip::synth::write_model_folder(
            &ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
            &model,
        )
        .unwrap();
        let clip = crate::clip::load::load_dir(&model, "tiny", &candle_core::Device::Cpu).unwrap();
        let v = &clip.model().unwrap().vision;
        let s = v.config.image_size;
        let pixels = Tensor::from_vec(
            (0..2 * 3 * s * s)
                .map(|i| ((i % 97) as f32) / 48.0 - 1.0)
                .collect::<Vec<_>>(),
            (2, 3, s, s),
            &clip.device,
        )
        .unwrap();
        let want = v.forward(&pixels, VisionRequest::default()).unwrap().pooled;
        for n in 0..=3 {
            let tail = VisionTail::new(v, n).unwrap();
            assert_eq!(tail.vars.len(), 16 * n);
            let hidden = v.run_blocks(&v.embed(&pixels).unwrap(), 0, 3 - n).unwrap();
            let input = if n == 0 { want.clone() } else { hidden };
            let got = tail.image_features(&input).unwrap();
            let diff = (got - &want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            // The tail's blocks through candle's autograd ops vs the tower's CPU kernels: worst 6.6e-7 on the AVX-512 kernels, 7.2e-7 on AVX2+FMA (14× margin).
            crate::testing::within(
                &format!("vision tail, {n} trained blocks: candle ops vs kernels"),
                diff as f64,
                1e-5,
            );
        }
        let err = VisionTail::new(v, 4).err().unwrap().to_string();
        assert!(
            err.contains("--train-blocks 4 but the vision tower has 3 blocks"),
            "{err}"
        );
    }
}
