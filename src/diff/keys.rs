//! Strategic-merge list keys: how a desired list item finds its live counterpart.
//!
//! Kubernetes merges many lists by key (`containers` by `name`, `volumeMounts` by `mountPath`,
//! container `ports` by `containerPort`+`protocol`), and a live list may be reordered or carry
//! items nobody declared (an injected sidecar). Matching by index would then report false drift,
//! so keyed lists are matched by key. The key fields come, in order of trust, from the live
//! object's own managedFields (`k:{"name":"web"}` entries, which also cover custom resources'
//! `x-kubernetes-list-map-keys`), then from the built-in table below. Everything else is an
//! atomic list, compared by index.

use serde_json::{Map, Value};

use super::normalize::scalar_equal;

/// One key field of an associative list, with the value the server defaults it to when absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyField {
    pub name: String,
    pub default: Option<Value>,
}

impl KeyField {
    fn new(name: &str) -> KeyField {
        KeyField {
            name: name.to_string(),
            default: default_for_key(name),
        }
    }
}

/// How a list is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Items are identified by these fields.
    Keyed(Vec<KeyField>),
    /// A set of scalars: order does not matter (`metadata.finalizers`).
    Set,
    /// Atomic: compared by position.
    Unkeyed,
}

/// The server-side default of a list key field when an item omits it: `protocol` is `TCP`.
pub fn default_for_key(name: &str) -> Option<Value> {
    (name == "protocol").then(|| Value::String("TCP".to_string()))
}

/// Where a list sits, for choosing its merge keys.
#[derive(Debug, Clone, Copy)]
pub struct ListSite<'a> {
    /// Path of the list in the live object (keys and indices).
    pub path: &'a [String],
    /// The object's Kubernetes kind.
    pub kind: &'a str,
    /// Desired items, to tell container ports from other `ports` lists.
    pub desired_items: &'a [Value],
    /// Key fields found in managedFields for this list, if any.
    pub managed_keys: Option<&'a [String]>,
}

/// Chooses the merge strategy for a list.
pub fn list_kind(site: ListSite<'_>) -> ListKind {
    if let Some(keys) = site.managed_keys.filter(|k| !k.is_empty()) {
        return ListKind::Keyed(keys.iter().map(|k| KeyField::new(k)).collect());
    }
    let Some(field) = site.path.last() else {
        return ListKind::Unkeyed;
    };
    let keyed = |names: &[&str]| ListKind::Keyed(names.iter().map(|n| KeyField::new(n)).collect());
    match field.as_str() {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates"
        | "claims" => keyed(&["name"]),
        "volumeMounts" => keyed(&["mountPath"]),
        "volumeDevices" => keyed(&["devicePath"]),
        "hostAliases" => keyed(&["ip"]),
        "resizePolicy" => keyed(&["resourceName"]),
        "ownerReferences" if site.path.len() == 2 => keyed(&["uid"]),
        "topologySpreadConstraints" => keyed(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" if site.path.len() == 2 && site.path[0] == "metadata" => ListKind::Set,
        "ports" => {
            if site
                .desired_items
                .iter()
                .any(|i| i.get("containerPort").is_some())
            {
                keyed(&["containerPort", "protocol"])
            } else if site.kind == "Service" && site.path.len() == 2 && site.path[0] == "spec" {
                keyed(&["port", "protocol"])
            } else {
                ListKind::Unkeyed
            }
        }
        _ => ListKind::Unkeyed,
    }
}

/// The key values of an item, defaults filled in. `None` when the item is not a map or lacks a
/// key field that has no default.
pub fn key_of(item: &Value, keys: &[KeyField]) -> Option<Vec<Value>> {
    let map = item.as_object()?;
    keys.iter()
        .map(|k| {
            map.get(&k.name)
                .filter(|v| !v.is_null())
                .cloned()
                .or_else(|| k.default.clone())
        })
        .collect()
}

/// Index of the first live item, not yet `used`, whose key equals `key`.
pub fn find_by_key(
    live: &[Value],
    key: &[Value],
    keys: &[KeyField],
    used: &[bool],
) -> Option<usize> {
    live.iter().enumerate().position(|(i, item)| {
        !used.get(i).copied().unwrap_or(false)
            && key_of(item, keys).is_some_and(|lk| {
                lk.len() == key.len() && lk.iter().zip(key).all(|(a, b)| scalar_equal(a, b))
            })
    })
}

/// Whether a list item matches a FieldsV1 `k:{...}` key (defaults applied, int/string loose).
pub fn matches_fields_key(item: &Value, key: &Map<String, Value>) -> bool {
    let Some(map) = item.as_object() else {
        return false;
    };
    key.iter().all(|(name, want)| {
        match map
            .get(name)
            .filter(|v| !v.is_null())
            .cloned()
            .or_else(|| default_for_key(name))
        {
            Some(have) => scalar_equal(&have, want),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    fn kind_at(p: &[&str], kind: &str, items: &[Value]) -> ListKind {
        let path = path(p);
        list_kind(ListSite {
            path: &path,
            kind,
            desired_items: items,
            managed_keys: None,
        })
    }

    fn names(k: &ListKind) -> Vec<String> {
        match k {
            ListKind::Keyed(f) => f.iter().map(|f| f.name.clone()).collect(),
            _ => vec![],
        }
    }

    #[test]
    fn built_in_keys() {
        let pod = ["spec", "template", "spec"];
        let at = |f: &str| {
            let mut p = pod.to_vec();
            p.push(f);
            kind_at(&p, "Deployment", &[])
        };
        assert_eq!(names(&at("containers")), ["name"]);
        assert_eq!(names(&at("initContainers")), ["name"]);
        assert_eq!(names(&at("volumes")), ["name"]);
        assert_eq!(names(&at("imagePullSecrets")), ["name"]);
        assert_eq!(names(&at("hostAliases")), ["ip"]);
        assert_eq!(
            names(&at("topologySpreadConstraints")),
            ["topologyKey", "whenUnsatisfiable"]
        );
        // Tolerations are atomic in the real server (`f:tolerations: {}`).
        assert_eq!(at("tolerations"), ListKind::Unkeyed);
        assert_eq!(
            names(&kind_at(
                &["spec", "containers", "0", "volumeMounts"],
                "Pod",
                &[]
            )),
            ["mountPath"]
        );
        assert_eq!(
            kind_at(&["metadata", "finalizers"], "ConfigMap", &[]),
            ListKind::Set
        );
    }

    #[test]
    fn ports_depend_on_site() {
        let container = kind_at(
            &["spec", "containers", "0", "ports"],
            "Pod",
            &[json!({"containerPort": 80})],
        );
        assert_eq!(names(&container), ["containerPort", "protocol"]);
        let svc = kind_at(&["spec", "ports"], "Service", &[json!({"port": 80})]);
        assert_eq!(names(&svc), ["port", "protocol"]);
        let netpol = kind_at(
            &["spec", "ingress", "0", "ports"],
            "NetworkPolicy",
            &[json!({"port": 80})],
        );
        assert_eq!(netpol, ListKind::Unkeyed);
    }

    #[test]
    fn managed_keys_win() {
        let p = path(&["spec", "users"]);
        let keys = vec!["name".to_string()];
        let k = list_kind(ListSite {
            path: &p,
            kind: "CacheCluster",
            desired_items: &[],
            managed_keys: Some(&keys),
        });
        assert_eq!(names(&k), ["name"]);
    }

    #[test]
    fn protocol_defaults_to_tcp_when_matching() {
        let keys = vec![KeyField::new("containerPort"), KeyField::new("protocol")];
        let desired = json!({"containerPort": 8080, "name": "http"});
        let live = vec![
            json!({"containerPort": 9113, "protocol": "TCP"}),
            json!({"containerPort": 8080, "protocol": "UDP"}),
            json!({"containerPort": "8080", "protocol": "TCP"}),
        ];
        let key = key_of(&desired, &keys).unwrap();
        assert_eq!(find_by_key(&live, &key, &keys, &[false; 3]), Some(2));
        assert_eq!(find_by_key(&live, &key, &keys, &[false, false, true]), None);
        // A key field without a default must be present.
        assert_eq!(key_of(&json!({"name": "x"}), &keys), None);
        assert_eq!(key_of(&json!("scalar"), &keys), None);
    }

    #[test]
    fn fields_v1_keys() {
        let key: Map<String, Value> =
            serde_json::from_str(r#"{"containerPort":8080,"protocol":"TCP"}"#).unwrap();
        assert!(matches_fields_key(&json!({"containerPort": 8080}), &key));
        assert!(matches_fields_key(
            &json!({"containerPort": 8080, "protocol": "TCP", "name": "http"}),
            &key
        ));
        assert!(!matches_fields_key(
            &json!({"containerPort": 8080, "protocol": "UDP"}),
            &key
        ));
        assert!(!matches_fields_key(&json!({"containerPort": 80}), &key));
    }
}
