//! A torch checkpoint is a zip whose `data.pkl` is a Python pickle, and a pickle can name any Python
//! function for its loader to call (`os.system` included). candle's reader never calls anything, but a
//! file that *asks* to is not a checkpoint a user should trust either: before any tensor is read, every
//! opcode of the pickle is walked (all protocols, 0–5) and every global it names must be one that tensor
//! rebuilding needs, or one of the inert classes a training checkpoint's optimiser and scheduler state
//! holds (CoOp's trainer saves its SGD and its cosine schedule beside the weights). Nothing here is ever
//! instantiated, so letting those names through keeps the guarantee; anything else — another global, an
//! opcode that builds objects by name (`INST`, `OBJ`), an extension-registry lookup, a `STACK_GLOBAL`
//! whose names are not plain strings just pushed — refuses the file, naming what it asked for.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// torch's learning-rate schedulers, whose `state_dict()` may pickle another scheduler object (Dassl's
/// warm-up wrappers keep their successor, and it its optimiser): plain data, no code.
const SCHEDULERS: [&str; 15] = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "SequentialLR",
    "CosineAnnealingLR",
    "ChainedScheduler",
    "ReduceLROnPlateau",
    "CyclicLR",
    "CosineAnnealingWarmRestarts",
    "OneCycleLR",
    "PolynomialLR",
];

/// `(module, name)` pairs torch.save writes for tensors, parameters, state dicts and the optimiser and
/// scheduler objects a scheduler's state holds.
fn allowed(module: &str, name: &str) -> bool {
    match module {
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch" => {
            name.ends_with("Storage")
                || matches!(
                    name,
                    "Size" | "device" | "float32" | "float16" | "bfloat16" | "float64"
                )
        }
        "torch.storage" => name == "UntypedStorage" || name == "TypedStorage",
        "collections" => name == "OrderedDict" || name == "defaultdict",
        // An optimiser's `state` is a `defaultdict(dict)`; protocol 2 spells builtins `__builtin__`.
        "builtins" | "__builtin__" => name == "dict",
        "torch.optim.lr_scheduler" => SCHEDULERS.contains(&name),
        "torch.optim.sgd" => name == "SGD",
        "torch.optim.adam" => name == "Adam",
        "torch.optim.adamw" => name == "AdamW",
        "torch.optim.rmsprop" => name == "RMSprop",
        _ => false,
    }
}

/// The globals a pickle names, or why it cannot be trusted.
pub fn check_pickle(data: &[u8]) -> std::result::Result<Vec<(String, String)>, String> {
    let mut r = Cursor { data, pos: 0 };
    let mut globals = Vec::new();
    // The last two strings pushed, for STACK_GLOBAL (protocol 4 names its global from the stack).
    let mut strings: Vec<Option<String>> = Vec::new();
    loop {
        let op = r.byte().ok_or("the pickle ends without its STOP opcode")?;
        let mut pushed: Option<Option<String>> = Some(None);
        match op {
            b'.' => break,
            // No argument.
            b'(' | b'0' | b'1' | b'2' | b'N' | b'Q' | b'R' | b'a' | b'b' | b'd' | b'}' | b'e'
            | b'l' | b']' | b's' | b't' | b')' | b'u' | 0x81 | 0x85 | 0x86 | 0x87 | 0x88 | 0x89
            | 0x8f | 0x90 | 0x91 | 0x92 | 0x94 | 0x97 | 0x98 => {}
            // A newline-terminated argument.
            b'F' | b'I' | b'L' | b'P' | b'g' | b'p' => {
                r.line()?;
            }
            b'S' | b'V' => pushed = Some(Some(r.line()?)),
            // Fixed-size arguments.
            b'K' | b'h' | b'q' | 0x80 => r.skip(1)?,
            b'M' => r.skip(2)?,
            b'J' | b'j' | b'r' => r.skip(4)?,
            b'G' | 0x95 => r.skip(8)?,
            // Length-prefixed data.
            b'T' | b'B' => {
                let n = r.len(4)?;
                r.skip(n)?;
            }
            b'U' | b'C' | 0x8a => {
                let n = r.len(1)?;
                r.skip(n)?;
            }
            0x8b => {
                let n = r.len(4)?;
                r.skip(n)?;
            }
            0x8e | 0x96 => {
                let n = r.len(8)?;
                r.skip(n)?;
            }
            b'X' => {
                let n = r.len(4)?;
                pushed = Some(Some(r.text(n)?));
            }
            0x8c => {
                let n = r.len(1)?;
                pushed = Some(Some(r.text(n)?));
            }
            0x8d => {
                let n = r.len(8)?;
                pushed = Some(Some(r.text(n)?));
            }
            b'c' => globals.push(trusted(r.line()?, r.line()?)?),
            0x93 => {
                let name = strings.pop().flatten();
                let module = strings.pop().flatten();
                match (module, name) {
                    (Some(m), Some(n)) => globals.push(trusted(m, n)?),
                    _ => return Err("it names a global through STACK_GLOBAL from values it did not just push as strings".into()),
                }
            }
            b'i' => {
                let (module, name) = (r.line()?, r.line()?);
                return Err(format!(
                    "it builds an object by name (INST {module}.{name})"
                ));
            }
            b'o' => return Err("it builds an object by name (OBJ)".into()),
            0x82..=0x84 => {
                return Err("it looks a function up in the extension registry (EXT)".into())
            }
            other => {
                return Err(format!(
                    "unknown pickle opcode 0x{other:02x} at byte {}",
                    r.pos - 1
                ))
            }
        }
        if let Some(s) = pushed {
            strings.push(s);
            if strings.len() > 2 {
                strings.remove(0);
            }
        }
    }
    Ok(globals)
}

fn trusted(module: String, name: String) -> std::result::Result<(String, String), String> {
    if allowed(&module, &name) {
        Ok((module, name))
    } else {
        Err(format!(
            "it asks for the Python function {module}.{name}, which rebuilding tensors never needs"
        ))
    }
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn skip(&mut self, n: usize) -> std::result::Result<(), String> {
        if self.data.len() - self.pos < n {
            return Err(format!(
                "the pickle is cut short at byte {}",
                self.data.len()
            ));
        }
        self.pos += n;
        Ok(())
    }

    fn len(&mut self, width: usize) -> std::result::Result<usize, String> {
        let start = self.pos;
        self.skip(width)?;
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&self.data[start..start + width]);
        usize::try_from(u64::from_le_bytes(bytes))
            .map_err(|_| "a length does not fit in memory".to_string())
    }

    fn text(&mut self, n: usize) -> std::result::Result<String, String> {
        let start = self.pos;
        self.skip(n)?;
        Ok(String::from_utf8_lossy(&self.data[start..start + n]).into_owned())
    }

    fn line(&mut self) -> std::result::Result<String, String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("a text argument has no end of line")?;
        self.pos += end + 1;
        Ok(String::from_utf8_lossy(&rest[..end])
            .trim_end_matches('\r')
            .to_string())
    }
}

/// Checks every pickle inside a torch zip checkpoint (or a bare pickle file) before anything is read:
/// the globals they name, all trusted.
pub fn check_checkpoint(path: &Path) -> Result<Vec<(String, String)>> {
    let fix = "promptscope reads only tensors from torch checkpoints; re-save it with torch.save(model.state_dict()) from code you trust";
    let bad = |why: String| Error::bad_file(path, format!("refused: {why}"), fix);
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut pickles: Vec<(String, Vec<u8>)> = Vec::new();
    match zip::ZipArchive::new(file) {
        Ok(mut zip) => {
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| bad(format!("unreadable zip entry ({e})")))?;
                let name = entry
                    .name()
                    .map_err(|e| bad(format!("a zip entry with an unreadable name ({e})")))?
                    .to_string();
                if name.ends_with(".pkl") {
                    let mut data = Vec::new();
                    entry
                        .read_to_end(&mut data)
                        .map_err(|e| bad(format!("unreadable {name} ({e})")))?;
                    pickles.push((name, data));
                }
            }
            if pickles.is_empty() {
                return Err(bad(
                    "the zip holds no data.pkl: not a torch checkpoint".into()
                ));
            }
        }
        // The legacy (pre-1.6) format is a bare pickle stream, which starts with a PROTO opcode.
        Err(_) => {
            let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if data.first() != Some(&0x80) {
                return Err(Error::bad_file(
                    path,
                    "not a torch checkpoint (neither a zip nor a pickle)",
                    "pass CoOp's prompt_learner/model.pth.tar-N",
                ));
            }
            pickles.push(("pickle".into(), data));
        }
    }
    let mut globals = Vec::new();
    for (name, data) in pickles {
        globals.extend(check_pickle(&data).map_err(|why| bad(format!("{name}: {why}")))?);
    }
    Ok(globals)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GLOBAL module name`, args, `REDUCE`, `STOP`, as protocol 2 writes it.
    fn calls(module: &str, name: &str) -> Vec<u8> {
        let mut p = vec![0x80, 2, b'c'];
        p.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
        p.extend_from_slice(b"X\x02\x00\x00\x00ls\x85R.");
        p
    }

    #[test]
    fn only_the_globals_of_tensor_rebuilding_pass() {
        assert_eq!(
            check_pickle(&calls("collections", "OrderedDict"))
                .unwrap()
                .len(),
            1
        );
        for (m, n) in [("torch.optim.sgd", "SGD"), ("__builtin__", "dict")] {
            assert_eq!(check_pickle(&calls(m, n)).unwrap(), [(m.into(), n.into())]);
        }
        for (m, n) in [
            ("os", "system"),
            ("builtins", "eval"),
            ("__builtin__", "getattr"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("torch.optim.lr_scheduler", "Callable"),
            ("torch.optim.sgd", "sgd"),
        ] {
            let err = check_pickle(&calls(m, n)).unwrap_err();
            assert!(err.contains(&format!("{m}.{n}")), "{err}");
        }
        // Protocol 4: the names come from two strings just pushed.
        let mut p = vec![0x80, 4, 0x8c, 2];
        p.extend_from_slice(b"os");
        p.extend_from_slice(&[0x8c, 6]);
        p.extend_from_slice(b"system");
        p.extend_from_slice(&[0x93, b')', b'R', b'.']);
        assert!(check_pickle(&p).unwrap_err().contains("os.system"));
        // A STACK_GLOBAL fed from the memo cannot be checked, so it is refused.
        assert!(check_pickle(&[0x80, 4, b'h', 0, b'h', 1, 0x93, b'.'])
            .unwrap_err()
            .contains("STACK_GLOBAL"));
        assert!(check_pickle(b"(ios\nsystem\n.")
            .unwrap_err()
            .contains("INST os.system"));
        assert!(check_pickle(&[0x80, 2, 0x82, 1, b'.'])
            .unwrap_err()
            .contains("extension"));
    }

    #[test]
    fn cut_and_garbled_pickles_are_errors_not_panics() {
        let good = calls("collections", "OrderedDict");
        for cut in 0..good.len() {
            assert!(check_pickle(&good[..cut]).is_err(), "cut at {cut}");
        }
        assert!(check_pickle(&[0x80, 2, b'X', 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(
            check_pickle(&[0x80, 4, 0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err()
        );
        assert!(check_pickle(&[0xfe]).unwrap_err().contains("unknown"));
    }
}
