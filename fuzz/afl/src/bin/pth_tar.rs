fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = promptscope_afl::file("model.pth.tar", data);
        let _ = promptscope::export::coop_import::read(&path);
    });
}
