//! The structural walk: desired against live, field by field, declared fields only.
//!
//! Desired drives the walk (docs/diff.md, rule 1: compare only what desired says). Maps compare
//! key by key; a live key desired does not mention is not visited (defaults, status, injected
//! data). Lists go through [`super::keys`]: keyed lists match items by merge key and ignore
//! undeclared live items (an injected sidecar); sets match members; atomic lists compare by
//! position, and there extra live items are drift, because the list as a whole was declared.
//! Leaves compare through [`super::normalize`]. Paths are live pointers: a keyed item is
//! addressed by its live index; an item missing live gets the index it would take if appended
//! (`live.len()`, then `live.len() + 1`...), so paths never collide with real live items.
//!
//! The three-way part (fields driftwarden's Apply entry still owns that desired dropped) and
//! ignore rules are applied by the caller ([`super::diff_object`]).

use serde_json::Value;

use super::ignore::is_builtin_ignored;
use super::keys::{ListKind, ListSite, find_by_key, key_of, list_kind};
use super::managed::{Ownership, pointer};
use super::normalize::{
    is_effectively_empty, is_empty, is_quantity_field, quantities_equal, scalar_equal,
    secret_data_equal,
};
use crate::model::ChangeOp;

/// One difference before ignore rules, attribution and masking.
#[derive(Debug, Clone, PartialEq)]
pub struct RawChange {
    pub path: Vec<String>,
    pub op: ChangeOp,
    pub desired: Value,
    pub live: Value,
}

/// What the walk needs to know about the object.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Kubernetes kind (`Service` ports are keyed differently).
    pub kind: &'a str,
    /// A Kubernetes object at all: server bookkeeping paths are skipped.
    pub kubernetes: bool,
    /// A built-in API group: quantities are normalized, selector maps compare exactly.
    pub builtin: bool,
    /// A core Secret: `data` values compare decoded.
    pub secret: bool,
    /// Live managedFields, for list keys.
    pub ownership: &'a Ownership,
}

/// Compares a desired object with its live counterpart.
pub fn compare(desired: &Value, live: &Value, ctx: &Context<'_>) -> Vec<RawChange> {
    let mut out = Vec::new();
    let mut path = Vec::new();
    walk(ctx, desired, Some(live), &mut path, &mut out);
    out
}

fn push(out: &mut Vec<RawChange>, path: &[String], op: ChangeOp, desired: &Value, live: &Value) {
    out.push(RawChange {
        path: path.to_vec(),
        op,
        desired: desired.clone(),
        live: live.clone(),
    });
}

fn walk(
    ctx: &Context<'_>,
    d: &Value,
    l: Option<&Value>,
    path: &mut Vec<String>,
    out: &mut Vec<RawChange>,
) {
    // A null in desired declares nothing (YAML `key:` with no value, or generators' noise).
    if d.is_null() || (ctx.kubernetes && is_builtin_ignored(path)) {
        return;
    }
    let Some(l) = l.filter(|l| !l.is_null()) else {
        if let (Value::Object(dm), true) = (d, ctx.kubernetes && path.len() < 3) {
            // `metadata` or its maps missing live: go field by field, so bookkeeping that
            // desired happens to carry (a last-applied annotation) is still skipped.
            for (k, dv) in dm {
                path.push(k.clone());
                walk(ctx, dv, None, path, out);
                path.pop();
            }
        } else if !is_effectively_empty(Some(d)) {
            push(out, path, ChangeOp::MissingLive, d, &Value::Null);
        }
        return;
    };
    match (d, l) {
        (Value::Object(dm), Value::Object(lm)) => {
            for (k, dv) in dm {
                path.push(k.clone());
                walk(ctx, dv, lm.get(k), path, out);
                path.pop();
            }
            if ctx.builtin && is_exact_map(path, ctx.kind) {
                for (k, lv) in lm {
                    if dm.get(k).is_none_or(Value::is_null) && !lv.is_null() {
                        path.push(k.clone());
                        push(out, path, ChangeOp::ExtraLive, &Value::Null, lv);
                        path.pop();
                    }
                }
            }
        }
        (Value::Array(da), Value::Array(la)) => walk_list(ctx, da, la, path, out),
        (Value::Object(_) | Value::Array(_), _) | (_, Value::Object(_) | Value::Array(_)) => {
            if !(is_effectively_empty(Some(d)) && is_empty(Some(l))) {
                push(out, path, ChangeOp::Changed, d, l);
            }
        }
        _ => {
            if !leaf_equal(ctx, d, l, path) {
                push(out, path, ChangeOp::Changed, d, l);
            }
        }
    }
}

/// Atomic string maps the server never adds to: an undeclared live key changes selection.
fn is_exact_map(path: &[String], kind: &str) -> bool {
    match path.last().map(String::as_str) {
        Some("nodeSelector" | "matchLabels") => true,
        Some("selector") => kind == "Service" && path.len() == 2 && path[0] == "spec",
        _ => false,
    }
}

fn is_scalar(v: &Value) -> bool {
    !v.is_object() && !v.is_array()
}

fn walk_list(
    ctx: &Context<'_>,
    da: &[Value],
    la: &[Value],
    path: &mut Vec<String>,
    out: &mut Vec<RawChange>,
) {
    let ptr = pointer(path);
    let kind = list_kind(ListSite {
        path,
        kind: ctx.kind,
        desired_items: da,
        managed_keys: ctx.ownership.list_keys_at(&ptr),
    });
    let scalars = da.iter().all(is_scalar) && la.iter().all(is_scalar);
    match kind {
        ListKind::Keyed(keys) if !da.iter().all(is_scalar) || da.is_empty() => {
            let mut used = vec![false; la.len()];
            let mut appended = 0;
            for item in da.iter().filter(|v| !v.is_null()) {
                let found = match key_of(item, &keys) {
                    Some(key) => find_by_key(la, &key, &keys, &used),
                    None => find_containing(ctx, item, la, &used, path),
                };
                let index = match found {
                    Some(i) => {
                        if let Some(u) = used.get_mut(i) {
                            *u = true;
                        }
                        i
                    }
                    None => {
                        appended += 1;
                        la.len() + appended - 1
                    }
                };
                path.push(index.to_string());
                walk(ctx, item, la.get(index), path, out);
                path.pop();
            }
        }
        ListKind::Set if scalars => {
            let mut appended = 0;
            for item in da.iter().filter(|v| !is_empty(Some(v))) {
                if !la.iter().any(|l| scalar_equal(item, l)) {
                    path.push((la.len() + appended).to_string());
                    appended += 1;
                    push(out, path, ChangeOp::MissingLive, item, &Value::Null);
                    path.pop();
                }
            }
        }
        _ if scalars => {
            let same = da.len() == la.len()
                && da.iter().zip(la).enumerate().all(|(i, (d, l))| {
                    path.push(i.to_string());
                    let eq = leaf_equal(ctx, d, l, path);
                    path.pop();
                    eq
                });
            if !same {
                push(
                    out,
                    path,
                    ChangeOp::Changed,
                    &Value::Array(da.to_vec()),
                    &Value::Array(la.to_vec()),
                );
            }
        }
        _ => {
            for (i, item) in da.iter().enumerate() {
                path.push(i.to_string());
                walk(ctx, item, la.get(i), path, out);
                path.pop();
            }
            for (i, item) in la.iter().enumerate().skip(da.len()) {
                if !item.is_null() {
                    path.push(i.to_string());
                    push(out, path, ChangeOp::ExtraLive, &Value::Null, item);
                    path.pop();
                }
            }
        }
    }
}

/// For a keyed-list item that lacks its key: the first unused live item it fully agrees with.
fn find_containing(
    ctx: &Context<'_>,
    item: &Value,
    la: &[Value],
    used: &[bool],
    path: &mut Vec<String>,
) -> Option<usize> {
    la.iter().enumerate().position(|(i, l)| {
        if used.get(i).copied().unwrap_or(false) {
            return false;
        }
        let mut scratch = Vec::new();
        path.push(i.to_string());
        walk(ctx, item, Some(l), path, &mut scratch);
        path.pop();
        scratch.is_empty()
    })
}

fn leaf_equal(ctx: &Context<'_>, d: &Value, l: &Value, path: &[String]) -> bool {
    if is_empty(Some(d)) && is_empty(Some(l)) {
        return true;
    }
    if ctx.secret && path.len() == 2 && path[0] == "data" {
        return secret_data_equal(d, l);
    }
    if ctx.builtin {
        if let Some((key, rest)) = path.split_last() {
            let parent = rest
                .last()
                .map(String::as_str)
                .filter(|p| p.parse::<usize>().is_err());
            if is_quantity_field(parent, key) {
                if let Some(eq) = quantities_equal(d, l) {
                    return eq;
                }
            }
        }
    }
    scalar_equal(d, l)
}

/// Loose equality of two whole values under the same rules as the walk (used after pruning an
/// ignored field out of a coarse change).
pub fn equivalent(ctx: &Context<'_>, d: &Value, l: &Value, path: &[String]) -> bool {
    let mut p = path.to_vec();
    let mut out = Vec::new();
    walk(ctx, d, Some(l), &mut p, &mut out);
    out.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(kind: &str, builtin: bool, desired: Value, live: Value) -> Vec<(String, ChangeOp)> {
        let own = Ownership::from_live(&live, false);
        let ctx = Context {
            kind,
            kubernetes: true,
            builtin,
            secret: false,
            ownership: &own,
        };
        compare(&desired, &live, &ctx)
            .into_iter()
            .map(|c| (pointer(&c.path), c.op))
            .collect()
    }

    fn paths(v: &[(String, ChangeOp)]) -> Vec<&str> {
        v.iter().map(|(p, _)| p.as_str()).collect()
    }

    #[test]
    fn containers_match_by_name_with_live_indices() {
        let desired = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.27.3", "ports": [{"containerPort": 8080}]},
            {"name": "log", "image": "fluent"}
        ]}}}});
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "istio-proxy", "image": "envoy"},
            {"name": "log", "image": "fluent", "imagePullPolicy": "IfNotPresent"},
            {"name": "web", "image": "nginx:1.27.4",
             "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
        ]}}}});
        let got = run("Deployment", true, desired, live);
        assert_eq!(
            got,
            [(
                "/spec/template/spec/containers/2/image".to_string(),
                ChangeOp::Changed
            )]
        );
    }

    #[test]
    fn missing_keyed_items_are_appended_indices() {
        let desired = json!({"spec": {"containers": [
            {"name": "a"}, {"name": "b", "image": "x"}, {"name": "c", "image": "y"}
        ]}});
        let live = json!({"spec": {"containers": [{"name": "a"}, {"name": "sidecar"}]}});
        let got = run("Pod", true, desired, live);
        assert_eq!(
            got,
            [
                ("/spec/containers/2".to_string(), ChangeOp::MissingLive),
                ("/spec/containers/3".to_string(), ChangeOp::MissingLive)
            ]
        );
    }

    #[test]
    fn quantities_only_in_builtin_groups() {
        let desired = json!({"spec": {"resources": {"requests": {"cpu": 0.5, "memory": "1.5Gi"}}}});
        let live =
            json!({"spec": {"resources": {"requests": {"cpu": "500m", "memory": "1536Mi"}}}});
        assert!(run("Pod", true, desired.clone(), live.clone()).is_empty());
        let got = run("Widget", false, desired, live);
        assert_eq!(
            paths(&got),
            [
                "/spec/resources/requests/cpu",
                "/spec/resources/requests/memory"
            ]
        );
    }

    #[test]
    fn empties_and_int_strings() {
        let desired = json!({"a": "", "b": null, "c": [], "d": {}, "e": {"f": null},
                             "port": 8080, "s": "8080", "g": ""});
        let live = json!({"port": "8080", "s": 8080, "g": null, "d": {"x": 1}});
        assert!(run("ConfigMap", true, desired, live).is_empty());
    }

    #[test]
    fn atomic_lists_by_index() {
        let desired = json!({"rules": [{"verbs": ["get"], "apiGroups": [""]}]});
        let same = json!({"rules": [{"verbs": ["get"], "apiGroups": [""], "x": 1}]});
        assert!(run("Role", true, desired.clone(), same).is_empty());
        let more = json!({"rules": [
            {"verbs": ["get", "list"], "apiGroups": [""]},
            {"verbs": ["*"], "apiGroups": ["*"]}
        ]});
        let got = run("Role", true, desired, more);
        assert_eq!(
            got,
            [
                ("/rules/0/verbs".to_string(), ChangeOp::Changed),
                ("/rules/1".to_string(), ChangeOp::ExtraLive)
            ]
        );
    }

    #[test]
    fn selectors_are_exact_but_labels_are_not() {
        let desired = json!({"metadata": {"labels": {"a": "1"}},
                             "spec": {"selector": {"app": "x"}}});
        let live = json!({"metadata": {"labels": {"a": "1", "b": "2"}},
                          "spec": {"selector": {"app": "x", "canary": "true"}}});
        let got = run("Service", true, desired, live);
        assert_eq!(
            got,
            [("/spec/selector/canary".to_string(), ChangeOp::ExtraLive)]
        );
    }

    #[test]
    fn finalizers_are_a_set() {
        let desired = json!({"metadata": {"finalizers": ["a", "b"]}});
        let live = json!({"metadata": {"finalizers": ["c", "a"]}});
        let got = run("ConfigMap", true, desired, live);
        assert_eq!(
            got,
            [("/metadata/finalizers/2".to_string(), ChangeOp::MissingLive)]
        );
    }

    #[test]
    fn bookkeeping_and_status_are_skipped() {
        let desired = json!({"metadata": {"uid": "x", "generation": 9,
                                          "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
                             "status": {"phase": "Bound"}});
        let live = json!({"metadata": {"uid": "y", "generation": 1}, "status": {}});
        assert!(run("PersistentVolumeClaim", true, desired, live).is_empty());
    }

    #[test]
    fn type_changes_and_missing_fields() {
        let desired = json!({"spec": {"a": {"b": 1}, "c": "x", "d": [1]}});
        let live = json!({"spec": {"a": "scalar", "d": [2, 1]}});
        let got = run("ConfigMap", true, desired, live);
        assert_eq!(
            got,
            [
                ("/spec/a".to_string(), ChangeOp::Changed),
                ("/spec/c".to_string(), ChangeOp::MissingLive),
                ("/spec/d".to_string(), ChangeOp::Changed)
            ]
        );
    }

    #[test]
    fn keyless_item_in_keyed_list_matches_by_content() {
        let desired = json!({"spec": {"volumes": [
            {"emptyDir": {"medium": "Memory"}},
            {"name": "b", "secret": {"secretName": "s"}}
        ]}});
        let live = json!({"spec": {"volumes": [
            {"name": "b", "secret": {"secretName": "s", "defaultMode": 420}},
            {"emptyDir": {"medium": "Memory"}}
        ]}});
        assert!(run("Pod", true, desired, live).is_empty());
    }
}
