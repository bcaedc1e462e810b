//! `driftwarden watch` and the trust trail: notifications from its passes (src/watch/notices.rs)
//! and the health gate followed in the background (src/watch/target.rs, src/act/health.rs),
//! against the Kubernetes API server on loopback (tests/support/kube_server.rs, with its
//! simulated workload controllers) and the webhook receiver (tests/support/webhook.rs), over
//! real sockets.
//!
//! Nothing here measures time: every wait is for observable state (the live objects, the
//! target's report, what the receiver got, the audit log) with a generous limit that only
//! turns a hang into a failure. Where a test needs a gate to still be following a rollout, the
//! rollout is left unobserved until the test starts it (`KubeServer::start_rollout`).

#[path = "support/common.rs"]
mod common;
#[path = "support/kube_server.rs"]
mod kube_server;
#[path = "support/webhook.rs"]
mod webhook;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{commit_files, write};
use driftwarden::config;
use driftwarden::model::{Action, ActionResult, Drift, Report};
use driftwarden::notify::Notifier;
use driftwarden::watch::{Status, Watch, WatchOptions};
use kube_server::{KubeServer, Rollout};
use serde_json::{Value, json};
use webhook::Receiver;

/// The longest any wait may take before the test fails as hung.
const LIMIT: Duration = Duration::from_secs(30);

/// A Secret's values: never in a notification body.
const SECRET_GIT: &str = "canary-git-pw-61ad";
const SECRET_LIVE: &str = "canary-live-pw-0b7e";
/// The receivers' URL path: never in a body.
const URL_CANARY: &str = "CANARY-url-c41f";

/// Every edit is safe.
const POLICY: &str = r#"package driftwarden.trust_test

classify contains {"class": "safe", "reason": "routine edit", "rule": "routine"} if {
	input.kind == "Modified"
}
"#;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": image}]}}}})
}

fn config_map(level: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": "shop"},
        "data": {"LOG_LEVEL": level}})
}

fn secret(password: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "shop"},
        "type": "Opaque",
        "data": {"password": b64(password)}})
}

struct Env {
    dir: tempfile::TempDir,
    server: KubeServer,
    kubeconfig: PathBuf,
}

impl Env {
    /// A server holding `objects` as driftwarden applied them, and a Git repository `gitops`
    /// declaring them.
    async fn new(objects: &[Value]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = KubeServer::start().await;
        let kubeconfig = server.write_kubeconfig(dir.path());
        write(dir.path(), "policies/trust.rego", POLICY);
        server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        for o in objects {
            server.apply_as("driftwarden", o.clone());
        }
        let files: Vec<(String, String)> = objects
            .iter()
            .map(|o| {
                (
                    format!(
                        "apps/{}-{}.json",
                        o["kind"].as_str().unwrap().to_lowercase(),
                        o["metadata"]["name"].as_str().unwrap()
                    ),
                    serde_json::to_string_pretty(o).unwrap(),
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

    /// One autocorrect target on namespace `shop`, the local forge; `extra` is appended (a
    /// `notify:` section).
    fn config(&self, gate: &str, extra: &str) -> PathBuf {
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
    desired: {{git: {{repo: {repo}}}, path: apps}}
    live:
      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5}}
    guardrails: {{max_correction_percent: 100, health_gate: {gate}}}
watch:
  debounce: 50ms
  listen: 127.0.0.1:0
  max_corrections_per_window: 10
{extra}",
            policies = self.path("policies").display(),
            state = self.path("state").display(),
            prs = self.path("prs").display(),
            repo = self.path("gitops").display(),
            kc = self.kubeconfig.display(),
        );
        write(self.dir.path(), "driftwarden.yaml", &text)
    }

    fn live(&self, api_version: &str, kind: &str, name: &str) -> Value {
        self.server
            .object(api_version, kind, Some("shop"), name)
            .unwrap()
    }

    /// Every audit record written so far.
    fn audit(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.path("state/audit")) else {
            return out;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.extension().is_none_or(|x| x != "jsonl") {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
        out
    }
}

/// A running watch: its status, and the sender that stops it.
struct Running {
    status: Arc<Status>,
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::task::JoinHandle<Result<(), driftwarden::watch::Error>>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(LIMIT, self.done)
            .await
            .expect("watch stops")
            .unwrap()
            .unwrap();
    }
}

/// Starts `watch` on the current `LocalSet` (the loop is not `Send`) and waits for the first
/// sync; `vars` are the notify receivers' variables.
async fn start(
    env: &Env,
    cfg: &Path,
    vars: &[(&str, String)],
    shutdown_budget: Duration,
) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("WATCH_TEST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let cfg = config::load(cfg).unwrap();
    let notifier = cfg.notify.as_ref().map(|settings| {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Arc::new(
            Notifier::with_env(settings, move |name| {
                vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
            })
            .unwrap(),
        )
    });
    let opts = WatchOptions {
        cache_dir: env.path("cache"),
        shutdown_budget,
        notifier,
        ..WatchOptions::default()
    };
    let watch = Watch::prepare(cfg, opts).await.unwrap();
    let status = watch.status();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let done = tokio::task::spawn_local(watch.run(stop_rx));
    until(&status, "first sync and every stream listed", || {
        status
            .target("shop")
            .is_some_and(|t| t.first_sync && t.watches > 0 && t.watches_synced == t.watches)
    })
    .await;
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
            "not reached within {LIMIT:?}: {what}\n{:#?}",
            status.report("shop")
        );
    }
}

/// Waits until `pred` holds for state the watch's status does not show (the receiver, the
/// audit log), checking every few milliseconds.
async fn eventually(what: &str, pred: impl Fn() -> bool) {
    let wait = async {
        while !pred() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(LIMIT, wait).await.is_err() {
        panic!("not reached within {LIMIT:?}: {what}");
    }
}

fn local() -> tokio::task::LocalSet {
    tokio::task::LocalSet::new()
}

/// The target's current drift of `display`, from its latest report.
fn drift_of(report: Option<Report>, display: &str) -> Option<Drift> {
    report?
        .drifts
        .into_iter()
        .find(|d| d.resource.display == display)
}

fn outcome(d: &Drift) -> (Action, ActionResult) {
    let a = d.action.as_ref().unwrap();
    (a.action.clone(), a.result.clone())
}

fn image(obj: &Value) -> &str {
    obj["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

/// Safe edits corrected by watch's event passes are notified `correction_done` to the receiver
/// that asked for it, labelled as a watch event pass, with the Secret's values masked; a
/// receiver that never answers holds no later correction back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_passes_notify_and_a_dead_receiver_holds_no_correction_back() {
    local()
        .run_until(async {
            let env = Env::new(&[
                deployment("web", "registry.example/web:1.0"),
                secret(SECRET_GIT),
            ])
            .await;
            let rx = Receiver::start();
            // The dead receiver is only given up after ten minutes: any correction that waited
            // for it would hang the test.
            let notify = "notify:\n  timeout: 10m\n  retries: 0\n  deadline: 1h\n  receivers:\n    - {name: team, url_env: HOOK_TEAM, events: [correction_done]}\n    - {name: dead, url_env: HOOK_DEAD, events: [all]}\n";
            let cfg = env.config("{enabled: true}", notify);
            let vars = [
                ("HOOK_TEAM", rx.url(&format!("/ok/{URL_CANARY}"))),
                ("HOOK_DEAD", rx.url(&format!("/hang/{URL_CANARY}"))),
            ];
            let w = start(&env, &cfg, &vars, Duration::from_millis(200)).await;
            assert!(rx.all().is_empty(), "in sync at start: nothing to notify");

            // 1. A safe edit of the Deployment, corrected by its event pass and notified.
            env.server.merge_patch_as(
                "kubectl-edit",
                "apps/v1",
                "Deployment",
                Some("shop"),
                "web",
                json!({"spec": {"replicas": 7}}),
            );
            eventually("the correction of web notified to team", || {
                !rx.received("/ok/").is_empty()
            })
            .await;
            assert_eq!(env.live("apps/v1", "Deployment", "web")["spec"]["replicas"], 2);
            let team = rx.received("/ok/");
            assert_eq!(team.len(), 1, "{team:#?}");
            let body = team[0].json();
            assert_eq!(body["event"], "correction_done");
            assert_eq!(body["command"], "watch");
            assert_eq!(body["pass"], "event");
            assert_eq!(body["target"], "shop");
            assert_eq!(body["drift"]["resource"]["display"], "Deployment shop/web");
            assert_eq!(body["drift"]["result"], "done");
            assert_eq!(body["drift"]["changes"][0]["path"], "/spec/replicas");
            // The dead receiver got the same event and never answers it.
            eventually("the dead receiver holds a request", || {
                !rx.received("/hang/").is_empty()
            })
            .await;

            // 2. With that notification still unanswered, a safe edit of the Secret is
            // corrected and notified too: nothing waited for the dead receiver.
            env.server.apply_as("kubectl-edit", {
                let mut s = secret(SECRET_LIVE);
                s["metadata"] = json!({"name": "creds", "namespace": "shop"});
                s
            });
            eventually("the correction of the Secret notified to team", || {
                rx.received("/ok/").len() >= 2
            })
            .await;
            assert_eq!(
                env.live("v1", "Secret", "creds")["data"]["password"],
                b64(SECRET_GIT)
            );
            let hung = rx.received("/hang/");
            assert!(
                hung.iter().all(|r| r.closed_at.is_none()),
                "the dead receiver's requests are still waiting: {hung:#?}"
            );
            let secret_body = rx.received("/ok/")[1].json();
            assert_eq!(secret_body["event"], "correction_done");
            assert_eq!(secret_body["pass"], "event");
            assert_eq!(secret_body["drift"]["resource"]["display"], "Secret shop/creds");
            assert_eq!(secret_body["drift"]["changes"][0]["live"], "(masked)");
            assert_eq!(secret_body["drift"]["changes"][0]["desired"], "(masked)");

            // No body names a Secret's value (plain or base64) or the receivers' URL.
            for r in rx.all() {
                for canary in [SECRET_GIT, SECRET_LIVE, &b64(SECRET_GIT), &b64(SECRET_LIVE), URL_CANARY] {
                    assert!(!r.body.contains(canary), "{canary} in {}", r.body);
                }
            }

            // Shutdown gives the dead receiver up after the flush budget.
            w.stop().await;
        })
        .await;
}

/// A correction whose rollout fails is rolled back from the background; while the gate is
/// following it, an edit of another object on the same target is corrected; the rolled-back
/// drift is escalated, not corrected again; the receiver is told, labelled as the gate's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_follows_in_the_background_and_rolls_back_a_failed_rollout() {
    local()
        .run_until(async {
            let env = Env::new(&[
                deployment("web", "registry.example/web:1.0"),
                config_map("info"),
            ])
            .await;
            // web rolls out healthy, then is hand-edited (and rolls out healthy again): its
            // health before the correction is good.
            env.server.simulate_rollouts(Rollout::healthy());
            env.server.apply_as("kubectl-set", {
                let mut d = deployment("web", "registry.example/web:1.1-hotfix");
                d["metadata"] = json!({"name": "web", "namespace": "shop"});
                d
            });
            eventually("web's hotfix rolled out", || {
                let o = env.live("apps/v1", "Deployment", "web");
                o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && o["status"]["readyReplicas"] == 2
            })
            .await;
            // From now on web's rollouts are not observed until the test starts one.
            env.server
                .simulate_rollout("Deployment", Some("shop"), Some("web"), Rollout::unobserved());
            let rx = Receiver::start();
            let notify = "notify:\n  timeout: 5s\n  receivers:\n    - {name: team, url_env: HOOK_TEAM, events: [correction_done, correction_failed, escalation]}\n";
            let cfg = env.config("{timeout: 10m, interval: 20ms}", notify);
            let vars = [("HOOK_TEAM", rx.url("/ok/team"))];

            // The first cycle corrects web and hands its gate over.
            let w = start(&env, &cfg, &vars, Duration::from_millis(200)).await;
            until(&w.status, "web corrected, its gate following", || {
                drift_of(w.status.report("shop"), "Deployment shop/web").is_some_and(|d| {
                    outcome(&d) == (Action::Correct, ActionResult::Done)
                        && d.action.unwrap().detail.unwrap_or_default().contains(
                            "health gate: following the rollout in the background",
                        )
                })
            })
            .await;
            assert_eq!(image(&env.live("apps/v1", "Deployment", "web")), "registry.example/web:1.0");

            // While the gate follows web, an edit of the ConfigMap is corrected.
            env.server.merge_patch_as(
                "kubectl-edit",
                "v1",
                "ConfigMap",
                Some("shop"),
                "settings",
                json!({"data": {"LOG_LEVEL": "debug"}}),
            );
            eventually("the ConfigMap corrected", || {
                env.live("v1", "ConfigMap", "settings")["data"]["LOG_LEVEL"] == "info"
            })
            .await;
            // The gate has not concluded: nothing can judge web's rollout yet.
            assert_eq!(image(&env.live("apps/v1", "Deployment", "web")), "registry.example/web:1.0");
            assert!(
                !env.audit().iter().any(|r| r["type"] == "rollback"),
                "no rollback before the rollout is observed"
            );
            // Nor was web's correction notified yet: it is told once the gate concludes.
            assert!(
                rx.all().iter().all(|r| r.json()["drift"]["resource"]["display"] != "Deployment shop/web"),
                "{:#?}",
                rx.all()
            );

            // web's rollout now fails: the gate rolls the correction back.
            env.server
                .start_rollout("Deployment", "shop", "web", Rollout::failing());
            until(&w.status, "web's correction rolled back", || {
                drift_of(w.status.report("shop"), "Deployment shop/web")
                    .is_some_and(|d| outcome(&d) == (Action::Correct, ActionResult::RolledBack))
            })
            .await;
            assert_eq!(
                image(&env.live("apps/v1", "Deployment", "web")),
                "registry.example/web:1.1-hotfix",
                "the pre-correction value is back"
            );
            let d = drift_of(w.status.report("shop"), "Deployment shop/web").unwrap();
            let detail = d.action.unwrap().detail.unwrap();
            assert!(
                detail.starts_with(
                    "rolled back by the health gate: the rollout exceeded its progress deadline"
                ),
                "{detail}"
            );
            assert!(detail.contains("Progressing=False (ProgressDeadlineExceeded"), "{detail}");
            assert!(detail.contains("opened pull request #"), "{detail}");

            // The audit log: the correction's intent and its result `rolled_back`, the rollback's
            // intent and result, and the rollback record with the evidence.
            let records = env.audit();
            let web_intents: Vec<&Value> = records
                .iter()
                .filter(|r| r["type"] == "intent" && r["resource"].as_str().is_some_and(|k| k.contains("web")))
                .collect();
            let correct = web_intents.iter().find(|r| r["action"] == "correct").unwrap();
            let rollback = web_intents.iter().find(|r| r["action"] == "rollback").unwrap();
            let result_of = |id: &Value| {
                records
                    .iter()
                    .find(|r| r["type"] == "result" && r["id"] == *id)
                    .unwrap_or_else(|| panic!("no result for {id}: {records:#?}"))
            };
            assert_eq!(result_of(&correct["id"])["outcome"], "rolled_back");
            assert_eq!(result_of(&rollback["id"])["outcome"], "done");
            let rec = records.iter().find(|r| r["type"] == "rollback").unwrap();
            assert_eq!(rec["outcome"], "done");
            assert!(rec["evidence"].as_str().unwrap().contains("ProgressDeadlineExceeded"));

            // The rollback's own event: the drift is back, and it is escalated, not corrected
            // again.
            until(&w.status, "web's drift escalated after the rollback", || {
                drift_of(w.status.report("shop"), "Deployment shop/web").is_some_and(|d| {
                    d.action.as_ref().is_some_and(|a| {
                        a.action == Action::PullRequest
                            && a.detail.as_deref().is_some_and(|s| {
                                s.contains("its last correction was rolled back by the health gate")
                            })
                    })
                })
            })
            .await;
            assert_eq!(
                image(&env.live("apps/v1", "Deployment", "web")),
                "registry.example/web:1.1-hotfix"
            );
            let corrections = env
                .audit()
                .iter()
                .filter(|r| r["type"] == "intent" && r["action"] == "correct" && r["resource"].as_str().is_some_and(|k| k.contains("web")))
                .count();
            assert_eq!(corrections, 1, "web was corrected once");

            // At shutdown the deliveries are awaited and recorded in the audit log.
            w.stop().await;
            let bodies: Vec<Value> = rx.all().iter().map(|r| r.json()).collect();
            let delivered: Vec<Value> = env
                .audit()
                .into_iter()
                .filter(|r| r["type"] == "notification" && r["receiver"] == "team")
                .collect();
            assert_eq!(delivered.len(), bodies.len(), "{delivered:#?}");
            assert!(delivered.iter().all(|r| r["outcome"] == "done"), "{delivered:#?}");
            // The receiver was told by the gate: the correction failed (rolled back) and was
            // escalated; the ConfigMap's correction by its event pass.
            let about = |event: &str, display: &str, pass: &str| {
                bodies
                    .iter()
                    .find(|b| {
                        b["event"] == event
                            && b["drift"]["resource"]["display"] == display
                            && b["pass"] == pass
                    })
                    .unwrap_or_else(|| panic!("no {event} about {display} from {pass}: {bodies:#?}"))
            };
            let failed = about("correction_failed", "Deployment shop/web", "health_gate");
            assert_eq!(failed["command"], "watch");
            assert_eq!(failed["drift"]["result"], "rolled_back");
            about("escalation", "Deployment shop/web", "health_gate");
            about("correction_done", "ConfigMap shop/settings", "event");
            assert!(
                !bodies.iter().any(|b| b["event"] == "correction_done"
                    && b["drift"]["resource"]["display"] == "Deployment shop/web"),
                "a rolled-back correction is not notified as done: {bodies:#?}"
            );
        })
        .await;
}

/// A gate still following a rollout when watch stops is recorded in the audit log as not
/// concluded (the correction kept), so its intent does not stay without a result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_still_following_at_shutdown_is_recorded_as_not_concluded() {
    local()
        .run_until(async {
            let env = Env::new(&[deployment("web", "registry.example/web:1.0")]).await;
            env.server.simulate_rollouts(Rollout::healthy());
            env.server.apply_as("kubectl-set", {
                let mut d = deployment("web", "registry.example/web:1.1-hotfix");
                d["metadata"] = json!({"name": "web", "namespace": "shop"});
                d
            });
            eventually("web's hotfix rolled out", || {
                let o = env.live("apps/v1", "Deployment", "web");
                o["status"]["observedGeneration"] == o["metadata"]["generation"]
                    && o["status"]["readyReplicas"] == 2
            })
            .await;
            env.server
                .simulate_rollout("Deployment", Some("shop"), Some("web"), Rollout::unobserved());
            let cfg = env.config("{timeout: 10m, interval: 20ms}", "");
            let w = start(&env, &cfg, &[], Duration::from_millis(100)).await;
            until(&w.status, "web corrected, its gate following", || {
                drift_of(w.status.report("shop"), "Deployment shop/web").is_some_and(|d| {
                    d.action.unwrap().detail.unwrap_or_default().contains(
                        "health gate: following the rollout in the background",
                    )
                })
            })
            .await;
            let records = env.audit();
            let intent = records
                .iter()
                .find(|r| r["type"] == "intent" && r["action"] == "correct")
                .unwrap()
                .clone();
            assert!(
                !records.iter().any(|r| r["type"] == "result" && r["id"] == intent["id"]),
                "the correction's result waits for its gate"
            );
            w.stop().await;
            let records = env.audit();
            let result = records
                .iter()
                .find(|r| r["type"] == "result" && r["id"] == intent["id"])
                .unwrap_or_else(|| panic!("no result for the correction: {records:#?}"));
            assert_eq!(result["outcome"], "done");
            assert_eq!(result["confirmed"], true);
            let message = result["message"].as_str().unwrap();
            assert!(
                message.contains("health gate not concluded: watch stopped while the gate was following the rollout; the correction is kept, not rolled back"),
                "{message}"
            );
            assert_eq!(image(&env.live("apps/v1", "Deployment", "web")), "registry.example/web:1.0");
        })
        .await;
}
