//! The verbs that write generated things: `synth-model`, `synth-dataset`, `synth-scenes`, and `sample`
//! (which also runs zero-shot on what it wrote).

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context as _, Result};

use super::args::{DataArgs, Format, ModelArgs};
use super::preset;

#[derive(clap::Args, Debug, Clone)]
pub struct SynthModelArgs {
    #[arg(long)]
    pub out: PathBuf,
    /// tiny, tiny-gelu, vit-b-32, vit-b-16, vit-l-14 or vit-l-14-336.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
}

/// `--splits train,val,test`: images per class in each sub-folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Splits(pub usize, pub usize, pub usize);

impl FromStr for Splits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let v: Vec<usize> = s
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| "expected three counts: train,val,test (e.g. 16,4,8)".to_string())?;
        match v.as_slice() {
            [a, b, c] => Ok(Splits(*a, *b, *c)),
            _ => Err("expected three counts: train,val,test (e.g. 16,4,8)".into()),
        }
    }
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

#[derive(clap::Args, Debug, Clone)]
pub struct SynthDatasetArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 6)]
    pub classes: usize,
    #[arg(long, default_value_t = 8)]
    pub per_class: usize,
    /// Write train/val/test sub-folders with this many images per class each, e.g. 16,4,8.
    #[arg(long)]
    pub splits: Option<Splits>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// shapes: coloured shapes, one class a shape; crest: birds that differ only in a small crest's
    /// colour; dimorphic: birds whose species is a combination of plumage colour and sex (the two
    /// fine-grained kinds are for `mpfgvc` and need --splits); objects: the scenes' 64 colour–shape
    /// pairs (held-out ones included); scene-shapes: the 8 scene shapes, filled; outlines: the same as
    /// outlines; warm-light: the 8 colours under a warm colour cast. The scene kinds have fixed classes
    /// and need --splits.
    #[arg(long, value_enum, default_value = "shapes")]
    pub kind: DatasetKind,
    /// Image side in px for the scene kinds (default: the demo models' input size).
    #[arg(long, default_value_t = promptscope::clip::ClipConfig::scenes().vision_config.image_size as u32)]
    pub size: u32,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SynthScenesArgs {
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Include the held-out colour–shape pairs (for evaluating composition; pretraining leaves them out).
    #[arg(long)]
    pub held_out: bool,
    /// Only scenes of two or three objects of one colour and distinct shapes (held-out pairs
    /// included), where a map must know shape to find the named object (`shape-check`'s scenes).
    #[arg(long)]
    pub same_colour: bool,
    /// folder (NNNNNN.png + .txt + .json) or webdataset (tar shards of --shard-size pairs, with a
    /// sizes.json, as img2dataset writes them).
    #[arg(long, value_enum, default_value = "folder")]
    pub format: PairsFormat,
    #[arg(long, default_value_t = 1000)]
    pub shard_size: usize,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairsFormat {
    Folder,
    Webdataset,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SampleArgs {
    #[arg(long, default_value = "samples")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn synth_model(args: &SynthModelArgs) -> Result<()> {
    let cfg = preset(&args.preset)?;
    promptscope::clip::synth::write_model_folder(&cfg, &args.out)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote a random-weight '{}' CLIP to {}",
        args.preset,
        args.out.display()
    );
    Ok(())
}

pub fn synth_dataset(args: &SynthDatasetArgs) -> Result<()> {
    use promptscope::data::scene_sets::{self, SceneSet};
    use promptscope::data::{synth, synth_fine};
    let SynthDatasetArgs {
        out,
        classes,
        per_class,
        splits,
        seed,
        kind,
        size,
    } = args.clone();
    let split = splits.map(|Splits(a, b, c)| (a, b, c));
    let scenes = |set, split| scene_sets::write_scene_set(&out, set, split, size, seed);
    match (kind, split) {
        (DatasetKind::Shapes, split) => synth::write_dataset(&out, classes, per_class, split, seed)?,
        (DatasetKind::Crest, Some(split)) => synth_fine::write_dataset(&out, classes, split, 14, seed)?,
        (DatasetKind::Dimorphic, Some(split)) => synth_fine::write_dimorphic_dataset(&out, classes, split, seed)?,
        (DatasetKind::Objects, Some(split)) => scenes(SceneSet::Objects, split)?,
        (DatasetKind::WarmLight, Some(split)) => scenes(SceneSet::WarmLight, split)?,
        (DatasetKind::SceneShapes, Some(split)) => scenes(SceneSet::Shapes, split)?,
        (DatasetKind::Outlines, Some(split)) => scenes(SceneSet::Outlines, split)?,
        (_, None) => anyhow::bail!("--kind crest, dimorphic and the scene kinds write train/val/test folders: give --splits, e.g. 16,4,16"),
    }
    eprintln!("wrote a generated dataset to {}", out.display());
    Ok(())
}

pub fn synth_scenes(args: &SynthScenesArgs) -> Result<()> {
    use promptscope::data::scenes::{
        same_colour_scenes, write_pair_shards, write_pairs, write_scenes, SceneConfig,
    };
    let cfg = SceneConfig {
        size: args.size,
        allow_held_out: args.held_out,
        ..SceneConfig::default()
    };
    if args.format == PairsFormat::Webdataset {
        anyhow::ensure!(
            !args.same_colour,
            "--same-colour scenes are written as a folder: drop --format webdataset"
        );
        write_pair_shards(&args.out, args.count, args.seed, &cfg, args.shard_size)?;
    } else if args.same_colour {
        write_scenes(
            &args.out,
            same_colour_scenes(args.seed, args.count, args.size)?
                .into_iter()
                .map(Ok),
        )?;
    } else {
        write_pairs(&args.out, args.count, args.seed, &cfg)?;
    }
    eprintln!(
        "wrote {} captioned scenes to {}",
        args.count,
        args.out.display()
    );
    Ok(())
}

/// The bundled sample: a tiny random-weight CLIP and a generated dataset, then zero-shot on them.
pub fn sample(args: &SampleArgs) -> Result<()> {
    let (out, format) = (args.out.as_path(), args.format);
    use promptscope::data::scene_sets::{write_scene_set, SceneSet};
    let data = out.join("warm-light");
    if !data.is_dir() {
        let size = promptscope::clip::ClipConfig::scenes()
            .vision_config
            .image_size as u32;
        write_scene_set(&data, SceneSet::WarmLight, (16, 4, 25), size, 0)?;
    }
    // The shipped FILIP demo model; a random-weight one only where the checkout has no assets/models.
    let model = match promptscope::clip::demo::find("scenes-filip") {
        Some(_) => "scenes-filip".to_string(),
        None => {
            let dir = out.join("tiny-clip");
            if !dir.exists() {
                promptscope::clip::synth::write_model_folder(&preset("tiny")?, &dir)?;
            }
            eprintln!("warning: the demo models (assets/models) are missing; using a random-weight model, whose results mean nothing");
            dir.display().to_string()
        }
    };
    eprintln!("sample model: {model}\nsample dataset: {}", data.display());
    super::eval::zero_shot(&super::eval::ZeroShotArgs {
        model: ModelArgs {
            model,
            device: "auto".into(),
        },
        data: DataArgs {
            data,
            classnames: None,
        },
        split_seed: 0,
        templates: vec![],
        batch: 32,
        format,
    })
}
