//! GitHub Actions: what a run tells the workflow it runs in.
//!
//! Under Actions (`GITHUB_ACTIONS=true`) every command that produced a report calls [`publish`]:
//!
//! - the Markdown report is appended to `$GITHUB_STEP_SUMMARY` (kept under GitHub's 1 MiB cap:
//!   without the per-drift diffs when too large, then cut with a note);
//! - the step outputs ([`OUTPUTS`]: drift counts by class, resources checked, compliance score,
//!   the JSON report's path, pull request and issue URLs) are appended to `$GITHUB_OUTPUT` in the
//!   environment-file syntax, multi-line values in the `name<<DELIMITER` form with a delimiter
//!   that never occurs in the value;
//! - one annotation per drift is printed as a workflow command on stderr (`::error` for
//!   forbidden, `::warning` for risky and unclassified, `::notice` for safe) at the file and line
//!   where Git declares the object, so it shows on the manifest in a pull request's diff. Stderr,
//!   because stdout may carry the report itself (`-o json`); the runner reads commands from both.
//!
//! The text each of those gets is built by pure functions ([`annotations`], [`outputs`],
//! [`file_commands`], [`step_summary`]); [`publish`] and [`append`] are the only IO in
//! `report/`, appending to the files the runner named. [`PullRequestEvent`] reads the
//! `$GITHUB_EVENT_PATH` payload for `pr-check`. [`action_argv`] turns the action's inputs
//! (action.yml) into the command line the container runs.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{Action, Class, Provenance, Report};

use super::RenderOptions;

/// GitHub's cap on one step's summary.
pub const STEP_SUMMARY_LIMIT: usize = 1024 * 1024;

/// Every output a report sets, as action.yml declares them.
pub const OUTPUTS: &[&str] = &[
    "drifted",
    "safe",
    "risky",
    "forbidden",
    "unclassified",
    "resources-checked",
    "in-sync",
    "compliance-score",
    "report-path",
    "pr-urls",
    "issue-urls",
];

/// The commands the action runs.
pub const ACTION_COMMANDS: &[&str] = &["reconcile", "diff", "pr-check"];

/// The JSON report the action writes, relative to the workspace.
pub const ACTION_REPORT_FILE: &str = "driftwarden-report.json";

/// Every way talking to the runner fails.
#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    #[error("cannot append the {what} to {path}")]
    Write {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the event payload {path}")]
    ReadEvent {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the event payload {path} is not valid JSON: {message}")]
    EventJson { path: String, message: String },
    #[error("the event payload {path} is not a pull request event: {why}")]
    NotPullRequest { path: String, why: String },
    #[error("action input `{input}`: {why}")]
    Input { input: &'static str, why: String },
    #[error("output name `{0}` is not a valid output name")]
    OutputName(String),
}

pub type Result<T, E = ActionsError> = std::result::Result<T, E>;

/// The files and facts the runner hands a step. Present only under Actions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsEnv {
    /// `$GITHUB_OUTPUT`.
    pub output: Option<PathBuf>,
    /// `$GITHUB_STEP_SUMMARY`.
    pub step_summary: Option<PathBuf>,
    /// `$GITHUB_EVENT_PATH`.
    pub event_path: Option<PathBuf>,
    /// `$GITHUB_EVENT_NAME`, e.g. `pull_request`, `schedule`.
    pub event_name: Option<String>,
    /// `$GITHUB_WORKSPACE`: report paths are given relative to it.
    pub workspace: Option<PathBuf>,
}

impl ActionsEnv {
    /// Reads the process environment: `Some` only when `GITHUB_ACTIONS` is `true`.
    pub fn from_env() -> Option<ActionsEnv> {
        ActionsEnv::from_vars(|k| std::env::var(k).ok())
    }

    /// Like [`from_env`](Self::from_env), from any variable lookup (tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Option<ActionsEnv> {
        if get("GITHUB_ACTIONS").as_deref() != Some("true") {
            return None;
        }
        let path = |k| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        Some(ActionsEnv {
            output: path("GITHUB_OUTPUT"),
            step_summary: path("GITHUB_STEP_SUMMARY"),
            event_path: path("GITHUB_EVENT_PATH"),
            event_name: get("GITHUB_EVENT_NAME").filter(|v| !v.is_empty()),
            workspace: path("GITHUB_WORKSPACE"),
        })
    }
}

/// Escapes workflow-command data (the message): `%`, CR and LF.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow-command property value: as data, plus `:` and `,`.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One workflow command line: `::name key=value,...::message`.
pub fn command(name: &str, props: &[(&str, String)], message: &str) -> String {
    let mut s = format!("::{name}");
    for (i, (k, v)) in props.iter().enumerate() {
        s.push(if i == 0 { ' ' } else { ',' });
        s.push_str(k);
        s.push('=');
        s.push_str(&escape_property(v));
    }
    s.push_str("::");
    s.push_str(&escape_data(message));
    s
}

/// The annotation command for a class.
pub fn annotation_level(class: Option<Class>) -> &'static str {
    match class {
        Some(Class::Forbidden) => "error",
        Some(Class::Safe) => "notice",
        Some(Class::Risky) | None => "warning",
    }
}

/// Where relative paths start and which directory the repository is: for mapping a directory
/// source's manifests to repository paths ([`repo_path`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalPaths {
    /// The working directory relative source paths were resolved against.
    pub cwd: PathBuf,
    /// The repository checkout (`$GITHUB_WORKSPACE`), which annotation and SARIF paths are
    /// relative to.
    pub root: PathBuf,
}

/// A drift's manifest as a path in the repository. A Git source records files relative to the
/// repository root already. A directory source records them relative to the directory, which
/// is joined on and made relative to `paths.root` when it lies inside it; otherwise the recorded
/// file is kept.
pub fn repo_path(p: &Provenance, paths: Option<&LocalPaths>) -> String {
    let file = p.file.replace('\\', "/");
    let Some(paths) = paths else { return file };
    if p.commit.is_some() || p.source.contains("://") || p.source.starts_with("git@") {
        return file;
    }
    let joined = paths.cwd.join(&p.source).join(&p.file);
    let mut normal = PathBuf::new();
    for c in joined.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other.as_os_str()),
        }
    }
    match normal.strip_prefix(&paths.root) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.to_string_lossy().replace('\\', "/"),
        _ => file,
    }
}

/// One annotation line per drift (at its Git file and line when known) and per failed source.
pub fn annotations(report: &Report, paths: Option<&LocalPaths>) -> String {
    let mut out = String::new();
    for d in &report.drifts {
        let class = d.verdict.as_ref().map(|v| v.class);
        let class_text = class.map(|c| c.to_string());
        let mut props: Vec<(&str, String)> = Vec::new();
        if let Some(p) = &d.provenance {
            props.push(("file", repo_path(p, paths)));
            props.push(("line", p.line.max(1).to_string()));
        }
        props.push((
            "title",
            format!(
                "{} drift: {} ({})",
                class_text.as_deref().unwrap_or("unclassified"),
                d.resource.display,
                d.kind
            ),
        ));
        let mut msg = format!("{} drifted from Git ({}).", d.resource.display, d.kind);
        for c in d.changes.iter().take(10) {
            msg.push_str(&format!(
                "\n{}: {} -> {}",
                if c.path.is_empty() { "/" } else { &c.path },
                super::render::short_value(&c.desired),
                super::render::short_value(&c.live)
            ));
            if let Some(a) = &c.attribution {
                msg.push_str(&format!(" (changed by {a})"));
            }
        }
        if d.changes.len() > 10 {
            msg.push_str(&format!("\n... and {} more", d.changes.len() - 10));
        }
        if let Some(v) = &d.verdict {
            for r in &v.reasons {
                msg.push_str(&format!("\nreason: {r}"));
            }
            if !v.rules.is_empty() {
                msg.push_str(&format!("\nrules: {}", v.rules.join(", ")));
            }
        }
        if d.action.is_some() {
            msg.push_str(&format!("\naction: {}", super::render::action_text(d)));
        }
        out.push_str(&command(annotation_level(class), &props, &msg));
        out.push('\n');
    }
    for e in &report.errors {
        out.push_str(&command(
            "error",
            &[("title", format!("driftwarden: {} state unreadable", e.side))],
            &format!("target {}: {}", e.target, e.message),
        ));
        out.push('\n');
    }
    out
}

/// The step outputs of a report, in [`OUTPUTS`] order. `report_path` is the JSON report's path as
/// the workflow sees it (see [`workspace_relative`]); empty when none was written.
pub fn outputs(report: &Report, report_path: Option<&str>) -> Vec<(String, String)> {
    let s = &report.summary;
    let class = |c: &str| s.by_class.get(c).copied().unwrap_or(0).to_string();
    let urls = |want: fn(&Action) -> bool| {
        let mut v: Vec<String> = Vec::new();
        for d in &report.drifts {
            let Some(a) = &d.action else { continue };
            if !want(&a.action) {
                continue;
            }
            for u in a.detail.as_deref().map(find_urls).unwrap_or_default() {
                if !v.contains(&u) {
                    v.push(u);
                }
            }
        }
        v.join("\n")
    };
    vec![
        ("drifted".into(), s.drifted.to_string()),
        ("safe".into(), class("safe")),
        ("risky".into(), class("risky")),
        ("forbidden".into(), class("forbidden")),
        ("unclassified".into(), class("unclassified")),
        ("resources-checked".into(), s.resources_checked.to_string()),
        ("in-sync".into(), s.in_sync.to_string()),
        (
            "compliance-score".into(),
            format!("{:.1}", s.compliance_score),
        ),
        (
            "report-path".into(),
            report_path.unwrap_or_default().to_string(),
        ),
        ("pr-urls".into(), urls(|a| matches!(a, Action::PullRequest))),
        ("issue-urls".into(), urls(|a| matches!(a, Action::Issue))),
    ]
}

/// The `http(s)://` URLs in a text, trailing punctuation trimmed.
pub fn find_urls(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '(' | ')'))
        .filter(|w| w.starts_with("https://") || w.starts_with("http://"))
        .map(|w| {
            w.trim_end_matches(['.', ',', ';', ':', '!', '?', '\'', ']'])
                .to_string()
        })
        .filter(|w| w.len() > "https://".len())
        .collect()
}

/// The `$GITHUB_OUTPUT` text for outputs: `name=value` lines, and for multi-line values
/// `name<<DELIMITER`, the value, `DELIMITER`, with a delimiter found in neither.
pub fn file_commands(outputs: &[(String, String)]) -> Result<String> {
    let mut out = String::new();
    for (name, value) in outputs {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ActionsError::OutputName(name.clone()));
        }
        if value.contains('\n') || value.contains('\r') {
            let delimiter = delimiter_for(name, value);
            out.push_str(&format!("{name}<<{delimiter}\n{value}\n{delimiter}\n"));
        } else {
            out.push_str(&format!("{name}={value}\n"));
        }
    }
    Ok(out)
}

/// `ghadelimiter_<hex>`: derived from the value's hash, lengthened until it occurs nowhere in it.
fn delimiter_for(name: &str, value: &str) -> String {
    let mut seed = format!("{name}\0{value}");
    loop {
        let digest = Sha256::digest(seed.as_bytes());
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let d = format!("ghadelimiter_{hex}");
        if !value.contains(&d) && !name.contains(&d) {
            return d;
        }
        seed.push('\0');
    }
}

/// The Markdown for `$GITHUB_STEP_SUMMARY`, at most [`STEP_SUMMARY_LIMIT`] bytes.
pub fn step_summary(report: &Report) -> String {
    let full = super::markdown::render(report, &RenderOptions::default());
    if full.len() <= STEP_SUMMARY_LIMIT {
        return full;
    }
    let lean = super::markdown::render(
        report,
        &RenderOptions {
            color: false,
            show_diff: false,
        },
    );
    if lean.len() <= STEP_SUMMARY_LIMIT {
        return lean;
    }
    let note = "\n\n> [!NOTE]\n> The report was cut to fit GitHub's 1 MiB step summary; the JSON report (output `report-path`) has everything.\n";
    let mut cut = STEP_SUMMARY_LIMIT - note.len();
    while !lean.is_char_boundary(cut) {
        cut -= 1;
    }
    // Cut at a line end so no table row or tag is left half-written.
    let end = lean[..cut].rfind('\n').unwrap_or(cut);
    format!("{}{note}", &lean[..end])
}

/// `path` relative to the workspace when it lies inside it (what later steps, running in the
/// workspace, can open), else as given.
pub fn workspace_relative(path: &Path, workspace: Option<&Path>) -> String {
    if let Some(ws) = workspace {
        if let Ok(rel) = path.strip_prefix(ws) {
            let s = rel.to_string_lossy().replace('\\', "/");
            return if s.is_empty() { ".".to_string() } else { s };
        }
    }
    path.to_string_lossy().into_owned()
}

/// Appends text to a runner file.
pub fn append(path: &Path, what: &'static str, text: &str) -> Result<()> {
    let write = |source| ActionsError::Write {
        what,
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(write)?;
    f.write_all(text.as_bytes()).map_err(write)?;
    f.flush().map_err(write)
}

/// Publishes a report to the runner: step summary, outputs, and annotations on stderr.
/// `report_path` is where the JSON report was written, if anywhere.
pub fn publish(env: &ActionsEnv, report: &Report, report_path: Option<&Path>) -> Result<()> {
    if let Some(p) = &env.step_summary {
        let mut md = step_summary(report);
        md.push('\n');
        append(p, "step summary", &md)?;
    }
    if let Some(p) = &env.output {
        let rel = report_path.map(|r| workspace_relative(r, env.workspace.as_deref()));
        let text = file_commands(&outputs(report, rel.as_deref()))?;
        append(p, "step outputs", &text)?;
    }
    let paths = std::env::current_dir().ok().map(|cwd| LocalPaths {
        root: env.workspace.clone().unwrap_or_else(|| cwd.clone()),
        cwd,
    });
    let text = annotations(report, paths.as_ref());
    if !text.is_empty() {
        let mut err = std::io::stderr().lock();
        // Annotations are best effort: a closed stderr must not fail the run.
        let _ = err.write_all(text.as_bytes()).and_then(|_| err.flush());
    }
    tracing::debug!(
        summary = env.step_summary.is_some(),
        outputs = env.output.is_some(),
        "published the report to GitHub Actions"
    );
    Ok(())
}

/// The pull request a `pull_request` (or `pull_request_target`) event is about, from the payload
/// at `$GITHUB_EVENT_PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestEvent {
    /// `action`: opened, synchronize, reopened, ...
    pub action: String,
    pub number: u64,
    pub html_url: String,
    pub draft: bool,
    /// `owner/name` of the base repository.
    pub repository: String,
    pub base_ref: String,
    pub base_sha: String,
    pub head_ref: String,
    pub head_sha: String,
    /// `owner/name` of the head repository; differs from `repository` for a fork.
    pub head_repository: String,
}

impl PullRequestEvent {
    /// True when the head branch lives in a fork (its token cannot write to the base).
    pub fn is_fork(&self) -> bool {
        self.head_repository != self.repository
    }

    /// Reads and parses the payload file.
    pub fn from_file(path: &Path) -> Result<PullRequestEvent> {
        let text = std::fs::read_to_string(path).map_err(|source| ActionsError::ReadEvent {
            path: path.display().to_string(),
            source,
        })?;
        PullRequestEvent::parse(&text, &path.display().to_string())
    }

    /// Parses a payload; `name` is for messages.
    pub fn parse(text: &str, name: &str) -> Result<PullRequestEvent> {
        let v: Value = serde_json::from_str(text).map_err(|e| ActionsError::EventJson {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        let not_pr = |why: &str| ActionsError::NotPullRequest {
            path: name.to_string(),
            why: why.to_string(),
        };
        let pr = v
            .get("pull_request")
            .filter(|p| p.is_object())
            .ok_or_else(|| not_pr("no `pull_request` object"))?;
        let s = |v: &Value, ptr: &str| -> Result<String> {
            v.pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| not_pr(&format!("`pull_request{ptr}` is missing")))
        };
        let number = pr
            .get("number")
            .and_then(Value::as_u64)
            .or_else(|| v.get("number").and_then(Value::as_u64))
            .ok_or_else(|| not_pr("`pull_request.number` is missing"))?;
        let repository = v
            .pointer("/repository/full_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .map_or_else(|| s(pr, "/base/repo/full_name"), Ok)?;
        let head_repository = pr
            .pointer("/head/repo/full_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| repository.clone());
        Ok(PullRequestEvent {
            action: v
                .get("action")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            number,
            html_url: pr
                .get("html_url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            draft: pr.get("draft").and_then(Value::as_bool).unwrap_or(false),
            repository,
            base_ref: s(pr, "/base/ref")?,
            base_sha: s(pr, "/base/sha")?,
            head_ref: s(pr, "/head/ref")?,
            head_sha: s(pr, "/head/sha")?,
            head_repository,
        })
    }
}

/// The action's inputs (action.yml), as its entrypoint receives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionInputs {
    pub command: String,
    pub config: String,
    pub mode: String,
    pub working_directory: String,
    pub args: String,
    pub fail_on_drift: String,
}

/// The command line the action runs (without the program name), and warnings for inputs that
/// do not apply. `--json-report` is added for `reconcile` and `diff` unless the extra arguments
/// name one, so the `report-path` output is always set.
pub fn action_argv(inputs: &ActionInputs, report_file: &str) -> Result<(Vec<String>, Vec<String>)> {
    let command = inputs.command.trim();
    let command = if command.is_empty() {
        "reconcile"
    } else {
        command
    };
    if !ACTION_COMMANDS.contains(&command) {
        return Err(ActionsError::Input {
            input: "command",
            why: format!("`{command}` is not one of: {}", ACTION_COMMANDS.join(", ")),
        });
    }
    let mut warnings = Vec::new();
    let mut argv = vec![command.to_string()];
    if !inputs.config.trim().is_empty() {
        argv.push("--config".into());
        argv.push(inputs.config.trim().to_string());
    }
    let mode = inputs.mode.trim();
    if !mode.is_empty() {
        if !["observe", "recommend", "autocorrect"].contains(&mode) {
            return Err(ActionsError::Input {
                input: "mode",
                why: format!("`{mode}` is not one of: observe, recommend, autocorrect"),
            });
        }
        if command == "reconcile" {
            argv.push("--mode".into());
            argv.push(mode.to_string());
        } else {
            warnings.push(format!(
                "input `mode` applies to `reconcile` only; ignored for `{command}`"
            ));
        }
    }
    let extra =
        split_args(&inputs.args).map_err(|why| ActionsError::Input { input: "args", why })?;
    let names_report = extra
        .iter()
        .any(|a| a == "--json-report" || a.starts_with("--json-report="));
    argv.extend(extra);
    if matches!(command, "reconcile" | "diff") && !names_report {
        argv.push("--json-report".into());
        argv.push(report_file.to_string());
    }
    match inputs.fail_on_drift.trim() {
        "" | "true" | "false" => {}
        other => {
            return Err(ActionsError::Input {
                input: "fail-on-drift",
                why: format!("`{other}` is not true or false"),
            });
        }
    }
    Ok((argv, warnings))
}

/// Splits a string into arguments like a POSIX shell does for words: whitespace separates,
/// single quotes are literal, double quotes allow `\"` and `\\`, a backslash outside quotes
/// escapes the next character. No expansion of any kind happens.
pub fn split_args(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unclosed double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unclosed double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_follows_the_toolkit() {
        assert_eq!(escape_data("50%\r\nx:y,z"), "50%25%0D%0Ax:y,z");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
        assert_eq!(
            command(
                "warning",
                &[("file", "a,b.yaml".into()), ("line", "3".into())],
                "m\n2"
            ),
            "::warning file=a%2Cb.yaml,line=3::m%0A2"
        );
        assert_eq!(command("notice", &[], "x"), "::notice::x");
    }

    #[test]
    fn multiline_outputs_use_a_delimiter_absent_from_the_value() {
        let text = file_commands(&[
            ("a".into(), "1".into()),
            ("b".into(), "x\ny".into()),
            ("c".into(), String::new()),
        ])
        .unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "a=1");
        let d = lines[1].strip_prefix("b<<").unwrap();
        assert!(d.starts_with("ghadelimiter_"));
        assert_eq!(&lines[2..5], &["x", "y", d]);
        assert_eq!(lines[5], "c=");
        assert!(file_commands(&[("bad name".into(), "v".into())]).is_err());
        // A value that contains the first candidate delimiter gets another one.
        let first = delimiter_for("b", "v");
        let tricky = format!("{first}\nmore");
        assert_ne!(delimiter_for("b", &tricky), first);
    }

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split_args(r#" --target 'a b' "c \"d\"" e\ f  "" "#).unwrap(),
            vec!["--target", "a b", "c \"d\"", "e f", ""]
        );
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        assert!(split_args("'open").is_err());
        assert!(split_args("\"open").is_err());
        assert_eq!(split_args("$HOME `x`").unwrap(), vec!["$HOME", "`x`"]);
    }

    #[test]
    fn argv_from_inputs() {
        let inputs = ActionInputs {
            command: "reconcile".into(),
            config: "ops/driftwarden.yaml".into(),
            mode: "observe".into(),
            working_directory: String::new(),
            args: "--target prod -o sarif --output-file out.sarif".into(),
            fail_on_drift: "false".into(),
        };
        let (argv, warnings) = action_argv(&inputs, "r.json").unwrap();
        assert_eq!(
            argv,
            vec![
                "reconcile",
                "--config",
                "ops/driftwarden.yaml",
                "--mode",
                "observe",
                "--target",
                "prod",
                "-o",
                "sarif",
                "--output-file",
                "out.sarif",
                "--json-report",
                "r.json"
            ]
        );
        assert!(warnings.is_empty());
        let diff = ActionInputs {
            command: "diff".into(),
            mode: "observe".into(),
            args: "--json-report=mine.json".into(),
            ..ActionInputs::default()
        };
        let (argv, warnings) = action_argv(&diff, "r.json").unwrap();
        assert_eq!(argv, vec!["diff", "--json-report=mine.json"]);
        assert_eq!(warnings.len(), 1);
        let pr = ActionInputs {
            command: "pr-check".into(),
            ..ActionInputs::default()
        };
        assert_eq!(action_argv(&pr, "r.json").unwrap().0, vec!["pr-check"]);
        for bad in [
            ActionInputs {
                command: "apply".into(),
                ..ActionInputs::default()
            },
            ActionInputs {
                mode: "yolo".into(),
                ..ActionInputs::default()
            },
            ActionInputs {
                args: "'x".into(),
                ..ActionInputs::default()
            },
            ActionInputs {
                fail_on_drift: "maybe".into(),
                ..ActionInputs::default()
            },
        ] {
            assert!(action_argv(&bad, "r.json").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn env_only_under_actions() {
        assert_eq!(ActionsEnv::from_vars(|_| None), None);
        let env = ActionsEnv::from_vars(|k| match k {
            "GITHUB_ACTIONS" => Some("true".into()),
            "GITHUB_OUTPUT" => Some("/tmp/out".into()),
            "GITHUB_STEP_SUMMARY" => Some(String::new()),
            _ => None,
        })
        .unwrap();
        assert_eq!(env.output, Some(PathBuf::from("/tmp/out")));
        assert_eq!(env.step_summary, None);
    }

    #[test]
    fn urls_and_paths() {
        assert_eq!(
            find_urls("opened https://github.com/o/r/pull/7. see (http://x.test/a)"),
            vec!["https://github.com/o/r/pull/7", "http://x.test/a"]
        );
        assert_eq!(
            workspace_relative(Path::new("/ws/sub/r.json"), Some(Path::new("/ws"))),
            "sub/r.json"
        );
        assert_eq!(
            workspace_relative(Path::new("/tmp/r.json"), Some(Path::new("/ws"))),
            "/tmp/r.json"
        );
    }

    #[test]
    fn directory_sources_map_to_repository_paths() {
        let p = |source: &str, commit: Option<&str>| Provenance {
            source: source.into(),
            file: "apps/web.yaml".into(),
            line: 3,
            commit: commit.map(str::to_string),
        };
        let paths = LocalPaths {
            cwd: PathBuf::from("/ws/ops"),
            root: PathBuf::from("/ws"),
        };
        assert_eq!(
            repo_path(&p("../k8s", None), Some(&paths)),
            "k8s/apps/web.yaml"
        );
        assert_eq!(
            repo_path(&p("/ws/k8s/./x", None), Some(&paths)),
            "k8s/x/apps/web.yaml"
        );
        // Outside the checkout, from a Git repository, or without paths: as recorded.
        assert_eq!(
            repo_path(&p("/elsewhere", None), Some(&paths)),
            "apps/web.yaml"
        );
        assert_eq!(
            repo_path(&p(".", Some("abc")), Some(&paths)),
            "apps/web.yaml"
        );
        assert_eq!(
            repo_path(&p("https://github.com/acme/gitops", None), Some(&paths)),
            "apps/web.yaml"
        );
        assert_eq!(repo_path(&p("k8s", None), None), "apps/web.yaml");
    }

    #[test]
    fn pull_request_payload() {
        let payload = r#"{
          "action": "synchronize", "number": 42,
          "pull_request": {
            "number": 42, "html_url": "https://github.com/acme/gitops/pull/42", "draft": false,
            "head": {"ref": "feature", "sha": "aaa", "repo": {"full_name": "someone/gitops"}},
            "base": {"ref": "main", "sha": "bbb", "repo": {"full_name": "acme/gitops"}}
          },
          "repository": {"full_name": "acme/gitops"}
        }"#;
        let e = PullRequestEvent::parse(payload, "event.json").unwrap();
        assert_eq!(e.number, 42);
        assert_eq!(e.base_ref, "main");
        assert_eq!(e.head_sha, "aaa");
        assert!(e.is_fork());
        assert!(matches!(
            PullRequestEvent::parse(r#"{"schedule": "0 * * * *"}"#, "e"),
            Err(ActionsError::NotPullRequest { .. })
        ));
        assert!(matches!(
            PullRequestEvent::parse("{", "e"),
            Err(ActionsError::EventJson { .. })
        ));
    }
}
