//! Guardrails every actuator applies before it changes anything (DESIGN.md promise 3, bounded
//! blast radius): how many corrections one run may make for a target, and the per-resource,
//! per-hour remediation history persisted under the config's `state_dir`.
//!
//! The limit is computed here and enforced by the actuator as all-or-nothing: a run that would
//! correct more than the limit corrects nothing (a mass drift is more likely a mistake in Git or
//! a cluster event than something to steamroll).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Guardrails;

/// The file under `state_dir` that holds the remediation history.
pub const HISTORY_FILE: &str = "remediations.json";

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("cannot read the remediation history {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the remediation history {path} is not valid JSON")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the remediation history {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The most corrections one run may make for a target: `max_correction_percent` of the
/// resources checked (rounded down), and at most `max_corrections` when set.
pub fn correction_limit(g: &Guardrails, checked: usize) -> usize {
    let by_share = (checked as f64 * g.max_correction_percent / 100.0).floor() as usize;
    match g.max_corrections {
        Some(n) => n.min(by_share),
        None => by_share,
    }
}

/// Explains a limit the way the report shows it: which setting binds, and how it was computed.
pub fn explain_limit(g: &Guardrails, checked: usize) -> String {
    let by_share = (checked as f64 * g.max_correction_percent / 100.0).floor() as usize;
    let share = format!(
        "max_correction_percent: {}% of {checked} resources checked = {by_share}",
        g.max_correction_percent
    );
    match g.max_corrections {
        Some(n) if n < by_share => format!("max_corrections: {n}; {share}"),
        Some(n) => format!("{share}; max_corrections: {n}"),
        None => share,
    }
}

/// When each resource (by drift fingerprint) was remediated, as Unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Format version of the file.
    pub version: u32,
    pub remediations: BTreeMap<String, Remediations>,
}

/// One resource's remediations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remediations {
    /// The resource as reports show it (for people reading the file).
    pub resource: String,
    /// Unix seconds of each remediation, oldest first.
    pub times: Vec<u64>,
}

impl History {
    /// The history file's path under `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(HISTORY_FILE)
    }

    /// Reads the history; a missing file is an empty history.
    pub fn load(state_dir: &Path) -> Result<History, HistoryError> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::default()),
            Err(e) => {
                return Err(HistoryError::Read {
                    path: path.display().to_string(),
                    source: e,
                });
            }
        };
        serde_json::from_str(&text).map_err(|e| HistoryError::Parse {
            path: path.display().to_string(),
            source: e,
        })
    }

    /// Remediations of `fingerprint` in the hour before `now`.
    pub fn count_last_hour(&self, fingerprint: &str, now: u64) -> usize {
        self.remediations
            .get(fingerprint)
            .map(|r| {
                r.times
                    .iter()
                    .filter(|t| now.saturating_sub(**t) < 3600)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Records one remediation.
    pub fn record(&mut self, fingerprint: &str, resource: &str, now: u64) {
        let r = self
            .remediations
            .entry(fingerprint.to_string())
            .or_default();
        r.resource = resource.to_string();
        r.times.push(now);
    }

    /// Writes the history (entries older than an hour dropped), atomically: a temp file in the
    /// same directory, then a rename.
    pub fn save(&mut self, state_dir: &Path, now: u64) -> Result<(), HistoryError> {
        self.version = 1;
        for r in self.remediations.values_mut() {
            r.times.retain(|t| now.saturating_sub(*t) < 3600);
        }
        self.remediations.retain(|_, r| !r.times.is_empty());
        let path = Self::path(state_dir);
        let write_err = |e: std::io::Error| HistoryError::Write {
            path: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(state_dir).map_err(write_err)?;
        let text = serde_json::to_string_pretty(self).map_err(|e| HistoryError::Parse {
            path: path.display().to_string(),
            source: e,
        })?;
        let tmp = state_dir.join(format!(".{HISTORY_FILE}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, text).map_err(write_err)?;
        std::fs::rename(&tmp, &path).map_err(write_err)
    }
}

/// Unix seconds now.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_takes_the_tighter_setting() {
        let mut g = Guardrails::default();
        assert_eq!(correction_limit(&g, 20), 5);
        assert_eq!(correction_limit(&g, 3), 0);
        g.max_corrections = Some(2);
        assert_eq!(correction_limit(&g, 20), 2);
        assert!(explain_limit(&g, 20).starts_with("max_corrections: 2; "));
        g.max_correction_percent = 100.0;
        g.max_corrections = None;
        assert_eq!(correction_limit(&g, 3), 3);
    }

    #[test]
    fn history_counts_the_last_hour_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(dir.path()).unwrap();
        h.record("fp", "Deployment shop/web", 1_000);
        h.record("fp", "Deployment shop/web", 4_000);
        h.record("fp", "Deployment shop/web", 4_500);
        assert_eq!(h.count_last_hour("fp", 4_600), 2);
        h.save(dir.path(), 4_600).unwrap();
        let back = History::load(dir.path()).unwrap();
        assert_eq!(back.count_last_hour("fp", 4_600), 2);
        assert_eq!(back.remediations["fp"].times, vec![4_000, 4_500]);
        assert_eq!(back.count_last_hour("other", 4_600), 0);
    }
}
