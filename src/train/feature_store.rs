//! Eval-view image features kept per image, so any subset of a folder reuses them. The whole-list cache
//! of [`super::features`] serves a run that asks for the same samples again; a sweep's tasks ask for
//! different subsets of one big folder (each seed's shots, each split), and `features --shard I/N`
//! fills this store for one slice of the folder so that extraction splits across cluster tasks.
//!
//! The store of a model is a folder of packs, `<cache>/per-image/<key>/pack-<digest>.safetensors`, each
//! holding `features` `[n, P]` and the sha256 of each image's file `digests` `[n, 32]`. The key covers
//! the model's files and preprocessing, so a pack never serves another model. Packs are written whole
//! (temporary file, then rename) and named by their content, so tasks writing at once never clash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use sha2::{Digest, Sha256};

use crate::clip::LoadedClip;
use crate::error::{Error, Result};

/// Progress stage reported (as done) when every feature came from the store.
pub const STORE_STAGE: &str = "image features (per-image cache)";
const PACK_FORMAT: &str = "promptscope-feature-pack-v1";
const FEATURES: &str = "features";
const DIGESTS: &str = "digests";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The folder of `clip`'s packs under the feature cache `cache`.
pub fn store_dir(cache: &Path, clip: &LoadedClip) -> Result<PathBuf> {
    let mut h = Sha256::new();
    h.update(PACK_FORMAT);
    h.update([0]);
    h.update(crate::clip::load::fingerprint(&clip.dir)?);
    h.update([0]);
    h.update(format!("{:?}", clip.preprocess));
    Ok(cache.join("per-image").join(hex(&h.finalize())))
}

/// The rows of `wanted` digests found in the packs of `dir` (`dim` wide), one pack read at a time. An
/// unreadable pack is reported and passed over: its images are computed again.
pub fn lookup(dir: &Path, wanted: &[[u8; 32]], dim: usize) -> HashMap<[u8; 32], Vec<f32>> {
    let mut found: HashMap<[u8; 32], Vec<f32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    let mut packs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("pack-") && n.ends_with(".safetensors"))
        })
        .collect();
    packs.sort();
    let mut missing: std::collections::HashSet<[u8; 32]> = wanted.iter().copied().collect();
    for pack in packs {
        if missing.is_empty() {
            break;
        }
        if let Err(why) = read_pack(&pack, dim, &mut missing, &mut found) {
            eprintln!(
                "warning: ignoring feature pack {}: {why}; its images are computed again",
                pack.display()
            );
        }
    }
    found
}

fn read_pack(
    pack: &Path,
    dim: usize,
    missing: &mut std::collections::HashSet<[u8; 32]>,
    found: &mut HashMap<[u8; 32], Vec<f32>>,
) -> std::result::Result<(), String> {
    let bytes = std::fs::read(pack).map_err(|e| e.to_string())?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
    let stored = |k: &str| meta.metadata().as_ref().and_then(|m| m.get(k)).cloned();
    if stored("format").as_deref() != Some(PACK_FORMAT) {
        return Err("not a feature pack of this version".into());
    }
    let feats = st.tensor(FEATURES).map_err(|e| e.to_string())?;
    let digests = st.tensor(DIGESTS).map_err(|e| e.to_string())?;
    let n = digests.shape().first().copied().unwrap_or(0);
    if feats.dtype() != safetensors::Dtype::F32
        || feats.shape() != [n, dim]
        || digests.shape() != [n, 32]
    {
        return Err(format!(
            "holds features {:?} and digests {:?}, expected [n, {dim}] and [n, 32]",
            feats.shape(),
            digests.shape()
        ));
    }
    let mut h = Sha256::new();
    h.update(feats.data());
    h.update(digests.data());
    if stored("sha256").as_deref() != Some(hex(&h.finalize()).as_str()) {
        return Err("its values do not match their checksum (a corrupted file)".into());
    }
    for (i, d) in digests.data().chunks_exact(32).enumerate() {
        let d: [u8; 32] = d.try_into().expect("32 bytes");
        if missing.remove(&d) {
            let row = &feats.data()[i * dim * 4..(i + 1) * dim * 4];
            let values: Vec<f32> = row
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if values.iter().any(|v| !v.is_finite()) {
                return Err("it holds a non-finite feature".into());
            }
            found.insert(d, values);
        }
    }
    Ok(())
}

/// Writes `feats` (`[n, P]`, row i the image of `digests[i]`) as a pack in `dir`; returns its path.
pub fn write_pack(dir: &Path, digests: &[[u8; 32]], feats: &Tensor) -> Result<PathBuf> {
    let (rows, dim) = feats.dims2()?;
    if rows != digests.len() {
        return Err(Error::invalid(format!(
            "a feature pack of {rows} rows for {} images",
            digests.len()
        )));
    }
    let values = feats.flatten_all()?.to_vec1::<f32>()?;
    let fbytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dbytes: Vec<u8> = digests.concat();
    let mut h = Sha256::new();
    h.update(&fbytes);
    h.update(&dbytes);
    let sum = hex(&h.finalize());
    let name = format!("pack-{}.safetensors", &hex(&Sha256::digest(&dbytes))[..32]);
    let file = dir.join(name);
    let bad = |e: safetensors::SafeTensorError| Error::invalid(format!("{}: {e}", file.display()));
    let tensors = [
        (
            FEATURES,
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![rows, dim], &fbytes)
                .map_err(bad)?,
        ),
        (
            DIGESTS,
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![rows, 32], &dbytes)
                .map_err(bad)?,
        ),
    ];
    let meta = HashMap::from([
        ("format".to_string(), PACK_FORMAT.to_string()),
        ("sha256".to_string(), sum),
    ]);
    let out = safetensors::serialize(tensors, Some(meta))
        .map_err(|e| Error::invalid(format!("{}: {e}", file.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::error::write_atomic(&file, &out)?;
    Ok(file)
}
