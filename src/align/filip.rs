//! FILIP's token-wise late interaction between one image and one prompt (METHODS §4): the cosine matrix
//! S between image tokens (rows) and text tokens (columns), the scores
//! `s_I = mean_k max_r S[k, r]` and `s_T = mean_r max_k S[k, r]` over the top fraction of tokens, and the
//! per-word maps (columns of S on the patch grid) with the argmax-word map of FILIP's Fig. 4.

use candle_core::Tensor;
use serde::{Deserialize, Serialize, Serializer};

use super::pass::VisionPass;
use super::tokens::{image_tokens, prompt_tokens, AlignMode, PromptTokens, TextSource};
use crate::clip::vision::VisionTower;
use crate::clip::LoadedClip;
use crate::error::{Error, Result};

/// A cosine matrix, row-major: `rows` image tokens × `cols` text tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SimMatrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

impl SimMatrix {
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols || rows == 0 || cols == 0 {
            return Err(Error::invalid(format!(
                "a {rows}×{cols} similarity matrix needs {} values, got {}",
                rows * cols,
                data.len()
            )));
        }
        Ok(Self { rows, cols, data })
    }

    /// `image [n1, P] · text [n2, P]ᵀ` of normalised tokens.
    pub fn from_tokens(image: &Tensor, text: &Tensor) -> Result<Self> {
        let s = image.matmul(&text.t()?)?;
        let (rows, cols) = s.dims2()?;
        Self::new(rows, cols, s.flatten_all()?.to_vec1()?)
    }

    pub fn at(&self, k: usize, r: usize) -> f32 {
        self.data[k * self.cols + r]
    }

    /// Per image token: its best-matching word's similarity.
    pub fn row_max(&self) -> Vec<f32> {
        self.data
            .chunks(self.cols)
            .map(|row| row.iter().copied().fold(f32::NEG_INFINITY, f32::max))
            .collect()
    }

    /// Per word: its best-matching image token's similarity.
    pub fn col_max(&self) -> Vec<f32> {
        (0..self.cols)
            .map(|r| {
                (0..self.rows)
                    .map(|k| self.at(k, r))
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect()
    }

    /// Column `r` (word r's similarity with every image token).
    pub fn column(&self, r: usize) -> Vec<f32> {
        (0..self.rows).map(|k| self.at(k, r)).collect()
    }

    /// Per image token: the index of its best-matching word (the first on ties).
    pub fn row_argmax(&self) -> Vec<usize> {
        self.data
            .chunks(self.cols)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    )
                    .0
            })
            .collect()
    }
}

/// Serialised as nested rows (`[[...], ...]`), the shape the CLI's JSON promises.
impl Serialize for SimMatrix {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(self.data.chunks(self.cols))
    }
}

/// How many of `n` tokens the top fraction `f` keeps: `ceil(f·n)`, at least 1. The small tolerance keeps
/// binary rounding ((0.1·3)·10 = 3.0000000000000004) from keeping one token more than the user asked for.
pub fn kept_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64 - 1e-9).ceil() as usize).clamp(1, n.max(1))
}

/// The mean of the `kept_count` largest values (FILIP keeps the tokens with the highest max similarity).
pub fn top_mean(values: &[f32], fraction: f64) -> f32 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| b.total_cmp(a));
    let k = kept_count(v.len(), fraction);
    v[..k].iter().sum::<f32>() / k as f32
}

/// `(s_I, s_T)` of a similarity matrix over the top `fraction` of image tokens and of words respectively.
pub fn scores(s: &SimMatrix, fraction: f64) -> (f32, f32) {
    (
        top_mean(&s.row_max(), fraction),
        top_mean(&s.col_max(), fraction),
    )
}

pub fn check_fraction(fraction: f64) -> Result<()> {
    if fraction.is_finite() && fraction > 0.0 && fraction <= 1.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!("the kept fraction of tokens must be in (0, 1] (FILIP used 0.25; 1 keeps all), not {fraction}")))
    }
}

/// The settings of one alignment; one definition for the CLI, the app and tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AlignConfig {
    pub mode: AlignMode,
    /// Include the class token as an image token (a row of S before the patches).
    pub with_cls: bool,
    /// Include the start-of-text token as a text token.
    pub with_sos: bool,
    /// Fraction of tokens kept for `s_I`/`s_T`, ranked by their max similarity (1 = all).
    pub top_fraction: f64,
}

impl Default for AlignConfig {
    fn default() -> Self {
        Self {
            mode: AlignMode::Token,
            with_cls: false,
            with_sos: false,
            top_fraction: 1.0,
        }
    }
}

/// One image aligned with one prompt.
#[derive(Debug, Clone, Serialize)]
pub struct Alignment {
    pub mode: AlignMode,
    /// Patch grid `[h, w]`.
    pub grid: [usize; 2],
    pub with_cls: bool,
    pub with_sos: bool,
    pub top_fraction: f64,
    /// One decoded label per column of `sim`.
    pub text_tokens: Vec<String>,
    /// Rows: the class token first when `with_cls`, then the patches in row-major grid order.
    pub sim: SimMatrix,
    pub s_i: f32,
    pub s_t: f32,
}

impl Alignment {
    fn first_patch_row(&self) -> usize {
        usize::from(self.with_cls)
    }

    /// Word r's alignment map: its similarity with every patch (grid order), without the class token.
    pub fn word_map(&self, r: usize) -> Result<Vec<f32>> {
        if r >= self.sim.cols {
            return Err(Error::invalid(format!(
                "word {r} asked of a prompt with {} tokens (0..{})",
                self.sim.cols,
                self.sim.cols - 1
            )));
        }
        Ok(self.sim.column(r)[self.first_patch_row()..].to_vec())
    }

    /// Per patch: the index of the word it aligns with best (FILIP's Fig. 4).
    pub fn argmax_word_map(&self) -> Vec<usize> {
        self.sim.row_argmax()[self.first_patch_row()..].to_vec()
    }
}

/// Aligns the image `pixels` (`[1, 3, H, W]`, preprocessed) with one prompt.
pub fn align(
    clip: &LoadedClip,
    pixels: &Tensor,
    text: &TextSource,
    cfg: &AlignConfig,
) -> Result<Alignment> {
    check_fraction(cfg.top_fraction)?;
    check_one_image(pixels)?;
    // The prompt first: an empty prompt fails before the image tower runs.
    let prompt = prompt_tokens(clip, text, cfg.with_sos)?;
    let pass = VisionPass::run(&clip.model()?.vision, pixels)?;
    finish(&clip.model()?.vision, &pass, prompt, cfg)
}

/// [`align`] from a vision pass already run, so a view that also shows SsVP and the global feature
/// runs the tower once.
pub fn align_pass(
    clip: &LoadedClip,
    pass: &VisionPass,
    text: &TextSource,
    cfg: &AlignConfig,
) -> Result<Alignment> {
    check_fraction(cfg.top_fraction)?;
    check_one_image(&pass.last)?;
    let prompt = prompt_tokens(clip, text, cfg.with_sos)?;
    finish(&clip.model()?.vision, pass, prompt, cfg)
}

fn check_one_image(batch: &Tensor) -> Result<()> {
    let b = batch.dim(0)?;
    if b != 1 {
        return Err(Error::invalid(format!(
            "align takes one image, got a batch of {b}"
        )));
    }
    Ok(())
}

fn finish(
    vision: &VisionTower,
    pass: &VisionPass,
    prompt: PromptTokens,
    cfg: &AlignConfig,
) -> Result<Alignment> {
    let img = image_tokens(vision, pass, cfg.mode, cfg.with_cls)?.squeeze(0)?;
    let sim = SimMatrix::from_tokens(&img, &prompt.tokens[0])?;
    let (s_i, s_t) = scores(&sim, cfg.top_fraction);
    let g = vision.config.grid();
    Ok(Alignment {
        mode: cfg.mode,
        grid: [g, g],
        with_cls: cfg.with_cls,
        with_sos: cfg.with_sos,
        top_fraction: cfg.top_fraction,
        text_tokens: prompt.labels.into_iter().next().unwrap_or_default(),
        sim,
        s_i,
        s_t,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4 image tokens × 3 words.
    fn s() -> SimMatrix {
        #[rustfmt::skip]
        let data = vec![
            0.9, 0.1, 0.2,
            0.3, 0.8, 0.0,
            0.1, 0.2, 0.4,
            -0.5, 0.0, 0.1,
        ];
        SimMatrix::new(4, 3, data).unwrap()
    }

    fn close(a: f32, b: f32) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }

    #[test]
    fn scores_are_means_of_maxima() {
        let s = s();
        assert_eq!(s.row_max(), vec![0.9, 0.8, 0.4, 0.1]);
        assert_eq!(s.col_max(), vec![0.9, 0.8, 0.4]);
        let (si, st) = scores(&s, 1.0);
        close(si, (0.9 + 0.8 + 0.4 + 0.1) / 4.0);
        close(st, (0.9 + 0.8 + 0.4) / 3.0);
        assert_eq!(s.row_argmax(), vec![0, 1, 2, 2]);
        assert_eq!(s.column(1), vec![0.1, 0.8, 0.2, 0.0]);
    }

    #[test]
    fn top_fraction_keeps_the_best_tokens() {
        let s = s();
        // ceil(0.5·4) = 2 image tokens (0.9, 0.8); ceil(0.5·3) = 2 words (0.9, 0.8).
        let (si, st) = scores(&s, 0.5);
        close(si, 0.85);
        close(st, 0.85);
        // ceil(0.25·4) = 1, ceil(0.25·3) = 1: the single best token.
        let (si, st) = scores(&s, 0.25);
        close(si, 0.9);
        close(st, 0.9);
        // 0.26·4 = 1.04 → 2.
        close(scores(&s, 0.26).0, 0.85);
        assert_eq!(kept_count(10, 0.1), 1);
        assert_eq!(kept_count(10, 0.3), 3);
        assert_eq!(kept_count(49, 0.25), 13);
        assert_eq!(kept_count(3, 1e-6), 1);
    }

    #[test]
    fn bad_fractions_and_shapes_are_refused() {
        for f in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(check_fraction(f).is_err(), "{f}");
        }
        assert!(check_fraction(1.0).is_ok());
        assert!(SimMatrix::new(2, 2, vec![0.0; 3]).is_err());
        assert!(SimMatrix::new(0, 2, vec![]).is_err());
    }

    #[test]
    fn maps_skip_the_class_token_row() {
        let a = Alignment {
            mode: AlignMode::Token,
            grid: [1, 3],
            with_cls: true,
            with_sos: false,
            top_fraction: 1.0,
            text_tokens: vec!["a".into(), "b".into(), "c".into()],
            sim: s(),
            s_i: 0.0,
            s_t: 0.0,
        };
        assert_eq!(a.word_map(0).unwrap(), vec![0.3, 0.1, -0.5]);
        assert_eq!(a.argmax_word_map(), vec![1, 2, 2]);
        assert!(a.word_map(3).is_err());
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!(json["sim"].as_array().unwrap().len(), 4);
        assert_eq!(json["sim"][0].as_array().unwrap().len(), 3);
        assert_eq!(json["mode"], "token");
    }
}
