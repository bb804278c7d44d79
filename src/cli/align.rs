//! The alignment verbs' bodies (`align`, `ssvp`, `align-eval`): call `promptscope::align`, draw PNGs with
//! `promptscope::render`, print text or JSON. Progress and notes go to stderr, results to stdout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use image::RgbImage;
use promptscope::align::classify::{compare_accuracy, ClassPrompts, CompareConfig, TokenScore};
use promptscope::align::filip::align_pass;
use promptscope::align::maps::{ImageMaps, MapMethod, MapOptions};
use promptscope::align::{align, ssvp, AlignConfig, AlignMode, TextSource};
use promptscope::clip::preprocess::{load_image, resize_and_crop, to_chw};
use promptscope::clip::LoadedClip;
use promptscope::export::prompt_file::PromptFile;
use promptscope::render::heatmap::{outline_patches, overlay, overlay_labels, save_png};
use promptscope::render::{Colormap, GridMap, HeatmapStyle};

use super::{DataArgs, Format, ModelArgs};
use crate::cli::{load_model, open_dataset, print_json, Bar};

/// Where and how to draw a map.
#[derive(clap::Args, Debug, Clone)]
pub struct PngArgs {
    /// Write the map over the model-input image (the resized, cropped picture the model saw) as PNG.
    #[arg(long)]
    pub png: Option<PathBuf>,
    /// viridis or jet.
    #[arg(long, default_value_t = HeatmapStyle::default().colormap)]
    pub colormap: Colormap,
    /// 0 shows only the image, 1 only the map.
    #[arg(long, default_value_t = HeatmapStyle::default().opacity)]
    pub opacity: f32,
    /// Draw the patch grid.
    #[arg(long)]
    pub grid_lines: bool,
}

impl PngArgs {
    fn style(&self) -> HeatmapStyle {
        HeatmapStyle {
            colormap: self.colormap,
            opacity: self.opacity,
            grid_lines: self.grid_lines,
            threshold: 0.0,
        }
    }

    /// Fails before any model work when the PNG could not be written anyway.
    fn check(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.opacity) {
            bail!("--opacity must be between 0 and 1, not {}", self.opacity);
        }
        if let Some(p) = &self.png {
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                bail!("{}: the folder for --png does not exist; create it first or choose another path", dir.display());
            }
        }
        Ok(())
    }
}

/// Which tokens are compared and how they are scored, shared by `align` and `align-eval`.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// token: the model's output tokens (FILIP); value: the last block's value path alone (MaskCLIP as
    /// ClearCLIP runs it, the map method maskclip-clearclip; see --method for every method).
    #[arg(long, default_value = "token")]
    pub mode: AlignMode,
    /// Count the class token among the image tokens.
    #[arg(long)]
    pub with_cls: bool,
    /// Count the start-of-text token among the text tokens.
    #[arg(long)]
    pub with_sos: bool,
    /// Fraction of tokens kept for s_I and s_T, ranked by their max similarity (FILIP used 0.25).
    #[arg(long, default_value_t = 1.0)]
    pub top_fraction: f64,
}

impl TokenArgs {
    fn config(&self) -> Result<AlignConfig> {
        promptscope::align::filip::check_fraction(self.top_fraction)?;
        Ok(AlignConfig {
            mode: self.mode,
            with_cls: self.with_cls,
            with_sos: self.with_sos,
            top_fraction: self.top_fraction,
        })
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct AlignArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub image: PathBuf,
    /// A hand-crafted prompt, e.g. "a photo of a dog.".
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    pub text: Option<String>,
    /// A prompts file exported by `train` (or `import-coop`); the prompt of --class is aligned.
    #[arg(long, requires = "class")]
    pub prompts: Option<PathBuf>,
    /// The class whose learned prompt (context + class name) is aligned.
    #[arg(long, requires = "prompts")]
    pub class: Option<String>,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// Draw this word's map (0-based index into the text tokens); without it, the PNG shows which word
    /// each patch aligns with best.
    #[arg(long)]
    pub word: Option<usize>,
    /// Explanation-map methods to run instead of the token-wise alignment alone (repeatable, a
    /// comma list, or `all`): token, maskclip, maskclip-clearclip, clearclip, sclip, naclip, gem,
    /// surgery, rollout, chefer, gradcam, legrad. The JSON is one object per method: method, grid,
    /// targets, maps (raw).
    #[arg(long = "method")]
    pub methods: Vec<String>,
    /// Chefer's relevance over this many of the last blocks (its notebook: 1).
    #[arg(long, default_value_t = MapOptions::default().chefer_blocks)]
    pub chefer_blocks: usize,
    /// LeGrad's K: the last blocks whose maps are summed (its default: 2).
    #[arg(long, default_value_t = MapOptions::default().legrad_blocks)]
    pub legrad_blocks: usize,
    #[command(flatten)]
    pub png: PngArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct SsvpArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long)]
    pub image: PathBuf,
    /// Patches kept (default: a quarter of them).
    #[arg(long)]
    pub k: Option<usize>,
    #[command(flatten)]
    pub png: PngArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AlignEvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Its test/ folder is classified, or the 30 % test split set aside by --split-seed.
    #[command(flatten)]
    pub data: DataArgs,
    /// Seed of the test split set aside when the folder has no test/ (as `train --split-seed`).
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Hand-crafted class prompts.
    #[arg(long, default_value = "a photo of a {}.", conflicts_with = "prompts")]
    pub template: String,
    /// Learned class prompts (a file exported by `train`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// The token-wise score that ranks classes: i (s_I), t (s_T) or mean.
    #[arg(long, default_value = "mean")]
    pub score: TokenScore,
    /// SsVP's K for the SsVP accuracy (default: a quarter of the patches).
    #[arg(long)]
    pub k: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The model-input picture (for drawing) and its pixel tensor `[1, 3, H, W]`, from one decode.
fn model_input(clip: &LoadedClip, path: &Path) -> Result<(RgbImage, Tensor)> {
    let img = load_image(path)?;
    let base = resize_and_crop(&img, &clip.preprocess);
    let (w, h) = (base.width() as usize, base.height() as usize);
    let pixels = Tensor::from_vec(to_chw(&base, &clip.preprocess), (1, 3, h, w), &clip.device)?;
    Ok((base, pixels))
}

pub fn align_verb(args: &AlignArgs) -> Result<()> {
    args.png.check()?;
    // Checked before the model loads, so a bad flag fails at once.
    let cfg = args.tokens.config()?;
    let methods = MapMethod::parse_list(&args.methods)?;
    if !methods.is_empty() {
        return methods_verb(args, &cfg, &methods);
    }
    let file = args
        .prompts
        .as_ref()
        .map(|p| PromptFile::load(p).map(|f| (p, f)))
        .transpose()?;
    let clip = load_model(&args.model)?;
    let learned = match &file {
        Some((path, f)) => {
            let name = args.class.as_deref().unwrap_or_default();
            let class = f
                .meta
                .class_names
                .iter()
                .position(|c| c == name)
                .with_context(|| {
                    format!(
                        "{}: has no class {name:?}; its classes are: {}",
                        path.display(),
                        f.meta.class_names.join(", ")
                    )
                })?;
            Some((f.learner(&clip, path)?, class))
        }
        None => None,
    };
    let source = match (&learned, &args.text) {
        (Some((learner, class)), _) => TextSource::Learned {
            learner,
            class: *class,
        },
        (None, Some(t)) => TextSource::Text(t),
        (None, None) => bail!("pass --text, or --prompts with --class"),
    };
    let (base, pixels) = model_input(&clip, &args.image)?;
    let a = align(&clip, &pixels, &source, &cfg)?;
    if let Some(path) = &args.png.png {
        let img = match args.word {
            Some(r) => overlay(
                &base,
                &GridMap::new(&a.word_map(r)?, a.grid)?,
                &args.png.style(),
            )?,
            None => overlay_labels(
                &base,
                &a.argmax_word_map(),
                a.grid,
                args.png.opacity,
                args.png.grid_lines,
            )?,
        };
        save_png(&img, path)?;
        eprintln!(
            "wrote {} ({} mode, {})",
            path.display(),
            a.mode,
            match args.word {
                Some(r) => format!("map of word {r} {:?}", a.text_tokens[r]),
                None => "best-aligned word per patch".into(),
            }
        );
    } else if let Some(r) = args.word {
        a.word_map(r)?;
    }
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&a)?;
            v["argmax_word"] = serde_json::to_value(a.argmax_word_map())?;
            print_json(&v)
        }
        Format::Text => {
            let what = args.text.as_ref().map_or_else(
                || {
                    format!(
                        "class {:?}'s learned prompt",
                        args.class.as_deref().unwrap_or_default()
                    )
                },
                |t| format!("{t:?}"),
            );
            outln!(
                "{} mode: {} against {what}; {}×{} patches, {} text tokens",
                a.mode,
                args.image.display(),
                a.grid[0],
                a.grid[1],
                a.text_tokens.len()
            );
            outln!(
                "s_I = {:.4}   s_T = {:.4}   (top fraction {})",
                a.s_i,
                a.s_t,
                a.top_fraction
            );
            let counts =
                a.argmax_word_map()
                    .iter()
                    .fold(vec![0usize; a.text_tokens.len()], |mut c, &w| {
                        c[w] += 1;
                        c
                    });
            let width = a
                .text_tokens
                .iter()
                .map(|t| t.chars().count())
                .max()
                .unwrap_or(4)
                .max(4);
            outln!(
                "  #  {:width$}  max sim  best patch (row, col)  patches won",
                "word"
            );
            for (r, label) in a.text_tokens.iter().enumerate() {
                let map = a.word_map(r)?;
                let (best, v) =
                    map.iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                        );
                let pos = format!("({}, {})", best / a.grid[1], best % a.grid[1]);
                outln!("{r:3}  {label:width$}  {v:+.4}  {pos:>21}  {}", counts[r]);
            }
            Ok(())
        }
    }
}

pub fn ssvp_verb(args: &SsvpArgs) -> Result<()> {
    args.png.check()?;
    let clip = load_model(&args.model)?;
    let (base, pixels) = model_input(&clip, &args.image)?;
    let sel = ssvp(&clip.model()?.vision, &pixels, args.k)?
        .into_iter()
        .next()
        .context("no SsVP result")?;
    if let Some(path) = &args.png.png {
        let mut img = overlay(
            &base,
            &GridMap::new(&sel.attention, sel.grid)?,
            &args.png.style(),
        )?;
        outline_patches(&mut img, sel.grid, &sel.indices, [255, 255, 255])?;
        save_png(&img, path)?;
        eprintln!("wrote {} (class-token attention of the penultimate block; the {} kept patches outlined)", path.display(), sel.k);
    }
    match args.format {
        Format::Json => print_json(&sel),
        Format::Text => {
            outln!(
                "SsVP on {}: kept {} of {} patches",
                args.image.display(),
                sel.k,
                sel.grid[0] * sel.grid[1]
            );
            for (&p, s) in sel.indices.iter().zip(&sel.scores) {
                outln!(
                    "  patch {p:4} (row {}, col {})  attention {s:.4}",
                    p / sel.grid[1],
                    p % sel.grid[1]
                );
            }
            let head: Vec<String> = sel
                .image_embeds
                .iter()
                .take(6)
                .map(|x| format!("{x:+.4}"))
                .collect();
            outln!(
                "image feature: [{}, …] (dim {})",
                head.join(", "),
                sel.image_embeds.len()
            );
            Ok(())
        }
    }
}

pub fn align_eval_verb(args: &AlignEvalArgs) -> Result<()> {
    let align = args.tokens.config()?;
    let ds = open_dataset(&args.data)?;
    let split = promptscope::data::fewshot::test_split(&ds, args.split_seed)?;
    let file = args
        .prompts
        .as_ref()
        .map(|p| PromptFile::load(p).map(|f| (p, f)))
        .transpose()?;
    if let Some((path, f)) = &file {
        if f.meta.class_names != ds.class_names {
            bail!(
                "{}: trained for classes {:?}, but {} has {:?}",
                path.display(),
                f.meta.class_names,
                args.data.data.display(),
                ds.class_names
            );
        }
    }
    let clip = load_model(&args.model)?;
    let learner = file
        .as_ref()
        .map(|(path, f)| f.learner(&clip, path))
        .transpose()?;
    let prompts = match &learner {
        Some(l) => ClassPrompts::Learned(l),
        None => ClassPrompts::Template {
            template: &args.template,
            class_names: &ds.class_names,
        },
    };
    let cmp = CompareConfig {
        align,
        score: args.score,
        ssvp_k: args.k,
        batch: args.batch,
    };
    let report = {
        let bar = Bar::new();
        compare_accuracy(&clip, &split.samples, &prompts, &cmp, &bar)?
    };
    match args.format {
        Format::Json => {
            let mut v = serde_json::to_value(&report)?;
            v["split"] = serde_json::Value::String(split.description.clone());
            print_json(&v)
        }
        Format::Text => {
            outln!(
                "{} images ({}), {} classes",
                report.images,
                split.description,
                report.classes.len()
            );
            outln!(
                "  global feature:          {:6.2}%",
                100.0 * report.global_accuracy
            );
            outln!(
                "  token-wise ({} mode, {:?} score, top fraction {}): {:6.2}%",
                report.config.mode,
                report.score,
                report.config.top_fraction,
                100.0 * report.tokenwise_accuracy
            );
            match report.ssvp_accuracy {
                Some(a) => outln!(
                    "  SsVP (K = {}):            {:6.2}%",
                    report.ssvp_k,
                    100.0 * a
                ),
                None => outln!("  SsVP: the vision tower has a single block"),
            }
            Ok(())
        }
    }
}

/// `align --method`: the same image and text under each method, one pass shared.
fn methods_verb(args: &AlignArgs, cfg: &AlignConfig, methods: &[MapMethod]) -> Result<()> {
    let Some(text) = &args.text else {
        bail!("--method maps a hand-crafted --text; a learned prompt (--prompts) is mapped by the token-wise alignment alone (drop --method)");
    };
    let clip = load_model(&args.model)?;
    let (base, pixels) = model_input(&clip, &args.image)?;
    let options = MapOptions {
        chefer_blocks: args.chefer_blocks,
        legrad_blocks: args.legrad_blocks,
    };
    let image = ImageMaps::with_options(&clip, &pixels, methods, options)?;
    let maps = image.maps(text)?;
    if let Some(path) = &args.png.png {
        for m in &maps {
            let target = if m.method.per_word() {
                let Some(r) = args.word else {
                    eprintln!("{}: no --word, so no PNG of its per-word maps", m.method);
                    continue;
                };
                r
            } else {
                0
            };
            let map = m.map_of(target).with_context(|| {
                format!("--word {target}: the text has {} tokens", m.targets.len())
            })?;
            let out = if maps.len() == 1 {
                path.clone()
            } else {
                let stem = path.file_stem().unwrap_or_default().to_string_lossy();
                path.with_file_name(format!("{stem}-{}.png", m.method))
            };
            save_png(
                &overlay(&base, &GridMap::new(map, m.grid)?, &args.png.style())?,
                &out,
            )?;
            eprintln!(
                "wrote {} ({}, {:?})",
                out.display(),
                m.method,
                m.targets[target]
            );
        }
    }
    match args.format {
        Format::Json => {
            for m in &maps {
                let mut v = serde_json::to_value(m)?;
                if m.method == MapMethod::Token {
                    // The token-wise alignment's own fields, as plain `align` prints them, from
                    // the maps' own vision pass.
                    let a = align_pass(&clip, &image.vision_pass(), &TextSource::Text(text), cfg)?;
                    v["sim"] = serde_json::to_value(&a.sim)?;
                    v["s_i"] = serde_json::to_value(a.s_i)?;
                    v["s_t"] = serde_json::to_value(a.s_t)?;
                }
                print_json(&v)?;
            }
            Ok(())
        }
        Format::Text => {
            outln!(
                "{} against {text:?}; {}×{} patches",
                args.image.display(),
                maps[0].grid[0],
                maps[0].grid[1]
            );
            for m in &maps {
                if let Some(words) = &m.word_relevance {
                    let line: Vec<String> =
                        words.iter().map(|(t, r)| format!("{t} {r:.3}")).collect();
                    outln!("{:18} word relevance: {}", m.method.name(), line.join(", "));
                }
                for (target, map) in m.targets.iter().zip(&m.maps) {
                    let (best, hi) =
                        map.iter()
                            .enumerate()
                            .fold(
                                (0, f32::NEG_INFINITY),
                                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                            );
                    let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
                    outln!(
                        "{:18} {target:16} peak ({}, {})  range {lo:+.4} .. {hi:+.4}",
                        m.method.name(),
                        best / m.grid[1],
                        best % m.grid[1]
                    );
                }
            }
            Ok(())
        }
    }
}
