//! CLIP's text tower (`CLIPTextTransformer`), callable from token ids or from token embeddings (CoOp
//! swaps some embeddings for learned vectors).
//!
//! It runs only up to the longest end-of-text position of the batch: the causal mask makes every
//! position independent of the ones after it, so the pooled feature is exactly what the full 77-token
//! run gives.

use candle_core::{Device, IndexOp, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::TextConfig;
use super::kernels::{cpu, TowerWeights};
use super::layers::{causal_mask, load_layers, tower_weights, EncoderLayer, LayerNorm, Linear};

#[derive(Debug, Clone)]
pub struct TextTower {
    pub token_embedding: Tensor,
    pub position_embedding: Tensor,
    pub layers: Vec<EncoderLayer>,
    pub final_layer_norm: LayerNorm,
    pub projection: Linear,
    pub config: TextConfig,
}

/// What the text tower gives back.
#[derive(Debug, Clone)]
pub struct TextOutput {
    /// `[B, projection_dim]`: `text_projection(final_layer_norm(h)[eot])`, not normalised.
    pub pooled: Tensor,
    /// `[B, L, projection_dim]` for every position up to the batch's longest end-of-text position
    /// (FILIP's text tokens), when asked for. Positions after a row's own end-of-text are padding.
    pub tokens: Option<Tensor>,
}

impl TextTower {
    /// Whether the CPU kernels run this tower: f32 on the CPU with an activation they implement.
    pub fn kernels_run(&self) -> bool {
        cpu::runs_here(&self.token_embedding, self.config.hidden_act)
    }

    /// The weights as the kernels read them (tensor handles: nothing is copied).
    pub fn kernel_weights(&self) -> Result<TowerWeights> {
        let c = &self.config;
        tower_weights(
            Some(&self.position_embedding),
            &self.layers,
            &self.final_layer_norm,
            &self.projection,
            c.hidden_act,
            c.num_attention_heads,
            c.intermediate_size,
        )
    }
}

impl TextTower {
    /// `vb` is the checkpoint root (so that `text_projection` is found beside `text_model`).
    pub fn load(cfg: &TextConfig, projection_dim: usize, vb: VarBuilder) -> Result<Self> {
        let t = vb.pp("text_model");
        let emb = t.pp("embeddings");
        Ok(Self {
            token_embedding: emb
                .pp("token_embedding")
                .get((cfg.vocab_size, cfg.hidden_size), "weight")?,
            position_embedding: emb
                .pp("position_embedding")
                .get((cfg.max_position_embeddings, cfg.hidden_size), "weight")?,
            layers: load_layers(
                cfg.num_hidden_layers,
                cfg.hidden_size,
                cfg.intermediate_size,
                cfg.num_attention_heads,
                cfg.hidden_act,
                cfg.layer_norm_eps,
                t.pp("encoder").pp("layers"),
            )?,
            final_layer_norm: LayerNorm::load(
                cfg.hidden_size,
                cfg.layer_norm_eps,
                t.pp("final_layer_norm"),
            )?,
            projection: Linear::load(
                cfg.hidden_size,
                projection_dim,
                false,
                vb.pp("text_projection"),
            )?,
            config: cfg.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        self.token_embedding.device()
    }

    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Token embeddings `[len, D]` of one id sequence (no position embedding).
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.device())?;
        self.token_embedding.index_select(&ids, 0)
    }

    /// Rows padded with the end-of-text id (as CLIP pads), embedded: `[B, L, D]` where L is the longest row.
    pub fn embed_batch(&self, batch: &[Vec<u32>]) -> Result<(Tensor, Vec<usize>)> {
        let eot = self.eot_positions(batch)?;
        let len = batch.iter().map(Vec::len).max().unwrap_or(0);
        let mut flat = Vec::with_capacity(batch.len() * len);
        for row in batch {
            flat.extend_from_slice(row);
            flat.extend(std::iter::repeat_n(
                self.config.eos_token_id,
                len - row.len(),
            ));
        }
        let ids = Tensor::from_vec(flat, (batch.len(), len), self.device())?;
        let emb = self.token_embedding.index_select(&ids.flatten_all()?, 0)?;
        Ok((
            emb.reshape((batch.len(), len, self.config.hidden_size))?,
            eot,
        ))
    }

    /// The first end-of-text position of each row.
    pub fn eot_positions(&self, batch: &[Vec<u32>]) -> Result<Vec<usize>> {
        batch
            .iter()
            .enumerate()
            .map(|(i, row)| {
                row.iter()
                    .position(|&id| id == self.config.eos_token_id)
                    .ok_or_else(|| {
                        candle_core::Error::Msg(format!(
                            "text {i} has no end-of-text token ({})",
                            self.config.eos_token_id
                        ))
                    })
            })
            .collect()
    }

    pub fn forward_ids(&self, batch: &[Vec<u32>], want_tokens: bool) -> Result<TextOutput> {
        let (emb, eot) = self.embed_batch(batch)?;
        self.forward_embeds(&emb, &eot, want_tokens)
    }

    /// `embeds`: `[B, T, D]` token embeddings (position embeddings are added here, as CoOp's
    /// `TextEncoder` does); `eot[b]`: where row b's end-of-text token sits.
    pub fn forward_embeds(
        &self,
        embeds: &Tensor,
        eot: &[usize],
        want_tokens: bool,
    ) -> Result<TextOutput> {
        let (b, t, d) = embeds.dims3()?;
        if eot.len() != b {
            candle_core::bail!("{} end-of-text positions for a batch of {b}", eot.len());
        }
        let len = eot.iter().max().map_or(0, |m| m + 1);
        if len == 0 || len > t {
            candle_core::bail!(
                "end-of-text position {} outside the {t} given tokens",
                len.saturating_sub(1)
            );
        }
        if len > self.config.max_position_embeddings {
            candle_core::bail!(
                "text of {len} tokens exceeds the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        let x = embeds.narrow(1, 0, len)?;
        let mut x = x.broadcast_add(&self.position_embedding.narrow(0, 0, len)?)?;
        let mask = causal_mask(len, x.device())?;
        for layer in &self.layers {
            x = layer.forward(&x, Some(&mask), false)?.0;
        }
        let x = self.final_layer_norm.forward(&x)?;
        let rows: Vec<u32> = eot
            .iter()
            .enumerate()
            .map(|(i, &p)| (i * len + p) as u32)
            .collect();
        let rows = Tensor::new(rows.as_slice(), x.device())?;
        let pooled = x.reshape((b * len, d))?.index_select(&rows, 0)?;
        let pooled = self.projection.forward(&pooled)?;
        let tokens = if want_tokens {
            Some(self.projection.forward(&x)?)
        } else {
            None
        };
        Ok(TextOutput { pooled, tokens })
    }

    /// Pooled features of C sequences that share their first P tokens: `prefix` `[1, P, D]` and `rest`
    /// `[C, S, D]` token embeddings (no position embedding), `eot[i]` the absolute end-of-text position of
    /// sequence i (≥ P). The prefix runs once; exact, and differentiable through both parts. On the CPU
    /// this runs the CPU kernels (`kernels::cpu`); elsewhere (and in [`Self::forward_prefixed_autograd`]) candle's ops.
    pub fn forward_prefixed(
        &self,
        prefix: &Tensor,
        rest: &Tensor,
        eot: &[usize],
    ) -> Result<Tensor> {
        if !self.kernels_run() {
            return self.forward_prefixed_autograd(prefix, rest, eot);
        }
        self.check_prefixed(prefix, rest, eot)?;
        cpu::forward_prefixed(&self.kernel_weights()?, prefix, rest, eot)
    }

    fn check_prefixed(&self, prefix: &Tensor, rest: &Tensor, eot: &[usize]) -> Result<()> {
        let (_, p, _) = prefix.dims3()?;
        let (c, s, _) = rest.dims3()?;
        if eot.len() != c || eot.iter().any(|&e| e < p || e >= p + s) {
            candle_core::bail!("end-of-text positions {eot:?} must lie after the {p}-token prefix and within {s} more tokens");
        }
        let len = eot.iter().max().map_or(p, |m| m + 1);
        if len > self.config.max_position_embeddings {
            candle_core::bail!(
                "text of {len} tokens exceeds the model's {} positions",
                self.config.max_position_embeddings
            );
        }
        Ok(())
    }

    /// [`Self::forward_prefixed`] composed of candle ops, differentiable through candle's autograd.
    pub fn forward_prefixed_autograd(
        &self,
        prefix: &Tensor,
        rest: &Tensor,
        eot: &[usize],
    ) -> Result<Tensor> {
        self.check_prefixed(prefix, rest, eot)?;
        let (_, p, d) = prefix.dims3()?;
        let (c, _, _) = rest.dims3()?;
        let len = eot.iter().max().map_or(p, |m| m + 1);
        let s = len - p;
        let mut xp = prefix.broadcast_add(&self.position_embedding.narrow(0, 0, p)?)?;
        let mut xc = rest
            .narrow(1, 0, s)?
            .broadcast_add(&self.position_embedding.narrow(0, p, s)?)?;
        let masks = (
            causal_mask(p, prefix.device())?,
            causal_mask(s, prefix.device())?,
        );
        for layer in &self.layers {
            (xp, xc) = layer.forward_prefixed(&xp, &xc, (&masks.0, &masks.1))?;
        }
        let xc = self.final_layer_norm.forward(&xc)?;
        let rows: Vec<u32> = eot
            .iter()
            .enumerate()
            .map(|(i, &e)| (i * s + e - p) as u32)
            .collect();
        let pooled = xc
            .reshape((c * s, d))?
            .index_select(&Tensor::new(rows.as_slice(), xc.device())?, 0)?;
        self.projection.forward(&pooled)
    }

    /// Pooled features of token-id rows, through the shared-prefix path when the rows share at least
    /// two leading tokens (a template such as "a photo of a {}." filled with many class names).
    pub fn forward_ids_auto(&self, batch: &[Vec<u32>]) -> Result<Tensor> {
        let eot = self.eot_positions(batch)?;
        let common = common_prefix_len(batch).min(eot.iter().copied().min().unwrap_or(0));
        // The CPU kernels gain even from the start token alone (and from their attention). Elsewhere
        // (the GPU) the work saved is small next to the extra kernel launches of the split attention:
        // on an H200, 256 prompts in batches of 64 went from 5.5–8.5k to 14–19k prompts/s without it.
        if !self.kernels_run() || batch.is_empty() || common < 1 {
            return Ok(self.forward_ids(batch, false)?.pooled);
        }
        let prefix = self.embed_ids(&batch[0][..common])?.unsqueeze(0)?;
        let rests: Vec<Vec<u32>> = batch.iter().map(|r| r[common..].to_vec()).collect();
        let (rest, _) = self.embed_batch(&rests)?;
        self.forward_prefixed(&prefix, &rest, &eot)
    }

    /// Row `i` of the token-embedding table.
    pub fn token_vector(&self, id: u32) -> Result<Tensor> {
        self.token_embedding.i(id as usize)
    }
}

/// How many leading tokens every row shares.
pub fn common_prefix_len(batch: &[Vec<u32>]) -> usize {
    let Some(first) = batch.first() else { return 0 };
    (0..first.len())
        .take_while(|&i| batch.iter().all(|r| r.get(i) == Some(&first[i])))
        .count()
}
