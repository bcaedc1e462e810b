//! The reports people and machines read: table, JSON and Markdown rendered from hand-built
//! reports, compared against the snapshots in tests/snapshots/ (rewrite them with
//! `DRIFTWARDEN_UPDATE_SNAPSHOTS=1 cargo test --test report`, then review the diff).

#[path = "support/common.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::{drift, field_change as change, kubernetes_id};
use driftwarden::model::{
    Action, ActionRecord, ActionResult, Attribution, ChangeOp, Class, Drift, DriftKind, MASK,
    Provenance, Report, ResourceId, SourceError, Verdict,
};
use driftwarden::report::{Format, RenderOptions, render};
use serde_json::{Value, json};

/// Planted only where no renderer may look: the whole objects (`#[serde(skip)]`).
const CANARY: &str = "CANARY-7c1e-never-rendered";

const COMMIT: &str = "3f9c2a1d8e7b6c5a4f3e2d1c0b9a8f7e6d5c4b3a";

fn k8s(group: &str, version: &str, kind: &str, name: &str) -> ResourceId {
    kubernetes_id("demo", group, version, kind, Some("shop"), name)
}

fn by(manager: &str, time: Option<&str>, subresource: Option<&str>) -> Option<Attribution> {
    Some(Attribution {
        manager: manager.into(),
        operation: "Update".into(),
        time: time.map(Into::into),
        subresource: subresource.map(Into::into),
    })
}

fn provenance(file: &str, line: usize) -> Option<Provenance> {
    Some(Provenance {
        source: "https://github.com/example/bookstore-deploy".into(),
        file: file.into(),
        line,
        commit: Some(COMMIT.into()),
    })
}

fn verdict(class: Class, reasons: &[&str], rules: &[&str]) -> Option<Verdict> {
    Some(Verdict {
        class,
        reasons: reasons.iter().map(|s| s.to_string()).collect(),
        rules: rules.iter().map(|s| s.to_string()).collect(),
        remedies: Default::default(),
    })
}

fn action(action: Action, result: ActionResult, detail: Option<&str>) -> Option<ActionRecord> {
    Some(ActionRecord {
        action,
        result,
        detail: detail.map(Into::into),
    })
}

/// A Deployment scaled and re-imaged by hand, classified and planned.
fn deployment() -> Drift {
    let mut replicas = change("/spec/replicas", ChangeOp::Changed, json!(3), json!(6));
    replicas.attribution = by("kubectl", None, Some("scale"));
    replicas.class = Some(Class::Risky);
    let mut image = change(
        "/spec/template/spec/containers/0/image",
        ChangeOp::Changed,
        json!("ghcr.io/example/bookstore-web:2.4.1"),
        json!("ghcr.io/example/bookstore-web:2.4.2-hotfix1"),
    );
    image.attribution = by("kubectl-set", Some("2026-11-21T02:47:10Z"), None);
    image.class = Some(Class::Risky);
    let mut d = drift(
        k8s("apps", "v1", "Deployment", "bookstore-web"),
        DriftKind::Modified,
        vec![replicas, image],
    );
    d.provenance = provenance("deploy/bookstore/web.yaml", 7);
    d.verdict = verdict(
        Class::Risky,
        &[
            "replicas changed outside Git",
            "container image changed outside Git",
        ],
        &[
            "driftwarden.kubernetes.replicas_changed",
            "driftwarden.kubernetes.image_changed",
        ],
    );
    d.action = action(
        Action::PullRequest,
        ActionResult::Planned,
        Some("would open driftwarden/drift-bookstore-web"),
    );
    d.desired_object = Some(json!({"kind": "Deployment", "note": CANARY}));
    d
}

/// A ConfigMap edited by hand: multi-line text and a value with a pipe.
fn configmap() -> Drift {
    let mut timeout = change(
        "/data/SEARCH_TIMEOUT_MS",
        ChangeOp::Changed,
        json!("800"),
        json!("2500"),
    );
    timeout.attribution = by("kubectl-edit", Some("2026-11-21T03:05:44Z"), None);
    let mut props = change(
        "/data/app.properties",
        ChangeOp::Changed,
        json!("catalog.page-size=24\nsearch.filter=a|b\n"),
        json!("catalog.page-size=48\nsearch.filter=a|b\n"),
    );
    props.attribution = by("kubectl-edit", Some("2026-11-21T03:05:44Z"), None);
    let removed = change(
        "/data/FEATURE_WISHLIST",
        ChangeOp::MissingLive,
        json!("true"),
        Value::Null,
    );
    let mut d = drift(
        k8s("", "v1", "ConfigMap", "bookstore-config"),
        DriftKind::Modified,
        vec![timeout, props, removed],
    );
    d.provenance = provenance("deploy/bookstore/config.yaml", 4);
    d.verdict = verdict(
        Class::Safe,
        &["configuration drift is corrected from Git"],
        &["driftwarden.kubernetes.config_safe"],
    );
    d.action = action(
        Action::Correct,
        ActionResult::Done,
        Some("re-read: in sync"),
    );
    d
}

/// A Secret value patched by hand: masked on both sides.
fn secret() -> Drift {
    let mut key = change(
        "/data/PAYMENT_API_KEY",
        ChangeOp::Changed,
        json!(MASK),
        json!(MASK),
    );
    key.masked = true;
    key.attribution = by("kubectl-patch", Some("2026-11-21T03:12:09Z"), None);
    let mut d = drift(
        k8s("", "v1", "Secret", "bookstore-secrets"),
        DriftKind::Modified,
        vec![key],
    );
    d.provenance = provenance("deploy/bookstore/config.yaml", 21);
    d.verdict = verdict(
        Class::Forbidden,
        &["secret values are never adopted into Git"],
        &["driftwarden.kubernetes.secret_changed"],
    );
    d.action = action(
        Action::Issue,
        ActionResult::Planned,
        Some("masked diff only"),
    );
    d.desired_object = Some(json!({"data": {"PAYMENT_API_KEY": CANARY}}));
    d.live_object = Some(json!({"data": {"PAYMENT_API_KEY": CANARY}}));
    d
}

/// A Service deleted by hand.
fn service() -> Drift {
    let mut d = drift(
        k8s("", "v1", "Service", "bookstore-web"),
        DriftKind::Missing,
        Vec::new(),
    );
    d.provenance = provenance("deploy/bookstore/web.yaml", 88);
    d.verdict = verdict(
        Class::Safe,
        &["a missing object is recreated from Git"],
        &["driftwarden.kubernetes.missing"],
    );
    d.action = action(
        Action::Skip {
            why: "correction budget of 25% reached".into(),
        },
        ActionResult::Skipped,
        None,
    );
    d
}

/// A ConfigMap created by hand with the tracking label, not in Git; no policy ran.
fn unmanaged() -> Drift {
    let live = json!({
        "metadata": {"labels": {"app.kubernetes.io/managed-by": "driftwarden"}},
        "data": {"PROMO_BANNER": "on", "empty": ""}
    });
    drift(
        k8s("", "v1", "ConfigMap", "bookstore-hotfix-flags"),
        DriftKind::Unmanaged,
        vec![change("", ChangeOp::ExtraLive, Value::Null, live)],
    )
}

fn ignored() -> BTreeMap<String, usize> {
    BTreeMap::from([
        ("hpa-owns-replicas".to_string(), 1),
        ("istio-sidecar".to_string(), 4),
    ])
}

fn full_report() -> Report {
    let mut r = Report::new(
        "reconcile",
        1,
        9,
        ignored(),
        vec![deployment(), configmap(), secret(), service(), unmanaged()],
        Vec::new(),
    );
    // The build's own commit and date change with every build: fixed for the snapshots.
    r.tool_commit = "0123456789abcdef0123456789abcdef01234567".to_string();
    r.tool_build_date = "2026-01-01".to_string();
    r
}

fn partial_report() -> Report {
    Report::new(
        "diff",
        1,
        5,
        BTreeMap::new(),
        vec![deployment()],
        vec![SourceError {
            target: "demo".into(),
            side: "live".into(),
            message: "list networking.k8s.io/v1 ingresses in shop: 403 Forbidden".into(),
        }],
    )
}

fn in_sync_report() -> Report {
    Report::new("diff", 1, 8, BTreeMap::new(), Vec::new(), Vec::new())
}

fn all_formats(report: &Report) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for format in Format::ALL {
        for color in [false, true] {
            for show_diff in [false, true] {
                let opts = RenderOptions { color, show_diff };
                out.push((
                    format!("{format} color={color} diff={show_diff}"),
                    render(report, format, &opts),
                ));
            }
        }
    }
    out
}

fn snapshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name)
}

/// Compares against tests/snapshots/NAME, or rewrites it when DRIFTWARDEN_UPDATE_SNAPSHOTS=1
/// (refused under CI, which `scripts/test` sets, where a rewrite would pass every snapshot unchecked).
fn check_snapshot(name: &str, actual: &str) {
    let path = snapshot_path(name);
    if std::env::var("DRIFTWARDEN_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        let checking = std::env::var("CI").is_ok_and(|x| !x.is_empty() && x != "0" && x != "false");
        assert!(
            !checking,
            "DRIFTWARDEN_UPDATE_SNAPSHOTS=1 is refused under CI and scripts/test: it would \
             rewrite the snapshots instead of checking them"
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "snapshot {} unreadable ({e}); create it with DRIFTWARDEN_UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .header("expected", "actual")
            .to_string();
        panic!(
            "snapshot {} differs (DRIFTWARDEN_UPDATE_SNAPSHOTS=1 rewrites it):\n{diff}",
            path.display()
        );
    }
}

fn plain() -> RenderOptions {
    RenderOptions::default()
}

#[test]
fn table_snapshot() {
    check_snapshot(
        "full.table.txt",
        &render(&full_report(), Format::Table, &plain()),
    );
}

#[test]
fn table_color_snapshot() {
    let opts = RenderOptions {
        color: true,
        show_diff: true,
    };
    check_snapshot(
        "full.table.color.txt",
        &render(&full_report(), Format::Table, &opts),
    );
}

#[test]
fn markdown_snapshot() {
    check_snapshot(
        "full.md",
        &render(&full_report(), Format::Markdown, &plain()),
    );
}

#[test]
fn json_snapshot() {
    check_snapshot("full.json", &render(&full_report(), Format::Json, &plain()));
}

#[test]
fn partial_and_in_sync_snapshots() {
    check_snapshot(
        "partial.table.txt",
        &render(&partial_report(), Format::Table, &plain()),
    );
    check_snapshot(
        "partial.md",
        &render(&partial_report(), Format::Markdown, &plain()),
    );
    check_snapshot(
        "in-sync.table.txt",
        &render(&in_sync_report(), Format::Table, &plain()),
    );
}

#[test]
fn table_summary_lines() {
    let out = render(&full_report(), Format::Table, &plain());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "driftwarden reconcile: 5 of 9 resources drifted, compliance 44.4%"
    );
    for want in [
        "  resources checked 9 (1 target)",
        "  in sync           4",
        "  drifted           5 (Modified 3, Missing 1, Unmanaged 1)",
        "  by class          forbidden 1, risky 1, safe 2, unclassified 1",
        "  fields ignored    5 (hpa-owns-replicas 1, istio-sidecar 4)",
        "  actions           correct 1 done; issue 1 planned; pull request 1 planned; skip 1 skipped",
        "  compliance score  44.4%",
    ] {
        assert!(lines.contains(&want), "missing line {want:?} in:\n{out}");
    }
    assert!(!out.contains("PARTIAL READ"));
}

#[test]
fn table_drift_blocks() {
    let out = render(&full_report(), Format::Table, &plain());
    let lines: Vec<&str> = out.lines().collect();
    for want in [
        "[risky] Deployment shop/bookstore-web: Modified",
        "  reasons replicas changed outside Git",
        "          container image changed outside Git",
        "  rules   driftwarden.kubernetes.replicas_changed, driftwarden.kubernetes.image_changed",
        "  who     replicas changed by kubectl (Update, scale)",
        "  source  deploy/bookstore/web.yaml:7 @ 3f9c2a1",
        "  action  pull request (planned): would open driftwarden/drift-bookstore-web",
        "  -/spec/replicas: 3",
        "  +/spec/replicas: 6",
        "  -/spec/template/spec/containers/0/image: ghcr.io/example/bookstore-web:2.4.1",
        "  +/spec/template/spec/containers/0/image: ghcr.io/example/bookstore-web:2.4.2-hotfix1",
        "[safe] Service shop/bookstore-web: Missing (only in Git)",
        "  action  skip: correction budget of 25% reached (skipped)",
        "[unclassified] ConfigMap shop/bookstore-hotfix-flags: Unmanaged (only live)",
        "  +/metadata/labels/app.kubernetes.io~1managed-by: driftwarden",
        "  +/data/empty: \"\"",
        "[forbidden] Secret shop/bookstore-secrets: Modified",
        "  -/data/PAYMENT_API_KEY: (masked)",
        "  +/data/PAYMENT_API_KEY: (masked)  # value differs (masked)",
        "  -/data/FEATURE_WISHLIST: \"true\"",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(want) && l.len() == want.len())
                || lines.contains(&want),
            "missing line {want:?} in:\n{out}"
        );
    }
    // `who` appears once as a label; continuation lines are indented under it.
    let who = lines
        .iter()
        .position(|l| l.contains("replicas changed by"))
        .unwrap();
    assert_eq!(
        lines[who + 1],
        "          image changed by kubectl-set (Update, 2026-11-21T02:47:10Z)"
    );
}

#[test]
fn show_diff_off_hides_diffs_only() {
    let opts = RenderOptions {
        color: false,
        show_diff: false,
    };
    for format in [Format::Table, Format::Markdown] {
        let out = render(&full_report(), format, &opts);
        assert!(!out.contains("+++ live"), "{format}: {out}");
        assert!(!out.contains("```diff"), "{format}: {out}");
        assert!(
            out.contains("replicas changed by kubectl"),
            "{format}: {out}"
        );
    }
}

#[test]
fn partial_read_is_loud() {
    let out = render(&partial_report(), Format::Table, &plain());
    assert!(out.lines().any(|l| l
        == "PARTIAL READ: 1 source failed to load; nothing was deleted or pruned for the affected target."));
    assert!(
        out.contains("  demo (live): list networking.k8s.io/v1 ingresses in shop: 403 Forbidden")
    );
    let md = render(&partial_report(), Format::Markdown, &plain());
    assert!(md.contains("> [!WARNING]"));
    assert!(md.contains("**Partial read**"));
}

#[test]
fn in_sync_says_so() {
    let out = render(&in_sync_report(), Format::Table, &plain());
    assert!(out.starts_with("driftwarden diff: in sync, 8 resources checked, compliance 100.0%\n"));
    assert!(out.contains("No drift: every checked resource matches Git."));
}

#[test]
fn json_round_trips() {
    let report = full_report();
    let text = render(&report, Format::Json, &plain());
    assert!(text.ends_with("}\n"));
    let back: Report = serde_json::from_str(&text).unwrap();
    // The whole objects are not part of the JSON report.
    let mut expected = report.clone();
    for d in &mut expected.drifts {
        d.desired_object = None;
        d.live_object = None;
    }
    assert_eq!(back, expected);

    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema_version"], "1");
    assert_eq!(v["summary"]["compliance_score"], 44.4);
    assert_eq!(v["drifts"][0]["changes"][0]["op"], "changed");
    assert_eq!(
        v["drifts"][0]["changes"][0]["attribution"]["subresource"],
        "scale"
    );
    assert_eq!(v["drifts"][0]["action"]["action"]["type"], "pull_request");
    assert_eq!(v["drifts"][1]["changes"][2]["op"], "missing_live");
    assert_eq!(v["drifts"][2]["changes"][0]["masked"], true);
    assert_eq!(
        v["drifts"][3]["action"]["action"]["why"],
        "correction budget of 25% reached"
    );
    assert_eq!(v["drifts"][3]["resource"]["provider"], "kubernetes");
    assert_eq!(v["drifts"][4]["kind"], "Unmanaged");
    assert!(v.get("errors").is_none());

    let partial = render(&partial_report(), Format::Json, &plain());
    let back: Report = serde_json::from_str(&partial).unwrap();
    assert!(back.summary.partial);
    assert_eq!(back.errors.len(), 1);
}

#[test]
fn markdown_escapes_pipes_and_structure() {
    let md = render(&full_report(), Format::Markdown, &plain());
    // The pipe inside the ConfigMap value is escaped in its cell, so the row keeps 4 cells.
    let row = md
        .lines()
        .find(|l| l.starts_with("| `/data/app.properties`"))
        .unwrap();
    assert!(row.contains("a\\|b"), "{row}");
    assert_eq!(row.matches(" | ").count() + 2, 5, "{row}");
    assert_eq!(md.matches("<details>").count(), 5);
    assert_eq!(md.matches("</details>").count(), 5);
    assert!(md.contains("| Compliance score | **44.4%** |"));
    assert!(md.contains("| `/spec/replicas` | `3` | `6` | kubectl (Update, scale) |"));

    // Hostile text cannot break a row, open HTML or leave a fence.
    let mut d = deployment();
    d.resource.display = "Deployment shop/<b>x|y</b>".into();
    d.changes[0].live = json!("a|b\n```\n| injected | row |");
    d.verdict.as_mut().unwrap().reasons = vec!["pipes | and [links](http://x)".into()];
    let r = Report::new("diff", 1, 1, BTreeMap::new(), vec![d], Vec::new());
    let md = render(&r, Format::Markdown, &plain());
    assert!(md.contains("<summary><b>Deployment shop/&lt;b&gt;x&#124;y&lt;/b&gt;</b>"));
    assert!(md.contains("| Deployment shop/\\<b\\>x\\|y\\</b\\> |"));
    assert!(md.contains("pipes \\| and \\[links\\](http://x)"));
    assert!(!md.lines().any(|l| l.starts_with("| injected")));
    let change_row = md
        .lines()
        .find(|l| l.starts_with("| `/spec/replicas`"))
        .unwrap();
    assert!(change_row.contains("a\\|b"));
    assert!(
        md.contains("````diff"),
        "fence outgrows the backticks:\n{md}"
    );
}

#[test]
fn colour_only_when_asked() {
    let report = full_report();
    for format in Format::ALL {
        let out = render(&report, format, &RenderOptions::default());
        assert!(
            !out.contains('\x1b'),
            "{format} has escape codes without colour"
        );
    }
    let coloured = render(
        &report,
        Format::Table,
        &RenderOptions {
            color: true,
            show_diff: true,
        },
    );
    assert!(coloured.contains("\x1b[31m-/spec/replicas: 3\x1b[0m"));
    assert!(coloured.contains("\x1b[32m+/spec/replicas: 6\x1b[0m"));
    assert!(coloured.contains("\x1b[1;31m[forbidden]\x1b[0m"));
    assert!(coloured.contains("\x1b[33m[risky]\x1b[0m"));
}

#[test]
fn hostile_text_cannot_reach_the_terminal() {
    let mut d = deployment();
    d.changes[0].live = json!("\x1b]0;pwned\x07\x1b[2J");
    d.resource.display = "Deployment shop/\x1b[8mhidden".into();
    d.verdict.as_mut().unwrap().reasons = vec!["bidi \u{202e}txt.exe".into()];
    let r = Report::new("diff", 1, 1, BTreeMap::new(), vec![d], Vec::new());
    for color in [false, true] {
        let out = render(
            &r,
            Format::Table,
            &RenderOptions {
                color,
                show_diff: true,
            },
        );
        assert!(!out.contains("\x1b]"), "{out}");
        assert!(!out.contains("\x1b[2J"), "{out}");
        assert!(!out.contains("\x1b[8m"), "{out}");
        assert!(!out.contains('\u{202e}'), "{out}");
        assert!(!out.contains('\x07'), "{out}");
    }
    let md = render(&r, Format::Markdown, &plain());
    assert!(!md.contains('\x1b') && !md.contains('\u{202e}'), "{md}");
}

#[test]
fn secret_canary_never_rendered() {
    for report in [full_report(), partial_report()] {
        for (what, out) in all_formats(&report) {
            assert!(!out.contains(CANARY), "canary leaked in {what}:\n{out}");
        }
    }
}

#[test]
fn masked_values_stay_masked() {
    let out = render(&full_report(), Format::Markdown, &plain());
    assert!(out.contains(
        "| `/data/PAYMENT_API_KEY` | `(masked)` | `(masked)` | kubectl-patch (Update, 2026-11-21T03:12:09Z) |"
    ));
}

#[test]
fn long_diffs_are_capped() {
    let big: serde_json::Map<String, Value> = (0..400)
        .map(|i| (format!("key-{i:03}"), json!(i)))
        .collect();
    let d = drift(
        k8s("", "v1", "ConfigMap", "huge"),
        DriftKind::Unmanaged,
        vec![change(
            "/data",
            ChangeOp::ExtraLive,
            Value::Null,
            Value::Object(big),
        )],
    );
    let r = Report::new("diff", 1, 1, BTreeMap::new(), vec![d], Vec::new());
    let out = render(&r, Format::Table, &plain());
    assert!(out.contains("+/data/key-000: 0"));
    assert!(!out.contains("+/data/key-399: 399"));
    assert!(out.contains("more diff lines not shown (the JSON report has every change)"));
    assert!(render(&r, Format::Json, &plain()).contains("\"key-399\": 399"));
}

#[test]
fn multiple_targets_add_a_column() {
    let mut other = deployment();
    other.target = "staging".into();
    let r = Report::new(
        "diff",
        2,
        10,
        BTreeMap::new(),
        vec![deployment(), other],
        Vec::new(),
    );
    let out = render(&r, Format::Table, &plain());
    assert!(
        out.lines().any(|l| l.starts_with("TARGET   RESOURCE")),
        "{out}"
    );
    assert!(out.contains("  resources checked 10 (2 targets)"));
    assert!(out.contains("  id      target staging, fingerprint "));
    let md = render(&r, Format::Markdown, &plain());
    assert!(md.contains("| Target | Resource | Drift | Class | Changes | Action |"));
}

#[test]
fn schema_doc_example_is_a_report() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find("## A complete example").unwrap();
    let body = &doc[start..];
    let open = body.find("```json\n").unwrap() + "```json\n".len();
    let close = body[open..].find("\n```").unwrap();
    let example = &body[open..open + close];
    let report: Report = serde_json::from_str(example).unwrap();
    assert_eq!(
        report.schema_version,
        driftwarden::model::REPORT_SCHEMA_VERSION
    );
    // The example is exactly what the JSON renderer prints for it.
    assert_eq!(render(&report, Format::Json, &plain()).trim_end(), example);
    // And its summary is the one Report::new computes.
    let recomputed = Report::new(
        &report.command,
        report.summary.targets,
        report.summary.resources_checked,
        report.summary.ignored_fields.clone(),
        report.drifts.clone(),
        report.errors.clone(),
    );
    assert_eq!(recomputed.summary, report.summary);
}

/// Runs the embedded offline demo (fixtures/demo) through the real binary.
/// The demo's canary (decoded and base64) and every other demo secret value.
const DEMO_SECRETS: [&str; 8] = [
    "DEMO-CANARY-5f2b",
    "REVNTy1DQU5BUlktNWYyYg==",
    "demo-payment-key-not-real",
    "ZGVtby1wYXltZW50LWtleS1ub3QtcmVhbA==",
    "demo-session-signing-key-not-real",
    "ZGVtby1zZXNzaW9uLXNpZ25pbmcta2V5LW5vdC1yZWFs",
    "demo-db-password-not-real",
    "ZGVtby1kYi1wYXNzd29yZC1ub3QtcmVhbA==",
];

fn run_demo(format: &str) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["reconcile", "-o", format])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("DRIFTWARDEN_LOG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn demo_reports_exactly_the_planted_drift() {
    let (code, stdout, stderr) = run_demo("json");
    assert_eq!(code, Some(2), "drift found exits 2; stderr:\n{stderr}");
    let report: Report = serde_json::from_str(&stdout).unwrap();
    let mut found: Vec<String> = Vec::new();
    for d in &report.drifts {
        if d.changes.is_empty() {
            found.push(format!("{} {}", d.resource.display, d.kind));
        }
        for c in &d.changes {
            let who = c
                .attribution
                .as_ref()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let (desired, live) = if c.masked {
                ("(masked)".to_string(), "(masked)".to_string())
            } else {
                (c.desired.to_string(), c.live.to_string())
            };
            found.push(format!(
                "{} {} {} {desired} -> {live} by {who}",
                d.resource.display, d.kind, c.path
            ));
        }
    }
    found.sort();
    let mut want = vec![
        "ConfigMap shop/bookstore-config Modified /data/SEARCH_TIMEOUT_MS \"800\" -> \"2500\" by kubectl-edit (Update, 2026-11-21T03:05:44Z)",
        "ConfigMap shop/bookstore-hotfix-flags Unmanaged",
        "Deployment shop/bookstore-web Modified /spec/replicas 3 -> 6 by kubectl (Update, scale)",
        "Deployment shop/bookstore-web Modified /spec/template/spec/containers/0/image \"ghcr.io/example/bookstore-web:2.4.1\" -> \"ghcr.io/example/bookstore-web:2.4.2-hotfix1\" by kubectl-set (Update, 2026-11-21T02:47:10Z)",
        "Deployment shop/bookstore-worker Modified /spec/template/spec/containers/0/securityContext/privileged false -> true by kubectl-patch (Update, 2026-11-21T03:17:52Z)",
        "Ingress shop/bookstore Modified /metadata/labels/team \"storefront\" -> \"sre\" by kubectl-label (Update, 2026-11-21T03:09:12Z)",
        "Secret shop/bookstore-secrets Modified /data/PAYMENT_API_KEY (masked) -> (masked) by kubectl-patch (Update, 2026-11-21T03:12:09Z)",
        "Service shop/bookstore-web Missing",
    ];
    want.sort();
    assert_eq!(
        found, want,
        "fixtures/demo/EXPECTED.md lists the planted drift"
    );
    let secret = report
        .drifts
        .iter()
        .find(|d| d.resource.display == "Secret shop/bookstore-secrets")
        .unwrap();
    assert!(secret.changes.iter().all(|c| c.masked));
    let s = &report.summary;
    assert_eq!((s.resources_checked, s.in_sync, s.drifted), (10, 3, 7));
    assert_eq!(s.compliance_score, 30.0);
    // All three classes: the Ingress label is safe, the privileged worker forbidden.
    let by_class: Vec<(&str, usize)> = s.by_class.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_class, [("forbidden", 1), ("risky", 5), ("safe", 1)]);
    let class_of = |display: &str| {
        let d = report.drifts.iter().find(|d| d.resource.display == display);
        d.and_then(|d| d.verdict.as_ref())
            .map(|v| (v.class, v.rules.clone()))
    };
    assert_eq!(
        class_of("Deployment shop/bookstore-worker"),
        Some((
            Class::Forbidden,
            vec!["kubernetes_security.privileged".to_string()]
        ))
    );
    assert_eq!(
        class_of("Ingress shop/bookstore").map(|(c, _)| c),
        Some(Class::Safe)
    );
}

#[test]
fn demo_never_prints_a_secret_value() {
    // The canary (decoded and base64) and every other demo secret value, in every format.
    for format in ["table", "json", "markdown", "sarif", "junit"] {
        let (code, stdout, stderr) = run_demo(format);
        assert_eq!(code, Some(2), "{format}: {stderr}");
        for s in DEMO_SECRETS {
            assert!(!stdout.contains(s), "{format} stdout leaks {s}");
            assert!(!stderr.contains(s), "{format} stderr leaks {s}");
        }
    }
}

#[test]
fn secret_canary_never_reaches_actions_or_metrics() {
    use driftwarden::metrics::{self, RunFacts};
    use driftwarden::report::github_actions as gha;
    for report in [full_report(), partial_report()] {
        let outputs = gha::file_commands(&gha::outputs(&report, Some("report.json"))).unwrap();
        let channels = [
            ("annotations", gha::annotations(&report, None)),
            ("step summary", gha::step_summary(&report)),
            ("step outputs", outputs),
            ("metrics", metrics::render(&report, &RunFacts::default())),
        ];
        for (what, out) in channels {
            assert!(!out.trim().is_empty(), "{what} is empty");
            assert!(!out.contains(CANARY), "canary leaked in {what}:\n{out}");
        }
    }
    // The masked Secret drift is annotated, with its masked values only.
    let annotations = gha::annotations(&full_report(), None);
    let secret = annotations
        .lines()
        .find(|l| l.contains("Secret shop/bookstore-secrets"))
        .unwrap_or_else(|| panic!("no Secret annotation:\n{annotations}"));
    assert!(secret.starts_with("::error "), "{secret}");
    assert!(
        secret.contains("/data/PAYMENT_API_KEY: (masked) -> (masked)"),
        "{secret}"
    );
}

#[test]
fn demo_never_leaks_a_secret_through_actions_files_or_metrics() {
    // Every format again, now as under GitHub Actions (step summary, step outputs, annotations on
    // stderr) with the JSON report and the metrics written to files.
    let config = common::root().join("fixtures/demo/driftwarden.yaml");
    for format in Format::ALL {
        // A fresh working directory: the demo's local forge writes under it.
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path();
        let summary = ws.join("step-summary.md");
        let outputs = ws.join("step-outputs.txt");
        let json = ws.join("report.json");
        let metrics = ws.join("metrics.prom");
        let out = common::run(
            common::bin()
                .current_dir(ws)
                .env("GITHUB_ACTIONS", "true")
                .env("GITHUB_STEP_SUMMARY", &summary)
                .env("GITHUB_OUTPUT", &outputs)
                .env("GITHUB_WORKSPACE", ws)
                .env_remove("GITHUB_EVENT_PATH")
                .args(["reconcile", "-o", format.as_str(), "-c"])
                .arg(&config)
                .arg("--json-report")
                .arg(&json)
                .arg("--metrics-file")
                .arg(&metrics),
        );
        let stderr = common::stderr(&out);
        assert_eq!(common::code(&out), 2, "{format}: {stderr}");
        let read = |p: &std::path::Path| common::read(p);
        let channels = [
            ("stdout", common::stdout(&out)),
            ("stderr", stderr.clone()),
            ("the step summary", read(&summary)),
            ("the step outputs", read(&outputs)),
            ("the JSON report", read(&json)),
            ("the metrics", read(&metrics)),
        ];
        for (what, text) in &channels {
            assert!(!text.trim().is_empty(), "{format}: {what} is empty");
            for s in DEMO_SECRETS {
                assert!(!text.contains(s), "{format}: {what} leaks {s}");
            }
        }
        // The Secret's drift did go through each channel, masked.
        assert!(
            stderr.lines().any(|l| l.starts_with("::")
                && l.contains("Secret shop/bookstore-secrets")
                && l.contains("/data/PAYMENT_API_KEY: (masked) -> (masked)")),
            "{format}: no annotation for the Secret:\n{stderr}"
        );
        assert!(
            read(&summary).contains("bookstore-secrets"),
            "{format}: the step summary has no Secret"
        );
        assert!(
            read(&outputs).lines().any(|l| l == "drifted=7"),
            "{format}: {}",
            read(&outputs)
        );
    }
}
