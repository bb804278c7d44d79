//! Our preprocessing against transformers' CLIPImageProcessor (PIL backend) on a non-square image that
//! needs resizing (320×213 → 336×224 → centre crop 224), and the features that follow from it.

use crate::common;

use candle_core::{Device, Tensor};
use common::*;
use promptscope::clip::preprocess::{load_image, preprocess};

#[test]
fn pixels_and_features_match_clip_image_processor() {
    let r = reference();
    let dir = model_dir("tiny", &r);
    let clip = promptscope::clip::load(dir.path().to_str().unwrap(), &Device::Cpu).unwrap();
    let img = load_image(&fixtures().join("nonsquare_320x213.png")).unwrap();
    let ours = preprocess(&img, &clip.preprocess);

    let bytes = std::fs::read(fixtures().join("nonsquare_320x213_pixels.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor("pixel_values").unwrap();
    assert_eq!(view.shape(), &[1, 3, 224, 224]);
    let theirs: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    // Bit-exact resampling leaves only float rounding in rescale/normalise (no matrix kernels involved).
    within(
        "preprocessing: pixels vs CLIPImageProcessor (normalised units)",
        max_abs_diff(&ours, &theirs) as f64,
        1e-5,
    );

    let px = Tensor::from_vec(ours, (1, 3, 224, 224), &Device::Cpu).unwrap();
    let f: Vec<f32> = clip
        .model()
        .unwrap()
        .image_features(&px)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let expected = flat(&r["tiny"]["nonsquare_image_embeds"]);
    let (cos, diff) = (cosine(&f, &expected), max_abs_diff(&f, &expected));
    assert!(cos >= 0.999, "cosine {cos}");
    within(
        "features after preprocessing vs transformers",
        diff as f64,
        1e-4,
    );
}
