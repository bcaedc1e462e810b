//! The Kubernetes API verbs driftwarden's requests need, as RBAC names them: the one list the
//! deploy manifests' Roles are checked against (tests/delivery.rs), so RBAC grants exactly what
//! the code sends.
//!
//! The live reader ([`super::kube`]) discovers (GET on non-resource URLs), LISTs per kind and
//! GETs single objects; the Kubernetes actuator (`act::correct_kube`) applies with server-side
//! apply (`PATCH`, content type `application/apply-patch+yaml`) and deletes. An apply that creates
//! a missing object is authorized as `create` as well as `patch`, so `create` is needed although
//! no `POST` is ever sent. [`rbac_verb`] maps a request to its verb, so a test can check every
//! request a test API server logged against [`KUBE_VERBS`].

/// Every verb, reader and actuator together.
pub const KUBE_VERBS: &[&str] = &["get", "list", "patch", "create", "delete"];

/// The verbs reading live state needs (observe and recommend modes).
pub const KUBE_READ_VERBS: &[&str] = &["get", "list"];

/// The verbs correcting live state needs (autocorrect mode): apply, apply-create, prune.
pub const KUBE_WRITE_VERBS: &[&str] = &["patch", "create", "delete"];

/// The non-resource URLs discovery reads (verb `get`).
pub const KUBE_DISCOVERY_URLS: &[&str] = &["/api", "/api/*", "/apis", "/apis/*"];

/// The RBAC verbs a request is authorized as: its HTTP method, whether its path names a
/// collection (no object name), and the response status (an apply answered `201 Created`
/// created the object). Empty for methods driftwarden never sends.
pub fn rbac_verbs(method: &str, collection: bool, status: u16) -> &'static [&'static str] {
    match (method.to_ascii_uppercase().as_str(), collection) {
        ("GET", true) => &["list"],
        ("GET", false) => &["get"],
        ("PATCH", false) if status == 201 => &["patch", "create"],
        ("PATCH", false) => &["patch"],
        ("POST", true) => &["create"],
        ("DELETE", false) => &["delete"],
        ("DELETE", true) => &["deletecollection"],
        ("PUT", false) => &["update"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_partition() {
        let mut all: Vec<&str> = KUBE_READ_VERBS
            .iter()
            .chain(KUBE_WRITE_VERBS)
            .copied()
            .collect();
        all.sort_unstable();
        let mut want = KUBE_VERBS.to_vec();
        want.sort_unstable();
        assert_eq!(all, want);
        assert_eq!(rbac_verbs("get", true, 200), ["list"]);
        assert_eq!(rbac_verbs("PATCH", false, 201), ["patch", "create"]);
        assert!(rbac_verbs("OPTIONS", false, 200).is_empty());
    }
}
