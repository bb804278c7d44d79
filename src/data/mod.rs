//! Datasets on disk and the images in them.

pub mod augment;
pub mod fewshot;
pub mod folder;
pub mod synth;

pub use folder::{DatasetFolder, Sample, Split};
