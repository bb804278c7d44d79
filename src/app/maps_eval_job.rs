//! Align's *Evaluate maps*, run on a worker thread: the pointing game of the chosen explanation
//! methods on captioned scenes drawn at the model's size (each object's mask is known), exactly what
//! `promptscope pointing --methods` plays with the same count and seed, or on the open dataset's images
//! that have masks (`pointing --data`).

use crate::align::maps::MapMethod;
use crate::align::pointing::{pointing_of_methods, MethodsPointing, PointingSet};
use crate::clip::LoadedClip;
use crate::error::{Error, Result};
use crate::progress::Progress;

/// What to evaluate: the methods, and which scenes (`pointing`'s `--count` and `--seed`), or a folder
/// of masked images instead.
#[derive(Debug, Clone, PartialEq)]
pub struct MapsEvalRequest {
    pub methods: Vec<MapMethod>,
    pub count: usize,
    pub seed: u64,
    pub masked: Option<std::path::PathBuf>,
}

pub fn run(
    clip: &LoadedClip,
    req: &MapsEvalRequest,
    progress: &dyn Progress,
) -> Result<MethodsPointing> {
    if req.methods.is_empty() || req.count == 0 {
        return Err(Error::invalid(
            "choose at least one method and one scene to evaluate",
        ));
    }
    let set = match &req.masked {
        Some(root) => PointingSet::Masked(root.clone()),
        None => PointingSet::Scenes {
            count: req.count,
            seed: req.seed,
            held_out: false,
        },
    };
    pointing_of_methods(clip, &set, &req.methods, progress)
}
