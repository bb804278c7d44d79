//! Datasets on disk and the images in them.

pub mod augment;
pub mod classnames;
pub mod fewshot;
pub mod folder;
pub mod masked;
pub mod scene_sets;
pub mod scenes;
pub mod synth;
pub mod synth_fine;
pub mod synth_region;
pub mod webdataset;

pub use folder::{DatasetFolder, Sample, Split};
