//! Explanation maps: every answer the field gives to "where does the model see this text?", behind one
//! interface (METHODS §9). A method turns one image and one text into maps over the patch grid; the
//! forward-only methods share one vision pass ([`MapPass`]) across every text and method, and the
//! image-side work of each method is done once per image ([`ImageMaps`]), the text side once per text.
//!
//! One file per kind of method: [`last_block`] replaces the last block's attention (MaskCLIP, ClearCLIP,
//! SCLIP, NACLIP), [`parallel`] runs a second path beside the last blocks (GEM, CLIP Surgery),
//! [`rollout`] multiplies the blocks' attention, [`gradient`] differentiates the score (Chefer,
//! Grad-CAM, LeGrad). FILIP's token-wise map is `align::filip`'s.

pub mod gradient;
pub mod last_block;
pub mod parallel;
pub mod rollout;

use std::time::Instant;

use candle_core::{Module, Tensor};
use serde::{Deserialize, Serialize};

use super::filip::{align_pass, AlignConfig};
use super::pass::VisionPass;
use super::tokens::TextSource;
use crate::clip::vision::VisionTower;
use crate::clip::{l2_normalize, LoadedClip};
use crate::error::{Error, Result};

/// Every map method, by the name the CLI, the app and the JSON use.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum MapMethod {
    /// FILIP's token-wise similarity: each word token's cosine with each projected patch token.
    Token,
    /// MaskCLIP as its authors ship it: the last block's value path with its residual and MLP kept.
    Maskclip,
    /// "MaskCLIP" as ClearCLIP's code and later papers run it: the value path alone, no residual, no MLP.
    MaskclipClearclip,
    /// ClearCLIP: q–q self-attention in the last block, no residual, no MLP.
    Clearclip,
    /// SCLIP: q–q plus k–k self-attention in the last block, residual and MLP kept.
    Sclip,
    /// NACLIP: k–k self-attention plus a Gaussian neighbourhood prior, no residual, no MLP.
    Naclip,
    /// GEM: a parallel path over the last six blocks with q–q, k–k and v–v self-self attention.
    Gem,
    /// CLIP Surgery: a parallel v–v path over the last six blocks, the empty text's feature removed.
    Surgery,
    /// Attention rollout: the blocks' head-averaged attention (plus the residual) multiplied; the
    /// same for every text, the prior the other methods must beat.
    Rollout,
    /// Chefer's relevance: attention weighted by its gradient, propagated over the last blocks.
    Chefer,
    /// Grad-CAM on the tokens entering the last block.
    Gradcam,
    /// LeGrad: the gradient of each of the last blocks' scores with respect to its own attention.
    Legrad,
}

impl MapMethod {
    pub const ALL: [MapMethod; 12] = [
        Self::Token,
        Self::Maskclip,
        Self::MaskclipClearclip,
        Self::Clearclip,
        Self::Sclip,
        Self::Naclip,
        Self::Gem,
        Self::Surgery,
        Self::Rollout,
        Self::Chefer,
        Self::Gradcam,
        Self::Legrad,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Maskclip => "maskclip",
            Self::MaskclipClearclip => "maskclip-clearclip",
            Self::Clearclip => "clearclip",
            Self::Sclip => "sclip",
            Self::Naclip => "naclip",
            Self::Gem => "gem",
            Self::Surgery => "surgery",
            Self::Rollout => "rollout",
            Self::Chefer => "chefer",
            Self::Gradcam => "gradcam",
            Self::Legrad => "legrad",
        }
    }

    /// Methods as the command line names them: each item a name, a comma-separated list, or `all`;
    /// repeats dropped, the order kept.
    pub fn parse_list(items: &[String]) -> Result<Vec<MapMethod>> {
        crate::value_list::parse_list(items, &Self::ALL, "map method")
    }

    /// Whether the method maps each word of the text (else the whole prompt, `"<text>"`).
    pub fn per_word(self) -> bool {
        self == Self::Token
    }

    /// Whether the method needs a backward pass per text batch (else the forward pass is enough).
    pub fn needs_backward(self) -> bool {
        matches!(self, Self::Chefer | Self::Gradcam | Self::Legrad)
    }

    /// Whether the map is read off the class token's row (rollout, Chefer, Grad-CAM's score) or its
    /// pooled feature (the rest score patch tokens against the text directly).
    fn reads_class_token(self) -> bool {
        matches!(self, Self::Rollout | Self::Chefer | Self::Gradcam)
    }

    /// Why `clip` cannot run the method, if it cannot: every method reads CLIP's blocks, so another
    /// family (SigLIP, Chinese-CLIP: loaded through their global features only) is refused with the reason.
    pub fn unavailable(self, clip: &LoadedClip) -> Option<String> {
        match clip.model() {
            Err(_) => Some(format!(
                "{} reads the vision blocks' attention and tokens; promptscope runs {} models through \
                 candle-transformers for their global features only, whose blocks it cannot reach{}",
                self.name(),
                clip.family().name(),
                if self.reads_class_token() {
                    " (and the method reads a class token, which SigLIP does not have: it pools with an attention head)"
                } else {
                    ""
                }
            )),
            Ok(m) if m.vision.layers.is_empty() => {
                Some("the vision tower has no blocks".to_string())
            }
            Ok(_) => None,
        }
    }
}

impl std::fmt::Display for MapMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The methods' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOptions {
    /// How many of the last blocks Chefer's relevance runs over (the notebook's `start_layer = -1`: 1).
    pub chefer_blocks: usize,
    /// LeGrad's K: how many of the last blocks' maps are summed (its `layer_index = -2`: 2).
    pub legrad_blocks: usize,
}

impl Default for MapOptions {
    fn default() -> Self {
        Self {
            chefer_blocks: 1,
            legrad_blocks: 2,
        }
    }
}

/// The target name of a prompt-level map.
pub const WHOLE_TEXT: &str = "<text>";

/// One method's maps of one image and one text: the `--format json` object of `align --method`
/// (`maps` as one `rows × cols` nested array per target).
#[derive(Debug, Clone)]
pub struct MethodMaps {
    pub method: MapMethod,
    /// `[rows, cols]` of the patch grid.
    pub grid: [usize; 2],
    /// The text's tokens for a per-word method, else [`WHOLE_TEXT`].
    pub targets: Vec<String>,
    /// One map per target, raw (before any min–max), row-major over the grid.
    pub maps: Vec<Vec<f32>>,
    /// Chefer's: each word's relevance to the score on the text side (the words between the start and
    /// end-of-text tokens, summing to 1).
    pub word_relevance: Option<Vec<(String, f32)>>,
}

impl MethodMaps {
    /// The map of `target` (a token's text or [`WHOLE_TEXT`]).
    pub fn map_of(&self, target: usize) -> Option<&[f32]> {
        self.maps.get(target).map(Vec::as_slice)
    }
}

impl Serialize for MethodMaps {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let cols = self.grid[1].max(1);
        let maps: Vec<Vec<&[f32]>> = self.maps.iter().map(|m| m.chunks(cols).collect()).collect();
        let mut st = s.serialize_struct("MethodMaps", 5)?;
        st.serialize_field("method", &self.method)?;
        st.serialize_field("grid", &self.grid)?;
        st.serialize_field("targets", &self.targets)?;
        st.serialize_field("maps", &maps)?;
        if let Some(words) = &self.word_relevance {
            let words: Vec<serde_json::Value> = words
                .iter()
                .map(|(t, r)| serde_json::json!({ "token": t, "relevance": r }))
                .collect();
            st.serialize_field("word_relevance", &words)?;
        }
        st.end()
    }
}

/// One run of the vision tower keeping each block's input (and, from a block on, its attention).
#[derive(Debug, Clone)]
pub struct MapPass {
    /// `hidden[i]`: the hidden states `[B, T, D]` entering block i; `hidden[L]` the final ones.
    pub hidden: Vec<Tensor>,
    /// Block i's attention probabilities `[B, H, T, T]` where kept.
    pub attention: Vec<Option<Tensor>>,
    /// Block i's q, k and v `[B, T, 3·D]` (before the heads split) where the kernels kept them with its
    /// attention; elsewhere `heads_qkv` recomputes them.
    pub qkv: Vec<Option<Tensor>>,
}

impl MapPass {
    /// The pass over `pixels`, keeping the attention of every block from `keep_from` on (the tower's
    /// depth or more: none).
    pub fn run(vision: &VisionTower, pixels: &Tensor, keep_from: usize) -> Result<Self> {
        if vision.layers.is_empty() {
            return Err(Error::invalid("the vision tower has no blocks"));
        }
        let mut x = vision.embed(pixels)?;
        if crate::clip::kernels::cpu::runs_here(&vision.patch_weight, vision.config.hidden_act) {
            // The CPU kernels' blocks (several times candle's ops here), keeping what the methods read
            // of the attention from the same pass.
            let (hidden, kept) = crate::clip::kernels::cpu::vision_hidden_states(
                &vision.kernel_weights()?,
                &x,
                keep_from,
            )?;
            let (attention, qkv) = kept
                .into_iter()
                .map(|k| k.map(|k| (k.probs, k.qkv)).unzip())
                .unzip();
            return Ok(Self {
                hidden,
                attention,
                qkv,
            });
        }
        let (mut hidden, mut attention) = (Vec::new(), Vec::new());
        for (i, layer) in vision.layers.iter().enumerate() {
            hidden.push(x.clone());
            let (y, probs) = layer.forward(&x, None, i >= keep_from)?;
            attention.push(probs);
            x = y;
        }
        hidden.push(x);
        Ok(Self {
            hidden,
            attention,
            qkv: Vec::new(),
        })
    }

    /// Every block's attention, for methods that read them all (rollout).
    pub fn all_attention(&self) -> Result<Vec<Tensor>> {
        self.attention
            .iter()
            .cloned()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::invalid("the pass kept not every block's attention"))
    }

    /// Block `i`'s q, k and v split into heads `[B, H, T, head_dim]`: kept from the pass where the
    /// kernels ran it, else recomputed from the block's input.
    pub fn heads_qkv(&self, vision: &VisionTower, i: usize) -> Result<[Tensor; 3]> {
        let block = &vision.layers[i];
        let att = &block.self_attn;
        match self.qkv.get(i).and_then(Option::as_ref) {
            Some(qkv) => {
                let (b, t, d3) = qkv.dims3()?;
                let d = d3 / 3;
                let heads = vision.config.num_attention_heads;
                let split = |j: usize| -> Result<Tensor> {
                    Ok(qkv
                        .narrow(2, j * d, d)?
                        .reshape((b, t, heads, d / heads))?
                        .transpose(1, 2)?
                        .contiguous()?)
                };
                Ok([split(0)?, split(1)?, split(2)?])
            }
            None => Ok(att.heads_qkv(&block.layer_norm1.forward(&self.hidden[i])?)?),
        }
    }

    /// The pass alignment's token maps read (`align::pass`), from the same hidden states.
    pub fn vision_pass(&self) -> VisionPass {
        let n = self.hidden.len() - 1;
        VisionPass {
            into_last: self.hidden[n - 1].clone(),
            last: self.hidden[n].clone(),
            penultimate_attention: (n >= 2)
                .then(|| self.attention.get(n - 2).cloned().flatten())
                .flatten(),
        }
    }
}

/// What one method has made of one image before any text is seen.
enum ImageSide {
    /// The image's pass, for FILIP's per-word maps.
    Tokens(VisionPass),
    /// Per-patch features `[N, P]`, L2-normalised: a prompt's map is their dot product with its feature.
    Features(Tensor),
    /// A map that does not depend on the text.
    Fixed(Vec<f32>),
    /// Made per text by a backward pass from the image's pass.
    Gradient,
}

/// One image ready to be mapped against any text by each of `methods`.
pub struct ImageMaps<'a> {
    clip: &'a LoadedClip,
    grid: usize,
    pass: MapPass,
    options: MapOptions,
    sides: Vec<(MapMethod, ImageSide)>,
    /// Surgery's redundant feature: the empty text's, normalised (computed with each image's maps).
    empty: Option<Tensor>,
    /// Seconds each method spent on the image side (its share of the shared pass included).
    pub image_seconds: Vec<f64>,
}

impl<'a> ImageMaps<'a> {
    /// One pass over `pixels` (`[1, 3, H, W]`, preprocessed), then each method's image side, with
    /// the methods' default settings.
    pub fn new(clip: &'a LoadedClip, pixels: &Tensor, methods: &[MapMethod]) -> Result<Self> {
        Self::with_options(clip, pixels, methods, MapOptions::default())
    }

    pub fn with_options(
        clip: &'a LoadedClip,
        pixels: &Tensor,
        methods: &[MapMethod],
        options: MapOptions,
    ) -> Result<Self> {
        if methods.is_empty() {
            return Err(Error::invalid("no map method asked for"));
        }
        for m in methods {
            if let Some(why) = m.unavailable(clip) {
                return Err(Error::invalid(format!("{m}: {why}")));
            }
        }
        if pixels.dims().first() != Some(&1) {
            return Err(Error::invalid(format!(
                "maps are made one image at a time (pixels {:?})",
                pixels.dims()
            )));
        }
        let model = clip.model()?;
        let vision = &model.vision;
        let start = Instant::now();
        // Rollout reads every block's attention, GEM and CLIP Surgery their path's blocks' q, k and v,
        // Chefer and LeGrad their traced blocks' attention and values.
        let n = vision.layers.len();
        let keep_from = methods
            .iter()
            .map(|m| match m {
                MapMethod::Rollout => 0,
                MapMethod::Gem | MapMethod::Surgery => n.saturating_sub(parallel::PATH_BLOCKS),
                MapMethod::Chefer => n.saturating_sub(options.chefer_blocks),
                MapMethod::Legrad => n.saturating_sub(options.legrad_blocks),
                _ => n,
            })
            .min()
            .unwrap_or(n);
        let pass = MapPass::run(vision, pixels, keep_from)?;
        let pass_seconds = start.elapsed().as_secs_f64();
        let mut sides = Vec::with_capacity(methods.len());
        let mut image_seconds = Vec::with_capacity(methods.len());
        for &m in methods {
            let start = Instant::now();
            let side = match m {
                MapMethod::Token => ImageSide::Tokens(pass.vision_pass()),
                MapMethod::Rollout => ImageSide::Fixed(rollout::rollout(&pass.all_attention()?)?),
                m if m.needs_backward() => ImageSide::Gradient,
                _ => {
                    let feats = match m {
                        MapMethod::Gem | MapMethod::Surgery => {
                            parallel::features(vision, &pass, m)?
                        }
                        _ => last_block::features(vision, &pass, m)?,
                    };
                    // Drop the class token; each patch's feature L2-normalised.
                    let n = feats.dim(1)?;
                    ImageSide::Features(l2_normalize(&feats.narrow(1, 1, n - 1)?.squeeze(0)?)?)
                }
            };
            sides.push((m, side));
            image_seconds.push(pass_seconds + start.elapsed().as_secs_f64());
        }
        let empty = if methods.contains(&MapMethod::Surgery) {
            Some(l2_normalize(&clip.text_features(&[String::new()])?)?.squeeze(0)?)
        } else {
            None
        };
        Ok(Self {
            clip,
            grid: model.config.vision_config.grid(),
            pass,
            options,
            sides,
            empty,
            image_seconds,
        })
    }

    /// The maps of `text` by the `index`-th method alone (its own text encoding included: what a user
    /// running that method pays).
    pub fn method_maps(&self, index: usize, text: &str) -> Result<MethodMaps> {
        let (m, side) = self
            .sides
            .get(index)
            .ok_or_else(|| Error::invalid(format!("no method {index} of {}", self.sides.len())))?;
        self.maps_by(*m, side, text, &OnceText::default())
    }

    /// The maps of each of `texts` by the `index`-th method. A gradient method runs one backward pass
    /// for all the texts (the image repeated per text, the scores' diagonal summed); the others map
    /// text by text from the shared image side.
    pub fn method_maps_many(&self, index: usize, texts: &[String]) -> Result<Vec<MethodMaps>> {
        let (m, side) = self
            .sides
            .get(index)
            .ok_or_else(|| Error::invalid(format!("no method {index} of {}", self.sides.len())))?;
        if !matches!(side, ImageSide::Gradient) || texts.len() < 2 {
            return texts
                .iter()
                .map(|t| self.maps_by(*m, side, t, &OnceText::default()))
                .collect();
        }
        for t in texts {
            check_prompt(self.clip, t)?;
        }
        let feats = l2_normalize(&self.clip.text_features(texts)?)?;
        self.gradient_maps(*m, &feats, texts)
    }

    /// A gradient method's maps of `texts` whose normalised features are `feats` `[B, P]`, from one
    /// backward pass, each with its word relevance where the method has one.
    fn gradient_maps(
        &self,
        method: MapMethod,
        feats: &Tensor,
        texts: &[String],
    ) -> Result<Vec<MethodMaps>> {
        let model = self.clip.model()?;
        let scale = f64::from(self.clip.logit_scale());
        let maps = gradient::maps(
            &model.vision,
            &self.pass,
            feats,
            scale,
            method,
            &self.options,
        )?;
        texts
            .iter()
            .zip(maps)
            .map(|(t, map)| {
                Ok(MethodMaps {
                    method,
                    grid: [self.grid, self.grid],
                    targets: vec![WHOLE_TEXT.to_string()],
                    maps: vec![map],
                    word_relevance: self.word_relevance(method, t)?,
                })
            })
            .collect()
    }

    /// The image's vision pass, as the token-wise alignment reads it (`align::filip::align_pass`).
    pub fn vision_pass(&self) -> VisionPass {
        self.pass.vision_pass()
    }

    /// Chefer's text side for `text` (None for the other methods).
    fn word_relevance(&self, method: MapMethod, text: &str) -> Result<Option<Vec<(String, f32)>>> {
        if method != MapMethod::Chefer {
            return Ok(None);
        }
        let model = self.clip.model()?;
        let tok = self.clip.tokenizer()?;
        let ids = tok.encode(text)?;
        let last = &self.pass.hidden[self.pass.hidden.len() - 1];
        let image = l2_normalize(&model.vision.pool(last)?)?.squeeze(0)?;
        let blocks = self.options.chefer_blocks.min(model.text.layers.len());
        let scale = f64::from(self.clip.logit_scale());
        let r = gradient::text_relevance(&model.text, &ids, &image, scale, blocks)?;
        Ok(Some(
            ids[1..ids.len() - 1]
                .iter()
                .zip(r)
                .map(|(&id, r)| (tok.token_text(id), r))
                .collect(),
        ))
    }

    /// Every method's maps of `text`, in the order the methods were given.
    pub fn maps(&self, text: &str) -> Result<Vec<MethodMaps>> {
        let prompt = OnceText::default();
        self.sides
            .iter()
            .map(|(m, side)| self.maps_by(*m, side, text, &prompt))
            .collect()
    }

    fn maps_by(
        &self,
        method: MapMethod,
        side: &ImageSide,
        text: &str,
        prompt: &OnceText,
    ) -> Result<MethodMaps> {
        let (targets, maps) = match side {
            ImageSide::Tokens(pass) => {
                let a = align_pass(
                    self.clip,
                    pass,
                    &TextSource::Text(text),
                    &AlignConfig::default(),
                )?;
                let maps = (0..a.sim.cols)
                    .map(|r| a.word_map(r))
                    .collect::<Result<_>>()?;
                (a.text_tokens, maps)
            }
            ImageSide::Features(f) => {
                let mut t = prompt.feature(self.clip, text)?;
                if method == MapMethod::Surgery {
                    // CLIP Surgery's demo for one text without rival classes: the empty text's
                    // feature is the redundant part, subtracted without renormalising.
                    t = (t - self.empty.as_ref().expect("made with surgery"))?;
                }
                let map = f.matmul(&t.unsqueeze(1)?)?.squeeze(1)?.to_vec1()?;
                (vec![WHOLE_TEXT.to_string()], vec![map])
            }
            ImageSide::Fixed(map) => (vec![WHOLE_TEXT.to_string()], vec![map.clone()]),
            ImageSide::Gradient => {
                let t = prompt.feature(self.clip, text)?.unsqueeze(0)?;
                let mut one = self.gradient_maps(method, &t, &[text.to_string()])?;
                return Ok(one.remove(0));
            }
        };
        Ok(MethodMaps {
            method,
            grid: [self.grid, self.grid],
            targets,
            maps,
            word_relevance: None,
        })
    }
}

/// A prompt's pooled feature, L2-normalised, computed on first use and shared by the methods.
#[derive(Default)]
struct OnceText(std::cell::OnceCell<Tensor>);

impl OnceText {
    fn feature(&self, clip: &LoadedClip, text: &str) -> Result<Tensor> {
        if let Some(t) = self.0.get() {
            return Ok(t.clone());
        }
        check_prompt(clip, text)?;
        let t = l2_normalize(&clip.text_features(&[text.to_string()])?)?.squeeze(0)?;
        Ok(self.0.get_or_init(|| t).clone())
    }
}

/// An empty prompt has no word to map.
fn check_prompt(clip: &LoadedClip, text: &str) -> Result<()> {
    if clip.tokenizer()?.encode_words(text)?.is_empty() {
        return Err(Error::invalid(format!(
            "the prompt {text:?} is empty: give a text such as \"a photo of a dog.\""
        )));
    }
    Ok(())
}

/// Softmax over the last dimension of `a aᵀ · scale` (plus `bias`), per head: the self-self attention
/// the training-free methods put in place of q kᵀ.
pub(crate) fn self_attention(a: &Tensor, scale: f64, bias: Option<&Tensor>) -> Result<Tensor> {
    let mut logits = (a.matmul(&a.t()?)? * scale)?;
    if let Some(b) = bias {
        logits = logits.broadcast_add(b)?;
    }
    Ok(crate::clip::layers::softmax_last_dim(&logits)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_lists_take_names_commas_and_all() {
        let list = |items: &[&str]| {
            MapMethod::parse_list(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            list(&["gem,token", "gem", " rollout"]).unwrap(),
            [MapMethod::Gem, MapMethod::Token, MapMethod::Rollout]
        );
        assert_eq!(
            list(&["surgery", "all"]).unwrap().len(),
            MapMethod::ALL.len()
        );
        assert_eq!(list(&["surgery", "all"]).unwrap()[0], MapMethod::Surgery);
        assert!(list(&[]).unwrap().is_empty());
        let err = list(&["token,masklip"]).unwrap_err().to_string();
        assert!(
            err.contains("'masklip'") && err.contains("maskclip-clearclip"),
            "{err}"
        );
        // Every name parses back to its method.
        for m in MapMethod::ALL {
            assert_eq!(list(&[m.name()]).unwrap(), [m]);
        }
    }

    #[test]
    fn naclip_neighbourhood_is_one_on_the_diagonal_and_zero_for_the_class_token() {
        let o = last_block::neighbourhood(3, 5.0, &candle_core::Device::Cpu).unwrap();
        let o: Vec<Vec<f32>> = o.to_vec2().unwrap();
        assert_eq!(o.len(), 10);
        assert!(o[0].iter().all(|&v| v == 0.0) && o.iter().all(|r| r[0] == 0.0));
        assert!((1..10).all(|i| o[i][i] == 1.0));
        // Patches 0 and 8 of the 3×3 grid: two rows and two columns apart.
        assert!((o[1][9] - (-8.0f32 / 50.0).exp()).abs() < 1e-7);
        assert_eq!(o[2][4], o[4][2]);
    }
}
