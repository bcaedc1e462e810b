//! Laws checked on generated input (proptest): the diff of an object against itself finds no
//! drift; masking is idempotent and leaves no secret value behind; a report survives JSON and
//! `report merge` is associative; an adoption edit leaves no drift for its resource.

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

/// An adoption edit followed by a diff of the edited Git against the same live object finds no
/// drift for that resource, and changes nothing else the file means.
///
/// Each case is a manifest file (the target object between two bystander documents, written in
/// a mix of YAML styles: plain, quoted and literal scalars, flow collections, comments) and a
/// set of outside edits to the live object. The same edits, where the diff counts them as drift,
/// give the Git the adoption must produce. The real diff finds the drift, `adopt_changes` edits
/// the text, the real manifest loader reads the edited text back, and the real diff compares it
/// with the same live object.
mod adoption_laws {
    use driftwarden::act::edit_yaml::{DocRef, adopt_changes};
    use driftwarden::desired::manifests::parse_file;
    use driftwarden::diff::normalize::scalar_equal;
    use driftwarden::diff::{DesiredObject, DiffOptions, LiveObject, diff_target};
    use driftwarden::k8s::{Scopes, resource_id};
    use driftwarden::model::{FIELD_MANAGER, Provenance};
    use driftwarden::yaml::scalar_text;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    const FILE: &str = "apps/file.yaml";

    /// What happens live to a field Git declares.
    #[derive(Debug, Clone)]
    enum Fate {
        Keep,
        Change(Value),
        Remove,
    }

    /// Strings a YAML writer must quote or block to keep them strings, and ordinary ones.
    fn tricky() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "yes",
                "no",
                "on",
                "off",
                "y",
                "N",
                "true",
                "False",
                "null",
                "~",
                "0123",
                "0o17",
                "0x1F",
                "1e3",
                "-1",
                "1.0",
                ".inf",
                "-.NaN",
                "-",
                ":",
                "#",
                "a: b",
                "a #b",
                "a#b",
                "- x",
                "[x]",
                "{x: y}",
                "*x",
                "&x",
                "!x",
                "|",
                ">",
                "%x",
                "@x",
                "`x",
                "'",
                "\"",
                "'q'",
                " lead",
                "trail ",
                "",
                "line1\nline2",
                "line1\n\nline3\n",
                "tab\there",
                "back\\slash",
                "ünïcødé",
                "---",
                "...",
                "? k",
                "k:",
            ])
            .prop_map(str::to_string),
            "[ -~]{0,16}",
            "[a-z :#'\"\n-]{1,16}",
        ]
    }

    fn fate(new: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Fate> {
        prop_oneof![
            3 => Just(Fate::Keep),
            4 => new.prop_map(Fate::Change),
            1 => Just(Fate::Remove),
        ]
    }

    fn string_fate() -> impl Strategy<Value = Fate> {
        fate(tricky().prop_map(Value::String))
    }

    /// Whether the diff would see `a` and `b` as equal (then the live edit is no drift).
    fn same_to_diff(a: &Value, b: &Value) -> bool {
        let empty = |v: &Value| match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty(),
            _ => false,
        };
        match (a, b) {
            _ if empty(a) && empty(b) => true,
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same_to_diff(p, q))
            }
            (Value::Object(_), _) | (_, Value::Object(_)) => a == b,
            _ => scalar_equal(a, b),
        }
    }

    /// Drops what declares nothing (null, "", {}, [] in a mapping or at the end of a list), as
    /// the diff does: Git writing `{}` where it held a now-empty map changes nothing live.
    fn meaning(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), meaning(v)))
                    .filter(|(_, v)| match v {
                        Value::Null => false,
                        Value::String(s) => !s.is_empty(),
                        Value::Array(a) => !a.is_empty(),
                        Value::Object(m) => !m.is_empty(),
                        _ => true,
                    })
                    .collect(),
            ),
            Value::Array(a) => {
                // Trailing items that declare nothing are nothing to the diff either.
                let mut items: Vec<Value> = a.iter().map(meaning).collect();
                while items.last().is_some_and(|v| same_to_diff(v, &Value::Null)) {
                    items.pop();
                }
                Value::Array(items)
            }
            other => other.clone(),
        }
    }

    /// (desired, live, expected Git after adoption) of a map whose entries meet the given fates,
    /// plus live-only entries (`true` = driftwarden's Apply entry owns it: Git removed it, so
    /// it is drift and adoption writes it back).
    fn fated_map(
        entries: &[(String, Value, Fate)],
        extra: &[(String, Value, bool)],
    ) -> (Map<String, Value>, Map<String, Value>, Map<String, Value>) {
        let (mut d, mut l, mut e) = (Map::new(), Map::new(), Map::new());
        for (k, v, f) in entries {
            d.insert(k.clone(), v.clone());
            match f {
                Fate::Keep => {
                    l.insert(k.clone(), v.clone());
                    e.insert(k.clone(), v.clone());
                }
                Fate::Change(n) if same_to_diff(v, n) => {
                    l.insert(k.clone(), n.clone());
                    e.insert(k.clone(), v.clone());
                }
                Fate::Change(n) => {
                    l.insert(k.clone(), n.clone());
                    e.insert(k.clone(), n.clone());
                }
                Fate::Remove => {}
            }
        }
        for (k, v, owned) in extra {
            if d.contains_key(k) || l.contains_key(k) {
                continue;
            }
            l.insert(k.clone(), v.clone());
            if *owned {
                e.insert(k.clone(), v.clone());
            }
        }
        (d, l, e)
    }

    /// The managedFields entry of driftwarden's Apply owning the given live-only keys (what the
    /// server records after Git once declared them).
    fn owned_entry(api: &str, owned: &[(&str, Vec<String>)]) -> Value {
        let mut fields = Map::new();
        for (path, keys) in owned {
            if keys.is_empty() {
                continue;
            }
            let mut node =
                Value::Object(keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect());
            for seg in path.rsplit('/') {
                node = json!({ format!("f:{seg}"): node });
            }
            merge_into(&mut fields, node);
        }
        json!({
            "manager": FIELD_MANAGER,
            "operation": "Apply",
            "apiVersion": api,
            "time": "2026-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": fields,
        })
    }

    fn merge_into(into: &mut Map<String, Value>, v: Value) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                match into.get_mut(&k) {
                    Some(Value::Object(inner)) => merge_into(inner, v),
                    _ => {
                        into.insert(k, v);
                    }
                }
            }
        }
    }

    fn owned_keys(
        extra: &[(String, Value, bool)],
        declared: &[(String, Value, Fate)],
    ) -> Vec<String> {
        // The first entry of a key is the one `fated_map` uses.
        extra
            .iter()
            .enumerate()
            .filter(|(i, (k, _, _))| !extra[..*i].iter().any(|(e, _, _)| e == k))
            .map(|(_, x)| x)
            .filter(|(k, _, owned)| *owned && !declared.iter().any(|(d, _, _)| d == k))
            .map(|(k, _, _)| k.clone())
            .collect()
    }

    /// A generated case: the target object and the live one, and what Git must become.
    #[derive(Debug, Clone)]
    struct Case {
        desired: Value,
        live: Value,
        expected: Value,
    }

    fn server_metadata(live: &mut Value, managed: Value) {
        let m = &mut live["metadata"];
        m["uid"] = json!("6f1c1f0e-0000-4000-8000-000000000001");
        m["resourceVersion"] = json!("4711");
        m["generation"] = json!(3);
        m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        m["managedFields"] = json!([managed]);
    }

    /// Git's entries with their fates, and live-only entries (`true`: owned by driftwarden).
    type Entries = (Vec<(String, Value, Fate)>, Vec<(String, Value, bool)>);

    fn meta_maps() -> impl Strategy<Value = Entries> {
        (
            prop::collection::btree_map(
                "[a-z]{1,3}(\\.example\\.com/)?[a-z][a-z0-9-]{0,6}",
                (tricky(), string_fate()),
                0..4,
            ),
            prop::collection::vec(("z[a-z]{1,5}", tricky(), any::<bool>()), 0..3),
        )
            .prop_map(|(m, extra)| {
                (
                    m.into_iter()
                        .map(|(k, (v, f))| (k, Value::String(v), f))
                        .collect(),
                    extra
                        .into_iter()
                        .map(|(k, v, o)| (k, Value::String(v), o))
                        .collect(),
                )
            })
    }

    const CPUS: [&str; 5] = ["100m", "250m", "1", "2", "3500m"];
    const MEMS: [&str; 4] = ["64Mi", "128Mi", "1Gi", "3G"];

    #[derive(Debug, Clone)]
    struct Container {
        image: (String, Option<String>),
        env: Vec<(String, Value, Fate)>,
        extra_env: Vec<(String, Value)>,
        cpu: (usize, Option<usize>),
        mem: (usize, Option<usize>),
    }

    fn container() -> impl Strategy<Value = Container> {
        (
            (
                "[a-z]{1,8}(/[a-z]{1,6})?:[0-9]\\.[0-9]",
                prop::option::of("[a-z]{1,8}:[0-9]{1,2}\\.[0-9]-[a-z]{1,4}"),
            ),
            prop::collection::btree_map("[A-Z][A-Z_]{0,6}", (tricky(), string_fate()), 0..4),
            prop::collection::vec(("X[A-Z]{1,4}", tricky()), 0..2),
            (0..CPUS.len(), prop::option::of(0..CPUS.len())),
            (0..MEMS.len(), prop::option::of(0..MEMS.len())),
        )
            .prop_map(|(image, env, extra_env, cpu, mem)| Container {
                image,
                env: env
                    .into_iter()
                    .map(|(k, (v, f))| (k, Value::String(v), f))
                    .collect(),
                extra_env: extra_env
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
                cpu,
                mem,
            })
    }

    fn deployment() -> impl Strategy<Value = Case> {
        (
            meta_maps(),
            meta_maps(),
            (1i64..20, prop::option::of(0i64..50)),
            prop::collection::vec(container(), 1..3),
            any::<bool>(),
        )
            .prop_map(|((labels, extra_labels), (ann, extra_ann), replicas, containers, sidecar)| {
                let (dl, ll, el) = fated_map(&labels, &extra_labels);
                let (da, la, ea) = fated_map(&ann, &extra_ann);
                let managed = owned_entry(
                    "apps/v1",
                    &[
                        ("metadata/labels", owned_keys(&extra_labels, &labels)),
                        ("metadata/annotations", owned_keys(&extra_ann, &ann)),
                    ],
                );
                let (mut dc, mut lc, mut ec) = (Vec::new(), Vec::new(), Vec::new());
                for (i, c) in containers.iter().enumerate() {
                    let name = format!("c{i}");
                    let mut d_env = Vec::new();
                    let mut l_env = Vec::new();
                    let mut e_env = Vec::new();
                    for (k, v, f) in &c.env {
                        let item = |v: &Value| json!({"name": k, "value": v});
                        d_env.push(item(v));
                        match f {
                            Fate::Keep => {
                                l_env.push(item(v));
                                e_env.push(item(v));
                            }
                            Fate::Change(n) => {
                                l_env.push(item(n));
                                e_env.push(item(if same_to_diff(v, n) { v } else { n }));
                            }
                            Fate::Remove => {}
                        }
                    }
                    for (k, v) in &c.extra_env {
                        l_env.push(json!({"name": k, "value": v}));
                    }
                    let res = |cpu: usize, mem: usize| {
                        json!({"limits": {"cpu": CPUS[cpu], "memory": MEMS[mem]}})
                    };
                    let new_cpu = c.cpu.1.unwrap_or(c.cpu.0);
                    let new_mem = c.mem.1.unwrap_or(c.mem.0);
                    let new_image = c.image.1.clone().unwrap_or_else(|| c.image.0.clone());
                    let mut d = json!({"name": name, "image": c.image.0, "resources": res(c.cpu.0, c.mem.0)});
                    let mut l = json!({
                        "name": name, "image": new_image, "resources": res(new_cpu, new_mem),
                        "imagePullPolicy": "IfNotPresent",
                        "terminationMessagePath": "/dev/termination-log",
                    });
                    let mut e = json!({"name": name, "image": new_image, "resources": res(new_cpu, new_mem)});
                    if !c.env.is_empty() {
                        d["env"] = Value::Array(d_env);
                        e["env"] = Value::Array(e_env);
                    }
                    if !l_env.is_empty() {
                        l["env"] = Value::Array(l_env);
                    }
                    dc.push(d);
                    lc.push(l);
                    ec.push(e);
                }
                if sidecar {
                    lc.push(json!({"name": "istio-proxy", "image": "proxy:1.0"}));
                }
                let object = |labels: Map<String, Value>, ann: Map<String, Value>, replicas: i64, containers: Vec<Value>| {
                    let mut o = json!({
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "metadata": {"name": "web", "namespace": "shop"},
                        "spec": {
                            "replicas": replicas,
                            "selector": {"matchLabels": {"app": "web"}},
                            "template": {
                                "metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": containers},
                            },
                        },
                    });
                    if !labels.is_empty() {
                        o["metadata"]["labels"] = Value::Object(labels);
                    }
                    if !ann.is_empty() {
                        o["metadata"]["annotations"] = Value::Object(ann);
                    }
                    o
                };
                let desired = object(dl, da, replicas.0, dc);
                let new_replicas = replicas.1.unwrap_or(replicas.0);
                let mut live = object(ll, la, new_replicas, lc);
                live["spec"]["strategy"] = json!({"type": "RollingUpdate"});
                live["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
                live["status"] = json!({"replicas": new_replicas, "observedGeneration": 3});
                server_metadata(&mut live, managed);
                let expected = object(el, ea, new_replicas, ec);
                Case { desired, live, expected }
            })
    }

    fn config_map() -> impl Strategy<Value = Case> {
        (
            meta_maps(),
            prop::collection::btree_map("[a-z][a-z0-9._-]{0,8}", (tricky(), string_fate()), 1..6),
            prop::collection::vec(("z[a-z0-9._-]{1,6}", tricky(), any::<bool>()), 0..3),
        )
            .prop_map(|((labels, extra_labels), data, extra)| {
                let data: Vec<(String, Value, Fate)> = data
                    .into_iter()
                    .map(|(k, (v, f))| (k, Value::String(v), f))
                    .collect();
                let extra: Vec<(String, Value, bool)> = extra
                    .into_iter()
                    .map(|(k, v, o)| (k, Value::String(v), o))
                    .collect();
                let (dl, ll, el) = fated_map(&labels, &extra_labels);
                let (dd, ld, ed) = fated_map(&data, &extra);
                let managed = owned_entry(
                    "v1",
                    &[
                        ("metadata/labels", owned_keys(&extra_labels, &labels)),
                        ("data", owned_keys(&extra, &data)),
                    ],
                );
                let object = |labels: Map<String, Value>, data: Map<String, Value>| {
                    let mut o = json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "settings", "namespace": "shop"},
                        "data": data,
                    });
                    if !labels.is_empty() {
                        o["metadata"]["labels"] = Value::Object(labels);
                    }
                    o
                };
                let mut live = object(ll, ld);
                server_metadata(&mut live, managed);
                Case {
                    desired: object(dl, dd),
                    live,
                    expected: object(el, ed),
                }
            })
    }

    /// A value of a custom resource's spec: keys that no list-merge rule knows.
    fn spec_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            tricky().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 20, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("k[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// An outside edit of a custom resource's spec, at the n-th place that fits.
    #[derive(Debug, Clone)]
    enum SpecEdit {
        /// A leaf (scalar or list of scalars) gets a new value.
        Change(usize, Value),
        /// A mapping entry goes.
        Remove(usize),
        /// A mapping gets a key Git never declared (no drift).
        Add(usize, Value),
        /// A list gets one more item.
        Append(usize, Value),
    }

    fn spec_edit() -> impl Strategy<Value = SpecEdit> {
        prop_oneof![
            3 => (any::<usize>(), spec_value()).prop_map(|(i, v)| SpecEdit::Change(i, v)),
            1 => any::<usize>().prop_map(SpecEdit::Remove),
            1 => (any::<usize>(), spec_value()).prop_map(|(i, v)| SpecEdit::Add(i, v)),
            1 => (any::<usize>(), spec_value()).prop_map(|(i, v)| SpecEdit::Append(i, v)),
        ]
    }

    fn is_scalar(v: &Value) -> bool {
        !v.is_object() && !v.is_array()
    }

    /// Pointers (as segments) of every node in `v` that `pick` accepts, in document order.
    fn places(
        v: &Value,
        path: &mut Vec<String>,
        pick: &dyn Fn(&Value, &[String]) -> bool,
        out: &mut Vec<Vec<String>>,
    ) {
        if pick(v, path) {
            out.push(path.clone());
        }
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(k.clone());
                    places(c, path, pick, out);
                    path.pop();
                }
            }
            Value::Array(a) if !a.iter().all(is_scalar) => {
                for (i, c) in a.iter().enumerate() {
                    path.push(i.to_string());
                    places(c, path, pick, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn at<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
        path.iter().try_fold(v, |v, seg| match v {
            Value::Object(m) => m.get_mut(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        })
    }

    fn widget() -> impl Strategy<Value = Case> {
        (
            prop::collection::btree_map("k[a-z]{1,4}", spec_value(), 1..5),
            prop::collection::vec(spec_edit(), 0..5),
        )
            .prop_map(|(spec, edits)| {
                let spec = Value::Object(spec.into_iter().collect());
                let desired = json!({
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "gadget", "namespace": "shop"},
                    "spec": spec,
                });
                let mut live = desired.clone();
                let mut expected = desired.clone();
                for edit in edits {
                    let mut found = Vec::new();
                    let root = &desired["spec"];
                    let pick: &dyn Fn(&Value, &[String]) -> bool = match &edit {
                        SpecEdit::Change(..) => &|v, p| {
                            !p.is_empty()
                                && (is_scalar(v)
                                    || v.as_array().is_some_and(|a| a.iter().all(is_scalar)))
                        },
                        SpecEdit::Remove(_) => {
                            &|_, p| p.last().is_some_and(|s| s.parse::<usize>().is_err())
                        }
                        SpecEdit::Add(..) => &|v, _| v.is_object(),
                        SpecEdit::Append(..) => &|v, _| v.is_array(),
                    };
                    places(root, &mut Vec::new(), pick, &mut found);
                    let n = match &edit {
                        SpecEdit::Change(n, _)
                        | SpecEdit::Remove(n)
                        | SpecEdit::Add(n, _)
                        | SpecEdit::Append(n, _) => *n,
                    };
                    if found.is_empty() {
                        continue;
                    }
                    let mut path = vec!["spec".to_string()];
                    path.extend(found[n % found.len()].iter().cloned());
                    let (Some(l), Some(e)) = (at(&mut live, &path), at(&mut expected, &path))
                    else {
                        continue;
                    };
                    match edit {
                        SpecEdit::Change(_, v) => {
                            // What Git must hold: the live value, unless the diff sees it
                            // as Git's own (an earlier edit may have changed this place).
                            let was = desired.pointer(&format!("/{}", path.join("/")));
                            if !v.is_null() {
                                *l = v.clone();
                                *e = match was {
                                    Some(w) if same_to_diff(w, &v) => w.clone(),
                                    _ => v,
                                };
                            }
                        }
                        SpecEdit::Remove(_) => {
                            let (parent, key) = path.split_at(path.len() - 1);
                            if let Some(Value::Object(m)) = at(&mut live, parent) {
                                m.remove(&key[0]);
                            }
                            if let Some(Value::Object(m)) = at(&mut expected, parent) {
                                m.remove(&key[0]);
                            }
                        }
                        SpecEdit::Add(_, v) => {
                            if let Value::Object(m) = l {
                                m.insert("zadded".into(), v);
                            }
                        }
                        SpecEdit::Append(_, v) => {
                            if let (Value::Array(la), Value::Array(ea)) = (l, e) {
                                la.push(v.clone());
                                ea.push(v);
                            }
                        }
                    }
                }
                server_metadata(&mut live, owned_entry("example.com/v1", &[]));
                Case {
                    desired,
                    live,
                    expected,
                }
            })
    }

    // -----------------------------------------------------------------------------------------
    // Writing the manifest: a small YAML writer with varied, valid styles
    // -----------------------------------------------------------------------------------------

    /// Deterministic style choices from a seed (xorshift).
    struct Styles(u64);

    impl Styles {
        fn pick(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn key_text(k: &str) -> String {
        scalar_text(&Value::String(k.to_string()))
    }

    /// A scalar on the line of its key (`Some`), or `None` when it must be a literal block.
    fn inline_scalar(v: &Value, st: &mut Styles) -> Option<String> {
        let Value::String(s) = v else {
            return Some(scalar_text(v));
        };
        let block_ok = s.contains('\n')
            && !s.ends_with('\n')
            && s.split('\n')
                .all(|l| !l.is_empty() && !l.starts_with([' ', '\t']))
            && !s.contains(['\t', '\r']);
        match st.pick(4) {
            0 if block_ok => None,
            1 if !s.contains('\n') => Some(format!("'{}'", s.replace('\'', "''"))),
            2 => Some(Value::String(s.clone()).to_string()),
            _ => Some(scalar_text(v)),
        }
    }

    fn comment(st: &mut Styles) -> &'static str {
        match st.pick(6) {
            0 => "  # a comment",
            1 => " #: tricky comment",
            _ => "",
        }
    }

    fn write_value(v: &Value, indent: usize, out: &mut String, st: &mut Styles) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, val) in m {
                    if st.pick(10) == 0 {
                        out.push_str(&format!("{pad}# about {k}\n"));
                    }
                    out.push_str(&pad);
                    out.push_str(&key_text(k));
                    out.push(':');
                    write_child(val, indent, true, out, st);
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for val in a {
                    out.push_str(&pad);
                    out.push('-');
                    match val {
                        Value::Object(m) if !m.is_empty() && st.pick(3) != 0 => {
                            let mut inner = String::new();
                            write_value(val, indent + 2, &mut inner, st);
                            out.push(' ');
                            out.push_str(inner.trim_start());
                        }
                        _ => write_child(val, indent, false, out, st),
                    }
                }
            }
            other => {
                out.push_str(&pad);
                out.push_str(&scalar_text(other));
                out.push('\n');
            }
        }
    }

    fn write_child(val: &Value, indent: usize, under_key: bool, out: &mut String, st: &mut Styles) {
        let collection = matches!(val, Value::Object(m) if !m.is_empty())
            || matches!(val, Value::Array(a) if !a.is_empty());
        if collection {
            // Small collections sometimes in flow style (JSON is flow YAML).
            if val.to_string().len() < 60 && st.pick(4) == 0 {
                out.push(' ');
                out.push_str(&val.to_string());
                out.push_str(comment(st));
                out.push('\n');
                return;
            }
            out.push_str(comment(st));
            out.push('\n');
            // Lists under a key: indented or at the key's column, both common.
            let child = if under_key && val.is_array() && st.pick(2) == 0 {
                indent
            } else {
                indent + 2
            };
            write_value(val, child, out, st);
            return;
        }
        match inline_scalar(val, st) {
            Some(text) => {
                out.push(' ');
                out.push_str(&text);
                out.push_str(comment(st));
                out.push('\n');
            }
            None => {
                out.push_str(" |-\n");
                let pad = " ".repeat(indent + 2);
                for line in val.as_str().unwrap_or_default().split('\n') {
                    out.push_str(&pad);
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
    }

    fn manifest(docs: &[&Value], seed: u64) -> String {
        let mut st = Styles(seed | 1);
        let mut out = String::from("# managed in Git\n");
        for (i, d) in docs.iter().enumerate() {
            if i > 0 || st.pick(2) == 0 {
                out.push_str("---\n");
            }
            write_value(d, 0, &mut out, &mut st);
        }
        out
    }

    fn bystanders() -> (Value, Value) {
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "before", "namespace": "shop"},
                   "data": {"yes": "no", "port": "0123", "note": "a: b # c"}}),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "after", "namespace": "shop", "labels": {"app": "web"}},
                   "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "web"}}}),
        )
    }

    fn desired_objects(text: &str) -> Vec<DesiredObject> {
        let scopes = Scopes::default();
        parse_file(FILE, text.as_bytes(), false)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .into_iter()
            .map(|o| DesiredObject {
                id: resource_id("test", &o.value, "default", &scopes),
                provenance: Some(Provenance {
                    source: "git".into(),
                    file: o.file.clone(),
                    line: o.line,
                    commit: None,
                }),
                object: o.value,
            })
            .collect()
    }

    fn check(case: &Case, seed: u64) -> Result<(), TestCaseError> {
        let (before, after) = bystanders();
        let text = manifest(&[&before, &case.desired, &after], seed);
        let objects = desired_objects(&text);
        // The writer above is part of the test: it must say what the case means.
        prop_assert_eq!(
            objects.iter().map(|o| &o.object).collect::<Vec<_>>(),
            vec![&before, &case.desired, &after],
            "the test's YAML writer is wrong:\n{}",
            text
        );
        let target = objects[1].id.clone();
        let live = [LiveObject {
            id: target.clone(),
            object: case.live.clone(),
        }];
        let opts = DiffOptions::new("props");
        let diff = diff_target(&objects[1..2], &live, &opts);
        let edited = match diff.drifts.first() {
            None => text.clone(),
            Some(drift) => {
                let prov = drift.provenance.as_ref().unwrap();
                let doc = DocRef {
                    kind: case.desired["kind"].as_str().unwrap(),
                    name: case.desired["metadata"]["name"].as_str().unwrap(),
                    namespace: Some("shop"),
                    line: Some(prov.line),
                };
                match adopt_changes(&text, &doc, &drift.changes, drift.live_object.as_ref()) {
                    Ok(e) => e.text,
                    Err(e) => {
                        return Err(TestCaseError::fail(format!(
                            "no adoption edit: {e}\nchanges: {:#?}\nfile:\n{text}",
                            drift.changes
                        )));
                    }
                }
            }
        };
        let reloaded = desired_objects(&edited);
        prop_assert_eq!(reloaded.len(), 3, "{}", edited);
        // Nothing else in the file changed meaning.
        prop_assert_eq!(&reloaded[0].object, &before, "{}", edited);
        prop_assert_eq!(&reloaded[2].object, &after, "{}", edited);
        prop_assert_eq!(&reloaded[1].id, &target);
        // Git now says what live says, exactly where live drifted, and nothing more.
        prop_assert_eq!(
            meaning(&reloaded[1].object),
            meaning(&case.expected),
            "\nbefore:\n{}\nafter:\n{}\nchanges: {:#?}",
            text,
            edited,
            diff.drifts.first().map(|d| &d.changes)
        );
        // And the same diff finds nothing left.
        let again = diff_target(&reloaded[1..2], &live, &opts);
        prop_assert!(
            again.drifts.is_empty(),
            "drift left after adoption: {:#?}\nbefore:\n{}\nafter:\n{}",
            again.drifts[0].changes,
            text,
            edited
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn adopting_a_deployment_leaves_no_drift(case in deployment(), seed in any::<u64>()) {
            check(&case, seed)?;
        }

        #[test]
        fn adopting_a_config_map_leaves_no_drift(case in config_map(), seed in any::<u64>()) {
            check(&case, seed)?;
        }

        #[test]
        fn adopting_a_custom_resource_leaves_no_drift(case in widget(), seed in any::<u64>()) {
            check(&case, seed)?;
        }
    }
}
