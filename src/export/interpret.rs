//! What each learned context vector is closest to in the vocabulary: its k nearest token embeddings by
//! Euclidean distance (CoOp's `interpret_prompt.py`), for unified and class-specific contexts alike.

use candle_core::{Tensor, D};
use serde::Serialize;

use crate::clip::ClipTokenizer;
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Neighbour {
    pub token: String,
    pub id: u32,
    pub distance: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct VectorWords {
    /// Class index for class-specific contexts.
    pub class: Option<usize>,
    /// Position of the vector in its context (0-based).
    pub position: usize,
    pub nearest: Vec<Neighbour>,
}

/// `ctx`: `[M, D]` or `[C, M, D]`; `table`: the token-embedding table `[V, D]`.
pub fn nearest_tokens(
    ctx: &Tensor,
    table: &Tensor,
    tok: &ClipTokenizer,
    k: usize,
) -> Result<Vec<VectorWords>> {
    let (classes, m, d) = match ctx.dims() {
        [m, d] => (None, *m, *d),
        [c, m, d] => (Some(*c), *m, *d),
        other => return Err(crate::Error::invalid(format!("context of shape {other:?}"))),
    };
    let flat = ctx
        .reshape(((classes.unwrap_or(1) * m), d))?
        .to_device(table.device())?;
    // |a - b|² = |a|² - 2a·b + |b|², all rows at once.
    let a2 = flat.sqr()?.sum_keepdim(D::Minus1)?;
    let b2 = table.sqr()?.sum_keepdim(D::Minus1)?.t()?;
    let dist = a2
        .broadcast_add(&b2)?
        .broadcast_sub(&(flat.matmul(&table.t()?)? * 2.0)?)?
        .relu()?
        .sqrt()?;
    let rows: Vec<Vec<f32>> = dist.to_vec2()?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(r, row)| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            let k = k.min(idx.len());
            idx.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| row[a].total_cmp(&row[b]));
            idx.truncate(k);
            idx.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
            VectorWords {
                class: classes.map(|_| r / m),
                position: r % m,
                nearest: idx
                    .into_iter()
                    .map(|i| Neighbour {
                        token: tok.token_text(i as u32),
                        id: i as u32,
                        distance: row[i],
                    })
                    .collect(),
            }
        })
        .collect())
}
