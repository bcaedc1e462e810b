//! JUnit XML (`-o junit`), for CI dashboards (GitLab, Jenkins, Buildkite, test reporters).
//!
//! The layout most consumers read (the Ant/Surefire shape): `<testsuites>` with one `<testsuite>`
//! per target that drifted or failed to load, and one testcase per drifted resource, failing with
//! the class as `type` and the changes as text; a source that failed to load is a testcase with
//! an `<error>`. A last suite, `driftwarden`, holds one passing testcase for the resources in sync,
//! so a dashboard shows checked, in sync and drifted at a glance, and its `<properties>` carry the
//! summary figures (compliance score included).
//!
//! The report carries no list of in-sync resources (only their count), so in-sync resources are
//! one testcase, not one each. Text is escaped for XML, and characters XML 1.0 cannot carry
//! (control characters) are replaced. Pure: no IO.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::model::{Drift, Report, SourceError};

use super::render::{action_text, class_name, display_path, kind_label, scalar};

#[derive(Default)]
struct Suite<'a> {
    drifts: Vec<&'a Drift>,
    errors: Vec<&'a SourceError>,
}

/// Renders the JUnit XML document, with a trailing newline.
pub fn render(report: &Report) -> String {
    let mut suites: BTreeMap<&str, Suite<'_>> = BTreeMap::new();
    for d in &report.drifts {
        suites.entry(&d.target).or_default().drifts.push(d);
    }
    for e in &report.errors {
        suites.entry(&e.target).or_default().errors.push(e);
    }
    let s = &report.summary;
    let total_tests: usize = report.drifts.len() + report.errors.len() + 1;
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{total_tests}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"0\">",
        attr(&format!("driftwarden {}", report.command)),
        report.drifts.len(),
        report.errors.len()
    );
    for (target, suite) in &suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"0\">",
            attr(target),
            suite.drifts.len() + suite.errors.len(),
            suite.drifts.len(),
            suite.errors.len()
        );
        for e in &suite.errors {
            let _ = writeln!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"0\">",
                attr(&format!("read {} state", e.side)),
                attr(&classname(target, "source"))
            );
            let _ = writeln!(
                out,
                "      <error message=\"{}\" type=\"source-error\">{}</error>",
                attr(&e.message),
                text(&e.message)
            );
            out.push_str("    </testcase>\n");
        }
        for d in &suite.drifts {
            testcase(&mut out, d);
        }
        out.push_str("  </testsuite>\n");
    }
    let _ = writeln!(
        out,
        "  <testsuite name=\"driftwarden\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\" time=\"0\">"
    );
    out.push_str("    <properties>\n");
    let props: Vec<(String, String)> = vec![
        ("command".into(), report.command.clone()),
        ("targets".into(), s.targets.to_string()),
        ("resources_checked".into(), s.resources_checked.to_string()),
        ("in_sync".into(), s.in_sync.to_string()),
        ("drifted".into(), s.drifted.to_string()),
        ("compliance_score".into(), s.compliance_score.to_string()),
        ("partial".into(), s.partial.to_string()),
    ];
    let class_props = s
        .by_class
        .iter()
        .map(|(k, v)| (format!("class.{k}"), v.to_string()));
    for (k, v) in props.into_iter().chain(class_props) {
        let _ = writeln!(
            out,
            "      <property name=\"{}\" value=\"{}\"/>",
            attr(&k),
            attr(&v)
        );
    }
    out.push_str("    </properties>\n");
    let _ = writeln!(
        out,
        "    <testcase name=\"{}\" classname=\"driftwarden.summary\" time=\"0\"/>",
        attr(&format!(
            "{} of {} resources in sync (compliance {}%)",
            s.in_sync, s.resources_checked, s.compliance_score
        ))
    );
    out.push_str("  </testsuite>\n");
    out.push_str("</testsuites>\n");
    out
}

fn testcase(out: &mut String, d: &Drift) {
    let mut open = format!(
        "    <testcase name=\"{}\" classname=\"{}\" time=\"0\"",
        attr(&d.resource.display),
        attr(&classname(&d.target, &d.resource.id.type_name()))
    );
    if let Some(p) = &d.provenance {
        let _ = write!(open, " file=\"{}\" line=\"{}\"", attr(&p.file), p.line);
    }
    open.push('>');
    out.push_str(&open);
    out.push('\n');
    let class = class_name(d);
    let message = format!(
        "{}: {} ({class})",
        kind_label(d.kind),
        match d.changes.len() {
            0 => "whole object".to_string(),
            1 => "1 field differs".to_string(),
            n => format!("{n} fields differ"),
        }
    );
    let mut body = Vec::new();
    body.push(format!("fingerprint: {}", d.fingerprint));
    if let Some(p) = &d.provenance {
        let mut s = format!("declared at {}:{}", p.file, p.line);
        if let Some(c) = &p.commit {
            s.push_str(&format!(" @ {c}"));
        }
        body.push(s);
    }
    for c in &d.changes {
        let mut s = format!(
            "{}: {} -> {}",
            display_path(&c.path),
            scalar(&c.desired),
            scalar(&c.live)
        );
        if let Some(a) = &c.attribution {
            s.push_str(&format!(" (changed by {a})"));
        }
        body.push(s);
    }
    if let Some(v) = &d.verdict {
        for r in &v.reasons {
            body.push(format!("reason: {r}"));
        }
        if !v.rules.is_empty() {
            body.push(format!("rules: {}", v.rules.join(", ")));
        }
    }
    if d.action.is_some() {
        body.push(format!("action: {}", action_text(d)));
    }
    let _ = writeln!(
        out,
        "      <failure message=\"{}\" type=\"{}\">{}</failure>",
        attr(&message),
        attr(&class),
        text(&body.join("\n"))
    );
    out.push_str("    </testcase>\n");
}

/// `driftwarden.<target>.<Kind>`: dots inside the parts become underscores, so reporters that
/// split the class name on dots see three levels.
fn classname(target: &str, kind: &str) -> String {
    format!(
        "driftwarden.{}.{}",
        target.replace('.', "_"),
        kind.replace('.', "_")
    )
}

/// Escapes text content.
fn text(s: &str) -> String {
    escape(s, false)
}

/// Escapes an attribute value (double-quoted). Newlines and tabs become character references,
/// so attribute normalization keeps them.
fn attr(s: &str) -> String {
    escape(s, true)
}

/// Escapes markup characters (and, in an attribute, quotes and white space other than the
/// space); a character XML cannot hold becomes U+FFFD.
fn escape(s: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\r' if attribute => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if !xml_char(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The XML 1.0 `Char` production.
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(text("a<b>&c\u{1b}"), "a&lt;b&gt;&amp;c\u{fffd}");
        assert_eq!(attr("\"x'\n"), "&quot;x&apos;&#10;");
    }

    #[test]
    fn in_sync_report_has_one_passing_case() {
        let r = Report::new("diff", 1, 3, Default::default(), Vec::new(), Vec::new());
        let x = render(&r);
        assert!(x.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites"));
        assert!(x.contains("tests=\"1\" failures=\"0\" errors=\"0\""));
        assert!(x.contains("3 of 3 resources in sync"));
        assert!(x.ends_with("</testsuites>\n"));
    }
}
