//! The human report: a summary read in five seconds, a one-line-per-drift table, then one block
//! per drift with the policy's verdict, who changed what, where it came from in Git, what
//! driftwarden did, and a unified diff of desired against live.
//!
//! ANSI colours appear only when [`RenderOptions::color`] is set; every piece of text that came
//! from the report is escaped first, so without colour the output holds no escape byte at all.

use crate::model::{Drift, DriftKind, Report};

use super::RenderOptions;
use super::render::{
    LineTag, action_text, actions_text, attribution_lines, by_class_parts, by_kind_text,
    class_name, drift_diff, ignored_text, kind_label, mass_drift_lines, one_line, provenance_text,
    score_text,
};

/// Width of the labels in the summary and the drift blocks.
const SUMMARY_LABEL: usize = 18;
const BLOCK_LABEL: usize = 8;

#[derive(Clone, Copy)]
enum Style {
    Bold,
    Dim,
    Red,
    BoldRed,
    Green,
    Yellow,
    Cyan,
    Magenta,
}

impl Style {
    fn code(self) -> &'static str {
        match self {
            Style::Bold => "1",
            Style::Dim => "2",
            Style::Red => "31",
            Style::BoldRed => "1;31",
            Style::Green => "32",
            Style::Yellow => "33",
            Style::Cyan => "36",
            Style::Magenta => "35",
        }
    }
}

/// The only place escape sequences are made.
struct Painter {
    color: bool,
}

impl Painter {
    fn paint(&self, style: Style, text: &str) -> String {
        if self.color && !text.trim().is_empty() {
            format!("\x1b[{}m{text}\x1b[0m", style.code())
        } else {
            text.to_string()
        }
    }

    fn class(&self, class: &str, text: &str) -> String {
        let style = match class {
            "safe" => Style::Green,
            "risky" => Style::Yellow,
            "forbidden" => Style::BoldRed,
            _ => Style::Magenta,
        };
        self.paint(style, text)
    }

    fn kind(&self, kind: DriftKind, text: &str) -> String {
        let style = match kind {
            DriftKind::Modified => Style::Yellow,
            DriftKind::Missing => Style::Red,
            DriftKind::Unmanaged => Style::Cyan,
        };
        self.paint(style, text)
    }
}

/// Renders the table report.
pub fn render(report: &Report, opts: &RenderOptions) -> String {
    let p = Painter { color: opts.color };
    let mut out = Vec::<String>::new();
    summary(&mut out, report, &p);
    partial_read(&mut out, report, &p);
    let mass = mass_drift_lines(&report.summary);
    if !mass.is_empty() {
        out.push(String::new());
        out.push(p.paint(Style::BoldRed, "MASS DRIFT:"));
        for line in mass {
            out.push(format!("  {line}"));
        }
    }
    if report.drifts.is_empty() {
        out.push(String::new());
        out.push(p.paint(
            Style::Green,
            "No drift: every checked resource matches Git.",
        ));
    } else {
        out.push(String::new());
        drift_table(&mut out, report, &p);
        for drift in &report.drifts {
            out.push(String::new());
            block(&mut out, drift, report.summary.targets > 1, opts, &p);
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

fn summary(out: &mut Vec<String>, report: &Report, p: &Painter) {
    let s = &report.summary;
    let headline = if s.drifted == 0 {
        format!(
            "driftwarden {}: in sync, {} resources checked, compliance {}",
            one_line(&report.command),
            s.resources_checked,
            score_text(s)
        )
    } else {
        format!(
            "driftwarden {}: {} of {} resources drifted, compliance {}",
            one_line(&report.command),
            s.drifted,
            s.resources_checked,
            score_text(s)
        )
    };
    out.push(p.paint(Style::Bold, &headline));
    out.push(String::new());

    let row = |label: &str, value: String| format!("  {label:<SUMMARY_LABEL$}{value}");
    let targets = if s.targets == 1 {
        "1 target".to_string()
    } else {
        format!("{} targets", s.targets)
    };
    out.push(row(
        "resources checked",
        format!("{} ({targets})", s.resources_checked),
    ));
    out.push(row("in sync", s.in_sync.to_string()));
    let kinds = by_kind_text(s);
    out.push(row(
        "drifted",
        if kinds.is_empty() {
            s.drifted.to_string()
        } else {
            format!("{} ({kinds})", s.drifted)
        },
    ));
    let classes = by_class_parts(s);
    let classes = if classes.is_empty() {
        "-".to_string()
    } else {
        classes
            .iter()
            .map(|(c, n)| p.class(c, &format!("{c} {n}")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.push(row("by class", classes));
    out.push(row("fields ignored", ignored_text(s)));
    out.push(row("actions", actions_text(s)));
    let score = score_text(s);
    let score_style = if s.compliance_score >= 100.0 {
        Style::Green
    } else if s.compliance_score >= 80.0 {
        Style::Yellow
    } else {
        Style::Red
    };
    out.push(row("compliance score", p.paint(score_style, &score)));
    if let Some(t) = super::render::trust_text(s) {
        out.push(row("corrections", t));
    }
}

fn partial_read(out: &mut Vec<String>, report: &Report, p: &Painter) {
    if report.errors.is_empty() && !report.summary.partial {
        return;
    }
    out.push(String::new());
    let n = report.errors.len();
    let head = format!(
        "PARTIAL READ: {n} source{} failed to load; nothing was deleted or pruned for the affected target{}.",
        if n == 1 { "" } else { "s" },
        if n == 1 { "" } else { "s" },
    );
    out.push(p.paint(Style::BoldRed, &head));
    for e in &report.errors {
        out.push(format!(
            "  {} ({}): {}",
            one_line(&e.target),
            one_line(&e.side),
            one_line(&e.message)
        ));
    }
}

fn drift_table(out: &mut Vec<String>, report: &Report, p: &Painter) {
    let with_target = report.summary.targets > 1;
    let mut rows: Vec<(Vec<String>, &Drift)> = Vec::new();
    for d in &report.drifts {
        let changes = if d.changes.is_empty() {
            "-".to_string()
        } else {
            d.changes.len().to_string()
        };
        let mut cells = vec![
            one_line(&d.resource.display),
            kind_label(d.kind).to_string(),
            class_name(d),
            changes,
            action_text(d),
        ];
        if with_target {
            cells.insert(0, one_line(&d.target));
        }
        rows.push((cells, d));
    }
    let mut header: Vec<String> = ["RESOURCE", "DRIFT", "CLASS", "CHANGES", "ACTION"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if with_target {
        header.insert(0, "TARGET".to_string());
    }
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (cells, _) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let off = usize::from(with_target);
    let line = |cells: &[String], paint: &dyn Fn(usize, String) -> String| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            // CHANGES is a number: right-align it.
            let padded = if i == off + 3 {
                format!("{}{c}", " ".repeat(pad))
            } else if i + 1 == cols {
                c.clone()
            } else {
                format!("{c}{}", " ".repeat(pad))
            };
            s.push_str(&paint(i, padded));
            if i + 1 < cols {
                s.push_str("  ");
            }
        }
        s
    };
    out.push(line(&header, &|_, c| p.paint(Style::Bold, &c)));
    for (cells, d) in &rows {
        let class = class_name(d);
        out.push(line(cells, &|i, c| {
            if i == off + 1 {
                p.kind(d.kind, &c)
            } else if i == off + 2 {
                p.class(&class, &c)
            } else {
                c
            }
        }));
    }
}

fn block(out: &mut Vec<String>, d: &Drift, with_target: bool, opts: &RenderOptions, p: &Painter) {
    let class = class_name(d);
    out.push(format!(
        "{} {}: {}",
        p.class(&class, &format!("[{class}]")),
        p.paint(Style::Bold, &one_line(&d.resource.display)),
        p.kind(d.kind, kind_label(d.kind)),
    ));
    let field = |out: &mut Vec<String>, label: &str, values: Vec<String>| {
        for (i, v) in values.into_iter().enumerate() {
            let l = if i == 0 { label } else { "" };
            out.push(
                format!(
                    "  {}{v}",
                    p.paint(Style::Dim, &format!("{l:<BLOCK_LABEL$}"))
                )
                .trim_end()
                .to_string(),
            );
        }
    };
    if let Some(v) = &d.verdict {
        let reasons: Vec<String> = if v.reasons.is_empty() {
            vec!["(no reason given)".to_string()]
        } else {
            v.reasons.iter().map(|r| one_line(r)).collect()
        };
        field(out, "reasons", reasons);
        if !v.rules.is_empty() {
            let rules: Vec<String> = v.rules.iter().map(|r| one_line(r)).collect();
            field(out, "rules", vec![rules.join(", ")]);
        }
    }
    let who = attribution_lines(d);
    if !who.is_empty() {
        field(out, "who", who);
    }
    if let Some(src) = provenance_text(d) {
        field(out, "source", vec![src]);
    }
    if let Some(a) = &d.action {
        let mut text = action_text(d);
        if let Some(detail) = &a.detail {
            text.push_str(": ");
            text.push_str(&one_line(detail));
        }
        field(out, "action", vec![text]);
    }
    let mut id = format!("fingerprint {}", one_line(&d.fingerprint));
    if with_target {
        id = format!("target {}, {id}", one_line(&d.target));
    }
    field(out, "id", vec![id]);
    if !opts.show_diff {
        return;
    }
    for line in drift_diff(d) {
        let text = match line.tag {
            LineTag::FileHeader => p.paint(Style::Bold, &line.text),
            LineTag::Hunk => p.paint(Style::Cyan, &line.text),
            LineTag::Removed => p.paint(Style::Red, &line.text),
            LineTag::Added => p.paint(Style::Green, &line.text),
            LineTag::Context => line.text,
            LineTag::Note => p.paint(Style::Dim, &line.text),
        };
        out.push(format!("  {text}").trim_end().to_string());
    }
}
