//! Starting the long jobs: training (and resuming a run), base-to-novel, zero-shot. Each refuses with
//! a message when what it needs is not loaded, and records what it started in the job map.

use super::*;

impl PromptscopeApp {
    pub(super) fn start_training(&mut self, ctx: &egui::Context, run: RunConfig) {
        let pretraining = matches!(run, RunConfig::Pretrain(_));
        let (clip, data) = (
            self.state.model.as_ref().map(|m| m.clip.clone()),
            self.state.dataset.as_ref().map(|d| d.folder.clone()),
        );
        if !pretraining && (clip.is_none() || data.is_none()) {
            return self
                .state
                .error("Load a model and open a dataset before training.");
        }
        let number = self.state.runs.len() + 1;
        // A fresh name per launch and run, so a new session never resumes an old session's checkpoint.
        // Pretraining writes a model folder; the prompt methods a prompts file.
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let out = self.runs_dir.join(if pretraining {
            format!("model-{stamp}-{number}")
        } else {
            format!("run-{stamp}-{number}.safetensors")
        });
        let mut record = TrainRecord::new(number, run.clone(), out.clone());
        match self.worker.train(
            ctx,
            clip,
            data,
            run,
            out,
            false,
            self.cache_dir.clone(),
            record.control.clone(),
        ) {
            Ok(job) => {
                record.job = Some(job);
                self.state.runs.push(record);
            }
            Err(e) => self.state.error(format!("Could not start training: {e}")),
        }
    }

    pub(super) fn resume_run(&mut self, ctx: &egui::Context, n: usize) {
        let (clip, folder) = (
            self.state.model.as_ref().map(|m| m.clip.clone()),
            self.state.dataset.as_ref().map(|d| d.folder.clone()),
        );
        let cache = self.cache_dir.clone();
        let Some(run) = self.state.runs.iter_mut().find(|r| r.number == n) else {
            return;
        };
        if !matches!(run.run, RunConfig::Pretrain(_)) && (clip.is_none() || folder.is_none()) {
            return self
                .state
                .error("Load the model and dataset of this run before resuming it.");
        }
        run.control.pause.store(false, Ordering::Relaxed);
        match run.status {
            RunStatus::Paused => run.status = RunStatus::Training,
            RunStatus::Stopped => {
                run.rewind_to_checkpoint();
                // Feature adapters keep no checkpoint: a stopped one starts over.
                if matches!(run.run, RunConfig::Adapter(_)) {
                    run.epochs.clear();
                    run.steps.clear();
                }
                run.control = Default::default();
                run.status = RunStatus::Preparing {
                    stage: "resuming".into(),
                    done: 0,
                    total: 0,
                };
                match self.worker.train(
                    ctx,
                    clip,
                    folder,
                    run.run.clone(),
                    run.out.clone(),
                    true,
                    cache,
                    run.control.clone(),
                ) {
                    Ok(job) => run.job = Some(job),
                    Err(e) => {
                        run.status = RunStatus::Stopped;
                        self.state.error(format!("Could not resume the run: {e}"));
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn start_base_to_novel(
        &mut self,
        ctx: &egui::Context,
        req: compare_job::BaseToNovelRequest,
    ) {
        let Some((clip, folder, cancel)) = self.evaluation_inputs("base-to-novel") else {
            return;
        };
        let cache = self.cache_dir.clone();
        let started = self
            .worker
            .base_to_novel(ctx, clip, folder, req, cache, cancel.clone());
        self.started_evaluation(started, cancel);
    }

    /// What an evaluation (zero-shot, base-to-novel) runs on, and its stop flag; None, with a message
    /// when something is missing, while none can start (one at a time).
    fn evaluation_inputs(
        &mut self,
        what: &str,
    ) -> Option<(
        Arc<crate::clip::LoadedClip>,
        Arc<crate::data::DatasetFolder>,
        Arc<AtomicBool>,
    )> {
        if self.state.jobs.evaluation().is_some() {
            return None;
        }
        let (Some(model), Some(dataset)) = (&self.state.model, &self.state.dataset) else {
            self.state.error(format!(
                "Load a model and open a dataset before running {what}."
            ));
            return None;
        };
        let cancel = Arc::new(AtomicBool::new(false));
        Some((model.clip.clone(), dataset.folder.clone(), cancel))
    }

    /// Records a started evaluation (zero-shot, base-to-novel) in the job map, or says why it did not start.
    fn started_evaluation(
        &mut self,
        started: std::io::Result<events::JobId>,
        cancel: Arc<AtomicBool>,
    ) {
        if started.is_ok() {
            self.state.last_run_cancelled = false;
        }
        self.state
            .start(started, Pending::Evaluate(RunningEval::new(cancel)));
    }

    pub(super) fn start_zero_shot(&mut self, ctx: &egui::Context, templates: Vec<String>) {
        let Some((clip, folder, cancel)) = self.evaluation_inputs("zero-shot") else {
            return;
        };
        if templates.is_empty() {
            return self.state.error("Write at least one prompt template.");
        }
        if self
            .state
            .dataset
            .as_ref()
            .is_some_and(|d| d.test.is_empty())
        {
            return self.state.error(format!(
                "Dataset {}: its test split has no images to evaluate; add images to test/<class>/ or remove the empty test folder.",
                folder.root.display()
            ));
        }
        // The probe and the adapters are fitted on the same K shots.
        let shots = self
            .compare
            .probe_shots
            .resolve(self.state.prompts.iter().map(|p| &p.meta));
        let adapters = self.compare.adapter_methods();
        let req = compare_job::CompareRequest {
            templates,
            learned: self
                .state
                .prompts
                .iter()
                .map(|p| (p.label.clone(), p.path.clone()))
                .collect(),
            linear_probe: self.compare.linear_probe.then_some(shots),
            adapters: (!adapters.is_empty()).then_some((shots, adapters)),
        };
        let cache = self.cache_dir.clone();
        let started = self
            .worker
            .compare(ctx, clip, folder, req, cache, cancel.clone());
        self.started_evaluation(started, cancel);
    }
}
