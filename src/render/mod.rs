//! Drawing maps over images: colormaps, and heatmap/selection overlays written as PNG by the CLI. The
//! same normalised grid values ([`heatmap::GridMap`]), colormap lookup tables and [`HeatmapStyle`] are
//! what the app's GPU shader (`app::overlay`) takes, so the PNG and the window show the same picture.

pub mod colormap;
pub mod heatmap;

pub use colormap::Colormap;
pub use heatmap::{GridMap, HeatmapStyle};
