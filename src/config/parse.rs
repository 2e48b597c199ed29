//! TOML text -> [`RawConfig`], with every syntax error and as many structural
//! errors (unknown keys, wrong types) as the file holds, each with its line.
//!
//! serde stops at the first structural error, so after each one the offending
//! key is dropped from the parse tree (its default applies) and deserialization
//! is retried, up to [`MAX_STRUCTURAL_ERRORS`] times.

use serde::Deserialize;
use toml::de::DeTable;

use super::raw::{self, RawConfig};
use super::spans::{self, Lines, SpanIndex};
use super::ConfigError;

const MAX_STRUCTURAL_ERRORS: usize = 50;

pub(crate) struct Parsed {
    pub raw: RawConfig,
    pub index: SpanIndex,
    /// Structural errors; the keys they were about are in `removed`.
    pub errors: Vec<ConfigError>,
    pub removed: Vec<String>,
}

/// Parses `src`. A syntax error is fatal (`Err` with all of them); structural
/// errors are returned in `Parsed::errors` alongside a best-effort `RawConfig`.
pub(crate) fn parse(src: &str, origin: &str) -> Result<Parsed, Vec<ConfigError>> {
    let lines = Lines::new(src);
    let error_at =
        |span: Option<std::ops::Range<usize>>, path: String, message: &str| ConfigError {
            origin: origin.to_owned(),
            line: span.map(|s| lines.line(s.start)),
            path,
            message: message.to_owned(),
        };

    let (tree, syntax) = DeTable::parse_recoverable(src);
    if !syntax.is_empty() {
        let mut errors: Vec<ConfigError> = syntax
            .iter()
            .map(|e| error_at(e.span(), String::new(), e.message()))
            .collect();
        // Recovery can report one mistake more than once.
        errors.sort_by_key(|e| e.line);
        errors.dedup();
        return Err(errors);
    }
    let index = SpanIndex::build(tree.get_ref(), &lines);

    let mut tree = tree;
    let mut errors = Vec::new();
    let mut removed = Vec::new();
    loop {
        match RawConfig::deserialize(toml::de::Deserializer::from(tree.clone())) {
            Ok(mut raw) => {
                if raw.classes.is_none() {
                    raw.classes = Some(raw::default_classes());
                }
                return Ok(Parsed {
                    raw,
                    index,
                    errors,
                    removed,
                });
            }
            Err(e) => {
                let located = e
                    .span()
                    .and_then(|span| spans::locate(tree.get_ref(), &span));
                let path = located.as_deref().map(spans::render).unwrap_or_default();
                errors.push(error_at(e.span(), path.clone(), e.message()));
                let dropped = located.is_some_and(|p| spans::remove(tree.get_mut(), &p));
                if !dropped || errors.len() >= MAX_STRUCTURAL_ERRORS {
                    return Err(errors);
                }
                removed.push(path);
            }
        }
    }
}
