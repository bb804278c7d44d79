//! CoOp's training augmentation: torchvision's `RandomResizedCrop(size, scale=(0.08, 1.0),
//! ratio=(3/4, 4/3), interpolation=BICUBIC)`, then `RandomHorizontalFlip(p=0.5)`, then
//! rescale/normalise.
//!
//! The crop geometry follows `RandomResizedCrop.get_params` step by step (same draws in the same order,
//! Python's half-to-even rounding, the same centre-crop fallback) and the resize is Pillow's bicubic, as
//! torchvision applies it to PIL images. Only the random numbers differ: they come from our seeded
//! [`Rng`], so a (seed, image, view) always gives the same pixels on every machine.

use image::{DynamicImage, RgbImage};

use crate::clip::preprocess::to_chw;
use crate::clip::resample::resize_bicubic_pil;
use crate::clip::PreprocessConfig;
use crate::rng::Rng;

/// Range of the crop's share of the image area.
pub const SCALE: (f64, f64) = (0.08, 1.0);
/// Range of the crop's width / height.
pub const RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);
/// torchvision gives up on random crops after this many rejected draws.
const ATTEMPTS: usize = 10;

/// A crop in pixels of the source image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Everything random about one augmented view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AugmentParams {
    pub crop: CropBox,
    pub flip: bool,
}

/// One augmented view of a decoded image: `[3, size, size]` floats, rescaled and normalised by `cfg`
/// (its resize and crop settings are the eval transform's and do not apply here).
pub fn augment(img: &DynamicImage, cfg: &PreprocessConfig, size: usize, rng: &mut Rng) -> Vec<f32> {
    let rgb = img.to_rgb8();
    let params = sample_params(rgb.width(), rgb.height(), rng);
    to_chw(&apply(&rgb, params, size), cfg)
}

/// Draws the crop, then the flip, in torchvision's order.
pub fn sample_params(width: u32, height: u32, rng: &mut Rng) -> AugmentParams {
    let crop = random_resized_crop(width, height, rng);
    // `torch.rand(1) < p`
    let flip = uniform(rng, 0.0, 1.0) < 0.5;
    AugmentParams { crop, flip }
}

/// Crops, resizes to `size`×`size` with Pillow's bicubic filter, and mirrors if asked.
pub fn apply(rgb: &RgbImage, params: AugmentParams, size: usize) -> RgbImage {
    let size = size.max(1) as u32;
    let c = params.crop;
    if c.width == 0 || c.height == 0 {
        // Only an empty source gets here; a black view beats a panic in a worker thread.
        return RgbImage::new(size, size);
    }
    let cropped = image::imageops::crop_imm(rgb, c.left, c.top, c.width, c.height).to_image();
    let resized = resize_bicubic_pil(&cropped, size, size);
    if params.flip {
        image::imageops::flip_horizontal(&resized)
    } else {
        resized
    }
}

/// `RandomResizedCrop.get_params`: up to ten draws of an area share and a log-uniform aspect ratio,
/// keeping the first that fits; otherwise the largest centred crop whose ratio is within bounds.
pub fn random_resized_crop(width: u32, height: u32, rng: &mut Rng) -> CropBox {
    let (wf, hf) = (f64::from(width), f64::from(height));
    let area = wf * hf;
    let log_ratio = (RATIO.0.ln(), RATIO.1.ln());
    for _ in 0..ATTEMPTS {
        let target_area = area * uniform(rng, SCALE.0, SCALE.1);
        let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
        // Python's `int(round(x))` rounds half to even.
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if 0.0 < w && w <= wf && 0.0 < h && h <= hf {
            let (w, h) = (w as u32, h as u32);
            // `torch.randint(0, height - h + 1)`, then the same for the width.
            let top = below(rng, height - h + 1);
            let left = below(rng, width - w + 1);
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < RATIO.0 {
        (width, (wf / RATIO.0).round_ties_even() as u32)
    } else if in_ratio > RATIO.1 {
        ((hf * RATIO.1).round_ties_even() as u32, height)
    } else {
        (width, height)
    };
    let (w, h) = (w.min(width), h.min(height));
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// The seed of view `view` of image `image` in a run seeded with `seed`: every view gets an unrelated
/// stream, and the feature cache keys on the same triple.
pub fn view_seed(seed: u64, image: usize, view: u32) -> u64 {
    let a = Rng::new(seed).next_u64() ^ image as u64;
    let b = Rng::new(a).next_u64() ^ u64::from(view);
    Rng::new(b).next_u64()
}

/// Uniform in `[lo, hi)` from the top 53 bits, the precision of an `f64` mantissa.
fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    lo + (hi - lo) * u
}

/// Uniform in `0..n` (n ≥ 1).
fn below(rng: &mut Rng, n: u32) -> u32 {
    (rng.next_u64() % u64::from(n.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_image(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8,
            ])
        }))
    }

    #[test]
    fn output_has_the_model_input_size_and_is_deterministic() {
        let img = test_image(160, 120);
        let cfg = PreprocessConfig::clip(32);
        let a = augment(&img, &cfg, 32, &mut Rng::new(view_seed(1, 0, 0)));
        assert_eq!(a.len(), 3 * 32 * 32);
        assert_eq!(
            a,
            augment(&img, &cfg, 32, &mut Rng::new(view_seed(1, 0, 0)))
        );
        let b = augment(&img, &cfg, 32, &mut Rng::new(view_seed(1, 0, 1)));
        assert_ne!(a, b);
        assert_ne!(
            random_resized_crop(160, 120, &mut Rng::new(1)),
            random_resized_crop(160, 120, &mut Rng::new(2))
        );
    }

    #[test]
    fn crops_fit_and_cover_the_scale_range() {
        let (w, h) = (160u32, 120u32);
        let mut smallest = f64::MAX;
        let mut largest: f64 = 0.0;
        for seed in 0..2000 {
            let c = random_resized_crop(w, h, &mut Rng::new(seed));
            assert!(
                c.width >= 1 && c.height >= 1 && c.left + c.width <= w && c.top + c.height <= h,
                "{c:?}"
            );
            let share = f64::from(c.width * c.height) / f64::from(w * h);
            smallest = smallest.min(share);
            largest = largest.max(share);
        }
        assert!(smallest < 0.1 && largest > 0.8, "{smallest} {largest}");
    }

    #[test]
    fn impossible_draws_fall_back_to_torchvisions_centre_crop() {
        // Any crop of at least 8% of a 1000×10 image is taller than 10 px, so all ten draws fail.
        assert_eq!(
            random_resized_crop(1000, 10, &mut Rng::new(5)),
            CropBox {
                top: 0,
                left: 493,
                height: 10,
                width: 13
            }
        );
        assert_eq!(
            random_resized_crop(10, 1000, &mut Rng::new(5)),
            CropBox {
                top: 493,
                left: 0,
                height: 13,
                width: 10
            }
        );
    }

    #[test]
    fn flip_happens_about_half_the_time_and_mirrors() {
        let flips = (0..4000)
            .filter(|&s| sample_params(160, 120, &mut Rng::new(view_seed(s, 3, 1))).flip)
            .count();
        assert!((1800..2200).contains(&flips), "{flips} flips of 4000");

        let rgb = test_image(50, 40).to_rgb8();
        let crop = CropBox {
            top: 3,
            left: 5,
            height: 30,
            width: 40,
        };
        let plain = apply(&rgb, AugmentParams { crop, flip: false }, 24);
        let mirrored = apply(&rgb, AugmentParams { crop, flip: true }, 24);
        assert_ne!(plain, mirrored);
        assert_eq!(image::imageops::flip_horizontal(&plain), mirrored);
    }
}
