//! Policy classification end to end: the real regorus engine on the real default library
//! (`policies/`), real conftest policies (`fixtures/policy/conftest*`), and broken policies written
//! to temp dirs.
//!
//! The throughput benchmark is `cargo bench --bench policy` (docs/performance.md);
//! `cargo test --test policy -- --ignored regenerate_input_fixtures` rewrites
//! `fixtures/policy/inputs/*.json` from the drifts built here.

#[path = "support/common.rs"]
mod common;

use std::sync::OnceLock;

use common::{change, k8s_id, policy_library as library, read_json, root};
use driftwarden::model::{Attribution, Class, Drift, DriftKind, FieldChange, Mode, ResourceId};
use driftwarden::policy::{
    DEFAULT_REASON, DEFAULT_RULE, PolicyConfig, PolicyDir, PolicyEngine, PolicyError, Related,
    RunContext, eval_file, policy_input, render_test_report, run_tests, run_tests_with_coverage,
};
use serde_json::{Value, json};

fn engine() -> &'static PolicyEngine {
    static ENGINE: OnceLock<PolicyEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PolicyEngine::load(&library()).expect("default library loads"))
}

fn ctx() -> RunContext {
    RunContext {
        mode: Mode::Recommend,
        time: "2026-11-22T03:15:00Z".into(),
        command: "reconcile".into(),
        ..RunContext::default()
    }
}

fn drift(
    id: ResourceId,
    kind: DriftKind,
    changes: Vec<FieldChange>,
    desired: Option<Value>,
    live: Option<Value>,
) -> Drift {
    Drift {
        desired_object: desired,
        live_object: live,
        ..common::drift(id, kind, changes)
    }
}

fn tf_id(address: &str) -> ResourceId {
    ResourceId::Terraform {
        workspace: "prod".into(),
        address: address.into(),
    }
}

/// The golden Deployment `storefront`, drifted by `kubectl scale`, `set image` and `label`
/// (`fixtures/golden/live-drifted/EXPECTED.md` findings 1–3).
fn storefront() -> Drift {
    let mut image = change(
        "/spec/template/spec/containers/0/image",
        json!("nginx:1.27.3"),
        json!("nginx:1.27.4"),
    );
    image.attribution = Some(Attribution {
        manager: "kubectl-set".into(),
        operation: "Update".into(),
        time: Some("2026-11-22T02:59:01Z".into()),
        subresource: None,
    });
    drift(
        k8s_id("apps", "Deployment", Some("shop-drifted"), "storefront"),
        DriftKind::Modified,
        vec![
            change("/spec/replicas", json!(2), json!(5)),
            image,
            change("/metadata/labels/tier", json!("frontend"), json!("web")),
        ],
        Some(read_json(
            "fixtures/policy/objects/deployment-storefront.desired.json",
        )),
        Some(read_json(
            "fixtures/policy/objects/deployment-storefront.live.json",
        )),
    )
}

fn with_hpa(ctx: &mut RunContext) {
    let hpa = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "storefront", "namespace": "shop-drifted"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "storefront"}}
    });
    ctx.related
        .insert("demo".into(), Related::from_objects([&hpa]));
}

fn classify_one(d: Drift, ctx: &RunContext) -> Drift {
    let mut drifts = vec![d];
    engine().classify(&mut drifts, ctx).expect("classify");
    drifts.remove(0)
}

fn classes(d: &Drift) -> Vec<Class> {
    d.changes
        .iter()
        .map(|c| c.class.expect("classified"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The default library's own tests.

#[test]
fn default_library_tests_all_pass_and_cover_every_rule() {
    let report = run_tests(&library(), None).expect("load");
    let text = render_test_report(&report, true);
    assert_eq!(report.failed, 0, "{text}");
    assert!(
        text.ends_with(&format!("\n{} passed, 0 failed\n", report.passed))
            || text == format!("{} passed, 0 failed\n", report.passed)
    );

    // Every rule name a finding carries appears in some test's assertions.
    let mut rules = Vec::new();
    let mut tests = String::new();
    for entry in std::fs::read_dir(root().join("policies")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        if name.ends_with("_test.rego") {
            tests.push_str(&text);
        } else if name.ends_with(".rego") {
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("\"rule\": \"") {
                    rules.push(rest.trim_end_matches("\",").to_string());
                }
            }
        }
    }
    assert!(rules.len() >= 25, "rules found: {rules:?}");
    assert!(
        report.passed > rules.len(),
        "{} tests for {} rules",
        report.passed,
        rules.len()
    );
    for rule in &rules {
        assert!(
            tests.contains(&format!("\"{rule}\"")),
            "rule {rule} has no test asserting it"
        );
    }
}

#[test]
fn test_filter_and_coverage() {
    let report = run_tests(&library(), Some("aws_test.test_ami")).unwrap();
    assert_eq!((report.passed, report.failed), (1, 0));
    assert_eq!(
        report.outcomes[0].name,
        "data.driftwarden.aws_test.test_ami_is_risky"
    );
    assert!(report.outcomes[0].file.ends_with("aws_test.rego"));

    let (report, coverage) = run_tests_with_coverage(&library(), None).unwrap();
    assert_eq!(report.failed, 0);
    let aws = coverage
        .iter()
        .find(|f| f.file.ends_with("policies/aws.rego"))
        .expect("aws.rego covered");
    assert!(aws.percent() > 80.0, "{aws:?}");
    assert!(coverage.iter().all(|f| !f.file.ends_with("_test.rego")));
}

#[test]
fn failing_tests_are_counted_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t_test.rego"),
        "package t\n\ntest_true if true\n\ntest_false if false\n\ntest_undefined if input.nothing\n\nhelper := 1\n",
    )
    .unwrap();
    let report = run_tests(&dir_config(dir.path()), None).unwrap();
    assert_eq!((report.passed, report.failed), (1, 2));
    let text = render_test_report(&report, false);
    assert!(text.contains("data.t.test_false: FAIL"), "{text}");
    assert!(text.contains("result was undefined"), "{text}");
    assert!(!text.contains("test_true"), "{text}");
    assert!(text.ends_with("\n1 passed, 2 failed\n"), "{text}");
}

/// The binary, run from the repository root.
/// One Rego v1 policy directory, nothing else.
fn dir_config(path: impl Into<std::path::PathBuf>) -> PolicyConfig {
    PolicyConfig {
        dirs: vec![PolicyDir::new(path)],
        data_files: vec![],
        strict_builtins: false,
    }
}

fn driftwarden(args: &[&str]) -> std::process::Output {
    common::run(common::bin().args(args))
}

#[test]
fn policy_test_coverage_prints_each_file_after_the_results() {
    let out = driftwarden(&["policy", "test", "policies/", "--coverage"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (results, coverage) = stdout
        .split_once("\ncoverage:\n")
        .expect("a coverage section after the results");
    let report = run_tests(&library(), None).unwrap();
    assert_eq!(
        results,
        format!("{} passed, 0 failed\n", report.passed),
        "the results come first, unchanged"
    );

    // The same figures as the library computes, for real files, and no test file.
    let (_, files) = run_tests_with_coverage(&dir_config("policies/"), None).unwrap();
    let lines: Vec<&str> = coverage.lines().collect();
    assert_eq!(lines.len(), files.len() + 1, "{coverage}");
    let sec = files
        .iter()
        .find(|f| f.file.ends_with("kubernetes_security.rego"))
        .expect("kubernetes_security.rego is covered");
    let tracked = sec.covered.len() + sec.not_covered.len();
    assert!(tracked > 50 && sec.percent() > 80.0, "{sec:?}");
    let line = format!(
        "{}: {:.1}% ({}/{} lines)",
        sec.file,
        sec.percent(),
        sec.covered.len(),
        tracked
    );
    assert!(
        lines.iter().any(|l| l.starts_with(&line)),
        "{line} not in\n{coverage}"
    );
    assert!(
        lines.iter().all(|l| !l.contains("_test.rego")),
        "{coverage}"
    );
    let covered: usize = files.iter().map(|f| f.covered.len()).sum();
    let tracked: usize = files
        .iter()
        .map(|f| f.covered.len() + f.not_covered.len())
        .sum();
    let total = lines.last().unwrap();
    assert!(
        total.starts_with("total: ") && total.ends_with(&format!(" ({covered}/{tracked} lines)")),
        "{total}"
    );

    // Without the flag, nothing but the results.
    let out = driftwarden(&["policy", "test", "policies/"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("coverage"));
}

// ---------------------------------------------------------------------------------------------
// Classification of drifts, one per class.

#[test]
fn golden_storefront_is_risky_with_per_field_classes() {
    let mut ctx = ctx();
    with_hpa(&mut ctx);
    let d = classify_one(storefront(), &ctx);
    let v = d.verdict.as_ref().unwrap();
    assert_eq!(v.class, Class::Risky);
    assert_eq!(
        v.rules,
        vec!["kubernetes.replicas_under_hpa", "kubernetes.image"]
    );
    assert_eq!(classes(&d), vec![Class::Risky, Class::Risky, Class::Safe]);
}

#[test]
fn replicas_without_an_hpa_and_a_plain_label_are_safe() {
    let mut d = storefront();
    d.changes.remove(1); // drop the image change
    let d = classify_one(d, &ctx());
    let v = d.verdict.unwrap();
    assert_eq!(v.class, Class::Safe, "{v:?}");
    assert_eq!(
        v.rules,
        vec![
            "kubernetes.replicas_without_hpa",
            "kubernetes.unprotected_label"
        ]
    );
    assert_eq!(
        v.reasons[0],
        "replica count changed by hand and no HorizontalPodAutoscaler manages it"
    );
}

#[test]
fn privileged_container_is_forbidden() {
    let mut d = storefront();
    d.changes = vec![change(
        "/spec/template/spec/containers/0/securityContext/privileged",
        Value::Null,
        json!(true),
    )];
    let d = classify_one(d, &ctx());
    let v = d.verdict.unwrap();
    assert_eq!(v.class, Class::Forbidden);
    assert_eq!(v.rules, vec!["kubernetes_security.privileged"]);
    assert_eq!(v.reasons, vec!["a container was made privileged"]);
}

#[test]
fn unclassified_drift_is_risky_by_default() {
    let d = drift(
        k8s_id("", "ConfigMap", Some("shop"), "storefront-config"),
        DriftKind::Modified,
        vec![change("/data/LOG_LEVEL", json!("info"), json!("debug"))],
        None,
        None,
    );
    let d = classify_one(d, &ctx());
    let v = d.verdict.as_ref().unwrap();
    assert_eq!(v.class, Class::Risky);
    assert_eq!(v.reasons, vec![DEFAULT_REASON]);
    assert_eq!(v.rules, vec![DEFAULT_RULE]);
    assert_eq!(classes(&d), vec![Class::Risky]);

    // An engine with no policies at all: still risky, never safe.
    let dir = tempfile::tempdir().unwrap();
    let empty = PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new(dir.path())],
        data_files: vec![],
        strict_builtins: false,
    })
    .unwrap();
    let v = empty.evaluate(&json!({"changes": []})).unwrap();
    assert_eq!(
        (v.class, v.rules),
        (Class::Risky, vec![DEFAULT_RULE.into()])
    );
}

#[test]
fn one_unclassified_change_keeps_a_safe_drift_risky() {
    let mut d = storefront();
    d.changes = vec![
        change("/metadata/labels/tier", json!("frontend"), json!("web")),
        change("/spec/minReadySeconds", json!(0), json!(10)),
    ];
    let d = classify_one(d, &ctx());
    let v = d.verdict.as_ref().unwrap();
    assert_eq!(v.class, Class::Risky);
    assert_eq!(
        v.reasons,
        vec!["no rule classified the change at /spec/minReadySeconds"]
    );
    assert_eq!(v.rules, vec![DEFAULT_RULE]);
    assert_eq!(classes(&d), vec![Class::Safe, Class::Risky]);
}

#[test]
fn masked_secret_missing_and_unmanaged_are_risky() {
    let mut secret_change = change("/data/API_KEY", json!("(masked)"), json!("(masked)"));
    secret_change.masked = true;
    let secret = drift(
        k8s_id("", "Secret", Some("shop"), "storefront-secrets"),
        DriftKind::Modified,
        vec![secret_change],
        None,
        None,
    );
    let missing = drift(
        k8s_id("", "Service", Some("shop"), "storefront-nodeport"),
        DriftKind::Missing,
        vec![],
        Some(json!({"apiVersion": "v1", "kind": "Service"})),
        None,
    );
    let unmanaged = drift(
        tf_id("aws_instance.stray"),
        DriftKind::Unmanaged,
        vec![],
        None,
        Some(json!({"instance_type": "t3.micro"})),
    );
    let mut drifts = vec![secret, missing, unmanaged];
    engine().classify(&mut drifts, &ctx()).unwrap();
    let rules: Vec<Vec<String>> = drifts
        .iter()
        .map(|d| d.verdict.as_ref().unwrap().rules.clone())
        .collect();
    assert!(
        drifts
            .iter()
            .all(|d| d.verdict.as_ref().unwrap().class == Class::Risky)
    );
    assert_eq!(
        rules,
        vec![
            vec![
                "kubernetes.secret_content".to_string(),
                "lifecycle.masked_value".to_string()
            ],
            vec!["lifecycle.missing".to_string()],
            vec!["lifecycle.unmanaged".to_string()],
        ]
    );
}

#[test]
fn terraform_tags_safe_instance_type_risky_public_ssh_forbidden() {
    let tags = drift(
        tf_id("aws_instance.web"),
        DriftKind::Modified,
        vec![change("/tags/Owner", json!("web-team"), json!("bob"))],
        Some(json!({"tags": {"Owner": "web-team"}})),
        Some(json!({"tags": {"Owner": "bob"}})),
    );
    let resize = drift(
        tf_id("module.app.aws_instance.web[0]"),
        DriftKind::Modified,
        vec![change(
            "/instance_type",
            json!("t3.small"),
            json!("m5.large"),
        )],
        None,
        None,
    );
    let https =
        json!({"cidr_blocks": ["0.0.0.0/0"], "from_port": 443, "to_port": 443, "protocol": "tcp"});
    let ssh =
        json!({"cidr_blocks": ["0.0.0.0/0"], "from_port": 22, "to_port": 22, "protocol": "tcp"});
    let sg = drift(
        tf_id("aws_security_group.web"),
        DriftKind::Modified,
        vec![change(
            "/ingress",
            json!([https.clone()]),
            json!([https.clone(), ssh.clone()]),
        )],
        Some(json!({"ingress": [https.clone()]})),
        Some(json!({"ingress": [https, ssh]})),
    );
    let ec2 = drift(
        ResourceId::Ec2 {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            resource_type: "instance".into(),
            id: "i-0abc".into(),
        },
        DriftKind::Modified,
        vec![change("/Tags/0/Value", json!("web"), json!("web-old"))],
        Some(json!({"Tags": [{"Key": "Name", "Value": "web"}]})),
        Some(json!({"Tags": [{"Key": "Name", "Value": "web-old"}]})),
    );
    let mut drifts = vec![tags, resize, sg, ec2];
    engine().classify(&mut drifts, &ctx()).unwrap();
    let got: Vec<(Class, Vec<String>)> = drifts
        .iter()
        .map(|d| {
            let v = d.verdict.as_ref().unwrap();
            (v.class, v.rules.clone())
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Class::Safe, vec!["aws.unprotected_tag".to_string()]),
            (Class::Risky, vec!["aws.instance_type".to_string()]),
            (Class::Forbidden, vec!["aws.public_ingress".to_string()]),
            (Class::Safe, vec!["aws.unprotected_tag".to_string()]),
        ]
    );
    assert_eq!(
        drifts[2].verdict.as_ref().unwrap().reasons,
        vec!["security group ingress open to 0.0.0.0/0 on port 22/tcp"]
    );
}

#[test]
fn evaluate_on_the_input_document_agrees_with_classify() {
    let mut ctx = ctx();
    with_hpa(&mut ctx);
    let d = storefront();
    let input = policy_input(&d, &ctx);
    assert_eq!(input["schema_version"], "1");
    let v = engine().evaluate(&input).unwrap();
    let classified = classify_one(d, &ctx);
    assert_eq!(Some(v), classified.verdict);
}

// ---------------------------------------------------------------------------------------------
// Failures stop the run with a precise error.

fn load_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<PolicyEngine, PolicyError>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let r = PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new(dir.path())],
        data_files: vec![],
        strict_builtins: false,
    });
    (dir, r)
}

#[test]
fn syntax_error_names_file_and_line() {
    let (_dir, r) = load_dir(&[
        (
            "good.rego",
            "package driftwarden.good\n\nclassify contains {\"class\": \"safe\", \"reason\": \"x\"} if false\n",
        ),
        (
            "broken.rego",
            "package driftwarden.broken\n\nclassify contains f if {\n\tf := := {\"class\": \"safe\"}\n}\n",
        ),
    ]);
    let err = r.unwrap_err();
    let msg = err.to_string();
    match &err {
        PolicyError::Compile { file, line, .. } => {
            assert!(file.ends_with("broken.rego"), "{msg}");
            assert_eq!(*line, 4, "{msg}");
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
    assert!(msg.starts_with("policy "), "{msg}");
    assert!(msg.contains("broken.rego:"), "{msg}");
}

#[test]
fn v0_syntax_in_a_v1_directory_is_a_compile_error() {
    let (_dir, r) = load_dir(&[(
        "old.rego",
        "package main\n\ndeny[msg] {\n\tmsg := \"x\"\n}\n",
    )]);
    match r.unwrap_err() {
        PolicyError::Compile { file, line, .. } => {
            assert!(file.ends_with("old.rego"));
            assert_eq!(line, 3);
        }
        other => panic!("expected a compile error, got {other:?}"),
    }
}

#[test]
fn unsafe_variable_is_an_error() {
    let (_dir, r) = load_dir(&[(
        "unsafe.rego",
        "package driftwarden.unsafe\n\nclassify contains x if {\n\ty := 1\n}\n",
    )]);
    let err = match r {
        Err(e) => e,
        Ok(engine) => engine.evaluate(&json!({})).unwrap_err(),
    };
    println!("{err}");
    assert!(err.to_string().contains("unsafe.rego"), "{err}");
}

#[test]
fn missing_builtin_names_file_line_and_function() {
    let (_dir, r) = load_dir(&[(
        "net.rego",
        "package driftwarden.net\n\nclassify contains {\"class\": \"forbidden\", \"reason\": \"overlap\"} if {\n\tsome c in input.live.cidrs\n\tnet.cidr_intersects(c, \"10.0.0.0/8\")\n}\n",
    )]);
    let err = r.unwrap_err();
    match &err {
        PolicyError::MissingBuiltin {
            file, line, name, ..
        } => {
            assert!(file.ends_with("net.rego"));
            assert_eq!(*line, 5);
            assert_eq!(name, "net.cidr_intersects");
        }
        other => panic!("expected a missing builtin, got {other:?}"),
    }
    assert!(err.to_string().contains("regorus 0.14.1"), "{err}");
}

#[test]
fn user_functions_imports_and_builtins_are_not_missing() {
    let (_dir, r) = load_dir(&[
        (
            "helpers.rego",
            "package driftwarden.helpers\n\nis_big(n) if n > 10\n",
        ),
        (
            "uses.rego",
            "package driftwarden.uses\n\nimport data.driftwarden.helpers\n\nlocal(x) := upper(x)\n\nclassify contains {\"class\": \"risky\", \"reason\": local(\"big\")} if {\n\thelpers.is_big(input.n)\n\tnet.cidr_contains(\"10.0.0.0/8\", \"10.1.2.3\")\n\tdata.driftwarden.helpers.is_big(11) == true\n\tprint(\"ok\")\n}\n",
        ),
    ]);
    let engine = r.expect("loads");
    let v = engine.evaluate(&json!({"n": 11})).unwrap();
    assert_eq!(v.class, Class::Risky);
    assert_eq!(v.reasons, vec!["BIG"]);
}

#[test]
fn malformed_verdict_is_an_error() {
    let (_dir, r) = load_dir(&[(
        "verdict.rego",
        "package driftwarden\n\nverdict := {\"class\": \"maybe\"}\n",
    )]);
    let engine = r.unwrap();
    let mut drifts = vec![storefront()];
    let err = engine.classify(&mut drifts, &ctx()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PolicyError::Malformed { .. }), "{err:?}");
    assert!(msg.contains("data.driftwarden.verdict"), "{msg}");
    assert!(msg.contains("verdict.rego"), "{msg}");
    assert!(msg.contains("\"maybe\""), "{msg}");
}

#[test]
fn a_whole_verdict_rule_works() {
    let (_dir, r) = load_dir(&[(
        "verdict.rego",
        "package driftwarden\n\nverdict := {\"class\": \"forbidden\", \"reasons\": [\"freeze\"], \"rules\": [\"org.freeze\"]} if input.context.mode == \"recommend\"\n",
    )]);
    let engine = r.unwrap();
    let v = engine
        .evaluate(&json!({"context": {"mode": "recommend"}}))
        .unwrap();
    assert_eq!(
        (v.class, v.reasons, v.rules),
        (
            Class::Forbidden,
            vec!["freeze".into()],
            vec!["org.freeze".into()]
        )
    );
}

#[test]
fn malformed_finding_is_an_error() {
    for (body, expect) in [
        ("{\"class\": \"maybe\", \"reason\": \"x\"}", "\"maybe\""),
        ("{\"class\": \"safe\"}", "`reason` is missing"),
        (
            "{\"class\": \"safe\", \"reason\": \"x\", \"why\": 1}",
            "unknown key `why`",
        ),
        ("\"safe\"", "must be an object"),
    ] {
        let (_dir, r) = load_dir(&[(
            "bad.rego",
            &format!("package driftwarden.bad\n\nclassify contains {body} if true\n"),
        )]);
        let err = r.unwrap().evaluate(&json!({})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("data.driftwarden.bad.classify"), "{msg}");
        assert!(msg.contains("bad.rego"), "{msg}");
        assert!(msg.contains(expect), "{msg}");
    }
    let (_dir, r) = load_dir(&[(
        "obj.rego",
        "package driftwarden.obj\n\nclassify := {\"class\": \"safe\", \"reason\": \"x\"}\n",
    )]);
    let msg = r.unwrap().evaluate(&json!({})).unwrap_err().to_string();
    assert!(msg.contains("classify must be a set of findings"), "{msg}");
}

#[test]
fn evaluation_error_is_an_error() {
    let (_dir, r) = load_dir(&[(
        "conflict.rego",
        "package driftwarden.conflict\n\nlevel := 1 if input.a\n\nlevel := 2 if input.a\n\nclassify contains {\"class\": \"safe\", \"reason\": \"x\"} if level == 1\n",
    )]);
    let err = r.unwrap().evaluate(&json!({"a": true})).unwrap_err();
    assert!(matches!(err, PolicyError::Eval { .. }), "{err:?}");
    assert!(err.to_string().contains("conflict.rego"), "{err}");
}

#[test]
fn missing_directory_and_bad_data_are_errors() {
    let err = PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new("/nonexistent/policies")],
        data_files: vec![],
        strict_builtins: false,
    })
    .unwrap_err();
    assert!(matches!(err, PolicyError::MissingDir(_)), "{err:?}");

    let (_dir, r) = load_dir(&[("data.json", "{\"driftwarden\": {\"config\": [1,}}")]);
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("data.json") && msg.contains("line 1"), "{msg}");
}

// ---------------------------------------------------------------------------------------------
// conftest policies load and evaluate unchanged.

fn conftest_config() -> PolicyConfig {
    PolicyConfig {
        dirs: vec![
            PolicyDir::new(root().join("fixtures/policy/conftest")),
            PolicyDir::v0(root().join("fixtures/policy/conftest_v0")),
        ],
        data_files: vec![],
        strict_builtins: false,
    }
}

#[test]
fn conftest_kubernetes_policies_v1_and_v0() {
    let out = eval_file(
        &root().join("fixtures/policy/inputs/deployment.yaml"),
        &conftest_config(),
    )
    .unwrap();
    assert_eq!(
        out["main"]["deny"],
        json!([
            "Deployment web: containers must not run as root",
            "Deployment web: image docker.io/library/busybox:latest is not from ghcr.io/example/"
        ])
    );
    assert_eq!(
        out["main"]["warn"],
        json!(["Deployment web: container debug has no memory limit"])
    );
    assert_eq!(
        out["kubernetes.legacy"]["deny"],
        json!(["container debug uses the latest tag"])
    );
    assert_eq!(
        out["kubernetes.legacy"]["violation"],
        json!([{"msg": "Deployment must run at least 2 replicas"}])
    );
    assert_eq!(out["terraform"]["deny"], json!([]));
}

#[test]
fn conftest_terraform_plan_policy() {
    let out = eval_file(
        &root().join("fixtures/policy/inputs/tfplan.json"),
        &PolicyConfig {
            dirs: vec![PolicyDir::new(root().join("fixtures/policy/conftest"))],
            data_files: vec![],
            strict_builtins: false,
        },
    )
    .unwrap();
    assert_eq!(
        out["terraform"]["deny"],
        json!([
            "aws_instance.web has no Owner tag",
            "aws_security_group.bastion opens SSH to the internet"
        ])
    );
}

#[test]
fn v0_policies_need_their_directory_marked_v0() {
    let err = PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new(root().join("fixtures/policy/conftest_v0"))],
        data_files: vec![],
        strict_builtins: false,
    })
    .unwrap_err();
    assert!(err.to_string().contains("conftest_v0/k8s.rego:"), "{err}");
}

#[test]
fn policy_eval_exits_like_conftest() {
    // `policy eval --input INPUT REST...`: (exit code, stdout, stderr).
    let eval = |input: &str, rest: &[&str]| {
        let out = driftwarden(&[&["policy", "eval", "--input", input], rest].concat());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    const DEPLOYMENT: &str = "fixtures/policy/inputs/deployment.yaml";
    // deny and warn messages: the failures fail, with or without --fail-on-warn (2 then).
    let deploy = ["-p", "fixtures/policy/conftest"];
    let (status, stdout, stderr) = eval(DEPLOYMENT, &deploy);
    assert_eq!(status, Some(1), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["main"]["deny"].as_array().map(Vec::len), Some(2));
    assert!(
        stderr.contains("policy eval: 2 failures, 1 warning"),
        "{stderr}"
    );
    let (status, ..) = eval(DEPLOYMENT, &[&deploy[..], &["--fail-on-warn"]].concat());
    assert_eq!(status, Some(2));

    // violation (v0) fails the same way.
    let (status, stdout, _) = eval(
        DEPLOYMENT,
        &["-p", "fixtures/policy/conftest_v0", "--rego-v0"],
    );
    assert_eq!(status, Some(1), "{stdout}");
    assert!(stdout.contains("Deployment must run at least 2 replicas"));

    // warn alone passes, unless --fail-on-warn.
    let dir = tempfile::tempdir().unwrap();
    let warn_only = dir.path().join("deployment.yaml");
    let text = std::fs::read_to_string(root().join(DEPLOYMENT))
        .unwrap()
        .replace(
            "docker.io/library/busybox:latest",
            "ghcr.io/example/busybox:1.36",
        )
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      securityContext: {runAsNonRoot: true}\n      containers:",
        );
    std::fs::write(&warn_only, text).unwrap();
    let warn_only = warn_only.to_str().unwrap();
    let (status, stdout, stderr) = eval(warn_only, &deploy);
    assert_eq!(status, Some(0), "{stdout}{stderr}");
    let answer: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(answer["main"]["deny"], json!([]));
    assert_eq!(
        answer["main"]["warn"],
        json!(["Deployment web: container debug has no memory limit"])
    );
    let (status, ..) = eval(warn_only, &[&deploy[..], &["--fail-on-warn"]].concat());
    assert_eq!(status, Some(1));

    // Nothing found: 0. A verdict of any class is an answer, not a failure: 0.
    let (status, stdout, _) = eval(
        DEPLOYMENT,
        &[
            "-p",
            "fixtures/policy/conftest/terraform.rego",
            "--fail-on-warn",
        ],
    );
    assert_eq!(status, Some(0), "{stdout}");
    let (status, stdout, _) = eval("fixtures/policy/inputs/privileged.forbidden.json", &[]);
    assert_eq!(status, Some(0), "{stdout}");
    assert!(stdout.contains("\"forbidden\""), "{stdout}");

    // Bad input and bad policies stay exit 3.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed\n").unwrap();
    let (status, _, stderr) = eval(bad.to_str().unwrap(), &deploy);
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    let (status, _, stderr) = eval(DEPLOYMENT, &["-p", "fixtures/policy/conftest_v0"]);
    assert_eq!(status, Some(3), "{stderr}");
    assert!(stderr.contains("k8s.rego:"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// `policy eval` on the input documents shipped in fixtures/policy/inputs.

/// The drifts behind `fixtures/policy/inputs/<name>.<class>.json`.
fn input_fixtures() -> Vec<(&'static str, Drift, RunContext)> {
    let mut hpa_ctx = ctx();
    with_hpa(&mut hpa_ctx);

    let mut privileged = storefront();
    privileged.live_object = None;
    privileged.desired_object = None;
    privileged.changes = vec![change(
        "/spec/template/spec/containers/1/securityContext",
        json!({"allowPrivilegeEscalation": false}),
        json!({"allowPrivilegeEscalation": true, "privileged": true}),
    )];
    let mut ingress = drift(
        k8s_id("networking.k8s.io", "Ingress", Some("shop"), "bookstore"),
        DriftKind::Modified,
        vec![change(
            "/metadata/labels/team",
            json!("storefront"),
            json!("sre"),
        )],
        None,
        None,
    );
    ingress.changes[0].attribution = Some(Attribution {
        manager: "kubectl-label".into(),
        operation: "Update".into(),
        time: Some("2026-11-21T03:09:12Z".into()),
        subresource: None,
    });
    let configmap = drift(
        k8s_id("", "ConfigMap", Some("shop"), "bookstore-config"),
        DriftKind::Modified,
        vec![change(
            "/data/SEARCH_TIMEOUT_MS",
            json!("800"),
            json!("2500"),
        )],
        None,
        None,
    );
    let ssh = json!({"cidr_blocks": ["0.0.0.0/0"], "ipv6_cidr_blocks": [], "from_port": 22, "to_port": 22, "protocol": "tcp"});
    let sg = drift(
        tf_id("aws_security_group.bastion"),
        DriftKind::Modified,
        vec![change("/ingress/0", Value::Null, ssh.clone())],
        Some(json!({"name": "bastion", "ingress": []})),
        Some(json!({"name": "bastion", "ingress": [ssh]})),
    );
    vec![
        ("storefront.risky", storefront(), hpa_ctx),
        ("ingress-label.safe", ingress, ctx()),
        ("configmap.risky", configmap, ctx()),
        ("privileged.forbidden", privileged, ctx()),
        ("security-group.forbidden", sg, ctx()),
    ]
}

#[test]
fn shipped_input_documents_evaluate_to_their_class() {
    let dir = root().join("fixtures/policy/inputs");
    let mut seen = 0;
    for (name, _, _) in input_fixtures() {
        let path = dir.join(format!("{name}.json"));
        let out = eval_file(&path, &library()).unwrap();
        let class = name.rsplit('.').next().unwrap();
        assert_eq!(out["class"], class, "{name}: {out}");
        assert!(out["changes"].as_array().is_some_and(|c| !c.is_empty()));
        seen += 1;
    }
    assert_eq!(seen, 5);
}

/// The input documents classification builds are exactly the shipped ones: every field, every
/// value, every introduced node (object key order aside, which JSON leaves free).
#[test]
fn input_documents_match_the_shipped_fixtures() {
    for (name, d, ctx) in input_fixtures() {
        let mut input = policy_input(&d, &ctx);
        if let Some(m) = input.pointer_mut("/live/metadata") {
            m.as_object_mut().unwrap().remove("managedFields");
        }
        let path = root().join(format!("fixtures/policy/inputs/{name}.json"));
        let shipped: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(input, shipped, "{name}");
    }
}

#[test]
#[ignore = "rewrites fixtures/policy/inputs/*.json"]
fn regenerate_input_fixtures() {
    for (name, d, ctx) in input_fixtures() {
        let mut input = policy_input(&d, &ctx);
        // Keep the fixtures readable: managedFields say nothing to the default library.
        if let Some(m) = input.pointer_mut("/live/metadata") {
            m.as_object_mut().unwrap().remove("managedFields");
        }
        let text = serde_json::to_string_pretty(&input).unwrap() + "\n";
        std::fs::write(
            root().join(format!("fixtures/policy/inputs/{name}.json")),
            text,
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Throughput.

#[test]
fn engine_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
}

#[test]
fn parallel_classification_matches_sequential() {
    let mut ctx = ctx();
    with_hpa(&mut ctx);
    let fixtures: Vec<Drift> = input_fixtures().into_iter().map(|(_, d, _)| d).collect();
    let mut a: Vec<Drift> = (0..23)
        .map(|i| fixtures[i % fixtures.len()].clone())
        .collect();
    let mut b = a.clone();
    engine().classify(&mut a, &ctx).unwrap();
    engine().classify_parallel(&mut b, &ctx, 4).unwrap();
    assert_eq!(a, b);
    assert!(b.iter().all(|d| d.verdict.is_some()));
}
