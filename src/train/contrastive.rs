//! The pretraining losses of METHODS §7, as differentiable candle ops over a batch of b image–caption
//! pairs: CLIP's on the pooled features, FILIP's token-wise late interaction on the projected tokens.
//! `scale` is τ = exp(logit scale) as a scalar tensor (the trainer clamps the parameter, as CLIP does).

use candle_core::{DType, Tensor, D};

use crate::clip::l2_normalize;
use crate::error::{Error, Result};

/// `½ (CE_j(τ·cos(f_i, g_j)) at i + CE_i(τ·cos(f_i, g_j)) at j)`, mean over the batch. `img` `[b, P]`,
/// `txt` `[bt, P]`, not normalised: caption i is image i's, and captions past the b-th are hard negatives
/// (NegCLIP): they join each image's choice of captions, and no image is chosen for them.
pub fn clip_loss(img: &Tensor, txt: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let b = img.dim(0)?;
    check_batch(b, txt.dim(0)?)?;
    let logits = l2_normalize(img)?
        .matmul(&l2_normalize(txt)?.t()?)?
        .broadcast_mul(scale)?;
    symmetric_ce(&logits, &logits.narrow(1, 0, b)?.t()?, b)
}

/// FILIP's token-wise scores of every image against every caption: `(s^I, s^T)`, each `[b_img, b_txt]`.
/// `img_tokens` `[b, n1, P]` (the patch tokens), `txt_tokens` `[b, n2, P]` and `txt_mask` `[b, n2]` (1 for
/// a caption's real tokens, 0 for padding, which never takes part in a max or a mean). Tokens are
/// L2-normalised here. `s^I_{i,j} = mean_k max_r ⟨x_{i,k}, y_{j,r}⟩`, `s^T_{i,j} = mean_r max_k ⟨…⟩`; with
/// `top_fraction` < 1 only the top ⌈fraction·n⌉ of each side's token maxima enter the means (FILIP: 25 %).
pub fn filip_scores(
    img_tokens: &Tensor,
    txt_tokens: &Tensor,
    txt_mask: &Tensor,
    top_fraction: f64,
) -> Result<(Tensor, Tensor)> {
    crate::align::filip::check_fraction(top_fraction)?;
    let (bi, n1, p) = img_tokens.dims3()?;
    let (bt, n2, pt) = txt_tokens.dims3()?;
    if p != pt || txt_mask.dims() != [bt, n2] {
        return Err(Error::invalid(format!(
            "FILIP scores: image tokens [{bi}, {n1}, {p}], text tokens [{bt}, {n2}, {pt}] and mask {:?} do not fit",
            txt_mask.dims()
        )));
    }
    let x = l2_normalize(img_tokens)?.reshape((bi * n1, p))?;
    let y = l2_normalize(txt_tokens)?.reshape((bt * n2, p))?;
    // sim[i, k, j, r]
    let sim = x.matmul(&y.t()?)?.reshape((bi, n1, bt, n2))?;
    let mask = txt_mask.to_dtype(DType::F32)?;
    // Padding can never win a max: it sits far below any cosine.
    let pad = ((mask.ones_like()? - &mask)? * -1e4)?.reshape((1, 1, bt, n2))?;
    let image_side = sim.broadcast_add(&pad)?.max(D::Minus1)?; // [bi, n1, bt]: max over r
    let text_side = sim.max(1)?; // [bi, bt, n2]: max over k
    let ones = Tensor::ones((bi, n1, bt), DType::F32, sim.device())?;
    let s_i = top_mean(
        &image_side.transpose(1, 2)?.contiguous()?,
        &ones.transpose(1, 2)?.contiguous()?,
        top_fraction,
    )?;
    let txt_valid = mask
        .reshape((1, bt, n2))?
        .broadcast_as((bi, bt, n2))?
        .contiguous()?;
    let s_t = top_mean(&text_side, &txt_valid, top_fraction)?;
    Ok((s_i, s_t))
}

/// `½ (CE over captions of τ·s^I at the image's own + CE over images of τ·s^T at the caption's own)`;
/// captions past the b-th are negatives, as in [`clip_loss`].
pub fn filip_loss(
    img_tokens: &Tensor,
    txt_tokens: &Tensor,
    txt_mask: &Tensor,
    scale: &Tensor,
    top_fraction: f64,
) -> Result<Tensor> {
    check_batch(img_tokens.dim(0)?, txt_tokens.dim(0)?)?;
    let (s_i, s_t) = filip_scores(img_tokens, txt_tokens, txt_mask, top_fraction)?;
    filip_loss_of_scores(&s_i, &s_t, scale)
}

/// FILIP's loss from its scores `[b, bt]` (see [`filip_loss`]).
pub fn filip_loss_of_scores(s_i: &Tensor, s_t: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let (b, bt) = s_i.dims2()?;
    check_batch(b, bt)?;
    symmetric_ce(
        &s_i.broadcast_mul(scale)?,
        &s_t.narrow(1, 0, b)?.t()?.broadcast_mul(scale)?,
        b,
    )
}

/// FILIP's loss (as [`filip_loss`]) and its gradients, on f32 buffers in one pass: what the kernel path
/// of pretraining runs. Through candle's ops the loss was a quarter of a FILIP step: each of a dozen
/// ops over the `[b·n1, b·n2]` similarities (4.6 M entries at batch 64) allocates it again, and the max
/// backward compares it whole; here the similarities and their gradient are two GEMMs each way and the
/// gradient of a max goes only to its winner.
#[derive(Debug, Clone)]
pub struct FilipGrads {
    pub loss: f64,
    /// Images whose own caption scored highest (`s^I`).
    pub right: usize,
    /// `[b, n1, p]`, as `img`.
    pub d_img: Vec<f32>,
    /// `[b, n2, p]`, as `txt` (0 on padding).
    pub d_txt: Vec<f32>,
    /// Of the stored log-temperature.
    pub d_log_scale: f32,
}

/// `img` `[b, n1, p]` patch tokens, `txt` `[bt, n2, p]` caption tokens of which caption j's first
/// `eot[j] + 1` are real (the rest is padding and never read), neither normalised; the captions past the
/// b-th (`bt = eot.len()`) are negatives, as in [`filip_loss`]; `log_scale` the stored log-temperature;
/// `top_fraction` as [`filip_scores`].
#[allow(clippy::too_many_arguments)]
pub fn filip_loss_with_grads(
    img: &[f32],
    n1: usize,
    txt: &[f32],
    n2: usize,
    eot: &[usize],
    p: usize,
    log_scale: f32,
    top_fraction: f64,
) -> Result<FilipGrads> {
    use crate::align::filip::kept_count;
    use crate::clip::kernels::cpu::{gemm_f32, gemm_f32_tn};
    use rayon::prelude::*;
    crate::align::filip::check_fraction(top_fraction)?;
    let bt = eot.len();
    let b = img.len().checked_div(n1 * p).unwrap_or(0);
    check_batch(b, bt)?;
    if img.len() != b * n1 * p
        || txt.len() != bt * n2 * p
        || eot.iter().any(|&e| e >= n2)
        || n1 == 0
    {
        return Err(Error::invalid(format!(
            "FILIP loss: {} image and {} caption values for {b} images and {bt} captions of ({n1} | {n2}) tokens of {p}",
            img.len(),
            txt.len()
        )));
    }
    let normalise = |v: &[f32]| -> (Vec<f32>, Vec<f32>) {
        let mut out = v.to_vec();
        let inv: Vec<f32> = out
            .par_chunks_mut(p)
            .map(|row| {
                let inv = 1.0 / row.iter().map(|x| x * x).sum::<f32>().sqrt();
                row.iter_mut().for_each(|x| *x *= inv);
                inv
            })
            .collect();
        (out, inv)
    };
    let (x, x_inv) = normalise(img);
    let (mut y, y_inv) = normalise(txt);
    // Padding may be anything (zeros normalise to NaN): it must not reach the GEMMs' sums.
    for (j, &e) in eot.iter().enumerate() {
        y[(j * n2 + e + 1) * p..(j + 1) * n2 * p].fill(0.0);
    }
    let (rows, cols) = (b * n1, bt * n2);
    let mut sim = vec![0f32; rows * cols];
    gemm_f32(&mut sim, cols, &x, p, &y, true, rows, p, cols, false);

    // Per (image i, caption j): each image token's best caption token and the reverse, the kept ones'
    // means, and where each kept maximum sits (its gradient goes there alone).
    struct Pair {
        s_i: f32,
        s_t: f32,
        img_win: Vec<(usize, usize)>,
        txt_win: Vec<(usize, usize)>,
    }
    let top = |vals: &[f32]| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..vals.len()).collect();
        idx.sort_by(|&a, &c| vals[c].total_cmp(&vals[a]));
        idx.truncate(kept_count(vals.len(), top_fraction));
        idx
    };
    let pairs: Vec<Pair> = (0..b * bt)
        .into_par_iter()
        .map(|ij| {
            let (i, j) = (ij / bt, ij % bt);
            let real = eot[j] + 1;
            let at = |k: usize, r: usize| sim[(i * n1 + k) * cols + j * n2 + r];
            let best_r: Vec<(f32, usize)> = (0..n1)
                .map(|k| {
                    (0..real).fold((f32::NEG_INFINITY, 0), |m, r| {
                        if at(k, r) > m.0 {
                            (at(k, r), r)
                        } else {
                            m
                        }
                    })
                })
                .collect();
            let best_k: Vec<(f32, usize)> = (0..real)
                .map(|r| {
                    (0..n1).fold((f32::NEG_INFINITY, 0), |m, k| {
                        if at(k, r) > m.0 {
                            (at(k, r), k)
                        } else {
                            m
                        }
                    })
                })
                .collect();
            let keep_k = top(&best_r.iter().map(|v| v.0).collect::<Vec<_>>());
            let keep_r = top(&best_k.iter().map(|v| v.0).collect::<Vec<_>>());
            Pair {
                s_i: keep_k.iter().map(|&k| best_r[k].0).sum::<f32>() / keep_k.len() as f32,
                s_t: keep_r.iter().map(|&r| best_k[r].0).sum::<f32>() / keep_r.len() as f32,
                img_win: keep_k.iter().map(|&k| (k, best_r[k].1)).collect(),
                txt_win: keep_r.iter().map(|&r| (best_k[r].1, r)).collect(),
            }
        })
        .collect();

    // Both cross-entropies over τ·s, and their gradients with respect to the scores.
    let tau = log_scale.exp();
    let (mut loss, mut d_log_scale) = (0f64, 0f32);
    let mut d_si = vec![0f32; b * bt];
    let mut d_st = vec![0f32; b * bt];
    for side in 0..2 {
        // Side 0: image `row` against every caption (negatives too); side 1: the batch's caption `row`
        // against every image.
        let choices = if side == 0 { bt } else { b };
        for row in 0..b {
            let logit = |c: usize| {
                tau * if side == 0 {
                    pairs[row * bt + c].s_i
                } else {
                    pairs[c * bt + row].s_t
                }
            };
            let m = (0..choices).map(logit).fold(f32::NEG_INFINITY, f32::max);
            let z: f32 = (0..choices).map(|c| (logit(c) - m).exp()).sum();
            loss += f64::from(m + z.ln() - logit(row));
            for c in 0..choices {
                let g =
                    ((logit(c) - m).exp() / z - if c == row { 1.0 } else { 0.0 }) / b as f32 * 0.5;
                d_log_scale += g * logit(c);
                if side == 0 {
                    d_si[row * bt + c] = g * tau;
                } else {
                    d_st[c * bt + row] = g * tau;
                }
            }
        }
    }
    let right = (0..b)
        .filter(|&i| {
            let row = &pairs[i * bt..][..bt];
            let best = row.iter().map(|q| q.s_i).fold(f32::NEG_INFINITY, f32::max);
            row.iter().position(|q| q.s_i == best) == Some(i)
        })
        .count();

    // The similarities' gradient: each kept maximum receives its mean's share.
    let mut dsim = vec![0f32; rows * cols];
    for (ij, pair) in pairs.iter().enumerate() {
        let (i, j) = (ij / bt, ij % bt);
        let gi = d_si[ij] / pair.img_win.len() as f32;
        for &(k, r) in &pair.img_win {
            dsim[(i * n1 + k) * cols + j * n2 + r] += gi;
        }
        let gt = d_st[ij] / pair.txt_win.len() as f32;
        for &(k, r) in &pair.txt_win {
            dsim[(i * n1 + k) * cols + j * n2 + r] += gt;
        }
    }
    let mut dx = vec![0f32; rows * p];
    gemm_f32(&mut dx, p, &dsim, cols, &y, false, rows, cols, p, false);
    let mut dy = vec![0f32; cols * p];
    gemm_f32_tn(&mut dy, &dsim, cols, &x, p, cols, rows, p);
    // Through the normalisation: du = (dx − x·⟨x, dx⟩) / |u|.
    let unnormalise = |d: &mut [f32], v: &[f32], inv: &[f32]| {
        d.par_chunks_mut(p)
            .zip(v.par_chunks(p))
            .zip(inv.par_iter())
            .for_each(|((d, v), &inv)| {
                let dot: f32 = d.iter().zip(v).map(|(a, c)| a * c).sum();
                d.iter_mut()
                    .zip(v)
                    .for_each(|(a, c)| *a = (*a - c * dot) * inv);
            });
    };
    unnormalise(&mut dx, &x, &x_inv);
    unnormalise(&mut dy, &y, &y_inv);
    for (j, &e) in eot.iter().enumerate() {
        dy[(j * n2 + e + 1) * p..(j + 1) * n2 * p].fill(0.0);
    }
    Ok(FilipGrads {
        loss: 0.5 * loss / b as f64,
        right,
        d_img: dx,
        d_txt: dy,
        d_log_scale,
    })
}

fn check_batch(images: usize, captions: usize) -> Result<()> {
    if captions < images || images == 0 {
        return Err(Error::invalid(format!("a contrastive batch needs a caption for every image (and maybe negatives), and at least one image (got {images} images and {captions} captions)")));
    }
    Ok(())
}

/// `½ (CE(rows, arange) + CE(cols, arange))`: `rows[i, j]` scores image i against caption j (negatives
/// too), `cols[j, i]` the batch's caption j against image i.
fn symmetric_ce(rows: &Tensor, cols: &Tensor, b: usize) -> Result<Tensor> {
    let target = Tensor::arange(0u32, b as u32, rows.device())?;
    let a = candle_nn::loss::cross_entropy(rows, &target)?;
    let c = candle_nn::loss::cross_entropy(cols, &target)?;
    Ok(((a + c)? * 0.5)?)
}

/// Mean over the last axis of `values`, counting only entries where `valid` is 1 and, of those, only the
/// top ⌈fraction·count⌉ (at least one). The selection is made on the values, then applied as a constant
/// mask, so gradients reach exactly the entries that were averaged.
fn top_mean(values: &Tensor, valid: &Tensor, fraction: f64) -> Result<Tensor> {
    let n = values.dim(D::Minus1)?;
    let keep = if fraction >= 1.0 {
        valid.clone()
    } else {
        let v: Vec<f32> = values.detach().flatten_all()?.to_vec1()?;
        let ok: Vec<f32> = valid.flatten_all()?.to_vec1()?;
        let mut keep = vec![0f32; v.len()];
        for (row, (vals, oks)) in v.chunks(n).zip(ok.chunks(n)).enumerate() {
            let mut idx: Vec<usize> = (0..n).filter(|&t| oks[t] > 0.5).collect();
            let k = crate::align::filip::kept_count(idx.len(), fraction);
            idx.sort_by(|&a, &b| vals[b].total_cmp(&vals[a]));
            for &t in idx.iter().take(k) {
                keep[row * n + t] = 1.0;
            }
        }
        Tensor::from_vec(keep, values.dims(), values.device())?
    };
    let count = keep.sum_keepdim(D::Minus1)?.clamp(1f64, f64::MAX)?;
    Ok((values * &keep)?
        .sum_keepdim(D::Minus1)?
        .broadcast_div(&count)?
        .squeeze(D::Minus1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The same maths in plain f64 loops, straight from METHODS §7: `b` images, `bt` ≥ `b` captions of
    /// which those past the b-th are negatives (in the image side's choices only).
    fn reference(
        img: &[f64],
        txt: &[f64],
        mask: &[f64],
        dims: (usize, usize, usize, usize, usize),
        tau: f64,
        fraction: f64,
    ) -> f64 {
        let (b, bt, n1, n2, p) = dims;
        let norm = |v: &[f64]| -> Vec<f64> {
            let s = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            v.iter().map(|x| x / s).collect()
        };
        let x: Vec<Vec<f64>> = img.chunks(p).map(norm).collect();
        let y: Vec<Vec<f64>> = txt.chunks(p).map(norm).collect();
        let dot = |a: &[f64], c: &[f64]| a.iter().zip(c).map(|(u, v)| u * v).sum::<f64>();
        let top = |mut v: Vec<f64>| {
            v.sort_by(|a, c| c.total_cmp(a));
            let k = crate::align::filip::kept_count(v.len(), fraction);
            v[..k].iter().sum::<f64>() / k as f64
        };
        let (mut si, mut st) = (vec![vec![0.0; bt]; b], vec![vec![0.0; bt]; b]);
        for i in 0..b {
            for j in 0..bt {
                let real: Vec<usize> = (0..n2).filter(|&r| mask[j * n2 + r] > 0.5).collect();
                let s = |k: usize, r: usize| dot(&x[i * n1 + k], &y[j * n2 + r]);
                si[i][j] = top((0..n1)
                    .map(|k| real.iter().map(|&r| s(k, r)).fold(f64::MIN, f64::max))
                    .collect());
                st[i][j] = top(real
                    .iter()
                    .map(|&r| (0..n1).map(|k| s(k, r)).fold(f64::MIN, f64::max))
                    .collect());
            }
        }
        let ce = |row: Vec<f64>, target: usize| {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            lse - row[target]
        };
        let li: f64 = (0..b)
            .map(|i| ce((0..bt).map(|j| tau * si[i][j]).collect(), i))
            .sum::<f64>()
            / b as f64;
        let lt: f64 = (0..b)
            .map(|j| ce((0..b).map(|i| tau * st[i][j]).collect(), j))
            .sum::<f64>()
            / b as f64;
        (li + lt) / 2.0
    }

    /// The one-pass loss and gradients against candle's graph of [`filip_loss`], with padding (zeros
    /// there, the worst case for normalising) and top fractions.
    #[test]
    fn one_pass_filip_gradients_equal_candles_graph() {
        let (b, n1, n2, p) = (3, 5, 4, 6);
        let dev = Device::Cpu;
        // Three captions (one per image), then the same with two negatives.
        for eot in [&[3usize, 1, 2][..], &[3, 1, 2, 0, 3]] {
            let bt = eot.len();
            let img_v = pattern(b * n1 * p, 1);
            let mut txt_v = pattern(bt * n2 * p, 2);
            for (j, &e) in eot.iter().enumerate() {
                txt_v[(j * n2 + e + 1) * p..(j + 1) * n2 * p].fill(0.0);
            }
            for fraction in [1.0, 0.5, 0.25] {
                let img = Var::from_vec(img_v.clone(), (b, n1, p), &dev).unwrap();
                let txt = Var::from_vec(txt_v.clone(), (bt, n2, p), &dev).unwrap();
                let ls = Var::new(2.3f32, &dev).unwrap();
                let mask: Vec<f32> = eot
                    .iter()
                    .flat_map(|&e| (0..n2).map(move |r| if r <= e { 1.0 } else { 0.0 }))
                    .collect();
                let mask = Tensor::from_vec(mask, (bt, n2), &dev).unwrap();
                // candle's graph normalises the zero padding to NaN; give it ones there, which it masks.
                let safe = txt
                    .as_tensor()
                    .broadcast_add(
                        &(mask.ones_like().unwrap() - &mask)
                            .unwrap()
                            .unsqueeze(2)
                            .unwrap(),
                    )
                    .unwrap();
                let want = filip_loss(
                    img.as_tensor(),
                    &safe,
                    &mask,
                    &ls.as_tensor().exp().unwrap(),
                    fraction,
                )
                .unwrap();
                let grads = want.backward().unwrap();
                let got =
                    filip_loss_with_grads(&img_v, n1, &txt_v, n2, eot, p, 2.3, fraction).unwrap();
                let close = |what: &str, a: &[f32], c: &[f32]| {
                    let scale = c.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                    let diff = a.iter().zip(c).fold(0f32, |m, (u, v)| m.max((u - v).abs()));
                    assert!(
                        diff <= 1e-5 * scale.max(1.0),
                        "{what} (top {fraction}): {diff:e}"
                    );
                };
                assert!((got.loss - f64::from(want.to_scalar::<f32>().unwrap())).abs() < 1e-5);
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                close("image tokens", &got.d_img, &flat(grads.get(&img).unwrap()));
                let mut d_txt = flat(grads.get(&txt).unwrap());
                for (j, &e) in eot.iter().enumerate() {
                    d_txt[(j * n2 + e + 1) * p..(j + 1) * n2 * p].fill(0.0);
                }
                close("caption tokens", &got.d_txt, &d_txt);
                close(
                    "log-temperature",
                    &[got.d_log_scale],
                    &flat(grads.get(&ls).unwrap()),
                );
            }
        }
    }

    fn pattern(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0) * (1.0 + (i % 7) as f32 / 7.0)
            })
            .collect()
    }

    #[test]
    fn filip_loss_and_its_gradient_follow_the_formula_with_padding_and_top_fraction() {
        // Three images and their captions, then with a fourth caption as a negative.
        for bt in [3, 4] {
            let (b, n1, n2, p) = (3, 5, 4, 6);
            let dev = Device::Cpu;
            let img = Var::from_vec(pattern(b * n1 * p, 1), (b, n1, p), &dev).unwrap();
            let txt = Var::from_vec(pattern(bt * n2 * p, 2), (bt, n2, p), &dev).unwrap();
            // Captions of 4, 2, 3 (and 1) tokens; the padding rows hold large values that must not count.
            let mask_v = [
                1f32, 1., 1., 1., 1., 1., 0., 0., 1., 1., 1., 0., 1., 0., 0., 0.,
            ][..bt * n2]
                .to_vec();
            let mask = Tensor::from_vec(mask_v.clone(), (bt, n2), &dev).unwrap();
            let tau = 10.0;
            let scale = Tensor::new(tau as f32, &dev).unwrap();
            let as64 = |t: &Tensor| {
                t.flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect::<Vec<_>>()
            };
            let mask64: Vec<f64> = mask_v.iter().map(|&v| f64::from(v)).collect();
            for fraction in [1.0, 0.5] {
                let loss =
                    filip_loss(img.as_tensor(), txt.as_tensor(), &mask, &scale, fraction).unwrap();
                let want = reference(
                    &as64(img.as_tensor()),
                    &as64(txt.as_tensor()),
                    &mask64,
                    (b, bt, n1, n2, p),
                    tau,
                    fraction,
                );
                let got = f64::from(loss.to_scalar::<f32>().unwrap());
                // Measured ≤ 1.8e-7 on both the AVX-512 and AVX2+FMA kernels (f32 against f64): 50× margin.
                crate::testing::within(
                    &format!("FILIP loss (top fraction {fraction}) vs the f64 formula"),
                    (got - want).abs(),
                    1e-5,
                );
                // Gradients against central differences of the f64 formula, a few entries of each input.
                let grads = loss.backward().unwrap();
                for (var, which) in [(&img, 0), (&txt, 1)] {
                    let g = as64(grads.get(var.as_tensor()).unwrap());
                    assert!(g.iter().all(|v| v.is_finite()));
                    for idx in [0, 7, 20, g.len() - 1] {
                        let h = 1e-4;
                        let at = |d: f64| {
                            let (mut a, mut c) = (as64(img.as_tensor()), as64(txt.as_tensor()));
                            if which == 0 {
                                a[idx] += d
                            } else {
                                c[idx] += d
                            }
                            reference(&a, &c, &mask64, (b, bt, n1, n2, p), tau, fraction)
                        };
                        let numeric = (at(h) - at(-h)) / (2.0 * h);
                        // Measured ≤ 2.5e-8 (f32 autograd vs f64 central differences, h = 1e-4): 40× margin.
                        crate::testing::within(
                            &format!(
                                "FILIP gradient of input {which}[{idx}] vs finite differences"
                            ),
                            (g[idx] - numeric).abs(),
                            1e-6 * numeric.abs().max(1.0),
                        );
                    }
                }
            }
            // Padding never counts: changing a padded token changes nothing.
            let mut t2 = as64(txt.as_tensor())
                .iter()
                .map(|&v| v as f32)
                .collect::<Vec<_>>();
            t2[(n2 + 3) * p] += 100.0;
            let t2 = Tensor::from_vec(t2, (bt, n2, p), &dev).unwrap();
            let a = filip_loss(img.as_tensor(), txt.as_tensor(), &mask, &scale, 1.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let c = filip_loss(img.as_tensor(), &t2, &mask, &scale, 1.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(a, c);
        }
    }

    #[test]
    fn clip_loss_is_small_for_matching_pairs_and_symmetric() {
        let dev = Device::Cpu;
        let f = Tensor::from_vec(pattern(4 * 8, 3), (4, 8), &dev).unwrap();
        let scale = Tensor::new(20f32, &dev).unwrap();
        let same = clip_loss(&f, &f, &scale)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let shuffled = clip_loss(
            &f,
            &Tensor::cat(&[f.narrow(0, 1, 3).unwrap(), f.narrow(0, 0, 1).unwrap()], 0).unwrap(),
            &scale,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        assert!(same < shuffled, "{same} vs {shuffled}");
        let g = Tensor::from_vec(pattern(4 * 8, 4), (4, 8), &dev).unwrap();
        let ab = clip_loss(&f, &g, &scale)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let ba = clip_loss(&g, &f, &scale)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ab - ba).abs() < 1e-6, "{ab} vs {ba}");
        assert!(clip_loss(&f, &g.narrow(0, 0, 3).unwrap(), &scale)
            .unwrap_err()
            .to_string()
            .contains("a caption for every image"));
        // Extra captions are negatives: the image side gets more choices (its loss grows by exactly the
        // added softmax mass), the caption side is unchanged.
        let with = clip_loss(
            &f,
            &Tensor::cat(&[&f, &g.narrow(0, 0, 2).unwrap()], 0).unwrap(),
            &scale,
        )
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
        let norm = |t: &Tensor| crate::clip::l2_normalize(t).unwrap();
        let sims: Vec<Vec<f32>> = norm(&f)
            .matmul(
                &norm(&Tensor::cat(&[&f, &g.narrow(0, 0, 2).unwrap()], 0).unwrap())
                    .t()
                    .unwrap(),
            )
            .unwrap()
            .to_vec2()
            .unwrap();
        let image_side = |cols: usize| -> f64 {
            (0..4)
                .map(|i| {
                    let row: Vec<f64> = sims[i][..cols]
                        .iter()
                        .map(|&v| 20.0 * f64::from(v))
                        .collect();
                    row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[i]
                })
                .sum::<f64>()
                / 4.0
        };
        let grew = f64::from(with - same);
        crate::testing::within(
            "CLIP loss with 2 negatives minus without, vs the image side's growth / 2",
            (grew - 0.5 * (image_side(6) - image_side(4))).abs(),
            1e-4,
        );
        assert!(grew > 0.0);
    }
}
