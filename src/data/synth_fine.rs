//! A generated fine-grained dataset: every image shows the same kind of object, a "bird" (a brown body
//! with a head, at a random place, size and shade on a noisy background), and the sub-category is decided
//! only by a detail, the colour of a small crest on its head. Same super-category, sub-categories that
//! differ in one small part: the situation MP-FGVC is built for. The same arguments give the same files.
//!
//! A second set, [`write_dimorphic_dataset`], has species whose plumage depends on the sex: the male of
//! species k is coloured k, the female the colour of the male of species k + C/2, and the sexes differ in
//! size and habitat (background). Every colour and every sex occurs in two species, so the species is the
//! combination of the two, an exclusive-or that no linear read-out of features which encode colour and
//! sex separately can learn, and that a non-linear fusion such as VLFM's can.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{Error, Result};
use crate::rng::Rng;

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
    CRESTS
        .iter()
        .take(n)
        .map(|(c, _)| format!("{c}_crested"))
        .collect()
}

fn jitter(rng: &mut Rng, base: [u8; 3], amount: u32) -> [u8; 3] {
    let d = rng.range(0, 2 * amount + 1) as i32 - amount as i32;
    base.map(|c| (i32::from(c) + d).clamp(0, 255) as u8)
}

/// One bird whose crest, a disc of `crest` pixels' radius, has the colour of `class`.
pub fn render(class: usize, crest: u32, rng: &mut Rng) -> RgbImage {
    let look = Look {
        body: [140, 95, 55],
        head: [120, 80, 45],
        crest: Some((CRESTS[class].1, crest)),
        size: [(40, 60), (24, 36)],
        ground: (90, 60),
    };
    render_bird(&look, rng)
}

/// What a bird looks like: body and head colours (jittered), optional crest (colour, radius), ranges of
/// the body's two radii, background (lowest grey, spread of the noise).
struct Look {
    body: [u8; 3],
    head: [u8; 3],
    crest: Option<([u8; 3], u32)>,
    size: [(u32, u32); 2],
    ground: (u8, u8),
}

fn render_bird(look: &Look, rng: &mut Rng) -> RgbImage {
    let mut img = RgbImage::from_fn(SIZE, SIZE, |_, _| {
        let v = look.ground.0 + (rng.next_u64() % u64::from(look.ground.1)) as u8;
        Rgb([v, v, v])
    });
    // Body: an ellipse; head: a circle at its front end; crest: a disc on the head. The bird is roughly
    // centred (±10 px) and faces left, as in the bounding-box crops FGVC methods train on; the intra-class
    // variation is its size, shade and the background noise. Keeping the crest near one place lets the
    // small training sets of the tests learn it in seconds on a random-weight model.
    let (rx, ry) = (
        rng.range(look.size[0].0, look.size[0].1) as i64,
        rng.range(look.size[1].0, look.size[1].1) as i64,
    );
    let (cx, cy) = (rng.range(102, 123) as i64, rng.range(120, 141) as i64);
    let hr = ry * 2 / 3;
    let (hx, hy) = (cx - (rx - hr / 2), cy - ry);
    let (crest, cr) = look.crest.map_or(([0; 3], -1), |(c, r)| (c, i64::from(r)));
    let (kx, ky) = (hx, hy - hr);
    let body = jitter(rng, look.body, 20);
    let head = jitter(rng, look.head, 15);
    for y in 0..SIZE as i64 {
        for x in 0..SIZE as i64 {
            let in_body =
                (x - cx) * (x - cx) * ry * ry + (y - cy) * (y - cy) * rx * rx <= rx * rx * ry * ry;
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

/// The plumage colours of the dimorphic set: the males of species 0..C, in order.
pub const PLUMAGES: [(&str, [u8; 3]); 6] = [
    ("scarlet", [200, 40, 40]),
    ("cobalt", [40, 70, 210]),
    ("golden", [225, 200, 40]),
    ("emerald", [40, 165, 60]),
    ("violet", [150, 60, 190]),
    ("ivory", [235, 230, 215]),
];

/// One bird of the dimorphic set: species `class` of `classes`, male or female.
pub fn render_dimorphic(class: usize, classes: usize, male: bool, rng: &mut Rng) -> RgbImage {
    let colour = if male {
        class
    } else {
        (class + classes / 2) % classes
    };
    let body = PLUMAGES[colour].1;
    let head = body.map(|c| (u16::from(c) * 6 / 7) as u8);
    let look = if male {
        Look {
            body,
            head,
            crest: None,
            size: [(56, 66), (34, 42)],
            ground: (40, 40),
        }
    } else {
        Look {
            body,
            head,
            crest: None,
            size: [(30, 40), (18, 26)],
            ground: (150, 60),
        }
    };
    render_bird(&look, rng)
}

/// Writes `classes` sub-categories into `root/{train,val,test}/<colour>_crested/` with `split =
/// (train, val, test)` images per class; `crest` is the radius of the deciding detail in pixels.
pub fn write_dataset(
    root: &Path,
    classes: usize,
    split: (usize, usize, usize),
    crest: u32,
    seed: u64,
) -> Result<()> {
    if classes < 2 || classes > CRESTS.len() {
        return Err(Error::invalid(format!(
            "the fine-grained dataset has 2 to {} classes",
            CRESTS.len()
        )));
    }
    if !(2..=MAX_CREST).contains(&crest) {
        return Err(Error::invalid(format!(
            "the crest radius is 2 to {MAX_CREST} pixels"
        )));
    }
    write_splits(root, &class_dir_names(classes), split, seed, |k, _, rng| {
        render(k, crest, rng)
    })
}

/// Writes the dimorphic set (module docs): `classes` species (an even number, 2 to 6) into
/// `root/{train,val,test}/<colour>_<n>/`, `split` images per species, half of them male.
pub fn write_dimorphic_dataset(
    root: &Path,
    classes: usize,
    split: (usize, usize, usize),
    seed: u64,
) -> Result<()> {
    if classes < 2 || classes > PLUMAGES.len() || classes % 2 == 1 {
        return Err(Error::invalid(format!(
            "the dimorphic dataset has an even number of species, 2 to {}",
            PLUMAGES.len()
        )));
    }
    let names: Vec<String> = PLUMAGES
        .iter()
        .take(classes)
        .map(|(c, _)| format!("{c}_backed"))
        .collect();
    write_splits(root, &names, split, seed, |k, i, rng| {
        render_dimorphic(k, classes, i % 2 == 0, rng)
    })
}

fn write_splits(
    root: &Path,
    names: &[String],
    split: (usize, usize, usize),
    seed: u64,
    mut draw: impl FnMut(usize, usize, &mut Rng) -> RgbImage,
) -> Result<()> {
    crate::error::create_dir_atomic(root, |tmp| {
        let mut rng = Rng::new(seed);
        for (split_name, n) in [("train", split.0), ("val", split.1), ("test", split.2)] {
            for (k, name) in names.iter().enumerate() {
                let dir = tmp.join(split_name).join(name);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                for i in 0..n {
                    let path = dir.join(format!("{i:03}.png"));
                    draw(k, i, &mut rng)
                        .save(&path)
                        .map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        Ok(())
    })
}
