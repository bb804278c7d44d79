//! Image–caption pairs in WebDataset shards, as img2dataset writes them and open_clip reads them: tar
//! files (or folders, img2dataset's `files` layout) whose members `KEY.jpg|png…`, `KEY.txt` and an
//! optional `KEY.json` make one sample. Shards are read front to back, never all at once: an epoch
//! shuffles the shard order, then a bounded buffer shuffles the samples (METHODS §10), so memory is the
//! buffer whatever the number of pairs.
//!
//! Broken samples are normal in crawled sets. Each is either skipped and counted, or refused with its
//! shard and key named ([`BadSamples`]); reading never panics and never stops without saying why.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc::SyncSender;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::progress::{check, Progress};
use crate::rng::Rng;

/// More shards than anyone lists by hand: a brace typo (`{0..99999999}`) is refused, not expanded.
const MAX_SHARDS: usize = 1_000_000;

/// How a shard holds its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKind {
    Tar,
    TarGz,
    /// A folder of `KEY.ext` files (img2dataset's `files` output: one folder a shard).
    Folder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub path: PathBuf,
    pub kind: ShardKind,
}

impl Shard {
    fn at(path: &Path) -> Result<Self> {
        let name = path.to_string_lossy().to_ascii_lowercase();
        let kind = if !path.exists() {
            return Err(Error::missing(
                path,
                "check the shard list (a brace range such as {00000..00009} must match the files)",
            ));
        } else if path.is_dir() {
            ShardKind::Folder
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            ShardKind::TarGz
        } else if name.ends_with(".tar") {
            ShardKind::Tar
        } else {
            return Err(Error::bad_file(
                path,
                "is not a shard",
                "give .tar (or .tar.gz) shards, or folders of KEY.jpg + KEY.txt files",
            ));
        };
        Ok(Self {
            path: path.to_path_buf(),
            kind,
        })
    }

    /// The name `sizes.json` files it under.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What makes a sample unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadKind {
    /// The shard ends inside a member (a download or copy cut short): the rest of it is lost.
    TruncatedShard,
    NoCaption,
    NoImage,
    CaptionNotUtf8,
    CorruptImage,
}

impl BadKind {
    fn describe(self) -> &'static str {
        match self {
            BadKind::TruncatedShard => "the shard is cut short (truncated tar) here",
            BadKind::NoCaption => "has no caption (KEY.txt)",
            BadKind::NoImage => "has no image (KEY.jpg, KEY.png, …)",
            BadKind::CaptionNotUtf8 => "has a caption that is not UTF-8 text",
            BadKind::CorruptImage => "has an image that does not decode",
        }
    }
}

/// What to do with a sample that cannot be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BadSamples {
    /// Skip it and count it (img2dataset's failed samples are normal); the run reports the counts.
    #[default]
    Skip,
    /// Stop with an error naming its shard and key.
    Fail,
}

/// A sample that cannot be used, and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct BadSample {
    pub kind: BadKind,
    pub shard: PathBuf,
    pub key: String,
    pub detail: String,
}

impl BadSample {
    pub fn error(&self) -> Error {
        let detail = if self.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.detail)
        };
        Error::bad_file(
            &self.shard,
            format!("sample '{}' {}{detail}", self.key, self.kind.describe()),
            "repair or remove the sample, or pass --bad-samples skip to skip such samples and count them",
        )
    }

    fn line(&self) -> String {
        format!(
            "{}: '{}' {}",
            self.shard.display(),
            self.key,
            self.kind.describe()
        )
    }
}

/// The distinct bad samples a run met, by kind (a sample met again in a later epoch counts once).
#[derive(Debug, Default)]
pub struct SkipLog(Mutex<BTreeMap<(BadKind, PathBuf, String), String>>);

/// [`SkipLog`] as a report shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub by_kind: BTreeMap<BadKind, usize>,
    /// The first few, as "shard: 'key' what is wrong".
    pub examples: Vec<String>,
}

impl Skipped {
    pub fn total(&self) -> usize {
        self.by_kind.values().sum()
    }
}

impl SkipLog {
    pub fn record(&self, bad: &BadSample) {
        if let Ok(mut log) = self.0.lock() {
            log.entry((bad.kind, bad.shard.clone(), bad.key.clone()))
                .or_insert_with(|| bad.line());
        }
    }

    pub fn summary(&self) -> Skipped {
        let Ok(log) = self.0.lock() else {
            return Skipped::default();
        };
        let mut out = Skipped::default();
        for ((kind, ..), line) in log.iter() {
            *out.by_kind.entry(*kind).or_default() += 1;
            if out.examples.len() < 5 {
                out.examples.push(line.clone());
            }
        }
        out
    }
}

/// One usable sample as its shard holds it: the image still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    pub shard: PathBuf,
    pub key: String,
    /// The image member's extension (`png`, `jpg`…).
    pub image_ext: String,
    pub image: Vec<u8>,
    pub caption: String,
}

impl RawSample {
    /// `shard:key.ext`, as errors name the image.
    pub fn image_name(&self) -> PathBuf {
        PathBuf::from(format!(
            "{}:{}.{}",
            self.shard.display(),
            self.key,
            self.image_ext
        ))
    }
}

/// WebDataset's split of a member name: the key is the path up to the first dot of the file name, the
/// extension the rest, lower-cased. Hidden files and names without a dot are not sample members.
fn split_member(name: &str) -> Option<(&str, String)> {
    let base_at = name.rfind('/').map_or(0, |i| i + 1);
    let base = &name[base_at..];
    if base.starts_with('.') {
        return None;
    }
    let dot = base.find('.')?;
    Some((&name[..base_at + dot], base[dot + 1..].to_ascii_lowercase()))
}

/// A member as read: its extension and bytes.
type Member = (String, Vec<u8>);

/// The members of one key, made into a sample or found wanting.
fn finish(shard: &Path, key: &str, members: Vec<Member>) -> Result<RawSample, BadSample> {
    let bad = |kind, detail: String| BadSample {
        kind,
        shard: shard.to_path_buf(),
        key: key.to_string(),
        detail,
    };
    let mut image = None;
    let mut caption = None;
    for (ext, bytes) in members {
        if ext == "txt" {
            caption.get_or_insert(bytes);
        } else if super::folder::IMAGE_EXTENSIONS.contains(&ext.as_str()) && image.is_none() {
            image = Some((ext, bytes));
        }
    }
    let Some((image_ext, image)) = image else {
        return Err(bad(BadKind::NoImage, String::new()));
    };
    let Some(caption) = caption else {
        return Err(bad(BadKind::NoCaption, String::new()));
    };
    let caption = String::from_utf8(caption)
        .map_err(|e| bad(BadKind::CaptionNotUtf8, e.utf8_error().to_string()))?;
    Ok(RawSample {
        shard: shard.to_path_buf(),
        key: key.to_string(),
        image_ext,
        image,
        caption: caption.trim().to_string(),
    })
}

/// What a shard gives, sample by sample: `emit` returns false to stop reading.
type Emit<'a> = dyn FnMut(Result<RawSample, BadSample>) -> bool + 'a;

/// Reads `shard` front to back, grouping consecutive members by key. A shard that cannot be opened is
/// an error; a shard cut short emits what it held before the cut, then a [`BadKind::TruncatedShard`].
pub fn read_shard(shard: &Shard, emit: &mut Emit) -> Result<()> {
    match shard.kind {
        ShardKind::Folder => read_folder(&shard.path, emit),
        ShardKind::Tar | ShardKind::TarGz => {
            let file = std::fs::File::open(&shard.path).map_err(|e| Error::io(&shard.path, e))?;
            let file = std::io::BufReader::with_capacity(1 << 20, file);
            if shard.kind == ShardKind::TarGz {
                read_tar(&shard.path, flate2::read::GzDecoder::new(file), emit);
            } else {
                read_tar(&shard.path, file, emit);
            }
            Ok(())
        }
    }
}

fn read_tar(path: &Path, reader: impl Read, emit: &mut Emit) {
    let truncated = |key: &str, e: &dyn std::fmt::Display| BadSample {
        kind: BadKind::TruncatedShard,
        shard: path.to_path_buf(),
        key: key.to_string(),
        detail: e.to_string(),
    };
    let mut archive = tar::Archive::new(reader);
    let entries = match archive.entries() {
        Ok(entries) => entries,
        Err(e) => {
            emit(Err(truncated("", &e)));
            return;
        }
    };
    let mut group: Option<(String, Vec<Member>)> = None;
    for entry in entries {
        // Where a header read fails: after the last sample begun.
        let at = group.as_ref().map_or("", |g| g.0.as_str()).to_string();
        let mut entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                emit(Err(truncated(&at, &e)));
                return;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => {
                emit(Err(truncated(&at, &e)));
                return;
            }
        };
        let Some((key, ext)) = split_member(&name) else {
            continue;
        };
        if group.as_ref().is_some_and(|g| g.0 != key) {
            let (k, members) = group.take().expect("checked");
            if !emit(finish(path, &k, members)) {
                return;
            }
        }
        // A member's data read short is where the shard was cut: the sample being read is lost.
        let size = entry.size();
        let mut bytes = Vec::with_capacity(size.min(1 << 26) as usize);
        if let Err(e) = entry.read_to_end(&mut bytes) {
            emit(Err(truncated(key, &e)));
            return;
        }
        if bytes.len() as u64 != size {
            let why = format!("{name} holds {} of its {size} bytes", bytes.len());
            emit(Err(truncated(key, &why)));
            return;
        }
        group
            .get_or_insert_with(|| (key.to_string(), Vec::new()))
            .1
            .push((ext, bytes));
    }
    if let Some((k, members)) = group {
        emit(finish(path, &k, members));
    }
}

/// A folder shard: its files sorted by name, grouped by key (as a tar of them, written in name order,
/// is read).
fn read_folder(dir: &Path, emit: &mut Emit) -> Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.file_type().map_err(|e| Error::io(dir, e))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for name in names {
        let Some((key, _)) = split_member(&name) else {
            continue;
        };
        match groups.last_mut() {
            Some((k, files)) if k == key => files.push(name),
            _ => groups.push((key.to_string(), vec![name])),
        }
    }
    for (key, files) in groups {
        let mut members = Vec::with_capacity(files.len());
        for name in files {
            let path = dir.join(&name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            members.push((split_member(&name).expect("grouped by it").1, bytes));
        }
        if !emit(finish(dir, &key, members)) {
            break;
        }
    }
    Ok(())
}

/// `{a..b}` (numbers, zero-padded as written) and `{x,y,z}` groups expanded, as WebDataset and
/// open_clip read shard lists: `shards/{00000..00002}.tar` is three paths.
pub fn expand_braces(spec: &str) -> Result<Vec<String>> {
    let Some(open) = spec.find('{') else {
        if spec.contains('}') {
            return Err(Error::invalid(format!("'{spec}': a '}}' without its '{{'")));
        }
        return Ok(vec![spec.to_string()]);
    };
    let close = spec[open..]
        .find('}')
        .map(|i| open + i)
        .ok_or_else(|| Error::invalid(format!("'{spec}': a '{{' without its '}}'")))?;
    let (head, inner, tail) = (&spec[..open], &spec[open + 1..close], &spec[close + 1..]);
    let choices: Vec<String> = if let Some((a, b)) = inner.split_once("..") {
        let num = |s: &str| {
            s.parse::<u64>().map_err(|_| {
                Error::invalid(format!(
                    "'{spec}': {{{inner}}} is not a range of numbers such as {{00000..00009}}"
                ))
            })
        };
        let (lo, hi) = (num(a)?, num(b)?);
        if lo > hi {
            return Err(Error::invalid(format!(
                "'{spec}': the range {{{inner}}} runs backwards"
            )));
        }
        if hi - lo >= MAX_SHARDS as u64 {
            return Err(Error::invalid(format!(
                "'{spec}': {{{inner}}} names more than {MAX_SHARDS} shards"
            )));
        }
        let padded = (a.len() > 1 && a.starts_with('0')) || (b.len() > 1 && b.starts_with('0'));
        let width = if padded { a.len().max(b.len()) } else { 0 };
        (lo..=hi).map(|n| format!("{n:0width$}")).collect()
    } else if inner.contains(',') {
        inner.split(',').map(str::to_string).collect()
    } else {
        return Err(Error::invalid(format!(
            "'{spec}': {{{inner}}} is neither a range {{a..b}} nor a list {{x,y}}"
        )));
    };
    let rest = expand_braces(tail)?;
    if choices.len() * rest.len() > MAX_SHARDS {
        return Err(Error::invalid(format!(
            "'{spec}' names more than {MAX_SHARDS} shards"
        )));
    }
    Ok(choices
        .iter()
        .flat_map(|c| rest.iter().map(move |r| format!("{head}{c}{r}")))
        .collect())
}

/// The shards of a run and the usable samples each holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardSet {
    pub shards: Vec<Shard>,
    pub sizes: Vec<usize>,
    /// Where the sizes came from: a `sizes.json` beside the shards, or a count (then cached).
    pub sizes_from: PathBuf,
}

/// Whether `data` names shards (a brace list, a `.tar`, a folder of tars or of shard folders) rather
/// than a folder of pairs that [`crate::data::scenes::read_pairs`] reads.
pub fn names_shards(data: &Path) -> bool {
    let s = data.to_string_lossy().to_ascii_lowercase();
    if s.contains('{') || [".tar", ".tar.gz", ".tgz"].iter().any(|x| s.ends_with(x)) {
        return true;
    }
    data.is_dir() && !holds_pairs(data) && !shard_entries(data).is_empty()
}

/// A folder of pairs as `read_pairs` takes it: a captions file, or an image with its caption.
fn holds_pairs(dir: &Path) -> bool {
    if dir.join("captions.tsv").is_file() || dir.join("captions.jsonl").is_file() {
        return true;
    }
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            p.is_file()
                && p.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    super::folder::IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str())
                })
                && p.with_extension("txt").is_file()
        })
    })
}

/// A folder's shards, by name: its tars, else its sub-folders.
fn shard_entries(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let tars: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.is_file() && Shard::at(p).is_ok())
        .cloned()
        .collect();
    if !tars.is_empty() {
        return tars;
    }
    paths
        .into_iter()
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

impl ShardSet {
    /// The shards `data` names, and their sample counts: from a `sizes.json` beside them (open_clip's
    /// `{"00000.tar": 10000, …}`) where it covers every shard, else counted once (reading every shard)
    /// and cached under `cache` by the shards' paths, sizes and times.
    pub fn open(data: &Path, cache: Option<&Path>, progress: &dyn Progress) -> Result<Self> {
        let spec = data.to_string_lossy();
        let paths: Vec<PathBuf> = if spec.contains('{') {
            expand_braces(&spec)?
                .into_iter()
                .map(PathBuf::from)
                .collect()
        } else if data.is_dir() {
            let found = shard_entries(data);
            if found.is_empty() {
                return Err(Error::bad_file(
                    data,
                    "holds no shards",
                    "give .tar shards, a brace list such as shards/{00000..00009}.tar, or a folder of shard folders",
                ));
            }
            found
        } else {
            vec![data.to_path_buf()]
        };
        let shards = paths
            .iter()
            .map(|p| Shard::at(p))
            .collect::<Result<Vec<_>>>()?;
        let (sizes, sizes_from) = match declared_sizes(&shards)? {
            Some(found) => found,
            None => counted_sizes(&shards, cache, progress)?,
        };
        if sizes.iter().sum::<usize>() == 0 {
            return Err(Error::bad_file(
                &shards[0].path,
                format!(
                    "and the other {} shards hold no usable image–caption pair",
                    shards.len() - 1
                ),
                "check that the shards hold KEY.jpg (or .png) with KEY.txt members",
            ));
        }
        Ok(Self {
            shards,
            sizes,
            sizes_from,
        })
    }

    /// Samples an epoch.
    pub fn len(&self) -> usize {
        self.sizes.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The counts of a `sizes.json` in the first shard's folder, if it names every shard.
fn declared_sizes(shards: &[Shard]) -> Result<Option<(Vec<usize>, PathBuf)>> {
    let Some(dir) = shards.first().and_then(|s| s.path.parent()) else {
        return Ok(None);
    };
    let file = dir.join("sizes.json");
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
        Error::bad_file(
            &file,
            format!("is not a JSON map of shard name to sample count ({e})"),
            "fix it or remove it (the shards are then counted)",
        )
    })?;
    let mut sizes = Vec::with_capacity(shards.len());
    for shard in shards {
        let Some(v) = map.get(&shard.name()) else {
            return Ok(None);
        };
        let n = v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| {
                Error::bad_file(
                    &file,
                    format!("gives {} a count of {v}", shard.name()),
                    "give every shard a whole number of samples",
                )
            })?;
        sizes.push(n as usize);
    }
    Ok(Some((sizes, file)))
}

/// Counts the usable samples of every shard, or takes the counts from the cache.
fn counted_sizes(
    shards: &[Shard],
    cache: Option<&Path>,
    progress: &dyn Progress,
) -> Result<(Vec<usize>, PathBuf)> {
    let mut h = Sha256::new();
    for shard in shards {
        let path = std::fs::canonicalize(&shard.path).unwrap_or_else(|_| shard.path.clone());
        let meta = std::fs::metadata(&shard.path).map_err(|e| Error::io(&shard.path, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        h.update(format!("{}\0{}\0{modified}\n", path.display(), meta.len()));
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let file = cache.map(|dir| dir.join("shard-sizes").join(format!("{key}.json")));
    if let Some(sizes) = file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<Vec<usize>>(&b).ok())
        .filter(|s| s.len() == shards.len())
    {
        return Ok((sizes, file.expect("read from it")));
    }
    let mut sizes = Vec::with_capacity(shards.len());
    for (i, shard) in shards.iter().enumerate() {
        check(progress)?;
        let mut n = 0;
        read_shard(shard, &mut |s| {
            n += usize::from(s.is_ok());
            true
        })?;
        sizes.push(n);
        progress.update("counting shards", i + 1, shards.len());
    }
    if let Some(f) = &file {
        // A cache: a failure to write it costs a recount next time, nothing more.
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let json = serde_json::json!(sizes).to_string();
        let _ = crate::error::write_atomic(f, json.as_bytes());
    }
    Ok((sizes, file.unwrap_or_default()))
}

/// How an epoch orders the samples: the shards shuffled, then a buffer of `buffer` samples from which
/// each next sample is drawn at random (WebDataset's `shuffle(n)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOrder {
    pub seed: u64,
    pub buffer: usize,
}

impl StreamOrder {
    fn rng(&self, epoch: usize, pass: usize) -> Rng {
        Rng::new(
            self.seed
                ^ (epoch as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f)
                ^ (pass as u64).wrapping_mul(0xe703_7ed1_a0b4_28db),
        )
    }
}

/// Sends epoch `epoch`'s samples in their order to `tx` until it hangs up: pass after pass over the
/// shards (an epoch asks for its sample count; skipped samples leave a pass short, so the next pass
/// fills it). Bad samples are recorded in `log` and skipped, or sent as the error that ends the stream.
pub fn stream_epoch(
    set: &ShardSet,
    order: StreamOrder,
    epoch: usize,
    policy: BadSamples,
    log: &SkipLog,
    tx: &SyncSender<Result<RawSample>>,
) {
    for pass in 0.. {
        let mut rng = order.rng(epoch, pass);
        let mut shards: Vec<&Shard> = set.shards.iter().collect();
        rng.shuffle(&mut shards);
        let cap = order.buffer.max(1);
        let mut buffer: Vec<RawSample> = Vec::with_capacity(cap.min(1 << 16));
        let mut sent = 0usize;
        let mut open = true;
        let mut draw = |buffer: &mut Vec<RawSample>, rng: &mut Rng| {
            let j = (rng.next_u64() % buffer.len() as u64) as usize;
            sent += 1;
            tx.send(Ok(buffer.swap_remove(j))).is_ok()
        };
        for shard in shards {
            let read = read_shard(shard, &mut |sample| match sample {
                Ok(sample) => {
                    buffer.push(sample);
                    if buffer.len() >= cap {
                        open = draw(&mut buffer, &mut rng);
                    }
                    open
                }
                Err(bad) => {
                    log.record(&bad);
                    if policy == BadSamples::Fail {
                        let _ = tx.send(Err(bad.error()));
                        open = false;
                    }
                    open
                }
            });
            if let Err(e) = read {
                let _ = tx.send(Err(e));
                return;
            }
            if !open {
                return;
            }
        }
        while !buffer.is_empty() {
            if !draw(&mut buffer, &mut rng) {
                return;
            }
        }
        if sent == 0 {
            let _ = tx.send(Err(Error::invalid(format!(
                "no usable image–caption pair in {} shards (from {}); {} skipped",
                set.shards.len(),
                set.shards[0].path.display(),
                log.summary().total()
            ))));
            return;
        }
    }
}

/// One sample's members: (extension, bytes).
pub type Members = Vec<(&'static str, Vec<u8>)>;

/// Writes `count` samples as shards of `per_shard` (`00000.tar`, … and open_clip's `sizes.json`) into
/// `dir`: sample `i` is `make(i)` under key `{i:09}`, its members in name order. Shards are made in
/// parallel, each written whole to a temporary file and renamed into place.
pub fn write_shards(
    dir: &Path,
    count: usize,
    per_shard: usize,
    make: &(dyn Fn(usize) -> Result<Members> + Sync),
) -> Result<()> {
    use rayon::prelude::*;
    if per_shard == 0 {
        return Err(Error::invalid("--shard-size must be at least 1"));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let shards = count.div_ceil(per_shard);
    let sizes = (0..shards)
        .into_par_iter()
        .map(|s| {
            let name = format!("{s:05}.tar");
            let (lo, hi) = (s * per_shard, ((s + 1) * per_shard).min(count));
            let mut builder = tar::Builder::new(Vec::new());
            for i in lo..hi {
                let mut members = make(i)?;
                members.sort_by_key(|m| m.0);
                for (ext, bytes) in members {
                    let mut header = tar::Header::new_gnu();
                    header.set_size(bytes.len() as u64);
                    header.set_mode(0o644);
                    // No time: the same samples make the same bytes.
                    header.set_mtime(0);
                    let member = format!("{i:09}.{ext}");
                    builder
                        .append_data(&mut header, &member, bytes.as_slice())
                        .map_err(|e| Error::io(dir.join(&name), e))?;
                }
            }
            let bytes = builder
                .into_inner()
                .map_err(|e| Error::io(dir.join(&name), e))?;
            crate::error::write_atomic(&dir.join(&name), &bytes)?;
            Ok((name, hi - lo))
        })
        .collect::<Result<BTreeMap<String, usize>>>()?;
    let json = serde_json::to_string_pretty(&sizes).unwrap_or_default();
    crate::error::write_atomic(&dir.join("sizes.json"), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brace_lists_expand_as_webdataset_reads_them() {
        assert_eq!(
            expand_braces("s/{00008..00011}.tar").unwrap(),
            ["s/00008.tar", "s/00009.tar", "s/00010.tar", "s/00011.tar"]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(
            expand_braces("{a,b}/{0..1}.tar").unwrap(),
            ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), ["plain.tar"]);
        for (bad, says) in [
            ("s/{3..1}.tar", "backwards"),
            ("s/{0..x}.tar", "range of numbers"),
            ("s/{00000.tar", "without its"),
            ("s/{abc}.tar", "neither"),
            ("s/{0..99999999}.tar", "more than"),
        ] {
            let e = expand_braces(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn members_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(
            split_member("a.b/000001.seg.PNG"),
            Some(("a.b/000001", "seg.png".into()))
        );
        assert_eq!(split_member("x/.hidden.txt"), None);
        assert_eq!(split_member("README"), None);
    }

    #[test]
    fn the_buffer_shuffle_is_a_permutation_of_the_pass_and_a_seed_fixes_it() {
        let dir = tempfile::tempdir().unwrap();
        // Two folder shards of 5 samples; 10 samples an epoch.
        for (s, keys) in [("a", 0..5), ("b", 5..10)] {
            let d = dir.path().join(s);
            std::fs::create_dir(&d).unwrap();
            for k in keys {
                std::fs::write(d.join(format!("{k:03}.png")), b"png").unwrap();
                std::fs::write(d.join(format!("{k:03}.txt")), format!("c{k}")).unwrap();
            }
        }
        let set = ShardSet::open(dir.path(), None, &crate::progress::Silent).unwrap();
        assert_eq!(set.sizes, [5, 5]);
        let take = |seed, epoch, buffer, n| {
            let (tx, rx) = std::sync::mpsc::sync_channel(4);
            let log = SkipLog::default();
            let order = StreamOrder { seed, buffer };
            let set = set.clone();
            std::thread::spawn(move || {
                stream_epoch(&set, order, epoch, BadSamples::Skip, &log, &tx)
            });
            rx.iter()
                .take(n)
                .map(|s| s.unwrap().key)
                .collect::<Vec<_>>()
        };
        let a = take(1, 0, 4, 20);
        // Two passes, each every sample once, the second in another order.
        let mut first: Vec<_> = a[..10].to_vec();
        first.sort();
        assert_eq!(
            first,
            (0..10).map(|k| format!("{k:03}")).collect::<Vec<_>>()
        );
        assert_ne!(a[..10], a[10..]);
        assert_eq!(a, take(1, 0, 4, 20), "a seed and epoch fix the order");
        assert_ne!(a[..10], take(1, 1, 4, 10)[..], "each epoch its own order");
        assert_ne!(a[..10], take(2, 0, 4, 10)[..]);
        // A buffer of one only reorders the shards.
        let plain = take(1, 0, 1, 10);
        assert!(plain[..5].windows(2).all(|w| w[0] < w[1]), "{plain:?}");
    }
}
