//! Colormaps as small lookup tables of anchor colours, interpolated linearly: short enough to read, and
//! the same table can be uploaded as a 1-D texture for the GPU.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colormap {
    /// Perceptually uniform, readable in grey scale and by colour-blind readers (the default).
    #[default]
    Viridis,
    /// The classic rainbow map many papers' attention figures use (FILIP's included).
    Jet,
}

/// matplotlib's viridis sampled at 9 evenly spaced points (its 256-entry table at 0, 32, …, 224, 255).
const VIRIDIS: [[f32; 3]; 9] = [
    [0.267004, 0.004874, 0.329415],
    [0.282623, 0.140926, 0.457517],
    [0.229739, 0.322361, 0.545706],
    [0.172719, 0.448791, 0.557885],
    [0.127568, 0.566949, 0.550556],
    [0.157851, 0.683765, 0.501686],
    [0.369214, 0.788888, 0.382914],
    [0.678489, 0.863742, 0.189503],
    [0.993248, 0.906157, 0.143936],
];

/// MATLAB's jet is piecewise linear, so 9 evenly spaced anchors reproduce it exactly: dark blue, blue,
/// cyan, yellow, red, dark red.
const JET: [[f32; 3]; 9] = [
    [0.0, 0.0, 0.5],
    [0.0, 0.0, 1.0],
    [0.0, 0.5, 1.0],
    [0.0, 1.0, 1.0],
    [0.5, 1.0, 0.5],
    [1.0, 1.0, 0.0],
    [1.0, 0.5, 0.0],
    [1.0, 0.0, 0.0],
    [0.5, 0.0, 0.0],
];

/// Distinct colours for categorical maps (which word each patch aligns with): matplotlib's tab10.
pub const CATEGORICAL: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

impl Colormap {
    /// Every colormap, in the order pickers list them.
    pub const ALL: [Colormap; 2] = [Colormap::Viridis, Colormap::Jet];

    /// The name the CLI takes and pickers show.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Jet => "jet",
        }
    }

    fn table(self) -> &'static [[f32; 3]] {
        match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::Jet => &JET,
        }
    }

    /// The colour of `t` in 0..1 (clamped; NaN reads as 0).
    pub fn sample(self, t: f32) -> [f32; 3] {
        let table = self.table();
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let x = t * (table.len() - 1) as f32;
        let i = (x.floor() as usize).min(table.len() - 2);
        let f = x - i as f32;
        let (a, b) = (table[i], table[i + 1]);
        [
            a[0] + f * (b[0] - a[0]),
            a[1] + f * (b[1] - a[1]),
            a[2] + f * (b[2] - a[2]),
        ]
    }

    pub fn sample_u8(self, t: f32) -> [u8; 3] {
        self.sample(t)
            .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
    }

    /// `n` RGBA8 texels from 0 to 1, for a 1-D lookup texture.
    pub fn lut(self, n: usize) -> Vec<[u8; 4]> {
        let n = n.max(2);
        (0..n)
            .map(|i| {
                let [r, g, b] = self.sample_u8(i as f32 / (n - 1) as f32);
                [r, g, b, 255]
            })
            .collect()
    }
}

impl std::fmt::Display for Colormap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Colormap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
                format!("unknown colormap '{s}': {}", names.join(" or "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_middle() {
        assert_eq!(Colormap::Jet.sample_u8(0.0), [0, 0, 128]);
        assert_eq!(Colormap::Jet.sample_u8(0.5), [128, 255, 128]);
        assert_eq!(Colormap::Jet.sample_u8(1.0), [128, 0, 0]);
        assert_eq!(Colormap::Viridis.sample_u8(0.0), [68, 1, 84]);
        assert_eq!(Colormap::Viridis.sample_u8(1.0), [253, 231, 37]);
        assert_eq!(
            Colormap::Viridis.sample_u8(2.0),
            Colormap::Viridis.sample_u8(1.0)
        );
        assert_eq!(
            Colormap::Viridis.sample_u8(f32::NAN),
            Colormap::Viridis.sample_u8(0.0)
        );
        let lut = Colormap::Viridis.lut(256);
        assert_eq!(lut.len(), 256);
        assert_eq!(lut[255], [253, 231, 37, 255]);
    }

    #[test]
    fn jet_matches_its_piecewise_linear_formula() {
        for i in 0..=100 {
            let t = i as f32 / 100.0;
            let f = |o: f32| (1.5 - (4.0 * t - o).abs()).clamp(0.0, 1.0);
            let want = [f(3.0), f(2.0), f(1.0)];
            let got = Colormap::Jet.sample(t);
            for c in 0..3 {
                assert!(
                    (got[c] - want[c]).abs() < 1e-5,
                    "t = {t}: {got:?} vs {want:?}"
                );
            }
        }
    }
}
