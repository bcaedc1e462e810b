//! `driftwarden report merge` (`report::merge::merge`) of shard reports: up to four JSON reports
//! separated by NUL bytes, each read as the command reads a report file.
//!
//! Laws: nothing panics; a merged report sums the shards' targets, resources and drifts, survives
//! a JSON round trip, and is the same whatever the order of the shards and however they are
//! grouped (merging a merge); a refusal is a refusal in any order.
#![no_main]

use driftwarden::model::Report;
use driftwarden::report::merge::merge;
use libfuzzer_sys::fuzz_target;

fn named(reports: &[Report]) -> Vec<(String, Report)> {
    reports
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("shard-{i}.json"), r.clone()))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let reports: Vec<Report> = data
        .split(|b| *b == 0)
        .take(4)
        .filter_map(|part| serde_json::from_slice(part).ok())
        .collect();
    if reports.is_empty() {
        return;
    }
    let merged = merge(named(&reports));
    let mut reversed = reports.clone();
    reversed.reverse();
    let merged_reversed = merge(named(&reversed));
    let Ok(m) = merged else {
        assert!(merged_reversed.is_err(), "merged in one order only");
        return;
    };
    let Ok(r) = merged_reversed else {
        panic!("merged in one order only");
    };
    assert_eq!(
        m.summary.targets,
        reports.iter().map(|r| r.summary.targets).sum::<usize>()
    );
    assert_eq!(
        m.summary.resources_checked,
        reports
            .iter()
            .map(|r| r.summary.resources_checked)
            .sum::<usize>()
    );
    assert_eq!(
        m.drifts.len(),
        reports.iter().map(|r| r.drifts.len()).sum::<usize>()
    );
    assert_eq!(r, m, "the merge depends on the order of the shards");

    let text = serde_json::to_string(&m).expect("a report serializes");
    let back: Report = serde_json::from_str(&text).expect("a merged report reads back");
    assert_eq!(
        back, m,
        "the merged report does not survive a JSON round trip"
    );

    if reports.len() >= 2 {
        let (head, tail) = reports.split_at(reports.len() - 1);
        let inner = merge(named(head)).expect("a part of a mergeable set merges");
        let grouped = merge(named(&[inner, tail[0].clone()])).expect("a merge merges again");
        assert_eq!(
            grouped, m,
            "merging a merge differs from merging all at once"
        );
    }
});
