//! Structural diff of desired and live objects: every drift, and no false drift.
//!
//! This is the `diff` stage of the pipeline (ARCHITECTURE.md): it takes desired objects (from Git) and
//! live objects (from the cluster or a snapshot), already identified by [`ResourceId`], and
//! produces [`Drift`]s. It never does IO and never fails: malformed managedFields or unusable
//! ignore rules degrade to "no information", not to an error.
//!
//! The rules (docs/diff.md; the real API server's responses in `fixtures/golden/` are the truth):
//!
//! 1. Only fields desired declares are compared ([`structural`]). A field desired lacks is drift
//!    only when live's managedFields show the driftwarden Apply manager still owns it: Git
//!    removed it ([`ChangeOp::ExtraLive`], via [`managed`]). Strict mode also reports live
//!    fields owned by any other manager that Git never declared.
//! 2. Lists with merge keys are matched by key ([`keys`]); undeclared live items are not drift.
//! 3. Values are normalized before comparing ([`normalize`]): quantities in built-in kinds,
//!    int vs string, empty vs absent, Secret `stringData` → `data`.
//! 4. Ignore rules drop and count known noise; server bookkeeping is never compared ([`ignore`]).
//! 5. Each change is attributed to the manager owning the field live ([`managed`]).
//! 6. Secret values are masked before they leave this module ([`mask`]).

pub mod ignore;
pub mod keys;
pub mod managed;
pub mod mask;
pub mod normalize;
pub mod structural;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

pub use ignore::{IgnoreRuleError, validate_rule};
pub use mask::{is_secret, is_secret_object, mask_object};

use crate::model::{
    ChangeOp, Drift, DriftKind, FIELD_MANAGER, FieldChange, Provenance, ResourceId, fingerprint,
};
use ignore::{CompiledRule, PointerMatch};
use managed::{ManagedEntry, Ownership, pointer};
use structural::{Context, RawChange};

/// A desired object, as loaded from Git.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    pub id: ResourceId,
    pub object: Value,
    pub provenance: Option<Provenance>,
}

/// A live object, as read from the cluster (or a snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct LiveObject {
    pub id: ResourceId,
    pub object: Value,
}

/// A configured ignore rule (like Argo CD's `ignoreDifferences`). A rule needs at least one
/// pointer or manager ([`validate_rule`]); with both, a field must match a pointer *and* be
/// owned by one of the managers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreRule {
    /// Shown in the report's ignored-field counts.
    pub name: String,
    /// Kinds the rule applies to (case-insensitive); empty = any kind.
    pub kinds: Vec<String>,
    /// Glob on `metadata.name`.
    pub name_glob: Option<String>,
    /// Glob on `metadata.namespace`; never matches cluster-scoped objects.
    pub namespace_glob: Option<String>,
    /// JSON pointers into the live object; a segment `*` matches any one segment (list index or
    /// key); a pointer matches the field and everything under it.
    pub pointers: Vec<String>,
    /// Ignore fields whose current live owner (managedFields) is one of these managers.
    pub managers: Vec<String>,
}

/// How driftwarden marks live objects as its own, for Unmanaged detection. Each is `key` or
/// `key=value`; a live object carrying either counts as ours.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tracking {
    pub label: Option<String>,
    pub annotation: Option<String>,
}

impl Tracking {
    /// Whether a live object carries the tracking label or annotation.
    pub fn matches(&self, obj: &Value) -> bool {
        let has = |field: &str, spec: &Option<String>| {
            let Some(spec) = spec.as_deref() else {
                return false;
            };
            let (key, want) = match spec.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (spec, None),
            };
            obj.get("metadata")
                .and_then(|m| m.get(field))
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .is_some_and(|v| want.is_none_or(|w| w == v))
        };
        has("labels", &self.label) || has("annotations", &self.annotation)
    }
}

/// Options for one target's diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffOptions {
    /// The target's name (part of every fingerprint).
    pub target: String,
    pub ignore: Vec<IgnoreRule>,
    /// The field manager driftwarden applies with; default [`FIELD_MANAGER`].
    pub field_manager: String,
    /// None = no Unmanaged detection.
    pub tracking: Option<Tracking>,
    /// Namespaces searched for Unmanaged objects; empty = every namespace seen live (and
    /// cluster-scoped objects).
    pub unmanaged_namespaces: Vec<String>,
    /// Also report live fields nobody declared in Git but some other manager owns (a hand-added
    /// annotation). Off by default, like Argo CD's and Flux's diffs.
    pub strict: bool,
}

impl DiffOptions {
    pub fn new(target: &str) -> Self {
        DiffOptions {
            target: target.to_string(),
            ignore: Vec::new(),
            field_manager: FIELD_MANAGER.to_string(),
            tracking: None,
            unmanaged_namespaces: Vec::new(),
            strict: false,
        }
    }
}

/// What one target's diff found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiffOutcome {
    /// Drifts sorted by resource key, then kind.
    pub drifts: Vec<Drift>,
    /// Desired objects compared plus Unmanaged ones found.
    pub checked: usize,
    /// `checked` minus drifted.
    pub in_sync: usize,
    /// Fields dropped by each ignore rule, by rule name.
    pub ignored: BTreeMap<String, usize>,
}

/// One object's differences.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ObjectDiff {
    /// In walk order (desired's field order), then three-way and strict findings. Secret values
    /// are already masked.
    pub changes: Vec<FieldChange>,
    /// Fields dropped by each ignore rule, by rule name.
    pub ignored: BTreeMap<String, usize>,
}

/// Identity facts the diff needs, for any provider.
struct Facts {
    kind: String,
    group: String,
    name: String,
    namespace: Option<String>,
    kubernetes: bool,
}

fn facts(id: &ResourceId) -> Facts {
    match id {
        ResourceId::Kubernetes {
            group,
            kind,
            namespace,
            name,
            ..
        } => Facts {
            kind: kind.clone(),
            group: group.clone(),
            name: name.clone(),
            namespace: namespace.clone(),
            kubernetes: true,
        },
        ResourceId::Terraform { address, .. } => Facts {
            kind: id.type_name(),
            group: String::new(),
            name: address.clone(),
            namespace: None,
            kubernetes: false,
        },
        ResourceId::Ec2 { id: ec2_id, .. } => Facts {
            kind: id.type_name(),
            group: String::new(),
            name: ec2_id.clone(),
            namespace: None,
            kubernetes: false,
        },
    }
}

/// Masks by id as well as by content, so a Secret missing its `apiVersion` is still masked.
fn mask_for(id: &ResourceId, obj: &Value) -> Value {
    if is_secret(id) {
        mask::mask_secret(obj)
    } else {
        mask_object(obj)
    }
}

/// Compares one desired object with its live counterpart. Neither object is modified.
pub fn diff_object(
    id: &ResourceId,
    desired: &Value,
    live: &Value,
    opts: &DiffOptions,
) -> ObjectDiff {
    let rules = ignore::compile(&opts.ignore);
    diff_object_with(id, desired, live, opts, &rules)
}

fn diff_object_with(
    id: &ResourceId,
    desired: &Value,
    live: &Value,
    opts: &DiffOptions,
    rules: &[CompiledRule],
) -> ObjectDiff {
    let f = facts(id);
    let secret = is_secret(id);
    let desired = if secret {
        normalize::secret_string_data_into_data(desired)
    } else {
        desired.clone()
    };
    let ownership = if f.kubernetes {
        Ownership::from_live(live, secret)
    } else {
        Ownership::default()
    };
    let ctx = Context {
        kind: &f.kind,
        kubernetes: f.kubernetes,
        builtin: f.kubernetes && normalize::is_builtin_group(&f.group),
        secret,
        ownership: &ownership,
    };

    let mut raw = structural::compare(&desired, live, &ctx);
    raw.extend(undeclared_changes(
        &ownership,
        &desired,
        live,
        opts,
        f.kubernetes,
    ));
    dedupe(&mut raw);

    let selected: Vec<&CompiledRule> = rules
        .iter()
        .filter(|r| r.selects(&f.kind, &f.name, f.namespace.as_deref()))
        .collect();
    let mut ignored = BTreeMap::new();
    let kept: Vec<RawChange> = raw
        .into_iter()
        .filter_map(|c| apply_ignores(c, &selected, &ctx, opts, &mut ignored))
        .collect();

    let changes = kept
        .into_iter()
        .map(|c| {
            let path = pointer(&c.path);
            let attribution = ownership
                .owner_of(&path, &opts.field_manager)
                .map(ManagedEntry::attribution);
            let mut fc = FieldChange {
                path,
                op: c.op,
                desired: c.desired,
                live: c.live,
                masked: false,
                attribution,
                class: None,
            };
            if secret {
                mask::mask_change(&mut fc, &c.path);
            }
            fc
        })
        .collect();
    ObjectDiff { changes, ignored }
}

/// Control-plane components: what they own live (`deployment.kubernetes.io/revision`, a
/// scheduler's bookkeeping) is never declared in Git, so strict mode does not report it.
const SYSTEM_MANAGERS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "cloud-controller-manager",
];

/// Three-way and strict findings: live fields desired does not declare, owned by driftwarden's
/// Apply entry (Git removed them) or, in strict mode, by any other manager except status
/// writers and the control plane ([`SYSTEM_MANAGERS`]).
fn undeclared_changes(
    ownership: &Ownership,
    desired: &Value,
    live: &Value,
    opts: &DiffOptions,
    kubernetes: bool,
) -> Vec<RawChange> {
    let mut out = Vec::new();
    for entry in ownership.entries() {
        let ours = entry.is_apply_by(&opts.field_manager);
        let strict = opts.strict
            && entry.subresource.as_deref() != Some("status")
            && !SYSTEM_MANAGERS.contains(&entry.manager.as_str());
        if !(ours || strict) {
            continue;
        }
        for (path, value) in managed::undeclared_owned(&entry.fields, Some(desired), Some(live)) {
            if kubernetes && ignore::is_builtin_ignored(&path) {
                continue;
            }
            out.push(RawChange {
                path,
                op: ChangeOp::ExtraLive,
                desired: Value::Null,
                live: value,
            });
        }
    }
    out
}

/// Keeps the first change per path, and drops changes inside another change's path.
fn dedupe(raw: &mut Vec<RawChange>) {
    let mut seen = HashSet::new();
    raw.retain(|c| seen.insert(c.path.clone()));
    let paths: Vec<Vec<String>> = raw.iter().map(|c| c.path.clone()).collect();
    raw.retain(|c| {
        !paths
            .iter()
            .any(|p| p.len() < c.path.len() && c.path.starts_with(p))
    });
}

/// Applies the selected rules to one change: `None` when it is dropped. Counts every dropped
/// field (a whole change, or a field pruned out of a coarse change) under the rule's name.
fn apply_ignores(
    mut c: RawChange,
    rules: &[&CompiledRule],
    ctx: &Context<'_>,
    opts: &DiffOptions,
    ignored: &mut BTreeMap<String, usize>,
) -> Option<RawChange> {
    let ptr = pointer(&c.path);
    let owner = ctx
        .ownership
        .owner_of(&ptr, &opts.field_manager)
        .map(|e| e.manager.as_str());
    for rule in rules {
        if !rule.owner_matches(owner) {
            continue;
        }
        if rule.pointers().is_empty() {
            *ignored.entry(rule.name.clone()).or_default() += 1;
            return None;
        }
        for pattern in rule.pointers() {
            match ignore::match_pattern(pattern, &c.path) {
                PointerMatch::Covers => {
                    *ignored.entry(rule.name.clone()).or_default() += 1;
                    return None;
                }
                PointerMatch::Below(rel) => {
                    let pruned =
                        ignore::prune(&mut c.desired, &rel) + ignore::prune(&mut c.live, &rel);
                    if pruned == 0 {
                        continue;
                    }
                    *ignored.entry(rule.name.clone()).or_default() += 1;
                    let moot = match c.op {
                        ChangeOp::MissingLive => normalize::is_effectively_empty(Some(&c.desired)),
                        ChangeOp::ExtraLive => normalize::is_effectively_empty(Some(&c.live)),
                        ChangeOp::Changed => {
                            structural::equivalent(ctx, &c.desired, &c.live, &c.path)
                        }
                    };
                    if moot {
                        return None;
                    }
                }
                PointerMatch::No => {}
            }
        }
    }
    Some(c)
}

fn drift(
    opts: &DiffOptions,
    id: &ResourceId,
    kind: DriftKind,
    changes: Vec<FieldChange>,
    provenance: Option<Provenance>,
    desired: Option<&Value>,
    live: Option<&Value>,
) -> Drift {
    Drift {
        fingerprint: fingerprint(&opts.target, id),
        target: opts.target.clone(),
        resource: id.clone().into(),
        kind,
        changes,
        provenance,
        verdict: None,
        action: None,
        desired_object: desired.map(|d| mask_for(id, d)),
        live_object: live.map(|l| mask_for(id, l)),
    }
}

/// A live object created and owned by a controller (a ReplicaSet of a Deployment, a Job of a
/// CronJob) inherits labels; it is never Unmanaged in its own right.
fn is_controlled(obj: &Value) -> bool {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
        })
}

fn in_scope(opts: &DiffOptions, id: &ResourceId) -> bool {
    if opts.unmanaged_namespaces.is_empty() {
        return true;
    }
    match id {
        ResourceId::Kubernetes {
            namespace: Some(ns),
            ..
        } => opts.unmanaged_namespaces.iter().any(|n| n == ns),
        _ => false,
    }
}

/// Diffs one target: matches desired to live by [`ResourceId::key`], reports Modified, Missing
/// and (with [`DiffOptions::tracking`]) Unmanaged drifts, sorted by resource key.
pub fn diff_target(
    desired: &[DesiredObject],
    live: &[LiveObject],
    opts: &DiffOptions,
) -> DiffOutcome {
    let mut t = TargetDiff::new(opts);
    for d in desired {
        t.desired(d.clone());
    }
    for l in live {
        t.live(&l.id, &l.object);
    }
    t.finish()
}

/// One target's diff, fed one live object at a time ([`diff_target`] over a stream): each live
/// object is compared with its desired counterpart as it arrives and only what drifts is kept,
/// so memory grows with the desired set and the drift, not with the cluster. Desired objects
/// may be added while live ones arrive, as long as no live object of the same key came before.
///
/// Desired objects are kept as JSON text until a live object (or the end) needs them: a few
/// hundred bytes each instead of a value tree of kilobytes.
///
/// The outcome is [`diff_target`]'s for the same objects in the same order: when a key arrives
/// twice live, the last copy is the one compared; the first decides whether it is Unmanaged.
pub struct TargetDiff<'o> {
    opts: &'o DiffOptions,
    rules: Vec<CompiledRule>,
    desired: Vec<Stored>,
    /// Resource key → index in `desired` (the first object of a key).
    index: HashMap<String, usize>,
    /// What the live copy of each matched desired object found, by index in `desired`.
    matched: HashMap<usize, Matched>,
    /// Keys seen live that desired does not have (the first copy decides Unmanaged).
    seen_unmatched: HashSet<String>,
    unmanaged: Vec<Drift>,
    ignored: BTreeMap<String, usize>,
}

/// A desired object kept compact until a live object needs it: its JSON text (a few hundred
/// bytes where the value tree takes kilobytes), decoded for its comparison and its drift.
struct Stored {
    id: ResourceId,
    object: StoredValue,
    provenance: Option<Provenance>,
}

/// A JSON value kept compact: its text, decoded when needed (a few hundred bytes where the value
/// tree takes kilobytes).
pub(crate) enum StoredValue {
    Text(Box<str>),
    /// Nested deeper than serde_json reads back (its recursion limit is 128): kept as is.
    Value(Value),
}

impl StoredValue {
    pub(crate) fn new(v: Value) -> StoredValue {
        if depth(&v) <= MAX_TEXT_DEPTH {
            StoredValue::Text(v.to_string().into_boxed_str())
        } else {
            StoredValue::Value(v)
        }
    }

    /// The value as it was stored.
    pub(crate) fn get(&self) -> Value {
        match self {
            // Text written by `Value::to_string` within serde_json's nesting limit reads back
            // to the same value; `Null` is unreachable.
            StoredValue::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
            StoredValue::Value(v) => v.clone(),
        }
    }

    /// The value as it was stored, consumed.
    pub(crate) fn into_value(self) -> Value {
        match self {
            StoredValue::Value(v) => v,
            text => text.get(),
        }
    }
}

/// Nesting kept as text; serde_json reads back up to 128 levels.
const MAX_TEXT_DEPTH: usize = 100;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

impl Stored {
    fn new(d: DesiredObject) -> Stored {
        Stored {
            id: d.id,
            object: StoredValue::new(d.object),
            provenance: d.provenance,
        }
    }

    /// The object as it was added.
    fn object(&self) -> Value {
        self.object.get()
    }
}

/// What one matched desired object's live copy found.
#[derive(Default)]
struct Matched {
    /// Boxed: most matched objects are in sync.
    drift: Option<Box<Drift>>,
    ignored: BTreeMap<String, usize>,
}

/// What a live object turned out to be, for a caller that keeps what drift needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveFound {
    /// Compared with its desired object: no drift.
    InSync,
    /// Compared with its desired object: Modified.
    Modified,
    /// Not in desired, tracked and in scope: Unmanaged.
    Unmanaged,
    /// Not in desired and not Unmanaged.
    Other,
}

impl<'o> TargetDiff<'o> {
    pub fn new(opts: &'o DiffOptions) -> Self {
        TargetDiff {
            opts,
            rules: ignore::compile(&opts.ignore),
            desired: Vec::new(),
            index: HashMap::new(),
            matched: HashMap::new(),
            seen_unmatched: HashSet::new(),
            unmanaged: Vec::new(),
            ignored: BTreeMap::new(),
        }
    }

    /// Adds a desired object. A second object of the same key is not compared (logged).
    pub fn desired(&mut self, d: DesiredObject) {
        let key = d.id.key();
        if self.index.contains_key(&key) {
            tracing::warn!(resource = %key, "duplicate desired object; only the first is compared");
            return;
        }
        self.index.insert(key, self.desired.len());
        self.desired.push(Stored::new(d));
    }

    /// Where the desired object of a resource key was declared, if desired has that key.
    pub fn desired_provenance(&self, key: &str) -> Option<Option<&Provenance>> {
        self.index
            .get(key)
            .and_then(|i| self.desired.get(*i))
            .map(|d| d.provenance.as_ref())
    }

    /// Compares one live object (or, without a desired counterpart, checks it for Unmanaged).
    pub fn live(&mut self, id: &ResourceId, object: &Value) -> LiveFound {
        let key = id.key();
        if let Some(&i) = self.index.get(&key) {
            let Some(d) = self.desired.get(i) else {
                // The index only holds positions of `desired`.
                return LiveFound::Other;
            };
            let desired = d.object();
            let od = diff_object_with(&d.id, &desired, object, self.opts, &self.rules);
            let drift = (!od.changes.is_empty()).then(|| {
                Box::new(drift(
                    self.opts,
                    &d.id,
                    DriftKind::Modified,
                    od.changes,
                    d.provenance.clone(),
                    Some(&desired),
                    Some(object),
                ))
            });
            let found = if drift.is_some() {
                LiveFound::Modified
            } else {
                LiveFound::InSync
            };
            // A later copy of the same key replaces the earlier one's findings.
            if let Some(old) = self.matched.insert(
                i,
                Matched {
                    drift,
                    ignored: od.ignored,
                },
            ) {
                for (rule, n) in old.ignored {
                    if let Some(c) = self.ignored.get_mut(&rule) {
                        *c = c.saturating_sub(n);
                    }
                }
            }
            if let Some(m) = self.matched.get(&i) {
                for (rule, n) in &m.ignored {
                    *self.ignored.entry(rule.clone()).or_default() += n;
                }
            }
            return found;
        }
        let Some(tracking) = &self.opts.tracking else {
            return LiveFound::Other;
        };
        if !self.seen_unmatched.insert(key)
            || !in_scope(self.opts, id)
            || !tracking.matches(object)
            || is_controlled(object)
        {
            return LiveFound::Other;
        }
        self.unmanaged.push(drift(
            self.opts,
            id,
            DriftKind::Unmanaged,
            Vec::new(),
            None,
            None,
            Some(object),
        ));
        LiveFound::Unmanaged
    }

    /// The drifts: Modified as found, Missing for every desired object no live object matched,
    /// Unmanaged; sorted by resource key.
    pub fn finish(self) -> DiffOutcome {
        self.finish_with_drifted_desired().0
    }

    /// [`TargetDiff::finish`], and the desired object of every drifted resource (Modified or
    /// Missing) as it was added, by resource key.
    pub fn finish_with_drifted_desired(self) -> (DiffOutcome, HashMap<String, Value>) {
        let mut out = DiffOutcome {
            ignored: self.ignored.into_iter().filter(|(_, n)| *n > 0).collect(),
            ..DiffOutcome::default()
        };
        let mut drifted = HashMap::new();
        let mut matched = self.matched;
        for (i, d) in self.desired.iter().enumerate() {
            out.checked += 1;
            match matched.remove(&i) {
                Some(m) => {
                    if let Some(found) = m.drift {
                        drifted.insert(d.id.key(), d.object());
                        out.drifts.push(*found);
                    }
                }
                None => {
                    let object = d.object();
                    out.drifts.push(drift(
                        self.opts,
                        &d.id,
                        DriftKind::Missing,
                        Vec::new(),
                        d.provenance.clone(),
                        Some(&object),
                        None,
                    ));
                    drifted.insert(d.id.key(), object);
                }
            }
        }
        out.checked += self.unmanaged.len();
        out.drifts.extend(self.unmanaged);
        out.drifts
            .sort_by_cached_key(|d| (d.resource.id.key(), d.kind));
        out.in_sync = out.checked.saturating_sub(out.drifts.len());
        (out, drifted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MASK;
    use serde_json::json;

    fn id(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ResourceId {
        ResourceId::Kubernetes {
            cluster: "test".into(),
            group: group.into(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
    }

    fn paths(d: &ObjectDiff) -> Vec<&str> {
        d.changes.iter().map(|c| c.path.as_str()).collect()
    }

    fn deployment_live() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                "labels": {"app": "web", "tier": "web"},
                "annotations": {"team/owner": "a", "hand/added": "x"},
                "managedFields": [
                    {"manager": "driftwarden", "operation": "Apply", "time": "2026-11-22T02:58:51Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app": {}}, "f:annotations": {"f:team/owner": {}}},
                        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}}},
                    {"manager": "kubectl-label", "operation": "Update", "time": "2026-11-22T02:59:00Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:tier": {}}}}},
                    {"manager": "kubectl-annotate", "operation": "Update", "time": "2026-11-22T02:59:01Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {"f:hand/added": {}}}}}
                ]
            },
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1", "imagePullPolicy": "IfNotPresent"}]}}},
            "status": {"replicas": 3}
        })
    }

    #[test]
    fn three_way_removed_field_is_extra_live() {
        // Git dropped `replicas` and the `team/owner` annotation; driftwarden still owns both.
        let desired = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"}},
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
        });
        let d = diff_object(
            &id("apps", "Deployment", Some("shop"), "web"),
            &desired,
            &deployment_live(),
            &DiffOptions::new("t"),
        );
        assert_eq!(
            paths(&d),
            [
                "/metadata/labels/tier",
                "/metadata/annotations/team~1owner",
                "/spec/replicas"
            ]
        );
        assert_eq!(d.changes[0].op, ChangeOp::Changed);
        assert_eq!(
            d.changes[0]
                .attribution
                .as_ref()
                .map(|a| a.manager.as_str()),
            Some("kubectl-label")
        );
        assert_eq!(d.changes[2].op, ChangeOp::ExtraLive);
        assert_eq!(d.changes[2].live, json!(3));
        assert_eq!(
            d.changes[2]
                .attribution
                .as_ref()
                .map(|a| a.manager.as_str()),
            Some("driftwarden")
        );
    }

    #[test]
    fn strict_reports_hand_added_fields() {
        let desired = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "web"},
                         "annotations": {"team/owner": "a"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}
        });
        let i = id("apps", "Deployment", Some("shop"), "web");
        let mut opts = DiffOptions::new("t");
        assert!(
            diff_object(&i, &desired, &deployment_live(), &opts)
                .changes
                .is_empty()
        );
        opts.strict = true;
        let mut live = deployment_live();
        live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("4");
        if let Some(entries) = live["metadata"]["managedFields"].as_array_mut() {
            entries.push(json!({
                "manager": "kube-controller-manager", "operation": "Update",
                "time": "2026-11-22T03:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:annotations": {
                    ".": {}, "f:deployment.kubernetes.io/revision": {}}}}
            }));
        }
        let d = diff_object(&i, &desired, &live, &opts);
        assert_eq!(paths(&d), ["/metadata/annotations/hand~1added"]);
        assert_eq!(d.changes[0].op, ChangeOp::ExtraLive);
        assert_eq!(
            d.changes[0]
                .attribution
                .as_ref()
                .map(|a| a.manager.as_str()),
            Some("kubectl-annotate")
        );
    }

    #[test]
    fn ignore_rules_drop_and_count() {
        let desired = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "frontend"},
                         "annotations": {"team/owner": "a"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}
        });
        let i = id("apps", "Deployment", Some("shop"), "web");
        let mut opts = DiffOptions::new("t");
        opts.ignore = vec![
            IgnoreRule {
                name: "images".into(),
                kinds: vec!["Deployment".into()],
                pointers: vec!["/spec/template/spec/containers/*/image".into()],
                ..IgnoreRule::default()
            },
            IgnoreRule {
                name: "labellers".into(),
                managers: vec!["kubectl-label".into()],
                ..IgnoreRule::default()
            },
            IgnoreRule {
                name: "other-namespace".into(),
                namespace_glob: Some("prod-*".into()),
                pointers: vec!["/spec/replicas".into()],
                ..IgnoreRule::default()
            },
        ];
        let d = diff_object(&i, &desired, &deployment_live(), &opts);
        assert_eq!(paths(&d), ["/spec/replicas"]);
        assert_eq!(
            d.ignored,
            BTreeMap::from([("images".to_string(), 1), ("labellers".to_string(), 1)])
        );
    }

    #[test]
    fn ignore_pointer_inside_a_missing_item_prunes_it() {
        let desired = json!({
            "metadata": {"labels": {"app": "web"}, "annotations": {"team/owner": "a"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1"},
                {"name": "new", "image": "busybox"}
            ]}}}
        });
        let i = id("apps", "Deployment", Some("shop"), "web");
        let mut opts = DiffOptions::new("t");
        opts.ignore = vec![IgnoreRule {
            name: "images".into(),
            pointers: vec!["/spec/template/spec/containers/*/image".into()],
            ..IgnoreRule::default()
        }];
        let d = diff_object(&i, &desired, &deployment_live(), &opts);
        assert_eq!(paths(&d), ["/spec/template/spec/containers/1"]);
        assert_eq!(d.changes[0].desired, json!({"name": "new"}));
        assert_eq!(d.ignored.get("images"), Some(&1));
    }

    #[test]
    fn secrets_compare_string_data_and_mask_everything() {
        let desired = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "namespace": "shop"},
            "data": {"API_KEY": "ZXhhbXBsZS1hcGkta2V5LTAwMDE="},
            "stringData": {"DB_USER": "shop", "DB_PASSWORD": "canary-pw-123"}
        });
        let live = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "s", "namespace": "shop"},
            "data": {"API_KEY": "ZXhhbXBsZS1hcGkta2V5LTAwMDI=", "DB_USER": "c2hvcA==",
                     "DB_PASSWORD": "Y2FuYXJ5LXB3LTQ1Ng=="}
        });
        let i = id("", "Secret", Some("shop"), "s");
        let d = diff_object(&i, &desired, &live, &DiffOptions::new("t"));
        assert_eq!(paths(&d), ["/data/API_KEY", "/data/DB_PASSWORD"]);
        for c in &d.changes {
            assert!(c.masked);
            assert_eq!((&c.desired, &c.live), (&json!(MASK), &json!(MASK)));
        }
        let text = serde_json::to_string(&d.changes).unwrap();
        for canary in ["canary-pw", "Y2FuYXJ5", "ZXhhbXBsZS1hcGk", "c2hvcA"] {
            assert!(!text.contains(canary), "{canary} leaked");
        }
    }

    #[test]
    fn target_reports_missing_modified_and_unmanaged() {
        let dep = id("apps", "Deployment", Some("shop"), "web");
        let gone = id("", "ConfigMap", Some("shop"), "gone");
        let stray = id("", "ConfigMap", Some("shop"), "stray");
        let elsewhere = id("", "ConfigMap", Some("kube-system"), "stray");
        let child = id("apps", "ReplicaSet", Some("shop"), "web-abc");
        let tracked = |extra: Value| {
            let mut o =
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "driftwarden"}}});
            if let (Some(m), Some(e)) = (o["metadata"].as_object_mut(), extra.as_object()) {
                m.extend(e.clone());
            }
            o
        };
        let desired = vec![
            DesiredObject {
                id: dep.clone(),
                object: json!({"metadata": {"name": "web"}, "spec": {"replicas": 2}}),
                provenance: None,
            },
            DesiredObject {
                id: gone.clone(),
                object: json!({"metadata": {"name": "gone"}, "data": {"a": "b"}}),
                provenance: None,
            },
        ];
        let live = vec![
            LiveObject {
                id: dep.clone(),
                object: deployment_live(),
            },
            LiveObject {
                id: stray.clone(),
                object: tracked(json!({})),
            },
            LiveObject {
                id: elsewhere.clone(),
                object: tracked(json!({})),
            },
            LiveObject {
                id: child.clone(),
                object: tracked(
                    json!({"ownerReferences": [{"kind": "Deployment", "controller": true}]}),
                ),
            },
            LiveObject {
                id: id("", "ConfigMap", Some("shop"), "untracked"),
                object: json!({"metadata": {"labels": {"x": "y"}}}),
            },
        ];
        let mut opts = DiffOptions::new("prod");
        let plain = diff_target(&desired, &live, &opts);
        assert_eq!(
            (plain.checked, plain.in_sync, plain.drifts.len()),
            (2, 0, 2)
        );

        opts.tracking = Some(Tracking {
            label: Some("app.kubernetes.io/managed-by=driftwarden".into()),
            annotation: None,
        });
        opts.unmanaged_namespaces = vec!["shop".into()];
        let out = diff_target(&desired, &live, &opts);
        let summary: Vec<(String, DriftKind)> = out
            .drifts
            .iter()
            .map(|d| (d.resource.id.key(), d.kind))
            .collect();
        assert_eq!(
            summary,
            [
                (dep.key(), DriftKind::Modified),
                (gone.key(), DriftKind::Missing),
                (stray.key(), DriftKind::Unmanaged),
            ]
        );
        assert_eq!((out.checked, out.in_sync), (3, 0));
        assert_eq!(out.drifts[0].fingerprint, fingerprint("prod", &dep));
        assert_eq!(out.drifts[0].changes[0].path, "/spec/replicas");
        assert!(out.drifts[1].changes.is_empty());
        assert!(out.drifts[1].live_object.is_none());
        assert!(out.drifts[2].desired_object.is_none());

        opts.unmanaged_namespaces.clear();
        let all = diff_target(&desired, &live, &opts);
        assert_eq!(all.drifts.len(), 4, "kube-system/stray is in scope now");
    }

    #[test]
    fn desired_kept_compact_reads_back_the_same() {
        // Shallow objects are kept as text, one nested past serde_json's limit as a value.
        let mut deep = json!("leaf");
        for _ in 0..130 {
            deep = json!({ "n": deep });
        }
        let i = id("", "ConfigMap", Some("shop"), "c");
        for data in [json!({"n": 1.5, "big": u64::MAX, "s": "x"}), deep] {
            let object = json!({"metadata": {"name": "c"}, "data": data});
            let desired = vec![DesiredObject {
                id: i.clone(),
                object: object.clone(),
                provenance: None,
            }];
            let live = vec![LiveObject {
                id: i.clone(),
                object: object.clone(),
            }];
            let out = diff_target(&desired, &live, &DiffOptions::new("t"));
            assert!(out.drifts.is_empty(), "{:?}", out.drifts);
            let out = diff_target(&desired, &[], &DiffOptions::new("t"));
            assert_eq!(out.drifts[0].desired_object.as_ref(), Some(&object));
        }
    }

    #[test]
    fn tracking_forms() {
        let obj =
            json!({"metadata": {"labels": {"owner": "dw"}, "annotations": {"dw/tracked": "yes"}}});
        let t = |label: Option<&str>, annotation: Option<&str>| Tracking {
            label: label.map(str::to_string),
            annotation: annotation.map(str::to_string),
        };
        assert!(t(Some("owner"), None).matches(&obj));
        assert!(t(Some("owner=dw"), None).matches(&obj));
        assert!(!t(Some("owner=other"), None).matches(&obj));
        assert!(t(Some("nope"), Some("dw/tracked=yes")).matches(&obj));
        assert!(!t(None, None).matches(&obj));
    }

    #[test]
    fn drift_objects_are_masked() {
        let i = id("", "Secret", Some("shop"), "s");
        let desired = vec![DesiredObject {
            id: i.clone(),
            // No apiVersion: still a Secret by its id.
            object: json!({"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"PW": "canary-xyz"}}),
            provenance: None,
        }];
        let out = diff_target(&desired, &[], &DiffOptions::new("t"));
        let obj = out.drifts[0].desired_object.clone().unwrap();
        assert_eq!(obj["stringData"]["PW"], json!(MASK));
        assert!(!obj.to_string().contains("canary"));
    }

    #[test]
    fn non_kubernetes_ids_diff_generically() {
        let i = ResourceId::Ec2 {
            account: "1".into(),
            region: "eu-central-1".into(),
            resource_type: "aws_instance".into(),
            id: "i-1".into(),
        };
        let d = diff_object(
            &i,
            &json!({"instance_type": "t3.micro", "status": "running", "tags": {"Name": "a"}}),
            &json!({"instance_type": "t3.large", "status": "stopped", "tags": {"Name": "a", "x": "y"}}),
            &DiffOptions::new("t"),
        );
        assert_eq!(paths(&d), ["/instance_type", "/status"]);
    }
}
