//! CoOp's baselines and protocols beside it: `linear-probe`, `adapter` (Tip-Adapter, -F, CLIP-Adapter),
//! `base-to-novel`.

use anyhow::Result;
use promptscope::progress::Progress;
use promptscope::prompt::CoopVariant;

use promptscope::run::base_to_novel::MethodName;

use super::args::{coop_defaults, CacheArgs, DataArgs, FewShotInputs, Format, ModelArgs, Shots};
use super::{load_model, open_dataset, print_json, Bar};

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub input: FewShotInputs,
    #[arg(long, default_value_t = 300)]
    pub iters: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn linear_probe(args: &ProbeArgs) -> Result<()> {
    use promptscope::eval::linear_probe::LinearProbe;
    use promptscope::train::features::extract;
    let ds = open_dataset(&args.input.data)?;
    let clip = load_model(&args.input.model)?;
    let split = promptscope::data::fewshot::few_shot(
        &ds,
        args.input.split.shots_or(Some(16)),
        args.input.split.seed,
        args.input.split.split_seed,
    )?;
    let bar = Bar::new();
    let cache = args.input.split.cache.dir();
    let f = |s: &[promptscope::data::Sample]| extract(&clip, s, 0, 0, cache.as_deref(), &bar);
    let (train, val, test) = (f(&split.train)?, f(&split.val)?, f(&split.test)?);
    let (probe, search) = LinearProbe::search(
        (&train.feats, &train.labels),
        (&val.feats, &val.labels),
        ds.num_classes(),
        args.iters,
        &bar,
    )?;
    let test_acc = probe.accuracy(&test.feats, &test.labels)?;
    drop(bar);
    match args.format {
        Format::Json => print_json(
            &serde_json::json!({"lambda": probe.lambda, "search": search, "test_acc": test_acc}),
        ),
        Format::Text => {
            for s in &search {
                outln!("  lambda {:8.0e}: val {:6.2}%", s.lambda, 100.0 * s.val_acc);
            }
            outln!(
                "linear probe (lambda {:.0e}): test {:.2}%",
                probe.lambda,
                100.0 * test_acc
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct AdapterArgs {
    #[command(flatten)]
    pub input: FewShotInputs,
    /// tip-adapter (training-free), tip-adapter-f (its cache keys trained) or clip-adapter.
    #[arg(long, default_value = "tip-adapter", value_parser = adapter_names())]
    pub method: MethodName,
    /// Training epochs (default: Tip-Adapter-F's 20, CLIP-Adapter's 200).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Augmented views of each training image (Tip-Adapter's augment_epoch).
    #[arg(long, default_value_t = promptscope::run::tip::AdapterRun::default().views)]
    pub views: usize,
    /// The hand-crafted template of the zero-shot part.
    #[arg(long, default_value_t = promptscope::run::tip::AdapterRun::default().template)]
    pub template: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// The method names `adapter --method` takes: the feature adapters among [`MethodName`].
fn adapter_names() -> impl clap::builder::TypedValueParser<Value = MethodName> {
    use clap::builder::TypedValueParser as _;
    use clap::ValueEnum as _;
    let names = MethodName::ALL.into_iter().filter(|m| m.is_adapter());
    clap::builder::PossibleValuesParser::new(names.map(MethodName::as_str))
        .map(|s: String| MethodName::from_str(&s, false).expect("a listed name"))
}

pub fn adapter(args: &AdapterArgs) -> Result<()> {
    use promptscope::run::tip::AdapterRun;
    let method = args
        .method
        .adapter(args.epochs)
        .expect("--method takes adapters only");
    let tip = AdapterRun {
        shots: args.input.split.shots_or(Some(16)),
        seed: args.input.split.seed,
        split_seed: args.input.split.split_seed,
        views: args.views,
        template: args.template.clone(),
        method,
    };
    // The run's own checks, before the model loads.
    tip.validate()?;
    let ds = open_dataset(&args.input.data)?;
    let clip = load_model(&args.input.model)?;
    let summary = super::execute(
        &promptscope::train::config::RunConfig::Adapter(tip.clone()),
        Some(&clip),
        Some(&ds),
        args.input.split.cache.dir().as_deref(),
        promptscope::run::execute::RunOutput {
            path: None,
            resume: false,
        },
        &mut |bar, e| {
            bar.update(
                &format!("{} epochs", method.name()),
                e.stats.epoch + 1,
                e.stats.epochs,
            )
        },
    )?;
    let promptscope::run::execute::Report::Adapter(report) = summary.report else {
        unreachable!("an adapter run reports the adapter's")
    };
    match args.format {
        Format::Json => print_json(&report),
        Format::Text => {
            let searched = report.searched.map_or(String::new(), |s| {
                format!(": α {:.3}, β {:.3} searched on val", s.alpha, s.beta)
            });
            outln!(
                "{}, {} training images × {} views{searched} (val {:.2}%)",
                method.name(),
                report.cache_images,
                tip.views,
                100.0 * report.val_acc
            );
            outln!(
                "{}: test {:.2}% (zero-shot \"{}\" {:.2}%)",
                report.split,
                100.0 * report.test.accuracy,
                tip.template,
                100.0 * report.zero_shot_test_acc
            );
            Ok(())
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BaseToNovelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Shots per base class (default 16).
    #[arg(long)]
    pub shots: Option<Shots>,
    /// The seeds to average over, e.g. 1,2,3.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = coop_defaults().split_seed)]
    pub split_seed: u64,
    #[command(flatten)]
    pub recipe: MethodFlags,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn base_to_novel(args: &BaseToNovelArgs) -> Result<()> {
    use promptscope::run::base_to_novel::run;
    let shots = args.shots.map_or(Some(16), |s| s.0);
    let methods = args.recipe.recipes(shots, args.split_seed)?;
    let ds = open_dataset(&args.data)?;
    let clip = load_model(&args.model)?;
    let bar = Bar::new();
    let mut on_event = |method: &str, seed: u64, ev: promptscope::train::coop::TrainEvent| {
        if let promptscope::train::coop::TrainEvent::Epoch(s) = ev {
            bar.update(
                &format!("{method} seed {seed}: epochs"),
                s.epoch + 1,
                s.epochs,
            );
        }
    };
    let report = run(
        &clip,
        &ds,
        &args.recipe.template,
        args.split_seed,
        &methods,
        &args.seeds,
        args.cache.dir().as_deref(),
        &bar,
        &mut on_event,
    )?;
    drop(bar);
    match args.format {
        Format::Json => print_json(&report),
        Format::Text => print_base_to_novel(&report),
    }
}

/// The methods of a base-to-novel table and the flags that adjust their papers' recipes (shared by
/// `base-to-novel` and `sweep plan`).
#[derive(clap::Args, Debug, Clone)]
pub struct MethodFlags {
    /// Context length M (ignored with --ctx-init).
    #[arg(long, default_value_t = coop_defaults().coop.n_ctx, conflicts_with = "ctx_init")]
    pub n_ctx: usize,
    #[arg(long)]
    pub ctx_init: Option<String>,
    /// Default: CoOp's epochs for the shots.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// KgCoOp's λ (8 in its paper); 0 learns plain CoOp.
    #[arg(long, default_value_t = 0.0)]
    pub kg_lambda: f64,
    /// CoCoOp: a meta-net adds π(x) to the context per image. Its recipe unless given: context
    /// "a photo of a", 10 epochs, batch 1.
    #[arg(long, conflicts_with = "kg_lambda")]
    pub cocoop: bool,
    /// Images per step (default: CoOp's 32; CoCoOp's 1 with --cocoop).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// The methods, each with its paper's recipe, e.g. coop,kgcoop,cocoop,tip-adapter,tip-adapter-f,
    /// clip-adapter, or `all`. The context flags above (and --epochs, --batch-size, a non-zero
    /// --kg-lambda) then adjust every prompt method. Default: the one method the flags describe (CoOp,
    /// KgCoOp with --kg-lambda, CoCoOp with --cocoop).
    #[arg(long, value_delimiter = ',', conflicts_with = "cocoop")]
    pub methods: Vec<String>,
    /// Augmented views per image of the feature adapters (Tip-Adapter's 10).
    #[arg(long)]
    pub views: Option<usize>,
    /// The hand-crafted template: the zero-shot row, and KgCoOp's anchor.
    #[arg(long, default_value_t = coop_defaults().template)]
    pub template: String,
}

impl MethodFlags {
    /// The methods named (or the one the flags describe), each with its paper's recipe for `shots`,
    /// adjusted by the flags given.
    pub fn recipes(
        &self,
        shots: Option<usize>,
        split_seed: u64,
    ) -> Result<Vec<promptscope::run::base_to_novel::Method>> {
        use promptscope::run::base_to_novel::Method;
        let args = self;
        let names: Vec<MethodName> = match args.methods.as_slice() {
            [] if args.cocoop => vec![MethodName::Cocoop],
            [] if args.kg_lambda > 0.0 => vec![MethodName::Kgcoop],
            [] => vec![MethodName::Coop],
            given => MethodName::parse_list(given)?,
        };
        Ok(names
            .into_iter()
            .map(|name| {
                let mut m = Method::recipe(name, shots, &args.template, split_seed)?;
                match &mut m {
                    // The flags given adjust every prompt method's recipe.
                    Method::Prompts(r) => {
                        if args.ctx_init.is_some() || args.n_ctx != coop_defaults().coop.n_ctx {
                            r.coop.n_ctx = args.n_ctx;
                            r.coop.ctx_init = args.ctx_init.clone();
                        }
                        if let Some(e) = args.epochs {
                            r.train.optim.epochs = e;
                        }
                        if let Some(b) = args.batch_size {
                            r.train.batch_size = Some(b.max(1));
                        }
                        if let (CoopVariant::Kgcoop { lambda }, true) =
                            (&mut r.variant, args.kg_lambda > 0.0)
                        {
                            *lambda = args.kg_lambda;
                        }
                    }
                    Method::Adapter(r) => {
                        if let Some(v) = args.views {
                            r.views = v;
                        }
                    }
                }
                Ok(m)
            })
            .collect::<promptscope::Result<_>>()?)
    }
}

/// The table as `base-to-novel` prints it: the halves, then mean ± std over seeds per method.
pub fn print_base_to_novel(report: &promptscope::run::base_to_novel::Report) -> Result<()> {
    let seeds: Vec<u64> = report
        .rows
        .first()
        .map(|r| r.seeds.iter().map(|(s, _)| *s).collect())
        .unwrap_or_default();
    let shots = report.shots.map_or("all".to_string(), |k| k.to_string());
    outln!(
        "base ({}): {}",
        report.base_classes.len(),
        report.base_classes.join(", ")
    );
    outln!(
        "novel ({}): {}",
        report.novel_classes.len(),
        report.novel_classes.join(", ")
    );
    outln!(
        "{shots} shots per base class, seeds {:?}; accuracy % (mean ± std over seeds)",
        seeds
    );
    let width = report
        .rows
        .iter()
        .map(|r| r.method.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    outln!(
        "  {:width$}  {:>13}  {:>13}  {:>13}",
        "method",
        "base",
        "novel",
        "H"
    );
    for r in &report.rows {
        let cell = |m: f64, s: f64| format!("{:5.1} ± {:4.1}", 100.0 * m, 100.0 * s);
        outln!(
            "  {:width$}  {:>13}  {:>13}  {:>13}",
            r.method,
            cell(r.mean.base, r.std.base),
            cell(r.mean.novel, r.std.novel),
            cell(r.mean.harmonic, r.std.harmonic)
        );
    }
    Ok(())
}
