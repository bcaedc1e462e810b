//! Adoption edits to YAML manifests: set Git to the live value of the drifted fields, changing
//! only the bytes that express those fields.
//!
//! The file is never re-serialized. It is parsed into a tree of byte spans (saphyr-parser events,
//! the same parser as [`crate::yaml`]), each edit splices new text into one span, and everything
//! else — comments, key order, quoting, anchors, flow style, blank lines, the other documents of
//! the file — stays byte for byte. After the edits the file is parsed again and every document is
//! compared with what the edit promised (the old data with exactly the drifted fields changed);
//! any other difference rejects the edit.
//!
//! Where no edit can honestly express the adoption, the functions say so with
//! [`EditError::NoHonestEdit`] and the caller opens an issue instead: a value reached through an
//! alias or shared through an anchor, a value inherited from a merge key (`<<`), a tagged scalar,
//! a layout this editor cannot change without touching other lines. A file that no longer holds
//! the value the drift was computed from is [`EditError::Stale`]: the next run sees the new file.
//!
//! Pure: text in, text out, no IO.

use std::collections::HashSet;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle};
use serde_json::{Map, Value};

use crate::diff::keys::{self, ListKind, ListSite};
use crate::diff::managed::{self, Ownership};
use crate::diff::normalize::scalar_equal;
use crate::model::{ChangeOp, FieldChange, Remedy, contains_mask, pointer_segments};
use crate::yaml;

/// Why an adoption edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No edit of the file expresses the adoption without changing something else: open an issue.
    #[error("no honest edit: {0}")]
    NoHonestEdit(String),
    /// The file no longer holds what the drift was computed from.
    #[error("the file changed since the drift was read: {0}")]
    Stale(String),
    /// The file is not valid YAML.
    #[error("not valid YAML: line {line} column {col}: {message}")]
    Invalid {
        line: usize,
        col: usize,
        message: String,
    },
}

/// Result alias for this module.
pub type Result<T, E = EditError> = std::result::Result<T, E>;

fn no_edit(msg: impl Into<String>) -> EditError {
    EditError::NoHonestEdit(msg.into())
}

/// Which document of a (possibly multi-document) file holds the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocRef<'a> {
    pub kind: &'a str,
    pub name: &'a str,
    /// The object's namespace; a document that names none matches any.
    pub namespace: Option<&'a str>,
    /// The line the document starts at (provenance), to choose between equal candidates.
    pub line: Option<usize>,
}

/// An edited file and where the edits landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub text: String,
    /// (JSON pointer of the change, 1-based line in the old file where the edit starts).
    pub touched: Vec<(String, usize)>,
}

// ---------------------------------------------------------------------------------------------
// The span tree
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Node {
    /// Byte range of the node's text (for block scalars: from the `|`/`>` indicator).
    start: usize,
    end: usize,
    /// 1-based line and 0-based character column of `start`.
    line: usize,
    col: usize,
    /// Anchor id (`&x`), 0 when none.
    anchor: usize,
    /// Alias id (`*x`), 0 when the node is not an alias.
    alias: usize,
    tagged: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Scalar {
        style: ScalarStyle,
        /// An empty plain scalar (`key:` with nothing after it).
        empty: bool,
        /// For block scalars: byte offset where the content starts.
        content: usize,
    },
    Seq {
        items: Vec<Node>,
        flow: bool,
        /// Byte offset of `]` for flow sequences.
        close: usize,
    },
    Map {
        entries: Vec<(Node, Node)>,
        flow: bool,
        /// Byte offset of `}` for flow mappings.
        close: usize,
    },
}

#[derive(Debug, Clone)]
struct Doc {
    root: Node,
    /// Byte offset of this document's explicit `---`, if any.
    marker: Option<usize>,
    /// Position of this document among every document start of the stream (empty ones too).
    ordinal: usize,
    /// The data, as the loader reads it (aliases and merge keys expanded).
    value: Value,
    /// The loader's tree, for JSON values of subtrees.
    ynode: yaml::Node,
    /// Alias ids used anywhere in the document.
    aliases: HashSet<usize>,
}

struct Parsed {
    docs: Vec<Doc>,
    /// Explicit `---` markers of every document start, in order (None for implicit starts).
    markers: Vec<Option<usize>>,
}

enum Frame {
    Seq {
        start: usize,
        line: usize,
        col: usize,
        anchor: usize,
        tagged: bool,
        flow: bool,
        items: Vec<Node>,
    },
    Map {
        start: usize,
        line: usize,
        col: usize,
        anchor: usize,
        tagged: bool,
        flow: bool,
        entries: Vec<(Node, Node)>,
        pending: Option<Node>,
    },
}

fn invalid(e: yaml::YamlError) -> EditError {
    EditError::Invalid {
        line: e.line,
        col: e.col,
        message: e.message,
    }
}

/// Byte offset of every character, plus the text length: saphyr markers count characters.
fn char_offsets(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(text.len()))
        .collect()
}

fn parse(text: &str) -> Result<Parsed> {
    let loaded = yaml::parse_documents(text).map_err(invalid)?;
    let offsets = char_offsets(text);
    let byte = |i: usize| offsets.get(i).copied().unwrap_or(text.len());
    let bytes = text.as_bytes();

    let mut trees: Vec<(Node, Option<usize>, usize, HashSet<usize>)> = Vec::new();
    let mut markers: Vec<Option<usize>> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<Node> = None;
    let mut aliases: HashSet<usize> = HashSet::new();

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| EditError::Invalid {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let s = byte(span.start.index());
        let e = byte(span.end.index());
        let line = span.start.line();
        let col = span.start.col();
        let finished = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(explicit) => {
                markers.push(explicit.then_some(s));
                root = None;
                aliases.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take() {
                    let null_root = matches!(r.kind, Kind::Scalar { empty: true, .. })
                        || matches!(r.kind, Kind::Scalar { style: ScalarStyle::Plain, .. }
                            if matches!(&text[r.start..r.end], "~" | "null" | "Null" | "NULL"));
                    if !null_root {
                        let ordinal = markers.len().saturating_sub(1);
                        let marker = markers.last().copied().flatten();
                        trees.push((r, marker, ordinal, std::mem::take(&mut aliases)));
                    }
                }
                None
            }
            Event::Alias(id) => {
                aliases.insert(id);
                Some(Node {
                    start: s,
                    end: e,
                    line,
                    col,
                    anchor: 0,
                    alias: id,
                    tagged: false,
                    kind: Kind::Scalar {
                        style: ScalarStyle::Plain,
                        empty: false,
                        content: s,
                    },
                })
            }
            Event::Scalar(_, style, anchor, tag) => {
                let (start, end, content) = match style {
                    ScalarStyle::DoubleQuoted => (s, quoted_end(bytes, s, b'"'), s),
                    ScalarStyle::SingleQuoted => (s, quoted_end(bytes, s, b'\''), s),
                    ScalarStyle::Literal | ScalarStyle::Folded => {
                        let indicator = block_indicator(bytes, s).unwrap_or(s);
                        (indicator, block_end(text, indicator, s, e), s)
                    }
                    _ => (s, e, s),
                };
                Some(Node {
                    start,
                    end,
                    line,
                    col,
                    anchor,
                    alias: 0,
                    tagged: tag.is_some(),
                    kind: Kind::Scalar {
                        style,
                        empty: span.start.index() == span.end.index(),
                        content,
                    },
                })
            }
            Event::SequenceStart(anchor, tag) => {
                // A sequence starting where its enclosing, still empty sequence starts (at this
                // `[`) is that sequence's first item: the enclosing one is a block sequence
                // (`- [a]`) that the parser marks at its first item, not a flow one.
                if let Some(Frame::Seq {
                    start, flow, items, ..
                }) = stack.last_mut()
                {
                    if *start == s && items.is_empty() {
                        *flow = false;
                    }
                }
                stack.push(Frame::Seq {
                    start: s,
                    line,
                    col,
                    anchor,
                    tagged: tag.is_some(),
                    flow: bytes.get(s) == Some(&b'['),
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, tag) => {
                stack.push(Frame::Map {
                    start: s,
                    line,
                    col,
                    anchor,
                    tagged: tag.is_some(),
                    flow: bytes.get(s) == Some(&b'{'),
                    entries: Vec::new(),
                    pending: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    start,
                    line,
                    col,
                    anchor,
                    tagged,
                    flow,
                    items,
                }) => {
                    // A flow end event's span runs on over trailing comments: the bracket is
                    // one byte at its start.
                    let end = if flow {
                        s + 1
                    } else {
                        items.last().map(|n| n.end).unwrap_or(start)
                    };
                    Some(Node {
                        start,
                        end,
                        line,
                        col,
                        anchor,
                        alias: 0,
                        tagged,
                        kind: Kind::Seq {
                            items,
                            flow,
                            close: s,
                        },
                    })
                }
                _ => return Err(no_edit("unbalanced YAML sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    start,
                    line,
                    col,
                    anchor,
                    tagged,
                    flow,
                    entries,
                    ..
                }) => {
                    let end = if flow {
                        s + 1
                    } else {
                        entries.last().map(|(_, v)| v.end).unwrap_or(start)
                    };
                    Some(Node {
                        start,
                        end,
                        line,
                        col,
                        anchor,
                        alias: 0,
                        tagged,
                        kind: Kind::Map {
                            entries,
                            flow,
                            close: s,
                        },
                    })
                }
                _ => return Err(no_edit("unbalanced YAML mapping")),
            },
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map {
                    entries, pending, ..
                }) => match pending.take() {
                    None => *pending = Some(node),
                    Some(k) => entries.push((k, node)),
                },
            }
        }
    }
    if trees.len() != loaded.len() {
        return Err(no_edit(
            "the file's documents could not be matched to their positions",
        ));
    }
    let docs = trees
        .into_iter()
        .zip(loaded)
        .map(|((root, marker, ordinal, aliases), d)| Doc {
            root,
            marker,
            ordinal,
            value: d.value,
            ynode: d.root,
            aliases,
        })
        .collect();
    Ok(Parsed { docs, markers })
}

/// End (exclusive) of a quoted scalar starting at `start` with `quote`.
fn quoted_end(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        let b = bytes[i];
        if quote == b'"' && b == b'\\' {
            i += 2;
            continue;
        }
        if b == quote {
            if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// The `|` or `>` that introduces a block scalar whose content starts at `content`.
fn block_indicator(bytes: &[u8], content: usize) -> Option<usize> {
    // The header is the last line before the content that is not blank.
    let mut i = content.min(bytes.len());
    // Step back to the end of the header line.
    while i > 0 && bytes[i - 1] != b'\n' {
        i -= 1;
    }
    // i is the start of the content's first line; the header ends at i - 1.
    let mut end = i.checked_sub(1)?;
    loop {
        let mut start = end;
        while start > 0 && bytes[start - 1] != b'\n' {
            start -= 1;
        }
        let line = &bytes[start..end];
        // Find an indicator outside a comment.
        let comment = find_comment(line).unwrap_or(line.len());
        if let Some(p) = line[..comment]
            .iter()
            .rposition(|b| *b == b'|' || *b == b'>')
        {
            return Some(start + p);
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
}

/// Where a block scalar's text ends: the event's span runs on to the next token, over the next
/// line's indentation and (unless the scalar keeps them, `|+`) over trailing blank lines.
fn block_end(text: &str, indicator: usize, content: usize, span_end: usize) -> usize {
    let mut end = span_end.min(text.len());
    let ls = line_start(text, end);
    if ls < end && only_spaces(text, ls..end) {
        end = ls;
    }
    let header = &text[indicator..line_end(text, indicator)];
    let keep = header.split('#').next().is_some_and(|h| h.contains('+'));
    if !keep {
        while end > content {
            let prev = line_start(text, end - 1);
            if prev >= content && only_spaces(text, prev..end - 1) {
                end = prev;
            } else {
                break;
            }
        }
    }
    end.max(content)
}

/// Position of a `#` that starts a comment (preceded by a space or at the line start).
fn find_comment(line: &[u8]) -> Option<usize> {
    let mut in_single = false;
    let mut in_double = false;
    for (i, b) in line.iter().enumerate() {
        match b {
            b'\'' if !in_double => in_single = !in_single,
            b'"' if !in_single => in_double = !in_double,
            b'#' if !in_single && !in_double && (i == 0 || line[i - 1] == b' ') => {
                return Some(i);
            }
            _ => {}
        }
    }
    None
}

/// The offset where the line holding `pos` starts (shared with the HCL edits).
pub(super) fn line_start(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0)
}

/// The offset just past the newline that ends the line holding `pos` (or the text end). A
/// position already at a line start is returned as is.
fn after_line(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    if pos > 0 && text.as_bytes()[pos - 1] == b'\n' {
        return pos;
    }
    text[pos..]
        .find('\n')
        .map(|i| pos + i + 1)
        .unwrap_or(text.len())
}

/// The offset of the newline that ends the line holding `pos` (or the text end).
fn line_end(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    let end = text[pos..]
        .find('\n')
        .map(|i| pos + i)
        .unwrap_or(text.len());
    if end > 0 && text.as_bytes()[end - 1] == b'\r' {
        end - 1
    } else {
        end
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Plain text for a scalar, quoted where YAML 1.1 readers (kubectl, Helm, go-yaml v2) would read
/// another type (`on`, `no`, `0777`, `1_000`, `12:30`) or a merge key.
fn safe_scalar(v: &Value) -> String {
    match v {
        Value::String(s) if yaml11_ambiguous(s) => Value::String(s.clone()).to_string(),
        other => yaml::scalar_text(other),
    }
}

fn yaml11_ambiguous(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "<<"
            | "="
    ) || (s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().all(|b| {
            b.is_ascii_digit() || matches!(b, b'_' | b':' | b'.' | b'+' | b'-' | b'e' | b'E')
        })
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.')))
}

/// Block YAML at indent 0 with a trailing newline, scalars as [`safe_scalar`] writes them.
fn block_yaml(v: &Value) -> String {
    crate::yaml::to_block_yaml(
        v,
        &|k| safe_scalar(&Value::String(k.to_string())),
        &render_flow,
    )
}

/// A scalar in the style of the one it replaces.
fn render_scalar(v: &Value, style: ScalarStyle) -> String {
    match (v, style) {
        (Value::String(s), ScalarStyle::DoubleQuoted) => Value::String(s.clone()).to_string(),
        (Value::String(s), ScalarStyle::SingleQuoted)
            if !s.chars().any(|c| c.is_control()) && !s.is_empty() =>
        {
            format!("'{}'", s.replace('\'', "''"))
        }
        (Value::String(s), ScalarStyle::SingleQuoted) => Value::String(s.clone()).to_string(),
        _ => safe_scalar(v),
    }
}

/// A value in flow style (`[a, b]`, `{k: v}`), safe inside other flow collections.
fn render_flow(v: &Value) -> String {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(render_flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        flow_scalar(&Value::String(k.clone())),
                        render_flow(v)
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => flow_scalar(other),
    }
}

fn flow_scalar(v: &Value) -> String {
    let text = safe_scalar(v);
    match v {
        Value::String(s) if text == *s && s.contains([',', '[', ']', '{', '}']) => {
            Value::String(s.clone()).to_string()
        }
        _ => text,
    }
}

/// Block YAML for a collection, first line unindented, later lines indented by `indent`, with a
/// trailing newline.
fn render_block(v: &Value, indent: usize) -> String {
    let body = block_yaml(v);
    indent_lines(&body, indent)
}

/// Indents every line but the first by `indent` spaces (empty lines stay empty).
fn indent_lines(body: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut out = String::with_capacity(body.len() + 16);
    for (i, line) in body.split_inclusive('\n').enumerate() {
        if i > 0 && line != "\n" {
            out.push_str(&pad);
        }
        out.push_str(line);
    }
    out
}

/// A `key: value` entry of a block mapping at `indent`, ending with a newline.
fn render_entry(key: &str, v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let k = safe_scalar(&Value::String(key.to_string()));
    match v {
        Value::Object(m) if !m.is_empty() => {
            format!("{pad}{k}:\n{pad}  {}", render_block(v, indent + 2))
        }
        Value::Array(a) if !a.is_empty() => {
            format!("{pad}{k}:\n{pad}  {}", render_block(v, indent + 2))
        }
        other => format!("{pad}{k}: {}\n", render_flow(other)),
    }
}

/// A `- item` entry of a block sequence whose dash sits at `indent`, ending with a newline.
fn render_item(v: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => format!("{pad}- {}", render_block(v, indent + 2)),
        Value::Array(a) if !a.is_empty() => format!("{pad}- {}", render_block(v, indent + 2)),
        other => format!("{pad}- {}\n", render_flow(other)),
    }
}

/// A literal block scalar for `s` whose content is indented by `indent`; `None` when the string
/// cannot be written as one faithfully.
fn render_literal(s: &str, indent: usize, header_rest: &str, nl: &str) -> Option<String> {
    if s.is_empty()
        || s.starts_with([' ', '\n'])
        || s.chars().any(|c| c.is_control() && c != '\n')
        || s.lines().any(|l| l.starts_with(' ') || l.ends_with(' '))
    {
        return None;
    }
    let trailing = s.len() - s.trim_end_matches('\n').len();
    let chomp = match trailing {
        0 => "-",
        1 => "",
        _ => "+",
    };
    let pad = " ".repeat(indent);
    let mut out = format!("|{chomp}{header_rest}{nl}");
    let content = s.trim_end_matches('\n');
    for line in content.split('\n') {
        if !line.is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
        out.push_str(nl);
    }
    for _ in 1..trailing {
        out.push_str(nl);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Locating a JSON pointer
// ---------------------------------------------------------------------------------------------

/// One step of a resolved path: the node and how it hangs from its parent.
struct Step<'a> {
    node: &'a Node,
    ynode: &'a yaml::Node,
    /// Index of the entry or item in the parent.
    index: usize,
    /// The key node when the parent is a mapping.
    key: Option<&'a Node>,
}

/// How far a pointer resolved.
struct Resolved<'a> {
    /// Root first; the last step is the deepest node that exists.
    chain: Vec<Step<'a>>,
    /// The pointer segments consumed, with desired list indices.
    desired_path: Vec<String>,
    /// The segments still missing below the deepest node (empty when fully resolved).
    rest: Vec<String>,
}

/// What the live side knows for mapping list indices.
struct LiveCtx<'a> {
    object: Option<&'a Value>,
    kind: &'a str,
    ownership: Ownership,
}

impl<'a> LiveCtx<'a> {
    fn new(object: Option<&'a Value>, kind: &'a str) -> LiveCtx<'a> {
        let ownership = object
            .map(|o| Ownership::from_live(o, false))
            .unwrap_or_default();
        LiveCtx {
            object,
            kind,
            ownership,
        }
    }
}

fn key_text(text: &str, k: &Node) -> String {
    // Keys are compared by their loaded value, which the loader's tree gives exactly; this is
    // only used for the merge-key test.
    text[k.start..k.end.max(k.start)].to_string()
}

/// Resolves `segs` (live indices when `live` is given, desired indices otherwise) in `doc`.
/// `probe` is a value that identifies the last list item when live no longer has it.
fn resolve<'a>(
    text: &str,
    doc: &'a Doc,
    segs: &[String],
    live: Option<&LiveCtx<'_>>,
    probe: Option<&Value>,
) -> Result<Resolved<'a>> {
    let mut chain = vec![Step {
        node: &doc.root,
        ynode: &doc.ynode,
        index: 0,
        key: None,
    }];
    let mut desired_path = Vec::new();
    for (k, seg) in segs.iter().enumerate() {
        let Some(cur) = chain.last() else {
            break;
        };
        let (node, ynode) = (cur.node, cur.ynode);
        if node.alias != 0 {
            return Err(no_edit(format!(
                "`{}` comes from an alias (*): changing it would change the anchored value",
                managed::pointer(&segs[..k])
            )));
        }
        let next: Option<Step<'a>> = match (&node.kind, &ynode.kind) {
            (Kind::Map { entries, .. }, yaml::NodeKind::Map(yentries)) => {
                let found = yentries
                    .iter()
                    .position(|(yk, _)| yaml::key_string(yk) == *seg && !is_merge(yk));
                match found {
                    Some(i) => match (entries.get(i), yentries.get(i)) {
                        (Some((kn, vn)), Some((_, yv))) => Some(Step {
                            node: vn,
                            ynode: yv,
                            index: i,
                            key: Some(kn),
                        }),
                        _ => None,
                    },
                    None => {
                        let merged = entries.iter().any(|(kn, _)| key_text(text, kn) == "<<");
                        if merged && ynode.to_json().get(seg.as_str()).is_some() {
                            return Err(no_edit(format!(
                                "`{}` is inherited through a merge key (<<)",
                                managed::pointer(&segs[..=k])
                            )));
                        }
                        None
                    }
                }
            }
            (Kind::Seq { items, .. }, yaml::NodeKind::Seq(yitems)) => {
                let Ok(i) = seg.parse::<usize>() else {
                    return Err(EditError::Stale(format!(
                        "`{}` is a list in Git, not a mapping",
                        managed::pointer(&segs[..k])
                    )));
                };
                let last = k + 1 == segs.len();
                let j = desired_index(segs, k, i, yitems, live, if last { probe } else { None });
                match j {
                    Some(j) => match (items.get(j), yitems.get(j)) {
                        (Some(n), Some(y)) => Some(Step {
                            node: n,
                            ynode: y,
                            index: j,
                            key: None,
                        }),
                        _ => None,
                    },
                    None => None,
                }
            }
            _ => None,
        };
        match next {
            Some(step) => {
                desired_path.push(match &node.kind {
                    Kind::Seq { .. } => step.index.to_string(),
                    _ => seg.clone(),
                });
                chain.push(step);
            }
            None => {
                return Ok(Resolved {
                    chain,
                    desired_path,
                    rest: segs[k..].to_vec(),
                });
            }
        }
    }
    Ok(Resolved {
        chain,
        desired_path,
        rest: Vec::new(),
    })
}

fn is_merge(k: &yaml::Node) -> bool {
    matches!(&k.kind, yaml::NodeKind::Scalar(Value::String(s)) if s == "<<")
}

/// Maps the live index `i` of the list at `segs[..k]` to the desired index, by merge key.
fn desired_index(
    segs: &[String],
    k: usize,
    i: usize,
    yitems: &[yaml::Node],
    live: Option<&LiveCtx<'_>>,
    probe: Option<&Value>,
) -> Option<usize> {
    let Some(live) = live else {
        return (i < yitems.len()).then_some(i);
    };
    let desired_items: Vec<Value> = yitems.iter().map(yaml::Node::to_json).collect();
    let list_ptr = managed::pointer(&segs[..k]);
    let live_item = live
        .object
        .and_then(|o| o.pointer(&list_ptr))
        .and_then(|l| l.get(i))
        .or(probe);
    let kind = keys::list_kind(ListSite {
        path: &segs[..k],
        kind: live.kind,
        desired_items: &desired_items,
        managed_keys: live.ownership.list_keys_at(&list_ptr),
    });
    match kind {
        ListKind::Keyed(key_fields) => {
            let item = live_item?;
            let key = keys::key_of(item, &key_fields)?;
            keys::find_by_key(&desired_items, &key, &key_fields, &[])
        }
        ListKind::Set => {
            let item = live_item?;
            desired_items.iter().position(|d| d == item)
        }
        ListKind::Unkeyed => (i < yitems.len()).then_some(i),
    }
}

/// Refuses to edit through an alias or a node whose anchor other nodes use.
fn check_shared(doc: &Doc, chain: &[Step<'_>], what: &str) -> Result<()> {
    for step in chain {
        if step.node.alias != 0 {
            return Err(no_edit(format!(
                "`{what}` comes from an alias (*): the value lives at its anchor"
            )));
        }
        if step.node.anchor != 0 && doc.aliases.contains(&step.node.anchor) {
            return Err(no_edit(format!(
                "`{what}` is shared through an anchor (&) that aliases repeat elsewhere"
            )));
        }
        if step.node.tagged {
            return Err(no_edit(format!("`{what}` carries an explicit YAML tag")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Splices
// ---------------------------------------------------------------------------------------------

struct Splice {
    range: Range<usize>,
    text: String,
    line: usize,
}

fn newline_of(text: &str) -> &'static str {
    if text.contains("\r\n") { "\r\n" } else { "\n" }
}

fn with_nl(s: &str, nl: &str) -> String {
    if nl == "\n" {
        s.to_string()
    } else {
        s.replace('\n', nl)
    }
}

/// Replaces the node's value with `v`.
fn splice_set(text: &str, steps: &[Step<'_>], v: &Value) -> Result<Splice> {
    let nl = newline_of(text);
    let Some(step) = steps.last() else {
        return Err(no_edit("nothing to edit"));
    };
    let node = step.node;
    let parent = steps.len().checked_sub(2).and_then(|i| steps.get(i));
    let parent_flow = parent.is_some_and(|p| {
        matches!(
            p.node.kind,
            Kind::Seq { flow: true, .. } | Kind::Map { flow: true, .. }
        )
    });
    match &node.kind {
        Kind::Scalar { empty: true, .. } => {
            // `key:` with no value: write after the key line's end, keeping any comment.
            if is_scalar(v) || parent_flow {
                let at = node.start + 1;
                let at = if text.as_bytes().get(node.start) == Some(&b':') {
                    at
                } else {
                    node.start
                };
                Ok(Splice {
                    range: at..at,
                    text: format!(" {}", render_flow(v)),
                    line: node.line,
                })
            } else {
                let key_col = step.key.map(|k| k.col).unwrap_or(0);
                let at = line_end(text, node.start);
                let block = render_block(v, key_col + 2);
                let block = block.strip_suffix('\n').unwrap_or(&block);
                Ok(Splice {
                    range: at..at,
                    text: with_nl(&format!("\n{}{}", " ".repeat(key_col + 2), block), nl),
                    line: node.line,
                })
            }
        }
        Kind::Scalar {
            style: ScalarStyle::Literal | ScalarStyle::Folded,
            content,
            ..
        } => {
            let indicator_end = {
                let b = text.as_bytes();
                let mut i = node.start + 1;
                while i < b.len() && matches!(b[i], b'+' | b'-' | b'1'..=b'9') {
                    i += 1;
                }
                i
            };
            let header_rest = &text[indicator_end..line_end(text, indicator_end)];
            let indent = content.saturating_sub(line_start(text, *content));
            let rendered = match v {
                Value::String(s) => render_literal(s, indent, header_rest, nl),
                _ => None,
            };
            let new = match rendered {
                Some(r) => r,
                None => format!("{}{header_rest}{nl}", render_flow(v)),
            };
            Ok(Splice {
                range: node.start..node.end,
                text: new,
                line: node.line,
            })
        }
        Kind::Scalar { style, .. } => {
            let new = if is_scalar(v) {
                render_scalar(v, *style)
            } else {
                render_flow(v)
            };
            Ok(Splice {
                range: node.start..node.end,
                text: new,
                line: node.line,
            })
        }
        Kind::Seq { flow: true, .. } | Kind::Map { flow: true, .. } => Ok(Splice {
            range: node.start..node.end,
            text: render_flow(v),
            line: node.line,
        }),
        Kind::Seq { .. } | Kind::Map { .. } => {
            // A block collection: its text starts at the first key, or at the first item's
            // dash (the parser marks a sequence at its key's column where its first item
            // starts).
            let (start, start_col) = match &node.kind {
                Kind::Seq { .. } => {
                    let b = text.as_bytes();
                    let at_dash = b.get(node.start) == Some(&b'-')
                        && b.get(node.start + 1)
                            .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'));
                    let dash = if at_dash {
                        Some(node.start)
                    } else {
                        dash_before(text, node.start)
                    }
                    .ok_or_else(|| no_edit("cannot find the list's first dash"))?;
                    (dash, dash - line_start(text, dash))
                }
                _ => (node.start, node.col),
            };
            let keeps_newline = node.end > 0 && text.as_bytes().get(node.end - 1) == Some(&b'\n');
            let one_line = is_scalar(v)
                || matches!(v, Value::Array(a) if a.is_empty())
                || matches!(v, Value::Object(m) if m.is_empty());
            // A value written on one line goes on its key's line when only blanks lie between
            // (`key: value`); a comment there stays, and the value goes below it, indented.
            if let Some(colon) = step
                .key
                .filter(|_| one_line)
                .and_then(|k| colon_after(text, k.end))
                .filter(|c| only_blanks(text, c + 1..start))
            {
                let mut new = format!(" {}", render_flow(v));
                if keeps_newline {
                    new.push('\n');
                }
                return Ok(Splice {
                    range: colon + 1..node.end,
                    text: with_nl(&new, nl),
                    line: node.line,
                });
            }
            // A block sequence may sit at its key's column (`key:` then `- item` below it);
            // anything else there must move right of the key, or it would read as a sibling key.
            let col = match step.key {
                Some(k) if start_col <= k.col && !matches!(v, Value::Array(a) if !a.is_empty()) => {
                    k.col + 2
                }
                _ => start_col,
            };
            let mut new = " ".repeat(col - start_col);
            if is_scalar(v) {
                new.push_str(&render_flow(v));
            } else {
                let b = render_block(v, col);
                new.push_str(b.strip_suffix('\n').unwrap_or(&b));
            }
            if keeps_newline {
                new.push('\n');
            }
            Ok(Splice {
                range: start..node.end,
                text: with_nl(&new, nl),
                line: node.line,
            })
        }
    }
}

/// Nests `v` under the remaining segments: `["a", "0", "b"]` → `{a: [{b: v}]}`.
fn nest(rest: &[String], v: &Value) -> Value {
    let mut out = v.clone();
    for seg in rest.iter().rev() {
        out = if seg.parse::<usize>().is_ok() {
            Value::Array(vec![out])
        } else {
            let mut m = Map::new();
            m.insert(seg.clone(), out);
            Value::Object(m)
        };
    }
    out
}

/// Adds the missing `rest` segments with value `v` under the deepest existing node.
fn splice_insert(text: &str, steps: &[Step<'_>], rest: &[String], v: &Value) -> Result<Splice> {
    let nl = newline_of(text);
    let Some(step) = steps.last() else {
        return Err(no_edit("nothing to edit"));
    };
    let node = step.node;
    let Some(first) = rest.first() else {
        return Err(no_edit("nothing to add"));
    };
    let sub = nest(&rest[1..], v);
    match &node.kind {
        Kind::Map {
            entries,
            flow: false,
            ..
        } => {
            let Some((first_key, _)) = entries.first() else {
                return Err(no_edit("cannot add to an empty block mapping"));
            };
            let indent = first_key.col;
            let last_end = entries.last().map(|(_, v)| v.end).unwrap_or(node.end);
            let new = render_entry(first, &sub, indent);
            Ok(append_block(text, last_end, new, nl, node.line))
        }
        Kind::Map {
            entries,
            flow: true,
            close,
        } => {
            let k = flow_scalar(&Value::String(first.clone()));
            let entry = format!("{k}: {}", render_flow(&sub));
            Ok(append_flow(*close, entries.is_empty(), &entry, node.line))
        }
        Kind::Seq {
            items, flow: false, ..
        } => {
            let Some(item) = items.first() else {
                return Err(no_edit("cannot add to an empty block sequence"));
            };
            let dash = dash_before(text, item.start).unwrap_or(node.start);
            let indent = dash - line_start(text, dash);
            let last_end = items.last().map(|n| n.end).unwrap_or(node.end);
            let new = render_item(&sub, indent);
            Ok(append_block(text, last_end, new, nl, node.line))
        }
        Kind::Seq {
            items,
            flow: true,
            close,
        } => {
            let item = render_flow(&sub);
            Ok(append_flow(*close, items.is_empty(), &item, node.line))
        }
        Kind::Scalar { empty: true, .. } => splice_set(text, steps, &nest(rest, v)),
        Kind::Scalar { .. } => Err(no_edit(format!(
            "cannot add `{first}` under a scalar value"
        ))),
    }
}

/// Inserts the rendered block entry or item `new` on the line after `last_end` (the end of the
/// collection's last member), starting a line first when the text ends without one.
fn append_block(text: &str, last_end: usize, mut new: String, nl: &str, line: usize) -> Splice {
    let at = after_line(text, last_end);
    if at == text.len() && !text.ends_with('\n') {
        new.insert(0, '\n');
    }
    Splice {
        range: at..at,
        text: with_nl(&new, nl),
        line,
    }
}

/// Inserts `member` before the closing bracket at `close` of a flow collection.
fn append_flow(close: usize, empty: bool, member: &str, line: usize) -> Splice {
    let sep = if empty { "" } else { ", " };
    Splice {
        range: close..close,
        text: format!("{sep}{member}"),
        line,
    }
}

/// The `-` of the block sequence item whose content starts at `pos`.
fn dash_before(text: &str, pos: usize) -> Option<usize> {
    let b = text.as_bytes();
    let mut i = pos.min(b.len());
    // The parser may mark an item that starts below its dash at the end of the dash's line
    // (`- # comment`): that line is then the one to look at.
    let at_line_end = match b.get(i) {
        Some(b'\n') => true,
        Some(b'\r') if b.get(i + 1) == Some(&b'\n') => {
            i += 1;
            true
        }
        _ => false,
    };
    // On the item's own line: only spaces between the dash and the item.
    while i > 0 && !at_line_end {
        i -= 1;
        match b[i] {
            b' ' | b'\t' | b'\r' => continue,
            b'-' => return Some(i),
            b'\n' => break,
            _ => return None,
        }
    }
    // The item starts a later line (`-` alone or `- # comment`, then the item below it, maybe
    // after blank and comment lines): the dash is the nearest line above that is not blank or
    // a comment.
    while i > 0 && b[i] == b'\n' {
        let ls = line_start(text, i);
        let line = text[ls..i].trim_end_matches('\r');
        let body = line.trim_start_matches([' ', '\t']);
        if body.is_empty() || body.starts_with('#') {
            if ls == 0 {
                return None;
            }
            i = ls - 1;
            continue;
        }
        let rest = body.strip_prefix('-')?;
        let after = rest.trim_start_matches([' ', '\t']);
        let spaced = rest.len() > after.len();
        return (after.is_empty() || (spaced && after.starts_with('#')))
            .then_some(ls + (line.len() - body.len()));
    }
    None
}

/// The offset of the `:` that ends a block mapping key ending at `key_end`.
fn colon_after(text: &str, key_end: usize) -> Option<usize> {
    let rest = text.get(key_end..)?;
    let skipped = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    (rest.as_bytes().get(skipped) == Some(&b':')).then_some(key_end + skipped)
}

/// Only spaces, tabs and line breaks in `range` (no comment, no content).
fn only_blanks(text: &str, range: Range<usize>) -> bool {
    text.get(range)
        .is_some_and(|s| s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')))
}

fn only_spaces(text: &str, range: Range<usize>) -> bool {
    text.get(range)
        .is_some_and(|s| s.bytes().all(|b| matches!(b, b' ' | b'\t' | b'\r')))
}

/// Removes the node from its parent.
fn splice_remove(text: &str, steps: &[Step<'_>]) -> Result<Splice> {
    let (Some(step), Some(parent)) = (
        steps.last(),
        steps.len().checked_sub(2).and_then(|i| steps.get(i)),
    ) else {
        return Err(no_edit("cannot remove the whole object"));
    };
    let node = step.node;
    match &parent.node.kind {
        Kind::Map {
            entries,
            flow: false,
            ..
        } => {
            let i = step.index;
            let Some((key, value)) = entries.get(i) else {
                return Err(no_edit("entry not found"));
            };
            if entries.len() == 1 {
                // The mapping would be left empty: write `{}` in its place.
                return splice_set(text, &steps[..steps.len() - 1], &Value::Object(Map::new()));
            }
            let ls = line_start(text, key.start);
            if only_spaces(text, ls..key.start) {
                let end = after_line(text, value.end);
                Ok(Splice {
                    range: ls..end,
                    text: String::new(),
                    line: key.line,
                })
            } else if let Some((next_key, _)) = entries.get(i + 1) {
                // The first entry of a `- key: value` item: the next entry moves up.
                Ok(Splice {
                    range: key.start..next_key.start,
                    text: String::new(),
                    line: key.line,
                })
            } else {
                Err(no_edit("the entry shares its line with other content"))
            }
        }
        Kind::Seq {
            items, flow: false, ..
        } => {
            if items.len() == 1 {
                return splice_set(text, &steps[..steps.len() - 1], &Value::Array(Vec::new()));
            }
            let dash = dash_before(text, node.start)
                .ok_or_else(|| no_edit("cannot find the list item's dash"))?;
            let ls = line_start(text, dash);
            if !only_spaces(text, ls..dash) {
                return Err(no_edit("the list item shares its line with other content"));
            }
            Ok(Splice {
                range: ls..after_line(text, node.end),
                text: String::new(),
                line: node.line,
            })
        }
        Kind::Map {
            entries,
            flow: true,
            ..
        } => {
            let i = step.index;
            let Some((key, value)) = entries.get(i) else {
                return Err(no_edit("entry not found"));
            };
            let next = entries.get(i + 1).map(|(k, _)| k.start);
            let prev_end = i.checked_sub(1).map(|p| entries[p].1.end);
            Ok(remove_flow_member(
                key.start..value.end,
                next,
                prev_end,
                key.line,
            ))
        }
        Kind::Seq {
            items, flow: true, ..
        } => {
            let i = step.index;
            let next = items.get(i + 1).map(|n| n.start);
            let prev_end = i.checked_sub(1).map(|p| items[p].end);
            Ok(remove_flow_member(
                node.start..node.end,
                next,
                prev_end,
                node.line,
            ))
        }
        Kind::Scalar { .. } => Err(no_edit("cannot remove under a scalar")),
    }
}

/// Removes the flow collection member spanning `member` with its separator: up to the next
/// member's start, else from the previous member's end, else the member alone.
fn remove_flow_member(
    member: Range<usize>,
    next_start: Option<usize>,
    prev_end: Option<usize>,
    line: usize,
) -> Splice {
    let range = match (next_start, prev_end) {
        (Some(next), _) => member.start..next,
        (None, Some(prev)) => prev..member.end,
        (None, None) => member,
    };
    Splice {
        range,
        text: String::new(),
        line,
    }
}

fn apply(text: &str, s: &Splice) -> String {
    let mut out = String::with_capacity(text.len() + s.text.len());
    out.push_str(&text[..s.range.start]);
    out.push_str(&s.text);
    out.push_str(&text[s.range.end..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Expected data
// ---------------------------------------------------------------------------------------------

/// Sets (or, with `None`, removes) the value at `path` in `root`, creating maps and appending
/// list items on the way.
fn json_set(root: &mut Value, path: &[String], v: Option<&Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        if let Some(v) = v {
            *root = v.clone();
        }
        return true;
    };
    let mut cur = root;
    for seg in parents {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        cur = match cur {
            Value::Object(m) => m.entry(seg.clone()).or_insert(Value::Null),
            Value::Array(a) => {
                let Ok(i) = seg.parse::<usize>() else {
                    return false;
                };
                if i == a.len() {
                    a.push(Value::Null);
                }
                match a.get_mut(i) {
                    Some(x) => x,
                    None => return false,
                }
            }
            _ => return false,
        };
    }
    if cur.is_null() && v.is_some() {
        *cur = if last.parse::<usize>().is_ok() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        };
    }
    match (cur, v) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.clone(), v.clone());
            true
        }
        (Value::Object(m), None) => m.shift_remove(last).is_some(),
        (Value::Array(a), Some(v)) => {
            let Ok(i) = last.parse::<usize>() else {
                return false;
            };
            if i == a.len() {
                a.push(v.clone());
                true
            } else if let Some(x) = a.get_mut(i) {
                *x = v.clone();
                true
            } else {
                false
            }
        }
        (Value::Array(a), None) => {
            let Ok(i) = last.parse::<usize>() else {
                return false;
            };
            if i < a.len() {
                a.remove(i);
                true
            } else {
                false
            }
        }
        _ => false,
    }
}

fn loosely_equal(a: &Value, b: &Value) -> bool {
    a == b || (is_scalar(a) && is_scalar(b) && scalar_equal(a, b))
}

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

fn find_doc(parsed: &Parsed, doc: &DocRef<'_>) -> Result<usize> {
    let candidates: Vec<usize> = parsed
        .docs
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            let v = &d.value;
            v.get("kind").and_then(Value::as_str) == Some(doc.kind)
                && v.pointer("/metadata/name").and_then(Value::as_str) == Some(doc.name)
                && match (
                    v.pointer("/metadata/namespace").and_then(Value::as_str),
                    doc.namespace,
                ) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                }
        })
        .map(|(i, _)| i)
        .collect();
    match candidates.as_slice() {
        [] => Err(EditError::Stale(format!(
            "{} {} is no longer declared in the file",
            doc.kind, doc.name
        ))),
        [one] => Ok(*one),
        many => Ok(doc
            .line
            .and_then(|l| {
                many.iter()
                    .copied()
                    .find(|i| parsed.docs[*i].root.line == l)
            })
            .unwrap_or(many[0])),
    }
}

/// Checks the edited text holds exactly the expected documents.
fn verify(new_text: &str, expected: &[Value]) -> Result<()> {
    let docs = yaml::parse_documents(new_text)
        .map_err(|e| no_edit(format!("the edit would not be valid YAML ({e})")))?;
    let got: Vec<&Value> = docs.iter().map(|d| &d.value).collect();
    let want: Vec<&Value> = expected.iter().collect();
    if got != want {
        return Err(no_edit(
            "the edit would change more than the drifted fields (anchors, merge keys or layout)",
        ));
    }
    Ok(())
}

/// Sets Git to the live side of `changes` in the document `doc` of `text`.
///
/// `changes` carry JSON pointers into the live object (list items by their live index); list
/// indices are mapped to the desired file's items by their merge keys (containers by name, ports
/// by port and protocol...), with `live_object` (the drift's) and the Kubernetes `kind`. A
/// `Changed` or `ExtraLive` change writes the live value; a `MissingLive` change removes the
/// field. Masked changes are refused: a secret is never written to Git.
pub fn adopt_changes(
    text: &str,
    doc: &DocRef<'_>,
    changes: &[FieldChange],
    live_object: Option<&Value>,
) -> Result<Edited> {
    apply_remedies(text, doc, changes, live_object, |_| Remedy::Adopt)
}

/// [`adopt_changes`] with a remedy per change (policy's, [`crate::model::Verdict::remedy`]):
/// [`Remedy::Adopt`] writes the live value as `adopt_changes` does; [`Remedy::Unpin`] removes
/// the field from Git (its key line, and the lines of its value), so Git stops declaring it;
/// [`Remedy::Revert`] leaves Git's value as it is. A field Git no longer declares is already
/// unpinned.
pub fn apply_remedies(
    text: &str,
    doc: &DocRef<'_>,
    changes: &[FieldChange],
    live_object: Option<&Value>,
    remedy_of: impl Fn(&FieldChange) -> Remedy,
) -> Result<Edited> {
    // Which edit each change gets: a remedy other than adopt turns it into a removal (unpin) or
    // no edit at all (revert; unpinning a field Git never declared).
    let removes = |c: &FieldChange| match remedy_of(c) {
        Remedy::Adopt => c.op == ChangeOp::MissingLive,
        Remedy::Unpin => c.op != ChangeOp::ExtraLive,
        Remedy::Revert => false,
    };
    let changes: Vec<&FieldChange> = changes
        .iter()
        .filter(|c| match remedy_of(c) {
            Remedy::Adopt => true,
            Remedy::Unpin => c.op != ChangeOp::ExtraLive,
            Remedy::Revert => false,
        })
        .collect();
    if let Some(c) = changes.iter().find(|c| c.masked) {
        return Err(no_edit(format!(
            "`{}` holds a secret value, which is never written to Git",
            c.path
        )));
    }
    let live = LiveCtx::new(live_object, doc.kind);
    let mut current = text.to_string();
    let mut touched = Vec::new();
    // Removals last and from the end, so earlier list indices stay valid.
    let mut order: Vec<&FieldChange> = changes;
    order.sort_by(|a, b| {
        let ra = removes(a);
        let rb = removes(b);
        ra.cmp(&rb).then_with(|| {
            if ra && rb {
                b.path.cmp(&a.path)
            } else {
                std::cmp::Ordering::Equal
            }
        })
    });
    let first = parse(text)?;
    let doc_index = find_doc(&first, doc)?;
    let mut expected: Vec<Value> = first.docs.iter().map(|d| d.value.clone()).collect();

    for change in order {
        let parsed = parse(&current)?;
        let d = parsed
            .docs
            .get(doc_index)
            .ok_or_else(|| no_edit("the document disappeared during editing"))?;
        let segs = pointer_segments(&change.path);
        if segs.is_empty() {
            return Err(no_edit("a change of the whole object is not a field edit"));
        }
        let probe = match change.op {
            ChangeOp::MissingLive => Some(&change.desired),
            _ => None,
        };
        let r = resolve(&current, d, &segs, Some(&live), probe)?;
        check_shared(d, &r.chain, &change.path)?;
        let unpin = change.op == ChangeOp::Changed && remedy_of(change) == Remedy::Unpin;
        let (splice, exp_path, exp_value): (Splice, Vec<String>, Option<Value>) = match change.op {
            // Git no longer declares the field: it is unpinned already.
            ChangeOp::Changed if unpin && !r.rest.is_empty() => continue,
            ChangeOp::Changed if unpin => {
                let have = r
                    .chain
                    .last()
                    .map(|s| s.ynode.to_json())
                    .unwrap_or_default();
                if !loosely_equal(&have, &change.desired) {
                    return Err(EditError::Stale(format!(
                        "`{}` is {} in Git, the drift expected {}",
                        change.path,
                        short(&have),
                        short(&change.desired)
                    )));
                }
                (
                    splice_remove(&current, &r.chain)?,
                    r.desired_path.clone(),
                    None,
                )
            }
            ChangeOp::Changed | ChangeOp::ExtraLive if r.rest.is_empty() => {
                let have = r
                    .chain
                    .last()
                    .map(|s| s.ynode.to_json())
                    .unwrap_or_default();
                if change.op == ChangeOp::Changed && !loosely_equal(&have, &change.desired) {
                    return Err(EditError::Stale(format!(
                        "`{}` is {} in Git, the drift expected {}",
                        change.path,
                        short(&have),
                        short(&change.desired)
                    )));
                }
                if have == change.live {
                    continue;
                }
                (
                    splice_set(&current, &r.chain, &change.live)?,
                    r.desired_path.clone(),
                    Some(change.live.clone()),
                )
            }
            ChangeOp::Changed => {
                return Err(EditError::Stale(format!(
                    "`{}` is not declared in Git any more",
                    change.path
                )));
            }
            ChangeOp::ExtraLive => {
                let mut p = r.desired_path.clone();
                let deepest = r.chain.last().map(|s| s.node);
                let mut rest = r.rest.clone();
                // Appending to a list: the new item goes at the end.
                if let (Some(Kind::Seq { items, .. }), Some(first)) =
                    (deepest.map(|n| &n.kind), rest.first_mut())
                {
                    *first = items.len().to_string();
                }
                p.extend(rest.iter().cloned());
                (
                    splice_insert(&current, &r.chain, &rest, &change.live)?,
                    p,
                    Some(change.live.clone()),
                )
            }
            ChangeOp::MissingLive => {
                if !r.rest.is_empty() {
                    return Err(EditError::Stale(format!(
                        "`{}` is no longer declared in Git",
                        change.path
                    )));
                }
                (
                    splice_remove(&current, &r.chain)?,
                    r.desired_path.clone(),
                    None,
                )
            }
        };
        if let Some(e) = expected.get_mut(doc_index) {
            if !json_set(e, &exp_path, exp_value.as_ref()) {
                return Err(no_edit(format!(
                    "cannot express `{}` as a field edit",
                    change.path
                )));
            }
        }
        touched.push((change.path.clone(), splice.line));
        current = apply(&current, &splice);
        verify(&current, &expected)?;
    }
    touched.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Edited {
        text: current,
        touched,
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// Sets the value at `pointer` (desired indices) in the `doc_index`-th non-empty document,
/// creating missing mapping keys. The lower-level form of [`adopt_changes`].
pub fn set_value(text: &str, doc_index: usize, pointer: &str, value: &Value) -> Result<String> {
    let parsed = parse(text)?;
    let d = parsed
        .docs
        .get(doc_index)
        .ok_or_else(|| no_edit(format!("the file has no document {doc_index}")))?;
    let segs = pointer_segments(pointer);
    let r = resolve(text, d, &segs, None, None)?;
    check_shared(d, &r.chain, pointer)?;
    let mut expected: Vec<Value> = parsed.docs.iter().map(|d| d.value.clone()).collect();
    let splice = if r.rest.is_empty() {
        splice_set(text, &r.chain, value)?
    } else {
        splice_insert(text, &r.chain, &r.rest, value)?
    };
    let mut path = r.desired_path.clone();
    let mut rest = r.rest.clone();
    if let (Some(Kind::Seq { items, .. }), Some(first)) =
        (r.chain.last().map(|s| &s.node.kind), rest.first_mut())
    {
        *first = items.len().to_string();
    }
    path.extend(rest);
    if let Some(e) = expected.get_mut(doc_index) {
        json_set(e, &path, Some(value));
    }
    let out = apply(text, &splice);
    verify(&out, &expected)?;
    Ok(out)
}

/// Removes the value at `pointer` (desired indices) from the `doc_index`-th non-empty document.
pub fn remove_value(text: &str, doc_index: usize, pointer: &str) -> Result<String> {
    let parsed = parse(text)?;
    let d = parsed
        .docs
        .get(doc_index)
        .ok_or_else(|| no_edit(format!("the file has no document {doc_index}")))?;
    let segs = pointer_segments(pointer);
    let r = resolve(text, d, &segs, None, None)?;
    if !r.rest.is_empty() {
        return Err(EditError::Stale(format!("`{pointer}` is not declared")));
    }
    check_shared(d, &r.chain, pointer)?;
    let mut expected: Vec<Value> = parsed.docs.iter().map(|d| d.value.clone()).collect();
    let splice = splice_remove(text, &r.chain)?;
    if let Some(e) = expected.get_mut(doc_index) {
        json_set(e, &r.desired_path, None);
    }
    let out = apply(text, &splice);
    verify(&out, &expected)?;
    Ok(out)
}

/// Removes the document declaring `doc` from a multi-document file, with its `---` separator.
/// `Ok(None)` when it is the file's only document: the file itself goes.
pub fn remove_document(text: &str, doc: &DocRef<'_>) -> Result<Option<String>> {
    let parsed = parse(text)?;
    let i = find_doc(&parsed, doc)?;
    if parsed.docs.len() == 1 {
        return Ok(None);
    }
    let d = &parsed.docs[i];
    // Anchors never cross documents, so removing a whole document cannot break an alias.
    let next_marker = parsed
        .markers
        .iter()
        .skip(d.ordinal + 1)
        .flatten()
        .next()
        .copied();
    let range = match d.marker {
        Some(m) => {
            line_start(text, m)
                ..next_marker
                    .map(|n| line_start(text, n))
                    .unwrap_or(text.len())
        }
        None => {
            let start = line_start(text, d.root.start);
            let end = match next_marker {
                Some(n) => text[n..]
                    .find('\n')
                    .map(|i| n + i + 1)
                    .unwrap_or(text.len()),
                None => text.len(),
            };
            start..end
        }
    };
    let out = apply(
        text,
        &Splice {
            range,
            text: String::new(),
            line: d.root.line,
        },
    );
    let expected: Vec<Value> = parsed
        .docs
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, d)| d.value.clone())
        .collect();
    verify(&out, &expected)?;
    Ok(Some(out))
}

/// Server-set metadata that never belongs in Git.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations the server or kubectl writes.
const SERVER_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// A manifest for an object that exists only live (Unmanaged): the live object without server
/// bookkeeping (`status`, uid, resourceVersion, managedFields...), as block YAML under a comment.
/// Refused when the object holds masked (secret) values.
pub fn adopted_manifest(live: &Value, header: &str) -> Result<String> {
    if contains_mask(live) {
        return Err(no_edit(
            "the live object holds secret values, which are never written to Git",
        ));
    }
    let Some(obj) = live.as_object() else {
        return Err(no_edit("the live object is not a mapping"));
    };
    let mut out = Map::new();
    for key in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = obj.get(key) {
            out.insert(key.to_string(), v.clone());
        }
    }
    for (k, v) in obj {
        if !out.contains_key(k) && k != "status" {
            out.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Object(meta)) = out.get_mut("metadata") {
        for k in SERVER_METADATA {
            meta.shift_remove(*k);
        }
        // Identity first, as people write manifests.
        let mut ordered = Map::new();
        for k in ["name", "namespace", "labels", "annotations"] {
            if let Some(v) = meta.shift_remove(k) {
                ordered.insert(k.to_string(), v);
            }
        }
        ordered.append(meta);
        *meta = ordered;
        let empty = if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
            for k in SERVER_ANNOTATIONS {
                ann.shift_remove(*k);
            }
            ann.is_empty()
        } else {
            false
        };
        if empty {
            meta.shift_remove("annotations");
        }
    }
    let mut text = String::new();
    for line in header.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    text.push_str(&block_yaml(&Value::Object(out)));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoted_scalar_ends() {
        let t = br#"a: "x\"y" # c"#;
        assert_eq!(quoted_end(t, 3, b'"'), 9);
        let t = b"a: 'it''s' # c";
        assert_eq!(quoted_end(t, 3, b'\''), 10);
    }

    #[test]
    fn scalar_styles_are_kept() {
        let t = "a: \"800\" # ms\nb: 'x'\nc: plain\n";
        assert_eq!(
            set_value(t, 0, "/a", &json!("2500")).unwrap(),
            "a: \"2500\" # ms\nb: 'x'\nc: plain\n"
        );
        assert_eq!(
            set_value(t, 0, "/b", &json!("it's")).unwrap(),
            "a: \"800\" # ms\nb: 'it''s'\nc: plain\n"
        );
        assert_eq!(
            set_value(t, 0, "/c", &json!("true")).unwrap(),
            "a: \"800\" # ms\nb: 'x'\nc: \"true\"\n"
        );
    }

    #[test]
    fn nest_builds_lists_and_maps() {
        assert_eq!(
            nest(&["a".into(), "0".into(), "b".into()], &json!(1)),
            json!({"a": [{"b": 1}]})
        );
    }

    #[test]
    fn json_set_appends_and_removes() {
        let mut v = json!({"a": [1, 2]});
        assert!(json_set(&mut v, &["a".into(), "2".into()], Some(&json!(3))));
        assert!(json_set(&mut v, &["a".into(), "0".into()], None));
        assert!(json_set(
            &mut v,
            &["b".into(), "c".into()],
            Some(&json!("x"))
        ));
        assert_eq!(v, json!({"a": [2, 3], "b": {"c": "x"}}));
    }
}
