//! Guardrails every actuator applies before it changes anything (ARCHITECTURE.md, promise 3: bounded
//! blast radius), and the bookkeeping the actuators share: which drifts are theirs to correct,
//! how an outcome, a skip or an escalation is recorded.
//!
//! The checks, in the order every actuator applies them:
//! 1. the prune rules ([`hold_removal`]): deleting a live object needs `guardrails.prune: true`,
//!    and nothing is deleted or removed after a partial read;
//! 2. the remediation history must be readable, else nothing is corrected ([`admit`]);
//! 3. the per-resource, per-hour limit (history under the config's `state_dir`): past it the
//!    drift is escalated as if risky ([`escalate`]);
//! 4. the blast radius, all or nothing: a run that would correct more than the limit corrects
//!    nothing (a mass drift is more likely a mistake in Git or a cluster event than something to
//!    steamroll).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{ActContext, decide_as_risky};
use crate::config::Guardrails;
use crate::live::kube::error_chain;
use crate::model::{Action, ActionRecord, ActionResult, Drift, SourceError};

/// The file under `state_dir` that holds the remediation history.
pub const HISTORY_FILE: &str = "remediations.json";

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the remediation history {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the remediation history {path} is not valid JSON")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the remediation history {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The most corrections one run may make for a target: `max_correction_percent` of the
/// resources checked (rounded down), and at most `max_corrections` when set.
pub fn correction_limit(g: &Guardrails, checked: usize) -> usize {
    let by_share = (checked as f64 * g.max_correction_percent / 100.0).floor() as usize;
    match g.max_corrections {
        Some(n) => n.min(by_share),
        None => by_share,
    }
}

/// Explains a limit the way the report shows it: which setting binds, and how it was computed.
pub fn explain_limit(g: &Guardrails, checked: usize) -> String {
    let by_share = (checked as f64 * g.max_correction_percent / 100.0).floor() as usize;
    let share = format!(
        "max_correction_percent: {}% of {checked} resources checked = {by_share}",
        g.max_correction_percent
    );
    match g.max_corrections {
        Some(n) if n < by_share => format!("max_corrections: {n}; {share}"),
        Some(n) => format!("{share}; max_corrections: {n}"),
        None => share,
    }
}

/// When each resource (by drift fingerprint) was remediated, as Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Format version of the file.
    pub version: u32,
    pub remediations: BTreeMap<String, Remediations>,
}

/// One resource's remediations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediations {
    /// The resource as reports show it (for people reading the file).
    pub resource: String,
    /// Unix seconds of each remediation, oldest first.
    pub times: Vec<u64>,
}

impl History {
    /// The history file's path under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(HISTORY_FILE)
    }

    /// Reads the history; a missing file is an empty history.
    pub fn load(state_dir: &Path) -> Result<History, HistoryError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
            Err(e) => {
                return Err(HistoryError::Read {
                    path: path.display().to_string(),
                    source: e,
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| HistoryError::Parse {
            path: path.display().to_string(),
            source: e,
        })
    }

    /// Remediations of `fingerprint` in the hour before `now`.
    pub fn count_last_hour(&self, fingerprint: &str, now: u64) -> usize {
        self.remediations
            .get(fingerprint)
            .map(|r| {
                r.times
                    .iter()
                    .filter(|t| now.saturating_sub(**t) < 3600)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Records one remediation.
    pub fn record(&mut self, fingerprint: &str, resource: &str, now: u64) {
        let r = self
            .remediations
            .entry(fingerprint.to_string())
            .or_default();
        r.resource = resource.to_string();
        r.times.push(now);
    }

    /// Writes the history (entries older than an hour dropped), atomically and durably: a temp
    /// file in the same directory, fsynced, then a rename (statelock::write_atomic).
    pub fn save(&mut self, state_dir: &Path, now: u64) -> Result<(), HistoryError> {
        self.version = 1;
        for r in self.remediations.values_mut() {
            r.times.retain(|t| now.saturating_sub(*t) < 3600);
        }
        self.remediations.retain(|_, r| !r.times.is_empty());
        let path = Self::path(state_dir);
        let write_err = |e: std::io::Error| HistoryError::Write {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(state_dir).map_err(write_err)?;
        let text = serde_json::to_string_pretty(self).map_err(|e| HistoryError::Parse {
            path: path.display().to_string(),
            source: e,
        })?;
        crate::statelock::write_atomic(&path, text.as_bytes()).map_err(write_err)
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A drift `decide` (or the revert loop) chose to correct that no actuator has carried out yet.
pub fn is_planned_correction(d: &Drift) -> bool {
    d.action
        .as_ref()
        .is_some_and(|a| a.action == Action::Correct && a.result == ActionResult::Planned)
}

/// Records the outcome of a correction in `drift.action`.
pub fn record(d: &mut Drift, result: ActionResult, detail: impl Into<String>) {
    d.action = Some(ActionRecord {
        action: Action::Correct,
        result,
        detail: Some(detail.into()),
    });
}

/// Records a correction a guardrail held back: `why` is the short reason reports group by,
/// `detail` the explanation.
pub fn skip(d: &mut Drift, why: &str, detail: impl Into<String>) {
    d.action = Some(ActionRecord {
        action: Action::Skip {
            why: why.to_string(),
        },
        result: ActionResult::Skipped,
        detail: Some(detail.into()),
    });
}

/// Escalates a drift as if policy had called it risky: the action `decide` picks for a risky
/// drift in the target's mode (a pull request, or an issue for a secret), still planned, so the
/// actuators after the correctors carry it out; `reason` leads the detail. The drift's own
/// verdict is kept (a pull request calls it "escalated").
pub fn escalate(d: &mut Drift, ctx: &ActContext<'_>, reason: &str) {
    let mut rec = decide_as_risky(d, ctx.mode);
    rec.detail = Some(match rec.detail {
        Some(next) => format!("{reason}{ESCALATION_SEPARATOR}{next}"),
        None => reason.to_string(),
    });
    info!(
        target = %ctx.target.name,
        provider = d.resource.id.provider(),
        resource = %d.resource.display,
        reason,
        "correction escalated"
    );
    d.action = Some(rec);
}

/// Between an escalation's reason and what `decide` says will happen next.
const ESCALATION_SEPARATOR: &str = "; ";

/// The reason an actuator escalated `d` with ([`escalate`]), while the escalation is still
/// planned: the detail before what `decide` says happens to a risky drift.
pub(crate) fn escalation_reason<'d>(d: &'d Drift, ctx: &ActContext<'_>) -> Option<&'d str> {
    let a = d.action.as_ref()?;
    if !matches!(a.action, Action::PullRequest | Action::Issue) || a.result != ActionResult::Planned
    {
        return None;
    }
    let next = decide_as_risky(d, ctx.mode).detail?;
    a.detail
        .as_deref()?
        .strip_suffix(next.as_str())?
        .strip_suffix(ESCALATION_SEPARATOR)
        .filter(|reason| !reason.is_empty())
}

/// The escalations of one target's drifts, noted before the pull-request step records its own
/// outcome in `drift.action`, so that the report still says why each drift was escalated (the
/// field managers a 409 named, the hourly limit) and what became of it.
#[derive(Debug, Default)]
pub struct Escalations(BTreeMap<String, Noted>);

/// One escalation: its reason, and the detail it was planned with.
#[derive(Debug)]
struct Noted {
    reason: String,
    planned: Option<String>,
}

impl Escalations {
    /// Notes the drifts escalated so far, by fingerprint.
    pub fn note(ctx: &ActContext<'_>, drifts: &[Drift]) -> Escalations {
        Escalations(
            drifts
                .iter()
                .filter_map(|d| {
                    let reason = escalation_reason(d, ctx)?;
                    let noted = Noted {
                        reason: reason.to_string(),
                        planned: d.action.as_ref().and_then(|a| a.detail.clone()),
                    };
                    Some((d.fingerprint.clone(), noted))
                })
                .collect(),
        )
    }

    /// Puts each noted reason back in front of the detail a later step recorded instead (a
    /// pull request opened, the per-run cap, a forge failure). A detail left as planned already
    /// carries it.
    pub fn restore(mut self, drifts: &mut [Drift]) {
        for d in drifts.iter_mut() {
            let Some(noted) = self.0.remove(&d.fingerprint) else {
                continue;
            };
            let Some(a) = d.action.as_mut() else { continue };
            if a.detail == noted.planned {
                continue;
            }
            a.detail = Some(match a.detail.take() {
                Some(detail) if detail.starts_with(&noted.reason) => detail,
                Some(detail) => format!("{}{ESCALATION_SEPARATOR}{detail}", noted.reason),
                None => noted.reason,
            });
        }
    }
}

/// A live-side failure of the target, for the report's errors.
pub fn source_error(ctx: &ActContext<'_>, message: String) -> SourceError {
    SourceError {
        target: ctx.target.name.clone(),
        side: "live".into(),
        message,
    }
}

/// What a correction takes away from the live side, for the prune rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal<'a> {
    /// It deletes the live object (an Unmanaged one): needs `guardrails.prune: true`.
    Object,
    /// It removes parts of a live object (`what`: "tags, rules").
    Parts(&'a str),
}

/// The prune rules: deleting a live object needs `guardrails.prune: true`, and nothing is deleted
/// or removed after a partial read (ARCHITECTURE.md, promise 2). When the rules hold the correction
/// back, records the skip on `d` and returns true.
pub fn hold_removal(ctx: &ActContext<'_>, d: &mut Drift, removal: Removal<'_>) -> bool {
    match removal {
        Removal::Object if !ctx.target.guardrails.prune => skip(
            d,
            "prune is off",
            "not deleted: deleting Unmanaged objects needs `guardrails.prune: true`",
        ),
        Removal::Object if ctx.partial => skip(
            d,
            "partial read",
            "not deleted: part of this target's desired or live state could not be read in this run, and nothing is deleted after a partial read",
        ),
        Removal::Parts(what) if ctx.partial => skip(
            d,
            "partial read",
            format!(
                "not corrected: part of this target's desired or live state could not be read in this run, and nothing ({what}) is removed after a partial read"
            ),
        ),
        Removal::Object | Removal::Parts(_) => return false,
    }
    true
}

/// The remediation history of one actuator's run, once [`admit`] let corrections through:
/// [`Admitted::record`] each remediation made, then [`Admitted::save`].
#[derive(Debug)]
pub struct Admitted {
    history: History,
    now: u64,
    recorded: bool,
}

impl Admitted {
    /// Records a remediation of `d` (not for dry runs: they change nothing).
    pub fn record(&mut self, d: &Drift) {
        self.history
            .record(&d.fingerprint, &d.resource.display, self.now);
        self.recorded = true;
    }

    /// Writes the history when a remediation was recorded; the error for the report otherwise.
    pub fn save(mut self, ctx: &ActContext<'_>) -> Option<SourceError> {
        if !self.recorded {
            return None;
        }
        self.history
            .save(ctx.state_dir, self.now)
            .err()
            .map(|e| source_error(ctx, format!("remediation history: {}", error_chain(&e))))
    }
}

/// Applies the guardrails that hold before the first request to an actuator's corrections
/// (`jobs`, each naming its drift by `index` into `drifts`), and settles every drift they hold
/// back:
/// 1. without a readable remediation history the hourly limit cannot be enforced: every
///    correction is skipped and the error returned;
/// 2. a resource corrected `max_remediations_per_hour` times in the last hour is escalated
///    ([`escalate`]) and its job dropped;
/// 3. when more corrections remain than [`correction_limit`] allows, every one is skipped with
///    the limit and how it was computed, and none is corrected.
///
/// `Some(_)`: the corrections left in `jobs` may run. `None`: none may (an unreadable history
/// is pushed to `errors`).
pub fn admit<J>(
    ctx: &ActContext<'_>,
    drifts: &mut [Drift],
    jobs: &mut Vec<J>,
    index: impl Fn(&J) -> usize,
    errors: &mut Vec<SourceError>,
) -> Option<Admitted> {
    let now = now_unix();
    let history = match History::load(ctx.state_dir) {
        Ok(h) => h,
        Err(e) => {
            let msg = error_chain(&e);
            for job in jobs.iter() {
                if let Some(d) = drifts.get_mut(index(job)) {
                    skip(
                        d,
                        "remediation history unreadable",
                        format!("not corrected: {msg}"),
                    );
                }
            }
            errors.push(source_error(ctx, format!("remediation history: {msg}")));
            return None;
        }
    };

    let per_hour = ctx.target.guardrails.max_remediations_per_hour as usize;
    jobs.retain(|job| {
        let Some(d) = drifts.get_mut(index(job)) else {
            return false;
        };
        let done = history.count_last_hour(&d.fingerprint, now);
        if done < per_hour {
            return true;
        }
        escalate(
            d,
            ctx,
            &format!(
                "escalated: corrected {done} time(s) in the last hour, the limit is {per_hour} (max_remediations_per_hour)"
            ),
        );
        false
    });
    if jobs.is_empty() {
        return None;
    }

    let limit = correction_limit(&ctx.target.guardrails, ctx.checked);
    if jobs.len() > limit {
        let why = format!(
            "blast radius: {} corrections exceed the limit of {limit}",
            jobs.len()
        );
        let detail = format!(
            "nothing was corrected for this target: {} corrections were needed, at most {limit} are allowed per run ({}); raise the limit or correct by hand",
            jobs.len(),
            explain_limit(&ctx.target.guardrails, ctx.checked)
        );
        warn!(target = %ctx.target.name, needed = jobs.len(), limit, "blast radius exceeded; correcting nothing");
        for job in jobs.iter() {
            if let Some(d) = drifts.get_mut(index(job)) {
                skip(d, &why, detail.clone());
            }
        }
        return None;
    }
    Some(Admitted {
        history,
        now,
        recorded: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::{DesiredObjects, decide};
    use crate::config::Target;
    use crate::model::{
        ChangeOp, Class, DriftKind, FieldChange, Mode, ResourceId, ResourceRef, Verdict,
        fingerprint,
    };
    use serde_json::json;

    fn target(guardrails: &str) -> Target {
        let text = format!(
            "version: 1\ntargets:\n  - name: t\n    mode: autocorrect\n    desired: {{dir: d}}\n    live: {{snapshot: s}}\n    guardrails: {guardrails}\n"
        );
        let cfg = crate::config::parse(&text, "t.yaml", Path::new(".")).unwrap();
        cfg.targets.into_iter().next().unwrap()
    }

    fn ctx<'a>(
        target: &'a Target,
        state_dir: &'a Path,
        desired: &'a DesiredObjects,
        checked: usize,
        partial: bool,
    ) -> ActContext<'a> {
        ActContext {
            target,
            mode: Mode::Autocorrect,
            partial,
            dry_run: false,
            state_dir,
            desired,
            checked,
            pull_requests: None,
            audit: test_audit(),
            only: None,
            handoff: None,
        }
    }

    /// An audit log in a directory of its own, for the tests' contexts.
    fn test_audit() -> &'static crate::audit::AuditLog {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        Box::leak(Box::new(crate::audit::AuditLog::open(
            &crate::config::AuditSettings {
                retention_days: 90,
                dir: Some(dir.path().to_path_buf()),
            },
            &crate::config::TrustSettings::default(),
            dir.path(),
            crate::audit::OpenOptions::default(),
        )))
    }

    /// A safe drift of ConfigMap `name`, decided like `decide` does in autocorrect mode.
    fn drift(name: &str, kind: DriftKind, masked: bool) -> Drift {
        let id = ResourceId::Kubernetes {
            cluster: "c".into(),
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        };
        let mut d = Drift {
            fingerprint: fingerprint("t", &id),
            target: "t".into(),
            resource: ResourceRef::from(id),
            kind,
            changes: vec![FieldChange {
                path: "/data/LOG_LEVEL".into(),
                op: ChangeOp::Changed,
                desired: json!("info"),
                live: json!("debug"),
                masked,
                attribution: None,
                class: None,
            }],
            provenance: None,
            verdict: Some(Verdict {
                class: Class::Safe,
                reasons: vec!["routine".into()],
                rules: vec!["routine".into()],
                remedies: Default::default(),
            }),
            action: None,
            desired_object: None,
            live_object: None,
        };
        d.action = Some(decide(&d, Mode::Autocorrect));
        d
    }

    fn skipped_why(d: &Drift) -> Option<&str> {
        match d.action.as_ref().map(|a| (&a.action, &a.result)) {
            Some((Action::Skip { why }, ActionResult::Skipped)) => Some(why),
            _ => None,
        }
    }

    fn detail(d: &Drift) -> &str {
        d.action
            .as_ref()
            .and_then(|a| a.detail.as_deref())
            .unwrap_or_default()
    }

    #[test]
    fn only_planned_corrections_are_the_correctors_to_carry_out() {
        let mut d = drift("a", DriftKind::Modified, false);
        assert!(is_planned_correction(&d));
        record(&mut d, ActionResult::Done, "corrected");
        assert!(!is_planned_correction(&d));
        d.action = Some(decide(&d, Mode::Recommend));
        assert!(!is_planned_correction(&d), "recommend mode reports");
    }

    #[test]
    fn prune_rules_hold_deletions_and_removals() {
        let desired = DesiredObjects::default();
        let dir = Path::new("unused");
        let off = target("{prune: false}");
        let on = target("{prune: true}");

        let mut d = drift("orphan", DriftKind::Unmanaged, false);
        assert!(hold_removal(
            &ctx(&off, dir, &desired, 10, false),
            &mut d,
            Removal::Object
        ));
        assert_eq!(skipped_why(&d), Some("prune is off"));

        let mut d = drift("orphan", DriftKind::Unmanaged, false);
        assert!(hold_removal(
            &ctx(&on, dir, &desired, 10, true),
            &mut d,
            Removal::Object
        ));
        assert_eq!(skipped_why(&d), Some("partial read"));
        assert!(detail(&d).contains("nothing is deleted after a partial read"));

        let mut d = drift("orphan", DriftKind::Unmanaged, false);
        assert!(!hold_removal(
            &ctx(&on, dir, &desired, 10, false),
            &mut d,
            Removal::Object
        ));
        assert!(is_planned_correction(&d), "left alone");

        // Removing parts (tags, rules) needs no prune, only a complete read.
        let mut d = drift("sg", DriftKind::Modified, false);
        assert!(!hold_removal(
            &ctx(&off, dir, &desired, 10, false),
            &mut d,
            Removal::Parts("tags")
        ));
        assert!(hold_removal(
            &ctx(&off, dir, &desired, 10, true),
            &mut d,
            Removal::Parts("tags")
        ));
        assert_eq!(skipped_why(&d), Some("partial read"));
        assert!(detail(&d).contains("nothing (tags) is removed after a partial read"));
    }

    #[test]
    fn admit_applies_history_hourly_limit_and_blast_radius_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let desired = DesiredObjects::default();
        let t = target(
            "{max_remediations_per_hour: 1, max_corrections: 2, max_correction_percent: 100}",
        );
        let c = ctx(&t, dir.path(), &desired, 10, false);
        let mut drifts = vec![
            drift("a", DriftKind::Modified, false),
            drift("b", DriftKind::Modified, false),
            drift("c", DriftKind::Modified, false),
        ];

        // Within the limits: all admitted; the remediations are kept across runs.
        let mut jobs = vec![0, 1];
        let mut errors = Vec::new();
        let mut admitted = admit(&c, &mut drifts, &mut jobs, |j| *j, &mut errors).unwrap();
        assert_eq!(jobs, [0, 1]);
        admitted.record(&drifts[0]);
        assert!(admitted.save(&c).is_none());
        assert!(errors.is_empty());

        // `a` was corrected this hour: escalated as if risky; `b` and `c` exceed nothing.
        let mut jobs = vec![0, 1, 2];
        let admitted = admit(&c, &mut drifts, &mut jobs, |j| *j, &mut errors);
        assert!(admitted.is_some());
        assert_eq!(jobs, [1, 2]);
        let a = drifts[0].action.as_ref().unwrap();
        assert_eq!(
            (&a.action, &a.result),
            (&Action::PullRequest, &ActionResult::Planned)
        );
        assert!(
            detail(&drifts[0]).starts_with(
                "escalated: corrected 1 time(s) in the last hour, the limit is 1 (max_remediations_per_hour); would open a pull request"
            ),
            "{}",
            detail(&drifts[0])
        );

        // Three corrections over a limit of two: none runs, every one says why.
        let mut drifts = vec![
            drift("d", DriftKind::Modified, false),
            drift("e", DriftKind::Modified, false),
            drift("f", DriftKind::Missing, false),
        ];
        let mut jobs = vec![0, 1, 2];
        assert!(admit(&c, &mut drifts, &mut jobs, |j| *j, &mut errors).is_none());
        for d in &drifts {
            assert_eq!(
                skipped_why(d),
                Some("blast radius: 3 corrections exceed the limit of 2")
            );
            assert!(detail(d).contains(
                "(max_corrections: 2; max_correction_percent: 100% of 10 resources checked = 10)"
            ));
        }
        assert!(errors.is_empty());

        // An unreadable history: nothing is corrected, and the report gets the error.
        std::fs::write(History::path(dir.path()), "not json").unwrap();
        let mut drifts = vec![drift("g", DriftKind::Modified, false)];
        let mut jobs = vec![0];
        assert!(admit(&c, &mut drifts, &mut jobs, |j| *j, &mut errors).is_none());
        assert_eq!(
            skipped_why(&drifts[0]),
            Some("remediation history unreadable")
        );
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .starts_with("remediation history: the remediation history")
        );
    }

    #[test]
    fn escalations_keep_their_reason_through_the_pull_request_step() {
        let desired = DesiredObjects::default();
        let t = target("{force: false}");
        let c = ctx(&t, Path::new("unused"), &desired, 10, false);
        let reason = "escalated: server-side apply conflicts: owned by kubectl-edit (.data.LOG_LEVEL); `guardrails.force` is off";
        let mut drifts = vec![
            drift("conflict", DriftKind::Modified, false),
            drift("secret", DriftKind::Modified, true),
            drift("untouched", DriftKind::Modified, false),
            drift("risky", DriftKind::Modified, false),
        ];
        escalate(&mut drifts[0], &c, reason);
        escalate(&mut drifts[1], &c, "escalated: hourly limit");
        drifts[3].verdict.as_mut().unwrap().class = Class::Risky;
        drifts[3].action = Some(decide(&drifts[3], Mode::Autocorrect));
        // A secret escalates to an issue, everything else to a pull request; the verdict stays.
        assert_eq!(
            drifts[0].action.as_ref().unwrap().action,
            Action::PullRequest
        );
        assert_eq!(drifts[1].action.as_ref().unwrap().action, Action::Issue);
        assert_eq!(drifts[0].verdict.as_ref().unwrap().class, Class::Safe);

        let noted = Escalations::note(&c, &drifts);
        // The pull-request step records its outcomes.
        for d in &mut drifts[..2] {
            let a = d.action.as_mut().unwrap();
            a.result = ActionResult::Done;
            a.detail = Some("opened pull request #1 on branch b".into());
        }
        drifts[3].action.as_mut().unwrap().detail = Some("opened pull request #2".into());
        noted.restore(&mut drifts);
        assert_eq!(
            detail(&drifts[0]),
            format!("{reason}; opened pull request #1 on branch b")
        );
        assert_eq!(
            detail(&drifts[1]),
            "escalated: hourly limit; opened pull request #1 on branch b"
        );
        assert_eq!(
            detail(&drifts[2]),
            "would re-apply the desired object (field manager driftwarden)"
        );
        assert_eq!(
            detail(&drifts[3]),
            "opened pull request #2",
            "not escalated: unchanged"
        );

        // Without a pull-request step the planned detail already says why: not doubled.
        let mut drifts = vec![drift("conflict", DriftKind::Modified, false)];
        escalate(&mut drifts[0], &c, reason);
        let planned = detail(&drifts[0]).to_string();
        Escalations::note(&c, &drifts).restore(&mut drifts);
        assert_eq!(detail(&drifts[0]), planned);
        assert_eq!(planned.matches("owned by").count(), 1);
    }

    #[test]
    fn limit_takes_the_tighter_setting() {
        let mut g = Guardrails::default();
        assert_eq!(correction_limit(&g, 20), 5);
        assert_eq!(correction_limit(&g, 3), 0);
        g.max_corrections = Some(2);
        assert_eq!(correction_limit(&g, 20), 2);
        assert!(explain_limit(&g, 20).starts_with("max_corrections: 2; "));
        g.max_correction_percent = 100.0;
        g.max_corrections = None;
        assert_eq!(correction_limit(&g, 3), 3);
    }

    #[test]
    fn history_counts_the_last_hour_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(dir.path()).unwrap();
        h.record("fp", "Deployment shop/web", 1_000);
        h.record("fp", "Deployment shop/web", 4_000);
        h.record("fp", "Deployment shop/web", 4_500);
        assert_eq!(h.count_last_hour("fp", 4_600), 2);
        h.save(dir.path(), 4_600).unwrap();
        let back = History::load(dir.path()).unwrap();
        assert_eq!(back.count_last_hour("fp", 4_600), 2);
        assert_eq!(back.remediations["fp"].times, vec![4_000, 4_500]);
        assert_eq!(back.count_last_hour("other", 4_600), 0);
    }
}
