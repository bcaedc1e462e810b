//! Kubernetes object identity: which objects are namespaced, and the [`ResourceId`] of a
//! manifest. Pure functions, no IO; shared by the desired and live sources so both sides name an
//! object the same way.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::ResourceId;

/// Built-in kinds that are cluster-scoped, by (group, kind).
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("networking.k8s.io", "IngressClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
];

/// Built-in namespaced kinds, so an object of these kinds without a namespace gets the default.
const NAMESPACED: &[(&str, &str)] = &[
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Service"),
    ("", "ServiceAccount"),
    ("", "Pod"),
    ("", "PersistentVolumeClaim"),
    ("", "Endpoints"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("", "ReplicationController"),
    ("", "Event"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("coordination.k8s.io", "Lease"),
    ("discovery.k8s.io", "EndpointSlice"),
];

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (String, String) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    }
}

/// Knows which (group, kind) pairs are namespaced: built-ins, CRDs seen in desired state, and
/// what live objects show.
#[derive(Debug, Default, Clone)]
pub struct Scopes {
    learned: HashMap<(String, String), bool>,
}

impl Scopes {
    /// Learns scopes from CRDs among `objects` and from live objects (a live object with a
    /// namespace proves its kind namespaced).
    pub fn learn<'a>(&mut self, objects: impl IntoIterator<Item = &'a Value>, live: bool) {
        for o in objects {
            let kind = str_at(o, "/kind");
            let (group, _) = split_api_version(str_at(o, "/apiVersion"));
            if kind == "CustomResourceDefinition" {
                let g = str_at(o, "/spec/group").to_string();
                let k = str_at(o, "/spec/names/kind").to_string();
                let scope = str_at(o, "/spec/scope");
                if !g.is_empty() && !k.is_empty() {
                    self.learned.insert((g, k), scope != "Cluster");
                }
            }
            if live && !kind.is_empty() {
                let has_ns = !str_at(o, "/metadata/namespace").is_empty();
                self.learned
                    .entry((group, kind.to_string()))
                    .or_insert(has_ns);
            }
        }
    }

    /// Whether the scope of this kind is known: built in, or learned from a CRD or a live
    /// object. [`Scopes::is_namespaced`] guesses for the others.
    pub fn knows(&self, group: &str, kind: &str) -> bool {
        CLUSTER_SCOPED.contains(&(group, kind))
            || NAMESPACED.contains(&(group, kind))
            || self
                .learned
                .contains_key(&(group.to_string(), kind.to_string()))
    }

    /// Whether objects of this kind live in a namespace. Unknown kinds count as namespaced
    /// (like kubectl, which sends them to the default namespace).
    pub fn is_namespaced(&self, group: &str, kind: &str) -> bool {
        if CLUSTER_SCOPED.contains(&(group, kind)) {
            return false;
        }
        if NAMESPACED.contains(&(group, kind)) {
            return true;
        }
        if let Some(n) = self.learned.get(&(group.to_string(), kind.to_string())) {
            return *n;
        }
        true
    }
}

/// The string at a JSON pointer, or "".
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The identity of a Kubernetes object. A namespaced object without a namespace gets
/// `default_namespace`; a cluster-scoped one loses any namespace it names.
pub fn resource_id(
    cluster: &str,
    obj: &Value,
    default_namespace: &str,
    scopes: &Scopes,
) -> ResourceId {
    let (group, version) = split_api_version(str_at(obj, "/apiVersion"));
    let kind = str_at(obj, "/kind").to_string();
    let ns = str_at(obj, "/metadata/namespace");
    let namespace = if scopes.is_namespaced(&group, &kind) {
        Some(if ns.is_empty() {
            default_namespace.to_string()
        } else {
            ns.to_string()
        })
    } else {
        None
    };
    ResourceId::Kubernetes {
        cluster: cluster.to_string(),
        group,
        version,
        kind,
        namespace,
        name: str_at(obj, "/metadata/name").to_string(),
    }
}

/// Sets `metadata.namespace` on a namespaced object that names none, so desired and live
/// compare alike.
pub fn default_namespace(obj: &mut Value, id: &ResourceId) {
    if let ResourceId::Kubernetes {
        namespace: Some(ns),
        ..
    } = id
    {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("namespace")
                .or_insert_with(|| Value::String(ns.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_default_namespace_and_scope() {
        let mut scopes = Scopes::default();
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster", "names": {"kind": "Widget"}}});
        scopes.learn([&crd], false);
        let dep =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}});
        let id = resource_id("c", &dep, "shop", &scopes);
        assert_eq!(id.key(), "kubernetes/c/apps/Deployment/shop/web");
        let cr = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r", "namespace": "x"}});
        assert_eq!(
            resource_id("c", &cr, "shop", &scopes).key(),
            "kubernetes/c/rbac.authorization.k8s.io/ClusterRole/_cluster/r"
        );
        let w =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
        assert_eq!(
            resource_id("c", &w, "shop", &scopes).key(),
            "kubernetes/c/example.com/Widget/_cluster/w"
        );
    }
}
