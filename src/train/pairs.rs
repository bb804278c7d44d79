//! Where pretraining's batches come from: pairs read once into memory (a folder of images and captions),
//! or captioned scenes drawn afresh every epoch from (seed, epoch, index), the next batch rendered on a
//! worker thread while the current step runs, so memory does not grow with the number of pairs. A scene
//! stream also makes colour insufficient within a batch (METHODS §7a): minimal-pair twins beside their
//! scenes and one shape-swapped caption per image as an extra text negative (NegCLIP).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::clip::preprocess::preprocess;
use crate::clip::{ClipTokenizer, PreprocessConfig};
use crate::data::scenes::{check_shares, generate_variant, SceneConfig, ShapeLevers, Variant};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// One step's data: `b` images, their `b` captions (caption i belongs to image i), and captions no
/// image of the batch belongs to (hard negatives: they only enlarge each image's choice of captions).
#[derive(Debug)]
pub struct PairBatch {
    /// `[b, 3, S, S]`, as the vision tower takes them.
    pub pixels: Tensor,
    pub ids: Vec<Vec<u32>>,
    pub negatives: Vec<Vec<u32>>,
    /// What each image's patches show, `[b, grid²]` row-major (the shape index, or
    /// [`crate::data::scenes::BACKGROUND_PATCH`]): drawn scenes know it, a folder of pairs does not.
    pub patch_shapes: Option<Vec<u32>>,
}

impl PairBatch {
    /// Every caption the text tower reads: the batch's own, then the negatives.
    pub fn all_ids(&self) -> Vec<Vec<u32>> {
        self.ids.iter().chain(&self.negatives).cloned().collect()
    }
}

/// A pretraining set as the epoch loop indexes it.
pub trait PairSource: Send + Sync {
    /// Pairs per epoch.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The pairs `rows` as drawn in `epoch`. A streamed source cannot be indexed: it gives the next
    /// `rows.len()` pairs of the epoch's order.
    fn batch(&self, epoch: usize, rows: &[usize]) -> Result<PairBatch>;
    /// `rows` will be asked for next: a source that draws its pairs may start now.
    fn prefetch(&self, _epoch: usize, _rows: &[usize]) {}
    /// The samples it could not use so far, where it reads data that may be broken (shards).
    fn skipped(&self) -> Option<crate::data::webdataset::Skipped> {
        None
    }
}

/// The pairs as the towers take them, all in memory: pixels `[N, 3, S, S]` and each caption's token ids.
pub struct PairTensors {
    pub pixels: Tensor,
    pub ids: Vec<Vec<u32>>,
}

impl PairTensors {
    /// `n` generated scenes (stream `seed`, no levers) as in-memory pairs for a model of `config`:
    /// pixels as the model takes them and each caption's ids (what `pretrain` feeds its steps, without
    /// the files; the benches' and tests' batch).
    pub fn scenes(config: &crate::clip::ClipConfig, n: usize, seed: u64) -> Result<Self> {
        use crate::data::scenes::generate;
        let size = config.vision_config.image_size;
        let cfg = SceneConfig {
            size: size as u32,
            ..SceneConfig::default()
        };
        let scenes = (0..n)
            .map(|i| generate(seed, i as u64, &cfg))
            .collect::<Result<Vec<_>>>()?;
        let pre = PreprocessConfig::clip(size);
        let px: Vec<f32> = scenes
            .iter()
            .flat_map(|s| preprocess(&image::DynamicImage::ImageRgb8(s.image.clone()), &pre))
            .collect();
        let pixels = Tensor::from_vec(px, (n, 3, size, size), &Device::Cpu)?;
        let tok = ClipTokenizer::bundled(config.text_config.max_position_embeddings)?;
        let captions: Vec<String> = scenes.into_iter().map(|s| s.caption).collect();
        let ids = tok.encode_batch(&captions)?;
        Ok(Self { pixels, ids })
    }
}

impl PairSource for PairTensors {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn batch(&self, _epoch: usize, rows: &[usize]) -> Result<PairBatch> {
        if self.ids.len() != self.pixels.dim(0)? {
            return Err(Error::invalid(format!(
                "pretraining needs a caption per image ({} images, {} captions)",
                self.pixels.dim(0)?,
                self.ids.len()
            )));
        }
        let dev = self.pixels.device();
        let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        Ok(PairBatch {
            pixels: self
                .pixels
                .index_select(&Tensor::new(idx.as_slice(), dev)?, 0)?,
            ids: rows.iter().map(|&r| self.ids[r].clone()).collect(),
            negatives: vec![],
            patch_shapes: None,
        })
    }
}

/// What a scene stream draws: the scenes' world and levers, and the batch levers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamRecipe {
    /// Scenes per epoch (each epoch draws new ones).
    pub count: usize,
    pub seed: u64,
    pub max_objects: usize,
    pub levers: ShapeLevers,
    /// The share of a batch's slot pairs whose second slot is the first scene's twin.
    pub minimal_pairs: f64,
    /// The share of twins that permute colours (the rest change shapes).
    pub hue_twins: f64,
    /// One shape-swapped caption per image as an extra text negative (images whose shape twin is in
    /// the batch already have it).
    pub hard_negatives: bool,
}

impl StreamRecipe {
    /// The recipe of the shape-aware demo models.
    pub fn shape_recipe(count: usize, seed: u64) -> Self {
        Self {
            count,
            seed,
            max_objects: 3,
            levers: ShapeLevers::shape_recipe(),
            minimal_pairs: 0.5,
            hue_twins: 0.25,
            hard_negatives: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.levers.validate()?;
        if self.count < 2 || self.max_objects == 0 {
            return Err(Error::invalid(format!(
                "a scene stream needs at least 2 scenes an epoch and 1 object a scene (got {} and {})",
                self.count, self.max_objects
            )));
        }
        check_shares(&[
            ("minimal-pairs", self.minimal_pairs),
            ("hue-twins", self.hue_twins),
        ])
    }
}

/// A batch drawn off the step's thread: pixels and captions, made into tensors where they are used.
struct Drawn {
    pixels: Vec<f32>,
    ids: Vec<Vec<u32>>,
    negatives: Vec<Vec<u32>>,
    patch_shapes: Vec<u32>,
}

struct StreamWorld {
    recipe: StreamRecipe,
    scenes: SceneConfig,
    tokenizer: ClipTokenizer,
    preprocess: PreprocessConfig,
    /// The model's patch grid side, for the scenes' patch labels.
    grid: usize,
}

/// One slot's scene as drawn: pixels, caption, its hard negative, its patch labels.
type DrawnScene = (Vec<f32>, String, Option<String>, Vec<u32>);

/// A batch being drawn, by (epoch, rows).
type Pending = ((usize, Vec<usize>), JoinHandle<Result<Drawn>>);

/// Scenes drawn as they are needed. The same (recipe, epoch, rows) always gives the same batch, so a
/// resumed run sees the data it would have seen.
pub struct SceneStream {
    world: Arc<StreamWorld>,
    size: usize,
    device: Device,
    /// Batches being drawn, oldest first: the loop announces the next batch before the step takes the
    /// current one, so two can be in flight.
    pending: Mutex<Vec<Pending>>,
}

impl SceneStream {
    /// Scenes at `image_size` px for a model whose patch grid is `grid`×`grid`.
    pub fn new(
        recipe: StreamRecipe,
        image_size: usize,
        grid: usize,
        tokenizer: ClipTokenizer,
        preprocess: PreprocessConfig,
        device: &Device,
    ) -> Result<Self> {
        recipe.validate()?;
        let scenes = SceneConfig {
            size: image_size as u32,
            max_objects: recipe.max_objects,
            levers: recipe.levers,
            ..SceneConfig::default()
        };
        Ok(Self {
            world: Arc::new(StreamWorld {
                recipe,
                scenes,
                tokenizer,
                preprocess,
                grid: grid.max(1),
            }),
            size: image_size,
            device: device.clone(),
            pending: Mutex::new(Vec::new()),
        })
    }

    pub fn recipe(&self) -> &StreamRecipe {
        &self.world.recipe
    }

    fn take_pending(&self, key: &(usize, Vec<usize>)) -> Option<JoinHandle<Result<Drawn>>> {
        let mut pending = self.pending.lock().ok()?;
        let at = pending.iter().position(|(k, _)| k == key)?;
        Some(pending.remove(at).1)
    }
}

impl StreamWorld {
    /// The stream position of epoch `epoch`: every epoch draws other scenes from the same indices.
    fn epoch_seed(&self, epoch: usize) -> u64 {
        self.recipe.seed ^ (epoch as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f)
    }

    /// What slot `i` of a batch holds: scene `rows[i]`, or the twin of the scene in slot `i − 1` (scene
    /// `rows[i]` then sits this epoch out; every epoch's scenes are new anyway).
    fn slots(&self, epoch: usize, rows: &[usize]) -> Vec<(usize, Variant)> {
        let seed = self.epoch_seed(epoch);
        let mut out: Vec<(usize, Variant)> = rows.iter().map(|&r| (r, Variant::Original)).collect();
        for i in (1..rows.len()).step_by(2) {
            let mut rng = Rng::new(seed ^ (rows[i - 1] as u64).wrapping_mul(0xe703_7ed1_a0b4_28db));
            let u = |rng: &mut Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if self.recipe.minimal_pairs > 0.0 && u(&mut rng) < self.recipe.minimal_pairs {
                let kind = if u(&mut rng) < self.recipe.hue_twins {
                    Variant::HuePermuted
                } else {
                    Variant::ShapeSwap
                };
                out[i] = (rows[i - 1], kind);
            }
        }
        out
    }

    fn draw(&self, epoch: usize, rows: &[usize]) -> Result<Drawn> {
        let seed = self.epoch_seed(epoch);
        let slots = self.slots(epoch, rows);
        let drawn: Vec<DrawnScene> = slots
            .par_iter()
            .enumerate()
            .map(|(i, &(row, variant))| {
                let scene = generate_variant(seed, row as u64, &self.scenes, variant)?;
                let labels = scene.patch_shapes(self.grid);
                let pixels = preprocess(
                    &image::DynamicImage::ImageRgb8(scene.image),
                    &self.preprocess,
                );
                // Its shape twin's caption, unless that twin is in the batch already (a twin's own
                // negative would be its scene's caption, which the batch holds too).
                let twin_here = slots.get(i + 1) == Some(&(row, Variant::ShapeSwap));
                let negative =
                    if self.recipe.hard_negatives && variant == Variant::Original && !twin_here {
                        Some(
                            generate_variant(seed, row as u64, &self.scenes, Variant::ShapeSwap)?
                                .caption,
                        )
                    } else {
                        None
                    };
                Ok((pixels, scene.caption, negative, labels))
            })
            .collect::<Result<_>>()?;
        let mut pixels = Vec::with_capacity(drawn.len() * drawn.first().map_or(0, |d| d.0.len()));
        let (mut captions, mut negatives, mut patch_shapes) = (vec![], vec![], vec![]);
        for (px, caption, negative, labels) in drawn {
            pixels.extend(px);
            captions.push(caption);
            negatives.extend(negative);
            patch_shapes.extend(labels);
        }
        Ok(Drawn {
            pixels,
            ids: self.tokenizer.encode_batch(&captions)?,
            negatives: self.tokenizer.encode_batch(&negatives)?,
            patch_shapes,
        })
    }
}

impl PairSource for SceneStream {
    fn len(&self) -> usize {
        self.world.recipe.count
    }

    fn batch(&self, epoch: usize, rows: &[usize]) -> Result<PairBatch> {
        if let Some(&r) = rows.iter().find(|&&r| r >= self.len()) {
            return Err(Error::invalid(format!(
                "scene {r} asked of a stream of {} a epoch",
                self.len()
            )));
        }
        let key = (epoch, rows.to_vec());
        let drawn = match self.take_pending(&key) {
            Some(handle) => handle
                .join()
                .map_err(|_| Error::invalid("the scene-drawing thread panicked"))??,
            None => self.world.draw(epoch, rows)?,
        };
        let b = rows.len();
        Ok(PairBatch {
            pixels: Tensor::from_vec(drawn.pixels, (b, 3, self.size, self.size), &self.device)?,
            ids: drawn.ids,
            negatives: drawn.negatives,
            patch_shapes: Some(drawn.patch_shapes),
        })
    }

    fn prefetch(&self, epoch: usize, rows: &[usize]) {
        let world = Arc::clone(&self.world);
        let key = (epoch, rows.to_vec());
        let job = key.1.clone();
        let handle = std::thread::spawn(move || world.draw(epoch, &job));
        if let Ok(mut pending) = self.pending.lock() {
            pending.push((key, handle));
            // Announced and never asked for (a stopped run): dropped, its thread finishes on its own.
            if pending.len() > 2 {
                pending.remove(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(recipe: StreamRecipe) -> SceneStream {
        SceneStream::new(
            recipe,
            64,
            8,
            ClipTokenizer::bundled(77).unwrap(),
            PreprocessConfig::clip(64),
            &Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn a_scene_stream_draws_new_scenes_each_epoch_with_twins_and_negatives_the_same_every_time() {
        // A billion scenes an epoch cost nothing until drawn: memory is a batch, whatever the count.
        let s = stream(StreamRecipe::shape_recipe(1_000_000_000, 7));
        assert_eq!(s.len(), 1_000_000_000);
        let rows: Vec<usize> = (0..16).map(|i| i * 7919).collect();
        let a = s.batch(0, &rows).unwrap();
        assert_eq!(a.pixels.dims(), &[16, 3, 64, 64]);
        assert_eq!(a.ids.len(), 16);
        // The same (epoch, rows): the same batch, whether drawn beside the step or on demand.
        s.prefetch(0, &rows);
        let b = s.batch(0, &rows).unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(flat(&a.pixels), flat(&b.pixels));
        assert_eq!((&a.ids, &a.negatives), (&b.ids, &b.negatives));
        // Every patch of every image labelled (8×8 patches of 8 px), the same both ways, some on objects.
        let labels = a
            .patch_shapes
            .as_ref()
            .expect("drawn scenes label their patches");
        assert_eq!(labels.len(), 16 * 64);
        assert_eq!(a.patch_shapes, b.patch_shapes);
        let on_objects = labels
            .iter()
            .filter(|&&l| l != crate::data::scenes::BACKGROUND_PATCH)
            .count();
        assert!((16..16 * 64 / 2).contains(&on_objects), "{on_objects}");
        // Another epoch: other scenes at the same indices.
        let c = s.batch(1, &rows).unwrap();
        assert_ne!(a.ids, c.ids);
        // Twins sit beside their scenes; every image without its shape twin in the batch has a
        // shape-swapped negative, none equal to a caption of the batch.
        let world = &s.world;
        let slots = world.slots(0, &rows);
        let twins = slots
            .iter()
            .filter(|(_, v)| *v != Variant::Original)
            .count();
        assert!(
            (2..=7).contains(&twins),
            "{twins} twins in 8 slot pairs at a share of 0.5"
        );
        for (i, &(row, v)) in slots.iter().enumerate() {
            if v != Variant::Original {
                assert_eq!(row, rows[i - 1], "a twin follows its scene");
            }
        }
        let with_negative = slots
            .iter()
            .enumerate()
            .filter(|&(i, &(row, v))| {
                v == Variant::Original && slots.get(i + 1) != Some(&(row, Variant::ShapeSwap))
            })
            .count();
        assert_eq!(a.negatives.len(), with_negative);
        assert!(a.negatives.iter().all(|n| !a.ids.contains(n)));
        assert_eq!(a.all_ids().len(), 16 + with_negative);

        // Plain scenes: what a folder of the first demo models' pairs held, no twins, no negatives.
        let plain = stream(StreamRecipe {
            levers: ShapeLevers::default(),
            minimal_pairs: 0.0,
            hard_negatives: false,
            ..StreamRecipe::shape_recipe(100, 7)
        });
        let p = plain
            .batch(0, &rows[..4].iter().map(|r| r % 100).collect::<Vec<_>>())
            .unwrap();
        assert!(p.negatives.is_empty());
        assert!(plain
            .batch(0, &[100])
            .unwrap_err()
            .to_string()
            .contains("scene 100"));
        let bad = StreamRecipe {
            minimal_pairs: 2.0,
            ..StreamRecipe::shape_recipe(100, 7)
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("minimal-pairs"));
    }
}
