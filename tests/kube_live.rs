//! The Kubernetes live source and actuator against a Kubernetes API server on loopback
//! (tests/support/kube_server.rs) that kube's client talks to over real HTTP.
//!
//! First the server itself is checked against the real kube-apiserver's captured exchanges
//! (`fixtures/golden/protocol`); then driftwarden runs against it: end to end from a Git
//! repository in autocorrect mode, request counts at scale, injected faults (expired continue
//! tokens included), applies the server refuses (a typo in Git, a Secret's value quoted in a
//! 422), the blast radius, the hourly limit, dry runs and pruning: what the live Kubernetes
//! source and the actuator promise.

#[path = "support/common.rs"]
mod common;
#[path = "support/golden.rs"]
mod golden;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{commit_files, read_json, write};
use driftwarden::config;
use driftwarden::model::{Action, ActionResult, Drift, DriftKind, Report};
use driftwarden::run::{self, Command, RunOptions};
use git2::Repository;
use golden::{RawAnswer, exchange, golden, normalize, request_body};
use kube_server::{Fault, FaultKind, KubeServer, LoggedRequest, TOKEN};
use serde_json::{Value, json};

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

/// The content type the real client sent with a golden exchange's request.
fn golden_content_type(method: &str, name: &str) -> Option<&'static str> {
    match method {
        "PATCH" if name.starts_with("merge-patch") => Some(MERGE),
        "PATCH" if name.starts_with("strategic-merge-patch") => Some(STRATEGIC),
        "PATCH" => Some(APPLY),
        "DELETE" => Some("application/json"),
        _ => None,
    }
}

/// Sends a golden exchange's request as the real client sent it, checks the status, and returns
/// our answer's body and the real one, both normalized.
async fn replay(server: &KubeServer, name: &str) -> (Value, Value) {
    let want = exchange(name);
    let (status, mut got) = send_golden(server, name).await;
    assert_eq!(status, want.status, "{name}: {got:#}");
    let mut expected = want.body;
    normalize(&mut got);
    normalize(&mut expected);
    (got, expected)
}

/// Sends a golden exchange's request as the real client sent it: our status and JSON body.
async fn send_golden(server: &KubeServer, name: &str) -> (u16, Value) {
    let want = exchange(name);
    raw(
        server,
        &want.method,
        &want.target,
        golden_content_type(&want.method, name),
        &request_body(name),
        true,
    )
    .await
}

/// A raw HTTP/1.1 exchange, like curl: status, headers and the body as text.
async fn raw_exchange(
    server: &KubeServer,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
    auth: bool,
) -> RawAnswer {
    let addr = server.url().trim_start_matches("http://").to_string();
    let token = auth.then_some(TOKEN);
    golden::raw_exchange(&addr, token, method, target, content_type, body).await
}

/// A raw HTTP/1.1 exchange, like curl: status and JSON body.
async fn raw(
    server: &KubeServer,
    method: &str,
    target: &str,
    content_type: Option<&str>,
    body: &str,
    auth: bool,
) -> (u16, Value) {
    let answer = raw_exchange(server, method, target, content_type, body, auth).await;
    let value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    (answer.status, value)
}

/// `v` with the keys of every map in the order `template` has them (keys it lacks after):
/// live/ is key-sorted, while the real server encodes an object in its Go types' field order,
/// which only its answers show.
fn ordered_like(v: &Value, template: &Value) -> Value {
    match (v, template) {
        (Value::Object(m), Value::Object(t)) => {
            let mut out = serde_json::Map::new();
            for (k, tv) in t {
                if let Some(child) = m.get(k) {
                    out.insert(k.clone(), ordered_like(child, tv));
                }
            }
            for (k, child) in m {
                if !out.contains_key(k) {
                    out.insert(k.clone(), child.clone());
                }
            }
            Value::Object(out)
        }
        (Value::Array(items), Value::Array(t)) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| t.get(i).map_or(item.clone(), |ti| ordered_like(item, ti)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// A new repository at `repo_dir` whose one commit holds `files`.
fn commit_all(repo_dir: &Path, files: &[(String, String)]) {
    let repo = Repository::init(repo_dir).unwrap();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(rel, text)| (rel.as_str(), text.as_str()))
        .collect();
    commit_files(&repo, &files, "desired state");
}

/// A policy for these tests: routine edits and missing objects are safe, schedules risky,
/// Secrets forbidden.
const POLICY: &str = r#"package driftwarden.e2e

classify contains {"class": "safe", "reason": "routine edit", "rule": "routine"} if {
	input.kind == "Modified"
	input.resource.kind in {"Deployment", "ConfigMap"}
}

classify contains {"class": "risky", "reason": "schedule changes are release decisions", "rule": "schedule"} if {
	input.resource.kind == "CronJob"
}

classify contains {"class": "forbidden", "reason": "secret content", "rule": "secret"} if {
	input.resource.kind == "Secret"
}

classify contains {"class": "safe", "reason": "missing object", "rule": "missing"} if {
	input.kind == "Missing"
}

classify contains {"class": "safe", "reason": "not in Git", "rule": "unmanaged"} if {
	input.kind == "Unmanaged"
}
"#;

struct Env {
    dir: tempfile::TempDir,
    server: KubeServer,
    kubeconfig: PathBuf,
}

impl Env {
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = KubeServer::start().await;
        let kubeconfig = server.write_kubeconfig(dir.path());
        write(dir.path(), "policies/e2e.rego", POLICY);
        Env {
            dir,
            server,
            kubeconfig,
        }
    }

    /// An Env whose server holds the golden drifted objects and whose Git repository
    /// `gitops` the desired ones ([`seed_golden_drifted`]).
    async fn golden_drifted() -> Env {
        let env = Env::new().await;
        let desired = seed_golden_drifted(&env.server);
        commit_all(&env.path("gitops"), &desired);
        env
    }

    /// An Env whose server holds the small cluster of [`seed_team`], and the desired state of
    /// all of it ([`write_desired`]).
    async fn team() -> (Env, String) {
        let env = Env::new().await;
        let seeded = seed_team(&env.server);
        let desired = write_desired(&env, &seeded);
        (env, desired)
    }

    /// Injects a fault into the server: see [`Fault::new`].
    fn inject(&self, method: &str, path_prefix: &str, kind: FaultKind, times: usize) {
        self.server
            .inject(Fault::new(method, path_prefix, kind, times));
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The config of an autocorrect target on `shop-drifted`, desired from the `gitops`
    /// repository; `extra` as in [`Env::config`].
    fn gitops_config(&self, extra: &str) -> PathBuf {
        self.config(
            "autocorrect",
            "shop-drifted",
            &format!(
                "{{git: {{repo: {}}}, path: apps/shop}}",
                self.path("gitops").display()
            ),
            "",
            extra,
        )
    }

    /// A config file for one target; `desired` and `extra` are YAML fragments of the target.
    fn config(
        &self,
        mode: &str,
        namespace: &str,
        desired: &str,
        kube: &str,
        extra: &str,
    ) -> PathBuf {
        let text = format!(
            "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\ntargets:\n  - name: shop\n    mode: {mode}\n    cluster: test\n    namespace: {namespace}\n    desired: {desired}\n    live:\n      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5{kube}}}\n{extra}",
            policies = self.path("policies").display(),
            state = self.path("state").display(),
            kc = self.kubeconfig.display(),
        );
        write(self.dir.path(), "driftwarden.yaml", &text)
    }

    async fn run(&self, cfg: &Path, command: Command, dry_run: bool) -> Report {
        let cfg = config::load(cfg).unwrap();
        let mut opts = RunOptions::new(command);
        opts.cache_dir = self.path("cache");
        opts.dry_run = dry_run;
        run::run(&cfg, &opts).await.unwrap()
    }
}

/// Adds a local forge writing under `output_dir` to the config file `cfg`.
fn add_local_forge(cfg: &Path, output_dir: &Path) {
    let text = std::fs::read_to_string(cfg).unwrap().replacen(
        "version: 1\n",
        &format!(
            "version: 1\npull_requests: {{forge: local, output_dir: {}}}\n",
            output_dir.display()
        ),
        1,
    );
    std::fs::write(cfg, text).unwrap();
}

/// Runs the binary in the test's directory, `COMMAND --config CFG -o json ARGS...`, without a log
/// filter from the environment; checks its exit code (`why` says what it means) and returns the
/// report with stdout and stderr.
async fn run_binary(
    env: &Env,
    command: &str,
    cfg: &Path,
    args: &[&str],
    code: i32,
    why: &str,
) -> (Report, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args([command, "--config"])
        .arg(cfg)
        .args(["-o", "json"])
        .args(args)
        .env_remove("DRIFTWARDEN_LOG")
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{why}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Report = serde_json::from_str(&stdout).unwrap();
    (report, stdout, stderr)
}

/// Deployment `shop-drifted/storefront` as the server holds it.
fn storefront(env: &Env) -> Value {
    env.server
        .object("apps/v1", "Deployment", Some("shop-drifted"), "storefront")
        .unwrap()
}

fn drift<'a>(report: &'a Report, display: &str) -> &'a Drift {
    report
        .drifts
        .iter()
        .find(|d| d.resource.display == display)
        .unwrap_or_else(|| {
            panic!(
                "no drift for {display}; drifts: {:?}",
                report
                    .drifts
                    .iter()
                    .map(|d| &d.resource.display)
                    .collect::<Vec<_>>()
            )
        })
}

fn action(d: &Drift) -> (Action, ActionResult, String) {
    let a = d.action.as_ref().expect("an action");
    (
        a.action.clone(),
        a.result.clone(),
        a.detail.clone().unwrap_or_default(),
    )
}

fn writes(reqs: &[LoggedRequest]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.is_write())
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect()
}

/// Every resource request maps to RBAC verbs the documented role grants
/// (`driftwarden::live::kube_verbs`, the list deploy/ and the README are checked against).
fn assert_rbac_covers(reqs: &[LoggedRequest]) {
    use driftwarden::live::kube_verbs::{KUBE_VERBS, rbac_verbs};
    for r in reqs.iter().filter(|r| !r.is_discovery()) {
        let verbs = rbac_verbs(&r.method, r.is_collection(), r.status);
        assert!(
            !verbs.is_empty() && verbs.iter().all(|v| KUBE_VERBS.contains(v)),
            "{} {} ({}): {verbs:?}",
            r.method,
            r.path,
            r.status
        );
    }
}

/// Seeds the golden drifted objects (namespace `shop-drifted`, EXPECTED.md) and returns the
/// golden desired manifests moved to that namespace (cluster-scoped ones left out: they were
/// not copied there).
fn seed_golden_drifted(server: &KubeServer) -> Vec<(String, String)> {
    let mut live: Vec<PathBuf> = std::fs::read_dir(golden("live-drifted"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    live.sort();
    // The namespace first.
    live.sort_by_key(|p| !p.to_string_lossy().contains("namespace-"));
    for p in live {
        server.seed(read_json(&p));
    }
    let mut desired = Vec::new();
    for e in std::fs::read_dir(golden("desired")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("cluster") || name.starts_with("customresourcedefinition") {
            continue;
        }
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("namespace: shop\n", "namespace: shop-drifted\n");
        let text = if name == "namespace-shop.yaml" {
            text.replace("name: shop\n", "name: shop-drifted\n")
        } else {
            text
        };
        desired.push((format!("apps/shop/{name}"), text));
    }
    desired.sort();
    desired
}

// ------------------------------------------------------------------------------------------
// The test server against the real server's answers
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_discovery_matches_the_real_server() {
    let server = KubeServer::start().await;
    for name in ["api", "apis", "apis-platform.driftwarden.test-v1alpha1"] {
        let want = exchange(name);
        let (status, got) = raw(&server, &want.method, &want.target, None, "", true).await;
        assert_eq!(status, want.status, "{name}");
        assert_eq!(got, want.body, "{name}");
    }
    // Core and apps: every resource the test server serves is exactly as the real one lists it.
    for name in ["api-v1", "apis-apps-v1"] {
        let want = exchange(name);
        let (status, got) = raw(&server, &want.method, &want.target, None, "", true).await;
        assert_eq!(status, 200);
        assert_eq!(got["kind"], want.body["kind"]);
        assert_eq!(got.get("apiVersion"), want.body.get("apiVersion"), "{name}");
        assert_eq!(got["groupVersion"], want.body["groupVersion"]);
        let real = want.body["resources"].as_array().unwrap();
        let ours = got["resources"].as_array().unwrap();
        assert!(ours.len() >= 10, "{name}");
        for r in ours {
            let twin = real
                .iter()
                .find(|x| x["name"] == r["name"])
                .unwrap_or_else(|| panic!("{name}: the real server has no {}", r["name"]));
            assert_eq!(r, twin, "{name}");
        }
    }
    let (status, body) = raw(&server, "GET", "/version", None, "", true).await;
    assert_eq!(status, 200);
    assert_eq!(body, exchange("version").body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_paging_matches_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    for cm in [
        "configmap-nightly-report",
        "configmap-orders-db-init",
        "configmap-storefront-config",
    ] {
        server.seed(read_json(golden(&format!("live/{cm}.json"))));
    }
    server.set_resource_version(285);
    for name in [
        "list-configmaps-limit2-page1",
        "list-configmaps-limit2-page2",
    ] {
        let want = exchange(name);
        let (status, got) = raw(&server, &want.method, &want.target, None, "", true).await;
        assert_eq!(status, want.status, "{name}");
        // Byte-identical continue token and remainingItemCount included.
        assert_eq!(got, want.body, "{name}");
    }
    // A label selector filters; remainingItemCount is then left out, like the real server.
    let (_, sel) = raw(
        &server,
        "GET",
        "/api/v1/namespaces/shop/configmaps?labelSelector=app.kubernetes.io%2Fname%20in%20(storefront,orders-db)&limit=1",
        None,
        "",
        true,
    )
    .await;
    assert_eq!(sel["items"][0]["metadata"]["name"], "orders-db-init");
    assert!(sel["metadata"]["continue"].is_string());
    assert!(sel["metadata"].get("remainingItemCount").is_none());
    let (status, bad) = raw(
        &server,
        "GET",
        "/api/v1/namespaces/shop/configmaps?continue=not-a-token",
        None,
        "",
        true,
    )
    .await;
    assert_eq!((status, bad["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_server_side_apply_sequence_matches_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    server.set_resource_version(285);
    // The captured sequence on Deployment `checkout` (fixtures/golden/README.md).
    for name in [
        "apply-create-201",
        "apply-unchanged-200",
        "apply-dryrun-200",
        "apply-dryrun-create-201",
        "get-missing-404",
        "apply-conflict-409",
        "apply-force-200",
        "apply-reclaim-conflict-409",
        "apply-reclaim-force-200",
        "merge-patch-200",
        "strategic-merge-patch-200",
        "delete-deployment-200",
        "apply-service-create-201",
        "delete-service-200",
    ] {
        if name == "apply-service-create-201" {
            // The real sequence wrote other objects in between.
            server.set_resource_version(294);
        }
        let (mut got, mut expected) = replay(&server, name).await;
        for v in [&mut got, &mut expected] {
            // Allocated addresses differ between any two clusters.
            if v["kind"] == "Service" {
                v["spec"]["clusterIP"] = json!("X");
                v["spec"]["clusterIPs"] = json!(["X"]);
            }
        }
        assert_eq!(
            got, expected,
            "{name}\n--- ours:\n{got:#}\n--- real:\n{expected:#}"
        );
    }
    // Statuses the sequence does not reach.
    let (status, body) = raw(
        &server,
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments",
        None,
        "",
        false,
    )
    .await;
    assert_eq!((status, &body), (401, &exchange("unauthorized-401").body));
    server.inject(Fault::new(
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments",
        FaultKind::Status(403),
        1,
    ));
    let (status, body) = raw(
        &server,
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments",
        None,
        "",
        true,
    )
    .await;
    assert_eq!((status, &body), (403, &exchange("forbidden-403").body));
}

#[test]
fn golden_quantities_are_canonicalized_like_the_real_server() {
    for (input, want) in [
        (json!(0.5), "500m"),
        (json!(0.25), "250m"),
        (json!(2.5), "2500m"),
        (json!("0.1"), "100m"),
        (json!(0.001), "1m"),
        (json!("1000m"), "1"),
        (json!(2.0), "2"),
        (json!("1.5Gi"), "1536Mi"),
        (json!("1024Mi"), "1Gi"),
        (json!("0.5Gi"), "512Mi"),
        (json!("2048Mi"), "2Gi"),
        (json!(1e9), "1G"),
        (json!(129e6), "129M"),
        (json!("1Gi"), "1Gi"),
        (json!("512Mi"), "512Mi"),
        (json!("2000Mi"), "2000Mi"),
        (json!(128974848), "128974848"),
    ] {
        assert_eq!(
            kube_server::canonical_quantity(&input).as_deref(),
            Some(want),
            "{input}"
        );
    }
}

const APPLY: &str = "application/apply-patch+yaml";
const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

/// Server-side apply of an object with a field its kind's schema does not declare answers 500
/// with the real message (no `reason`), with or without `fieldValidation=Strict`, for custom
/// resources too; invalid values answer 422 `Invalid` listing every cause. Nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_refused_applies_match_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    server.set_resource_version(285);
    let create = exchange("apply-create-201");
    let (status, _) = raw(
        &server,
        "PATCH",
        &create.target,
        Some(APPLY),
        &request_body("apply-create-201"),
        true,
    )
    .await;
    assert_eq!(status, 201);
    let before = server
        .object("apps/v1", "Deployment", Some("shop"), "checkout")
        .unwrap();
    // Byte for byte: status code, no reason, the message naming the object and the field.
    for name in [
        "apply-unknown-field-500",
        "apply-unknown-field-strict-500",
        "apply-cr-unknown-field-500",
        "apply-invalid-422",
    ] {
        let want = exchange(name);
        let (status, got) = raw(
            &server,
            &want.method,
            &want.target,
            Some(APPLY),
            &request_body(name),
            true,
        )
        .await;
        assert_eq!(status, want.status, "{name}: {got:#}");
        assert_eq!(
            got, want.body,
            "{name}\n--- ours:\n{got:#}\n--- real:\n{:#}",
            want.body
        );
    }
    // The same without dryRun: still refused, and a typed patch error is not a conflict to force.
    let (status, got) = raw(
        &server,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/checkout?fieldManager=driftwarden&force=true",
        Some(APPLY),
        &request_body("apply-unknown-field-500"),
        true,
    )
    .await;
    assert_eq!(status, 500);
    assert_eq!(got, exchange("apply-unknown-field-500").body);

    // The custom resource's causes: the real server's order is Go's map order, so the same
    // causes and the same message in any order.
    let want = exchange("apply-cr-invalid-422");
    let (status, got) = raw(
        &server,
        &want.method,
        &want.target,
        Some(APPLY),
        &request_body("apply-cr-invalid-422"),
        true,
    )
    .await;
    assert_eq!(status, 422, "{got:#}");
    for key in ["kind", "apiVersion", "metadata", "status", "reason", "code"] {
        assert_eq!(got[key], want.body[key], "{key}");
    }
    for key in ["name", "group", "kind"] {
        assert_eq!(got["details"][key], want.body["details"][key], "{key}");
    }
    let causes = |v: &Value| {
        let mut c: Vec<String> = v["details"]["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        c.sort();
        c
    };
    assert_eq!(causes(&got), causes(&want.body));
    let message = got["message"].as_str().unwrap();
    let real = want.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("CacheCluster.platform.driftwarden.test \"bad-cache\" is invalid: [")
            && message.ends_with(']')
            && message.len() == real.len(),
        "{message}"
    );
    for c in want.body["details"]["causes"].as_array().unwrap() {
        let text = format!(
            "{}: {}",
            c["field"].as_str().unwrap(),
            c["message"].as_str().unwrap()
        );
        assert!(message.contains(&text), "{text}\nin: {message}");
    }

    // Nothing refused was stored or changed.
    assert!(
        server
            .object("apps/v1", "Deployment", Some("shop"), "broken")
            .is_none()
    );
    assert!(
        server
            .object(
                "platform.driftwarden.test/v1alpha1",
                "CacheCluster",
                Some("shop"),
                "bad-cache"
            )
            .is_none()
    );
    let after = server
        .object("apps/v1", "Deployment", Some("shop"), "checkout")
        .unwrap();
    assert_eq!(before, after);
    assert!(after["spec"].get("replica").is_none());
    // A refused create allocated no resourceVersion: the next write gets 287.
    let (status, got) = raw(
        &server,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/checkout",
        Some(MERGE),
        r#"{"spec":{"replicas":3}}"#,
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["metadata"]["resourceVersion"], "287");
}

/// A body carrying a stale `metadata.resourceVersion` is a failed precondition: 409 `Conflict`
/// with the real message (update-stale-resourceversion-409: the captured PUT's body, here as a
/// merge patch and as an apply); the current one is accepted. An apply carrying
/// `metadata.managedFields` answers 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_stale_resource_version_and_managed_fields_are_refused() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    server.set_resource_version(285);
    assert_eq!(send_golden(&server, "apply-create-201").await.0, 201);
    // The captured sequence moved the object on before the PUT (merge and strategic patches).
    assert_eq!(send_golden(&server, "merge-patch-200").await.0, 200);
    assert_eq!(
        send_golden(&server, "strategic-merge-patch-200").await.0,
        200
    );
    let target = "/apis/apps/v1/namespaces/shop/deployments/checkout";
    let stale = request_body("update-stale-resourceversion-409");
    let want = exchange("update-stale-resourceversion-409");
    assert_eq!(want.body["metadata"], json!({}));
    let (status, got) = raw(&server, "PATCH", target, Some(MERGE), &stale, true).await;
    assert_eq!((status, &got), (409, &want.body), "merge patch: {got:#}");
    let (status, got) = raw(
        &server,
        "PATCH",
        &format!("{target}?fieldManager=driftwarden&force=true"),
        Some(APPLY),
        &stale,
        true,
    )
    .await;
    assert_eq!((status, &got), (409, &want.body), "apply: {got:#}");
    let live = server
        .object("apps/v1", "Deployment", Some("shop"), "checkout")
        .unwrap();
    assert_eq!(live["spec"]["replicas"], 2, "nothing written");

    // The current resourceVersion is accepted.
    let mut current: Value = serde_json::from_str(&stale).unwrap();
    current["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
    let (status, got) = raw(
        &server,
        "PATCH",
        target,
        Some(MERGE),
        &current.to_string(),
        true,
    )
    .await;
    assert_eq!(status, 200, "{got:#}");
    assert_eq!(got["spec"]["replicas"], 3);

    // managedFields in an apply: 400, whatever the list holds; null is no managedFields.
    let applied = got.clone();
    for managed in [applied["metadata"]["managedFields"].clone(), json!([])] {
        let mut body = applied.clone();
        body["metadata"]["managedFields"] = managed;
        body["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        let (status, got) = raw(
            &server,
            "PATCH",
            &format!("{target}?fieldManager=driftwarden&force=true"),
            Some(APPLY),
            &body.to_string(),
            true,
        )
        .await;
        assert_eq!(status, 400, "{got:#}");
        assert_eq!(
            got,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "metadata.managedFields must be nil", "reason": "BadRequest", "code": 400})
        );
    }
    let mut body = applied.clone();
    body["metadata"]["managedFields"] = Value::Null;
    let (status, got) = raw(
        &server,
        "PATCH",
        &format!("{target}?fieldManager=driftwarden&force=true"),
        Some(APPLY),
        &body.to_string(),
        true,
    )
    .await;
    assert_eq!(status, 200, "{got:#}");
}

/// A merge patch setting a field the kind does not declare (`spec.replica`): 200 with the
/// real `Warning: 299` header and the field dropped (merge-patch-unknown-field-warning-200), or
/// under `fieldValidation=Strict` the real 422, message byte for byte: it quotes the patched
/// object as the real server encoded it (merge-patch-unknown-field-strict-422). `Ignore` drops
/// the field silently. A strategic merge patch is checked the same way; its 422 quotes the
/// patch as Go prints a map (k8s.io/apiserver `applyPatchToObject`; no capture of it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_unknown_fields_in_a_patch_warn_or_are_refused_like_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    let captured = exchange("merge-patch-unknown-field-warning-200");
    // The strict 422 quotes the stored object in the server's own key order: seed live/ in it.
    server.seed(ordered_like(
        &read_json(golden("live/deployment-storefront.json")),
        &captured.body,
    ));
    let stored = || {
        server
            .object("apps/v1", "Deployment", Some("shop"), "storefront")
            .unwrap()
    };
    let before = stored();
    for name in [
        "merge-patch-unknown-field-warning-200",
        "merge-patch-unknown-field-strict-422",
    ] {
        let want = exchange(name);
        let got = raw_exchange(
            &server,
            &want.method,
            &want.target,
            Some(MERGE),
            &request_body(name),
            true,
        )
        .await;
        assert_eq!(got.status, want.status, "{name}: {}", got.body);
        // Status, reason, message (the whole patched object quoted), cause: all of the body.
        let body = got.json();
        assert_eq!(
            body, want.body,
            "{name}\n--- ours:\n{body:#}\n--- real:\n{:#}",
            want.body
        );
        assert_eq!(got.header("warning"), want.header("warning"), "{name}");
        assert_eq!(
            got.header("content-type"),
            want.header("content-type"),
            "{name}"
        );
    }
    assert_eq!(
        captured.header("warning"),
        [r#"299 - "unknown field \"spec.replica\"""#]
    );
    assert_eq!(stored(), before, "dry runs store nothing");

    let target = "/apis/apps/v1/namespaces/shop/deployments/storefront";
    // Ignore: no warning; without dryRun: the field is dropped, nothing else changes, nothing is
    // written (same resourceVersion).
    let ignored = raw_exchange(
        &server,
        "PATCH",
        &format!("{target}?fieldValidation=Ignore"),
        Some(MERGE),
        r#"{"spec":{"replica":3}}"#,
        true,
    )
    .await;
    assert_eq!(ignored.status, 200, "{}", ignored.body);
    assert!(ignored.header("warning").is_empty());
    assert_eq!(stored(), before, "nothing to write");
    let warned = raw_exchange(
        &server,
        "PATCH",
        target,
        Some(MERGE),
        r#"{"spec":{"replica":3,"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.27.4","imagee":"x"}]}}}}"#,
        true,
    )
    .await;
    assert_eq!(warned.status, 200, "{}", warned.body);
    assert_eq!(
        warned.header("warning"),
        [
            r#"299 - "unknown field \"spec.replica\"""#,
            r#"299 - "unknown field \"spec.template.spec.containers[0].imagee\"""#,
        ]
    );
    // The merge patch replaced the containers list: that change is stored, the unknown fields
    // are not.
    let after = stored();
    assert!(after["spec"].get("replica").is_none());
    let containers = after["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["image"], "nginx:1.27.4");
    assert!(containers[0].get("imagee").is_none());
    assert_eq!(containers[0]["resources"], json!({}), "a server default");

    // A strategic merge patch: the same warning; under Strict the patch quoted as a Go map.
    let (status, _) = raw(
        &server,
        "PATCH",
        &format!("{target}?fieldValidation=Strict"),
        Some(STRATEGIC),
        r#"{"spec":{"replica":3}}"#,
        true,
    )
    .await;
    assert_eq!(status, 422);
    let strict = raw(
        &server,
        "PATCH",
        &format!("{target}?fieldValidation=Strict&dryRun=All"),
        Some(STRATEGIC),
        r#"{"spec":{"replica":3,"paused":true}}"#,
        true,
    )
    .await;
    let detail = r#"Invalid value: "map[spec:map[paused:true replica:3]]": strict decoding error: unknown field "spec.replica""#;
    assert_eq!(
        strict,
        (
            422,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!(" \"\" is invalid: patch: {detail}"), "reason": "Invalid",
                "details": {"causes": [{"reason": "FieldValueInvalid", "message": detail, "field": "patch"}]},
                "code": 422})
        )
    );
    let warned = raw_exchange(
        &server,
        "PATCH",
        target,
        Some(STRATEGIC),
        r#"{"spec":{"replica":3}}"#,
        true,
    )
    .await;
    assert_eq!(warned.status, 200, "{}", warned.body);
    assert_eq!(
        warned.header("warning"),
        [r#"299 - "unknown field \"spec.replica\"""#]
    );
}

/// Strategic merge patch is served for built-in kinds only, like the real server (it needs the
/// Go types' patch strategies): a custom resource answers 415. A patch type this server does
/// not implement (JSON patch) answers 415 too, and the message lists only what it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_types_not_served_answer_415_naming_what_is() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    server.seed(read_json(golden("live/deployment-storefront.json")));
    let unsupported = |accepted: &str| {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("the body of the request was in an unknown format - accepted media types include: {accepted}"),
            "reason": "UnsupportedMediaType", "code": 415})
    };
    let got = raw(
        &server,
        "PATCH",
        "/apis/platform.driftwarden.test/v1alpha1/namespaces/shop/cacheclusters/session-cache",
        Some(STRATEGIC),
        r#"{"spec":{"replicas":3}}"#,
        true,
    )
    .await;
    assert_eq!(
        got,
        (
            415,
            unsupported("application/merge-patch+json, application/apply-patch+yaml")
        )
    );
    let got = raw(
        &server,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/storefront",
        Some("application/json-patch+json"),
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        true,
    )
    .await;
    assert_eq!(
        got,
        (
            415,
            unsupported(
                "application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
            )
        )
    );
    assert_eq!(
        server
            .object("apps/v1", "Deployment", Some("shop"), "storefront")
            .unwrap()["spec"]["replicas"],
        2
    );
    // Keyed lists merge by their patch merge key (null deletes inside an item), `$patch:
    // delete` removes an item, other lists are replaced.
    let (status, got) = raw(
        &server,
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments/storefront?fieldManager=kubectl-edit",
        Some(STRATEGIC),
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"log-shipper","$patch":"delete"},{"name":"web","args":["-v"],"env":[{"name":"LOG_LEVEL","value":"debug","valueFrom":null}]}]}}}}"#,
        true,
    )
    .await;
    assert_eq!(status, 200, "{got:#}");
    let containers = got["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "web");
    assert_eq!(containers[0]["image"], "nginx:1.27.3");
    assert_eq!(containers[0]["args"], json!(["-v"]));
    let env = containers[0]["env"].as_array().unwrap();
    assert_eq!(env.len(), 5, "merged by name: {env:#?}");
    assert_eq!(
        env.iter().find(|e| e["name"] == "LOG_LEVEL").unwrap(),
        &json!({"name": "LOG_LEVEL", "value": "debug"})
    );
    let edit = got["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl-edit")
        .unwrap();
    assert_eq!(edit["operation"], "Update");
}

/// Defaults and deletion as the real server does them on Deployment `legacy-worker`: a
/// container without `resources` gets `resources: {}` (apply-legacy-worker-201), and a
/// foreground delete marks the object deleting and raises its generation
/// (delete-foreground-200), which a GET then shows (get-after-foreground-delete-200).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_foreground_delete_raises_the_generation_like_the_real_server() {
    let server = KubeServer::start().await;
    server.seed(read_json(golden("live/namespace-shop.json")));
    server.set_resource_version(297);
    for name in [
        "apply-legacy-worker-201",
        "delete-foreground-200",
        "get-after-foreground-delete-200",
    ] {
        let (got, expected) = replay(&server, name).await;
        assert_eq!(
            got, expected,
            "{name}\n--- ours:\n{got:#}\n--- real:\n{expected:#}"
        );
    }
    // Deleting again changes nothing more.
    let (status, got) = raw(
        &server,
        "DELETE",
        "/apis/apps/v1/namespaces/shop/deployments/legacy-worker",
        Some("application/json"),
        &request_body("delete-foreground-200"),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(got["metadata"]["generation"], 2);
}

// ------------------------------------------------------------------------------------------
// Config
// ------------------------------------------------------------------------------------------

#[test]
fn kubernetes_live_source_config_is_validated() {
    let base = Path::new("/cfg");
    let cfg = config::parse(
        "targets:\n  - name: a\n    desired: {dir: d}\n    live:\n      kubernetes:\n        kubeconfig: kc.yaml\n        context: prod\n        page_size: 200\n        concurrency: 4\n        timeout_seconds: 2.5\n        max_attempts: 3\n        backoff_ms: 100\n",
        "t.yaml",
        base,
    )
    .unwrap();
    let config::LiveSource::Kubernetes(k) = &cfg.targets[0].live else {
        panic!("not kubernetes");
    };
    assert_eq!(k.kubeconfig.as_deref(), Some(Path::new("/cfg/kc.yaml")));
    assert_eq!(k.context.as_deref(), Some("prod"));
    assert_eq!((k.page_size, k.concurrency, k.max_attempts), (200, 4, 3));
    assert_eq!(k.timeout, Duration::from_millis(2500));
    assert_eq!(k.backoff, Duration::from_millis(100));

    let defaults = config::parse(
        "targets:\n  - name: a\n    desired: {dir: d}\n    live: {kubernetes: {}}\n",
        "t.yaml",
        base,
    )
    .unwrap();
    let config::LiveSource::Kubernetes(k) = &defaults.targets[0].live else {
        panic!("not kubernetes");
    };
    assert_eq!(*k, config::KubeSource::default());
    assert_eq!(k.page_size, 500);

    let err = config::parse(
        "targets:\n  - name: a\n    desired: {dir: d}\n    live:\n      snapshot: s\n      kubernetes:\n        kubeconfg: x\n        page_size: 0\n        in_cluster: true\n        context: c\n",
        "t.yaml",
        base,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("unknown key `kubeconfg` (did you mean `kubeconfig`?)"),
        "{err}"
    );
    assert!(
        err.contains("page_size: expected a whole number from 1 to 10000"),
        "{err}"
    );
    assert!(err.contains("`in_cluster: true` excludes"), "{err}");
    assert!(
        err.contains("exactly one of `snapshot`, `kubernetes`"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------------
// End to end
// ------------------------------------------------------------------------------------------

/// Must show: a Git repository and the API server seeded with drifted objects → `reconcile` in
/// autocorrect corrects the safe drifts, leaves the risky and forbidden ones, and a second run
/// reports those in sync and sends no write request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_autocorrect_then_a_second_run_writes_nothing() {
    let env = Env::golden_drifted().await;
    // One more hand edit, classified risky by the test policy.
    env.server.merge_patch_as(
        "kubectl-edit",
        "batch/v1",
        "CronJob",
        Some("shop-drifted"),
        "nightly-report",
        json!({"spec": {"schedule": "30 3 * * *"}}),
    );
    let cfg = env.config(
        "autocorrect",
        "shop-drifted",
        &format!(
            "{{git: {{repo: {}, ref: HEAD}}, path: apps/shop}}",
            env.path("gitops").display()
        ),
        "",
        "",
    );
    env.server.clear_requests();

    // Run 1 through the binary, as an operator would.
    let (report, stdout, stderr) = run_binary(
        &env,
        "reconcile",
        &cfg,
        &[
            "--log-level",
            "driftwarden=trace,kube=trace,kube_client=trace,hyper=trace",
        ],
        2,
        "drift remains (risky, forbidden)",
    )
    .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Secret values crossed the wire (LIST) but appear in no output or log line.
    for canary in [
        "ZXhhbXBsZS1hcGkta2V5LTAw",
        "example-api-key",
        "ZXhhbXBsZS1kYi1wYXNzd29yZA",
        "bm90LWEtcmVhbC1zZXNzaW9uLXNlY3JldA",
    ] {
        assert!(!stdout.contains(canary), "report leaks {canary}");
        assert!(!stderr.contains(canary), "logs leak {canary}");
    }
    assert!(stderr.contains("cluster read"), "trace logs were on");

    let dep = drift(&report, "Deployment shop-drifted/storefront");
    let (a, r, detail) = action(dep);
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert!(
        detail.contains("the re-read confirms the drift is gone"),
        "{detail}"
    );
    for display in [
        "ConfigMap shop-drifted/storefront-config",
        "Service shop-drifted/storefront-nodeport",
    ] {
        let (a, r, detail) = action(drift(&report, display));
        assert_eq!(
            (a, r),
            (Action::Correct, ActionResult::Done),
            "{display}: {detail}"
        );
    }
    let svc = drift(&report, "Service shop-drifted/storefront-nodeport");
    assert_eq!(svc.kind, DriftKind::Missing);
    assert!(action(svc).2.starts_with("created"), "{}", action(svc).2);
    let (a, r, _) = action(drift(&report, "CronJob shop-drifted/nightly-report"));
    assert_eq!((a, r), (Action::PullRequest, ActionResult::Planned));
    let (a, r, _) = action(drift(&report, "Secret shop-drifted/storefront-secrets"));
    assert_eq!((a, r), (Action::Issue, ActionResult::Planned));

    // The cluster now matches Git where it was safe, and nowhere else.
    let live = storefront(&env);
    assert_eq!(live["spec"]["replicas"], 2);
    assert_eq!(live["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(
        live["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.27.3"
    );
    let managers: Vec<&str> = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["driftwarden"], "force moved every field back");
    let cron = env
        .server
        .object(
            "batch/v1",
            "CronJob",
            Some("shop-drifted"),
            "nightly-report",
        )
        .unwrap();
    assert_eq!(cron["spec"]["schedule"], "30 3 * * *");
    let secret = env
        .server
        .object("v1", "Secret", Some("shop-drifted"), "storefront-secrets")
        .unwrap();
    assert_eq!(secret["data"]["API_KEY"], "ZXhhbXBsZS1hcGkta2V5LTAwMDI=");
    let nodeport = env
        .server
        .object("v1", "Service", Some("shop-drifted"), "storefront-nodeport")
        .unwrap();
    assert_eq!(nodeport["spec"]["ports"][0]["nodePort"], 30080);

    // Exactly three writes: server-side applies with driftwarden's manager and force.
    let reqs = env.server.requests();
    let w = writes(&reqs);
    assert_eq!(w.len(), 3, "{w:#?}");
    for r in reqs.iter().filter(|r| r.is_write()) {
        assert_eq!(r.method, "PATCH");
        assert_eq!(
            r.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert_eq!(r.param("fieldManager").as_deref(), Some("driftwarden"));
        assert_eq!(r.param("force").as_deref(), Some("true"));
    }
    // Reading is LIST per kind and namespace, never a GET per object: the only GETs of single
    // objects are the three re-reads after the writes.
    let gets: Vec<&LoggedRequest> = reqs.iter().filter(|r| r.is_get()).collect();
    assert_eq!(
        gets.len(),
        3,
        "{:#?}",
        gets.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // The Missing Service was created by its apply (201: authorized as patch and create).
    assert_eq!(reqs.iter().filter(|r| r.status == 201).count(), 1);
    assert_rbac_covers(&reqs);

    // Run 2, through the library: those are in sync, and nothing is written.
    env.server.clear_requests();
    let second = env.run(&cfg, Command::Reconcile, false).await;
    let shown: Vec<&str> = second
        .drifts
        .iter()
        .map(|d| d.resource.display.as_str())
        .collect();
    assert_eq!(
        shown,
        [
            "CronJob shop-drifted/nightly-report",
            "Secret shop-drifted/storefront-secrets"
        ]
    );
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    let reqs = env.server.requests();
    assert!(writes(&reqs).is_empty(), "{:#?}", writes(&reqs));
    assert!(reqs.iter().all(|r| r.method == "GET"));
    assert!(!reqs.iter().any(|r| r.is_get()), "no GET per object");
}

// ------------------------------------------------------------------------------------------
// Scale: LIST per kind and namespace, paginated
// ------------------------------------------------------------------------------------------

fn scale_object(kind: &str, ns: &str, i: usize) -> Value {
    let name = format!("{}-{i:03}", kind.to_lowercase());
    let meta = json!({"name": name, "namespace": ns, "labels": {"app.kubernetes.io/name": name}});
    let selector = json!({"matchLabels": {"app.kubernetes.io/name": name}});
    let template = json!({"metadata": {"labels": {"app.kubernetes.io/name": name}},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27.3", "ports": [{"containerPort": 8080}]}]}});
    match kind {
        "ConfigMap" => {
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"index": i.to_string()}})
        }
        "Secret" => {
            json!({"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"token": "c2VjcmV0"}})
        }
        "ServiceAccount" => json!({"apiVersion": "v1", "kind": kind, "metadata": meta}),
        "Service" => json!({"apiVersion": "v1", "kind": kind, "metadata": meta,
            "spec": {"selector": {"app.kubernetes.io/name": name}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        "Deployment" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"replicas": 2, "selector": selector, "template": template}}),
        "StatefulSet" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"serviceName": name, "replicas": 1, "selector": selector, "template": template}}),
        "DaemonSet" => json!({"apiVersion": "apps/v1", "kind": kind, "metadata": meta,
            "spec": {"selector": selector, "template": template}}),
        "Role" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
        }
        "RoleBinding" => {
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})
        }
        "CronJob" => json!({"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "job", "image": "busybox:1.37"}]}}}}}}),
        other => panic!("{other}"),
    }
}

/// Must show: 2,000 objects in 10 kinds and 5 namespaces are read with kinds × namespaces ×
/// pages LIST requests, never one request per object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_objects_take_kinds_times_namespaces_times_pages_lists() {
    let env = Env::new().await;
    let kinds = [
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Service",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Role",
        "RoleBinding",
        "CronJob",
    ];
    let namespaces = ["ns-a", "ns-b", "ns-c", "ns-d", "ns-e"];
    for ns in namespaces {
        env.server
            .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    }
    for kind in kinds {
        let mut docs = Vec::new();
        for ns in namespaces {
            for i in 0..40 {
                let obj = scale_object(kind, ns, i);
                env.server.apply_as("driftwarden", obj.clone());
                docs.push(serde_json::to_string(&obj).unwrap());
            }
        }
        write(
            &env.path("desired"),
            &format!("{}.yaml", kind.to_lowercase()),
            &docs.join("\n---\n"),
        );
    }
    let desired = format!("{{dir: {}}}", env.path("desired").display());
    for (page_size, pages) in [(25usize, 2usize), (500, 1)] {
        let cfg = env.config(
            "observe",
            "default",
            &desired,
            &format!(", page_size: {page_size}, concurrency: 8"),
            "",
        );
        env.server.clear_requests();
        let started = Instant::now();
        let report = env.run(&cfg, Command::Diff, false).await;
        let elapsed = started.elapsed();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.summary.resources_checked, 2000);
        assert_eq!(
            report.summary.drifted,
            0,
            "no false drift: {:?}",
            report.drifts.first()
        );
        let reqs = env.server.requests();
        let lists = reqs.iter().filter(|r| r.is_list()).count();
        assert_eq!(
            lists,
            kinds.len() * namespaces.len() * pages,
            "page size {page_size}"
        );
        assert!(
            reqs.iter()
                .filter(|r| r.is_list())
                .all(|r| { r.param("limit") == Some(page_size.to_string()) })
        );
        assert_eq!(
            reqs.iter().filter(|r| r.is_get()).count(),
            0,
            "no GET per object"
        );
        assert!(writes(&reqs).is_empty());
        // Discovery once per process and server: /apis and four group versions, at most.
        let other = reqs.len() - lists;
        assert!(other <= 5, "{other} discovery requests");
        eprintln!("page size {page_size}: {lists} LISTs, {other} discovery GETs, {elapsed:?}");
    }
}

// ------------------------------------------------------------------------------------------
// Faults
// ------------------------------------------------------------------------------------------

/// A small cluster: namespace `team` with ConfigMaps and a Deployment applied by driftwarden,
/// then edited by hand.
/// The hand edit `seed_team` makes to ConfigMap `team/<name>` (`LOG_LEVEL: debug`) is still live:
/// nothing corrected it.
fn assert_hand_edit_kept(env: &Env, name: &str) {
    let cm = env
        .server
        .object("v1", "ConfigMap", Some("team"), name)
        .unwrap();
    assert_eq!(cm["data"]["LOG_LEVEL"], "debug", "{name} unchanged");
}

fn seed_team(server: &KubeServer) -> Vec<Value> {
    server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let mut desired = Vec::new();
    for i in 0..3 {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("settings-{i}"), "namespace": "team",
                "labels": {"app.kubernetes.io/managed-by": "driftwarden"}},
            "data": {"LOG_LEVEL": "info", "INDEX": i.to_string()}});
        server.apply_as("driftwarden", cm.clone());
        server.merge_patch_as(
            "kubectl-edit",
            "v1",
            "ConfigMap",
            Some("team"),
            &format!("settings-{i}"),
            json!({"data": {"LOG_LEVEL": "debug"}}),
        );
        desired.push(cm);
    }
    let dep = scale_object("Deployment", "team", 1);
    server.apply_as("driftwarden", dep.clone());
    desired.push(dep);
    let svc = scale_object("Service", "team", 1);
    server.apply_as("driftwarden", svc.clone());
    desired.push(svc);
    desired
}

fn write_desired(env: &Env, objects: &[Value]) -> String {
    let docs: Vec<String> = objects
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    write(&env.path("desired"), "all.yaml", &docs.join("\n---\n"));
    format!("{{dir: {}}}", env.path("desired").display())
}

/// Must show: each injected fault is retried within bounds (500, 429 with Retry-After, a slow
/// response past the timeout, a dropped connection, a 503 during discovery) and the read ends
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_within_bounds() {
    let (env, desired) = Env::team().await;
    let cfg = env.config(
        "observe",
        "team",
        &desired,
        ", timeout_seconds: 0.5, max_attempts: 3",
        "",
    );
    let s = &env.server;
    env.inject("GET", "/apis/apps/v1", FaultKind::Status(503), 1);
    env.inject(
        "GET",
        "/api/v1/namespaces/team/configmaps",
        FaultKind::Status(500),
        1,
    );
    env.inject(
        "GET",
        "/api/v1/namespaces/team/services",
        FaultKind::TooManyRequests { retry_after: 1 },
        1,
    );
    env.inject(
        "GET",
        "/apis/apps/v1/namespaces/team/deployments",
        FaultKind::Delay(Duration::from_secs(2)),
        1,
    );
    s.clear_requests();
    let report = env.run(&cfg, Command::Diff, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.summary.resources_checked, 5);
    // The three hand-edited ConfigMaps, nothing Missing.
    assert_eq!(report.summary.drifted, 3);
    assert!(report.drifts.iter().all(|d| d.kind == DriftKind::Modified));
    let reqs = s.requests();
    let count = |p: &str| reqs.iter().filter(|r| r.path == p).count();
    assert_eq!(count("/apis/apps/v1"), 2);
    assert_eq!(count("/api/v1/namespaces/team/configmaps"), 2);
    assert_eq!(count("/api/v1/namespaces/team/services"), 2);
    assert_eq!(count("/apis/apps/v1/namespaces/team/deployments"), 2);
    // Retry-After: 1 was honoured.
    let svc: Vec<&LoggedRequest> = reqs
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/team/services")
        .collect();
    let waited = svc[1].at - svc[0].at;
    assert!(waited >= Duration::from_millis(950), "{waited:?}");

    // A dropped connection is retried too.
    let (dropped, desired) = Env::team().await;
    let cfg = dropped.config("observe", "team", &desired, ", max_attempts: 3", "");
    dropped.inject(
        "GET",
        "/api/v1/namespaces/team/configmaps",
        FaultKind::Drop,
        1,
    );
    dropped.server.clear_requests();
    let report = dropped.run(&cfg, Command::Diff, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.summary.drifted, 3);
    let reqs = dropped.server.requests();
    let tries: Vec<u16> = reqs
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/team/configmaps")
        .map(|r| r.status)
        .collect();
    assert_eq!(tries, [0, 200], "dropped, then answered");
}

/// Must show: a 429 is what the real server's flow control answers, plain text and not a
/// Status (k8s.io/apiserver `tooManyRequests`); a LIST answered so is retried after
/// `Retry-After` and, once the attempts are used up, reported with the status and the server's
/// words; a correction answered so once is retried and done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_plain_text_retried_after_retry_after_and_reported_readably() {
    let (env, desired) = Env::team().await;
    let configmaps = "/api/v1/namespaces/team/configmaps";
    env.inject(
        "GET",
        configmaps,
        FaultKind::TooManyRequests { retry_after: 1 },
        1,
    );
    let got = raw_exchange(&env.server, "GET", configmaps, None, "", true).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.body, "Too many requests, please try again later.\n");
    for (name, value) in [
        ("content-type", "text/plain; charset=utf-8"),
        ("x-content-type-options", "nosniff"),
        ("retry-after", "1"),
        ("cache-control", "no-cache, private"),
    ] {
        assert_eq!(got.header(name), [value], "{name}");
    }

    // A LIST throttled on every attempt.
    let cfg = env.config("observe", "team", &desired, ", max_attempts: 2", "");
    env.inject(
        "GET",
        configmaps,
        FaultKind::TooManyRequests { retry_after: 1 },
        usize::MAX,
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Diff, false).await;
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    let wanted = format!(
        "GET {configmaps}: HTTP 429 TooManyRequests: Too many requests, please try again later. (after 2 attempts)"
    );
    assert!(
        errors.iter().any(|e| e.contains(&wanted)),
        "{wanted}\nin: {errors:#?}"
    );
    assert!(report.summary.partial);
    let reqs = env.server.requests();
    let tries: Vec<&LoggedRequest> = reqs.iter().filter(|r| r.path == configmaps).collect();
    assert_eq!(
        tries.iter().map(|r| r.status).collect::<Vec<_>>(),
        [429, 429]
    );
    let waited = tries[1].at - tries[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: {waited:?}"
    );

    // A correction throttled once.
    env.server.clear_faults();
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        ", max_attempts: 2",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    let settings = format!("{configmaps}/settings-0");
    env.inject(
        "PATCH",
        &settings,
        FaultKind::TooManyRequests { retry_after: 1 },
        1,
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    let patches: Vec<u16> = env
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path == settings)
        .map(|r| r.status)
        .collect();
    assert_eq!(patches, [429, 200]);
}

/// A client for the test's server with small pages (`page_size`).
async fn paging_client(env: &Env, page_size: u32) -> driftwarden::live::kube::Kube {
    let src = config::KubeSource {
        kubeconfig: Some(env.kubeconfig.clone()),
        page_size,
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        ..config::KubeSource::default()
    };
    driftwarden::live::kube::Kube::connect(&src).await.unwrap()
}

/// Must show (issue 20): a LIST is compared page by page. With one LIST at a time (and so a
/// channel of one page between the LISTs and the reader), the reader holds the first page's
/// objects while the server has answered at most three of the LIST's ten pages: the one being
/// read, one waiting in the channel and one waiting to be sent. Before, the whole LIST was
/// read first. Every object still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_is_handed_over_page_by_page_while_it_is_read() {
    let env = Env::new().await;
    env.server
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let names: Vec<String> = (0..20).map(|i| format!("settings-{i:02}")).collect();
    for name in &names {
        env.server
            .seed(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "team"}, "data": {"a": "b"}}));
    }
    let src = config::KubeSource {
        kubeconfig: Some(env.kubeconfig.clone()),
        page_size: 2,
        concurrency: 1,
        max_attempts: 3,
        backoff: Duration::from_millis(5),
        ..config::KubeSource::default()
    };
    let kube = driftwarden::live::kube::Kube::connect(&src).await.unwrap();
    let desired = [json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings-00", "namespace": "team"}})];
    let req = driftwarden::live::kube::ReadRequest {
        desired: &desired,
        default_namespace: "team",
        tracking: None,
        unmanaged_namespaces: &[],
    };
    env.server.clear_requests();
    let lists_answered = || env.server.requests().iter().filter(|r| r.is_list()).count();
    // For each object handed over: its name and the LIST pages answered by then.
    let mut seen: Vec<(String, usize)> = Vec::new();
    let read = driftwarden::live::kube::read_with_each(&kube, &req, &mut |o| {
        let name = o.value["metadata"]["name"].as_str().unwrap().to_string();
        seen.push((name, lists_answered()));
    })
    .await
    .unwrap();
    assert!(read.errors.is_empty(), "{:?}", read.errors);
    assert_eq!(read.list_requests, 10, "20 objects in pages of 2");
    assert_eq!(lists_answered(), 10);
    let got: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(got, names, "every object once, in the LIST's order");
    let first_page = &seen[..2];
    assert!(
        first_page.iter().all(|(_, answered)| *answered <= 3),
        "the first page is compared while the LIST is still being read: {seen:?}"
    );
}

/// A LIST that stalls mid-list: its first page arrives, the page after it (the request with the
/// `continue` token) never answers within the request timeout, on every attempt. That kind
/// counts as unread: the error names the LIST and the timeout, the read is partial, none of its
/// objects is reported Missing, and nothing is pruned or corrected on a partial read's say-so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_stalling_mid_list_is_a_partial_read_without_missing() {
    let env = Env::new().await;
    let desired = seed_team(&env.server);
    let orphan = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "orphan", "namespace": "team",
            "labels": {"app.kubernetes.io/managed-by": "driftwarden"}}, "data": {"a": "b"}});
    env.server.apply_as("driftwarden", orphan);
    let desired = write_desired(&env, &desired);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        ", page_size: 2, timeout_seconds: 0.5, max_attempts: 2",
        "    tracking: {label: app.kubernetes.io/managed-by=driftwarden}\n    unmanaged_namespaces: [team]\n    guardrails: {prune: true, max_correction_percent: 100}\n",
    );
    let path = "/api/v1/namespaces/team/configmaps";
    env.inject(
        "GET",
        path,
        FaultKind::StallContinue(Duration::from_secs(5)),
        usize::MAX,
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let reqs = env.server.requests();
    let lists: Vec<bool> = reqs
        .iter()
        .filter(|r| r.path == path && r.method == "GET")
        .map(|r| r.param("continue").is_some())
        .collect();
    assert!(
        lists.iter().any(|c| !c) && lists.iter().any(|c| *c),
        "a first page, then a continued page: {lists:?}"
    );
    assert!(report.summary.partial);
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("LIST ConfigMap in namespace team failed")),
        "{errors:#?}"
    );
    assert!(
        !report.drifts.iter().any(|d| d.kind == DriftKind::Missing),
        "no false Missing: {:?}",
        report
            .drifts
            .iter()
            .map(|d| (&d.resource.display, &d.kind))
            .collect::<Vec<_>>()
    );
    assert!(!reqs.iter().any(|r| r.method == "DELETE"));
    assert!(
        env.server
            .object("v1", "ConfigMap", Some("team"), "orphan")
            .is_some()
    );
}

/// An expired continue token (410 `Expired`, the real Status with a fresh token in
/// `metadata.continue`) restarts the LIST once from the first page: every object comes back
/// exactly once, in the pages of one consistent pass. A second expiry fails the scope with a
/// clear error, and a full read reports it as a partial read without a false Missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_continue_token_restarts_the_list_once() {
    let env = Env::new().await;
    env.server
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let names: Vec<String> = (0..5).map(|i| format!("settings-{i}")).collect();
    for name in &names {
        env.server.apply_as(
            "driftwarden",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "team"}, "data": {"a": "b"}}),
        );
    }
    let path = "/api/v1/namespaces/team/configmaps";

    // The 410 as the real server writes it, and its token really continues the list.
    env.inject("GET", path, FaultKind::ExpiredContinue, 1);
    let (_, first) = raw(
        &env.server,
        "GET",
        &format!("{path}?limit=2"),
        None,
        "",
        true,
    )
    .await;
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    let (status, expired) = raw(
        &env.server,
        "GET",
        &format!("{path}?limit=2&continue={token}"),
        None,
        "",
        true,
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(
        (
            &expired["kind"],
            &expired["status"],
            &expired["reason"],
            &expired["code"]
        ),
        (
            &json!("Status"),
            &json!("Failure"),
            &json!("Expired"),
            &json!(410)
        )
    );
    assert!(
        expired["message"].as_str().unwrap().starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{expired:#}"
    );
    let fresh = expired["metadata"]["continue"].as_str().unwrap();
    assert_ne!(fresh, token);
    let (status, rest) = raw(
        &env.server,
        "GET",
        &format!("{path}?limit=10&continue={fresh}"),
        None,
        "",
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(rest["items"][0]["metadata"]["name"], "settings-2");

    // The read restarts once and returns every object once.
    let kube = paging_client(&env, 2).await;
    let res = kube
        .resolve("", "v1", "ConfigMap", false)
        .await
        .unwrap()
        .unwrap();
    env.inject("GET", path, FaultKind::ExpiredContinue, 1);
    env.server.clear_requests();
    let (items, pages) = kube.list(&res, Some("team"), None).await.unwrap();
    let got: Vec<&str> = items
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, names, "every object exactly once");
    let lists: Vec<(bool, u16)> = env
        .server
        .requests()
        .iter()
        .filter(|r| r.is_list())
        .map(|r| (r.param("continue").is_some(), r.status))
        .collect();
    assert_eq!(
        lists,
        [
            (false, 200),
            (true, 410),
            (false, 200),
            (true, 200),
            (true, 200)
        ],
        "first page, expired, then a whole new pass"
    );
    assert_eq!(pages, lists.len());

    // A second expiry gives up on the scope, clearly.
    env.inject("GET", path, FaultKind::ExpiredContinue, 2);
    env.server.clear_requests();
    let err = kube.list(&res, Some("team"), None).await.unwrap_err();
    let text = driftwarden::live::kube::error_chain(&err);
    assert!(
        text.starts_with(&format!(
            "LIST {path}: the continue token expired again after the list was started over from the first page; giving up on this scope: GET {path}: HTTP 410 Expired: The provided continue parameter is too old"
        )),
        "{text}"
    );
    let statuses: Vec<u16> = env
        .server
        .requests()
        .iter()
        .filter(|r| r.is_list())
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 410, 200, 410], "restarted once, not more");

    // Through a whole read: a partial read, its objects not reported Missing.
    let desired: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "team"}, "data": {"a": "b"}})
        })
        .collect();
    let desired = write_desired(&env, &desired);
    let cfg = env.config("observe", "team", &desired, ", page_size: 2", "");
    env.inject("GET", path, FaultKind::ExpiredContinue, 2);
    let report = env.run(&cfg, Command::Diff, false).await;
    assert!(report.summary.partial);
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        errors.iter().any(|e| e.starts_with(&format!(
            "LIST ConfigMap in namespace team failed: LIST {path}: the continue token expired again"
        )) && e.ends_with("; its desired objects were not compared")),
        "{errors:#?}"
    );
    assert!(report.drifts.iter().all(|d| d.kind != DriftKind::Missing));
    // With one expiry the same read is complete and in sync.
    env.inject("GET", path, FaultKind::ExpiredContinue, 1);
    let report = env.run(&cfg, Command::Diff, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.summary.resources_checked, 5);
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);
}

/// Must show: a LIST that keeps failing is retried a bounded number of times and reported; its
/// desired objects are not reported Missing, and nothing is deleted after the failed LIST. A
/// forbidden LIST is not retried. With the fault gone, the same config prunes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_list_is_reported_hides_no_missing_and_blocks_prune() {
    let env = Env::new().await;
    let mut desired = seed_team(&env.server);
    // An object of ours no longer in Git: Unmanaged.
    let orphan = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "orphan", "namespace": "team",
            "labels": {"app.kubernetes.io/managed-by": "driftwarden"}}, "data": {"a": "b"}});
    env.server.apply_as("driftwarden", orphan);
    // Desired also holds a Deployment that the failing LIST would show.
    desired.push(scale_object("Deployment", "team", 2));
    env.server
        .apply_as("driftwarden", scale_object("Deployment", "team", 2));
    let desired = write_desired(&env, &desired);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        ", max_attempts: 3",
        "    tracking: {label: app.kubernetes.io/managed-by=driftwarden}\n    unmanaged_namespaces: [team]\n    guardrails: {prune: true, max_correction_percent: 100}\n",
    );
    env.inject(
        "GET",
        "/apis/apps/v1/namespaces/team/deployments",
        FaultKind::Status(500),
        usize::MAX,
    );
    env.inject(
        "GET",
        "/api/v1/namespaces/team/services",
        FaultKind::Status(403),
        usize::MAX,
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let reqs = env.server.requests();
    let count = |p: &str| reqs.iter().filter(|r| r.path == p).count();
    assert_eq!(
        count("/apis/apps/v1/namespaces/team/deployments"),
        3,
        "bounded retries"
    );
    assert_eq!(
        count("/api/v1/namespaces/team/services"),
        1,
        "403 is not retried"
    );
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(report.summary.partial);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("LIST Deployment in namespace team failed")
                && e.contains("HTTP 500 InternalError")
                && e.contains("after 3 attempts")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("HTTP 403 Forbidden")
                && e.contains("cannot list resource \"services\"")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("3 desired object(s) were not compared")
                && e.contains("Deployment team/deployment-001")),
        "{errors:#?}"
    );
    assert!(
        !report.drifts.iter().any(|d| d.kind == DriftKind::Missing),
        "no false Missing: {:?}",
        report
            .drifts
            .iter()
            .map(|d| &d.resource.display)
            .collect::<Vec<_>>()
    );
    let orphan = drift(&report, "ConfigMap team/orphan");
    assert_eq!(orphan.kind, DriftKind::Unmanaged);
    let (a, r, detail) = action(orphan);
    assert_eq!(r, ActionResult::Skipped);
    assert_eq!(
        a,
        Action::Skip {
            why: "partial read".into()
        }
    );
    assert!(
        detail.contains("nothing is deleted after a partial read"),
        "{detail}"
    );
    assert!(!reqs.iter().any(|r| r.method == "DELETE"));
    assert!(
        env.server
            .object("v1", "ConfigMap", Some("team"), "orphan")
            .is_some()
    );
    // The safe edits in the scopes that were read are still corrected.
    let (_, r, _) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!(r, ActionResult::Done);

    // The same config with the cluster healthy: a complete read, and the orphan is pruned.
    env.server.clear_faults();
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, detail) = action(drift(&report, "ConfigMap team/orphan"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert!(
        env.server
            .object("v1", "ConfigMap", Some("team"), "orphan")
            .is_none()
    );
    let deletes: Vec<String> = writes(&env.server.requests())
        .into_iter()
        .filter(|w| w.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deletes,
        ["DELETE /api/v1/namespaces/team/configmaps/orphan?"]
    );
    assert_rbac_covers(&env.server.requests());
}

/// Must show: with `force: false`, a 409 conflict becomes an escalation ("owned by <manager>",
/// a planned pull request), not a forced write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_without_force_is_escalated_not_forced() {
    let env = Env::golden_drifted().await;
    let cfg = env.gitops_config("    guardrails: {force: false}\n");
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let dep = drift(&report, "Deployment shop-drifted/storefront");
    let (a, r, detail) = action(dep);
    assert_eq!(
        (a, r),
        (Action::PullRequest, ActionResult::Planned),
        "{detail}"
    );
    assert!(
        detail.starts_with("escalated: server-side apply conflicts: owned by"),
        "{detail}"
    );
    for owner in [
        "kubectl (.spec.replicas)",
        "kubectl-label (.metadata.labels.tier)",
        "kubectl-set (.spec.template.spec.containers[name=\"web\"].image)",
    ] {
        assert!(detail.contains(owner), "{owner}: {detail}");
    }
    let (a, _, detail) = action(drift(&report, "ConfigMap shop-drifted/storefront-config"));
    assert_eq!(a, Action::PullRequest);
    assert!(
        detail.contains("owned by kubectl-edit (.data.LOG_LEVEL)"),
        "{detail}"
    );
    // The Missing Service conflicts with nobody: created.
    let (a, r, _) = action(drift(&report, "Service shop-drifted/storefront-nodeport"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done));

    let reqs = env.server.requests();
    let patches: Vec<&LoggedRequest> = reqs.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 3);
    assert!(
        patches.iter().all(|r| r.param("force").is_none()),
        "never forced"
    );
    let statuses: Vec<u16> = patches.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 2);
    let live = storefront(&env);
    assert_eq!(live["spec"]["replicas"], 5, "left as the hand edit set it");
}

/// With a forge configured: the conflict escalated under `force: false` takes the
/// pull-request path like a risky drift (a pull request is opened, nothing is dropped), and the
/// report still says who owns the conflicting fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_without_force_opens_a_pull_request_naming_the_owner() {
    let env = Env::golden_drifted().await;
    let cfg = env.gitops_config("    guardrails: {force: false}\n");
    add_local_forge(&cfg, &env.path("prs"));
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for (display, owner) in [
        (
            "Deployment shop-drifted/storefront",
            "kubectl-set (.spec.template.spec.containers[name=\"web\"].image)",
        ),
        (
            "ConfigMap shop-drifted/storefront-config",
            "kubectl-edit (.data.LOG_LEVEL)",
        ),
    ] {
        let (a, r, detail) = action(drift(&report, display));
        assert_eq!(
            (a, r),
            (Action::PullRequest, ActionResult::Done),
            "{display}: {detail}"
        );
        assert!(
            detail.starts_with("escalated: server-side apply conflicts: owned by"),
            "{display}: {detail}"
        );
        assert!(detail.contains(owner), "{display}: {detail}");
        assert!(
            detail.contains("opened pull request #"),
            "{display}: {detail}"
        );
    }
    // The pull requests exist: one body per escalated drift, labelled like a risky drift.
    let index = std::fs::read_to_string(env.path("prs/index.md")).unwrap();
    assert!(index.contains("storefront-config"), "{index}");
    assert!(index.contains("Deployment"), "{index}");
    let live = storefront(&env);
    assert_eq!(live["spec"]["replicas"], 5, "left as the hand edit set it");
}

// ------------------------------------------------------------------------------------------
// Guardrails
// ------------------------------------------------------------------------------------------

/// Must show: a run that would correct more than the limit corrects nothing and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_blast_radius_nothing_is_corrected_and_the_run_says_why() {
    let env = Env::golden_drifted().await;
    let cfg = env.gitops_config("    guardrails: {max_corrections: 2}\n");
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    for display in [
        "Deployment shop-drifted/storefront",
        "ConfigMap shop-drifted/storefront-config",
        "Service shop-drifted/storefront-nodeport",
    ] {
        let (a, r, detail) = action(drift(&report, display));
        assert_eq!(r, ActionResult::Skipped, "{display}");
        assert_eq!(
            a,
            Action::Skip {
                why: "blast radius: 3 corrections exceed the limit of 2".into()
            }
        );
        assert!(
            detail.contains("nothing was corrected for this target: 3 corrections were needed, at most 2 are allowed per run (max_corrections: 2; max_correction_percent: 25% of 20 resources checked = 5)"),
            "{detail}"
        );
    }
    assert!(writes(&env.server.requests()).is_empty());

    // A share below the need holds them back the same way: 10% of 20 objects is 2.
    let cfg = env.gitops_config("    guardrails: {max_correction_percent: 10}\n");
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let (_, r, detail) = action(drift(&report, "Deployment shop-drifted/storefront"));
    assert_eq!(r, ActionResult::Skipped);
    assert!(
        detail.contains("max_correction_percent: 10% of 20 resources checked = 2"),
        "{detail}"
    );
    assert!(writes(&env.server.requests()).is_empty());
}

/// A corrupt remediation history, through the binary: the run reports it with the file's path,
/// corrects nothing (the hourly limit cannot be checked without it), exits 1, and leaves the file
/// as it was (never silently reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_remediation_history_is_reported_and_nothing_is_corrected() {
    let env = Env::new().await;
    let desired = seed_team(&env.server);
    let desired = write_desired(&env, &desired[..1]);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        "",
        "    guardrails: {max_remediations_per_hour: 1, max_correction_percent: 100}\n",
    );
    std::fs::create_dir_all(env.path("state")).unwrap();
    let corrupt = "{\"ConfigMap team/settings-0\": [\"2026-12-07T";
    std::fs::write(env.path("state/remediations.json"), corrupt).unwrap();
    env.server.clear_requests();
    let (report, _, _) = run_binary(
        &env,
        "reconcile",
        &cfg,
        &[],
        1,
        "an unreadable remediation history is a runtime failure",
    )
    .await;
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!(
        (a, r),
        (
            Action::Skip {
                why: "remediation history unreadable".to_string()
            },
            ActionResult::Skipped
        ),
        "{detail}"
    );
    assert!(
        detail.starts_with("not corrected: the remediation history "),
        "{detail}"
    );
    assert!(writes(&env.server.requests()).is_empty());
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("state/remediations.json is not valid JSON: EOF")),
        "{errors:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.path("state/remediations.json")).unwrap(),
        corrupt
    );
    assert_hand_edit_kept(&env, "settings-0");
}

/// The disk under the state directory fills during a run. Simulated with a file-size limit on
/// the process (`ulimit -f`, SIGXFSZ ignored, so a write past it fails with EFBIG as a full disk
/// fails with ENOSPC): the lock file fits, the audit log soon does not. Acting without a record
/// is not allowed, so nothing is sent to the cluster, the failure is in the report's errors and
/// the run exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filling_during_the_run_stops_corrections_and_fails_the_run() {
    let env = Env::new().await;
    let desired = seed_team(&env.server);
    let desired = write_desired(&env, &desired);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        "",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    env.server.clear_requests();
    let out = tokio::process::Command::new("bash")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 2; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_driftwarden"),
            "reconcile",
            "--config",
        ])
        .arg(&cfg)
        .args(["-o", "json"])
        .env_remove("DRIFTWARDEN_LOG")
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a state directory that cannot be written is a runtime failure\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report: Report = serde_json::from_str(&stdout).unwrap();
    assert!(
        writes(&env.server.requests()).is_empty(),
        "nothing corrected without its record"
    );
    assert!(
        report.drifts.iter().all(|d| d
            .action
            .as_ref()
            .is_none_or(|a| a.result != ActionResult::Done)),
        "nothing reported done"
    );
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("cannot write the audit log")
                && e.contains("File too large")
                && e.contains("nothing is acted on without a record")),
        "{errors:#?}"
    );
    for d in &report.drifts {
        let (a, r, _) = action(d);
        assert_eq!(
            (a, r),
            (
                Action::Skip {
                    why: "audit log unavailable".to_string()
                },
                ActionResult::Skipped
            )
        );
    }
    assert_hand_edit_kept(&env, "settings-0");
}

/// The same remediation on the same resource at most `max_remediations_per_hour`; past it the
/// drift is escalated. The history survives the process (JSON under `state_dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_remediations_past_the_hourly_limit_are_escalated() {
    let env = Env::new().await;
    let desired = seed_team(&env.server);
    let desired = write_desired(&env, &desired[..1]);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        "",
        "    guardrails: {max_remediations_per_hour: 1, max_correction_percent: 100}\n",
    );
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let (_, r, _) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!(r, ActionResult::Done);
    let history = std::fs::read_to_string(env.path("state/remediations.json")).unwrap();
    assert!(history.contains("ConfigMap team/settings-0"), "{history}");

    // Someone edits it again within the hour.
    env.server.merge_patch_as(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        Some("team"),
        "settings-0",
        json!({"data": {"LOG_LEVEL": "trace"}}),
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!((a, r), (Action::PullRequest, ActionResult::Planned));
    assert!(
        detail.starts_with("escalated: corrected 1 time(s) in the last hour, the limit is 1"),
        "{detail}"
    );
    assert!(writes(&env.server.requests()).is_empty());
}

/// `--dry-run` sends server-side dry-run applies (`dryRun=All`), reports what the server would
/// change, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_asks_the_server_and_stores_nothing() {
    let env = Env::golden_drifted().await;
    let cfg = env.gitops_config("");
    let before = storefront(&env);
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, true).await;
    let (a, r, detail) = action(drift(&report, "Deployment shop-drifted/storefront"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Planned));
    assert!(
        detail.starts_with("dry run (dryRun=All): the server accepted"),
        "{detail}"
    );
    assert!(
        detail.contains("would change /metadata/labels/tier, /spec/replicas"),
        "{detail}"
    );
    let (_, _, detail) = action(drift(&report, "Service shop-drifted/storefront-nodeport"));
    assert!(
        detail.contains("would create Service shop-drifted/storefront-nodeport"),
        "{detail}"
    );
    let reqs = env.server.requests();
    let patches: Vec<&LoggedRequest> = reqs.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), 3);
    assert!(
        patches
            .iter()
            .all(|r| r.param("dryRun").as_deref() == Some("All"))
    );
    assert!(writes(&reqs).is_empty());
    let after = storefront(&env);
    assert_eq!(before, after);
    assert!(
        env.server
            .object("v1", "Service", Some("shop-drifted"), "storefront-nodeport")
            .is_none()
    );
    assert!(!env.path("state/remediations.json").exists());
}

// ------------------------------------------------------------------------------------------
// The revert loop against the API server
// ------------------------------------------------------------------------------------------

/// The revert loop "within the guardrails", the mode being one: a risky drift (a container
/// image set by hand) whose pull request was closed with `drift/revert` sends no write in
/// recommend mode (the report says the revert waits for autocorrect mode, the pull request stays
/// closed), and in autocorrect mode is corrected by a real server-side apply, confirmed by a
/// re-read, with the report and the closed pull request saying it was the revert label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_revert_corrects_a_risky_drift_in_autocorrect_mode_only() {
    const IMAGE_POLICY: &str = r#"package driftwarden.e2e_image

classify contains {"class": "risky", "reason": "container image changed", "rule": "image", "path": change.path} if {
	some change in input.changes
	endswith(change.path, "/image")
}
"#;
    let env = Env::new().await;
    write(env.dir.path(), "policies/image.rego", IMAGE_POLICY);
    let seeded = seed_team(&env.server);
    // Only the Deployment and the Service: the hand-edited ConfigMaps stay out of this test.
    let desired = write_desired(&env, &seeded[3..]);
    env.server.merge_patch_as(
        "kubectl-set",
        "apps/v1",
        "Deployment",
        Some("team"),
        "deployment-001",
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "nginx:1.27.4", "ports": [{"containerPort": 8080}]}
        ]}}}}),
    );
    let forge_dir = env.path("prs");
    let config = |mode: &str| {
        let cfg = env.config(
            mode,
            "team",
            &desired,
            "",
            "    guardrails: {max_correction_percent: 100}\n",
        );
        add_local_forge(&cfg, &forge_dir);
        cfg
    };
    let display = "Deployment team/deployment-001";
    let image = |env: &Env| {
        env.server
            .object("apps/v1", "Deployment", Some("team"), "deployment-001")
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
            .clone()
    };
    let state = || read_json(forge_dir.join("state.json"));

    // Run 1, recommend: the risky drift becomes a pull request.
    let cfg = config("recommend");
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let dep = drift(&report, display);
    assert_eq!(
        dep.changes
            .iter()
            .map(|c| c.path.as_str())
            .collect::<Vec<_>>(),
        ["/spec/template/spec/containers/0/image"]
    );
    assert_eq!(
        dep.verdict.as_ref().unwrap().class,
        driftwarden::model::Class::Risky
    );
    let fingerprint = dep.fingerprint.clone();
    let (a, r, detail) = action(dep);
    assert_eq!(
        (a, r),
        (Action::PullRequest, ActionResult::Done),
        "{detail}"
    );
    assert!(detail.starts_with("opened pull request #1"), "{detail}");

    // A person closes it with `drift/revert`: Git's image is the one they want.
    let mut st = state();
    let items = st["items"].as_array_mut().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["branch"],
        format!("driftwarden/shop/{fingerprint}").as_str()
    );
    items[0]["state"] = json!("closed");
    items[0]["labels"]
        .as_array_mut()
        .unwrap()
        .push(json!("drift/revert"));
    std::fs::write(
        forge_dir.join("state.json"),
        serde_json::to_string_pretty(&st).unwrap(),
    )
    .unwrap();

    // Run 2, recommend: no live write; the revert waits for autocorrect mode.
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, detail) = action(drift(&report, display));
    assert_eq!(
        (a, r),
        (
            Action::Skip {
                why: "revert waits for autocorrect mode".into()
            },
            ActionResult::Skipped
        ),
        "{detail}"
    );
    assert_eq!(
        detail,
        "revert requested: pull request #1 was closed with the label drift/revert; not corrected: recommend mode makes no live writes, so a run in autocorrect mode restores Git's state (the pull request stays closed)"
    );
    let reqs = env.server.requests();
    assert!(writes(&reqs).is_empty(), "{:#?}", writes(&reqs));
    assert!(reqs.iter().all(|r| r.method == "GET"));
    assert_eq!(image(&env), "nginx:1.27.4");
    let st = state();
    let items = st["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "no new pull request");
    assert_eq!(items[0]["state"], "closed", "the pull request stays closed");
    let comments = items[0]["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 1, "{comments:#?}");
    let comment = comments[0]["body"].as_str().unwrap();
    assert!(
        comment.contains("Revert requested by the label `drift/revert`")
            && comment.contains("is **skipped**"),
        "{comment}"
    );

    // Run 3, autocorrect: a real server-side apply, confirmed by the re-read.
    let cfg = config("autocorrect");
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, detail) = action(drift(&report, display));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert_eq!(
        detail,
        "revert requested: pull request #1 was closed with the label drift/revert; corrected by server-side apply (field manager driftwarden, force); the re-read confirms the drift is gone"
    );
    let reqs = env.server.requests();
    let w = writes(&reqs);
    assert_eq!(w.len(), 1, "{w:#?}");
    let patch = reqs.iter().find(|r| r.is_write()).unwrap();
    assert_eq!(
        (patch.method.as_str(), patch.path.as_str()),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/team/deployments/deployment-001"
        )
    );
    assert_eq!(patch.param("fieldManager").as_deref(), Some("driftwarden"));
    assert_eq!(patch.param("force").as_deref(), Some("true"));
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(patch.status, 200);
    assert!(patch.body.contains("nginx:1.27.3"), "{}", patch.body);
    let reread = reqs
        .iter()
        .position(|r| {
            r.is_get() && r.path == "/apis/apps/v1/namespaces/team/deployments/deployment-001"
        })
        .expect("a re-read");
    assert!(reread > reqs.iter().position(|r| r.method == "PATCH").unwrap());
    assert_eq!(image(&env), "nginx:1.27.3");
    let st = state();
    let items = st["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["state"], "closed");
    let comments = items[0]["comments"].as_array().unwrap();
    assert_eq!(comments.len(), 2, "{comments:#?}");
    let comment = comments[1]["body"].as_str().unwrap();
    assert!(
        comment.contains("is **done**")
            && comment.contains("the re-read confirms the drift is gone"),
        "{comment}"
    );
    assert_rbac_covers(&reqs);

    // Run 4: in sync, nothing written.
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(report.drifts.is_empty(), "{:?}", report.drifts);
    assert!(writes(&env.server.requests()).is_empty());
}

// ------------------------------------------------------------------------------------------
// Failed corrections
// ------------------------------------------------------------------------------------------

/// Each action is reported as done, failed (with the API's message) or skipped. A
/// PATCH answered 500 (retried, then given up), one answered 422 Invalid, and one the server
/// accepts without changing the object (the re-read still differs) are each `failed` with what
/// the API said; none is reported done, the run fails (exit 1: a runtime failure, the failures
/// in the report's errors), and the other correction of the target still goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_corrections_report_the_api_message_and_fail_the_run() {
    let (env, desired) = Env::team().await;
    // A fourth safe drift, whose correction succeeds.
    env.server.merge_patch_as(
        "kubectl-scale",
        "apps/v1",
        "Deployment",
        Some("team"),
        "deployment-001",
        json!({"spec": {"replicas": 5}}),
    );
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        ", max_attempts: 2",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    let base = "/api/v1/namespaces/team/configmaps";
    env.inject(
        "PATCH",
        &format!("{base}/settings-0"),
        FaultKind::Status(500),
        usize::MAX,
    );
    env.inject(
        "PATCH",
        &format!("{base}/settings-1"),
        FaultKind::Invalid {
            field: "data[LOG_LEVEL]".into(),
            value: "info".into(),
            detail: "denied by ValidatingAdmissionPolicy 'log-levels'".into(),
        },
        usize::MAX,
    );
    env.inject(
        "PATCH",
        &format!("{base}/settings-2"),
        FaultKind::AcceptUnchanged,
        usize::MAX,
    );
    env.server.clear_requests();

    let (report, ..) = run_binary(
        &env,
        "reconcile",
        &cfg,
        &[],
        1,
        "failed corrections are a runtime failure",
    )
    .await;

    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Failed), "{detail}");
    assert_eq!(
        detail,
        format!(
            "server-side apply (field manager driftwarden, force) failed: PATCH {base}/settings-0: HTTP 500 InternalError: Internal error occurred: injected fault (after 2 attempts)"
        )
    );
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-1"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Failed), "{detail}");
    assert_eq!(
        detail,
        format!(
            "server-side apply (field manager driftwarden, force) failed: PATCH {base}/settings-1: HTTP 422 Invalid: ConfigMap \"settings-1\" is invalid: data[LOG_LEVEL]: Invalid value: \"info\": denied by ValidatingAdmissionPolicy 'log-levels'"
        )
    );
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-2"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Failed), "{detail}");
    assert_eq!(
        detail,
        "corrected by server-side apply (field manager driftwarden, force), but the re-read still differs at /data/LOG_LEVEL (a controller or webhook may revert it)"
    );
    // The rest of the target is still handled.
    let (a, r, detail) = action(drift(&report, "Deployment team/deployment-001"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert_eq!(report.summary.actions.get("correct:done"), Some(&1));
    assert_eq!(report.summary.actions.get("correct:failed"), Some(&3));

    // Each failure is in the report's errors, with the API's message.
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        report
            .errors
            .iter()
            .all(|e| e.side == "live" && e.target == "shop")
    );
    for (name, what) in [
        ("settings-0", "HTTP 500 InternalError"),
        (
            "settings-1",
            "HTTP 422 Invalid: ConfigMap \"settings-1\" is invalid",
        ),
        ("settings-2", "the re-read still differs at /data/LOG_LEVEL"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("ConfigMap team/{name}: ")) && e.contains(what)),
            "{name}: {errors:#?}"
        );
    }

    // What the server saw: the 500 retried within bounds, the 422 not retried, the accepted
    // write followed by its re-read; only the Deployment changed.
    let reqs = env.server.requests();
    let patches = |name: &str| -> Vec<u16> {
        reqs.iter()
            .filter(|r| r.method == "PATCH" && r.path == format!("{base}/{name}"))
            .map(|r| r.status)
            .collect()
    };
    assert_eq!(patches("settings-0"), [500, 500]);
    assert_eq!(patches("settings-1"), [422]);
    assert_eq!(patches("settings-2"), [200]);
    let mut gets: Vec<&str> = reqs
        .iter()
        .filter(|r| r.is_get())
        .map(|r| r.path.as_str())
        .collect();
    gets.sort_unstable();
    assert_eq!(
        gets,
        [
            format!("{base}/settings-2").as_str(),
            "/apis/apps/v1/namespaces/team/deployments/deployment-001"
        ],
        "a re-read only after a write the server accepted"
    );
    for i in 0..3 {
        assert_hand_edit_kept(&env, &format!("settings-{i}"));
    }
    let dep = env
        .server
        .object("apps/v1", "Deployment", Some("team"), "deployment-001")
        .unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_rbac_covers(&reqs);
}

/// A desired manifest with a typo (`spec.replica`): the server answers its apply with the 500
/// `failed to create typed patch object`, the same on every attempt. The correction fails at
/// once with a message naming the object and the undeclared field: one PATCH in the server's
/// log (with `max_attempts: 3`), no re-read, no remediation recorded, the object unchanged; the
/// other correction of the target still goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typo_in_git_fails_its_correction_once_and_is_not_retried() {
    let env = Env::new().await;
    let seeded = seed_team(&env.server);
    let mut dep = seeded[3].clone();
    dep["spec"]["replica"] = json!(3);
    let desired = write_desired(&env, &[seeded[0].clone(), dep]);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        ", max_attempts: 3",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    env.server.clear_requests();
    let (report, _, stderr) = run_binary(
        &env,
        "reconcile",
        &cfg,
        &["--log-level", "driftwarden=debug"],
        1,
        "a failed correction is a runtime failure",
    )
    .await;

    let display = "Deployment team/deployment-001";
    let (a, r, detail) = action(drift(&report, display));
    assert_eq!((a, r), (Action::Correct, ActionResult::Failed), "{detail}");
    assert_eq!(
        detail,
        "server-side apply (field manager driftwarden, force) failed: the API server cannot type Deployment team/deployment-001 against its kind's schema (a field the schema does not declare, or a value of the wrong type); the manifest in Git must change, so it was sent once and not retried: PATCH /apis/apps/v1/namespaces/team/deployments/deployment-001: HTTP 500: failed to create typed patch object (team/deployment-001; apps/v1, Kind=Deployment): .spec.replica: field not declared in schema"
    );
    let errors: Vec<&str> = report.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0], format!("{display}: {detail}"));
    // The other correction went ahead.
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings-0"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");

    // One attempt, nothing else sent for the object, nothing recorded.
    let reqs = env.server.requests();
    let path = "/apis/apps/v1/namespaces/team/deployments/deployment-001";
    let sent: Vec<(String, u16)> = reqs
        .iter()
        .filter(|r| r.path == path)
        .map(|r| (r.method.clone(), r.status))
        .collect();
    assert_eq!(sent, [("PATCH".to_string(), 500)], "no retry, no re-read");
    assert!(!stderr.contains("retrying"), "{stderr}");
    let history = std::fs::read_to_string(env.path("state/remediations.json")).unwrap();
    assert!(history.contains("ConfigMap team/settings-0"), "{history}");
    assert!(!history.contains("deployment-001"), "{history}");
    let live = env
        .server
        .object("apps/v1", "Deployment", Some("team"), "deployment-001")
        .unwrap();
    assert!(live["spec"].get("replica").is_none());
    assert_eq!(live["spec"]["replicas"], 2);
}

/// Promise 1 when the API refuses a Secret: an admission policy rejects the corrected Secret
/// with a 422 quoting the value (base64 and plain). The correction fails with the status, the
/// reason and the field, and the value is in no output: not the report, not the logs (trace,
/// kube and hyper included), not the remediation history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rejected_with_its_value_quoted_leaks_it_nowhere() {
    const PLAIN: &str = "canary-5ecret-7f3a9c";
    let encoded = base64_encode(PLAIN);
    let env = Env::new().await;
    write(
        env.dir.path(),
        "policies/e2e.rego",
        "package driftwarden.e2e\n\nclassify contains {\"class\": \"safe\", \"reason\": \"rotation\", \"rule\": \"secret\"} if {\n\tinput.resource.kind == \"Secret\"\n}\n",
    );
    env.server
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let secret = |value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "api-keys", "namespace": "team"},
            "type": "Opaque", "data": {"API_KEY": value}})
    };
    env.server
        .apply_as("driftwarden", secret(&base64_encode("old-key")));
    let desired = write_desired(&env, &[secret(&encoded)]);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        "",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    let path = "/api/v1/namespaces/team/secrets/api-keys";
    env.inject(
        "PATCH",
        path,
        FaultKind::Invalid {
            field: "data[API_KEY]".into(),
            value: encoded.clone(),
            detail: format!(
                "denied by ValidatingAdmissionPolicy 'no-test-keys': {PLAIN} is a test key"
            ),
        },
        usize::MAX,
    );
    env.server.clear_requests();
    let (report, stdout, stderr) = run_binary(
        &env,
        "reconcile",
        &cfg,
        &[
            "--log-level",
            "driftwarden=trace,kube=trace,kube_client=trace,hyper=trace",
        ],
        1,
        "a failed correction is a runtime failure",
    )
    .await;
    let (a, r, detail) = action(drift(&report, "Secret team/api-keys"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Failed), "{detail}");
    assert_eq!(
        detail,
        format!(
            "server-side apply (field manager driftwarden, force) failed: PATCH {path}: HTTP 422 Invalid (message withheld: Secret), fields: data[API_KEY]"
        )
    );
    // The server did quote it, once (a 422 is not retried).
    let reqs = env.server.requests();
    let patches: Vec<u16> = reqs
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| r.status)
        .collect();
    assert_eq!(patches, [422]);
    assert!(stderr.contains("cluster read"), "trace logs were on");
    // Every file the run left (state, cache), the desired manifest aside.
    let mut files = Vec::new();
    let mut dirs = vec![env.dir.path().to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p == env.path("desired") {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else {
                files.push(p);
            }
        }
    }
    for canary in [PLAIN, encoded.as_str()] {
        assert!(!stdout.contains(canary), "the report leaks {canary}");
        assert!(!stderr.contains(canary), "the logs leak {canary}");
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(canary),
                "{} leaks {canary}",
                f.display()
            );
        }
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Corrections strip server bookkeeping: a desired manifest committed from `kubectl get -o
/// yaml` carries a stale `resourceVersion` and `managedFields`, which the server would refuse
/// (409, 400); the apply never sends them and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_never_send_resource_version_or_managed_fields() {
    let env = Env::new().await;
    env.server
        .seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}));
    let exported = env.server.apply_as(
        "driftwarden",
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "team"},
            "data": {"LOG_LEVEL": "info"}}),
    );
    assert!(exported["metadata"]["managedFields"].is_array());
    env.server.merge_patch_as(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        Some("team"),
        "settings",
        json!({"data": {"LOG_LEVEL": "debug"}}),
    );
    // What the server would answer to that body as it is.
    let target = "/api/v1/namespaces/team/configmaps/settings?fieldManager=driftwarden&force=true";
    let (status, got) = raw(
        &env.server,
        "PATCH",
        target,
        Some(APPLY),
        &exported.to_string(),
        true,
    )
    .await;
    assert_eq!(
        (status, got["message"].as_str()),
        (400, Some("metadata.managedFields must be nil"))
    );
    let mut without_managed = exported.clone();
    without_managed["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let (status, got) = raw(
        &env.server,
        "PATCH",
        target,
        Some(APPLY),
        &without_managed.to_string(),
        true,
    )
    .await;
    assert_eq!(
        (status, got["reason"].as_str()),
        (409, Some("Conflict")),
        "{got:#}"
    );

    let desired = write_desired(&env, &[exported]);
    let cfg = env.config(
        "autocorrect",
        "team",
        &desired,
        "",
        "    guardrails: {max_correction_percent: 100}\n",
    );
    env.server.clear_requests();
    let report = env.run(&cfg, Command::Reconcile, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, detail) = action(drift(&report, "ConfigMap team/settings"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    let reqs = env.server.requests();
    let patch = reqs.iter().find(|r| r.method == "PATCH").expect("an apply");
    assert_eq!(patch.status, 200);
    for field in [
        "resourceVersion",
        "managedFields",
        "uid",
        "creationTimestamp",
    ] {
        assert!(!patch.body.contains(field), "{field} sent: {}", patch.body);
    }
    let live = env
        .server
        .object("v1", "ConfigMap", Some("team"), "settings")
        .unwrap();
    assert_eq!(live["data"]["LOG_LEVEL"], "info");
}

// ------------------------------------------------------------------------------------------
// Metrics
// ------------------------------------------------------------------------------------------

/// docs/outputs.md: `driftwarden_api_requests_total{provider="kubernetes",endpoint=...}` counts
/// every Kubernetes request sent, retries included. A run through the binary with
/// `--metrics-file` over namespaced and cluster-wide (tracking label) LISTs, paginated, with one
/// LIST answered 500 and retried: the samples equal the server's request log, endpoint by
/// endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_request_metrics_count_the_lists_the_server_saw() {
    let (env, desired) = Env::team().await;
    let cfg = env.config(
        "observe",
        "team",
        &desired,
        ", page_size: 2, max_attempts: 3",
        "    tracking: {label: app.kubernetes.io/managed-by=driftwarden}\n",
    );
    env.inject(
        "GET",
        "/api/v1/namespaces/team/configmaps",
        FaultKind::Status(500),
        1,
    );
    env.server.clear_requests();
    let metrics = env.path("metrics.prom");
    let (report, ..) = run_binary(
        &env,
        "diff",
        &cfg,
        &["--metrics-file", metrics.to_str().unwrap()],
        2,
        "drift found",
    )
    .await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    // The samples, by endpoint.
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("# TYPE driftwarden_api_requests_total counter"),
        "{text}"
    );
    let mut samples: std::collections::BTreeMap<String, u64> = Default::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("driftwarden_api_requests_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap();
        let labels: std::collections::BTreeMap<&str, &str> = labels
            .split("\",")
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").unwrap();
                (k, v.trim_end_matches('"'))
            })
            .collect();
        assert_eq!(labels["provider"], "kubernetes", "{line}");
        assert!(
            !labels.contains_key("result"),
            "Kubernetes requests are counted as sent: {line}"
        );
        samples.insert(labels["endpoint"].to_string(), value.parse().unwrap());
    }

    // The server's log, by the same endpoints: `list <apiVersion> <plural>` for each LIST
    // attempt (namespaced or across namespaces), `discovery` for the rest.
    let reqs = env.server.requests();
    let mut seen: std::collections::BTreeMap<String, u64> = Default::default();
    for r in &reqs {
        let endpoint = if r.is_list() {
            let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
            let api_version = match segs[0] {
                "api" => segs[1].to_string(),
                _ => format!("{}/{}", segs[1], segs[2]),
            };
            format!("list {api_version} {}", segs[segs.len() - 1])
        } else {
            assert!(r.is_discovery(), "{} {}", r.method, r.path);
            "discovery".to_string()
        };
        *seen.entry(endpoint).or_default() += 1;
    }
    assert_eq!(samples, seen, "metrics:\n{text}");
    // What that covers: three kinds, the namespace's pages plus the tracking label's LIST
    // across namespaces, and the retried attempt.
    let lists = |ep: &str| samples.get(ep).copied().unwrap_or(0);
    let cm_lists: Vec<(String, u16)> = reqs
        .iter()
        .filter(|r| r.is_list() && r.path.ends_with("/configmaps"))
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert!(
        cm_lists.contains(&("/api/v1/namespaces/team/configmaps".to_string(), 500)),
        "{cm_lists:#?}"
    );
    assert!(
        cm_lists.iter().any(|(p, _)| p == "/api/v1/configmaps"),
        "{cm_lists:#?}"
    );
    assert_eq!(lists("list v1 configmaps"), cm_lists.len() as u64);
    assert!(lists("list v1 configmaps") >= 4, "{samples:#?}");
    assert!(lists("list apps/v1 deployments") >= 2, "{samples:#?}");
    assert!(lists("list v1 services") >= 2, "{samples:#?}");
    assert_eq!(
        samples.keys().filter(|k| k.starts_with("list ")).count(),
        3,
        "{samples:#?}"
    );
}
