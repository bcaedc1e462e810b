//! `driftwarden watch` against the Kubernetes API server on loopback
//! (tests/support/kube_server.rs), over real sockets: watch streams, hand edits by other field
//! managers, deletions, a 410 in the middle of a stream, a dropped connection, two replicas
//! and a Lease; and the binary's exit codes for a bad `watch:` section and an unreachable
//! cluster.
//!
//! Nothing here measures time: every wait is for an event (a status change, a watch opening)
//! with a generous limit that only turns a hang into a failure.

#[path = "support/common.rs"]
mod common;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{commit_files, write};
use driftwarden::config;
use driftwarden::model::{Action, ActionResult, DriftKind, Mode};
use driftwarden::watch::{Role, Status, Watch, WatchOptions};
use kube_server::{Fault, FaultKind, KubeServer, LoggedRequest};
use serde_json::{Value, json};

/// The longest any wait may take before the test fails as hung.
const LIMIT: Duration = Duration::from_secs(20);

/// Replica edits are safe, ConfigMap edits risky (a pull request), a missing object risky.
const POLICY: &str = r#"package driftwarden.watchtest

classify contains {"class": "safe", "reason": "replica counts follow Git", "rule": "replicas"} if {
	input.kind == "Modified"
	input.resource.kind == "Deployment"
}

classify contains {"class": "risky", "reason": "configuration is a release decision", "rule": "config"} if {
	input.kind == "Modified"
	input.resource.kind == "ConfigMap"
}

classify contains {"class": "risky", "reason": "a missing object is a decision", "rule": "missing"} if {
	input.kind == "Missing"
}
"#;

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx:1.27.3"}]}
            }
        }
    })
}

fn config_map() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": {"LOG_LEVEL": "info"}
    })
}

fn yaml_of(v: &Value) -> String {
    // JSON is YAML.
    serde_json::to_string_pretty(v).unwrap()
}

struct Env {
    dir: tempfile::TempDir,
    server: KubeServer,
    kubeconfig: PathBuf,
}

impl Env {
    /// A server holding the desired objects as driftwarden applied them, and a Git repository
    /// `gitops` declaring them.
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = KubeServer::start().await;
        let kubeconfig = server.write_kubeconfig(dir.path());
        write(dir.path(), "policies/watchtest.rego", POLICY);
        server.apply_as(
            "kubectl",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        );
        let objects = [deployment("web", 2), deployment("api", 3), config_map()];
        for o in &objects {
            server.apply_as("driftwarden", o.clone());
        }
        let files: Vec<(String, String)> = objects
            .iter()
            .map(|o| {
                (
                    format!(
                        "apps/shop/{}-{}.json",
                        o["kind"].as_str().unwrap().to_lowercase(),
                        o["metadata"]["name"].as_str().unwrap()
                    ),
                    yaml_of(o),
                )
            })
            .collect();
        let repo = git2::Repository::init(dir.path().join("gitops")).unwrap();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        commit_files(&repo, &refs, "desired state");
        Env {
            dir,
            server,
            kubeconfig,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The config: one autocorrect target on namespace `shop`, the local forge, the endpoints
    /// on a free loopback port; `watch_extra` is added to the `watch:` section.
    fn config(&self, name: &str, watch_extra: &str) -> PathBuf {
        let text = format!(
            "version: 1
policies:
  dirs: [{policies}]
state_dir: {state}
pull_requests: {{forge: local, output_dir: {prs}}}
targets:
  - name: shop
    mode: autocorrect
    cluster: test
    namespace: shop
    desired: {{git: {{repo: {repo}}}, path: apps/shop}}
    live:
      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5}}
    guardrails: {{max_correction_percent: 100}}
watch:
  debounce: 50ms
  listen: 127.0.0.1:0
{watch_extra}",
            policies = self.path("policies").display(),
            state = self.path(&format!("state-{name}")).display(),
            prs = self.path("prs").display(),
            repo = self.path("gitops").display(),
            kc = self.kubeconfig.display(),
        );
        write(self.dir.path(), &format!("{name}.yaml"), &text)
    }

    fn deployment(&self, name: &str) -> Value {
        self.server
            .object("apps/v1", "Deployment", Some("shop"), name)
            .unwrap()
    }
}

/// A running watch: its status, and the sender that stops it.
struct Running {
    status: Arc<Status>,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<Result<(), driftwarden::watch::Error>>,
}

impl Running {
    /// Stops it and waits for it to finish.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(LIMIT, self.done)
            .await
            .expect("watch stops")
            .unwrap()
            .unwrap();
    }
}

/// Starts `watch` on a config, on the current `LocalSet` (the loop is not `Send`).
async fn start(cfg: &Path, env: &Env, mode: Option<Mode>) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("WATCH_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let cfg = config::load(cfg).unwrap();
    let opts = WatchOptions {
        cache_dir: env.path("cache"),
        mode,
        ..WatchOptions::default()
    };
    let watch = Watch::prepare(cfg, opts).await.unwrap();
    let status = watch.status();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let done = tokio::task::spawn_local(watch.run(stop_rx));
    Running { status, stop, done }
}

/// Waits until `pred` holds, re-checking on every status change.
async fn until(status: &Status, what: &str, pred: impl Fn() -> bool) {
    let mut rx = status.subscribe();
    let wait = async {
        loop {
            if pred() {
                return;
            }
            if rx.changed().await.is_err() {
                panic!("the watch ended while waiting for: {what}");
            }
        }
    };
    if tokio::time::timeout(LIMIT, wait).await.is_err() {
        panic!(
            "not reached within {LIMIT:?}: {what}\ntargets: {:#?}\nrole: {:?}",
            status.targets(),
            status.role()
        );
    }
}

/// Waits until the target's first sync and every watch stream is up.
async fn synced(env: &Env, status: &Status) {
    until(status, "first sync and every stream listed", || {
        status
            .target("shop")
            .is_some_and(|t| t.first_sync && t.watches > 0 && t.watches_synced == t.watches)
    })
    .await;
    // Deployments and ConfigMaps in shop.
    env.server
        .wait_for_watches("/apis/apps/v1/namespaces/shop/deployments", 1, LIMIT)
        .await;
    env.server
        .wait_for_watches("/api/v1/namespaces/shop/configmaps", 1, LIMIT)
        .await;
}

/// Starts `watch` on the plain config and waits for its first sync.
async fn start_synced(env: &Env) -> Running {
    let w = start(&env.config("one", ""), env, None).await;
    synced(env, &w.status).await;
    w
}

fn metric(status: &Status, line_prefix: &str) -> f64 {
    status
        .render_metrics()
        .lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn writes(reqs: &[LoggedRequest]) -> Vec<String> {
    reqs.iter()
        .filter(|r| r.is_write() && !r.path.contains("/leases"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn local() -> tokio::task::LocalSet {
    tokio::task::LocalSet::new()
}

/// A hand edit of a replica count (safe) is corrected by re-applying that object alone, and
/// confirmed by reading it back; no LIST is sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_safe_hand_edit_is_corrected_and_confirmed() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            env.server.clear_requests();

            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 7}}),
            );
            until(&w.status, "web corrected", || {
                env.deployment("web")["spec"]["replicas"] == 2
                    && metric(
                        &w.status,
                        "driftwarden_corrections_total{target=\"shop\",outcome=\"done\"}",
                    ) >= 1.0
            })
            .await;
            let live = env.deployment("web");
            let managers: Vec<&str> = live["metadata"]["managedFields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["manager"].as_str().unwrap())
                .collect();
            assert!(!managers.contains(&"kubectl-edit"), "{managers:?}");
            // That object alone: one apply, one confirming GET, no LIST of the target.
            let reqs = env.server.requests();
            assert_eq!(
                writes(&reqs),
                ["PATCH /apis/apps/v1/namespaces/shop/deployments/web"]
            );
            assert!(
                reqs.iter()
                    .any(|r| r.is_get() && r.path.ends_with("/deployments/web")),
                "the correction is confirmed by a re-read"
            );
            let lists: Vec<&LoggedRequest> = reqs
                .iter()
                .filter(|r| r.is_list() && r.param("watch").is_none())
                .collect();
            assert!(lists.is_empty(), "no full cycle: {lists:#?}");
            assert_eq!(
                metric(&w.status, "driftwarden_correction_latency_seconds_count"),
                1.0
            );
            assert!(
                metric(
                    &w.status,
                    "driftwarden_watch_events_total{kind=\"Deployment\",type=\"APPLY\"}"
                ) >= 1.0
            );
            // api was never touched.
            assert_eq!(env.deployment("api")["spec"]["replicas"], 3);
            w.stop().await;
        })
        .await;
}

/// A risky hand edit becomes a pull request in the local forge, the live object untouched;
/// a second edit of the same object updates that pull request instead of opening another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_risky_hand_edit_becomes_one_pull_request() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            let prs = env.path("prs");
            let pr_files = || -> Vec<String> {
                let mut v: Vec<String> = walk(&prs)
                    .into_iter()
                    .filter(|p| p.ends_with(".md") && !p.ends_with("index.md"))
                    .collect();
                v.sort();
                v
            };
            env.server.merge_patch_as(
                "kubectl-edit",
                "v1",
                "ConfigMap",
                Some("shop"),
                "settings",
                json!({"data": {"LOG_LEVEL": "debug"}}),
            );
            until(&w.status, "a pull request for the ConfigMap", || {
                pr_files().len() == 1 && pull_request_state(&w.status).is_some()
            })
            .await;
            let (action, result) = pull_request_state(&w.status).unwrap();
            assert_eq!(action, Action::PullRequest);
            assert_eq!(result, ActionResult::Done);
            let body = std::fs::read_to_string(&pr_files()[0]).unwrap();
            assert!(body.contains("LOG_LEVEL"), "{body}");
            let cm = env
                .server
                .object("v1", "ConfigMap", Some("shop"), "settings")
                .unwrap();
            assert_eq!(
                cm["data"]["LOG_LEVEL"], "debug",
                "risky drift is not corrected"
            );

            // A second edit: the same pull request, updated.
            env.server.merge_patch_as(
                "kubectl-edit",
                "v1",
                "ConfigMap",
                Some("shop"),
                "settings",
                json!({"data": {"LOG_LEVEL": "trace"}}),
            );
            until(&w.status, "the pull request updated", || {
                pr_files().len() == 1
                    && pr_files()
                        .first()
                        .and_then(|f| std::fs::read_to_string(f).ok())
                        .is_some_and(|b| b.contains("trace"))
            })
            .await;
            assert_eq!(pr_files().len(), 1, "deduplicated across events");
            w.stop().await;
        })
        .await;
}

/// The ConfigMap drift's action in the target's latest report.
fn pull_request_state(status: &Status) -> Option<(Action, ActionResult)> {
    let report = status.report("shop")?;
    let d = report
        .drifts
        .iter()
        .find(|d| d.resource.display == "ConfigMap shop/settings")?;
    let a = d.action.as_ref()?;
    Some((a.action.clone(), a.result.clone()))
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// An object deleted live is reported Missing (risky here: a pull request, nothing recreated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_object_is_reported_missing() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            env.server
                .delete_object("apps/v1", "Deployment", Some("shop"), "api");
            until(&w.status, "api reported Missing", || {
                w.status.report("shop").is_some_and(|r| {
                    r.drifts.iter().any(|d| {
                        d.resource.display == "Deployment shop/api"
                            && d.kind == DriftKind::Missing
                            && d.action.is_some()
                    })
                })
            })
            .await;
            assert!(
                env.server
                    .object("apps/v1", "Deployment", Some("shop"), "api")
                    .is_none(),
                "a risky Missing object is not recreated"
            );
            w.stop().await;
        })
        .await;
}

/// A 410 in the middle of the stream (the server compacted its history): the watcher lists
/// again, and an edit made while it was away is still corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_mid_stream_relists_and_misses_nothing() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            let relists = metric(
                &w.status,
                "driftwarden_watch_events_total{kind=\"Deployment\",type=\"RELIST\"}",
            );
            // The edit lands, then every open watch gets the 410 ERROR event and the history
            // is compacted past it: a resume cannot see it, only the new LIST can.
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "api",
                json!({"spec": {"replicas": 9}}),
            );
            env.server.expire_watches();
            until(&w.status, "api corrected after the relist", || {
                env.deployment("api")["spec"]["replicas"] == 3
                    && metric(
                        &w.status,
                        "driftwarden_watch_events_total{kind=\"Deployment\",type=\"RELIST\"}",
                    ) > relists
            })
            .await;
            assert!(
                metric(
                    &w.status,
                    "driftwarden_watch_restarts_total{target=\"shop\",kind=\"Deployment\"}"
                ) >= 1.0
            );
            w.stop().await;
        })
        .await;
}

/// A dropped connection resumes from the last resourceVersion (no new LIST) and the edit made
/// meanwhile is corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_resumes() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            env.server.clear_requests();
            env.server.drop_watches();
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 4}}),
            );
            until(&w.status, "web corrected after the resume", || {
                env.deployment("web")["spec"]["replicas"] == 2
            })
            .await;
            let reqs = env.server.requests();
            let rewatch: Vec<&LoggedRequest> = reqs
                .iter()
                .filter(|r| {
                    r.path == "/apis/apps/v1/namespaces/shop/deployments"
                        && r.param("watch").is_some()
                })
                .collect();
            assert!(!rewatch.is_empty(), "the watch was opened again");
            assert!(
                rewatch.iter().all(|r| r.param("resourceVersion").is_some()),
                "it resumed from a resourceVersion"
            );
            let lists = reqs
                .iter()
                .filter(|r| {
                    r.path == "/apis/apps/v1/namespaces/shop/deployments"
                        && r.param("watch").is_none()
                })
                .count();
            assert_eq!(lists, 0, "no relist after a dropped connection");
            w.stop().await;
        })
        .await;
}

/// The cluster goes away after the first sync: the streams are retried, `/readyz` and the
/// metrics say the target is not fully observed, and nothing is written or reported Missing
/// from that partial view. Once it is back, the streams resume and the hand edit made while it
/// was away is corrected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_goes_away_is_retried_and_never_acted_on_from_a_partial_view() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start_synced(&env).await;
            assert!(w.status.readiness().ready, "ready after the first sync");
            env.server.clear_requests();
            env.server.go_away();
            until(
                &w.status,
                "the target reported degraded and not ready",
                || {
                    !w.status.readiness().ready
                        && w.status
                            .target("shop")
                            .is_some_and(|t| t.degraded.is_some())
                },
            )
            .await;
            assert_eq!(
                metric(&w.status, "driftwarden_target_ready{target=\"shop\"}"),
                0.0,
                "the metrics say the target is not ready"
            );
            // A hand edit while the cluster cannot be reached: it is seen only once it is back.
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 5}}),
            );
            // The streams are retried while the cluster is away.
            until(&w.status, "the streams retried", || {
                metric(
                    &w.status,
                    "driftwarden_watch_restarts_total{target=\"shop\",kind=\"Deployment\"}",
                ) >= 1.0
            })
            .await;
            assert!(
                writes(&env.server.requests()).is_empty(),
                "nothing is written while the cluster is away"
            );
            let missing = w.status.report("shop").map_or(0, |r| {
                r.drifts
                    .iter()
                    .filter(|d| d.kind == DriftKind::Missing)
                    .count()
            });
            assert_eq!(missing, 0, "nothing is Missing from a partial view");
            env.server.come_back();
            until(&w.status, "web corrected once the cluster is back", || {
                env.deployment("web")["spec"]["replicas"] == 2
            })
            .await;
            until(&w.status, "ready again", || w.status.readiness().ready).await;
            let reqs = env.server.requests();
            assert!(
                writes(&reqs)
                    .iter()
                    .all(|w| w.ends_with("/namespaces/shop/deployments/web")),
                "only the edited object is written: {:?}",
                writes(&reqs)
            );
            assert!(
                env.server
                    .object("apps/v1", "Deployment", Some("shop"), "api")
                    .is_some(),
                "nothing was pruned or deleted"
            );
            w.stop().await;
        })
        .await;
}

/// Two replicas with leader election: while the first holds the Lease, the second sees the
/// drift and decides, but writes nothing; once the first stops (releasing the Lease), the
/// second takes over and corrects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_never_writes_while_the_first_holds_the_lease() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let lease = "  leader_election: {name: dw, namespace: shop, lease_duration: 3s, renew_deadline: 2s, retry_period: 500ms}\n";
            // The first replica holds the Lease but only observes: any write to the
            // Deployment could only come from the second.
            let first = start(&env.config("first", lease), &env, Some(Mode::Observe)).await;
            until(&first.status, "the first replica leads", || {
                first.status.role() == Role::Leader
            })
            .await;
            let second = start(&env.config("second", lease), &env, None).await;
            until(&second.status, "the second replica follows", || {
                second.status.role() == Role::Follower
            })
            .await;
            synced(&env, &second.status).await;
            env.server.clear_requests();
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 6}}),
            );
            until(&second.status, "the follower decided a correction", || {
                second.status.report("shop").is_some_and(|r| {
                    r.drifts.iter().any(|d| {
                        d.resource.display == "Deployment shop/web"
                            && d.action.as_ref().is_some_and(|a| {
                                a.action == Action::Correct && a.result == ActionResult::Planned
                            })
                    })
                })
            })
            .await;
            assert!(
                writes(&env.server.requests()).is_empty(),
                "{:?}",
                writes(&env.server.requests())
            );
            assert_eq!(env.deployment("web")["spec"]["replicas"], 6);

            // The first stops and releases the Lease; the second takes over and corrects at
            // its next full cycle or event.
            first.stop().await;
            until(&second.status, "the second replica leads", || {
                second.status.role() == Role::Leader
            })
            .await;
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 5}}),
            );
            until(&second.status, "web corrected by the new leader", || {
                env.deployment("web")["spec"]["replicas"] == 2
            })
            .await;
            second.stop().await;
        })
        .await;
}

/// A new commit on the desired ref is found by the Git poll: the desired state is read again
/// and the whole target reconciled (the new replica count applied).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_commit_found_by_the_git_poll_is_reconciled() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start(&env.config("one", "  git_poll_interval: 1s\n"), &env, None).await;
            synced(&env, &w.status).await;
            commit_replicas(&env, "web", 4);
            until(&w.status, "web follows the new commit", || {
                env.deployment("web")["spec"]["replicas"] == 4
            })
            .await;
            w.stop().await;
        })
        .await;
}

/// A trigger (what a signed push to the webhook sends) re-reads the desired state at once,
/// long before the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_rereads_the_desired_state_at_once() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let cfg = config::load(&env.config("one", "  git_poll_interval: 24h\n")).unwrap();
            let opts = WatchOptions {
                cache_dir: env.path("cache"),
                ..WatchOptions::default()
            };
            let watch = Watch::prepare(cfg, opts).await.unwrap();
            let status = watch.status();
            let triggers = watch.triggers();
            let (stop, stop_rx) = tokio::sync::watch::channel(false);
            let done = tokio::task::spawn_local(watch.run(stop_rx));
            synced(&env, &status).await;
            commit_replicas(&env, "api", 1);
            triggers
                .send(driftwarden::watch::Trigger::Target("shop".into()))
                .await
                .unwrap();
            until(&status, "api follows the pushed commit", || {
                env.deployment("api")["spec"]["replicas"] == 1
            })
            .await;
            let _ = stop.send(true);
            done.await.unwrap().unwrap();
        })
        .await;
}

/// Commits a new replica count for a Deployment to the `gitops` repository.
fn commit_replicas(env: &Env, name: &str, replicas: i64) {
    let repo = git2::Repository::open(env.path("gitops")).unwrap();
    let path = format!("apps/shop/deployment-{name}.json");
    let text = yaml_of(&deployment(name, replicas));
    commit_files(&repo, &[(path.as_str(), text.as_str())], "scale");
}

/// Past `max_corrections_per_window`, corrections stop for the target and the reason is
/// reported; the edit stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_window_corrections_stop_and_say_why() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let w = start(
                &env.config("one", "  max_corrections_per_window: 1\n  window: 1h\n"),
                &env,
                None,
            )
            .await;
            synced(&env, &w.status).await;
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 8}}),
            );
            until(&w.status, "web corrected", || {
                env.deployment("web")["spec"]["replicas"] == 2
            })
            .await;
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "api",
                json!({"spec": {"replicas": 8}}),
            );
            until(&w.status, "corrections stopped for the target", || {
                w.status
                    .target("shop")
                    .is_some_and(|t| t.corrections_stopped.is_some())
            })
            .await;
            let why = w
                .status
                .target("shop")
                .unwrap()
                .corrections_stopped
                .unwrap();
            assert!(
                why.contains("1 made in the last 60m, 1 more needed, at most 1 allowed"),
                "{why}"
            );
            let report = w.status.report("shop").unwrap();
            let api = report
                .drifts
                .iter()
                .find(|d| d.resource.display == "Deployment shop/api")
                .unwrap();
            let a = api.action.as_ref().unwrap();
            assert_eq!(a.result, ActionResult::Skipped);
            assert_eq!(env.deployment("api")["spec"]["replicas"], 8);
            assert!(
                w.status
                    .render_metrics()
                    .contains("driftwarden_corrections_stopped{target=\"shop\"} 1")
            );
            w.stop().await;
        })
        .await;
}

/// With tracking by label, a new tracked object is Unmanaged at once (the label-selected watch
/// across namespaces), and is no longer once its tracking label is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_objects_are_unmanaged_until_their_label_goes() {
    local()
        .run_until(async {
            let env = Env::new().await;
            let cfg = env.config("one", "").display().to_string();
            let text = std::fs::read_to_string(&cfg).unwrap().replace(
                "    guardrails:",
                "    tracking: {label: app.kubernetes.io/managed-by=driftwarden}\n    guardrails:",
            );
            std::fs::write(&cfg, text).unwrap();
            let w = start(Path::new(&cfg), &env, None).await;
            synced(&env, &w.status).await;
            env.server
                .wait_for_watches("/api/v1/configmaps?", 1, LIMIT)
                .await;
            let unmanaged = || {
                w.status.report("shop").is_some_and(|r| {
                    r.drifts.iter().any(|d| {
                        d.resource.display == "ConfigMap shop/stray"
                            && d.kind == DriftKind::Unmanaged
                    })
                })
            };
            env.server.apply_as(
                "kubectl",
                json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "stray",
                        "namespace": "shop",
                        "labels": {"app.kubernetes.io/managed-by": "driftwarden"}
                    },
                    "data": {"x": "1"}
                }),
            );
            until(&w.status, "stray reported Unmanaged", unmanaged).await;
            env.server.merge_patch_as(
                "kubectl-label",
                "v1",
                "ConfigMap",
                Some("shop"),
                "stray",
                json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}}),
            );
            until(&w.status, "stray no longer Unmanaged", || {
                w.status.report("shop").is_some() && !unmanaged()
            })
            .await;
            w.stop().await;
        })
        .await;
}

/// Every scope's stream starts at once, but at most `concurrency` of them list at a time: the
/// pages held while listing stay bounded whatever the number of kinds and namespaces. With 14
/// scopes and every LIST answered after 200 ms, no more than 2 stream LISTs and the first full
/// cycle's 2 are ever in flight together; every stream still lists and watches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_list_at_most_concurrency_at_once() {
    local()
        .run_until(async {
            let env = Env::new().await;
            // Twelve more namespaces with a ConfigMap each, declared in Git: 14 scopes in all
            // (Deployments and ConfigMaps in shop, ConfigMaps in each team namespace).
            let mut files = Vec::new();
            for i in 0..12 {
                let ns = format!("team-{i:02}");
                env.server.apply_as(
                    "kubectl",
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                );
                let cm = json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "settings", "namespace": ns},
                    "data": {"LOG_LEVEL": "info"}
                });
                env.server.apply_as("driftwarden", cm.clone());
                files.push((format!("apps/shop/{ns}-settings.json"), yaml_of(&cm)));
            }
            let repo = git2::Repository::open(env.path("gitops")).unwrap();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect();
            commit_files(&repo, &refs, "team namespaces");
            for prefix in ["/api/v1/namespaces/", "/apis/apps/v1/namespaces/"] {
                env.server.inject(Fault::new(
                    "GET",
                    prefix,
                    FaultKind::Delay(Duration::from_millis(200)),
                    usize::MAX,
                ));
            }
            let cfg = env.config("bounded", "").display().to_string();
            let text = std::fs::read_to_string(&cfg)
                .unwrap()
                .replace("backoff_ms: 5}", "backoff_ms: 5, concurrency: 2}");
            std::fs::write(&cfg, text).unwrap();
            let w = start(Path::new(&cfg), &env, None).await;
            synced(&env, &w.status).await;
            env.server.wait_for_watches("", 14, LIMIT).await;
            assert_eq!(w.status.target("shop").unwrap().watches, 14);
            let max = env.server.max_lists_in_flight();
            assert!(
                max <= 4,
                "{max} LISTs in flight at once: at most 2 for the streams and 2 for the cycle"
            );
            w.stop().await;
        })
        .await;
}

/// SIGTERM: the binary finishes the work in flight, stops its endpoints and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_binary_with_exit_0() {
    let env = Env::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = env.config("term", "").display().to_string();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["watch", "--config", &cfg, "--log-level", "driftwarden=info"])
        .env("XDG_CACHE_HOME", env.path("cache"))
        .env_remove("DRIFTWARDEN_LOG")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Ready: the first sync is done and the streams are open.
    env.server
        .wait_for_watches("/apis/apps/v1/namespaces/shop/deployments", 1, LIMIT)
        .await;
    let ready = async {
        loop {
            if readyz(port).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(LIMIT, ready)
        .await
        .expect("/readyz answers 200");
    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .expect("the process ends")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("signal received"), "{stderr}");
    assert!(!stderr.contains("did not finish"), "{stderr}");
}

/// Whether `GET /readyz` answers 200.
async fn readyz(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// An invalid `watch:` section stops the binary before anything starts: exit 3 with the file
/// and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_watch_section_exits_3_with_file_and_line() {
    let env = Env::new().await;
    let cfg = env.config("bad", "  resync_interval: soon\n");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["watch", "--config"])
        .arg(&cfg)
        .env_remove("DRIFTWARDEN_LOG")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let line = std::fs::read_to_string(&cfg)
        .unwrap()
        .lines()
        .position(|l| l.contains("resync_interval: soon"))
        .unwrap()
        + 1;
    assert!(
        stderr.contains(&format!(
            "{}:{line}:20: watch.resync_interval: `soon` is not a duration",
            cfg.display()
        )),
        "{stderr}"
    );
    assert!(env.server.requests().is_empty(), "nothing was contacted");
}

/// A cluster unreachable at start: exit 1, naming the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_at_start_exits_1() {
    let env = Env::new().await;
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = std::fs::read_to_string(&env.kubeconfig)
        .unwrap()
        .replace(&env.server.url(), &format!("http://127.0.0.1:{port}"));
    std::fs::write(&env.kubeconfig, kc).unwrap();
    let cfg = env.config("away", "");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["watch", "--config"])
        .arg(&cfg)
        .env_remove("DRIFTWARDEN_LOG")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("target `shop`: the cluster is unreachable at start"),
        "{stderr}"
    );
}
