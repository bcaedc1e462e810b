//! Terraform state (`terraform::state::parse`, `terraform state pull`), any bytes.
//!
//! Laws: it never panics; a refusal names the file; an attribute listed in
//! `sensitive_attributes` is masked in every instance's attributes and in the state's Debug
//! output (what logs and reports could show); addresses are unique to an instance line.
#![no_main]

use driftwarden::model::MASK;
use driftwarden::terraform::state;
use driftwarden_fuzz::{all_strings, assert_no_canary, canaries};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const FILE: &str = "terraform.tfstate";

/// The value at a cty path (`[{"type":"get_attr","value":"password"}, ...]`), followed as far
/// as it goes: an unknown step hides everything below where it stops.
fn at_path<'a>(attrs: &'a Value, path: &Value) -> Option<&'a Value> {
    let Value::Array(steps) = path else {
        return Some(attrs);
    };
    let mut cur = attrs;
    for step in steps {
        let seg = match (step.get("type").and_then(Value::as_str), step.get("value")) {
            (Some("get_attr"), Some(Value::String(name))) => name.clone(),
            (Some("index"), Some(Value::Object(k))) => match k.get("value") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => return Some(cur),
            },
            _ => return Some(cur),
        };
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The strings under every sensitive path of every managed instance.
fn secrets(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(Value::Array(resources)) = doc.get("resources") else {
        return out;
    };
    for r in resources {
        let Some(Value::Array(insts)) = r.get("instances") else {
            continue;
        };
        for inst in insts {
            let (Some(attrs), Some(sens)) =
                (inst.get("attributes"), inst.get("sensitive_attributes"))
            else {
                continue;
            };
            match sens {
                Value::Array(paths) => {
                    for p in paths {
                        if let Some(v) = at_path(attrs, p) {
                            all_strings(v, &mut out);
                        }
                    }
                }
                Value::Null => {}
                _ => all_strings(attrs, &mut out),
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    match state::parse(data, FILE) {
        Ok(s) => {
            let text = String::from_utf8_lossy(data);
            let doc: Value = serde_json::from_slice(data).expect("a parsed state is JSON");
            let canaries = canaries(secrets(&doc), &text);
            assert_no_canary("the parsed state", &format!("{s:?}"), &canaries);
            for inst in &s.instances {
                assert_no_canary("attributes()", &inst.attributes().to_string(), &canaries);
                for p in &inst.sensitive {
                    assert!(
                        inst.is_sensitive(p),
                        "{p} is listed sensitive but not reported so"
                    );
                    if let Some(v) = inst.attributes().pointer(p) {
                        let mut leaves = Vec::new();
                        all_strings(v, &mut leaves);
                        assert!(
                            v.is_null() || leaves.iter().all(|l| l == MASK),
                            "{}: sensitive {p} is shown as {v}",
                            inst.address
                        );
                    }
                }
            }
        }
        Err(e) => assert!(
            e.to_string().contains(FILE),
            "the error does not name the file: {e}"
        ),
    }
});
