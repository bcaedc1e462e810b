//! Self-healing figures from the audit history: reverted corrections (the breaker's input) and
//! what `driftwarden stats` prints. Pure functions over records; no IO.
//!
//! Definitions (docs/audit.md, "Figures"):
//! - a **drift** is an episode: from the first `drift_seen` of a resource on a target to its
//!   resolution (a confirmed correction, or a complete run of the target that no longer sees
//!   it);
//! - a **correction** is an `intent` of action `correct` or `prune` outside dry runs; it is
//!   **confirmed** when its `result` is `done` with `confirmed: true`, **failed** when `failed`;
//! - a confirmed correction is **reverted** when, within 24 hours, a later run sees the same
//!   resource drift at a corrected field whose live value hashes like the value before the
//!   correction, and the field's manager is not driftwarden (a masked field is compared by its
//!   keyed digest only, never by the hash of the mask);
//! - a **re-drift** is an episode of a resource that an earlier confirmed correction fixed;
//! - **time to remediate** is first seen to resolved, by the first verdict's class and by how it
//!   was resolved: `auto_corrected`, `drift_revert` (a correction a closed item asked for),
//!   `merged_pull_request` (the run recorded, in `item_closed`, that the forge says the drift's
//!   pull request was merged; in history written before `item_closed` existed, a
//!   `target_checked` without `items_listed`: the drift went away while its pull request was
//!   open), `other`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{Event, Record, is_own_manager, parse_time};
use crate::model::{ActionResult, Class};

/// A correction counts as reverted only when the field goes back within this many seconds.
pub const REVERT_HORIZON_SECS: u64 = 24 * 3600;

/// One reverted correction of one field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revert {
    /// The correction's intent id.
    pub correction_id: String,
    pub target: String,
    pub fingerprint: String,
    pub resource: String,
    /// The correction's rules.
    pub rules: Vec<String>,
    pub path: String,
    /// Unix seconds of the correction and of the run that saw it reverted.
    pub corrected_at: u64,
    pub seen_at: u64,
    pub seen_run: String,
    /// Who changed it back (`None`: the provider does not say).
    pub manager: Option<String>,
}

/// A correction as the history records it.
#[derive(Debug, Clone)]
struct Correction<'a> {
    /// Position in the history: records are appended in the order things happened.
    index: usize,
    id: &'a str,
    run: &'a str,
    time: u64,
    target: &'a str,
    fingerprint: &'a str,
    resource: &'a str,
    rules: &'a [String],
    fields: &'a [super::FieldRecord],
    trigger: &'a str,
    class: Option<Class>,
}

/// The results of the history by intent id: outcome, confirmed, Unix seconds.
type Results<'a> = HashMap<&'a str, (&'a ActionResult, Option<bool>, u64)>;

/// The corrections of the history (dry runs excluded), with their results by id.
fn corrections(records: &[Record]) -> (Vec<Correction<'_>>, Results<'_>) {
    let mut out = Vec::new();
    let mut results = HashMap::new();
    for (index, r) in records.iter().enumerate().filter(|(_, r)| !r.dry_run) {
        let time = parse_time(&r.time).unwrap_or(0);
        match &r.event {
            Event::Intent {
                id,
                target,
                fingerprint,
                resource,
                action,
                rules,
                fields,
                trigger,
                class,
                ..
            } if action == "correct" || action == "prune" => out.push(Correction {
                index,
                id,
                run: &r.run,
                time,
                target,
                fingerprint,
                resource,
                rules,
                fields,
                trigger,
                class: *class,
            }),
            Event::Result {
                id,
                outcome,
                confirmed,
                ..
            } => {
                results.insert(id.as_str(), (outcome, *confirmed, time));
            }
            _ => {}
        }
    }
    (out, results)
}

/// Every reverted correction the history shows, once per correction and field, in the order
/// they were seen.
pub fn reverts(records: &[Record]) -> Vec<Revert> {
    let (corrections, results) = corrections(records);
    let done: Vec<&Correction<'_>> = corrections
        .iter()
        .filter(|c| {
            results.get(c.id).is_some_and(|(o, confirmed, _)| {
                **o == ActionResult::Done && *confirmed != Some(false)
            })
        })
        .collect();
    let mut by_resource: HashMap<(&str, &str), Vec<&Correction<'_>>> = HashMap::new();
    for c in done {
        by_resource
            .entry((c.target, c.fingerprint))
            .or_default()
            .push(c);
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, r) in records.iter().enumerate() {
        let Event::DriftSeen {
            target,
            fingerprint,
            changes,
            ..
        } = &r.event
        else {
            continue;
        };
        let Some(list) = by_resource.get(&(target.as_str(), fingerprint.as_str())) else {
            continue;
        };
        let t = parse_time(&r.time).unwrap_or(0);
        // The latest correction of this resource before this sighting, by another run.
        let Some(c) = list
            .iter()
            .filter(|c| c.run != r.run && c.index < index)
            .max_by_key(|c| c.index)
        else {
            continue;
        };
        if t.saturating_sub(c.time) > REVERT_HORIZON_SECS {
            continue;
        }
        for ch in changes {
            if is_own_manager(ch.attribution.as_ref()) {
                continue;
            }
            // A masked value is compared only by its keyed digest: the plain hash of the mask
            // says nothing.
            let comparable =
                |masked: bool, hash: &str| !masked || hash.starts_with(super::DIGEST_PREFIX);
            if !comparable(ch.masked, &ch.live_hash) {
                continue;
            }
            let back = c.fields.iter().any(|f| {
                f.path == ch.path
                    && comparable(f.masked, &f.before_hash)
                    && f.before_hash == ch.live_hash
            });
            if back && seen.insert((c.id.to_string(), ch.path.clone())) {
                out.push(Revert {
                    correction_id: c.id.to_string(),
                    target: target.clone(),
                    fingerprint: fingerprint.clone(),
                    resource: c.resource.to_string(),
                    rules: c.rules.to_vec(),
                    path: ch.path.clone(),
                    corrected_at: c.time,
                    seen_at: t,
                    seen_run: r.run.clone(),
                    manager: ch.attribution.as_ref().map(|a| a.manager.clone()),
                });
            }
        }
    }
    out
}

/// The reverted corrections (distinct) of `rule` on `target` seen in the `window` seconds before
/// `now` and after the last `trust_reset` of that rule and target.
pub fn breaker_count(
    records: &[Record],
    reverts: &[Revert],
    target: &str,
    rule: &str,
    now: u64,
    window: u64,
) -> u32 {
    let reset = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::TrustReset {
                target: t,
                rule: ru,
            } if t == target && ru == rule => parse_time(&r.time),
            _ => None,
        })
        .max();
    let from = now.saturating_sub(window);
    let ids: BTreeSet<&str> = reverts
        .iter()
        .filter(|r| r.target == target && r.rules.iter().any(|x| x == rule))
        .filter(|r| r.seen_at >= from && reset.is_none_or(|reset| r.seen_at > reset))
        .map(|r| r.correction_id.as_str())
        .collect();
    ids.len() as u32
}

/// The figures of one target, or one rule on one target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub drifts_seen: usize,
    pub corrections_attempted: usize,
    pub corrections_confirmed: usize,
    pub corrections_failed: usize,
    /// Confirmed / attempted; `None` without attempts.
    pub success_rate: Option<f64>,
    pub corrections_reverted: usize,
    /// Reverted / confirmed: the share of auto-corrections a person undid.
    pub false_positive_rate: Option<f64>,
    pub re_drifts: usize,
    /// Times the revert breaker stopped a rule (`breaker_tripped` records).
    pub breaker_trips: usize,
    /// Runs whose corrections stopped after consecutive failures.
    pub corrections_stopped: usize,
}

impl Figures {
    fn finish(&mut self) {
        self.success_rate = ratio(self.corrections_confirmed, self.corrections_attempted);
        self.false_positive_rate = ratio(self.corrections_reverted, self.corrections_confirmed);
    }
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| ((a as f64 / b as f64) * 1000.0).round() / 1000.0)
}

/// Per-target figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetFigures {
    pub target: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Per-rule figures on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFigures {
    pub target: String,
    pub rule: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// Time to remediate for one class and one way of resolution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    /// `safe`, `risky`, `forbidden`, `unclassified`.
    pub class: String,
    /// `auto_corrected`, `drift_revert`, `merged_pull_request`, `other`.
    pub resolution: String,
    pub count: usize,
    pub mean_seconds: f64,
    pub p90_seconds: f64,
}

/// A target's compliance score on one day (mean over its runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompliancePoint {
    pub day: String,
    pub target: String,
    pub runs: usize,
    pub score: f64,
}

/// A revert breaker open now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenBreaker {
    pub target: String,
    pub rule: String,
    pub reverts: u32,
}

/// Everything `driftwarden stats` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub since: String,
    pub until: String,
    pub targets: Vec<TargetFigures>,
    pub rules: Vec<RuleFigures>,
    pub time_to_remediate: Vec<Remediation>,
    pub compliance: Vec<CompliancePoint>,
    pub open_breakers: Vec<OpenBreaker>,
    pub reverts: Vec<Revert>,
}

/// An open drift episode.
#[derive(Debug, Clone)]
struct Episode {
    start: u64,
    counted: bool,
    class: Option<Option<Class>>,
    rules: Vec<String>,
    /// Its last outcome was an opened or updated pull request.
    pull_request: bool,
    /// An `item_closed` record says the forge merged its pull request.
    merged: bool,
}

/// Computes the figures over the records from `since` (Unix seconds) to `now`, for one target
/// or all. Records before `since` only give context (open episodes, corrections reverted after
/// `since`). `trust` gives the breaker's threshold and window.
pub fn compute(
    records: &[Record],
    since: u64,
    now: u64,
    target: Option<&str>,
    trust: &crate::config::TrustSettings,
) -> Stats {
    let keep = |t: &str| target.is_none_or(|x| x == t);
    let mut targets: BTreeMap<String, Figures> = BTreeMap::new();
    let mut rules: BTreeMap<(String, String), Figures> = BTreeMap::new();
    let (corr, _) = corrections(records);
    let intents: HashMap<&str, &Correction<'_>> = corr.iter().map(|c| (c.id, c)).collect();
    let mut fixed: HashSet<(String, String)> = HashSet::new();
    let mut open: HashMap<(String, String), Episode> = HashMap::new();
    let mut seen_in_run: HashSet<(String, String, String)> = HashSet::new();
    let mut ttr: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    let mut compliance: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();

    fn bump<'m>(
        targets: &'m mut BTreeMap<String, Figures>,
        rules: &'m mut BTreeMap<(String, String), Figures>,
        target: &str,
        rule_list: &[String],
        f: impl Fn(&mut Figures),
    ) {
        f(targets.entry(target.to_string()).or_default());
        for r in rule_list {
            f(rules.entry((target.to_string(), r.clone())).or_default());
        }
    }

    let close = |ep: Episode,
                 end: u64,
                 resolution: &str,
                 ttr: &mut BTreeMap<(String, String), Vec<u64>>| {
        if end < since {
            return;
        }
        let class = match ep.class.flatten() {
            Some(c) => c.to_string(),
            None => "unclassified".to_string(),
        };
        ttr.entry((class, resolution.to_string()))
            .or_default()
            .push(end.saturating_sub(ep.start));
    };

    for r in records {
        let t = parse_time(&r.time).unwrap_or(0);
        let in_window = t >= since && t <= now;
        match &r.event {
            Event::DriftSeen {
                target: tg,
                fingerprint,
                ..
            } if keep(tg) => {
                seen_in_run.insert((r.run.clone(), tg.clone(), fingerprint.clone()));
                let key = (tg.clone(), fingerprint.clone());
                if open.contains_key(&key) {
                    continue;
                }
                open.insert(
                    key.clone(),
                    Episode {
                        start: t,
                        counted: in_window,
                        class: None,
                        rules: Vec::new(),
                        pull_request: false,
                        merged: false,
                    },
                );
                if in_window && fixed.contains(&key) {
                    targets.entry(tg.clone()).or_default().re_drifts += 1;
                }
            }
            Event::Verdict {
                target: tg,
                fingerprint,
                class,
                rules: rl,
                ..
            } if keep(tg) => {
                let key = (tg.clone(), fingerprint.clone());
                let redrift = fixed.contains(&key);
                if let Some(ep) = open.get_mut(&key) {
                    if ep.class.is_none() {
                        ep.class = Some(*class);
                        ep.rules = rl.clone();
                        if ep.counted {
                            bump(&mut targets, &mut rules, tg, rl, |f| f.drifts_seen += 1);
                            if redrift {
                                for rule in rl {
                                    rules
                                        .entry((tg.clone(), rule.clone()))
                                        .or_default()
                                        .re_drifts += 1;
                                }
                            }
                        }
                    }
                }
            }
            Event::Outcome {
                target: tg,
                fingerprint,
                action,
                result,
                ..
            } if keep(tg) => {
                if let Some(ep) = open.get_mut(&(tg.clone(), fingerprint.clone())) {
                    ep.pull_request = action == "pull_request" && *result == ActionResult::Done;
                }
            }
            Event::ItemClosed {
                target: tg,
                fingerprint,
                item,
                merged: true,
                ..
            } if keep(tg) && item.kind == crate::forge::ItemKind::PullRequest => {
                if let Some(ep) = open.get_mut(&(tg.clone(), fingerprint.clone())) {
                    ep.merged = true;
                }
            }
            Event::Intent { id, target: tg, .. } if keep(tg) && in_window => {
                if let Some(c) = intents.get(id.as_str()) {
                    bump(&mut targets, &mut rules, tg, c.rules, |f| {
                        f.corrections_attempted += 1
                    });
                }
            }
            Event::Result {
                id,
                target: tg,
                fingerprint,
                outcome,
                confirmed,
                ..
            } if keep(tg) && !r.dry_run => {
                let Some(c) = intents.get(id.as_str()) else {
                    continue;
                };
                match outcome {
                    ActionResult::Done if *confirmed != Some(false) => {
                        if in_window {
                            bump(&mut targets, &mut rules, tg, c.rules, |f| {
                                f.corrections_confirmed += 1
                            });
                        }
                        let key = (tg.clone(), fingerprint.clone());
                        fixed.insert(key.clone());
                        if let Some(mut ep) = open.remove(&key) {
                            if ep.class.is_none() {
                                ep.class = Some(c.class);
                            }
                            let how = if c.trigger == "drift_revert" {
                                "drift_revert"
                            } else {
                                "auto_corrected"
                            };
                            close(ep, t, how, &mut ttr);
                        }
                    }
                    ActionResult::Failed | ActionResult::RolledBack if in_window => {
                        bump(&mut targets, &mut rules, tg, c.rules, |f| {
                            f.corrections_failed += 1
                        });
                    }
                    _ => {}
                }
            }
            Event::TargetChecked {
                target: tg,
                checked,
                drifted,
                partial,
                items_listed,
            } if keep(tg) => {
                if in_window && *checked > 0 {
                    let score =
                        (*checked - (*drifted).min(*checked)) as f64 * 100.0 / *checked as f64;
                    compliance
                        .entry((super::day_of(t), tg.clone()))
                        .or_default()
                        .push(score);
                }
                if *partial {
                    continue;
                }
                let gone: Vec<(String, String)> = open
                    .keys()
                    .filter(|(otg, fp)| {
                        otg == tg
                            && !seen_in_run.contains(&(r.run.clone(), otg.clone(), fp.clone()))
                    })
                    .cloned()
                    .collect();
                for key in gone {
                    if let Some(ep) = open.remove(&key) {
                        // The forge's word, recorded as `item_closed`; history written before
                        // that record existed (no `items_listed`) is inferred from the drift
                        // going away while its pull request was open.
                        let how = if ep.merged || (items_listed.is_none() && ep.pull_request) {
                            "merged_pull_request"
                        } else {
                            "other"
                        };
                        close(ep, t, how, &mut ttr);
                    }
                }
            }
            Event::BreakerTripped {
                target: tg, rule, ..
            } if keep(tg) && in_window => {
                targets.entry(tg.clone()).or_default().breaker_trips += 1;
                rules
                    .entry((tg.clone(), rule.clone()))
                    .or_default()
                    .breaker_trips += 1;
            }
            Event::CorrectionsStopped { target: tg, .. } if keep(tg) && in_window => {
                targets.entry(tg.clone()).or_default().corrections_stopped += 1;
            }
            _ => {}
        }
    }

    let all_reverts = reverts(records);
    let window_reverts: Vec<Revert> = all_reverts
        .iter()
        .filter(|r| keep(&r.target) && r.seen_at >= since && r.seen_at <= now)
        .cloned()
        .collect();
    let mut counted = HashSet::new();
    for rv in &window_reverts {
        if !counted.insert(rv.correction_id.clone()) {
            continue;
        }
        bump(&mut targets, &mut rules, &rv.target, &rv.rules, |f| {
            f.corrections_reverted += 1
        });
    }

    let mut open_breakers = Vec::new();
    let window = u64::from(trust.revert_window_hours) * 3600;
    let pairs: BTreeSet<(String, String)> = all_reverts
        .iter()
        .filter(|r| keep(&r.target))
        .flat_map(|r| r.rules.iter().map(|ru| (r.target.clone(), ru.clone())))
        .collect();
    for (tg, rule) in pairs {
        let n = breaker_count(records, &all_reverts, &tg, &rule, now, window);
        if n >= trust.max_reverts {
            open_breakers.push(OpenBreaker {
                target: tg,
                rule,
                reverts: n,
            });
        }
    }

    Stats {
        since: super::rfc3339(since),
        until: super::rfc3339(now),
        targets: targets
            .into_iter()
            .map(|(target, mut figures)| {
                figures.finish();
                TargetFigures { target, figures }
            })
            .collect(),
        rules: rules
            .into_iter()
            .map(|((target, rule), mut figures)| {
                figures.finish();
                RuleFigures {
                    target,
                    rule,
                    figures,
                }
            })
            .collect(),
        time_to_remediate: ttr
            .into_iter()
            .map(|((class, resolution), mut v)| {
                v.sort_unstable();
                let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
                // Nearest rank: the smallest value with at least 90% of the samples at or below.
                let rank = ((v.len() as f64) * 0.9).ceil() as usize;
                let p90 = v.get(rank.saturating_sub(1)).copied().unwrap_or(0) as f64;
                Remediation {
                    class,
                    resolution,
                    count: v.len(),
                    mean_seconds: (mean * 10.0).round() / 10.0,
                    p90_seconds: p90,
                }
            })
            .collect(),
        compliance: compliance
            .into_iter()
            .map(|((day, target), v)| CompliancePoint {
                day,
                target,
                runs: v.len(),
                score: ((v.iter().sum::<f64>() / v.len() as f64) * 10.0).round() / 10.0,
            })
            .collect(),
        open_breakers,
        reverts: window_reverts,
    }
}

/// `7d`, `24h`, `90m`, `3600s` → seconds.
pub fn parse_since(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The human table of [`Stats`].
pub fn render_table(s: &Stats) -> String {
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
    let mut out = format!("Self-healing figures from {} to {}\n\n", s.since, s.until);
    let header = format!(
        "{:<28} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>9} {:>9} {:>8}\n",
        "",
        "drifts",
        "attempted",
        "confirmed",
        "failed",
        "success",
        "reverted",
        "false pos",
        "re-drifts",
        "breaker"
    );
    let row = |name: &str, f: &Figures| {
        format!(
            "{:<28} {:>6} {:>9} {:>9} {:>6} {:>8} {:>8} {:>9} {:>9} {:>8}\n",
            name,
            f.drifts_seen,
            f.corrections_attempted,
            f.corrections_confirmed,
            f.corrections_failed,
            pct(f.success_rate),
            f.corrections_reverted,
            pct(f.false_positive_rate),
            f.re_drifts,
            f.breaker_trips,
        )
    };
    out.push_str("By target\n");
    out.push_str(&header);
    if s.targets.is_empty() {
        out.push_str("(no audit records in this period)\n");
    }
    for t in &s.targets {
        out.push_str(&row(&t.target, &t.figures));
    }
    out.push_str("\nBy rule\n");
    out.push_str(&header);
    for r in &s.rules {
        out.push_str(&row(&format!("{}/{}", r.target, r.rule), &r.figures));
    }
    out.push_str("\nTime to remediate\n");
    for t in &s.time_to_remediate {
        out.push_str(&format!(
            "  {:<12} {:<20} n={:<5} mean {:>8.0}s  p90 {:>8.0}s\n",
            t.class, t.resolution, t.count, t.mean_seconds, t.p90_seconds
        ));
    }
    out.push_str("\nCompliance score\n");
    for c in &s.compliance {
        out.push_str(&format!(
            "  {} {:<24} {:>5.1}% ({} run{})\n",
            c.day,
            c.target,
            c.score,
            c.runs,
            if c.runs == 1 { "" } else { "s" }
        ));
    }
    if !s.open_breakers.is_empty() {
        out.push_str(
            "\nOpen revert breakers (reset: driftwarden trust reset --target T --rule R)\n",
        );
        for b in &s.open_breakers {
            out.push_str(&format!(
                "  {}/{}: {} reverted correction{}\n",
                b.target,
                b.rule,
                b.reverts,
                if b.reverts == 1 { "" } else { "s" }
            ));
        }
    }
    if !s.reverts.is_empty() {
        out.push_str("\nReverted corrections\n");
        for r in &s.reverts {
            out.push_str(&format!(
                "  {} {} {} at {} by {}\n",
                super::rfc3339(r.seen_at),
                r.target,
                r.resource,
                r.path,
                r.manager.as_deref().unwrap_or("an unknown manager")
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{ChangeRecord, FieldRecord, rfc3339};
    use crate::model::{Attribution, ChangeOp};
    use serde_json::json;

    fn rec(run: &str, secs: u64, event: Event) -> Record {
        Record {
            v: 1,
            run: run.into(),
            time: rfc3339(secs),
            command: "reconcile".into(),
            dry_run: false,
            event,
        }
    }

    /// A correction of one field, its result, and a later sighting of `seen` there by
    /// `manager`; the field masked or not.
    fn history(masked: bool, before: &str, seen: &str, manager: &str, later: u64) -> Vec<Record> {
        let field = FieldRecord {
            path: "/data/KEY".into(),
            before: json!(null),
            before_hash: before.into(),
            after_hash: "x".into(),
            masked,
        };
        vec![
            rec(
                "a",
                100,
                Event::Intent {
                    id: "a-1".into(),
                    target: "t".into(),
                    fingerprint: "f".into(),
                    resource: "k".into(),
                    action: "correct".into(),
                    operation: "server-side apply".into(),
                    trigger: "policy".into(),
                    class: Some(Class::Safe),
                    rules: vec!["p.r".into()],
                    fields: vec![field],
                    item: None,
                    branch: None,
                },
            ),
            rec(
                "a",
                101,
                Event::Result {
                    id: "a-1".into(),
                    target: "t".into(),
                    fingerprint: "f".into(),
                    outcome: ActionResult::Done,
                    confirmed: Some(true),
                    message: String::new(),
                },
            ),
            rec(
                "b",
                100 + later,
                Event::DriftSeen {
                    target: "t".into(),
                    fingerprint: "f".into(),
                    resource: "k".into(),
                    display: "k".into(),
                    kind: crate::model::DriftKind::Modified,
                    changes: vec![ChangeRecord {
                        path: "/data/KEY".into(),
                        op: ChangeOp::Changed,
                        desired: json!("(masked)"),
                        live: json!("(masked)"),
                        masked,
                        live_hash: seen.into(),
                        attribution: Some(Attribution {
                            manager: manager.into(),
                            operation: "Update".into(),
                            time: None,
                            subresource: None,
                        }),
                    }],
                },
            ),
        ]
    }

    #[test]
    fn reverts_need_the_old_value_another_manager_and_the_horizon() {
        let d1 = "hmac-sha256:01";
        let found = reverts(&history(true, d1, d1, "kubectl", 60));
        assert_eq!(found.len(), 1, "a masked value compared by its digest");
        assert_eq!(found[0].manager.as_deref(), Some("kubectl"));
        assert!(reverts(&history(true, d1, "hmac-sha256:02", "kubectl", 60)).is_empty());
        assert!(
            reverts(&history(true, "plain", "plain", "kubectl", 60)).is_empty(),
            "a masked value without a digest is never compared"
        );
        assert!(reverts(&history(false, "h", "h", "driftwarden", 60)).is_empty());
        assert!(
            reverts(&history(
                false,
                "h",
                "h",
                "kubectl",
                REVERT_HORIZON_SECS + 1
            ))
            .is_empty()
        );
        assert_eq!(
            reverts(&history(false, "h", "h", "kubectl", REVERT_HORIZON_SECS)).len(),
            1
        );
    }

    /// A risky drift seen by run `a` with its pull request opened, gone in run `b`; `listed`:
    /// the runs' `items_listed`; `closed`: run `b` recorded its pull request closed, merged or
    /// not. Returns the resolutions `stats` gives.
    fn resolution(listed: Option<bool>, closed: Option<bool>) -> Vec<String> {
        let checked = |items_listed| Event::TargetChecked {
            target: "t".into(),
            checked: 3,
            drifted: 1,
            partial: false,
            items_listed,
        };
        let mut records = vec![
            rec(
                "a",
                100,
                Event::DriftSeen {
                    target: "t".into(),
                    fingerprint: "f".into(),
                    resource: "k".into(),
                    display: "k".into(),
                    kind: crate::model::DriftKind::Modified,
                    changes: vec![],
                },
            ),
            rec(
                "a",
                100,
                Event::Verdict {
                    target: "t".into(),
                    fingerprint: "f".into(),
                    class: Some(Class::Risky),
                    rules: vec!["p.r".into()],
                    reasons: vec![],
                    engine: "compiled".into(),
                },
            ),
            rec(
                "a",
                101,
                Event::Outcome {
                    target: "t".into(),
                    fingerprint: "f".into(),
                    action: "pull_request".into(),
                    result: ActionResult::Done,
                    detail: None,
                    guardrail: None,
                },
            ),
            rec("a", 101, checked(listed)),
        ];
        if let Some(merged) = closed {
            records.push(rec(
                "b",
                400,
                Event::ItemClosed {
                    target: "t".into(),
                    fingerprint: "f".into(),
                    resource: Some("k".into()),
                    item: crate::audit::ItemRef {
                        kind: crate::forge::ItemKind::PullRequest,
                        number: 7,
                    },
                    merged,
                    changes: "c".into(),
                    labels: vec!["drift".into()],
                    closed_at: None,
                },
            ));
        }
        records.push(rec("b", 400, checked(listed)));
        compute(&records, 0, 1000, None, &Default::default())
            .time_to_remediate
            .into_iter()
            .inspect(|r| {
                assert_eq!(
                    (r.class.as_str(), r.count, r.mean_seconds),
                    ("risky", 1, 300.0)
                )
            })
            .map(|r| r.resolution)
            .collect()
    }

    #[test]
    fn a_merged_pull_request_is_the_forges_word_and_inferred_only_in_older_history() {
        // The forge said merged.
        assert_eq!(resolution(Some(true), Some(true)), ["merged_pull_request"]);
        // Closed without merging, or still open when the drift went away: not a merge.
        assert_eq!(resolution(Some(true), Some(false)), ["other"]);
        assert_eq!(resolution(Some(true), None), ["other"]);
        assert_eq!(resolution(Some(false), None), ["other"]);
        // History written before `item_closed` existed: inferred from the open pull request.
        assert_eq!(resolution(None, None), ["merged_pull_request"]);
    }

    #[test]
    fn since_units() {
        assert_eq!(parse_since("7d"), Some(7 * 86_400));
        assert_eq!(parse_since("24h"), Some(86_400));
        assert_eq!(parse_since("90m"), Some(5400));
        assert_eq!(parse_since("7"), None);
        assert_eq!(parse_since("d"), None);
        assert_eq!(parse_since("3y"), None);
    }
}
