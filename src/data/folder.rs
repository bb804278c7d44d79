//! Image-classification folders: `ROOT/<class>/<images>`, or `ROOT/{train,val,test}/<class>/<images>`.
//! Classes are the sorted folder names (`_` shown as a space); files that are not images are skipped and
//! counted so the user can see what was ignored.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

pub const IMAGE_EXTENSIONS: &[&str] = &[
    "jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "ppm", "pgm", "pnm", "tga", "qoi",
];
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub path: PathBuf,
    pub label: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatasetFolder {
    pub root: PathBuf,
    /// Folder names, sorted.
    pub class_dirs: Vec<String>,
    /// Names used in prompts: folder names with `_` → space.
    pub class_names: Vec<String>,
    /// Present when the folder has train/val/test sub-folders.
    pub train: Option<Vec<Sample>>,
    pub val: Option<Vec<Sample>>,
    pub test: Option<Vec<Sample>>,
    /// Every image when the folder has no split sub-folders.
    pub all: Vec<Sample>,
    /// Files skipped because they are not images (by extension), over all folders.
    pub skipped_files: usize,
}

pub fn class_name_from_dir(dir: &str) -> String {
    dir.replace('_', " ")
}

pub(crate) fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

fn is_visible_dir(p: &Path) -> bool {
    p.is_dir()
        && !p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}

/// Class sub-folders of `dir`, sorted.
fn class_dirs_in(dir: &Path) -> Result<Vec<String>> {
    Ok(list_dir(dir)?
        .into_iter()
        .filter(|p| is_visible_dir(p))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect())
}

impl DatasetFolder {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::missing(
                root.to_path_buf(),
                "pass a dataset folder with one sub-folder of images per class",
            ));
        }
        let split_dirs: Vec<(Split, PathBuf)> = [Split::Train, Split::Val, Split::Test]
            .into_iter()
            .zip(SPLIT_NAMES)
            .map(|(s, n)| (s, root.join(n)))
            .filter(|(_, p)| p.is_dir())
            .collect();
        let mut skipped = 0;
        let mut ds = DatasetFolder {
            root: root.to_path_buf(),
            class_dirs: vec![],
            class_names: vec![],
            train: None,
            val: None,
            test: None,
            all: vec![],
            skipped_files: 0,
        };
        if split_dirs.is_empty() {
            ds.class_dirs = class_dirs_in(root)?;
            ds.check_has_classes(root)?;
            ds.all = ds.scan(root, true, &mut skipped)?;
        } else {
            let mut classes = BTreeSet::new();
            for (_, dir) in &split_dirs {
                classes.extend(class_dirs_in(dir)?);
            }
            ds.class_dirs = classes.into_iter().collect();
            ds.check_has_classes(root)?;
            for (split, dir) in &split_dirs {
                // A class may be absent from a split (e.g. no validation images), but not empty inside one.
                let samples = ds.scan(dir, false, &mut skipped)?;
                match split {
                    Split::Train => ds.train = Some(samples),
                    Split::Val => ds.val = Some(samples),
                    Split::Test => ds.test = Some(samples),
                }
            }
            ds.all = [&ds.train, &ds.val, &ds.test]
                .into_iter()
                .flatten()
                .flatten()
                .cloned()
                .collect();
        }
        ds.class_names = ds
            .class_dirs
            .iter()
            .map(|d| class_name_from_dir(d))
            .collect();
        ds.skipped_files = skipped;
        Ok(ds)
    }

    fn check_has_classes(&self, root: &Path) -> Result<()> {
        if self.class_dirs.is_empty() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                reason: "no class folders found; expected ROOT/<class>/<images> or ROOT/train/<class>/<images>".into(),
            });
        }
        Ok(())
    }

    /// Images of every class folder under `dir`. With `require_all`, every class must be present.
    fn scan(&self, dir: &Path, require_all: bool, skipped: &mut usize) -> Result<Vec<Sample>> {
        let mut samples = Vec::new();
        for (label, class) in self.class_dirs.iter().enumerate() {
            let cdir = dir.join(class);
            if !cdir.is_dir() {
                if require_all {
                    return Err(Error::missing(cdir, "every class needs a folder"));
                }
                continue;
            }
            let mut n = 0;
            for p in list_dir(&cdir)? {
                if p.is_file() && is_image(&p) {
                    samples.push(Sample { path: p, label });
                    n += 1;
                } else if p.is_file() {
                    *skipped += 1;
                }
            }
            if n == 0 {
                return Err(Error::Dataset {
                    path: cdir,
                    reason: format!(
                        "class folder has no images (extensions: {}); add images or remove the folder",
                        IMAGE_EXTENSIONS.join(", ")
                    ),
                });
            }
        }
        Ok(samples)
    }

    pub fn num_classes(&self) -> usize {
        self.class_dirs.len()
    }

    pub fn has_splits(&self) -> bool {
        self.train.is_some() || self.val.is_some() || self.test.is_some()
    }

    /// The images to evaluate on: the test split when there is one, else every image.
    pub fn eval_samples(&self) -> &[Sample] {
        self.test.as_deref().unwrap_or(&self.all)
    }

    /// Replaces the class names by those a CoOp class-name file gives the class folders (`<folder>
    /// <class name>` a line: [`super::classnames`]). Every class folder needs a line; lines for other
    /// folders are ignored, so one file for all of ImageNet serves any subset of it. On error the names
    /// are left as they were.
    pub fn apply_class_names(&mut self, file: &Path) -> Result<()> {
        let entries = super::classnames::read_coop(file)?;
        let by_folder: HashMap<&str, &str> = entries
            .iter()
            .map(|c| (c.folder.as_str(), c.name.as_str()))
            .collect();
        let missing: Vec<&String> = self
            .class_dirs
            .iter()
            .filter(|d| !by_folder.contains_key(d.as_str()))
            .collect();
        if let Some(first) = missing.first() {
            let more = if missing.len() > 1 {
                format!(" (and {} more)", missing.len() - 1)
            } else {
                String::new()
            };
            return Err(Error::bad_file(
                file,
                format!(
                    "has no line for class folder '{first}'{more} of {}",
                    self.root.display()
                ),
                format!("add a line '{first} <class name>' for it"),
            ));
        }
        self.class_names = self
            .class_dirs
            .iter()
            .map(|d| by_folder[d.as_str()].to_string())
            .collect();
        Ok(())
    }

    /// The same folder restricted to `classes` (indices, in the order given), relabelled 0.. in that
    /// order: base-to-novel trains on one such subset and scores another.
    pub fn subset(&self, classes: &[usize]) -> Result<DatasetFolder> {
        if let Some(&bad) = classes.iter().find(|&&c| c >= self.num_classes()) {
            return Err(Error::invalid(format!(
                "class {bad} of a {}-class dataset",
                self.num_classes()
            )));
        }
        let relabel = |samples: &[Sample]| -> Vec<Sample> {
            samples
                .iter()
                .filter_map(|s| {
                    classes
                        .iter()
                        .position(|&c| c == s.label)
                        .map(|label| Sample {
                            path: s.path.clone(),
                            label,
                        })
                })
                .collect()
        };
        Ok(DatasetFolder {
            root: self.root.clone(),
            class_dirs: classes
                .iter()
                .map(|&c| self.class_dirs[c].clone())
                .collect(),
            class_names: classes
                .iter()
                .map(|&c| self.class_names[c].clone())
                .collect(),
            train: self.train.as_deref().map(relabel),
            val: self.val.as_deref().map(relabel),
            test: self.test.as_deref().map(relabel),
            all: relabel(&self.all),
            skipped_files: self.skipped_files,
        })
    }

    /// Image count per class over `samples`.
    pub fn counts(&self, samples: &[Sample]) -> Vec<usize> {
        let mut c = vec![0; self.num_classes()];
        for s in samples {
            c[s.label] += 1;
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn flat_folder_is_scanned_sorted_with_skips() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("golden_retriever/1.jpg"));
        touch(&d.path().join("golden_retriever/notes.txt"));
        touch(&d.path().join("cat/b.PNG"));
        touch(&d.path().join("cat/a.png"));
        let ds = DatasetFolder::open(d.path()).unwrap();
        assert_eq!(ds.class_names, vec!["cat", "golden retriever"]);
        assert_eq!(ds.all.len(), 3);
        assert_eq!(ds.all[0].path.file_name().unwrap(), "a.png");
        assert_eq!(ds.skipped_files, 1);
        assert!(!ds.has_splits());
    }

    #[test]
    fn split_folders_are_used() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("train/a/1.jpg"));
        touch(&d.path().join("train/b/1.jpg"));
        touch(&d.path().join("test/b/2.jpg"));
        let ds = DatasetFolder::open(d.path()).unwrap();
        assert_eq!(ds.class_dirs, vec!["a", "b"]);
        assert_eq!(ds.train.as_ref().unwrap().len(), 2);
        assert_eq!(ds.eval_samples().len(), 1);
        assert_eq!(ds.eval_samples()[0].label, 1);
    }

    #[test]
    fn empty_class_and_empty_root_are_errors_naming_the_folder() {
        let d = tempfile::tempdir().unwrap();
        let err = DatasetFolder::open(d.path()).unwrap_err().to_string();
        assert!(err.contains("no class folders"), "{err}");
        std::fs::create_dir_all(d.path().join("empty_class")).unwrap();
        touch(&d.path().join("full/1.jpg"));
        let err = DatasetFolder::open(d.path()).unwrap_err().to_string();
        assert!(
            err.contains("empty_class") && err.contains("no images"),
            "{err}"
        );
    }

    #[test]
    fn class_names_come_from_a_coop_file() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("data/n02/1.jpg"));
        touch(&d.path().join("data/n01/1.jpg"));
        let mut ds = DatasetFolder::open(&d.path().join("data")).unwrap();
        let file = d.path().join("classnames.txt");
        // Lines in any order; a folder the dataset lacks is fine.
        std::fs::write(
            &file,
            "n02 great white shark
n09 goldfish

n01 tench
",
        )
        .unwrap();
        ds.apply_class_names(&file).unwrap();
        assert_eq!(ds.class_names, ["tench", "great white shark"]);
        assert_eq!(ds.class_dirs, ["n01", "n02"]);

        // A class folder without a line: an error naming the folder and the file, names unchanged.
        std::fs::write(
            &file,
            "n02 shark
",
        )
        .unwrap();
        let err = ds.apply_class_names(&file).unwrap_err().to_string();
        assert!(
            err.contains("classnames.txt")
                && err.contains("'n01'")
                && err.contains("Add a line 'n01 <class name>'"),
            "{err}"
        );
        assert_eq!(ds.class_names, ["tench", "great white shark"]);
        // Two folders with one name.
        std::fs::write(
            &file,
            "n01 shark
n02 shark
",
        )
        .unwrap();
        let err = ds.apply_class_names(&file).unwrap_err().to_string();
        assert!(err.contains("'shark' to two folders"), "{err}");
    }
}
