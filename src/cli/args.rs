//! The command line: every verb, and the flag groups several verbs share (clap derive). Each verb's own
//! flags (`XArgs`) live beside its code in the sibling module of its family; `super::run` maps one to
//! the other.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Parser, Subcommand, ValueEnum};
use promptscope::train::config::CoopRun;

use super::{align, baselines, bench, classify, eval, fusion, pretrain, synth, train};

#[derive(Parser)]
#[command(
    name = "promptscope",
    version,
    about = "Interactive prompt tuning for CLIP-style vision-language models"
)]
pub struct Cli {
    #[command(subcommand)]
    pub verb: Option<Verb>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// A CLIP model folder (config.json, model.safetensors, tokenizer.json), a hub id such as
    /// openai/clip-vit-base-patch32 (downloaded once into the Hugging Face cache), or the name of a
    /// shipped demo model: scenes-filip, scenes-clip.
    #[arg(long)]
    pub model: String,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// A dataset folder and, optionally, the names its classes go by in prompts.
#[derive(clap::Args, Clone, Debug)]
pub struct DataArgs {
    /// A dataset folder: ROOT/<class>/<images>, or ROOT/train|val|test/<class>/<images>.
    #[arg(long)]
    pub data: PathBuf,
    /// CoOp's classnames.txt: one class a line as '<folder name> <class name>' (e.g. 'n01440764 tench');
    /// prompts then use these names instead of the folder names.
    #[arg(long)]
    pub classnames: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum Verb {
    /// Open the desktop app (the default).
    App(promptscope::startup::Startup),
    /// Projected (not normalised) text and image features, as transformers' get_text_features /
    /// get_image_features.
    Embed(eval::EmbedArgs),
    /// Zero-shot classification of a dataset folder with hand-crafted prompts (several templates =
    /// CLIP's prompt ensemble).
    ZeroShot(eval::ZeroShotArgs),
    /// Time the towers (images/s, prompts/s), or, as a subcommand, CoOp's step, CLIP's prompt ensemble
    /// or the whole suite.
    Bench(bench::BenchArgs),
    /// Time pretraining steps (forward, loss, backward, AdamW) of a random-weight preset on one batch of
    /// generated scene pairs: images/s, as scripts/bench_pretrain_torch.py times PyTorch on the same.
    BenchPretrain(bench::BenchPretrainArgs),
    /// Time one explanation map per method (image pass, method, text) on a random image: ms per map, as
    /// scripts/bench_maps_torch.py times the PyTorch ports on the same weights.
    BenchMaps(bench::BenchMapsArgs),
    /// Time listing a dataset folder and drawing its splits (no image is decoded): how long a large
    /// dataset takes to open.
    BenchDataset(bench::BenchDatasetArgs),
    /// Time reading WebDataset shards as pretraining streams them (shuffle, decode, preprocess,
    /// tokenize; no model): images/s and peak memory, to set beside bench-pretrain's step images/s.
    BenchShards(bench::BenchShardsArgs),
    /// Fill the shared feature cache with the eval-view image features of one slice of a dataset
    /// folder (`--shard I/N`), so a sweep over a big folder splits extraction across cluster tasks;
    /// every later run on any subset of the folder reads them.
    Features(eval::FeaturesArgs),
    /// Time the GPU heatmap overlay (shaders/heatmap.wgsl) drawing a 7×7 map over an image into a
    /// size×size target, each draw submitted and waited for.
    BenchOverlay(bench::BenchOverlayArgs),
    /// Train a CoOp context few-shot, evaluate it against the hand-crafted baseline, export it.
    Train(train::TrainArgs),
    /// Accuracy of hand-crafted templates or of exported prompts on the test split.
    Eval(eval::EvalArgs),
    /// Nearest vocabulary tokens of each learned context vector.
    Interpret(eval::InterpretArgs),
    /// The top classes of single images, from a prompts file or hand-crafted templates.
    Classify(classify::ClassifyArgs),
    /// Convert CoOp's own checkpoint (prompt_learner/model.pth.tar-N) into a promptscope export.
    ImportCoop(eval::ImportCoopArgs),
    /// CoOp's linear-probe baseline: logistic regression on the few-shot features, L2 chosen on val.
    LinearProbe(baselines::ProbeArgs),
    /// Feature-level baselines on K shots: Tip-Adapter (training-free cache; α and β searched on the
    /// validation split, where its published ImageNet script searches on test), Tip-Adapter-F, CLIP-Adapter.
    Adapter(baselines::AdapterArgs),
    /// CoCoOp's base-to-novel protocol: learn on the first half of the (sorted) classes, score base and
    /// novel classes and their harmonic mean, over seeds (mean ± std), beside zero-shot.
    BaseToNovel(baselines::BaseToNovelArgs),
    /// A base-to-novel table as a manifest of tasks for a cluster: `sweep plan` writes it, `sweep run`
    /// runs one task (Slurm array, Ray, Kubernetes Indexed Job, or a loop), `sweep collect` merges.
    Sweep(super::sweep::SweepArgs),
    /// FILIP token-wise alignment of one image with one prompt: similarity matrix, s_I/s_T, word maps.
    Align(align::AlignArgs),
    /// SsVP: the patches the penultimate block's class token attends to most, and the image feature from them.
    Ssvp(align::SsvpArgs),
    /// Accuracy of token-wise scores and of SsVP beside the global feature, on a dataset's test split.
    AlignEval(align::AlignEvalArgs),
    /// MP-FGVC: DaTP prompts, two-stage training with VLFM (`mpfgvc train`), and evaluation (`mpfgvc eval`).
    Mpfgvc(fusion::MpfgvcArgs),
    /// Write a random-weight CLIP in the Hugging Face layout (for tests, benchmarks and the sample).
    SynthModel(synth::SynthModelArgs),
    /// Write a generated dataset of coloured shapes.
    SynthDataset(synth::SynthDatasetArgs),
    /// Pretrain both towers of a CLIP on image–caption pairs with FILIP's or CLIP's loss.
    Pretrain(pretrain::PretrainArgs),
    /// FILIP's visual claim on captioned scenes: how often the shape word's map peaks on the object
    /// (the pointing game), and the map's mass inside it, in token and value mode.
    Pointing(pretrain::PointingArgs),
    /// Does the model see shape, or only colour? On scenes it never saw: a linear probe of the image
    /// token at each object's place (8 shapes), same-colour pointing (the shape word's map must single
    /// out the named one of several objects of one colour) and zero-shot over classes that differ only
    /// in shape (global and token-wise scores).
    ShapeCheck(pretrain::ShapeCheckArgs),
    /// Write generated image–caption pairs (NNNNNN.png + .txt + .json with the objects, for masks): the
    /// captioned scenes FILIP/CLIP pretraining uses.
    SynthScenes(synth::SynthScenesArgs),
    /// Write the sample dataset (scene objects under a warm colour cast, a class per colour) into a folder
    /// and run zero-shot on it with the shipped FILIP demo model.
    Sample(synth::SampleArgs),
}

/// `--shots K|all`: images per class, or every one (None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shots(pub Option<usize>);

/// `--batch-size N|full`: images per step, or the whole train set in one batch (None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSize(pub Option<usize>);

/// A count whose `word` stands for None: the one parser and printer behind [`Shots`] and [`BatchSize`].
fn parse_count(s: &str, word: &str, what: &str) -> Result<Option<usize>, String> {
    if s == word {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("expected a number of {what} or '{word}'"))
}

fn show_count(f: &mut fmt::Formatter, v: Option<usize>, word: &str) -> fmt::Result {
    match v {
        Some(k) => write!(f, "{k}"),
        None => f.write_str(word),
    }
}

impl FromStr for Shots {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_count(s, "all", "images per class").map(Shots)
    }
}

impl fmt::Display for Shots {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        show_count(f, self.0, "all")
    }
}

impl FromStr for BatchSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_count(s, "full", "images per step").map(BatchSize)
    }
}

impl fmt::Display for BatchSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        show_count(f, self.0, "full")
    }
}

impl RunOutputArgs {
    /// Where the run seam writes, and whether it resumes.
    pub fn run_output(&self) -> promptscope::run::execute::RunOutput {
        promptscope::run::execute::RunOutput {
            path: Some(self.out.clone()),
            resume: self.resume,
        }
    }
}

/// The CoOp defaults every flag of `train` shows: the library's, which the app's Train form starts from too.
pub fn coop_defaults() -> CoopRun {
    CoopRun::default()
}

/// Where a training verb writes, and how it reports.
#[derive(clap::Args, Debug, Clone)]
pub struct RunOutputArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint a killed run left next to --out.
    #[arg(long)]
    pub resume: bool,
    /// Print the run's settings as JSON (what the app's Train form would start) and exit.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The model, the dataset and its few-shot split: what a verb that learns or scores on shots reads.
#[derive(clap::Args, Debug, Clone)]
pub struct FewShotInputs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub split: SplitArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SplitArgs {
    /// Images per class for training: 1, 2, 4, 8, 16, ... or all (default: 16 for train and
    /// linear-probe, all for eval).
    #[arg(long)]
    pub shots: Option<Shots>,
    /// Seed of the few-shot draw (CoOp reports the mean over seeds 1, 2, 3).
    #[arg(long, default_value_t = coop_defaults().seed)]
    pub seed: u64,
    /// Seed of the train/val/test split derived for folders without split sub-folders.
    #[arg(long, default_value_t = coop_defaults().split_seed)]
    pub split_seed: u64,
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl SplitArgs {
    /// `--shots`, or `default` (a verb's own) when it is not given.
    pub fn shots_or(&self, default: Option<usize>) -> Option<usize> {
        self.shots.map_or(default, |s| s.0)
    }
}

/// Where image features are cached.
#[derive(clap::Args, Debug, Clone)]
pub struct CacheArgs {
    /// Feature cache folder (default: $PROMPTSCOPE_CACHE or ~/.cache/promptscope/features).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Do not read or write the feature cache.
    #[arg(long)]
    pub no_cache: bool,
}

impl CacheArgs {
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            Some(
                self.cache
                    .clone()
                    .unwrap_or_else(promptscope::train::features::default_cache_dir),
            )
        }
    }
}
