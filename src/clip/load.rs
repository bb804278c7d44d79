//! Finding and loading a CLIP checkpoint: a local folder in the Hugging Face layout, or a hub id fetched
//! once into the standard Hugging Face cache.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::ClipConfig;
use super::family::{Family, GlobalModel};
use super::model::ClipModel;
use super::preprocess::PreprocessConfig;
use super::tokenizer::ClipTokenizer;
use crate::error::{Error, Result};

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const TOKENIZER: &str = "tokenizer.json";
const PREPROCESSOR: &str = "preprocessor_config.json";

/// A model ready to use, with everything the user should know about where it came from. Usually our CLIP
/// (FILIP models are CLIP checkpoints); a SigLIP or Chinese-CLIP folder loads too, for what needs only
/// global features ([`super::family`]).
pub struct LoadedClip {
    towers: Towers,
    pub preprocess: PreprocessConfig,
    pub dir: PathBuf,
    /// What the user passed (folder path or hub id), recorded in exports.
    pub id: String,
    pub device: Device,
    /// Set for the shipped demo models ([`super::demo`]): what they are, said wherever the model is named.
    pub demo_note: Option<String>,
    /// What the user should be told about how the model was found: an optional file a hub repository
    /// does not have, and the default used instead. The CLI prints them; the app shows them.
    pub warnings: Vec<String>,
}

enum Towers {
    Clip {
        model: ClipModel,
        tokenizer: ClipTokenizer,
    },
    Global(GlobalModel),
}

impl LoadedClip {
    /// Our CLIP, with the token-level access prompt learning and the maps need; for another family, an
    /// error that says what `need`s it and what the model can do instead.
    pub fn model(&self) -> Result<&ClipModel> {
        match &self.towers {
            Towers::Clip { model, .. } => Ok(model),
            Towers::Global(g) => Err(self.not_token_level(g.family)),
        }
    }

    /// CLIP's BPE tokenizer (see [`Self::model`]).
    pub fn tokenizer(&self) -> Result<&ClipTokenizer> {
        match &self.towers {
            Towers::Clip { tokenizer, .. } => Ok(tokenizer),
            Towers::Global(g) => Err(self.not_token_level(g.family)),
        }
    }

    fn not_token_level(&self, family: Family) -> Error {
        Error::invalid(format!(
            "model '{}' is a {} model: prompt learning (CoOp, CoCoOp, KgCoOp, MP-FGVC) and the token maps need CLIP's \
             token-level access. With this model promptscope runs zero-shot, template ensembles, the linear probe, \
             Tip-Adapter(-F), CLIP-Adapter and Compare; load a CLIP (or FILIP) model for the rest",
            self.id,
            family.name()
        ))
    }

    /// The SigLIP or Chinese-CLIP model, when that is what was loaded.
    pub fn global(&self) -> Option<&GlobalModel> {
        match &self.towers {
            Towers::Clip { .. } => None,
            Towers::Global(g) => Some(g),
        }
    }

    pub fn family(&self) -> Family {
        match &self.towers {
            Towers::Clip { .. } => Family::Clip,
            Towers::Global(g) => g.family,
        }
    }

    /// Projected (not normalised) image features `[B, P]` of preprocessed pixels, for any family.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        match &self.towers {
            Towers::Clip { model, .. } => Ok(model.image_features(pixels)?),
            Towers::Global(g) => g.image_features(pixels),
        }
    }

    /// Projected (not normalised) text features `[N, P]` of whole texts, tokenised as the family does.
    pub fn text_features(&self, texts: &[String]) -> Result<Tensor> {
        match &self.towers {
            Towers::Clip { model, tokenizer } => {
                Ok(model.text_features(&tokenizer.encode_batch(texts)?)?)
            }
            Towers::Global(g) => g.text_features(texts),
        }
    }

    /// `exp(logit_scale)`: the temperature of the model's softmax (SigLIP's sigmoid) logits.
    pub fn logit_scale(&self) -> f32 {
        match &self.towers {
            Towers::Clip { model, .. } => model.logit_scale(),
            Towers::Global(g) => g.logit_scale,
        }
    }

    /// The square input side, in pixels.
    pub fn image_size(&self) -> usize {
        match &self.towers {
            Towers::Clip { model, .. } => model.config.vision_config.image_size,
            Towers::Global(g) => g.image_size,
        }
    }

    /// The width of the joint embedding.
    pub fn projection_dim(&self) -> usize {
        match &self.towers {
            Towers::Clip { model, .. } => model.config.projection_dim,
            Towers::Global(g) => g.projection_dim,
        }
    }

    /// One-line description for logs and the UI.
    pub fn describe(&self) -> String {
        let demo = self
            .demo_note
            .as_ref()
            .map_or(String::new(), |n| format!(" [{n}]"));
        let (c, tokenizer) = match &self.towers {
            Towers::Clip { model, tokenizer } => (&model.config, tokenizer),
            Towers::Global(g) => {
                return format!(
                    "{}{demo}: {}; {}",
                    self.id,
                    g.summary,
                    self.family().supports()
                )
            }
        };
        format!(
            "{}{demo} (ViT {}×{} px, patch {}, text {}-d, {} layers / vision {}-d, {} layers, projection {}); tokenizer: {}",
            self.id,
            c.vision_config.image_size,
            c.vision_config.image_size,
            c.vision_config.patch_size,
            c.text_config.hidden_size,
            c.text_config.num_hidden_layers,
            c.vision_config.hidden_size,
            c.vision_config.num_hidden_layers,
            c.projection_dim,
            tokenizer.source
        )
    }
}

/// `model` is a folder, a demo model name, or a hub id such as `openai/clip-vit-base-patch32`.
pub fn load(model: &str, device: &Device) -> Result<LoadedClip> {
    let found = locate(model)?;
    let mut clip = load_dir(&found.dir, model, device)?;
    clip.warnings = found.warnings;
    Ok(clip)
}

/// Where a model's folder is, and what the user should know about how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub dir: PathBuf,
    /// See [`LoadedClip::warnings`].
    pub warnings: Vec<String>,
}

/// The folder of `model` (see [`locate`]).
pub fn resolve(model: &str) -> Result<PathBuf> {
    locate(model).map(|l| l.dir)
}

/// The folder of `model`: a folder as given, a shipped demo model, or a hub id downloaded once into the
/// Hugging Face cache.
pub fn locate(model: &str) -> Result<Located> {
    let path = Path::new(model);
    let local = |dir: PathBuf| {
        Ok(Located {
            dir,
            warnings: vec![],
        })
    };
    if path.is_dir() {
        return local(path.to_path_buf());
    }
    if let Some(dir) = super::demo::find(model) {
        return local(dir);
    }
    if path.is_file() {
        return Err(Error::bad_file(
            path,
            "is a file, not a model folder",
            "pass the folder that holds config.json and model.safetensors",
        ));
    }
    if looks_like_hub_id(model) {
        return fetch_from_hub(model);
    }
    Err(Error::missing(path.to_path_buf(), "pass a CLIP model folder (config.json, model.safetensors, tokenizer.json), a hub id such as openai/clip-vit-base-patch32, or a demo model name (scenes-filip, scenes-clip)"))
}

fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
        && !s.starts_with('.')
}

/// The files a model folder may lack, and what is used instead.
const OPTIONAL: [(&str, &str); 2] = [
    (TOKENIZER, "the bundled OpenAI CLIP tokenizer"),
    (PREPROCESSOR, "CLIP's default preprocessing"),
];

/// Downloads the files a CLIP folder needs, once: the cache is looked at first, so no network is needed
/// for a model already fetched. An optional file the repository does not have (HTTP 404) is remembered as
/// absent, as the Python hub client does (`.no_exist/<commit>/<file>`), and reported in the warnings;
/// any other failure to get one is an error, since the default might not be this model's.
fn fetch_from_hub(id: &str) -> Result<Located> {
    use std::cell::OnceCell;
    let cache = hf_hub::Cache::from_env().model(id.to_string());
    let hub_err = |e: &dyn std::fmt::Display| {
        Error::Hub {
        id: id.to_string(),
        reason: format!(
            "not a local folder, and downloading it from the Hugging Face hub failed ({e}). Without network \
             access, copy the model folder (config.json, model.safetensors, tokenizer.json) to this machine \
             and pass its path: --model /path/to/folder"
        ),
    }
    };
    let api = OnceCell::new();
    let repo = || -> Result<&hf_hub::api::sync::ApiRepo> {
        if api.get().is_none() {
            let built = hf_hub::api::sync::ApiBuilder::from_env()
                .with_progress(true)
                .build()
                .map_err(|e| hub_err(&e))?;
            let _ = api.set(built.model(id.to_string()));
        }
        Ok(api.get().expect("set above"))
    };
    let cfg = match (cache.get(CONFIG), cache.get(WEIGHTS)) {
        (Some(cfg), Some(_)) => cfg,
        _ => {
            let cfg = repo()?.get(CONFIG).map_err(|e| hub_err(&e))?;
            repo()?
                .get(WEIGHTS)
                .map_err(|e| hub_err(&format!("{WEIGHTS}: {e}")))?;
            cfg
        }
    };
    let dir = cfg.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut warnings = Vec::new();
    for (file, default) in OPTIONAL {
        if dir.join(file).is_file() {
            continue;
        }
        let absent = || format!("model '{id}' has no {file} on the hub: using {default}");
        let marker = no_exist_marker(&dir, file);
        if marker.as_ref().is_some_and(|m| m.is_file()) {
            warnings.push(absent());
            continue;
        }
        match repo()?.get(file) {
            Ok(got) if got.parent() == Some(dir.as_path()) => {}
            Ok(_) => {
                return Err(Error::Hub {
                    id: id.to_string(),
                    reason: format!("the hub has a newer revision than the cached {CONFIG}, and {file} came from it. Run again to download the whole model anew"),
                })
            }
            Err(e) if is_not_found(&e) => {
                // Remembered, so later runs need no network to know; failing to write it costs one lookup.
                if let Some(m) = &marker {
                    let _ = m.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(m, b""));
                }
                warnings.push(absent());
            }
            Err(e) => {
                return Err(Error::Hub {
                    id: id.to_string(),
                    reason: format!(
                        "downloading {file} failed ({e}); without it promptscope would use {default}, which may not be this \
                         model's. Retry with network access, or copy the model folder with its {file} to this machine and \
                         pass its path: --model /path/to/folder"
                    ),
                })
            }
        }
    }
    Ok(Located { dir, warnings })
}

/// `<repo cache>/.no_exist/<commit>/<file>` for a snapshot folder `<repo cache>/snapshots/<commit>`: where
/// the hub clients note that a revision has no such file.
fn no_exist_marker(snapshot: &Path, file: &str) -> Option<PathBuf> {
    let commit = snapshot.file_name()?;
    let repo = snapshot.parent()?.parent()?;
    Some(repo.join(".no_exist").join(commit).join(file))
}

/// Whether a failed download means the repository has no such file (HTTP 404), rather than a network,
/// permission, server or disk failure.
fn is_not_found(e: &hf_hub::api::sync::ApiError) -> bool {
    use hf_hub::api::sync::ApiError;
    match e {
        ApiError::RequestError(r) => matches!(**r, ureq::Error::Status(404, _)),
        ApiError::TooManyRetries(inner) => is_not_found(inner),
        _ => false,
    }
}

pub fn read_config(dir: &Path) -> Result<ClipConfig> {
    let path = dir.join(CONFIG);
    let fix =
        "a CLIP folder needs the config.json of CLIPModel (with text_config and vision_config)";
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::missing(path.clone(), fix),
        _ => Error::io(&path, e),
    })?;
    let cfg: ClipConfig = serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(&path, format!("not a CLIP config ({e})"), fix))?;
    cfg.validate().map_err(|e| Error::bad_file(&path, e, fix))?;
    Ok(cfg)
}

/// A CLIP folder's config with the tokenizer and preprocessing it comes with, its start- and end-of-text
/// ids taken from the tokenizer: the hub's OpenAI configs say 0 and 2 there (leftovers that transformers
/// special-cases by pooling at the largest id), while the text tower pools at the tokenizer's real
/// end-of-text token.
pub fn read_config_for(dir: &Path) -> Result<(ClipConfig, ClipTokenizer, PreprocessConfig)> {
    let mut config = read_config(dir)?;
    let (tokenizer, preprocess) = companions(dir, &config)?;
    config.text_config.eos_token_id = tokenizer.eos_id;
    config.text_config.bos_token_id = tokenizer.bos_id;
    Ok((config, tokenizer, preprocess))
}

/// The tokenizer and preprocessing a model folder comes with (the bundled BPE and CLIP's defaults where
/// it has none), checked against its config; the weights are not read.
pub fn companions(dir: &Path, config: &ClipConfig) -> Result<(ClipTokenizer, PreprocessConfig)> {
    let tok_path = dir.join(TOKENIZER);
    let max_len = config.text_config.max_position_embeddings;
    let tokenizer = if tok_path.is_file() {
        ClipTokenizer::from_file(&tok_path, max_len)?
    } else {
        ClipTokenizer::bundled(max_len)?
    };
    if tokenizer.vocab_size() > config.text_config.vocab_size {
        return Err(Error::bad_file(
            &tok_path,
            format!(
                "has {} tokens but the model's vocabulary has {}",
                tokenizer.vocab_size(),
                config.text_config.vocab_size
            ),
            "use the tokenizer of this model",
        ));
    }
    Ok((
        tokenizer,
        preprocess_of(dir, config.vision_config.image_size)?,
    ))
}

/// The folder's `preprocessor_config.json` (CLIP's defaults without one), checked against the input size.
fn preprocess_of(dir: &Path, image_size: usize) -> Result<PreprocessConfig> {
    let pre_path = dir.join(PREPROCESSOR);
    let preprocess = if pre_path.is_file() {
        PreprocessConfig::from_file(&pre_path, image_size)?
    } else {
        PreprocessConfig::clip(image_size)
    };
    if preprocess.output_size() != Some((image_size, image_size)) {
        return Err(Error::bad_file(
            &pre_path,
            format!(
                "produces {:?} images but the model takes {image_size}×{image_size}",
                preprocess.output_size()
            ),
            "use the preprocessor_config.json of this model",
        ));
    }
    Ok(preprocess)
}

pub fn load_dir(dir: &Path, id: &str, device: &Device) -> Result<LoadedClip> {
    let (family, raw) = read_family(dir)?;
    // A CLIP config is checked before the weights are looked for: a broken config.json is the first thing
    // to fix.
    let clip_config = if family == Family::Clip {
        Some(read_config_for(dir)?)
    } else {
        None
    };
    let weights = dir.join(WEIGHTS);
    if !weights.is_file() {
        return Err(Error::missing(weights, "promptscope reads safetensors weights; convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True)"));
    }
    let vb = mmap_weights(&weights, device)?;
    let (towers, preprocess) = if let Some((config, tokenizer, preprocess)) = clip_config {
        let model = ClipModel::load(&config, vb).map_err(|e| {
            Error::bad_file(
                &weights,
                format!("does not match config.json ({e})"),
                "use the config.json and model.safetensors of the same CLIP checkpoint",
            )
        })?;
        (Towers::Clip { model, tokenizer }, preprocess)
    } else {
        let model = GlobalModel::load(family, dir, &raw, &weights, vb)?;
        let preprocess = preprocess_of(dir, model.image_size)?;
        (Towers::Global(model), preprocess)
    };
    Ok(LoadedClip {
        towers,
        preprocess,
        dir: dir.to_path_buf(),
        id: id.to_string(),
        device: device.clone(),
        demo_note: super::demo::note(dir),
        warnings: vec![],
    })
}

/// The family a folder's `config.json` names, and the parsed file.
pub fn read_family(dir: &Path) -> Result<(Family, serde_json::Value)> {
    let path = dir.join(CONFIG);
    let fix = "a model folder needs the config.json saved with the model (CLIPModel, SiglipModel or ChineseCLIPModel)";
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::missing(path.clone(), fix),
        _ => Error::io(&path, e),
    })?;
    // Unparsable JSON is left to the CLIP reader, whose message says what a CLIP config needs.
    let Ok(raw) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Ok((Family::Clip, serde_json::Value::Null));
    };
    let family = Family::of_config(&raw).map_err(|e| {
        Error::bad_file(
            &path,
            e,
            "load a CLIP, FILIP, SigLIP or Chinese-CLIP folder",
        )
    })?;
    Ok((family, raw))
}

/// Memory-maps a safetensors file; a truncated or foreign file, or one holding a NaN or an infinity,
/// is reported, not trusted.
pub fn mmap_weights(path: &Path, device: &Device) -> Result<VarBuilder<'static>> {
    let unreadable = |e: candle_core::Error| {
        Error::bad_file(
            path,
            format!("unreadable safetensors ({e})"),
            "the file is truncated or corrupt: download or copy it again",
        )
    };
    // SAFETY: the file is mapped read-only; as with every mmap-based loader, it must not be modified
    // while the model is in use.
    let mapped =
        unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(unreadable)?;
    crate::tensor_file::check_all_finite(path, mapped.tensors())?;
    Ok(VarBuilder::from_backend(
        Box::new(mapped),
        DType::F32,
        device.clone(),
    ))
}

/// A cheap identity for a model folder, recorded in exports and cache keys: sha256 over config.json,
/// the weights file's length and its first and last MiB (hashing all of a 1.7 GB file on each load would
/// cost seconds).
pub fn fingerprint(dir: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::{Read, Seek, SeekFrom};
    let mut h = sha2::Sha256::new();
    let cfg = dir.join(CONFIG);
    h.update(std::fs::read(&cfg).map_err(|e| Error::io(&cfg, e))?);
    let weights = dir.join(WEIGHTS);
    let mut f = std::fs::File::open(&weights).map_err(|e| Error::io(&weights, e))?;
    let len = f.metadata().map_err(|e| Error::io(&weights, e))?.len();
    h.update(len.to_le_bytes());
    const MIB: u64 = 1 << 20;
    let mut buf = vec![0u8; MIB.min(len) as usize];
    f.read_exact(&mut buf).map_err(|e| Error::io(&weights, e))?;
    h.update(&buf);
    f.seek(SeekFrom::Start(len - buf.len() as u64))
        .map_err(|e| Error::io(&weights, e))?;
    f.read_exact(&mut buf).map_err(|e| Error::io(&weights, e))?;
    h.update(&buf);
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::api::sync::ApiError;

    fn status(code: u16) -> ApiError {
        let response = ureq::Response::new(code, "status", "").unwrap();
        ApiError::RequestError(Box::new(ureq::Error::Status(code, response)))
    }

    #[test]
    fn only_a_404_means_the_file_is_absent() {
        assert!(is_not_found(&status(404)));
        assert!(is_not_found(&ApiError::TooManyRetries(Box::new(status(
            404
        )))));
        for code in [401, 403, 500, 503] {
            assert!(!is_not_found(&status(code)), "{code}");
        }
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!is_not_found(&ApiError::IoError(io)));
    }

    #[test]
    fn the_absent_marker_sits_beside_the_snapshots() {
        let snap = Path::new("/hf/hub/models--openai--clip/snapshots/abc123");
        assert_eq!(
            no_exist_marker(snap, TOKENIZER).unwrap(),
            Path::new("/hf/hub/models--openai--clip/.no_exist/abc123/tokenizer.json")
        );
    }
}
