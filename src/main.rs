//! The driftwarden command line: parses arguments, calls the library, prints the report and
//! maps the outcome to an exit code (0 in sync, 2 drift found, 1 runtime failure, 3 invalid
//! config, policy or input).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use driftwarden::config::{self, ColorChoice, Config, PolicyDirSetting, PolicySettings};
use driftwarden::model::Mode;
use driftwarden::policy::{self, PolicyConfig, PolicyDir};
use driftwarden::report::{self, Format, RenderOptions};
use driftwarden::run::{self, Command as RunCommand, RunOptions};

#[derive(Parser)]
#[command(
    name = "driftwarden",
    version,
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
}

#[derive(Clone, Copy, ValueEnum)]
enum OutFormat {
    Table,
    Json,
    Markdown,
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
    /// Policy directory for --desired/--live (repeatable).
    #[arg(long = "policies")]
    policies: Vec<PathBuf>,
    /// Only these targets (repeatable).
    #[arg(long = "target", short = 't')]
    targets: Vec<String>,
    /// Also report live fields that nobody declared in Git.
    #[arg(long)]
    strict: bool,
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
    /// Ask the servers what they would change (server-side dry run) instead of changing it.
    #[arg(long)]
    dry_run: bool,
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
    },
    /// Print the verdict for one policy input document.
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

fn load_config(path: Option<&PathBuf>) -> Result<Config, Failure> {
    let cfg = match path {
        Some(p) => config::load(p),
        None => config::embedded_default(),
    };
    cfg.map_err(|e| run::Error::from(e).into())
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .map_err(Failure::from)
}

fn cmd_diff(a: DiffArgs) -> Result<u8, Failure> {
    let (report, output) = if let (Some(d), Some(l)) = (&a.desired, &a.live) {
        let policies = if a.policies.is_empty() {
            None
        } else {
            Some(PolicySettings {
                dirs: a
                    .policies
                    .iter()
                    .map(|p| PolicyDirSetting {
                        path: p.clone(),
                        rego_v0: false,
                    })
                    .collect(),
                data: Vec::new(),
            })
        };
        let report = run::diff_paths(d, l, a.strict, policies.as_ref())?;
        (report, None)
    } else {
        let cfg = load_config(a.config.as_ref())?;
        let mut opts = RunOptions::new(RunCommand::Diff);
        opts.targets = a.targets;
        opts.strict = a.strict;
        opts.progress = std::io::stdout().is_terminal();
        let report = runtime()?.block_on(run::run(&cfg, &opts))?;
        (report, Some(cfg.output))
    };
    emit(&report, &a.out, output.as_ref())?;
    Ok(run::report_exit_code(&report))
}

fn cmd_reconcile(a: ReconcileArgs) -> Result<u8, Failure> {
    let cfg = load_config(a.config.as_ref())?;
    let mut opts = RunOptions::new(RunCommand::Reconcile);
    opts.targets = a.targets;
    opts.strict = a.strict;
    opts.progress = std::io::stdout().is_terminal();
    opts.dry_run = a.dry_run;
    opts.mode = a.mode.map(|m| match m {
        ModeArg::Observe => Mode::Observe,
        ModeArg::Recommend => Mode::Recommend,
        ModeArg::Autocorrect => Mode::Autocorrect,
    });
    let report = runtime()?.block_on(run::run(&cfg, &opts))?;
    emit(&report, &a.out, Some(&cfg.output))?;
    Ok(run::report_exit_code(&report))
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
        None => match settings.map(|s| s.format.as_str()) {
            Some("json") => Format::Json,
            Some("markdown") => Format::Markdown,
            _ => Format::Table,
        },
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
    let text = report::render(report, format, &opts);
    match file {
        Some(path) => std::fs::write(&path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|_| stdout.flush())
                .context("cannot write the report")?;
        }
    }
    Ok(())
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
        } => {
            let dirs = policy_dirs(&dirs, rego_v0);
            let report = policy::run_tests(&dirs, &data, run.as_deref()).map_err(policy_failure)?;
            print!("{}", policy::render_test_report(&report, verbose));
            Ok(if report.failed > 0 { 1 } else { 0 })
        }
        PolicyCmd::Eval {
            input,
            policies,
            data,
            rego_v0,
        } => {
            let cfg = PolicyConfig {
                dirs: policy_dirs(&policies, rego_v0),
                data_files: data,
            };
            let verdict = policy::eval_file(&input, &cfg).map_err(policy_failure)?;
            let text = serde_json::to_string_pretty(&verdict).context("cannot render verdict")?;
            println!("{text}");
            Ok(0)
        }
    }
}
