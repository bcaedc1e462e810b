//! The health gate: after a confirmed correction of a Deployment, StatefulSet or DaemonSet,
//! follow its rollout and undo the correction when the workload ends worse than before
//! (`guardrails.health_gate`).
//!
//! 1. **Before** the correction, [`Gate::capture`] takes the workload's health from the live
//!    object this run read (`status`: `observedGeneration`, the replica counters, the
//!    `Available`/`Progressing` conditions) and the pre-correction live values of exactly the
//!    fields the correction changes (the drift's changes). A workload whose status no controller
//!    reports (no `observedGeneration`) cannot be judged and is not gated; one that is already
//!    unhealthy (`ProgressDeadlineExceeded`, `Available=False`, fewer ready or available replicas
//!    than wanted) is not gated either: it is never rolled back for being unhealthy.
//! 2. **After** it, [`Gate::follow`] reads the workload every `interval` until `timeout`:
//!    - once the controller observed the new generation (`observedGeneration ≥ generation`):
//!      `Progressing=False ProgressDeadlineExceeded` is a failed rollout at once; all replicas
//!      updated, ready and available (and `Available` not `False`) is a healthy one;
//!    - at the timeout, a rollout that was observed but did not complete is **worse** when it
//!      has fewer ready or available replicas than before, or `Available=False` where it was not:
//!      a StatefulSet or DaemonSet has no deadline condition, so this is how their failure shows;
//!      one that is merely slow (no fewer replicas serving) is kept, and so is one whose new
//!      generation the controller never observed (nothing says the workload is worse).
//! 3. A worse workload is **rolled back** ([`Gate::roll_back`]): the object applied for the
//!    correction is applied again (server-side apply, field manager `driftwarden`) with exactly
//!    the corrected fields set back to their pre-correction live values (a field live did not
//!    have is left out, so the apply removes it), and read back to confirm. The correction is
//!    reported `rolled_back` with the evidence (conditions and counters), recorded in the audit
//!    log (`rollback` intent and result, and a `rollback` record with the fields and the
//!    evidence), counted as a failed correction, and the drift is escalated to a pull request.
//!
//! [`Gate::follow`] owns what it needs (a [`Kube`] clone and the gate), so it can be spawned.
//! `reconcile` follows every gated workload of a target at once and waits for them (at most
//! `timeout`). `watch` hands its gates over instead ([`Handoff`], set in
//! [`super::ActContext::handoff`]): the correction is reported `done` at once, each gate is
//! followed on a task of its own while the target's other events go on being handled, and when
//! the gate concludes the correction is settled as `reconcile` settles it (kept, or rolled back
//! and escalated; the audit result written then: [`super::conclude_gate`]).

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};
use tracing::{info, warn};

use crate::config::HealthGate;
use crate::diff::keys::{self, ListKind, ListSite};
use crate::live::kube::{ApiResource, Kube, error_chain};
use crate::model::{ChangeOp, Drift, contains_mask, pointer_segments};

/// What a rolled-back correction's escalation reason starts with; [`finish`] finds the drifts
/// it escalated by it after the pull-request step.
pub const ROLLED_BACK: &str = "rolled back by the health gate: ";

/// The workload kinds the gate follows.
pub const WORKLOADS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// One condition of a workload's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// A workload's health as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub kind: String,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// Replicas wanted: `spec.replicas` (default 1), a DaemonSet's `desiredNumberScheduled`.
    pub desired: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
    pub unavailable: i64,
    pub conditions: Vec<Condition>,
}

fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

impl Health {
    /// The health of a workload object; `None` for another kind.
    pub fn of(obj: &Value) -> Option<Health> {
        let kind = obj.get("kind").and_then(Value::as_str)?;
        if !WORKLOADS.contains(&kind) {
            return None;
        }
        let s = |p: &str| int(obj, &format!("/status/{p}")).unwrap_or(0);
        let (desired, updated, ready, available, unavailable) = if kind == "DaemonSet" {
            (
                s("desiredNumberScheduled"),
                s("updatedNumberScheduled"),
                s("numberReady"),
                s("numberAvailable"),
                s("numberUnavailable"),
            )
        } else {
            let desired = int(obj, "/spec/replicas").unwrap_or(1);
            let available = s("availableReplicas");
            let unavailable = int(obj, "/status/unavailableReplicas")
                .unwrap_or_else(|| (desired - available).max(0));
            (
                desired,
                s("updatedReplicas"),
                s("readyReplicas"),
                available,
                unavailable,
            )
        };
        let conditions = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let f =
                            |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        Condition {
                            kind: f("type"),
                            status: f("status"),
                            reason: f("reason"),
                            message: f("message"),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(Health {
            kind: kind.to_string(),
            generation: int(obj, "/metadata/generation"),
            observed_generation: int(obj, "/status/observedGeneration"),
            desired,
            updated,
            ready,
            available,
            unavailable,
            conditions,
        })
    }

    fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// A controller reports this workload's status.
    pub fn reported(&self) -> bool {
        self.observed_generation.is_some()
    }

    /// The controller has seen the current generation.
    pub fn observed(&self) -> bool {
        match (self.observed_generation, self.generation) {
            (Some(o), Some(g)) => o >= g,
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// `Progressing=False` with reason `ProgressDeadlineExceeded` (Deployments).
    pub fn deadline_exceeded(&self) -> bool {
        self.condition("Progressing")
            .is_some_and(|c| c.status == "False" && c.reason == "ProgressDeadlineExceeded")
    }

    fn available_false(&self) -> bool {
        self.condition("Available")
            .is_some_and(|c| c.status == "False")
    }

    /// Observed and rolled out: every wanted replica updated, ready and available.
    pub fn complete(&self) -> bool {
        self.observed()
            && !self.deadline_exceeded()
            && !self.available_false()
            && self.updated >= self.desired
            && self.ready >= self.desired
            && self.available >= self.desired
            && self.unavailable == 0
    }

    /// Why the workload is unhealthy now, if it is.
    pub fn unhealthy(&self) -> Option<String> {
        if self.deadline_exceeded() {
            return Some("its rollout exceeded its progress deadline".to_string());
        }
        if self.available_false() {
            return Some("it is not Available".to_string());
        }
        if self.ready < self.desired || self.available < self.desired {
            return Some(format!(
                "{} of {} replicas ready, {} available",
                self.ready, self.desired, self.available
            ));
        }
        None
    }

    /// Worse than `before`: fewer replicas ready or available, not `Available` where it was, or
    /// a progress deadline exceeded.
    pub fn worse_than(&self, before: &Health) -> bool {
        self.deadline_exceeded()
            || self.ready < before.ready
            || self.available < before.available
            || (self.available_false() && !before.available_false())
    }

    /// The evidence as one line: generations, counters, conditions.
    pub fn evidence(&self) -> String {
        let num = |g: Option<i64>| g.map(|g| g.to_string()).unwrap_or_else(|| "-".into());
        let mut s = format!(
            "observedGeneration {} of generation {}; replicas {}, updated {}, ready {}, available {}, unavailable {}",
            num(self.observed_generation),
            num(self.generation),
            self.desired,
            self.updated,
            self.ready,
            self.available,
            self.unavailable
        );
        for c in &self.conditions {
            s.push_str(&format!("; {}={}", c.kind, c.status));
            if !c.reason.is_empty() {
                s.push_str(&format!(" ({}", c.reason));
                if !c.message.is_empty() {
                    s.push_str(&format!(": {}", c.message));
                }
                s.push(')');
            }
        }
        s
    }
}

/// One corrected field and its pre-correction live value (`None`: live did not have it).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Field {
    /// The pointer into the live object, as the drift's change has it.
    pub path: String,
    pub before: Option<Value>,
}

/// What the gate follows for one correction.
#[derive(Debug, Clone)]
pub struct Gate {
    pub resource: ApiResource,
    pub namespace: Option<String>,
    pub name: String,
    /// The object applied for the correction (the rollback applies it again, changed).
    pub applied: Value,
    /// The fields the correction changed, with their pre-correction live values.
    pub fields: Vec<Field>,
    /// The workload's health before the correction.
    pub before: Health,
    /// The live object before the correction (for mapping list items).
    pub live_before: Value,
    pub timeout: Duration,
    pub interval: Duration,
    /// The resource as reports show it.
    pub display: String,
}

/// A gated correction handed over to be followed elsewhere (`watch`).
#[derive(Debug)]
pub struct Handed {
    /// The drift as the correction left it (`done`, confirmed), before the note that the gate
    /// follows it in the background.
    pub drift: Drift,
    /// The correction's audit intent: its result is written once the gate concludes.
    pub intent: String,
    pub gate: Gate,
}

/// What the note on a handed correction's detail says until its gate concludes.
pub const FOLLOWING: &str = "health gate: following the rollout in the background";

/// Where the Kubernetes actuator leaves the gates of a context that follows them elsewhere
/// instead of waiting for them.
#[derive(Debug, Default)]
pub struct Handoff(Mutex<Vec<Handed>>);

impl Handoff {
    pub fn push(&self, h: Handed) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(h);
    }

    /// The gates handed over so far; the handoff is empty after.
    pub fn take(&self) -> Vec<Handed> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Why a correction is not gated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// No status reported: nothing to judge by.
    NoStatus,
    /// Unhealthy before the correction (why).
    AlreadyUnhealthy(String),
}

/// How a followed rollout ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Rolled out: all replicas updated, ready and available.
    Healthy(Health),
    /// Not worse than before, but not complete within the timeout (slow, or not observed).
    Unsettled { last: Option<Health>, why: String },
    /// Worse than before: roll back.
    Worse { last: Health, why: String },
}

/// How a rollback went.
#[derive(Debug, Clone, PartialEq)]
pub struct RollbackOutcome {
    /// The corrected fields are back to their pre-correction values (confirmed by a re-read).
    pub restored: bool,
    /// What was done, for the report.
    pub detail: String,
}

impl Gate {
    /// The gate of a correction about to be made, or why there is none. `d` is the drift (its
    /// `live_object` is the workload as this run read it), `applied` the object the correction
    /// applies.
    pub fn capture(
        d: &Drift,
        applied: &Value,
        resource: &ApiResource,
        namespace: Option<&str>,
        name: &str,
        settings: &HealthGate,
    ) -> Result<Gate, Skip> {
        let live = d.live_object.clone().unwrap_or(Value::Null);
        let before = Health::of(&live).ok_or(Skip::NoStatus)?;
        if !before.reported() {
            return Err(Skip::NoStatus);
        }
        if let Some(why) = before.unhealthy() {
            return Err(Skip::AlreadyUnhealthy(why));
        }
        let fields = d
            .changes
            .iter()
            .map(|c| Field {
                path: c.path.clone(),
                before: match c.op {
                    ChangeOp::MissingLive => None,
                    ChangeOp::Changed | ChangeOp::ExtraLive => live.pointer(&c.path).cloned(),
                },
            })
            .collect();
        Ok(Gate {
            resource: resource.clone(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
            applied: applied.clone(),
            fields,
            before,
            live_before: live,
            timeout: settings.timeout,
            interval: settings.interval,
            display: d.resource.display.clone(),
        })
    }

    /// Follows the rollout: a GET every `interval` until it is judged or `timeout` passed.
    /// Owns its arguments, so it can be spawned.
    pub async fn follow(self, kube: Kube) -> (Gate, Judgement) {
        let until = tokio::time::Instant::now() + self.timeout;
        let mut last: Option<Health> = None;
        let mut read_error: Option<String> = None;
        loop {
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            tokio::time::sleep(self.interval.min(until - now)).await;
            match kube
                .get(&self.resource, self.namespace.as_deref(), &self.name)
                .await
            {
                Ok(Some(obj)) => {
                    let Some(h) = Health::of(&obj) else { break };
                    if h.observed() {
                        if h.deadline_exceeded() {
                            let why = "the rollout exceeded its progress deadline".to_string();
                            return (self, Judgement::Worse { last: h, why });
                        }
                        if h.complete() {
                            return (self, Judgement::Healthy(h));
                        }
                    }
                    last = Some(h);
                }
                Ok(None) => {
                    read_error = Some("the workload is gone".to_string());
                    break;
                }
                Err(e) => read_error = Some(error_chain(&e)),
            }
        }
        let timeout = format!("{} ms", self.timeout.as_millis());
        let judgement = match last {
            Some(h) if h.observed() && h.worse_than(&self.before) => {
                let why = format!(
                    "the rollout did not complete within {timeout} and the workload is worse than before the correction"
                );
                Judgement::Worse { last: h, why }
            }
            Some(h) if h.observed() => Judgement::Unsettled {
                why: format!(
                    "the rollout did not complete within {timeout}, but no fewer replicas serve than before"
                ),
                last: Some(h),
            },
            Some(h) => Judgement::Unsettled {
                why: format!(
                    "the controller did not observe the new generation within {timeout}; nothing shows the workload worse"
                ),
                last: Some(h),
            },
            None => Judgement::Unsettled {
                why: format!(
                    "the workload could not be read within {timeout}{}",
                    read_error.map(|e| format!(": {e}")).unwrap_or_default()
                ),
                last: None,
            },
        };
        (self, judgement)
    }

    /// The rollback body: the applied object with exactly the corrected fields set back to
    /// their pre-correction values (left out where live did not have them). `Err`: a field
    /// cannot be located in the applied object, or its value is masked.
    pub fn rollback_body(&self) -> Result<Value, String> {
        let mut body = self.applied.clone();
        for f in &self.fields {
            if f.before.as_ref().is_some_and(contains_mask) {
                return Err(format!("{}: the value is masked", f.path));
            }
            let path = self
                .body_path(&body, &f.path)
                .ok_or_else(|| format!("{}: not found in the applied object", f.path))?;
            match &f.before {
                Some(v) => set_at(&mut body, &path, v.clone()),
                None => remove_at(&mut body, &path),
            }
            .then_some(())
            .ok_or_else(|| format!("{}: cannot be set in the applied object", f.path))?;
        }
        Ok(body)
    }

    /// The segments in `body` of a pointer into the live object: list items are matched by
    /// their merge keys (containers by name…), else by index.
    fn body_path(&self, body: &Value, pointer: &str) -> Option<Vec<Seg>> {
        let segs = pointer_segments(pointer);
        let mut live = &self.live_before;
        let mut cur = Some(body);
        let mut out = Vec::new();
        let kind = self.before.kind.as_str();
        for (i, seg) in segs.iter().enumerate() {
            match live {
                Value::Array(items) => {
                    let idx: usize = seg.parse().ok()?;
                    let item = items.get(idx)?;
                    let body_items: Vec<Value> =
                        cur.and_then(Value::as_array).cloned().unwrap_or_default();
                    let site = ListSite {
                        path: &segs[..i],
                        kind,
                        desired_items: &body_items,
                        managed_keys: None,
                    };
                    let at = match keys::list_kind(site) {
                        ListKind::Keyed(k) => {
                            let key = keys::key_of(item, &k)?;
                            keys::find_by_key(&body_items, &key, &k, &[])?
                        }
                        _ => idx,
                    };
                    out.push(Seg::Index(at));
                    cur = cur.and_then(|c| c.get(at));
                    live = item;
                }
                _ => {
                    out.push(Seg::Key(seg.clone()));
                    cur = cur.and_then(|c| c.get(seg));
                    live = live.get(seg).unwrap_or(&Value::Null);
                }
            }
        }
        Some(out)
    }

    /// Re-applies the pre-correction values of the corrected fields and reads the workload
    /// back to confirm them.
    pub async fn roll_back(&self, kube: &Kube, force: bool) -> RollbackOutcome {
        let body = match self.rollback_body() {
            Ok(b) => b,
            Err(why) => {
                return RollbackOutcome {
                    restored: false,
                    detail: format!("the rollback could not be built ({why}); nothing was sent"),
                };
            }
        };
        let ns = self.namespace.as_deref();
        if let Err(e) = kube
            .apply(&self.resource, ns, &self.name, &body, force, false)
            .await
        {
            warn!(resource = %self.display, error = %error_chain(&e), "rollback failed");
            return RollbackOutcome {
                restored: false,
                detail: format!("the rollback apply failed: {}", error_chain(&e)),
            };
        }
        let paths: Vec<&str> = self.fields.iter().map(|f| f.path.as_str()).collect();
        match kube.get(&self.resource, ns, &self.name).await {
            Ok(Some(now)) => {
                let off: Vec<&str> = self
                    .fields
                    .iter()
                    .filter(|f| now.pointer(&f.path) != f.before.as_ref())
                    .map(|f| f.path.as_str())
                    .collect();
                info!(resource = %self.display, fields = ?paths, "correction rolled back");
                if off.is_empty() {
                    RollbackOutcome {
                        restored: true,
                        detail: format!(
                            "{} set back to the pre-correction live values by server-side apply (field manager driftwarden); the re-read confirms them",
                            paths.join(", ")
                        ),
                    }
                } else {
                    RollbackOutcome {
                        restored: false,
                        detail: format!(
                            "rollback applied, but the re-read differs from the pre-correction values at {}",
                            off.join(", ")
                        ),
                    }
                }
            }
            Ok(None) => RollbackOutcome {
                restored: false,
                detail: "rollback applied, but the workload is gone on re-read".to_string(),
            },
            Err(e) => RollbackOutcome {
                restored: false,
                detail: format!(
                    "rollback applied, but the re-read failed: {}",
                    error_chain(&e)
                ),
            },
        }
    }
}

/// A step of a path in a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Sets `v` at `path`, creating missing objects on the way. False when a step cannot be taken.
fn set_at(root: &mut Value, path: &[Seg], v: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = root;
    for seg in parents {
        cur = match seg {
            Seg::Key(k) => {
                if cur.is_null() {
                    *cur = Value::Object(Map::new());
                }
                let Some(obj) = cur.as_object_mut() else {
                    return false;
                };
                obj.entry(k.clone()).or_insert(Value::Null)
            }
            Seg::Index(i) => match cur.get_mut(*i) {
                Some(c) => c,
                None => return false,
            },
        };
    }
    match last {
        Seg::Key(k) => {
            if cur.is_null() {
                *cur = Value::Object(Map::new());
            }
            match cur.as_object_mut() {
                Some(obj) => {
                    obj.insert(k.clone(), v);
                    true
                }
                None => false,
            }
        }
        Seg::Index(i) => match cur.get_mut(*i) {
            Some(slot) => {
                *slot = v;
                true
            }
            None => false,
        },
    }
}

/// Removes what stands at `path`; true when nothing is left there.
fn remove_at(root: &mut Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = root;
    for seg in parents {
        let next = match seg {
            Seg::Key(k) => cur.get_mut(k.as_str()),
            Seg::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(n) => cur = n,
            None => return true,
        }
    }
    match (last, cur) {
        (Seg::Key(k), Value::Object(obj)) => {
            obj.remove(k);
            true
        }
        (Seg::Index(i), Value::Array(items)) if *i < items.len() => {
            items.remove(*i);
            true
        }
        (_, _) => true,
    }
}

/// After the pull-request step: a drift the health gate escalated ([`ROLLED_BACK`]) is reported
/// as the rolled-back correction it is, followed by what became of its escalation.
pub fn finish(drifts: &mut [Drift]) {
    use crate::model::{Action, ActionResult};
    for d in drifts.iter_mut() {
        let Some(a) = d.action.as_mut() else { continue };
        let rolled_back = matches!(a.action, Action::PullRequest | Action::Issue)
            && a.detail
                .as_deref()
                .is_some_and(|s| s.starts_with(ROLLED_BACK));
        if rolled_back {
            a.action = Action::Correct;
            a.result = ActionResult::RolledBack;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, observed: i64, ready: i64, conditions: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "envoy:1"}, {"name": "web", "image": "web:1"}]}}},
            "status": {"observedGeneration": observed, "replicas": 3, "updatedReplicas": ready,
                "readyReplicas": ready, "availableReplicas": ready, "conditions": conditions}})
    }

    fn ok_conditions() -> Value {
        json!([{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
               {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}])
    }

    #[test]
    fn health_reads_deployment_status() {
        let h = Health::of(&deployment(4, 4, 3, ok_conditions())).unwrap();
        assert!(h.reported() && h.observed() && h.complete());
        assert_eq!(h.unhealthy(), None);
        let stale = Health::of(&deployment(5, 4, 3, ok_conditions())).unwrap();
        assert!(!stale.observed() && !stale.complete());
        let failed = Health::of(&deployment(
            5,
            5,
            3,
            json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"web-2\" has timed out progressing."}]),
        ))
        .unwrap();
        assert!(failed.deadline_exceeded() && failed.worse_than(&h));
        assert!(failed.evidence().contains(
            "Progressing=False (ProgressDeadlineExceeded: ReplicaSet \"web-2\" has timed out progressing.)"
        ));
        let fewer = Health::of(&deployment(5, 5, 1, ok_conditions())).unwrap();
        assert!(fewer.worse_than(&h));
        assert_eq!(
            fewer.unhealthy().as_deref(),
            Some("1 of 3 replicas ready, 1 available")
        );
        assert!(Health::of(&json!({"kind": "ConfigMap"})).is_none());
    }

    #[test]
    fn daemonset_and_statefulset_counters() {
        let ds = json!({"kind": "DaemonSet", "metadata": {"generation": 2},
            "status": {"observedGeneration": 2, "desiredNumberScheduled": 1, "updatedNumberScheduled": 1,
                "numberReady": 0, "numberAvailable": 0, "numberUnavailable": 1}});
        let h = Health::of(&ds).unwrap();
        assert!(!h.complete());
        assert_eq!(h.unavailable, 1);
        let sts = json!({"kind": "StatefulSet", "metadata": {"generation": 2},
            "spec": {"replicas": 2},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
        assert!(Health::of(&sts).unwrap().complete());
    }

    #[test]
    fn rollback_body_sets_back_exactly_the_corrected_fields() {
        // Live has the sidecar first; the applied object names only `web`.
        let live = deployment(4, 4, 3, ok_conditions());
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 3, "paused": true, "template": {"spec": {"containers": [{"name": "web", "image": "web:2"}]}}}});
        let gate = Gate {
            resource: ApiResource {
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                plural: "deployments".into(),
                namespaced: true,
                verbs: vec![],
            },
            namespace: Some("shop".into()),
            name: "web".into(),
            applied,
            fields: vec![
                Field {
                    path: "/spec/template/spec/containers/1/image".into(),
                    before: Some(json!("web:1")),
                },
                Field {
                    path: "/spec/paused".into(),
                    before: None,
                },
            ],
            before: Health::of(&live).unwrap(),
            live_before: live,
            timeout: Duration::from_secs(1),
            interval: Duration::from_millis(10),
            display: "Deployment shop/web".into(),
        };
        let body = gate.rollback_body().unwrap();
        assert_eq!(
            body,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "web:1"}]}}}})
        );
    }
}
