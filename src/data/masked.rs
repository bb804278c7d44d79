//! Images with object masks, for scoring explanation maps with the pointing game: a folder with one
//! sub-folder per class, each image `NAME.png` (or .jpg) beside its mask `NAME.mask.png` (white where
//! the object is). Images without a mask are not part of the set.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One image, its mask and the class its folder names.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedImage {
    pub image: PathBuf,
    pub mask: PathBuf,
    /// The class folder's name as prompts read it (`_` as a space).
    pub class: String,
}

const MASK_SUFFIX: &str = ".mask.png";

/// Every image under `root/<class>/` (`root/test/<class>/` when the folder has splits) that has a
/// `NAME.mask.png` beside it, sorted by path.
pub fn masked_images(root: &Path) -> Result<Vec<MaskedImage>> {
    let test = root.join("test");
    let root = if test.is_dir() { test.as_path() } else { root };
    let read = |dir: &Path| std::fs::read_dir(dir).map_err(|e| Error::io(dir, e));
    let mut out = Vec::new();
    for class in read(root)? {
        let class = class.map_err(|e| Error::io(root, e))?.path();
        if !class.is_dir() {
            continue;
        }
        let name = super::folder::class_name_from_dir(
            &class.file_name().unwrap_or_default().to_string_lossy(),
        );
        for f in read(&class)? {
            let path = f.map_err(|e| Error::io(&class, e))?.path();
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if file.ends_with(MASK_SUFFIX) || !super::folder::is_image(&path) {
                continue;
            }
            let Some(stem) = path.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
                continue;
            };
            let mask = class.join(format!("{stem}{MASK_SUFFIX}"));
            if mask.is_file() {
                out.push(MaskedImage {
                    image: path,
                    mask,
                    class: name.clone(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no image with a mask; the pointing game needs ROOT/<class>/NAME.png beside NAME{MASK_SUFFIX} (white on the object)",
            root.display()
        )));
    }
    out.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(out)
}
