//! Terraform-managed AWS infrastructure: the second half of the mission, without a Terraform
//! binary at run time.
//!
//! - [`plan`] reads `terraform show -json` plan output (format 0.1 to 1.x): `resource_drift`
//!   becomes drift, `resource_changes` becomes typed changes for the pull-request bot.
//! - [`state`] reads state files (format version 4) from a Git tree or a local path.
//! - [`compare`] compares state with live EC2 ([`crate::live::ec2`]) under Terraform's attribute
//!   names: `Modified`, `Missing` and `Unmanaged`.
//! - [`target`] loads one configured target (files, live read, compare), the entry point
//!   [`crate::run`] calls.
//!
//! Invariant: sensitive values are masked inside [`plan`] and [`state`], before any drift,
//! change, log line or error message exists; nothing downstream ever sees them.

pub mod compare;
pub mod plan;
pub mod state;
pub mod target;
pub mod values;

pub use target::{Error, TargetRead, read_target};
pub use values::KNOWN_AFTER_APPLY;

/// Top-level attributes of the supported types whose values are sets: compared
/// order-insensitively, and never descended into (a rule or an id is one value).
pub const SET_ATTRIBUTES: &[&str] = &[
    "ingress",
    "egress",
    "vpc_security_group_ids",
    "security_groups",
    "private_ips",
    "route",
    "propagating_vgws",
    "cidr_blocks",
    "ipv6_cidr_blocks",
    "prefix_list_ids",
];
