//! A pretraining run as the CLI runs it: read the pairs, preprocess every image once and tokenize every
//! caption, train both towers on the epoch loop, write the model as a Hugging Face folder.

use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::clip::preprocess::{load_image, preprocess};
use crate::clip::{ClipTokenizer, PreprocessConfig};
use crate::data::scenes::CaptionPair;
use crate::error::Result;
use crate::progress::{check, Progress};
use crate::train::epoch_loop::{run_until, EpochStats, TrainEvent, TrainSet};
use crate::train::pretrain::{PairTensors, PretrainConfig, Pretrainer, TrainableClip};

/// Pixels at the model's input size and token ids of every pair, in parallel; an unreadable image is an
/// error naming it.
pub fn prepare(pairs: &[CaptionPair], image_size: usize, tok: &ClipTokenizer, device: &Device, progress: &dyn Progress) -> Result<PairTensors> {
    let pre = PreprocessConfig::clip(image_size);
    let mut pixels = Vec::with_capacity(pairs.len() * 3 * image_size * image_size);
    for (b, chunk) in pairs.chunks(256).enumerate() {
        check(progress)?;
        let px: Vec<Vec<f32>> = chunk.par_iter().map(|p| Ok(preprocess(&load_image(&p.image)?, &pre))).collect::<Result<_>>()?;
        pixels.extend(px.into_iter().flatten());
        progress.update("images", (b * 256 + chunk.len()).min(pairs.len()), pairs.len());
    }
    let pixels = Tensor::from_vec(pixels, (pairs.len(), 3, image_size, image_size), device)?;
    let ids = tok.encode_batch(&pairs.iter().map(|p| p.caption.clone()).collect::<Vec<_>>())?;
    Ok(PairTensors { pixels, ids })
}

/// Trains `model` on `data` and writes it to `out`; `on_epoch` sees every epoch's statistics.
pub fn train(model: &TrainableClip, data: &PairTensors, config: &PretrainConfig, out: &Path, progress: &dyn Progress, on_epoch: &mut dyn FnMut(&EpochStats)) -> Result<Vec<EpochStats>> {
    crate::error::output_dir(out)?;
    if out.exists() && std::fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        // Before training, not after it.
        return Err(crate::error::Error::bad_file(out, "already exists and is not empty", "choose a new folder or remove this one"));
    }
    let mut t = Pretrainer::new(model, config.clone(), data)?;
    let set = TrainSet { items: data.ids.len(), views: 1 };
    run_until(&mut t, set, config.optim.epochs, "", progress, &mut |e, _| {
        if let TrainEvent::Epoch(s) = &e {
            on_epoch(s)
        }
    })?;
    model.save_folder(out)?;
    Ok(t.state.history)
}
