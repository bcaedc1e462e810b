//! `driftwarden report merge`: joins the JSON reports of shards (an Indexed Job's pods, a GitHub
//! Actions matrix) into one report, as if one run had covered every target.
//!
//! Drifts and errors are concatenated, drifts sorted by target and resource key (the order a run
//! produces per target), and the summary is recomputed from them: targets, resources checked and
//! ignored fields are summed; in sync, by kind, by class, actions and the compliance score follow
//! from the drifts. Reports of different commands or schema versions do not mix, and a drift
//! found by two shards (a target that ran twice) is an error rather than a silent double count.
//! Pure: the caller reads the files.

use std::collections::{BTreeMap, HashMap};

use crate::model::{REPORT_SCHEMA_VERSION, Report};

/// Why reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("no reports to merge")]
    Empty,
    #[error(
        "{name}: schema_version `{found}` is not supported (expected `{REPORT_SCHEMA_VERSION}`)"
    )]
    SchemaVersion { name: String, found: String },
    #[error(
        "{name}: command `{found}` differs from `{expected}` in {first}; merge reports of one command"
    )]
    Command {
        name: String,
        found: String,
        expected: String,
        first: String,
    },
    #[error(
        "drift {fingerprint} ({resource}) appears in both {first} and {second}: target `{target}` ran in two shards"
    )]
    Duplicate {
        fingerprint: String,
        resource: String,
        target: String,
        first: String,
        second: String,
    },
}

/// Merges named reports (the name is for messages, e.g. the file path).
pub fn merge(reports: Vec<(String, Report)>) -> Result<Report, MergeError> {
    let Some((first_name, first)) = reports.first() else {
        return Err(MergeError::Empty);
    };
    let command = first.command.clone();
    let first_name = first_name.clone();
    let mut targets = 0;
    let mut checked = 0;
    let mut ignored: BTreeMap<String, usize> = BTreeMap::new();
    let mut drifts = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut trust: Option<crate::audit::RunFigures> = None;
    let mut mass: Vec<crate::model::MassDrift> = Vec::new();
    for (name, r) in reports {
        if r.schema_version != REPORT_SCHEMA_VERSION {
            return Err(MergeError::SchemaVersion {
                name,
                found: r.schema_version,
            });
        }
        if r.command != command {
            return Err(MergeError::Command {
                name,
                found: r.command,
                expected: command,
                first: first_name,
            });
        }
        targets += r.summary.targets;
        checked += r.summary.resources_checked;
        if let Some(t) = &r.summary.trust {
            trust.get_or_insert_with(Default::default).add(t);
        }
        mass.extend(r.summary.mass_drift.iter().cloned());
        for (k, v) in r.summary.ignored_fields {
            *ignored.entry(k).or_default() += v;
        }
        for d in r.drifts {
            if let Some(prev) = seen.insert(d.fingerprint.clone(), name.clone()) {
                return Err(MergeError::Duplicate {
                    fingerprint: d.fingerprint,
                    resource: d.resource.display,
                    target: d.target,
                    first: prev,
                    second: name,
                });
            }
            drifts.push(d);
        }
        errors.extend(r.errors);
    }
    // Total orders, so the merge does not depend on the order of the shards: drifts of one
    // resource (the same target read twice) by fingerprint, errors by all their fields.
    drifts.sort_by(|a, b| {
        (
            a.target.as_str(),
            a.resource.id.key(),
            a.fingerprint.as_str(),
        )
            .cmp(&(
                b.target.as_str(),
                b.resource.id.key(),
                b.fingerprint.as_str(),
            ))
    });
    errors.sort_by(|a, b| {
        (a.target.as_str(), a.side.as_str(), a.message.as_str()).cmp(&(
            b.target.as_str(),
            b.side.as_str(),
            b.message.as_str(),
        ))
    });
    let mut merged = Report::new(&command, targets, checked, ignored, drifts, errors);
    merged.summary.trust = trust;
    mass.sort_by(|a, b| {
        (a.target.as_str(), a.rule.as_str(), a.drifted, a.checked).cmp(&(
            b.target.as_str(),
            b.rule.as_str(),
            b.drifted,
            b.checked,
        ))
    });
    merged.summary.mass_drift = mass;
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `report_merge` fuzz target (fixtures/fuzz/report-merge-same-resource.json:
    /// two shard reports holding a drift of the same resource with different fingerprints):
    /// the drifts came out in the shards' order, so the merge depended on it.
    #[test]
    fn the_merge_does_not_depend_on_the_shards_order() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/fuzz/report-merge-same-resource.json"
        ))
        .unwrap();
        let reports: Vec<Report> = bytes
            .split(|b| *b == 0)
            .filter_map(|part| serde_json::from_slice(part).ok())
            .collect();
        assert!(reports.len() >= 2);
        let named = |rs: Vec<Report>| -> Vec<(String, Report)> {
            rs.into_iter()
                .enumerate()
                .map(|(i, r)| (format!("shard-{i}.json"), r))
                .collect()
        };
        let mut reversed = reports.clone();
        reversed.reverse();
        let m = merge(named(reports)).unwrap();
        assert_eq!(merge(named(reversed)).unwrap(), m);
        assert_eq!(m.drifts.len(), 2);
        // Errors too: each shard's, in one order whatever the shards' order.
        let failed = |target: &str| {
            let e = crate::model::SourceError {
                target: target.into(),
                side: "live".into(),
                message: "unreachable".into(),
            };
            Report::new("diff", 1, 0, Default::default(), Vec::new(), vec![e])
        };
        let ab = merge(vec![("a".into(), failed("a")), ("b".into(), failed("b"))]).unwrap();
        let ba = merge(vec![("b".into(), failed("b")), ("a".into(), failed("a"))]).unwrap();
        assert_eq!(ab, ba);
        assert_eq!(ab.errors[0].target, "a");
    }

    #[test]
    fn empty_and_mismatched() {
        assert_eq!(merge(Vec::new()), Err(MergeError::Empty));
        let a = Report::new("diff", 1, 2, Default::default(), Vec::new(), Vec::new());
        let b = Report::new(
            "reconcile",
            1,
            2,
            Default::default(),
            Vec::new(),
            Vec::new(),
        );
        assert!(matches!(
            merge(vec![("a".into(), a.clone()), ("b".into(), b)]),
            Err(MergeError::Command { .. })
        ));
        let mut c = a.clone();
        c.schema_version = "2".into();
        assert!(matches!(
            merge(vec![("c".into(), c)]),
            Err(MergeError::SchemaVersion { .. })
        ));
        let m = merge(vec![("a".into(), a.clone()), ("a2".into(), a)]).unwrap();
        assert_eq!(m.summary.targets, 2);
        assert_eq!(m.summary.resources_checked, 4);
        assert_eq!(m.summary.compliance_score, 100.0);
    }
}
