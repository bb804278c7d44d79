//! Sweeps as manifests (METHODS §10): a table over models × datasets × methods × shots × seeds is one
//! JSONL file, one task a line, each with a content-hash id. Two protocols: CoCoOp's base-to-novel (a
//! method learns on the base half, scored on both halves) and CoOp's few-shot (K shots of every class,
//! scored on the test split). Any engine runs line `I` as its own
//! process (`promptscope sweep run --manifest M --index I`; Slurm's `SLURM_ARRAY_TASK_ID`, a Kubernetes
//! Indexed Job's `JOB_COMPLETION_INDEX`), writing one result file; `collect` merges them into the same
//! report `base-to-novel` prints. Tasks are idempotent: a finished task is skipped, and a killed one
//! resumes from the checkpoint beside its prompts. Nothing here runs a model: this module is the data
//! (tasks, results, the merge) and the engine adapters (`slurm_script`, `ray_driver`, `k8s_job`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::base_to_novel::{BaseNovel, Method, Report};
use crate::error::{write_atomic, Error, Result};

/// Which table a sweep fills.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// CoCoOp's: learn on the base half of the classes, score base, novel and H.
    #[default]
    BaseToNovel,
    /// CoOp's: K shots of every class, test accuracy (CoOp's Fig. 3 curves).
    FewShot,
}

/// One cell of the table: one method with one seed on one model and dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    /// The first 16 hex digits of the SHA-256 of the task's other fields (as JSON).
    pub id: String,
    #[serde(default)]
    pub protocol: Protocol,
    pub model: String,
    pub data: PathBuf,
    /// CoOp's classnames.txt for the dataset, if any.
    #[serde(default)]
    pub classnames: Option<PathBuf>,
    pub template: String,
    pub split_seed: u64,
    pub seed: u64,
    /// The method's recipe, its seed set.
    pub method: Method,
    /// The shared feature cache (None: none).
    #[serde(default)]
    pub cache: Option<PathBuf>,
}

/// What `plan` crosses: every model × dataset × shots × method × seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub protocol: Protocol,
    pub models: Vec<String>,
    pub data: Vec<PathBuf>,
    pub classnames: Option<PathBuf>,
    pub template: String,
    pub split_seed: u64,
    /// Per shots value, the methods' recipes for it.
    pub methods: Vec<(Option<usize>, Vec<Method>)>,
    pub seeds: Vec<u64>,
    pub cache: Option<PathBuf>,
}

impl Task {
    fn hashed(mut self) -> Self {
        self.id = String::new();
        let json = serde_json::to_string(&self).unwrap_or_default();
        let digest = Sha256::digest(json.as_bytes());
        self.id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self
    }

    /// Where the task's result lands, in the results folder beside `manifest`.
    pub fn result_path(&self, manifest: &Path) -> PathBuf {
        results_dir(manifest).join(format!("{}.json", self.id))
    }

    /// Where a prompt method's learned prompts (and, while it runs, its checkpoint) land.
    pub fn prompts_path(&self, manifest: &Path) -> Option<PathBuf> {
        matches!(self.method, Method::Prompts(_))
            .then(|| results_dir(manifest).join(format!("{}.prompts.safetensors", self.id)))
    }
}

/// `sweep.jsonl` → `sweep.results/`.
pub fn results_dir(manifest: &Path) -> PathBuf {
    manifest.with_extension("results")
}

/// Every task of `plan`, in table order (model, dataset, shots, method, seed).
pub fn plan(p: &Plan) -> Result<Vec<Task>> {
    if p.models.is_empty() || p.data.is_empty() || p.methods.is_empty() {
        return Err(Error::invalid(
            "a sweep needs at least one model, one dataset and one method",
        ));
    }
    for (_, methods) in &p.methods {
        match p.protocol {
            Protocol::BaseToNovel => super::base_to_novel::check_methods(methods, &p.seeds)?,
            Protocol::FewShot if p.seeds.is_empty() => {
                return Err(Error::invalid("give at least one seed (--seeds 1,2,3)"))
            }
            // A bad recipe is refused when planned, not in every task on the cluster.
            Protocol::FewShot => methods.iter().try_for_each(Method::validate)?,
        }
    }
    let mut tasks = Vec::new();
    for model in &p.models {
        for data in &p.data {
            for (_, methods) in &p.methods {
                for method in methods {
                    for &seed in &p.seeds {
                        tasks.push(
                            Task {
                                id: String::new(),
                                protocol: p.protocol,
                                model: model.clone(),
                                data: data.clone(),
                                classnames: p.classnames.clone(),
                                template: p.template.clone(),
                                split_seed: p.split_seed,
                                seed,
                                method: method.with_seed(seed),
                                cache: p.cache.clone(),
                            }
                            .hashed(),
                        );
                    }
                }
            }
        }
    }
    Ok(tasks)
}

/// Writes the manifest, one task a line, atomically.
pub fn write_manifest(path: &Path, tasks: &[Task]) -> Result<()> {
    let mut text = String::new();
    for t in tasks {
        text.push_str(&serde_json::to_string(t).map_err(|e| Error::invalid(e.to_string()))?);
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

pub fn read_manifest(path: &Path) -> Result<Vec<Task>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let tasks: Vec<Task> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::bad_file(
                    path,
                    format!("line {} is not a sweep task ({e})", i + 1),
                    "write the manifest again with `promptscope sweep plan`",
                )
            })
        })
        .collect::<Result<_>>()?;
    if tasks.is_empty() {
        return Err(Error::bad_file(
            path,
            "holds no tasks",
            "write it with `promptscope sweep plan`",
        ));
    }
    Ok(tasks)
}

/// Which line a process runs: `--index`, else Slurm's array index, else a Kubernetes Indexed Job's.
pub fn task_index(flag: Option<usize>, count: usize) -> Result<usize> {
    let from_env = || {
        ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"]
            .iter()
            .find_map(|k| std::env::var(k).ok().map(|v| (*k, v)))
    };
    let index = match (flag, from_env()) {
        (Some(i), _) => i,
        (None, Some((key, v))) => v.trim().parse().map_err(|_| {
            Error::invalid(format!("{key}={v} is not a task index"))
        })?,
        (None, None) => {
            return Err(Error::invalid(
                "which task? Give --index I, or run under a Slurm array (SLURM_ARRAY_TASK_ID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)",
            ))
        }
    };
    if index >= count {
        return Err(Error::invalid(format!(
            "task {index} of a manifest of {count} (0 to {})",
            count.saturating_sub(1)
        )));
    }
    Ok(index)
}

/// A finished task's result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub id: String,
    pub method: String,
    pub seed: u64,
    pub shots: Option<usize>,
    pub outcome: Outcome,
    pub seconds: f64,
}

/// What a task measured, by protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    BaseToNovel {
        base_classes: Vec<String>,
        novel_classes: Vec<String>,
        /// The zero-shot row's name and result (the same for every task on the model and dataset).
        zero_shot: (String, BaseNovel),
        result: BaseNovel,
    },
    FewShot {
        /// The hand-crafted template and its zero-shot test accuracy on the same split.
        zero_shot: (String, f64),
        test_acc: f64,
    },
}

impl TaskResult {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::invalid(e.to_string()))?;
        write_atomic(path, json.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::bad_file(
                path,
                format!("is not a task result ({e})"),
                "delete it and run its task again",
            )
        })
    }
}

/// One model and dataset's base-to-novel table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub model: String,
    pub data: PathBuf,
    pub report: Report,
}

/// One model and dataset's few-shot table: every run (as `scripts/shots_curve.py` records them) and
/// per method and shots the mean ± std over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct ShotsTable {
    pub model: String,
    pub data: PathBuf,
    /// The template's zero-shot test accuracy.
    pub zero_shot: HashMap<String, f64>,
    pub runs: Vec<ShotsRun>,
    pub rows: Vec<ShotsRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShotsRun {
    pub method: String,
    pub shots: Option<usize>,
    pub seed: u64,
    pub test_acc: f64,
    pub seconds: f64,
}

/// A method at one shots value over the seeds (sample standard deviation; 0 for one seed).
#[derive(Debug, Clone, Serialize)]
pub struct ShotsRow {
    pub method: String,
    pub shots: Option<usize>,
    pub seeds: Vec<u64>,
    pub mean: f64,
    pub std: f64,
}

/// What `collect` merges a manifest into.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Collected {
    BaseToNovel(Vec<Table>),
    FewShot(Vec<ShotsTable>),
}

/// Every task's result, in manifest order; an error naming the tasks that have none yet.
fn results(manifest: &Path) -> Result<Vec<(Task, TaskResult)>> {
    let tasks = read_manifest(manifest)?;
    let missing: Vec<usize> = tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.result_path(manifest).is_file())
        .map(|(i, _)| i)
        .collect();
    if !missing.is_empty() {
        return Err(Error::invalid(format!(
            "{} of {} tasks have no result yet (indices {}): run them with `promptscope sweep run --manifest {} --index I`",
            missing.len(),
            tasks.len(),
            compact_ranges(&missing),
            manifest.display()
        )));
    }
    tasks
        .into_iter()
        .map(|t| {
            let r = TaskResult::read(&t.result_path(manifest))?;
            Ok((t, r))
        })
        .collect()
}

/// `items` grouped by `key`, groups and members in their first order.
fn grouped<T, K: PartialEq>(items: Vec<T>, key: impl Fn(&T) -> K) -> Vec<(K, Vec<T>)> {
    let mut groups: Vec<(K, Vec<T>)> = Vec::new();
    for item in items {
        let k = key(&item);
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, members)) => members.push(item),
            None => groups.push((k, vec![item])),
        }
    }
    groups
}

/// The tables of a manifest whose tasks have all finished: base-to-novel's, one per model, dataset and
/// shots (rows: the methods in planned order, their seeds in planned order), or few-shot's, one per
/// model and dataset.
pub fn collect(manifest: &Path) -> Result<Collected> {
    let all = results(manifest)?;
    if all.iter().any(|(t, _)| t.protocol == Protocol::FewShot) {
        return Ok(Collected::FewShot(collect_shots(all)?));
    }
    grouped(all, |(t, r)| (t.model.clone(), t.data.clone(), r.shots))
        .into_iter()
        .map(|((model, data, shots), results)| {
            let results: Vec<TaskResult> = results.into_iter().map(|(_, r)| r).collect();
            let mut seeds: Vec<u64> = Vec::new();
            let mut rows: Vec<(String, Vec<(u64, BaseNovel)>)> = Vec::new();
            let mut halves = None;
            for r in &results {
                let Outcome::BaseToNovel {
                    base_classes,
                    novel_classes,
                    zero_shot,
                    result,
                } = &r.outcome
                else {
                    return Err(Error::invalid("a manifest mixes protocols"));
                };
                halves.get_or_insert((
                    base_classes.clone(),
                    novel_classes.clone(),
                    zero_shot.clone(),
                ));
                if !seeds.contains(&r.seed) {
                    seeds.push(r.seed);
                }
                match rows.iter_mut().find(|(m, _)| *m == r.method) {
                    Some((_, per_seed)) => per_seed.push((r.seed, *result)),
                    None => rows.push((r.method.clone(), vec![(r.seed, *result)])),
                }
            }
            let (base, novel, zero_shot) = halves.expect("every group has a result");
            Ok(Table {
                model,
                data,
                report: Report::assemble((base, novel), shots, zero_shot, &seeds, rows),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Collected::BaseToNovel)
}

fn collect_shots(all: Vec<(Task, TaskResult)>) -> Result<Vec<ShotsTable>> {
    grouped(all, |(t, _)| (t.model.clone(), t.data.clone()))
        .into_iter()
        .map(|((model, data), results)| {
            let results: Vec<TaskResult> = results.into_iter().map(|(_, r)| r).collect();
            let mut zero_shot = HashMap::new();
            let mut runs = Vec::new();
            for r in &results {
                let Outcome::FewShot {
                    zero_shot: (template, acc),
                    test_acc,
                } = &r.outcome
                else {
                    return Err(Error::invalid("a manifest mixes protocols"));
                };
                zero_shot.insert(template.clone(), *acc);
                runs.push(ShotsRun {
                    method: r.method.clone(),
                    shots: r.shots,
                    seed: r.seed,
                    test_acc: *test_acc,
                    seconds: r.seconds,
                });
            }
            let rows = grouped(runs.clone(), |x| (x.method.clone(), x.shots))
                .into_iter()
                .map(|((method, shots), rs)| {
                    let accs: Vec<f64> = rs.iter().map(|x| x.test_acc).collect();
                    let n = accs.len().max(1) as f64;
                    let mean = accs.iter().sum::<f64>() / n;
                    let std = if accs.len() < 2 {
                        0.0
                    } else {
                        (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
                    };
                    ShotsRow {
                        method,
                        shots,
                        seeds: rs.iter().map(|r| r.seed).collect(),
                        mean,
                        std,
                    }
                })
                .collect();
            Ok(ShotsTable {
                model,
                data,
                zero_shot,
                runs,
                rows,
            })
        })
        .collect()
}

/// `0-3,7,9-10`.
fn compact_ranges(xs: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < xs.len() {
        let mut j = i;
        while j + 1 < xs.len() && xs[j + 1] == xs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            xs[i].to_string()
        } else {
            format!("{}-{}", xs[i], xs[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// The resources each task asks an engine for.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub cpus: usize,
    /// Memory per task, e.g. `8G`.
    pub memory: String,
    pub gpus: usize,
    /// How many tasks run at once (Slurm's `%K`, the Job's parallelism, Ray's in-flight tasks).
    pub parallel: usize,
}

/// `'a b'` → `'a b'` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// An `sbatch` script running the manifest's tasks as one array, each task one `sweep run` that reads
/// its index from `SLURM_ARRAY_TASK_ID`. `--requeue` lets a preempted task start again; it resumes from
/// its checkpoint.
pub fn slurm_script(bin: &str, manifest: &Path, tasks: usize, r: &Resources) -> String {
    sbatch_array(
        &format!("# promptscope sweep: {tasks} tasks of {}, one array task each (`promptscope sweep slurm` wrote this).\n", manifest.display()),
        "promptscope-sweep",
        "slurm",
        tasks,
        r,
        manifest,
        &format!("{} sweep run --manifest {}", shell_quote(bin), shell_quote(&manifest.display().to_string())),
    )
}

/// An sbatch array of `jobs` tasks, each `exec command`, its logs in the manifest's results folder as
/// `{log}-%A_%a.out`.
fn sbatch_array(
    comment: &str,
    name: &str,
    log: &str,
    jobs: usize,
    r: &Resources,
    manifest: &Path,
    command: &str,
) -> String {
    let gpus = if r.gpus > 0 {
        format!("#SBATCH --gres=gpu:{}\n", r.gpus)
    } else {
        String::new()
    };
    format!(
        "#!/bin/bash\n\
         {comment}\
         #SBATCH --job-name={name}\n\
         #SBATCH --array=0-{last}%{parallel}\n\
         #SBATCH --cpus-per-task={cpus}\n\
         #SBATCH --mem={memory}\n\
         {gpus}\
         #SBATCH --output={out}/{log}-%A_%a.out\n\
         #SBATCH --requeue\n\
         export RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{cpus}}}\"\n\
         exec {command}\n",
        last = jobs.saturating_sub(1),
        parallel = r.parallel.max(1),
        cpus = r.cpus.max(1),
        memory = r.memory,
        out = shell_quote(&results_dir(manifest).display().to_string()),
    )
}

/// A folder a sweep's tasks read with one model through one shared cache: what `sweep features`
/// extracts, slice by slice, before the tasks train.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtractionTarget {
    pub model: String,
    pub data: PathBuf,
    pub cache: PathBuf,
}

/// Each distinct (model, dataset, cache) of `tasks` that have a cache, in the manifest's order.
pub fn extraction_targets(tasks: &[Task]) -> Vec<ExtractionTarget> {
    let mut out: Vec<ExtractionTarget> = Vec::new();
    for t in tasks {
        if let Some(cache) = &t.cache {
            let target = ExtractionTarget {
                model: t.model.clone(),
                data: t.data.clone(),
                cache: cache.clone(),
            };
            if !out.contains(&target) {
                out.push(target);
            }
        }
    }
    out
}

/// An sbatch script running a manifest's feature extraction as an array: every extraction target ×
/// `slices` slices, one `sweep features` each. Submitted first, the sweep's array after it
/// (`--dependency=afterok`), its tasks find their test and validation features in the cache.
pub fn slurm_features_script(
    bin: &str,
    manifest: &Path,
    jobs: usize,
    slices: usize,
    r: &Resources,
) -> String {
    let comment = format!(
        "# promptscope sweep: feature extraction for {}, {jobs} slices (`promptscope sweep slurm --features-slices {slices}` wrote this).\n\
         # Submit it before the sweep: jid=$(sbatch --parsable THIS) && sbatch --dependency=afterok:$jid SWEEP.sbatch\n",
        manifest.display()
    );
    let command = format!(
        "{} sweep features --manifest {} --slices {slices}",
        shell_quote(bin),
        shell_quote(&manifest.display().to_string())
    );
    sbatch_array(
        &comment,
        "promptscope-features",
        "slurm-features",
        jobs,
        r,
        manifest,
        &command,
    )
}

/// A Ray driver: each task a remote function with the resources asked for, running `sweep run` as a
/// subprocess, at most `parallel` in flight; exits non-zero if any task failed.
pub fn ray_driver(bin: &str, manifest: &Path, tasks: usize, r: &Resources) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    format!(
        r#"#!/usr/bin/env python3
# promptscope sweep: {tasks} tasks of {manifest}, each a Ray task running one `promptscope sweep run`
# (`promptscope sweep ray` wrote this). Start a head first (`ray start --head`), then run this file.
import os
import subprocess
import sys

import ray

BIN = {bin}
MANIFEST = {m}
TASKS = {tasks}
PARALLEL = {parallel}


@ray.remote(num_cpus={cpus}, num_gpus={gpus}, max_retries=2)
def run(index):
    env = dict(os.environ, RAYON_NUM_THREADS="{cpus}")
    done = subprocess.run([BIN, "sweep", "run", "--manifest", MANIFEST, "--index", str(index)], env=env)
    return index, done.returncode


def main():
    ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
    pending, failed, next_index = [], [], 0
    while next_index < TASKS or pending:
        while next_index < TASKS and len(pending) < PARALLEL:
            pending.append(run.remote(next_index))
            next_index += 1
        ready, pending = ray.wait(pending, num_returns=1)
        index, code = ray.get(ready[0])
        print(f"task {{index}}: exit {{code}}", flush=True)
        if code != 0:
            failed.append(index)
    if failed:
        print(f"failed tasks: {{sorted(failed)}}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
"#,
        manifest = manifest.display(),
        bin = json(bin),
        m = json(&manifest.display().to_string()),
        parallel = r.parallel.max(1),
        cpus = r.cpus.max(1),
        gpus = r.gpus,
    )
}

/// A Kubernetes Indexed Job: `completions` = the task count, each pod one `sweep run` reading its index
/// from `JOB_COMPLETION_INDEX`. The manifest's folder must be mounted at the same path in the pods.
pub fn k8s_job(bin: &str, manifest: &Path, tasks: usize, r: &Resources, image: &str) -> String {
    let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let dir = manifest
        .parent()
        .map_or_else(|| ".".to_string(), |d| d.display().to_string());
    let gpus = if r.gpus > 0 {
        format!("\n                nvidia.com/gpu: {}", r.gpus)
    } else {
        String::new()
    };
    format!(
        "# promptscope sweep: {tasks} tasks of {manifest} (`promptscope sweep k8s` wrote this).\n\
         apiVersion: batch/v1\n\
         kind: Job\n\
         metadata:\n  name: promptscope-sweep\n\
         spec:\n  completionMode: Indexed\n  completions: {tasks}\n  parallelism: {parallel}\n  backoffLimitPerIndex: 2\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: task\n          image: {image}\n          command: [{bin}, \"sweep\", \"run\", \"--manifest\", {m}]\n          env:\n            - name: RAYON_NUM_THREADS\n              value: \"{cpus}\"\n          resources:\n            requests:\n              cpu: \"{cpus}\"\n              memory: {memory}\n            limits:\n              memory: {memory}{gpus}\n          volumeMounts:\n            - name: sweep\n              mountPath: {dirj}\n      volumes:\n        - name: sweep\n          hostPath:\n            path: {dirj}\n",
        manifest = manifest.display(),
        parallel = r.parallel.max(1),
        image = json(image),
        bin = json(bin),
        m = json(&manifest.display().to_string()),
        cpus = r.cpus.max(1),
        memory = json(&r.memory),
        dirj = json(&dir),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_indices_are_listed_as_ranges() {
        assert_eq!(compact_ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(compact_ranges(&[4]), "4");
    }

    #[test]
    fn shell_quoting_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/a/b-c.jsonl"), "/a/b-c.jsonl");
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
