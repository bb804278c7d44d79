//! MP-FGVC's two stages end to end on generated fine-grained sets with the tiny random-weight CLIP.
//!
//! Stage 2 trains VLFM on stage 1's frozen image features V and DaTP text features: a second, non-linear
//! read-out of the same V. It can only beat stage 1's two linear read-outs (image-to-text and the head)
//! where V holds class structure that a linear read-out misses. The dimorphic set (`synth_fine::
//! write_dimorphic_dataset`) is built that way: every plumage colour and every sex occurs in two species,
//! so a species is a combination (an exclusive-or) of colour and sex. There, with the tower frozen and
//! stage 1 trained to its plateau (200 epochs at lr 0.03; 400 epochs or lr 0.1
//! give the same), seeds 1, 2, 3 give stage 2
//! 97.1 / 95.1 / 96.9 % against stage 1's best 95.3 / 95.1 / 94.8 % (384 test images, 6 species); with
//! the CLI's shorter stage 1 (50 epochs at 0.003) stage 1 reaches 74 / 75 / 74 % and stage 2 94 to 96 %.
//!
//! On the crest set (`synth_fine::write_dataset`, species differ only in the colour of a small crest)
//! the class is linear in V once stage 1 trains vision blocks: stage 1 separates the training set
//! completely and stage 2 lands level with it (93.8 / 92.6 / 92.2 % against 94.1 / 94.5 / 94.5 %). That
//! test checks that both stages learn the detail through trained blocks, stay within 5 points, and that
//! the export with its vision blocks reads back to the same accuracies.
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Device;
use promptscope::clip::{synth, ClipConfig, HiddenAct, LoadedClip};
use promptscope::data::DatasetFolder;
use promptscope::error::Error;
use promptscope::export::mpfgvc_file::MpFgvcFile;
use promptscope::progress::Reporter;
use promptscope::prompt::datp::DatpConfig;
use promptscope::run::mpfgvc as pipeline;
use promptscope::train::config::MpFgvcRun;
use promptscope::train::coop::TrainEvent;
use promptscope::train::mpfgvc::{OptimizerKind, StageEvent};

use crate::common::mpfgvc_stage as stage;

struct Setup {
    dir: tempfile::TempDir,
    clip: LoadedClip,
    data: DatasetFolder,
}

fn setup(split: (usize, usize, usize)) -> Setup {
    setup_with(|d| promptscope::data::synth_fine::write_dataset(d, 4, split, 14, 0))
}

fn setup_dimorphic() -> Setup {
    setup_with(|d| promptscope::data::synth_fine::write_dimorphic_dataset(d, 6, (64, 16, 64), 0))
}

fn setup_with(write: impl FnOnce(&std::path::Path) -> promptscope::error::Result<()>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    synth::write_model_folder(&ClipConfig::tiny(HiddenAct::QuickGelu, 1e-5), &m).unwrap();
    let d = dir.path().join("d");
    write(&d).unwrap();
    let clip = promptscope::clip::load(m.to_str().unwrap(), &Device::Cpu).unwrap();
    let data = DatasetFolder::open(&d).unwrap();
    Setup { dir, clip, data }
}

fn run(train_blocks: usize, epochs1: usize, epochs2: usize) -> MpFgvcRun {
    seeded(train_blocks, epochs1, epochs2, 1)
}

fn seeded(train_blocks: usize, epochs1: usize, epochs2: usize, seed: u64) -> MpFgvcRun {
    MpFgvcRun {
        shots: None,
        seed,
        split_seed: 0,
        datp: DatpConfig {
            n_ctx: 4,
            super_category: "bird".into(),
            seed,
        },
        train_blocks,
        stage1: stage(0.003, epochs1),
        stage2: stage(0.003, epochs2),
    }
}

/// Stage 1 at its plateau, stage 2 with a learning rate that fits VLFM in 100 epochs.
fn dimorphic_run(seed: u64) -> MpFgvcRun {
    let mut run = seeded(0, 200, 100, seed);
    run.stage1 = stage(0.03, 200);
    run.stage2 = stage(0.01, 100);
    run
}

#[test]
fn stage_two_beats_stage_one_where_the_species_is_a_combination_of_features() {
    let s = setup_dimorphic();
    let run = dimorphic_run(1);
    let rd =
        pipeline::prepare(&s.clip, &s.data, &run, None, &promptscope::progress::Silent).unwrap();
    let mut last = [None, None];
    let mut on_event = |ev: StageEvent| {
        if let TrainEvent::Epoch(e) = ev.event {
            last[ev.stage as usize - 1] = Some(e);
        }
    };
    let o = pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        None,
        false,
        &promptscope::progress::Silent,
        &mut on_event,
    )
    .unwrap();
    let t = &o.metrics.test;
    let (stage1, stage2) = (t.stage1_i2t.max(t.stage1_head), t.stage2.unwrap());
    println!(
        "MP-FGVC on the dimorphic set ({} test images, 6 species): stage 1 image-to-text {:.3}, linear head {:.3}, stage 2 VLFM {:.3}",
        t.images, t.stage1_i2t, t.stage1_head, stage2
    );
    assert_eq!(t.images, 6 * 64);
    // The gap is capacity, not training time: stage 1's linear head cannot even fit the training set
    // (95 % after 200 epochs; 400 epochs, or lr 0.1, leave its test accuracy at 95.1 / 95.6 %), VLFM can.
    let [l1, l2] = last.map(|e| e.unwrap());
    assert!(
        l1.train_acc < 0.99 && l2.train_acc > l1.train_acc,
        "{l1:?} {l2:?}"
    );
    assert!(stage1 > 0.8, "stage 1 learns most of it linearly: {t:?}");
    assert!(
        stage2 > stage1,
        "stage 2 {stage2} did not beat stage 1 {stage1}"
    );
}

#[test]
fn both_stages_learn_the_crest_and_stage_two_stays_level() {
    let s = setup((64, 16, 64));
    let run = run(2, 50, 50);
    let cancel = AtomicBool::new(false);
    let progress = Reporter {
        cancel: &cancel,
        on_update: |_: &str, _, _| {},
    };
    let rd = pipeline::prepare(&s.clip, &s.data, &run, None, &progress).unwrap();
    let mut epochs = [vec![], vec![]];
    let mut steps = [0, 0];
    let mut on_event = |ev: StageEvent| match ev.event.clone() {
        TrainEvent::Step { steps: n, .. } => {
            assert_eq!(n, 256 / 32);
            steps[ev.stage as usize - 1] += 1;
        }
        TrainEvent::Epoch(e) => {
            // Stage 1 reports the image-to-text accuracy beside the head's; stage 2 has only VLFM's.
            assert_eq!(ev.extra("val_acc_i2t").is_some(), ev.stage == 1);
            assert!(e.val_acc.is_some());
            epochs[ev.stage as usize - 1].push(e);
        }
    };
    let out = s.dir.path().join("w.safetensors");
    let o = pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        Some(&out),
        false,
        &progress,
        &mut on_event,
    )
    .unwrap();
    assert_eq!((epochs[0].len(), epochs[1].len()), (50, 50));
    assert_eq!(steps, [50 * 8, 50 * 8]);
    assert!(epochs[0]
        .iter()
        .zip(0..)
        .all(|(e, i)| e.epoch == i && e.epochs == 50));
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
    assert!(
        t.stage1_i2t >= 0.8 && t.stage1_head >= 0.8 && stage2 >= 0.8,
        "{t:?}"
    );
    assert!(
        stage2 >= stage1 - 0.05,
        "stage 2 {stage2} fell behind stage 1 {stage1}"
    );

    // The export reproduces the run's accuracies when read back.
    let file = MpFgvcFile::load(&out).unwrap();
    assert_eq!(file.meta.stages, 2);
    assert_eq!(file.meta.class_names, s.data.class_names);
    assert_eq!(file.tensors["datp.ctx"].dims(), [4, 4, 32]);
    assert_eq!(
        file.tensors
            .keys()
            .filter(|k| k.starts_with("vision.layers."))
            .count(),
        2 * 16
    );
    assert!(
        file.tensors
            .keys()
            .all(|k| !k.starts_with("vision.layers.0.")),
        "block 0 was frozen"
    );
    let again =
        pipeline::evaluate_file(&s.clip, &s.data, &out, None, &promptscope::progress::Silent)
            .unwrap();
    assert_eq!(&again, t);
}

#[test]
fn a_run_cancelled_in_stage_two_leaves_the_stage_one_export() {
    let s = setup((4, 2, 3));
    let run = run(0, 2, 3);
    let cancel = AtomicBool::new(false);
    let progress = Reporter {
        cancel: &cancel,
        on_update: |_: &str, _, _| {},
    };
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
    let err = pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        Some(&out),
        false,
        &progress,
        &mut on_event,
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::Cancelled), "{err}");
    let file = MpFgvcFile::load(&out).unwrap();
    assert_eq!((file.meta.stages, file.meta.vlfm.is_none()), (1, true));
    let acc = pipeline::evaluate_file(&s.clip, &s.data, &out, None, &promptscope::progress::Silent)
        .unwrap();
    assert_eq!((acc.stage2, acc.images), (None, 12));
}

/// The numbers quoted at the top, for seeds 1 to 3 (a few minutes): `cargo test --test integration mpfgvc_two_stage
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn seeds_one_to_three() {
    let s = setup_dimorphic();
    for seed in 1..=3 {
        for run in [dimorphic_run(seed), {
            let mut r = dimorphic_run(seed);
            r.stage1 = stage(0.003, 50);
            r
        }] {
            let rd =
                pipeline::prepare(&s.clip, &s.data, &run, None, &promptscope::progress::Silent)
                    .unwrap();
            let o = pipeline::train(
                &s.clip,
                &s.data,
                &rd,
                &run,
                None,
                false,
                &promptscope::progress::Silent,
                &mut |_| {},
            )
            .unwrap();
            let t = &o.metrics.test;
            println!("dimorphic, seed {seed}, stage 1 {} epochs: stage 1 image-to-text {:.3}, linear head {:.3}; stage 2 VLFM {:.3}", run.stage1.optim.epochs, t.stage1_i2t, t.stage1_head, t.stage2.unwrap());
        }
    }
    let s = setup((64, 16, 64));
    for seed in 1..=3 {
        let run = seeded(2, 50, 50, seed);
        let rd = pipeline::prepare(&s.clip, &s.data, &run, None, &promptscope::progress::Silent)
            .unwrap();
        let o = pipeline::train(
            &s.clip,
            &s.data,
            &rd,
            &run,
            None,
            false,
            &promptscope::progress::Silent,
            &mut |_| {},
        )
        .unwrap();
        let t = &o.metrics.test;
        println!("crest, seed {seed}: stage 1 image-to-text {:.3}, linear head {:.3}; stage 2 VLFM {:.3}", t.stage1_i2t, t.stage1_head, t.stage2.unwrap());
    }
}

/// Stopped in stage 1, then in stage 2 (each mid-epoch), and resumed each time from the checkpoint: the
/// exported weights equal an uninterrupted run's bit for bit, with SGD in one stage and AdamW in the other
/// and a trained vision block, so every kind of optimiser state goes through the checkpoint.
#[test]
fn a_run_stopped_in_either_stage_and_resumed_ends_bit_for_bit_where_an_uninterrupted_one_does() {
    let s = setup((6, 2, 3));
    let mut run = run(1, 3, 3);
    run.stage1.optimizer = OptimizerKind::Sgd;
    (run.stage1.batch_size, run.stage2.batch_size) = (Some(4), Some(4));
    let rd =
        pipeline::prepare(&s.clip, &s.data, &run, None, &promptscope::progress::Silent).unwrap();
    let straight = s.dir.path().join("straight.safetensors");
    pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        Some(&straight),
        false,
        &promptscope::progress::Silent,
        &mut |_| {},
    )
    .unwrap();

    let out = s.dir.path().join("stopped.safetensors");
    // Stop at the second step of stage 1's epoch 2, then at the second step of stage 2's epoch 2.
    for (stops, (stage, epoch)) in [(1u8, 1usize), (2, 1)].into_iter().enumerate() {
        let cancel = AtomicBool::new(false);
        let progress = Reporter {
            cancel: &cancel,
            on_update: |_: &str, _, _| {},
        };
        let mut on_event = |ev: StageEvent| {
            if let promptscope::train::epoch_loop::TrainEvent::Step {
                epoch: e, step: 0, ..
            } = ev.event
            {
                if ev.stage == stage && e == epoch {
                    cancel.store(true, Ordering::Relaxed);
                }
            }
        };
        let err = pipeline::train(
            &s.clip,
            &s.data,
            &rd,
            &run,
            Some(&out),
            stops > 0,
            &progress,
            &mut on_event,
        )
        .err()
        .unwrap();
        assert!(matches!(err, Error::Cancelled), "{err}");
    }
    let ckpt = promptscope::train::coop::checkpoint_path(&out);
    assert!(ckpt.is_file());
    pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        Some(&out),
        true,
        &promptscope::progress::Silent,
        &mut |_| {},
    )
    .unwrap();
    assert!(!ckpt.exists(), "a finished run removes its checkpoint");
    let (a, b) = (
        MpFgvcFile::load(&straight).unwrap(),
        MpFgvcFile::load(&out).unwrap(),
    );
    let bits = |t: &candle_core::Tensor| {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(a.tensors.len(), b.tensors.len());
    for (name, t) in &a.tensors {
        assert_eq!(bits(t), bits(&b.tensors[name]), "{name}");
    }
    // A checkpoint of other settings is refused, not silently continued.
    let cancel = AtomicBool::new(false);
    let progress = Reporter {
        cancel: &cancel,
        on_update: |_: &str, _, _| {},
    };
    let mut after_one_epoch = |ev: StageEvent| {
        if matches!(
            ev.event,
            promptscope::train::epoch_loop::TrainEvent::Epoch(_)
        ) {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let err = pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &run,
        Some(&out),
        false,
        &progress,
        &mut after_one_epoch,
    );
    assert!(matches!(err, Err(Error::Cancelled)));
    let mut other = run.clone();
    other.stage2.optim.epochs = 4;
    let err = pipeline::train(
        &s.clip,
        &s.data,
        &rd,
        &other,
        Some(&out),
        true,
        &promptscope::progress::Silent,
        &mut |_| {},
    )
    .err()
    .unwrap();
    assert!(
        err.to_string().contains("was made with other settings")
            && err.to_string().contains("stopped.safetensors.ckpt"),
        "{err}"
    );
}
