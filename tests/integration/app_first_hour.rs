#![cfg(feature = "gui")]
//! What stops or misleads a user in their first hour with the app, each driven through the window:
//! prompts files checked against the model and dataset and rejected in their own Compare column,
//! unload / reload, a failed alignment that waits instead of looping, the class view's pictures, the
//! K-shot probe, CoOp checkpoints in the Export tab, the runs folder, classifying one image, and the
//! Align tab's side-by-side maps with the class probability.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use egui_kittest::kittest::{NodeT as _, Queryable};
use egui_kittest::Harness;
use promptscope::app::{PickTarget, PromptscopeApp, Tab};
use promptscope::clip::{synth, ClipConfig, HiddenAct};
use promptscope::export::prompt_file::PromptFile;
use promptscope::prompt::coop::{CoopConfig, PromptLearner};

use super::app_ui::{click, fixture, labels_containing, loaded, wait_for, wait_idle, Fixture};

/// A prompts file for `model` and `classes` with a random context (what it scores does not matter
/// here, only that it is a real file of the real format), recorded as trained on `shots`.
fn prompts_file(model: &Path, classes: &[String], shots: Option<usize>, out: &Path) -> PathBuf {
    let clip = promptscope::clip::load(model.to_str().unwrap(), &Device::Cpu).unwrap();
    let cfg = CoopConfig {
        n_ctx: 4,
        ..Default::default()
    };
    let learner = PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        classes,
        &cfg,
    )
    .unwrap();
    let weights = promptscope::clip::l2_normalize(
        &learner.text_features(&clip.model().unwrap().text).unwrap(),
    )
    .unwrap();
    let mut file = PromptFile::new(&clip, &learner, weights).unwrap();
    file.meta.shots = shots;
    file.save(out).unwrap();
    out.to_path_buf()
}

/// The buttons labelled `label` (not the text nodes inside them), in the order drawn.
fn buttons<'h>(
    h: &'h Harness<'_, PromptscopeApp>,
    label: &'h str,
) -> impl Iterator<Item = egui_kittest::Node<'h>> + 'h {
    h.get_all_by_label(label)
        .filter(|n| n.accesskit_node().role() == egui::accesskit::Role::Button)
}

/// Widgets that reach past the right edge of the 1280 px window (clipped for the user).
pub(crate) fn clipped(h: &Harness<'_, PromptscopeApp>) -> Vec<String> {
    let by = egui_kittest::kittest::By::new()
        .predicate(|n| n.bounding_box().is_some_and(|b| b.x1 > 1281.0));
    h.query_all(by)
        .map(|n| {
            format!(
                "{:?} {:?} {:?}",
                n.accesskit_node().role(),
                n.accesskit_node().label(),
                n.rect()
            )
        })
        .collect()
}

fn dataset_classes(h: &Harness<'_, PromptscopeApp>) -> Vec<String> {
    h.state()
        .state
        .dataset
        .as_ref()
        .expect("a dataset")
        .folder
        .class_names
        .clone()
}

/// The open dataset's class folders.
fn class_dirs(h: &Harness<'_, PromptscopeApp>) -> Vec<String> {
    h.state()
        .state
        .dataset
        .as_ref()
        .expect("a dataset")
        .folder
        .class_dirs
        .clone()
}

/// Writes `lines` as a CoOp classnames.txt and picks it as the Class names dialog would, then waits.
fn pick_classnames(
    h: &mut Harness<'_, PromptscopeApp>,
    fx: &Fixture,
    lines: impl Iterator<Item = String>,
) -> PathBuf {
    let file = fx._dir.path().join("classnames.txt");
    std::fs::write(&file, lines.collect::<Vec<_>>().join("\n")).unwrap();
    h.state_mut().choose(PickTarget::ClassNames, file.clone());
    wait_idle(h);
    file
}

/// Loads a prompts file as the Export tab's Open… dialog would, and waits for it.
fn open_prompts(h: &mut Harness<'_, PromptscopeApp>, path: &Path) {
    h.state_mut()
        .choose(PickTarget::Prompts, path.to_path_buf());
    wait_idle(h);
}

fn run_zero_shot(h: &mut Harness<'_, PromptscopeApp>) {
    click(h, "Compare");
    click(h, "Run zero-shot");
    wait_idle(h);
    assert!(
        h.state().state.report.is_some(),
        "no comparison: {:?}",
        h.state().state.errors
    );
}

#[test]
fn compare_rejects_a_mismatched_prompts_file_in_its_own_column_and_rechecks_when_the_dataset_changes(
) {
    let fx = fixture();
    let mut h = loaded(&fx);
    let dir = fx._dir.path();
    let classes = dataset_classes(&h);
    let good = prompts_file(&fx.model, &classes, Some(2), &dir.join("good.safetensors"));
    let animals: Vec<String> = ["cat", "dog", "bird"].map(String::from).to_vec();
    let other = prompts_file(
        &fx.model,
        &animals,
        Some(2),
        &dir.join("animals.safetensors"),
    );
    open_prompts(&mut h, &good);
    open_prompts(&mut h, &other);
    assert_eq!(
        h.state().state.prompts.len(),
        2,
        "{:?}",
        h.state().state.errors
    );

    // Before any run, the list says which file cannot be scored here and why.
    click(&mut h, "Compare");
    assert_eq!(
        labels_containing(&h, "not in the dataset: cat, dog, bird"),
        1
    );
    assert_eq!(
        labels_containing(&h, "3 classes · 2-shot"),
        1,
        "the good file's line"
    );

    // The comparison stands; the mismatched file gets its own column saying why. The probe is fitted
    // on the learned prompts' 2 shots, not every training image.
    h.state_mut().compare.linear_probe = true;
    h.state_mut().compare.tip_adapter = true;
    h.state_mut().compare.tip_adapter_f = true;
    h.state_mut().compare.clip_adapter = true;
    run_zero_shot(&mut h);
    let report = h.state().state.report.clone().unwrap();
    let names: Vec<&str> = report.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "\"a photo of a {}.\"",
            "good.safetensors",
            "linear probe (2-shot, seed 1)"
        ]
    );
    assert!(
        names.len() == 6
            && names[3].starts_with("Tip-Adapter (2-shot, α ")
            && names[4].starts_with("Tip-Adapter-F (2-shot, α "),
        "{names:?}"
    );
    assert_eq!(names[5], "CLIP-Adapter (2-shot)");
    assert!(
        report.methods.iter().all(|m| m.eval.total == 9),
        "every column on the same 9 test images"
    );
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(report.rejected[0].name, "animals.safetensors");
    assert!(
        report.rejected[0]
            .reason
            .contains("not in the dataset: cat, dog, bird"),
        "{}",
        report.rejected[0].reason
    );
    assert_eq!(
        labels_containing(&h, "not compared"),
        2,
        "the column's cell and the line under the table"
    );
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );

    // A class's test images are shown as pictures, framed correct / wrong.
    h.get_all_by_label(&classes[1])
        .find(|n| n.accesskit_node().role() != egui::accesskit::Role::Label)
        .unwrap()
        .click();
    wait_for(&mut h, "the class's pictures", |a| {
        a.state.images.len() == 3 && !a.state.jobs.images_pending()
    });
    assert!(
        h.state().state.images.values().all(Option::is_some),
        "every test image decodes"
    );
    let shown = report
        .paths
        .iter()
        .filter(|p| h.query_by_label(&p.display().to_string()).is_some())
        .count();
    assert_eq!(
        shown, 3,
        "the three pictures of the class, each labelled by its file"
    );

    // Unload the mismatched file: the next run has no rejected column.
    buttons(&h, "Unload")
        .nth(1)
        .expect("a second Unload button")
        .click_accesskit();
    h.step();
    h.step();
    assert_eq!(
        h.state()
            .state
            .prompts
            .iter()
            .map(|p| p.label.as_str())
            .collect::<Vec<_>>(),
        ["good.safetensors"]
    );
    h.state_mut().compare.linear_probe = false;
    h.state_mut().compare.tip_adapter = false;
    h.state_mut().compare.tip_adapter_f = false;
    h.state_mut().compare.clip_adapter = false;
    run_zero_shot(&mut h);
    assert!(h.state().state.report.as_ref().unwrap().rejected.is_empty());

    // Another dataset (four classes): the loaded file is kept but re-checked, and rejected in its column.
    let four = dir.join("four");
    promptscope::data::synth::write_dataset(&four, 4, 0, Some((2, 1, 2)), 3).unwrap();
    h.state_mut().choose(PickTarget::Dataset, four.clone());
    wait_idle(&mut h);
    assert_eq!(dataset_classes(&h).len(), 4);
    assert_eq!(
        labels_containing(&h, "was trained on 3 classes, the dataset has 4"),
        1
    );
    run_zero_shot(&mut h);
    let report = h.state().state.report.as_ref().unwrap();
    assert_eq!(report.methods.len(), 1);
    assert_eq!(report.rejected.len(), 1);
    // Reload reads the file again; it is still the same file, still listed once.
    click(&mut h, "Reload");
    wait_idle(&mut h);
    assert_eq!(h.state().state.prompts.len(), 1);
    h.check_accessibility();
}

#[test]
fn a_prompts_file_from_another_model_is_refused_naming_both_models() {
    let fx = fixture();
    let mut h = loaded(&fx);
    let dir = fx._dir.path();
    // Same dimensions, other weights: only the fingerprint tells them apart.
    let twin = dir.join("twin-clip");
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-6), &twin).unwrap();
    let classes = dataset_classes(&h);
    let theirs = prompts_file(&twin, &classes, None, &dir.join("twin.safetensors"));
    let ours = prompts_file(&fx.model, &classes, None, &dir.join("ours.safetensors"));
    open_prompts(&mut h, &theirs);
    let errors = h.state().state.errors.clone();
    assert_eq!(h.state().state.prompts.len(), 0);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("twin-clip") && errors[0].contains("tiny-clip"),
        "both models named: {}",
        errors[0]
    );

    // A file loaded with its model, then another model loaded: flagged, and rejected by Compare.
    h.state_mut().state.errors.clear();
    open_prompts(&mut h, &ours);
    assert_eq!(h.state().state.prompts.len(), 1);
    h.state_mut().choose(PickTarget::Model, twin.clone());
    wait_idle(&mut h);
    assert!(h
        .state()
        .state
        .model
        .as_ref()
        .unwrap()
        .clip
        .id
        .contains("twin-clip"));
    click(&mut h, "Compare");
    assert_eq!(labels_containing(&h, "not the loaded"), 1);
    run_zero_shot(&mut h);
    let report = h.state().state.report.as_ref().unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert!(
        report.rejected[0].reason.contains("tiny-clip"),
        "{}",
        report.rejected[0].reason
    );
}

#[test]
fn a_failed_alignment_is_reported_once_and_waits_for_the_user() {
    let fx = fixture();
    // The first test image is corrupt.
    let ds = promptscope::data::DatasetFolder::open(&fx.data).unwrap();
    let bad = ds.eval_samples()[0].path.clone();
    std::fs::write(&bad, b"not a png").unwrap();
    let mut h = loaded(&fx);
    h.state_mut().tab = Tab::Align;
    wait_for(&mut h, "the failed alignment", |a| {
        a.state.align_failed.is_some()
    });
    // No busy loop: frame after frame, nothing is asked of the worker again.
    for _ in 0..30 {
        h.step();
        assert!(
            h.state().state.jobs.aligning().is_none(),
            "the failed request was sent again"
        );
    }
    let errors = h.state().state.errors.clone();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&bad.display().to_string()),
        "{}",
        errors[0]
    );
    assert_eq!(labels_containing(&h, "Could not align"), 1);
    // Retry tries once more (and fails the same way, once).
    click(&mut h, "Retry");
    wait_for(&mut h, "the retried alignment", |a| {
        a.state.jobs.aligning().is_none() && a.state.align_failed.is_some()
    });
    for _ in 0..10 {
        h.step();
        assert!(h.state().state.jobs.aligning().is_none());
    }
    // The next image aligns.
    click(&mut h, "Next");
    wait_for(&mut h, "the next image's alignment", |a| {
        a.state.align.is_some()
    });
    assert!(h.state().state.align_failed.is_none());
}

#[test]
fn align_shows_the_class_word_under_each_prompt_side_by_side_with_its_probability_and_aligns_a_dropped_image(
) {
    let fx = fixture();
    let mut h = loaded(&fx);
    let classes = dataset_classes(&h);
    let learned = prompts_file(
        &fx.model,
        &classes,
        Some(2),
        &fx._dir.path().join("learned.safetensors"),
    );
    open_prompts(&mut h, &learned);
    click(&mut h, "Align");
    wait_for(&mut h, "the first alignment", |a| {
        a.state.align.is_some() && a.state.jobs.aligning().is_none()
    });
    assert!(h.query_all_by_label("Threshold").count() >= 1);
    let view = h.state().state.align.as_ref().unwrap();
    let p = view
        .class_prob
        .expect("the class probability of the hand-crafted prompt");
    assert!(p > 0.0 && p <= 1.0);
    assert_eq!(labels_containing(&h, &format!("p({})", classes[0])), 1);

    click(&mut h, "side by side");
    wait_for(&mut h, "the side-by-side maps", |a| {
        a.state
            .align
            .as_ref()
            .is_some_and(|v| v.side_by_side.len() == 2)
            && a.state.jobs.aligning().is_none()
    });
    let view = h.state().state.align.as_ref().unwrap();
    let labels: Vec<&str> = view.side_by_side.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["\"a photo of a {}.\"", "learned.safetensors"]);
    for (label, m) in &view.side_by_side {
        let m = m.as_ref().unwrap_or_else(|e| panic!("{label}: {e}"));
        // "a photo of a red circle ." → the map of "circle"; the learned prompt ends in the class too.
        assert_eq!(
            m.tokens[m.word].trim(),
            classes[0].split(' ').next_back().unwrap(),
            "{label}: {:?}",
            m.tokens
        );
        assert_eq!(m.map.len(), 49);
        assert!(m.prob > 0.0 && m.prob <= 1.0);
    }
    assert_eq!(
        labels_containing(&h, &format!("p({})", classes[0])),
        2,
        "a probability under each map"
    );
    assert_eq!(clipped(&h), Vec::<String>::new(), "everything fits 1280 px");
    assert!(h.query_by_label("learned.safetensors map").is_some());

    // Another class for the same image: its maps and probabilities.
    h.state_mut().align.class = Some(2);
    wait_for(&mut h, "the maps of another class", |a| {
        a.state
            .align
            .as_ref()
            .is_some_and(|v| v.request.class.as_deref() == Some(classes[2].as_str()))
            && a.state.jobs.aligning().is_none()
    });
    assert_eq!(labels_containing(&h, &format!("p({})", classes[2])), 2);

    // An image file dropped onto the window is aligned in the Align tab.
    let png = PathBuf::from(super::common::fixture_image());
    h.input_mut()
        .dropped_files
        .push(Arc::new(super::app_ui::DroppedFolder(png.clone())));
    wait_for(&mut h, "the dropped image's alignment", |a| {
        a.state
            .align
            .as_ref()
            .is_some_and(|v| v.request.image == png)
            && a.state.jobs.aligning().is_none()
    });
    assert_eq!(h.state().tab, Tab::Align);
    assert!(labels_containing(&h, "dropped: nonsquare_320x213.png") == 1);
    h.check_accessibility();
}

#[test]
fn coop_checkpoints_runs_on_disk_and_classifying_an_image_from_the_export_tab() {
    use promptscope::app::runs::RunKind;
    let fx = fixture();
    let mut h = loaded(&fx);
    let classes = dataset_classes(&h);
    let runs = fx._dir.path().join("runs");
    std::fs::create_dir_all(&runs).unwrap();
    prompts_file(
        &fx.model,
        &classes,
        Some(2),
        &runs.join("run-1-1.safetensors"),
    );
    std::fs::write(runs.join("run-2-2.safetensors.ckpt"), [0u8; 10]).unwrap();

    // CoOp's own checkpoint opens in the Export tab, imported with the open dataset's class names.
    let ckpt = super::common::fixtures()
        .join("coop_checkpoint")
        .join("model.pth.tar-3");
    open_prompts(&mut h, &ckpt);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    let imported = &h.state().state.prompts[0];
    assert!(
        imported.meta.source.starts_with("coop-checkpoint:"),
        "{}",
        imported.meta.source
    );
    assert_eq!(imported.meta.class_names, classes);
    assert!(imported.meta.coop.csc && imported.words.len() == 12);

    // The runs folder: each run with its size; Load run, Delete (asked twice).
    click(&mut h, "Export");
    wait_idle(&mut h);
    assert!(h.query_by_label("Runs on disk").is_some());
    let listed = h.state().state.runs_on_disk.clone().unwrap();
    let kinds: Vec<(String, RunKind)> = listed.iter().map(|r| (r.name(), r.kind)).collect();
    assert!(
        kinds.contains(&("run-1-1.safetensors".into(), RunKind::Prompts)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("run-2-2.safetensors".into(), RunKind::Unfinished)),
        "{kinds:?}"
    );
    assert_eq!(labels_containing(&h, "10 B"), 1, "the checkpoint's size");
    // One Load run per prompts row, in the listed order.
    let prompts_rows: Vec<String> = listed
        .iter()
        .filter(|r| r.kind == RunKind::Prompts)
        .map(|r| r.name())
        .collect();
    let row = prompts_rows
        .iter()
        .position(|n| *n == "run-1-1.safetensors")
        .unwrap();
    buttons(&h, "Load run").nth(row).unwrap().click_accesskit();
    h.step();
    wait_idle(&mut h);
    assert!(
        h.state()
            .state
            .prompts
            .iter()
            .any(|p| p.label == "run-1-1.safetensors"),
        "{:?}",
        h.state().state.errors
    );
    let deletes: Vec<_> = buttons(&h, "Delete").collect();
    // One Delete per row, in the listed order (the imported checkpoint's file is in the runs folder too).
    assert_eq!(deletes.len(), listed.len());
    deletes[listed
        .iter()
        .position(|r| r.kind == RunKind::Unfinished)
        .unwrap()]
    .click_accesskit();
    h.step();
    h.step();
    h.get_by_label("Really delete?").click_accesskit();
    h.step();
    wait_idle(&mut h);
    assert!(!runs.join("run-2-2.safetensors.ckpt").exists());
    assert!(
        runs.join("run-1-1.safetensors").exists(),
        "only the chosen run is deleted"
    );
    assert!(h
        .state()
        .state
        .runs_on_disk
        .as_ref()
        .unwrap()
        .iter()
        .all(|r| r.kind != RunKind::Unfinished));

    // Classify one image with the selected prompts (as the Classify an image… dialog answers).
    let image = promptscope::data::DatasetFolder::open(&fx.data)
        .unwrap()
        .eval_samples()[0]
        .path
        .clone();
    h.state_mut().export.selected = 0;
    h.state_mut()
        .choose(PickTarget::ClassifyImage, image.clone());
    wait_idle(&mut h);
    let c = h
        .state()
        .state
        .classified
        .clone()
        .expect("a classification");
    assert_eq!(c.image, image);
    assert_eq!(c.top.len(), 3, "three classes");
    let sum: f32 = c.top.iter().map(|(_, p)| p).sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    assert!(c.top.windows(2).all(|w| w[0].1 >= w[1].1));
    assert_eq!(
        labels_containing(
            &h,
            &format!(
                "{}: {}",
                image.file_name().unwrap().to_string_lossy(),
                c.top[0].0
            )
        ),
        1
    );

    // Without a dataset, a checkpoint cannot be imported: the error says what to do.
    let mut bare = super::app_ui::harness(
        PromptscopeApp::new_headless().with_startup(Some(fx.model.display().to_string()), None),
    );
    wait_idle(&mut bare);
    open_prompts(&mut bare, &ckpt);
    let errors = &bare.state().state.errors;
    assert!(
        errors.len() == 1 && errors[0].contains("pen the dataset it was trained on"),
        "{errors:?}"
    );
}

/// README's "first hour", step by step, on the shipped FILIP demo model and the sample dataset
/// (`promptscope sample` writes the same set): load, compare, train, align, export, classify.
#[test]
fn the_first_hour_walkthrough_in_readme_works_on_the_demo_model_and_sample() {
    use promptscope::app::training::RunStatus;
    use promptscope::data::scene_sets::{write_scene_set, SceneSet};
    let scratch = tempfile::tempdir().unwrap();
    let sample = scratch.path().join("warm-light");
    let size = promptscope::clip::ClipConfig::scenes()
        .vision_config
        .image_size as u32;
    write_scene_set(&sample, SceneSet::WarmLight, (16, 4, 25), size, 0).unwrap();
    // 1. Load: the demo model by name and the sample folder (what scripts/run.sh opens).
    let mut app = PromptscopeApp::new_headless()
        .with_startup(Some("scenes-filip".into()), Some(sample.clone()));
    app.runs_dir = scratch.path().join("runs");
    app.cache_dir = None;
    let mut h = super::app_ui::harness(app);
    wait_idle(&mut h);
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    assert!(
        labels_containing(&h, "small demo model") >= 1,
        "the top bar says it is a small demo model"
    );

    // 2. Compare: the template, well above chance (8 classes).
    run_zero_shot(&mut h);
    let template = h.state().state.report.as_ref().unwrap().methods[0]
        .eval
        .accuracy;
    assert!(template > 2.0 / 8.0, "zero-shot {template}");

    // 3. Train: CoOp, 16 shots (fewer epochs than CoOp's 200, to keep the test short).
    click(&mut h, "Train");
    click(&mut h, "16-shot");
    h.state_mut().train.form.coop.train.optim.epochs = 20;
    click(&mut h, "Start training");
    wait_for(&mut h, "the run and its prompts", |a| {
        a.state.is_idle() && a.state.prompts.len() == 1
    });
    let run = &h.state().state.runs[0];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );

    // Compare again: the learned prompts beside the template, on the same images.
    run_zero_shot(&mut h);
    let report = h.state().state.report.clone().unwrap();
    assert_eq!(report.methods.len(), 2);
    let learned = report.methods[1].eval.accuracy;
    println!("walkthrough: template {template:.3}, CoOp 16-shot × 20 epochs {learned:.3}");
    assert!(
        learned > template,
        "learned prompts {learned} vs the template {template}"
    );

    // 4. Align: the class word under the template and under the learned context, side by side.
    click(&mut h, "Align");
    click(&mut h, "side by side");
    wait_for(&mut h, "the side-by-side maps", |a| {
        a.state
            .align
            .as_ref()
            .is_some_and(|v| v.side_by_side.len() == 2)
            && a.state.jobs.aligning().is_none()
    });
    let view = h.state().state.align.as_ref().unwrap();
    assert!(view.side_by_side.iter().all(|(_, m)| m.is_ok()));
    assert_eq!(
        clipped(&h),
        Vec::<String>::new(),
        "the Align tab fits 1280 px"
    );

    // 5. Export: Save as… (the dialog's answer), then 6. classify one image with it.
    click(&mut h, "Export");
    let out = scratch.path().join("my-prompts.safetensors");
    h.state_mut().choose(PickTarget::ExportRun(1), out.clone());
    wait_idle(&mut h);
    assert!(out.is_file(), "{:?}", h.state().state.errors);
    let image = promptscope::data::DatasetFolder::open(&sample)
        .unwrap()
        .eval_samples()[0]
        .path
        .clone();
    h.state_mut().choose(PickTarget::ClassifyImage, image);
    wait_idle(&mut h);
    let c = h
        .state()
        .state
        .classified
        .clone()
        .expect("a classification");
    assert_eq!(c.top.len(), 5);
}

/// The app's Compare and the CLI's zero-shot score the same images by the same rule: a flat folder's
/// derived test split, a folder with only test/ (no training images needed for zero-shot).
#[test]
fn compare_and_the_cli_report_the_same_numbers_on_a_flat_folder_and_a_test_only_folder() {
    let fx = fixture();
    let dir = fx._dir.path();
    let flat = dir.join("flat");
    promptscope::data::synth::write_dataset(&flat, 3, 10, None, 5).unwrap();
    let test_only = dir.join("test-only");
    promptscope::data::synth::write_dataset(&test_only, 3, 0, Some((0, 0, 4)), 6).unwrap();
    std::fs::remove_dir_all(test_only.join("train")).ok();
    std::fs::remove_dir_all(test_only.join("val")).ok();
    for data in [&flat, &test_only] {
        let mut h = super::app_ui::harness(
            PromptscopeApp::new_headless()
                .with_startup(Some(fx.model.display().to_string()), Some(data.clone())),
        );
        h.state_mut().cache_dir = None;
        wait_idle(&mut h);
        run_zero_shot(&mut h);
        let app = &h.state().state.report.as_ref().unwrap().methods[0].eval;
        let out = super::common::promptscope(&[
            "zero-shot",
            "--model",
            &fx.model.display().to_string(),
            "--data",
            &data.display().to_string(),
            "--format",
            "json",
        ]);
        let cli: serde_json::Value = serde_json::from_str(&super::common::ok(&out)).unwrap();
        assert_eq!(
            cli["total"].as_u64().unwrap() as usize,
            app.total,
            "{}: same images",
            data.display()
        );
        assert_eq!(
            cli["correct"].as_u64().unwrap() as usize,
            app.correct,
            "{}: same predictions",
            data.display()
        );
    }
}

/// Folders named by id take their class names from CoOp's classnames.txt, in the app as in the CLI.
#[test]
fn a_classnames_file_names_the_class_folders() {
    let fx = fixture();
    let mut h = loaded(&fx);
    let dirs = class_dirs(&h);
    let names = ["tench", "goldfish", "great white shark"];
    let file = pick_classnames(
        &mut h,
        &fx,
        dirs.iter().zip(names).map(|(d, n)| format!("{d} {n}")),
    );
    assert!(
        h.state().state.errors.is_empty(),
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(dataset_classes(&h), names);
    assert_eq!(
        h.query_all_by_label("great white shark").count(),
        1,
        "the side panel lists the names"
    );
    run_zero_shot(&mut h);
    assert_eq!(h.state().state.report.as_ref().unwrap().classes, names);
    assert_eq!(
        h.state().settings().classnames,
        file.display().to_string(),
        "remembered with the dataset"
    );
    // A file that misses a folder is an error naming both, and the dataset stays as it was.
    std::fs::write(&file, format!("{} tench\n", dirs[0])).unwrap();
    h.state_mut().choose(PickTarget::ClassNames, file.clone());
    wait_idle(&mut h);
    let errors = &h.state().state.errors;
    assert!(
        errors.len() == 1 && errors[0].contains(&dirs[1]) && errors[0].contains("classnames.txt"),
        "{errors:?}"
    );
    assert_eq!(dataset_classes(&h), names);
}

/// A class-name file left in its field from one dataset does not keep another from opening: opening
/// a dataset it does not fit clears the field, says why, and names the classes by their folders.
#[test]
fn a_classnames_file_for_another_dataset_is_cleared_when_the_dataset_changes() {
    let fx = fixture();
    let mut h = loaded(&fx);
    let dirs = class_dirs(&h);
    pick_classnames(&mut h, &fx, dirs.iter().map(|d| format!("{d} name of {d}")));
    assert!(dataset_classes(&h).iter().all(|c| c.starts_with("name of")));
    // Another dataset, with a class folder the file does not name.
    let other = fx._dir.path().join("more-shapes");
    promptscope::data::synth::write_dataset(&other, 4, 0, Some((2, 1, 2)), 3).unwrap();
    h.state_mut().choose(PickTarget::Dataset, other.clone());
    wait_idle(&mut h);
    let ds = h.state().state.dataset.as_ref().unwrap();
    assert_eq!(ds.folder.root, other, "the new dataset opened");
    assert!(
        ds.folder
            .class_names
            .iter()
            .all(|c| !c.starts_with("name of")),
        "named by its folders: {:?}",
        ds.folder.class_names
    );
    assert!(
        h.state().settings().classnames.is_empty(),
        "the field is cleared"
    );
    let errors = &h.state().state.errors;
    assert!(
        errors.len() == 1 && errors[0].contains("classnames.txt") && errors[0].contains("cleared"),
        "{errors:?}"
    );
}

/// Tip-Adapter-F and CLIP-Adapter train from the Train tab on the same seam as CoOp: live epochs,
/// pause / stop, and a stopped adapter (no checkpoint) starts over when resumed.
#[test]
fn feature_adapters_train_from_the_train_tab_with_live_curves() {
    use promptscope::app::train_panel::{series, ADAPTER_METHOD};
    use promptscope::app::training::RunStatus;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, ADAPTER_METHOD);
    click(&mut h, "Tip-Adapter-F");
    click(&mut h, "2-shot");
    h.state_mut().train.form.adapter.views = 2;
    click(&mut h, "Start training");
    wait_for(&mut h, "the Tip-Adapter-F run", |a| {
        !a.state.is_training() && !a.state.runs.is_empty()
    });
    let run = &h.state().state.runs[0];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(
        run.epochs.len(),
        20,
        "Tip-Adapter-F's 20 epochs, each reported"
    );
    assert!(
        run.label.contains("2-shot · Tip-Adapter-F"),
        "{}",
        run.label
    );
    let outcome = run.outcome.as_ref().unwrap();
    assert!(
        outcome.summary.contains("zero-shot") && outcome.summary.contains("α "),
        "{}",
        outcome.summary
    );
    let s = series(run);
    assert!(
        s.iter()
            .any(|(plot, _, p)| *plot == "accuracy" && p.len() == 20),
        "a validation point per epoch"
    );
    assert!(
        h.state().state.prompts.is_empty(),
        "an adapter adds no prompts file"
    );

    // CLIP-Adapter, long enough to stop; resumed, it starts over from epoch 0.
    click(&mut h, "CLIP-Adapter");
    h.state_mut().train.form.adapter.method =
        promptscope::train::config::AdapterMethod::ClipAdapter { epochs: 5000 };
    click(&mut h, "Start training");
    wait_for(&mut h, "a few CLIP-Adapter epochs", |a| {
        a.state.runs[1].epochs.len() >= 3
    });
    h.state_mut().state.runs[1]
        .control
        .cancel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for(&mut h, "the stop", |a| {
        a.state.runs[1].status == RunStatus::Stopped
    });
    h.state_mut().state.runs[1]
        .control
        .cancel
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let resume = h
        .get_all_by_label("Resume")
        .find(|n| n.accesskit_node().role() == egui::accesskit::Role::Button)
        .unwrap();
    resume.click_accesskit();
    h.step();
    wait_for(&mut h, "epochs after the restart", |a| {
        a.state.runs[1].epochs.len() >= 2
    });
    let numbers: Vec<usize> = h.state().state.runs[1]
        .epochs
        .iter()
        .map(|e| e.epoch)
        .collect();
    assert_eq!(
        numbers[0], 0,
        "a restarted adapter's curve starts at epoch 0: {numbers:?}"
    );
    assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
    h.state_mut().state.runs[1]
        .control
        .cancel
        .store(true, std::sync::atomic::Ordering::Relaxed);
    wait_for(&mut h, "the second stop", |a| !a.state.is_training());
}

/// KgCoOp is its own method in the Train tab: its form (and only its) has λ, and its run is recorded as
/// KgCoOp in the run list and in the export.
#[test]
fn a_kgcoop_run_is_its_own_method_in_the_train_tab() {
    use promptscope::app::train_panel::KG_FIELD;
    use promptscope::prompt::CoopVariant;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    assert!(h.query_by_label(KG_FIELD).is_none(), "CoOp's form has no λ");
    click(&mut h, "KgCoOp");
    assert!(
        h.query_by_label(KG_FIELD).is_some(),
        "KgCoOp's form has its λ"
    );
    assert_eq!(
        h.state().train.form.kgcoop.variant,
        CoopVariant::Kgcoop { lambda: 8.0 },
        "KgCoOp's recipe: λ = 8"
    );
    click(&mut h, "2-shot");
    h.state_mut().train.form.kgcoop.views = 1;
    h.state_mut().train.form.kgcoop.train.optim.epochs = 2;
    click(&mut h, "Start training");
    wait_for(&mut h, "the KgCoOp run", |a| {
        !a.state.is_training() && !a.state.runs.is_empty()
    });
    wait_idle(&mut h);
    let run = &h.state().state.runs[0];
    assert!(run.label.contains("KgCoOp λ=8"), "{}", run.label);
    let file =
        PromptFile::load(&run.out).unwrap_or_else(|e| panic!("{e}: {:?}", h.state().state.errors));
    assert_eq!(file.meta.variant, CoopVariant::Kgcoop { lambda: 8.0 });
    h.check_accessibility();
}

/// CoCoOp trains from the Train tab like CoOp (live epochs, stop, resume from its checkpoint with the
/// meta-net), its export holds the meta-net, and Compare scores it per image, as `promptscope eval` does.
#[test]
fn a_cocoop_run_trains_from_the_train_tab_resumes_and_compare_scores_it_per_image() {
    use promptscope::app::training::RunStatus;
    let fx = fixture();
    let mut h = loaded(&fx);
    click(&mut h, "Train");
    click(&mut h, "CoCoOp");
    assert!(
        h.state().train.form.cocoop.variant == promptscope::prompt::CoopVariant::Cocoop,
        "the CoCoOp form edits a CoCoOp run"
    );
    assert_eq!(
        h.state().train.form.cocoop.train.batch_size,
        Some(1),
        "CoCoOp's recipe: batch 1"
    );
    click(&mut h, "2-shot");
    assert_eq!(
        h.state().train.form.cocoop.train.optim.epochs,
        10,
        "shots do not reset CoCoOp's 10 epochs"
    );
    h.state_mut().train.form.cocoop.views = 1;
    h.state_mut().train.form.cocoop.train.optim.epochs = 2000;
    click(&mut h, "Start training");
    wait_for(&mut h, "a few CoCoOp epochs", |a| {
        a.state.runs[0].epochs.len() >= 2
    });
    assert!(
        h.state().state.runs[0].label.contains("CoCoOp"),
        "{}",
        h.state().state.runs[0].label
    );
    super::app_ui::stop_resume_stop(&mut h);
    assert_eq!(h.state().state.runs[0].status, RunStatus::Stopped);

    // A short run to the end: its prompts join Compare.
    h.state_mut().train.form.cocoop.train.optim.epochs = 3;
    click(&mut h, "Start training");
    wait_for(&mut h, "the CoCoOp run", |a| {
        !a.state.is_training() && a.state.runs.len() == 2
    });
    wait_idle(&mut h);
    let run = &h.state().state.runs[1];
    assert_eq!(
        run.status,
        RunStatus::Finished,
        "{:?}",
        h.state().state.errors
    );
    assert_eq!(run.epochs.len(), 3);
    let (label, out) = (run.label.clone(), run.out.clone());
    let file = PromptFile::load(&out).unwrap();
    assert!(
        file.meta.cocoop && file.meta_net.is_some(),
        "the export holds the meta-net"
    );
    assert!(
        h.state().state.prompts.iter().any(|p| p.label == label),
        "the finished run's prompts are loaded"
    );

    click(&mut h, "Compare");
    click(&mut h, "Run zero-shot");
    wait_idle(&mut h);
    let report = h
        .state()
        .state
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("{:?}", h.state().state.errors));
    let column = report
        .methods
        .iter()
        .find(|m| m.name == label)
        .unwrap_or_else(|| panic!("no {label} column: {:?}", report.rejected));
    let cli: serde_json::Value =
        serde_json::from_str(&super::common::ok(&super::common::promptscope(&[
            "eval",
            "--model",
            &fx.model.display().to_string(),
            "--data",
            &fx.data.display().to_string(),
            "--prompts",
            &out.display().to_string(),
            "--format",
            "json",
        ])))
        .unwrap();
    assert_eq!(
        cli["eval"]["total"].as_u64(),
        Some(column.eval.total as u64)
    );
    assert_eq!(
        cli["eval"]["correct"].as_u64(),
        Some(column.eval.correct as u64),
        "Compare and `eval` score CoCoOp alike"
    );
    let per_image = |v: &serde_json::Value| v.to_string();
    assert_eq!(
        per_image(&cli["eval"]["confusion"]),
        per_image(&serde_json::to_value(&column.eval.confusion).unwrap())
    );
}

/// A tiny random CLIP and a four-class shapes set (4/2/3 images per class) in `dir`.
fn tiny_model_and_shapes(dir: &Path) -> (PathBuf, PathBuf) {
    let (model, data) = (dir.join("m"), dir.join("d"));
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5), &model).unwrap();
    promptscope::data::synth::write_dataset(&data, 4, 0, Some((4, 2, 3)), 3).unwrap();
    (model, data)
}

/// A sweep run elsewhere (here: by the CLI, task by task) opens in Compare's base-to-novel mode with no
/// model or dataset loaded: its table shows the numbers `sweep collect` prints; a file that is not a
/// manifest is an error naming it.
#[test]
fn a_sweeps_results_open_in_compare_as_sweep_collect_merges_them() {
    use super::common::{ok, promptscope};
    use promptscope::app::base_to_novel_panel::OPEN_SWEEP;
    use promptscope::app::compare::BASE_TO_NOVEL_MODE;
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = tiny_model_and_shapes(dir.path());
    let manifest = dir.path().join("t.jsonl");
    let m = manifest.to_str().unwrap();
    ok(&promptscope(&[
        "sweep",
        "plan",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--shots",
        "2",
        "--seeds",
        "1,2",
        "--methods",
        "coop,tip-adapter",
        "--epochs",
        "2",
        "--n-ctx",
        "4",
        "--no-cache",
        "--out",
        m,
    ]));
    for i in ["0", "1", "2", "3"] {
        ok(&promptscope(&[
            "sweep",
            "run",
            "--manifest",
            m,
            "--index",
            i,
        ]));
    }
    let cli: serde_json::Value = serde_json::from_str(
        ok(&promptscope(&[
            "sweep",
            "collect",
            "--manifest",
            m,
            "--format",
            "json",
        ]))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();

    let mut h = super::app_ui::harness(PromptscopeApp::new_headless());
    click(&mut h, "Compare");
    click(&mut h, BASE_TO_NOVEL_MODE);
    assert!(h.query_by_label(OPEN_SWEEP).is_some());
    h.state_mut().choose(PickTarget::Sweep, manifest.clone());
    wait_idle(&mut h);
    let (opened, collected) = h
        .state()
        .state
        .sweep
        .clone()
        .unwrap_or_else(|| panic!("{:?}", h.state().state.errors));
    assert_eq!(opened, manifest);
    let promptscope::run::sweep::Collected::BaseToNovel(tables) = collected else {
        panic!("a base-to-novel sweep")
    };
    assert_eq!(tables.len(), 1);
    assert_eq!(serde_json::to_value(&tables[0].report).unwrap(), cli);
    for row in cli["rows"].as_array().unwrap() {
        let cell = |k: &str| {
            format!(
                "{:.1} ± {:.1}",
                100.0 * row["mean"][k].as_f64().unwrap(),
                100.0 * row["std"][k].as_f64().unwrap()
            )
        };
        // (CoOp's name is also its checkbox in the form above.)
        assert!(
            labels_containing(&h, row["method"].as_str().unwrap()) >= 1,
            "{} row",
            row["method"]
        );
        assert!(
            labels_containing(&h, &cell("harmonic")) >= 1,
            "{}",
            cell("harmonic")
        );
    }
    h.check_accessibility();

    let not_a_manifest = dir.path().join("notes.jsonl");
    std::fs::write(&not_a_manifest, "hello\n").unwrap();
    h.state_mut().choose(PickTarget::Sweep, not_a_manifest);
    wait_idle(&mut h);
    let errors = &h.state().state.errors;
    assert!(
        errors.iter().any(|e| e.contains("Opening the sweep")
            && e.contains("notes.jsonl")
            && e.contains("line 1")),
        "{errors:?}"
    );
}

/// Compare's base-to-novel mode trains the ticked methods on the base half per seed and shows base,
/// novel and H as the CLI's `base-to-novel` reports them, number for number.
#[test]
fn compares_base_to_novel_mode_reports_what_the_cli_does() {
    use promptscope::app::base_to_novel_panel::{B2N_HEADING, RUN_BASE_TO_NOVEL};
    use promptscope::app::compare::BASE_TO_NOVEL_MODE;
    let dir = tempfile::tempdir().unwrap();
    let (model, data) = tiny_model_and_shapes(dir.path());
    let mut app = PromptscopeApp::new_headless()
        .with_startup(Some(model.display().to_string()), Some(data.clone()));
    app.cache_dir = None;
    let mut h = super::app_ui::harness(app);
    wait_idle(&mut h);
    click(&mut h, "Compare");
    click(&mut h, BASE_TO_NOVEL_MODE);
    {
        let form = &mut h.state_mut().compare.base_to_novel;
        form.methods = [true, false, false, true, false, false];
        form.shots = 2;
        form.seeds = 2;
    }
    h.step();
    click(&mut h, RUN_BASE_TO_NOVEL);
    assert!(
        h.state().state.jobs.evaluation().is_some(),
        "the run did not start"
    );
    wait_idle(&mut h);
    let report = h
        .state()
        .state
        .base_to_novel
        .clone()
        .unwrap_or_else(|| panic!("{:?}", h.state().state.errors));
    assert!(h.query_by_label(B2N_HEADING).is_some());
    let methods: Vec<&str> = report.rows.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods[1..], ["CoOp", "Tip-Adapter"]);
    assert_eq!(
        (report.base_classes.len(), report.novel_classes.len()),
        (2, 2)
    );
    // The table shows each row's H.
    for r in &report.rows {
        let cell = format!(
            "{:.1} ± {:.1}",
            100.0 * r.mean.harmonic,
            100.0 * r.std.harmonic
        );
        assert!(
            labels_containing(&h, &cell) >= 1,
            "{cell} not shown for {}",
            r.method
        );
    }
    let cli: serde_json::Value = serde_json::from_str(
        super::common::ok(&super::common::promptscope(&[
            "base-to-novel",
            "--model",
            &model.display().to_string(),
            "--data",
            &data.display().to_string(),
            "--methods",
            "coop,tip-adapter",
            "--shots",
            "2",
            "--seeds",
            "1,2",
            "--no-cache",
            "--format",
            "json",
        ]))
        .lines()
        .last()
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        cli["rows"],
        serde_json::to_value(&report.rows).unwrap(),
        "the app and the CLI agree"
    );
}
