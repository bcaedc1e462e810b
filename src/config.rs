//! The config file (`driftwarden.yaml`), parsed in two stages.
//!
//! Stage one parses YAML into a positioned node tree ([`crate::yaml`]); stage two walks it into
//! the typed [`Config`], collecting every problem (unknown key, wrong type, missing field, bad
//! value) with its line and column instead of stopping at the first. Nothing here touches the
//! network or the targets; relative paths are resolved against the config file's directory.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::diff::{IgnoreRule, Tracking};
use crate::model::Mode;
use crate::yaml::{self, Node, NodeKind};

/// The config the offline demo runs with when no `--config` is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../fixtures/demo/driftwarden.yaml");

/// Name shown for the embedded default in messages.
pub const EMBEDDED_NAME: &str = "<embedded default: fixtures/demo/driftwarden.yaml>";

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Every problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub issues: Vec<Issue>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.issues.len();
        write!(
            f,
            "invalid config {}: {n} problem{}",
            self.file,
            if n == 1 { "" } else { "s" }
        )?;
        for i in &self.issues {
            write!(f, "\n  {}:{}:{}: {}", self.file, i.line, i.col, i.message)?;
        }
        Ok(())
    }
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: String,
    pub policies: PolicySettings,
    pub output: OutputSettings,
    /// Where run history (remediation counts) is kept.
    pub state_dir: PathBuf,
    /// How long a run waits for another run's lock on `state_dir` (`state_lock_timeout`).
    pub state_lock_timeout: Duration,
    pub targets: Vec<Target>,
    /// Where pull requests and issues go (`pull_requests`); none: actions stay planned.
    pub pull_requests: Option<PullRequestSettings>,
    /// Webhook receivers told about corrections, escalations and runs (`notify`); none: nobody.
    pub notify: Option<NotifySettings>,
    /// `driftwarden watch` settings (`watch`); the defaults when the section is absent.
    pub watch: WatchSettings,
    /// The audit log (`audit`, docs/audit.md).
    pub audit: AuditSettings,
    /// The breakers on reverted and failing corrections (`trust`).
    pub trust: TrustSettings,
}

/// `driftwarden watch` (docs/config.md, `watch`): how often each source is looked at, the HTTP
/// listener, leader election, the webhook and the guardrail over time.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSettings {
    /// A full LIST-based cycle per target this often, whatever the watches say.
    pub resync_interval: Duration,
    /// Events on one object within this time are handled once.
    pub debounce: Duration,
    /// Each Git target's ref is looked at this often.
    pub git_poll_interval: Duration,
    /// Terraform/EC2 targets run a full cycle this often.
    pub ec2_poll_interval: Duration,
    /// Where `/metrics`, `/healthz`, `/readyz` and `/hooks/github` are served.
    pub listen: std::net::SocketAddr,
    /// A Lease decides which replica acts; `None`: this process acts alone.
    pub leader_election: Option<LeaderElection>,
    /// `POST /hooks/github` push events; `None`: the endpoint answers 404.
    pub webhook: Option<WebhookSettings>,
    /// At most this many corrections per target within `window`; `None`: the target's per-run
    /// limit (`guardrails.max_corrections`, `max_correction_percent`).
    pub max_corrections_per_window: Option<usize>,
    /// The rolling window of `max_corrections_per_window`.
    pub window: Duration,
    /// Config line of the section (0 when absent), for messages.
    pub line: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            resync_interval: Duration::from_secs(600),
            debounce: Duration::from_millis(500),
            git_poll_interval: Duration::from_secs(60),
            ec2_poll_interval: Duration::from_secs(300),
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], 8080)),
            leader_election: None,
            webhook: None,
            max_corrections_per_window: None,
            window: Duration::from_secs(600),
            line: 0,
        }
    }
}

/// `watch.leader_election`: a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaderElection {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The holder stops acting when it could not renew for this long (below `lease_duration`).
    pub renew_deadline: Duration,
    /// How often a replica tries to acquire or renew.
    pub retry_period: Duration,
    /// The target whose `live.kubernetes` connection holds the Lease; default the first
    /// Kubernetes target.
    pub target: Option<String>,
}

impl Default for LeaderElection {
    fn default() -> Self {
        LeaderElection {
            name: "driftwarden".to_string(),
            namespace: "driftwarden".to_string(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            target: None,
        }
    }
}

/// `watch.webhook`: GitHub push events.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// The environment variable holding the webhook secret (HMAC-SHA256 key); never the value.
    pub secret_env: String,
}

/// The audit log (docs/config.md, `audit`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSettings {
    /// Days a day file is kept; older files are removed when the log opens.
    pub retention_days: u32,
    /// The directory of the day files; default `<state_dir>/audit`.
    pub dir: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            retention_days: 90,
            dir: None,
        }
    }
}

impl AuditSettings {
    /// The directory the day files live in.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| state_dir.join("audit"))
    }
}

/// When corrections stop being trusted (docs/config.md, `trust`).
#[derive(Debug, Clone, PartialEq)]
pub struct TrustSettings {
    /// Reverted corrections of one rule on one target, within the window, that stop the rule
    /// correcting there (its drift is escalated to a pull request instead).
    pub max_reverts: u32,
    /// The window the reverts are counted in, in hours.
    pub revert_window_hours: u32,
    /// Consecutive failed corrections on a target that stop its corrections for the run.
    pub max_consecutive_failures: u32,
}

impl Default for TrustSettings {
    fn default() -> Self {
        TrustSettings {
            max_reverts: 2,
            revert_window_hours: 24,
            max_consecutive_failures: 3,
        }
    }
}

/// Where policies come from.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub dirs: Vec<PolicyDirSetting>,
    pub data: Vec<PathBuf>,
    /// `engine: interpreter`: classify with regorus' tree interpreter only, never the compiled
    /// program (docs/policy.md, "Engine"). `compiled` (the default) is false.
    pub interpreter: bool,
    /// `strict_builtins: true`: a builtin error stops the run (exit 3) instead of reading as
    /// undefined, OPA's default (docs/policy.md, "Differences from OPA").
    pub strict_builtins: bool,
}

/// One policy directory.
#[derive(Debug, Clone)]
pub struct PolicyDirSetting {
    pub path: PathBuf,
    pub rego_v0: bool,
}

/// Report output settings; command-line flags override them.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    pub format: String,
    pub file: Option<PathBuf>,
    pub color: ColorChoice,
    pub show_diff: bool,
}

/// When to colour human output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// One thing to reconcile: a desired source and a live source.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub mode: Mode,
    /// Cluster name used in resource ids and fingerprints.
    pub cluster: String,
    /// Namespace given to namespaced objects that name none.
    pub namespace: String,
    pub desired: DesiredSource,
    pub live: LiveSource,
    pub tracking: Option<Tracking>,
    pub unmanaged_namespaces: Vec<String>,
    pub ignore: Vec<IgnoreRule>,
    pub strict: bool,
    /// Limits on what the actuators may do for this target.
    pub guardrails: Guardrails,
    /// Config line of the target, for messages.
    pub line: usize,
    /// Set when the desired source is Terraform (`desired.terraform`); `desired` then only
    /// records where the files are read from.
    pub terraform: Option<TerraformSource>,
}

/// Limits on corrections (ARCHITECTURE.md, promise 3: bounded blast radius).
#[derive(Debug, Clone, PartialEq)]
pub struct Guardrails {
    /// Take fields other field managers own when correcting (server-side apply `force=true`),
    /// which is what a hand edit requires. `false` escalates such conflicts instead.
    pub force: bool,
    /// Delete Unmanaged objects (only after a complete read).
    pub prune: bool,
    /// At most this many corrections per run for the target.
    pub max_corrections: Option<usize>,
    /// At most this share (percent) of the target's resources corrected per run.
    pub max_correction_percent: f64,
    /// The same remediation on the same resource at most this often per hour.
    pub max_remediations_per_hour: u32,
    /// Following a corrected workload's rollout, and rolling back a correction that made it
    /// worse (`health_gate`).
    pub health_gate: HealthGate,
}

/// `guardrails.health_gate`: after correcting a Deployment, StatefulSet or DaemonSet, follow its
/// rollout and roll the correction back when the workload ends worse than before
/// (src/act/health.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthGate {
    pub enabled: bool,
    /// How long a rollout is followed.
    pub timeout: Duration,
    /// How often the workload is read while it is followed.
    pub interval: Duration,
}

impl Default for HealthGate {
    fn default() -> Self {
        HealthGate {
            enabled: true,
            timeout: Duration::from_secs(120),
            interval: Duration::from_secs(5),
        }
    }
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            force: true,
            prune: false,
            max_corrections: None,
            max_correction_percent: 25.0,
            max_remediations_per_hour: 3,
            health_gate: HealthGate::default(),
        }
    }
}

/// Where desired manifests come from.
#[derive(Debug, Clone)]
pub struct DesiredSource {
    pub location: DesiredLocation,
    /// Subdirectory inside the repository or directory.
    pub path: String,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub render: Option<Render>,
}

/// A Git repository or a plain directory.
#[derive(Debug, Clone)]
pub enum DesiredLocation {
    Git(GitSource),
    Dir(PathBuf),
}

/// A Git repository read at a ref, never checked out.
#[derive(Debug, Clone)]
pub struct GitSource {
    /// A local path or a URL (`https://`, `ssh://`, `git@host:path`, `file://`).
    pub repo: String,
    /// Branch, tag or commit; default `HEAD`.
    pub reference: String,
    /// Environment variable holding an HTTPS token.
    pub token_env: Option<String>,
    /// SSH private key file; otherwise the SSH agent is asked.
    pub ssh_key: Option<PathBuf>,
}

/// Renderers run over the desired tree (like Argo CD does).
#[derive(Debug, Clone)]
pub enum Render {
    Helm {
        release: String,
        values: Vec<String>,
        namespace: Option<String>,
    },
    Kustomize,
}

/// Where live objects come from.
#[derive(Debug, Clone)]
pub enum LiveSource {
    /// A directory of `kubectl get -o yaml|json` files.
    Snapshot(PathBuf),
    /// A live cluster, read with LIST requests (`live.kubernetes`).
    Kubernetes(KubeSource),
    /// AWS EC2, read with Describe calls (`live.ec2`), for Terraform targets.
    Ec2(Ec2Source),
    /// No live read: a Terraform target with only a plan, whose refresh saw live.
    TerraformPlan,
}

/// Terraform as the desired source (docs/config.md, `desired.terraform`).
#[derive(Debug, Clone)]
pub struct TerraformSource {
    /// State files (format version 4): repository-relative paths when `git` is set, else local
    /// paths resolved against the config's directory.
    pub states: Vec<String>,
    /// A plan as `terraform show -json PLANFILE` prints it, read like the states.
    pub plan: Option<String>,
    /// The workspace name in resource ids and fingerprints; default `default`.
    pub workspace: String,
    /// Read the files from this repository at its ref instead of the local disk.
    pub git: Option<GitSource>,
    /// Keep only plan drift in attributes the configuration depends on (`relevant_attributes`).
    pub relevant_attributes_only: bool,
}

/// How to reach and read AWS EC2 (docs/config.md, `live.ec2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Ec2Source {
    /// Regions to read; empty = the standard chain's region (AWS_REGION, the profile).
    pub regions: Vec<String>,
    /// A named profile of the shared config files; default the standard credential chain.
    pub profile: Option<String>,
    /// An endpoint URL overriding AWS's (a VPC endpoint, or moto in tests).
    pub endpoint: Option<String>,
    /// The AWS provider's `default_tags`: live resources carry them, state `tags` do not.
    pub default_tags: std::collections::BTreeMap<String, String>,
    /// Report live resources that are in no state as Unmanaged; default true.
    pub unmanaged: bool,
    /// Ignore patterns (`.driftignore` syntax): `TYPE.ID` or state addresses, globs, `!` negates.
    pub ignore: Vec<String>,
    /// A `.driftignore`-style file of more patterns (local path).
    pub driftignore: Option<PathBuf>,
    /// Attempts per request, the first included (adaptive retry on throttling).
    pub max_attempts: u32,
}

impl Default for Ec2Source {
    fn default() -> Self {
        Ec2Source {
            regions: Vec::new(),
            profile: None,
            endpoint: None,
            default_tags: std::collections::BTreeMap::new(),
            unmanaged: true,
            ignore: Vec::new(),
            driftignore: None,
            max_attempts: 5,
        }
    }
}

/// How to reach and read a Kubernetes cluster (docs/config.md, `live.kubernetes`).
#[derive(Debug, Clone, PartialEq)]
pub struct KubeSource {
    /// The kubeconfig file; default `$KUBECONFIG` or `~/.kube/config`, else in-cluster config.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; default the file's current context.
    pub context: Option<String>,
    /// Use the pod's service account (in-cluster config) and no kubeconfig.
    pub in_cluster: bool,
    /// Items per LIST page (`limit`).
    pub page_size: u32,
    /// LIST requests in flight at once.
    pub concurrency: usize,
    /// Time allowed for one request, response body included.
    pub timeout: std::time::Duration,
    /// Attempts per request, the first included (retries on 429, 5xx, timeouts, broken
    /// connections).
    pub max_attempts: u32,
    /// The first retry delay; it doubles per attempt, with jitter, up to 10 seconds.
    pub backoff: std::time::Duration,
}

impl Default for KubeSource {
    fn default() -> Self {
        KubeSource {
            kubeconfig: None,
            context: None,
            in_cluster: false,
            page_size: 500,
            concurrency: 8,
            timeout: std::time::Duration::from_secs(30),
            max_attempts: 4,
            backoff: std::time::Duration::from_millis(250),
        }
    }
}

struct Walker {
    issues: Vec<Issue>,
}

impl Walker {
    fn err(&mut self, n: &Node, msg: impl Into<String>) {
        self.issues.push(Issue {
            line: n.line,
            col: n.col,
            message: msg.into(),
        });
    }

    /// Checks `n` is a mapping with only `allowed` keys; returns its entries.
    fn map<'a>(&mut self, n: &'a Node, what: &str, allowed: &[&str]) -> Vec<(String, &'a Node)> {
        let Some(entries) = n.entries() else {
            self.err(
                n,
                format!("{what}: expected a mapping, found {}", n.type_name()),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let key = yaml::key_string(k);
            if !allowed.contains(&key.as_str()) {
                let hint = closest(&key, allowed)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                self.err(
                    k,
                    format!(
                        "{what}: unknown key `{key}`{hint}; expected one of: {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            out.push((key, v));
        }
        out
    }

    fn string(&mut self, n: &Node, what: &str) -> Option<String> {
        match &n.kind {
            NodeKind::Scalar(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            NodeKind::Scalar(Value::String(_)) => {
                self.err(n, format!("{what}: must not be empty"));
                None
            }
            NodeKind::Scalar(Value::Number(x)) => Some(x.to_string()),
            _ => {
                self.err(
                    n,
                    format!("{what}: expected a string, found {}", n.type_name()),
                );
                None
            }
        }
    }

    fn boolean(&mut self, n: &Node, what: &str) -> Option<bool> {
        match &n.kind {
            NodeKind::Scalar(Value::Bool(b)) => Some(*b),
            _ => {
                self.err(
                    n,
                    format!("{what}: expected true or false, found {}", n.type_name()),
                );
                None
            }
        }
    }

    fn strings(&mut self, n: &Node, what: &str) -> Vec<String> {
        match &n.kind {
            NodeKind::Seq(items) => items.iter().filter_map(|i| self.string(i, what)).collect(),
            NodeKind::Scalar(Value::String(_)) => self.string(n, what).into_iter().collect(),
            _ => {
                self.err(
                    n,
                    format!(
                        "{what}: expected a list of strings, found {}",
                        n.type_name()
                    ),
                );
                Vec::new()
            }
        }
    }

    /// The name of an environment variable (letters, digits, `_`; not starting with a digit).
    fn env_name(&mut self, n: &Node, what: &str) -> Option<String> {
        let s = self.string(n, what)?;
        let valid = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit());
        if valid {
            Some(s)
        } else {
            self.err(
                n,
                format!("{what}: `{s}` is not an environment variable name"),
            );
            None
        }
    }

    fn one_of(&mut self, n: &Node, what: &str, allowed: &[&str]) -> Option<String> {
        let s = self.string(n, what)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            self.err(
                n,
                format!("{what}: `{s}` is not one of: {}", allowed.join(", ")),
            );
            None
        }
    }
}

/// The allowed key closest to a misspelled one, when close enough to suggest.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min()
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        issues: vec![Issue {
            line: 0,
            col: 0,
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    parse(&text, &name, &base)
}

/// The embedded default config (the offline demo), paths relative to the working directory.
pub fn embedded_default() -> Result<Config, ConfigError> {
    parse(EMBEDDED_DEFAULT, EMBEDDED_NAME, Path::new("fixtures/demo"))
}

/// Parses config text; `base` resolves relative paths.
pub fn parse(text: &str, name: &str, base: &Path) -> Result<Config, ConfigError> {
    let doc = yaml::parse_single(text).map_err(|e| ConfigError {
        file: name.to_string(),
        issues: vec![Issue {
            line: e.line,
            col: e.col,
            message: format!("not valid YAML: {}", e.message),
        }],
    })?;
    let mut w = Walker { issues: Vec::new() };
    let cfg = walk_root(&mut w, &doc.root, name, base);
    if w.issues.is_empty() {
        Ok(cfg)
    } else {
        w.issues.sort_by_key(|i| (i.line, i.col));
        Err(ConfigError {
            file: name.to_string(),
            issues: w.issues,
        })
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn walk_root(w: &mut Walker, root: &Node, name: &str, base: &Path) -> Config {
    let mut cfg = Config {
        source: name.to_string(),
        policies: PolicySettings {
            dirs: vec![PolicyDirSetting {
                path: PathBuf::from("policies"),
                rego_v0: false,
            }],
            data: Vec::new(),
            interpreter: false,
            strict_builtins: false,
        },
        output: OutputSettings {
            format: "table".to_string(),
            file: None,
            color: ColorChoice::Auto,
            show_diff: true,
        },
        state_dir: PathBuf::from(".driftwarden"),
        state_lock_timeout: Duration::from_secs(60),
        targets: Vec::new(),
        pull_requests: None,
        watch: WatchSettings::default(),
        audit: AuditSettings::default(),
        trust: TrustSettings::default(),
        notify: None,
    };
    let mut global_ignore = Vec::new();
    let mut targets_node = None;
    let mut watch_node = None;
    for (k, v) in w.map(
        root,
        "config",
        &[
            "version",
            "policies",
            "output",
            "ignore",
            "state_dir",
            "state_lock_timeout",
            "targets",
            "pull_requests",
            "watch",
            "audit",
            "trust",
            "notify",
        ],
    ) {
        match k.as_str() {
            "version" if !matches!(&v.kind, NodeKind::Scalar(Value::Number(n)) if n.as_u64() == Some(1)) =>
            {
                w.err(v, "version: only version 1 is supported");
            }
            "policies" => cfg.policies = walk_policies(w, v, base),
            "output" => cfg.output = walk_output(w, v, base, cfg.output.clone()),
            "ignore" => global_ignore = walk_ignores(w, v, "ignore"),
            "state_dir" => {
                if let Some(p) = w.string(v, "state_dir") {
                    cfg.state_dir = resolve(base, &p);
                }
            }
            "state_lock_timeout" => {
                if let Some(d) = w.duration(
                    v,
                    "state_lock_timeout",
                    Duration::ZERO,
                    Duration::from_secs(24 * 3600),
                ) {
                    cfg.state_lock_timeout = d;
                }
            }
            "targets" => targets_node = Some(v),
            "pull_requests" => cfg.pull_requests = walk_pull_requests(w, v, base),
            "watch" => watch_node = Some(v),
            "audit" => cfg.audit = walk_audit(w, v, base),
            "trust" => cfg.trust = walk_trust(w, v),
            "notify" => cfg.notify = walk_notify(w, v),
            _ => {}
        }
    }
    match targets_node {
        None => w.err(root, "config: `targets` is required (a list of targets)"),
        Some(t) => match &t.kind {
            NodeKind::Seq(items) if !items.is_empty() => {
                let mut seen = BTreeSet::new();
                for item in items {
                    if let Some(mut target) = walk_target(w, item, base) {
                        if !seen.insert(target.name.clone()) {
                            w.err(
                                item,
                                format!("targets: duplicate target name `{}`", target.name),
                            );
                        }
                        let mut rules = global_ignore.clone();
                        rules.append(&mut target.ignore);
                        target.ignore = rules;
                        cfg.targets.push(target);
                    }
                }
            }
            _ => w.err(t, "targets: expected a non-empty list of targets"),
        },
    }
    if let Some(v) = watch_node {
        cfg.watch = walk_watch(w, v, &cfg.targets);
    }
    cfg
}

/// A duration as the `watch` section writes it: one or more `<whole number><unit>` groups,
/// units `ms`, `s`, `m`, `h` (`500ms`, `60s`, `10m`, `1h30m`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

impl Walker {
    /// A duration (see [`parse_duration`]) from `min` to `max`.
    fn duration(&mut self, n: &Node, what: &str, min: Duration, max: Duration) -> Option<Duration> {
        let text = match &n.kind {
            NodeKind::Scalar(Value::String(s)) => s.clone(),
            _ => {
                self.err(
                    n,
                    format!(
                        "{what}: expected a duration like `500ms`, `60s` or `10m`, found {}",
                        n.type_name()
                    ),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Some(d) if d >= min && d <= max => Some(d),
            Some(_) => {
                self.err(
                    n,
                    format!(
                        "{what}: `{text}` is out of range ({} to {})",
                        show_duration(min),
                        show_duration(max)
                    ),
                );
                None
            }
            None => {
                self.err(
                    n,
                    format!(
                        "{what}: `{text}` is not a duration; expected a whole number and a unit (ms, s, m, h), like `500ms`, `60s` or `10m`"
                    ),
                );
                None
            }
        }
    }
}

/// A duration as the config writes it, for messages.
fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `watch`: the long-running mode's settings.
fn walk_watch(w: &mut Walker, n: &Node, targets: &[Target]) -> WatchSettings {
    let mut out = WatchSettings {
        line: n.line,
        ..WatchSettings::default()
    };
    if matches!(&n.kind, NodeKind::Scalar(Value::Null)) {
        return out;
    }
    let what = "watch";
    let secs = Duration::from_secs;
    for (k, v) in w.map(
        n,
        what,
        &[
            "resync_interval",
            "debounce",
            "git_poll_interval",
            "ec2_poll_interval",
            "listen",
            "leader_election",
            "webhook",
            "max_corrections_per_window",
            "window",
        ],
    ) {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "resync_interval" => {
                if let Some(d) = w.duration(v, &field, secs(10), secs(7 * 24 * 3600)) {
                    out.resync_interval = d;
                }
            }
            "debounce" => {
                if let Some(d) = w.duration(v, &field, Duration::ZERO, secs(60)) {
                    out.debounce = d;
                }
            }
            "git_poll_interval" => {
                if let Some(d) = w.duration(v, &field, secs(1), secs(24 * 3600)) {
                    out.git_poll_interval = d;
                }
            }
            "ec2_poll_interval" => {
                if let Some(d) = w.duration(v, &field, secs(10), secs(24 * 3600)) {
                    out.ec2_poll_interval = d;
                }
            }
            "window" => {
                if let Some(d) = w.duration(v, &field, secs(1), secs(24 * 3600)) {
                    out.window = d;
                }
            }
            "listen" => {
                if let Some(s) = w.string(v, &field) {
                    match s.parse::<std::net::SocketAddr>() {
                        Ok(a) => out.listen = a,
                        Err(_) => w.err(
                            v,
                            format!("{field}: `{s}` is not an address and port like `0.0.0.0:8080` or `[::]:8080`"),
                        ),
                    }
                }
            }
            "max_corrections_per_window" => match &v.kind {
                NodeKind::Scalar(Value::Number(x)) if x.as_u64().is_some() => {
                    out.max_corrections_per_window = x.as_u64().map(|x| x as usize)
                }
                _ => w.err(v, format!("{field}: expected a whole number")),
            },
            "leader_election" => out.leader_election = walk_leader_election(w, v, targets),
            "webhook" => {
                let mut secret_env = None;
                for (k2, v2) in w.map(v, &field, &["secret_env"]) {
                    if k2 == "secret_env" {
                        secret_env = w.string(v2, "watch.webhook.secret_env");
                        if let Some(e) = &secret_env {
                            if !e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                                w.err(v2, format!("watch.webhook.secret_env: `{e}` is not an environment variable name"));
                            }
                        }
                    }
                }
                match secret_env {
                    Some(secret_env) => out.webhook = Some(WebhookSettings { secret_env }),
                    None if !has_key(v, "secret_env") => w.err(
                        v,
                        "watch.webhook: `secret_env` is required (the environment variable holding the secret)",
                    ),
                    None => {}
                }
            }
            _ => {}
        }
    }
    out
}

/// `watch.leader_election`: a mapping (an empty one, `{}`, takes every default).
fn walk_leader_election(w: &mut Walker, n: &Node, targets: &[Target]) -> Option<LeaderElection> {
    let mut out = LeaderElection::default();
    let what = "watch.leader_election";
    let before = w.issues.len();
    if !matches!(&n.kind, NodeKind::Scalar(Value::Null)) {
        let secs = Duration::from_secs;
        for (k, v) in w.map(
            n,
            what,
            &[
                "name",
                "namespace",
                "lease_duration",
                "renew_deadline",
                "retry_period",
                "target",
            ],
        ) {
            let field = format!("{what}.{k}");
            match k.as_str() {
                "name" | "namespace" => {
                    if let Some(s) = w.string(v, &field) {
                        let dns = s.len() <= 253
                            && s.chars().all(|c| {
                                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                            })
                            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                            && s.ends_with(|c: char| c.is_ascii_alphanumeric());
                        if !dns {
                            w.err(v, format!("{field}: `{s}` is not a valid Kubernetes name (lower-case letters, digits, `-` and `.`)"));
                        } else if k == "name" {
                            out.name = s;
                        } else {
                            out.namespace = s;
                        }
                    }
                }
                "lease_duration" => {
                    if let Some(d) = w.duration(v, &field, secs(1), secs(3600)) {
                        if d.subsec_nanos() == 0 {
                            out.lease_duration = d;
                        } else {
                            w.err(v, format!("{field}: must be whole seconds (the Lease's leaseDurationSeconds)"));
                        }
                    }
                }
                "renew_deadline" => {
                    if let Some(d) = w.duration(v, &field, Duration::from_millis(100), secs(3600)) {
                        out.renew_deadline = d;
                    }
                }
                "retry_period" => {
                    if let Some(d) = w.duration(v, &field, Duration::from_millis(100), secs(3600)) {
                        out.retry_period = d;
                    }
                }
                "target" => {
                    if let Some(t) = w.string(v, &field) {
                        match targets.iter().find(|x| x.name == t) {
                            Some(x) if matches!(x.live, LiveSource::Kubernetes(_)) => {
                                out.target = Some(t)
                            }
                            Some(_) => w.err(
                                v,
                                format!("{field}: target `{t}` does not read a cluster (`live.kubernetes`)"),
                            ),
                            None => w.err(v, format!("{field}: no target named `{t}`")),
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if w.issues.len() == before {
        if out.renew_deadline >= out.lease_duration {
            w.err(
                n,
                format!(
                    "{what}: renew_deadline ({}) must be shorter than lease_duration ({}): a holder must stop acting before its Lease can expire",
                    show_duration(out.renew_deadline),
                    show_duration(out.lease_duration)
                ),
            );
        }
        if out.retry_period >= out.renew_deadline {
            w.err(
                n,
                format!(
                    "{what}: retry_period ({}) must be shorter than renew_deadline ({})",
                    show_duration(out.retry_period),
                    show_duration(out.renew_deadline)
                ),
            );
        }
        if out.target.is_none()
            && !targets
                .iter()
                .any(|t| matches!(t.live, LiveSource::Kubernetes(_)))
        {
            w.err(
                n,
                format!(
                    "{what}: the Lease lives in a cluster; no target reads one (`live.kubernetes`)"
                ),
            );
        }
    }
    (w.issues.len() == before).then_some(out)
}

fn walk_policies(w: &mut Walker, n: &Node, base: &Path) -> PolicySettings {
    let mut out = PolicySettings {
        dirs: Vec::new(),
        data: Vec::new(),
        interpreter: false,
        strict_builtins: false,
    };
    for (k, v) in w.map(
        n,
        "policies",
        &["dirs", "data", "engine", "strict_builtins"],
    ) {
        match k.as_str() {
            "dirs" => {
                let NodeKind::Seq(items) = &v.kind else {
                    w.err(v, "policies.dirs: expected a list");
                    continue;
                };
                for item in items {
                    match &item.kind {
                        NodeKind::Map(_) => {
                            let mut path = None;
                            let mut v0 = false;
                            for (k2, v2) in w.map(item, "policies.dirs[]", &["path", "rego_v0"]) {
                                match k2.as_str() {
                                    "path" => path = w.string(v2, "policies.dirs[].path"),
                                    "rego_v0" => {
                                        v0 = w
                                            .boolean(v2, "policies.dirs[].rego_v0")
                                            .unwrap_or(false)
                                    }
                                    _ => {}
                                }
                            }
                            match path {
                                Some(p) => out.dirs.push(PolicyDirSetting {
                                    path: resolve(base, &p),
                                    rego_v0: v0,
                                }),
                                None => w.err(item, "policies.dirs[]: `path` is required"),
                            }
                        }
                        _ => {
                            if let Some(p) = w.string(item, "policies.dirs[]") {
                                out.dirs.push(PolicyDirSetting {
                                    path: resolve(base, &p),
                                    rego_v0: false,
                                });
                            }
                        }
                    }
                }
            }
            "engine" => match w.string(v, "policies.engine").as_deref() {
                Some("compiled") => out.interpreter = false,
                Some("interpreter") => out.interpreter = true,
                Some(other) => w.err(
                    v,
                    format!(
                        "policies.engine: `{other}` is not an engine; expected `compiled` or `interpreter`"
                    ),
                ),
                None => {}
            },
            "strict_builtins" => {
                if let Some(b) = w.boolean(v, "policies.strict_builtins") {
                    out.strict_builtins = b;
                }
            }
            "data" => {
                out.data = w
                    .strings(v, "policies.data")
                    .iter()
                    .map(|p| resolve(base, p))
                    .collect()
            }
            _ => {}
        }
    }
    if out.dirs.is_empty() {
        out.dirs.push(PolicyDirSetting {
            path: PathBuf::from("policies"),
            rego_v0: false,
        });
    }
    out
}

fn walk_output(w: &mut Walker, n: &Node, base: &Path, mut out: OutputSettings) -> OutputSettings {
    for (k, v) in w.map(n, "output", &["format", "file", "color", "show_diff"]) {
        match k.as_str() {
            "format" => {
                if let Some(f) = w.one_of(
                    v,
                    "output.format",
                    &["table", "json", "markdown", "sarif", "junit"],
                ) {
                    out.format = f;
                }
            }
            "file" => out.file = w.string(v, "output.file").map(|p| resolve(base, &p)),
            "color" => {
                out.color = match w
                    .one_of(v, "output.color", &["auto", "always", "never"])
                    .as_deref()
                {
                    Some("always") => ColorChoice::Always,
                    Some("never") => ColorChoice::Never,
                    _ => ColorChoice::Auto,
                }
            }
            "show_diff" => out.show_diff = w.boolean(v, "output.show_diff").unwrap_or(true),
            _ => {}
        }
    }
    out
}

fn walk_ignores(w: &mut Walker, n: &Node, what: &str) -> Vec<IgnoreRule> {
    let NodeKind::Seq(items) = &n.kind else {
        w.err(n, format!("{what}: expected a list of rules"));
        return Vec::new();
    };
    let mut rules = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut rule = IgnoreRule {
            name: format!("{what}[{i}]"),
            ..IgnoreRule::default()
        };
        for (k, v) in w.map(
            item,
            &format!("{what}[{i}]"),
            &[
                "name",
                "kinds",
                "names",
                "namespaces",
                "pointers",
                "managers",
            ],
        ) {
            let field = format!("{what}[{i}].{k}");
            match k.as_str() {
                "name" => {
                    if let Some(s) = w.string(v, &field) {
                        rule.name = s;
                    }
                }
                "kinds" => rule.kinds = w.strings(v, &field),
                "names" => rule.name_glob = w.string(v, &field),
                "namespaces" => rule.namespace_glob = w.string(v, &field),
                "pointers" => {
                    rule.pointers = w.strings(v, &field);
                    for p in &rule.pointers {
                        if !p.starts_with('/') {
                            w.err(
                                v,
                                format!(
                                    "{field}: `{p}` is not a JSON pointer (it must start with `/`)"
                                ),
                            );
                        }
                    }
                }
                "managers" => rule.managers = w.strings(v, &field),
                _ => {}
            }
        }
        for (label, glob) in [
            ("names", &rule.name_glob),
            ("namespaces", &rule.namespace_glob),
        ] {
            if let Some(g) = glob {
                if let Err(e) = globset::Glob::new(g) {
                    w.err(
                        item,
                        format!("{what}[{i}].{label}: invalid glob `{g}`: {e}"),
                    );
                }
            }
        }
        if rule.pointers.is_empty() && rule.managers.is_empty() {
            w.err(
                item,
                format!("{what}[{i}]: a rule needs `pointers` or `managers` (what to ignore)"),
            );
        }
        rules.push(rule);
    }
    rules
}

fn parse_selector(w: &mut Walker, n: &Node, what: &str) -> Option<String> {
    let s = w.string(n, what)?;
    let key = s.split('=').next().unwrap_or("");
    if key.is_empty() || s.matches('=').count() > 1 {
        w.err(
            n,
            format!("{what}: expected `key` or `key=value`, found `{s}`"),
        );
        return None;
    }
    Some(s)
}

fn walk_target(w: &mut Walker, n: &Node, base: &Path) -> Option<Target> {
    let mut name = None;
    let mut mode = Mode::default();
    let mut cluster = None;
    let mut namespace = "default".to_string();
    let mut desired = None;
    let mut terraform: Option<TerraformSource> = None;
    let mut live = None;
    let mut tracking: Option<Tracking> = None;
    let mut unmanaged_namespaces = Vec::new();
    let mut ignore = Vec::new();
    let mut strict = false;
    let mut guardrails = Guardrails::default();
    for (k, v) in w.map(
        n,
        "targets[]",
        &[
            "name",
            "mode",
            "cluster",
            "namespace",
            "desired",
            "live",
            "tracking",
            "unmanaged_namespaces",
            "ignore",
            "strict",
            "guardrails",
        ],
    ) {
        match k.as_str() {
            "name" => {
                name = w.string(v, "targets[].name");
                if let Some(nm) = &name {
                    if !nm
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    {
                        w.err(v, format!("targets[].name: `{nm}` may only hold letters, digits, `-`, `_` and `.` (it names Git branches)"));
                    }
                }
            }
            "mode" => {
                mode = match w
                    .one_of(
                        v,
                        "targets[].mode",
                        &["observe", "recommend", "autocorrect"],
                    )
                    .as_deref()
                {
                    Some("observe") => Mode::Observe,
                    Some("autocorrect") => Mode::Autocorrect,
                    _ => Mode::Recommend,
                }
            }
            "cluster" => cluster = w.string(v, "targets[].cluster"),
            "namespace" => {
                if let Some(s) = w.string(v, "targets[].namespace") {
                    namespace = s;
                }
            }
            "desired" if has_key(v, "terraform") => {
                if let Some((d, tf)) = walk_terraform_desired(w, v, base) {
                    desired = Some(d);
                    terraform = Some(tf);
                }
            }
            "desired" => desired = walk_desired(w, v, base),
            "live" => live = walk_live(w, v, base),
            "tracking" => {
                let mut t = Tracking::default();
                for (k2, v2) in w.map(v, "targets[].tracking", &["label", "annotation"]) {
                    match k2.as_str() {
                        "label" => t.label = parse_selector(w, v2, "targets[].tracking.label"),
                        "annotation" => {
                            t.annotation = parse_selector(w, v2, "targets[].tracking.annotation")
                        }
                        _ => {}
                    }
                }
                tracking = Some(t);
            }
            "unmanaged_namespaces" => {
                unmanaged_namespaces = w.strings(v, "targets[].unmanaged_namespaces")
            }
            "ignore" => ignore = walk_ignores(w, v, "targets[].ignore"),
            "strict" => strict = w.boolean(v, "targets[].strict").unwrap_or(false),
            "guardrails" => guardrails = walk_guardrails(w, v),
            _ => {}
        }
    }
    if name.is_none() {
        w.err(n, "targets[]: `name` is required");
    }
    if desired.is_none() && !has_key(n, "desired") {
        w.err(n, "targets[]: `desired` is required");
    }
    check_terraform_pairing(w, n, terraform.as_ref(), &mut live);
    if live.is_none() && !has_key(n, "live") {
        w.err(n, "targets[]: `live` is required");
    }
    let name = name?;
    Some(Target {
        cluster: cluster.unwrap_or_else(|| name.clone()),
        name,
        mode,
        namespace,
        desired: desired?,
        live: live?,
        tracking,
        unmanaged_namespaces,
        ignore,
        strict,
        guardrails,
        line: n.line,
        terraform,
    })
}

/// A whole number of at least `min`, or an error naming `what`.
fn whole(w: &mut Walker, n: &Node, what: &str, min: u64) -> Option<u32> {
    match &n.kind {
        NodeKind::Scalar(Value::Number(x))
            if x.as_u64()
                .is_some_and(|v| v >= min && v <= u64::from(u32::MAX)) =>
        {
            x.as_u64().map(|v| v as u32)
        }
        _ => {
            w.err(
                n,
                format!("{what}: expected a whole number of at least {min}"),
            );
            None
        }
    }
}

fn walk_audit(w: &mut Walker, n: &Node, base: &Path) -> AuditSettings {
    let mut a = AuditSettings::default();
    for (k, v) in w.map(n, "audit", &["retention_days", "dir"]) {
        match k.as_str() {
            "retention_days" => {
                a.retention_days =
                    whole(w, v, "audit.retention_days", 1).unwrap_or(a.retention_days)
            }
            "dir" => {
                if let Some(p) = w.string(v, "audit.dir") {
                    a.dir = Some(resolve(base, &p));
                }
            }
            _ => {}
        }
    }
    a
}

fn walk_trust(w: &mut Walker, n: &Node) -> TrustSettings {
    let mut t = TrustSettings::default();
    for (k, v) in w.map(
        n,
        "trust",
        &[
            "max_reverts",
            "revert_window_hours",
            "max_consecutive_failures",
        ],
    ) {
        let what = format!("trust.{k}");
        match k.as_str() {
            "max_reverts" => t.max_reverts = whole(w, v, &what, 1).unwrap_or(t.max_reverts),
            "revert_window_hours" => {
                t.revert_window_hours = whole(w, v, &what, 1).unwrap_or(t.revert_window_hours)
            }
            "max_consecutive_failures" => {
                t.max_consecutive_failures =
                    whole(w, v, &what, 1).unwrap_or(t.max_consecutive_failures)
            }
            _ => {}
        }
    }
    t
}

fn walk_guardrails(w: &mut Walker, n: &Node) -> Guardrails {
    let mut g = Guardrails::default();
    for (k, v) in w.map(
        n,
        "targets[].guardrails",
        &[
            "force",
            "prune",
            "max_corrections",
            "max_correction_percent",
            "max_remediations_per_hour",
            "health_gate",
        ],
    ) {
        let what = format!("targets[].guardrails.{k}");
        match k.as_str() {
            "force" => g.force = w.boolean(v, &what).unwrap_or(g.force),
            "prune" => g.prune = w.boolean(v, &what).unwrap_or(g.prune),
            "max_corrections" => match &v.kind {
                NodeKind::Scalar(Value::Number(x)) if x.as_u64().is_some() => {
                    g.max_corrections = x.as_u64().map(|x| x as usize)
                }
                _ => w.err(v, format!("{what}: expected a whole number")),
            },
            "max_correction_percent" => match &v.kind {
                NodeKind::Scalar(Value::Number(x))
                    if x.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)) =>
                {
                    g.max_correction_percent = x.as_f64().unwrap_or(25.0)
                }
                _ => w.err(v, format!("{what}: expected a number from 0 to 100")),
            },
            "max_remediations_per_hour" => match &v.kind {
                NodeKind::Scalar(Value::Number(x)) if x.as_u64().is_some() => {
                    g.max_remediations_per_hour = x.as_u64().unwrap_or(3) as u32
                }
                _ => w.err(v, format!("{what}: expected a whole number")),
            },
            "health_gate" => g.health_gate = walk_health_gate(w, v),
            _ => {}
        }
    }
    g
}

fn walk_health_gate(w: &mut Walker, n: &Node) -> HealthGate {
    let mut g = HealthGate::default();
    let what = "targets[].guardrails.health_gate";
    let (min, max) = (Duration::from_millis(10), Duration::from_secs(3600));
    for (k, v) in w.map(n, what, &["enabled", "timeout", "interval"]) {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "enabled" => g.enabled = w.boolean(v, &field).unwrap_or(g.enabled),
            "timeout" => g.timeout = w.duration(v, &field, min, max).unwrap_or(g.timeout),
            "interval" => g.interval = w.duration(v, &field, min, max).unwrap_or(g.interval),
            _ => {}
        }
    }
    if g.interval > g.timeout {
        w.err(
            n,
            format!("{what}: `interval` must not be longer than `timeout`"),
        );
    }
    g
}

/// `notify`: webhook receivers and how each request is bounded (src/notify.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifySettings {
    /// Each request's timeout, connect to last byte.
    pub timeout: Duration,
    /// Attempts after the first, for a timeout, a broken connection, 429 or 5xx.
    pub retries: u32,
    /// All notifications of one batch (a target's actions, a run's end) within this.
    pub deadline: Duration,
    pub receivers: Vec<ReceiverSettings>,
}

/// The body a receiver gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    /// driftwarden's JSON body (docs/outputs.md, "Notifications").
    Json,
    /// A Slack incoming-webhook body: `text` and Block Kit `blocks`.
    Slack,
}

/// One webhook receiver. Its URL and token are named by environment variables, never written
/// in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverSettings {
    pub name: String,
    pub format: NotifyFormat,
    /// The variable holding the webhook URL.
    pub url_env: String,
    /// The variable holding a bearer token (`Authorization: Bearer …`), if any.
    pub token_env: Option<String>,
    /// The events it wants.
    pub events: Vec<crate::notify::EventKind>,
}

fn walk_notify(w: &mut Walker, n: &Node) -> Option<NotifySettings> {
    let before = w.issues.len();
    let mut out = NotifySettings {
        timeout: Duration::from_secs(10),
        retries: 2,
        deadline: Duration::from_secs(30),
        receivers: Vec::new(),
    };
    let mut receivers_node = None;
    for (k, v) in w.map(
        n,
        "notify",
        &["timeout", "retries", "deadline", "receivers"],
    ) {
        let field = format!("notify.{k}");
        match k.as_str() {
            "timeout" => {
                let (min, max) = (Duration::from_millis(10), Duration::from_secs(600));
                out.timeout = w.duration(v, &field, min, max).unwrap_or(out.timeout)
            }
            "deadline" => {
                let (min, max) = (Duration::from_millis(10), Duration::from_secs(3600));
                out.deadline = w.duration(v, &field, min, max).unwrap_or(out.deadline)
            }
            "retries" => match &v.kind {
                NodeKind::Scalar(Value::Number(x)) if x.as_u64().is_some_and(|r| r <= 10) => {
                    out.retries = x.as_u64().unwrap_or(2) as u32
                }
                _ => w.err(v, format!("{field}: expected a whole number from 0 to 10")),
            },
            "receivers" => receivers_node = Some(v),
            _ => {}
        }
    }
    match receivers_node.map(|r| (r, &r.kind)) {
        Some((_, NodeKind::Seq(items))) if !items.is_empty() => {
            let mut names = BTreeSet::new();
            for item in items {
                if let Some(r) = walk_receiver(w, item) {
                    if !names.insert(r.name.clone()) {
                        w.err(
                            item,
                            format!("notify.receivers: duplicate receiver name `{}`", r.name),
                        );
                    }
                    out.receivers.push(r);
                }
            }
        }
        Some((r, _)) => w.err(
            r,
            "notify.receivers: expected a non-empty list of receivers",
        ),
        None => w.err(
            n,
            "notify: `receivers` is required (a list of webhook receivers)",
        ),
    }
    (w.issues.len() == before).then_some(out)
}

fn walk_receiver(w: &mut Walker, n: &Node) -> Option<ReceiverSettings> {
    let what = "notify.receivers[]";
    let before = w.issues.len();
    let (mut name, mut url_env, mut token_env, mut events) = (None, None, None, None);
    let mut format = NotifyFormat::Json;
    for (k, v) in w.map(
        n,
        what,
        &["name", "format", "url_env", "token_env", "events"],
    ) {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "name" => name = w.string(v, &field),
            "format" => {
                format = match w.one_of(v, &field, &["json", "slack"]).as_deref() {
                    Some("slack") => NotifyFormat::Slack,
                    _ => NotifyFormat::Json,
                }
            }
            "url_env" => url_env = w.env_name(v, &field),
            "token_env" => token_env = w.env_name(v, &field),
            "events" => {
                let mut kinds = Vec::new();
                for e in w.strings(v, &field) {
                    if e == "all" {
                        kinds.extend(crate::notify::EventKind::ALL);
                        continue;
                    }
                    match crate::notify::EventKind::parse(&e) {
                        Some(kind) => kinds.push(kind),
                        None => {
                            let names: Vec<&str> = crate::notify::EventKind::ALL
                                .iter()
                                .map(|k| k.name())
                                .collect();
                            w.err(
                                v,
                                format!(
                                    "{field}: unknown event `{e}`; expected `all` or some of: {}",
                                    names.join(", ")
                                ),
                            );
                        }
                    }
                }
                kinds.sort();
                kinds.dedup();
                if kinds.is_empty() && w.issues.len() == before {
                    w.err(v, format!("{field}: name at least one event"));
                }
                events = Some(kinds);
            }
            _ => {}
        }
    }
    for (missing, key) in [
        (name.is_none(), "name"),
        (url_env.is_none(), "url_env"),
        (events.is_none(), "events"),
    ] {
        if missing && w.issues.len() == before {
            w.err(n, format!("{what}: `{key}` is required"));
        }
    }
    if w.issues.len() != before {
        return None;
    }
    Some(ReceiverSettings {
        name: name?,
        format,
        url_env: url_env?,
        token_env,
        events: events?,
    })
}

fn walk_desired(w: &mut Walker, n: &Node, base: &Path) -> Option<DesiredSource> {
    let mut location = None;
    let mut path = String::new();
    let mut include = Vec::new();
    let mut exclude = Vec::new();
    let mut render = None;
    let mut count = 0;
    for (k, v) in w.map(
        n,
        "targets[].desired",
        &[
            "git",
            "dir",
            "path",
            "include",
            "exclude",
            "helm",
            "kustomize",
        ],
    ) {
        match k.as_str() {
            "git" => {
                count += 1;
                location = walk_git(w, v, base).map(DesiredLocation::Git);
            }
            "dir" => {
                count += 1;
                location = w
                    .string(v, "targets[].desired.dir")
                    .map(|p| DesiredLocation::Dir(resolve(base, &p)));
            }
            "path" => {
                if let Some(p) = w.string(v, "targets[].desired.path") {
                    if p.split('/').any(|s| s == "..") || p.starts_with('/') {
                        w.err(v, "targets[].desired.path: must be a relative path inside the source, without `..`");
                    }
                    path = p.trim_matches('/').to_string();
                }
            }
            "include" => {
                include = w.strings(v, "targets[].desired.include");
                check_globs(w, v, "targets[].desired.include", &include);
            }
            "exclude" => {
                exclude = w.strings(v, "targets[].desired.exclude");
                check_globs(w, v, "targets[].desired.exclude", &exclude);
            }
            "helm" => {
                let mut release = "release".to_string();
                let mut values = Vec::new();
                let mut namespace = None;
                for (k2, v2) in w.map(
                    v,
                    "targets[].desired.helm",
                    &["release", "values", "namespace"],
                ) {
                    match k2.as_str() {
                        "release" => {
                            if let Some(r) = w.string(v2, "targets[].desired.helm.release") {
                                release = r;
                            }
                        }
                        "values" => values = w.strings(v2, "targets[].desired.helm.values"),
                        "namespace" => namespace = w.string(v2, "targets[].desired.helm.namespace"),
                        _ => {}
                    }
                }
                if render.is_some() {
                    w.err(
                        v,
                        "targets[].desired: `helm` and `kustomize` exclude each other",
                    );
                }
                render = Some(Render::Helm {
                    release,
                    values,
                    namespace,
                });
            }
            "kustomize" if w.boolean(v, "targets[].desired.kustomize") == Some(true) => {
                if render.is_some() {
                    w.err(
                        v,
                        "targets[].desired: `helm` and `kustomize` exclude each other",
                    );
                }
                render = Some(Render::Kustomize);
            }
            _ => {}
        }
    }
    if count != 1 {
        w.err(n, "targets[].desired: give exactly one of `git` or `dir`");
        return None;
    }
    if include.is_empty() {
        include = vec![
            "**/*.yaml".to_string(),
            "**/*.yml".to_string(),
            "**/*.json".to_string(),
        ];
    }
    Some(DesiredSource {
        location: location?,
        path,
        include,
        exclude,
        render,
    })
}

fn check_globs(w: &mut Walker, n: &Node, what: &str, globs: &[String]) {
    for g in globs {
        if let Err(e) = globset::Glob::new(g) {
            w.err(n, format!("{what}: invalid glob `{g}`: {e}"));
        }
    }
}

fn walk_git(w: &mut Walker, n: &Node, base: &Path) -> Option<GitSource> {
    let mut repo = None;
    let mut reference = "HEAD".to_string();
    let mut token_env = None;
    let mut ssh_key = None;
    for (k, v) in w.map(
        n,
        "targets[].desired.git",
        &["repo", "ref", "token_env", "ssh_key"],
    ) {
        match k.as_str() {
            "repo" => repo = w.string(v, "targets[].desired.git.repo"),
            "ref" => {
                if let Some(r) = w.string(v, "targets[].desired.git.ref") {
                    reference = r;
                }
            }
            "token_env" => token_env = w.string(v, "targets[].desired.git.token_env"),
            "ssh_key" => {
                ssh_key = w
                    .string(v, "targets[].desired.git.ssh_key")
                    .map(|p| resolve(base, &p))
            }
            _ => {}
        }
    }
    let Some(repo) = repo else {
        w.err(n, "targets[].desired.git: `repo` is required");
        return None;
    };
    let repo = if is_url(&repo) {
        repo
    } else {
        resolve(base, &repo).display().to_string()
    };
    Some(GitSource {
        repo,
        reference,
        token_env,
        ssh_key,
    })
}

/// True for a Git URL rather than a local path.
pub fn is_url(s: &str) -> bool {
    s.contains("://") || (s.contains('@') && s.contains(':') && !s.starts_with('/'))
}

fn walk_live(w: &mut Walker, n: &Node, base: &Path) -> Option<LiveSource> {
    let mut out = None;
    let mut count = 0;
    for (k, v) in w.map(n, "targets[].live", &["snapshot", "kubernetes", "ec2"]) {
        match k.as_str() {
            "snapshot" => {
                count += 1;
                out = w
                    .string(v, "targets[].live.snapshot")
                    .map(|p| LiveSource::Snapshot(resolve(base, &p)));
            }
            "kubernetes" => {
                count += 1;
                out = walk_kubernetes(w, v, base).map(LiveSource::Kubernetes);
            }
            "ec2" => {
                count += 1;
                out = walk_ec2(w, v, base).map(LiveSource::Ec2);
            }
            _ => {}
        }
    }
    if count > 1 {
        w.err(
            n,
            "targets[].live: give exactly one of `snapshot`, `kubernetes` or `ec2`",
        );
        return None;
    }
    if count == 0 {
        w.err(
            n,
            "targets[].live: give `snapshot` (a directory of kubectl output), `kubernetes` (a cluster) or `ec2` (AWS)",
        );
    }
    out
}

/// `live.kubernetes`: a mapping (an empty one, `{}`, takes every default).
fn walk_kubernetes(w: &mut Walker, n: &Node, base: &Path) -> Option<KubeSource> {
    let mut src = KubeSource::default();
    if matches!(&n.kind, NodeKind::Scalar(Value::Null)) {
        return Some(src);
    }
    let before = w.issues.len();
    let what = "targets[].live.kubernetes";
    for (k, v) in w.map(
        n,
        what,
        &[
            "kubeconfig",
            "context",
            "in_cluster",
            "page_size",
            "concurrency",
            "timeout_seconds",
            "max_attempts",
            "backoff_ms",
        ],
    ) {
        let field = format!("{what}.{k}");
        let whole = |w: &mut Walker, min: u64, max: u64| match &v.kind {
            NodeKind::Scalar(Value::Number(x))
                if x.as_u64().is_some_and(|x| (min..=max).contains(&x)) =>
            {
                x.as_u64()
            }
            _ => {
                w.err(
                    v,
                    format!("{field}: expected a whole number from {min} to {max}"),
                );
                None
            }
        };
        match k.as_str() {
            "kubeconfig" => {
                src.kubeconfig = w.string(v, &field).map(|p| match p.strip_prefix("~/") {
                    Some(rest) => std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(rest))
                        .unwrap_or_else(|| resolve(base, &p)),
                    None => resolve(base, &p),
                })
            }
            "context" => src.context = w.string(v, &field),
            "in_cluster" => src.in_cluster = w.boolean(v, &field).unwrap_or(false),
            "page_size" => {
                if let Some(x) = whole(w, 1, 10_000) {
                    src.page_size = x as u32;
                }
            }
            "concurrency" => {
                if let Some(x) = whole(w, 1, 64) {
                    src.concurrency = x as usize;
                }
            }
            "max_attempts" => {
                if let Some(x) = whole(w, 1, 10) {
                    src.max_attempts = x as u32;
                }
            }
            "backoff_ms" => {
                if let Some(x) = whole(w, 0, 60_000) {
                    src.backoff = std::time::Duration::from_millis(x);
                }
            }
            "timeout_seconds" => match &v.kind {
                NodeKind::Scalar(Value::Number(x))
                    if x.as_f64().is_some_and(|s| s > 0.0 && s <= 3600.0) =>
                {
                    src.timeout = std::time::Duration::from_secs_f64(x.as_f64().unwrap_or(30.0));
                }
                _ => w.err(
                    v,
                    format!("{field}: expected a number of seconds above 0, at most 3600"),
                ),
            },
            _ => {}
        }
    }
    if src.in_cluster && (src.kubeconfig.is_some() || src.context.is_some()) {
        w.err(
            n,
            format!("{what}: `in_cluster: true` excludes `kubeconfig` and `context`"),
        );
    }
    (w.issues.len() == before).then_some(src)
}

/// Whether a mapping node has `key`.
fn has_key(n: &Node, key: &str) -> bool {
    n.entries()
        .is_some_and(|entries| entries.iter().any(|(k, _)| yaml::key_string(k) == key))
}

/// `desired: {terraform: {state, plan, workspace, relevant_attributes_only}, git: {...}}`.
fn walk_terraform_desired(
    w: &mut Walker,
    n: &Node,
    base: &Path,
) -> Option<(DesiredSource, TerraformSource)> {
    let mut git = None;
    let mut tf_node = None;
    for (k, v) in w.map(n, "targets[].desired", &["terraform", "git"]) {
        match k.as_str() {
            "git" => git = walk_git(w, v, base),
            "terraform" => tf_node = Some(v),
            _ => {}
        }
    }
    let tf_node = tf_node?;
    let what = "targets[].desired.terraform";
    let mut states: Vec<(String, &Node)> = Vec::new();
    let mut plan: Option<(String, &Node)> = None;
    let mut workspace = "default".to_string();
    let mut relevant_attributes_only = false;
    for (k, v) in w.map(
        tf_node,
        what,
        &["state", "plan", "workspace", "relevant_attributes_only"],
    ) {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "state" => states = w.strings(v, &field).into_iter().map(|s| (s, v)).collect(),
            "plan" => plan = w.string(v, &field).map(|p| (p, v)),
            "workspace" => {
                if let Some(ws) = w.string(v, &field) {
                    workspace = ws;
                }
            }
            "relevant_attributes_only" => {
                relevant_attributes_only = w.boolean(v, &field).unwrap_or(false)
            }
            _ => {}
        }
    }
    if states.is_empty() && plan.is_none() {
        w.err(
            tf_node,
            format!("{what}: give `state` (one or more state files), `plan`, or both"),
        );
    }
    let place = |w: &mut Walker, p: &str, node: &Node, field: &str| -> String {
        if git.is_some() {
            if p.split('/').any(|s| s == "..") || p.starts_with('/') {
                w.err(
                    node,
                    format!("{field}: must be a path inside the repository, without `..`"),
                );
            }
            p.trim_matches('/').to_string()
        } else {
            resolve(base, p).display().to_string()
        }
    };
    let states = states
        .iter()
        .map(|(p, node)| place(w, p, node, &format!("{what}.state")))
        .collect();
    let plan = plan.map(|(p, node)| place(w, &p, node, &format!("{what}.plan")));
    let desired = DesiredSource {
        location: match &git {
            Some(g) => DesiredLocation::Git(g.clone()),
            None => DesiredLocation::Dir(base.to_path_buf()),
        },
        path: String::new(),
        include: Vec::new(),
        exclude: Vec::new(),
        render: None,
    };
    Some((
        desired,
        TerraformSource {
            states,
            plan,
            workspace,
            git,
            relevant_attributes_only,
        },
    ))
}

/// A Terraform desired source reads live EC2 (or, with only a plan, nothing); EC2 is read only
/// for Terraform targets.
fn check_terraform_pairing(
    w: &mut Walker,
    n: &Node,
    terraform: Option<&TerraformSource>,
    live: &mut Option<LiveSource>,
) {
    match (terraform, live.as_ref()) {
        (Some(tf), None) if !has_key(n, "live") => {
            if tf.states.is_empty() {
                *live = Some(LiveSource::TerraformPlan);
            } else {
                w.err(
                    n,
                    "targets[]: a Terraform target with `state` needs `live.ec2` to compare with",
                );
            }
        }
        (Some(_), Some(LiveSource::Snapshot(_) | LiveSource::Kubernetes(_))) => w.err(
            n,
            "targets[].live: a Terraform desired source is compared with `ec2` (or, with only a `plan`, needs no `live`)",
        ),
        (None, Some(LiveSource::Ec2(_))) => w.err(
            n,
            "targets[].live.ec2: EC2 is compared with Terraform state; give `desired.terraform`",
        ),
        _ => {}
    }
}

/// `live.ec2`: a mapping (an empty one, `{}`, takes every default).
fn walk_ec2(w: &mut Walker, n: &Node, base: &Path) -> Option<Ec2Source> {
    let mut src = Ec2Source::default();
    if matches!(&n.kind, NodeKind::Scalar(Value::Null)) {
        return Some(src);
    }
    let before = w.issues.len();
    let what = "targets[].live.ec2";
    for (k, v) in w.map(
        n,
        what,
        &[
            "regions",
            "profile",
            "endpoint",
            "default_tags",
            "unmanaged",
            "ignore",
            "driftignore",
            "max_attempts",
        ],
    ) {
        let field = format!("{what}.{k}");
        match k.as_str() {
            "regions" => {
                src.regions = w.strings(v, &field);
                for r in &src.regions {
                    if !r
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    {
                        w.err(
                            v,
                            format!("{field}: `{r}` is not a region name like us-east-1"),
                        );
                    }
                }
            }
            "profile" => src.profile = w.string(v, &field),
            "endpoint" => {
                src.endpoint = w.string(v, &field);
                if let Some(e) = &src.endpoint {
                    if !(e.starts_with("http://") || e.starts_with("https://")) {
                        w.err(v, format!("{field}: expected an http:// or https:// URL"));
                    }
                }
            }
            "default_tags" => match v.entries() {
                Some(entries) => {
                    for (tk, tv) in entries {
                        let key = yaml::key_string(tk);
                        if let Some(val) = w.string(tv, &format!("{field}.{key}")) {
                            src.default_tags.insert(key, val);
                        }
                    }
                }
                None if matches!(&v.kind, NodeKind::Scalar(Value::Null)) => {}
                None => w.err(
                    v,
                    format!("{field}: expected a mapping of tag keys to values"),
                ),
            },
            "unmanaged" => src.unmanaged = w.boolean(v, &field).unwrap_or(true),
            "ignore" => {
                src.ignore = w.strings(v, &field);
                for p in &src.ignore {
                    let pat = p.trim().trim_start_matches('!').trim();
                    if let Err(e) = globset::Glob::new(pat) {
                        w.err(v, format!("{field}: invalid pattern `{p}`: {}", e.kind()));
                    }
                }
            }
            "driftignore" => {
                src.driftignore = w.string(v, &field).map(|p| resolve(base, &p));
            }
            "max_attempts" => match &v.kind {
                NodeKind::Scalar(Value::Number(x))
                    if x.as_u64().is_some_and(|x| (1..=20).contains(&x)) =>
                {
                    src.max_attempts = x.as_u64().unwrap_or(5) as u32;
                }
                _ => w.err(v, format!("{field}: expected a whole number from 1 to 20")),
            },
            _ => {}
        }
    }
    (w.issues.len() == before).then_some(src)
}

/// Which forge pull requests and issues go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgeKind {
    /// Branches in a local repository and Markdown files in `output_dir` (the default).
    Local,
    /// GitHub or GitHub Enterprise Server, through the REST API.
    GitHub,
}

/// `pull_requests.max_proposal_percent` when unset (and without a `pull_requests` section).
pub const DEFAULT_MAX_PROPOSAL_PERCENT: f64 = 25.0;
/// `pull_requests.min_mass_drift` when unset (and without a `pull_requests` section).
pub const DEFAULT_MIN_MASS_DRIFT: usize = 10;

/// Pull requests and issues (docs/config.md, `pull_requests`).
#[derive(Debug, Clone)]
pub struct PullRequestSettings {
    pub forge: ForgeKind,
    /// `owner/name` of the GitHub repository.
    pub repo: Option<String>,
    /// The branch pull requests target; default the desired Git source's branch, else the
    /// repository's default branch (GitHub) or `main` (local).
    pub base: Option<String>,
    /// Where branches are pushed (GitHub); default the desired Git source's URL, else the
    /// repository's HTTPS URL.
    pub remote: Option<String>,
    /// The API base URL: `https://api.github.com` by default, `https://HOST/api/v3` for GitHub
    /// Enterprise Server.
    pub api_url: Option<String>,
    /// The environment variable holding the token (API and HTTPS pushes).
    pub token_env: String,
    /// SSH private key for pushes to an SSH remote; otherwise the SSH agent.
    pub ssh_key: Option<PathBuf>,
    pub author_name: String,
    pub author_email: String,
    /// At most this many new pull requests and issues per run; the rest wait for the next run.
    pub max_new_per_run: usize,
    /// The local forge's directory; default `<state_dir>/prs`.
    pub output_dir: Option<PathBuf>,
    /// Labels added to every pull request and issue, beside `drift` and `drift/<class>`.
    pub labels: Vec<String>,
    /// Where the full report is, named when a body is truncated.
    pub report_url: Option<String>,
    /// Least time between two writes to the GitHub API (GitHub asks for one second).
    pub write_interval_ms: u64,
    /// The longest rate-limit wait a run accepts before giving up on the forge.
    pub max_rate_limit_wait_secs: u64,
    /// Mass drift (src/act/mass_drift.rs): more than this share (percent) of a target's
    /// resources drifted in one run, and at least `min_mass_drift` of them, makes one issue for
    /// the target instead of an item per drift. `100` turns mass-drift detection off.
    pub max_proposal_percent: f64,
    /// The fewest drifts that make a mass drift by share (a small target with one drift is not
    /// caught by `max_proposal_percent` alone).
    pub min_mass_drift: usize,
    /// Config line, for messages.
    pub line: usize,
}

impl PullRequestSettings {
    /// The defaults of `pull_requests: {forge: local}`.
    pub fn local() -> PullRequestSettings {
        PullRequestSettings {
            forge: ForgeKind::Local,
            repo: None,
            base: None,
            remote: None,
            api_url: None,
            token_env: "GITHUB_TOKEN".to_string(),
            ssh_key: None,
            author_name: "driftwarden".to_string(),
            author_email: "driftwarden@users.noreply.github.com".to_string(),
            max_new_per_run: 10,
            output_dir: None,
            labels: Vec::new(),
            report_url: None,
            write_interval_ms: 1000,
            max_rate_limit_wait_secs: 900,
            max_proposal_percent: DEFAULT_MAX_PROPOSAL_PERCENT,
            min_mass_drift: DEFAULT_MIN_MASS_DRIFT,
            line: 0,
        }
    }

    /// The local forge's directory.
    pub fn local_dir(&self, state_dir: &Path) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("prs"))
    }
}

fn valid_repo_name(s: &str) -> bool {
    let ok = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    matches!(s.split_once('/'), Some((o, r)) if ok(o) && ok(r))
}

fn walk_pull_requests(w: &mut Walker, n: &Node, base: &Path) -> Option<PullRequestSettings> {
    let mut out = PullRequestSettings::local();
    out.line = n.line;
    let what = "pull_requests";
    let before = w.issues.len();
    let mut forge_node = None;
    let mut github_only: Vec<(&Node, String)> = Vec::new();
    for (k, v) in w.map(
        n,
        what,
        &[
            "forge",
            "repo",
            "base",
            "remote",
            "api_url",
            "token_env",
            "ssh_key",
            "author",
            "max_new_per_run",
            "output_dir",
            "labels",
            "report_url",
            "write_interval_ms",
            "max_rate_limit_wait_secs",
            "max_proposal_percent",
            "min_mass_drift",
        ],
    ) {
        let field = format!("{what}.{k}");
        let whole = |w: &mut Walker| match &v.kind {
            NodeKind::Scalar(Value::Number(x)) if x.as_u64().is_some() => x.as_u64(),
            _ => {
                w.err(v, format!("{field}: expected a whole number"));
                None
            }
        };
        match k.as_str() {
            "forge" => {
                forge_node = Some(v);
                out.forge = match w.one_of(v, &field, &["local", "github"]).as_deref() {
                    Some("github") => ForgeKind::GitHub,
                    _ => ForgeKind::Local,
                }
            }
            "repo" => {
                out.repo = w.string(v, &field);
                if let Some(r) = &out.repo {
                    if !valid_repo_name(r) {
                        w.err(v, format!("{field}: `{r}` is not `owner/name`"));
                    }
                }
                github_only.push((v, k.clone()));
            }
            "base" => out.base = w.string(v, &field),
            "remote" => {
                out.remote = w.string(v, &field).map(|r| {
                    if is_url(&r) {
                        r
                    } else {
                        resolve(base, &r).display().to_string()
                    }
                });
                github_only.push((v, k.clone()));
            }
            "api_url" => {
                out.api_url = w.string(v, &field);
                if let Some(u) = &out.api_url {
                    if !(u.starts_with("https://") || u.starts_with("http://")) {
                        w.err(v, format!("{field}: `{u}` is not an http(s) URL"));
                    }
                }
                github_only.push((v, k.clone()));
            }
            "token_env" => {
                if let Some(t) = w.string(v, &field) {
                    out.token_env = t;
                }
            }
            "ssh_key" => out.ssh_key = w.string(v, &field).map(|p| resolve(base, &p)),
            "author" => {
                for (k2, v2) in w.map(v, &field, &["name", "email"]) {
                    match k2.as_str() {
                        "name" => {
                            if let Some(s) = w.string(v2, "pull_requests.author.name") {
                                out.author_name = s;
                            }
                        }
                        "email" => {
                            if let Some(s) = w.string(v2, "pull_requests.author.email") {
                                if s.contains('@') && !s.contains(['<', '>', ' ']) {
                                    out.author_email = s;
                                } else {
                                    w.err(
                                        v2,
                                        format!("pull_requests.author.email: `{s}` is not an email address"),
                                    );
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            "max_new_per_run" => {
                if let Some(x) = whole(w) {
                    out.max_new_per_run = x as usize;
                }
            }
            "output_dir" => out.output_dir = w.string(v, &field).map(|p| resolve(base, &p)),
            "labels" => {
                out.labels = w.strings(v, &field);
                for l in &out.labels {
                    if l.contains(',') || l.chars().count() > 50 {
                        w.err(v, format!("{field}: `{l}` is not a valid label (no commas, at most 50 characters)"));
                    }
                }
            }
            "report_url" => out.report_url = w.string(v, &field),
            "write_interval_ms" => {
                if let Some(x) = whole(w) {
                    out.write_interval_ms = x;
                }
            }
            "max_rate_limit_wait_secs" => {
                if let Some(x) = whole(w) {
                    out.max_rate_limit_wait_secs = x;
                }
            }
            "max_proposal_percent" => match &v.kind {
                NodeKind::Scalar(Value::Number(x))
                    if x.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p)) =>
                {
                    out.max_proposal_percent = x.as_f64().unwrap_or(DEFAULT_MAX_PROPOSAL_PERCENT)
                }
                _ => w.err(v, format!("{field}: expected a number from 0 to 100")),
            },
            "min_mass_drift" => {
                if let Some(x) = whole(w) {
                    out.min_mass_drift = x as usize;
                }
            }
            _ => {}
        }
    }
    match out.forge {
        ForgeKind::GitHub if out.repo.is_none() => w.err(
            forge_node.unwrap_or(n),
            "pull_requests: `forge: github` needs `repo: owner/name`",
        ),
        ForgeKind::Local => {
            for (node, key) in github_only {
                w.err(
                    node,
                    format!("pull_requests.{key}: only used with `forge: github`"),
                );
            }
        }
        _ => {}
    }
    (w.issues.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<Config, ConfigError> {
        parse(s, "test.yaml", Path::new("/base"))
    }

    #[test]
    fn full_config_parses() {
        let cfg = parse_str(
            r#"
version: 1
policies:
  dirs: [policies, {path: legacy, rego_v0: true}]
  data: [params.json]
output: {format: json, color: never}
ignore:
  - name: hpa-replicas
    kinds: [Deployment]
    pointers: [/spec/replicas]
targets:
  - name: prod
    mode: autocorrect
    desired:
      git: {repo: ../gitops, ref: main, token_env: GIT_TOKEN}
      path: apps/shop
      exclude: ["**/kustomization.yaml"]
    live: {snapshot: snap}
    tracking: {label: app.kubernetes.io/managed-by=driftwarden}
    ignore:
      - {managers: [vpa-recommender], pointers: []}
"#,
        )
        .unwrap();
        assert_eq!(cfg.targets.len(), 1);
        let t = &cfg.targets[0];
        assert_eq!(t.mode, Mode::Autocorrect);
        assert_eq!(t.ignore.len(), 2);
        assert_eq!(t.ignore[0].name, "hpa-replicas");
        assert_eq!(t.desired.path, "apps/shop");
        assert!(cfg.policies.dirs[1].rego_v0);
        match &t.desired.location {
            DesiredLocation::Git(g) => {
                assert_eq!(g.reference, "main");
                assert_eq!(g.repo, "/base/../gitops");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_reported_with_lines() {
        let err = parse_str(
            "targets:\n  - name: a\n    mood: observe\n    desired: {dir: x}\n    live: {snapshot: y}\n  - name: b\n    mode: yolo\n    desired: {dir: x}\n    live: {snapshott: y}\nextra: 1\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = err.issues.iter().map(|i| i.line).collect();
        assert!(lines.contains(&3), "{err}");
        assert!(lines.contains(&7), "{err}");
        assert!(lines.contains(&9), "{err}");
        assert!(lines.contains(&10), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("test.yaml:3:5: targets[]: unknown key `mood` (did you mean `mode`?)"),
            "{text}"
        );
        assert!(text.contains("`yolo` is not one of"), "{text}");
    }

    #[test]
    fn broken_yaml_names_line() {
        let err = parse_str("targets:\n  - name: a\n   bad: [\n").unwrap_err();
        assert_eq!(err.issues.len(), 1);
        assert!(err.issues[0].line >= 2, "{err}");
    }

    #[test]
    fn embedded_default_is_valid() {
        let cfg = embedded_default().unwrap();
        // The offline demo: one target, desired from the fixtures, live from snapshot files,
        // the default library, pull requests written locally.
        assert_eq!(cfg.targets.len(), 1);
        let t = &cfg.targets[0];
        assert_eq!((t.name.as_str(), t.mode), ("demo", Mode::Recommend));
        assert!(
            matches!(&t.live, LiveSource::Snapshot(p) if p.ends_with("fixtures/demo/live")),
            "{:?}",
            t.live
        );
        assert_eq!(cfg.policies.dirs.len(), 1);
        assert!(cfg.policies.dirs[0].path.ends_with("policies"));
        assert_eq!(
            cfg.pull_requests.as_ref().map(|p| p.forge),
            Some(ForgeKind::Local)
        );
    }

    const TARGET: &str =
        "targets:\n  - name: a\n    desired: {dir: x}\n    live: {kubernetes: {}}\n";

    #[test]
    fn watch_defaults_without_the_section() {
        let cfg = parse_str(TARGET).unwrap();
        assert_eq!(cfg.watch, WatchSettings::default());
        assert_eq!(cfg.watch.resync_interval, Duration::from_secs(600));
        assert_eq!(cfg.watch.debounce, Duration::from_millis(500));
        assert_eq!(cfg.watch.listen.to_string(), "0.0.0.0:8080");
    }

    #[test]
    fn watch_section_parses() {
        let cfg = parse_str(&format!(
            "{TARGET}watch:\n  resync_interval: 1h30m\n  debounce: 250ms\n  git_poll_interval: 30s\n  ec2_poll_interval: 2m\n  listen: 127.0.0.1:9090\n  leader_election: {{name: dw, namespace: ops, lease_duration: 20s}}\n  webhook: {{secret_env: HOOK_SECRET}}\n  max_corrections_per_window: 7\n  window: 5m\n"
        ))
        .unwrap();
        let w = &cfg.watch;
        assert_eq!(w.resync_interval, Duration::from_secs(5400));
        assert_eq!(w.debounce, Duration::from_millis(250));
        assert_eq!(w.git_poll_interval, Duration::from_secs(30));
        assert_eq!(w.ec2_poll_interval, Duration::from_secs(120));
        assert_eq!(w.listen.to_string(), "127.0.0.1:9090");
        let le = w.leader_election.as_ref().unwrap();
        assert_eq!((le.name.as_str(), le.namespace.as_str()), ("dw", "ops"));
        assert_eq!(le.lease_duration, Duration::from_secs(20));
        assert_eq!(le.renew_deadline, Duration::from_secs(10));
        assert_eq!(le.retry_period, Duration::from_secs(2));
        assert_eq!(w.webhook.as_ref().unwrap().secret_env, "HOOK_SECRET");
        assert_eq!(w.max_corrections_per_window, Some(7));
        assert_eq!(w.window, Duration::from_secs(300));
        assert_eq!(w.line, 6);
    }

    #[test]
    fn watch_problems_have_lines() {
        let err = parse_str(&format!(
            "{TARGET}watch:\n  debounce: fast\n  listen: everywhere\n  resync_interval: 1s\n  leader_election: {{lease_duration: 5s, renew_deadline: 10s}}\n  webhook: {{}}\n  resync: 10m\n  max_corrections_per_window: -1\n"
        ))
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "test.yaml:6:13: watch.debounce: `fast` is not a duration",
            "test.yaml:7:11: watch.listen: `everywhere` is not an address",
            "test.yaml:8:20: watch.resync_interval: `1s` is out of range (10s to 168h)",
            "test.yaml:9:21: watch.leader_election: renew_deadline (10s) must be shorter than lease_duration (5s)",
            "test.yaml:10:12: watch.webhook: `secret_env` is required",
            "test.yaml:11:3: watch: unknown key `resync`",
            "test.yaml:12:31: watch.max_corrections_per_window: expected a whole number",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
    }

    #[test]
    fn leader_election_needs_a_cluster() {
        let err = parse_str(
            "targets:\n  - name: a\n    desired: {dir: x}\n    live: {snapshot: y}\nwatch:\n  leader_election: {target: a}\n",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("6:29: watch.leader_election.target: target `a` does not read a cluster"),
            "{err}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in ["", "10", "m", "1.5s", "10 m", "-1s", "1d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
