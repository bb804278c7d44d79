//! Drawing maps over images: colormaps, and heatmap/selection overlays written as PNG by the CLI. The
//! same normalised grid values ([`heatmap::GridMap`]) and colormap lookup tables are what the app's GPU
//! shader samples, so the PNG and the window show the same picture.

pub mod colormap;
pub mod heatmap;

pub use colormap::Colormap;
pub use heatmap::{GridMap, HeatmapStyle};

/// The overlay shader the app draws alignment maps with (compiled into the binary, so the file cannot go
/// missing at run time).
pub const HEATMAP_WGSL: &str = include_str!("../../shaders/heatmap.wgsl");

#[cfg(all(test, feature = "gui"))]
mod tests {
    /// A typo in the shader fails here, not in front of a user.
    #[test]
    fn heatmap_shader_parses_and_validates() {
        use wgpu::naga;
        let module = naga::front::wgsl::parse_str(super::HEATMAP_WGSL).unwrap_or_else(|e| panic!("{}", e.emit_to_string(super::HEATMAP_WGSL)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .expect("valid shader");
        assert!(module.entry_points.iter().any(|e| e.name == "fs_main"));
    }
}
