//! Adoption edits to Terraform configuration (`act::edit_hcl`: `set_attribute`,
//! `remove_attribute`), spliced into any `.tf` text.
//!
//! The input is a header line, a JSON value line, then the file:
//!
//! ```text
//! s 0 #3          set, in the 1st `resource "T" "N"` block, the 3rd path of its data
//! s 0 #2+newkey   set the key `newkey` under the 2nd path
//! r 1 /tags/Name  remove, in the 2nd resource block, this pointer
//! "the value"     the value to set (JSON)
//! resource "aws_instance" "web" {
//! ...
//! ```
//!
//! The data of a file, read here independently of the editor: every top-level block with its
//! labels, and in a body, each literal attribute as JSON, each other expression as its text, and
//! nested blocks as lists under their name (Terraform's own addressing: `/ebs_block_device/0/x`).
//!
//! Law: an edit must re-parse to exactly the intended data, or be refused. Intended: every other
//! block and attribute unchanged, the resource's data with the value set at the path (a new key
//! when only the last segment is missing), or without it.
#![no_main]

use driftwarden::act::edit_hcl;
use driftwarden_fuzz::{get, header_line, parent_mut, paths, pointer};
use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{BlockLabel, Body, Structure};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fn key(k: &ObjectKey) -> String {
    match k {
        ObjectKey::Ident(id) => id.as_str().to_string(),
        ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
        ObjectKey::Expression(e) => format!("({e})"),
    }
}

/// A literal as JSON; anything else as `{"$expr": its text}`.
fn expr_data(e: &Expression) -> Value {
    let literal = match e {
        Expression::Null(_) => Some(Value::Null),
        Expression::Bool(b) => Some(Value::Bool(*b.value())),
        Expression::Number(n) => {
            let n = n.value();
            n.as_i64().map(Value::from).or_else(|| {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            })
        }
        Expression::String(s) => Some(Value::String(s.value().clone())),
        Expression::Array(a) => Some(Value::Array(a.iter().map(expr_data).collect())),
        Expression::Object(o) => Some(Value::Object(
            o.iter()
                .map(|(k, v)| (key(k), expr_data(v.expr())))
                .collect(),
        )),
        _ => None,
    };
    literal.unwrap_or_else(|| json!({ "$expr": e.to_string().trim() }))
}

fn body_data(body: &Body) -> Value {
    let mut out = Map::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                out.insert(a.key.as_str().to_string(), expr_data(&a.value));
            }
            Structure::Block(b) => {
                let entry = out
                    .entry(b.ident.as_str().to_string())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(list) = entry {
                    list.push(body_data(&b.body));
                }
            }
        }
    }
    Value::Object(out)
}

fn label(l: &BlockLabel) -> String {
    match l {
        BlockLabel::Ident(i) => i.as_str().to_string(),
        BlockLabel::String(s) => s.value().clone(),
    }
}

/// The file's top-level structures as data, and the positions (in that list) of the
/// `resource "T" "N"` blocks.
fn file_data(body: &Body) -> (Vec<Value>, Vec<(usize, String)>) {
    let mut items = Vec::new();
    let mut resources = Vec::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => items.push(json!([a.key.as_str(), expr_data(&a.value)])),
            Structure::Block(b) => {
                let labels: Vec<String> = b.labels.iter().map(label).collect();
                if b.ident.as_str() == "resource" && labels.len() == 2 {
                    resources.push((items.len(), format!("{}.{}", labels[0], labels[1])));
                }
                items.push(json!([b.ident.as_str(), labels, body_data(&b.body)]));
            }
        }
    }
    (items, resources)
}

fn path_of(spec: &str, data: &Value) -> Option<Vec<String>> {
    if let Some(rest) = spec.strip_prefix('#') {
        let (n, extra) = match rest.split_once('+') {
            Some((n, k)) => (n, Some(k)),
            None => (rest, None),
        };
        let all: Vec<Vec<String>> = paths(data).into_iter().filter(|p| !p.is_empty()).collect();
        if all.is_empty() {
            return extra.map(|k| vec![k.to_string()]);
        }
        let mut p = all.get(n.parse::<usize>().ok()? % all.len())?.clone();
        if let Some(k) = extra {
            p.push(k.to_string());
        }
        Some(p)
    } else {
        driftwarden::diff::ignore::parse_pointer(spec)
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
    let mut words = header.splitn(3, ' ');
    let (Some(op), Some(n)) = (
        words.next(),
        words.next().and_then(|i| i.parse::<usize>().ok()),
    ) else {
        // Any header: the address parser and `declares` on any text.
        let _ = edit_hcl::parse_address(header);
        let _ = edit_hcl::declares(text, header);
        return;
    };
    let spec = words.next().unwrap_or("");
    let Ok(body) = hcl_edit::parser::parse_body(text) else {
        return;
    };
    let (items, resources) = file_data(&body);
    let Some((at, address)) = resources.get(n) else {
        return;
    };
    let Some(resource) = items[*at].get(2) else {
        return;
    };
    // The editor edits the first block of an address; so does the law.
    if resources.iter().position(|(_, a)| a == address) != Some(n) {
        return;
    }
    let Some(segs) = path_of(spec, resource) else {
        return;
    };
    let reread = |out: &str| -> Vec<Value> {
        let body = hcl_edit::parser::parse_body(out)
            .unwrap_or_else(|e| panic!("an accepted edit is not valid HCL ({e}):\n{out}"));
        file_data(&body).0
    };
    match op {
        "s" => {
            let Ok(value) = serde_json::from_str::<Value>(value_line) else {
                return;
            };
            let Ok(out) = edit_hcl::set_attribute(text, address, &segs, &value) else {
                return;
            };
            let got = reread(&out);
            assert_eq!(
                got.len(),
                items.len(),
                "the edit changed the file's blocks:\n{out}"
            );
            for (i, (g, o)) in got.iter().zip(&items).enumerate() {
                if i != *at {
                    assert_eq!(g, o, "the edit changed another block:\n{out}");
                }
            }
            let mut want = resource.clone();
            let exact = match parent_mut(&mut want, &segs) {
                Some(Value::Object(m)) => {
                    m.insert(segs[segs.len() - 1].clone(), value.clone());
                    true
                }
                Some(Value::Array(a)) => match segs[segs.len() - 1].parse::<usize>() {
                    Ok(i) if i < a.len() => {
                        a[i] = value.clone();
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            // A pointer given in the header may name a nested block without its list index
            // (`/root_block_device/volume_size`), which this data has no place for: there only
            // the other blocks are compared.
            if exact {
                assert_eq!(&got[*at][2], &want, "set {}:\n{out}", pointer(&segs));
                assert_eq!(get(&got[*at][2], &segs), Some(&value));
            }
        }
        "r" => {
            let Ok(out) = edit_hcl::remove_attribute(text, address, &segs) else {
                return;
            };
            let got = reread(&out);
            let mut want_file = items.clone();
            let mut want = resource.clone();
            let removed = match parent_mut(&mut want, &segs) {
                Some(Value::Object(m)) => m.shift_remove(&segs[segs.len() - 1]).is_some(),
                Some(Value::Array(a)) => match segs[segs.len() - 1].parse::<usize>() {
                    Ok(i) if i < a.len() => {
                        a.remove(i);
                        true
                    }
                    _ => false,
                },
                _ => false,
            };
            if removed {
                want_file[*at][2] = want;
                assert_eq!(got, want_file, "remove {}:\n{out}", pointer(&segs));
            } else {
                assert_eq!(
                    got.len(),
                    items.len(),
                    "the edit changed the file's blocks:\n{out}"
                );
                for (i, (g, o)) in got.iter().zip(&items).enumerate() {
                    if i != *at {
                        assert_eq!(g, o, "the edit changed another block:\n{out}");
                    }
                }
            }
        }
        _ => {}
    }
});
