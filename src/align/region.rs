//! Where a map puts its mass: the share of a non-negative patch map that falls inside a box on the
//! model-input image, each patch weighted by the fraction of its area the box covers. Used to check that
//! an alignment map points at the part of the image that decides the class.

use crate::data::synth_region::PixelBox;
use crate::error::{Error, Result};

/// Per patch (row-major over `grid`), the fraction of its area inside `b`; the image is `image_size`
/// pixels square, so patches are `image_size / grid` pixels wide.
pub fn patch_coverage(grid: [usize; 2], image_size: usize, b: &PixelBox) -> Vec<f32> {
    let [gh, gw] = grid;
    let (ph, pw) = (image_size as f32 / gh as f32, image_size as f32 / gw as f32);
    let overlap = |lo: f32, hi: f32, a: u32, z: u32| (hi.min(z as f32) - lo.max(a as f32)).max(0.0);
    (0..gh)
        .flat_map(|r| (0..gw).map(move |c| (r, c)))
        .map(|(r, c)| {
            let (y0, x0) = (r as f32 * ph, c as f32 * pw);
            overlap(x0, x0 + pw, b.x0, b.x1) * overlap(y0, y0 + ph, b.y0, b.y1) / (ph * pw)
        })
        .collect()
}

/// `Σ coverage·map / Σ map` for a map with no negative value. A map spread evenly scores the box's share
/// of the image; one entirely inside the box scores 1.
pub fn mass_inside(map: &[f32], coverage: &[f32]) -> Result<f32> {
    if map.len() != coverage.len() {
        return Err(Error::invalid(format!(
            "a map of {} patches with a coverage of {}",
            map.len(),
            coverage.len()
        )));
    }
    if map.iter().any(|&v| v < 0.0 || !v.is_finite()) {
        return Err(Error::invalid("mass is defined for maps without negative or non-finite values: shift or rectify the map first"));
    }
    let total: f32 = map.iter().sum();
    if total <= 0.0 {
        return Ok(0.0);
    }
    Ok(map.iter().zip(coverage).map(|(m, c)| m * c).sum::<f32>() / total)
}

/// The map minus its minimum: the lowest patch gets no mass, the rest mass in proportion to how far they
/// stand above it (a similarity map's zero means nothing, so its level is removed).
pub fn above_min(map: &[f32]) -> Vec<f32> {
    let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
    map.iter().map(|v| v - lo).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_and_mass() {
        // 2×2 grid on a 64 px image (32 px patches); a box over the top-left patch and half of the one right of it.
        let cov = patch_coverage(
            [2, 2],
            64,
            &PixelBox {
                x0: 0,
                y0: 0,
                x1: 48,
                y1: 32,
            },
        );
        assert_eq!(cov, vec![1.0, 0.5, 0.0, 0.0]);
        assert!((mass_inside(&[1.0, 1.0, 1.0, 1.0], &cov).unwrap() - 0.375).abs() < 1e-6);
        assert!((mass_inside(&[2.0, 0.0, 0.0, 0.0], &cov).unwrap() - 1.0).abs() < 1e-6);
        assert!(mass_inside(&[-1.0, 0.0, 0.0, 0.0], &cov).is_err());
        assert_eq!(above_min(&[0.5, -0.5, 0.0]), vec![1.0, 0.0, 0.5]);
    }
}
