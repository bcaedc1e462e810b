//! Notifications from `watch` (`notify:`): one [`Notifier`] for the process, shared by every
//! target's loop.
//!
//! Each pass that acted (an event pass, a full cycle, a health gate concluding in the
//! background) hands its events to [`Notices::send`], which spawns the delivery and returns at
//! once: a receiver that is slow or never answers holds no pass and no correction back (each
//! delivery is bounded by `notify.timeout`, `notify.retries` and `notify.deadline`). The
//! outcomes of deliveries that have ended are recorded in the audit log (`notification`
//! records) at the next send, and at shutdown [`Notices::flush`] waits for the deliveries still
//! under way, up to a budget, records their outcomes and gives up the rest.
//!
//! Events carry `command: watch` and the pass that acted ([`crate::notify::PASS_EVENT`],
//! [`crate::notify::PASS_CYCLE`], [`crate::notify::PASS_GATE`]), so a receiver can tell them from
//! a `reconcile` run's. Targets without watches (Terraform/EC2, snapshots) run whole
//! `reconcile` cycles and notify as `reconcile` does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::warn;

use crate::audit::AuditLog;
use crate::errors::error_chain;
use crate::notify::{Delivery, Event, Notifier, Origin};

/// The process's notifier and the deliveries it started.
#[derive(Debug)]
pub struct Notices {
    notifier: Arc<Notifier>,
    sends: Mutex<JoinSet<Delivery>>,
}

impl Notices {
    pub fn new(notifier: Arc<Notifier>) -> Notices {
        Notices {
            notifier,
            sends: Mutex::new(JoinSet::new()),
        }
    }

    /// The origin of a `watch` pass's events.
    pub fn origin(pass: &'static str) -> Origin {
        Origin {
            command: "watch".to_string(),
            dry_run: false,
            pass: Some(pass),
        }
    }

    /// Starts delivering `events` without waiting for them; records the outcomes of the
    /// deliveries that have ended since the last call.
    pub fn send(&self, events: Vec<Event>, audit: &AuditLog) {
        let mut records = Vec::new();
        {
            let mut sends = self.sends.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(joined) = sends.try_join_next() {
                if let Ok(delivery) = joined {
                    records.extend(delivery.outcomes.iter().map(|o| o.audit_event()));
                }
            }
            if !events.is_empty() {
                sends.spawn(Arc::clone(&self.notifier).send(events));
            }
        }
        record(audit, records);
    }

    /// At shutdown: waits for the deliveries under way for at most `budget` (and never longer
    /// than `notify.deadline`), records their outcomes, and gives up the rest.
    pub async fn flush(&self, audit: &AuditLog, budget: Duration) {
        let mut sends = std::mem::take(&mut *self.sends.lock().unwrap_or_else(|e| e.into_inner()));
        let until = tokio::time::Instant::now() + budget.min(self.notifier.deadline());
        let mut records = Vec::new();
        loop {
            match tokio::time::timeout_at(until, sends.join_next()).await {
                Ok(Some(Ok(delivery))) => {
                    records.extend(delivery.outcomes.iter().map(|o| o.audit_event()));
                }
                Ok(Some(Err(e))) => warn!(error = %e, "a notification task failed"),
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        deliveries = sends.len(),
                        "watch is stopping: notifications still under way are given up"
                    );
                    break;
                }
            }
        }
        sends.abort_all();
        record(audit, records);
    }
}

/// Notifications are a side channel: a record that cannot be written is logged only.
fn record(audit: &AuditLog, records: Vec<crate::audit::Event>) {
    if records.is_empty() {
        return;
    }
    if let Err(e) = audit.write(records) {
        warn!(error = %error_chain(&e), "the notifications could not be recorded in the audit log");
    }
}
