//! The text tower over a prefix and its continuations with a hand-written backward to the input
//! embeddings, as one autograd node for candle.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::backward::block_backward;
use super::kernels::{layer_norm_bwd, linear_input_grad, scatter};
use super::weights::HeldTower;
use super::{pool, run_blocks, Dims, Keep, LayerTape};
use crate::clip::kernels::{contiguous_f32, TowerWeights};

/// Everything the backward pass needs, kept from the forward.
struct Tape {
    dims: Dims,
    rest_len: usize,
    layers: Vec<LayerTape>,
    final_in: Vec<f32>,
    final_stats: Vec<(f32, f32)>,
}

/// Runs the tower over `prefix` `[P, D]` and `rest` (C rows of `rest_len` token embeddings, of which
/// each class uses those up to its end-of-text token). Returns the pooled, projected features
/// `[C, proj]` and, when `keep_tape`, what the backward pass needs. The last layer runs its queries,
/// output projection and MLP on the end-of-text rows alone: nothing else reaches the pooled features.
fn forward(
    tower: &TowerWeights,
    prefix: &[f32],
    rest: &[f32],
    rest_len: usize,
    eot: &[usize],
    keep_tape: bool,
) -> Result<(Vec<f32>, Option<Tape>)> {
    let d = tower.final_norm.weight.dim(0)?;
    let p = prefix.len() / d;
    let dm = Dims::text(
        p,
        eot,
        d,
        tower.heads,
        tower.intermediate,
        tower.projection_dim()?,
    );
    let held = HeldTower::new(tower)?;
    let pos = held.pos.data();
    let rows = dm.rows();
    let mut x = vec![0f32; rows * d];
    for (i, row) in x[..p * d].chunks_mut(d).enumerate() {
        row.iter_mut()
            .zip(&prefix[i * d..][..d])
            .zip(&pos[i * d..][..d])
            .for_each(|((x, e), q)| *x = e + q);
    }
    for (c, (&start, &len)) in dm.start.iter().zip(&dm.len).enumerate() {
        for j in 0..len {
            let (dst, src, at) = ((start + j) * d, (c * rest_len + j) * d, (p + j) * d);
            x[dst..][..d]
                .iter_mut()
                .zip(&rest[src..][..d])
                .zip(&pos[at..][..d])
                .for_each(|((x, e), q)| *x = e + q);
        }
    }
    let keep = if keep_tape {
        Keep::ForInputs
    } else {
        Keep::Nothing
    };
    let (final_in, tapes) = run_blocks(&dm, &held.layers, tower.act, x, &dm.eot_rows(), keep);
    let (pooled, final_stats) = pool(&final_in, &held.final_norm, &held.proj, d, dm.proj);
    let tape = keep_tape.then_some(Tape {
        dims: dm,
        rest_len,
        layers: tapes,
        final_in,
        final_stats,
    });
    Ok((pooled, tape))
}

/// Gradients of the prefix `[P, D]` and of `rest` `[C, rest_len, D]` from `dpooled` `[C, proj]`.
fn backward(tower: &TowerWeights, tape: &Tape, dpooled: &[f32]) -> Result<(Vec<f32>, Vec<f32>)> {
    let held = HeldTower::new(tower)?;
    let dm = &tape.dims;
    let (d, rows, act, c) = (dm.d, dm.rows(), tower.act, dm.classes());
    let dnormed = linear_input_grad(dpooled, &held.proj, c, dm.proj, d);
    let mut dx = vec![0f32; c * d];
    layer_norm_bwd(
        &dnormed,
        &tape.final_in,
        &tape.final_stats,
        &held.final_norm,
        d,
        &mut dx,
    );
    let all: Vec<usize> = (0..rows).collect();
    let eot_rows = dm.eot_rows();
    if held.layers.is_empty() {
        dx = scatter(&dx, &eot_rows, rows, d);
    }
    let n_layers = held.layers.len();
    for (li, (l, t)) in held.layers.iter().zip(&tape.layers).enumerate().rev() {
        let queries: &[usize] = if li + 1 == n_layers { &eot_rows } else { &all };
        dx = block_backward(dm, l, act, t, queries, dx, None);
    }
    let mut drest = vec![0f32; c * tape.rest_len * d];
    for (ci, (&start, &len)) in dm.start.iter().zip(&dm.len).enumerate() {
        drest[ci * tape.rest_len * d..][..len * d].copy_from_slice(&dx[start * d..][..len * d]);
    }
    dx.truncate(dm.p * d);
    Ok((dx, drest))
}

/// The tower as one autograd node over (prefix, rest): forward and backward are this module's kernels.
struct PrefixedTower {
    tower: TowerWeights,
    eot: Vec<usize>,
    tape: Mutex<Option<Tape>>,
}

impl CustomOp2 for PrefixedTower {
    fn name(&self) -> &'static str {
        "promptscope-text-tower"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, rest_len, _) = l2.shape().dims3()?;
        let (pooled, tape) = forward(
            &self.tower,
            contiguous_f32(s1, l1, self.name())?,
            contiguous_f32(s2, l2, self.name())?,
            rest_len,
            &self.eot,
            true,
        )?;
        *self.tape.lock().expect("tape lock") = tape;
        let proj = pooled.len() / self.eot.len();
        Ok((CpuStorage::F32(pooled), Shape::from((self.eot.len(), proj))))
    }

    fn bwd(
        &self,
        prefix: &Tensor,
        rest: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let guard = self.tape.lock().expect("tape lock");
        let Some(tape) = guard.as_ref() else {
            candle_core::bail!("cpu kernels: backward without a forward")
        };
        let g: Vec<f32> = grad.flatten_all()?.to_vec1()?;
        let (dprefix, drest) = backward(&self.tower, tape, &g)?;
        Ok((
            Some(Tensor::from_vec(dprefix, prefix.shape(), prefix.device())?),
            Some(Tensor::from_vec(drest, rest.shape(), rest.device())?),
        ))
    }
}

/// Pooled features `[C, proj]` of a `[1, P, D]` prefix and `[C, S, D]` continuations (see
/// `TextTower::forward_prefixed`, whose checks the caller has made), through this module's kernels:
/// differentiable with respect to both inputs.
pub fn forward_prefixed(
    tower: &TowerWeights,
    prefix: &Tensor,
    rest: &Tensor,
    eot: &[usize],
) -> Result<Tensor> {
    let (prefix, rest) = (prefix.contiguous()?, rest.contiguous()?);
    if prefix.track_op() || rest.track_op() {
        return prefix.apply_op2(
            &rest,
            PrefixedTower {
                tower: tower.clone(),
                eot: eot.to_vec(),
                tape: Mutex::new(None),
            },
        );
    }
    let a: Vec<f32> = prefix.flatten_all()?.to_vec1()?;
    let b: Vec<f32> = rest.flatten_all()?.to_vec1()?;
    let (pooled, _) = forward(tower, &a, &b, rest.dim(1)?, eot, false)?;
    Tensor::from_vec(
        pooled,
        (eot.len(), tower.projection_dim()?),
        prefix.device(),
    )
}
