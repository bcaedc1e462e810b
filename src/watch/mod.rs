//! `driftwarden watch`: the long-running reconciler. Same config, policies, guardrails and
//! reports as `reconcile`, driven by events instead of a schedule.
//!
//! - [`status`]: the shared state the HTTP endpoints render (`/metrics`, `/healthz`,
//!   `/readyz`): counters, the correction-latency histogram, each target's first sync, the
//!   leadership.
//! - Triggers: a [`Trigger`] sent on [`Watch::triggers`] makes a target re-read its desired
//!   state at once (the GitHub webhook sends them).
//! - [`http`]: the server for those endpoints and the webhook on `watch.listen`; [`webhook`]:
//!   `POST /hooks/github`, signed push events that send [`Trigger`]s.
//! - [`lease`]: leader election on a `coordination.k8s.io/v1` Lease. Every write (live objects,
//!   EC2, the forge) happens only while [`lease::Leadership::check`] passes; without
//!   `watch.leader_election` this process leads alone.
//!
//! A run ends when the shutdown channel given to [`Watch::run`] turns `true`: the work in
//! flight finishes (no half-applied correction), then it returns.

pub mod http;
pub mod lease;
pub mod status;
pub mod webhook;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::act;
use crate::config::{Config, LiveSource, Target};
use crate::errors::error_chain;
use crate::model::Mode;
use crate::policy::PolicyEngine;
use crate::run::{self, Command, RunOptions};

pub use lease::{Leadership, Role};
pub use status::{Readiness, Status, TargetState};

/// Why `watch` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad config, policy or input: exit 3, nothing started.
    #[error(transparent)]
    Run(#[from] run::Error),
    /// A target's cluster cannot be reached at start: exit 1.
    #[error("target `{target}`: the cluster is unreachable at start")]
    Unreachable {
        target: String,
        #[source]
        source: crate::live::kube::KubeError,
    },
    /// Leader election could not be set up.
    #[error("leader election")]
    Lease(#[source] lease::LeaseError),
    /// The HTTP listener could not be bound: exit 1.
    #[error("cannot listen on {addr}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code: 3 for invalid input, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Run(e) => e.exit_code(),
            Error::Lease(lease::LeaseError::Settings(_)) => 3,
            Error::Unreachable { .. } | Error::Listen { .. } | Error::Lease(_) => 1,
        }
    }
}

/// A request to look at a target now rather than at its next poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Re-read this target's desired state and reconcile it whole (a push to its repository).
    Target(String),
    /// The same for every target whose desired state comes from Git.
    AllGit,
}

/// Options that do not come from the config file.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// Where remote Git repositories are cached.
    pub cache_dir: PathBuf,
    /// Overrides every target's mode.
    pub mode: Option<Mode>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            targets: Vec::new(),
            cache_dir: run::default_cache_dir(),
            mode: None,
        }
    }
}

/// A prepared watch: config validated, policies compiled, clusters reached. Its handles
/// ([`Watch::status`], [`Watch::triggers`], [`Watch::leadership`]) are what the HTTP layer and
/// leader election plug into before [`Watch::run`].
pub struct Watch {
    cfg: Arc<Config>,
    opts: WatchOptions,
    targets: Vec<Target>,
    engine: Arc<Option<PolicyEngine>>,
    status: Arc<Status>,
    trigger_tx: mpsc::Sender<Trigger>,
    trigger_rx: mpsc::Receiver<Trigger>,
    leadership: Leadership,
    /// The Lease's elector, run beside the loop (none without leader election).
    elector: Option<lease::Elector>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("config", &self.cfg.source)
            .field(
                "targets",
                &self.targets.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Validates what can be validated before anything starts: the target selection, the
    /// policies (a policy that does not compile is exit 3), and every cluster (unreachable at
    /// start is exit 1).
    pub async fn prepare(cfg: Config, opts: WatchOptions) -> Result<Watch, Error> {
        let targets: Vec<Target> = cfg
            .targets
            .iter()
            .filter(|t| opts.targets.is_empty() || opts.targets.contains(&t.name))
            .cloned()
            .collect();
        if targets.is_empty() {
            return Err(run::Error::Usage(format!(
                "no target named {} in {}",
                opts.targets.join(", "),
                cfg.source
            ))
            .into());
        }
        let engine = run::load_policies(&cfg.policies, false)?;
        let mut clients = BTreeMap::new();
        for t in &targets {
            if let LiveSource::Kubernetes(src) = &t.live {
                let kube = crate::live::kube::Kube::connect(src)
                    .await
                    .map_err(|source| Error::Unreachable {
                        target: t.name.clone(),
                        source,
                    })?;
                kube.probe().await.map_err(|source| Error::Unreachable {
                    target: t.name.clone(),
                    source,
                })?;
                clients.insert(t.name.clone(), kube);
            }
        }
        let (leadership, elector) = match &cfg.watch.leader_election {
            None => (Leadership::alone(), None),
            Some(le) => {
                // The Lease lives in the named target's cluster, else the first one's (the
                // config checked that one exists).
                let holder = cfg
                    .targets
                    .iter()
                    .filter(|t| matches!(t.live, LiveSource::Kubernetes(_)))
                    .find(|t| le.target.as_ref().is_none_or(|n| n == &t.name));
                let kube = match holder {
                    Some(t) => match clients.get(&t.name) {
                        Some(k) => k.clone(),
                        None => connect_target(t).await?,
                    },
                    None => {
                        return Err(Error::Lease(lease::LeaseError::Settings(
                            "no target reads a cluster to hold the Lease in".into(),
                        )));
                    }
                };
                let mut settings =
                    lease::LeaseSettings::new(&le.name, &le.namespace, &lease::default_identity());
                settings.lease_duration = le.lease_duration;
                settings.renew_deadline = le.renew_deadline;
                settings.retry_period = le.retry_period;
                let (elector, leadership) =
                    lease::Elector::new(kube.client(), settings).map_err(Error::Lease)?;
                (leadership, Some(elector))
            }
        };
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let status = Arc::new(Status::new(&names, elector.is_some()));
        let (trigger_tx, trigger_rx) = mpsc::channel(64);
        Ok(Watch {
            cfg: Arc::new(cfg),
            opts,
            targets,
            engine: Arc::new(engine),
            status,
            trigger_tx,
            trigger_rx,
            leadership,
            elector,
        })
    }

    /// The shared status the HTTP endpoints render.
    pub fn status(&self) -> Arc<Status> {
        Arc::clone(&self.status)
    }

    /// Where the webhook sends [`Trigger`]s.
    pub fn triggers(&self) -> mpsc::Sender<Trigger> {
        self.trigger_tx.clone()
    }

    /// The leadership view every write checks (and `/readyz` shows).
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// The validated config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Runs until `shutdown` turns `true`, then finishes the work in flight and returns.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        let Watch {
            cfg,
            opts,
            targets,
            engine,
            status,
            trigger_tx: _,
            mut trigger_rx,
            leadership,
            elector,
        } = self;
        // The elector runs beside the loop and releases the Lease once the loop has stopped.
        let (elector_stop, mut elector_stop_rx) = watch::channel(false);
        let elector_task = elector
            .map(|e| tokio::spawn(e.run(async move { stopped(&mut elector_stop_rx).await })));
        // The status mirrors the leadership.
        let mut leader_rx = leadership.subscribe();
        status.set_role(*leader_rx.borrow());
        let prs = Arc::new(act::pull_request::Session::new(
            cfg.pull_requests.as_ref(),
            &cfg.state_dir,
        ));
        let mut resync = tokio::time::interval(cfg.watch.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                _ = heartbeat.tick() => status.heartbeat(),
                changed = leader_rx.changed() => {
                    if changed.is_ok() {
                        status.set_role(*leader_rx.borrow_and_update());
                    }
                }
                _ = resync.tick() => {
                    for t in &targets {
                        full_cycle(&cfg, &opts, t, &engine, &prs, &status, &leadership).await;
                    }
                }
                Some(trigger) = trigger_rx.recv() => {
                    for t in targets.iter().filter(|t| triggered(&trigger, t)) {
                        full_cycle(&cfg, &opts, t, &engine, &prs, &status, &leadership).await;
                    }
                }
            }
        }
        info!("watch: the loop stopped; releasing the Lease");
        let _ = elector_stop.send(true);
        if let Some(task) = elector_task {
            if let Err(e) = task.await {
                warn!(error = %e, "the leader election task failed");
            }
        }
        Ok(())
    }
}

/// A client for a target's cluster (checked reachable).
async fn connect_target(t: &Target) -> Result<crate::live::kube::Kube, Error> {
    let LiveSource::Kubernetes(src) = &t.live else {
        return Err(Error::Lease(lease::LeaseError::Settings(format!(
            "target `{}` does not read a cluster",
            t.name
        ))));
    };
    crate::live::kube::Kube::connect(src)
        .await
        .map_err(|source| Error::Unreachable {
            target: t.name.clone(),
            source,
        })
}

/// Resolves once the shutdown channel says `true` (never, when its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Whether a trigger asks for this target.
fn triggered(trigger: &Trigger, t: &Target) -> bool {
    match trigger {
        Trigger::Target(name) => name == &t.name,
        Trigger::AllGit => matches!(t.desired.location, crate::config::DesiredLocation::Git(_)),
    }
}

/// One full cycle of a target, as `reconcile` runs it; a follower only diffs (writes nothing).
async fn full_cycle(
    cfg: &Config,
    opts: &WatchOptions,
    t: &Target,
    _engine: &Option<PolicyEngine>,
    _prs: &act::pull_request::Session,
    status: &Status,
    leader: &Leadership,
) {
    let leading = leader.is_leader_now();
    let mut ro = RunOptions::new(if leading {
        Command::Reconcile
    } else {
        Command::Diff
    });
    ro.targets = vec![t.name.clone()];
    ro.cache_dir = opts.cache_dir.clone();
    ro.mode = opts.mode;
    match run::run(cfg, &ro).await {
        Ok(report) => {
            status.record_reconcile(&t.name, "target");
            status.update_target(&t.name, |s| {
                s.first_sync = true;
                s.degraded = (!report.errors.is_empty()).then(|| {
                    report
                        .errors
                        .iter()
                        .map(|e| e.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                });
            });
            status.set_report(&t.name, report);
        }
        Err(e) => {
            warn!(target = %t.name, error = %error_chain(&e), "watch: cycle failed");
            status.update_target(&t.name, |s| s.degraded = Some(error_chain(&e)));
        }
    }
}
