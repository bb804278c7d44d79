fn main() {
    let cfg = promptscope::clip::PreprocessConfig::clip(32);
    afl::fuzz!(|data: &[u8]| {
        let path = promptscope_afl::file("image.bin", data);
        if let Ok(img) = promptscope::clip::preprocess::load_image(&path) {
            let _ = promptscope::clip::preprocess::preprocess(&img, &cfg);
        }
    });
}
