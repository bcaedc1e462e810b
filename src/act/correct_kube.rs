//! The Kubernetes actuator: corrects safe drift with server-side apply, within the guardrails.
//!
//! For every Kubernetes drift whose decided action is
//! [`Action::Correct`](crate::model::Action::Correct) (autocorrect mode, class safe):
//! - **Modified** and **Missing**: server-side apply (`PATCH`, `application/apply-patch+yaml`)
//!   of the desired object as Git has it, field manager `driftwarden`, `force=true` only when
//!   the target's `guardrails.force` allows taking fields from other managers. A 409 conflict
//!   without force is not forced: the drift is escalated as if risky (`owned by <manager>`).
//! - **Unmanaged**: deleted, only with `guardrails.prune: true` and a complete read.
//! - After a write, the object is read again and diffed against Git: `done` only when the drift
//!   is gone, else `failed` with what still differs.
//! - A correction that fails (the API's error, or a re-read that still differs) is recorded
//!   `failed` with the API's message and also returned as an error of the run (exit 1); the
//!   other corrections of the target still go ahead.
//! - An apply the server refuses for the object itself (a 500 `failed to create typed patch
//!   object`: a field the kind's schema does not declare, such as a typo in Git; a 422
//!   `Invalid`) is sent once, never retried, and fails the correction naming the object and the
//!   server's message; nothing else is done for that object (no re-read, no history).
//! - `--dry-run` sends the same requests with `dryRun=All` and reports what the server would
//!   change; nothing is stored and no history is recorded.
//!
//! Guardrails ([`super::guardrails`], shared with the EC2 actuator and checked in the same order
//! before the first request): the prune rules, the per-resource hourly limit (escalates), then
//! the blast radius (over the limit nothing is corrected and every correction is skipped with
//! the reason). Request bodies and Secret values are never logged or reported.

use std::collections::BTreeMap;

use serde_json::Value;

use super::ActContext;
use super::guardrails::{self, Removal, escalate, record, source_error};
use crate::config::LiveSource;
use crate::diff::{self, DiffOptions};
use crate::live::kube::{ApiResource, Kube, KubeError, Rejection, error_chain};
use crate::model::{ActionResult, Drift, DriftKind, FIELD_MANAGER, ResourceId, SourceError};

/// Server bookkeeping that must not be sent back in an apply body (a `resourceVersion` would
/// become a precondition, `managedFields` is refused).
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// One correction to carry out.
struct Job {
    index: usize,
    delete: bool,
}

/// Carries out the Kubernetes corrections of one target and records each outcome in
/// `drift.action`. Returns errors for the report when the cluster could not be reached at all
/// or the remediation history could not be kept.
pub async fn run(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let LiveSource::Kubernetes(src) = &ctx.target.live else {
        return Vec::new();
    };
    let mut errors = Vec::new();
    let wanted: Vec<usize> = drifts
        .iter()
        .enumerate()
        .filter(|(_, d)| is_candidate(d))
        .map(|(i, _)| i)
        .collect();
    if wanted.is_empty() {
        return errors;
    }

    // 1. Deletions need prune and a complete read.
    let mut jobs = Vec::new();
    for i in wanted {
        let Some(d) = drifts.get_mut(i) else { continue };
        let delete = d.kind == DriftKind::Unmanaged;
        if delete && guardrails::hold_removal(ctx, d, Removal::Object) {
            continue;
        }
        jobs.push(Job { index: i, delete });
    }

    // 2. The remediation history, the hourly limit per resource (past it, escalate) and the
    // blast radius (all or nothing).
    let Some(mut admitted) =
        guardrails::admit(ctx, drifts, &mut jobs, |job| job.index, &mut errors)
    else {
        return errors;
    };

    // 3. Act, namespaces and CRDs first, deletions last.
    let kube = match Kube::connect(src).await {
        Ok(k) => k,
        Err(e) => {
            let msg = error_chain(&e);
            for job in &jobs {
                if let Some(d) = drifts.get_mut(job.index) {
                    fail(d, &format!("cannot reach the cluster: {msg}"));
                }
            }
            errors.push(source_error(
                ctx,
                format!("cannot reach the cluster: {msg}"),
            ));
            return errors;
        }
    };
    jobs.sort_by_key(|job| {
        let d = drifts.get(job.index);
        let kind = d.map(|d| d.resource.id.type_name()).unwrap_or_default();
        let rank = match (job.delete, kind.as_str()) {
            (true, _) => 3,
            (false, "Namespace") => 0,
            (false, "CustomResourceDefinition") => 1,
            _ => 2,
        };
        (rank, job.index)
    });
    for job in &jobs {
        let Some(d) = drifts.get_mut(job.index) else {
            continue;
        };
        // Consecutive failures on the target stop its corrections for the run.
        if let Some(reason) = ctx.audit.corrections_stopped(&ctx.target.name) {
            guardrails::skip(d, "consecutive failures", reason);
            continue;
        }
        // The intent is on disk before the request is sent, or the request is not sent.
        let (action, operation) = if job.delete {
            ("prune", "delete")
        } else {
            ("correct", "server-side apply")
        };
        let id = match ctx.audit.intent(d, action, operation) {
            Ok(id) => id,
            Err(e) => {
                let msg = format!(
                    "not corrected: the audit log cannot be written ({}); nothing is acted on without a record",
                    error_chain(&e)
                );
                fail(d, &msg);
                errors.push(super::guardrails::source_error(
                    ctx,
                    format!("{}: {msg}", d.resource.display),
                ));
                continue;
            }
        };
        let wrote = if job.delete {
            delete_one(&kube, ctx, d).await
        } else {
            apply_one(&kube, ctx, d).await
        };
        if let Err(e) = ctx.audit.result(&id, d, confirmed(d)) {
            errors.push(super::guardrails::source_error(
                ctx,
                format!(
                    "{}: the result of the correction could not be recorded: {}",
                    d.resource.display,
                    error_chain(&e)
                ),
            ));
        }
        if wrote && !ctx.dry_run {
            admitted.record(d);
        }
        // A correction that failed is a runtime failure of the run (exit 1), as for the EC2
        // actuator; the other corrections still went ahead.
        if let Some(a) = d
            .action
            .as_ref()
            .filter(|a| a.result == ActionResult::Failed)
        {
            errors.push(source_error(
                ctx,
                format!(
                    "{}: {}",
                    d.resource.display,
                    a.detail.as_deref().unwrap_or("correction failed")
                ),
            ));
        }
    }
    errors.extend(admitted.save(ctx));
    errors
}

/// Whether a re-read confirmed the outcome recorded on `d`: a correction that is done was read
/// back matching Git, except a deletion still waiting on finalizers.
fn confirmed(d: &Drift) -> Option<bool> {
    let a = d.action.as_ref()?;
    match a.result {
        ActionResult::Done => Some(
            !a.detail
                .as_deref()
                .is_some_and(|s| s.contains("waits on finalizers")),
        ),
        ActionResult::Failed => Some(false),
        _ => None,
    }
}

/// A Kubernetes drift decided `Correct` and not yet carried out.
fn is_candidate(d: &Drift) -> bool {
    matches!(d.resource.id, ResourceId::Kubernetes { .. }) && guardrails::is_planned_correction(d)
}

fn fail(d: &mut Drift, detail: &str) {
    record(d, ActionResult::Failed, detail);
}

/// The parts of a resource id an API request needs.
struct Names<'a> {
    group: &'a str,
    version: &'a str,
    kind: &'a str,
    namespace: Option<&'a str>,
    name: &'a str,
}

fn names(id: &ResourceId) -> Option<Names<'_>> {
    match id {
        ResourceId::Kubernetes {
            group,
            version,
            kind,
            namespace,
            name,
            ..
        } => Some(Names {
            group,
            version,
            kind,
            namespace: namespace.as_deref(),
            name,
        }),
        _ => None,
    }
}

async fn resolve(kube: &Kube, d: &mut Drift) -> Option<(ApiResource, Option<String>, String)> {
    let Some(n) = names(&d.resource.id) else {
        fail(d, "not a Kubernetes resource");
        return None;
    };
    let (namespace, name) = (n.namespace.map(str::to_string), n.name.to_string());
    match kube.resolve(n.group, n.version, n.kind, true).await {
        Ok(Some(res)) => {
            let ns = if res.namespaced { namespace } else { None };
            Some((res, ns, name))
        }
        Ok(None) => {
            let what = format!("{} in API group `{}`", n.kind, n.group);
            fail(d, &format!("the API server does not serve {what}"));
            None
        }
        Err(e) => {
            fail(d, &format!("discovery failed: {}", error_chain(&e)));
            None
        }
    }
}

/// The apply body: the desired object with its namespace settled and server bookkeeping
/// removed.
fn apply_body(desired: &Value, namespace: Option<&str>) -> Value {
    let mut body = desired.clone();
    if let Some(obj) = body.as_object_mut() {
        obj.remove("status");
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SERVER_METADATA {
                meta.remove(*k);
            }
            match namespace {
                Some(ns) => {
                    meta.insert("namespace".into(), Value::String(ns.to_string()));
                }
                None => {
                    meta.remove("namespace");
                }
            }
        }
    }
    body
}

/// Server-side applies one desired object. Returns true when the live object was written.
async fn apply_one(kube: &Kube, ctx: &ActContext<'_>, d: &mut Drift) -> bool {
    let Some(desired) = ctx.desired.get(&d.resource.id.key()).cloned() else {
        fail(d, "the desired object is not available to apply");
        return false;
    };
    let Some((res, ns, name)) = resolve(kube, d).await else {
        return false;
    };
    let secret = diff::is_secret(&d.resource.id);
    let force = ctx.target.guardrails.force;
    let body = apply_body(&desired, ns.as_deref());
    let sent = kube
        .apply(&res, ns.as_deref(), &name, &body, force, ctx.dry_run)
        .await;
    let how = format!(
        "server-side apply (field manager {FIELD_MANAGER}{})",
        if force { ", force" } else { "" }
    );
    let (code, returned) = match sent {
        Ok(ok) => ok,
        Err(e) if e.code() == Some(409) => {
            let owners = conflict_owners(&e);
            let reason = format!(
                "escalated: server-side apply {}conflicts: {owners}; `guardrails.force` is off, so fields other managers own are not taken",
                if ctx.dry_run { "(dry run) " } else { "" }
            );
            escalate(d, ctx, &reason);
            return false;
        }
        Err(e) => {
            let detail = match e.rejection() {
                Some(Rejection::Schema) => format!(
                    "{how} failed: the API server cannot type {} against its kind's schema (a field the schema does not declare, or a value of the wrong type); the manifest in Git must change, so it was sent once and not retried: {}",
                    d.resource.display,
                    api_message(&e, secret)
                ),
                _ => format!("{how} failed: {}", api_message(&e, secret)),
            };
            fail(d, &detail);
            return false;
        }
    };
    let opts = diff_options(ctx);
    if ctx.dry_run {
        let would = if code == 201 || d.kind == DriftKind::Missing {
            format!("would create {}", d.resource.display)
        } else {
            let paths: Vec<&str> = d.changes.iter().map(|c| c.path.as_str()).collect();
            format!("would change {}", paths.join(", "))
        };
        let left = diff::diff_object(&d.resource.id, &desired, &returned, &opts);
        let detail = if left.changes.is_empty() {
            format!(
                "dry run (dryRun=All): the server accepted the {how} and {would}; nothing was stored"
            )
        } else {
            format!(
                "dry run (dryRun=All): the server accepted the {how} but it would still differ at {}; nothing was stored",
                change_paths(&left.changes)
            )
        };
        record(d, ActionResult::Planned, detail);
        return false;
    }
    let verb = if code == 201 { "created" } else { "corrected" };
    match kube.get(&res, ns.as_deref(), &name).await {
        Ok(Some(live)) => {
            let left = diff::diff_object(&d.resource.id, &desired, &live, &opts);
            if left.changes.is_empty() {
                record(
                    d,
                    ActionResult::Done,
                    format!("{verb} by {how}; the re-read confirms the drift is gone"),
                );
            } else {
                record(
                    d,
                    ActionResult::Failed,
                    format!(
                        "{verb} by {how}, but the re-read still differs at {} (a controller or webhook may revert it)",
                        change_paths(&left.changes)
                    ),
                );
            }
        }
        Ok(None) => record(
            d,
            ActionResult::Failed,
            format!("{verb} by {how}, but the object is gone on re-read"),
        ),
        Err(e) => record(
            d,
            ActionResult::Failed,
            format!(
                "{verb} by {how}, but the re-read failed: {}",
                api_message(&e, secret)
            ),
        ),
    }
    true
}

/// Deletes one Unmanaged object. Returns true when the live object was deleted.
async fn delete_one(kube: &Kube, ctx: &ActContext<'_>, d: &mut Drift) -> bool {
    let Some((res, ns, name)) = resolve(kube, d).await else {
        return false;
    };
    let secret = diff::is_secret(&d.resource.id);
    match kube.delete(&res, ns.as_deref(), &name, ctx.dry_run).await {
        Ok(_) if ctx.dry_run => {
            record(
                d,
                ActionResult::Planned,
                format!(
                    "dry run (dryRun=All): the server accepted the deletion of {}; nothing was deleted",
                    d.resource.display
                ),
            );
            false
        }
        Ok(None) => {
            record(d, ActionResult::Done, "already gone".to_string());
            false
        }
        Ok(Some(_)) => {
            match kube.get(&res, ns.as_deref(), &name).await {
                Ok(None) => record(
                    d,
                    ActionResult::Done,
                    "pruned (deleted, background propagation); the re-read confirms it is gone"
                        .to_string(),
                ),
                Ok(Some(live)) => {
                    let finalizers: Vec<&str> = live
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .map(|f| f.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    record(
                        d,
                        ActionResult::Done,
                        format!(
                            "deletion accepted; the object waits on finalizers [{}]",
                            finalizers.join(", ")
                        ),
                    );
                }
                Err(e) => record(
                    d,
                    ActionResult::Failed,
                    format!(
                        "deleted, but the re-read failed: {}",
                        api_message(&e, secret)
                    ),
                ),
            }
            true
        }
        Err(e) => {
            fail(d, &format!("delete failed: {}", api_message(&e, secret)));
            false
        }
    }
}

fn diff_options(ctx: &ActContext<'_>) -> DiffOptions {
    let mut opts = DiffOptions::new(&ctx.target.name);
    opts.ignore = ctx.target.ignore.clone();
    opts.strict = ctx.target.strict;
    opts
}

fn change_paths(changes: &[crate::model::FieldChange]) -> String {
    let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
    paths.join(", ")
}

/// The API's message for a failed request. For a Secret, where a validation message could
/// quote a value, only the status, reason and field names are kept (the request layer has
/// already masked the server's text; this keeps the rule where the detail is written). A typed
/// patch error keeps its masked message: object and field paths, no values.
fn api_message(e: &KubeError, secret: bool) -> String {
    if !secret || e.rejection() == Some(Rejection::Schema) {
        return error_chain(e);
    }
    match e {
        KubeError::Api {
            method,
            path,
            code,
            reason,
            status,
            ..
        } => {
            let fields: Vec<String> = status
                .as_ref()
                .and_then(|s| s.details.as_ref())
                .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
                .unwrap_or_default();
            let mut s = format!("{method} {path}: HTTP {code} {reason} (message withheld: Secret)");
            if !fields.is_empty() {
                s.push_str(&format!(", fields: {}", fields.join(", ")));
            }
            s
        }
        other => error_chain(other),
    }
}

/// `owned by kubectl-set (.spec.template.spec.containers[name="web"].image), kubectl
/// (.spec.replicas)`, from a 409's `details.causes` (`conflict with "<manager>"`).
fn conflict_owners(e: &KubeError) -> String {
    let mut by_manager: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(details) = e.status().and_then(|s| s.details.as_ref()) {
        for c in &details.causes {
            let manager = c
                .message
                .split('"')
                .nth(1)
                .filter(|m| !m.is_empty())
                .unwrap_or("another manager")
                .to_string();
            by_manager.entry(manager).or_default().push(c.field.clone());
        }
    }
    if by_manager.is_empty() {
        let message = e.status().map(|s| s.message.clone()).unwrap_or_default();
        return format!("owned by another field manager ({message})");
    }
    let parts: Vec<String> = by_manager
        .into_iter()
        .map(|(m, fields)| format!("{m} ({})", fields.join(", ")))
        .collect();
    format!("owned by {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_body_drops_bookkeeping_and_settles_namespace() {
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "resourceVersion": "9", "managedFields": [], "uid": "u"},
            "data": {"a": "b"}, "status": {}});
        let body = apply_body(&desired, Some("shop"));
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "namespace": "shop"}, "data": {"a": "b"}})
        );
        let cluster = apply_body(
            &json!({"kind": "ClusterRole", "metadata": {"name": "r", "namespace": "x"}}),
            None,
        );
        assert_eq!(
            cluster,
            json!({"kind": "ClusterRole", "metadata": {"name": "r"}})
        );
    }

    #[test]
    fn conflict_owners_reads_the_status_causes() {
        let status: kube::core::Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Apply failed with 2 conflicts: ...", "reason": "Conflict",
            "details": {"causes": [
                {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\"", "field": ".spec.replicas"},
                {"reason": "FieldManagerConflict", "message": "conflict with \"kubectl-set\"", "field": ".spec.template.spec.containers[name=\"web\"].image"}
            ]}, "code": 409}))
        .unwrap();
        let e = KubeError::Api {
            method: "PATCH".into(),
            path: "/apis/apps/v1/namespaces/shop/deployments/web".into(),
            code: 409,
            reason: "Conflict".into(),
            message: status.message.clone(),
            attempts: 1,
            status: Some(Box::new(status)),
        };
        assert_eq!(
            conflict_owners(&e),
            "owned by kubectl (.spec.replicas), kubectl-set (.spec.template.spec.containers[name=\"web\"].image)"
        );
    }
}
