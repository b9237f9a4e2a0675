//! Maps byte offsets to key paths and key paths to line numbers, using toml_edit's spans, so
//! every error names the key (`extensions[2].numbers`) and the line the operator must fix.

use std::ops::Range;

use toml_edit::{ImDocument, Item, Table, Value};

/// Span lookups over one configuration text.
pub(super) struct Locator<'a> {
    text: &'a str,
    /// `None` when the text is not valid TOML (then only line numbers are known).
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// 1-based line of a byte offset.
    pub(super) fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    /// The dotted key path whose key or value covers `offset` (`""` when none does).
    pub(super) fn key_at(&self, offset: usize) -> String {
        let mut path = String::new();
        if let Some(doc) = &self.doc {
            walk_table(doc.as_table(), offset, &mut path);
        }
        path
    }

    /// The line of the value at `path` (`registrar.min_expires`, `extensions[1].numbers`), or of
    /// its nearest ancestor present in the file; 1 when nothing matches.
    pub(super) fn line_of_key(&self, path: &str) -> usize {
        let Some(doc) = &self.doc else { return 1 };
        let mut node = Node::Table(doc.as_table());
        let mut best: Option<Range<usize>> = None;
        for segment in path.split('.') {
            let (name, index) = split_index(segment);
            let Some(child) = node.member(name) else {
                break;
            };
            best = child.span().or(best);
            node = child;
            if let Some(i) = index {
                let Some(element) = node.index(i) else { break };
                best = element.span().or(best);
                node = element;
            }
        }
        best.map_or(1, |span| self.line_of(span.start))
    }
}

/// A place in the parsed document: a table, an item of a table, or a value inside a value.
#[derive(Clone, Copy)]
enum Node<'d> {
    Table(&'d Table),
    Item(&'d Item),
    Value(&'d Value),
}

impl<'d> Node<'d> {
    fn member(self, name: &str) -> Option<Node<'d>> {
        match self {
            Node::Table(t) | Node::Item(Item::Table(t)) => t.get(name).map(Node::Item),
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                t.get(name).map(Node::Value)
            }
            _ => None,
        }
    }

    fn index(self, i: usize) -> Option<Node<'d>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(i).map(Node::Table),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.get(i).map(Node::Value)
            }
            _ => None,
        }
    }

    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Table(t) => t.span(),
            Node::Item(item) => span_of(item),
            Node::Value(v) => v.span(),
        }
    }
}

/// `extensions[2]` → (`extensions`, Some(2)).
fn split_index(segment: &str) -> (&str, Option<usize>) {
    match segment.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (segment, None),
    }
}

fn span_of(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::None => None,
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
    }
}

fn contains(span: Option<Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && (offset < s.end || s.is_empty() && offset == s.start))
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn walk_table(table: &Table, offset: usize, path: &mut String) -> bool {
    for (name, item) in table.iter() {
        let len = path.len();
        push_key(path, name);
        let key_span = table.key(name).and_then(|k| k.span());
        if contains(key_span, offset) {
            return true;
        }
        let found = match item {
            Item::None => false,
            Item::Value(v) => {
                contains(v.span(), offset) && {
                    walk_value(v, offset, path);
                    true
                }
            }
            Item::Table(t) => walk_table(t, offset, path) || contains(t.span(), offset),
            Item::ArrayOfTables(a) => a.iter().enumerate().any(|(i, t)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let hit = walk_table(t, offset, path) || contains(t.span(), offset);
                if !hit {
                    path.truncate(len);
                }
                hit
            }),
        };
        if found {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn walk_value(value: &Value, offset: usize, path: &mut String) {
    match value {
        Value::Array(array) => {
            if let Some((i, v)) = array
                .iter()
                .enumerate()
                .find(|(_, v)| contains(v.span(), offset))
            {
                path.push_str(&format!("[{i}]"));
                walk_value(v, offset, path);
            }
        }
        Value::InlineTable(table) => {
            for (name, v) in table.iter() {
                let key_span = table.key(name).and_then(|k| k.span());
                if contains(key_span, offset) || contains(v.span(), offset) {
                    push_key(path, name);
                    walk_value(v, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}
