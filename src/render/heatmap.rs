//! Maps on the patch grid drawn over the model-input image (the resized and cropped RGB the model saw,
//! so patches line up with pixels): a colormapped heatmap, a categorical map (which word each patch
//! aligns with), and SsVP's kept patches outlined.
//!
//! Upsampling is bilinear between patch centres with the edges clamped, which is exactly what a GPU
//! sampler with linear filtering and clamp-to-edge does with the grid as a texture: the PNG and the app
//! agree.

use std::io::Cursor;
use std::path::Path;

use image::{ImageFormat, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::colormap::{Colormap, CATEGORICAL};
use crate::error::{write_atomic, Error, Result};

/// Grid values normalised to 0..1 (min → 0, max → 1; a constant map is all 0): what a shader samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GridMap {
    /// `[h, w]`.
    pub grid: [usize; 2],
    /// Row-major, `h·w` values in 0..1.
    pub values: Vec<f32>,
    /// The raw values' range, for a legend.
    pub min: f32,
    pub max: f32,
}

impl GridMap {
    pub fn new(values: &[f32], grid: [usize; 2]) -> Result<Self> {
        let [h, w] = grid;
        if h == 0 || w == 0 || values.len() != h * w {
            return Err(Error::invalid(format!(
                "a {h}×{w} grid needs {} values, got {}",
                h * w,
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("the map has non-finite values"));
        }
        let min = values.iter().copied().fold(f32::INFINITY, f32::min);
        let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let span = max - min;
        let values = values
            .iter()
            .map(|v| if span > 0.0 { (v - min) / span } else { 0.0 })
            .collect();
        Ok(Self {
            grid,
            values,
            min,
            max,
        })
    }

    /// The values as little-endian f32 bytes, row-major: an `R32Float` texture of `w`×`h` texels.
    pub fn texture_bytes(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Bilinear value at pixel `(x, y)` of a `width`×`height` image covering the grid.
    fn at_pixel(&self, x: u32, y: u32, width: u32, height: u32) -> f32 {
        let [h, w] = self.grid;
        // Pixel centre in grid units, measured from the first cell's centre, clamped to the edge cells.
        let gx = ((x as f32 + 0.5) * w as f32 / width as f32 - 0.5).clamp(0.0, (w - 1) as f32);
        let gy = ((y as f32 + 0.5) * h as f32 / height as f32 - 0.5).clamp(0.0, (h - 1) as f32);
        let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
        let v = |r: usize, c: usize| self.values[r * w + c];
        let top = v(y0, x0) * (1.0 - fx) + v(y0, x1) * fx;
        let bottom = v(y1, x0) * (1.0 - fx) + v(y1, x1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    /// The map upsampled to `width`×`height`, row-major.
    pub fn upsample(&self, width: u32, height: u32) -> Vec<f32> {
        (0..height)
            .flat_map(|y| (0..width).map(move |x| self.at_pixel(x, y, width, height)))
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HeatmapStyle {
    pub colormap: Colormap,
    /// 0 shows only the image, 1 only the map.
    pub opacity: f32,
    /// Thin lines on the patch borders.
    pub grid_lines: bool,
    /// Map values (0..1 of the map's range) below this show the image alone: only the strongest
    /// patches stay coloured.
    pub threshold: f32,
}

impl Default for HeatmapStyle {
    fn default() -> Self {
        Self {
            colormap: Colormap::Viridis,
            opacity: 0.55,
            grid_lines: false,
            threshold: 0.0,
        }
    }
}

fn check_opacity(opacity: f32) -> Result<()> {
    if (0.0..=1.0).contains(&opacity) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "opacity must be between 0 and 1, not {opacity}"
        )))
    }
}

fn blend(under: Rgb<u8>, over: [u8; 3], alpha: f32) -> Rgb<u8> {
    Rgb(std::array::from_fn(|c| {
        (f32::from(under[c]) * (1.0 - alpha) + f32::from(over[c]) * alpha).round() as u8
    }))
}

/// The heatmap of `map` over `base`.
pub fn overlay(base: &RgbImage, map: &GridMap, style: &HeatmapStyle) -> Result<RgbImage> {
    check_opacity(style.opacity)?;
    let (width, height) = base.dimensions();
    let up = map.upsample(width, height);
    let mut out = RgbImage::from_fn(width, height, |x, y| {
        let t = up[(y * width + x) as usize];
        let alpha = if t < style.threshold {
            0.0
        } else {
            style.opacity
        };
        blend(*base.get_pixel(x, y), style.colormap.sample_u8(t), alpha)
    });
    if style.grid_lines {
        draw_grid(&mut out, map.grid);
    }
    Ok(out)
}

/// A categorical map (one label per patch, e.g. the best-aligned word) over `base`, nearest-patch, one
/// [`CATEGORICAL`] colour per label (cycling after ten).
pub fn overlay_labels(
    base: &RgbImage,
    labels: &[usize],
    grid: [usize; 2],
    opacity: f32,
    grid_lines: bool,
) -> Result<RgbImage> {
    check_opacity(opacity)?;
    let [h, w] = grid;
    if labels.len() != h * w {
        return Err(Error::invalid(format!(
            "a {h}×{w} grid needs {} labels, got {}",
            h * w,
            labels.len()
        )));
    }
    let (width, height) = base.dimensions();
    let mut out = RgbImage::from_fn(width, height, |x, y| {
        let (r, c) = (
            (y as usize * h / height as usize).min(h - 1),
            (x as usize * w / width as usize).min(w - 1),
        );
        blend(
            *base.get_pixel(x, y),
            CATEGORICAL[labels[r * w + c] % CATEGORICAL.len()],
            opacity,
        )
    });
    if grid_lines {
        draw_grid(&mut out, grid);
    }
    Ok(out)
}

/// The pixel rectangle `(x0, y0, x1, y1)` (exclusive end) of patch `p` on a `width`×`height` image.
fn patch_rect(p: usize, grid: [usize; 2], width: u32, height: u32) -> (u32, u32, u32, u32) {
    let [h, w] = grid;
    let (r, c) = (p / w, p % w);
    let x = |c: usize| (c * width as usize / w) as u32;
    let y = |r: usize| (r * height as usize / h) as u32;
    (x(c), y(r), x(c + 1), y(r + 1))
}

/// SsVP's selection: patches not kept are dimmed, kept ones outlined (2 px) in `colour`.
pub fn outline_patches(
    img: &mut RgbImage,
    grid: [usize; 2],
    kept: &[usize],
    colour: [u8; 3],
) -> Result<()> {
    let n = grid[0] * grid[1];
    if let Some(&bad) = kept.iter().find(|&&p| p >= n) {
        return Err(Error::invalid(format!(
            "patch {bad} outside a grid of {n} patches"
        )));
    }
    let (width, height) = img.dimensions();
    for p in (0..n).filter(|p| !kept.contains(p)) {
        let (x0, y0, x1, y1) = patch_rect(p, grid, width, height);
        for y in y0..y1 {
            for x in x0..x1 {
                let px = img.get_pixel_mut(x, y);
                *px = blend(*px, [0, 0, 0], 0.55);
            }
        }
    }
    for &p in kept {
        let (x0, y0, x1, y1) = patch_rect(p, grid, width, height);
        for y in y0..y1 {
            for x in x0..x1 {
                if x < x0 + 2 || x + 2 >= x1 || y < y0 + 2 || y + 2 >= y1 {
                    img.put_pixel(x, y, Rgb(colour));
                }
            }
        }
    }
    Ok(())
}

/// 1-px half-transparent white lines on the patch borders.
fn draw_grid(img: &mut RgbImage, grid: [usize; 2]) {
    let [h, w] = grid;
    let (width, height) = img.dimensions();
    let cols: Vec<u32> = (1..w).map(|c| (c * width as usize / w) as u32).collect();
    let rows: Vec<u32> = (1..h).map(|r| (r * height as usize / h) as u32).collect();
    for (x, y, px) in img.enumerate_pixels_mut() {
        if cols.contains(&x) || rows.contains(&y) {
            *px = blend(*px, [255, 255, 255], 0.5);
        }
    }
}

/// Writes `img` as PNG, atomically (a crash never leaves half a file at `path`).
pub fn save_png(img: &RgbImage, path: &Path) -> Result<()> {
    let mut bytes = Cursor::new(Vec::new());
    img.write_to(&mut bytes, ImageFormat::Png)
        .map_err(|e| Error::io(path, e))?;
    write_atomic(path, bytes.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_upsamples_bilinearly() {
        let m = GridMap::new(&[1.0, 3.0, 5.0, 7.0], [2, 2]).unwrap();
        assert_eq!(m.values, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        assert_eq!((m.min, m.max), (1.0, 7.0));
        // 4×4 pixels over 2×2 cells: pixel centres 0.5, 1.5, … map to grid -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        let up = m.upsample(4, 4);
        assert_eq!(up[0], 0.0);
        assert_eq!(up[15], 1.0);
        assert!((up[1] - 0.25 / 3.0).abs() < 1e-6, "{}", up[1]);
        assert_eq!(
            GridMap::new(&[2.0; 4], [2, 2]).unwrap().values,
            vec![0.0; 4]
        );
        assert!(GridMap::new(&[1.0; 3], [2, 2]).is_err());
        assert_eq!(m.texture_bytes().len(), 16);
    }

    #[test]
    fn overlays_keep_the_image_size_and_blend() {
        let base = RgbImage::from_pixel(64, 64, Rgb([100, 100, 100]));
        let m = GridMap::new(&[0.0, 1.0, 0.0, 1.0], [2, 2]).unwrap();
        let style = HeatmapStyle {
            colormap: Colormap::Jet,
            opacity: 1.0,
            grid_lines: false,
            threshold: 0.0,
        };
        let out = overlay(&base, &m, &style).unwrap();
        assert_eq!(out.dimensions(), (64, 64));
        assert_eq!(out.get_pixel(0, 0).0, Colormap::Jet.sample_u8(0.0));
        assert_eq!(out.get_pixel(63, 0).0, Colormap::Jet.sample_u8(1.0));
        let none = overlay(
            &base,
            &m,
            &HeatmapStyle {
                opacity: 0.0,
                ..style
            },
        )
        .unwrap();
        assert_eq!(none, base);
        assert!(overlay(
            &base,
            &m,
            &HeatmapStyle {
                opacity: 1.5,
                ..style
            }
        )
        .is_err());
        // Above the threshold the map, below it the image untouched.
        let cut = overlay(
            &base,
            &m,
            &HeatmapStyle {
                threshold: 0.5,
                ..style
            },
        )
        .unwrap();
        let (w, h) = cut.dimensions();
        let up = m.upsample(w, h);
        for (i, (px, t)) in cut.pixels().zip(&up).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            if *t < 0.5 {
                assert_eq!(px, base.get_pixel(x, y), "below the threshold at {x},{y}");
            } else {
                assert_eq!(
                    px.0,
                    style.colormap.sample_u8(*t),
                    "above the threshold at {x},{y}"
                );
            }
        }
        assert!(
            up.iter().any(|&t| t < 0.5) && up.iter().any(|&t| t >= 0.5),
            "the test map straddles the threshold"
        );
        let lined = overlay(
            &base,
            &m,
            &HeatmapStyle {
                grid_lines: true,
                ..style
            },
        )
        .unwrap();
        assert_ne!(lined.get_pixel(32, 5), out.get_pixel(32, 5));

        let labels = overlay_labels(&base, &[0, 1, 2, 3], [2, 2], 1.0, false).unwrap();
        assert_eq!(labels.get_pixel(40, 40).0, CATEGORICAL[3]);

        let mut sel = base.clone();
        outline_patches(&mut sel, [2, 2], &[1], [255, 0, 0]).unwrap();
        assert_eq!(sel.get_pixel(32, 0).0, [255, 0, 0]);
        assert_eq!(sel.get_pixel(48, 16).0, [100, 100, 100]);
        assert!(sel.get_pixel(10, 10).0[0] < 100);
        assert!(outline_patches(&mut sel, [2, 2], &[4], [0, 0, 0]).is_err());
    }
}
