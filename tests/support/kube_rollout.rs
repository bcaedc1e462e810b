//! An opt-in simulation of kube-controller-manager's workload status for the Kubernetes test API
//! server (a child module of kube_server.rs): after a write that raises the `generation` of a
//! Deployment, StatefulSet or DaemonSet (a create, a pod template or replicas change), the
//! status is written the way the real controllers write it (fixtures/golden/rollout, see its
//! README), through the `status` subresource as `kube-controller-manager`:
//!
//! 1. `delay` after the write, the new generation is observed and the rollout is under way
//!    (Deployment: `observedGeneration`, `replicas`/`updatedReplicas`/`unavailableReplicas`,
//!    `Available=False MinimumReplicasUnavailable`, `Progressing=True ReplicaSetUpdated`, the
//!    `deployment.kubernetes.io/revision` annotation; a3-get-progressing-200);
//! 2. another `delay` later, the outcome:
//!    - [`Outcome::Healthy`]: every replica ready and available (`Available=True
//!      MinimumReplicasAvailable`, `Progressing=True NewReplicaSetAvailable`; zero counters
//!      omitted, as c2-get-replicas0-complete-200);
//!    - [`Outcome::Failing`]: no replica ever ready. A Deployment whose pod template changed (or
//!      that was created) gets `Progressing=False ProgressDeadlineExceeded`
//!      (a6-get-deadline-exceeded-200); one that was only scaled keeps its `Progressing`
//!      condition and shows `Available=False` with unavailable replicas (c5-get-scaled-200: the
//!      real deadline never fires after a scale). A StatefulSet stays at one created, unready
//!      replica (d2-statefulset-get-200), a DaemonSet on its one node unavailable; neither has
//!      conditions;
//! 3. [`Outcome::Unobserved`]: nothing is written; `observedGeneration` stays behind.
//!
//! `KubeServer::start_rollout` starts those steps for a workload's current generation when a
//! test says so (a workload left unobserved until then). A later change of the object abandons
//! the steps not yet written. Without a rule (the
//! default), status is never written, as on a server without controllers.

use super::*;

/// How a simulated rollout ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Healthy,
    Failing,
    Unobserved,
}

/// What the simulated controllers do after a workload's generation rises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollout {
    pub outcome: Outcome,
    /// The wait before each status write.
    pub delay: Duration,
}

impl Rollout {
    pub fn healthy() -> Rollout {
        Rollout {
            outcome: Outcome::Healthy,
            delay: Duration::from_millis(20),
        }
    }

    pub fn failing() -> Rollout {
        Rollout {
            outcome: Outcome::Failing,
            delay: Duration::from_millis(20),
        }
    }

    pub fn unobserved() -> Rollout {
        Rollout {
            outcome: Outcome::Unobserved,
            delay: Duration::from_millis(20),
        }
    }

    pub fn with_delay(self, delay: Duration) -> Rollout {
        Rollout { delay, ..self }
    }
}

/// A rule: which workloads (kind, and optionally namespace and name) roll out how.
pub(super) struct RolloutRule {
    kind: String,
    namespace: Option<String>,
    name: Option<String>,
    rollout: Rollout,
}

const WORKLOADS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

/// The controllers' manager name (fixtures/golden/rollout: every entry).
const MANAGER: &str = "kube-controller-manager";

impl State {
    pub(super) fn add_rollout_rule(
        &mut self,
        kind: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        rollout: Rollout,
    ) {
        // The most specific rule wins: later rules are looked at first.
        self.rollout_rules.push(RolloutRule {
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            rollout,
        });
    }

    fn rollout_for(&self, kind: &str, ns: &str, name: &str) -> Option<Rollout> {
        let matches = |r: &&RolloutRule| {
            (r.kind == kind || r.kind.is_empty())
                && r.namespace.as_deref().is_none_or(|n| n == ns)
                && r.name.as_deref().is_none_or(|n| n == name)
        };
        let specific = self
            .rollout_rules
            .iter()
            .rev()
            .filter(matches)
            .max_by_key(|r| (r.name.is_some(), r.namespace.is_some(), !r.kind.is_empty()));
        specific.map(|r| r.rollout)
    }

    /// Called after every stored write: schedules the simulated status writes of a workload
    /// whose generation rose (on the current Tokio runtime; nothing outside one).
    pub(super) fn after_write(&mut self, rt: &ResourceType, old: Option<&Value>, new: &Value) {
        if rt.group != "apps" || !WORKLOADS.contains(&rt.kind.as_str()) {
            return;
        }
        let generation = |v: &Value| v["metadata"]["generation"].as_i64().unwrap_or(0);
        let g = generation(new);
        if old.is_some_and(|o| generation(o) >= g)
            || new["metadata"].get("deletionTimestamp").is_some()
        {
            return;
        }
        let ns = new["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();
        let Some(rollout) = self.rollout_for(&rt.kind, &ns, &name) else {
            return;
        };
        if rollout.outcome == Outcome::Unobserved {
            return;
        }
        let template_changed = old.is_none_or(|o| o["spec"]["template"] != new["spec"]["template"]);
        // A Deployment's revision rises with each new pod template.
        let revision = new["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let change = Change {
            template_changed,
            revision: if template_changed || revision == 0 {
                revision + 1
            } else {
                revision
            },
        };
        self.schedule(rt, new, change, rollout);
    }

    /// Starts the simulated rollout of a workload's current generation now, as if it had just
    /// risen with a new pod template (for a workload whose rule left it unobserved).
    pub(super) fn start_rollout(&mut self, rt: &ResourceType, current: &Value, rollout: Rollout) {
        let revision = current["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let change = Change {
            template_changed: true,
            revision: revision + 1,
        };
        self.schedule(rt, current, change, rollout);
    }

    /// Writes the rollout's status steps, each `rollout.delay` after the last, while the
    /// workload stays at the generation of `new`.
    fn schedule(&mut self, rt: &ResourceType, new: &Value, change: Change, rollout: Rollout) {
        let generation = |v: &Value| v["metadata"]["generation"].as_i64().unwrap_or(0);
        let g = generation(new);
        let ns = new["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();
        let Some(shared) = self.me.upgrade() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rt = rt.clone();
        runtime.spawn(async move {
            for step in [Step::Observed, Step::Settled(rollout.outcome)] {
                tokio::time::sleep(rollout.delay).await;
                let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
                let Some(current) = st.get_stored(&rt, Some(&ns), &name).cloned() else {
                    return;
                };
                if generation(&current) != g {
                    return;
                }
                st.write_status(&rt, &current, step, change);
            }
        });
    }

    /// Writes a workload's status as kube-controller-manager does (an Update of the `status`
    /// subresource: generation unchanged, its managedFields entry extended).
    fn write_status(&mut self, rt: &ResourceType, current: &Value, step: Step, change: Change) {
        let ns = current["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = current["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let old_status = current.get("status").cloned().unwrap_or_else(|| json!({}));
        let (status, annotations) = match rt.kind.as_str() {
            "Deployment" => deployment_status(current, &old_status, step, change),
            "StatefulSet" => (statefulset_status(current, step), None),
            _ => (daemonset_status(current, step), None),
        };
        // A merge patch: what the new status drops is removed.
        let mut patch_status = status.clone();
        if let (Some(old), Some(new)) = (old_status.as_object(), patch_status.as_object_mut()) {
            for k in old.keys() {
                if !new.contains_key(k) {
                    new.insert(k.clone(), Value::Null);
                }
            }
        }
        let mut patch = json!({"status": patch_status});
        if let Some(a) = annotations {
            patch["metadata"] = json!({"annotations": a});
        }
        let gv = join_gv(&rt.group, &rt.version);
        let target = Target {
            rt,
            gv: &gv,
            ns: Some(&ns),
            name: &name,
        };
        let how = UpdateOptions {
            patch: UpdatePatch::Merge,
            manager: MANAGER,
            subresource: Some("status"),
            dry_run: false,
            validation: FieldValidation::Ignore,
        };
        // A status the kind's own validation refuses would be a defect of this simulation.
        if let Err(status) = self.patch_update(&target, &patch, &how, &mut Vec::new()) {
            panic!("simulated {} status refused: {status}", rt.kind);
        }
    }
}

/// What the write that started a rollout changed.
#[derive(Debug, Clone, Copy)]
struct Change {
    template_changed: bool,
    /// The Deployment revision it makes.
    revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Observed,
    Settled(Outcome),
}

/// The pod-template-hash of a template: the real one is an FNV-32a hash of the Go struct's
/// printed form, safe-encoded; here an FNV-32a hash of its JSON, encoded with the same alphabet.
fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut out = String::new();
    let mut n = h;
    while n > 0 {
        out.push(ALPHABET[(n % ALPHABET.len() as u32) as usize] as char);
        n /= ALPHABET.len() as u32;
    }
    out
}

/// A condition, its times kept when its status and reason are unchanged (the real controller
/// changes neither then).
fn condition(previous: &Value, kind: &str, status: &str, reason: &str, message: &str) -> Value {
    let old = previous["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind));
    let now = now();
    let (update, transition) = match old {
        Some(c) if c["status"] == status && c["reason"] == reason => {
            (c["lastUpdateTime"].clone(), c["lastTransitionTime"].clone())
        }
        Some(c) if c["status"] == status => (json!(now), c["lastTransitionTime"].clone()),
        _ => (json!(now), json!(now)),
    };
    json!({"type": kind, "status": status, "lastUpdateTime": update,
        "lastTransitionTime": transition, "reason": reason, "message": message})
}

fn replicas(obj: &Value) -> i64 {
    obj["spec"]["replicas"].as_i64().unwrap_or(1)
}

/// Counters in the real order, zero ones omitted (they are `omitempty`).
fn counters(pairs: &[(&str, i64)]) -> Map<String, Value> {
    pairs
        .iter()
        .filter(|(_, v)| *v != 0)
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn deployment_status(
    obj: &Value,
    previous: &Value,
    step: Step,
    change: Change,
) -> (Value, Option<Value>) {
    let Change {
        template_changed,
        revision,
    } = change;
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let r = replicas(obj);
    let rs = format!("{name}-{}", template_hash(&obj["spec"]["template"]));
    // Zero replicas: the rollout completes whatever the Pods would do (c2).
    let step = match step {
        Step::Settled(_) if r == 0 => Step::Settled(Outcome::Healthy),
        step => step,
    };
    let ready = step == Step::Settled(Outcome::Healthy);
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(g));
    let (available, unavailable) = if ready { (r, 0) } else { (0, r) };
    status.extend(counters(&[
        ("replicas", r),
        ("updatedReplicas", r),
        ("readyReplicas", available),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ]));
    let available_condition = if ready || r == 0 {
        condition(
            previous,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        condition(
            previous,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let previous_progressing = previous["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
        .cloned();
    let progressing = match step {
        Step::Settled(Outcome::Healthy) => Some(condition(
            previous,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs}\" has successfully progressed."),
        )),
        Step::Settled(_) if !template_changed && previous_progressing.is_some() => {
            // A scale alone: the deadline never fires; Progressing stays as it was.
            previous_progressing
        }
        Step::Settled(_) => Some(condition(
            previous,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!("ReplicaSet \"{rs}\" has timed out progressing."),
        )),
        Step::Observed if r == 0 => Some(condition(
            previous,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            &format!("ReplicaSet \"{rs}\" has successfully progressed."),
        )),
        Step::Observed if !template_changed && previous_progressing.is_some() => {
            previous_progressing
        }
        Step::Observed => Some(condition(
            previous,
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &format!("ReplicaSet \"{rs}\" is progressing."),
        )),
    };
    let mut conditions = vec![available_condition];
    conditions.extend(progressing);
    status.insert("conditions".into(), Value::Array(conditions));
    let annotations = json!({"deployment.kubernetes.io/revision": revision.to_string()});
    (Value::Object(status), Some(annotations))
}

fn statefulset_status(obj: &Value, step: Step) -> Value {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let r = replicas(obj);
    let revision = format!("{name}-{}", template_hash(&obj["spec"]["template"]));
    let ready = step == Step::Settled(Outcome::Healthy);
    // OrderedReady: the next Pod is created only once the previous one is Ready.
    let created = if ready { r } else { r.min(1) };
    let ready_count = if ready { r } else { 0 };
    let mut status = Map::new();
    status.insert("observedGeneration".into(), json!(g));
    status.insert("replicas".into(), json!(created));
    status.extend(counters(&[("readyReplicas", ready_count)]));
    status.extend(counters(&[
        ("currentReplicas", created),
        ("updatedReplicas", created),
    ]));
    status.insert("currentRevision".into(), json!(revision));
    status.insert("updateRevision".into(), json!(revision));
    status.insert("collisionCount".into(), json!(0));
    status.insert("availableReplicas".into(), json!(ready_count));
    Value::Object(status)
}

/// A DaemonSet on one node.
fn daemonset_status(obj: &Value, step: Step) -> Value {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let ready = step == Step::Settled(Outcome::Healthy);
    let r = i64::from(ready);
    let mut status = Map::new();
    status.insert("currentNumberScheduled".into(), json!(1));
    status.insert("numberMisscheduled".into(), json!(0));
    status.insert("desiredNumberScheduled".into(), json!(1));
    status.insert("numberReady".into(), json!(r));
    status.insert("observedGeneration".into(), json!(g));
    status.extend(counters(&[
        ("updatedNumberScheduled", 1),
        ("numberAvailable", r),
        ("numberUnavailable", 1 - r),
    ]));
    Value::Object(status)
}
