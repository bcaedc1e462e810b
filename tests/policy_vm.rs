//! The compiled policy program against the reference interpreter.
//!
//! `PolicyEngine::classify` runs the default library compiled to regorus' virtual machine;
//! `classify_interpreted` walks the same policies with the tree interpreter (what `policy test`
//! and `policy eval` use). Over a generated matrix of drifts (every provider, kind, drift kind,
//! mode and the field changes the default rules look at) both must give the same verdict,
//! reasons, rules and per-change classes. Then the safeguards: a safe verdict in autocorrect mode
//! is confirmed by the interpreter, and an evaluation error names the policy's file and line.

#[path = "support/common.rs"]
mod common;

use std::path::Path;

use common::{change, kubernetes_id, policy_library, read_json, target_drift};
use driftwarden::model::{Class, Drift, DriftKind, FieldChange, Mode, ResourceId};
use driftwarden::policy::{
    PolicyConfig, PolicyDir, PolicyEngine, PolicyError, Related, RunContext,
};
use serde_json::{Value, json};

fn library() -> PolicyEngine {
    PolicyEngine::load(&policy_library()).expect("the default library loads")
}

fn ctx(mode: Mode, hpa_targets: &[&str]) -> RunContext {
    let mut related = Related::default();
    related
        .hpa_targets
        .extend(hpa_targets.iter().map(|s| s.to_string()));
    RunContext {
        mode,
        time: "2026-11-22T03:15:00Z".into(),
        command: "reconcile".into(),
        related: [("t".to_string(), related)].into(),
    }
}

fn k8s(group: &str, kind: &str, ns: Option<&str>, name: &str) -> ResourceId {
    kubernetes_id("c", group, "v1", kind, ns, name)
}

/// Changes the default library has rules about, per provider.
fn kubernetes_changes() -> Vec<Vec<FieldChange>> {
    vec![
        vec![change("/spec/replicas", json!(2), json!(3))],
        vec![change("/spec/replicas", json!(4), json!(0))],
        vec![change("/spec/replicas", json!(2), json!(9))],
        vec![change(
            "/spec/template/spec/containers/0/image",
            json!("nginx:1.27.3"),
            json!("nginx:1.27.4"),
        )],
        vec![change(
            "/spec/template/spec/containers/0/resources/limits/memory",
            json!("1Gi"),
            json!("2Gi"),
        )],
        vec![change("/metadata/labels/team", json!("a"), json!("b"))],
        vec![change("/metadata/labels/app", json!("a"), json!("b"))],
        vec![change(
            "/metadata/annotations/note",
            Value::Null,
            json!("x"),
        )],
        vec![change(
            "/metadata/labels",
            json!({"team": "a"}),
            json!({"team": "b", "extra": "c"}),
        )],
        vec![change(
            "/spec/template/spec/containers/1/securityContext",
            json!({"allowPrivilegeEscalation": false}),
            json!({"allowPrivilegeEscalation": true, "privileged": true}),
        )],
        vec![change(
            "/spec/template/spec/containers/0/securityContext/capabilities/add",
            Value::Null,
            json!(["NET_ADMIN"]),
        )],
        vec![change(
            "/spec/template/spec/hostNetwork",
            Value::Null,
            json!(true),
        )],
        vec![change(
            "/spec/template/spec/volumes/0",
            Value::Null,
            json!({"name": "root", "hostPath": {"path": "/"}}),
        )],
        vec![change(
            "/rules/0/verbs",
            json!(["get"]),
            json!(["get", "*"]),
        )],
        vec![change(
            "/rules/1",
            Value::Null,
            json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
        )],
        vec![change(
            "/data/password",
            json!("(masked)"),
            json!("(masked)"),
        )],
        vec![change(
            "/spec/template/spec/containers",
            json!([{"name": "app"}]),
            json!([{"name": "app"}, {"name": "debug",
                   "securityContext": {"capabilities": {"add": ["NET_RAW"]}}}]),
        )],
        vec![change(
            "/spec",
            json!({"containers": [{"name": "app"}]}),
            json!({"containers": [{"name": "app",
                   "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}),
        )],
        vec![change("/data/TIMEOUT", json!("800"), json!("2500"))],
        vec![change("/spec/ports/0/port", json!(80), json!(22))],
        vec![
            change("/spec/replicas", json!(2), json!(3)),
            change("/metadata/labels/team", json!("a"), json!("b")),
        ],
        vec![
            change("/spec/replicas", json!(2), json!(3)),
            change(
                "/spec/template/spec/containers/0/image",
                json!("a:1"),
                json!("a:2"),
            ),
        ],
    ]
}

fn aws_changes() -> Vec<Vec<FieldChange>> {
    let rule = |cidr: &str, port: i64| {
        json!({"cidr_blocks": [cidr], "ipv6_cidr_blocks": [], "from_port": port,
               "to_port": port, "protocol": "tcp"})
    };
    vec![
        vec![change("/tags/Owner", json!("a"), json!("b"))],
        vec![change("/tags_all/CostCenter", Value::Null, json!("42"))],
        vec![change(
            "/instance_type",
            json!("t3.micro"),
            json!("t3.large"),
        )],
        vec![change("/ami", json!("ami-1"), json!("ami-2"))],
        vec![change(
            "/root_block_device/0/volume_size",
            json!(8),
            json!(16),
        )],
        vec![change("/size", json!(8), json!(16))],
        vec![change("/iam_instance_profile", json!("a"), json!("b"))],
        vec![change("/ingress/0", Value::Null, rule("0.0.0.0/0", 22))],
        vec![change("/ingress/0", Value::Null, rule("0.0.0.0/0", 443))],
        vec![change("/ingress/0", Value::Null, rule("10.0.0.0/8", 22))],
        vec![change("/ingress/1", Value::Null, rule("::/0", 3389))],
        vec![change("/source_dest_check", json!(true), json!(false))],
        vec![change("/monitoring", json!(true), json!(false))],
    ]
}

fn drift(id: ResourceId, kind: DriftKind, changes: Vec<FieldChange>) -> Drift {
    let obj = json!({"metadata": {"name": "x", "labels": {"app": "x"}}, "spec": {"replicas": 2}});
    Drift {
        desired_object: (kind != DriftKind::Unmanaged).then(|| obj.clone()),
        live_object: (kind != DriftKind::Missing).then_some(obj),
        ..target_drift("t", id, kind, changes)
    }
}

/// Every combination of resource, drift kind and change set.
fn matrix() -> Vec<Drift> {
    let kinds: Vec<ResourceId> = vec![
        k8s("apps", "Deployment", Some("shop"), "web"),
        k8s("apps", "StatefulSet", Some("shop"), "db"),
        k8s("apps", "DaemonSet", Some("kube-system"), "agent"),
        k8s("", "Pod", Some("shop"), "debug"),
        k8s("", "Service", Some("shop"), "web"),
        k8s("", "Secret", Some("shop"), "creds"),
        k8s("", "ConfigMap", Some("shop"), "settings"),
        k8s("networking.k8s.io", "Ingress", Some("shop"), "site"),
        k8s("networking.k8s.io", "NetworkPolicy", Some("shop"), "allow"),
        k8s("rbac.authorization.k8s.io", "ClusterRole", None, "reader"),
        k8s("rbac.authorization.k8s.io", "Role", Some("shop"), "edit"),
        k8s("example.com", "CacheCluster", Some("shop"), "cache"),
    ];
    let aws: Vec<ResourceId> = vec![
        ResourceId::Terraform {
            workspace: "prod".into(),
            address: "aws_instance.web".into(),
        },
        ResourceId::Terraform {
            workspace: "prod".into(),
            address: "aws_security_group.bastion".into(),
        },
        ResourceId::Terraform {
            workspace: "prod".into(),
            address: "module.net.aws_ebs_volume.data[0]".into(),
        },
        ResourceId::Ec2 {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            resource_type: "aws_instance".into(),
            id: "i-0abc".into(),
        },
    ];
    let mut out = Vec::new();
    for id in kinds {
        for changes in kubernetes_changes() {
            out.push(drift(id.clone(), DriftKind::Modified, changes));
        }
        out.push(drift(id.clone(), DriftKind::Missing, vec![]));
        out.push(drift(id, DriftKind::Unmanaged, vec![]));
    }
    for id in aws {
        for changes in aws_changes() {
            out.push(drift(id.clone(), DriftKind::Modified, changes));
        }
        out.push(drift(id.clone(), DriftKind::Missing, vec![]));
        out.push(drift(id, DriftKind::Unmanaged, vec![]));
    }
    // The golden Deployment with its whole desired and live objects.
    let mut golden = drift(
        k8s("apps", "Deployment", Some("shop-drifted"), "storefront"),
        DriftKind::Modified,
        vec![
            change("/spec/replicas", json!(2), json!(5)),
            change(
                "/spec/template/spec/containers/0/image",
                json!("nginx:1.27.3"),
                json!("nginx:1.27.4"),
            ),
            change("/metadata/labels/tier", json!("frontend"), json!("web")),
        ],
    );
    golden.desired_object = Some(read_json(
        "fixtures/policy/objects/deployment-storefront.desired.json",
    ));
    golden.live_object = Some(read_json(
        "fixtures/policy/objects/deployment-storefront.live.json",
    ));
    out.push(golden);
    out
}

#[test]
fn the_default_library_is_compiled() {
    let engine = library();
    assert!(engine.is_compiled(), "{:?}", engine.interpreted_because());
}

#[test]
fn compiled_and_interpreted_verdicts_agree_over_the_matrix() {
    let engine = library();
    assert!(engine.is_compiled());
    let drifts = matrix();
    assert!(drifts.len() > 300, "{}", drifts.len());
    let mut classes = std::collections::BTreeMap::new();
    for mode in [Mode::Observe, Mode::Recommend, Mode::Autocorrect] {
        for hpa in [&[][..], &["Deployment/shop/web", "StatefulSet/shop/db"][..]] {
            let ctx = ctx(mode, hpa);
            let mut compiled = drifts.clone();
            let mut interpreted = drifts.clone();
            engine.classify(&mut compiled, &ctx).expect("compiled");
            engine
                .classify_interpreted(&mut interpreted, &ctx)
                .expect("interpreted");
            for (c, i) in compiled.iter().zip(&interpreted) {
                assert_eq!(c, i, "{} in {mode:?}", c.resource.display);
                let class = c.verdict.as_ref().expect("classified").class;
                *classes.entry(format!("{class:?}")).or_insert(0) += 1;
            }
        }
    }
    // The matrix reaches every class, so agreement is not agreement on one answer.
    for class in ["Safe", "Risky", "Forbidden"] {
        assert!(classes.get(class).copied().unwrap_or(0) > 10, "{classes:?}");
    }
}

#[test]
fn classify_parallel_uses_the_program_too() {
    let engine = library();
    let ctx = ctx(Mode::Recommend, &[]);
    let mut a = matrix();
    let mut b = a.clone();
    engine.classify_parallel(&mut a, &ctx, 3).expect("parallel");
    engine
        .classify_interpreted(&mut b, &ctx)
        .expect("interpreted");
    assert_eq!(a, b);
}

fn write_policy(dir: &Path, text: &str) -> PolicyEngine {
    load_policy(dir, text, false)
}

fn load_policy(dir: &Path, text: &str, strict_builtins: bool) -> PolicyEngine {
    std::fs::write(dir.join("p.rego"), text).expect("write");
    PolicyEngine::load(&PolicyConfig {
        dirs: vec![PolicyDir::new(dir)],
        data_files: vec![],
        strict_builtins,
    })
    .expect("loads")
}

/// A complete rule with two different values is an error in OPA and in the interpreter; the
/// compiled program makes it undefined. A policy whose `safe` finding hangs on the negation of
/// such a rule would then say safe: in autocorrect mode the interpreter's confirmation stops the
/// run instead.
#[test]
fn a_safe_verdict_in_autocorrect_is_confirmed_by_the_interpreter() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = write_policy(
        dir.path(),
        "package driftwarden.p\n\n\
         dangerous := true if input.kind == \"Modified\"\n\n\
         dangerous := false if input.kind == \"Modified\"\n\n\
         classify contains {\"class\": \"safe\", \"reason\": \"harmless\"} if not dangerous\n",
    );
    assert!(engine.is_compiled());
    let d = drift(
        k8s("", "ConfigMap", Some("a"), "b"),
        DriftKind::Modified,
        vec![change("/data/x", json!("1"), json!("2"))],
    );

    let mut auto = vec![d.clone()];
    let err = engine
        .classify(&mut auto, &ctx(Mode::Autocorrect, &[]))
        .expect_err("autocorrect must not act on it");
    assert!(matches!(err, PolicyError::Eval { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("p.rego"), "{msg}");
    assert!(msg.contains("ConfigMap"), "{msg}");

    // The interpreter itself refuses it in every mode.
    let mut reference = vec![d];
    let err = engine
        .classify_interpreted(&mut reference, &ctx(Mode::Recommend, &[]))
        .expect_err("the interpreter reports the conflict");
    assert!(err.to_string().contains("p.rego"), "{err}");
}

/// A builtin that fails at run time (here `count` of a number) reads as undefined, as in OPA's
/// default, but never lets a drift be corrected: the interpreter gives `risky` with the
/// builtin's file and line. The compiled program reads the rule as undefined and says safe; in
/// autocorrect mode the interpreter's confirmation replaces that with its risky verdict.
#[test]
fn a_runtime_error_behind_a_safe_verdict_keeps_autocorrect_from_writing() {
    let policy = "package driftwarden.p\n\n\
         large if count(input.changes[0].live) > 1\n\n\
         classify contains {\"class\": \"safe\", \"reason\": \"small\"} if not large\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = write_policy(dir.path(), policy);
    assert!(engine.is_compiled());
    let d = drift(
        k8s("apps", "Deployment", Some("a"), "b"),
        DriftKind::Modified,
        vec![change("/spec/replicas", json!(1), json!(5))],
    );
    let mut drifts = vec![d.clone()];
    engine
        .classify(&mut drifts, &ctx(Mode::Autocorrect, &[]))
        .expect("classifies");
    let verdict = drifts[0].verdict.clone().expect("classified");
    assert_eq!(verdict.class, Class::Risky, "{verdict:?}");
    assert!(verdict.reasons[0].contains("p.rego:3"), "{verdict:?}");
    assert!(
        verdict.reasons[0].contains("`count` requires"),
        "{verdict:?}"
    );

    let mut drifts = vec![d.clone()];
    engine
        .classify_interpreted(&mut drifts, &ctx(Mode::Recommend, &[]))
        .expect("the builtin error reads as undefined");
    let verdict = drifts[0].verdict.clone().expect("classified");
    assert_eq!(verdict.class, Class::Risky, "{verdict:?}");
    assert!(verdict.reasons[0].contains("p.rego:3"), "{verdict:?}");
    assert_eq!(drifts[0].changes[0].class, Some(Class::Risky));

    // With strict builtins the interpreter refuses it in every mode.
    let strict = load_policy(dir.path(), policy, true);
    let mut drifts = vec![d];
    let err = strict
        .classify_interpreted(&mut drifts, &ctx(Mode::Recommend, &[]))
        .expect_err("strict builtins: an error");
    assert!(err.to_string().contains("p.rego:3"), "{err}");
}

#[test]
fn classes_from_the_program_are_the_documented_ones() {
    let engine = library();
    let ctx = ctx(Mode::Recommend, &[]);
    let cases = [
        (
            k8s("apps", "Deployment", Some("s"), "w"),
            change("/spec/replicas", json!(2), json!(3)),
            Class::Safe,
        ),
        (
            k8s("apps", "Deployment", Some("s"), "w"),
            change(
                "/spec/template/spec/containers/0/image",
                json!("a:1"),
                json!("a:2"),
            ),
            Class::Risky,
        ),
        (
            k8s("apps", "Deployment", Some("s"), "w"),
            change("/spec/template/spec/hostNetwork", Value::Null, json!(true)),
            Class::Forbidden,
        ),
    ];
    for (id, ch, class) in cases {
        let mut d = vec![drift(id, DriftKind::Modified, vec![ch])];
        engine.classify(&mut d, &ctx).expect("classify");
        assert_eq!(d[0].verdict.as_ref().map(|v| v.class), Some(class));
    }
}
