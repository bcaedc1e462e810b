//! The policy input document, schema v1: one per drift, the same shape for every provider, so one
//! rule can reason across Kubernetes, Terraform and EC2. docs/policy.md documents every field with
//! a full example; bump [`INPUT_SCHEMA_VERSION`] on any incompatible change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::model::{Drift, Mode, ResourceId};

/// The input document's schema version (`input.schema_version`).
pub const INPUT_SCHEMA_VERSION: &str = "1";

/// What the run knows beyond one drift: the mode, the time and the command, plus facts about
/// other objects of the same target ([`Related`]) that some rules need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunContext {
    pub mode: Mode,
    /// The run's start time, RFC 3339 (`2026-11-22T03:15:00Z`). Policies see it as
    /// `input.context.time`; use it instead of `time.now_ns()` so a run is reproducible.
    pub time: String,
    /// The command that runs the classification: `diff`, `reconcile`, `policy eval`, ...
    pub command: String,
    /// Facts about other objects, per target name. A drift of target `t` sees `related["t"]` as
    /// `input.related`; a target without an entry sees an empty [`Related`].
    #[serde(default)]
    pub related: BTreeMap<String, Related>,
}

/// Facts about other objects of a target that rules need and one drift cannot carry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Related {
    /// Every object a HorizontalPodAutoscaler (or a KEDA ScaledObject) scales, as
    /// `Kind/namespace/name` (the same form as `input.resource.ref`).
    pub hpa_targets: BTreeSet<String>,
}

impl Related {
    /// Collects the facts from a target's objects. Pass the desired objects and the live ones:
    /// an autoscaler that exists only live still owns the replica count.
    pub fn from_objects<'a, I>(objects: I) -> Related
    where
        I: IntoIterator<Item = &'a Value>,
    {
        let mut related = Related::default();
        for obj in objects {
            related.add_object(obj);
        }
        related
    }

    /// Adds one object's facts (objects of other kinds are ignored).
    pub fn add_object(&mut self, obj: &Value) {
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
        let api = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let autoscaler = (kind == "HorizontalPodAutoscaler" && api.starts_with("autoscaling/"))
            || (kind == "ScaledObject" && api.starts_with("keda.sh/"));
        if !autoscaler {
            return;
        }
        let Some(target) = obj.pointer("/spec/scaleTargetRef") else {
            return;
        };
        let Some(name) = target.get("name").and_then(Value::as_str) else {
            return;
        };
        // KEDA defaults the kind to Deployment; the HPA requires it.
        let target_kind = target
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("Deployment");
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.hpa_targets
            .insert(format!("{target_kind}/{ns}/{name}"));
    }
}

/// Builds the policy input document (schema v1, docs/policy.md) for one drift.
///
/// The drift's values are used as they are: they must already be secret-masked (the diff does
/// that), so nothing secret reaches a policy, a `print` or an error message.
pub fn policy_input(drift: &Drift, ctx: &RunContext) -> Value {
    let mut doc = input_without_objects(drift, ctx);
    if let Value::Object(m) = &mut doc {
        m.insert("desired".into(), object_doc(drift.desired_object.as_ref()));
        m.insert("live".into(), object_doc(drift.live_object.as_ref()));
    }
    doc
}

/// The input document with `desired` and `live` left `null`: the engine converts the whole
/// objects straight from the drift ([`to_rego`]), without cloning them first.
pub(crate) fn input_without_objects(drift: &Drift, ctx: &RunContext) -> Value {
    let id = &drift.resource.id;
    let desired = drift.desired_object.as_ref();
    let live = drift.live_object.as_ref();
    // Labels, annotations and tags describe the object as it is now: live, or desired when the
    // object is missing.
    let current = live.or(desired);

    let changes: Vec<Value> = drift
        .changes
        .iter()
        .map(|c| {
            let parts = typed_parts(&c.path, live, desired);
            let mut nodes = Vec::new();
            if let Value::Array(segs) = &parts {
                introduced(
                    &c.path,
                    segs,
                    &c.live,
                    Some(&c.desired),
                    &mut Vec::new(),
                    &mut nodes,
                );
            }
            json!({
                "path": c.path,
                "parts": parts,
                "op": c.op,
                "desired": c.desired,
                "live": c.live,
                "masked": c.masked,
                "attribution": c.attribution,
                "introduced": nodes,
            })
        })
        .collect();

    let (labels, annotations, tags) = match id {
        ResourceId::Kubernetes { .. } => (
            metadata_map(current, "labels"),
            metadata_map(current, "annotations"),
            Value::Object(Map::new()),
        ),
        _ => (
            Value::Object(Map::new()),
            Value::Object(Map::new()),
            tag_map(current),
        ),
    };

    let related = ctx.related.get(&drift.target).cloned().unwrap_or_default();

    json!({
        "schema_version": INPUT_SCHEMA_VERSION,
        "target": drift.target,
        "provider": id.provider(),
        "resource": resource_doc(drift),
        "kind": drift.kind,
        "changes": changes,
        "desired": Value::Null,
        "live": Value::Null,
        "labels": labels,
        "annotations": annotations,
        "tags": tags,
        "provenance": drift.provenance,
        "related": related,
        "context": {
            "mode": ctx.mode,
            "time": ctx.time,
            "command": ctx.command,
        },
    })
}

/// Every node of a change's live value that its desired value does not hold at the same place
/// (`change.introduced`, docs/policy.md): the change's value itself, and each object member
/// and array item below it, recursively, as `{path, segs, value, desired, root}`. A node equal
/// to desired is left out with everything below it.
fn introduced(
    pointer: &str,
    parts: &[Value],
    live: &Value,
    desired: Option<&Value>,
    rel: &mut Vec<Value>,
    out: &mut Vec<Value>,
) {
    if desired == Some(live) {
        return;
    }
    let mut segs = parts.to_vec();
    segs.extend(rel.iter().cloned());
    out.push(json!({
        "path": pointer,
        "segs": segs,
        "value": live,
        "desired": desired.map_or_else(Vec::new, |d| vec![d.clone()]),
        "root": rel.is_empty(),
    }));
    match live {
        Value::Object(m) => {
            for (k, v) in m {
                rel.push(Value::String(k.clone()));
                introduced(pointer, parts, v, desired.and_then(|d| d.get(k)), rel, out);
                rel.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                rel.push(Value::from(i));
                introduced(pointer, parts, v, desired.and_then(|d| d.get(i)), rel, out);
                rel.pop();
            }
        }
        _ => {}
    }
}

/// A whole object for the input, without `metadata.managedFields`: field ownership is already in
/// each change's `attribution`, and the list is the bulk of a live Kubernetes object.
fn object_doc(obj: Option<&Value>) -> Value {
    let Some(Value::Object(obj)) = obj else {
        return obj.cloned().unwrap_or(Value::Null);
    };
    let mut out = Map::with_capacity(obj.len());
    for (k, v) in obj {
        let v = match (k.as_str(), v) {
            ("metadata", Value::Object(meta)) => Value::Object(
                meta.iter()
                    .filter(|(mk, _)| mk.as_str() != "managedFields")
                    .map(|(mk, mv)| (mk.clone(), mv.clone()))
                    .collect(),
            ),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    Value::Object(out)
}

/// Object keys already converted for regorus, shared across the drifts of one classification so
/// that `metadata`, `spec`, `containers`... are allocated once.
#[derive(Debug, Default)]
pub(crate) struct KeyCache(std::collections::HashMap<String, regorus::Rc<str>>);

impl KeyCache {
    fn key(&mut self, k: &str) -> regorus::Value {
        if let Some(rc) = self.0.get(k) {
            return regorus::Value::String(rc.clone());
        }
        let rc: regorus::Rc<str> = regorus::Rc::from(k);
        if self.0.len() < 65_536 {
            self.0.insert(k.to_string(), rc.clone());
        }
        regorus::Value::String(rc)
    }
}

/// Converts a JSON value to a regorus value directly (no serde round trip). With
/// `skip_managed_fields`, `metadata.managedFields` at the top level is left out, as in
/// [`object_doc`].
pub(crate) fn to_rego(v: &Value, keys: &mut KeyCache, skip_managed_fields: bool) -> regorus::Value {
    match v {
        Value::Null => regorus::Value::Null,
        Value::Bool(b) => regorus::Value::from(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else {
                regorus::Value::from(n.as_f64().unwrap_or_default())
            }
        }
        Value::String(s) => regorus::Value::from(s.as_str()),
        Value::Array(items) => regorus::Value::from(
            items
                .iter()
                .map(|i| to_rego(i, keys, false))
                .collect::<Vec<_>>(),
        ),
        Value::Object(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let value = if skip_managed_fields && k == "metadata" {
                    match v {
                        Value::Object(meta) => {
                            let mut o = BTreeMap::new();
                            for (mk, mv) in meta.iter().filter(|(mk, _)| *mk != "managedFields") {
                                o.insert(keys.key(mk), to_rego(mv, keys, false));
                            }
                            regorus::Value::from(o)
                        }
                        other => to_rego(other, keys, false),
                    }
                } else {
                    to_rego(v, keys, false)
                };
                out.insert(keys.key(k), value);
            }
            regorus::Value::from(out)
        }
    }
}

/// The input document as regorus evaluates it: the same as [`policy_input`], built without
/// cloning the drift's objects.
pub(crate) fn rego_input(drift: &Drift, ctx: &RunContext, keys: &mut KeyCache) -> regorus::Value {
    let doc = input_without_objects(drift, ctx);
    let Value::Object(m) = &doc else {
        return to_rego(&doc, keys, false);
    };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let value = match (k.as_str(), v) {
            ("desired", Value::Null) => drift
                .desired_object
                .as_ref()
                .map_or(regorus::Value::Null, |o| to_rego(o, keys, true)),
            ("live", Value::Null) => drift
                .live_object
                .as_ref()
                .map_or(regorus::Value::Null, |o| to_rego(o, keys, true)),
            _ => to_rego(v, keys, false),
        };
        out.insert(keys.key(k), value);
    }
    regorus::Value::from(out)
}

/// `input.resource`: the identity fields of the provider, plus `key`, `display`, `type`,
/// `fingerprint` and, for Kubernetes, `ref` (`Kind/namespace/name`).
fn resource_doc(drift: &Drift) -> Value {
    let id = &drift.resource.id;
    let mut doc = match serde_json::to_value(id) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    doc.remove("provider");
    if let ResourceId::Kubernetes {
        kind,
        namespace,
        name,
        ..
    } = id
    {
        // Keep the shape stable: cluster-scoped objects have an empty namespace, not none.
        doc.entry("namespace")
            .or_insert_with(|| Value::String(String::new()));
        doc.insert(
            "ref".into(),
            Value::String(format!(
                "{kind}/{}/{name}",
                namespace.as_deref().unwrap_or_default()
            )),
        );
    }
    doc.insert("key".into(), Value::String(id.key()));
    doc.insert(
        "display".into(),
        Value::String(drift.resource.display.clone()),
    );
    doc.insert("type".into(), Value::String(id.type_name()));
    doc.insert(
        "fingerprint".into(),
        Value::String(drift.fingerprint.clone()),
    );
    Value::Object(doc)
}

/// The decoded segments of a JSON pointer, typed like the paths Rego's `walk` yields: array
/// indices are numbers, object keys strings. Whether a segment indexes an array is read from the
/// live object (or desired, where live lacks the path); with neither, all-digit segments are
/// taken as indices.
pub(crate) fn typed_parts(pointer: &str, live: Option<&Value>, desired: Option<&Value>) -> Value {
    let mut out = Vec::new();
    let mut l = live;
    let mut d = desired;
    for raw in pointer.split('/').skip(1) {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        let index = seg.parse::<usize>().ok().filter(|_| match (l, d) {
            (None, None) => true,
            _ => l.is_some_and(Value::is_array) || d.is_some_and(Value::is_array),
        });
        match index {
            Some(i) => {
                l = l.and_then(|v| v.get(i));
                d = d.and_then(|v| v.get(i));
                out.push(Value::from(i));
            }
            None => {
                l = l.and_then(|v| v.get(&seg));
                d = d.and_then(|v| v.get(&seg));
                out.push(Value::String(seg));
            }
        }
    }
    Value::Array(out)
}

fn metadata_map(obj: Option<&Value>, field: &str) -> Value {
    obj.and_then(|o| o.get("metadata"))
        .and_then(|m| m.get(field))
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// Tags as one map: Terraform's `tags` map, or EC2's `Tags: [{Key, Value}]` list.
fn tag_map(obj: Option<&Value>) -> Value {
    let Some(obj) = obj else {
        return Value::Object(Map::new());
    };
    if let Some(m) = obj.get("tags").filter(|v| v.is_object()) {
        return m.clone();
    }
    let mut out = Map::new();
    for list in ["Tags", "tags"] {
        if let Some(items) = obj.get(list).and_then(Value::as_array) {
            for t in items {
                if let (Some(k), Some(v)) = (t.get("Key").and_then(Value::as_str), t.get("Value")) {
                    out.insert(k.to_string(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ChangeOp, DriftKind, FieldChange, fingerprint};

    fn deployment_drift() -> Drift {
        let id = ResourceId::Kubernetes {
            cluster: "demo".into(),
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
        };
        let live = json!({
            "metadata": {"name": "web", "labels": {"tier": "web"}, "managedFields": [{"manager": "x"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "x:2"}]}}}
        });
        Drift {
            fingerprint: fingerprint("demo", &id),
            target: "demo".into(),
            resource: id.into(),
            kind: DriftKind::Modified,
            changes: vec![FieldChange {
                path: "/spec/template/spec/containers/0/image".into(),
                op: ChangeOp::Changed,
                desired: json!("x:1"),
                live: json!("x:2"),
                masked: false,
                attribution: None,
                class: None,
            }],
            provenance: None,
            verdict: None,
            action: None,
            desired_object: None,
            live_object: Some(live),
        }
    }

    #[test]
    fn input_has_schema_fields_and_typed_parts() {
        let mut ctx = RunContext {
            mode: Mode::Autocorrect,
            time: "2026-11-22T03:15:00Z".into(),
            command: "reconcile".into(),
            ..RunContext::default()
        };
        ctx.related.insert(
            "demo".into(),
            Related::from_objects([&json!({
                "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}
            })]),
        );
        let input = policy_input(&deployment_drift(), &ctx);
        assert_eq!(input["schema_version"], "1");
        assert_eq!(input["provider"], "kubernetes");
        assert_eq!(input["kind"], "Modified");
        assert_eq!(input["resource"]["ref"], "Deployment/shop/web");
        assert_eq!(input["resource"]["type"], "Deployment");
        assert_eq!(input["labels"]["tier"], "web");
        assert_eq!(input["desired"], Value::Null);
        assert!(input["live"]["metadata"].get("managedFields").is_none());
        assert_eq!(input["context"]["mode"], "autocorrect");
        assert_eq!(input["related"]["hpa_targets"][0], "Deployment/shop/web");
        assert_eq!(
            input["changes"][0]["parts"],
            json!(["spec", "template", "spec", "containers", 0, "image"])
        );
    }

    #[test]
    fn direct_conversion_matches_serde() {
        let ctx = RunContext::default();
        let mut d = deployment_drift();
        d.desired_object =
            Some(json!({"a": [1, -2, 2.5, null, true, "x"], "metadata": {"managedFields": []}}));
        let mut keys = KeyCache::default();
        let direct = rego_input(&d, &ctx, &mut keys);
        let via_serde: regorus::Value = serde_json::from_value(policy_input(&d, &ctx)).unwrap();
        assert_eq!(direct, via_serde);
    }

    #[test]
    fn introduced_lists_what_live_adds() {
        let mut out = Vec::new();
        introduced(
            "/c/0",
            &[json!("c"), json!(0)],
            &json!({"name": "web", "image": "b", "ports": [1, 2]}),
            Some(&json!({"name": "web", "image": "a", "ports": [1]})),
            &mut Vec::new(),
            &mut out,
        );
        let segs: Vec<&Value> = out.iter().map(|n| &n["segs"]).collect();
        assert_eq!(
            segs,
            vec![
                &json!(["c", 0]),
                &json!(["c", 0, "image"]),
                &json!(["c", 0, "ports"]),
                &json!(["c", 0, "ports", 1])
            ]
        );
        assert_eq!(out[1]["desired"], json!(["a"]));
        assert_eq!(out[3]["desired"], json!([]));
        assert_eq!(out[0]["root"], json!(true));
    }

    #[test]
    fn typed_parts_reads_arrays_from_objects() {
        let obj = json!({"metadata": {"labels": {"0": "x"}}, "list": [{"a": 1}]});
        assert_eq!(
            typed_parts("/metadata/labels/0", Some(&obj), None),
            json!(["metadata", "labels", "0"])
        );
        assert_eq!(
            typed_parts("/list/0/a", None, Some(&obj)),
            json!(["list", 0, "a"])
        );
        assert_eq!(typed_parts("/a~1b/c~0d", None, None), json!(["a/b", "c~d"]));
        assert_eq!(typed_parts("", None, None), json!([]));
    }

    #[test]
    fn ec2_tag_lists_become_maps() {
        let obj = json!({"Tags": [{"Key": "Name", "Value": "web"}]});
        assert_eq!(tag_map(Some(&obj)), json!({"Name": "web"}));
        assert_eq!(
            tag_map(Some(&json!({"tags": {"a": "b"}}))),
            json!({"a": "b"})
        );
    }
}
