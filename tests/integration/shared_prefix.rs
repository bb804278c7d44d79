//! The fast text paths (a shared prefix run once; on the CPU, `clip::kernels::cpu` with their hand-written
//! backward) against the plain one (whole prompts through candle's ops and autograd): features and
//! context gradients must agree (relative 1e-5) for every CoOp variant and a hand-crafted template prefix.

use crate::common;

use candle_core::{Tensor, Var};
use common::*;
use promptscope::prompt::coop::{ClassPosition, CoopConfig, PromptLearner};

/// Kernels vs candle's ops, relative (L2): worst 7.4e-7 on the AVX-512 kernels, 6.8e-7 on AVX2+FMA (13× margin).
const BOUND: f64 = 1e-5;

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    let num: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum::<f64>().sqrt();
    num / den
}

/// Features and d(loss)/d(ctx) for a fixed loss, through the chosen path.
fn features_and_grad(
    learner: &PromptLearner,
    clip: &promptscope::clip::LoadedClip,
) -> (Tensor, Tensor) {
    let f = learner.text_features(&clip.model().unwrap().text).unwrap();
    let probe = Tensor::from_vec(pattern_embeds(f.elem_count()), f.dims(), &clip.device).unwrap();
    let g = (&f * &probe)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let grad = g
        .get(learner.ctx.as_tensor())
        .expect("gradient reaches the context")
        .clone();
    (f.detach(), grad)
}

fn check(position: ClassPosition, ctx_init: Option<&str>, csc: bool) {
    check_model("tiny", position, ctx_init, csc);
}

fn check_model(model: &str, position: ClassPosition, ctx_init: Option<&str>, csc: bool) {
    // Names of 1 to 6 tokens, so continuations end at different positions.
    let names: Vec<String> = [
        "dog",
        "golden retriever",
        "st. bernard!",
        "a very long class name with words",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    check_names(model, &names, position, ctx_init, csc);
}

fn check_names(
    model: &str,
    names: &[String],
    position: ClassPosition,
    ctx_init: Option<&str>,
    csc: bool,
) {
    let r = reference();
    let dir = model_dir(model, &r);
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let cfg = CoopConfig {
        n_ctx: 6,
        ctx_init: ctx_init.map(str::to_string),
        csc,
        class_position: position,
        seed: 3,
    };
    let mut learner = PromptLearner::new(
        &clip.model().unwrap().text,
        clip.tokenizer().unwrap(),
        names,
        &cfg,
    )
    .unwrap();
    let (f_shared, g_shared) = features_and_grad(&learner, &clip);
    learner.reference_path = true;
    let (f_plain, g_plain) = features_and_grad(&learner, &clip);
    let (rf, rg) = (rel(&f_shared, &f_plain), rel(&g_shared, &g_plain));
    within(
        &format!("{model} {position:?} csc={csc}: kernel vs candle features (relative)"),
        rf,
        BOUND,
    );
    within(
        &format!("{model} {position:?} csc={csc}: kernel vs candle context gradient (relative)"),
        rg,
        BOUND,
    );
}

/// Enough classes that the attention runs in several chunks of sequences (each with its share of the
/// prefix keys' gradients, summed after), on every row and on the last block's end-of-text rows.
#[test]
fn many_classes_cut_into_attention_chunks_are_exact() {
    let names: Vec<String> = (0..90)
        .map(|i| {
            ["dog", "golden retriever", "a very long class name"][i % 3].to_string()
                + &" x".repeat(i % 4)
        })
        .collect();
    check_names("tiny", &names, ClassPosition::End, None, false);
}

#[test]
fn unified_end_shared_prefix_is_exact() {
    check(ClassPosition::End, None, false);
}

#[test]
fn class_specific_and_front_contexts_through_the_fast_path_are_exact() {
    check(ClassPosition::End, None, true);
    check(ClassPosition::Front, None, false);
    check(ClassPosition::Middle, None, true);
}

#[test]
fn exact_with_erf_gelu_too() {
    check_model("tiny-gelu", ClassPosition::End, None, false);
}

#[test]
fn unified_middle_shared_prefix_is_exact() {
    check(ClassPosition::Middle, Some("a photo of a nice"), false);
}

#[test]
fn template_prefix_is_exact() {
    let r = reference();
    let dir = model_dir("tiny", &r);
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &device()).unwrap();
    let texts: Vec<Vec<u32>> = ["dog", "golden retriever", "st. bernard", "sea lion"]
        .iter()
        .map(|n| {
            clip.tokenizer()
                .unwrap()
                .encode(&format!("a photo of a {n}, a type of pet."))
                .unwrap()
        })
        .collect();
    assert_eq!(promptscope::clip::text::common_prefix_len(&texts), 5);
    let shared = clip.model().unwrap().text.forward_ids_auto(&texts).unwrap();
    let plain = clip
        .model()
        .unwrap()
        .text
        .forward_ids(&texts, false)
        .unwrap()
        .pooled;
    let rf = rel(&shared, &plain);
    within(
        "template prefix: kernel vs candle features (relative)",
        rf,
        BOUND,
    );
    // Gradients through a template prefix's embeddings as well (a learned prompt could sit there).
    let emb = Var::from_tensor(
        &clip
            .model()
            .unwrap()
            .text
            .embed_ids(&texts[0][..5])
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    )
    .unwrap();
    let rests: Vec<Vec<u32>> = texts.iter().map(|t| t[5..].to_vec()).collect();
    let (rest, _) = clip.model().unwrap().text.embed_batch(&rests).unwrap();
    let eot: Vec<usize> = texts.iter().map(|t| t.len() - 1).collect();
    let grad_of = |f: Tensor| {
        let probe =
            Tensor::from_vec(pattern_embeds(f.elem_count()), f.dims(), &clip.device).unwrap();
        (&f * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
            .get(emb.as_tensor())
            .expect("gradient reaches the prefix")
            .clone()
    };
    let fast = grad_of(
        clip.model()
            .unwrap()
            .text
            .forward_prefixed(emb.as_tensor(), &rest, &eot)
            .unwrap(),
    );
    let reference = grad_of(
        clip.model()
            .unwrap()
            .text
            .forward_prefixed_autograd(emb.as_tensor(), &rest, &eot)
            .unwrap(),
    );
    let rg = rel(&fast, &reference);
    within(
        "template prefix: kernel vs candle prefix gradient (relative)",
        rg,
        BOUND,
    );
}
