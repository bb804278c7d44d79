//! Captioned scenes: a deterministic generator of image–caption pairs to pretrain small FILIP and CLIP
//! models on (METHODS §7), with every object's geometry kept so its mask can be drawn again for
//! evaluation (pointing game, map mass inside the object).
//!
//! A scene holds 1–3 objects (8 shapes × 8 colours × 3 textures × 2 sizes, at distinct places) on one of
//! four backgrounds; its caption comes from many templates and names some or all objects, their sizes,
//! textures, the background and left/right/above/below relations. Some colour–shape pairs
//! ([`HELD_OUT`]) never occur in pretraining scenes, so zero-shot on them tests composition: the model saw
//! "red" and "star", never a red star. The same (seed, index) always gives the same pair.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::{write_atomic, Error, Result};
use crate::rng::Rng;

pub const SHAPES: [&str; 8] = [
    "circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon",
];
pub const COLOURS: [(&str, [u8; 3]); 8] = [
    ("red", [214, 39, 40]),
    ("green", [44, 160, 44]),
    ("blue", [31, 90, 220]),
    ("yellow", [240, 210, 30]),
    ("purple", [148, 60, 190]),
    ("orange", [255, 127, 14]),
    ("white", [245, 245, 245]),
    ("black", [20, 20, 20]),
];
/// Colour–shape pairs (indices into [`COLOURS`], [`SHAPES`]) that pretraining scenes never contain.
pub const HELD_OUT: [(usize, usize); 4] = [(0, 3), (2, 1), (3, 6), (4, 0)];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Texture {
    Solid,
    Striped,
    Dotted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Background {
    Plain,
    Noise,
    Gradient,
    Clutter,
}

impl Background {
    const ALL: [Background; 4] = [
        Background::Plain,
        Background::Noise,
        Background::Gradient,
        Background::Clutter,
    ];

    fn word(self) -> &'static str {
        match self {
            Background::Plain => "plain",
            Background::Noise => "noisy",
            Background::Gradient => "gradient",
            Background::Clutter => "cluttered",
        }
    }
}

/// One object: where it is and what it looks like. Its mask is [`SceneObject::covers`] at every pixel
/// not covered by a later object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneObject {
    pub shape: usize,
    pub colour: usize,
    pub texture: Texture,
    pub large: bool,
    /// Centre and half-size in pixels.
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
}

impl SceneObject {
    pub fn shape_name(&self) -> &'static str {
        SHAPES[self.shape]
    }

    pub fn colour_name(&self) -> &'static str {
        COLOURS[self.colour].0
    }

    /// Whether pixel (x, y) (its centre) lies inside the object's outline.
    pub fn covers(&self, x: u32, y: u32) -> bool {
        let (u, v) = (
            (x as f32 + 0.5 - self.cx) / self.radius,
            (y as f32 + 0.5 - self.cy) / self.radius,
        );
        inside(self.shape, u, v)
    }

    /// "a small red striped star", with the size and texture words only where asked for; without its
    /// colour word in a grey scene; "small star, red and striped" shape first.
    fn phrase(&self, size: bool, texture: bool, colour: bool, shape_first: bool) -> String {
        let mut words = vec![];
        if size {
            words.push(if self.large { "large" } else { "small" });
        }
        let texture = (texture && self.texture != Texture::Solid).then_some(
            if self.texture == Texture::Striped {
                "striped"
            } else {
                "dotted"
            },
        );
        if shape_first {
            words.push(self.shape_name());
            let after: Vec<&str> = colour
                .then_some(self.colour_name())
                .into_iter()
                .chain(texture)
                .collect();
            if after.is_empty() {
                return words.join(" ");
            }
            return format!("{}, {}", words.join(" "), after.join(" and "));
        }
        if colour {
            words.push(self.colour_name());
        }
        words.extend(texture);
        words.push(self.shape_name());
        words.join(" ")
    }
}

/// The outline of each shape in coordinates scaled to the object's half-size (y down).
fn inside(shape: usize, u: f32, v: f32) -> bool {
    let r = (u * u + v * v).sqrt();
    match SHAPES[shape] {
        "circle" => r <= 1.0,
        "square" => u.abs().max(v.abs()) <= 0.85,
        "triangle" => (-0.9..=0.8).contains(&v) && u.abs() <= (v + 0.9) * 0.6,
        "star" => in_star(u, v),
        "ring" => (0.55..=1.0).contains(&r),
        "cross" => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
        "diamond" => u.abs() + v.abs() <= 1.0,
        _ => (u.abs() * 0.866 + v.abs() * 0.5).max(v.abs()) <= 0.9,
    }
}

/// A five-pointed star, point up: inside the fan triangle (centre, vertex i, vertex i + 1) of the point's
/// sector, the vertices alternating between radius 1 and 0.42.
fn in_star(u: f32, v: f32) -> bool {
    use std::f32::consts::PI;
    let vertex = |i: usize| {
        let (a, r) = (
            -PI / 2.0 + i as f32 * PI / 5.0,
            if i.is_multiple_of(2) { 1.0 } else { 0.42 },
        );
        (r * a.cos(), r * a.sin())
    };
    let sector = ((v.atan2(u) + PI / 2.0).rem_euclid(2.0 * PI) / (PI / 5.0)) as usize % 10;
    let (a, b) = (vertex(sector), vertex(sector + 1));
    let cross = |p: (f32, f32)| (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
    cross((u, v)) * cross((0.0, 0.0)) >= 0.0
}

/// A generated image, its objects (drawing order) and its caption.
#[derive(Debug, Clone)]
pub struct Scene {
    pub image: RgbImage,
    pub objects: Vec<SceneObject>,
    pub background: Background,
    pub caption: String,
}

impl Scene {
    /// Object `i`'s visible pixels: `mask[y * size + x]`.
    pub fn mask(&self, i: usize) -> Vec<bool> {
        let (w, h) = self.image.dimensions();
        let mut mask = vec![false; (w * h) as usize];
        for y in 0..h {
            for x in 0..w {
                mask[(y * w + x) as usize] = self.objects[i].covers(x, y)
                    && !self.objects[i + 1..].iter().any(|o| o.covers(x, y));
            }
        }
        mask
    }

    /// What each patch of a `grid`×`grid` layout shows: the index of the shape covering most of it where
    /// that shape covers a quarter of it or more, else [`BACKGROUND_PATCH`]; every visible object
    /// labels at least the patch it covers most, so a small one is never all background. Dense shape
    /// labels for pretraining (`PretrainConfig::shape_labels`); the shape probe reads tokens at those
    /// most-covered patches.
    pub fn patch_shapes(&self, grid: usize) -> Vec<u32> {
        let size = self.image.width() as usize;
        let covs: Vec<Vec<f32>> = (0..self.objects.len())
            .map(|i| mask_coverage(&self.mask(i), size, grid))
            .collect();
        let mut labels: Vec<u32> = (0..grid * grid)
            .map(|k| {
                covs.iter()
                    .enumerate()
                    .filter(|(_, c)| c[k] >= 0.25)
                    .max_by(|a, b| a.1[k].total_cmp(&b.1[k]))
                    .map_or(BACKGROUND_PATCH, |(i, _)| self.objects[i].shape as u32)
            })
            .collect();
        for (i, c) in covs.iter().enumerate() {
            let (k, &best) = c
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .expect("a grid has patches");
            if best > 0.0 && labels[k] == BACKGROUND_PATCH {
                labels[k] = self.objects[i].shape as u32;
            }
        }
        labels
    }
}

/// The label of a patch no object covers enough (after the 8 shapes' indices).
pub const BACKGROUND_PATCH: u32 = SHAPES.len() as u32;

/// Per patch of a `grid`×`grid` layout over a `size`×`size` mask: the share of its pixels in the mask.
pub fn mask_coverage(mask: &[bool], size: usize, grid: usize) -> Vec<f32> {
    let mut cov = vec![0f32; grid * grid];
    for y in 0..size {
        for x in 0..size {
            if mask[y * size + x] {
                cov[(y * grid / size) * grid + x * grid / size] += 1.0;
            }
        }
    }
    let per_patch = (size * size) as f32 / (grid * grid) as f32;
    cov.iter().map(|c| c / per_patch).collect()
}

/// How objects are drawn: filled as in pretraining, or as thin outlines (a rendering shift, like
/// sketches next to photos, that a hand-crafted prompt reads less well).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    #[default]
    Filled,
    Outline,
}

/// What a generator draws.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneConfig {
    /// Square images of this side (the model's input size, so preprocessing leaves them as they are).
    pub size: u32,
    pub max_objects: usize,
    /// Pretraining scenes leave out [`HELD_OUT`]; evaluation scenes may contain them.
    pub allow_held_out: bool,
    /// One object of this (shape, colour) and nothing else (classification sets).
    pub only: Option<(usize, usize)>,
    pub style: Style,
    /// What makes colour insufficient (all zero: scenes as the first demo models saw them).
    pub levers: ShapeLevers,
}

impl Default for SceneConfig {
    fn default() -> Self {
        Self {
            size: 224,
            max_objects: 3,
            allow_held_out: false,
            only: None,
            style: Style::Filled,
            levers: ShapeLevers::default(),
        }
    }
}

/// The levers of METHODS §7a that make colour insufficient within a scene: a model trained on scenes
/// where colour alone tells captions apart learns colour only (the first demo models did). Each is a
/// share of scenes (or phrases); zero leaves a scene exactly as it was drawn without levers. The batch
/// levers (minimal pairs, shape-swapped negatives) are `train::pairs::StreamRecipe`'s.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ShapeLevers {
    /// Scenes of two or more objects whose objects all take one colour (and differ in shape).
    pub same_colour: f64,
    /// Scenes drawn in grey, with captions that name no colour.
    pub greyscale: f64,
    /// Phrases that put the shape first ("a square, red"): a causal text tower's shape token must then
    /// carry shape, not the colour it has already read.
    pub shape_first: f64,
}

impl ShapeLevers {
    /// The recipe of the shape-aware demo models.
    pub fn shape_recipe() -> Self {
        Self {
            same_colour: 0.5,
            greyscale: 0.2,
            shape_first: 0.3,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_shares(&[
            ("same-colour", self.same_colour),
            ("greyscale", self.greyscale),
            ("shape-first", self.shape_first),
        ])
    }
}

/// Each named share lies in [0, 1].
pub fn check_shares(shares: &[(&str, f64)]) -> Result<()> {
    match shares.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
        Some((name, v)) => Err(Error::invalid(format!(
            "the {name} share must lie in [0, 1] (got {v})"
        ))),
        None => Ok(()),
    }
}

/// Which rendering of a scene: as drawn, or its minimal-pair twin (the same layout, background and
/// caption template, every object's shape changed, or every colour permuted, the caption rewritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    #[default]
    Original,
    ShapeSwap,
    HuePermuted,
}

/// Scene `index` of the stream `seed`.
pub fn generate(seed: u64, index: u64, cfg: &SceneConfig) -> Result<Scene> {
    generate_variant(seed, index, cfg, Variant::Original)
}

/// Scene `index` of the stream `seed`, or one of its twins. The levers' draws come from a generator of
/// their own, so a scene without levers is the scene [`generate`] always drew, and a twin is its scene
/// with only the objects' shapes (or colours) and so the caption's words changed.
pub fn generate_variant(
    seed: u64,
    index: u64,
    cfg: &SceneConfig,
    variant: Variant,
) -> Result<Scene> {
    cfg.levers.validate()?;
    if cfg.size < 32 || cfg.max_objects == 0 {
        return Err(Error::invalid(format!(
            "scenes need images of at least 32 px and one object (got {} px, {})",
            cfg.size, cfg.max_objects
        )));
    }
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5ce4e5);
    let s = cfg.size as f32;
    let background = Background::ALL[rng.range(0, 4) as usize];
    let mut image = draw_background(background, cfg.size, &mut rng);
    let n = if cfg.only.is_some() {
        1
    } else {
        1 + rng.range(0, cfg.max_objects as u32) as usize
    };
    let mut objects: Vec<SceneObject> = Vec::with_capacity(n);
    for _ in 0..n {
        let (shape, colour) = cfg.only.unwrap_or_else(|| loop {
            let pair = (
                rng.range(0, COLOURS.len() as u32) as usize,
                rng.range(0, SHAPES.len() as u32) as usize,
            );
            if cfg.allow_held_out || !HELD_OUT.contains(&pair) {
                break (pair.1, pair.0);
            }
        });
        let large = rng.range(0, 2) == 1;
        let radius = s * if large { 0.17 } else { 0.10 } * (0.9 + 0.2 * unit(&mut rng));
        // Places apart from the others (a few tries; a crowded scene keeps fewer objects).
        let place = (0..40)
            .map(|_| {
                (
                    radius + unit(&mut rng) * (s - 2.0 * radius),
                    radius + unit(&mut rng) * (s - 2.0 * radius),
                )
            })
            .find(|&(x, y)| {
                objects.iter().all(|o| {
                    ((o.cx - x).powi(2) + (o.cy - y).powi(2)).sqrt() > (o.radius + radius) * 1.05
                })
            });
        let Some((cx, cy)) = place else { continue };
        let texture = [Texture::Solid, Texture::Striped, Texture::Dotted][rng.range(0, 3) as usize];
        objects.push(SceneObject {
            shape,
            colour,
            texture,
            large,
            cx,
            cy,
            radius,
        });
    }
    let mut levers = Rng::new(seed ^ index.wrapping_mul(0xd1b5_4a32_d192_ed03) ^ 0x1e7e45);
    let roll = |rng: &mut Rng, share: f64| share > 0.0 && f64::from(unit(rng)) < share;
    let allowed = |colour: usize, shape: usize| {
        cfg.allow_held_out || cfg.only.is_some() || !HELD_OUT.contains(&(colour, shape))
    };
    if objects.len() >= 2 && roll(&mut levers, cfg.levers.same_colour) {
        same_colour(&mut objects, &mut levers, &allowed);
    }
    let grey = roll(&mut levers, cfg.levers.greyscale);
    match variant {
        Variant::Original => {}
        Variant::ShapeSwap => swap_shapes(&mut objects, &mut levers, &allowed),
        // A grey scene has no colours to permute: its twin differs in shape.
        Variant::HuePermuted if grey => swap_shapes(&mut objects, &mut levers, &allowed),
        Variant::HuePermuted => permute_colours(&mut objects, &mut levers, &allowed),
    }
    for o in &objects {
        draw_object(&mut image, o, cfg.style);
    }
    if grey {
        for p in image.pixels_mut() {
            let l =
                (0.299 * f32::from(p.0[0]) + 0.587 * f32::from(p.0[1]) + 0.114 * f32::from(p.0[2]))
                    .round() as u8;
            p.0 = [l; 3];
        }
    }
    let wording = Wording {
        colours: !grey,
        shape_first: cfg.levers.shape_first,
    };
    let caption = caption(&objects, background, s, wording, &mut rng);
    Ok(Scene {
        image,
        objects,
        background,
        caption,
    })
}

fn unit(rng: &mut Rng) -> f32 {
    (rng.next_u64() >> 40) as f32 / 16_777_216.0
}

/// Every object takes one colour allowed with all their shapes, and the shapes become distinct: the
/// scene can then be told from its caption only by shape.
fn same_colour(objects: &mut [SceneObject], rng: &mut Rng, allowed: &dyn Fn(usize, usize) -> bool) {
    let start = objects[0].colour;
    let mut used: Vec<usize> = vec![];
    for o in objects.iter_mut() {
        if used.contains(&o.shape) {
            let free: Vec<usize> = (0..SHAPES.len()).filter(|s| !used.contains(s)).collect();
            o.shape = free[rng.range(0, free.len() as u32) as usize];
        }
        used.push(o.shape);
    }
    let colour = (0..COLOURS.len())
        .map(|k| (start + k) % COLOURS.len())
        .find(|&c| objects.iter().all(|o| allowed(c, o.shape)))
        .unwrap_or(start);
    for o in objects.iter_mut() {
        o.colour = colour;
    }
}

/// Every object's shape changes: two or more distinct shapes trade places (a red circle left of a blue
/// square becomes a red square left of a blue circle, NegCLIP's swap), else each takes another shape.
fn swap_shapes(objects: &mut [SceneObject], rng: &mut Rng, allowed: &dyn Fn(usize, usize) -> bool) {
    let shapes: Vec<usize> = objects.iter().map(|o| o.shape).collect();
    let n = shapes.len();
    let rotated = |i: usize| shapes[(i + 1) % n];
    let rotation_works =
        n >= 2 && (0..n).all(|i| rotated(i) != shapes[i] && allowed(objects[i].colour, rotated(i)));
    for i in 0..n {
        objects[i].shape = if rotation_works {
            rotated(i)
        } else {
            let other: Vec<usize> = (0..SHAPES.len())
                .filter(|&s| s != shapes[i] && allowed(objects[i].colour, s))
                .collect();
            other[rng.range(0, other.len() as u32) as usize]
        };
    }
}

/// Every object's colour is mapped through one permutation of the palette that moves each of them.
fn permute_colours(
    objects: &mut [SceneObject],
    rng: &mut Rng,
    allowed: &dyn Fn(usize, usize) -> bool,
) {
    for _ in 0..64 {
        let mut perm: Vec<usize> = (0..COLOURS.len()).collect();
        rng.shuffle(&mut perm);
        if objects
            .iter()
            .all(|o| perm[o.colour] != o.colour && allowed(perm[o.colour], o.shape))
        {
            for o in objects.iter_mut() {
                o.colour = perm[o.colour];
            }
            return;
        }
    }
}

fn draw_background(bg: Background, size: u32, rng: &mut Rng) -> RgbImage {
    let tint = |rng: &mut Rng| -> [f32; 3] { std::array::from_fn(|_| 90.0 + 80.0 * unit(rng)) };
    let (a, b) = (tint(rng), tint(rng));
    let mut img = RgbImage::from_fn(size, size, |x, y| match bg {
        Background::Plain | Background::Clutter => Rgb(a.map(|v| v as u8)),
        Background::Noise => {
            let n = (unit(rng) - 0.5) * 60.0;
            Rgb(a.map(|v| (v + n).clamp(0.0, 255.0) as u8))
        }
        Background::Gradient => {
            let t = (x + y) as f32 / (2 * size) as f32;
            Rgb(std::array::from_fn(|c| (a[c] + t * (b[c] - a[c])) as u8))
        }
    });
    if bg == Background::Clutter {
        // Faint strokes in the background's own hues: texture without objects.
        for _ in 0..12 {
            let (x0, y0) = (rng.range(0, size), rng.range(0, size));
            let (horizontal, len) = (rng.range(0, 2) == 0, rng.range(size / 10, size / 3));
            let colour = Rgb(b.map(|v| v as u8));
            for k in 0..len {
                let (x, y) = if horizontal {
                    (x0 + k, y0)
                } else {
                    (x0, y0 + k)
                };
                for t in 0..3 {
                    let (px, py) = if horizontal { (x, y + t) } else { (x + t, y) };
                    if px < size && py < size {
                        img.put_pixel(px, py, colour);
                    }
                }
            }
        }
    }
    img
}

fn draw_object(img: &mut RgbImage, o: &SceneObject, style: Style) {
    let (w, h) = img.dimensions();
    let c = COLOURS[o.colour].1;
    // Stripes and dots alternate with a darker shade of the same colour (a lighter one for black), so
    // the colour word stays true.
    let dark = c.iter().map(|&v| u32::from(v)).sum::<u32>() < 120;
    let shade = c.map(|v| {
        if dark {
            v + ((255 - v) as f32 * 0.45) as u8
        } else {
            (v as f32 * 0.55) as u8
        }
    });
    let period = (o.radius / 2.5).max(3.0);
    let (x0, x1) = (
        (o.cx - o.radius).floor().max(0.0) as u32,
        ((o.cx + o.radius).ceil() as u32).min(w),
    );
    let (y0, y1) = (
        (o.cy - o.radius).floor().max(0.0) as u32,
        ((o.cy + o.radius).ceil() as u32).min(h),
    );
    for y in y0..y1 {
        for x in x0..x1 {
            if !o.covers(x, y) {
                continue;
            }
            if style == Style::Outline {
                // A stroke a third of the half-size wide (at least 2 px): inside pixels with an outside
                // pixel that far away in one of eight directions. Thick enough that the shape stays legible.
                let w = (o.radius / 3.0).max(2.0);
                let edge = [
                    (1f32, 0f32),
                    (-1.0, 0.0),
                    (0.0, 1.0),
                    (0.0, -1.0),
                    (0.7, 0.7),
                    (-0.7, 0.7),
                    (0.7, -0.7),
                    (-0.7, -0.7),
                ]
                .iter()
                .any(|&(dx, dy)| {
                    let (nx, ny) = (x as f32 + dx * w, y as f32 + dy * w);
                    nx < 0.0 || ny < 0.0 || !o.covers(nx.round() as u32, ny.round() as u32)
                });
                if edge {
                    img.put_pixel(x, y, Rgb(c));
                }
                continue;
            }
            let (fx, fy) = (x as f32 - o.cx, y as f32 - o.cy);
            let alt = match o.texture {
                Texture::Solid => false,
                Texture::Striped => ((fx + fy) / period).floor().rem_euclid(2.0) == 1.0,
                Texture::Dotted => {
                    let (gx, gy) = (
                        (fx / period).rem_euclid(1.0) - 0.5,
                        (fy / period).rem_euclid(1.0) - 0.5,
                    );
                    gx * gx + gy * gy < 0.09
                }
            };
            img.put_pixel(x, y, Rgb(if alt { shade } else { c }));
        }
    }
}

/// How a caption words its objects.
#[derive(Debug, Clone, Copy)]
struct Wording {
    colours: bool,
    shape_first: f64,
}

/// One of many templates, naming some or all objects.
fn caption(
    objects: &[SceneObject],
    bg: Background,
    size: f32,
    wording: Wording,
    rng: &mut Rng,
) -> String {
    let phrase = |o: &SceneObject, rng: &mut Rng| {
        let (size, texture) = (rng.range(0, 2) == 1, rng.range(0, 2) == 1);
        // Drawn only when the lever is on, so captions without it are the ones drawn before it.
        let first = wording.shape_first > 0.0 && f64::from(unit(rng)) < wording.shape_first;
        o.phrase(size, texture, wording.colours, first)
    };
    let with_bg = rng.range(0, 3) == 0;
    let tail = if with_bg {
        format!(" on a {} background", bg.word())
    } else {
        String::new()
    };
    let text = match objects {
        [] => format!(
            "a empty{} picture",
            if with_bg {
                format!(" {}", bg.word())
            } else {
                String::new()
            }
        ),
        [a] => match rng.range(0, 4) {
            0 => format!("a {}{tail}", phrase(a, rng)),
            1 => format!("a photo of a {}{tail}", phrase(a, rng)),
            2 => format!(
                "there is a {} in the {}{tail}",
                phrase(a, rng),
                place_word(a, size)
            ),
            _ => format!("a single {}{tail}", phrase(a, rng)),
        },
        [a, b, rest @ ..] => {
            let (pa, pb) = (phrase(a, rng), phrase(b, rng));
            let relation = relation(a, b);
            let all = rest.is_empty() || rng.range(0, 2) == 0;
            let more = if all {
                rest.iter()
                    .map(|o| format!(" and a {}", o.phrase(false, false, wording.colours, false)))
                    .collect::<String>()
            } else {
                String::new()
            };
            match rng.range(0, 4) {
                0 => format!("a {pa} {relation} a {pb}{more}{tail}"),
                1 => format!("a {pa} and a {pb}{more}{tail}"),
                2 => format!(
                    "{} shapes: a {pa}, a {pb}{more}{tail}",
                    number_word(objects.len())
                ),
                _ => format!("a {pa}{tail}"),
            }
        }
    };
    format!("{}.", with_articles(&text))
}

/// "a orange" → "an orange": the article before a word starting with a vowel.
fn with_articles(text: &str) -> String {
    let words: Vec<&str> = text.split(' ').collect();
    let mut out = Vec::with_capacity(words.len());
    for (i, w) in words.iter().enumerate() {
        let next_vowel = words
            .get(i + 1)
            .and_then(|n| n.chars().next())
            .is_some_and(|c| "aeiou".contains(c));
        out.push(if *w == "a" && next_vowel { "an" } else { w });
    }
    out.join(" ")
}

fn relation(a: &SceneObject, b: &SceneObject) -> &'static str {
    let (dx, dy) = (b.cx - a.cx, b.cy - a.cy);
    if dx.abs() >= dy.abs() {
        if dx > 0.0 {
            "left of"
        } else {
            "right of"
        }
    } else if dy > 0.0 {
        "above"
    } else {
        "below"
    }
}

/// Which third of the image, across and down, the object's centre is in.
fn place_word(o: &SceneObject, size: f32) -> &'static str {
    let third = |v: f32| (3.0 * v / size).floor().clamp(0.0, 2.0) as usize;
    let words = [
        ["top left", "top", "top right"],
        ["left", "middle", "right"],
        ["bottom left", "bottom", "bottom right"],
    ];
    words[third(o.cy)][third(o.cx)]
}

fn number_word(n: usize) -> &'static str {
    ["no", "one", "two", "three", "four"]
        .get(n)
        .copied()
        .unwrap_or("many")
}

/// Writes `n` pairs as `NNNNNN.png` + `NNNNNN.txt` (the layout img2dataset writes) and `NNNNNN.json`
/// (the objects, for masks), into `dir`.
pub fn write_pairs(dir: &Path, n: usize, seed: u64, cfg: &SceneConfig) -> Result<()> {
    let scenes = (0..n as u64).map(|i| generate(seed, i, cfg));
    write_scenes(dir, scenes)
}

/// Writes `n` pairs as WebDataset shards of `per_shard` (`KEY.png`, `KEY.txt`, `KEY.json` with the
/// objects), as img2dataset lays them out: the same scenes, captions and objects as [`write_pairs`].
pub fn write_pair_shards(
    dir: &Path,
    n: usize,
    seed: u64,
    cfg: &SceneConfig,
    per_shard: usize,
) -> Result<()> {
    super::webdataset::write_shards(dir, n, per_shard, &|i| {
        let scene = generate(seed, i as u64, cfg)?;
        let mut png = Vec::new();
        scene
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| Error::invalid(format!("encoding scene {i}: {e}")))?;
        let meta = serde_json::json!({ "objects": scene.objects, "background": scene.background });
        Ok(vec![
            ("png", png),
            ("txt", scene.caption.into_bytes()),
            ("json", meta.to_string().into_bytes()),
        ])
    })
}

/// Writes `scenes` as a folder of pairs: NNNNNN.png, its caption (.txt) and its objects (.json).
pub fn write_scenes(dir: &Path, scenes: impl IntoIterator<Item = Result<Scene>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (i, scene) in scenes.into_iter().enumerate() {
        let scene = scene?;
        let stem = dir.join(format!("{i:06}"));
        let png = stem.with_extension("png");
        scene
            .image
            .save(&png)
            .map_err(|e| Error::invalid(format!("writing {}: {e}", png.display())))?;
        write_atomic(&stem.with_extension("txt"), scene.caption.as_bytes())?;
        let meta = serde_json::json!({ "objects": scene.objects, "background": scene.background });
        write_atomic(&stem.with_extension("json"), meta.to_string().as_bytes())?;
    }
    Ok(())
}

/// `count` scenes of two or three objects, all of one colour and of distinct shapes, from stream `seed`
/// at `size` px; held-out colour–shape pairs included (a model is tested on what it never saw too).
pub fn same_colour_scenes(seed: u64, count: usize, size: u32) -> Result<Vec<Scene>> {
    let cfg = SceneConfig {
        size,
        allow_held_out: true,
        levers: ShapeLevers {
            same_colour: 1.0,
            ..ShapeLevers::default()
        },
        ..SceneConfig::default()
    };
    let mut out = Vec::with_capacity(count);
    for i in 0.. {
        if out.len() == count {
            break;
        }
        if i > 20 * count as u64 + 100 {
            return Err(Error::invalid(
                "could not draw enough scenes of two objects",
            ));
        }
        let s = generate(seed, i, &cfg)?;
        if s.objects.len() >= 2 {
            out.push(s);
        }
    }
    Ok(out)
}

/// An image and its caption, as read from a folder of pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionPair {
    pub image: PathBuf,
    pub caption: String,
}

/// The pairs of a folder: `captions.tsv` (`file<TAB>caption`) or `captions.jsonl` (`{"image": …,
/// "caption": …}`) beside the images, else every image with a same-named `.txt`. Sorted by file name.
pub fn read_pairs(dir: &Path) -> Result<Vec<CaptionPair>> {
    let bad = |file: &Path, why: String| {
        Error::bad_file(file, why, "one image path and one caption per line")
    };
    let mut pairs = Vec::new();
    let tsv = dir.join("captions.tsv");
    let jsonl = dir.join("captions.jsonl");
    if tsv.is_file() || jsonl.is_file() {
        let (file, is_tsv) = if tsv.is_file() {
            (tsv, true)
        } else {
            (jsonl, false)
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let (image, caption) = if is_tsv {
                let (a, b) = line.split_once('\t').ok_or_else(|| {
                    bad(
                        &file,
                        format!("line {} has no tab between file and caption", n + 1),
                    )
                })?;
                (a.to_string(), b.to_string())
            } else {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| bad(&file, format!("line {}: {e}", n + 1)))?;
                let field = |k: &str| {
                    v[k].as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(&file, format!("line {} has no \"{k}\" string", n + 1)))
                };
                (field("image")?, field("caption")?)
            };
            pairs.push(CaptionPair {
                image: dir.join(image.trim()),
                caption: caption.trim().to_string(),
            });
        }
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let is_image = path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                super::folder::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
            });
            let txt = path.with_extension("txt");
            if is_image && txt.is_file() {
                let caption = std::fs::read_to_string(&txt).map_err(|e| Error::io(&txt, e))?;
                pairs.push(CaptionPair {
                    image: path,
                    caption: caption.trim().to_string(),
                });
            }
        }
    }
    pairs.sort_by(|a, b| a.image.cmp(&b.image));
    if pairs.is_empty() {
        return Err(Error::bad_file(dir, "holds no image–caption pairs", "give a folder of NAME.jpg + NAME.txt, or a captions.tsv / captions.jsonl beside the images"));
    }
    if let Some(p) = pairs.iter().find(|p| !p.image.is_file()) {
        return Err(Error::bad_file(
            &p.image,
            "is listed with a caption but does not exist",
            "fix the captions file or add the image",
        ));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenes_are_deterministic_varied_and_keep_out_the_held_out_pairs() {
        let cfg = SceneConfig {
            size: 96,
            ..SceneConfig::default()
        };
        let a = generate(7, 3, &cfg).unwrap();
        let b = generate(7, 3, &cfg).unwrap();
        assert_eq!(
            (a.image.as_raw(), &a.caption, &a.objects),
            (b.image.as_raw(), &b.caption, &b.objects)
        );
        let scenes: Vec<Scene> = (0..300).map(|i| generate(7, i, &cfg).unwrap()).collect();
        let objects: Vec<&SceneObject> = scenes.iter().flat_map(|s| &s.objects).collect();
        for o in &objects {
            assert!(
                !HELD_OUT.contains(&(o.colour, o.shape)),
                "a held-out pair in pretraining: {o:?}"
            );
        }
        let seen = |f: &dyn Fn(&SceneObject) -> usize, n: usize| {
            (0..n).all(|k| objects.iter().any(|o| f(o) == k))
        };
        assert!(
            seen(&|o| o.shape, SHAPES.len()) && seen(&|o| o.colour, COLOURS.len()),
            "every shape and colour occurs"
        );
        assert!(Background::ALL
            .iter()
            .all(|bg| scenes.iter().any(|s| s.background == *bg)));
        assert!((1..=3).all(|n| scenes.iter().any(|s| s.objects.len() == n)));
        let captions: std::collections::HashSet<&str> =
            scenes.iter().map(|s| s.caption.as_str()).collect();
        assert!(captions.len() > 250, "captions vary: {}", captions.len());
        assert!(scenes
            .iter()
            .any(|s| s.caption.contains(" left of ") || s.caption.contains(" above ")));
        // Every caption names the first object's shape and colour.
        for s in &scenes {
            let o = &s.objects[0];
            assert!(
                s.caption.contains(o.shape_name()) && s.caption.contains(o.colour_name()),
                "{} for {o:?}",
                s.caption
            );
        }
        // Evaluation scenes can hold them.
        let eval = SceneConfig {
            allow_held_out: true,
            ..cfg
        };
        assert!((0..300)
            .flat_map(|i| generate(7, i, &eval).unwrap().objects)
            .any(|o| HELD_OUT.contains(&(o.colour, o.shape))));
    }

    #[test]
    fn levers_make_colour_insufficient_and_twins_change_only_shapes_or_colours() {
        let all = SceneConfig {
            size: 96,
            levers: ShapeLevers {
                same_colour: 1.0,
                greyscale: 0.0,
                shape_first: 1.0,
            },
            ..SceneConfig::default()
        };
        let colour_words = |c: &str| {
            c.split([' ', ',', '.'])
                .filter(|w| COLOURS.iter().any(|(n, _)| n == w))
                .count()
        };
        for i in 0..200 {
            let s = generate(11, i, &all).unwrap();
            let shapes: std::collections::HashSet<usize> =
                s.objects.iter().map(|o| o.shape).collect();
            assert!(
                s.objects.iter().all(|o| o.colour == s.objects[0].colour),
                "{i}: one colour"
            );
            assert_eq!(shapes.len(), s.objects.len(), "{i}: distinct shapes");
            assert!(s
                .objects
                .iter()
                .all(|o| !HELD_OUT.contains(&(o.colour, o.shape))));
            let o = &s.objects[0];
            assert!(
                s.caption.contains(&format!("{},", o.shape_name()))
                    || s.caption.contains(&format!("{}.", o.shape_name()))
                    || !s.caption.contains(o.colour_name()),
                "{i}: shape first in '{}'",
                s.caption
            );
            // A twin: the same places, sizes and caption template; every shape (or colour) changed.
            for (variant, shapes_change) in
                [(Variant::ShapeSwap, true), (Variant::HuePermuted, false)]
            {
                let t = generate_variant(11, i, &all, variant).unwrap();
                assert_eq!(t.objects.len(), s.objects.len());
                for (a, b) in s.objects.iter().zip(&t.objects) {
                    assert_eq!(
                        (a.cx, a.cy, a.radius, a.texture),
                        (b.cx, b.cy, b.radius, b.texture)
                    );
                    assert_eq!(a.shape != b.shape, shapes_change, "{i} {variant:?}");
                    assert_eq!(a.colour != b.colour, !shapes_change, "{i} {variant:?}");
                    assert!(
                        !HELD_OUT.contains(&(b.colour, b.shape)),
                        "{i} {variant:?}: {b:?}"
                    );
                }
                assert_ne!(t.caption, s.caption, "{i} {variant:?}");
                assert_ne!(t.image, s.image, "{i} {variant:?}");
                let words = |c: &str| c.split([' ', ',', '.']).count();
                assert_eq!(
                    words(&t.caption),
                    words(&s.caption),
                    "{} / {}",
                    s.caption,
                    t.caption
                );
            }
        }
        let grey = SceneConfig {
            levers: ShapeLevers {
                greyscale: 1.0,
                ..ShapeLevers::default()
            },
            ..all.clone()
        };
        for i in 0..50 {
            let s = generate(11, i, &grey).unwrap();
            assert!(
                s.image
                    .pixels()
                    .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]),
                "{i}: grey"
            );
            assert_eq!(
                colour_words(&s.caption),
                0,
                "{i}: '{}' names no colour",
                s.caption
            );
            assert!(s.caption.contains(s.objects[0].shape_name()));
            // A grey scene's twin differs in shape, whichever twin was asked for.
            let t = generate_variant(11, i, &grey, Variant::HuePermuted).unwrap();
            assert!(s
                .objects
                .iter()
                .zip(&t.objects)
                .all(|(a, b)| a.shape != b.shape));
        }
        // Shares in between: about that share of scenes.
        let half = SceneConfig {
            levers: ShapeLevers::shape_recipe(),
            ..all.clone()
        };
        let n = 400;
        let greys = (0..n)
            .filter(|&i| colour_words(&generate(3, i, &half).unwrap().caption) == 0)
            .count();
        assert!(
            (40..=130).contains(&greys),
            "{greys} of {n} grey at a share of 0.2"
        );
        // No lever: the scene drawn before levers existed, whatever the twin draws.
        let plain = SceneConfig {
            size: 96,
            ..SceneConfig::default()
        };
        assert_eq!(
            generate(11, 5, &plain).unwrap().caption,
            generate_variant(11, 5, &plain, Variant::Original)
                .unwrap()
                .caption
        );
        let bad = SceneConfig {
            levers: ShapeLevers {
                greyscale: 1.5,
                ..ShapeLevers::default()
            },
            ..plain
        };
        assert!(generate(1, 1, &bad)
            .unwrap_err()
            .to_string()
            .contains("greyscale"));
    }

    #[test]
    fn masks_are_the_visible_pixels_drawn_in_the_object_colour() {
        let cfg = SceneConfig {
            size: 128,
            ..SceneConfig::default()
        };
        for i in 0..40 {
            let s = generate(1, i, &cfg).unwrap();
            for (k, o) in s.objects.iter().enumerate() {
                let mask = s.mask(k);
                let on: Vec<usize> = (0..mask.len()).filter(|&p| mask[p]).collect();
                let area = std::f32::consts::PI * o.radius * o.radius;
                assert!(
                    on.len() as f32 > 0.2 * area,
                    "object {k} of scene {i} is mostly hidden"
                );
                let c = COLOURS[o.colour].1;
                let in_colour = on
                    .iter()
                    .filter(|&&p| s.image.get_pixel(p as u32 % 128, p as u32 / 128).0 == c)
                    .count();
                assert!(
                    in_colour as f32 >= 0.4 * on.len() as f32,
                    "scene {i} object {k}: {in_colour} of {} pixels in its colour",
                    on.len()
                );
            }
        }
    }

    #[test]
    fn patch_labels_name_the_shape_each_patch_shows_and_every_object_somewhere() {
        let cfg = SceneConfig {
            size: 64,
            ..SceneConfig::default()
        };
        let grid = 8;
        let (mut object_patches, mut background) = (0, 0);
        for i in 0..60 {
            let s = generate(4, i, &cfg).unwrap();
            let labels = s.patch_shapes(grid);
            assert_eq!(labels.len(), grid * grid);
            let covs: Vec<Vec<f32>> = (0..s.objects.len())
                .map(|k| mask_coverage(&s.mask(k), 64, grid))
                .collect();
            for (k, &label) in labels.iter().enumerate() {
                let most = covs
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1[k].total_cmp(&b.1[k]))
                    .map(|(o, c)| (o, c[k]));
                match most {
                    // Mostly one object's: its shape.
                    Some((o, c)) if c >= 0.25 => {
                        assert_eq!(label, s.objects[o].shape as u32, "scene {i} patch {k}");
                        object_patches += 1;
                    }
                    // Touched by nothing: background.
                    Some((_, c)) if c <= 0.0 => {
                        assert_eq!(label, BACKGROUND_PATCH, "scene {i} patch {k}");
                        background += 1;
                    }
                    None => unreachable!("a scene has an object"),
                    _ => {}
                }
            }
            // Every visible object, however small, names at least one patch.
            for (o, c) in covs.iter().enumerate() {
                if c.iter().any(|&v| v > 0.0) {
                    assert!(
                        labels.contains(&(s.objects[o].shape as u32)),
                        "scene {i}: object {o} labels no patch"
                    );
                }
            }
        }
        assert!(
            object_patches > 100 && background > 1000,
            "{object_patches} {background}"
        );
    }

    #[test]
    fn pairs_are_read_from_txt_files_tsv_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SceneConfig {
            size: 64,
            ..SceneConfig::default()
        };
        write_pairs(dir.path(), 3, 5, &cfg).unwrap();
        let pairs = read_pairs(dir.path()).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1].caption, generate(5, 1, &cfg).unwrap().caption);
        std::fs::write(
            dir.path().join("captions.tsv"),
            "000002.png\ta tsv caption\n000000.png\tanother\n",
        )
        .unwrap();
        let tsv = read_pairs(dir.path()).unwrap();
        assert_eq!((tsv.len(), tsv[1].caption.as_str()), (2, "a tsv caption"));
        std::fs::remove_file(dir.path().join("captions.tsv")).unwrap();
        std::fs::write(dir.path().join("captions.jsonl"), "{\"image\": \"000001.png\", \"caption\": \"from jsonl\"}\n{\"image\": \"missing.png\", \"caption\": \"x\"}\n").unwrap();
        let err = read_pairs(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("missing.png") && err.contains("does not exist"),
            "{err}"
        );
        std::fs::write(dir.path().join("captions.jsonl"), "{\"image\": 3}\n").unwrap();
        assert!(read_pairs(dir.path())
            .unwrap_err()
            .to_string()
            .contains("\"image\" string"));
        let empty = tempfile::tempdir().unwrap();
        assert!(read_pairs(empty.path())
            .unwrap_err()
            .to_string()
            .contains("no image–caption pairs"));
    }
}
