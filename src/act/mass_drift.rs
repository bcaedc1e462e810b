//! Mass drift: one issue for a target instead of a pull-request storm (docs/pull-requests.md,
//! "Mass drift").
//!
//! When more than `pull_requests.max_proposal_percent` (default 25%) of a target's resources
//! drift in one run, and at least `pull_requests.min_mass_drift` of them (default 10), or live
//! holds none of the target's resources (every one Missing, two or more), the run is far more
//! likely looking at the wrong thing (another kube context, a deleted namespace, a rebuilt
//! cluster, a Git path that moved) than at that many separate changes. Then, for that target:
//!
//! 1. [`hold`] (before any actuator): every pull request, issue and correction still planned is
//!    skipped with the guardrail `mass drift` (the report and the audit `outcome` record say
//!    so). Nothing is queued for a later run: each run decides afresh. The revert loop and the
//!    closing of resolved items do not run for the target either (a read that saw this much
//!    drift is not trusted to resolve anything).
//! 2. [`run`] (after the correctors): one issue for the target, found again by its marker
//!    (`<!-- driftwarden:mass target=… counts=… -->`), opened or updated when what it says
//!    changed (counts by drift kind and resource kind, likely causes, the report's link). An
//!    issue a person closed for the same counts is not reopened. A later run over the whole
//!    target that finds no mass drift, after a complete read, closes the issue with a comment
//!    saying why. A pass over some objects only (`watch`, after an event) leaves an issue the
//!    last pass over the whole target wrote as it is, and closes nothing.
//!
//! Every forge write is audited like a drift's: an intent before (`action: mass_drift_issue`,
//! `fingerprint: mass-drift`, `resource`: the target), its result after.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::ActContext;
use super::guardrails::{is_planned_correction, skip};
use super::pull_request::{self, LABEL_DRIFT, code, report_pointer, title_text};
use crate::config::{DEFAULT_MAX_PROPOSAL_PERCENT, DEFAULT_MIN_MASS_DRIFT, PullRequestSettings};
use crate::errors::error_chain;
use crate::forge::{Forge, ForgeError, Item, NewIssue, truncate_body};
use crate::model::{
    Action, ActionResult, Drift, DriftKind, MassDrift, Mode, ResourceId, SourceError,
};

/// Why a write of the mass-drift issue did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The forge refused or could not be reached.
    #[error(transparent)]
    Forge(#[from] ForgeError),
    /// The audit log could not record the intent, so nothing was sent.
    #[error("not written: {0}")]
    NotRecorded(String),
}

/// The guardrail (a `skip`'s why) of every action mass drift holds back.
pub const GUARDRAIL: &str = "mass drift";
/// The label of the mass-drift issue, beside `drift`.
pub const LABEL_MASS: &str = "drift/mass";
/// The marker that starts the mass-drift issue's body.
pub const MASS_MARKER: &str = "<!-- driftwarden:mass";
/// What the audit records name the issue by, in their `fingerprint` field.
pub const AUDIT_SUBJECT: &str = "mass-drift";
/// The audit `action` of the issue's forge writes.
pub const AUDIT_ACTION: &str = "mass_drift_issue";
/// How the body's line with the report's link starts; the line alone changing does not update
/// the issue (a second run with no outside change writes nothing).
const REPORT_LINE: &str = "**The report:** ";

/// The two limits, from `pull_requests` (the defaults without that section).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_percent: f64,
    pub min_drifts: usize,
}

impl Limits {
    /// The limits of a config's `pull_requests` settings.
    pub fn of(settings: Option<&PullRequestSettings>) -> Limits {
        match settings {
            Some(s) => Limits {
                max_percent: s.max_proposal_percent,
                min_drifts: s.min_mass_drift,
            },
            None => Limits {
                max_percent: DEFAULT_MAX_PROPOSAL_PERCENT,
                min_drifts: DEFAULT_MIN_MASS_DRIFT,
            },
        }
    }

    /// How the limit reads in messages.
    fn text(&self) -> String {
        format!(
            "more than {}% of the resources, at least {} drifts (pull_requests.max_proposal_percent, pull_requests.min_mass_drift)",
            trim_float(self.max_percent),
            self.min_drifts
        )
    }
}

fn trim_float(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// Whether `drifts` of a target with `checked` resources are a mass drift, and what it looks
/// like. Pure: no IO. `max_percent: 100` turns detection off.
pub fn assess(target: &str, limits: Limits, checked: usize, drifts: &[Drift]) -> Option<MassDrift> {
    let drifted = drifts.len();
    if drifted == 0 || limits.max_percent >= 100.0 {
        return None;
    }
    let missing = drifts
        .iter()
        .filter(|d| d.kind == DriftKind::Missing)
        .count();
    let by_share = drifted as f64 * 100.0 > limits.max_percent * checked as f64
        && drifted >= limits.min_drifts;
    // Live holds none of the target's resources: proposing to delete them all from Git is never
    // right, however small the target.
    let live_empty = missing >= 2 && missing == drifted && drifted >= checked;
    let rule = if by_share {
        "share"
    } else if live_empty {
        "live empty"
    } else {
        return None;
    };
    let mut by_drift_kind: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_resource_kind: BTreeMap<String, usize> = BTreeMap::new();
    for d in drifts {
        *by_drift_kind.entry(d.kind.to_string()).or_default() += 1;
        *by_resource_kind
            .entry(d.resource.id.type_name())
            .or_default() += 1;
    }
    let percent = if checked == 0 {
        100.0
    } else {
        ((drifted as f64 * 1000.0 / checked as f64).round() / 10.0).min(100.0)
    };
    Some(MassDrift {
        target: target.to_string(),
        drifted,
        checked,
        percent,
        rule: rule.to_string(),
        causes: likely_causes(drifts),
        by_drift_kind,
        by_resource_kind,
        issue: None,
        detail: String::new(),
    })
}

/// The likely causes of a mass drift, most likely first, from what drifted.
pub fn likely_causes(drifts: &[Drift]) -> Vec<String> {
    let total = drifts.len();
    let count = |k: DriftKind| drifts.iter().filter(|d| d.kind == k).count();
    let (missing, modified, unmanaged) = (
        count(DriftKind::Missing),
        count(DriftKind::Modified),
        count(DriftKind::Unmanaged),
    );
    let kube = drifts
        .iter()
        .all(|d| matches!(d.resource.id, ResourceId::Kubernetes { .. }));
    let mut namespaces: BTreeMap<&str, usize> = BTreeMap::new();
    for d in drifts.iter().filter(|d| d.kind == DriftKind::Missing) {
        if let ResourceId::Kubernetes {
            namespace: Some(ns),
            ..
        } = &d.resource.id
        {
            *namespaces.entry(ns.as_str()).or_default() += 1;
        }
    }
    let ns_list = namespaces
        .keys()
        .map(|n| code(n))
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    if missing == total {
        if kube {
            out.push(
                "**Wrong kube context or cluster**: the target's `live` settings (kubeconfig, `context`) point at a cluster that does not run this application".to_string(),
            );
            if !ns_list.is_empty() {
                out.push(format!(
                    "**Namespace deleted or never created**: every declared object of {ns_list} is missing"
                ));
            }
            out.push(
                "**Cluster rebuilt or new**: nothing has deployed the application to it yet"
                    .to_string(),
            );
            out.push("**Git path changed**: the target's `desired` path, globs or ref now read manifests of something that is not deployed here".to_string());
        } else {
            out.push("**Wrong AWS account, region or profile**: the target reads another environment than its state describes".to_string());
            out.push("**Infrastructure destroyed or rebuilt**: the resources were deleted (or re-created under new ids) outside Terraform".to_string());
            out.push("**Git path changed**: the target reads a state of another workspace or environment".to_string());
        }
    } else if unmanaged == total {
        out.push("**Git path changed**: the target's `desired` path, globs or ref no longer read the manifests of what runs, so everything live looks unmanaged".to_string());
        out.push("**Manifests removed from Git**: a move or refactor in Git the target's config has not followed".to_string());
        if kube {
            out.push("**Wrong kube context or cluster**: this cluster runs other objects carrying the tracking label".to_string());
        } else {
            out.push(
                "**Wrong AWS account or region**: it holds resources no state describes"
                    .to_string(),
            );
        }
    } else if missing > 0 && unmanaged > 0 && missing + unmanaged >= modified {
        out.push("**Wrong kube context or cluster**: live holds other objects than Git declares (another environment of the application)".to_string());
        out.push("**Git path changed**: the target now reads manifests of another application or environment".to_string());
        out.push("**Objects renamed or moved**: names or namespaces changed in Git or live (the target's `namespace` setting included)".to_string());
    } else {
        out.push("**A change across the cluster**: an upgrade, a mutating admission webhook or a controller rewriting fields on many objects".to_string());
        out.push("**A bulk change outside Git**: `kubectl apply` or `helm upgrade` from another source, a restore from backup".to_string());
        out.push(
            "**Git ahead of live**: a change merged in Git that nothing has deployed yet"
                .to_string(),
        );
        out.push("**Wrong kube context or cluster**: another environment of the same application, with other values".to_string());
    }
    out
}

/// The counts digest in the marker: a person's close holds for the same counts only.
fn counts_digest(m: &MassDrift) -> String {
    let doc = serde_json::json!([m.drifted, m.checked, m.by_drift_kind, m.by_resource_kind]);
    let digest = Sha256::digest(doc.to_string().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// What a mass-drift marker says: the target, the counts digest, and why driftwarden closed it
/// (`None`: open, or a person closed it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MassMarker {
    pub target: String,
    pub counts: String,
    pub closed: Option<String>,
}

/// Reads the mass-drift marker of a body.
pub fn parse_marker(body: &str) -> Option<MassMarker> {
    let start = body.find(MASS_MARKER)? + MASS_MARKER.len();
    let end = start + body[start..].find("-->")?;
    let mut target = None;
    let mut counts = String::new();
    let mut closed = None;
    for tok in body[start..end].split_whitespace() {
        match tok.split_once('=') {
            Some(("target", v)) => target = Some(v.to_string()),
            Some(("counts", v)) => counts = v.to_string(),
            Some(("closed", v)) => closed = Some(v.to_string()),
            _ => {}
        }
    }
    Some(MassMarker {
        target: target?,
        counts,
        closed,
    })
}

/// The body with `closed=<why>` added to its marker.
fn mark_closed(body: &str, why: &str) -> String {
    let Some(start) = body.find(MASS_MARKER) else {
        return body.to_string();
    };
    let Some(end) = body[start..].find("-->").map(|e| start + e) else {
        return body.to_string();
    };
    if body[start..end].contains(" closed=") {
        return body.to_string();
    }
    format!("{} closed={why} {}", body[..end].trim_end(), &body[end..])
}

/// The issue's title.
fn title(m: &MassDrift) -> String {
    title_text(&format!(
        "driftwarden: mass drift on target {}: {} of {} resources drifted",
        m.target, m.drifted, m.checked
    ))
}

/// The issue's body. Deterministic but for the report's link (which alone never updates it).
fn render_body(m: &MassDrift, limits: Limits, settings: Option<&PullRequestSettings>) -> String {
    let mut out = Vec::<String>::new();
    out.push(format!(
        "{MASS_MARKER} target={} counts={} -->",
        m.target,
        counts_digest(m)
    ));
    out.push(format!(
        "## Mass drift on target {}: {} of {} resources drifted ({}%)",
        code(&m.target),
        m.drifted,
        m.checked,
        trim_float(m.percent)
    ));
    out.push(String::new());
    let why = if m.rule == "share" {
        format!("over the limit of {}", limits.text())
    } else {
        "live holds none of the target's resources".to_string()
    };
    out.push(format!(
        "This run found {} of the target's {} resources drifted at once, {why}. So many drifts in one run rarely are that many separate changes: it usually means driftwarden is looking at the wrong thing. While this lasts, driftwarden opens **no pull request or issue per drift** for this target (none proposes deleting the application from Git because live is empty), **corrects nothing** on it, and closes none of its open items; this issue is updated while the condition lasts and closed by the first run that no longer sees it.",
        m.drifted, m.checked
    ));
    out.push(String::new());
    out.push("### Likely causes".to_string());
    out.push(String::new());
    for c in &m.causes {
        out.push(format!("- {c}"));
    }
    out.push(String::new());
    out.push("### What drifted".to_string());
    out.push(String::new());
    out.push("| drift kind | resources |".to_string());
    out.push("| --- | --- |".to_string());
    for (k, n) in &m.by_drift_kind {
        out.push(format!("| {k} | {n} |"));
    }
    out.push(String::new());
    out.push("| resource kind | resources |".to_string());
    out.push("| --- | --- |".to_string());
    for (k, n) in &m.by_resource_kind {
        out.push(format!("| {} | {n} |", code(k)));
    }
    out.push(String::new());
    out.push("### What to do".to_string());
    out.push(String::new());
    out.push("- Check what the target reads: the kube context or AWS account it uses, the namespace, the desired Git path and ref. Fixing a wrong setting ends the mass drift, and the next run closes this issue.".to_string());
    out.push("- A new or rebuilt cluster is populated by whatever deploys to it (Argo CD, Flux, a pipeline). For driftwarden to recreate everything itself in `autocorrect` mode, run it once with `pull_requests.max_proposal_percent: 100` (mass-drift detection off; `guardrails.max_correction_percent` still applies).".to_string());
    out.push("- If the drift is real and meant, the per-drift pull requests come back once fewer resources drift than the limit, or with a higher `pull_requests.max_proposal_percent`.".to_string());
    out.push(String::new());
    out.push(format!(
        "{REPORT_LINE}{}",
        report_pointer(settings, &m.target)
    ));
    out.push(String::new());
    out.push("<sub>Written by driftwarden: updated while the mass drift lasts, closed when it ends. Keep the first line (a hidden marker) as it is.</sub>".to_string());
    let body = out.join("\n") + "\n";
    truncate_body(
        &body,
        pull_request::BODY_LIMIT,
        &report_pointer(settings, &m.target),
    )
}

/// Whether two bodies say the same, the report's link aside.
fn same_substance(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.replace("\r\n", "\n")
            .lines()
            .filter(|l| !l.starts_with(REPORT_LINE))
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string()
    };
    norm(a) == norm(b)
}

/// Before the actuators: when the target is in mass drift, holds back every pull request, issue
/// and correction still planned for it (guardrail `mass drift`) and returns what was found.
///
/// A pass over some objects only (`watch`, after an event) cannot judge the target as a whole:
/// while the last pass over the whole target found mass drift, the drifts of such a pass are held
/// back the same way (and the target's issue is left as that pass wrote it).
pub fn hold(ctx: &ActContext<'_>, drifts: &mut [Drift]) -> Option<MassDrift> {
    let settings = ctx.pull_requests.and_then(|s| s.settings());
    let limits = Limits::of(settings);
    let (mass, carried) = match assess(&ctx.target.name, limits, ctx.checked, drifts) {
        Some(m) => (m, false),
        None if ctx.only.is_some() && !drifts.is_empty() => {
            let m = ctx.pull_requests?.mass_drift_of(&ctx.target.name)?;
            (m, true)
        }
        None => return None,
    };
    warn!(
        target = %ctx.target.name,
        drifted = mass.drifted,
        checked = mass.checked,
        rule = %mass.rule,
        carried,
        "mass drift: one issue for the target instead of an item per drift; nothing corrected"
    );
    let found = format!(
        "{} of {} resources drifted ({}%; {})",
        mass.drifted,
        mass.checked,
        trim_float(mass.percent),
        if mass.rule == "share" {
            format!("the limit is {}", limits.text())
        } else {
            "live holds none of the target's resources".to_string()
        }
    );
    let detail = if carried {
        format!(
            "held back: mass drift on target {}: the last comparison of the whole target found {found}; no item per drift and no correction until one finds it over",
            ctx.target.name
        )
    } else {
        format!(
            "held back: mass drift on target {}: {found}; one issue for the target instead of an item per drift, and no correction",
            ctx.target.name
        )
    };
    for d in drifts.iter_mut() {
        let proposal = d.action.as_ref().is_some_and(|a| {
            matches!(a.action, Action::PullRequest | Action::Issue)
                && a.result == ActionResult::Planned
        });
        if proposal || is_planned_correction(d) {
            skip(d, GUARDRAIL, detail.clone());
        }
    }
    Some(mass)
}

/// After the correctors: opens or updates the target's mass-drift issue when `mass` is set, or
/// closes an open one when the whole target was compared, completely, without mass drift. The
/// report's note is recorded in the session. Returns forge and audit failures for the report.
pub async fn run(
    ctx: &ActContext<'_>,
    mass: Option<MassDrift>,
    drifts: &mut [Drift],
) -> Vec<SourceError> {
    let Some(session) = ctx.pull_requests else {
        return Vec::new();
    };
    let settings = session.settings();
    let limits = Limits::of(settings);
    let mut errors = Vec::new();
    let writes = settings.is_some() && ctx.mode != Mode::Observe && !ctx.dry_run;
    let Some(mut mass) = mass else {
        if ctx.only.is_none() {
            session.clear_mass_drift(&ctx.target.name);
            if writes {
                errors.extend(close_ended(ctx, session, drifts).await);
            }
        }
        return errors;
    };
    // A pass over some objects only (`watch`, after an event) leaves the issue as the last pass
    // over the whole target wrote it: its held drifts point there.
    if let Some(prev) = ctx
        .only
        .and_then(|_| session.mass_drift_of(&ctx.target.name))
    {
        point_at_issue(drifts, prev.issue.as_deref());
        return errors;
    }
    if !writes {
        mass.detail = if settings.is_none() {
            "planned: no `pull_requests` configured, so no issue is written".to_string()
        } else if ctx.dry_run {
            "planned: a dry run writes no issue".to_string()
        } else {
            "observe mode: no issue is written".to_string()
        };
        session.note_mass_drift(mass);
        return errors;
    }
    let forge = match session.forge().await {
        Ok(f) => f,
        Err(e) => {
            mass.detail = format!("failed: the forge is unavailable: {e}");
            session.note_mass_drift(mass);
            errors.push(source_error(ctx, format!("mass drift issue: {e}")));
            return errors;
        }
    };
    match write_issue(ctx, forge, &mass, limits, settings, &mut errors).await {
        Ok((issue, detail)) => {
            mass.issue = issue;
            mass.detail = detail;
        }
        Err(e) => {
            let msg = error_chain(&e);
            warn!(target = %ctx.target.name, error = %msg, "mass drift issue failed");
            mass.detail = format!("failed: {msg}");
            errors.push(source_error(ctx, format!("mass drift issue: {msg}")));
        }
    }
    point_at_issue(drifts, mass.issue.as_deref());
    session.note_mass_drift(mass);
    errors
}

/// Each held-back drift names where the target's issue is.
fn point_at_issue(drifts: &mut [Drift], issue: Option<&str>) {
    let Some(issue) = issue else { return };
    for d in drifts.iter_mut() {
        let Some(a) = d.action.as_mut() else { continue };
        if matches!(&a.action, Action::Skip { why } if why == GUARDRAIL) {
            if let Some(detail) = a.detail.as_mut() {
                detail.push_str(&format!("; see {issue}"));
            }
        }
    }
}

fn source_error(ctx: &ActContext<'_>, message: String) -> SourceError {
    SourceError {
        target: ctx.target.name.clone(),
        side: "pull_requests".into(),
        message,
    }
}

/// The open mass-drift issues of a target.
async fn open_issues(forge: &Forge, target: &str) -> Result<Vec<Item>, ForgeError> {
    let prefix = format!("driftwarden/{target}/");
    Ok(forge
        .open_items(&prefix, LABEL_DRIFT)
        .await?
        .into_iter()
        .filter(|i| parse_marker(&i.body).is_some_and(|m| m.target == target))
        .collect())
}

/// An audited forge write for the target: intent, the write, result. An intent that cannot be
/// recorded means the write is not sent.
async fn audited<F, T>(
    ctx: &ActContext<'_>,
    what: &str,
    write: F,
    errors: &mut Vec<SourceError>,
) -> Result<T, Error>
where
    F: std::future::Future<Output = Result<T, ForgeError>>,
{
    let target = &ctx.target.name;
    let id = ctx
        .audit
        .target_intent(target, AUDIT_SUBJECT, AUDIT_ACTION, "forge")
        .map_err(|e| Error::NotRecorded(e.refusal()))?;
    let res = write.await;
    let (outcome, message) = match &res {
        Ok(_) => (ActionResult::Done, what.to_string()),
        Err(e) => (ActionResult::Failed, format!("{what}: {}", error_chain(e))),
    };
    if let Err(e) = ctx
        .audit
        .target_result(&id, target, AUDIT_SUBJECT, outcome, message)
    {
        errors.push(source_error(
            ctx,
            format!(
                "mass drift issue: the result of the forge write could not be recorded: {}",
                error_chain(&e)
            ),
        ));
    }
    Ok(res?)
}

/// Opens or updates the target's issue. Returns where it is (`None`: not written, a person
/// closed it for the same counts) and what happened.
async fn write_issue(
    ctx: &ActContext<'_>,
    forge: &Forge,
    mass: &MassDrift,
    limits: Limits,
    settings: Option<&PullRequestSettings>,
    errors: &mut Vec<SourceError>,
) -> Result<(Option<String>, String), Error> {
    let target = &ctx.target.name;
    let body = render_body(mass, limits, settings);
    let title = title(mass);
    let mut labels = vec![LABEL_DRIFT.to_string(), LABEL_MASS.to_string()];
    for l in settings.map(|s| s.labels.as_slice()).unwrap_or_default() {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    let mut open = open_issues(forge, target).await?;
    open.sort_by_key(|i| i.number);
    if let Some(issue) = open.first() {
        let place = where_(issue);
        if same_substance(&issue.body, &body) && issue.title == title {
            return Ok((
                Some(place),
                format!("issue #{} is up to date", issue.number),
            ));
        }
        audited(
            ctx,
            &format!("updated issue #{}", issue.number),
            forge.update(issue, &title, &body),
            errors,
        )
        .await?;
        info!(target = %target, number = issue.number, "mass drift issue updated");
        return Ok((
            Some(place),
            format!("updated issue #{} (the counts changed)", issue.number),
        ));
    }
    let digest = counts_digest(mass);
    let closed = forge.recently_closed(LABEL_DRIFT).await?;
    if let Some(c) = closed
        .iter()
        .find(|i| parse_marker(&i.body).is_some_and(|m| m.target == *target && m.counts == digest))
    {
        if parse_marker(&c.body).is_some_and(|m| m.closed.is_none()) {
            return Ok((
                Some(where_(c)),
                format!(
                    "issue #{} about this same mass drift was closed by a person; not reopened (a new one opens when the counts change)",
                    c.number
                ),
            ));
        }
    }
    let item = audited(
        ctx,
        "opened the mass drift issue",
        forge.create_issue(&NewIssue {
            title,
            body,
            labels,
            slug: Some(format!("{target}/{AUDIT_SUBJECT}")),
        }),
        errors,
    )
    .await?;
    info!(target = %target, number = item.number, "mass drift issue opened");
    Ok((
        Some(where_(&item)),
        format!("opened issue #{}", item.number),
    ))
}

/// How the report names an item: its URL, or `#N`.
fn where_(i: &Item) -> String {
    if i.url.is_empty() {
        format!("issue #{}", i.number)
    } else {
        format!("issue #{}: {}", i.number, i.url)
    }
}

/// Closes the target's open mass-drift issue once a run over the whole target, after a complete
/// read, no longer finds mass drift.
async fn close_ended(
    ctx: &ActContext<'_>,
    session: &pull_request::Session,
    drifts: &[Drift],
) -> Vec<SourceError> {
    let target = &ctx.target.name;
    let forge = match session.forge().await {
        Ok(f) => f,
        Err(e) => return vec![source_error(ctx, format!("mass drift issue: {e}"))],
    };
    let open = match open_issues(forge, target).await {
        Ok(o) => o,
        Err(e) => {
            return vec![source_error(
                ctx,
                format!("mass drift issue: cannot list issues: {}", error_chain(&e)),
            )];
        }
    };
    if open.is_empty() {
        return Vec::new();
    }
    if ctx.partial {
        info!(target = %target, "partial read: the mass drift issue stays open this run");
        return Vec::new();
    }
    let now = if drifts.is_empty() {
        format!(
            "every one of the target's {} resources matches Git",
            ctx.checked
        )
    } else {
        format!(
            "{} of the target's {} resources drifted, under the limit, so each drift gets its own pull request or issue again",
            drifts.len(),
            ctx.checked
        )
    };
    let text =
        format!("Closing: the mass drift is over. This run compared the whole target and {now}.");
    let mut errors = Vec::new();
    for issue in &open {
        let write = async {
            forge.comment(issue.number, &text).await?;
            forge
                .close(issue, Some(&mark_closed(&issue.body, "ended")))
                .await
        };
        let what = format!("closed issue #{}", issue.number);
        let res = audited(ctx, &what, write, &mut errors).await;
        match res {
            Ok(()) => {
                info!(target = %target, number = issue.number, "mass drift over: issue closed")
            }
            Err(e) => errors.push(source_error(
                ctx,
                format!(
                    "closing mass drift issue #{}: {}",
                    issue.number,
                    error_chain(&e)
                ),
            )),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ResourceRef, fingerprint};

    fn drift(i: usize, kind: DriftKind) -> Drift {
        let id = ResourceId::Kubernetes {
            cluster: "c".into(),
            group: String::new(),
            version: "v1".into(),
            kind: if i % 2 == 0 { "ConfigMap" } else { "Service" }.into(),
            namespace: Some("shop".into()),
            name: format!("o{i}"),
        };
        Drift {
            fingerprint: fingerprint("t", &id),
            target: "t".into(),
            resource: ResourceRef::from(id),
            kind,
            changes: Vec::new(),
            provenance: None,
            verdict: None,
            action: None,
            desired_object: None,
            live_object: None,
        }
    }

    const LIMITS: Limits = Limits {
        max_percent: 25.0,
        min_drifts: 10,
    };

    #[test]
    fn the_share_needs_the_minimum_count_too() {
        let ten: Vec<Drift> = (0..10).map(|i| drift(i, DriftKind::Modified)).collect();
        // 10 of 39 = 25.6% > 25%, and 10 drifts: mass drift.
        let m = assess("t", LIMITS, 39, &ten).unwrap();
        assert_eq!((m.drifted, m.checked, m.rule.as_str()), (10, 39, "share"));
        assert_eq!(m.by_drift_kind.get("Modified"), Some(&10));
        assert_eq!(m.by_resource_kind.get("ConfigMap"), Some(&5));
        assert_eq!(m.percent, 25.6);
        // 10 of 40 = 25%: not more than the limit.
        assert_eq!(assess("t", LIMITS, 40, &ten), None);
        // A small target: 3 Modified of 4 is 75%, but fewer than 10 drifts.
        let three: Vec<Drift> = (0..3).map(|i| drift(i, DriftKind::Modified)).collect();
        assert_eq!(assess("t", LIMITS, 4, &three), None);
        // 100 turns detection off.
        let off = Limits {
            max_percent: 100.0,
            ..LIMITS
        };
        assert_eq!(assess("t", off, 10, &ten), None);
    }

    #[test]
    fn live_empty_is_mass_drift_on_a_small_target() {
        let three: Vec<Drift> = (0..3).map(|i| drift(i, DriftKind::Missing)).collect();
        let m = assess("t", LIMITS, 3, &three).unwrap();
        assert_eq!(m.rule, "live empty");
        // Not when some resource is still there, nor for a single object.
        assert_eq!(assess("t", LIMITS, 4, &three), None);
        assert_eq!(assess("t", LIMITS, 1, &three[..1]), None);
    }

    #[test]
    fn hold_skips_corrections_and_proposals_but_leaves_reports() {
        use crate::act::DesiredObjects;
        use crate::model::ActionRecord;
        let cfg = crate::config::parse(
            "version: 1\ntargets:\n  - name: t\n    mode: autocorrect\n    desired: {dir: d}\n    live: {snapshot: s}\n",
            "t.yaml",
            std::path::Path::new("."),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let audit = crate::audit::AuditLog::open(
            &crate::config::AuditSettings {
                retention_days: 90,
                dir: Some(dir.path().to_path_buf()),
            },
            &crate::config::TrustSettings::default(),
            dir.path(),
            crate::audit::OpenOptions::default(),
        );
        let desired = DesiredObjects::default();
        let ctx = ActContext {
            target: &cfg.targets[0],
            mode: Mode::Autocorrect,
            partial: false,
            dry_run: false,
            state_dir: dir.path(),
            desired: &desired,
            checked: 20,
            pull_requests: None,
            audit: &audit,
            only: None,
            handoff: None,
        };
        let planned = |action: Action| {
            Some(ActionRecord {
                action,
                result: ActionResult::Planned,
                detail: None,
            })
        };
        let mut drifts: Vec<Drift> = (0..12)
            .map(|i| {
                let mut d = drift(i, DriftKind::Modified);
                d.action = planned(match i % 3 {
                    0 => Action::Correct,
                    1 => Action::PullRequest,
                    _ => Action::Report,
                });
                d
            })
            .collect();
        // 12 of 20: mass drift.
        let m = hold(&ctx, &mut drifts).unwrap();
        assert_eq!((m.drifted, m.checked), (12, 20));
        for (i, d) in drifts.iter().enumerate() {
            let a = d.action.as_ref().unwrap();
            if i % 3 == 2 {
                assert_eq!(a.action, Action::Report, "a report stays a report");
                continue;
            }
            assert_eq!(
                (&a.action, &a.result),
                (
                    &Action::Skip {
                        why: GUARDRAIL.into()
                    },
                    &ActionResult::Skipped
                )
            );
            assert!(
                a.detail.as_deref().unwrap().starts_with(
                    "held back: mass drift on target t: 12 of 20 resources drifted (60%; the limit is more than 25% of the resources, at least 10 drifts"
                ),
                "{a:?}"
            );
        }
        // Under the limit nothing is touched.
        let mut few: Vec<Drift> = drifts[..9].to_vec();
        for d in &mut few {
            d.action = planned(Action::Correct);
        }
        assert_eq!(hold(&ctx, &mut few), None);
        assert!(
            few.iter()
                .all(|d| d.action.as_ref().unwrap().action == Action::Correct)
        );
    }

    #[test]
    fn causes_follow_the_counts() {
        let missing: Vec<Drift> = (0..12).map(|i| drift(i, DriftKind::Missing)).collect();
        let c = likely_causes(&missing);
        assert!(c[0].contains("Wrong kube context"), "{c:?}");
        assert!(
            c[1].contains("Namespace deleted") && c[1].contains("`shop`"),
            "{c:?}"
        );
        let unmanaged: Vec<Drift> = (0..12).map(|i| drift(i, DriftKind::Unmanaged)).collect();
        assert!(likely_causes(&unmanaged)[0].contains("Git path changed"));
        let modified: Vec<Drift> = (0..12).map(|i| drift(i, DriftKind::Modified)).collect();
        assert!(likely_causes(&modified)[0].contains("A change across the cluster"));
    }

    #[test]
    fn markers_round_trip_and_the_link_alone_changes_nothing() {
        let missing: Vec<Drift> = (0..12).map(|i| drift(i, DriftKind::Missing)).collect();
        let m = assess("t", LIMITS, 12, &missing).unwrap();
        let body = render_body(&m, LIMITS, None);
        let marker = parse_marker(&body).unwrap();
        assert_eq!(marker.target, "t");
        assert_eq!(marker.counts, counts_digest(&m));
        assert_eq!(marker.closed, None);
        let closed = mark_closed(&body, "ended");
        assert_eq!(
            parse_marker(&closed).unwrap().closed.as_deref(),
            Some("ended")
        );
        assert_eq!(mark_closed(&closed, "again"), closed);
        // Another run's link: the same substance.
        let other = body.replace(
            "Run `driftwarden diff --target t` for the full report.",
            "The full report is in the workflow run: https://github.com/a/b/actions/runs/2",
        );
        assert_ne!(other, body);
        assert!(same_substance(&body, &other));
        // Other counts: not the same.
        let fewer = assess("t", LIMITS, 12, &missing[..11]).unwrap();
        assert!(!same_substance(&body, &render_body(&fewer, LIMITS, None)));
        // Not an item marker: the per-drift machinery never takes it for one of its items.
        assert_eq!(pull_request::parse_marker(&body), None);
    }
}
