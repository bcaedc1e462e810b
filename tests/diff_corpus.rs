//! The diff against ground truth.
//!
//! - `fixtures/golden/`: real kube-apiserver 1.32 responses (see its README). Every
//!   desired manifest against the object the server returned after applying it must show no
//!   drift; against the hand-edited objects in `live-drifted/` exactly the findings listed in
//!   `live-drifted/EXPECTED.md`, with the managers named there. The applies of `protocol/` against
//!   the answers the server gave (defaults, a foreground delete in progress) show none either.
//! - `fixtures/corpus/<case>/`: `desired.yaml` (or `.json`), `live.json` (or `.yaml`) shaped as the
//!   API server returns objects, and `expected.json` listing exactly the changed paths (empty for
//!   in sync), optionally their op, owner and masking, the options to diff with, and the
//!   ignored-field counts.

#[path = "support/common.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use common::read;
use driftwarden::diff::{
    DesiredObject, DiffOptions, IgnoreRule, LiveObject, diff_object, diff_target,
};
use driftwarden::model::{ChangeOp, DriftKind, MASK, ResourceId};
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    common::root().join("fixtures")
}

/// Loads one object from YAML or JSON, by extension.
fn load(path: &Path) -> Value {
    let text = read(path);
    if path.extension().is_some_and(|e| e == "json") {
        return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let docs = driftwarden::yaml::parse_documents(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}: one document expected", path.display());
    docs.into_iter()
        .next()
        .map(|d| d.value)
        .unwrap_or(Value::Null)
}

/// `desired.yaml` or `desired.json` in `dir`.
fn load_either(dir: &Path, stem: &str) -> Value {
    for ext in ["yaml", "json"] {
        let p = dir.join(format!("{stem}.{ext}"));
        if p.exists() {
            return load(&p);
        }
    }
    panic!("{}: no {stem}.yaml or {stem}.json", dir.display())
}

/// The id the caller would compute: group/version from apiVersion, namespace from metadata.
fn id_of(obj: &Value) -> ResourceId {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
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

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

fn golden_desired() -> Vec<(String, Value)> {
    files(&fixtures().join("golden/desired"), "yaml")
        .into_iter()
        .map(|p| (stem(&p), load(&p)))
        .collect()
}

/// EXPECTED.md's substitutions: namespace `shop` → `shop-drifted`, the RoleBinding's first
/// subject likewise, and the Namespace renamed.
fn for_drifted(name: &str, obj: &Value) -> (String, Value) {
    let mut o = obj.clone();
    if o["metadata"]["namespace"] == json!("shop") {
        o["metadata"]["namespace"] = json!("shop-drifted");
    }
    if o["kind"] == json!("RoleBinding") && o["subjects"][0]["namespace"] == json!("shop") {
        o["subjects"][0]["namespace"] = json!("shop-drifted");
    }
    if o["kind"] == json!("Namespace") {
        o["metadata"]["name"] = json!("shop-drifted");
        return ("namespace-shop-drifted".to_string(), o);
    }
    (name.to_string(), o)
}

fn as_desired(objs: &[(String, Value)]) -> Vec<DesiredObject> {
    objs.iter()
        .map(|(_, o)| DesiredObject {
            id: id_of(o),
            object: o.clone(),
            provenance: None,
        })
        .collect()
}

fn as_live(dir: &Path) -> Vec<LiveObject> {
    files(dir, "json")
        .into_iter()
        .map(|p| {
            let o = load(&p);
            LiveObject {
                id: id_of(&o),
                object: o,
            }
        })
        .collect()
}

/// (a) Desired against what the server returned right after applying it: nothing drifted,
/// in default and in strict mode.
#[test]
fn golden_live_has_no_drift() {
    let desired = golden_desired();
    assert_eq!(desired.len(), 23);
    let live_dir = fixtures().join("golden/live");
    for strict in [false, true] {
        let mut opts = DiffOptions::new("golden");
        opts.strict = strict;
        for (name, d) in &desired {
            let live = load(&live_dir.join(format!("{name}.json")));
            let diff = diff_object(&id_of(d), d, &live, &opts);
            assert!(
                diff.changes.is_empty(),
                "{name} (strict={strict}): false drift {:#?}",
                diff.changes
            );
        }
        let out = diff_target(&as_desired(&desired), &as_live(&live_dir), &opts);
        assert!(out.drifts.is_empty(), "{:#?}", out.drifts);
        assert_eq!((out.checked, out.in_sync), (23, 23));
        assert!(out.ignored.is_empty());
    }
}

/// The body of a captured answer (`protocol/<name>.http`: request line, status line, headers,
/// a blank line, the JSON body).
fn protocol_answer(name: &str) -> Value {
    let path = fixtures().join(format!("golden/protocol/{name}.http"));
    let text = read(&path);
    let (_, body) = text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("{}: no body", path.display()));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (a') The applies of the protocol captures against the real server's answers, in default and
/// strict mode: what the server added is no drift. `resources: {}` on a container that set
/// none (apply-legacy-worker-201), an allocated cluster IP (apply-service-create-201), and the
/// marks of a foreground delete in progress: `deletionTimestamp`, the `foregroundDeletion`
/// finalizer, the raised generation (get-after-foreground-delete-200).
#[test]
fn golden_protocol_answers_have_no_drift_from_their_applies() {
    for (applied, answer) in [
        ("apply-create-201", "apply-create-201"),
        ("apply-service-create-201", "apply-service-create-201"),
        ("apply-legacy-worker-201", "apply-legacy-worker-201"),
        ("apply-legacy-worker-201", "get-after-foreground-delete-200"),
    ] {
        let desired = load(&fixtures().join(format!("golden/protocol/{applied}.request.yaml")));
        let live = protocol_answer(answer);
        for strict in [false, true] {
            let mut opts = DiffOptions::new("golden");
            opts.strict = strict;
            let diff = diff_object(&id_of(&desired), &desired, &live, &opts);
            assert!(
                diff.changes.is_empty(),
                "{applied} against {answer} (strict={strict}): false drift {:#?}",
                diff.changes
            );
        }
    }
    // What the answers show that the applies did not say.
    let worker = protocol_answer("apply-legacy-worker-201");
    assert_eq!(
        worker["spec"]["template"]["spec"]["containers"][0]["resources"],
        json!({})
    );
    let deleting = protocol_answer("get-after-foreground-delete-200");
    assert_eq!(deleting["metadata"]["generation"], 2);
    assert_eq!(
        deleting["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
}

/// One expected finding: (object file, pointer, desired, live, manager, subresource, has time).
type Finding = (
    &'static str,
    &'static str,
    Value,
    Value,
    &'static str,
    Option<&'static str>,
    bool,
);

fn expected_findings() -> Vec<Finding> {
    vec![
        (
            "deployment-storefront",
            "/spec/replicas",
            json!(2),
            json!(5),
            "kubectl",
            Some("scale"),
            false,
        ),
        (
            "deployment-storefront",
            "/spec/template/spec/containers/0/image",
            json!("nginx:1.27.3"),
            json!("nginx:1.27.4"),
            "kubectl-set",
            None,
            true,
        ),
        (
            "deployment-storefront",
            "/metadata/labels/tier",
            json!("frontend"),
            json!("web"),
            "kubectl-label",
            None,
            true,
        ),
        (
            "configmap-storefront-config",
            "/data/LOG_LEVEL",
            json!("info"),
            json!("debug"),
            "kubectl-edit",
            None,
            true,
        ),
        (
            "secret-storefront-secrets",
            "/data/API_KEY",
            json!(MASK),
            json!(MASK),
            "kubectl-patch",
            None,
            true,
        ),
    ]
}

fn drifted_inputs() -> (Vec<(String, Value)>, PathBuf) {
    let dir = fixtures().join("golden/live-drifted");
    // Cluster-scoped objects were not copied to shop-drifted.
    let desired: Vec<(String, Value)> = golden_desired()
        .iter()
        .filter(|(_, o)| o["metadata"]["namespace"].is_string() || o["kind"] == json!("Namespace"))
        .map(|(n, o)| for_drifted(n, o))
        .collect();
    assert_eq!(desired.len(), 20);
    (desired, dir)
}

/// (b) Desired against the hand-edited objects: exactly EXPECTED.md's findings.
#[test]
fn golden_drifted_matches_expected() {
    let (desired, dir) = drifted_inputs();
    let opts = DiffOptions::new("golden");
    let findings = expected_findings();

    // Per object, with diff_object.
    for (name, d) in &desired {
        let path = dir.join(format!("{name}.json"));
        if !path.exists() {
            assert_eq!(
                name, "service-storefront-nodeport",
                "only the deleted Service is absent"
            );
            continue;
        }
        let live = load(&path);
        let diff = diff_object(&id_of(d), d, &live, &opts);
        let want: Vec<&Finding> = findings.iter().filter(|f| f.0 == name).collect();
        let got: BTreeSet<&str> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        let want_paths: BTreeSet<&str> = want.iter().map(|f| f.1).collect();
        assert_eq!(got, want_paths, "{name}: {:#?}", diff.changes);
        for f in want {
            let c = diff
                .changes
                .iter()
                .find(|c| c.path == f.1)
                .unwrap_or_else(|| panic!("{name} {}", f.1));
            assert_eq!(c.op, ChangeOp::Changed, "{name} {}", f.1);
            assert_eq!((&c.desired, &c.live), (&f.2, &f.3), "{name} {}", f.1);
            let a = c
                .attribution
                .as_ref()
                .unwrap_or_else(|| panic!("{} unattributed", f.1));
            assert_eq!(a.manager, f.4, "{}", f.1);
            assert_eq!(a.operation, "Update", "{}", f.1);
            assert_eq!(a.subresource.as_deref(), f.5, "{}", f.1);
            assert_eq!(a.time.is_some(), f.6, "{}", f.1);
            assert_eq!(c.masked, name.starts_with("secret-"), "{}", f.1);
        }
    }

    // The whole target: the Missing Service too, sorted, counted.
    let out = diff_target(&as_desired(&desired), &as_live(&dir), &opts);
    let kinds: Vec<(String, DriftKind, usize)> = out
        .drifts
        .iter()
        .map(|d| (d.resource.display.clone(), d.kind, d.changes.len()))
        .collect();
    assert_eq!(
        kinds,
        [
            (
                "Deployment shop-drifted/storefront".into(),
                DriftKind::Modified,
                3
            ),
            (
                "ConfigMap shop-drifted/storefront-config".into(),
                DriftKind::Modified,
                1
            ),
            (
                "Secret shop-drifted/storefront-secrets".into(),
                DriftKind::Modified,
                1
            ),
            (
                "Service shop-drifted/storefront-nodeport".into(),
                DriftKind::Missing,
                0
            ),
        ]
    );
    assert_eq!((out.checked, out.in_sync), (20, 16));

    // Nothing secret anywhere in the drifts, masked objects included.
    let secret = out
        .drifts
        .iter()
        .find(|d| d.resource.id.type_name() == "Secret")
        .unwrap_or_else(|| panic!("no Secret drift"));
    let mut text = serde_json::to_string(&out.drifts).unwrap_or_default();
    text.push_str(
        &secret
            .desired_object
            .clone()
            .unwrap_or_default()
            .to_string(),
    );
    text.push_str(&secret.live_object.clone().unwrap_or_default().to_string());
    for canary in [
        "ZXhhbXBsZS1hcGkta2V5LTAwMDE=",
        "ZXhhbXBsZS1hcGkta2V5LTAwMDI=",
        "ZXhhbXBsZS1kYi1wYXNzd29yZA==",
        "bm90LWEtcmVhbC1zZXNzaW9uLXNlY3JldA==",
        "c2hvcA==",
        "example-db-password",
        "example-api-key",
    ] {
        assert!(!text.contains(canary), "{canary} leaked");
    }
}

/// (b, strict) Strict mode adds the hand-added annotation, and nothing else.
#[test]
fn golden_drifted_strict_adds_the_annotation() {
    let (desired, dir) = drifted_inputs();
    let mut opts = DiffOptions::new("golden");
    opts.strict = true;
    let out = diff_target(&as_desired(&desired), &as_live(&dir), &opts);
    let mut paths: Vec<(String, String)> = out
        .drifts
        .iter()
        .flat_map(|d| {
            d.changes
                .iter()
                .map(|c| (d.resource.display.clone(), c.path.clone()))
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            (
                "ConfigMap shop-drifted/storefront-config".into(),
                "/data/LOG_LEVEL".into()
            ),
            (
                "Deployment shop-drifted/storefront".into(),
                "/metadata/labels/tier".into()
            ),
            (
                "Deployment shop-drifted/storefront".into(),
                "/spec/replicas".into()
            ),
            (
                "Deployment shop-drifted/storefront".into(),
                "/spec/template/spec/containers/0/image".into()
            ),
            (
                "Secret shop-drifted/storefront-secrets".into(),
                "/data/API_KEY".into()
            ),
            (
                "Service shop-drifted/storefront".into(),
                "/metadata/annotations/team.shop~1incident".into()
            ),
        ]
    );
    let annotation = out
        .drifts
        .iter()
        .flat_map(|d| &d.changes)
        .find(|c| c.path == "/metadata/annotations/team.shop~1incident")
        .unwrap_or_else(|| panic!("annotation not reported"));
    assert_eq!(annotation.op, ChangeOp::ExtraLive);
    assert_eq!(annotation.desired, Value::Null);
    assert_eq!(annotation.live, json!("INC-2041"));
    let a = annotation
        .attribution
        .as_ref()
        .unwrap_or_else(|| panic!("unattributed"));
    assert_eq!(
        (a.manager.as_str(), a.operation.as_str()),
        ("kubectl-annotate", "Update")
    );
}

/// What a corpus case expects.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    description: String,
    #[serde(default)]
    options: CaseOptions,
    changes: Vec<ExpectedChange>,
    #[serde(default)]
    ignored: Option<BTreeMap<String, usize>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseOptions {
    #[serde(default)]
    strict: bool,
    #[serde(default)]
    ignore: Vec<CaseIgnore>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseIgnore {
    name: String,
    #[serde(default)]
    kinds: Vec<String>,
    #[serde(default)]
    name_glob: Option<String>,
    #[serde(default)]
    namespace_glob: Option<String>,
    #[serde(default)]
    pointers: Vec<String>,
    #[serde(default)]
    managers: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedChange {
    path: String,
    #[serde(default)]
    op: Option<ChangeOp>,
    #[serde(default)]
    manager: Option<String>,
    #[serde(default)]
    masked: Option<bool>,
}

/// Every string value in a JSON tree (for canary checks on Secret cases).
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// (c) The corpus: each case's exact path set.
#[test]
fn corpus_cases() {
    let root = fixtures().join("corpus");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 25, "only {} corpus cases", dirs.len());
    let mut kinds = BTreeSet::new();
    let mut failures = Vec::new();
    for dir in &dirs {
        let case = stem(dir);
        let desired = load_either(dir, "desired");
        let live = load_either(dir, "live");
        let expected: Expected = serde_json::from_str(&read(&dir.join("expected.json")))
            .unwrap_or_else(|e| panic!("{case}/expected.json: {e}"));
        let id = id_of(&desired);
        assert_eq!(
            id.key(),
            id_of(&live).key(),
            "{case}: desired and live differ in identity"
        );
        kinds.insert(id.type_name());
        let mut opts = DiffOptions::new("corpus");
        opts.strict = expected.options.strict;
        opts.ignore = expected
            .options
            .ignore
            .iter()
            .map(|r| IgnoreRule {
                name: r.name.clone(),
                kinds: r.kinds.clone(),
                name_glob: r.name_glob.clone(),
                namespace_glob: r.namespace_glob.clone(),
                pointers: r.pointers.clone(),
                managers: r.managers.clone(),
            })
            .collect();
        let diff = diff_object(&id, &desired, &live, &opts);

        let got: BTreeSet<&str> = diff.changes.iter().map(|c| c.path.as_str()).collect();
        let want: BTreeSet<&str> = expected.changes.iter().map(|c| c.path.as_str()).collect();
        if got != want {
            failures.push(format!(
                "{case} ({}):\n  want {want:?}\n  got  {got:?}\n  {:#?}",
                expected.description, diff.changes
            ));
            continue;
        }
        for w in &expected.changes {
            let Some(c) = diff.changes.iter().find(|c| c.path == w.path) else {
                continue;
            };
            if let Some(op) = w.op {
                if c.op != op {
                    failures.push(format!("{case} {}: op {:?}, want {op:?}", w.path, c.op));
                }
            }
            if let Some(m) = &w.manager {
                let got = c.attribution.as_ref().map(|a| a.manager.as_str());
                if got != Some(m.as_str()) {
                    failures.push(format!("{case} {}: owner {got:?}, want {m}", w.path));
                }
            }
            if let Some(masked) = w.masked {
                if c.masked != masked {
                    failures.push(format!("{case} {}: masked {}", w.path, c.masked));
                }
            }
        }
        if let Some(ignored) = &expected.ignored {
            if &diff.ignored != ignored {
                failures.push(format!(
                    "{case}: ignored {:?}, want {ignored:?}",
                    diff.ignored
                ));
            }
        }
        if id.type_name() == "Secret" {
            let mut secrets = Vec::new();
            for obj in [&desired, &live] {
                for field in ["data", "stringData"] {
                    strings(&obj[field], &mut secrets);
                }
            }
            let text = serde_json::to_string(&diff.changes).unwrap_or_default();
            for s in secrets.iter().filter(|s| s.len() >= 4) {
                if text.contains(s.as_str()) {
                    failures.push(format!("{case}: secret value {s:?} leaked"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for kind in [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Service",
        "ConfigMap",
        "Secret",
        "Ingress",
        "ClusterRole",
        "CacheCluster",
    ] {
        assert!(kinds.contains(kind), "no corpus case for {kind}");
    }
}
