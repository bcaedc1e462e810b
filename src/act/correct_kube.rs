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
use super::health::{self, Gate, Judgement, ROLLED_BACK, Skip};
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
    let mut gated = Vec::new();
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
                let msg = format!("not corrected: {}", e.refusal());
                fail(d, &msg);
                errors.push(super::guardrails::source_error(
                    ctx,
                    format!("{}: {msg}", d.resource.display),
                ));
                continue;
            }
        };
        let (wrote, applied) = if job.delete {
            (delete_one(&kube, ctx, d).await, None)
        } else {
            let applied = apply_one(&kube, ctx, d).await;
            (applied.is_some(), applied)
        };
        // A confirmed correction of a workload is followed by the health gate; its result is
        // recorded once the gate has judged it.
        if let Some(gate) = applied.and_then(|a| gate_of(ctx, d, &a)) {
            if wrote && !ctx.dry_run {
                admitted.record(d);
            }
            gated.push((job.index, id, gate));
            continue;
        }
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
    match ctx.handoff {
        // Followed elsewhere (`watch`): reported `done` now, settled when the gate concludes.
        Some(handoff) => {
            for (index, intent, gate) in gated {
                let Some(d) = drifts.get_mut(index) else {
                    continue;
                };
                let drift = d.clone();
                append_detail(d, health::FOLLOWING);
                handoff.push(health::Handed {
                    drift,
                    intent,
                    gate,
                });
            }
        }
        None if !gated.is_empty() => {
            errors.extend(settle_gates(&kube, ctx, drifts, gated).await);
        }
        None => {}
    }
    errors.extend(admitted.save(ctx));
    errors
}

/// The health gate of a correction just made, when it has one: a confirmed correction of a
/// Modified Deployment, StatefulSet or DaemonSet, gate enabled, not a dry run, and a status
/// that can be judged. A workload already unhealthy is noted and not gated.
fn gate_of(ctx: &ActContext<'_>, d: &mut Drift, a: &Applied) -> Option<Gate> {
    let settings = &ctx.target.guardrails.health_gate;
    let done = d
        .action
        .as_ref()
        .is_some_and(|r| r.result == ActionResult::Done);
    if !settings.enabled
        || ctx.dry_run
        || !done
        || d.kind != DriftKind::Modified
        || !health::WORKLOADS.contains(&a.resource.kind.as_str())
    {
        return None;
    }
    match Gate::capture(
        d,
        &a.body,
        &a.resource,
        a.namespace.as_deref(),
        &a.name,
        settings,
    ) {
        Ok(gate) => Some(gate),
        // No controller reports a status: nothing to judge by, nothing noted.
        Err(Skip::NoStatus) => None,
        Err(Skip::AlreadyUnhealthy(why)) => {
            append_detail(
                d,
                &format!(
                    "health gate: not followed, the workload was already unhealthy before the correction ({why}), and is not rolled back for that"
                ),
            );
            None
        }
    }
}

fn append_detail(d: &mut Drift, note: &str) {
    if let Some(a) = d.action.as_mut() {
        a.detail = Some(match a.detail.take() {
            Some(detail) => format!("{detail}; {note}"),
            None => note.to_string(),
        });
    }
}

/// Follows every gated workload of the target at once (each read on its own task), then settles
/// each: kept, or rolled back and escalated. Records each correction's result in the audit log,
/// and each rollback's intent and result around its request. Returns the rollbacks as errors of
/// the run: a rolled-back correction counts as a failed one.
async fn settle_gates(
    kube: &Kube,
    ctx: &ActContext<'_>,
    drifts: &mut [Drift],
    gated: Vec<(usize, String, Gate)>,
) -> Vec<SourceError> {
    let mut errors = Vec::new();
    let mut followed = tokio::task::JoinSet::new();
    let mut ids = std::collections::HashMap::new();
    for (index, id, gate) in gated {
        ids.insert(index, id);
        let kube = kube.clone();
        followed.spawn(async move { (index, gate.follow(kube).await) });
    }
    let mut judged = Vec::new();
    while let Some(joined) = followed.join_next().await {
        match joined {
            Ok(j) => judged.push(j),
            Err(e) => errors.push(source_error(
                ctx,
                format!("the health gate's task failed: {e}"),
            )),
        }
    }
    judged.sort_by_key(|(index, _)| *index);
    for (index, (gate, judgement)) in judged {
        let (Some(d), Some(id)) = (drifts.get_mut(index), ids.remove(&index)) else {
            continue;
        };
        errors.extend(settle(kube, ctx, d, &id, &gate, judgement).await);
    }
    errors
}

/// Settles one correction its gate judged: kept (the detail says how the rollout went), or
/// rolled back and escalated. Then records the correction's result (intent `id`) in the audit
/// log. Returns the rollback as an error: a rolled-back correction counts as a failed one.
pub async fn settle(
    kube: &Kube,
    ctx: &ActContext<'_>,
    d: &mut Drift,
    id: &str,
    gate: &Gate,
    judgement: Judgement,
) -> Vec<SourceError> {
    let mut errors = Vec::new();
    match judgement {
        Judgement::Healthy(h) => append_detail(
            d,
            &format!("health gate: rolled out healthy ({})", h.evidence()),
        ),
        Judgement::Unsettled { last, why } => append_detail(
            d,
            &format!(
                "health gate: kept: {why}{}",
                last.map(|h| format!(" ({})", h.evidence()))
                    .unwrap_or_default()
            ),
        ),
        Judgement::Worse { last, why } => {
            if let Some(e) = roll_back(kube, ctx, d, gate, &last, &why).await {
                errors.push(e);
            }
        }
    }
    if let Err(e) = ctx.audit.result(id, d, confirmed(d)) {
        errors.push(source_error(
            ctx,
            format!(
                "{}: the result of the correction could not be recorded: {}",
                d.resource.display,
                error_chain(&e)
            ),
        ));
    }
    if d.action
        .as_ref()
        .is_some_and(|a| a.result == ActionResult::RolledBack)
    {
        let reason = d
            .action
            .as_ref()
            .and_then(|a| a.detail.clone())
            .unwrap_or_default();
        escalate(d, ctx, &reason);
    }
    errors
}

/// Rolls one correction back (its intent recorded first) and records the outcome on `d`:
/// `rolled_back` with the evidence, or `failed` when the rollback itself failed. Returns the
/// error for the run's report.
async fn roll_back(
    kube: &Kube,
    ctx: &ActContext<'_>,
    d: &mut Drift,
    gate: &Gate,
    last: &health::Health,
    why: &str,
) -> Option<SourceError> {
    let evidence = format!(
        "before the correction: {}; after: {}",
        gate.before.evidence(),
        last.evidence()
    );
    tracing::warn!(target = %ctx.target.name, resource = %d.resource.display, why, evidence, "the corrected workload is worse than before; rolling back");
    let rid = match ctx.audit.intent(d, "rollback", "server-side apply") {
        Ok(rid) => rid,
        Err(e) => {
            let detail = format!(
                "health gate: {why} ({evidence}); not rolled back: {}",
                e.refusal()
            );
            record(d, ActionResult::Failed, detail.clone());
            return Some(source_error(
                ctx,
                format!("{}: {detail}", d.resource.display),
            ));
        }
    };
    let out = gate.roll_back(kube, ctx.target.guardrails.force).await;
    let (result, detail) = if out.restored {
        (
            ActionResult::RolledBack,
            format!("{ROLLED_BACK}{why}; {} ({evidence})", out.detail),
        )
    } else {
        (
            ActionResult::Failed,
            format!(
                "health gate: {why} ({evidence}); the rollback failed: {}",
                out.detail
            ),
        )
    };
    let outcome = if out.restored {
        ActionResult::Done
    } else {
        ActionResult::Failed
    };
    let records = vec![
        crate::audit::Event::Result {
            id: rid,
            target: d.target.clone(),
            fingerprint: d.fingerprint.clone(),
            outcome: outcome.clone(),
            confirmed: Some(out.restored),
            message: out.detail.clone(),
        },
        crate::audit::Event::Rollback {
            target: d.target.clone(),
            fingerprint: d.fingerprint.clone(),
            resource: d.resource.id.key(),
            fields: crate::audit::field_records(d),
            evidence: evidence.clone(),
            outcome,
        },
    ];
    let recorded = ctx.audit.write(records);
    record(d, result, detail.clone());
    let mut message = format!("{}: {detail}", d.resource.display);
    if let Err(e) = recorded {
        message.push_str(&format!(
            "; the rollback could not be recorded in the audit log: {}",
            error_chain(&e)
        ));
    }
    Some(source_error(ctx, message))
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

/// What a correction wrote: where, and the object it applied.
struct Applied {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    body: Value,
}

/// Server-side applies one desired object. Returns what was applied when the live object was
/// written.
async fn apply_one(kube: &Kube, ctx: &ActContext<'_>, d: &mut Drift) -> Option<Applied> {
    let Some(desired) = ctx.desired.get(&d.resource.id.key()).cloned() else {
        fail(d, "the desired object is not available to apply");
        return None;
    };
    let (res, ns, name) = resolve(kube, d).await?;
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
            return None;
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
            return None;
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
        return None;
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
    Some(Applied {
        resource: res,
        namespace: ns,
        name,
        body,
    })
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
