//! The audit log, the self-healing figures and the revert breaker, against the Kubernetes API
//! test server (tests/support/kube_server.rs) with desired state in a Git repository and the
//! local forge: a correction, the same field changed back by another manager, `stats`, the
//! breaker escalating to a pull request, `trust reset`, intents and results, a crash between
//! them, an unwritable log, and Secret values kept out of every record.

#[path = "support/common.rs"]
mod common;
#[path = "support/github_server.rs"]
mod github_server;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::path::{Path, PathBuf};

use common::{commit_files, write};
use driftwarden::audit::{self, Event, Record};
use driftwarden::config;
use driftwarden::model::{Action, ActionResult, Drift, Report};
use driftwarden::run::{self, Command, RunOptions};
use git2::Repository;
use kube_server::{Fault, FaultKind, KubeServer};
use serde_json::{Value, json};

/// Deployments are safe to correct, Secrets forbidden.
const POLICY: &str = r#"package driftwarden.audit

classify contains {"class": "safe", "reason": "replica count", "rule": "replicas"} if {
	input.kind == "Modified"
	input.resource.kind == "Deployment"
}

classify contains {"class": "forbidden", "reason": "secret content", "rule": "secret"} if {
	input.resource.kind == "Secret"
}

classify contains {"class": "risky", "reason": "configuration", "rule": "config"} if {
	input.resource.kind == "ConfigMap"
}
"#;

/// The Secret's value in Git and the one set by hand live: neither may reach the audit log.
const CANARY_GIT: &str = "canary-audit-git-4d1e";
const CANARY_LIVE: &str = "canary-audit-live-9b7c";

fn b64(text: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn deployment(replicas: u64) -> Value {
    named_deployment("web", replicas)
}

fn named_deployment(name: &str, replicas: u64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27.3"}]}
            }
        }
    })
}

/// The forge token of the GitHub tests, and the variable holding it.
const TOKEN: &str = "ghs_audit_token_51f0";
const TOKEN_ENV: &str = "DRIFTWARDEN_AUDIT_TEST_TOKEN";

fn set_token() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: set once and never changed; std's environment lock orders it with the other
    // tests' `std::env` reads, and no C library these tests call reads this variable.
    ONCE.call_once(|| unsafe { std::env::set_var(TOKEN_ENV, TOKEN) });
}

/// A ConfigMap: drift on it is risky (a pull request adopting the live value).
fn configmap(name: &str, mode: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {"mode": mode}
    })
}

fn secret(value: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "web-secrets", "namespace": "shop"},
        "type": "Opaque",
        "data": {"API_KEY": b64(value)}
    })
}

struct Env {
    dir: tempfile::TempDir,
    server: KubeServer,
    kubeconfig: PathBuf,
}

impl Env {
    /// The cluster holds the Deployment at 2 replicas and the Secret with the live canary (as
    /// `kubectl` applied them), Git the Deployment at 2 and the Secret with the Git canary.
    async fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let server = KubeServer::start().await;
        let kubeconfig = server.write_kubeconfig(dir.path());
        write(dir.path(), "policies/audit.rego", POLICY);
        server.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}));
        server.apply_as("kubectl", deployment(2));
        server.apply_as("kubectl", secret(CANARY_LIVE));
        let repo = Repository::init(dir.path().join("gitops")).unwrap();
        let dep = serde_json::to_string_pretty(&deployment(2)).unwrap();
        let sec = serde_json::to_string_pretty(&secret(CANARY_GIT)).unwrap();
        commit_files(
            &repo,
            &[
                ("apps/web.json", dep.as_str()),
                ("apps/secret.json", sec.as_str()),
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

    /// An autocorrect target with the local forge; `extra` is YAML at the top level.
    fn config(&self, extra: &str) -> PathBuf {
        let prs = format!(
            "{{forge: local, output_dir: {}}}",
            self.path("prs").display()
        );
        self.config_with(&prs, extra)
    }

    /// An autocorrect target with the GitHub test server `server` as the forge: branches are
    /// pushed to `remote.git` ([`Env::github`]).
    fn github_config(&self, server: &github_server::GitHubServer) -> PathBuf {
        set_token();
        let repo = Repository::open(self.path("gitops")).unwrap();
        let head = repo.head().unwrap();
        let base = head.shorthand().unwrap();
        let prs = format!(
            "{{forge: github, repo: acme/gitops, api_url: \"{}/api/v3\", token_env: {TOKEN_ENV}, remote: \"file://{}\", base: {base}, write_interval_ms: 0}}",
            server.url(),
            self.path("remote.git").display()
        );
        self.config_with(&prs, "")
    }

    /// The GitHub test server for `acme/gitops`; its repository is `remote.git`, a bare clone
    /// of the desired repository as it is now.
    fn github(&self) -> github_server::GitHubServer {
        let bare = self.path("remote.git");
        git2::build::RepoBuilder::new()
            .bare(true)
            .clone(self.path("gitops").to_str().unwrap(), &bare)
            .unwrap();
        github_server::GitHubServer::start("acme", "gitops", TOKEN, &bare)
    }

    /// An autocorrect target with the forge `prs` (YAML flow mapping); `extra` is YAML at the
    /// top level.
    fn config_with(&self, prs: &str, extra: &str) -> PathBuf {
        let text = format!(
            "version: 1\npolicies:\n  dirs: [{policies}]\nstate_dir: {state}\npull_requests: {prs}\n{extra}targets:\n  - name: shop\n    mode: autocorrect\n    cluster: test\n    namespace: shop\n    desired: {{git: {{repo: {repo}}}, path: apps, include: ['**/*.json']}}\n    live:\n      kubernetes: {{kubeconfig: {kc}, backoff_ms: 5}}\n    guardrails: {{max_correction_percent: 100, max_remediations_per_hour: 20}}\n",
            policies = self.path("policies").display(),
            state = self.path("state").display(),
            repo = self.path("gitops").display(),
            kc = self.kubeconfig.display(),
        );
        write(self.dir.path(), "driftwarden.yaml", &text)
    }

    async fn run(&self, cfg: &Path, dry_run: bool) -> Report {
        let cfg = config::load(cfg).unwrap();
        let mut opts = RunOptions::new(Command::Reconcile);
        opts.cache_dir = self.path("cache");
        opts.dry_run = dry_run;
        run::run(&cfg, &opts).await.unwrap()
    }

    /// Someone scales the Deployment by hand (an Update by field manager `kubectl-scale`).
    fn scale_by_hand(&self, replicas: u64) {
        self.server.merge_patch_as(
            "kubectl-scale",
            "apps/v1",
            "Deployment",
            Some("shop"),
            "web",
            json!({"spec": {"replicas": replicas}}),
        );
    }

    fn replicas(&self) -> Value {
        self.server
            .object("apps/v1", "Deployment", Some("shop"), "web")
            .unwrap()["spec"]["replicas"]
            .clone()
    }

    fn audit_dir(&self) -> PathBuf {
        self.path("state/audit")
    }

    fn records(&self) -> Vec<Record> {
        audit::read_dir(&self.audit_dir(), 0).unwrap()
    }

    /// The raw text of every day file.
    fn audit_text(&self) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(self.audit_dir()).unwrap() {
            out.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap());
        }
        out
    }

    /// Runs the binary; checks the exit code; returns stdout.
    fn binary(&self, args: &[&str], code: i32) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
            .args(args)
            .env_remove("DRIFTWARDEN_LOG")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

fn drift<'a>(report: &'a Report, kind: &str) -> &'a Drift {
    report
        .drifts
        .iter()
        .find(|d| d.resource.id.type_name() == kind)
        .unwrap_or_else(|| panic!("no {kind} drift: {:#?}", report.drifts))
}

fn action(d: &Drift) -> (Action, ActionResult, String) {
    let a = d.action.as_ref().expect("an action");
    (
        a.action.clone(),
        a.result.clone(),
        a.detail.clone().unwrap_or_default(),
    )
}

/// Every intent has exactly one result with the same id, and every record carries the schema
/// version, a run id and a time.
fn assert_intents_have_results(records: &[Record]) -> usize {
    let mut intents = 0;
    for r in records {
        assert_eq!(r.v, audit::SCHEMA_VERSION);
        assert!(
            !r.run.is_empty() && audit::parse_time(&r.time).is_some(),
            "{r:?}"
        );
        if let Event::Intent { id, .. } = &r.event {
            intents += 1;
            let results = records
                .iter()
                .filter(|x| matches!(&x.event, Event::Result { id: rid, .. } if rid == id))
                .count();
            assert_eq!(results, 1, "intent {id} has {results} results");
        }
    }
    intents
}

/// Must show: a run that corrects, a later run that sees the correction reverted by another
/// manager, `stats` reporting one reverted correction and the false-positive rate; the breaker
/// tripping on the second revert and escalating to a pull request that says why; `trust
/// reset` closing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverted_corrections_are_counted_and_the_second_trips_the_breaker() {
    let env = Env::new().await;
    let cfg = env.config("");

    // Run 1: someone scaled to 5; the correction brings it back to 2.
    env.scale_by_hand(5);
    let r1 = env.run(&cfg, false).await;
    let (a, r, detail) = action(drift(&r1, "Deployment"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert_eq!(env.replicas(), 2);
    let rule = drift(&r1, "Deployment").verdict.as_ref().unwrap().rules[0].clone();
    let t1 = r1
        .summary
        .trust
        .clone()
        .expect("audit figures in the summary");
    assert_eq!(
        (
            t1.corrections_attempted,
            t1.corrections_confirmed,
            t1.reverts_detected
        ),
        (1, 1, 0)
    );

    // The correction recorded the field with its pre-correction value.
    let records = env.records();
    let intent = records
        .iter()
        .find_map(|r| match &r.event {
            Event::Intent { action, fields, .. } if action == "correct" => Some(fields.clone()),
            _ => None,
        })
        .expect("a correction intent");
    let replicas = intent.iter().find(|f| f.path == "/spec/replicas").unwrap();
    assert_eq!(replicas.before, json!(5));
    assert_eq!(replicas.before_hash, audit::value_hash(&json!(5)));

    // Run 2: scaled back to 5 by another manager: a revert. The breaker (2 in 24 h) is still
    // closed, so it corrects again.
    env.scale_by_hand(5);
    let r2 = env.run(&cfg, false).await;
    let (a, r, detail) = action(drift(&r2, "Deployment"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    let t2 = r2.summary.trust.clone().unwrap();
    assert_eq!(t2.reverts_detected, 1, "{t2:?}");
    assert!(t2.breakers_tripped.is_empty());

    // `stats`: one reverted correction of two confirmed: a false-positive rate of 50%.
    let cfg_arg = cfg.to_str().unwrap();
    let json_out = env.binary(&["stats", "--config", cfg_arg, "-o", "json"], 0);
    let stats: Value = serde_json::from_str(&json_out).unwrap();
    let shop = &stats["targets"][0];
    assert_eq!(shop["target"], "shop");
    assert_eq!(shop["corrections_attempted"], 2, "{stats:#}");
    assert_eq!(shop["corrections_confirmed"], 2, "{stats:#}");
    assert_eq!(shop["corrections_reverted"], 1, "{stats:#}");
    assert_eq!(shop["false_positive_rate"], 0.5, "{stats:#}");
    assert_eq!(shop["success_rate"], 1.0, "{stats:#}");
    assert_eq!(shop["re_drifts"], 1, "{stats:#}");
    let by_rule = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == rule.as_str())
        .unwrap_or_else(|| panic!("{rule} in {stats:#}"));
    assert_eq!(by_rule["corrections_reverted"], 1);
    assert_eq!(stats["reverts"][0]["manager"], "kubectl-scale");
    assert_eq!(stats["reverts"][0]["path"], "/spec/replicas");
    let auto = stats["time_to_remediate"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resolution"] == "auto_corrected" && t["class"] == "safe")
        .unwrap_or_else(|| panic!("{stats:#}"));
    assert_eq!(auto["count"], 2);
    let table = env.binary(&["stats", "--config", cfg_arg], 0);
    assert!(table.contains("50.0%"), "{table}");
    let prom = env.binary(&["stats", "--config", cfg_arg, "-o", "prometheus"], 0);
    assert!(
        prom.contains("driftwarden_corrections_reverted{target=\"shop\"} 1"),
        "{prom}"
    );
    assert!(
        prom.contains("driftwarden_false_positive_ratio{target=\"shop\"} 0.5"),
        "{prom}"
    );

    // Run 3: the second revert trips the breaker: no correction, a pull request saying why.
    env.scale_by_hand(5);
    let r3 = env.run(&cfg, false).await;
    let dep = drift(&r3, "Deployment");
    let (a, r, detail) = action(dep);
    assert_eq!(
        (a, r),
        (Action::PullRequest, ActionResult::Done),
        "{detail}"
    );
    let why = format!(
        "auto-corrections of `{rule}` were reverted 2 times in 24 h: someone keeps changing this on purpose"
    );
    assert!(detail.starts_with(&why), "{detail}");
    assert_eq!(env.replicas(), 5, "not corrected a third time");
    let t3 = r3.summary.trust.clone().unwrap();
    assert_eq!(t3.breakers_tripped, [format!("shop/{rule}")]);
    // The reports say so too.
    use driftwarden::report::{Format, RenderOptions, render};
    for format in [Format::Table, Format::Markdown] {
        let text = render(&r3, format, &RenderOptions::default());
        assert!(
            text.contains(&format!("breaker open: shop/{rule}")),
            "{text}"
        );
    }
    assert_eq!(t3.corrections_attempted, 0);
    let body =
        std::fs::read_to_string(env.path(&format!("prs/shop/{}.md", dep.fingerprint))).unwrap();
    assert!(body.contains(&why), "{body}");
    assert!(
        env.records().iter().any(|r| matches!(&r.event,
            Event::BreakerTripped { rule: ru, reverts: 2, .. } if *ru == rule)),
        "breaker_tripped recorded"
    );
    let prom = env.binary(&["stats", "--config", cfg_arg, "-o", "prometheus"], 0);
    assert!(
        prom.contains(&format!(
            "driftwarden_breaker_open{{target=\"shop\",rule=\"{rule}\"}} 2"
        )),
        "{prom}"
    );

    // `trust reset` closes the breaker (recorded), and the next run corrects again.
    let out = env.binary(
        &[
            "trust", "reset", "--config", cfg_arg, "--target", "shop", "--rule", &rule,
        ],
        0,
    );
    assert!(out.contains("trust reset"), "{out}");
    assert!(env.records().iter().any(|r| matches!(&r.event,
        Event::TrustReset { target, rule: ru } if target == "shop" && *ru == rule)));
    // The reset must be later than the reverts it forgives (times have one-second steps).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r4 = env.run(&cfg, false).await;
    let (a, r, detail) = action(drift(&r4, "Deployment"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    assert_eq!(env.replicas(), 2);

    // Every action of the four runs has its intent and its result.
    let records = env.records();
    assert!(assert_intents_have_results(&records) >= 4);
}

/// Must show: an audit log with intent and result for every action (corrections and forge
/// writes), dry runs marked, every record type a run writes, and the Secret's values in none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_action_is_audited_and_no_secret_reaches_the_log() {
    let env = Env::new().await;
    let cfg = env.config("");
    env.scale_by_hand(4);

    // A dry run first: records marked dry_run, nothing changed.
    let dry = env.run(&cfg, true).await;
    assert!(dry.errors.is_empty(), "{:?}", dry.errors);
    assert_eq!(env.replicas(), 4);
    let records = env.records();
    assert!(!records.is_empty() && records.iter().all(|r| r.dry_run));
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::Intent { .. }))
    );
    assert_intents_have_results(&records);

    let report = env.run(&cfg, false).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let (a, r, _) = action(drift(&report, "Deployment"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done));
    let (a, r, detail) = action(drift(&report, "Secret"));
    assert_eq!((a, r), (Action::Issue, ActionResult::Done), "{detail}");

    let records = env.records();
    let real: Vec<&Record> = records.iter().filter(|r| !r.dry_run).collect();
    let kinds: Vec<&str> = real
        .iter()
        .map(|r| match &r.event {
            Event::RunStarted { .. } => "run_started",
            Event::DriftSeen { .. } => "drift_seen",
            Event::Verdict { .. } => "verdict",
            Event::Decision { .. } => "decision",
            Event::Intent { .. } => "intent",
            Event::Result { .. } => "result",
            Event::Outcome { .. } => "outcome",
            Event::TargetChecked { .. } => "target_checked",
            _ => "other",
        })
        .collect();
    for k in [
        "run_started",
        "drift_seen",
        "verdict",
        "decision",
        "intent",
        "result",
        "outcome",
        "target_checked",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    // Two actions (the correction and the issue), each with an intent before its result.
    let owned: Vec<Record> = real.iter().map(|r| (*r).clone()).collect();
    assert_eq!(assert_intents_have_results(&owned), 2);
    let pos = |pred: &dyn Fn(&Event) -> bool| {
        kinds.len() - real.iter().rev().position(|r| pred(&r.event)).unwrap() - 1
    };
    let intent_at = pos(&|e| matches!(e, Event::Intent { action, .. } if action == "correct"));
    let result_at = pos(&|e| {
        matches!(
            e,
            Event::Result {
                outcome: ActionResult::Done,
                confirmed: Some(true),
                ..
            }
        )
    });
    assert!(intent_at < result_at);
    let seen = real
        .iter()
        .find_map(|r| match &r.event {
            Event::DriftSeen { kind, changes, .. } if changes.iter().any(|c| c.masked) => {
                Some((*kind, changes.clone()))
            }
            _ => None,
        })
        .expect("the Secret's drift");
    assert!(
        seen.1.iter().all(|c| c.desired == json!("(masked)")),
        "{seen:?}"
    );
    // The masked live value is recorded as a keyed digest only: comparable across runs, and
    // not the plain hash of a guessable value.
    let masked = seen.1.iter().find(|c| c.masked).unwrap();
    assert!(
        masked.live_hash.starts_with(audit::DIGEST_PREFIX),
        "{masked:?}"
    );
    assert_ne!(
        masked.live_hash,
        audit::value_hash(&json!(b64(CANARY_LIVE)))
    );
    let key = env.path("state").join(audit::SECRET_KEY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the digest key is the owner's only");
    }
    let digests: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::DriftSeen { changes, .. } => changes
                .iter()
                .find(|c| c.masked)
                .map(|c| c.live_hash.clone()),
            _ => None,
        })
        .collect();
    assert!(
        digests.len() >= 2 && digests.iter().all(|d| *d == digests[0]),
        "stable across runs: {digests:?}"
    );
    let verdicts: Vec<(&Option<driftwarden::model::Class>, &String)> = real
        .iter()
        .filter_map(|r| match &r.event {
            Event::Verdict { class, engine, .. } => Some((class, engine)),
            _ => None,
        })
        .collect();
    assert!(verdicts.iter().all(|(_, e)| e.as_str() == "compiled"));

    // No Secret value, in clear or base64, anywhere in the log.
    let text = env.audit_text();
    for canary in [CANARY_GIT, CANARY_LIVE, &b64(CANARY_GIT), &b64(CANARY_LIVE)] {
        assert!(!text.contains(canary), "the audit log leaks {canary}");
    }
}

/// Must show: an intent without a result (the process stopped after recording the intent) is
/// reported by the next run, as an error of the report and an `unfinished` record, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intent_without_a_result_is_reported_by_the_next_run() {
    let env = Env::new().await;
    let cfg = env.config("");
    env.scale_by_hand(3);
    let first = env.run(&cfg, false).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);

    // Simulate a crash right after the correction's intent: the log ends there.
    let files: Vec<PathBuf> = std::fs::read_dir(env.audit_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let mut kept = String::new();
    let mut intent_id = None;
    for line in text.lines() {
        kept.push_str(line);
        kept.push('\n');
        let r: Record = serde_json::from_str(line).unwrap();
        if let Event::Intent { id, action, .. } = &r.event {
            if action == "correct" {
                intent_id = Some(id.clone());
                break;
            }
        }
    }
    let intent_id = intent_id.expect("a correction intent");
    // ...and a half-written line after it.
    kept.push_str("{\"v\":1,\"run\":\"");
    std::fs::write(&files[0], kept).unwrap();

    let second = env.run(&cfg, false).await;
    let audit_errors: Vec<_> = second.errors.iter().filter(|e| e.side == "audit").collect();
    assert_eq!(audit_errors.len(), 1, "{:?}", second.errors);
    assert!(
        audit_errors[0].message.contains(&intent_id),
        "{}",
        audit_errors[0].message
    );
    assert!(audit_errors[0].message.contains("has no result"));
    assert_eq!(second.summary.trust.as_ref().unwrap().unfinished_intents, 1);
    assert!(env.records().iter().any(|r| matches!(&r.event,
        Event::Unfinished { id, .. } if *id == intent_id)));

    // Reported once: the run after that is clean.
    let third = env.run(&cfg, false).await;
    assert!(third.errors.is_empty(), "{:?}", third.errors);
}

/// Must show: an audit log that cannot be written stops every action for the run: exit 1, the
/// report says why, the cluster is untouched and no pull request or issue is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_audit_log_stops_every_action() {
    let env = Env::new().await;
    // The audit directory is a regular file: it cannot be created, whoever runs the test.
    write(env.dir.path(), "not-a-dir", "x");
    let cfg = env.config(&format!(
        "audit: {{dir: {}, retention_days: 30}}\n",
        env.path("not-a-dir").display()
    ));
    env.scale_by_hand(6);
    env.server.clear_requests();
    let out = env.binary(
        &["reconcile", "--config", cfg.to_str().unwrap(), "-o", "json"],
        1,
    );
    let report: Report = serde_json::from_str(&out).unwrap();
    let (a, r, detail) = action(drift(&report, "Deployment"));
    assert_eq!(
        (a, r),
        (
            Action::Skip {
                why: "audit log unavailable".into()
            },
            ActionResult::Skipped
        )
    );
    assert!(
        detail.contains("no action is taken without a record"),
        "{detail}"
    );
    assert!(matches!(
        action(drift(&report, "Secret")).0,
        Action::Skip { .. }
    ));
    assert!(
        report.errors.iter().any(|e| e.side == "audit"),
        "{:?}",
        report.errors
    );
    assert!(report.summary.trust.as_ref().unwrap().audit_error.is_some());
    assert_eq!(env.replicas(), 6);
    assert!(
        env.server.requests().iter().all(|r| !r.is_write()),
        "nothing written"
    );
    assert!(
        !env.path("prs/index.md").exists(),
        "no pull request or issue"
    );
}

/// Consecutive failed corrections on a target stop its other corrections for the run: here one
/// (`trust.max_consecutive_failures: 1`), with every Deployment apply refused by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_stop_the_targets_corrections_for_the_run() {
    let env = Env::new().await;
    env.server.apply_as("kubectl", named_deployment("api", 2));
    let api = serde_json::to_string_pretty(&named_deployment("api", 2)).unwrap();
    commit_files(
        &Repository::open(env.path("gitops")).unwrap(),
        &[("apps/api.json", api.as_str())],
        "api",
    );
    for name in ["web", "api"] {
        env.server.merge_patch_as(
            "kubectl-scale",
            "apps/v1",
            "Deployment",
            Some("shop"),
            name,
            json!({"spec": {"replicas": 7}}),
        );
    }
    env.server.inject(Fault::new(
        "PATCH",
        "/apis/apps/v1/namespaces/shop/deployments",
        FaultKind::Invalid {
            field: "spec.replicas".into(),
            value: "2".into(),
            detail: "refused by an admission policy".into(),
        },
        usize::MAX,
    ));
    let cfg = env.config("trust: {max_consecutive_failures: 1}\n");
    let report = env.run(&cfg, false).await;
    let deployments: Vec<(Action, ActionResult, String)> = report
        .drifts
        .iter()
        .filter(|d| d.resource.id.type_name() == "Deployment")
        .map(action)
        .collect();
    assert_eq!(deployments.len(), 2, "{deployments:?}");
    assert_eq!(
        deployments
            .iter()
            .filter(|(a, r, _)| *a == Action::Correct && *r == ActionResult::Failed)
            .count(),
        1,
        "{deployments:?}"
    );
    let stopped = deployments
        .iter()
        .find(|(a, _, _)| matches!(a, Action::Skip { why } if why == "consecutive failures"))
        .unwrap_or_else(|| panic!("{deployments:?}"));
    assert!(
        stopped.2.contains("1 consecutive corrections failed"),
        "{}",
        stopped.2
    );
    let t = report.summary.trust.clone().unwrap();
    assert_eq!(t.corrections_stopped, ["shop"]);
    assert_eq!((t.corrections_attempted, t.corrections_failed), (1, 1));
    let records = env.records();
    assert!(records.iter().any(|r| matches!(&r.event, Event::CorrectionsStopped { target, failures: 1, .. } if target == "shop")));
    assert_eq!(
        records
            .iter()
            .filter(|r| matches!(&r.event, Event::Intent { action, .. } if action == "correct"))
            .count(),
        1,
        "no intent for the stopped correction"
    );
    let failed = records.iter().find_map(|r| match &r.event {
        Event::Result {
            outcome: ActionResult::Failed,
            message,
            confirmed,
            ..
        } => Some((message.clone(), *confirmed)),
        _ => None,
    });
    let (message, confirmed) = failed.expect("the failed result");
    assert!(
        message.contains("refused by an admission policy"),
        "{message}"
    );
    assert_eq!(confirmed, Some(false));
    let stats = env.binary(
        &["stats", "--config", cfg.to_str().unwrap(), "-o", "json"],
        0,
    );
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["targets"][0]["corrections_failed"], 1, "{stats:#}");
    assert_eq!(stats["targets"][0]["corrections_stopped"], 1, "{stats:#}");
    assert_eq!(stats["targets"][0]["success_rate"], 0.0, "{stats:#}");
}

/// Bad `audit` and `trust` settings are config errors with their lines (exit 3).
#[test]
fn audit_and_trust_settings_are_validated() {
    let text = "version: 1\naudit:\n  retention_days: 0\n  keep: 3\ntrust:\n  max_reverts: two\ntargets:\n  - name: t\n    desired: {dir: d}\n    live: {snapshot: s}\n";
    let e = config::parse(text, "c.yaml", Path::new(".")).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("c.yaml:3:") && shown.contains("audit.retention_days"),
        "{shown}"
    );
    assert!(
        shown.contains("c.yaml:4:") && shown.contains("unknown key `keep`"),
        "{shown}"
    );
    assert!(
        shown.contains("c.yaml:6:") && shown.contains("trust.max_reverts"),
        "{shown}"
    );
    let ok = config::parse(
        "version: 1\naudit: {retention_days: 7, dir: /tmp/x}\ntrust: {max_reverts: 3, revert_window_hours: 12, max_consecutive_failures: 1}\ntargets:\n  - name: t\n    desired: {dir: d}\n    live: {snapshot: s}\n",
        "c.yaml",
        Path::new("."),
    )
    .unwrap();
    assert_eq!(ok.audit.retention_days, 7);
    assert_eq!(ok.trust.max_reverts, 3);
    assert_eq!(ok.trust.revert_window_hours, 12);
    assert_eq!(ok.trust.max_consecutive_failures, 1);
}

/// The records of one run, in order.
fn run_records(records: &[Record], run: &str) -> Vec<Record> {
    records.iter().filter(|r| r.run == run).cloned().collect()
}

/// The run id of the last `run_started` record.
fn last_run(records: &[Record]) -> String {
    records
        .iter()
        .rev()
        .find(|r| matches!(r.event, Event::RunStarted { .. }))
        .map(|r| r.run.clone())
        .expect("a run_started record")
}

/// Position of the intent of `action` in `records`, its id, and the position of its result
/// (with outcome and message).
fn intent_and_result(records: &[Record], action: &str) -> (usize, Record, usize, Record) {
    let (i, intent) = records
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(&r.event, Event::Intent { action: a, .. } if a == action))
        .unwrap_or_else(|| panic!("no {action} intent in {records:#?}"));
    let Event::Intent { id, .. } = &intent.event else {
        unreachable!()
    };
    let (j, result) = records
        .iter()
        .enumerate()
        .find(|(_, r)| matches!(&r.event, Event::Result { id: rid, .. } if rid == id))
        .unwrap_or_else(|| panic!("no result for the {action} intent {id}"));
    (i, intent.clone(), j, result.clone())
}

/// The ConfigMap `settings` in the cluster and in Git at `mode: a`.
fn add_settings(env: &Env) {
    env.server.apply_as("kubectl", configmap("settings", "a"));
    let text = serde_json::to_string_pretty(&configmap("settings", "a")).unwrap();
    commit_files(
        &Repository::open(env.path("gitops")).unwrap(),
        &[("apps/settings.json", text.as_str())],
        "settings",
    );
}

/// Someone edits a ConfigMap's `mode` by hand.
fn edit_by_hand(env: &Env, name: &str, mode: &str) {
    env.server.merge_patch_as(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        Some("shop"),
        name,
        json!({"data": {"mode": mode}}),
    );
}

/// The pull request number of a drift's report line (`opened pull request #N ...`).
fn pull_number(d: &Drift) -> u64 {
    let (a, r, detail) = action(d);
    assert_eq!(
        (a, r),
        (Action::PullRequest, ActionResult::Done),
        "{detail}"
    );
    let n = detail
        .split("pull request #")
        .nth(1)
        .unwrap_or_else(|| panic!("{detail}"));
    n[..n.find(|c: char| !c.is_ascii_digit()).unwrap_or(n.len())]
        .parse()
        .unwrap()
}

/// Must show (intent and result for every action, forge writes included): a run that closes
/// the pull request of a drift that is gone records the branch deletion and the close, each as
/// an intent before and a result after; a crash between the close's intent and its result is
/// reported by the next run, naming the pull request to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_resolved_pull_request_records_intent_and_result_for_the_close_and_the_branch() {
    let env = Env::new().await;
    add_settings(&env);
    let cfg = env.config("");
    edit_by_hand(&env, "settings", "b");
    let r1 = env.run(&cfg, false).await;
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    let cm = drift(&r1, "ConfigMap");
    let (fp, resource) = (cm.fingerprint.clone(), cm.resource.id.key());
    let number = pull_number(cm);
    let branch = format!("driftwarden/shop/{fp}");

    // Someone sets live back to Git's value: the drift is gone, its pull request is closed.
    edit_by_hand(&env, "settings", "a");
    let r2 = env.run(&cfg, false).await;
    assert!(r2.errors.is_empty(), "{:?}", r2.errors);
    let all = env.records();
    let records = run_records(&all, &last_run(&all));
    let (di, dintent, dj, dresult) = intent_and_result(&records, "delete_branch");
    let (ci, cintent, cj, cresult) = intent_and_result(&records, "close");
    assert!(
        di < dj && dj < ci && ci < cj,
        "intent before result, branch before close"
    );
    match &dintent.event {
        Event::Intent {
            target,
            fingerprint,
            branch: b,
            item,
            resource: res,
            ..
        } => {
            assert_eq!(
                (target.as_str(), fingerprint.as_str()),
                ("shop", fp.as_str())
            );
            assert_eq!(b.as_deref(), Some(branch.as_str()));
            assert_eq!(*item, None);
            assert_eq!(
                *res, resource,
                "the resource from the drift's last sighting"
            );
        }
        e => panic!("{e:?}"),
    }
    match &dresult.event {
        Event::Result {
            outcome, message, ..
        } => {
            assert_eq!(*outcome, ActionResult::Done);
            assert!(message.contains(&branch), "{message}");
        }
        e => panic!("{e:?}"),
    }
    match &cintent.event {
        Event::Intent {
            item,
            operation,
            fingerprint,
            ..
        } => {
            let item = item.expect("the closed item");
            assert_eq!(
                (item.kind, item.number),
                (driftwarden::forge::ItemKind::PullRequest, number)
            );
            assert_eq!(*fingerprint, fp);
            assert!(operation.contains("close"), "{operation}");
        }
        e => panic!("{e:?}"),
    }
    match &cresult.event {
        Event::Result {
            outcome,
            message,
            confirmed,
            ..
        } => {
            assert_eq!(*outcome, ActionResult::Done);
            assert_eq!(*confirmed, None, "nothing is read back from a forge");
            assert!(
                message.contains(&format!("closed pull request #{number}")),
                "{message}"
            );
        }
        e => panic!("{e:?}"),
    }
    assert_intents_have_results(&all);

    // A crash right after the close's intent: the next run reports it, naming the item.
    let file = std::fs::read_dir(env.audit_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let Event::Intent { id: close_id, .. } = &cintent.event else {
        unreachable!()
    };
    let text = std::fs::read_to_string(&file).unwrap();
    let cut = text
        .find(&format!("\"id\":\"{close_id}\""))
        .map(|at| at + text[at..].find('\n').unwrap() + 1)
        .unwrap();
    std::fs::write(&file, &text[..cut]).unwrap();
    let r3 = env.run(&cfg, false).await;
    let audit_errors: Vec<_> = r3.errors.iter().filter(|e| e.side == "audit").collect();
    assert_eq!(audit_errors.len(), 1, "{:?}", r3.errors);
    let message = &audit_errors[0].message;
    assert!(message.contains(close_id.as_str()), "{message}");
    assert!(
        message.contains(&format!("check pull request #{number} by hand")),
        "{message}"
    );
    assert!(env.records().iter().any(|r| matches!(&r.event,
        Event::Unfinished { id, action, item: Some(i), .. }
            if id == close_id && action == "close" && i.number == number)));
}

/// A forge that answers 500 to the close: the close's result is `failed` with the server's
/// message, the report says so, and the next run closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_the_forge_refuses_is_recorded_failed_with_the_servers_message() {
    let env = Env::new().await;
    add_settings(&env);
    let server = env.github();
    let cfg = env.github_config(&server);
    edit_by_hand(&env, "settings", "b");
    let r1 = env.run(&cfg, false).await;
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    let number = pull_number(drift(&r1, "ConfigMap"));

    edit_by_hand(&env, "settings", "a");
    server.inject_on(
        "PATCH",
        &format!("/repos/acme/gitops/pulls/{number}"),
        github_server::Fault::Status {
            code: 500,
            message: "Server Error: the close could not be saved".into(),
        },
    );
    let r2 = env.run(&cfg, false).await;
    assert!(
        r2.errors.iter().any(|e| e.side == "pull_requests"
            && e.message
                .contains(&format!("closing pull request #{number}"))
            && e.message.contains("could not be saved")),
        "{:?}",
        r2.errors
    );
    assert_eq!(server.item(number).state, "open");
    let all = env.records();
    let records = run_records(&all, &last_run(&all));
    let (_, _, _, result) = intent_and_result(&records, "close");
    match &result.event {
        Event::Result {
            outcome, message, ..
        } => {
            assert_eq!(*outcome, ActionResult::Failed);
            assert!(message.contains("HTTP 500"), "{message}");
            assert!(
                message.contains("Server Error: the close could not be saved"),
                "{message}"
            );
        }
        e => panic!("{e:?}"),
    }
    let (_, _, _, deleted) = intent_and_result(&records, "delete_branch");
    assert!(
        matches!(
            &deleted.event,
            Event::Result {
                outcome: ActionResult::Done,
                ..
            }
        ),
        "{deleted:?}"
    );

    // The next run closes it.
    let r3 = env.run(&cfg, false).await;
    assert!(r3.errors.is_empty(), "{:?}", r3.errors);
    assert_eq!(server.item(number).state, "closed");
    let all = env.records();
    let records = run_records(&all, &last_run(&all));
    let (_, _, _, result) = intent_and_result(&records, "close");
    assert!(
        matches!(
            &result.event,
            Event::Result {
                outcome: ActionResult::Done,
                ..
            }
        ),
        "{result:?}"
    );
    assert_intents_have_results(&all);
}

/// The comment answering a `drift/revert` request is a forge write too: intent (trigger
/// `drift_revert`, the closed item) before, result after; the closed item is recorded as
/// `item_closed`, unmerged, with its label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comment_answering_a_drift_revert_request_records_intent_and_result() {
    let env = Env::new().await;
    add_settings(&env);
    let cfg = env.config("");
    edit_by_hand(&env, "settings", "b");
    let r1 = env.run(&cfg, false).await;
    let number = pull_number(drift(&r1, "ConfigMap"));
    // A person closes it with the label drift/revert (the local forge's state.json).
    close_local_item(&env, number, false);
    let path = env.path("prs/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for item in state["items"].as_array_mut().unwrap() {
        if item["number"] == number {
            item["labels"]
                .as_array_mut()
                .unwrap()
                .push(json!("drift/revert"));
        }
    }
    std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap()).unwrap();

    let r2 = env.run(&cfg, false).await;
    assert!(r2.errors.is_empty(), "{:?}", r2.errors);
    let (a, r, detail) = action(drift(&r2, "ConfigMap"));
    assert_eq!((a, r), (Action::Correct, ActionResult::Done), "{detail}");
    let all = env.records();
    let records = run_records(&all, &last_run(&all));
    let (ci, _, cj, _) = intent_and_result(&records, "correct");
    let (i, intent, j, result) = intent_and_result(&records, "comment");
    assert!(
        ci < cj && cj < i && i < j,
        "the comment follows the correction's result"
    );
    match &intent.event {
        Event::Intent {
            trigger,
            item,
            rules,
            ..
        } => {
            assert_eq!(trigger, "drift_revert");
            assert_eq!(item.map(|i| i.number), Some(number));
            assert_eq!(rules, &["audit.config"]);
        }
        e => panic!("{e:?}"),
    }
    match &result.event {
        Event::Result {
            outcome, message, ..
        } => {
            assert_eq!(*outcome, ActionResult::Done);
            assert!(message.contains("the correction is done"), "{message}");
        }
        e => panic!("{e:?}"),
    }
    assert!(records.iter().any(|r| matches!(&r.event,
        Event::ItemClosed { item, merged: false, labels, .. }
            if item.number == number && labels.iter().any(|l| l == "drift/revert"))));
    assert_intents_have_results(&all);
}

/// Which forge a merge test uses.
#[derive(Clone, Copy, Debug)]
enum ForgeUnderTest {
    Local,
    GitHub,
}

/// Sets a local forge item's state in `state.json` as a person would: closed, and merged or
/// not.
fn close_local_item(env: &Env, number: u64, merged: bool) {
    let path = env.path("prs/state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let item = state["items"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|i| i["number"] == number)
        .unwrap();
    item["state"] = json!("closed");
    item["merged"] = json!(merged);
    item["updated"] = json!(audit::rfc3339(audit::now_unix()));
    std::fs::write(&path, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}

/// Two ConfigMaps drift; the pull request of one is merged (Git takes the live value), the
/// other's is closed without merging and live is set back by hand. The next run records both
/// closures as the forge tells them (`item_closed`, `merged: true|false`), and `stats` counts
/// one resolution as `merged_pull_request` and the other as `other`.
async fn merged_pull_requests_are_asked_of_the_forge(which: ForgeUnderTest) {
    let env = Env::new().await;
    add_settings(&env);
    env.server.apply_as("kubectl", configmap("flags", "on"));
    let flags = serde_json::to_string_pretty(&configmap("flags", "on")).unwrap();
    let repo = Repository::open(env.path("gitops")).unwrap();
    commit_files(&repo, &[("apps/flags.json", flags.as_str())], "flags");
    let server = env.github();
    let cfg = match which {
        ForgeUnderTest::Local => env.config(""),
        ForgeUnderTest::GitHub => env.github_config(&server),
    };
    edit_by_hand(&env, "settings", "b");
    edit_by_hand(&env, "flags", "off");
    let r1 = env.run(&cfg, false).await;
    assert!(r1.errors.is_empty(), "{:?}", r1.errors);
    let by_name = |r: &Report, name: &str| {
        r.drifts
            .iter()
            .find(|d| d.resource.display.ends_with(&format!("/{name}")))
            .cloned()
            .unwrap_or_else(|| panic!("no drift of {name}: {:#?}", r.drifts))
    };
    let settings = by_name(&r1, "settings");
    let flags_drift = by_name(&r1, "flags");
    let (merged_pr, closed_pr) = (pull_number(&settings), pull_number(&flags_drift));

    // `settings`: merged, so Git now holds the live value. `flags`: closed unmerged, and live
    // set back to Git's value by hand.
    let merged_text = serde_json::to_string_pretty(&configmap("settings", "b")).unwrap();
    commit_files(
        &repo,
        &[("apps/settings.json", merged_text.as_str())],
        "merge",
    );
    edit_by_hand(&env, "flags", "on");
    match which {
        ForgeUnderTest::Local => {
            close_local_item(&env, merged_pr, true);
            close_local_item(&env, closed_pr, false);
        }
        ForgeUnderTest::GitHub => {
            server.merge(merged_pr);
            server.close_with_labels(closed_pr, &[]);
        }
    }
    let log_from = server.log().len();
    let r2 = env.run(&cfg, false).await;
    assert!(r2.errors.is_empty(), "{:?}", r2.errors);
    assert!(
        r2.drifts
            .iter()
            .all(|d| d.resource.id.type_name() != "ConfigMap"),
        "{:#?}",
        r2.drifts
    );
    if let ForgeUnderTest::GitHub = which {
        // The list of closed items does not show the unmerged one merged: the pulls API is
        // asked.
        let asked = server.log_since(log_from).iter().any(|l| {
            l.method == "GET" && l.path == format!("/repos/acme/gitops/pulls/{closed_pr}")
        });
        assert!(asked, "GET /pulls/{closed_pr}");
    }
    let closures = |records: &[Record]| -> Vec<(u64, bool, String, Option<String>)> {
        records
            .iter()
            .filter_map(|r| match &r.event {
                Event::ItemClosed {
                    item,
                    merged,
                    fingerprint,
                    resource,
                    ..
                } => Some((item.number, *merged, fingerprint.clone(), resource.clone())),
                _ => None,
            })
            .collect()
    };
    let mut found = closures(&env.records());
    found.sort();
    let mut want = vec![
        (
            merged_pr,
            true,
            settings.fingerprint.clone(),
            Some(settings.resource.id.key()),
        ),
        (
            closed_pr,
            false,
            flags_drift.fingerprint.clone(),
            Some(flags_drift.resource.id.key()),
        ),
    ];
    want.sort();
    assert_eq!(found, want);
    // The run that recorded them says it listed the items.
    let all = env.records();
    assert!(run_records(&all, &last_run(&all)).iter().any(|r| matches!(
        r.event,
        Event::TargetChecked {
            items_listed: Some(true),
            ..
        }
    )));

    // Recorded once: a further run adds none.
    let r3 = env.run(&cfg, false).await;
    assert!(r3.errors.is_empty(), "{:?}", r3.errors);
    assert_eq!(closures(&env.records()).len(), 2);

    let out = env.binary(
        &["stats", "--config", cfg.to_str().unwrap(), "-o", "json"],
        0,
    );
    let stats: Value = serde_json::from_str(&out).unwrap();
    let ttr = stats["time_to_remediate"].as_array().unwrap();
    let count = |resolution: &str| {
        ttr.iter()
            .filter(|t| t["class"] == "risky" && t["resolution"] == resolution)
            .map(|t| t["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(count("merged_pull_request"), 1, "{stats:#}");
    assert_eq!(count("other"), 1, "{stats:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_merged_on_github_counts_as_merged_and_one_closed_unmerged_does_not() {
    merged_pull_requests_are_asked_of_the_forge(ForgeUnderTest::GitHub).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_merged_on_the_local_forge_counts_as_merged_and_one_closed_unmerged_does_not()
 {
    merged_pull_requests_are_asked_of_the_forge(ForgeUnderTest::Local).await;
}
