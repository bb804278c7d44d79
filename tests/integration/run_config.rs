//! One run description for both front ends: the CLI's flags and the app's Train form build the same
//! `RunConfig` from the same defaults, and refuse the same bad settings with the same words.
#![cfg(feature = "gui")]

use crate::common;

use common::{error_line, ok, promptscope};
use promptscope::app::train_form::{TrainForm, TrainKind};
use promptscope::prompt::PromptMethodKind;
use promptscope::train::config::{Augment, RunConfig};
use promptscope::train::optim::default_epochs;

fn dry_run(args: &[&str]) -> RunConfig {
    let mut all = args.to_vec();
    all.extend([
        "--model",
        "m",
        "--data",
        "d",
        "--out",
        "o.safetensors",
        "--dry-run",
    ]);
    serde_json::from_str(&ok(&promptscope(&all))).expect("a run as JSON")
}

#[test]
fn the_cli_and_the_train_form_build_equal_runs_from_their_defaults() {
    let form = TrainForm::default();
    assert_eq!(dry_run(&["train"]), form.to_run().unwrap());
    let cocoop = TrainForm {
        kind: TrainKind::Prompts(PromptMethodKind::Cocoop),
        ..TrainForm::default()
    };
    assert_eq!(
        dry_run(&["train", "--cocoop"]),
        cocoop.to_run().unwrap(),
        "CoCoOp's recipe is the same in both"
    );

    let mut form = TrainForm {
        kind: TrainKind::Prompts(PromptMethodKind::Datp),
        ..TrainForm::default()
    };
    form.mpfgvc.datp.super_category = "bird".into();
    assert_eq!(
        dry_run(&["mpfgvc", "train", "--super-category", "bird"]),
        form.to_run().unwrap()
    );
}

#[test]
fn every_cli_option_is_a_field_the_form_edits() {
    let cli = dry_run(&[
        "train",
        "--shots",
        "4",
        "--seed",
        "3",
        "--split-seed",
        "7",
        "--csc",
        "--class-position",
        "middle",
        "--batch-size",
        "full",
        "--warmup-lr",
        "0.0001",
        "--warmup-epochs",
        "2",
        "--augment",
        "none",
        "--lr",
        "0.01",
        "--template",
        "a sketch of a {}.",
        "--kg-lambda",
        "8",
    ]);
    let mut form = TrainForm {
        kind: TrainKind::Prompts(PromptMethodKind::Kgcoop),
        ..TrainForm::default()
    };
    let r = &mut form.kgcoop;
    *r = r.clone().with_seed(3);
    r.shots = Some(4);
    r.train.optim.epochs = default_epochs(Some(4));
    r.split_seed = 7;
    r.coop.csc = true;
    r.coop.class_position = promptscope::prompt::coop::ClassPosition::Middle;
    r.train.batch_size = None;
    r.train.optim.warmup_lr = 1e-4;
    r.train.optim.warmup_epochs = 2;
    r.augment = Augment::None;
    r.train.optim.lr = 0.01;
    r.template = "a sketch of a {}.".into();
    assert_eq!(cli, form.to_run().unwrap());
}

#[test]
fn both_front_ends_refuse_a_bad_setting_with_the_same_words() {
    let cli = error_line(&promptscope(&[
        "train",
        "--model",
        "m",
        "--data",
        "d",
        "--out",
        "o",
        "--dry-run",
        "--n-ctx",
        "0",
    ]));
    let mut form = TrainForm::default();
    form.coop.coop.n_ctx = 0;
    let app = form.to_run().unwrap_err().to_string();
    assert!(cli.contains(&app), "CLI: {cli}; app: {app}");

    let cli = error_line(&promptscope(&[
        "mpfgvc",
        "train",
        "--model",
        "m",
        "--data",
        "d",
        "--out",
        "o",
        "--dry-run",
        "--super-category",
        "bird",
        "--epochs2",
        "0",
    ]));
    let mut form = TrainForm {
        kind: TrainKind::Prompts(PromptMethodKind::Datp),
        ..TrainForm::default()
    };
    form.mpfgvc.datp.super_category = "bird".into();
    form.mpfgvc.stage2.optim.epochs = 0;
    let app = form.to_run().unwrap_err().to_string();
    assert!(
        cli.contains(&app) && app.contains("stage 2"),
        "CLI: {cli}; app: {app}"
    );
}
