//! Terraform plan JSON (`terraform show -json PLANFILE`), format versions 0.1 to 1.x.
//!
//! Two things come out of a plan. `resource_drift` is drift as Terraform saw it during refresh:
//! each entry becomes a `Modified` drift (or `Missing`, when the object was deleted outside
//! Terraform) with one [`FieldChange`] per attribute, optionally narrowed to the plan's
//! `relevant_attributes`. `resource_changes` is what applying would do; it is parsed into typed
//! [`PlannedChange`]s (create, update, delete, both replace orders, read, no-op, forget, with
//! `previous_address`, `action_reason`, `replace_paths` and `importing`) for the pull-request
//! bot, and [`change_drifts`] turns them into drifts so the same policies can gate them.
//!
//! Secrets: values are masked with `before_sensitive`/`after_sensitive` while the file is being
//! read, before any [`PlannedChange`], [`Drift`], log line or error message exists; the raw
//! values never leave this module. Error messages never quote values from the file (serde's
//! type errors do, so the document is walked by hand after a syntax-only parse). Unknown values
//! (`after_unknown`) read as [`KNOWN_AFTER_APPLY`].

use std::path::Path;

use serde_json::{Map, Value};

use super::values::{
    self, KNOWN_AFTER_APPLY, RawChange, apply_marks, attribute_changes, element_lines, marked,
};
use crate::model::{
    ChangeOp, Drift, DriftKind, FieldChange, Provenance, ResourceId, ResourceRef, fingerprint,
};

/// Why a plan file cannot be used. Every variant is the input's fault (exit 3).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("reading plan {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: not valid JSON: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: not a Terraform plan: {message}")]
    NotAPlan { file: String, message: String },
    #[error(
        "{file}: plan format version {version} is not supported; driftwarden reads format versions 0.1 to 1.x (`terraform show -json` from Terraform 0.12 to 1.x)"
    )]
    UnsupportedVersion { file: String, version: String },
    #[error(
        "{file}: the plan is errored (`errored: true`): Terraform stopped planning with an error, so its changes are incomplete; fix the error and plan again"
    )]
    Errored { file: String },
    #[error("{file}:{line}: {what}: {message}")]
    Malformed {
        file: String,
        line: usize,
        what: String,
        message: String,
    },
}

/// `managed` resources or `data` sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceMode {
    Managed,
    Data,
}

/// The order of a replacement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplaceOrder {
    /// `["delete", "create"]`: the default; the old object is gone before the new one exists.
    DeleteThenCreate,
    /// `["create", "delete"]`: `create_before_destroy`.
    CreateThenDelete,
}

/// What applying the plan does to one resource instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanAction {
    NoOp,
    Create,
    Read,
    Update,
    Replace(ReplaceOrder),
    Delete,
    /// `["forget"]` (Terraform 1.7+): removed from state, left running.
    Forget,
    /// `["create", "forget"]`: a new object is created and the old one is forgotten.
    CreateThenForget,
}

impl PlanAction {
    /// Parses Terraform's action list.
    pub fn parse(actions: &[&str]) -> Option<PlanAction> {
        Some(match actions {
            ["no-op"] => PlanAction::NoOp,
            ["create"] => PlanAction::Create,
            ["read"] => PlanAction::Read,
            ["update"] => PlanAction::Update,
            ["delete", "create"] => PlanAction::Replace(ReplaceOrder::DeleteThenCreate),
            ["create", "delete"] => PlanAction::Replace(ReplaceOrder::CreateThenDelete),
            ["delete"] => PlanAction::Delete,
            ["forget"] => PlanAction::Forget,
            ["create", "forget"] => PlanAction::CreateThenForget,
            _ => return None,
        })
    }

    /// A short human name: `create`, `replace (create before destroy)`, ...
    pub fn describe(self) -> &'static str {
        match self {
            PlanAction::NoOp => "no-op",
            PlanAction::Create => "create",
            PlanAction::Read => "read",
            PlanAction::Update => "update",
            PlanAction::Replace(ReplaceOrder::DeleteThenCreate) => "replace (destroy then create)",
            PlanAction::Replace(ReplaceOrder::CreateThenDelete) => {
                "replace (create before destroy)"
            }
            PlanAction::Delete => "delete",
            PlanAction::Forget => "forget",
            PlanAction::CreateThenForget => "replace (create, then forget the old object)",
        }
    }

    /// Whether the object (or its predecessor) is destroyed.
    pub fn deletes(self) -> bool {
        matches!(self, PlanAction::Replace(_) | PlanAction::Delete)
    }
}

/// One entry of `resource_changes` or `resource_drift`, values masked.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChange {
    pub address: String,
    /// Where the object was in the previous run, when it moved (`moved` blocks).
    pub previous_address: Option<String>,
    pub module_address: Option<String>,
    pub mode: ResourceMode,
    pub resource_type: String,
    pub name: String,
    /// `count` index (number) or `for_each` key (string).
    pub index: Option<Value>,
    /// Set for a deposed object (an old object left by create-before-destroy).
    pub deposed: Option<String>,
    pub provider_name: String,
    pub action: PlanAction,
    /// Why Terraform chose the action (`replace_because_tainted`, `delete_because_no_resource_config`, ...).
    pub action_reason: Option<String>,
    /// The object before, sensitive values replaced by [`crate::model::MASK`].
    pub before: Value,
    /// The object after, sensitive values masked and unknown ones shown as [`KNOWN_AFTER_APPLY`].
    pub after: Value,
    /// Attributes that force the replacement, as JSON pointers.
    pub replace_paths: Vec<String>,
    /// The id being imported, when the change is also an import.
    pub importing: Option<String>,
    /// One change per attribute: `desired` is the after side, `live` the before side (for
    /// `resource_drift`: `desired` is what state said, `live` what refresh found). Masked.
    pub attribute_changes: Vec<FieldChange>,
    /// 1-based line of the entry in the plan file (0 when unknown).
    pub line: usize,
}

/// An attribute the plan's configuration depends on (`relevant_attributes`, format 1.1+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelevantAttribute {
    pub resource: String,
    /// JSON pointer into the resource.
    pub pointer: String,
}

/// A parsed plan. Every value in it is already masked.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The file it came from, for messages and provenance.
    pub file: String,
    pub format_version: String,
    pub terraform_version: Option<String>,
    /// `resource_drift`: changes made outside Terraform, found during refresh.
    pub drift: Vec<PlannedChange>,
    /// `resource_changes`: what applying the plan would do.
    pub changes: Vec<PlannedChange>,
    pub relevant_attributes: Vec<RelevantAttribute>,
}

/// Reads and parses a plan JSON file.
pub fn load(path: &Path) -> Result<Plan, PlanError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PlanError::Io {
        file: file.clone(),
        source: e,
    })?;
    parse(&text, &file)
}

/// Parses plan JSON text. `file` names it in messages.
pub fn parse(text: &str, file: &str) -> Result<Plan, PlanError> {
    let doc: Value = serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
    let Value::Object(root) = &doc else {
        return Err(PlanError::NotAPlan {
            file: file.into(),
            message: "the document is not a JSON object".into(),
        });
    };
    let Some(version) = root.get("format_version").and_then(Value::as_str) else {
        let hint = if root.contains_key("version") && root.contains_key("resources") {
            "this looks like a Terraform state file (give it as `state`, not `plan`)"
        } else if root.contains_key("values") {
            "this looks like `terraform show -json` of a state, not of a plan file"
        } else {
            "`format_version` is missing (expected the output of `terraform show -json PLANFILE`)"
        };
        return Err(PlanError::NotAPlan {
            file: file.into(),
            message: hint.into(),
        });
    };
    check_version(file, version)?;
    if root.get("errored").and_then(Value::as_bool) == Some(true) {
        return Err(PlanError::Errored { file: file.into() });
    }
    if !root.contains_key("resource_changes")
        && !root.contains_key("resource_drift")
        && !root.contains_key("planned_values")
    {
        return Err(PlanError::NotAPlan {
            file: file.into(),
            message: "no `resource_changes`, `resource_drift` or `planned_values`".into(),
        });
    }
    let drift_lines = element_lines(text, "resource_drift");
    let change_lines = element_lines(text, "resource_changes");
    let drift = entries(file, root, "resource_drift", &drift_lines)?;
    let changes = entries(file, root, "resource_changes", &change_lines)?;
    let mut relevant_attributes = Vec::new();
    if let Some(list) = root.get("relevant_attributes") {
        let Value::Array(items) = list else {
            return Err(malformed(file, 0, "relevant_attributes", "expected a list"));
        };
        for item in items {
            let resource = item.get("resource").and_then(Value::as_str);
            let steps = item.get("attribute").and_then(Value::as_array);
            match (resource, steps) {
                (Some(r), Some(s)) => relevant_attributes.push(RelevantAttribute {
                    resource: r.to_string(),
                    pointer: values::pointer_from_steps(s),
                }),
                _ => {
                    return Err(malformed(
                        file,
                        0,
                        "relevant_attributes[]",
                        "expected {\"resource\": ADDRESS, \"attribute\": [STEPS]}",
                    ));
                }
            }
        }
    }
    Ok(Plan {
        file: file.to_string(),
        format_version: version.to_string(),
        terraform_version: root
            .get("terraform_version")
            .and_then(Value::as_str)
            .map(str::to_string),
        drift,
        changes,
        relevant_attributes,
    })
}

fn json_error(file: &str, e: &serde_json::Error) -> PlanError {
    PlanError::Json {
        file: file.into(),
        line: e.line(),
        column: e.column(),
        message: values::json_syntax_message(e),
    }
}

fn check_version(file: &str, version: &str) -> Result<(), PlanError> {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|m| m.parse::<u32>().ok());
    let minor_ok = parts.next().is_some_and(|m| m.parse::<u32>().is_ok());
    match major {
        Some(0 | 1) if minor_ok => Ok(()),
        _ => Err(PlanError::UnsupportedVersion {
            file: file.into(),
            version: version.into(),
        }),
    }
}

fn malformed(file: &str, line: usize, what: &str, message: &str) -> PlanError {
    PlanError::Malformed {
        file: file.into(),
        line,
        what: what.into(),
        message: message.into(),
    }
}

fn entries(
    file: &str,
    root: &Map<String, Value>,
    key: &str,
    lines: &[usize],
) -> Result<Vec<PlannedChange>, PlanError> {
    let Some(list) = root.get(key) else {
        return Ok(Vec::new());
    };
    if list.is_null() {
        return Ok(Vec::new());
    }
    let Value::Array(items) = list else {
        return Err(malformed(file, 0, key, "expected a list"));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| entry(file, key, i, item, lines.get(i).copied().unwrap_or(0)))
        .collect()
}

fn entry(
    file: &str,
    key: &str,
    i: usize,
    item: &Value,
    line: usize,
) -> Result<PlannedChange, PlanError> {
    let what = format!("{key}[{i}]");
    let str_field = |name: &str| -> Result<String, PlanError> {
        item.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                malformed(
                    file,
                    line,
                    &what,
                    &format!("`{name}` is missing or not a string"),
                )
            })
    };
    let opt_str = |name: &str| item.get(name).and_then(Value::as_str).map(str::to_string);
    let address = str_field("address")?;
    let what = format!("{key}[{i}] ({address})");
    let mode = match item.get("mode").and_then(Value::as_str) {
        Some("managed") | None => ResourceMode::Managed,
        Some("data") => ResourceMode::Data,
        Some(_) => {
            return Err(malformed(
                file,
                line,
                &what,
                "`mode` must be `managed` or `data`",
            ));
        }
    };
    let Some(change) = item.get("change").filter(|c| c.is_object()) else {
        return Err(malformed(
            file,
            line,
            &what,
            "`change` is missing or not an object",
        ));
    };
    let actions: Vec<&str> = change
        .get("actions")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(action) = PlanAction::parse(&actions) else {
        return Err(malformed(
            file,
            line,
            &what,
            &format!("unknown `change.actions` {actions:?}"),
        ));
    };
    let null = Value::Null;
    let before_raw = change.get("before").unwrap_or(&null);
    let after_raw = change.get("after").unwrap_or(&null);
    let before_sensitive = sensitivity(change.get("before_sensitive"));
    let after_sensitive = sensitivity(change.get("after_sensitive"));
    let after_unknown = change.get("after_unknown").cloned().unwrap_or(Value::Null);

    // Unknown values first (they are not secret), then every sensitive part is masked.
    let mut after_known = after_raw.clone();
    apply_marks(&mut after_known, &after_unknown, KNOWN_AFTER_APPLY, true);
    let raw_changes = attribute_changes(before_raw, &after_known, super::SET_ATTRIBUTES);
    let attribute_changes = raw_changes
        .into_iter()
        .map(|c| masked_change(c, &before_sensitive, &after_sensitive))
        .collect();
    let before = values::masked(before_raw, &before_sensitive);
    let after = values::masked(&after_known, &after_sensitive);

    let replace_paths = change
        .get("replace_paths")
        .and_then(Value::as_array)
        .map(|paths| {
            paths
                .iter()
                .filter_map(Value::as_array)
                .map(|steps| values::pointer_from_steps(steps))
                .collect()
        })
        .unwrap_or_default();
    let importing = change
        .get("importing")
        .and_then(|i| i.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let (resource_type, name) = match (opt_str("type"), opt_str("name")) {
        (Some(t), Some(n)) => (t, n),
        _ => split_address(&address),
    };
    Ok(PlannedChange {
        previous_address: opt_str("previous_address"),
        module_address: opt_str("module_address"),
        mode,
        resource_type,
        name,
        index: item.get("index").cloned(),
        deposed: opt_str("deposed"),
        provider_name: opt_str("provider_name").unwrap_or_default(),
        action,
        action_reason: opt_str("action_reason"),
        before,
        after,
        replace_paths,
        importing,
        attribute_changes,
        line,
        address,
    })
}

/// Terraform writes sensitivity as `true`, `false`, or an object/array of marks; older versions
/// (0.12, format 0.1) omit it. Anything else is treated as "all sensitive": failing closed.
fn sensitivity(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Value::Null,
        Some(Value::Bool(true)) | Some(Value::Object(_)) | Some(Value::Array(_)) => {
            v.cloned().unwrap_or(Value::Null)
        }
        Some(_) => Value::Bool(true),
    }
}

fn masked_change(c: RawChange, before_sensitive: &Value, after_sensitive: &Value) -> FieldChange {
    let secret = marked(before_sensitive, &c.path) || marked(after_sensitive, &c.path);
    let op = if c.before.is_null() {
        ChangeOp::MissingLive
    } else if c.after.is_null() {
        ChangeOp::ExtraLive
    } else {
        ChangeOp::Changed
    };
    let (desired, live) = if secret {
        (values::mask_leaf(&c.after), values::mask_leaf(&c.before))
    } else {
        (c.after, c.before)
    };
    FieldChange {
        path: c.path,
        op,
        desired,
        live,
        masked: secret,
        attribution: None,
        class: None,
    }
}

/// `module.a.aws_instance.web["k"]` → (`aws_instance`, `web`).
fn split_address(address: &str) -> (String, String) {
    let mut rest = address;
    while let Some(r) = rest.strip_prefix("module.") {
        // Skip the module name (and its index, which may hold dots inside quotes).
        rest = skip_segment(r);
    }
    let rest = rest.strip_prefix("data.").unwrap_or(rest);
    let (t, n) = rest.split_once('.').unwrap_or((rest, ""));
    let n = n.split('[').next().unwrap_or(n);
    (t.to_string(), n.to_string())
}

fn skip_segment(s: &str) -> &str {
    let mut in_str = false;
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            '.' if !in_str && depth == 0 => return &s[i + 1..],
            _ => {}
        }
    }
    ""
}

/// Options for turning `resource_drift` into drifts.
#[derive(Debug, Clone, Default)]
pub struct DriftOptions {
    /// Keep only changes to attributes the configuration depends on (`relevant_attributes`).
    /// A drift left with no change is dropped. Plans before format 1.1 carry no such list; the
    /// option then keeps everything.
    pub relevant_only: bool,
}

/// The plan's `resource_drift` as drifts of `target`: `update` entries are `Modified` (desired =
/// what state recorded, live = what refresh found), `delete` entries are `Missing`. Data sources
/// are skipped. A moved resource is keyed by its new address and shows the old one in its
/// display name.
pub fn plan_drifts(plan: &Plan, target: &str, workspace: &str, opts: &DriftOptions) -> Vec<Drift> {
    let filter = opts.relevant_only && !plan.relevant_attributes.is_empty();
    let mut out = Vec::new();
    for d in &plan.drift {
        if d.mode == ResourceMode::Data || d.deposed.is_some() {
            continue;
        }
        let kind = match d.action {
            PlanAction::Delete => DriftKind::Missing,
            PlanAction::NoOp => continue,
            _ => DriftKind::Modified,
        };
        let mut changes: Vec<FieldChange> = d
            .attribute_changes
            .iter()
            .cloned()
            .map(|mut c| {
                // In resource_drift, "before" is state (desired) and "after" is live.
                std::mem::swap(&mut c.desired, &mut c.live);
                c.op = if c.live.is_null() {
                    ChangeOp::MissingLive
                } else if c.desired.is_null() {
                    ChangeOp::ExtraLive
                } else {
                    ChangeOp::Changed
                };
                c
            })
            .collect();
        if kind == DriftKind::Modified && filter {
            let relevant: Vec<&str> = plan
                .relevant_attributes
                .iter()
                .filter(|r| {
                    r.resource == d.address || Some(&r.resource) == d.previous_address.as_ref()
                })
                .map(|r| r.pointer.as_str())
                .collect();
            changes.retain(|c| relevant.iter().any(|p| values::overlaps(p, &c.path)));
        }
        if kind == DriftKind::Modified && changes.is_empty() {
            continue;
        }
        if kind == DriftKind::Missing {
            changes.clear();
        }
        let id = ResourceId::Terraform {
            workspace: workspace.to_string(),
            address: d.address.clone(),
        };
        let mut resource = ResourceRef::from(id.clone());
        if let Some(prev) = &d.previous_address {
            resource.display = format!("{} (moved from {prev})", d.address);
        }
        out.push(Drift {
            fingerprint: fingerprint(target, &id),
            target: target.to_string(),
            resource,
            kind,
            changes,
            provenance: Some(Provenance {
                source: plan.file.clone(),
                file: plan.file.clone(),
                line: d.line,
                commit: None,
            }),
            verdict: None,
            action: None,
            desired_object: Some(d.before.clone()),
            live_object: if kind == DriftKind::Missing {
                None
            } else {
                Some(d.after.clone())
            },
        });
    }
    out.sort_by_cached_key(|d| d.resource.id.key());
    out
}

/// The plan's `resource_changes` as drifts, so pull-request gating classifies proposed changes
/// exactly like drift: an update or replacement is `Modified` (desired = after, live = before),
/// a create is `Missing` (declared, not there yet), a delete or forget is `Unmanaged` (there, no
/// longer declared). No-ops and reads are skipped.
pub fn change_drifts(plan: &Plan, target: &str, workspace: &str) -> Vec<Drift> {
    let mut out = Vec::new();
    for c in &plan.changes {
        if c.mode == ResourceMode::Data {
            continue;
        }
        let kind = match c.action {
            PlanAction::NoOp | PlanAction::Read => continue,
            PlanAction::Create => DriftKind::Missing,
            PlanAction::Delete | PlanAction::Forget => DriftKind::Unmanaged,
            PlanAction::Update | PlanAction::Replace(_) | PlanAction::CreateThenForget => {
                DriftKind::Modified
            }
        };
        let id = ResourceId::Terraform {
            workspace: workspace.to_string(),
            address: match &c.deposed {
                Some(key) => format!("{} (deposed {key})", c.address),
                None => c.address.clone(),
            },
        };
        let mut resource = ResourceRef::from(id.clone());
        if let Some(prev) = &c.previous_address {
            resource.display = format!("{} (moved from {prev})", c.address);
        }
        out.push(Drift {
            fingerprint: fingerprint(target, &id),
            target: target.to_string(),
            resource,
            kind,
            changes: if kind == DriftKind::Modified {
                c.attribute_changes.clone()
            } else {
                Vec::new()
            },
            provenance: Some(Provenance {
                source: plan.file.clone(),
                file: plan.file.clone(),
                line: c.line,
                commit: None,
            }),
            verdict: None,
            action: None,
            desired_object: (!c.after.is_null()).then(|| c.after.clone()),
            live_object: (!c.before.is_null()).then(|| c.before.clone()),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MASK;

    const CANARY: &str = "hunter2-canary";

    fn plan_text(version: &str, drift: &str, changes: &str) -> String {
        format!(
            r#"{{"format_version": "{version}", "terraform_version": "1.9.0",
  "resource_drift": [{drift}],
  "resource_changes": [{changes}]}}"#
        )
    }

    #[test]
    fn drift_becomes_one_change_per_attribute_with_masking() {
        let drift = format!(
            r#"{{"address": "aws_instance.web", "mode": "managed", "type": "aws_instance", "name": "web",
              "provider_name": "registry.terraform.io/hashicorp/aws",
              "change": {{"actions": ["update"],
                "before": {{"id": "i-1", "instance_type": "t3.micro", "tags": {{"Name": "web"}}, "user_data": "{CANARY}-old"}},
                "after": {{"id": "i-1", "instance_type": "t3.large", "tags": {{"Name": "web2"}}, "user_data": "{CANARY}"}},
                "before_sensitive": {{"user_data": true}}, "after_sensitive": {{"user_data": true}}, "after_unknown": {{}}}}}}"#
        );
        let plan = parse(&plan_text("1.2", &drift, ""), "p.json").unwrap();
        let drifts = plan_drifts(&plan, "t", "default", &DriftOptions::default());
        assert_eq!(drifts.len(), 1);
        let d = &drifts[0];
        assert_eq!(d.kind, DriftKind::Modified);
        let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/instance_type", "/tags/Name", "/user_data"]);
        assert_eq!(d.changes[0].desired, "t3.micro");
        assert_eq!(d.changes[0].live, "t3.large");
        assert!(d.changes[2].masked);
        let all = format!("{:?} {:?}", d, plan);
        assert!(!all.contains(CANARY), "{all}");
        assert!(all.contains(MASK));
    }

    #[test]
    fn unknown_after_values_read_known_after_apply() {
        let change = r#"{"address": "aws_instance.new", "type": "aws_instance", "name": "new",
            "change": {"actions": ["create"], "before": null,
              "after": {"ami": "ami-1", "tags": null},
              "after_unknown": {"id": true, "arn": true}, "after_sensitive": {}}}"#;
        let plan = parse(&plan_text("1.0", "", change), "p.json").unwrap();
        let c = &plan.changes[0];
        assert_eq!(c.action, PlanAction::Create);
        assert_eq!(c.after["id"], KNOWN_AFTER_APPLY);
        assert!(
            c.attribute_changes
                .iter()
                .any(|f| f.path == "/arn" && f.desired == KNOWN_AFTER_APPLY)
        );
    }

    #[test]
    fn versions_and_errors() {
        let err = parse(&plan_text("2.0", "", ""), "p.json").unwrap_err();
        assert!(err.to_string().contains("format version 2.0"), "{err}");
        let err = parse(
            r#"{"format_version": "1.2", "errored": true, "resource_changes": []}"#,
            "p.json",
        )
        .unwrap_err();
        assert!(matches!(err, PlanError::Errored { .. }));
        let err = parse(
            "{\n  \"format_version\": \"1.2\",\n  \"resource_changes\": [",
            "p.json",
        )
        .unwrap_err();
        match err {
            PlanError::Json { line, message, .. } => {
                assert_eq!(line, 3);
                assert!(message.contains("truncated"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let err = parse(r#"{"version": 4, "resources": []}"#, "s.json").unwrap_err();
        assert!(err.to_string().contains("state file"), "{err}");
        for v in ["0.1", "0.2", "1.0", "1.1", "1.2"] {
            parse(&plan_text(v, "", ""), "p.json").unwrap();
        }
    }

    #[test]
    fn type_errors_never_quote_values() {
        let text = format!(
            r#"{{"format_version": "1.2", "resource_changes": [{{"address": "a.b", "change": {{"actions": "{CANARY}"}}}}]}}"#
        );
        let err = parse(&text, "p.json").unwrap_err().to_string();
        assert!(!err.contains(CANARY), "{err}");
    }

    #[test]
    fn actions_and_addresses() {
        assert_eq!(
            PlanAction::parse(&["create", "delete"]),
            Some(PlanAction::Replace(ReplaceOrder::CreateThenDelete))
        );
        assert_eq!(PlanAction::parse(&["bogus"]), None);
        assert_eq!(
            split_address("module.a[\"x.y\"].module.b.aws_instance.web[0]"),
            ("aws_instance".to_string(), "web".to_string())
        );
        assert_eq!(
            split_address("data.aws_ami.x"),
            ("aws_ami".to_string(), "x".to_string())
        );
    }
}
