//! The driftwarden command line: parses arguments, calls the library, prints the report and
//! maps the outcome to an exit code (0 in sync, 2 drift found, 1 runtime failure, 3 invalid
//! config, policy or input).

/// mimalloc instead of the system allocator: policy evaluation and the diff allocate many small,
/// short-lived values, and glibc's allocator spent a fifth of classification time in its own
/// bookkeeping (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use driftwarden::config::{self, ColorChoice, Config, PolicyDirSetting, PolicySettings};
use driftwarden::model::Mode;
use driftwarden::policy::{self, PolicyConfig, PolicyDir};
use driftwarden::report::{self, Format, RenderOptions};
use driftwarden::run::{self, Command as RunCommand, RunOptions};
use driftwarden::shard::Shard;

/// When the process started, for the run-duration metric.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// The shard this process runs, for the Pushgateway grouping key.
static SHARD: OnceLock<Shard> = OnceLock::new();

/// The config file given, for SARIF locations of drift that is not in Git.
static CONFIG_PATH: OnceLock<PathBuf> = OnceLock::new();

#[derive(Parser)]
#[command(
    name = "driftwarden",
    version = driftwarden::version::LONG,
    about = "GitOps drift-and-policy reconciler: diff Git against live state, classify every drift with Rego, correct or propose",
    after_help = "Exit codes: 0 in sync, 2 drift found, 1 runtime failure, 3 invalid config, policy or input.\nWithout --config the embedded offline demo runs (fixtures/demo)."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Log filter (like RUST_LOG), e.g. `info` or `driftwarden=debug`.
    #[arg(long, global = true, env = "DRIFTWARDEN_LOG", default_value = "warn")]
    log_level: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Detect drift and report it; changes nothing.
    Diff(DiffArgs),
    /// The full run: detect, classify, decide and (with actuators) act.
    Reconcile(ReconcileArgs),
    /// Work with Rego policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Validate a config file and report every problem at once.
    Validate {
        /// The config file (default: the embedded demo config).
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
    },
    /// Work with JSON reports.
    #[command(subcommand)]
    Report(ReportCmd),
    /// The GitHub Action's entrypoint (action.yml): runs `reconcile`, `diff` or `pr-check` from
    /// the action's inputs.
    GithubAction(GithubActionArgs),
    /// The pull-request bot: classify what a pull request changes in desired state with the
    /// same policies as drift; post one sticky comment and a commit status; exit 2 when a change
    /// is forbidden.
    PrCheck(PrCheckArgs),
    /// Self-healing figures from the audit log: drifts, corrections, success rate, reverted
    /// corrections, false-positive rate, re-drifts, time to remediate, compliance over time.
    Stats(StatsArgs),
    /// The breakers on reverted corrections.
    #[command(subcommand)]
    Trust(TrustCmd),
    /// Run continuously: watch the clusters, poll Git and EC2, correct safe drift within
    /// seconds and propose the rest, until SIGTERM or SIGINT (exit 0).
    Watch(WatchArgs),
    /// Print the version, the commit it was built from and the build date.
    Version,
    /// Print a shell completion script, e.g. `driftwarden completion bash > /etc/bash_completion.d/driftwarden`.
    Completion {
        /// The shell: bash, zsh, fish, powershell or elvish.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line, or write one page per
    /// command into a directory.
    Man {
        /// Write driftwarden.1, driftwarden-diff.1, ... into this directory instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct WatchArgs {
    /// The config file; its optional `watch:` section sets intervals, the listener, leader
    /// election and the webhook.
    #[arg(long, short = 'c')]
    config: PathBuf,
    /// Only these targets (repeatable).
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Override every target's mode.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Also print every audit record on stdout, one JSON line each (for a log collector).
    #[arg(long)]
    audit_stdout: bool,
}

#[derive(Args)]
struct StatsArgs {
    /// The config file (its `state_dir` and `audit` settings locate the log).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// How far back: `7d`, `24h`, `90m`.
    #[arg(long, default_value = "7d")]
    since: String,
    /// Only this target.
    #[arg(long = "target", short = 't')]
    target: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: StatsFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatsFormat {
    Table,
    Json,
    /// Prometheus text format.
    Prometheus,
}

#[derive(Subcommand)]
enum TrustCmd {
    /// Close the revert breaker of one rule on one target now, instead of when its window
    /// passes; recorded in the audit log.
    Reset {
        /// The config file.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// The target.
        #[arg(long = "target", short = 't')]
        target: String,
        /// The policy rule, as reports name it (`package.rule`).
        #[arg(long)]
        rule: String,
    },
}

#[derive(Args)]
struct PrCheckArgs {
    /// The config file: policies, and `pull_requests` (GitHub repository, API URL, token).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// The target whose `desired` path, globs and namespace to use (default: the only one).
    #[arg(long = "target", short = 't')]
    target: Option<String>,
    /// The base ref or commit (default: the pull_request event's base, $GITHUB_EVENT_PATH).
    #[arg(long)]
    base: Option<String>,
    /// The head ref or commit (default: the event's head).
    #[arg(long)]
    head: Option<String>,
    /// The local Git repository holding both refs.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Only manifests under this subdirectory.
    #[arg(long)]
    path: Option<String>,
    /// A Terraform plan (`terraform show -json PLANFILE`) to check too.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Namespace of objects that name none.
    #[arg(long)]
    namespace: Option<String>,
    /// Policy directory (repeatable; default: the config's, else `policies`).
    #[arg(long = "policies")]
    policies: Vec<PathBuf>,
    /// The pull request to comment on (default: the event's number).
    #[arg(long)]
    pr: Option<u64>,
    /// A policy builtin error is an error (exit 3), not undefined as in OPA's default
    /// (`policies.strict_builtins`).
    #[arg(long)]
    strict_builtins: bool,
    /// The GitHub repository, owner/name (default: the config's, the event's, $GITHUB_REPOSITORY).
    #[arg(long)]
    github_repo: Option<String>,
    /// The GitHub API URL (default: the config's, $GITHUB_API_URL, https://api.github.com).
    #[arg(long)]
    api_url: Option<String>,
    /// The environment variable holding the token (default: the config's, else GITHUB_TOKEN).
    #[arg(long)]
    token_env: Option<String>,
    /// Print the report only: no comment, no status.
    #[arg(long)]
    no_post: bool,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Join the JSON reports of shards into one report (summary recomputed).
    Merge {
        /// The JSON reports (`-o json` or `--json-report` output of each shard).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        out: OutputArgs,
    },
}

#[derive(Args)]
struct GithubActionArgs {
    /// reconcile, diff or pr-check.
    #[arg(long, default_value = "reconcile")]
    command: String,
    /// The config file, relative to the working directory.
    #[arg(long, default_value = "")]
    config: String,
    /// observe, recommend or autocorrect (reconcile only).
    #[arg(long, default_value = "")]
    mode: String,
    /// Directory to run in, relative to the workspace.
    #[arg(long, default_value = "")]
    working_directory: String,
    /// Extra arguments, split like a shell would (quotes, no expansion).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    args: String,
    /// `false`: drift found (exit code 2) does not fail the step.
    #[arg(long, default_value = "true")]
    fail_on_drift: String,
}

#[derive(Args)]
struct OutputArgs {
    /// Output format (default from the config's `output.format`, else table).
    #[arg(long, short = 'o', value_enum)]
    output: Option<OutFormat>,
    /// Write the report to this file instead of stdout.
    #[arg(long)]
    output_file: Option<PathBuf>,
    /// Colour the human output.
    #[arg(long, value_enum)]
    color: Option<ColorArg>,
    /// Leave the per-drift unified diffs out of the table.
    #[arg(long)]
    no_diff: bool,
    /// Also write the JSON report to this file, whatever `-o` says (for `report merge`, CI
    /// artifacts and the Action's `report-path` output).
    #[arg(long, value_name = "FILE")]
    json_report: Option<PathBuf>,
    /// Write Prometheus metrics (text format) to this file.
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    /// Push Prometheus metrics to this Pushgateway (http://HOST:PORT); a failed push is logged,
    /// never fatal.
    #[arg(long, value_name = "URL")]
    pushgateway: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Table,
    Json,
    Markdown,
    Sarif,
    Junit,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
struct DiffArgs {
    /// The config file (default: the embedded offline demo).
    #[arg(long, short = 'c', conflicts_with_all = ["desired", "live"])]
    config: Option<PathBuf>,
    /// A desired manifest file or directory (with --live; no config needed).
    #[arg(long, requires = "live")]
    desired: Option<PathBuf>,
    /// A live snapshot file or directory of `kubectl get -o yaml|json` output.
    #[arg(long, requires = "desired")]
    live: Option<PathBuf>,
    /// With --desired/--live: the namespace for manifests that name none (like kubectl's -n;
    /// default `default`).
    #[arg(long, short = 'n', value_name = "NS", requires = "desired")]
    namespace: Option<String>,
    /// Policy directory for --desired/--live or --plan (repeatable).
    #[arg(long = "policies")]
    policies: Vec<PathBuf>,
    /// A Terraform plan as `terraform show -json PLANFILE` prints it: report the drift Terraform
    /// found while refreshing (`resource_drift`). No config needed.
    #[arg(long, value_name = "PLAN.json", conflicts_with_all = ["config", "desired", "live", "shard"])]
    plan: Option<PathBuf>,
    /// With --plan: keep only drift in attributes the configuration uses (`relevant_attributes`).
    #[arg(long, requires = "plan")]
    relevant_only: bool,
    /// Only these targets (repeatable).
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Also report live fields that nobody declared in Git.
    #[arg(long)]
    strict: bool,
    /// A policy builtin error is an error (exit 3), not undefined as in OPA's default
    /// (`policies.strict_builtins`).
    #[arg(long)]
    strict_builtins: bool,
    /// Run only this shard's targets, INDEX/COUNT with INDEX from 0 (default from
    /// JOB_COMPLETION_INDEX and JOB_COMPLETIONS when set).
    #[arg(long, value_name = "INDEX/COUNT", conflicts_with_all = ["desired", "live"])]
    shard: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args)]
struct ReconcileArgs {
    /// The config file (default: the embedded offline demo).
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Only these targets (repeatable).
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Override every target's mode.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Also report live fields that nobody declared in Git.
    #[arg(long)]
    strict: bool,
    /// A policy builtin error is an error (exit 3), not undefined as in OPA's default
    /// (`policies.strict_builtins`).
    #[arg(long)]
    strict_builtins: bool,
    /// Ask the servers what they would change (server-side dry run) instead of changing it.
    #[arg(long)]
    dry_run: bool,
    /// Run only this shard's targets, INDEX/COUNT with INDEX from 0 (default from
    /// JOB_COMPLETION_INDEX and JOB_COMPLETIONS when set).
    #[arg(long, value_name = "INDEX/COUNT")]
    shard: Option<String>,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Observe,
    Recommend,
    Autocorrect,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Run every `test_*` rule, like `opa test`.
    Test {
        /// Policy directories (default: policies).
        dirs: Vec<PathBuf>,
        /// Extra data files (JSON or YAML).
        #[arg(long = "data")]
        data: Vec<PathBuf>,
        /// Only tests whose name contains this text.
        #[arg(long)]
        run: Option<String>,
        /// Read the directories as Rego v0.
        #[arg(long)]
        rego_v0: bool,
        /// List every test.
        #[arg(short, long)]
        verbose: bool,
        /// After the results, print each policy file's line coverage (test files excluded).
        #[arg(long)]
        coverage: bool,
        /// A builtin error fails the test, instead of reading as undefined as in OPA's default.
        #[arg(long)]
        strict_builtins: bool,
    },
    /// Print the verdict for one policy input document. With conftest policies (`deny`,
    /// `violation`, `warn`), exit 1 when a failure is found, like `conftest test`.
    Eval {
        /// The input document (JSON or YAML).
        #[arg(long, short = 'i')]
        input: PathBuf,
        /// Policy directories (default: policies).
        #[arg(long = "policies", short = 'p')]
        policies: Vec<PathBuf>,
        /// Extra data files.
        #[arg(long = "data")]
        data: Vec<PathBuf>,
        /// Read the policy directories as Rego v0.
        #[arg(long)]
        rego_v0: bool,
        /// conftest policies: warnings fail too (exit 1 for warnings, 2 for failures).
        #[arg(long)]
        fail_on_warn: bool,
        /// A builtin error is an error (exit 3), instead of reading as undefined as in OPA's
        /// default.
        #[arg(long)]
        strict_builtins: bool,
    },
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl From<run::Error> for Failure {
    fn from(e: run::Error) -> Self {
        Failure {
            code: e.exit_code(),
            error: e.into(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure { code: 1, error: e }
    }
}

fn main() -> ExitCode {
    let _ = STARTED.set(Instant::now());
    // kube (rustls) and the AWS SDK bring two crypto backends: pick one process-wide, or the
    // first TLS client panics. An error only means one is installed already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    init_tracing(cli.log_format, &cli.log_level);
    match dispatch(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if is_broken_pipe(&f.error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {:#}", f.error);
            ExitCode::from(f.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .with_ansi(std::io::stderr().is_terminal())
            .compact()
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn dispatch(cmd: Cmd) -> Result<u8, Failure> {
    match cmd {
        Cmd::Diff(a) => cmd_diff(a),
        Cmd::Reconcile(a) => cmd_reconcile(a),
        Cmd::Policy(p) => cmd_policy(p),
        Cmd::Report(ReportCmd::Merge { files, out }) => cmd_report_merge(&files, &out),
        Cmd::GithubAction(a) => cmd_github_action(a),
        Cmd::PrCheck(a) => cmd_pr_check(a),
        Cmd::Stats(a) => cmd_stats(a),
        Cmd::Trust(TrustCmd::Reset {
            config,
            target,
            rule,
        }) => cmd_trust_reset(config.as_ref(), &target, &rule),
        Cmd::Watch(a) => cmd_watch(a),
        Cmd::Version => {
            print!("{}", driftwarden::version::report());
            Ok(0)
        }
        Cmd::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "driftwarden", &mut std::io::stdout());
            Ok(0)
        }
        Cmd::Man { dir } => cmd_man(dir.as_deref()),
        Cmd::Validate { config } => {
            let cfg = load_config(config.as_ref())?;
            println!(
                "{}: valid ({} target{})",
                cfg.source,
                cfg.targets.len(),
                if cfg.targets.len() == 1 { "" } else { "s" }
            );
            Ok(0)
        }
    }
}

/// `driftwarden man`: the top-level page on stdout, or every command's page into `dir`.
fn cmd_man(dir: Option<&Path>) -> Result<u8, Failure> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match dir {
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .context("writing the man page")?;
            out.flush().context("writing the man page")?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
    }
    Ok(0)
}

fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    if let Some(p) = path {
        let _ = CONFIG_PATH.set(p.clone());
    }
    let cfg = match path {
        Some(p) => config::load(p),
        None => config::embedded_default(),
    };
    cfg.map_err(|e| run::Error::from(e).into())
}

/// The state directory's lock for `command` (src/statelock.rs): held until the returned guard
/// is dropped; another run holding it past `state_lock_timeout` is exit 1.
fn lock_state(cfg: &Config, command: &str) -> Result<driftwarden::statelock::StateLock, Failure> {
    driftwarden::statelock::acquire(&cfg.state_dir, cfg.state_lock_timeout, command)
        .map_err(|e| Failure::from(anyhow::Error::from(e)))
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::from)
}

/// The `--policies` directories given on the command line, `None` when there are none.
fn policy_settings(dirs: &[PathBuf], strict_builtins: bool) -> Option<PolicySettings> {
    (!dirs.is_empty()).then(|| PolicySettings {
        dirs: dirs
            .iter()
            .map(|p| PolicyDirSetting {
                path: p.clone(),
                rego_v0: false,
            })
            .collect(),
        data: Vec::new(),
        interpreter: false,
        strict_builtins,
    })
}

/// The options `diff` and `reconcile` share over a config: target selection, `--strict`,
/// `--shard`, and progress on a terminal.
fn run_options(
    command: RunCommand,
    targets: Vec<String>,
    strict: bool,
    shard: Option<String>,
) -> Result<RunOptions, Failure> {
    let mut opts = RunOptions::new(command);
    opts.targets = targets;
    opts.strict = strict;
    opts.shard = resolve_shard(shard)?;
    opts.progress = std::io::stdout().is_terminal();
    Ok(opts)
}

fn cmd_diff(a: DiffArgs) -> Result<u8, Failure> {
    let (report, output) = if let Some(plan) = &a.plan {
        let policies = policy_settings(&a.policies, a.strict_builtins);
        let report = run::diff_plan(plan, policies.as_ref(), a.relevant_only)?;
        (report, None)
    } else if let (Some(d), Some(l)) = (&a.desired, &a.live) {
        let policies = policy_settings(&a.policies, a.strict_builtins);
        let report = run::diff_paths(d, l, a.namespace.as_deref(), a.strict, policies.as_ref())?;
        (report, None)
    } else {
        let mut cfg = load_config(a.config.as_ref())?;
        cfg.policies.strict_builtins |= a.strict_builtins;
        let opts = run_options(RunCommand::Diff, a.targets, a.strict, a.shard)?;
        let _lock = lock_state(&cfg, "diff")?;
        let report = runtime()?.block_on(run::run(&cfg, &opts))?;
        (report, Some(cfg.output))
    };
    emit(&report, &a.out, output.as_ref())?;
    Ok(run::report_exit_code(&report))
}

fn cmd_reconcile(a: ReconcileArgs) -> Result<u8, Failure> {
    let mut cfg = load_config(a.config.as_ref())?;
    cfg.policies.strict_builtins |= a.strict_builtins;
    let mut opts = run_options(RunCommand::Reconcile, a.targets, a.strict, a.shard)?;
    opts.dry_run = a.dry_run;
    opts.mode = a.mode.map(mode_of);
    let _lock = lock_state(&cfg, "reconcile")?;
    let report = runtime()?.block_on(run::run(&cfg, &opts))?;
    emit(&report, &a.out, Some(&cfg.output))?;
    Ok(run::report_exit_code(&report))
}

fn mode_of(m: ModeArg) -> Mode {
    match m {
        ModeArg::Observe => Mode::Observe,
        ModeArg::Recommend => Mode::Recommend,
        ModeArg::Autocorrect => Mode::Autocorrect,
    }
}

/// `watch`: everything is checked before anything starts (config and policies: exit 3; a
/// cluster unreachable at start: exit 1); then it runs until SIGTERM or SIGINT, finishes the
/// work in flight and exits 0 within 10 seconds.
fn cmd_watch(a: WatchArgs) -> Result<u8, Failure> {
    use driftwarden::watch::{Watch, WatchOptions};
    let cfg = load_config(Some(&a.config))?;
    // With leader election the replicas share the state directory and the Lease decides which
    // one acts; alone, watch holds the state lock for its whole life.
    let _lock = match cfg.watch.leader_election {
        Some(_) => None,
        None => Some(lock_state(&cfg, "watch")?),
    };
    let opts = WatchOptions {
        targets: a.targets,
        mode: a.mode.map(mode_of),
        audit_stdout: a.audit_stdout,
        ..WatchOptions::default()
    };
    let watch_failure = |e: driftwarden::watch::Error| Failure {
        code: e.exit_code(),
        error: e.into(),
    };
    let rt = runtime()?;
    rt.block_on(async {
        let watch = Watch::prepare(cfg, opts).await.map_err(watch_failure)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The loop runs on this thread (the forge's Git handles are not `Send`).
        let run = watch.run(stop_rx);
        tokio::pin!(run);
        let res = tokio::select! {
            res = &mut run => res,
            _ = shutdown_signal() => {
                tracing::info!("signal received: finishing the work in flight");
                let _ = stop_tx.send(true);
                // SIGTERM's promise: exit within 10 seconds. The loop finishes the correction
                // in flight first; one still going after 9 seconds is abandoned.
                match tokio::time::timeout(std::time::Duration::from_secs(9), &mut run).await {
                    Ok(res) => res,
                    Err(_) => {
                        tracing::error!("the work in flight did not finish within 9 seconds; exiting");
                        return Ok(0);
                    }
                }
            }
        };
        res.map(|()| 0).map_err(watch_failure)
    })
}

/// SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops watch");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn cmd_stats(a: StatsArgs) -> Result<u8, Failure> {
    use driftwarden::audit::{self, stats};
    let cfg = load_config(a.config.as_ref())?;
    let Some(window) = stats::parse_since(&a.since) else {
        return Err(run::Error::Usage(format!(
            "--since `{}`: expected a number with a unit, like 7d, 24h or 90m",
            a.since
        ))
        .into());
    };
    if let Some(t) = &a.target {
        if !cfg.targets.iter().any(|x| &x.name == t) {
            return Err(run::Error::Usage(format!("no target named {t} in {}", cfg.source)).into());
        }
    }
    let now = audit::now_unix();
    let since = now.saturating_sub(window);
    let dir = cfg.audit.dir(&cfg.state_dir);
    // A day more for context: episodes open and corrections made just before the window.
    let records = audit::read_dir(&dir, since.saturating_sub(86_400))
        .with_context(|| format!("cannot read the audit log in {}", dir.display()))?;
    let figures = stats::compute(&records, since, now, a.target.as_deref(), &cfg.trust);
    let text = match a.output {
        StatsFormat::Table => stats::render_table(&figures),
        StatsFormat::Json => {
            serde_json::to_string_pretty(&figures).context("cannot encode the figures")? + "\n"
        }
        StatsFormat::Prometheus => driftwarden::metrics::render_stats(&figures),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .context("cannot write the figures")?;
    Ok(0)
}

fn cmd_trust_reset(config: Option<&PathBuf>, target: &str, rule: &str) -> Result<u8, Failure> {
    use driftwarden::audit;
    let cfg = load_config(config)?;
    if !cfg.targets.iter().any(|x| x.name == target) {
        return Err(
            run::Error::Usage(format!("no target named {target} in {}", cfg.source)).into(),
        );
    }
    let _lock = lock_state(&cfg, "trust reset")?;
    let record = audit::append_one(
        &cfg.audit,
        &cfg.state_dir,
        "trust",
        audit::Event::TrustReset {
            target: target.to_string(),
            rule: rule.to_string(),
        },
    )
    .context("cannot record the reset in the audit log")?;
    println!(
        "trust reset: reverts of `{rule}` on target `{target}` before {} no longer count; recorded in {}",
        record.time,
        cfg.audit.dir(&cfg.state_dir).display()
    );
    Ok(0)
}

fn emit(
    report: &driftwarden::model::Report,
    out: &OutputArgs,
    settings: Option<&config::OutputSettings>,
) -> Result<(), Failure> {
    let format = match out.output {
        Some(OutFormat::Table) => Format::Table,
        Some(OutFormat::Json) => Format::Json,
        Some(OutFormat::Markdown) => Format::Markdown,
        Some(OutFormat::Sarif) => Format::Sarif,
        Some(OutFormat::Junit) => Format::Junit,
        None => settings
            .and_then(|s| s.format.parse::<Format>().ok())
            .unwrap_or(Format::Table),
    };
    let file = out
        .output_file
        .clone()
        .or_else(|| settings.and_then(|s| s.file.clone()));
    let color_setting = match out.color {
        Some(ColorArg::Always) => ColorChoice::Always,
        Some(ColorArg::Never) => ColorChoice::Never,
        Some(ColorArg::Auto) => ColorChoice::Auto,
        None => settings.map(|s| s.color).unwrap_or(ColorChoice::Auto),
    };
    let color = match color_setting {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            file.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let opts = RenderOptions {
        color,
        show_diff: !out.no_diff && settings.map(|s| s.show_diff).unwrap_or(true),
    };
    let text = match format {
        Format::Sarif => report::sarif::render(report, &sarif_options()),
        other => report::render(report, other, &opts),
    };
    match &file {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
                .context("cannot write the report")?;
        }
    }
    deliver(report, out, format, file.as_deref())
}

/// What a report feeds besides the main output: the JSON report file, GitHub Actions (step
/// summary, outputs, annotations) when running under Actions, and Prometheus metrics.
fn deliver(
    report: &driftwarden::model::Report,
    out: &OutputArgs,
    format: Format,
    file: Option<&Path>,
) -> Result<(), Failure> {
    if let Some(path) = &out.json_report {
        std::fs::write(path, report::json::render(report))
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))?;
    }
    let json_path = out.json_report.clone().or_else(|| {
        file.filter(|_| format == Format::Json)
            .map(Path::to_path_buf)
    });
    if let Some(env) = report::github_actions::ActionsEnv::from_env() {
        let abs = json_path
            .as_ref()
            .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        report::github_actions::publish(&env, report, abs.as_deref())
            .context("cannot publish the report to GitHub Actions")?;
    }
    if out.metrics_file.is_none() && out.pushgateway.is_none() {
        return Ok(());
    }
    let facts = driftwarden::metrics::RunFacts {
        duration_seconds: STARTED
            .get()
            .map(|s| s.elapsed().as_secs_f64())
            .unwrap_or(0.0),
        finished_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        api_requests: driftwarden::metrics::api_requests(),
        notifications: driftwarden::metrics::notifications(),
    };
    let text = driftwarden::metrics::render(report, &facts);
    if let Some(path) = &out.metrics_file {
        std::fs::write(path, &text)
            .with_context(|| format!("cannot write the metrics to {}", path.display()))?;
    }
    if let Some(url) = &out.pushgateway {
        let shard = SHARD.get().map(|s| s.index.to_string());
        let mut grouping = vec![("command", report.command.as_str())];
        if let Some(s) = &shard {
            grouping.push(("shard", s.as_str()));
        }
        let pushed = driftwarden::metrics::push_target(url, "driftwarden", &grouping)
            .map_err(anyhow::Error::from)
            .and_then(|t| {
                let rt = runtime().map_err(|f| f.error)?;
                rt.block_on(driftwarden::metrics::push(&t, &text))
                    .map_err(anyhow::Error::from)
            });
        // Metrics are a side channel: a Pushgateway outage must not fail (and retry) a run.
        if let Err(e) = pushed {
            tracing::error!(error = %format!("{e:#}"), "metrics were not pushed");
            eprintln!("warning: metrics were not pushed: {e:#}");
        }
    }
    Ok(())
}

/// SARIF locates drift that is not in Git (Unmanaged) at the config file.
fn sarif_options() -> report::sarif::SarifOptions {
    let mut o = report::sarif::SarifOptions::default();
    let cwd = std::env::current_dir().ok();
    let root = std::env::var_os("GITHUB_WORKSPACE")
        .filter(|w| !w.is_empty())
        .map(PathBuf::from)
        .or_else(|| cwd.clone());
    if let Some(p) = CONFIG_PATH.get() {
        let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
        o.config_uri = report::github_actions::workspace_relative(&abs, root.as_deref());
    }
    if let (Some(cwd), Some(root)) = (cwd, root) {
        o.paths = Some(report::github_actions::LocalPaths { cwd, root });
    }
    o
}

/// `--shard`, else the Indexed Job variables. Remembered for the metrics' grouping key.
fn resolve_shard(flag: Option<String>) -> Result<Option<Shard>, Failure> {
    let invalid =
        |e: driftwarden::shard::ShardError| Failure::from(run::Error::Usage(e.to_string()));
    let shard = match flag {
        Some(s) => Some(s.parse::<Shard>().map_err(invalid)?),
        None => Shard::from_env(
            std::env::var("JOB_COMPLETION_INDEX").ok().as_deref(),
            std::env::var("JOB_COMPLETIONS").ok().as_deref(),
        )
        .map_err(invalid)?,
    };
    if let Some(s) = shard {
        let _ = SHARD.set(s);
    }
    Ok(shard)
}

fn cmd_report_merge(files: &[PathBuf], out: &OutputArgs) -> Result<u8, Failure> {
    let mut reports = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read the report {name}"))?;
        let r: driftwarden::model::Report = serde_json::from_str(&text).map_err(|e| {
            Failure::from(run::Error::Usage(format!(
                "{name}:{}:{}: not a driftwarden JSON report: {e}",
                e.line(),
                e.column()
            )))
        })?;
        reports.push((name, r));
    }
    let merged = report::merge::merge(reports)
        .map_err(|e| Failure::from(run::Error::Usage(e.to_string())))?;
    emit(&merged, out, None)?;
    Ok(run::report_exit_code(&merged))
}

fn cmd_github_action(a: GithubActionArgs) -> Result<u8, Failure> {
    use report::github_actions as gha;
    let lenient = a.fail_on_drift.trim() == "false";
    let result = run_github_action(a);
    let code = match &result {
        Ok(c) => *c,
        Err(f) => f.code,
    };
    // The output carries driftwarden's own code; the step's status honours fail-on-drift.
    if let Some(p) = gha::ActionsEnv::from_env().and_then(|env| env.output) {
        let text = gha::file_commands(&[("exit-code".to_string(), code.to_string())])
            .map_err(anyhow::Error::from)?;
        gha::append(&p, "step outputs", &text).map_err(anyhow::Error::from)?;
    }
    result.map(|c| if c == 2 && lenient { 0 } else { c })
}

fn run_github_action(a: GithubActionArgs) -> Result<u8, Failure> {
    use report::github_actions::{self as gha, ActionInputs};
    let inputs = ActionInputs {
        command: a.command,
        config: a.config,
        mode: a.mode,
        working_directory: a.working_directory,
        args: a.args,
        fail_on_drift: a.fail_on_drift,
    };
    let invalid = |e: gha::ActionsError| Failure::from(run::Error::Usage(e.to_string()));
    let workspace = std::env::var_os("GITHUB_WORKSPACE")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty());
    let base = match &workspace {
        Some(ws) => ws.clone(),
        None => std::env::current_dir().context("cannot read the working directory")?,
    };
    let report_file = base.join(gha::ACTION_REPORT_FILE);
    let (argv, warnings) =
        gha::action_argv(&inputs, &report_file.display().to_string()).map_err(invalid)?;
    for w in warnings {
        eprintln!("{}", gha::command("warning", &[], &w));
    }
    let dir = inputs.working_directory.trim();
    if !dir.is_empty() {
        let dir = base.join(dir);
        std::env::set_current_dir(&dir)
            .with_context(|| format!("input working-directory: cannot enter {}", dir.display()))?;
    }
    tracing::info!(argv = ?argv, "running the action's command");
    match Cli::try_parse_from(std::iter::once("driftwarden".to_string()).chain(argv)) {
        Ok(cli) => dispatch(cli.command),
        Err(e) => Err(Failure::from(run::Error::Usage(format!(
            "input args: {}",
            e.render()
        )))),
    }
}

fn cmd_pr_check(a: PrCheckArgs) -> Result<u8, Failure> {
    use driftwarden::pr_check::{self, GitHubContext};
    let cfg = match &a.config {
        Some(p) => Some(load_config(Some(p))?),
        None => None,
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut opts = pr_check::Options::new();
    opts.repo = a.repo.clone();
    opts.base = a.base.clone();
    opts.head = a.head.clone();
    opts.plan = a.plan.clone();
    opts.post = !a.no_post;
    if opts.base.is_none() || opts.head.is_none() {
        opts.event = env("GITHUB_EVENT_PATH").map(PathBuf::from);
    }
    let prs = cfg
        .as_ref()
        .and_then(|c| c.pull_requests.clone())
        .filter(|p| p.forge == config::ForgeKind::GitHub);
    if let Some(c) = &cfg {
        opts.policies = c.policies.clone();
        let target = match &a.target {
            Some(name) => Some(c.targets.iter().find(|t| &t.name == name).ok_or_else(|| {
                Failure::from(run::Error::Usage(format!(
                    "no target named {name} in {}",
                    c.source
                )))
            })?),
            None if c.targets.len() == 1 => c.targets.first(),
            None => None,
        };
        if let Some(t) = target {
            opts.path = t.desired.path.clone();
            opts.include = t.desired.include.clone();
            opts.exclude = t.desired.exclude.clone();
            opts.namespace = t.namespace.clone();
        }
    }
    if let Some(p) = &a.path {
        opts.path = p.trim_matches('/').to_string();
    }
    if let Some(ns) = &a.namespace {
        opts.namespace = ns.clone();
    }
    if let Some(policies) = policy_settings(&a.policies, false) {
        opts.policies = policies;
    }
    opts.policies.strict_builtins |= a.strict_builtins;
    let event_repo = match &opts.event {
        Some(p) => pr_check::read_event(p).ok().map(|e| e.repo),
        None => None,
    };
    let repo = a
        .github_repo
        .clone()
        .or_else(|| prs.as_ref().and_then(|p| p.repo.clone()))
        .or(event_repo)
        .or_else(|| env("GITHUB_REPOSITORY"));
    if let Some(repo) = repo {
        let run_url = match (
            env("GITHUB_SERVER_URL"),
            env("GITHUB_REPOSITORY"),
            env("GITHUB_RUN_ID"),
        ) {
            (Some(s), Some(r), Some(id)) => Some(format!("{s}/{r}/actions/runs/{id}")),
            _ => None,
        };
        opts.github = Some(GitHubContext {
            api_url: a
                .api_url
                .clone()
                .or_else(|| prs.as_ref().and_then(|p| p.api_url.clone()))
                .or_else(|| env("GITHUB_API_URL")),
            repo,
            token_env: a
                .token_env
                .clone()
                .or_else(|| prs.as_ref().map(|p| p.token_env.clone()))
                .unwrap_or_else(|| "GITHUB_TOKEN".to_string()),
            pr: a.pr.unwrap_or(0),
            target_url: run_url,
        });
    }
    let outcome = runtime()?
        .block_on(pr_check::run(&opts))
        .map_err(|e| Failure {
            code: e.exit_code(),
            error: e.into(),
        })?;
    emit(&outcome.report, &a.out, cfg.as_ref().map(|c| &c.output))?;
    if let Some(note) = &outcome.posted {
        eprintln!("pr-check: {note}");
    }
    Ok(outcome.exit_code())
}

fn policy_dirs(dirs: &[PathBuf], rego_v0: bool) -> Vec<PolicyDir> {
    let dirs = if dirs.is_empty() {
        vec![PathBuf::from("policies")]
    } else {
        dirs.to_vec()
    };
    dirs.into_iter()
        .map(|path| PolicyDir { path, rego_v0 })
        .collect()
}

fn policy_failure(e: policy::PolicyError) -> Failure {
    run::Error::Policy(e).into()
}

fn cmd_policy(p: PolicyCmd) -> Result<u8, Failure> {
    match p {
        PolicyCmd::Test {
            dirs,
            data,
            run,
            rego_v0,
            verbose,
            coverage,
            strict_builtins,
        } => {
            let cfg = PolicyConfig {
                dirs: policy_dirs(&dirs, rego_v0),
                data_files: data,
                strict_builtins,
            };
            let (report, files) = if coverage {
                policy::run_tests_with_coverage(&cfg, run.as_deref()).map(|(r, f)| (r, Some(f)))
            } else {
                policy::run_tests(&cfg, run.as_deref()).map(|r| (r, None))
            }
            .map_err(policy_failure)?;
            print!("{}", policy::render_test_report(&report, verbose));
            if let Some(files) = files {
                print!("\n{}", policy::render_coverage(&files));
            }
            Ok(if report.failed > 0 { 1 } else { 0 })
        }
        PolicyCmd::Eval {
            input,
            policies,
            data,
            rego_v0,
            fail_on_warn,
            strict_builtins,
        } => {
            let cfg = PolicyConfig {
                dirs: policy_dirs(&policies, rego_v0),
                data_files: data,
                strict_builtins,
            };
            let answer = policy::eval_file(&input, &cfg).map_err(policy_failure)?;
            let text = serde_json::to_string_pretty(&answer).context("cannot render verdict")?;
            println!("{text}");
            // A verdict of any class is the answer itself; conftest answers fail like conftest.
            let Some((failures, warnings)) = conftest_counts(&answer) else {
                return Ok(0);
            };
            eprintln!(
                "policy eval: {failures} failure{}, {warnings} warning{}",
                if failures == 1 { "" } else { "s" },
                if warnings == 1 { "" } else { "s" }
            );
            Ok(conftest_exit_code(failures, warnings, fail_on_warn))
        }
    }
}

/// The `deny`/`violation` and `warn` messages of a conftest answer
/// (`{"<package>": {"deny": [..], "violation": [..], "warn": [..]}}`); `None` for a verdict
/// (`{"class", "reasons", "rules", "changes"}`).
fn conftest_counts(answer: &serde_json::Value) -> Option<(usize, usize)> {
    let packages = answer.as_object()?;
    let mut counts = (0, 0);
    for rules in packages.values() {
        // A verdict has string and list members; a conftest answer only maps of rules.
        for (rule, messages) in rules.as_object()? {
            let n = messages.as_array().map_or(0, Vec::len);
            match rule.as_str() {
                "deny" | "violation" => counts.0 += n,
                "warn" => counts.1 += n,
                _ => {}
            }
        }
    }
    Some(counts)
}

/// `policy eval`'s exit code for conftest answers, as `conftest test` computes it: 1 when a
/// `deny` or `violation` message is found; with `--fail-on-warn`, 2 for those and 1 when only
/// `warn` messages are.
fn conftest_exit_code(failures: usize, warnings: usize, fail_on_warn: bool) -> u8 {
    match (failures > 0, warnings > 0, fail_on_warn) {
        (true, _, false) => 1,
        (true, _, true) => 2,
        (false, true, true) => 1,
        (false, _, _) => 0,
    }
}
