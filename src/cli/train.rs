//! `train`: CoOp (and KgCoOp, CoCoOp) few-shot, with its flags, the run they describe, and the progress
//! it prints.

use anyhow::Result;
use promptscope::prompt::coop::ClassPosition;
use promptscope::prompt::CoopVariant;
use promptscope::train::config::{Augment, CoopRun, RunConfig};
use promptscope::train::optim::{default_epochs, OptimConfig};

use super::args::{coop_defaults, BatchSize, FewShotInputs, Format, RunOutputArgs};
use promptscope::run::execute::Report;

use super::{execute, load_model, open_dataset, output, print_json};

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub input: FewShotInputs,
    /// Context length M (random N(0, 0.02²) initialisation).
    #[arg(long, default_value_t = coop_defaults().coop.n_ctx, conflicts_with = "ctx_init")]
    pub n_ctx: usize,
    /// Initialise the context from a phrase (M = its token count), e.g. "a photo of a".
    #[arg(long)]
    pub ctx_init: Option<String>,
    /// Class-specific contexts.
    #[arg(long)]
    pub csc: bool,
    #[arg(long, value_enum, default_value_t = coop_defaults().coop.class_position)]
    pub class_position: ClassPosition,
    /// Default: CoOp's 50/100/100/200/200 for 1/2/4/8/16 shots.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// A number, or `full` for one batch of the whole train set.
    #[arg(long, default_value_t = BatchSize(coop_defaults().train.batch_size))]
    pub batch_size: BatchSize,
    #[arg(long, default_value_t = coop_defaults().train.optim.lr)]
    pub lr: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.momentum)]
    pub momentum: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = coop_defaults().train.optim.warmup_epochs)]
    pub warmup_epochs: usize,
    #[arg(long, default_value_t = coop_defaults().train.optim.warmup_lr)]
    pub warmup_lr: f64,
    /// none, or crop-flip (CoOp's random resized crop + flip, as cached views).
    #[arg(long, value_enum, default_value_t = coop_defaults().augment)]
    pub augment: Augment,
    /// Cached augmented views per training image.
    #[arg(long, default_value_t = coop_defaults().views)]
    pub views: usize,
    /// The hand-crafted template reported beside the learned context (and KgCoOp's anchor).
    #[arg(long, default_value_t = coop_defaults().template)]
    pub template: String,
    /// KgCoOp: the weight λ of the pull of each learned class weight towards the template's (KgCoOp
    /// uses 8); 0 trains plain CoOp.
    #[arg(long, default_value_t = 0.0)]
    pub kg_lambda: f64,
    /// CoCoOp: a meta-net, trained with the context, adds π(x) to it for each image. Its recipe for
    /// what is not given: context "a photo of a", 10 epochs, batch 1. The export holds the meta-net.
    #[arg(long, conflicts_with_all = ["kg_lambda", "csc"])]
    pub cocoop: bool,
    #[command(flatten)]
    pub output: RunOutputArgs,
}

impl TrainArgs {
    /// The library's defaults with every flag applied, validated as the app validates its form.
    pub fn to_run(&self) -> Result<CoopRun> {
        let mut run = coop_defaults().with_seed(self.input.split.seed);
        run.shots = self.input.split.shots_or(run.shots);
        run.split_seed = self.input.split.split_seed;
        run.coop.n_ctx = self.n_ctx;
        run.coop.ctx_init = self.ctx_init.clone();
        run.coop.csc = self.csc;
        run.coop.class_position = self.class_position;
        run.train.optim = OptimConfig {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            warmup_lr: self.warmup_lr,
            epochs: self.epochs.unwrap_or_else(|| default_epochs(run.shots)),
        };
        run.train.batch_size = self.batch_size.0;
        run.augment = self.augment;
        run.views = self.views;
        run.template = self.template.clone();
        run.variant = CoopVariant::from_flags(self.cocoop, self.kg_lambda);
        if self.cocoop {
            let recipe = CoopRun::cocoop_recipe();
            if self.ctx_init.is_none() && self.n_ctx == coop_defaults().coop.n_ctx {
                (run.coop.ctx_init, run.coop.n_ctx) = (recipe.coop.ctx_init, recipe.coop.n_ctx);
            }
            if self.epochs.is_none() {
                run.train.optim.epochs = recipe.train.optim.epochs;
            }
            if self.batch_size == BatchSize(coop_defaults().train.batch_size) {
                run.train.batch_size = recipe.train.batch_size;
            }
        }
        run.validate()?;
        Ok(run)
    }
}

pub fn train(args: &TrainArgs) -> Result<()> {
    let run = RunConfig::Coop(args.to_run()?);
    if args.output.dry_run {
        outln!("{}", serde_json::to_string_pretty(&run)?);
        return Ok(());
    }
    let ds = open_dataset(&args.input.data)?;
    let clip = load_model(&args.input.model)?;
    let json = args.output.format == Format::Json;
    let lines = output::Lines::default();
    let summary = execute(
        &run,
        Some(&clip),
        Some(&ds),
        args.input.split.cache.dir().as_deref(),
        args.output.run_output(),
        &mut |bar, e| {
            let s = e.stats;
            if json {
                lines.line(serde_json::json!({"epoch": s.epoch, "loss": s.loss, "lr": s.lr, "train_acc": s.train_acc, "val_acc": s.val_acc}));
            } else {
                bar.0.suspend(|| {
                    eprintln!(
                        "epoch {:>4}/{}  loss {:.4}  lr {:.2e}  train acc {:5.1}%  val acc {}",
                        s.epoch + 1,
                        s.epochs,
                        s.loss,
                        s.lr,
                        100.0 * s.train_acc,
                        s.val_acc
                            .map_or("-".into(), |v| format!("{:5.1}%", 100.0 * v))
                    )
                });
            }
        },
    )?;
    lines.finish()?;
    let Report::Coop(m) = &summary.report else {
        unreachable!("a CoOp run reports CoOp's metrics")
    };
    if json {
        print_json(&serde_json::json!({"summary": m, "out": args.output.out}))
    } else {
        outln!(
            "learned context: val {:.2}%, test {:.2}%; hand-crafted {:?}: test {:.2}%  ({} epochs, {:.1} s{})",
            100.0 * m.val_acc,
            100.0 * m.test_acc,
            m.handcrafted_template,
            100.0 * m.handcrafted_test_acc,
            m.epochs_run,
            m.train_seconds,
            m.ms_per_step.map_or(String::new(), |ms| format!(", {ms:.2} ms/step"))
        );
        outln!("wrote {}", args.output.out.display());
        Ok(())
    }
}
