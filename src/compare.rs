//! One Kubernetes target's compare stage, fed live objects as they arrive.
//!
//! The desired set is indexed by resource key first; then each live object (from a snapshot
//! file as it is parsed, or a LIST as it is returned) gets its identity, is compared with its
//! desired counterpart ([`TargetDiff`]) and is dropped unless it drifted. What is kept:
//! the drifts (each with its whole desired and live object, masked, for the policy input), the
//! raw live and desired objects of drifted resources (the audit log's digests and the
//! correctors' applies) and the policies' facts about other objects ([`Related`]). Whatever
//! desired object no live object matched is Missing at the end. Memory follows the desired set
//! and the drift, not the cluster.
//!
//! Identities need each kind's scope (namespaced or not, [`Scopes`]). Built-in kinds and kinds
//! with a CRD in desired are known before any live object; a desired object of another kind
//! waits until the first live object of its kind (or its CRD) arrives, like [`Scopes::learn`]
//! decides it, and is namespaced if none does. Pure: no IO.

use std::collections::HashMap;

use serde_json::Value;

use crate::desired::{DesiredSet, RawObject};
use crate::diff::{DesiredObject, DiffOptions, DiffOutcome, LiveFound, TargetDiff};
use crate::k8s::{self, Scopes, split_api_version, str_at};
use crate::model::Provenance;
use crate::policy::Related;

/// Why a target cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompareError {
    /// Two desired objects name the same resource.
    #[error("target {target}: {id} is declared twice ({first} and {second})")]
    Duplicate {
        target: String,
        id: String,
        first: String,
        second: String,
    },
}

/// Where a target's objects are and how they are compared.
#[derive(Debug, Clone, Copy)]
pub struct Where<'a> {
    pub target: &'a str,
    pub cluster: &'a str,
    /// The namespace of namespaced objects that name none.
    pub default_namespace: &'a str,
}

/// A target being compared.
pub struct Compare<'a> {
    at: Where<'a>,
    source: String,
    commit: Option<String>,
    scopes: Scopes,
    diff: TargetDiff<'a>,
    /// Desired objects of kinds whose scope is not known yet, by (group, kind).
    deferred: HashMap<(String, String), Vec<RawObject>>,
    /// The first two desired objects that named the same resource.
    duplicate: Option<CompareError>,
    related: Related,
    /// Raw live objects of drifted resources, by resource key.
    drifted_live: HashMap<String, Value>,
    desired_count: usize,
    live_count: usize,
}

/// What a finished compare found and kept.
#[derive(Debug, Default)]
pub struct Finished {
    pub outcome: DiffOutcome,
    /// Facts about the target's objects, desired and live, for the policies.
    pub related: Related,
    /// The raw live object of every drifted resource (secret values unmasked), by resource key.
    pub live: HashMap<String, Value>,
    /// The desired object of every drifted resource as Git has it, by resource key.
    pub desired: HashMap<String, Value>,
    /// Desired objects compared, live objects read.
    pub desired_count: usize,
    pub live_count: usize,
}

fn group_kind(v: &Value) -> (String, String) {
    let (group, _) = split_api_version(str_at(v, "/apiVersion"));
    (group, str_at(v, "/kind").to_string())
}

impl<'a> Compare<'a> {
    /// Indexes a desired set (its objects move in; [`DesiredSet::objects`] is left empty).
    pub fn new(at: Where<'a>, desired: &mut DesiredSet, opts: &'a DiffOptions) -> Self {
        let objects = std::mem::take(&mut desired.objects);
        let mut scopes = Scopes::default();
        scopes.learn(objects.iter().map(|o| &o.value), false);
        let mut c = Compare {
            at,
            source: desired.source.clone(),
            commit: desired.commit.clone(),
            scopes,
            diff: TargetDiff::new(opts),
            deferred: HashMap::new(),
            duplicate: None,
            related: Related::default(),
            drifted_live: HashMap::new(),
            desired_count: objects.len(),
            live_count: 0,
        };
        for raw in objects {
            c.related.add_object(&raw.value);
            let (group, kind) = group_kind(&raw.value);
            if c.scopes.knows(&group, &kind) {
                c.add_desired(raw);
            } else {
                c.deferred.entry((group, kind)).or_default().push(raw);
            }
        }
        c
    }

    fn add_desired(&mut self, raw: RawObject) {
        let id = k8s::resource_id(
            self.at.cluster,
            &raw.value,
            self.at.default_namespace,
            &self.scopes,
        );
        if let Some(first) = self.diff.desired_provenance(&id.key()) {
            if self.duplicate.is_none() {
                let first = first
                    .map(|p| format!("{}:{}", p.file, p.line))
                    .unwrap_or_default();
                self.duplicate = Some(CompareError::Duplicate {
                    target: self.at.target.to_string(),
                    id: id.display(),
                    first,
                    second: format!("{}:{}", raw.file, raw.line),
                });
            }
            return;
        }
        let provenance = Provenance {
            source: self.source.clone(),
            file: raw.file,
            line: raw.line,
            commit: self.commit.clone(),
        };
        self.diff.desired(DesiredObject {
            id,
            object: raw.value,
            provenance: Some(provenance),
        });
    }

    /// Desired objects of a kind whose scope just became known get their identity.
    fn settle(&mut self, group_kind: &(String, String)) {
        if self.deferred.is_empty() || !self.scopes.knows(&group_kind.0, &group_kind.1) {
            return;
        }
        if let Some(objects) = self.deferred.remove(group_kind) {
            for raw in objects {
                self.add_desired(raw);
            }
        }
    }

    /// Compares one live object; it is kept only if it drifted.
    pub fn live(&mut self, raw: RawObject) {
        self.live_count += 1;
        let value = raw.value;
        self.related.add_object(&value);
        self.scopes.learn([&value], true);
        if !self.deferred.is_empty() {
            let gk = group_kind(&value);
            if gk.1 == "CustomResourceDefinition" {
                let crd = (
                    str_at(&value, "/spec/group").to_string(),
                    str_at(&value, "/spec/names/kind").to_string(),
                );
                self.settle(&crd);
            }
            self.settle(&gk);
        }
        let id = k8s::resource_id(
            self.at.cluster,
            &value,
            self.at.default_namespace,
            &self.scopes,
        );
        match self.diff.live(&id, &value) {
            LiveFound::Modified | LiveFound::Unmanaged => {
                self.drifted_live.insert(id.key(), value);
            }
            // A later copy of a key replaces an earlier one.
            LiveFound::InSync => {
                self.drifted_live.remove(&id.key());
            }
            LiveFound::Other => {}
        }
    }

    /// Every live object has arrived: Missing for what none matched.
    pub fn finish(mut self) -> Result<Finished, CompareError> {
        // Kinds no live object showed: namespaced unless a CRD said otherwise.
        let deferred: Vec<RawObject> = std::mem::take(&mut self.deferred)
            .into_values()
            .flatten()
            .collect();
        let mut deferred = deferred;
        // In file order, as the desired set had them.
        deferred.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        for raw in deferred {
            self.add_desired(raw);
        }
        if let Some(e) = self.duplicate {
            return Err(e);
        }
        let (outcome, desired) = self.diff.finish_with_drifted_desired();
        Ok(Finished {
            outcome,
            related: self.related,
            live: self.drifted_live,
            desired,
            desired_count: self.desired_count,
            live_count: self.live_count,
        })
    }
}

/// [`Compare`] over objects already in memory.
pub fn compare_all(
    at: Where<'_>,
    desired: &DesiredSet,
    live: &[RawObject],
    opts: &DiffOptions,
) -> Result<Finished, CompareError> {
    let mut set = DesiredSet {
        objects: desired.objects.clone(),
        source: desired.source.clone(),
        commit: desired.commit.clone(),
    };
    let mut c = Compare::new(at, &mut set, opts);
    for o in live {
        c.live(o.clone());
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DriftKind;
    use serde_json::json;

    fn raw(file: &str, line: usize, value: Value) -> RawObject {
        RawObject {
            value,
            file: file.into(),
            line,
        }
    }

    fn at() -> Where<'static> {
        Where {
            target: "t",
            cluster: "c",
            default_namespace: "shop",
        }
    }

    #[test]
    fn a_kind_without_a_known_scope_waits_for_its_first_live_object() {
        // Widgets are cluster-scoped live: the desired one without a namespace matches.
        let desired = DesiredSet {
            objects: vec![
                raw(
                    "w.yaml",
                    1,
                    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}}),
                ),
                raw(
                    "w.yaml",
                    9,
                    json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}}),
                ),
            ],
            source: "dir".into(),
            commit: None,
        };
        let live = [raw(
            "live.json",
            0,
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 2}}),
        )];
        let opts = DiffOptions::new("t");
        let f = compare_all(at(), &desired, &live, &opts).unwrap();
        let got: Vec<(String, DriftKind)> = f
            .outcome
            .drifts
            .iter()
            .map(|d| (d.resource.id.key(), d.kind))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "kubernetes/c/example.com/Gadget/shop/g".to_string(),
                    DriftKind::Missing
                ),
                (
                    "kubernetes/c/example.com/Widget/_cluster/w".to_string(),
                    DriftKind::Modified
                ),
            ]
        );
        // Only drifted resources' raw objects are kept.
        assert_eq!(f.live.len(), 1);
        assert_eq!(f.desired.len(), 2);
        assert_eq!((f.desired_count, f.live_count), (2, 1));
    }

    #[test]
    fn duplicates_name_both_places() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let desired = DesiredSet {
            objects: vec![raw("a.yaml", 1, cm.clone()), raw("b.yaml", 4, cm)],
            source: "dir".into(),
            commit: None,
        };
        let e = compare_all(at(), &desired, &[], &DiffOptions::new("t")).unwrap_err();
        let CompareError::Duplicate { first, second, .. } = e;
        assert_eq!((first.as_str(), second.as_str()), ("a.yaml:1", "b.yaml:4"));
    }

    #[test]
    fn the_last_live_copy_of_a_key_is_compared() {
        let desired = DesiredSet {
            objects: vec![raw(
                "a.yaml",
                1,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}),
            )],
            source: "dir".into(),
            commit: None,
        };
        let drifted = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}, "data": {"k": "x"}});
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "shop"}, "data": {"k": "v"}});
        let opts = DiffOptions::new("t");
        let live = [raw("1.json", 0, drifted.clone()), raw("2.json", 0, same)];
        let f = compare_all(at(), &desired, &live, &opts).unwrap();
        assert!(f.outcome.drifts.is_empty() && f.live.is_empty());
        let live = [live[1].clone(), raw("3.json", 0, drifted)];
        let f = compare_all(at(), &desired, &live, &opts).unwrap();
        assert_eq!(f.outcome.drifts.len(), 1);
        assert_eq!(f.live.len(), 1);
    }
}
