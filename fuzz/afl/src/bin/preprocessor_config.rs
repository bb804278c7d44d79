fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = promptscope_afl::file("preprocessor_config.json", data);
        let _ = promptscope::clip::PreprocessConfig::from_file(&path, 224);
    });
}
