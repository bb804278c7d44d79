//! A generated dataset where one small region decides the class: a plain noisy grey background with one
//! small coloured square at a random position, the colour being the class. Each image's square is
//! recorded, so a test can measure how much of an alignment map falls on it. Images are square at the
//! model's input size, so preprocessing leaves them as they are and the box is in model-input pixels.

use std::path::Path;

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rng::Rng;

pub const REGION_COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 40, 40]),
    ("green", [40, 180, 60]),
    ("blue", [40, 70, 220]),
    ("yellow", [230, 210, 40]),
];

/// A pixel rectangle `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

#[derive(Debug, Clone)]
pub struct RegionImage {
    pub image: RgbImage,
    /// The same image without the square (its noise continues under it): what the square changes in a
    /// map is the difference between the two.
    pub background: RgbImage,
    pub class: usize,
    pub region: PixelBox,
}

/// One image of `class`: `size`×`size` grey noise (90..150) with a `side`-pixel square of the class
/// colour at a random position.
pub fn render(class: usize, size: u32, side: u32, rng: &mut Rng) -> Result<RegionImage> {
    if class >= REGION_COLOURS.len() {
        return Err(Error::invalid(format!(
            "the region dataset has {} classes",
            REGION_COLOURS.len()
        )));
    }
    if side == 0 || side >= size {
        return Err(Error::invalid(format!(
            "a {side}-pixel square does not fit a {size}-pixel image"
        )));
    }
    let colour = REGION_COLOURS[class].1;
    let background = RgbImage::from_fn(size, size, |_, _| {
        let v = 90 + (rng.next_u64() % 60) as u8;
        Rgb([v, v, v])
    });
    let mut image = background.clone();
    let (x0, y0) = (rng.range(0, size - side + 1), rng.range(0, size - side + 1));
    for y in y0..y0 + side {
        for x in x0..x0 + side {
            image.put_pixel(x, y, Rgb(colour));
        }
    }
    Ok(RegionImage {
        image,
        background,
        class,
        region: PixelBox {
            x0,
            y0,
            x1: x0 + side,
            y1: y0 + side,
        },
    })
}

/// `per_class` images of each of `classes` classes, class-major; the same seed gives the same images.
pub fn generate(
    classes: usize,
    per_class: usize,
    size: u32,
    side: u32,
    seed: u64,
) -> Result<Vec<RegionImage>> {
    let mut rng = Rng::new(seed);
    (0..classes)
        .flat_map(|c| std::iter::repeat_n(c, per_class))
        .map(|c| render(c, size, side, &mut rng))
        .collect()
}

/// One row of `regions.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionRecord {
    /// Relative to the dataset root.
    pub path: String,
    pub class: String,
    pub region: PixelBox,
}

/// Writes `root/<colour>/NNN.png` and `root/regions.json` (each image's square).
pub fn write_dataset(
    root: &Path,
    classes: usize,
    per_class: usize,
    size: u32,
    side: u32,
    seed: u64,
) -> Result<Vec<RegionRecord>> {
    let images = generate(classes, per_class, size, side, seed)?;
    let mut records = Vec::with_capacity(images.len());
    crate::error::create_dir_atomic(root, |tmp| {
        for (i, im) in images.iter().enumerate() {
            let name = REGION_COLOURS[im.class].0;
            let dir = tmp.join(name);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let rel = format!("{name}/{:03}.png", i % per_class.max(1));
            let path = tmp.join(&rel);
            im.image.save(&path).map_err(|e| Error::io(&path, e))?;
            records.push(RegionRecord {
                path: rel,
                class: name.to_string(),
                region: im.region,
            });
        }
        let json =
            serde_json::to_string_pretty(&records).map_err(|e| Error::invalid(e.to_string()))?;
        crate::error::write_atomic(&tmp.join("regions.json"), json.as_bytes())
    })?;
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares_are_where_the_record_says() {
        let set = generate(4, 3, 224, 40, 7).unwrap();
        assert_eq!(set.len(), 12);
        for im in &set {
            let b = im.region;
            assert_eq!((b.x1 - b.x0, b.y1 - b.y0), (40, 40));
            assert!(b.x1 <= 224 && b.y1 <= 224);
            let colour = REGION_COLOURS[im.class].1;
            assert_eq!(im.image.get_pixel(b.x0, b.y0).0, colour);
            assert_eq!(im.image.get_pixel(b.x1 - 1, b.y1 - 1).0, colour);
            assert_ne!(im.background.get_pixel(b.x0, b.y0).0, colour);
            let differing = im
                .image
                .pixels()
                .zip(im.background.pixels())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(differing, 40 * 40);
        }
        // Deterministic.
        assert_eq!(generate(4, 3, 224, 40, 7).unwrap()[5].region, set[5].region);
        assert!(render(0, 32, 32, &mut Rng::new(0)).is_err());
    }
}
