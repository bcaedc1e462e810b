//! A YAML loader that keeps positions.
//!
//! serde-based YAML crates throw away where a value came from, yet every promise about bad input
//! ("name the file and line") and every provenance record needs it. This module builds a small
//! node tree with line and column from saphyr-parser's events (YAML 1.2, core schema), converts it
//! to `serde_json::Value` for the rest of the pipeline, and keeps the tree for lookups such as
//! "which line declares `/spec/replicas`". It never does IO.

use std::collections::{HashMap, HashSet};
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

/// A parse failure with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} column {col}: {message}")]
pub struct YamlError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// A YAML node with the position where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

/// The shape of a node. Mappings keep their source order.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Scalar(Value),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// One document of a (possibly multi-document) YAML stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document as JSON data.
    pub value: Value,
    /// 1-based line where the document's content starts.
    pub line: usize,
    /// The positioned tree.
    pub root: Node,
}

impl Node {
    /// Converts to JSON data: mapping keys become strings, merge keys (`<<`) are expanded.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(v) => v.clone(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut out = Map::new();
                let mut merged: Vec<&Node> = Vec::new();
                for (k, v) in entries {
                    if is_merge_key(k) {
                        match &v.kind {
                            NodeKind::Seq(items) => merged.extend(items.iter()),
                            _ => merged.push(v),
                        }
                        continue;
                    }
                    out.insert(key_string(k), v.to_json());
                }
                for m in merged {
                    if let Value::Object(extra) = m.to_json() {
                        for (k, v) in extra {
                            out.entry(k).or_insert(v);
                        }
                    }
                }
                Value::Object(out)
            }
        }
    }

    /// The child at a mapping key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| key_string(k) == key)
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at an RFC 6901 JSON pointer, or the deepest ancestor that exists.
    pub fn locate(&self, pointer: &str) -> &Node {
        let mut node = self;
        for raw in pointer.split('/').skip(1) {
            let seg = raw.replace("~1", "/").replace("~0", "~");
            let next = match &node.kind {
                NodeKind::Map(_) => node.get(&seg),
                NodeKind::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                NodeKind::Scalar(_) => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The entries of a mapping with their key nodes, for validators that report key positions.
    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// A short description of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar(Value::Null) => "null",
            NodeKind::Scalar(Value::Bool(_)) => "a boolean",
            NodeKind::Scalar(Value::Number(_)) => "a number",
            NodeKind::Scalar(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

/// Renders a mapping key as the string JSON needs.
pub fn key_string(k: &Node) -> String {
    match &k.kind {
        NodeKind::Scalar(Value::String(s)) => s.clone(),
        NodeKind::Scalar(Value::Null) => "null".to_string(),
        NodeKind::Scalar(v) => v.to_string(),
        _ => k.to_json().to_string(),
    }
}

fn is_merge_key(k: &Node) -> bool {
    matches!(&k.kind, NodeKind::Scalar(Value::String(s)) if s == "<<")
}

enum Frame {
    Seq {
        anchor: usize,
        start: Span,
        items: Vec<Node>,
    },
    Map {
        anchor: usize,
        start: Span,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// The keys seen so far (merge keys aside): the duplicate check is one lookup per key,
        /// not a scan of the entries, so a mapping of n keys costs O(n), not O(n²).
        keys: HashSet<String>,
    },
}

/// The deepest nesting of collections accepted. Everything that reads the data (conversion to
/// JSON, the diff, masking, dropping it) recurses once per level, on threads whose stacks are a
/// few MiB; a Kubernetes object nests a few dozen levels, a CRD's schema under a hundred.
pub const MAX_DEPTH: usize = 256;

/// The most values aliases may add to one stream (each alias is a copy of its anchor's value).
/// Real manifests stay far below; nested aliases double at every level ("billion laughs"), so
/// without a bound a few hundred bytes would take all memory.
pub const MAX_ALIAS_VALUES: usize = 100_000;

/// The number of values in a node, and how many levels it nests (a scalar: 1 and 0).
fn node_extent(n: &Node) -> (usize, usize) {
    match &n.kind {
        NodeKind::Scalar(_) => (1, 0),
        NodeKind::Seq(items) => items.iter().fold((1, 1), |(c, d), i| {
            let (ic, id) = node_extent(i);
            (c + ic, d.max(id + 1))
        }),
        NodeKind::Map(entries) => entries.iter().fold((1, 1), |(c, d), (k, v)| {
            let (kc, kd) = node_extent(k);
            let (vc, vd) = node_extent(v);
            (c + kc + vc, d.max(kd.max(vd) + 1))
        }),
    }
}

/// Parses every document of a YAML stream. Empty documents (only comments) are skipped.
///
/// Nesting deeper than [`MAX_DEPTH`] (written, or reached through aliases) and aliases that
/// expand to more than [`MAX_ALIAS_VALUES`] values are errors.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // Each anchor's node, with its extent (values, depth).
    let mut anchors: HashMap<usize, (Node, usize, usize)> = HashMap::new();
    let mut aliased_values = 0usize;
    let mut root: Option<Node> = None;

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            line: e.marker().line(),
            col: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let finished: Option<Node> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                anchors.clear();
                root = None;
                None
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take() {
                    if !matches!(r.kind, NodeKind::Scalar(Value::Null)) {
                        docs.push(Document {
                            value: r.to_json(),
                            line: r.line,
                            root: r,
                        });
                    }
                }
                None
            }
            Event::Alias(id) => {
                let err = |message: String| YamlError {
                    line: span.start.line(),
                    col: span.start.col() + 1,
                    message,
                };
                let (node, values, depth) = anchors
                    .get(&id)
                    .ok_or_else(|| err("alias refers to an unknown anchor".to_string()))?;
                aliased_values = aliased_values.saturating_add(*values);
                if aliased_values > MAX_ALIAS_VALUES {
                    return Err(err(format!(
                        "aliases expand to more than {MAX_ALIAS_VALUES} values"
                    )));
                }
                if stack.len() + depth > MAX_DEPTH {
                    return Err(err(format!(
                        "the alias nests deeper than {MAX_DEPTH} levels"
                    )));
                }
                Some(node.clone())
            }
            Event::Scalar(value, style, anchor, tag) => {
                let tag_suffix = tag.as_ref().map(|t| {
                    if t.handle == "!!" || t.handle == "tag:yaml.org,2002:" {
                        t.suffix.clone()
                    } else {
                        String::new()
                    }
                });
                let v = resolve_scalar(&value, style, tag_suffix.as_deref()).map_err(|m| {
                    YamlError {
                        line: span.start.line(),
                        col: span.start.col() + 1,
                        message: m,
                    }
                })?;
                let node = Node {
                    kind: NodeKind::Scalar(v),
                    line: span.start.line(),
                    col: span.start.col() + 1,
                };
                if anchor > 0 {
                    anchors.insert(anchor, (node.clone(), 1, 0));
                }
                Some(node)
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(YamlError {
                    line: span.start.line(),
                    col: span.start.col() + 1,
                    message: format!("collections nest deeper than {MAX_DEPTH} levels"),
                });
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq {
                    anchor,
                    start: span,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map {
                    anchor,
                    start: span,
                    entries: Vec::new(),
                    pending_key: None,
                    keys: HashSet::new(),
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, node) = match stack.pop() {
                    Some(Frame::Seq {
                        anchor,
                        start,
                        items,
                    }) => (
                        anchor,
                        Node {
                            kind: NodeKind::Seq(items),
                            line: start.start.line(),
                            col: start.start.col() + 1,
                        },
                    ),
                    Some(Frame::Map {
                        anchor,
                        start,
                        entries,
                        ..
                    }) => {
                        // A block mapping's start event sits on its first key: report that.
                        let (line, col) = entries
                            .first()
                            .map(|(k, _)| (k.line, k.col))
                            .unwrap_or((start.start.line(), start.start.col() + 1));
                        (
                            anchor,
                            Node {
                                kind: NodeKind::Map(entries),
                                line,
                                col,
                            },
                        )
                    }
                    None => {
                        return Err(YamlError {
                            line: span.start.line(),
                            col: span.start.col() + 1,
                            message: "unbalanced collection end".to_string(),
                        });
                    }
                };
                if anchor > 0 {
                    let (values, depth) = node_extent(&node);
                    anchors.insert(anchor, (node.clone(), values, depth));
                }
                Some(node)
            }
        };
        if let Some(node) = finished {
            match stack.last_mut() {
                None => root = Some(node),
                Some(Frame::Seq { items, .. }) => items.push(node),
                Some(Frame::Map {
                    entries,
                    pending_key,
                    keys,
                    ..
                }) => match pending_key.take() {
                    None => {
                        if !is_merge_key(&node) {
                            let key = key_string(&node);
                            if keys.contains(&key) {
                                return Err(YamlError {
                                    line: node.line,
                                    col: node.col,
                                    message: format!("duplicate key {key:?}"),
                                });
                            }
                            keys.insert(key);
                        }
                        *pending_key = Some(node);
                    }
                    Some(k) => entries.push((k, node)),
                },
            }
        }
    }
    Ok(docs)
}

/// Parses a stream that must hold exactly one document (config files). Empty text is an error.
pub fn parse_single(text: &str) -> Result<Document, YamlError> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        1 => Ok(docs.remove(0)),
        0 => Err(YamlError {
            line: 1,
            col: 1,
            message: "the file is empty".to_string(),
        }),
        _ => Err(YamlError {
            line: docs[1].line,
            col: 1,
            message: "expected one YAML document, found several".to_string(),
        }),
    }
}

/// YAML 1.2 core schema resolution for plain scalars; quoted and block scalars are strings.
fn resolve_scalar(s: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        Some("str") | Some("binary") | Some("timestamp") => return Ok(Value::String(s.into())),
        Some("null") => return Ok(Value::Null),
        Some("bool") => {
            return match s {
                "true" | "True" | "TRUE" => Ok(Value::Bool(true)),
                "false" | "False" | "FALSE" => Ok(Value::Bool(false)),
                _ => Err(format!("{s:?} is not a boolean")),
            };
        }
        Some("int") => {
            return parse_int(s)
                .map(|i| Value::Number(i.into()))
                .ok_or_else(|| format!("{s:?} is not an integer"));
        }
        Some("float") => {
            return parse_float(s)
                .map(float_value)
                .ok_or_else(|| format!("{s:?} is not a number"));
        }
        _ => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(s.into()));
    }
    Ok(match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Some(i) = parse_int(s) {
                Value::Number(i.into())
            } else if looks_like_float(s) {
                parse_float(s)
                    .map(float_value)
                    .unwrap_or_else(|| Value::String(s.into()))
            } else {
                Value::String(s.into())
            }
        }
    })
}

fn parse_int(s: &str) -> Option<i64> {
    if let Some(h) = s.strip_prefix("0x") {
        return i64::from_str_radix(h, 16).ok();
    }
    if let Some(o) = s.strip_prefix("0o") {
        return i64::from_str_radix(o, 8).ok();
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

fn looks_like_float(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(t, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mant_ok = {
        let mut parts = mantissa.splitn(2, '.');
        let int = parts.next().unwrap_or("");
        let frac = parts.next();
        let int_ok = int.bytes().all(|b| b.is_ascii_digit());
        match frac {
            Some(f) => {
                int_ok && f.bytes().all(|b| b.is_ascii_digit()) && !(int.is_empty() && f.is_empty())
            }
            None => int_ok && !int.is_empty(),
        }
    };
    let exp_ok = match exp {
        None => true,
        Some(e) => {
            let d = e.strip_prefix(['-', '+']).unwrap_or(e);
            !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
        }
    };
    mant_ok && exp_ok
}

fn parse_float(s: &str) -> Option<f64> {
    let t = s.strip_prefix('+').unwrap_or(s);
    match t {
        ".inf" | ".Inf" | ".INF" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => Some(f64::NAN),
        _ => t.parse::<f64>().ok(),
    }
}

fn float_value(f: f64) -> Value {
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// Renders JSON data as block YAML, for human diffs. Strings that would read as another type are
/// quoted; key order is kept.
pub fn to_yaml(v: &Value) -> String {
    to_block_yaml(
        v,
        &|k| scalar_text(&Value::String(k.to_string())),
        &scalar_text,
    )
}

/// Renders JSON data as block YAML at indent 0 with a trailing newline, keys and scalars (and
/// empty collections) written by the given functions. Shared by human diffs and adoption edits.
pub fn to_block_yaml(
    v: &Value,
    key: &dyn Fn(&str) -> String,
    scalar: &dyn Fn(&Value) -> String,
) -> String {
    let mut out = String::new();
    write_yaml(v, 0, &mut out, key, scalar);
    out
}

/// The longest key written as an implicit `key: value` (YAML allows 1024 characters, the `:`
/// and a margin included).
const MAX_IMPLICIT_KEY: usize = 1000;

fn write_yaml(
    v: &Value,
    indent: usize,
    out: &mut String,
    key: &dyn Fn(&str) -> String,
    scalar: &dyn Fn(&Value) -> String,
) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, val) in m {
                let k = key(k);
                out.push_str(&pad);
                // An implicit key is at most 1024 characters (YAML 1.2, 7.4.2); a longer one
                // is written explicitly: `? key`, then `:` on the next line.
                if k.chars().count() > MAX_IMPLICIT_KEY {
                    out.push_str("? ");
                    out.push_str(&k);
                    out.push('\n');
                    out.push_str(&pad);
                } else {
                    out.push_str(&k);
                }
                out.push(':');
                write_child(val, indent, out, key, scalar);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for val in a {
                out.push_str(&pad);
                out.push('-');
                match val {
                    Value::Object(m) if !m.is_empty() => {
                        let mut inner = String::new();
                        write_yaml(val, indent + 2, &mut inner, key, scalar);
                        out.push(' ');
                        out.push_str(inner.trim_start());
                    }
                    _ => write_child(val, indent, out, key, scalar),
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_child(
    val: &Value,
    indent: usize,
    out: &mut String,
    key: &dyn Fn(&str) -> String,
    scalar: &dyn Fn(&Value) -> String,
) {
    match val {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_yaml(val, indent + 2, out, key, scalar);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_yaml(val, indent + 2, out, key, scalar);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// One scalar as YAML text.
pub fn scalar_text(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let plain_ok = !s.is_empty()
                && !s.contains(['\n', '#', '"', '\''])
                // A control character (a carriage return breaks the line; others are not
                // printable in YAML), a line or paragraph separator or a byte-order mark is
                // written escaped, in double quotes.
                && !s
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
                && !s.contains(": ")
                && !s.starts_with([
                    ' ', '-', '?', ':', ',', '[', ']', '{', '}', '&', '*', '!', '|', '>', '%', '@',
                    '`',
                ])
                && !s.ends_with([' ', ':'])
                // Plain only when it reads back as this very string: `.inf` or `.nan` read as
                // floats, which JSON holds as the strings `inf` and `NaN`.
                && matches!(
                    resolve_scalar(s, ScalarStyle::Plain, None),
                    Ok(Value::String(r)) if r == *s
                );
            if plain_ok {
                s.clone()
            } else {
                Value::String(s.clone()).to_string()
            }
        }
        Value::Array(_) => "[]".to_string(),
        Value::Object(_) => "{}".to_string(),
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_yaml(&self.to_json()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn multi_document_lines_and_types() {
        let text = "# comment\napiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"1\"\n  b: 2\n  c: 1.5\n  d: ~\n  e: yes\n---\n---\n# only a comment\n---\nkind: Secret\nlist: [1, two, 3.0]\n";
        let docs = parse_documents(text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].line, 2);
        assert_eq!(
            docs[0].value["data"],
            json!({"a": "1", "b": 2, "c": 1.5, "d": null, "e": "yes"})
        );
        assert_eq!(docs[1].line, 14);
        assert_eq!(docs[1].value["list"], json!([1, "two", 3.0]));
        assert_eq!(docs[0].root.locate("/data/b").line, 6);
        assert_eq!(docs[0].root.locate("/data/zzz").line, 5);
    }

    /// Found by the `yaml` fuzz target's kind of input (fixtures/fuzz/): nested aliases that
    /// double at every level took all memory before any error.
    #[test]
    fn an_alias_bomb_is_refused_with_its_position() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/fuzz/yaml-alias-bomb.yaml"
        ))
        .unwrap();
        let e = parse_documents(&text).unwrap_err();
        assert!(e.message.contains("aliases expand to more than"), "{e}");
        assert!((5..=10).contains(&e.line), "{e}");
        // A few aliases of a large anchor are fine.
        let ok = "a: &a {x: 1, y: [1, 2, 3]}\nb: *a\nc: *a\nd: {<<: *a, z: 2}\n";
        assert_eq!(
            parse_single(ok).unwrap().value["d"],
            json!({"z": 2, "x": 1, "y": [1, 2, 3]})
        );
    }

    /// 20,000 nested sequences overflowed the stack of whatever read the data next (a test
    /// thread's, a runtime worker's): refused at the first level past the limit.
    #[test]
    fn nesting_past_the_limit_is_refused() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/fuzz/yaml-deep-nesting.yaml"
        ))
        .unwrap();
        let e = parse_documents(&text).unwrap_err();
        assert!(e.message.contains("nest deeper than 256"), "{e}");
        assert_eq!(e.line, 1, "{e}");
        let at_limit = format!("{}x\n", "- ".repeat(MAX_DEPTH));
        assert!(parse_documents(&at_limit).is_ok());
        let past = format!("{}x\n", "- ".repeat(MAX_DEPTH + 1));
        assert!(parse_documents(&past).is_err());
        // Through aliases: an anchor 200 deep used 100 levels down.
        let anchor = format!("{}x{}", "[".repeat(200), "]".repeat(200));
        let deep = format!("a: &a {anchor}\nb:\n{}*a\n", "- ".repeat(100));
        let e = parse_documents(&deep).unwrap_err();
        assert!(e.message.contains("deeper than"), "{e}");
    }

    /// Found by the `yaml` fuzz target (fixtures/fuzz/yaml-long-key.yaml: a managedFields
    /// mapping turned into a mapping key by one changed byte): `to_yaml`, which adoption edits
    /// share, wrote the 1,100-character key as an implicit key, which no YAML reader accepts.
    #[test]
    fn keys_past_the_implicit_key_limit_are_written_explicitly() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/fuzz/yaml-long-key.yaml"
        ))
        .unwrap();
        for d in parse_documents(&text).unwrap() {
            let back = parse_single(&to_yaml(&d.value)).unwrap();
            assert_eq!(back.value, d.value);
        }
        let long = "k".repeat(2000);
        let v = json!({ long.clone(): {"a": [1, {long.clone(): 2}]}, "short": 1 });
        let text = to_yaml(&v);
        assert!(text.starts_with("? kkk"), "{text}");
        assert_eq!(parse_single(&text).unwrap().value, v);
    }

    /// Found by the `yaml` fuzz target (fixtures/fuzz/yaml-control-characters.json: a
    /// manager name with a carriage return, a key with a control character): `to_yaml` wrote
    /// `manager: \riftwarden` plain, and the carriage return broke the line.
    #[test]
    fn strings_with_control_characters_are_written_escaped() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/fuzz/yaml-control-characters.json"
        ))
        .unwrap();
        for d in parse_documents(&text).unwrap() {
            let back = parse_single(&to_yaml(&d.value)).unwrap();
            assert_eq!(back.value, d.value);
        }
        for s in [
            "\riftwarden",
            "a\rb",
            "tab\tinside",
            "\u{0e}x",
            "x\u{7f}",
            "nel\u{85}x",
            "ls\u{2028}x",
            "\u{feff}bom",
        ] {
            let v = json!({ s: s });
            let text = to_yaml(&v);
            assert_eq!(parse_single(&text).unwrap().value, v, "{text:?}");
        }
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "base: &b\n  x: 1\n  y: 2\nuse:\n  <<: *b\n  y: 3\nref: *b\n";
        let d = parse_single(text).unwrap();
        assert_eq!(d.value["use"], json!({"y": 3, "x": 1}));
        assert_eq!(d.value["ref"], json!({"x": 1, "y": 2}));
    }

    #[test]
    fn errors_carry_positions() {
        let e = parse_documents("a: b\n  c: d\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse_documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("duplicate key"));
        let e = parse_documents("key: [unclosed\n").unwrap_err();
        assert!(e.line >= 1);
    }

    #[test]
    fn a_duplicate_after_many_keys_is_found_and_merge_keys_are_not_duplicates() {
        let mut text: String = (0..20_000).map(|i| format!("k{i}: {i}\n")).collect();
        let d = parse_single(&text).unwrap();
        assert_eq!(d.value.as_object().map(|m| m.len()), Some(20_000));
        text.push_str("k7: again\n");
        let e = parse_documents(&text).unwrap_err();
        assert_eq!(e.line, 20_001, "{e}");
        assert!(e.message.contains("duplicate key \"k7\""), "{e}");
        let d = parse_single("a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: *a\n  <<: *b\n  z: 3\n");
        assert!(d.is_ok(), "{d:?}");
    }

    #[test]
    fn number_forms() {
        let d = parse_single("a: 0x1F\nb: 1e9\nc: -3\nd: 1.0.0\ne: 0.5\nf: '5'\ng: 08\n").unwrap();
        assert_eq!(d.value["a"], json!(31));
        assert_eq!(d.value["b"], json!(1e9));
        assert_eq!(d.value["c"], json!(-3));
        assert_eq!(d.value["d"], json!("1.0.0"));
        assert_eq!(d.value["e"], json!(0.5));
        assert_eq!(d.value["f"], json!("5"));
        assert_eq!(d.value["g"], json!(8));
    }

    #[test]
    fn yaml_rendering_round_trips() {
        let v = json!({"a": {"b": [1, {"c": "x", "d": "true"}], "e": ""}, "f": "a: b"});
        let text = to_yaml(&v);
        assert_eq!(parse_single(&text).unwrap().value, v, "{text}");
    }
}
