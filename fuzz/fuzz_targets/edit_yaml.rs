//! Adoption edits to YAML manifests (`act::edit_yaml`: `set_value`, `remove_value`,
//! `remove_document`), spliced into the text of any manifest file.
//!
//! The input is a header line, a JSON value line, then the YAML file:
//!
//! ```text
//! s 0 #3          set, document 0, the 3rd path of the document (in document order)
//! s 1 #2+newkey   set, document 1, the key `newkey` under the 2nd path
//! s 0 /spec/x     set, document 0, this pointer
//! r 0 #4          remove, document 0, the 4th path
//! d 1             remove document 1
//! "the value"     the value to set (JSON)
//! apiVersion: v1  the file
//! ...
//! ```
//!
//! Law: an edit must re-read (with the loader every other reader uses) to exactly the intended
//! data, or be refused. Intended: the same documents, the edited one with the value set at the
//! path (the key added when only the last segment is missing, appended when it is the next list
//! index), removed from it, or the document gone.
#![no_main]

use driftwarden::act::edit_yaml::{self, DocRef};
use driftwarden::yaml;
use driftwarden_fuzz::{get, header_line, parent_mut, paths, pointer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The path a header names in `doc`: `#N` (with an optional `+key` below it) or a pointer.
fn path_of(spec: &str, doc: &Value) -> Option<Vec<String>> {
    if let Some(rest) = spec.strip_prefix('#') {
        let (n, extra) = match rest.split_once('+') {
            Some((n, k)) => (n, Some(k)),
            None => (rest, None),
        };
        let all = paths(doc);
        let mut p = all.get(n.parse::<usize>().ok()? % all.len())?.clone();
        if let Some(k) = extra {
            p.push(k.to_string());
        }
        Some(p)
    } else {
        driftwarden::diff::ignore::parse_pointer(spec)
    }
}

/// The document after setting `value` at `segs`, when that is well defined: the path exists, or
/// only its last segment is missing (a new key of a mapping, the next item of a list).
fn set_expected(doc: &Value, segs: &[String], value: &Value) -> Option<Value> {
    let mut out = doc.clone();
    if segs.is_empty() {
        return Some(value.clone());
    }
    let last = segs.last()?;
    match parent_mut(&mut out, segs)? {
        Value::Object(m) => {
            m.insert(last.clone(), value.clone());
        }
        Value::Array(a) => {
            let i = last.parse::<usize>().ok()?;
            if i < a.len() {
                a[i] = value.clone();
            } else if i == a.len() {
                a.push(value.clone());
            } else {
                return None;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// The document after removing `segs`, when it exists.
fn remove_expected(doc: &Value, segs: &[String]) -> Option<Value> {
    get(doc, segs)?;
    let mut out = doc.clone();
    let last = segs.last()?;
    match parent_mut(&mut out, segs)? {
        Value::Object(m) => {
            m.shift_remove(last)?;
        }
        Value::Array(a) => {
            a.remove(last.parse::<usize>().ok()?);
        }
        _ => return None,
    }
    Some(out)
}

fn reread(text: &str) -> Vec<Value> {
    match yaml::parse_documents(text) {
        Ok(docs) => docs.into_iter().map(|d| d.value).collect(),
        Err(e) => panic!("an accepted edit is not valid YAML ({e}):\n{text}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = header_line(data) else {
        return;
    };
    let Some((value_line, file)) = header_line(rest) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let Ok(docs) = yaml::parse_documents(text) else {
        return;
    };
    let originals: Vec<Value> = docs.into_iter().map(|d| d.value).collect();
    let mut words = header.splitn(3, ' ');
    let (Some(op), Some(index)) = (
        words.next(),
        words.next().and_then(|i| i.parse::<usize>().ok()),
    ) else {
        return;
    };
    let spec = words.next().unwrap_or("");
    let Some(original) = originals.get(index) else {
        return;
    };
    match op {
        "s" => {
            let Ok(value) = serde_json::from_str::<Value>(value_line) else {
                return;
            };
            let Some(segs) = path_of(spec, original) else {
                return;
            };
            let Ok(out) = edit_yaml::set_value(text, index, &pointer(&segs), &value) else {
                return;
            };
            let got = reread(&out);
            assert_eq!(
                got.len(),
                originals.len(),
                "the edit changed the documents:\n{out}"
            );
            for (i, (g, o)) in got.iter().zip(&originals).enumerate() {
                if i != index {
                    assert_eq!(g, o, "the edit changed document {i}:\n{out}");
                }
            }
            match set_expected(original, &segs, &value) {
                Some(want) => assert_eq!(got[index], want, "set {}:\n{out}", pointer(&segs)),
                None => assert_eq!(
                    get(&got[index], &segs),
                    Some(&value),
                    "set {}:\n{out}",
                    pointer(&segs)
                ),
            }
        }
        "r" => {
            let Some(segs) = path_of(spec, original).filter(|s| !s.is_empty()) else {
                return;
            };
            let Ok(out) = edit_yaml::remove_value(text, index, &pointer(&segs)) else {
                return;
            };
            let got = reread(&out);
            let mut want = originals.clone();
            match remove_expected(original, &segs) {
                Some(w) => want[index] = w,
                None => panic!(
                    "removed {}, which the document does not hold:\n{out}",
                    pointer(&segs)
                ),
            }
            assert_eq!(got, want, "remove {}:\n{out}", pointer(&segs));
        }
        "d" => {
            let kind = original.get("kind").and_then(Value::as_str).unwrap_or("");
            let name = original
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let namespace = original
                .pointer("/metadata/namespace")
                .and_then(Value::as_str);
            let doc = DocRef {
                kind,
                name,
                namespace,
                line: None,
            };
            match edit_yaml::remove_document(text, &doc) {
                Ok(None) => assert_eq!(originals.len(), 1, "a file of several documents would go"),
                Ok(Some(out)) => {
                    let got = reread(&out);
                    let removed_one = (0..originals.len()).any(|i| {
                        let mut want = originals.clone();
                        want.remove(i);
                        let v = &originals[i];
                        v.get("kind").and_then(Value::as_str) == Some(kind)
                            && v.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                            && got == want
                    });
                    assert!(
                        removed_one,
                        "the edit is not the file less one {kind} {name}:\n{out}"
                    );
                }
                Err(_) => {}
            }
        }
        _ => {}
    }
});
