//! The Train tab's forms: one per method (CoOp and its variants, MP-FGVC, feature adapters,
//! pretraining), and the rows they share (shots, seeds, the optimiser).

use super::*;

/// Tip-Adapter, Tip-Adapter-F or CLIP-Adapter, their shots, epochs, views and template.
pub(super) fn adapter_form(ui: &mut egui::Ui, r: &mut AdapterRun) {
    ui.horizontal_wrapped(|ui| {
        let current = r.method;
        let epochs = r.epochs();
        let choices = [
            AdapterMethod::TipAdapter,
            AdapterMethod::TipAdapterF { epochs: if matches!(current, AdapterMethod::TipAdapterF { .. }) { epochs } else { 20 } },
            AdapterMethod::ClipAdapter { epochs: if matches!(current, AdapterMethod::ClipAdapter { .. }) { epochs } else { 200 } },
        ];
        for m in choices {
            let on = std::mem::discriminant(&current) == std::mem::discriminant(&m);
            let help = match m {
                AdapterMethod::TipAdapter => "A cache of the K-shot features added to zero-shot; α, β searched on validation (its ImageNet script searches on test)",
                AdapterMethod::TipAdapterF { .. } => "Tip-Adapter with its cache keys trained (AdamW 1e-3, ε 1e-4), α, β searched again",
                AdapterMethod::ClipAdapter { .. } => "A bottleneck MLP on the image feature (reduction 4, residual 0.2), CoOp's SGD recipe",
            };
            if ui.selectable_label(on, m.name()).on_hover_text(help).clicked() {
                r.method = m;
            }
        }
    });
    shots_ui(ui, &mut r.shots, |_| {});
    egui::Grid::new("adapter_form_grid")
        .num_columns(2)
        .spacing([8.0, 6.0])
        .show(ui, |ui| {
            if let AdapterMethod::TipAdapterF { epochs } | AdapterMethod::ClipAdapter { epochs } =
                &mut r.method
            {
                let l = ui.label("Epochs");
                ui.add(DragValue::new(epochs).range(1..=10_000))
                    .labelled_by(l.id);
                ui.end_row();
            }
            let l = ui.label("Views");
            ui.add(DragValue::new(&mut r.views).range(1..=64))
                .labelled_by(l.id)
                .on_hover_text("Augmented views of each training image (Tip-Adapter's 10)");
            ui.end_row();
            let l = ui.label("Seed");
            ui.add(DragValue::new(&mut r.seed)).labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Split seed");
            ui.add(DragValue::new(&mut r.split_seed)).labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Template");
            ui.add(TextEdit::singleline(&mut r.template).desired_width(150.0))
                .labelled_by(l.id)
                .on_hover_text("The zero-shot part's hand-crafted template");
            ui.end_row();
        });
}

/// How shards are read: only shards look at it, a folder of pairs is read whole.
fn shards_form(ui: &mut egui::Ui, s: &mut crate::train::config::ShardReading) {
    use crate::data::webdataset::BadSamples;
    ui.horizontal(|ui| {
        let l = ui.label(SHUFFLE_BUFFER_FIELD);
        ui.add(DragValue::new(&mut s.shuffle_buffer).range(1..=1_000_000))
            .labelled_by(l.id)
            .on_hover_text("Shards only: each next sample is drawn at random from this many (1 reads each shuffled shard in order); memory holds them encoded");
        ui.label("broken samples:");
        ui.radio_value(&mut s.bad_samples, BadSamples::Skip, "skip and count")
            .on_hover_text("A sample without caption or image, a caption that is not UTF-8, an image that does not decode or a shard cut short is skipped; the run's summary counts them");
        ui.radio_value(&mut s.bad_samples, BadSamples::Fail, BAD_SAMPLES_FAIL)
            .on_hover_text("The run stops at the first broken sample, naming its shard and key");
    });
}

/// Pretraining: the pairs, where to start (random weights of the demo architecture, or the loaded model
/// to fine-tune), the loss and the optimiser.
pub(super) fn pretrain_form(ui: &mut egui::Ui, p: &mut PretrainRun, state: &AppState) {
    use crate::train::config::PretrainStart;
    use crate::train::pretrain::PretrainLoss;
    let mut streamed = p.scenes.is_some();
    if ui
        .checkbox(&mut streamed, SCENES_FIELD)
        .on_hover_text("Scenes drawn afresh every epoch beside the training step, never all in memory, with the levers that make colour insufficient (same-colour scenes, grey scenes, shape-first wording, minimal-pair twins, shape-swapped captions as negatives): the demo models' recipe")
        .changed()
    {
        if streamed {
            p.use_demo_recipe();
        } else {
            // A folder's pairs have no patch labels.
            (p.scenes, p.config.shape_labels) = (None, 0.0);
        }
    }
    if let Some(recipe) = &mut p.scenes {
        ui.horizontal(|ui| {
            ui.label("Scenes an epoch");
            ui.add(DragValue::new(&mut recipe.count).range(2..=10_000_000));
            ui.label("seed");
            ui.add(DragValue::new(&mut recipe.seed));
        });
        ui.horizontal(|ui| {
            let l = ui.label(SHAPE_LABELS_FIELD);
            ui.add(
                DragValue::new(&mut p.config.shape_labels)
                    .range(0.0..=20.0)
                    .speed(0.1),
            )
            .labelled_by(l.id)
            .on_hover_text("The weight of a dense shape loss beside the contrastive one: a head on every patch token learns which shape the generator drew there (not saved with the model). Shape is what a small model learns last from captions alone; 0 turns it off.");
        });
    } else {
        let l = ui.label(PAIRS_FIELD);
        let mut pairs = p.pairs.display().to_string();
        if ui
            .add(
                TextEdit::singleline(&mut pairs)
                    .hint_text("folder of NAME.jpg + NAME.txt, or shards/{00000..00009}.tar")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(l.id)
            .changed()
        {
            p.pairs = pairs.trim().into();
        }
        ui.weak("A folder of NAME.jpg + NAME.txt, or images beside captions.tsv / captions.jsonl (read into memory); or WebDataset shards (a brace list, a .tar, a folder of tars or of shard folders, as img2dataset writes them), streamed. `promptscope synth-scenes` writes captioned scenes either way.");
        shards_form(ui, &mut p.shards);
    }
    egui::Grid::new("pretrain_form")
        .num_columns(2)
        .spacing([12.0, 6.0])
        .show(ui, |ui| {
            ui.label("Start from");
            ui.vertical(|ui| {
                if ui
                    .radio(
                        matches!(p.start, PretrainStart::Preset(_)),
                        "random weights (demo architecture)",
                    )
                    .clicked()
                {
                    p.start = PretrainStart::Preset("scenes".into());
                }
                // Fine-tuning trains our CLIP's towers; another family is not one.
                let loaded = state
                    .model
                    .as_ref()
                    .filter(|m| m.clip.family().token_level())
                    .map(|m| m.clip.dir.clone());
                let fine_tune = ui.add_enabled(
                    loaded.is_some(),
                    egui::RadioButton::new(
                        matches!(p.start, PretrainStart::Init(_)),
                        "the loaded model (fine-tune)",
                    ),
                );
                if let (true, Some(dir)) = (fine_tune.clicked(), loaded) {
                    p.start = PretrainStart::Init(dir);
                }
            });
            ui.end_row();
            ui.label("Loss");
            ui.horizontal(|ui| {
                ui.radio_value(
                    &mut p.config.loss,
                    PretrainLoss::Filip,
                    "FILIP (token-wise)",
                );
                ui.radio_value(&mut p.config.loss, PretrainLoss::Clip, "CLIP (pooled)");
            });
            ui.end_row();
            ui.label("Token fraction");
            ui.add(
                DragValue::new(&mut p.config.top_fraction)
                    .range(0.05..=1.0)
                    .speed(0.01),
            )
            .on_hover_text("FILIP's token selection: 0.25 keeps each side's top quarter");
            ui.end_row();
            let l = ui.label("Epochs");
            ui.add(DragValue::new(&mut p.config.optim.epochs).range(1..=100_000))
                .labelled_by(l.id);
            ui.end_row();
            let l = ui.label("Batch size");
            ui.add(DragValue::new(&mut p.config.batch_size).range(2..=4096))
                .labelled_by(l.id);
            ui.end_row();
            ui.label("Learning rate");
            ui.add(
                DragValue::new(&mut p.config.optim.lr)
                    .speed(1e-5)
                    .range(1e-7..=1.0)
                    .max_decimals(6),
            );
            ui.end_row();
            ui.label("Weight decay");
            ui.add(
                DragValue::new(&mut p.config.optim.weight_decay)
                    .speed(1e-3)
                    .range(0.0..=1.0),
            );
            ui.end_row();
            ui.label("Seed");
            ui.add(DragValue::new(&mut p.config.seed));
            ui.end_row();
            ui.label("Storage");
            ui.checkbox(&mut p.fp16, "f16 weights (half the size)");
            ui.end_row();
        });
    // The warm-up starts at a tenth of the rate, as the CLI's `pretrain` does.
    p.config.optim.warmup_lr = p.config.optim.lr / 10.0;
}

/// Shots per class, shared by both methods; `on_change` sees the new choice (CoOp resets its epochs).
pub(super) fn shots_ui(
    ui: &mut egui::Ui,
    shots: &mut Option<usize>,
    mut on_change: impl FnMut(Option<usize>),
) {
    ui.label("Shots per class");
    ui.horizontal_wrapped(|ui| {
        for k in SHOT_CHOICES {
            let label = k.map_or("all".to_string(), |k| format!("{k}-shot"));
            if ui.selectable_value(shots, k, label).clicked() {
                on_change(k);
            }
        }
    });
}

/// An optional number with a checkbox for its `None` meaning (batch size: "full").
pub(super) fn optional_count(
    ui: &mut egui::Ui,
    label: egui::Id,
    value: &mut Option<usize>,
    none_label: &str,
    default: usize,
) {
    ui.horizontal(|ui| {
        let mut none = value.is_none();
        if ui.checkbox(&mut none, none_label).changed() {
            *value = if none { None } else { Some(default) };
        }
        if let Some(v) = value {
            ui.add(DragValue::new(v).range(1..=4096)).labelled_by(label);
        }
    });
}

pub(super) fn seed_rows(ui: &mut egui::Ui, seed: &mut u64, split_seed: &mut u64) -> bool {
    let l = ui.label("Seed");
    let changed = ui
        .add(DragValue::new(seed).range(0..=u32::MAX as u64))
        .labelled_by(l.id)
        .on_hover_text("Shots, initialisation and batch order")
        .changed();
    ui.end_row();
    let l = ui.label("Split seed");
    ui.add(DragValue::new(split_seed).range(0..=u32::MAX as u64))
        .labelled_by(l.id)
        .on_hover_text("The train/val/test split derived for folders without split sub-folders");
    ui.end_row();
    changed
}

pub(super) fn optim_rows(ui: &mut egui::Ui, o: &mut OptimConfig, momentum: bool) {
    let l = ui.label("Learning rate");
    ui.add(
        DragValue::new(&mut o.lr)
            .range(1e-7..=10.0)
            .speed(0.0005)
            .max_decimals(6),
    )
    .labelled_by(l.id);
    ui.end_row();
    if momentum {
        let l = ui.label("Momentum");
        ui.add(
            DragValue::new(&mut o.momentum)
                .range(0.0..=0.999)
                .speed(0.01),
        )
        .labelled_by(l.id);
        ui.end_row();
    }
    let l = ui.label("Weight decay");
    ui.add(
        DragValue::new(&mut o.weight_decay)
            .range(0.0..=1.0)
            .speed(0.0001)
            .max_decimals(5),
    )
    .labelled_by(l.id);
    ui.end_row();
    let l = ui.label("Warm-up");
    ui.horizontal(|ui| {
        ui.add(
            DragValue::new(&mut o.warmup_epochs)
                .range(0..=100)
                .suffix(" epochs at"),
        )
        .labelled_by(l.id);
        ui.add(
            DragValue::new(&mut o.warmup_lr)
                .range(0.0..=10.0)
                .speed(0.00001)
                .max_decimals(7),
        )
        .labelled_by(l.id);
    });
    ui.end_row();
}

/// The form of a CoOp-family run: CoOp's; KgCoOp's adds its λ; CoCoOp's has one unified context before
/// the class name and its own epochs.
pub(super) fn coop_form(ui: &mut egui::Ui, r: &mut CoopRun) {
    let cocoop = r.variant == CoopVariant::Cocoop;
    if cocoop {
        ui.weak(
            "A meta-net (image width, a 16th of it, then text width) adds π(x) to every context token, so each image gets its own \
             prompts. Each step runs the text tower once per image: slower and hungrier than CoOp (batch 1 by default). \
             The export holds the meta-net.",
        );
    }
    let epochs = &mut r.train.optim.epochs;
    shots_ui(ui, &mut r.shots, |k| {
        if !cocoop {
            *epochs = default_epochs(k);
        }
    });
    egui::Grid::new("train_form_grid").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        if !cocoop {
            ui.label("Context");
            ui.horizontal(|ui| {
                ui.radio_value(&mut r.coop.csc, false, "unified");
                ui.radio_value(&mut r.coop.csc, true, "class-specific");
            });
            ui.end_row();
            ui.label("Class token");
            ui.horizontal(|ui| {
                for p in [ClassPosition::End, ClassPosition::Middle, ClassPosition::Front] {
                    ui.radio_value(&mut r.coop.class_position, p, format!("{p:?}").to_lowercase());
                }
            });
            ui.end_row();
        }
        let l = ui.label("Init phrase");
        let mut init = r.coop.ctx_init.clone().unwrap_or_default();
        let edit = ui.add(TextEdit::singleline(&mut init).hint_text("random").desired_width(150.0)).labelled_by(l.id);
        if edit.on_hover_text("Initialise the context from a phrase, e.g. \"a photo of a\"; M is then its length.").changed() {
            r.coop.ctx_init = (!init.trim().is_empty()).then(|| init.trim().to_string());
        }
        ui.end_row();
        let l = ui.label("Context tokens M");
        ui.add_enabled(r.coop.ctx_init.is_none(), DragValue::new(&mut r.coop.n_ctx).range(0..=64)).labelled_by(l.id);
        ui.end_row();
        let l = ui.label("Epochs");
        ui.horizontal(|ui| {
            ui.add(DragValue::new(&mut r.train.optim.epochs).range(0..=2000)).labelled_by(l.id);
            if cocoop {
                if ui.small_button("CoCoOp's").on_hover_text("10").clicked() {
                    r.train.optim.epochs = CoopRun::cocoop_recipe().train.optim.epochs;
                }
            } else if ui.small_button("CoOp's").on_hover_text("50 for 1 shot, 100 for 2–4, 200 for 8 or more").clicked() {
                r.train.optim.epochs = default_epochs(r.shots);
            }
        });
        ui.end_row();
        optim_rows(ui, &mut r.train.optim, true);
        let l = ui.label("Batch size");
        optional_count(ui, l.id, &mut r.train.batch_size, "full", 32);
        ui.end_row();
        let l = ui.label("Augment");
        ui.horizontal(|ui| {
            let mut on = r.augment == Augment::CropFlip;
            if ui.checkbox(&mut on, "crop + flip").changed() {
                r.augment = if on { Augment::CropFlip } else { Augment::None };
            }
            ui.add_enabled(on, DragValue::new(&mut r.views).range(1..=64).suffix(" views")).labelled_by(l.id);
        });
        ui.end_row();
        let mut seed = r.seed;
        if seed_rows(ui, &mut seed, &mut r.split_seed) {
            *r = r.clone().with_seed(seed);
        }
        let l = ui.label("Baseline");
        ui.add(TextEdit::singleline(&mut r.template).desired_width(150.0)).labelled_by(l.id)
            .on_hover_text("The hand-crafted template the learned context is compared with (and KgCoOp's anchor)");
        ui.end_row();
        if let CoopVariant::Kgcoop { lambda } = &mut r.variant {
            let l = ui.label(KG_FIELD);
            ui.horizontal(|ui| {
                ui.add(DragValue::new(lambda).range(0.1..=100.0).speed(0.1)).labelled_by(l.id).on_hover_text(
                    "Pulls each learned class weight towards the baseline template's by λ·(1 − mean cos), keeping what CLIP \
                     knows about classes it was not trained on.",
                );
                if ui.small_button("KgCoOp's").on_hover_text(format!("λ = {}", CoopVariant::KG_LAMBDA)).clicked() {
                    *lambda = CoopVariant::KG_LAMBDA;
                }
            });
            ui.end_row();
        }
    });
}

pub(super) fn mpfgvc_form(ui: &mut egui::Ui, r: &mut MpFgvcRun) {
    shots_ui(ui, &mut r.shots, |_| {});
    egui::Grid::new("mpfgvc_form_grid").num_columns(2).spacing([8.0, 6.0]).show(ui, |ui| {
        let l = ui.label("Super-category");
        ui.add(TextEdit::singleline(&mut r.datp.super_category).hint_text("bird, dog, food…").desired_width(150.0)).labelled_by(l.id)
            .on_hover_text("The word every DaTP prompt ends with; the sub-category names are never used");
        ui.end_row();
        ui.label("DaTP tokens J");
        ui.add(DragValue::new(&mut r.datp.n_ctx).range(0..=64));
        ui.end_row();
        ui.label("Trained blocks");
        ui.add(DragValue::new(&mut r.train_blocks).range(0..=48))
            .on_hover_text("Vision blocks trained in stage 1, from the last; 0 keeps the tower frozen (cached features)");
        ui.end_row();
        for (n, stage) in [(1, &mut r.stage1), (2, &mut r.stage2)] {
            ui.strong(format!("Stage {n}"));
            ui.label(if n == 1 { "DaTP tokens, head, blocks: L_v + L_i2t" } else { "VLFM on cached embeddings" });
            ui.end_row();
            let l = ui.label("Epochs");
            ui.add(DragValue::new(&mut stage.optim.epochs).range(0..=2000)).labelled_by(l.id);
            ui.end_row();
            ui.label("Optimiser");
            ui.horizontal(|ui| {
                ui.radio_value(&mut stage.optimizer, OptimizerKind::AdamW, "AdamW");
                ui.radio_value(&mut stage.optimizer, OptimizerKind::Sgd, "SGD");
            });
            ui.end_row();
            let sgd = stage.optimizer == OptimizerKind::Sgd;
            optim_rows(ui, &mut stage.optim, sgd);
            let l = ui.label("Batch size");
            optional_count(ui, l.id, &mut stage.batch_size, "full", 32);
            ui.end_row();
        }
        let mut seed = r.seed;
        if seed_rows(ui, &mut seed, &mut r.split_seed) {
            r.seed = seed;
            r.datp.seed = seed;
        }
    });
}
