//! What `driftwarden watch` knows about itself, shared (behind an `Arc`) by the reconcile loops
//! that update it and the HTTP endpoints that show it: `/metrics` renders
//! [`Status::render_metrics`], `/readyz` answers [`Status::readiness`], `/healthz`
//! [`Status::liveness`].
//!
//! Counters only grow; gauges are set. Nothing here is secret: target names, kinds, counts,
//! durations and error messages that were already masked where they were made.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::lease::Role;
use crate::metrics;
use crate::model::Report;

/// Upper bounds (seconds) of the event-to-confirmed-correction histogram.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0,
];

/// One target's state as the endpoints show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetState {
    /// Its first full cycle finished (desired read, every watch synced or the cycle ran).
    pub first_sync: bool,
    /// Why it is not fully observed right now (a watch failing, the cluster gone, Git
    /// unreadable); `None`: healthy.
    pub degraded: Option<String>,
    /// Why corrections are stopped for it (the rolling window is spent); `None`: they run.
    pub corrections_stopped: Option<String>,
    /// Watch streams currently synced / in total.
    pub watches_synced: usize,
    pub watches: usize,
}

/// The shared state. Cheap to update from many tasks.
#[derive(Debug)]
pub struct Status {
    started: Instant,
    /// Milliseconds since `started` of the last main-loop tick.
    heartbeat_ms: AtomicU64,
    leader_election: bool,
    inner: Mutex<Inner>,
    /// Bumped on every change a watcher of the status may wait for.
    changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug)]
struct Inner {
    role: Role,
    targets: BTreeMap<String, TargetState>,
    /// (kind, event type) → count.
    events: BTreeMap<(String, String), u64>,
    /// (target, scope: `object` | `target`) → count.
    reconciles: BTreeMap<(String, String), u64>,
    /// (target, kind) → count.
    watch_restarts: BTreeMap<(String, String), u64>,
    /// (target, outcome) → corrections confirmed or failed.
    corrections: BTreeMap<(String, String), u64>,
    /// Target → objects waiting.
    queue_depth: BTreeMap<String, usize>,
    latency_counts: [u64; LATENCY_BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
    /// The latest report of each target (its last full cycle, updated per event).
    reports: BTreeMap<String, Report>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Why not ready (empty when ready), one line each.
    pub reasons: Vec<String>,
}

impl Status {
    /// A fresh status for these targets. `leader_election`: the leadership starts `Unknown`
    /// (else this process leads from the start).
    pub fn new<S: AsRef<str>>(targets: &[S], leader_election: bool) -> Status {
        let inner = Inner {
            role: if leader_election {
                Role::Unknown
            } else {
                Role::Leader
            },
            targets: targets
                .iter()
                .map(|t| (t.as_ref().to_string(), TargetState::default()))
                .collect(),
            events: BTreeMap::new(),
            reconciles: BTreeMap::new(),
            watch_restarts: BTreeMap::new(),
            corrections: BTreeMap::new(),
            queue_depth: BTreeMap::new(),
            latency_counts: [0; LATENCY_BUCKETS.len()],
            latency_count: 0,
            latency_sum: 0.0,
            reports: BTreeMap::new(),
        };
        Status {
            started: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            leader_election,
            inner: Mutex::new(inner),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A receiver that wakes on every change (a report, a target's state, a correction, the
    /// role): for waiting on a condition without polling on a timer.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The main loop is alive (called on every tick).
    pub fn heartbeat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// `/healthz`: the main loop ticked within `max_age`.
    pub fn liveness(&self, max_age: Duration) -> bool {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last) <= max_age
    }

    /// Whether leader election is configured.
    pub fn leader_election(&self) -> bool {
        self.leader_election
    }

    /// The leader election's latest role (mirrored from [`super::lease::Leadership`]).
    pub fn set_role(&self, role: Role) {
        self.lock().role = role;
        self.changed();
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    /// A watch event arrived (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`, `RELIST`).
    pub fn record_event(&self, kind: &str, event_type: &str) {
        *self
            .lock()
            .events
            .entry((kind.to_string(), event_type.to_string()))
            .or_default() += 1;
    }

    /// A reconcile ran: `scope` is `object` (one object after an event) or `target` (a full
    /// cycle).
    pub fn record_reconcile(&self, target: &str, scope: &str) {
        *self
            .lock()
            .reconciles
            .entry((target.to_string(), scope.to_string()))
            .or_default() += 1;
    }

    /// A watch stream restarted (a dropped connection, an error, a 410 relist).
    pub fn record_watch_restart(&self, target: &str, kind: &str) {
        *self
            .lock()
            .watch_restarts
            .entry((target.to_string(), kind.to_string()))
            .or_default() += 1;
    }

    /// A correction finished: `outcome` is `done` or `failed`.
    pub fn record_correction(&self, target: &str, outcome: &str) {
        *self
            .lock()
            .corrections
            .entry((target.to_string(), outcome.to_string()))
            .or_default() += 1;
        self.changed();
    }

    /// A target's objects waiting for their debounce or their turn.
    pub fn set_queue_depth(&self, target: &str, n: usize) {
        self.lock().queue_depth.insert(target.to_string(), n);
    }

    /// Objects waiting, over every target.
    pub fn queue_depth(&self) -> usize {
        self.lock().queue_depth.values().sum()
    }

    /// Time from the event that showed a drift to its confirmed correction.
    pub fn observe_correction_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut g = self.lock();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                if let Some(c) = g.latency_counts.get_mut(i) {
                    *c += 1;
                }
            }
        }
        g.latency_count += 1;
        g.latency_sum += secs;
    }

    /// Updates one target's state.
    pub fn update_target(&self, target: &str, f: impl FnOnce(&mut TargetState)) {
        {
            let mut g = self.lock();
            f(g.targets.entry(target.to_string()).or_default());
        }
        self.changed();
    }

    /// One target's state.
    pub fn target(&self, target: &str) -> Option<TargetState> {
        self.lock().targets.get(target).cloned()
    }

    /// Every target's state, by name.
    pub fn targets(&self) -> BTreeMap<String, TargetState> {
        self.lock().targets.clone()
    }

    /// The latest report of a target (what the metrics' drift gauges show).
    pub fn set_report(&self, target: &str, report: Report) {
        self.lock().reports.insert(target.to_string(), report);
        self.changed();
    }

    /// The latest report of a target.
    pub fn report(&self, target: &str) -> Option<Report> {
        self.lock().reports.get(target).cloned()
    }

    /// `/readyz`: every target finished its first sync and the leader state is known.
    pub fn readiness(&self) -> Readiness {
        let g = self.lock();
        let mut reasons = Vec::new();
        for (name, t) in &g.targets {
            if !t.first_sync {
                reasons.push(format!("target {name}: first sync not finished"));
            }
            if let Some(why) = &t.degraded {
                reasons.push(format!("target {name}: {why}"));
            }
        }
        if g.role == Role::Unknown {
            reasons.push("leader state not known yet".to_string());
        }
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// Every metric in the Prometheus text format: the report metrics of `reconcile` over the
    /// targets' latest state, then the watch families.
    pub fn render_metrics(&self) -> String {
        let g = self.lock();
        let report = merged_report(&g.reports, g.targets.len());
        let facts = metrics::RunFacts {
            duration_seconds: self.started.elapsed().as_secs_f64(),
            finished_unix_seconds: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            api_requests: metrics::api_requests(),
            notifications: metrics::notifications(),
        };
        let mut out = metrics::render(&report, &facts);
        let counter2 = |out: &mut String,
                        name: &str,
                        help: &str,
                        labels: (&str, &str),
                        m: &BTreeMap<(String, String), u64>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for ((a, b), n) in m {
                let _ = writeln!(
                    out,
                    "{name}{{{}=\"{}\",{}=\"{}\"}} {n}",
                    labels.0,
                    metrics::escape_label(a),
                    labels.1,
                    metrics::escape_label(b)
                );
            }
        };
        counter2(
            &mut out,
            "driftwarden_watch_events_total",
            "Watch events received, by kind and event type.",
            ("kind", "type"),
            &g.events,
        );
        counter2(
            &mut out,
            "driftwarden_reconciles_total",
            "Reconciles run, by target and scope (object: one object after an event; target: a full cycle).",
            ("target", "scope"),
            &g.reconciles,
        );
        counter2(
            &mut out,
            "driftwarden_watch_restarts_total",
            "Watch streams restarted (dropped connection, error, 410 relist), by target and kind.",
            ("target", "kind"),
            &g.watch_restarts,
        );
        counter2(
            &mut out,
            "driftwarden_corrections_total",
            "Corrections in watch mode, by target and outcome.",
            ("target", "outcome"),
            &g.corrections,
        );
        let _ = writeln!(
            out,
            "# HELP driftwarden_queue_depth Objects waiting for their debounce or their turn.\n# TYPE driftwarden_queue_depth gauge\ndriftwarden_queue_depth {}",
            g.queue_depth.values().sum::<usize>()
        );
        let name = "driftwarden_correction_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from the watch event that showed a drift to its confirmed correction.\n# TYPE {name} histogram"
        );
        for (bound, n) in LATENCY_BUCKETS.iter().zip(g.latency_counts.iter()) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", g.latency_count);
        let _ = writeln!(out, "{name}_sum {}", g.latency_sum);
        let _ = writeln!(out, "{name}_count {}", g.latency_count);
        let role = g.role;
        let _ = writeln!(
            out,
            "# HELP driftwarden_leader 1 for this replica's leadership state (leader, follower, unknown).\n# TYPE driftwarden_leader gauge"
        );
        for l in [Role::Leader, Role::Follower, Role::Unknown] {
            let _ = writeln!(
                out,
                "driftwarden_leader{{state=\"{}\"}} {}",
                l.as_str(),
                u8::from(l == role)
            );
        }
        let _ = writeln!(
            out,
            "# HELP driftwarden_target_ready 1 when the target's first sync finished and it is fully observed.\n# TYPE driftwarden_target_ready gauge"
        );
        for (t, s) in &g.targets {
            let _ = writeln!(
                out,
                "driftwarden_target_ready{{target=\"{}\"}} {}",
                metrics::escape_label(t),
                u8::from(s.first_sync && s.degraded.is_none())
            );
        }
        let _ = writeln!(
            out,
            "# HELP driftwarden_corrections_stopped 1 when the target's rolling correction window is spent.\n# TYPE driftwarden_corrections_stopped gauge"
        );
        for (t, s) in &g.targets {
            let _ = writeln!(
                out,
                "driftwarden_corrections_stopped{{target=\"{}\"}} {}",
                metrics::escape_label(t),
                u8::from(s.corrections_stopped.is_some())
            );
        }
        out
    }
}

/// The targets' latest reports as one (`reconcile`'s metrics over the whole config).
fn merged_report(reports: &BTreeMap<String, Report>, targets: usize) -> Report {
    let mut checked = 0;
    let mut ignored = BTreeMap::new();
    let mut drifts = Vec::new();
    let mut errors = Vec::new();
    for r in reports.values() {
        checked += r.summary.resources_checked;
        for (k, v) in &r.summary.ignored_fields {
            *ignored.entry(k.clone()).or_insert(0) += *v;
        }
        drifts.extend(r.drifts.iter().cloned());
        errors.extend(r.errors.iter().cloned());
    }
    Report::new("watch", targets, checked, ignored, drifts, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_first_sync_and_leadership() {
        let s = Status::new(&["a", "b"], true);
        let r = s.readiness();
        assert!(!r.ready);
        assert_eq!(r.reasons.len(), 3, "{r:?}");
        s.update_target("a", |t| t.first_sync = true);
        s.update_target("b", |t| t.first_sync = true);
        s.set_role(Role::Follower);
        assert!(s.readiness().ready);
        s.update_target("b", |t| {
            t.degraded = Some("watch of Deployment failing".into())
        });
        assert_eq!(
            s.readiness().reasons,
            vec!["target b: watch of Deployment failing".to_string()]
        );
    }

    #[test]
    fn metrics_render_watch_families() {
        let s = Status::new(&["shop"], false);
        s.record_event("Deployment", "MODIFIED");
        s.record_event("Deployment", "MODIFIED");
        s.record_reconcile("shop", "object");
        s.record_watch_restart("shop", "Deployment");
        s.observe_correction_latency(Duration::from_millis(700));
        s.set_queue_depth("shop", 3);
        let text = s.render_metrics();
        for line in [
            "driftwarden_watch_events_total{kind=\"Deployment\",type=\"MODIFIED\"} 2",
            "driftwarden_reconciles_total{target=\"shop\",scope=\"object\"} 1",
            "driftwarden_watch_restarts_total{target=\"shop\",kind=\"Deployment\"} 1",
            "driftwarden_queue_depth 3",
            "driftwarden_correction_latency_seconds_bucket{le=\"0.5\"} 0",
            "driftwarden_correction_latency_seconds_bucket{le=\"0.75\"} 1",
            "driftwarden_correction_latency_seconds_bucket{le=\"+Inf\"} 1",
            "driftwarden_correction_latency_seconds_count 1",
            "driftwarden_leader{state=\"leader\"} 1",
            "driftwarden_target_ready{target=\"shop\"} 0",
            "driftwarden_resources_checked 0",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
    }

    #[test]
    fn liveness_follows_the_heartbeat() {
        let s = Status::new(&["a"], false);
        s.heartbeat();
        assert!(s.liveness(Duration::from_secs(30)));
    }
}
