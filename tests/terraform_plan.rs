//! Terraform plan and state input: plan JSON shaped like several Terraform versions' output
//! (0.12 → format 0.1, 0.15 → 0.2, 1.3 → 1.1, 1.9 → 1.2) under fixtures/terraform/, state
//! format 4, and the `desired.terraform` config. A canary planted in every sensitive value and
//! variable must never appear in any output, in any format, or in the logs.

#[path = "support/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{commit_files, outcome, read, write};
use driftwarden::model::{ChangeOp, DriftKind, MASK};
use driftwarden::terraform::plan::{
    self, DriftOptions, PlanAction, PlanError, ReplaceOrder, ResourceMode,
};
use driftwarden::terraform::state::{self, IndexKey, StateError};
use driftwarden::terraform::{KNOWN_AFTER_APPLY, compare};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CANARY: &str = "canary-7f3a9c";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(ROOT).join("fixtures/terraform").join(name)
}

fn driftwarden(dir: &Path, args: &[&str]) -> (i32, String, String) {
    outcome(
        Command::new(env!("CARGO_BIN_EXE_driftwarden"))
            .args(args)
            .current_dir(dir),
    )
}

const PLANS: [&str; 4] = [
    "plan-0.12-format-0.1.json",
    "plan-0.15-format-0.2.json",
    "plan-1.3-format-1.1.json",
    "plan-1.9-format-1.2.json",
];

#[test]
fn every_terraform_version_parses() {
    for name in PLANS {
        let p = plan::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.changes.is_empty(), "{name}");
        assert!(p.terraform_version.is_some(), "{name}");
    }
}

#[test]
fn resource_changes_are_typed_for_the_pull_request_bot() {
    let p = plan::load(&fixture("plan-0.12-format-0.1.json")).unwrap();
    let actions: Vec<(String, PlanAction)> = p
        .changes
        .iter()
        .map(|c| (c.address.clone(), c.action))
        .collect();
    assert_eq!(
        actions,
        [
            ("aws_instance.web".to_string(), PlanAction::Update),
            ("aws_instance.api".to_string(), PlanAction::Create),
            ("aws_eip.old".to_string(), PlanAction::Delete),
            (
                "aws_security_group.web".to_string(),
                PlanAction::Replace(ReplaceOrder::DeleteThenCreate)
            ),
            ("aws_vpc.main".to_string(), PlanAction::NoOp),
        ]
    );
    // 0.12 had no drift section.
    assert!(p.drift.is_empty());
    let api = &p.changes[1];
    assert_eq!(api.after["id"], KNOWN_AFTER_APPLY);
    assert_eq!(api.after["instance_type"], "t3.micro");

    let p = plan::load(&fixture("plan-1.3-format-1.1.json")).unwrap();
    let app = &p.changes[0];
    assert_eq!(app.address, "module.compute.aws_instance.app[\"blue\"]");
    assert_eq!(
        app.previous_address.as_deref(),
        Some("aws_instance.app[\"blue\"]")
    );
    assert_eq!(app.module_address.as_deref(), Some("module.compute"));
    assert_eq!(app.index, Some(Value::String("blue".into())));
    assert_eq!(
        (app.resource_type.as_str(), app.name.as_str()),
        ("aws_instance", "app")
    );
    let worker = &p.changes[1];
    assert_eq!(
        worker.action,
        PlanAction::Replace(ReplaceOrder::DeleteThenCreate)
    );
    assert_eq!(
        worker.action_reason.as_deref(),
        Some("replace_because_tainted")
    );
    assert!(worker.action.deletes());
    let ami = &p.changes[2];
    assert_eq!(
        (ami.mode, ami.action),
        (ResourceMode::Data, PlanAction::Read)
    );
    assert_eq!(
        ami.action_reason.as_deref(),
        Some("read_because_config_unknown")
    );
    assert_eq!(
        p.changes[5].action_reason.as_deref(),
        Some("delete_because_no_resource_config")
    );
    assert_eq!(p.relevant_attributes.len(), 3);

    let p = plan::load(&fixture("plan-1.9-format-1.2.json")).unwrap();
    let by = |addr: &str, deposed: bool| {
        p.changes
            .iter()
            .find(|c| c.address == addr && c.deposed.is_some() == deposed)
            .unwrap()
    };
    assert_eq!(
        by("aws_key_pair.deploy", false).importing.as_deref(),
        Some("deploy")
    );
    assert_eq!(
        by("aws_nat_gateway.legacy", false).action,
        PlanAction::Forget
    );
    let lt = by("aws_launch_template.web", false);
    assert_eq!(
        lt.action,
        PlanAction::Replace(ReplaceOrder::CreateThenDelete)
    );
    assert_eq!(lt.replace_paths, ["/name"]);
    assert_eq!(
        by("aws_launch_template.web", true).deposed.as_deref(),
        Some("00000001")
    );
    let rt = by("aws_route_table.public", false);
    assert_eq!(rt.action, PlanAction::Create);
    assert_eq!(rt.after["id"], KNOWN_AFTER_APPLY);

    // The same changes as drifts, for gating pull requests with the drift policies.
    let drifts = plan::change_drifts(&p, "pr", "default");
    let kinds: Vec<(String, DriftKind)> = drifts
        .iter()
        .map(|d| (d.resource.display.clone(), d.kind))
        .collect();
    assert!(kinds.contains(&("aws_route_table.public".into(), DriftKind::Missing)));
    assert!(kinds.contains(&("aws_nat_gateway.legacy".into(), DriftKind::Unmanaged)));
    assert!(kinds.contains(&("aws_subnet.private[\"a\"]".into(), DriftKind::Modified)));
    assert!(
        !kinds.iter().any(|(d, _)| d == "aws_key_pair.deploy"),
        "no-op"
    );
}

#[test]
fn drift_has_one_change_per_attribute_and_moved_resources_keep_their_new_address() {
    let p = plan::load(&fixture("plan-1.3-format-1.1.json")).unwrap();
    let drifts = plan::plan_drifts(&p, "t", "prod", &DriftOptions::default());
    assert_eq!(drifts.len(), 3);
    let app = drifts
        .iter()
        .find(|d| d.resource.display.starts_with("module.compute"))
        .unwrap();
    assert_eq!(
        app.resource.id.key(),
        "terraform/prod/module.compute.aws_instance.app[\"blue\"]"
    );
    assert!(
        app.resource
            .display
            .contains("moved from aws_instance.app[\"blue\"]")
    );
    let changes: Vec<(&str, ChangeOp, bool)> = app
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.op, c.masked))
        .collect();
    assert_eq!(
        changes,
        [
            ("/instance_type", ChangeOp::Changed, false),
            ("/tags/Owner", ChangeOp::Changed, false),
            ("/user_data", ChangeOp::Changed, true),
        ]
    );
    assert_eq!(app.changes[0].desired, "t3.medium");
    assert_eq!(app.changes[0].live, "t3.large");
    assert_eq!(app.changes[2].desired, MASK);
    assert_eq!(app.provenance.as_ref().unwrap().line, 8);

    // relevant_attributes: the tag change is not something the configuration reads.
    let relevant = plan::plan_drifts(
        &p,
        "t",
        "prod",
        &DriftOptions {
            relevant_only: true,
        },
    );
    let app = relevant
        .iter()
        .find(|d| d.resource.display.starts_with("module.compute"))
        .unwrap();
    let paths: Vec<&str> = app.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/instance_type", "/user_data"]);
    // The volume has no relevant attribute: gone from the filtered report.
    assert_eq!(relevant.len(), 2);

    // A resource deleted outside Terraform is Missing.
    let p = plan::load(&fixture("plan-0.15-format-0.2.json")).unwrap();
    let drifts = plan::plan_drifts(&p, "t", "default", &DriftOptions::default());
    let eip = drifts
        .iter()
        .find(|d| d.resource.display == "aws_eip.gone")
        .unwrap();
    assert_eq!(eip.kind, DriftKind::Missing);
}

#[test]
fn diff_plan_reports_and_classifies_with_the_policies() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = driftwarden(
        dir.path(),
        &[
            "diff",
            "--plan",
            fixture("plan-1.3-format-1.1.json").to_str().unwrap(),
            "--policies",
            &format!("{ROOT}/policies"),
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let class = |display: &str| {
        report["drifts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| {
                d["resource"]["display"]
                    .as_str()
                    .unwrap()
                    .starts_with(display)
            })
            .map(|d| d["verdict"]["class"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(class("aws_security_group.web"), "forbidden");
    assert_eq!(class("aws_ebs_volume.data[0]"), "risky");
    assert_eq!(class("module.compute.aws_instance.app"), "risky");
    let (code, out, _) = driftwarden(
        dir.path(),
        &[
            "diff",
            "--plan",
            fixture("plan-0.15-format-0.2.json").to_str().unwrap(),
            "--policies",
            &format!("{ROOT}/policies"),
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 2);
    let report: Value = serde_json::from_str(&out).unwrap();
    let web = report["drifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["resource"]["display"] == "aws_instance.web")
        .unwrap();
    assert_eq!(web["verdict"]["class"], "safe", "{web:#}");
    let paths: Vec<&str> = web["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["/tags/Name", "/tags_all/Name"]);

    // A plan without drift is in sync.
    let (code, _, err) = driftwarden(
        dir.path(),
        &[
            "diff",
            "--plan",
            fixture("plan-0.12-format-0.1.json").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn sensitive_canary_never_leaves() {
    let dir = tempfile::tempdir().unwrap();
    for name in PLANS {
        for format in ["table", "json", "markdown", "sarif", "junit"] {
            let (code, out, err) = driftwarden(
                dir.path(),
                &[
                    "--log-level",
                    "trace",
                    "--log-format",
                    "json",
                    "diff",
                    "--plan",
                    fixture(name).to_str().unwrap(),
                    "--policies",
                    &format!("{ROOT}/policies"),
                    "-o",
                    format,
                    "--color",
                    "always",
                ],
            );
            assert!(code == 0 || code == 2, "{name} {format}: {err}");
            assert!(!out.contains(CANARY), "{name} {format} stdout:\n{out}");
            assert!(!err.contains(CANARY), "{name} {format} logs:\n{err}");
        }
    }
    // The library values and their Debug forms are masked too.
    for name in PLANS {
        let p = plan::load(&fixture(name)).unwrap();
        let debug = format!("{p:?}");
        assert!(!debug.contains(CANARY), "{name}");
        let drifts = plan::plan_drifts(&p, "t", "default", &DriftOptions::default());
        let json = serde_json::to_string(&drifts).unwrap();
        assert!(!json.contains(CANARY), "{name}");
        assert!(!format!("{drifts:?}").contains(CANARY), "{name}");
        let changes = plan::change_drifts(&p, "t", "default");
        assert!(!format!("{changes:?}").contains(CANARY), "{name}");
    }
    let s = state::load(&fixture("state-v4.tfstate")).unwrap();
    assert!(!format!("{s:?}").contains(CANARY));
    assert_eq!(s.instances[0].attributes()["user_data"], MASK);
}

#[test]
fn bad_plans_exit_3_with_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let path = fixture(name);
        let (code, out, err) = driftwarden(dir.path(), &["diff", "--plan", path.to_str().unwrap()]);
        assert_eq!(code, 3, "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: nothing is reported: {out}");
        err
    };
    let err = run("plan-truncated.json");
    assert!(err.contains("plan-truncated.json:269:"), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let err = run("plan-errored.json");
    assert!(err.contains("errored"), "{err}");
    let err = run("plan-format-2.0.json");
    assert!(err.contains("format version 2.0 is not supported"), "{err}");

    // The library says the same with typed errors.
    assert!(matches!(
        plan::load(&fixture("plan-truncated.json")),
        Err(PlanError::Json { line: 269, .. })
    ));
    assert!(matches!(
        plan::load(&fixture("plan-errored.json")),
        Err(PlanError::Errored { .. })
    ));
}

#[test]
fn state_v4_modules_count_for_each_and_versions() {
    let s = state::load(&fixture("state-v4.tfstate")).unwrap();
    assert_eq!(s.terraform_version, "1.5.7");
    assert_eq!(s.serial, 41);
    let addrs: Vec<&str> = s.instances.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(
        addrs,
        [
            "aws_instance.web[0]",
            "aws_instance.web[1]",
            "module.network.aws_subnet.private[\"eu-west-1a\"]",
            "module.network.aws_subnet.private[\"eu-west-1b\"]",
            "module.network.module.nat.aws_nat_gateway.this",
        ],
        "data sources and deposed objects are left out"
    );
    assert_eq!(s.instances[0].index, Some(IndexKey::Int(0)));
    assert_eq!(
        s.instances[2].index,
        Some(IndexKey::Str("eu-west-1a".into()))
    );
    assert_eq!(s.instances[2].schema_version, 1);
    assert_eq!(
        s.instances[4].module.as_deref(),
        Some("module.network.module.nat")
    );
    assert!(s.instances[0].is_sensitive("/user_data"));
    assert!(s.instances[0].line > 1);

    assert!(matches!(
        state::load(&fixture("state-v3.tfstate")),
        Err(StateError::UnsupportedVersion { .. })
    ));
}

#[test]
fn terraform_targets_in_config() {
    let dir = tempfile::tempdir().unwrap();
    let plan = fixture("plan-1.3-format-1.1.json");
    // A plan-only target needs no live source: the plan's refresh saw live.
    write(
        dir.path(),
        "ok.yaml",
        &format!(
            "policies: {{dirs: [{ROOT}/policies]}}\ntargets:\n  - name: infra\n    desired:\n      terraform:\n        plan: {}\n        workspace: prod\n        relevant_attributes_only: true\n",
            plan.display()
        ),
    );
    let (code, out, err) = driftwarden(dir.path(), &["validate", "-c", "ok.yaml"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = driftwarden(dir.path(), &["diff", "-c", "ok.yaml", "-o", "json"]);
    assert_eq!(code, 2, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["summary"]["drifted"], 2, "relevant attributes only");
    assert_eq!(report["drifts"][0]["resource"]["workspace"], "prod");

    // Every problem at once, each with its line.
    write(
        dir.path(),
        "bad.yaml",
        "targets:\n  - name: a\n    desired:\n      terraform: {state: s.tfstate, plna: p.json}\n    live:\n      ec2: {regions: [us-east-1], endpont: http://x}\n  - name: b\n    desired: {dir: x}\n    live:\n      ec2: {regions: [US_EAST]}\n  - name: c\n    desired:\n      terraform: {state: s.tfstate}\n    live: {snapshot: snap}\n  - name: d\n    desired: {dir: x}\n    live:\n      ec2: {regions: [us-east-1]}\n",
    );
    let (code, _, err) = driftwarden(dir.path(), &["validate", "-c", "bad.yaml"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("bad.yaml:4:"), "{err}");
    assert!(
        err.contains("unknown key `plna` (did you mean `plan`?)"),
        "{err}"
    );
    assert!(err.contains("bad.yaml:6:"), "{err}");
    assert!(err.contains("`endpont`"), "{err}");
    assert!(err.contains("is not a region name"), "{err}");
    assert!(err.contains("give `desired.terraform`"), "{err}");
    assert!(err.contains("compared with `ec2`"), "{err}");

    // A state target with a bad state file stops with exit 3 before any live call.
    write(
        dir.path(),
        "old.yaml",
        &format!(
            "targets:\n  - name: old\n    desired:\n      terraform: {{state: {}}}\n    live:\n      ec2: {{regions: [us-east-1], endpoint: 'http://127.0.0.1:9', max_attempts: 1}}\n",
            fixture("state-v3.tfstate").display()
        ),
    );
    let (code, _, err) = driftwarden(dir.path(), &["diff", "-c", "old.yaml"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("state format version 3 is not supported"),
        "{err}"
    );
}

#[test]
fn state_and_plan_are_read_from_git_at_a_ref() {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path().join("infra")).unwrap();
    let work = dir.path().join("infra");
    let plan = read(&fixture("plan-0.15-format-0.2.json"));
    let commit = commit_files(&repo, &[("envs/prod/plan.json", &plan)], "plan");
    // The working copy changes afterwards; the ref is what counts.
    std::fs::write(work.join("envs/prod/plan.json"), "{").unwrap();
    write(
        dir.path(),
        "git.yaml",
        &format!(
            "targets:\n  - name: infra\n    desired:\n      git: {{repo: infra, ref: '{commit}'}}\n      terraform: {{plan: envs/prod/plan.json}}\n"
        ),
    );
    let (code, out, err) = driftwarden(dir.path(), &["diff", "-c", "git.yaml", "-o", "json"]);
    assert_eq!(code, 2, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let d = &report["drifts"][0];
    assert_eq!(d["provenance"]["file"], "envs/prod/plan.json");
    assert_eq!(d["provenance"]["commit"], commit.to_string());

    write(
        dir.path(),
        "missing.yaml",
        "targets:\n  - name: infra\n    desired:\n      git: {repo: infra}\n      terraform: {plan: envs/staging/plan.json}\n",
    );
    let (code, _, err) = driftwarden(dir.path(), &["diff", "-c", "missing.yaml"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("envs/staging/plan.json does not exist"),
        "{err}"
    );
}

#[test]
fn ignore_patterns_follow_driftignore() {
    let list = compare::IgnoreList::parse([
        "# generated by hand",
        "aws_instance.i-0abc*",
        "module.legacy.*",
        "!aws_instance.i-0abcKEEP",
        "",
    ])
    .unwrap();
    assert!(list.ignores(&["aws_instance.i-0abc123"]));
    assert!(!list.ignores(&["aws_instance.i-0abcKEEP"]));
    assert!(list.ignores(&["aws_vpc.vpc-1", "module.legacy.aws_vpc.main"]));
    assert!(!list.ignores(&["aws_vpc.vpc-1"]));
    let err = compare::IgnoreList::parse(["ok", "bad[pattern"]).unwrap_err();
    assert_eq!(err.0, 2);
}
