//! `promptscope mpfgvc train|eval`: MP-FGVC's two-stage training and evaluation, with the conventions of
//! `train`/`eval` (one JSON line per epoch with `--format json`, then a summary; progress on stderr).

use std::path::{Path, PathBuf};

use anyhow::Result;
use promptscope::prompt::datp::DatpConfig;
use promptscope::run::execute::Report;
use promptscope::run::mpfgvc::{self as pipeline, Accuracies};
use promptscope::train::config::{MpFgvcRun, RunConfig};
use promptscope::train::mpfgvc::{OptimizerKind, StageConfig};

use super::args::{BatchSize, CacheArgs, RunOutputArgs, Shots};
use super::{execute, output, Bar};
use super::{DataArgs, Format, ModelArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct MpfgvcArgs {
    #[command(subcommand)]
    pub cmd: MpfgvcCmd,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum MpfgvcCmd {
    /// Stage 1 (DaTP prompts + the last N vision blocks + a linear head, L_v + L_i2t), then stage 2
    /// (VLFM on cached embeddings); evaluate both on the test split; export the weights.
    Train(TrainArgs),
    /// Stage-1 and stage-2 accuracy of an exported weights file on the test split.
    Eval(EvalArgs),
}

/// The defaults every flag below shows: the library's, which the app's Train form starts from too.
fn defaults() -> MpFgvcRun {
    MpFgvcRun::default()
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// The super-category word every DaTP prompt ends with (bird, dog, food, ...).
    #[arg(long)]
    pub super_category: String,
    /// Training images per class: a number, or all.
    #[arg(long, default_value_t = Shots(defaults().shots))]
    pub shots: Shots,
    /// Seed of the shots, the initialisations and the batch order.
    #[arg(long, default_value_t = defaults().seed)]
    pub seed: u64,
    /// Seed of the train/val/test split derived for folders without split sub-folders.
    #[arg(long, default_value_t = defaults().split_seed)]
    pub split_seed: u64,
    /// J, the learned DaTP tokens per class.
    #[arg(long, default_value_t = defaults().datp.n_ctx)]
    pub n_ctx: usize,
    /// Vision blocks trained in stage 1, counted from the last: 0 keeps the tower frozen (its features
    /// are cached); the paper fine-tunes the whole tower.
    #[arg(long, default_value_t = defaults().train_blocks)]
    pub train_blocks: usize,
    #[arg(long, default_value_t = defaults().stage1.optim.epochs)]
    pub epochs1: usize,
    #[arg(long, default_value_t = defaults().stage2.optim.epochs)]
    pub epochs2: usize,
    /// Stage-1 learning rate (DaTP tokens, head and vision blocks alike).
    #[arg(long, default_value_t = defaults().stage1.optim.lr)]
    pub lr1: f64,
    /// Stage-2 (VLFM) learning rate.
    #[arg(long, default_value_t = defaults().stage2.optim.lr)]
    pub lr2: f64,
    /// adamw, or sgd (CoOp's SGD with momentum 0.9).
    #[arg(long, value_enum, default_value_t = defaults().stage1.optimizer)]
    pub optim1: OptimizerKind,
    #[arg(long, value_enum, default_value_t = defaults().stage2.optimizer)]
    pub optim2: OptimizerKind,
    #[arg(long, default_value_t = defaults().stage1.optim.weight_decay)]
    pub weight_decay: f64,
    /// A number, or `full` for one batch of the whole train set.
    #[arg(long, default_value_t = BatchSize(defaults().stage1.batch_size))]
    pub batch_size: BatchSize,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub output: RunOutputArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// A weights file written by `mpfgvc train --out`.
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

pub fn run(args: &MpfgvcArgs) -> Result<()> {
    match &args.cmd {
        MpfgvcCmd::Train(a) => train(a),
        MpfgvcCmd::Eval(a) => eval(a),
    }
}

impl TrainArgs {
    /// The library's defaults with every flag applied, validated as the app validates its form.
    pub fn to_run(&self) -> Result<MpFgvcRun> {
        let batch_size = self.batch_size.0;
        let stage = |lr: f64, epochs: usize, optimizer: OptimizerKind| -> Result<StageConfig> {
            let mut s = promptscope::train::config::stage(lr, epochs, optimizer, batch_size);
            s.optim.weight_decay = self.weight_decay;
            Ok(s)
        };
        let mut run = defaults();
        run.shots = self.shots.0;
        run.seed = self.seed;
        run.split_seed = self.split_seed;
        run.datp = DatpConfig {
            n_ctx: self.n_ctx,
            super_category: self.super_category.clone(),
            seed: self.seed,
        };
        run.train_blocks = self.train_blocks;
        run.stage1 = stage(self.lr1, self.epochs1, self.optim1)?;
        run.stage2 = stage(self.lr2, self.epochs2, self.optim2)?;
        run.validate()?;
        Ok(run)
    }
}

fn train(args: &TrainArgs) -> Result<()> {
    let run = RunConfig::MpFgvc(args.to_run()?);
    if args.output.dry_run {
        outln!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(());
    }
    let ds = crate::cli::open_dataset(&args.data)?;
    let clip = crate::cli::load_model(&args.model)?;
    let json = args.output.format == Format::Json;
    let lines = output::Lines::default();
    let summary = execute(
        &run,
        Some(&clip),
        Some(&ds),
        args.cache.dir().as_deref(),
        args.output.run_output(),
        &mut |bar, e| {
            let (s, i2t) = (e.stats, e.extra("val_acc_i2t"));
            if json {
                lines.line(
                    serde_json::json!({"stage": e.stage, "epoch": s.epoch, "loss": s.loss, "lr": s.lr, "train_acc": s.train_acc, "val_acc": s.val_acc, "val_acc_i2t": i2t})
                );
            } else {
                let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:5.1}%", 100.0 * v));
                bar.0.suspend(|| {
                    eprintln!(
                        "stage {} epoch {:>4}/{}  loss {:.4}  lr {:.2e}  train acc {:5.1}%  val acc {}{}",
                        e.stage,
                        s.epoch + 1,
                        s.epochs,
                        s.loss,
                        s.lr,
                        100.0 * s.train_acc,
                        pct(s.val_acc),
                        i2t.map_or(String::new(), |v| format!(" (image-to-text {:.1}%)", 100.0 * v))
                    )
                });
            }
        },
    )?;
    lines.finish()?;
    let Report::MpFgvc(m) = &summary.report else {
        unreachable!("an MP-FGVC run reports MP-FGVC's metrics")
    };
    if json {
        outln!(
            "{}",
            serde_json::json!({"summary": m, "out": args.output.out})
        );
    } else {
        print_accuracies("test", &m.test)?;
        outln!(
            "({} + {} epochs, {:.1} s + {:.1} s)",
            m.epochs1,
            m.epochs2,
            m.stage1_seconds,
            m.stage2_seconds
        );
        outln!("wrote {}", args.output.out.display());
    }
    Ok(())
}

fn print_accuracies(what: &str, a: &Accuracies) -> Result<()> {
    outln!(
        "{what} ({} images): stage 1 image-to-text {:.2}%, stage 1 linear head {:.2}%, stage 2 VLFM {}",
        a.images,
        100.0 * a.stage1_i2t,
        100.0 * a.stage1_head,
        a.stage2.map_or("- (not trained)".into(), |v| format!("{:.2}%", 100.0 * v))
    );
    Ok(())
}

fn eval(args: &EvalArgs) -> Result<()> {
    let ds = crate::cli::open_dataset(&args.data)?;
    let clip = crate::cli::load_model(&args.model)?;
    let acc = {
        let bar = Bar::new();
        pipeline::evaluate_file(
            &clip,
            &ds,
            Path::new(&args.weights),
            args.cache.dir().as_deref(),
            &bar,
        )?
    };
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::json!({"weights": args.weights, "eval": acc})
        ),
        Format::Text => print_accuracies(&args.weights.display().to_string(), &acc)?,
    }
    Ok(())
}
