//! The health gate (src/act/health.rs) against the Kubernetes test API server with its
//! simulated controllers (tests/support/kube_rollout.rs): a correction whose rollout fails is
//! rolled back to the pre-correction live values (the object in the server and the apply bodies
//! show it), reported `rolled_back` with the evidence, escalated to a pull request and recorded
//! in the audit log; a healthy rollout is kept; a workload already unhealthy before the
//! correction is not rolled back. Timeouts are short, set through the config; nothing is
//! asserted on elapsed time.

#[path = "support/common.rs"]
mod common;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::write;
use driftwarden::config;
use driftwarden::model::{Action, ActionResult, Drift, Report};
use driftwarden::run::{self, Command, RunOptions};
use kube_server::{KubeServer, LoggedRequest, Rollout};
use serde_json::{Value, json};

const POLICY: &str = r#"package driftwarden.gate_test

classify contains {"class": "safe", "reason": "routine edit", "rule": "routine"} if {
	input.kind == "Modified"
}
"#;

fn deployment(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]}}}})
}

fn statefulset(image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "db", "image": image}]}}}})
}

struct Env {
    dir: tempfile::TempDir,
    server: KubeServer,
    kubeconfig: PathBuf,
}

impl Env {
    /// A server whose workload `obj` was applied by driftwarden as Git has it (`git_image`),
    /// rolled out healthy, then hand-edited to `live_image` by `kubectl-set`, which rolls out
    /// `after_edit`; the drift is the image.
    async fn new(obj: fn(&str) -> Value, after_edit: Rollout) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = KubeServer::start().await;
        let kubeconfig = server.write_kubeconfig(dir.path());
        write(dir.path(), "policies/gate.rego", POLICY);
        server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        server.simulate_rollouts(Rollout::healthy());
        let desired = obj("registry.example/app:1.0");
        let kind = desired["kind"].as_str().unwrap().to_string();
        let name = desired["metadata"]["name"].as_str().unwrap().to_string();
        server.apply_as("driftwarden", desired.clone());
        let env = Env {
            dir,
            server,
            kubeconfig,
        };
        env.settled(&kind, &name).await;
        // For the namespace: a test's rule for the one object is more specific and wins.
        env.server
            .simulate_rollout(&kind, Some("shop"), None, after_edit);
        let mut edit = obj("registry.example/app:1.1-hotfix");
        edit["metadata"] = json!({"name": name, "namespace": "shop"});
        env.server.apply_as("kubectl-set", edit);
        env.settled(&kind, &name).await;
        write(
            env.dir.path(),
            "desired/app.yaml",
            &serde_json::to_string(&desired).unwrap(),
        );
        env
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn object(&self, kind: &str, name: &str) -> Value {
        self.server
            .object("apps/v1", kind, Some("shop"), name)
            .unwrap()
    }

    /// Waits until the simulated controller has written the status of the current generation.
    async fn settled(&self, kind: &str, name: &str) {
        for _ in 0..500 {
            let o = self.object(kind, name);
            let observed = o["status"]["observedGeneration"].as_i64();
            if observed.is_some() && observed == o["metadata"]["generation"].as_i64() {
                // Both simulated steps: observed, then settled.
                tokio::time::sleep(Duration::from_millis(60)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the simulated controller never observed {kind} {name}");
    }

    fn config(&self, gate: &str) -> PathBuf {
        let text = format!(
            "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\npull_requests: {{forge: local, output_dir: {prs}}}\ntargets:\n  - name: shop\n    mode: autocorrect\n    cluster: test\n    namespace: shop\n    desired: {{dir: {desired}}}\n    live:\n      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5}}\n    guardrails: {{max_correction_percent: 100, health_gate: {gate}}}\n",
            policies = self.path("policies").display(),
            state = self.path("state").display(),
            prs = self.path("prs").display(),
            desired = self.path("desired").display(),
            kc = self.kubeconfig.display(),
        );
        write(self.dir.path(), "driftwarden.yaml", &text)
    }

    async fn reconcile(&self, cfg: &Path) -> Report {
        let cfg = config::load(cfg).unwrap();
        let mut opts = RunOptions::new(Command::Reconcile);
        opts.cache_dir = self.path("cache");
        run::run(&cfg, &opts).await.unwrap()
    }

    /// Every audit record written so far.
    fn audit(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let dir = self.path("state/audit");
        for e in std::fs::read_dir(dir).unwrap() {
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

const GATE: &str = "{timeout: 1s, interval: 20ms}";

fn only_drift(report: &Report) -> &Drift {
    assert_eq!(report.drifts.len(), 1, "{:#?}", report.drifts);
    &report.drifts[0]
}

fn image(obj: &Value) -> &str {
    obj["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
}

/// The server-side applies driftwarden sent for `path`.
fn applies<'a>(reqs: &'a [LoggedRequest], path: &str) -> Vec<&'a LoggedRequest> {
    reqs.iter()
        .filter(|r| r.method == "PATCH" && r.path == path)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollout_is_rolled_back_to_the_pre_correction_values() {
    let env = Env::new(deployment, Rollout::healthy()).await;
    // The correction's rollout never gets a ready Pod: ProgressDeadlineExceeded.
    env.server
        .simulate_rollout("Deployment", Some("shop"), Some("web"), Rollout::failing());
    let cfg = env.config(GATE);
    env.server.clear_requests();
    let report = env.reconcile(&cfg).await;

    let d = only_drift(&report);
    let a = d.action.as_ref().unwrap();
    let detail = a.detail.clone().unwrap_or_default();
    assert_eq!(
        (a.action.clone(), a.result.clone()),
        (Action::Correct, ActionResult::RolledBack),
        "{detail}"
    );
    assert!(
        detail.starts_with(
            "rolled back by the health gate: the rollout exceeded its progress deadline"
        ),
        "{detail}"
    );
    for evidence in [
        "/spec/template/spec/containers/0/image set back to the pre-correction live values",
        "before the correction: observedGeneration 2 of generation 2; replicas 2, updated 2, ready 2, available 2, unavailable 0",
        "Progressing=False (ProgressDeadlineExceeded",
        "after: observedGeneration 3 of generation 3",
    ] {
        assert!(detail.contains(evidence), "{evidence}\n{detail}");
    }
    // Escalated: the pull request adopting the live value is opened, and says why.
    assert!(detail.contains("opened pull request #"), "{detail}");
    assert_eq!(report.summary.actions.get("correct:rolled_back"), Some(&1));
    // Every renderer says so.
    use driftwarden::report::{Format, RenderOptions, render};
    for (format, text) in [
        (Format::Table, "correct (rolled back)"),
        (Format::Markdown, "correct (rolled back)"),
        (Format::Json, "\"result\": \"rolled_back\""),
        (Format::Sarif, "correct (rolled back)"),
        (Format::Junit, "correct (rolled back)"),
    ] {
        let out = render(&report, format, &RenderOptions::default());
        assert!(out.contains(text), "{format:?}: {text}\n{out}");
        assert!(
            out.contains("ProgressDeadlineExceeded"),
            "{format:?}: the evidence\n{out}"
        );
    }
    // Counted as a failed correction: the run's errors name it.
    assert!(
        report.errors.iter().any(|e| e
            .message
            .starts_with("Deployment shop/web: rolled back by the health gate")),
        "{:?}",
        report.errors
    );

    // The server holds the hand edit's value again, applied by driftwarden.
    let live = env.object("Deployment", "web");
    assert_eq!(image(&live), "registry.example/app:1.1-hotfix");
    // Two applies: the correction (Git's image) then the rollback (the pre-correction image),
    // both as driftwarden; the rollback body is the applied object with only the image changed.
    let reqs = env.server.requests();
    let sent = applies(&reqs, "/apis/apps/v1/namespaces/shop/deployments/web");
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let bodies: Vec<Value> = sent
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(image(&bodies[0]), "registry.example/app:1.0");
    assert_eq!(image(&bodies[1]), "registry.example/app:1.1-hotfix");
    let mut expected = bodies[0].clone();
    expected["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.example/app:1.1-hotfix");
    assert_eq!(bodies[1], expected);
    for r in &sent {
        assert_eq!(r.param("fieldManager").as_deref(), Some("driftwarden"));
    }
    // Between them, the rollout was followed with GETs.
    let first = sent[0].at;
    let second = sent[1].at;
    assert!(
        reqs.iter()
            .any(|r| r.is_get() && r.at > first && r.at < second),
        "followed with GETs"
    );

    // The audit log: the correction's intent, the rollback's intent and result, the rollback
    // record with the fields and the evidence, then the correction's result, rolled back.
    let records = env.audit();
    let kinds: Vec<(String, String)> = records
        .iter()
        .filter(|r| matches!(r["type"].as_str(), Some("intent" | "result" | "rollback")))
        .map(|r| {
            (
                r["type"].as_str().unwrap().to_string(),
                r["action"]
                    .as_str()
                    .or(r["outcome"].as_str())
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    let expect: Vec<(String, String)> = [
        ("intent", "correct"),
        ("intent", "rollback"),
        ("result", "done"),
        ("rollback", "done"),
        ("result", "rolled_back"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds[..5], expect[..], "{records:#?}");
    let rollback = records.iter().find(|r| r["type"] == "rollback").unwrap();
    assert_eq!(
        rollback["fields"][0]["path"],
        "/spec/template/spec/containers/0/image"
    );
    assert_eq!(
        rollback["fields"][0]["before"],
        "registry.example/app:1.1-hotfix"
    );
    assert!(
        rollback["evidence"]
            .as_str()
            .unwrap()
            .contains("ProgressDeadlineExceeded")
    );
    let outcome = records.iter().find(|r| r["type"] == "outcome").unwrap();
    assert_eq!(outcome["result"], "rolled_back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_rollout_is_kept() {
    let env = Env::new(deployment, Rollout::healthy()).await;
    let cfg = env.config(GATE);
    env.server.clear_requests();
    let report = env.reconcile(&cfg).await;
    let d = only_drift(&report);
    let a = d.action.as_ref().unwrap();
    let detail = a.detail.clone().unwrap_or_default();
    assert_eq!(
        (a.action.clone(), a.result.clone()),
        (Action::Correct, ActionResult::Done),
        "{detail}"
    );
    assert!(
        detail.contains("health gate: rolled out healthy (observedGeneration 3 of generation 3; replicas 2, updated 2, ready 2, available 2"),
        "{detail}"
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(
        image(&env.object("Deployment", "web")),
        "registry.example/app:1.0"
    );
    let reqs = env.server.requests();
    assert_eq!(
        applies(&reqs, "/apis/apps/v1/namespaces/shop/deployments/web").len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_unhealthy_workload_is_not_rolled_back() {
    // The hand edit's own rollout failed: unhealthy before driftwarden touches it.
    let env = Env::new(deployment, Rollout::failing()).await;
    let cfg = env.config(GATE);
    env.server.clear_requests();
    let report = env.reconcile(&cfg).await;
    let d = only_drift(&report);
    let a = d.action.as_ref().unwrap();
    let detail = a.detail.clone().unwrap_or_default();
    assert_eq!(
        (a.action.clone(), a.result.clone()),
        (Action::Correct, ActionResult::Done),
        "{detail}"
    );
    assert!(
        detail.contains("health gate: not followed, the workload was already unhealthy before the correction (its rollout exceeded its progress deadline)"),
        "{detail}"
    );
    assert_eq!(
        image(&env.object("Deployment", "web")),
        "registry.example/app:1.0"
    );
    let reqs = env.server.requests();
    assert_eq!(
        applies(&reqs, "/apis/apps/v1/namespaces/shop/deployments/web").len(),
        1,
        "no rollback"
    );
}

/// A StatefulSet has no progress deadline: its failure shows at the gate's timeout as fewer
/// ready replicas than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_with_fewer_ready_replicas_at_the_timeout_is_rolled_back() {
    let env = Env::new(statefulset, Rollout::healthy()).await;
    env.server
        .simulate_rollout("StatefulSet", Some("shop"), Some("db"), Rollout::failing());
    let cfg = env.config("{timeout: 300ms, interval: 20ms}");
    env.server.clear_requests();
    let report = env.reconcile(&cfg).await;
    let d = only_drift(&report);
    let a = d.action.as_ref().unwrap();
    let detail = a.detail.clone().unwrap_or_default();
    assert_eq!(a.result, ActionResult::RolledBack, "{detail}");
    assert!(
        detail.contains("the rollout did not complete within 300 ms and the workload is worse than before the correction"),
        "{detail}"
    );
    assert_eq!(
        image(&env.object("StatefulSet", "db")),
        "registry.example/app:1.1-hotfix"
    );
}

/// With the gate off, a failing rollout is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_can_be_turned_off() {
    let env = Env::new(deployment, Rollout::healthy()).await;
    env.server
        .simulate_rollout("Deployment", Some("shop"), Some("web"), Rollout::failing());
    let cfg = env.config("{enabled: false}");
    env.server.clear_requests();
    let report = env.reconcile(&cfg).await;
    let a = only_drift(&report).action.clone().unwrap();
    assert_eq!(a.result, ActionResult::Done);
    assert!(!a.detail.unwrap_or_default().contains("health gate"));
    let reqs = env.server.requests();
    assert_eq!(
        applies(&reqs, "/apis/apps/v1/namespaces/shop/deployments/web").len(),
        1
    );
}

#[test]
fn health_gate_config_is_validated() {
    let parse = |gate: &str| {
        config::parse(
            &format!(
                "version: 1\ntargets:\n  - name: t\n    desired: {{dir: d}}\n    live: {{snapshot: s}}\n    guardrails:\n      health_gate: {gate}\n"
            ),
            "t.yaml",
            Path::new("/base"),
        )
    };
    let g = &parse("{timeout: 30s}").unwrap().targets[0]
        .guardrails
        .health_gate;
    assert!(g.enabled);
    assert_eq!(g.timeout, Duration::from_secs(30));
    assert_eq!(g.interval, Duration::from_secs(5));
    let default = config::parse(
        "version: 1\ntargets:\n  - name: t\n    desired: {dir: d}\n    live: {snapshot: s}\n",
        "t.yaml",
        Path::new("/base"),
    )
    .unwrap();
    assert_eq!(
        default.targets[0].guardrails.health_gate.timeout,
        Duration::from_secs(120)
    );
    let err = parse("{timeout: 1s, interval: 2s, enabeld: true}")
        .unwrap_err()
        .to_string();
    for expected in [
        "unknown key `enabeld` (did you mean `enabled`?)",
        "targets[].guardrails.health_gate: `interval` must not be longer than `timeout`",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }
}
