//! Secret masking: no Secret value leaves the diff.
//!
//! ARCHITECTURE.md, promise 1: Kubernetes Secret data is masked in every output. The diff is where
//! values are first copied into reportable structures ([`FieldChange`] and a drift's
//! `desired_object`/`live_object`), so masking happens here, before anything downstream can log
//! or render them. What is masked for a core `v1` Secret: every value under `data` and
//! `stringData` (plaintext and base64 alike), and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, which embeds the whole Secret.
//! Keys stay visible: a reader needs to know *which* entry drifted.

use serde_json::{Map, Value};

use crate::model::{FieldChange, MASK, ResourceId};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Whether the id names a core Secret.
pub fn is_secret(id: &ResourceId) -> bool {
    matches!(id, ResourceId::Kubernetes { group, kind, .. } if group.is_empty() && kind == "Secret")
}

/// Whether a Kubernetes object is a core Secret (`apiVersion: v1`, `kind: Secret`).
pub fn is_secret_object(obj: &Value) -> bool {
    obj.get("kind").and_then(Value::as_str) == Some("Secret")
        && obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
}

fn mask_values(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let masked = if v.is_null() {
                        Value::Null
                    } else {
                        Value::String(MASK.to_string())
                    };
                    (k.clone(), masked)
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Null => Value::Null,
        _ => Value::String(MASK.to_string()),
    }
}

fn mask_leaf(v: &Value) -> Value {
    if v.is_null() {
        Value::Null
    } else {
        Value::String(MASK.to_string())
    }
}

/// A copy of `obj` with Secret values replaced by [`MASK`]. Objects that are not Secrets are
/// returned unchanged.
pub fn mask_object(obj: &Value) -> Value {
    if is_secret_object(obj) {
        mask_secret(obj)
    } else {
        obj.clone()
    }
}

/// Masks `data`, `stringData` and the last-applied annotation of a value known to be a Secret,
/// whatever its `apiVersion`/`kind` fields say.
pub fn mask_secret(obj: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(map) = out.as_object_mut() {
        for field in ["data", "stringData"] {
            if let Some(v) = map.get_mut(field) {
                *v = mask_values(v);
            }
        }
    }
    mask_at(&out, &["metadata", "annotations", LAST_APPLIED])
}

/// Whether a path (live segments) of a Secret holds secret material.
pub fn is_secret_path(path: &[String]) -> bool {
    match path {
        [first, ..] if first == "data" || first == "stringData" => true,
        [m, a, key, ..] => m == "metadata" && a == "annotations" && key == LAST_APPLIED,
        [m, a] => m == "metadata" && a == "annotations",
        [m] => m == "metadata",
        [] => true,
    }
}

/// Masks a change of a Secret object in place when its path holds secret material.
/// `path` is the change's path as segments.
pub fn mask_change(change: &mut FieldChange, path: &[String]) {
    if !is_secret_path(path) {
        return;
    }
    let mask = |v: &Value| match path {
        // The whole Secret, or a container of secret fields: keep keys, hide values.
        [] => mask_secret(v),
        [_] if path[0] == "metadata" => mask_at(v, &["annotations", LAST_APPLIED]),
        [_, _] if path[0] == "metadata" => mask_at(v, &[LAST_APPLIED]),
        [_] => mask_values(v),
        _ => mask_leaf(v),
    };
    change.desired = mask(&change.desired);
    change.live = mask(&change.live);
    change.masked = true;
}

/// A copy of `v` with the value at the map path `at` masked, if present.
fn mask_at(v: &Value, at: &[&str]) -> Value {
    let mut out = v.clone();
    let mut cur = Some(&mut out);
    for (i, seg) in at.iter().enumerate() {
        let Some(map) = cur.and_then(Value::as_object_mut) else {
            break;
        };
        if i + 1 == at.len() {
            if let Some(leaf) = map.get_mut(*seg) {
                *leaf = mask_leaf(leaf);
            }
            break;
        }
        cur = map.get_mut(*seg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeOp;
    use serde_json::json;

    fn secret() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "s",
                "annotations": {LAST_APPLIED: "{\"stringData\":{\"PW\":\"hunter2\"}}", "team": "a"}
            },
            "data": {"API_KEY": "ZXhhbXBsZS1hcGkta2V5LTAwMDE="},
            "stringData": {"PW": "hunter2"},
            "type": "Opaque"
        })
    }

    fn change(path: &str, desired: Value, live: Value) -> FieldChange {
        FieldChange {
            path: path.into(),
            op: ChangeOp::Changed,
            desired,
            live,
            masked: false,
            attribution: None,
            class: None,
        }
    }

    fn segs(p: &str) -> Vec<String> {
        super::super::ignore::parse_pointer(p).unwrap()
    }

    #[test]
    fn masks_secret_objects() {
        let m = mask_object(&secret());
        let text = m.to_string();
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("ZXhhbXBsZS1hcGkta2V5LTAwMDE="));
        assert_eq!(m["data"]["API_KEY"], json!(MASK));
        assert_eq!(m["stringData"]["PW"], json!(MASK));
        assert_eq!(m["metadata"]["annotations"][LAST_APPLIED], json!(MASK));
        assert_eq!(m["metadata"]["annotations"]["team"], json!("a"));
        assert_eq!(m["type"], json!("Opaque"));
    }

    #[test]
    fn leaves_other_objects_alone() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"}});
        assert_eq!(mask_object(&cm), cm);
        // A custom resource named Secret in another group is not a core Secret.
        let cr = json!({"apiVersion": "x.io/v1", "kind": "Secret", "data": {"a": "b"}});
        assert_eq!(mask_object(&cr), cr);
        assert!(is_secret(&ResourceId::Kubernetes {
            cluster: "c".into(),
            group: "".into(),
            version: "v1".into(),
            kind: "Secret".into(),
            namespace: Some("n".into()),
            name: "s".into(),
        }));
    }

    #[test]
    fn masks_changes() {
        let mut c = change(
            "/data/API_KEY",
            json!("ZXhhbXBsZS1hcGkta2V5LTAwMDE="),
            json!("ZXhhbXBsZS1hcGkta2V5LTAwMDI="),
        );
        mask_change(&mut c, &segs("/data/API_KEY"));
        assert_eq!(
            (c.desired.clone(), c.live.clone(), c.masked),
            (json!(MASK), json!(MASK), true)
        );

        let mut whole = change("/data", json!({"A": "eA==", "B": null}), json!(null));
        mask_change(&mut whole, &segs("/data"));
        assert_eq!(whole.desired, json!({"A": MASK, "B": null}));
        assert_eq!(whole.live, json!(null));

        let mut ann = change(
            "/metadata/annotations",
            json!(null),
            json!({LAST_APPLIED: "{\"data\":{\"A\":\"eA==\"}}", "x": "y"}),
        );
        mask_change(&mut ann, &segs("/metadata/annotations"));
        assert_eq!(ann.live, json!({LAST_APPLIED: MASK, "x": "y"}));

        let mut label = change("/metadata/labels/app", json!("a"), json!("b"));
        mask_change(&mut label, &segs("/metadata/labels/app"));
        assert_eq!((label.desired, label.masked), (json!("a"), false));
    }
}
