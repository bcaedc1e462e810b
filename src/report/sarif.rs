//! SARIF 2.1.0 (`-o sarif`), for GitHub code scanning and other SARIF viewers.
//!
//! One run, tool `driftwarden`; one result per drift, located at the file and line in Git where
//! the drifted object is declared (its provenance), so code scanning shows the alert on the
//! manifest. The policy rules that classified drifts are the run's rules; a drift no policy
//! classified gets a rule per drift kind (`driftwarden/drift/modified`, ...). The level follows
//! the class: forbidden → `error`, risky and unclassified → `warning`, safe → `note`.
//! `partialFingerprints` carries the drift fingerprint, so an alert keeps its identity across runs
//! even when the manifest's lines move.
//!
//! GitHub code scanning rejects a whole file when any result lacks a physical location. An
//! `Unmanaged` drift has no file in Git (that is the point), so it is located at the config file
//! that declares its target ([`SarifOptions::config_uri`]), line 1, with the resource as a
//! logical location. Pure: no IO. Values are already masked upstream.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::model::{Class, Drift, DriftKind, Report};

use super::github_actions::{LocalPaths, repo_path};
use super::render::{action_text, class_name, display_path, one_line, short_value};

/// The schema URI written into `$schema` (the OASIS standard's errata 01 schema).
pub const SCHEMA_URI: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// The `partialFingerprints` key carrying the drift fingerprint.
pub const FINGERPRINT_KEY: &str = "driftwardenFingerprint/v1";

/// At most this many changes are spelled out in one result's message.
const MAX_CHANGES_IN_MESSAGE: usize = 10;

/// Options of the SARIF renderer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SarifOptions {
    /// Where results without a Git location (Unmanaged drift) point: the config file, as a path
    /// relative to the repository root. Default `driftwarden.yaml`.
    pub config_uri: String,
    /// `automationDetails.id`: the analysis category. Code scanning replaces the alerts of one
    /// category with each upload, so separate runs (say, per environment) need separate
    /// categories. Default `driftwarden/<command>/`.
    pub category: Option<String>,
    /// Maps a directory source's manifests to repository paths
    /// ([`repo_path`](super::github_actions::repo_path)); `None` keeps the recorded paths.
    pub paths: Option<LocalPaths>,
}

impl Default for SarifOptions {
    fn default() -> Self {
        SarifOptions {
            config_uri: "driftwarden.yaml".to_string(),
            category: None,
            paths: None,
        }
    }
}

/// The SARIF level of a class.
pub fn level(class: Option<Class>) -> &'static str {
    match class {
        Some(Class::Forbidden) => "error",
        Some(Class::Safe) => "note",
        Some(Class::Risky) | None => "warning",
    }
}

fn severity(level: &str) -> u8 {
    match level {
        "error" => 3,
        "warning" => 2,
        _ => 1,
    }
}

/// The rule a drift's result reports under: the first rule that fired, or one per drift kind.
pub fn rule_id(d: &Drift) -> String {
    d.verdict
        .as_ref()
        .and_then(|v| v.rules.first().cloned())
        .unwrap_or_else(|| {
            format!(
                "driftwarden/drift/{}",
                match d.kind {
                    DriftKind::Modified => "modified",
                    DriftKind::Missing => "missing",
                    DriftKind::Unmanaged => "unmanaged",
                }
            )
        })
}

struct RuleInfo {
    level: &'static str,
    provider: String,
    reason: Option<String>,
}

/// Renders the SARIF log, pretty-printed, with a trailing newline.
pub fn render(report: &Report, opts: &SarifOptions) -> String {
    let log = to_value(report, opts);
    match serde_json::to_string_pretty(&log) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => format!("{{\"error\": {}}}\n", json!(e.to_string())),
    }
}

/// The SARIF log as a JSON value.
pub fn to_value(report: &Report, opts: &SarifOptions) -> Value {
    // Rules, in first-seen order of their ids sorted for a stable index.
    let mut rules: BTreeMap<String, RuleInfo> = BTreeMap::new();
    for d in &report.drifts {
        let id = rule_id(d);
        let lvl = level(d.verdict.as_ref().map(|v| v.class));
        let single_reason = d
            .verdict
            .as_ref()
            .filter(|v| v.rules.len() == 1 && v.reasons.len() == 1)
            .map(|v| v.reasons[0].clone());
        let e = rules.entry(id).or_insert_with(|| RuleInfo {
            level: lvl,
            provider: d.resource.id.provider().to_string(),
            reason: None,
        });
        if severity(lvl) > severity(e.level) {
            e.level = lvl;
        }
        if e.reason.is_none() {
            e.reason = single_reason;
        }
    }
    let index: BTreeMap<&str, usize> = rules
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let rule_values: Vec<Value> = rules
        .iter()
        .map(|(id, info)| rule_value(id, info))
        .collect();

    let results: Vec<Value> = report
        .drifts
        .iter()
        .map(|d| {
            let id = rule_id(d);
            let idx = index.get(id.as_str()).copied().unwrap_or(0);
            result_value(d, &id, idx, opts)
        })
        .collect();

    let mut run = json!({
        "tool": {
            "driver": {
                "name": "driftwarden",
                "version": report.tool_version,
                "semanticVersion": report.tool_version,
                "rules": rule_values,
            }
        },
        "automationDetails": {
            "id": opts.category.clone().unwrap_or_else(|| format!("driftwarden/{}/", report.command)),
        },
        "invocations": [invocation(report)],
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {
            "summary": serde_json::to_value(&report.summary).unwrap_or(Value::Null),
        },
    });
    if let Some(vcp) = version_control(report) {
        run["versionControlProvenance"] = vcp;
    }
    json!({
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [run],
    })
}

fn rule_value(id: &str, info: &RuleInfo) -> Value {
    let human = humanize(id);
    let text = match &info.reason {
        Some(r) => format!("{human}: {}", one_line(r)),
        None => human.clone(),
    };
    let help = format!(
        "driftwarden found a live resource that differs from its declaration in Git, and the policy rule `{id}` classified it. Fix: make live match Git (driftwarden corrects safe drift in autocorrect mode), or adopt the live change into Git (driftwarden proposes a pull request). The rule lives in the policy library (`driftwarden policy test` runs its tests)."
    );
    json!({
        "id": id,
        "name": pascal(id),
        "shortDescription": { "text": text },
        "fullDescription": { "text": format!("Drift classified by policy rule {id}.") },
        "help": { "text": help, "markdown": help },
        "defaultConfiguration": { "level": info.level },
        "properties": {
            "tags": ["drift", "gitops", info.provider],
            "precision": "very-high",
        },
    })
}

fn result_value(d: &Drift, rule: &str, rule_index: usize, opts: &SarifOptions) -> Value {
    let class = d.verdict.as_ref().map(|v| v.class);
    let (uri, line) = match &d.provenance {
        Some(p) => (
            artifact_uri(&repo_path(p, opts.paths.as_ref())),
            p.line.max(1),
        ),
        None => (artifact_uri(&opts.config_uri), 1),
    };
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": { "uri": uri },
            "region": { "startLine": line },
        },
        "logicalLocations": [{
            "name": d.resource.display,
            "fullyQualifiedName": d.resource.id.key(),
            "kind": "resource",
        }],
    });
    if d.provenance.is_none() {
        location["message"] = json!({
            "text": "Not in Git: located at the config file that declares the target."
        });
    }
    let mut props = json!({
        "target": d.target,
        "resource": d.resource.display,
        "driftKind": d.kind.to_string(),
        "class": class_name(d),
        "changedPaths": d.changes.iter().map(|c| c.path.clone()).collect::<Vec<_>>(),
    });
    if let Some(v) = &d.verdict {
        props["rules"] = json!(v.rules);
        props["reasons"] = json!(v.reasons);
    }
    if let Some(p) = d.provenance.as_ref().and_then(|p| p.commit.clone()) {
        props["commit"] = json!(p);
    }
    if d.action.is_some() {
        props["action"] = json!(action_text(d));
    }
    json!({
        "ruleId": rule,
        "ruleIndex": rule_index,
        "level": level(class),
        "kind": "fail",
        "message": { "text": message(d) },
        "locations": [location],
        "partialFingerprints": { FINGERPRINT_KEY: d.fingerprint },
        "properties": props,
    })
}

/// `Deployment shop/web drifted from Git (Modified): /spec/replicas 3 → 6. Class risky:
/// replicas changed outside Git. Action: pull request (planned).`
fn message(d: &Drift) -> String {
    let mut s = format!(
        "{} drifted from Git ({})",
        one_line(&d.resource.display),
        match d.kind {
            DriftKind::Modified => "modified live",
            DriftKind::Missing => "declared in Git, missing live",
            DriftKind::Unmanaged => "live, absent from Git",
        }
    );
    if !d.changes.is_empty() {
        let parts: Vec<String> = d
            .changes
            .iter()
            .take(MAX_CHANGES_IN_MESSAGE)
            .map(|c| {
                let mut p = format!(
                    "{} {} → {}",
                    display_path(&c.path),
                    short_value(&c.desired),
                    short_value(&c.live)
                );
                if let Some(a) = &c.attribution {
                    p.push_str(&format!(" (by {})", one_line(&a.manager)));
                }
                p
            })
            .collect();
        s.push_str(": ");
        s.push_str(&parts.join("; "));
        if d.changes.len() > MAX_CHANGES_IN_MESSAGE {
            s.push_str(&format!(
                "; and {} more",
                d.changes.len() - MAX_CHANGES_IN_MESSAGE
            ));
        }
    }
    s.push('.');
    match &d.verdict {
        Some(v) => {
            s.push_str(&format!(" Class {}", v.class));
            if !v.reasons.is_empty() {
                let reasons: Vec<String> = v.reasons.iter().map(|r| one_line(r)).collect();
                s.push_str(&format!(": {}", reasons.join("; ")));
            }
            s.push('.');
        }
        None => s.push_str(" Not classified by policy (treated as risky)."),
    }
    if d.action.is_some() {
        s.push_str(&format!(" Action: {}.", action_text(d)));
    }
    s
}

/// A repository-relative path as a URI reference: backslashes become slashes, a leading `./`
/// goes, and characters outside the URI grammar are percent-encoded.
fn artifact_uri(path: &str) -> String {
    let p = path.replace('\\', "/");
    let p = p.trim_start_matches("./");
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "-._~/!$&'()*+,;=:@".contains(c) {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `kubernetes.replicas_without_hpa` → `kubernetes: replicas without hpa`.
fn humanize(id: &str) -> String {
    match id.rsplit_once('.') {
        Some((pkg, rule)) => format!("{}: {}", pkg.replace('.', " "), rule.replace('_', " ")),
        None => id.replace(['_', '/'], " "),
    }
}

/// `kubernetes.replicas_without_hpa` → `KubernetesReplicasWithoutHpa`.
fn pascal(id: &str) -> String {
    id.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut cs = w.chars();
            match cs.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + cs.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn invocation(report: &Report) -> Value {
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            json!({
                "level": "error",
                "message": { "text": format!("{} ({}): {}", one_line(&e.target), one_line(&e.side), one_line(&e.message)) },
            })
        })
        .collect();
    let mut inv = json!({ "executionSuccessful": report.errors.is_empty() });
    if !notifications.is_empty() {
        inv["toolExecutionNotifications"] = json!(notifications);
    }
    inv
}

/// The Git source and commit, when every located drift comes from one absolute URL at one commit.
fn version_control(report: &Report) -> Option<Value> {
    let mut found: Option<(&str, &str)> = None;
    for d in &report.drifts {
        let Some(p) = &d.provenance else { continue };
        let Some(c) = &p.commit else { return None };
        match found {
            None => found = Some((p.source.as_str(), c.as_str())),
            Some((s, cm)) if s == p.source && cm == c => {}
            Some(_) => return None,
        }
    }
    let (source, commit) = found?;
    let absolute = source.starts_with("https://")
        || source.starts_with("http://")
        || source.starts_with("ssh://")
        || source.starts_with("file://");
    if !absolute || source.contains('@') && !source.starts_with("ssh://") {
        return None;
    }
    Some(json!([{ "repositoryUri": source, "revisionId": commit }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_class() {
        assert_eq!(level(Some(Class::Forbidden)), "error");
        assert_eq!(level(Some(Class::Risky)), "warning");
        assert_eq!(level(Some(Class::Safe)), "note");
        assert_eq!(level(None), "warning");
    }

    #[test]
    fn uris_and_names() {
        assert_eq!(artifact_uri("./deploy/a b.yaml"), "deploy/a%20b.yaml");
        assert_eq!(artifact_uri("dir\\x#y.yaml"), "dir/x%23y.yaml");
        assert_eq!(
            humanize("kubernetes.replicas_without_hpa"),
            "kubernetes: replicas without hpa"
        );
        assert_eq!(
            pascal("kubernetes.replicas_without_hpa"),
            "KubernetesReplicasWithoutHpa"
        );
        assert_eq!(
            pascal("driftwarden/drift/missing"),
            "DriftwardenDriftMissing"
        );
    }

    #[test]
    fn empty_report_is_a_valid_log() {
        let r = Report::new("diff", 1, 3, Default::default(), Vec::new(), Vec::new());
        let v = to_value(&r, &SarifOptions::default());
        assert_eq!(v["version"], "2.1.0");
        assert_eq!(v["runs"][0]["results"], json!([]));
        assert_eq!(v["runs"][0]["invocations"][0]["executionSuccessful"], true);
        assert!(render(&r, &SarifOptions::default()).ends_with("}\n"));
    }
}
