//! Named template sets: CLIP's 80 hand-written ImageNet prompts (from the CLIP repository's
//! `Prompt_Engineering_for_ImageNet.ipynb`), the ensemble its zero-shot ImageNet numbers use.

/// Written `--template @imagenet` on the command line.
pub const IMAGENET_NAME: &str = "@imagenet";

pub const IMAGENET: [&str; 80] = [
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
];

/// Replaces each set name among `templates` by its templates; other entries stay as given.
pub fn expand(templates: &[String]) -> Vec<String> {
    templates
        .iter()
        .flat_map(|t| match t.trim() {
            IMAGENET_NAME => IMAGENET.iter().map(|s| s.to_string()).collect(),
            _ => vec![t.clone()],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imagenet_set_is_clips_eighty_distinct_templates() {
        let set: std::collections::BTreeSet<&str> = IMAGENET.iter().copied().collect();
        assert_eq!(set.len(), 80);
        assert!(IMAGENET.iter().all(|t| t.matches("{}").count() == 1));
        let expanded = expand(&["a {} photo".to_string(), IMAGENET_NAME.to_string()]);
        assert_eq!(expanded.len(), 81);
        assert_eq!(expanded[0], "a {} photo");
        assert_eq!(expanded[1], IMAGENET[0]);
    }
}
