//! Notifications (src/notify.rs) delivered to a webhook receiver on loopback over real sockets
//! (tests/support/webhook.rs): every event kind with its body, the Slack-compatible body, a slow
//! receiver, one that answers 500 (retried, then given up), one that never answers (bounded by
//! the timeout, and not holding the next target's corrections back), and the URL's and token's
//! canaries in no log line, report or metric.

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
use driftwarden::config::{self, NotifyFormat, NotifySettings, ReceiverSettings};
use driftwarden::model::{Action, ActionResult, Drift, Report};
use driftwarden::notify::{self, EventKind, Notifier, Origin};
use git2::Repository;
use kube_server::KubeServer;
use serde_json::{Value, json};
use webhook::Receiver;

/// Canaries: the receivers' URL paths and the token must never be printed or logged.
const URL_CANARY: &str = "CANARY-url-5e3f1d";
const TOKEN_CANARY: &str = "tok-CANARY-77ab21";
/// A Secret's live and desired values: never in a notification body.
const SECRET_LIVE: &str = "canary-live-pw-91c2";
const SECRET_DESIRED: &str = "canary-git-pw-4d8e";

const POLICY: &str = r#"package driftwarden.notify_test

classify contains {"class": "safe", "reason": "routine edit", "rule": "routine"} if {
	input.kind == "Modified"
	input.resource.kind in {"Deployment", "ConfigMap"}
}

classify contains {"class": "safe", "reason": "missing object", "rule": "missing"} if {
	input.kind == "Missing"
}

classify contains {"class": "forbidden", "reason": "secret content", "rule": "secret"} if {
	input.resource.kind == "Secret"
}
"#;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn configmap(ns: &str, name: &str, level: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": {"LOG_LEVEL": level}})
}

fn deployment(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "nginx:1.27.3"}]}}}})
}

/// Two targets on one cluster:
/// - `alpha`: a hand-edited ConfigMap (corrected), a Deployment whose Git manifest has a typo
///   (the server refuses it: a failed correction), a hand-edited Secret (forbidden: an issue);
/// - `beta` (`force: false`): a hand-edited ConfigMap (a conflict: escalated to a pull request)
///   and a Missing ConfigMap (created).
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
        write(dir.path(), "policies/notify.rego", POLICY);
        for ns in ["alpha", "beta"] {
            server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        // alpha
        server.apply_as("driftwarden", configmap("alpha", "settings", "info"));
        server.merge_patch_as(
            "kubectl-edit",
            "v1",
            "ConfigMap",
            Some("alpha"),
            "settings",
            json!({"data": {"LOG_LEVEL": "debug"}}),
        );
        server.apply_as("driftwarden", deployment("alpha", "web"));
        let mut typo = deployment("alpha", "web");
        typo["spec"]["replica"] = json!(3);
        let secret = |v: &str| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "alpha"},
                "type": "Opaque", "data": {"password": b64(v)}})
        };
        server.apply_as("driftwarden", secret(SECRET_DESIRED));
        server.merge_patch_as(
            "kubectl-edit",
            "v1",
            "Secret",
            Some("alpha"),
            "creds",
            json!({"data": {"password": b64(SECRET_LIVE)}}),
        );
        // beta
        server.apply_as("driftwarden", configmap("beta", "owned", "info"));
        server.merge_patch_as(
            "kubectl-edit",
            "v1",
            "ConfigMap",
            Some("beta"),
            "owned",
            json!({"data": {"LOG_LEVEL": "trace"}}),
        );
        let docs = |objs: &[Value]| {
            objs.iter()
                .map(|o| serde_json::to_string(o).unwrap())
                .collect::<Vec<_>>()
                .join("\n---\n")
        };
        let alpha = docs(&[
            configmap("alpha", "settings", "info"),
            typo,
            secret(SECRET_DESIRED),
        ]);
        let beta = docs(&[
            configmap("beta", "owned", "info"),
            configmap("beta", "created", "info"),
        ]);
        let repo = Repository::init(dir.path().join("gitops")).unwrap();
        commit_files(
            &repo,
            &[
                ("alpha/all.yaml", alpha.as_str()),
                ("beta/all.yaml", beta.as_str()),
            ],
            "desired state",
        );
        Env {
            dir,
            server,
            kubeconfig,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The config: both targets in autocorrect mode, a local forge, and `notify`.
    fn config(&self, notify: &str) -> PathBuf {
        let target = |name: &str, extra: &str| {
            format!(
                "  - name: {name}\n    mode: autocorrect\n    cluster: test\n    namespace: {name}\n    desired: {{git: {{repo: {repo}}}, path: {name}}}\n    live:\n      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5}}\n    guardrails: {{max_correction_percent: 100{extra}}}\n",
                repo = self.path("gitops").display(),
                kc = self.kubeconfig.display(),
            )
        };
        let text = format!(
            "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\npull_requests: {{forge: local, output_dir: {prs}}}\n{notify}targets:\n{alpha}{beta}",
            policies = self.path("policies").display(),
            state = self.path("state").display(),
            prs = self.path("prs").display(),
            alpha = target("alpha", ""),
            beta = target("beta", ", force: false"),
        );
        write(self.dir.path(), "driftwarden.yaml", &text)
    }
}

/// The `notify` section every end-to-end test uses: a JSON receiver of every event (with a
/// token), a Slack one that answers slowly, one that always answers 500, and one that never
/// answers.
const NOTIFY: &str = "notify:\n  timeout: 1s\n  retries: 2\n  deadline: 20s\n  receivers:\n    - {name: everything, url_env: HOOK_ALL, token_env: HOOK_TOKEN, events: [all]}\n    - {name: chat, format: slack, url_env: HOOK_CHAT, events: [correction_done, run_summary]}\n    - {name: flaky, url_env: HOOK_FLAKY, events: [run_summary]}\n    - {name: dead, url_env: HOOK_DEAD, events: [all]}\n";

fn hook_env(rx: &Receiver) -> Vec<(&'static str, String)> {
    vec![
        (
            "HOOK_ALL",
            rx.url(&format!("/ok/{URL_CANARY}?key={URL_CANARY}")),
        ),
        ("HOOK_TOKEN", TOKEN_CANARY.to_string()),
        ("HOOK_CHAT", rx.url(&format!("/slow/{URL_CANARY}"))),
        ("HOOK_FLAKY", rx.url(&format!("/fail/{URL_CANARY}"))),
        ("HOOK_DEAD", rx.url(&format!("/hang/{URL_CANARY}"))),
    ]
}

/// Runs `reconcile` as a process with `vars` set and every log line on stderr.
async fn reconcile(env: &Env, cfg: &Path, vars: &[(&str, String)]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    cmd.args(["reconcile", "--config"])
        .arg(cfg)
        .args(["-o", "json", "--log-level", "trace", "--metrics-file"])
        .arg(env.path("metrics.prom"))
        .env_remove("DRIFTWARDEN_LOG")
        .current_dir(env.dir.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn drift<'a>(report: &'a Report, display: &str) -> &'a Drift {
    report
        .drifts
        .iter()
        .find(|d| d.resource.display == display)
        .unwrap_or_else(|| panic!("no drift for {display}"))
}

fn outcome(d: &Drift) -> (Action, ActionResult) {
    let a = d.action.as_ref().unwrap();
    (a.action.clone(), a.result.clone())
}

/// The bodies `path_prefix` received with event `event`.
fn bodies(rx: &Receiver, path_prefix: &str, event: &str) -> Vec<Value> {
    rx.received(path_prefix)
        .iter()
        .map(|r| r.json())
        .filter(|b| b["event"] == event)
        .collect()
}

/// The body of `event` about `display` among what `/ok/` received.
fn about(rx: &Receiver, event: &str, display: &str) -> Value {
    bodies(rx, "/ok/", event)
        .into_iter()
        .find(|b| b["drift"]["resource"]["display"] == display)
        .unwrap_or_else(|| panic!("no {event} about {display}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_its_receivers_and_bad_receivers_hold_nothing_back() {
    let env = Env::new().await;
    let rx = Receiver::start();
    let cfg = env.config(NOTIFY);
    env.server.clear_requests();
    let (code, stdout, stderr) = reconcile(&env, &cfg, &hook_env(&rx)).await;
    assert_eq!(code, 1, "a failed correction fails the run\n{stderr}");
    let report: Report = serde_json::from_str(&stdout).unwrap();

    // The corrections went ahead, whatever the receivers did.
    assert_eq!(
        outcome(drift(&report, "ConfigMap alpha/settings")),
        (Action::Correct, ActionResult::Done)
    );
    assert_eq!(
        outcome(drift(&report, "Deployment alpha/web")),
        (Action::Correct, ActionResult::Failed)
    );
    assert_eq!(
        outcome(drift(&report, "ConfigMap beta/owned")),
        (Action::PullRequest, ActionResult::Done)
    );
    assert_eq!(
        outcome(drift(&report, "ConfigMap beta/created")),
        (Action::Correct, ActionResult::Done)
    );
    assert_eq!(
        outcome(drift(&report, "Secret alpha/creds")),
        (Action::Issue, ActionResult::Done)
    );

    // Every event kind a run without a breaker gives reached the receiver of everything, once
    // per subject, with its versioned body, the token and the event header.
    let ok = rx.received("/ok/");
    for r in &ok {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN_CANARY}").as_str())
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        let b = r.json();
        assert_eq!(r.header("x-driftwarden-event"), b["event"].as_str());
        assert_eq!(b["schema"], "driftwarden.notification");
        assert_eq!(b["version"], notify::BODY_VERSION);
        assert_eq!(b["command"], "reconcile");
        assert_eq!(b["dry_run"], false);
    }
    let mut kinds: Vec<String> = ok
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "correction_done",
            "correction_done",
            "correction_failed",
            "escalation",
            "pull_request_opened",
            "pull_request_opened",
            "run_failed",
            "run_summary",
        ]
    );

    let done = about(&rx, "correction_done", "ConfigMap alpha/settings");
    assert_eq!(done["target"], "alpha");
    assert_eq!(done["drift"]["action"], "correct");
    assert_eq!(done["drift"]["result"], "done");
    assert_eq!(done["drift"]["class"], "safe");
    assert_eq!(done["drift"]["rules"], json!(["notify_test.routine"]));
    assert_eq!(done["drift"]["changes"][0]["path"], "/data/LOG_LEVEL");
    assert_eq!(done["drift"]["changes"][0]["desired"], "info");
    assert_eq!(done["drift"]["changes"][0]["live"], "debug");
    assert_eq!(
        done["drift"]["fingerprint"],
        drift(&report, "ConfigMap alpha/settings").fingerprint
    );

    let failed = about(&rx, "correction_failed", "Deployment alpha/web");
    assert_eq!(failed["drift"]["result"], "failed");
    let detail = failed["drift"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(".spec.replica: field not declared in schema"),
        "{detail}"
    );

    let escalated = about(&rx, "escalation", "ConfigMap beta/owned");
    assert_eq!(escalated["target"], "beta");
    assert_eq!(escalated["drift"]["action"], "pull_request");
    let detail = escalated["drift"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("owned by kubectl-edit (.data.LOG_LEVEL)"),
        "{detail}"
    );
    let opened = about(&rx, "pull_request_opened", "ConfigMap beta/owned");
    assert!(
        opened["drift"]["detail"]
            .as_str()
            .unwrap()
            .contains("opened pull request #"),
        "{opened}"
    );
    let issue = about(&rx, "pull_request_opened", "Secret alpha/creds");
    assert!(
        issue["drift"]["detail"]
            .as_str()
            .unwrap()
            .contains("opened issue #"),
        "{issue}"
    );
    assert_eq!(issue["drift"]["changes"][0]["masked"], true);
    assert_eq!(issue["drift"]["changes"][0]["live"], "(masked)");

    let summary = &bodies(&rx, "/ok/", "run_summary")[0];
    assert_eq!(summary["summary"]["drifted"], report.summary.drifted);
    assert_eq!(summary["summary"]["targets"], 2);
    assert_eq!(
        summary["errors"].as_array().unwrap().len(),
        report.errors.len()
    );
    let run_failed = &bodies(&rx, "/ok/", "run_failed")[0];
    assert!(
        run_failed["title"]
            .as_str()
            .unwrap()
            .contains("Deployment alpha/web"),
        "{run_failed}"
    );

    // The Slack receiver, slow but within the timeout: `text` and `blocks`, once each.
    let chat = rx.received("/slow/");
    assert_eq!(chat.len(), 3, "two corrections and the summary, no retry");
    for r in &chat {
        let b = r.json();
        let text = b["text"].as_str().unwrap();
        assert!(text.starts_with(":"), "{text}");
        assert!(
            b["blocks"].as_array().is_some_and(|bl| bl.len() >= 2),
            "{b}"
        );
        assert_eq!(b["blocks"][0]["type"], "section");
        assert!(b.get("schema").is_none(), "a Slack body only");
    }
    assert!(
        chat.iter().any(|r| r.json()["text"]
            .as_str()
            .unwrap()
            .contains("ConfigMap alpha/settings corrected")),
        "{chat:?}"
    );

    // The receiver answering 500: three attempts (retries: 2), then given up.
    let flaky = rx.received("/fail/");
    assert_eq!(flaky.len(), 3, "{flaky:?}");
    assert!(flaky.iter().all(|r| r.json()["event"] == "run_summary"));

    // The receiver that never answers got every event and was given up on each; it did not
    // hold the next target back: beta's correction was sent before the client abandoned the
    // first request about alpha (the order of the two servers' logs, on one clock).
    let dead = wait_closed(&rx, "/hang/").await;
    assert!(!dead.is_empty());
    let alpha_first = dead
        .iter()
        .filter(|r| r.json()["target"] == "alpha")
        .filter_map(|r| r.closed_at)
        .min()
        .expect("a request about alpha reached the dead receiver");
    let beta_patch = env
        .server
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with("/namespaces/beta/configmaps/created"))
        .expect("beta's Missing ConfigMap was created");
    assert!(
        beta_patch.at < alpha_first,
        "beta's correction waited for alpha's notification to time out"
    );
    // Each dead (receiver, event) pair was attempted three times: 1 + retries.
    let mut per_event: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &dead {
        let b = r.json();
        let key = format!(
            "{} {}",
            b["event"],
            b["drift"]["resource"]["display"].as_str().unwrap_or("")
        );
        *per_event.entry(key).or_default() += 1;
    }
    assert!(per_event.values().all(|n| *n == 3), "{per_event:?}");
    assert_eq!(per_event.len(), 8, "{per_event:?}");

    // Failures are logged by receiver name and counted; never fatal.
    for name in ["dead", "flaky"] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("notification failed")
                    && l.contains(&format!("receiver={name}"))),
            "{name}\n{stderr}"
        );
    }
    let metrics = std::fs::read_to_string(env.path("metrics.prom")).unwrap();
    for line in [
        "driftwarden_notifications_total{receiver=\"dead\",event=\"correction_done\",result=\"failed\"} 2",
        "driftwarden_notifications_total{receiver=\"flaky\",event=\"run_summary\",result=\"failed\"} 1",
        "driftwarden_notifications_total{receiver=\"everything\",event=\"correction_done\",result=\"sent\"} 2",
        "driftwarden_notifications_total{receiver=\"chat\",event=\"run_summary\",result=\"sent\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    }

    // Every notification's outcome is in the audit log, by receiver name (never its URL).
    let audit = audit_records(&env);
    let notes: Vec<&Value> = audit
        .iter()
        .filter(|r| r["type"] == "notification")
        .collect();
    assert_eq!(
        notes.len(),
        ok.len() + 3 + 1 + per_event.len(),
        "{notes:#?}"
    );
    assert!(notes.iter().any(|r| r["receiver"] == "dead"
        && r["event"] == "run_summary"
        && r["outcome"] == "failed"
        && r["attempts"] == 3));
    assert!(notes.iter().any(|r| r["receiver"] == "flaky"
        && r["outcome"] == "failed"
        && r["message"].as_str().unwrap().contains("HTTP 500")));
    assert!(notes.iter().any(|r| r["receiver"] == "everything"
        && r["event"] == "escalation"
        && r["outcome"] == "done"
        && r["attempts"] == 1));
    let audit_text = serde_json::to_string(&audit).unwrap();

    // The canaries: the URLs and the token are in no output; the Secret's values in no body.
    for text in [&stdout, &stderr, &metrics, &audit_text] {
        assert!(!text.contains(URL_CANARY), "URL leaked");
        assert!(!text.contains(TOKEN_CANARY), "token leaked");
    }
    for r in rx.all() {
        for canary in [SECRET_LIVE, SECRET_DESIRED] {
            assert!(
                !r.body.contains(canary) && !r.body.contains(&b64(canary)),
                "{}",
                r.body
            );
        }
    }
}

/// Every audit record under the test's state directory.
fn audit_records(env: &Env) -> Vec<Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(env.path("state/audit")).unwrap() {
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

/// A breaker tripping is told: a correction reverted by hand (`trust.max_reverts: 1`) stops the
/// rule on the target, and the next run's escalation gives `breaker_tripped` with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_breaker_is_notified() {
    let env = Env::new().await;
    let rx = Receiver::start();
    let cfg = env.config(
        "trust: {max_reverts: 1}\nnotify:\n  receivers:\n    - {name: breakers, url_env: HOOK_ALL, events: [breaker_tripped]}\n",
    );
    let vars = vec![("HOOK_ALL", rx.url("/ok/breakers"))];
    let (code, stdout, _) = reconcile(&env, &cfg, &vars).await;
    assert_eq!(code, 1);
    let report: Report = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        outcome(drift(&report, "ConfigMap alpha/settings")),
        (Action::Correct, ActionResult::Done)
    );
    assert!(rx.all().is_empty(), "no breaker yet");
    // Someone sets the value back by hand: the correction is reverted.
    env.server.merge_patch_as(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        Some("alpha"),
        "settings",
        json!({"data": {"LOG_LEVEL": "debug"}}),
    );
    let (code, stdout, _) = reconcile(&env, &cfg, &vars).await;
    let report: Report = serde_json::from_str(&stdout).unwrap();
    let actions: Vec<String> = report
        .drifts
        .iter()
        .map(|d| format!("{}: {:?}", d.resource.display, d.action))
        .collect();
    // The rule's corrections on the target are held back (the Deployment's too): no failed
    // correction this time, drift left.
    assert_eq!(code, 2, "{actions:#?}");
    let (action, _) = outcome(drift(&report, "ConfigMap alpha/settings"));
    assert_eq!(action, Action::PullRequest);
    let got = rx.received("/ok/breakers");
    assert_eq!(got.len(), 1, "{got:?}");
    let b = got[0].json();
    assert_eq!(b["event"], "breaker_tripped");
    // One notification for the one rule tripped, about the first drift it held back.
    assert_eq!(b["target"], "alpha");
    let detail = b["drift"]["detail"].as_str().unwrap();
    assert!(
        detail
            .starts_with("auto-corrections of `notify_test.routine` were reverted 1 time in 24 h"),
        "{detail}"
    );
}

/// The `/hang/` requests, once the client has closed each (it does at its timeout, or at the
/// latest when the process exits).
async fn wait_closed(rx: &Receiver, prefix: &str) -> Vec<webhook::Received> {
    for _ in 0..200 {
        let got = rx.received(prefix);
        if got.iter().all(|r| r.closed_at.is_some()) {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the client never closed its connections to {prefix}");
}

fn settings(receivers: Vec<ReceiverSettings>, retries: u32, deadline: Duration) -> NotifySettings {
    NotifySettings {
        timeout: Duration::from_millis(500),
        retries,
        deadline,
        receivers,
    }
}

fn receiver(name: &str, events: &[EventKind]) -> ReceiverSettings {
    ReceiverSettings {
        name: name.to_string(),
        format: NotifyFormat::Json,
        url_env: format!("URL_{name}"),
        token_env: None,
        events: events.to_vec(),
    }
}

fn summary_event() -> notify::Event {
    let report = Report::new(
        "reconcile",
        1,
        3,
        Default::default(),
        Vec::new(),
        Vec::new(),
    );
    let origin = Origin {
        command: "reconcile".into(),
        dry_run: false,
        pass: None,
    };
    notify::run_events(&report, &origin).remove(0)
}

/// In process: a slow receiver is delivered in one attempt, a 500 is retried `retries` times
/// and given up, a receiver that never answers is given up after `retries + 1` timeouts, and a
/// receiver that wants nothing of the kind is sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_bounded_and_failures_counted() {
    let rx = Receiver::start();
    let s = settings(
        vec![
            receiver("slow", &[EventKind::RunSummary]),
            receiver("fail", &[EventKind::RunSummary]),
            receiver("hang", &[EventKind::RunSummary]),
            receiver("other", &[EventKind::CorrectionDone]),
        ],
        2,
        Duration::from_secs(30),
    );
    let urls: Vec<(String, String)> = ["slow", "fail", "hang", "ok"]
        .iter()
        .zip(["slow", "fail", "hang", "other"])
        .map(|(path, name)| (format!("URL_{name}"), rx.url(&format!("/{path}/{name}"))))
        .collect();
    let n = Arc::new(
        Notifier::with_env(&s, |var| {
            urls.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
        .unwrap(),
    );
    let delivery = tokio::spawn(Arc::clone(&n).send(vec![summary_event()]))
        .await
        .unwrap();
    assert_eq!(delivery.sent, 1, "{delivery:?}");
    assert_eq!(delivery.failed, 2, "{delivery:?}");
    assert_eq!(rx.received("/slow/").len(), 1);
    assert_eq!(rx.received("/fail/").len(), 3);
    assert_eq!(wait_closed(&rx, "/hang/").await.len(), 3);
    assert!(rx.received("/ok/").is_empty());
    let counted = driftwarden::metrics::notifications();
    assert!(
        counted[&(
            "fail".to_string(),
            "run_summary".to_string(),
            "failed".to_string()
        )] >= 1
    );
    assert!(
        counted[&(
            "slow".to_string(),
            "run_summary".to_string(),
            "sent".to_string()
        )] >= 1
    );
}

/// The overall deadline ends a send whose receiver never answers before its retries are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_bounds_a_send() {
    let rx = Receiver::start();
    let s = settings(
        vec![receiver("hang", &[EventKind::RunSummary])],
        10,
        Duration::from_millis(700),
    );
    let url = rx.url("/hang/deadline");
    let n = Arc::new(Notifier::with_env(&s, |_| Some(url.clone())).unwrap());
    let delivery = Arc::clone(&n).send(vec![summary_event()]).await;
    assert_eq!((delivery.sent, delivery.failed), (0, 1));
    // 500 ms per attempt, a 700 ms deadline: the second attempt is cut short, no third.
    let got = wait_closed(&rx, "/hang/deadline").await;
    assert!(!got.is_empty() && got.len() <= 2, "{got:?}");
}

/// A variable that is unset or holds no URL stops the run before anything is acted on (exit 3),
/// naming the variable and never its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_malformed_variable_is_invalid_input() {
    let env = Env::new().await;
    let rx = Receiver::start();
    let cfg = env.config(NOTIFY);
    env.server.clear_requests();
    let mut vars = hook_env(&rx);
    vars.retain(|(k, _)| *k != "HOOK_DEAD");
    let (code, _, stderr) = reconcile(&env, &cfg, &vars).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("HOOK_DEAD is unset or empty"), "{stderr}");
    assert!(
        env.server.requests().iter().all(|r| r.method == "GET"),
        "nothing written"
    );

    let mut vars = hook_env(&rx);
    for (k, v) in vars.iter_mut() {
        if *k == "HOOK_DEAD" {
            *v = format!("not a url {URL_CANARY}");
        }
    }
    let (code, stdout, stderr) = reconcile(&env, &cfg, &vars).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("the value of HOOK_DEAD is not an absolute http"),
        "{stderr}"
    );
    assert!(!stderr.contains(URL_CANARY) && !stdout.contains(URL_CANARY));
    assert!(rx.all().is_empty(), "nothing was sent");
    assert!(!env.server.requests().iter().any(|r| r.method == "PATCH"));
}

/// A run that fails before it has a report still tells the receivers that want `run_failed`,
/// with the error, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_fails_early_is_notified() {
    let env = Env::new().await;
    let rx = Receiver::start();
    let cfg = env.config(
        "notify:\n  receivers:\n    - {name: oncall, url_env: HOOK_ALL, events: [run_failed, run_summary]}\n",
    );
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    let out = cmd
        .args(["reconcile", "--config"])
        .arg(&cfg)
        .args(["--target", "nope"])
        .env("HOOK_ALL", rx.url("/ok/oncall"))
        .current_dir(env.dir.path())
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let got = rx.received("/ok/oncall");
    assert_eq!(got.len(), 1, "{got:?}");
    let b = got[0].json();
    assert_eq!(b["event"], "run_failed");
    assert!(b.get("summary").is_none());
    assert_eq!(b["errors"][0]["side"], "run");
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no target named nope"),
        "{b}"
    );
}

/// `notify` is validated with the rest of the config: every problem with its line.
#[test]
fn notify_config_is_validated() {
    let base = Path::new("/base");
    let parse = |notify: &str| {
        config::parse(
            &format!(
                "version: 1\n{notify}targets:\n  - name: t\n    desired: {{dir: d}}\n    live: {{snapshot: s}}\n"
            ),
            "t.yaml",
            base,
        )
    };
    let ok = parse("notify:\n  receivers:\n    - {name: a, url_env: A_URL, events: [all]}\n    - {name: b, format: slack, url_env: B_URL, token_env: B_TOKEN, events: [run_summary, escalation]}\n").unwrap();
    let n = ok.notify.unwrap();
    assert_eq!(n.timeout, Duration::from_secs(10));
    assert_eq!(n.retries, 2);
    assert_eq!(n.deadline, Duration::from_secs(30));
    assert_eq!(n.receivers[0].events, EventKind::ALL);
    assert_eq!(n.receivers[1].format, NotifyFormat::Slack);
    assert_eq!(
        n.receivers[1].events,
        [EventKind::Escalation, EventKind::RunSummary]
    );

    let err = parse("notify:\n  timeout: soon\n  retries: 99\n  receivers:\n    - {name: a, url_env: 'https://x', events: [correction_dun]}\n    - {name: b, url_env: B, events: [all]}\n    - {name: b, url_env: B, events: [all]}\n    - {url_env: C, events: [all]}\n").unwrap_err();
    let text = err.to_string();
    for expected in [
        "t.yaml:3:12: notify.timeout: `soon` is not a duration",
        "t.yaml:4:12: notify.retries: expected a whole number from 0 to 10",
        "notify.receivers[].url_env: `https://x` is not an environment variable name",
        "notify.receivers[].events: unknown event `correction_dun`",
        "t.yaml:8:8: notify.receivers: duplicate receiver name `b`",
        "t.yaml:9:8: notify.receivers[]: `name` is required",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}
