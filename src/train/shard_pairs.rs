//! Pretraining's batches streamed from WebDataset shards: one thread reads the shards in the epoch's
//! order ([`stream_epoch`]), another decodes and preprocesses the next batch (its images in parallel)
//! while the step trains on the current one. Memory is the shuffle buffer and two batches, whatever the
//! number of pairs.

use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::pairs::{PairBatch, PairSource};
use crate::clip::preprocess::{load_image_bytes, preprocess};
use crate::clip::{ClipTokenizer, PreprocessConfig};
use crate::data::webdataset::{
    stream_epoch, BadKind, BadSample, BadSamples, RawSample, ShardSet, SkipLog, Skipped,
    StreamOrder,
};
use crate::error::{Error, Result};

/// A batch decoded off the step's thread.
struct Decoded {
    pixels: Vec<f32>,
    ids: Vec<Vec<u32>>,
}

struct Decoder {
    tokenizer: ClipTokenizer,
    preprocess: PreprocessConfig,
    policy: BadSamples,
    log: Arc<SkipLog>,
}

impl Decoder {
    /// The next `b` samples of `raw` that decode; undecodable ones are skipped (and more read) or end
    /// the batch with their error, as the policy says.
    fn batch(&self, raw: &Receiver<Result<RawSample>>, b: usize) -> Result<Decoded> {
        let mut pixels = Vec::new();
        let mut captions = Vec::with_capacity(b);
        while captions.len() < b {
            let want = b - captions.len();
            let samples = raw.iter().take(want).collect::<Result<Vec<RawSample>>>()?;
            if samples.len() < want {
                return Err(Error::invalid(
                    "the shard reader stopped before the epoch's end",
                ));
            }
            let decoded: Vec<_> = samples
                .par_iter()
                .map(|s| {
                    load_image_bytes(&s.image, &s.image_name())
                        .map(|img| preprocess(&img, &self.preprocess))
                        .map_err(|e| BadSample {
                            kind: BadKind::CorruptImage,
                            shard: s.shard.clone(),
                            key: s.key.clone(),
                            detail: e.to_string(),
                        })
                })
                .collect();
            for (sample, px) in samples.into_iter().zip(decoded) {
                match px {
                    Ok(px) => {
                        pixels.extend(px);
                        captions.push(sample.caption);
                    }
                    Err(bad) => {
                        self.log.record(&bad);
                        if self.policy == BadSamples::Fail {
                            return Err(bad.error());
                        }
                    }
                }
            }
        }
        Ok(Decoded {
            pixels,
            ids: self.tokenizer.encode_batch(&captions)?,
        })
    }
}

/// The batches of one epoch being made.
struct Pipe {
    epoch: usize,
    size: usize,
    batches: Receiver<Result<Decoded>>,
}

/// Pairs from shards, in each epoch's streamed order. Unlike an in-memory set it cannot be indexed: a
/// batch is the next `rows.len()` pairs of the epoch, whatever `rows` holds. The same (shards, order,
/// epoch) always gives the same batches, so a resumed run sees the data it would have seen.
pub struct ShardStream {
    set: Arc<ShardSet>,
    order: StreamOrder,
    decoder: Arc<Decoder>,
    image_size: usize,
    device: Device,
    pipe: Mutex<Option<Pipe>>,
}

impl ShardStream {
    /// The shards `data` names (see [`ShardSet::open`]), for a model taking `image_size` px.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        data: &Path,
        cache: Option<&Path>,
        order: StreamOrder,
        policy: BadSamples,
        image_size: usize,
        tokenizer: ClipTokenizer,
        preprocess: PreprocessConfig,
        device: &Device,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Self> {
        let set = ShardSet::open(data, cache, progress)?;
        Ok(Self {
            set: Arc::new(set),
            order,
            decoder: Arc::new(Decoder {
                tokenizer,
                preprocess,
                policy,
                log: Arc::default(),
            }),
            image_size,
            device: device.clone(),
            pipe: Mutex::new(None),
        })
    }

    pub fn shards(&self) -> &ShardSet {
        &self.set
    }

    /// Starts epoch `epoch`'s reader and decoder threads, unless they run already. Threads of an
    /// earlier epoch end when their channel is dropped here.
    fn ensure(&self, pipe: &mut Option<Pipe>, epoch: usize, size: usize) {
        if pipe
            .as_ref()
            .is_some_and(|p| p.epoch == epoch && p.size == size)
        {
            return;
        }
        // Samples for a few batches ahead: the reader keeps the decoder fed.
        let (raw_tx, raw_rx) = sync_channel(2 * size.max(32));
        let (set, order, log) = (
            Arc::clone(&self.set),
            self.order,
            Arc::clone(&self.decoder.log),
        );
        let policy = self.decoder.policy;
        std::thread::spawn(move || stream_epoch(&set, order, epoch, policy, &log, &raw_tx));
        // One batch ready beside the one the step trains on.
        let (tx, rx) = sync_channel(1);
        let decoder = Arc::clone(&self.decoder);
        std::thread::spawn(move || loop {
            let batch = decoder.batch(&raw_rx, size);
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
        });
        *pipe = Some(Pipe {
            epoch,
            size,
            batches: rx,
        });
    }
}

impl PairSource for ShardStream {
    fn len(&self) -> usize {
        self.set.len()
    }

    fn batch(&self, epoch: usize, rows: &[usize]) -> Result<PairBatch> {
        let b = rows.len();
        let mut pipe = self
            .pipe
            .lock()
            .map_err(|_| Error::invalid("the shard stream's lock was poisoned"))?;
        self.ensure(&mut pipe, epoch, b);
        let received = pipe.as_ref().expect("ensured").batches.recv();
        let decoded = match received {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(e)) => {
                // The threads have ended: a retry starts them afresh.
                *pipe = None;
                return Err(e);
            }
            Err(_) => {
                *pipe = None;
                return Err(Error::invalid("the shard decoding thread stopped"));
            }
        };
        Ok(PairBatch {
            pixels: Tensor::from_vec(
                decoded.pixels,
                (b, 3, self.image_size, self.image_size),
                &self.device,
            )?,
            ids: decoded.ids,
            negatives: vec![],
            patch_shapes: None,
        })
    }

    fn prefetch(&self, epoch: usize, rows: &[usize]) {
        if let Ok(mut pipe) = self.pipe.lock() {
            self.ensure(&mut pipe, epoch, rows.len());
        }
    }

    fn skipped(&self) -> Option<Skipped> {
        Some(self.decoder.log.summary())
    }
}
