//! The binary end to end: the offline demo, `diff --desired --live`, bad input (exit 3 with the
//! file and line, no panic), exit codes, and the secret canary in every output and log.

#[path = "support/common.rs"]
mod common;

use common::{bin, code, commit_files, root, run, stderr, stdout, write};
use serde_json::Value;

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\ndata:\n  LEVEL: info\n";
const CM_LIVE: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: shop\n  uid: 1b4c\n  resourceVersion: \"42\"\ndata:\n  LEVEL: debug\n";

#[test]
fn local_diff_reports_drift_with_exit_2_and_in_sync_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let d = write(dir.path(), "desired/cm.yaml", CM);
    let l = write(dir.path(), "live/cm.yaml", CM_LIVE);
    let out = run(bin()
        .args(["diff", "-o", "json", "--desired"])
        .arg(&d)
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["schema_version"], "1");
    assert_eq!(report["summary"]["drifted"], 1);
    assert_eq!(report["drifts"][0]["changes"][0]["path"], "/data/LEVEL");
    assert_eq!(report["drifts"][0]["provenance"]["line"], 1);

    let same = write(
        dir.path(),
        "live2/cm.yaml",
        &CM_LIVE.replace("debug", "info"),
    );
    let out = run(bin()
        .args(["diff", "--desired"])
        .arg(&d)
        .arg("--live")
        .arg(&same));
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn local_diff_namespace_places_manifests_without_one() {
    let dir = tempfile::tempdir().unwrap();
    // A manifest with no namespace (as `kubectl apply -n shop` or an Argo CD destination takes
    // it), and the same objects read from namespace `shop`: one in sync, one drifted.
    let d = write(
        dir.path(),
        "desired/app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  LEVEL: info\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\ndata:\n  BETA: \"off\"\n",
    );
    let l = write(
        dir.path(),
        "live/app.yaml",
        "apiVersion: v1\nkind: List\nitems:\n\
         - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: app\n    namespace: shop\n    uid: a1\n  data:\n    LEVEL: info\n\
         - apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: flags\n    namespace: shop\n    uid: a2\n  data:\n    BETA: \"on\"\n",
    );
    let diff = |ns: Option<&str>| {
        let mut cmd = bin();
        cmd.args(["diff", "-o", "json"]);
        if let Some(ns) = ns {
            cmd.args(["-n", ns]);
        }
        run(cmd.arg("--desired").arg(&d).arg("--live").arg(&l))
    };

    let out = diff(Some("shop"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["summary"]["resources_checked"], 2, "{report}");
    assert_eq!(report["summary"]["in_sync"], 1, "{report}");
    let drifts = report["drifts"].as_array().unwrap();
    assert_eq!(drifts.len(), 1, "{report}");
    assert_eq!(drifts[0]["kind"], "Modified", "{report}");
    assert_eq!(drifts[0]["resource"]["namespace"], "shop", "{report}");
    assert_eq!(drifts[0]["resource"]["name"], "flags", "{report}");
    assert_eq!(drifts[0]["changes"][0]["path"], "/data/BETA", "{report}");

    // Without -n the manifests are placed in `default`: both Missing there, both live
    // objects in `shop` Unmanaged.
    let out = diff(None);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let kinds: Vec<(&str, &str)> = report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["resource"]["namespace"].as_str().unwrap(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("Missing", "default")) && !kinds.contains(&("Modified", "shop")),
        "{kinds:?}"
    );

    // A name that is not a namespace is bad input: exit 3, nothing compared.
    let out = diff(Some("Shop_1"));
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stderr(&out).contains("--namespace \"Shop_1\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn broken_yaml_is_exit_3_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = write(
        dir.path(),
        "desired/bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  a: [unclosed\n  b: c\n",
    );
    let l = write(dir.path(), "live/cm.yaml", CM_LIVE);
    let out = run(bin()
        .arg("diff")
        .arg("--desired")
        .arg(&d)
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(err.contains("bad.yaml:"), "{err}");
    assert!(err.contains("not valid YAML"), "{err}");
    assert!(stdout(&out).is_empty(), "no report on bad input");
}

#[test]
fn manifest_without_kind_or_name_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let l = write(dir.path(), "live/cm.yaml", CM_LIVE);
    let d = write(
        dir.path(),
        "d1/m.yaml",
        &format!("{CM}---\napiVersion: v1\nmetadata:\n  name: x\n"),
    );
    let out = run(bin()
        .arg("diff")
        .arg("--desired")
        .arg(&d)
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("m.yaml:9: the object has no `kind`"),
        "{}",
        stderr(&out)
    );
    let d = write(
        dir.path(),
        "d2/m.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  labels: {a: b}\n",
    );
    let out = run(bin()
        .arg("diff")
        .arg("--desired")
        .arg(&d)
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("m.yaml:1: the Service has no `metadata.name`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unknown_config_keys_all_reported_with_lines() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "driftwarden.yaml",
        "targets:\n  - name: a\n    desired: {dir: d}\n    live: {snapshot: l}\n    modee: observe\noutput:\n  colour: never\n",
    );
    let out = run(bin().args(["diff", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(
        err.contains("driftwarden.yaml:5:5: targets[]: unknown key `modee` (did you mean `mode`?)"),
        "{err}"
    );
    assert!(
        err.contains("driftwarden.yaml:7:3: output: unknown key `colour` (did you mean `color`?)"),
        "{err}"
    );
    assert!(err.contains("2 problems"), "{err}");
    let out = run(bin().args(["validate", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 3);
}

#[test]
fn missing_directories_and_refs_are_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let l = write(dir.path(), "live/cm.yaml", CM_LIVE);
    let out = run(bin()
        .args(["diff", "--desired"])
        .arg(dir.path().join("nope"))
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));

    write(dir.path(), "desired/cm.yaml", CM);
    let cfg = write(
        dir.path(),
        "missing-live.yaml",
        "targets:\n  - name: a\n    desired: {dir: desired}\n    live: {snapshot: no-such-dir}\n",
    );
    let out = run(bin().args(["diff", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("no-such-dir does not exist"),
        "{}",
        stderr(&out)
    );

    // A Git ref that does not exist.
    let repo_dir = dir.path().join("repo");
    let repo = git2::Repository::init(&repo_dir).unwrap();
    commit_files(&repo, &[("cm.yaml", CM)], "init");
    let cfg = write(
        dir.path(),
        "bad-ref.yaml",
        "targets:\n  - name: a\n    desired:\n      git: {repo: repo, ref: release-9}\n    live: {snapshot: live}\n",
    );
    let out = run(bin().args(["diff", "--config"]).arg(&cfg));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ref `release-9` does not exist"),
        "{}",
        stderr(&out)
    );
    // The same config at an existing ref works.
    let good = write(
        dir.path(),
        "good-ref.yaml",
        "targets:\n  - name: a\n    desired:\n      git: {repo: repo, ref: HEAD}\n    live: {snapshot: live}\n",
    );
    let out = run(bin().args(["diff", "-o", "json", "--config"]).arg(&good));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let prov = &report["drifts"][0]["provenance"];
    assert_eq!(prov["file"], "cm.yaml");
    assert_eq!(prov["commit"].as_str().unwrap().len(), 40);
}

#[test]
fn duplicate_object_is_exit_3_naming_both_places() {
    let dir = tempfile::tempdir().unwrap();
    let d = write(dir.path(), "desired/a.yaml", CM);
    write(dir.path(), "desired/b.yaml", CM);
    let l = write(dir.path(), "live/cm.yaml", CM_LIVE);
    let out = run(bin()
        .arg("diff")
        .arg("--desired")
        .arg(d.parent().unwrap())
        .arg("--live")
        .arg(&l));
    assert_eq!(code(&out), 3);
    let err = stderr(&out);
    assert!(
        err.contains("a.yaml:1") && err.contains("b.yaml:1"),
        "{err}"
    );
}

#[test]
fn logs_at_trace_level_never_carry_a_secret_and_json_logs_are_json() {
    let out = run(bin().args([
        "--log-format",
        "json",
        "--log-level",
        "trace",
        "reconcile",
        "-o",
        "json",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    for secret in [
        "DEMO-CANARY-5f2b",
        "REVNTy1DQU5BUlktNWYyYg==",
        "demo-payment-key-not-real",
        "demo-db-password-not-real",
    ] {
        assert!(!err.contains(secret), "logs leak {secret}");
        assert!(!stdout(&out).contains(secret), "report leaks {secret}");
    }
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "trace logging says something");
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
}

#[test]
fn validate_accepts_the_embedded_demo_config() {
    let out = run(bin().arg("validate"));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("valid (1 target)"),
        "{}",
        stdout(&out)
    );
}

const WEB: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n  labels:\n    team: storefront\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n        - name: web\n          image: web:1\n";

#[test]
fn a_missing_policy_directory_makes_every_drift_risky_and_nothing_is_corrected() {
    // A label and a replica count edited by hand: the default library calls both safe, so in
    // autocorrect mode the drift would be corrected. Without policies it must not be.
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "desired/web.yaml", WEB);
    write(
        dir.path(),
        "live/web.yaml",
        &WEB.replace("team: storefront", "team: sre")
            .replace("replicas: 2", "replicas: 3")
            .replace(
                "  namespace: shop\n",
                "  namespace: shop\n  uid: 7f1d\n  resourceVersion: \"12\"\n",
            ),
    );
    let config = |policies: &str| {
        format!(
            "policies:\n  dirs: [{policies}]\ntargets:\n  - name: t\n    mode: autocorrect\n    desired: {{dir: desired}}\n    live: {{snapshot: live}}\n"
        )
    };
    let library = root().join("policies");
    let with = write(
        dir.path(),
        "with.yaml",
        &config(&library.display().to_string()),
    );
    let without = write(dir.path(), "without.yaml", &config("no-such-policies"));

    let out = run(bin()
        .args(["reconcile", "-o", "json", "--config"])
        .arg(&with));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["drifts"][0]["verdict"]["class"], "safe");
    assert_eq!(report["drifts"][0]["action"]["action"]["type"], "correct");

    let out = run(bin()
        .args(["reconcile", "-o", "json", "--config"])
        .arg(&without));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no policy directory found"),
        "{}",
        stderr(&out)
    );
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        report["summary"]["by_class"],
        serde_json::json!({"risky": 1})
    );
    let drift = &report["drifts"][0];
    assert_eq!(
        drift["verdict"],
        serde_json::json!({
            "class": "risky",
            "reasons": [driftwarden::policy::DEFAULT_REASON],
            "rules": [driftwarden::policy::DEFAULT_RULE]
        })
    );
    for c in drift["changes"].as_array().unwrap() {
        assert_eq!(c["class"], "risky", "{c}");
    }
    assert_eq!(drift["action"]["action"]["type"], "pull_request");
    assert_eq!(
        report["summary"]["actions"],
        serde_json::json!({"pull_request:planned": 1})
    );

    // The table says so too.
    let out = run(bin()
        .args(["reconcile", "--no-diff", "--config"])
        .arg(&without));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stdout(&out).contains("[risky] Deployment shop/web"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn policy_errors_stop_diff_with_exit_3_naming_the_file_and_line() {
    // A Deployment scaled by hand, so there is a drift to classify; each broken policy directory
    // must stop the run before any report, file or action.
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "a syntax error",
            "package driftwarden.x\n\nclassify contains {\"class\": \"safe\", \"reason\": \"r\"} if {\n\tinput.kind ==\n}\n",
            &["policy {file}:5:1 does not compile: expecting expression"],
        ),
        (
            "a malformed finding",
            "package driftwarden.x\n\nclassify contains {\"class\": \"maybe\", \"reason\": \"x\"} if true\n",
            &[
                "malformed finding from data.driftwarden.x.classify (defined in {file})",
                "`class` is \"maybe\", expected one of \"safe\", \"risky\", \"forbidden\"",
            ],
        ),
        (
            "a builtin regorus lacks",
            "package driftwarden.x\n\nclassify contains {\"class\": \"safe\", \"reason\": \"overlap\"} if {\n\tnet.cidr_intersects(\"10.0.0.0/8\", \"10.1.0.0/16\")\n}\n",
            &[
                "policy {file}:4:",
                "calls net.cidr_intersects(), which is not a builtin of regorus",
            ],
        ),
    ];
    for (what, rego, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "desired/web.yaml", WEB);
        let live = WEB.replace("replicas: 2", "replicas: 3").replace(
            "  namespace: shop\n",
            "  namespace: shop\n  uid: 7f1d\n  resourceVersion: \"12\"\n",
        );
        write(dir.path(), "live/web.yaml", &live);
        write(dir.path(), "policies/x.rego", rego);
        let cfg = write(
            dir.path(),
            "driftwarden.yaml",
            "state_dir: state\npolicies:\n  dirs: [policies]\ntargets:\n  - name: t\n    desired: {dir: desired}\n    live: {snapshot: live}\n",
        );
        let json = dir.path().join("report.json");
        let metrics = dir.path().join("metrics.prom");
        let out = run(bin()
            .args(["diff", "-o", "json", "--config"])
            .arg(&cfg)
            .arg("--json-report")
            .arg(&json)
            .arg("--metrics-file")
            .arg(&metrics));
        let err = stderr(&out);
        assert_eq!(code(&out), 3, "{what}: {err}");
        let file = dir.path().join("policies/x.rego").display().to_string();
        for w in want {
            let w = w.replace("{file}", &file);
            assert!(err.contains(&w), "{what}: no {w:?} in:\n{err}");
        }
        assert!(stdout(&out).is_empty(), "{what}: a report on bad policy");
        assert!(!json.exists(), "{what}: a JSON report was written");
        assert!(!metrics.exists(), "{what}: metrics were written");
        assert!(
            nothing_but_the_lock(&dir.path().join("state")),
            "{what}: state written"
        );

        // The same setup with the policy fixed classifies the drift: the error was the policy.
        write(
            dir.path(),
            "policies/x.rego",
            "package driftwarden.x\n\nclassify contains {\"class\": \"risky\", \"reason\": \"r\"} if true\n",
        );
        let out = run(bin().args(["diff", "-o", "json", "--config"]).arg(&cfg));
        assert_eq!(code(&out), 2, "{what} fixed: {}", stderr(&out));
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["drifts"][0]["verdict"]["class"], "risky", "{what}");
    }
}

#[test]
fn a_rule_failing_at_run_time_stops_autocorrect_before_anything_is_corrected() {
    // `large` is a type error when the first change's live value is a number (`count(3)`): the
    // compiled program reads it as undefined, so `not large` makes the drift safe, and only the
    // interpreter's confirmation of safe verdicts in autocorrect mode sees the error. By default
    // (OPA's reading of builtin errors) the drift is then risky and nothing is corrected; with
    // `policies.strict_builtins` the run stops (docs/policy.md, "Differences from OPA").
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "desired/web.yaml", WEB);
    let live_text = WEB.replace("replicas: 2", "replicas: 3").replace(
        "  namespace: shop\n",
        "  namespace: shop\n  uid: 7f1d\n  resourceVersion: \"12\"\n",
    );
    let live = write(dir.path(), "live/web.yaml", &live_text);
    let rego = |large: &str| {
        format!(
            "package driftwarden.x\n\nlarge if {large}\n\nclassify contains {{\"class\": \"safe\", \"reason\": \"small\"}} if not large\n"
        )
    };
    write(
        dir.path(),
        "policies/x.rego",
        &rego("count(input.changes[0].live) > 1"),
    );
    let config_with = |mode: &str, strict: bool| {
        write(
            dir.path(),
            &format!("{mode}-{strict}.yaml"),
            &format!(
                "state_dir: state\npolicies:\n  dirs: [policies]\n  strict_builtins: {strict}\ntargets:\n  - name: t\n    mode: {mode}\n    desired: {{dir: desired}}\n    live: {{snapshot: live}}\n"
            ),
        )
    };
    let config = |mode: &str| config_with(mode, false);
    let json = dir.path().join("report.json");
    let metrics = dir.path().join("metrics.prom");
    let reconcile = |cfg: &std::path::Path| {
        run(bin()
            .args(["reconcile", "-o", "json", "--config"])
            .arg(cfg)
            .arg("--json-report")
            .arg(&json)
            .arg("--metrics-file")
            .arg(&metrics))
    };

    let out = reconcile(&config("autocorrect"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let verdict = &report["drifts"][0]["verdict"];
    assert_eq!(verdict["class"], "risky", "{verdict}");
    assert!(
        verdict["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("x.rego:3") && r.contains("never safe")),
        "{verdict}"
    );
    assert_eq!(std::fs::read_to_string(&live).unwrap(), live_text);
    // Clear what the run wrote, so the strict run below shows it writes nothing.
    for written in [&json, &metrics] {
        if written.exists() {
            std::fs::remove_file(written).unwrap();
        }
    }
    if dir.path().join("state").exists() {
        std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    }

    let out = reconcile(&config_with("autocorrect", true));
    let err = stderr(&out);
    assert_eq!(code(&out), 3, "{err}");
    let file = dir.path().join("policies/x.rego");
    assert!(
        err.contains(&format!(
            "policy evaluation failed for Deployment shop/web (target t): {}:3:",
            file.display()
        )),
        "{err}"
    );
    assert!(err.contains("`count` requires"), "{err}");
    // Nothing acted on: no report, no files, no remediation history, the live state as it was.
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(!json.exists() && !metrics.exists());
    assert!(nothing_but_the_lock(&dir.path().join("state")));
    assert_eq!(std::fs::read_to_string(&live).unwrap(), live_text);

    // In recommend mode nothing is written, so the program's answer stands (docs/policy.md,
    // "Engine"): safe, reported, nothing done.
    let out = reconcile(&config("recommend"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["drifts"][0]["verdict"]["class"], "safe");
    assert_eq!(
        report["summary"]["actions"],
        serde_json::json!({"report:planned": 1})
    );

    // With a rule that does not fail, the same autocorrect run classifies and plans the
    // correction (a snapshot cannot be written), and says that nothing was done.
    write(
        dir.path(),
        "policies/x.rego",
        &rego("input.changes[0].live > 1000"),
    );
    let out = reconcile(&config("autocorrect"));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["drifts"][0]["verdict"]["class"], "safe");
    assert_eq!(
        report["summary"]["actions"],
        serde_json::json!({"correct:planned": 1})
    );
    let metrics_text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        metrics_text
            .lines()
            .any(|l| l == "driftwarden_actions{action=\"correct\",result=\"planned\"} 1"),
        "{metrics_text}"
    );
    assert!(!metrics_text.contains("result=\"done\""), "{metrics_text}");
    assert_eq!(std::fs::read_to_string(&live).unwrap(), live_text);
}

/// A target with hundreds of drifts is classified on every core: the verdicts are those of one
/// thread, drift for drift, in the report's order.
#[test]
fn a_large_target_is_classified_in_parallel_with_the_same_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (mut desired, mut live) = (String::new(), String::new());
    for i in 0..400 {
        // Even: a plain label (safe). Odd: a data value (risky).
        let (d_label, l_label, d_val, l_val) = if i % 2 == 0 {
            ("a", "b", "x", "x")
        } else {
            ("a", "a", "x", "y")
        };
        desired.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: shop\n  labels: {{team: {d_label}}}\ndata:\n  K: {d_val}\n"
        ));
        live.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: shop\n  labels: {{team: {l_label}}}\ndata:\n  K: {l_val}\n"
        ));
    }
    let d = write(dir.path(), "desired/all.yaml", &desired);
    let l = write(dir.path(), "live/all.yaml", &live);
    let policies = root().join("policies");
    let out = run(bin()
        .args([
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "diff",
            "-o",
            "json",
            "--desired",
        ])
        .arg(&d)
        .arg("--live")
        .arg(&l)
        .arg("--policies")
        .arg(&policies));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let drifts = report["drifts"].as_array().unwrap();
    assert_eq!(drifts.len(), 400);
    for d in drifts {
        let name = d["resource"]["display"].as_str().unwrap();
        let i: usize = name.rsplit('-').next().unwrap().parse().unwrap();
        let expected = if i % 2 == 0 { "safe" } else { "risky" };
        assert_eq!(d["verdict"]["class"], expected, "{name}: {d}");
    }
    assert_eq!(report["summary"]["by_class"]["safe"], 200);
    assert_eq!(report["summary"]["by_class"]["risky"], 200);
    // ...on as many threads as the machine has cores.
    let cores = std::thread::available_parallelism().unwrap().get();
    let classifying: Vec<Value> = stderr(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "classifying the drifts")
        .collect();
    assert_eq!(classifying.len(), 1, "{}", stderr(&out));
    assert_eq!(classifying[0]["fields"]["drifts"], 400);
    assert_eq!(classifying[0]["fields"]["threads"], cores);
}

/// `policies.engine: interpreter` classifies with the reference interpreter (same verdicts as the
/// compiled default, and a rule failing at run time stops even a recommend-mode run); an unknown
/// engine is a config error with its line.
#[test]
fn the_policy_engine_can_be_set_to_the_interpreter() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "desired/web.yaml", WEB);
    write(
        dir.path(),
        "live/web.yaml",
        &WEB.replace("replicas: 2", "replicas: 3"),
    );
    let config = |policies: &str, engine: &str| {
        format!(
            "policies:\n  dirs: [{policies}]\n  engine: {engine}\ntargets:\n  - name: t\n    mode: recommend\n    desired: {{dir: desired}}\n    live: {{snapshot: live}}\n"
        )
    };
    let library = root().join("policies").display().to_string();
    let mut reports = Vec::new();
    for engine in ["compiled", "interpreter"] {
        let path = write(
            dir.path(),
            &format!("{engine}.yaml"),
            &config(&library, engine),
        );
        let out = run(bin().args(["diff", "-o", "json", "--config"]).arg(&path));
        assert_eq!(code(&out), 2, "{engine}: {}", stderr(&out));
        let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["drifts"][0]["verdict"]["class"], "safe", "{engine}");
        reports.push(report["drifts"].clone());
    }
    assert_eq!(reports[0], reports[1]);

    // A rule that fails at run time behind a safe finding: recommend mode with the compiled
    // program reports (docs/policy.md, "Engine"); the interpreter reads the failing builtin as
    // undefined like OPA but keeps the drift risky, and stops with strict builtins.
    let failing = dir.path().join("failing");
    write(
        &failing,
        "p.rego",
        "package driftwarden.p\n\nlarge if count(input.changes[0].live) > 1\n\nclassify contains {\"class\": \"safe\", \"reason\": \"small\"} if not large\n",
    );
    let failing = failing.display().to_string();
    let compiled = write(dir.path(), "f1.yaml", &config(&failing, "compiled"));
    let out = run(bin().args(["diff", "--config"]).arg(&compiled));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let interpreted = write(dir.path(), "f2.yaml", &config(&failing, "interpreter"));
    let out = run(bin()
        .args(["diff", "-o", "json", "--config"])
        .arg(&interpreted));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["drifts"][0]["verdict"]["class"], "risky");
    let out = run(bin()
        .args(["diff", "--strict-builtins", "--config"])
        .arg(&interpreted));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("p.rego:3"), "{}", stderr(&out));

    let bad = write(dir.path(), "bad.yaml", &config(&library, "fast"));
    let out = run(bin().args(["diff", "--config"]).arg(&bad));
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("bad.yaml:3"), "{err}");
    assert!(err.contains("`fast` is not an engine"), "{err}");
}

/// A policy that prints the whole input and quotes it in its reasons still sees no secret: the
/// input is masked before any policy runs. The canaries appear nowhere: not in the report, the
/// trace logs (where regorus' `print` goes), the pull request bodies and patches that carry the
/// reasons, or the run history under `state_dir`.
#[test]
fn a_policy_quoting_the_whole_input_sees_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
    }
    write(
        &policies,
        "quote.rego",
        r#"package driftwarden.quote

classify contains {
	"class": "risky",
	"reason": sprintf("desired %v, live %v, changes %v", [input.desired, input.live, input.changes]),
	"rule": "quote_everything",
} if {
	print("the whole input:", input)
	input.resource.kind == "Secret"
}
"#,
    );
    let demo = root().join("fixtures/demo");
    let config = write(
        dir.path(),
        "driftwarden.yaml",
        &format!(
            "state_dir: {state}\npolicies:\n  dirs: [{policies}]\npull_requests:\n  forge: local\ntargets:\n  - name: demo\n    cluster: demo\n    mode: recommend\n    namespace: shop\n    desired: {{dir: {desired}}}\n    live: {{snapshot: {live}}}\n",
            state = dir.path().join("state").display(),
            policies = policies.display(),
            desired = demo.join("desired").display(),
            live = demo.join("live").display(),
        ),
    );
    let out = run(bin().current_dir(dir.path()).args([
        "--log-level",
        "trace",
        "reconcile",
        "-c",
        config.to_str().unwrap(),
        "-o",
        "json",
    ]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    // The policy ran on the Secret's drift and its reason (the quoted input) reached the report.
    let secret = report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["kind"] == "Secret")
        .unwrap_or_else(|| panic!("no Secret drift: {report}"));
    let quoted = secret["verdict"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|r| r.starts_with("desired "))
        .unwrap_or_else(|| panic!("the quoting rule did not fire: {secret}"));
    assert!(quoted.contains("PAYMENT_API_KEY"), "{quoted}");
    assert!(
        stderr(&out).contains("the whole input:"),
        "regorus' print output reaches the trace log: {}",
        stderr(&out)
    );

    let mut outputs = vec![
        ("the report".to_string(), stdout(&out)),
        ("the logs".to_string(), stderr(&out)),
    ];
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if p == policies {
                continue;
            }
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p != config {
            let bytes = std::fs::read(&p).unwrap();
            outputs.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into(),
            ));
        }
    }
    assert!(
        outputs
            .iter()
            .any(|(p, _)| std::path::Path::new(p).starts_with(dir.path().join("state"))),
        "the run wrote its history under state_dir: {:?}",
        outputs.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(
        outputs.iter().any(|(p, _)| p.ends_with(".md")),
        "pull request bodies were written"
    );
    // The local forge's Git objects are compressed on disk: read every one through Git. Its
    // base branch holds the desired files as they are in Git, desired secrets included (the
    // user's own content), so there only the live values must never appear: a branch that
    // adopted the live Secret into Git would carry them.
    let mut git_objects = Vec::new();
    let repo = git2::Repository::open_bare(dir.path().join("state/prs/repo.git")).unwrap();
    let odb = repo.odb().unwrap();
    let mut ids = Vec::new();
    odb.foreach(|id| {
        ids.push(*id);
        true
    })
    .unwrap();
    assert!(!ids.is_empty());
    for id in ids {
        let object = odb.read(id).unwrap();
        git_objects.push((
            format!("Git object {id}"),
            String::from_utf8_lossy(object.data()).into_owned(),
        ));
    }
    for (name, text) in &git_objects {
        for canary in ["DEMO-CANARY-5f2b", "REVNTy1DQU5BUlktNWYyYg=="] {
            assert!(!text.contains(canary), "{name} leaks {canary}");
        }
    }
    for (name, text) in &outputs {
        for canary in [
            "DEMO-CANARY-5f2b",
            "REVNTy1DQU5BUlktNWYyYg==",
            "demo-payment-key-not-real",
            "ZGVtby1wYXltZW50LWtleS1ub3QtcmVhbA==",
            "demo-db-password-not-real",
        ] {
            assert!(!text.contains(canary), "{name} leaks {canary}");
        }
    }
}

/// The state directory holds nothing, or only the released run lock (src/statelock.rs, taken
/// before anything is read).
fn nothing_but_the_lock(state: &std::path::Path) -> bool {
    match std::fs::read_dir(state) {
        Err(_) => true,
        Ok(entries) => entries.map(|e| e.unwrap().file_name()).all(|n| {
            n == "lock"
                && std::fs::read_to_string(state.join("lock"))
                    .unwrap()
                    .is_empty()
        }),
    }
}
