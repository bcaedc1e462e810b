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
//! - [`notices`]: the `notify:` receivers told what each pass did, without waiting for them.
//!
//! A run ends when the shutdown channel given to [`Watch::run`] turns `true`: the work in
//! flight finishes (no half-applied correction); health gates still following a rollout are
//! given up to [`WatchOptions::shutdown_budget`] to conclude (one that does not is recorded in
//! the audit log as not concluded); notifications still under way get up to
//! [`NOTIFY_FLUSH`]; then it returns.

pub mod http;
pub mod lease;
pub mod notices;
pub mod status;
pub mod stream;
pub mod target;
pub mod webhook;
pub mod window;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::act;
use crate::config::{Config, LiveSource, Target};
use crate::model::Mode;
use crate::policy::PolicyEngine;
use crate::run;

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
    #[error("watch.listen")]
    Listen(#[source] http::HttpError),
    /// The webhook secret is missing: exit 3 (a configuration error, named by its variable).
    #[error("watch.webhook")]
    Webhook(#[source] webhook::WebhookError),
}

impl Error {
    /// The process exit code: 3 for invalid input, 1 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Run(e) => e.exit_code(),
            Error::Lease(lease::LeaseError::Settings(_)) => 3,
            Error::Webhook(_) => 3,
            Error::Unreachable { .. } | Error::Listen(_) | Error::Lease(_) => 1,
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
    /// Every audit record is also printed on stdout, one JSON line each.
    pub audit_stdout: bool,
    /// At shutdown, how long health gates still following a rollout may take to conclude.
    pub shutdown_budget: Duration,
    /// The notifier of the `notify:` section, when the caller built it (with
    /// [`crate::notify::Notifier::with_env`]); `None`: built from the config and the process
    /// environment.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// At shutdown, the longest notifications still under way are waited for (after the health
/// gates): with [`WatchOptions::shutdown_budget`]'s default, `watch` still exits within the 10
/// seconds of its SIGTERM promise.
pub const NOTIFY_FLUSH: Duration = Duration::from_secs(2);

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            targets: Vec::new(),
            cache_dir: run::default_cache_dir(),
            mode: None,
            audit_stdout: false,
            shutdown_budget: Duration::from_secs(4),
            notifier: None,
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
    /// Each Kubernetes target's client, reached at start.
    clients: BTreeMap<String, crate::live::kube::Kube>,
    /// The endpoints' socket, bound at start.
    listener: tokio::net::TcpListener,
    webhook: Option<Arc<webhook::Webhook>>,
    /// The `notify:` receivers (none without the section).
    notifier: Option<Arc<crate::notify::Notifier>>,
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
        // An unset or malformed receiver variable is invalid input (exit 3), before anything
        // starts.
        let notifier = match (&opts.notifier, &cfg.notify) {
            (Some(n), _) => Some(Arc::clone(n)),
            (None, Some(settings)) => Some(Arc::new(
                crate::notify::Notifier::new(settings).map_err(run::Error::Notify)?,
            )),
            (None, None) => None,
        };
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
        let webhook = match &cfg.watch.webhook {
            Some(w) => Some(Arc::new(
                webhook::Webhook::from_env(
                    &w.secret_env,
                    webhook::routes(&targets),
                    trigger_tx.clone(),
                )
                .map_err(Error::Webhook)?,
            )),
            None => None,
        };
        // Last, so a taken port fails before anything runs but after every input check.
        let listener = http::bind(cfg.watch.listen).await.map_err(Error::Listen)?;
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
            clients,
            listener,
            webhook,
            notifier,
        })
    }

    /// Where the endpoints listen (the port chosen when `watch.listen` asks for port 0).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
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
            clients,
            listener,
            webhook,
            notifier,
        } = self;
        // The endpoints serve until the loop has stopped.
        let (http_stop, mut http_stop_rx) = watch::channel(false);
        let app = http::App {
            status: Arc::clone(&status),
            webhook,
            settings: http::HttpSettings::default(),
        };
        let http_task = tokio::spawn(http::serve(listener, app, async move {
            stopped(&mut http_stop_rx).await
        }));
        // The elector runs beside the loop and releases the Lease once the loop has stopped.
        let (elector_stop, mut elector_stop_rx) = watch::channel(false);
        let elector_task = elector
            .map(|e| tokio::spawn(e.run(async move { stopped(&mut elector_stop_rx).await })));
        // The status mirrors the leadership.
        let mut leader_rx = leadership.subscribe();
        status.set_role(*leader_rx.borrow());
        let prs = act::pull_request::Session::new(cfg.pull_requests.as_ref(), &cfg.state_dir);
        // One audit log for the process's life: every action of every pass is recorded there
        // (an action whose intent cannot be recorded is not taken).
        let audit = run::open_audit_log(&cfg, "watch", false, opts.audit_stdout, &targets);
        // Every write of every actuator records its intent first: checking the Lease there
        // means no request is sent on a stale belief of leadership, however long a pass runs.
        let gate_leadership = leadership.clone();
        audit.set_write_gate(crate::audit::WriteGate(std::sync::Arc::new(move || {
            gate_leadership.check().map_err(|e| e.to_string())
        })));
        for e in audit.report_unfinished() {
            warn!(target = %e.target, error = %e.message, "audit: an earlier run left an action without its result");
        }
        let notices = notifier.map(notices::Notices::new);
        let shared = target::Shared {
            cfg: &cfg,
            opts: &opts,
            engine: engine.as_ref().as_ref(),
            prs: &prs,
            audit: &audit,
            status: &status,
            leadership: &leadership,
            notices: notices.as_ref(),
        };
        // One loop per target, all on this task (the forge's Git handles are not `Send`); the
        // watch streams run as tasks of their own.
        let mut routes = BTreeMap::new();
        let mut loops = Vec::new();
        for t in &targets {
            let (tx, rx) = mpsc::channel(4);
            routes.insert(t.name.clone(), tx);
            let kube = clients.get(&t.name).cloned();
            loops.push(target::run(&shared, t, kube, rx, shutdown.clone()));
        }
        let control = async {
            let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
            // Without election the role never changes (its sender is gone).
            let mut elected = true;
            loop {
                tokio::select! {
                    _ = stopped(&mut shutdown) => break,
                    _ = heartbeat.tick() => status.heartbeat(),
                    changed = leader_rx.changed(), if elected => {
                        match changed {
                            Ok(()) => status.set_role(*leader_rx.borrow_and_update()),
                            Err(_) => elected = false,
                        }
                    }
                    Some(trigger) = trigger_rx.recv() => {
                        for t in targets.iter().filter(|t| triggered(&trigger, t)) {
                            info!(target = %t.name, ?trigger, "watch: re-reading the desired state now");
                            if let Some(tx) = routes.get(&t.name) {
                                // A full queue already holds a re-read.
                                let _ = tx.try_send(());
                            }
                        }
                    }
                }
            }
        };
        tracing::debug!(loops = loops.len(), "watch: starting the target loops");
        futures::future::join(control, futures::future::join_all(loops)).await;
        if let Some(n) = &notices {
            n.flush(&audit, NOTIFY_FLUSH).await;
        }
        info!("watch: the loop stopped; releasing the Lease");
        let _ = elector_stop.send(true);
        if let Some(task) = elector_task {
            if let Err(e) = task.await {
                warn!(error = %e, "the leader election task failed");
            }
        }
        let _ = http_stop.send(true);
        if let Err(e) = http_task.await {
            warn!(error = %e, "the endpoints task failed");
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
