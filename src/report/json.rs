//! The JSON report: the [`Report`] struct, pretty-printed. The struct is the schema
//! (docs/report-schema.md, `schema_version` "1"); fields marked `#[serde(skip)]` in the model
//! (the whole desired and live objects) never appear.

use crate::model::Report;

/// `serde_json::to_string_pretty(report)` and a trailing newline.
///
/// Serializing a `Report` cannot fail in practice (string keys, no custom serializers); should it
/// ever, the output is still one valid JSON document naming the error, never a panic.
pub fn render(report: &Report) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        Err(e) => {
            let body = serde_json::json!({
                "schema_version": report.schema_version,
                "error": format!("could not serialize the report: {e}"),
            });
            format!("{body}\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_report_round_trips() {
        let r = Report::new("diff", 1, 3, Default::default(), Vec::new(), Vec::new());
        let s = render(&r);
        assert!(s.ends_with("}\n"));
        let back: Report = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        assert!(!s.contains("\"errors\""), "empty errors are omitted");
    }
}
