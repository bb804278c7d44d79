//! Each seed's headline claim, on the two shipped demo models (`assets/models/scenes-{filip,clip}`,
//! pretrained by `scripts/make_demo_models.sh`: same architecture, data, steps and seed, only the loss
//! differs), on generated scenes neither model saw.

use std::path::PathBuf;

use candle_core::Device;
use promptscope::align::classify::{compare_accuracy, ClassPrompts, CompareConfig};
use promptscope::align::pointing::pointing_game;
use promptscope::align::shape::{same_colour_pointing, same_colour_scenes, shape_only_zero_shot};
use promptscope::align::AlignMode;
use promptscope::clip::LoadedClip;
use promptscope::data::scene_sets::{is_held_out, write_scene_set, SceneSet};
use promptscope::data::scenes::{generate, SceneConfig};
use promptscope::data::DatasetFolder;
use promptscope::progress::Silent;

/// A shipped demo model, or a candidate's of the same name in `PROMPTSCOPE_DEMO_MODELS` (the folder
/// `scripts/shape_pilot.sh` writes), so the claims can be checked on candidates before they ship.
fn demo(name: &str) -> LoadedClip {
    let root = std::env::var_os("PROMPTSCOPE_DEMO_MODELS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/models"),
        PathBuf::from,
    );
    let dir = root.join(name);
    promptscope::clip::load::load_dir(&dir, name, &Device::Cpu)
        .unwrap_or_else(|e| panic!("the shipped demo model {name}: {e}"))
}

/// FILIP's visual claim: the object word's map peaks on the object after FILIP's loss, not after CLIP's.
#[test]
fn filip_demo_model_points_at_the_named_object() {
    let (filip, clip) = (demo("scenes-filip"), demo("scenes-clip"));
    let cfg = SceneConfig {
        size: filip.image_size() as u32,
        ..SceneConfig::default()
    };
    let scenes: Vec<_> = (0..200).map(|i| generate(1000, i, &cfg).unwrap()).collect();
    let filip = pointing_game(&filip, &scenes, AlignMode::Token, &Silent).unwrap();
    let clip = pointing_game(&clip, &scenes, AlignMode::Token, &Silent).unwrap();
    println!("pointing (token mode) FILIP {filip:?}\nCLIP {clip:?}");
    assert!(filip.objects >= 200);
    assert!(
        filip.point_rate >= 0.80,
        "FILIP's map peaks on the object for {:.1}% of objects, under the 80% FILIP's claim asks",
        100.0 * filip.point_rate
    );
    assert!(filip.point_rate >= 5.0 * filip.point_chance);
    // CLIP's loss gives no such maps: far fewer hits under either rule, less of the map on the object.
    assert!(
        filip.point_rate >= clip.point_rate + 0.25,
        "FILIP {:.3} vs CLIP {:.3}",
        filip.point_rate,
        clip.point_rate
    );
    assert!(
        filip.hit_rate >= clip.hit_rate + 0.25,
        "strict rule: FILIP {:.3} vs CLIP {:.3}",
        filip.hit_rate,
        clip.hit_rate
    );
    assert!(filip.mean_mass_inside > 2.0 * clip.mean_mass_inside);
}

/// The demo models see shape, not only colour: in scenes of two or three objects of one colour (so
/// colour cannot tell them apart), the map of the shape word in "a photo of a {colour} {shape}." is
/// higher on the named object than on every other one.
#[test]
#[ignore = "issue 26: the shipped demo models see colour, not shape, yet (scripts/shape_pilot.sh trains the candidates; run these with --ignored on them)"]
fn filip_demo_model_singles_out_the_named_shape_among_objects_of_one_colour() {
    let (filip, clip) = (demo("scenes-filip"), demo("scenes-clip"));
    let scenes = same_colour_scenes(3000, 150, filip.image_size() as u32).unwrap();
    let f = same_colour_pointing(&filip, &scenes, AlignMode::Token, &Silent).unwrap();
    let c = same_colour_pointing(&clip, &scenes, AlignMode::Token, &Silent).unwrap();
    println!("same-colour pointing: FILIP {f:?}\nCLIP {c:?}");
    assert!(f.pick_chance <= 0.5);
    assert!(
        f.pick_rate >= 0.85,
        "scenes-filip singles out the named shape in {:.1}% of {} objects (chance {:.1}%)",
        100.0 * f.pick_rate,
        f.objects,
        100.0 * f.pick_chance
    );
}

/// Zero-shot over classes that differ only in shape (8 shapes, mixed colours): colour alone scores 1/8.
#[test]
#[ignore = "issue 26: the shipped demo models see colour, not shape, yet (scripts/shape_pilot.sh trains the candidates; run these with --ignored on them)"]
fn filip_demo_model_tells_shapes_apart_zero_shot() {
    for name in ["scenes-filip", "scenes-clip"] {
        let r = shape_only_zero_shot(&demo(name), 25, 3003, &Silent).unwrap();
        println!("{name}: shape-only zero-shot {r:?}");
        if name == "scenes-filip" {
            assert!(
                r.global.max(r.tokenwise) >= 0.5,
                "{name}: global {:.3}, token-wise {:.3} (chance {:.3})",
                r.global,
                r.tokenwise,
                r.chance
            );
        }
    }
}

/// FILIP's zero-shot claim, composition included: colour–shape pairs no pretraining scene held.
#[test]
fn demo_models_classify_unseen_colour_shape_pairs_zero_shot() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("objects");
    let size = demo("scenes-filip").image_size() as u32;
    write_scene_set(&root, SceneSet::Objects, (0, 0, 6), size, 77).unwrap();
    let ds = DatasetFolder::open(&root).unwrap();
    let held: Vec<bool> = ds.class_dirs.iter().map(|d| is_held_out(d)).collect();
    let chance = 1.0 / ds.num_classes() as f64;
    for name in ["scenes-filip", "scenes-clip"] {
        let clip = demo(name);
        let prompts = ClassPrompts::Template {
            template: "a {}.",
            class_names: &ds.class_names,
        };
        let r = compare_accuracy(
            &clip,
            ds.eval_samples(),
            &prompts,
            &CompareConfig::default(),
            &Silent,
        )
        .unwrap();
        let (g_held, t_held, _) = r.mean_over(|c| held[c]);
        println!("{name}: global {:.3} token-wise {:.3} SsVP {:?}; held-out pairs: global {g_held:.3} token-wise {t_held:.3}; chance {chance:.3}", r.global_accuracy, r.tokenwise_accuracy, r.ssvp_accuracy);
        assert!(
            r.global_accuracy >= 3.0 * chance,
            "{name}: {:.3}",
            r.global_accuracy
        );
        assert!(
            g_held.max(t_held) >= 3.0 * chance,
            "{name} on held-out pairs: global {g_held:.3}, token-wise {t_held:.3}"
        );
    }
}

/// The hand-crafted prompts a user would try first; the CoOp claim is against the best of them.
const TEMPLATES: [&str; 5] = [
    "a {}.",
    "a {} shape.",
    "a photo of a {} shape.",
    "a photo of a {} object.",
    "a {} object in warm light.",
];

/// CoOp's claim: under a rendering shift from pretraining (a warm colour cast over the scenes, classes
/// by colour) 16-shot learned context beats the best hand-crafted template by at least 10 points.
#[test]
fn coop_beats_the_best_template_under_a_colour_cast() {
    coop_beats_the_best_template(SceneSet::WarmLight, &TEMPLATES);
}

/// The same under a shift of drawing, not of colour: outlines instead of filled shapes, a class per
/// shape (a model that saw only colour cannot learn anything here).
#[test]
#[ignore = "issue 26: the shipped demo models see colour, not shape, yet (scripts/shape_pilot.sh trains the candidates; run these with --ignored on them)"]
fn coop_beats_the_best_template_on_outline_drawings() {
    coop_beats_the_best_template(
        SceneSet::Outlines,
        &[
            "a {}.",
            "a {} shape.",
            "a photo of a {}.",
            "an outline of a {}.",
            "a drawing of a {} shape.",
        ],
    );
}

fn coop_beats_the_best_template(set: SceneSet, templates: &[&str]) {
    use promptscope::eval::zeroshot::class_weights;
    use promptscope::run::coop::{evaluate_weights, prepare, train};
    use promptscope::train::config::{Augment, CoopRun};
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("set");
    let clip = demo("scenes-filip");
    write_scene_set(&root, set, (16, 4, 25), clip.image_size() as u32, 0).unwrap();
    let ds = DatasetFolder::open(&root).unwrap();
    // CoOp's recipe for 16 shots on cached features, without the augmented views (a fifth of the time).
    let run = CoopRun {
        augment: Augment::None,
        ..CoopRun::default()
    };
    let rd = prepare(&clip, &ds, &run, None, &Silent).unwrap();
    let out = train(&clip, &ds, &rd, &run, None, false, &Silent, &mut |_| {}).unwrap();
    let best = templates
        .iter()
        .map(|t| {
            let w = class_weights(&clip, &ds.class_names, &[t.to_string()], &Silent).unwrap();
            (
                evaluate_weights(&clip, &w, &rd.test, &rd.split.test, &ds.class_names)
                    .unwrap()
                    .accuracy,
                *t,
            )
        })
        .fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a });
    println!(
        "{set:?}, 16 shots: CoOp {:.3}, best template {:?} {:.3}",
        out.metrics.test_acc, best.1, best.0
    );
    assert!(
        out.metrics.test_acc >= best.0 + 0.10,
        "{set:?}: CoOp {:.3} vs '{}' {:.3}",
        out.metrics.test_acc,
        best.1,
        best.0
    );
}
