//! FILIP's visual claim as a number: the pointing game on captioned scenes. For every object of every
//! scene, the prompt "a {colour} {shape}." is aligned with the image and the map of its shape word
//! (the mean of that word's token columns) is read: a hit when its highest patch lies on the object
//! (at least a quarter of the patch covered by the object's visible pixels). Also the map's mass inside
//! the object (the map shifted to a zero minimum, weighted by each patch's coverage) and the chance
//! rate of a random patch. Two rules are reported: the strict one above, and the pointing game as the
//! literature plays it (Zhang et al. 2016, "Top-down neural attention by excitation backprop"): the
//! map's peak point (the centre of its highest patch, where the bilinearly upsampled map the app draws
//! peaks) lies on the object's mask within 15 px at 224 px (scaled to the image). Small thin objects (a
//! ring, a star) may cover under a quarter of every patch; `hittable` counts the objects the strict
//! rule can hit at all.

use candle_core::Tensor;
use serde::Serialize;

use super::filip::{align_pass, AlignConfig};
use super::maps::{ImageMaps, MapMethod};
use super::pass::VisionPass;
use super::region::{above_min, mass_inside};
use super::ssvp::{default_k, ssvp_from_pass};
use super::tokens::{AlignMode, TextSource};
use crate::clip::preprocess::preprocess;
use crate::clip::LoadedClip;
use crate::data::scenes::{mask_coverage, Scene, SHAPES};
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
    /// Objects with at least one patch the strict rule counts.
    pub hittable: usize,
    /// The pointing game's rule: the peak point within `tolerance_px` of the mask.
    pub tolerance_px: f32,
    pub point_hits: usize,
    pub point_rate: f64,
    /// The same for a random patch's centre.
    pub point_chance: f64,
    /// SsVP (MP-FGVC's patch selection, default K): the mean share of its K patches that lie on an
    /// object (strict rule), and the same share for K patches picked at random.
    pub ssvp_k: usize,
    pub ssvp_object_share: f64,
    pub random_object_share: f64,
    /// Objects and strict hits per shape word (which words localise), and per size (small, large).
    pub by_shape: Vec<(String, usize, usize)>,
    pub by_size: [(usize, usize); 2],
}

/// The pointing game's tolerance: 15 px at 224 px, scaled to the image.
pub fn tolerance_px(size: usize) -> f32 {
    15.0 * size as f32 / 224.0
}

/// The pointing game's rule for one object: whether the map's peak patch `peak` has its centre within
/// `tol` px of the object's mask, and the share of patches that do (a random patch's chance).
pub fn point_hit(mask: &[bool], size: usize, grid: usize, tol: f32, peak: usize) -> (bool, f64) {
    let near = centres_near_mask(mask, size, grid, tol);
    let share = near.iter().filter(|&&n| n).count() as f64 / near.len() as f64;
    (near[peak], share)
}

/// `total / count`; 0 over nothing.
pub fn mean_over(total: f64, count: usize) -> f64 {
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// Per patch of a `grid`×`grid` layout: whether its centre lies within `tol` px of the mask.
pub fn centres_near_mask(mask: &[bool], size: usize, grid: usize, tol: f32) -> Vec<bool> {
    let on: Vec<(f32, f32)> = (0..size * size)
        .filter(|&p| mask[p])
        .map(|p| ((p % size) as f32 + 0.5, (p / size) as f32 + 0.5))
        .collect();
    let cell = size as f32 / grid as f32;
    (0..grid * grid)
        .map(|k| {
            let (cx, cy) = (
                ((k % grid) as f32 + 0.5) * cell,
                ((k / grid) as f32 + 0.5) * cell,
            );
            on.iter()
                .any(|&(x, y)| (x - cx).powi(2) + (y - cy).powi(2) <= tol * tol)
        })
        .collect()
}

/// The pointing game of `clip` on `scenes` (drawn at the model's input size).
pub fn pointing_game(
    clip: &LoadedClip,
    scenes: &[Scene],
    mode: AlignMode,
    progress: &dyn Progress,
) -> Result<PointingReport> {
    let size = clip.image_size();
    let grid = clip.model()?.config.vision_config.grid();
    let cfg = AlignConfig {
        mode,
        ..AlignConfig::default()
    };
    let (mut objects, mut hits, mut mass, mut chance) = (0usize, 0usize, 0f64, 0f64);
    let (mut hittable, mut point_hits, mut point_chance) = (0usize, 0usize, 0f64);
    let tol = tolerance_px(size);
    let (mut ssvp_share, mut random_share) = (0f64, 0f64);
    let k = default_k(clip.model()?.config.vision_config.num_patches());
    let mut by_shape: Vec<(String, usize, usize)> =
        SHAPES.iter().map(|s| (s.to_string(), 0, 0)).collect();
    let mut by_size = [(0usize, 0usize); 2];
    for (n, scene) in scenes.iter().enumerate() {
        check(progress)?;
        let pass = VisionPass::run(&clip.model()?.vision, &scene_pixels(clip, scene)?)?;
        // Each object's mask and patch coverage, once per scene.
        let masks: Vec<Vec<bool>> = (0..scene.objects.len()).map(|i| scene.mask(i)).collect();
        let covs: Vec<Vec<f32>> = masks.iter().map(|m| mask_coverage(m, size, grid)).collect();
        let on_object: Vec<bool> = (0..grid * grid)
            .map(|p| covs.iter().any(|c| c[p] >= HIT_COVERAGE))
            .collect();
        // SsVP needs a penultimate block.
        let sel = if clip.model()?.vision.layers.len() >= 2 {
            ssvp_from_pass(&clip.model()?.vision, &pass, Some(k))?
        } else {
            vec![]
        };
        if let Some(sel) = sel.first() {
            ssvp_share += sel.indices.iter().filter(|&&p| on_object[p]).count() as f64 / k as f64;
        }
        random_share += on_object.iter().filter(|&&o| o).count() as f64 / on_object.len() as f64;
        for (i, o) in scene.objects.iter().enumerate() {
            let prompt = format!("a {} {}.", o.colour_name(), o.shape_name());
            let a = align_pass(clip, &pass, &TextSource::Text(&prompt), &cfg)?;
            let map = shape_word_map(clip, &a, o.shape_name())?;
            let cov = &covs[i];
            let best = argmax(&map);
            objects += 1;
            let hit = usize::from(cov[best] >= HIT_COVERAGE);
            hits += hit;
            (by_shape[o.shape].1, by_shape[o.shape].2) =
                (by_shape[o.shape].1 + 1, by_shape[o.shape].2 + hit);
            let by = &mut by_size[usize::from(o.large)];
            (by.0, by.1) = (by.0 + 1, by.1 + hit);
            mass += f64::from(mass_inside(&above_min(&map), cov)?);
            chance += cov.iter().filter(|&&c| c >= HIT_COVERAGE).count() as f64 / cov.len() as f64;
            hittable += usize::from(cov.iter().any(|&c| c >= HIT_COVERAGE));
            let (hit, chance) = point_hit(&masks[i], size, grid, tol, best);
            point_hits += usize::from(hit);
            point_chance += chance;
        }
        progress.update("scenes", n + 1, scenes.len());
    }
    let per = |v: f64| mean_over(v, objects);
    Ok(PointingReport {
        mode,
        scenes: scenes.len(),
        objects,
        hits,
        hit_rate: per(hits as f64),
        mean_mass_inside: per(mass),
        chance: per(chance),
        hittable,
        tolerance_px: tol,
        point_hits,
        point_rate: per(point_hits as f64),
        point_chance: per(point_chance),
        ssvp_k: k,
        ssvp_object_share: mean_over(ssvp_share, scenes.len()),
        random_object_share: mean_over(random_share, scenes.len()),
        by_shape,
        by_size,
    })
}

/// The mean map of the shape word's tokens: the word pieces just before the prompt's closing ".".
pub(crate) fn shape_word_map(
    clip: &LoadedClip,
    a: &super::filip::Alignment,
    shape: &str,
) -> Result<Vec<f32>> {
    let cols = word_columns(clip, &a.text_tokens, shape)?;
    let maps: Vec<Vec<f32>> = cols.map(|r| a.word_map(r)).collect::<Result<_>>()?;
    Ok(mean_map(&maps))
}

/// The columns of `word` (a shape, a class name) among a prompt's `tokens`: its pieces before the closing ".".
fn word_columns(
    clip: &LoadedClip,
    tokens: &[String],
    shape: &str,
) -> Result<std::ops::Range<usize>> {
    let pieces = clip.tokenizer()?.encode_words(shape)?.len().max(1);
    let dot = tokens
        .iter()
        .rposition(|t| t.trim() == ".")
        .ok_or_else(|| Error::invalid("the pointing prompt lost its closing period"))?;
    Ok(dot.saturating_sub(pieces)..dot)
}

fn mean_map(maps: &[Vec<f32>]) -> Vec<f32> {
    let n = maps.first().map_or(0, Vec::len);
    (0..n)
        .map(|k| maps.iter().map(|m| m[k]).sum::<f32>() / maps.len() as f32)
        .collect()
}

/// One map method's score in the pointing game.
#[derive(Debug, Clone, Serialize)]
pub struct MethodScore {
    pub method: MapMethod,
    /// The peak within the tolerance of the object's mask.
    pub point_hits: usize,
    pub point_rate: f64,
    /// The strict rule: the peak patch at least a quarter covered by the object.
    pub hits: usize,
    pub hit_rate: f64,
    /// Milliseconds per map, a method run alone: its share of the image's pass and its own work.
    pub ms_per_map: f64,
}

/// The pointing game of several map methods on the same scenes and prompts.
#[derive(Debug, Clone, Serialize)]
pub struct MethodsPointing {
    pub scenes: usize,
    pub objects: usize,
    pub tolerance_px: f32,
    /// A random patch: its centre near the object (the pointing game's baseline), and on it (strict).
    pub point_chance: f64,
    pub chance: f64,
    pub methods: Vec<MethodScore>,
}

/// One image of the pointing game and what to point at in it.
pub struct PointingImage {
    /// `[1, 3, S, S]` at the model's input size.
    pub pixels: Tensor,
    pub targets: Vec<PointingTarget>,
}

/// One object: the prompt naming it, the word(s) of the prompt that name it (just before its closing
/// "."), and its mask over the model's input (`S × S`, row-major).
pub struct PointingTarget {
    pub prompt: String,
    pub word: String,
    pub mask: Vec<bool>,
}

/// A drawn scene as the pointing game reads it: "a {colour} {shape}." per object, the shape word.
pub fn scene_image(clip: &LoadedClip, scene: &Scene) -> Result<PointingImage> {
    Ok(PointingImage {
        pixels: scene_pixels(clip, scene)?,
        targets: scene
            .objects
            .iter()
            .enumerate()
            .map(|(i, o)| PointingTarget {
                prompt: format!("a {} {}.", o.colour_name(), o.shape_name()),
                word: o.shape_name().to_string(),
                mask: scene.mask(i),
            })
            .collect(),
    })
}

/// An image with its mask (`data::masked`) as the pointing game reads it: "a photo of a {class}.",
/// the class's words; the mask goes through the image's own resize and crop.
pub fn masked_image(
    clip: &LoadedClip,
    m: &crate::data::masked::MaskedImage,
) -> Result<PointingImage> {
    use crate::clip::preprocess::{load_image, resize_and_crop};
    let size = clip.image_size();
    let img = load_image(&m.image)?;
    let px = preprocess(&img, &clip.preprocess);
    if px.len() != 3 * size * size {
        return Err(Error::invalid(format!(
            "{}: the model's preprocessing does not give a {size}×{size} input",
            m.image.display()
        )));
    }
    let mask_img = load_image(&m.mask)?;
    if (mask_img.width(), mask_img.height()) != (img.width(), img.height()) {
        return Err(Error::bad_file(
            &m.mask,
            format!(
                "is {}×{}, its image {}×{}",
                mask_img.width(),
                mask_img.height(),
                img.width(),
                img.height()
            ),
            "give the mask the image's size",
        ));
    }
    let mask: Vec<bool> = resize_and_crop(&mask_img, &clip.preprocess)
        .pixels()
        .map(|p| p[0] > 127)
        .collect();
    if !mask.iter().any(|&b| b) {
        return Err(Error::bad_file(
            &m.mask,
            "has no object pixel inside the model's centre crop",
            "mark the object in white, or drop the image from the set",
        ));
    }
    Ok(PointingImage {
        pixels: Tensor::from_vec(px, (1, 3, size, size), &clip.device)?,
        targets: vec![PointingTarget {
            prompt: format!("a photo of a {}.", m.class),
            word: m.class.clone(),
            mask,
        }],
    })
}

/// The pointing game of each of `methods` on `scenes` (drawn at the model's input size): for every
/// object, the prompt "a {colour} {shape}." and the map of its shape word (per-word methods) or of the
/// whole prompt (the others).
pub fn pointing_by_method(
    clip: &LoadedClip,
    scenes: &[Scene],
    methods: &[MapMethod],
    progress: &dyn Progress,
) -> Result<MethodsPointing> {
    pointing_on(
        clip,
        scenes.len(),
        &|i| scene_image(clip, &scenes[i]),
        methods,
        progress,
    )
}

/// The images the pointing game of map methods is played on.
#[derive(Debug, Clone, PartialEq)]
pub enum PointingSet {
    /// `count` captioned scenes of stream `seed` at the model's size (`held_out`: the colour–shape
    /// pairs held out of pretraining may appear).
    Scenes {
        count: usize,
        seed: u64,
        held_out: bool,
    },
    /// The images with masks under a folder (`data::masked`).
    Masked(std::path::PathBuf),
}

/// The pointing game of each of `methods` on `set`: what `pointing --methods` and the app's Evaluate
/// maps play. Scenes are drawn one at a time as their turn comes.
pub fn pointing_of_methods(
    clip: &LoadedClip,
    set: &PointingSet,
    methods: &[MapMethod],
    progress: &dyn Progress,
) -> Result<MethodsPointing> {
    match set {
        PointingSet::Masked(root) => {
            let images = crate::data::masked::masked_images(root)?;
            let image = |i: usize| masked_image(clip, &images[i]);
            pointing_on(clip, images.len(), &image, methods, progress)
        }
        &PointingSet::Scenes {
            count,
            seed,
            held_out,
        } => {
            let cfg = crate::data::scenes::SceneConfig {
                size: clip.image_size() as u32,
                allow_held_out: held_out,
                ..Default::default()
            };
            let image =
                |i: usize| scene_image(clip, &crate::data::scenes::generate(seed, i as u64, &cfg)?);
            pointing_on(clip, count, &image, methods, progress)
        }
    }
}

/// The pointing game of each of `methods` on `count` images, the i-th made by `image(i)` when its
/// turn comes (so a folder is never all in memory).
pub fn pointing_on(
    clip: &LoadedClip,
    count: usize,
    image: &dyn Fn(usize) -> Result<PointingImage>,
    methods: &[MapMethod],
    progress: &dyn Progress,
) -> Result<MethodsPointing> {
    let size = clip.image_size();
    let grid = clip.model()?.config.vision_config.grid();
    let tol = tolerance_px(size);
    let (mut objects, mut point_chance, mut chance) = (0usize, 0f64, 0f64);
    let mut scores: Vec<MethodScore> = methods
        .iter()
        .map(|&method| MethodScore {
            method,
            point_hits: 0,
            point_rate: 0.0,
            hits: 0,
            hit_rate: 0.0,
            ms_per_map: 0.0,
        })
        .collect();
    let mut seconds = vec![0f64; methods.len()];
    for n in 0..count {
        check(progress)?;
        let item = image(n)?;
        let maps_of = ImageMaps::new(clip, &item.pixels, methods)?;
        for (s, t) in seconds.iter_mut().zip(&maps_of.image_seconds) {
            *s += t;
        }
        let prompts: Vec<String> = item.targets.iter().map(|t| t.prompt.clone()).collect();
        // Each method's maps of every object's prompt (the gradient methods in one batch).
        let mut maps = Vec::with_capacity(methods.len());
        for (k, s) in seconds.iter_mut().enumerate() {
            let start = std::time::Instant::now();
            maps.push(maps_of.method_maps_many(k, &prompts)?);
            *s += start.elapsed().as_secs_f64();
        }
        for (i, target) in item.targets.iter().enumerate() {
            let cov = mask_coverage(&target.mask, size, grid);
            let near = centres_near_mask(&target.mask, size, grid, tol);
            objects += 1;
            point_chance += near.iter().filter(|&&x| x).count() as f64 / near.len() as f64;
            chance += cov.iter().filter(|&&c| c >= HIT_COVERAGE).count() as f64 / cov.len() as f64;
            for (k, score) in scores.iter_mut().enumerate() {
                let m = &maps[k][i];
                let map = if m.method.per_word() {
                    let cols = word_columns(clip, &m.targets, &target.word)?;
                    mean_map(&m.maps[cols])
                } else {
                    m.maps[0].clone()
                };
                let peak = argmax(&map);
                score.hits += usize::from(cov[peak] >= HIT_COVERAGE);
                score.point_hits += usize::from(near[peak]);
            }
        }
        progress.update("images", n + 1, count);
    }
    for (score, s) in scores.iter_mut().zip(&seconds) {
        score.point_rate = mean_over(score.point_hits as f64, objects);
        score.hit_rate = mean_over(score.hits as f64, objects);
        score.ms_per_map = 1e3 * mean_over(*s, objects);
    }
    Ok(MethodsPointing {
        scenes: count,
        objects,
        tolerance_px: tol,
        point_chance: mean_over(point_chance, objects),
        chance: mean_over(chance, objects),
        methods: scores,
    })
}

/// A scene's pixels as the model takes them, `[1, 3, S, S]`; the scene must be drawn at its size.
fn scene_pixels(clip: &LoadedClip, scene: &Scene) -> Result<Tensor> {
    let size = clip.image_size();
    if scene.image.width() as usize != size || scene.image.height() as usize != size {
        return Err(Error::invalid(format!(
            "scenes for the pointing game must be drawn at the model's {size} px, not {} px",
            scene.image.width()
        )));
    }
    let px = preprocess(
        &image::DynamicImage::ImageRgb8(scene.image.clone()),
        &clip.preprocess,
    );
    Ok(Tensor::from_vec(px, (1, 3, size, size), &clip.device)?)
}

/// The index of the largest value (the first on ties).
fn argmax(map: &[f32]) -> usize {
    map.iter()
        .enumerate()
        .max_by(|x, y| x.1.total_cmp(y.1))
        .map_or(0, |(k, _)| k)
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
        // Patch centres at (2, 2), (6, 2), (2, 6), (6, 6); the mask spans x < 2, y < 4.
        assert_eq!(
            centres_near_mask(&mask, size, 2, 0.75),
            vec![true, false, false, false]
        );
        assert_eq!(centres_near_mask(&mask, size, 2, 0.6), vec![false; 4]);
        assert_eq!(
            centres_near_mask(&mask, size, 2, 2.6),
            vec![true, false, true, false]
        );
    }
}
