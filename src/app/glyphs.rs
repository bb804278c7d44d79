//! Text from the model's vocabulary (nearest words, prompt tokens) drawn with the app's fonts, which
//! cover Latin, Greek, Cyrillic and common punctuation: CLIP's BPE also holds emoji, CJK and symbols,
//! which would show as empty boxes. Those are written as their code point instead.

use std::borrow::Cow;

/// Whether the app's bundled fonts draw `c`.
fn drawable(c: char) -> bool {
    matches!(c, '\n' | '\t')
        || matches!(c as u32, 0x20..=0x24F | 0x370..=0x52F | 0x1E00..=0x1EFF | 0x2000..=0x206F | 0x20A0..=0x20BF | 0x2100..=0x214F)
}

/// `s` with every character the fonts cannot draw replaced by `<U+XXXX>`.
pub fn displayable(s: &str) -> Cow<'_, str> {
    if s.chars().all(drawable) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if drawable(c) {
                    c.to_string()
                } else {
                    format!("<U+{:04X}>", c as u32)
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_and_cjk_become_code_points_and_the_rest_is_kept() {
        assert!(matches!(
            displayable("golden retriever, café – 3×\n\tnext"),
            Cow::Borrowed(_)
        ));
        assert_eq!(displayable("relieved😌"), "relieved<U+1F60C>");
        assert_eq!(displayable("猫"), "<U+732B>");
    }
}
