//! Report rendering: the run's [`Report`] as a human table, as JSON (the versioned schema in
//! docs/report-schema.md), as Markdown for pull-request bodies and GitHub step summaries, as
//! SARIF 2.1.0 for code scanning, or as JUnit XML for CI dashboards; [`merge`] joins shards'
//! reports and [`github_actions`] hands a report to the Actions runner.
//!
//! Rendering is pure: no IO, and nothing is printed that the report does not already carry. The
//! one exception is [`github_actions::publish`], which appends to the files the runner names.
//! Secret values are masked upstream, before a report exists; these renderers never look behind
//! a mask (the whole objects in [`Drift::desired_object`](crate::model::Drift::desired_object)
//! and `live_object` are never read here). Text that came from a cluster or a repository is
//! escaped, so it cannot inject terminal sequences or Markdown structure.

use std::fmt;
use std::str::FromStr;

use crate::model::Report;

pub mod github_actions;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod merge;
mod render;
pub mod sarif;
pub mod table;

/// An output format (`-o table|json|markdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The human default: a five-second summary, then one block per drift with its diff.
    #[default]
    Table,
    /// The [`Report`] struct itself, pretty-printed: the machine-readable schema.
    Json,
    /// Pull-request bodies and GitHub Actions step summaries.
    Markdown,
    /// SARIF 2.1.0, for GitHub code scanning ([`sarif`]).
    Sarif,
    /// JUnit XML, for CI dashboards ([`junit`]).
    Junit,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 5] = [
        Format::Table,
        Format::Json,
        Format::Markdown,
        Format::Sarif,
        Format::Junit,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
            Format::Markdown => "markdown",
            Format::Sarif => "sarif",
            Format::Junit => "junit",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;

    /// Accepts `table`, `json`, `markdown` (and `md`), case-insensitively.
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            "sarif" => Ok(Format::Sarif),
            "junit" => Ok(Format::Junit),
            other => Err(format!(
                "unknown output format `{other}`: expected table, json, markdown, sarif or junit"
            )),
        }
    }
}

/// How to render. Only the table format uses colour; JSON and Markdown ignore both options
/// except that Markdown honours `show_diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderOptions {
    /// ANSI colours (the table only). Off by default; the CLI turns it on for a terminal.
    pub color: bool,
    /// A unified diff per drift (table and Markdown). On by default.
    pub show_diff: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            color: false,
            show_diff: true,
        }
    }
}

/// Renders a report. The result always ends with a newline.
pub fn render(report: &Report, format: Format, opts: &RenderOptions) -> String {
    match format {
        Format::Table => table::render(report, opts),
        Format::Json => json::render(report),
        Format::Markdown => markdown::render(report, opts),
        Format::Sarif => sarif::render(report, &sarif::SarifOptions::default()),
        Format::Junit => junit::render(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
        }
        assert_eq!("MD".parse::<Format>(), Ok(Format::Markdown));
        assert!("xml".parse::<Format>().unwrap_err().contains("xml"));
        assert_eq!(Format::default(), Format::Table);
        assert!(RenderOptions::default().show_diff);
        assert!(!RenderOptions::default().color);
    }
}
