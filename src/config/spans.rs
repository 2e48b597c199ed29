//! Where things are in the file: key paths (`routes[3].path_regex`) to line numbers,
//! and byte spans (from serde errors) back to the key path that holds them.
//!
//! Works on toml's spanned parse tree (`toml::de::DeTable`), so it needs no second
//! parser and cannot disagree with the one serde uses.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// One step of a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// Renders a path the way error messages show it: `routes[3].headers.x-priority`.
pub(crate) fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Byte offsets to 1-based line numbers.
#[derive(Debug)]
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(src: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Lines { starts }
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

/// Key path -> line of the key (or of the array element) in the file.
#[derive(Debug, Default)]
pub(crate) struct SpanIndex {
    lines: HashMap<String, usize>,
}

impl SpanIndex {
    pub(crate) fn build(root: &DeTable<'_>, lines: &Lines) -> Self {
        let mut index = SpanIndex::default();
        let mut path = Vec::new();
        index.walk_table(root, &mut path, lines);
        index
    }

    fn walk_table(&mut self, table: &DeTable<'_>, path: &mut Vec<Seg>, lines: &Lines) {
        for (k, v) in table.iter() {
            path.push(Seg::Key(k.get_ref().to_string()));
            self.lines.insert(render(path), lines.line(k.span().start));
            self.walk_value(v.get_ref(), path, lines);
            path.pop();
        }
    }

    fn walk_value(&mut self, value: &DeValue<'_>, path: &mut Vec<Seg>, lines: &Lines) {
        match value {
            DeValue::Table(t) => self.walk_table(t, path, lines),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Seg::Index(i));
                    self.lines
                        .insert(render(path), lines.line(item.span().start));
                    self.walk_value(item.get_ref(), path, lines);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// The line of `path`, or of its nearest ancestor that is in the file
    /// (a missing `routes[2].class` points at `routes[2]`).
    pub(crate) fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// The deepest table entry whose key or value covers `span`: the key serde
/// complained about. `None` if the span is outside every entry.
pub(crate) fn locate(root: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Seg>> {
    let mut best: Option<Vec<Seg>> = None;
    let mut path = Vec::new();
    locate_in_table(root, span, &mut path, &mut best);
    best
}

fn locate_in_table(
    table: &DeTable<'_>,
    span: &Range<usize>,
    path: &mut Vec<Seg>,
    best: &mut Option<Vec<Seg>>,
) {
    for (k, v) in table.iter() {
        path.push(Seg::Key(k.get_ref().to_string()));
        if contains(&k.span(), span) || contains(&v.span(), span) {
            let deeper = best.as_ref().is_none_or(|b| b.len() < path.len());
            if deeper {
                *best = Some(path.clone());
            }
        }
        locate_in_value(v.get_ref(), span, path, best);
        path.pop();
    }
}

fn locate_in_value(
    value: &DeValue<'_>,
    span: &Range<usize>,
    path: &mut Vec<Seg>,
    best: &mut Option<Vec<Seg>>,
) {
    match value {
        DeValue::Table(t) => locate_in_table(t, span, path, best),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                locate_in_value(item.get_ref(), span, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Removes the table entry at `path` (whose last step must be a key).
/// Returns whether something was removed.
pub(crate) fn remove(root: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut table = root;
    let mut segs = parents.iter();
    let Some(first) = segs.next() else {
        return table.remove(last.as_str()).is_some();
    };
    let mut value = match first {
        Seg::Key(k) => match table.get_mut(k.as_str()) {
            Some(v) => v.get_mut(),
            None => return false,
        },
        Seg::Index(_) => return false,
    };
    for seg in segs {
        value = match (seg, value) {
            (Seg::Key(k), DeValue::Table(t)) => match t.get_mut(k.as_str()) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            (Seg::Index(i), DeValue::Array(a)) => match a.get_mut(*i) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            _ => return false,
        };
    }
    match value {
        DeValue::Table(t) => {
            table = t;
            table.remove(last.as_str()).is_some()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "[listener]\naddr = \"x\"\n\n[[routes]]\nname = \"a\"\n\n[[routes]]\nname = \"b\"\nheaders = { \"x-p\" = \"1\" }\n";

    #[test]
    fn paths_map_to_lines() {
        let tree = DeTable::parse(SRC).unwrap();
        let index = SpanIndex::build(tree.get_ref(), &Lines::new(SRC));
        assert_eq!(index.line("listener.addr"), Some(2));
        assert_eq!(index.line("routes[1].name"), Some(8));
        assert_eq!(index.line("routes[1].headers.x-p"), Some(9));
        assert_eq!(index.line("routes[0].class"), index.line("routes[0]"));
        assert_eq!(index.line("nowhere"), None);
    }

    #[test]
    fn locate_and_remove_the_deepest_entry() {
        let mut tree = DeTable::parse(SRC).unwrap().into_inner();
        let at = SRC.find("\"x-p\"").unwrap();
        let path = locate(&tree, &(at..at + 5)).unwrap();
        assert_eq!(render(&path), "routes[1].headers.x-p");
        assert!(remove(&mut tree, &path));
        assert_eq!(
            locate(&tree, &(at..at + 5)).map(|p| render(&p)),
            Some("routes[1].headers".to_owned())
        );
    }
}
