//! Acting on drift: the only module that changes anything (ARCHITECTURE.md, "Invariants").
//!
//! [`decide`] picks the action each drift leads to from the target's mode and the policy class
//! (no IO). [`act`] then runs the actuators of one target in order: the revert loop
//! ([`pull_request::prepare`]), the Kubernetes corrector ([`correct_kube`]: server-side apply,
//! prune, re-read to confirm, 409 → escalation), the EC2 corrector ([`correct_ec2`]), and the
//! pull requests and issues for what is left ([`pull_request::run`], with the adoption edits of
//! [`edit_yaml`] and [`edit_hcl`]). Before all of them, [`mass_drift`] holds back every action
//! of a target where too much drifted at once and writes one issue for it instead. Every
//! corrector passes [`guardrails`] first. A drift whose
//! action nothing carries out (observe mode, no `pull_requests` configured, a dry run) stays
//! `planned` in the report.

pub mod correct_ec2;
pub mod correct_kube;
pub mod edit_hcl;
pub mod edit_yaml;
pub mod guardrails;
pub mod health;
pub mod mass_drift;
pub mod pull_request;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::config::Target;
use crate::model::{Action, ActionRecord, ActionResult, Class, Drift, Mode, SourceError};

/// What the actuators of one target need to know.
#[derive(Debug)]
pub struct ActContext<'a> {
    pub target: &'a Target,
    pub mode: Mode,
    /// Some source read was partial: nothing may be deleted or pruned.
    pub partial: bool,
    /// Ask the servers what they would change instead of changing it.
    pub dry_run: bool,
    /// Where run history lives.
    pub state_dir: &'a Path,
    /// The desired objects unmasked, by resource key: what a correction applies.
    pub desired: &'a DesiredObjects,
    /// Resources checked for the target (the base of the blast-radius percentage).
    pub checked: usize,
    /// The run's pull-request session (forge, per-run cap, reverts); `None`: none configured.
    pub pull_requests: Option<&'a pull_request::Session>,
    /// The run's audit log: every action writes its intent before and its result after the
    /// request; an action whose intent cannot be written is not sent.
    pub audit: &'a crate::audit::AuditLog,
    /// A pass over some objects only (`watch`, after an event): the fingerprints it looked at.
    /// Pull requests and issues of other drifts are left alone (never closed as resolved).
    /// `None`: the whole target was compared.
    pub only: Option<&'a std::collections::HashSet<String>>,
    /// Gated corrections are handed over here instead of being followed before the actuators
    /// return (`watch`, src/act/health.rs). `None`: followed and settled in place.
    pub handoff: Option<&'a health::Handoff>,
}

/// The desired objects as Git has them, secret values included, by [`ResourceId::key`]. Its
/// `Debug` shows only the keys, so a logged context never carries a secret.
///
/// [`ResourceId::key`]: crate::model::ResourceId::key
#[derive(Default)]
pub struct DesiredObjects(pub HashMap<String, Value>);

impl DesiredObjects {
    /// The desired object of a resource key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

impl std::fmt::Debug for DesiredObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_tuple("DesiredObjects").field(&keys).finish()
    }
}

/// Carries out the decided actions of one target's drifts and records each outcome in
/// `drift.action`. Returns the failures that should appear in the report's `errors`.
///
/// Actuators plug in here by provider and action; a drift whose action no actuator handles
/// stays `planned`.
pub async fn act(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let mut errors = Vec::new();
    // --- Mass drift (src/act/mass_drift.rs): too much of the target drifted at once. Every
    // pull request, issue and correction still planned is held back; one issue for the target
    // is written after the correctors, and neither the revert loop nor the closing of resolved
    // items runs for it. ---
    let mass = mass_drift::hold(ctx, drifts);
    // --- end mass drift ---
    // --- Pull requests, part 1 (src/act/pull_request.rs): the revert loop. A drift whose pull
    // request or issue was closed with `drift/revert` is decided `Correct` here, before the
    // correctors run. ---
    if mass.is_none() {
        errors.extend(pull_request::prepare(ctx, drifts).await);
    }
    // --- end pull requests, part 1 ---
    // Kubernetes corrections (server-side apply, prune) first: a conflict it escalates becomes
    // a planned pull request or issue for the actuators after it.
    errors.extend(correct_kube::run(ctx, drifts).await);
    // --- EC2 corrections (src/act/correct_ec2.rs): tags, security group rules and instance
    // attributes of Terraform/EC2 targets; no-op for other targets. ---
    errors.extend(correct_ec2::run(ctx, drifts).await);
    // --- end EC2 corrections ---
    // A drift a corrector escalated keeps the reason (a 409's "owned by kubectl-set", the hourly
    // limit) in front of whatever the pull-request step records for it.
    let escalations = guardrails::Escalations::note(ctx, drifts);
    // --- Pull requests, part 2 (src/act/pull_request.rs): open, update or leave a pull request
    // or issue for every drift still planned as one, then close the items of drifts that are
    // gone (after a complete read only). ---
    if mass.is_none() {
        errors.extend(pull_request::run(ctx, drifts).await);
    }
    // --- end pull requests, part 2 ---
    // --- Mass drift: the target's issue opened or updated, or closed once it is over. ---
    errors.extend(mass_drift::run(ctx, mass, drifts).await);
    // --- end mass drift ---
    escalations.restore(drifts);
    // A correction the health gate rolled back is reported as such, after its escalation's
    // outcome (src/act/health.rs).
    health::finish(drifts);
    errors
}

/// Settles a correction whose gate was followed elsewhere (`watch`, [`health::Handoff`]) once
/// the gate concluded: kept or rolled back ([`correct_kube::settle`], which records the
/// correction's result), then, for a rollback, the pull request or issue it is escalated to,
/// and the drift's final outcome in the audit log. `ctx.only` should name the drift's
/// fingerprint alone, so that no other item is touched. Returns the drift as it ends and the
/// errors for the target's report.
pub async fn conclude_gate(
    ctx: &ActContext<'_>,
    kube: &crate::live::kube::Kube,
    handed: health::Handed,
    judgement: health::Judgement,
) -> (Drift, Vec<SourceError>) {
    let health::Handed {
        mut drift,
        intent,
        gate,
    } = handed;
    let mut errors = correct_kube::settle(kube, ctx, &mut drift, &intent, &gate, judgement).await;
    let escalated = drift
        .action
        .as_ref()
        .is_some_and(|a| matches!(a.action, Action::PullRequest | Action::Issue));
    if escalated {
        let drifts = std::slice::from_mut(&mut drift);
        let escalations = guardrails::Escalations::note(ctx, drifts);
        errors.extend(pull_request::run(ctx, drifts).await);
        escalations.restore(drifts);
        health::finish(drifts);
    }
    let outcome = crate::audit::outcome_event(&drift).into_iter().collect();
    if let Err(e) = ctx.audit.write(outcome) {
        errors.push(guardrails::source_error(
            ctx,
            format!(
                "the health gate's outcome could not be recorded in the audit log: {}",
                crate::errors::error_chain(&e)
            ),
        ));
    }
    (drift, errors)
}

/// The action a drift leads to under `mode`, before any actuator runs. Fail safe: a drift with
/// no verdict is treated as risky.
pub fn decide(drift: &Drift, mode: Mode) -> ActionRecord {
    let class = drift
        .verdict
        .as_ref()
        .map(|v| v.class)
        .unwrap_or(Class::Risky);
    decide_class(class, has_secret(drift), mode)
}

/// What [`decide`] picks for `drift` as if policy had called it risky, whatever its class: where
/// a correction a guardrail holds back is escalated to (a pull request, or an issue for a
/// secret).
pub fn decide_as_risky(drift: &Drift, mode: Mode) -> ActionRecord {
    decide_class(Class::Risky, has_secret(drift), mode)
}

/// Whether a drift carries a masked (secret) value, which is never adopted into Git.
fn has_secret(drift: &Drift) -> bool {
    drift.changes.iter().any(|c| c.masked)
}

/// [`decide`] for a drift of `class`; `secret`: it carries a masked value.
fn decide_class(class: Class, secret: bool, mode: Mode) -> ActionRecord {
    let (action, detail) = match (mode, class) {
        (Mode::Observe, _) => (Action::Report, "observe mode: report only".to_string()),
        (Mode::Autocorrect, Class::Safe) => (
            Action::Correct,
            "would re-apply the desired object (field manager driftwarden)".to_string(),
        ),
        (Mode::Recommend, Class::Safe) => (
            Action::Report,
            "safe: would be corrected in autocorrect mode; recommend mode makes no live writes"
                .to_string(),
        ),
        (_, Class::Risky) if secret => (
            Action::Issue,
            "a secret value is never adopted into Git: would open an issue with the masked diff"
                .to_string(),
        ),
        (_, Class::Risky) => (
            Action::PullRequest,
            "would open a pull request adopting the live change into Git".to_string(),
        ),
        (_, Class::Forbidden) => (
            Action::Issue,
            "forbidden: would open a draft pull request or issue labelled drift/forbidden"
                .to_string(),
        ),
    };
    ActionRecord {
        action,
        result: ActionResult::Planned,
        detail: Some(detail),
    }
}
