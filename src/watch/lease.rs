//! Leader election on a `coordination.k8s.io/v1` Lease, for running `watch` as several replicas
//! of which one acts.
//!
//! The API server has no lease logic: it stores whatever a client writes, accepts a holder
//! change at any time, does not count transitions and accepts a `renewTime` that goes
//! backwards. Election is the clients' compare-and-swap on `metadata.resourceVersion`, which
//! every write must carry (a Lease allows no unconditional update: 422 without it):
//!
//! - **acquire**: the Lease is absent (POST), has no holder (released), or has not changed for
//!   its `leaseDurationSeconds` as this replica observed it (PUT with the read resourceVersion,
//!   this replica as holder, new `acquireTime`/`renewTime`, `leaseTransitions` + 1);
//! - **renew**: PUT of the Lease this replica last wrote, with its resourceVersion and a new
//!   `renewTime`, every retry period;
//! - **409 Conflict** on any write: another replica wrote first; this one lost the race (and,
//!   if it was leading, stops at once).
//!
//! Expiry is judged on the monotonic clock, never by comparing `renewTime` with the local wall
//! clock: a replica notes when it *observed* the Lease change (its resourceVersion moved) and
//! takes it over only `leaseDurationSeconds` after that, so clock skew between nodes does not
//! matter. The holder, in turn, stops acting `renew_deadline` after the moment it *sent* its last
//! successful renew. Any other replica observed that write later than it was sent, so it waits
//! at least `lease_duration` from a later instant: with `renew_deadline < lease_duration`, the
//! holder has stopped before anyone could take over, even when its renewals hang or fail and even
//! when the election task itself is starved ([`Leadership::check`] compares the deadline with
//! the clock, not with what the task last published).
//!
//! `acquireTime` and `renewTime` are `MicroTime`s: the server refuses (400) any other form than
//! exactly six fractional digits (`2026-12-07T11:31:21.498249Z`). k8s-openapi's `MicroTime`
//! serialises with `%Y-%m-%dT%H:%M:%S%.6fZ`, which always writes six digits (checked by a test).
//!
//! On shutdown the holder stops acting, then releases the Lease (no holder,
//! `leaseDurationSeconds: 1`) so another replica takes it at its next retry instead of waiting
//! for expiry.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics;

/// How long a Lease is valid after its last observed change (`leaseDurationSeconds`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How long the holder keeps acting after its last successful renew.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often a replica tries to acquire or renew.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The field manager named in Lease writes.
const FIELD_MANAGER: &str = "driftwarden";

/// Every way leader election fails.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("invalid leader election settings: {0}")]
    Settings(String),
    #[error("{verb} Lease {namespace}/{name}")]
    Api {
        verb: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// Why [`Leadership::check`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotLeader {
    #[error("this replica does not hold the leader Lease")]
    Follower,
    #[error("this replica has not yet learned whether it holds the leader Lease")]
    Unknown,
    #[error("this replica's leader Lease was not renewed within the renew deadline")]
    Expired,
}

/// Where the Lease lives, who this replica is, and the timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica's `holderIdentity`; unique per process ([`default_identity`]).
    pub identity: String,
    /// `leaseDurationSeconds` written to the Lease; whole seconds, at least 1.
    pub lease_duration: Duration,
    /// The holder stops acting this long after its last successful renew was sent.
    pub renew_deadline: Duration,
    /// Time between two acquire or renew attempts.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// Settings with the default timing (15 s, 10 s, 2 s).
    pub fn new(name: &str, namespace: &str, identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: name.to_string(),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Checks what safety relies on: `retry_period < renew_deadline < lease_duration`, a lease
    /// duration in whole seconds that fits `leaseDurationSeconds`, and non-empty names.
    pub fn validate(&self) -> Result<(), LeaseError> {
        let bad = |m: String| Err(LeaseError::Settings(m));
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return bad("the Lease name, namespace and identity must not be empty".into());
        }
        if self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.as_secs() == 0
            || i32::try_from(self.lease_duration.as_secs()).is_err()
        {
            return bad(format!(
                "lease duration {:?} must be a whole number of seconds, at least 1",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return bad(format!(
                "renew deadline {:?} must be shorter than the lease duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad(format!(
                "retry period {:?} must be positive and shorter than the renew deadline {:?}",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        // validate() proved it fits; saturate rather than panic if called without it.
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// A `holderIdentity` unique to this process: the pod name (`POD_NAME`, else `HOSTNAME`) and a
/// random suffix, so a restarted container never mistakes its predecessor's Lease for its own.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "driftwarden".to_string());
    // RandomState is seeded from the OS's randomness per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{host}_{:016x}", h.finish())
}

/// What this replica currently believes about the Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No answer from the API server yet.
    Unknown,
    /// This replica holds the Lease and may act (until its renew deadline; see
    /// [`Leadership::check`]).
    Leader,
    /// Another replica holds the Lease, or this one lost or released it.
    Follower,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// Until when this replica may act.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    NotLeading,
    /// Leading until this instant unless renewed before.
    Until(Instant),
    /// No leader election: always acting.
    Forever,
}

impl Term {
    fn valid_at(self, now: Instant) -> bool {
        match self {
            Term::NotLeading => false,
            Term::Until(t) => now < t,
            Term::Forever => true,
        }
    }
}

/// The leadership view every writer consults: a receiver of role changes to gate on, and
/// [`check`](Leadership::check) right before each write.
#[derive(Debug, Clone)]
pub struct Leadership {
    role: watch::Receiver<Role>,
    term: Arc<Mutex<Term>>,
}

impl Leadership {
    /// Leadership without election (one replica, or outside a cluster): always the leader.
    pub fn alone() -> Leadership {
        let (tx, role) = watch::channel(Role::Leader);
        // The receiver keeps the last value after the sender is gone.
        drop(tx);
        Leadership {
            role,
            term: Arc::new(Mutex::new(Term::Forever)),
        }
    }

    /// The role as last published by the elector.
    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// A receiver that sees every role change (Unknown → Leader → Follower …).
    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// Ok only if this replica holds the Lease *right now*: it is leading and its renew
    /// deadline has not passed on the monotonic clock, whatever the election task last
    /// published. Call it immediately before every write.
    pub fn check(&self) -> Result<(), NotLeader> {
        self.check_at(Instant::now())
    }

    fn check_at(&self, now: Instant) -> Result<(), NotLeader> {
        let term = *self.term.lock().unwrap_or_else(|e| e.into_inner());
        if term.valid_at(now) {
            return Ok(());
        }
        match (term, self.role()) {
            (Term::Until(_), _) => Err(NotLeader::Expired),
            (_, Role::Unknown) => Err(NotLeader::Unknown),
            _ => Err(NotLeader::Follower),
        }
    }

    /// The instant this replica stops acting unless a renewal succeeds first (its last
    /// successful renew's send time plus the renew deadline); `None` when it is not leading, or
    /// leads without election.
    pub fn deadline(&self) -> Option<Instant> {
        match *self.term.lock().unwrap_or_else(|e| e.into_inner()) {
            Term::Until(t) => Some(t),
            Term::NotLeading | Term::Forever => None,
        }
    }

    /// Whether [`check`](Leadership::check) passes.
    pub fn is_leader_now(&self) -> bool {
        self.check().is_ok()
    }
}

/// When this replica last saw the Lease change, and how long that change holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    resource_version: String,
    /// The monotonic instant the change was first seen (after the answer arrived).
    at: Instant,
    /// The Lease's own `leaseDurationSeconds` (the settings' when absent).
    duration: Duration,
}

impl Observed {
    /// Records a read of the Lease: a new resourceVersion restarts the clock.
    fn update(prev: Option<Observed>, lease: &Lease, at: Instant, fallback: Duration) -> Observed {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let duration = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs)
            .unwrap_or(fallback);
        match prev {
            Some(p) if p.resource_version == rv && !rv.is_empty() => Observed { duration, ..p },
            _ => Observed {
                resource_version: rv,
                at,
                duration,
            },
        }
    }

    fn expired_at(&self, now: Instant) -> bool {
        now >= self.at + self.duration
    }
}

/// The outcome of one acquire-or-renew round.
#[derive(Debug)]
enum Round {
    /// This replica holds the Lease (acquired or renewed).
    Won,
    /// Another replica holds a valid Lease.
    HeldByOther,
    /// A write answered 409: another replica wrote first.
    LostRace,
}

/// Runs the election for one replica: [`Elector::run`] until shutdown.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    role: watch::Sender<Role>,
    term: Arc<Mutex<Term>>,
    observed: Option<Observed>,
    /// The Lease as this replica last wrote it, while it holds it.
    held: Option<Lease>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Elector {
    /// An elector for the Lease the settings name, and the leadership view it publishes to.
    /// Nothing is sent until [`run`](Elector::run).
    pub fn new(
        client: kube::Client,
        settings: LeaseSettings,
    ) -> Result<(Elector, Leadership), LeaseError> {
        settings.validate()?;
        let (tx, rx) = watch::channel(Role::Unknown);
        let term = Arc::new(Mutex::new(Term::NotLeading));
        let api = Api::namespaced(client, &settings.namespace);
        let leadership = Leadership {
            role: rx,
            term: term.clone(),
        };
        Ok((
            Elector {
                api,
                settings,
                role: tx,
                term,
                observed: None,
                held: None,
            },
            leadership,
        ))
    }

    /// Acquires and renews the Lease until `shutdown` completes, then stops acting and
    /// releases the Lease if it holds it. Failed requests are logged and retried every retry
    /// period; while leading, each attempt is bounded by the renew deadline, at which the
    /// replica steps down.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = pin!(shutdown);
        loop {
            let started = Instant::now();
            // A hanging request must not keep a leader acting: bound it by the term's end.
            // A follower's request is bounded by the renew deadline, so it retries.
            let limit = match self.current_term() {
                Term::Until(t) => t,
                _ => started + self.settings.renew_deadline,
            };
            let outcome = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = tokio::time::timeout_at(limit, self.round()) => r,
            };
            match outcome {
                Ok(Ok(Round::Won)) => self.lead_until(started + self.settings.renew_deadline),
                Ok(Ok(Round::HeldByOther)) => self.step_down("another replica holds the Lease"),
                Ok(Ok(Round::LostRace)) => {
                    self.step_down("another replica wrote the Lease first (409)")
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %crate::errors::error_chain(&e), "leader election");
                    self.expire_if_due();
                }
                Err(_) => {
                    // The write may or may not have been stored: read before writing again.
                    self.held = None;
                    tracing::warn!(lease = %self.settings.name, "leader election: the Lease request did not answer in time");
                    self.expire_if_due();
                }
            }
            let next = started + self.settings.retry_period;
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = tokio::time::sleep_until(next) => {}
            }
            self.expire_if_due();
        }
        self.release().await;
    }

    fn current_term(&self) -> Term {
        *self.term.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lead_until(&mut self, until: Instant) {
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = Term::Until(until);
        let changed = self.role.send_if_modified(|r| {
            let was = *r;
            *r = Role::Leader;
            was != Role::Leader
        });
        if changed {
            tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "leader election: this replica now leads");
        }
    }

    /// Stops acting at once (the term first, then the published role).
    fn step_down(&mut self, why: &str) {
        *self.term.lock().unwrap_or_else(|e| e.into_inner()) = Term::NotLeading;
        self.held = None;
        let was = self.role.send_replace(Role::Follower);
        if was == Role::Leader {
            tracing::warn!(lease = %self.settings.name, reason = why, "leader election: this replica stopped leading");
        }
    }

    /// Steps down when the renew deadline has passed without a successful renew.
    fn expire_if_due(&mut self) {
        if let Term::Until(t) = self.current_term()
            && Instant::now() >= t
        {
            self.step_down("the Lease was not renewed within the renew deadline");
        }
    }

    /// One acquire-or-renew attempt.
    async fn round(&mut self) -> Result<Round, LeaseError> {
        let now_wall = MicroTime(Timestamp::now());
        if let Some(held) = self.held.clone() {
            let mut renewed = held;
            let spec = renewed.spec.get_or_insert_with(LeaseSpec::default);
            spec.renew_time = Some(now_wall);
            spec.lease_duration_seconds = Some(self.settings.duration_seconds());
            return self.put(renewed).await;
        }
        let current = self.get().await?;
        let Some(lease) = current else {
            return self.create(now_wall).await;
        };
        let observed = Observed::update(
            self.observed.take(),
            &lease,
            Instant::now(),
            self.settings.lease_duration,
        );
        let expired = observed.expired_at(Instant::now());
        self.observed = Some(observed);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let mut next = lease;
        let next_spec = next.spec.get_or_insert_with(LeaseSpec::default);
        match holder {
            // Ours (a renew whose answer was lost): renew it.
            Some(h) if h == self.settings.identity => {
                next_spec.renew_time = Some(now_wall);
            }
            Some(_) if !expired => return Ok(Round::HeldByOther),
            // Released or expired: take it over.
            _ => {
                next_spec.holder_identity = Some(self.settings.identity.clone());
                next_spec.acquire_time = Some(now_wall.clone());
                next_spec.renew_time = Some(now_wall);
                next_spec.lease_transitions =
                    Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
            }
        }
        next_spec.lease_duration_seconds = Some(self.settings.duration_seconds());
        self.put(next).await
    }

    async fn get(&self) -> Result<Option<Lease>, LeaseError> {
        let r = self.api.get_opt(&self.settings.name).await;
        count("get", &r);
        r.map_err(|e| self.api_error("get", e))
    }

    async fn create(&mut self, now: MicroTime) -> Result<Round, LeaseError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(self.settings.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        let r = self.api.create(&post_params(), &lease).await;
        count("create", &r);
        self.written(r, "create")
    }

    async fn put(&mut self, lease: Lease) -> Result<Round, LeaseError> {
        let r = self
            .api
            .replace(&self.settings.name, &post_params(), &lease)
            .await;
        count("update", &r);
        self.written(r, "update")
    }

    /// A write's answer: the Lease now ours, a lost race, or an error.
    fn written(
        &mut self,
        r: Result<Lease, kube::Error>,
        verb: &'static str,
    ) -> Result<Round, LeaseError> {
        match r {
            Ok(lease) => {
                self.observed = Some(Observed::update(
                    None,
                    &lease,
                    Instant::now(),
                    self.settings.lease_duration,
                ));
                self.held = Some(lease);
                Ok(Round::Won)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                self.held = None;
                Ok(Round::LostRace)
            }
            Err(e) => {
                // The write may or may not have been stored: read before writing again.
                self.held = None;
                Err(self.api_error(verb, e))
            }
        }
    }

    /// Stops acting, then gives the Lease up so another replica can take it at once.
    async fn release(&mut self) {
        let held = self.held.take();
        self.step_down("shutting down");
        let Some(mut lease) = held else { return };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let r = tokio::time::timeout(
            self.settings.retry_period,
            self.api
                .replace(&self.settings.name, &post_params(), &lease),
        )
        .await;
        match r {
            Ok(r) => {
                count("update", &r);
                match r {
                    Ok(_) => {
                        tracing::info!(lease = %self.settings.name, "leader election: Lease released")
                    }
                    Err(e) => {
                        tracing::warn!(error = %crate::errors::error_chain(&self.api_error("update", e)), "leader election: the Lease could not be released; another replica takes it after it expires")
                    }
                }
            }
            Err(_) => {
                tracing::warn!(lease = %self.settings.name, "leader election: releasing the Lease timed out; another replica takes it after it expires")
            }
        }
    }

    fn api_error(&self, verb: &'static str, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            verb,
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source: Box::new(source),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_string()),
    }
}

/// Counts a Lease request in the process-wide API request metrics.
fn count<T>(verb: &str, r: &Result<T, kube::Error>) {
    let result = match r {
        Ok(_) => "ok".to_string(),
        Err(kube::Error::Api(s)) => s.code.to_string(),
        Err(_) => "error".to_string(),
    };
    metrics::record_api_call(
        "kubernetes",
        &format!("{verb} coordination.k8s.io/v1 leases"),
        &result,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LeaseSettings {
        LeaseSettings::new("driftwarden-leader", "driftwarden", "a")
    }

    #[test]
    fn default_timing_is_valid_and_unsafe_timing_is_refused() {
        settings().validate().unwrap();
        let mut s = settings();
        s.renew_deadline = s.lease_duration;
        assert!(matches!(s.validate(), Err(LeaseError::Settings(_))));
        let mut s = settings();
        s.retry_period = s.renew_deadline;
        assert!(matches!(s.validate(), Err(LeaseError::Settings(_))));
        let mut s = settings();
        s.lease_duration = Duration::from_millis(15_500);
        assert!(matches!(s.validate(), Err(LeaseError::Settings(_))));
        let mut s = settings();
        s.identity.clear();
        assert!(matches!(s.validate(), Err(LeaseError::Settings(_))));
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let a = default_identity();
        let b = default_identity();
        assert_ne!(a, b);
        assert!(a.contains('_'), "{a}");
    }

    /// The server answers 400 unless `acquireTime`/`renewTime` have exactly six fractional
    /// digits; k8s-openapi's MicroTime must write them for whole seconds and nanoseconds alike.
    #[test]
    fn micro_time_serialises_with_six_fractional_digits() {
        let whole: Timestamp = "2026-12-07T11:33:00Z".parse().unwrap();
        let nanos: Timestamp = "2026-12-07T11:31:21.498249731Z".parse().unwrap();
        let milli: Timestamp = "2026-12-07T11:31:21.5Z".parse().unwrap();
        let json = |t| serde_json::to_value(MicroTime(t)).unwrap();
        assert_eq!(json(whole), "2026-12-07T11:33:00.000000Z");
        assert_eq!(json(nanos), "2026-12-07T11:31:21.498249Z");
        assert_eq!(json(milli), "2026-12-07T11:31:21.500000Z");
        // And a whole spec as sent: both times in that form.
        let spec = LeaseSpec {
            acquire_time: Some(MicroTime(whole)),
            renew_time: Some(MicroTime(nanos)),
            ..LeaseSpec::default()
        };
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["acquireTime"], "2026-12-07T11:33:00.000000Z");
        assert_eq!(v["renewTime"], "2026-12-07T11:31:21.498249Z");
        // What the server returns parses back.
        let back: MicroTime = serde_json::from_value(json(nanos)).unwrap();
        assert_eq!(back.0.subsec_nanosecond(), 498_249_000);
    }

    fn lease(rv: &str, holder: Option<&str>, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.to_string()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Expiry runs from when a change was observed, on the monotonic clock; re-reading the same
    /// resourceVersion does not restart it, a new one does.
    #[test]
    fn expiry_counts_from_the_observed_change() {
        let fallback = DEFAULT_LEASE_DURATION;
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let o = Observed::update(None, &lease("479", Some("b"), 15), t0, fallback);
        let o = Observed::update(
            Some(o),
            &lease("479", Some("b"), 15),
            t0 + ms(10_000),
            fallback,
        );
        assert_eq!(o.at, t0);
        assert!(!o.expired_at(t0 + ms(14_999)));
        assert!(o.expired_at(t0 + ms(15_000)));
        // The holder renewed: a new resourceVersion, the clock starts again.
        let t1 = t0 + ms(15_000);
        let o = Observed::update(Some(o), &lease("480", Some("b"), 15), t1, fallback);
        assert!(!o.expired_at(t1));
        assert!(!o.expired_at(t1 + ms(14_999)));
        // The Lease's own duration counts, not this replica's setting.
        let o = Observed::update(Some(o), &lease("481", Some("b"), 1), t1, fallback);
        assert!(o.expired_at(t1 + ms(1_000)));
        // No duration in the Lease: this replica's setting.
        let mut l = lease("482", Some("b"), 1);
        l.spec.as_mut().unwrap().lease_duration_seconds = None;
        let o = Observed::update(Some(o), &l, t1, fallback);
        assert_eq!(o.duration, fallback);
    }

    /// `check` refuses as soon as the renew deadline has passed, even if nobody has published
    /// a step-down, and the deadline is strictly before any other replica's expiry.
    #[test]
    fn a_leader_stops_acting_at_its_renew_deadline() {
        let s = settings();
        let ms = Duration::from_millis;
        let (tx, rx) = watch::channel(Role::Unknown);
        let term = Arc::new(Mutex::new(Term::NotLeading));
        let l = Leadership {
            role: rx,
            term: term.clone(),
        };
        let sent = Instant::now();
        assert_eq!(l.check_at(sent), Err(NotLeader::Unknown));
        // The renew was sent at `sent`; the server stored it later; another replica observed
        // it later still, at the earliest at `sent`.
        *term.lock().unwrap() = Term::Until(sent + s.renew_deadline);
        tx.send_replace(Role::Leader);
        let other = Observed::update(None, &lease("480", Some("a"), 15), sent, s.lease_duration);
        assert!(l.check_at(sent).is_ok());
        assert!(l.check_at(sent + s.renew_deadline - ms(1)).is_ok());
        // The election task still says Leader, but the deadline has passed.
        let stop = sent + s.renew_deadline;
        assert_eq!(l.role(), Role::Leader);
        assert_eq!(l.check_at(stop), Err(NotLeader::Expired));
        assert!(!other.expired_at(stop));
        // The gap between stopping and the earliest takeover is lease_duration - renew_deadline.
        assert!(!other.expired_at(sent + s.lease_duration - ms(1)));
        assert!(other.expired_at(sent + s.lease_duration));
        // A step-down is seen at once.
        *term.lock().unwrap() = Term::NotLeading;
        tx.send_replace(Role::Follower);
        assert_eq!(l.check_at(sent), Err(NotLeader::Follower));
    }

    #[test]
    fn alone_always_leads() {
        let l = Leadership::alone();
        assert_eq!(l.role(), Role::Leader);
        assert!(
            l.check_at(Instant::now() + Duration::from_secs(86_400))
                .is_ok()
        );
        assert!(l.is_leader_now());
        assert_eq!(*l.subscribe().borrow(), Role::Leader);
    }
}
