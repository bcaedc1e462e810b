//! The guardrail over time: at most `max_corrections_per_window` corrections per target within a
//! rolling `window`, across every cycle and event. The per-cycle blast radius
//! ([`crate::act::guardrails`]) still applies inside each pass; this one stops an event storm
//! (a node drain, a bad rollout, someone scaling everything) that arrives one object at a time.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::act::guardrails;
use crate::model::Drift;

/// The short reason reports group held-back corrections by.
pub const WHY: &str = "correction window";

/// One target's corrections within the rolling window.
#[derive(Debug, Clone)]
pub struct Window {
    span: Duration,
    limit: usize,
    /// When each counted correction was made, oldest first.
    made: VecDeque<Instant>,
}

impl Window {
    pub fn new(span: Duration, limit: usize) -> Window {
        Window {
            span,
            limit,
            made: VecDeque::new(),
        }
    }

    /// The limit follows the target's size when it is the per-run default.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn trim(&mut self, now: Instant) {
        while self
            .made
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.span)
        {
            self.made.pop_front();
        }
    }

    /// Corrections counted within the window ending `now`.
    pub fn used(&mut self, now: Instant) -> usize {
        self.trim(now);
        self.made.len()
    }

    /// Counts `n` corrections made at `now`.
    pub fn record(&mut self, now: Instant, n: usize) {
        self.trim(now);
        self.made.extend(std::iter::repeat_n(now, n));
    }

    /// Holds back every planned correction of a pass when they do not all fit in what is left of
    /// the window (all or nothing, like the blast radius). Returns the reason when it did, for
    /// the report and `/metrics`; `None` when they fit (or there were none).
    pub fn hold_back(&mut self, drifts: &mut [Drift], now: Instant) -> Option<String> {
        let planned = drifts
            .iter()
            .filter(|d| guardrails::is_planned_correction(d))
            .count();
        if planned == 0 {
            return None;
        }
        let used = self.used(now);
        if used + planned <= self.limit {
            return None;
        }
        let reason = format!(
            "corrections stopped for this target: {used} made in the last {}, {planned} more needed, at most {} allowed (watch.max_corrections_per_window); correct by hand or wait for the window to pass",
            show(self.span),
            self.limit
        );
        for d in drifts
            .iter_mut()
            .filter(|d| guardrails::is_planned_correction(d))
        {
            guardrails::skip(d, WHY, reason.clone());
        }
        Some(reason)
    }
}

fn show(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, ActionRecord, ActionResult, DriftKind, ResourceId};

    fn planned(n: usize) -> Vec<Drift> {
        (0..n)
            .map(|_| {
                let id = ResourceId::Kubernetes {
                    cluster: "c".into(),
                    group: "apps".into(),
                    version: "v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("n".into()),
                    name: "x".into(),
                };
                let mut d = Drift {
                    fingerprint: "f".into(),
                    target: "t".into(),
                    resource: id.into(),
                    kind: DriftKind::Modified,
                    changes: Vec::new(),
                    provenance: None,
                    verdict: None,
                    action: None,
                    desired_object: None,
                    live_object: None,
                };
                d.action = Some(ActionRecord {
                    action: Action::Correct,
                    result: ActionResult::Planned,
                    detail: None,
                });
                d
            })
            .collect()
    }

    #[test]
    fn a_window_holds_back_what_does_not_fit_and_frees_up_over_time() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(600), 3);
        let mut two = planned(2);
        assert_eq!(w.hold_back(&mut two, t0), None);
        w.record(t0, 2);
        let mut two_more = planned(2);
        let why = w
            .hold_back(&mut two_more, t0 + Duration::from_secs(60))
            .unwrap();
        assert!(
            why.contains("2 made in the last 10m, 2 more needed, at most 3"),
            "{why}"
        );
        assert!(
            two_more
                .iter()
                .all(|d| d.action.as_ref().unwrap().result == ActionResult::Skipped)
        );
        let mut one = planned(1);
        assert_eq!(w.hold_back(&mut one, t0 + Duration::from_secs(60)), None);
        w.record(t0 + Duration::from_secs(60), 1);
        // Ten minutes after the first two, they no longer count.
        assert_eq!(w.used(t0 + Duration::from_secs(600)), 1);
        let mut two_later = planned(2);
        assert_eq!(
            w.hold_back(&mut two_later, t0 + Duration::from_secs(600)),
            None
        );
    }
}
