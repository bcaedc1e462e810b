//! A Kubernetes API server on loopback for integration tests. kube's `Client` talks to it over
//! real HTTP/1.1, so every test exercises the same protocol a cluster speaks.
//!
//! Written from the Kubernetes API conventions and the server-side apply documentation, and
//! checked against a real kube-apiserver 1.32's captured exchanges
//! (`fixtures/golden/protocol/*.http`, see tests/kube_live.rs `golden_*`):
//! - discovery: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>` with
//!   namespaced flags and verbs, including a CRD group (`platform.driftwarden.test`);
//! - LIST with `labelSelector` (equality and set based), `limit`/`continue` (an opaque,
//!   unpadded base64url token of the last key, like the real one), `remainingItemCount`, items
//!   without `kind`/`apiVersion`;
//! - GET; DELETE (Status or object, foreground and finalizers); `dryRun=All` everywhere;
//! - PATCH `application/apply-patch+yaml` (server-side apply): fields merged by list keys,
//!   managedFields (FieldsV1) per manager, 409 with the real Status body on conflicts between
//!   managers unless `force=true`, ownership moved by force, fields a manager stops applying
//!   removed, unchanged applies not written; PATCH `application/merge-patch+json` and, for
//!   built-in kinds, `application/strategic-merge-patch+json` (Updates that silently take
//!   ownership; fields the kind does not declare dropped with a `Warning: 299` header, or 422
//!   under `fieldValidation=Strict`); any other patch type 415, naming only the types this
//!   server implements; server defaults and quantity canonicalization per kind;
//! - what the real server refuses before storing (see "What the real server refuses" below for
//!   the schema and the validation covered): an applied field the kind's schema does not declare
//!   (500 `failed to create typed patch object`), invalid values (422 `Invalid`, every cause),
//!   a stale `metadata.resourceVersion` in an apply or merge patch (409 `Conflict`), and
//!   `metadata.managedFields` in an apply (400);
//! - `metav1.Status` error bodies as the real server sends them (404, 409, 400, 401, 403, 410,
//!   415, 422, 500);
//! - fault injection per method, path prefix and count: an error status, 429 with
//!   `Retry-After` and the plain-text body of the real server's flow control (not a Status), a
//!   slow response, a dropped connection, a 422 `Invalid` for a field, a write accepted without
//!   changing anything, an expired continue token (410 with a fresh token);
//! - POST (create, 201, 409 `AlreadyExists`) and PUT (replace; the status of a kind with a
//!   `status` subresource kept; a stale `metadata.resourceVersion` 409 `Conflict`);
//!   `coordination.k8s.io/v1` Leases (in discovery) with the real server's rules and no lease
//!   logic: a PUT must carry `metadata.resourceVersion` (422), a PUT of a missing Lease creates
//!   it, `acquireTime`/`renewTime` need exactly six fractional digits (400);
//! - the `scale` subresource of Deployments, StatefulSets and ReplicaSets (GET, PATCH, PUT), as
//!   `kubectl scale` writes it;
//! - WATCH (`?watch=true|1`, legacy `/watch/` paths) as a real server streams it: see
//!   kube_watch.rs (resume from an event history, bookmarks, 410 `ERROR` events, selectors,
//!   WatchList), with test controls to cut, expire and count streams;
//! - opt-in simulated workload controllers (kube_rollout.rs): after a change, the status of a
//!   Deployment, StatefulSet or DaemonSet as kube-controller-manager writes it, for a rollout
//!   that succeeds, fails or is never observed;
//! - a request log for assertions.

#![allow(dead_code)]

// Each server includes the shared plumbing itself, so a test binary needs nothing more; one that
// includes two servers compiles it twice, which is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "http.rs"]
mod http;
#[path = "kube_rollout.rs"]
mod rollout;
#[path = "kube_watch.rs"]
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use http::Resp;
#[allow(unused_imports)]
pub use rollout::{Outcome, Rollout};
pub use watch::KubeBody;

// ------------------------------------------------------------------------------------------
// Public API
// ------------------------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: String,
    /// 0 when the connection was dropped by a fault (or the answer is still delayed).
    pub status: u16,
    /// When the request arrived.
    pub at: std::time::Instant,
}

impl LoggedRequest {
    /// A decoded query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// A request that would change stored state (not a dry run).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
            && self.param("dryRun").as_deref() != Some("All")
            && !self.body.contains("\"dryRun\":[\"All\"]")
    }

    /// A LIST: a GET on a collection (not discovery, not a watch).
    pub fn is_list(&self) -> bool {
        self.method == "GET"
            && classify_path(&self.path) == PathKind::Collection
            && !self.is_watch()
    }

    /// A WATCH (`?watch=true|1`, or a legacy `/watch/` path).
    pub fn is_watch(&self) -> bool {
        self.method == "GET"
            && (watch::is_watch(&query_pairs(&self.query))
                || watch::strip_legacy_watch(&self.path).is_some())
    }

    /// A GET of one object.
    pub fn is_get(&self) -> bool {
        self.method == "GET" && classify_path(&self.path) == PathKind::Object
    }

    /// Discovery (`/version`, `/api`, `/apis`, group versions): non-resource URLs.
    pub fn is_discovery(&self) -> bool {
        classify_path(&self.path) == PathKind::Discovery
    }

    /// A request on a collection (no object name in the path).
    pub fn is_collection(&self) -> bool {
        classify_path(&self.path) == PathKind::Collection
    }
}

/// What an injected fault does.
#[derive(Debug, Clone)]
pub enum FaultKind {
    /// Answer with this status and the real server's Status body for it.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`, as API Priority and Fairness (or the max-in-flight
    /// filter) rejects a request before it reaches a handler: Go's `http.Error` text
    /// `Too many requests, please try again later.\n` (`text/plain; charset=utf-8`,
    /// `X-Content-Type-Options: nosniff`), not a `metav1.Status` (see [`too_many_requests`]).
    TooManyRequests { retry_after: u64 },
    /// Wait this long, then answer normally (a client with a shorter timeout gives up).
    Delay(Duration),
    /// For a LIST that carries a `continue` token only: wait this long, then answer normally, as
    /// a server stalling mid-list (a client with a shorter timeout gives up on the later page
    /// after the first ones arrived). Requests without a `continue` token neither match nor use
    /// up the fault.
    StallContinue(Duration),
    /// Close the connection without answering.
    Drop,
    /// 422 `Invalid` with the real server's Status body for one invalid field of the object the
    /// path names (`<Kind>[.<group>] "<name>" is invalid: <field>: Invalid value: "<value>":
    /// <detail>`, one `FieldValueInvalid` cause), as validation or an admission policy answers.
    Invalid {
        field: String,
        value: String,
        detail: String,
    },
    /// Answer a write 200 with the stored object as it is, storing nothing: the write is
    /// accepted but changes nothing, as when a mutating webhook puts the old values back.
    AcceptUnchanged,
    /// 410 `Expired` for a LIST that carries a `continue` token, as when etcd compacted the
    /// revision the token points at: the real server's Status (etcd3 store,
    /// `handleCompactedErrorForPaging`), whose `metadata.continue` is a fresh token for an
    /// inconsistent remainder (`rv: -1`, the same start key). Requests without a `continue`
    /// token neither match nor use up the fault.
    ExpiredContinue,
    /// 410 `Expired` for a LIST, as when the resourceVersion it asks for was compacted
    /// (list-expired-compacted-410: `The resourceVersion for the provided list is too old.`).
    /// Watches neither match nor use up the fault.
    ExpiredList,
    /// 403 `Forbidden` for this user, the verb taken from the request (`watch` for a watch):
    /// watch-forbidden-403.
    Forbidden { user: String },
}

/// A fault for requests matching a method (any when `None`) and a path prefix, `times` times
/// (`usize::MAX` = always).
#[derive(Debug, Clone)]
pub struct Fault {
    pub method: Option<String>,
    pub path_prefix: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    pub fn new(method: &str, path_prefix: &str, kind: FaultKind, times: usize) -> Fault {
        Fault {
            method: (!method.is_empty()).then(|| method.to_string()),
            path_prefix: path_prefix.to_string(),
            kind,
            times,
        }
    }
}

/// The running server. Dropping it stops accepting connections.
pub struct KubeServer {
    addr: SocketAddr,
    shared: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for KubeServer {
    /// Stops accepting connections, cuts the open watches and drops every request still made on
    /// an open connection: the server is gone.
    fn drop(&mut self) {
        self.accept.abort();
        self.go_away();
    }
}

/// The bearer token the written kubeconfig carries and the server requires.
pub const TOKEN: &str = "driftwarden-test-token";

impl KubeServer {
    /// Starts a server on 127.0.0.1 (a free port) on the current Tokio runtime.
    pub async fn start() -> KubeServer {
        let shared = Arc::new(Mutex::new(State::new()));
        shared.lock().unwrap_or_else(|e| e.into_inner()).me = Arc::downgrade(&shared);
        let (addr, accept) = http::start_on_runtime(Arc::clone(&shared), handle).await;
        KubeServer {
            addr,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a kubeconfig pointing at this server (context `test`) and returns its path.
    pub fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: {TOKEN}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Stores an object as given (a real server's output: its uid, resourceVersion and
    /// managedFields are kept; missing ones are filled in).
    pub fn seed(&self, obj: Value) {
        self.state().seed(obj);
    }

    /// Server-side applies `obj` in process as `manager` (force), as if by `kubectl apply
    /// --server-side`.
    pub fn apply_as(&self, manager: &str, obj: Value) -> Value {
        let mut st = self.state();
        let (group, version) = split_gv(obj["apiVersion"].as_str().unwrap_or(""));
        let rt = st
            .resource_by_kind(&group, obj["kind"].as_str().unwrap_or(""))
            .unwrap_or_else(|| panic!("no resource for {}", obj["kind"]));
        let ns = rt.namespaced.then(|| {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        });
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let gv = join_gv(&group, &version);
        match st.apply(&rt, &gv, ns.as_deref(), &name, obj, manager, true, false) {
            Ok((_, v)) => v,
            Err(status) => panic!("seed apply failed: {status}"),
        }
    }

    /// A JSON merge patch in process as `manager` (an Update), like `kubectl patch --type merge`.
    pub fn merge_patch_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: Value,
    ) -> Value {
        let mut st = self.state();
        let (group, _) = split_gv(api_version);
        let rt = st.resource_by_kind(&group, kind).unwrap();
        let target = Target {
            rt: &rt,
            gv: api_version,
            ns: namespace,
            name,
        };
        let how = UpdateOptions {
            patch: UpdatePatch::Merge,
            manager,
            subresource: None,
            dry_run: false,
            validation: FieldValidation::Warn,
        };
        match st.patch_update(&target, &patch, &how, &mut Vec::new()) {
            Ok((_, v)) => v,
            Err(status) => panic!("merge patch failed: {status}"),
        }
    }

    /// Sets `spec.replicas` in process through the `scale` subresource as `manager`, like
    /// `kubectl scale` (manager `kubectl`): an Update entry with `subresource: scale` and no
    /// `time` (watch-deployments-200).
    pub fn scale_as(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        replicas: i64,
    ) -> Value {
        let mut st = self.state();
        let (group, _) = split_gv(api_version);
        let rt = st.resource_by_kind(&group, kind).unwrap();
        let target = Target {
            rt: &rt,
            gv: api_version,
            ns: namespace,
            name,
        };
        let how = UpdateOptions {
            patch: UpdatePatch::Merge,
            manager,
            subresource: Some("scale"),
            dry_run: false,
            validation: FieldValidation::Warn,
        };
        let patch = json!({"spec": {"replicas": replicas}});
        match st.patch_update(&target, &patch, &how, &mut Vec::new()) {
            Ok((_, v)) => v,
            Err(status) => panic!("scale failed: {status}"),
        }
    }

    /// Deletes an object in process (background propagation), like `kubectl delete`.
    pub fn delete_object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) {
        let mut st = self.state();
        let (group, _) = split_gv(api_version);
        let rt = st.resource_by_kind(&group, kind).unwrap();
        let (code, body) = st.delete(&rt, api_version, namespace, name, &Value::Null, false);
        assert_eq!(code, StatusCode::OK, "delete failed: {body}");
    }

    /// The stored object, as a GET would return it.
    pub fn object(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let st = self.state();
        let (group, _) = split_gv(api_version);
        let rt = st.resource_by_kind(&group, kind)?;
        st.get_stored(&rt, namespace, name).cloned()
    }

    /// Every stored object of a kind.
    pub fn count(&self, api_version: &str, kind: &str) -> usize {
        let st = self.state();
        let (group, _) = split_gv(api_version);
        let Some(rt) = st.resource_by_kind(&group, kind) else {
            return 0;
        };
        st.objects
            .get(&(rt.group.clone(), rt.plural.clone()))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Sets the resourceVersion counter (the next write gets `n + 1`).
    /// Watches can resume from `n` on; the history of writes above `n` (made before, while
    /// setting up) is forgotten.
    pub fn set_resource_version(&self, n: u64) {
        let mut st = self.state();
        st.rv = n;
        st.watch.rewind(n);
    }

    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// The cluster goes away: open watches are cut and every request's connection is closed
    /// without an answer (new connections are still accepted, so the address stays the
    /// server's), until [`KubeServer::come_back`]. Nothing stored is lost.
    pub fn go_away(&self) {
        let mut st = self.state();
        st.gone = true;
        st.watch.drop_all();
    }

    /// The cluster is back after [`KubeServer::go_away`]: requests are answered again (the
    /// watch history is intact, so clients resume where they were).
    pub fn come_back(&self) {
        self.state().gone = false;
    }

    // ---- simulated controllers ----

    /// Simulates kube-controller-manager's status for every Deployment, StatefulSet and
    /// DaemonSet whose generation rises from now on (see kube_rollout.rs).
    pub fn simulate_rollouts(&self, rollout: Rollout) {
        self.state().add_rollout_rule("", None, None, rollout);
    }

    /// Simulates the status of one kind of workload (`Deployment`, `StatefulSet`,
    /// `DaemonSet`), optionally only in a namespace or only one object; the most specific rule
    /// wins.
    pub fn simulate_rollout(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        rollout: Rollout,
    ) {
        self.state()
            .add_rollout_rule(kind, namespace, name, rollout);
    }

    /// Starts the simulated rollout of a workload's current generation now (`outcome` after
    /// `delay`, as a rule would have after the write): for a workload whose rule left it
    /// unobserved, so a test decides when its rollout goes on.
    pub fn start_rollout(&self, kind: &str, namespace: &str, name: &str, rollout: Rollout) {
        let mut st = self.state();
        let rt = st.resource_by_kind("apps", kind).unwrap();
        let current = st
            .get_stored(&rt, Some(namespace), name)
            .cloned()
            .unwrap_or_else(|| panic!("no {kind} {namespace}/{name}"));
        st.start_rollout(&rt, &current, rollout);
    }

    // ---- watches ----

    /// The number of watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.state().watch.open_count("")
    }

    /// The number of watch streams open now whose request path (and query) starts with `prefix`,
    /// e.g. `/apis/apps/v1/namespaces/shop/deployments`.
    pub fn open_watches_on(&self, prefix: &str) -> usize {
        self.state().watch.open_count(prefix)
    }

    /// Waits until at least `n` watch streams whose request starts with `prefix` are open (an
    /// empty prefix: any), without polling on a timer; gives up (panics) after `limit`.
    pub async fn wait_for_watches(&self, prefix: &str, n: usize, limit: Duration) {
        let changed = Arc::clone(&self.state().watch.changed);
        let wait = async {
            loop {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.open_watches_on(prefix) >= n {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(limit, wait).await.is_err() {
            panic!(
                "{} watch(es) on {prefix:?} open after {limit:?}, waited for {n}",
                self.open_watches_on(prefix)
            );
        }
    }

    /// Cuts every open watch connection mid-stream (no terminating chunk), as a connection
    /// lost between the client and the API server; the client resumes from its last
    /// resourceVersion.
    pub fn drop_watches(&self) {
        self.state().watch.drop_all();
    }

    /// Ends every open watch with an `ERROR` event (Status 410 `Expired`, `too old resource
    /// version`) and compacts the history to the current resourceVersion, so a resume from any
    /// earlier one is refused the same way: the client must LIST again.
    pub fn expire_watches(&self) {
        let mut st = self.state();
        let rv = st.rv;
        st.watch.compact(rv);
        st.watch.expire_all(rv);
    }

    /// Forgets the event history up to the current resourceVersion (as etcd compaction and the
    /// watch cache's window do): a watch from an older resourceVersion gets the 410 `ERROR`
    /// event; open watches go on.
    pub fn compact_history(&self) {
        let mut st = self.state();
        let rv = st.rv;
        st.watch.compact(rv);
    }

    /// Serves watches of a kind as the real server does without a watch cache (from etcd,
    /// `--watch-cache-sizes=<resource>#0`): a resourceVersion older than the history is then
    /// `The resourceVersion for the provided watch is too old.` (watch-expired-compacted-200).
    pub fn disable_watch_cache(&self, api_version: &str, kind: &str) {
        let mut st = self.state();
        let (group, _) = split_gv(api_version);
        let rt = st
            .resource_by_kind(&group, kind)
            .unwrap_or_else(|| panic!("no resource for {kind}"));
        st.watch.uncached.insert((rt.group, rt.plural));
    }

    /// How many events the history keeps (10,000 by default); older ones are forgotten and a
    /// watch from before them gets 410.
    pub fn set_watch_history(&self, events: usize) {
        let mut st = self.state();
        st.watch.limit = events;
        st.watch.trim();
    }

    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK (60 s by default, as
    /// the real server); applies to watches opened afterwards.
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state().watch.bookmark_interval = every;
    }

    pub fn clear_requests(&self) {
        self.state().log.clear();
    }

    /// The most LIST requests (GETs of a collection, not watches) that were in flight at once:
    /// arrived (a `Delay` fault keeps one waiting) and not answered yet.
    pub fn max_lists_in_flight(&self) -> usize {
        self.state().max_lists_in_flight
    }
}

// ------------------------------------------------------------------------------------------
// Discovery data (copied from kube-apiserver 1.32's answers where the golden files have them)
// ------------------------------------------------------------------------------------------

const STD: &str = "create,delete,deletecollection,get,list,patch,update,watch";

/// A served resource type.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

#[allow(clippy::too_many_arguments)]
fn entry(
    name: &str,
    singular: &str,
    namespaced: bool,
    kind: &str,
    verbs: &str,
    short: &[&str],
    categories: &[&str],
    hash: Option<&str>,
) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("singularName".into(), json!(singular));
    m.insert("namespaced".into(), json!(namespaced));
    m.insert("kind".into(), json!(kind));
    m.insert("verbs".into(), json!(verbs.split(',').collect::<Vec<_>>()));
    if !short.is_empty() {
        m.insert("shortNames".into(), json!(short));
    }
    if !categories.is_empty() {
        m.insert("categories".into(), json!(categories));
    }
    if let Some(h) = hash {
        m.insert("storageVersionHash".into(), json!(h));
    }
    Value::Object(m)
}

fn sub(name: &str, namespaced: bool, kind: &str, verbs: &str) -> Value {
    entry(name, "", namespaced, kind, verbs, &[], &[], None)
}

fn sub_gv(
    name: &str,
    namespaced: bool,
    kind: &str,
    verbs: &str,
    group: &str,
    version: &str,
) -> Value {
    let mut v = sub(name, namespaced, kind, verbs);
    let m = v.as_object_mut().unwrap();
    // The real server puts group and version right after singularName and namespaced.
    let verbs_v = m.remove("verbs").unwrap();
    let kind_v = m.remove("kind").unwrap();
    m.insert("group".into(), json!(group));
    m.insert("version".into(), json!(version));
    m.insert("kind".into(), kind_v);
    m.insert("verbs".into(), verbs_v);
    v
}

/// Served API groups: name, versions, preferred version.
type Groups = Vec<(String, Vec<String>, String)>;

fn discovery() -> (BTreeMap<String, Vec<Value>>, Groups) {
    let mut r: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    r.insert(
        "v1".into(),
        vec![
            entry(
                "configmaps",
                "configmap",
                true,
                "ConfigMap",
                STD,
                &["cm"],
                &[],
                Some("qFsyl6wFWjQ="),
            ),
            entry(
                "endpoints",
                "endpoints",
                true,
                "Endpoints",
                STD,
                &["ep"],
                &[],
                Some("fWeeMqaN/OA="),
            ),
            entry(
                "events",
                "event",
                true,
                "Event",
                STD,
                &["ev"],
                &[],
                Some("r2yiGXH7wu8="),
            ),
            entry(
                "namespaces",
                "namespace",
                false,
                "Namespace",
                "create,delete,get,list,patch,update,watch",
                &["ns"],
                &[],
                Some("Q3oi5N2YM8M="),
            ),
            sub("namespaces/finalize", false, "Namespace", "update"),
            sub("namespaces/status", false, "Namespace", "get,patch,update"),
            entry(
                "persistentvolumeclaims",
                "persistentvolumeclaim",
                true,
                "PersistentVolumeClaim",
                STD,
                &["pvc"],
                &[],
                Some("QWTyNDq0dC4="),
            ),
            sub(
                "persistentvolumeclaims/status",
                true,
                "PersistentVolumeClaim",
                "get,patch,update",
            ),
            entry(
                "pods",
                "pod",
                true,
                "Pod",
                STD,
                &["po"],
                &["all"],
                Some("xPOwRZ+Yhw8="),
            ),
            sub("pods/status", true, "Pod", "get,patch,update"),
            entry(
                "secrets",
                "secret",
                true,
                "Secret",
                STD,
                &[],
                &[],
                Some("S6u1pOWzb84="),
            ),
            entry(
                "serviceaccounts",
                "serviceaccount",
                true,
                "ServiceAccount",
                STD,
                &["sa"],
                &[],
                Some("pbx9ZvyFpBE="),
            ),
            sub_gv(
                "serviceaccounts/token",
                true,
                "TokenRequest",
                "create",
                "authentication.k8s.io",
                "v1",
            ),
            entry(
                "services",
                "service",
                true,
                "Service",
                STD,
                &["svc"],
                &["all"],
                Some("0/CO1lhkEBI="),
            ),
            sub(
                "services/proxy",
                true,
                "ServiceProxyOptions",
                "create,delete,get,patch,update",
            ),
            sub("services/status", true, "Service", "get,patch,update"),
        ],
    );
    r.insert(
        "apps/v1".into(),
        vec![
            entry(
                "controllerrevisions",
                "controllerrevision",
                true,
                "ControllerRevision",
                STD,
                &[],
                &[],
                Some("85nkx63pcBU="),
            ),
            entry(
                "daemonsets",
                "daemonset",
                true,
                "DaemonSet",
                STD,
                &["ds"],
                &["all"],
                Some("dd7pWHUlMKQ="),
            ),
            sub("daemonsets/status", true, "DaemonSet", "get,patch,update"),
            entry(
                "deployments",
                "deployment",
                true,
                "Deployment",
                STD,
                &["deploy"],
                &["all"],
                Some("8aSe+NMegvE="),
            ),
            sub_gv(
                "deployments/scale",
                true,
                "Scale",
                "get,patch,update",
                "autoscaling",
                "v1",
            ),
            sub("deployments/status", true, "Deployment", "get,patch,update"),
            entry(
                "replicasets",
                "replicaset",
                true,
                "ReplicaSet",
                STD,
                &["rs"],
                &["all"],
                Some("P1RzHs8/mWQ="),
            ),
            sub_gv(
                "replicasets/scale",
                true,
                "Scale",
                "get,patch,update",
                "autoscaling",
                "v1",
            ),
            sub("replicasets/status", true, "ReplicaSet", "get,patch,update"),
            entry(
                "statefulsets",
                "statefulset",
                true,
                "StatefulSet",
                STD,
                &["sts"],
                &["all"],
                Some("H+vl74LkKdo="),
            ),
            sub_gv(
                "statefulsets/scale",
                true,
                "Scale",
                "get,patch,update",
                "autoscaling",
                "v1",
            ),
            sub(
                "statefulsets/status",
                true,
                "StatefulSet",
                "get,patch,update",
            ),
        ],
    );
    r.insert(
        "batch/v1".into(),
        vec![
            entry(
                "cronjobs",
                "cronjob",
                true,
                "CronJob",
                STD,
                &["cj"],
                &["all"],
                None,
            ),
            sub("cronjobs/status", true, "CronJob", "get,patch,update"),
            entry("jobs", "job", true, "Job", STD, &[], &["all"], None),
            sub("jobs/status", true, "Job", "get,patch,update"),
        ],
    );
    r.insert(
        "autoscaling/v2".into(),
        vec![
            entry(
                "horizontalpodautoscalers",
                "horizontalpodautoscaler",
                true,
                "HorizontalPodAutoscaler",
                STD,
                &["hpa"],
                &["all"],
                None,
            ),
            sub(
                "horizontalpodautoscalers/status",
                true,
                "HorizontalPodAutoscaler",
                "get,patch,update",
            ),
        ],
    );
    r.insert(
        "autoscaling/v1".into(),
        vec![
            entry(
                "horizontalpodautoscalers",
                "horizontalpodautoscaler",
                true,
                "HorizontalPodAutoscaler",
                STD,
                &["hpa"],
                &["all"],
                None,
            ),
            sub(
                "horizontalpodautoscalers/status",
                true,
                "HorizontalPodAutoscaler",
                "get,patch,update",
            ),
        ],
    );
    r.insert(
        "networking.k8s.io/v1".into(),
        vec![
            entry(
                "ingressclasses",
                "ingressclass",
                false,
                "IngressClass",
                STD,
                &[],
                &[],
                None,
            ),
            entry(
                "ingresses",
                "ingress",
                true,
                "Ingress",
                STD,
                &["ing"],
                &[],
                None,
            ),
            sub("ingresses/status", true, "Ingress", "get,patch,update"),
            entry(
                "networkpolicies",
                "networkpolicy",
                true,
                "NetworkPolicy",
                STD,
                &["netpol"],
                &[],
                None,
            ),
        ],
    );
    r.insert(
        "policy/v1".into(),
        vec![
            entry(
                "poddisruptionbudgets",
                "poddisruptionbudget",
                true,
                "PodDisruptionBudget",
                STD,
                &["pdb"],
                &[],
                None,
            ),
            sub(
                "poddisruptionbudgets/status",
                true,
                "PodDisruptionBudget",
                "get,patch,update",
            ),
        ],
    );
    r.insert(
        "rbac.authorization.k8s.io/v1".into(),
        vec![
            entry(
                "clusterrolebindings",
                "clusterrolebinding",
                false,
                "ClusterRoleBinding",
                STD,
                &[],
                &[],
                None,
            ),
            entry(
                "clusterroles",
                "clusterrole",
                false,
                "ClusterRole",
                STD,
                &[],
                &[],
                None,
            ),
            entry(
                "rolebindings",
                "rolebinding",
                true,
                "RoleBinding",
                STD,
                &[],
                &[],
                None,
            ),
            entry("roles", "role", true, "Role", STD, &[], &[], None),
        ],
    );
    r.insert(
        "apiextensions.k8s.io/v1".into(),
        vec![
            entry(
                "customresourcedefinitions",
                "customresourcedefinition",
                false,
                "CustomResourceDefinition",
                STD,
                &["crd", "crds"],
                &["api-extensions"],
                None,
            ),
            sub(
                "customresourcedefinitions/status",
                false,
                "CustomResourceDefinition",
                "get,patch,update",
            ),
        ],
    );
    r.insert(
        "coordination.k8s.io/v1".into(),
        vec![entry(
            "leases",
            "lease",
            true,
            "Lease",
            STD,
            &[],
            &[],
            Some("gqkMMb/YqFM="),
        )],
    );
    r.insert(
        "platform.driftwarden.test/v1alpha1".into(),
        vec![
            entry(
                "cacheclusters",
                "cachecluster",
                true,
                "CacheCluster",
                "delete,deletecollection,get,list,patch,create,update,watch",
                &["cc"],
                &["platform"],
                Some("lgriAvbq9VY="),
            ),
            sub(
                "cacheclusters/status",
                true,
                "CacheCluster",
                "get,patch,update",
            ),
            sub_gv(
                "cacheclusters/scale",
                true,
                "Scale",
                "get,patch,update",
                "autoscaling",
                "v1",
            ),
        ],
    );
    let groups: Groups = [
        ("apiregistration.k8s.io", &["v1"][..], "v1"),
        ("apps", &["v1"], "v1"),
        ("events.k8s.io", &["v1"], "v1"),
        ("authentication.k8s.io", &["v1"], "v1"),
        ("authorization.k8s.io", &["v1"], "v1"),
        ("autoscaling", &["v2", "v1"], "v2"),
        ("batch", &["v1"], "v1"),
        ("certificates.k8s.io", &["v1"], "v1"),
        ("networking.k8s.io", &["v1"], "v1"),
        ("policy", &["v1"], "v1"),
        ("rbac.authorization.k8s.io", &["v1"], "v1"),
        ("storage.k8s.io", &["v1"], "v1"),
        ("admissionregistration.k8s.io", &["v1"], "v1"),
        ("apiextensions.k8s.io", &["v1"], "v1"),
        ("scheduling.k8s.io", &["v1"], "v1"),
        ("coordination.k8s.io", &["v1"], "v1"),
        ("node.k8s.io", &["v1"], "v1"),
        ("discovery.k8s.io", &["v1"], "v1"),
        ("flowcontrol.apiserver.k8s.io", &["v1"], "v1"),
        ("platform.driftwarden.test", &["v1alpha1"], "v1alpha1"),
    ]
    .iter()
    .map(|(g, vs, p)| {
        (
            g.to_string(),
            vs.iter().map(|v| v.to_string()).collect(),
            p.to_string(),
        )
    })
    .collect();
    (r, groups)
}

// ------------------------------------------------------------------------------------------
// State
// ------------------------------------------------------------------------------------------

type ObjKey = (String, String); // (namespace or "", name)

/// The object a request names.
#[derive(Clone, Copy)]
struct Target<'a> {
    rt: &'a ResourceType,
    gv: &'a str,
    ns: Option<&'a str>,
    name: &'a str,
}

/// Which Update patch a PATCH carries.
#[derive(Debug, Clone, Copy, PartialEq)]
enum UpdatePatch {
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    Strategic,
    /// A PUT: the body replaces the object (its status kept when the kind has a `status`
    /// subresource).
    Replace,
}

/// `fieldValidation`: what a field the kind does not declare does to an Update patch. The
/// real server's default is `Warn`; a value it does not know (a 422 there) is taken as `Warn`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    fn from_query(v: Option<&str>) -> FieldValidation {
        match v {
            Some("Strict") => FieldValidation::Strict,
            Some("Ignore") => FieldValidation::Ignore,
            _ => FieldValidation::Warn,
        }
    }
}

/// How an Update patch is made.
struct UpdateOptions<'a> {
    patch: UpdatePatch,
    manager: &'a str,
    /// The subresource written (`scale`: its entry has no `time`, as `kubectl scale` left it).
    subresource: Option<&'a str>,
    dry_run: bool,
    validation: FieldValidation,
}

struct State {
    resources: BTreeMap<String, Vec<Value>>,
    groups: Groups,
    /// (group, plural) → objects.
    objects: BTreeMap<(String, String), BTreeMap<ObjKey, Value>>,
    rv: u64,
    uid: u64,
    ip: u64,
    node_port: u64,
    log: Vec<LoggedRequest>,
    faults: Vec<Fault>,
    watch: watch::Hub,
    /// Set by [`KubeServer::go_away`]: every request's connection is closed unanswered.
    gone: bool,
    /// Simulated controllers (kube_rollout.rs): which workloads roll out how.
    rollout_rules: Vec<rollout::RolloutRule>,
    /// The state itself, for the simulated controllers' delayed writes.
    me: std::sync::Weak<Mutex<State>>,
    /// LISTs arrived and not answered yet, and the most there ever were at once.
    lists_in_flight: usize,
    max_lists_in_flight: usize,
}

/// Counts a LIST as in flight from its arrival until its answer (or its dropped connection).
struct ListInFlight(Arc<Mutex<State>>);

impl ListInFlight {
    fn arrive(shared: &Arc<Mutex<State>>) -> ListInFlight {
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        st.lists_in_flight += 1;
        st.max_lists_in_flight = st.max_lists_in_flight.max(st.lists_in_flight);
        ListInFlight(Arc::clone(shared))
    }
}

impl Drop for ListInFlight {
    fn drop(&mut self) {
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        st.lists_in_flight -= 1;
    }
}

const PF_FLOWSCHEMA: &str = "3cb0b1cd-e1bd-40ff-b565-d27a482ba0b1";
const PF_PRIORITY: &str = "0bc02a29-dfa1-4b80-af55-0b1ed2c55a6c";

impl State {
    fn new() -> State {
        let (resources, groups) = discovery();
        State {
            resources,
            groups,
            objects: BTreeMap::new(),
            rv: 1000,
            uid: 0,
            ip: 10,
            node_port: 30100,
            log: Vec::new(),
            faults: Vec::new(),
            watch: watch::Hub::new(1000),
            gone: false,
            rollout_rules: Vec::new(),
            me: std::sync::Weak::new(),
            lists_in_flight: 0,
            max_lists_in_flight: 0,
        }
    }

    fn resource(&self, gv: &str, plural: &str) -> Option<ResourceType> {
        let (group, version) = split_gv(gv);
        self.resources.get(gv)?.iter().find_map(|e| {
            (e["name"] == plural).then(|| ResourceType {
                group: group.clone(),
                version: version.clone(),
                kind: e["kind"].as_str().unwrap_or("").to_string(),
                plural: plural.to_string(),
                namespaced: e["namespaced"].as_bool().unwrap_or(false),
            })
        })
    }

    fn resource_by_kind(&self, group: &str, kind: &str) -> Option<ResourceType> {
        for (gv, entries) in &self.resources {
            let (g, v) = split_gv(gv);
            if g != group {
                continue;
            }
            for e in entries {
                let name = e["name"].as_str().unwrap_or("");
                if e["kind"] == kind && !name.contains('/') {
                    return Some(ResourceType {
                        group: g.clone(),
                        version: v.clone(),
                        kind: kind.to_string(),
                        plural: name.to_string(),
                        namespaced: e["namespaced"].as_bool().unwrap_or(false),
                    });
                }
            }
        }
        None
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn next_uid(&mut self) -> String {
        self.uid += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.uid, self.uid)
    }

    fn store(&mut self, rt: &ResourceType) -> &mut BTreeMap<ObjKey, Value> {
        self.objects
            .entry((rt.group.clone(), rt.plural.clone()))
            .or_default()
    }

    /// Stores an object (created or updated) and records the write for watches.
    fn put(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str, obj: Value) {
        let old = self
            .store(rt)
            .insert((ns.unwrap_or("").into(), name.into()), obj.clone());
        self.after_write(rt, old.as_ref(), &obj);
        let rv = self.rv;
        self.watch.record(rt, old, Some(obj), rv);
    }

    /// Removes an object and records the deletion for watches: `tombstone` is its last state,
    /// stamped with the delete's resourceVersion (watch-deployments-200).
    fn remove(&mut self, rt: &ResourceType, ns: Option<&str>, name: &str, tombstone: Value) {
        self.store(rt)
            .remove(&(ns.unwrap_or("").to_string(), name.to_string()));
        let rv = self.rv;
        self.watch.record(rt, Some(tombstone), None, rv);
    }

    fn get_stored(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> Option<&Value> {
        self.objects
            .get(&(rt.group.clone(), rt.plural.clone()))?
            .get(&(ns.unwrap_or("").to_string(), name.to_string()))
    }

    fn seed(&mut self, mut obj: Value) {
        let (group, _) = split_gv(obj["apiVersion"].as_str().unwrap_or(""));
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let rt = self
            .resource_by_kind(&group, &kind)
            .unwrap_or_else(|| panic!("seed: no resource for {group}/{kind}"));
        let ns = if rt.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let meta = obj["metadata"].as_object_mut().unwrap();
        if !meta.contains_key("uid") {
            self.uid += 1;
            meta.insert(
                "uid".into(),
                json!(format!("{:08x}-0000-4000-8000-{:012x}", self.uid, self.uid)),
            );
        }
        match meta
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(rv) => self.rv = self.rv.max(rv),
            None => {
                self.rv += 1;
                meta.insert("resourceVersion".into(), json!(self.rv.to_string()));
            }
        }
        if !meta.contains_key("creationTimestamp") {
            meta.insert("creationTimestamp".into(), json!(now()));
        }
        let obj = order_object(obj);
        let ns = rt.namespaced.then_some(ns);
        self.put(&rt, ns.as_deref(), &name, obj);
    }

    // ---- list ----

    fn list(
        &self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        q: &[(String, String)],
    ) -> (StatusCode, Value) {
        let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let selector = match param("labelSelector").filter(|s| !s.is_empty()) {
            Some(s) => match parse_selector(&s) {
                Ok(sel) => Some(sel),
                Err(msg) => {
                    return status_body(
                        400,
                        "BadRequest",
                        &format!("unable to parse requirement: {msg}"),
                        None,
                    );
                }
            },
            None => None,
        };
        // resourceVersionMatch=Exact below the history: 410 (list-expired-compacted-410); any
        // resourceVersion above the current one: 504 (list-future-resourceversion-504, after
        // the real server's 3 s wait, which this server does not make).
        if let Some(rv) = param("resourceVersion").and_then(|v| v.parse::<u64>().ok()) {
            if rv > self.rv {
                let (_, body) = status_body(
                    504,
                    "Timeout",
                    &format!(
                        "Timeout: Too large resource version: {rv}, current: {}",
                        self.rv
                    ),
                    Some(json!({"causes": [{"reason": "ResourceVersionTooLarge",
                        "message": "Too large resource version"}], "retryAfterSeconds": 1})),
                );
                return (StatusCode::GATEWAY_TIMEOUT, body);
            }
            if param("resourceVersionMatch").as_deref() == Some("Exact") && rv < self.watch.floor {
                return status_body(
                    410,
                    "Expired",
                    "The resourceVersion for the provided list is too old.",
                    None,
                );
            }
        }
        let limit = param("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(0);
        let (list_rv, start) = match param("continue").filter(|c| !c.is_empty()) {
            // rv -1: the token a 410 handed out, continuing at the latest revision.
            Some(token) => match decode_continue(&token) {
                Some((rv, start)) => (u64::try_from(rv).unwrap_or(self.rv), Some(start)),
                None => {
                    return status_body(
                        400,
                        "BadRequest",
                        "continue key is not valid: invalid continue token",
                        None,
                    );
                }
            },
            None => (self.rv, None),
        };
        let cluster_wide = ns.is_none() && rt.namespaced;
        let mut keyed: Vec<(String, &Value)> = self
            .objects
            .get(&(rt.group.clone(), rt.plural.clone()))
            .map(|m| {
                m.iter()
                    .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
                    .map(|((ons, name), v)| {
                        let key = if cluster_wide {
                            format!("{ons}/{name}")
                        } else {
                            name.clone()
                        };
                        (key, v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        let matching: Vec<(String, &Value)> = keyed
            .into_iter()
            .filter(|(k, _)| start.as_ref().is_none_or(|s| k.as_str() >= s.as_str()))
            .filter(|(_, v)| {
                selector.as_ref().is_none_or(|sel| {
                    let labels = v["metadata"]["labels"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    sel.iter().all(|r| r.matches(&labels))
                })
            })
            .collect();
        let take = if limit == 0 {
            matching.len()
        } else {
            limit.min(matching.len())
        };
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), json!(list_rv.to_string()));
        if take < matching.len() {
            let last = &matching[take - 1].0;
            meta.insert(
                "continue".into(),
                json!(encode_continue(
                    i64::try_from(list_rv).unwrap_or(i64::MAX),
                    &format!("{last}\u{0}")
                )),
            );
            if selector.is_none() {
                meta.insert("remainingItemCount".into(), json!(matching.len() - take));
            }
        }
        let items: Vec<Value> = matching[..take]
            .iter()
            .map(|(_, v)| {
                let mut item = (*v).clone();
                if let Some(m) = item.as_object_mut() {
                    m.remove("kind");
                    m.remove("apiVersion");
                }
                item
            })
            .collect();
        let mut body = Map::new();
        body.insert("kind".into(), json!(format!("{}List", rt.kind)));
        body.insert("apiVersion".into(), json!(gv));
        body.insert("metadata".into(), Value::Object(meta));
        body.insert("items".into(), Value::Array(items));
        (StatusCode::OK, Value::Object(body))
    }

    // ---- server-side apply ----

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        name: &str,
        cfg: Value,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<(StatusCode, Value), Value> {
        if manager.is_empty() {
            return Err(status_body(
                422,
                "Invalid",
                "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                None,
            )
            .1);
        }
        check_identity(rt, gv, ns, name, &cfg)?;
        // What the real server refuses, in its order: managedFields (400), fields the schema
        // does not declare (500), then, on the object to store, manager conflicts (409), a
        // stale resourceVersion (409) and validation (422).
        check_no_managed_fields(&cfg)?;
        self.check_declared(rt, gv, ns, name, &cfg)?;
        let precondition = cfg.clone();
        let schema = Schema::of(rt);
        let mut cfg = strip_server_fields(cfg);
        if schema.builtin {
            canonicalize_quantities(&mut cfg, &mut Vec::new());
        }
        let applied = fieldset(schema, &cfg);
        let existing = self.get_stored(rt, ns, name).cloned();
        let now = now();
        let Some(old) = existing else {
            // Create.
            if let Some(ns) = ns {
                if !self.namespace_exists(ns) {
                    return Err(not_found_body("", "namespaces", ns));
                }
            }
            let mut obj = merge(schema, None, &cfg, &mut Vec::new());
            // A refused create allocates nothing (uid, resourceVersion, IPs, node ports).
            let counters = (self.rv, self.uid, self.ip, self.node_port);
            self.finish_new(rt, gv, ns, name, &mut obj, dry_run);
            if let Err(invalid) = self.validate(rt, name, &obj) {
                (self.rv, self.uid, self.ip, self.node_port) = counters;
                return Err(invalid);
            }
            let entries = vec![ManagedEntry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                api_version: gv.to_string(),
                time: Some(now),
                subresource: None,
                set: applied,
            }];
            set_managed(&mut obj, &entries);
            let obj = order_object(obj);
            if !dry_run {
                self.put(rt, ns, name, obj.clone());
            }
            return Ok((StatusCode::CREATED, obj));
        };

        let mut entries = managed_entries(&old);
        let mut base = old.clone();
        base.as_object_mut()
            .unwrap()
            .insert("apiVersion".into(), json!(gv));
        let mut new = merge(schema, Some(&base), &cfg, &mut Vec::new());
        let previous: BTreeSet<FPath> = entries
            .iter()
            .find(|e| e.is_apply_by(manager))
            .map(|e| e.set.clone())
            .unwrap_or_default();
        let others: BTreeSet<FPath> = entries
            .iter()
            .filter(|e| !e.is_apply_by(manager))
            .flat_map(|e| e.set.iter().cloned())
            .collect();
        // Fields this manager stopped applying and nobody else owns are removed.
        let mut dropped: Vec<FPath> = previous
            .difference(&applied)
            .filter(|p| !others.iter().any(|o| o.starts_with(p)))
            .cloned()
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in &dropped {
            remove_path(schema, &mut new, p);
        }
        self.defaults(rt, &mut new);
        let cmp = compare(schema, &old, &new);
        let changed: BTreeSet<FPath> = cmp.added.union(&cmp.modified).cloned().collect();
        let mut conflicts: Vec<(String, FPath)> = Vec::new();
        for e in entries.iter().filter(|e| !e.is_apply_by(manager)) {
            for p in e.set.intersection(&changed) {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
        if !conflicts.is_empty() && !force {
            return Err(conflict_body(&conflicts));
        }
        check_resource_version(rt, name, &precondition, &old)?;
        self.validate(rt, name, &new)?;
        let taken: BTreeSet<FPath> = conflicts.iter().map(|(_, p)| p.clone()).collect();
        for e in entries.iter_mut().filter(|e| !e.is_apply_by(manager)) {
            e.set = e.set.difference(&taken).cloned().collect();
            e.set = e.set.difference(&cmp.removed).cloned().collect();
        }
        let object_changed = !changed.is_empty() || !cmp.removed.is_empty();
        match entries.iter_mut().find(|e| e.is_apply_by(manager)) {
            Some(e) => {
                if e.set != applied || object_changed {
                    e.time = Some(now.clone());
                }
                e.set = applied.clone();
                e.api_version = gv.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: "Apply".into(),
                api_version: gv.to_string(),
                time: Some(now.clone()),
                subresource: None,
                set: applied.clone(),
            }),
        }
        entries.retain(|e| !e.set.is_empty());
        let old_entries = managed_entries(&old);
        if !object_changed && same_ownership(&old_entries, &entries) {
            // Nothing to write: same resourceVersion, same times.
            let mut out = old.clone();
            out.as_object_mut()
                .unwrap()
                .insert("apiVersion".into(), json!(gv));
            return Ok((StatusCode::OK, order_object(out)));
        }
        self.finish_update(rt, &old, &mut new, dry_run);
        set_managed(&mut new, &entries);
        let new = order_object(new);
        if !dry_run {
            self.put(rt, ns, name, new.clone());
        }
        Ok((StatusCode::OK, new))
    }

    // ---- merge and strategic merge patches (Updates) ----

    /// A JSON merge patch or a strategic merge patch of a stored object: an Update, whose
    /// manager silently takes ownership of what it changed. As the real patch handler does:
    /// the patch is applied to the stored object, the result decoded into the kind's type
    /// (fields it does not declare are dropped: a `Warning` each, in `warnings`, or a 422 under
    /// `fieldValidation=Strict`; a value of the wrong type is a 422 whatever the directive),
    /// then the resourceVersion precondition, defaults and validation.
    fn patch_update(
        &mut self,
        target: &Target<'_>,
        patch: &Value,
        how: &UpdateOptions<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<(StatusCode, Value), Value> {
        let Target { rt, gv, ns, name } = *target;
        if how.patch == UpdatePatch::Replace {
            check_identity(rt, gv, ns, name, patch)?;
            check_micro_times(rt, patch)?;
        }
        let Some(old) = self.get_stored(rt, ns, name).cloned() else {
            if how.patch == UpdatePatch::Replace && allows_create_on_update(rt) {
                return self.create(rt, gv, ns, patch.clone(), how.manager, how.dry_run);
            }
            return Err(not_found_body(&rt.group, &rt.plural, name));
        };
        if how.patch == UpdatePatch::Replace
            && !allows_unconditional_update(rt)
            && patch["metadata"]["resourceVersion"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            return Err(resource_version_required(rt, name));
        }
        let schema = Schema::of(rt);
        let mut base = old.clone();
        base.as_object_mut()
            .unwrap()
            .insert("apiVersion".into(), json!(gv));
        let mut new = match how.patch {
            UpdatePatch::Merge => merge_patch(&base, patch, false),
            UpdatePatch::Strategic => strategic_merge_patch(schema, &base, patch)?,
            UpdatePatch::Replace => {
                let mut new = patch.clone();
                new["apiVersion"] = json!(gv);
                if self.has_status_subresource(rt) {
                    match old.get("status") {
                        Some(status) => new["status"] = status.clone(),
                        None => {
                            if let Some(o) = new.as_object_mut() {
                                o.remove("status");
                            }
                        }
                    }
                }
                new
            }
        };
        if how.patch != UpdatePatch::Replace {
            check_micro_times(rt, &new)?;
        }
        // The patched object as the real server decodes it: after a merge patch, the JSON
        // evanphx/json-patch wrote, whose key order is the order unknown fields are found in.
        let decoded = match how.patch {
            UpdatePatch::Merge => merge_patch(&base, patch, true),
            UpdatePatch::Strategic | UpdatePatch::Replace => new.clone(),
        };
        // What the request's value is in the 422 of a patched object that does not decode:
        // the merge-patched JSON, or the strategic patch as Go prints a map (`%+v`).
        let shown = || match how.patch {
            UpdatePatch::Merge | UpdatePatch::Replace => go_json(&decoded),
            UpdatePatch::Strategic => go_format(patch),
        };
        let unknown = match self.unknown_fields(rt, gv, &decoded) {
            Ok(unknown) => unknown,
            Err(decode) => return Err(patch_invalid_body(&shown(), &decode)),
        };
        if !unknown.is_empty() {
            let errors: Vec<String> = unknown
                .iter()
                .map(|p| format!("unknown field {}", json!(seg_path_string(p))))
                .collect();
            match how.validation {
                FieldValidation::Strict => {
                    let detail = format!("strict decoding error: {}", errors.join(", "));
                    return Err(patch_invalid_body(&shown(), &detail));
                }
                FieldValidation::Warn => {
                    for e in errors {
                        if !warnings.contains(&e) {
                            warnings.push(e);
                        }
                    }
                }
                FieldValidation::Ignore => {}
            }
            // Decoding into the type drops them (the paths hold in `new` too: same maps and
            // lists, keys in another order).
            for p in unknown.iter().rev() {
                remove_seg_path(&mut new, p);
            }
        }
        check_resource_version(rt, name, patch, &old)?;
        // The server owns its bookkeeping.
        for k in [
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "generation",
            "managedFields",
            "name",
            "namespace",
        ] {
            if let Some(v) = old["metadata"].get(k) {
                new["metadata"][k] = v.clone();
            }
        }
        if schema.builtin {
            canonicalize_quantities(&mut new, &mut Vec::new());
        }
        self.defaults(rt, &mut new);
        self.validate(rt, name, &new)?;
        let mut cmp = compare(schema, &old, &new);
        if how.subresource == Some("status") {
            // A status write owns the status fields it changes.
            let status = compare_status(schema, &old, &new);
            cmp.added.extend(status.added);
            cmp.modified.extend(status.modified);
            cmp.removed.extend(status.removed);
        }
        if cmp.added.is_empty() && cmp.modified.is_empty() && cmp.removed.is_empty() {
            return Ok((StatusCode::OK, order_object(base)));
        }
        let mut owned: BTreeSet<FPath> = cmp.added.union(&cmp.modified).cloned().collect();
        // A map node the update created is owned too (`".": {}`).
        for p in cmp.added.iter() {
            for n in 1..p.len() {
                let prefix = p[..n].to_vec();
                if value_at(schema, &old, &prefix).is_none()
                    && value_at(schema, &new, &prefix).is_some()
                {
                    owned.insert(prefix);
                }
            }
        }
        let mut entries = managed_entries(&old);
        for e in entries.iter_mut() {
            e.set = e.set.difference(&owned).cloned().collect();
            e.set = e.set.difference(&cmp.removed).cloned().collect();
        }
        let now = (how.subresource != Some("scale")).then(now);
        let manager = how.manager;
        match entries.iter_mut().find(|e| {
            e.manager == manager
                && e.operation == "Update"
                && e.subresource.as_deref() == how.subresource
        }) {
            Some(e) => {
                e.set.extend(owned);
                e.time = now;
                e.api_version = gv.to_string();
            }
            None => entries.push(ManagedEntry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: gv.to_string(),
                time: now,
                subresource: how.subresource.map(str::to_string),
                set: owned,
            }),
        }
        entries.retain(|e| !e.set.is_empty());
        self.finish_update(rt, &old, &mut new, how.dry_run);
        if how.subresource == Some("status") {
            // A status write never changes the generation (the status strategy).
            match old["metadata"].get("generation") {
                Some(g) => new["metadata"]["generation"] = g.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove("generation");
                    }
                }
            }
        }
        set_managed(&mut new, &entries);
        let new = order_object(new);
        if !how.dry_run {
            self.put(rt, ns, name, new.clone());
        }
        Ok((StatusCode::OK, new))
    }

    // ---- create (POST) ----

    /// A POST of a new object: 201 with it as stored, an `Update` managedFields entry for
    /// `manager` owning what the body set; 409 `AlreadyExists` when the name is taken.
    fn create(
        &mut self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        body: Value,
        manager: &str,
        dry_run: bool,
    ) -> Result<(StatusCode, Value), Value> {
        let mut name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            if let Some(prefix) = body["metadata"]["generateName"].as_str() {
                // The real server appends five random characters; here, the next uid's tail.
                let uid = self.next_uid();
                name = format!("{prefix}{}", &uid[uid.len() - 5..]);
            }
        }
        check_identity(rt, gv, ns, &name, &body)?;
        check_micro_times(rt, &body)?;
        if name.is_empty() {
            let causes = [Cause::required("metadata.name".into())];
            return Err(invalid_causes_body(rt, "", &causes));
        }
        if let Some(ns) = ns {
            if !self.namespace_exists(ns) {
                return Err(not_found_body("", "namespaces", ns));
            }
        }
        if self.get_stored(rt, ns, &name).is_some() {
            return Err(already_exists_body(rt, &name));
        }
        let schema = Schema::of(rt);
        let mut cfg = strip_server_fields(body);
        if let Some(meta) = cfg["metadata"].as_object_mut() {
            meta.insert("name".into(), json!(name));
        }
        if schema.builtin {
            canonicalize_quantities(&mut cfg, &mut Vec::new());
        }
        let owned = fieldset(schema, &cfg);
        let mut obj = cfg;
        let counters = (self.rv, self.uid, self.ip, self.node_port);
        self.finish_new(rt, gv, ns, &name, &mut obj, dry_run);
        if let Err(invalid) = self.validate(rt, &name, &obj) {
            (self.rv, self.uid, self.ip, self.node_port) = counters;
            return Err(invalid);
        }
        let entries = vec![ManagedEntry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: gv.to_string(),
            time: Some(now()),
            subresource: None,
            set: owned,
        }];
        set_managed(&mut obj, &entries);
        let obj = order_object(obj);
        if !dry_run {
            self.put(rt, ns, &name, obj.clone());
        }
        Ok((StatusCode::CREATED, obj))
    }

    /// Whether the kind has a `status` subresource (a PUT of the object then keeps its status).
    fn has_status_subresource(&self, rt: &ResourceType) -> bool {
        let status = format!("{}/status", rt.plural);
        self.resources
            .get(&join_gv(&rt.group, &rt.version))
            .is_some_and(|entries| entries.iter().any(|e| e["name"] == status.as_str()))
    }

    // ---- delete ----

    fn delete(
        &mut self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> (StatusCode, Value) {
        let Some(mut obj) = self.get_stored(rt, ns, name).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                not_found_body(&rt.group, &rt.plural, name),
            );
        };
        obj.as_object_mut()
            .unwrap()
            .insert("apiVersion".into(), json!(gv));
        let foreground = options["propagationPolicy"] == "Foreground";
        let has_finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if foreground || has_finalizers {
            let meta = obj["metadata"].as_object_mut().unwrap();
            if !meta.contains_key("deletionTimestamp") {
                // Marking an object as deleting raises its generation, if it has one
                // (registry store `markAsDeleting`): delete-foreground-200.
                if let Some(g) = meta
                    .get("generation")
                    .and_then(Value::as_i64)
                    .filter(|g| *g > 0)
                {
                    meta.insert("generation".into(), json!(g + 1));
                }
                meta.insert("deletionTimestamp".into(), json!(now()));
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
            if foreground {
                let f = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Some(list) = f.as_array_mut() {
                    if !list.iter().any(|x| x == "foregroundDeletion") {
                        list.push(json!("foregroundDeletion"));
                    }
                }
            }
            if !dry_run {
                let rv = self.next_rv();
                obj["metadata"]["resourceVersion"] = json!(rv);
                let obj = order_object(obj.clone());
                self.put(rt, ns, name, obj.clone());
                return (StatusCode::OK, obj);
            }
            return (StatusCode::OK, order_object(obj));
        }
        if !dry_run {
            // The deletion is a write: the object returned carries its resourceVersion.
            let rv = self.next_rv();
            obj["metadata"]["resourceVersion"] = json!(rv);
            self.remove(rt, ns, name, order_object(obj.clone()));
        }
        if rt.group.is_empty() && matches!(rt.plural.as_str(), "services" | "pods" | "namespaces") {
            return (StatusCode::OK, order_object(obj));
        }
        let mut details = Map::new();
        details.insert("name".into(), json!(name));
        if !rt.group.is_empty() {
            details.insert("group".into(), json!(rt.group));
        }
        details.insert("kind".into(), json!(rt.plural));
        details.insert("uid".into(), obj["metadata"]["uid"].clone());
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": Value::Object(details)});
        (StatusCode::OK, body)
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .get(&(String::new(), "namespaces".to_string()))
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_string())))
    }

    /// Identity, bookkeeping and defaults of a created object.
    fn finish_new(
        &mut self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        name: &str,
        obj: &mut Value,
        dry_run: bool,
    ) {
        let uid = self.next_uid();
        let rv = (!dry_run).then(|| self.next_rv());
        let o = obj.as_object_mut().unwrap();
        o.insert("apiVersion".into(), json!(gv));
        o.insert("kind".into(), json!(rt.kind));
        let meta = o
            .entry("metadata")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .unwrap();
        meta.insert("name".into(), json!(name));
        if let Some(ns) = ns {
            meta.insert("namespace".into(), json!(ns));
        }
        meta.insert("uid".into(), json!(uid));
        if let Some(rv) = rv {
            meta.insert("resourceVersion".into(), json!(rv));
        }
        if has_generation(rt) {
            meta.insert("generation".into(), json!(1));
        }
        meta.insert("creationTimestamp".into(), json!(now()));
        self.defaults(rt, obj);
    }

    /// resourceVersion and generation of an updated object.
    fn finish_update(&mut self, rt: &ResourceType, old: &Value, new: &mut Value, dry_run: bool) {
        if !dry_run {
            let rv = self.next_rv();
            new["metadata"]["resourceVersion"] = json!(rv);
        }
        if has_generation(rt) {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                    m.remove("apiVersion");
                }
                v
            };
            let annotations_changed = rt.kind == "Deployment"
                && old["metadata"]["annotations"] != new["metadata"]["annotations"];
            // A label change alone does not (watch-deployments-200: `kubectl label` kept
            // generation 2).
            if strip(old) != strip(new) || annotations_changed {
                let g = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
                new["metadata"]["generation"] = json!(g);
            }
        }
    }

    fn defaults(&mut self, rt: &ResourceType, obj: &mut Value) {
        apply_defaults(&rt.group, &rt.kind, obj, &mut self.ip, &mut self.node_port);
    }
}

fn has_generation(rt: &ResourceType) -> bool {
    matches!(
        (rt.group.as_str(), rt.kind.as_str()),
        ("apps", _)
            | ("batch", _)
            | ("networking.k8s.io", "Ingress" | "NetworkPolicy")
            | ("policy", _)
            | ("apiextensions.k8s.io", _)
    ) || !is_builtin_group(&rt.group)
}

fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

fn check_identity(
    rt: &ResourceType,
    gv: &str,
    ns: Option<&str>,
    name: &str,
    cfg: &Value,
) -> Result<(), Value> {
    let kind = cfg["kind"].as_str().unwrap_or("");
    let api = cfg["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() || api.is_empty() {
        return Err(status_body(
            400,
            "BadRequest",
            "error decoding YAML: Object 'Kind' is missing in the apply patch",
            None,
        )
        .1);
    }
    if kind != rt.kind || split_gv(api).0 != rt.group {
        return Err(status_body(
            400,
            "BadRequest",
            &format!(
                "the API version in the data ({api}) does not match the expected API version ({gv})"
            ),
            None,
        )
        .1);
    }
    let body_name = cfg["metadata"]["name"].as_str().unwrap_or("");
    if !body_name.is_empty() && body_name != name {
        return Err(status_body(
            400,
            "BadRequest",
            &format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            ),
            None,
        )
        .1);
    }
    if let (Some(ns), Some(body_ns)) = (ns, cfg["metadata"]["namespace"].as_str()) {
        if body_ns != ns {
            return Err(status_body(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
                None,
            )
            .1);
        }
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// HTTP
// ------------------------------------------------------------------------------------------

#[derive(Debug, PartialEq, Eq)]
enum PathKind {
    Discovery,
    Collection,
    Object,
    Other,
}

/// Resource path parts: group/version, namespace, plural, name.
struct ResPath {
    gv: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

fn parse_res_path(path: &str) -> Option<ResPath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (gv, rest) = match segs.first() {
        Some(&"api") if segs.len() >= 3 => (segs[1].to_string(), &segs[2..]),
        Some(&"apis") if segs.len() >= 4 => (format!("{}/{}", segs[1], segs[2]), &segs[3..]),
        _ => return None,
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] if tail.len() <= 1 => Some(ResPath {
            gv,
            namespace: Some(ns.to_string()),
            plural: plural.to_string(),
            name: tail.first().map(|s| s.to_string()),
        }),
        [plural] => Some(ResPath {
            gv,
            namespace: None,
            plural: plural.to_string(),
            name: None,
        }),
        [plural, name] => Some(ResPath {
            gv,
            namespace: None,
            plural: plural.to_string(),
            name: Some(name.to_string()),
        }),
        _ => None,
    }
}

fn classify_path(path: &str) -> PathKind {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let discovery = matches!(
        segs.as_slice(),
        ["version"] | ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _]
    );
    if discovery {
        return PathKind::Discovery;
    }
    match parse_res_path(path) {
        Some(p) if p.name.is_some() => PathKind::Object,
        Some(_) => PathKind::Collection,
        None => PathKind::Other,
    }
}

fn respond(code: StatusCode, body: &Value, extra: &[(&str, String)], pf_headers: bool) -> Resp {
    let mut b = Response::builder()
        .status(code)
        .header("Cache-Control", "no-cache, private")
        .header("Content-Type", "application/json");
    // The authorization filter's 403 (responsewriters.Forbidden): forbidden-403.
    if code == StatusCode::FORBIDDEN {
        b = b.header("X-Content-Type-Options", "nosniff");
    }
    if pf_headers {
        b = b
            .header("X-Kubernetes-Pf-Flowschema-Uid", PF_FLOWSCHEMA)
            .header("X-Kubernetes-Pf-Prioritylevel-Uid", PF_PRIORITY);
    }
    for (k, v) in extra {
        b = b.header(*k, v.as_str());
    }
    b.body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

async fn handle(
    shared: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<KubeBody>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name: &str| http::header(&req, name);
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let auth = header("authorization");
    let body = http::body_bytes(req).await;
    let logged = LoggedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        content_type: content_type.clone(),
        user_agent: user_agent.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
        at: std::time::Instant::now(),
    };
    if shared.lock().unwrap_or_else(|e| e.into_inner()).gone {
        return Err(std::io::Error::other("the test server went away"));
    }
    let fault = {
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        let pairs = query_pairs(&query);
        let continued = pairs.iter().any(|(k, v)| k == "continue" && !v.is_empty());
        let watching = watch::is_watch(&pairs) || watch::strip_legacy_watch(&path).is_some();
        let found = st.faults.iter().position(|f| {
            f.times > 0
                && f.method.as_deref().is_none_or(|m| m == method.as_str())
                && path.starts_with(&f.path_prefix)
                && (continued
                    || !matches!(
                        f.kind,
                        FaultKind::ExpiredContinue | FaultKind::StallContinue(_)
                    ))
                && !(watching && matches!(f.kind, FaultKind::ExpiredList))
        });
        found.map(|i| {
            let f = &mut st.faults[i];
            if f.times != usize::MAX {
                f.times -= 1;
            }
            f.kind.clone()
        })
    };
    // A LIST is in flight until this function returns: its answer is complete then.
    let _list = logged.is_list().then(|| ListInFlight::arrive(&shared));
    // Logged on arrival (so a request still being delayed shows), its status set on answer.
    let at = logged.at;
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .push(logged);
    let log = |shared: &Arc<Mutex<State>>, status: u16| {
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = st
            .log
            .iter_mut()
            .rev()
            .find(|e| e.at == at && e.path == path)
        {
            entry.status = status;
        }
    };
    match fault {
        Some(FaultKind::Drop) => {
            return Err(std::io::Error::other("injected fault: connection dropped"));
        }
        Some(FaultKind::Delay(d) | FaultKind::StallContinue(d)) => tokio::time::sleep(d).await,
        Some(FaultKind::TooManyRequests { retry_after }) => {
            log(&shared, 429);
            return Ok(full(too_many_requests(retry_after)));
        }
        Some(FaultKind::Status(code)) => {
            let (code, body) = fault_status(code, &method, &path, &query, "limited");
            log(&shared, code.as_u16());
            return Ok(full(respond(
                code,
                &body,
                &[],
                code != StatusCode::UNAUTHORIZED,
            )));
        }
        Some(FaultKind::Invalid {
            field,
            value,
            detail,
        }) => {
            let body = {
                let st = shared.lock().unwrap_or_else(|e| e.into_inner());
                invalid_body(&st, &path, &field, &value, &detail)
            };
            log(&shared, 422);
            return Ok(full(respond(
                StatusCode::UNPROCESSABLE_ENTITY,
                &body,
                &[],
                true,
            )));
        }
        Some(FaultKind::Forbidden { user }) => {
            let (code, body) = fault_status(403, &method, &path, &query, &user);
            log(&shared, 403);
            return Ok(full(respond(code, &body, &[], true)));
        }
        Some(FaultKind::ExpiredList) => {
            let (code, body) = status_body(
                410,
                "Expired",
                "The resourceVersion for the provided list is too old.",
                None,
            );
            log(&shared, 410);
            return Ok(full(respond(code, &body, &[], true)));
        }
        Some(FaultKind::ExpiredContinue) => {
            let body = expired_continue_body(&query_pairs(&query));
            log(&shared, 410);
            return Ok(full(respond(StatusCode::GONE, &body, &[], true)));
        }
        Some(FaultKind::AcceptUnchanged) => {
            let (code, value) = {
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                route(
                    &mut st,
                    &Method::GET,
                    &path,
                    &[],
                    None,
                    user_agent.as_deref(),
                    &[],
                    &mut Vec::new(),
                )
            };
            log(&shared, code.as_u16());
            return Ok(full(respond(code, &value, &[], true)));
        }
        None => {}
    }
    if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401});
        log(&shared, 401);
        return Ok(full(respond(StatusCode::UNAUTHORIZED, &body, &[], false)));
    }
    let mut q = query_pairs(&query);
    // Watches: `?watch=true|1`, or a legacy `/watch/` path.
    let legacy = watch::strip_legacy_watch(&path);
    if method == Method::GET && (legacy.is_some() || watch::is_watch(&q)) {
        if legacy.is_some() {
            q.push(("watch".into(), "true".into()));
        }
        let rpath = legacy.unwrap_or_else(|| path.clone());
        let opened = {
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            let found = parse_res_path(&rpath).and_then(|p| {
                let rt = st.resource(&p.gv, &p.plural)?;
                (p.namespace.is_none() || rt.namespaced).then_some((p, rt))
            });
            match found {
                None => Err(watch::Refused::Status(
                    not_found_path().0,
                    not_found_path().1,
                )),
                Some((p, rt)) => {
                    let ns = if rt.namespaced {
                        p.namespace.as_deref()
                    } else {
                        None
                    };
                    let target = format!("{path}?{query}");
                    st.open_watch(&rt, &p.gv, ns, p.name.as_deref(), &q, &target)
                }
            }
        };
        return Ok(match opened {
            Ok(opened) => {
                log(&shared, 200);
                watch::stream(Arc::clone(&shared), opened)
            }
            Err(watch::Refused::Expired(line)) => {
                log(&shared, 200);
                watch::expired_response(line)
            }
            Err(watch::Refused::Status(code, body)) => {
                log(&shared, code.as_u16());
                full(respond(code, &body, &[], true))
            }
        });
    }
    let mut warnings = Vec::new();
    let (code, value) = {
        let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
        route(
            &mut st,
            &method,
            &path,
            &q,
            content_type.as_deref(),
            user_agent.as_deref(),
            &body,
            &mut warnings,
        )
    };
    log(&shared, code.as_u16());
    // One `Warning` header per warning (k8s.io/apiserver's warning recorder:
    // `299 - "<text>"`, the text quoted).
    let mut headers: Vec<(&str, String)> = warnings
        .iter()
        .map(|w| ("Warning", format!("299 - {}", json!(w))))
        .collect();
    if let Some(secs) = value["details"]["retryAfterSeconds"].as_u64() {
        headers.push(("Retry-After", secs.to_string()));
    }
    Ok(full(respond(code, &value, &headers, true)))
}

/// A whole answer (with its `Content-Length`).
fn full(resp: Resp) -> Response<KubeBody> {
    resp.map(KubeBody::Full)
}

/// What API Priority and Fairness (and the max-in-flight filter) answer when they reject a
/// request (k8s.io/apiserver `pkg/server/filters`, `tooManyRequests`): `Retry-After`, then Go's
/// `http.Error(w, "Too many requests, please try again later.", 429)`, a plain-text line with
/// `Content-Type: text/plain; charset=utf-8` and `X-Content-Type-Options: nosniff`, not a
/// `metav1.Status`. The filter runs before any handler: `Cache-Control` (set further out) and
/// the flow-control headers (set by APF on rejection too) are there, nothing else.
fn too_many_requests(retry_after: u64) -> Resp {
    Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("Cache-Control", "no-cache, private")
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Retry-After", retry_after.to_string())
        .header("X-Content-Type-Options", "nosniff")
        .header("X-Kubernetes-Pf-Flowschema-Uid", PF_FLOWSCHEMA)
        .header("X-Kubernetes-Pf-Prioritylevel-Uid", PF_PRIORITY)
        .body(Full::new(Bytes::from_static(
            b"Too many requests, please try again later.\n",
        )))
        .unwrap()
}

fn fault_status(
    code: u16,
    method: &Method,
    path: &str,
    query: &str,
    user: &str,
) -> (StatusCode, Value) {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match code.as_u16() {
        401 => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}),
        403 => {
            let p = parse_res_path(path);
            let (group, plural, ns) = match &p {
                Some(p) => (split_gv(&p.gv).0, p.plural.clone(), p.namespace.clone()),
                None => (String::new(), String::new(), None),
            };
            let q = query_pairs(query);
            let verb = if method == Method::GET && watch::is_watch(&q) {
                "watch"
            } else if p.as_ref().is_some_and(|p| p.name.is_none()) && method == Method::GET {
                "list"
            } else {
                "get"
            };
            let resource = if group.is_empty() {
                plural.clone()
            } else {
                format!("{plural}.{group}")
            };
            let scope = match ns {
                Some(ns) => format!(" in the namespace \"{ns}\""),
                None => " at the cluster scope".to_string(),
            };
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{plural}\" in API group \"{group}\"{scope}"),
                "reason": "Forbidden", "details": {"group": group, "kind": plural}, "code": 403})
        }
        410 => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
            "reason": "Expired", "code": 410}),
        503 => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "the server is currently unable to handle the request", "reason": "ServiceUnavailable", "code": 503}),
        504 => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Timeout: request did not complete within the allotted timeout", "reason": "Timeout",
            "details": {}, "code": 504}),
        c => json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Internal error occurred: injected fault", "reason": "InternalError",
            "details": {"causes": [{"message": "injected fault"}]}, "code": c}),
    };
    (code, body)
}

/// The real server's 422 for one invalid field of the object at `path`
/// (`apierrors.NewInvalid`).
fn invalid_body(st: &State, path: &str, field: &str, value: &str, detail: &str) -> Value {
    let p = parse_res_path(path);
    let (group, kind, name) = match &p {
        Some(p) => (
            split_gv(&p.gv).0,
            st.resource(&p.gv, &p.plural)
                .map(|r| r.kind)
                .unwrap_or_default(),
            p.name.clone().unwrap_or_default(),
        ),
        None => (String::new(), String::new(), String::new()),
    };
    let qualified = if group.is_empty() {
        kind.clone()
    } else {
        format!("{kind}.{group}")
    };
    let quoted = Value::String(value.to_string()).to_string();
    let body = format!("Invalid value: {quoted}: {detail}");
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !group.is_empty() {
        details.insert("group".into(), json!(group));
    }
    details.insert("kind".into(), json!(kind));
    details.insert(
        "causes".into(),
        json!([{"reason": "FieldValueInvalid", "message": body, "field": field}]),
    );
    status_body(
        422,
        "Invalid",
        &format!("{qualified} {} is invalid: {field}: {body}", json!(name)),
        Some(Value::Object(details)),
    )
    .1
}

#[allow(clippy::too_many_arguments)]
fn route(
    st: &mut State,
    method: &Method,
    path: &str,
    q: &[(String, String)],
    content_type: Option<&str>,
    user_agent: Option<&str>,
    body: &[u8],
    warnings: &mut Vec<String>,
) -> (StatusCode, Value) {
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Discovery.
    if method == Method::GET {
        match segs.as_slice() {
            ["version"] => {
                return (
                    StatusCode::OK,
                    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.13",
                    "gitCommit": "63adf010aa20e104c0b7043b47f42f50c9f72b17", "gitTreeState": "clean",
                    "buildDate": "2026-11-22T02:05:32Z", "goVersion": "go1.23.5", "compiler": "gc",
                    "platform": "linux/amd64"}),
                );
            }
            ["api"] => {
                return (
                    StatusCode::OK,
                    json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
                );
            }
            ["api", "v1"] => {
                return (
                    StatusCode::OK,
                    json!({"kind": "APIResourceList", "groupVersion": "v1",
                    "resources": st.resources.get("v1").cloned().unwrap_or_default()}),
                );
            }
            ["apis"] => {
                let groups: Vec<Value> = st
                    .groups
                    .iter()
                    .map(|(g, vs, p)| {
                        json!({"name": g,
                            "versions": vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect::<Vec<_>>(),
                            "preferredVersion": {"groupVersion": format!("{g}/{p}"), "version": p}})
                    })
                    .collect();
                return (
                    StatusCode::OK,
                    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
                );
            }
            ["apis", g, v] => {
                let gv = format!("{g}/{v}");
                if let Some(resources) = st.resources.get(&gv) {
                    return (
                        StatusCode::OK,
                        json!({"kind": "APIResourceList", "apiVersion": "v1",
                        "groupVersion": gv, "resources": resources}),
                    );
                }
                return not_found_path();
            }
            _ => {}
        }
    }
    if let Some(answer) = scale_subresource(st, method, &segs, q, user_agent, body) {
        return answer;
    }
    let Some(p) = parse_res_path(path) else {
        return not_found_path();
    };
    let Some(rt) = st.resource(&p.gv, &p.plural) else {
        return not_found_path();
    };
    if p.namespace.is_some() && !rt.namespaced {
        return not_found_path();
    }
    let ns = if rt.namespaced {
        p.namespace.as_deref()
    } else {
        None
    };
    let dry_run = param("dryRun").as_deref() == Some("All");
    match (method.clone(), &p.name) {
        (Method::GET, None) => st.list(&rt, &p.gv, ns, q),
        (Method::GET, Some(name)) => match st.get_stored(&rt, ns, name) {
            Some(obj) => {
                let mut obj = obj.clone();
                obj.as_object_mut()
                    .unwrap()
                    .insert("apiVersion".into(), json!(p.gv));
                (StatusCode::OK, order_object(obj))
            }
            None => (
                StatusCode::NOT_FOUND,
                not_found_body(&rt.group, &rt.plural, name),
            ),
        },
        (Method::PATCH, Some(name)) => {
            let ct = content_type
                .unwrap_or("")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let manager = param("fieldManager").unwrap_or_else(|| {
                user_agent
                    .and_then(|ua| ua.split('/').next())
                    .unwrap_or("")
                    .to_string()
            });
            let text = String::from_utf8_lossy(body).into_owned();
            // Strategic merge patch needs the Go types' patch strategies: custom resources
            // have none, and the real server refuses it for them (415).
            let accepted: &[&str] = if is_builtin_group(&rt.group) {
                &[
                    "application/merge-patch+json",
                    "application/strategic-merge-patch+json",
                    "application/apply-patch+yaml",
                ]
            } else {
                &[
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ]
            };
            match ct.as_str() {
                "application/apply-patch+yaml" => {
                    let cfg = match parse_yaml_or_json(&text) {
                        Ok(v) => v,
                        Err(e) => {
                            return status_body(
                                400,
                                "BadRequest",
                                &format!("error decoding YAML: {e}"),
                                None,
                            );
                        }
                    };
                    let force = param("force").as_deref() == Some("true");
                    match st.apply(&rt, &p.gv, ns, name, cfg, &manager, force, dry_run) {
                        Ok(ok) => ok,
                        Err(status) => (status_code(&status), status),
                    }
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json"
                    if accepted.contains(&ct.as_str()) =>
                {
                    let patch: Value = match serde_json::from_str(&text) {
                        Ok(v) => v,
                        Err(e) => {
                            return status_body(
                                400,
                                "BadRequest",
                                &format!("error decoding patch: {e}"),
                                None,
                            );
                        }
                    };
                    let target = Target {
                        rt: &rt,
                        gv: &p.gv,
                        ns,
                        name,
                    };
                    let how = UpdateOptions {
                        patch: if ct == "application/merge-patch+json" {
                            UpdatePatch::Merge
                        } else {
                            UpdatePatch::Strategic
                        },
                        manager: &manager,
                        subresource: None,
                        dry_run,
                        validation: FieldValidation::from_query(
                            param("fieldValidation").as_deref(),
                        ),
                    };
                    match st.patch_update(&target, &patch, &how, warnings) {
                        Ok(ok) => ok,
                        Err(status) => (status_code(&status), status),
                    }
                }
                // The real server's answer (`negotiation.NewUnsupportedMediaTypeError`), listing
                // what this server implements: the real list also has
                // `application/json-patch+json`, which this server does not implement, so it
                // does not claim it.
                _ => status_body(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: {}",
                        accepted.join(", ")
                    ),
                    None,
                ),
            }
        }
        (Method::PUT, Some(name)) => {
            let body: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return status_body(
                        400,
                        "BadRequest",
                        &format!(
                            "{} in version {} cannot be handled as a {}: {e}",
                            rt.kind,
                            json!(rt.version),
                            rt.kind
                        ),
                        None,
                    );
                }
            };
            let manager = request_manager(&param("fieldManager"), user_agent);
            let target = Target {
                rt: &rt,
                gv: &p.gv,
                ns,
                name,
            };
            let how = UpdateOptions {
                patch: UpdatePatch::Replace,
                manager: &manager,
                subresource: None,
                dry_run,
                validation: FieldValidation::from_query(param("fieldValidation").as_deref()),
            };
            match st.patch_update(&target, &body, &how, warnings) {
                Ok(ok) => ok,
                Err(status) => (status_code(&status), status),
            }
        }
        (Method::POST, None) => {
            let body: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return status_body(
                        400,
                        "BadRequest",
                        &format!(
                            "{} in version {} cannot be handled as a {}: {e}",
                            rt.kind,
                            json!(rt.version),
                            rt.kind
                        ),
                        None,
                    );
                }
            };
            let manager = request_manager(&param("fieldManager"), user_agent);
            match st.create(&rt, &p.gv, ns, body, &manager, dry_run) {
                Ok(ok) => ok,
                Err(status) => (status_code(&status), status),
            }
        }
        (Method::DELETE, Some(name)) => {
            let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let dry = dry_run
                || options["dryRun"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "All"));
            st.delete(&rt, &p.gv, ns, name, &options, dry)
        }
        (m, _) => status_body(
            405,
            "MethodNotAllowed",
            &format!(
                "the server does not allow this method on the requested resource ({m} is not served by this test server)"
            ),
            None,
        ),
    }
}

/// The manager of an Update: `?fieldManager=`, else the User-Agent's product (`curl`,
/// `kubectl-label`).
fn request_manager(field_manager: &Option<String>, user_agent: Option<&str>) -> String {
    field_manager.clone().unwrap_or_else(|| {
        user_agent
            .and_then(|ua| ua.split('/').next())
            .unwrap_or("")
            .to_string()
    })
}

/// The `scale` subresource of Deployments, StatefulSets and ReplicaSets
/// (`/apis/apps/v1/namespaces/<ns>/<plural>/<name>/scale`), as `kubectl scale` uses it: GET,
/// and PATCH with a merge patch of `spec.replicas` or PUT of a `Scale`, each an Update whose
/// managedFields entry has `subresource: scale` and no `time` (watch-deployments-200). `None`
/// for any other path.
fn scale_subresource(
    st: &mut State,
    method: &Method,
    segs: &[&str],
    q: &[(String, String)],
    user_agent: Option<&str>,
    body: &[u8],
) -> Option<(StatusCode, Value)> {
    let [
        "apis",
        "apps",
        "v1",
        "namespaces",
        ns,
        plural,
        name,
        "scale",
    ] = segs
    else {
        return None;
    };
    if !matches!(*plural, "deployments" | "statefulsets" | "replicasets") {
        return None;
    }
    let rt = st.resource("apps/v1", plural)?;
    let param = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let scale_of = |obj: &Value| {
        let selector = obj["spec"]["selector"]["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let meta = &obj["metadata"];
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"]},
            "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1)},
            "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector}})
    };
    let Some(current) = st.get_stored(&rt, Some(ns), name).cloned() else {
        return Some((
            StatusCode::NOT_FOUND,
            not_found_body(&rt.group, &rt.plural, name),
        ));
    };
    let patch = match *method {
        Method::GET => return Some((StatusCode::OK, scale_of(&current))),
        Method::PATCH | Method::PUT => match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(e) => {
                return Some(status_body(
                    400,
                    "BadRequest",
                    &format!("error decoding patch: {e}"),
                    None,
                ));
            }
        },
        _ => {
            return Some(status_body(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                None,
            ));
        }
    };
    let Some(replicas) = patch["spec"]["replicas"].as_i64() else {
        return Some((StatusCode::OK, scale_of(&current)));
    };
    let mut update = json!({"spec": {"replicas": replicas}});
    if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
        update["metadata"] = json!({"resourceVersion": rv});
    }
    let manager = request_manager(&param("fieldManager"), user_agent);
    let target = Target {
        rt: &rt,
        gv: "apps/v1",
        ns: Some(ns),
        name,
    };
    let how = UpdateOptions {
        patch: UpdatePatch::Merge,
        manager: &manager,
        subresource: Some("scale"),
        dry_run: param("dryRun").as_deref() == Some("All"),
        validation: FieldValidation::Ignore,
    };
    Some(
        match st.patch_update(&target, &update, &how, &mut Vec::new()) {
            Ok((code, obj)) => (code, scale_of(&obj)),
            Err(status) => (status_code(&status), status),
        },
    )
}

fn status_code(status: &Value) -> StatusCode {
    StatusCode::from_u16(status["code"].as_u64().unwrap_or(500) as u16)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn status_body(
    code: u16,
    reason: &str,
    message: &str,
    details: Option<Value>,
) -> (StatusCode, Value) {
    let mut m = Map::new();
    m.insert("kind".into(), json!("Status"));
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("metadata".into(), json!({}));
    m.insert("status".into(), json!("Failure"));
    m.insert("message".into(), json!(message));
    m.insert("reason".into(), json!(reason));
    if let Some(d) = details {
        m.insert("details".into(), d);
    }
    m.insert("code".into(), json!(code));
    (StatusCode::from_u16(code).unwrap(), Value::Object(m))
}

fn not_found_path() -> (StatusCode, Value) {
    status_body(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

/// `deployments.apps "x" not found`, details `{name, group, kind: <plural>}`.
fn not_found_body(group: &str, plural: &str, name: &str) -> Value {
    let resource = if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    };
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !group.is_empty() {
        details.insert("group".into(), json!(group));
    }
    details.insert("kind".into(), json!(plural));
    status_body(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        Some(Value::Object(details)),
    )
    .1
}

fn conflict_body(conflicts: &[(String, FPath)]) -> Value {
    let n = conflicts.len();
    let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
    for (m, p) in conflicts {
        let shown = path_string(p);
        match by_manager.iter_mut().find(|(x, _)| x == m) {
            Some((_, v)) => v.push(shown),
            None => by_manager.push((m.clone(), vec![shown])),
        }
    }
    let text = if n == 1 {
        format!(
            "conflict with \"{}\": {}",
            conflicts[0].0,
            path_string(&conflicts[0].1)
        )
    } else if by_manager.len() == 1 {
        let (m, paths) = &by_manager[0];
        let mut s = format!("conflicts with \"{m}\":");
        for p in paths {
            s.push_str(&format!("\n- {p}"));
        }
        s
    } else {
        let mut s = "conflicts with".to_string();
        for (m, paths) in &by_manager {
            s.push_str(&format!("\n\"{m}\":"));
            for p in paths {
                s.push_str(&format!("\n- {p}"));
            }
        }
        s
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\""), "field": path_string(p)}))
        .collect();
    status_body(
        409,
        "Conflict",
        &format!(
            "Apply failed with {n} conflict{}: {text}",
            if n == 1 { "" } else { "s" }
        ),
        Some(json!({"causes": causes})),
    )
    .1
}

// ------------------------------------------------------------------------------------------
// Server-side apply: field sets, merge, compare
// ------------------------------------------------------------------------------------------

/// A field path as FieldsV1 tokens: `f:spec`, `k:{"name":"web"}`, `v:"x"`.
type FPath = Vec<String>;

#[derive(Debug, Clone, Copy)]
struct Schema<'a> {
    kind: &'a str,
    builtin: bool,
}

impl<'a> Schema<'a> {
    fn of(rt: &'a ResourceType) -> Schema<'a> {
        Schema {
            kind: &rt.kind,
            builtin: is_builtin_group(&rt.group),
        }
    }
}

enum ListType {
    Map(&'static [&'static str]),
    Set,
    Atomic,
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The last two field names (`""` where there are fewer): a field's parent and its own name.
fn last_two(names: &[String]) -> (&str, &str) {
    let at = |from_end: usize| {
        names
            .len()
            .checked_sub(from_end)
            .and_then(|i| names.get(i))
            .map_or("", String::as_str)
    };
    (at(2), at(1))
}

/// The list type at a field, from the field names leading to it (list items add no name), as
/// the built-in types declare it (`x-kubernetes-list-type`/`-map-keys`); custom resources
/// without such markers have atomic lists.
fn list_type(s: Schema<'_>, names: &[String]) -> ListType {
    if !s.builtin {
        return ListType::Atomic;
    }
    let (parent, last) = last_two(names);
    match last {
        l if CONTAINER_LISTS.contains(&l) => ListType::Map(&["name"]),
        "ports" if CONTAINER_LISTS.contains(&parent) => {
            ListType::Map(&["containerPort", "protocol"])
        }
        "ports" if s.kind == "Service" && names.len() == 2 => ListType::Map(&["port", "protocol"]),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => ListType::Map(&["name"]),
        "volumeMounts" => ListType::Map(&["mountPath"]),
        "volumeDevices" => ListType::Map(&["devicePath"]),
        "hostAliases" => ListType::Map(&["ip"]),
        "topologySpreadConstraints" => ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
        "ownerReferences" => ListType::Map(&["uid"]),
        "conditions" => ListType::Map(&["type"]),
        "finalizers" if parent == "metadata" => ListType::Set,
        _ => ListType::Atomic,
    }
}

/// Maps and structs the built-in types declare atomic.
fn atomic_map(s: Schema<'_>, names: &[String]) -> bool {
    if !s.builtin {
        return false;
    }
    matches!(
        names.last().map(String::as_str).unwrap_or(""),
        "selector"
            | "podSelector"
            | "namespaceSelector"
            | "labelSelector"
            | "fieldRef"
            | "resourceFieldRef"
            | "configMapKeyRef"
            | "secretKeyRef"
            | "roleRef"
    )
}

/// Defaults of list-key fields: a port's protocol.
fn key_default(name: &str) -> Option<Value> {
    (name == "protocol").then(|| json!("TCP"))
}

fn key_of(item: &Value, keys: &[&str]) -> Option<Map<String, Value>> {
    let mut sorted: Vec<&str> = keys.to_vec();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        match item.get(k).cloned().or_else(|| key_default(k)) {
            Some(v) => {
                m.insert(k.to_string(), v);
            }
            None => return None,
        }
    }
    Some(m)
}

fn key_token(item: &Value, keys: &[&str]) -> Option<String> {
    key_of(item, keys).map(|m| format!("k:{}", serde_json::to_string(&Value::Object(m)).unwrap()))
}

/// Metadata a manager never owns.
const SERVER_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// Every owned-able path of a value: leaves, atomic values, empty maps, list items (with their
/// own entry, the `.` of FieldsV1) and set members.
fn fieldset(s: Schema<'_>, obj: &Value) -> BTreeSet<FPath> {
    let mut out = BTreeSet::new();
    collect(s, obj, &mut Vec::new(), &mut Vec::new(), &mut out);
    out
}

fn collect(
    s: Schema<'_>,
    v: &Value,
    path: &mut FPath,
    names: &mut Vec<String>,
    out: &mut BTreeSet<FPath>,
) {
    match v {
        Value::Object(m) => {
            if !path.is_empty() && (m.is_empty() || atomic_map(s, names)) {
                out.insert(path.clone());
                return;
            }
            for (k, child) in m {
                if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "status") {
                    continue;
                }
                if path.len() == 1 && path[0] == "f:metadata" && SERVER_META.contains(&k.as_str()) {
                    continue;
                }
                path.push(format!("f:{k}"));
                names.push(k.clone());
                collect(s, child, path, names, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => match list_type(s, names) {
            ListType::Map(keys) => {
                for item in items {
                    let Some(tok) = key_token(item, keys) else {
                        out.insert(path.clone());
                        continue;
                    };
                    path.push(tok);
                    out.insert(path.clone());
                    if let Value::Object(im) = item {
                        for (k, child) in im {
                            path.push(format!("f:{k}"));
                            names.push(k.clone());
                            collect(s, child, path, names, out);
                            names.pop();
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    path.push(format!("v:{}", serde_json::to_string(item).unwrap()));
                    out.insert(path.clone());
                    path.pop();
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path.
fn value_at<'v>(s: Schema<'_>, obj: &'v Value, path: &[String]) -> Option<&'v Value> {
    let mut cur = obj;
    let mut names: Vec<String> = Vec::new();
    for tok in path {
        if let Some(f) = tok.strip_prefix("f:") {
            cur = cur.get(f)?;
            names.push(f.to_string());
        } else if let Some(k) = tok.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            let ListType::Map(keys) = list_type(s, &names) else {
                return None;
            };
            cur = cur
                .as_array()?
                .iter()
                .find(|i| key_of(i, keys).as_ref() == Some(&want))?;
        } else if let Some(v) = tok.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Removes the field at a path (a map key, a list item or a set member).
fn remove_path(s: Schema<'_>, obj: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let names: Vec<String> = parent_path
        .iter()
        .filter_map(|t| t.strip_prefix("f:").map(str::to_string))
        .collect();
    let Some(parent) = value_at_mut(s, obj, parent_path) else {
        return;
    };
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
            return;
        };
        if let (ListType::Map(keys), Some(items)) = (list_type(s, &names), parent.as_array_mut()) {
            items.retain(|i| key_of(i, keys).as_ref() != Some(&want));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        let Ok(want) = serde_json::from_str::<Value>(v) else {
            return;
        };
        if let Some(items) = parent.as_array_mut() {
            items.retain(|i| *i != want);
        }
    }
}

fn value_at_mut<'v>(s: Schema<'_>, obj: &'v mut Value, path: &[String]) -> Option<&'v mut Value> {
    let mut cur = obj;
    let mut names: Vec<String> = Vec::new();
    for tok in path {
        if let Some(f) = tok.strip_prefix("f:") {
            cur = cur.get_mut(f)?;
            names.push(f.to_string());
        } else if let Some(k) = tok.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            let ListType::Map(keys) = list_type(s, &names) else {
                return None;
            };
            cur = cur
                .as_array_mut()?
                .iter_mut()
                .find(|i| key_of(i, keys).as_ref() == Some(&want))?;
        } else if let Some(v) = tok.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array_mut()?.iter_mut().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Merges an applied configuration into the live object: maps by key, keyed lists by key,
/// sets by value; atomic values and scalars are replaced.
fn merge(s: Schema<'_>, live: Option<&Value>, cfg: &Value, names: &mut Vec<String>) -> Value {
    match (live, cfg) {
        (Some(Value::Object(l)), Value::Object(c)) if names.is_empty() || !atomic_map(s, names) => {
            let mut out = l.clone();
            for (k, cv) in c {
                names.push(k.clone());
                let merged = merge(s, l.get(k), cv, names);
                names.pop();
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Some(Value::Array(l)), Value::Array(c)) => match list_type(s, names) {
            ListType::Map(keys) => {
                let mut out = l.clone();
                for ci in c {
                    let key = key_of(ci, keys);
                    match out
                        .iter()
                        .position(|li| key.is_some() && key_of(li, keys) == key)
                    {
                        Some(pos) => {
                            let merged = merge(s, Some(&out[pos]), ci, names);
                            out[pos] = merged;
                        }
                        None => out.push(ci.clone()),
                    }
                }
                Value::Array(out)
            }
            ListType::Set => {
                let mut out = l.clone();
                for ci in c {
                    if !out.contains(ci) {
                        out.push(ci.clone());
                    }
                }
                Value::Array(out)
            }
            ListType::Atomic => cfg.clone(),
        },
        _ => cfg.clone(),
    }
}

struct Comparison {
    added: BTreeSet<FPath>,
    removed: BTreeSet<FPath>,
    modified: BTreeSet<FPath>,
}

fn compare(s: Schema<'_>, old: &Value, new: &Value) -> Comparison {
    let a = fieldset(s, old);
    let b = fieldset(s, new);
    let added = b.difference(&a).cloned().collect();
    let removed = a.difference(&b).cloned().collect();
    let modified = a
        .intersection(&b)
        .filter(|p| !p.last().is_some_and(|t| t.starts_with("k:")))
        .filter(|p| value_at(s, old, p) != value_at(s, new, p))
        .cloned()
        .collect();
    Comparison {
        added,
        removed,
        modified,
    }
}

/// [`compare`] of the `status` alone (which [`fieldset`] leaves out: only a write of the
/// `status` subresource owns it).
fn compare_status(s: Schema<'_>, old: &Value, new: &Value) -> Comparison {
    let fields = |v: &Value| {
        let mut out = BTreeSet::new();
        if let Some(status) = v.get("status") {
            let mut path = vec!["f:status".to_string()];
            let mut names = vec!["status".to_string()];
            collect(s, status, &mut path, &mut names, &mut out);
        }
        out
    };
    let (a, b) = (fields(old), fields(new));
    Comparison {
        added: b.difference(&a).cloned().collect(),
        removed: a.difference(&b).cloned().collect(),
        modified: a
            .intersection(&b)
            .filter(|p| !p.last().is_some_and(|t| t.starts_with("k:")))
            .filter(|p| value_at(s, old, p) != value_at(s, new, p))
            .cloned()
            .collect(),
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as the real server names fields.
fn path_string(p: &FPath) -> String {
    let mut s = String::new();
    for tok in p {
        if let Some(f) = tok.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = tok.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = tok.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = tok.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

// ---- managedFields ----

#[derive(Debug, Clone, PartialEq)]
struct ManagedEntry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: Option<String>,
    set: BTreeSet<FPath>,
}

impl ManagedEntry {
    fn is_apply_by(&self, manager: &str) -> bool {
        self.manager == manager && self.operation == "Apply" && self.subresource.is_none()
    }
}

fn managed_entries(obj: &Value) -> Vec<ManagedEntry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let mut set = BTreeSet::new();
                    parse_fields(&e["fieldsV1"], &mut Vec::new(), &mut set);
                    ManagedEntry {
                        manager: e["manager"].as_str().unwrap_or("").to_string(),
                        operation: e["operation"].as_str().unwrap_or("").to_string(),
                        api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
                        time: e["time"].as_str().map(str::to_string),
                        subresource: e["subresource"].as_str().map(str::to_string),
                        set,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn parse_fields(v: &Value, path: &mut FPath, out: &mut BTreeSet<FPath>) {
    let Some(m) = v.as_object() else { return };
    for (k, child) in m {
        if k == "." {
            out.insert(path.clone());
            continue;
        }
        path.push(k.clone());
        if child.as_object().is_some_and(|c| c.is_empty()) {
            out.insert(path.clone());
        } else {
            parse_fields(child, path, out);
        }
        path.pop();
    }
}

/// FieldsV1 from a set: nested maps, `"."` where an owned node also has owned children.
fn fields_v1(set: &BTreeSet<FPath>) -> Value {
    #[derive(Default)]
    struct Node {
        owned: bool,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for p in set {
        let mut cur = &mut root;
        for tok in p {
            cur = cur.children.entry(tok.clone()).or_default();
        }
        cur.owned = true;
    }
    fn emit(n: &Node) -> Value {
        let mut m = Map::new();
        if n.owned && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), emit(c));
        }
        Value::Object(m)
    }
    emit(&root)
}

fn same_ownership(a: &[ManagedEntry], b: &[ManagedEntry]) -> bool {
    let key = |e: &ManagedEntry| {
        (
            e.manager.clone(),
            e.operation.clone(),
            e.subresource.clone(),
            e.set.clone(),
        )
    };
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

/// Writes managedFields: Apply entries first, then by time (none first), then manager.
fn set_managed(obj: &mut Value, entries: &[ManagedEntry]) {
    let mut sorted: Vec<&ManagedEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| {
        (a.operation != "Apply", a.time.clone(), a.manager.clone()).cmp(&(
            b.operation != "Apply",
            b.time.clone(),
            b.manager.clone(),
        ))
    });
    let list: Vec<Value> = sorted
        .into_iter()
        .map(|e| {
            let mut m = Map::new();
            m.insert("manager".into(), json!(e.manager));
            m.insert("operation".into(), json!(e.operation));
            m.insert("apiVersion".into(), json!(e.api_version));
            if let Some(t) = &e.time {
                m.insert("time".into(), json!(t));
            }
            m.insert("fieldsType".into(), json!("FieldsV1"));
            m.insert("fieldsV1".into(), fields_v1(&e.set));
            if let Some(s) = &e.subresource {
                m.insert("subresource".into(), json!(s));
            }
            Value::Object(m)
        })
        .collect();
    obj["metadata"]["managedFields"] = Value::Array(list);
}

/// Drops what an apply body may not set (server bookkeeping, status).
fn strip_server_fields(mut cfg: Value) -> Value {
    if let Some(o) = cfg.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in [
                "uid",
                "resourceVersion",
                "generation",
                "creationTimestamp",
                "managedFields",
                "selfLink",
            ] {
                meta.remove(k);
            }
        }
    }
    cfg
}

/// The real server's key order: kind, apiVersion, metadata (name, namespace, uid, ...), then
/// the rest.
fn order_object(obj: Value) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for k in ["kind", "apiVersion"] {
        if let Some(v) = m.remove(k) {
            out.insert(k.into(), v);
        }
    }
    if let Some(Value::Object(mut meta)) = m.remove("metadata") {
        let mut om = Map::new();
        for k in [
            "name",
            "generateName",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "labels",
            "annotations",
            "ownerReferences",
            "finalizers",
            "managedFields",
        ] {
            if let Some(v) = meta.remove(k) {
                om.insert(k.into(), v);
            }
        }
        om.extend(meta);
        out.insert("metadata".into(), Value::Object(om));
    }
    let status = m.remove("status");
    out.extend(m);
    if let Some(s) = status {
        out.insert("status".into(), s);
    }
    Value::Object(out)
}

// ------------------------------------------------------------------------------------------
// Update patches: strategic merge, decoding the patched object
// ------------------------------------------------------------------------------------------
//
// A strategic merge patch (k8s.io/apimachinery `strategicpatch`) merges maps key by key (null
// deletes), merges the lists the Go types tag `patchStrategy:"merge"` by their
// `patchMergeKey` (other lists are replaced), and honours the directives `$patch`
// (`merge`, `replace`, `delete`), `$retainKeys` and `$deleteFromPrimitiveList/<field>`.
// `$setElementOrder/<field>` (sent by client-side `kubectl apply`) is not implemented: this
// server answers it with a 400 that says so.
//
// The patched object is then decoded into the kind's type (the typed round trip of
// `typed_round_trip`, or the CRD schema): a field it does not declare is `unknown field
// "<path>"` (paths as sigs.k8s.io/json writes them: `spec.template.spec.containers[0].foo`).
// Under `fieldValidation=Strict` that is a 422 `Invalid` whose one cause is the field `patch`
// (merge-patch-unknown-field-strict-422); under `Warn`, the default, a `Warning` header each
// (merge-patch-unknown-field-warning-200); the field is dropped either way.

/// How a strategic merge patch treats a list, from the `patchStrategy`/`patchMergeKey` tags of
/// the built-in Go types (names as in [`list_type`]).
enum SmpList {
    /// Merged item by item on this key.
    Keyed(&'static str),
    /// A list of scalars merged as a set (`metadata.finalizers`).
    Primitive,
    /// Replaced by the patch's list.
    Replace,
}

fn smp_list(s: Schema<'_>, names: &[String]) -> SmpList {
    let (parent, last) = last_two(names);
    match last {
        l if CONTAINER_LISTS.contains(&l) => SmpList::Keyed("name"),
        // Unlike server-side apply, the patch merge key of a container port is the port alone.
        "ports" if CONTAINER_LISTS.contains(&parent) => SmpList::Keyed("containerPort"),
        "ports" if s.kind == "Service" && names.len() == 2 => SmpList::Keyed("port"),
        "env" | "volumes" | "imagePullSecrets" | "resourceClaims" => SmpList::Keyed("name"),
        "volumeMounts" => SmpList::Keyed("mountPath"),
        "volumeDevices" => SmpList::Keyed("devicePath"),
        "hostAliases" => SmpList::Keyed("ip"),
        "topologySpreadConstraints" => SmpList::Keyed("topologyKey"),
        "ownerReferences" => SmpList::Keyed("uid"),
        "conditions" => SmpList::Keyed("type"),
        "finalizers" if parent == "metadata" => SmpList::Primitive,
        _ => SmpList::Replace,
    }
}

/// A strategic merge patch of `original` (the stored object). An error is the Status the real
/// server answers.
fn strategic_merge_patch(s: Schema<'_>, original: &Value, patch: &Value) -> Result<Value, Value> {
    // The patch is first decoded into a Go map: null is an empty one, anything else but an
    // object does not decode (400, encoding/json's message).
    let go_type = match patch {
        Value::Null => return Ok(original.clone()),
        Value::Object(_) => None,
        Value::Array(_) => Some("array"),
        Value::String(_) => Some("string"),
        Value::Number(_) => Some("number"),
        Value::Bool(_) => Some("bool"),
    };
    if let Some(t) = go_type {
        return Err(status_body(
            400,
            "BadRequest",
            &format!("json: cannot unmarshal {t} into Go value of type map[string]interface {{}}"),
            None,
        )
        .1);
    }
    Ok(smp_merge(s, Some(original), patch, &mut Vec::new())?.unwrap_or_else(|| json!({})))
}

/// Merges a patch map into a value; `None` when the patch deletes it (`$patch: delete`).
fn smp_merge(
    s: Schema<'_>,
    original: Option<&Value>,
    patch: &Value,
    names: &mut Vec<String>,
) -> Result<Option<Value>, Value> {
    let Value::Object(p) = patch else {
        return Ok(Some(patch.clone()));
    };
    match p.get("$patch").map(|d| d.as_str().unwrap_or("")) {
        None | Some("merge") => {}
        Some("delete") => return Ok(None),
        Some("replace") => {
            let mut out = p.clone();
            out.remove("$patch");
            return Ok(Some(Value::Object(out)));
        }
        Some(other) => {
            // mergepatch.ErrBadPatchType, not a Status: 500 with reason Unknown.
            return Err(status_body(
                500,
                "Unknown",
                &format!("unknown patch type: {other} in map: {}", go_format(patch)),
                None,
            )
            .1);
        }
    }
    let mut out = original
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        out.retain(|k, _| retain.iter().any(|r| r == k.as_str()));
    }
    for (k, pv) in p {
        if k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) = (
                out.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if k.starts_with("$setElementOrder/") {
            return Err(status_body(
                400,
                "BadRequest",
                &format!(
                    "the strategic merge patch directive {k} is not implemented by this test server (tests/support/kube_server.rs); a real API server accepts it"
                ),
                None,
            )
            .1);
        }
        if pv.is_null() {
            out.remove(k);
            continue;
        }
        names.push(k.clone());
        let merged = match pv {
            Value::Object(_) => smp_merge(s, out.get(k), pv, names),
            Value::Array(items) => {
                let current = out.get(k).and_then(Value::as_array).cloned();
                smp_list_merge(s, current.as_deref().unwrap_or(&[]), items, names).map(Some)
            }
            _ => Ok(Some(pv.clone())),
        };
        names.pop();
        match merged? {
            Some(v) => {
                out.insert(k.clone(), v);
            }
            None => {
                out.remove(k);
            }
        }
    }
    Ok(Some(Value::Object(out)))
}

/// Merges a patch list into a stored list by the field's strategy ([`smp_list`]).
fn smp_list_merge(
    s: Schema<'_>,
    original: &[Value],
    patch: &[Value],
    names: &mut Vec<String>,
) -> Result<Value, Value> {
    match smp_list(s, names) {
        SmpList::Replace => Ok(Value::Array(patch.to_vec())),
        SmpList::Primitive => {
            let mut out = original.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(Value::Array(out))
        }
        SmpList::Keyed(key) => {
            // An item `{"$patch": "replace"}` replaces the whole list with the other items.
            if patch.iter().any(|i| i["$patch"] == "replace") {
                return Ok(Value::Array(
                    patch
                        .iter()
                        .filter(|i| i["$patch"] != "replace")
                        .cloned()
                        .collect(),
                ));
            }
            let mut out = original.to_vec();
            for item in patch {
                let Some(wanted) = item.get(key).filter(|_| item.is_object()) else {
                    // mergepatch.ErrNoMergeKey, not a Status: 500 with reason Unknown.
                    return Err(status_body(
                        500,
                        "Unknown",
                        &format!(
                            "map: {} does not contain declared merge key: {key}",
                            go_format(item)
                        ),
                        None,
                    )
                    .1);
                };
                let pos = out.iter().position(|o| o.get(key) == Some(wanted));
                match (pos, smp_merge(s, pos.map(|i| &out[i]), item, names)?) {
                    (Some(i), Some(v)) => out[i] = v,
                    (Some(i), None) => {
                        out.remove(i);
                    }
                    (None, Some(v)) => out.push(v),
                    (None, None) => {}
                }
            }
            Ok(Value::Array(out))
        }
    }
}

/// A JSON merge patch (RFC 7386) of `target`. With `go_encoding`, the object as the real
/// server's JSON merge patch (evanphx/json-patch `MergePatch`) writes it: a map the patch touched
/// is encoded again with its keys sorted; everything else keeps the stored object's encoding (the
/// order a GET shows). Without it, every map keeps its keys' order, new keys last.
fn merge_patch(target: &Value, patch: &Value, go_encoding: bool) -> Value {
    match patch {
        Value::Object(p) => {
            let mut t = target.as_object().cloned().unwrap_or_default();
            for (k, v) in p {
                if v.is_null() {
                    t.shift_remove(k);
                } else {
                    let merged = merge_patch(t.get(k).unwrap_or(&Value::Null), v, go_encoding);
                    t.insert(k.clone(), merged);
                }
            }
            if go_encoding {
                t.sort_keys();
            }
            Value::Object(t)
        }
        other => other.clone(),
    }
}

/// Compact JSON as Go's encoder writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped.
fn go_json(v: &Value) -> String {
    let text = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// A decoded JSON value as Go's `%v` prints it: `map[a:1 b:[x y]]`, keys sorted, `<nil>`.
fn go_format(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_format(&m[k.as_str()])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// The 422 of a patched object that does not decode (`field.Invalid(field.NewPath("patch"),
/// <value>, <error>)` with an empty group, kind and name, as the patch handler builds it).
fn patch_invalid_body(value: &str, detail: &str) -> Value {
    let body = format!("Invalid value: {}: {detail}", json!(value));
    status_body(
        422,
        "Invalid",
        &format!(" \"\" is invalid: patch: {body}"),
        Some(
            json!({"causes": [{"reason": "FieldValueInvalid", "message": body, "field": "patch"}]}),
        ),
    )
    .1
}

/// One step of a path in a decoded value: a map key or a list index.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// `spec.template.spec.containers[0].foo`, as sigs.k8s.io/json names an unknown field.
fn seg_path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn remove_seg_path(v: &mut Value, path: &[Seg]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str()),
            Seg::Index(i) => cur.get_mut(*i),
        };
        let Some(next) = next else { return };
        cur = next;
    }
    if let (Seg::Key(k), Some(m)) = (last, cur.as_object_mut()) {
        m.shift_remove(k.as_str());
    }
}

/// Fields of `v` its typed round trip `typed` lost: every one, in `v`'s key order.
fn unknown_typed(v: &Value, typed: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match (v, typed) {
        (Value::Object(m), Value::Object(t)) => {
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                path.push(Seg::Key(k.clone()));
                match t.get(k.as_str()) {
                    Some(tchild) => unknown_typed(child, tchild, path, out),
                    None => out.push(path.clone()),
                }
                path.pop();
            }
        }
        (Value::Array(items), Value::Array(t)) => {
            for (i, (item, titem)) in items.iter().zip(t).enumerate() {
                path.push(Seg::Index(i));
                unknown_typed(item, titem, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Fields of a custom resource value its CRD schema does not declare (pruning): every one.
fn unknown_cr(schema: &Value, v: &Value, path: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Object(m) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true
                || schema["additionalProperties"] == true;
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                path.push(Seg::Key(k.clone()));
                match props.and_then(|p| p.get(k.as_str())).or(additional) {
                    Some(sub) => unknown_cr(sub, child, path, out),
                    None if preserve => {}
                    None => out.push(path.clone()),
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                unknown_cr(&schema["items"], item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

impl State {
    /// The fields of a patched object its kind does not declare, as decoding it finds them; an
    /// error when it does not decode at all (a value of the wrong type; serde's words, not
    /// Go's).
    fn unknown_fields(
        &self,
        rt: &ResourceType,
        gv: &str,
        obj: &Value,
    ) -> Result<Vec<Vec<Seg>>, String> {
        let mut out = Vec::new();
        // Quantities given as numbers decode in Go; the typed round trip wants strings.
        let mut canonical = obj.clone();
        canonicalize_quantities(&mut canonical, &mut Vec::new());
        match typed_round_trip(gv, &rt.kind, &canonical) {
            Some(typed) => unknown_typed(&canonical, &typed?, &mut Vec::new(), &mut out),
            None => {
                let Some(m) = obj.as_object() else {
                    return Ok(out);
                };
                let schema = self.cr_schema(rt);
                for (k, v) in m {
                    let mut path = vec![Seg::Key(k.clone())];
                    match k.as_str() {
                        "apiVersion" | "kind" => {}
                        "metadata" => {
                            let typed = serde_json::from_value::<
                                k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                            >(v.clone())
                            .and_then(serde_json::to_value)
                            .map_err(|e| e.to_string())?;
                            unknown_typed(v, &typed, &mut path, &mut out);
                        }
                        _ => {
                            if let Some(schema) = &schema {
                                match schema["properties"].get(k.as_str()) {
                                    Some(sub) => unknown_cr(sub, v, &mut path, &mut out),
                                    None if v.is_null() => {}
                                    None => out.push(path),
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

// ------------------------------------------------------------------------------------------
// What the real server refuses: undeclared fields (500), invalid values (422)
// ------------------------------------------------------------------------------------------
//
// Server-side apply first turns the applied configuration into a typed value of the kind's
// schema (structured-merge-diff). A field the schema does not declare fails that step with a
// 500 whose Status has no `reason`, with or without `fieldValidation=Strict`, for custom
// resources too (apply-unknown-field-500, apply-unknown-field-strict-500,
// apply-cr-unknown-field-500):
//   failed to create typed patch object (<ns>/<name>; <group>/<version>, Kind=<Kind>): <errors>
//
// The schema behind that check, for every kind this server serves:
// - built-in kinds: the k8s-openapi types (Kubernetes 1.33 definitions; the golden server is
//   1.32, whose fields are a subset). The applied object is decoded into its type and encoded
//   again: a field that does not come back is one the type does not declare. Every field of
//   those types is covered, not a hand-made list. A value of the wrong type fails the decoding,
//   which the real server also answers with this 500 (in structured-merge-diff's words, not
//   serde's).
// - custom resources: the CRD's `openAPIV3Schema` (a CRD stored in this server, else the
//   golden `cacheclusters.platform.driftwarden.test`): `properties`, `additionalProperties`,
//   `items`, `x-kubernetes-preserve-unknown-fields`, list-map keys for paths; `apiVersion` and
//   `kind` are declared and `metadata` is checked as ObjectMeta.
// Like structured-merge-diff, a map reports one undeclared field and is not walked further
// (the first in key order here; the real server's order is Go's map order), and several errors
// read `errors:\n  <error>\n  <error>`. Paths are structured-merge-diff's: `.spec.replica`,
// `.spec.template.spec.containers[name="web"].foo`, `[0]` in atomic lists.
//
// Validation (422 `Invalid`, every cause listed, as `apierrors.NewInvalid` writes it) runs on
// the object a write would store, after merging and defaults. It covers what the golden
// exchanges show (apply-invalid-422, apply-cr-invalid-422), not all of Kubernetes' validation:
// - Deployment, ReplicaSet, StatefulSet: `spec.replicas` ≥ 0; those and DaemonSet: the
//   selector (`matchLabels`, `matchExpressions`) matches the template's labels;
// - every pod spec (those, Job, CronJob, Pod): container and init container names are
//   required RFC 1123 labels, each `containerPort` within 1–65535;
// - custom resources, from the CRD schema: `required`, `enum` (`FieldValueNotSupported`),
//   `minimum`/`maximum`. Not covered: `pattern`, lengths, formats, types, CEL rules.

/// The golden CRD of the custom resource this server serves without being given its CRD.
const GOLDEN_CRD: &str = include_str!(
    "../../fixtures/golden/live/customresourcedefinition-cacheclusters.platform.driftwarden.test.json"
);

/// Decodes `obj` into the k8s-openapi type of a built-in kind and encodes it again; `None` for
/// a kind without one here (custom resources).
fn typed_round_trip(gv: &str, kind: &str, obj: &Value) -> Option<Result<Value, String>> {
    use k8s_openapi::api::{
        apps, autoscaling, batch, coordination, core, networking, policy, rbac,
    };
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
    fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Result<Value, String> {
        let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(&typed).map_err(|e| e.to_string())
    }
    let mut obj = obj.clone();
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(gv));
        o.insert("kind".into(), json!(kind));
    }
    let obj = &obj;
    Some(match (gv, kind) {
        ("v1", "ConfigMap") => rt::<core::v1::ConfigMap>(obj),
        ("v1", "Endpoints") => rt::<core::v1::Endpoints>(obj),
        ("v1", "Event") => rt::<core::v1::Event>(obj),
        ("v1", "Namespace") => rt::<core::v1::Namespace>(obj),
        ("v1", "PersistentVolumeClaim") => rt::<core::v1::PersistentVolumeClaim>(obj),
        ("v1", "Pod") => rt::<core::v1::Pod>(obj),
        ("v1", "Secret") => rt::<core::v1::Secret>(obj),
        ("v1", "ServiceAccount") => rt::<core::v1::ServiceAccount>(obj),
        ("v1", "Service") => rt::<core::v1::Service>(obj),
        ("apps/v1", "ControllerRevision") => rt::<apps::v1::ControllerRevision>(obj),
        ("apps/v1", "DaemonSet") => rt::<apps::v1::DaemonSet>(obj),
        ("apps/v1", "Deployment") => rt::<apps::v1::Deployment>(obj),
        ("apps/v1", "ReplicaSet") => rt::<apps::v1::ReplicaSet>(obj),
        ("apps/v1", "StatefulSet") => rt::<apps::v1::StatefulSet>(obj),
        ("batch/v1", "CronJob") => rt::<batch::v1::CronJob>(obj),
        ("coordination.k8s.io/v1", "Lease") => rt::<coordination::v1::Lease>(obj),
        ("batch/v1", "Job") => rt::<batch::v1::Job>(obj),
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            rt::<autoscaling::v2::HorizontalPodAutoscaler>(obj)
        }
        ("autoscaling/v1", "HorizontalPodAutoscaler") => {
            rt::<autoscaling::v1::HorizontalPodAutoscaler>(obj)
        }
        ("networking.k8s.io/v1", "IngressClass") => rt::<networking::v1::IngressClass>(obj),
        ("networking.k8s.io/v1", "Ingress") => rt::<networking::v1::Ingress>(obj),
        ("networking.k8s.io/v1", "NetworkPolicy") => rt::<networking::v1::NetworkPolicy>(obj),
        ("policy/v1", "PodDisruptionBudget") => rt::<policy::v1::PodDisruptionBudget>(obj),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            rt::<rbac::v1::ClusterRoleBinding>(obj)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => rt::<rbac::v1::ClusterRole>(obj),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => rt::<rbac::v1::RoleBinding>(obj),
        ("rbac.authorization.k8s.io/v1", "Role") => rt::<rbac::v1::Role>(obj),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            rt::<apiextensions::CustomResourceDefinition>(obj)
        }
        _ => return None,
    })
}

/// The path token of a list item: its key (map lists), its value (sets) or its index.
fn item_token(s: Schema<'_>, names: &[String], item: &Value, index: usize) -> String {
    match list_type(s, names) {
        ListType::Map(keys) => key_token(item, keys).unwrap_or_else(|| format!("i:{index}")),
        ListType::Set => format!("v:{item}"),
        ListType::Atomic => format!("i:{index}"),
    }
}

/// Fields of `cfg` that its typed round trip `typed` lost: undeclared.
fn undeclared_typed(
    s: Schema<'_>,
    cfg: &Value,
    typed: &Value,
    path: &mut FPath,
    names: &mut Vec<String>,
    out: &mut Vec<String>,
) {
    match (cfg, typed) {
        (Value::Object(c), Value::Object(t)) => {
            let mut keys: Vec<&String> = c.keys().collect();
            keys.sort();
            for k in keys {
                let child = &c[k.as_str()];
                if child.is_null() {
                    continue;
                }
                path.push(format!("f:{k}"));
                let Some(tchild) = t.get(k.as_str()) else {
                    out.push(format!(
                        "{}: field not declared in schema",
                        path_string(path)
                    ));
                    path.pop();
                    return;
                };
                names.push(k.clone());
                undeclared_typed(s, child, tchild, path, names, out);
                names.pop();
                path.pop();
            }
        }
        (Value::Array(c), Value::Array(t)) => {
            for (i, (ci, ti)) in c.iter().zip(t).enumerate() {
                path.push(item_token(s, names, ci, i));
                undeclared_typed(s, ci, ti, path, names, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Fields of a custom resource value its CRD schema does not declare.
fn undeclared_cr(schema: &Value, v: &Value, path: &mut FPath, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true
                || schema["additionalProperties"] == true;
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                let child = &m[k.as_str()];
                if child.is_null() {
                    continue;
                }
                path.push(format!("f:{k}"));
                match props.and_then(|p| p.get(k.as_str())).or(additional) {
                    Some(sub) => undeclared_cr(sub, child, path, out),
                    None if preserve => {}
                    None => {
                        out.push(format!(
                            "{}: field not declared in schema",
                            path_string(path)
                        ));
                        path.pop();
                        return;
                    }
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let item_schema = &schema["items"];
            let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let token = match schema["x-kubernetes-list-type"].as_str() {
                    Some("map") => key_token(item, &keys).unwrap_or_else(|| format!("i:{i}")),
                    Some("set") => format!("v:{item}"),
                    _ => format!("i:{i}"),
                };
                path.push(token);
                undeclared_cr(item_schema, item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The 500 of a typed patch object that cannot be created (no `reason`, no `details`).
fn typed_patch_error(cfg: &Value, ns: Option<&str>, name: &str, errors: &[String]) -> Value {
    let (group, version) = split_gv(cfg["apiVersion"].as_str().unwrap_or(""));
    let kind = cfg["kind"].as_str().unwrap_or("");
    let ns = cfg["metadata"]["namespace"].as_str().or(ns).unwrap_or("");
    let detail = match errors {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("failed to create typed patch object ({ns}/{name}; {group}/{version}, Kind={kind}): {detail}"),
        "code": 500})
}

/// One cause of a 422 (`metav1.StatusCause` from a `field.Error`).
struct Cause {
    reason: &'static str,
    field: String,
    message: String,
}

impl Cause {
    /// `field.Invalid`: `Invalid value: <value>: <detail>`.
    fn invalid(field: String, value: &Value, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field,
            message: format!("Invalid value: {}: {detail}", go_value(value)),
        }
    }

    /// `field.NotSupported`: `Unsupported value: <value>: supported values: "a", "b"`.
    fn not_supported(field: String, value: &Value, supported: &[Value]) -> Cause {
        let list: Vec<String> = supported
            .iter()
            .map(|s| match s {
                Value::String(s) => json!(s).to_string(),
                other => json!(other.to_string()).to_string(),
            })
            .collect();
        Cause {
            reason: "FieldValueNotSupported",
            field,
            message: format!(
                "Unsupported value: {}: supported values: {}",
                go_value(value),
                list.join(", ")
            ),
        }
    }

    /// `field.Required`.
    fn required(field: String) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field,
            message: "Required value".into(),
        }
    }
}

/// A value as `field.Error` prints it: strings quoted (`%q`), numbers and booleans plain, a
/// string map as Go's `%#v` (`map[string]string{"a":"b", "c":"d"}`).
fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => json!(s).to_string(),
        Value::Null => "null".into(),
        Value::Object(m) if m.values().all(Value::is_string) => {
            let mut pairs: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", json!(k), v))
                .collect();
            pairs.sort();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

/// The 422 `Invalid` of an object with these causes (`apierrors.NewInvalid`): the message
/// lists every cause, `[a, b]` when there are several.
fn invalid_causes_body(rt: &ResourceType, name: &str, causes: &[Cause]) -> Value {
    let qualified = if rt.group.is_empty() {
        rt.kind.clone()
    } else {
        format!("{}.{}", rt.kind, rt.group)
    };
    let texts: Vec<String> = causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect();
    let listed = match texts.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), json!(rt.group));
    }
    details.insert("kind".into(), json!(rt.kind));
    details.insert(
        "causes".into(),
        Value::Array(
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect(),
        ),
    );
    status_body(
        422,
        "Invalid",
        &format!("{qualified} {} is invalid: {listed}", json!(name)),
        Some(Value::Object(details)),
    )
    .1
}

/// `validation.IsDNS1123Label`'s messages for a value.
fn dns1123_label_errors(s: &str) -> Vec<&'static str> {
    let mut out = Vec::new();
    if s.len() > 63 {
        out.push("must be no more than 63 characters");
    }
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let ok = !bytes.is_empty()
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-');
    if !ok {
        out.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
    }
    out
}

/// Whether a `LabelSelector` (`matchLabels`, `matchExpressions`) selects these labels.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = selector["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let by_expression = selector["matchExpressions"].as_array().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str().unwrap_or("") {
                "In" => get(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => get(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => get(key).is_some(),
                "DoesNotExist" => get(key).is_none(),
                _ => false,
            }
        })
    });
    by_label && by_expression
}

fn selector_is_empty(selector: &Value) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_none_or(Map::is_empty)
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty)
}

/// Validation of a built-in object as it would be stored (see the section's comment for what
/// is covered), in the order Kubernetes' validation reports it.
fn validate_builtin(rt: &ResourceType, obj: &Value) -> Vec<Cause> {
    let mut out = Vec::new();
    let spec = &obj["spec"];
    let kind = rt.kind.as_str();
    if rt.group == "apps" && matches!(kind, "Deployment" | "ReplicaSet" | "StatefulSet") {
        if let Some(r) = spec["replicas"].as_i64().filter(|r| *r < 0) {
            out.push(Cause::invalid(
                "spec.replicas".into(),
                &json!(r),
                "must be greater than or equal to 0",
            ));
        }
    }
    if rt.group == "apps"
        && matches!(
            kind,
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        )
    {
        let selector = &spec["selector"];
        let labels = &spec["template"]["metadata"]["labels"];
        if !selector_is_empty(selector) && !selector_matches(selector, labels) {
            let shown = if labels.is_object() {
                labels.clone()
            } else {
                json!({})
            };
            out.push(Cause::invalid(
                "spec.template.metadata.labels".into(),
                &shown,
                "`selector` does not match template `labels`",
            ));
        }
    }
    let pod_spec = match (rt.group.as_str(), kind) {
        ("apps", _) | ("batch", "Job") => Some(("spec.template.spec", &spec["template"]["spec"])),
        ("batch", "CronJob") => Some((
            "spec.jobTemplate.spec.template.spec",
            &spec["jobTemplate"]["spec"]["template"]["spec"],
        )),
        ("", "Pod") => Some(("spec", spec)),
        _ => None,
    };
    if let Some((at, pod)) = pod_spec {
        for list in ["containers", "initContainers"] {
            let Some(containers) = pod[list].as_array() else {
                continue;
            };
            for (i, c) in containers.iter().enumerate() {
                let here = format!("{at}.{list}[{i}]");
                match c["name"].as_str().unwrap_or("") {
                    "" => out.push(Cause::required(format!("{here}.name"))),
                    name => {
                        for msg in dns1123_label_errors(name) {
                            out.push(Cause::invalid(format!("{here}.name"), &json!(name), msg));
                        }
                    }
                }
                for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                    let port = p["containerPort"].as_i64().unwrap_or(0);
                    if !(1..=65535).contains(&port) {
                        out.push(Cause::invalid(
                            format!("{here}.ports[{j}].containerPort"),
                            &json!(port),
                            "must be between 1 and 65535, inclusive",
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Validation of a custom resource against its CRD schema: `required`, `enum`,
/// `minimum`/`maximum`; field paths as the OpenAPI validator names them (`spec.users[0].name`).
fn validate_cr(schema: &Value, v: &Value, field: &str, out: &mut Vec<Cause>) {
    let child = |name: &str| {
        if field.is_empty() {
            name.to_string()
        } else {
            format!("{field}.{name}")
        }
    };
    match v {
        Value::Object(m) => {
            for r in schema["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap_or("");
                if m.get(r).is_none_or(Value::is_null) {
                    out.push(Cause::required(child(r)));
                }
            }
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, cv) in m {
                if let Some(sub) = props.and_then(|p| p.get(k)).or(additional) {
                    validate_cr(sub, cv, &child(k), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                validate_cr(&schema["items"], item, &format!("{field}[{i}]"), out);
            }
        }
        Value::Null => {}
        scalar => {
            if let Some(allowed) = schema["enum"].as_array() {
                if !allowed.contains(scalar) {
                    out.push(Cause::not_supported(field.to_string(), scalar, allowed));
                    return;
                }
            }
            if let Some(n) = scalar.as_f64() {
                if let Some(max) = schema["maximum"].as_f64().filter(|max| n > *max) {
                    out.push(Cause::invalid(
                        field.to_string(),
                        scalar,
                        &format!(
                            "{field} in body should be less than or equal to {}",
                            json_number(max)
                        ),
                    ));
                }
                if let Some(min) = schema["minimum"].as_f64().filter(|min| n < *min) {
                    out.push(Cause::invalid(
                        field.to_string(),
                        scalar,
                        &format!(
                            "{field} in body should be greater than or equal to {}",
                            json_number(min)
                        ),
                    ));
                }
            }
        }
    }
}

/// A bound as Go's `%v` prints a float64: `9`, not `9.0`.
fn json_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

impl State {
    /// The `openAPIV3Schema` of a custom resource's version: from a CRD stored here, else from
    /// the golden CRD when it defines this kind.
    fn cr_schema(&self, rt: &ResourceType) -> Option<Value> {
        let defines = |crd: &Value| {
            crd["spec"]["group"] == rt.group && crd["spec"]["names"]["kind"] == rt.kind
        };
        let stored = self
            .objects
            .get(&(
                "apiextensions.k8s.io".to_string(),
                "customresourcedefinitions".to_string(),
            ))
            .and_then(|m| m.values().find(|crd| defines(crd)).cloned());
        let crd = match stored {
            Some(crd) => crd,
            None => serde_json::from_str::<Value>(GOLDEN_CRD)
                .ok()
                .filter(|crd| defines(crd))?,
        };
        crd["spec"]["versions"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == rt.version.as_str())
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
    }

    /// The 500 of an applied configuration with fields its kind's schema does not declare
    /// (or, for a built-in kind, values of the wrong type).
    fn check_declared(
        &self,
        rt: &ResourceType,
        gv: &str,
        ns: Option<&str>,
        name: &str,
        cfg: &Value,
    ) -> Result<(), Value> {
        let mut errors = Vec::new();
        match typed_round_trip(gv, &rt.kind, cfg) {
            Some(Ok(typed)) => {
                let s = Schema {
                    kind: &rt.kind,
                    builtin: true,
                };
                undeclared_typed(
                    s,
                    cfg,
                    &typed,
                    &mut Vec::new(),
                    &mut Vec::new(),
                    &mut errors,
                );
            }
            Some(Err(e)) => errors.push(e),
            None => {
                let Some(schema) = self.cr_schema(rt) else {
                    return Ok(());
                };
                let Some(m) = cfg.as_object() else {
                    return Ok(());
                };
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let v = &m[k.as_str()];
                    let mut path = vec![format!("f:{k}")];
                    match k.as_str() {
                        "apiVersion" | "kind" => {}
                        "metadata" => {
                            let meta = serde_json::from_value::<
                                k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
                            >(v.clone())
                            .map_err(|e| e.to_string())
                            .and_then(|m| serde_json::to_value(m).map_err(|e| e.to_string()));
                            match meta {
                                Ok(typed) => {
                                    let s = Schema {
                                        kind: &rt.kind,
                                        builtin: true,
                                    };
                                    let mut names = vec!["metadata".to_string()];
                                    undeclared_typed(
                                        s,
                                        v,
                                        &typed,
                                        &mut path,
                                        &mut names,
                                        &mut errors,
                                    );
                                }
                                Err(e) => errors.push(format!(".metadata: {e}")),
                            }
                        }
                        _ => match schema["properties"].get(k.as_str()) {
                            Some(sub) => undeclared_cr(sub, v, &mut path, &mut errors),
                            None if v.is_null() => {}
                            None => {
                                errors.push(format!(
                                    "{}: field not declared in schema",
                                    path_string(&path)
                                ));
                                break;
                            }
                        },
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(typed_patch_error(cfg, ns, name, &errors))
        }
    }

    /// The 422 of an object that a write would store invalid.
    fn validate(&self, rt: &ResourceType, name: &str, obj: &Value) -> Result<(), Value> {
        let causes = if is_builtin_group(&rt.group) {
            validate_builtin(rt, obj)
        } else {
            let mut out = Vec::new();
            if let Some(schema) = self.cr_schema(rt) {
                let mut body = obj.clone();
                if let Some(o) = body.as_object_mut() {
                    for k in ["apiVersion", "kind", "metadata"] {
                        o.remove(k);
                    }
                }
                validate_cr(&schema, &body, "", &mut out);
            }
            out
        };
        if causes.is_empty() {
            Ok(())
        } else {
            Err(invalid_causes_body(rt, name, &causes))
        }
    }
}

/// `metadata.managedFields` in an apply body: 400 unless absent or null (structured merge
/// manager: `metadata.managedFields must be nil`).
fn check_no_managed_fields(cfg: &Value) -> Result<(), Value> {
    match cfg["metadata"].get("managedFields") {
        None | Some(Value::Null) => Ok(()),
        Some(_) => Err(status_body(
            400,
            "BadRequest",
            "metadata.managedFields must be nil",
            None,
        )
        .1),
    }
}

/// A `metadata.resourceVersion` in a write's body is a precondition: 409 `Conflict` when it is
/// not the stored object's (`OptimisticLockErrorMsg`, details with the plural as `kind`).
fn check_resource_version(
    rt: &ResourceType,
    name: &str,
    body: &Value,
    stored: &Value,
) -> Result<(), Value> {
    let Some(sent) = body["metadata"]["resourceVersion"]
        .as_str()
        .filter(|s| !s.is_empty())
    else {
        return Ok(());
    };
    if Some(sent) == stored["metadata"]["resourceVersion"].as_str() {
        return Ok(());
    }
    let resource = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), json!(rt.group));
    }
    details.insert("kind".into(), json!(rt.plural));
    Err(status_body(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {resource} {}: the object has been modified; please apply your changes to the latest version and try again",
            json!(name)
        ),
        Some(Value::Object(details)),
    )
    .1)
}

/// Kinds whose PUT must carry `metadata.resourceVersion` (their registry strategy's
/// `AllowUnconditionalUpdate` is false): Leases (lease-update-no-resourceversion-422).
fn allows_unconditional_update(rt: &ResourceType) -> bool {
    !(rt.group == "coordination.k8s.io" && rt.kind == "Lease")
}

/// Kinds a PUT creates when absent (`AllowCreateOnUpdate`): Leases.
fn allows_create_on_update(rt: &ResourceType) -> bool {
    rt.group == "coordination.k8s.io" && rt.kind == "Lease"
}

/// The 422 of an update without the resourceVersion its kind requires
/// (lease-update-no-resourceversion-422).
fn resource_version_required(rt: &ResourceType, name: &str) -> Value {
    let resource = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    let detail = "Invalid value: 0x0: must be specified for an update";
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), json!(rt.group));
    }
    details.insert("kind".into(), json!(rt.plural));
    details.insert(
        "causes".into(),
        json!([{"reason": "FieldValueInvalid", "message": detail, "field": "metadata.resourceVersion"}]),
    );
    status_body(
        422,
        "Invalid",
        &format!(
            "{resource} {} is invalid: metadata.resourceVersion: {detail}",
            json!(name)
        ),
        Some(Value::Object(details)),
    )
    .1
}

/// `leases.coordination.k8s.io "x" already exists`.
fn already_exists_body(rt: &ResourceType, name: &str) -> Value {
    let resource = if rt.group.is_empty() {
        rt.plural.clone()
    } else {
        format!("{}.{}", rt.plural, rt.group)
    };
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    if !rt.group.is_empty() {
        details.insert("group".into(), json!(rt.group));
    }
    details.insert("kind".into(), json!(rt.plural));
    status_body(
        409,
        "AlreadyExists",
        &format!("{resource} {} already exists", json!(name)),
        Some(Value::Object(details)),
    )
    .1
}

/// A Lease's `acquireTime`/`renewTime` are `metav1.MicroTime`, decoded with the layout
/// `2006-01-02T15:04:05.000000Z07:00`: exactly six fractional digits, or the body cannot be
/// decoded, a 400 `BadRequest` (lease-microtime-without-fraction-400), checked in the body's
/// key order.
fn check_micro_times(rt: &ResourceType, obj: &Value) -> Result<(), Value> {
    if !(rt.group == "coordination.k8s.io" && rt.kind == "Lease") {
        return Ok(());
    }
    let Some(spec) = obj["spec"].as_object() else {
        return Ok(());
    };
    for (k, v) in spec {
        if !matches!(k.as_str(), "acquireTime" | "renewTime") {
            continue;
        }
        let Some(text) = v.as_str() else { continue };
        if let Some(problem) = micro_time_error(text) {
            return Err(status_body(
                400,
                "BadRequest",
                &format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: parsing time {} as \"2006-01-02T15:04:05.000000Z07:00\": {problem}",
                    json!(text),
                    kind = rt.kind,
                    version = rt.version,
                ),
                None,
            )
            .1);
        }
    }
    Ok(())
}

/// Why Go's `time.Parse` refuses `text` with the MicroTime layout (`cannot parse "<rest>" as
/// "<layout element>"`), or `None`.
fn micro_time_error(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    // The date and time: `2006-01-02T15:04:05`.
    let shape_ok = b.len() >= 19
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape_ok {
        return Some(format!("cannot parse {} as \"2006\"", json!(text)));
    }
    let rest = &text[19..];
    let rb = rest.as_bytes();
    let fraction_ok = rb.len() >= 7 && rb[0] == b'.' && rb[1..7].iter().all(u8::is_ascii_digit);
    if !fraction_ok {
        return Some(format!("cannot parse {} as \".000000\"", json!(rest)));
    }
    let zone = &rest[7..];
    let zb = zone.as_bytes();
    let offset_ok = zb.len() == 6
        && matches!(zb[0], b'+' | b'-')
        && zb[1..3].iter().all(u8::is_ascii_digit)
        && zb[3] == b':'
        && zb[4..6].iter().all(u8::is_ascii_digit);
    if zone == "Z" || offset_ok {
        None
    } else {
        Some(format!("cannot parse {} as \"Z07:00\"", json!(zone)))
    }
}

// ------------------------------------------------------------------------------------------
// Defaults and quantities
// ------------------------------------------------------------------------------------------

fn set_default(obj: &mut Value, key: &str, v: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(v);
    }
}

fn apply_defaults(group: &str, kind: &str, obj: &mut Value, ip: &mut u64, node_port: &mut u64) {
    match (group, kind) {
        ("apps", "Deployment") => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            if spec.get("strategy").is_none() {
                spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}});
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            pod_template(&mut spec["template"]);
            set_default(obj, "status", json!({}));
        }
        ("apps", "StatefulSet") => {
            let spec = &mut obj["spec"];
            set_default(spec, "replicas", json!(1));
            pod_template(&mut spec["template"]);
            if let Some(vcts) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for t in vcts {
                    set_default(t, "apiVersion", json!("v1"));
                    set_default(t, "kind", json!("PersistentVolumeClaim"));
                    set_default(&mut t["metadata"], "creationTimestamp", Value::Null);
                    set_default(&mut t["spec"], "volumeMode", json!("Filesystem"));
                    set_default(t, "status", json!({"phase": "Pending"}));
                }
            }
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            if spec.get("updateStrategy").is_none() {
                spec["updateStrategy"] =
                    json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            if spec.get("persistentVolumeClaimRetentionPolicy").is_none() {
                spec["persistentVolumeClaimRetentionPolicy"] =
                    json!({"whenDeleted": "Retain", "whenScaled": "Retain"});
            }
            set_default(
                obj,
                "status",
                json!({"replicas": 0, "availableReplicas": 0}),
            );
        }
        ("apps", "DaemonSet") => {
            let spec = &mut obj["spec"];
            pod_template(&mut spec["template"]);
            if spec.get("updateStrategy").is_none() {
                spec["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}});
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(&mut obj["metadata"], "annotations", json!({}));
            set_default(
                &mut obj["metadata"]["annotations"],
                "deprecated.daemonset.template.generation",
                json!("1"),
            );
            set_default(
                obj,
                "status",
                json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0}),
            );
        }
        ("batch", "CronJob") => {
            let spec = &mut obj["spec"];
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(
                &mut spec["jobTemplate"],
                "metadata",
                json!({"creationTimestamp": null}),
            );
            pod_template(&mut spec["jobTemplate"]["spec"]["template"]);
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
            set_default(obj, "status", json!({}));
        }
        ("batch", "Job") => pod_template(&mut obj["spec"]["template"]),
        ("", "Service") => {
            let headless = obj["spec"]["clusterIP"] == "None";
            let spec = &mut obj["spec"];
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut() {
                    set_default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    set_default(p, "targetPort", port);
                }
            }
            if !headless && spec.get("clusterIP").is_none() {
                *ip += 1;
                let addr = format!("10.0.0.{}", *ip % 250 + 2);
                spec["clusterIP"] = json!(addr);
                spec["clusterIPs"] = json!([addr]);
            } else if headless {
                set_default(spec, "clusterIPs", json!(["None"]));
            }
            set_default(spec, "type", json!("ClusterIP"));
            if spec["type"] == "NodePort" || spec["type"] == "LoadBalancer" {
                set_default(spec, "externalTrafficPolicy", json!("Cluster"));
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut() {
                        if p.get("nodePort").is_none() {
                            *node_port += 1;
                            p["nodePort"] = json!(*node_port);
                        }
                    }
                }
            }
            set_default(spec, "sessionAffinity", json!("None"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(obj, "status", json!({"loadBalancer": {}}));
        }
        ("", "Secret") => {
            if let Some(Value::Object(sd)) =
                obj.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                let data = obj
                    .as_object_mut()
                    .unwrap()
                    .entry("data")
                    .or_insert_with(|| json!({}));
                for (k, v) in sd {
                    let text = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    data[k.as_str()] =
                        json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
            set_default(obj, "type", json!("Opaque"));
        }
        ("", "Namespace") => {
            let name = obj["metadata"]["name"].clone();
            set_default(&mut obj["metadata"], "labels", json!({}));
            set_default(
                &mut obj["metadata"]["labels"],
                "kubernetes.io/metadata.name",
                name,
            );
            set_default(obj, "spec", json!({"finalizers": ["kubernetes"]}));
            set_default(obj, "status", json!({"phase": "Active"}));
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let has_egress = obj["spec"].get("egress").is_some();
            let spec = &mut obj["spec"];
            if let Some(rules) = spec.get_mut("ingress").and_then(Value::as_array_mut) {
                for r in rules {
                    if let Some(ports) = r.get_mut("ports").and_then(Value::as_array_mut) {
                        for p in ports {
                            set_default(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
            let types = if has_egress {
                json!(["Ingress", "Egress"])
            } else {
                json!(["Ingress"])
            };
            set_default(spec, "policyTypes", types);
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects {
                    if s["kind"] == "User" || s["kind"] == "Group" {
                        set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            set_default(&mut obj["spec"], "conversion", json!({"strategy": "None"}));
        }
        ("networking.k8s.io", "Ingress") => set_default(obj, "status", json!({"loadBalancer": {}})),
        ("policy", "PodDisruptionBudget") => set_default(
            obj,
            "status",
            json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}),
        ),
        _ => {}
    }
    if is_builtin_group(group) {
        canonicalize_quantities(obj, &mut Vec::new());
    }
}

fn pod_template(t: &mut Value) {
    if !t.is_object() {
        return;
    }
    set_default(t, "metadata", json!({}));
    set_default(&mut t["metadata"], "creationTimestamp", Value::Null);
    let spec = &mut t["spec"];
    if !spec.is_object() {
        return;
    }
    for list in CONTAINER_LISTS {
        if let Some(cs) = spec.get_mut(*list).and_then(Value::as_array_mut) {
            for c in cs {
                container(c);
            }
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            for src in ["configMap", "secret"] {
                if v.get(src).is_some() {
                    set_default(&mut v[src], "defaultMode", json!(420));
                }
            }
            if v.get("hostPath").is_some() {
                set_default(&mut v["hostPath"], "type", json!(""));
            }
        }
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        set_default(spec, "serviceAccount", sa);
    }
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
}

fn container(c: &mut Value) {
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if e["valueFrom"].get("fieldRef").is_some() {
                set_default(&mut e["valueFrom"]["fieldRef"], "apiVersion", json!("v1"));
            }
            if e["valueFrom"].get("resourceFieldRef").is_some() {
                set_default(
                    &mut e["valueFrom"]["resourceFieldRef"],
                    "divisor",
                    json!("0"),
                );
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if c.get(probe).is_some() {
            let p = &mut c[probe];
            if p.get("httpGet").is_some() {
                set_default(&mut p["httpGet"], "scheme", json!("HTTP"));
            }
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
        }
    }
    // `resources` is a struct, not a pointer, in the Go type: always written, `{}` when empty
    // (apply-legacy-worker-201).
    set_default(c, "resources", json!({}));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c["image"].as_str().unwrap_or("").to_string();
    let tag = image
        .rsplit('/')
        .next()
        .and_then(|last| last.split_once(':'))
        .map(|(_, t)| t.to_string());
    let policy = match tag.as_deref() {
        None | Some("latest") => "Always",
        _ => "IfNotPresent",
    };
    set_default(c, "imagePullPolicy", json!(policy));
}

/// Canonicalizes typed quantities (`resources.requests|limits.*`, `emptyDir.sizeLimit`).
fn canonicalize_quantities(v: &mut Value, names: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let quantities = {
                let last = names.last().map(String::as_str).unwrap_or("");
                let parent = names
                    .len()
                    .checked_sub(2)
                    .and_then(|i| names.get(i))
                    .map(String::as_str)
                    .unwrap_or("");
                (matches!(last, "requests" | "limits") && parent == "resources") || last == "hard"
            };
            for (k, child) in m.iter_mut() {
                if quantities || k == "sizeLimit" {
                    if let Some(q) = canonical_quantity(child) {
                        *child = json!(q);
                    }
                    continue;
                }
                names.push(k.clone());
                canonicalize_quantities(child, names);
                names.pop();
            }
        }
        Value::Array(items) => {
            for i in items {
                canonicalize_quantities(i, names);
            }
        }
        _ => {}
    }
}

/// A Kubernetes quantity in canonical form (`0.5` → `500m`, `1.5Gi` → `1536Mi`, `1e9` → `1G`).
pub fn canonical_quantity(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .char_indices()
        .find(|(i, c)| {
            !(c.is_ascii_digit()
                || *c == '.'
                || *c == '+'
                || *c == '-'
                || ((*c == 'e' || *c == 'E')
                    && text[i + 1..]
                        .chars()
                        .next()
                        .is_some_and(|n| n.is_ascii_digit() || n == '-' || n == '+')))
        })
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(split);
    let (mantissa, exp10) = match num.find(['e', 'E']) {
        Some(i) => (&num[..i], num[i + 1..].parse::<i32>().ok()?),
        None => (num, 0),
    };
    let negative = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['-', '+']);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let digits: i128 = format!("{int_part}{frac_part}").parse().ok()?;
    let (dec_exp, bin_exp, binary) = match suffix {
        "" => (0, 0, false),
        "m" => (-3, 0, false),
        "k" => (3, 0, false),
        "M" => (6, 0, false),
        "G" => (9, 0, false),
        "T" => (12, 0, false),
        "P" => (15, 0, false),
        "E" => (18, 0, false),
        "Ki" => (0, 1, true),
        "Mi" => (0, 2, true),
        "Gi" => (0, 3, true),
        "Ti" => (0, 4, true),
        "Pi" => (0, 5, true),
        "Ei" => (0, 6, true),
        _ => return None,
    };
    // Value in milli-units: digits × 10^(exp10 + dec_exp + 3 − frac digits) × 1024^bin_exp,
    // rounded up below one milli-unit like the real parser.
    let scale = exp10 + dec_exp + 3 - frac_part.len() as i32;
    let mut milli = digits.checked_mul(1024i128.checked_pow(bin_exp)?)?;
    if scale >= 0 {
        milli = milli.checked_mul(10i128.checked_pow(scale as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-scale) as u32)?;
        milli = (milli + d - 1) / d;
    }
    let sign = if negative && milli != 0 { "-" } else { "" };
    if milli == 0 {
        return Some("0".into());
    }
    if binary && milli % 1000 == 0 {
        let bytes = milli / 1000;
        for (i, s) in [
            (6u32, "Ei"),
            (5, "Pi"),
            (4, "Ti"),
            (3, "Gi"),
            (2, "Mi"),
            (1, "Ki"),
        ] {
            let unit = 1024i128.pow(i);
            if bytes % unit == 0 {
                return Some(format!("{sign}{}{s}", bytes / unit));
            }
        }
        return Some(format!("{sign}{bytes}"));
    }
    for (e, s) in [
        (18u32, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
        (0, ""),
    ] {
        let unit = 10i128.pow(e + 3);
        if milli % unit == 0 {
            return Some(format!("{sign}{}{s}", milli / unit));
        }
    }
    Some(format!("{sign}{milli}m"))
}

// ------------------------------------------------------------------------------------------
// Small helpers
// ------------------------------------------------------------------------------------------

fn split_gv(gv: &str) -> (String, String) {
    match gv.rsplit_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), gv.to_string()),
    }
}

fn join_gv(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

fn now() -> String {
    driftwarden::run::now_rfc3339()
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    http::form_pairs(q).collect()
}

fn parse_yaml_or_json(text: &str) -> Result<Value, String> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(v);
    }
    driftwarden::yaml::parse_single(text)
        .map(|d| d.root.to_json())
        .map_err(|e| format!("line {}: {}", e.line, e.message))
}

/// A continue token: unpadded base64url JSON `{"v","rv","start"}`, like the real one. `rv` is
/// -1 in the token a 410 hands out (continue at the latest revision, inconsistently).
fn encode_continue(rv: i64, start: &str) -> String {
    let mut m = Map::new();
    m.insert("v".into(), json!("meta.k8s.io/v1"));
    m.insert("rv".into(), json!(rv));
    m.insert("start".into(), json!(start));
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&Value::Object(m)).unwrap())
}

fn decode_continue(token: &str) -> Option<(i64, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    if v["v"] != "meta.k8s.io/v1" {
        return None;
    }
    Some((v["rv"].as_i64()?, v["start"].as_str()?.to_string()))
}

/// The real server's 410 for an expired continue token (k8s.io/apiserver etcd3 store,
/// `handleCompactedErrorForPaging`): `apierrors.NewResourceExpired` with the
/// inconsistent-continue message, and in `metadata.continue` a token for the rest of the list
/// at the latest revision (`rv: -1`, the same start key).
fn expired_continue_body(q: &[(String, String)]) -> Value {
    let start = q
        .iter()
        .find(|(k, _)| k == "continue")
        .and_then(|(_, t)| decode_continue(t))
        .map(|(_, start)| start)
        .unwrap_or_default();
    json!({"kind": "Status", "apiVersion": "v1",
        "metadata": {"continue": encode_continue(-1, &start)},
        "status": "Failure",
        "message": "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        "reason": "Expired", "code": 410})
}

/// One label selector requirement.
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        }
    }
}

fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| {
            let p = p.trim();
            if p.is_empty() {
                return Err("empty requirement".to_string());
            }
            if let Some(k) = p.strip_prefix('!') {
                return Ok(Requirement::NotExists(k.trim().to_string()));
            }
            if let Some((k, v)) = p.split_once("!=") {
                return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
            }
            if let Some((k, v)) = p.split_once("==") {
                return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
            }
            if let Some((k, v)) = p.split_once('=') {
                return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
            }
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or(format!("`{p}`: expected a list in parentheses"))?;
                Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
            };
            if let Some((k, rest)) = p.split_once(" notin ") {
                return Ok(Requirement::NotIn(k.trim().into(), set(rest)?));
            }
            if let Some((k, rest)) = p.split_once(" in ") {
                return Ok(Requirement::In(k.trim().into(), set(rest)?));
            }
            if p.contains(' ') {
                return Err(format!("`{p}`: found unexpected text"));
            }
            Ok(Requirement::Exists(p.to_string()))
        })
        .collect()
}
