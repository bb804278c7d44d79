//! The command line: every verb and its arguments (clap derive). The verbs' code is in the sibling
//! modules; `super::run` maps one to the other.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use promptscope::data::classnames::Format as NamesFormat;
use promptscope::prompt::coop::ClassPosition;
use promptscope::train::pretrain::PretrainLoss;

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
    App {
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        data: Option<PathBuf>,
        /// The tab to open.
        #[arg(long, value_enum, default_value = "compare")]
        tab: TabArg,
        /// Once the model and dataset are loaded, run the tab's main job (zero-shot on Compare,
        /// training with the remembered settings on Train): for demos and screenshots.
        #[arg(long)]
        autorun: bool,
        /// Training epochs for --autorun on the Train tab (default: the remembered setting).
        #[arg(long)]
        epochs: Option<usize>,
        /// A prompts file to load once the model is loaded (it joins Compare, Align and Export); repeat
        /// for several.
        #[arg(long)]
        prompts: Vec<PathBuf>,
        /// Open the Align tab's side-by-side view (the class word's map under each prompt).
        #[arg(long)]
        side_by_side: bool,
        /// Open Compare in its base-to-novel mode (with --autorun: run it with the remembered methods).
        #[arg(long)]
        base_to_novel: bool,
        /// Open the Align tab comparing these map methods (a comma list or `all`, at most six).
        #[arg(long)]
        compare_methods: Option<String>,
        /// With --autorun on the Align tab: evaluate the maps (the pointing game) at start-up.
        #[arg(long)]
        evaluate_maps: bool,
        /// The Train tab's method (default: the remembered one); with mpfgvc, --super-category names
        /// the word its prompts end with.
        #[arg(long, value_enum)]
        method: Option<MethodArg>,
        #[arg(long)]
        super_category: Option<String>,
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
        #[command(flatten)]
        data: DataArgs,
        /// Seed of the 30 % test split set aside when the folder has no test/ (the split `train
        /// --split-seed` trains beside, so learned and hand-crafted prompts meet the same images).
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
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
        /// With --coop: time CoCoOp's steps (the meta-net's per-image prompts: the text tower runs once
        /// per image of the --batch) instead of CoOp's.
        #[arg(long, requires = "coop", conflicts_with = "csc")]
        cocoop: bool,
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
    /// Time pretraining steps (forward, loss, backward, AdamW) of a random-weight preset on one batch of
    /// generated scene pairs: images/s, as scripts/bench_pretrain_torch.py times PyTorch on the same.
    BenchPretrain {
        /// The architecture (scenes, tiny, vit-b-32, ...).
        #[arg(long, default_value = "scenes")]
        preset: String,
        /// Override the preset's input size (px), as `pretrain --image-size`.
        #[arg(long)]
        image_size: Option<usize>,
        /// Override the preset's patch size (px), as `pretrain --patch-size`.
        #[arg(long)]
        patch_size: Option<usize>,
        #[arg(long, value_enum, default_value_t = PretrainLoss::Filip)]
        loss: PretrainLoss,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Untimed steps first: the first steps grow the process's memory (page faults) as no later
        /// step of a run does.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Also write the initial model (DIR/model) and the batch (DIR/batch.safetensors) for PyTorch.
        #[arg(long)]
        save_batch: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Time one explanation map per method (image pass, method, text) on a random image: ms per map, as
    /// scripts/bench_maps_torch.py times the PyTorch ports on the same weights.
    BenchMaps {
        #[command(flatten)]
        model: ModelArgs,
        /// Methods (names, a comma list, or `all`).
        #[arg(long, default_value = "all")]
        methods: Vec<String>,
        #[arg(long, default_value_t = 5)]
        repeats: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Time listing a dataset folder and drawing its splits (no image is decoded): how long a large
    /// dataset takes to open.
    BenchDataset {
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 16)]
        shots: usize,
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
    Train(super::TrainArgs),
    /// Accuracy of hand-crafted templates or of exported prompts on the test split.
    Eval(super::EvalArgs),
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
    /// The top classes of single images, from a prompts file or hand-crafted templates.
    Classify(super::classify::ClassifyArgs),
    /// Convert CoOp's own checkpoint (prompt_learner/model.pth.tar-N) into a promptscope export.
    ImportCoop {
        checkpoint: PathBuf,
        #[command(flatten)]
        model: ModelArgs,
        /// The class names in CoOp's class order: one name a line, or CoOp's classnames.txt
        /// ('<folder name> <class name>' a line).
        #[arg(long)]
        classnames: PathBuf,
        /// How --classnames lists the classes: coop or plain (default: coop when every line starts with a
        /// folder name that has a digit, as WordNet ids do).
        #[arg(long, value_enum)]
        classnames_format: Option<NamesFormat>,
        #[arg(long, value_enum, default_value_t = ClassPosition::End)]
        class_position: ClassPosition,
        #[arg(long)]
        out: PathBuf,
    },
    /// CoOp's linear-probe baseline: logistic regression on the few-shot features, L2 chosen on val.
    LinearProbe(super::ProbeArgs),
    /// Feature-level baselines on K shots: Tip-Adapter (training-free cache; α and β searched on the
    /// validation split, where its published ImageNet script searches on test), Tip-Adapter-F, CLIP-Adapter.
    Adapter(super::AdapterArgs),
    /// CoCoOp's base-to-novel protocol: learn on the first half of the (sorted) classes, score base and
    /// novel classes and their harmonic mean, over seeds (mean ± std), beside zero-shot.
    BaseToNovel(super::BaseToNovelArgs),
    /// FILIP token-wise alignment of one image with one prompt: similarity matrix, s_I/s_T, word maps.
    Align(super::align::AlignArgs),
    /// SsVP: the patches the penultimate block's class token attends to most, and the image feature from them.
    Ssvp(super::align::SsvpArgs),
    /// Accuracy of token-wise scores and of SsVP beside the global feature, on a dataset's test split.
    AlignEval(super::align::AlignEvalArgs),
    /// MP-FGVC: DaTP prompts, two-stage training with VLFM (`mpfgvc train`), and evaluation (`mpfgvc eval`).
    Mpfgvc(super::fusion::MpfgvcArgs),
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
        /// fine-grained kinds are for `mpfgvc` and need --splits); objects: the scenes' 64 colour–shape
        /// pairs (held-out ones included); scene-shapes: the 8 scene shapes, filled; outlines: the same as
        /// outlines; warm-light: the 8 colours under a warm colour cast. The scene kinds have fixed classes
        /// and need --splits.
        #[arg(long, value_enum, default_value = "shapes")]
        kind: DatasetKind,
        /// Image side in px for the scene kinds (default: the demo models' input size).
        #[arg(long, default_value_t = promptscope::clip::ClipConfig::scenes().vision_config.image_size as u32)]
        size: u32,
    },
    /// Pretrain both towers of a CLIP on image–caption pairs with FILIP's or CLIP's loss.
    Pretrain(super::pretrain::PretrainArgs),
    /// FILIP's visual claim on captioned scenes: how often the shape word's map peaks on the object
    /// (the pointing game), and the map's mass inside it, in token and value mode.
    Pointing {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// The scenes' seed (pretraining used others: `synth-scenes --seed`).
        #[arg(long, default_value_t = 1000)]
        seed: u64,
        /// Scenes may contain the colour–shape pairs held out of pretraining.
        #[arg(long)]
        held_out: bool,
        /// Score these explanation-map methods instead (names, a comma list, or `all`): a table of
        /// method × hit rate (15 px rule and strict) × ms per map.
        #[arg(long)]
        methods: Vec<String>,
        /// With --methods: images with masks instead of generated scenes (ROOT/<class>/NAME.png beside
        /// NAME.mask.png; the prompt "a photo of a {class}.").
        #[arg(long, requires = "methods")]
        data: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Does the model see shape, or only colour? On scenes it never saw: a linear probe of the image
    /// token at each object's place (8 shapes), same-colour pointing (the shape word's map must single
    /// out the named one of several objects of one colour) and zero-shot over classes that differ only
    /// in shape (global and token-wise scores).
    ShapeCheck {
        #[command(flatten)]
        model: ModelArgs,
        /// Scenes for each measure (the probe trains on as many again).
        #[arg(long, default_value_t = 200)]
        count: usize,
        /// The scenes' seed (pretraining streams use others).
        #[arg(long, default_value_t = 2000)]
        seed: u64,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Write generated image–caption pairs (NNNNNN.png + .txt + .json with the objects, for masks): the
    /// captioned scenes FILIP/CLIP pretraining uses.
    SynthScenes {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Include the held-out colour–shape pairs (for evaluating composition; pretraining leaves them out).
        #[arg(long)]
        held_out: bool,
        /// Only scenes of two or three objects of one colour and distinct shapes (held-out pairs
        /// included), where a map must know shape to find the named object (`shape-check`'s scenes).
        #[arg(long)]
        same_colour: bool,
    },
    /// Write the sample dataset (scene objects under a warm colour cast, a class per colour) into a folder
    /// and run zero-shot on it with the shipped FILIP demo model.
    Sample {
        #[arg(long, default_value = "samples")]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum DatasetKind {
    Shapes,
    Crest,
    Dimorphic,
    Objects,
    SceneShapes,
    Outlines,
    WarmLight,
}

/// The Train tab's methods, as `app --method` takes them.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum MethodArg {
    Coop,
    Cocoop,
    Mpfgvc,
    /// Pretraining, from a folder of pairs.
    Pretrain,
    /// Pretraining on generated scenes streamed each epoch (the shape-aware recipe).
    PretrainScenes,
}

/// The app's tabs, as `--tab` takes them.
#[derive(Clone, Copy, Debug, Default, ValueEnum, PartialEq, Eq)]
pub enum TabArg {
    #[default]
    Compare,
    Train,
    Align,
    Export,
}
