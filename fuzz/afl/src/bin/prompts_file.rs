fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = promptscope_afl::file("p.safetensors", data);
        let _ = promptscope::export::prompt_file::PromptFile::load(&path);
    });
}
