//! The Kubernetes API verbs driftwarden's requests need, as RBAC names them: the one list the
//! deploy manifests' Roles are checked against (tests/delivery.rs), so RBAC grants exactly what
//! the code sends.
//!
//! The live reader ([`super::kube`]) discovers (GET on non-resource URLs), LISTs per kind and
//! GETs single objects; the Kubernetes actuator (`act::correct_kube`) applies with server-side
//! apply (`PATCH`, content type `application/apply-patch+yaml`) and deletes. An apply that creates
//! a missing object is authorized as `create` as well as `patch`, so `create` is needed although
//! no `POST` is ever sent. `driftwarden watch` also WATCHes the kinds it LISTs, and its leader
//! election reads, creates and updates one `coordination.k8s.io/v1` Lease. [`rbac_verbs`] and
//! [`rbac_request_verbs`] map a request to its verbs, so a test can check every request a test
//! API server logged against [`KUBE_VERBS`].
//!
//! The deploy manifests follow the split: `deploy/base` (the CronJob running `reconcile`)
//! grants [`KUBE_RUN_VERBS`]; `deploy/overlays/watch` (the Deployment running `watch`) adds
//! [`KUBE_WATCH_VERBS`] on the same kinds and [`KUBE_LEASE_VERBS`] on the Lease.

/// Every verb, reader, actuator, watcher and leader election together.
pub const KUBE_VERBS: &[&str] = &[
    "get", "list", "watch", "patch", "create", "delete", "update",
];

/// The verbs of the one-shot commands (`diff`, `reconcile`): reading and correcting.
pub const KUBE_RUN_VERBS: &[&str] = &["get", "list", "patch", "create", "delete"];

/// The verbs reading live state needs (observe and recommend modes).
pub const KUBE_READ_VERBS: &[&str] = &["get", "list"];

/// The verbs correcting live state needs (autocorrect mode): apply, apply-create, prune.
pub const KUBE_WRITE_VERBS: &[&str] = &["patch", "create", "delete"];

/// What `watch` adds on every kind it reads: one WATCH per kind and namespace scope it LISTs.
pub const KUBE_WATCH_VERBS: &[&str] = &["watch"];

/// Leader election on its Lease (`leases` in `coordination.k8s.io`): read it, create it when
/// absent, update it to acquire, renew and release. It is never deleted, patched or watched.
pub const KUBE_LEASE_VERBS: &[&str] = &["get", "create", "update"];

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

/// The RBAC verbs of a request, its query string included: a `GET` with `watch=true` (or `1`)
/// is a `watch`, whether on a collection or, with a `fieldSelector` on the name, on one object.
pub fn rbac_request_verbs(
    method: &str,
    collection: bool,
    query: &str,
    status: u16,
) -> &'static [&'static str] {
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    if watch && method.eq_ignore_ascii_case("GET") {
        return &["watch"];
    }
    rbac_verbs(method, collection, status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_partition() {
        let sorted = |v: Vec<&'static str>| {
            let mut v = v;
            v.sort_unstable();
            v.dedup();
            v
        };
        let run = sorted(
            KUBE_READ_VERBS
                .iter()
                .chain(KUBE_WRITE_VERBS)
                .copied()
                .collect(),
        );
        assert_eq!(run, sorted(KUBE_RUN_VERBS.to_vec()));
        let all = sorted(
            KUBE_RUN_VERBS
                .iter()
                .chain(KUBE_WATCH_VERBS)
                .chain(KUBE_LEASE_VERBS)
                .copied()
                .collect(),
        );
        assert_eq!(all, sorted(KUBE_VERBS.to_vec()));
        assert_eq!(
            rbac_request_verbs("GET", true, "watch=true&resourceVersion=466", 200),
            ["watch"]
        );
        assert_eq!(rbac_request_verbs("GET", true, "limit=500", 200), ["list"]);
        assert_eq!(rbac_request_verbs("PUT", false, "", 200), ["update"]);
        assert_eq!(rbac_verbs("get", true, 200), ["list"]);
        assert_eq!(rbac_verbs("PATCH", false, 201), ["patch", "create"]);
        assert!(rbac_verbs("OPTIONS", false, 200).is_empty());
    }
}
