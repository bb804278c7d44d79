//! Class-name files. CoOp's `classnames.txt` maps class folders to the names prompts use, one class a
//! line: `<folder name> <class name with spaces>` (`n01440764 tench`); blank lines are ignored. A plain
//! list (one class name a line, in class order) is what CoOp's own checkpoints come with elsewhere, so
//! [`read_names`] takes either.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

const COOP_FIX: &str =
    "write one class a line as '<folder name> <class name>', e.g. 'n01440764 tench'";

/// One line of a CoOp class-name file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassName {
    pub folder: String,
    pub name: String,
}

/// How a class-name file lists its classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `<folder name> <class name>` per line (CoOp's `classnames.txt`).
    Coop,
    /// One class name per line, in class order.
    Plain,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::missing(path, "pass a class-name file: ".to_string() + COOP_FIX)
        }
        _ => Error::io(path, e),
    })
}

/// The non-blank lines of `text`, trimmed, with their 1-based line numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
}

/// The entries of a CoOp class-name file, in file order. A line without a class name, a folder listed
/// twice or a class name given to two folders is an error naming the file and the line.
pub fn read_coop(path: &Path) -> Result<Vec<ClassName>> {
    parse_coop(&read_text(path)?, path)
}

fn parse_coop(text: &str, path: &Path) -> Result<Vec<ClassName>> {
    let mut out: Vec<ClassName> = Vec::new();
    let mut folders: HashMap<String, usize> = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (n, line) in lines(text) {
        let Some((folder, name)) = line.split_once(char::is_whitespace) else {
            return Err(Error::bad_file(
                path,
                format!("line {n} ('{line}') has a folder name but no class name"),
                COOP_FIX,
            ));
        };
        let name = name.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(first) = folders.insert(folder.to_string(), n) {
            return Err(Error::bad_file(
                path,
                format!("lists folder '{folder}' twice (lines {first} and {n})"),
                "keep one line per class folder",
            ));
        }
        if let Some(first) = names.insert(name.clone(), n) {
            return Err(Error::bad_file(
                path,
                format!("gives the class name '{name}' to two folders (lines {first} and {n})"),
                "give every class its own name, or prompts cannot tell them apart",
            ));
        }
        out.push(ClassName {
            folder: folder.to_string(),
            name,
        });
    }
    if out.is_empty() {
        return Err(Error::bad_file(path, "lists no classes", COOP_FIX));
    }
    Ok(out)
}

/// Which format `text` is in: CoOp's when every line has a folder name and a class name and every folder
/// name has a digit in it (WordNet ids such as `n01440764`, numbered folders such as
/// `001.Black_footed_Albatross`), else a plain list: a plain list's first words ("red circle") have none.
pub fn detect(text: &str) -> Format {
    let mut any = false;
    for (_, line) in lines(text) {
        any = true;
        match line.split_once(char::is_whitespace) {
            Some((folder, _)) if folder.chars().any(|c| c.is_ascii_digit()) => {}
            _ => return Format::Plain,
        }
    }
    if any {
        Format::Coop
    } else {
        Format::Plain
    }
}

/// The class names of a file in either format, in file order, and the format they were read as (`format`
/// when given, else [`detect`]ed).
pub fn read_names(path: &Path, format: Option<Format>) -> Result<(Vec<String>, Format)> {
    let text = read_text(path)?;
    let format = format.unwrap_or_else(|| detect(&text));
    let names: Vec<String> = match format {
        Format::Coop => parse_coop(&text, path)?
            .into_iter()
            .map(|c| c.name)
            .collect(),
        Format::Plain => lines(&text).map(|(_, l)| l.to_string()).collect(),
    };
    if names.is_empty() {
        return Err(Error::bad_file(
            path,
            "lists no classes",
            "write one class name a line",
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if let Some(first) = seen.insert(n, i + 1) {
            return Err(Error::bad_file(
                path,
                format!(
                    "lists the class name '{n}' twice (classes {first} and {})",
                    i + 1
                ),
                "give every class its own name, or prompts cannot tell them apart",
            ));
        }
    }
    Ok((names, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<ClassName>> {
        parse_coop(text, Path::new("classnames.txt"))
    }

    #[test]
    fn coop_lines_split_at_the_first_space_and_skip_blank_lines() {
        let got =
            parse("n01440764 tench\n\n  n01443537   goldfish  \nn01484850 great  white shark\n")
                .unwrap();
        let pairs: Vec<(&str, &str)> = got
            .iter()
            .map(|c| (c.folder.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("n01440764", "tench"),
                ("n01443537", "goldfish"),
                ("n01484850", "great white shark")
            ]
        );
    }

    #[test]
    fn bad_coop_files_name_the_file_and_line() {
        let e = parse("n01 tench\nn02\n").unwrap_err().to_string();
        assert!(
            e.contains("classnames.txt") && e.contains("line 2") && e.contains("no class name"),
            "{e}"
        );
        let e = parse("n01 tench\nn01 goldfish\n").unwrap_err().to_string();
        assert!(e.contains("folder 'n01' twice (lines 1 and 2)"), "{e}");
        let e = parse("n01 tench\nn02 tench\n").unwrap_err().to_string();
        assert!(e.contains("'tench' to two folders"), "{e}");
        assert!(parse("\n \n")
            .unwrap_err()
            .to_string()
            .contains("no classes"));
    }

    #[test]
    fn format_is_detected_from_the_folder_names() {
        assert_eq!(
            detect("n01440764 tench\nn01443537 goldfish\n"),
            Format::Coop
        );
        assert_eq!(
            detect("001.Black_footed_Albatross Black footed Albatross\n"),
            Format::Coop
        );
        assert_eq!(detect("red circle\ngreen square\n"), Format::Plain);
        assert_eq!(detect("n01440764 tench\ngoldfish\n"), Format::Plain);
        assert_eq!(detect(""), Format::Plain);
    }

    #[test]
    fn read_names_takes_either_format() {
        let d = tempfile::tempdir().unwrap();
        let coop = d.path().join("coop.txt");
        std::fs::write(&coop, "n01 tench\nn02 great white shark\n").unwrap();
        assert_eq!(
            read_names(&coop, None).unwrap(),
            (
                vec!["tench".to_string(), "great white shark".to_string()],
                Format::Coop
            )
        );
        // Forced plain: every line is a name as it stands.
        assert_eq!(
            read_names(&coop, Some(Format::Plain)).unwrap().0,
            ["n01 tench", "n02 great white shark"]
        );
        let plain = d.path().join("plain.txt");
        std::fs::write(&plain, "red circle\n\ngreen square\nred circle\n").unwrap();
        let e = read_names(&plain, None).unwrap_err().to_string();
        assert!(
            e.contains("plain.txt") && e.contains("'red circle' twice"),
            "{e}"
        );
        let e = read_names(&d.path().join("none.txt"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("none.txt") && e.contains("not found"), "{e}");
    }
}
