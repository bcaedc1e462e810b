//! One target under `watch`.
//!
//! A Kubernetes target keeps, per list scope, the objects its watch stream reported (without
//! `status`, as compact JSON: what the diff needs) and the desired set. An event marks its
//! object due after the debounce; due objects are diffed, classified, decided and acted on by
//! themselves (the stages of [`crate::run`], over those objects only). A full LIST-based cycle
//! runs first, every `resync_interval`, and after the desired state changes (a new commit found
//! by the Git poll, or a webhook trigger). Other targets (Terraform/EC2, snapshots) run a full
//! cycle every `ec2_poll_interval` (`resync_interval` for snapshots).
//!
//! Safety: every write is preceded by a leadership check; a scope whose stream is failing or
//! not yet listed counts as unread (its desired objects are not Missing, nothing is pruned);
//! corrections count against the rolling window ([`super::window`]).
//!
//! Health gates (src/act/health.rs) are followed in the background: a pass that corrects a
//! Deployment, StatefulSet or DaemonSet reports the correction `done` and hands its gate over
//! ([`act::health::Handoff`]); the gate follows the rollout on a task of its own while the
//! target's other events go on being handled. While a gate follows a workload, no second
//! correction of that workload starts: a pass (event or full cycle) that finds it drifted again
//! skips the correction with the reason and looks at the object again once the gate concludes
//! (other actions, such as a pull request for risky drift, go ahead). When the gate concludes,
//! the correction is settled on this loop as `reconcile` settles it ([`act::conclude_gate`]):
//! kept, or rolled back, recorded in the audit log, escalated to a pull request, and notified.
//! A drift whose correction was rolled back is not corrected again while it stays the same
//! (same fields, same values): it is escalated instead, so a correction known to break the
//! workload is not re-applied at every event. At shutdown, gates get up to
//! [`super::WatchOptions::shutdown_budget`] to conclude; one that does not is recorded in the
//! audit log (the correction's result, `health gate not concluded`), and a process that dies
//! first leaves the correction's intent without a result, which the next run reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use super::stream::{self, Msg, Tagged};
use super::window::Window;
use super::{Leadership, Status, WatchOptions};
use crate::act::{self, guardrails, health};
use crate::compare::Compare;
use crate::config::{Config, DesiredLocation, LiveSource, Target};
use crate::desired::{self, DesiredSet, RawObject};
use crate::errors::error_chain;
use crate::k8s::{self, Scopes};
use crate::live::kube::{self as live_kube, Kube, ListScope, UnreadScope};
use crate::model::{Action, ActionResult, Drift, Mode, Report, SourceError};
use crate::policy::{self, PolicyEngine};
use crate::run::{self, Command};

/// What every target's loop shares.
pub struct Shared<'a> {
    pub cfg: &'a Config,
    pub opts: &'a WatchOptions,
    pub engine: Option<&'a PolicyEngine>,
    pub prs: &'a act::pull_request::Session,
    /// The audit log every action of the process is recorded in.
    pub audit: &'a crate::audit::AuditLog,
    pub status: &'a Status,
    pub leadership: &'a Leadership,
    /// The `notify:` receivers, when configured.
    pub notices: Option<&'a super::notices::Notices>,
}

impl Shared<'_> {
    fn mode(&self, t: &Target) -> Mode {
        self.opts.mode.unwrap_or(t.mode)
    }
}

/// An object the store keeps: its resourceVersion and its JSON (no `status`).
#[derive(Debug, Clone)]
struct Stored {
    rv: String,
    json: Box<[u8]>,
}

impl Stored {
    fn new(v: &Value) -> Stored {
        Stored {
            rv: k8s::str_at(v, "/metadata/resourceVersion").to_string(),
            json: serde_json::to_vec(v).unwrap_or_default().into_boxed_slice(),
        }
    }

    fn value(&self) -> Option<Value> {
        serde_json::from_slice(&self.json).ok()
    }

    /// Orders two copies of one object (from two scopes) by resourceVersion, which the API
    /// server hands out increasing (opaque to clients, but numeric in every release).
    fn newer_than(&self, other: &Stored) -> bool {
        match (self.rv.parse::<u64>(), other.rv.parse::<u64>()) {
            (Ok(a), Ok(b)) => a > b,
            _ => self.rv > other.rv,
        }
    }
}

/// One watched scope.
struct ScopeState {
    scope: ListScope,
    objects: HashMap<String, Stored>,
    /// A relist in progress: the objects seen so far.
    relisting: Option<HashMap<String, Stored>>,
    /// The first list finished.
    synced: bool,
    /// The stream failed and has not delivered since.
    failing: Option<String>,
}

impl ScopeState {
    fn healthy(&self) -> bool {
        self.synced && self.failing.is_none() && self.relisting.is_none()
    }
}

/// Objects waiting for their debounce.
#[derive(Debug, Default)]
struct Pending {
    /// Key → (first event, due).
    due: HashMap<String, (Instant, Instant)>,
}

impl Pending {
    fn mark(&mut self, key: String, at: Instant, debounce: Duration) {
        let now = Instant::now();
        let entry = self.due.entry(key).or_insert((at, now + debounce));
        // Trailing debounce, bounded: a stream of events on one object is handled at the
        // latest four debounces after the first.
        entry.1 = (now + debounce).min(entry.0 + debounce * 4).max(entry.1);
    }

    fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, d)| *d).min()
    }

    fn take_due(&mut self, now: Instant) -> Vec<(String, Instant)> {
        let keys: Vec<String> = self
            .due
            .iter()
            .filter(|(_, (_, d))| *d <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.due.remove(&k).map(|(first, _)| (k, first)))
            .collect()
    }
}

/// A Kubernetes target's loop state.
struct KubeTarget<'a> {
    sh: &'a Shared<'a>,
    t: &'a Target,
    kube: Kube,
    desired: Option<DesiredSet>,
    /// Desired objects by resource key (index into `desired.objects`).
    desired_index: HashMap<String, usize>,
    scopes_known: Scopes,
    generation: u64,
    scopes: Vec<ScopeState>,
    streams: Vec<JoinHandle<()>>,
    tx: mpsc::Sender<Tagged>,
    pending: Pending,
    window: Window,
    /// Resources compared by the last full cycle: the base of the blast radius.
    checked: usize,
    /// The target's current drifts by fingerprint, and the errors of its last cycle.
    drifts: BTreeMap<String, Drift>,
    errors: Vec<SourceError>,
    ignored: BTreeMap<String, usize>,
    /// Why the desired state could not be read (kept until it can).
    desired_error: Option<String>,
    /// The last state of objects deleted live, until their pass.
    tombstones: HashMap<String, Value>,
    /// The health gates following a rollout, each on its own task: the resource key and how
    /// the gate judged the rollout.
    gates: tokio::task::JoinSet<(String, health::Gate, health::Judgement)>,
    /// The resource key each gate's task follows (to name a task that failed).
    gate_tasks: HashMap<tokio::task::Id, String>,
    /// The corrections those gates follow, by resource key.
    following: HashMap<String, Following>,
    /// Objects whose correction waited for their gate: looked at again once it concludes.
    held: HashSet<String>,
    /// Drifts whose correction the health gate rolled back, by fingerprint: the changes as
    /// they were ([`changes_signature`]).
    rolled_back: HashMap<String, String>,
}

/// A correction whose health gate follows its rollout.
struct Following {
    /// The drift as the correction left it.
    drift: Drift,
    /// The correction's audit intent (its result is written when the gate concludes).
    intent: String,
}

/// Runs one target until `shutdown`.
pub async fn run(
    sh: &Shared<'_>,
    t: &Target,
    kube: Option<Kube>,
    triggers: mpsc::Receiver<()>,
    shutdown: watch::Receiver<bool>,
) {
    match (kube, &t.live) {
        (Some(kube), LiveSource::Kubernetes(_)) => {
            run_kube(sh, t, kube, triggers, shutdown).await;
        }
        _ => run_polled(sh, t, triggers, shutdown).await,
    }
}

/// A target without watches: a full cycle at start, every poll interval and on a trigger.
async fn run_polled(
    sh: &Shared<'_>,
    t: &Target,
    mut triggers: mpsc::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = if t.terraform.is_some() {
        sh.cfg.watch.ec2_poll_interval
    } else {
        sh.cfg.watch.resync_interval
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => return,
            _ = tick.tick() => {}
            Some(()) = triggers.recv() => {}
        }
        polled_cycle(sh, t).await;
    }
}

/// One full cycle of a target through `reconcile`'s pipeline; a replica that does not lead
/// only diffs and decides.
async fn polled_cycle(sh: &Shared<'_>, t: &Target) {
    sh.prs.begin_cycle();
    let leading = sh.leadership.is_leader_now();
    let mut ro = run::RunOptions::new(if leading {
        Command::Reconcile
    } else {
        Command::Diff
    });
    ro.targets = vec![t.name.clone()];
    ro.cache_dir = sh.opts.cache_dir.clone();
    ro.mode = sh.opts.mode;
    sh.status.record_reconcile(&t.name, "target");
    match run::run(sh.cfg, &ro).await {
        Ok(report) => {
            sh.status.update_target(&t.name, |s| {
                s.first_sync = true;
                s.degraded = (!report.errors.is_empty()).then(|| joined(&report.errors));
            });
            log_actions(&t.name, &report.drifts);
            sh.status.set_report(&t.name, report);
        }
        Err(e) => {
            warn!(target = %t.name, error = %error_chain(&e), "watch: cycle failed");
            sh.status
                .update_target(&t.name, |s| s.degraded = Some(error_chain(&e)));
        }
    }
}

fn joined(errors: &[SourceError]) -> String {
    errors
        .iter()
        .map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The loop of a Kubernetes target.
async fn run_kube(
    sh: &Shared<'_>,
    t: &Target,
    kube: Kube,
    mut triggers: mpsc::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (tx, mut rx) = mpsc::channel::<Tagged>(4096);
    let g = &t.guardrails;
    let window = Window::new(
        sh.cfg.watch.window,
        sh.cfg
            .watch
            .max_corrections_per_window
            .unwrap_or_else(|| guardrails::correction_limit(g, 0)),
    );
    let mut kt = KubeTarget {
        sh,
        t,
        kube,
        desired: None,
        desired_index: HashMap::new(),
        scopes_known: Scopes::default(),
        generation: 0,
        scopes: Vec::new(),
        streams: Vec::new(),
        tx,
        pending: Pending::default(),
        window,
        checked: 0,
        drifts: BTreeMap::new(),
        errors: Vec::new(),
        ignored: BTreeMap::new(),
        desired_error: None,
        tombstones: HashMap::new(),
        gates: tokio::task::JoinSet::new(),
        gate_tasks: HashMap::new(),
        following: HashMap::new(),
        held: HashSet::new(),
        rolled_back: HashMap::new(),
    };
    tracing::debug!(target = %t.name, "watch: reading the desired state");
    kt.reload_desired().await;
    tracing::debug!(target = %t.name, "watch: first full cycle");
    kt.full_cycle().await;
    tracing::debug!(target = %t.name, "watch: first full cycle done");
    let mut resync = tokio::time::interval_at(
        Instant::now() + sh.cfg.watch.resync_interval,
        sh.cfg.watch.resync_interval,
    );
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let git = matches!(t.desired.location, DesiredLocation::Git(_));
    let mut git_poll = tokio::time::interval_at(
        Instant::now() + sh.cfg.watch.git_poll_interval,
        sh.cfg.watch.git_poll_interval,
    );
    git_poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next_due = kt.pending.next_due();
        tokio::select! {
            biased;
            _ = super::stopped(&mut shutdown) => break,
            Some(m) = rx.recv() => kt.on_message(m),
            _ = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {
                kt.run_due().await;
            }
            Some(()) = triggers.recv() => {
                if kt.reload_desired().await {
                    kt.full_cycle().await;
                }
            }
            _ = git_poll.tick(), if git => {
                if kt.desired_changed().await && kt.reload_desired().await {
                    kt.full_cycle().await;
                }
            }
            _ = resync.tick() => kt.full_cycle().await,
            Some(joined) = kt.gates.join_next_with_id(), if !kt.gates.is_empty() => {
                kt.gate_ended(joined).await;
            }
        }
        sh.status.set_queue_depth(&t.name, kt.pending.due.len());
    }
    for h in kt.streams.drain(..) {
        h.abort();
    }
    kt.finish_gates(sh.opts.shutdown_budget).await;
}

impl KubeTarget<'_> {
    fn name(&self) -> &str {
        &self.t.name
    }

    /// Whether the desired ref moved since the loaded commit (Git sources).
    async fn desired_changed(&self) -> bool {
        let DesiredLocation::Git(g) = &self.t.desired.location else {
            return false;
        };
        let g = g.clone();
        let cache = self.sh.opts.cache_dir.clone();
        let now =
            tokio::task::spawn_blocking(move || desired::git::current_commit(&g, &cache)).await;
        match now {
            Ok(Ok(commit)) => {
                let before = self.desired.as_ref().and_then(|d| d.commit.as_deref());
                if before != Some(commit.as_str()) {
                    info!(target = %self.name(), commit = %commit, "watch: a new commit on the desired ref");
                    return true;
                }
                // A desired state that failed to load is retried at every poll.
                self.desired.is_none()
            }
            Ok(Err(e)) => {
                warn!(target = %self.name(), error = %error_chain(&e), "watch: the desired ref could not be read");
                false
            }
            Err(e) => {
                warn!(target = %self.name(), error = %e, "watch: the Git poll task failed");
                false
            }
        }
    }

    /// Reads the desired state; when it (or the scopes it names) changed, restarts the watch
    /// streams. Returns whether a desired state is loaded.
    async fn reload_desired(&mut self) -> bool {
        let src = self.t.desired.clone();
        let cache = self.sh.opts.cache_dir.clone();
        let loaded = tokio::task::spawn_blocking(move || desired::load(&src, &cache)).await;
        let set = match loaded {
            Ok(Ok(set)) => set,
            Ok(Err(e)) => {
                let msg = format!("desired state could not be read: {}", error_chain(&e));
                warn!(target = %self.name(), error = %msg, "watch: keeping the last desired state");
                self.desired_error = Some(msg.clone());
                self.sh
                    .status
                    .update_target(&self.t.name, |s| s.degraded = Some(msg));
                return self.desired.is_some();
            }
            Err(e) => {
                warn!(target = %self.name(), error = %e, "watch: the desired read task failed");
                return self.desired.is_some();
            }
        };
        self.desired_error = None;
        let mut scopes_known = Scopes::default();
        scopes_known.learn(set.objects.iter().map(|o| &o.value), false);
        let mut index = HashMap::new();
        for (i, o) in set.objects.iter().enumerate() {
            let id = k8s::resource_id(&self.t.cluster, &o.value, &self.t.namespace, &scopes_known);
            index.insert(id.key(), i);
        }
        let values: Vec<Value> = set.objects.iter().map(|o| o.value.clone()).collect();
        let req = live_kube::ReadRequest {
            desired: &values,
            default_namespace: &self.t.namespace,
            tracking: self.t.tracking.as_ref(),
            unmanaged_namespaces: &self.t.unmanaged_namespaces,
        };
        let planned = match live_kube::plan_scopes(&self.kube, &req).await {
            Ok(p) => p,
            Err(e) => {
                // The cluster is away: keep what is watched, retry at the next cycle.
                let msg = format!("discovery failed: {}", live_kube::error_chain(&e));
                warn!(target = %self.name(), error = %msg, "watch: keeping the current watches");
                self.sh
                    .status
                    .update_target(&self.t.name, |s| s.degraded = Some(msg));
                self.desired = Some(set);
                self.desired_index = index;
                self.scopes_known = scopes_known;
                return true;
            }
        };
        let same = planned.scopes.len() == self.scopes.len()
            && planned
                .scopes
                .iter()
                .zip(&self.scopes)
                .all(|(a, b)| a == &b.scope);
        self.desired = Some(set);
        self.desired_index = index;
        self.scopes_known = scopes_known;
        if !same {
            self.restart_streams(planned.scopes);
        }
        true
    }

    /// Replaces every watch stream by one per scope of the new plan.
    fn restart_streams(&mut self, scopes: Vec<ListScope>) {
        for h in self.streams.drain(..) {
            h.abort();
        }
        self.generation += 1;
        let client = self.kube.watch_client();
        let listing = match &self.t.live {
            LiveSource::Kubernetes(k) => stream::Listing::new(k.concurrency, k.page_size),
            _ => {
                let d = crate::config::KubeSource::default();
                stream::Listing::new(d.concurrency, d.page_size)
            }
        };
        self.scopes = scopes
            .into_iter()
            .map(|scope| ScopeState {
                scope,
                objects: HashMap::new(),
                relisting: None,
                synced: false,
                failing: None,
            })
            .collect();
        for (i, s) in self.scopes.iter().enumerate() {
            self.streams.push(tokio::spawn(stream::run(
                client.clone(),
                s.scope.clone(),
                self.generation,
                i,
                self.tx.clone(),
                listing.clone(),
            )));
        }
        info!(target = %self.name(), streams = self.streams.len(), "watch: streams started");
        self.sh.status.update_target(&self.t.name, |st| {
            st.watches = self.scopes.len();
            st.watches_synced = 0;
        });
    }

    /// The resource key of a live object.
    fn key_of(&mut self, v: &Value) -> String {
        self.scopes_known.learn(std::iter::once(v), true);
        k8s::resource_id(&self.t.cluster, v, &self.t.namespace, &self.scopes_known).key()
    }

    fn on_message(&mut self, m: Tagged) {
        if m.generation != self.generation || m.scope >= self.scopes.len() {
            return;
        }
        let debounce = self.sh.cfg.watch.debounce;
        let kind = self.scopes[m.scope].scope.resource.kind.clone();
        match m.msg {
            Msg::Init => {
                self.sh.status.record_event(&kind, "RELIST");
                self.scopes[m.scope].relisting = Some(HashMap::new());
            }
            Msg::InitApply(v) => {
                let key = self.key_of(&v);
                if let Some(buf) = &mut self.scopes[m.scope].relisting {
                    buf.insert(key, Stored::new(&v));
                }
            }
            Msg::InitDone => {
                let now = Instant::now();
                let s = &mut self.scopes[m.scope];
                let fresh = s.relisting.take().unwrap_or_default();
                // What changed while the stream was away: every object whose version moved,
                // appeared or vanished is handled as if an event had shown it.
                let mut changed: Vec<String> = Vec::new();
                if s.synced {
                    for (k, new) in &fresh {
                        if s.objects.get(k).is_none_or(|old| old.rv != new.rv) {
                            changed.push(k.clone());
                        }
                    }
                    for k in s.objects.keys() {
                        if !fresh.contains_key(k) {
                            changed.push(k.clone());
                        }
                    }
                }
                tracing::debug!(target = %self.t.name, scope = %stream::describe(&s.scope), objects = fresh.len(), changed = changed.len(), "watch: listed");
                s.objects = fresh;
                s.synced = true;
                s.failing = None;
                for k in changed {
                    self.pending.mark(k, now, debounce);
                }
                self.update_scope_health();
            }
            Msg::Apply(v, at) => {
                self.sh.status.record_event(&kind, "APPLY");
                let key = self.key_of(&v);
                let s = &mut self.scopes[m.scope];
                s.failing = None;
                s.objects.insert(key.clone(), Stored::new(&v));
                self.pending.mark(key, at, debounce);
                self.update_scope_health();
            }
            Msg::Delete(v, at) => {
                self.sh.status.record_event(&kind, "DELETE");
                let key = self.key_of(&v);
                let s = &mut self.scopes[m.scope];
                s.failing = None;
                s.objects.remove(&key);
                self.tombstones.insert(key.clone(), v);
                self.pending.mark(key, at, debounce);
                self.update_scope_health();
            }
            Msg::Failed { message, relist } => {
                self.sh.status.record_event(&kind, "ERROR");
                self.sh.status.record_watch_restart(&self.t.name, &kind);
                if relist {
                    // The relist that follows reports what changed; until then the scope is
                    // unread.
                    self.scopes[m.scope].relisting = None;
                }
                self.scopes[m.scope].failing = Some(message);
                self.update_scope_health();
            }
            Msg::Resumed => {
                self.scopes[m.scope].failing = None;
                self.update_scope_health();
            }
        }
    }

    /// Reports the streams' health in the status.
    fn update_scope_health(&self) {
        let synced = self.scopes.iter().filter(|s| s.healthy()).count();
        let failing: Vec<String> = self
            .scopes
            .iter()
            .filter_map(|s| s.failing.clone())
            .collect();
        let desired_error = self.desired_error.clone();
        let cycle_errors = (!self.errors.is_empty()).then(|| joined(&self.errors));
        self.sh.status.update_target(&self.t.name, |st| {
            st.watches_synced = synced;
            st.degraded = desired_error
                .or_else(|| (!failing.is_empty()).then(|| failing.join("; ")))
                .or(cycle_errors);
        });
    }

    /// The scopes whose desired objects cannot be judged Missing right now.
    fn unread(&self) -> Vec<UnreadScope> {
        self.scopes
            .iter()
            .filter(|s| !s.healthy() && s.scope.authoritative)
            .map(|s| UnreadScope {
                group: s.scope.resource.group.clone(),
                kind: Some(s.scope.resource.kind.clone()),
                namespace: s.scope.namespace.clone(),
            })
            .collect()
    }

    /// The freshest copy of an object across the scopes that hold it.
    fn live_object(&self, key: &str) -> Option<Value> {
        let mut best: Option<&Stored> = None;
        for s in &self.scopes {
            if let Some(o) = s.objects.get(key) {
                if best.is_none_or(|b| o.newer_than(b)) {
                    best = Some(o);
                }
            }
        }
        best.and_then(Stored::value)
    }

    /// Autoscalers among the watched objects, for the policies' related facts.
    fn related(&self, desired: &DesiredSet) -> policy::Related {
        let mut r = policy::Related::from_objects(desired.objects.iter().map(|o| &o.value));
        for s in &self.scopes {
            let k = s.scope.resource.kind.as_str();
            if k == "HorizontalPodAutoscaler" || k == "ScaledObject" {
                for o in s.objects.values().filter_map(Stored::value) {
                    r.add_object(&o);
                }
            }
        }
        r
    }

    /// Handles every object whose debounce has passed, by itself.
    async fn run_due(&mut self) {
        let due = self.pending.take_due(Instant::now());
        if due.is_empty() {
            return;
        }
        let Some(desired) = &self.desired else {
            return;
        };
        let keys: HashSet<&str> = due.iter().map(|(k, _)| k.as_str()).collect();
        let first_event: HashMap<&str, Instant> =
            due.iter().map(|(k, at)| (k.as_str(), *at)).collect();
        let subset = DesiredSet {
            objects: due
                .iter()
                .filter_map(|(k, _)| self.desired_index.get(k))
                .filter_map(|i| desired.objects.get(*i).cloned())
                .collect(),
            source: desired.source.clone(),
            commit: desired.commit.clone(),
        };
        let live: Vec<RawObject> = due
            .iter()
            .filter_map(|(k, _)| self.live_object(k))
            .map(|value| RawObject {
                value,
                file: "watch".into(),
                line: 0,
            })
            .collect();
        // The fingerprints this pass covers: its pull requests and issues only.
        let mut scopes = self.scopes_known.clone();
        scopes.learn(live.iter().map(|o| &o.value), true);
        let only: HashSet<String> = subset
            .objects
            .iter()
            .chain(live.iter())
            .map(|o| &o.value)
            // An object deleted live and absent from Git still closes its item (an Unmanaged
            // object's pull request): its last state names it.
            .chain(due.iter().filter_map(|(k, _)| self.tombstones.get(k)))
            .map(|v| {
                let id = k8s::resource_id(&self.t.cluster, v, &self.t.namespace, &scopes);
                crate::model::fingerprint(&self.t.name, &id)
            })
            .collect();
        for (k, _) in &due {
            self.tombstones.remove(k);
        }
        let unread = self.unread();
        let partial = !unread.is_empty()
            || self.scopes.iter().any(|s| !s.healthy())
            || self.desired_error.is_some();
        let related = self.related(desired);
        let mut compared = match run::diff_stage(self.t, &subset, &live, &unread, self.strict()) {
            Ok(c) => c,
            Err(e) => {
                warn!(target = %self.name(), error = %error_chain(&e), "watch: object diff failed");
                return;
            }
        };
        info!(
            target = %self.name(),
            objects = keys.len(),
            drifted = compared.drifts.len(),
            "watch: objects compared after events"
        );
        self.sh.status.record_reconcile(&self.t.name, "object");
        let desired_raw = run::desired_objects(self.t, &subset, &live);
        let outcome = self
            .decide_and_act(
                &mut compared.drifts,
                partial,
                &run::live_by_key(&self.t.cluster, &self.t.namespace, &subset, &live),
                &desired_raw,
                Some(&only),
                related,
                crate::notify::PASS_EVENT,
            )
            .await;
        for d in compared.drifts.iter().filter(|d| done_correction(d)) {
            if let Some(at) = first_event.get(d.resource.id.key().as_str()) {
                self.sh.status.observe_correction_latency(at.elapsed());
            }
        }
        // The target's drifts: these objects' entries replaced.
        self.drifts.retain(|fp, _| !only.contains(fp));
        for d in compared.drifts {
            self.drifts.insert(d.fingerprint.clone(), d);
        }
        self.publish(outcome);
    }

    fn strict(&self) -> bool {
        self.t.strict
    }

    /// The classify, decide and act stages over some drifts; a replica that does not lead
    /// decides only. Returns the errors the actuators reported. `live`: the raw live objects of
    /// the drifts by resource key (the audit log's digests of masked values). `pass`: which
    /// kind of pass this is, for the notifications.
    #[allow(clippy::too_many_arguments)]
    async fn decide_and_act(
        &mut self,
        drifts: &mut [Drift],
        partial: bool,
        live: &HashMap<String, Value>,
        desired_raw: &act::DesiredObjects,
        only: Option<&HashSet<String>>,
        related: policy::Related,
        pass: &'static str,
    ) -> Vec<SourceError> {
        let mode = self.sh.mode(self.t);
        if let Err(e) = run::classify_stage(
            self.sh.engine,
            &self.t.name,
            drifts,
            mode,
            Command::Reconcile,
            related,
        ) {
            warn!(target = %self.name(), error = %error_chain(&e), "watch: classification failed; nothing acted on");
            return vec![SourceError {
                target: self.t.name.clone(),
                side: "policy".into(),
                message: error_chain(&e),
            }];
        }
        run::decide_stage(drifts, mode);
        // The rolling window first: past it, this pass corrects nothing.
        if self.sh.cfg.watch.max_corrections_per_window.is_none() {
            self.window.set_limit(guardrails::correction_limit(
                &self.t.guardrails,
                self.checked,
            ));
        }
        let held = self.window.hold_back(drifts, Instant::now());
        self.sh.status.update_target(&self.t.name, |s| {
            s.corrections_stopped = held.clone();
        });
        if let Some(why) = &held {
            warn!(target = %self.name(), reason = %why, "watch: corrections stopped");
        }
        // The leadership is checked right before the actuators write anything.
        if !self.sh.leadership.is_leader_now() {
            info!(target = %self.name(), drifts = drifts.len(), "watch: not the leader; decided, nothing acted on");
            return Vec::new();
        }
        self.sh.prs.begin_pass();
        self.sh.audit.note_live(drifts, live);
        let handoff = health::Handoff::default();
        let mut actx = run::act_context(
            self.t,
            mode,
            partial,
            self.checked,
            desired_raw,
            false,
            self.sh.cfg,
            (self.sh.prs, self.sh.audit),
        );
        actx.only = only;
        actx.handoff = Some(&handoff);
        self.hold_for_gates(&actx, drifts, only);
        let errors = run::act_stage(&actx, drifts).await;
        // The gates the corrections handed over are followed in the background; their
        // corrections are notified once the gate concludes.
        let handed = handoff.take();
        let gated: HashSet<String> = handed.iter().map(|h| h.drift.fingerprint.clone()).collect();
        for h in handed {
            self.follow(h);
        }
        if let Some(n) = self.sh.notices {
            let mut events = crate::notify::target_events(
                &self.t.name,
                drifts,
                &super::notices::Notices::origin(pass),
            );
            events.retain(|e| {
                e.drift
                    .as_ref()
                    .is_none_or(|d| !gated.contains(&d.fingerprint))
            });
            n.send(events, self.sh.audit);
        }
        let done = drifts.iter().filter(|d| done_correction(d)).count();
        let failed = drifts
            .iter()
            .filter(|d| {
                d.action.as_ref().is_some_and(|a| {
                    a.action == Action::Correct && a.result == ActionResult::Failed
                })
            })
            .count();
        self.window.record(Instant::now(), done);
        for _ in 0..done {
            self.sh.status.record_correction(&self.t.name, "done");
        }
        for _ in 0..failed {
            self.sh.status.record_correction(&self.t.name, "failed");
        }
        log_actions(&self.t.name, drifts);
        errors
    }

    /// Before the actuators: a correction of a workload whose health gate still follows its
    /// last correction waits (skipped with the reason; the object is looked at again once the
    /// gate concludes), and a drift whose correction the gate rolled back is escalated instead
    /// of corrected while it stays the same.
    fn hold_for_gates(
        &mut self,
        actx: &act::ActContext<'_>,
        drifts: &mut [Drift],
        only: Option<&HashSet<String>>,
    ) {
        for d in drifts.iter_mut() {
            if !guardrails::is_planned_correction(d) {
                continue;
            }
            let key = d.resource.id.key();
            if self.following.contains_key(&key) {
                guardrails::skip(
                    d,
                    "health gate",
                    "not corrected now: the health gate is following the rollout of this workload's last correction; looked at again once it concludes",
                );
                self.held.insert(key);
                continue;
            }
            if self
                .rolled_back
                .get(&d.fingerprint)
                .is_some_and(|sig| *sig == changes_signature(d))
            {
                guardrails::escalate(
                    d,
                    actx,
                    "its last correction was rolled back by the health gate (the workload ended worse than before) and the drift is the same since: not corrected again",
                );
            }
        }
        // A rolled-back drift this pass found gone or changed may be corrected again.
        let seen: HashMap<&str, String> = drifts
            .iter()
            .map(|d| (d.fingerprint.as_str(), changes_signature(d)))
            .collect();
        self.rolled_back
            .retain(|fp, sig| match seen.get(fp.as_str()) {
                Some(now) => now == sig,
                None => only.is_some_and(|o| !o.contains(fp)),
            });
    }

    /// Follows a handed-over gate on a task of its own.
    fn follow(&mut self, h: health::Handed) {
        let key = h.drift.resource.id.key();
        info!(target = %self.name(), resource = %h.drift.resource.display, "watch: the health gate follows the rollout in the background");
        let kube = self.kube.clone();
        let gate = h.gate;
        let task_key = key.clone();
        let task = self.gates.spawn(async move {
            let (gate, judgement) = gate.follow(kube).await;
            (task_key, gate, judgement)
        });
        self.gate_tasks.insert(task.id(), key.clone());
        self.following.insert(
            key,
            Following {
                drift: h.drift,
                intent: h.intent,
            },
        );
    }

    /// A gate's task ended: settle its correction.
    async fn gate_ended(
        &mut self,
        joined: Result<
            (tokio::task::Id, (String, health::Gate, health::Judgement)),
            tokio::task::JoinError,
        >,
    ) {
        match joined {
            Ok((id, (key, gate, judgement))) => {
                self.gate_tasks.remove(&id);
                self.conclude(key, gate, judgement).await;
            }
            Err(e) => {
                if let Some(key) = self.gate_tasks.remove(&e.id()) {
                    self.not_concluded(&key, &format!("its task failed: {e}"));
                }
            }
        }
    }

    /// Settles a correction whose gate concluded, as `reconcile` does: kept, or rolled back,
    /// recorded and escalated; then counted, logged, notified, and the object looked at again
    /// when events waited for the gate.
    async fn conclude(&mut self, key: String, gate: health::Gate, judgement: health::Judgement) {
        let Some(f) = self.following.remove(&key) else {
            return;
        };
        let fp = f.drift.fingerprint.clone();
        let only = HashSet::from([fp.clone()]);
        let desired_raw = act::DesiredObjects::default();
        // Partial: settling one drift closes no other item.
        let mut actx = run::act_context(
            self.t,
            self.sh.mode(self.t),
            true,
            self.checked,
            &desired_raw,
            false,
            self.sh.cfg,
            (self.sh.prs, self.sh.audit),
        );
        actx.only = Some(&only);
        self.sh.prs.begin_pass();
        let handed = health::Handed {
            drift: f.drift,
            intent: f.intent,
            gate,
        };
        let (d, errors) = act::conclude_gate(&actx, &self.kube, handed, judgement).await;
        let result = d.action.as_ref().map(|a| a.result.clone());
        match result {
            Some(ActionResult::RolledBack) => {
                self.sh
                    .status
                    .record_correction(&self.t.name, "rolled_back");
                self.rolled_back.insert(fp.clone(), changes_signature(&d));
            }
            Some(ActionResult::Failed) => {
                self.sh.status.record_correction(&self.t.name, "failed");
            }
            _ => {}
        }
        log_actions(&self.t.name, std::slice::from_ref(&d));
        if let Some(n) = self.sh.notices {
            let origin = super::notices::Notices::origin(crate::notify::PASS_GATE);
            n.send(
                crate::notify::target_events(&self.t.name, std::slice::from_ref(&d), &origin),
                self.sh.audit,
            );
        }
        // The report shows how the correction ended; a pass since then that found the object
        // in sync dropped its entry, which a kept correction leaves dropped.
        if self.drifts.contains_key(&fp) || result != Some(ActionResult::Done) {
            self.drifts.insert(fp, d);
        }
        if self.held.remove(&key) {
            self.pending
                .mark(key, Instant::now(), self.sh.cfg.watch.debounce);
        }
        self.publish(errors);
    }

    /// Records a gate that will not conclude: the correction's result says so (kept, not rolled
    /// back), so the intent is not left without a result.
    fn not_concluded(&mut self, key: &str, why: &str) {
        let Some(f) = self.following.remove(key) else {
            return;
        };
        let mut d = f.drift;
        if let Some(a) = d.action.as_mut() {
            let note = format!(
                "health gate not concluded: {why}; the correction is kept, not rolled back"
            );
            a.detail = Some(match a.detail.take() {
                Some(detail) => format!("{detail}; {note}"),
                None => note,
            });
        }
        warn!(target = %self.name(), resource = %d.resource.display, why, "watch: the health gate did not conclude");
        if let Err(e) = self.sh.audit.result(&f.intent, &d, Some(true)) {
            warn!(target = %self.name(), error = %error_chain(&e), "watch: the correction's result could not be recorded");
        }
        if self.held.remove(key) {
            self.pending
                .mark(key.to_string(), Instant::now(), self.sh.cfg.watch.debounce);
        }
    }

    /// At shutdown: the gates still following a rollout get up to `budget` to conclude (and be
    /// settled); the others are recorded as not concluded.
    async fn finish_gates(&mut self, budget: Duration) {
        if self.gates.is_empty() {
            return;
        }
        info!(target = %self.name(), gates = self.gates.len(), "watch: stopping; waiting for the health gates still following a rollout");
        let until = Instant::now() + budget;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(until, self.gates.join_next_with_id()).await
        {
            self.gate_ended(joined).await;
        }
        self.gates.abort_all();
        let keys: Vec<String> = self.following.keys().cloned().collect();
        for key in keys {
            self.not_concluded(
                &key,
                "watch stopped while the gate was following the rollout",
            );
        }
    }

    /// A full LIST-based cycle, as `reconcile` runs it.
    async fn full_cycle(&mut self) {
        self.sh.status.record_reconcile(&self.t.name, "target");
        self.sh.prs.begin_cycle();
        let Some(desired) = self.desired.take() else {
            self.sh.status.update_target(&self.t.name, |s| {
                s.degraded
                    .get_or_insert_with(|| "desired state not read yet".into());
            });
            return;
        };
        // The cluster is read and compared as it arrives, LIST page by LIST page, as
        // `reconcile` does: what is kept is what drifted, not the cluster.
        let mut planned = run::Planned::default();
        for o in &desired.objects {
            planned.note(&o.value);
        }
        let req = live_kube::ReadRequest {
            desired: &planned.objects,
            default_namespace: &self.t.namespace,
            tracking: self.t.tracking.as_ref(),
            unmanaged_namespaces: &self.t.unmanaged_namespaces,
        };
        let dopts = run::diff_options(self.t, self.strict());
        let mut c = Compare::start(
            run::compare_at(self.t),
            desired.source.clone(),
            desired.commit.clone(),
            &dopts,
        );
        for o in &desired.objects {
            c.desired(o.clone());
        }
        let read = live_kube::read_with_each(&self.kube, &req, &mut |o| c.live(o)).await;
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                // The cluster went away: nothing is compared, corrected or pruned; retried at
                // the next cycle, shown in /readyz and the metrics.
                let msg = format!("cluster unreachable: {}", live_kube::error_chain(&e));
                warn!(target = %self.name(), error = %msg, "watch: full cycle skipped");
                self.errors = vec![SourceError {
                    target: self.t.name.clone(),
                    side: "live".into(),
                    message: msg,
                }];
                self.desired = Some(desired);
                self.publish(Vec::new());
                return;
            }
        };
        let mut errors: Vec<SourceError> = read
            .errors
            .iter()
            .map(|m| SourceError {
                target: self.t.name.clone(),
                side: "live".into(),
                message: m.clone(),
            })
            .collect();
        if let Some(e) = &self.desired_error {
            errors.push(SourceError {
                target: self.t.name.clone(),
                side: "desired".into(),
                message: e.clone(),
            });
        }
        let partial = !errors.is_empty();
        let finished = match c.finish() {
            Ok(f) => f,
            Err(e) => {
                let e = run::duplicate_error(e);
                warn!(target = %self.name(), error = %error_chain(&e), "watch: diff failed");
                self.errors = vec![SourceError {
                    target: self.t.name.clone(),
                    side: "desired".into(),
                    message: error_chain(&e),
                }];
                self.desired = Some(desired);
                self.publish(Vec::new());
                return;
            }
        };
        let mut compared = run::settle_unread(self.t, finished.outcome, &read.unread);
        errors.append(&mut compared.errors);
        self.checked = compared.checked;
        self.ignored = compared.ignored.clone();
        let desired_raw = act::DesiredObjects(finished.desired);
        info!(
            target = %self.name(),
            desired = finished.desired_count,
            live = finished.live_count,
            drifted = compared.drifts.len(),
            "watch: full cycle compared"
        );
        let acted = self
            .decide_and_act(
                &mut compared.drifts,
                partial,
                &finished.live,
                &desired_raw,
                None,
                finished.related,
                crate::notify::PASS_CYCLE,
            )
            .await;
        errors.extend(acted);
        self.drifts = compared
            .drifts
            .into_iter()
            .map(|d| (d.fingerprint.clone(), d))
            .collect();
        self.errors = errors;
        self.desired = Some(desired);
        self.sh
            .status
            .update_target(&self.t.name, |s| s.first_sync = true);
        self.publish(Vec::new());
    }

    /// The target's latest report, for the metrics; pass errors are logged.
    fn publish(&self, pass_errors: Vec<SourceError>) {
        for e in &pass_errors {
            warn!(target = %self.name(), error = %e.message, "watch: action failed");
        }
        let report = Report::new(
            "watch",
            1,
            self.checked,
            self.ignored.clone(),
            self.drifts.values().cloned().collect(),
            self.errors
                .iter()
                .chain(pass_errors.iter())
                .cloned()
                .collect(),
        );
        self.sh.status.set_report(&self.t.name, report);
        self.update_scope_health();
    }
}

/// A drift's changes as compared: the fields and both sides' values.
fn changes_signature(d: &Drift) -> String {
    let parts: Vec<(&str, &Value, &Value)> = d
        .changes
        .iter()
        .map(|c| (c.path.as_str(), &c.desired, &c.live))
        .collect();
    serde_json::to_string(&parts).unwrap_or_default()
}

fn done_correction(d: &Drift) -> bool {
    d.action
        .as_ref()
        .is_some_and(|a| a.action == Action::Correct && a.result == ActionResult::Done)
}

/// Each drift's outcome in the log: `watch` has no report on stdout.
fn log_actions(target: &str, drifts: &[Drift]) {
    for d in drifts {
        let (action, result, detail) = match &d.action {
            Some(a) => (
                a.action.to_string(),
                format!("{:?}", a.result).to_lowercase(),
                a.detail.clone().unwrap_or_default(),
            ),
            None => ("none".into(), String::new(), String::new()),
        };
        info!(
            target = %target,
            resource = %d.resource.display,
            kind = ?d.kind,
            class = %d.verdict.as_ref().map(|v| format!("{:?}", v.class).to_lowercase()).unwrap_or_default(),
            action = %action,
            result = %result,
            detail = %detail,
            "watch: drift"
        );
    }
}
