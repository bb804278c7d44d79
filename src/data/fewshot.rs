//! CoOp's few-shot protocol: K training images per class drawn with a seed, a small validation set of
//! min(K, 4) per class, and the whole test split for evaluation.
//!
//! Every draw is a seeded shuffle of a class's file list sorted by path, so the same dataset, shots and
//! seeds pick the same files on any machine. Each class (and each purpose: shots, validation, the
//! derived split) gets its own random stream, so adding a class or changing `--shots` never reshuffles
//! the others, and the K-shot set of a seed contains its smaller-K sets.

use std::path::PathBuf;

use crate::data::{DatasetFolder, Sample};
use crate::error::{Error, Result};
use crate::rng::Rng;

/// CoOp validates on min(K, 4) images per class.
pub const MAX_VAL_PER_CLASS: usize = 4;
/// Share of a class held out for testing when the folder has no split sub-folders.
pub const DERIVED_TEST_PERCENT: usize = 30;
/// Share of a class held out for validation when the folder has no split sub-folders.
pub const DERIVED_VAL_PERCENT: usize = 20;

// Stream tags: one per purpose so the draws are independent of each other.
const TAG_SHOTS: u64 = 1;
const TAG_VAL: u64 = 2;
const TAG_SPLIT: u64 = 3;

#[derive(Debug, Clone, PartialEq)]
pub struct FewShotSplit {
    /// The K shots of every class, in class order then file order.
    pub train: Vec<Sample>,
    /// Up to min(K, 4) images per class (every validation image when all shots are used), same order.
    pub val: Vec<Sample>,
    /// The images to evaluate on, same order.
    pub test: Vec<Sample>,
    /// True when some of the split was made here from `split_seed` rather than read from folders.
    pub derived: bool,
    /// What the user should know about how the split was made (shown in logs and the UI).
    pub notes: Vec<String>,
}

/// The images every evaluation scores (zero-shot, learned prompts, the app's Compare tab), and how they
/// were chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSplit {
    /// In class order, then path order.
    pub samples: Vec<Sample>,
    /// True when the images were set aside here by `split_seed` rather than read from `test/`.
    pub derived: bool,
    /// One line for the user: "test/ folder", or "derived 30 % test split, split seed 0".
    pub description: String,
}

/// The test images of `data`: its `test/` folder when there is one (no `train/` needed: zero-shot trains
/// nothing), else exactly the images [`few_shot`] with the same `split_seed` sets aside for testing, so
/// prompts trained on that split are never scored on their own training images.
pub fn test_split(data: &DatasetFolder, split_seed: u64) -> Result<TestSplit> {
    let n = data.num_classes();
    if let Some(test) = &data.test {
        let samples = by_class(test, n)?.into_iter().flatten().collect();
        return Ok(TestSplit {
            samples,
            derived: false,
            description: "test/ folder".into(),
        });
    }
    let (pool, of) = match (data.has_splits(), &data.train) {
        (false, _) => (&data.all, ""),
        (true, Some(train)) => (train, " of train/"),
        (true, None) => {
            return Err(Error::Dataset {
                path: data.root.clone(),
                reason: "has neither a test folder nor a train folder to set test images aside from; add \
                         ROOT/test/<class>/, or put every image in ROOT/<class>/ to have promptscope split them"
                    .into(),
            })
        }
    };
    // The test part of a derived split does not depend on whether validation is carved too.
    let (_, _, test) = derive_split(by_class(pool, n)?, split_seed, false);
    Ok(TestSplit {
        samples: test.into_iter().flatten().collect(),
        derived: true,
        description: format!(
            "derived {DERIVED_TEST_PERCENT} % test split{of}, split seed {split_seed}"
        ),
    })
}

/// Draws CoOp's few-shot split. `shots = None` uses every training image.
///
/// - With `train/`, `val/`, `test/` folders: K images per class drawn by `seed` from `train/`; validation
///   is min(K, 4) per class drawn by `seed` from `val/` (all of it when `shots` is None). Without `val/`,
///   validation comes from the training images not chosen as shots (none are left when `shots` is None).
///   Without `test/`, 30% of each class of `train/` (at least 1) is set aside for testing by `split_seed`,
///   and, if `val/` is missing too, 20% for validation as below.
/// - Without split folders, a fixed split per class is derived from `split_seed`: the class's files,
///   sorted, are shuffled; the first round(30%) (at least 1) are the test images, the next round(20%)
///   (at least 1 when the class has 3 or more images) the validation images, the rest the training
///   images, from which the shots are then drawn by `seed`. Keeping `split_seed` fixed while varying
///   `seed` (CoOp averages seeds 1, 2, 3) varies the shots and never the test set.
///
/// A class with fewer training images than K is an error naming the class and its count.
pub fn few_shot(
    data: &DatasetFolder,
    shots: Option<usize>,
    seed: u64,
    split_seed: u64,
) -> Result<FewShotSplit> {
    if shots == Some(0) {
        return Err(Error::invalid(
            "--shots must be at least 1 (leave it out to train on every training image)",
        ));
    }
    let n = data.num_classes();
    let mut notes = Vec::new();
    let mut derived = false;
    let pools = if data.has_splits() {
        let train_dir = data.root.join("train");
        let train = data.train.as_deref().ok_or_else(|| Error::Dataset {
            path: data.root.clone(),
            reason: "has val/test folders but no train folder, so there are no images to draw shots from; \
                     add ROOT/train/<class>/, or put every image in ROOT/<class>/ to have promptscope split them"
                .into(),
        })?;
        let train = by_class(train, n)?;
        let val = data.val.as_deref().map(|v| by_class(v, n)).transpose()?;
        match &data.test {
            Some(_) => Pools {
                train,
                val,
                class_root: train_dir,
                held_out: None,
            },
            None => {
                derived = true;
                let carve_val = val.is_none();
                let (tr, va, te) = derive_split(train, split_seed, carve_val);
                notes.push(format!(
                    "no test folder: {DERIVED_TEST_PERCENT}% of each class's training images{} set aside for testing by split seed {split_seed}",
                    if carve_val { format!(" (and {DERIVED_VAL_PERCENT}% for validation)") } else { String::new() }
                ));
                let held_out = Some(HeldOut {
                    carved_val: carve_val,
                    folder_counts: counts_of(&tr, &va, &te, carve_val),
                });
                Pools {
                    train: tr,
                    val: if carve_val { Some(va) } else { val },
                    class_root: train_dir,
                    held_out,
                }
            }
        }
    } else {
        derived = true;
        let (tr, va, te) = derive_split(by_class(&data.all, n)?, split_seed, true);
        notes.push(format!(
            "no train/val/test folders: split each class {DERIVED_TEST_PERCENT}% test / {DERIVED_VAL_PERCENT}% validation / rest training by split seed {split_seed}"
        ));
        let held_out = Some(HeldOut {
            carved_val: true,
            folder_counts: counts_of(&tr, &va, &te, true),
        });
        Pools {
            train: tr,
            val: Some(va),
            class_root: data.root.clone(),
            held_out,
        }
    };

    let mut train = Vec::new();
    let mut leftovers = Vec::with_capacity(n);
    for (c, pool) in pools.train.into_iter().enumerate() {
        let class_dir = pools.class_root.join(&data.class_dirs[c]);
        let name = &data.class_names[c];
        let have = pool.len();
        let k = shots.unwrap_or(have);
        if have == 0 || k > have {
            let mut reason = if have == 0 {
                format!(
                    "class '{name}' has no training images; add images to {}",
                    class_dir.display()
                )
            } else {
                format!(
                    "class '{name}' has {have} training image{}, fewer than --shots {k}; lower --shots or add images",
                    if have == 1 { "" } else { "s" }
                )
            };
            if let Some(h) = &pools.held_out {
                let folder = h.folder_counts[c];
                reason.push_str(&format!(
                    " (its folder has {folder} images, of which {} were set aside for testing{})",
                    folder - have,
                    if h.carved_val { " and validation" } else { "" }
                ));
            }
            return Err(Error::Dataset {
                path: class_dir,
                reason,
            });
        }
        let mut order = pool;
        stream(seed, TAG_SHOTS, c).shuffle(&mut order);
        let rest = order.split_off(k);
        train.extend(sorted(order));
        leftovers.push(rest);
    }

    let want = shots.map(|k| k.min(MAX_VAL_PER_CLASS));
    let mut val = Vec::new();
    let mut short = Vec::new();
    match pools.val {
        Some(val_pools) => {
            for (c, mut pool) in val_pools.into_iter().enumerate() {
                stream(seed, TAG_VAL, c).shuffle(&mut pool);
                let take = want.unwrap_or(pool.len()).min(pool.len());
                if want.is_some_and(|w| take < w) {
                    short.push(format!("'{}' ({take})", data.class_names[c]));
                }
                pool.truncate(take);
                val.extend(sorted(pool));
            }
        }
        None => match want {
            Some(w) => {
                notes.push("no val folder: validation images are drawn from the training images not chosen as shots".into());
                for (c, mut rest) in leftovers.into_iter().enumerate() {
                    // Already shuffled by `seed`, so the first ones are a seeded draw.
                    let take = w.min(rest.len());
                    if take < w {
                        short.push(format!("'{}' ({take})", data.class_names[c]));
                    }
                    rest.truncate(take);
                    val.extend(sorted(rest));
                }
            }
            None => notes.push(
                "no val folder and every training image is a shot, so there are no validation images; set --shots or add ROOT/val/".into(),
            ),
        },
    }
    if !short.is_empty() {
        notes.push(format!(
            "fewer than {} validation images for {}: {}",
            want.unwrap_or(MAX_VAL_PER_CLASS),
            if short.len() == 1 { "class" } else { "classes" },
            short.join(", ")
        ));
    }

    let test = test_split(data, split_seed)?.samples;
    let counts = data.counts(&test);
    let untested: Vec<String> = (0..n)
        .filter(|&c| counts[c] == 0)
        .map(|c| format!("'{}'", data.class_names[c]))
        .collect();
    if !untested.is_empty() {
        notes.push(format!("no test images for {}", untested.join(", ")));
    }
    Ok(FewShotSplit {
        train,
        val,
        test,
        derived,
        notes,
    })
}

/// Per-class image pools before the shots are drawn (the test images are [`test_split`]'s).
struct Pools {
    train: Vec<Vec<Sample>>,
    val: Option<Vec<Vec<Sample>>>,
    /// Where the class folders of the training images are, for error messages.
    class_root: PathBuf,
    held_out: Option<HeldOut>,
}

/// How a derived split shrank each class's folder, so a "too few shots" error can say why.
struct HeldOut {
    carved_val: bool,
    folder_counts: Vec<usize>,
}

fn counts_of(
    tr: &[Vec<Sample>],
    va: &[Vec<Sample>],
    te: &[Vec<Sample>],
    with_val: bool,
) -> Vec<usize> {
    (0..tr.len())
        .map(|c| tr[c].len() + te[c].len() + if with_val { va[c].len() } else { 0 })
        .collect()
}

/// Samples grouped by label, each group sorted by path so the input order never matters.
fn by_class(samples: &[Sample], n: usize) -> Result<Vec<Vec<Sample>>> {
    let mut out = vec![Vec::new(); n];
    for s in samples {
        out.get_mut(s.label)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: label {} but the dataset has {n} classes",
                    s.path.display(),
                    s.label
                ))
            })?
            .push(s.clone());
    }
    Ok(out.into_iter().map(sorted).collect())
}

fn sorted(mut v: Vec<Sample>) -> Vec<Sample> {
    v.sort_by(|a, b| a.path.cmp(&b.path));
    v
}

/// Splits each class into (train, val, test) by `split_seed`; see [`few_shot`] for the proportions.
/// Without `carve_val` the validation part stays in training.
#[allow(clippy::type_complexity)]
fn derive_split(
    classes: Vec<Vec<Sample>>,
    split_seed: u64,
    carve_val: bool,
) -> (Vec<Vec<Sample>>, Vec<Vec<Sample>>, Vec<Vec<Sample>>) {
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (c, mut pool) in classes.into_iter().enumerate() {
        let len = pool.len();
        stream(split_seed, TAG_SPLIT, c).shuffle(&mut pool);
        let n_test = percent(len, DERIVED_TEST_PERCENT).max(1).min(len);
        let n_val = if !carve_val {
            0
        } else if len >= 3 {
            percent(len, DERIVED_VAL_PERCENT).max(1)
        } else {
            percent(len, DERIVED_VAL_PERCENT)
        }
        .min(len - n_test);
        let mut rest = pool.split_off(n_test);
        test.push(sorted(pool));
        let tr = rest.split_off(n_val);
        val.push(sorted(rest));
        train.push(sorted(tr));
    }
    (train, val, test)
}

/// `len · p / 100` rounded half up, in integers so no platform's floating point can change a split.
fn percent(len: usize, p: usize) -> usize {
    (len * p + 50) / 100
}

/// An independent stream for (seed, purpose, class), mixed through splitmix so nearby seeds and classes
/// are unrelated.
fn stream(seed: u64, tag: u64, class: usize) -> Rng {
    let a = Rng::new(seed).next_u64() ^ tag;
    let b = Rng::new(a).next_u64() ^ class as u64;
    Rng::new(Rng::new(b).next_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn touch_class(dir: &Path, n: usize) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("{i:03}.png")), b"x").unwrap();
        }
    }

    /// `split = [train, val, test]` images per class; a zero count leaves that split's folder out.
    fn split_dataset(classes: &[&str], split: [usize; 3]) -> (tempfile::TempDir, DatasetFolder) {
        let d = tempfile::tempdir().unwrap();
        for (name, n) in ["train", "val", "test"].iter().zip(split) {
            if n > 0 {
                for c in classes {
                    touch_class(&d.path().join(name).join(c), n);
                }
            }
        }
        let ds = DatasetFolder::open(d.path()).unwrap();
        (d, ds)
    }

    fn flat_dataset(classes: &[(&str, usize)]) -> (tempfile::TempDir, DatasetFolder) {
        let d = tempfile::tempdir().unwrap();
        for (c, n) in classes {
            touch_class(&d.path().join(c), *n);
        }
        let ds = DatasetFolder::open(d.path()).unwrap();
        (d, ds)
    }

    fn is_class_then_file_order(s: &[Sample]) -> bool {
        s.windows(2)
            .all(|w| (w[0].label, &w[0].path) < (w[1].label, &w[1].path))
    }

    #[test]
    fn split_folders_give_k_shots_val_and_whole_test() {
        let (_d, ds) = split_dataset(&["a", "b", "c"], [10, 6, 3]);
        let s = few_shot(&ds, Some(4), 1, 0).unwrap();
        assert_eq!(ds.counts(&s.train), vec![4, 4, 4]);
        assert_eq!(ds.counts(&s.val), vec![4, 4, 4]);
        assert_eq!(s.test, *ds.test.as_ref().unwrap());
        assert!(!s.derived);
        assert!(is_class_then_file_order(&s.train) && is_class_then_file_order(&s.val));
        assert!(s
            .train
            .iter()
            .all(|x| x.path.starts_with(ds.root.join("train"))));
        assert!(s
            .val
            .iter()
            .all(|x| x.path.starts_with(ds.root.join("val"))));

        let two = few_shot(&ds, Some(2), 1, 0).unwrap();
        assert_eq!(ds.counts(&two.val), vec![2, 2, 2]);
        let all = few_shot(&ds, None, 1, 0).unwrap();
        assert_eq!(all.train, *ds.train.as_ref().unwrap());
        assert_eq!(all.val, *ds.val.as_ref().unwrap());
    }

    #[test]
    fn same_arguments_same_files_and_seeds_differ() {
        let (_d, ds) = split_dataset(&["a", "b", "c"], [10, 6, 3]);
        let a = few_shot(&ds, Some(4), 1, 0).unwrap();
        assert_eq!(a, few_shot(&ds, Some(4), 1, 0).unwrap());
        let b = few_shot(&ds, Some(4), 2, 0).unwrap();
        assert_ne!(a.train, b.train);
        assert_ne!(a.val, b.val);
        // The draw is a prefix of one seeded shuffle, so fewer shots are a subset of more.
        let two = few_shot(&ds, Some(2), 1, 0).unwrap();
        assert!(two.train.iter().all(|x| a.train.contains(x)));
    }

    #[test]
    fn flat_folder_is_split_by_split_seed_and_shots_by_seed() {
        let (_d, ds) = flat_dataset(&[("a", 10), ("b", 5), ("c", 3), ("d", 2)]);
        let s = few_shot(&ds, Some(1), 1, 7).unwrap();
        assert!(s.derived);
        assert_eq!(ds.counts(&s.test), vec![3, 2, 1, 1]);
        assert_eq!(ds.counts(&s.val), vec![1, 1, 1, 0]);
        assert_eq!(ds.counts(&s.train), vec![1, 1, 1, 1]);
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("fewer than 1 validation images for class: 'd' (0)")),
            "{:?}",
            s.notes
        );
        let all = few_shot(&ds, None, 1, 7).unwrap();
        // 10 → 3 test, 2 val, 5 train; 5 → 2, 1, 2; 3 → 1, 1, 1; 2 → 1, 0, 1.
        assert_eq!(ds.counts(&all.train), vec![5, 2, 1, 1]);
        for x in &all.train {
            assert!(!all.val.contains(x) && !all.test.contains(x));
        }
        assert!(all.val.iter().all(|x| !all.test.contains(x)));
        // The seed moves the shots, never the test set; the split seed moves the test set.
        let other_seed = few_shot(&ds, Some(1), 2, 7).unwrap();
        assert_eq!(other_seed.test, s.test);
        let other_split = few_shot(&ds, Some(1), 1, 8).unwrap();
        assert_ne!(other_split.test, s.test);
    }

    #[test]
    fn too_few_images_names_class_count_and_shots() {
        let (_d, ds) = split_dataset(&["red_circle", "blue_square"], [3, 1, 1]);
        let err = few_shot(&ds, Some(4), 1, 0).unwrap_err().to_string();
        assert!(err.contains("class 'blue square' has 3 training images, fewer than --shots 4; lower --shots or add images"), "{err}");
        assert!(err.contains("blue_square"), "{err}");

        let (_d, ds) = flat_dataset(&[("red_circle", 5)]);
        let err = few_shot(&ds, Some(4), 1, 0).unwrap_err().to_string();
        assert!(
            err.contains("class 'red circle' has 2 training images, fewer than --shots 4"),
            "{err}"
        );
        assert!(
            err.contains("5 images, of which 3 were set aside for testing and validation"),
            "{err}"
        );
        assert!(few_shot(&ds, Some(0), 1, 0).is_err());
    }

    #[test]
    fn missing_val_folder_draws_validation_from_unused_training_images() {
        let (_d, ds) = split_dataset(&["a", "b"], [7, 0, 2]);
        let s = few_shot(&ds, Some(4), 3, 0).unwrap();
        assert_eq!(ds.counts(&s.train), vec![4, 4]);
        assert_eq!(ds.counts(&s.val), vec![3, 3]);
        assert!(s
            .val
            .iter()
            .all(|x| !s.train.contains(x) && x.path.starts_with(ds.root.join("train"))));
        assert!(
            s.notes.iter().any(|n| n.contains("no val folder")),
            "{:?}",
            s.notes
        );
        assert!(!s.derived);
    }

    #[test]
    fn missing_test_folder_is_derived_and_missing_train_is_an_error() {
        let (_d, ds) = split_dataset(&["a", "b"], [10, 2, 0]);
        let s = few_shot(&ds, Some(2), 1, 0).unwrap();
        assert!(s.derived);
        assert_eq!(ds.counts(&s.test), vec![3, 3]);
        assert_eq!(ds.counts(&s.val), vec![2, 2]);
        assert!(s
            .test
            .iter()
            .all(|x| x.path.starts_with(ds.root.join("train")) && !s.train.contains(x)));

        let (_d, ds) = split_dataset(&["a"], [0, 2, 2]);
        let err = few_shot(&ds, Some(1), 1, 0).unwrap_err().to_string();
        assert!(err.contains("no train folder"), "{err}");
    }

    #[test]
    fn test_split_is_the_test_part_few_shot_sets_aside() {
        let flat = flat_dataset(&[("a", 10), ("b", 5), ("c", 3), ("d", 2)]);
        let no_test_no_val = split_dataset(&["a", "b"], [9, 0, 0]);
        let no_test = split_dataset(&["a", "b"], [9, 2, 0]);
        let with_test = split_dataset(&["a", "b"], [4, 2, 3]);
        for (_d, ds) in [&flat, &no_test_no_val, &no_test, &with_test] {
            for split_seed in [0, 1, 7] {
                let t = test_split(ds, split_seed).unwrap();
                for (shots, seed) in [(None, 1), (Some(1), 3)] {
                    assert_eq!(
                        t.samples,
                        few_shot(ds, shots, seed, split_seed).unwrap().test,
                        "{}",
                        ds.root.display()
                    );
                }
                assert_eq!(t.derived, ds.test.is_none());
            }
        }
        assert_eq!(
            test_split(&flat.1, 0).unwrap().description,
            "derived 30 % test split, split seed 0"
        );
        assert_eq!(
            test_split(&no_test.1, 3).unwrap().description,
            "derived 30 % test split of train/, split seed 3"
        );
        let t = test_split(&with_test.1, 5).unwrap();
        assert_eq!(
            (t.samples.as_slice(), t.description.as_str()),
            (with_test.1.test.as_deref().unwrap(), "test/ folder")
        );
    }

    #[test]
    fn test_split_needs_no_train_folder() {
        let (_d, ds) = split_dataset(&["a", "b"], [0, 0, 3]);
        assert!(few_shot(&ds, None, 1, 0).is_err());
        let t = test_split(&ds, 0).unwrap();
        assert_eq!(ds.counts(&t.samples), [3, 3]);
        let (_d, ds) = split_dataset(&["a"], [0, 2, 0]);
        let err = test_split(&ds, 0).unwrap_err().to_string();
        assert!(
            err.contains("neither a test folder nor a train folder"),
            "{err}"
        );
    }
}
