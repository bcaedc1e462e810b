//! Sharding: which targets one of `n` parallel runs (a Kubernetes Indexed Job's pods, a GitHub
//! Actions matrix) takes.
//!
//! `--shard i/n` (0-based `i`, as Kubernetes numbers completion indexes) keeps the targets whose
//! name hashes to shard `i`. The hash is rendezvous (highest random weight) hashing over SHA-256
//! of `target name, NUL, shard index`: stable across runs, machines and releases, independent of
//! the order targets are listed in, and when `n` changes only about `1/n` of the targets move.
//! Every target lands in exactly one shard, so the shards' reports can be joined again
//! (`driftwarden report merge`) without overlap. Pure functions, no IO; [`Shard::from_env`]
//! takes the variable values as arguments.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// What can be wrong with a shard specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not `i/n`.
    #[error("invalid shard `{0}`: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. 0/4")]
    Syntax(String),
    /// The index is not below the count.
    #[error(
        "invalid shard `{index}/{count}`: the index must be below the count (indexes start at 0)"
    )]
    OutOfRange { index: u32, count: u32 },
    /// A sharding variable is set but not a number.
    #[error("{var}=`{value}` is not a non-negative integer")]
    Env { var: &'static str, value: String },
    /// `JOB_COMPLETION_INDEX` without a shard count: every pod would run every target.
    #[error(
        "JOB_COMPLETION_INDEX={0} is set but the shard count is unknown: set JOB_COMPLETIONS to the Job's completions, or pass --shard INDEX/COUNT"
    )]
    MissingCount(u32),
}

/// One shard out of `count`: `index` is 0-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// A shard, checked: `count >= 1` and `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || index >= count {
            return Err(ShardError::OutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// The shard from the Indexed Job variables: `JOB_COMPLETION_INDEX` (set by Kubernetes for
    /// `completionMode: Indexed`) and `JOB_COMPLETIONS` (set by the manifest to the Job's
    /// `completions`; Kubernetes does not set it). `None` when neither is set.
    pub fn from_env(index: Option<&str>, count: Option<&str>) -> Result<Option<Shard>, ShardError> {
        let parse = |var: &'static str, v: &str| {
            v.trim().parse::<u32>().map_err(|_| ShardError::Env {
                var,
                value: v.to_string(),
            })
        };
        let index = index.filter(|v| !v.trim().is_empty());
        let count = count.filter(|v| !v.trim().is_empty());
        match (index, count) {
            (None, None) => Ok(None),
            (Some(i), Some(n)) => {
                let i = parse("JOB_COMPLETION_INDEX", i)?;
                let n = parse("JOB_COMPLETIONS", n)?;
                Shard::new(i, n).map(Some)
            }
            (Some(i), None) => Err(ShardError::MissingCount(parse("JOB_COMPLETION_INDEX", i)?)),
            // A count alone (a non-indexed Job with the variable set) selects nothing.
            (None, Some(n)) => {
                parse("JOB_COMPLETIONS", n)?;
                Ok(None)
            }
        }
    }

    /// True when this shard runs `target`.
    pub fn owns(&self, target: &str) -> bool {
        shard_of(target, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// Parses `i/n`.
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax(s.to_string());
        let (i, n) = s.trim().split_once('/').ok_or_else(syntax)?;
        let i = i.trim().parse::<u32>().map_err(|_| syntax())?;
        let n = n.trim().parse::<u32>().map_err(|_| syntax())?;
        Shard::new(i, n)
    }
}

/// The shard (0-based, below `count`) that runs `target`. `count` 0 is treated as 1.
pub fn shard_of(target: &str, count: u32) -> u32 {
    let count = count.max(1);
    let mut best = (0u64, 0u32);
    for shard in 0..count {
        let w = weight(target, shard);
        // Ties (practically impossible) go to the lower index, deterministically.
        if shard == 0 || w > best.0 {
            best = (w, shard);
        }
    }
    best.1
}

/// The rendezvous weight of a target on a shard: the first 8 bytes of SHA-256.
fn weight(target: &str, shard: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update([0u8]);
    h.update(shard.to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!("2/7".parse::<Shard>(), Ok(Shard { index: 2, count: 7 }));
        assert_eq!(" 0 / 1 ".parse::<Shard>(), Ok(Shard { index: 0, count: 1 }));
        assert!(matches!(
            "7/7".parse::<Shard>(),
            Err(ShardError::OutOfRange { .. })
        ));
        assert!(matches!(
            "0/0".parse::<Shard>(),
            Err(ShardError::OutOfRange { .. })
        ));
        for bad in ["", "1", "a/2", "1/b", "-1/3", "1/2/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(Shard { index: 1, count: 3 }.to_string(), "1/3");
    }

    #[test]
    fn env_defaults() {
        assert_eq!(Shard::from_env(None, None), Ok(None));
        assert_eq!(
            Shard::from_env(Some("3"), Some("4")),
            Ok(Some(Shard { index: 3, count: 4 }))
        );
        assert_eq!(
            Shard::from_env(Some("2"), None),
            Err(ShardError::MissingCount(2))
        );
        assert_eq!(Shard::from_env(None, Some("4")), Ok(None));
        assert_eq!(Shard::from_env(Some(""), Some("")), Ok(None));
        assert!(matches!(
            Shard::from_env(Some("x"), Some("4")),
            Err(ShardError::Env {
                var: "JOB_COMPLETION_INDEX",
                ..
            })
        ));
        assert!(matches!(
            Shard::from_env(Some("4"), Some("4")),
            Err(ShardError::OutOfRange { .. })
        ));
    }

    #[test]
    fn every_target_in_exactly_one_shard() {
        let names: Vec<String> = (0..100).map(|i| format!("cluster-{i:03}")).collect();
        let mut counts = [0usize; 7];
        for n in &names {
            let owners: Vec<u32> = (0..7)
                .filter(|&i| Shard { index: i, count: 7 }.owns(n))
                .collect();
            assert_eq!(owners.len(), 1, "{n}: {owners:?}");
            counts[owners[0] as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<usize>(), 100);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        // One shard runs everything.
        assert!(names.iter().all(|n| Shard { index: 0, count: 1 }.owns(n)));
    }

    #[test]
    fn growing_the_count_moves_few_targets() {
        let names: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let moved = names
            .iter()
            .filter(|n| shard_of(n, 8) != shard_of(n, 9) && shard_of(n, 9) != 8)
            .count();
        // Rendezvous hashing: a target moves only to the new shard...
        assert_eq!(moved, 0);
        // ...and the new shard takes its share (about 1000/9), not none and not most.
        let to_new = names.iter().filter(|n| shard_of(n, 9) == 8).count();
        assert!(
            (70..=160).contains(&to_new),
            "{to_new} of 1000 moved to the new shard"
        );
    }
}
