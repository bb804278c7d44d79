//! The transformer pieces both CLIP towers share, mirroring transformers' `modeling_clip.py`
//! (`CLIPAttention`, `CLIPMLP`, `CLIPEncoderLayer`). Weights are looked up by the checkpoint's names.
//!
//! candle's fused layer-norm and softmax kernels have no backward pass; CoOp back-propagates through the
//! frozen text tower, so where a gradient flows each op takes our fused op with a backward
//! (`fused.rs`), or on other devices composes it from primitives.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::config::HiddenAct;
use super::kernels::cpu::PackedLinear;
use super::kernels::{BlockWeights, LinearWeights, NormWeights, TowerWeights};

/// `nn.Linear` applied over the last dimension, computed as one 2-D matmul whatever the batch shape
/// (broadcasting the weight over batches is much slower in candle's CPU gemm).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    /// Filled by the CPU kernels on first use, when the weight is frozen (see [`Linear::kernel_weights`]).
    packed: std::sync::Arc<PackedLinear>,
}

impl Linear {
    pub fn load(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            packed: Default::default(),
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = *dims
            .last()
            .expect("linear input has at least one dimension");
        let rows = x.elem_count() / in_dim.max(1);
        let x = x.reshape((rows, in_dim))?;
        let y = match &self.bias {
            Some(b) => match super::kernels::fused::frozen_linear(&x, &self.weight, b)? {
                Some(y) => y,
                None => x.matmul(&self.weight.t()?)?.broadcast_add(b)?,
            },
            None => x.matmul(&self.weight.t()?)?,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.weight.dim(0)?;
        y.reshape(out_dims)
    }
}

#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn load(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Trained weights (MP-FGVC's stage 1 tunes vision blocks) need the differentiable path even when
        // the input is a constant, such as cached hidden states entering the first trained block.
        let tracked = x.track_op() || self.weight.track_op() || self.bias.track_op();
        if !tracked && x.is_contiguous() && x.dtype() == DType::F32 {
            return candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps as f32);
        }
        if let Some(y) = super::kernels::fused::layer_norm(x, &self.weight, &self.bias, self.eps)? {
            return Ok(y);
        }
        let d = x.dim(D::Minus1)? as f64;
        let centred = x.broadcast_sub(&(x.sum_keepdim(D::Minus1)? / d)?)?;
        let var = (centred.sqr()?.sum_keepdim(D::Minus1)? / d)?;
        centred
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && x.is_contiguous() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    match super::kernels::fused::softmax_last_dim(x)? {
        Some(y) => Ok(y),
        None => candle_nn::ops::softmax(x, D::Minus1),
    }
}

pub fn activation(act: HiddenAct, x: &Tensor) -> Result<Tensor> {
    match act {
        HiddenAct::QuickGelu => super::kernels::fused::quick_gelu(x),
        HiddenAct::Gelu => x.gelu_erf(),
        HiddenAct::GeluTanh => x.gelu(),
    }
}

/// Multi-head self-attention (`CLIPAttention`).
#[derive(Debug, Clone)]
pub struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
    /// q, k, v stacked for the CPU kernels, made once for frozen weights (see [`Attention::qkv`]).
    qkv: std::sync::OnceLock<LinearWeights>,
}

impl Attention {
    pub fn load(dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            q_proj: Linear::load(dim, dim, true, vb.pp("q_proj"))?,
            k_proj: Linear::load(dim, dim, true, vb.pp("k_proj"))?,
            v_proj: Linear::load(dim, dim, true, vb.pp("v_proj"))?,
            out_proj: Linear::load(dim, dim, true, vb.pp("out_proj"))?,
            heads,
            head_dim: dim / heads,
            qkv: Default::default(),
        })
    }

    /// q, k and v stacked into one `[3D, D]` layer. Frozen weights are stacked once and kept (the
    /// kernels read them every pass); weights being trained change every step, so they are stacked
    /// afresh on each call.
    pub fn qkv(&self) -> Result<LinearWeights> {
        let stack = || -> Result<LinearWeights> {
            let ws = [&self.q_proj, &self.k_proj, &self.v_proj];
            let weight = Tensor::cat(&ws.map(|l| &l.weight), 0)?;
            let bias = match ws.map(|l| l.bias.as_ref()) {
                [Some(a), Some(b), Some(c)] => Some(Tensor::cat(&[a, b, c], 0)?),
                _ => None,
            };
            let frozen = !self.q_proj.weight.is_variable();
            Ok(LinearWeights {
                weight,
                bias,
                packed: frozen.then(Default::default),
            })
        };
        if self.q_proj.weight.is_variable() {
            return stack();
        }
        if let Some(w) = self.qkv.get() {
            return Ok(w.clone());
        }
        let w = stack()?;
        Ok(self.qkv.get_or_init(|| w).clone())
    }

    pub fn q_proj(&self) -> &Linear {
        &self.q_proj
    }

    pub fn k_proj(&self) -> &Linear {
        &self.k_proj
    }

    pub fn v_proj(&self) -> &Linear {
        &self.v_proj
    }

    pub fn out_proj(&self) -> &Linear {
        &self.out_proj
    }

    fn split_heads(&self, x: &Tensor, b: usize, t: usize) -> Result<Tensor> {
        x.reshape((b, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Returns the output and, when asked, the attention probabilities `[B, heads, T, T]`.
    /// `mask` is additive, broadcastable to `[B, heads, T, T]`.
    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        self.attend(x, x, mask, want_probs)
    }

    /// The queries of the tokens `queries` `[B, Q, D]` against every key and value of `x` `[B, T, D]`.
    fn attend(
        &self,
        queries: &Tensor,
        x: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, d) = x.dims3()?;
        let nq = queries.dim(1)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let q = self.split_heads(&self.q_proj.forward(queries)?, b, nq)?;
        let k = self.split_heads(&self.k_proj.forward(x)?, b, t)?;
        let v = self.split_heads(&self.v_proj.forward(x)?, b, t)?;
        // Scaling the [B, H, Q, T] scores rather than q: fewer elements, one less [B, T, D] tensor kept for
        // the backward pass.
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let probs = softmax_last_dim(&scores)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, nq, d))?;
        let out = self.out_proj.forward(&ctx)?;
        Ok((out, want_probs.then_some(probs)))
    }

    /// Causal attention of a shared prefix `xp` `[1, P, D]` and `C` continuations `xc` `[C, S, D]` that all
    /// follow it. The prefix attends only to itself (so it is computed once, not C times); each
    /// continuation attends to the prefix's keys and values and, causally, to its own. Equal to running
    /// the C full sequences, because under a causal mask the prefix never sees what follows it.
    /// `masks`: the causal masks of the prefix `[P, P]` and of the continuations `[S, S]` ([`causal_mask`]),
    /// made once for all blocks.
    pub fn forward_prefixed(
        &self,
        xp: &Tensor,
        xc: &Tensor,
        masks: (&Tensor, &Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let (_, p, d) = xp.dims3()?;
        let (c, s, _) = xc.dims3()?;
        let (h, hd) = (self.heads, self.head_dim);
        let scale = (hd as f64).powf(-0.5);
        let qp = self
            .split_heads(&self.q_proj.forward(xp)?, 1, p)?
            .squeeze(0)?;
        let kp = self
            .split_heads(&self.k_proj.forward(xp)?, 1, p)?
            .squeeze(0)?;
        let vp = self
            .split_heads(&self.v_proj.forward(xp)?, 1, p)?
            .squeeze(0)?;
        let sp = (qp.matmul(&kp.t()?)? * scale)?.broadcast_add(masks.0)?;
        let op = softmax_last_dim(&sp)?
            .matmul(&vp)?
            .transpose(0, 1)?
            .reshape((1, p, d))?;
        let out_p = self.out_proj.forward(&op)?;

        let qc = self.split_heads(&self.q_proj.forward(xc)?, c, s)?;
        let kc = self.split_heads(&self.k_proj.forward(xc)?, c, s)?;
        let vc = self.split_heads(&self.v_proj.forward(xc)?, c, s)?;
        // Against the prefix: one [C·S, hd] × [hd, P] product per head instead of C broadcast copies.
        let qh = qc.transpose(0, 1)?.contiguous()?.reshape((h, c * s, hd))?;
        let s_pre = (qh.matmul(&kp.t()?)? * scale)?
            .reshape((h, c, s, p))?
            .transpose(0, 1)?;
        let s_own = (qc.matmul(&kc.t()?)? * scale)?.broadcast_add(masks.1)?;
        let probs = softmax_last_dim(&Tensor::cat(&[&s_pre, &s_own], 3)?)?;
        let pre = probs
            .narrow(3, 0, p)?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((h, c * s, p))?;
        let o_pre = pre.matmul(&vp)?.reshape((h, c, s, hd))?.transpose(0, 1)?;
        let o_own = probs.narrow(3, p, s)?.contiguous()?.matmul(&vc)?;
        let oc = (o_pre + o_own)?.transpose(1, 2)?.reshape((c, s, d))?;
        Ok((out_p, self.out_proj.forward(&oc)?))
    }

    /// The first token's output alone `[B, 1, D]`: its query against every key and value of `x`
    /// `[B, T, D]`. What the pooled image feature reads of the last block.
    pub fn forward_first_query(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self
            .attend(&x.narrow(1, 0, 1)?.contiguous()?, x, None, false)?
            .0)
    }

    /// q, k and v of `x` `[B, T, D]` split into heads `[B, H, T, head_dim]` (biases included): what
    /// the explanation maps that replace a block's attention start from.
    pub fn heads_qkv(&self, x: &Tensor) -> Result<[Tensor; 3]> {
        let (b, t, _) = x.dims3()?;
        Ok([
            self.split_heads(&self.q_proj.forward(x)?, b, t)?,
            self.split_heads(&self.k_proj.forward(x)?, b, t)?,
            self.split_heads(&self.v_proj.forward(x)?, b, t)?,
        ])
    }

    /// Heads `[B, H, T, head_dim]` merged back to `[B, T, D]` and through `out_proj`.
    pub fn merge_heads(&self, o: &Tensor) -> Result<Tensor> {
        let (b, h, t, hd) = o.dims4()?;
        self.out_proj
            .forward(&o.transpose(1, 2)?.reshape((b, t, h * hd))?)
    }

    /// `head_dim^-½`, the scale of the block's attention logits.
    pub fn scale(&self) -> f64 {
        (self.head_dim as f64).powf(-0.5)
    }

    /// The value path alone: `out_proj(v_proj(x))` per token, without query-key mixing (MaskCLIP-style
    /// dense features for alignment maps).
    pub fn value_path(&self, x: &Tensor) -> Result<Tensor> {
        self.out_proj.forward(&self.v_proj.forward(x)?)
    }
}

#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: HiddenAct,
}

impl Mlp {
    pub fn load(dim: usize, inter: usize, act: HiddenAct, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::load(dim, inter, true, vb.pp("fc1"))?,
            fc2: Linear::load(inter, dim, true, vb.pp("fc2"))?,
            act,
        })
    }

    pub fn fc1(&self) -> &Linear {
        &self.fc1
    }

    pub fn fc2(&self) -> &Linear {
        &self.fc2
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&activation(self.act, &self.fc1.forward(x)?)?)
    }
}

/// One pre-LayerNorm transformer block (`CLIPEncoderLayer`), callable on its own so that methods such as
/// SsVP can re-run the last block on a subset of tokens.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub self_attn: Attention,
    pub layer_norm1: LayerNorm,
    pub mlp: Mlp,
    pub layer_norm2: LayerNorm,
}

impl EncoderLayer {
    pub fn load(
        dim: usize,
        inter: usize,
        heads: usize,
        act: HiddenAct,
        eps: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            self_attn: Attention::load(dim, heads, vb.pp("self_attn"))?,
            layer_norm1: LayerNorm::load(dim, eps, vb.pp("layer_norm1"))?,
            mlp: Mlp::load(dim, inter, act, vb.pp("mlp"))?,
            layer_norm2: LayerNorm::load(dim, eps, vb.pp("layer_norm2"))?,
        })
    }

    pub fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        want_probs: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (attn, probs) =
            self.self_attn
                .forward(&self.layer_norm1.forward(x)?, mask, want_probs)?;
        let x = (x + attn)?;
        let x = (&x + self.mlp.forward(&self.layer_norm2.forward(&x)?)?)?;
        Ok((x, probs))
    }
}

impl EncoderLayer {
    /// The block's output at the first token alone `[B, 1, D]` (keys and values from all of `x`): the
    /// last vision block as the pooled feature needs it, with a query, out-projection and MLP for one
    /// token instead of all.
    pub fn forward_first_token(&self, x: &Tensor) -> Result<Tensor> {
        let attn = self
            .self_attn
            .forward_first_query(&self.layer_norm1.forward(x)?)?;
        let x = (x.narrow(1, 0, 1)? + attn)?;
        &x + self.mlp.forward(&self.layer_norm2.forward(&x)?)?
    }

    /// One block over a shared prefix and its continuations (see [`Attention::forward_prefixed`]).
    pub fn forward_prefixed(
        &self,
        xp: &Tensor,
        xc: &Tensor,
        masks: (&Tensor, &Tensor),
    ) -> Result<(Tensor, Tensor)> {
        let (ap, ac) = self.self_attn.forward_prefixed(
            &self.layer_norm1.forward(xp)?,
            &self.layer_norm1.forward(xc)?,
            masks,
        )?;
        let (xp, xc) = ((xp + ap)?, (xc + ac)?);
        let xp = (&xp + self.mlp.forward(&self.layer_norm2.forward(&xp)?)?)?;
        let xc = (&xc + self.mlp.forward(&self.layer_norm2.forward(&xc)?)?)?;
        Ok((xp, xc))
    }
}

pub fn load_layers(
    n: usize,
    dim: usize,
    inter: usize,
    heads: usize,
    act: HiddenAct,
    eps: f64,
    vb: VarBuilder,
) -> Result<Vec<EncoderLayer>> {
    (0..n)
        .map(|i| EncoderLayer::load(dim, inter, heads, act, eps, vb.pp(i)))
        .collect()
}

/// Additive causal mask `[t, t]`: 0 on and below the diagonal, -inf above.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// Rebuilding a block with other tensors in place of its weights (MP-FGVC trains the last vision blocks:
/// their weights become `Var`s). `f` gets each weight's name relative to the block, as the checkpoint
/// names it (`self_attn.q_proj.weight`, `mlp.fc1.bias`, ...), and its current value.
impl EncoderLayer {
    pub fn map_tensors(&self, f: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>) -> Result<Self> {
        let a = &self.self_attn;
        Ok(Self {
            self_attn: Attention {
                q_proj: a.q_proj.map_tensors("self_attn.q_proj", f)?,
                k_proj: a.k_proj.map_tensors("self_attn.k_proj", f)?,
                v_proj: a.v_proj.map_tensors("self_attn.v_proj", f)?,
                out_proj: a.out_proj.map_tensors("self_attn.out_proj", f)?,
                heads: a.heads,
                head_dim: a.head_dim,
                qkv: Default::default(),
            },
            layer_norm1: self.layer_norm1.map_tensors("layer_norm1", f)?,
            mlp: Mlp {
                fc1: self.mlp.fc1.map_tensors("mlp.fc1", f)?,
                fc2: self.mlp.fc2.map_tensors("mlp.fc2", f)?,
                act: self.mlp.act,
            },
            layer_norm2: self.layer_norm2.map_tensors("layer_norm2", f)?,
        })
    }
}

impl Linear {
    /// A linear map from its weight `[out, in]` and optional bias `[out]` (e.g. `Var`-backed tensors).
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            packed: Default::default(),
        }
    }

    fn map_tensors(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        let weight = f(&format!("{prefix}.weight"), &self.weight)?;
        let bias = match &self.bias {
            Some(b) => Some(f(&format!("{prefix}.bias"), b)?),
            None => None,
        };
        Ok(Self {
            weight,
            bias,
            packed: Default::default(),
        })
    }
}

impl LayerNorm {
    pub fn from_parts(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        Self { weight, bias, eps }
    }

    fn map_tensors(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<Self> {
        Ok(Self {
            weight: f(&format!("{prefix}.weight"), &self.weight)?,
            bias: f(&format!("{prefix}.bias"), &self.bias)?,
            eps: self.eps,
        })
    }
}

impl Linear {
    /// The weights as the kernels read them.
    pub fn kernel_weights(&self) -> LinearWeights {
        LinearWeights {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            packed: (!self.weight.is_variable()).then(|| self.packed.clone()),
        }
    }
}

impl LayerNorm {
    pub fn kernel_weights(&self) -> NormWeights {
        NormWeights {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            eps: self.eps,
        }
    }
}

/// A tower's weights as the kernels read them: its blocks, final norm and projection (tensor handles,
/// nothing is copied); `positions` for the text tower, whose kernels add them.
pub fn tower_weights(
    positions: Option<&Tensor>,
    layers: &[EncoderLayer],
    final_norm: &LayerNorm,
    projection: &Linear,
    act: HiddenAct,
    heads: usize,
    intermediate: usize,
) -> Result<TowerWeights> {
    Ok(TowerWeights {
        positions: positions.cloned(),
        blocks: layers
            .iter()
            .map(EncoderLayer::kernel_weights)
            .collect::<Result<_>>()?,
        final_norm: final_norm.kernel_weights(),
        projection: projection.kernel_weights(),
        act,
        heads,
        intermediate,
    })
}

impl EncoderLayer {
    pub fn kernel_weights(&self) -> Result<BlockWeights> {
        let a = &self.self_attn;
        Ok(BlockWeights {
            ln1: self.layer_norm1.kernel_weights(),
            qkv: a.qkv()?,
            o: a.out_proj().kernel_weights(),
            ln2: self.layer_norm2.kernel_weights(),
            fc1: self.mlp.fc1().kernel_weights(),
            fc2: self.mlp.fc2().kernel_weights(),
        })
    }
}
