//! `promptscope classify`: the top classes of single images, from a prompts file (its class weights,
//! checked against the model) or from hand-crafted templates over a list of class names.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use promptscope::eval::classify::{top_k, top_k_by};
use promptscope::eval::zeroshot;
use promptscope::export::prompt_file::PromptFile;

use super::{load_model, Bar, Format, ModelArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct ClassifyArgs {
    /// A CLIP model folder, hub id or demo model name (default with --prompts: the model the file was
    /// made with, when that still loads).
    #[arg(long)]
    pub model: Option<String>,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// An image to classify; repeat for several.
    #[arg(long = "image", required = true)]
    pub images: Vec<PathBuf>,
    /// A prompts file exported by `train` or `import-coop` (its classes and learned class weights).
    #[arg(long, conflicts_with_all = ["templates", "classes", "classnames"])]
    pub prompts: Option<PathBuf>,
    /// A hand-crafted template with {} for the class name (default "a photo of a {}."); repeat for an
    /// ensemble, `@imagenet` for CLIP's 80.
    #[arg(long = "template")]
    pub templates: Vec<String>,
    /// The classes for hand-crafted prompts, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "classnames")]
    pub classes: Vec<String>,
    /// The classes for hand-crafted prompts from a file: one name a line, or CoOp's classnames.txt.
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn classify(args: &ClassifyArgs) -> Result<()> {
    // Every input is checked before the model loads, so a bad flag fails at once.
    let file = args
        .prompts
        .as_ref()
        .map(|p| PromptFile::load(p).map(|f| (p, f)))
        .transpose()?;
    let names: Vec<String> = match (&file, &args.classnames) {
        (Some((_, f)), _) => f.meta.class_names.clone(),
        (None, Some(path)) => promptscope::data::classnames::read_names(path, None)?.0,
        (None, None) if !args.classes.is_empty() => args.classes.iter().map(|c| c.trim().to_string()).collect(),
        (None, None) => bail!("pass --prompts FILE, or the classes for hand-crafted prompts: --classes a,b,c or --classnames FILE"),
    };
    if names.iter().any(String::is_empty) {
        bail!(
            "--classes has an empty class name: {:?}",
            args.classes.join(",")
        );
    }
    let model = match (&args.model, &file) {
        (Some(m), _) => m.clone(),
        (None, Some((_, f))) => f.meta.model_id.clone(),
        (None, None) => bail!("pass --model (a CLIP folder, hub id or demo model name)"),
    };
    let clip = load_model(&ModelArgs { model: model.clone(), device: args.device.clone() }).with_context(|| match (&args.model, &file) {
        (None, Some((path, _))) => format!("{}: no --model given, and the model it was made with ('{model}') could not be loaded; pass --model", path.display()),
        _ => format!("loading model '{model}'"),
    })?;
    let bar = Bar::new();
    let predictions = match &file {
        Some((path, f)) => {
            let scorer = f.scorer(&clip, path)?;
            let source = serde_json::json!({"prompts": path});
            (
                top_k_by(
                    &clip,
                    &|feats| scorer.logits(&clip, feats),
                    &names,
                    &args.images,
                    args.top_k,
                    &bar,
                )?,
                source,
            )
        }
        None => {
            let templates = if args.templates.is_empty() {
                vec![zeroshot::DEFAULT_TEMPLATE.to_string()]
            } else {
                args.templates.clone()
            };
            let weights = zeroshot::class_weights(&clip, &names, &templates, &bar)?;
            (
                top_k(&clip, &weights, &names, &args.images, args.top_k, &bar)?,
                serde_json::json!({"templates": templates}),
            )
        }
    };
    let (predictions, source) = predictions;
    drop(bar);
    match args.format {
        Format::Json => {
            let images: Vec<serde_json::Value> = predictions
                .iter()
                .map(|p| {
                    let top: Vec<serde_json::Value> = p
                        .top
                        .iter()
                        .map(|(c, prob)| serde_json::json!({"class": c, "probability": prob}))
                        .collect();
                    serde_json::json!({"path": p.path, "top": top})
                })
                .collect();
            let mut v =
                serde_json::json!({"model": clip.id, "classes": names.len(), "images": images});
            v.as_object_mut()
                .expect("an object")
                .extend(source.as_object().cloned().unwrap_or_default());
            outln!("{v}");
        }
        Format::Text => {
            let width = names.iter().map(|n| n.chars().count()).max().unwrap_or(5);
            for p in &predictions {
                outln!("{}", p.path.display());
                for (rank, (class, prob)) in p.top.iter().enumerate() {
                    outln!("  {:>2}. {class:width$}  {:6.2}%", rank + 1, 100.0 * prob);
                }
            }
        }
    }
    Ok(())
}
