//! Bicubic resizing that reproduces Pillow bit for bit.
//!
//! Hugging Face's `CLIPImageProcessor` resizes with
//! `PIL.Image.resize(size, resample=BICUBIC)` (no `reducing_gap`). CLIP
//! embeddings are sensitive enough to preprocessing that "almost the same"
//! bicubic filter (e.g. `image::imageops::resize` with `CatmullRom`, which
//! has no antialiasing when shrinking and rounds differently) moves logits by
//! visible amounts and breaks parity tests against the Python reference. This
//! module therefore re-implements Pillow's `libImaging/Resample.c` 8-bit path
//! exactly, including its quirks:
//!
//! * The kernel is Keys' cubic with `a = -0.5`, support 2. When shrinking, the
//!   kernel is stretched by the scale factor (antialiasing), so the window
//!   grows with the reduction ratio.
//! * Window bounds are rounded with a C `(int)` cast (truncation toward zero)
//!   of `center ± support + 0.5`, then clamped to the image; the weights of a
//!   window are normalised to sum to one, which is how edges are handled (no
//!   pixel replication).
//! * Normalised weights are converted to 22-bit fixed point
//!   (`PRECISION_BITS = 32 - 8 - 2`), rounding half away from zero, and pixels
//!   are accumulated in 32-bit integers starting from half an LSB, then
//!   shifted down and clamped to `0..=255`.
//! * The two passes are separable with an 8-bit intermediate, so their order
//!   affects the result. Pillow filters horizontally first, except that since
//!   Pillow 13 it filters vertically first when the height loses more than
//!   twice as many pixels as the width (see `vertical_pass_first`). We
//!   follow Pillow 13; Pillow 12 and older differ from us only there, which a
//!   typical CLIP resize (an upscale such as 320x213 -> 336x224) does not
//!   hit. An axis whose size does not change is not filtered at all.
//!
//! All floating-point expressions are evaluated in the same order as in the C
//! code so that the `f64` weights, and therefore the fixed-point weights, are
//! identical. (Pillow's x86-64 builds do not fuse multiply-adds; Rust never
//! does implicitly, so the results agree.)

use image::RgbImage;
use rayon::prelude::*;

/// Fractional bits of the fixed-point weights, as in Pillow: 8 bits for the
/// result, 2 bits of headroom for the kernel's negative lobes (partial sums
/// may exceed 1 or drop below 0), and the sign bit of an `i32`.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Support (half-width) of the bicubic kernel at scale 1.
const BICUBIC_SUPPORT: f64 = 2.0;

/// Channels of an RGB8 pixel.
const CHANNELS: usize = 3;

/// Resizes `src` to `width` x `height` exactly like Pillow's
/// `Image.resize((width, height), resample=Image.BICUBIC, reducing_gap=None)`.
///
/// Byte-for-byte agreement with Pillow matters because CLIP's reference
/// preprocessing (Hugging Face `CLIPImageProcessor`) uses that call; see the
/// module documentation for the details that have to match.
///
/// Both target dimensions must be non-zero (checking that is the caller's
/// job). When the size does not change, the pixels are returned unchanged, as
/// Pillow does.
pub fn resize_bicubic_pil(src: &RgbImage, width: u32, height: u32) -> RgbImage {
    debug_assert!(width > 0 && height > 0, "target size must be non-zero");
    let (in_w, in_h) = (src.width() as usize, src.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    // An `ImageBuffer` may be backed by a longer container than it needs.
    let pixels = &src.as_raw()[..in_w * in_h * CHANNELS];

    let need_horizontal = out_w != in_w;
    let need_vertical = out_h != in_h;
    if !need_horizontal && !need_vertical {
        return RgbImage::from_raw(width, height, pixels.to_vec())
            .expect("buffer has exactly width * height * 3 bytes");
    }

    let out = if !need_horizontal {
        let vertical = Weights::bicubic(in_h, out_h);
        let mut out = vec![0u8; out_h * out_w * CHANNELS];
        resample_columns(pixels, in_w, 0, &vertical, &mut out);
        out
    } else if !need_vertical {
        let horizontal = Weights::bicubic(in_w, out_w);
        let mut out = vec![0u8; out_h * out_w * CHANNELS];
        resample_rows(pixels, in_w, 0, &horizontal, &mut out);
        out
    } else if vertical_pass_first(in_w, in_h, out_w, out_h) {
        let vertical = Weights::bicubic(in_h, out_h);
        let horizontal = Weights::bicubic(in_w, out_w);
        let mut tmp = vec![0u8; out_h * in_w * CHANNELS];
        resample_columns(pixels, in_w, 0, &vertical, &mut tmp);
        let mut out = vec![0u8; out_h * out_w * CHANNELS];
        resample_rows(&tmp, in_w, 0, &horizontal, &mut out);
        out
    } else {
        // Horizontal first, over only the source rows that some output row
        // reads (Pillow does the same; it only saves work).
        let vertical = Weights::bicubic(in_h, out_h);
        let horizontal = Weights::bicubic(in_w, out_w);
        let (first_row, end_row) = vertical.span();
        let mut tmp = vec![0u8; (end_row - first_row) * out_w * CHANNELS];
        resample_rows(pixels, in_w, first_row, &horizontal, &mut tmp);
        let mut out = vec![0u8; out_h * out_w * CHANNELS];
        resample_columns(&tmp, out_w, first_row, &vertical, &mut out);
        out
    };

    RgbImage::from_raw(width, height, out).expect("buffer has exactly width * height * 3 bytes")
}

/// Whether Pillow 13 runs the vertical pass before the horizontal one.
///
/// Pillow 13.0 (python-pillow/Pillow#9549) filters vertically first when the
/// height loses more than twice as many pixels as the width does, so that the
/// (more expensive) second pass runs over fewer rows. Because the
/// intermediate image is rounded to 8 bits, the order changes output bytes.
/// The exact rule was read from the shipped Pillow 13.0.0 binary and checked
/// against it on random sizes; Pillow 12 and older always went horizontal
/// first. Only called when both axes change.
fn vertical_pass_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let height_loss = in_h as i64 - out_h as i64;
    let width_loss = in_w as i64 - out_w as i64;
    height_loss > 0 && height_loss > 2 * width_loss
}

/// Pillow's bicubic kernel (Keys, `a = -0.5`), written in the same operation
/// order as `bicubic_filter` in `Resample.c` so the `f64` results match.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Converts a normalised `f64` weight to fixed point the way Pillow does:
/// add or subtract one half depending on the sign, then truncate toward zero
/// (a C `(int)` cast, which is what Rust's `as` does for in-range values).
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (-0.5 + scaled) as i32
    } else {
        (0.5 + scaled) as i32
    }
}

/// Converts an accumulator back to a byte: drop the fractional bits (an
/// arithmetic shift, i.e. floor; the rounding half was added up front) and
/// clamp, matching Pillow's `clip8` lookup table.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Initial accumulator value: one half in fixed point, so that the final
/// shift rounds to nearest.
const ROUND_HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Fixed-point filter windows for one axis, computed once and shared by every
/// row (or column) of the image.
struct Weights {
    /// First input index of each output sample's window.
    start: Vec<usize>,
    /// Number of input samples in each window.
    len: Vec<usize>,
    /// Row-major `[out_size][stride]` weights; only the first `len[i]` of row
    /// `i` are meaningful.
    coeffs: Vec<i32>,
    /// Maximum window length (`2 * ceil(support) + 1`).
    stride: usize,
}

impl Weights {
    /// Mirrors Pillow's `precompute_coeffs` followed by
    /// `normalize_coeffs_8bpc`, for a full-image box `(0, in_size)`.
    fn bicubic(in_size: usize, out_size: usize) -> Self {
        // Pillow receives the box as C `float`s and computes `in1 - in0` in
        // single precision before widening; replicate that (it only matters
        // for sizes beyond 2^24).
        let box_len = f64::from(in_size as f32);
        let scale = box_len / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = BICUBIC_SUPPORT * filterscale;
        let stride = support.ceil() as usize * 2 + 1;
        let inv_filterscale = 1.0 / filterscale;

        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut coeffs = vec![0i32; out_size * stride];
        let mut window = vec![0f64; stride];

        for (i, row) in coeffs.chunks_exact_mut(stride).enumerate() {
            // Pillow adds the box origin `in0`, which is 0 here.
            let center = (i as f64 + 0.5) * scale;
            // `as i32` truncates toward zero like the C cast; negative values
            // end up clamped to 0 either way.
            let lo = ((center - support + 0.5) as i32).max(0) as usize;
            let hi = ((center + support + 0.5) as i32).min(in_size as i32) as usize;
            let n = hi.saturating_sub(lo);

            let mut total = 0.0f64;
            for (x, w) in window[..n].iter_mut().enumerate() {
                // Same order as C: (int)(x + xmin) - center + 0.5, then scale.
                *w = bicubic(((x + lo) as f64 - center + 0.5) * inv_filterscale);
                total += *w;
            }
            if total != 0.0 {
                for w in &mut window[..n] {
                    *w /= total;
                }
            }
            for (dst, &w) in row.iter_mut().zip(&window[..n]) {
                *dst = to_fixed(w);
            }
            start.push(lo);
            len.push(n);
        }

        Self {
            start,
            len,
            coeffs,
            stride,
        }
    }

    /// The fixed-point weights of output sample `i`'s window.
    #[inline]
    fn window(&self, i: usize) -> (usize, &[i32]) {
        let row = &self.coeffs[i * self.stride..];
        (self.start[i], &row[..self.len[i]])
    }

    /// Half-open range of input indices read by any output sample.
    fn span(&self) -> (usize, usize) {
        let first = self.start.first().copied().unwrap_or(0);
        let last = self.start.len().checked_sub(1);
        let end = last.map_or(first, |i| self.start[i] + self.len[i]);
        (first, end.max(first))
    }
}

/// Horizontal pass: filters source rows `first_row..` into `dst`, whose rows
/// are `weights.start.len()` pixels wide. One rayon task per row.
///
/// Integer accumulation is done with wrapping arithmetic: Pillow's `int` sums
/// never overflow for 8-bit input, and wrapping keeps that well-defined (and
/// panic-free in debug builds) without changing any result.
fn resample_rows(src: &[u8], src_w: usize, first_row: usize, weights: &Weights, dst: &mut [u8]) {
    let out_w = weights.start.len();
    let src_stride = src_w * CHANNELS;
    dst.par_chunks_exact_mut(out_w * CHANNELS)
        .enumerate()
        .for_each(|(r, out_row)| {
            let y = first_row + r;
            let in_row = &src[y * src_stride..(y + 1) * src_stride];
            for (xx, out_px) in out_row.chunks_exact_mut(CHANNELS).enumerate() {
                let (lo, k) = weights.window(xx);
                let taps = &in_row[lo * CHANNELS..(lo + k.len()) * CHANNELS];
                let mut acc = [ROUND_HALF; CHANNELS];
                for (px, &w) in taps.chunks_exact(CHANNELS).zip(k) {
                    for c in 0..CHANNELS {
                        acc[c] = acc[c].wrapping_add(i32::from(px[c]).wrapping_mul(w));
                    }
                }
                for c in 0..CHANNELS {
                    out_px[c] = clip8(acc[c]);
                }
            }
        });
}

/// Vertical pass: `src` holds rows starting at input row `row_offset` (the
/// horizontal pass may have produced only the rows that are needed), each
/// `width` pixels wide. One rayon task per output row; within a row, whole
/// input rows are accumulated at once for cache-friendly access. Integer
/// addition (wrapping) is associative, so this order gives exactly Pillow's
/// sums.
fn resample_columns(
    src: &[u8],
    width: usize,
    row_offset: usize,
    weights: &Weights,
    dst: &mut [u8],
) {
    let stride = width * CHANNELS;
    dst.par_chunks_exact_mut(stride).enumerate().for_each_init(
        || vec![0i32; stride],
        |acc, (yy, out_row)| {
            acc.fill(ROUND_HALF);
            let (lo, k) = weights.window(yy);
            for (j, &w) in k.iter().enumerate() {
                let y = lo + j - row_offset;
                let in_row = &src[y * stride..(y + 1) * stride];
                for (a, &p) in acc.iter_mut().zip(in_row) {
                    *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
                }
            }
            for (o, &a) in out_row.iter_mut().zip(acc.iter()) {
                *o = clip8(a);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// Small deterministic pseudo-random image (xorshift), no extra deps.
    fn noise(width: u32, height: u32, seed: u32) -> RgbImage {
        let mut state = seed.max(1);
        RgbImage::from_fn(width, height, |_, _| {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            };
            Rgb([next(), next(), next()])
        })
    }

    #[test]
    fn identity_size_returns_same_pixels() {
        let img = noise(17, 11, 7);
        let out = resize_bicubic_pil(&img, 17, 11);
        assert_eq!(out.dimensions(), (17, 11));
        assert_eq!(out.as_raw(), img.as_raw());
    }

    #[test]
    fn constant_image_stays_constant() {
        let color = Rgb([12u8, 200, 255]);
        let img = RgbImage::from_pixel(31, 19, color);
        for &(w, h) in &[(64, 40), (7, 5), (1, 1), (31, 50), (10, 19), (100, 3)] {
            let out = resize_bicubic_pil(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(
                out.pixels().all(|p| *p == color),
                "constant colour changed when resizing to {w}x{h}"
            );
        }
    }

    #[test]
    fn single_pixel_source_upscales_to_constant() {
        let color = Rgb([0u8, 128, 255]);
        let img = RgbImage::from_pixel(1, 1, color);
        let out = resize_bicubic_pil(&img, 5, 4);
        assert!(out.pixels().all(|p| *p == color));
    }

    #[test]
    fn one_axis_resize_keeps_other_axis_untouched() {
        // A horizontal-only resize of an image whose columns are constant
        // must leave every column constant (no vertical filtering happens).
        let img = RgbImage::from_fn(9, 6, |_, y| Rgb([(y * 40) as u8, 0, 255 - (y * 40) as u8]));
        let out = resize_bicubic_pil(&img, 4, 6);
        for y in 0..6 {
            for x in 0..4 {
                assert_eq!(out.get_pixel(x, y), img.get_pixel(0, y));
            }
        }
    }

    #[test]
    fn fixed_point_weights_sum_to_one() {
        for &(n_in, n_out) in &[
            (320usize, 336usize),
            (213, 224),
            (37, 16),
            (5, 11),
            (64, 27),
        ] {
            let w = Weights::bicubic(n_in, n_out);
            for i in 0..n_out {
                let (lo, k) = w.window(i);
                assert!(lo + k.len() <= n_in);
                let sum: i64 = k.iter().map(|&c| i64::from(c)).sum();
                // Rounding each weight may be off by half an LSB per tap.
                assert!((sum - (1i64 << PRECISION_BITS)).abs() <= k.len() as i64);
            }
        }
    }

    #[test]
    fn fixed_point_rounds_half_away_from_zero() {
        let lsb = 1.0 / f64::from(1u32 << PRECISION_BITS);
        assert_eq!(to_fixed(0.5 * lsb), 1);
        assert_eq!(to_fixed(-0.5 * lsb), -1);
        assert_eq!(to_fixed(0.49 * lsb), 0);
        assert_eq!(to_fixed(-0.49 * lsb), 0);
        assert_eq!(to_fixed(1.0), 1 << PRECISION_BITS);
    }
}
