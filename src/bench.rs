//! Throughput of the two towers on the loaded model: what `promptscope bench` reports.

use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::Serialize;

use crate::clip::LoadedClip;
use crate::error::Result;

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    pub batch: usize,
    pub images: usize,
    pub images_per_s: f64,
    pub text_batch: usize,
    pub texts: usize,
    pub prompts_per_s: f64,
}

/// Times the image tower on `images` random images in batches of `batch`, and the text tower on `texts`
/// prompts of the form `a photo of a <name>.` in batches of `text_batch`, after a warm-up round each
/// (GPU work is waited for at both ends of the timed region).
pub fn run(
    clip: &LoadedClip,
    batch: usize,
    images: usize,
    text_batch: usize,
    texts: usize,
) -> Result<BenchReport> {
    let s = clip.image_size();
    let batch = batch.max(1);
    let pixels = Tensor::randn(0f32, 1f32, (batch, 3, s, s), &clip.device)?.to_dtype(DType::F32)?;
    let rounds = images.div_ceil(batch).max(1);
    let images_per_s = batch as f64
        / time_per_call(&clip.device, rounds, || {
            clip.model()?
                .image_features(&pixels)
                .map(|_| ())
                .map_err(Into::into)
        })?;

    let text_batch = text_batch.max(1);
    let prompts: Vec<String> = (0..texts.max(1))
        .map(|i| format!("a photo of a {}.", WORDS[i % WORDS.len()]))
        .collect();
    let ids = clip.tokenizer()?.encode_batch(&prompts)?;
    let all_texts = || -> Result<()> {
        for chunk in ids.chunks(text_batch) {
            clip.model()?.text_features(chunk)?;
        }
        Ok(())
    };
    let prompts_per_s = ids.len() as f64 / time_per_call(&clip.device, 1, all_texts)?;
    Ok(BenchReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        threads: rayon::current_num_threads(),
        batch,
        images: rounds * batch,
        images_per_s,
        text_batch,
        texts: ids.len(),
        prompts_per_s,
    })
}

const WORDS: [&str; 8] = [
    "golden retriever",
    "tabby cat",
    "red fox",
    "sports car",
    "sunflower",
    "airliner",
    "espresso",
    "lighthouse",
];

#[derive(Debug, Clone, Serialize)]
pub struct CoopBenchReport {
    pub model: String,
    pub device: String,
    pub classes: usize,
    pub n_ctx: usize,
    pub batch: usize,
    pub csc: bool,
    /// CoCoOp's step (meta-net, per-image prompts) rather than CoOp's.
    pub cocoop: bool,
    pub steps: usize,
    /// Forward + backward + SGD update, mean over `steps` after one warm-up step.
    pub ms_per_step: f64,
    /// Longest end-of-text position + 1: the positions the text tower runs.
    pub text_positions: usize,
    pub peak_rss_mb: Option<f64>,
    /// FLOPs of the step's matrix products (the CPU kernels' count; 0 elsewhere), in GFLOP.
    pub gemm_gflop_per_step: f64,
    /// The CPU's ISA and GEMM peak (CPU runs only).
    pub machine: Option<MachineReport>,
    /// `gemm_gflop_per_step / ms_per_step` over the machine's sgemm peak: how near the step runs to
    /// the fp32 limit.
    pub fraction_of_sgemm_peak: Option<f64>,
    /// Where a timed step's wall time went (CPU kernels only).
    pub breakdown: Option<StepBreakdown>,
}

/// One step's wall time by kind of work, as the CPU kernels time themselves, and how busy the threads
/// were.
#[derive(Debug, Clone, Serialize)]
pub struct StepBreakdown {
    #[serde(flatten)]
    pub parts: crate::clip::kernels::cpu::Breakdown,
    /// The rest of the step: allocation, the loss, the optimizer, candle's ops around the towers.
    pub other_ms: f64,
    /// The process's CPU time over wall time × threads while the steps ran: what thread imbalance and
    /// waiting leave of the machine.
    pub cpu_utilisation: Option<f64>,
}

/// This process's user + system CPU time in seconds (Linux; `/proc/self/stat`, in clock ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after its closing parenthesis.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

impl CoopBenchReport {
    fn with_machine(mut self, flops: u64) -> Self {
        self.gemm_gflop_per_step = flops as f64 / (self.steps + 1) as f64 / 1e9;
        if self.device.starts_with("CPU") {
            let m = machine();
            self.fraction_of_sgemm_peak =
                Some(self.gemm_gflop_per_step / (self.ms_per_step / 1000.0) / m.sgemm_gflops);
            self.machine = Some(m);
        }
        self
    }
}

/// Peak resident memory of this process (Linux), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Times CoOp training steps: `classes` prompts through the text tower and back, on random cached
/// image features of a `batch`.
pub fn coop_step(
    clip: &LoadedClip,
    classes: usize,
    n_ctx: usize,
    batch: usize,
    csc: bool,
    steps: usize,
) -> Result<CoopBenchReport> {
    let mut stepper = CoopStepper::new(clip, classes, n_ctx, batch, csc)?;
    let shape = StepShape {
        classes,
        n_ctx,
        batch,
        text_positions: stepper.text_positions,
    };
    CoopBenchReport::time(clip, shape, (csc, false), steps, || stepper.step())
}

/// What a timed CoOp-family step ran over.
struct StepShape {
    classes: usize,
    n_ctx: usize,
    batch: usize,
    text_positions: usize,
}

impl CoopBenchReport {
    /// Times `steps` calls of `step` (after one untimed) and reports them with the matrix products they
    /// ran; `kind` is (CSC, CoCoOp).
    fn time(
        clip: &LoadedClip,
        shape: StepShape,
        (csc, cocoop): (bool, bool),
        steps: usize,
        step: impl FnMut() -> Result<()>,
    ) -> Result<Self> {
        use crate::clip::kernels::cpu::Breakdown;
        let steps = steps.max(1);
        let flops = crate::clip::kernels::cpu::gemm_flops();
        // Snapshots at the first timed call, after the warm-up.
        let (mut calls, mut before) = (0, None);
        let mut step = step;
        let secs = time_per_call(&clip.device, steps, || {
            calls += 1;
            if calls == 2 {
                before = Some((Breakdown::now(), cpu_seconds()));
            }
            step()
        })?;
        let flops = crate::clip::kernels::cpu::gemm_flops() - flops;
        let breakdown = before.map(|(parts, cpu)| {
            let parts = Breakdown::now().since(&parts, steps);
            let threads = rayon::current_num_threads() as f64;
            StepBreakdown {
                parts,
                other_ms: (secs * 1000.0 - parts.total_ms()).max(0.0),
                cpu_utilisation: cpu
                    .zip(cpu_seconds())
                    .map(|(a, b)| (b - a) / (secs * steps as f64 * threads)),
            }
        });
        Ok(CoopBenchReport {
            model: clip.id.clone(),
            device: crate::device::describe(&clip.device),
            classes: shape.classes,
            n_ctx: shape.n_ctx,
            batch: shape.batch,
            csc,
            cocoop,
            steps,
            ms_per_step: secs * 1000.0,
            text_positions: shape.text_positions,
            peak_rss_mb: peak_rss_mb(),
            gemm_gflop_per_step: 0.0,
            machine: None,
            fraction_of_sgemm_peak: None,
            breakdown: breakdown.filter(|b| b.parts.total_ms() > 0.0),
        }
        .with_machine(flops))
    }
}

/// Times CoCoOp training steps: the meta-net's shift for each of `batch` images, the `classes` prompts
/// of each image through the text tower and back, SGD on the context and the meta-net.
pub fn cocoop_step(
    clip: &LoadedClip,
    classes: usize,
    n_ctx: usize,
    batch: usize,
    steps: usize,
) -> Result<CoopBenchReport> {
    use crate::prompt::cocoop::MetaNet;
    use crate::prompt::coop::{CoopConfig, PromptLearner};
    use crate::train::coop::Trainer;
    let names = class_names(classes);
    let learner = PromptLearner::new(
        &clip.model()?.text,
        clip.tokenizer()?,
        &names,
        &CoopConfig {
            n_ctx,
            ..Default::default()
        },
    )?;
    let text_positions = learner.eot.iter().max().map_or(0, |m| m + 1);
    let meta = MetaNet::new(
        clip.projection_dim(),
        clip.model()?.config.text_config.hidden_size,
        0,
        &clip.device,
    )?;
    let (train, config) = step_set(clip, classes, batch)?;
    let mut trainer =
        Trainer::new(&clip.model()?.text, learner, config, clip.logit_scale()).with_meta_net(meta);
    let mut done = 0;
    let shape = StepShape {
        classes,
        n_ctx,
        batch,
        text_positions,
    };
    CoopBenchReport::time(clip, shape, (false, true), steps, || {
        done += 1;
        trainer.run_until(
            &train,
            None,
            done,
            None,
            &crate::progress::Silent,
            &mut |_| {},
        )
    })
}

/// What a timed training step runs on: `batch` random cached image features over `classes` labels, one
/// full batch per step, and enough epochs for any number of steps (the schedule does not change the
/// work of a step).
fn step_set(
    clip: &LoadedClip,
    classes: usize,
    batch: usize,
) -> Result<(
    crate::train::coop::Features,
    crate::train::coop::TrainConfig,
)> {
    use crate::train::optim::OptimConfig;
    let p = clip.projection_dim();
    let train = crate::train::coop::Features {
        feats: Tensor::randn(0f32, 1f32, (batch, p), &clip.device)?,
        labels: (0..batch).map(|i| i % classes).collect(),
        views_per_image: 1,
    };
    let optim = OptimConfig {
        epochs: usize::MAX / 2,
        warmup_epochs: 0,
        ..Default::default()
    };
    Ok((
        train,
        crate::train::coop::TrainConfig {
            optim,
            batch_size: None,
            seed: 0,
        },
    ))
}

/// A CoOp trainer on random cached image features, stepped one batch at a time (full batch: one step
/// is one epoch): what `bench --coop` and the criterion suite time.
pub struct CoopStepper<'a> {
    trainer: crate::train::coop::Trainer<'a>,
    train: crate::train::coop::Features,
    done: usize,
    /// Longest end-of-text position + 1: the positions the text tower runs.
    pub text_positions: usize,
}

impl<'a> CoopStepper<'a> {
    pub fn new(
        clip: &'a LoadedClip,
        classes: usize,
        n_ctx: usize,
        batch: usize,
        csc: bool,
    ) -> Result<Self> {
        use crate::prompt::coop::{CoopConfig, PromptLearner};
        use crate::train::coop::Trainer;
        let names = class_names(classes);
        let cfg = CoopConfig {
            n_ctx,
            csc,
            ..Default::default()
        };
        let learner = PromptLearner::new(&clip.model()?.text, clip.tokenizer()?, &names, &cfg)?;
        let text_positions = learner.eot.iter().max().map_or(0, |m| m + 1);
        let (train, config) = step_set(clip, classes, batch)?;
        let trainer = Trainer::new(&clip.model()?.text, learner, config, clip.logit_scale());
        Ok(Self {
            trainer,
            train,
            done: 0,
            text_positions,
        })
    }

    /// One forward + backward + SGD update over every class prompt.
    pub fn step(&mut self) -> Result<()> {
        self.done += 1;
        self.trainer.run_until(
            &self.train,
            None,
            self.done,
            None,
            &crate::progress::Silent,
            &mut |_| {},
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotBenchReport {
    pub model: String,
    pub device: String,
    pub classes: usize,
    pub templates: usize,
    /// Encoding classes × templates prompts and averaging them into normalised class weights.
    pub seconds: f64,
    pub prompts_per_s: f64,
    pub peak_rss_mb: Option<f64>,
}

/// Times CLIP's prompt ensemble: `classes` class names × the first `templates` of CLIP's 80 ImageNet
/// templates, encoded and averaged into class weights.
pub fn zero_shot_ensemble(
    clip: &LoadedClip,
    classes: usize,
    templates: usize,
) -> Result<ZeroShotBenchReport> {
    use crate::eval::templates::IMAGENET;
    let names = class_names(classes);
    let templates: Vec<String> = IMAGENET
        .iter()
        .cycle()
        .take(templates.max(1))
        .map(|s| s.to_string())
        .collect();
    let silent = crate::progress::Silent;
    crate::eval::zeroshot::class_weights(
        clip,
        &names[..names.len().min(8)],
        &templates[..1],
        &silent,
    )?;
    let t = Instant::now();
    crate::eval::zeroshot::class_weights(clip, &names, &templates, &silent)?;
    clip.device.synchronize()?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(ZeroShotBenchReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        classes,
        templates: templates.len(),
        seconds,
        prompts_per_s: (classes * templates.len()) as f64 / seconds,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// `classes` distinct names of one to four tokens ("golden retriever 3").
fn class_names(classes: usize) -> Vec<String> {
    (0..classes)
        .map(|i| format!("{} {}", WORDS[i % WORDS.len()], i / WORDS.len()))
        .collect()
}

/// Mean seconds per call of `f` over `repeats` calls, after one warm-up call.
fn time_per_call(
    device: &candle_core::Device,
    repeats: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let t = Instant::now();
    for _ in 0..repeats.max(1) {
        f()?;
    }
    device.synchronize()?;
    Ok(t.elapsed().as_secs_f64() / repeats.max(1) as f64)
}

/// FILIP's token-wise similarity of one image's patch tokens with `prompts` prompts' word tokens, and
/// their `s_I`/`s_T` scores (tokens computed beforehand, as the Align view and token-wise classification
/// reuse them): milliseconds per image.
pub fn filip_ms(clip: &LoadedClip, prompts: usize, repeats: usize) -> Result<f64> {
    use crate::align::classify::{tokenwise_scores, TokenScore};
    use crate::align::tokens::AlignMode;
    let s = clip.image_size();
    let pixels = Tensor::randn(0f32, 1f32, (1, 3, s, s), &clip.device)?;
    let pass = crate::align::pass::VisionPass::run(&clip.model()?.vision, &pixels)?;
    let image =
        crate::align::tokens::image_tokens(&clip.model()?.vision, &pass, AlignMode::Token, false)?;
    let texts: Vec<String> = class_names(prompts)
        .iter()
        .map(|n| format!("a photo of a {n}."))
        .collect();
    let words = crate::align::tokens::text_tokens(clip, &texts, false)?;
    let secs = time_per_call(&clip.device, repeats, || {
        tokenwise_scores(&image, &words, 0.25, TokenScore::Mean).map(|_| ())
    })?;
    Ok(secs * 1e3)
}

/// SsVP on `batch` images whose vision pass has run: the class token's attention read out, the top K
/// patches picked and the last block re-run on them. Images per second.
pub fn ssvp_images_per_s(clip: &LoadedClip, batch: usize, repeats: usize) -> Result<f64> {
    let s = clip.image_size();
    let pixels = Tensor::randn(0f32, 1f32, (batch.max(1), 3, s, s), &clip.device)?;
    let pass = crate::align::pass::VisionPass::run(&clip.model()?.vision, &pixels)?;
    let secs = time_per_call(&clip.device, repeats, || {
        crate::align::ssvp::ssvp_from_pass(&clip.model()?.vision, &pass, None).map(|_| ())
    })?;
    Ok(batch.max(1) as f64 / secs)
}

/// Decoding and preprocessing `files` (JPEG, PNG) into a pixel batch, in parallel: images per second.
pub fn loading_images_per_s(
    clip: &LoadedClip,
    files: &[std::path::PathBuf],
    repeats: usize,
) -> Result<f64> {
    let secs = time_per_call(&clip.device, repeats, || {
        crate::clip::encode::pixel_batch(clip, files).map(|_| ())
    })?;
    Ok(files.len() as f64 / secs)
}

/// `n` photo-sized JPEGs (500×375, quality 90, a smooth gradient with noise so they compress like
/// photos) in `dir`, for the loading benchmark; the same bytes on every machine.
pub fn write_photo_jpegs(dir: &std::path::Path, n: usize) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
    let mut rng = crate::rng::Rng::new(7);
    (0..n)
        .map(|i| {
            let path = dir.join(format!("photo_{i:03}.jpg"));
            if !path.exists() {
                let img = image::RgbImage::from_fn(500, 375, |x, y| {
                    let noise = (rng.next_u64() % 24) as u32;
                    image::Rgb([
                        ((x * 255 / 500 + noise) % 256) as u8,
                        ((y * 255 / 375 + noise + i as u32 * 9) % 256) as u8,
                        ((x + y + noise) % 256) as u8,
                    ])
                });
                let mut bytes = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
                    .encode_image(&img)
                    .map_err(|e| {
                        crate::error::Error::invalid(format!("encoding {}: {e}", path.display()))
                    })?;
                crate::error::write_atomic(&path, &bytes)?;
            }
            Ok(path)
        })
        .collect()
}

/// Every benchmark of the suite on one model, as `promptscope bench --suite` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub model: String,
    pub device: String,
    pub threads: usize,
    /// The CPU's ISA level and measured sgemm peak (every table says what it ran on).
    pub machine: MachineReport,
    /// Image tower images/s at batch 1, 16 and 64.
    pub image_per_s: Vec<(usize, f64)>,
    pub text_prompts_per_s: f64,
    /// CoOp step (forward + backward + update) in ms, per class count, M = 16, batch 32.
    pub coop_ms: Vec<(usize, f64)>,
    /// Each CoOp step's matrix-product rate over the sgemm peak, per class count.
    pub coop_fraction_of_sgemm_peak: Vec<(usize, f64)>,
    pub coop_peak_rss_mb: Option<f64>,
    /// Pretraining images/s on the `scenes` preset, batch 64: (loss, images/s).
    pub pretrain_images_per_s: Vec<(crate::train::pretrain::PretrainLoss, f64)>,
    pub filip_1x100_ms: f64,
    pub ssvp_images_per_s: f64,
    pub loading_images_per_s: f64,
}

/// Runs the whole suite; `coop_classes` are the class counts timed (100 and 1000 in the issue),
/// `photos` the folder the loading benchmark writes its JPEGs to.
pub fn suite(
    clip: &LoadedClip,
    coop_classes: &[usize],
    photos: &std::path::Path,
) -> Result<SuiteReport> {
    let mut image_per_s = Vec::new();
    for b in [1, 16, 64] {
        image_per_s.push((
            b,
            run(clip, b, if b < 16 { 16 } else { 2 * b }, 64, 64)?.images_per_s,
        ));
    }
    let text_prompts_per_s = run(clip, 1, 1, 64, 256)?.prompts_per_s;
    let mut coop_ms = Vec::new();
    let mut coop_fraction_of_sgemm_peak = Vec::new();
    for &c in coop_classes {
        let r = coop_step(clip, c, 16, 32, false, 3)?;
        coop_ms.push((c, r.ms_per_step));
        if let Some(f) = r.fraction_of_sgemm_peak {
            coop_fraction_of_sgemm_peak.push((c, f));
        }
    }
    let coop_peak_rss_mb = peak_rss_mb();
    let mut pretrain_images_per_s = Vec::new();
    if clip.device.is_cpu() {
        use crate::train::pretrain::PretrainLoss;
        let scenes = crate::clip::ClipConfig::scenes();
        for loss in [PretrainLoss::Filip, PretrainLoss::Clip] {
            let r = pretrain_step("scenes", &scenes, loss, 64, 3, 5, None)?;
            pretrain_images_per_s.push((r.loss, r.images_per_s));
        }
    }
    let files = write_photo_jpegs(photos, 64)?;
    Ok(SuiteReport {
        model: clip.id.clone(),
        device: crate::device::describe(&clip.device),
        threads: rayon::current_num_threads(),
        machine: machine(),
        image_per_s,
        text_prompts_per_s,
        coop_ms,
        coop_fraction_of_sgemm_peak,
        coop_peak_rss_mb,
        pretrain_images_per_s,
        filip_1x100_ms: filip_ms(clip, 100, 20)?,
        ssvp_images_per_s: ssvp_images_per_s(clip, 16, 5)?,
        loading_images_per_s: loading_images_per_s(clip, &files, 3)?,
    })
}

/// The CPU a benchmark ran on: the instruction set of the matrix kernels and the fp32 GEMM rate they
/// reach here, so every table says what it ran on and what the limit was.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    /// `AVX-512`, `AVX2+FMA`, `NEON` or `scalar` (what `gemm` dispatches to on this CPU and build).
    pub isa: String,
    pub threads: usize,
    /// Best of square fp32 GEMMs (1024, 1536, 2048) on every thread, through the `gemm` crate the
    /// kernels call: GFLOP/s.
    pub sgemm_gflops: f64,
}

/// Measures [`MachineReport`] once a process (about a second; every benchmark of a run divides by the
/// same peak).
pub fn machine() -> MachineReport {
    static MACHINE: std::sync::OnceLock<MachineReport> = std::sync::OnceLock::new();
    MACHINE
        .get_or_init(|| MachineReport {
            isa: crate::device::cpu_kernels().into(),
            threads: rayon::current_num_threads(),
            sgemm_gflops: sgemm_peak_gflops(),
        })
        .clone()
}

/// The machine's fp32 GEMM peak as the kernels see it: the best rate of square products large enough
/// to hide packing, on every rayon thread.
pub fn sgemm_peak_gflops() -> f64 {
    let mut best = 0f64;
    for n in [1024usize, 1536, 2048] {
        let a: Vec<f32> = (0..n * n).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..n * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0f32; n * n];
        let run = |c: &mut [f32]| {
            crate::clip::kernels::cpu::gemm_f32(c, n, &a, n, &b, false, n, n, n, false)
        };
        run(&mut c);
        let reps = if n > 1500 { 3 } else { 6 };
        let t = Instant::now();
        for _ in 0..reps {
            run(&mut c);
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        best = best.max(2.0 * (n as f64).powi(3) / s / 1e9);
    }
    best
}

#[derive(Debug, Clone, Serialize)]
pub struct PretrainBenchReport {
    pub preset: String,
    pub loss: crate::train::pretrain::PretrainLoss,
    pub batch: usize,
    /// Untimed steps first (at least 1).
    pub warmup: usize,
    pub steps: usize,
    pub ms_per_step: f64,
    pub images_per_s: f64,
    /// Longest caption of the batch in tokens (the text tower's positions).
    pub text_positions: usize,
    pub machine: MachineReport,
    pub peak_rss_mb: Option<f64>,
}

/// Times pretraining steps (forward, loss, backward, AdamW, clamp: what `pretrain` runs per batch) of a
/// random-weight `config` on one generated batch, after `warmup` untimed steps. With `save_batch`, writes the
/// batch (pixels, ids padded with 0, lengths) and the initial weights' folder beside it, so a PyTorch
/// script can time the same model on the same data (`scripts/bench_pretrain_torch.py`).
pub fn pretrain_step(
    preset: &str,
    config: &crate::clip::ClipConfig,
    loss: crate::train::pretrain::PretrainLoss,
    batch: usize,
    warmup: usize,
    steps: usize,
    save_batch: Option<&std::path::Path>,
) -> Result<PretrainBenchReport> {
    use crate::train::epoch_loop::TrainStep;
    use crate::train::pretrain::{PretrainConfig, Pretrainer, TrainableClip};
    let model = TrainableClip::init(config, 0, &candle_core::Device::Cpu)?;
    let data = crate::train::pretrain::PairTensors::scenes(config, batch, 7)?;
    if let Some(dir) = save_batch {
        model.save_folder(&dir.join("model"), crate::clip::synth::Storage::F32)?;
        let len = data.ids.iter().map(Vec::len).max().unwrap_or(0);
        // f32 holds these small integers exactly; the file format here is f32 only.
        let ids: Vec<f32> = data
            .ids
            .iter()
            .flat_map(|r| {
                r.iter()
                    .map(|&v| v as f32)
                    .chain(std::iter::repeat(0.0))
                    .take(len)
            })
            .collect();
        let lens: Vec<f32> = data.ids.iter().map(|r| r.len() as f32).collect();
        let dev = candle_core::Device::Cpu;
        let tensors = [
            ("pixels", data.pixels.clone()),
            ("ids", Tensor::from_vec(ids, (batch, len), &dev)?),
            ("lengths", Tensor::from_vec(lens, batch, &dev)?),
        ];
        let bytes = crate::tensor_file::safetensors_bytes(&tensors, Default::default())?;
        crate::error::write_atomic(&dir.join("batch.safetensors"), &bytes)?;
    }
    let cfg = PretrainConfig {
        loss,
        batch_size: batch,
        ..PretrainConfig::default()
    };
    let mut trainer = Pretrainer::new(&model, cfg, &data)?;
    let rows: Vec<usize> = (0..batch).collect();
    let steps = steps.max(1);
    // The first steps grow the process's memory to its working set (page faults): a run's later steps
    // do not pay that, so neither do the timed ones. PyTorch's script warms up alike.
    for _ in 1..warmup {
        trainer.step(&rows, 1e-4)?;
    }
    let secs = time_per_call(&candle_core::Device::Cpu, steps, || {
        trainer.step(&rows, 1e-4).map(|_| ())
    })?;
    Ok(PretrainBenchReport {
        preset: preset.into(),
        loss,
        batch,
        warmup: warmup.max(1),
        steps,
        ms_per_step: secs * 1000.0,
        images_per_s: batch as f64 / secs,
        text_positions: data.ids.iter().map(Vec::len).max().unwrap_or(0),
        machine: machine(),
        peak_rss_mb: peak_rss_mb(),
    })
}

/// One explanation map of `method` from pixels: the image's pass, the method's image side, the text's
/// feature and the method's text side (what a user running that method alone waits for), on a random
/// image at the model's size. Milliseconds per map.
pub fn map_ms(
    clip: &LoadedClip,
    method: crate::align::maps::MapMethod,
    repeats: usize,
) -> Result<f64> {
    let s = clip.image_size();
    let pixels = Tensor::randn(0f32, 1f32, (1, 3, s, s), &clip.device)?;
    let secs = time_per_call(&clip.device, repeats, || {
        crate::align::maps::ImageMaps::new(clip, &pixels, &[method])?
            .maps("a photo of a golden retriever.")
            .map(|_| ())
    })?;
    Ok(secs * 1e3)
}
