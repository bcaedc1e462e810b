//! The policy input document, schema v1: one per drift, the same shape for every provider, so one
//! rule can reason across Kubernetes, Terraform and EC2. docs/policy.md documents every field with
//! a full example; bump [`INPUT_SCHEMA_VERSION`] on any incompatible change.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use rustc_hash::FxHashMap;

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

/// Builds the policy input document (schema v1, docs/policy.md) for one drift, as JSON.
///
/// The drift's values are used as they are: they must already be secret-masked (the diff does
/// that), so nothing secret reaches a policy, a `print` or an error message. This is the document
/// classification evaluates ([`InputBuilder`]), turned into JSON: object keys come out sorted.
pub fn policy_input(drift: &Drift, ctx: &RunContext) -> Value {
    let doc = InputBuilder::new(ctx).input(drift);
    // A document built from JSON values holds no set and no undefined value, the only values
    // without a JSON form, so this cannot fail.
    serde_json::to_value(&doc).unwrap_or(Value::Null)
}

type Rego = regorus::Value;

/// Builds policy input documents straight as regorus values, for one run: the parts every drift
/// of the run shares (`input.context`, each target's `input.related`, object keys) are built
/// once and shared by reference count, and each value of a drift is converted once even where
/// the document holds it twice (a change's `live` and its `introduced` nodes, an object's labels
/// and `input.labels`).
pub(crate) struct InputBuilder<'c> {
    ctx: &'c RunContext,
    keys: KeyCache,
    context: Option<Rego>,
    related: FxHashMap<String, Rego>,
}

impl<'c> InputBuilder<'c> {
    pub(crate) fn new(ctx: &'c RunContext) -> InputBuilder<'c> {
        InputBuilder {
            ctx,
            keys: KeyCache::default(),
            context: None,
            related: FxHashMap::default(),
        }
    }

    /// The input document of one drift.
    pub(crate) fn input(&mut self, drift: &Drift) -> Rego {
        let id = &drift.resource.id;
        let desired = drift
            .desired_object
            .as_ref()
            .map_or(Rego::Null, |o| to_rego(o, &mut self.keys, true));
        // Live shares every subtree it has in common with desired: converted once, held twice.
        let live = drift.live_object.as_ref().map_or(Rego::Null, |o| {
            let like = drift.desired_object.as_ref().map(|d| (d, &desired));
            self.convert_like(o, like, true).0
        });
        // Labels, annotations and tags describe the object as it is now: live, or desired when
        // the object is missing.
        let (current, current_r) = match &drift.live_object {
            Some(l) => (Some(l), &live),
            None => (drift.desired_object.as_ref(), &desired),
        };
        let (labels, annotations, tags) = match id {
            ResourceId::Kubernetes { .. } => (
                metadata_map(current_r, "labels"),
                metadata_map(current_r, "annotations"),
                Rego::new_object(),
            ),
            _ => (
                Rego::new_object(),
                Rego::new_object(),
                to_rego(&tag_map(current), &mut self.keys, false),
            ),
        };
        let changes: Vec<Rego> = drift
            .changes
            .iter()
            .map(|c| self.change(c, drift))
            .collect();
        let resource = to_rego(&resource_doc(drift), &mut self.keys, false);
        let kind = to_rego(&json!(drift.kind), &mut self.keys, false);
        let provenance = to_rego(&json!(drift.provenance), &mut self.keys, false);
        let related = self.related(&drift.target);
        let context = self.context();
        self.object([
            ("schema_version", Rego::from(INPUT_SCHEMA_VERSION)),
            ("target", Rego::from(drift.target.as_str())),
            ("provider", Rego::from(id.provider())),
            ("resource", resource),
            ("kind", kind),
            ("changes", Rego::from(changes)),
            ("desired", desired),
            ("live", live),
            ("labels", labels),
            ("annotations", annotations),
            ("tags", tags),
            ("provenance", provenance),
            ("related", related),
            ("context", context),
        ])
    }

    /// One entry of `input.changes`.
    fn change(&mut self, c: &crate::model::FieldChange, drift: &Drift) -> Rego {
        let live_obj = drift.live_object.as_ref();
        let desired_obj = drift.desired_object.as_ref();
        let parts: Vec<Rego> = match typed_parts(&c.path, live_obj, desired_obj) {
            Value::Array(items) => items
                .iter()
                .map(|p| to_rego(p, &mut self.keys, false))
                .collect(),
            _ => Vec::new(),
        };
        let path = Rego::from(c.path.as_str());
        let desired = to_rego(&c.desired, &mut self.keys, false);
        let mut nodes = Vec::new();
        let live = self.introduced(
            &Node {
                path: &path,
                parts: &parts,
            },
            &c.live,
            Some((&c.desired, &desired)),
            &mut Vec::new(),
            &mut nodes,
        );
        let op = to_rego(&json!(c.op), &mut self.keys, false);
        let attribution = to_rego(&json!(c.attribution), &mut self.keys, false);
        self.object([
            ("path", path),
            ("parts", Rego::from(parts)),
            ("op", op),
            ("desired", desired),
            ("live", live),
            ("masked", Rego::from(c.masked)),
            ("attribution", attribution),
            ("introduced", Rego::from(nodes)),
        ])
    }

    /// Every node of a change's live value that its desired value does not hold at the same place
    /// (`change.introduced`, docs/policy.md): the change's value itself, and each object member
    /// and array item below it, recursively, as `{path, segs, value, desired, root}`, in
    /// document order. A node equal to desired is left out with everything below it.
    ///
    /// Returns `live` converted; each node's `value` shares it. `desired` is the desired value at
    /// the same place, as JSON and converted.
    fn introduced(
        &mut self,
        node: &Node<'_>,
        live: &Value,
        desired: Option<(&Value, &Rego)>,
        rel: &mut Vec<Rego>,
        out: &mut Vec<Rego>,
    ) -> Rego {
        if let Some((d, d_r)) = desired
            && d == live
        {
            return d_r.clone();
        }
        // The node goes before the nodes below it; its value is known only after them.
        let slot = out.len();
        out.push(Rego::Null);
        let converted = match live {
            Value::Object(m) => {
                let mut members = Vec::with_capacity(m.len());
                for (k, v) in m {
                    let key = self.keys.key(k);
                    let below = desired.and_then(|(d, d_r)| {
                        let d = d.get(k)?;
                        let Rego::Object(o) = d_r else { return None };
                        let d_r = o.get(&key)?;
                        Some((d, d_r))
                    });
                    rel.push(key.clone());
                    let v = self.introduced(node, v, below, rel, out);
                    rel.pop();
                    members.push((key, v));
                }
                Rego::from(members.into_iter().collect::<BTreeMap<_, _>>())
            }
            Value::Array(items) => {
                let mut converted = Vec::with_capacity(items.len());
                for (i, v) in items.iter().enumerate() {
                    let below = desired.and_then(|(d, d_r)| {
                        let d = d.get(i)?;
                        let Rego::Array(a) = d_r else { return None };
                        let d_r = a.get(i)?;
                        Some((d, d_r))
                    });
                    rel.push(Rego::from(i));
                    let v = self.introduced(node, v, below, rel, out);
                    rel.pop();
                    converted.push(v);
                }
                Rego::from(converted)
            }
            scalar => to_rego(scalar, &mut self.keys, false),
        };
        let mut segs = Vec::with_capacity(node.parts.len() + rel.len());
        segs.extend(node.parts.iter().cloned());
        segs.extend(rel.iter().cloned());
        let desired = match desired {
            Some((_, d_r)) => vec![d_r.clone()],
            None => Vec::new(),
        };
        out[slot] = self.object([
            ("path", node.path.clone()),
            ("segs", Rego::from(segs)),
            ("value", converted.clone()),
            ("desired", Rego::from(desired)),
            ("root", Rego::from(rel.is_empty())),
        ]);
        converted
    }

    /// Converts `v` like [`to_rego`], reusing the converted `like` value (JSON and regorus form)
    /// for every subtree of `v` that equals `like`'s at the same place, so the live object shares
    /// what it has in common with the desired one instead of holding a second copy. Returns the
    /// value and whether it is `like`'s own. `top` marks an object's root, where
    /// `metadata.managedFields` is left out as [`to_rego`] does.
    fn convert_like(
        &mut self,
        v: &Value,
        like: Option<(&Value, &Rego)>,
        top: bool,
    ) -> (Rego, bool) {
        let Some((like_json, like_rego)) = like else {
            return (to_rego(v, &mut self.keys, top), false);
        };
        match (v, like_json, like_rego) {
            (Value::Object(m), Value::Object(lm), Rego::Object(lo)) => {
                // At the root the comparison would have to skip managedFields: never reuse the
                // root itself, only what is below it.
                let mut same = !top && m.len() == lm.len();
                let mut members = Vec::with_capacity(m.len());
                for (k, child) in m {
                    let key = self.keys.key(k);
                    let below = lm.get(k).zip(lo.get(&key));
                    let converted = match (top && k == "metadata", child, below) {
                        (true, Value::Object(meta), below) => {
                            let (lmeta, lmeta_r) = match below {
                                Some((Value::Object(j), Rego::Object(r))) => (Some(j), Some(r)),
                                _ => (None, None),
                            };
                            let mut fields = Vec::with_capacity(meta.len());
                            for (mk, mv) in meta.iter().filter(|(mk, _)| *mk != "managedFields") {
                                let mkey = self.keys.key(mk);
                                let like = lmeta
                                    .and_then(|j| j.get(mk))
                                    .zip(lmeta_r.and_then(|r| r.get(&mkey)));
                                fields.push((mkey, self.convert_like(mv, like, false).0));
                            }
                            Rego::from(fields.into_iter().collect::<BTreeMap<_, _>>())
                        }
                        (true, _, _) => to_rego(child, &mut self.keys, false),
                        (false, _, below) => {
                            let (c, eq) = self.convert_like(child, below, false);
                            same &= eq;
                            c
                        }
                    };
                    members.push((key, converted));
                }
                if same {
                    return (like_rego.clone(), true);
                }
                (
                    Rego::from(members.into_iter().collect::<BTreeMap<_, _>>()),
                    false,
                )
            }
            (Value::Array(items), Value::Array(litems), Rego::Array(la)) => {
                let mut same = items.len() == litems.len();
                let mut converted = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let below = litems.get(i).zip(la.get(i));
                    let (c, eq) = self.convert_like(item, below, false);
                    same &= eq;
                    converted.push(c);
                }
                if same {
                    return (like_rego.clone(), true);
                }
                (Rego::from(converted), false)
            }
            (Value::Object(_) | Value::Array(_), _, _) => (to_rego(v, &mut self.keys, top), false),
            (scalar, like_scalar, _) if scalar == like_scalar => (like_rego.clone(), true),
            (scalar, _, _) => (to_rego(scalar, &mut self.keys, false), false),
        }
    }

    fn related(&mut self, target: &str) -> Rego {
        if let Some(r) = self.related.get(target) {
            return r.clone();
        }
        let doc = json!(self.ctx.related.get(target).cloned().unwrap_or_default());
        let r = to_rego(&doc, &mut self.keys, false);
        self.related.insert(target.to_string(), r.clone());
        r
    }

    fn context(&mut self) -> Rego {
        if let Some(c) = &self.context {
            return c.clone();
        }
        let doc = json!({
            "mode": self.ctx.mode,
            "time": self.ctx.time,
            "command": self.ctx.command,
        });
        let c = to_rego(&doc, &mut self.keys, false);
        self.context = Some(c.clone());
        c
    }

    fn object<const N: usize>(&mut self, members: [(&str, Rego); N]) -> Rego {
        let map: BTreeMap<Rego, Rego> = members
            .into_iter()
            .map(|(k, v)| (self.keys.key(k), v))
            .collect();
        Rego::from(map)
    }
}

/// Where a change's nodes sit: its pointer and its typed path segments.
struct Node<'a> {
    path: &'a Rego,
    parts: &'a [Rego],
}

/// `metadata.<field>` of a converted object when it is a map; an empty map otherwise.
fn metadata_map(obj: &Rego, field: &str) -> Rego {
    // Matched by hand: regorus' `as_object` builds an error (with a backtrace when
    // RUST_BACKTRACE is set) for every value that is not an object.
    let member = |v: &Rego, key: &str| match v {
        Rego::Object(o) => o.get(&Rego::from(key)).cloned(),
        _ => None,
    };
    match member(obj, "metadata").and_then(|m| member(&m, field)) {
        Some(map @ Rego::Object(_)) => map,
        _ => Rego::new_object(),
    }
}

/// Object keys already converted for regorus, shared across the drifts of one classification so
/// that `metadata`, `spec`, `containers`... are allocated once.
#[derive(Debug, Default)]
pub(crate) struct KeyCache(FxHashMap<Box<str>, regorus::Rc<str>>);

impl KeyCache {
    fn key(&mut self, k: &str) -> regorus::Value {
        if let Some(rc) = self.0.get(k) {
            return regorus::Value::String(rc.clone());
        }
        let rc: regorus::Rc<str> = regorus::Rc::from(k);
        if self.0.len() < 65_536 {
            self.0.insert(Box::from(k), rc.clone());
        }
        regorus::Value::String(rc)
    }
}

/// Converts a JSON value to a regorus value directly (no serde round trip). With
/// `skip_managed_fields`, `metadata.managedFields` at the top level is left out: field ownership
/// is already in each change's `attribution`, and the list is the bulk of a live Kubernetes
/// object.
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
            let map: BTreeMap<regorus::Value, regorus::Value> = m
                .iter()
                .map(|(k, v)| {
                    let value = match (skip_managed_fields && k == "metadata", v) {
                        (true, Value::Object(meta)) => regorus::Value::from(
                            meta.iter()
                                .filter(|(mk, _)| *mk != "managedFields")
                                .map(|(mk, mv)| (keys.key(mk), to_rego(mv, keys, false)))
                                .collect::<BTreeMap<_, _>>(),
                        ),
                        _ => to_rego(v, keys, false),
                    };
                    (keys.key(k), value)
                })
                .collect();
            regorus::Value::from(map)
        }
    }
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
        let v = json!({"a": [1, -2, 2.5, null, true, "x"], "b": {"c": {}}, "metadata": {"managedFields": []}});
        let direct = to_rego(&v, &mut KeyCache::default(), false);
        let via_serde: regorus::Value = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(direct, via_serde);
        let skipped = to_rego(&v, &mut KeyCache::default(), true);
        let expected: regorus::Value = serde_json::from_value(
            json!({"a": [1, -2, 2.5, null, true, "x"], "b": {"c": {}}, "metadata": {}}),
        )
        .unwrap();
        assert_eq!(skipped, expected);
    }

    #[test]
    fn the_builder_shares_one_document_per_run_and_matches_json() {
        let ctx = RunContext::default();
        let mut d = deployment_drift();
        d.desired_object = Some(json!({"metadata": {"name": "web", "labels": {"tier": "api"}}}));
        let mut builder = InputBuilder::new(&ctx);
        let first = builder.input(&d);
        let second = builder.input(&d);
        assert_eq!(first, second);
        let json: regorus::Value = serde_json::from_value(policy_input(&d, &ctx)).unwrap();
        assert_eq!(first, json);
        // Labels come from live, the object as it is now.
        assert_eq!(policy_input(&d, &ctx)["labels"], json!({"tier": "web"}));
        d.live_object = None;
        assert_eq!(policy_input(&d, &ctx)["labels"], json!({"tier": "api"}));
    }

    fn introduced_of(live: Value, desired: Value) -> Vec<Value> {
        let mut d = deployment_drift();
        d.live_object = Some(json!({"c": [live.clone()]}));
        d.changes[0].path = "/c/0".into();
        d.changes[0].live = live;
        d.changes[0].desired = desired;
        let input = policy_input(&d, &RunContext::default());
        input["changes"][0]["introduced"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn introduced_lists_what_live_adds() {
        let out = introduced_of(
            json!({"name": "web", "image": "b", "ports": [1, 2]}),
            json!({"name": "web", "image": "a", "ports": [1]}),
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
        assert_eq!(
            out[0]["value"],
            json!({"name": "web", "image": "b", "ports": [1, 2]})
        );
        assert_eq!(
            out[0]["desired"],
            json!([{"name": "web", "image": "a", "ports": [1]}])
        );
        assert_eq!(out[1]["desired"], json!(["a"]));
        assert_eq!(out[2]["value"], json!([1, 2]));
        assert_eq!(out[3]["desired"], json!([]));
        assert_eq!(out[3]["value"], json!(2));
        assert_eq!(out[0]["root"], json!(true));
        assert_eq!(out[1]["root"], json!(false));
        assert!(out.iter().all(|n| n["path"] == "/c/0"));
    }

    #[test]
    fn introduced_keeps_types_apart() {
        // An object where desired had an array (and the reverse) holds nothing of desired below.
        let out = introduced_of(json!({"0": "x"}), json!(["x"]));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1]["desired"], json!([]));
        let out = introduced_of(json!(["x", "y"]), json!({"0": "x"}));
        assert_eq!(out.len(), 3);
        assert_eq!(out[1]["desired"], json!([]));
        // Equal to desired: nothing introduced.
        assert!(introduced_of(json!({"a": 1}), json!({"a": 1})).is_empty());
        // A scalar where desired had nothing.
        let out = introduced_of(json!(true), Value::Null);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0]["desired"], json!([null]));
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

    #[test]
    fn live_shares_what_it_has_in_common_with_desired() {
        let desired = json!({
            "metadata": {"name": "web", "labels": {"tier": "api", "app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "y:1"}
            ]}}}
        });
        let live = json!({
            "metadata": {"name": "web", "labels": {"tier": "web", "app": "web"},
                         "managedFields": [{"manager": "x"}], "uid": "u-1"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "a", "image": "x:2", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "y:1"}
            ]}}},
            "status": {"replicas": 3}
        });
        let ctx = RunContext::default();
        let mut builder = InputBuilder::new(&ctx);
        let desired_r = to_rego(&desired, &mut builder.keys, true);
        let (live_r, same) = builder.convert_like(&live, Some((&desired, &desired_r)), true);
        assert!(!same);
        // The same value as a conversion of its own (managedFields left out)...
        assert_eq!(live_r, to_rego(&live, &mut KeyCache::default(), true));
        // ...holding desired's subtrees wherever live equals desired.
        let at = |v: &Rego, path: &[&str]| {
            let mut v = v.clone();
            for p in path {
                v = match (&v, p.parse::<usize>()) {
                    (Rego::Array(a), Ok(i)) => a.get(i).cloned().unwrap(),
                    (Rego::Object(o), _) => o.get(&Rego::from(*p)).cloned().unwrap(),
                    _ => panic!("no {p}"),
                };
            }
            v
        };
        let shared = |path: &[&str]| match (at(&live_r, path), at(&desired_r, path)) {
            (Rego::Object(a), Rego::Object(b)) => regorus::Rc::ptr_eq(&a, &b),
            (Rego::Array(a), Rego::Array(b)) => regorus::Rc::ptr_eq(&a, &b),
            (Rego::String(a), Rego::String(b)) => regorus::Rc::ptr_eq(&a, &b),
            _ => false,
        };
        assert!(shared(&["spec", "template", "spec", "containers", "1"]));
        assert!(shared(&[
            "spec",
            "template",
            "spec",
            "containers",
            "0",
            "ports"
        ]));
        assert!(shared(&["metadata", "labels", "app"]));
        assert!(!shared(&["spec", "template", "spec", "containers", "0"]));
        assert!(!shared(&["metadata", "labels"]));
        // Without desired (an unmanaged object) it is a plain conversion.
        let (alone, same) = builder.convert_like(&live, None, true);
        assert!(!same);
        assert_eq!(alone, live_r);
    }
}
