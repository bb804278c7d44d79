//! `sweep plan|run|collect|slurm|ray|k8s`: a base-to-novel table as a manifest of tasks that any engine
//! runs one process a task (`run::sweep`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use promptscope::progress::Progress;
use promptscope::run::base_to_novel::Halves;
use promptscope::run::sweep::{self, Collected, Outcome, Plan, Protocol, Resources, TaskResult};

use super::args::{CacheArgs, Format, ModelArgs, Shots};
use super::baselines::MethodFlags;
use super::{load_model, print_json, Bar};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum SweepVerb {
    /// Write a manifest (JSONL, one task a line) crossing models × datasets × shots × methods × seeds.
    Plan(PlanArgs),
    /// Run one task of a manifest (skipped when its result exists; resumed from its checkpoint).
    Run(RunArgs),
    /// Before the tasks: fill the shared feature cache for one slice of one of the manifest's folders
    /// (every folder and model of its tasks × --slices; the index as `run` takes it).
    Features(FeaturesArgs),
    /// Merge the results into base-to-novel's tables (mean ± std over seeds, H).
    Collect(CollectArgs),
    /// Write an sbatch script running the manifest as a Slurm array.
    Slurm(EngineArgs),
    /// Write a Ray driver running each task as a Ray task.
    Ray(EngineArgs),
    /// Write a Kubernetes Indexed Job running each task in a pod.
    K8s(K8sArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    #[command(subcommand)]
    pub verb: SweepVerb,
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// base-to-novel (CoCoOp's: learn on half the classes, score both halves) or few-shot (CoOp's: K
    /// shots of every class, test accuracy).
    #[arg(long, value_enum, default_value_t)]
    pub protocol: Protocol,
    /// Models (a comma list): folders, hub ids or demo names.
    #[arg(long, value_delimiter = ',', required = true)]
    pub model: Vec<String>,
    /// Dataset folders (a comma list).
    #[arg(long, value_delimiter = ',', required = true)]
    pub data: Vec<PathBuf>,
    /// CoOp's classnames.txt, for every dataset.
    #[arg(long)]
    pub classnames: Option<PathBuf>,
    /// Shots per base class (a comma list; default 16).
    #[arg(long, value_delimiter = ',')]
    pub shots: Vec<Shots>,
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub seeds: Vec<u64>,
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    #[command(flatten)]
    pub recipe: MethodFlags,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The manifest to write, e.g. sweep.jsonl (results go to sweep.results/ beside it).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    /// The task's line (from 0). Default: $SLURM_ARRAY_TASK_ID, else $JOB_COMPLETION_INDEX.
    #[arg(long)]
    pub index: Option<usize>,
    /// cpu, cuda or auto.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct FeaturesArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    /// Slices each folder is cut into.
    #[arg(long)]
    pub slices: usize,
    /// Which (folder, slice), from 0: folder index × slices + slice. Default: $SLURM_ARRAY_TASK_ID,
    /// else $JOB_COMPLETION_INDEX.
    #[arg(long)]
    pub index: Option<usize>,
    #[arg(long, default_value = "auto")]
    pub device: String,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CollectArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    #[arg(long)]
    pub manifest: PathBuf,
    /// CPUs per task.
    #[arg(long, default_value_t = 2)]
    pub cpus: usize,
    /// Memory per task.
    #[arg(long, default_value = "8G")]
    pub mem: String,
    /// GPUs per task.
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    /// Tasks running at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// The promptscope binary the tasks run (default: this one).
    #[arg(long)]
    pub bin: Option<String>,
    /// Where to write the script (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Slurm: write the feature-extraction array instead (every folder of the manifest cut into this
    /// many slices), to submit before the sweep's.
    #[arg(long)]
    pub features_slices: Option<usize>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct K8sArgs {
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The container image holding promptscope.
    #[arg(long)]
    pub image: String,
}

pub fn sweep(args: &SweepArgs) -> Result<()> {
    match &args.verb {
        SweepVerb::Plan(a) => plan(a),
        SweepVerb::Run(a) => run(a),
        SweepVerb::Collect(a) => collect(a),
        SweepVerb::Features(a) => features(a),
        SweepVerb::Slurm(a) => match a.features_slices {
            Some(slices) => features_script(a, slices),
            None => engine(a, sweep::slurm_script),
        },
        SweepVerb::Ray(a) => engine(a, sweep::ray_driver),
        SweepVerb::K8s(a) => engine(&a.engine, |bin, m, n, r| {
            sweep::k8s_job(bin, m, n, r, &a.image)
        }),
    }
}

/// An existing path made absolute, so tasks run from any folder find it; anything else (a hub id, a
/// demo name) as given.
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn plan(a: &PlanArgs) -> Result<()> {
    let shots: Vec<Option<usize>> = if a.shots.is_empty() {
        vec![Some(16)]
    } else {
        a.shots.iter().map(|s| s.0).collect()
    };
    let methods = shots
        .iter()
        .map(|&k| Ok((k, a.recipe.recipes(k, a.split_seed)?)))
        .collect::<Result<Vec<_>>>()?;
    let p = Plan {
        protocol: a.protocol,
        models: a
            .model
            .iter()
            .map(|m| absolute(Path::new(m)).display().to_string())
            .collect(),
        data: a.data.iter().map(|d| absolute(d)).collect(),
        classnames: a.classnames.as_deref().map(absolute),
        template: a.recipe.template.clone(),
        split_seed: a.split_seed,
        methods,
        seeds: a.seeds.clone(),
        cache: a.cache.dir().map(|d| {
            let _ = std::fs::create_dir_all(&d);
            absolute(&d)
        }),
    };
    let tasks = sweep::plan(&p)?;
    sweep::write_manifest(&a.out, &tasks)?;
    // Engines write their logs there before any task runs (Slurm does not create the folder).
    std::fs::create_dir_all(sweep::results_dir(&a.out))?;
    eprintln!(
        "wrote {} tasks to {}; run them with `promptscope sweep run --manifest {} --index I` (or `sweep slurm|ray|k8s`), then `sweep collect`",
        tasks.len(),
        a.out.display(),
        a.out.display()
    );
    Ok(())
}

fn run(a: &RunArgs) -> Result<()> {
    let tasks = sweep::read_manifest(&a.manifest)?;
    let index = sweep::task_index(a.index, tasks.len())?;
    let task = &tasks[index];
    let result_path = task.result_path(&a.manifest);
    if result_path.is_file() {
        eprintln!("task {index} ({}): done already", task.id);
        return Ok(());
    }
    std::fs::create_dir_all(sweep::results_dir(&a.manifest))?;
    let started = std::time::Instant::now();
    let clip = load_model(&ModelArgs {
        model: task.model.clone(),
        device: a.device.clone(),
    })?;
    let mut data = promptscope::data::DatasetFolder::open(&task.data)?;
    if let Some(file) = &task.classnames {
        data.apply_class_names(file)?;
    }
    let bar = Bar::new();
    let name = task.method.name();
    let prompts = task.prompts_path(&a.manifest);
    let outcome = match task.protocol {
        Protocol::BaseToNovel => {
            let halves = Halves::open(
                &clip,
                &data,
                &task.template,
                task.split_seed,
                task.cache.as_deref(),
                &bar,
            )?;
            let mut on_event = |ev: promptscope::train::coop::TrainEvent| {
                if let promptscope::train::coop::TrainEvent::Epoch(s) = ev {
                    bar.update(
                        &format!("{name} seed {}: epochs", task.seed),
                        s.epoch + 1,
                        s.epochs,
                    );
                }
            };
            let result =
                halves.score(&task.method, prompts.as_deref(), true, &bar, &mut on_event)?;
            Outcome::BaseToNovel {
                base_classes: halves.base_classes().to_vec(),
                novel_classes: halves.novel_classes().to_vec(),
                zero_shot: (halves.zero_shot_name(), halves.zero_shot()?),
                result,
            }
        }
        Protocol::FewShot => {
            use promptscope::run::base_to_novel::Method;
            use promptscope::run::execute::{execute, RunCtx, RunEvent, RunOutput};
            use promptscope::train::config::RunConfig;
            let run = match &task.method {
                Method::Prompts(r) => RunConfig::Coop(r.clone()),
                Method::Adapter(r) => RunConfig::Adapter(r.clone()),
            };
            let ctx = RunCtx {
                clip: Some(&clip),
                data: Some(&data),
                cache: task.cache.as_deref(),
                progress: &bar,
            };
            let out = RunOutput {
                path: prompts.clone(),
                resume: true,
            };
            let summary = execute(&run, &ctx, &out, &mut |ev| {
                if let RunEvent::Train {
                    event: promptscope::train::coop::TrainEvent::Epoch(s),
                    ..
                } = ev
                {
                    bar.update(
                        &format!("{name} seed {}: epochs", task.seed),
                        s.epoch + 1,
                        s.epochs,
                    );
                }
            })?;
            let metric = |k: &str| {
                summary
                    .metric(k)
                    .ok_or_else(|| anyhow::anyhow!("the run reported no {k}"))
            };
            let zero_shot =
                metric("handcrafted_test_acc").or_else(|_| metric("zero_shot_test_acc"))?;
            Outcome::FewShot {
                zero_shot: (task.template.clone(), zero_shot),
                test_acc: metric("test_acc")?,
            }
        }
    };
    drop(bar);
    let headline = match &outcome {
        Outcome::BaseToNovel { result, .. } => format!(
            "base {:.1}%, novel {:.1}%, H {:.1}%",
            100.0 * result.base,
            100.0 * result.novel,
            100.0 * result.harmonic
        ),
        Outcome::FewShot { test_acc, .. } => format!("test {:.1}%", 100.0 * test_acc),
    };
    TaskResult {
        id: task.id.clone(),
        method: name,
        seed: task.seed,
        shots: task.method.shots(),
        outcome,
        seconds: started.elapsed().as_secs_f64(),
    }
    .write(&result_path)?;
    eprintln!(
        "task {index} ({}): {headline} in {:.0} s",
        task.id,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn collect(a: &CollectArgs) -> Result<()> {
    match (sweep::collect(&a.manifest)?, a.format) {
        // One model and dataset: exactly what `base-to-novel --format json` prints.
        (Collected::BaseToNovel(t), Format::Json) if t.len() == 1 => print_json(&t[0].report),
        (c, Format::Json) => print_json(&c),
        (Collected::BaseToNovel(tables), Format::Text) => {
            for t in &tables {
                outln!("{} on {}", t.model, t.data.display());
                super::baselines::print_base_to_novel(&t.report)?;
            }
            Ok(())
        }
        (Collected::FewShot(tables), Format::Text) => {
            for t in &tables {
                outln!(
                    "{} on {}: test accuracy % (mean ± std over seeds)",
                    t.model,
                    t.data.display()
                );
                for r in &t.rows {
                    let shots = r.shots.map_or("all".to_string(), |k| k.to_string());
                    outln!(
                        "  {:24} {:>4} shots  {:5.1} ± {:4.1}  (seeds {:?})",
                        r.method,
                        shots,
                        100.0 * r.mean,
                        100.0 * r.std,
                        r.seeds
                    );
                }
                for (template, acc) in &t.zero_shot {
                    outln!("  zero-shot \"{template}\": {:.1}", 100.0 * acc);
                }
            }
            Ok(())
        }
    }
}

fn features(a: &FeaturesArgs) -> Result<()> {
    let tasks = sweep::read_manifest(&a.manifest)?;
    let targets = sweep::extraction_targets(&tasks);
    anyhow::ensure!(
        !targets.is_empty(),
        "{}: no task shares a feature cache (planned with --no-cache): there is nothing to extract",
        a.manifest.display()
    );
    anyhow::ensure!(a.slices > 0, "--slices must be at least 1");
    let index = sweep::task_index(a.index, targets.len() * a.slices)?;
    let target = &targets[index / a.slices];
    let slice = promptscope::train::features::Slice {
        index: index % a.slices,
        of: a.slices,
    };
    let clip = load_model(&ModelArgs {
        model: target.model.clone(),
        device: a.device.clone(),
    })?;
    let ds = promptscope::data::DatasetFolder::open(&target.data)?;
    let r = {
        let bar = Bar::new();
        promptscope::train::features::fill_slice(&clip, &ds, slice, &target.cache, &bar)?
    };
    super::eval::print_slice(&r, a.format)
}

fn features_script(a: &EngineArgs, slices: usize) -> Result<()> {
    anyhow::ensure!(slices > 0, "--features-slices must be at least 1");
    let tasks = sweep::read_manifest(&a.manifest)?;
    let jobs = sweep::extraction_targets(&tasks).len() * slices;
    anyhow::ensure!(
        jobs > 0,
        "{}: no task shares a feature cache (planned with --no-cache): there is nothing to extract",
        a.manifest.display()
    );
    engine(a, |bin, m, _, r| {
        sweep::slurm_features_script(bin, m, jobs, slices, r)
    })
}

fn engine(a: &EngineArgs, write: impl Fn(&str, &Path, usize, &Resources) -> String) -> Result<()> {
    let tasks = sweep::read_manifest(&a.manifest)?;
    let bin = match &a.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.display().to_string(),
    };
    let resources = Resources {
        cpus: a.cpus,
        memory: a.mem.clone(),
        gpus: a.gpus,
        parallel: a.parallel,
    };
    let text = write(&bin, &absolute(&a.manifest), tasks.len(), &resources);
    match &a.out {
        Some(out) => {
            promptscope::error::write_atomic(out, text.as_bytes())?;
            eprintln!("wrote {} ({} tasks)", out.display(), tasks.len());
        }
        None => outln!("{}", text.trim_end()),
    }
    Ok(())
}
