//! Helpers shared by the human formats: value rendering, the per-drift unified diff, summary
//! phrasing, and escaping of text that came from a cluster or a repository.
//!
//! Everything here reads only what the [`Report`](crate::model::Report) carries. Values are
//! printed exactly as the report holds them: a masked value is already the mask text and is
//! never looked behind.

use serde_json::Value;
use similar::udiff::UnifiedHunkHeader;
use similar::{Algorithm, ChangeTag, DiffOp, capture_diff_slices, group_diff_ops};

use crate::model::{ChangeOp, Drift, DriftKind, FieldChange, Summary};

/// The most diff lines printed per drift; the rest is counted, and the JSON report has it all.
pub(crate) const MAX_DIFF_LINES: usize = 150;

/// Longest value shown in a one-line cell (markdown tables).
pub(crate) const MAX_CELL_CHARS: usize = 80;

/// One line of a rendered diff, tagged so each format can colour or fence it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiffLine {
    pub tag: LineTag,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineTag {
    /// `--- desired` / `+++ live`.
    FileHeader,
    /// `@@ -1,2 +1,2 @@`.
    Hunk,
    Context,
    Removed,
    Added,
    /// Not part of the diff proper: "... N more lines".
    Note,
}

impl DiffLine {
    fn new(tag: LineTag, text: impl Into<String>) -> DiffLine {
        DiffLine {
            tag,
            text: text.into(),
        }
    }
}

/// Makes untrusted text safe to print on one line: every control character (newline and escape
/// included) and every bidirectional override becomes a visible escape, so a value read from a
/// cluster can neither inject terminal sequences nor reorder what the reader sees.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Control characters and the Unicode bidi controls (Trojan Source).
fn is_unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The last segment of a JSON pointer, unescaped (`/metadata/labels/a~1b` → `a/b`).
pub(crate) fn leaf(pointer: &str) -> String {
    let seg = pointer.rsplit('/').next().unwrap_or(pointer);
    if seg.is_empty() {
        return "/".to_string();
    }
    seg.replace("~1", "/").replace("~0", "~")
}

/// A JSON pointer as displayed: the root is `/`.
pub(crate) fn display_path(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".to_string()
    } else {
        one_line(pointer)
    }
}

/// A scalar as YAML would print it: plain when unambiguous, JSON-quoted otherwise. Objects and
/// arrays come out as compact JSON. Always one line, always free of control characters.
pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            if needs_quotes(s) {
                quoted(s)
            } else {
                s.clone()
            }
        }
        Value::Array(_) | Value::Object(_) => {
            one_line(&serde_json::to_string(v).unwrap_or_else(|_| "?".to_string()))
        }
    }
}

fn quoted(s: &str) -> String {
    // serde_json escapes control characters; bidi controls are escaped on top.
    let q = serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", one_line(s)));
    if q.chars().any(is_unsafe_char) {
        one_line(&q)
    } else {
        q
    }
}

/// True when a string printed bare would read as something else (a number, a bool, null, YAML
/// syntax) or would carry invisible or control characters.
fn needs_quotes(s: &str) -> bool {
    if s.is_empty() || s.trim() != s {
        return true;
    }
    if s.chars().any(is_unsafe_char) {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null" | "~" | "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n"
    ) {
        return true;
    }
    if s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o") {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) {
        return true;
    }
    s.contains(": ") || s.contains(" #") || s.ends_with(':')
}

/// A value shortened for a one-line cell.
pub(crate) fn short_value(v: &Value) -> String {
    truncate(&scalar(v), MAX_CELL_CHARS)
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Appends `path: value` lines for a value: scalars on one line, multi-line strings as a YAML
/// block scalar, objects and arrays flattened into one line per leaf (`path/key: value`).
pub(crate) fn value_lines(path: &str, v: &Value, out: &mut Vec<String>) {
    let label = display_path(path);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                value_lines(&format!("{path}/{escaped}"), child, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                value_lines(&format!("{path}/{i}"), child, out);
            }
        }
        Value::Object(_) => out.push(format!("{label}: {{}}")),
        Value::Array(_) => out.push(format!("{label}: []")),
        Value::String(s) if is_block_candidate(s) => {
            let (body, indicator) = match s.strip_suffix('\n') {
                Some(body) => (body, "|"),
                None => (s.as_str(), "|-"),
            };
            out.push(format!("{label}: {indicator}"));
            for line in body.split('\n') {
                if line.is_empty() {
                    out.push(String::new());
                } else {
                    out.push(format!("  {}", one_line(line)));
                }
            }
        }
        other => out.push(format!("{label}: {}", scalar(other))),
    }
}

/// Multi-line text reads best as a block scalar, when nothing but newlines and tabs is special.
fn is_block_candidate(s: &str) -> bool {
    s.contains('\n')
        && s.trim_end_matches('\n').contains(|c: char| c != '\n')
        && !s
            .chars()
            .any(|c| c != '\n' && c != '\t' && is_unsafe_char(c))
        && !s.starts_with(' ')
}

/// Which sides of a change exist, given its op and the drift's kind.
fn sides(drift_kind: DriftKind, change: &FieldChange) -> (bool, bool) {
    let (mut desired, mut live) = match change.op {
        ChangeOp::Changed => (true, true),
        ChangeOp::MissingLive => (true, false),
        ChangeOp::ExtraLive => (false, true),
    };
    match drift_kind {
        DriftKind::Missing => live = false,
        DriftKind::Unmanaged => desired = false,
        DriftKind::Modified => {}
    }
    (desired, live)
}

/// One change's lines on each side.
struct Region {
    path: String,
    old: Vec<String>,
    new: Vec<String>,
}

/// Each change of a drift as `path: value` lines, desired (Git) on the old side and live on the
/// new side, in the order of the report's changes.
fn regions(drift: &Drift) -> Vec<Region> {
    let mut out = Vec::new();
    for change in &drift.changes {
        let (has_desired, has_live) = sides(drift.kind, change);
        let mut old = Vec::new();
        let mut new = Vec::new();
        if has_desired {
            value_lines(&change.path, &change.desired, &mut old);
        }
        if has_live {
            value_lines(&change.path, &change.live, &mut new);
        }
        if has_desired && has_live && old == new {
            // Masked values print the same on both sides; say that they differ.
            let note = if change.masked {
                "  # value differs (masked)"
            } else {
                "  # representation differs"
            };
            if let Some(last) = new.last_mut() {
                last.push_str(note);
            }
        }
        out.push(Region {
            path: change.path.clone(),
            old,
            new,
        });
    }
    out
}

/// Moves a diff op computed on one region to its place in the whole drift.
fn shift(op: DiffOp, old_base: usize, new_base: usize) -> DiffOp {
    match op {
        DiffOp::Equal {
            old_index,
            new_index,
            len,
        } => DiffOp::Equal {
            old_index: old_index + old_base,
            new_index: new_index + new_base,
            len,
        },
        DiffOp::Delete {
            old_index,
            old_len,
            new_index,
        } => DiffOp::Delete {
            old_index: old_index + old_base,
            old_len,
            new_index: new_index + new_base,
        },
        DiffOp::Insert {
            old_index,
            new_index,
            new_len,
        } => DiffOp::Insert {
            old_index: old_index + old_base,
            new_index: new_index + new_base,
            new_len,
        },
        DiffOp::Replace {
            old_index,
            old_len,
            new_index,
            new_len,
        } => DiffOp::Replace {
            old_index: old_index + old_base,
            old_len,
            new_index: new_index + new_base,
            new_len,
        },
    }
}

/// The unified diff of one drift, desired (Git) against live, or nothing when it has no
/// changes. Each changed field gets its own hunk (long multi-line values are cut to three lines
/// of context around what changed, the hunk header then naming the field), so a reader sees
/// each field's before and after together.
pub(crate) fn drift_diff(drift: &Drift) -> Vec<DiffLine> {
    let regions = regions(drift);
    let old_all: Vec<String> = regions.iter().flat_map(|r| r.old.clone()).collect();
    let new_all: Vec<String> = regions.iter().flat_map(|r| r.new.clone()).collect();
    if old_all.is_empty() && new_all.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        DiffLine::new(LineTag::FileHeader, "--- desired (Git)"),
        DiffLine::new(LineTag::FileHeader, "+++ live"),
    ];
    let mut body = 0usize;
    let mut hidden = 0usize;
    let (mut old_base, mut new_base) = (0usize, 0usize);
    for region in &regions {
        let ops = capture_diff_slices(Algorithm::Myers, &region.old, &region.new);
        let region_start = (old_base, new_base);
        let ops: Vec<DiffOp> = ops
            .into_iter()
            .map(|op| shift(op, old_base, new_base))
            .collect();
        old_base += region.old.len();
        new_base += region.new.len();
        for group in group_diff_ops(ops, 3) {
            let Some(first) = group.first() else { continue };
            let mut header = UnifiedHunkHeader::new(&group).to_string();
            let starts_region = first.old_range().start == region_start.0
                && first.new_range().start == region_start.1;
            if !starts_region {
                header.push(' ');
                header.push_str(&display_path(&region.path));
            }
            let mut hunk = vec![DiffLine::new(LineTag::Hunk, header)];
            for op in &group {
                for change in op.iter_changes(&old_all, &new_all) {
                    let (tag, sign) = match change.tag() {
                        ChangeTag::Delete => (LineTag::Removed, '-'),
                        ChangeTag::Insert => (LineTag::Added, '+'),
                        ChangeTag::Equal => (LineTag::Context, ' '),
                    };
                    hunk.push(DiffLine::new(tag, format!("{sign}{}", change.value())));
                }
            }
            for l in hunk {
                if body < MAX_DIFF_LINES {
                    lines.push(l);
                    body += 1;
                } else if l.tag != LineTag::Hunk {
                    hidden += 1;
                }
            }
        }
    }
    if hidden > 0 {
        lines.push(DiffLine::new(
            LineTag::Note,
            format!("... {hidden} more diff lines not shown (the JSON report has every change)"),
        ));
    }
    lines
}

/// `Modified`, `Missing (only in Git)`, `Unmanaged (only live)`.
pub(crate) fn kind_label(kind: DriftKind) -> &'static str {
    match kind {
        DriftKind::Modified => "Modified",
        DriftKind::Missing => "Missing (only in Git)",
        DriftKind::Unmanaged => "Unmanaged (only live)",
    }
}

/// The class name of a drift, `unclassified` when no policy ran.
pub(crate) fn class_name(drift: &Drift) -> String {
    drift
        .verdict
        .as_ref()
        .map(|v| v.class.to_string())
        .unwrap_or_else(|| "unclassified".to_string())
}

/// `pull request (planned)`, `skip: why (skipped)`, or `-`.
pub(crate) fn action_text(drift: &Drift) -> String {
    match &drift.action {
        Some(a) => format!("{} ({})", one_line(&a.action.to_string()), result_text(a)),
        None => "-".to_string(),
    }
}

fn result_text(a: &crate::model::ActionRecord) -> &'static str {
    use crate::model::ActionResult;
    match a.result {
        ActionResult::Planned => "planned",
        ActionResult::Done => "done",
        ActionResult::Failed => "failed",
        ActionResult::Skipped => "skipped",
        ActionResult::RolledBack => "rolled back",
    }
}

/// `file:line @ 1a2b3c4`.
pub(crate) fn provenance_text(drift: &Drift) -> Option<String> {
    drift.provenance.as_ref().map(|p| {
        let mut s = format!("{}:{}", one_line(&p.file), p.line);
        if let Some(c) = &p.commit {
            s.push_str(" @ ");
            s.push_str(&one_line(&c.chars().take(7).collect::<String>()));
        }
        s
    })
}

/// One "who changed it" line per attributed change: `replicas changed by kubectl (Update,
/// scale)`. The field is named by its last pointer segment, or by its whole pointer when that
/// segment is ambiguous within the drift.
pub(crate) fn attribution_lines(drift: &Drift) -> Vec<String> {
    let leaves: Vec<String> = drift.changes.iter().map(|c| leaf(&c.path)).collect();
    let mut out = Vec::new();
    for (i, c) in drift.changes.iter().enumerate() {
        let Some(a) = &c.attribution else { continue };
        let name = &leaves[i];
        let ambiguous = name == "/"
            || name.parse::<usize>().is_ok()
            || leaves.iter().filter(|l| *l == name).count() > 1;
        let field = if ambiguous {
            display_path(&c.path)
        } else {
            one_line(name)
        };
        let verb = match c.op {
            ChangeOp::Changed => "changed",
            ChangeOp::MissingLive => "removed",
            ChangeOp::ExtraLive => "set",
        };
        out.push(format!("{field} {verb} by {}", one_line(&a.to_string())));
    }
    out
}

/// Drifts by kind, non-zero only: `Modified 3, Missing 1`.
pub(crate) fn by_kind_text(s: &Summary) -> String {
    let order = ["Modified", "Missing", "Unmanaged"];
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|k| {
            s.by_kind
                .get(*k)
                .filter(|n| **n > 0)
                .map(|n| format!("{k} {n}"))
        })
        .collect();
    for (k, n) in &s.by_kind {
        if !order.contains(&k.as_str()) && *n > 0 {
            parts.push(format!("{} {n}", one_line(k)));
        }
    }
    parts.join(", ")
}

/// Drifts by class, most severe first: `forbidden 1, risky 2, safe 1, unclassified 1`.
pub(crate) fn by_class_parts(s: &Summary) -> Vec<(String, usize)> {
    let order = ["forbidden", "risky", "safe", "unclassified"];
    let mut parts: Vec<(String, usize)> = order
        .iter()
        .filter_map(|k| s.by_class.get(*k).map(|n| (k.to_string(), *n)))
        .collect();
    for (k, n) in &s.by_class {
        if !order.contains(&k.as_str()) {
            parts.push((one_line(k), *n));
        }
    }
    parts.retain(|(_, n)| *n > 0);
    parts
}

/// Fields ignored: the total and the per-rule breakdown, `3 (status 2, hpa 1)`.
pub(crate) fn ignored_text(s: &Summary) -> String {
    let total: usize = s.ignored_fields.values().sum();
    if total == 0 {
        return "0".to_string();
    }
    let parts: Vec<String> = s
        .ignored_fields
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{} {n}", one_line(k)))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

/// Actions by result, grouped by action: `pull request 2 planned; correct 1 done, 1 failed`.
/// The run's audit figures in one line (`summary.trust`), when the run has them.
/// One line per target in mass drift (`summary.mass_drift`): what drifted, that its actions were
/// held back, where its issue is, the most likely cause. Plain text (one line each).
pub(crate) fn mass_drift_lines(s: &Summary) -> Vec<String> {
    s.mass_drift
        .iter()
        .map(|m| {
            let kinds = m
                .by_drift_kind
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ");
            let issue = match &m.issue {
                Some(i) => format!("{i} ({})", m.detail),
                None => m.detail.clone(),
            };
            let cause = m
                .causes
                .first()
                .map(|c| format!("; most likely: {}", c.replace(['*', '`'], "")))
                .unwrap_or_default();
            one_line(&format!(
                "{}: {} of {} resources drifted ({}%: {kinds}); no pull request, issue or correction per drift; one issue for the target: {issue}{cause}",
                m.target, m.drifted, m.checked, m.percent
            ))
        })
        .collect()
}

pub(crate) fn trust_text(s: &Summary) -> Option<String> {
    let t = s.trust.as_ref()?;
    let mut parts = vec![format!(
        "{} attempted, {} confirmed, {} failed",
        t.corrections_attempted, t.corrections_confirmed, t.corrections_failed
    )];
    if t.reverts_detected > 0 {
        parts.push(format!("{} earlier reverted", t.reverts_detected));
    }
    if !t.breakers_tripped.is_empty() {
        parts.push(format!("breaker open: {}", t.breakers_tripped.join(", ")));
    }
    if !t.corrections_stopped.is_empty() {
        parts.push(format!(
            "stopped after failures: {}",
            t.corrections_stopped.join(", ")
        ));
    }
    Some(parts.join("; "))
}

pub(crate) fn actions_text(s: &Summary) -> String {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (key, n) in &s.actions {
        let (action, result) = key.split_once(':').unwrap_or((key.as_str(), ""));
        let action = one_line(&action.replace('_', " "));
        let item = if result.is_empty() {
            n.to_string()
        } else {
            format!("{n} {}", one_line(result))
        };
        match groups.iter_mut().find(|(a, _)| *a == action) {
            Some((_, items)) => items.push(item),
            None => groups.push((action, vec![item])),
        }
    }
    if groups.is_empty() {
        return "none".to_string();
    }
    groups
        .into_iter()
        .map(|(a, items)| format!("{a} {}", items.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `44.4%`.
pub(crate) fn score_text(s: &Summary) -> String {
    format!("{:.1}%", s.compliance_score)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_quote_only_when_ambiguous() {
        assert_eq!(scalar(&json!("nginx:1.27")), "nginx:1.27");
        assert_eq!(scalar(&json!("3")), "\"3\"");
        assert_eq!(scalar(&json!(3)), "3");
        assert_eq!(scalar(&json!("true")), "\"true\"");
        assert_eq!(scalar(&json!("")), "\"\"");
        assert_eq!(scalar(&json!("(masked)")), "(masked)");
        assert_eq!(scalar(&json!("a: b")), "\"a: b\"");
        assert_eq!(scalar(&json!("*")), "\"*\"");
        assert_eq!(scalar(&json!("\u{1b}[31mred")), "\"\\u001b[31mred\"");
        assert_eq!(scalar(&json!("a\u{202e}b")), "\"a\\u{202e}b\"");
    }

    #[test]
    fn leaves_unescape() {
        assert_eq!(
            leaf("/metadata/labels/app.kubernetes.io~1name"),
            "app.kubernetes.io/name"
        );
        assert_eq!(leaf("/spec/replicas"), "replicas");
        assert_eq!(leaf(""), "/");
    }

    #[test]
    fn objects_flatten_and_text_becomes_block() {
        let mut out = Vec::new();
        value_lines(
            "/data",
            &json!({"a/b": 1, "txt": "x=1\ny=2\n", "e": {}, "l": []}),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                "/data/a~1b: 1",
                "/data/txt: |",
                "  x=1",
                "  y=2",
                "/data/e: {}",
                "/data/l: []"
            ]
        );
    }

    #[test]
    fn long_text_gets_context_and_a_named_hunk() {
        use crate::model::{DriftKind, ResourceId, ResourceRef};
        let old: String = (0..20).map(|i| format!("k{i}=v\n")).collect();
        let new = old.replace("k15=v", "k15=w");
        let id = ResourceId::Terraform {
            workspace: "w".into(),
            address: "a.b".into(),
        };
        let d = Drift {
            fingerprint: "f".into(),
            target: "t".into(),
            resource: ResourceRef::from(id),
            kind: DriftKind::Modified,
            changes: vec![FieldChange {
                path: "/data/app.properties".into(),
                op: ChangeOp::Changed,
                desired: Value::String(old),
                live: Value::String(new),
                masked: false,
                attribution: None,
                class: None,
            }],
            provenance: None,
            verdict: None,
            action: None,
            desired_object: None,
            live_object: None,
        };
        let text: Vec<String> = drift_diff(&d).into_iter().map(|l| l.text).collect();
        assert_eq!(
            text,
            vec![
                "--- desired (Git)",
                "+++ live",
                "@@ -14,7 +14,7 @@ /data/app.properties",
                "   k12=v",
                "   k13=v",
                "   k14=v",
                "-  k15=v",
                "+  k15=w",
                "   k16=v",
                "   k17=v",
                "   k18=v",
            ]
        );
    }

    #[test]
    fn one_line_escapes_controls() {
        assert_eq!(one_line("a\nb\u{1b}"), "a\\nb\\u{1b}");
    }
}
