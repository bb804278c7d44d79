//! The image-feature cache. CoOp freezes the image tower, so the features of every (image, view) pair
//! are fixed: we compute them once, keep them on disk keyed by everything they depend on, and reuse them
//! across epochs, runs and seeds of the same data.
//!
//! A cache file is one safetensors file, `<cache_dir>/<key>.safetensors`, holding the `[N, P]` features.
//! The key is a sha256 over the model (a fingerprint of its files), the preprocessing, the augmentation,
//! the number of views, the seed, and each sample's file content and label, in order; so editing an image,
//! relabelling it or swapping the checkpoint can never serve stale features, while moving or renaming the
//! dataset folder keeps the cache valid.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use candle_core::{DType, Device, Tensor};
use image::DynamicImage;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::clip::encode::image_features;
use crate::clip::preprocess::{load_image, preprocess};
use crate::clip::{LoadedClip, PreprocessConfig};
use crate::data::augment::{augment, view_seed};
use crate::data::Sample;
use crate::error::{Error, Result};
use crate::progress::{check, Progress};
use crate::rng::Rng;

pub use crate::clip::encode::BATCH;
/// Progress stage while augmented views are encoded (eval views report `encode`'s "images").
pub const AUGMENTED_STAGE: &str = "augmented views";
/// Progress stage reported (as done) when the features came from the cache.
pub const CACHED_STAGE: &str = "image features (cached)";

/// Bumped whenever the stored features would change for the same inputs (augmentation, file layout).
const FORMAT: &str = "promptscope-features-v1";
/// Part of the key, so a change to the augmentation recipe cannot reuse old views.
const AUGMENTATION: &str = "RandomResizedCrop(scale=(0.08,1.0),ratio=(3/4,4/3),bicubic-pil)+HorizontalFlip(0.5);view_seed(seed,image,view)";
const FEATURES: &str = "features";

/// How one row's pixels are made from its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The model's own preprocessing (short-side resize, centre crop): what evaluation sees.
    Eval,
    /// CoOp's training augmentation, seeded by (run seed, image index, `index`).
    Augmented { index: u32 },
}

impl View {
    /// `[3, size, size]` floats of this view of image number `image` of a run seeded with `seed`.
    pub fn pixels(
        self,
        img: &DynamicImage,
        cfg: &PreprocessConfig,
        size: usize,
        seed: u64,
        image: usize,
    ) -> Vec<f32> {
        match self {
            View::Eval => preprocess(img, cfg),
            View::Augmented { index } => {
                augment(img, cfg, size, &mut Rng::new(view_seed(seed, image, index)))
            }
        }
    }

    /// The image and view of feature row `row` when each image has `views` views (0 = the eval view).
    pub fn of_row(views: usize, row: usize) -> (usize, View) {
        match row.checked_div(views) {
            None => (row, View::Eval),
            Some(image) => (
                image,
                View::Augmented {
                    index: (row % views) as u32,
                },
            ),
        }
    }
}

pub struct FeatureSet {
    /// `[N, P]` projected, not normalised, on the model's device; rows image-major (image 0's views, then
    /// image 1's, …).
    pub feats: Tensor,
    /// The label of each row (each sample's label repeated `views_per_image` times).
    pub labels: Vec<usize>,
    pub views_per_image: usize,
}

impl FeatureSet {
    pub fn num_images(&self) -> usize {
        self.labels.len() / self.views_per_image.max(1)
    }

    /// The label of image `i`.
    pub fn label_of_image(&self, i: usize) -> usize {
        self.labels[i * self.views_per_image.max(1)]
    }

    /// One row per image, its first view `[N, P]`: what evaluation scores.
    pub fn first_views(&self) -> Result<Tensor> {
        if self.views_per_image <= 1 {
            return Ok(self.feats.clone());
        }
        let idx: Vec<u32> = (0..self.num_images())
            .map(|i| (i * self.views_per_image) as u32)
            .collect();
        Ok(self
            .feats
            .index_select(&Tensor::new(idx.as_slice(), self.feats.device())?, 0)?)
    }

    /// Each image's label, in the order of [`Self::first_views`].
    pub fn image_labels(&self) -> Vec<usize> {
        (0..self.num_images())
            .map(|i| self.label_of_image(i))
            .collect()
    }

    /// The share of images whose highest logit (one row per image, as [`Self::first_views`]) is their
    /// label; 0 for an empty set.
    pub fn accuracy_of(&self, logits: &Tensor) -> Result<f64> {
        let n = self.num_images();
        if n == 0 {
            return Ok(0.0);
        }
        let pred: Vec<u32> = logits.argmax(candle_core::D::Minus1)?.to_vec1()?;
        Ok(pred
            .iter()
            .enumerate()
            .filter(|(i, p)| **p as usize == self.label_of_image(*i))
            .count() as f64
            / n as f64)
    }
}

/// The image features of `samples`: the eval view when `views == 0`, else `views` augmented views per
/// image. With `cache_dir`, a cached copy is used when present and a fresh result is stored; the cache
/// is an optimisation, so a corrupt or unwritable cache only warns on stderr.
///
/// Eval-view features do not depend on `seed`, so they are cached under one key for every seed.
pub fn extract(
    clip: &LoadedClip,
    samples: &[Sample],
    views: usize,
    seed: u64,
    cache_dir: Option<&Path>,
    progress: &dyn Progress,
) -> Result<FeatureSet> {
    let per_image = views.max(1);
    let labels: Vec<usize> = samples
        .iter()
        .flat_map(|s| std::iter::repeat_n(s.label, per_image))
        .collect();
    let rows = labels.len();
    let dim = clip.projection_dim();
    if samples.is_empty() {
        let feats = Tensor::zeros((0, dim), DType::F32, &clip.device)?;
        return Ok(FeatureSet {
            feats,
            labels,
            views_per_image: per_image,
        });
    }
    let cache_file = match cache_dir {
        Some(dir) => {
            let key = cache_key(clip, samples, views, seed)?;
            let file = dir.join(format!("{key}.safetensors"));
            if let Some(feats) = load_cached(&file, &key, rows, dim, &clip.device) {
                progress.update(CACHED_STAGE, rows, rows);
                return Ok(FeatureSet {
                    feats,
                    labels,
                    views_per_image: per_image,
                });
            }
            Some((file, key))
        }
        None => None,
    };
    let feats = if views == 0 {
        match cache_dir {
            Some(dir) => eval_features_through_store(clip, samples, dir, progress)?.0,
            None => {
                let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
                image_features(clip, &paths, BATCH, progress)?
            }
        }
    } else {
        augmented_features(clip, samples, views, seed, progress)?
    };
    if let Some((file, key)) = cache_file {
        if let Err(e) = store(&file, &key, &feats, clip, views, seed) {
            eprintln!("warning: could not write the feature cache ({e}); features will be recomputed next time");
        }
    }
    Ok(FeatureSet {
        feats,
        labels,
        views_per_image: per_image,
    })
}

/// One slice of N: `I/N`, 0 ≤ I < N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub index: usize,
    pub of: usize,
}

impl std::str::FromStr for Slice {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parsed = s.split_once('/').and_then(|(i, n)| {
            Some(Slice {
                index: i.trim().parse().ok()?,
                of: n.trim().parse().ok()?,
            })
        });
        match parsed {
            Some(slice) if slice.index < slice.of => Ok(slice),
            Some(slice) => Err(format!(
                "slice {} of {}: the index runs from 0 to {}",
                slice.index,
                slice.of,
                slice.of.saturating_sub(1)
            )),
            None => Err(format!(
                "'{s}' is not I/N (e.g. 3/16, or $SLURM_ARRAY_TASK_ID/16 in an array job)"
            )),
        }
    }
}

impl Slice {
    /// This slice's part of `n` items: contiguous, sizes differing by at most one.
    pub fn range(&self, n: usize) -> std::ops::Range<usize> {
        (n * self.index / self.of)..(n * (self.index + 1) / self.of)
    }
}

/// What filling one slice did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SliceReport {
    /// `I/N`.
    pub shard: String,
    pub data: PathBuf,
    pub folder_images: usize,
    /// The slice's first image (in the folder's order) and its size.
    pub first: usize,
    pub images: usize,
    pub computed: usize,
    pub reused: usize,
    pub seconds: f64,
    /// The per-image store it filled.
    pub store: PathBuf,
}

/// Slice `slice` of every image of `ds` (all splits, in the folder's order) encoded (eval view) into
/// the per-image store under `cache`; images already there are read instead.
pub fn fill_slice(
    clip: &LoadedClip,
    ds: &crate::data::DatasetFolder,
    slice: Slice,
    cache: &Path,
    progress: &dyn Progress,
) -> Result<SliceReport> {
    let range = slice.range(ds.all.len());
    let samples = &ds.all[range.clone()];
    let t = std::time::Instant::now();
    let computed = if samples.is_empty() {
        0
    } else {
        eval_features_through_store(clip, samples, cache, progress)?.1
    };
    Ok(SliceReport {
        shard: format!("{}/{}", slice.index, slice.of),
        data: ds.root.clone(),
        folder_images: ds.all.len(),
        first: range.start,
        images: samples.len(),
        computed,
        reused: samples.len() - computed,
        seconds: t.elapsed().as_secs_f64(),
        store: super::feature_store::store_dir(cache, clip)?,
    })
}

/// Eval-view features of `samples` through the per-image store under `cache`
/// ([`super::feature_store`]): rows of images any earlier run or `features --shard` computed are read,
/// the rest computed and added as a new pack. Returns the features and how many were computed.
pub fn eval_features_through_store(
    clip: &LoadedClip,
    samples: &[Sample],
    cache: &Path,
    progress: &dyn Progress,
) -> Result<(Tensor, usize)> {
    use super::feature_store::{lookup, store_dir, write_pack, STORE_STAGE};
    let dim = clip.projection_dim();
    let digests = content_digests(samples)?;
    let dir = store_dir(cache, clip)?;
    let mut found = lookup(&dir, &digests, dim);
    // Each image missing from the store once, however often the list holds it.
    let mut todo: Vec<usize> = Vec::new();
    let mut queued = std::collections::HashSet::new();
    for (i, d) in digests.iter().enumerate() {
        if !found.contains_key(d) && queued.insert(*d) {
            todo.push(i);
        }
    }
    if todo.is_empty() {
        progress.update(STORE_STAGE, samples.len(), samples.len());
    } else {
        let paths: Vec<PathBuf> = todo.iter().map(|&i| samples[i].path.clone()).collect();
        let computed = image_features(clip, &paths, BATCH, progress)?.to_device(&Device::Cpu)?;
        let new: Vec<[u8; 32]> = todo.iter().map(|&i| digests[i]).collect();
        if let Err(e) = write_pack(&dir, &new, &computed) {
            eprintln!("warning: could not write to the feature cache ({e}); features will be recomputed next time");
        }
        for (d, row) in new.iter().zip(computed.to_vec2::<f32>()?) {
            found.insert(*d, row);
        }
    }
    let rows: Vec<f32> = digests
        .iter()
        .flat_map(|d| found[d].iter().copied())
        .collect();
    let feats = Tensor::from_vec(rows, (samples.len(), dim), &clip.device)?;
    Ok((feats, todo.len()))
}

/// Where features are cached unless the user says otherwise: `$PROMPTSCOPE_CACHE`, else
/// `$XDG_CACHE_HOME/promptscope/features`, else `~/.cache/promptscope/features`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("PROMPTSCOPE_CACHE") {
        return dir;
    }
    // The XDG spec says to ignore a relative value.
    if let Some(dir) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return dir.join("promptscope").join("features");
    }
    match var("HOME").or_else(|| var("USERPROFILE")) {
        Some(home) => home.join(".cache").join("promptscope").join("features"),
        None => std::env::temp_dir().join("promptscope").join("features"),
    }
}

/// The hex sha256 naming the cache file of these features; see the module documentation.
pub fn cache_key(clip: &LoadedClip, samples: &[Sample], views: usize, seed: u64) -> Result<String> {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        // Length-prefixed, so no two different field lists hash the same byte stream.
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(FORMAT.as_bytes());
    field(AUGMENTATION.as_bytes());
    field(crate::clip::load::fingerprint(&clip.dir)?.as_bytes());
    field(format!("{:?}", clip.preprocess).as_bytes());
    field(&(views as u64).to_le_bytes());
    field(&(if views == 0 { 0 } else { seed }).to_le_bytes());
    let contents = content_digests(samples)?;
    field(&(samples.len() as u64).to_le_bytes());
    for (s, content) in samples.iter().zip(&contents) {
        field(content);
        field(&(s.label as u64).to_le_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Each sample's file content, hashed (in parallel).
pub fn content_digests(samples: &[Sample]) -> Result<Vec<[u8; 32]>> {
    samples
        .par_iter()
        .map(|s| {
            let bytes = std::fs::read(&s.path).map_err(|e| Error::io(&s.path, e))?;
            Ok(Sha256::digest(&bytes).into())
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cached features, or None when there are none; an unusable file is reported and skipped, since
/// recomputing is always possible.
fn load_cached(file: &Path, key: &str, rows: usize, dim: usize, device: &Device) -> Option<Tensor> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            eprintln!(
                "warning: ignoring feature cache {}: {e}; recomputing",
                file.display()
            );
            return None;
        }
    };
    match parse_cached(&bytes, key, rows, dim, device) {
        Ok(t) => Some(t),
        Err(reason) => {
            eprintln!(
                "warning: ignoring feature cache {}: {reason}; recomputing",
                file.display()
            );
            None
        }
    }
}

fn parse_cached(
    bytes: &[u8],
    key: &str,
    rows: usize,
    dim: usize,
    device: &Device,
) -> std::result::Result<Tensor, String> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let stored = |k: &str| meta.metadata().as_ref().and_then(|m| m.get(k)).cloned();
    if stored("key").as_deref() != Some(key) {
        return Err("written for other inputs (its key differs from its name)".into());
    }
    let digest = stored("sha256").ok_or("it has no checksum (an older format)")?;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let t = st
        .tensor(FEATURES)
        .map_err(|e| format!("no \"{FEATURES}\" tensor ({e})"))?;
    if t.dtype() != safetensors::Dtype::F32 || t.shape() != [rows, dim] {
        return Err(format!(
            "holds {:?} {:?}, expected F32 [{rows}, {dim}]",
            t.dtype(),
            t.shape()
        ));
    }
    if hex(&Sha256::digest(t.data())) != digest {
        return Err("its values do not match their checksum (a corrupted file)".into());
    }
    if let Some(i) = crate::tensor_file::first_non_finite(t.dtype(), t.data()) {
        return Err(format!(
            "\"{FEATURES}\" holds a non-finite value at element {i}"
        ));
    }
    let values: Vec<f32> = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_vec(values, (rows, dim), device).map_err(|e| e.to_string())
}

fn store(
    file: &Path,
    key: &str,
    feats: &Tensor,
    clip: &LoadedClip,
    views: usize,
    seed: u64,
) -> Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (rows, dim) = feats.dims2()?;
    let values = feats
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, dim], &bytes)
            .map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
    // What a person inspecting the cache folder needs to tell files apart.
    let meta = std::collections::HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), key.to_string()),
        ("sha256".to_string(), hex(&Sha256::digest(&bytes))),
        ("model".to_string(), clip.id.clone()),
        ("views".to_string(), views.to_string()),
        ("seed".to_string(), seed.to_string()),
    ]);
    let out = safetensors::serialize([(FEATURES, view)], Some(meta))
        .map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
    crate::error::write_atomic(file, &out)
}

/// Encodes `views` augmented views of every sample, decoding each image once on a producer thread while
/// the model runs on the previous batch (the pattern of `clip::encode::image_features`).
fn augmented_features(
    clip: &LoadedClip,
    samples: &[Sample],
    views: usize,
    seed: u64,
    progress: &dyn Progress,
) -> Result<Tensor> {
    let images_per_batch = (BATCH / views).max(1);
    let total = samples.len() * views;
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<Result<Tensor>>(1);
        scope.spawn(move || {
            for (b, chunk) in samples.chunks(images_per_batch).enumerate() {
                if tx
                    .send(view_batch(clip, chunk, b * images_per_batch, views, seed))
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut feats = Vec::new();
        let mut done = 0;
        progress.update(AUGMENTED_STAGE, 0, total);
        for pixels in rx {
            check(progress)?;
            let pixels = pixels?;
            done += pixels.dim(0)?;
            feats.push(clip.image_features(&pixels)?);
            progress.update(AUGMENTED_STAGE, done, total);
        }
        Ok(Tensor::cat(&feats, 0)?)
    })
}

/// `[chunk.len() · views, 3, S, S]` pixels; `first` is the index of `chunk[0]` among all samples.
fn view_batch(
    clip: &LoadedClip,
    chunk: &[Sample],
    first: usize,
    views: usize,
    seed: u64,
) -> Result<Tensor> {
    let size = clip.image_size();
    let per_image: Vec<Vec<f32>> = chunk
        .par_iter()
        .enumerate()
        .map(|(k, s)| {
            let img = load_image(&s.path)?;
            let pixels: Vec<Vec<f32>> = (0..views as u32)
                .into_par_iter()
                .map(|index| {
                    View::Augmented { index }.pixels(&img, &clip.preprocess, size, seed, first + k)
                })
                .collect();
            Ok(pixels.concat())
        })
        .collect::<Result<_>>()?;
    Ok(Tensor::from_vec(
        per_image.concat(),
        (chunk.len() * views, 3, size, size),
        &clip.device,
    )?)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    use super::*;
    use crate::clip::{ClipConfig, HiddenAct};
    use crate::data::DatasetFolder;
    use crate::progress::{Reporter, Silent};

    struct Fixture {
        _dir: tempfile::TempDir,
        clip: LoadedClip,
        samples: Vec<Sample>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        crate::clip::synth::write_model_folder(
            &ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
            &model,
        )
        .unwrap();
        let data = dir.path().join("data");
        crate::data::synth::write_dataset(&data, 3, 0, Some((4, 2, 3)), 0).unwrap();
        let clip = crate::clip::load::load_dir(&model, "tiny", &Device::Cpu).unwrap();
        let samples = DatasetFolder::open(&data).unwrap().train.unwrap();
        Fixture {
            _dir: dir,
            clip,
            samples,
        }
    }

    /// Remembers the stages it was told about.
    #[derive(Default)]
    struct Stages(Mutex<Vec<String>>);

    impl Progress for Stages {
        fn update(&self, stage: &str, _: usize, _: usize) {
            self.0.lock().unwrap().push(stage.to_string());
        }
    }

    impl Stages {
        fn saw(&self, stage: &str) -> bool {
            self.0.lock().unwrap().iter().any(|s| s == stage)
        }
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    #[test]
    fn eval_view_matches_encode() {
        let f = fixture();
        let set = extract(&f.clip, &f.samples, 0, 1, None, &Silent).unwrap();
        let paths: Vec<PathBuf> = f.samples.iter().map(|s| s.path.clone()).collect();
        let want = image_features(&f.clip, &paths, 5, &Silent).unwrap();
        let diff = (&set.feats - &want)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Batches of 5 against extract's batching: 6.0e-7 on the AVX-512 kernels, 7.2e-7 on AVX2+FMA (14× margin).
        crate::testing::within(
            "eval view vs encode: image features, other batching",
            diff as f64,
            1e-5,
        );
        assert_eq!(set.feats.dims(), [12, 24]);
        assert_eq!(
            set.labels,
            f.samples.iter().map(|s| s.label).collect::<Vec<_>>()
        );
        assert_eq!(set.views_per_image, 1);
    }

    #[test]
    fn second_extract_hits_the_cache_bit_for_bit() {
        let f = fixture();
        let cache = tempfile::tempdir().unwrap();
        let cache_dir = cache.path().join("nested").join("features");
        let first_progress = Stages::default();
        let first = extract(&f.clip, &f.samples, 2, 7, Some(&cache_dir), &first_progress).unwrap();
        assert!(first_progress.saw(AUGMENTED_STAGE) && !first_progress.saw(CACHED_STAGE));
        let key = cache_key(&f.clip, &f.samples, 2, 7).unwrap();
        assert!(cache_dir.join(format!("{key}.safetensors")).is_file());

        let second_progress = Stages::default();
        let second = extract(
            &f.clip,
            &f.samples,
            2,
            7,
            Some(&cache_dir),
            &second_progress,
        )
        .unwrap();
        assert!(second_progress.saw(CACHED_STAGE) && !second_progress.saw(AUGMENTED_STAGE));
        let (a, b) = (rows(&first.feats), rows(&second.feats));
        assert!(a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(first.labels, second.labels);
        assert_eq!((first.views_per_image, first.labels.len()), (2, 24));
        assert_eq!(first.labels[..4], [0, 0, 0, 0]);

        // Two views of one image, and the same view index of two images, are different crops.
        let dist = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
        };
        assert!(dist(&a[0], &a[1]) > 1e-4, "{}", dist(&a[0], &a[1]));
        assert!(dist(&a[2], &a[3]) > 1e-4);
        // A different seed is a different cache entry with different views.
        let other = extract(&f.clip, &f.samples, 2, 8, Some(&cache_dir), &Silent).unwrap();
        assert!(dist(&rows(&other.feats)[0], &a[0]) > 1e-4);
        assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 2);
    }

    #[test]
    fn corrupt_cache_file_is_ignored_and_replaced() {
        let f = fixture();
        let cache = tempfile::tempdir().unwrap();
        let key = cache_key(&f.clip, &f.samples, 0, 0).unwrap();
        let file = cache.path().join(format!("{key}.safetensors"));
        std::fs::write(&file, b"not safetensors at all").unwrap();
        let progress = Stages::default();
        let set = extract(&f.clip, &f.samples, 0, 0, Some(cache.path()), &progress).unwrap();
        assert!(!progress.saw(CACHED_STAGE));
        assert_eq!(set.feats.dims(), [12, 24]);
        // The bad file was overwritten by a good one.
        let again = Stages::default();
        extract(&f.clip, &f.samples, 0, 0, Some(cache.path()), &again).unwrap();
        assert!(again.saw(CACHED_STAGE));
    }

    /// A flipped bit in the values or a cut file (a killed writer, a bad disk) is caught by the checksum
    /// or the parser, and the entry recomputed to the same features.
    #[test]
    fn a_corrupted_or_truncated_cache_entry_is_recomputed() {
        let f = fixture();
        let cache = tempfile::tempdir().unwrap();
        let fresh = extract(&f.clip, &f.samples, 0, 0, Some(cache.path()), &Silent).unwrap();
        let key = cache_key(&f.clip, &f.samples, 0, 0).unwrap();
        let file = cache.path().join(format!("{key}.safetensors"));
        let good = std::fs::read(&file).unwrap();
        let mut flipped = good.clone();
        let last = flipped.len() - 7;
        flipped[last] ^= 0x10;
        for bad in [flipped, good[..good.len() / 2].to_vec()] {
            std::fs::write(&file, &bad).unwrap();
            let progress = Stages::default();
            let set = extract(&f.clip, &f.samples, 0, 0, Some(cache.path()), &progress).unwrap();
            assert!(!progress.saw(CACHED_STAGE), "a bad entry must not be used");
            let same = (set.feats.clone() - &fresh.feats)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(same, 0.0);
            let again = Stages::default();
            extract(&f.clip, &f.samples, 0, 0, Some(cache.path()), &again).unwrap();
            assert!(again.saw(CACHED_STAGE), "the entry was rewritten whole");
        }
    }

    #[test]
    fn key_follows_image_bytes_labels_and_seed() {
        let f = fixture();
        let key = cache_key(&f.clip, &f.samples, 1, 3).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(key, cache_key(&f.clip, &f.samples, 1, 3).unwrap());
        assert_ne!(key, cache_key(&f.clip, &f.samples, 1, 4).unwrap());
        assert_ne!(key, cache_key(&f.clip, &f.samples, 2, 3).unwrap());
        // The eval view does not depend on the seed, so every seed shares its features.
        assert_eq!(
            cache_key(&f.clip, &f.samples, 0, 3).unwrap(),
            cache_key(&f.clip, &f.samples, 0, 4).unwrap()
        );

        let mut relabelled = f.samples.clone();
        relabelled[0].label = 2;
        assert_ne!(key, cache_key(&f.clip, &relabelled, 1, 3).unwrap());

        let other = std::fs::read(&f.samples[5].path).unwrap();
        std::fs::write(&f.samples[0].path, other).unwrap();
        assert_ne!(key, cache_key(&f.clip, &f.samples, 1, 3).unwrap());
    }

    #[test]
    fn cancellation_stops_extraction() {
        let f = fixture();
        let cancel = AtomicBool::new(true);
        let progress = Reporter {
            cancel: &cancel,
            on_update: |_: &str, _: usize, _: usize| {},
        };
        for views in [0, 2] {
            let err = extract(&f.clip, &f.samples, views, 1, None, &progress)
                .err()
                .unwrap();
            assert!(matches!(err, Error::Cancelled), "{err}");
        }
    }

    #[test]
    fn rows_map_back_to_images_and_views() {
        assert_eq!(View::of_row(0, 5), (5, View::Eval));
        assert_eq!(View::of_row(3, 7), (2, View::Augmented { index: 1 }));
    }

    #[test]
    fn default_cache_dir_follows_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            cache_dir_from(env(&[("PROMPTSCOPE_CACHE", "/c"), ("HOME", "/h")])),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Path::new("/x/promptscope/features")
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])),
            Path::new("/h/.cache/promptscope/features")
        );
        assert_eq!(
            cache_dir_from(env(&[("PROMPTSCOPE_CACHE", ""), ("HOME", "/h")])),
            Path::new("/h/.cache/promptscope/features")
        );
    }
}
