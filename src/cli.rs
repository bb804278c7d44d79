//! The verbs' bodies: call the library, render text or JSON. Progress goes to stderr, results to stdout.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use promptscope::clip::encode::{image_features, text_features};
use promptscope::clip::{ClipConfig, HiddenAct, LoadedClip};
use promptscope::data::DatasetFolder;
use promptscope::eval::zeroshot;
use promptscope::progress::Progress;

use crate::{Format, ModelArgs};

/// An indicatif bar on stderr, hidden when stderr is not a terminal.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Self {
        let pb = ProgressBar::new(0);
        pb.set_style(ProgressStyle::with_template("{msg:>8} [{bar:30}] {pos}/{len} {per_sec} eta {eta}").expect("valid template"));
        Bar(pb)
    }
}

impl Progress for Bar {
    fn update(&self, stage: &str, done: usize, total: usize) {
        self.0.set_message(stage.to_string());
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

pub fn load_model(args: &ModelArgs) -> Result<LoadedClip> {
    let device = promptscope::device::select(&args.device)?;
    let clip = promptscope::clip::load(&args.model, &device)?;
    eprintln!("model: {}", clip.describe());
    eprintln!("device: {}", promptscope::device::describe(&device));
    Ok(clip)
}

pub fn preset(name: &str) -> Result<ClipConfig> {
    Ok(match name {
        "tiny" => ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5),
        "tiny-gelu" => ClipConfig::tiny(HiddenAct::Gelu, 1e-6),
        "vit-b-32" => ClipConfig::vit_b_32(),
        "vit-b-16" => ClipConfig::vit_b_16(),
        "vit-l-14" => ClipConfig::vit_l_14(224),
        "vit-l-14-336" => ClipConfig::vit_l_14(336),
        other => bail!("unknown preset '{other}': tiny, tiny-gelu, vit-b-32, vit-b-16, vit-l-14, vit-l-14-336"),
    })
}

pub fn parse_splits(s: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = s.split(',').map(|x| x.trim().parse()).collect::<std::result::Result<_, _>>()?;
    match v.as_slice() {
        [a, b, c] => Ok((*a, *b, *c)),
        _ => bail!("--splits takes three counts: train,val,test (e.g. 16,4,8)"),
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

pub fn embed(args: &ModelArgs, texts: &[String], images: &[PathBuf], format: Format) -> Result<()> {
    if texts.is_empty() && images.is_empty() {
        bail!("nothing to embed: pass --text and/or --image");
    }
    let clip = load_model(args)?;
    let bar = Bar::new();
    let text_embeds: Vec<Vec<f32>> =
        if texts.is_empty() { vec![] } else { text_features(&clip, texts, 64, &bar)?.to_vec2()? };
    let image_embeds: Vec<Vec<f32>> =
        if images.is_empty() { vec![] } else { image_features(&clip, images, 16, &bar)?.to_vec2()? };
    drop(bar);
    let logit_scale = clip.model.logit_scale();
    match format {
        Format::Json => print_json(&serde_json::json!({
            "text_embeds": text_embeds, "image_embeds": image_embeds, "logit_scale": logit_scale
        })),
        Format::Text => {
            let show = |v: &[f32]| {
                let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
                format!("[{}{}] (dim {})", head.join(", "), if v.len() > 6 { ", …" } else { "" }, v.len())
            };
            for (t, e) in texts.iter().zip(&text_embeds) {
                println!("text  {t:?}: {}", show(e));
            }
            for (p, e) in images.iter().zip(&image_embeds) {
                println!("image {}: {}", p.display(), show(e));
            }
            println!("logit_scale (exp): {logit_scale:.4}");
            Ok(())
        }
    }
}

pub fn zero_shot(args: &ModelArgs, data: &Path, mut templates: Vec<String>, batch: usize, format: Format) -> Result<()> {
    let ds = DatasetFolder::open(data)?;
    if ds.skipped_files > 0 {
        eprintln!("skipped {} files that are not images", ds.skipped_files);
    }
    let clip = load_model(args)?;
    if templates.is_empty() {
        templates.push(zeroshot::DEFAULT_TEMPLATE.to_string());
    }
    let report = {
        let bar = Bar::new();
        zeroshot::run(&clip, &ds, &templates, batch, &bar)?
    };
    match format {
        Format::Json => print_json(&report),
        Format::Text => {
            println!(
                "zero-shot on {} ({} split, {} images, {} classes), {} template(s)",
                data.display(),
                report.split,
                report.eval.total,
                report.classes.len(),
                templates.len()
            );
            let width = report.classes.iter().map(|c| c.len()).max().unwrap_or(5).max(5);
            for c in &report.eval.per_class {
                println!("  {:width$}  {:6.2}%  ({}/{})", c.name, 100.0 * c.accuracy, c.correct, c.total);
            }
            println!("  {:width$}  {:6.2}%  ({}/{})", "overall", 100.0 * report.eval.accuracy, report.eval.correct, report.eval.total);
            Ok(())
        }
    }
}

pub fn bench(args: &ModelArgs, batch: usize, images: usize, text_batch: usize, texts: usize, format: Format) -> Result<()> {
    let clip = load_model(args)?;
    let r = promptscope::bench::run(&clip, batch, images, text_batch, texts)?;
    match format {
        Format::Json => print_json(&r),
        Format::Text => {
            println!("device: {} ({} threads)", r.device, r.threads);
            println!("image tower: {:8.2} images/s  (batch {}, {} images)", r.images_per_s, r.batch, r.images);
            println!("text tower:  {:8.2} prompts/s (batch {}, {} prompts)", r.prompts_per_s, r.text_batch, r.texts);
            Ok(())
        }
    }
}

/// The bundled sample: a tiny random-weight CLIP and a generated dataset, then zero-shot on them.
pub fn sample(out: &Path, format: Format) -> Result<()> {
    let model = out.join("tiny-clip");
    let data = out.join("shapes");
    if !model.exists() {
        promptscope::clip::synth::write_model_folder(&preset("tiny")?, &model)?;
    }
    if !data.is_dir() {
        promptscope::data::synth::write_dataset(&data, 6, 0, Some((16, 4, 8)), 0)?;
    }
    eprintln!("sample model: {}\nsample dataset: {}", model.display(), data.display());
    let args = ModelArgs { model: model.display().to_string(), device: "auto".into() };
    zero_shot(&args, &data, vec![], 32, format)
}
