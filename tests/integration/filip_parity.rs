//! FILIP's pretraining loss against PyTorch (`scripts/make_filip_fixture.py`): the loss and the gradients
//! of named weights of the tiny CLIP, with all tokens and with FILIP's top-25 % selection (the CLIP loss
//! beside them); and a folder `promptscope pretrain` writes, read by transformers' `CLIPModel` with the same
//! features as ours.

use candle_core::{Device, Tensor};
use promptscope::train::optim::OptimConfig;
use promptscope::train::pairs::{PairBatch, PairSource};
use promptscope::train::pretrain::{
    PairTensors, PretrainConfig, PretrainLoss, Pretrainer, ShapeHeadInput, TrainableClip,
};

use crate::common::{fixtures, flat, model_dir, pattern_pixels, promptscope, within};

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("filip_reference.json"))
        .expect("filip_reference.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn ids(fx: &serde_json::Value) -> Vec<Vec<u32>> {
    fx["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// The fixture's tiny CLIP with every weight a variable, and its batch: the fixture's captions over
/// pattern pixels.
fn tiny_model_and_batch(fx: &serde_json::Value) -> (TrainableClip, PairTensors) {
    let dir = model_dir("tiny", fx);
    let model = TrainableClip::from_folder(dir.path(), &Device::Cpu).unwrap();
    let ids = ids(fx);
    let size = model.config.vision_config.image_size;
    let pixels = Tensor::from_vec(
        pattern_pixels(ids.len(), size),
        (ids.len(), 3, size, size),
        &Device::Cpu,
    )
    .unwrap();
    (model, PairTensors { pixels, ids })
}

fn config(loss: PretrainLoss, top_fraction: f64, batch_size: usize) -> PretrainConfig {
    PretrainConfig {
        loss,
        top_fraction,
        optim: OptimConfig::default(),
        batch_size,
        seed: 0,
        shape_labels: 0.0,
        shape_head: ShapeHeadInput::Hidden,
    }
}

/// Largest difference between `got` and `want` over `scale` (at least the largest |want|).
fn relative_diff(got: &[f32], want: &[f32], floor: f32) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(floor)
        .max(1e-12);
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    f64::from(diff / scale)
}

#[test]
fn filip_loss_and_weight_gradients_match_pytorch() {
    let fx = reference();
    let (model, data) = tiny_model_and_batch(&fx);
    let rows: Vec<usize> = (0..data.ids.len()).collect();
    let vars = model.named_vars();
    for case in fx["tiny"]["cases"].as_array().unwrap() {
        let loss: PretrainLoss = serde_json::from_value(case["loss"].clone()).unwrap();
        let fraction = case["top_fraction"].as_f64().unwrap();
        let config = config(loss, fraction, rows.len());
        let t = Pretrainer::new(&model, config, &data).unwrap();
        assert!(t.kernels_run(), "the tiny model trains on the CPU kernels");
        // The kernel path (what `pretrain` runs) against the same reference: the loss and the named
        // gradients; then candle's graph below.
        let (kernel_loss, _, kernel_grads) = t.gradients(&rows).unwrap();
        within(
            &format!("{loss:?} loss, top {fraction}: kernels' value"),
            (kernel_loss - case["value"].as_f64().unwrap()).abs(),
            1e-5,
        );
        for (name, want) in case["grads"].as_object().unwrap() {
            let i = vars.iter().position(|(n, _)| n == name).unwrap();
            let got: Vec<f32> = kernel_grads[i].flatten_all().unwrap().to_vec1().unwrap();
            within(
                &format!("{loss:?} loss, top {fraction}: kernels' gradient of {name} (relative)"),
                relative_diff(&got, &flat(want), 0.0),
                1e-4,
            );
        }
        let (value, _) = t.loss(&rows).unwrap();
        let ours = value.to_scalar::<f32>().unwrap();
        let want = case["value"].as_f64().unwrap();
        let what = format!("{loss:?} loss, top {fraction}");
        // Measured 0 .. 3.6e-7 on the AVX2+FMA kernels (the fixture's machine has no AVX-512): 28× margin.
        within(
            &format!("{what}: value"),
            (f64::from(ours) - want).abs(),
            1e-5,
        );
        let grads = value.backward().unwrap();
        for (name, want) in case["grads"].as_object().unwrap() {
            let var = &vars
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no variable {name}"))
                .1;
            let got: Vec<f32> = grads
                .get(var)
                .unwrap_or_else(|| panic!("no gradient for {name}"))
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            // Relative to the gradient's largest entry; measured up to 5.0e-6 on the AVX2+FMA kernels.
            within(
                &format!("{what}: gradient of {name} (relative)"),
                relative_diff(&got, &flat(want), 0.0),
                1e-4,
            );
        }
    }
}

/// A batch with extra captions no image belongs to (NegCLIP's hard negatives): each caption with its
/// words in reverse order, for the first three.
struct WithNegatives(PairTensors);

impl PairSource for WithNegatives {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, epoch: usize, rows: &[usize]) -> promptscope::Result<PairBatch> {
        let mut b = self.0.batch(epoch, rows)?;
        b.negatives = b
            .ids
            .iter()
            .take(3)
            .map(|ids| {
                let (first, rest) = ids.split_first().unwrap();
                let (last, words) = rest.split_last().unwrap();
                std::iter::once(*first)
                    .chain(words.iter().rev().copied())
                    .chain(std::iter::once(*last))
                    .collect()
            })
            .collect();
        Ok(b)
    }
}

/// A batch whose patches are labelled (as drawn scenes' are), for the dense shape loss: a fixed mix of
/// the 8 shapes and background.
struct WithPatchLabels(PairTensors, usize);

impl PairSource for WithPatchLabels {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn batch(&self, epoch: usize, rows: &[usize]) -> promptscope::Result<PairBatch> {
        let mut b = self.0.batch(epoch, rows)?;
        let n = rows.len() * self.1;
        b.patch_shapes = Some((0..n).map(|i| ((i * 7 + 3) % 11).min(8) as u32).collect());
        Ok(b)
    }
}

/// Every weight's gradient from the CPU kernels' hand-written backward against candle's autograd over
/// the same model and batch, both losses, all tokens and FILIP's top 25 %, without and with extra text
/// negatives, and with the dense shape loss (its head's gradients too).
#[test]
fn kernel_pretraining_gradients_equal_candles_for_every_weight() {
    let fx = reference();
    let (model, data) = tiny_model_and_batch(&fx);
    let rows: Vec<usize> = (0..data.ids.len()).collect();
    let (_, plain) = tiny_model_and_batch(&fx);
    let negatives = WithNegatives(plain);
    let grid = model.config.vision_config.grid();
    let labelled = WithPatchLabels(tiny_model_and_batch(&fx).1, grid * grid);
    use ShapeHeadInput::{BlockInput, Hidden, Projected};
    for (loss, fraction, data, head) in [
        (PretrainLoss::Filip, 1.0, &data as &dyn PairSource, Hidden),
        (PretrainLoss::Filip, 0.25, &data, Hidden),
        (PretrainLoss::Clip, 1.0, &data, Hidden),
        (PretrainLoss::Filip, 1.0, &negatives, Hidden),
        (PretrainLoss::Filip, 0.25, &negatives, Hidden),
        (PretrainLoss::Clip, 1.0, &negatives, Hidden),
        (PretrainLoss::Filip, 1.0, &labelled, Projected),
        (PretrainLoss::Clip, 1.0, &labelled, Projected),
        (PretrainLoss::Filip, 1.0, &labelled, Hidden),
        (PretrainLoss::Clip, 1.0, &labelled, Hidden),
        (PretrainLoss::Filip, 1.0, &labelled, BlockInput(1)),
        (PretrainLoss::Clip, 1.0, &labelled, BlockInput(1)),
        (PretrainLoss::Clip, 1.0, &labelled, BlockInput(0)),
    ] {
        let batch = data.batch(0, &rows).unwrap();
        let with = match (batch.negatives.is_empty(), batch.patch_shapes.is_some()) {
            (_, true) => format!(", with the shape loss on {head:?} tokens"),
            (false, _) => ", with negatives".to_string(),
            _ => String::new(),
        };
        let mut config = config(loss, fraction, rows.len());
        if batch.patch_shapes.is_some() {
            config.shape_labels = 0.7;
            config.shape_head = head;
        }
        let t = Pretrainer::new(&model, config, data).unwrap();
        // The head starts at zero (no gradient reaches the tower through it): start it elsewhere.
        for (name, var) in t
            .parameters()
            .iter()
            .filter(|(n, _)| n.starts_with("shape_head"))
        {
            let n = var.elem_count();
            let values: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 17) as f32 - 8.0) * 0.01)
                .collect();
            var.set(&Tensor::from_vec(values, var.shape(), &Device::Cpu).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let vars = t.parameters().to_vec();
        let (kernel_loss, kernel_right, kernel_grads) = t.gradients(&rows).unwrap();
        let (value, right) = t.loss(&rows).unwrap();
        assert_eq!(
            kernel_right, right,
            "{loss:?}{with}: images that picked their caption"
        );
        within(
            &format!("{loss:?}, top {fraction}{with}: loss"),
            (kernel_loss - f64::from(value.to_scalar::<f32>().unwrap())).abs(),
            1e-5,
        );
        let grads = value.backward().unwrap();
        assert_eq!(kernel_grads.len(), vars.len());
        let wants: Vec<Vec<f32>> = vars
            .iter()
            .map(|(_, var)| {
                grads
                    .get(var)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            })
            .collect();
        // A key bias's gradient is zero but for rounding (softmax ignores a shift shared by all keys):
        // relative to itself it is noise, so each weight is measured against at least 1 % of the
        // largest gradient of the model.
        let largest = wants.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        for (((name, _), got), want) in vars.iter().zip(&kernel_grads).zip(&wants) {
            let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
            within(
                &format!("{loss:?}, top {fraction}{with}: gradient of {name} (relative)"),
                relative_diff(&got, want, 0.01 * largest),
                1e-4,
            );
        }
    }
}

#[test]
fn transformers_reads_a_pretrained_folder_as_we_do() {
    let fx = reference();
    let p = &fx["pretrained"];
    let tmp = tempfile::tempdir().unwrap();
    // The fixture's own command, with our scratch paths for its data and output.
    let mut args: Vec<String> = p["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let pairs = tmp.path().join("pairs");
    let out = tmp.path().join("trained");
    let size = crate::common::preset("tiny")
        .vision_config
        .image_size
        .to_string();
    let synth = promptscope(&[
        "synth-scenes",
        "--out",
        pairs.to_str().unwrap(),
        "--count",
        "16",
        "--size",
        &size,
        "--seed",
        "9",
    ]);
    assert!(
        synth.status.success(),
        "{}",
        String::from_utf8_lossy(&synth.stderr)
    );
    for (flag, value) in [("--data", &pairs), ("--out", &out)] {
        let i = args.iter().position(|a| a == flag).unwrap();
        args[i + 1] = value.to_str().unwrap().to_string();
    }
    let run = promptscope(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let clip = promptscope::clip::load::load_dir(&out, "trained", &Device::Cpu).unwrap();
    let ids = ids(&fx);
    let s = clip.model().unwrap().config.vision_config.image_size;
    let pixels = Tensor::from_vec(
        pattern_pixels(ids.len(), s),
        (ids.len(), 3, s, s),
        &Device::Cpu,
    )
    .unwrap();
    let img: Vec<f32> = clip
        .model()
        .unwrap()
        .image_features(&pixels)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let txt: Vec<f32> = clip
        .model()
        .unwrap()
        .text
        .forward_ids(&ids, false)
        .unwrap()
        .pooled
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let d_img = crate::common::max_abs_diff(&img, &flat(&p["image_embeds"]));
    let d_txt = crate::common::max_abs_diff(&txt, &flat(&p["text_embeds"]));
    // Retrained here, so the kernels' rounding enters twice (training, then f16 storage), then read by
    // two implementations; measured 7.2e-7 on the AVX2+FMA kernels (the fixture's own machine).
    within(
        "pretrained folder: image features vs transformers",
        f64::from(d_img),
        1e-4,
    );
    within(
        "pretrained folder: text features vs transformers",
        f64::from(d_txt),
        1e-4,
    );
    assert!(
        (f64::from(clip.model().unwrap().logit_scale_log) - p["logit_scale"].as_f64().unwrap())
            .abs()
            < 1e-3
    );
}
