//! Classification folders drawn from the captioned scenes' world, so the demo models (pretrained on
//! scenes) can be tested on what they learned: one object per image, `train/val/test/<class>/`.
//!
//! - `objects`: a class per colour–shape pair, "red star", all 64 of them, including the [`HELD_OUT`]
//!   pairs pretraining never showed: zero-shot on those tests composition (FILIP's zero-shot claim).
//! - `shapes`: a class per shape, filled, any colour; `outlines`: the same drawn as outlines.
//! - `warm-light`: a class per colour, under a warm colour cast: a rendering shift from pretraining where
//!   the hand-crafted prompt is weak and learned prompts earn their keep (CoOp's claim).

use std::path::Path;

use super::scenes::{generate, SceneConfig, Style, COLOURS, HELD_OUT, SHAPES};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneSet {
    Objects,
    /// A class per shape, filled, any colour.
    Shapes,
    Outlines,
    /// A class per colour, any shape, seen under warm sodium-like light: every pixel's channels scaled by
    /// (1.0, 0.7, 0.3), so a white shape looks orange and a blue one nearly black.
    WarmLight,
}

impl SceneSet {
    /// Each class's folder name and its (shape, colour); outlines take a colour per image.
    pub fn classes(self) -> Vec<(String, usize, Option<usize>)> {
        match self {
            SceneSet::Objects => (0..COLOURS.len())
                .flat_map(|c| {
                    (0..SHAPES.len())
                        .map(move |s| (format!("{}_{}", COLOURS[c].0, SHAPES[s]), s, Some(c)))
                })
                .collect(),
            SceneSet::Shapes | SceneSet::Outlines => SHAPES
                .iter()
                .enumerate()
                .map(|(s, name)| (name.to_string(), s, None))
                .collect(),
            SceneSet::WarmLight => COLOURS
                .iter()
                .enumerate()
                .map(|(c, (name, _))| (name.to_string(), usize::MAX, Some(c)))
                .collect(),
        }
    }
}

/// Whether a class folder of the `objects` set holds a colour–shape pair pretraining left out.
pub fn is_held_out(class_dir: &str) -> bool {
    HELD_OUT
        .iter()
        .any(|&(c, s)| class_dir == format!("{}_{}", COLOURS[c].0, SHAPES[s]))
}

/// Writes `set` at `size` px with `split` = (train, val, test) images per class into `root` (a new folder).
pub fn write_scene_set(
    root: &Path,
    set: SceneSet,
    split: (usize, usize, usize),
    size: u32,
    seed: u64,
) -> Result<()> {
    if size < 32 {
        return Err(Error::invalid(format!(
            "scene images need at least 32 px (got {size})"
        )));
    }
    crate::error::create_dir_atomic(root, |tmp| {
        let style = if set == SceneSet::Outlines {
            Style::Outline
        } else {
            Style::Filled
        };
        // An empty split gets no folders (an empty class folder is an error when the set is opened).
        for (s, (split_name, n)) in [("train", split.0), ("val", split.1), ("test", split.2)]
            .into_iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
        {
            for (k, (name, shape, colour)) in set.classes().into_iter().enumerate() {
                let dir = tmp.join(split_name).join(&name);
                std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
                for i in 0..n {
                    // Every (split, class, image) its own stream position: splits never share an image.
                    let index = ((s * 1000 + k) * 100_000 + i) as u64;
                    let colour = colour.unwrap_or((i * 3 + k + s) % COLOURS.len());
                    let shape = if shape == usize::MAX {
                        (i * 5 + k + s) % SHAPES.len()
                    } else {
                        shape
                    };
                    let cfg = SceneConfig {
                        size,
                        max_objects: 1,
                        allow_held_out: true,
                        only: Some((shape, colour)),
                        style,
                        ..SceneConfig::default()
                    };
                    let mut scene = generate(seed, index, &cfg)?;
                    if set == SceneSet::WarmLight {
                        for p in scene.image.pixels_mut() {
                            p.0 = [
                                p.0[0],
                                (f32::from(p.0[1]) * 0.7) as u8,
                                (f32::from(p.0[2]) * 0.3) as u8,
                            ];
                        }
                    }
                    let path = dir.join(format!("{i:04}.png"));
                    scene
                        .image
                        .save(&path)
                        .map_err(|e| Error::invalid(format!("writing {}: {e}", path.display())))?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DatasetFolder;

    #[test]
    fn scene_sets_are_split_folders_with_named_classes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("objects");
        write_scene_set(&root, SceneSet::Objects, (1, 0, 1), 48, 3).unwrap();
        let ds = DatasetFolder::open(&root).unwrap();
        assert_eq!(ds.class_names.len(), 64);
        assert!(ds.class_names.contains(&"red star".to_string()));
        assert_eq!(
            ds.class_dirs.iter().filter(|d| is_held_out(d)).count(),
            HELD_OUT.len()
        );
        let outlines = dir.path().join("outlines");
        write_scene_set(&outlines, SceneSet::Outlines, (2, 1, 1), 64, 3).unwrap();
        let ds = DatasetFolder::open(&outlines).unwrap();
        let mut shapes: Vec<String> = SHAPES.iter().map(|s| s.to_string()).collect();
        shapes.sort();
        assert_eq!(ds.class_names, shapes);
        // An outline is a stroke: far fewer pixels in the object's colour than the object covers.
        let cfg = SceneConfig {
            size: 128,
            max_objects: 1,
            allow_held_out: true,
            only: Some((0, 0)),
            style: Style::Outline,
            ..SceneConfig::default()
        };
        let scene = generate(3, 0, &cfg).unwrap();
        let o = &scene.objects[0];
        let area = (0..128u32)
            .flat_map(|y| (0..128u32).map(move |x| (x, y)))
            .filter(|&(x, y)| o.covers(x, y))
            .count();
        let stroke = scene.image.pixels().filter(|p| p.0 == COLOURS[0].1).count();
        assert!(
            stroke > 0 && stroke < area * 6 / 10,
            "stroke {stroke} of {area}"
        );
    }
}
