//! CoOp's prompt learner: `[SOS] [V]_1 … [V]_M [CLASS] . [EOS]` with the M context vectors learned, in
//! every variant (unified or class-specific context; class token at the end, middle or front; random or
//! phrase initialisation). Mirrors `PromptLearner` in CoOp's `trainers/coop.py`.
//!
//! Only the context is a parameter. The fixed token embeddings (start token, class name, `.`, end-of-text)
//! are cut at the longest end-of-text position: the causal text tower never looks past it.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::clip::text::TextTower;
use crate::clip::ClipTokenizer;
use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassPosition {
    #[default]
    End,
    Middle,
    Front,
}

impl std::fmt::Display for ClassPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::End => "end",
            Self::Middle => "middle",
            Self::Front => "front",
        })
    }
}

/// How the context is shaped and initialised: one definition shared by the CLI, the app and exports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoopConfig {
    /// Context length M (ignored with `ctx_init`, where M is the phrase's token count).
    pub n_ctx: usize,
    /// Initialise from this phrase's embeddings, e.g. "a photo of a".
    pub ctx_init: Option<String>,
    /// Class-specific context (one M×D context per class).
    pub csc: bool,
    pub class_position: ClassPosition,
    /// Seed of the N(0, 0.02²) initialisation.
    pub seed: u64,
}

impl Default for CoopConfig {
    fn default() -> Self {
        Self {
            n_ctx: 16,
            ctx_init: None,
            csc: false,
            class_position: ClassPosition::End,
            seed: 1,
        }
    }
}

pub const INIT_STD: f32 = 0.02;

pub struct PromptLearner {
    /// `[M, D]` (unified) or `[C, M, D]` (class-specific).
    pub ctx: Var,
    pub config: CoopConfig,
    pub class_names: Vec<String>,
    pub n_ctx: usize,
    /// `[C, 1, D]`: the start token.
    prefix: Tensor,
    /// Per class: the class name's token embeddings `[len_i, D]`.
    names: Vec<Tensor>,
    /// Per class: `.`, end-of-text and end-of-text padding, so that every prompt has the same length.
    tails: Vec<Tensor>,
    /// Class-name token counts.
    pub name_lens: Vec<usize>,
    /// End-of-text position of each class's prompt.
    pub eot: Vec<usize>,
    /// Run every whole prompt through candle's ops and autograd, sharing nothing: the slow reference
    /// the fast paths are tested against. Off by default.
    pub reference_path: bool,
}

/// N(0, std²) values from the deterministic generator (Box–Muller), the same on every machine.
pub fn normal_init(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1 = ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        out.push((r * t.cos()) as f32 * std);
        out.push((r * t.sin()) as f32 * std);
    }
    out.truncate(n);
    out
}

impl PromptLearner {
    pub fn new(
        text: &TextTower,
        tok: &ClipTokenizer,
        class_names: &[String],
        config: &CoopConfig,
    ) -> Result<Self> {
        if class_names.is_empty() {
            return Err(Error::invalid("no classes to learn prompts for"));
        }
        let d = text.hidden_size();
        let dev = text.device().clone();
        let (n_ctx, init): (usize, Option<Tensor>) = match &config.ctx_init {
            Some(phrase) => {
                let ids = tok.encode_words(phrase.trim())?;
                if ids.is_empty() {
                    return Err(Error::invalid(format!(
                        "--ctx-init {phrase:?} has no tokens"
                    )));
                }
                (ids.len(), Some(text.embed_ids(&ids)?))
            }
            None => (config.n_ctx, None),
        };
        if n_ctx == 0 {
            return Err(Error::invalid("the context length must be at least 1"));
        }
        let c = class_names.len();
        let ctx = match (init, config.csc) {
            (Some(v), false) => v,
            (Some(v), true) => v.unsqueeze(0)?.repeat((c, 1, 1))?,
            (None, false) => Tensor::from_vec(
                normal_init(n_ctx * d, INIT_STD, config.seed),
                (n_ctx, d),
                &dev,
            )?,
            (None, true) => Tensor::from_vec(
                normal_init(c * n_ctx * d, INIT_STD, config.seed),
                (c, n_ctx, d),
                &dev,
            )?,
        };
        let max_len = text.config.max_position_embeddings;
        // CoOp tokenises the whole prompt "X X … X name." (or "phrase name.") and keeps what follows the
        // placeholders, so punctuation next to the class name merges exactly as it does there.
        let placeholder = match &config.ctx_init {
            Some(phrase) => phrase.trim().to_string(),
            None => vec!["X"; n_ctx].join(" "),
        };
        let mut suffixes = Vec::with_capacity(c);
        let mut name_lens = Vec::with_capacity(c);
        for name in class_names {
            let words = tok.encode_words(&format!("{placeholder} {name}."))?;
            // [SOS] words [EOS]
            let len = words.len() + 2;
            if len > max_len {
                return Err(Error::invalid(format!(
                    "class name {name:?} is {} tokens: with {n_ctx} context tokens its prompt needs {len} of the model's {max_len} positions; shorten the class name or the context",
                    tok.count_words(name)?
                )));
            }
            let mut suffix = words[n_ctx..].to_vec();
            suffix.push(tok.eos_id);
            suffixes.push(suffix);
            name_lens.push(tok.count_words(name)?.min(words.len() - n_ctx));
        }
        let eot: Vec<usize> = suffixes.iter().map(|s| n_ctx + s.len()).collect();
        let longest = eot.iter().max().copied().unwrap_or(0) + 1;
        let mut names = Vec::with_capacity(c);
        let mut tails = Vec::with_capacity(c);
        for (suffix, &l) in suffixes.iter().zip(&name_lens) {
            names.push(text.embed_ids(&suffix[..l])?);
            // What follows the class name, padded with end-of-text (CLIP's padding id) to the common length.
            let mut rest = suffix[l..].to_vec();
            rest.resize(longest - 1 - n_ctx - l, tok.eos_id);
            tails.push(text.embed_ids(&rest)?);
        }
        let prefix = text
            .embed_ids(&[tok.bos_id])?
            .unsqueeze(0)?
            .repeat((c, 1, 1))?;
        Ok(Self {
            ctx: Var::from_tensor(&ctx.to_dtype(DType::F32)?)?,
            config: CoopConfig {
                n_ctx,
                ..config.clone()
            },
            class_names: class_names.to_vec(),
            n_ctx,
            prefix,
            names,
            tails,
            name_lens,
            eot,
            reference_path: false,
        })
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Replaces the context (a loaded export, a checkpoint), checking its shape.
    pub fn set_ctx(&mut self, ctx: &Tensor) -> Result<()> {
        if ctx.dims() != self.ctx.dims() {
            return Err(Error::invalid(format!(
                "context of shape {:?} does not fit this learner's {:?}",
                ctx.dims(),
                self.ctx.dims()
            )));
        }
        self.ctx.set(&ctx.to_dtype(DType::F32)?)?;
        Ok(())
    }

    /// Class `i`'s context `[M, D]`.
    fn ctx_of(&self, i: usize) -> candle_core::Result<Tensor> {
        if self.config.csc {
            self.ctx.get(i)
        } else {
            Ok(self.ctx.as_tensor().clone())
        }
    }

    /// The prompts' token embeddings `[C, L, D]` (L = longest end-of-text position + 1) and each row's
    /// end-of-text position.
    pub fn prompts(&self) -> Result<(Tensor, &[usize])> {
        let c = self.num_classes();
        let d = self.prefix.dim(2)?;
        let m = self.n_ctx;
        let out = match self.config.class_position {
            ClassPosition::End => {
                let ctx = if self.config.csc {
                    self.ctx.as_tensor().clone()
                } else {
                    self.ctx.as_tensor().unsqueeze(0)?.broadcast_as((c, m, d))?
                };
                // Class names differ in length, so [name, tail] is assembled per class first.
                let rests: Vec<Tensor> = (0..c)
                    .map(|i| Tensor::cat(&[&self.names[i], &self.tails[i]], 0))
                    .collect::<candle_core::Result<_>>()?;
                let rest = Tensor::stack(&rests, 0)?;
                Tensor::cat(&[&self.prefix, &ctx, &rest], 1)?
            }
            ClassPosition::Middle | ClassPosition::Front => {
                let half = if self.config.class_position == ClassPosition::Middle {
                    m / 2
                } else {
                    0
                };
                let rows: Vec<Tensor> = (0..c)
                    .map(|i| {
                        let ctx = self.ctx_of(i)?;
                        let parts = [
                            self.prefix.get(i)?,
                            ctx.narrow(0, 0, half)?,
                            self.names[i].clone(),
                            ctx.narrow(0, half, m - half)?,
                            self.tails[i].clone(),
                        ];
                        Tensor::cat(
                            &parts
                                .iter()
                                .filter(|t| t.dim(0).unwrap_or(0) > 0)
                                .collect::<Vec<_>>(),
                            0,
                        )
                    })
                    .collect::<candle_core::Result<_>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        Ok((out, &self.eot))
    }

    /// Projected (not normalised) text features `[C, P]` of the class prompts; differentiable w.r.t. the
    /// context. Picks the fastest exact path: with a unified context at the end or in the middle, every
    /// prompt starts with the same `[SOS] ctx…` tokens, which then run once.
    pub fn text_features(&self, text: &TextTower) -> Result<Tensor> {
        if let Some((prefix, rest)) = self.split_shared()? {
            return Ok(text.forward_prefixed(&prefix, &rest, &self.eot)?);
        }
        let (prompts, eot) = self.prompts()?;
        if text.kernels_run() && !self.reference_path {
            // Every prompt starts with the same start token: the CPU kernels' shared-prefix path with P = 1.
            let l = prompts.dim(1)?;
            let sos = prompts.narrow(0, 0, 1)?.narrow(1, 0, 1)?;
            return Ok(text.forward_prefixed(&sos, &prompts.narrow(1, 1, l - 1)?, eot)?);
        }
        Ok(text.forward_embeds(&prompts, eot, false)?.pooled)
    }

    /// Text features `[C, P]` of the class prompts with `shift` `[D]` added to every context token
    /// (CoCoOp's `ctx + π(x)` for one image); differentiable w.r.t. the context and the shift. For one
    /// image every class prompt still starts `[SOS] ctx+π`, so the shared-prefix path runs; a unified
    /// context at the end is what CoCoOp learns, and the only layout this takes.
    pub fn text_features_shifted(&self, text: &TextTower, shift: &Tensor) -> Result<Tensor> {
        if self.config.csc || self.config.class_position != ClassPosition::End {
            return Err(Error::invalid("CoCoOp's per-image context needs a unified context with the class token at the end"));
        }
        let ctx = self.ctx.as_tensor().broadcast_add(shift)?;
        let prefix = Tensor::cat(&[&self.prefix.get(0)?, &ctx], 0)?.unsqueeze(0)?;
        let rows: Vec<Tensor> = (0..self.num_classes())
            .map(|i| Tensor::cat(&[&self.names[i], &self.tails[i]], 0))
            .collect::<candle_core::Result<_>>()?;
        Ok(text.forward_prefixed(&prefix, &Tensor::stack(&rows, 0)?, &self.eot)?)
    }

    /// The shared prefix `[1, P, D]` and the per-class rest `[C, S, D]`, when the variant has one.
    fn split_shared(&self) -> Result<Option<(Tensor, Tensor)>> {
        let m = self.n_ctx;
        let shared = match self.config.class_position {
            _ if self.config.csc || self.reference_path => return Ok(None),
            ClassPosition::End => m,
            ClassPosition::Middle => m / 2,
            ClassPosition::Front => return Ok(None),
        };
        let ctx = self.ctx.as_tensor();
        let prefix =
            Tensor::cat(&[&self.prefix.get(0)?, &ctx.narrow(0, 0, shared)?], 0)?.unsqueeze(0)?;
        let rest_ctx = ctx.narrow(0, shared, m - shared)?;
        let rows: Vec<Tensor> = (0..self.num_classes())
            .map(|i| {
                let parts = [
                    self.names[i].clone(),
                    rest_ctx.clone(),
                    self.tails[i].clone(),
                ];
                Tensor::cat(
                    &parts
                        .iter()
                        .filter(|t| t.dim(0).unwrap_or(0) > 0)
                        .collect::<Vec<_>>(),
                    0,
                )
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Some((prefix, Tensor::stack(&rows, 0)?)))
    }
}
