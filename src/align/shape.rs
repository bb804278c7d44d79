//! Does a model see shape, or only colour? Two measures on captioned scenes the model never saw
//! (METHODS §7a):
//! - **same-colour pointing**: in a scene of two or more objects of one colour, differing in shape, the
//!   map of the shape word in "a photo of a {colour} {shape}." must single out the named object. Colour
//!   cannot: a colour detector lights every object alike and picks the named one by chance (1 in the
//!   number of objects).
//! - **shape probe**: a linear probe on the image token at each object's place (the patch its visible
//!   pixels cover most), trained on the objects of some scenes and tested on others', 8 shapes.

use candle_core::Tensor;
use serde::Serialize;

use super::filip::{align_pass, AlignConfig};
use super::pass::VisionPass;
use super::pointing::{mean_over, point_hit, shape_word_map, tolerance_px};
use super::tokens::{image_tokens, AlignMode, TextSource};
use crate::clip::preprocess::preprocess;
use crate::clip::LoadedClip;
use crate::data::scenes::{mask_coverage, Scene, SHAPES};
use crate::error::{Error, Result};
use crate::eval::linear_probe::LinearProbe;
use crate::progress::{check, Progress};

#[derive(Debug, Clone, Serialize)]
pub struct SameColourReport {
    pub mode: AlignMode,
    pub scenes: usize,
    pub objects: usize,
    /// Objects whose shape word's map is higher on them (their best patch) than on every other object.
    pub picks: usize,
    pub pick_rate: f64,
    /// The same for a map that cannot tell the objects apart: the mean of 1 / objects in the scene.
    pub pick_chance: f64,
    /// The pointing game's rule: the map's peak within the tolerance of the named object's mask.
    pub point_hits: usize,
    pub point_rate: f64,
    pub point_chance: f64,
}

fn pixels_of(clip: &LoadedClip, scenes: &[&Scene]) -> Result<Tensor> {
    let size = clip.image_size();
    let mut px = Vec::with_capacity(scenes.len() * 3 * size * size);
    for s in scenes {
        if s.image.width() as usize != size || s.image.height() as usize != size {
            return Err(Error::invalid(format!(
                "scenes must be drawn at the model's {size} px, not {} px",
                s.image.width()
            )));
        }
        px.extend(preprocess(
            &image::DynamicImage::ImageRgb8(s.image.clone()),
            &clip.preprocess,
        ));
    }
    Ok(Tensor::from_vec(
        px,
        (scenes.len(), 3, size, size),
        &clip.device,
    )?)
}

/// The patch an object's visible pixels cover most, and each patch's coverage.
fn object_patch(scene: &Scene, i: usize, grid: usize) -> (usize, Vec<f32>) {
    let size = scene.image.width() as usize;
    let cov = mask_coverage(&scene.mask(i), size, grid);
    let best = cov
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(k, _)| k);
    (best, cov)
}

/// Same-colour pointing of `clip` on `scenes` (see [`crate::data::scenes::same_colour_scenes`]).
pub fn same_colour_pointing(
    clip: &LoadedClip,
    scenes: &[Scene],
    mode: AlignMode,
    progress: &dyn Progress,
) -> Result<SameColourReport> {
    let model = clip.model()?;
    let size = clip.image_size();
    let grid = model.config.vision_config.grid();
    let cfg = AlignConfig {
        mode,
        ..AlignConfig::default()
    };
    let tol = tolerance_px(size);
    let (mut objects, mut picks, mut pick_chance) = (0usize, 0usize, 0f64);
    let (mut point_hits, mut point_chance) = (0usize, 0f64);
    for (n, scene) in scenes.iter().enumerate() {
        check(progress)?;
        let colour = scene.objects.first().map(|o| o.colour);
        if scene.objects.len() < 2 || scene.objects.iter().any(|o| Some(o.colour) != colour) {
            return Err(Error::invalid(format!(
                "same-colour pointing takes scenes of two or more objects of one colour (scene {n} has {})",
                scene.objects.len()
            )));
        }
        let pass = VisionPass::run(&model.vision, &pixels_of(clip, &[scene])?)?;
        let masks: Vec<Vec<bool>> = (0..scene.objects.len()).map(|i| scene.mask(i)).collect();
        // Each object's patches: those it covers at least a quarter of, else its most covered one.
        let patches: Vec<Vec<usize>> = (0..scene.objects.len())
            .map(|i| {
                let (best, cov) = object_patch(scene, i, grid);
                let on: Vec<usize> = (0..cov.len()).filter(|&k| cov[k] >= 0.25).collect();
                if on.is_empty() {
                    vec![best]
                } else {
                    on
                }
            })
            .collect();
        for (i, o) in scene.objects.iter().enumerate() {
            let prompt = format!("a photo of a {} {}.", o.colour_name(), o.shape_name());
            let a = align_pass(clip, &pass, &TextSource::Text(&prompt), &cfg)?;
            let map = shape_word_map(clip, &a, o.shape_name())?;
            let top = |ps: &[usize]| ps.iter().map(|&k| map[k]).fold(f32::NEG_INFINITY, f32::max);
            let mine = top(&patches[i]);
            let others_below = (0..scene.objects.len())
                .filter(|&j| j != i)
                .all(|j| top(&patches[j]) < mine);
            objects += 1;
            picks += usize::from(others_below);
            pick_chance += 1.0 / scene.objects.len() as f64;
            let peak = map
                .iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map_or(0, |(k, _)| k);
            let (hit, chance) = point_hit(&masks[i], size, grid, tol, peak);
            point_hits += usize::from(hit);
            point_chance += chance;
        }
        progress.update("same-colour scenes", n + 1, scenes.len());
    }
    let per = |v: f64| mean_over(v, objects);
    Ok(SameColourReport {
        mode,
        scenes: scenes.len(),
        objects,
        picks,
        pick_rate: per(picks as f64),
        pick_chance: per(pick_chance),
        point_hits,
        point_rate: per(point_hits as f64),
        point_chance: per(point_chance),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ShapeProbeReport {
    pub mode: AlignMode,
    pub train_objects: usize,
    pub test_objects: usize,
    /// Test accuracy over the 8 shapes.
    pub accuracy: f64,
    pub chance: f64,
    /// The probe's L2 strength, chosen on a fifth of the training objects.
    pub lambda: f64,
    /// Per shape: test objects and how many were right.
    pub by_shape: Vec<(String, usize, usize)>,
}

/// The image token at every object's place and its shape, over `scenes`.
fn object_tokens(
    clip: &LoadedClip,
    scenes: &[Scene],
    mode: AlignMode,
    progress: &dyn Progress,
    what: &str,
) -> Result<(Tensor, Vec<usize>)> {
    let model = clip.model()?;
    let grid = model.config.vision_config.grid();
    let (mut rows, mut labels) = (vec![], vec![]);
    for (c, chunk) in scenes.chunks(32).enumerate() {
        check(progress)?;
        let refs: Vec<&Scene> = chunk.iter().collect();
        let pass = VisionPass::run(&model.vision, &pixels_of(clip, &refs)?)?;
        let tokens = image_tokens(&model.vision, &pass, mode, false)?;
        for (b, scene) in chunk.iter().enumerate() {
            for (i, o) in scene.objects.iter().enumerate() {
                let (patch, cov) = object_patch(scene, i, grid);
                if cov[patch] <= 0.0 {
                    continue; // hidden behind later objects
                }
                rows.push(tokens.get(b)?.get(patch)?);
                labels.push(o.shape);
            }
        }
        progress.update(what, (c * 32 + chunk.len()).min(scenes.len()), scenes.len());
    }
    if rows.is_empty() {
        return Err(Error::invalid("the shape probe found no visible objects"));
    }
    Ok((Tensor::stack(&rows, 0)?, labels))
}

/// The shape probe: fitted on `train`'s objects (a fifth held back to choose the L2 strength), tested on
/// `test`'s.
pub fn shape_probe(
    clip: &LoadedClip,
    train: &[Scene],
    test: &[Scene],
    mode: AlignMode,
    progress: &dyn Progress,
) -> Result<ShapeProbeReport> {
    let (x, y) = object_tokens(clip, train, mode, progress, "probe: training scenes")?;
    let (xt, yt) = object_tokens(clip, test, mode, progress, "probe: test scenes")?;
    let n = y.len();
    let fit = n - n / 5;
    if fit == 0 || fit == n {
        return Err(Error::invalid(format!(
            "the shape probe needs at least 5 training objects (got {n})"
        )));
    }
    let (probe, _) = LinearProbe::search(
        (&x.narrow(0, 0, fit)?, &y[..fit]),
        (&x.narrow(0, fit, n - fit)?, &y[fit..]),
        SHAPES.len(),
        300,
        progress,
    )?;
    // Refitted on every training object at the chosen strength.
    let probe = LinearProbe::fit(&x, &y, SHAPES.len(), probe.lambda, 300)?;
    let pred: Vec<u32> = probe
        .logits(&xt)?
        .argmax(candle_core::D::Minus1)?
        .to_vec1()?;
    let mut by_shape: Vec<(String, usize, usize)> =
        SHAPES.iter().map(|s| (s.to_string(), 0, 0)).collect();
    for (&p, &l) in pred.iter().zip(&yt) {
        by_shape[l].1 += 1;
        by_shape[l].2 += usize::from(p as usize == l);
    }
    let right: usize = by_shape.iter().map(|s| s.2).sum();
    Ok(ShapeProbeReport {
        mode,
        train_objects: n,
        test_objects: yt.len(),
        accuracy: right as f64 / yt.len() as f64,
        chance: 1.0 / SHAPES.len() as f64,
        lambda: probe.lambda,
        by_shape,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ShapeOnlyZeroShot {
    pub images: usize,
    pub template: String,
    pub global: f64,
    pub tokenwise: f64,
    pub ssvp: Option<f64>,
    pub chance: f64,
}

/// Zero-shot over classes that differ only in shape (the `shapes` scene set: one object, any colour,
/// `per_class` test images a shape), prompted "a photo of a {shape}.", scored by the pooled features and
/// token-wise. The set is written to a scratch folder and removed.
pub fn shape_only_zero_shot(
    clip: &LoadedClip,
    per_class: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<ShapeOnlyZeroShot> {
    use super::classify::{compare_accuracy, ClassPrompts, CompareConfig};
    use crate::data::scene_sets::{write_scene_set, SceneSet};
    let scratch = std::env::temp_dir().join(format!(
        "promptscope-shape-only-{}-{seed}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    let size = clip.image_size() as u32;
    let result = (|| {
        write_scene_set(&scratch, SceneSet::Shapes, (0, 0, per_class), size, seed)?;
        let ds = crate::data::DatasetFolder::open(&scratch)?;
        let template = "a photo of a {}.";
        let r = compare_accuracy(
            clip,
            ds.eval_samples(),
            &ClassPrompts::Template {
                template,
                class_names: &ds.class_names,
            },
            &CompareConfig::default(),
            progress,
        )?;
        Ok(ShapeOnlyZeroShot {
            images: r.images,
            template: template.into(),
            global: r.global_accuracy,
            tokenwise: r.tokenwise_accuracy,
            ssvp: r.ssvp_accuracy,
            chance: 1.0 / ds.num_classes() as f64,
        })
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
