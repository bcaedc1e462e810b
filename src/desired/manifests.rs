//! Manifest files into objects: multi-document YAML, JSON, `kind: List` (and the API's typed
//! lists such as `ConfigMapList`), each object with the line where its document starts.
//! Pure: the callers read the bytes.

use serde_json::Value;

use crate::yaml::{self, Node, NodeKind};

/// One object from a manifest file, with where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObject {
    pub value: Value,
    /// Path as shown to people (relative to the source root).
    pub file: String,
    /// 1-based line where the object starts.
    pub line: usize,
}

/// A manifest that cannot be used, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ManifestError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// True for the file names manifests are read from.
pub fn is_manifest_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")
}

/// Parses one manifest file. Every object must have `apiVersion`, `kind` and `metadata.name`.
/// `live` relaxes list handling for API list responses, whose items carry no `kind`.
pub fn parse_file(file: &str, bytes: &[u8], live: bool) -> Result<Vec<RawObject>, ManifestError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ManifestError {
        file: file.to_string(),
        line: line_of_offset(bytes, e.valid_up_to()),
        message: "not valid UTF-8".to_string(),
    })?;
    // JSON files must be valid JSON (YAML would accept more); their positions then come from
    // the positioned YAML reading, which JSON is a subset of.
    if file.ends_with(".json") {
        if let Err(je) = serde_json::from_str::<Value>(text) {
            return Err(ManifestError {
                file: file.to_string(),
                line: je.line(),
                message: format!("not valid JSON: {je}"),
            });
        }
    }
    let docs = yaml::parse_documents(text).map_err(|e| ManifestError {
        file: file.to_string(),
        line: e.line,
        message: format!("not valid YAML: {}", e.message),
    })?;
    let mut out = Vec::new();
    for doc in docs {
        collect(file, &doc.root, live, None, &mut out)?;
    }
    Ok(out)
}

fn collect(
    file: &str,
    node: &Node,
    live: bool,
    list_item_kind: Option<(&str, &str)>,
    out: &mut Vec<RawObject>,
) -> Result<(), ManifestError> {
    let err = |n: &Node, message: String| ManifestError {
        file: file.to_string(),
        line: n.line,
        message,
    };
    if !matches!(node.kind, NodeKind::Map(_)) {
        return Err(err(
            node,
            format!(
                "expected a Kubernetes object (a mapping), found {}",
                node.type_name()
            ),
        ));
    }
    let mut value = node.to_json();
    if let Some((api, kind)) = list_item_kind {
        if let Some(obj) = value.as_object_mut() {
            obj.entry("apiVersion")
                .or_insert_with(|| Value::String(api.to_string()));
            obj.entry("kind")
                .or_insert_with(|| Value::String(kind.to_string()));
        }
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if kind.is_empty() {
        return Err(err(node, "the object has no `kind`".to_string()));
    }
    if api.is_empty() {
        return Err(err(node, format!("the {kind} has no `apiVersion`")));
    }
    if kind == "List" || (kind.ends_with("List") && node.get("items").is_some()) {
        let items_kind = if kind == "List" {
            None
        } else {
            Some((api.to_string(), kind.trim_end_matches("List").to_string()))
        };
        match node.get("items") {
            None => {}
            Some(items) => match &items.kind {
                NodeKind::Seq(list) => {
                    for item in list {
                        let ik = items_kind.as_ref().map(|(a, k)| (a.as_str(), k.as_str()));
                        collect(file, item, live, ik, out)?;
                    }
                }
                NodeKind::Scalar(Value::Null) => {}
                _ => return Err(err(items, format!("the {kind}'s `items` is not a list"))),
            },
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        let has_generate = value.pointer("/metadata/generateName").is_some();
        let message = if has_generate && !live {
            format!(
                "the {kind} uses `metadata.generateName`: driftwarden needs a fixed `metadata.name` to find it live"
            )
        } else {
            format!("the {kind} has no `metadata.name`")
        };
        return Err(err(node, message));
    }
    out.push(RawObject {
        value,
        file: file.to_string(),
        line: node.line,
    });
    Ok(())
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_doc_and_lists() {
        let text = "# app\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: Secret\n    metadata:\n      name: s\n  - apiVersion: v1\n    kind: Service\n    metadata: {name: svc}\n";
        let objs = parse_file("x.yaml", text.as_bytes(), false).unwrap();
        let got: Vec<(String, usize)> = objs
            .iter()
            .map(|o| (o.value["kind"].as_str().unwrap().to_string(), o.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("ConfigMap".into(), 2),
                ("Secret".into(), 9),
                ("Service".into(), 13)
            ]
        );
    }

    #[test]
    fn typed_api_list_items_get_kind() {
        let text = r#"{"apiVersion": "v1", "kind": "ConfigMapList", "items": [{"metadata": {"name": "a", "namespace": "x"}}]}"#;
        let objs = parse_file("l.json", text.as_bytes(), true).unwrap();
        assert_eq!(objs[0].value["kind"], "ConfigMap");
        assert_eq!(objs[0].value["apiVersion"], "v1");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse_file("a.yaml", b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nmetadata: {name: x}\n", false).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("a.yaml", 5));
        assert!(e.message.contains("no `kind`"));
        let e = parse_file(
            "b.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  labels: {}\n",
            false,
        )
        .unwrap_err();
        assert!(e.message.contains("no `metadata.name`"), "{e}");
        let e = parse_file("c.yaml", b"kind: A\n  bad: : x\n", false).unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:"), "{e}");
        let e = parse_file("d.json", b"{\"kind\": \"A\",\n \"x\": }", false).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
