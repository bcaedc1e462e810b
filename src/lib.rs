//! driftwarden: a GitOps drift-and-policy reconciler.
//!
//! Desired state comes from Git, live state from a cluster or snapshot files; the two are
//! normalized and diffed ([`diff`]), every drift is classified by Rego policies ([`policy`]),
//! and the result is reported ([`report`]). See ARCHITECTURE.md for the code map and invariants.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
pub mod act;
pub mod audit;
pub mod compare;
pub mod config;
pub mod desired;
pub mod diff;
mod errors;
pub mod forge;
pub mod k8s;
pub mod live;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod policy;
pub mod pr_check;
pub mod report;
pub mod run;
pub mod shard;
pub mod statelock;
pub mod terraform;
pub mod version;
pub mod watch;
pub mod yaml;
