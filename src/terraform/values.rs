//! Value helpers shared by the plan reader, the state reader and the state-vs-live compare:
//! Terraform's sensitivity and unknown marks, per-attribute differences with pointer paths, the
//! empty-value and set equivalences that keep the compare free of false drift, and a scanner that
//! finds the line of each entry of a top-level JSON array (for provenance and error messages).
//!
//! Nothing here does IO.

use serde_json::{Map, Value};

use crate::model::MASK;

/// Shown in place of a value Terraform will know only after apply (`after_unknown`).
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

/// A JSON syntax error's message without its position (the error's own fields carry that).
/// serde_json's syntax errors never quote a value from the document.
pub(crate) fn json_syntax_message(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Eof => {
            "the file ends in the middle of the document (truncated?)".to_string()
        }
        _ => {
            let s = e.to_string();
            s.split(" at line ").next().unwrap_or(&s).to_string()
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Appends a segment to a pointer.
pub fn join(pointer: &str, seg: &str) -> String {
    format!("{pointer}/{}", escape(seg))
}

/// A pointer from path steps (strings are keys, numbers indices), as Terraform encodes
/// `relevant_attributes` and `replace_paths`.
pub fn pointer_from_steps(steps: &[Value]) -> String {
    let mut out = String::new();
    for s in steps {
        match s {
            Value::String(k) => out = join(&out, k),
            Value::Number(n) => out = join(&out, &n.to_string()),
            other => out = join(&out, &other.to_string()),
        }
    }
    out
}

/// Whether `inner` is `outer` or lies under it (both pointers).
pub fn within(outer: &str, inner: &str) -> bool {
    outer.is_empty()
        || inner == outer
        || (inner.starts_with(outer) && inner.as_bytes().get(outer.len()) == Some(&b'/'))
}

/// Whether two pointers overlap: one equals or contains the other.
pub fn overlaps(a: &str, b: &str) -> bool {
    within(a, b) || within(b, a)
}

/// Replaces the parts of `value` that `marks` flags with `true` by `replacement`.
///
/// `marks` has the shape Terraform gives `before_sensitive`, `after_sensitive` and
/// `after_unknown`: `true` for the whole value, or an object/array of marks mirroring the value,
/// `false` or absent for unmarked parts. With `insert`, a marked part the value lacks is added
/// (unknown values are omitted from `after`); without, only present, non-null parts are replaced.
pub fn apply_marks(value: &mut Value, marks: &Value, replacement: &str, insert: bool) {
    match marks {
        Value::Bool(true) if insert || !value.is_null() => {
            *value = Value::String(replacement.to_string());
        }
        Value::Object(m) => {
            if value.is_null() && insert && m.values().any(has_mark) {
                *value = Value::Object(Map::new());
            }
            if let Value::Object(vm) = value {
                for (k, mk) in m {
                    if !has_mark(mk) {
                        continue;
                    }
                    match vm.get_mut(k) {
                        Some(v) => apply_marks(v, mk, replacement, insert),
                        None if insert => {
                            let mut v = Value::Null;
                            apply_marks(&mut v, mk, replacement, insert);
                            vm.insert(k.clone(), v);
                        }
                        None => {}
                    }
                }
            } else if !value.is_null() && m.values().any(has_mark) {
                // The marks expect an object and the value is something else: hide it whole.
                *value = Value::String(replacement.to_string());
            }
        }
        Value::Array(ms) => {
            if value.is_null() && insert && ms.iter().any(has_mark) {
                *value = Value::Array(Vec::new());
            }
            if let Value::Array(vs) = value {
                for (i, mk) in ms.iter().enumerate() {
                    if !has_mark(mk) {
                        continue;
                    }
                    if i >= vs.len() {
                        if !insert {
                            continue;
                        }
                        vs.resize(i + 1, Value::Null);
                    }
                    apply_marks(&mut vs[i], mk, replacement, insert);
                }
            } else if !value.is_null() && ms.iter().any(has_mark) {
                *value = Value::String(replacement.to_string());
            }
        }
        _ => {}
    }
}

/// Whether a marks value flags anything.
pub fn has_mark(marks: &Value) -> bool {
    match marks {
        Value::Bool(b) => *b,
        Value::Object(m) => m.values().any(has_mark),
        Value::Array(a) => a.iter().any(has_mark),
        _ => false,
    }
}

/// The marks at a pointer: `true` when an ancestor (or the node itself) is marked `true`,
/// else the sub-marks there (or `Null`).
pub fn marks_at<'a>(marks: &'a Value, pointer: &str) -> &'a Value {
    const TRUE: &Value = &Value::Bool(true);
    const NULL: &Value = &Value::Null;
    let mut cur = marks;
    if pointer.is_empty() {
        return cur;
    }
    for raw in pointer.split('/').skip(1) {
        if cur == TRUE {
            return TRUE;
        }
        let seg = raw.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Object(m) => m.get(&seg).unwrap_or(NULL),
            Value::Array(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .unwrap_or(NULL),
            _ => return NULL,
        };
    }
    cur
}

/// Whether anything at, above or below a pointer is marked.
pub fn marked(marks: &Value, pointer: &str) -> bool {
    has_mark(marks_at(marks, pointer))
}

/// Empty values Terraform and the EC2 API use interchangeably for "nothing": null, `""`, `[]`
/// and `{}`.
pub fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Equality with the no-false-drift rules: empty values are equal to each other, objects
/// compare key by key with absent keys treated as null, numbers compare numerically, and arrays
/// compare in order (sets are sorted by [`canonical_set`] before they get here).
pub fn equivalent(a: &Value, b: &Value) -> bool {
    if is_empty(a) && is_empty(b) {
        return true;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let null = Value::Null;
            x.keys()
                .chain(y.keys())
                .all(|k| equivalent(x.get(k).unwrap_or(&null), y.get(k).unwrap_or(&null)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equivalent(p, q))
        }
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A set-valued attribute in a stable order: elements with empty fields dropped (so `null` and
/// `[]` members compare equal), sorted by their JSON text, duplicates removed.
pub fn canonical_set(v: &Value) -> Value {
    let Value::Array(items) = v else {
        return v.clone();
    };
    let mut items: Vec<Value> = items.iter().map(prune_empty).collect();
    items.sort_by_cached_key(|x| x.to_string());
    items.dedup();
    Value::Array(items)
}

/// A copy with empty members of objects removed, recursively (object keys only; array elements
/// stay where they are).
pub fn prune_empty(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !is_empty(x))
                .map(|(k, x)| (k.clone(), prune_empty(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(prune_empty).collect()),
        other => other.clone(),
    }
}

/// One attribute that differs: its pointer and the two sides (raw, unmasked).
#[derive(Debug, Clone, PartialEq)]
pub struct RawChange {
    pub path: String,
    pub before: Value,
    pub after: Value,
}

/// The attributes that differ between two objects, one entry per attribute: objects (maps and
/// nested blocks) are descended so each key is its own change (`/tags/Name`), single-item block
/// lists are descended too (`/root_block_device/0/volume_size`), and any other list, and every
/// attribute named in `sets`, is compared as a whole. Set attributes compare order-insensitively.
pub fn attribute_changes(before: &Value, after: &Value, sets: &[&str]) -> Vec<RawChange> {
    let mut out = Vec::new();
    // A whole object that appears (create) or goes (delete) is still one change per attribute.
    let empty = Value::Object(Map::new());
    let before = if before.is_null() && after.is_object() {
        &empty
    } else {
        before
    };
    let after = if after.is_null() && before.is_object() {
        &empty
    } else {
        after
    };
    walk("", before, after, sets, &mut out);
    out
}

fn walk(path: &str, b: &Value, a: &Value, sets: &[&str], out: &mut Vec<RawChange>) {
    let top = path.rsplit('/').next().unwrap_or("");
    let is_set = path.matches('/').count() == 1 && sets.contains(&top);
    if is_set {
        if !equivalent(&canonical_set(b), &canonical_set(a)) {
            out.push(RawChange {
                path: path.to_string(),
                before: b.clone(),
                after: a.clone(),
            });
        }
        return;
    }
    if equivalent(b, a) {
        return;
    }
    match (b, a) {
        (Value::Object(bm), Value::Object(am)) => {
            let mut keys: Vec<&String> = bm.keys().chain(am.keys()).collect();
            keys.sort();
            keys.dedup();
            let null = Value::Null;
            for k in keys {
                walk(
                    &join(path, k),
                    bm.get(k).unwrap_or(&null),
                    am.get(k).unwrap_or(&null),
                    sets,
                    out,
                );
            }
        }
        (Value::Array(bl), Value::Array(al))
            if bl.len() == 1 && al.len() == 1 && bl[0].is_object() && al[0].is_object() =>
        {
            walk(&join(path, "0"), &bl[0], &al[0], sets, out);
        }
        (Value::Null, Value::Object(am)) if !path.is_empty() && !am.is_empty() => {
            // A map that appeared: one change per key, like a map that grew.
            walk(path, &Value::Object(Map::new()), a, sets, out);
        }
        (Value::Object(bm), Value::Null) if !path.is_empty() && !bm.is_empty() => {
            walk(path, b, &Value::Object(Map::new()), sets, out);
        }
        _ => out.push(RawChange {
            path: path.to_string(),
            before: b.clone(),
            after: a.clone(),
        }),
    }
}

/// A masked copy of a value: every part flagged in `marks` replaced by [`MASK`].
pub fn masked(value: &Value, marks: &Value) -> Value {
    let mut v = value.clone();
    apply_marks(&mut v, marks, MASK, false);
    v
}

/// [`MASK`] for a non-null value, null for null.
pub fn mask_leaf(v: &Value) -> Value {
    if v.is_null() {
        Value::Null
    } else {
        Value::String(MASK.to_string())
    }
}

/// The 1-based line where each element of the array under top-level key `key` starts, in order.
/// Empty when the key is absent or the text is not the expected shape. A small scanner (strings,
/// escapes, nesting) so provenance can name a line without a span-aware JSON parser.
pub fn element_lines(text: &str, key: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0usize;
    let mut out = Vec::new();
    // State: after seeing the wanted key at depth 1, the next `[` opens the array.
    let mut want_array = false;
    let mut in_array_depth: Option<usize> = None;
    let mut expect_element = false;
    let mut last_string: Option<(usize, usize)> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => line += 1,
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    } else if bytes[i] == b'\n' {
                        line += 1;
                    }
                    i += 1;
                }
                if expect_element && in_array_depth == Some(depth) {
                    out.push(line);
                    expect_element = false;
                }
                last_string = Some((start, i.min(bytes.len())));
            }
            b':' => {
                if depth == 1 && in_array_depth.is_none() {
                    if let Some((s, e)) = last_string {
                        want_array = text.get(s..e) == Some(key);
                    }
                }
            }
            b'{' | b'[' => {
                if expect_element && in_array_depth == Some(depth) {
                    out.push(line);
                    expect_element = false;
                }
                depth += 1;
                if c == b'[' && want_array && depth == 2 {
                    in_array_depth = Some(depth);
                    expect_element = true;
                    want_array = false;
                }
            }
            b'}' | b']' => {
                if in_array_depth == Some(depth) && c == b']' {
                    return out;
                }
                depth = depth.saturating_sub(1);
            }
            b',' => {
                if in_array_depth == Some(depth) {
                    expect_element = true;
                }
                if depth == 1 {
                    want_array = false;
                }
            }
            b' ' | b'\t' | b'\r' => {}
            _ => {
                if expect_element && in_array_depth == Some(depth) {
                    out.push(line);
                    expect_element = false;
                }
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn marks_replace_and_insert() {
        let mut v = json!({"a": "x", "b": {"c": "secret", "d": "ok"}, "l": ["p", "q"]});
        apply_marks(
            &mut v,
            &json!({"b": {"c": true}, "l": [false, true]}),
            MASK,
            false,
        );
        assert_eq!(
            v,
            json!({"a": "x", "b": {"c": MASK, "d": "ok"}, "l": ["p", MASK]})
        );
        let mut after = json!({"id": null, "name": "web"});
        apply_marks(
            &mut after,
            &json!({"arn": true, "id": true}),
            KNOWN_AFTER_APPLY,
            true,
        );
        assert_eq!(
            after,
            json!({"id": KNOWN_AFTER_APPLY, "name": "web", "arn": KNOWN_AFTER_APPLY})
        );
        let mut whole = json!("secret");
        apply_marks(&mut whole, &json!(true), MASK, false);
        assert_eq!(whole, json!(MASK));
        let mut shape = json!("flat");
        apply_marks(&mut shape, &json!({"x": true}), MASK, false);
        assert_eq!(shape, json!(MASK));
    }

    #[test]
    fn marks_at_inherits_from_ancestors() {
        let m = json!({"tags": true, "b": [{"c": true}]});
        assert!(marked(&m, "/tags/Name"));
        assert!(marked(&m, "/b/0/c"));
        assert!(marked(&m, "/b"));
        assert!(!marked(&m, "/other"));
    }

    #[test]
    fn changes_descend_maps_and_single_blocks() {
        let b = json!({"tags": {"Name": "a", "Env": "x"}, "root_block_device": [{"volume_size": 8}], "ingress": [{"p": 1}, {"p": 2}], "n": null});
        let a = json!({"tags": {"Name": "b", "Env": "x", "New": "y"}, "root_block_device": [{"volume_size": 16}], "ingress": [{"p": 2}, {"p": 1}], "n": []});
        let ch = attribute_changes(&b, &a, &["ingress"]);
        let paths: Vec<&str> = ch.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/root_block_device/0/volume_size",
                "/tags/Name",
                "/tags/New"
            ]
        );
        let ch = attribute_changes(&json!({"k/x": 1}), &json!({"k/x": 2}), &[]);
        assert_eq!(ch[0].path, "/k~1x");
    }

    #[test]
    fn empty_values_are_equivalent() {
        assert!(equivalent(&json!(null), &json!({})));
        assert!(equivalent(&json!([]), &json!("")));
        assert!(equivalent(&json!({"a": null}), &json!({})));
        assert!(equivalent(&json!(1), &json!(1.0)));
        assert!(!equivalent(&json!(0), &json!(null)));
    }

    #[test]
    fn element_lines_find_array_entries() {
        let text = "{\n  \"x\": {\"resources\": [1]},\n  \"resources\": [\n    {\"a\": \"[\\\"\"},\n    {\"b\": [1,\n 2]}\n  ],\n  \"after\": 1\n}";
        assert_eq!(element_lines(text, "resources"), [4, 5]);
        assert!(element_lines(text, "missing").is_empty());
        assert_eq!(element_lines("{\"r\":[{},{}]}", "r"), [1, 1]);
    }

    #[test]
    fn pointers_from_steps() {
        assert_eq!(
            pointer_from_steps(&[json!("tags"), json!("a/b"), json!(0)]),
            "/tags/a~1b/0"
        );
        assert!(within("/tags", "/tags/Name"));
        assert!(!within("/tag", "/tags"));
        assert!(overlaps("/tags/Name", "/tags"));
    }
}
