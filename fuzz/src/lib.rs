//! Helpers shared by the fuzz targets: splitting an input into a header and a body, and walking
//! JSON data. Inputs with a header are plain text, so seeds can be written and read by hand.

use serde_json::Value;

/// Splits `data` at its first newline: the header line (without the newline) and the rest.
/// `None` when there is no newline or the header is not UTF-8.
pub fn header_line(data: &[u8]) -> Option<(&str, &[u8])> {
    let nl = data.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(&data[..nl]).ok()?;
    Some((head, &data[nl + 1..]))
}

/// Every path (as JSON pointer segments) in `v`, parents before children, in document order.
pub fn paths(v: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    at.push(k.clone());
                    walk(child, at, out);
                    at.pop();
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    at.push(i.to_string());
                    walk(child, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// An RFC 6901 pointer of segments.
pub fn pointer(segs: &[String]) -> String {
    segs.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The value at a path, when every segment exists.
pub fn get<'a>(v: &'a Value, segs: &[String]) -> Option<&'a Value> {
    segs.iter().try_fold(v, |cur, s| match cur {
        Value::Object(m) => m.get(s),
        Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// The parent container of a path, mutable, when every segment but the last exists.
pub fn parent_mut<'a>(v: &'a mut Value, segs: &[String]) -> Option<&'a mut Value> {
    let (_, parents) = segs.split_last()?;
    parents.iter().try_fold(v, |cur, s| match cur {
        Value::Object(m) => m.get_mut(s),
        Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
        _ => None,
    })
}

/// Number of lines of a text as YAML counts them (`\r\n`, `\r` and `\n` end a line; a last
/// line without an end counts), at least 1.
pub fn line_count(text: &str) -> usize {
    text.replace("\r\n", "\n")
        .split(['\r', '\n'])
        .count()
        .max(1)
}

/// The strings of `value` that `marks` flags (Terraform's `before_sensitive` shape: `true` for
/// the whole value, or objects/arrays of marks mirroring it).
pub fn marked_strings(value: &Value, marks: &Value, out: &mut Vec<String>) {
    match (marks, value) {
        (Value::Bool(true), v) => all_strings(v, out),
        (Value::Object(ms), Value::Object(vs)) => {
            for (k, m) in ms {
                if let Some(v) = vs.get(k) {
                    marked_strings(v, m, out);
                }
            }
        }
        (Value::Array(ms), Value::Array(vs)) => {
            for (m, v) in ms.iter().zip(vs) {
                marked_strings(v, m, out);
            }
        }
        // Marks of another shape than the value: the whole value is hidden.
        (Value::Object(_) | Value::Array(_), v) if has_mark(marks) => all_strings(v, out),
        _ => {}
    }
}

fn has_mark(marks: &Value) -> bool {
    match marks {
        Value::Bool(b) => *b,
        Value::Object(m) => m.values().any(has_mark),
        Value::Array(a) => a.iter().any(has_mark),
        _ => false,
    }
}

/// Every string leaf of a value.
pub fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| all_strings(x, out)),
        _ => {}
    }
}

/// The secrets worth looking for in an output: long enough not to occur by chance, plain
/// letters and digits (so every rendering spells them the same), and written exactly once in
/// the input `text` (a value that is also written unmarked elsewhere may be shown from there).
pub fn canaries(secrets: Vec<String>, text: &str) -> Vec<String> {
    let mut out: Vec<String> = secrets
        .into_iter()
        .filter(|s| {
            s.len() >= 8
                && s.chars().all(|c| c.is_ascii_alphanumeric())
                && text.matches(s.as_str()).count() == 1
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Panics when `output` shows one of the canaries.
pub fn assert_no_canary(what: &str, output: &str, canaries: &[String]) {
    for c in canaries {
        assert!(
            !output.contains(c.as_str()),
            "{what} shows the sensitive value {c:?}"
        );
    }
}
