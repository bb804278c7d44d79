fn main() {
    afl::fuzz!(|data: &[u8]| {
        let _ = promptscope::export::pickle_guard::check_pickle(data);
    });
}
