//! The Markdown report, for pull-request bodies, issues and GitHub Actions step summaries
//! (`$GITHUB_STEP_SUMMARY`): a summary table, a table of drifts, then one collapsed `<details>`
//! per drift with a table of its changes and a `diff` block.
//!
//! Text from the report is escaped for where it lands: table cells escape `|` and never break a
//! row, `<summary>` content is HTML-escaped, prose escapes Markdown punctuation, and code fences
//! are longer than any backtick run inside them.

use crate::model::{ChangeOp, Drift, DriftKind, FieldChange, Report};

use super::RenderOptions;
use super::render::{
    action_text, actions_text, attribution_lines, by_class_parts, by_kind_text, class_name,
    display_path, drift_diff, ignored_text, kind_label, mass_drift_lines, one_line,
    provenance_text, score_text, short_value,
};

/// Renders the Markdown report.
pub fn render(report: &Report, opts: &RenderOptions) -> String {
    let mut out = Vec::<String>::new();
    let s = &report.summary;
    let command = md_text(&report.command);
    if s.drifted == 0 {
        out.push(format!(
            "## driftwarden {command}: in sync ({} resources checked)",
            s.resources_checked
        ));
    } else {
        out.push(format!(
            "## driftwarden {command}: {} of {} resources drifted",
            s.drifted, s.resources_checked
        ));
    }
    out.push(String::new());

    if !report.errors.is_empty() || s.partial {
        out.push("> [!WARNING]".to_string());
        out.push(format!(
            "> **Partial read**: {} source(s) failed to load; nothing was deleted or pruned for the affected targets.",
            report.errors.len()
        ));
        for e in &report.errors {
            out.push(format!(
                "> - {} ({}): {}",
                md_text(&e.target),
                md_text(&e.side),
                md_text(&e.message)
            ));
        }
        out.push(String::new());
    }

    let mass = mass_drift_lines(s);
    if !mass.is_empty() {
        out.push("> [!CAUTION]".to_string());
        out.push("> **Mass drift**: too much of these targets drifted at once to propose each drift; one issue per target instead.".to_string());
        for line in mass {
            out.push(format!("> - {}", md_text(&line)));
        }
        out.push(String::new());
    }

    out.push("| Metric | Value |".to_string());
    out.push("| --- | --- |".to_string());
    let kinds = by_kind_text(s);
    let classes: Vec<String> = by_class_parts(s)
        .into_iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let rows = [
        ("Targets", s.targets.to_string()),
        ("Resources checked", s.resources_checked.to_string()),
        ("In sync", s.in_sync.to_string()),
        (
            "Drifted",
            if kinds.is_empty() {
                s.drifted.to_string()
            } else {
                format!("{} ({kinds})", s.drifted)
            },
        ),
        (
            "By class",
            if classes.is_empty() {
                "-".to_string()
            } else {
                classes.join(", ")
            },
        ),
        ("Fields ignored", ignored_text(s)),
        ("Actions", actions_text(s)),
        ("Compliance score", format!("**{}**", score_text(s))),
    ];
    for (k, v) in rows {
        let v = if k == "Compliance score" { v } else { cell(&v) };
        out.push(format!("| {k} | {v} |"));
    }
    if let Some(t) = super::render::trust_text(s) {
        out.push(format!("| Corrections | {} |", cell(&t)));
    }

    if report.drifts.is_empty() {
        out.push(String::new());
        out.push("No drift: every checked resource matches Git.".to_string());
    } else {
        out.push(String::new());
        out.push("### Drifts".to_string());
        out.push(String::new());
        let with_target = s.targets > 1;
        if with_target {
            out.push("| Target | Resource | Drift | Class | Changes | Action |".to_string());
            out.push("| --- | --- | --- | --- | ---: | --- |".to_string());
        } else {
            out.push("| Resource | Drift | Class | Changes | Action |".to_string());
            out.push("| --- | --- | --- | ---: | --- |".to_string());
        }
        for d in &report.drifts {
            let mut row = String::from("|");
            if with_target {
                row.push_str(&format!(" {} |", cell(&d.target)));
            }
            row.push_str(&format!(
                " {} | {} | {} | {} | {} |",
                cell(&d.resource.display),
                kind_label(d.kind),
                cell(&class_name(d)),
                if d.changes.is_empty() {
                    "-".to_string()
                } else {
                    d.changes.len().to_string()
                },
                cell(&action_text(d)),
            ));
            out.push(row);
        }
        for d in &report.drifts {
            out.push(String::new());
            details(&mut out, d, opts);
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn details(out: &mut Vec<String>, d: &Drift, opts: &RenderOptions) {
    out.push("<details>".to_string());
    out.push(format!(
        "<summary><b>{}</b>: {}, {}, {}</summary>",
        html(&d.resource.display),
        html(kind_label(d.kind)),
        html(&class_name(d)),
        html(&action_text(d)),
    ));
    out.push(String::new());
    match d.kind {
        DriftKind::Missing => out.push("Only in Git: absent from the live side.".to_string()),
        DriftKind::Unmanaged => {
            out.push("Only live: carries the tracking label but is absent from Git.".to_string())
        }
        DriftKind::Modified => {}
    }
    if d.kind != DriftKind::Modified {
        out.push(String::new());
    }
    if let Some(v) = &d.verdict {
        let reasons: Vec<String> = v.reasons.iter().map(|r| md_text(r)).collect();
        let mut line = format!("- **Class:** {}", v.class);
        if !reasons.is_empty() {
            line.push_str(&format!(": {}", reasons.join("; ")));
        }
        out.push(line);
        if !v.rules.is_empty() {
            let rules: Vec<String> = v.rules.iter().map(|r| code(r)).collect();
            out.push(format!("- **Rules:** {}", rules.join(", ")));
        }
    }
    for who in attribution_lines(d) {
        out.push(format!("- **Who:** {}", md_text(&who)));
    }
    if let Some(src) = provenance_text(d) {
        out.push(format!("- **Source:** {}", code(&src)));
    }
    if let Some(a) = &d.action {
        let mut line = format!("- **Action:** {}", md_text(&action_text(d)));
        if let Some(detail) = &a.detail {
            line.push_str(&format!(": {}", md_text(detail)));
        }
        out.push(line);
    }
    out.push(format!("- **Fingerprint:** {}", code(&d.fingerprint)));

    if !d.changes.is_empty() {
        out.push(String::new());
        out.push("| Field | Desired | Live | Changed by |".to_string());
        out.push("| --- | --- | --- | --- |".to_string());
        for c in &d.changes {
            let (desired, live) = change_cells(d.kind, c);
            let who = c
                .attribution
                .as_ref()
                .map(|a| cell(&a.to_string()))
                .unwrap_or_default();
            out.push(format!(
                "| {} | {desired} | {live} | {who} |",
                cell_code(&display_path(&c.path))
            ));
        }
    }

    if opts.show_diff {
        let lines: Vec<String> = drift_diff(d).into_iter().map(|l| l.text).collect();
        if !lines.is_empty() {
            let fence = fence_for(&lines);
            out.push(String::new());
            out.push(format!("{fence}diff"));
            out.extend(lines);
            out.push(fence);
        }
    }
    out.push(String::new());
    out.push("</details>".to_string());
}

/// One drift as a collapsed `<details>` block (its changes table and, with `show_diff`, its
/// diff), for pull-request and issue bodies. The same text as in the full report.
pub fn render_drift(d: &Drift, opts: &RenderOptions) -> String {
    let mut out = Vec::new();
    details(&mut out, d, opts);
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// The Desired and Live cells of one change; an absent side is `_absent_`.
fn change_cells(kind: DriftKind, c: &FieldChange) -> (String, String) {
    let absent = "_absent_".to_string();
    let desired_absent = c.op == ChangeOp::ExtraLive || kind == DriftKind::Unmanaged;
    let live_absent = c.op == ChangeOp::MissingLive || kind == DriftKind::Missing;
    let desired = if desired_absent {
        absent.clone()
    } else {
        cell_code(&short_value(&c.desired))
    };
    let live = if live_absent {
        absent
    } else {
        cell_code(&short_value(&c.live))
    };
    (desired, live)
}

/// A table cell: one line, `|` escaped, Markdown punctuation escaped.
fn cell(s: &str) -> String {
    md_text(s)
}

/// A table cell as inline code: one line, `|` escaped (GitHub splits cells before parsing code
/// spans, so `\|` is needed even inside backticks).
fn cell_code(s: &str) -> String {
    code(s).replace('|', "\\|")
}

/// Inline code with a backtick fence longer than any run inside.
fn code(s: &str) -> String {
    let s = one_line(s);
    let longest = longest_backtick_run(&s);
    let fence = "`".repeat(longest + 1);
    if longest == 0 {
        format!("{fence}{s}{fence}")
    } else {
        format!("{fence} {s} {fence}")
    }
}

/// A code fence longer than any backtick run in the block (at least three).
fn fence_for(lines: &[String]) -> String {
    let longest = lines
        .iter()
        .map(|l| longest_backtick_run(l))
        .max()
        .unwrap_or(0);
    "`".repeat((longest + 1).max(3))
}

fn longest_backtick_run(s: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == '`' {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// Prose: one line, every Markdown- or HTML-significant character backslash-escaped.
fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in one_line(s).chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '['
                | ']'
                | '<'
                | '>'
                | '|'
                | '#'
                | '!'
                | '~'
                | '&'
                | '{'
                | '}'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// HTML text (inside `<summary>`, where Markdown is not parsed).
fn html(s: &str) -> String {
    one_line(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('|', "&#124;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_escape_pipes() {
        assert_eq!(cell("a|b"), "a\\|b");
        assert_eq!(cell_code("a|b"), "`a\\|b`");
        assert_eq!(code("a`b"), "`` a`b ``");
        assert_eq!(cell("x\ny"), "x\\\\ny");
        assert_eq!(html("<b>&"), "&lt;b&gt;&amp;");
    }

    #[test]
    fn fences_outgrow_backticks() {
        assert_eq!(fence_for(&["no ticks".into()]), "```");
        assert_eq!(fence_for(&["a ```` b".into()]), "`````");
    }
}
