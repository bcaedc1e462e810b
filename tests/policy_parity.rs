//! Rego parity with OPA (docs/policy.md, "Differences from OPA"): each known difference between
//! regorus 0.14.1 and OPA 1.7 as a minimal policy written for this project, with the counts
//! `opa test` gives for it (noted next to each case), or the load-time refusal with file and line.
//! Everything runs on the real regorus engine, through the library and through the binary.

#[path = "support/common.rs"]
mod common;
#[path = "support/kube_server.rs"]
mod kube_server;

use std::path::Path;

use common::write;
use driftwarden::model::{Class, DriftKind, Mode};
use driftwarden::policy::{
    PolicyConfig, PolicyDir, PolicyEngine, PolicyError, RunContext, TestReport, eval_file,
    render_test_report, run_tests,
};
use kube_server::KubeServer;
use serde_json::json;

fn config(dir: &Path, strict_builtins: bool) -> PolicyConfig {
    PolicyConfig {
        dirs: vec![PolicyDir::new(dir)],
        data_files: vec![],
        strict_builtins,
    }
}

/// `policy test` on a directory holding `files`.
fn test_files(files: &[(&str, &str)], strict_builtins: bool) -> TestReport {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    run_tests(&config(dir.path(), strict_builtins), None).expect("loads")
}

fn counts(r: &TestReport) -> (usize, usize) {
    (r.passed, r.failed)
}

fn outcome<'a>(r: &'a TestReport, name: &str) -> &'a driftwarden::policy::TestOutcome {
    r.outcomes
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no test {name} in {r:?}"))
}

fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<PolicyEngine, PolicyError>) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        write(dir.path(), name, text);
    }
    let r = PolicyEngine::load(&config(dir.path(), false));
    (dir, r)
}

fn refusal(files: &[(&str, &str)]) -> String {
    match load(files).1 {
        Err(e @ PolicyError::Refused(_)) => e.to_string(),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, the policies loaded"),
    }
}

// 1. Same-named tests: each definition runs and is reported, named like OPA.

#[test]
fn same_named_tests_run_and_report_separately() {
    // opa test: data.p.test_a PASS, data.p.test_a#01 FAIL; 1 passed, 1 failed.
    let r = test_files(
        &[(
            "p_test.rego",
            "package p\n\ntest_a if { true }\n\ntest_a if { false }\n",
        )],
        false,
    );
    assert_eq!(counts(&r), (1, 1), "{r:?}");
    assert!(outcome(&r, "data.p.test_a").passed);
    let second = outcome(&r, "data.p.test_a#01");
    assert!(!second.passed);
    assert_eq!(second.error.as_deref(), Some("result was undefined"));
    let text = render_test_report(&r, true);
    assert!(text.contains("data.p.test_a: PASS\n"), "{text}");
    assert!(text.contains("data.p.test_a#01: FAIL\n"), "{text}");
    assert!(text.ends_with("\n1 passed, 1 failed\n"), "{text}");

    // A third definition, in another file of the package, is #02.
    let r = test_files(
        &[
            (
                "a_test.rego",
                "package p\n\ntest_a if { true }\n\ntest_a if { 1 == 1 }\n",
            ),
            ("b_test.rego", "package p\n\ntest_a if { 1 == 2 }\n"),
        ],
        false,
    );
    assert_eq!(counts(&r), (2, 1), "{r:?}");
    assert!(!outcome(&r, "data.p.test_a#02").passed);
}

#[test]
fn policy_test_prints_same_named_tests_like_opa() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "p_test.rego",
        "package p\n\ntest_a if { true }\n\ntest_a if { false }\n",
    );
    let out = common::run(common::bin().args(["policy", "test", "-v"]).arg(dir.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("data.p.test_a: PASS"), "{stdout}");
    assert!(stdout.contains("data.p.test_a#01: FAIL"), "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some("1 passed, 1 failed"),
        "{stdout}"
    );
}

// 2. Builtin errors: undefined by default, like OPA; an error with --strict-builtins.

const BUILTIN_ERROR_TEST: &str = "package p\n\n\
    f(x) if object.get(x, \"a\", false)\n\n\
    test_not_on_null if { not f(null) }\n";

#[test]
fn builtin_errors_are_undefined_by_default_and_errors_when_strict() {
    // opa test: 1 passed, 0 failed (object.get on null is undefined inside `not`).
    let r = test_files(&[("p_test.rego", BUILTIN_ERROR_TEST)], false);
    assert_eq!(counts(&r), (1, 0), "{r:?}");

    let r = test_files(&[("p_test.rego", BUILTIN_ERROR_TEST)], true);
    assert_eq!(counts(&r), (0, 1), "{r:?}");
    let error = r.outcomes[0].error.clone().unwrap_or_default();
    assert!(error.contains("object.get"), "{error}");
    assert!(error.contains("p_test.rego:3"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p_test.rego", BUILTIN_ERROR_TEST);
    let lax = common::run(common::bin().args(["policy", "test"]).arg(dir.path()));
    assert_eq!(lax.status.code(), Some(0));
    let strict = common::run(
        common::bin()
            .args(["policy", "test", "--strict-builtins"])
            .arg(dir.path()),
    );
    assert_eq!(strict.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&strict.stdout).ends_with("0 passed, 1 failed\n"),
        "{}",
        String::from_utf8_lossy(&strict.stdout)
    );
}

/// A `safe` finding that holds only because a `forbidden` check failed on a builtin error: OPA's
/// default reads the error as undefined, so the safe finding stands; driftwarden keeps the
/// drift risky (fail safe), and with strict builtins stops with the file and line.
const FAILSAFE_POLICY: &str = "package driftwarden.p\n\n\
    privileged if object.get(input.live.spec, \"privileged\", false)\n\n\
    classify contains {\"class\": \"forbidden\", \"reason\": \"privileged\"} if privileged\n\n\
    classify contains {\"class\": \"safe\", \"reason\": \"harmless\"} if not privileged\n";

#[test]
fn a_builtin_error_never_makes_a_drift_safe() {
    let input = json!({
        "schema_version": "1", "provider": "kubernetes", "kind": "Modified",
        "resource": {"display": "Pod shop/a"},
        "live": {"spec": null},
        "changes": [{"path": "/spec", "desired": {}, "live": null}]
    });
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "p.rego", FAILSAFE_POLICY);
    let input_file = write(dir.path(), "input/doc.json", &input.to_string());
    let policies = dir.path().join("p.rego");

    let answer = eval_file(&input_file, &config(&policies, false)).expect("evaluates");
    assert_eq!(answer["class"], "risky", "{answer}");
    assert_eq!(answer["changes"][0]["class"], "risky", "{answer}");
    let reason = answer["reasons"][0].as_str().unwrap_or_default();
    assert!(reason.contains("never safe"), "{reason}");
    assert!(reason.contains("p.rego:3"), "{reason}");

    let err = eval_file(&input_file, &config(&policies, true)).expect_err("strict");
    assert!(err.to_string().contains("p.rego:3"), "{err}");

    // The same through classification in autocorrect mode, where a safe verdict is written:
    // the compiled program reads the failing rule as undefined (safe), the interpreter's
    // confirmation keeps the drift risky.
    let engine = PolicyEngine::load(&config(&policies, false)).expect("loads");
    assert!(engine.is_compiled());
    let ctx = RunContext {
        mode: Mode::Autocorrect,
        ..RunContext::default()
    };
    let mut drift = common::drift(
        common::k8s_id("", "Pod", Some("shop"), "a"),
        DriftKind::Modified,
        vec![common::change("/spec", json!({}), serde_json::Value::Null)],
    );
    drift.live_object = Some(json!({"spec": null}));
    for interpreted in [false, true] {
        let mut drifts = vec![drift.clone()];
        if interpreted {
            engine.classify_interpreted(&mut drifts, &ctx)
        } else {
            engine.classify(&mut drifts, &ctx)
        }
        .expect("classifies");
        let v = drifts[0].verdict.clone().expect("classified");
        assert_eq!(v.class, Class::Risky, "{v:?}");
        assert!(v.reasons[0].contains("p.rego:3"), "{v:?}");
    }

    // With strict builtins the policies run on the interpreter, which stops on the error.
    let strict = PolicyEngine::load(&config(&policies, true)).expect("loads");
    assert!(!strict.is_compiled());
    let err = strict
        .classify(&mut [drift], &ctx)
        .expect_err("strict builtins: an error");
    assert!(err.to_string().contains("p.rego:3"), "{err}");
}

#[test]
fn strict_builtins_is_a_config_key_and_a_run_flag() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "policies/p.rego", FAILSAFE_POLICY);
    write(
        dir.path(),
        "desired/pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nspec: {containers: [{name: c, image: x}]}\n",
    );
    write(
        dir.path(),
        "live/pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\nspec: null\n",
    );
    let base = "targets:\n  - name: t\n    desired: {dir: desired}\n    live: {snapshot: live}\n";
    let lax = write(
        dir.path(),
        "lax.yaml",
        &format!("policies:\n  dirs: [policies]\n{base}"),
    );
    let strict = write(
        dir.path(),
        "strict.yaml",
        &format!("policies:\n  dirs: [policies]\n  strict_builtins: true\n{base}"),
    );
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!("policies:\n  dirs: [policies]\n  strict_builtins: maybe\n{base}"),
    );
    let run = |cfg: &Path, extra: &[&str]| {
        common::run(
            common::bin()
                .current_dir(dir.path())
                .args(["diff", "--config"])
                .arg(cfg)
                .args(extra),
        )
    };
    let out = run(&lax, &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = run(&lax, &["--strict-builtins"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("p.rego:3"),
        "{out:?}"
    );
    let out = run(&strict, &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = run(&bad, &[]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("policies.strict_builtins"), "{stderr}");
    assert!(stderr.contains("bad.yaml:3"), "{stderr}");
}

// 3. Data files: every JSON and YAML file under the directory, at the path of its directory.

#[test]
fn data_files_load_at_the_path_of_their_directory() {
    let files = [
        ("top.yaml", "t: 2\n"),
        ("a/b/x.json", "{\"k\": 1}"),
        ("a/b/more.yml", "m: [1, 2]\n"),
        ("c/list.json", "[1, 2, 3]"),
        ("notes.txt", "not data"),
        (
            "p_test.rego",
            "package p\n\n\
             test_root if data.t == 2\n\n\
             test_nested if { data.a.b.k == 1; data.a.b.m == [1, 2] }\n\n\
             test_not_an_object if count(data.c) == 3\n",
        ),
    ];
    // opa test: 3 passed, 0 failed.
    let r = test_files(&files, false);
    assert_eq!(counts(&r), (3, 0), "{r:?}");

    // policy eval and classification see the same data.
    let classifier = "package driftwarden.p\n\n\
        classify contains {\"class\": \"safe\", \"reason\": data.a.b.reason} if data.a.b.k == 1\n";
    let (dir, engine) = load(&[
        ("a/b/x.json", "{\"k\": 1, \"reason\": \"from a/b/x.json\"}"),
        ("p.rego", classifier),
    ]);
    let engine = engine.expect("loads");
    let v = engine
        .evaluate(&json!({"kind": "Modified", "changes": []}))
        .expect("evaluates");
    assert_eq!(v.reasons, vec!["from a/b/x.json".to_string()]);
    let input = write(
        dir.path(),
        "in.json",
        "{\"kind\": \"Modified\", \"changes\": []}",
    );
    let answer = eval_file(&input, &config(dir.path(), false)).expect("evaluates");
    assert_eq!(answer["reasons"][0], "from a/b/x.json", "{answer}");

    // A document at the root must be an object; two documents may not disagree.
    let (_, r) = load(&[("list.json", "[1]"), ("p.rego", "package p\n")]);
    assert!(matches!(r, Err(PolicyError::Data { .. })), "{r:?}");
    let (_, r) = load(&[
        ("a.json", "{\"x\": 1}"),
        ("b.json", "{\"x\": 2}"),
        ("p.rego", "package p\n"),
    ]);
    assert!(matches!(r, Err(PolicyError::Data { .. })), "{r:?}");
}

// 4. A line starting with `(` after a line ending in a reference is a new expression.

#[test]
fn a_paren_line_after_a_reference_is_a_second_expression() {
    // opa test: 1 passed, 0 failed.
    let r = test_files(
        &[(
            "p_test.rego",
            "package p\n\ntest_two_expressions if {\n\tx := {\"a\": true}\n\tx.a\n\t(1 + 1) == 2\n}\n",
        )],
        false,
    );
    assert_eq!(counts(&r), (1, 0), "{r:?}");

    // Same line, separated by a space: OPA does not parse it; regorus would call `count`.
    let msg = refusal(&[("p.rego", "package p\n\nx := count ([1])\n")]);
    assert!(msg.contains("p.rego:3:12"), "{msg}");
    assert!(msg.contains("count("), "{msg}");
}

// 5. Known regorus 0.14.1 divergences.

#[test]
fn sprintf_formats_missing_and_extra_arguments_like_opa() {
    // opa test: 2 passed, 0 failed.
    let r = test_files(
        &[(
            "p_test.rego",
            "package p\n\n\
             test_missing if sprintf(\"%v %v\", [1]) == \"1 %!v(MISSING)\"\n\n\
             test_extra if sprintf(\"%v\", [1, \"x\"]) == \"1%!(EXTRA string=x)\"\n",
        )],
        false,
    );
    assert_eq!(counts(&r), (2, 0), "{r:?}");

    // The compiled program has regorus' own sprintf: a library whose sprintf calls cannot all
    // be checked at load time stays on the interpreter, which has OPA's.
    let checked = "package driftwarden.p\n\n\
        classify contains {\"class\": \"risky\", \"reason\": sprintf(\"%v changed\", [input.kind])} if true\n";
    let (_, engine) = load(&[("p.rego", checked)]);
    assert!(engine.expect("loads").is_compiled());
    let unchecked = "package driftwarden.p\n\n\
        classify contains {\"class\": \"risky\", \"reason\": sprintf(\"%v %v\", [input.kind])} if true\n";
    let (_, engine) = load(&[("p.rego", unchecked)]);
    let engine = engine.expect("loads");
    assert!(!engine.is_compiled());
    assert!(
        engine
            .interpreted_because()
            .unwrap_or_default()
            .contains("p.rego:3"),
        "{:?}",
        engine.interpreted_because()
    );
    let v = engine
        .evaluate(&json!({"kind": "Modified", "changes": []}))
        .expect("evaluates");
    assert_eq!(v.reasons, vec!["Modified %!v(MISSING)".to_string()]);
}

#[test]
fn v0_rules_with_several_bodies_are_refused() {
    let v0 = |text: &str| {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "p.rego", text);
        PolicyEngine::load(&PolicyConfig {
            dirs: vec![PolicyDir::v0(dir.path())],
            data_files: vec![],
            strict_builtins: false,
        })
        .map(|_| ())
        .map_err(|e| e.to_string())
    };
    let set = v0("package p\n\ns[x] { x := 1 } { x := 2 }\n").expect_err("refused");
    assert!(set.contains("p.rego:3"), "{set}");
    assert!(set.contains("OPA reads it as one rule per body"), "{set}");
    assert!(set.contains("Write instead"), "{set}");

    let func = v0("package p\n\nf(x) = y { x == 1; y := \"a\" } { x == 2; y := \"b\" }\n")
        .expect_err("refused");
    assert!(func.contains("p.rego:3"), "{func}");
    assert!(func.contains("one rule per body"), "{func}");
    let complete = v0("package p\n\nq = 5 { input.a == 1 }\n{ true }\n").expect_err("refused");
    assert!(complete.contains("p.rego:4"), "{complete}");

    // With `else` the bodies are alternatives, read alike by both.
    v0("package p\n\nq = 5 { input.a == 1 } else = 6 { true }\n").expect("loads");
}

#[test]
fn with_on_a_rule_of_the_same_package_is_refused() {
    // A function replaced with `with` is read alike: opa test 1 passed, 0 failed.
    let r = test_files(
        &[(
            "p_test.rego",
            "package p\n\nf(_) := 1\n\ng(_) := 7\n\ntest_mock if { f(1) == 7 with f as g }\n",
        )],
        false,
    );
    assert_eq!(counts(&r), (1, 0), "{r:?}");

    let msg = refusal(&[(
        "p.rego",
        "package p\n\nr := 1\n\nt if {\n\tr == 7 with r as 7\n}\n",
    )]);
    assert!(msg.contains("p.rego:6:17"), "{msg}");
    assert!(msg.contains("with data.<package>.r as"), "{msg}");
    // The full path works in both.
    let (_, engine) = load(&[(
        "p.rego",
        "package p\n\nr := 1\n\nt if {\n\tr == 7 with data.p.r as 7\n}\n",
    )]);
    engine.expect("loads");
}

#[test]
fn a_negated_call_on_an_undefined_reference_is_undefined() {
    // opa test: test_direct FAIL (undefined), test_through_a_rule PASS; 1 passed, 1 failed.
    let r = test_files(
        &[(
            "p_test.rego",
            "package p\n\n\
             f(x) if x == 1\n\n\
             t if not f(input.missing)\n\n\
             test_direct if { not f(input.missing) }\n\n\
             test_through_a_rule if { not t }\n\n\
             test_defined if { not f(input.a) with input as {\"a\": 2} }\n",
        )],
        false,
    );
    assert_eq!(counts(&r), (2, 1), "{r:?}");
    assert!(!outcome(&r, "data.p.test_direct").passed);
    // `==` is unification for OPA: its references stay inside the negation; `!=` and `in` are
    // calls. opa test: test_eq PASS, test_neq FAIL, test_in FAIL; 1 passed, 2 failed.
    let ops = test_files(
        &[(
            "p_test.rego",
            "package p\n\n\
             test_eq if { not input.missing == 1 }\n\n\
             test_neq if { not input.missing != 1 }\n\n\
             test_in if { not input.missing in {1} }\n",
        )],
        false,
    );
    assert_eq!(counts(&ops), (1, 2), "{ops:?}");
    assert!(outcome(&ops, "data.p.test_eq").passed);
    assert!(outcome(&r, "data.p.test_through_a_rule").passed);
    assert!(outcome(&r, "data.p.test_defined").passed);

    // A wildcard in the argument iterates outside the negation in OPA: refused.
    let msg = refusal(&[(
        "p.rego",
        "package p\n\nf(x) if x == 1\n\nt if {\n\tnot f(input.xs[_])\n}\n",
    )]);
    assert!(msg.contains("p.rego:6"), "{msg}");
}

#[test]
fn refused_constructs_are_failed_tests_in_policy_test() {
    let r = test_files(
        &[
            (
                "p.rego",
                "package p\n\nr := 1\n\nt if {\n\tr == 7 with r as 7\n}\n",
            ),
            ("p_test.rego", "package p\n\ntest_ok if true\n"),
        ],
        false,
    );
    assert_eq!(counts(&r), (1, 1), "{r:?}");
    let failed = r.outcomes.iter().find(|o| !o.passed).expect("a failure");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("p.rego:6:17"), "{error}");
    assert!(error.contains("OPA replaces the rule"), "{error}");
    let text = render_test_report(&r, false);
    assert!(text.ends_with("\n1 passed, 1 failed\n"), "{text}");
}

#[test]
fn policy_eval_exits_3_on_a_refused_construct() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "policies/p.rego",
        "package driftwarden.p\n\nr := 1\n\nclassify contains {\"class\": \"safe\", \"reason\": \"x\"} if {\n\tr == 7 with r as 7\n}\n",
    );
    let input = write(
        dir.path(),
        "in.json",
        "{\"kind\": \"Modified\", \"changes\": []}",
    );
    let out = common::run(
        common::bin()
            .args(["policy", "eval", "--input"])
            .arg(&input)
            .arg("--policies")
            .arg(dir.path().join("policies")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("p.rego:6:17"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// A run whose policy directory holds a refused construct stops before anything is read or
/// acted on: exit 3, the file and line on stderr, and no request reached the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_refused_construct_stops_before_reading_anything() {
    let dir = tempfile::tempdir().unwrap();
    let server = KubeServer::start().await;
    let kubeconfig = server.write_kubeconfig(dir.path());
    write(
        dir.path(),
        "policies/p.rego",
        "package driftwarden.p\n\nr := 1\n\nclassify contains {\"class\": \"safe\", \"reason\": \"x\"} if {\n\tr == 7 with r as 7\n}\n",
    );
    write(
        dir.path(),
        "desired/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: shop}\ndata: {k: v}\n",
    );
    let cfg = write(
        dir.path(),
        "driftwarden.yaml",
        &format!(
            "version: 1\npolicies:\n  dirs: [policies]\nstate_dir: state\ntargets:\n  - name: shop\n    mode: autocorrect\n    cluster: test\n    namespace: shop\n    desired: {{dir: desired}}\n    live:\n      kubernetes: {{kubeconfig: {}}}\n",
            kubeconfig.display()
        ),
    );
    let root = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        common::run(
            common::bin()
                .current_dir(&root)
                .args(["reconcile", "--config"])
                .arg(&cfg),
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("p.rego:6:17"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    // Nothing under the state directory but the released run lock (src/statelock.rs).
    let state = dir.path().join("state");
    if let Ok(entries) = std::fs::read_dir(&state) {
        let names: Vec<_> = entries.map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("lock")]);
        assert_eq!(std::fs::read_to_string(state.join("lock")).unwrap(), "");
    }
}
