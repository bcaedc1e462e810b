//! Notifications: webhook receivers told what driftwarden did (`notify:` in the config).
//!
//! Each receiver has a URL (and optionally a bearer token) read from environment variables the
//! config names, a body format (driftwarden's versioned JSON body, or a Slack-compatible `text`
//! and `blocks` body), and the events it wants ([`EventKind`]).
//!
//! Delivery is a side channel and never holds a correction back:
//! - events are built from a target's drifts **after** its actions ran ([`target_events`]) and
//!   from the finished report ([`run_events`]), and sent by [`Notifier::send`], an owned future
//!   the caller spawns (`reconcile` spawns one per target and awaits them all at the end of the
//!   run; `watch` can spawn one per event);
//! - every (receiver, event) pair is one POST, all concurrently (at most [`MAX_IN_FLIGHT`] at a
//!   time); each attempt is bounded by `notify.timeout`; a timeout, a broken connection, 429 or
//!   5xx is retried `notify.retries` times with jittered exponential backoff; everything a call
//!   to [`Notifier::send`] starts ends within `notify.deadline`;
//! - a notification that still fails is logged (receiver name, event, why) and counted
//!   ([`crate::metrics::record_notification`]); it never fails the run.
//!
//! Secrets: the URL and the token are held in [`Secret`]s (their `Debug` shows nothing), never
//! logged, and masked in every error message before it is logged ([`mask_text`]). Bodies are
//! built from the drifts as reported, whose secret values are already masked; a change marked
//! masked, or any change of a Secret, is sent as [`MASK`] whatever it holds.
//!
//! The HTTP client is hyper's (hyper-util's pooled client) with the rustls connector kube's
//! client is built on (OS-native roots), without kube's request tracing, so no URL reaches a
//! log line.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::{NotifyFormat, NotifySettings};
use crate::model::{
    Action, ActionResult, Class, Drift, FieldChange, MASK, Report, ResourceRef, SourceError,
    Summary,
};

/// The version of the JSON body (docs/outputs.md, "Notifications"). Bumped on any incompatible
/// change; fields are only ever added within a version.
pub const BODY_VERSION: &str = "1";

/// At most this many requests in flight per [`Notifier::send`].
pub const MAX_IN_FLIGHT: usize = 8;

/// The first retry waits about this long; each further one doubles it (jittered), up to
/// [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why notifications cannot be set up. Raised before the run acts on anything.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "notify.receivers `{receiver}`: the environment variable {var} is unset or empty (it must hold the webhook {what})"
    )]
    MissingEnv {
        receiver: String,
        var: String,
        what: &'static str,
    },
    #[error(
        "notify.receivers `{receiver}`: the value of {var} is not an absolute http:// or https:// URL (the value is not shown)"
    )]
    BadUrl { receiver: String, var: String },
    #[error(
        "notify.receivers `{receiver}`: the value of {var} cannot be sent in an HTTP header (the value is not shown)"
    )]
    BadToken { receiver: String, var: String },
    #[error("cannot set up the HTTPS client for notifications")]
    Client(#[source] kube::Error),
}

impl NotifyError {
    /// A missing or malformed variable is invalid input (exit 3); a client that cannot be built
    /// is a runtime failure (exit 1).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, NotifyError::Client(_))
    }
}

/// What a receiver can ask to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A correction was made and the re-read confirmed it.
    CorrectionDone,
    /// A correction failed, or was rolled back by the health gate.
    CorrectionFailed,
    /// A correction was held back and the drift proposed as a pull request or issue instead.
    Escalation,
    /// A pull request or issue was opened.
    PullRequestOpened,
    /// A breaker stopped a rule's (or a target's) corrections.
    BreakerTripped,
    /// The run failed (an error before the report, or a source or action that failed).
    RunFailed,
    /// Every run's summary, in sync or not.
    RunSummary,
}

impl EventKind {
    /// Every event, in the order the docs list them.
    pub const ALL: [EventKind; 7] = [
        EventKind::CorrectionDone,
        EventKind::CorrectionFailed,
        EventKind::Escalation,
        EventKind::PullRequestOpened,
        EventKind::BreakerTripped,
        EventKind::RunFailed,
        EventKind::RunSummary,
    ];

    /// The name in the config and in bodies.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::CorrectionDone => "correction_done",
            EventKind::CorrectionFailed => "correction_failed",
            EventKind::Escalation => "escalation",
            EventKind::PullRequestOpened => "pull_request_opened",
            EventKind::BreakerTripped => "breaker_tripped",
            EventKind::RunFailed => "run_failed",
            EventKind::RunSummary => "run_summary",
        }
    }

    /// The event of a config name.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// Where an event comes from, for its body.
#[derive(Debug, Clone, Serialize)]
pub struct Origin {
    /// `reconcile` or `watch`.
    pub command: String,
    /// The run sent `dryRun=All` requests: nothing was changed.
    pub dry_run: bool,
    /// `watch` only: which kind of pass acted ([`PASS_EVENT`], [`PASS_CYCLE`], [`PASS_GATE`]).
    pub pass: Option<&'static str>,
}

/// `watch`'s pass over the objects some watch events showed.
pub const PASS_EVENT: &str = "event";
/// `watch`'s full, LIST-based cycle of a target.
pub const PASS_CYCLE: &str = "cycle";
/// `watch`'s health gate concluding in the background after a correction.
pub const PASS_GATE: &str = "health_gate";

/// One thing to tell receivers about.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub kind: EventKind,
    /// RFC 3339, UTC.
    pub time: String,
    pub command: String,
    pub dry_run: bool,
    /// `watch` only: the pass that acted (`event`, `cycle`, `health_gate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// One line for people: what happened to what.
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<EventDrift>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<SourceError>,
}

/// The drift an event is about, as reports show it (secret values masked).
#[derive(Debug, Clone, Serialize)]
pub struct EventDrift {
    pub fingerprint: String,
    pub resource: ResourceRef,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
    pub rules: Vec<String>,
    pub changes: Vec<FieldChange>,
    /// `correct`, `pull_request`, `issue`, `report`, `skip`.
    pub action: String,
    /// `planned`, `done`, `failed`, `skipped`, `rolled_back`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The pull request's or issue's address, for `pull_request_opened`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The events one target's acted-on drifts give: corrections done, failed or rolled back,
/// escalations, pull requests and issues opened, breakers tripped.
/// A breaker gives one `breaker_tripped` per reason (one rule on one target, or the target's
/// consecutive failures), about the first drift it held back.
pub fn target_events(target: &str, drifts: &[Drift], origin: &Origin) -> Vec<Event> {
    let mut out = Vec::new();
    let mut breakers = BTreeSet::new();
    for d in drifts.iter().filter(|d| d.target == target) {
        for kind in drift_event_kinds(d) {
            if kind == EventKind::BreakerTripped {
                let detail = d.action.as_ref().and_then(|a| a.detail.as_deref());
                let reason = detail
                    .unwrap_or_default()
                    .split("; ")
                    .next()
                    .unwrap_or_default();
                if !breakers.insert(reason.to_string()) {
                    continue;
                }
            }
            out.push(drift_event(kind, d, origin));
        }
    }
    out
}

/// The events a drift gives, by its recorded action.
fn drift_event_kinds(d: &Drift) -> Vec<EventKind> {
    let Some(a) = &d.action else {
        return Vec::new();
    };
    let detail = a.detail.as_deref().unwrap_or_default();
    let mut kinds = Vec::new();
    match (&a.action, &a.result) {
        (Action::Correct, ActionResult::Done) => kinds.push(EventKind::CorrectionDone),
        (Action::Correct, ActionResult::Failed) => kinds.push(EventKind::CorrectionFailed),
        (Action::Correct, ActionResult::RolledBack) => {
            kinds.push(EventKind::CorrectionFailed);
            kinds.push(EventKind::Escalation);
            if opened(detail) {
                kinds.push(EventKind::PullRequestOpened);
            }
        }
        (Action::PullRequest | Action::Issue, result) => {
            // Policy called it safe, so only a guardrail (a conflict, the hourly limit, a
            // breaker) made it a proposal instead of a correction.
            if d.verdict.as_ref().is_some_and(|v| v.class == Class::Safe) {
                kinds.push(EventKind::Escalation);
            }
            if *result == ActionResult::Done && opened(detail) {
                kinds.push(EventKind::PullRequestOpened);
            }
        }
        _ => {}
    }
    if is_breaker(detail) {
        kinds.push(EventKind::BreakerTripped);
    }
    kinds
}

/// A detail the pull-request step wrote when it opened an item (`opened pull request #3 …`,
/// `opened draft pull request #4 …`, `opened issue #5 …`).
fn opened(detail: &str) -> bool {
    [
        "opened pull request #",
        "opened draft pull request #",
        "opened issue #",
    ]
    .iter()
    .any(|p| detail.contains(p))
}

/// A detail that says a breaker stopped the correction: the revert breaker's escalation reason
/// ([`crate::audit::breaker_reason`]) or the stop after consecutive failures
/// ([`crate::audit::AuditLog::corrections_stopped`]).
fn is_breaker(detail: &str) -> bool {
    detail.contains(BREAKER_REVERTS) || detail.contains(BREAKER_FAILURES)
}

/// What [`crate::audit::breaker_reason`] ends with.
const BREAKER_REVERTS: &str = "someone keeps changing this on purpose";
/// What the consecutive-failures stop names.
const BREAKER_FAILURES: &str = "(trust.max_consecutive_failures:";

/// The last `http(s)://…` word of a detail: the item's address.
fn item_url(detail: &str) -> Option<String> {
    detail
        .split_whitespace()
        .rev()
        .find(|w| w.starts_with("https://") || w.starts_with("http://") || w.starts_with("file://"))
        .map(|w| w.trim_end_matches([',', ';', ')']).to_string())
}

fn drift_event(kind: EventKind, d: &Drift, origin: &Origin) -> Event {
    let a = d.action.as_ref();
    let action = a.map(|a| match &a.action {
        Action::Skip { .. } => "skip".to_string(),
        other => other.to_string().replace(' ', "_"),
    });
    let result = a.map(|a| result_name(&a.result).to_string());
    let detail = a.and_then(|a| a.detail.clone());
    let secret = crate::diff::is_secret(&d.resource.id);
    let changes = d.changes.iter().map(|c| safe_change(c, secret)).collect();
    let what = match kind {
        EventKind::CorrectionDone => "corrected",
        EventKind::CorrectionFailed if a.is_some_and(|a| a.result == ActionResult::RolledBack) => {
            "correction rolled back"
        }
        EventKind::CorrectionFailed => "correction failed",
        EventKind::Escalation => "escalated to a pull request or issue",
        EventKind::PullRequestOpened => "proposed",
        EventKind::BreakerTripped => "breaker tripped",
        EventKind::RunFailed | EventKind::RunSummary => "",
    };
    Event {
        kind,
        time: crate::run::now_rfc3339(),
        command: origin.command.clone(),
        dry_run: origin.dry_run,
        pass: origin.pass,
        target: Some(d.target.clone()),
        title: format!("{}: {} {what}", d.target, d.resource.display),
        drift: Some(EventDrift {
            fingerprint: d.fingerprint.clone(),
            resource: d.resource.clone(),
            kind: d.kind.to_string(),
            class: d.verdict.as_ref().map(|v| v.class),
            rules: d
                .verdict
                .as_ref()
                .map(|v| v.rules.clone())
                .unwrap_or_default(),
            changes,
            action: action.unwrap_or_default(),
            result: result.unwrap_or_default(),
            url: (kind == EventKind::PullRequestOpened)
                .then(|| detail.as_deref().and_then(item_url))
                .flatten(),
            detail,
        }),
        summary: None,
        errors: Vec::new(),
    }
}

/// A change as a body carries it: masked when marked masked or when the object is a Secret,
/// whatever the values hold.
fn safe_change(c: &FieldChange, secret: bool) -> FieldChange {
    let mut c = c.clone();
    if c.masked || secret {
        c.masked = true;
        if !c.desired.is_null() {
            c.desired = Value::String(MASK.to_string());
        }
        if !c.live.is_null() {
            c.live = Value::String(MASK.to_string());
        }
    }
    c
}

fn result_name(r: &ActionResult) -> &'static str {
    match r {
        ActionResult::Planned => "planned",
        ActionResult::Done => "done",
        ActionResult::Failed => "failed",
        ActionResult::Skipped => "skipped",
        ActionResult::RolledBack => "rolled_back",
    }
}

/// The events of a finished run: always its summary, and `run_failed` when a source or an
/// action failed (the report's errors; exit code 1).
pub fn run_events(report: &Report, origin: &Origin) -> Vec<Event> {
    let s = &report.summary;
    let mut out = vec![Event {
        kind: EventKind::RunSummary,
        time: crate::run::now_rfc3339(),
        command: origin.command.clone(),
        dry_run: origin.dry_run,
        pass: origin.pass,
        target: None,
        title: format!(
            "{}{}: {} of {} resources drifted in {} target(s), compliance {}%{}",
            report.command,
            if origin.dry_run { " (dry run)" } else { "" },
            s.drifted,
            s.resources_checked,
            s.targets,
            s.compliance_score,
            if report.errors.is_empty() {
                String::new()
            } else {
                format!(", {} error(s)", report.errors.len())
            }
        ),
        drift: None,
        summary: Some(s.clone()),
        errors: report.errors.clone(),
    }];
    if !report.errors.is_empty() {
        out.push(Event {
            kind: EventKind::RunFailed,
            title: format!(
                "{} failed: {} error(s); first: {}: {}",
                report.command,
                report.errors.len(),
                report.errors[0].target,
                report.errors[0].message
            ),
            ..out[0].clone()
        });
    }
    out
}

/// `run_failed` for a run that ended before it had a report; `message` is the error as the
/// command prints it.
pub fn failure_event(message: &str, origin: &Origin) -> Event {
    Event {
        kind: EventKind::RunFailed,
        time: crate::run::now_rfc3339(),
        command: origin.command.clone(),
        dry_run: origin.dry_run,
        pass: origin.pass,
        target: None,
        title: format!("{} failed: {message}", origin.command),
        drift: None,
        summary: None,
        errors: vec![SourceError {
            target: String::new(),
            side: "run".to_string(),
            message: message.to_string(),
        }],
    }
}

/// The JSON body (docs/outputs.md, "Notifications").
pub fn json_body(e: &Event) -> Value {
    let mut body = json!({
        "schema": "driftwarden.notification",
        "version": BODY_VERSION,
        "tool_version": env!("CARGO_PKG_VERSION"),
        "event": e.kind.name(),
    });
    if let (Some(obj), Ok(Value::Object(rest))) = (body.as_object_mut(), serde_json::to_value(e)) {
        for (k, v) in rest {
            if k != "kind" {
                obj.insert(k, v);
            }
        }
    }
    body
}

/// The Slack-compatible body: `text` (the fallback and notification line) and `blocks`.
pub fn slack_body(e: &Event) -> Value {
    let icon = match e.kind {
        EventKind::CorrectionDone => ":white_check_mark:",
        EventKind::CorrectionFailed | EventKind::RunFailed => ":x:",
        EventKind::Escalation | EventKind::BreakerTripped => ":warning:",
        EventKind::PullRequestOpened => ":arrow_heading_up:",
        EventKind::RunSummary => ":bar_chart:",
    };
    let text = format!("{icon} driftwarden {}: {}", e.kind.name(), e.title);
    let mut lines = Vec::new();
    if let Some(d) = &e.drift {
        let class = d
            .class
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unclassified".into());
        lines.push(format!(
            "*{}* ({}, {class}): {} {}",
            d.resource.display, d.kind, d.action, d.result
        ));
        for c in d.changes.iter().take(10) {
            lines.push(format!(
                "• `{}`: {} → {}",
                c.path,
                short(&c.live),
                short(&c.desired)
            ));
        }
        if d.changes.len() > 10 {
            lines.push(format!("• … and {} more", d.changes.len() - 10));
        }
        if let Some(detail) = &d.detail {
            lines.push(truncate(detail, 1500));
        }
        if let Some(url) = &d.url {
            lines.push(format!("<{url}|open>"));
        }
    }
    if let Some(s) = &e.summary {
        lines.push(format!(
            "targets {} · checked {} · in sync {} · drifted {} · compliance {}%",
            s.targets, s.resources_checked, s.in_sync, s.drifted, s.compliance_score
        ));
        let actions: Vec<String> = s.actions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        if !actions.is_empty() {
            lines.push(format!("actions: {}", actions.join(", ")));
        }
    }
    for err in e.errors.iter().take(5) {
        lines.push(truncate(
            &format!("error: {} {}: {}", err.target, err.side, err.message),
            500,
        ));
    }
    let mut context = vec![format!("event `{}`", e.kind.name()), e.time.clone()];
    if let Some(t) = &e.target {
        context.push(format!("target `{t}`"));
    }
    if let Some(d) = &e.drift {
        context.push(format!("fingerprint `{}`", d.fingerprint));
    }
    if let Some(pass) = e.pass {
        context.push(format!("{} pass `{pass}`", e.command));
    }
    if e.dry_run {
        context.push("dry run".to_string());
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": truncate(&text, 2900)}
    })];
    if !lines.is_empty() {
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&lines.join("\n"), 2900)}
        }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": context.join(" · ")}]
    }));
    json!({"text": text, "blocks": blocks})
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "(absent)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    format!("`{}`", truncate(&s, 80))
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A value that must never be shown: its `Debug` prints a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

/// One receiver, its URL and token read from the environment.
#[derive(Debug)]
struct Receiver {
    name: String,
    format: NotifyFormat,
    url: Secret,
    token: Option<Secret>,
    events: BTreeSet<EventKind>,
}

/// Replaces the receiver's URL, the URL's path and query, and its token wherever they stand in
/// `text` (an error message from the HTTP stack), so a log line never carries them.
pub fn mask_text(text: &str, url: &str, token: Option<&str>) -> String {
    let mut out = text.to_string();
    let mut secrets: Vec<String> = vec![url.to_string()];
    if let Ok(uri) = url.parse::<hyper::Uri>() {
        if let Some(pq) = uri
            .path_and_query()
            .map(|p| p.as_str())
            .filter(|p| p.len() > 1)
        {
            secrets.push(pq.to_string());
            secrets.push(uri.path().to_string());
        }
        if let Some(q) = uri.query() {
            secrets.push(q.to_string());
        }
        if let Some(auth) = uri
            .authority()
            .map(|a| a.as_str())
            .filter(|a| a.contains('@'))
        {
            secrets.push(auth.to_string());
        }
    }
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        secrets.push(t.to_string());
    }
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets.iter().filter(|s| s.len() > 1) {
        out = out.replace(s.as_str(), MASK);
    }
    out
}

/// What one [`Notifier::send`] achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Notifications a receiver accepted (2xx).
    pub sent: usize,
    /// Notifications given up on (retries exhausted, refused, or the deadline passed).
    pub failed: usize,
    /// Each notification's outcome, for the audit log.
    pub outcomes: Vec<Outcome>,
}

/// How one notification (one receiver, one event) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub receiver: String,
    pub event: EventKind,
    pub sent: bool,
    pub attempts: u32,
    /// Why it failed, the URL and token masked.
    pub message: Option<String>,
}

impl Outcome {
    /// The audit record of this outcome (docs/audit.md, `notification`).
    pub fn audit_event(&self) -> crate::audit::Event {
        crate::audit::Event::Notification {
            receiver: self.receiver.clone(),
            event: self.event.name().to_string(),
            outcome: if self.sent {
                ActionResult::Done
            } else {
                ActionResult::Failed
            },
            attempts: self.attempts,
            message: self.message.clone(),
        }
    }
}

/// Sends events to the configured receivers. Cheap to share: [`Notifier::send`] takes an `Arc`.
#[derive(Debug)]
pub struct Notifier {
    receivers: Vec<Arc<Receiver>>,
    timeout: Duration,
    retries: u32,
    deadline: Duration,
    client: Client,
}

/// The HTTP client (hyper-util's, behind kube's type-erased client so it can be named).
#[derive(Clone)]
struct Client(kube::Client);

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Client")
    }
}

/// How one attempt ended.
enum Attempt {
    Accepted,
    /// Worth another attempt (timeout, connection, 429, 5xx).
    Retry(String),
    /// Not worth another (another 4xx, a request that cannot be built).
    GiveUp(String),
}

impl Notifier {
    /// Reads every receiver's URL and token from the environment. Must be called within a Tokio
    /// runtime. An unset or malformed variable is an error naming the variable, never its value.
    pub fn new(settings: &NotifySettings) -> Result<Notifier, NotifyError> {
        Notifier::with_env(settings, |var| std::env::var(var).ok())
    }

    /// [`Notifier::new`] with another source of variables.
    pub fn with_env(
        settings: &NotifySettings,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Notifier, NotifyError> {
        let mut receivers = Vec::new();
        for r in &settings.receivers {
            let url = env(&r.url_env)
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .ok_or_else(|| NotifyError::MissingEnv {
                    receiver: r.name.clone(),
                    var: r.url_env.clone(),
                    what: "URL",
                })?;
            let valid = url.parse::<hyper::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !valid {
                return Err(NotifyError::BadUrl {
                    receiver: r.name.clone(),
                    var: r.url_env.clone(),
                });
            }
            let token = match &r.token_env {
                None => None,
                Some(var) => {
                    let t = env(var)
                        .map(|t| t.trim().to_string())
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| NotifyError::MissingEnv {
                            receiver: r.name.clone(),
                            var: var.clone(),
                            what: "token",
                        })?;
                    if hyper::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                        return Err(NotifyError::BadToken {
                            receiver: r.name.clone(),
                            var: var.clone(),
                        });
                    }
                    Some(Secret(t))
                }
            };
            receivers.push(Arc::new(Receiver {
                name: r.name.clone(),
                format: r.format,
                url: Secret(url),
                token,
                events: r.events.iter().copied().collect(),
            }));
        }
        Ok(Notifier {
            receivers,
            timeout: settings.timeout,
            retries: settings.retries,
            deadline: settings.deadline,
            client: http_client()?,
        })
    }

    /// Whether some receiver wants events of this kind.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.receivers.iter().any(|r| r.events.contains(&kind))
    }

    /// The overall deadline of one [`Notifier::send`].
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Sends each event to every receiver that wants it, concurrently; returns when all are
    /// delivered or given up, at the latest after `notify.deadline`. Never fails: each failure
    /// is logged and counted. Owned (`'static`), so callers spawn it.
    pub async fn send(self: Arc<Self>, events: Vec<Event>) -> Delivery {
        let until = Instant::now() + self.deadline;
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut set = JoinSet::new();
        for e in &events {
            for r in self.receivers.iter().filter(|r| r.events.contains(&e.kind)) {
                let body = match r.format {
                    NotifyFormat::Json => json_body(e),
                    NotifyFormat::Slack => slack_body(e),
                };
                let body = serde_json::to_vec(&body).unwrap_or_default();
                let (me, r, slots, kind) =
                    (Arc::clone(&self), Arc::clone(r), Arc::clone(&slots), e.kind);
                set.spawn(async move {
                    let delivered = tokio::time::timeout_at(until, async {
                        // The semaphore is never closed, so acquiring only waits.
                        let _slot = slots.acquire_owned().await;
                        me.deliver(&r, kind, body).await
                    })
                    .await
                    .unwrap_or_else(|_| Err(("deadline passed".to_string(), 0)));
                    (r, kind, delivered)
                });
            }
        }
        let mut delivery = Delivery::default();
        while let Some(joined) = set.join_next().await {
            let Ok((r, kind, delivered)) = joined else {
                delivery.failed += 1;
                continue;
            };
            match delivered {
                Ok(attempts) => {
                    delivery.sent += 1;
                    crate::metrics::record_notification(&r.name, kind.name(), "sent");
                    debug!(receiver = %r.name, event = kind.name(), attempts, "notification sent");
                    delivery.outcomes.push(Outcome {
                        receiver: r.name.clone(),
                        event: kind,
                        sent: true,
                        attempts,
                        message: None,
                    });
                }
                Err((why, attempts)) => {
                    delivery.failed += 1;
                    crate::metrics::record_notification(&r.name, kind.name(), "failed");
                    let why = mask_text(&why, r.url.expose(), r.token.as_ref().map(Secret::expose));
                    delivery.outcomes.push(Outcome {
                        receiver: r.name.clone(),
                        event: kind,
                        sent: false,
                        attempts,
                        message: Some(why.clone()),
                    });
                    warn!(
                        receiver = %r.name,
                        event = kind.name(),
                        attempts,
                        error = %why,
                        "notification failed; the run goes on"
                    );
                }
            }
        }
        delivery
    }

    /// One notification with its retries. `Ok(attempts)` when accepted; `Err((why, attempts))`.
    async fn deliver(
        &self,
        r: &Receiver,
        kind: EventKind,
        body: Vec<u8>,
    ) -> Result<u32, (String, u32)> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match tokio::time::timeout(self.timeout, self.post(r, kind, &body)).await
            {
                Ok(o) => o,
                Err(_) => {
                    Attempt::Retry(format!("no answer within {} ms", self.timeout.as_millis()))
                }
            };
            match outcome {
                Attempt::Accepted => return Ok(attempt),
                Attempt::GiveUp(why) => return Err((why, attempt)),
                Attempt::Retry(why) if attempt > self.retries => {
                    return Err((format!("{why} (after {attempt} attempts)"), attempt));
                }
                Attempt::Retry(why) => {
                    debug!(
                        receiver = %r.name,
                        event = kind.name(),
                        attempt,
                        error = %mask_text(&why, r.url.expose(), r.token.as_ref().map(Secret::expose)),
                        "notification attempt failed; retrying"
                    );
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    async fn post(&self, r: &Receiver, kind: EventKind, body: &[u8]) -> Attempt {
        let mut req = hyper::Request::builder()
            .method(hyper::Method::POST)
            .uri(r.url.expose())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("driftwarden/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Driftwarden-Event", kind.name());
        if let Some(t) = &r.token {
            req = req.header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", t.expose()),
            );
        }
        let req = match req.body(kube::client::Body::from(body.to_vec())) {
            Ok(req) => req,
            Err(e) => return Attempt::GiveUp(format!("cannot build the request: {e}")),
        };
        let resp = match self.client.0.send(req).await {
            Ok(resp) => resp,
            Err(e) => return Attempt::Retry(crate::errors::error_chain(&e)),
        };
        let status = resp.status();
        // The answer's body is read (and dropped) so the connection can be reused; a receiver
        // that stops mid-body is bounded by the attempt's timeout like any other.
        let text = resp
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            Attempt::Accepted
        } else {
            let why = format!("HTTP {status}: {}", truncate(text.trim(), 200));
            if status.as_u16() == 429 || status.is_server_error() || status.as_u16() == 408 {
                Attempt::Retry(why)
            } else {
                Attempt::GiveUp(why)
            }
        }
    }
}

/// hyper-util's pooled HTTP/1.1 client over the rustls connector kube builds (https and http,
/// OS-native roots), without a tracing layer.
fn http_client() -> Result<Client, NotifyError> {
    use kube::client::ConfigExt as _;
    // Only the TLS settings of this config matter: no cluster is contacted.
    let mut cfg = kube::Config::new(hyper::Uri::from_static("https://localhost"));
    cfg.default_retry = false;
    let connector = cfg.rustls_https_connector().map_err(NotifyError::Client)?;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build::<_, kube::client::Body>(connector);
    Ok(Client(kube::Client::new(http, "default")))
}

/// Exponential backoff with jitter: `200 ms × 2^(attempt-1)`, capped at 5 s, then a random
/// point in its upper half.
fn backoff(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let exp = BASE_BACKOFF.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let half = exp.min(MAX_BACKOFF) / 2;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(attempt);
    let jitter = match half.as_millis() as u64 {
        0 => 0,
        n => h.finish() % (n + 1),
    };
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ActionRecord, ChangeOp, DriftKind, ResourceId, Verdict};

    fn drift(kind: &str, action: Action, result: ActionResult, detail: &str) -> Drift {
        let id = ResourceId::Kubernetes {
            cluster: "c".into(),
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            namespace: Some("shop".into()),
            name: "x".into(),
        };
        Drift {
            fingerprint: crate::model::fingerprint("t", &id),
            target: "t".into(),
            resource: id.into(),
            kind: DriftKind::Modified,
            changes: vec![FieldChange {
                path: "/data/k".into(),
                op: ChangeOp::Changed,
                desired: json!("desired-value"),
                live: json!("live-value"),
                masked: false,
                attribution: None,
                class: None,
            }],
            provenance: None,
            verdict: Some(Verdict {
                class: Class::Safe,
                reasons: vec![],
                rules: vec!["kubernetes.configmap_data".into()],
                remedies: Default::default(),
            }),
            action: Some(ActionRecord {
                action,
                result,
                detail: Some(detail.into()),
            }),
            desired_object: None,
            live_object: None,
        }
    }

    fn origin() -> Origin {
        Origin {
            command: "reconcile".into(),
            dry_run: false,
            pass: None,
        }
    }

    #[test]
    fn event_kinds_follow_the_recorded_action() {
        let kinds = |d: &Drift| drift_event_kinds(d);
        assert_eq!(
            kinds(&drift(
                "ConfigMap",
                Action::Correct,
                ActionResult::Done,
                "corrected"
            )),
            [EventKind::CorrectionDone]
        );
        assert_eq!(
            kinds(&drift(
                "ConfigMap",
                Action::Correct,
                ActionResult::Failed,
                "x"
            )),
            [EventKind::CorrectionFailed]
        );
        assert_eq!(
            kinds(&drift(
                "ConfigMap",
                Action::PullRequest,
                ActionResult::Done,
                "escalated: conflicts; opened pull request #3 on branch b: https://x/pull/3"
            )),
            [EventKind::Escalation, EventKind::PullRequestOpened]
        );
        assert_eq!(
            kinds(&drift(
                "Deployment",
                Action::Correct,
                ActionResult::RolledBack,
                "rolled back: …; opened pull request #4 on branch b"
            )),
            [
                EventKind::CorrectionFailed,
                EventKind::Escalation,
                EventKind::PullRequestOpened
            ]
        );
        assert!(
            kinds(&drift(
                "ConfigMap",
                Action::Report,
                ActionResult::Planned,
                ""
            ))
            .is_empty()
        );
    }

    #[test]
    fn secret_values_are_masked_in_bodies() {
        let d = drift("Secret", Action::Correct, ActionResult::Done, "corrected");
        let events = target_events("t", &[d], &origin());
        let body = json_body(&events[0]).to_string() + &slack_body(&events[0]).to_string();
        assert!(
            !body.contains("desired-value") && !body.contains("live-value"),
            "{body}"
        );
        assert!(body.contains(MASK));
    }

    #[test]
    fn json_body_is_versioned() {
        let d = drift(
            "ConfigMap",
            Action::PullRequest,
            ActionResult::Done,
            "opened pull request #3 on branch b: https://github.com/a/b/pull/3",
        );
        let events = target_events("t", &[d], &origin());
        let b = json_body(&events[1]);
        assert_eq!(b["schema"], "driftwarden.notification");
        assert_eq!(b["version"], BODY_VERSION);
        assert_eq!(b["event"], "pull_request_opened");
        assert_eq!(b["drift"]["url"], "https://github.com/a/b/pull/3");
        assert_eq!(b["drift"]["changes"][0]["live"], "live-value");
    }

    #[test]
    fn masking_covers_url_path_and_token() {
        let url = "https://hooks.example.com/services/T000/B000/CANARYSECRET?k=v";
        let text = format!(
            "error sending to {url}: path /services/T000/B000/CANARYSECRET, token tok-CANARY"
        );
        let masked = mask_text(&text, url, Some("tok-CANARY"));
        assert!(!masked.contains("CANARY"), "{masked}");
        assert!(masked.contains("hooks.example.com") || masked.contains(MASK));
    }

    #[test]
    fn backoff_is_bounded() {
        for attempt in 1..40 {
            let b = backoff(attempt);
            assert!(b <= MAX_BACKOFF, "{b:?}");
            assert!(
                b >= (BASE_BACKOFF.saturating_mul(1 << (attempt - 1).min(16))).min(MAX_BACKOFF) / 2
            );
        }
    }

    #[test]
    fn breakers_are_recognised_by_their_reasons() {
        let reason = crate::audit::breaker_reason("kubernetes.replicas", 2, 24);
        let mut d = drift(
            "ConfigMap",
            Action::PullRequest,
            ActionResult::Done,
            &reason,
        );
        assert!(drift_event_kinds(&d).contains(&EventKind::BreakerTripped));
        d.action = Some(ActionRecord {
            action: Action::Skip {
                why: "consecutive failures".into(),
            },
            result: ActionResult::Skipped,
            detail: Some("3 consecutive corrections failed on target `t` (trust.max_consecutive_failures: 3): no more corrections there this run".into()),
        });
        assert_eq!(drift_event_kinds(&d), [EventKind::BreakerTripped]);
    }

    #[test]
    fn event_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.name()), Some(k));
        }
    }
}
