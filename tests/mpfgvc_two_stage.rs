//! MP-FGVC's two stages end to end on a generated fine-grained set (birds that differ only in the colour
//! of a small crest, `data::synth_fine`) with the tiny random-weight CLIP.
//!
//! What this can and cannot show with random weights. Stage 2 trains VLFM on the image features V of
//! stage 1's image path and on the DaTP text features, all frozen: it is a second read-out of the same
//! V, trained on the same training images. When stage 1 trains vision blocks it separates the training
//! set completely (its training loss ends near 0.005), so stage 2 has nothing left to learn from those
//! images. Measured with the settings below over seeds 1, 2, 3 (`seeds_one_to_three`): stage 2 VLFM
//! 93.8 / 92.6 / 92.2 % against the best of stage 1's two read-outs 94.1 / 94.5 / 94.5 %, i.e. level to
//! slightly below (1 to 6 of 256 test images); other learning rates, stage-2 weight decay up to 0.5,
//! shorter stage-1 runs, 1 or 3 trained blocks gave the same picture. With the tower frozen (n = 0) the
//! random features hold the crest only weakly (about 40 % for every read-out, chance 25 %) and the
//! difference is noise either way. So the test checks that both stages learn the detail and that stage 2
//! stays within 5 points of stage 1, and prints both numbers. "Stage 2 better than stage 1" needs
//! features with class structure that a linear read-out misses, which pretrained weights can have and
//! random ones, measured here, do not.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use promptscope::clip::{synth, ClipConfig, HiddenAct, LoadedClip};
use promptscope::data::DatasetFolder;
use promptscope::error::Error;
use promptscope::fusion::datp::DatpConfig;
use promptscope::fusion::export::MpFgvcFile;
use promptscope::fusion::pipeline::{self, MpFgvcRun};
use promptscope::fusion::two_stage::{OptimizerKind, StageConfig, StageEvent};
use promptscope::progress::Reporter;
use promptscope::train::coop::TrainEvent;
use promptscope::train::optim::OptimConfig;

struct Setup {
    dir: tempfile::TempDir,
    clip: LoadedClip,
    data: DatasetFolder,
}

fn setup(split: (usize, usize, usize)) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5), &m).unwrap();
    let d = dir.path().join("d");
    promptscope::data::synth_fine::write_dataset(&d, 4, split, 14, 0).unwrap();
    let clip = promptscope::clip::load(m.to_str().unwrap(), &Device::Cpu).unwrap();
    let data = DatasetFolder::open(&d).unwrap();
    Setup { dir, clip, data }
}

fn stage(lr: f64, epochs: usize) -> StageConfig {
    StageConfig {
        optim: OptimConfig { lr, momentum: 0.9, weight_decay: 5e-4, warmup_epochs: 1, warmup_lr: 1e-5, epochs },
        batch_size: Some(32),
        optimizer: OptimizerKind::AdamW,
    }
}

fn run(train_blocks: usize, epochs1: usize, epochs2: usize) -> MpFgvcRun {
    seeded(train_blocks, epochs1, epochs2, 1)
}

fn seeded(train_blocks: usize, epochs1: usize, epochs2: usize, seed: u64) -> MpFgvcRun {
    MpFgvcRun {
        shots: None,
        seed,
        split_seed: 0,
        datp: DatpConfig { n_ctx: 4, super_category: "bird".into(), seed },
        train_blocks,
        stage1: stage(0.003, epochs1),
        stage2: stage(0.003, epochs2),
    }
}

#[test]
fn both_stages_learn_the_crest_and_stage_two_stays_level() {
    let s = setup((64, 16, 64));
    let run = run(2, 50, 50);
    let cancel = AtomicBool::new(false);
    let progress = Reporter { cancel: &cancel, on_update: |_: &str, _, _| {} };
    let rd = pipeline::prepare(&s.clip, &s.data, &run, None, &progress).unwrap();
    let mut epochs = [vec![], vec![]];
    let mut steps = [0, 0];
    let mut on_event = |ev: StageEvent| match ev.event {
        TrainEvent::Step { steps: n, .. } => {
            assert_eq!(n, 256 / 32);
            steps[ev.stage as usize - 1] += 1;
        }
        TrainEvent::Epoch(e) => {
            // Stage 1 reports the image-to-text accuracy beside the head's; stage 2 has only VLFM's.
            assert_eq!(ev.val_acc_i2t.is_some(), ev.stage == 1);
            assert!(e.val_acc.is_some());
            epochs[ev.stage as usize - 1].push(e);
        }
    };
    let out = s.dir.path().join("w.safetensors");
    let o = pipeline::train(&s.clip, &s.data, &rd, &run, Some(&out), &progress, &mut on_event).unwrap();
    assert_eq!((epochs[0].len(), epochs[1].len()), (50, 50));
    assert_eq!(steps, [50 * 8, 50 * 8]);
    assert!(epochs[0].iter().zip(0..).all(|(e, i)| e.epoch == i && e.epochs == 50));
    assert!(epochs[0].last().unwrap().loss < 0.5 * epochs[0][0].loss);
    assert!(epochs[1].last().unwrap().loss < 0.5 * epochs[1][0].loss);

    let t = &o.metrics.test;
    let stage2 = t.stage2.unwrap();
    let stage1 = t.stage1_i2t.max(t.stage1_head);
    println!(
        "MP-FGVC on the generated crest set ({} test images, 4 classes): stage 1 image-to-text {:.3}, stage 1 linear head {:.3}, stage 2 VLFM {:.3}",
        t.images, t.stage1_i2t, t.stage1_head, stage2
    );
    assert_eq!(t.images, 256);
    assert!(t.stage1_i2t >= 0.8 && t.stage1_head >= 0.8 && stage2 >= 0.8, "{t:?}");
    assert!(stage2 >= stage1 - 0.05, "stage 2 {stage2} fell behind stage 1 {stage1}");

    // The export reproduces the run's accuracies when read back.
    let file = MpFgvcFile::load(&out).unwrap();
    assert_eq!(file.meta.stages, 2);
    assert_eq!(file.meta.class_names, s.data.class_names);
    assert_eq!(file.tensors["datp.ctx"].dims(), [4, 4, 32]);
    assert_eq!(file.tensors.keys().filter(|k| k.starts_with("vision.layers.")).count(), 2 * 16);
    assert!(file.tensors.keys().all(|k| !k.starts_with("vision.layers.0.")), "block 0 was frozen");
    let again = pipeline::evaluate_file(&s.clip, &s.data, &out, None, &promptscope::progress::Silent).unwrap();
    assert_eq!(&again, t);
}

#[test]
fn a_run_cancelled_in_stage_two_leaves_the_stage_one_export() {
    let s = setup((4, 2, 3));
    let run = run(0, 2, 3);
    let cancel = AtomicBool::new(false);
    let progress = Reporter { cancel: &cancel, on_update: |_: &str, _, _| {} };
    let cache = s.dir.path().join("cache");
    let rd = pipeline::prepare(&s.clip, &s.data, &run, Some(&cache), &progress).unwrap();
    // With the tower frozen, stage 1 works on cached features.
    assert!(std::fs::read_dir(&cache).unwrap().count() >= 1);
    let mut on_event = |ev: StageEvent| {
        if ev.stage == 2 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let out = s.dir.path().join("w.safetensors");
    let err = pipeline::train(&s.clip, &s.data, &rd, &run, Some(&out), &progress, &mut on_event).err().unwrap();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let file = MpFgvcFile::load(&out).unwrap();
    assert_eq!((file.meta.stages, file.meta.vlfm.is_none()), (1, true));
    let acc = pipeline::evaluate_file(&s.clip, &s.data, &out, None, &promptscope::progress::Silent).unwrap();
    assert_eq!((acc.stage2, acc.images), (None, 12));
}

/// The numbers quoted at the top, for seeds 1 to 3 (a few minutes): `cargo test --test mpfgvc_two_stage
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn seeds_one_to_three() {
    let s = setup((64, 16, 64));
    for seed in 1..=3 {
        let run = seeded(2, 50, 50, seed);
        let rd = pipeline::prepare(&s.clip, &s.data, &run, None, &promptscope::progress::Silent).unwrap();
        let o = pipeline::train(&s.clip, &s.data, &rd, &run, None, &promptscope::progress::Silent, &mut |_| {}).unwrap();
        let t = &o.metrics.test;
        println!("seed {seed}: stage 1 image-to-text {:.3}, linear head {:.3}; stage 2 VLFM {:.3}", t.stage1_i2t, t.stage1_head, t.stage2.unwrap());
    }
}
