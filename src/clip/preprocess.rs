//! Image → pixel tensor, as transformers' (slow, PIL-based) `CLIPImageProcessor` does it: convert to RGB,
//! resize the short side with Pillow's bicubic filter, centre-crop, rescale by 1/255, normalise. We also
//! apply the EXIF orientation, which a person expects (a phone photo shows upright) and HF skips.

use std::path::Path;

use image::{DynamicImage, RgbImage};
use serde_json::Value;

use super::resample::resize_bicubic_pil;
use crate::error::{Error, Result};

pub const OPENAI_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
// The literals of CLIP's preprocessing, digit for digit (they round to the same f32).
#[allow(clippy::excessive_precision)]
pub const OPENAI_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Resize {
    /// Short side to this size, aspect kept (transformers' `{"shortest_edge": n}`).
    ShortestEdge(usize),
    /// Exactly `(height, width)`.
    Exact(usize, usize),
    None,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PreprocessConfig {
    pub resize: Resize,
    /// `(height, width)`, or None for no crop.
    pub crop: Option<(usize, usize)>,
    pub rescale: Option<f32>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub normalize: bool,
}

impl PreprocessConfig {
    /// CLIP's defaults for a model of this input size.
    pub fn clip(image_size: usize) -> Self {
        Self {
            resize: Resize::ShortestEdge(image_size),
            crop: Some((image_size, image_size)),
            rescale: Some(1.0 / 255.0),
            mean: OPENAI_MEAN,
            std: OPENAI_STD,
            normalize: true,
        }
    }

    /// Reads a `preprocessor_config.json`; fields it lacks keep CLIP's defaults.
    pub fn from_file(path: &Path, image_size: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                format!("not valid JSON ({e})"),
                "fix or delete the file (CLIP's defaults are used without it)",
            )
        })?;
        Self::from_json(&v, image_size).map_err(|e| {
            Error::bad_file(
                path,
                e,
                "fix or delete the file (CLIP's defaults are used without it)",
            )
        })
    }

    pub fn from_json(v: &Value, image_size: usize) -> std::result::Result<Self, String> {
        let mut cfg = Self::clip(image_size);
        let flag = |k: &str| v.get(k).and_then(Value::as_bool);
        if let Some(size) = v.get("size") {
            cfg.resize = match size {
                Value::Number(n) => Resize::ShortestEdge(as_usize(n)?),
                Value::Object(o) => match (o.get("shortest_edge"), o.get("height"), o.get("width"))
                {
                    (Some(Value::Number(n)), _, _) => Resize::ShortestEdge(as_usize(n)?),
                    (_, Some(Value::Number(h)), Some(Value::Number(w))) => {
                        Resize::Exact(as_usize(h)?, as_usize(w)?)
                    }
                    _ => return Err(format!("unsupported \"size\": {size}")),
                },
                _ => return Err(format!("unsupported \"size\": {size}")),
            };
        }
        if flag("do_resize") == Some(false) {
            cfg.resize = Resize::None;
        }
        if let Some(crop) = v.get("crop_size") {
            cfg.crop = Some(match crop {
                Value::Number(n) => (as_usize(n)?, as_usize(n)?),
                Value::Object(o) => match (o.get("height"), o.get("width")) {
                    (Some(Value::Number(h)), Some(Value::Number(w))) => {
                        (as_usize(h)?, as_usize(w)?)
                    }
                    _ => return Err(format!("unsupported \"crop_size\": {crop}")),
                },
                _ => return Err(format!("unsupported \"crop_size\": {crop}")),
            });
        }
        if flag("do_center_crop") == Some(false) {
            cfg.crop = None;
        }
        if let Some(f) = v.get("rescale_factor").and_then(Value::as_f64) {
            cfg.rescale = Some(f as f32);
        }
        if flag("do_rescale") == Some(false) {
            cfg.rescale = None;
        }
        for (key, dst) in [("image_mean", &mut cfg.mean), ("image_std", &mut cfg.std)] {
            if let Some(arr) = v.get(key).and_then(Value::as_array) {
                let vals: Vec<f32> = arr
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|x| x as f32)
                    .collect();
                *dst = vals
                    .try_into()
                    .map_err(|_| format!("\"{key}\" must hold 3 numbers"))?;
            }
        }
        if flag("do_normalize") == Some(false) {
            cfg.normalize = false;
        }
        if cfg.std.contains(&0.0) {
            return Err("\"image_std\" has a zero".into());
        }
        // Every image is resized to these sizes: a config asking for a gigapixel resize would allocate
        // without bound (found by the preprocessor_config fuzz target: 34 GB, an abort).
        let sides = match cfg.resize {
            Resize::ShortestEdge(n) => vec![n],
            Resize::Exact(h, w) => vec![h, w],
            Resize::None => vec![],
        };
        if let Some(big) = sides
            .into_iter()
            .chain(cfg.crop.map(|(h, w)| [h, w]).into_iter().flatten())
            .find(|&n| n > MAX_RESIZE)
        {
            return Err(format!(
                "a resize or crop to {big} px is beyond {MAX_RESIZE} px, more than any model takes"
            ));
        }
        Ok(cfg)
    }

    /// The output `(height, width)`, which must equal the model's input size.
    pub fn output_size(&self) -> Option<(usize, usize)> {
        self.crop.or(match self.resize {
            Resize::Exact(h, w) => Some((h, w)),
            _ => None,
        })
    }
}

fn as_usize(n: &serde_json::Number) -> std::result::Result<usize, String> {
    n.as_u64()
        .filter(|&x| x > 0)
        .map(|x| x as usize)
        .ok_or_else(|| format!("{n} is not a positive size"))
}

/// The most elongated image accepted (long side over short side).
const MAX_ASPECT: u32 = 500;

/// The largest resize or crop side a `preprocessor_config.json` may ask for.
const MAX_RESIZE: usize = 8192;

/// The environment variable that sets [`max_image_side`].
pub const MAX_SIDE_VAR: &str = "PROMPTSCOPE_MAX_IMAGE_SIDE";

/// The longest side an image may claim (20,000 pixels unless `PROMPTSCOPE_MAX_IMAGE_SIDE` says otherwise).
pub fn max_image_side() -> u32 {
    std::env::var(MAX_SIDE_VAR)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n: &u32| n > 0)
        .unwrap_or(20_000)
}

/// Decodes an image file with its EXIF orientation applied.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    load_image_within(path, max_image_side())
}

/// Decodes an image held in memory (a tar shard's member), with the checks and orientation of
/// [`load_image`]; `name` is what an error calls it (`shard.tar:key.png`).
pub fn load_image_bytes(bytes: &[u8], name: &Path) -> Result<DynamicImage> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes));
    // As `ImageReader::open` does: the name's extension, unless the content says otherwise (TGA has
    // no magic bytes).
    if let Ok(format) = image::ImageFormat::from_path(name) {
        reader.set_format(format);
    }
    decode_within(reader, name, max_image_side())
}

fn load_image_within(path: &Path, limit: u32) -> Result<DynamicImage> {
    let reader = image::ImageReader::open(path).map_err(|e| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    decode_within(reader, path, limit)
}

fn decode_within<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    path: &Path,
    limit: u32,
) -> Result<DynamicImage> {
    use image::ImageDecoder;
    let err = |e: &dyn std::fmt::Display| Error::Image {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let reader = reader.with_guessed_format().map_err(|e| err(&e))?;
    let mut decoder = reader.into_decoder().map_err(|e| err(&e))?;
    // Refused from the header, before a pixel is decoded: a few-KB file can claim gigapixels.
    let (w, h) = decoder.dimensions();
    if w.max(h) > limit {
        return Err(err(&format!(
            "it claims {w}×{h} pixels, beyond the limit of {limit} per side (a decompression bomb, or a huge scan: \
             downscale it, or raise the limit with {MAX_SIDE_VAR}=N)"
        )));
    }
    // Resizing the short side to the model's input scales the long side alike: a 20000×1 strip would
    // become gigapixels. Such strips are not photographs.
    if w.min(h) == 0 || w.max(h) / w.min(h) > MAX_ASPECT {
        return Err(err(&format!("it is {w}×{h} pixels, a strip beyond {MAX_ASPECT}:1 that cannot be resized to the model's input; crop it first")));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(&e))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// transformers' `get_resize_output_image_size(default_to_square=False)`: short side to `size`, long
/// side scaled and truncated to an integer.
pub fn shortest_edge_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}

/// Resize + crop in 8-bit, as PIL does before transformers turns pixels into floats.
pub fn resize_and_crop(img: &DynamicImage, cfg: &PreprocessConfig) -> RgbImage {
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let (nw, nh) = match cfg.resize {
        Resize::ShortestEdge(s) => shortest_edge_size(w, h, s),
        Resize::Exact(th, tw) => (tw, th),
        Resize::None => (w, h),
    };
    let resized = if (nw, nh) == (w, h) {
        rgb
    } else {
        resize_bicubic_pil(&rgb, nw.max(1) as u32, nh.max(1) as u32)
    };
    match cfg.crop {
        Some((ch, cw)) => center_crop(&resized, ch, cw),
        None => resized,
    }
}

/// transformers' `center_crop`: offsets `(size - crop) // 2`, zero padding where the image is smaller.
fn center_crop(img: &RgbImage, ch: usize, cw: usize) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let top = (h - ch as i64).div_euclid(2);
    let left = (w - cw as i64).div_euclid(2);
    RgbImage::from_fn(cw as u32, ch as u32, |x, y| {
        let (sx, sy) = (x as i64 + left, y as i64 + top);
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// 8-bit RGB → channel-first floats, rescaled and normalised.
pub fn to_chw(img: &RgbImage, cfg: &PreprocessConfig) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let mut v = f32::from(px[c]);
            if let Some(s) = cfg.rescale {
                v *= s;
            }
            if cfg.normalize {
                v = (v - cfg.mean[c]) / cfg.std[c];
            }
            out[c * w * h + i] = v;
        }
    }
    out
}

/// The whole pipeline for one decoded image: `[3, H, W]` floats.
pub fn preprocess(img: &DynamicImage, cfg: &PreprocessConfig) -> Vec<f32> {
    to_chw(&resize_and_crop(img, cfg), cfg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_preprocessor_config_asking_for_a_huge_resize_is_refused() {
        let v: Value =
            serde_json::from_str(r#"{"size": {"shortest_edge": 100000000}, "crop_size": 224}"#)
                .unwrap();
        assert!(PreprocessConfig::from_json(&v, 224)
            .unwrap_err()
            .contains("100000000"));
        let v: Value = serde_json::from_str(
            r#"{"size": {"height": 224, "width": 9000}, "do_center_crop": false}"#,
        )
        .unwrap();
        assert!(PreprocessConfig::from_json(&v, 224)
            .unwrap_err()
            .contains("9000"));
    }

    #[test]
    fn an_image_claiming_too_many_pixels_is_refused_from_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.png");
        std::fs::write(&bomb, crate::testing::claimed_png(30_000, 30_000)).unwrap();
        let started = std::time::Instant::now();
        let e = load_image(&bomb).unwrap_err().to_string();
        assert!(
            started.elapsed().as_secs_f64() < 1.0,
            "decoded before refusing"
        );
        for needle in ["bomb.png", "30000×30000", "20000", MAX_SIDE_VAR] {
            assert!(e.contains(needle), "{needle:?} not in {e}");
        }
        // Below the limit the header passes and the (empty) data is what fails.
        std::fs::write(&bomb, crate::testing::claimed_png(64, 64)).unwrap();
        assert!(!load_image(&bomb).unwrap_err().to_string().contains("limit"));
        // The limit is a setting: a small one refuses an ordinary picture.
        let fixture =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nonsquare_320x213.png");
        assert!(load_image_within(&fixture, 100)
            .unwrap_err()
            .to_string()
            .contains("320×213"));
        assert!(load_image_within(&fixture, 320).is_ok());
        // A 20000×1 strip would be resized to gigapixels: refused from its header too.
        std::fs::write(&bomb, crate::testing::claimed_png(20_000, 1)).unwrap();
        assert!(load_image(&bomb)
            .unwrap_err()
            .to_string()
            .contains("20000×1"));
    }

    use super::*;

    #[test]
    fn shortest_edge_truncates_like_transformers() {
        assert_eq!(shortest_edge_size(320, 213, 224), (336, 224));
        assert_eq!(shortest_edge_size(213, 320, 224), (224, 336));
        assert_eq!(shortest_edge_size(500, 333, 224), (336, 224));
    }

    #[test]
    fn hf_preprocessor_config_is_read() {
        let v: Value = serde_json::from_str(
            r#"{"crop_size": {"height": 336, "width": 336}, "size": {"shortest_edge": 336},
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_center_crop": true}"#,
        )
        .unwrap();
        let c = PreprocessConfig::from_json(&v, 224).unwrap();
        assert_eq!(c.resize, Resize::ShortestEdge(336));
        assert_eq!(c.output_size(), Some((336, 336)));
        assert_eq!(c.mean, [0.5; 3]);
    }

    #[test]
    fn image_at_model_size_is_not_resampled() {
        let img = RgbImage::from_fn(224, 224, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
        });
        let out = resize_and_crop(
            &DynamicImage::ImageRgb8(img.clone()),
            &PreprocessConfig::clip(224),
        );
        assert_eq!(out, img);
    }

    /// A JPEG with an EXIF APP1 segment saying "rotate 90° clockwise" (orientation 6).
    fn jpeg_with_orientation(w: u32, h: u32, orientation: u8) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, _| {
            image::Rgb([if x < w / 2 { 255 } else { 0 }, 0, 0])
        });
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&img)
            .unwrap();
        // TIFF header (little endian), one IFD entry: tag 0x0112 (orientation), SHORT, count 1.
        let mut tiff = vec![
            b'I',
            b'I',
            42,
            0,
            8,
            0,
            0,
            0,
            1,
            0,
            0x12,
            0x01,
            3,
            0,
            1,
            0,
            0,
            0,
            orientation,
            0,
            0,
            0,
        ];
        tiff.extend([0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend([0xFF, 0xE1]);
        out.extend(len.to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("phone.jpg");
        std::fs::write(&path, jpeg_with_orientation(40, 20, 6)).unwrap();
        let img = load_image(&path).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (20, 40));
        // The red left half of the stored image is the top half once rotated clockwise.
        assert!(img.get_pixel(10, 5)[0] > 200 && img.get_pixel(10, 35)[0] < 60);
    }

    #[test]
    fn unreadable_image_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        std::fs::write(&path, b"\x89PNG not really").unwrap();
        let err = load_image(&path).unwrap_err().to_string();
        assert!(err.contains("broken.png"), "{err}");
    }

    #[test]
    fn crop_pads_small_images_with_zeros() {
        let img = RgbImage::from_pixel(2, 2, image::Rgb([9, 9, 9]));
        let out = center_crop(&img, 4, 4);
        assert_eq!(out.get_pixel(0, 0)[0], 0);
        assert_eq!(out.get_pixel(1, 1)[0], 9);
        assert_eq!(out.get_pixel(2, 2)[0], 9);
        assert_eq!(out.get_pixel(3, 3)[0], 0);
    }
}
