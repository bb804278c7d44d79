//! Paths coming in: file dialogs (where they open, what they answer), files dropped on the window, and
//! the runs folder.

use std::path::{Path, PathBuf};

use egui::{Align2, Color32, FontId, Id, LayerId, Order};

use super::{Action, PickTarget, PromptscopeApp, Tab};

impl PromptscopeApp {
    /// Where a file dialog opens: the field's current path, else a folder the user has just used.
    pub(super) fn dialog_start(&self, target: PickTarget) -> Option<PathBuf> {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        let dataset_dir = self.state.dataset.as_ref().map(|d| d.folder.root.clone());
        match target {
            PickTarget::Model => non_empty(&self.data_panel.model_path),
            PickTarget::Dataset => non_empty(&self.data_panel.dataset_path),
            PickTarget::ClassNames => non_empty(&self.data_panel.classnames_path).or(dataset_dir),
            PickTarget::Prompts => {
                non_empty(&self.export.load_path).or_else(|| self.export.export_dir(&self.state))
            }
            PickTarget::ExportRun(n) => Some(self.export.export_path(n, &self.state)),
            PickTarget::Image | PickTarget::ClassifyImage => dataset_dir,
            PickTarget::Sweep => self.state.sweep.as_ref().map(|(m, _)| m.clone()),
        }
    }

    /// What a file dialog answered (or a test, standing in for one): handled on the next frame.
    pub fn choose(&mut self, target: PickTarget, path: PathBuf) {
        let action = self.picked(target, path);
        self.pending.extend(action);
    }

    /// A path picked in a dialog or dropped: it fills its field and is used at once.
    pub(super) fn picked(&mut self, target: PickTarget, path: PathBuf) -> Option<Action> {
        let shown = path.display().to_string();
        Some(match target {
            PickTarget::Model => {
                self.data_panel.model_path = shown.clone();
                Action::LoadModel(shown)
            }
            PickTarget::Dataset => {
                self.data_panel.dataset_path = shown;
                Action::OpenDataset(path)
            }
            PickTarget::ClassNames => {
                self.data_panel.classnames_path = shown;
                let dataset = self.data_panel.dataset_path.trim();
                if dataset.is_empty() {
                    return None;
                }
                Action::OpenDataset(dataset.into())
            }
            PickTarget::Prompts => {
                self.export.load_path = shown;
                Action::LoadPrompts(path)
            }
            PickTarget::ExportRun(n) => {
                let from = self
                    .state
                    .runs
                    .iter()
                    .find(|r| r.number == n)?
                    .outcome
                    .as_ref()?
                    .prompts
                    .clone();
                self.export.export_paths.insert(n, shown);
                Action::ExportRun { from, to: path }
            }
            PickTarget::Image => {
                self.tab = Tab::Align;
                self.align.image_file = Some(path);
                return None;
            }
            PickTarget::Sweep => Action::OpenSweep(path),
            PickTarget::ClassifyImage => {
                let prompts = self.state.prompts.get(self.export.selected)?.path.clone();
                Action::Classify {
                    prompts,
                    image: path,
                }
            }
        })
    }
}

/// The paths dropped on the window this frame.
pub(super) fn dropped(ctx: &egui::Context) -> Vec<PathBuf> {
    ctx.input(|i| {
        i.raw
            .dropped_files
            .iter()
            .map(|f| f.path().to_path_buf())
            .collect()
    })
}

/// `$PROMPTSCOPE_RUNS`, else `runs/` beside the feature cache (`~/.cache/promptscope/runs`).
pub fn default_runs_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMPTSCOPE_RUNS").filter(|v| !v.is_empty()) {
        return dir.into();
    }
    let features = crate::train::features::default_cache_dir();
    features
        .parent()
        .map_or_else(|| features.join("runs"), |p| p.join("runs"))
}

/// A folder with a `config.json` is a model; any other folder is a dataset; an image file is aligned
/// in the Align tab; a prompts file or CoOp checkpoint is loaded.
pub(super) fn classify_drop(path: &Path) -> Result<PickTarget, String> {
    if path.is_dir() {
        return Ok(if path.join("config.json").is_file() {
            PickTarget::Model
        } else {
            PickTarget::Dataset
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if path.is_file() && crate::data::folder::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
        return Ok(PickTarget::Image);
    }
    if path.is_file()
        && (ext == "safetensors" || crate::export::coop_import::is_coop_checkpoint(path))
    {
        return Ok(PickTarget::Prompts);
    }
    Err(format!(
        "{}: not something promptscope opens. Drop a model folder (with config.json), a dataset folder, an image, or a prompts file.",
        path.display()
    ))
}

/// While files are dragged over the window, says what dropping them does.
pub(super) fn drop_hint(ctx: &egui::Context) {
    if ctx.input(|i| i.raw.hovered_files.is_empty()) {
        return;
    }
    let painter = ctx.layer_painter(LayerId::new(Order::Foreground, Id::unique("drop_hint")));
    let rect = ctx.content_rect();
    painter.rect_filled(rect, 0.0, Color32::from_black_alpha(170));
    painter.text(
        rect.center(),
        Align2::CENTER_CENTER,
        "Drop a model folder, a dataset folder, an image (to align) or a prompts file",
        FontId::proportional(22.0),
        Color32::WHITE,
    );
}
