//! Lists of a unit enum's values as the command line and the app take them: each item a name, a
//! comma-separated list, or `all`; repeats dropped, the order kept.

use crate::error::{Error, Result};

/// Parses `items` into values of `T` (names as `clap::ValueEnum` spells them, any case); `all` stands
/// for `every`. An unknown name is an error that lists the known ones, calling them `what`.
pub fn parse_list<T: clap::ValueEnum + Copy + PartialEq>(
    items: &[String],
    every: &[T],
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    for name in items.iter().flat_map(|i| i.split(',')).map(str::trim) {
        let found = if name == "all" {
            every.to_vec()
        } else {
            vec![T::from_str(name, true).map_err(|_| {
                let known: Vec<String> = every
                    .iter()
                    .filter_map(|v| v.to_possible_value())
                    .map(|p| p.get_name().to_string())
                    .collect();
                Error::invalid(format!(
                    "unknown {what} '{name}': one of {}, or all",
                    known.join(", ")
                ))
            })?]
        };
        for v in found {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    Ok(out)
}
