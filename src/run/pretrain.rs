//! A pretraining run as the CLI runs it: read the pairs, preprocess every image once and tokenize every
//! caption, train both towers on the epoch loop, write the model as a Hugging Face folder.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::clip::preprocess::{load_image, preprocess};
use crate::clip::synth::Storage;
use crate::clip::{ClipTokenizer, PreprocessConfig};
use crate::data::scenes::CaptionPair;
use crate::data::webdataset::StreamOrder;
use crate::error::Result;
use crate::progress::{check, Progress};
use crate::train::checkpoint::{Checkpoint, CheckpointSink};
use crate::train::config::{PretrainRun, PretrainStart};
use crate::train::coop::checkpoint_path;
use crate::train::epoch_loop::{run_until, EpochStats, TrainEvent, TrainSet};
use crate::train::pairs::{PairSource, SceneStream};
use crate::train::pretrain::{PairTensors, PretrainConfig, Pretrainer, TrainableClip};
use crate::train::shard_pairs::ShardStream;

/// The model pretraining starts from, the tokenizer its captions take and the preprocessing its images
/// take: random weights of a preset (optionally with another input and patch size; CLIP's preprocessing)
/// or every weight of an existing CLIP folder (with that folder's tokenizer and preprocessing).
pub fn start_model(
    start: &PretrainStart,
    seed: u64,
    sizes: (Option<usize>, Option<usize>),
    device: &Device,
) -> Result<(TrainableClip, ClipTokenizer, PreprocessConfig)> {
    match start {
        PretrainStart::Init(dir) => {
            if sizes != (None, None) {
                return Err(crate::Error::invalid("the image and patch size of a model being fine-tuned are its own: drop --image-size / --patch-size"));
            }
            let model = TrainableClip::from_folder(dir, device)?;
            let (tokenizer, preprocess) = crate::clip::load::companions(dir, &model.config)?;
            Ok((model, tokenizer, preprocess))
        }
        PretrainStart::Preset(name) => {
            let mut cfg = crate::clip::ClipConfig::preset(name).map_err(crate::Error::invalid)?;
            let v = &mut cfg.vision_config;
            (v.image_size, v.patch_size) = (
                sizes.0.unwrap_or(v.image_size),
                sizes.1.unwrap_or(v.patch_size),
            );
            cfg.validate()
                .map_err(|e| crate::Error::invalid(format!("image size / patch size: {e}")))?;
            let preprocess = PreprocessConfig::clip(cfg.vision_config.image_size);
            Ok((
                TrainableClip::init(&cfg, seed, device)?,
                ClipTokenizer::bundled(cfg.text_config.max_position_embeddings)?,
                preprocess,
            ))
        }
    }
}

/// Pixels at the model's input size (`image_size`, through `pre`) and token ids of every pair, in
/// parallel; an unreadable image is an error naming it.
pub fn prepare(
    pairs: &[CaptionPair],
    image_size: usize,
    pre: &PreprocessConfig,
    tok: &ClipTokenizer,
    device: &Device,
    progress: &dyn Progress,
) -> Result<PairTensors> {
    let mut pixels = Vec::with_capacity(pairs.len() * 3 * image_size * image_size);
    for (b, chunk) in pairs.chunks(256).enumerate() {
        check(progress)?;
        let px: Vec<Vec<f32>> = chunk
            .par_iter()
            .map(|p| Ok(preprocess(&load_image(&p.image)?, pre)))
            .collect::<Result<_>>()?;
        pixels.extend(px.into_iter().flatten());
        progress.update(
            "images",
            (b * 256 + chunk.len()).min(pairs.len()),
            pairs.len(),
        );
    }
    let pixels = Tensor::from_vec(pixels, (pairs.len(), 3, image_size, image_size), device)?;
    let ids = tok.encode_batch(&pairs.iter().map(|p| p.caption.clone()).collect::<Vec<_>>())?;
    Ok(PairTensors { pixels, ids })
}

/// The pairs a run trains on: generated scenes streamed each epoch (with their patch labels), shards
/// streamed in each epoch's order (`run.pairs` names WebDataset shards), or a folder's pairs, read and
/// preprocessed once ([`prepare`]); for a model of this vision tower. Shard counts are cached under
/// `cache`.
pub fn open_pairs(
    run: &PretrainRun,
    vision: &crate::clip::config::VisionConfig,
    tok: ClipTokenizer,
    pre: PreprocessConfig,
    device: &Device,
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Box<dyn PairSource>> {
    let dir = run.pairs.as_path();
    if let Some(recipe) = &run.scenes {
        return Ok(Box::new(SceneStream::new(
            recipe.clone(),
            vision.image_size,
            vision.grid(),
            tok,
            pre,
            device,
        )?));
    }
    if dir.as_os_str().is_empty() {
        return Err(crate::Error::invalid(
            "give a folder of image–caption pairs, shards or generated scenes",
        ));
    }
    if crate::data::webdataset::names_shards(dir) {
        let order = StreamOrder {
            seed: run.config.seed,
            buffer: run.shards.shuffle_buffer,
        };
        return Ok(Box::new(ShardStream::open(
            dir,
            cache,
            order,
            run.shards.bad_samples,
            vision.image_size,
            tok,
            pre,
            device,
            progress,
        )?));
    }
    let pairs = crate::data::scenes::read_pairs(dir)?;
    Ok(Box::new(prepare(
        &pairs,
        vision.image_size,
        &pre,
        &tok,
        device,
        progress,
    )?))
}

const CHECKPOINT_FORMAT: &str = "promptscope-pretrain-checkpoint/1";

/// Trains `model` on `data` and writes it to `out`; `on_event` sees every step and epoch (and may hold
/// the run there: the app pauses that way). A checkpoint
/// next to `out` (`out.ckpt`) is rewritten after every epoch; with `resume` a killed or stopped run
/// continues from it to the same weights, bit for bit. `run` describes the run (model, data, settings):
/// a checkpoint of another run is refused.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &TrainableClip,
    data: &dyn PairSource,
    config: &PretrainConfig,
    run: &serde_json::Value,
    out: &Path,
    storage: Storage,
    resume: bool,
    progress: &dyn Progress,
    on_event: &mut dyn FnMut(TrainEvent),
) -> Result<Vec<EpochStats>> {
    crate::error::check_writable(out)?;
    let mut t = Pretrainer::new(model, config.clone(), data)?;
    let ckpt_path = checkpoint_path(out);
    let run_json = serde_json::json!({ "run": run, "config": config }).to_string();
    if resume {
        if let Some(ckpt) =
            Checkpoint::read_matching(&ckpt_path, CHECKPOINT_FORMAT, "a pretraining", &run_json)?
        {
            t.restore(&ckpt)?;
        }
    }
    // Killed after writing its model (a folder renamed into place whole), before or after removing its
    // checkpoint, a run has nothing left to do: resuming it is done (found by the kill-safety test).
    let finished = t.state.epoch >= config.optim.epochs || !ckpt_path.exists();
    if resume
        && finished
        && out.join("model.safetensors").is_file()
        && out.join("config.json").is_file()
    {
        let _ = std::fs::remove_file(&ckpt_path);
        return Ok(t.state.history);
    }
    // Before training, not after it.
    crate::error::check_new_dir(out)?;
    let meta = HashMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        ("run".to_string(), run_json),
    ]);
    t.checkpoint = Some(CheckpointSink {
        path: ckpt_path.clone(),
        tensors: vec![],
        meta,
    });
    let set = TrainSet {
        items: data.len(),
        views: 1,
    };
    run_until(
        &mut t,
        set,
        config.optim.epochs,
        "",
        progress,
        &mut |e, _| on_event(e),
    )?;
    model.save_folder(out, storage)?;
    let _ = std::fs::remove_file(&ckpt_path);
    Ok(t.state.history)
}
