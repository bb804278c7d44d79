//! A generated fine-grained dataset: every image shows the same kind of object, a "bird" (a brown body
//! with a head, at a random place, size and shade on a noisy background), and the sub-category is decided
//! only by a detail, the colour of a small crest on its head. Same super-category, sub-categories that
//! differ in one small part: the situation MP-FGVC is built for. The same arguments give the same files.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::synth::Rng;
use crate::error::{Error, Result};

/// The crest colours: one sub-category each.
pub const CRESTS: [(&str, [u8; 3]); 6] = [
    ("red", [210, 40, 40]),
    ("blue", [40, 70, 220]),
    ("yellow", [230, 210, 40]),
    ("green", [40, 170, 60]),
    ("white", [245, 245, 245]),
    ("black", [20, 20, 20]),
];

/// Side of the (square) images, the input size of ViT-B models, so preprocessing does not resample.
pub const SIZE: u32 = 224;
/// The largest crest radius that stays inside the image wherever the bird is.
pub const MAX_CREST: u32 = 28;

pub fn class_dir_names(n: usize) -> Vec<String> {
    CRESTS.iter().take(n).map(|(c, _)| format!("{c}_crested")).collect()
}

fn jitter(rng: &mut Rng, base: [u8; 3], amount: u32) -> [u8; 3] {
    let d = rng.range(0, 2 * amount + 1) as i32 - amount as i32;
    base.map(|c| (i32::from(c) + d).clamp(0, 255) as u8)
}

/// One bird whose crest, a disc of `crest` pixels' radius, has the colour of `class`.
pub fn render(class: usize, crest: u32, rng: &mut Rng) -> RgbImage {
    let mut img = RgbImage::from_fn(SIZE, SIZE, |_, _| {
        let v = 90 + (rng.next_u64() % 60) as u8;
        Rgb([v, v, v])
    });
    // Body: an ellipse; head: a circle at its front end; crest: a disc on the head. The bird is roughly
    // centred (±10 px) and faces left, as in the bounding-box crops FGVC methods train on; the intra-class
    // variation is its size, shade and the background noise. Keeping the crest near one place lets the
    // small training sets of the tests learn it in seconds on a random-weight model.
    let (rx, ry) = (rng.range(40, 60) as i64, rng.range(24, 36) as i64);
    let (cx, cy) = (rng.range(102, 123) as i64, rng.range(120, 141) as i64);
    let hr = ry * 2 / 3;
    let (hx, hy) = (cx - (rx - hr / 2), cy - ry);
    let cr = i64::from(crest);
    let (kx, ky) = (hx, hy - hr);
    let body = jitter(rng, [140, 95, 55], 20);
    let head = jitter(rng, [120, 80, 45], 15);
    let crest = CRESTS[class].1;
    for y in 0..SIZE as i64 {
        for x in 0..SIZE as i64 {
            let in_body = (x - cx) * (x - cx) * ry * ry + (y - cy) * (y - cy) * rx * rx <= rx * rx * ry * ry;
            let in_head = (x - hx) * (x - hx) + (y - hy) * (y - hy) <= hr * hr;
            let in_crest = (x - kx) * (x - kx) + (y - ky) * (y - ky) <= cr * cr;
            let colour = if in_crest {
                crest
            } else if in_head {
                head
            } else if in_body {
                body
            } else {
                continue;
            };
            img.put_pixel(x as u32, y as u32, Rgb(colour));
        }
    }
    img
}

/// Writes `classes` sub-categories into `root/{train,val,test}/<colour>_crested/` with `split =
/// (train, val, test)` images per class; `crest` is the radius of the deciding detail in pixels.
pub fn write_dataset(root: &Path, classes: usize, split: (usize, usize, usize), crest: u32, seed: u64) -> Result<()> {
    if classes < 2 || classes > CRESTS.len() {
        return Err(Error::invalid(format!("the fine-grained dataset has 2 to {} classes", CRESTS.len())));
    }
    if !(2..=MAX_CREST).contains(&crest) {
        return Err(Error::invalid(format!("the crest radius is 2 to {MAX_CREST} pixels")));
    }
    crate::error::create_dir_atomic(root, |tmp| {
        let mut rng = Rng::new(seed);
        let names = class_dir_names(classes);
        for (split_name, n) in [("train", split.0), ("val", split.1), ("test", split.2)] {
            for (k, name) in names.iter().enumerate() {
                let dir = tmp.join(split_name).join(name);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                for i in 0..n {
                    let path = dir.join(format!("{i:03}.png"));
                    render(k, crest, &mut rng).save(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        Ok(())
    })
}
