//! The two small demo models shipped in `assets/models/` (pretrained on generated scenes by
//! `scripts/make_demo_models.sh`): found by name wherever promptscope runs from, and marked as demo
//! models so no one mistakes them for a real CLIP.

use std::path::{Path, PathBuf};

/// Name and one-line note of each shipped model.
pub const DEMO_MODELS: [(&str, &str); 2] = [
    ("scenes-filip", "small demo model: pretrained on generated scenes with FILIP's token-wise loss (its word maps localise)"),
    ("scenes-clip", "small demo model: the same, with CLIP's pooled loss (the control: its word maps do not localise)"),
];

/// The file in a model folder that marks it as a demo model; it holds the note shown with the model.
pub const MARKER: &str = "promptscope_demo.json";

/// Where the shipped models are: `PROMPTSCOPE_MODELS`, else `assets/models` next to the executable's
/// checkout (`target/<profile>/promptscope` → the repository) or the source tree it was built from.
pub fn models_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PROMPTSCOPE_MODELS") {
        return Some(PathBuf::from(dir));
    }
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .nth(3)
            .map(|root| root.join("assets/models"))
    });
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models");
    from_exe.into_iter().chain([built]).find(|d| d.is_dir())
}

/// A shipped model's folder, by name.
pub fn find(name: &str) -> Option<PathBuf> {
    DEMO_MODELS
        .iter()
        .any(|(n, _)| *n == name)
        .then(|| models_dir().map(|d| d.join(name)))
        .flatten()
        .filter(|d| d.is_dir())
}

/// The demo note of a model folder, if it is one.
pub fn note(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["note"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_models_are_found_by_name_and_carry_their_note() {
        for (name, _) in DEMO_MODELS {
            let dir = find(name).unwrap_or_else(|| panic!("{name} is shipped in assets/models"));
            assert!(
                note(&dir).is_some_and(|n| n.contains("demo")),
                "{name} has a demo note"
            );
        }
        assert!(find("not-a-demo").is_none());
        assert!(note(Path::new(env!("CARGO_MANIFEST_DIR"))).is_none());
    }
}
