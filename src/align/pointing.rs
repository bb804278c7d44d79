//! FILIP's visual claim as a number: the pointing game on captioned scenes. For every object of every
//! scene, the prompt "a {colour} {shape}." is aligned with the image and the map of its shape word
//! (the mean of that word's token columns) is read: a hit when its highest patch lies on the object
//! (at least a quarter of the patch covered by the object's visible pixels). Also the map's mass inside
//! the object (the map shifted to a zero minimum, weighted by each patch's coverage) and the chance
//! rate of a random patch.

use candle_core::Tensor;
use serde::Serialize;

use super::filip::{align_pass, AlignConfig};
use super::pass::VisionPass;
use super::region::{above_min, mass_inside};
use super::tokens::{AlignMode, TextSource};
use crate::clip::preprocess::preprocess;
use crate::clip::LoadedClip;
use crate::data::scenes::Scene;
use crate::error::{Error, Result};
use crate::progress::{check, Progress};

/// The share of a patch the object must cover for a pointer there to count.
pub const HIT_COVERAGE: f32 = 0.25;

#[derive(Debug, Clone, Serialize)]
pub struct PointingReport {
    pub mode: AlignMode,
    pub scenes: usize,
    pub objects: usize,
    pub hits: usize,
    pub hit_rate: f64,
    /// Mean over objects of the map's mass on the object's patches.
    pub mean_mass_inside: f64,
    /// Mean over objects of the share of patches that would count as a hit.
    pub chance: f64,
}

/// Per patch of a `grid`×`grid` layout over a `size`×`size` mask: the share of its pixels in the mask.
pub fn mask_coverage(mask: &[bool], size: usize, grid: usize) -> Vec<f32> {
    let mut cov = vec![0f32; grid * grid];
    for y in 0..size {
        for x in 0..size {
            if mask[y * size + x] {
                cov[(y * grid / size) * grid + x * grid / size] += 1.0;
            }
        }
    }
    let per_patch = (size * size) as f32 / (grid * grid) as f32;
    cov.iter().map(|c| c / per_patch).collect()
}

/// The pointing game of `clip` on `scenes` (drawn at the model's input size).
pub fn pointing_game(clip: &LoadedClip, scenes: &[Scene], mode: AlignMode, progress: &dyn Progress) -> Result<PointingReport> {
    let size = clip.model.config.vision_config.image_size;
    let grid = clip.model.config.vision_config.grid();
    let cfg = AlignConfig { mode, ..AlignConfig::default() };
    let (mut objects, mut hits, mut mass, mut chance) = (0usize, 0usize, 0f64, 0f64);
    for (n, scene) in scenes.iter().enumerate() {
        check(progress)?;
        if scene.image.width() as usize != size || scene.image.height() as usize != size {
            return Err(Error::invalid(format!("scenes for the pointing game must be drawn at the model's {size} px, not {} px", scene.image.width())));
        }
        let px = preprocess(&image::DynamicImage::ImageRgb8(scene.image.clone()), &clip.preprocess);
        let pass = VisionPass::run(&clip.model.vision, &Tensor::from_vec(px, (1, 3, size, size), &clip.device)?)?;
        for (i, o) in scene.objects.iter().enumerate() {
            let prompt = format!("a {} {}.", o.colour_name(), o.shape_name());
            let a = align_pass(clip, &pass, &TextSource::Text(&prompt), &cfg)?;
            let map = shape_word_map(clip, &a, o.shape_name())?;
            let cov = mask_coverage(&scene.mask(i), size, grid);
            let best = map.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map_or(0, |(k, _)| k);
            objects += 1;
            hits += usize::from(cov[best] >= HIT_COVERAGE);
            mass += f64::from(mass_inside(&above_min(&map), &cov)?);
            chance += cov.iter().filter(|&&c| c >= HIT_COVERAGE).count() as f64 / cov.len() as f64;
        }
        progress.update("scenes", n + 1, scenes.len());
    }
    let per = |v: f64| if objects == 0 { 0.0 } else { v / objects as f64 };
    Ok(PointingReport { mode, scenes: scenes.len(), objects, hits, hit_rate: per(hits as f64), mean_mass_inside: per(mass), chance: per(chance) })
}

/// The mean map of the shape word's tokens: the word pieces just before the prompt's closing ".".
fn shape_word_map(clip: &LoadedClip, a: &super::filip::Alignment, shape: &str) -> Result<Vec<f32>> {
    let pieces = clip.tokenizer.encode_words(shape)?.len().max(1);
    let dot = a.text_tokens.iter().rposition(|t| t.trim() == ".").ok_or_else(|| Error::invalid("the pointing prompt lost its closing period"))?;
    let cols: Vec<usize> = (dot.saturating_sub(pieces)..dot).collect();
    let maps: Vec<Vec<f32>> = cols.iter().map(|&r| a.word_map(r)).collect::<Result<_>>()?;
    let n = maps[0].len();
    Ok((0..n).map(|k| maps.iter().map(|m| m[k]).sum::<f32>() / maps.len() as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_counts_the_mask_per_patch() {
        let size = 8;
        let mut mask = vec![false; 64];
        for y in 0..4 {
            for x in 0..2 {
                mask[y * size + x] = true;
            }
        }
        let cov = mask_coverage(&mask, size, 2);
        assert_eq!(cov, vec![0.5, 0.0, 0.0, 0.0]);
    }
}
