//! Policy classification through regorus: every drift becomes one input document (schema v1,
//! docs/policy.md), Rego rules answer with findings, and the most severe class wins.
//!
//! Architecture invariants:
//! - Policies and data files are read once, in [`PolicyEngine::load`]; classification itself does
//!   no IO. A loaded engine is cloned per batch of evaluations, never re-parsed.
//! - **Fail safe**: a drift, or a field change, that no rule classifies is `risky`
//!   ([`DEFAULT_RULE`]). Nothing is ever `safe` by default.
//! - A policy that does not compile, calls a builtin regorus lacks, errors at evaluation or
//!   answers with a malformed finding is a [`PolicyError`]: the caller stops the run before
//!   anything is acted on (exit code 3).
//!
//! Module map: [`input`] builds the input document, [`engine`] loads and evaluates policies,
//! [`testing`] runs `test_*` rules like `opa test`; `loader` (private) finds files and checks
//! modules; `parity` (private) rewrites or refuses what regorus would evaluate differently from
//! OPA, and gives `sprintf` OPA's output.

use std::path::PathBuf;

pub mod engine;
pub mod input;
mod loader;
mod parity;
pub mod testing;

pub use engine::{PolicyConfig, PolicyDir, PolicyEngine, eval_file};
pub use input::{INPUT_SCHEMA_VERSION, Related, RunContext, policy_input};
pub use parity::Refusal;
pub use testing::{
    FileCoverage, TestOutcome, TestReport, render_coverage, render_test_report, run_tests,
    run_tests_with_coverage,
};

/// The rule name recorded when the fail-safe default classified a drift or a change.
pub const DEFAULT_RULE: &str = "driftwarden.default";

/// The reason recorded when no rule classified a drift at all.
pub const DEFAULT_REASON: &str = "no rule classified this drift";

/// Why policies could not be loaded or evaluated. Every variant means "stop before acting".
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A policy directory, policy file or data file could not be read.
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A configured policy directory does not exist.
    #[error("policy directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    /// A policy failed to parse or compile. `detail` is regorus' own text (with the code line and
    /// a caret), kept verbatim.
    #[error("policy {file}:{line}:{col} does not compile: {message}{detail}")]
    Compile {
        file: String,
        line: u32,
        col: u32,
        message: String,
        detail: String,
    },
    /// A policy calls a function that is neither a regorus builtin nor defined by a policy.
    #[error(
        "policy {file}:{line}:{col} calls {name}(), which is not a builtin of regorus {REGORUS_VERSION} and not defined by any loaded policy"
    )]
    MissingBuiltin {
        file: String,
        line: u32,
        col: u32,
        name: String,
    },
    /// A construct regorus 0.14.1 would evaluate differently from OPA (docs/policy.md,
    /// "Differences from OPA"): file, line, what each does, and the rewrite.
    #[error("{0}")]
    Refused(Box<Refusal>),
    /// A data file (policy parameters) is not valid JSON or YAML, or not an object.
    #[error("data file {}: {message}", path.display())]
    Data { path: PathBuf, message: String },
    /// Evaluating the policies failed (a runtime error inside a rule).
    #[error("policy evaluation failed for {subject}: {message}")]
    Eval { subject: String, message: String },
    /// A rule answered with something that is not a finding or verdict.
    #[error("malformed {what} from {rule} (defined in {files}): {problem}; got {value}")]
    Malformed {
        /// `finding` or `verdict`.
        what: &'static str,
        /// The rule path, like `data.driftwarden.kubernetes.classify`.
        rule: String,
        files: String,
        problem: String,
        value: String,
    },
    /// An input document for `policy eval` could not be read as JSON or YAML.
    #[error("input {}: {message}", path.display())]
    Input { path: PathBuf, message: String },
}

/// The pinned regorus version the policies are evaluated with (named in error messages).
pub const REGORUS_VERSION: &str = "0.14.1";

/// Result alias for this module.
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
