//! Key path → source position index for a YAML document.
//!
//! Serde forgets where values came from, but error messages must name the line. So the text is
//! parsed a second time with the parser serde-saphyr itself uses (`granit-parser`, re-exported as
//! `serde_saphyr::granit_parser`), and every node's path (`backends[1].url`) is recorded with the
//! position of its key and of its value. Paths are rendered exactly as the validator renders them,
//! so a validation finding is located by a plain lookup.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser, Span};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl Pos {
    fn of(span: &Span) -> Self {
        // granit-parser lines are 1-based but columns 0-based; serde-saphyr reports both 1-based.
        Self { line: span.start.line(), column: span.start.col() + 1 }
    }
}

/// Where one node sits: its mapping key (absent for sequence items and the root) and its value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<Pos>,
    value: Pos,
}

/// The index of one YAML document. Built best-effort: a syntax error just ends the walk, because
/// the caller reports syntax errors from serde-saphyr and only needs paths for what parsed.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<String, Entry>,
    /// Paths in document order, so a position lookup can prefer the outermost or innermost node.
    order: Vec<String>,
}

/// Appends a mapping key to a path.
pub fn key_path(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// Appends a sequence index to a path.
pub fn index_path(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// Walk state for one open collection. `path` is `None` inside a complex (non-scalar) mapping key,
/// whose contents have no meaningful path.
enum Frame {
    Map { path: Option<String>, pending_key: Option<(String, Pos)>, is_key: bool, start: Pos },
    Seq { path: Option<String>, next: usize, is_key: bool, start: Pos },
}

impl Index {
    /// Indexes the first document of `text`.
    pub fn build(text: &str) -> Self {
        let mut index = Index::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut seen_root = false;
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let pos = Pos::of(&span);
            match event {
                Event::Scalar(ref value, ..) => {
                    index.node(&mut stack, &mut seen_root, pos, Some(value.as_ref()), None);
                }
                Event::Alias(..) => {
                    index.node(&mut stack, &mut seen_root, pos, Some("*alias"), None);
                }
                Event::MappingStart(..) => {
                    index.node(&mut stack, &mut seen_root, pos, None, Some(true));
                }
                Event::SequenceStart(..) => {
                    index.node(&mut stack, &mut seen_root, pos, None, Some(false));
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    let (is_key, start) = match stack.pop() {
                        Some(
                            Frame::Map { is_key, start, .. } | Frame::Seq { is_key, start, .. },
                        ) => (is_key, start),
                        None => (false, pos),
                    };
                    // A finished complex key becomes the pending key of its mapping.
                    if is_key && let Some(Frame::Map { pending_key, .. }) = stack.last_mut() {
                        *pending_key = Some(("?".to_owned(), start));
                    }
                }
                Event::DocumentEnd => break,
                _ => {}
            }
        }
        index
    }

    /// Handles a node event. `scalar` is the key text when the node is a scalar; `collection` is
    /// `Some(is_mapping)` when the node opens a collection.
    fn node(
        &mut self,
        stack: &mut Vec<Frame>,
        seen_root: &mut bool,
        pos: Pos,
        scalar: Option<&str>,
        collection: Option<bool>,
    ) {
        let (path, key_pos, is_key) = match stack.last_mut() {
            None => {
                if *seen_root {
                    return;
                }
                *seen_root = true;
                (Some(String::new()), None, false)
            }
            Some(Frame::Seq { path, next, .. }) => {
                let p = path.as_deref().map(|p| index_path(p, *next));
                *next += 1;
                (p, None, false)
            }
            Some(Frame::Map { path, pending_key, .. }) => match pending_key.take() {
                Some((key, kpos)) => {
                    (path.as_deref().map(|p| key_path(p, &key)), Some(kpos), false)
                }
                None => {
                    // This node is a key.
                    if let Some(text) = scalar {
                        *pending_key = Some((text.to_owned(), pos));
                    }
                    (None, None, true)
                }
            },
        };
        if let Some(p) = &path
            && !is_key
        {
            self.entries.insert(p.clone(), Entry { key: key_pos, value: pos });
            self.order.push(p.clone());
        }
        match collection {
            Some(true) => {
                stack.push(Frame::Map { path, pending_key: None, is_key, start: pos });
            }
            Some(false) => stack.push(Frame::Seq { path, next: 0, is_key, start: pos }),
            None => {}
        }
    }

    /// Where `path` is written: its key for mapping entries, else its value.
    pub fn pos(&self, path: &str) -> Option<Pos> {
        self.entries.get(path).map(|e| e.key.unwrap_or(e.value))
    }

    /// Where `path` is written, or else its nearest written ancestor (a missing key is reported at
    /// the mapping that lacks it).
    pub fn pos_or_ancestor(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.pos(p) {
                return Some(pos);
            }
            if p.is_empty() {
                return None;
            }
            p = match p.rfind(['.', '[']) {
                Some(i) => &p[..i],
                None => "",
            };
        }
    }

    /// The mapping a missing key belongs to, given the position serde-saphyr reports for it (the
    /// mapping's start or, after reading some of it, one of its keys): its path and its position.
    pub fn mapping_at(&self, at: Pos) -> Option<(&str, Pos)> {
        let entry = |p: &String| self.entries.get(p.as_str());
        if let Some(p) = self.order.iter().find(|p| entry(p).is_some_and(|e| e.value == at)) {
            return Some((p.as_str(), self.pos(p)?));
        }
        let key = self.order.iter().rev().find(|p| entry(p).is_some_and(|e| e.key == Some(at)))?;
        // Struct field names hold no '.', so the parent is everything before the last one.
        let parent = key.rfind('.').map_or("", |i| &key[..i]);
        let (path, _) = self.entries.get_key_value(parent)?;
        Some((path.as_str(), self.pos(parent)?))
    }

    /// The path of the node whose key (if `prefer_key`) or value starts at `at`. A block mapping
    /// starts where its first key does, so value lookups take the outermost match (the mapping)
    /// and key lookups the innermost (the key).
    pub fn path_at(&self, at: Pos, prefer_key: bool) -> Option<&str> {
        let entry = |p: &String| self.entries.get(p.as_str());
        let by_key =
            || self.order.iter().rev().find(|p| entry(p).is_some_and(|e| e.key == Some(at)));
        let by_value = || self.order.iter().find(|p| entry(p).is_some_and(|e| e.value == at));
        let found =
            if prefer_key { by_key().or_else(by_value) } else { by_value().or_else(by_key) };
        found.map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
name: gw
backends:
  - name: a
    transport: stdio
  - {name: b, url: 'http://x'}
aggregation:
  tools:
    - backend: a
      overrides:
        fetch: {name: get}
";

    #[test]
    fn records_keys_and_values() {
        let idx = Index::build(DOC);
        assert_eq!(idx.pos("name"), Some(Pos { line: 1, column: 1 }));
        assert_eq!(idx.pos("backends[0]"), Some(Pos { line: 3, column: 5 }));
        assert_eq!(idx.pos("backends[0].transport"), Some(Pos { line: 4, column: 5 }));
        assert_eq!(idx.pos("backends[1].url"), Some(Pos { line: 5, column: 15 }));
        assert_eq!(idx.pos("aggregation.tools[0].overrides.fetch.name").map(|p| p.line), Some(10));
        assert_eq!(idx.pos_or_ancestor("backends[1].command").map(|p| p.line), Some(5));
    }

    #[test]
    fn finds_paths_by_position() {
        let idx = Index::build(DOC);
        let at = Pos { line: 3, column: 5 };
        assert_eq!(idx.path_at(at, true), Some("backends[0].name"));
        assert_eq!(idx.path_at(at, false), Some("backends[0]"));
    }

    #[test]
    fn finds_the_mapping_of_a_key() {
        let idx = Index::build(DOC);
        let mapping = |line, column| idx.mapping_at(Pos { line, column });
        assert_eq!(mapping(3, 5), Some(("backends[0]", Pos { line: 3, column: 5 })));
        assert_eq!(mapping(4, 5), Some(("backends[0]", Pos { line: 3, column: 5 })));
        assert_eq!(mapping(5, 15), Some(("backends[1]", Pos { line: 5, column: 5 })));
        assert_eq!(
            mapping(10, 9),
            Some(("aggregation.tools[0].overrides", Pos { line: 9, column: 7 }))
        );
        assert_eq!(mapping(2, 1), Some(("", Pos { line: 1, column: 1 })));
    }

    #[test]
    fn survives_syntax_errors_and_complex_keys() {
        let idx = Index::build("a: 1\n? [x]\n: 2\nb: [\n");
        assert_eq!(idx.pos("a").map(|p| p.line), Some(1));
        assert!(idx.pos("?").is_some());
        assert_eq!(idx.pos("b").map(|p| p.line), Some(4));
    }
}
