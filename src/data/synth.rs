//! Generated image-classification folders: coloured shapes on noisy backgrounds, one class per
//! (colour, shape), in non-square sizes. Used for the bundled sample, tests and benchmarks; the same
//! arguments always give the same files.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::rng::Rng;

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 40, 40]),
    ("green", [40, 180, 60]),
    ("blue", [40, 70, 220]),
    ("yellow", [230, 210, 40]),
];
const SHAPES: [&str; 3] = ["circle", "square", "stripes"];

pub fn class_dir_names(n: usize) -> Vec<String> {
    COLOURS
        .iter()
        .flat_map(|(c, _)| SHAPES.iter().map(move |s| format!("{c}_{s}")))
        .take(n)
        .collect()
}

pub const MAX_CLASSES: usize = COLOURS.len() * SHAPES.len();

pub fn render(class: usize, rng: &mut Rng) -> RgbImage {
    let (_, colour) = COLOURS[class / SHAPES.len()];
    let shape = SHAPES[class % SHAPES.len()];
    let (w, h) = (rng.range(120, 200), rng.range(100, 180));
    let mut img = RgbImage::from_fn(w, h, |_, _| {
        let v = 90 + (rng.next_u64() % 60) as u8;
        Rgb([v, v, v])
    });
    // Below a third of the short side, so the centre range below is never empty.
    let size = rng.range(h / 6, h / 3);
    let (cx, cy) = (rng.range(size, w - size), rng.range(size, h - size));
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as i64 - cx as i64, y as i64 - cy as i64);
            let inside = match shape {
                "circle" => dx * dx + dy * dy <= (size * size) as i64,
                "square" => dx.abs() <= size as i64 && dy.abs() <= size as i64,
                _ => dx.abs() <= size as i64 && dy.abs() <= size as i64 && (y / 6) % 2 == 0,
            };
            if inside {
                img.put_pixel(x, y, Rgb(colour));
            }
        }
    }
    img
}

/// Writes `classes` classes with `per_class` images each into `root/<class>/` (or into
/// `root/{train,val,test}/<class>/` with `split = Some((train, val, test))` images per class).
pub fn write_dataset(
    root: &Path,
    classes: usize,
    per_class: usize,
    split: Option<(usize, usize, usize)>,
    seed: u64,
) -> Result<()> {
    if classes == 0 || classes > MAX_CLASSES {
        return Err(Error::invalid(format!(
            "the generated dataset has 1 to {MAX_CLASSES} classes"
        )));
    }
    crate::error::create_dir_atomic(root, |tmp| {
        write_images(tmp, classes, per_class, split, seed)
    })
}

fn write_images(
    root: &Path,
    classes: usize,
    per_class: usize,
    split: Option<(usize, usize, usize)>,
    seed: u64,
) -> Result<()> {
    let mut rng = Rng::new(seed);
    let names = class_dir_names(classes);
    let layout: Vec<(Option<&str>, usize)> = match split {
        Some((tr, va, te)) => vec![(Some("train"), tr), (Some("val"), va), (Some("test"), te)],
        None => vec![(None, per_class)],
    };
    for (split_name, n) in layout {
        for (k, name) in names.iter().enumerate() {
            let dir = match split_name {
                Some(s) => root.join(s).join(name),
                None => root.join(name),
            };
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            for i in 0..n {
                let img = render(k, &mut rng);
                // Mix formats so loaders are exercised on both.
                let path = dir.join(if i % 2 == 0 {
                    format!("{i:03}.png")
                } else {
                    format!("{i:03}.jpg")
                });
                img.save(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
    }
    Ok(())
}
