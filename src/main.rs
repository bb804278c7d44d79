//! The `promptscope` binary: no verb opens the desktop app; each verb runs headless and prints text, or
//! JSON with `--format json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

/// `println!` that turns a closed stdout (`promptscope ... | head`) into an error instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        anyhow::Context::context(writeln!(std::io::stdout().lock(), $($arg)*), "writing to stdout")?
    }};
}

mod cli;
mod cli_align;
mod cli_fusion;

#[derive(Parser)]
#[command(name = "promptscope", version, about = "Interactive prompt tuning for CLIP-style vision-language models")]
struct Cli {
    #[command(subcommand)]
    verb: Option<Verb>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A CLIP model folder (config.json, model.safetensors, tokenizer.json) or a hub id such as
    /// openai/clip-vit-base-patch32 (downloaded once into the Hugging Face cache).
    #[arg(long)]
    pub model: String,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(Subcommand)]
enum Verb {
    /// Open the desktop app (the default).
    App {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// The tab to open: compare, train, align or export.
        #[arg(long, default_value = "compare")]
        tab: String,
        /// Once the model and dataset are loaded, run the tab's main job (zero-shot on Compare,
        /// training with the remembered settings on Train): for demos and screenshots.
        #[arg(long)]
        autorun: bool,
        /// Training epochs for --autorun on the Train tab (default: the remembered setting).
        #[arg(long)]
        epochs: Option<usize>,
        /// A prompts file to load once the model is loaded (it joins Compare, Align and Export).
        #[arg(long)]
        prompts: Option<PathBuf>,
    },
    /// Projected (not normalised) text and image features, as transformers' get_text_features /
    /// get_image_features.
    Embed {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long = "text")]
        texts: Vec<String>,
        #[arg(long = "image")]
        images: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Zero-shot classification of a dataset folder with hand-crafted prompts (several templates =
    /// CLIP's prompt ensemble).
    ZeroShot {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        data: PathBuf,
        /// A prompt template with {} for the class name; repeat for an ensemble. `@imagenet` stands for
        /// CLIP's 80 ImageNet templates.
        #[arg(long = "template")]
        templates: Vec<String>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Image-tower images/s and text-tower prompts/s.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 64)]
        images: usize,
        #[arg(long, default_value_t = 64)]
        text_batch: usize,
        #[arg(long, default_value_t = 256)]
        texts: usize,
        /// Time CoOp training steps instead (forward + backward + update over --classes prompts).
        #[arg(long)]
        coop: bool,
        #[arg(long, default_value_t = 100)]
        classes: usize,
        #[arg(long, default_value_t = 16)]
        n_ctx: usize,
        #[arg(long)]
        csc: bool,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        /// Time CLIP's prompt ensemble instead: --classes names × this many of the 80 ImageNet templates.
        #[arg(long)]
        zero_shot_templates: Option<usize>,
        /// Run the whole suite instead: image tower at batch 1/16/64, text tower, CoOp steps for 100 and
        /// 1000 classes, FILIP 1 image × 100 prompts, SsVP, JPEG loading + preprocessing.
        #[arg(long)]
        suite: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Time the GPU heatmap overlay (shaders/heatmap.wgsl) drawing a 7×7 map over an image into a
    /// size×size target, each draw submitted and waited for.
    BenchOverlay {
        #[arg(long, default_value_t = 512)]
        size: u32,
        #[arg(long, default_value_t = 50)]
        repeats: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Train a CoOp context few-shot, evaluate it against the hand-crafted baseline, export it.
    Train(cli::TrainArgs),
    /// Accuracy of hand-crafted templates or of exported prompts on the test split.
    Eval(cli::EvalArgs),
    /// Nearest vocabulary tokens of each learned context vector.
    Interpret {
        file: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Convert CoOp's own checkpoint (prompt_learner/model.pth.tar-N) into a promptscope export.
    ImportCoop {
        checkpoint: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// A text file with one class name per line, in CoOp's class order.
        #[arg(long)]
        classnames: PathBuf,
        #[arg(long, default_value = "end")]
        class_position: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// CoOp's linear-probe baseline: logistic regression on the few-shot features, L2 chosen on val.
    LinearProbe(cli::ProbeArgs),
    /// FILIP token-wise alignment of one image with one prompt: similarity matrix, s_I/s_T, word maps.
    Align(cli_align::AlignArgs),
    /// SsVP: the patches the penultimate block's class token attends to most, and the image feature from them.
    Ssvp(cli_align::SsvpArgs),
    /// Accuracy of token-wise scores and of SsVP beside the global feature, on a dataset's test split.
    AlignEval(cli_align::AlignEvalArgs),
    /// MP-FGVC: DaTP prompts, two-stage training with VLFM (`mpfgvc train`), and evaluation (`mpfgvc eval`).
    Mpfgvc(cli_fusion::MpfgvcArgs),
    /// Write a random-weight CLIP in the Hugging Face layout (for tests, benchmarks and the sample).
    SynthModel {
        #[arg(long)]
        out: PathBuf,
        /// tiny, tiny-gelu, vit-b-32, vit-b-16, vit-l-14 or vit-l-14-336.
        #[arg(long, default_value = "tiny")]
        preset: String,
    },
    /// Write a generated dataset of coloured shapes.
    SynthDataset {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 6)]
        classes: usize,
        #[arg(long, default_value_t = 8)]
        per_class: usize,
        /// Write train/val/test sub-folders with this many images per class each, e.g. 16,4,8.
        #[arg(long)]
        splits: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// shapes: coloured shapes, one class a shape; crest: birds that differ only in a small crest's
        /// colour; dimorphic: birds whose species is a combination of plumage colour and sex (the two
        /// fine-grained kinds are for `mpfgvc` and need --splits).
        #[arg(long, value_enum, default_value = "shapes")]
        kind: DatasetKind,
    },
    /// Write the sample model and dataset into a folder and run zero-shot on them.
    Sample {
        #[arg(long, default_value = "samples")]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
enum DatasetKind {
    Shapes,
    Crest,
    Dimorphic,
}

fn main() -> ExitCode {
    promptscope::alloc::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.verb {
        None => open_app(None, None, Default::default()),
        Some(verb) => run(verb),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: tensor errors carry a backtrace after the message when RUST_BACKTRACE is set.
            let msg = format!("{e:#}");
            eprintln!("error: {}", msg.lines().next().unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

#[derive(Default)]
#[cfg_attr(not(feature = "gui"), allow(dead_code))]
struct AppStart {
    tab: String,
    autorun: bool,
    epochs: Option<usize>,
    prompts: Option<PathBuf>,
}

#[cfg(feature = "gui")]
fn open_app(model: Option<String>, data: Option<PathBuf>, start: AppStart) -> Result<()> {
    let tab = match start.tab.as_str() {
        "" | "compare" => promptscope::app::Tab::Compare,
        "train" => promptscope::app::Tab::Train,
        "align" => promptscope::app::Tab::Align,
        "export" => promptscope::app::Tab::Export,
        other => anyhow::bail!("--tab takes compare, train, align or export, not '{other}'"),
    };
    promptscope::app::run(model, data, promptscope::app::Startup { tab, autorun: start.autorun, epochs: start.epochs, prompts: start.prompts })
}

#[cfg(feature = "gui")]
fn bench_overlay(size: u32, repeats: usize, format: Format) -> Result<()> {
    use promptscope::app::overlay::{headless_device, render_offscreen, OverlayData, OverlayStyle};
    let (device, queue, adapter) = headless_device()?;
    let values: Vec<f32> = (0..49).map(|i| ((i * 37) % 49) as f32).collect();
    let map = promptscope::render::GridMap::new(&values, [7, 7])?;
    let image: Vec<u8> = (0..224 * 224).flat_map(|i| [(i % 224) as u8, (i / 224) as u8, 128, 255]).collect();
    let data = OverlayData { id: 1, image, size: [224, 224], map };
    let style = OverlayStyle { colormap: promptscope::render::Colormap::Viridis, opacity: 0.55, grid_lines: true };
    // The first draw compiles the pipeline's shaders: not counted.
    let (_, mut times) = render_offscreen(&device, &queue, &data, &style, [size, size], repeats.max(1) + 1)?;
    times.remove(0);
    let ms: Vec<f64> = times.iter().map(|t| t * 1e3).collect();
    let (n, median, p99) = promptscope::app::FrameTimes::stats(&ms).expect("at least one draw");
    match format {
        Format::Json => outln!("{}", serde_json::json!({"adapter": adapter, "size": size, "repeats": n, "median_ms": median, "p99_ms": p99})),
        Format::Text => outln!("overlay {size}×{size} on {adapter}: median {median:.3} ms, p99 {p99:.3} ms per draw ({n} draws, submit + wait)"),
    }
    Ok(())
}

#[cfg(not(feature = "gui"))]
fn bench_overlay(_: u32, _: usize, _: Format) -> Result<()> {
    anyhow::bail!("this promptscope was built without the GPU overlay (feature `gui`)")
}

#[cfg(not(feature = "gui"))]
fn open_app(_: Option<String>, _: Option<PathBuf>, _: AppStart) -> Result<()> {
    anyhow::bail!("this promptscope was built without the desktop app (feature `gui`); use a verb, see --help")
}

fn run(verb: Verb) -> Result<()> {
    match verb {
        Verb::App { model, data, tab, autorun, epochs, prompts } => open_app(model, data, AppStart { tab, autorun, epochs, prompts }),
        Verb::Embed { model, texts, images, format } => cli::embed(&model, &texts, &images, format),
        Verb::ZeroShot { model, data, templates, batch, format } => cli::zero_shot(&model, &data, templates, batch, format),
        Verb::Bench { model, batch, images, text_batch, texts, coop, classes, n_ctx, csc, steps, zero_shot_templates, suite, format } => {
            if suite {
                cli::bench_suite(&model, format)
            } else if let Some(templates) = zero_shot_templates {
                cli::bench_zero_shot(&model, classes, templates, format)
            } else if coop {
                cli::bench_coop(&model, classes, n_ctx, batch, csc, steps, format)
            } else {
                cli::bench(&model, batch, images, text_batch, texts, format)
            }
        }
        Verb::BenchOverlay { size, repeats, format } => bench_overlay(size, repeats, format),
        Verb::SynthModel { out, preset } => {
            let cfg = cli::preset(&preset)?;
            promptscope::clip::synth::write_model_folder(&cfg, &out).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("wrote a random-weight '{preset}' CLIP to {}", out.display());
            Ok(())
        }
        Verb::SynthDataset { out, classes, per_class, splits, seed, kind } => {
            let split = splits.map(|s| cli::parse_splits(&s)).transpose()?;
            use promptscope::data::{synth, synth_fine};
            match (kind, split) {
                (DatasetKind::Shapes, split) => synth::write_dataset(&out, classes, per_class, split, seed)?,
                (DatasetKind::Crest, Some(split)) => synth_fine::write_dataset(&out, classes, split, 14, seed)?,
                (DatasetKind::Dimorphic, Some(split)) => synth_fine::write_dimorphic_dataset(&out, classes, split, seed)?,
                (_, None) => anyhow::bail!("--kind crest and dimorphic write train/val/test folders: give --splits, e.g. 16,4,16"),
            }
            eprintln!("wrote a generated dataset of {classes} classes to {}", out.display());
            Ok(())
        }
        Verb::Sample { out, format } => cli::sample(&out, format),
        Verb::Train(args) => cli::train(&args),
        Verb::Eval(args) => cli::eval(&args),
        Verb::Interpret { file, model, top_k, format } => cli::interpret(&file, &model, top_k, format),
        Verb::ImportCoop { checkpoint, model, classnames, class_position, out } => {
            cli::import_coop(&checkpoint, &model, &classnames, &class_position, &out)
        }
        Verb::LinearProbe(args) => cli::linear_probe(&args),
        Verb::Align(args) => cli_align::align_verb(&args),
        Verb::Ssvp(args) => cli_align::ssvp_verb(&args),
        Verb::AlignEval(args) => cli_align::align_eval_verb(&args),
        Verb::Mpfgvc(args) => cli_fusion::run(&args),
    }
}
