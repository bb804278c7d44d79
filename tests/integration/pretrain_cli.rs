//! `promptscope synth-scenes` and `promptscope pretrain` as a user runs them: pairs written, both towers
//! trained with either loss, a model folder the other verbs load, and clean errors for bad input.

use crate::common;

use common::{error_line, ok, promptscope, Scratch};

fn scenes(s: &Scratch, n: &str) -> String {
    let dir = s.p("pairs");
    ok(&promptscope(&["synth-scenes", "--out", &dir, "--count", n, "--size", "224", "--seed", "2"]));
    dir
}

#[test]
fn pretrain_writes_a_model_the_other_verbs_load_with_either_loss() {
    let s = Scratch::with_tiny_model();
    let pairs = scenes(&s, "8");
    assert!(std::path::Path::new(&pairs).join("000007.txt").is_file() && std::path::Path::new(&pairs).join("000007.json").is_file());
    for loss in ["filip", "clip"] {
        let out = s.p(&format!("model-{loss}"));
        let stdout = ok(&promptscope(&[
            "pretrain", "--data", &pairs, "--out", &out, "--preset", "tiny", "--loss", loss, "--epochs", "2", "--batch-size", "4", "--format", "json",
        ]));
        let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3, "two epochs and a summary: {stdout}");
        assert!(lines[..2].iter().all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));
        assert_eq!(lines[2]["epochs"], 2);
        // The folder is a CLIP the rest of promptscope reads.
        let img = format!("{pairs}/000000.png");
        let v: serde_json::Value = serde_json::from_str(&ok(&promptscope(&["embed", "--model", &out, "--text", "a red circle.", "--image", &img, "--format", "json", "--device", "cpu"]))).unwrap();
        assert_eq!(v["text_embeds"][0].as_array().unwrap().len(), 24);
    }
    // Fine-tuning starts from a model folder.
    let tuned = s.p("tuned");
    ok(&promptscope(&["pretrain", "--data", &pairs, "--out", &tuned, "--init", &s.p("model-filip"), "--epochs", "1", "--batch-size", "4"]));
}

#[test]
fn bad_pretraining_input_is_a_clean_error() {
    let s = Scratch::with_tiny_model();
    let pairs = scenes(&s, "4");
    let run = |extra: &[&str]| {
        let mut args = vec!["pretrain", "--data", &pairs, "--preset", "tiny", "--epochs", "1"];
        args.extend_from_slice(extra);
        if !extra.contains(&"--batch-size") {
            args.extend(["--batch-size", "2"]);
        }
        promptscope(&args)
    };
    let m = s.p("m");
    assert!(error_line(&run(&["--out", &m])).contains("already exists and is not empty"));
    assert!(error_line(&run(&["--out", &s.p("x"), "--loss", "siglip"])).contains("--loss takes filip or clip"));
    assert!(error_line(&run(&["--out", &s.p("x"), "--batch-size", "1"])).contains("--batch-size must be at least 2"));
    let empty = s.p("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = error_line(&promptscope(&["pretrain", "--data", &empty, "--out", &s.p("y"), "--preset", "tiny"]));
    assert!(err.contains("no image–caption pairs") && err.contains("empty"), "{err}");
    std::fs::write(format!("{pairs}/000001.png"), b"not a png").unwrap();
    let err = error_line(&run(&["--out", &s.p("z")]));
    assert!(err.contains("000001.png"), "{err}");
}
