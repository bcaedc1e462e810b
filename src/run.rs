//! One run of the pipeline: load config → load desired and live for each target (concurrently,
//! bounded) → diff → classify → decide → report. The commands in [`crate`] are thin wrappers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::act;
use crate::compare::{self, Compare, CompareError};
use crate::config::{Config, LiveSource, Target};
use crate::desired::{self, DesiredError, RawObject};
use crate::diff::DiffOptions;
use crate::errors::error_chain;
use crate::k8s::{self, Scopes};
use crate::live::{self, LiveError};
use crate::model::{Drift, Mode, Report, SourceError};
use crate::policy::{self, PolicyConfig, PolicyDir, PolicyEngine, RunContext};

/// Every way a run can fail before it has a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("target `{target}`: cannot read desired state")]
    Desired {
        target: String,
        #[source]
        source: DesiredError,
    },
    #[error("target `{target}`: cannot read live state")]
    Live {
        target: String,
        #[source]
        source: LiveError,
    },
    #[error(
        "target `{target}`: {id} is declared twice: {first} and {second} (each object must be declared once)"
    )]
    Duplicate {
        target: String,
        id: String,
        first: String,
        second: String,
    },
    #[error("policy")]
    Policy(#[source] policy::PolicyError),
    #[error("{0}")]
    Usage(String),
    #[error("target `{target}`: cannot read Terraform or EC2 state")]
    Terraform {
        target: String,
        #[source]
        source: crate::terraform::Error,
    },
    #[error("internal task failed: {0}")]
    Join(String),
    #[error(transparent)]
    Notify(crate::notify::NotifyError),
}

impl Error {
    /// The process exit code (ARCHITECTURE.md, promise 6): 3 for bad config, policy or input, 1 for
    /// runtime failures.
    pub fn exit_code(&self) -> u8 {
        let invalid = match self {
            Error::Config(_) | Error::Duplicate { .. } | Error::Policy(_) | Error::Usage(_) => true,
            Error::Desired { source, .. } => source.is_invalid_input(),
            Error::Live { source, .. } => source.is_invalid_input(),
            Error::Terraform { source, .. } => source.is_invalid_input(),
            Error::Join(_) => false,
            Error::Notify(e) => e.is_invalid_input(),
        };
        if invalid { 3 } else { 1 }
    }
}

/// Which command is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Detect and report; stops before `act`.
    Diff,
    /// The full run: detect, classify, decide and act ([`crate::act::act`]: corrections in
    /// `autocorrect` mode, pull requests and issues where `pull_requests` is configured).
    Reconcile,
}

impl Command {
    /// `diff` or `reconcile`, as the report and the policy input name it.
    pub fn name(self) -> &'static str {
        match self {
            Command::Diff => "diff",
            Command::Reconcile => "reconcile",
        }
    }
}

/// Options that do not come from the config file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub command: Command,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// Where remote Git repositories are cached.
    pub cache_dir: PathBuf,
    /// Overrides every target's `strict`.
    pub strict: bool,
    /// Overrides every target's mode.
    pub mode: Option<Mode>,
    /// How many targets load at once.
    pub concurrency: usize,
    /// Show progress on stderr.
    pub progress: bool,
    /// Ask servers what they would change instead of changing it.
    pub dry_run: bool,
    /// Only the targets this shard owns ([`crate::shard`]); all when `None`.
    pub shard: Option<crate::shard::Shard>,
}

impl RunOptions {
    /// Defaults for a command.
    pub fn new(command: Command) -> RunOptions {
        RunOptions {
            command,
            targets: Vec::new(),
            cache_dir: default_cache_dir(),
            strict: false,
            mode: None,
            concurrency: 4,
            progress: false,
            dry_run: false,
            shard: None,
        }
    }
}

/// `$XDG_CACHE_HOME/driftwarden`, `~/.cache/driftwarden`, or a temp directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("driftwarden");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache").join("driftwarden");
    }
    std::env::temp_dir().join("driftwarden-cache")
}

struct Loaded {
    desired: Result<desired::DesiredSet, DesiredError>,
    live: Result<LiveRead, LiveError>,
    /// Terraform/EC2 targets (`desired.terraform`) are read and compared by [`crate::terraform`].
    terraform: Option<Result<crate::terraform::TargetRead, crate::terraform::Error>>,
}

/// What a live source returned. `errors` non-empty means the read was partial: the drifts found
/// are still reported, but nothing may be deleted for the target (ARCHITECTURE.md, promise 2).
#[derive(Debug, Default)]
pub struct LiveRead {
    pub objects: Vec<RawObject>,
    pub errors: Vec<String>,
    /// Kubernetes scopes whose LIST failed: desired objects there are not reported Missing.
    pub unread: Vec<live::kube::UnreadScope>,
    /// The target already compared while its live objects were read (snapshots: each object
    /// compared as it is parsed, `objects` left empty).
    pub compared: Option<Result<compare::Finished, CompareError>>,
}

/// Loads one target's desired and live state. Blocking sources run on the blocking pool.
async fn load_target(t: Target, cache_dir: PathBuf, strict: bool) -> Result<Loaded, Error> {
    if let Some(tf) = &t.terraform {
        let read = crate::terraform::read_target(&t, tf, &cache_dir).await;
        return Ok(Loaded {
            desired: Ok(desired::DesiredSet {
                objects: Vec::new(),
                source: String::new(),
                commit: None,
            }),
            live: Ok(LiveRead::default()),
            terraform: Some(read),
        });
    }
    let t2 = t.clone();
    let files = tokio::task::spawn_blocking(move || desired::read(&t2.desired, &cache_dir))
        .await
        .map_err(|e| Error::Join(e.to_string()))?;
    let files = match files {
        Ok(files) => files,
        // Without a desired set the target is skipped: nothing live is read.
        Err(e) => {
            return Ok(Loaded {
                desired: Err(e),
                live: Ok(LiveRead::default()),
                terraform: None,
            });
        }
    };
    // Desired objects go into the compare as their files are parsed (each kept compact there),
    // then each live object is compared as it arrives and dropped unless it drifted.
    let (desired, live) = match &t.live {
        LiveSource::Snapshot(dir) => {
            let dir = dir.clone();
            let t3 = t.clone();
            tokio::task::spawn_blocking(move || {
                let dopts = diff_options(&t3, strict);
                let (source, commit) = (files.source.clone(), files.commit.clone());
                let mut c = Compare::start(compare_at(&t3), source, commit, &dopts);
                let set = match files.parse_each(&mut |o| c.desired(o)) {
                    Ok(set) => set,
                    Err(e) => return (Err(e), Ok(LiveRead::default())),
                };
                let read = live::for_each_snapshot_object(&dir, &mut |o| c.live(o));
                let live = read.map(|()| LiveRead {
                    compared: Some(c.finish()),
                    ..LiveRead::default()
                });
                (Ok(set), live)
            })
            .await
            .map_err(|e| Error::Join(e.to_string()))?
        }
        // A cluster is read for the kinds and namespaces desired names. Each LIST page's objects
        // are compared as soon as the page is parsed, then dropped unless they drifted.
        LiveSource::Kubernetes(src) => {
            let dopts = diff_options(&t, strict);
            let (source, commit) = (files.source.clone(), files.commit.clone());
            let mut c = Compare::start(compare_at(&t), source, commit, &dopts);
            let mut planned = Planned::default();
            // Parsed on the blocking pool, handed over a short queue: the parser never runs
            // more than the queue ahead of the compare.
            let (tx, mut rx) = tokio::sync::mpsc::channel::<RawObject>(DESIRED_QUEUE);
            let parse = tokio::task::spawn_blocking(move || {
                files.parse_each(&mut |o| {
                    // Fails only when this target's load was dropped (the receiver with it):
                    // the rest is then parsed and discarded, as a whole load would be.
                    let _ = tx.blocking_send(o);
                })
            });
            while let Some(o) = rx.recv().await {
                planned.note(&o.value);
                c.desired(o);
            }
            match parse.await.map_err(|e| Error::Join(e.to_string()))? {
                Err(e) => (Err(e), Ok(LiveRead::default())),
                Ok(set) => {
                    let req = live::kube::ReadRequest {
                        desired: &planned.objects,
                        default_namespace: &t.namespace,
                        tracking: t.tracking.as_ref(),
                        unmanaged_namespaces: &t.unmanaged_namespaces,
                    };
                    let read = live::kube::read_each(src, &req, &mut |o| c.live(o)).await;
                    let live = read
                        .map(|r| LiveRead {
                            objects: Vec::new(),
                            errors: r.errors,
                            unread: r.unread,
                            compared: Some(c.finish()),
                        })
                        .map_err(|e| LiveError::Kube(Box::new(e)));
                    (Ok(set), live)
                }
            }
        }
        // Read by crate::terraform (load_target returned above); config pairs them with
        // `desired.terraform` only.
        LiveSource::Ec2(_) | LiveSource::TerraformPlan => {
            let desired = tokio::task::spawn_blocking(move || files.parse_all())
                .await
                .map_err(|e| Error::Join(e.to_string()))?;
            (desired, Ok(LiveRead::default()))
        }
    };
    Ok(Loaded {
        desired,
        live,
        terraform: None,
    })
}

/// Desired objects queued between the parser and a cluster target's compare.
const DESIRED_QUEUE: usize = 256;

/// What a cluster read plans its LISTs from ([`live::kube::ReadRequest::desired`]): the
/// apiVersion, kind and namespace of the desired objects, one entry per distinct triple in the
/// order first seen (the first apiVersion of a kind is the version listed), not one per object.
#[derive(Default)]
pub(crate) struct Planned {
    seen: std::collections::HashSet<String>,
    pub(crate) objects: Vec<serde_json::Value>,
}

impl Planned {
    pub(crate) fn note(&mut self, o: &serde_json::Value) {
        let api = k8s::str_at(o, "/apiVersion");
        let kind = k8s::str_at(o, "/kind");
        let namespace = k8s::str_at(o, "/metadata/namespace");
        if self.seen.insert(format!("{api}\n{kind}\n{namespace}")) {
            self.objects.push(serde_json::json!({
                "apiVersion": api,
                "kind": kind,
                "metadata": {"namespace": namespace},
            }));
        }
    }
}

/// Loads the policy engine for a config. When none of the configured directories exists and none
/// was asked for explicitly, the run warns and uses [`PolicyEngine::empty`]: fail safe, every drift
/// gets the default verdict (`risky`, [`crate::policy::DEFAULT_REASON`]), so nothing is corrected.
/// Always `Some`; the `Option` is kept for callers that run without policies.
pub fn load_policies(
    settings: &crate::config::PolicySettings,
    required: bool,
) -> Result<Option<PolicyEngine>, Error> {
    let dirs: Vec<PolicyDir> = settings
        .dirs
        .iter()
        .map(|d| PolicyDir {
            path: d.path.clone(),
            rego_v0: d.rego_v0,
        })
        .collect();
    if !required && dirs.iter().all(|d| !d.path.is_dir()) {
        warn!(
            dirs = ?dirs.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>(),
            "no policy directory found; every drift is classified risky by the fail-safe default"
        );
        return PolicyEngine::empty().map(Some).map_err(Error::Policy);
    }
    let cfg = PolicyConfig {
        dirs,
        data_files: settings.data.clone(),
        strict_builtins: settings.strict_builtins,
    };
    let engine = PolicyEngine::load(&cfg).map_err(Error::Policy)?;
    Ok(Some(if settings.interpreter {
        engine.interpreted()
    } else {
        engine
    }))
}

/// Runs the pipeline over every selected target of a config. In `reconcile`, the `notify`
/// receivers are told about each target's actions as soon as they are done (sent concurrently,
/// never holding the next target back) and about the run's end; the run returns once every
/// notification is delivered or given up, at most `notify.deadline` after its last batch.
pub async fn run(cfg: &Config, opts: &RunOptions) -> Result<Report, Error> {
    let mut notes = match (&cfg.notify, opts.command) {
        (Some(settings), Command::Reconcile) => Some(Notifications {
            notifier: Arc::new(crate::notify::Notifier::new(settings).map_err(Error::Notify)?),
            origin: crate::notify::Origin {
                command: opts.command.name().to_string(),
                dry_run: opts.dry_run,
                pass: None,
            },
            sends: tokio::task::JoinSet::new(),
        }),
        _ => None,
    };
    // The audit log (reconcile only: `diff` acts on nothing), opened when the first target is
    // about to act, so that bad input stopping the run leaves no trace; intents an earlier run
    // left without a result are reported then.
    let audit = std::sync::OnceLock::new();
    let result = pipeline(cfg, opts, &mut notes, &audit).await;
    if let Some(mut n) = notes {
        let events = match &result {
            Ok(report) => crate::notify::run_events(report, &n.origin),
            Err(e) => vec![crate::notify::failure_event(&error_chain(e), &n.origin)],
        };
        n.sends.spawn(Arc::clone(&n.notifier).send(events));
        let mut records = Vec::new();
        while let Some(joined) = n.sends.join_next().await {
            if let Ok(delivery) = joined {
                records.extend(delivery.outcomes.iter().map(|o| o.audit_event()));
            }
        }
        // Notifications are a side channel: a record that cannot be written is logged only.
        if let Some(log) = audit.get() {
            if let Err(e) = log.write(records) {
                warn!(error = %error_chain(&e), "the notifications could not be recorded in the audit log");
            }
        }
    }
    result
}

/// The run's notifier and the sends it started.
struct Notifications {
    notifier: Arc<crate::notify::Notifier>,
    origin: crate::notify::Origin,
    sends: tokio::task::JoinSet<crate::notify::Delivery>,
}

impl Notifications {
    /// Starts sending the events of a target whose actions are done, without waiting.
    fn target_done(&mut self, target: &str, drifts: &[Drift]) {
        let events = crate::notify::target_events(target, drifts, &self.origin);
        if !events.is_empty() {
            self.sends.spawn(Arc::clone(&self.notifier).send(events));
        }
    }
}

/// [`run`] without the run's own notifications.
async fn pipeline(
    cfg: &Config,
    opts: &RunOptions,
    notes: &mut Option<Notifications>,
    audit: &std::sync::OnceLock<crate::audit::AuditLog>,
) -> Result<Report, Error> {
    let mut targets: Vec<Target> = cfg
        .targets
        .iter()
        .filter(|t| opts.targets.is_empty() || opts.targets.contains(&t.name))
        .cloned()
        .collect();
    if targets.is_empty() {
        return Err(Error::Usage(format!(
            "no target named {} in {}",
            opts.targets.join(", "),
            cfg.source
        )));
    }
    if let Some(shard) = opts.shard {
        targets.retain(|t| shard.owns(&t.name));
        info!(
            %shard,
            targets = ?targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            "shard selected its targets"
        );
        if targets.is_empty() {
            // A shard may own nothing (more shards than targets): an empty, in-sync report.
            return Ok(Report::new(
                opts.command.name(),
                0,
                0,
                BTreeMap::new(),
                Vec::new(),
                Vec::new(),
            ));
        }
    }
    // Policies first: a policy that does not compile stops the run before anything is read.
    let engine = load_policies(&cfg.policies, false)?;
    // The pull-request session of this run: the forge opens on first use only.
    let prs = act::pull_request::Session::new(cfg.pull_requests.as_ref(), &cfg.state_dir);

    let sem = Arc::new(Semaphore::new(opts.concurrency.max(1)));
    let mut handles = Vec::new();
    for t in targets.iter().cloned() {
        let sem = Arc::clone(&sem);
        let cache = opts.cache_dir.clone();
        let strict = t.strict || opts.strict;
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let name = t.name.clone();
            (name, load_target(t, cache, strict).await)
        }));
    }
    let total = handles.len();
    let mut loaded = HashMap::new();
    for (i, h) in handles.into_iter().enumerate() {
        let (name, res) = h.await.map_err(|e| Error::Join(e.to_string()))?;
        let res = res?;
        if opts.progress {
            eprint!("\rread {}/{} targets", i + 1, total);
        }
        loaded.insert(name, res);
    }
    if opts.progress {
        eprintln!();
    }

    let mut drifts: Vec<Drift> = Vec::new();
    let mut errors: Vec<SourceError> = Vec::new();
    let mut checked = 0;
    let mut ignored: BTreeMap<String, usize> = BTreeMap::new();
    for t in &targets {
        let Some(l) = loaded.remove(&t.name) else {
            continue;
        };
        if let Some(read) = l.terraform {
            let mode = opts.mode.unwrap_or(t.mode);
            let (d, c, e, ign) = terraform_target(
                t,
                read,
                engine.as_ref(),
                mode,
                opts,
                cfg,
                (&prs, audit, &targets),
            )
            .await?;
            checked += c;
            if let Some(n) = notes.as_mut() {
                n.target_done(&t.name, &d);
            }
            if ign > 0 {
                *ignored.entry("live.ec2.ignore".to_string()).or_default() += ign;
            }
            drifts.extend(d);
            errors.extend(e);
            continue;
        }
        let Some(desired_set) = side_read(
            t,
            "desired",
            l.desired,
            DesiredError::is_invalid_input,
            |target, source| Error::Desired { target, source },
            &mut errors,
        )?
        else {
            continue;
        };
        let Some(mut live_read) = side_read(
            t,
            "live",
            l.live,
            LiveError::is_invalid_input,
            |target, source| Error::Live { target, source },
            &mut errors,
        )?
        else {
            continue;
        };
        let partial = !live_read.errors.is_empty();
        for e in &live_read.errors {
            errors.push(source_error(t, "live", e.clone()));
        }
        let strict = t.strict || opts.strict;
        let finished = match live_read.compared.take() {
            Some(f) => f,
            // A cluster's objects, read whole: compared one by one, each dropped once compared.
            None => {
                let mut desired_set = desired_set;
                let dopts = diff_options(t, strict);
                let mut c = Compare::new(compare_at(t), &mut desired_set, &dopts);
                for o in std::mem::take(&mut live_read.objects) {
                    c.live(o);
                }
                c.finish()
            }
        }
        .map_err(duplicate_error)?;
        let mut outcome = settle_unread(t, finished.outcome, &live_read.unread);
        errors.append(&mut outcome.errors);
        info!(
            target = %t.name,
            desired = finished.desired_count,
            live = finished.live_count,
            drifted = outcome.drifts.len(),
            "target compared"
        );
        checked += outcome.checked;
        let target_checked = outcome.checked;
        for (k, v) in outcome.ignored {
            *ignored.entry(k).or_default() += v;
        }
        let mode = opts.mode.unwrap_or(t.mode);
        let mut target_drifts = outcome.drifts;
        classify_stage(
            engine.as_ref(),
            &t.name,
            &mut target_drifts,
            mode,
            opts.command,
            finished.related,
        )?;
        if opts.command == Command::Reconcile {
            let audit = audit_for(audit, cfg, opts, &targets, &mut errors);
            // Masked values are compared in the audit log by keyed digests of the raw live
            // values.
            audit.note_live(&target_drifts, &finished.live);
            let desired_raw = act::DesiredObjects(finished.desired);
            let actx = act_context(
                t,
                mode,
                partial,
                target_checked,
                &desired_raw,
                opts.dry_run,
                cfg,
                (&prs, audit),
            );
            errors.extend(decide_and_act(&actx, &mut target_drifts).await);
            if let Some(n) = notes.as_mut() {
                n.target_done(&t.name, &target_drifts);
            }
        }
        drifts.extend(target_drifts);
    }
    let mut report = Report::new(
        opts.command.name(),
        targets.len(),
        checked,
        ignored,
        drifts,
        errors,
    );
    if let Some(audit) = audit.get() {
        report.summary.trust = Some(audit.figures());
    }
    report.summary.mass_drift = prs.mass_drift();
    Ok(report)
}

/// The run's audit log, opened on first use ([`open_audit`]); the first use also reports the
/// intents earlier runs left without a result into `errors`.
fn audit_for<'a>(
    cell: &'a std::sync::OnceLock<crate::audit::AuditLog>,
    cfg: &Config,
    opts: &RunOptions,
    targets: &[Target],
    errors: &mut Vec<SourceError>,
) -> &'a crate::audit::AuditLog {
    let mut opened = false;
    let audit = cell.get_or_init(|| {
        opened = true;
        open_audit(cfg, opts, targets)
    });
    if opened {
        errors.extend(audit.report_unfinished());
    }
    audit
}

/// Opens the run's audit log (`audit`, docs/audit.md) and records the start of the run. A log
/// that cannot be opened or written is returned broken: the run reports, and acts on nothing.
fn open_audit(cfg: &Config, opts: &RunOptions, targets: &[Target]) -> crate::audit::AuditLog {
    open_audit_log(cfg, opts.command.name(), opts.dry_run, false, targets)
}

/// [`open_audit`] for any command (`watch` opens one for its whole life, `mirror_stdout` with
/// `--audit-stdout`).
pub fn open_audit_log(
    cfg: &Config,
    command: &str,
    dry_run: bool,
    mirror_stdout: bool,
    targets: &[Target],
) -> crate::audit::AuditLog {
    let audit = crate::audit::AuditLog::open(
        &cfg.audit,
        &cfg.trust,
        &cfg.state_dir,
        crate::audit::OpenOptions {
            command: command.to_string(),
            dry_run,
            mirror_stdout,
            engine: engine_name(cfg).to_string(),
        },
    );
    // A failure breaks the log, and every action of the run is then held back and reported.
    let _ = audit.write(vec![crate::audit::Event::RunStarted {
        targets: targets.iter().map(|t| t.name.clone()).collect(),
    }]);
    audit
}

/// The policy engine a config classifies with, as audit records name it.
pub fn engine_name(cfg: &Config) -> &'static str {
    if cfg.policies.interpreter {
        "interpreter"
    } else {
        "compiled"
    }
}

/// One Terraform/EC2 target ([`crate::terraform`]): its drifts classified, decided and acted on
/// like any other target's. Returns the drifts, the resources checked, the errors and the
/// resources dropped by ignore patterns.
async fn terraform_target(
    t: &Target,
    read: Result<crate::terraform::TargetRead, crate::terraform::Error>,
    engine: Option<&PolicyEngine>,
    mode: Mode,
    opts: &RunOptions,
    cfg: &Config,
    (prs, audit, targets): (
        &act::pull_request::Session,
        &std::sync::OnceLock<crate::audit::AuditLog>,
        &[Target],
    ),
) -> Result<(Vec<Drift>, usize, Vec<SourceError>, usize), Error> {
    let read = match read {
        Ok(r) => r,
        Err(e) if e.is_invalid_input() => {
            return Err(Error::Terraform {
                target: t.name.clone(),
                source: e,
            });
        }
        Err(e) => {
            warn!(target = %t.name, error = %e, "Terraform state could not be read");
            return Ok((
                Vec::new(),
                0,
                vec![source_error(t, "desired", error_chain(&e))],
                0,
            ));
        }
    };
    // A failed Describe call makes the read partial: reported, and nothing is removed.
    let mut errors: Vec<SourceError> = read
        .errors
        .iter()
        .map(|m| source_error(t, "live", m.clone()))
        .collect();
    let partial = !errors.is_empty();
    let mut drifts = read.drifts;
    classify(
        engine,
        &mut drifts,
        mode,
        opts.command,
        (&t.name, policy::Related::default()),
    )?;
    if opts.command == Command::Reconcile {
        let audit = audit_for(audit, cfg, opts, targets, &mut errors);
        let desired_raw = act::DesiredObjects::default();
        let actx = act_context(
            t,
            mode,
            partial,
            read.checked,
            &desired_raw,
            opts.dry_run,
            cfg,
            (prs, audit),
        );
        errors.extend(decide_and_act(&actx, &mut drifts).await);
    }
    Ok((drifts, read.checked, errors, read.ignored))
}

/// One side of a target as read: the value; `None` when it could not be read, recorded in
/// `errors` (the run goes on with the other targets); an error when the input itself is invalid.
fn side_read<T, E: std::error::Error + 'static>(
    t: &Target,
    side: &str,
    read: Result<T, E>,
    is_invalid_input: impl FnOnce(&E) -> bool,
    invalid: impl FnOnce(String, E) -> Error,
    errors: &mut Vec<SourceError>,
) -> Result<Option<T>, Error> {
    match read {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_invalid_input(&e) => Err(invalid(t.name.clone(), e)),
        Err(e) => {
            warn!(target = %t.name, error = %e, "{side} state could not be read");
            errors.push(source_error(t, side, error_chain(&e)));
            Ok(None)
        }
    }
}

fn source_error(t: &Target, side: &str, message: String) -> SourceError {
    SourceError {
        target: t.name.clone(),
        side: side.into(),
        message,
    }
}

/// What the actuators get for one target (`reconcile`, and each `watch` cycle or event).
#[allow(clippy::too_many_arguments)]
pub fn act_context<'a>(
    t: &'a Target,
    mode: Mode,
    partial: bool,
    checked: usize,
    desired: &'a act::DesiredObjects,
    dry_run: bool,
    cfg: &'a Config,
    (prs, audit): (&'a act::pull_request::Session, &'a crate::audit::AuditLog),
) -> act::ActContext<'a> {
    act::ActContext {
        target: t,
        mode,
        partial,
        dry_run,
        state_dir: &cfg.state_dir,
        desired,
        checked,
        pull_requests: Some(prs),
        audit,
        only: None,
        handoff: None,
    }
}

/// Decides every drift's action under the context's mode, records what was seen and decided in
/// the audit log, then runs the actuators and records the outcomes. `reconcile` and `watch`
/// both act through this function.
///
/// - drift, verdict and decision records are written (one flushed batch) before anything acts;
///   when they cannot be, nothing is acted on for the target (every planned action is skipped)
///   and the failure is returned as an error: acting without a record is not allowed;
/// - a correction whose rule the revert breaker stopped on this target
///   ([`crate::audit::AuditLog::breaker`]) is escalated to a pull request or issue that says
///   why;
/// - after the actuators, each drift's outcome and the target's totals are recorded.
pub async fn decide_and_act(actx: &act::ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    decide_stage(drifts, actx.mode);
    act_stage(actx, drifts).await
}

/// The decide stage: every drift's action under `mode`, before any actuator runs.
pub fn decide_stage(drifts: &mut [Drift], mode: Mode) {
    for d in drifts.iter_mut() {
        d.action = Some(act::decide(d, mode));
    }
}

/// The act stage over decided drifts (what [`decide_and_act`] does after deciding; `watch`
/// holds corrections back for its rolling window in between): the audit records of what was
/// seen and decided, the revert breaker, the actuators ([`act::act`]), the outcomes' records.
pub async fn act_stage(actx: &act::ActContext<'_>, drifts: &mut [Drift]) -> Vec<SourceError> {
    let audit = actx.audit;
    let mut events = Vec::new();
    for d in drifts.iter() {
        events.extend(audit.drift_events(d, actx.mode));
    }
    if let Err(e) = audit.write(events) {
        return hold_everything(actx, drifts, &e);
    }
    audit.note_reverts();
    for d in drifts.iter_mut() {
        if !act::guardrails::is_planned_correction(d) {
            continue;
        }
        if let Some(reason) = audit.breaker(d) {
            act::guardrails::escalate(d, actx, &reason);
        }
    }
    let mut errors = act::act(actx, drifts).await;
    let mut events: Vec<crate::audit::Event> = drifts
        .iter()
        .filter_map(crate::audit::outcome_event)
        .collect();
    events.push(crate::audit::Event::TargetChecked {
        target: actx.target.name.clone(),
        checked: actx.checked,
        drifted: drifts.len(),
        partial: actx.partial,
        items_listed: Some(audit.take_items_listed(&actx.target.name)),
    });
    if let Err(e) = audit.write(events) {
        errors.push(audit_error(actx, &e));
    }
    errors
}

/// The audit log cannot be written: every action still planned for the target is skipped, and
/// the failure is the run's error.
fn hold_everything(
    actx: &act::ActContext<'_>,
    drifts: &mut [Drift],
    e: &crate::audit::AuditError,
) -> Vec<SourceError> {
    let msg = error_chain(e);
    for d in drifts.iter_mut() {
        let planned = d.action.as_ref().is_some_and(|a| {
            a.result == crate::model::ActionResult::Planned
                && a.action != crate::model::Action::Report
        });
        if planned {
            act::guardrails::skip(
                d,
                "audit log unavailable",
                format!(
                    "not acted on: the audit log cannot be written ({msg}), and no action is taken without a record"
                ),
            );
        }
    }
    vec![audit_error(actx, e)]
}

fn audit_error(actx: &act::ActContext<'_>, e: &crate::audit::AuditError) -> SourceError {
    SourceError {
        target: actx.target.name.clone(),
        side: "audit".to_string(),
        message: format!("{}; nothing is acted on without a record", error_chain(e)),
    }
}

/// What one target's diff stage found.
#[derive(Debug, Default)]
pub struct Compared {
    pub drifts: Vec<Drift>,
    /// Resources compared (the base of the blast-radius percentage).
    pub checked: usize,
    /// Fields dropped by each ignore rule.
    pub ignored: BTreeMap<String, usize>,
    /// What the report should say about objects left uncompared.
    pub errors: Vec<SourceError>,
}

/// The diff stage of one Kubernetes target: its desired set against the live objects, ids and
/// duplicate detection, then the `Missing` drifts of unread scopes dropped (their absence was
/// never observed) with a report error saying so. `reconcile` runs it over a whole target;
/// `watch` over a whole target per cycle and over the objects an event showed.
pub fn diff_stage(
    t: &Target,
    desired_set: &desired::DesiredSet,
    live_objects: &[RawObject],
    unread: &[live::kube::UnreadScope],
    strict: bool,
) -> Result<Compared, Error> {
    let dopts = diff_options(t, strict);
    let finished = compare::compare_all(compare_at(t), desired_set, live_objects, &dopts)
        .map_err(duplicate_error)?;
    Ok(settle_unread(t, finished.outcome, unread))
}

/// A target's diff options: its ignore rules, tracking and strictness.
pub(crate) fn diff_options(t: &Target, strict: bool) -> DiffOptions {
    let mut dopts = DiffOptions::new(&t.name);
    dopts.ignore = t.ignore.clone();
    dopts.tracking = t.tracking.clone();
    dopts.unmanaged_namespaces = t.unmanaged_namespaces.clone();
    dopts.strict = strict;
    dopts
}

pub(crate) fn compare_at(t: &Target) -> compare::Where<'_> {
    compare::Where {
        target: &t.name,
        cluster: &t.cluster,
        default_namespace: &t.namespace,
    }
}

pub(crate) fn duplicate_error(e: CompareError) -> Error {
    let CompareError::Duplicate {
        target,
        id,
        first,
        second,
    } = e;
    Error::Duplicate {
        target,
        id,
        first,
        second,
    }
}

/// The `Missing` drifts of unread scopes dropped (their absence was never observed), with a
/// report error saying so.
pub(crate) fn settle_unread(
    t: &Target,
    mut outcome: crate::diff::DiffOutcome,
    unread: &[live::kube::UnreadScope],
) -> Compared {
    let mut errors = Vec::new();
    // A scope whose LIST (or watch) failed was never observed: its objects are not Missing.
    let unobserved = live::kube::drop_unread_missing(&mut outcome.drifts, unread);
    if !unobserved.is_empty() {
        outcome.checked = outcome.checked.saturating_sub(unobserved.len());
        errors.push(source_error(
            t,
            "live",
            format!(
                "{} desired object(s) were not compared because their LIST failed (no Missing drift reported, nothing pruned): {}",
                unobserved.len(),
                unobserved.join(", ")
            ),
        ));
    }
    Compared {
        drifts: outcome.drifts,
        checked: outcome.checked,
        ignored: outcome.ignored,
        errors,
    }
}

/// The classify stage of one target: every drift's verdict from the policies (`related`: facts
/// about the target's other objects).
pub fn classify_stage(
    engine: Option<&PolicyEngine>,
    target: &str,
    drifts: &mut [Drift],
    mode: Mode,
    command: Command,
    related: policy::Related,
) -> Result<(), Error> {
    classify(engine, drifts, mode, command, (target, related))
}

/// The desired objects of a Kubernetes target unmasked, by resource key: what a correction
/// applies.
pub fn desired_objects(
    t: &Target,
    desired_set: &desired::DesiredSet,
    live_objects: &[RawObject],
) -> act::DesiredObjects {
    act::DesiredObjects(desired_by_key(
        &t.cluster,
        &t.namespace,
        desired_set,
        live_objects,
    ))
}

/// `diff --plan PLAN.json`: the drift Terraform found in one plan file (`resource_drift`), no
/// config. `relevant_only` keeps only attributes the configuration depends on.
pub fn diff_plan(
    plan_path: &Path,
    policies: Option<&crate::config::PolicySettings>,
    relevant_only: bool,
) -> Result<Report, Error> {
    let target = "plan";
    let plan = crate::terraform::plan::load(plan_path).map_err(|e| Error::Terraform {
        target: target.into(),
        source: e.into(),
    })?;
    let engine = match policies {
        Some(p) => load_policies(p, true)?,
        None => None,
    };
    let mut drifts = crate::terraform::plan::plan_drifts(
        &plan,
        target,
        "default",
        &crate::terraform::plan::DriftOptions { relevant_only },
    );
    let managed = plan
        .changes
        .iter()
        .filter(|c| c.mode == crate::terraform::plan::ResourceMode::Managed && c.deposed.is_none())
        .count();
    classify(
        engine.as_ref(),
        &mut drifts,
        Mode::Observe,
        Command::Diff,
        (target, policy::Related::default()),
    )?;
    Ok(Report::new(
        "diff",
        1,
        managed.max(drifts.len()),
        BTreeMap::new(),
        drifts,
        Vec::new(),
    ))
}

fn classify(
    engine: Option<&PolicyEngine>,
    drifts: &mut [Drift],
    mode: Mode,
    command: Command,
    related: (&str, policy::Related),
) -> Result<(), Error> {
    let Some(engine) = engine else {
        return Ok(());
    };
    let mut ctx = RunContext {
        mode,
        time: now_rfc3339(),
        command: command.name().to_string(),
        ..RunContext::default()
    };
    ctx.related.insert(related.0.to_string(), related.1);
    // Classification is CPU-bound and linear in cores (docs/performance.md); a large target's
    // drifts are spread over them, with the same verdicts as one thread.
    let threads = if drifts.len() >= PARALLEL_CLASSIFY_MIN {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    tracing::debug!(
        target = related.0,
        drifts = drifts.len(),
        threads,
        "classifying the drifts"
    );
    engine
        .classify_parallel(drifts, &ctx, threads)
        .map_err(Error::Policy)
}

/// Below this many drifts a target is classified on one thread: starting threads costs more.
const PARALLEL_CLASSIFY_MIN: usize = 256;

/// The desired objects as Git has them (secret values unmasked), by resource key, for the
/// actuators that apply them. Never logged or reported.
fn desired_by_key(
    cluster: &str,
    default_namespace: &str,
    desired_set: &desired::DesiredSet,
    live_objects: &[RawObject],
) -> HashMap<String, serde_json::Value> {
    let mut scopes = Scopes::default();
    scopes.learn(desired_set.objects.iter().map(|o| &o.value), false);
    scopes.learn(live_objects.iter().map(|o| &o.value), true);
    desired_set
        .objects
        .iter()
        .map(|raw| {
            let id = k8s::resource_id(cluster, &raw.value, default_namespace, &scopes);
            (id.key(), raw.value.clone())
        })
        .collect()
}

/// A Kubernetes namespace name: an RFC 1123 label (1–63 characters of `a-z`, `0-9` and `-`,
/// starting and ending with a letter or digit).
fn is_namespace_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// The live objects as read (secret values unmasked), by resource key, for the audit log's
/// digests of masked values (`watch` notes them too). Never logged or reported.
pub fn live_by_key(
    cluster: &str,
    default_namespace: &str,
    desired_set: &desired::DesiredSet,
    live_objects: &[RawObject],
) -> HashMap<String, serde_json::Value> {
    let mut scopes = Scopes::default();
    scopes.learn(desired_set.objects.iter().map(|o| &o.value), false);
    scopes.learn(live_objects.iter().map(|o| &o.value), true);
    live_objects
        .iter()
        .map(|raw| {
            let id = k8s::resource_id(cluster, &raw.value, default_namespace, &scopes);
            (id.key(), raw.value.clone())
        })
        .collect()
}

/// `diff --desired PATH --live PATH`: two local files or directories, no config. Namespaced
/// manifests that name no namespace are placed in `namespace` (`-n`, like kubectl's; `default`
/// when `None`), which must be a valid namespace name (RFC 1123 label).
pub fn diff_paths(
    desired_path: &Path,
    live_path: &Path,
    namespace: Option<&str>,
    strict: bool,
    policies: Option<&crate::config::PolicySettings>,
) -> Result<Report, Error> {
    let target = "local";
    let namespace = namespace.unwrap_or("default");
    if !is_namespace_name(namespace) {
        return Err(Error::Usage(format!(
            "--namespace {namespace:?} is not a valid namespace name: expected at most 63 \
             lowercase letters, digits and '-', starting and ending with a letter or digit"
        )));
    }
    let mut dopts = DiffOptions::new(target);
    dopts.strict = strict;
    let at = compare::Where {
        target,
        cluster: target,
        default_namespace: namespace,
    };
    let desired_error = |source: DesiredError| Error::Desired {
        target: target.into(),
        source,
    };
    // Desired objects go into the compare as each file is parsed (kept compact there); then
    // each live object is compared as it is parsed, and dropped unless it drifted.
    let mut c = if desired_path.is_file() {
        let bytes = std::fs::read(desired_path).map_err(|e| {
            desired_error(DesiredError::Io {
                path: desired_path.display().to_string(),
                source: e,
            })
        })?;
        let file = desired_path.display().to_string();
        let objects = desired::manifests::parse_file(&file, &bytes, false)
            .map_err(|e| desired_error(e.into()))?;
        drop(bytes);
        let mut c = Compare::start(at, file, None, &dopts);
        for o in objects {
            c.desired(o);
        }
        c
    } else {
        let src = crate::config::DesiredSource {
            location: crate::config::DesiredLocation::Dir(desired_path.to_path_buf()),
            path: String::new(),
            include: vec!["**/*.yaml".into(), "**/*.yml".into(), "**/*.json".into()],
            exclude: Vec::new(),
            render: None,
        };
        let files = desired::read(&src, &default_cache_dir()).map_err(desired_error)?;
        let (source, commit) = (files.source.clone(), files.commit.clone());
        let mut c = Compare::start(at, source, commit, &dopts);
        files
            .parse_each(&mut |o| c.desired(o))
            .map_err(desired_error)?;
        c
    };
    live::for_each_snapshot_object(live_path, &mut |o| c.live(o)).map_err(|e| Error::Live {
        target: target.into(),
        source: e,
    })?;
    let engine = match policies {
        Some(p) => load_policies(p, true)?,
        None => None,
    };
    let finished = c.finish().map_err(duplicate_error)?;
    let outcome = finished.outcome;
    let mut drifts = outcome.drifts;
    classify(
        engine.as_ref(),
        &mut drifts,
        Mode::Observe,
        Command::Diff,
        (target, finished.related),
    )?;
    Ok(Report::new(
        "diff",
        1,
        outcome.checked,
        outcome.ignored,
        drifts,
        Vec::new(),
    ))
}

/// The exit code for a finished report: 2 when drift was found, 1 when a source failed, else 0.
pub fn report_exit_code(report: &Report) -> u8 {
    if !report.errors.is_empty() {
        1
    } else if report.summary.drifted > 0 {
        2
    } else {
        0
    }
}

/// The current UTC time as RFC 3339, without a date crate.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_779), (2026, 11, 22));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
