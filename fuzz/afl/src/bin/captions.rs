fn main() {
    afl::fuzz!(|data: &[u8]| {
        promptscope_afl::file("captions.tsv", data);
        let _ = promptscope::data::scenes::read_pairs(&promptscope_afl::scratch());
    });
}
