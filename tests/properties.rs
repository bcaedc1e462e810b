//! Laws checked on generated input (proptest): the diff of an object against itself finds no
//! drift; masking is idempotent and leaves no secret value behind.

#[path = "support/common.rs"]
mod common;

use driftwarden::diff::mask::{mask_object, mask_secret};
use driftwarden::diff::{DiffOptions, diff_object};
use driftwarden::model::ResourceId;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const CANARY: &str = "CANARY-9f3b1c";

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,12}[a-z0-9]"
}

/// A scalar or small nested value as the API server stores them.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        "[ -~]{0,20}".prop_map(Value::String),
    ]
}

fn nested() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(name(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A server-shaped object of one of a few kinds, with labels, data or a spec.
fn object() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just(("v1", "ConfigMap")),
            Just(("apps/v1", "Deployment")),
            Just(("example.com/v1", "Widget"))
        ],
        name(),
        name(),
        prop::collection::btree_map(name(), "[a-z0-9]{1,8}", 0..4),
        prop::collection::btree_map(name(), nested(), 0..5),
    )
        .prop_map(|((api, kind), n, ns, labels, body)| {
            let mut o = json!({
                "apiVersion": api,
                "kind": kind,
                "metadata": {"name": n, "namespace": ns, "labels": labels},
            });
            let field = if kind == "ConfigMap" { "data" } else { "spec" };
            let body: Map<String, Value> = if kind == "ConfigMap" {
                body.into_iter()
                    .map(|(k, v)| (k, Value::String(v.to_string())))
                    .collect()
            } else {
                body.into_iter().collect()
            };
            o[field] = Value::Object(body);
            o
        })
}

fn id_of(obj: &Value) -> ResourceId {
    let api = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = match api.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api.to_string()),
    };
    ResourceId::Kubernetes {
        cluster: "test".into(),
        group,
        version,
        kind: obj["kind"].as_str().unwrap_or_default().to_string(),
        namespace: obj["metadata"]["namespace"].as_str().map(str::to_string),
        name: obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    }
}

/// A Secret whose data, stringData and last-applied annotation all hold the canary.
fn secret() -> impl Strategy<Value = Value> {
    (
        name(),
        prop::collection::btree_map(name(), "[a-zA-Z0-9]{0,10}", 1..5),
    )
        .prop_map(|(n, data)| {
            let data: Map<String, Value> = data
                .into_iter()
                .map(|(k, v)| (k, Value::String(format!("{v}{CANARY}"))))
                .collect();
            let applied = json!({"kind": "Secret", "stringData": data}).to_string();
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": n,
                    "namespace": "shop",
                    "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
                },
                "data": data,
                "stringData": data,
            })
        })
}

/// The Secret as the server stores it: `stringData` folded into `data`, base64-encoded.
fn stored(mut obj: Value) -> Value {
    use base64::Engine as _;
    let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|m| m.remove("stringData"))
    else {
        return obj;
    };
    let data: Map<String, Value> = plain
        .into_iter()
        .map(|(k, v)| {
            let raw = v.as_str().unwrap_or_default().as_bytes().to_vec();
            (
                k,
                Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
            )
        })
        .collect();
    obj["data"] = Value::Object(data);
    obj
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn an_object_against_itself_has_no_drift(obj in object()) {
        let diff = diff_object(&id_of(&obj), &obj, &obj, &DiffOptions::new("props"));
        prop_assert!(diff.changes.is_empty(), "{:#?}", diff.changes);
    }

    #[test]
    fn a_secret_against_itself_has_no_drift(obj in secret().prop_map(stored)) {
        let diff = diff_object(&id_of(&obj), &obj, &obj, &DiffOptions::new("props"));
        prop_assert!(diff.changes.is_empty(), "{:#?}", diff.changes);
    }

    #[test]
    fn masking_is_idempotent_and_leaves_no_canary(obj in secret()) {
        let once = mask_object(&obj);
        prop_assert_eq!(&mask_object(&once), &once);
        prop_assert_eq!(&mask_secret(&once), &once);
        prop_assert!(!once.to_string().contains(CANARY), "{once}");
        // A Secret with changed values diffs without printing them.
        let mut live = obj.clone();
        live["data"] = json!({"extra": CANARY});
        let diff = diff_object(&id_of(&obj), &obj, &live, &DiffOptions::new("props"));
        let text = serde_json::to_string(&diff.changes).unwrap();
        prop_assert!(!text.contains(CANARY), "{text}");
    }

    #[test]
    fn masking_leaves_other_objects_alone(obj in object()) {
        prop_assert_eq!(mask_object(&obj), obj);
    }
}

mod report_laws {
    use crate::common;
    use std::collections::BTreeMap;

    use driftwarden::model::{DriftKind, Report};
    use driftwarden::report::merge::merge;
    use proptest::prelude::*;
    use serde_json::json;

    /// A shard's report: drifts of targets named after the shard, so shards never overlap.
    fn shard(i: usize) -> impl Strategy<Value = Report> {
        (
            prop::collection::vec(
                ("[a-z]{1,6}", "[a-z]{1,6}", "[ -~]{0,8}", "[ -~]{0,8}"),
                0..4,
            ),
            0usize..50,
        )
            .prop_map(move |(items, extra)| {
                let mut seen = std::collections::BTreeSet::new();
                let drifts: Vec<_> = items
                    .into_iter()
                    .filter(|(ns, n, _, _)| seen.insert((ns.clone(), n.clone())))
                    .map(|(ns, n, d, l)| {
                        common::target_drift(
                            &format!("shard{i}"),
                            common::k8s_id("", "ConfigMap", Some(&ns), &n),
                            DriftKind::Modified,
                            vec![common::change("/data/k", json!(d), json!(l))],
                        )
                    })
                    .collect();
                let checked = drifts.len() + extra;
                Report::new("diff", 1, checked, BTreeMap::new(), drifts, Vec::new())
            })
    }

    fn m(parts: &[&Report]) -> Report {
        merge(
            parts
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("r{i}"), (*r).clone()))
                .collect(),
        )
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn a_report_survives_a_json_round_trip(r in shard(0)) {
            let text = serde_json::to_string(&r).unwrap();
            let back: Report = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back, r);
        }

        #[test]
        fn merge_is_associative_and_order_independent(a in shard(0), b in shard(1), c in shard(2)) {
            let all = m(&[&a, &b, &c]);
            prop_assert_eq!(&m(&[&m(&[&a, &b]), &c]), &all);
            prop_assert_eq!(&m(&[&a, &m(&[&b, &c])]), &all);
            prop_assert_eq!(&m(&[&c, &a, &b]), &all);
            prop_assert_eq!(&m(&[&b, &c, &a]), &all);
        }
    }
}
