//! Live state: the objects as they are: from snapshot files ([`snapshot`]) or a cluster
//! ([`kube`]: LIST per kind and namespace), with the same output.

pub mod ec2;
pub mod json;
pub mod kube;
pub mod kube_verbs;
pub mod snapshot;

pub use snapshot::{LiveError, for_each_snapshot_object, load_snapshot};
