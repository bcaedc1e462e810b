//! One Kubernetes target's compare stage, fed live objects as they arrive.
//!
//! Desired objects come in first, one at a time as their files are parsed
//! ([`Compare::desired`]), and are indexed by resource key, each kept compact; then each live
//! object (from a snapshot file as it is parsed, or a LIST as it is returned) gets its identity,
//! is compared with its desired counterpart ([`TargetDiff`]) and is dropped unless it drifted. What is kept:
//! the drifts (each with its whole desired and live object, masked, for the policy input), the
//! raw live and desired objects of drifted resources (the audit log's digests and the
//! correctors' applies) and the policies' facts about other objects ([`Related`]). Whatever
//! desired object no live object matched is Missing at the end. Memory follows the desired set
//! and the drift, not the cluster.
//!
//! Identities need each kind's scope (namespaced or not, [`Scopes`]). Built-in kinds and kinds
//! whose CRD came earlier in desired are known at once; a desired object of another kind waits
//! (kept compact too) until its CRD arrives later in desired, or the first live object of its
//! kind (or its CRD) arrives, like [`Scopes::learn`] decides it, and is namespaced if none does:
//! the same identities as if every desired CRD had been read first. Duplicates are reported as a
//! whole desired set in file order shows them. Pure: no IO.

use std::collections::HashMap;

use serde_json::Value;

use crate::desired::{DesiredSet, RawObject};
use crate::diff::{DesiredObject, DiffOptions, DiffOutcome, LiveFound, StoredValue, TargetDiff};
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
    deferred: HashMap<(String, String), Vec<Deferred>>,
    /// The duplicate to report, with the place in the desired stream of its second object.
    duplicate: Option<(usize, CompareError)>,
    /// A live object has arrived (or the compare finished): no desired object follows.
    desired_done: bool,
    related: Related,
    /// Raw live objects of drifted resources, by resource key.
    drifted_live: HashMap<String, Value>,
    desired_count: usize,
    live_count: usize,
}

/// A desired object waiting for its kind's scope, kept compact like an indexed one.
struct Deferred {
    /// Its place in the desired stream.
    seq: usize,
    file: String,
    line: usize,
    object: StoredValue,
}

impl Deferred {
    fn new(seq: usize, raw: RawObject) -> Deferred {
        Deferred {
            seq,
            file: raw.file,
            line: raw.line,
            object: StoredValue::new(raw.value),
        }
    }

    fn into_raw(self) -> (usize, RawObject) {
        let raw = RawObject {
            value: self.object.into_value(),
            file: self.file,
            line: self.line,
        };
        (self.seq, raw)
    }
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

/// The (group, kind) a CustomResourceDefinition defines, if `v` is one.
fn crd_defines(v: &Value) -> Option<(String, String)> {
    (str_at(v, "/kind") == "CustomResourceDefinition").then(|| {
        (
            str_at(v, "/spec/group").to_string(),
            str_at(v, "/spec/names/kind").to_string(),
        )
    })
}

impl<'a> Compare<'a> {
    /// A compare of a desired source (`source`, `commit`: its provenance) with no object yet:
    /// every desired object goes in through [`Compare::desired`], then every live one through
    /// [`Compare::live`].
    pub fn start(
        at: Where<'a>,
        source: String,
        commit: Option<String>,
        opts: &'a DiffOptions,
    ) -> Self {
        Compare {
            at,
            source,
            commit,
            scopes: Scopes::default(),
            diff: TargetDiff::new(opts),
            deferred: HashMap::new(),
            duplicate: None,
            desired_done: false,
            related: Related::default(),
            drifted_live: HashMap::new(),
            desired_count: 0,
            live_count: 0,
        }
    }

    /// Indexes a desired set (its objects move in; [`DesiredSet::objects`] is left empty).
    pub fn new(at: Where<'a>, desired: &mut DesiredSet, opts: &'a DiffOptions) -> Self {
        let mut c = Compare::start(at, desired.source.clone(), desired.commit.clone(), opts);
        for raw in std::mem::take(&mut desired.objects) {
            c.desired(raw);
        }
        c
    }

    /// Adds one desired object, in the desired set's order; every desired object comes before
    /// the first live one. An object whose kind's scope is known (built in, or a CRD in desired
    /// seen earlier) is indexed now and kept compact; one of another kind waits for its CRD
    /// later in desired, or the first live object of its kind, or the end, as if every desired
    /// CRD had been known from the start.
    pub fn desired(&mut self, raw: RawObject) {
        let seq = self.desired_count;
        self.desired_count += 1;
        self.related.add_object(&raw.value);
        self.scopes.learn([&raw.value], false);
        if !self.deferred.is_empty() {
            if let Some(crd) = crd_defines(&raw.value) {
                self.settle(&crd);
            }
        }
        let (group, kind) = group_kind(&raw.value);
        if self.scopes.knows(&group, &kind) {
            self.add_desired(seq, raw);
        } else {
            self.deferred
                .entry((group, kind))
                .or_default()
                .push(Deferred::new(seq, raw));
        }
    }

    fn add_desired(&mut self, seq: usize, raw: RawObject) {
        let id = k8s::resource_id(
            self.at.cluster,
            &raw.value,
            self.at.default_namespace,
            &self.scopes,
        );
        if let Some(first) = self.diff.desired_provenance(&id.key()) {
            // The duplicate reported is the first a whole desired set would show in its order:
            // while desired objects stream in, the one whose second object comes first (a kind
            // settled by a later CRD finds its duplicates late); once live objects arrive, the
            // first found.
            let replaces = match &self.duplicate {
                None => true,
                Some((earlier, _)) => !self.desired_done && seq < *earlier,
            };
            if replaces {
                let first = first
                    .map(|p| format!("{}:{}", p.file, p.line))
                    .unwrap_or_default();
                self.duplicate = Some((
                    seq,
                    CompareError::Duplicate {
                        target: self.at.target.to_string(),
                        id: id.display(),
                        first,
                        second: format!("{}:{}", raw.file, raw.line),
                    },
                ));
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

    /// Desired objects of a kind whose scope just became known get their identity, in the
    /// order they arrived.
    fn settle(&mut self, group_kind: &(String, String)) {
        if self.deferred.is_empty() || !self.scopes.knows(&group_kind.0, &group_kind.1) {
            return;
        }
        if let Some(objects) = self.deferred.remove(group_kind) {
            for d in objects {
                let (seq, raw) = d.into_raw();
                self.add_desired(seq, raw);
            }
        }
    }

    /// Compares one live object; it is kept only if it drifted.
    pub fn live(&mut self, raw: RawObject) {
        self.live_count += 1;
        self.desired_done = true;
        let value = raw.value;
        self.related.add_object(&value);
        self.scopes.learn([&value], true);
        if !self.deferred.is_empty() {
            if let Some(crd) = crd_defines(&value) {
                self.settle(&crd);
            }
            self.settle(&group_kind(&value));
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
        self.desired_done = true;
        // Kinds no live object showed: namespaced unless a CRD said otherwise.
        let mut deferred: Vec<Deferred> = std::mem::take(&mut self.deferred)
            .into_values()
            .flatten()
            .collect();
        // In file order, then as the desired set had them.
        deferred.sort_by(|a, b| (&a.file, a.line, a.seq).cmp(&(&b.file, b.line, b.seq)));
        for d in deferred {
            let (seq, raw) = d.into_raw();
            self.add_desired(seq, raw);
        }
        if let Some((_, e)) = self.duplicate {
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

    fn widget_crd(scope: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": scope, "names": {"kind": "Widget", "plural": "widgets"}}
        })
    }

    fn widget(name: &str, size: u64) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": size}})
    }

    fn drift_keys(f: &Finished) -> Vec<(String, DriftKind)> {
        f.outcome
            .drifts
            .iter()
            .map(|d| (d.resource.id.key(), d.kind))
            .collect()
    }

    #[test]
    fn a_custom_resource_streamed_before_its_crd_gets_the_crds_scope() {
        let opts = DiffOptions::new("t");
        // Cluster-scoped by its CRD, which comes later in desired: the Widget named without a
        // namespace is `_cluster`, and matches its live copy.
        let mut c = Compare::start(at(), "dir".into(), None, &opts);
        c.desired(raw("a-widget.yaml", 1, widget("w", 1)));
        c.desired(raw("b-widget.yaml", 1, widget("v", 1)));
        c.desired(raw("crd.yaml", 1, widget_crd("Cluster")));
        c.live(raw("live.json", 0, widget("w", 2)));
        let f = c.finish().unwrap();
        assert_eq!(
            drift_keys(&f),
            [
                (
                    "kubernetes/c/apiextensions.k8s.io/CustomResourceDefinition/_cluster/widgets.example.com".to_string(),
                    DriftKind::Missing
                ),
                (
                    "kubernetes/c/example.com/Widget/_cluster/v".to_string(),
                    DriftKind::Missing
                ),
                (
                    "kubernetes/c/example.com/Widget/_cluster/w".to_string(),
                    DriftKind::Modified
                ),
            ]
        );
        assert_eq!((f.desired_count, f.live_count), (3, 1));
        // A namespaced CRD later in desired: the Widget named without a namespace goes to the
        // default one.
        let mut c = Compare::start(at(), "dir".into(), None, &opts);
        c.desired(raw("a-widget.yaml", 1, widget("w", 1)));
        c.desired(raw("crd.yaml", 1, widget_crd("Namespaced")));
        let f = c.finish().unwrap();
        let keys: Vec<String> = drift_keys(&f).into_iter().map(|(k, _)| k).collect();
        assert!(
            keys.contains(&"kubernetes/c/example.com/Widget/shop/w".to_string()),
            "{keys:?}"
        );
    }

    #[test]
    fn a_duplicate_streamed_from_two_files_names_both() {
        let opts = DiffOptions::new("t");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let mut c = Compare::start(at(), "dir".into(), None, &opts);
        c.desired(raw("a.yaml", 1, cm.clone()));
        c.desired(raw("b.yaml", 4, cm));
        let CompareError::Duplicate {
            id, first, second, ..
        } = c.finish().unwrap_err();
        assert_eq!(id, "ConfigMap shop/a");
        assert_eq!((first.as_str(), second.as_str()), ("a.yaml:1", "b.yaml:4"));
    }

    #[test]
    fn the_duplicate_reported_is_the_first_in_desired_order_whenever_it_is_found() {
        // The Widgets' duplicate (files 1 and 2) is only found when their CRD arrives (file 5),
        // after the ConfigMaps' (files 3 and 4): the Widgets' is the one reported, as a whole
        // desired set in file order shows it first.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let desired = [
            raw("1.yaml", 1, widget("w", 1)),
            raw("2.yaml", 1, widget("w", 2)),
            raw("3.yaml", 1, cm.clone()),
            raw("4.yaml", 1, cm),
            raw("5.yaml", 1, widget_crd("Cluster")),
        ];
        let opts = DiffOptions::new("t");
        let mut c = Compare::start(at(), "dir".into(), None, &opts);
        for o in desired {
            c.desired(o);
        }
        let CompareError::Duplicate { first, second, .. } = c.finish().unwrap_err();
        assert_eq!((first.as_str(), second.as_str()), ("1.yaml:1", "2.yaml:1"));
    }

    #[test]
    fn a_waiting_object_comes_back_whole_however_deep() {
        // Kept as text while it waits, or as is past serde_json's nesting limit.
        let mut deep = json!("leaf");
        for _ in 0..110 {
            deep = json!({ "n": deep });
        }
        let shallow = widget("s", 1);
        let mut deep_widget = widget("d", 1);
        deep_widget["spec"]["deep"] = deep;
        let opts = DiffOptions::new("t");
        let mut c = Compare::start(at(), "dir".into(), None, &opts);
        c.desired(raw("a.yaml", 1, shallow.clone()));
        c.desired(raw("b.yaml", 1, deep_widget.clone()));
        let f = c.finish().unwrap();
        assert_eq!(
            f.desired.get("kubernetes/c/example.com/Widget/shop/s"),
            Some(&shallow)
        );
        assert_eq!(
            f.desired.get("kubernetes/c/example.com/Widget/shop/d"),
            Some(&deep_widget)
        );
    }
}
