//! managedFields (FieldsV1): who owns which field of a live object.
//!
//! Server-side apply records, per field manager, the set of fields it owns. driftwarden uses
//! that record twice:
//!
//! - **Three-way diff.** The `driftwarden` Apply entry lists exactly the fields Git declared at
//!   the last apply. A field it still owns that desired no longer declares was removed from Git:
//!   that is drift ([`undeclared_owned`]). In strict mode the same walk over the *other*
//!   managers' entries finds fields someone added by hand.
//! - **Attribution.** The entry owning a drifted field says who changed it (`kubectl-set`,
//!   Update, 02:59) ([`Ownership::owner_of`]).
//!
//! FieldsV1 encoding: `f:<name>` a map field, `k:{json}` a list item by its merge key,
//! `v:<json>` a set member, `i:<n>` a list index, `.` the item itself; an empty `{}` is a leaf,
//! owning everything under it (a scalar or an atomic map/list). Nothing here does IO, and
//! malformed entries are skipped rather than failing the diff.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::keys::matches_fields_key;
use super::normalize::{is_empty, scalar_equal};
use crate::model::Attribution;

/// One step of a FieldsV1 path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathElement {
    /// `f:name`: a map field.
    Field(String),
    /// `k:{...}`: a list item identified by its key fields.
    Key(Map<String, Value>),
    /// `v:...`: a member of a set-like list.
    Value(Value),
    /// `i:n`: a list item by index.
    Index(usize),
}

/// A FieldsV1 tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldsNode {
    /// `.` present: the node owns the item's existence.
    pub self_owned: bool,
    pub children: Vec<(PathElement, FieldsNode)>,
}

impl FieldsNode {
    /// A leaf owns the whole value below it.
    pub fn is_leaf(&self) -> bool {
        self.children.is_empty() && !self.self_owned
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut FieldsNode> {
        self.children.iter_mut().find_map(|(e, n)| match e {
            PathElement::Field(f) if f == name => Some(n),
            _ => None,
        })
    }

    /// Secret: the server returns `stringData` as `data`, but the Apply entry keeps `f:stringData`
    /// keys. Merge them into `f:data` so ownership lines up with the live object.
    fn string_data_as_data(&mut self) {
        let Some(pos) = self
            .children
            .iter()
            .position(|(e, _)| matches!(e, PathElement::Field(f) if f == "stringData"))
        else {
            return;
        };
        let (_, string_data) = self.children.remove(pos);
        if self.field_mut("data").is_none() {
            self.children
                .push((PathElement::Field("data".into()), FieldsNode::default()));
        }
        if let Some(data) = self.field_mut("data") {
            for (elem, node) in string_data.children {
                if !data.children.iter().any(|(e, _)| *e == elem) {
                    data.children.push((elem, node));
                }
            }
        }
    }
}

/// Parses a FieldsV1 value. Unknown or malformed keys are skipped.
pub fn parse_fields_v1(v: &Value) -> FieldsNode {
    let mut node = FieldsNode::default();
    let Some(map) = v.as_object() else {
        return node;
    };
    for (k, child) in map {
        if k == "." {
            node.self_owned = true;
            continue;
        }
        let elem = if let Some(name) = k.strip_prefix("f:") {
            PathElement::Field(name.to_string())
        } else if let Some(key) = k.strip_prefix("k:") {
            match serde_json::from_str::<Value>(key) {
                Ok(Value::Object(m)) => PathElement::Key(m),
                _ => continue,
            }
        } else if let Some(val) = k.strip_prefix("v:") {
            match serde_json::from_str::<Value>(val) {
                Ok(v) => PathElement::Value(v),
                Err(_) => continue,
            }
        } else if let Some(idx) = k.strip_prefix("i:") {
            match idx.parse() {
                Ok(i) => PathElement::Index(i),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        node.children.push((elem, parse_fields_v1(child)));
    }
    node
}

/// One managedFields entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub time: Option<String>,
    pub subresource: Option<String>,
    pub fields: FieldsNode,
}

impl ManagedEntry {
    pub fn attribution(&self) -> Attribution {
        Attribution {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            time: self.time.clone(),
            subresource: self.subresource.clone(),
        }
    }

    /// The entry of `manager`'s server-side applies.
    pub fn is_apply_by(&self, manager: &str) -> bool {
        self.manager == manager && self.operation == "Apply"
    }
}

/// Reads `metadata.managedFields` of a live object. Entries that are not FieldsV1 are skipped.
/// For a Secret, `f:stringData` ownership is folded into `f:data`.
pub fn parse_managed_fields(live: &Value, secret: bool) -> Vec<ManagedEntry> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let text = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
    entries
        .iter()
        .filter(|e| text(e, "fieldsType").is_none_or(|t| t == "FieldsV1"))
        .filter_map(|e| {
            let mut fields = parse_fields_v1(e.get("fieldsV1")?);
            if secret {
                fields.string_data_as_data();
            }
            Some(ManagedEntry {
                manager: text(e, "manager").unwrap_or_default(),
                operation: text(e, "operation").unwrap_or_default(),
                time: text(e, "time"),
                subresource: text(e, "subresource").filter(|s| !s.is_empty()),
                fields,
            })
        })
        .collect()
}

/// RFC 6901 escaping of one segment.
pub fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Builds a JSON pointer from segments.
pub fn pointer(segs: &[String]) -> String {
    segs.iter().fold(String::new(), |mut acc, s| {
        acc.push('/');
        acc.push_str(&escape(s));
        acc
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnKind {
    /// Owns the value and everything below it.
    Leaf,
    /// Owns a list item's existence (`.`), not its fields.
    Item,
}

/// Ownership of a live object's fields, resolved to live JSON pointers.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    entries: Vec<ManagedEntry>,
    owned: BTreeMap<String, Vec<(usize, OwnKind)>>,
    list_keys: BTreeMap<String, Vec<String>>,
}

impl Ownership {
    /// Resolves every entry of a live object against its current content.
    pub fn from_live(live: &Value, secret: bool) -> Ownership {
        let entries = parse_managed_fields(live, secret);
        let mut own = Ownership::default();
        for (i, e) in entries.iter().enumerate() {
            own.collect(&e.fields, Some(live), String::new(), i);
        }
        own.entries = entries;
        own
    }

    pub fn entries(&self) -> &[ManagedEntry] {
        &self.entries
    }

    /// The Apply entry of `manager`, if it has one.
    pub fn apply_entry(&self, manager: &str) -> Option<&ManagedEntry> {
        self.entries.iter().find(|e| e.is_apply_by(manager))
    }

    /// Merge-key field names of the list at `ptr`, as the server recorded them.
    pub fn list_keys_at(&self, ptr: &str) -> Option<&[String]> {
        self.list_keys.get(ptr).map(Vec::as_slice)
    }

    fn collect(&mut self, node: &FieldsNode, live: Option<&Value>, ptr: String, entry: usize) {
        if !ptr.is_empty() {
            if node.self_owned {
                self.owned
                    .entry(ptr.clone())
                    .or_default()
                    .push((entry, OwnKind::Item));
            }
            if node.is_leaf() {
                self.owned
                    .entry(ptr.clone())
                    .or_default()
                    .push((entry, OwnKind::Leaf));
            }
        }
        let items = live.and_then(Value::as_array);
        for (elem, child) in &node.children {
            match elem {
                PathElement::Field(name) => {
                    let next = format!("{ptr}/{}", escape(name));
                    self.collect(child, live.and_then(|l| l.get(name)), next, entry);
                }
                PathElement::Key(key) => {
                    self.list_keys
                        .entry(ptr.clone())
                        .or_insert_with(|| key.keys().cloned().collect());
                    if let Some(i) =
                        items.and_then(|a| a.iter().position(|it| matches_fields_key(it, key)))
                    {
                        let item = items.and_then(|a| a.get(i));
                        self.collect(child, item, format!("{ptr}/{i}"), entry);
                    }
                }
                PathElement::Value(v) => {
                    if let Some(i) = items.and_then(|a| a.iter().position(|it| scalar_equal(it, v)))
                    {
                        let item = items.and_then(|a| a.get(i));
                        self.collect(child, item, format!("{ptr}/{i}"), entry);
                    }
                }
                PathElement::Index(i) => {
                    let item = items.and_then(|a| a.get(*i));
                    self.collect(child, item, format!("{ptr}/{i}"), entry);
                }
            }
        }
    }

    /// The entry that owns the field at `ptr` (a live pointer). Tried in order: an entry owning
    /// exactly that path; the nearest ancestor that is a leaf (an atomic field containing it);
    /// entries owning something below it. Among equals, another manager is preferred over
    /// `our_manager`, an Update over an Apply, then the latest `time`.
    pub fn owner_of(&self, ptr: &str, our_manager: &str) -> Option<&ManagedEntry> {
        let exact: Vec<usize> = self
            .owned
            .get(ptr)
            .map(|v| v.iter().map(|(i, _)| *i).collect())
            .unwrap_or_default();
        if let Some(e) = self.best(&exact, our_manager) {
            return Some(e);
        }
        let mut cur = ptr;
        while let Some(pos) = cur.rfind('/') {
            cur = &cur[..pos];
            let leaves: Vec<usize> = self
                .owned
                .get(cur)
                .map(|v| {
                    v.iter()
                        .filter(|(_, k)| *k == OwnKind::Leaf)
                        .map(|(i, _)| *i)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(e) = self.best(&leaves, our_manager) {
                return Some(e);
            }
        }
        let lo = format!("{ptr}/");
        let hi = format!("{ptr}0");
        let below: Vec<usize> = self
            .owned
            .range(lo..hi)
            .flat_map(|(_, v)| v.iter().map(|(i, _)| *i))
            .collect();
        self.best(&below, our_manager)
    }

    fn best(&self, candidates: &[usize], our_manager: &str) -> Option<&ManagedEntry> {
        candidates
            .iter()
            .filter_map(|i| self.entries.get(*i))
            .max_by(|a, b| {
                let rank = |e: &ManagedEntry| {
                    (
                        e.manager != our_manager,
                        e.operation != "Apply",
                        e.time.clone().unwrap_or_default(),
                    )
                };
                rank(a).cmp(&rank(b))
            })
    }
}

/// Fields `node` owns that are present (non-empty) in `live` but that `desired` does not
/// declare, as live path segments with the live value. Declared leaves are left to the regular
/// comparison; the walk descends only where both sides have the field.
pub fn undeclared_owned(
    node: &FieldsNode,
    desired: Option<&Value>,
    live: Option<&Value>,
) -> Vec<(Vec<String>, Value)> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk_undeclared(node, desired, live, &mut path, &mut out);
    out
}

fn walk_undeclared(
    node: &FieldsNode,
    desired: Option<&Value>,
    live: Option<&Value>,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, Value)>,
) {
    let live_items = live.and_then(Value::as_array);
    let desired_items = desired.and_then(Value::as_array);
    for (elem, child) in &node.children {
        let (seg, d, l) = match elem {
            PathElement::Field(name) => (
                name.clone(),
                desired.and_then(|d| d.get(name)).filter(|v| !v.is_null()),
                live.and_then(|l| l.get(name)),
            ),
            PathElement::Key(key) => {
                let Some((i, item)) = live_items.and_then(|a| {
                    a.iter()
                        .enumerate()
                        .find(|(_, it)| matches_fields_key(it, key))
                }) else {
                    continue;
                };
                let d = desired_items.and_then(|a| a.iter().find(|it| matches_fields_key(it, key)));
                (i.to_string(), d, Some(item))
            }
            PathElement::Value(v) => {
                let Some((i, item)) = live_items
                    .and_then(|a| a.iter().enumerate().find(|(_, it)| scalar_equal(it, v)))
                else {
                    continue;
                };
                let d = desired_items.and_then(|a| a.iter().find(|it| scalar_equal(it, v)));
                (i.to_string(), d, Some(item))
            }
            PathElement::Index(i) => (
                i.to_string(),
                desired_items.and_then(|a| a.get(*i)),
                live_items.and_then(|a| a.get(*i)),
            ),
        };
        let Some(l) = l.filter(|l| !is_empty(Some(l))) else {
            continue;
        };
        let is_item = !matches!(elem, PathElement::Field(_));
        path.push(seg);
        match d {
            // The entry owns the whole value (a leaf) or a list item's existence (`.`): all of
            // it goes when desired drops it. (A map's `.` only means it created the map.)
            None if child.is_leaf() || (is_item && child.self_owned) => {
                out.push((path.clone(), l.clone()))
            }
            // An interior map: only the owned fields inside go (others' keys stay).
            None => walk_undeclared(child, None, Some(l), path, out),
            Some(d) if !child.children.is_empty() => {
                walk_undeclared(child, Some(d), Some(l), path, out)
            }
            Some(_) => {}
        }
        path.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "metadata": {
                "labels": {"app": "a", "tier": "web"},
                "managedFields": [
                    {
                        "manager": "driftwarden", "operation": "Apply",
                        "time": "2026-11-22T02:58:51Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {
                            "f:metadata": {"f:labels": {"f:app": {}}},
                            "f:spec": {
                                "f:selector": {},
                                "f:template": {"f:spec": {"f:containers": {
                                    "k:{\"name\":\"web\"}": {
                                        ".": {}, "f:name": {},
                                        "f:ports": {"k:{\"containerPort\":8080,\"protocol\":\"TCP\"}": {
                                            ".": {}, "f:containerPort": {}
                                        }}
                                    }
                                }}}
                            }
                        }
                    },
                    {
                        "manager": "kubectl", "operation": "Update", "subresource": "scale",
                        "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:replicas": {}}}
                    },
                    {
                        "manager": "kubectl-label", "operation": "Update",
                        "time": "2026-11-22T02:59:00Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:labels": {"f:tier": {}}}}
                    },
                    {
                        "manager": "kubectl-set", "operation": "Update",
                        "time": "2026-11-22T02:59:00Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"web\"}": {"f:image": {}}
                        }}}}}
                    }
                ]
            },
            "spec": {
                "replicas": 5,
                "selector": {"matchLabels": {"app": "a"}},
                "template": {"spec": {"containers": [
                    {"name": "sidecar", "image": "envoy"},
                    {"name": "web", "image": "nginx:1.27.4",
                     "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
                ]}}
            }
        })
    }

    #[test]
    fn parses_fields_v1_keys() {
        let node = parse_fields_v1(&json!({
            "f:a": {},
            "k:{\"name\":\"web\"}": {".": {}, "f:name": {}},
            "v:\"kubernetes\"": {},
            "i:3": {},
            "bogus": {},
            "k:not-json": {}
        }));
        assert_eq!(node.children.len(), 4);
        assert_eq!(node.children[0].0, PathElement::Field("a".into()));
        assert!(node.children[0].1.is_leaf());
        match &node.children[1] {
            (PathElement::Key(k), n) => {
                assert_eq!(k.get("name"), Some(&json!("web")));
                assert!(n.self_owned && !n.is_leaf());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(node.children[2].0, PathElement::Value(json!("kubernetes")));
        assert_eq!(node.children[3].0, PathElement::Index(3));
    }

    #[test]
    fn owners_resolve_to_live_indices() {
        let live = deployment();
        let own = Ownership::from_live(&live, false);
        assert_eq!(own.entries().len(), 4);
        let who = |p: &str| own.owner_of(p, "driftwarden").map(|e| e.manager.clone());
        // The web container is the second live item: its image is owned at index 1.
        assert_eq!(
            who("/spec/template/spec/containers/1/image").as_deref(),
            Some("kubectl-set")
        );
        assert_eq!(who("/spec/replicas").as_deref(), Some("kubectl"));
        assert_eq!(
            who("/metadata/labels/tier").as_deref(),
            Some("kubectl-label")
        );
        assert_eq!(who("/metadata/labels/app").as_deref(), Some("driftwarden"));
        // Inside an atomic leaf: the leaf's owner.
        assert_eq!(
            who("/spec/selector/matchLabels/app").as_deref(),
            Some("driftwarden")
        );
        // The container item itself (`.`), and a subtree with owned descendants.
        assert_eq!(
            who("/spec/template/spec/containers/1").as_deref(),
            Some("driftwarden")
        );
        // The sidecar at index 0 is nobody's.
        assert_eq!(who("/spec/template/spec/containers/0/image"), None);
        assert_eq!(
            own.list_keys_at("/spec/template/spec/containers/1/ports"),
            Some(&["containerPort".to_string(), "protocol".to_string()][..])
        );
        let scale = own.owner_of("/spec/replicas", "driftwarden").unwrap();
        assert_eq!(scale.subresource.as_deref(), Some("scale"));
        assert_eq!(scale.time, None);
        assert_eq!(scale.attribution().operation, "Update");
    }

    #[test]
    fn undeclared_fields_of_an_entry() {
        let live = deployment();
        let own = Ownership::from_live(&live, false);
        let apply = own.apply_entry("driftwarden").unwrap();
        // Desired dropped the web container's port and the `app` label.
        let desired = json!({
            "metadata": {"labels": {"tier": "frontend"}},
            "spec": {"selector": {"matchLabels": {"app": "a"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "x"}]}}}
        });
        let found: Vec<String> = undeclared_owned(&apply.fields, Some(&desired), Some(&live))
            .into_iter()
            .map(|(p, _)| pointer(&p))
            .collect();
        assert_eq!(
            found,
            [
                "/metadata/labels/app",
                "/spec/template/spec/containers/1/ports/0"
            ]
        );
        // A whole keyed item gone from desired is reported once, at its live index.
        let desired = json!({"metadata": {"labels": {"app": "a"}},
                             "spec": {"selector": {}, "template": {"spec": {"containers": []}}}});
        let found: Vec<String> = undeclared_owned(&apply.fields, Some(&desired), Some(&live))
            .into_iter()
            .map(|(p, _)| pointer(&p))
            .collect();
        assert_eq!(found, ["/spec/template/spec/containers/1"]);
    }

    #[test]
    fn a_maps_dot_is_not_the_whole_map() {
        // kubectl annotate created the annotations map (`.`) and one key: only that key is its.
        let live = json!({
            "metadata": {
                "annotations": {"a": "1", "b": "2"},
                "managedFields": [{
                    "manager": "kubectl-annotate", "operation": "Update", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:b": {}}}}
                }]
            }
        });
        let own = Ownership::from_live(&live, false);
        let found: Vec<String> =
            undeclared_owned(&own.entries()[0].fields, Some(&json!({})), Some(&live))
                .into_iter()
                .map(|(p, _)| pointer(&p))
                .collect();
        assert_eq!(found, ["/metadata/annotations/b"]);
        assert_eq!(own.owner_of("/metadata/annotations/a", "driftwarden"), None);
    }

    #[test]
    fn secret_string_data_ownership_maps_to_data() {
        let live = json!({
            "data": {"DB_USER": "c2hvcA==", "API_KEY": "eA=="},
            "metadata": {"managedFields": [{
                "manager": "driftwarden", "operation": "Apply", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:API_KEY": {}}, "f:stringData": {"f:DB_USER": {}}}
            }]}
        });
        let own = Ownership::from_live(&live, true);
        assert_eq!(
            own.owner_of("/data/DB_USER", "driftwarden")
                .map(|e| e.manager.as_str()),
            Some("driftwarden")
        );
        let apply = own.apply_entry("driftwarden").unwrap();
        let desired = json!({"data": {"API_KEY": "eA=="}});
        let found: Vec<String> = undeclared_owned(&apply.fields, Some(&desired), Some(&live))
            .into_iter()
            .map(|(p, _)| pointer(&p))
            .collect();
        assert_eq!(found, ["/data/DB_USER"]);
    }

    #[test]
    fn escapes_pointer_segments() {
        assert_eq!(
            pointer(&[
                "metadata".into(),
                "annotations".into(),
                "team.shop/incident".into()
            ]),
            "/metadata/annotations/team.shop~1incident"
        );
        assert_eq!(escape("a~b"), "a~0b");
    }
}
